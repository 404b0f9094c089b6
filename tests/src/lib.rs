//! Helpers for lbha's integration tests: keepalived and `lbha-agent` (the
//! VRRP daemon, and its `watch` subcommand) running in network namespaces,
//! their configurations, and what they log and print read back.
//!
//! The namespaces, links, command runner and process guards come from
//! `lbha-harness`, re-exported here so that a test imports from this crate
//! alone. Every resource is an RAII guard: [`Netns`] deletes its namespace
//! (killing whatever still runs in it), [`ChildGuard`] kills and reaps its
//! process, [`Keepalived`] and [`Agent`] (each a harness [`Daemon`]) stop
//! their daemon and remove its files, [`TempDir`] removes its directory.
//! Every wait is bounded, so a broken daemon fails a test instead of hanging
//! it.
//!
//! ```no_run
//! use std::time::Duration;
//! use lbha_tests::*;
//!
//! if !require_root() {
//!     return;
//! }
//! let ka = Netns::new("ka").unwrap();
//! let lb = Netns::new("lb").unwrap();
//! veth_pair(&ka, "veth-ka", "10.201.1.1/24", &lb, "veth-lb", "10.201.1.2/24").unwrap();
//! let config = KeepalivedConfig::new().instance(
//!     VrrpInstance::unicast("VI_1", "veth-ka", 51, "10.201.1.1".parse().unwrap())
//!         .unicast_peer("10.201.1.2".parse().unwrap())
//!         .virtual_ipaddress("10.201.1.100/32"),
//! );
//! let mut keepalived = Keepalived::start(&ka, &config.render()).unwrap();
//! keepalived.wait_for_state("VI_1", "MASTER", Duration::from_secs(10)).unwrap();
//! let output = Watch::run(&lb, &["-i", "veth-lb", "--vrid", "51:v2", "--count", "2"], WAIT)
//!     .unwrap();
//! assert_eq!(output.adverts.len(), 2);
//! ```
//!
//! Tests running in parallel do not collide: namespace, directory and process
//! names are unique per process and per call, and every address lives inside
//! namespaces the test created (by convention `10.201.N.0/24`, with `N`
//! distinct per test).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver, RecvTimeoutError},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail};
pub mod capture;
pub mod scenario;

pub use lbha_harness::{
    BpfFs, COMMAND_TIMEOUT, ChildGuard, Daemon, Netns, SKIP_PRIVILEGED_ENV, TempDir, bridge,
    bridge_port, in_netns, require_root, run_command, send_signal, temp_dir, veth_pair,
};
use serde::Deserialize;

/// Path of the `lbha-agent` binary to test (set by `cargo xtask test`).
pub const AGENT_BIN_ENV: &str = "LBHA_AGENT_BIN";
/// Path of the `lbha-dosim` binary (the DigitalOcean simulator) the lab
/// tests run (set by `cargo xtask test`).
pub const DOSIM_BIN_ENV: &str = "LBHA_DOSIM_BIN";
/// A generous upper bound for one wait in a test (daemon start, a run of
/// `lbha-agent watch` with its own shorter `--timeout`, ...).
pub const WAIT: Duration = Duration::from_secs(20);

/// Initial state of a VRRP instance (`state` in keepalived.conf).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VrrpState {
    Master,
    Backup,
}

/// One unicast `vrrp_instance` of a keepalived configuration. Build it with
/// [`VrrpInstance::unicast`] and the chained setters; defaults: state MASTER,
/// priority 100, `advert_int 1`, VRRPv2, no authentication, no VIPs.
#[derive(Clone, Debug)]
pub struct VrrpInstance {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub priority: u8,
    pub state: VrrpState,
    /// Seconds, as keepalived reads it: "1", or "0.1" (VRRPv3 only).
    pub advert_int: String,
    /// 2 or 3.
    pub version: u8,
    pub unicast_src_ip: Ipv4Addr,
    pub unicast_peers: Vec<Ipv4Addr>,
    /// `auth_type PASS` with this password (VRRPv2; keepalived keeps the
    /// first 8 characters). Must not contain `!` or `#` (comment starts).
    pub auth_pass: Option<String>,
    /// `auth_type` with `auth_pass`: "PASS" (the default) or "AH".
    pub auth_type: &'static str,
    /// Entries of `virtual_ipaddress`, e.g. `10.201.1.100/32`.
    pub virtual_ipaddresses: Vec<String>,
    pub nopreempt: bool,
    /// Extra lines copied verbatim into the instance block.
    pub extra: Vec<String>,
}

