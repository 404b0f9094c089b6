//! keepalived's `virtual_routes` and `virtual_rules`: lbha adds them when
//! the instance becomes Master, removes them when it leaves Master (here
//! through FAULT: a tracked link goes down) and adds them again when it
//! takes over again, and removes them when it stops.
//!
//! lbha runs alone in its namespace: its unicast peer never answers, so it
//! becomes Master after Master_Down_Interval.

use std::time::Duration;

use lbha_tests::{Agent, Netns, require_root, veth_pair};

const WAIT: Duration = Duration::from_secs(20);

const CONF: &str = r"vrrp_instance VI_1 {
    interface va
    state BACKUP
    virtual_router_id 71
    priority 150
    advert_int 0.1
    version 3
    unicast_src_ip 10.207.1.1
    unicast_peer {
        10.207.1.2
    }
    track_interface {
        vt
    }
    virtual_ipaddress {
        10.207.1.100/32
    }
    virtual_routes {
        src 10.207.1.100 10.207.9.0/24 via 10.207.1.2 dev va
        10.207.11.0/24 via 10.207.1.2 or 10.207.1.3 dev va
        blackhole 10.207.10.0/24 table 100
    }
    virtual_rules {
        from 10.207.1.100 table 100 preference 1000
        to 10.207.12.0/24 table 100 preference 1001 no_track
    }
}
";

/// Which of the routes and rules the namespace holds.
fn held(ns: &Netns) -> [bool; 5] {
    let main = ns.ip(&["-4", "route", "show"]).unwrap();
    // `show table 100` fails while the table does not exist.
    let all = ns.ip(&["-4", "route", "show", "table", "all"]).unwrap();
    let rules = ns.ip(&["-4", "rule", "show"]).unwrap();
    [
        main.lines().any(|l| {
            l.starts_with("10.207.9.0/24 via 10.207.1.2 dev va")
                && l.contains("proto keepalived")
                && l.contains("src 10.207.1.100")
        }),
        // The multipath route: its next hops on the following lines.
        main.contains("10.207.11.0/24")
            && main.contains("nexthop via 10.207.1.2 dev va")
            && main.contains("nexthop via 10.207.1.3 dev va"),
        all.lines()
            .any(|l| l.starts_with("blackhole 10.207.10.0/24 table 100")),
        rules
            .lines()
            .any(|l| l.starts_with("1000:") && l.contains("from 10.207.1.100 lookup 100")),
        rules
            .lines()
            .any(|l| l.starts_with("1001:") && l.contains("to 10.207.12.0/24 lookup 100")),
    ]
}

fn wait_held(ns: &Netns, want: bool, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let h = held(ns);
        if h.iter().all(|x| *x == want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: routes/rules held {h:?}, wanted all {want}\n{}\n{}\n{}",
            ns.ip(&["-4", "route", "show", "table", "all"])
                .unwrap_or_default(),
            ns.ip(&["-4", "rule", "show"]).unwrap_or_default(),
            "(order: src route, multipath route, blackhole in table 100, rule 1000, rule 1001)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn routes_and_rules_follow_mastership_and_go_at_stop() {
    if !require_root() {
        return;
    }
    let a = Netns::new("vra").unwrap();
    let b = Netns::new("vrb").unwrap();
    veth_pair(&a, "va", "10.207.1.1/24", &b, "vb", "10.207.1.2/24").unwrap();
    a.ip(&["link", "add", "vt", "type", "veth", "peer", "name", "vtp"])
        .unwrap();
    a.ip(&["link", "set", "vt", "up"]).unwrap();
    a.ip(&["link", "set", "vtp", "up"]).unwrap();

    let mut agent = Agent::start(&a, CONF).unwrap();
    agent
        .wait_for_transition("VI_1", "BACKUP", 0, WAIT)
        .unwrap();
    assert_eq!(held(&a), [false; 5], "a Backup holds none of them");
    agent
        .wait_for_transition("VI_1", "MASTER", 0, WAIT)
        .unwrap();
    wait_held(&a, true, "Master");

    // Leaving Master (FAULT: the tracked link is down) removes them all.
    let seen = agent.transitions().len();
    a.ip(&["link", "set", "vtp", "down"]).unwrap();
    agent
        .wait_for_transition("VI_1", "FAULT", seen, WAIT)
        .unwrap();
    wait_held(&a, false, "after leaving Master");

    let seen = agent.transitions().len();
    a.ip(&["link", "set", "vtp", "up"]).unwrap();
    agent
        .wait_for_transition("VI_1", "MASTER", seen, WAIT)
        .unwrap();
    wait_held(&a, true, "Master again");

    agent.stop(Duration::from_secs(5)).unwrap();
    wait_held(&a, false, "after stop");
}
