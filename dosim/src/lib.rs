//! lbha-dosim: a stand-in for the DigitalOcean API v2 (floating/reserved IP
//! assign and unassign actions, action and IP lookups) and for the droplet
//! metadata service, for lbha's tests and lab.
//!
//! * Droplets are told apart by the source address of their requests.
//! * An action is `in-progress` for the configured delay, then `completed`;
//!   the IP's holder changes only then.
//! * Faults (scripted answers, 5xx, 429, delays, connections closed
//!   unanswered, actions that end errored or on a chosen poll, metadata
//!   down, slow or wrong) are injected through `POST /_sim/faults` or
//!   [`SimHandle`], and everything that happened is in `GET /_sim/state` /
//!   [`SimHandle::state`], each API request with its headers and body in
//!   `GET /_sim/requests` / [`SimHandle::requests`].
//! * With `route`, the simulator keeps `IP/32 via HOLDER` in its own network
//!   namespace so packets to the floating IP reach the holder.
//! * With `api_tls_listen`, a second API listener serves HTTPS: a CA made
//!   at start ([`tls::LabCa`], its PEM from [`SimHandle::ca_pem`], the
//!   binary's `--tls-ca-out`) signs a certificate for that listener's
//!   address and the `tls_names`. The plain listener stays, same state.
//!   Every API connection is numbered ([`RequestRecord::connection`],
//!   `api_connections` in the state), and `POST /_sim/close_connections`
//!   closes the open ones, as an idle timeout in front of DO would.
//!
//! API listener (`Authorization: Bearer TOKEN` required, else 401; every
//! response has `ratelimit-limit`/`-remaining`/`-reset`, an `x-request-id`
//! and a JSON content type; `{family}` is `floating_ips` or
//! `reserved_ips`):
//!
//! | request | scope | answer |
//! | --- | --- | --- |
//! | `POST /v2/{family}/{ip}/actions` `{"type":"assign","droplet_id":N}` or `{"type":"unassign"}` | `reserved_ip:update` | 201 `{"action":{..,"status":"in-progress"}}`; 404 unknown IP; 422 bad body, unknown droplet, unassigned IP, an action already in progress on the IP, or (with `same_holder_assign = reject`) an assign to the holder |
//! | `GET /v2/{family}/{ip}/actions/{id}` | `reserved_ip:read` | `{"action":{..}}` |
//! | `GET /v2/actions/{id}` | `actions:read` | `{"action":{..}}` |
//! | `GET /v2/{family}/{ip}` | `reserved_ip:read` | `{"floating_ip":{..}}` (`reserved_ip` on that path); no `droplet` without `droplet:read` |
//! | `GET /v2/{family}` | `reserved_ip:read` | the list, with `links` and `meta.total` |
//!
//! A token given `token_scopes` gets 403 `forbidden` (DO's error body) from
//! an endpoint whose scope it lacks; by default it has full access. Past
//! DO's sliding-window rate limits (`rate_limit_per_hour`, 5,000, and
//! `rate_limit_per_minute`, 250: each call counts for an hour, and a
//! minute, after it was made) calls are answered 429, with `Retry-After`
//! for the per-minute burst limit; the order is faults, auth, rate limits,
//! scope.
//!
//! Also on the API listener, without auth, faults, counting or logging:
//! `GET /_sim/state` ([`SimState`]), `GET`/`POST /_sim/faults`
//! ([`Faults`] / [`FaultsUpdate`]: fields given replace, others stay),
//! `POST /_sim/reset_faults`, `GET /_sim/requests` ([`RequestRecord`]s,
//! oldest first, the last [`requests::REQUEST_LOG_LIMIT`]), and
//! `POST /_sim/holder` `{"ip":IP,"holder":N|null}` (moves the IP at once,
//! as another droplet would), `POST /_sim/close_connections`. Faults apply to API calls only, one per call
//! in the order script (its front entry), drop, 5xx, 429; `delay_ms`
//! delays every API call; `drop` closes the call's connection with no
//! response (per call, so a pooled keep-alive connection is closed too).
//! An action ends after the action delay, or, while `complete_after_polls`
//! is set, on that status poll (0: in the POST answer).
//!
//! Metadata listener (no auth; text; 404 for an unknown caller):
//! `/metadata/v1/id`, `hostname`, `region`,
//! `/metadata/v1/{floating_ip,reserved_ip}/ipv4/{active,ip_address}`,
//! `/metadata/v1.json`. `metadata_down` makes it answer 503,
//! `metadata_drop` close connections unanswered, `metadata_body` answer
//! that text, `metadata_delay_ms` answer late, and `metadata_lag_ms`
//! show a change of holder that much later than the API does.
//!
//! [`SimConfig::faults`] (the binary's `--faults JSON` and the flags named
//! after the settings) sets the faults in force at start; `reset_faults`
//! returns to them.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use lbha_dosim::{SimConfig, start};
//! let sim = start(
//!     SimConfig::new("token")
//!         .droplet(1, "127.0.0.1".parse()?)
//!         .floating_ip("203.0.113.10".parse::<std::net::Ipv4Addr>()?, Some(1)),
//! )
//! .await?;
//! println!("API at {}", sim.api_url());
//! # Ok(()) }
//! ```

