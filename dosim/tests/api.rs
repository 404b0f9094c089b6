//! The simulator over real HTTP on 127.0.0.1: API, metadata, faults, state,
//! and the binary's CLI and SIGTERM handling.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use lbha_dosim::{SimConfig, SimHandle, start};
use reqwest::{Client, Method, Response, StatusCode};
use rstest::rstest;
use serde_json::{Value, json};

const TOKEN: &str = "test-token";
const FIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const OTHER_FIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
/// Droplet 1 is "us": every loopback request comes from 127.0.0.1.
const LOCAL_DROPLET: u64 = 1;
/// Droplet 2 exists but never calls (its address isn't ours).
const REMOTE_DROPLET: u64 = 2;

struct Sim {
    sim: SimHandle,
    client: Client,
}

fn client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Droplets 1 (127.0.0.1) and 2 (192.0.2.12); FIP held by 2, OTHER_FIP
/// unassigned.
async fn sim(delay_ms: u64) -> Sim {
    let sim = start(
        SimConfig::new(TOKEN)
            .droplet(LOCAL_DROPLET, "127.0.0.1".parse().unwrap())
            .droplet(REMOTE_DROPLET, "192.0.2.12".parse().unwrap())
            .floating_ip(FIP, Some(REMOTE_DROPLET))
            .floating_ip(OTHER_FIP, None)
            .action_delay(Duration::from_millis(delay_ms)),
    )
    .await
    .unwrap();
    Sim {
        sim,
        client: client(),
    }
}

impl Sim {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.api_url())
    }

    async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json().await.unwrap()
    }

    /// Sends a table row's request.
    async fn send(&self, request: &Request) -> Response {
        let mut builder = self
            .client
            .request(request.method.clone(), self.url(&request.path));
        if let Some(token) = request.token {
            builder = builder.bearer_auth(token);
        }
        builder = match &request.body {
            Body::Empty => builder,
            Body::Json(value) => builder.json(value),
            Body::Raw(text) => builder
                .header("content-type", "application/json")
                .body(*text),
        };
        builder.send().await.unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn assign(&self, family: &str, ip: Ipv4Addr, droplet: u64) -> Response {
        self.post(
            &format!("/v2/{family}/{ip}/actions"),
            json!({"type": "assign", "droplet_id": droplet}),
        )
        .await
    }

    async fn unassign(&self, ip: Ipv4Addr) -> Response {
        self.post(&fip_actions(ip), json!({"type": "unassign"}))
            .await
    }

    async fn sim_post(&self, path: &str, body: Value) -> Value {
        let response = self
            .client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.unwrap()
    }

    async fn state(&self) -> Value {
        let response = self
            .client
            .get(self.url("/_sim/state"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// `POST path` (a `/_sim/` control) without auth; the raw answer.
    async fn sim_post_response(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `GET path` (a `/_sim/` control) without auth; the 200 answer's JSON.
    async fn sim_get(&self, path: &str) -> Value {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.unwrap()
    }

    /// The `status` of the action that `GET path` answers.
    async fn action_status(&self, path: &str) -> String {
        let body = self.get_json(path).await;
        body["action"]["status"].as_str().unwrap().to_owned()
    }

    /// Assigns and returns the answer's action, and its id.
    async fn assign_action(&self, family: &str, ip: Ipv4Addr, droplet: u64) -> (Value, u64) {
        let body: Value = self.assign(family, ip, droplet).await.json().await.unwrap();
        let id = body["action"]["id"].as_u64().expect("an action id");
        (body["action"].clone(), id)
    }

    /// How many calls to `endpoint` the simulator answered `status`.
    fn calls(&self, endpoint: &str, status: &str) -> u64 {
        self.sim.state().api_call_count(endpoint, status)
    }

    async fn metadata(&self, path: &str) -> (StatusCode, String) {
        metadata_from(&self.client, &self.sim, path).await
    }

    /// Asserts what both metadata families (floating_ip, reserved_ip) say
    /// about this droplet's floating IP: whether it has one, and which
    /// (no address at all, 404, while it has none).
    async fn assert_fip_metadata(&self, ours: Option<Ipv4Addr>) {
        for family in ["floating_ip", "reserved_ip"] {
            let active = self
                .metadata(&format!("/metadata/v1/{family}/ipv4/active"))
                .await;
            assert_eq!(
                active,
                (StatusCode::OK, ours.is_some().to_string()),
                "{family}"
            );
            let address = self
                .metadata(&format!("/metadata/v1/{family}/ipv4/ip_address"))
                .await;
            match ours {
                Some(ip) => assert_eq!(address, (StatusCode::OK, ip.to_string()), "{family}"),
                None => assert_eq!(address.0, StatusCode::NOT_FOUND, "{family}"),
            }
        }
    }

    /// Polls `GET /v2/actions/{id}` until completed; returns the action.
    async fn wait_completed(&self, id: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let body = self.get_json(&format!("/v2/actions/{id}")).await;
            if body["action"]["status"] == "completed" {
                return body["action"].clone();
            }
            assert!(Instant::now() < deadline, "action {id} never completed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn metadata_from(client: &Client, sim: &SimHandle, path: &str) -> (StatusCode, String) {
    let response = client
        .get(format!("{}{path}", sim.metadata_url()))
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

fn header<'a>(response: &'a Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

fn header_u64(response: &Response, name: &str) -> u64 {
    header(response, name).parse().unwrap()
}

fn assert_json(response: &Response) {
    assert!(
        header(response, "content-type").starts_with("application/json"),
        "{:?}",
        response.headers()
    );
}

fn assert_rate_headers(response: &Response) {
    assert_eq!(header_u64(response, "ratelimit-limit"), 5000);
    assert!(header_u64(response, "ratelimit-remaining") <= 5000);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let reset = header_u64(response, "ratelimit-reset");
    assert!(
        reset > now && reset <= now + 3600,
        "reset {reset}, now {now}"
    );
}

async fn assert_error(response: Response, status: u16, id: &str) -> String {
    assert_eq!(response.status().as_u16(), status);
    assert_json(&response);
    assert_rate_headers(&response);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], id, "{body}");
    let message = body["message"].as_str().expect("message").to_owned();
    assert!(!message.is_empty());
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    message
}

/// A request as a table row gives it: the simulator's API token unless
/// changed.
struct Request {
    method: Method,
    path: String,
    token: Option<&'static str>,
    body: Body,
}

enum Body {
    Empty,
    Json(Value),
    /// Sent as `application/json` whatever it is.
    Raw(&'static str),
}

fn get(path: impl Into<String>) -> Request {
    Request {
        method: Method::GET,
        path: path.into(),
        token: Some(TOKEN),
        body: Body::Empty,
    }
}

fn post(path: impl Into<String>, body: Value) -> Request {
    Request {
        method: Method::POST,
        body: Body::Json(body),
        ..get(path)
    }
}

fn post_raw(path: impl Into<String>, body: &'static str) -> Request {
    Request {
        method: Method::POST,
        body: Body::Raw(body),
        ..get(path)
    }
}

fn fip_actions(ip: Ipv4Addr) -> String {
    format!("/v2/floating_ips/{ip}/actions")
}

fn assign_to(droplet: u64) -> Value {
    json!({"type": "assign", "droplet_id": droplet})
}

impl Request {
    fn anonymous(self) -> Self {
        Self {
            token: None,
            ..self
        }
    }

    fn with_token(self, token: &'static str) -> Self {
        Self {
            token: Some(token),
            ..self
        }
    }
}

/// The DigitalOcean API's error statuses and ids.
const UNAUTHORIZED: (u16, &str) = (401, "unauthorized");
const NOT_FOUND: (u16, &str) = (404, "not_found");
const UNPROCESSABLE: (u16, &str) = (422, "unprocessable_entity");

/// Requests the API refuses: the status, the DigitalOcean error id and, where
/// the row gives it, the exact message; and the refusal changes nothing.
#[rstest]
#[case::anonymous(
    get(format!("/v2/floating_ips/{FIP}")).anonymous(),
    UNAUTHORIZED,
    Some("Unable to authenticate you")
)]
#[case::wrong_token(get(format!("/v2/floating_ips/{FIP}")).with_token("nope"), UNAUTHORIZED, None)]
#[case::anonymous_post(post(fip_actions(FIP), assign_to(1)).anonymous(), UNAUTHORIZED, None)]
#[case::assign_unknown_ip(
    post(fip_actions(Ipv4Addr::new(198, 51, 100, 1)), assign_to(1)),
    NOT_FOUND,
    Some("The resource you were accessing could not be found.")
)]
#[case::get_unknown_ip(get("/v2/floating_ips/198.51.100.1"), NOT_FOUND, None)]
#[case::get_ip_not_an_address(get("/v2/reserved_ips/nonsense"), NOT_FOUND, None)]
#[case::get_unknown_action(get("/v2/actions/42"), NOT_FOUND, None)]
#[case::get_action_not_a_number(get("/v2/actions/abc"), NOT_FOUND, None)]
#[case::unknown_route(get("/v2/droplets"), NOT_FOUND, None)]
#[case::assign_unknown_droplet(post(fip_actions(FIP), assign_to(99)), UNPROCESSABLE, None)]
#[case::assign_without_droplet(
    post(fip_actions(FIP), json!({"type": "assign"})),
    UNPROCESSABLE,
    None
)]
#[case::droplet_id_not_a_number(
    post(fip_actions(FIP), json!({"type": "assign", "droplet_id": "x"})),
    UNPROCESSABLE,
    None
)]
#[case::unknown_action_type(
    post(fip_actions(FIP), json!({"type": "explode"})),
    UNPROCESSABLE,
    None
)]
#[case::no_action_type(post(fip_actions(FIP), json!({"droplet_id": 1})), UNPROCESSABLE, None)]
#[case::body_not_an_object(post(fip_actions(FIP), json!([1, 2])), UNPROCESSABLE, None)]
#[case::body_not_json(
    post_raw(format!("/v2/reserved_ips/{FIP}/actions"), "{type: assign"),
    UNPROCESSABLE,
    None
)]
#[case::unassign_unassigned_ip(
    post(fip_actions(OTHER_FIP), json!({"type": "unassign"})),
    UNPROCESSABLE,
    None
)]
#[tokio::test]
async fn refused_request(
    #[case] request: Request,
    #[case] (status, id): (u16, &str),
    #[case] message: Option<&str>,
) {
    let s = sim(50).await;
    let got = assert_error(s.send(&request).await, status, id).await;
    if let Some(message) = message {
        assert_eq!(got, message);
    }
    assert!(s.state().await["actions"].as_array().unwrap().is_empty());
    assert_eq!(s.sim.holder(FIP), Some(REMOTE_DROPLET));
}

