//! The slice of the DigitalOcean API that failover needs: assign the floating
//! (reserved) IP to a droplet, follow the resulting action, and ask who holds
//! the IP.
//!
//! Every operation runs under one overall deadline. Within it, failures that
//! may go away by themselves (5xx, 429, connection errors, timeouts) are
//! retried with exponential backoff and full jitter; an assign refused
//! because another action on the IP is pending is retried after 250 ms,
//! doubling to 5 s; anything else (401, 403, 404, 422, ...) is returned at
//! once with DO's own `id`, `message` and request id, because retrying a
//! wrong token or a wrong IP only delays the operator seeing it.
//!
//! Retrying a POST is safe here: an assign to the droplet that already
//! holds the IP changes nothing. DO's documentation does not say whether
//! DO answers it with a no-op action or a 422; [`ApiClient::assign_and_wait`]
//! takes either as success (a 422 once the API shows us as the holder), so
//! a request that reached DO and lost its answer costs one extra request.
//!
//! What an answer means (status, headers and body in; an action, a holder,
//! an error or a wait out) is decided by the plain functions of
//! [`response`], which the client runs on every answer and the fuzzer drives
//! directly.

use std::{
    fmt,
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use reqwest::{
    Method, StatusCode,
    header::{AUTHORIZATION, HeaderValue},
};
use serde::{Deserialize, Deserializer};
use thiserror::Error;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use self::response::Failure;
use super::{
    ca::{CaFileError, reqwest_certificates},
    secret::Secret,
};

use lbha_config::{DEFAULT_API_URL, PathFamily};

pub mod response;

/// Where DigitalOcean keeps an address, and so the shape of every request
/// about it: a floating IPv4 under `/v2/floating_ips` or `/v2/reserved_ips`
/// (the configured [`PathFamily`]), a reserved IPv6 under
/// `/v2/reserved_ipv6` (DO's spec, specification/resources/reserved_ipv6).
/// The assign body (`{"type":"assign","droplet_id":N}`) and the action
/// object are the same for both; what differs is the path, the key of the
/// object `GET` returns, and where an action is polled: IPv6 actions have
/// no `.../actions/{id}` in the spec (nor in godo), only `/v2/actions/{id}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collection {
    Ipv4(PathFamily),
    ReservedIpv6,
}

impl Collection {
    /// The collection `ip` belongs to; `family` names the IPv4 one.
    pub fn of(ip: IpAddr, family: PathFamily) -> Self {
        match ip {
            IpAddr::V4(_) => Collection::Ipv4(family),
            IpAddr::V6(_) => Collection::ReservedIpv6,
        }
    }

    /// `/v2/{segment}/{ip}`.
    pub fn segment(self) -> &'static str {
        match self {
            Collection::Ipv4(family) => family.as_str(),
            Collection::ReservedIpv6 => "reserved_ipv6",
        }
    }

    /// The key of the object in `GET /v2/{segment}/{ip}`, and the one also
    /// accepted (the other name of the IPv4 API, so a half-finished rename
    /// on DO's side cannot break the lookup).
    fn object_keys(self) -> [&'static str; 2] {
        match self {
            Collection::Ipv4(PathFamily::FloatingIps) => ["floating_ip", "reserved_ip"],
            Collection::Ipv4(PathFamily::ReservedIps) => ["reserved_ip", "floating_ip"],
            Collection::ReservedIpv6 => ["reserved_ipv6", "reserved_ipv6"],
        }
    }

    fn ip_path(self, ip: IpAddr) -> String {
        format!("/v2/{}/{ip}", self.segment())
    }

    /// Where action `id` on `ip` is polled.
    fn action_path(self, ip: IpAddr, id: u64) -> String {
        match self {
            Collection::Ipv4(_) => format!("{}/actions/{id}", self.ip_path(ip)),
            Collection::ReservedIpv6 => format!("/v2/actions/{id}"),
        }
    }
}

impl From<PathFamily> for Collection {
    fn from(family: PathFamily) -> Self {
        Collection::Ipv4(family)
    }
}

/// The state of a DO action. Statuses DO may add later are kept verbatim so
/// they can be logged, and treated as "not finished yet".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionStatus {
    InProgress,
    Completed,
    Errored,
    Other(String),
}

impl<'de> Deserialize<'de> for ActionStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "in-progress" => ActionStatus::InProgress,
            "completed" => ActionStatus::Completed,
            "errored" => ActionStatus::Errored,
            _ => ActionStatus::Other(s),
        })
    }
}

impl fmt::Display for ActionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ActionStatus::InProgress => "in-progress",
            ActionStatus::Completed => "completed",
            ActionStatus::Errored => "errored",
            ActionStatus::Other(s) => s,
        })
    }
}

/// Who holds a floating IP, as `GET /v2/{family}/{ip}` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder {
    /// `"droplet": null`: nobody.
    Unassigned,
    /// This droplet.
    Droplet(u64),
    /// The API does not show it: no `droplet` key, or a droplet without an
    /// id. DO hides the droplet from a token without the `droplet:read`
    /// scope, so this says nothing about whether the IP is assigned.
    Unknown,
}

impl Holder {
    /// The holding droplet, when the API shows one.
    pub fn droplet(self) -> Option<u64> {
        match self {
            Holder::Droplet(id) => Some(id),
            Holder::Unassigned | Holder::Unknown => None,
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Unassigned => f.write_str("unassigned"),
            Holder::Droplet(id) => write!(f, "droplet {id}"),
            Holder::Unknown => f.write_str("not shown"),
        }
    }
}

/// How [`ApiClient::assign_and_wait`] got the IP onto the droplet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assigned {
    /// The assign action completed.
    Completed(Action),
    /// DO refused the assign (422) and then showed the droplet as the
    /// holder: it already held the IP. Carries the refusal's text.
    AlreadyHeld(String),
}

/// What DigitalOcean made of [`ApiClient::probe_actions`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// Refused for its body (this 4xx, not 401/403): the token passed the
    /// endpoint's scope check, and nothing changed.
    Refused { status: u16 },
    /// Accepted (2xx): DO knew the action type after all.
    Accepted,
}

/// The `type` of the probe's action: not one DigitalOcean knows.
const PROBE_ACTION_TYPE: &str = "lbha_check_cloud_probe";

/// ` (request id X)` for an error's text, or nothing.
fn shown_request_id(request_id: Option<&str>) -> String {
    request_id
        .map(|id| format!(" (request id {id})"))
        .unwrap_or_default()
}

/// A DO action. Only `id` and `status` drive behaviour; the rest is kept for
/// logs and is optional so a change in DO's bookkeeping fields cannot break a
/// failover.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Action {
    pub id: u64,
    pub status: ActionStatus,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub completed_at: Option<String>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub resource_id: Option<u64>,
    #[serde(default)]
    pub resource_type: Option<String>,
    #[serde(default)]
    pub region_slug: Option<String>,
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    })
}

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("building DigitalOcean API client")]
    Client(#[source] reqwest::Error),
    #[error(transparent)]
    CaFile(#[from] CaFileError),
    #[error("invalid DigitalOcean API base URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("DigitalOcean API token is not a valid HTTP header value")]
    InvalidToken,
    /// A response that retrying will not fix (4xx other than 429, or an
    /// unexpected 1xx/3xx), with DO's error id and message, and its request
    /// id (the body's `request_id`, else `x-request-id`) for support.
    #[error("DigitalOcean API {method} {path}: HTTP {status} {id}: {message}{}", shown_request_id(.request_id.as_deref()))]
    Rejected {
        method: Method,
        path: String,
        status: u16,
        id: String,
        message: String,
        request_id: Option<Box<str>>,
    },
    /// The request could not be built or sent for a reason that is not
    /// transient.
    #[error("DigitalOcean API {method} {path}: request failed")]
    Request {
        method: Method,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "DigitalOcean API {method} {path}: gave up after {attempts} attempts in {elapsed:?}: {last}"
    )]
    DeadlineExceeded {
        method: Method,
        path: String,
        attempts: u32,
        elapsed: Duration,
        last: String,
    },
    /// The API's certificate was refused: not signed by a CA we trust (the
    /// system's, or `ca_file`'s), not for this name, expired. Retrying
    /// would not change it.
    #[error(
        "DigitalOcean API {method} {path}: its TLS certificate was refused ({reason}); is the API's CA among the system's roots or in ca_file?"
    )]
    Certificate {
        method: Method,
        path: String,
        reason: String,
    },
    /// A single attempt (no retries) that failed in a way a retry might
    /// have fixed.
    #[error("DigitalOcean API {method} {path}: {last}")]
    Unanswered {
        method: Method,
        path: String,
        last: String,
    },
    /// Retries were stopped because the caller no longer wants the result
    /// (e.g. this node lost mastership while an assign was being retried).
    #[error("DigitalOcean API {method} {path}: abandoned after {attempts} attempts: {last}")]
    Abandoned {
        method: Method,
        path: String,
        attempts: u32,
        last: String,
    },
    /// A 2xx answer that does not say what it should. `body` (what the
    /// server sent, or the part that is wrong) and the source's message are
    /// scrubbed: without the token, and cut. `request_id` is the answer's
    /// `x-request-id`, set by the client.
    #[error("DigitalOcean API {method} {path}: unexpected response body {body:?}{}", shown_request_id(.request_id.as_deref()))]
    Decode {
        method: Method,
        path: String,
        body: String,
        request_id: Option<Box<str>>,
        #[source]
        source: serde_json::Error,
    },
    /// The action (the last of `attempts` assigns that each ended
    /// `errored`) failed on DO's side.
    #[error("DigitalOcean action {id} on {ip} errored{}", if *.attempts > 1 { format!(" (the last of {} assigns that errored)", .attempts) } else { String::new() })]
    ActionErrored { ip: IpAddr, id: u64, attempts: u32 },
    #[error(
        "DigitalOcean action {id} on {ip} still {status} after {waited:?}{}",
        .last_error.as_ref().map(|e| format!(" (last poll: {e})")).unwrap_or_default()
    )]
    ActionTimeout {
        ip: IpAddr,
        id: u64,
        /// The last status seen (`in-progress` if no poll got an answer).
        status: ActionStatus,
        waited: Duration,
        /// Why the last poll failed, when the deadline ran out during one.
        last_error: Option<String>,
    },
}

