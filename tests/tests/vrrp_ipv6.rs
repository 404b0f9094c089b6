//! VRRPv3 over IPv6 against real keepalived 2.2.7, both ways, multicast
//! and unicast, SIGKILL and SIGTERM of the master.
//!
//! lbha master: keepalived
//! hears lbha's adverts (to ff02::12 from va's link-local address, or to
//! its unicast address) and stays BACKUP below it, then takes over when
//! lbha is gone (SIGKILL: after Master_Down_Interval; SIGTERM: at lbha's
//! priority-0 advert). On the way, lbha's master holds the virtual IPv6
//! addresses without Duplicate Address Detection and announces them with
//! unsolicited Neighbor Advertisements that the peer's kernel accepts (it
//! updates a stale neighbour entry to lbha's MAC, which it does only for a
//! valid advertisement with the Override flag), from its interface's own
//! link-local address even when a link-local VIP is left over.
//!
//! keepalived master: lbha follows its IPv6 adverts as BACKUP (the XDP
//! program's IPv6 parsing) and takes over when keepalived is gone, by
//! Master_Down_Interval (SIGKILL) or at its priority-0 advert (SIGTERM).
//!
//! Each test has its own namespaces and its own `2001:db8:N::/64`.

use std::time::{Duration, Instant};

use lbha_tests::{Agent, Keepalived, Netns, require_root, veth_pair};

const ADVERT_INT: &str = "0.1";
/// keepalived's Master_Down_Interval at priority 100 and 0.1 s adverts
/// (3 x 0.1 s + Skew_Time), with room for a loaded 2-core machine.
const TAKEOVER_BOUND: Duration = Duration::from_secs(2);
/// How long keepalived must stay BACKUP under lbha: 20 advert intervals,
/// over six of its Master_Down_Intervals.
const HOLD: Duration = Duration::from_secs(2);

