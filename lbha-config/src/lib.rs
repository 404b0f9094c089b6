//! lbha's configuration model, and the two ways to write it: lbha's native
//! TOML (`toml.rs`) and keepalived.conf (`keepalived.rs`), which both produce
//! a [`Config`].
//!
//! A leaf: it knows nothing of the runtime that carries the configuration
//! out. The agent depends on it, the fuzzers parse with it without building
//! the XDP program, and a value here is only data (defaults, units, the
//! choices an operator makes), never a socket or a task.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

mod floating_ip;

pub use floating_ip::{
    DEFAULT_API_URL, DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_METADATA_TIMEOUT, DEFAULT_METADATA_URL,
    FloatingIpConfig, InvalidFloatingIpConfig, InvalidReservedIpv6, PathFamily, ReservedIpv6,
    TokenSource, UnknownPathFamily,
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
    /// keepalived `vrrp_sync_group`: instances that change state together.
    pub sync_groups: Vec<SyncGroup>,
    /// keepalived `track_file`: files whose number weighs on the instances
    /// that track them (by name, [`Instance::track_files`]).
    pub track_files: Vec<TrackFile>,
}

/// keepalived 2.2.7's `track_file NAME { file PATH; weight N [reverse];
/// init_file [VALUE] [overwrite] }`. The file holds a number (read as
/// `strtol(.., 0)` reads it: decimal, `0x` hex, `0` octal; no digits is 0),
/// re-read whenever it is closed after a write or moved in; a missing,
/// unreadable or empty file, or one deleted or moved away, is 0. With
/// weight 0 a non-zero value means FAULT (`reverse`: zero means FAULT);
/// otherwise value x weight (negated by `reverse`) is added to the
/// priority, and a result of -254 or less means FAULT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackFile {
    pub name: String,
    pub path: PathBuf,
    /// The default weight of the instances tracking it, -254..=254
    /// (keepalived's default 1).
    pub weight: i32,
    pub reverse: bool,
    /// `init_file`: write this value at start when the file is missing
    /// (or always, with `overwrite`, except on a reload).
    pub init: Option<TrackFileInit>,
}

/// keepalived's `init_file [VALUE] [overwrite]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackFileInit {
    pub value: i64,
    pub overwrite: bool,
}

/// An instance's `track_file` entry: `NAME [weight N [reverse|noreverse]]`;
/// an unset weight or direction is the [`TrackFile`]'s own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackFileRef {
    pub name: String,
    pub weight: Option<i32>,
    pub reverse: Option<bool>,
}

impl TrackFileRef {
    /// The weight and direction that apply, given the file's defaults.
    pub fn resolve(&self, file: &TrackFile) -> (i32, bool) {
        (
            self.weight.unwrap_or(file.weight),
            self.reverse.unwrap_or(file.reverse),
        )
    }
}

/// Instances (possibly on several interfaces) that move together, as
/// keepalived's `vrrp_sync_group`: one member's FAULT puts every member in
/// FAULT until no member has a fault; the members go MASTER together (only
/// once every member would, so a single partitioned VRID does not split the
/// group) and BACKUP together (one member losing an election takes the
/// others out of MASTER). Tracking given on the group applies to every
/// member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncGroup {
    pub name: String,
    /// Instance names; an instance is in at most one group.
    pub members: Vec<String>,
    /// The group's scripts: `notify_master`/`_backup`/`_fault`/`_stop` run as
    /// written, `notify` with `GROUP <name> <STATE> 0` (keepalived's
    /// arguments; the priority of a group is always 0).
    pub notify: Notify,
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
    /// keepalived's `notify_fifo` and `vrrp_notify_fifo`: FIFOs every
    /// state change is written to as one line (`INSTANCE "NAME" STATE
    /// PRIORITY`, `GROUP "NAME" STATE 0`), in this order.
    pub notify_fifos: Vec<NotifyFifo>,
}

/// One notify FIFO (keepalived `notify_fifo PATH [user [group]]` with its
/// `notify_fifo_script`). Created (mode 0644, owned by `owner`/`group`)
/// when missing, and removed at stop if lbha created it; opened
/// read-write and non-blocking, as keepalived opens it, so that lines are
/// dropped, never waited on, when no reader keeps up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyFifo {
    pub path: PathBuf,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// Started once the FIFO is open, with its path as the last argument
    /// (it reads the lines); stopped with the daemon.
    pub script: Option<String>,
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
            notify_fifos: Vec::new(),
        }
    }
}

