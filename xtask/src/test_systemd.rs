//! `cargo xtask test-systemd`: the packaged unit under a real systemd.
//!
//! The cached bookworm root of `test-dist` (it has systemd, dbus and
//! iproute2) boots with `systemd-nspawn -b` on a throw-away overlay:
//! systemd is PID 1 of the container, which has a network namespace of its
//! own (`--private-network`), a bpffs made for it on `/sys/fs/bpf`, every
//! capability and the `bpf` system call (nspawn's filter blocks it by
//! default). The host needs no systemd: `--register=no --keep-unit` keep
//! nspawn off the host's (absent) D-Bus and machined. The .deb is installed
//! with dpkg in the booted system, and the agent runs one VRRP instance on
//! a veth inside it that becomes Master. Commands run in the container with
//! `nsenter` into its PID 1's namespaces.
//!
//! The checks follow what the unit promises (dist/lbha-agent.service): a
//! start that returns only after READY=1, a reload that keeps the Master,
//! the watchdog restarting a stopped agent, `Restart=on-failure` with the
//! pinned XDP link taken over, the hardening letting the agent attach XDP,
//! pin, read /proc and run notify scripts, and journald priorities. The one
//! change to the packaged unit is a drop-in with `WatchdogSec=5s` (10 s in
//! the unit), so the watchdog check takes seconds.
//!
//! When the container does not boot the command fails, unless
//! `LBHA_SKIP_SYSTEMD_BOOT=1` says to skip it (as `kernels
//! --skip-without-kvm` does for a missing /dev/kvm). Everything it mounts
//! lives in a private mount namespace; the container is killed on the way
//! out, even on failure.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    dist::{self, bounded, privileged},
    test_dist::{BOOKWORM, Overlay, Tally, cached_root, private_mounts},
};

/// Set to 1 to succeed (saying so) where the container cannot boot.
pub const SKIP_ENV: &str = "LBHA_SKIP_SYSTEMD_BOOT";

/// What the container needs on the host.
const HOST_PACKAGES: &[&str] = &["systemd-container"];

/// Boot to `multi-user.target`: seconds on an idle machine, more while CI
/// builds beside it.
const BOOT_TIMEOUT: Duration = Duration::from_mins(2);
/// One command in the container.
const EXEC_TIMEOUT: u64 = 90;

/// The test's `WatchdogSec=` (the unit says 10 s).
const WATCHDOG_SEC: u64 = 5;

#[derive(clap::Args)]
pub struct TestSystemdArgs {
    /// Install this .deb instead of building one with `cargo xtask dist`
    /// (CI passes the one `test-dist` has just built and checked).
    #[arg(long)]
    deb: Option<PathBuf>,
}

/// The configuration the agent runs in the container: one instance alone
/// on its veth, so it becomes Master once the master-down interval
/// (3 adverts and the skew, about 3.2 s) passes without adverts. The check
/// reads /proc (the container's PID 1 is `systemd`); the notify script
/// records its state and whether it inherited `$NOTIFY_SOCKET`; `auth_pass`
/// is longer than 8 bytes for a warning to find in the journal. `second`
/// adds an instance on another interface: what the reload applies (an
/// instance whose own settings change restarts, as BACKUP, by design).
fn config(second: bool) -> String {
    let mut text = format!(
        r#"[global]
vrrp_version = 2

[[check]]
name = "chk_init"
process = "systemd"
interval = 0.5

[[instance]]
name = "VI_1"
interface = "lbha0"
vrid = 51
priority = 200
advert_interval = 1
auth_pass = "{AUTH_PASS}"
virtual_addresses = ["{VIP}/32"]
track = ["chk_init"]

[instance.notify]
master = "/usr/local/sbin/lbha-test-notify master"
"#
    );
    if second {
        text.push_str(
            r#"
[[instance]]
name = "VI_2"
interface = "lbha2"
vrid = 52
priority = 100
advert_interval = 1
"#,
        );
    }
    text
}

const AUTH_PASS: &str = "longer-than-8";
const WARNING: &str = "`auth_pass` is longer than 8 bytes";
const INFO: &str = "lbha-agent starting";
const VIP: &str = "192.0.2.51";
const NOTIFY_LOG: &str = "/run/lbha/notify.log";

