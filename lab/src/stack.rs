//! Which failover stack the lab's load balancers run.
//!
//! Besides lbha with its native TOML, the lab can run the seed's stack —
//! keepalived 2.2 from Debian with a `vrrp_script` running `pidof haproxy`
//! and a `notify_master` script doing what the seed's `master.sh` did — and
//! lbha fed the very same keepalived.conf (`lbha-agent --keepalived-conf`),
//! so the two can be compared in the same topology (`cargo xtask bench`).

use std::{
    fmt::Write as _,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use lbha_harness::{in_netns, send_signal};

use crate::{
    API_PORT, FLOATING_IP, HEARTBEAT_PORT, Lab, METADATA_IP, RESERVED_IPV6, ROUTER_PUBLIC, TOKEN,
    Transition, VIP6, VRID, lb_private, lb_private6, lb_public,
};

/// Where the notify script sends its assign and logs the answer.
#[derive(Clone, Debug)]
pub struct ScriptApi {
    /// The API's base URL (`http://...` next door, `https://...` remote).
    pub url: String,
    /// The CA to trust for it (`curl --cacert`), for HTTPS.
    pub cacert: Option<PathBuf>,
    /// Each accepted assign is a line here: `assign accepted
    /// droplet_id=ID unix_ns=NS`, NS taken when curl returned (a `date`
    /// fork later).
    pub log: PathBuf,
}

impl ScriptApi {
    /// The plain API next door, logging to `log`.
    pub fn local(log: PathBuf) -> Self {
        Self {
            url: format!("http://{ROUTER_PUBLIC}:{API_PORT}"),
            cacert: None,
            log,
        }
    }
}

/// What runs next to HAProxy on each load balancer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stack {
    /// lbha with its native TOML (`process = "haproxy"`: procfs + pidfds).
    #[default]
    Lbha,
    /// lbha with the keepalived.conf [`Stack::Keepalived`] runs, as a
    /// migrated operator runs it (`--keepalived-conf FILE --floating-ip ...
    /// --do-token-file ...`, and the `--heartbeat-*` flags with
    /// [`crate::LabOptions::heartbeat`]): the same file without its
    /// `notify_master` master.sh, which would assign the floating IP a
    /// second time on every takeover (check-config's double-assign advice:
    /// lbha's `--floating-ip` does what master.sh did).
    LbhaKeepalivedConf,
    /// The seed's stack: keepalived with the `pidof haproxy` check (through
    /// a wrapper script) and a master.sh-style `notify_master` script.
    Keepalived,
}

impl Stack {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Stack::Lbha => "lbha (native TOML)",
            Stack::LbhaKeepalivedConf => "lbha (same keepalived.conf)",
            Stack::Keepalived => "keepalived",
        }
    }

    /// The program name (`/proc/PID/comm`) of the stack's daemon.
    pub fn process_name(self) -> &'static str {
        match self {
            Stack::Lbha | Stack::LbhaKeepalivedConf => "lbha-agent",
            Stack::Keepalived => "keepalived",
        }
    }

    /// Whether the load balancers are configured with a keepalived.conf.
    pub fn uses_keepalived_conf(self) -> bool {
        self != Stack::Lbha
    }
}

/// Name of instance `k` (0-based) on VRRP interface `j`: `VI_1`, `VI_2`,
/// ... on the first, `VI2_1`, ... on the others.
pub fn instance_name(j: u8, k: u8) -> String {
    if j == 0 {
        format!("VI_{}", u32::from(k) + 1)
    } else {
        format!("VI{}_{}", u32::from(j) + 1, u32::from(k) + 1)
    }
}

/// VRID of instance `k` (0-based): [`VRID`], `VRID + 1`, ..., wrapping
/// after 255 to 1 (255 instances per interface use every VRID once).
pub fn instance_vrid(k: u8) -> u8 {
    ((u32::from(VRID) - 1 + u32::from(k)) % 255 + 1) as u8
}

/// The lab's VRRP interfaces on a load balancer: `priv0` (the private
/// network, shared with the web servers), then `vrrp1`.. (see
/// [`crate::LabOptions::interfaces`]).
pub fn vrrp_interface(j: u8) -> String {
    if j == 0 {
        "priv0".to_owned()
    } else {
        format!("vrrp{j}")
    }
}

/// Load balancer `node`'s address on VRRP interface `j`.
pub fn vrrp_address(node: usize, j: u8) -> std::net::Ipv4Addr {
    if j == 0 {
        lb_private(node)
    } else {
        std::net::Ipv4Addr::new(10, 231, j, 11 + node as u8)
    }
}

