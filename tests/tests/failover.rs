//! End-to-end failover in the lab (`lbha-lab`): a client fetching the
//! floating IP, the DigitalOcean simulator routing it to its holder, two
//! load balancers running HAProxy + lbha, three web servers. Each test breaks
//! something (HAProxy, lbha, the network, the API, the metadata service) and
//! checks what an operator cares about:
//!
//! - the right node becomes Master, within the VRRP timers;
//! - exactly one assign action per failover (the simulator records only the
//!   requests that got through, so retries do not count), and no assign
//!   ping-pong afterwards;
//! - the floating IP ends on a healthy Master, and there is one Master;
//! - the client's outage is bounded and happens only during the failover;
//! - the API token never appears in lbha's logs.
//!
//! Every test builds its own lab (distinct tag), so they run in parallel.
//! Timings are printed as `TIMING` lines (`-- --nocapture` shows them).
//! The lab's defaults: VRRPv3 every 100 ms, assign actions completing after
//! 300 ms, a Master re-checking its hold every 2 s.

use std::time::Duration;

use lbha_lab::{ApiPath, LabOptions, REMOTE_API_DELAY, droplet_id};
use lbha_tests::{
    require_root,
    scenario::{
        ASSIGN_ENDPOINT, HOLDER_ENDPOINT, LB1, LB2, LB2_MASTER_DOWN, MARGIN, OUTAGE_BOUND,
        Scenario, processes, secs,
    },
};

/// 1. HAProxy killed on the Master: lb1 goes FAULT at once (pidfd), lb2
///    takes over within Skew_Time of lb1's resignation, one assign.
#[test]
fn haproxy_killed_on_master_fails_over_to_lb2() {
    if !require_root() {
        return;
    }
    let s = Scenario::start("haproxy-kill", "fohk", LabOptions::default());
    let (at, master, assign) = s.kill_haproxy_on_lb1(Duration::from_secs(10));
    // lb1 resigned (priority 0): lb2 need not wait Master_Down_Interval.
    assert!(
        master.at.checked_sub(at).unwrap() < LB2_MASTER_DOWN + MARGIN,
        "lb2 Master only {} after the kill",
        secs(master.at.checked_sub(at).unwrap())
    );
    let completed = assign.2.expect("completed");
    s.timing("HAProxy SIGKILL on lb1", at, &master, &assign);
    s.assert_settled_on(LB2);
    assert_eq!(s.lab.assigns().len(), s.baseline + 1);

    let longest = s.outage_within(at.saturating_sub(Duration::from_millis(500)), OUTAGE_BOUND);
    // Requests fail only while the route still points at lb1 (and a request
    // in flight at the kill).
    let outside: Vec<_> = s
        .failures_between(s.client_ready, Duration::MAX)
        .into_iter()
        .filter(|t| {
            *t < at.saturating_sub(Duration::from_millis(450))
                || *t > completed + Duration::from_millis(200)
        })
        .collect();
    assert!(
        outside.is_empty(),
        "client failures outside the failover window ({}–{}): {outside:?}",
        secs(at),
        secs(completed)
    );
    eprintln!("TIMING {}: longest outage {}", s.name, secs(longest));
}

/// 2. HAProxy restarted on lb1 after a failover: lb1 recovers from FAULT,
///    preempts lb2, and pulls the floating IP back with one assign.
#[test]
fn haproxy_restart_fails_back_to_lb1() {
    if !require_root() {
        return;
    }
    let s = Scenario::start("failback", "fofb", LabOptions::default());
    let (at, master, assign) = s.kill_haproxy_on_lb1(Duration::from_secs(10));
    s.timing("HAProxy SIGKILL on lb1", at, &master, &assign);
    s.wait(Duration::from_secs(5), "lb2 holder", |s| {
        s.lab.holder() == Some(droplet_id(LB2))
    });

    let before = s.lab.assigns().len();
    let at = s.lab.since_start();
    s.lab.start_haproxy(LB1).expect("restarting HAProxy on lb1");
    // The process check rescans every 2 s for a restarted HAProxy.
    let backup = s.wait_transition(LB1, "BACKUP", at, Duration::from_secs(6));
    assert_eq!(backup.reason, "tracked checks recovered");
    let master = s.wait_transition(LB1, "MASTER", at, Duration::from_secs(5));
    assert!(
        master.at.checked_sub(backup.at).unwrap() < Duration::from_millis(330) + MARGIN,
        "lb1 preempted only {} after recovering",
        secs(master.at.checked_sub(backup.at).unwrap())
    );
    let lb2_backup = s.wait_transition(LB2, "BACKUP", at, Duration::from_secs(5));
    assert_eq!(lb2_backup.reason, "higher priority master");
    let assign = s.one_assign(before, LB1, Duration::from_secs(10));
    s.timing("HAProxy restarted on lb1", at, &master, &assign);
    s.assert_settled_on(LB1);
    assert_eq!(s.lab.assigns().len(), before + 1);
    // Both nodes serve during a failback: the client barely notices.
    let longest = s.outage_within(at, Duration::from_millis(500));
    eprintln!(
        "TIMING {}: failback recovered +{}ms, longest outage {}",
        s.name,
        backup.at.saturating_sub(at).as_millis(),
        secs(longest)
    );
}

