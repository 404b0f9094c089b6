//! The simulator's state machine: droplets, floating IPs and their holders,
//! actions and how they will end, faults, rate-limit window, call counters
//! and the request log. Pure (no I/O), so every rule is unit-tested here;
//! the HTTP layers only translate.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer, Serialize};

use crate::requests::{RequestLog, RequestRecord};
use crate::time::rfc3339;

/// DO allows 5,000 requests an hour per token (`ratelimit-limit`)...
pub const RATE_LIMIT_PER_HOUR: u32 = 5000;
/// ... and 250 a minute (the "burst limit").
pub const RATE_LIMIT_PER_MINUTE: u32 = 250;
/// The windows: each request counts against the limits for this long after
/// it was made (DO's windows slide; they do not reset at once).
const HOUR_MS: u64 = 3_600_000;
const MINUTE_MS: u64 = 60_000;
/// Id of the first action; later ones count up from it.
pub const FIRST_ACTION_ID: u64 = 1_000_001;

/// Which URL family an action came in through: DO renamed floating IPs to
/// reserved IPs and serves both; they name the same objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    FloatingIp,
    ReservedIp,
    /// `/v2/reserved_ipv6`: DO's reserved IPv6 addresses, a collection of
    /// their own (IPv6 addresses only; the IPv4 paths serve IPv4 only).
    ReservedIpv6,
}

impl Family {
    /// `resource_type` of actions, and the object key in responses.
    pub fn resource_type(self) -> &'static str {
        match self {
            Family::FloatingIp => "floating_ip",
            Family::ReservedIp => "reserved_ip",
            Family::ReservedIpv6 => "reserved_ipv6",
        }
    }

    /// Whether `ip` belongs to this collection: IPv6 addresses only under
    /// `reserved_ipv6`, IPv4 ones only under the other two.
    pub fn serves(self, ip: IpAddr) -> bool {
        ip.is_ipv6() == (self == Family::ReservedIpv6)
    }

    /// The key of the list in `GET /v2/{collection}`.
    pub fn list_key(self) -> &'static str {
        match self {
            Family::FloatingIp => "floating_ips",
            Family::ReservedIp => "reserved_ips",
            Family::ReservedIpv6 => "reserved_ipv6s",
        }
    }

    /// The collection's path segment (`/v2/floating_ips/...`).
    pub fn path_segment(self) -> &'static str {
        match self {
            Family::FloatingIp => "floating_ips",
            Family::ReservedIp => "reserved_ips",
            Family::ReservedIpv6 => "reserved_ipv6",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Family::FloatingIp => "Floating IP",
            Family::ReservedIp => "Reserved IP",
            Family::ReservedIpv6 => "Reserved IPv6",
        }
    }
}

/// What an action does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Assign,
    Unassign,
}

impl ActionKind {
    /// The action `type` DO reports (`assign_ip`, `unassign_ip`).
    pub fn api_type(self) -> &'static str {
        match self {
            ActionKind::Assign => "assign_ip",
            ActionKind::Unassign => "unassign_ip",
        }
    }
}

/// An action's `status`, spelled as DO does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionStatus {
    InProgress,
    Completed,
    Errored,
}

/// One action as the simulator recorded it (`/_sim/state`'s `actions`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub id: u64,
    pub ip: IpAddr,
    /// The URL family it was requested through.
    pub family: Family,
    #[serde(rename = "type")]
    pub kind: ActionKind,
    /// Target droplet of an assign; `None` for an unassign.
    pub droplet_id: Option<u64>,
    pub status: ActionStatus,
    /// Milliseconds since the simulator started (monotonic clock).
    pub requested_at_ms: u64,
    pub completed_at_ms: Option<u64>,
    /// Wall-clock RFC 3339, as the API reports it.
    pub started_at: String,
    pub completed_at: Option<String>,
    /// Source address of the API request.
    pub caller: SocketAddr,
    /// The droplet whose address the request came from, if any.
    pub caller_droplet_id: Option<u64>,
}

/// Current faults. Counters count down as API calls (or, for
/// `action_errors`, new actions) consume them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Answers for the next API calls, one per call, front first; they come
    /// before every other API fault.
    pub script: Vec<ScriptedFault>,
    /// The next n API calls answer 5xx (500, 503, 500, ... unless
    /// `fail_5xx_status` fixes one).
    pub fail_5xx: u32,
    pub fail_5xx_status: Option<u16>,
    /// The `message` of those 5xx bodies (default: DO's for the status).
    pub fail_5xx_message: Option<String>,
    /// The next n API calls answer 429 with `Retry-After`.
    pub rate_limit: u32,
    pub retry_after_secs: u64,
    /// Every API response is delayed this long.
    pub delay_ms: u64,
    /// The next n API calls get their connection closed without a response.
    pub drop: u32,
    /// Actions requested while this is set complete on their n-th status
    /// poll (`GET .../actions/{id}`) instead of after the action delay: 0
    /// means already completed in the POST answer, `u32::MAX` practically
    /// never. Lets a test decide exactly what each poll sees.
    pub complete_after_polls: Option<u32>,
    /// The next n actions requested end `errored` instead of `completed`
    /// (the holder stays).
    pub action_errors: u32,
    /// Answers report in-progress actions with this status instead (one DO
    /// might add); `/_sim/state` keeps the real one.
    pub pending_status: Option<String>,
    /// The metadata service answers 503.
    pub metadata_down: bool,
    /// The metadata service closes every connection without a response
    /// (wins over `metadata_down`).
    pub metadata_drop: bool,
    /// Every metadata answer is delayed this long (past a client's timeout,
    /// it is a link-local address with nothing answering).
    pub metadata_delay_ms: u64,
    /// Every metadata answer is 200 with this text instead (a captive
    /// portal or a proxy in the way); `metadata_drop`/`_down` win.
    pub metadata_body: Option<String>,
    /// The API token's custom scopes (`reserved_ip:read`, ...); `None` is a
    /// full-access token. A request to an endpoint whose scope the token
    /// lacks is answered 403 `forbidden` (see [`required_scope`]); without
    /// `droplet:read` the IP objects carry no `droplet`, as DO hides it.
    pub token_scopes: Option<Vec<String>>,
    /// How an assign to the droplet that already holds the IP is answered.
    pub same_holder_assign: SameHolderAssign,
    /// The metadata service shows a change of holder this long after the
    /// API does (on DO it lags an assign by seconds).
    pub metadata_lag_ms: u64,
    /// DO's sliding-window rate limits per token (0 turns one off): past
    /// either, calls are answered 429 until enough of the window's calls
    /// are old enough to no longer count.
    pub rate_limit_per_hour: u32,
    pub rate_limit_per_minute: u32,
}

/// How the simulator answers an assign to the droplet that already holds
/// the IP. Neither DO's API reference nor its clients (godo, droplet_kit)
/// say what DO does, so both are modelled and the client handles both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SameHolderAssign {
    /// An ordinary action that completes and changes nothing.
    #[default]
    Action,
    /// 422 `unprocessable_entity`, "... is already assigned to Droplet N."
    Reject,
}

impl std::str::FromStr for SameHolderAssign {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "action" => Ok(Self::Action),
            "reject" => Ok(Self::Reject),
            _ => Err(format!("expected action or reject, not {s:?}")),
        }
    }
}

impl Faults {
    /// Whether the token has `scope` (a full-access token has them all).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.token_scopes
            .as_ref()
            .is_none_or(|scopes| scopes.iter().any(|s| s == scope))
    }
}

/// The custom scope DO requires for an API endpoint (`METHOD /template`,
/// as [`api_endpoint`] gives it), from DO's OpenAPI specification; `None`
/// off the simulated routes.
pub fn required_scope(endpoint: &str) -> Option<&'static str> {
    let (method, template) = endpoint.split_once(' ')?;
    let template = template
        .strip_prefix("/v2/floating_ips")
        .or_else(|| template.strip_prefix("/v2/reserved_ipv6"))
        .or_else(|| template.strip_prefix("/v2/reserved_ips"))
        .map_or(template, |rest| if rest.is_empty() { "list" } else { rest });
    match (method, template) {
        ("GET", "list" | "/{ip}" | "/{ip}/actions/{id}") => Some("reserved_ip:read"),
        ("POST", "/{ip}/actions") => Some("reserved_ip:update"),
        ("GET", "/v2/actions/{id}") => Some("actions:read"),
        _ => None,
    }
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            script: Vec::new(),
            fail_5xx: 0,
            fail_5xx_status: None,
            fail_5xx_message: None,
            rate_limit: 0,
            retry_after_secs: 1,
            delay_ms: 0,
            drop: 0,
            complete_after_polls: None,
            action_errors: 0,
            pending_status: None,
            metadata_down: false,
            metadata_drop: false,
            metadata_delay_ms: 0,
            metadata_body: None,
            token_scopes: None,
            same_holder_assign: SameHolderAssign::Action,
            metadata_lag_ms: 0,
            rate_limit_per_hour: RATE_LIMIT_PER_HOUR,
            rate_limit_per_minute: RATE_LIMIT_PER_MINUTE,
        }
    }
}

