//! Adverts only from peers: an lbha BACKUP following a master (keepalived
//! 2.2, or lbha) on a shared link, and a third host on that link that is
//! no instance's unicast peer spoofing adverts at it, on both receive paths.
//!
//! The stranger claims mastership with priority 255, first while the
//! master is healthy (the backup must not move: no transition, the same
//! master, every spoof counted as `drop_unknown_source`), then right after
//! the master crashed, with a 40.95 s advert interval: a backup that
//! listened would follow the stranger and wait 3 x 40.95 s for it, one that
//! does not takes over after its own Master_Down_Interval. Against an lbha
//! master the stranger also claims mastership to the master itself, which
//! must stay MASTER.
//!
//! The spoofs are built with the shared encoder and sent from the
//! stranger's namespace through an `IPPROTO_RAW` socket (the IPv4 header is
//! ours: the stranger's own source address, TTL 255). Each test has its own
//! namespaces and its own `10.207.N.0/24`.

use std::{
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant},
};

use lbha_common::vrrp::encode::Advert;
use lbha_tests::{
    Agent, Keepalived, KeepalivedConfig, Netns, VrrpInstance, VrrpState, WAIT, bridge, bridge_port,
    require_root,
};

const INSTANCE: &str = "VI_1";
const VRID: u8 = 61;
/// VRRPv3 at 100 ms: keepalived's `advert_int 0.1`.
const INTERVAL: Duration = Duration::from_millis(100);
const MASTER_PRIORITY: u8 = 150;
const BACKUP_PRIORITY: u8 = 100;
/// How many spoofs the stranger sends while the master is healthy, and how
/// far apart.
const SPOOFS: u64 = 25;
const SPOOF_GAP: Duration = Duration::from_millis(20);
/// Allowance for scheduling on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(300);

/// Which daemon is the master.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MasterKind {
    Keepalived,
    Lbha,
}

enum Master {
    Keepalived(Keepalived),
    Lbha(Agent),
}

/// A switch and three hosts on it: the master (.1), the lbha backup (.2)
/// and the stranger (.66), each in its own namespace.
struct Lan {
    // Dropped first: the hosts' namespaces, then the switch.
    master: Netns,
    backup: Netns,
    stranger: Netns,
    _switch: Netns,
    subnet: u8,
}

impl Lan {
    fn new(subnet: u8) -> Self {
        let switch = Netns::new("us-sw").expect("switch namespace");
        bridge(&switch, "br0").expect("bridge");
        let host = |tag: &str, host: u8| {
            let ns = Netns::new(tag).expect("namespace");
            bridge_port(
                &switch,
                "br0",
                &format!("p-{host}"),
                &ns,
                "eth0",
                &format!("10.207.{subnet}.{host}/24"),
            )
            .expect("bridge port");
            ns
        };
        let (master, backup, stranger) = (host("us-ma", 1), host("us-lb", 2), host("us-st", 66));
        Self {
            master,
            backup,
            stranger,
            _switch: switch,
            subnet,
        }
    }

    fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 207, self.subnet, host)
    }

    fn master_ip(&self) -> Ipv4Addr {
        self.addr(1)
    }

    fn backup_ip(&self) -> Ipv4Addr {
        self.addr(2)
    }

    fn stranger_ip(&self) -> Ipv4Addr {
        self.addr(66)
    }

    /// lbha's native configuration of one node: `us` with `peer` as its only
    /// unicast peer (source checking is on by default).
    fn lbha_toml(&self, us: Ipv4Addr, peer: Ipv4Addr, priority: u8, path: &str) -> String {
        let state = if priority == MASTER_PRIORITY {
            "master"
        } else {
            "backup"
        };
        format!(
            r#"[[instance]]
name = "{INSTANCE}"
interface = "eth0"
vrid = {VRID}
priority = {priority}
version = 3
advert_interval = {interval}
state = "{state}"
unicast_src = "{us}"
unicast_peers = ["{peer}"]
virtual_addresses = ["10.207.{subnet}.100/32"]
receive_path = "{path}"
"#,
            interval = INTERVAL.as_secs_f64(),
            subnet = self.subnet,
        )
    }

    fn start_master(&self, kind: MasterKind) -> Master {
        match kind {
            MasterKind::Keepalived => {
                let config = KeepalivedConfig::new().instance(
                    VrrpInstance::unicast(INSTANCE, "eth0", VRID, self.master_ip())
                        .state(VrrpState::Master)
                        .priority(MASTER_PRIORITY)
                        .version(3)
                        .advert_int("0.1")
                        .unicast_peer(self.backup_ip())
                        .virtual_ipaddress(format!("10.207.{}.100/32", self.subnet)),
                );
                let mut keepalived =
                    Keepalived::start(&self.master, &config.render()).expect("keepalived");
                keepalived
                    .wait_for_state(INSTANCE, "MASTER", WAIT)
                    .expect("keepalived becomes MASTER");
                Master::Keepalived(keepalived)
            }
            MasterKind::Lbha => {
                let toml =
                    self.lbha_toml(self.master_ip(), self.backup_ip(), MASTER_PRIORITY, "auto");
                let mut agent = Agent::start_native(&self.master, &toml).expect("lbha master");
                agent
                    .wait_for_transition(INSTANCE, "MASTER", 0, WAIT)
                    .expect("lbha becomes MASTER");
                Master::Lbha(agent)
            }
        }
    }

    /// The stranger claims mastership of [`VRID`] to `to`, `count` times,
    /// `gap` apart, advertising every `interval_cs`.
    fn spoof(&self, to: Ipv4Addr, count: u64, gap: Duration, interval_cs: u16) {
        let advert = Advert {
            version: 3,
            vrid: VRID,
            priority: 255,
            interval_cs,
            auth_pass: None,
            virtual_addrs: &[Ipv4Addr::new(10, 207, self.subnet, 100).into()],
        };
        let packet = advert.ipv4_packet(self.stranger_ip(), to);
        lbha_tests::in_netns(self.stranger.name(), move || {
            send_raw(&packet, to, count, gap)
        })
        .expect("the stranger's namespace")
        .expect("sending the spoofed adverts");
    }
}

/// Sends `packet` (a whole IPv4 packet) to `to` `count` times through an
/// `IPPROTO_RAW` socket of the calling thread's namespace.
fn send_raw(packet: &[u8], to: Ipv4Addr, count: u64, gap: Duration) -> std::io::Result<()> {
    // SAFETY: plain socket calls with valid arguments; the fd is closed below.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(to).to_be(),
            },
            sin_zero: [0; 8],
        };
        let mut result = Ok(());
        for i in 0..count {
            if i > 0 {
                thread::sleep(gap);
            }
            let sent = libc::sendto(
                fd,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            if sent != packet.len() as isize {
                result = Err(std::io::Error::last_os_error());
                break;
            }
        }
        libc::close(fd);
        result
    }
}

fn drop_unknown_source(status: &serde_json::Value) -> u64 {
    status["interfaces"][0]["counters"]["drop_unknown_source"]
        .as_u64()
        .unwrap_or(0)
}

/// Master_Down_Interval of the backup (RFC 5798, down_timer_adverts 3).
fn master_down() -> Duration {
    3 * INTERVAL + INTERVAL * u32::from(256 - u16::from(BACKUP_PRIORITY)) / 256
}

