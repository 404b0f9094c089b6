//! `lbha-agent status` and `lbha-agent handover`: the daemon answers on a
//! Unix socket only root can open (directory 0700, socket 0600). A client
//! sends one JSON line, a [`Request`] (none, or end of input: status, as
//! clients before handover did), and gets its [`AgentStatus`] as JSON, or,
//! for a handover, one JSON [`Reply`] per line: progress, then the result.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    sync::mpsc,
};

use super::{AgentStatus, Telemetry};

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    Status,
    Handover(HandoverRequest),
}

/// `lbha-agent handover [--instance NAME] [--to PEER] [--timeout SECS]
/// [--release]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HandoverRequest {
    /// The instance the floating IP follows when None.
    pub instance: Option<String>,
    /// The peer: its heartbeat address, VRRP address or droplet id.
    pub to: Option<String>,
    /// Bound on the API action (None: the configured operation deadline).
    pub timeout_secs: Option<f64>,
    /// End the hold of an earlier handover instead.
    pub release: bool,
}

/// One line of the answer to a handover.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Progress(String),
    Done { ok: bool, message: String },
}

/// A handover request handed to the daemon, with where its replies go
/// (the connection ends when the daemon drops the sender).
#[derive(Debug)]
pub struct ControlRequest {
    pub request: HandoverRequest,
    pub replies: mpsc::UnboundedSender<Reply>,
}

/// How long the server waits for a request line before answering status
/// (a client that sends nothing and waits, as `status` clients did).
const REQUEST_WAIT: Duration = Duration::from_millis(200);
/// Bound on a request line.
const MAX_REQUEST: u64 = 4096;

/// Listens on `path` (replacing a stale socket) until the task is dropped.
/// Handover requests go to `control` (None: refused).
pub async fn serve(
    path: PathBuf,
    telemetry: Telemetry,
    control: Option<mpsc::UnboundedSender<ControlRequest>>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tracing::info!(socket = %path.display(), "status socket listening");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (telemetry, control) = (telemetry.clone(), control.clone());
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read.take(MAX_REQUEST));
            let request =
                match tokio::time::timeout(REQUEST_WAIT, reader.read_line(&mut line)).await {
                    Ok(Ok(_)) if !line.trim().is_empty() => {
                        serde_json::from_str::<Request>(line.trim())
                            .map_err(|e| format!("not a request: {e}"))
                    }
                    _ => Ok(Request::Status),
                };
            match request {
                Ok(Request::Status) => {
                    let json = serde_json::to_vec(&telemetry.snapshot()).unwrap_or_default();
                    let _ = write.write_all(&json).await;
                }
                Ok(Request::Handover(request)) => {
                    let (tx, mut rx) = mpsc::unbounded_channel();
                    let sent = control.is_some_and(|control| {
                        control
                            .send(ControlRequest {
                                request,
                                replies: tx,
                            })
                            .is_ok()
                    });
                    let mut done = false;
                    if sent {
                        while let Some(reply) = rx.recv().await {
                            done |= matches!(reply, Reply::Done { .. });
                            if write_reply(&mut write, &reply).await.is_err() {
                                break;
                            }
                        }
                    }
                    if !done {
                        let message = "the daemon cannot take a handover request now".to_owned();
                        let _ = write_reply(&mut write, &Reply::Done { ok: false, message }).await;
                    }
                }
                Err(message) => {
                    let _ = write_reply(&mut write, &Reply::Done { ok: false, message }).await;
                }
            }
            let _ = write.shutdown().await;
        });
    }
}

async fn write_reply(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    reply: &Reply,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).unwrap_or_default();
    line.push(b'\n');
    write.write_all(&line).await
}

async fn connect(path: &Path, request: &Request) -> anyhow::Result<tokio::net::UnixStream> {
    let mut stream = tokio::net::UnixStream::connect(path).await.map_err(|e| {
        anyhow::anyhow!(
            "connecting to {} (is lbha-agent running, and are you root?): {e}",
            path.display()
        )
    })?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    stream.shutdown().await?;
    Ok(stream)
}