impl ApiError {
    /// DO's HTTP status for a rejected request.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A decode error of an answer with this `x-request-id`.
    fn with_request_id(mut self, id: Option<String>) -> Self {
        if let ApiError::Decode { request_id, .. } = &mut self {
            *request_id = id.map(String::into_boxed_str);
        }
        self
    }
}

/// How long an idle API connection is kept by default: reqwest's own
/// default, and far beyond the default keep-alive interval.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Knobs of the client; the defaults suit production.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    pub base_url: String,
    pub path_family: PathFamily,
    /// One HTTP exchange, headers and body.
    pub request_timeout: Duration,
    /// One operation including all of its retries.
    pub operation_deadline: Duration,
    /// First backoff ceiling; doubles per attempt up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How often `wait_action` asks about an unfinished action. DO
    /// reassignments usually finish in a few seconds.
    pub action_poll_interval: Duration,
    /// The first wait before retrying an assign refused because another
    /// action on the IP is pending; it doubles per refusal up to
    /// `pending_backoff_max`. A failover so spends a handful of requests
    /// of the 250/minute the token shares with other tools, not one every
    /// 250 ms.
    pub pending_backoff_base: Duration,
    pub pending_backoff_max: Duration,
    /// A PEM bundle of CA certificates trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// How long an idle connection stays in the pool for the next request
    /// (a Backup's [`keep_warm`](ApiClient::keep_warm) comes well within it).
    pub pool_idle_timeout: Duration,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_API_URL.to_owned(),
            path_family: PathFamily::default(),
            request_timeout: Duration::from_secs(10),
            operation_deadline: Duration::from_secs(30),
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(5),
            action_poll_interval: Duration::from_secs(1),
            pending_backoff_base: Duration::from_millis(250),
            pending_backoff_max: Duration::from_secs(5),
            ca_file: None,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
        }
    }
}

#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    opts: ApiOptions,
    /// `Bearer <token>`, marked sensitive so reqwest/hyper never print it.
    auth: HeaderValue,
    /// Kept only to scrub it from anything the server sends back.
    token: Secret,
    /// Every HTTP exchange by outcome, for metrics.
    calls: Arc<ApiCallCounts>,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("opts", &self.opts)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// How one API exchange ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiOutcome {
    Success,
    RateLimited,
    ServerError,
    ClientError,
    TransportError,
}

impl ApiOutcome {
    pub const ALL: [ApiOutcome; 5] = [
        ApiOutcome::Success,
        ApiOutcome::RateLimited,
        ApiOutcome::ServerError,
        ApiOutcome::ClientError,
        ApiOutcome::TransportError,
    ];

    fn of(status: StatusCode) -> Self {
        if status.is_success() {
            ApiOutcome::Success
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            ApiOutcome::RateLimited
        } else if status.is_server_error() {
            ApiOutcome::ServerError
        } else {
            ApiOutcome::ClientError
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            ApiOutcome::Success => "success",
            ApiOutcome::RateLimited => "rate_limited",
            ApiOutcome::ServerError => "server_error",
            ApiOutcome::ClientError => "client_error",
            ApiOutcome::TransportError => "transport_error",
        }
    }
}

/// Exchanges by [`ApiOutcome`].
#[derive(Debug, Default)]
pub struct ApiCallCounts([std::sync::atomic::AtomicU64; 5]);