impl VrrpInstance {
    /// A unicast instance named `name` (e.g. `VI_1`) on `interface`.
    pub fn unicast(
        name: impl Into<String>,
        interface: impl Into<String>,
        vrid: u8,
        unicast_src_ip: Ipv4Addr,
    ) -> Self {
        Self {
            name: name.into(),
            interface: interface.into(),
            vrid,
            priority: 100,
            state: VrrpState::Master,
            advert_int: "1".into(),
            version: 2,
            unicast_src_ip,
            unicast_peers: Vec::new(),
            auth_pass: None,
            auth_type: "PASS",
            virtual_ipaddresses: Vec::new(),
            nopreempt: false,
            extra: Vec::new(),
        }
    }

    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    pub fn state(mut self, state: VrrpState) -> Self {
        self.state = state;
        self
    }

    pub fn advert_int(mut self, seconds: impl Into<String>) -> Self {
        self.advert_int = seconds.into();
        self
    }

    pub fn version(mut self, version: u8) -> Self {
        self.version = version;
        self
    }

    pub fn unicast_peer(mut self, peer: Ipv4Addr) -> Self {
        self.unicast_peers.push(peer);
        self
    }

    pub fn auth_pass(mut self, password: impl Into<String>) -> Self {
        self.auth_pass = Some(password.into());
        self
    }

    /// `auth_type AH` with this password (keepalived's IPsec AH:
    /// HMAC-MD5-96 keyed with its first 8 characters).
    pub fn auth_ah(mut self, password: impl Into<String>) -> Self {
        self.auth_pass = Some(password.into());
        self.auth_type = "AH";
        self
    }

    pub fn virtual_ipaddress(mut self, address: impl Into<String>) -> Self {
        self.virtual_ipaddresses.push(address.into());
        self
    }

    pub fn nopreempt(mut self) -> Self {
        self.nopreempt = true;
        self
    }

    pub fn extra(mut self, line: impl Into<String>) -> Self {
        self.extra.push(line.into());
        self
    }

    /// The `vrrp_instance NAME { ... }` block.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let state = match self.state {
            VrrpState::Master => "MASTER",
            VrrpState::Backup => "BACKUP",
        };
        let _ = writeln!(out, "vrrp_instance {} {{", self.name);
        let _ = writeln!(out, "    interface {}", self.interface);
        let _ = writeln!(out, "    state {state}");
        let _ = writeln!(out, "    virtual_router_id {}", self.vrid);
        let _ = writeln!(out, "    version {}", self.version);
        let _ = writeln!(out, "    priority {}", self.priority);
        let _ = writeln!(out, "    advert_int {}", self.advert_int);
        if self.nopreempt {
            let _ = writeln!(out, "    nopreempt");
        }
        let _ = writeln!(out, "    unicast_src_ip {}", self.unicast_src_ip);
        let _ = writeln!(out, "    unicast_peer {{");
        for peer in &self.unicast_peers {
            let _ = writeln!(out, "        {peer}");
        }
        let _ = writeln!(out, "    }}");
        if let Some(password) = &self.auth_pass {
            let _ = writeln!(out, "    authentication {{");
            let _ = writeln!(out, "        auth_type {}", self.auth_type);
            let _ = writeln!(out, "        auth_pass {password}");
            let _ = writeln!(out, "    }}");
        }
        let _ = writeln!(out, "    virtual_ipaddress {{");
        for address in &self.virtual_ipaddresses {
            let _ = writeln!(out, "        {address}");
        }
        let _ = writeln!(out, "    }}");
        for line in &self.extra {
            let _ = writeln!(out, "    {line}");
        }
        let _ = writeln!(out, "}}");
        out
    }
}

/// A whole keepalived.conf: optional `global_defs` lines and VRRP instances.
#[derive(Clone, Debug, Default)]
pub struct KeepalivedConfig {
    /// Lines of the `global_defs` block (omitted when empty).
    pub global_defs: Vec<String>,
    pub instances: Vec<VrrpInstance>,
}

impl KeepalivedConfig {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn global_def(mut self, line: impl Into<String>) -> Self {
        self.global_defs.push(line.into());
        self
    }

