//! The DO API v2 listener: floating/reserved IP actions and lookups, with
//! bearer auth, rate-limit headers and injected faults; plus the `/_sim/`
//! control endpoints (no auth, no faults).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use axum::routing::{get, post};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::Shared;
use crate::requests::{RequestRecord, request_id};
use crate::server::{Conn, Dropped, Peer};
use crate::state::{
    ActionRecord, ActionStatus, ApiError, ApiFault, Family, FaultsUpdate, RateCall, RateHeaders,
    ScriptedFault, api_endpoint, required_scope,
};
use crate::time::unix_secs;

const JSON: &str = "application/json; charset=utf-8";

/// A DO error body with its status.
pub(crate) fn error_response(error: &ApiError) -> Response<Body> {
    json_response(
        error.status,
        &json!({ "id": error.id, "message": error.message }),
    )
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

/// The routes, without auth or faults (see [`handle`]).
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let mut router = Router::new();
    for family in [Family::FloatingIp, Family::ReservedIp, Family::ReservedIpv6] {
        let base = format!("/v2/{}", family.path_segment());
        router = router
            .route(
                &base,
                get(move |State(s): State<Arc<Shared>>| async move { list(&s, family) }),
            )
            .route(
                &format!("{base}/{{ip}}"),
                get(
                    move |State(s): State<Arc<Shared>>, Path(ip): Path<String>| async move {
                        show(&s, family, &ip)
                    },
                ),
            )
            .route(
                &format!("{base}/{{ip}}/actions"),
                post(
                    move |State(s): State<Arc<Shared>>,
                          Extension(Peer(peer)): Extension<Peer>,
                          Path(ip): Path<String>,
                          body: Bytes| async move {
                        create_action(&s, family, &ip, peer, &body).await
                    },
                ),
            );
        // DO's spec gives reserved IPv6 actions no `.../actions/{id}`: they
        // are polled at `/v2/actions/{id}` only, and so here.
        if family != Family::ReservedIpv6 {
            router =
                router.route(
                    &format!("{base}/{{ip}}/actions/{{id}}"),
                    get(
                        move |State(s): State<Arc<Shared>>,
                              Path((ip, id)): Path<(String, String)>| async move {
                            show_action(&s, Some((family, &ip)), &id).await
                        },
                    ),
                );
        }
    }
    router
        .route(
            "/v2/actions/{id}",
            get(
                |State(s): State<Arc<Shared>>, Path(id): Path<String>| async move {
                    show_action(&s, None, &id).await
                },
            ),
        )
        .route("/_sim/state", get(sim_state))
        .route("/_sim/faults", post(sim_set_faults).get(sim_faults))
        .route("/_sim/reset_faults", post(sim_reset_faults))
        .route("/_sim/requests", get(sim_requests))
        .route("/_sim/holder", post(sim_set_holder))
        .route("/_sim/close_connections", post(sim_close_connections))
        .fallback(|| async { error_response(&ApiError::not_found()) })
        .method_not_allowed_fallback(|| async {
            json_response(
                405,
                &json!({"id": "method_not_allowed", "message": "Method not allowed."}),
            )
        })
        .with_state(shared)
}

/// Bodies bigger than this are not DO API requests; the connection is
/// closed (a simulator need not answer 413 nicely).
const MAX_BODY: usize = 1 << 20;

