//! A dual-stack lab (`LabOptions::dual_stack`): the floating IPv4 and a
//! DigitalOcean reserved IPv6 move together. After a failover both route to
//! the new Master (the simulator's `ip route` / `ip -6 route` in the router
//! namespace), each took exactly one assign, and a client request over IPv6
//! is answered by the new Master's HAProxy; IPv6 requests fail only inside
//! the failover. VRRP itself runs over IPv4 in the first test, over IPv6
//! (`LabOptions::vrrp_ipv6`) in the others:
//!
//! - two lbha agents, HAProxy SIGKILLed on the Master;
//! - two lbha agents, the Master's lbha SIGKILLed (HAProxy keeps running);
//! - a mixed pair, lbha on lb1 and keepalived 2.2.7 on lb2 (an operator
//!   migrating one node at a time), whose master.sh assigns the reserved
//!   IPv6 too: keepalived takes over from lbha, then lbha back from it.

use std::time::Duration;

use lbha_lab::{FLOATING_IP, LabOptions, Stack, lb_public};
use lbha_tests::{
    require_root,
    scenario::{LB1, LB2, MARGIN, OUTAGE_BOUND, Scenario},
};

fn dual_stack(vrrp_ipv6: bool) -> LabOptions {
    LabOptions {
        dual_stack: true,
        vrrp_ipv6,
        ..LabOptions::default()
    }
}

#[test]
fn failover_moves_the_floating_ip_and_the_reserved_ipv6() {
    if !require_root() {
        return;
    }
    let s = Scenario::start_dual_stack("reserved-ipv6", "rv6", dual_stack(false));
    // Not "one IPv6 assign at start": lb2 may be Master for a moment before
    // lb1's first advert, and assign (start_dual_stack checks lb1's was last).
    let (v4_before, v6_before) = (s.lab.assigns().len(), s.lab.assigns_v6().len());

    let (at, master, assign) = s.kill_haproxy_on_lb1(Duration::from_secs(10));
    s.timing("HAProxy SIGKILL on lb1 (dual stack)", at, &master, &assign);
    let v6_assign = s.assert_ipv6_moved(LB2, (at, &master), v6_before, true);
    assert_eq!(s.lab.assigns().len(), v4_before + 1);
    // The router sends the floating IP to lb2 too.
    let route4 = s
        .lab
        .router
        .ip(&["route", "show", &format!("{FLOATING_IP}/32")])
        .unwrap();
    assert!(
        route4.contains(&format!("via {}", lb_public(LB2))),
        "{route4}"
    );
    s.assert_ipv6_outages_within(&[(at, v6_assign.2.unwrap())]);
}

/// VRRP itself over IPv6: the two lbha agents elect over VRRPv3 between
/// their private IPv6 addresses, the Master holds the virtual IPv6 and both
/// DigitalOcean addresses follow that instance. A failover by HAProxy
/// SIGKILL on lb1 moves all of it to lb2 with one assign each.
#[test]
fn vrrp_over_ipv6_fails_over_the_vip_and_the_reserved_ipv6() {
    if !require_root() {
        return;
    }
    let s = Scenario::start_dual_stack("vrrp-ipv6-failover", "rv6v", dual_stack(true));
    let v6_before = s.lab.assigns_v6().len();
    let (at, master, assign) = s.kill_haproxy_on_lb1(Duration::from_secs(10));
    s.timing(
        "HAProxy SIGKILL on lb1 (VRRP over IPv6)",
        at,
        &master,
        &assign,
    );
    let v6_assign = s.assert_ipv6_moved(LB2, (at, &master), v6_before, true);
    s.assert_ipv6_outages_within(&[(at, v6_assign.2.unwrap())]);
}