mod api;
mod metadata;
pub mod requests;
pub mod route;
mod server;
pub mod state;
mod time;
pub mod tls;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use requests::{RequestRecord, max_concurrent, request_id};
pub use state::{
    ActionKind, ActionRecord, ActionStatus, CallCounts, DropletState, Family, Faults, FaultsUpdate,
    FloatingIpState, RATE_LIMIT_PER_HOUR, RATE_LIMIT_PER_MINUTE, SameHolderAssign, ScriptedFault,
    SimState, required_scope,
};

use crate::route::RouteTable;
use crate::state::State;

/// A droplet: `ID=SRC_IP[,IPV6]` on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropletSpec {
    pub id: u64,
    /// Where its requests come from (and, with `route`, the next hop for the
    /// floating IPs it holds).
    pub address: IpAddr,
    /// Its public IPv6 address, if it has one: the next hop (with `route`)
    /// of a reserved IPv6 it holds, and its metadata's
    /// `interfaces/public/0/ipv6/address`.
    pub ipv6: Option<Ipv6Addr>,
}

impl FromStr for DropletSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, address) = s
            .split_once('=')
            .ok_or_else(|| format!("expected ID=SRC_IP[,IPV6], got {s:?}"))?;
        let (address, ipv6) = match address.split_once(',') {
            Some((address, ipv6)) => (address, Some(ipv6)),
            None => (address, None),
        };
        Ok(Self {
            id: id
                .trim()
                .parse()
                .map_err(|e| format!("droplet id {id:?}: {e}"))?,
            address: address
                .trim()
                .parse()
                .map_err(|e| format!("droplet address {address:?}: {e}"))?,
            ipv6: ipv6
                .map(|a| {
                    a.trim()
                        .parse()
                        .map_err(|e| format!("droplet IPv6 address {a:?}: {e}"))
                })
                .transpose()?,
        })
    }
}

/// A floating IP and its initial holder: `IP[=HOLDER_ID]` on the command
/// line. An IPv6 address is a reserved IPv6 (served under
/// `/v2/reserved_ipv6` only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloatingIpSpec {
    pub ip: IpAddr,
    pub holder: Option<u64>,
}

impl FromStr for FloatingIpSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, holder) = match s.split_once('=') {
            Some((ip, holder)) => (ip, Some(holder)),
            None => (s, None),
        };
        Ok(Self {
            ip: ip
                .trim()
                .parse()
                .map_err(|e| format!("floating IP {ip:?}: {e}"))?,
            holder: holder
                .map(|h| {
                    h.trim()
                        .parse()
                        .map_err(|e| format!("holder id {h:?}: {e}"))
                })
                .transpose()?,
        })
    }
}

/// How to run the simulator.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The API listener (port 0: any free port).
    pub api_listen: SocketAddr,
    /// A second API listener, serving HTTPS (port 0: any free port).
    pub api_tls_listen: Option<SocketAddr>,
    /// Names (IP addresses or DNS names) the HTTPS listener's certificate
    /// is for besides its own address: those clients reach it by (through
    /// a relay, say).
    pub tls_names: Vec<String>,
    /// The metadata listener (port 0: any free port).
    pub metadata_listen: SocketAddr,
    /// The bearer token the API requires.
    pub token: String,
    pub droplets: Vec<DropletSpec>,
    pub floating_ips: Vec<FloatingIpSpec>,
    /// How long actions stay in progress.
    pub action_delay: Duration,
    /// Keep `IP/32 via HOLDER` routes in the current network namespace.
    pub route: bool,
    /// Where to write the `/_sim/state` JSON after every change.
    pub state_file: Option<PathBuf>,
    /// Region slug reported everywhere.
    pub region: String,
    /// The faults (and token scopes, rate limits, metadata lag) in force at
    /// start, which `reset_faults` returns to.
    pub faults: FaultsUpdate,
}

