//! The reserved IPv6 through the same client and managers as the floating
//! IPv4, against the in-process simulator: DO's IPv6 paths and shapes, the
//! same retries (422 pending, 429, 5xx), action polling at
//! `/v2/actions/{id}`, nothing to do when it is already ours, and one
//! failover moving both addresses with one assign each.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use lbha_dosim::{FaultsUpdate, ScriptedFault};
use tokio::{sync::watch, time::Instant};

use super::{
    api::{ActionStatus, ApiClient, Assigned, Holder},
    floating_ip::{FloatingIpManager, FloatingIpStatus, VrrpView, api_options},
    follow::FollowerSetup,
    metadata::MetadataClient,
    secret::Secret,
    test_support::{
        IP, IP6, OTHER_DROPLET, OUR_DROPLET, OUR_IPV6, Sim, TOKEN, fast_client as client,
    },
};
use crate::config::{FloatingIpConfig, TokenSource};

/// Assign requests for `ip` (the start checks' action probe is no assign).
fn posts_to(sim: &Sim, ip: IpAddr) -> usize {
    let segment = if ip.is_ipv6() {
        "reserved_ipv6"
    } else {
        "floating_ips"
    };
    sim.requests_to("POST", &format!("/v2/{segment}/{ip}/actions"))
        .iter()
        .filter(|r| r.body.contains("\"assign\""))
        .count()
}

#[tokio::test]
async fn assign_polls_the_global_action_url_until_completed() {
    let sim = Sim::start_dual(Some(OTHER_DROPLET), Some(OTHER_DROPLET)).await;
    sim.faults(FaultsUpdate {
        complete_after_polls: Some(3),
        ..FaultsUpdate::default()
    });
    let api = client(&sim);
    assert_eq!(
        api.holder(IP6).await.unwrap(),
        Holder::Droplet(OTHER_DROPLET)
    );
    let done = api
        .assign_and_wait(IP6, OUR_DROPLET, || true)
        .await
        .unwrap();
    let Assigned::Completed(action) = done else {
        panic!("{done:?}");
    };
    assert_eq!(action.status, ActionStatus::Completed);
    assert_eq!(sim.holder(IP6), Some(OUR_DROPLET));
    assert_eq!(sim.holder(IP), Some(OTHER_DROPLET), "the IPv4 did not move");
    let post = sim.posts().remove(0);
    assert_eq!(post.path, format!("/v2/reserved_ipv6/{IP6}/actions"));
    let body: serde_json::Value = serde_json::from_str(&post.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"type": "assign", "droplet_id": OUR_DROPLET})
    );
    // DO's spec has no per-IP action URL for IPv6: polled globally.
    assert_eq!(
        sim.count("GET", &format!("/v2/actions/{}", action.id)),
        3,
        "{:?}",
        sim.requests()
    );
    assert_eq!(sim.count("GET", "/v2/reserved_ipv6/"), 1);
}

#[tokio::test]
async fn already_ours_is_success_without_an_action() {
    let sim = Sim::start_dual(None, Some(OUR_DROPLET)).await;
    sim.faults(FaultsUpdate {
        same_holder_assign: Some(lbha_dosim::SameHolderAssign::Reject),
        ..FaultsUpdate::default()
    });
    let api = client(&sim);
    let done = api
        .assign_and_wait(IP6, OUR_DROPLET, || true)
        .await
        .unwrap();
    assert!(matches!(done, Assigned::AlreadyHeld(_)), "{done:?}");
    assert_eq!(sim.assign_actions(), 0);
}

fn pending_event() -> ScriptedFault {
    ScriptedFault::error(
        422,
        "unprocessable_entity",
        "Reserved IPv6 already has a pending event.",
    )
}

/// 422 "pending event", 429 with Retry-After and a 5xx are each retried,
/// then the assign goes through: the IPv4's retry rules, on IPv6 paths.
#[tokio::test]
async fn pending_rate_limited_and_server_errors_are_retried() {
    let sim = Sim::start_dual(None, Some(OTHER_DROPLET)).await;
    let mut headers = BTreeMap::new();
    headers.insert("retry-after".to_owned(), "1".to_owned());
    sim.faults(FaultsUpdate {
        script: Some(vec![
            pending_event(),
            ScriptedFault::Error {
                status: 429,
                id: "too_many_requests".into(),
                message: "API Rate limit exceeded.".into(),
                request_id: None,
                headers,
            },
            ScriptedFault::error(503, "service_unavailable", "Service Unavailable"),
        ]),
        complete_after_polls: Some(0),
        ..FaultsUpdate::default()
    });
    let api = client(&sim);
    let started = Instant::now();
    let done = api
        .assign_and_wait(IP6, OUR_DROPLET, || true)
        .await
        .unwrap();
    assert!(matches!(done, Assigned::Completed(_)), "{done:?}");
    assert_eq!(posts_to(&sim, IP6.into()), 4, "{:?}", sim.posts());
    assert_eq!(sim.assign_actions(), 1);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 honoured"
    );
    assert_eq!(sim.holder(IP6), Some(OUR_DROPLET));
}