/// The whole scenario against `master`, the backup on `receive_path`
/// (`xdp` or `raw`), whose status must report `path_name`.
fn strangers_change_nothing(subnet: u8, master: MasterKind, receive_path: &str, path_name: &str) {
    let lan = Lan::new(subnet);
    let mut master_daemon = lan.start_master(master);
    let toml = lan.lbha_toml(
        lan.backup_ip(),
        lan.master_ip(),
        BACKUP_PRIORITY,
        receive_path,
    );
    let mut backup = Agent::start_native(&lan.backup, &toml).expect("lbha backup");
    backup
        .wait_for_transition(INSTANCE, "BACKUP", 0, WAIT)
        .expect("the backup starts as BACKUP");
    let master_ip = lan.master_ip().to_string();
    let status = backup.wait_status("the backup to follow the master", |s| {
        let i = &s["instances"][0];
        i["state"] == "BACKUP" && i["master"] == master_ip.as_str()
    });
    let path = status["interfaces"][0]["receive_path"]
        .as_str()
        .unwrap_or_default();
    assert!(
        path.starts_with(path_name),
        "receive path {path:?}: {status}"
    );
    assert_eq!(drop_unknown_source(&status), 0, "{status}");

    // A stranger claims mastership while the master is healthy.
    let transitions = backup.transitions();
    lan.spoof(lan.backup_ip(), SPOOFS, SPOOF_GAP, 10);
    let mut seen_master = Vec::new();
    let deadline = Instant::now() + master_down() + MARGIN;
    while Instant::now() < deadline {
        if let Ok(status) = backup.status() {
            seen_master.push(status["instances"][0]["master"].clone());
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        seen_master.iter().all(|m| *m == master_ip.as_str()),
        "the backup followed someone else: {seen_master:?}\n{}",
        backup.log()
    );
    assert_eq!(
        backup.transitions(),
        transitions,
        "the stranger moved the backup:\n{}",
        backup.log()
    );
    let status = backup.wait_status("every spoof counted", |s| drop_unknown_source(s) >= SPOOFS);
    assert_eq!(drop_unknown_source(&status), SPOOFS, "{status}");
    assert_eq!(status["instances"][0]["state"], "BACKUP", "{status}");
    let counters = &status["interfaces"][0]["counters"];
    assert_eq!(counters["drop_unknown_vrid"], 0, "{status}");
    assert!(counters["adverts_accepted"].as_u64() > Some(0), "{status}");

    // An lbha master hears the stranger's claim too, and keeps mastership.
    if let Master::Lbha(agent) = &master_daemon {
        let before = agent.transitions();
        lan.spoof(lan.master_ip(), 5, SPOOF_GAP, 10);
        thread::sleep(master_down());
        assert_eq!(
            agent.transitions(),
            before,
            "the stranger moved the master:\n{}",
            agent.log()
        );
        let status = agent.wait_status("the master's counters", |s| drop_unknown_source(s) >= 5);
        assert_eq!(drop_unknown_source(&status), 5, "{status}");
        assert_eq!(status["instances"][0]["state"], "MASTER", "{status}");
    }

    // The master crashes and the stranger at once claims mastership with a
    // 40.95 s interval: the backup still takes over on its own timer.
    let since = backup.transitions().len();
    let killed = Instant::now();
    match &mut master_daemon {
        Master::Keepalived(keepalived) => keepalived.kill(),
        Master::Lbha(agent) => {
            agent.kill().expect("killing the lbha master");
        }
    }
    lan.spoof(lan.backup_ip(), 3, SPOOF_GAP, 4095);
    let takeover = backup
        .wait_for_transition(INSTANCE, "MASTER", since, WAIT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", backup.log()));
    let took = killed.elapsed();
    assert_eq!(takeover.reason, "master down", "{}", takeover.line);
    let bound = master_down() + 2 * SPOOF_GAP + MARGIN;
    eprintln!(
        "TIMING unknown_source {receive_path}: takeover {:.0} ms after the crash (bound {:.0} ms)",
        took.as_secs_f64() * 1000.0,
        bound.as_secs_f64() * 1000.0
    );
    assert!(
        took <= bound,
        "took over after {took:?}, beyond {bound:?}\n{}",
        backup.log()
    );
    let status = backup.wait_status("the crash-time spoofs counted", |s| {
        drop_unknown_source(s) >= SPOOFS + 3
    });
    assert_eq!(drop_unknown_source(&status), SPOOFS + 3, "{status}");
}

#[test]
fn strangers_do_not_move_a_backup_of_keepalived_via_xdp() {
    if !require_root() {
        return;
    }
    strangers_change_nothing(1, MasterKind::Keepalived, "xdp", "xdp");
}

#[test]
fn strangers_do_not_move_a_backup_of_lbha_via_raw_socket() {
    if !require_root() {
        return;
    }
    strangers_change_nothing(2, MasterKind::Lbha, "raw", "raw-socket");
}
