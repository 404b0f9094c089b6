//! A new master announces its virtual addresses with gratuitous ARP, from
//! its interface's MAC, so neighbours switch to it at once.

use std::{
    net::Ipv4Addr,
    sync::mpsc,
    time::{Duration, Instant},
};

use lbha_tests::{
    Agent, KeepalivedConfig, Netns, VrrpInstance, capture::PacketSocket, require_root, veth_pair,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 205, 1, 100);
const CAPTURE: Duration = Duration::from_secs(20);

/// A gratuitous ARP as captured: (sender MAC, sender IP).
type Garp = ([u8; 6], Ipv4Addr);

/// When the capture ends.
#[derive(Clone, Copy)]
enum Until {
    /// At the first gratuitous ARP for this address (or after `CAPTURE`).
    FirstFor(Ipv4Addr),
    /// This long after the first gratuitous ARP for this address.
    AfterFirstFor(Ipv4Addr, Duration),
}

/// Gratuitous ARP frames seen on `interface` of `ns`, captured on a thread
/// of its own; returns once the socket listens. The thread ends with what
/// [`capture_garp_for`] saw.
fn start_capture(
    ns: &Netns,
    interface: &str,
    vip: Ipv4Addr,
) -> std::thread::JoinHandle<lbha_harness::Result<Vec<Garp>>> {
    let timed = start_timed_capture(ns, interface, Until::FirstFor(vip));
    std::thread::spawn(move || {
        timed
            .join()
            .unwrap()
            .map(|seen| seen.into_iter().map(|(_, garp)| garp).collect())
    })
}