#[tokio::test]
async fn the_token_is_accepted() {
    let s = sim(50).await;
    let ok = s.get(&format!("/v2/floating_ips/{FIP}")).await;
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn ratelimit_headers_count_down() {
    let s = sim(50).await;
    let first = s.get(&format!("/v2/floating_ips/{FIP}")).await;
    assert_rate_headers(&first);
    assert_json(&first);
    let second = s.get("/v2/floating_ips").await;
    assert_rate_headers(&second);
    assert_eq!(
        header_u64(&second, "ratelimit-remaining"),
        header_u64(&first, "ratelimit-remaining") - 1
    );
    let not_found = s.get("/v2/droplets").await;
    assert_rate_headers(&not_found);
    assert_eq!(header_u64(&not_found, "ratelimit-remaining"), 4997);
}

#[tokio::test]
async fn assign_lifecycle_on_floating_ips() {
    let s = sim(300).await;
    let started = Instant::now();
    let response = s.assign("floating_ips", FIP, LOCAL_DROPLET).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_json(&response);
    assert_rate_headers(&response);
    let body: Value = response.json().await.unwrap();
    let action = &body["action"];
    let id = action["id"].as_u64().unwrap();
    assert_eq!(action["status"], "in-progress");
    assert_eq!(action["type"], "assign_ip");
    assert_eq!(action["completed_at"], Value::Null);
    assert_eq!(action["resource_id"], u32::from(FIP));
    assert_eq!(action["resource_type"], "floating_ip");
    assert_eq!(action["region_slug"], "nyc3");
    let started_at = action["started_at"].as_str().unwrap();
    assert!(
        started_at.len() == 20 && started_at.ends_with('Z') && started_at.as_bytes()[10] == b'T',
        "{started_at}"
    );

    // In progress: the old holder still holds it, locked.
    let ip = s.get_json(&format!("/v2/floating_ips/{FIP}")).await;
    assert_eq!(ip["floating_ip"]["ip"], FIP.to_string());
    assert_eq!(ip["floating_ip"]["droplet"]["id"], REMOTE_DROPLET);
    assert_eq!(ip["floating_ip"]["locked"], true);
    assert_eq!(ip["floating_ip"]["region"]["slug"], "nyc3");
    let pending = s
        .get_json(&format!("/v2/floating_ips/{FIP}/actions/{id}"))
        .await;
    assert_eq!(pending["action"]["status"], "in-progress");
    assert_eq!(s.sim.holder(FIP), Some(REMOTE_DROPLET));

    let done = s.wait_completed(id).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(done["completed_at"].is_string());
    let ip = s.get_json(&format!("/v2/floating_ips/{FIP}")).await;
    assert_eq!(ip["floating_ip"]["droplet"]["id"], LOCAL_DROPLET);
    assert_eq!(ip["floating_ip"]["locked"], false);
    assert_eq!(s.sim.holder(FIP), Some(LOCAL_DROPLET));

    // State: one assign, timed by the simulator's monotonic clock.
    let state = s.state().await;
    let actions = state["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1);
    let recorded = &actions[0];
    assert_eq!(recorded["id"], id);
    assert_eq!(recorded["ip"], FIP.to_string());
    assert_eq!(recorded["type"], "assign");
    assert_eq!(recorded["family"], "floating_ip");
    assert_eq!(recorded["droplet_id"], LOCAL_DROPLET);
    assert_eq!(recorded["status"], "completed");
    assert_eq!(recorded["caller_droplet_id"], LOCAL_DROPLET);
    assert!(
        recorded["caller"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let requested = recorded["requested_at_ms"].as_u64().unwrap();
    let completed = recorded["completed_at_ms"].as_u64().unwrap();
    assert!(completed - requested >= 300, "{requested} -> {completed}");
    let fip = state["floating_ips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["ip"] == FIP.to_string())
        .unwrap();
    assert_eq!(fip["holder"], LOCAL_DROPLET);
    assert_eq!(fip["locked"], false);
    let calls = &state["api_calls"];
    assert_eq!(calls["POST /v2/floating_ips/{ip}/actions"]["201"], 1);
    assert_eq!(calls["GET /v2/floating_ips/{ip}"]["200"], 2);
    assert!(calls["GET /v2/actions/{id}"]["200"].as_u64().unwrap() >= 1);
    assert_eq!(calls["GET /v2/floating_ips/{ip}/actions/{id}"]["200"], 1);
    // The typed view agrees.
    let typed = s.sim.state();
    assert_eq!(typed.actions_on(FIP).count(), 1);
    assert_eq!(
        typed.api_call_count("POST /v2/floating_ips/{ip}/actions", "201"),
        1
    );
}

#[tokio::test]
async fn reserved_ips_family() {
    let s = sim(50).await;
    let response = s.assign("reserved_ips", OTHER_FIP, LOCAL_DROPLET).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["action"]["resource_type"], "reserved_ip");
    let id = body["action"]["id"].as_u64().unwrap();
    s.wait_completed(id).await;

    let ip = s.get_json(&format!("/v2/reserved_ips/{OTHER_FIP}")).await;
    assert_eq!(ip["reserved_ip"]["droplet"]["id"], LOCAL_DROPLET);
    assert!(ip.get("floating_ip").is_none());
    let same = s.get_json(&format!("/v2/floating_ips/{OTHER_FIP}")).await;
    assert_eq!(same["floating_ip"]["droplet"]["id"], LOCAL_DROPLET);

    for (path, resource_type) in [
        (
            format!("/v2/reserved_ips/{OTHER_FIP}/actions/{id}"),
            "reserved_ip",
        ),
        (
            format!("/v2/floating_ips/{OTHER_FIP}/actions/{id}"),
            "floating_ip",
        ),
        (format!("/v2/actions/{id}"), "reserved_ip"),
    ] {
        let action = s.get_json(&path).await;
        assert_eq!(action["action"]["id"], id, "{path}");
        assert_eq!(action["action"]["status"], "completed", "{path}");
        assert_eq!(action["action"]["resource_type"], resource_type, "{path}");
    }
    // The action belongs to OTHER_FIP, not FIP.
    let wrong_ip = s.get(&format!("/v2/reserved_ips/{FIP}/actions/{id}")).await;
    assert_error(wrong_ip, 404, "not_found").await;

    let list = s.get_json("/v2/reserved_ips").await;
    assert_eq!(list["reserved_ips"].as_array().unwrap().len(), 2);
    assert_eq!(list["meta"]["total"], 2);
    assert_eq!(s.state().await["actions"][0]["family"], "reserved_ip");
}

#[tokio::test]
async fn concurrent_assign_is_refused() {
    let s = sim(300).await;
    // Two at once: exactly one wins.
    let (a, b) = tokio::join!(
        s.assign("floating_ips", FIP, LOCAL_DROPLET),
        s.assign("reserved_ips", FIP, LOCAL_DROPLET)
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 422]);
    let (winner, loser) = if a.status() == StatusCode::CREATED {
        (a, b)
    } else {
        (b, a)
    };
    let message = assert_error(loser, 422, "unprocessable_entity").await;
    assert!(
        message.ends_with("IP already has a pending event."),
        "{message}"
    );
    let id = winner.json::<Value>().await.unwrap()["action"]["id"]
        .as_u64()
        .unwrap();

    // Still in progress: refused again, and unassign too.
    let again = s.assign("floating_ips", FIP, REMOTE_DROPLET).await;
    let message = assert_error(again, 422, "unprocessable_entity").await;
    assert_eq!(message, "Floating IP already has a pending event.");
    let unassign = s.unassign(FIP).await;
    assert_error(unassign, 422, "unprocessable_entity").await;
    // Another IP is independent.
    assert_eq!(
        s.assign("floating_ips", OTHER_FIP, REMOTE_DROPLET)
            .await
            .status(),
        StatusCode::CREATED
    );

    s.wait_completed(id).await;
    assert_eq!(s.sim.holder(FIP), Some(LOCAL_DROPLET));
    // Free again once completed.
    assert_eq!(
        s.assign("floating_ips", FIP, REMOTE_DROPLET).await.status(),
        StatusCode::CREATED
    );
    let state = s.sim.state();
    assert_eq!(state.actions_on(FIP).count(), 2);
    assert_eq!(
        state.api_call_count("POST /v2/floating_ips/{ip}/actions", "422")
            + state.api_call_count("POST /v2/reserved_ips/{ip}/actions", "422"),
        3
    );
}

#[tokio::test]
async fn unassign_lifecycle() {
    let s = sim(50).await;
    let response = s.unassign(FIP).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let action = response.json::<Value>().await.unwrap()["action"].clone();
    assert_eq!(action["type"], "unassign_ip");
    s.wait_completed(action["id"].as_u64().unwrap()).await;
    let ip = s.get_json(&format!("/v2/floating_ips/{FIP}")).await;
    assert_eq!(ip["floating_ip"]["droplet"], Value::Null);
    assert_eq!(s.state().await["actions"][0]["droplet_id"], Value::Null);
}

#[tokio::test]
async fn metadata_by_source_address() {
    let s = sim(50).await;
    assert_eq!(
        s.metadata("/metadata/v1/id").await,
        (StatusCode::OK, "1".into())
    );
    assert_eq!(
        s.metadata("/metadata/v1/hostname").await,
        (StatusCode::OK, "droplet-1".into())
    );
    assert_eq!(
        s.metadata("/metadata/v1/region").await,
        (StatusCode::OK, "nyc3".into())
    );
    s.assert_fip_metadata(None).await;

    let id = s
        .assign("floating_ips", FIP, LOCAL_DROPLET)
        .await
        .json::<Value>()
        .await
        .unwrap()["action"]["id"]
        .as_u64()
        .unwrap();
    // Not active until the action completes.
    assert_eq!(
        s.metadata("/metadata/v1/floating_ip/ipv4/active").await.1,
        "false"
    );
    s.wait_completed(id).await;
    s.assert_fip_metadata(Some(FIP)).await;
    let all: Value = serde_json::from_str(&s.metadata("/metadata/v1.json").await.1).unwrap();
    assert_eq!(all["droplet_id"], 1);
    assert_eq!(all["floating_ip"]["ipv4"]["ip_address"], FIP.to_string());

    // A caller whose address is no droplet's.
    let stranger = Client::builder()
        .no_proxy()
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    for path in ["/metadata/v1/id", "/metadata/v1/floating_ip/ipv4/active"] {
        let (status, _) = metadata_from(&stranger, &s.sim, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(
        s.metadata("/metadata/v1/nope").await.0,
        StatusCode::NOT_FOUND
    );

    let state = s.state().await;
    assert_eq!(state["metadata_calls"]["GET /metadata/v1/id"]["200"], 1);
    assert_eq!(state["metadata_calls"]["GET /metadata/v1/id"]["404"], 1);
    assert_eq!(state["metadata_calls"]["GET other"]["404"], 1);
}

#[tokio::test]
async fn fault_5xx() {
    let s = sim(50).await;
    let faults = s.sim_post("/_sim/faults", json!({"fail_5xx": 3})).await;
    assert_eq!(faults["fail_5xx"], 3);
    let path = format!("/v2/floating_ips/{FIP}");
    assert_error(s.get(&path).await, 500, "server_error").await;
    // /_sim/ calls neither consume faults nor count.
    assert_eq!(s.state().await["faults"]["fail_5xx"], 2);
    assert_error(s.get(&path).await, 503, "service_unavailable").await;
    // A failed POST creates no action.
    let failed = s.assign("floating_ips", FIP, LOCAL_DROPLET).await;
    assert_error(failed, 500, "server_error").await;
    assert_eq!(s.get(&path).await.status(), StatusCode::OK);
    let state = s.state().await;
    assert!(state["actions"].as_array().unwrap().is_empty());
    assert_eq!(state["api_calls"]["GET /v2/floating_ips/{ip}"]["500"], 1);
    assert_eq!(state["api_calls"]["GET /v2/floating_ips/{ip}"]["503"], 1);
    assert_eq!(state["api_calls"]["GET /v2/floating_ips/{ip}"]["200"], 1);
    assert_eq!(
        state["api_calls"]["POST /v2/floating_ips/{ip}/actions"]["500"],
        1
    );

    // A fixed status, and faults come before auth.
    s.sim_post(
        "/_sim/faults",
        json!({"fail_5xx": 1, "fail_5xx_status": 502}),
    )
    .await;
    let anonymous = s.client.get(s.url(&path)).send().await.unwrap();
    assert_error(anonymous, 502, "bad_gateway").await;
}

#[tokio::test]
async fn fault_rate_limit() {
    let s = sim(50).await;
    s.sim_post(
        "/_sim/faults",
        json!({"rate_limit": 2, "retry_after_secs": 7}),
    )
    .await;
    let path = format!("/v2/floating_ips/{FIP}");
    for _ in 0..2 {
        let limited = s.get(&path).await;
        assert_eq!(header(&limited, "retry-after"), "7");
        assert_eq!(header_u64(&limited, "ratelimit-remaining"), 0);
        let message = assert_error(limited, 429, "too_many_requests").await;
        assert_eq!(message, "API Rate limit exceeded.");
    }
    let ok = s.get(&path).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(ok.headers().get("retry-after").is_none());
    assert!(header_u64(&ok, "ratelimit-remaining") > 0);
    assert_eq!(s.calls("GET /v2/floating_ips/{ip}", "429"), 2);
}

#[tokio::test]
async fn fault_drop() {
    let s = sim(50).await;
    s.sim_post("/_sim/faults", json!({"drop": 2})).await;
    let path = format!("/v2/floating_ips/{FIP}");
    let error = s
        .client
        .get(s.url(&path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect_err("the connection closes without a response");
    assert!(!error.is_timeout(), "{error:?}");
    // A dropped POST creates no action.
    let error = s
        .client
        .post(s.url(&format!("{path}/actions")))
        .bearer_auth(TOKEN)
        .json(&json!({"type": "assign", "droplet_id": 1}))
        .send()
        .await;
    assert!(error.is_err());
    assert_eq!(s.get(&path).await.status(), StatusCode::OK);
    let state = s.sim.state();
    assert!(state.actions.is_empty());
    assert_eq!(
        state.api_call_count("GET /v2/floating_ips/{ip}", "dropped"),
        1
    );
    assert_eq!(
        state.api_call_count("POST /v2/floating_ips/{ip}/actions", "dropped"),
        1
    );
    assert_eq!(state.faults.drop, 0);
}

#[tokio::test]
async fn fault_delay_and_reset() {
    let s = sim(50).await;
    s.sim_post("/_sim/faults", json!({"delay_ms": 300})).await;
    let path = format!("/v2/floating_ips/{FIP}");
    let started = Instant::now();
    assert_eq!(s.get(&path).await.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // /_sim/ is never delayed.
    let started = Instant::now();
    s.state().await;
    assert!(started.elapsed() < Duration::from_millis(300));
    let faults = s.sim_post("/_sim/reset_faults", json!({})).await;
    assert_eq!(faults["delay_ms"], 0);
    let started = Instant::now();
    assert_eq!(s.get(&path).await.status(), StatusCode::OK);
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn fault_metadata() {
    let s = sim(50).await;
    s.sim_post("/_sim/faults", json!({"metadata_down": true}))
        .await;
    assert_eq!(
        s.metadata("/metadata/v1/id").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // The API is unaffected.
    assert_eq!(
        s.get(&format!("/v2/floating_ips/{FIP}")).await.status(),
        StatusCode::OK
    );
    s.sim_post(
        "/_sim/faults",
        json!({"metadata_down": false, "metadata_drop": true}),
    )
    .await;
    let unreachable = s
        .client
        .get(format!("{}/metadata/v1/id", s.sim.metadata_url()))
        .send()
        .await;
    assert!(unreachable.is_err());
    s.sim_post("/_sim/reset_faults", json!({})).await;
    assert_eq!(
        s.metadata("/metadata/v1/id").await,
        (StatusCode::OK, "1".into())
    );
    let state = s.state().await;
    assert_eq!(state["metadata_calls"]["GET /metadata/v1/id"]["503"], 1);
    assert_eq!(state["metadata_calls"]["GET /metadata/v1/id"]["dropped"], 1);
}

/// Fault settings the simulator refuses, leaving the faults as they were.
#[rstest]
#[case::misspelled_key(json!({"fail5xx": 1}))]
#[case::negative_count(json!({"fail_5xx": -1}))]
#[case::status_not_5xx(json!({"fail_5xx_status": 404}))]
#[tokio::test]
async fn fault_endpoint_rejects_bad_input(#[case] body: Value) {
    let s = sim(50).await;
    let response = s
        .client
        .post(s.url("/_sim/faults"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422, "{body}");
    let current: Value = s
        .client
        .get(s.url("/_sim/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(current["fail_5xx"], 0);
    assert_eq!(current["retry_after_secs"], 1);
}

/// The binary: flags, the address line on stdout, the state file, and a
/// clean exit on SIGTERM.
#[test]
fn binary_serves_and_exits_on_sigterm() {
    let state_file =
        std::env::temp_dir().join(format!("lbha-dosim-test-{}.json", std::process::id()));
    let mut sim = lbha_dosim_binary(&[
        "--api-listen",
        "127.0.0.1:0",
        "--metadata-listen",
        "127.0.0.1:0",
        "--droplet",
        "5=127.0.0.1",
        "--droplet",
        "6=192.0.2.6",
        "--floating-ip",
        "203.0.113.10=6",
        "--floating-ip",
        "203.0.113.20",
        "--action-delay-ms",
        "20",
        "--state-file",
        state_file.to_str().unwrap(),
    ]);
    let (api, metadata) = (sim.api.clone(), sim.metadata.clone());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = client();
        let response = client
            .post(format!("http://{api}/v2/floating_ips/203.0.113.10/actions"))
            .bearer_auth(TOKEN)
            .json(&json!({"type": "assign", "droplet_id": 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let active = client
                .get(format!(
                    "http://{metadata}/metadata/v1/floating_ip/ipv4/active"
                ))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if active == "true" {
                break;
            }
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let written: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    assert_eq!(written["floating_ips"][0]["holder"], 5);
    assert_eq!(written["actions"][0]["status"], "completed");

    let status = sim.stop();
    let _ = std::fs::remove_file(&state_file);
    assert!(status.success(), "{status}");

    // Bad flags fail fast.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_lbha-dosim"))
        .args(["--token", TOKEN, "--droplet", "nonsense"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!bad.success());
}

#[tokio::test]
async fn scripted_answers_in_order() {
    let s = sim(50).await;
    let faults = s
        .sim_post(
            "/_sim/faults",
            json!({"script": [
                {"kind": "error", "status": 429, "id": "too_many_requests", "message": "slow down",
                 "headers": {"ratelimit-remaining": "0", "ratelimit-reset": "123"}},
                {"kind": "raw", "status": 200, "body": "<html>portal</html>",
                 "headers": {"content-type": "text/html"}},
                {"kind": "drop"},
                {"kind": "delay", "ms": 300},
                {"kind": "error", "status": 422, "id": "unprocessable_entity",
                 "message": "Floating IP already has a pending event."}
            ]}),
        )
        .await;
    assert_eq!(faults["script"].as_array().unwrap().len(), 5);
    let path = format!("/v2/floating_ips/{FIP}");

    let limited = s.get(&path).await;
    assert!(limited.headers().get("retry-after").is_none());
    assert_eq!(header(&limited, "ratelimit-remaining"), "0");
    assert_eq!(header(&limited, "ratelimit-reset"), "123");
    assert_eq!(header(&limited, "ratelimit-limit"), "5000");
    assert_eq!(limited.status().as_u16(), 429);
    let body: Value = limited.json().await.unwrap();
    assert_eq!(
        body,
        json!({"id": "too_many_requests", "message": "slow down"})
    );

    let raw = s.get(&path).await;
    assert_eq!(raw.status(), StatusCode::OK);
    assert_eq!(header(&raw, "content-type"), "text/html");
    assert_eq!(raw.text().await.unwrap(), "<html>portal</html>");

    let dropped = s.client.get(s.url(&path)).bearer_auth(TOKEN).send().await;
    assert!(dropped.is_err());

    let started = Instant::now();
    let late = s.get(&path).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let body: Value = late.json().await.unwrap();
    assert_eq!(body["floating_ip"]["droplet"]["id"], REMOTE_DROPLET);

    // Scripted answers come before auth and create no action.
    let refused = s
        .client
        .post(s.url(&format!("{path}/actions")))
        .json(&json!({"type": "assign", "droplet_id": 1}))
        .send()
        .await
        .unwrap();
    let message = assert_error(refused, 422, "unprocessable_entity").await;
    assert_eq!(message, "Floating IP already has a pending event.");
    assert_eq!(s.get(&path).await.status(), StatusCode::OK);

    let state = s.sim.state();
    assert!(state.actions.is_empty());
    assert!(state.faults.script.is_empty());
    let holder_calls = &state.api_calls["GET /v2/floating_ips/{ip}"];
    assert_eq!(holder_calls["429"], 1);
    assert_eq!(holder_calls["dropped"], 1);
    assert_eq!(holder_calls["200"], 3);

    // A bad script is refused whole.
    let bad = json!({"script": [
        {"kind": "drop"},
        {"kind": "error", "status": 99, "id": "x", "message": "y"}
    ]});
    let response = s.sim_post_response("/_sim/faults", &bad).await;
    assert_eq!(response.status().as_u16(), 422);
    assert!(s.sim.state().faults.script.is_empty());
}

#[tokio::test]
async fn fault_5xx_message() {
    let s = sim(50).await;
    s.sim_post(
        "/_sim/faults",
        json!({"fail_5xx": 2, "fail_5xx_status": 502, "fail_5xx_message": "upstream down"}),
    )
    .await;
    let path = format!("/v2/floating_ips/{FIP}");
    for _ in 0..2 {
        let message = assert_error(s.get(&path).await, 502, "bad_gateway").await;
        assert_eq!(message, "upstream down");
    }
    assert_eq!(s.get(&path).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn actions_end_on_a_chosen_poll() {
    // A long delay: only polls end these actions.
    let s = sim(60_000).await;
    s.sim_post("/_sim/faults", json!({"complete_after_polls": 0}))
        .await;
    let response = s.assign("floating_ips", OTHER_FIP, LOCAL_DROPLET).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["action"]["status"], "completed",
        "ended in the POST answer"
    );
    assert!(body["action"]["completed_at"].is_string());
    assert_eq!(s.sim.holder(OTHER_FIP), Some(LOCAL_DROPLET));

    s.sim_post(
        "/_sim/faults",
        json!({"complete_after_polls": 2, "pending_status": "queued"}),
    )
    .await;
    let (action, id) = s.assign_action("floating_ips", FIP, LOCAL_DROPLET).await;
    assert_eq!(action["status"], "queued");
    assert_eq!(
        s.action_status(&format!("/v2/floating_ips/{FIP}/actions/{id}"))
            .await,
        "queued"
    );
    // The real status stays in the state.
    assert_eq!(
        s.sim.state().actions[1].status,
        lbha_dosim::ActionStatus::InProgress
    );
    assert_eq!(s.sim.holder(FIP), Some(REMOTE_DROPLET));
    assert_eq!(
        s.action_status(&format!("/v2/actions/{id}")).await,
        "completed"
    );
    assert_eq!(s.sim.holder(FIP), Some(LOCAL_DROPLET));
    assert_eq!(
        s.action_status(&format!("/v2/actions/{id}")).await,
        "completed"
    );

    s.sim_post(
        "/_sim/faults",
        json!({"complete_after_polls": 1, "action_errors": 1}),
    )
    .await;
    let (_, id) = s.assign_action("reserved_ips", FIP, REMOTE_DROPLET).await;
    assert_eq!(
        s.action_status(&format!("/v2/reserved_ips/{FIP}/actions/{id}"))
            .await,
        "errored"
    );
    assert_eq!(
        s.sim.holder(FIP),
        Some(LOCAL_DROPLET),
        "an errored action moves nothing"
    );
    assert_eq!(s.state().await["faults"]["action_errors"], 0);
    let ip = s.get_json(&format!("/v2/floating_ips/{FIP}")).await;
    assert_eq!(ip["floating_ip"]["locked"], false);
}

#[tokio::test]
async fn request_log() {
    let s = sim(50).await;
    s.assign("floating_ips", FIP, LOCAL_DROPLET).await;
    s.get(&format!("/v2/floating_ips/{FIP}?page=1")).await;
    s.state().await;
    s.metadata("/metadata/v1/id").await;
    s.client
        .get(s.url("/v2/floating_ips"))
        .send()
        .await
        .unwrap();

    let requests = s.sim.requests();
    assert_eq!(requests.len(), 3, "API calls only: {requests:?}");
    let post = &requests[0];
    assert_eq!(post.seq, 0);
    assert_eq!(post.method, "POST");
    assert_eq!(post.path, format!("/v2/floating_ips/{FIP}/actions"));
    assert_eq!(post.endpoint, "POST /v2/floating_ips/{ip}/actions");
    assert_eq!(
        post.header("authorization"),
        Some(&*format!("Bearer {TOKEN}"))
    );
    assert_eq!(post.header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_str(&post.body).unwrap();
    assert_eq!(body, json!({"type": "assign", "droplet_id": LOCAL_DROPLET}));
    assert_eq!(post.status.as_deref(), Some("201"));
    assert_eq!(post.caller.ip(), IpAddr::from([127, 0, 0, 1]));
    assert!(post.finished_us.unwrap() >= post.received_us);
    assert_eq!(requests[1].path, format!("/v2/floating_ips/{FIP}?page=1"));
    assert!(requests[1].received_us >= post.finished_us.unwrap());
    assert_eq!(requests[2].header("authorization"), None);
    assert_eq!(requests[2].status.as_deref(), Some("401"));
    assert_eq!(s.sim.requests_to("GET", "/v2/floating_ips").len(), 2);
    assert_eq!(s.sim.requests_to("POST", "/v2/").len(), 1);
    // Times are on the simulator's clock, which started before any request.
    assert!(s.sim.started_at() + Duration::from_micros(post.received_us) <= Instant::now());

    // Over HTTP too.
    let over_http: Vec<lbha_dosim::RequestRecord> =
        serde_json::from_value(s.sim_get("/_sim/requests").await).unwrap();
    assert_eq!(over_http, requests);

    // Overlap: two slow calls at once, then one after the other.
    s.sim_post("/_sim/faults", json!({"delay_ms": 200})).await;
    let path = format!("/v2/floating_ips/{FIP}");
    tokio::join!(s.get(&path), s.get(&path));
    let together = s.sim.requests();
    assert_eq!(lbha_dosim::max_concurrent(&together[3..]), 2);
    s.get(&path).await;
    s.get(&path).await;
    let apart = s.sim.requests();
    assert_eq!(lbha_dosim::max_concurrent(&apart[5..]), 1);

    // A caller that gives up long before the answer still ends its record
    // (its handling is dropped with the connection).
    s.sim_post(
        "/_sim/faults",
        json!({"delay_ms": 0, "script": [{"kind": "delay", "ms": 60_000}]}),
    )
    .await;
    let impatient = Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    impatient
        .get(s.url(&path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap_err();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let last = s.sim.requests().pop().unwrap();
    assert!(last.finished_us.is_some(), "{last:?}");
    assert_eq!(last.status, None, "never answered");
}

#[tokio::test]
async fn holder_set_directly() {
    let s = sim(50).await;
    let answer = s
        .sim_post("/_sim/holder", json!({"ip": FIP, "holder": LOCAL_DROPLET}))
        .await;
    assert_eq!(answer, json!({"ip": FIP, "holder": LOCAL_DROPLET}));
    assert_eq!(s.sim.holder(FIP), Some(LOCAL_DROPLET));
    assert_eq!(
        s.metadata("/metadata/v1/floating_ip/ipv4/active").await.1,
        "true"
    );
    let ip = s.get_json(&format!("/v2/floating_ips/{FIP}")).await;
    assert_eq!(ip["floating_ip"]["droplet"]["id"], LOCAL_DROPLET);
    assert!(s.sim.state().actions.is_empty(), "no action involved");

    s.sim.set_holder(FIP, None).await.unwrap();
    assert_eq!(s.sim.holder(FIP), None);
    assert!(s.sim.set_holder(FIP, Some(99)).await.is_err());
    assert!(
        s.sim
            .set_holder(Ipv4Addr::new(198, 51, 100, 1), None)
            .await
            .is_err()
    );
    for body in [
        json!({"ip": FIP, "holder": 99}),
        json!({"ip": "198.51.100.1", "holder": null}),
        json!({"ip": FIP, "droplet": 1}),
    ] {
        let response = s.sim_post_response("/_sim/holder", &body).await;
        assert_eq!(response.status().as_u16(), 422, "{body}");
    }
    assert_eq!(s.sim.holder(FIP), None);
}

#[tokio::test]
async fn fault_metadata_delay_and_body() {
    let s = sim(50).await;
    s.sim_post("/_sim/faults", json!({"metadata_delay_ms": 300}))
        .await;
    let started = Instant::now();
    assert_eq!(
        s.metadata("/metadata/v1/id").await,
        (StatusCode::OK, "1".into())
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    s.sim_post(
        "/_sim/faults",
        json!({"metadata_delay_ms": 0, "metadata_body": "<html>captive portal</html>"}),
    )
    .await;
    for path in ["/metadata/v1/id", "/metadata/v1/floating_ip/ipv4/active"] {
        assert_eq!(
            s.metadata(path).await,
            (StatusCode::OK, "<html>captive portal</html>".into()),
            "{path}"
        );
    }
    s.sim_post("/_sim/faults", json!({"metadata_down": true}))
        .await;
    assert_eq!(
        s.metadata("/metadata/v1/id").await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "down wins over the body"
    );
}

/// A token with custom scopes: 403 with DO's error body from an endpoint
/// whose scope it lacks (and nothing happens), the droplet left out of
/// the IP objects without `droplet:read`.
#[tokio::test]
async fn token_scopes() {
    let s = sim(50).await;
    let fip = format!("/v2/floating_ips/{FIP}");
    let set_scopes = |scopes: Value| s.sim_post("/_sim/faults", json!({"token_scopes": scopes}));
    let faults = set_scopes(json!(["reserved_ip:read"])).await;
    assert_eq!(faults["token_scopes"], json!(["reserved_ip:read"]));

    let ip = s.get_json(&fip).await;
    assert_eq!(ip["floating_ip"]["ip"], FIP.to_string());
    assert!(
        ip["floating_ip"].get("droplet").is_none(),
        "hidden without droplet:read: {ip}"
    );
    let list = s.get_json("/v2/reserved_ips").await;
    assert!(list["reserved_ips"][0].get("droplet").is_none(), "{list}");

    let refused = s.assign("floating_ips", FIP, LOCAL_DROPLET).await;
    assert_eq!(
        assert_error(refused, 403, "forbidden").await,
        "You do not have permission to perform this action."
    );
    assert!(s.sim.state().actions.is_empty());
    assert_eq!(s.sim.holder(FIP), Some(REMOTE_DROPLET));

    set_scopes(json!([
        "reserved_ip:read",
        "reserved_ip:update",
        "droplet:read"
    ]))
    .await;
    let ip = s.get_json(&fip).await;
    assert_eq!(ip["floating_ip"]["droplet"]["id"], REMOTE_DROPLET);
    let (_, id) = s.assign_action("floating_ips", FIP, LOCAL_DROPLET).await;
    assert_eq!(
        s.get(&format!("{fip}/actions/{id}")).await.status(),
        StatusCode::OK
    );
    // The general actions endpoint wants actions:read.
    assert_error(s.get(&format!("/v2/actions/{id}")).await, 403, "forbidden").await;
    // Unassigned and hidden look alike: no droplet key at all.
    set_scopes(json!(["reserved_ip:read"])).await;
    let unassigned = s.get_json(&format!("/v2/floating_ips/{OTHER_FIP}")).await;
    assert!(unassigned["floating_ip"].get("droplet").is_none());

    set_scopes(Value::Null).await;
    let unassigned = s.get_json(&format!("/v2/floating_ips/{OTHER_FIP}")).await;
    assert_eq!(unassigned["floating_ip"]["droplet"], Value::Null);
    assert_eq!(
        s.get(&format!("/v2/actions/{id}")).await.status(),
        StatusCode::OK
    );
    assert_eq!(s.calls("POST /v2/floating_ips/{ip}/actions", "403"), 1);
}

/// An assign to the droplet that already holds the IP: a no-op action by
/// default, a 422 with `same_holder_assign = reject`.
#[tokio::test]
async fn same_holder_assign() {
    let s = sim(50).await;
    let (action, id) = s.assign_action("floating_ips", FIP, REMOTE_DROPLET).await;
    assert_eq!(action["status"], "in-progress");
    assert_eq!(s.wait_completed(id).await["status"], "completed");
    assert_eq!(s.sim.holder(FIP), Some(REMOTE_DROPLET));

    s.sim_post("/_sim/faults", json!({"same_holder_assign": "reject"}))
        .await;
    let refused = s.assign("reserved_ips", FIP, REMOTE_DROPLET).await;
    assert_eq!(
        assert_error(refused, 422, "unprocessable_entity").await,
        "Reserved IP is already assigned to Droplet 2."
    );
    assert_eq!(s.sim.state().actions.len(), 1);
    let moved = s.assign("floating_ips", FIP, LOCAL_DROPLET).await;
    assert_eq!(moved.status(), StatusCode::CREATED);
}

/// Metadata shows a new holder `metadata_lag_ms` after the API does.
#[tokio::test]
async fn metadata_lags_the_api() {
    let s = sim(0).await;
    s.sim_post("/_sim/faults", json!({"metadata_lag_ms": 600}))
        .await;
    // The action completes after it was asked for.
    let asked = Instant::now();
    let (_, id) = s.assign_action("floating_ips", FIP, LOCAL_DROPLET).await;
    s.wait_completed(id).await;
    let ip = s.get_json(&format!("/v2/floating_ips/{FIP}")).await;
    assert_eq!(ip["floating_ip"]["droplet"]["id"], LOCAL_DROPLET);
    s.assert_fip_metadata(None).await;
    assert!(
        asked.elapsed() < Duration::from_millis(600),
        "too slow to tell"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.metadata("/metadata/v1/floating_ip/ipv4/active").await.1 != "true" {
        assert!(Instant::now() < deadline, "metadata never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(asked.elapsed() >= Duration::from_millis(600));
    s.assert_fip_metadata(Some(FIP)).await;
}

/// DO's sliding-window limits: past the per-minute burst limit a 429 with
/// `Retry-After`; past the hourly one a 429 whose `ratelimit-reset` says
/// when the oldest call stops counting. Refused calls do not count.
#[tokio::test]
async fn rate_limits() {
    let s = sim(50).await;
    let path = format!("/v2/floating_ips/{FIP}");
    s.sim_post("/_sim/faults", json!({"rate_limit_per_minute": 3}))
        .await;
    for left in [4999, 4998] {
        let ok = s.get(&path).await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(header_u64(&ok, "ratelimit-remaining"), left);
    }
    let last = s.get(&path).await;
    assert_eq!(last.status(), StatusCode::OK);
    assert_eq!(header_u64(&last, "ratelimit-remaining"), 0, "burst used up");
    for _ in 0..2 {
        let limited = s.get(&path).await;
        let retry_after = header_u64(&limited, "retry-after");
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        assert_eq!(header_u64(&limited, "ratelimit-remaining"), 0);
        let message = assert_error(limited, 429, "too_many_requests").await;
        assert_eq!(message, "API Rate limit exceeded.");
    }
    // Nothing happens behind a refusal.
    let refused = s.assign("floating_ips", FIP, LOCAL_DROPLET).await;
    assert_eq!(refused.status().as_u16(), 429);
    assert!(s.sim.state().actions.is_empty());

    s.sim_post(
        "/_sim/faults",
        json!({"rate_limit_per_minute": 0, "rate_limit_per_hour": 4}),
    )
    .await;
    assert_eq!(s.get(&path).await.status(), StatusCode::OK);
    let limited = s.get(&path).await;
    assert!(limited.headers().get("retry-after").is_none());
    assert_eq!(header_u64(&limited, "ratelimit-limit"), 4);
    assert_eq!(header_u64(&limited, "ratelimit-remaining"), 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let reset = header_u64(&limited, "ratelimit-reset");
    assert!((now + 3590..=now + 3601).contains(&reset), "{reset} {now}");
    assert_eq!(limited.status().as_u16(), 429);
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["id"], "too_many_requests");
    assert_eq!(s.calls("GET /v2/floating_ips/{ip}", "429"), 3);
}

/// Every API answer carries an `x-request-id` (the one the request log
/// shows), and a scripted error can carry DO's `request_id` in its body.
#[tokio::test]
async fn request_ids() {
    let s = sim(50).await;
    let path = format!("/v2/floating_ips/{FIP}");
    let ok = s.get(&path).await;
    let refused = s.get("/v2/floating_ips/198.51.100.1").await;
    let logged = s.sim.requests();
    assert_eq!(header(&ok, "x-request-id"), logged[0].request_id());
    assert_eq!(header(&refused, "x-request-id"), logged[1].request_id());
    assert_ne!(logged[0].request_id(), logged[1].request_id());

    s.sim_post(
        "/_sim/faults",
        json!({"script": [{"kind": "error", "status": 422, "id": "unprocessable_entity",
                           "message": "bad", "request_id": "4851a473-1621-42ea-b2f9-5071c0ea8414"}]}),
    )
    .await;
    let scripted = s.get(&path).await;
    assert!(!header(&scripted, "x-request-id").is_empty());
    let body: Value = scripted.json().await.unwrap();
    assert_eq!(body["request_id"], "4851a473-1621-42ea-b2f9-5071c0ea8414");
}

/// The binary's starting faults: `--faults` and the named flags over it,
/// kept across `/_sim/reset_faults`; bad ones fail at start.
#[test]
fn binary_takes_starting_faults() {
    use std::process::{Command, Stdio};

    let mut sim = lbha_dosim_binary(&[
        "--droplet",
        "5=127.0.0.1",
        "--droplet",
        "6=192.0.2.6",
        "--floating-ip",
        "203.0.113.10=6",
        "--faults",
        r#"{"action_errors": 2, "metadata_lag_ms": 100}"#,
        "--token-scopes",
        "reserved_ip:read,droplet:read",
        "--same-holder-assign",
        "reject",
        "--metadata-lag-ms",
        "1500",
        "--rate-limit-per-hour",
        "1000",
        "--rate-limit-per-minute",
        "7",
    ]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = client();
        let api = &sim.api;
        for path in ["/_sim/faults", "/_sim/reset_faults"] {
            let request = if path.ends_with("reset_faults") {
                client.post(format!("http://{api}{path}"))
            } else {
                client.get(format!("http://{api}{path}"))
            };
            let faults: Value = request.send().await.unwrap().json().await.unwrap();
            assert_eq!(faults["action_errors"], 2, "{path}");
            assert_eq!(
                faults["token_scopes"],
                json!(["reserved_ip:read", "droplet:read"])
            );
            assert_eq!(faults["same_holder_assign"], "reject");
            assert_eq!(faults["metadata_lag_ms"], 1500, "the flag wins");
            assert_eq!(faults["rate_limit_per_hour"], 1000);
            assert_eq!(faults["rate_limit_per_minute"], 7);
        }
        let refused = client
            .post(format!("http://{api}/v2/floating_ips/203.0.113.10/actions"))
            .bearer_auth(TOKEN)
            .json(&json!({"type": "assign", "droplet_id": 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 403);
    });
    sim.stop();

    for bad in [
        ["--faults", r#"{"fail5xx": 1}"#],
        ["--token-scopes", "everything"],
        ["--same-holder-assign", "maybe"],
    ] {
        let status = Command::new(env!("CARGO_BIN_EXE_lbha-dosim"))
            .args(["--token", TOKEN])
            .args(bad)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "{bad:?}");
    }
}

/// A running `lbha-dosim` binary and its addresses.
struct SimBinary {
    child: std::process::Child,
    api: String,
    metadata: String,
}

impl SimBinary {
    /// SIGTERM, and its exit status (within 5 s).
    fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: plain kill(2) of our own child.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) },
            0
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "lbha-dosim did not exit on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SimBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary with the test token and `args`; waits for the line
/// with its addresses.
fn lbha_dosim_binary(args: &[&str]) -> SimBinary {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_lbha-dosim"))
        .args(["--token", TOKEN])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addresses: Value = serde_json::from_str(&line).unwrap();
    let address = |listener: &str| addresses[listener].as_str().unwrap().to_owned();
    SimBinary {
        api: address("api"),
        metadata: address("metadata"),
        child,
    }
}

/// Reserved IPv6 in DO's spec shapes (specification/resources/reserved_ipv6
/// of digitalocean/openapi): `reserved_ipv6` objects with ip, region_slug,
/// reserved_at and droplet (no `locked`), actions at `.../actions` answered
/// 201 with `resource_type` `reserved_ipv6` and polled at
/// `/v2/actions/{id}` only; each family serves its own addresses.
#[tokio::test]
async fn reserved_ipv6_has_its_own_collection_and_shapes() {
    let v6: std::net::Ipv6Addr = "2001:db8:10::10".parse().unwrap();
    let sim = start(
        SimConfig::new(TOKEN)
            .droplet_dual(
                LOCAL_DROPLET,
                "127.0.0.1".parse().unwrap(),
                "2001:db8::11".parse().unwrap(),
            )
            .droplet(REMOTE_DROPLET, "192.0.2.12".parse().unwrap())
            .floating_ip(FIP, Some(REMOTE_DROPLET))
            .floating_ip(v6, Some(REMOTE_DROPLET))
            .action_delay(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let sim = Sim {
        sim,
        client: client(),
    };
    let shown = sim.get_json(&format!("/v2/reserved_ipv6/{v6}")).await;
    let object = &shown["reserved_ipv6"];
    assert_eq!(object["ip"], v6.to_string());
    assert_eq!(object["region_slug"], "nyc3");
    assert!(object["reserved_at"].is_string());
    assert!(object.get("locked").is_none(), "{shown}");
    assert_eq!(object["droplet"]["id"], REMOTE_DROPLET);
    let list = sim.get_json("/v2/reserved_ipv6").await;
    assert_eq!(
        list["reserved_ipv6s"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    // Each collection serves its own family only.
    assert_eq!(
        sim.get(&format!("/v2/reserved_ipv6/{FIP}")).await.status(),
        404
    );
    assert_eq!(
        sim.get(&format!("/v2/reserved_ips/{v6}")).await.status(),
        404
    );

    let created = sim
        .post(
            &format!("/v2/reserved_ipv6/{v6}/actions"),
            json!({"type": "assign", "droplet_id": LOCAL_DROPLET}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["action"]["resource_type"], "reserved_ipv6");
    assert_eq!(created["action"]["status"], "in-progress");
    let id = created["action"]["id"].as_u64().unwrap();
    // A second action while one is pending: DO's 422.
    let pending = sim
        .post(
            &format!("/v2/reserved_ipv6/{v6}/actions"),
            json!({"type": "assign", "droplet_id": LOCAL_DROPLET}),
        )
        .await;
    let message = assert_error(pending, 422, "unprocessable_entity").await;
    assert!(
        message.contains("Reserved IPv6 already has a pending event"),
        "{message}"
    );
    // No per-IP action URL for IPv6; the global one answers.
    assert_eq!(
        sim.get(&format!("/v2/reserved_ipv6/{v6}/actions/{id}"))
            .await
            .status(),
        404
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let action = sim.get_json(&format!("/v2/actions/{id}")).await;
        if action["action"]["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "{action}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sim.sim.holder(v6), Some(LOCAL_DROPLET));
    assert_eq!(sim.sim.holder(FIP), Some(REMOTE_DROPLET), "the IPv4 stays");
    let shown = sim.get_json(&format!("/v2/reserved_ipv6/{v6}")).await;
    assert_eq!(
        shown["reserved_ipv6"]["droplet"]["networks"]["v6"][0]["ip_address"],
        "2001:db8::11"
    );
    // Metadata shows the droplet's public IPv6.
    let (status, body) = metadata_from(
        &sim.client,
        &sim.sim,
        "/metadata/v1/interfaces/public/0/ipv6/address",
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "2001:db8::11"));
}