impl SimConfig {
    /// Both listeners on 127.0.0.1, any port; no droplets or IPs; actions
    /// take 500 ms; region nyc3.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            api_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_tls_listen: None,
            tls_names: Vec::new(),
            metadata_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: token.into(),
            droplets: Vec::new(),
            floating_ips: Vec::new(),
            action_delay: Duration::from_millis(500),
            route: false,
            state_file: None,
            region: "nyc3".into(),
            faults: FaultsUpdate::default(),
        }
    }

    /// Sets the faults in force at start (see [`SimConfig::faults`]).
    pub fn faults(mut self, faults: FaultsUpdate) -> Self {
        self.faults = faults;
        self
    }

    /// Adds a droplet.
    pub fn droplet(mut self, id: u64, address: IpAddr) -> Self {
        self.droplets.push(DropletSpec {
            id,
            address,
            ipv6: None,
        });
        self
    }

    /// Adds a droplet with a public IPv6 address besides its source address.
    pub fn droplet_dual(mut self, id: u64, address: IpAddr, ipv6: Ipv6Addr) -> Self {
        self.droplets.push(DropletSpec {
            id,
            address,
            ipv6: Some(ipv6),
        });
        self
    }

    /// Adds a floating IP, held by `holder` at start.
    /// Adds a floating IPv4 or (an IPv6 address) a reserved IPv6.
    pub fn floating_ip(mut self, ip: impl Into<IpAddr>, holder: Option<u64>) -> Self {
        self.floating_ips.push(FloatingIpSpec {
            ip: ip.into(),
            holder,
        });
        self
    }

    /// Sets how long actions stay in progress.
    pub fn action_delay(mut self, delay: Duration) -> Self {
        self.action_delay = delay;
        self
    }

    /// Also serves the API over HTTPS on 127.0.0.1, any port.
    pub fn tls(mut self) -> Self {
        self.api_tls_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        self
    }
}

/// State shared by the listeners and action tasks.
pub(crate) struct Shared {
    state: Mutex<State>,
    token: String,
    action_delay: Duration,
    routes: Option<RouteTable>,
    state_file: Option<PathBuf>,
    /// Serialises state-file writes so the file always ends newest.
    file_lock: Mutex<()>,
    shutdown: watch::Receiver<bool>,
    /// Bumped to close every open API connection.
    close_connections: watch::Sender<u64>,
}

