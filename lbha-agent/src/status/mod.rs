//! What the agent knows about itself, for `lbha-agent status` (a root-only
//! Unix socket) and Prometheus metrics. Components write into one
//! [`Telemetry`]; readers take a consistent [`AgentStatus`] snapshot without
//! waking the VRRP tasks.

pub mod metrics;
pub mod socket;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{
    clock::monotonic_ns,
    cloud::{ApiCallCounts, CloudReport, FloatingIpStatus, api::ApiOutcome},
};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub version: u8,
    pub state: String,
    pub priority: u8,
    pub configured_priority: u8,
    /// Address of the current master (ours when Master), if known.
    pub master: Option<String>,
    /// Age of the last advert from the master, in milliseconds.
    pub last_advert_age_ms: Option<u64>,
    #[serde(skip)]
    pub last_advert_ns: Option<u64>,
    pub transitions: u64,
    pub last_transition_unix_ms: Option<u64>,
    pub last_transition_reason: Option<String>,
    /// Backup held by the heartbeat: adverts stopped, the master is alive
    /// on the other path (a partitioned VRRP path).
    #[serde(default)]
    pub vrrp_path_partitioned: bool,
    /// A planned handover holds the priority low (until `lbha-agent
    /// handover --release`, a restart, or Master again).
    #[serde(default)]
    pub handover_held: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckStatus {
    pub name: String,
    pub up: bool,
    pub runs: u64,
    pub failures: u64,
    pub last_duration_us: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    /// "xdp", "xdp-skb" or "raw-socket".
    pub receive_path: String,
    /// The XDP program is pinned under bpffs: it stays attached across
    /// restarts of the agent.
    #[serde(default)]
    pub pinned: bool,
    /// The receive program the kernel runs: "full" (XDP with the silence
    /// timer), "no-timer" (XDP; backups keep their deadlines in user
    /// space) or "raw-socket".
    #[serde(default)]
    pub program: String,
    /// Why that program (the kernel probe's findings, or what failed).
    #[serde(default)]
    pub program_reason: String,
    pub link_up: bool,
    /// The receive path's packet counters (see `lbha_common::Counter`).
    pub counters: BTreeMap<String, u64>,
    /// Times the interface's task woke up.
    pub wakeups: u64,
}

/// One address lbha moves (the floating IPv4, or the reserved IPv6), for
/// status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FloatingIpReport {
    pub ip: String,
    pub instance: String,
    /// Whether this droplet holds the IP, if known.
    pub held_by_us: Option<bool>,
    pub assigns: u64,
    pub last_assign_ms: Option<u64>,
    pub last_assign_ok: Option<bool>,
    pub last_error: Option<String>,
    /// API exchanges by outcome (of the one API client both addresses
    /// share).
    pub api_calls: BTreeMap<String, u64>,
    /// Split brain: we are Master but leave the IP with this peer.
    #[serde(default)]
    pub yielding_to: Option<YieldReport>,
    /// What the DigitalOcean checks at start found wrong (`check: what`);
    /// None until they ran.
    #[serde(default)]
    pub setup_problems: Option<Vec<String>>,
}

/// The peer a split-brain Master yields the floating IP to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct YieldReport {
    /// The droplet holding the IP.
    pub droplet_id: u64,
    /// Its agent's (VRRP primary) address and priority.
    pub peer: String,
    pub peer_priority: u8,
}

/// How the last configuration reload went.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Reloads asked for (SIGHUP) since start.
    pub reloads: u64,
    /// Reloads refused: the running configuration was kept.
    pub failures: u64,
    /// Whether the last reload applied (meaningless while `reloads` is 0).
    pub last_ok: bool,
    /// When the last reload finished (Unix ms).
    pub last_at_unix_ms: Option<u64>,
    /// Why the last reload was refused, if it was.
    pub last_error: Option<String>,
}

/// One heartbeat peer, for status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerReport {
    pub address: String,
    pub droplet_id: Option<u64>,
    /// Since its last heartbeat (none heard yet: absent).
    pub age_ms: Option<u64>,
    pub alive: bool,
    /// IPv4 VRIDs it says it is Master of.
    pub master_of: Vec<u8>,
    /// IPv6 VRIDs it says it is Master of (another router than the IPv4
    /// instance of the same VRID).
    #[serde(default)]
    pub master_of_ipv6: Vec<u8>,
}

/// The heartbeat, for status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatReport {
    pub peers: Vec<PeerReport>,
    /// Heartbeats received by outcome, and send errors.
    pub packets: BTreeMap<String, u64>,
}

