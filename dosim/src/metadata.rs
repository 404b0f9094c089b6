//! The droplet metadata service (169.254.169.254 in the lab): no auth; the
//! caller's droplet is the one whose configured address the request comes
//! from, as on DO where each droplet sees only itself.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Request, Response, StatusCode};
use axum::routing::get;
use hyper::body::Incoming;
use serde_json::json;
use tower::ServiceExt;

use crate::Shared;
use crate::server::{Dropped, Peer};

const ID: &str = "/metadata/v1/id";
const HOSTNAME: &str = "/metadata/v1/hostname";
const REGION: &str = "/metadata/v1/region";
const FLOATING_ACTIVE: &str = "/metadata/v1/floating_ip/ipv4/active";
const FLOATING_ADDRESS: &str = "/metadata/v1/floating_ip/ipv4/ip_address";
const RESERVED_ACTIVE: &str = "/metadata/v1/reserved_ip/ipv4/active";
const RESERVED_ADDRESS: &str = "/metadata/v1/reserved_ip/ipv4/ip_address";
const ALL_JSON: &str = "/metadata/v1.json";
/// DO's metadata shows a droplet's public IPv6 here (404 without one).
const PUBLIC_IPV6: &str = "/metadata/v1/interfaces/public/0/ipv6/address";
const PATHS: [&str; 8] = [
    ID,
    HOSTNAME,
    REGION,
    FLOATING_ACTIVE,
    FLOATING_ADDRESS,
    RESERVED_ACTIVE,
    RESERVED_ADDRESS,
    ALL_JSON,
];

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "404 page not found\n".into())
}

/// What the caller's droplet sees.
struct Caller {
    id: u64,
    address: IpAddr,
    region: String,
    floating_ip: Option<std::net::Ipv4Addr>,
    ipv6: Option<std::net::Ipv6Addr>,
}

fn caller(shared: &Shared, peer: SocketAddr) -> Option<Caller> {
    let state = shared.lock();
    let id = state.droplet_by_addr(peer.ip())?;
    Some(Caller {
        id,
        address: state.droplet_address(id)?,
        region: state.region().to_owned(),
        floating_ip: state.metadata_held_by(id, state.now_ms()).first().copied(),
        ipv6: state.droplet_ipv6(id),
    })
}

/// Answers `render(caller)` as text, or 404 for an unknown caller.
fn for_caller(
    shared: &Shared,
    peer: SocketAddr,
    render: impl FnOnce(&Caller) -> Option<String>,
) -> Response<Body> {
    match caller(shared, peer).as_ref().and_then(render) {
        Some(body) => text(StatusCode::OK, body),
        None => not_found(),
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    fn route(
        router: Router<Arc<Shared>>,
        path: &'static str,
        render: fn(&Caller) -> Option<String>,
    ) -> Router<Arc<Shared>> {
        router.route(
            path,
            get(
                move |State(s): State<Arc<Shared>>, Extension(Peer(peer)): Extension<Peer>| async move {
                    for_caller(&s, peer, render)
                },
            ),
        )
    }
    let mut router = Router::new();
    router = route(router, ID, |c| Some(c.id.to_string()));
    router = route(router, HOSTNAME, |c| Some(format!("droplet-{}", c.id)));
    router = route(router, REGION, |c| Some(c.region.clone()));
    router = route(router, PUBLIC_IPV6, |c| c.ipv6.map(|a| a.to_string()));
    for (active, address) in [
        (FLOATING_ACTIVE, FLOATING_ADDRESS),
        (RESERVED_ACTIVE, RESERVED_ADDRESS),
    ] {
        router = route(router, active, |c| {
            Some(c.floating_ip.is_some().to_string())
        });
        router = route(router, address, |c| c.floating_ip.map(|ip| ip.to_string()));
    }
    router = route(router, ALL_JSON, |c| {
        let ip = json!({
            "ipv4": match c.floating_ip {
                Some(ip) => json!({ "active": true, "ip_address": ip }),
                None => json!({ "active": false }),
            }
        });
        let body = json!({
            "droplet_id": c.id,
            "hostname": format!("droplet-{}", c.id),
            "region": c.region,
            "floating_ip": ip,
            "reserved_ip": ip,
            "interfaces": { "public": [ match c.ipv6 {
                Some(ipv6) => json!({ "ipv4": { "ip_address": c.address }, "ipv6": { "ip_address": ipv6, "cidr": 64 } }),
                None => json!({ "ipv4": { "ip_address": c.address } }),
            } ] },
        });
        Some(body.to_string())
    });
    router.fallback(|| async { not_found() }).with_state(shared)
}

/// Serves one metadata request, unless `metadata_drop` (close unanswered),
/// `metadata_down` (503) or `metadata_body` (that text) says otherwise;
/// after `metadata_delay_ms`, whichever it is.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    router: Router,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, Dropped> {
    request.extensions_mut().insert(Peer(peer));
    let path = request.uri().path();
    let endpoint = format!(
        "{} {}",
        request.method(),
        PATHS.iter().find(|p| **p == path).unwrap_or(&"other")
    );
    let (drop, down, delay_ms, body) = {
        let state = shared.lock();
        let faults = state.faults();
        (
            faults.metadata_drop,
            faults.metadata_down,
            faults.metadata_delay_ms,
            faults.metadata_body.clone(),
        )
    };
    if delay_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
    }
    if drop {
        shared.lock().count_metadata_call(endpoint, "dropped");
        shared.persist();
        return Err(Dropped);
    }
    let response = if down {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "503 Service Unavailable\n".into(),
        )
    } else if let Some(body) = body {
        text(StatusCode::OK, body)
    } else {
        router.oneshot(request).await.unwrap_or_else(|e| match e {})
    };
    tracing::debug!(%peer, %endpoint, status = response.status().as_u16(), "metadata call");
    shared
        .lock()
        .count_metadata_call(endpoint, response.status().as_str());
    shared.persist();
    Ok(response)
}
