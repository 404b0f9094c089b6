//! The `haproxy` check end to end in the lab: lbha asks each load
//! balancer's HAProxy over its stats socket (`show info` within 200 ms,
//! frontend `fe` OPEN, backends with a server UP as a weight of -50).
//!
//! - a hung HAProxy (SIGSTOP) on the Master fails over;
//! - a frontend disabled over the stats socket fails over;
//! - every backend server down on both nodes fails nothing over (both
//!   lose the same weight: 150 against 50);
//! - ten reloads in a row under client load cause no transition and no
//!   failed request;
//! - with no socket configured, the check finds it from the running
//!   HAProxy (`-f` on its command line, `stats socket` in `global`) and a
//!   hang still fails over.

use std::time::Duration;

use lbha_lab::LabOptions;
use lbha_tests::{
    require_root,
    scenario::{LB1, LB2, LB2_MASTER_DOWN, MARGIN, Scenario, secs},
};

/// The check's interval in these tests, and its (default) timeout.
const CHECK_INTERVAL: Duration = Duration::from_millis(200);
const CHECK_TIMEOUT: Duration = Duration::from_millis(200);

fn options() -> LabOptions {
    LabOptions {
        haproxy_check: true,
        check_interval: CHECK_INTERVAL,
        ..LabOptions::default()
    }
}

/// lb2 became Master within a check run (interval + timeout) of `at`,
/// plus lb2's Master_Down_Interval (lb1 in Fault resigns, so Skew_Time
/// would do; the bound allows the whole interval) and scheduling margin.
fn assert_takeover_in_time(s: &Scenario, at: Duration, what: &str) {
    let fault = s.wait_transition(LB1, "FAULT", at, Duration::from_secs(5));
    assert_eq!(fault.reason, "tracked check failed");
    let master = s.wait_transition(LB2, "MASTER", at, Duration::from_secs(5));
    let took = master.at.saturating_sub(at);
    let bound = CHECK_INTERVAL + CHECK_TIMEOUT + LB2_MASTER_DOWN + MARGIN;
    assert!(
        took < bound,
        "{what}: lb2 Master only {} later (bound {bound:?})",
        secs(took)
    );
    eprintln!(
        "TIMING {}: {what} at {}; lb1 FAULT +{}ms; lb2 MASTER +{}ms",
        s.name,
        secs(at),
        fault.at.saturating_sub(at).as_millis(),
        took.as_millis()
    );
}

#[test]
fn hung_haproxy_on_master_fails_over() {
    if !require_root() {
        return;
    }
    let s = Scenario::start("haproxy-hang", "hchg", options());
    let at = s.lab.since_start();
    assert!(
        s.lab.signal_haproxy(LB1, libc::SIGSTOP) > 0,
        "no HAProxy on lb1"
    );
    assert_takeover_in_time(&s, at, "SIGSTOP of HAProxy on lb1");
    s.wait_assign(s.baseline, LB2, Duration::from_secs(10));
    // Resumed, lb1 is healthy again and takes the floating IP back.
    s.lab.signal_haproxy(LB1, libc::SIGCONT);
    s.wait_transition(LB1, "MASTER", at, Duration::from_secs(10));
    s.assert_settled_on(LB1);
}

#[test]
fn disabled_frontend_fails_over() {
    if !require_root() {
        return;
    }
    let s = Scenario::start("haproxy-frontend", "hcfe", options());
    let at = s.lab.since_start();
    s.lab
        .haproxy_cli(LB1, "disable frontend fe")
        .expect("disable frontend fe");
    assert_takeover_in_time(&s, at, "frontend fe disabled on lb1");
    s.assert_settled_on(LB2);
    let log = s.lab.lb_log(LB1);
    assert!(
        log.contains("why=frontend fe is PAUSED"),
        "lb1 logs why: {}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn backends_down_everywhere_fail_nothing_over() {
    if !require_root() {
        return;
    }
    let s = Scenario::start("haproxy-backends", "hcbe", options());
    let at = s.lab.since_start();
    s.lab.stop_webs();
    // Both HAProxys see their servers DOWN (inter 500 ms, fall 2), then
    // lbha's next run: the weight applies on both nodes.
    s.wait(
        Duration::from_secs(10),
        "backends down on both nodes",
        |s| {
            [LB1, LB2]
                .iter()
                .all(|&i| s.lab.lb_log(i).contains("check=haproxy:backends up=false"))
        },
    );
    // Several Master_Down_Intervals and check runs: nothing moves.
    std::thread::sleep(Duration::from_secs(2));
    for i in [LB1, LB2] {
        let moved: Vec<_> = s
            .lab
            .transitions(i)
            .into_iter()
            .filter(|t| t.at >= at)
            .collect();
        assert!(moved.is_empty(), "lb{} transitioned: {moved:?}", i + 1);
    }
    assert_eq!(s.lab.assigns().len(), s.baseline, "no assign");
    assert_eq!(s.state(LB1).as_deref(), Some("MASTER"));
}

#[test]
fn ten_reloads_under_load_change_nothing() {
    if !require_root() {
        return;
    }
    let s = Scenario::start("haproxy-reload", "hcrl", options());
    let at = s.lab.since_start();
    for _ in 0..10 {
        for i in [LB1, LB2] {
            s.lab.reload_haproxy(i).expect("reload HAProxy");
        }
        // Back to back, but each reload finishes its new worker first (as
        // `systemctl reload` waits for the master's readiness).
        std::thread::sleep(Duration::from_millis(300));
    }
    // Past the reload grace's worth of check runs.
    std::thread::sleep(Duration::from_secs(2));
    for i in [LB1, LB2] {
        let moved: Vec<_> = s
            .lab
            .transitions(i)
            .into_iter()
            .filter(|t| t.at >= at)
            .collect();
        assert!(moved.is_empty(), "lb{} transitioned: {moved:?}", i + 1);
        let log = s.lab.lb_log(i);
        assert!(
            !log.contains("check changed state"),
            "lb{}: a reload moved the check",
            i + 1
        );
    }
    let failed = s.failures_between(at, s.lab.since_start());
    assert!(failed.is_empty(), "failed client requests at {failed:?}");
    assert!(
        s.client().requests().iter().filter(|r| r.at >= at).count() > 20,
        "the client kept sending"
    );
    assert_eq!(s.lab.assigns().len(), s.baseline, "no assign");
}

#[test]
fn a_discovered_socket_sees_a_hang_too() {
    if !require_root() {
        return;
    }
    let s = Scenario::start(
        "haproxy-discover",
        "hcds",
        LabOptions {
            haproxy_discover: true,
            ..options()
        },
    );
    let socket = s.lab.haproxy_socket(LB1);
    let log = s.lab.lb_log(LB1);
    assert!(
        log.lines()
            .any(|l| l.contains("socket discovered") && l.contains(&socket.display().to_string())),
        "lb1 did not log discovering {}: {}",
        socket.display(),
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    let at = s.lab.since_start();
    assert!(
        s.lab.signal_haproxy(LB1, libc::SIGSTOP) > 0,
        "no HAProxy on lb1"
    );
    assert_takeover_in_time(&s, at, "SIGSTOP of HAProxy on lb1 (discovered socket)");
    s.lab.signal_haproxy(LB1, libc::SIGCONT);
    s.wait_transition(LB1, "MASTER", at, Duration::from_secs(10));
    s.assert_settled_on(LB1);
}