    pub fn instance(mut self, instance: VrrpInstance) -> Self {
        self.instances.push(instance);
        self
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.global_defs.is_empty() {
            out.push_str("global_defs {\n");
            for line in &self.global_defs {
                out.push_str(&format!("    {line}\n"));
            }
            out.push_str("}\n");
        }
        for instance in &self.instances {
            out.push_str(&instance.render());
        }
        out
    }
}

/// Lets a guard built on a [`Daemon`] (in a field `daemon`) be used as one:
/// the daemon guard's methods, written once, are the guard's.
macro_rules! is_a_daemon {
    ($guard:ty) => {
        impl std::ops::Deref for $guard {
            type Target = Daemon;

            fn deref(&self) -> &Daemon {
                &self.daemon
            }
        }

        impl std::ops::DerefMut for $guard {
            fn deref_mut(&mut self) -> &mut Daemon {
                &mut self.daemon
            }
        }
    };
}

/// keepalived (VRRP subsystem only, in the foreground) running in a namespace.
///
/// Its config, pid files and log (stdout and stderr: it logs to the console,
/// not syslog) live in a [`TempDir`]. On drop it is killed abruptly (no
/// priority-0 advert) and, if the test is panicking, its log is printed.
pub struct Keepalived {
    daemon: Daemon,
}

impl Keepalived {
    /// Checks `config` with `keepalived --config-test`, then starts
    /// `keepalived -n -l -D -G -P` with it inside `ns`.
    pub fn start(ns: &Netns, config: &str) -> Result<Self> {
        let daemon = Daemon::start_in_temp_dir("keepalived", "keepalived", |dir| {
            let conf = dir.join("keepalived.conf");
            std::fs::write(&conf, config).with_context(|| format!("writing {}", conf.display()))?;
            run_command(
                ns.command("keepalived")
                    .arg("--config-test")
                    .arg("-f")
                    .arg(&conf),
                COMMAND_TIMEOUT,
            )
            .with_context(|| format!("keepalived rejects its configuration:\n{config}"))?;
            let mut cmd = ns.command("keepalived");
            // Foreground, console logging with detail, no syslog, VRRP only.
            cmd.args(["-n", "-l", "-D", "-G", "-P", "-f"])
                .arg(&conf)
                .arg("-p")
                .arg(dir.join("k.pid"))
                .arg("-r")
                .arg(dir.join("v.pid"));
            anyhow::Ok(cmd)
        })?;
        Ok(Self { daemon })
    }

    /// Pid of the VRRP child process, once it has written its pid file.
    pub fn vrrp_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.dir().join("v.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "keepalived").then_some(pid)
    }

    /// Waits until `instance` logs `Entering STATE STATE` (e.g. "MASTER").
    pub fn wait_for_state(&mut self, instance: &str, state: &str, timeout: Duration) -> Result<()> {
        let needle = format!("({instance}) Entering {state} STATE");
        Ok(self.daemon.wait_for_log(&needle, timeout)?)
    }

    /// Kills keepalived abruptly, as a crash would: no priority-0 advert.
    /// (Killing the parent alone makes the VRRP child shut down cleanly, and
    /// killing the child alone makes the parent respawn it, so the parent is
    /// stopped first.)
    pub fn kill(&mut self) {
        if self.daemon.try_wait().ok().flatten().is_some() {
            return;
        }
        self.daemon.child_mut().signal(libc::SIGSTOP);
        if let Some(pid) = self.vrrp_pid() {
            send_signal(pid, libc::SIGKILL);
        }
        let _ = self.daemon.kill();
    }
}

// keepalived is a Daemon: its log, directory (keepalived.conf,
// keepalived.log, pid files), pid (the parent, monitor process),
// `wait_for_log` and `stop` (SIGTERM, as a service manager would: a master
// resigns with a priority-0 advert) are the daemon guard's.
is_a_daemon!(Keepalived);

impl Drop for Keepalived {
    /// The crash-like kill before the daemon guard's own (which then prints
    /// the log of a failing test).
    fn drop(&mut self) {
        self.kill();
    }
}

/// The path of the `lbha-agent` binary under test: `$LBHA_AGENT_BIN` when set
/// (`cargo xtask test` sets it after building the agent), otherwise
/// `target/debug/lbha-agent` of this workspace (`$CARGO_TARGET_DIR` honoured).
/// `cargo test` does not build it: run `cargo build -p lbha-agent` first.
pub fn agent_bin() -> PathBuf {
    workspace_bin("lbha-agent", "lbha-agent", AGENT_BIN_ENV)
}

