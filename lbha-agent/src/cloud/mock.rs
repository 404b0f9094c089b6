//! A small in-process stand-in for the DigitalOcean API and the metadata
//! service, for the tests of this module. It speaks just enough HTTP/1.1
//! (one request per connection) and lets a test inject faults, change who
//! holds the IP, and count requests, including how many assigns overlap.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::Instant,
};

pub const TOKEN: &str = "dop_v1_7e57c0ffee5ecre7t0ken0000000000000000000000000000000000000";
pub const OUR_DROPLET: u64 = 3164444;
pub const OTHER_DROPLET: u64 = 3164555;

/// What the next API request gets instead of its normal answer.
#[derive(Clone, Debug)]
pub enum Fault {
    Status {
        code: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Read the request, then close without answering.
    Drop,
    /// Answer normally, but only after this long.
    Delay(Duration),
}

impl Fault {
    pub fn status(code: u16, id: &str, message: &str) -> Self {
        Fault::Status {
            code,
            headers: Vec::new(),
            body: serde_json::json!({ "id": id, "message": message }).to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub body: String,
    pub at: Instant,
}

#[derive(Debug)]
struct MockAction {
    id: u64,
    droplet: u64,
    polls: u32,
    done: bool,
}

#[derive(Debug)]
struct State {
    holder: Option<u64>,
    faults: VecDeque<Fault>,
    /// Applied to every API request when the queue is empty.
    sticky_fault: Option<Fault>,
    requests: Vec<Recorded>,
    actions: Vec<MockAction>,
    next_action: u64,
    polls_to_complete: u32,
    final_status: &'static str,
    pending_status: &'static str,
    post_delay: Duration,
    posts_now: u32,
    posts_max: u32,
    overlapping_assigns: u32,
    metadata_down: bool,
    metadata_body: Option<String>,
}

#[derive(Clone)]
pub struct MockDo {
    url: String,
    state: Arc<Mutex<State>>,
}

impl MockDo {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            holder: None,
            faults: VecDeque::new(),
            sticky_fault: None,
            requests: Vec::new(),
            actions: Vec::new(),
            next_action: 36804636,
            polls_to_complete: 1,
            final_status: "completed",
            pending_status: "in-progress",
            post_delay: Duration::ZERO,
            posts_now: 0,
            posts_max: 0,
            overlapping_assigns: 0,
            metadata_down: false,
            metadata_body: None,
        }));
        let mock = MockDo { url, state };
        let server = mock.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move { server.serve(conn).await });
            }
        });
        mock
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_holder(&self, holder: Option<u64>) {
        self.state().holder = holder;
    }
    pub fn holder(&self) -> Option<u64> {
        self.state().holder
    }
    pub fn push_fault(&self, fault: Fault) {
        self.state().faults.push_back(fault);
    }
    pub fn set_sticky_fault(&self, fault: Option<Fault>) {
        self.state().sticky_fault = fault;
    }
    pub fn set_polls_to_complete(&self, n: u32) {
        self.state().polls_to_complete = n;
    }
    pub fn set_final_status(&self, s: &'static str) {
        self.state().final_status = s;
    }
    pub fn set_pending_status(&self, s: &'static str) {
        self.state().pending_status = s;
    }
    pub fn set_post_delay(&self, d: Duration) {
        self.state().post_delay = d;
    }
    pub fn set_metadata_down(&self, down: bool) {
        self.state().metadata_down = down;
    }
    pub fn set_metadata_body(&self, body: Option<String>) {
        self.state().metadata_body = body;
    }
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }
    /// The POST requests, in order.
    pub fn posts(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect()
    }
    /// API requests (metadata excluded) with this method whose path starts
    /// with `prefix`.
    pub fn count(&self, method: &str, prefix: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.method == method && r.path.starts_with(prefix))
            .count()
    }
    pub fn assigns(&self) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/actions"))
            .count()
    }
    pub fn max_concurrent_posts(&self) -> u32 {
        self.state().posts_max
    }
    pub fn overlapping_assigns(&self) -> u32 {
        self.state().overlapping_assigns
    }

    async fn serve(&self, mut conn: TcpStream) {
        let Some((method, path, headers, body)) = read_request(&mut conn).await else {
            return;
        };
        if path.starts_with("/metadata/") {
            let (down, body_override, holder) = {
                let s = self.state();
                (s.metadata_down, s.metadata_body.clone(), s.holder)
            };
            if down {
                // A link-local address with nothing behind it: no answer.
                tokio::time::sleep(Duration::from_secs(5)).await;
                return;
            }
            let body = body_override.unwrap_or_else(|| match path.as_str() {
                "/metadata/v1/id" => OUR_DROPLET.to_string(),
                "/metadata/v1/floating_ip/ipv4/active" => (holder == Some(OUR_DROPLET)).to_string(),
                _ => String::new(),
            });
            let _ = respond(&mut conn, 200, &[], "text/plain", &body).await;
            return;
        }

        let fault = {
            let mut s = self.state();
            s.requests.push(Recorded {
                method: method.clone(),
                path: path.clone(),
                body: body.clone(),
                at: Instant::now(),
            });
            s.faults.pop_front().or_else(|| s.sticky_fault.clone())
        };
        match fault {
            Some(Fault::Drop) => return,
            Some(Fault::Status {
                code,
                headers,
                body,
            }) => {
                let _ = respond(&mut conn, code, &headers, "application/json", &body).await;
                return;
            }
            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
            None => {}
        }
        let authorized = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("authorization") && *v == format!("Bearer {TOKEN}")
        });
        let (code, body) = if authorized {
            self.api(&method, &path, &body).await
        } else {
            (
                401,
                serde_json::json!({"id": "unauthorized", "message": "Unable to authenticate you"})
                    .to_string(),
            )
        };
        let _ = respond(&mut conn, code, &[], "application/json", &body).await;
    }

    async fn api(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let key = match parts.get(1) {
            Some(&"floating_ips") => "floating_ip",
            Some(&"reserved_ips") => "reserved_ip",
            _ => return not_found(),
        };
        match (method, &parts[..]) {
            ("GET", ["v2", _, ip]) => {
                let holder = self.state().holder;
                let droplet = holder.map(|id| serde_json::json!({"id": id, "name": "lb"}));
                let v = serde_json::json!({ key: {"ip": ip, "droplet": droplet, "locked": false,
                    "region": {"slug": "fra1"}} });
                (200, v.to_string())
            }
            ("POST", ["v2", _, _, "actions"]) => {
                let req: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
                let droplet = req.get("droplet_id").and_then(|v| v.as_u64());
                let (Some("assign"), Some(droplet)) =
                    (req.get("type").and_then(|t| t.as_str()), droplet)
                else {
                    return (
                        422,
                        serde_json::json!({"id": "unprocessable_entity", "message": "bad action"})
                            .to_string(),
                    );
                };
                let delay = {
                    let mut s = self.state();
                    s.posts_now += 1;
                    s.posts_max = s.posts_max.max(s.posts_now);
                    if s.actions.iter().any(|a| !a.done) {
                        s.overlapping_assigns += 1;
                    }
                    s.post_delay
                };
                tokio::time::sleep(delay).await;
                let mut s = self.state();
                s.posts_now -= 1;
                let id = s.next_action;
                s.next_action += 1;
                let instant = s.polls_to_complete == 0;
                s.actions.push(MockAction {
                    id,
                    droplet,
                    polls: 0,
                    done: instant,
                });
                if instant {
                    s.holder = Some(droplet);
                }
                let status = if instant {
                    "completed"
                } else {
                    s.pending_status
                };
                (201, action_json(id, status))
            }
            ("GET", ["v2", _, _, "actions", id]) => {
                let Ok(id) = id.parse::<u64>() else {
                    return not_found();
                };
                let mut s = self.state();
                let (need, final_status, pending) =
                    (s.polls_to_complete, s.final_status, s.pending_status);
                let Some(a) = s.actions.iter_mut().find(|a| a.id == id) else {
                    return not_found();
                };
                a.polls += 1;
                if a.polls >= need && !a.done {
                    a.done = true;
                    if final_status == "completed" {
                        let droplet = a.droplet;
                        s.holder = Some(droplet);
                    }
                }
                let status = match s.actions.iter().find(|a| a.id == id) {
                    Some(a) if a.done => final_status,
                    _ => pending,
                };
                (200, action_json(id, status))
            }
            _ => not_found(),
        }
    }
}

fn not_found() -> (u16, String) {
    (
        404,
        serde_json::json!({"id": "not_found", "message": "The resource you were accessing could not be found."})
            .to_string(),
    )
}

fn action_json(id: u64, status: &str) -> String {
    serde_json::json!({"action": {
        "id": id, "status": status, "type": "assign_ip",
        "started_at": "2024-01-01T00:00:00Z",
        "completed_at": if status == "completed" { Some("2024-01-01T00:00:02Z") } else { None },
        "resource_id": 758604968, "resource_type": "floating_ip", "region_slug": "fra1"
    }})
    .to_string()
}

type Request = (String, String, Vec<(String, String)>, String);

async fn read_request(conn: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((
        method,
        path,
        headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

async fn respond(
    conn: &mut TcpStream,
    code: u16,
    headers: &[(String, String)],
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {code} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    conn.write_all(out.as_bytes()).await?;
    conn.shutdown().await
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
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