/// 3. lbha itself SIGKILLed on the Master (HAProxy keeps running): lb2 takes
///    over after Master_Down_Interval and assigns once; the restarted lbha
///    preempts and pulls the IP back once.
#[test]
fn lbha_killed_on_master_fails_over_and_back() {
    if !require_root() {
        return;
    }
    let s = Scenario::start("lbha-kill", "fokl", LabOptions::default());
    let before = s.lab.assigns().len();
    let (at, master) = s.kill_agent_on_lb1(MARGIN);
    let assign = s.one_assign(before, LB2, Duration::from_secs(10));
    s.timing("lbha SIGKILL on lb1", at, &master, &assign);
    assert_eq!(processes(&s.lab, LB1, "lbha-agent"), 0, "lbha still on lb1");
    assert!(
        processes(&s.lab, LB1, "haproxy") > 0,
        "HAProxy died with lbha on lb1"
    );
    s.wait(Duration::from_secs(5), "lb2 holder", |s| {
        s.lab.holder() == Some(droplet_id(LB2))
    });
    // HAProxy on lb1 kept serving until the IP moved.
    let failed = s.failures_between(at, Duration::MAX);
    assert!(
        failed.len() <= 2,
        "client failures although HAProxy kept running: {failed:?}"
    );

    // A supervisor restarts lbha: it preempts lb2 and reclaims the IP.
    let before = s.lab.assigns().len();
    let at = s.lab.since_start();
    s.lab.start_agent(LB1).expect("restarting lbha on lb1");
    let master = s.wait_transition(LB1, "MASTER", at, Duration::from_secs(8));
    let assign = s.one_assign(before, LB1, Duration::from_secs(10));
    s.timing("lbha restarted on lb1", at, &master, &assign);
    s.assert_settled_on(LB1);
    assert_eq!(s.lab.assigns().len(), before + 1);
    let failed = s.failures_between(at, Duration::MAX);
    assert!(
        failed.len() <= 2,
        "client failures during failback: {failed:?}"
    );
}

/// Tighter than MARGIN: a Backup that trusted a silence report which never
/// comes wakes only for other reasons (telemetry, checks) or at the 1 s
/// backstop, mostly well past this.
const NO_TIMER_MARGIN: Duration = Duration::from_millis(150);

/// 3b. The same crash with the XDP program without the silence timer (what
///     kernels before 5.15 run): nothing in the kernel reports lb1's
///     silence, so lb2 must wake at its own master-down deadlines (reading
///     the kernel's last advert to stay Backup while lb1 lives) and still
///     take over within Master_Down_Interval, not a backstop later.
#[test]
fn lbha_killed_on_master_fails_over_in_time_with_the_timerless_program() {
    if !require_root() {
        return;
    }
    let options = LabOptions {
        extra_instance_toml: "receive_path = \"xdp-no-timer\"".into(),
        ..LabOptions::default()
    };
    let s = Scenario::start("lbha-kill-notimer", "fokn", options);
    // A healthy master for a while: lb2 stays Backup on the map alone (a
    // Backup acting on its deadlines without it would take over, and assign).
    let settled = s.lab.assigns().len();
    std::thread::sleep(Duration::from_secs(2));
    s.assert_settled_on(LB1);
    let before = s.lab.assigns().len();
    assert_eq!(before, settled, "lb2 took over from a healthy master");
    let (at, master) = s.kill_agent_on_lb1(NO_TIMER_MARGIN);
    let assign = s.one_assign(before, LB2, Duration::from_secs(10));
    s.timing(
        "lbha SIGKILL on lb1, no-timer program",
        at,
        &master,
        &assign,
    );
}