/// The path of the `lbha-dosim` binary (the DigitalOcean simulator):
/// `$LBHA_DOSIM_BIN` when set (`cargo xtask test` sets it after building
/// it), otherwise `target/debug/lbha-dosim` of this workspace
/// (`$CARGO_TARGET_DIR` honoured). `cargo test` does not build it: run
/// `cargo build -p lbha-dosim` first.
pub fn dosim_bin() -> PathBuf {
    workspace_bin("lbha-dosim", "lbha-dosim", DOSIM_BIN_ENV)
}

/// A binary of this workspace: `$env` when set, else `target/debug/NAME`.
fn workspace_bin(name: &str, package: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{env}={} does not exist; build it with `cargo build -p {package}`",
            path.display()
        );
        return path;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace.join("target"), |dir| workspace.join(dir));
    let path = target.join("debug").join(name);
    assert!(
        path.is_file(),
        "{} does not exist: `cargo test` does not build the {name} binary. Run \
         `cargo build -p {package}` first, or use `cargo xtask test`, or set {env}.",
        path.display()
    );
    path
}

/// Log filter (`RUST_LOG` syntax) for the agents [`Agent`] starts; `info`
/// when unset (transitions are logged at info).
pub const AGENT_LOG_ENV: &str = "LBHA_TEST_AGENT_LOG";

/// The keepalived.conf pair of the tracking interop tests: lbha on `va`
/// with `10.{a}.{b}.1` (priority 150, `lbha_extra` lines in its instance)
/// and keepalived on `vk` with `.2` (priority 100), unicast to each other,
/// VRRPv3 at 100 ms, instance `VI_1` of VRID `vrid` holding `.100`.
pub fn tracking_pair_configs(net: [u8; 3], vrid: u8, lbha_extra: &str) -> (String, String) {
    let [a, b, c] = net;
    let (lbha_ip, ka_ip) = (Ipv4Addr::new(a, b, c, 1), Ipv4Addr::new(a, b, c, 2));
    let config = |interface: &str, src: Ipv4Addr, peer: Ipv4Addr, priority: u8, extra: &str| {
        let mut instance = VrrpInstance::unicast("VI_1", interface, vrid, src)
            .priority(priority)
            .advert_int("0.1")
            .version(3)
            .unicast_peer(peer)
            .virtual_ipaddress(format!("{a}.{b}.{c}.100/32"));
        if !extra.is_empty() {
            instance = instance.extra(extra);
        }
        KeepalivedConfig::new()
            .global_def("vrrp_version 3")
            .instance(instance)
            .render()
    };
    (
        config("va", lbha_ip, ka_ip, 150, lbha_extra),
        config("vk", ka_ip, lbha_ip, 100, ""),
    )
}

/// lbha on `a` first, until it is Master of `instance`, then keepalived on
/// `k`, until it settles as its Backup: the start of the interop tests
/// where lbha holds mastership and a tracked resource moves it.
pub fn lbha_master_then_keepalived_backup(
    a: &Netns,
    k: &Netns,
    instance: &str,
    lbha_conf: &str,
    ka_conf: &str,
) -> Result<(Agent, Keepalived)> {
    let mut agent = Agent::start(a, lbha_conf)?;
    agent.wait_for_transition(instance, "MASTER", 0, WAIT)?;
    let mut keepalived = Keepalived::start(k, ka_conf)?;
    keepalived.wait_for_state(instance, "BACKUP", WAIT)?;
    Ok((agent, keepalived))
}

/// `lbha-agent --keepalived-conf FILE` (the VRRP daemon) running in a
/// namespace.
///
/// Like [`Keepalived`], its configuration and log (stderr and stdout, without
/// colours) live in a [`TempDir`]; on drop it is killed abruptly (no
/// priority-0 advert) and, if the test is panicking, its log is printed.
pub struct Agent {
    daemon: Daemon,
}

impl Agent {
    /// Writes `keepalived_conf` (keepalived.conf syntax) and starts the agent
    /// with it inside `ns`. It does not wait: see [`Daemon::wait_for_log`]
    /// (e.g. `interface ready`) or [`Agent::wait_for_transition`].
    pub fn start(ns: &Netns, keepalived_conf: &str) -> Result<Self> {
        Self::spawn_in(ns, Format::Keepalived, keepalived_conf, |_| Vec::new())
    }

    /// The `state transition` lines logged so far, in order.
    pub fn transitions(&self) -> Vec<Transition> {
        transitions_in(&self.log())
    }

