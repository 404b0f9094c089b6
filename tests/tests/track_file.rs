//! keepalived's `track_file` against real keepalived: lbha, master with
//! the higher priority, tracks a file. A number written into the file
//! weighs on lbha's priority (value x weight) until keepalived, seeing a
//! lower priority on the wire, takes over; 0 written back gives mastership
//! back (lbha preempts). With weight 0 a non-zero value is FAULT instead.

use std::{path::Path, time::Duration};

use lbha_tests::{Netns, lbha_master_then_keepalived_backup, require_root, tracking_pair_configs};

const WAIT: Duration = Duration::from_secs(20);

fn topology(n: u8) -> (Netns, Netns) {
    let a = Netns::new("tfa").unwrap();
    let k = Netns::new("tfk").unwrap();
    lbha_tests::veth_pair(
        &a,
        "va",
        &format!("10.207.{n}.1/24"),
        &k,
        "vk",
        &format!("10.207.{n}.2/24"),
    )
    .unwrap();
    (a, k)
}

fn configs(n: u8, vrid: u8, file: &Path, weight: i32) -> (String, String) {
    let (lbha, keepalived) =
        tracking_pair_configs([10, 207, n], vrid, "track_file {\n        load\n    }");
    let lbha = format!(
        "track_file load {{\n    file {}\n    weight {weight}\n    init_file 0\n}}\n{lbha}",
        file.display()
    );
    (lbha, keepalived)
}

#[test]
fn a_value_in_the_tracked_file_hands_mastership_over_and_zero_takes_it_back() {
    if !require_root() {
        return;
    }
    let dir = lbha_harness::temp_dir("track-file").unwrap();
    let file = dir.path().join("load");
    let (a, k) = topology(1);
    // weight -1: 60 in the file is 150 - 60 = 90 < keepalived's 100.
    let (lbha_conf, ka_conf) = configs(1, 66, &file, -1);
    let (mut agent, mut keepalived) =
        lbha_master_then_keepalived_backup(&a, &k, "VI_1", &lbha_conf, &ka_conf).unwrap();
    // init_file created it with 0.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "0\n");

    std::fs::write(&file, "60\n").unwrap();
    keepalived.wait_for_state("VI_1", "MASTER", WAIT).unwrap();
    agent
        .wait_for_transition("VI_1", "BACKUP", 1, WAIT)
        .unwrap();
    assert!(
        !agent.transitions().iter().any(|t| t.to == "FAULT"),
        "a weighted file never faults: {:?}",
        agent.transitions()
    );

    let seen = agent.transitions().len();
    std::fs::write(&file, "0\n").unwrap();
    agent
        .wait_for_transition("VI_1", "MASTER", seen, WAIT)
        .unwrap();
    keepalived.wait_for_state("VI_1", "BACKUP", WAIT).unwrap();
}

#[test]
fn with_weight_0_a_non_zero_value_is_fault() {
    if !require_root() {
        return;
    }
    let dir = lbha_harness::temp_dir("track-file").unwrap();
    let file = dir.path().join("maint");
    let (a, k) = topology(2);
    let (lbha_conf, ka_conf) = configs(2, 67, &file, 0);
    let (mut agent, mut keepalived) =
        lbha_master_then_keepalived_backup(&a, &k, "VI_1", &lbha_conf, &ka_conf).unwrap();

    std::fs::write(&file, "1").unwrap();
    agent.wait_for_transition("VI_1", "FAULT", 0, WAIT).unwrap();
    keepalived.wait_for_state("VI_1", "MASTER", WAIT).unwrap();

    let seen = agent.transitions().len();
    // Deleting the file is 0 too.
    std::fs::remove_file(&file).unwrap();
    agent
        .wait_for_transition("VI_1", "MASTER", seen, WAIT)
        .unwrap();
}
