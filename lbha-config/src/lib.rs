//! lbha's configuration model, and the two ways to write it: lbha's native
//! TOML (`toml.rs`) and keepalived.conf (`keepalived.rs`), which both produce
//! a [`Config`].
//!
//! A leaf: it knows nothing of the runtime that carries the configuration
//! out. The agent depends on it, the fuzzers parse with it without building
//! the XDP program, and a value here is only data (defaults, units, the
//! choices an operator makes), never a socket or a task.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

mod floating_ip;

pub use floating_ip::{
    DEFAULT_API_URL, DEFAULT_METADATA_TIMEOUT, DEFAULT_METADATA_URL, FloatingIpConfig,
    InvalidFloatingIpConfig, PathFamily, TokenSource, UnknownPathFamily,
};

/// Where `lbha-agent status` finds the running agent (root only).
pub const DEFAULT_STATUS_SOCKET: &str = "/run/lbha/lbha.sock";
/// The bpffs directory the XDP link and maps are pinned under.
pub const DEFAULT_BPF_PIN_ROOT: &str = "/sys/fs/bpf/lbha";

/// How many unicast peers an instance that checks advert sources can have:
/// what the XDP program's per-VRID table holds. A longer list with
/// `check_unicast_src` on is a configuration error, never a silent
/// fall-back to accepting every source.
pub const MAX_FILTERED_PEERS: usize = 8;

/// RFC 3768/5798's Master_Down_Interval of 3 advert intervals (+ Skew_Time).
pub const DEFAULT_DOWN_TIMER_ADVERTS: u8 = 3;
/// keepalived's range for `down_timer_adverts`.
pub const DOWN_TIMER_ADVERTS_RANGE: std::ops::RangeInclusive<u8> = 1..=100;

/// Which receive path the operator asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceivePathChoice {
    /// XDP, falling back to the raw socket when XDP cannot be used.
    Auto,
    /// XDP only; fail if it cannot be attached.
    Xdp,
    /// XDP with the program without the silence timer, whatever the kernel
    /// offers (backups then keep their deadlines in user space); fail if it
    /// cannot be attached. For a kernel whose `bpf_timer` misbehaves, and
    /// for testing that program where the timer exists.
    XdpNoTimer,
    /// The raw socket only.
    Raw,
}

impl ReceivePathChoice {
    /// The name in configuration files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ReceivePathChoice::Auto => "auto",
            ReceivePathChoice::Xdp => "xdp",
            ReceivePathChoice::XdpNoTimer => "xdp-no-timer",
            ReceivePathChoice::Raw => "raw",
        }
    }
}

/// Everything the agent runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub global: Global,
    /// Health checks (keepalived `vrrp_script`), referenced by name from instances.
    pub checks: Vec<Check>,
    pub instances: Vec<Instance>,
    /// The DigitalOcean floating IP that follows mastership (replaces
    /// keepalived's `notify_master` + master.sh).
    pub floating_ip: Option<FloatingIp>,
    /// A second path between the agents, besides VRRP (optional).
    pub heartbeat: Option<Heartbeat>,
}

/// Authenticated heartbeats between the agents over another network than
/// the VRRP one (the public interface, say). Each carries the sender's
/// droplet id and, per VRID, its state and effective priority. When VRRP
/// adverts stop but the heartbeat shows the master alive and healthy, a
/// backup does not take over: the VRRP path is partitioned, the master is
/// not gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// Local address and UDP port heartbeats are received on and sent from.
    pub listen: SocketAddr,
    /// The other agents' addresses and ports.
    pub peers: Vec<SocketAddr>,
    /// A file holding the shared secret (at least 16 bytes) that
    /// authenticates every heartbeat (HMAC-SHA256).
    pub key_file: PathBuf,
    /// Time between heartbeats; a peer counts as alive for three of them.
    pub interval: Duration,
}

impl Heartbeat {
    /// The default interval: a master crash is noticed within three.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);
    /// How many intervals without a heartbeat make a peer silent.
    pub const MISSED_TO_SILENT: u32 = 3;
}

