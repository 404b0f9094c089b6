//! SIGHUP reloads the configuration: an unchanged instance keeps mastership,
//! a changed one restarts, and a broken file changes nothing.

use std::{net::Ipv4Addr, time::Duration};

use lbha_tests::{Agent, KeepalivedConfig, Netns, VrrpInstance, require_root, veth_pair};

const WAIT: Duration = Duration::from_secs(15);

fn conf(vi2_priority: u8) -> String {
    KeepalivedConfig::new()
        .global_def("vrrp_version 3")
        .instance(
            VrrpInstance::unicast("VI_1", "va1", 51, Ipv4Addr::new(10, 203, 1, 1))
                .priority(200)
                .advert_int("0.1")
                .version(3)
                .unicast_peer(Ipv4Addr::new(10, 203, 1, 2))
                .virtual_ipaddress("10.203.1.100/32"),
        )
        .instance(
            VrrpInstance::unicast("VI_2", "va2", 52, Ipv4Addr::new(10, 203, 2, 1))
                .priority(vi2_priority)
                .advert_int("0.1")
                .version(3)
                .unicast_peer(Ipv4Addr::new(10, 203, 2, 2))
                .virtual_ipaddress("10.203.2.100/32"),
        )
        .render()
}

fn sighup(agent: &Agent) {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
}

#[test]
fn sighup_keeps_unchanged_instances_and_restarts_changed_ones() {
    if !require_root() {
        return;
    }
    let a = Netns::new("rla").unwrap();
    let b = Netns::new("rlb").unwrap();
    let c = Netns::new("rlc").unwrap();
    veth_pair(&a, "va1", "10.203.1.1/24", &b, "vb", "10.203.1.2/24").unwrap();
    veth_pair(&a, "va2", "10.203.2.1/24", &c, "vc", "10.203.2.2/24").unwrap();
    let peer = KeepalivedConfig::new()
        .global_def("vrrp_version 3")
        .instance(
            VrrpInstance::unicast("VI_1", "vb", 51, Ipv4Addr::new(10, 203, 1, 2))
                .priority(100)
                .advert_int("0.1")
                .version(3)
                .unicast_peer(Ipv4Addr::new(10, 203, 1, 1))
                .virtual_ipaddress("10.203.1.100/32"),
        )
        .render();
    let mut backup = Agent::start(&b, &peer).unwrap();
    let mut agent = Agent::start(&a, &conf(200)).unwrap();
    agent
        .wait_for_transition("VI_1", "MASTER", 0, WAIT)
        .unwrap();
    agent
        .wait_for_transition("VI_2", "MASTER", 0, WAIT)
        .unwrap();
    backup
        .wait_for_transition("VI_1", "BACKUP", 0, WAIT)
        .unwrap();
    let conf_path = agent.dir().join("keepalived.conf");

    // The same file again: nothing happens.
    let before = agent.transitions().len();
    sighup(&agent);
    agent.wait_for_log("nothing changed", WAIT).unwrap();
    assert_eq!(agent.transitions().len(), before);

    // A broken file: reported, and the running configuration stays.
    std::fs::write(
        &conf_path,
        "vrrp_instance VI_1 {\n  virtual_router_id 300\n",
    )
    .unwrap();
    sighup(&agent);
    agent
        .wait_for_log("configuration not reloaded", WAIT)
        .unwrap();
    assert_eq!(agent.transitions().len(), before, "{}", agent.log());
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent keeps running"
    );

    // VI_2 (on va2) changes; VI_1 (on va1) does not and keeps mastership.
    let backup_before = backup.transitions().len();
    std::fs::write(&conf_path, conf(150)).unwrap();
    sighup(&agent);
    agent
        .wait_for_transition("VI_2", "MASTER", before, WAIT)
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let after: Vec<_> = agent.transitions().into_iter().skip(before).collect();
    assert!(
        after.iter().all(|t| t.instance == "VI_2"),
        "only VI_2 restarted: {after:#?}"
    );
    assert!(
        after.iter().any(|t| t.to == "INIT"),
        "VI_2 was stopped and started: {after:#?}"
    );
    assert_eq!(
        backup.transitions().len(),
        backup_before,
        "the peer of VI_1 saw no change:\n{}",
        backup.log()
    );
}