/// Everything `status` shows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub instances: Vec<InstanceStatus>,
    pub checks: Vec<CheckStatus>,
    pub interfaces: Vec<InterfaceStatus>,
    /// The floating IPv4.
    pub floating_ip: Option<FloatingIpReport>,
    /// The reserved IPv6, beside the floating IPv4 or alone.
    #[serde(default)]
    pub reserved_ipv6: Option<FloatingIpReport>,
    #[serde(default)]
    pub reload: ReloadReport,
    #[serde(default)]
    pub heartbeat: Option<HeartbeatReport>,
}

/// Upper bounds (seconds) of the failover-duration histogram buckets.
pub const FAILOVER_BUCKETS: [f64; 10] = [0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Upper bounds (seconds) of the advert-lateness histogram buckets: how long
/// after its deadline a Master's advert went out. Fine below a millisecond,
/// where a healthy agent sits.
pub const ADVERT_LATENESS_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01,
    0.025, 0.1, 0.5, 1.0,
];
/// Upper bounds (seconds) of the check-latency histogram buckets.
pub const CHECK_BUCKETS: [f64; 8] = [0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 2.0];

/// A cumulative histogram as Prometheus exposes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.counts.len() != bounds.len() {
            self.counts = vec![0; bounds.len()];
        }
        for (i, bound) in bounds.iter().enumerate() {
            if value <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }
}

/// Reads the kernel's last accepted advert of a VRID on one interface:
/// (source, `CLOCK_MONOTONIC` ns).
pub type LastAdvertSource =
    Arc<dyn Fn(lbha_common::event::VridKey) -> Option<(std::net::IpAddr, u64)> + Send + Sync>;

#[derive(Default)]
struct Inner {
    status: AgentStatus,
    /// Per interface (XDP path): a backup following a healthy master only
    /// processes the queued adverts about once a second, so the advert age
    /// comes from the kernel's last-advert map when status is asked.
    last_advert_sources: BTreeMap<String, LastAdvertSource>,
    /// Per instance: time from losing the master to becoming Master.
    failover: BTreeMap<String, Histogram>,
    /// Per instance: how late its adverts went out as Master, and the worst.
    advert_lateness: BTreeMap<String, (Histogram, f64)>,
    check_latency: BTreeMap<String, Histogram>,
    floating_ip: Option<FloatingIpSources>,
    reserved_ipv6: Option<FloatingIpSources>,
    heartbeat: Option<HeartbeatSource>,
}

/// Where an address's report comes from.
struct FloatingIpSources {
    status: watch::Receiver<FloatingIpStatus>,
    cloud_check: watch::Receiver<Option<CloudReport>>,
    calls: Arc<ApiCallCounts>,
}

/// Where status reads the heartbeat: the peer table, the counters, and the
/// configured peers (shown even before they are heard).
type HeartbeatSource = (
    watch::Receiver<crate::heartbeat::PeerTable>,
    Arc<crate::heartbeat::Counters>,
    Vec<std::net::SocketAddr>,
);

/// The VRIDs of `family` a peer says it is Master of.
fn masters_of(peer: &crate::heartbeat::Peer, family: lbha_common::event::Family) -> Vec<u8> {
    peer.records
        .iter()
        .filter(|r| {
            r.key().family == family && r.state == crate::heartbeat::wire::PeerState::Master
        })
        .map(|r| r.vrid)
        .collect()
}

/// An address's report from its manager's status, now.
fn fill_address_report(report: &mut FloatingIpReport, sources: &FloatingIpSources) {
    let fip = sources.status.borrow().clone();
    let calls = &sources.calls;
    // Only a Master keeps checking; a Backup's last answer is stale.
    report.held_by_us = fip.holder_known.filter(|_| fip.master);
    report.assigns = fip.assigns;
    report.last_assign_ms = fip
        .last_assign
        .as_ref()
        .map(|a| a.duration.as_millis() as u64);
    report.last_assign_ok = fip.last_assign.as_ref().map(|a| a.result.is_ok());
    report.last_error = fip.last_error.clone();
    report.api_calls = ApiOutcome::ALL
        .iter()
        .map(|o| (o.name().to_owned(), calls.get(*o)))
        .collect();
    report.yielding_to = fip.yielding_to.filter(|_| fip.master).map(|y| YieldReport {
        droplet_id: y.droplet_id,
        peer: y.peer.address.to_string(),
        peer_priority: y.peer.priority,
    });
    report.setup_problems = sources
        .cloud_check
        .borrow()
        .as_ref()
        .map(|r| r.problems().map(std::string::ToString::to_string).collect());
}