/// Which floating IP follows which instance, and how to reach DigitalOcean.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FloatingIp {
    /// The instance whose Master state holds the IP (default: the first).
    pub instance: Option<String>,
    pub settings: FloatingIpConfig,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Global {
    /// Refuse to run scripts that a non-root user could modify
    /// (keepalived `enable_script_security`).
    pub script_security: bool,
    /// User (and optional group) scripts run as (keepalived `script_user`).
    pub script_user: Option<String>,
    pub script_group: Option<String>,
    /// Default VRRP version for instances that do not set one (keepalived
    /// `vrrp_version`, default 2 as in keepalived).
    pub vrrp_version: u8,
    /// Prometheus metrics listen address; off when absent.
    pub metrics_listen: Option<SocketAddr>,
    /// Unix socket `lbha-agent status` asks (root only).
    pub status_socket: PathBuf,
    /// bpffs directory the XDP link and maps are pinned in, so restarting
    /// lbha does not detach the program; `None` (`bpf_pin = false`) detaches
    /// it when lbha stops.
    pub bpf_pin_dir: Option<PathBuf>,
}

impl Default for Global {
    fn default() -> Self {
        Self {
            script_security: false,
            script_user: None,
            script_group: None,
            vrrp_version: 2,
            metrics_listen: None,
            status_socket: PathBuf::from(DEFAULT_STATUS_SOCKET),
            bpf_pin_dir: Some(PathBuf::from(DEFAULT_BPF_PIN_ROOT)),
        }
    }
}

/// A tracked health check (keepalived `vrrp_script`).
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub name: String,
    /// The command line, as keepalived's `script` (split on whitespace,
    /// double quotes group words). Empty when `probe` is set.
    pub script: String,
    /// A built-in probe used instead of a script.
    pub probe: Option<Probe>,
    /// Time between runs (keepalived default 1 s).
    pub interval: Duration,
    /// How long a run may take before it counts as failed (default: `interval`).
    pub timeout: Duration,
    /// Priority adjustment, -253..=253. 0 means a failing check puts the
    /// instance into Fault.
    pub weight: i32,
    /// With a positive weight keepalived applies it when the check succeeds;
    /// `weight -N` applies when it fails. Kept as keepalived's `weight N reverse`.
    pub weight_reverse: bool,
    /// Consecutive successes before a failed check counts as up (default 1).
    pub rise: u32,
    /// Consecutive failures before an up check counts as down (default 1).
    pub fall: u32,
}

/// Built-in checks that need no script (and no fork).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Some process with this program name runs (what `pidof NAME` tells).
    Process(String),
    /// The process whose PID is in this file runs (HAProxy's master).
    Pidfile(PathBuf),
    /// A TCP connection to this address is accepted (a frontend port).
    Tcp(SocketAddr),
    /// `GET` of this URL answers 2xx/3xx (HAProxy's `monitor-uri` or stats).
    Http(String),
}

/// The initial state keepalived's `state` hints at. lbha, like keepalived,
/// starts every non-owner in Backup and lets the election decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialState {
    Backup,
    Master,
}

/// One VRRP instance (keepalived `vrrp_instance`).
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    /// 1..=255; 255 is the address owner.
    pub priority: u8,
    /// 2 or 3.
    pub version: u8,
    /// v3: centisecond resolution, >= 10 ms; v2: whole seconds.
    pub advert_interval: Duration,
    pub initial_state: InitialState,
    /// false with keepalived `nopreempt`.
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// Source address for adverts (keepalived `unicast_src_ip`); the
    /// interface's first IPv4 address when absent.
    pub unicast_src: Option<Ipv4Addr>,
    /// Unicast peers; multicast to 224.0.0.18 when empty.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// Accept adverts only from `unicast_peers` (keepalived's
    /// `check_unicast_src`, off by default there, on by default in lbha).
    /// No effect without peers. At most [`MAX_FILTERED_PEERS`] peers can be
    /// filtered on.
    pub check_unicast_src: bool,
    /// keepalived's `down_timer_adverts`: the master counts as down after
    /// this many advert intervals without one (plus Skew_Time), 1..=100,
    /// [`DEFAULT_DOWN_TIMER_ADVERTS`] (RFC 3768/5798) by default.
    pub down_timer_adverts: u8,
    /// v2 simple-text password (keepalived keeps the first 8 bytes).
    pub auth_pass: Option<String>,
    /// Addresses the master holds on the interface (keepalived
    /// `virtual_ipaddress`), with prefix length (default /32).
    pub virtual_addresses: Vec<(Ipv4Addr, u8)>,
    /// Names of [`Check`]s this instance tracks.
    pub track: Vec<String>,
    pub notify: Notify,
    pub receive_path: ReceivePathChoice,
}