impl Shared {
    /// Closes every API connection open now; returns how many were
    /// listening for it.
    pub(crate) fn close_connections(&self) -> usize {
        let open = self.close_connections.receiver_count();
        self.close_connections
            .send_modify(|generation| *generation += 1);
        tracing::info!(open, "closing the open API connections");
        open
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the state file (atomically: temporary file, then rename).
    pub(crate) fn persist(&self) {
        let Some(path) = &self.state_file else {
            return;
        };
        let _guard = self
            .file_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let snapshot = self.lock().snapshot();
        let mut temporary = path.clone().into_os_string();
        temporary.push(".tmp");
        let result = serde_json::to_vec_pretty(&snapshot)
            .map_err(std::io::Error::from)
            .and_then(|json| std::fs::write(&temporary, json))
            .and_then(|()| std::fs::rename(&temporary, path));
        if let Err(error) = result {
            tracing::warn!(path = %path.display(), %error, "writing the state file");
        }
    }
}

/// Completes action `id` after the configured delay (see [`finish_action`]).
pub(crate) fn spawn_completion(shared: Arc<Shared>, id: u64) {
    tokio::spawn(async move {
        tokio::select! {
            () = server::stopped(shared.shutdown.clone()) => return,
            () = tokio::time::sleep(shared.action_delay) => {}
        }
        finish_action(&shared, id).await;
    });
}

/// Ends in-progress action `id` as planned: on success first the route
/// (with `route`), then the holder and status, so that a client that sees
/// `completed` also finds the route in place. Called when the delay is over,
/// or on the poll (or POST) that a `complete_after_polls` plan ends it on.
pub(crate) async fn finish_action(shared: &Shared, id: u64) {
    let Some(completion) = shared.lock().completion(id) else {
        return;
    };
    if completion.success
        && let Some(routes) = &shared.routes
    {
        let holder = completion.holder.map(|(_, address)| address);
        match routes.set(completion.ip, holder).await {
            Ok(()) => tracing::info!(ip = %completion.ip, via = ?holder, "route updated"),
            Err(error) => {
                tracing::error!(%error, "route update failed");
                shared.lock().record_route_error(error);
            }
        }
    }
    shared
        .lock()
        .complete_action(id, completion.success, SystemTime::now());
    tracing::info!(
        id,
        ip = %completion.ip,
        holder = ?completion.holder.map(|(droplet, _)| droplet),
        success = completion.success,
        "action ended"
    );
    shared.persist();
}

/// Moves `ip` to `holder` now (route first, as for a completed action).
pub(crate) async fn set_holder(
    shared: &Shared,
    ip: IpAddr,
    holder: Option<u64>,
) -> Result<(), String> {
    let address = shared.lock().check_holder(ip, holder)?;
    if let Some(routes) = &shared.routes {
        routes.set(ip, address).await?;
    }
    shared.lock().set_holder(ip, holder);
    tracing::info!(%ip, ?holder, "holder set");
    shared.persist();
    Ok(())
}

/// A running simulator. Dropping it stops the listeners and pending
/// actions; [`SimHandle::shutdown`] also removes the routes it installed.
pub struct SimHandle {
    api_addr: SocketAddr,
    api_tls_addr: Option<SocketAddr>,
    ca: Option<tls::LabCa>,
    metadata_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl SimHandle {
    /// Where the API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// Where the API listens for HTTPS, if it does.
    pub fn api_tls_addr(&self) -> Option<SocketAddr> {
        self.api_tls_addr
    }

    /// `https://API_TLS_ADDR`, if the API serves HTTPS.
    pub fn api_tls_url(&self) -> Option<String> {
        self.api_tls_addr.map(|addr| format!("https://{addr}"))
    }

    /// The PEM of the CA that signed the HTTPS listener's certificate.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca.as_ref().map(tls::LabCa::ca_pem)
    }

    /// What `POST /_sim/close_connections` does: closes every open API
    /// connection (the next request of a client opens a new one).
    pub fn close_connections(&self) -> usize {
        self.shared.close_connections()
    }

    /// Where the metadata service listens.
    pub fn metadata_addr(&self) -> SocketAddr {
        self.metadata_addr
    }

    /// `http://API_ADDR` (no trailing slash).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// `http://METADATA_ADDR` (no trailing slash).
    pub fn metadata_url(&self) -> String {
        format!("http://{}", self.metadata_addr)
    }

    /// What `GET /_sim/state` returns.
    pub fn state(&self) -> SimState {
        self.shared.lock().snapshot()
    }

    /// The droplet holding `ip` now (completed actions only).
    pub fn holder(&self, ip: impl Into<IpAddr>) -> Option<u64> {
        self.state().holder(ip)
    }

    /// What `POST /_sim/holder` does: moves `ip` to `holder` at once, as
    /// another droplet (or the DO console) would, without an action.
    pub async fn set_holder(
        &self,
        ip: impl Into<IpAddr>,
        holder: Option<u64>,
    ) -> anyhow::Result<()> {
        set_holder(&self.shared, ip.into(), holder)
            .await
            .map_err(anyhow::Error::msg)
    }

    /// What `GET /_sim/requests` returns: the API requests, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests()
    }

    /// The API requests with `method` whose path starts with `path_prefix`.
    pub fn requests_to(&self, method: &str, path_prefix: &str) -> Vec<RequestRecord> {
        let mut requests = self.requests();
        requests.retain(|r| r.is(method, path_prefix));
        requests
    }

    /// The instant `uptime_ms` and [`RequestRecord::received_us`] count
    /// from, to compare them with the caller's clock.
    pub fn started_at(&self) -> Instant {
        self.shared.lock().started_at()
    }