/// A tracked health check (keepalived `vrrp_script`).
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub name: String,
    /// The command line, split into words as keepalived splits a `script`
    /// ([`split_command`]: whitespace separates, single and double quotes
    /// group, backslash escapes). Empty when `probe` is set.
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
    /// keepalived's `init_fail`: the check starts down (and needs `rise`
    /// successes) instead of up.
    pub init_fail: bool,
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
    /// HAProxy itself, over its stats socket or master CLI.
    Haproxy(HaproxyCheck),
}

/// The `haproxy` check: asks HAProxy whether it serves (`show info`
/// answered within the check's timeout), which frontends are open and which
/// backends have a server UP (`show stat`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaproxyCheck {
    pub socket: HaproxySocket,
    /// HAProxy's `-p` pidfile (the master's PID). Optional: the master is
    /// also found as the parent of the worker that answers.
    pub pidfile: Option<PathBuf>,
    /// Frontends that must be OPEN; one that is not (disabled, or absent)
    /// counts as HAProxy not serving.
    pub require_frontends: Vec<String>,
    /// Backends whose servers matter: with names, any of them without a
    /// server UP is "backends down"; empty, every backend without one is.
    pub backends: Vec<String>,
    pub backends_down: BackendsDown,
    /// How long a refused or closed socket counts as a reload (while the
    /// master lives and a worker runs) before it counts as a failure.
    pub reload_grace: Duration,
}

impl HaproxyCheck {
    /// `show info` must answer within this unless the check says otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
    pub const DEFAULT_RELOAD_GRACE: Duration = Duration::from_secs(5);
    /// Enough to lose an election against a peer of equal priority
    /// (keepalived's usual 100/101 pairs) when only this node's backends
    /// are down, and the same for both when they are down everywhere.
    pub const DEFAULT_BACKENDS_WEIGHT: i32 = -50;
}

/// Where the `haproxy` check sends its commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HaproxySocket {
    /// A worker's `stats socket` (commands as they are).
    Stats(PathBuf),
    /// The master CLI (`-S`): commands go to the current worker (`@1`).
    Master(PathBuf),
    /// Found when needed (at the first run, and again when a connection
    /// fails: a reload may move it): the `-S` master socket or a unix
    /// `stats socket` of the `global` section, from the running master's
    /// command line and configuration files, or from `config` (a file or
    /// a directory of `*.cfg`) when given.
    Discover { config: Option<PathBuf> },
}

/// What "backends down" does to the instances tracking the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendsDown {
    /// Lowers the priority by this (negative) amount: if the backends are
    /// down for the peer too, failing over would help nobody.
    Weight(i32),
    /// Puts the instances into Fault, as HAProxy not serving does.
    Fault,
}

/// The initial state keepalived's `state` hints at. lbha, like keepalived,
/// starts every non-owner in Backup and lets the election decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialState {
    Backup,
    Master,
}

/// VRRPv2 authentication (keepalived's `auth_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthType {
    /// The password in every advert's auth data, compared as it is.
    #[default]
    Pass,
    /// An IP Authentication Header (IPv4 protocol 51) before the VRRP
    /// packet: HMAC-MD5-96 keyed with the password, and a sequence number,
    /// as keepalived's. IPv4 only.
    Ah,
}

