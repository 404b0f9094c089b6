//! The simulator's state machine: droplets, floating IPs and their holders,
//! actions and how they will end, faults, rate-limit window, call counters
//! and the request log. Pure (no I/O), so every rule is unit-tested here;
//! the HTTP layers only translate.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use axum::http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::requests::{RequestLog, RequestRecord};
use crate::time::rfc3339;

/// `ratelimit-limit`: DO allows 5,000 requests an hour per token.
pub const RATE_LIMIT: u32 = 5000;
/// Length of the rate-limit window, in seconds.
pub const RATE_WINDOW_SECS: u64 = 3600;
/// Id of the first action; later ones count up from it.
pub const FIRST_ACTION_ID: u64 = 1_000_001;

/// Which URL family an action came in through: DO renamed floating IPs to
/// reserved IPs and serves both; they name the same objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    FloatingIp,
    ReservedIp,
}

impl Family {
    /// `resource_type` of actions, and the object key in responses.
    pub fn resource_type(self) -> &'static str {
        match self {
            Family::FloatingIp => "floating_ip",
            Family::ReservedIp => "reserved_ip",
        }
    }

    /// The collection's path segment (`/v2/floating_ips/...`).
    pub fn path_segment(self) -> &'static str {
        match self {
            Family::FloatingIp => "floating_ips",
            Family::ReservedIp => "reserved_ips",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Family::FloatingIp => "Floating IP",
            Family::ReservedIp => "Reserved IP",
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
    pub ip: Ipv4Addr,
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
}

impl FaultsUpdate {
    /// Checks values that the types allow but the simulator doesn't.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(status) = self.fail_5xx_status
            && !(500..=599).contains(&status)
        {
            return Err(format!("fail_5xx_status must be 500..=599, not {status}"));
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
            metadata_delay_ms
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
    pub ip: Ipv4Addr,
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
}

impl SimState {
    /// The droplet holding `ip`.
    pub fn holder(&self, ip: Ipv4Addr) -> Option<u64> {
        self.floating_ips
            .iter()
            .find(|f| f.ip == ip)
            .and_then(|f| f.holder)
    }

    /// Actions on `ip`, oldest first.
    pub fn actions_on(&self, ip: Ipv4Addr) -> impl Iterator<Item = &ActionRecord> {
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
}

#[derive(Clone, Copy, Debug, Default)]
struct RateWindow {
    start_unix: u64,
    used: u32,
}

/// The rate-limit headers of one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateHeaders {
    pub limit: u32,
    pub remaining: u32,
    pub reset_unix: u64,
}

/// What completing an action will change, for the route update that must
/// happen before the action reports completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub ip: Ipv4Addr,
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
    ips: BTreeMap<Ipv4Addr, IpEntry>,
    actions: Vec<ActionRecord>,
    /// By action id.
    plans: BTreeMap<u64, ActionPlan>,
    requests: RequestLog,
    api_calls: CallCounts,
    metadata_calls: CallCounts,
    faults: Faults,
    fail_5xx_served: u64,
    rate: RateWindow,
    route_errors: Vec<String>,
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
        floating_ips: &[(Ipv4Addr, Option<u64>)],
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
                        pending: None,
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
            ips,
            actions: Vec::new(),
            plans: BTreeMap::new(),
            requests: RequestLog::default(),
            api_calls: CallCounts::new(),
            metadata_calls: CallCounts::new(),
            faults: Faults::default(),
            fail_5xx_served: 0,
            rate: RateWindow::default(),
            route_errors: Vec::new(),
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

    /// The floating IPs `droplet` holds (completed assignments only).
    pub fn held_by(&self, droplet: u64) -> Vec<Ipv4Addr> {
        self.ips
            .iter()
            .filter(|(_, e)| e.holder == Some(droplet))
            .map(|(ip, _)| *ip)
            .collect()
    }

    /// Holders of all floating IPs, for installing the initial routes.
    pub fn holders(&self) -> Vec<(Ipv4Addr, Option<u64>)> {
        self.ips.iter().map(|(ip, e)| (*ip, e.holder)).collect()
    }

    /// A floating IP from its path segment: (ip, holder, locked); unknown
    /// or unparsable is DO's 404.
    pub fn floating_ip(&self, ip: &str) -> Result<(Ipv4Addr, Option<u64>, bool), ApiError> {
        let ip: Ipv4Addr = ip.parse().map_err(|_| ApiError::not_found())?;
        let entry = self.ips.get(&ip).ok_or_else(ApiError::not_found)?;
        Ok((ip, entry.holder, entry.pending.is_some()))
    }