/// The IPv6 twin of `lbha_killed_on_master_fails_over_and_back`: lbha
/// SIGKILLed on lb1 (HAProxy keeps running), lb2 hears no more IPv6 adverts
/// and takes over within its Master_Down_Interval, adds the virtual IPv6
/// and moves both addresses with one assign each. lb1 keeps the virtual
/// IPv6 it held (nothing is left to remove it), and HAProxy on lb1 serves
/// until the routes move: the clients barely notice. A supervisor restarts
/// lbha on lb1: it preempts lb2 (which drops the virtual IPv6) and pulls
/// both addresses back, one assign each.
#[test]
fn lbha_killed_on_master_fails_over_and_back_over_ipv6_vrrp() {
    if !require_root() {
        return;
    }
    let s = Scenario::start_dual_stack("lbha-kill-ipv6", "rv6k", dual_stack(true));
    let (before, v6_before) = (s.lab.assigns().len(), s.lab.assigns_v6().len());
    let (at, master) = s.kill_agent_on_lb1(MARGIN);
    let assign = s.one_assign(before, LB2, Duration::from_secs(10));
    s.timing("lbha SIGKILL on lb1 (VRRP over IPv6)", at, &master, &assign);
    let to_lb2 = s.assert_ipv6_moved(LB2, (at, &master), v6_before, false);
    let failures6 = |from: Duration| -> Vec<Duration> {
        s.client6()
            .requests()
            .iter()
            .filter(|r| r.at >= from && r.result.is_err())
            .map(|r| r.at)
            .collect()
    };
    for (what, failed) in [
        ("IPv4", s.failures_between(at, Duration::MAX)),
        ("IPv6", failures6(at)),
    ] {
        assert!(
            failed.len() <= 2,
            "{what} client failures although HAProxy kept running on lb1: {failed:?}"
        );
    }

    // A supervisor restarts lbha: it preempts lb2 and reclaims both.
    let (before, v6_before) = (s.lab.assigns().len(), s.lab.assigns_v6().len());
    let back = s.lab.since_start();
    s.lab.start_agent(LB1).expect("restarting lbha on lb1");
    let master = s.wait_transition(LB1, "MASTER", back, Duration::from_secs(8));
    let assign = s.one_assign(before, LB1, Duration::from_secs(10));
    s.timing(
        "lbha restarted on lb1 (VRRP over IPv6)",
        back,
        &master,
        &assign,
    );
    let to_lb1 = s.assert_ipv6_moved(LB1, (back, &master), v6_before, true);
    for (what, failed) in [
        ("IPv4", s.failures_between(back, Duration::MAX)),
        ("IPv6", failures6(back)),
    ] {
        assert!(
            failed.len() <= 2,
            "{what} client failures during failback: {failed:?}"
        );
    }
    s.assert_ipv6_outages_within(&[(at, to_lb2.2.unwrap()), (back, to_lb1.2.unwrap())]);
}