/// Asks a running daemon for its status.
pub async fn query(path: &Path) -> anyhow::Result<AgentStatus> {
    let mut stream = connect(path, &Request::Status).await?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    Ok(serde_json::from_slice(&buf)?)
}

/// Asks a running daemon for a handover (or a release); `progress` sees
/// each progress line as it comes. Returns the result line: `Ok(message)`
/// when it succeeded, `Err` (with the daemon's message) when it did not.
pub async fn handover(
    path: &Path,
    request: HandoverRequest,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<String> {
    let stream = connect(path, &Request::Handover(request)).await?;
    let mut lines = BufReader::new(stream).lines();
    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<Reply>(&line)? {
            Reply::Progress(text) => progress(&text),
            Reply::Done { ok: true, message } => return Ok(message),
            Reply::Done { ok: false, message } => anyhow::bail!(message),
        }
    }
    anyhow::bail!("the daemon closed the connection without a result")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::status::InstanceStatus;

    #[tokio::test]
    async fn status_round_trips_over_a_root_only_socket() {
        let dir = std::env::temp_dir().join(format!("lbha-status-{}", std::process::id()));
        let path = dir.join("run/lbha.sock");
        let t = Telemetry::default();
        t.add_instance(InstanceStatus {
            name: "VI_1".into(),
            state: "BACKUP".into(),
            ..InstanceStatus::default()
        });
        let server = tokio::spawn(serve(path.clone(), t.clone(), None));
        let mut status = None;
        for _ in 0..50 {
            if let Ok(s) = query(&path).await {
                status = Some(s);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let status = status.expect("status answered");
        assert_eq!(status.instances[0].name, "VI_1");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        server.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    async fn serving(
        tag: &str,
        control: Option<mpsc::UnboundedSender<ControlRequest>>,
    ) -> (PathBuf, tokio::task::JoinHandle<std::io::Result<()>>) {
        let dir = std::env::temp_dir().join(format!("lbha-ctl-{tag}-{}", std::process::id()));
        let path = dir.join("lbha.sock");
        let server = tokio::spawn(serve(path.clone(), Telemetry::default(), control));
        for _ in 0..50 {
            if path.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (path, server)
    }

    #[tokio::test]
    async fn a_handover_request_reaches_the_daemon_and_its_progress_the_client() {
        let (tx, mut rx) = mpsc::unbounded_channel::<ControlRequest>();
        let (path, server) = serving("ok", Some(tx)).await;
        let daemon = tokio::spawn(async move {
            let req = rx.recv().await.unwrap();
            assert_eq!(req.request.to.as_deref(), Some("lb2"));
            req.replies.send(Reply::Progress("step 1".into())).unwrap();
            req.replies.send(Reply::Progress("step 2".into())).unwrap();
            req.replies
                .send(Reply::Done {
                    ok: true,
                    message: "done".into(),
                })
                .unwrap();
        });
        let mut seen = Vec::new();
        let request = HandoverRequest {
            to: Some("lb2".into()),
            ..HandoverRequest::default()
        };
        let result = handover(&path, request, |line| seen.push(line.to_owned())).await;
        assert_eq!(result.unwrap(), "done");
        assert_eq!(seen, ["step 1", "step 2"]);
        daemon.await.unwrap();
        // A refusal comes back as an error with the daemon's words.
        server.abort();
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn without_a_daemon_side_a_handover_is_refused_and_a_silent_client_gets_status() {
        let (path, server) = serving("none", None).await;
        let err = handover(&path, HandoverRequest::default(), |_| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cannot take a handover"), "{err}");
        // A client that writes nothing gets the status, as before.
        let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.unwrap();
        let _: AgentStatus = serde_json::from_slice(&buf).unwrap();
        server.abort();
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
