//! Planned handover in the lab (`lbha-agent handover`): the client keeps
//! fetching the floating IP while lb1 hands it to lb2, lb2 hands it back,
//! and lb2 releases its held priority. Asserted for each handover: one
//! assign (by the node handing over, to the peer), none by the peer when it
//! becomes Master, the peer Master, and no client failure except at most
//! one request in flight at the instant the route moved.

use std::time::Duration;

use lbha_lab::{LabOptions, Stack, droplet_id, split_failures};
use lbha_tests::{
    require_root,
    scenario::{LB1, LB2, Scenario, lb_name, secs},
};

/// One handover from `from` to its peer: returns when the route moved.
fn hand_over(s: &Scenario, from: usize) -> Duration {
    let to = 1 - from;
    assert!(
        s.lab.wait_peer_droplet(from, Duration::from_secs(10)),
        "{}: {}'s heartbeat never learned the peer's droplet id",
        s.name,
        lb_name(from)
    );
    let before = s.lab.assigns().len();
    let at = s.lab.since_start();
    let run = s
        .lab
        .handover(from, &[])
        .expect("running lbha-agent handover");
    for (t, line) in &run.lines {
        eprintln!("{} {}$ {line}", secs(*t), lb_name(from));
    }
    assert!(run.ok, "{}: handover on {} failed", s.name, lb_name(from));
    let text: String = run.lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    for step in [
        "paused",
        "completed",
        "the API shows",
        "resigned",
        "is MASTER",
    ] {
        assert!(
            text.contains(step),
            "{}: no step `{step}` in:\n{text}",
            s.name
        );
    }
    let master = s.wait_transition(to, "MASTER", at, Duration::from_secs(5));
    assert_eq!(master.reason, "master resigned");
    let resigned = s.wait_transition(from, "BACKUP", at, Duration::from_secs(5));
    assert_eq!(resigned.reason, "handover");
    let assign = s.one_assign(before, to, Duration::from_secs(5));
    assert!(
        assign.1 < resigned.at,
        "{}: the assign ({}) came before the resignation ({})",
        s.name,
        secs(assign.1),
        secs(resigned.at)
    );
    let moved = assign.2.expect("completed");
    // Past the new Master's first re-check (2 s with the native TOML): it
    // found the IP its own and assigned nothing, nor did the old one take
    // it back.
    std::thread::sleep(Duration::from_millis(2600));
    let after = s.assigns_from(before);
    assert_eq!(
        after.len(),
        1,
        "{}: re-assigns: {:?}",
        s.name,
        s.describe(&after)
    );
    assert_eq!(s.lab.holder(), Some(droplet_id(to)));
    assert_eq!(s.state(to).as_deref(), Some("MASTER"));
    assert_eq!(s.state(from).as_deref(), Some("BACKUP"));
    moved
}

