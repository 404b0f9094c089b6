//! A dual-stack lab (`LabOptions::dual_stack`): lbha moves the floating
//! IPv4 and a DigitalOcean reserved IPv6 together. After a failover both
//! route to the new Master (the simulator's `ip route` / `ip -6 route` in
//! the router namespace), each took exactly one assign, and a client
//! request over IPv6 is answered by the new Master's HAProxy. VRRP itself
//! runs over IPv4 in the first test, over IPv6 in the second
//! (`LabOptions::vrrp_ipv6`).

use std::time::Duration;

use lbha_lab::{FLOATING_IP, LabOptions, RESERVED_IPV6, droplet_id, lb_public, lb_public6};
use lbha_tests::{
    require_root,
    scenario::{LB1, LB2, Scenario, secs},
};

#[test]
fn failover_moves_the_floating_ip_and_the_reserved_ipv6() {
    if !require_root() {
        return;
    }
    let s = Scenario::start(
        "reserved-ipv6",
        "rv6",
        LabOptions {
            dual_stack: true,
            ..LabOptions::default()
        },
    );
    let v6 = RESERVED_IPV6.into();
    s.wait(Duration::from_secs(15), "the reserved IPv6 on lb1", |s| {
        s.lab.holder_of(v6) == Some(droplet_id(LB1))
            && s.lab.assigns_v6().iter().all(|a| a.2.is_some())
    });
    let mut client6 = s.lab.start_client_v6(Duration::from_millis(50));
    s.wait(Duration::from_secs(10), "an answer over IPv6", |_| {
        client6.requests().iter().any(|r| r.result.is_ok())
    });
    let (v4_before, v6_before) = (s.lab.assigns().len(), s.lab.assigns_v6().len());
    assert_eq!(v6_before, 1, "one assign of the IPv6 at start");

    let (at, master, assign) = s.kill_haproxy_on_lb1(Duration::from_secs(10));
    s.timing("HAProxy SIGKILL on lb1 (dual stack)", at, &master, &assign);
    s.wait(Duration::from_secs(10), "the reserved IPv6 on lb2", |s| {
        s.lab.holder_of(v6) == Some(droplet_id(LB2))
    });
    s.assert_settled_on(LB2);
    // One assign each for the one failover, both to lb2.
    let v4_assigns = s.lab.assigns();
    let v6_assigns = s.lab.assigns_v6();
    assert_eq!(v4_assigns.len(), v4_before + 1, "{v4_assigns:?}");
    assert_eq!(v6_assigns.len(), v6_before + 1, "{v6_assigns:?}");
    let v6_assign = v6_assigns.last().unwrap();
    assert_eq!(v6_assign.0, droplet_id(LB2));
    let v6_done = v6_assign.2.expect("the IPv6 assign completed");
    eprintln!(
        "TIMING reserved-ipv6: IPv6 assign requested +{}ms, completed +{}ms",
        v6_assign.1.saturating_sub(at).as_millis(),
        v6_done.saturating_sub(at).as_millis()
    );

    // The router sends both addresses to lb2.
    let route4 = s
        .lab
        .router
        .ip(&["route", "show", &format!("{FLOATING_IP}/32")])
        .unwrap();
    assert!(
        route4.contains(&format!("via {}", lb_public(LB2))),
        "{route4}"
    );
    let route6 = s.lab.reserved_ipv6_route().unwrap();
    assert!(
        route6.contains(&format!("via {}", lb_public6(LB2))),
        "{route6}"
    );

    // A request over IPv6 after the move is answered (by lb2: lb1's HAProxy
    // is dead).
    let after = v6_done + Duration::from_millis(200);
    s.wait(
        Duration::from_secs(10),
        "an IPv6 answer after the move",
        |_| {
            client6
                .requests()
                .iter()
                .any(|r| r.at > after && r.result.is_ok())
        },
    );
    client6.stop();
    let outages = client6.outages();
    eprintln!(
        "TIMING reserved-ipv6: IPv6 client outages {:?}",
        outages
            .iter()
            .map(|(a, b, n)| format!("{}–{} ({n})", secs(*a), b.map_or("…".into(), secs)))
            .collect::<Vec<_>>()
    );
    // IPv6 requests fail only around the failover.
    for (start, end, _) in &outages {
        assert!(
            *start + Duration::from_millis(500) >= at
                && end.is_some_and(|e| e <= v6_done + Duration::from_secs(1)),
            "IPv6 outage {start:?}–{end:?} outside the failover ({at:?}–{v6_done:?})"
        );
    }
}

