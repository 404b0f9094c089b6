//! The second path between agents: with the VRRP path cut (adverts dropped
//! in both namespaces) but the heartbeat network up, the backup stays
//! BACKUP and reports the partition; when the master really dies, its
//! heartbeat stops too and the backup takes over.

use std::{net::Ipv4Addr, time::Duration};

use lbha_tests::{Agent, KeepalivedConfig, Netns, VrrpInstance, require_root, temp_dir, veth_pair};

const WAIT: Duration = Duration::from_secs(15);

fn conf(interface: &str, src: Ipv4Addr, peer: Ipv4Addr, priority: u8) -> String {
    KeepalivedConfig::new()
        .global_def("vrrp_version 3")
        .instance(
            VrrpInstance::unicast("VI_1", interface, 61, src)
                .priority(priority)
                .advert_int("0.1")
                .version(3)
                .unicast_peer(peer)
                // keepalived refuses a VRRPv3 instance without one (so does lbha).
                .virtual_ipaddress(format!(
                    "{}.100/32",
                    src.to_string()
                        .rsplit_once('.')
                        .map_or("10.0.0", |(net, _)| net)
                )),
        )
        .render()
}

/// Drops every VRRP packet this namespace sends (the VRRP path is cut while
/// everything else, the heartbeat included, still flows).
fn cut_vrrp(ns: &Netns) {
    ns.exec(&["nft", "add", "table", "inet", "lbha_test_cut"])
        .unwrap();
    ns.exec(&[
        "nft",
        "add",
        "chain",
        "inet",
        "lbha_test_cut",
        "out",
        "{ type filter hook output priority 0; }",
    ])
    .unwrap();
    ns.exec(&[
        "nft",
        "add",
        "rule",
        "inet",
        "lbha_test_cut",
        "out",
        "ip",
        "protocol",
        "vrrp",
        "drop",
    ])
    .unwrap();
}

fn heal_vrrp(ns: &Netns) {
    ns.exec(&["nft", "delete", "table", "inet", "lbha_test_cut"])
        .unwrap();
}

fn partitioned(agent: &Agent) -> bool {
    agent.status().unwrap()["instances"][0]["vrrp_path_partitioned"] == true
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_cut_vrrp_path_with_a_live_heartbeat_is_a_partition_not_a_failover() {
    if !require_root() {
        return;
    }
    let a = Netns::new("hba").unwrap();
    let b = Netns::new("hbb").unwrap();
    veth_pair(&a, "va", "10.210.1.1/24", &b, "vb", "10.210.1.2/24").unwrap();
    veth_pair(&a, "ha", "10.210.2.1/24", &b, "hb", "10.210.2.2/24").unwrap();
    let files = temp_dir("heartbeat").unwrap();
    let key = files.path().join("hb.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    let key = key.to_str().unwrap();
    let args = |listen: &'static str, peer: &'static str| {
        vec![
            "--heartbeat-listen",
            listen,
            "--heartbeat-peer",
            peer,
            "--heartbeat-key-file",
            key,
        ]
    };
    let (ip_a, ip_b) = (Ipv4Addr::new(10, 210, 1, 1), Ipv4Addr::new(10, 210, 1, 2));
    let mut master = Agent::start_with_status_and_args(
        &a,
        &conf("va", ip_a, ip_b, 200),
        &args("10.210.2.1:7823", "10.210.2.2:7823"),
    )
    .unwrap();
    let mut backup = Agent::start_with_status_and_args(
        &b,
        &conf("vb", ip_b, ip_a, 100),
        &args("10.210.2.2:7823", "10.210.2.1:7823"),
    )
    .unwrap();
    master
        .wait_for_transition("VI_1", "MASTER", 0, WAIT)
        .unwrap();
    backup
        .wait_for_transition("VI_1", "BACKUP", 0, WAIT)
        .unwrap();
    wait_until("the backup to hear the master's heartbeat", || {
        backup.status().unwrap()["heartbeat"]["peers"][0]["alive"] == true
    });
    let before = backup.transitions().len();

    // The VRRP path is cut both ways: about 8 master-down intervals pass.
    cut_vrrp(&a);
    cut_vrrp(&b);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        backup.transitions().len(),
        before,
        "the backup stayed BACKUP:\n{}",
        backup.log()
    );
    assert!(partitioned(&backup), "status reports the partition");
    assert!(backup.log().contains("the VRRP path is partitioned"));

    // Healed: the partition report clears, nothing else happens.
    heal_vrrp(&a);
    heal_vrrp(&b);
    wait_until("the partition report to clear", || !partitioned(&backup));
    assert_eq!(backup.transitions().len(), before);

    // Cut again, and the master dies for real: its heartbeat stops too, and
    // the backup takes over once three heartbeats are missing.
    cut_vrrp(&a);
    cut_vrrp(&b);
    wait_until("the partition to be seen again", || partitioned(&backup));
    master.kill().unwrap();
    let killed = std::time::Instant::now();
    backup
        .wait_for_transition("VI_1", "MASTER", before, WAIT)
        .unwrap();
    let took = killed.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "takeover {took:?} after the master died (3 heartbeats of 100 ms, then Master_Down_Interval)"
    );
}