/// Shared by every component of the daemon.
#[derive(Clone, Default)]
pub struct Telemetry(Arc<Mutex<Inner>>);

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Telemetry {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        // A panic elsewhere must not take status down with it.
        let mut inner = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut inner)
    }

    pub fn add_instance(&self, instance: InstanceStatus) {
        self.with(|i| i.status.instances.push(instance));
    }

    /// Forgets instances, checks and interfaces (a full reload re-adds them).
    /// Histograms, the floating IP report and the reload report stay.
    pub fn clear(&self) {
        self.with(|i| {
            i.status.instances.clear();
            i.status.checks.clear();
            i.status.interfaces.clear();
            i.last_advert_sources.clear();
        });
    }

    /// The running heartbeat (or none).
    pub fn set_heartbeat(&self, source: Option<HeartbeatSource>) {
        self.with(|i| i.heartbeat = source);
    }

    /// Records a reload's outcome: `Err` carries why the running
    /// configuration was kept.
    pub fn reload_result(&self, result: Result<(), String>) {
        self.with(|i| {
            let report = &mut i.status.reload;
            report.reloads += 1;
            report.last_at_unix_ms = Some(unix_ms_now());
            report.last_ok = result.is_ok();
            if result.is_err() {
                report.failures += 1;
            }
            report.last_error = result.err();
        });
    }

    /// Forgets one interface and its instances (its group restarts).
    pub fn forget_interface(&self, interface: &str) {
        self.with(|i| {
            i.status.instances.retain(|s| s.interface != interface);
            i.status.interfaces.retain(|s| s.name != interface);
            i.last_advert_sources.remove(interface);
        });
    }

    /// Where [`Self::snapshot`] reads the last advert of `interface`'s VRIDs.
    pub fn set_last_advert_source(&self, interface: &str, source: LastAdvertSource) {
        self.with(|i| {
            i.last_advert_sources.insert(interface.to_owned(), source);
        });
    }

    pub fn add_check(&self, name: &str) {
        self.with(|i| {
            i.status.checks.push(CheckStatus {
                name: name.to_owned(),
                up: true,
                ..CheckStatus::default()
            });
        });
    }

    pub fn add_interface(
        &self,
        name: &str,
        receive_path: &str,
        pinned: bool,
        (program, program_reason): (&str, &str),
    ) {
        self.with(|i| {
            i.status.interfaces.push(InterfaceStatus {
                name: name.to_owned(),
                receive_path: receive_path.to_owned(),
                pinned,
                program: program.to_owned(),
                program_reason: program_reason.to_owned(),
                link_up: true,
                ..InterfaceStatus::default()
            });
        });
    }

    /// The floating IPv4's manager, for status and metrics.
    pub fn set_floating_ip(
        &self,
        ip: String,
        instance: String,
        status: watch::Receiver<FloatingIpStatus>,
        cloud_check: watch::Receiver<Option<CloudReport>>,
        calls: Arc<ApiCallCounts>,
    ) {
        self.with(|i| {
            i.status.floating_ip = Some(FloatingIpReport {
                ip,
                instance,
                ..FloatingIpReport::default()
            });
            i.floating_ip = Some(FloatingIpSources {
                status,
                cloud_check,
                calls,
            });
        });
    }

    /// The reserved IPv6's manager, as [`Self::set_floating_ip`].
    pub fn set_reserved_ipv6(
        &self,
        ip: String,
        instance: String,
        status: watch::Receiver<FloatingIpStatus>,
        cloud_check: watch::Receiver<Option<CloudReport>>,
        calls: Arc<ApiCallCounts>,
    ) {
        self.with(|i| {
            i.status.reserved_ipv6 = Some(FloatingIpReport {
                ip,
                instance,
                ..FloatingIpReport::default()
            });
            i.reserved_ipv6 = Some(FloatingIpSources {
                status,
                cloud_check,
                calls,
            });
        });
    }

    /// Forgets both addresses' reports (a configuration that moves one or
    /// both sets them again).
    pub fn forget_addresses(&self) {
        self.with(|i| {
            i.status.floating_ip = None;
            i.status.reserved_ipv6 = None;
            i.floating_ip = None;
            i.reserved_ipv6 = None;
        });
    }

    /// Updates one instance's live fields.
    pub fn update_instance(&self, name: &str, f: impl FnOnce(&mut InstanceStatus)) {
        let mut unknown_slot = usize::MAX;
        self.update_instance_at(&mut unknown_slot, name, f);
    }

    /// As [`Self::update_instance`], looking first at `slot`, where the
    /// instance was found last time (kept there; the list only changes at
    /// start-up and reloads): with a thousand instances a wakeup that
    /// touches them all costs a thousand updates, not half a million name
    /// comparisons.
    pub fn update_instance_at(
        &self,
        slot: &mut usize,
        name: &str,
        f: impl FnOnce(&mut InstanceStatus),
    ) {
        self.with(|i| {
            let instances = &mut i.status.instances;
            if instances.get(*slot).is_none_or(|s| s.name != name) {
                match instances.iter().position(|s| s.name == name) {
                    Some(found) => *slot = found,
                    None => return,
                }
            }
            f(&mut instances[*slot]);
        });
    }

    /// Records a state change; `without_master` is how long the group had
    /// no master when this node became Master (a failover).
    pub fn transition(&self, name: &str, to: &str, reason: &str, without_master: Option<Duration>) {
        self.with(|i| {
            if let Some(instance) = i.status.instances.iter_mut().find(|s| s.name == name) {
                instance.state = to.to_owned();
                instance.transitions += 1;
                instance.last_transition_unix_ms = Some(unix_ms_now());
                instance.last_transition_reason = Some(reason.to_owned());
            }
            if let Some(d) = without_master {
                i.failover
                    .entry(name.to_owned())
                    .or_default()
                    .observe(&FAILOVER_BUCKETS, d.as_secs_f64());
            }
        });
    }

    pub fn check_result(&self, name: &str, up: bool, ok: bool, duration: Duration) {
        self.with(|i| {
            if let Some(check) = i.status.checks.iter_mut().find(|c| c.name == name) {
                check.up = up;
                check.runs += 1;
                check.failures += u64::from(!ok);
                check.last_duration_us = Some(duration.as_micros() as u64);
            }
            i.check_latency
                .entry(name.to_owned())
                .or_default()
                .observe(&CHECK_BUCKETS, duration.as_secs_f64());
        });
    }

    pub fn update_interface(&self, name: &str, f: impl FnOnce(&mut InterfaceStatus)) {
        self.with(|i| {
            if let Some(interface) = i.status.interfaces.iter_mut().find(|s| s.name == name) {
                f(interface);
            }
        });
    }

    /// A consistent copy, with ages computed now.
    pub fn snapshot(&self) -> AgentStatus {
        let now = monotonic_ns();
        self.with(|i| {
            let mut status = i.status.clone();
            for instance in &mut status.instances {
                // A backup's master may have advertised since the machine
                // last processed the queue: the kernel's map knows.
                let master: Option<std::net::IpAddr> =
                    instance.master.as_deref().and_then(|m| m.parse().ok());
                if instance.state == "BACKUP"
                    && let (Some(master), Some(source)) =
                        (master, i.last_advert_sources.get(&instance.interface))
                    // The master's address is of the instance's family.
                    && let Some((src, at)) = source(lbha_common::event::VridKey {
                        family: if master.is_ipv6() {
                            lbha_common::event::Family::Ipv6
                        } else {
                            lbha_common::event::Family::Ipv4
                        },
                        vrid: instance.vrid,
                    })
                    && src == master
                    && instance.last_advert_ns.is_none_or(|seen| at > seen)
                {
                    instance.last_advert_ns = Some(at);
                }
                instance.last_advert_age_ms = instance
                    .last_advert_ns
                    .map(|ts| now.saturating_sub(ts) / 1_000_000);
            }
            status.heartbeat = i.heartbeat.as_ref().map(|(table, counters, configured)| {
                let table = table.borrow();
                HeartbeatReport {
                    peers: configured
                        .iter()
                        .map(|address| {
                            let peer = table.peers.get(address);
                            PeerReport {
                                address: address.to_string(),
                                droplet_id: peer.map(|p| p.droplet_id).filter(|id| *id != 0),
                                age_ms: peer.map(|p| now.saturating_sub(p.received_ns) / 1_000_000),
                                alive: peer.is_some_and(|p| table.is_fresh(p, now)),
                                master_of: peer
                                    .map(|p| masters_of(p, lbha_common::event::Family::Ipv4))
                                    .unwrap_or_default(),
                                master_of_ipv6: peer
                                    .map(|p| masters_of(p, lbha_common::event::Family::Ipv6))
                                    .unwrap_or_default(),
                            }
                        })
                        .collect(),
                    packets: counters.all().into_iter().collect(),
                }
            });
            for (report, sources) in [
                (&mut status.floating_ip, &i.floating_ip),
                (&mut status.reserved_ipv6, &i.reserved_ipv6),
            ] {
                if let (Some(report), Some(sources)) = (report, sources) {
                    fill_address_report(report, sources);
                }
            }
            status
        })
    }

    /// An instance's advert lateness so far (histogram over
    /// [`ADVERT_LATENESS_BUCKETS`], and the worst, in seconds): the
    /// interface task keeps it and hands it over now and then, so that the
    /// per-advert path takes no lock.
    pub fn set_advert_lateness(&self, name: &str, histogram: &Histogram, max: f64) {
        self.with(|i| {
            i.advert_lateness
                .insert(name.to_owned(), (histogram.clone(), max));
        });
    }

    /// For metrics: per instance, the advert-lateness histogram and the worst.
    pub fn advert_lateness(&self) -> BTreeMap<String, (Histogram, f64)> {
        self.with(|i| i.advert_lateness.clone())
    }

    /// Histograms for metrics: (failover by instance, check latency by check).
    pub fn histograms(&self) -> (BTreeMap<String, Histogram>, BTreeMap<String, Histogram>) {
        self.with(|i| (i.failover.clone(), i.check_latency.clone()))
    }
}