impl ApiCallCounts {
    fn count(&self, outcome: ApiOutcome) {
        self.0[outcome as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self, outcome: ApiOutcome) -> u64 {
        self.0[outcome as usize].load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl ApiClient {
    pub fn new(mut opts: ApiOptions, token: Secret) -> Result<Self, ApiError> {
        opts.base_url = opts.base_url.trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&opts.base_url).map_err(|e| ApiError::InvalidUrl {
            url: opts.base_url.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ApiError::InvalidUrl {
                url: opts.base_url.clone(),
                reason: "scheme must be http or https".into(),
            });
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| ApiError::InvalidToken)?;
        auth.set_sensitive(true);
        let mut builder = reqwest::Client::builder()
            // DO does not redirect API calls; following one would only send
            // the token somewhere we did not configure.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lbha-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(opts.request_timeout)
            // The connection a takeover's assign goes out on: kept between
            // requests (HTTP/1.1 keep-alive), one per host is all we use.
            .pool_idle_timeout(opts.pool_idle_timeout)
            .pool_max_idle_per_host(2)
            // A peer gone without a FIN is found out while idle, so the next
            // request does not wait on a dead connection.
            .tcp_keepalive(Duration::from_secs(15));
        if let Some(path) = &opts.ca_file {
            builder = builder.tls_certs_merge(reqwest_certificates(path)?);
        }
        let http = builder.build().map_err(ApiError::Client)?;
        Ok(Self {
            http,
            opts,
            auth,
            token,
            calls: Arc::default(),
        })
    }

    /// Counts of the HTTP exchanges this client made, by outcome.
    pub fn call_counts(&self) -> Arc<ApiCallCounts> {
        self.calls.clone()
    }

    pub fn options(&self) -> &ApiOptions {
        &self.opts
    }

    fn collection(&self, ip: IpAddr) -> Collection {
        Collection::of(ip, self.opts.path_family)
    }

    fn ip_path(&self, ip: IpAddr) -> String {
        self.collection(ip).ip_path(ip)
    }

    /// Asks DO to move `ip` to `droplet_id`; returns the (usually
    /// in-progress) action.
    pub async fn assign(&self, ip: impl Into<IpAddr>, droplet_id: u64) -> Result<Action, ApiError> {
        self.assign_while(ip, droplet_id, || true).await
    }

    /// Like [`assign`](Self::assign), but checks `still_wanted` before every
    /// retry and gives up with [`ApiError::Abandoned`] once it is false, so a
    /// node that lost mastership does not keep pulling the IP back.
    pub async fn assign_while(
        &self,
        ip: impl Into<IpAddr>,
        droplet_id: u64,
        still_wanted: impl Fn() -> bool + Sync,
    ) -> Result<Action, ApiError> {
        let ip = ip.into();
        let deadline = deadline_after(self.opts.operation_deadline);
        self.assign_until(ip, droplet_id, deadline, &still_wanted)
            .await
    }

    async fn assign_until(
        &self,
        ip: IpAddr,
        droplet_id: u64,
        deadline: Instant,
        still_wanted: &(dyn Fn() -> bool + Sync),
    ) -> Result<Action, ApiError> {
        let path = format!("{}/actions", self.ip_path(ip));
        let body = serde_json::json!({ "type": "assign", "droplet_id": droplet_id });
        let (text, request_id) = self
            .call(Method::POST, &path, Some(&body), deadline, still_wanted)
            .await?;
        // When DigitalOcean's acceptance reached us: what a failover waits
        // for, on the wall clock so it can be set against other logs.
        let answered_unix_us = unix_us(SystemTime::now());
        let action = response::decode_action(&Method::POST, &path, &text, &self.token)
            .map_err(|e| e.with_request_id(request_id))?;
        info!(%ip, droplet_id, action_id = action.id, status = %action.status, answered_unix_us, "assign action created");
        Ok(action)
    }

    /// The whole assign of `ip` to `droplet_id`: the request, then its
    /// action until it completes. Success is also a 422 after which the API
    /// shows `droplet_id` as the holder (DO refusing to assign an IP to the
    /// droplet that holds it). An action that ends `errored` is a failed
    /// assign, asked again while the operation deadline (from now) lasts,
    /// then reported as [`ApiError::ActionErrored`]. Each wait for an
    /// action has the operation deadline of its own, as a single assign
    /// always had. `still_wanted` is asked before every retry, as for
    /// [`assign_while`](Self::assign_while).
    pub async fn assign_and_wait(
        &self,
        ip: impl Into<IpAddr>,
        droplet_id: u64,
        still_wanted: impl Fn() -> bool + Sync,
    ) -> Result<Assigned, ApiError> {
        let ip = ip.into();
        let deadline = deadline_after(self.opts.operation_deadline);
        let mut errored: u32 = 0;
        // The last errored action, while assigning again after it.
        let mut last_errored: Option<u64> = None;
        // When the deadline runs out during an assign after errored actions,
        // the errored actions are the failure to report: the timed-out
        // attempt alone would say "1 attempt in 1 ms".
        let errored_then_out_of_time = |error: ApiError, last_errored: Option<u64>, errored| match (
            error,
            last_errored,
        ) {
            (error @ ApiError::DeadlineExceeded { .. }, Some(id)) => {
                warn!(%ip, droplet_id, action_id = id, errored, %error, "assigning again after errored actions ran out of time");
                ApiError::ActionErrored {
                    ip,
                    id,
                    attempts: errored,
                }
            }
            (error, _) => error,
        };
        loop {
            let action = match self
                .assign_until(ip, droplet_id, deadline, &still_wanted)
                .await
            {
                Ok(action) => action,
                Err(refused @ ApiError::Rejected { status: 422, .. }) => {
                    return self.already_held(ip, droplet_id, refused).await;
                }
                Err(e) => return Err(errored_then_out_of_time(e, last_errored, errored)),
            };
            let done = if action.status == ActionStatus::Completed {
                Ok(action)
            } else {
                let wait = deadline_after(self.opts.operation_deadline);
                self.wait_action(ip, action.id, wait).await
            };
            match done {
                Ok(action) => return Ok(Assigned::Completed(action)),
                Err(ApiError::ActionErrored { id, .. }) => {
                    errored += 1;
                    let pause = self.backoff(errored);
                    let resume = Instant::now().checked_add(pause);
                    if resume.is_none_or(|at| at >= deadline) || !still_wanted() {
                        return Err(ApiError::ActionErrored {
                            ip,
                            id,
                            attempts: errored,
                        });
                    }
                    warn!(%ip, droplet_id, action_id = id, errored, retry_in_ms = pause.as_millis() as u64, "assign action errored; assigning again");
                    last_errored = Some(id);
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(errored_then_out_of_time(e, last_errored, errored)),
            }
        }
    }

    /// Whether the token may act on `ip`, without acting: DigitalOcean has
    /// no dry run for actions, so this sends one of a type DO does not know
    /// (`{"type":"lbha_check_cloud_probe"}`), which it refuses without
    /// changing anything. A 400/422 means the token got past the scope
    /// check of the actions endpoint (`reserved_ip:update`), a 401/403
    /// (an [`ApiError::Rejected`]) that it did not.
    pub async fn probe_actions(&self, ip: impl Into<IpAddr>) -> Result<ProbeAnswer, ApiError> {
        let ip = ip.into();
        let path = format!("{}/actions", self.ip_path(ip));
        let body = serde_json::json!({ "type": PROBE_ACTION_TYPE });
        let deadline = deadline_after(self.opts.operation_deadline);
        match self
            .call(Method::POST, &path, Some(&body), deadline, &|| true)
            .await
        {
            Ok(_) => Ok(ProbeAnswer::Accepted),
            Err(ApiError::Rejected {
                status: status @ (400 | 422),
                ..
            }) => Ok(ProbeAnswer::Refused { status }),
            Err(e) => Err(e),
        }
    }

    /// After a 422 to an assign: success if the API now shows `droplet_id`
    /// as the holder, else the refusal.
    async fn already_held(
        &self,
        ip: IpAddr,
        droplet_id: u64,
        refused: ApiError,
    ) -> Result<Assigned, ApiError> {
        match self.holder(ip).await {
            Ok(Holder::Droplet(holder)) if holder == droplet_id => {
                info!(%ip, droplet_id, refusal = %refused, "assign refused, but the floating IP is already on this droplet");
                Ok(Assigned::AlreadyHeld(refused.to_string()))
            }
            Ok(holder) => {
                debug!(%ip, droplet_id, %holder, "assign refused and the floating IP is not on this droplet");
                Err(refused)
            }
            Err(e) => {
                debug!(%ip, droplet_id, error = %e, "assign refused; cannot ask who holds the floating IP");
                Err(refused)
            }
        }
    }

    /// The current state of action `id` on `ip`.
    pub async fn action(&self, ip: impl Into<IpAddr>, id: u64) -> Result<Action, ApiError> {
        let ip = ip.into();
        let deadline = deadline_after(self.opts.operation_deadline);
        self.action_until(ip, id, deadline).await
    }

    async fn action_until(
        &self,
        ip: IpAddr,
        id: u64,
        deadline: Instant,
    ) -> Result<Action, ApiError> {
        let path = self.collection(ip).action_path(ip, id);
        let (text, request_id) = self
            .call(Method::GET, &path, None, deadline, &|| true)
            .await?;
        response::decode_action(&Method::GET, &path, &text, &self.token)
            .map_err(|e| e.with_request_id(request_id))
    }

    /// Polls action `id` until it completes (Ok), errors (Err) or `deadline`
    /// passes. Unknown statuses are logged and polled like `in-progress`:
    /// guessing success could leave the IP nowhere, guessing failure could
    /// trigger a needless second assign.
    pub async fn wait_action(
        &self,
        ip: impl Into<IpAddr>,
        id: u64,
        deadline: Instant,
    ) -> Result<Action, ApiError> {
        let ip = ip.into();
        let start = Instant::now();
        let mut last = ActionStatus::InProgress;
        loop {
            if Instant::now() >= deadline {
                return Err(ApiError::ActionTimeout {
                    ip,
                    id,
                    status: last,
                    waited: start.elapsed(),
                    last_error: None,
                });
            }
            // The deadline running out inside a poll (slow or failing API)
            // is still "the action did not finish in time".
            let action = match self.action_until(ip, id, deadline).await {
                Ok(action) => action,
                Err(ApiError::DeadlineExceeded { last: error, .. }) => {
                    return Err(ApiError::ActionTimeout {
                        ip,
                        id,
                        status: last,
                        waited: start.elapsed(),
                        last_error: Some(error),
                    });
                }
                Err(e) => return Err(e),
            };
            match &action.status {
                ActionStatus::Completed => return Ok(action),
                ActionStatus::Errored => {
                    return Err(ApiError::ActionErrored {
                        ip,
                        id,
                        attempts: 1,
                    });
                }
                ActionStatus::InProgress => {}
                ActionStatus::Other(s) => {
                    warn!(%ip, action_id = id, status = %s, "unknown action status; still waiting");
                }
            }
            last = action.status;
            let pause = self
                .opts
                .action_poll_interval
                .min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
        }
    }

    /// One cheap request (who holds `ip`), one attempt and no retries: a
    /// Backup's way to keep a connection to the API open (HTTP/1.1
    /// keep-alive) so that a takeover's assign finds one and costs a single
    /// round trip. A connection the server or the network dropped is
    /// replaced by the pool on the next request; a failure here only means
    /// the next keep-alive (or the assign) connects afresh.
    pub async fn keep_warm(&self, ip: impl Into<IpAddr>) -> Result<Holder, ApiError> {
        let ip = ip.into();
        let path = self.ip_path(ip);
        let method = Method::GET;
        let (text, request_id) = self
            .attempt(&method, &path, None, self.opts.request_timeout, 1)
            .await
            .map_err(|failure| match failure {
                Failure::Fatal(e) => e,
                Failure::Transient(last)
                | Failure::RetryAfter(_, last)
                | Failure::Pending(last) => ApiError::Unanswered {
                    method: method.clone(),
                    path: path.clone(),
                    last,
                },
            })?;
        response::decode_holder(self.collection(ip), &path, &text, &self.token)
            .map(|(holder, _)| holder)
            .map_err(|e| e.with_request_id(request_id))
    }

    /// Who holds `ip`, as the API shows it.
    pub async fn holder(&self, ip: impl Into<IpAddr>) -> Result<Holder, ApiError> {
        Ok(self.holder_and_lock(ip).await?.0)
    }

    /// Who holds the IP, and whether an action on it is still pending
    /// (`locked`): then the holder is about to change.
    pub async fn holder_and_lock(&self, ip: impl Into<IpAddr>) -> Result<(Holder, bool), ApiError> {
        let ip = ip.into();
        let path = self.ip_path(ip);
        let deadline = deadline_after(self.opts.operation_deadline);
        let (text, request_id) = self
            .call(Method::GET, &path, None, deadline, &|| true)
            .await?;
        response::decode_holder(self.collection(ip), &path, &text, &self.token)
            .map_err(|e| e.with_request_id(request_id))
    }

    /// One operation: attempts until success, a fatal answer, the deadline,
    /// or `still_wanted` turning false. Ok carries the body of the 2xx
    /// answer, for the caller to decode, and its `x-request-id`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        deadline: Instant,
        still_wanted: &(dyn Fn() -> bool + Sync),
    ) -> Result<(String, Option<String>), ApiError> {
        let start = Instant::now();
        let mut attempts: u32 = 0;
        let mut pending: u32 = 0;
        let mut previous: Option<String> = None;
        loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let (pause, mut last) =
                match self.attempt(&method, path, body, remaining, attempts).await {
                    Ok(answer) => return Ok(answer),
                    Err(Failure::Fatal(e)) => return Err(e),
                    Err(Failure::Transient(last)) => (self.backoff(attempts), last),
                    Err(Failure::RetryAfter(wait, last)) => (wait, last),
                    Err(Failure::Pending(last)) => {
                        pending += 1;
                        (self.pending_backoff(pending), last)
                    }
                };
            // An attempt cut short by the deadline says only "timed out";
            // the failure before it is the one worth reporting.
            if remaining < self.opts.request_timeout
                && Instant::now() >= deadline
                && let Some(prev) = previous.take()
            {
                last = format!("{prev}; the last attempt ran out of time");
            }
            previous = Some(last.clone());
            let exceeded = || ApiError::DeadlineExceeded {
                method: method.clone(),
                path: path.to_owned(),
                attempts,
                elapsed: start.elapsed(),
                last: last.clone(),
            };
            // A wait that ends past the deadline cannot lead to success; say
            // so now instead of sleeping into the failure.
            let Some(resume) = Instant::now().checked_add(pause) else {
                return Err(exceeded());
            };
            if resume >= deadline {
                return Err(exceeded());
            }
            warn!(method = %method, path, attempt = attempts, retry_in_ms = pause.as_millis() as u64, error = %last, "DigitalOcean API attempt failed; retrying");
            tokio::time::sleep_until(resume).await;
            if !still_wanted() {
                return Err(ApiError::Abandoned {
                    method: method.clone(),
                    path: path.to_owned(),
                    attempts,
                    last,
                });
            }
        }
    }

    /// One HTTP exchange; Ok carries the body of a 2xx answer and its
    /// `x-request-id`.
    async fn attempt(
        &self,
        method: &Method,
        path: &str,
        body: Option<&serde_json::Value>,
        remaining: Duration,
        attempt: u32,
    ) -> Result<(String, Option<String>), Failure> {
        let url = format!("{}{path}", self.opts.base_url);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header(AUTHORIZATION, self.auth.clone())
            .timeout(self.opts.request_timeout.min(remaining));
        if let Some(body) = body {
            req = req.json(body);
        }
        let sent = Instant::now();
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => {
                self.calls.count(ApiOutcome::TransportError);
                return Err(Self::transport_failure(method, path, e, attempt, sent));
            }
        };
        let status = resp.status();
        self.calls.count(ApiOutcome::of(status));
        let headers = resp.headers().clone();
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => return Err(Self::transport_failure(method, path, e, attempt, sent)),
        };
        // Method, path and status only: headers and bodies stay out of logs.
        debug!(method = %method, path, status = status.as_u16(), attempt, elapsed_ms = sent.elapsed().as_millis() as u64, "DigitalOcean API request");
        response::check_status(
            method,
            path,
            status,
            &headers,
            &text,
            &self.token,
            SystemTime::now(),
        )?;
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(|id| response::scrub(id, &self.token));
        Ok((text, request_id))
    }

    fn transport_failure(
        method: &Method,
        path: &str,
        e: reqwest::Error,
        attempt: u32,
        sent: Instant,
    ) -> Failure {
        debug!(method = %method, path, attempt, elapsed_ms = sent.elapsed().as_millis() as u64, timeout = e.is_timeout(), connect = e.is_connect(), "DigitalOcean API request failed");
        if e.is_builder() {
            return Failure::Fatal(ApiError::Request {
                method: method.clone(),
                path: path.to_owned(),
                source: e,
            });
        }
        if let Some(reason) = refused_certificate(&e) {
            return Failure::Fatal(ApiError::Certificate {
                method: method.clone(),
                path: path.to_owned(),
                reason,
            });
        }
        // Everything else (refused, reset, closed mid-answer, timed out) is
        // the network or DO having a bad moment.
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "connection error"
        };
        Failure::Transient(format!("{kind}: {}", crate::error_chain(&e.without_url())))
    }

    /// The wait before retrying after the `n`-th pending-event refusal:
    /// `pending_backoff_base * 2^(n-1)`, at most `pending_backoff_max`. Not
    /// jittered: the pending action ends by itself, whoever else waits.
    pub(crate) fn pending_backoff(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.opts
            .pending_backoff_base
            .saturating_mul(factor)
            .min(self.opts.pending_backoff_max)
    }

    /// Full jitter: uniform in [0, min(max, base * 2^(attempt-1))].
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.opts.backoff_base.as_millis() as u64;
        let cap = self.opts.backoff_max.as_millis() as u64;
        let ceiling = base
            .saturating_mul(
                1u64.checked_shl(attempt.saturating_sub(1))
                    .unwrap_or(u64::MAX),
            )
            .min(cap);
        Duration::from_millis(fastrand::u64(0..=ceiling))
    }
}