/// Scripts run on state changes, as keepalived runs them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    pub master: Option<String>,
    pub backup: Option<String>,
    pub fault: Option<String>,
    /// Called with `INSTANCE <name> <STATE> <priority>` after the specific one.
    pub any: Option<String>,
}

/// A problem in a configuration file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// All the errors found in a file (never just the first).
#[derive(Debug, thiserror::Error)]
#[error("{} error(s) in configuration:\n{}", .0.len(), display_all(.0))]
pub struct ConfigErrors(pub Vec<Diagnostic>);

fn display_all(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A parsed configuration, with the warnings (unsupported keywords and the
/// like) that did not prevent it from loading, and where it came from: the
/// file and the line of every value, so that problems found later (on the
/// host, at a reload) still point at a line.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
    pub file: PathBuf,
    pub lines: Lines,
}

impl Loaded {
    /// A diagnostic about this file at the line of `field` of `table`
    /// (`None`: the line is not known, e.g. a command-line override).
    pub fn diagnostic(&self, line: Option<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.file.clone(),
            line,
            message: message.into(),
        }
    }
}

mod keepalived;
mod toml;
mod validate;

pub use self::{
    toml::to_toml,
    validate::{FieldLines, Findings, Lines, Syntax, validate},
};

/// Reads and parses lbha's native TOML configuration.
pub fn load_toml(path: &std::path::Path) -> Result<Loaded, ConfigErrors> {
    load_with(path, Syntax::Toml, |_| {})
}

/// Parses lbha's native TOML configuration; `path` only labels diagnostics.
pub fn parse_toml(text: &str, path: &std::path::Path) -> Result<Loaded, ConfigErrors> {
    self::toml::parse(text, path, &mut |_| {})
}

/// Reads and parses a keepalived.conf.
pub fn load_keepalived(path: &std::path::Path) -> Result<Loaded, ConfigErrors> {
    load_with(path, Syntax::Keepalived, |_| {})
}

/// Parses a keepalived.conf; `path` only labels diagnostics.
pub fn parse_keepalived(text: &str, path: &std::path::Path) -> Result<Loaded, ConfigErrors> {
    self::keepalived::parse(text, path, &mut |_| {})
}

/// Loads `path` as TOML when it ends in `.toml`, as keepalived.conf otherwise.
pub fn load_any(path: &std::path::Path) -> Result<Loaded, ConfigErrors> {
    load_with(path, Syntax::of_path(path), |_| {})
}

/// Reads and parses `path`, written in `syntax`, and lets `adjust` change
/// the configuration before it is validated: for command-line settings that
/// decide what validation accepts (`--no-check-unicast-src` makes a
/// keepalived.conf with more unicast peers than lbha can filter on valid).
pub fn load_with(
    path: &std::path::Path,
    syntax: Syntax,
    mut adjust: impl FnMut(&mut Config),
) -> Result<Loaded, ConfigErrors> {
    let text = read(path)?;
    match syntax {
        Syntax::Toml => self::toml::parse(&text, path, &mut adjust),
        Syntax::Keepalived => self::keepalived::parse(&text, path, &mut adjust),
    }
}

fn read(path: &std::path::Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|error| {
        ConfigErrors(vec![Diagnostic {
            file: path.to_path_buf(),
            line: None,
            message: format!("cannot read: {error}"),
        }])
    })
}
