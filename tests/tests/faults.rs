//! The fault suite: the lab (two droplets with HAProxy + lbha, the
//! DigitalOcean simulator routing the floating IP, a client) through what
//! goes wrong at 3 am. Each test ends with exactly one floating-IP holder,
//! equal to the VRRP Master, both agents alive, and a bounded number of
//! assigns (`Scenario::assert_settled_on`).

use std::time::Duration;

use lbha_lab::{LabOptions, VrrpPath, droplet_id};
use lbha_tests::{
    require_root,
    scenario::{LB1, LB2, Scenario, secs},
};

/// How long the long faults last (the issue's 60 s).
const FAULT_SECS: u64 = 60;

fn both(s: &Scenario, path: VrrpPath) {
    for i in [LB1, LB2] {
        s.lab
            .set_vrrp_path(i, path)
            .expect("changing the VRRP path");
    }
}

fn assert_agents_alive(s: &Scenario) {
    for i in [LB1, LB2] {
        assert_eq!(
            s.lab.signal_agent(i, 0),
            1,
            "{}: lbha on lb{} is not running",
            s.name,
            i + 1
        );
    }
}

/// The VRRP path is cut for a minute while both droplets still reach the
/// API: lb2 takes over (one assign), lb1 (higher priority, still Master)
/// takes the IP back (a second), then lb2 yields to it: at most two assigns,
/// not a ping-pong at every re-check. After the heal the IP is on the
/// Master with no further assign.
#[test]
fn vrrp_path_cut_while_both_reach_the_api() {
    if !require_root() {
        return;
    }
    let s = Scenario::start("vrrp cut", "fcut", LabOptions::default());
    let at = s.lab.since_start();
    both(&s, VrrpPath::Cut);
    s.wait_transition(LB2, "MASTER", at, Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(FAULT_SECS));
    let during = s.assigns_from(s.baseline);
    assert!(
        during.len() <= 2,
        "{}: {} assigns while the VRRP path was cut: {:?}",
        s.name,
        during.len(),
        s.describe(&during)
    );
    both(&s, VrrpPath::Intact);
    s.wait_transition(LB2, "BACKUP", at, Duration::from_secs(5));
    let settled = s.assert_settled_on(LB1);
    assert!(
        settled - s.baseline <= 2,
        "{}: {:?}",
        s.name,
        s.describe(&s.assigns_from(s.baseline))
    );
    assert_agents_alive(&s);
}

/// The same cut with the heartbeat over the public network: lb2 sees lb1
/// alive and never takes over. Zero assigns.
#[test]
fn vrrp_path_cut_with_a_heartbeat_moves_nothing() {
    if !require_root() {
        return;
    }
    let opts = LabOptions {
        heartbeat: true,
        ..LabOptions::default()
    };
    let s = Scenario::start("vrrp cut, heartbeat", "fcuthb", opts);
    let at = s.lab.since_start();
    both(&s, VrrpPath::Cut);
    std::thread::sleep(Duration::from_secs(FAULT_SECS));
    assert!(
        s.transition_to(LB2, "MASTER", at).is_none(),
        "{}: lb2 took over although lb1's heartbeat said it was alive",
        s.name
    );
    assert!(
        s.lab.lb_log(LB2).contains("the VRRP path is partitioned"),
        "{}: lb2 did not report the partition",
        s.name
    );
    both(&s, VrrpPath::Intact);
    let settled = s.assert_settled_on(LB1);
    assert_eq!(settled, s.baseline, "{}: no assign at all", s.name);
    assert_agents_alive(&s);
}