impl AuthType {
    /// The name in lbha.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Pass => "pass",
            AuthType::Ah => "ah",
        }
    }
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
    /// Source address for adverts (keepalived `unicast_src_ip`); when
    /// absent, the interface's first IPv4 address (IPv4 instance) or its
    /// link-local address (IPv6 instance).
    pub unicast_src: Option<IpAddr>,
    /// Unicast peers; multicast to 224.0.0.18 (IPv4) or ff02::12 (IPv6)
    /// when empty.
    pub unicast_peers: Vec<IpAddr>,
    /// Accept adverts only from `unicast_peers` (keepalived's
    /// `check_unicast_src`, off by default there, on by default in lbha).
    /// No effect without peers. At most [`MAX_FILTERED_PEERS`] peers can be
    /// filtered on.
    pub check_unicast_src: bool,
    /// keepalived's `down_timer_adverts`: the master counts as down after
    /// this many advert intervals without one (plus Skew_Time), 1..=100,
    /// [`DEFAULT_DOWN_TIMER_ADVERTS`] (RFC 3768/5798) by default.
    pub down_timer_adverts: u8,
    /// v2 password (keepalived keeps the first 8 bytes): sent in clear
    /// text, or the HMAC-MD5 key of an AH header, as `auth_type` says.
    pub auth_pass: Option<String>,
    /// What `auth_pass` is for (keepalived's `auth_type`); without
    /// `auth_pass`, no authentication whatever this says.
    pub auth_type: AuthType,
    /// Addresses the master holds (keepalived `virtual_ipaddress`).
    pub virtual_addresses: Vec<VirtualAddress>,
    /// Routes the master holds (keepalived `virtual_routes`): added on
    /// becoming Master, removed on leaving it and at stop.
    pub virtual_routes: Vec<VirtualRoute>,
    /// Policy rules the master holds (keepalived `virtual_rules`), likewise.
    pub virtual_rules: Vec<VirtualRule>,
    /// Names of [`Check`]s this instance tracks.
    pub track: Vec<String>,
    /// Other interfaces whose link state weighs on this one (keepalived
    /// `track_interface`; the instance's own interface is always tracked).
    pub track_interfaces: Vec<TrackInterface>,
    /// [`TrackFile`]s (by name) weighing on this instance (keepalived
    /// `track_file`).
    pub track_files: Vec<TrackFileRef>,
    /// keepalived's `notify_priority_changes`: a change of the effective
    /// priority writes `INSTANCE "NAME" MASTER_PRIORITY|BACKUP_PRIORITY
    /// PRIORITY` to the notify FIFOs.
    pub notify_priority_changes: bool,
    /// keepalived's `dont_track_primary`: the instance's own interface
    /// going down does not put it in FAULT.
    pub dont_track_primary: bool,
    /// keepalived's `lower_prio_no_advert`: a Master that hears a
    /// lower-priority advert does not answer it at once with one of its own
    /// (false, keepalived's default outside strict mode: the answer ends a
    /// second master's term within one packet instead of one interval).
    pub lower_prio_no_advert: bool,
    /// keepalived's `higher_prio_send_advert`: a Master that hears a
    /// higher-priority advert sends one of its own before going Backup.
    pub higher_prio_send_advert: bool,
    /// keepalived's `unicast_ttl`: the TTL (IPv6: hop limit) of adverts to
    /// unicast peers; 255 when absent. Only with unicast peers.
    pub unicast_ttl: Option<u8>,
    /// keepalived's accept mode: false (`no_accept`, and strict mode's
    /// default) drops packets to and from the virtual addresses while this
    /// node is Master, unless it is the address owner (priority 255), as
    /// keepalived's nftables rules do. True by default.
    pub accept: bool,
    pub notify: Notify,
    pub receive_path: ReceivePathChoice,
    /// When a Master announces its addresses (gratuitous ARP / unsolicited
    /// Neighbor Advertisements), keepalived's `garp_*` settings.
    pub garp: Garp,
    /// keepalived's `use_vmac [NAME]` (and `vmac_xmit_base`): a private
    /// macvlan on `interface` with the VRRP virtual MAC holds the virtual
    /// addresses and sends the adverts.
    pub vmac: Option<Vmac>,
}

/// keepalived's VRRP virtual MAC interface (`use_vmac`): a macvlan in
/// private mode on the instance's interface, MAC 00:00:5e:00:01:VRID
/// (IPv6 instances 00:00:5e:00:02:VRID, RFC 5798 7.3), created at start
/// and deleted at stop. Virtual addresses without a `dev` go on it, so
/// neighbours learn the virtual MAC and it moves with mastership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vmac {
    /// The macvlan's name: keepalived's `vrrp.VRID` by default.
    pub name: String,
    /// keepalived's `vmac_xmit_base`: adverts leave from the base
    /// interface (its MAC and address) instead of the macvlan.
    pub xmit_base: bool,
}