    /// Waits for the first transition of `instance` to `to` (e.g. "MASTER")
    /// among those after the first `since` (of every instance) and returns
    /// it; fails early if the agent exits.
    pub fn wait_for_transition(
        &mut self,
        instance: &str,
        to: &str,
        since: usize,
        timeout: Duration,
    ) -> Result<Transition> {
        let what = format!("{instance} to enter {to}");
        Ok(self.daemon.wait_until(&what, timeout, |log| {
            transitions_in(log)
                .into_iter()
                .skip(since)
                .find(|t| t.instance == instance && t.to == to)
        })?)
    }
}

// The agent is a Daemon: its log, directory (keepalived.conf, agent.log),
// pid, `wait_for_log`, `try_wait`, `stop` (SIGTERM: masters resign with a
// priority-0 advert) and `kill` (as a crash would) are the daemon guard's.
is_a_daemon!(Agent);

/// The `state transition` lines of an agent's log, in order.
fn transitions_in(log: &str) -> Vec<Transition> {
    log.lines().filter_map(Transition::parse).collect()
}

/// One `state transition` line of the agent's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub instance: String,
    /// keepalived's state names: INIT, BACKUP, MASTER, FAULT.
    pub from: String,
    pub to: String,
    /// e.g. "startup", "master down", "master resigned", "higher priority master".
    pub reason: String,
    /// The whole log line.
    pub line: String,
}

impl Transition {
    /// Parses a log line of the form `... state transition instance=VI_1
    /// from="BACKUP" to="MASTER" reason="master down" ...`; `None` for
    /// other lines.
    pub fn parse(line: &str) -> Option<Self> {
        let (_, rest) = line.split_once("state transition ")?;
        let fields = log_fields(rest);
        let field = |name: &str| fields.get(name).cloned();
        Some(Self {
            instance: field("instance")?,
            from: field("from")?,
            to: field("to")?,
            reason: field("reason").unwrap_or_default(),
            line: line.to_string(),
        })
    }
}

/// The `key=value` fields of a tracing log line (values plain or quoted).
fn log_fields(text: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut rest = text.trim_start();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        fields.insert(key.to_string(), value.to_string());
        rest = next.trim_start();
    }
    fields
}

/// The `notify` script keepalived and `lbha-agent` share in the VRRP tests.
/// Configured as `notify "SCRIPT STATE_FILE"`, it is called as `SCRIPT
/// STATE_FILE INSTANCE NAME STATE PRIORITY` and appends `STATE PRIORITY
/// UNIX_TIME_NS` to STATE_FILE.
const NOTIFY_SCRIPT: &str = r#"#!/bin/sh
# Called as: notify.sh STATE_FILE INSTANCE NAME STATE PRIORITY
file=$1
shift
echo "$3 $4 $(date +%s%N)" >>"$file"
"#;

/// A notify script in its own root-owned directory, acceptable to
/// keepalived's and lbha's `enable_script_security`, and the state files it
/// writes ([`StateLog`]). Removed on drop.
pub struct NotifyScript {
    script: PathBuf,
    dir: TempDir,
}

impl NotifyScript {
    pub fn new() -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("notify")?;
        // Script security: neither the script nor its directory may be
        // writable by anyone but root.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let script = dir.path().join("notify.sh");
        std::fs::write(&script, NOTIFY_SCRIPT)
            .with_context(|| format!("writing {}", script.display()))?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        Ok(Self { script, dir })
    }

    pub fn path(&self) -> &Path {
        &self.script
    }

    /// The state file of one daemon, `<tag>.states` next to the script.
    pub fn state_log(&self, tag: &str) -> StateLog {
        StateLog {
            script: self.script.clone(),
            path: self.dir.path().join(format!("{tag}.states")),
        }
    }
}

/// One line of a [`StateLog`]: the daemon ran its notify script for `state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange {
    /// "MASTER", "BACKUP", "FAULT", or keepalived's "STOP" when it shuts down.
    pub state: String,
    pub priority: u8,
    /// When the script ran, by the wall clock (shared by every namespace).
    pub at: SystemTime,
}

impl StateChange {
    /// How long after `start` the script ran (zero if it ran before).
    pub fn after(&self, start: SystemTime) -> Duration {
        self.at.duration_since(start).unwrap_or_default()
    }
}

