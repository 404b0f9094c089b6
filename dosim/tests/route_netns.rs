//! `route`: the simulator keeps `FIP/32 via HOLDER` in its own network
//! namespace. The test runs the simulator on a thread that moved itself
//! into a fresh, anonymous network namespace (`unshare(CLONE_NEWNET)`),
//! which the kernel removes once that thread ends: nothing to clean up,
//! nothing left behind. Addresses are documentation ranges on a veth pair
//! inside that namespace; no packet is sent, routes are only read back.
//! Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN): fails without it, unless
//! `LBHA_SKIP_PRIVILEGED=1` says to skip it.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use lbha_dosim::{SimConfig, start};
use serde_json::{Value, json};

const FIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

/// `ip ARGS` in the calling thread's namespace (children inherit it).
fn ip(args: &[&str]) -> String {
    let output = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn fip_route() -> String {
    ip(&["-4", "route", "show", &format!("{FIP}/32")])
        .trim()
        .to_owned()
}

#[test]
fn routes_follow_the_holder_in_a_private_namespace() {
    if !lbha_harness::require_root() {
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: unshare(2) on this thread only; the thread never leaves.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        ip(&["link", "set", "lo", "up"]);
        ip(&[
            "link", "add", "dosim0", "type", "veth", "peer", "name", "dosim1",
        ]);
        ip(&["addr", "add", "192.0.2.1/24", "dev", "dosim0"]);
        ip(&["link", "set", "dosim0", "up"]);
        ip(&["link", "set", "dosim1", "up"]);
        // The host namespace is untouched.
        assert_eq!(fip_route(), "");

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut config = SimConfig::new("t")
                .droplet(1, "192.0.2.11".parse().unwrap())
                .droplet(2, "192.0.2.12".parse().unwrap())
                .floating_ip(FIP, Some(1))
                .action_delay(Duration::from_millis(50));
            config.route = true;
            let sim = start(config).await.unwrap();
            assert!(
                fip_route().contains("via 192.0.2.11 dev dosim0"),
                "initial holder: {}",
                fip_route()
            );

            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            for (body, expected) in [
                (
                    json!({"type": "assign", "droplet_id": 2}),
                    Some("via 192.0.2.12"),
                ),
                (
                    json!({"type": "assign", "droplet_id": 1}),
                    Some("via 192.0.2.11"),
                ),
                (json!({"type": "unassign"}), None),
                (
                    json!({"type": "assign", "droplet_id": 2}),
                    Some("via 192.0.2.12"),
                ),
            ] {
                let before = fip_route();
                let response: Value = client
                    .post(format!("{}/v2/floating_ips/{FIP}/actions", sim.api_url()))
                    .bearer_auth("t")
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let id = response["action"]["id"].as_u64().expect("action id");
                // Not before completion.
                assert_eq!(fip_route(), before);
                let deadline = Instant::now() + Duration::from_secs(5);
                let status = || {
                    sim.state()
                        .actions
                        .iter()
                        .find(|a| a.id == id)
                        .map(|a| a.status)
                };
                while status() != Some(lbha_dosim::ActionStatus::Completed) {
                    assert!(Instant::now() < deadline, "action never completed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                // Completed implies the route is already in place.
                let route = fip_route();
                match expected {
                    Some(via) => assert!(route.contains(via), "{body}: {route}"),
                    None => assert_eq!(route, "", "{body}"),
                }
            }
            assert!(sim.state().route_errors.is_empty());
            sim.shutdown().await;
            assert_eq!(fip_route(), "", "shutdown removes the routes");
        });
    })
    .join()
    .expect("namespace thread");
}

const RESERVED_V6: &str = "2001:db8:10::10";

fn v6_route() -> String {
    ip(&["-6", "route", "show", &format!("{RESERVED_V6}/128")])
        .trim()
        .to_owned()
}

/// A reserved IPv6 is routed as `IP/128 via HOLDER_IPV6`, moved on a
/// completed `/v2/reserved_ipv6/{ip}/actions` assign (polled at
/// `/v2/actions/{id}`, the only action URL DO gives it), and removed at
/// shutdown; the IPv4 floating IP's route is left as it was.
#[test]
fn reserved_ipv6_routes_follow_the_holder_in_a_private_namespace() {
    if !lbha_harness::require_root() {
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: unshare(2) on this thread only; the thread never leaves.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        ip(&["link", "set", "lo", "up"]);
        ip(&[
            "link", "add", "dosim0", "type", "veth", "peer", "name", "dosim1",
        ]);
        ip(&["addr", "add", "192.0.2.1/24", "dev", "dosim0"]);
        ip(&["addr", "add", "2001:db8::1/64", "dev", "dosim0", "nodad"]);
        ip(&["link", "set", "dosim0", "up"]);
        ip(&["link", "set", "dosim1", "up"]);
        assert_eq!(v6_route(), "");

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let v6: std::net::Ipv6Addr = RESERVED_V6.parse().unwrap();
            let mut config = SimConfig::new("t")
                .droplet_dual(
                    1,
                    "192.0.2.11".parse().unwrap(),
                    "2001:db8::11".parse().unwrap(),
                )
                .droplet_dual(
                    2,
                    "192.0.2.12".parse().unwrap(),
                    "2001:db8::12".parse().unwrap(),
                )
                .floating_ip(FIP, Some(1))
                .floating_ip(v6, Some(1))
                .action_delay(Duration::from_millis(20));
            config.route = true;
            let sim = start(config).await.unwrap();
            assert!(
                v6_route().contains("via 2001:db8::11 dev dosim0"),
                "{}",
                v6_route()
            );

            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            for (droplet, via) in [(2, "via 2001:db8::12"), (1, "via 2001:db8::11")] {
                let response: Value = client
                    .post(format!("{}/v2/reserved_ipv6/{v6}/actions", sim.api_url()))
                    .bearer_auth("t")
                    .json(&json!({"type": "assign", "droplet_id": droplet}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(response["action"]["resource_type"], "reserved_ipv6");
                let id = response["action"]["id"].as_u64().expect("action id");
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    let action: Value = client
                        .get(format!("{}/v2/actions/{id}", sim.api_url()))
                        .bearer_auth("t")
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    if action["action"]["status"] == "completed" {
                        break;
                    }
                    assert!(Instant::now() < deadline, "action never completed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                assert!(v6_route().contains(via), "{}", v6_route());
                // The IPv4 floating IP stays where it was.
                assert!(fip_route().contains("via 192.0.2.11"), "{}", fip_route());
            }
            assert!(
                sim.state().route_errors.is_empty(),
                "{:?}",
                sim.state().route_errors
            );
            sim.shutdown().await;
            assert_eq!(v6_route(), "", "shutdown removes the IPv6 route");
        });
    })
    .join()
    .expect("namespace thread");
}