impl Vmac {
    /// keepalived's default name for VRID `vrid`'s macvlan.
    pub fn default_name(vrid: u8) -> String {
        format!("vrrp.{vrid}")
    }
}

/// When a Master announces its virtual addresses with gratuitous ARP
/// (IPv4) and unsolicited Neighbor Advertisements (IPv6): keepalived
/// 2.2.7's `garp_*` settings, with its defaults. A "set" is one packet per
/// address; switches and neighbours that missed the first set (a port
/// still learning, a lost frame) catch a later one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Garp {
    /// Sets sent at once on becoming Master (`garp_master_repeat`, 5).
    pub master_repeat: u32,
    /// The same number of sets again this long after becoming Master
    /// (`garp_master_delay`, 5 s; zero: no second burst).
    pub master_delay: Duration,
    /// While Master, sets every this often (`garp_master_refresh`; zero,
    /// the default: never).
    pub master_refresh: Duration,
    /// Sets per refresh (`garp_master_refresh_repeat`, 1).
    pub master_refresh_repeat: u32,
    /// Sets sent when a lower-priority advert arrives while Master: the
    /// other router may have taken the addresses (`garp_lower_prio_repeat`;
    /// keepalived's default is the global `vrrp_garp_master_repeat`, 5;
    /// zero: none).
    pub lower_prio_repeat: u32,
    /// Those sets again this long after (`garp_lower_prio_delay`; default
    /// the global `vrrp_garp_master_delay`, 5 s; zero: no second burst).
    pub lower_prio_delay: Duration,
}

impl Garp {
    /// The most sets of one burst lbha sends: keepalived reads up to
    /// `UINT_MAX`, but thousands of frames per address in one go is a
    /// flood, not an announcement.
    pub const MAX_REPEAT: u32 = 100;
}

impl Default for Garp {
    fn default() -> Self {
        Self {
            master_repeat: 5,
            master_delay: Duration::from_secs(5),
            master_refresh: Duration::ZERO,
            master_refresh_repeat: 1,
            lower_prio_repeat: 5,
            lower_prio_delay: Duration::from_secs(5),
        }
    }
}

/// The address family of an instance: VRRPv3 over IPv6 (RFC 5798) is a
/// separate protocol instance from VRRP over IPv4, with its own VRIDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// `IPv4` / `IPv6`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The longest prefix of an address of this family.
    pub fn max_prefix(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl Instance {
    /// The instance's family, as keepalived decides it: that of the source
    /// address, else of the first peer, else of the first (not excluded)
    /// virtual address; IPv4 when there is none. Validation refuses an
    /// instance whose addresses disagree, so for a valid configuration any
    /// of them tells.
    /// Where virtual addresses without a `dev` go: the macvlan with
    /// `use_vmac`, else the instance's interface.
    pub fn vip_interface(&self) -> &str {
        self.vmac.as_ref().map_or(&self.interface, |v| &v.name)
    }

    /// The interface adverts leave from: the macvlan with `use_vmac`
    /// (unless `vmac_xmit_base`), else the instance's interface. Adverts
    /// are received on the instance's interface in every case.
    pub fn send_interface(&self) -> &str {
        match &self.vmac {
            Some(v) if !v.xmit_base => &v.name,
            _ => &self.interface,
        }
    }

    /// The VRRP virtual MAC (RFC 5798 7.3): 00:00:5e:00:01:VRID for IPv4,
    /// 00:00:5e:00:02:VRID for IPv6.
    pub fn virtual_mac(&self) -> [u8; 6] {
        let family = match self.family() {
            Family::V4 => 1,
            Family::V6 => 2,
        };
        [0x00, 0x00, 0x5e, 0x00, family, self.vrid]
    }

    pub fn family(&self) -> Family {
        self.unicast_src
            .or_else(|| self.unicast_peers.first().copied())
            .or_else(|| {
                self.virtual_addresses
                    .iter()
                    .find(|v| !v.excluded)
                    .map(|v| v.address)
            })
            .map_or(Family::V4, Family::of)
    }
}

/// keepalived's `track_interface` entry: `NAME [weight N [reverse]]`. With
/// weight 0 the interface down puts the instance into Fault; otherwise the
/// weight applies as a check's (added while up when positive, while down
/// when negative; `reverse` applies the opposite adjustment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackInterface {
    pub name: String,
    pub weight: i32,
    pub reverse: bool,
}