/// Serves one API-listener request: `/_sim/` goes straight to the router;
/// everything else is logged, gets the fault decided on arrival, the delay,
/// bearer auth, then the rate-limit headers and a counter bump.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    router: Router,
    conn: Conn,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, Dropped> {
    let peer = conn.peer;
    request.extensions_mut().insert(Peer(peer));
    let path = request.uri().path().to_owned();
    if path == "/_sim" || path.starts_with("/_sim/") {
        return Ok(router.oneshot(request).await.unwrap_or_else(|e| match e {}));
    }
    let method = request.method().clone();
    let endpoint = api_endpoint(method.as_str(), &path);
    // The whole body first, so the log has it before anything can fail.
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(Body::new(body), MAX_BODY).await {
        Ok(body) => body,
        Err(error) => {
            tracing::debug!(%peer, %method, %path, %error, "reading the request body");
            return Err(Dropped);
        }
    };
    let mut logged = Logged {
        seq: shared.lock().log_request(RequestRecord {
            // The log's to set.
            seq: 0,
            received_us: 0,
            finished_us: None,
            status: None,
            method: method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or_else(|| path.clone(), std::string::ToString::to_string),
            endpoint: endpoint.clone(),
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_owned(), value)
                })
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
            caller: peer,
            connection: conn.id,
            tls: conn.tls,
        }),
        shared: Arc::clone(&shared),
        status: None,
    };
    let request = Request::from_parts(parts, Body::from(body));

    let (fault, delay) = shared.lock().take_api_fault();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if fault == ApiFault::Drop {
        logged.status = Some("dropped".into());
        shared.lock().count_api_call(endpoint, "dropped");
        shared.persist();
        tracing::info!(%peer, %method, %path, "fault: closing the connection unanswered");
        return Err(Dropped);
    }
    let (mut response, extra_headers, rate) = match &fault {
        ApiFault::ServerError(status, message) => {
            let mut error = ApiError::server_error(*status);
            if let Some(message) = message {
                error.message.clone_from(message);
            }
            (
                error_response(&error),
                None,
                rate_of(&shared, RateCall::Count),
            )
        }
        ApiFault::RateLimited { retry_after_secs } => {
            let mut response = error_response(&ApiError::too_many_requests());
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            (response, None, rate_of(&shared, RateCall::Refused))
        }
        ApiFault::Scripted(ScriptedFault::Error {
            status,
            id,
            message,
            request_id,
            headers,
        }) => {
            let mut body = json!({ "id": id, "message": message });
            if let Some(request_id) = request_id {
                body["request_id"] = json!(request_id);
            }
            (
                json_response(*status, &body),
                Some(headers),
                rate_of(&shared, RateCall::Count),
            )
        }
        ApiFault::Scripted(ScriptedFault::Raw {
            status,
            body,
            headers,
        }) => {
            let mut response = Response::new(Body::from(body.clone()));
            *response.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            (response, Some(headers), rate_of(&shared, RateCall::Count))
        }
        // Folded into `Drop` and the delay by `take_api_fault`.
        ApiFault::Scripted(ScriptedFault::Drop | ScriptedFault::Delay { .. })
        | ApiFault::None
        | ApiFault::Drop => {
            if authorized(&request, &shared.token) {
                let (response, rate) = serve_authorized(&shared, router, &endpoint, request).await;
                (response, None, rate)
            } else {
                let response = error_response(&ApiError::unauthorized());
                (response, None, rate_of(&shared, RateCall::Count))
            }
        }
    };
    let status = response.status();
    shared.lock().count_api_call(endpoint, status.as_str());
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", HeaderValue::from(rate.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(rate.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(rate.reset_unix));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    if let Ok(id) = HeaderValue::from_str(&request_id(logged.seq)) {
        headers.insert("x-request-id", id);
    }
    // Validated when the script was set.
    for (name, value) in extra_headers.into_iter().flatten() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    logged.status = Some(status.as_str().to_owned());
    shared.persist();
    tracing::debug!(%peer, %method, %path, status = status.as_u16(), fault = fault.kind(), "API call");
    Ok(response)
}

/// The rate limits' headers for a call counted as `call` says.
fn rate_of(shared: &Shared, call: RateCall) -> RateHeaders {
    let mut state = shared.lock();
    let now_ms = state.now_ms();
    state
        .consume_rate(now_ms, unix_secs(SystemTime::now()), call)
        .headers
}

/// A call with the right token: the rate limits (429 past them), then the
/// token's scope for the endpoint (403 without it), then the route.
async fn serve_authorized(
    shared: &Shared,
    router: Router,
    endpoint: &str,
    request: Request<Body>,
) -> (Response<Body>, RateHeaders) {
    let (decision, scope_missing) = {
        let mut state = shared.lock();
        let now_ms = state.now_ms();
        let decision = state.consume_rate(now_ms, unix_secs(SystemTime::now()), RateCall::Enforce);
        let scope_missing =
            required_scope(endpoint).filter(|scope| !state.faults().has_scope(scope));
        (decision, scope_missing)
    };
    if let Some(retry_after) = decision.refused {
        let mut response = error_response(&ApiError::too_many_requests());
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        tracing::info!(%endpoint, ?retry_after, "rate limited");
        return (response, decision.headers);
    }
    if let Some(scope) = scope_missing {
        tracing::info!(%endpoint, scope, "the token lacks the endpoint's scope");
        return (error_response(&ApiError::forbidden()), decision.headers);
    }
    let response = router.oneshot(request).await.unwrap_or_else(|e| match e {});
    (response, decision.headers)
}

/// Ends a logged request's record when its handling ends, however it ends:
/// answered, dropped, or abandoned because the caller went away (hyper
/// then drops the handler), so concurrency computed from the log is right.
struct Logged {
    shared: Arc<Shared>,
    seq: u64,
    status: Option<String>,
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.shared
            .lock()
            .finish_request(self.seq, self.status.as_deref());
    }
}

