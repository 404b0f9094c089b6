//! The XDP program is pinned under bpffs: a crashed or restarted agent does
//! not detach it, the next agent takes the pinned link over (replacing the
//! program in place) with the counters intact, and while no agent runs the
//! program hands adverts to the stack, so a keepalived started in lbha's
//! place still hears its master. `lbha-agent detach` removes it for good.

use std::{
    net::Ipv4Addr,
    os::unix::fs::MetadataExt,
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, PerCpuArray};
use lbha_common::Counter;
use lbha_tests::{
    Agent, BpfFs, Keepalived, KeepalivedConfig, Netns, VrrpInstance, VrrpState, agent_bin,
    require_root, run_command, veth_pair,
};

const WAIT: Duration = Duration::from_secs(15);
const A_ADDR: Ipv4Addr = Ipv4Addr::new(10, 204, 1, 1);
const B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 204, 1, 2);

fn instance(interface: &str, src: Ipv4Addr, peer: Ipv4Addr, priority: u8) -> VrrpInstance {
    VrrpInstance::unicast("VI_1", interface, 61, src)
        .priority(priority)
        .advert_int("0.1")
        .version(3)
        .unicast_peer(peer)
        .virtual_ipaddress("10.204.1.100/32")
}

fn backup_conf() -> String {
    KeepalivedConfig::new()
        .global_def("vrrp_version 3")
        .instance(instance("va", A_ADDR, B_ADDR, 100).state(VrrpState::Backup))
        .render()
}

/// The id of the XDP program attached to `interface`, if any.
fn xdp_prog_id(ns: &Netns, interface: &str) -> Option<u32> {
    let out = ns
        .exec(&["ip", "-d", "link", "show", "dev", interface])
        .ok()?;
    let rest = &out[out.find("prog/xdp id ")? + "prog/xdp id ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// The agent's pin directory for `interface` of `ns`.
fn pin_dir(bpffs: &BpfFs, ns: &Netns, interface: &str) -> PathBuf {
    let inode = std::fs::metadata(format!("/run/netns/{}", ns.name()))
        .expect("netns file")
        .ino();
    let ifindex = ns.ifindex(interface).expect("ifindex");
    bpffs
        .path()
        .join(format!("netns-{inode}"))
        .join(format!("if-{ifindex}"))
}

/// One counter of the pinned COUNTERS map, summed over CPUs.
fn pinned_counter(dir: &std::path::Path, counter: Counter) -> u64 {
    let data = MapData::from_pin(dir.join("COUNTERS")).expect("pinned COUNTERS map");
    let map: PerCpuArray<_, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(data)).expect("per-CPU array");
    map.get(&(counter as u32), 0).expect("counter").iter().sum()
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pinned_program_survives_restarts_and_steps_aside_without_an_agent() {
    if !require_root() {
        return;
    }
    let a = Netns::new("pna").unwrap();
    let b = Netns::new("pnb").unwrap();
    veth_pair(&a, "va", "10.204.1.1/24", &b, "vb", "10.204.1.2/24").unwrap();
    let bpffs = BpfFs::mount().unwrap();
    let pin_arg = bpffs.path().to_str().unwrap().to_owned();
    let args = ["--bpf-pin-dir", pin_arg.as_str()];

    // The master: keepalived in b, adverts every 100 ms.
    let master_conf = KeepalivedConfig::new()
        .global_def("vrrp_version 3")
        .instance(instance("vb", B_ADDR, A_ADDR, 200))
        .render();
    let mut master = Keepalived::start(&b, &master_conf).unwrap();
    master.wait_for_state("VI_1", "MASTER", WAIT).unwrap();

    // First agent: attaches and pins.
    let mut first = Agent::start_with_args(&a, &backup_conf(), &args).unwrap();
    first
        .wait_for_transition("VI_1", "BACKUP", 0, WAIT)
        .unwrap();
    first.wait_for_log("pinned=true", WAIT).unwrap();
    let dir = pin_dir(&bpffs, &a, "va");
    assert!(
        dir.join("link-xdp").exists(),
        "link pinned in {}",
        dir.display()
    );
    let first_prog = xdp_prog_id(&a, "va").expect("XDP attached");
    wait_until("adverts counted", WAIT, || {
        pinned_counter(&dir, Counter::AdvertsAccepted) >= 5
    });
    assert_eq!(pinned_counter(&dir, Counter::PassedNoAgent), 0);

    // A crash: no cleanup runs, the program stays attached, and once the
    // lease runs out (3 s) adverts go to the stack instead.
    first.kill().unwrap();
    assert_eq!(
        xdp_prog_id(&a, "va"),
        Some(first_prog),
        "still attached after SIGKILL"
    );
    wait_until("adverts passed without an agent", WAIT, || {
        pinned_counter(&dir, Counter::PassedNoAgent) >= 3
    });

    // A restarted agent takes the pinned link over: a new program on the
    // same attachment, counters carried on.
    let accepted_before = pinned_counter(&dir, Counter::AdvertsAccepted);
    let mut second = Agent::start_with_args(&a, &backup_conf(), &args).unwrap();
    second
        .wait_for_log("took over the pinned XDP link", WAIT)
        .unwrap();
    second
        .wait_for_transition("VI_1", "BACKUP", 0, WAIT)
        .unwrap();
    let second_prog = xdp_prog_id(&a, "va").expect("XDP attached");
    assert_ne!(second_prog, first_prog, "the program was replaced");
    let passed = pinned_counter(&dir, Counter::PassedNoAgent);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        pinned_counter(&dir, Counter::PassedNoAgent),
        passed,
        "the new agent consumes adverts again"
    );
    assert!(pinned_counter(&dir, Counter::AdvertsAccepted) > accepted_before);

    // A clean stop releases the lease at once: keepalived started in lbha's
    // place hears the master through the still attached program and stays
    // BACKUP (were adverts still swallowed, it would become a second master).
    second.stop(Duration::from_secs(5)).unwrap();
    assert_eq!(
        xdp_prog_id(&a, "va"),
        Some(second_prog),
        "still attached after SIGTERM"
    );
    let mut replacement = Keepalived::start(&a, &backup_conf()).unwrap();
    replacement.wait_for_state("VI_1", "BACKUP", WAIT).unwrap();
    // Master_Down_Interval is ~0.36 s at 100 ms adverts.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !replacement.log().contains("(VI_1) Entering MASTER STATE"),
        "keepalived did not hear the master:\n{}",
        replacement.log()
    );
    assert!(pinned_counter(&dir, Counter::PassedNoAgent) > passed + 5);
    replacement.stop(Duration::from_secs(5)).unwrap();

    // Detached for good on request.
    let out = run_command(
        a.command(agent_bin())
            .args(["detach", "--pin-dir", pin_arg.as_str()]),
        WAIT,
    )
    .unwrap();
    assert!(out.contains("unpinned"), "{out}");
    assert_eq!(xdp_prog_id(&a, "va"), None, "detached");
    assert!(!dir.exists());
}