/// One address of keepalived's `virtual_ipaddress` block: what
/// `ip addr add ADDRESS/PREFIX [dev DEV] [label L] [scope S] [brd B] [peer P]`
/// would add on the Master.
///
/// The runtime adds `address/prefix` to `dev` (the instance's interface
/// without one) and sends its gratuitous ARP (IPv4) or unsolicited
/// Neighbor Advertisement (IPv6) there; `label` and `broadcast`
/// are kept as keepalived's meaning. The front-ends refuse what it would get
/// wrong: a non-global `scope` and a `peer` (the address would answer
/// differently).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualAddress {
    /// IPv4 or IPv6; the not excluded addresses of an instance are all of
    /// its family, excluded ones may be of the other (as in keepalived).
    pub address: IpAddr,
    /// 0..=32 (IPv6: 0..=128), default the full length (with `peer`: the
    /// peer's, as keepalived takes it).
    pub prefix: u8,
    /// keepalived `dev`: the interface the address goes on; `None` is the
    /// instance's interface.
    pub dev: Option<String>,
    /// keepalived `label` (an `eth1:1`-style alias name, at most 15 bytes).
    pub label: Option<String>,
    /// keepalived `scope`, as the kernel's number (`global` 0, `site` 200,
    /// `link` 253, `host` 254, `nowhere` 255); `None` is global.
    pub scope: Option<u8>,
    /// keepalived `brd`/`broadcast`, with `+`/`-` already worked out
    /// (IPv4 only).
    pub broadcast: Option<Ipv4Addr>,
    /// keepalived `peer`: the other end of a point-to-point address.
    pub peer: Option<Ipv4Addr>,
    /// From keepalived's `virtual_ipaddress_excluded`: held by the master
    /// like the others, but not listed in its adverts.
    pub excluded: bool,
}

impl VirtualAddress {
    /// `address/prefix` on the instance's interface, nothing else set.
    pub fn new(address: impl Into<IpAddr>, prefix: u8) -> Self {
        Self {
            address: address.into(),
            prefix,
            dev: None,
            label: None,
            scope: None,
            broadcast: None,
            peer: None,
            excluded: false,
        }
    }

    /// Whether anything beyond `address/prefix` is set.
    pub fn has_options(&self) -> bool {
        self.dev.is_some()
            || self.label.is_some()
            || self.scope.is_some()
            || self.broadcast.is_some()
            || self.peer.is_some()
            || self.excluded
    }
}

/// The names `ip` and keepalived give address scopes (`/etc/iproute2/rt_scopes`).
pub const SCOPE_NAMES: [(&str, u8); 5] = [
    ("global", 0),
    ("site", 200),
    ("link", 253),
    ("host", 254),
    ("nowhere", 255),
];

/// A scope by name or number, as `ip` and keepalived read it.
pub fn parse_scope(text: &str) -> Option<u8> {
    SCOPE_NAMES
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, n)| *n)
        .or_else(|| text.parse().ok())
}

/// The name of a scope number, or the number itself.
pub fn scope_name(scope: u8) -> String {
    SCOPE_NAMES
        .iter()
        .find(|(_, n)| *n == scope)
        .map_or_else(|| scope.to_string(), |(name, _)| (*name).to_string())
}

/// Scripts run on state changes, as keepalived runs them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    pub master: Option<String>,
    pub backup: Option<String>,
    pub fault: Option<String>,
    /// keepalived `notify_stop`: run when the instance stops (the agent
    /// shuts down, or a reload removes or restarts the instance).
    pub stop: Option<String>,
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

/// All the errors found in a file (never just the first), and the warnings
/// found with them, so that an operator fixing the errors sees the
/// warnings in the same run.
#[derive(Debug, thiserror::Error)]
#[error("{} error(s) in configuration:\n{}", .errors.len(), display_all(.errors))]
pub struct ConfigErrors {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl ConfigErrors {
    /// Errors without warnings (a file that could not be read at all).
    pub fn only(errors: Vec<Diagnostic>) -> Self {
        Self {
            errors,
            warnings: Vec::new(),
        }
    }
}

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
    ///
    /// `line` is a position as [`Lines`] records it, which [`SourceMap`]
    /// turns into the file (an included one, say) and its line.
    pub fn diagnostic(&self, line: Option<usize>, message: impl Into<String>) -> Diagnostic {
        self.lines
            .sources
            .diagnostic(&self.file, line, message.into())
    }
}