/// Two namespaces joined by va (in `a`) and vb (in `b`), each with
/// `2001:db8:N::1/64` / `::2/64`, Duplicate Address Detection off before
/// the link exists (so the link-local and global addresses are usable at
/// once rather than tentative for a second).
fn pair(tag: &str, subnet: u16) -> (Netns, Netns) {
    let a = Netns::new(&format!("{tag}a")).unwrap();
    let b = Netns::new(&format!("{tag}b")).unwrap();
    for ns in [&a, &b] {
        for scope in ["all", "default"] {
            ns.exec(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{scope}.accept_dad=0"),
            ])
            .unwrap();
        }
    }
    veth_pair(
        &a,
        "va",
        &format!("2001:db8:{subnet:x}::1/64"),
        &b,
        "vb",
        &format!("2001:db8:{subnet:x}::2/64"),
    )
    .unwrap();
    // The link-local address comes with the link up; wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    for (ns, dev) in [(&a, "va"), (&b, "vb")] {
        while !ns
            .ip(&["-6", "addr", "show", "dev", dev, "scope", "link"])
            .unwrap()
            .contains("fe80::")
        {
            assert!(Instant::now() < deadline, "no link-local address on {dev}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    (a, b)
}

/// A keepalived.conf `vrrp_instance` over IPv6 (no `version`: keepalived
/// deduces 3 from the addresses, as lbha does).
fn instance(
    interface: &str,
    vrid: u8,
    priority: u8,
    unicast: Option<(&str, &str)>,
    vips: &[String],
) -> String {
    let unicast = unicast.map_or_else(String::new, |(src, peer)| {
        format!("    unicast_src_ip {src}\n    unicast_peer {{\n        {peer}\n    }}\n")
    });
    let vips: String = vips.iter().map(|v| format!("        {v}\n")).collect();
    format!(
        "vrrp_instance VI_6 {{\n    interface {interface}\n    state BACKUP\n    virtual_router_id {vrid}\n    priority {priority}\n    advert_int {ADVERT_INT}\n{unicast}    virtual_ipaddress {{\n{vips}    }}\n}}\n"
    )
}

/// The kernel's link-local address of `interface` (before any VIP).
fn link_local_of(ns: &Netns, interface: &str) -> String {
    let out = ns
        .ip(&[
            "-6", "-o", "addr", "show", "dev", interface, "scope", "link",
        ])
        .unwrap();
    let word = out
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .unwrap_or_else(|| panic!("no link-local address on {interface}: {out}"));
    word.split('/').next().unwrap().to_owned()
}

fn mac_of(ns: &Netns, interface: &str) -> String {
    ns.exec(&["cat", &format!("/sys/class/net/{interface}/address")])
        .unwrap()
        .trim()
        .to_owned()
}

/// Whether `log` shows keepalived entering MASTER.
fn entered_master(keepalived: &Keepalived) -> bool {
    keepalived.log().contains("(VI_6) Entering MASTER STATE")
}

#[derive(Clone, Copy)]
enum Stop {
    Sigkill,
    Sigterm,
}

fn lbha_master_keepalived_backup(tag: &str, subnet: u16, unicast: bool, stop: Stop) {
    let (a, b) = pair(tag, subnet);
    let vrid = 60 + subnet as u8 % 100;
    let global_vip = format!("2001:db8:{subnet:x}::100");
    let vips = [format!("fe80::{vrid}/64"), format!("{global_vip}/64")];
    let (ours, theirs) = (
        format!("2001:db8:{subnet:x}::1"),
        format!("2001:db8:{subnet:x}::2"),
    );
    let (lbha_unicast, keepalived_unicast) = if unicast {
        (
            Some((ours.as_str(), theirs.as_str())),
            Some((theirs.as_str(), ours.as_str())),
        )
    } else {
        (None, None)
    };

    // A neighbour entry on the peer pointing the VIP elsewhere: only an
    // unsolicited Neighbor Advertisement with Override (and a good
    // checksum, hop limit 255) moves it to lbha's MAC.
    b.ip(&[
        "-6",
        "neigh",
        "replace",
        &global_vip,
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        "vb",
        "nud",
        "stale",
    ])
    .unwrap();

    // A crashed predecessor's link-local virtual address still on va (the
    // kernel lists it before va's own): lbha must not advertise from it.
    let own_link_local = link_local_of(&a, "va");
    a.ip(&["-6", "addr", "add", &vips[0], "dev", "va", "nodad"])
        .unwrap();

    let mut agent =
        Agent::start_with_status(&a, &instance("va", vrid, 150, lbha_unicast, &vips)).unwrap();
    agent
        .wait_for_transition("VI_6", "MASTER", 0, Duration::from_secs(15))
        .unwrap();
    // As Master, status shows its own primary address: the advert source.
    let expected_src = if unicast {
        ours.clone()
    } else {
        own_link_local
    };
    agent.wait_status("lbha's advert source", |s| {
        s["instances"][0]["master"].as_str() == Some(expected_src.as_str())
    });

    // The virtual addresses, usable at once (nodad, never tentative).
    let held = a.ip(&["-6", "addr", "show", "dev", "va"]).unwrap();
    for vip in &vips {
        let line = held
            .lines()
            .find(|l| l.contains(&format!("inet6 {vip}")))
            .unwrap_or_else(|| panic!("{vip} on va:\n{held}\n{}", agent.log()));
        assert!(
            line.contains("nodad") && !line.contains("tentative"),
            "{line}"
        );
    }
    // The XDP path has no socket of its own: lbha holds ff02::12 on va so a
    // NIC filtering multicast still shows the program the adverts.
    let groups = a.ip(&["-6", "maddr", "show", "dev", "va"]).unwrap();
    assert!(
        groups.contains("ff02::12"),
        "ff02::12 not joined on va:\n{groups}\n{}",
        agent.log()
    );
    let lbha_mac = mac_of(&a, "va");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let neigh = b
            .ip(&["-6", "neigh", "show", &global_vip, "dev", "vb"])
            .unwrap();
        if neigh.contains(&lbha_mac) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the peer's neighbour entry for {global_vip} did not move to lbha's MAC {lbha_mac}: {neigh}\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut keepalived =
        Keepalived::start(&b, &instance("vb", vrid, 100, keepalived_unicast, &vips)).unwrap();
    keepalived
        .wait_for_state("VI_6", "BACKUP", Duration::from_secs(10))
        .unwrap();
    std::thread::sleep(HOLD);
    assert!(
        !entered_master(&keepalived),
        "keepalived must stay BACKUP while lbha (priority 150) advertises over IPv6:\n{}\n--- lbha:\n{}",
        keepalived.log(),
        agent.log()
    );

    let stopped = Instant::now();
    match stop {
        Stop::Sigkill => {
            agent.kill().unwrap();
        }
        Stop::Sigterm => {
            agent.stop(Duration::from_secs(5)).unwrap();
        }
    }
    keepalived
        .wait_for_state("VI_6", "MASTER", TAKEOVER_BOUND)
        .unwrap_or_else(|e| panic!("{e}\n{}", keepalived.log()));
    let took = stopped.elapsed();
    println!(
        "TIMING keepalived takeover after lbha {}: {took:?}",
        match stop {
            Stop::Sigkill => "SIGKILL",
            Stop::Sigterm => "SIGTERM",
        }
    );
}

#[test]
fn lbha_master_keepalived_backup_ipv6_multicast_sigkill() {
    if !require_root() {
        return;
    }
    lbha_master_keepalived_backup("v6m", 0x61, false, Stop::Sigkill);
}

#[test]
fn lbha_master_keepalived_backup_ipv6_unicast_sigterm() {
    if !require_root() {
        return;
    }
    lbha_master_keepalived_backup("v6u", 0x62, true, Stop::Sigterm);
}

#[test]
fn lbha_master_keepalived_backup_ipv6_multicast_sigterm() {
    if !require_root() {
        return;
    }
    lbha_master_keepalived_backup("v6n", 0x65, false, Stop::Sigterm);
}

#[test]
fn lbha_master_keepalived_backup_ipv6_unicast_sigkill() {
    if !require_root() {
        return;
    }
    lbha_master_keepalived_backup("v6k", 0x66, true, Stop::Sigkill);
}

/// The other direction: lbha BACKUP follows keepalived's IPv6 adverts
/// (the receive path's IPv6 parsing), never claims mastership under it, and
/// takes over when keepalived is gone.
fn keepalived_master_lbha_backup(tag: &str, subnet: u16, unicast: bool, stop: Stop) {
    let (a, b) = pair(tag, subnet);
    let vrid = 60 + subnet as u8 % 100;
    let vips = [
        format!("fe80::{vrid}/64"),
        format!("2001:db8:{subnet:x}::100/64"),
    ];
    let (ours, theirs) = (
        format!("2001:db8:{subnet:x}::1"),
        format!("2001:db8:{subnet:x}::2"),
    );
    let (lbha_unicast, keepalived_unicast) = if unicast {
        (
            Some((ours.as_str(), theirs.as_str())),
            Some((theirs.as_str(), ours.as_str())),
        )
    } else {
        (None, None)
    };
    let mut keepalived =
        Keepalived::start(&b, &instance("vb", vrid, 150, keepalived_unicast, &vips)).unwrap();
    keepalived
        .wait_for_state("VI_6", "MASTER", Duration::from_secs(10))
        .unwrap();
    let mut agent = Agent::start(&a, &instance("va", vrid, 100, lbha_unicast, &vips)).unwrap();
    agent
        .wait_for_transition("VI_6", "BACKUP", 0, Duration::from_secs(15))
        .unwrap();
    std::thread::sleep(HOLD);
    assert!(
        !agent.transitions().iter().any(|t| t.to == "MASTER"),
        "lbha must stay BACKUP under keepalived (priority 150) over IPv6:\n{}\n--- keepalived:\n{}",
        agent.log(),
        keepalived.log()
    );
    let since = agent.transitions().len();
    let stopped = Instant::now();
    match stop {
        Stop::Sigkill => keepalived.kill(),
        Stop::Sigterm => {
            keepalived.stop(Duration::from_secs(5)).unwrap();
        }
    }
    let took = agent
        .wait_for_transition("VI_6", "MASTER", since, TAKEOVER_BOUND)
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    // SIGTERM: keepalived's priority-0 advert reached lbha (which then
    // takes over within Skew_Time, not Master_Down_Interval); SIGKILL: the
    // adverts stopped.
    let expected = match stop {
        Stop::Sigkill => "master down",
        Stop::Sigterm => "master resigned",
    };
    assert_eq!(took.reason, expected, "{}", took.line);
    println!(
        "TIMING lbha takeover after keepalived {}: {:?}",
        match stop {
            Stop::Sigkill => "SIGKILL",
            Stop::Sigterm => "SIGTERM",
        },
        stopped.elapsed()
    );
}

#[test]
fn keepalived_master_lbha_backup_ipv6_multicast_sigkill() {
    if !require_root() {
        return;
    }
    keepalived_master_lbha_backup("k6m", 0x63, false, Stop::Sigkill);
}

#[test]
fn keepalived_master_lbha_backup_ipv6_unicast_sigterm() {
    if !require_root() {
        return;
    }
    keepalived_master_lbha_backup("k6u", 0x64, true, Stop::Sigterm);
}

#[test]
fn keepalived_master_lbha_backup_ipv6_multicast_sigterm() {
    if !require_root() {
        return;
    }
    keepalived_master_lbha_backup("k6n", 0x67, false, Stop::Sigterm);
}

#[test]
fn keepalived_master_lbha_backup_ipv6_unicast_sigkill() {
    if !require_root() {
        return;
    }
    keepalived_master_lbha_backup("k6k", 0x68, true, Stop::Sigkill);
}

/// The raw-socket receive path (TOML `receive_path = "raw"`: an AF_INET6
/// socket that joins ff02::12) follows keepalived's multicast adverts too.
#[test]
fn keepalived_master_lbha_backup_ipv6_multicast_raw_socket() {
    if !require_root() {
        return;
    }
    let (a, b) = pair("k6r", 0x69);
    let vips = ["fe80::69/64".to_string(), "2001:db8:69::100/64".to_string()];
    let mut keepalived = Keepalived::start(&b, &instance("vb", 69, 150, None, &vips)).unwrap();
    keepalived
        .wait_for_state("VI_6", "MASTER", Duration::from_secs(10))
        .unwrap();
    let toml = format!(
        "[[instance]]\nname = \"VI_6\"\ninterface = \"va\"\nvrid = 69\npriority = 100\nversion = 3\n\
         advert_interval = {ADVERT_INT}\nreceive_path = \"raw\"\nvirtual_addresses = [\"{}\", \"{}\"]\n",
        vips[0], vips[1]
    );
    let mut agent = Agent::start_native(&a, &toml).unwrap();
    agent
        .wait_for_transition("VI_6", "BACKUP", 0, Duration::from_secs(15))
        .unwrap();
    std::thread::sleep(HOLD);
    assert!(
        !agent.transitions().iter().any(|t| t.to == "MASTER"),
        "lbha (raw socket) must stay BACKUP under keepalived over IPv6:\n{}",
        agent.log()
    );
    assert!(
        agent.log().contains("receive_path=\"raw-socket\""),
        "{}",
        agent.log()
    );
    let since = agent.transitions().len();
    keepalived.kill();
    let took = agent
        .wait_for_transition("VI_6", "MASTER", since, TAKEOVER_BOUND)
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert_eq!(took.reason, "master down", "{}", took.line);
}
