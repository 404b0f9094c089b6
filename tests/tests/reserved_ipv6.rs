//! A dual-stack lab (`LabOptions::dual_stack`): lbha moves the floating
//! IPv4 and a DigitalOcean reserved IPv6 together. After a failover both
//! route to the new Master (the simulator's `ip route` / `ip -6 route` in
//! the router namespace), each took exactly one assign, and a client
//! request over IPv6 is answered by the new Master's HAProxy. VRRP itself
//! runs over IPv4 here.

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