/// One scripted answer to one API call (`script` in [`Faults`]), as JSON
/// `{"kind": "error", "status": 404, ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScriptedFault {
    /// Close the connection without answering.
    Drop,
    /// Serve the call as usual, this much later (on top of `delay_ms`).
    Delay { ms: u64 },
    /// Answer `status` with DO's error body `{"id", "message"}`.
    /// `headers` are set last, so they replace the simulator's own (a
    /// `ratelimit-remaining: 0` on a 429, say); no `Retry-After` unless
    /// given.
    Error {
        status: u16,
        id: String,
        message: String,
        /// DO's `request_id`, in the body (some endpoints send one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
    /// Answer `status` with `body` verbatim: what a proxy or a changed API
    /// might send, not DO's JSON or not the shape the request expects.
    /// `headers` as for `error`.
    Raw {
        status: u16,
        body: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
}

impl ScriptedFault {
    /// DO's error answer `status` with `id` and `message`, no extra headers.
    pub fn error(status: u16, id: &str, message: &str) -> Self {
        ScriptedFault::Error {
            status,
            id: id.to_owned(),
            message: message.to_owned(),
            request_id: None,
            headers: BTreeMap::new(),
        }
    }

    /// What a log line may say about it: the kind only, since bodies and
    /// headers are whatever the test put there (an echoed token, say).
    pub fn kind(&self) -> &'static str {
        match self {
            ScriptedFault::Drop => "drop",
            ScriptedFault::Delay { .. } => "delay",
            ScriptedFault::Error { .. } => "error",
            ScriptedFault::Raw { .. } => "raw",
        }
    }

    fn validate(&self) -> Result<(), String> {
        let (status, headers) = match self {
            ScriptedFault::Drop | ScriptedFault::Delay { .. } => return Ok(()),
            ScriptedFault::Error {
                status, headers, ..
            }
            | ScriptedFault::Raw {
                status, headers, ..
            } => (*status, headers),
        };
        // 1xx are not final answers, and hyper will not send one as such.
        if !(200..=599).contains(&status) {
            return Err(format!("a scripted status must be 200..=599, not {status}"));
        }
        for (name, value) in headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err()
                || HeaderValue::from_str(value).is_err()
            {
                return Err(format!(
                    "scripted header {name:?}: {value:?} is not valid HTTP"
                ));
            }
        }
        Ok(())
    }
}

/// A change to [`Faults`] (the body of `POST /_sim/faults`): fields given
/// replace the current values, fields left out keep them (`script` is
/// replaced whole). `POST /_sim/reset_faults` is the way back to `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultsUpdate {
    pub script: Option<Vec<ScriptedFault>>,
    pub fail_5xx: Option<u32>,
    pub fail_5xx_status: Option<u16>,
    pub fail_5xx_message: Option<String>,
    pub rate_limit: Option<u32>,
    pub retry_after_secs: Option<u64>,
    pub delay_ms: Option<u64>,
    pub drop: Option<u32>,
    pub complete_after_polls: Option<u32>,
    pub action_errors: Option<u32>,
    pub pending_status: Option<String>,
    pub metadata_down: Option<bool>,
    pub metadata_drop: Option<bool>,
    pub metadata_delay_ms: Option<u64>,
    pub metadata_body: Option<String>,
    /// `null` makes the token a full-access one again; a list sets its
    /// scopes (left out: unchanged).
    #[serde(deserialize_with = "given", skip_serializing_if = "Option::is_none")]
    pub token_scopes: Option<Option<Vec<String>>>,
    pub same_holder_assign: Option<SameHolderAssign>,
    pub metadata_lag_ms: Option<u64>,
    pub rate_limit_per_hour: Option<u32>,
    pub rate_limit_per_minute: Option<u32>,
}

/// A field that is present, `null` included: `Some(value)` (serde's own
/// `Option` would read `null` as absent).
fn given<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl FaultsUpdate {
    /// Checks values that the types allow but the simulator doesn't.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(status) = self.fail_5xx_status
            && !(500..=599).contains(&status)
        {
            return Err(format!("fail_5xx_status must be 500..=599, not {status}"));
        }
        for scope in self.token_scopes.iter().flatten().flatten() {
            let valid = scope.split_once(':').is_some_and(|(resource, verb)| {
                !resource.is_empty()
                    && !verb.is_empty()
                    && scope
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b':')
            });
            if !valid {
                return Err(format!(
                    "token scope {scope:?} is not of the form resource:verb"
                ));
            }
        }
        self.script
            .iter()
            .flatten()
            .try_for_each(ScriptedFault::validate)
    }
}

impl Faults {
    fn apply(&mut self, update: &FaultsUpdate) {
        let FaultsUpdate {
            script,
            fail_5xx,
            fail_5xx_status,
            fail_5xx_message,
            rate_limit,
            retry_after_secs,
            delay_ms,
            drop,
            complete_after_polls,
            action_errors,
            pending_status,
            metadata_down,
            metadata_drop,
            metadata_delay_ms,
            metadata_body,
            token_scopes,
            same_holder_assign,
            metadata_lag_ms,
            rate_limit_per_hour,
            rate_limit_per_minute,
        } = update.clone();
        macro_rules! set {
            ($($field:ident),*) => {$( if let Some(v) = $field { self.$field = v; } )*};
        }
        set!(
            script,
            fail_5xx,
            rate_limit,
            retry_after_secs,
            delay_ms,
            drop,
            action_errors,
            metadata_down,
            metadata_drop,
            metadata_delay_ms,
            token_scopes,
            same_holder_assign,
            metadata_lag_ms,
            rate_limit_per_hour,
            rate_limit_per_minute
        );
        // Optional in `Faults` too: a value given sets it.
        macro_rules! set_some {
            ($($field:ident),*) => {$( if $field.is_some() { self.$field = $field; } )*};
        }
        set_some!(
            fail_5xx_status,
            fail_5xx_message,
            complete_after_polls,
            pending_status,
            metadata_body
        );
    }
}

/// What an API call must do instead of being served, decided (and the
/// fault consumed) when it arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiFault {
    None,
    /// Close the connection without answering.
    Drop,
    /// Answer this 5xx status, with this message if not DO's.
    ServerError(u16, Option<String>),
    /// Answer 429 with this `Retry-After`.
    RateLimited {
        retry_after_secs: u64,
    },
    /// The front of the script: its answer, or (`Delay`) its delay and then
    /// the usual answer.
    Scripted(ScriptedFault),
}

impl ApiFault {
    /// For log lines: what kind of fault, never what it sends.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiFault::None => "none",
            ApiFault::Drop => "drop",
            ApiFault::ServerError(..) => "5xx",
            ApiFault::RateLimited { .. } => "429",
            ApiFault::Scripted(scripted) => scripted.kind(),
        }
    }
}

/// A DO error response: status, `id` and `message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub id: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn unauthorized() -> Self {
        Self {
            status: 401,
            id: "unauthorized",
            message: "Unable to authenticate you".into(),
        }
    }

    pub fn not_found() -> Self {
        Self {
            status: 404,
            id: "not_found",
            message: "The resource you were accessing could not be found.".into(),
        }
    }

    /// DO's answer to a token without the endpoint's custom scope.
    pub fn forbidden() -> Self {
        Self {
            status: 403,
            id: "forbidden",
            message: "You do not have permission to perform this action.".into(),
        }
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self {
            status: 422,
            id: "unprocessable_entity",
            message: message.into(),
        }
    }

    pub fn too_many_requests() -> Self {
        Self {
            status: 429,
            id: "too_many_requests",
            message: "API Rate limit exceeded.".into(),
        }
    }

    pub fn server_error(status: u16) -> Self {
        let (id, message) = match status {
            503 => (
                "service_unavailable",
                "The service is temporarily unavailable. Please try again later.",
            ),
            502 => ("bad_gateway", "Bad gateway."),
            504 => ("gateway_timeout", "Gateway timeout."),
            _ => ("server_error", "Unexpected server-side error"),
        };
        Self {
            status,
            id,
            message: message.into(),
        }
    }
}

/// A configured droplet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropletState {
    pub id: u64,
    /// The source address its requests come from (and, with `--route`, the
    /// next hop for floating IPs it holds).
    pub address: IpAddr,
}