/// As [`start_capture`], with when each frame arrived.
fn start_timed_capture(
    ns: &Netns,
    interface: &str,
    until: Until,
) -> std::thread::JoinHandle<lbha_harness::Result<Vec<(Instant, Garp)>>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (capture_ns, interface) = (ns.name().to_owned(), interface.to_owned());
    let capture = std::thread::spawn(move || {
        lbha_tests::in_netns(&capture_ns, move || {
            capture_garp_for(interface, until, ready_tx)
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("capture listening");
    capture
}

/// Gratuitous ARP frames (sender IP == target IP) seen on `interface` of
/// the namespace, with when each arrived, until `until` (at most
/// `CAPTURE`). Sends `()` on `ready` once the socket is listening.
fn capture_garp_for(
    interface: String,
    until: Until,
    ready: mpsc::Sender<()>,
) -> Vec<(Instant, Garp)> {
    const ETH_P_ARP: u16 = 0x0806;
    let socket =
        PacketSocket::open(&interface, ETH_P_ARP).expect("capture interface and packet socket");
    ready.send(()).unwrap();
    let mut seen = Vec::new();
    let mut deadline = Instant::now() + CAPTURE;
    let mut frame = [0u8; 1514];
    while Instant::now() < deadline {
        let n = socket.recv(&mut frame).unwrap_or(0);
        if n < 42 {
            continue;
        }
        let sender_mac: [u8; 6] = frame[22..28].try_into().unwrap();
        let sender_ip = Ipv4Addr::from(<[u8; 4]>::try_from(&frame[28..32]).unwrap());
        let target_ip = Ipv4Addr::from(<[u8; 4]>::try_from(&frame[38..42]).unwrap());
        if sender_ip == target_ip {
            seen.push((Instant::now(), (sender_mac, sender_ip)));
            match until {
                Until::FirstFor(vip) if vip == sender_ip => break,
                Until::AfterFirstFor(vip, then) if vip == sender_ip => {
                    deadline = deadline.min(Instant::now() + then);
                }
                _ => {}
            }
        }
    }
    seen
}

fn mac_of(ns: &Netns, interface: &str) -> [u8; 6] {
    let text = ns
        .exec(&["cat", &format!("/sys/class/net/{interface}/address")])
        .unwrap();
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(text.trim().split(':')) {
        *byte = u8::from_str_radix(part, 16).unwrap();
    }
    mac
}

/// lbha alone on `va` of `a` (10.205.`subnet`.1, its peer .2 never
/// speaks): Master of VRID `vrid` after Master_Down_Interval, holding
/// `vips`, with `extra` lines in its `vrrp_instance`. Returns once Master.
fn lone_master(a: &Netns, subnet: u8, vrid: u8, vips: &[&str], extra: &[&str]) -> Agent {
    let mut instance = VrrpInstance::unicast("VI_1", "va", vrid, Ipv4Addr::new(10, 205, subnet, 1))
        .priority(150)
        .advert_int("0.1")
        .version(3)
        .unicast_peer(Ipv4Addr::new(10, 205, subnet, 2));
    for vip in vips {
        instance = instance.virtual_ipaddress(*vip);
    }
    for line in extra {
        instance = instance.extra(*line);
    }
    let conf = KeepalivedConfig::new()
        .global_def("vrrp_version 3")
        .instance(instance)
        .render();
    let mut agent = Agent::start(a, &conf).unwrap();
    agent
        .wait_for_transition("VI_1", "MASTER", 0, Duration::from_secs(15))
        .unwrap();
    agent
}

#[test]
fn new_master_sends_gratuitous_arp_for_its_virtual_addresses() {
    if !require_root() {
        return;
    }
    let a = Netns::new("gpa").unwrap();
    let b = Netns::new("gpb").unwrap();
    veth_pair(&a, "va", "10.205.1.1/24", &b, "vb", "10.205.1.2/24").unwrap();
    let capture = start_capture(&b, "vb", VIP);

    let agent = lone_master(&a, 1, 62, &["10.205.1.100/32"], &[]);
    let seen = capture.join().unwrap().unwrap();
    assert!(
        seen.contains(&(mac_of(&a, "va"), VIP)),
        "gratuitous ARP for {VIP} from va's MAC; saw {seen:?}\n{}",
        agent.log()
    );
}

/// keepalived's `virtual_ipaddress { ADDR dev OTHER }`: the address goes on
/// OTHER (not the instance's interface), its gratuitous ARP leaves from
/// OTHER's MAC, and a clean stop removes it from OTHER. A
/// `virtual_ipaddress_excluded` address is held (and removed) the same way.
#[test]
fn a_virtual_address_with_dev_goes_on_that_interface() {
    if !require_root() {
        return;
    }
    let a = Netns::new("gda").unwrap();
    let b = Netns::new("gdb").unwrap();
    veth_pair(&a, "va", "10.205.2.1/24", &b, "vb", "10.205.2.2/24").unwrap();
    veth_pair(&a, "vc", "10.205.3.1/24", &b, "vd", "10.205.3.2/24").unwrap();
    let other_vip = Ipv4Addr::new(10, 205, 3, 100);
    let capture = start_capture(&b, "vd", other_vip);

    let mut agent = lone_master(
        &a,
        2,
        63,
        &["10.205.2.100/32", "10.205.3.100/24 dev vc"],
        &["virtual_ipaddress_excluded {\n        10.205.2.101/32\n    }"],
    );
    let on = |dev: &str| a.ipv4_addresses(dev).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !on("vc").iter().any(|x| x.starts_with("10.205.3.100/")) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        on("vc").contains(&"10.205.3.100/24".to_string()),
        "the dev address is on vc: {:?}\n{}",
        on("vc"),
        agent.log()
    );
    assert!(
        !on("va").iter().any(|x| x.starts_with("10.205.3.100/")),
        "and not on the instance's interface: {:?}",
        on("va")
    );
    assert!(on("va").iter().any(|x| x.starts_with("10.205.2.100/")));
    // `virtual_ipaddress_excluded`: held by the master as well.
    assert!(
        on("va").contains(&"10.205.2.101/32".to_string()),
        "the excluded address is on va: {:?}",
        on("va")
    );
    let seen = capture.join().unwrap().unwrap();
    assert!(
        seen.contains(&(mac_of(&a, "vc"), other_vip)),
        "gratuitous ARP for {other_vip} from vc's MAC; saw {seen:?}\n{}",
        agent.log()
    );
    agent.stop(Duration::from_secs(10)).unwrap();
    assert!(
        !on("vc").iter().any(|x| x.starts_with("10.205.3.100/")),
        "a clean stop removes it from vc: {:?}",
        on("vc")
    );
    assert!(
        !on("va").iter().any(|x| x.starts_with("10.205.2.101/")),
        "and the excluded one from va: {:?}",
        on("va")
    );
}

/// keepalived's `garp_*` timings: `garp_master_repeat 3` sends three at
/// the takeover, `garp_master_delay 1` three more a second later, and
/// `garp_master_refresh 2` with `garp_master_refresh_repeat 2` two every
/// two seconds while Master (lbha used to send one, once).
#[test]
fn a_new_master_announces_on_keepalived_garp_schedule() {
    if !require_root() {
        return;
    }
    let a = Netns::new("gsa").unwrap();
    let b = Netns::new("gsb").unwrap();
    veth_pair(&a, "va", "10.205.4.1/24", &b, "vb", "10.205.4.2/24").unwrap();
    let vip = Ipv4Addr::new(10, 205, 4, 100);
    // Up to the refresh at +2 s; the next, at +4 s, falls outside.
    let capture = start_timed_capture(&b, "vb", Until::AfterFirstFor(vip, Duration::from_secs(3)));
    let agent = lone_master(
        &a,
        4,
        64,
        &["10.205.4.100/32"],
        &[
            "garp_master_repeat 3",
            "garp_master_delay 1",
            "garp_master_refresh 2",
            "garp_master_refresh_repeat 2",
        ],
    );
    let seen = capture.join().unwrap().unwrap();
    let mac = mac_of(&a, "va");
    let times: Vec<Instant> = seen
        .iter()
        .filter(|(_, garp)| *garp == (mac, vip))
        .map(|(at, _)| *at)
        .collect();
    // Bursts: frames less than 200 ms apart.
    let mut bursts: Vec<(Instant, usize)> = Vec::new();
    for at in &times {
        match bursts.last_mut() {
            Some((start, n)) if at.duration_since(*start) < Duration::from_millis(200) => *n += 1,
            _ => bursts.push((*at, 1)),
        }
    }
    let report = || {
        let t0 = bursts.first().map_or(times[0], |b| b.0);
        let list: Vec<String> = bursts
            .iter()
            .map(|(at, n)| format!("{n} at +{}ms", at.duration_since(t0).as_millis()))
            .collect();
        format!("bursts {list:?}\n{}", agent.log())
    };
    assert!(
        !times.is_empty(),
        "no gratuitous ARP for {vip} (saw {seen:?})\n{}",
        agent.log()
    );
    let counts: Vec<usize> = bursts.iter().map(|b| b.1).collect();
    assert_eq!(counts, vec![3, 3, 2], "{}", report());
    let gap = |i: usize| bursts[i].0.duration_since(bursts[0].0);
    assert!(
        (Duration::from_millis(800)..Duration::from_millis(1300)).contains(&gap(1)),
        "the second burst a second after the first: {}",
        report()
    );
    assert!(
        (Duration::from_millis(1800)..Duration::from_millis(2300)).contains(&gap(2)),
        "the refresh two seconds after the takeover: {}",
        report()
    );
}