#[tokio::test]
async fn metadata_shows_the_droplets_public_ipv6() {
    let sim = Sim::start_dual(None, None).await;
    let metadata = MetadataClient::new(sim.metadata_url()).unwrap();
    assert_eq!(metadata.public_ipv6().await.unwrap(), Some(OUR_IPV6));
    // A droplet without IPv6: none (DO answers 404).
    let v4_only = Sim::start(None).await;
    let metadata = MetadataClient::new(v4_only.metadata_url()).unwrap();
    assert_eq!(metadata.public_ipv6().await.unwrap(), None);
}

fn settings(sim: &Sim, token_file: &std::path::Path) -> FloatingIpConfig {
    FloatingIpConfig {
        api_url: sim.api_url(),
        metadata_url: sim.metadata_url(),
        recheck_interval: Duration::from_millis(200),
        operation_deadline: Duration::from_secs(5),
        request_timeout: Duration::from_millis(500),
        keepalive_interval: Duration::ZERO,
        ..FloatingIpConfig::new(IP, TokenSource::File(token_file.into()))
    }
}

/// A Master already holding the reserved IPv6 checks and assigns nothing.
#[tokio::test]
async fn a_master_holding_it_assigns_nothing() {
    let sim = Sim::start_dual(None, Some(OUR_DROPLET)).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let config = settings(&sim, &token);
    let api = ApiClient::new(api_options(&config), Secret::new(TOKEN)).unwrap();
    let metadata = MetadataClient::new(sim.metadata_url()).unwrap();
    let (tx, rx) = watch::channel(VrrpView::default());
    let (mut status, task) = FloatingIpManager::spawn_for(IP6.into(), &config, metadata, api, rx);
    tx.send_modify(|v| v.is_master = true);
    wait_for(&mut status, |s| {
        s.holder_known == Some(true) && s.checks >= 2
    })
    .await;
    assert_eq!(status.borrow().assigns, 0);
    assert_eq!(sim.assigns(), 0);
    drop(tx);
    let _ = task.await;
}

async fn wait_for(
    status: &mut watch::Receiver<FloatingIpStatus>,
    done: impl Fn(&FloatingIpStatus) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !done(&status.borrow_and_update()) {
            status.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("status never got there: {:?}", status.borrow()));
}

fn config_toml(sim: &Sim, token: &std::path::Path, v6_instance: &str) -> crate::config::Config {
    config_with(sim, token, &format!("ip = \"{IP}\"\n{v6_instance}"))
}

/// Two instances and a `[floating_ip]` moving IP6 (and what `keys` add).
fn config_with(sim: &Sim, token: &std::path::Path, keys: &str) -> crate::config::Config {
    let text = format!(
        r#"
[[instance]]
name = "VI_1"
interface = "lo"
vrid = 33

[[instance]]
name = "VI_6"
interface = "lo"
vrid = 34

[floating_ip]
instance = "VI_1"
reserved_ipv6 = "{IP6}"
{keys}
token_file = "{}"
api_url = "{}"
metadata_url = "{}"
recheck_interval = 0.2
keepalive_interval = 0
"#,
        token.display(),
        sim.api_url(),
        sim.metadata_url()
    );
    crate::config::parse_toml(&text, std::path::Path::new("t.toml"))
        .expect("valid")
        .config
}

/// Both addresses follow VI_1: its one takeover moves both, one assign
/// each, and the start checks find the droplet's IPv6.
#[tokio::test]
async fn one_failover_moves_both_with_one_assign_each() {
    let sim = Sim::start_dual(Some(OTHER_DROPLET), Some(OTHER_DROPLET)).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let config = config_toml(&sim, &token, "");
    let follower = FollowerSetup::prepare(&config).unwrap().unwrap().start();
    let mut v4 = follower.ipv4.as_ref().expect("IPv4 manager").status.clone();
    let mut v6 = follower
        .reserved_ipv6
        .as_ref()
        .expect("IPv6 manager")
        .status
        .clone();
    follower.mastership.set(true);
    wait_for(&mut v4, |s| s.holder_known == Some(true) && !s.in_flight).await;
    wait_for(&mut v6, |s| s.holder_known == Some(true) && !s.in_flight).await;
    assert_eq!(sim.holder(IP), Some(OUR_DROPLET));
    assert_eq!(sim.holder(IP6), Some(OUR_DROPLET));
    assert_eq!(posts_to(&sim, IP.into()), 1);
    assert_eq!(posts_to(&sim, IP6.into()), 1);
    assert_eq!(sim.assign_actions(), 2);
    // Re-checks while Master assign nothing more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sim.assign_actions(), 2);
    let mut check = follower.cloud_check.clone();
    let report = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(report) = check.borrow_and_update().clone() {
                return report;
            }
            check.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    let names: Vec<_> = report.checks.iter().map(|c| (c.name, c.ok)).collect();
    assert!(names.contains(&("ipv6", true)), "{report:?}");
    assert!(names.contains(&("read_ipv6", true)), "{report:?}");
    follower.stop().await;
}