/// The same cut over IPv6: VRRPv3 between the private IPv6 addresses, the
/// heartbeat over the public IPv4 network (version 2: its records carry
/// the instance's family). lb2 hears lb1's IPv6 instance alive and never
/// takes over; the virtual IPv6 and both DigitalOcean addresses stay.
/// Zero assigns. (A false takeover would come within a Master_Down_Interval,
/// about 0.35 s: 10 s of cut show it.)
#[test]
fn ipv6_vrrp_path_cut_with_a_heartbeat_moves_nothing() {
    if !require_root() {
        return;
    }
    let opts = LabOptions {
        heartbeat: true,
        dual_stack: true,
        vrrp_ipv6: true,
        ..LabOptions::default()
    };
    let s = Scenario::start_dual_stack("ipv6 vrrp cut, heartbeat", "fcut6h", opts);
    let v6_before = s.lab.assigns_v6().len();
    let at = s.lab.since_start();
    both(&s, VrrpPath::Cut);
    std::thread::sleep(Duration::from_secs(10));
    assert!(
        s.transition_to(LB2, "MASTER", at).is_none(),
        "{}: lb2 took over although lb1's heartbeat said its IPv6 instance was alive",
        s.name
    );
    assert!(
        s.lab.lb_log(LB2).contains("the VRRP path is partitioned"),
        "{}: lb2 did not report the partition (is the IPv6 VRRP path cut?)",
        s.name
    );
    assert!(
        s.lab.holds_vip6(LB1).unwrap() && !s.lab.holds_vip6(LB2).unwrap(),
        "{}: the virtual IPv6 stays on lb1 only",
        s.name
    );
    both(&s, VrrpPath::Intact);
    let settled = s.assert_settled_on(LB1);
    assert_eq!(settled, s.baseline, "{}: no assign at all", s.name);
    assert_eq!(
        s.lab.assigns_v6().len(),
        v6_before,
        "{}: no IPv6 assign at all",
        s.name
    );
    assert_agents_alive(&s);
}