/// The dummy virtual address of instance `k` on interface `j` (keepalived
/// wants at least one per instance), outside every host's address.
fn dummy_vip(j: u8, k: u8) -> String {
    format!("10.{}.{k}.1/32", 240 + u32::from(j))
}

/// The check wrapper and notify script the keepalived.conf points to, in
/// `dir` (both root-owned, 0755, in a root-owned 0755 directory, as
/// keepalived's script security demands).
#[derive(Clone, Debug)]
pub struct StackScripts {
    /// `vrrp_script` wrapper around `pidof haproxy`.
    pub check: PathBuf,
    /// `notify_master`: what the seed's master.sh did.
    pub notify_master: PathBuf,
}

impl StackScripts {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            check: dir.join("chk_haproxy"),
            notify_master: dir.join("master.sh"),
        }
    }
}

/// The check: Debian's `pidof` is a symlink to `killall5`, and keepalived's
/// script security resolves the link and runs `killall5` (which fails), so
/// `pidof haproxy` needs a wrapper.
fn check_script() -> String {
    "#!/bin/sh\n\
     # keepalived resolves Debian's pidof -> killall5 link: wrap pidof.\n\
     exec pidof haproxy >/dev/null\n"
        .to_owned()
}

/// What the seed's master.sh (DigitalOcean's tutorial script) did, with
/// curl instead of the `assign-ip` helper: ask the metadata service for the
/// droplet id and whether it holds a floating IP, and if not ask the API to
/// assign it, up to 10 times. The assign goes where lbha's does (`api`:
/// HTTPS with `--cacert` when the API is remote), and its acceptance is
/// logged with the time curl returned. With `reserved_ipv6` the script goes
/// on, as an operator would extend master.sh for a dual-stack droplet, to
/// assign that address too (`/v2/reserved_ipv6/IP/actions`, the same
/// retries), logging `ipv6 assign accepted ...`.
fn notify_master_script(api: &ScriptApi, reserved_ipv6: Option<std::net::Ipv6Addr>) -> String {
    let cacert = api
        .cacert
        .as_ref()
        .map(|path| format!("--cacert {} ", path.display()))
        .unwrap_or_default();
    let ipv6 = reserved_ipv6.map_or_else(String::new, |ip| {
        format!(
            r#"# The reserved IPv6: the metadata service shows no reserved IPv6 entry to
# check first, so assign it each time this node becomes Master.
IP6='{ip}'
n=0
while [ $n -lt 10 ]; do
    if curl -sf {cacert}-o /dev/null -X POST -H "Content-Type: application/json" \
        -H "Authorization: Bearer $DO_TOKEN" \
        -d "{{\"type\":\"assign\",\"droplet_id\":$ID}}" \
        "{url}/v2/reserved_ipv6/$IP6/actions"; then
        echo "ipv6 assign accepted droplet_id=$ID unix_ns=$(date +%s%N)" >> {log}
        break
    fi
    n=$((n + 1))
    sleep 3
done
"#,
            url = api.url,
            log = api.log.display(),
        )
    });
    format!(
        r#"#!/bin/sh
# notify_master: what the seed's master.sh did.
DO_TOKEN='{TOKEN}'
IP='{FLOATING_IP}'
ID=$(curl -s http://{METADATA_IP}/metadata/v1/id)
HAS_FLOATING_IP=$(curl -s http://{METADATA_IP}/metadata/v1/floating_ip/ipv4/active)
if [ "$HAS_FLOATING_IP" = "false" ]; then
    n=0
    while [ $n -lt 10 ]; do
        if curl -sf {cacert}-o /dev/null -X POST -H "Content-Type: application/json" \
            -H "Authorization: Bearer $DO_TOKEN" \
            -d "{{\"type\":\"assign\",\"droplet_id\":$ID}}" \
            "{url}/v2/floating_ips/$IP/actions"; then
            echo "assign accepted droplet_id=$ID unix_ns=$(date +%s%N)" >> {log}
            break
        fi
        n=$((n + 1))
        sleep 3
    done
fi
{ipv6}"#,
        url = api.url,
        log = api.log.display(),
    )
}

/// The assigns the notify script logged as accepted: (droplet id, when
/// curl returned).
pub fn notify_accepts(log: &str) -> Vec<(u64, std::time::SystemTime)> {
    log.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("assign accepted ")?;
            let mut droplet = None;
            let mut ns = None;
            for word in rest.split_whitespace() {
                if let Some(v) = word.strip_prefix("droplet_id=") {
                    droplet = v.parse::<u64>().ok();
                } else if let Some(v) = word.strip_prefix("unix_ns=") {
                    ns = v.parse::<u64>().ok();
                }
            }
            Some((droplet?, std::time::UNIX_EPOCH + Duration::from_nanos(ns?)))
        })
        .collect()
}