/// `Authorization: Bearer TOKEN` (scheme case-insensitive).
fn authorized<B>(request: &Request<B>, token: &str) -> bool {
    let Some(value) = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = value.trim().splitn(2, ' ');
    let scheme = parts.next().unwrap_or_default();
    let credentials = parts.next().unwrap_or_default().trim();
    scheme.eq_ignore_ascii_case("bearer") && credentials == token
}

fn region_json(region: &str) -> Value {
    json!({ "slug": region, "name": region, "available": true })
}

fn droplet_json(
    id: u64,
    address: Option<IpAddr>,
    ipv6: Option<std::net::Ipv6Addr>,
    region: &str,
) -> Value {
    let (v4, mut v6) = match address {
        Some(IpAddr::V4(a)) => (vec![json!({"ip_address": a, "type": "public"})], vec![]),
        Some(IpAddr::V6(a)) => (vec![], vec![json!({"ip_address": a, "type": "public"})]),
        None => (vec![], vec![]),
    };
    if let Some(a) = ipv6
        && address != Some(IpAddr::V6(a))
    {
        v6.push(json!({"ip_address": a, "netmask": 64, "type": "public"}));
    }
    json!({
        "id": id,
        "name": format!("droplet-{id}"),
        "status": "active",
        "region": region_json(region),
        "networks": { "v4": v4, "v6": v6 },
    })
}

/// The IP object; without `droplet:read` DO leaves out its `droplet`.
/// A reserved IPv6 has the shape of DO's `reserved_ipv6` model instead:
/// `ip`, `region_slug`, `reserved_at`, `droplet`, and no `locked`.
fn ip_json(shared: &Shared, (ip, holder, locked): (IpAddr, Option<u64>, bool)) -> Value {
    let state = shared.lock();
    let region = state.region();
    let mut object = if ip.is_ipv6() {
        json!({
            "ip": ip,
            "region_slug": region,
            "reserved_at": crate::time::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_732_100_910)),
        })
    } else {
        json!({
            "ip": ip,
            "region": region_json(region),
            "locked": locked,
            "project_id": "00000000-0000-4000-8000-000000000000",
        })
    };
    if state.faults().has_scope("droplet:read") {
        object["droplet"] = json!(holder.map(|id| droplet_json(
            id,
            state.droplet_address(id),
            state.droplet_ipv6(id),
            region
        )));
    }
    object
}

/// An action's `resource_id`: the IPv4 address as a number, as DO gives
/// it; for an IPv6 address (DO's spec shows some integer) its low 32 bits.
fn resource_id(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(ip) => u32::from(ip),
        IpAddr::V6(ip) => u128::from(ip) as u32,
    }
}

/// The action object DO returns; `resource_type` from `family`, and an
/// in-progress action's status `pending_status` when the faults set one.
pub(crate) fn action_json(
    action: &ActionRecord,
    family: Family,
    region: &str,
    pending_status: Option<&str>,
) -> Value {
    let status = match pending_status {
        Some(status) if action.status == ActionStatus::InProgress => json!(status),
        _ => json!(action.status),
    };
    json!({
        "id": action.id,
        "status": status,
        "type": action.kind.api_type(),
        "started_at": action.started_at,
        "completed_at": action.completed_at,
        "resource_id": resource_id(action.ip),
        "resource_type": family.resource_type(),
        "region": region_json(region),
        "region_slug": region,
    })
}

fn list(shared: &Shared, family: Family) -> Response<Body> {
    let ips = shared.lock().floating_ips(family);
    let items: Vec<Value> = ips
        .into_iter()
        .map(|entry| ip_json(shared, entry))
        .collect();
    let total = items.len();
    json_response(
        200,
        &json!({
            family.list_key(): items,
            "links": {},
            "meta": { "total": total },
        }),
    )
}

fn show(shared: &Shared, family: Family, ip: &str) -> Response<Body> {
    let found = shared.lock().floating_ip(family, ip);
    match found {
        Ok(entry) => json_response(
            200,
            &json!({ family.resource_type(): ip_json(shared, entry) }),
        ),
        Err(e) => error_response(&e),
    }
}

