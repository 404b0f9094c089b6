//! `lbha-agent status`: the daemon answers on a Unix socket only root can
//! open (directory 0700, socket 0600) with its [`AgentStatus`] as JSON.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{AgentStatus, Telemetry};

/// Listens on `path` (replacing a stale socket) until the task is dropped.
pub async fn serve(path: PathBuf, telemetry: Telemetry) -> std::io::Result<()> {
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
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let json = serde_json::to_vec(&telemetry.snapshot()).unwrap_or_default();
        tokio::spawn(async move {
            let _ = stream.write_all(&json).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Asks a running daemon for its status.
pub async fn query(path: &Path) -> anyhow::Result<AgentStatus> {
    let mut stream = tokio::net::UnixStream::connect(path).await.map_err(|e| {
        anyhow::anyhow!(
            "connecting to {} (is lbha-agent running, and are you root?): {e}",
            path.display()
        )
    })?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    Ok(serde_json::from_slice(&buf)?)
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
        let server = tokio::spawn(serve(path.clone(), t.clone()));
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
}
