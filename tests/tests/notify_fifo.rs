//! keepalived's `vrrp_notify_fifo`, against real keepalived 2.2.7: lbha
//! (priority 150) and keepalived (100) each write their state changes to
//! a FIFO of their own. A reader of each sees the start, the takeover when
//! lbha stops, and the stops; keepalived's lines are byte for byte what
//! lbha's formatter writes for the same change, and lbha's are exact.

use std::{io::Read, net::Ipv4Addr, os::unix::fs::OpenOptionsExt, path::Path, time::Duration};

use lbha_agent::vrrp::{machine::State, notify_fifo::instance_line};
use lbha_tests::{Agent, Keepalived, KeepalivedConfig, Netns, VrrpInstance, require_root};

const WAIT: Duration = Duration::from_secs(20);

fn config(interface: &str, ip: Ipv4Addr, peer: Ipv4Addr, priority: u8, fifo: &Path) -> String {
    KeepalivedConfig::new()
        .global_def("vrrp_version 3")
        .global_def(format!("vrrp_notify_fifo {}", fifo.display()))
        .instance(
            VrrpInstance::unicast("VI_1", interface, 68, ip)
                .priority(priority)
                .advert_int("0.1")
                .version(3)
                .unicast_peer(peer)
                .virtual_ipaddress("10.208.1.100/32"),
        )
        .render()
}

/// Opened without waiting for a writer; the daemons hold their FIFOs open
/// read-write, so whatever they wrote before is still in the pipe.
fn reader(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn drain(file: &mut std::fs::File) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = file.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn a_fifo_reader_sees_keepalived_s_lines_for_a_takeover() {
    if !require_root() {
        return;
    }
    let dir = lbha_harness::temp_dir("notify-fifo").unwrap();
    let (lbha_fifo, ka_fifo) = (dir.path().join("lbha.fifo"), dir.path().join("ka.fifo"));
    let a = Netns::new("nfa").unwrap();
    let k = Netns::new("nfk").unwrap();
    lbha_tests::veth_pair(&a, "va", "10.208.1.1/24", &k, "vk", "10.208.1.2/24").unwrap();
    let (lbha_ip, ka_ip) = (Ipv4Addr::new(10, 208, 1, 1), Ipv4Addr::new(10, 208, 1, 2));

    let mut agent = Agent::start(&a, &config("va", lbha_ip, ka_ip, 150, &lbha_fifo)).unwrap();
    agent
        .wait_for_transition("VI_1", "MASTER", 0, WAIT)
        .unwrap();
    let mut keepalived =
        Keepalived::start(&k, &config("vk", ka_ip, lbha_ip, 100, &ka_fifo)).unwrap();
    keepalived.wait_for_state("VI_1", "BACKUP", WAIT).unwrap();
    let (mut from_lbha, mut from_ka) = (reader(&lbha_fifo), reader(&ka_fifo));

    agent.stop(Duration::from_secs(5)).unwrap();
    keepalived.wait_for_state("VI_1", "MASTER", WAIT).unwrap();
    assert!(!lbha_fifo.exists(), "lbha made its FIFO, so it removes it");
    keepalived.stop(Duration::from_secs(5)).unwrap();

    let changes = |priority| {
        [State::Backup, State::Master, State::Initialize]
            .map(|s| instance_line("VI_1", s, priority))
            .concat()
    };
    // keepalived sometimes reports FAULT first, while it still finds its
    // interface coming up at start (CI: `FAULT 100` before `BACKUP 100`);
    // that race is keepalived's start-up, not the line format checked here.
    let from_keepalived = drain(&mut from_ka);
    let fault = instance_line("VI_1", State::Fault, 100);
    let mut from_keepalived = from_keepalived.as_str();
    while let Some(rest) = from_keepalived.strip_prefix(fault.as_str()) {
        from_keepalived = rest;
    }
    assert_eq!(from_keepalived, changes(100), "keepalived's own lines");
    assert_eq!(drain(&mut from_lbha), changes(150));
    assert_eq!(
        changes(150),
        "INSTANCE \"VI_1\" BACKUP 150\nINSTANCE \"VI_1\" MASTER 150\nINSTANCE \"VI_1\" STOP 150\n"
    );
}

/// `vrrp_notify_priority_changes`: a tracked file lowering lbha's priority
/// writes keepalived's MASTER_PRIORITY line before keepalived takes over.
#[test]
fn priority_changes_are_written_when_asked_for() {
    if !require_root() {
        return;
    }
    let dir = lbha_harness::temp_dir("notify-fifo").unwrap();
    let (fifo, file) = (dir.path().join("lbha.fifo"), dir.path().join("load"));
    let a = Netns::new("nfa").unwrap();
    let k = Netns::new("nfk").unwrap();
    lbha_tests::veth_pair(&a, "va", "10.208.2.1/24", &k, "vk", "10.208.2.2/24").unwrap();
    let (lbha_ip, ka_ip) = (Ipv4Addr::new(10, 208, 2, 1), Ipv4Addr::new(10, 208, 2, 2));
    let lbha_conf = format!(
        "track_file load {{\n    file {}\n    weight -1\n}}\n{}",
        file.display(),
        config("va", lbha_ip, ka_ip, 150, &fifo)
            .replace(
                "global_defs {\n",
                "global_defs {\n    vrrp_notify_priority_changes\n",
            )
            .replace(
                "    priority 150\n",
                "    priority 150\n    track_file {\n        load\n    }\n"
            )
    );
    assert!(
        lbha_conf.contains("track_file {\n        load"),
        "{lbha_conf}"
    );
    let mut agent = Agent::start(&a, &lbha_conf).unwrap();
    agent
        .wait_for_transition("VI_1", "MASTER", 0, WAIT)
        .unwrap();
    let mut keepalived = Keepalived::start(
        &k,
        &config("vk", ka_ip, lbha_ip, 100, &dir.path().join("ka.fifo")),
    )
    .unwrap();
    keepalived.wait_for_state("VI_1", "BACKUP", WAIT).unwrap();
    let mut from_lbha = reader(&fifo);
    std::fs::write(&file, "60\n").unwrap();
    keepalived.wait_for_state("VI_1", "MASTER", WAIT).unwrap();
    agent
        .wait_for_transition("VI_1", "BACKUP", 1, WAIT)
        .unwrap();
    agent.stop(Duration::from_secs(5)).unwrap();
    assert_eq!(
        drain(&mut from_lbha),
        "INSTANCE \"VI_1\" BACKUP 150\nINSTANCE \"VI_1\" MASTER 150\n\
         INSTANCE \"VI_1\" MASTER_PRIORITY 90\nINSTANCE \"VI_1\" BACKUP 90\n\
         INSTANCE \"VI_1\" STOP 90\n"
    );
}