/// The IPv6 follows VI_6: VI_1's mastership moves only the IPv4, VI_6's
/// only the IPv6.
#[tokio::test]
async fn each_follows_its_own_instance() {
    let sim = Sim::start_dual(Some(OTHER_DROPLET), Some(OTHER_DROPLET)).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let config = config_toml(&sim, &token, "reserved_ipv6_instance = \"VI_6\"");
    let follower = FollowerSetup::prepare(&config).unwrap().unwrap().start();
    assert!(follower.mastership.follows("VI_6"));
    let mut v4 = follower.ipv4.as_ref().expect("IPv4 manager").status.clone();
    let mut v6 = follower.reserved_ipv6.as_ref().unwrap().status.clone();
    follower.mastership.for_instance("VI_1").unwrap().set(true);
    wait_for(&mut v4, |s| s.holder_known == Some(true) && !s.in_flight).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sim.holder(IP), Some(OUR_DROPLET));
    assert_eq!(sim.holder(IP6), Some(OTHER_DROPLET), "VI_6 is not Master");
    assert_eq!(posts_to(&sim, IP6.into()), 0);
    follower.mastership.for_instance("VI_6").unwrap().set(true);
    wait_for(&mut v6, |s| s.holder_known == Some(true) && !s.in_flight).await;
    assert_eq!(sim.holder(IP6), Some(OUR_DROPLET));
    assert_eq!(posts_to(&sim, IP.into()), 1);
    assert_eq!(posts_to(&sim, IP6.into()), 1);
    follower.stop().await;
}

/// An IPv6-only service: a reserved IPv6 without a floating IPv4. Its
/// instance's takeover assigns it (once), and nothing, the start checks
/// included, ever asks for a floating IPv4.
#[tokio::test]
async fn a_reserved_ipv6_alone_moves_without_any_floating_ip_call() {
    let sim = Sim::start_dual(Some(OTHER_DROPLET), Some(OTHER_DROPLET)).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let config = config_with(&sim, &token, "reserved_ipv6_instance = \"VI_6\"");
    assert_eq!(config.floating_ip.as_ref().unwrap().settings.ip, None);
    let follower = FollowerSetup::prepare(&config).unwrap().unwrap().start();
    assert!(follower.ipv4.is_none());
    assert_eq!(
        follower.mastership.instance, "VI_6",
        "the main channel is the IPv6's"
    );
    let v6 = follower.reserved_ipv6.as_ref().expect("IPv6 manager");
    assert_eq!((v6.ip, v6.instance.as_str()), (IpAddr::V6(IP6), "VI_6"));
    let mut status = follower.status().expect("the IPv6's status");
    follower.mastership.set(true);
    wait_for(&mut status, |s| {
        s.holder_known == Some(true) && !s.in_flight
    })
    .await;
    assert_eq!(sim.holder(IP6), Some(OUR_DROPLET));
    assert_eq!(
        sim.holder(IP),
        Some(OTHER_DROPLET),
        "the IPv4 is not ours to move"
    );
    assert_eq!(posts_to(&sim, IP6.into()), 1);
    assert_eq!(sim.assign_actions(), 1);
    let mut check = follower.cloud_check.clone();
    let report = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(report) = check.borrow_and_update().clone() {
                return report;
            }
            check.changed().await.unwrap();
        }
    })
    .await
    .unwrap();
    let names: Vec<_> = report.checks.iter().map(|c| c.name).collect();
    assert_eq!(names, ["metadata", "ipv6", "read_ipv6"], "{report:?}");
    // Re-checks while Master stay on the IPv6 too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v4_calls: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| {
            r.path.starts_with("/v2/floating_ips") || r.path.starts_with("/v2/reserved_ips")
        })
        .collect();
    assert!(v4_calls.is_empty(), "{v4_calls:?}");
    assert!(
        sim.count("GET", "/v2/reserved_ipv6/") >= 2,
        "{:?}",
        sim.requests()
    );
    follower.stop().await;
}

/// A droplet without IPv6 and a reserved IPv6 configured: the start check
/// says so.
#[tokio::test]
async fn a_droplet_without_ipv6_is_a_start_problem() {
    let sim = Sim::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let mut config = settings(&sim, &token);
    config.reserved_ipv6 = Some(crate::config::ReservedIpv6 {
        address: IP6,
        instance: None,
    });
    let api = ApiClient::new(api_options(&config), Secret::new(TOKEN)).unwrap();
    let metadata = MetadataClient::new(sim.metadata_url()).unwrap();
    let report = super::check::check_cloud(&config, &metadata, &api).await;
    let ipv6 = report
        .checks
        .iter()
        .find(|c| c.name == "ipv6")
        .expect("ipv6 check");
    assert!(!ipv6.ok, "{report:?}");
    assert!(ipv6.detail.contains("no public IPv6"), "{}", ipv6.detail);
    // This simulator has no reserved IPv6: the API's 404, named.
    let read = report
        .checks
        .iter()
        .find(|c| c.name == "read_ipv6")
        .unwrap();
    assert!(!read.ok && read.detail.contains("404"), "{}", read.detail);
}
