//! The droplet metadata service: who we are (droplet id) and whether the
//! floating IP is currently assigned to us. It is link-local and answers in
//! milliseconds when present, so timeouts are short: a slow answer means it is
//! not there, and the caller falls back to the API.

use std::time::Duration;

use thiserror::Error;
use tracing::debug;

use lbha_config::DEFAULT_METADATA_TIMEOUT;

const ID_PATH: &str = "/metadata/v1/id";
const ACTIVE_PATH: &str = "/metadata/v1/floating_ip/ipv4/active";
/// This droplet's public IPv6 (a 404 when IPv6 is not enabled on it). DO
/// routes a reserved IPv6 only to a droplet with IPv6 enabled.
const PUBLIC_IPV6_PATH: &str = "/metadata/v1/interfaces/public/0/ipv6/address";
/// Answers are a number or a boolean; anything longer is not the metadata
/// service, and is cut before it reaches an error message.
const MAX_SHOWN_BODY: usize = 64;

#[derive(Debug, Error)]
pub enum MetadataError {
    #[error("building metadata HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("metadata service unreachable at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("metadata service at {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("metadata service at {url} answered {body:?}, expected {expected}")]
    Parse {
        url: String,
        body: String,
        expected: &'static str,
    },
}

#[derive(Clone, Debug)]
pub struct MetadataClient {
    base_url: String,
    http: reqwest::Client,
}

impl MetadataClient {
    pub fn new(base_url: impl Into<String>) -> Result<Self, MetadataError> {
        Self::with_timeout(base_url, DEFAULT_METADATA_TIMEOUT)
    }

    pub fn with_timeout(
        base_url: impl Into<String>,
        timeout: Duration,
    ) -> Result<Self, MetadataError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A link-local address must never go through an HTTP proxy from
            // the environment: the proxy cannot reach our link.
            .no_proxy()
            .build()
            .map_err(MetadataError::Client)?;
        Ok(Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            http,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// This droplet's numeric id.
    pub async fn droplet_id(&self) -> Result<u64, MetadataError> {
        let (url, body) = self.get(ID_PATH).await?;
        body.parse().map_err(|_| MetadataError::Parse {
            url,
            body: shown(&body),
            expected: "a droplet id",
        })
    }

    /// Whether a floating IP is assigned to this droplet right now.
    pub async fn floating_ip_active(&self) -> Result<bool, MetadataError> {
        let (url, body) = self.get(ACTIVE_PATH).await?;
        match body.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(MetadataError::Parse {
                url,
                body: shown(&body),
                expected: "true or false",
            }),
        }
    }

    /// This droplet's public IPv6 address; `None` when the metadata service
    /// has none (404: IPv6 is not enabled on the droplet).
    pub async fn public_ipv6(&self) -> Result<Option<std::net::Ipv6Addr>, MetadataError> {
        let (url, body) = match self.get(PUBLIC_IPV6_PATH).await {
            Ok(answer) => answer,
            Err(MetadataError::Status { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if body.is_empty() {
            return Ok(None);
        }
        body.parse().map(Some).map_err(|_| MetadataError::Parse {
            url,
            body: shown(&body),
            expected: "an IPv6 address",
        })
    }

    async fn get(&self, path: &str) -> Result<(String, String), MetadataError> {
        let url = format!("{}{path}", self.base_url);
        let unreachable = |source| MetadataError::Unreachable {
            url: url.clone(),
            source,
        };
        let resp = self.http.get(&url).send().await.map_err(unreachable)?;
        let status = resp.status();
        debug!(
            method = "GET",
            path,
            status = status.as_u16(),
            "metadata request"
        );
        if !status.is_success() {
            return Err(MetadataError::Status {
                url,
                status: status.as_u16(),
            });
        }
        let body = resp.text().await.map_err(unreachable)?;
        Ok((url, body.trim().to_owned()))
    }
}

fn shown(body: &str) -> String {
    body.chars().take(MAX_SHOWN_BODY).collect()
}

#[cfg(test)]
mod tests {
    use lbha_dosim::FaultsUpdate;

    use super::*;
    use crate::cloud::test_support::{IP, OUR_DROPLET, Sim, closed_port_url, metadata_hangs};

    #[tokio::test]
    async fn reads_id_and_active() {
        let sim = Sim::start(None).await;
        let md = MetadataClient::new(sim.metadata_url()).unwrap();
        assert_eq!(md.droplet_id().await.unwrap(), OUR_DROPLET);
        assert!(!md.floating_ip_active().await.unwrap());
        sim.set_holder(IP, Some(OUR_DROPLET)).await.unwrap();
        assert!(md.floating_ip_active().await.unwrap());
    }

    #[tokio::test]
    async fn unreachable_is_clear_and_quick() {
        let md = MetadataClient::with_timeout(closed_port_url().await, Duration::from_millis(500))
            .unwrap();
        let start = std::time::Instant::now();
        let err = md.droplet_id().await.unwrap_err();
        assert!(matches!(err, MetadataError::Unreachable { .. }), "{err:?}");
        assert!(err.to_string().contains("unreachable"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn down_service_times_out_as_unreachable() {
        let sim = Sim::start(None).await;
        sim.faults(metadata_hangs());
        let md =
            MetadataClient::with_timeout(sim.metadata_url(), Duration::from_millis(300)).unwrap();
        let err = md.floating_ip_active().await.unwrap_err();
        assert!(matches!(err, MetadataError::Unreachable { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn garbage_is_a_parse_error() {
        let sim = Sim::start(None).await;
        sim.faults(FaultsUpdate {
            metadata_body: Some("<html>captive portal</html>".repeat(20)),
            ..FaultsUpdate::default()
        });
        let md = MetadataClient::new(sim.metadata_url()).unwrap();
        let err = md.droplet_id().await.unwrap_err();
        assert!(
            matches!(err, MetadataError::Parse { ref body, .. } if body.len() <= MAX_SHOWN_BODY),
            "{err:?}"
        );
        let err = md.floating_ip_active().await.unwrap_err();
        assert!(matches!(err, MetadataError::Parse { .. }), "{err:?}");
    }
}