/// A mixed pair over IPv6 VRRP: lbha (native TOML) on lb1, keepalived
/// 2.2.7 on lb2 with the seed's check and a master.sh that also assigns the
/// reserved IPv6. HAProxy SIGKILLed on lb1: lbha resigns (priority 0),
/// keepalived takes over, adds the virtual IPv6, and its master.sh moves the
/// floating IP and the reserved IPv6, one assign each. HAProxy restarted on
/// lb1: lbha preempts keepalived (which drops the virtual IPv6) and moves
/// both back, one assign each. keepalived stamps its log to the second,
/// so its MASTER time in the TIMING lines is coarse; the assign times are
/// the simulator's.
#[test]
fn lbha_and_keepalived_fail_over_over_ipv6_vrrp_both_ways() {
    if !require_root() {
        return;
    }
    let opts = LabOptions {
        lb2_stack: Some(Stack::Keepalived),
        ..dual_stack(true)
    };
    let s = Scenario::start_dual_stack("mixed-ipv6", "rv6m", opts);

    // lbha -> keepalived.
    let (v4_before, v6_before) = (s.lab.assigns().len(), s.lab.assigns_v6().len());
    let (at, master, assign) = s.kill_haproxy_on_lb1(Duration::from_secs(10));
    s.timing(
        "HAProxy SIGKILL on lb1 (lbha) -> keepalived on lb2",
        at,
        &master,
        &assign,
    );
    let to_lb2 = s.assert_ipv6_moved(LB2, (at, &master), v6_before, true);
    assert_eq!(s.lab.assigns().len(), v4_before + 1);
    s.outage_within(at.saturating_sub(Duration::from_millis(500)), OUTAGE_BOUND);

    // keepalived -> lbha: lb1 healthy again preempts.
    let (v4_before, v6_before) = (s.lab.assigns().len(), s.lab.assigns_v6().len());
    let lb2_seen = s.lab.transitions(LB2).len();
    let back = s.lab.since_start();
    s.lab.start_haproxy(LB1).expect("restarting HAProxy on lb1");
    // The process check rescans every 2 s for a restarted HAProxy.
    let recovered = s.wait_transition(LB1, "BACKUP", back, Duration::from_secs(6));
    assert_eq!(recovered.reason, "tracked checks recovered");
    let master = s.wait_transition(LB1, "MASTER", back, Duration::from_secs(5));
    s.wait_transition_after(LB2, "BACKUP", lb2_seen, Duration::from_secs(5));
    let assign = s.one_assign(v4_before, LB1, Duration::from_secs(10));
    s.timing(
        "HAProxy restarted on lb1 (lbha preempts keepalived)",
        back,
        &master,
        &assign,
    );
    let to_lb1 = s.assert_ipv6_moved(LB1, (back, &master), v6_before, true);
    // Both nodes serve during a failback: the client barely notices.
    s.outage_within(back, Duration::from_millis(500));
    s.assert_ipv6_outages_within(&[(at, to_lb2.2.unwrap()), (back, to_lb1.2.unwrap())]);
}

/// The other mixed pair: keepalived 2.2.7 on lb1 (Master, its master.sh
/// assigned both addresses), lbha on lb2. HAProxy SIGKILLed on lb1:
/// keepalived's `pidof haproxy` check (every 2 s) fails, it goes FAULT and
/// resigns, lbha takes over over IPv6 VRRP and moves the virtual IPv6, the
/// floating IP and the reserved IPv6, one assign each. The outage is
/// keepalived's check interval plus lbha's takeover: bounded by 2 s + the
/// plain failover's bound.
#[test]
fn keepalived_master_failing_hands_over_to_lbha_over_ipv6_vrrp() {
    if !require_root() {
        return;
    }
    let opts = LabOptions {
        stack: Stack::Keepalived,
        lb2_stack: Some(Stack::Lbha),
        ..dual_stack(true)
    };
    let s = Scenario::start_dual_stack("keepalived-to-lbha-ipv6", "rv6r", opts);
    let (before, v6_before) = (s.lab.assigns().len(), s.lab.assigns_v6().len());
    let lb1_seen = s.lab.transitions(LB1).len();
    let at = s.lab.since_start();
    assert!(s.lab.kill_haproxy(LB1) > 0, "no HAProxy on lb1");
    // keepalived's check runs every 2 s, then its script takes a moment.
    s.wait_transition_after(LB1, "FAULT", lb1_seen, Duration::from_secs(5));
    let master = s.wait_transition(LB2, "MASTER", at, Duration::from_secs(5));
    let assign = s.one_assign(before, LB2, Duration::from_secs(10));
    assert!(
        assign.1 + Duration::from_millis(50) >= master.at,
        "assign requested before lb2 became Master"
    );
    s.timing(
        "HAProxy SIGKILL on lb1 (keepalived) -> lbha on lb2",
        at,
        &master,
        &assign,
    );
    let v6_assign = s.assert_ipv6_moved(LB2, (at, &master), v6_before, true);
    s.outage_within(
        at.saturating_sub(Duration::from_millis(500)),
        Duration::from_secs(2) + OUTAGE_BOUND,
    );
    s.assert_ipv6_outages_within(&[(at, v6_assign.2.unwrap())]);
}