/// A floating IP as `/_sim/state` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIpState {
    pub ip: IpAddr,
    pub holder: Option<u64>,
    /// An action on it is in progress (DO's `locked`).
    pub locked: bool,
    pub pending_action: Option<u64>,
}

/// Calls counted by endpoint (`METHOD /template`) and then by status
/// (`"201"`, or `"dropped"` for closed connections).
pub type CallCounts = BTreeMap<String, BTreeMap<String, u64>>;

/// Everything observable, as `GET /_sim/state` returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimState {
    pub uptime_ms: u64,
    pub region: String,
    pub droplets: Vec<DropletState>,
    pub floating_ips: Vec<FloatingIpState>,
    pub actions: Vec<ActionRecord>,
    pub api_calls: CallCounts,
    pub metadata_calls: CallCounts,
    pub faults: Faults,
    /// Failures to change kernel routes (with `--route`), oldest first.
    pub route_errors: Vec<String>,
    /// API connections accepted so far (every API listener).
    #[serde(default)]
    pub api_connections: u64,
}

impl SimState {
    /// The droplet holding `ip`.
    pub fn holder(&self, ip: impl Into<IpAddr>) -> Option<u64> {
        let ip = ip.into();
        self.floating_ips
            .iter()
            .find(|f| f.ip == ip)
            .and_then(|f| f.holder)
    }

    /// Actions on `ip`, oldest first.
    pub fn actions_on(&self, ip: impl Into<IpAddr>) -> impl Iterator<Item = &ActionRecord> {
        let ip = ip.into();
        self.actions.iter().filter(move |a| a.ip == ip)
    }

    /// How many calls to `endpoint` answered `status` (e.g.
    /// `("POST /v2/floating_ips/{ip}/actions", "201")`).
    pub fn api_call_count(&self, endpoint: &str, status: &str) -> u64 {
        self.api_calls
            .get(endpoint)
            .and_then(|by_status| by_status.get(status))
            .copied()
            .unwrap_or(0)
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct IpEntry {
    holder: Option<u64>,
    pending: Option<u64>,
    /// What the metadata service showed as the holder when the holder last
    /// changed, and when (ms since start): it goes on showing that for
    /// `metadata_lag_ms`.
    metadata_before: Option<(Option<u64>, u64)>,
}

/// The rate-limit headers of one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateHeaders {
    pub limit: u32,
    pub remaining: u32,
    pub reset_unix: u64,
}

/// How an API call meets the rate limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateCall {
    /// An ordinary call: refused past a limit, else counted.
    Enforce,
    /// Answered by an injected fault: counted, never refused.
    Count,
    /// Answered 429 by an injected fault: not counted, shown as exhausted.
    Refused,
}

/// What the rate limits make of one API call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateDecision {
    pub headers: RateHeaders,
    /// Refused (429): `Some(retry_after_secs)` when the per-minute burst
    /// limit refused it (DO then sends `Retry-After`), `None` for the
    /// hourly limit (the client waits for `ratelimit-reset`).
    pub refused: Option<Option<u64>>,
}

/// What completing an action will change, for the route update that must
/// happen before the action reports completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub ip: IpAddr,
    /// The new holder and its address; `None` when the IP ends unassigned.
    pub holder: Option<(u64, IpAddr)>,
    /// `completed` (the holder changes) or `errored` (nothing changes).
    pub success: bool,
}

/// How an action will end, fixed when it is requested from the faults then
/// in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActionPlan {
    /// `None`: after the action delay; `Some(n)`: on its n-th status poll
    /// from now (0: at once).
    pub polls_left: Option<u32>,
    pub success: bool,
}

pub struct State {
    start: Instant,
    region: String,
    droplets: BTreeMap<u64, IpAddr>,
    ips: BTreeMap<IpAddr, IpEntry>,
    /// Droplets' public IPv6 addresses (the next hop of the reserved IPv6
    /// they hold, with `--route`), where configured.
    droplets_v6: BTreeMap<u64, Ipv6Addr>,
    actions: Vec<ActionRecord>,
    /// By action id.
    plans: BTreeMap<u64, ActionPlan>,
    requests: RequestLog,
    api_calls: CallCounts,
    metadata_calls: CallCounts,
    faults: Faults,
    fail_5xx_served: u64,
    /// When the calls of the last hour that count against the rate limits
    /// came (ms since start), oldest first.
    rate: VecDeque<u64>,
    /// What `reset_faults` returns to: the faults the simulator started with.
    baseline: Faults,
    route_errors: Vec<String>,
    api_connections: u64,
}

/// The request body of `POST .../actions`.
#[derive(Debug, Deserialize)]
struct ActionBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    droplet_id: Option<serde_json::Value>,
}