/// A handover lb1 -> lb2, the hand-back, and the release of lb2's hold,
/// with both load balancers running `stack`: asserted as the module says.
fn handover_and_back(name: &'static str, tag: &str, stack: Stack) {
    let s = Scenario::start(
        name,
        tag,
        LabOptions {
            heartbeat: true,
            stack,
            ..LabOptions::default()
        },
    );
    // Metadata lags an assign by seconds on DigitalOcean: the new Master
    // must not take its "not here" for a reason to assign again.
    s.lab
        .sim_faults(r#"{"metadata_lag_ms": 3000}"#)
        .expect("metadata lag");
    let start = s.lab.since_start();
    let first = hand_over(&s, LB1);
    let back = hand_over(&s, LB2);
    // The hold lb2 kept: released, lb2 (priority 100) stays Backup under
    // lb1 (200); nothing moves.
    let run = s.lab.handover(LB2, &["--release"]).expect("release");
    assert!(run.ok, "release failed: {:?}", run.lines);
    assert!(
        run.lines.iter().any(|(_, l)| l.contains("released")),
        "{:?}",
        run.lines
    );
    let settled = s.assert_settled_on(LB1);
    assert_eq!(settled, s.baseline + 2, "one assign per handover");
    assert!(
        s.lab.lb_log(LB2).contains("handover hold released"),
        "lb2 logged no release"
    );

    let requests: Vec<_> = s
        .client()
        .requests()
        .into_iter()
        .filter(|r| r.at >= start)
        .collect();
    let (in_flight, other) = split_failures(&requests, &[first, back]);
    eprintln!(
        "TIMING handover: route moved at {} and {}; {} requests, {} failed in flight at a route move, {} other failures",
        secs(first),
        secs(back),
        requests.len(),
        in_flight.len(),
        other.len()
    );
    assert!(
        other.is_empty(),
        "client failures outside the route moves: {other:?}"
    );
    assert!(
        in_flight.len() <= 2,
        "more than one failed request per route move: {in_flight:?}"
    );
}

#[test]
fn a_handover_and_the_hand_back_have_no_outage() {
    if !require_root() {
        return;
    }
    handover_and_back("handover", "hov", Stack::Lbha);
}

/// The same with the keepalived.conf format: lbha run with
/// `--keepalived-conf`, `--floating-ip` and the `--heartbeat-*` flags (and
/// no master.sh), as a migrated operator runs it.
#[test]
fn a_handover_and_the_hand_back_have_no_outage_with_keepalived_conf() {
    if !require_root() {
        return;
    }
    handover_and_back("handover_kconf", "hovk", Stack::LbhaKeepalivedConf);
}

/// Refusals change nothing (on the Backup, towards a peer that is not
/// there), and a handover whose API action fails rolls back.
#[test]
fn a_refused_or_failed_handover_changes_nothing() {
    if !require_root() {
        return;
    }
    let s = Scenario::start(
        "handover_refused",
        "hovr",
        LabOptions {
            heartbeat: true,
            ..LabOptions::default()
        },
    );
    let before = s.lab.assigns().len();
    let on_backup = s.lab.handover(LB2, &[]).expect("running handover");
    assert!(!on_backup.ok);
    assert!(
        on_backup
            .lines
            .iter()
            .any(|(_, l)| l.contains("not MASTER")),
        "{:?}",
        on_backup.lines
    );
    let unknown = s
        .lab
        .handover(LB1, &["--to", "10.99.99.99"])
        .expect("running handover");
    assert!(!unknown.ok);
    assert!(
        unknown
            .lines
            .iter()
            .any(|(_, l)| l.contains("no peer matches")),
        "{:?}",
        unknown.lines
    );
    assert_eq!(s.lab.assigns().len(), before);
    assert_eq!(s.state(LB1).as_deref(), Some("MASTER"));
    assert_eq!(s.state(LB2).as_deref(), Some("BACKUP"));

    // The API fails every request: the handover gives up after --timeout
    // and rolls back; lb1 stays Master at its priority, holding the IP.
    assert!(s.lab.wait_peer_droplet(LB1, Duration::from_secs(10)));
    s.lab
        .sim_faults(r#"{"fail_5xx": 4294967295, "fail_5xx_status": 503}"#)
        .expect("faulting the API");
    let failed = s
        .lab
        .handover(LB1, &["--timeout", "1.5"])
        .expect("running handover");
    s.lab.reset_faults().expect("resetting the faults");
    assert!(!failed.ok, "{:?}", failed.lines);
    assert!(
        failed.lines.iter().any(|(_, l)| l.contains("rolled back")),
        "{:?}",
        failed.lines
    );
    let status = s.lab.status_json(LB1).expect("status");
    assert_eq!(status["instances"][0]["priority"], 200, "{status}");
    assert_eq!(status["instances"][0]["handover_held"], false);
    let settled = s.assert_settled_on(LB1);
    assert_eq!(settled, before, "nothing assigned");
}

/// A configured peer droplet id (`peer_droplet_id`) that the peer's
/// heartbeat contradicts: refused, nothing assigned.
#[test]
fn a_configured_peer_droplet_the_heartbeat_contradicts_is_refused() {
    if !require_root() {
        return;
    }
    let s = Scenario::start(
        "handover_droplet_mismatch",
        "hovd",
        LabOptions {
            heartbeat: true,
            extra_floating_ip_toml: "peer_droplet_id = 9999".into(),
            ..LabOptions::default()
        },
    );
    assert!(s.lab.wait_peer_droplet(LB1, Duration::from_secs(10)));
    let before = s.lab.assigns().len();
    let run = s.lab.handover(LB1, &[]).expect("running handover");
    assert!(!run.ok, "{:?}", run.lines);
    let expected = format!(
        "reports droplet {} over the heartbeat, but the configuration says droplet 9999",
        droplet_id(LB2)
    );
    assert!(
        run.lines.iter().any(|(_, l)| l.contains(&expected)),
        "{:?}",
        run.lines
    );
    assert_eq!(s.lab.assigns().len(), before);
    assert_eq!(s.state(LB1).as_deref(), Some("MASTER"));
}