/// The human table `lbha-agent status` prints.
pub fn render_table(status: &AgentStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<10} {:>4} {:<7} {:>8} {:<16} {:>10} {:>11}",
        "INSTANCE", "INTERFACE", "VRID", "STATE", "PRIORITY", "MASTER", "LAST ADV", "TRANSITIONS"
    );
    for i in &status.instances {
        let _ = writeln!(
            out,
            "{:<12} {:<10} {:>4} {:<7} {:>8} {:<16} {:>10} {:>11}",
            i.name,
            i.interface,
            i.vrid,
            i.state,
            if i.priority == i.configured_priority {
                i.priority.to_string()
            } else {
                format!("{}/{}", i.priority, i.configured_priority)
            },
            i.master.as_deref().unwrap_or("-"),
            i.last_advert_age_ms
                .map_or("-".into(), |ms| format!("{ms} ms")),
            i.transitions,
        );
    }
    for i in status.instances.iter().filter(|i| i.handover_held) {
        let _ = writeln!(
            out,
            "{}: priority held low after a handover (it will not preempt back); `lbha-agent handover --release` releases it",
            i.name
        );
    }
    if !status.checks.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<20} {:<5} {:>8} {:>9} {:>12}",
            "CHECK", "UP", "RUNS", "FAILURES", "LAST (us)"
        );
        for c in &status.checks {
            let _ = writeln!(
                out,
                "{:<20} {:<5} {:>8} {:>9} {:>12}",
                c.name,
                if c.up { "yes" } else { "NO" },
                c.runs,
                c.failures,
                c.last_duration_us.map_or("-".into(), |us| us.to_string())
            );
        }
    }
    for i in &status.interfaces {
        let _ = writeln!(
            out,
            "\ninterface {}: receive path {}{}, program {} ({}), link {}, {} wakeups, {} adverts accepted, {} dropped",
            i.name,
            i.receive_path,
            if i.pinned { " (pinned)" } else { "" },
            i.program,
            i.program_reason,
            if i.link_up { "up" } else { "DOWN" },
            i.wakeups,
            i.counters.get("adverts_accepted").copied().unwrap_or(0),
            i.counters
                .iter()
                .filter(|(k, _)| k.starts_with("drop_"))
                .map(|(_, v)| v)
                .sum::<u64>(),
        );
    }
    for i in status.instances.iter().filter(|i| i.vrrp_path_partitioned) {
        let _ = writeln!(
            out,
            "\n{}: VRRP path partitioned: no adverts from the master, which the heartbeat shows alive; staying BACKUP",
            i.name
        );
    }
    if let Some(h) = &status.heartbeat {
        for p in &h.peers {
            let _ = writeln!(
                out,
                "\nheartbeat peer {}{}: {}{}{}",
                p.address,
                p.droplet_id
                    .map_or(String::new(), |id| format!(" (droplet {id})")),
                if p.alive { "alive" } else { "SILENT" },
                p.age_ms.map_or(", never heard".into(), |ms| format!(
                    ", last heard {ms} ms ago"
                )),
                match (p.master_of.is_empty(), p.master_of_ipv6.is_empty()) {
                    (true, true) => String::new(),
                    (false, true) => format!(", Master of VRID {:?}", p.master_of),
                    (true, false) => format!(", Master of IPv6 VRID {:?}", p.master_of_ipv6),
                    (false, false) => format!(
                        ", Master of VRID {:?}, of IPv6 VRID {:?}",
                        p.master_of, p.master_of_ipv6
                    ),
                },
            );
        }
    }
    if let Some(error) = &status.reload.last_error {
        let _ = writeln!(
            out,
            "\nconfiguration: the last reload was refused, the previous configuration keeps running: {error}"
        );
    }
    let addresses = [
        ("floating IP", &status.floating_ip),
        ("reserved IPv6", &status.reserved_ipv6),
    ];
    for (what, f) in addresses {
        let Some(f) = f else { continue };
        let holder = match f.held_by_us {
            Some(true) => "held by this droplet",
            Some(false) => "held by another droplet",
            None => "holder not checked (only a MASTER checks)",
        };
        let _ = writeln!(
            out,
            "\n{what} {} (follows {}): {holder}; {} assign(s){}{}",
            f.ip,
            f.instance,
            f.assigns,
            match (f.last_assign_ms, f.last_assign_ok) {
                (Some(ms), Some(ok)) => format!(
                    ", last {} in {ms} ms",
                    if ok { "succeeded" } else { "FAILED" }
                ),
                (Some(ms), None) => format!(", last took {ms} ms"),
                _ => String::new(),
            },
            f.last_error
                .as_ref()
                .map_or(String::new(), |e| format!("; last error: {e}")),
        );
        if let Some(peer) = &f.yielding_to {
            let _ = writeln!(
                out,
                "split brain: yielding to {} (priority {}, droplet {}): both are MASTER; this node leaves the {what} there until VRRP hears the peer again",
                peer.peer, peer.peer_priority, peer.droplet_id
            );
        }
    }
    // One check at start covers both addresses: shown once.
    let checks = addresses
        .iter()
        .find_map(|(_, f)| f.as_ref())
        .and_then(|f| f.setup_problems.as_deref());
    match checks {
        Some([]) => {
            let _ = writeln!(out, "DigitalOcean checks at start: passed");
        }
        Some(problems) => {
            let _ = writeln!(
                out,
                "DigitalOcean checks at start found {} problem(s); failover may not work (`lbha-agent check-cloud` runs them again):",
                problems.len()
            );
            for problem in problems {
                let _ = writeln!(out, "  - {problem}");
            }
        }
        None => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_says_when_a_handover_holds_the_priority() {
        let instance = |name: &str, held| InstanceStatus {
            name: name.into(),
            state: "BACKUP".into(),
            priority: 1,
            configured_priority: 200,
            handover_held: held,
            ..InstanceStatus::default()
        };
        let status = AgentStatus {
            instances: vec![instance("VI_1", true), instance("VI_2", false)],
            ..AgentStatus::default()
        };
        let table = render_table(&status);
        assert!(
            table.contains("VI_1: priority held low after a handover")
                && table.contains("handover --release"),
            "{table}"
        );
        assert!(!table.contains("VI_2: priority held"), "{table}");
    }

    #[test]
    fn a_remembered_slot_updates_the_named_instance_even_after_a_reload() {
        let t = Telemetry::default();
        let add = |names: &[&str]| {
            for name in names {
                t.add_instance(InstanceStatus {
                    name: (*name).into(),
                    ..InstanceStatus::default()
                });
            }
        };
        add(&["VI_1", "VI_2", "VI_3"]);
        let mut slot = usize::MAX;
        t.update_instance_at(&mut slot, "VI_2", |s| s.priority = 100);
        assert_eq!(slot, 1);
        // A reload rebuilds the list in another order and without VI_1.
        t.clear();
        add(&["VI_3", "VI_2"]);
        t.update_instance_at(&mut slot, "VI_3", |s| s.priority = 150);
        t.update_instance_at(&mut slot, "VI_2", |s| s.priority = 200);
        let priorities: Vec<(String, u8)> = t
            .snapshot()
            .instances
            .into_iter()
            .map(|s| (s.name, s.priority))
            .collect();
        assert_eq!(
            priorities,
            [("VI_3".to_owned(), 150), ("VI_2".to_owned(), 200)]
        );
        // An instance no longer configured is not updated at all.
        t.update_instance_at(&mut slot, "VI_1", |s| s.priority = 1);
        assert!(t.snapshot().instances.iter().all(|s| s.priority != 1));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(&FAILOVER_BUCKETS, 0.015);
        h.observe(&FAILOVER_BUCKETS, 0.3);
        assert_eq!(h.count, 2);
        assert_eq!(h.counts[0], 0, "<= 10 ms");
        assert_eq!(h.counts[1], 1, "<= 20 ms");
        assert_eq!(h.counts[4], 1, "<= 250 ms");
        assert_eq!(h.counts[5], 2, "<= 500 ms");
        assert!((h.sum - 0.315).abs() < 1e-9);
    }

    #[test]
    fn transitions_and_checks_show_in_the_snapshot() {
        let t = Telemetry::default();
        t.add_instance(InstanceStatus {
            name: "VI_1".into(),
            state: "INIT".into(),
            ..InstanceStatus::default()
        });
        t.add_check("haproxy");
        t.transition(
            "VI_1",
            "MASTER",
            "master down",
            Some(Duration::from_millis(340)),
        );
        t.check_result("haproxy", false, false, Duration::from_micros(120));
        let s = t.snapshot();
        assert_eq!(s.instances[0].state, "MASTER");
        assert_eq!(s.instances[0].transitions, 1);
        assert_eq!(
            s.instances[0].last_transition_reason.as_deref(),
            Some("master down")
        );
        assert!(!s.checks[0].up);
        assert_eq!(s.checks[0].failures, 1);
        let table = render_table(&s);
        assert!(
            table.contains("VI_1") && table.contains("MASTER") && table.contains("haproxy"),
            "{table}"
        );
        let (failover, latency) = t.histograms();
        assert_eq!(failover["VI_1"].count, 1);
        assert_eq!(latency["haproxy"].count, 1);
    }

    /// A telemetry with a floating IP fed by these channels.
    fn with_floating_ip() -> (
        Telemetry,
        watch::Sender<FloatingIpStatus>,
        watch::Sender<Option<CloudReport>>,
    ) {
        let t = Telemetry::default();
        let (status, status_rx) = watch::channel(FloatingIpStatus::default());
        let (report, report_rx) = watch::channel(None);
        t.set_floating_ip(
            "203.0.113.10".into(),
            "VI_1".into(),
            status_rx,
            report_rx,
            Arc::default(),
        );
        (t, status, report)
    }

    /// The reserved IPv6 beside the floating IPv4, each from its own
    /// manager: held, assigns, the last assign's result and time.
    #[test]
    fn the_reserved_ipv6_shows_beside_the_floating_ip() {
        use crate::cloud::{AssignRecord, Check};
        let (t, _v4, report) = with_floating_ip();
        let (v6, v6_rx) = watch::channel(FloatingIpStatus::default());
        t.set_reserved_ipv6(
            "2604:a880:400:d1::7a2:1".into(),
            "VI_6".into(),
            v6_rx,
            report.subscribe(),
            Arc::default(),
        );
        v6.send_modify(|s| {
            s.master = true;
            s.holder_known = Some(true);
            s.assigns = 1;
            s.last_assign = Some(AssignRecord {
                at: tokio::time::Instant::now(),
                droplet_id: 7,
                duration: Duration::from_millis(120),
                result: Ok(Some(99)),
            });
        });
        report.send_replace(Some(CloudReport {
            checks: vec![Check {
                name: "ipv6",
                ok: false,
                detail: "no public IPv6".into(),
            }],
        }));
        let snapshot = t.snapshot();
        let r6 = snapshot
            .reserved_ipv6
            .as_ref()
            .expect("reserved IPv6 report");
        assert_eq!(
            (r6.ip.as_str(), r6.instance.as_str()),
            ("2604:a880:400:d1::7a2:1", "VI_6")
        );
        assert_eq!(
            (
                r6.held_by_us,
                r6.assigns,
                r6.last_assign_ms,
                r6.last_assign_ok
            ),
            (Some(true), 1, Some(120), Some(true))
        );
        let r4 = snapshot.floating_ip.as_ref().unwrap();
        assert_eq!((r4.held_by_us, r4.assigns), (None, 0), "the IPv4's own");
        let table = render_table(&snapshot);
        assert!(
            table.contains("floating IP 203.0.113.10 (follows VI_1): holder not checked")
                && table.contains(
                    "reserved IPv6 2604:a880:400:d1::7a2:1 (follows VI_6): held by this droplet; 1 assign(s), last succeeded in 120 ms"
                ),
            "{table}"
        );
        assert_eq!(
            table.matches("  - ipv6: no public IPv6").count(),
            1,
            "one check for both: {table}"
        );
        let json = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(json["reserved_ipv6"]["assigns"], 1);

        // An IPv6-only service: the reserved IPv6 alone.
        t.forget_addresses();
        assert_eq!(t.snapshot().reserved_ipv6, None);
        let (_v6, v6_rx) = watch::channel(FloatingIpStatus::default());
        t.set_reserved_ipv6(
            "2604:a880:400:d1::7a2:1".into(),
            "VI_6".into(),
            v6_rx,
            report.subscribe(),
            Arc::default(),
        );
        let snapshot = t.snapshot();
        assert!(snapshot.floating_ip.is_none() && snapshot.reserved_ipv6.is_some());
        let table = render_table(&snapshot);
        assert!(
            table.contains("reserved IPv6 2604:a880:400:d1::7a2:1")
                && !table.contains("floating IP 2")
                && table.contains("  - ipv6: no public IPv6"),
            "{table}"
        );
    }

    #[test]
    fn heartbeat_peers_show_the_masters_of_each_family() {
        use crate::heartbeat::{
            Counters, Peer, PeerTable,
            wire::{Message, PeerState, Record},
        };
        let record = |vrid, address: &str| Record {
            vrid,
            state: PeerState::Master,
            priority: 200,
            healthy: true,
            address: address.parse().unwrap(),
        };
        let message = Message {
            droplet_id: 2,
            boot_id: 1,
            seq: 1,
            sent_unix_ms: 0,
            records: vec![
                record(51, "10.0.0.1"),
                record(51, "fe80::1"),
                record(52, "fe80::1"),
            ],
        };
        let address: std::net::SocketAddr = "10.0.9.1:7823".parse().unwrap();
        let mut table = PeerTable {
            valid_for_ns: u64::MAX / 2,
            ..PeerTable::default()
        };
        table
            .peers
            .insert(address, Peer::from_message(message, monotonic_ns()));
        let (_tx, rx) = watch::channel(table);
        let t = Telemetry::default();
        t.set_heartbeat(Some((rx, Arc::new(Counters::default()), vec![address])));
        let peer = &t.snapshot().heartbeat.unwrap().peers[0];
        assert_eq!(
            (peer.master_of.clone(), peer.master_of_ipv6.clone()),
            (vec![51], vec![51, 52])
        );
        assert!(
            render_table(&t.snapshot()).contains("Master of VRID [51], of IPv6 VRID [51, 52]"),
            "{}",
            render_table(&t.snapshot())
        );
    }

    #[test]
    fn split_brain_shows_in_status() {
        use crate::cloud::{Router, Yielding};
        let (t, status, _report) = with_floating_ip();
        let peer = Router {
            priority: 200,
            address: "10.0.0.1".parse().unwrap(),
        };
        status.send_modify(|s| {
            s.master = true;
            s.yielding_to = Some(Yielding {
                droplet_id: 3164555,
                peer,
            });
        });
        let report = t.snapshot().floating_ip.unwrap();
        assert_eq!(
            report.yielding_to,
            Some(YieldReport {
                droplet_id: 3164555,
                peer: "10.0.0.1".into(),
                peer_priority: 200
            })
        );
        let table = render_table(&t.snapshot());
        assert!(
            table.contains("split brain: yielding to 10.0.0.1 (priority 200, droplet 3164555)"),
            "{table}"
        );
        // A Backup's last word on it is stale.
        status.send_modify(|s| s.master = false);
        assert_eq!(t.snapshot().floating_ip.unwrap().yielding_to, None);
        assert!(!render_table(&t.snapshot()).contains("split brain"));
    }

    #[test]
    fn start_checks_show_in_status() {
        use crate::cloud::Check;
        let (t, _status, report) = with_floating_ip();
        assert_eq!(t.snapshot().floating_ip.unwrap().setup_problems, None);
        report.send_replace(Some(CloudReport {
            checks: vec![
                Check {
                    name: "metadata",
                    ok: true,
                    detail: "this is droplet 1".into(),
                },
                Check {
                    name: "act",
                    ok: false,
                    detail: "the token lacks the reserved_ip:update scope".into(),
                },
            ],
        }));
        let snapshot = t.snapshot();
        assert_eq!(
            snapshot.floating_ip.as_ref().unwrap().setup_problems,
            Some(vec![
                "act: the token lacks the reserved_ip:update scope".to_owned()
            ])
        );
        let table = render_table(&snapshot);
        assert!(
            table.contains("checks at start found 1 problem(s)")
                && table.contains("  - act: the token lacks the reserved_ip:update scope"),
            "{table}"
        );
        report.send_replace(Some(CloudReport::default()));
        assert!(render_table(&t.snapshot()).contains("DigitalOcean checks at start: passed"));
    }

    #[test]
    fn backup_advert_age_comes_from_the_kernel_when_it_is_newer() {
        let t = Telemetry::default();
        let now = monotonic_ns();
        let master: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        t.add_instance(InstanceStatus {
            name: "VI_1".into(),
            interface: "eth1".into(),
            vrid: 51,
            state: "BACKUP".into(),
            master: Some(master.to_string()),
            // What the state machine last processed: 5 s ago.
            last_advert_ns: Some(now - 5_000_000_000),
            ..InstanceStatus::default()
        });
        let age = |t: &Telemetry| t.snapshot().instances[0].last_advert_age_ms.unwrap();
        assert!(age(&t) >= 5_000);

        // The kernel saw the master 100 ms ago.
        let kernel = Arc::new(std::sync::Mutex::new((master, now - 100_000_000)));
        let reader = Arc::clone(&kernel);
        t.set_last_advert_source(
            "eth1",
            Arc::new(move |key| {
                (key == lbha_common::event::VridKey::v4(51)).then(|| *reader.lock().unwrap())
            }),
        );
        assert!((100..1_000).contains(&age(&t)), "{}", age(&t));

        // Another router's advert says nothing about our master.
        *kernel.lock().unwrap() = ("10.0.0.9".parse().unwrap(), now);
        assert!(age(&t) >= 5_000);

        // Forgotten with its interface.
        *kernel.lock().unwrap() = (master, now);
        t.forget_interface("eth1");
        assert!(t.snapshot().instances.is_empty());
    }
}
