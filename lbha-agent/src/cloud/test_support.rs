//! What the tests of this module share: the workspace's DigitalOcean
//! simulator (`lbha-dosim`, in-process on 127.0.0.1) set up with our droplet
//! and one floating IP, request counts from its log, a port nobody listens
//! on, and a capture of everything `tracing` emits (to show the token never
//! appears in it).

use std::{
    net::{IpAddr, Ipv4Addr},
    ops::Deref,
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{
    api::{ApiClient, ApiOptions},
    secret::Secret,
};
use lbha_dosim::{ActionKind, FaultsUpdate, RequestRecord, ScriptedFault, SimConfig, SimHandle};
use tokio::{net::TcpListener, time::Instant};

pub const TOKEN: &str = "dop_v1_7e57c0ffee5ecre7t0ken0000000000000000000000000000000000000";
pub const OUR_DROPLET: u64 = 3164444;
pub const OTHER_DROPLET: u64 = 3164555;
/// Only ever used inside URL paths sent to the loopback simulator.
pub const IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// A reserved IPv6 (documentation range), beside [`IP`] in
/// [`Sim::start_dual`].
pub const IP6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0x10);
/// Our droplet's public IPv6 in [`Sim::start_dual`] (its metadata shows it).
pub const OUR_IPV6: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11);
/// A fault count no test runs out of: the fault stays until set to 0.
pub const ALWAYS: u32 = u32::MAX;

/// A running simulator (its [`SimHandle`] by `Deref`) and the counts the
/// tests ask of it; with HTTPS, the file its CA is written to.
pub struct Sim(SimHandle, Option<tempfile::TempDir>);

impl Deref for Sim {
    type Target = SimHandle;

    fn deref(&self) -> &SimHandle {
        &self.0
    }
}

impl Sim {
    /// [`IP`] held by `holder`; actions take 100 ms unless a test sets
    /// `complete_after_polls`. Every request of a test comes from
    /// 127.0.0.1, so the metadata service answers as our droplet; the
    /// other droplet's address is never used.
    pub async fn start(holder: Option<u64>) -> Self {
        Sim(lbha_dosim::start(Self::config(holder)).await.unwrap(), None)
    }

    /// [`IP`] held by `holder` and the reserved IPv6 [`IP6`] by
    /// `holder6`; both droplets have IPv6 (ours [`OUR_IPV6`]).
    pub async fn start_dual(holder: Option<u64>, holder6: Option<u64>) -> Self {
        let config = SimConfig::new(TOKEN)
            .droplet_dual(OUR_DROPLET, IpAddr::V4(Ipv4Addr::LOCALHOST), OUR_IPV6)
            .droplet_dual(
                OTHER_DROPLET,
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
                std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x12),
            )
            .floating_ip(IP, holder)
            .floating_ip(IP6, holder6)
            .action_delay(Duration::from_millis(100));
        Sim(lbha_dosim::start(config).await.unwrap(), None)
    }

    fn config(holder: Option<u64>) -> SimConfig {
        SimConfig::new(TOKEN)
            .droplet(OUR_DROPLET, IpAddr::V4(Ipv4Addr::LOCALHOST))
            .droplet(OTHER_DROPLET, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
            .floating_ip(IP, holder)
            .action_delay(Duration::from_millis(100))
    }

    /// [`Sim::start`], the API also over HTTPS ([`Sim::https_url`]), its
    /// CA in [`Sim::ca_file`].
    pub async fn start_https(holder: Option<u64>) -> Self {
        let sim = lbha_dosim::start(Self::config(holder).tls()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), sim.ca_pem().unwrap()).unwrap();
        Sim(sim, Some(dir))
    }

    /// `https://127.0.0.1:PORT` (with [`Sim::start_https`]).
    pub fn https_url(&self) -> String {
        self.api_tls_url().expect("started with start_https")
    }

    /// The simulator's CA certificate, PEM (with [`Sim::start_https`]).
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.1
            .as_ref()
            .expect("started with start_https")
            .path()
            .join("ca.pem")
    }

    /// The API connection each request came on, in order.
    pub fn connections(&self) -> Vec<u64> {
        self.requests().iter().map(|r| r.connection).collect()
    }

    pub fn faults(&self, update: FaultsUpdate) {
        self.set_faults(&update).unwrap();
    }

    /// Answers for the next API calls, in order.
    pub fn script(&self, script: Vec<ScriptedFault>) {
        self.faults(FaultsUpdate {
            script: Some(script),
            ..FaultsUpdate::default()
        });
    }

    /// API requests with `method` whose path starts with `prefix`.
    pub fn count(&self, method: &str, prefix: &str) -> usize {
        self.requests_to(method, prefix).len()
    }

    /// Assign requests sent, answered or not.
    pub fn assigns(&self) -> usize {
        self.posts()
            .iter()
            .filter(|r| r.path.ends_with("/actions"))
            .count()
    }

    /// Assign actions the simulator accepted.
    pub fn assign_actions(&self) -> usize {
        self.state()
            .actions
            .iter()
            .filter(|a| a.kind == ActionKind::Assign)
            .count()
    }

    /// The POST requests, in order.
    pub fn posts(&self) -> Vec<RequestRecord> {
        self.requests_to("POST", "/")
    }

    /// When `request` had arrived, on the test's clock.
    pub fn arrival(&self, request: &RequestRecord) -> Instant {
        Instant::from_std(self.started_at() + Duration::from_micros(request.received_us))
    }
}

/// A metadata service that never answers in time: the link-local address
/// with nothing behind it that a droplet sees when the service is down.
pub fn metadata_hangs() -> FaultsUpdate {
    FaultsUpdate {
        metadata_delay_ms: Some(5_000),
        ..FaultsUpdate::default()
    }
}

/// A URL on which nothing listens (connections are refused).
pub async fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

/// Collects everything `tracing` emits on this thread, at every level, so a
/// test can search it. Keep the guard alive for the capture's duration.
pub fn capture_logs() -> (tracing::subscriber::DefaultGuard, Arc<Mutex<Vec<u8>>>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let buf = buf.clone();
        move || CaptureWriter(buf.clone())
    };
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(writer)
        .with_ansi(false)
        .finish();
    (tracing::subscriber::set_default(subscriber), buf)
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The API client options the tests use: short timeouts, backoff and action
/// polling, so that a retry costs milliseconds.
pub fn fast_options(url: String) -> ApiOptions {
    ApiOptions {
        base_url: url,
        request_timeout: Duration::from_millis(500),
        operation_deadline: Duration::from_secs(5),
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        action_poll_interval: Duration::from_millis(20),
        ..ApiOptions::default()
    }
}

/// A client of `sim`'s API with [`fast_options`].
pub fn fast_client(sim: &Sim) -> ApiClient {
    ApiClient::new(fast_options(sim.api_url()), Secret::new(TOKEN)).unwrap()
}