/// The states a daemon reported through [`NotifyScript`], read from its
/// state file: the view of the VRRP state the daemon itself holds.
#[derive(Clone, Debug)]
pub struct StateLog {
    script: PathBuf,
    path: PathBuf,
}

impl StateLog {
    /// The `notify "..."` line to put in the daemon's `vrrp_instance`.
    pub fn notify_line(&self) -> String {
        format!(
            "notify \"{} {}\"",
            self.script.display(),
            self.path.display()
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every state change so far, in the order the scripts wrote them (lines
    /// still being written are left out).
    pub fn changes(&self) -> Vec<StateChange> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let state = words.next()?.to_string();
                let priority = words.next()?.parse().ok()?;
                let ns: u64 = words.next()?.parse().ok()?;
                Some(StateChange {
                    state,
                    priority,
                    at: SystemTime::UNIX_EPOCH + Duration::from_nanos(ns),
                })
            })
            .collect()
    }

    /// How many state changes there have been so far.
    pub fn count(&self) -> usize {
        self.changes().len()
    }

    /// The last reported state, if any.
    pub fn current(&self) -> Option<String> {
        self.changes().pop().map(|change| change.state)
    }

    /// Waits for the first change to `state` after the first `since` changes.
    pub fn wait_for(&self, state: &str, since: usize, timeout: Duration) -> Result<StateChange> {
        let deadline = Instant::now() + timeout;
        loop {
            let changes = self.changes();
            if let Some(found) = changes.iter().skip(since).find(|c| c.state == state) {
                return Ok(found.clone());
            }
            if Instant::now() >= deadline {
                bail!(
                    "no {state} in {} within {timeout:?} (after the first {since}); changes: {changes:?}",
                    self.path.display()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// One advert line printed by `lbha-agent watch`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Advert {
    pub timestamp_ns: u64,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub first_vip: Ipv4Addr,
    pub ifindex: u32,
    pub vrid: u8,
    pub priority: u8,
    pub version: u8,
    pub interval_cs: u16,
    pub count_addr: u8,
    /// Why the advert woke the agent: "new_source", "priority", "resign",
    /// "interval", "after_silence", "version"; empty for a repeat.
    pub changes: Vec<String>,
    /// "xdp" or "raw-socket".
    pub receive_path: String,
}

/// The summary line `lbha-agent watch` prints when it exits.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Summary {
    /// "xdp", "xdp-skb" or "raw-socket".
    pub receive_path: String,
    /// Adverts printed.
    pub adverts: u64,
    /// Receive-path counters by name (`adverts_accepted`, `drop_auth_mismatch`, ...).
    pub counters: BTreeMap<String, u64>,
}

impl Summary {
    /// The counter `name`; panics if the agent did not report it.
    pub fn counter(&self, name: &str) -> u64 {
        match self.counters.get(name) {
            Some(value) => *value,
            None => panic!("the summary has no counter {name:?}: {:?}", self.counters),
        }
    }
}

/// A line of `lbha-agent watch` output.
#[derive(Clone, Debug)]
pub enum WatchLine {
    Advert(Advert),
    Summary(Summary),
    /// Anything else (a malformed line): tests normally expect none.
    Other(String),
}

impl WatchLine {
    /// Classifies and parses one stdout line.
    pub fn parse(line: &str) -> Self {
        let parsed = serde_json::from_str::<serde_json::Value>(line).ok();
        let result = match parsed {
            Some(value) if value.get("counters").is_some() => {
                serde_json::from_value(value).map(WatchLine::Summary)
            }
            Some(value) => serde_json::from_value(value).map(WatchLine::Advert),
            None => return WatchLine::Other(line.to_string()),
        };
        result.unwrap_or_else(|_| WatchLine::Other(line.to_string()))
    }
}

/// What a finished `lbha-agent watch` printed.
#[derive(Debug)]
pub struct WatchOutput {
    /// Every advert line, in order (including those already returned by
    /// [`Watch::next_advert`]).
    pub adverts: Vec<Advert>,
    pub summary: Option<Summary>,
    /// Unparseable stdout lines.
    pub other_lines: Vec<String>,
    pub status: ExitStatus,
    pub stderr: String,
}

impl WatchOutput {
    /// The summary line; panics (showing stderr) if there was none.
    pub fn summary(&self) -> &Summary {
        match &self.summary {
            Some(summary) => summary,
            None => panic!(
                "lbha-agent printed no summary ({}); stderr:\n{}",
                self.status, self.stderr
            ),
        }
    }
}

/// `lbha-agent watch ARGS` running inside a namespace, its stdout parsed line
/// by line on a reader thread. Killed on drop.
pub struct Watch {
    child: ChildGuard,
    lines: Receiver<WatchLine>,
    ready: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stderr_done: Receiver<()>,
    adverts: Vec<Advert>,
    summary: Option<Summary>,
    other_lines: Vec<String>,
}

impl Watch {
    /// Spawns `lbha-agent watch ARGS` in `ns` (logging without colours).
    pub fn spawn(ns: &Netns, args: &[&str]) -> Result<Self> {
        let mut cmd = ns.command(agent_bin());
        cmd.arg("watch")
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = ChildGuard::spawn("lbha-agent watch", &mut cmd)?;
        let stdout = child.child_mut().stdout.take().expect("piped");
        let stderr_pipe = child.child_mut().stderr.take().expect("piped");

        let (line_tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line_tx.send(WatchLine::parse(&line)).is_err() {
                    break;
                }
            }
        });

        let stderr = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready) = mpsc::channel();
        let (done_tx, stderr_done) = mpsc::channel();
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(path) = line.strip_prefix("receive path: ") {
                    let _ = ready_tx.send(path.trim().to_string());
                }
                let mut text = sink
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                text.push_str(&line);
                text.push('\n');
            }
            let _ = done_tx.send(());
        });

        Ok(Self {
            child,
            lines,
            ready,
            stderr,
            stderr_done,
            adverts: Vec::new(),
            summary: None,
            other_lines: Vec::new(),
        })
    }

    /// Spawns the watch and waits (bounded by `timeout`) for it to exit.
    pub fn run(ns: &Netns, args: &[&str], timeout: Duration) -> Result<WatchOutput> {
        Self::spawn(ns, args)?.finish(timeout)
    }

    /// What the agent has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits until the receive path is open (the agent prints
    /// `receive path: NAME` on stderr) and returns NAME.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<String> {
        match self.ready.recv_timeout(timeout) {
            Ok(path) => Ok(path),
            Err(error) => {
                let status = self.child.try_wait()?;
                bail!(
                    "lbha-agent watch not ready after {timeout:?} ({error}; exit status {status:?}); \
                     stderr:\n{}",
                    self.stderr()
                )
            }
        }
    }

    fn record(&mut self, line: WatchLine) -> Option<Advert> {
        match line {
            WatchLine::Advert(advert) => {
                self.adverts.push(advert.clone());
                return Some(advert);
            }
            WatchLine::Summary(summary) => self.summary = Some(summary),
            WatchLine::Other(line) => self.other_lines.push(line),
        }
        None
    }

    /// The next advert line, waiting at most `timeout`; `None` on timeout or
    /// when the agent has stopped printing adverts (its output ended or it
    /// printed its summary).
    pub fn next_advert(&mut self, timeout: Duration) -> Option<Advert> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(remaining).ok()?;
            if let Some(advert) = self.record(line) {
                return Some(advert);
            }
            if self.summary.is_some() {
                return None;
            }
        }
    }

    /// Reads the rest of the output until the agent exits, at most `timeout`
    /// (then it is killed and this fails, showing what it printed).
    pub fn finish(mut self, timeout: Duration) -> Result<WatchOutput> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(remaining) {
                Ok(line) => {
                    self.record(line);
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    bail!(
                        "lbha-agent watch still running after {timeout:?} (killed); \
                         {} adverts so far: {:?}\nstderr:\n{}",
                        self.adverts.len(),
                        self.adverts,
                        self.stderr()
                    );
                }
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Some(status) = self
            .child
            .wait_timeout(remaining.max(Duration::from_secs(1)))?
        else {
            let _ = self.child.kill();
            bail!("lbha-agent watch closed stdout but did not exit (killed)");
        };
        let _ = self.stderr_done.recv_timeout(Duration::from_secs(2));
        Ok(WatchOutput {
            adverts: std::mem::take(&mut self.adverts),
            summary: self.summary.take(),
            other_lines: std::mem::take(&mut self.other_lines),
            status,
            stderr: self.stderr(),
        })
    }

    /// Asks the agent to stop (SIGINT, as Ctrl-C: it prints its summary and
    /// exits successfully), then finishes as [`Watch::finish`].
    pub fn stop(mut self, timeout: Duration) -> Result<WatchOutput> {
        self.child.signal(libc::SIGINT);
        self.finish(timeout)
    }
}