/// Why rustls refused the server's certificate, if that is what `error`
/// comes from. An `io::Error` leaves the error it wraps out of `source()`
/// (and tokio-rustls' rustls error comes wrapped twice), so each one met is
/// opened with `get_ref`, as deep as it goes.
fn refused_certificate(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        let mut candidate = Some(e);
        while let Some(c) = candidate {
            if let Some(rustls::Error::InvalidCertificate(why)) = c.downcast_ref::<rustls::Error>()
            {
                return Some(format!("{why:?}"));
            }
            candidate = c
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .map(|inner| inner as &(dyn std::error::Error + 'static));
        }
        next = e.source();
    }
    None
}

/// Microseconds since the Unix epoch (0 before it).
fn unix_us(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `now + d`, saturating: a configured `Duration::MAX` means "no deadline to
/// speak of", not a panic on overflow.
pub(crate) fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_hours(876000))
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::UNIX_EPOCH};

    use lbha_dosim::{FaultsUpdate, ScriptedFault};

    use super::*;
    use crate::cloud::test_support::{
        ALWAYS, IP, OTHER_DROPLET, OUR_DROPLET, Sim, TOKEN, capture_logs, closed_port_url,
        fast_client as client, fast_options as opts,
    };

    /// [`client`] with a shorter operation deadline.
    fn client_within(sim: &Sim, deadline: Duration) -> ApiClient {
        let opts = ApiOptions {
            operation_deadline: deadline,
            ..opts(sim.api_url())
        };
        ApiClient::new(opts, Secret::new(TOKEN)).unwrap()
    }

    /// Actions end on their `n`-th status poll (0: in the POST answer).
    fn polls_to_complete(n: u32) -> FaultsUpdate {
        FaultsUpdate {
            complete_after_polls: Some(n),
            ..FaultsUpdate::default()
        }
    }

    /// Every API call answers `status` with DO's error body saying
    /// `message`, until a test sets `fail_5xx` back to 0.
    fn server_errors(status: u16, message: &str) -> FaultsUpdate {
        FaultsUpdate {
            fail_5xx: Some(ALWAYS),
            fail_5xx_status: Some(status),
            fail_5xx_message: Some(message.to_owned()),
            ..FaultsUpdate::default()
        }
    }

    /// The next `n` API calls answer 429 with `Retry-After: secs`; actions
    /// end in the POST answer, so one successful assign is one request.
    fn rate_limited_calls(n: u32, retry_after_secs: u64) -> FaultsUpdate {
        FaultsUpdate {
            rate_limit: Some(n),
            retry_after_secs: Some(retry_after_secs),
            complete_after_polls: Some(0),
            ..FaultsUpdate::default()
        }
    }

    fn rate_limited(headers: &[(&str, String)]) -> ScriptedFault {
        ScriptedFault::Error {
            status: 429,
            id: "too_many_requests".into(),
            message: "API Rate limit exceeded.".into(),
            request_id: None,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    fn raw(status: u16, body: impl Into<String>) -> ScriptedFault {
        ScriptedFault::Raw {
            status,
            body: body.into(),
            headers: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn assign_lifecycle_polls_until_completed() {
        let sim = Sim::start(None).await;
        sim.faults(polls_to_complete(3));
        let api = client(&sim);
        let action = api.assign(IP, OUR_DROPLET).await.unwrap();
        assert_eq!(action.status, ActionStatus::InProgress);
        assert_eq!(action.kind.as_deref(), Some("assign_ip"));
        assert_eq!(action.resource_id, Some(u64::from(u32::from(IP))));
        assert_eq!(
            sim.holder(IP),
            None,
            "not moved before the action completes"
        );

        let done = api
            .wait_action(IP, action.id, Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(done.id, action.id);
        assert_eq!(done.status, ActionStatus::Completed);
        assert!(done.completed_at.is_some());
        assert_eq!(sim.holder(IP), Some(OUR_DROPLET));
        assert_eq!(sim.assigns(), 1);
        assert_eq!(
            sim.count(
                "GET",
                &format!("/v2/floating_ips/{IP}/actions/{}", action.id)
            ),
            3
        );

        let post = sim.posts().remove(0);
        assert_eq!(post.path, format!("/v2/floating_ips/{IP}/actions"));
        let body: serde_json::Value = serde_json::from_str(&post.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"type": "assign", "droplet_id": OUR_DROPLET})
        );
        // The token goes in the Authorization header of every request, and
        // nowhere else.
        for request in sim.requests() {
            assert_eq!(
                request.header("authorization"),
                Some(&*format!("Bearer {TOKEN}")),
                "{} {}",
                request.method,
                request.path
            );
            let elsewhere = request
                .headers
                .iter()
                .filter(|(name, _)| name != "authorization")
                .any(|(_, value)| value.contains(TOKEN));
            assert!(!elsewhere && !request.path.contains(TOKEN) && !request.body.contains(TOKEN));
        }
        assert_eq!(post.header("content-type"), Some("application/json"));
        assert_eq!(api.holder(IP).await.unwrap(), Holder::Droplet(OUR_DROPLET));
    }

    #[tokio::test]
    async fn https_trusts_the_ca_file_and_only_with_it() {
        let sim = Sim::start_https(Some(OUR_DROPLET)).await;
        let trusting = ApiClient::new(
            ApiOptions {
                ca_file: Some(sim.ca_file()),
                ..opts(sim.https_url())
            },
            Secret::new(TOKEN),
        )
        .unwrap();
        assert_eq!(
            trusting.holder(IP).await.unwrap(),
            Holder::Droplet(OUR_DROPLET)
        );
        let requests = sim.requests();
        assert_eq!(requests.len(), 1);
        assert!(requests[0].tls);

        // Without it, the system's roots do not know the lab CA: nothing
        // reaches the API.
        let untrusting = ApiClient::new(
            ApiOptions {
                operation_deadline: Duration::from_secs(20),
                ..opts(sim.https_url())
            },
            Secret::new(TOKEN),
        )
        .unwrap();
        let asked = Instant::now();
        let error = untrusting.holder(IP).await.unwrap_err();
        let text = crate::error_chain(&error);
        // Reported at once (not retried until the deadline): retrying does
        // not change a certificate. The token is in no part of it.
        assert!(
            matches!(error, ApiError::Certificate { .. }) && text.contains("UnknownIssuer"),
            "{text}"
        );
        assert!(text.contains("ca_file"), "says what to do: {text}");
        assert!(asked.elapsed() < Duration::from_secs(5), "{text}");
        assert!(!text.contains(TOKEN) && !format!("{error:?}").contains(TOKEN));
        assert_eq!(sim.requests().len(), 1);

        let missing = ApiClient::new(
            ApiOptions {
                ca_file: Some(sim.ca_file().with_file_name("missing.pem")),
                ..opts(sim.https_url())
            },
            Secret::new(TOKEN),
        );
        assert!(matches!(missing, Err(ApiError::CaFile(_))), "{missing:?}");
    }

    #[tokio::test]
    async fn keep_warm_keeps_one_connection_and_replaces_a_closed_one() {
        let sim = Sim::start_https(None).await;
        let client = ApiClient::new(
            ApiOptions {
                ca_file: Some(sim.ca_file()),
                ..opts(sim.https_url())
            },
            Secret::new(TOKEN),
        )
        .unwrap();
        for _ in 0..3 {
            assert_eq!(client.keep_warm(IP).await.unwrap(), Holder::Unassigned);
        }
        // The assign (and its polls) on the same connection.
        client
            .assign_and_wait(IP, OUR_DROPLET, || true)
            .await
            .unwrap();
        let connections = sim.connections();
        assert!(connections.len() >= 5, "{connections:?}");
        assert!(connections.iter().all(|c| *c == 1), "{connections:?}");
        assert_eq!(sim.state().api_connections, 1);

        // The API side closes it (an idle timeout, a restart): the next
        // request simply opens another.
        assert_eq!(sim.close_connections(), 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            client.keep_warm(IP).await.unwrap(),
            Holder::Droplet(OUR_DROPLET)
        );
        assert_eq!(sim.connections().last(), Some(&2));
        assert_eq!(sim.state().api_connections, 2);
        assert!(
            sim.requests()
                .iter()
                .all(|r| r.status.as_deref().is_some_and(|s| s.starts_with('2'))),
            "no request failed: {:?}",
            sim.requests()
        );

        // One attempt only: a 5xx is reported, not retried.
        sim.faults(server_errors(503, "down"));
        let before = sim.requests().len();
        let error = client.keep_warm(IP).await.unwrap_err();
        assert!(matches!(error, ApiError::Unanswered { .. }), "{error}");
        assert_eq!(sim.requests().len(), before + 1);
    }

    #[tokio::test]
    async fn holder_on_both_path_families() {
        let sim = Sim::start(None).await;
        let floating = client(&sim);
        assert_eq!(floating.holder(IP).await.unwrap(), Holder::Unassigned);
        sim.set_holder(IP, Some(OTHER_DROPLET)).await.unwrap();
        assert_eq!(
            floating.holder(IP).await.unwrap(),
            Holder::Droplet(OTHER_DROPLET)
        );

        let reserved = ApiClient::new(
            ApiOptions {
                path_family: PathFamily::ReservedIps,
                ..opts(format!("{}/", sim.api_url()))
            },
            Secret::new(TOKEN),
        )
        .unwrap();
        assert_eq!(
            reserved.holder(IP).await.unwrap(),
            Holder::Droplet(OTHER_DROPLET)
        );
        reserved.assign(IP, OUR_DROPLET).await.unwrap();
        assert_eq!(sim.count("GET", "/v2/reserved_ips/"), 1);
        assert_eq!(
            sim.count("POST", &format!("/v2/reserved_ips/{IP}/actions")),
            1
        );
    }

    #[tokio::test]
    async fn server_errors_are_retried_then_succeed() {
        let sim = Sim::start(None).await;
        sim.faults(polls_to_complete(0));
        sim.script(vec![
            ScriptedFault::error(500, "server_error", "Server Error"),
            ScriptedFault::error(503, "service_unavailable", "try later"),
        ]);
        let action = client(&sim).assign(IP, OUR_DROPLET).await.unwrap();
        assert_eq!(action.status, ActionStatus::Completed);
        assert_eq!(sim.assigns(), 3, "two failures and the success");
    }

    #[tokio::test]
    async fn dropped_connection_and_timeout_are_retried() {
        let sim = Sim::start(None).await;
        sim.faults(polls_to_complete(0));
        sim.script(vec![
            ScriptedFault::Drop,
            // Longer than the 500 ms request timeout.
            ScriptedFault::Delay { ms: 1500 },
        ]);
        client(&sim).assign(IP, OUR_DROPLET).await.unwrap();
        assert_eq!(sim.assigns(), 3);
        assert_eq!(sim.holder(IP), Some(OUR_DROPLET));
    }

    #[tokio::test]
    async fn connection_refused_is_retried_until_deadline() {
        let api = ApiClient::new(
            ApiOptions {
                operation_deadline: Duration::from_millis(300),
                ..opts(closed_port_url().await)
            },
            Secret::new(TOKEN),
        )
        .unwrap();
        let err = api.holder(IP).await.unwrap_err();
        match &err {
            ApiError::DeadlineExceeded { attempts, last, .. } => {
                assert!(*attempts > 1, "{err}");
                assert!(last.contains("connection"), "{err}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn rate_limit_honours_retry_after() {
        let sim = Sim::start(None).await;
        sim.faults(rate_limited_calls(1, 1));
        let start = Instant::now();
        client(&sim).assign(IP, OUR_DROPLET).await.unwrap();
        let posts = sim.posts();
        assert_eq!(posts.len(), 2);
        let gap = sim.arrival(&posts[1]) - sim.arrival(&posts[0]);
        assert!(gap >= Duration::from_secs(1), "{gap:?}");
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn rate_limit_uses_reset_when_remaining_is_zero() {
        let sim = Sim::start(None).await;
        sim.faults(polls_to_complete(0));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let started = tokio::time::Instant::now();
        let reset = now.as_secs() + 2;
        sim.script(vec![rate_limited(&[
            ("ratelimit-limit", "5000".into()),
            ("ratelimit-remaining", "0".into()),
            ("ratelimit-reset", reset.to_string()),
        ])]);
        client(&sim).assign(IP, OUR_DROPLET).await.unwrap();
        let posts = sim.posts();
        assert_eq!(posts.len(), 2);
        // The wait runs from when the 429 came back (however slow the
        // machine was to send it) to the reset second.
        let answered_unix = now + (sim.arrival(&posts[0]) - started);
        let expected_wait = Duration::from_secs(reset).saturating_sub(answered_unix);
        let gap = sim.arrival(&posts[1]) - sim.arrival(&posts[0]);
        assert!(
            gap + Duration::from_millis(50) >= expected_wait,
            "{gap:?} < {expected_wait:?}"
        );
    }

    #[tokio::test]
    async fn zero_retry_after_still_pauses() {
        // `Retry-After: 0` from an overloaded API must not turn the retries
        // into a busy loop that only deepens the rate limiting.
        let sim = Sim::start(None).await;
        sim.faults(rate_limited_calls(3, 0));
        client(&sim).assign(IP, OUR_DROPLET).await.unwrap();
        let posts = sim.posts();
        assert_eq!(posts.len(), 4);
        for pair in posts.windows(2) {
            let gap = sim.arrival(&pair[1]) - sim.arrival(&pair[0]);
            assert!(gap >= response::MIN_RATE_LIMIT_WAIT, "{gap:?}");
        }
    }

    #[tokio::test]
    async fn retry_after_beyond_deadline_fails_fast() {
        let sim = Sim::start(None).await;
        sim.faults(rate_limited_calls(1, 60));
        let start = Instant::now();
        let err = client(&sim).assign(IP, OUR_DROPLET).await.unwrap_err();
        assert!(
            matches!(err, ApiError::DeadlineExceeded { attempts: 1, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("429"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn pending_event_is_waited_out() {
        // The old master's assign is still running: ours must follow it.
        let sim = Sim::start(None).await;
        sim.faults(polls_to_complete(0));
        sim.script(vec![ScriptedFault::error(
            422,
            "unprocessable_entity",
            "Floating IP already has a pending event.",
        )]);
        client(&sim).assign(IP, OUR_DROPLET).await.unwrap();
        assert_eq!(sim.count("POST", "/v2/"), 2, "rejected once, then retried");
    }

    fn pending_event() -> ScriptedFault {
        ScriptedFault::error(
            422,
            "unprocessable_entity",
            "Floating IP already has a pending event.",
        )
    }

    /// A pending event is waited out with 250 ms doubling to 5 s between
    /// requests (it was a fixed 250 ms: 4 requests a second for as long as
    /// the other action ran).
    #[tokio::test]
    async fn pending_event_backs_off_doubling() {
        let sim = Sim::start(None).await;
        sim.faults(polls_to_complete(0));
        sim.script(vec![pending_event(); 4]);
        client(&sim).assign(IP, OUR_DROPLET).await.unwrap();
        let posts = sim.posts();
        assert_eq!(posts.len(), 5, "four refusals, then the assign");
        let gaps: Vec<Duration> = posts
            .windows(2)
            .map(|pair| sim.arrival(&pair[1]) - sim.arrival(&pair[0]))
            .collect();
        for (gap, expected_ms) in gaps.iter().zip([250, 500, 1000, 2000]) {
            let expected = Duration::from_millis(expected_ms);
            assert!(
                *gap >= expected && *gap < expected + Duration::from_millis(200),
                "{gaps:?}"
            );
        }
    }

    /// How many assign requests one operation sends at most while another
    /// action stays pending: the schedule of the defaults within the
    /// default 30 s deadline, and the same at a tenth of the scale against
    /// dosim (a pending event that never ends).
    #[tokio::test]
    async fn a_pending_event_costs_ten_requests_per_operation() {
        let api = ApiClient::new(ApiOptions::default(), Secret::new(TOKEN)).unwrap();
        let deadline = ApiOptions::default().operation_deadline;
        let (mut at, mut requests) = (Duration::ZERO, 1);
        while at + api.pending_backoff(requests) < deadline {
            at += api.pending_backoff(requests);
            requests += 1;
        }
        assert_eq!(requests, 10, "within {deadline:?}");

        let sim = Sim::start(None).await;
        sim.script(vec![pending_event(); 100]);
        let scaled = ApiClient::new(
            ApiOptions {
                operation_deadline: deadline / 10,
                pending_backoff_base: Duration::from_millis(25),
                pending_backoff_max: Duration::from_millis(500),
                ..opts(sim.api_url())
            },
            Secret::new(TOKEN),
        )
        .unwrap();
        let err = scaled.assign(IP, OUR_DROPLET).await.unwrap_err();
        assert!(
            matches!(err, ApiError::DeadlineExceeded { attempts: 10, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("pending event"), "{err}");
        assert_eq!(sim.assigns(), 10);
    }

    /// DO's request id (the body's `request_id`, else `x-request-id`) is in
    /// every error's text, retries' summaries and decode errors included.
    #[tokio::test]
    async fn errors_keep_the_request_id() {
        let sim = Sim::start(None).await;
        let api = client(&sim);
        sim.faults(FaultsUpdate {
            token_scopes: Some(Some(vec!["reserved_ip:read".into()])),
            ..FaultsUpdate::default()
        });
        let forbidden = api.assign(IP, OUR_DROPLET).await.unwrap_err();
        let answered = sim.posts().remove(0).request_id();
        assert_eq!(forbidden.status(), Some(403), "{forbidden}");
        assert!(
            forbidden
                .to_string()
                .contains(&format!("(request id {answered})")),
            "{forbidden}"
        );

        sim.script(vec![ScriptedFault::Error {
            status: 422,
            id: "unprocessable_entity".into(),
            message: "request payload validation failed".into(),
            request_id: Some("4851a473-1621-42ea-b2f9-5071c0ea8414".into()),
            headers: BTreeMap::new(),
        }]);
        let rejected = api.holder(IP).await.unwrap_err();
        assert!(
            rejected
                .to_string()
                .ends_with("(request id 4851a473-1621-42ea-b2f9-5071c0ea8414)"),
            "{rejected}"
        );

        sim.script(vec![raw(200, "<html>portal</html>")]);
        let decode = api.holder(IP).await.unwrap_err();
        let answered = sim.requests().last().unwrap().request_id();
        assert!(matches!(decode, ApiError::Decode { .. }), "{decode:?}");
        assert!(decode.to_string().contains(&answered), "{decode}");

        let short = client_within(&sim, Duration::from_millis(150));
        sim.faults(server_errors(503, "busy"));
        let exceeded = short.holder(IP).await.unwrap_err();
        let ApiError::DeadlineExceeded { last, .. } = &exceeded else {
            panic!("{exceeded:?}");
        };
        assert!(last.contains("(request id d0517e00-"), "{exceeded}");
    }

    /// Assigning to the droplet that holds the IP: DO's documentation does
    /// not say whether it answers with a no-op action or a 422; both are
    /// success.
    #[tokio::test]
    async fn assigning_to_the_holder_succeeds_either_way() {
        let sim = Sim::start(Some(OUR_DROPLET)).await;
        let api = client(&sim);
        let done = api.assign_and_wait(IP, OUR_DROPLET, || true).await.unwrap();
        assert!(matches!(done, Assigned::Completed(_)), "{done:?}");
        assert_eq!(sim.assign_actions(), 1, "a no-op action");

        sim.faults(FaultsUpdate {
            same_holder_assign: Some(lbha_dosim::SameHolderAssign::Reject),
            ..FaultsUpdate::default()
        });
        let done = api.assign_and_wait(IP, OUR_DROPLET, || true).await.unwrap();
        let Assigned::AlreadyHeld(refusal) = &done else {
            panic!("{done:?}");
        };
        assert!(
            refusal.contains("422") && refusal.contains("already assigned"),
            "{refusal}"
        );
        assert_eq!(sim.assign_actions(), 1, "no action for a refusal");
        let lookups = sim
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == format!("/v2/floating_ips/{IP}"))
            .count();
        assert_eq!(lookups, 1, "asked who holds it");
        assert_eq!(sim.holder(IP), Some(OUR_DROPLET));
    }

    /// Any 422 after which the API shows us as the holder is success; one
    /// after which it does not is the refusal it was.
    #[tokio::test]
    async fn a_422_is_success_only_if_the_api_then_shows_us() {
        let sim = Sim::start(Some(OUR_DROPLET)).await;
        let api = client(&sim);
        let odd = || ScriptedFault::error(422, "unprocessable_entity", "Something DO says now.");
        sim.script(vec![odd()]);
        let done = api.assign_and_wait(IP, OUR_DROPLET, || true).await.unwrap();
        assert!(matches!(done, Assigned::AlreadyHeld(_)), "{done:?}");

        sim.set_holder(IP, Some(OTHER_DROPLET)).await.unwrap();
        sim.script(vec![odd()]);
        let err = api
            .assign_and_wait(IP, OUR_DROPLET, || true)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ApiError::Rejected { status: 422, ref message, .. } if message == "Something DO says now."),
            "{err:?}"
        );
        // Not a 422: no look-up, the error as it came.
        sim.script(vec![ScriptedFault::error(404, "not_found", "gone")]);
        let gets = sim.count("GET", "/v2/");
        let err = api
            .assign_and_wait(IP, OUR_DROPLET, || true)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(404));
        assert_eq!(sim.count("GET", "/v2/"), gets);
        assert_eq!(sim.assign_actions(), 0);
    }

    /// An errored action is a failed assign: asked again within the
    /// operation deadline, then reported.
    #[tokio::test]
    async fn errored_actions_are_assigned_again_then_reported() {
        let sim = Sim::start(Some(OTHER_DROPLET)).await;
        sim.faults(FaultsUpdate {
            complete_after_polls: Some(1),
            action_errors: Some(2),
            ..FaultsUpdate::default()
        });
        let api = client(&sim);
        let done = api.assign_and_wait(IP, OUR_DROPLET, || true).await.unwrap();
        assert!(matches!(done, Assigned::Completed(_)), "{done:?}");
        assert_eq!(sim.assign_actions(), 3, "two errored, the third completed");
        assert_eq!(sim.holder(IP), Some(OUR_DROPLET));

        sim.set_holder(IP, Some(OTHER_DROPLET)).await.unwrap();
        sim.faults(FaultsUpdate {
            action_errors: Some(ALWAYS),
            ..FaultsUpdate::default()
        });
        // Long enough for a second attempt even when a loaded machine
        // (CI: the first POST alone timed out at 400 ms) is slow to answer.
        let short = client_within(&sim, Duration::from_secs(3));
        let before = sim.assign_actions();
        let err = short
            .assign_and_wait(IP, OUR_DROPLET, || true)
            .await
            .unwrap_err();
        let ApiError::ActionErrored { attempts, .. } = err else {
            panic!("{err:?}");
        };
        assert!(attempts >= 2, "{err}");
        // The deadline may end an assign in flight (CI: a slow machine),
        // after the simulator created its action but before the answer.
        let created = sim.assign_actions() - before;
        assert!(
            (attempts as usize..=attempts as usize + 1).contains(&created),
            "{created} actions for {attempts} errored"
        );
        assert!(err.to_string().contains("errored"), "{err}");
        assert_eq!(sim.holder(IP), Some(OTHER_DROPLET));

        // Nobody wants it any more: no further assign.
        let before = sim.assign_actions();
        let err = api
            .assign_and_wait(IP, OUR_DROPLET, || false)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ApiError::ActionErrored { attempts: 1, .. }),
            "{err:?}"
        );
        assert_eq!(sim.assign_actions() - before, 1);
    }

    /// The "may act" probe: refused for its body without changing anything
    /// when the token has reserved_ip:update, 403 when it does not.
    #[tokio::test]
    async fn the_actions_probe_changes_nothing() {
        let sim = Sim::start(Some(OTHER_DROPLET)).await;
        let api = client(&sim);
        assert_eq!(
            api.probe_actions(IP).await.unwrap(),
            ProbeAnswer::Refused { status: 422 }
        );
        sim.faults(FaultsUpdate {
            token_scopes: Some(Some(vec!["reserved_ip:read".into()])),
            ..FaultsUpdate::default()
        });
        let err = api.probe_actions(IP).await.unwrap_err();
        assert_eq!(err.status(), Some(403), "{err}");
        let body: serde_json::Value = serde_json::from_str(&sim.posts()[0].body).unwrap();
        assert!(body.get("droplet_id").is_none(), "{body}");
        assert!(sim.state().actions.is_empty());
        assert_eq!(sim.holder(IP), Some(OTHER_DROPLET));
    }

    #[tokio::test]
    async fn client_errors_are_clear_and_not_retried() {
        for (code, id, message) in [
            (401, "unauthorized", "Unable to authenticate you"),
            (
                404,
                "not_found",
                "The resource you were accessing could not be found.",
            ),
            (
                422,
                "unprocessable_entity",
                "Droplet 42 could not be found.",
            ),
        ] {
            let sim = Sim::start(None).await;
            sim.script(vec![ScriptedFault::error(code, id, message)]);
            let err = client(&sim).assign(IP, OUR_DROPLET).await.unwrap_err();
            match &err {
                ApiError::Rejected {
                    status,
                    id: got_id,
                    message: got_message,
                    ..
                } => {
                    assert_eq!(
                        (*status, got_id.as_str(), got_message.as_str()),
                        (code, id, message)
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
            assert_eq!(err.status(), Some(code));
            let shown = err.to_string();
            assert!(
                shown.contains(&code.to_string()) && shown.contains(id) && shown.contains(message),
                "{shown}"
            );
            assert_eq!(sim.assigns(), 1, "{code} must not be retried");
        }
    }

    #[tokio::test]
    async fn wrong_token_is_rejected_by_server() {
        let sim = Sim::start(None).await;
        let api = ApiClient::new(opts(sim.api_url()), Secret::new("dop_v1_wrong")).unwrap();
        let err = api.holder(IP).await.unwrap_err();
        assert_eq!(err.status(), Some(401), "{err}");
        assert_eq!(sim.requests().len(), 1);
    }

    #[tokio::test]
    async fn rejects_a_wrong_token_without_retry() {
        let sim = Sim::start(None).await;
        let wrong = ApiClient::new(opts(sim.api_url()), Secret::new("dop_v1_wrong")).unwrap();
        let err = wrong.assign(IP, OUR_DROPLET).await.unwrap_err();
        assert!(
            matches!(err, ApiError::Rejected { status: 401, .. }),
            "{err:?}"
        );
        assert_eq!(sim.assign_actions(), 0);

        let err = client(&sim)
            .holder(std::net::Ipv4Addr::new(203, 0, 113, 99))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(404), "{err}");
    }

    #[tokio::test]
    async fn persistent_server_errors_exceed_the_deadline() {
        let sim = Sim::start(None).await;
        sim.faults(server_errors(502, "upstream down"));
        let api = ApiClient::new(
            ApiOptions {
                operation_deadline: Duration::from_millis(400),
                ..opts(sim.api_url())
            },
            Secret::new(TOKEN),
        )
        .unwrap();
        let start = Instant::now();
        let err = api.assign(IP, OUR_DROPLET).await.unwrap_err();
        let elapsed = start.elapsed();
        match &err {
            ApiError::DeadlineExceeded { attempts, last, .. } => {
                assert!(*attempts >= 2, "{err}");
                assert!(
                    last.contains("502") && last.contains("upstream down"),
                    "{err}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        // Generous: only "stops near the deadline, not after many more tries" matters.
        assert!(elapsed <= Duration::from_millis(1500), "{elapsed:?}");
        // The last attempt may be cut short by the deadline while its
        // request is still on the way to the simulator: wait for it.
        let attempts = err_attempts(&err);
        let until = Instant::now() + Duration::from_secs(1);
        while (sim.assigns() as u32) < attempts && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(sim.assigns() as u32, attempts);
    }

    fn err_attempts(e: &ApiError) -> u32 {
        match e {
            ApiError::DeadlineExceeded { attempts, .. } | ApiError::Abandoned { attempts, .. } => {
                *attempts
            }
            _ => 0,
        }
    }

    #[tokio::test]
    async fn unwanted_assign_stops_retrying() {
        let sim = Sim::start(None).await;
        sim.faults(server_errors(500, "boom"));
        let err = client(&sim)
            .assign_while(IP, OUR_DROPLET, || false)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ApiError::Abandoned { attempts: 1, .. }),
            "{err:?}"
        );
        assert_eq!(sim.assigns(), 1);
    }

    #[tokio::test]
    async fn errored_action_is_an_error() {
        let sim = Sim::start(None).await;
        sim.faults(FaultsUpdate {
            complete_after_polls: Some(2),
            action_errors: Some(1),
            ..FaultsUpdate::default()
        });
        let api = client(&sim);
        let action = api.assign(IP, OUR_DROPLET).await.unwrap();
        let err = api
            .wait_action(IP, action.id, Instant::now() + Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ApiError::ActionErrored { id, .. } if id == action.id),
            "{err:?}"
        );
        assert_eq!(sim.holder(IP), None);
    }

    #[tokio::test]
    async fn unknown_status_keeps_polling() {
        let sim = Sim::start(None).await;
        sim.faults(FaultsUpdate {
            pending_status: Some("queued".into()),
            complete_after_polls: Some(3),
            ..FaultsUpdate::default()
        });
        let api = client(&sim);
        let action = api.assign(IP, OUR_DROPLET).await.unwrap();
        assert_eq!(action.status, ActionStatus::Other("queued".into()));
        let done = api
            .wait_action(IP, action.id, Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(done.status, ActionStatus::Completed);

        // Never finishing: the deadline ends the wait with the last status.
        sim.faults(polls_to_complete(u32::MAX));
        let action = api.assign(IP, OUR_DROPLET).await.unwrap();
        let start = Instant::now();
        let err = api
            .wait_action(IP, action.id, Instant::now() + Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ApiError::ActionTimeout { status: ActionStatus::Other(ref s), .. } if s == "queued"),
            "{err:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn malformed_answers_are_decode_errors() {
        let sim = Sim::start(None).await;
        sim.script(vec![raw(200, "<html>not json</html>")]);
        let err = client(&sim).holder(IP).await.unwrap_err();
        assert!(matches!(err, ApiError::Decode { .. }), "{err:?}");
        sim.script(vec![raw(200, r#"{"floating_ip":{"droplet":{"id":"x"}}}"#)]);
        let err = client(&sim).holder(IP).await.unwrap_err();
        assert!(matches!(err, ApiError::Decode { .. }), "{err:?}");
        sim.script(vec![raw(201, r#"{"action":{"status":"completed"}}"#)]);
        let err = client(&sim).assign(IP, OUR_DROPLET).await.unwrap_err();
        assert!(matches!(err, ApiError::Decode { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn huge_durations_do_not_panic() {
        let sim = Sim::start(None).await;
        let api = ApiClient::new(
            ApiOptions {
                operation_deadline: Duration::MAX,
                request_timeout: Duration::MAX,
                backoff_max: Duration::MAX,
                ..opts(sim.api_url())
            },
            Secret::new(TOKEN),
        )
        .unwrap();
        sim.script(vec![ScriptedFault::error(500, "server_error", "once")]);
        assert_eq!(api.holder(IP).await.unwrap(), Holder::Unassigned);
    }

    #[test]
    fn bad_construction_is_an_error() {
        let err = ApiClient::new(opts("not a url".into()), Secret::new(TOKEN)).unwrap_err();
        assert!(matches!(err, ApiError::InvalidUrl { .. }), "{err:?}");
        let err = ApiClient::new(opts("ftp://127.0.0.1".into()), Secret::new(TOKEN)).unwrap_err();
        assert!(matches!(err, ApiError::InvalidUrl { .. }), "{err:?}");
        let err = ApiClient::new(
            opts("http://127.0.0.1:1".into()),
            Secret::new("line\nbreak"),
        )
        .unwrap_err();
        assert!(matches!(err, ApiError::InvalidToken), "{err:?}");
    }

    /// Every way the token could leak: error Display/Debug/sources of every
    /// variant, the client's Debug, and everything logged at TRACE while
    /// requests (including retries and failures) run.
    #[tokio::test]
    async fn token_never_appears_in_errors_debug_or_logs() {
        let (_guard, logs) = capture_logs();
        let sim = Sim::start(None).await;
        let api = client(&sim);
        let mut errors: Vec<Box<dyn std::error::Error>> = Vec::new();

        // A server (or proxy) that echoes the Authorization header back.
        sim.script(vec![ScriptedFault::error(
            403,
            "forbidden",
            &format!("bad header Bearer {TOKEN}"),
        )]);
        errors.push(Box::new(api.holder(IP).await.unwrap_err()));
        sim.script(vec![raw(200, format!("not json {TOKEN}"))]);
        errors.push(Box::new(api.holder(IP).await.unwrap_err()));
        // ... or echoes it as DO's request id, in the body or the header.
        let echoing_id = BTreeMap::from([("x-request-id".to_owned(), format!("Bearer {TOKEN}"))]);
        sim.script(vec![
            ScriptedFault::Error {
                status: 400,
                id: "bad_request".into(),
                message: "no".into(),
                request_id: Some(format!("Bearer {TOKEN}")),
                headers: BTreeMap::new(),
            },
            ScriptedFault::Error {
                status: 400,
                id: "bad_request".into(),
                message: "no".into(),
                request_id: None,
                headers: echoing_id.clone(),
            },
            ScriptedFault::Raw {
                status: 200,
                body: "{}".into(),
                headers: echoing_id,
            },
        ]);
        for _ in 0..3 {
            let err = api.holder(IP).await.unwrap_err();
            assert!(err.to_string().contains("(request id Bearer ***)"), "{err}");
            errors.push(Box::new(err));
        }
        sim.faults(server_errors(500, &format!("echo {TOKEN}")));
        let short = ApiClient::new(
            ApiOptions {
                operation_deadline: Duration::from_millis(150),
                ..opts(sim.api_url())
            },
            Secret::new(TOKEN),
        )
        .unwrap();
        errors.push(Box::new(short.assign(IP, OUR_DROPLET).await.unwrap_err()));
        errors.push(Box::new(
            short
                .assign_while(IP, OUR_DROPLET, || false)
                .await
                .unwrap_err(),
        ));
        sim.faults(FaultsUpdate {
            fail_5xx: Some(0),
            complete_after_polls: Some(1),
            action_errors: Some(1),
            ..FaultsUpdate::default()
        });
        let action = api.assign(IP, OUR_DROPLET).await.unwrap();
        errors.push(Box::new(
            api.wait_action(IP, action.id, Instant::now() + Duration::from_secs(2))
                .await
                .unwrap_err(),
        ));
        sim.faults(polls_to_complete(u32::MAX));
        let action = api.assign(IP, OUR_DROPLET).await.unwrap();
        errors.push(Box::new(
            api.wait_action(IP, action.id, Instant::now() + Duration::from_millis(50))
                .await
                .unwrap_err(),
        ));
        sim.script(vec![ScriptedFault::Drop, ScriptedFault::Delay { ms: 800 }]);
        api.holder(IP).await.unwrap();
        let refused = ApiClient::new(
            ApiOptions {
                operation_deadline: Duration::from_millis(100),
                ..opts(closed_port_url().await)
            },
            Secret::new(TOKEN),
        )
        .unwrap();
        errors.push(Box::new(refused.holder(IP).await.unwrap_err()));
        errors.push(Box::new(
            ApiClient::new(opts("bad url".into()), Secret::new(TOKEN)).unwrap_err(),
        ));
        errors.push(Box::new(
            ApiClient::new(opts(sim.api_url()), Secret::new(format!("{TOKEN}\n"))).unwrap_err(),
        ));
        let request_err = reqwest::Client::new().get("http://[").build().unwrap_err();
        errors.push(Box::new(ApiError::Request {
            method: Method::GET,
            path: "/v2".into(),
            source: request_err,
        }));
        errors.push(Box::new(ApiError::Client(
            reqwest::Client::new().get("http://[").build().unwrap_err(),
        )));

        let mut kinds = std::collections::BTreeSet::new();
        for e in &errors {
            if let Some(api_err) = e.downcast_ref::<ApiError>() {
                kinds.insert(
                    format!("{api_err:?}")
                        .split([' ', '{', '('])
                        .next()
                        .unwrap_or("")
                        .to_owned(),
                );
            }
            let mut shown = format!("{e} {e:?}");
            let mut src = e.source();
            while let Some(s) = src {
                shown.push_str(&format!(" {s} {s:?}"));
                src = s.source();
            }
            assert!(!shown.contains(TOKEN), "token leaked: {shown}");
        }
        // Every variant was exercised.
        for k in [
            "Client",
            "InvalidUrl",
            "InvalidToken",
            "Rejected",
            "Request",
            "DeadlineExceeded",
            "Abandoned",
            "Decode",
            "ActionErrored",
            "ActionTimeout",
        ] {
            assert!(kinds.contains(k), "variant {k} not covered: {kinds:?}");
        }
        let debug = format!("{api:?}");
        assert!(debug.contains("***") && !debug.contains(TOKEN), "{debug}");

        let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
        assert!(
            logs.contains("DigitalOcean API request"),
            "nothing captured: {logs}"
        );
        assert!(!logs.contains(TOKEN), "token leaked into logs");
        assert!(!logs.contains("Bearer"), "auth header leaked into logs");
    }
}