/// Writes the check wrapper and the notify script (assigning `reserved_ipv6`
/// too, if given) into `dir` (created, mode 0755) and returns their paths.
pub fn write_scripts(
    dir: &Path,
    api: &ScriptApi,
    reserved_ipv6: Option<std::net::Ipv6Addr>,
) -> Result<StackScripts> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let scripts = StackScripts::in_dir(dir);
    for (path, text) in [
        (&scripts.check, check_script()),
        (
            &scripts.notify_master,
            notify_master_script(api, reserved_ipv6),
        ),
    ] {
        // Unchanged scripts are left alone: a shell running one (a notify
        // script in its retry loop) reads it as it goes.
        if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(scripts)
}

/// The seed's keepalived.conf for load balancer `node` (0: `state MASTER`,
/// priority 200; 1: `state BACKUP`, priority 100), with `instances` VRRP
/// instances on `priv0` (VRIDs from [`VRID`] up). The first instance
/// carries the `notify_master` script; all track the HAProxy check. Version
/// 2 uses PASS authentication as the seed did (and whole-second
/// intervals); version 3 has no authentication. Without `notify_master`
/// no instance runs the notify script (lbha's `--floating-ip` assigns
/// instead, see [`Stack::LbhaKeepalivedConf`]). With `vrrp_ipv6` the first
/// instance runs over IPv6 instead (`native_ipv6`, unicast between the
/// [`lb_private6`] addresses, virtual address [`VIP6`]), as the lab's lbha
/// does with [`crate::LabOptions::vrrp_ipv6`].
pub fn keepalived_conf(
    node: usize,
    advert_interval: Duration,
    version: u8,
    (interfaces, instances): (u8, u8),
    scripts: &StackScripts,
    vrrp_ipv6: bool,
    notify_master: bool,
) -> String {
    let mut conf = format!(
        "global_defs {{\n    enable_script_security\n    script_user root\n}}\n\n\
         vrrp_script chk_haproxy {{\n    script \"{}\"\n    interval 2\n}}\n",
        scripts.check.display()
    );
    for (j, k) in (0..interfaces.max(1)).flat_map(|j| (0..instances.max(1)).map(move |k| (j, k))) {
        let auth = if version == 2 {
            "    authentication {\n        auth_type PASS\n        auth_pass password\n    }\n"
        } else {
            ""
        };
        let notify = if notify_master && j == 0 && k == 0 {
            format!("    notify_master {}\n", scripts.notify_master.display())
        } else {
            String::new()
        };
        // `native_ipv6` before any address: keepalived refuses it after an
        // IPv4 one.
        let (family, src, peer, vip) = if vrrp_ipv6 && j == 0 && k == 0 {
            (
                "    native_ipv6\n",
                lb_private6(node).to_string(),
                lb_private6(1 - node).to_string(),
                format!("{VIP6}/64"),
            )
        } else {
            (
                "",
                vrrp_address(node, j).to_string(),
                vrrp_address(1 - node, j).to_string(),
                dummy_vip(j, k),
            )
        };
        let _ = write!(
            conf,
            "\nvrrp_instance {name} {{\n    interface {dev}\n{family}    state {state}\n    priority {priority}\n\n    \
             virtual_router_id {vrid}\n    version {version}\n    advert_int {interval}\n    \
             unicast_src_ip {src}\n    unicast_peer {{\n        {peer}\n    }}\n{auth}\n    \
             virtual_ipaddress {{\n        {vip} dev {dev}\n    }}\n\n    \
             track_script {{\n        chk_haproxy\n    }}\n{notify}}}\n",
            name = instance_name(j, k),
            dev = vrrp_interface(j),
            state = if node == 0 { "MASTER" } else { "BACKUP" },
            priority = if node == 0 { 200 } else { 100 },
            vrid = instance_vrid(k),
            interval = advert_interval.as_secs_f64(),
        );
    }
    conf
}

/// The native TOML `[[instance]]` tables of every instance but the first
/// (the lab's own configuration has it), for
/// [`crate::LabOptions::instances`] > 1 or [`crate::LabOptions::interfaces`] > 1.
fn extra_native_instances(
    node: usize,
    advert_interval: Duration,
    (interfaces, instances): (u8, u8),
) -> String {
    let mut toml = String::new();
    let all = (0..interfaces.max(1)).flat_map(|j| (0..instances.max(1)).map(move |k| (j, k)));
    for (j, k) in all.skip(1) {
        let _ = write!(
            toml,
            "\n[[instance]]\nname = \"{name}\"\ninterface = \"{dev}\"\nvrid = {vrid}\n\
             priority = {priority}\nversion = 3\nadvert_interval = {interval}\n\
             unicast_src = \"{src}\"\nunicast_peers = [\"{peer}\"]\ntrack = [\"haproxy\"]\n",
            name = instance_name(j, k),
            dev = vrrp_interface(j),
            vrid = instance_vrid(k),
            priority = if node == 0 { 200 } else { 100 },
            interval = advert_interval.as_secs_f64(),
            src = vrrp_address(node, j),
            peer = vrrp_address(1 - node, j),
        );
    }
    toml
}