impl State {
    /// Checks the configuration: unique droplet ids and addresses, unique
    /// floating IPs, initial holders that exist.
    pub fn new(
        region: &str,
        droplets: &[(u64, IpAddr)],
        floating_ips: &[(IpAddr, Option<u64>)],
    ) -> Result<Self, String> {
        let mut by_id = BTreeMap::new();
        for &(id, address) in droplets {
            let address = address.to_canonical();
            if by_id.insert(id, address).is_some() {
                return Err(format!("droplet {id} is configured twice"));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for address in by_id.values() {
            if !seen.insert(*address) {
                return Err(format!("two droplets share the address {address}"));
            }
        }
        let mut ips = BTreeMap::new();
        for &(ip, holder) in floating_ips {
            if let Some(holder) = holder
                && !by_id.contains_key(&holder)
            {
                return Err(format!(
                    "floating IP {ip}: holder {holder} is not a droplet"
                ));
            }
            if ips
                .insert(
                    ip,
                    IpEntry {
                        holder,
                        ..IpEntry::default()
                    },
                )
                .is_some()
            {
                return Err(format!("floating IP {ip} is configured twice"));
            }
        }
        Ok(Self {
            start: Instant::now(),
            region: region.to_owned(),
            droplets: by_id,
            droplets_v6: BTreeMap::new(),
            ips,
            actions: Vec::new(),
            plans: BTreeMap::new(),
            requests: RequestLog::default(),
            api_calls: CallCounts::new(),
            metadata_calls: CallCounts::new(),
            faults: Faults::default(),
            fail_5xx_served: 0,
            rate: VecDeque::new(),
            baseline: Faults::default(),
            route_errors: Vec::new(),
            api_connections: 0,
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Milliseconds since start, monotonic.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Microseconds since start, monotonic (request times).
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// What `uptime_ms` and request times count from.
    pub fn started_at(&self) -> Instant {
        self.start
    }

    /// The droplet whose address `address` is.
    pub fn droplet_by_addr(&self, address: IpAddr) -> Option<u64> {
        let address = address.to_canonical();
        self.droplets
            .iter()
            .find(|(_, a)| **a == address)
            .map(|(id, _)| *id)
    }

    pub fn droplet_address(&self, id: u64) -> Option<IpAddr> {
        self.droplets.get(&id).copied()
    }

    /// Gives droplet `id` a public IPv6 address: where a reserved IPv6 it
    /// holds is routed, and what its metadata shows as its IPv6.
    pub fn set_droplet_ipv6(&mut self, id: u64, address: Ipv6Addr) -> Result<(), String> {
        if !self.droplets.contains_key(&id) {
            return Err(format!("droplet {id} (IPv6 {address}) is not configured"));
        }
        if self
            .droplets_v6
            .iter()
            .any(|(other, a)| *a == address && *other != id)
        {
            return Err(format!("two droplets share the IPv6 address {address}"));
        }
        self.droplets_v6.insert(id, address);
        Ok(())
    }

    /// Droplet `id`'s public IPv6 address, if it has one.
    pub fn droplet_ipv6(&self, id: u64) -> Option<Ipv6Addr> {
        self.droplets_v6.get(&id).copied()
    }

    /// Where traffic to `ip` goes when droplet `id` holds it: its IPv4
    /// (request source) address for a floating IPv4, its IPv6 address for
    /// a reserved IPv6 (none: the IPv6 cannot be routed to it).
    pub fn next_hop(&self, id: u64, ip: IpAddr) -> Option<IpAddr> {
        match ip {
            IpAddr::V4(_) => self.droplet_address(id),
            IpAddr::V6(_) => self.droplet_ipv6(id).map(IpAddr::V6),
        }
    }

    /// The floating IPs the metadata service of `droplet` shows as its own
    /// at `now_ms`: those it holds, as they were `metadata_lag_ms` ago.
    /// IPv4 only: DO's metadata shows a reserved IPv4 under
    /// `reserved_ip/ipv4/`, and lbha reads no reserved IPv6 entry there.
    pub fn metadata_held_by(&self, droplet: u64, now_ms: u64) -> Vec<Ipv4Addr> {
        self.ips
            .iter()
            .filter(|(_, e)| self.metadata_holder(e, now_ms) == Some(droplet))
            .filter_map(|(ip, _)| match ip {
                IpAddr::V4(ip) => Some(*ip),
                IpAddr::V6(_) => None,
            })
            .collect()
    }

    fn metadata_holder(&self, entry: &IpEntry, now_ms: u64) -> Option<u64> {
        match entry.metadata_before {
            Some((before, at)) if now_ms < at.saturating_add(self.faults.metadata_lag_ms) => before,
            _ => entry.holder,
        }
    }

    /// Moves `ip` to `holder`, noting what metadata showed until now.
    fn change_holder(&mut self, ip: IpAddr, holder: Option<u64>) {
        let now_ms = self.now_ms();
        let Some(entry) = self.ips.get(&ip).copied() else {
            return;
        };
        if entry.holder == holder {
            // Nothing changes, so metadata has nothing to catch up on.
            return;
        }
        let shown = self.metadata_holder(&entry, now_ms);
        if let Some(entry) = self.ips.get_mut(&ip) {
            entry.metadata_before = Some((shown, now_ms));
            entry.holder = holder;
        }
    }

    /// The floating IPs `droplet` holds (completed assignments only).
    pub fn held_by(&self, droplet: u64) -> Vec<IpAddr> {
        self.ips
            .iter()
            .filter(|(_, e)| e.holder == Some(droplet))
            .map(|(ip, _)| *ip)
            .collect()
    }

    /// Holders of all floating IPs, for installing the initial routes.
    pub fn holders(&self) -> Vec<(IpAddr, Option<u64>)> {
        self.ips.iter().map(|(ip, e)| (*ip, e.holder)).collect()
    }

    /// A floating IP from its path segment: (ip, holder, locked); unknown
    /// or unparsable is DO's 404.
    /// An address of the other family than `family` serves is a 404 too,
    /// as DO's routes would answer.
    pub fn floating_ip(
        &self,
        family: Family,
        ip: &str,
    ) -> Result<(IpAddr, Option<u64>, bool), ApiError> {
        let ip: IpAddr = ip.parse().map_err(|_| ApiError::not_found())?;
        if !family.serves(ip) {
            return Err(ApiError::not_found());
        }
        let entry = self.ips.get(&ip).ok_or_else(ApiError::not_found)?;
        Ok((ip, entry.holder, entry.pending.is_some()))
    }

    /// Every floating IP: (ip, holder, locked).
    pub fn floating_ips(&self, family: Family) -> Vec<(IpAddr, Option<u64>, bool)> {
        self.ips
            .iter()
            .filter(|(ip, _)| family.serves(**ip))
            .map(|(ip, e)| (*ip, e.holder, e.pending.is_some()))
            .collect()
    }

    pub fn action(&self, id: u64) -> Option<&ActionRecord> {
        let index = id.checked_sub(FIRST_ACTION_ID)?;
        self.actions.get(usize::try_from(index).ok()?)
    }

    /// `POST /v2/{family}/{ip}/actions`: validates and records a new
    /// in-progress action. The holder changes only in
    /// [`State::complete_action`].
    pub fn request_action(
        &mut self,
        family: Family,
        ip: &str,
        body: &[u8],
        caller: SocketAddr,
        now: SystemTime,
    ) -> Result<ActionRecord, ApiError> {
        let (ip, holder, locked) = self.floating_ip(family, ip)?;
        let body: ActionBody = serde_json::from_slice(body)
            .map_err(|e| ApiError::unprocessable(format!("The request body is not valid: {e}")))?;
        let (kind, droplet_id) = match body.kind.as_deref() {
            Some("assign") => {
                let id = match body.droplet_id {
                    Some(serde_json::Value::Number(n)) => n.as_u64(),
                    Some(serde_json::Value::String(s)) => s.parse().ok(),
                    _ => None,
                };
                let Some(id) = id else {
                    return Err(ApiError::unprocessable(
                        "droplet_id is required to assign an IP and must be an integer",
                    ));
                };
                if !self.droplets.contains_key(&id) {
                    return Err(ApiError::unprocessable(format!(
                        "Droplet {id} could not be found."
                    )));
                }
                (ActionKind::Assign, Some(id))
            }
            Some("unassign") => (ActionKind::Unassign, None),
            Some(other) => {
                return Err(ApiError::unprocessable(format!(
                    "'{other}' is not a valid action type; use assign or unassign"
                )));
            }
            None => return Err(ApiError::unprocessable("The action type is required")),
        };
        if locked {
            return Err(ApiError::unprocessable(format!(
                "{} already has a pending event.",
                family.noun()
            )));
        }
        if kind == ActionKind::Assign
            && holder.is_some()
            && holder == droplet_id
            && self.faults.same_holder_assign == SameHolderAssign::Reject
        {
            return Err(ApiError::unprocessable(format!(
                "{} is already assigned to Droplet {}.",
                family.noun(),
                holder.unwrap_or_default()
            )));
        }
        if kind == ActionKind::Unassign && holder.is_none() {
            return Err(ApiError::unprocessable(format!(
                "{} is not assigned to a Droplet.",
                family.noun()
            )));
        }
        let id = FIRST_ACTION_ID + self.actions.len() as u64;
        let record = ActionRecord {
            id,
            ip,
            family,
            kind,
            droplet_id,
            status: ActionStatus::InProgress,
            requested_at_ms: self.now_ms(),
            completed_at_ms: None,
            started_at: rfc3339(now),
            completed_at: None,
            caller,
            caller_droplet_id: self.droplet_by_addr(caller.ip()),
        };
        self.actions.push(record.clone());
        if let Some(entry) = self.ips.get_mut(&ip) {
            entry.pending = Some(id);
        }
        let success = if self.faults.action_errors > 0 {
            self.faults.action_errors -= 1;
            false
        } else {
            true
        };
        self.plans.insert(
            id,
            ActionPlan {
                polls_left: self.faults.complete_after_polls,
                success,
            },
        );
        Ok(record)
    }

    /// How action `id` will end.
    pub fn action_plan(&self, id: u64) -> Option<ActionPlan> {
        self.plans.get(&id).copied()
    }

    /// Counts a status poll of action `id`; true when this is the poll its
    /// plan completes it on (the caller then completes it before answering).
    pub fn count_poll(&mut self, id: u64) -> bool {
        let in_progress = self
            .action(id)
            .is_some_and(|a| a.status == ActionStatus::InProgress);
        match self.plans.get_mut(&id) {
            Some(ActionPlan {
                polls_left: Some(left),
                ..
            }) if in_progress && *left > 0 => {
                *left -= 1;
                *left == 0
            }
            _ => false,
        }
    }

    /// Checks that `ip` is a floating IP and `holder` (if any) a droplet;
    /// returns the holder's address, for the route.
    pub fn check_holder(&self, ip: IpAddr, holder: Option<u64>) -> Result<Option<IpAddr>, String> {
        if !self.ips.contains_key(&ip) {
            return Err(format!("{ip} is not a floating IP"));
        }
        holder
            .map(|id| {
                if !self.droplets.contains_key(&id) {
                    return Err(format!("droplet {id} is not configured"));
                }
                self.next_hop(id, ip)
                    .ok_or_else(|| format!("droplet {id} has no IPv6 address to route {ip} to"))
            })
            .transpose()
    }

    /// Moves `ip` to `holder` at once, as another droplet's assign or the
    /// DO console would; an action pending on it still ends as planned.
    pub fn set_holder(&mut self, ip: IpAddr, holder: Option<u64>) {
        self.change_holder(ip, holder);
    }

    /// What completing in-progress action `id` will change.
    pub fn completion(&self, id: u64) -> Option<Completion> {
        let action = self.action(id)?;
        if action.status != ActionStatus::InProgress {
            return None;
        }
        let holder = match action.kind {
            ActionKind::Assign => {
                let droplet = action.droplet_id?;
                Some((droplet, self.next_hop(droplet, action.ip)?))
            }
            ActionKind::Unassign => None,
        };
        Some(Completion {
            ip: action.ip,
            holder,
            success: self.plans.get(&id).is_none_or(|plan| plan.success),
        })
    }

    /// Ends action `id`: on success the IP's holder changes now; either way
    /// the IP is unlocked.
    pub fn complete_action(&mut self, id: u64, success: bool, now: SystemTime) {
        let now_ms = self.now_ms();
        let Some(index) = id
            .checked_sub(FIRST_ACTION_ID)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        let Some(action) = self.actions.get_mut(index) else {
            return;
        };
        if action.status != ActionStatus::InProgress {
            return;
        }
        action.status = if success {
            ActionStatus::Completed
        } else {
            ActionStatus::Errored
        };
        action.completed_at_ms = Some(now_ms);
        action.completed_at = Some(rfc3339(now));
        let (ip, droplet_id) = (action.ip, action.droplet_id);
        if success {
            self.change_holder(ip, droplet_id);
        }
        if let Some(entry) = self.ips.get_mut(&ip)
            && entry.pending == Some(id)
        {
            entry.pending = None;
        }
    }

    pub fn record_route_error(&mut self, error: String) {
        self.route_errors.push(error);
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    pub fn update_faults(&mut self, update: &FaultsUpdate) -> Faults {
        self.faults.apply(update);
        self.faults.clone()
    }

    /// Back to the faults the simulator started with.
    pub fn reset_faults(&mut self) {
        self.faults = self.baseline.clone();
    }

    /// Sets the faults the simulator starts with (and `reset_faults`
    /// returns to).
    pub fn set_baseline(&mut self, update: &FaultsUpdate) {
        let mut baseline = Faults::default();
        baseline.apply(update);
        self.baseline = baseline.clone();
        self.faults = baseline;
    }

    /// Decides (and consumes) the fault for an API call that just arrived,
    /// and returns the delay to apply before answering. One fault per call:
    /// the front of the script, else drop, then 5xx, then 429. A scripted
    /// `drop` is [`ApiFault::Drop`] and a scripted `delay` adds to the
    /// delay, so only scripted answers are [`ApiFault::Scripted`].
    pub fn take_api_fault(&mut self) -> (ApiFault, Duration) {
        let faults = &mut self.faults;
        let mut delay = Duration::from_millis(faults.delay_ms);
        let fault = if !faults.script.is_empty() {
            match faults.script.remove(0) {
                ScriptedFault::Drop => ApiFault::Drop,
                ScriptedFault::Delay { ms } => {
                    delay = delay.saturating_add(Duration::from_millis(ms));
                    ApiFault::None
                }
                answer => ApiFault::Scripted(answer),
            }
        } else if faults.drop > 0 {
            faults.drop -= 1;
            ApiFault::Drop
        } else if faults.fail_5xx > 0 {
            faults.fail_5xx -= 1;
            let status =
                faults
                    .fail_5xx_status
                    .unwrap_or(if self.fail_5xx_served.is_multiple_of(2) {
                        500
                    } else {
                        503
                    });
            self.fail_5xx_served += 1;
            ApiFault::ServerError(status, faults.fail_5xx_message.clone())
        } else if faults.rate_limit > 0 {
            faults.rate_limit -= 1;
            ApiFault::RateLimited {
                retry_after_secs: faults.retry_after_secs,
            }
        } else {
            ApiFault::None
        };
        (fault, delay)
    }

    /// What the rate limits make of an API call that arrived at `now_ms`
    /// (ms since start; `now_unix` on the wall clock), counted against DO's
    /// sliding windows as `call` says, and the headers to send.
    /// `ratelimit-remaining` is what is left of the hour (0 once either
    /// limit is reached: DO shows a burst that way too), `ratelimit-reset`
    /// when the oldest counted call stops counting.
    pub fn consume_rate(&mut self, now_ms: u64, now_unix: u64, call: RateCall) -> RateDecision {
        let (per_hour, per_minute) = (
            self.faults.rate_limit_per_hour,
            self.faults.rate_limit_per_minute,
        );
        while self
            .rate
            .front()
            .is_some_and(|&at| at.saturating_add(HOUR_MS) <= now_ms)
        {
            self.rate.pop_front();
        }
        let in_minute = |rate: &VecDeque<u64>| {
            rate.iter()
                .rev()
                .take_while(|&&at| at.saturating_add(MINUTE_MS) > now_ms)
                .count()
        };
        // Whole seconds until the call made at `at` leaves a `window`.
        let secs_until = |at: u64, window: u64| {
            at.saturating_add(window)
                .saturating_sub(now_ms)
                .div_ceil(1000)
        };
        let refused = match call {
            RateCall::Enforce if per_hour > 0 && self.rate.len() >= per_hour as usize => Some(None),
            RateCall::Enforce if per_minute > 0 && in_minute(&self.rate) >= per_minute as usize => {
                let oldest = self.rate[self.rate.len() - per_minute as usize];
                Some(Some(secs_until(oldest, MINUTE_MS).max(1)))
            }
            _ => None,
        };
        if refused.is_none() && call != RateCall::Refused {
            self.rate.push_back(now_ms);
        }
        let limit = if per_hour > 0 {
            per_hour
        } else {
            RATE_LIMIT_PER_HOUR
        };
        let burst = per_minute > 0 && in_minute(&self.rate) >= per_minute as usize;
        let remaining = if refused.is_some() || burst || call == RateCall::Refused {
            0
        } else {
            (limit as usize).saturating_sub(self.rate.len()) as u32
        };
        let reset_unix = now_unix
            + self
                .rate
                .front()
                .map_or(HOUR_MS / 1000, |&oldest| secs_until(oldest, HOUR_MS));
        RateDecision {
            headers: RateHeaders {
                limit,
                remaining,
                reset_unix,
            },
            refused,
        }
    }

    /// Counts an API connection just accepted; returns its number (from 1).
    pub fn open_api_connection(&mut self) -> u64 {
        self.api_connections += 1;
        self.api_connections
    }

    /// Logs an API request that just arrived (see [`RequestLog::push`]);
    /// returns its `seq`.
    pub fn log_request(&mut self, request: RequestRecord) -> u64 {
        let now = self.now_us();
        self.requests.push(request, now)
    }

    /// Notes that request `seq` was answered with `status` (`None`: the
    /// caller went away first).
    pub fn finish_request(&mut self, seq: u64, status: Option<&str>) {
        let now = self.now_us();
        self.requests.finish(seq, status, now);
    }

    /// The logged API requests, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.requests.records()
    }

    pub fn count_api_call(&mut self, endpoint: String, status: &str) {
        count(&mut self.api_calls, endpoint, status);
    }

    pub fn count_metadata_call(&mut self, endpoint: String, status: &str) {
        count(&mut self.metadata_calls, endpoint, status);
    }

    pub fn snapshot(&self) -> SimState {
        SimState {
            uptime_ms: self.now_ms(),
            region: self.region.clone(),
            droplets: self
                .droplets
                .iter()
                .map(|(id, address)| DropletState {
                    id: *id,
                    address: *address,
                })
                .collect(),
            floating_ips: self
                .ips
                .iter()
                .map(|(ip, e)| FloatingIpState {
                    ip: *ip,
                    holder: e.holder,
                    locked: e.pending.is_some(),
                    pending_action: e.pending,
                })
                .collect(),
            actions: self.actions.clone(),
            api_calls: self.api_calls.clone(),
            metadata_calls: self.metadata_calls.clone(),
            faults: self.faults.clone(),
            route_errors: self.route_errors.clone(),
            api_connections: self.api_connections,
        }
    }
}

fn count(counts: &mut CallCounts, endpoint: String, status: &str) {
    *counts
        .entry(endpoint)
        .or_default()
        .entry(status.to_owned())
        .or_default() += 1;
}

/// The counter key of an API request: method and route template, e.g.
/// `POST /v2/floating_ips/{ip}/actions`; `METHOD other` off the routes.
pub fn api_endpoint(method: &str, path: &str) -> String {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let template = match segments.as_slice() {
        [
            "v2",
            family @ ("floating_ips" | "reserved_ips" | "reserved_ipv6"),
        ] => format!("/v2/{family}"),
        [
            "v2",
            family @ ("floating_ips" | "reserved_ips" | "reserved_ipv6"),
            _,
        ] => format!("/v2/{family}/{{ip}}"),
        [
            "v2",
            family @ ("floating_ips" | "reserved_ips" | "reserved_ipv6"),
            _,
            "actions",
        ] => {
            format!("/v2/{family}/{{ip}}/actions")
        }
        [
            "v2",
            family @ ("floating_ips" | "reserved_ips" | "reserved_ipv6"),
            _,
            "actions",
            _,
        ] => {
            format!("/v2/{family}/{{ip}}/actions/{{id}}")
        }
        ["v2", "actions", _] => "/v2/actions/{id}".to_owned(),
        _ => "other".to_owned(),
    };
    format!("{method} {template}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));

    fn caller() -> SocketAddr {
        "192.0.2.11:40000".parse().unwrap()
    }

    fn state() -> State {
        State::new(
            "nyc3",
            &[
                (1, "192.0.2.11".parse().unwrap()),
                (2, "192.0.2.12".parse().unwrap()),
            ],
            &[
                (IP, Some(1)),
                (IpAddr::V4(Ipv4Addr::new(203, 0, 113, 20)), None),
            ],
        )
        .unwrap()
    }

    fn request(state: &mut State, ip: &str, body: &str) -> Result<ActionRecord, ApiError> {
        state.request_action(
            Family::FloatingIp,
            ip,
            body.as_bytes(),
            caller(),
            SystemTime::now(),
        )
    }

    /// An assign of `ip` to `droplet` that the state accepts.
    fn assign(state: &mut State, ip: &str, droplet: u64) -> ActionRecord {
        let body = format!(r#"{{"type":"assign","droplet_id":{droplet}}}"#);
        request(state, ip, &body).unwrap()
    }

    #[test]
    fn config_is_checked() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(State::new("nyc3", &[(1, a), (1, b)], &[]).is_err());
        assert!(State::new("nyc3", &[(1, a), (2, a)], &[]).is_err());
        assert!(State::new("nyc3", &[(1, a)], &[(IP, Some(2))]).is_err());
        assert!(State::new("nyc3", &[(1, a)], &[(IP, None), (IP, Some(1))]).is_err());
        assert!(State::new("nyc3", &[(1, a), (2, b)], &[(IP, Some(2))]).is_ok());
    }

    #[test]
    fn assign_changes_holder_only_on_completion() {
        let mut s = state();
        let action = request(
            &mut s,
            "203.0.113.10",
            r#"{"type":"assign","droplet_id":2}"#,
        )
        .unwrap();
        assert_eq!(action.id, FIRST_ACTION_ID);
        assert_eq!(action.status, ActionStatus::InProgress);
        assert_eq!(action.caller_droplet_id, Some(1));
        assert_eq!(
            s.floating_ip(Family::FloatingIp, "203.0.113.10").unwrap(),
            (IP, Some(1), true)
        );
        let completion = s.completion(action.id).unwrap();
        assert_eq!(
            completion,
            Completion {
                ip: IP,
                holder: Some((2, "192.0.2.12".parse().unwrap())),
                success: true,
            }
        );
        s.complete_action(action.id, true, SystemTime::now());
        assert_eq!(
            s.floating_ip(Family::FloatingIp, "203.0.113.10").unwrap(),
            (IP, Some(2), false)
        );
        let done = s.action(action.id).unwrap();
        assert_eq!(done.status, ActionStatus::Completed);
        assert!(done.completed_at.is_some() && done.completed_at_ms.is_some());
        assert!(s.completion(action.id).is_none(), "completes only once");
        assert_eq!(s.held_by(2), vec![IP]);
        assert!(s.held_by(1).is_empty());
    }

    #[test]
    fn errored_action_keeps_holder_and_unlocks() {
        let mut s = state();
        let action = request(
            &mut s,
            "203.0.113.10",
            r#"{"type":"assign","droplet_id":2}"#,
        )
        .unwrap();
        s.complete_action(action.id, false, SystemTime::now());
        assert_eq!(s.action(action.id).unwrap().status, ActionStatus::Errored);
        assert_eq!(
            s.floating_ip(Family::FloatingIp, "203.0.113.10").unwrap(),
            (IP, Some(1), false)
        );
    }

    #[test]
    fn unassign_lifecycle() {
        let mut s = state();
        let action = request(&mut s, "203.0.113.10", r#"{"type":"unassign"}"#).unwrap();
        assert_eq!(action.kind, ActionKind::Unassign);
        assert_eq!(action.droplet_id, None);
        assert_eq!(s.completion(action.id).unwrap().holder, None);
        s.complete_action(action.id, true, SystemTime::now());
        assert_eq!(
            s.floating_ip(Family::FloatingIp, "203.0.113.10").unwrap().1,
            None
        );
        let again = request(&mut s, "203.0.113.10", r#"{"type":"unassign"}"#).unwrap_err();
        assert_eq!(again.status, 422);
    }

    #[test]
    fn request_errors() {
        let mut s = state();
        for (ip, body, status) in [
            ("203.0.113.99", r#"{"type":"assign","droplet_id":2}"#, 404),
            ("not-an-ip", r#"{"type":"assign","droplet_id":2}"#, 404),
            ("203.0.113.10", r#"{"type":"assign","droplet_id":9}"#, 422),
            ("203.0.113.10", r#"{"type":"assign"}"#, 422),
            ("203.0.113.10", r#"{"type":"assign","droplet_id":-1}"#, 422),
            ("203.0.113.10", r#"{"type":"resize"}"#, 422),
            ("203.0.113.10", r#"{"droplet_id":2}"#, 422),
            ("203.0.113.10", "not json", 422),
            ("203.0.113.20", r#"{"type":"unassign"}"#, 422),
        ] {
            let error = request(&mut s, ip, body).unwrap_err();
            assert_eq!(error.status, status, "{ip} {body}: {error:?}");
        }
        assert!(s.actions.is_empty());
        let ok = request(
            &mut s,
            "203.0.113.10",
            r#"{"type":"assign","droplet_id":"2"}"#,
        )
        .unwrap();
        assert_eq!(ok.droplet_id, Some(2));
    }

    #[test]
    fn second_action_while_pending_is_refused() {
        let mut s = state();
        let first = request(
            &mut s,
            "203.0.113.10",
            r#"{"type":"assign","droplet_id":2}"#,
        )
        .unwrap();
        let error = request(
            &mut s,
            "203.0.113.10",
            r#"{"type":"assign","droplet_id":1}"#,
        )
        .unwrap_err();
        assert_eq!(error.status, 422);
        assert_eq!(error.message, "Floating IP already has a pending event.");
        let reserved = s
            .request_action(
                Family::ReservedIp,
                "203.0.113.10",
                br#"{"type":"unassign"}"#,
                caller(),
                SystemTime::now(),
            )
            .unwrap_err();
        assert_eq!(reserved.message, "Reserved IP already has a pending event.");
        // Other IPs are independent.
        request(
            &mut s,
            "203.0.113.20",
            r#"{"type":"assign","droplet_id":1}"#,
        )
        .unwrap();
        s.complete_action(first.id, true, SystemTime::now());
        request(
            &mut s,
            "203.0.113.10",
            r#"{"type":"assign","droplet_id":1}"#,
        )
        .unwrap();
    }

    #[test]
    fn faults_are_consumed_in_order() {
        let mut s = state();
        s.update_faults(&FaultsUpdate {
            fail_5xx: Some(3),
            rate_limit: Some(1),
            retry_after_secs: Some(7),
            drop: Some(1),
            delay_ms: Some(5),
            ..Default::default()
        });
        let faults: Vec<_> = (0..6).map(|_| s.take_api_fault()).collect();
        let d = Duration::from_millis(5);
        assert_eq!(
            faults,
            vec![
                (ApiFault::Drop, d),
                (ApiFault::ServerError(500, None), d),
                (ApiFault::ServerError(503, None), d),
                (ApiFault::ServerError(500, None), d),
                (
                    ApiFault::RateLimited {
                        retry_after_secs: 7
                    },
                    d
                ),
                (ApiFault::None, d),
            ]
        );
        s.update_faults(&FaultsUpdate {
            fail_5xx: Some(1),
            fail_5xx_status: Some(502),
            ..Default::default()
        });
        assert_eq!(s.take_api_fault().0, ApiFault::ServerError(502, None));
        assert_eq!(s.faults().delay_ms, 5, "untouched fields keep their value");
        s.reset_faults();
        assert_eq!(s.faults(), &Faults::default());
        assert_eq!(s.take_api_fault(), (ApiFault::None, Duration::ZERO));
    }

    #[test]
    fn fault_update_validation_and_unknown_fields() {
        let bad = FaultsUpdate {
            fail_5xx_status: Some(404),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        assert!(serde_json::from_str::<FaultsUpdate>(r#"{"fail5xx":1}"#).is_err());
        let parsed: FaultsUpdate =
            serde_json::from_str(r#"{"fail_5xx":2,"metadata_down":true}"#).unwrap();
        assert_eq!(parsed.fail_5xx, Some(2));
        assert_eq!(parsed.metadata_down, Some(true));
    }

    #[test]
    fn script_comes_first_and_is_consumed_in_order() {
        let mut s = state();
        let not_found = ScriptedFault::error(404, "not_found", "gone");
        let raw = ScriptedFault::Raw {
            status: 200,
            body: "<html>".into(),
            headers: BTreeMap::new(),
        };
        s.update_faults(&FaultsUpdate {
            script: Some(vec![
                ScriptedFault::Drop,
                ScriptedFault::Delay { ms: 40 },
                not_found.clone(),
                raw.clone(),
            ]),
            fail_5xx: Some(1),
            fail_5xx_message: Some("upstream down".into()),
            delay_ms: Some(5),
            ..Default::default()
        });
        let d = Duration::from_millis(5);
        let faults: Vec<_> = (0..6).map(|_| s.take_api_fault()).collect();
        assert_eq!(
            faults,
            vec![
                (ApiFault::Drop, d),
                (ApiFault::None, Duration::from_millis(45)),
                (ApiFault::Scripted(not_found), d),
                (ApiFault::Scripted(raw), d),
                (ApiFault::ServerError(500, Some("upstream down".into())), d),
                (ApiFault::None, d),
            ]
        );
        assert!(s.faults().script.is_empty());
        assert_eq!(
            s.faults().fail_5xx_message.as_deref(),
            Some("upstream down"),
            "kept for later 5xx until reset"
        );
    }

    #[test]
    fn script_validation_and_json() {
        let parsed: FaultsUpdate = serde_json::from_str(
            r#"{"script": [
                {"kind": "drop"},
                {"kind": "delay", "ms": 7},
                {"kind": "error", "status": 429, "id": "too_many_requests", "message": "slow down",
                 "headers": {"ratelimit-remaining": "0"}},
                {"kind": "raw", "status": 200, "body": "not json"}
            ]}"#,
        )
        .unwrap();
        let script = parsed.script.clone().unwrap();
        assert_eq!(script.len(), 4);
        assert_eq!(script[1], ScriptedFault::Delay { ms: 7 });
        assert!(
            matches!(&script[2], ScriptedFault::Error { status: 429, headers, .. }
                if headers["ratelimit-remaining"] == "0")
        );
        assert!(parsed.validate().is_ok());
        let kinds: Vec<_> = script.iter().map(ScriptedFault::kind).collect();
        assert_eq!(kinds, ["drop", "delay", "error", "raw"]);
        for bad in [
            r#"{"script": [{"kind": "explode"}]}"#,
            r#"{"script": [{"kind": "delay", "ms": 1, "extra": 1}]}"#,
            r#"{"script": [{"kind": "error", "status": 500}]}"#,
        ] {
            assert!(serde_json::from_str::<FaultsUpdate>(bad).is_err(), "{bad}");
        }
        for bad in [
            ScriptedFault::error(100, "x", "y"),
            ScriptedFault::error(600, "x", "y"),
            ScriptedFault::Raw {
                status: 200,
                body: String::new(),
                headers: BTreeMap::from([("bad name".into(), "v".into())]),
            },
            ScriptedFault::Raw {
                status: 200,
                body: String::new(),
                headers: BTreeMap::from([("x-ok".into(), "line\nbreak".into())]),
            },
        ] {
            let update = FaultsUpdate {
                script: Some(vec![bad.clone()]),
                ..Default::default()
            };
            assert!(update.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn action_plans_follow_the_faults_at_request_time() {
        let mut s = state();
        // Timed (the default): no poll ends it.
        let timed = assign(&mut s, "203.0.113.20", 1);
        assert_eq!(
            s.action_plan(timed.id),
            Some(ActionPlan {
                polls_left: None,
                success: true
            })
        );
        assert!(!s.count_poll(timed.id));
        s.complete_action(timed.id, true, SystemTime::now());

        s.update_faults(&FaultsUpdate {
            complete_after_polls: Some(2),
            action_errors: Some(1),
            ..Default::default()
        });
        let errored = assign(&mut s, "203.0.113.10", 2);
        assert_eq!(s.faults().action_errors, 0, "consumed by the action");
        assert!(!s.count_poll(errored.id));
        assert!(s.count_poll(errored.id), "the second poll ends it");
        let completion = s.completion(errored.id).unwrap();
        assert!(!completion.success);
        s.complete_action(errored.id, completion.success, SystemTime::now());
        assert!(
            !s.count_poll(errored.id),
            "ended actions are not polled to an end"
        );
        assert_eq!(s.action(errored.id).unwrap().status, ActionStatus::Errored);
        assert_eq!(
            s.floating_ip(Family::FloatingIp, "203.0.113.10").unwrap(),
            (IP, Some(1), false)
        );

        let next = assign(&mut s, "203.0.113.10", 2);
        assert!(s.action_plan(next.id).unwrap().success);
        assert!(!s.count_poll(next.id));
        assert!(s.count_poll(next.id));
        assert!(s.completion(next.id).unwrap().success);

        // A refused request consumes nothing.
        s.update_faults(&FaultsUpdate {
            action_errors: Some(1),
            ..Default::default()
        });
        request(&mut s, "203.0.113.10", r#"{"type":"resize"}"#).unwrap_err();
        assert_eq!(s.faults().action_errors, 1);
    }

    #[test]
    fn holder_can_be_set_directly() {
        let mut s = state();
        assert_eq!(
            s.check_holder(IP, Some(2)),
            Ok(Some("192.0.2.12".parse().unwrap()))
        );
        assert_eq!(s.check_holder(IP, None), Ok(None));
        assert!(s.check_holder(IP, Some(9)).is_err());
        assert!(
            s.check_holder(Ipv4Addr::new(198, 51, 100, 1).into(), None)
                .is_err()
        );
        s.set_holder(IP, Some(2));
        assert_eq!(s.held_by(2), vec![IP]);
        s.set_holder(IP, None);
        assert_eq!(
            s.floating_ip(Family::FloatingIp, "203.0.113.10").unwrap().1,
            None
        );
    }

    /// DO's windows slide: each call counts for an hour after it was made,
    /// and `ratelimit-reset` is when the oldest counted call stops counting.
    #[test]
    fn rate_windows_slide() {
        let mut s = state();
        let at =
            |s: &mut State, ms: u64| s.consume_rate(ms, 1_000_000 + ms / 1000, RateCall::Enforce);
        let first = at(&mut s, 0);
        assert_eq!(
            first,
            RateDecision {
                headers: RateHeaders {
                    limit: 5000,
                    remaining: 4999,
                    reset_unix: 1_003_600
                },
                refused: None
            }
        );
        let later = at(&mut s, 1_800_000);
        assert_eq!(later.headers.remaining, 4998);
        assert_eq!(
            later.headers.reset_unix, 1_003_600,
            "the oldest call still counts"
        );
        // An hour after the first call only the second one counts.
        let next = at(&mut s, 3_600_000);
        assert_eq!(next.headers.remaining, 4998);
        assert_eq!(next.headers.reset_unix, 1_003_600 + 1_800);
    }

    #[test]
    fn hourly_limit_refuses_until_the_oldest_call_expires() {
        let mut s = state();
        s.update_faults(&FaultsUpdate {
            rate_limit_per_hour: Some(3),
            rate_limit_per_minute: Some(0),
            ..Default::default()
        });
        let mut at = |ms: u64| s.consume_rate(ms, 1_000_000 + ms / 1000, RateCall::Enforce);
        for ms in [0, 100_000, 200_000] {
            assert_eq!(at(ms).refused, None, "{ms}");
        }
        let refused = at(300_000);
        assert_eq!(refused.refused, Some(None), "no Retry-After for the hour");
        assert_eq!(refused.headers.remaining, 0);
        assert_eq!(refused.headers.limit, 3);
        assert_eq!(refused.headers.reset_unix, 1_003_600);
        assert_eq!(
            at(3_599_999).refused,
            Some(None),
            "refused calls do not count"
        );
        let after = at(3_600_000);
        assert_eq!(after.refused, None);
        assert_eq!(after.headers.remaining, 0, "three in the hour again");
    }

    #[test]
    fn burst_limit_refuses_with_retry_after() {
        let mut s = state();
        s.update_faults(&FaultsUpdate {
            rate_limit_per_minute: Some(2),
            ..Default::default()
        });
        let mut at = |ms: u64| s.consume_rate(ms, 1_000_000 + ms / 1000, RateCall::Enforce);
        assert_eq!(at(0).headers.remaining, 4999);
        let second = at(10_000);
        assert_eq!(second.refused, None);
        assert_eq!(second.headers.remaining, 0, "DO shows a burst as 0 left");
        let refused = at(20_500);
        // The call at 0 ms stops counting at 60 s: 39.5 s from now.
        assert_eq!(refused.refused, Some(Some(40)));
        assert_eq!(refused.headers.remaining, 0);
        let freed = at(60_000);
        assert_eq!(freed.refused, None);
        assert_eq!(freed.headers.remaining, 0, "two in the minute again");
        assert_eq!(at(130_000).headers.remaining, 4996, "the burst is over");
    }

    #[test]
    fn fault_answers_count_but_are_never_refused() {
        let mut s = state();
        s.update_faults(&FaultsUpdate {
            rate_limit_per_minute: Some(1),
            ..Default::default()
        });
        let counted = s.consume_rate(0, 1_000, RateCall::Count);
        let again = s.consume_rate(1, 1_000, RateCall::Count);
        assert_eq!((counted.refused, again.refused), (None, None));
        assert_eq!(
            s.consume_rate(2, 1_000, RateCall::Enforce).refused,
            Some(Some(60))
        );
        // A fault's 429 shows the limit exhausted and takes nothing.
        let limited = s.consume_rate(3, 1_000, RateCall::Refused);
        assert_eq!((limited.refused, limited.headers.remaining), (None, 0));
        assert_eq!(s.rate.len(), 2);
    }

    #[test]
    fn scopes_per_endpoint() {
        for (method, path, scope) in [
            ("GET", "/v2/floating_ips", Some("reserved_ip:read")),
            ("GET", "/v2/reserved_ips/1.2.3.4", Some("reserved_ip:read")),
            (
                "GET",
                "/v2/floating_ips/1.2.3.4/actions/7",
                Some("reserved_ip:read"),
            ),
            (
                "POST",
                "/v2/reserved_ips/1.2.3.4/actions",
                Some("reserved_ip:update"),
            ),
            (
                "POST",
                "/v2/floating_ips/1.2.3.4/actions",
                Some("reserved_ip:update"),
            ),
            ("GET", "/v2/actions/7", Some("actions:read")),
            ("GET", "/v2/droplets", None),
            ("DELETE", "/v2/floating_ips/1.2.3.4", None),
        ] {
            assert_eq!(
                required_scope(&api_endpoint(method, path)),
                scope,
                "{method} {path}"
            );
        }
        let mut faults = Faults::default();
        assert!(faults.has_scope("reserved_ip:update"), "full access");
        faults.token_scopes = Some(vec!["reserved_ip:read".into()]);
        assert!(faults.has_scope("reserved_ip:read"));
        assert!(!faults.has_scope("reserved_ip:update"));
        assert!(!faults.has_scope("droplet:read"));
    }

    /// `token_scopes`: left out keeps them, `null` is full access again, a
    /// list sets them; a scope must look like one.
    #[test]
    fn token_scopes_update() {
        let mut s = state();
        let update = |json: &str| serde_json::from_str::<FaultsUpdate>(json).unwrap();
        s.update_faults(&update(r#"{"token_scopes": ["reserved_ip:read"]}"#));
        assert_eq!(
            s.faults().token_scopes,
            Some(vec!["reserved_ip:read".to_owned()])
        );
        s.update_faults(&update(r#"{"fail_5xx": 1}"#));
        assert!(s.faults().token_scopes.is_some(), "left out: unchanged");
        s.update_faults(&update(r#"{"token_scopes": null}"#));
        assert_eq!(s.faults().token_scopes, None);
        // What a client serializes without scopes must not reset them.
        let json = serde_json::to_string(&FaultsUpdate::default()).unwrap();
        assert!(!json.contains("token_scopes"), "{json}");
        for bad in [
            r#"["reserved_ip"]"#,
            r#"[":read"]"#,
            r#"["Reserved_IP:Read"]"#,
        ] {
            let update = update(&format!(r#"{{"token_scopes": {bad}}}"#));
            assert!(update.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn same_holder_assign_is_an_action_or_a_422() {
        let mut s = state();
        let noop = assign(&mut s, "203.0.113.10", 1);
        assert_eq!(noop.droplet_id, Some(1));
        s.complete_action(noop.id, true, SystemTime::now());
        assert_eq!(
            s.floating_ip(Family::FloatingIp, "203.0.113.10").unwrap(),
            (IP, Some(1), false)
        );

        s.update_faults(&FaultsUpdate {
            same_holder_assign: Some(SameHolderAssign::Reject),
            ..Default::default()
        });
        let error = request(
            &mut s,
            "203.0.113.10",
            r#"{"type":"assign","droplet_id":1}"#,
        )
        .unwrap_err();
        assert_eq!(
            (error.status, error.message.as_str()),
            (422, "Floating IP is already assigned to Droplet 1.")
        );
        assert_eq!(s.actions.len(), 1, "no action");
        // Another droplet is still assigned as usual.
        assign(&mut s, "203.0.113.10", 2);
        assert_eq!("reject".parse(), Ok(SameHolderAssign::Reject));
        assert!("maybe".parse::<SameHolderAssign>().is_err());
    }

    #[test]
    fn metadata_lags_a_change_of_holder() {
        let mut s = state();
        s.update_faults(&FaultsUpdate {
            metadata_lag_ms: Some(5_000),
            ..Default::default()
        });
        let action = assign(&mut s, "203.0.113.10", 2);
        s.complete_action(action.id, true, SystemTime::now());
        let now = s.now_ms();
        assert_eq!(s.held_by(2), vec![IP], "the API shows it at once");
        assert_eq!(
            s.metadata_held_by(1, now),
            vec![IP],
            "metadata still the old holder"
        );
        assert!(s.metadata_held_by(2, now).is_empty());
        assert_eq!(s.metadata_held_by(2, now + 5_000), vec![IP]);
        assert!(s.metadata_held_by(1, now + 5_000).is_empty());

        // A second change within the lag: metadata goes on showing what it
        // showed, then the newest holder.
        s.set_holder(IP, None);
        let now = s.now_ms();
        assert_eq!(s.metadata_held_by(1, now), vec![IP]);
        assert!(s.metadata_held_by(1, now + 5_000).is_empty());
        assert!(s.metadata_held_by(2, now + 5_000).is_empty());

        // Without lag metadata follows at once.
        s.update_faults(&FaultsUpdate {
            metadata_lag_ms: Some(0),
            ..Default::default()
        });
        s.set_holder(IP, Some(2));
        assert_eq!(s.metadata_held_by(2, s.now_ms()), vec![IP]);
    }

    #[test]
    fn reset_returns_to_the_starting_faults() {
        let mut s = state();
        s.set_baseline(&FaultsUpdate {
            token_scopes: Some(Some(vec!["reserved_ip:read".into()])),
            metadata_lag_ms: Some(2_000),
            ..Default::default()
        });
        assert_eq!(s.faults().metadata_lag_ms, 2_000);
        s.update_faults(&FaultsUpdate {
            metadata_lag_ms: Some(0),
            token_scopes: Some(None),
            fail_5xx: Some(3),
            ..Default::default()
        });
        s.reset_faults();
        assert_eq!(s.faults().metadata_lag_ms, 2_000);
        assert_eq!(s.faults().fail_5xx, 0);
        assert_eq!(
            s.faults().token_scopes,
            Some(vec!["reserved_ip:read".to_owned()])
        );
    }

    #[test]
    fn droplet_lookup_by_address() {
        let s = state();
        assert_eq!(s.droplet_by_addr("192.0.2.12".parse().unwrap()), Some(2));
        assert_eq!(
            s.droplet_by_addr("::ffff:192.0.2.12".parse().unwrap()),
            Some(2),
            "IPv4-mapped IPv6 sources count as IPv4"
        );
        assert_eq!(s.droplet_by_addr("192.0.2.13".parse().unwrap()), None);
    }

    #[test]
    fn endpoint_templates() {
        for (method, path, expected) in [
            ("GET", "/v2/floating_ips", "GET /v2/floating_ips"),
            (
                "GET",
                "/v2/floating_ips/1.2.3.4",
                "GET /v2/floating_ips/{ip}",
            ),
            (
                "POST",
                "/v2/reserved_ips/1.2.3.4/actions",
                "POST /v2/reserved_ips/{ip}/actions",
            ),
            (
                "GET",
                "/v2/floating_ips/1.2.3.4/actions/7",
                "GET /v2/floating_ips/{ip}/actions/{id}",
            ),
            ("GET", "/v2/actions/7", "GET /v2/actions/{id}"),
            ("GET", "/v2/droplets", "GET other"),
            ("GET", "/", "GET other"),
        ] {
            assert_eq!(api_endpoint(method, path), expected);
        }
    }

    #[test]
    fn snapshot_contents() {
        let mut s = state();
        let action = request(
            &mut s,
            "203.0.113.10",
            r#"{"type":"assign","droplet_id":2}"#,
        )
        .unwrap();
        s.count_api_call("POST /v2/floating_ips/{ip}/actions".into(), "201");
        s.count_api_call("POST /v2/floating_ips/{ip}/actions".into(), "201");
        let snap = s.snapshot();
        assert_eq!(snap.holder(IP), Some(1));
        assert_eq!(snap.floating_ips[0].pending_action, Some(action.id));
        assert_eq!(snap.actions_on(IP).count(), 1);
        assert_eq!(
            snap.api_call_count("POST /v2/floating_ips/{ip}/actions", "201"),
            2
        );
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["actions"][0]["type"], "assign");
        assert_eq!(json["actions"][0]["status"], "in-progress");
        assert_eq!(json["actions"][0]["family"], "floating_ip");
        assert_eq!(json["floating_ips"][0]["ip"], "203.0.113.10");
        let back: SimState = serde_json::from_value(json).unwrap();
        assert_eq!(back, snap);
    }
}