/// VRRP itself over IPv6 (`LabOptions::vrrp_ipv6`): the two lbha agents
/// elect over VRRPv3 between their private IPv6 addresses, the Master holds
/// the virtual IPv6 and both DigitalOcean addresses follow that instance.
/// A failover by HAProxy SIGKILL on lb1 moves all of it to lb2 with one
/// assign each, and the IPv6 client fails only inside the failover.
#[test]
fn vrrp_over_ipv6_fails_over_the_vip_and_the_reserved_ipv6() {
    if !require_root() {
        return;
    }
    let s = Scenario::start(
        "vrrp-ipv6-failover",
        "rv6v",
        LabOptions {
            dual_stack: true,
            vrrp_ipv6: true,
            ..LabOptions::default()
        },
    );
    let v6 = RESERVED_IPV6.into();
    // lb2 Backup (Scenario::start) means it hears lb1's IPv6 adverts: the
    // instance has no IPv4 path. It must not hold the VIP nor have assigned.
    s.wait(Duration::from_secs(15), "the reserved IPv6 on lb1", |s| {
        s.lab.holder_of(v6) == Some(droplet_id(LB1))
            && s.lab.assigns_v6().iter().all(|a| a.2.is_some())
    });
    s.wait(Duration::from_secs(5), "the IPv6 VIP on lb1 only", |s| {
        s.lab.holds_vip6(LB1).unwrap() && !s.lab.holds_vip6(LB2).unwrap()
    });
    // Both agents start at once, so lb2 may be Master for a moment before
    // lb1's first advert (over IPv6) reaches it, and assign once: the
    // baseline counts those start-up assigns, as Scenario::start does.
    let v6_before = s.lab.assigns_v6();
    assert_eq!(v6_before.last().map(|a| a.0), Some(droplet_id(LB1)));
    let mut client6 = s.lab.start_client_v6(Duration::from_millis(50));
    s.wait(Duration::from_secs(10), "an answer over IPv6", |_| {
        client6.requests().iter().any(|r| r.result.is_ok())
    });

    let (at, master, assign) = s.kill_haproxy_on_lb1(Duration::from_secs(10));
    s.timing(
        "HAProxy SIGKILL on lb1 (VRRP over IPv6)",
        at,
        &master,
        &assign,
    );
    s.wait(Duration::from_secs(10), "the reserved IPv6 on lb2", |s| {
        s.lab.holder_of(v6) == Some(droplet_id(LB2))
    });
    s.wait(Duration::from_secs(5), "the IPv6 VIP moved to lb2", |s| {
        s.lab.holds_vip6(LB2).unwrap() && !s.lab.holds_vip6(LB1).unwrap()
    });
    // Waits past a re-check: no late assign of the floating IP.
    s.assert_settled_on(LB2);
    let v6_assigns = s.lab.assigns_v6();
    assert_eq!(
        v6_assigns.len(),
        v6_before.len() + 1,
        "one IPv6 assign per failover: {v6_assigns:?}"
    );
    let v6_assign = *v6_assigns.last().unwrap();
    assert_eq!(v6_assign.0, droplet_id(LB2));
    assert!(
        v6_assign.1 + Duration::from_millis(50) >= master.at,
        "IPv6 assign requested before lb2 became Master"
    );
    let v6_done = v6_assign.2.expect("the IPv6 assign completed");
    let route6 = s.lab.reserved_ipv6_route().unwrap();
    assert!(
        route6.contains(&format!("via {}", lb_public6(LB2))),
        "{route6}"
    );
    eprintln!(
        "TIMING vrrp-ipv6-failover: lb2 MASTER +{}ms, IPv6 assign requested +{}ms, completed +{}ms",
        master.at.saturating_sub(at).as_millis(),
        v6_assign.1.saturating_sub(at).as_millis(),
        v6_done.saturating_sub(at).as_millis()
    );

    let after = v6_done + Duration::from_millis(200);
    s.wait(
        Duration::from_secs(10),
        "an IPv6 answer after the move",
        |_| {
            client6
                .requests()
                .iter()
                .any(|r| r.at > after && r.result.is_ok())
        },
    );
    client6.stop();
    let outages = client6.outages();
    eprintln!(
        "TIMING vrrp-ipv6-failover: IPv6 client outages {:?}",
        outages
            .iter()
            .map(|(a, b, n)| format!("{}–{} ({n})", secs(*a), b.map_or("…".into(), secs)))
            .collect::<Vec<_>>()
    );
    for (start, end, _) in &outages {
        assert!(
            *start + Duration::from_millis(500) >= at
                && end.is_some_and(|e| e <= v6_done + Duration::from_secs(1)),
            "IPv6 outage {start:?}–{end:?} outside the failover ({at:?}–{v6_done:?})"
        );
    }
}