/// Daemons started with extra command-line options, and their status socket.
impl Agent {
    /// Like [`Agent::start`], with `extra_args` after `--keepalived-conf FILE`
    /// (e.g. `--metrics-listen ADDR`).
    pub fn start_with_args(ns: &Netns, keepalived_conf: &str, extra_args: &[&str]) -> Result<Self> {
        Self::spawn_in(ns, Format::Keepalived, keepalived_conf, |_| {
            extra_args.iter().map(Into::into).collect()
        })
    }

    /// Like [`Agent::start`], with its status socket at
    /// [`Agent::status_socket`] (inside its own directory, so parallel tests
    /// never share one), for [`Agent::status`].
    pub fn start_with_status(ns: &Netns, keepalived_conf: &str) -> Result<Self> {
        Self::spawn_in(ns, Format::Keepalived, keepalived_conf, |dir| {
            vec!["--status-socket".into(), status_socket_in(dir).into()]
        })
    }

    /// Like [`Agent::start_with_status`], with lbha's native TOML
    /// (`--config`): for what keepalived.conf cannot say (`receive_path`).
    pub fn start_native(ns: &Netns, toml: &str) -> Result<Self> {
        Self::spawn_in(ns, Format::Toml, toml, |dir| {
            vec!["--status-socket".into(), status_socket_in(dir).into()]
        })
    }