    /// Every floating IP: (ip, holder, locked).
    pub fn floating_ips(&self) -> Vec<(Ipv4Addr, Option<u64>, bool)> {
        self.ips
            .iter()
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
        let (ip, holder, locked) = self.floating_ip(ip)?;
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
    pub fn check_holder(
        &self,
        ip: Ipv4Addr,
        holder: Option<u64>,
    ) -> Result<Option<IpAddr>, String> {
        if !self.ips.contains_key(&ip) {
            return Err(format!("{ip} is not a floating IP"));
        }
        holder
            .map(|id| {
                self.droplet_address(id)
                    .ok_or_else(|| format!("droplet {id} is not configured"))
            })
            .transpose()
    }

    /// Moves `ip` to `holder` at once, as another droplet's assign or the
    /// DO console would; an action pending on it still ends as planned.
    pub fn set_holder(&mut self, ip: Ipv4Addr, holder: Option<u64>) {
        if let Some(entry) = self.ips.get_mut(&ip) {
            entry.holder = holder;
        }
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
                Some((droplet, self.droplet_address(droplet)?))
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
        if let Some(entry) = self.ips.get_mut(&ip) {
            if success {
                entry.holder = droplet_id;
            }
            if entry.pending == Some(id) {
                entry.pending = None;
            }
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

    pub fn reset_faults(&mut self) {
        self.faults = Faults::default();
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

    /// Counts an answered API call against the hourly window and returns
    /// the headers to send; `limited` forces `remaining` to 0.
    pub fn consume_rate(&mut self, now_unix: u64, limited: bool) -> RateHeaders {
        let rate = &mut self.rate;
        if rate.start_unix == 0 || now_unix >= rate.start_unix + RATE_WINDOW_SECS {
            *rate = RateWindow {
                start_unix: now_unix,
                used: 0,
            };
        }
        rate.used = rate.used.saturating_add(1);
        RateHeaders {
            limit: RATE_LIMIT,
            remaining: if limited {
                0
            } else {
                RATE_LIMIT.saturating_sub(rate.used)
            },
            reset_unix: rate.start_unix + RATE_WINDOW_SECS,
        }
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
        ["v2", family @ ("floating_ips" | "reserved_ips")] => format!("/v2/{family}"),
        ["v2", family @ ("floating_ips" | "reserved_ips"), _] => format!("/v2/{family}/{{ip}}"),
        [
            "v2",
            family @ ("floating_ips" | "reserved_ips"),
            _,
            "actions",
        ] => {
            format!("/v2/{family}/{{ip}}/actions")
        }
        [
            "v2",
            family @ ("floating_ips" | "reserved_ips"),
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

    const IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

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
            &[(IP, Some(1)), (Ipv4Addr::new(203, 0, 113, 20), None)],
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
        assert_eq!(s.floating_ip("203.0.113.10").unwrap(), (IP, Some(1), true));
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
        assert_eq!(s.floating_ip("203.0.113.10").unwrap(), (IP, Some(2), false));
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
        assert_eq!(s.floating_ip("203.0.113.10").unwrap(), (IP, Some(1), false));
    }

    #[test]
    fn unassign_lifecycle() {
        let mut s = state();
        let action = request(&mut s, "203.0.113.10", r#"{"type":"unassign"}"#).unwrap();
        assert_eq!(action.kind, ActionKind::Unassign);
        assert_eq!(action.droplet_id, None);
        assert_eq!(s.completion(action.id).unwrap().holder, None);
        s.complete_action(action.id, true, SystemTime::now());
        assert_eq!(s.floating_ip("203.0.113.10").unwrap().1, None);
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
        assert_eq!(s.floating_ip("203.0.113.10").unwrap(), (IP, Some(1), false));

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
            s.check_holder(Ipv4Addr::new(198, 51, 100, 1), None)
                .is_err()
        );
        s.set_holder(IP, Some(2));
        assert_eq!(s.held_by(2), vec![IP]);
        s.set_holder(IP, None);
        assert_eq!(s.floating_ip("203.0.113.10").unwrap().1, None);
    }

    #[test]
    fn rate_window() {
        let mut s = state();
        let first = s.consume_rate(1_000, false);
        assert_eq!(
            first,
            RateHeaders {
                limit: 5000,
                remaining: 4999,
                reset_unix: 4_600
            }
        );
        assert_eq!(s.consume_rate(1_001, false).remaining, 4998);
        assert_eq!(s.consume_rate(1_002, true).remaining, 0);
        let next = s.consume_rate(4_600, false);
        assert_eq!((next.remaining, next.reset_unix), (4999, 8_200));
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