/// keepalived's state changes (`(VI_1) Entering MASTER STATE`, `(VI_1)
/// entering FAULT state`, ...) in its console log, placed relative to
/// `start`. keepalived stamps lines to the second only, so `at` is coarse.
/// The first state of each instance comes from `INIT`; repeated lines
/// about the same state are one transition. `reason` is the instance name,
/// with keepalived's note when it gives one (`VI_1 init`).
pub fn keepalived_transitions(log: &str, start: std::time::SystemTime) -> Vec<Transition> {
    let start_ms = start
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut current: Vec<(String, String)> = Vec::new();
    let mut out = Vec::new();
    for line in log.lines() {
        let lower = line.to_ascii_lowercase();
        let Some(pos) = lower.find("entering ") else {
            continue;
        };
        let mut rest = lower[pos + "entering ".len()..].split_whitespace();
        let (Some(state), Some("state")) = (rest.next(), rest.next()) else {
            continue;
        };
        let to = state.to_ascii_uppercase();
        if !matches!(to.as_str(), "MASTER" | "BACKUP" | "FAULT") {
            continue;
        }
        let Some(instance) = line[..pos]
            .rfind('(')
            .and_then(|open| line[open + 1..pos].split(')').next())
            .map(str::to_owned)
        else {
            continue;
        };
        let note: String = line[pos..]
            .split_whitespace()
            .skip(3)
            .collect::<Vec<_>>()
            .join(" ");
        let note = note.trim_matches(|c| c == '(' || c == ')');
        let from = match current.iter_mut().find(|(name, _)| *name == instance) {
            Some((_, state)) if *state == to => continue,
            Some((_, state)) => std::mem::replace(state, to.clone()),
            None => {
                current.push((instance.clone(), to.clone()));
                "INIT".to_owned()
            }
        };
        let at_ms = keepalived_stamp_ms(line).unwrap_or(start_ms);
        out.push(Transition {
            at: Duration::from_millis(at_ms.saturating_sub(start_ms).max(0) as u64),
            from,
            to,
            reason: if note.is_empty() {
                instance
            } else {
                format!("{instance} {note}")
            },
        });
    }
    out
}

/// Unix milliseconds of a keepalived console line's local-time stamp
/// (`Wed Nov 25 13:22:10 2026: ...`).
fn keepalived_stamp_ms(line: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut words = line.split_whitespace();
    let _weekday = words.next()?;
    let month_name = words.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)?;
    let day: i32 = words.next()?.parse().ok()?;
    let mut hms = words.next()?.split(':').map(str::parse::<i32>);
    let (h, m, s) = (hms.next()?.ok()?, hms.next()?.ok()?, hms.next()?.ok()?);
    let year: i32 = words.next()?.trim_end_matches(':').parse().ok()?;
    // SAFETY: an all-zero `tm` is valid; mktime reads and normalises it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = year - 1900;
    tm.tm_mon = month as i32;
    tm.tm_mday = day;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = s;
    tm.tm_isdst = -1;
    // SAFETY: valid pointer to an initialised tm.
    let secs = unsafe { libc::mktime(&raw mut tm) };
    (secs != -1).then_some(secs as i64 * 1000)
}

/// The simulator's clock seen from here: action times (`requested_at_ms`,
/// milliseconds since the simulator started) against [`Instant`]s.
#[derive(Clone, Copy, Debug)]
pub struct SimClock {
    /// The instant the simulator's clock reads 0.
    zero: Instant,
    /// Half the round trip of the calibrating request: the error bound.
    pub uncertainty: Duration,
}

impl SimClock {
    /// `at` on the simulator's clock, in (fractional) milliseconds.
    pub fn ms(&self, at: Instant) -> f64 {
        if at >= self.zero {
            at.duration_since(self.zero).as_secs_f64() * 1e3
        } else {
            -(self.zero.duration_since(at).as_secs_f64() * 1e3)
        }
    }
}

/// An action the simulator recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimAction {
    pub kind: String,
    pub droplet_id: Option<u64>,
    pub status: String,
    /// Milliseconds since the simulator started (its monotonic clock).
    pub requested_at_ms: u64,
    pub completed_at_ms: Option<u64>,
}

