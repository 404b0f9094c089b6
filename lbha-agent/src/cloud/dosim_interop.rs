//! The same client and manager against `lbha-dosim`, the workspace's
//! DigitalOcean simulator: a second, independent implementation of the DO
//! contract, so a misreading shared by this module and its own mock shows up.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use lbha_dosim::{ActionKind, FaultsUpdate, SimConfig, SimHandle};
use tokio::time::Instant;

use super::{
    api::{ApiClient, ApiError, ApiOptions},
    floating_ip::{FloatingIpHandle, FloatingIpManager, FloatingIpStatus, api_options},
    metadata::MetadataClient,
    secret::Secret,
};
use crate::config::{FloatingIpConfig, TokenSource};

const TOKEN: &str = "dop_v1_d05170ken0000000000000000000000000000000000000000000000000";
const OUR: u64 = 4100;
const OTHER: u64 = 4200;
const IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);

/// Requests from 127.0.0.1 are "our" droplet to the simulator's metadata.
async fn sim(holder: Option<u64>) -> SimHandle {
    let config = SimConfig::new(TOKEN)
        .droplet(OUR, IpAddr::V4(Ipv4Addr::LOCALHOST))
        .droplet(OTHER, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .floating_ip(IP, holder)
        .action_delay(Duration::from_millis(100));
    lbha_dosim::start(config).await.unwrap()
}

fn config(sim: &SimHandle) -> FloatingIpConfig {
    FloatingIpConfig {
        api_url: sim.api_url(),
        metadata_url: sim.metadata_url(),
        recheck_interval: Duration::from_millis(100),
        operation_deadline: Duration::from_secs(5),
        request_timeout: Duration::from_millis(500),
        metadata_timeout: Duration::from_millis(300),
        ..FloatingIpConfig::new(IP, TokenSource::Env("LBHA_UNUSED_IN_TESTS".into()))
    }
}

fn api(cfg: &FloatingIpConfig, token: &str) -> ApiClient {
    ApiClient::new(
        ApiOptions {
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(100),
            action_poll_interval: Duration::from_millis(25),
            ..api_options(cfg)
        },
        Secret::new(token),
    )
    .unwrap()
}

fn spawn(cfg: FloatingIpConfig) -> FloatingIpHandle {
    let api = api(&cfg, TOKEN);
    let md = MetadataClient::with_timeout(cfg.metadata_url.clone(), cfg.metadata_timeout).unwrap();
    FloatingIpManager::spawn(cfg, md, api)
}

async fn wait_for(
    h: &FloatingIpHandle,
    what: &str,
    f: impl FnMut(&FloatingIpStatus) -> bool,
) -> FloatingIpStatus {
    let mut rx = h.subscribe();
    match tokio::time::timeout(Duration::from_secs(8), rx.wait_for(f)).await {
        Ok(Ok(s)) => s.clone(),
        _ => panic!("timed out waiting for {what}: {:?}", h.status()),
    }
}

fn assign_actions(sim: &SimHandle) -> usize {
    sim.state()
        .actions
        .iter()
        .filter(|a| a.kind == ActionKind::Assign)
        .count()
}

#[tokio::test]
async fn dosim_failover_through_faults_assigns_once() {
    let sim = sim(Some(OTHER)).await;
    sim.set_faults(&FaultsUpdate {
        fail_5xx: Some(2),
        rate_limit: Some(1),
        retry_after_secs: Some(1),
        drop: Some(1),
        ..FaultsUpdate::default()
    })
    .unwrap();
    let h = spawn(config(&sim));
    let start = Instant::now();
    h.set_master(true);
    let s = wait_for(&h, "assign", |s| s.last_assign.is_some()).await;
    let record = s.last_assign.unwrap();
    assert!(record.result.is_ok(), "{record:?}");
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Retry-After not honoured"
    );
    assert_eq!(sim.holder(IP), Some(OUR));
    assert_eq!(s.droplet_id, Some(OUR));

    let checks = h.status().checks;
    wait_for(&h, "re-checks", |s| s.checks >= checks + 3).await;
    assert_eq!(assign_actions(&sim), 1);
    assert_eq!(h.status().assigns, 1);
    h.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn dosim_metadata_down_uses_api_holder() {
    let sim = sim(Some(OUR)).await;
    sim.set_faults(&FaultsUpdate {
        metadata_down: Some(true),
        ..FaultsUpdate::default()
    })
    .unwrap();
    let h = spawn(FloatingIpConfig {
        droplet_id: Some(OUR),
        ..config(&sim)
    });
    h.set_master(true);
    let s = wait_for(&h, "checks", |s| s.checks >= 2).await;
    assert_eq!(s.holder_known, Some(true));
    assert_eq!(assign_actions(&sim), 0);
    h.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn dosim_rejects_a_wrong_token_without_retry() {
    let sim = sim(None).await;
    let client = api(&config(&sim), "dop_v1_wrong");
    let err = client.assign(IP, OUR).await.unwrap_err();
    assert!(
        matches!(err, ApiError::Rejected { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(assign_actions(&sim), 0);

    let client = api(&config(&sim), TOKEN);
    let err = client
        .holder(Ipv4Addr::new(203, 0, 113, 99))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    sim.shutdown().await;
}