/// HAProxy dies on the Master and the API answers 503 for the next 20 s:
/// lb2 becomes Master at once and keeps retrying within its deadline (and
/// again at its re-checks); the IP moves once the API is back. One assign.
#[test]
fn api_503_for_20s_from_the_moment_haproxy_dies() {
    if !require_root() {
        return;
    }
    let s = Scenario::start("api 503", "f503", LabOptions::default());
    s.lab
        .sim_faults(r#"{"fail_5xx": 4294967295, "fail_5xx_status": 503}"#)
        .expect("faulting the API");
    let at = s.lab.since_start();
    assert!(s.lab.kill_haproxy(LB1) > 0);
    s.wait_transition(LB2, "MASTER", at, Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(20));
    assert!(
        s.assigns_from(s.baseline).is_empty(),
        "nothing got through the 503s"
    );
    s.lab.reset_faults().expect("healing the API");
    let assign = s.one_assign(s.baseline, LB2, Duration::from_secs(30));
    eprintln!(
        "TIMING {}: API back at {}; assign requested +{}ms",
        s.name,
        secs(at + Duration::from_secs(20)),
        assign
            .1
            .saturating_sub(at + Duration::from_secs(20))
            .as_millis()
    );
    let settled = s.assert_settled_on(LB2);
    assert_eq!(settled, s.baseline + 1);
    assert_agents_alive(&s);
}

/// The Master's agent freezes for 3 s (SIGSTOP: a stalled VM, a long GC
/// elsewhere on the host): lb2 takes over; when lb1 thaws it preempts, hears
/// lb2's adverts and takes the IP back at once. Two assigns, the IP on lb1.
#[test]
fn master_agent_frozen_for_3s() {
    if !require_root() {
        return;
    }
    let s = Scenario::start("freeze", "ffreeze", LabOptions::default());
    let at = s.lab.since_start();
    assert_eq!(s.lab.signal_agent(LB1, libc::SIGSTOP), 1);
    s.wait_transition(LB2, "MASTER", at, Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.lab.signal_agent(LB1, libc::SIGCONT), 1);
    s.wait_transition(LB2, "BACKUP", at, Duration::from_secs(5));
    let assigns = s.wait_assign(s.baseline + 1, LB1, Duration::from_secs(10));
    assert!(
        assigns.len() <= 1,
        "{}: {:?}",
        s.name,
        s.describe(&s.assigns_from(s.baseline))
    );
    let settled = s.assert_settled_on(LB1);
    assert!(
        settled - s.baseline <= 2,
        "{:?}",
        s.describe(&s.assigns_from(s.baseline))
    );
    assert_agents_alive(&s);
}

/// One advert in five lost for a minute. A false takeover can happen by the
/// RFC's timing (three adverts in a row lost); each one must end with the
/// IP back on lb1: exactly two assigns per false takeover, no ping-pong.
#[test]
fn one_advert_in_five_lost_for_60s() {
    if !require_root() {
        return;
    }
    let s = Scenario::start("20% loss", "floss", LabOptions::default());
    let at = s.lab.since_start();
    s.lab
        .set_vrrp_path(LB1, VrrpPath::LoseOneIn(5))
        .expect("thinning lb1's adverts");
    std::thread::sleep(Duration::from_secs(FAULT_SECS));
    s.lab.set_vrrp_path(LB1, VrrpPath::Intact).unwrap();
    // Adverts lost in the last Master_Down_Interval before the heal can
    // still start a takeover after it: let that happen (and be counted)
    // before asking whether the pair settled.
    std::thread::sleep(Duration::from_secs(1));
    let settled = s.assert_settled_on(LB1);
    let takeovers = s
        .lab
        .transitions(LB2)
        .into_iter()
        .filter(|t| t.to == "MASTER" && t.at >= at)
        .count();
    eprintln!(
        "TIMING {}: {takeovers} false takeover(s) in {FAULT_SECS} s; {} assigns",
        s.name,
        settled - s.baseline
    );
    assert!(
        settled - s.baseline <= 2 * takeovers,
        "{}: {} assigns for {takeovers} takeovers: {:?}",
        s.name,
        settled - s.baseline,
        s.describe(&s.assigns_from(s.baseline))
    );
    assert_agents_alive(&s);
}

/// 20 SIGHUPs in 10 s with the file unchanged: nothing happens.
#[test]
fn twenty_sighups_with_an_unchanged_file() {
    if !require_root() {
        return;
    }
    let s = Scenario::start("sighup storm", "fhup", LabOptions::default());
    let at = s.lab.since_start();
    for _ in 0..20 {
        for i in [LB1, LB2] {
            assert_eq!(s.lab.signal_agent(i, libc::SIGHUP), 1);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for i in [LB1, LB2] {
        let changed = s
            .lab
            .transitions(i)
            .into_iter()
            .filter(|t| t.at >= at)
            .count();
        assert_eq!(changed, 0, "{}: lb{} changed state", s.name, i + 1);
    }
    let settled = s.assert_settled_on(LB1);
    assert_eq!(settled, s.baseline, "{}: no assign", s.name);
    assert_agents_alive(&s);
}

/// A reload the host cannot run (an unknown `script_user` on the Master):
/// refused, lb1 stays Master, nothing moves; the fixed file then applies.
#[test]
fn a_bad_reload_on_the_master_keeps_it_serving() {
    if !require_root() {
        return;
    }
    let s = Scenario::start("bad reload", "fbadhup", LabOptions::default());
    let at = s.lab.since_start();
    let path = s.lab.lbha_config_path(LB1);
    let good = std::fs::read_to_string(&path).unwrap();
    let bad = good.replacen(
        "[global]",
        "[global]\nscript_user = \"lbha-no-such-user\"",
        1,
    );
    std::fs::write(&path, &bad).unwrap();
    assert_eq!(s.lab.signal_agent(LB1, libc::SIGHUP), 1);
    s.wait(Duration::from_secs(10), "the refusal", |s| {
        s.lab.lb_log(LB1).contains("configuration not reloaded")
    });
    std::thread::sleep(Duration::from_secs(1));
    for i in [LB1, LB2] {
        assert!(
            s.lab.transitions(i).iter().all(|t| t.at < at),
            "{}: lb{} changed state",
            s.name,
            i + 1
        );
    }
    std::fs::write(&path, &good).unwrap();
    assert_eq!(s.lab.signal_agent(LB1, libc::SIGHUP), 1);
    let settled = s.assert_settled_on(LB1);
    assert_eq!(settled, s.baseline);
    assert_eq!(s.lab.holder(), Some(droplet_id(LB1)));
    assert_agents_alive(&s);
}

/// The metadata service lags the API by 5 s after an assign (as
/// DigitalOcean's does by seconds): the new Master's re-checks hear "not
/// ours" from metadata meanwhile, and ask the API before assigning again.
/// One assign.
#[test]
fn metadata_lagging_the_api_by_5s() {
    if !require_root() {
        return;
    }
    let s = Scenario::start("metadata lag", "fmdlag", LabOptions::default());
    s.lab
        .sim_faults(r#"{"metadata_lag_ms": 5000}"#)
        .expect("delaying metadata");
    let at = s.lab.since_start();
    assert!(s.lab.kill_haproxy(LB1) > 0);
    s.wait_transition(LB2, "MASTER", at, Duration::from_secs(5));
    s.one_assign(s.baseline, LB2, Duration::from_secs(10));
    // Past the lag, with three of lb2's 2 s re-checks inside it.
    std::thread::sleep(Duration::from_secs(7));
    let settled = s.assert_settled_on(LB2);
    assert_eq!(
        settled,
        s.baseline + 1,
        "{}: {:?}",
        s.name,
        s.describe(&s.assigns_from(s.baseline))
    );
    assert_agents_alive(&s);
}