mod keepalived;
mod route;
mod split;
mod toml;
mod validate;

pub use self::{
    route::{
        Prefix, RTPROT_KEEPALIVED, RouteError, RouteKind, RuleAction, RulePriorities, TABLE_MAIN,
        VirtualRoute, VirtualRule, parse_route, parse_rule,
    },
    split::{SplitError, split_command},
    toml::to_toml,
    validate::{FieldLines, Findings, Lines, SourceMap, Syntax, validate},
};

/// How to read a keepalived.conf, besides the file itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeepalivedOptions {
    /// keepalived's `--config-id` (`-i`): lines starting `@ID` apply only
    /// when ID is this, lines starting `@^ID` only when it is not.
    /// keepalived's default is the host name up to its first dot
    /// ([`default_config_id`]); `None` matches no `@ID` at all.
    pub config_id: Option<String>,
}

/// keepalived's default `--config-id`: this host's name up to the first dot.
pub fn default_config_id() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    let short = name.split('.').next().unwrap_or(name);
    (!short.is_empty()).then(|| short.to_string())
}

/// Reads and parses lbha's native TOML configuration.
pub fn load_toml(path: &std::path::Path) -> Result<Loaded, ConfigErrors> {
    load_with(path, Syntax::Toml, &KeepalivedOptions::default(), |_| {})
}

/// Parses lbha's native TOML configuration; `path` only labels diagnostics.
pub fn parse_toml(text: &str, path: &std::path::Path) -> Result<Loaded, ConfigErrors> {
    self::toml::parse(text, path, &mut |_| {})
}

/// Reads and parses a keepalived.conf (and the files it includes), with
/// keepalived's default `--config-id`.
pub fn load_keepalived(path: &std::path::Path) -> Result<Loaded, ConfigErrors> {
    let options = KeepalivedOptions {
        config_id: default_config_id(),
    };
    load_with(path, Syntax::Keepalived, &options, |_| {})
}

/// Parses a keepalived.conf from `text`; `path` only labels diagnostics.
/// Nothing else is read: an `include` finds no file, `@ID` lines match no
/// ID. For the fuzzers and tests; [`load_keepalived`] reads a real file.
pub fn parse_keepalived(text: &str, path: &std::path::Path) -> Result<Loaded, ConfigErrors> {
    self::keepalived::parse(
        text,
        path,
        &KeepalivedOptions::default(),
        &self::keepalived::NoFiles,
        &mut |_| {},
    )
}

/// Loads `path` as TOML when it ends in `.toml`, as keepalived.conf otherwise.
pub fn load_any(path: &std::path::Path) -> Result<Loaded, ConfigErrors> {
    let options = KeepalivedOptions {
        config_id: default_config_id(),
    };
    load_with(path, Syntax::of_path(path), &options, |_| {})
}

/// Reads and parses `path`, written in `syntax` (a keepalived.conf with
/// `options` and the files it includes), and lets `adjust` change the
/// configuration before it is validated: for command-line settings that
/// decide what validation accepts (`--no-check-unicast-src` makes a
/// keepalived.conf with more unicast peers than lbha can filter on valid).
pub fn load_with(
    path: &std::path::Path,
    syntax: Syntax,
    options: &KeepalivedOptions,
    mut adjust: impl FnMut(&mut Config),
) -> Result<Loaded, ConfigErrors> {
    let text = read(path)?;
    match syntax {
        Syntax::Toml => self::toml::parse(&text, path, &mut adjust),
        Syntax::Keepalived => self::keepalived::parse(
            &text,
            path,
            options,
            &self::keepalived::DiskFiles,
            &mut adjust,
        ),
    }
}

fn read(path: &std::path::Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|error| {
        ConfigErrors::only(vec![Diagnostic {
            file: path.to_path_buf(),
            line: None,
            message: format!("cannot read: {error}"),
        }])
    })
}