async fn create_action(
    shared: &Arc<Shared>,
    family: Family,
    ip: &str,
    peer: SocketAddr,
    body: &[u8],
) -> Response<Body> {
    let result = shared
        .lock()
        .request_action(family, ip, body, peer, SystemTime::now());
    match result {
        Ok(action) => {
            tracing::info!(
                id = action.id,
                ip = %action.ip,
                kind = ?action.kind,
                droplet = ?action.droplet_id,
                caller = %peer,
                caller_droplet = ?action.caller_droplet_id,
                "action requested"
            );
            let plan = shared.lock().action_plan(action.id);
            match plan.and_then(|plan| plan.polls_left) {
                None => crate::spawn_completion(Arc::clone(shared), action.id),
                Some(0) => crate::finish_action(shared, action.id).await,
                Some(_) => {}
            }
            render_action(shared, 201, action.id, family)
        }
        Err(e) => {
            tracing::info!(%ip, caller = %peer, status = e.status, message = %e.message, "action refused");
            error_response(&e)
        }
    }
}

/// `GET .../{ip}/actions/{id}` (the action must be on that IP) or
/// `GET /v2/actions/{id}`. Counts as a poll for a `complete_after_polls`
/// plan, which may end the action before this answer.
async fn show_action(shared: &Shared, scope: Option<(Family, &str)>, id: &str) -> Response<Body> {
    let found = {
        let state = shared.lock();
        id.parse().ok().and_then(|id| state.action(id)).cloned()
    };
    let Some(action) = found else {
        return error_response(&ApiError::not_found());
    };
    let family = match scope {
        Some((family, ip)) => {
            if ip.parse::<IpAddr>().ok() != Some(action.ip) {
                return error_response(&ApiError::not_found());
            }
            family
        }
        None => action.family,
    };
    let completes = shared.lock().count_poll(action.id);
    if completes {
        crate::finish_action(shared, action.id).await;
    }
    render_action(shared, 200, action.id, family)
}

/// `status` with `{"action": {..}}` for action `id` as it is now.
fn render_action(shared: &Shared, status: u16, id: u64, family: Family) -> Response<Body> {
    let state = shared.lock();
    let Some(action) = state.action(id) else {
        return error_response(&ApiError::not_found());
    };
    let pending_status = state.faults().pending_status.as_deref();
    json_response(
        status,
        &json!({ "action": action_json(action, family, state.region(), pending_status) }),
    )
}

async fn sim_state(State(shared): State<Arc<Shared>>) -> Response<Body> {
    let snapshot = shared.lock().snapshot();
    json_response(200, &json!(snapshot))
}

async fn sim_faults(State(shared): State<Arc<Shared>>) -> Response<Body> {
    let faults = shared.lock().faults().clone();
    json_response(200, &json!(faults))
}

async fn sim_set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response<Body> {
    let update: FaultsUpdate = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(e) => return error_response(&ApiError::unprocessable(e.to_string())),
    };
    if let Err(message) = update.validate() {
        return error_response(&ApiError::unprocessable(message));
    }
    let faults = shared.lock().update_faults(&update);
    tracing::info!(?faults, "faults set");
    shared.persist();
    json_response(200, &json!(faults))
}

async fn sim_requests(State(shared): State<Arc<Shared>>) -> Response<Body> {
    let requests = shared.lock().requests();
    json_response(200, &json!(requests))
}

/// The body of `POST /_sim/holder`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HolderUpdate {
    ip: IpAddr,
    holder: Option<u64>,
}

async fn sim_set_holder(State(shared): State<Arc<Shared>>, body: Bytes) -> Response<Body> {
    let update: HolderUpdate = match serde_json::from_slice(&body) {
        Ok(update) => update,
        Err(e) => return error_response(&ApiError::unprocessable(e.to_string())),
    };
    if let Err(message) = crate::set_holder(&shared, update.ip, update.holder).await {
        return error_response(&ApiError::unprocessable(message));
    }
    json_response(200, &json!({ "ip": update.ip, "holder": update.holder }))
}

async fn sim_close_connections(State(shared): State<Arc<Shared>>) -> Response<Body> {
    let open = shared.close_connections();
    json_response(200, &json!({ "closed": open }))
}

async fn sim_reset_faults(State(shared): State<Arc<Shared>>) -> Response<Body> {
    shared.lock().reset_faults();
    tracing::info!("faults reset");
    shared.persist();
    let faults = shared.lock().faults().clone();
    json_response(200, &json!(faults))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(value: &str) -> Request<()> {
        Request::builder()
            .header(AUTHORIZATION, value)
            .body(())
            .unwrap()
    }

    #[test]
    fn bearer_auth() {
        assert!(authorized(&with_auth("Bearer s3cret"), "s3cret"));
        assert!(authorized(&with_auth("bearer  s3cret "), "s3cret"));
        assert!(!authorized(&with_auth("Bearer wrong"), "s3cret"));
        assert!(!authorized(&with_auth("Basic s3cret"), "s3cret"));
        assert!(!authorized(&with_auth("s3cret"), "s3cret"));
        assert!(!authorized(&Request::new(()), "s3cret"));
    }
}