/// 4. lb1 cut off from everything (its links down) while still running:
///    lb2 takes over and assigns. lb1 either stays Master, unable to reach
///    the API (split brain), or notices its links are down (FAULT); either
///    way it must not assign while cut off. On reconnection lb1 wins the
///    election back (higher priority) and the IP ends on it, with one more
///    assign and no ping-pong.
#[test]
fn isolated_master_split_brain_heals() {
    if !require_root() {
        return;
    }
    let s = Scenario::start("isolation", "foiso", LabOptions::default());
    let at = s.lab.since_start();
    s.lab.isolate_lb(LB1, true).expect("isolating lb1");
    let master = s.wait_transition(LB2, "MASTER", at, Duration::from_secs(5));
    assert_eq!(master.reason, "master down");
    assert!(
        master.at.checked_sub(at).unwrap() < LB2_MASTER_DOWN + MARGIN,
        "lb2 Master only {} after the isolation",
        secs(master.at.checked_sub(at).unwrap())
    );
    let assign = s.one_assign(s.baseline, LB2, Duration::from_secs(10));
    s.timing("lb1 isolated", at, &master, &assign);
    let longest = s.outage_within(at.saturating_sub(Duration::from_millis(500)), OUTAGE_BOUND);
    // Long enough for a Master lb1's re-check (2 s) to run into the dead
    // network.
    std::thread::sleep(Duration::from_secs(3));
    let isolated_state = s.state(LB1).unwrap_or_default();
    eprintln!(
        "TIMING {}: longest outage {}; lb1 while isolated: {isolated_state}",
        s.name,
        secs(longest)
    );
    assert!(
        isolated_state == "MASTER" || isolated_state == "FAULT",
        "lb1 while isolated: {isolated_state}"
    );
    assert_eq!(
        s.assigns_from(s.baseline).len(),
        1,
        "an assign from the isolated node?"
    );
    assert_eq!(s.lab.holder(), Some(droplet_id(LB2)));

    let back = s.lab.since_start();
    s.lab.isolate_lb(LB1, false).expect("reconnecting lb1");
    let lb2_backup = s.wait_transition(LB2, "BACKUP", back, Duration::from_secs(5));
    assert_eq!(lb2_backup.reason, "higher priority master");
    // A Master lb1 gets through on its next API retry (backoff up to 5 s);
    // a FAULT one recovers, preempts, and assigns.
    let assigns = s.wait_assign(s.baseline + 1, LB1, Duration::from_secs(15));
    let settled = s.assert_settled_on(LB1);
    let all = s.assigns_from(s.baseline);
    let back_assign = assigns[0];
    eprintln!(
        "TIMING {}: reconnected at {}; lb2 BACKUP +{}ms; assign to lb1 requested +{}ms; assigns since the isolation: {:?}",
        s.name,
        secs(back),
        lb2_backup.at.saturating_sub(back).as_millis(),
        back_assign.1.saturating_sub(back).as_millis(),
        s.describe(&all)
    );
    assert_eq!(
        assigns.len(),
        1,
        "expected one assign back to lb1: {:?}",
        s.describe(&assigns)
    );
    assert_eq!(settled, s.baseline + 2, "{:?}", s.describe(&all));
    let longest = s.outage_within(back, OUTAGE_BOUND);
    eprintln!(
        "TIMING {}: longest outage after reconnection {}",
        s.name,
        secs(longest)
    );
}