/// Runs as root from /run/lbha's owner: what the hardening leaves a notify
/// script (ProtectSystem=strict: /run/lbha is writable).
const NOTIFY_SCRIPT: &str = r#"#!/bin/sh
echo "$1 NOTIFY_SOCKET=${NOTIFY_SOCKET:-unset}" >> /run/lbha/notify.log
"#;

/// A booted container: killed (its PID 1, so the kernel ends every process
/// in it, and its network namespace with the veth) on drop.
struct Machine {
    name: String,
    nspawn: Child,
    leader: u32,
    log: PathBuf,
}

impl Machine {
    fn boot(root: &Path, bpffs: &Path, log: PathBuf) -> Result<Self> {
        let console = std::fs::File::create(&log)?;
        let name = format!("lbha-systemd-{}", std::process::id());
        let nspawn = Command::new("systemd-nspawn")
            .arg("--directory")
            .arg(root)
            .args(["--machine", name.as_str(), "--boot"])
            // No host systemd to register with or to make a scope for us.
            .args(["--register=no", "--keep-unit"])
            .arg("--private-network")
            // XDP and bpffs: CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN (the
            // unit bounds them again), and the bpf system call.
            .arg("--capability=all")
            .arg("--system-call-filter=bpf perf_event_open")
            .arg(format!("--bind={}:/sys/fs/bpf", bpffs.display()))
            .arg("--console=read-only")
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console)
            .spawn()
            .context("starting systemd-nspawn")?;
        let mut machine = Self {
            name,
            nspawn,
            leader: 0,
            log,
        };
        let deadline = Instant::now() + BOOT_TIMEOUT;
        // nspawn's child becomes the container's PID 1 (systemd).
        let children = format!("/proc/{0}/task/{0}/children", machine.nspawn.id());
        while machine.leader == 0 {
            if let Some(status) = machine.nspawn.try_wait()? {
                bail!(
                    "systemd-nspawn exited ({status}) before the container started:\n{}",
                    machine.console_tail()
                );
            }
            if let Some(pid) = std::fs::read_to_string(&children)
                .ok()
                .and_then(|c| c.split_whitespace().next()?.parse().ok())
                && std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|exe| exe.ends_with("systemd"))
            {
                machine.leader = pid;
            }
            if Instant::now() > deadline {
                bail!("no container init within {BOOT_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Running, or degraded (a unit of the minimal root failed; shown):
        // either way boot is over and the manager takes requests.
        let state = loop {
            let state = machine
                .exec_status("systemctl is-system-running")
                .unwrap_or_default();
            let state = state.trim().to_owned();
            if state == "running" || state == "degraded" {
                break state;
            }
            if Instant::now() > deadline {
                bail!(
                    "the container's systemd did not finish booting within {BOOT_TIMEOUT:?} (state {state:?}):\n{}",
                    machine.console_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        if state == "degraded" {
            println!(
                "test-systemd: boot degraded:\n{}",
                machine.exec_status("systemctl --failed --no-legend")?
            );
        }
        Ok(machine)
    }

    fn console_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn command(&self, script: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["--target", &self.leader.to_string()])
            // Mount, UTS, IPC, network, PID namespaces; its root and cwd.
            .args(["-m", "-u", "-i", "-n", "-p", "-r", "-w", "--"])
            .args(["/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"])
            .args(["LANG=C", "SYSTEMD_PAGER=", "DEBIAN_FRONTEND=noninteractive"])
            .args(["/bin/sh", "-c", script]);
        cmd
    }

    /// Runs `script` with `sh -c` in the container; fails unless it exits 0.
    fn exec(&self, script: &str) -> Result<String> {
        bounded(&mut self.command(script), EXEC_TIMEOUT)
            .with_context(|| format!("in the container: {script}"))
    }

    /// Runs `script`, returning its stdout whatever its exit status
    /// (`systemctl is-system-running` exits 1 when degraded).
    fn exec_status(&self, script: &str) -> Result<String> {
        self.exec(&format!("{script}; true"))
    }

    /// `systemctl show -p NAME --value lbha-agent`.
    fn prop(&self, name: &str) -> Result<String> {
        Ok(self
            .exec(&format!("systemctl show -p {name} --value lbha-agent"))?
            .trim()
            .to_owned())
    }

    fn main_pid(&self) -> Result<u32> {
        self.prop("MainPID")?
            .parse()
            .context("MainPID is not a number")
    }

    fn status(&self) -> Result<serde_json::Value> {
        let text = self.exec("lbha-agent status --json")?;
        serde_json::from_str(&text).with_context(|| format!("lbha-agent status --json: {text}"))
    }

    /// Waits until VI_1 is MASTER; returns the status then.
    fn await_master(&self, within: Duration) -> Result<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let status = self.status();
            if let Ok(status) = &status
                && instance_state(status).eq_ignore_ascii_case("master")
            {
                return Ok(status.clone());
            }
            if Instant::now() > deadline {
                let status = match status {
                    Ok(status) => status.to_string(),
                    Err(error) => format!("{error:#}"),
                };
                bail!("VI_1 is not MASTER within {within:?}: {status}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the unit is active with a main PID other than `old`.
    fn await_new_main_pid(&self, old: u32, within: Duration) -> Result<u32> {
        let deadline = Instant::now() + within;
        loop {
            let pid = self.main_pid().unwrap_or(0);
            if pid != 0 && pid != old && self.prop("ActiveState")? == "active" {
                return Ok(pid);
            }
            if Instant::now() > deadline {
                bail!(
                    "lbha-agent was not restarted within {within:?}:\n{}",
                    self.exec_status("systemctl status --no-pager lbha-agent")?
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What process `pid` logged.
    fn process_journal(&self, pid: u32) -> Result<String> {
        self.exec(&format!("journalctl --no-pager -o cat _PID={pid}"))
    }

    fn journal(&self, args: &str) -> Result<String> {
        self.exec(&format!(
            "journalctl --no-pager -o cat -u lbha-agent {args}"
        ))
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if self.leader != 0 {
            // SAFETY: kill(2) on the container's PID 1, which this process
            // started; no memory is involved.
            unsafe { libc::kill(self.leader as libc::pid_t, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.nspawn.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = self.nspawn.kill();
                let _ = self.nspawn.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // nspawn leaves its (empty) mount propagation directory behind
        // when its container is killed.
        let _ = std::fs::remove_dir(Path::new("/run/systemd/nspawn/propagate").join(&self.name));
    }
}

/// Writes `text` to `path` (making its directory) with `mode`.
fn write_file(text: &str, path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn instance_state(status: &serde_json::Value) -> &str {
    status["instances"][0]["state"].as_str().unwrap_or_default()
}

fn ensure_host_packages() -> Result<()> {
    let missing: Vec<&str> = HOST_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", pkg])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("test-systemd: installing {}", missing.join(" "));
    let install = || {
        crate::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    // A fresh machine may have no package lists yet.
    install().or_else(|_| {
        crate::run(Command::new("apt-get").args(["update", "-q"]))?;
        install()
    })
}

pub fn test_systemd(args: &TestSystemdArgs) -> Result<()> {
    let started = Instant::now();
    if !privileged("the systemd container test")? {
        return Ok(());
    }
    ensure_host_packages()?;
    let deb = match &args.deb {
        Some(deb) => deb.clone(),
        None => dist::dist()?.deb,
    };
    let lower = cached_root(&BOOKWORM)?;
    private_mounts()?;
    let mut root = Overlay::bare(&lower, "systemd")?;
    let bpffs = root
        .merged
        .parent()
        .context("overlay without a parent")?
        .join("bpffs");
    std::fs::create_dir_all(&bpffs)?;
    root.mount(
        Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&bpffs),
        bpffs.clone(),
    )?;
    dist::copy(&deb, &root.path("/var/tmp/lbha.deb"), 0o644)?;
    write_file(
        NOTIFY_SCRIPT,
        &root.path("/usr/local/sbin/lbha-test-notify"),
        0o755,
    )?;
    write_file(
        &format!(
            "# cargo xtask test-systemd: the watchdog check in seconds.\n[Service]\nWatchdogSec={WATCHDOG_SEC}s\n"
        ),
        &root.path("/etc/systemd/system/lbha-agent.service.d/test-watchdog.conf"),
        0o644,
    )?;
    let log = root
        .merged
        .parent()
        .context("overlay without a parent")?
        .join("console.log");
    let booting = Instant::now();
    let machine = match Machine::boot(&root.merged, &bpffs, log) {
        Ok(machine) => machine,
        Err(error) if std::env::var(SKIP_ENV).as_deref() == Ok("1") => {
            println!("test-systemd: SKIPPED: the container did not boot ({SKIP_ENV}=1): {error:#}");
            return Ok(());
        }
        Err(error) => {
            return Err(error.context(format!(
                "systemd did not boot in the container; {SKIP_ENV}=1 skips this test explicitly"
            )));
        }
    };
    println!(
        "test-systemd: booted systemd in a container in {:.1?}",
        booting.elapsed()
    );
    let mut tally = Tally::new("test-systemd");
    let setup = (|| -> Result<()> {
        // postinst's daemon-reload against a running manager.
        machine.exec("dpkg -i /var/tmp/lbha.deb")?;
        std::fs::write(root.path("/etc/lbha/lbha.toml"), config(false))?;
        for (a, b, net) in [("lbha0", "lbha1", 1), ("lbha2", "lbha3", 2)] {
            machine.exec(&format!(
                "ip link add {a} type veth peer name {b} && ip link set {b} up \
                 && ip link set {a} up && ip addr add 10.231.{net}.1/24 dev {a}"
            ))?;
        }
        machine.exec("lbha-agent check-config /etc/lbha/lbha.toml")?;
        let drop_ins = machine.prop("DropInPaths")?;
        if !drop_ins.contains("test-watchdog.conf") {
            bail!("the test's WatchdogSec drop-in is not loaded: DropInPaths={drop_ins}");
        }
        Ok(())
    })();
    tally.check("install_deb_in_the_booted_system", setup);
    let first_start = Instant::now();
    tally.check("start_returns_after_ready", check_start(&machine));
    tally.check(
        "hardening_allows_xdp_pin_proc_scripts",
        check_hardening(&machine),
    );
    tally.check("reload_keeps_master", check_reload(&machine, &root));
    tally.check(
        "watchdog_restarts_a_stopped_agent",
        check_watchdog(&machine, first_start),
    );
    tally.check(
        "restart_on_failure_takes_over_the_pinned_link",
        check_sigkill(&machine),
    );
    tally.check("journal_priorities", check_journal(&machine));
    tally.check("stop_leaves_the_program_pinned", check_stop(&machine));
    drop(machine);
    drop(root);
    println!("test-systemd: done in {:.0?}", started.elapsed());
    tally.finish()
}

/// `systemctl start` returns once READY=1 has arrived: the unit is active
/// (not activating) at once, with the status line READY=1 carried.
fn check_start(machine: &Machine) -> Result<()> {
    let begun = Instant::now();
    machine.exec("systemctl start lbha-agent")?;
    let took = begun.elapsed();
    let (active, sub, text) = (
        machine.prop("ActiveState")?,
        machine.prop("SubState")?,
        machine.prop("StatusText")?,
    );
    if active != "active" || sub != "running" {
        bail!("after systemctl start: {active}/{sub}");
    }
    // Sent only with READY=1, once every interface receives: a start that
    // returned earlier (Type=simple) finds no status line yet.
    if !text.starts_with("running: 1 instance(s), 1 check(s)") {
        bail!("after systemctl start, StatusText={text:?}: READY=1 had not arrived");
    }
    println!("test-systemd: systemctl start returned after READY=1 in {took:.1?} ({text})");
    Ok(())
}

/// Under the unit's sandbox the agent attached XDP natively, pinned it,
/// added the virtual address, read /proc for its check and ran the notify
/// script (which did not inherit `$NOTIFY_SOCKET`).
fn check_hardening(machine: &Machine) -> Result<()> {
    let status = machine.await_master(Duration::from_secs(20))?;
    let pid = machine.main_pid()?;
    // The sandbox is in force in the running agent.
    let proc_status = machine.exec(&format!("cat /proc/{pid}/status"))?;
    let field = |name: &str| {
        proc_status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    if field("Seccomp:") != "2" {
        bail!("the agent runs without its system call filter: {proc_status}");
    }
    let bounding = u64::from_str_radix(&field("CapBnd:"), 16)?;
    // CAP_SYS_MODULE (16) and CAP_SYS_PTRACE (19) are outside the unit's set.
    if bounding & (1 << 16 | 1 << 19) != 0 {
        bail!("the agent's bounding set is not the unit's: CapBnd {bounding:x}");
    }
    let mounts = machine.exec(&format!("cat /proc/{pid}/mountinfo"))?;
    let root_read_only = mounts.lines().any(|line| {
        let fields: Vec<_> = line.split(' ').collect();
        fields.get(4) == Some(&"/") && fields.get(5).is_some_and(|o| o.starts_with("ro"))
    });
    if !root_read_only {
        bail!("ProtectSystem=strict is not in force (/ is not read-only for the agent)");
    }
    let interface = &status["interfaces"][0];
    if interface["receive_path"] != "xdp" || interface["pinned"] != true {
        bail!("the XDP program is not attached natively and pinned: {interface}");
    }
    if status["checks"][0]["up"] != true {
        bail!("the /proc check is not up: {}", status["checks"][0]);
    }
    if !machine.exec("ip -d link show lbha0")?.contains("prog/xdp") {
        bail!("no XDP program on lbha0");
    }
    let pins = machine.exec("ls /sys/fs/bpf/lbha")?;
    if pins.trim().is_empty() {
        bail!("nothing pinned under /sys/fs/bpf/lbha");
    }
    if !machine.exec("ip -o addr show dev lbha0")?.contains(VIP) {
        bail!("the Master did not add {VIP}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        // /run is the container's tmpfs, not the overlay.
        let log = machine.exec_status(&format!("cat {NOTIFY_LOG} 2>/dev/null"))?;
        if !log.is_empty() || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if log.lines().next() != Some("master NOTIFY_SOCKET=unset") {
        bail!("the notify script did not run as expected: {NOTIFY_LOG}: {log:?}");
    }
    println!(
        "test-systemd: Master under the sandbox: XDP {} (pinned: {}), {VIP} added, /proc check up, notify script ran",
        interface["program"],
        pins.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    Ok(())
}

/// `systemctl reload` adding an instance on another interface: the new
/// one runs, the process is the same and the Master never left MASTER.
fn check_reload(machine: &Machine, root: &Overlay) -> Result<()> {
    let before = machine.await_master(Duration::from_secs(20))?;
    let transitions = before["instances"][0]["transitions"].clone();
    let pid = machine.main_pid()?;
    std::fs::write(root.path("/etc/lbha/lbha.toml"), config(true))?;
    machine.exec("systemctl reload lbha-agent")?;
    // Longer than the master-down interval: a reload that restarted VI_1
    // as BACKUP would show.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut reloaded = false;
    while Instant::now() < deadline {
        let status = machine.status()?;
        let instance = &status["instances"][0];
        if !instance_state(&status).eq_ignore_ascii_case("master")
            || instance["transitions"] != transitions
        {
            bail!("the reload moved the Master: {instance}");
        }
        reloaded |= status["instances"][1]["name"] == "VI_2";
        std::thread::sleep(Duration::from_millis(250));
    }
    if !reloaded {
        bail!("the reload did not start VI_2");
    }
    if machine.main_pid()? != pid || machine.prop("ActiveState")? != "active" {
        bail!("the reload restarted the agent or left it not active");
    }
    if !machine
        .process_journal(pid)?
        .contains("SIGHUP: configuration reloaded")
    {
        bail!("the agent did not log the reload");
    }
    println!("test-systemd: reload started VI_2; VI_1 still MASTER, same PID {pid}");
    Ok(())
}

/// An agent that stops answering (SIGSTOP) misses its pings: systemd's
/// watchdog stops it (SIGTERM, then SIGCONT) and Restart= starts another.
/// `started`: when the first `systemctl start` returned.
fn check_watchdog(machine: &Machine, started: Instant) -> Result<()> {
    machine.await_master(Duration::from_secs(20))?;
    let pid = machine.main_pid()?;
    // First the pings: a healthy agent outlives two watchdog timeouts.
    let healthy_for = Duration::from_secs(2 * WATCHDOG_SEC);
    if let Some(wait) = healthy_for.checked_sub(started.elapsed()) {
        std::thread::sleep(wait);
    }
    let restarts: u32 = machine.prop("NRestarts")?.parse()?;
    if machine.main_pid()? != pid || restarts != 0 {
        bail!(
            "a healthy agent was restarted (NRestarts={restarts}): no WATCHDOG=1 pings?\n{}",
            machine.journal("")?
        );
    }
    let begun = Instant::now();
    machine.exec(&format!("kill -STOP {pid}"))?;
    let new = machine.await_new_main_pid(pid, Duration::from_secs(WATCHDOG_SEC + 30))?;
    let took = begun.elapsed();
    let systemd_log = machine.journal("")?;
    if !systemd_log.contains("Watchdog timeout") {
        bail!("the restart was not the watchdog's:\n{systemd_log}");
    }
    let now: u32 = machine.prop("NRestarts")?.parse()?;
    if now != restarts + 1 {
        bail!("NRestarts went from {restarts} to {now}");
    }
    machine.await_master(Duration::from_secs(20))?;
    println!(
        "test-systemd: SIGSTOPped agent {pid} restarted by the watchdog as {new} in {took:.1?} (WatchdogSec={WATCHDOG_SEC}s)"
    );
    Ok(())
}

/// A SIGKILLed agent comes back (Restart=on-failure) and takes over the
/// pinned XDP link instead of attaching anew.
fn check_sigkill(machine: &Machine) -> Result<()> {
    machine.await_master(Duration::from_secs(20))?;
    let pid = machine.main_pid()?;
    let begun = Instant::now();
    machine.exec(&format!("kill -KILL {pid}"))?;
    let new = machine.await_new_main_pid(pid, Duration::from_secs(30))?;
    let took = begun.elapsed();
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = machine.process_journal(new)?;
        if log.contains("pinned XDP link") || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !log.contains("took over the pinned XDP link") {
        bail!("the restarted agent did not take over the pinned link:\n{log}");
    }
    machine.await_master(Duration::from_secs(20))?;
    let table = machine.exec("lbha-agent status")?;
    if !table.contains("receive path xdp (pinned)") {
        bail!("status after the restart:\n{table}");
    }
    println!(
        "test-systemd: SIGKILLed agent {pid} back as {new} in {took:.1?}, took over the pinned link, MASTER again"
    );
    Ok(())
}

/// Warnings are filed as warnings: `-p warning` shows the configuration
/// warning and not the start-up info line; `-p err` does not show it.
fn check_journal(machine: &Machine) -> Result<()> {
    let warnings = machine.journal("-p warning")?;
    if !warnings.contains(WARNING) {
        bail!("journalctl -p warning lacks the configuration warning:\n{warnings}");
    }
    if warnings.contains(INFO) {
        bail!("journalctl -p warning shows info lines:\n{warnings}");
    }
    let errors = machine.journal("-p err")?;
    if errors.contains(WARNING) {
        bail!("the warning was filed as an error:\n{errors}");
    }
    if !machine.journal("-p info")?.contains(INFO) {
        bail!("journalctl -p info lacks {INFO:?}");
    }
    // No priority prefix left in the text.
    if warnings.lines().any(|l| l.starts_with('<')) {
        bail!("priority prefixes reached the journal's messages:\n{warnings}");
    }
    println!("test-systemd: journalctl -u lbha-agent -p warning shows the warning, not the info");
    Ok(())
}

/// `systemctl stop`: a clean stop (no failure), the program left attached
/// through its pin for the next start.
fn check_stop(machine: &Machine) -> Result<()> {
    machine.exec("systemctl stop lbha-agent")?;
    let (active, result) = (machine.prop("ActiveState")?, machine.prop("Result")?);
    if active != "inactive" || result != "success" {
        bail!("after systemctl stop: {active}, result {result}");
    }
    if !machine.exec("ip -d link show lbha0")?.contains("prog/xdp") {
        bail!("the stop detached the pinned program");
    }
    Ok(())
}