    /// What `POST /_sim/faults` does; returns the faults now in force.
    pub fn set_faults(&self, update: &FaultsUpdate) -> anyhow::Result<Faults> {
        update.validate().map_err(anyhow::Error::msg)?;
        let faults = self.shared.lock().update_faults(update);
        self.shared.persist();
        Ok(faults)
    }

    /// What `POST /_sim/reset_faults` does.
    pub fn reset_faults(&self) {
        self.shared.lock().reset_faults();
        self.shared.persist();
    }

    /// Stops the listeners and pending actions, then (with `route`) removes
    /// the routes of the IPs that have a holder.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        if let Some(routes) = &self.shared.routes {
            let holders = self.shared.lock().holders();
            for (ip, holder) in holders {
                if holder.is_some()
                    && let Err(error) = routes.remove(ip).await
                {
                    tracing::warn!(%error, "removing a route at shutdown");
                }
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds both listeners, installs the initial routes (with `route`) and
/// starts serving. Must be called inside a tokio runtime.
pub async fn start(config: SimConfig) -> anyhow::Result<SimHandle> {
    if config.token.is_empty() {
        bail!("the API token must not be empty");
    }
    let droplets: Vec<_> = config.droplets.iter().map(|d| (d.id, d.address)).collect();
    let ips: Vec<_> = config
        .floating_ips
        .iter()
        .map(|f| (f.ip, f.holder))
        .collect();
    let mut state = State::new(&config.region, &droplets, &ips).map_err(anyhow::Error::msg)?;
    for droplet in &config.droplets {
        if let Some(ipv6) = droplet.ipv6 {
            state
                .set_droplet_ipv6(droplet.id, ipv6)
                .map_err(anyhow::Error::msg)?;
        }
    }
    config
        .faults
        .validate()
        .map_err(|e| anyhow::anyhow!("the starting faults: {e}"))?;
    state.set_baseline(&config.faults);

    let routes = if config.route {
        let routes = RouteTable::open().context("opening a netlink route socket")?;
        for (ip, holder) in state.holders() {
            if let Some(holder) = holder {
                routes
                    .set(ip, state.next_hop(holder, ip))
                    .await
                    .map_err(anyhow::Error::msg)?;
            }
        }
        Some(routes)
    } else {
        None
    };

    let api = TcpListener::bind(config.api_listen)
        .await
        .with_context(|| format!("binding the API listener on {}", config.api_listen))?;
    let metadata = TcpListener::bind(config.metadata_listen)
        .await
        .with_context(|| {
            format!(
                "binding the metadata listener on {}",
                config.metadata_listen
            )
        })?;
    let api_addr = api.local_addr()?;
    let metadata_addr = metadata.local_addr()?;
    let (api_tls, ca) = match config.api_tls_listen {
        Some(listen) => {
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding the HTTPS API listener on {listen}"))?;
            let addr = listener.local_addr()?;
            let mut names = Vec::new();
            if !addr.ip().is_unspecified() {
                names.push(addr.ip().to_string());
            }
            for name in &config.tls_names {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
            let ca =
                tls::LabCa::generate(&names).context("the HTTPS API listener's certificate")?;
            tracing::info!(api_tls = %addr, ?names, "API serves HTTPS");
            (Some((listener, addr)), Some(ca))
        }
        None => (None, None),
    };

    let (stop, shutdown) = watch::channel(false);
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        token: config.token,
        action_delay: config.action_delay,
        routes,
        state_file: config.state_file,
        file_lock: Mutex::new(()),
        shutdown: shutdown.clone(),
        close_connections: watch::channel(0).0,
    });
    shared.persist();

    let api_router = api::router(Arc::clone(&shared));
    let api_handler = {
        let shared = Arc::clone(&shared);
        move |conn, request| api::handle(Arc::clone(&shared), api_router.clone(), conn, request)
    };
    let mut tasks = vec![tokio::spawn(server::serve(
        server::Listener {
            name: "api",
            api: true,
            tls: None,
        },
        api,
        Arc::clone(&shared),
        api_handler.clone(),
    ))];
    let api_tls_addr = api_tls.as_ref().map(|(_, addr)| *addr);
    if let (Some((listener, _)), Some(ca)) = (api_tls, &ca) {
        tasks.push(tokio::spawn(server::serve(
            server::Listener {
                name: "api-tls",
                api: true,
                tls: Some(tokio_rustls::TlsAcceptor::from(ca.server_config())),
            },
            listener,
            Arc::clone(&shared),
            api_handler,
        )));
    }
    let metadata_router = metadata::router(Arc::clone(&shared));
    let metadata_shared = Arc::clone(&shared);
    tasks.push(tokio::spawn(server::serve(
        server::Listener {
            name: "metadata",
            api: false,
            tls: None,
        },
        metadata,
        Arc::clone(&shared),
        move |conn: server::Conn, request| {
            metadata::handle(
                Arc::clone(&metadata_shared),
                metadata_router.clone(),
                conn.peer,
                request,
            )
        },
    )));
    tracing::info!(api = %api_addr, api_tls = ?api_tls_addr, metadata = %metadata_addr, route = config.route, "simulator listening");
    Ok(SimHandle {
        api_addr,
        api_tls_addr,
        ca,
        metadata_addr,
        shared,
        stop,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_droplet_specs() {
        assert_eq!(
            "7=192.0.2.11".parse::<DropletSpec>().unwrap(),
            DropletSpec {
                id: 7,
                address: "192.0.2.11".parse().unwrap(),
                ipv6: None,
            }
        );
        assert_eq!(
            "7=192.0.2.11,2001:db8::11".parse::<DropletSpec>().unwrap(),
            DropletSpec {
                id: 7,
                address: "192.0.2.11".parse().unwrap(),
                ipv6: Some("2001:db8::11".parse().unwrap()),
            }
        );
        assert!("7=192.0.2.11,192.0.2.12".parse::<DropletSpec>().is_err());
        assert!("7".parse::<DropletSpec>().is_err());
        assert!("x=192.0.2.11".parse::<DropletSpec>().is_err());
        assert!("7=192.0.2".parse::<DropletSpec>().is_err());
    }

    #[test]
    fn parses_floating_ip_specs() {
        assert_eq!(
            "203.0.113.10".parse::<FloatingIpSpec>().unwrap(),
            FloatingIpSpec {
                ip: "203.0.113.10".parse().unwrap(),
                holder: None
            }
        );
        assert_eq!(
            "203.0.113.10=7".parse::<FloatingIpSpec>().unwrap().holder,
            Some(7)
        );
        assert!("203.0.113.10=".parse::<FloatingIpSpec>().is_err());
        // An IPv6 address is a reserved IPv6.
        assert_eq!(
            "2001:db8::1=7".parse::<FloatingIpSpec>().unwrap(),
            FloatingIpSpec {
                ip: "2001:db8::1".parse().unwrap(),
                holder: Some(7)
            }
        );
        assert!("2001:db8::g".parse::<FloatingIpSpec>().is_err());
    }

    #[tokio::test]
    async fn start_rejects_bad_config() {
        assert!(start(SimConfig::new("")).await.is_err());
        let holder_unknown = SimConfig::new("t")
            .floating_ip("203.0.113.10".parse::<std::net::IpAddr>().unwrap(), Some(3));
        assert!(start(holder_unknown).await.is_err());
    }

    #[tokio::test]
    async fn handle_exposes_state_and_faults() {
        let sim = start(
            SimConfig::new("t")
                .droplet(1, "127.0.0.1".parse().unwrap())
                .floating_ip("203.0.113.10".parse::<std::net::IpAddr>().unwrap(), Some(1)),
        )
        .await
        .unwrap();
        assert_ne!(sim.api_addr().port(), 0);
        assert_ne!(sim.metadata_addr().port(), 0);
        assert_eq!(
            sim.holder("203.0.113.10".parse::<std::net::IpAddr>().unwrap()),
            Some(1)
        );
        let faults = sim
            .set_faults(&FaultsUpdate {
                fail_5xx: Some(2),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(faults.fail_5xx, 2);
        assert!(
            sim.set_faults(&FaultsUpdate {
                fail_5xx_status: Some(200),
                ..Default::default()
            })
            .is_err()
        );
        sim.reset_faults();
        assert_eq!(sim.state().faults, Faults::default());
        sim.shutdown().await;
    }
}