/// 5. The API answers 5xx for a while during a failover: lbha retries with
///    backoff and the assign goes through once the API recovers. The
///    simulator records only the request that got through. The new Master
///    asks the API who holds the IP before it assigns (metadata lags an
///    assign on DigitalOcean), so the failures meet that look-up or the
///    assign.
#[test]
fn api_5xx_during_failover_is_retried() {
    if !require_root() {
        return;
    }
    const FAILURES: u64 = 4;
    let s = Scenario::start("api-5xx", "fo5xx", LabOptions::default());
    s.lab
        .sim_faults(&format!(r#"{{"fail_5xx":{FAILURES}}}"#))
        .expect("injecting 5xx");
    // Backoff with full jitter: at most 0.25 + 0.5 + 1 + 2 s before the fifth try.
    let (at, master, assign) = s.kill_haproxy_on_lb1(Duration::from_secs(15));
    s.timing("HAProxy SIGKILL on lb1, API failing", at, &master, &assign);
    let served_5xx: u64 = [ASSIGN_ENDPOINT, HOLDER_ENDPOINT]
        .iter()
        .map(|endpoint| s.api_calls(endpoint, "500") + s.api_calls(endpoint, "503"))
        .sum();
    assert_eq!(
        served_5xx, FAILURES,
        "every 5xx went to lb2's look-up or assign"
    );
    assert_eq!(s.api_calls(ASSIGN_ENDPOINT, "201"), 1 + s.baseline as u64);
    let retries = s
        .lab
        .lb_log(LB2)
        .matches("DigitalOcean API attempt failed; retrying")
        .count();
    assert_eq!(retries as u64, FAILURES, "lb2 logged each retry");
    s.assert_settled_on(LB2);
    assert_eq!(s.lab.assigns().len(), s.baseline + 1);
    s.outage_within(at, Duration::from_secs(6));
}

/// 6. A 429 storm during a failover: every retry (of the look-up before the
///    assign, or of the assign) waits the Retry-After the API asked for,
///    then the assign goes through, once.
#[test]
fn rate_limited_api_is_retried_after_retry_after() {
    if !require_root() {
        return;
    }
    const LIMITED: u64 = 3;
    const RETRY_AFTER: Duration = Duration::from_secs(1);
    let s = Scenario::start("api-429", "fo429", LabOptions::default());
    s.lab
        .sim_faults(&format!(
            r#"{{"rate_limit":{LIMITED},"retry_after_secs":{}}}"#,
            RETRY_AFTER.as_secs()
        ))
        .expect("injecting 429s");
    let (at, master, assign) = s.kill_haproxy_on_lb1(Duration::from_secs(15));
    s.timing(
        "HAProxy SIGKILL on lb1, API rate limiting",
        at,
        &master,
        &assign,
    );
    assert_eq!(
        s.api_calls(ASSIGN_ENDPOINT, "429") + s.api_calls(HOLDER_ENDPOINT, "429"),
        LIMITED
    );
    assert_eq!(s.api_calls(ASSIGN_ENDPOINT, "201"), 1 + s.baseline as u64);
    // The accepted request came no sooner than LIMITED Retry-Afters after
    // the first one (sent right after lb2 became Master). Log and simulator
    // clocks differ by a few ms.
    let waited = assign.1.saturating_sub(master.at);
    assert!(
        waited + Duration::from_millis(50) >= RETRY_AFTER * LIMITED as u32,
        "the assign went through {} after lb2 became Master, before {LIMITED} × Retry-After",
        secs(waited)
    );
    // Not much more: the waits plus the requests' own time (on a loaded
    // CI machine the simulator took up to 0.5 s to answer one; a
    // resignation's takeover also asks who holds the IP before assigning).
    assert!(
        waited < RETRY_AFTER * LIMITED as u32 + Duration::from_secs(2),
        "the assign went through only {} after lb2 became Master",
        secs(waited)
    );
    let log = s.lab.lb_log(LB2);
    let waits = log
        .lines()
        .filter(|l| l.contains("attempt failed; retrying") && l.contains("retry_in_ms=1000"))
        .count();
    assert_eq!(waits as u64, LIMITED, "lb2 waited Retry-After each time");
    eprintln!(
        "TIMING {}: assign accepted {} after lb2 became Master",
        s.name,
        secs(waited)
    );
    s.assert_settled_on(LB2);
    assert_eq!(s.lab.assigns().len(), s.baseline + 1);
}

/// Metadata down during a failover to lb2, which must go by the API alone
/// (asked every check anyway: it decides who holds the IP). lbha learns its droplet id from metadata only
/// when it first needs it as Master (floating_ip.rs), so lb2 must know it
/// already: `configured` sets `droplet_id` in lb2's config; otherwise lb2
/// learns it in an earlier failover and failback, before metadata goes down.
fn metadata_down_failover(name: &'static str, tag: &str, configured: bool) {
    let opts = LabOptions {
        extra_floating_ip_toml: if configured {
            "droplet_id = {droplet_id}".into()
        } else {
            String::new()
        },
        ..LabOptions::default()
    };
    let s = Scenario::start(name, tag, opts);
    if !configured {
        let (at, master, assign) = s.kill_haproxy_on_lb1(Duration::from_secs(10));
        s.timing("priming: HAProxy SIGKILL on lb1", at, &master, &assign);
        let before = s.lab.assigns().len();
        let back = s.lab.since_start();
        s.lab.start_haproxy(LB1).expect("restarting HAProxy on lb1");
        s.wait_transition(LB1, "MASTER", back, Duration::from_secs(8));
        s.one_assign(before, LB1, Duration::from_secs(10));
        s.wait(Duration::from_secs(5), "lb1 holder", |s| {
            s.lab.holder() == Some(droplet_id(LB1)) && s.state(LB2).as_deref() == Some("BACKUP")
        });
        assert!(
            s.lab
                .lb_log(LB2)
                .contains("learned our droplet id from metadata"),
            "lb2 learned its droplet id while Master"
        );
    }
    s.lab
        .sim_faults(r#"{"metadata_down":true}"#)
        .expect("taking metadata down");
    let holder_calls = s.api_calls(HOLDER_ENDPOINT, "200");
    let (at, master, assign) = s.kill_haproxy_on_lb1(Duration::from_secs(10));
    s.timing(
        "HAProxy SIGKILL on lb1, metadata down",
        at,
        &master,
        &assign,
    );
    assert!(
        s.api_calls(HOLDER_ENDPOINT, "200") > holder_calls,
        "lb2 asked the API who holds the IP"
    );
    let log = s.lab.lb_log(LB2);
    assert!(
        log.contains("metadata unavailable; the API alone says who holds the floating IP"),
        "lb2 went by the API alone"
    );
    let state = s.lab.sim_state().expect("simulator state");
    assert!(
        state["metadata_calls"]
            .as_object()
            .is_some_and(|m| m.values().any(|by| by["503"].as_u64().unwrap_or(0) > 0)),
        "metadata answered 503: {}",
        state["metadata_calls"]
    );
    s.assert_settled_on(LB2);
    s.outage_within(at, OUTAGE_BOUND);
    s.lab.reset_faults().expect("resetting faults");
}

/// 7a. Metadata down, lb2's droplet id configured: lb2 has never talked to
///     metadata and still fails over.
#[test]
fn metadata_down_failover_with_configured_droplet_id() {
    if !require_root() {
        return;
    }
    metadata_down_failover("metadata-down-configured", "fomdc", true);
}

/// 7b. Metadata down, no droplet id configured: works because lb2 learned
///     (and cached) its id in an earlier mastership while metadata was up.
#[test]
fn metadata_down_failover_with_cached_droplet_id() {
    if !require_root() {
        return;
    }
    metadata_down_failover("metadata-down-cached", "fomd", false);
}

/// 8. The Master fails again while its own assign is still in progress (a
///    flapping HAProxy during a failback). The new Master finds the IP
///    still on its droplet (the pending action has not completed), so it
///    must notice the pending move and reclaim the IP as soon as the action
///    completes, not a whole re-check interval later.
#[test]
fn master_failing_during_its_own_assign() {
    if !require_root() {
        return;
    }
    const ACTION_DELAY: Duration = Duration::from_millis(1500);
    let opts = LabOptions {
        action_delay: ACTION_DELAY,
        // Closer to production (10 s), far enough from the action's end to
        // tell "reacted to the completion" from "the next re-check".
        recheck_interval: Duration::from_secs(6),
        ..LabOptions::default()
    };
    let s = Scenario::start("flap-during-assign", "foflp", opts);
    let (at, master, assign) = s.kill_haproxy_on_lb1(Duration::from_secs(10));
    s.timing("HAProxy SIGKILL on lb1", at, &master, &assign);
    s.wait(Duration::from_secs(10), "lb2 holder, agents idle", |s| {
        s.lab.holder() == Some(droplet_id(LB2)) && s.agents_idle()
    });

    // Failback starts: lb1 preempts and asks for the IP ...
    let before = s.lab.assigns().len();
    let back = s.lab.since_start();
    s.lab.start_haproxy(LB1).expect("restarting HAProxy on lb1");
    s.wait(Duration::from_secs(8), "lb1's assign requested", |s| {
        s.assigns_from(before)
            .iter()
            .any(|a| a.0 == droplet_id(LB1))
    });
    // ... and its HAProxy dies again while the action is in progress.
    let at = s.lab.since_start();
    assert!(s.lab.kill_haproxy(LB1) > 0);
    let lb1_assign = s.assigns_from(before)[0];
    assert_eq!(lb1_assign.2, None, "lb1's assign completed too soon");
    let master = s.wait_transition(LB2, "MASTER", at, Duration::from_secs(5));
    let assigns = s.wait_assign(before + 1, LB2, Duration::from_secs(15));
    let reclaim = assigns[0];
    let lb1_done = s.assigns_from(before)[0].2.expect("lb1's assign completed");
    eprintln!(
        "TIMING {}: failback started at {}; lb1 HAProxy killed again at {}; lb2 MASTER +{}ms; lb1's assign completed +{}ms; lb2's reclaim requested +{}ms, completed +{}ms",
        s.name,
        secs(back),
        secs(at),
        master.at.saturating_sub(at).as_millis(),
        lb1_done.saturating_sub(at).as_millis(),
        reclaim.1.saturating_sub(at).as_millis(),
        reclaim.2.unwrap_or_default().saturating_sub(at).as_millis(),
    );
    // The reclaim should start once lb1's action is done (or be queued
    // behind it), not a re-check interval (6 s here, 10 s by default) later.
    assert!(
        reclaim.1 < lb1_done + Duration::from_secs(1),
        "lb2 reclaimed the IP {} after lb1's assign moved it to a dead HAProxy",
        secs(reclaim.1.saturating_sub(lb1_done))
    );
    s.assert_settled_on(LB2);
    s.outage_within(at, ACTION_DELAY + OUTAGE_BOUND);
}

/// The last `seq` in the simulator's request log (-1 when empty).
fn last_seq(requests: &[serde_json::Value]) -> i64 {
    requests
        .iter()
        .filter_map(|r| r["seq"].as_i64())
        .max()
        .unwrap_or(-1)
}

/// The real API path: HTTPS (the simulator's lab CA, trusted through
/// `ca_file`) through a relay 15 ms each way. The simulator first closes
/// every API connection (as DigitalOcean's side drops idle ones); lb2's
/// keep-alive opens one while Backup, and the takeover's assign goes out on
/// that connection, one round trip instead of three.
#[test]
fn takeover_assigns_over_https_on_the_connection_kept_warm_while_backup() {
    if !require_root() {
        return;
    }
    let keepalive = Duration::from_millis(500);
    let s = Scenario::start(
        "remote-api-warm",
        "forw",
        LabOptions {
            api: ApiPath::Remote {
                delay: REMOTE_API_DELAY,
            },
            keepalive_interval: Some(keepalive),
            ..LabOptions::default()
        },
    );
    let before_close = last_seq(&s.lab.sim_requests().unwrap());
    s.lab.close_api_connections().unwrap();
    std::thread::sleep(keepalive * 3);
    let before_kill = last_seq(&s.lab.sim_requests().unwrap());
    let (at, master, assign) = s.kill_haproxy_on_lb1(Duration::from_secs(10));
    s.timing(
        "HAProxy SIGKILL on lb1, API over HTTPS 15 ms away",
        at,
        &master,
        &assign,
    );
    s.assert_settled_on(LB2);

    let requests = s.lab.sim_requests().unwrap();
    assert!(
        requests.iter().all(|r| r["tls"] == true),
        "every API request over HTTPS"
    );
    let to_lb2 = format!("\"droplet_id\":{}", droplet_id(LB2));
    let accepted = requests
        .iter()
        .find(|r| {
            r["seq"].as_i64() > Some(before_kill)
                && r["method"] == "POST"
                && r["status"] == "201"
                && r["body"].as_str().is_some_and(|b| b.contains(&to_lb2))
        })
        .expect("lb2's assign accepted");
    // The connection it came on carried a request after the close and
    // before the kill: lb2's keep-alive while Backup.
    let warmed_by: Vec<_> = requests
        .iter()
        .filter(|r| {
            r["connection"] == accepted["connection"]
                && r["seq"].as_i64() > Some(before_close)
                && r["seq"].as_i64() <= Some(before_kill)
        })
        .collect();
    assert!(
        !warmed_by.is_empty()
            && warmed_by
                .iter()
                .all(|r| r["method"] == "GET" && r["status"] == "200"),
        "lb2's assign on connection {} was not kept warm while Backup: {warmed_by:?}\n{}",
        accepted["connection"],
        s.describe(&s.assigns_from(s.baseline)).join("\n")
    );
}
