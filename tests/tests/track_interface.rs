//! keepalived's `track_interface` against real keepalived: lbha, master
//! with the higher priority, tracks a third interface; when that link goes
//! down lbha enters FAULT and keepalived takes over, and when it comes back
//! lbha preempts again. A weighted tracked interface lowers lbha's priority
//! below keepalived's instead, which keepalived sees on the wire.

use std::time::Duration;

use lbha_tests::{
    Netns, lbha_master_then_keepalived_backup, require_root, tracking_pair_configs, veth_pair,
};

const WAIT: Duration = Duration::from_secs(20);

/// Two namespaces on one link (`10.206.N.1` lbha, `.2` keepalived), and in
/// lbha's a veth pair `vt`/`vtp` whose `vtp` end the test takes down (which
/// takes `vt`'s carrier, as a cable pulled).
fn topology(n: u8) -> (Netns, Netns) {
    let a = Netns::new("tia").unwrap();
    let k = Netns::new("tik").unwrap();
    veth_pair(
        &a,
        "va",
        &format!("10.206.{n}.1/24"),
        &k,
        "vk",
        &format!("10.206.{n}.2/24"),
    )
    .unwrap();
    a.ip(&["link", "add", "vt", "type", "veth", "peer", "name", "vtp"])
        .unwrap();
    a.ip(&["link", "set", "vt", "up"]).unwrap();
    a.ip(&["link", "set", "vtp", "up"]).unwrap();
    (a, k)
}

fn configs(n: u8, vrid: u8, track: &str) -> (String, String) {
    tracking_pair_configs(
        [10, 206, n],
        vrid,
        &format!("track_interface {{\n        {track}\n    }}"),
    )
}

#[test]
fn a_tracked_interface_down_faults_and_keepalived_takes_over() {
    if !require_root() {
        return;
    }
    let (a, k) = topology(1);
    let (lbha_conf, ka_conf) = configs(1, 64, "vt");
    let (mut agent, mut keepalived) =
        lbha_master_then_keepalived_backup(&a, &k, "VI_1", &lbha_conf, &ka_conf).unwrap();

    a.ip(&["link", "set", "vtp", "down"]).unwrap();
    agent.wait_for_transition("VI_1", "FAULT", 0, WAIT).unwrap();
    keepalived.wait_for_state("VI_1", "MASTER", WAIT).unwrap();

    let seen = agent.transitions().len();
    a.ip(&["link", "set", "vtp", "up"]).unwrap();
    agent
        .wait_for_transition("VI_1", "MASTER", seen, WAIT)
        .unwrap();
}

#[test]
fn a_weighted_tracked_interface_lowers_the_priority_on_the_wire() {
    if !require_root() {
        return;
    }
    let (a, k) = topology(2);
    // 150 - 60 = 90 < keepalived's 100 while vt is down.
    let (lbha_conf, ka_conf) = configs(2, 65, "vt weight -60");
    let (mut agent, mut keepalived) =
        lbha_master_then_keepalived_backup(&a, &k, "VI_1", &lbha_conf, &ka_conf).unwrap();

    a.ip(&["link", "set", "vtp", "down"]).unwrap();
    // keepalived (priority 100, preempting) sees lbha advertise 90 and takes
    // over; lbha becomes backup, not faulted.
    keepalived.wait_for_state("VI_1", "MASTER", WAIT).unwrap();
    agent
        .wait_for_transition("VI_1", "BACKUP", 1, WAIT)
        .unwrap();
    assert!(
        !agent.transitions().iter().any(|t| t.to == "FAULT"),
        "a weighted tracked interface never faults: {:?}",
        agent.transitions()
    );
}