    /// [`Agent::start_with_status`] and [`Agent::start_with_args`] at once.
    pub fn start_with_status_and_args(
        ns: &Netns,
        keepalived_conf: &str,
        extra_args: &[&str],
    ) -> Result<Self> {
        Self::spawn_in(ns, Format::Keepalived, keepalived_conf, |dir| {
            let mut args: Vec<std::ffi::OsString> =
                vec!["--status-socket".into(), status_socket_in(dir).into()];
            args.extend(extra_args.iter().map(Into::into));
            args
        })
    }

    /// Where [`Agent::start_with_status`] puts the status socket.
    pub fn status_socket(&self) -> PathBuf {
        status_socket_in(self.dir())
    }

    /// Polls [`Agent::status`] until `ready` accepts it (bounded by
    /// [`WAIT`]); panics with the last status and the agent's log.
    pub fn wait_status(
        &self,
        what: &str,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self.status();
            if let Ok(status) = &status
                && ready(status)
            {
                return status.clone();
            }
            assert!(
                Instant::now() < deadline,
                "waited {WAIT:?} for {what}; last status: {status:?}\nlbha-agent's log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// What `lbha-agent status --json` answers (the agent must have been
    /// started with [`Agent::start_with_status`] or [`Agent::start_native`]).
    pub fn status(&self) -> Result<serde_json::Value> {
        let out = run_command(
            Command::new(agent_bin())
                .args(["status", "--json", "--socket"])
                .arg(self.status_socket()),
            COMMAND_TIMEOUT,
        )?;
        serde_json::from_str(&out).with_context(|| format!("status is not JSON: {out:?}"))
    }

    /// Writes the configuration into a directory of its own and starts the
    /// agent with it and `extra_args(dir)`.
    fn spawn_in(
        ns: &Netns,
        format: Format,
        config: &str,
        extra_args: impl FnOnce(&Path) -> Vec<std::ffi::OsString>,
    ) -> Result<Self> {
        let (file, flag) = match format {
            Format::Keepalived => ("keepalived.conf", "--keepalived-conf"),
            Format::Toml => ("lbha.toml", "--config"),
        };
        let daemon = Daemon::start_in_temp_dir("lbha-agent", "agent", |dir| {
            let conf = dir.join(file);
            std::fs::write(&conf, config).with_context(|| format!("writing {}", conf.display()))?;
            let filter = std::env::var(AGENT_LOG_ENV).unwrap_or_else(|_| "info".into());
            let mut cmd = ns.command(agent_bin());
            cmd.arg(flag)
                .arg(&conf)
                .args(extra_args(dir))
                .env("RUST_LOG", filter)
                .env("NO_COLOR", "1");
            anyhow::Ok(cmd)
        })?;
        Ok(Self { daemon })
    }
}

/// The configuration file format an [`Agent`] is started with.
#[derive(Clone, Copy)]
enum Format {
    Keepalived,
    Toml,
}

/// The status socket of an agent whose directory is `dir`.
fn status_socket_in(dir: &Path) -> PathBuf {
    dir.join("run").join("status.sock")
}