impl Lab {
    /// The stack lb1 runs (and lb2, unless [`crate::LabOptions::lb2_stack`]
    /// says otherwise; see [`Lab::stack_of`]).
    pub fn stack(&self) -> Stack {
        self.opts.stack
    }

    /// The stack load balancer `i` runs.
    pub fn stack_of(&self, i: usize) -> Stack {
        match (i, self.opts.lb2_stack) {
            (1, Some(stack)) => stack,
            _ => self.opts.stack,
        }
    }

    /// Where the keepalived.conf of load balancer `i` is (for the stacks
    /// that use one).
    pub fn keepalived_conf_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("lb{}-keepalived.conf", i + 1))
    }

    /// The directory of the check and notify scripts.
    pub fn scripts_dir(&self) -> PathBuf {
        self.dir.join("scripts")
    }

    /// Where the notify script logs the assigns the API accepted (both
    /// load balancers: the lines carry the droplet id).
    pub fn notify_log_path(&self) -> PathBuf {
        self.dir.join("master-sh.log")
    }

    /// The assigns the notify script logged as accepted, see
    /// [`notify_accepts`].
    pub fn notify_accepts(&self) -> Vec<(u64, std::time::SystemTime)> {
        notify_accepts(&std::fs::read_to_string(self.notify_log_path()).unwrap_or_default())
    }

    /// Writes what load balancer `i`'s stack needs besides the native TOML
    /// (which [`Lab::start_lb`] has just written).
    pub(crate) fn write_stack_config(&self, i: usize) -> Result<()> {
        let o = &self.opts;
        match self.stack_of(i) {
            Stack::Lbha => {
                if o.instances > 1 || o.interfaces > 1 {
                    let toml = self.dir.join(format!("lb{}.toml", i + 1));
                    let mut text = std::fs::read_to_string(&toml)?;
                    text.push_str(&extra_native_instances(
                        i,
                        o.advert_interval,
                        (o.interfaces, o.instances),
                    ));
                    std::fs::write(&toml, text)?;
                }
            }
            Stack::LbhaKeepalivedConf | Stack::Keepalived => {
                // Script security: no directory above the scripts may be
                // writable by others (the temp dir's sticky bit is fine).
                std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755))?;
                let api = ScriptApi {
                    url: self.api_url(),
                    cacert: self.api_ca_file(),
                    log: self.notify_log_path(),
                };
                let reserved_ipv6 = o.dual_stack.then_some(RESERVED_IPV6);
                let scripts = write_scripts(&self.scripts_dir(), &api, reserved_ipv6)?;
                std::fs::write(
                    self.keepalived_conf_path(i),
                    keepalived_conf(
                        i,
                        o.advert_interval,
                        3,
                        (o.interfaces, o.instances),
                        &scripts,
                        o.vrrp_ipv6,
                        self.stack_of(i) == Stack::Keepalived,
                    ),
                )?;
            }
        }
        Ok(())
    }

    /// The shell command starting the daemon of a keepalived.conf stack on
    /// load balancer `i` (stderr to the node's log).
    pub(crate) fn stack_agent_command(&self, i: usize) -> String {
        let conf = self.keepalived_conf_path(i);
        let log = self.lb_log_path(i);
        match self.stack_of(i) {
            Stack::Keepalived => format!(
                // Foreground, console logging (stderr) with detail, no
                // syslog, VRRP only. Pid files a crash left behind go first:
                // in the node's new PID namespace their numbers may belong to
                // another process, and keepalived would think it is running.
                "rm -f {pid} {vrrp_pid}; \
                 keepalived -n -l -D -G -P -f {conf} -p {pid} -r {vrrp_pid} 2>>{log}",
                conf = conf.display(),
                pid = self
                    .dir
                    .join(format!("lb{}-keepalived.pid", i + 1))
                    .display(),
                vrrp_pid = self.dir.join(format!("lb{}-vrrp.pid", i + 1)).display(),
                log = log.display(),
            ),
            Stack::LbhaKeepalivedConf | Stack::Lbha => format!(
                "{agent} --keepalived-conf {conf} --floating-ip {FLOATING_IP} {reserved_ipv6}\
                 --do-token-file {token} --do-api-url {api_url} {ca_file}{keepalive}\
                 --do-metadata-url http://{METADATA_IP} --status-socket {status} \
                 {heartbeat}2>>{log}",
                agent = self.bins.agent.display(),
                reserved_ipv6 = if self.opts.dual_stack {
                    format!("--reserved-ipv6 {RESERVED_IPV6} ")
                } else {
                    String::new()
                },
                status = self.status_socket(i).display(),
                // What the native TOML's [heartbeat] says, as flags.
                heartbeat = if self.opts.heartbeat {
                    format!(
                        "--heartbeat-listen {}:{HEARTBEAT_PORT} --heartbeat-peer {}:{HEARTBEAT_PORT} \
                         --heartbeat-key-file {} ",
                        lb_public(i),
                        lb_public(1 - i),
                        self.dir.join("heartbeat.key").display()
                    )
                } else {
                    String::new()
                },
                conf = conf.display(),
                token = self.dir.join("token").display(),
                api_url = self.api_url(),
                ca_file = self
                    .api_ca_file()
                    .map(|path| format!("--do-ca-file {} ", path.display()))
                    .unwrap_or_default(),
                keepalive = self
                    .opts
                    .keepalive_interval
                    .map(|d| format!("--do-keepalive-interval {} ", d.as_secs_f64()))
                    .unwrap_or_default(),
                log = log.display(),
            ),
        }
    }

    /// Host PIDs of the stack's daemon on load balancer `i`: lbha's one
    /// process, or keepalived's parent and its VRRP child (not the short
    /// lived children they fork to run scripts).
    pub fn agent_pids(&self, i: usize) -> Vec<i32> {
        let stack = self.stack_of(i);
        let comm = stack.process_name();
        let is_agent = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        };
        self.lb_pids(i, comm)
            .into_iter()
            .filter(|pid| {
                // Depth among the daemon's own processes: parent 0, child 1.
                let mut depth = 0;
                let mut current = *pid;
                while let Some(parent) = parent_pid(current) {
                    if !is_agent(parent) {
                        break;
                    }
                    depth += 1;
                    current = parent;
                }
                match stack {
                    Stack::Keepalived => depth <= 1,
                    Stack::Lbha | Stack::LbhaKeepalivedConf => depth == 0,
                }
            })
            .collect()
    }

    /// SIGKILLs every HAProxy process of load balancer `i` and returns the
    /// instant just before the first kill (the processes are looked up
    /// before it) and how many it killed.
    pub fn kill_haproxy_at(&self, i: usize) -> (Instant, usize) {
        let pids = self.lb_pids(i, "haproxy");
        let at = Instant::now();
        for pid in &pids {
            send_signal(*pid, libc::SIGKILL);
        }
        (at, pids.len())
    }

    /// Crashes load balancer `i` as [`Lab::crash_lb`] does and returns the
    /// instant just before the first kill: its processes are looked up
    /// first, then all SIGKILLed at once.
    pub fn crash_lb_at(&mut self, i: usize) -> Instant {
        let pids = self.lb[i].pids();
        let at = Instant::now();
        for pid in &pids {
            send_signal(*pid, libc::SIGKILL);
        }
        self.crash_lb(i);
        at
    }

    /// `GET /_sim/state` from the router namespace; the parsed body.
    fn sim_state_live(&self) -> Result<serde_json::Value> {
        self.sim_get("/_sim/state", Duration::from_secs(2))
    }

    /// Calibrates the simulator's clock against this process's: reads its
    /// `uptime_ms` a few times and keeps the reading with the shortest
    /// round trip (typically well under a millisecond).
    pub fn sim_clock(&self) -> Result<SimClock> {
        let mut best: Option<SimClock> = None;
        for _ in 0..5 {
            let sent = Instant::now();
            let state = self.sim_state_live()?;
            let received = Instant::now();
            let uptime = state["uptime_ms"]
                .as_u64()
                .context("simulator state without uptime_ms")?;
            let half = received.duration_since(sent) / 2;
            // uptime_ms is truncated: the simulator read uptime + 0.5 ms on average.
            let zero = (sent + half)
                .checked_sub(Duration::from_micros(uptime * 1000 + 500))
                .context("simulator clock before this process's")?;
            if best.is_none_or(|b| half < b.uncertainty) {
                best = Some(SimClock {
                    zero,
                    uncertainty: half,
                });
            }
        }
        best.context("no calibration")
    }

    /// Asks the simulated API, as an operator would, to assign the
    /// floating IP to `droplet` (`POST /v2/floating_ips/IP/actions`).
    pub fn api_assign(&self, droplet: u64) -> Result<()> {
        let body = format!(r#"{{"type":"assign","droplet_id":{droplet}}}"#);
        let request = format!(
            "POST /v2/floating_ips/{FLOATING_IP}/actions HTTP/1.1\r\nHost: api\r\n\
             Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let reply = in_netns(self.router.name(), move || {
            crate::http_request(
                std::net::SocketAddr::from((ROUTER_PUBLIC, API_PORT)),
                &request,
                Duration::from_secs(2),
            )
        })??;
        if !reply.starts_with("HTTP/1.1 2") {
            bail!("assign: {}", reply.lines().next().unwrap_or_default());
        }
        Ok(())
    }

    /// Every action the simulator recorded (from its state file).
    pub fn sim_actions(&self) -> Vec<SimAction> {
        let Ok(state) = self.sim_state() else {
            return Vec::new();
        };
        state["actions"]
            .as_array()
            .map(|actions| {
                actions
                    .iter()
                    .filter_map(|a| {
                        Some(SimAction {
                            kind: a["type"].as_str()?.to_owned(),
                            droplet_id: a["droplet_id"].as_u64(),
                            status: a["status"].as_str().unwrap_or_default().to_owned(),
                            requested_at_ms: a["requested_at_ms"].as_u64()?,
                            completed_at_ms: a["completed_at_ms"].as_u64(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Checks that load balancer `i`'s daemon is alive (for errors that
    /// would otherwise be a mute timeout).
    pub fn ensure_agent_running(&self, i: usize) -> Result<()> {
        if self.agent_pids(i).is_empty() {
            bail!(
                "{} is not running on lb{}; its log:\n{}",
                self.stack_of(i).process_name(),
                i + 1,
                self.lb_log(i)
            );
        }
        Ok(())
    }
}

/// The parent of `pid`, from `/proc/PID/stat`.
fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the parenthesised name: state, ppid, ...
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalived_conf_has_what_the_seed_had() {
        let scripts = StackScripts::in_dir(Path::new("/tmp/x/scripts"));
        let conf = keepalived_conf(
            1,
            Duration::from_millis(10),
            3,
            (1, 2),
            &scripts,
            false,
            true,
        );
        assert!(conf.contains("script \"/tmp/x/scripts/chk_haproxy\""));
        assert!(conf.contains("vrrp_instance VI_1 {"));
        assert!(conf.contains("vrrp_instance VI_2 {"));
        assert!(conf.contains("virtual_router_id 52"));
        assert!(conf.contains("advert_int 0.01"));
        assert!(conf.contains("state BACKUP"));
        assert!(conf.contains("priority 100"));
        assert!(conf.contains("unicast_src_ip 10.230.1.12"));
        assert_eq!(conf.matches("notify_master").count(), 1);
        assert!(!conf.contains("auth_type"));
        let v2 = keepalived_conf(0, Duration::from_secs(1), 2, (1, 1), &scripts, false, true);
        assert!(v2.contains("auth_type PASS"));
        assert!(v2.contains("advert_int 1\n"));
        assert!(v2.contains("state MASTER"));
        // lbha's --floating-ip assigns instead of master.sh.
        let lbha = keepalived_conf(0, Duration::from_secs(1), 3, (1, 1), &scripts, false, false);
        assert!(!lbha.contains("notify_master"));
        assert!(lbha.contains("track_script"));
    }

    /// The scale benchmark's 1,020 instances: 4 interfaces, each using
    /// every VRID once, every name distinct.
    #[test]
    fn four_interfaces_of_255_instances_use_each_vrid_once_per_interface() {
        let scripts = StackScripts::in_dir(Path::new("/tmp/x/scripts"));
        let conf = keepalived_conf(
            0,
            Duration::from_millis(10),
            3,
            (4, 255),
            &scripts,
            false,
            true,
        );
        assert_eq!(conf.matches("vrrp_instance ").count(), 1020);
        for j in 0..4u8 {
            let dev = vrrp_interface(j);
            let vrids: std::collections::BTreeSet<u8> = conf
                .split("vrrp_instance ")
                .skip(1)
                .filter(|block| block.contains(&format!("interface {dev}\n")))
                .filter_map(|block| {
                    block
                        .split("virtual_router_id ")
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
                .collect();
            assert_eq!(vrids.len(), 255, "{dev}");
            assert!(!vrids.contains(&0));
        }
        let names: std::collections::BTreeSet<&str> = conf
            .split("vrrp_instance ")
            .skip(1)
            .filter_map(|block| block.split_whitespace().next())
            .collect();
        assert_eq!(names.len(), 1020);
        let native = extra_native_instances(0, Duration::from_millis(10), (4, 255));
        assert_eq!(
            native.matches("[[instance]]").count(),
            1019,
            "the first is the lab's own"
        );
    }

    #[test]
    fn notify_script_posts_the_assign() {
        let script = notify_master_script(&ScriptApi::local("/tmp/x/master-sh.log".into()), None);
        assert!(script.contains("/metadata/v1/floating_ip/ipv4/active"));
        assert!(script.contains(r#"-d "{\"type\":\"assign\",\"droplet_id\":$ID}""#));
        assert!(script.contains("http://10.230.0.1:8080/v2/floating_ips/$IP/actions"));
        assert!(script.contains("while [ $n -lt 10 ]"));
        assert!(!script.contains("--cacert"));
        assert!(script.contains(">> /tmp/x/master-sh.log"));
        assert!(!script.contains("reserved_ipv6"));

        let remote = notify_master_script(
            &ScriptApi {
                url: "https://10.230.0.1:8443".into(),
                cacert: Some("/tmp/x/api-ca.pem".into()),
                log: "/tmp/x/master-sh.log".into(),
            },
            None,
        );
        assert!(remote.contains("curl -sf --cacert /tmp/x/api-ca.pem -o /dev/null -X POST"));
        assert!(remote.contains("https://10.230.0.1:8443/v2/floating_ips/$IP/actions"));
    }

    /// A dual-stack master.sh also assigns the reserved IPv6, after the
    /// floating IP, with its own retries and log line.
    #[test]
    fn notify_script_assigns_the_reserved_ipv6_too() {
        let api = ScriptApi::local("/tmp/x/master-sh.log".into());
        let script = notify_master_script(&api, Some(RESERVED_IPV6));
        let v4 = script.find("/v2/floating_ips/$IP/actions").unwrap();
        let v6 = script
            .find("http://10.230.0.1:8080/v2/reserved_ipv6/$IP6/actions")
            .unwrap();
        assert!(v4 < v6);
        assert!(script.contains("IP6='2001:db8:10::10'"));
        assert_eq!(script.matches("while [ $n -lt 10 ]").count(), 2);
        assert_eq!(
            script
                .matches(r#"-d "{\"type\":\"assign\",\"droplet_id\":$ID}""#)
                .count(),
            2
        );
        assert!(script.contains("echo \"ipv6 assign accepted droplet_id=$ID"));
        // Its log lines are not IPv4 accepts.
        assert!(notify_accepts("ipv6 assign accepted droplet_id=1 unix_ns=5\n").is_empty());
    }

    /// With `vrrp_ipv6` the notify-carrying instance runs over IPv6, as the
    /// lab's lbha does; the others stay IPv4.
    #[test]
    fn keepalived_conf_over_ipv6() {
        let scripts = StackScripts::in_dir(Path::new("/tmp/x/scripts"));
        let conf = keepalived_conf(
            1,
            Duration::from_millis(100),
            3,
            (1, 2),
            &scripts,
            true,
            true,
        );
        let (first, second) = conf.split_once("vrrp_instance VI_2").unwrap();
        assert!(first.contains("    interface priv0\n    native_ipv6\n"));
        assert!(first.contains("unicast_src_ip fd00:230:1::12"));
        assert!(first.contains("unicast_peer {\n        fd00:230:1::11\n"));
        assert!(first.contains("fd00:230:1::100/64 dev priv0"));
        assert!(first.contains("notify_master"));
        assert!(!second.contains("native_ipv6"));
        assert!(second.contains("unicast_src_ip 10.230.1.12"));
    }

    #[test]
    fn notify_accepts_from_the_scripts_log() {
        let log = "assign accepted droplet_id=1002 unix_ns=1764077000123456789\n\
                   something else\n\
                   assign accepted droplet_id=1001 unix_ns=1764077001000000000\n";
        let accepts = notify_accepts(log);
        assert_eq!(accepts.len(), 2);
        assert_eq!(accepts[0].0, 1002);
        assert_eq!(
            accepts[0].1,
            std::time::UNIX_EPOCH + Duration::from_nanos(1_764_077_000_123_456_789)
        );
        assert_eq!(accepts[1].0, 1001);
    }

    #[test]
    fn transitions_from_a_keepalived_log() {
        let log = "Wed Nov 25 13:22:10 2026: (VI_1) Entering BACKUP STATE (init)\n\
Wed Nov 25 13:22:10 2026: (VI_1) Entering BACKUP STATE\n\
Wed Nov 25 13:22:11 2026: (VI_2): entering FAULT state (interface priv0 down)\n\
Wed Nov 25 13:22:11 2026: (VI_2) entering FAULT state\n\
Wed Nov 25 13:22:12 2026: (VI_1) Entering MASTER STATE\n\
Wed Nov 25 13:22:12 2026: (VI_1) Receive advertisement timeout\n";
        let t = keepalived_transitions(log, std::time::UNIX_EPOCH);
        let brief: Vec<_> = t
            .iter()
            .map(|t| (t.from.as_str(), t.to.as_str(), t.reason.as_str()))
            .collect();
        assert_eq!(
            brief,
            [
                ("INIT", "BACKUP", "VI_1 init"),
                ("INIT", "FAULT", "VI_2 interface priv0 down"),
                ("BACKUP", "MASTER", "VI_1"),
            ]
        );
        assert!(t[2].at >= t[0].at + Duration::from_secs(2));
    }
}
