//! Deeper liveness checks than "the process exists": a TCP connect to a
//! frontend, or an HTTP GET of HAProxy's health or stats URI.

use std::{net::SocketAddr, time::Duration};

/// What a probe found, for logs.
#[derive(Debug, PartialEq, Eq)]
pub enum ProbeResult {
    Up,
    Down(String),
}

impl ProbeResult {
    pub fn is_up(&self) -> bool {
        matches!(self, ProbeResult::Up)
    }
}

/// Up when a TCP connection to `addr` is accepted within `timeout`.
pub async fn tcp(addr: SocketAddr, timeout: Duration) -> ProbeResult {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => ProbeResult::Up,
        Ok(Err(e)) => ProbeResult::Down(format!("connect {addr}: {e}")),
        Err(_) => ProbeResult::Down(format!("connect {addr}: timed out after {timeout:?}")),
    }
}

/// Up when `GET url` answers 2xx or 3xx within `timeout` (what HAProxy's
/// `monitor-uri` and stats page return while it serves).
pub async fn http(client: &reqwest::Client, url: &str, timeout: Duration) -> ProbeResult {
    match client.get(url).timeout(timeout).send().await {
        Ok(response) if response.status().is_success() || response.status().is_redirection() => {
            ProbeResult::Up
        }
        Ok(response) => ProbeResult::Down(format!("GET {url}: HTTP {}", response.status())),
        Err(e) => ProbeResult::Down(format!("GET {url}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot HTTP server on loopback answering `status`.
    async fn serve(status: &'static str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let reply =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = stream.write_all(reply.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn tcp_probe_tells_listening_from_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(tcp(addr, Duration::from_secs(2)).await.is_up());
        drop(listener);
        assert!(!tcp(addr, Duration::from_secs(2)).await.is_up());
    }

    #[tokio::test]
    async fn http_probe_follows_the_status() {
        let client = reqwest::Client::new();
        let ok = serve("200 OK").await;
        assert!(
            http(
                &client,
                &format!("http://{ok}/health"),
                Duration::from_secs(2)
            )
            .await
            .is_up()
        );
        let bad = serve("503 Service Unavailable").await;
        let result = http(
            &client,
            &format!("http://{bad}/health"),
            Duration::from_secs(2),
        )
        .await;
        assert!(
            matches!(&result, ProbeResult::Down(why) if why.contains("503")),
            "{result:?}"
        );
    }
}
