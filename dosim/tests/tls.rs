//! The HTTPS API listener: its certificate chains to the CA the simulator
//! hands out (and to nothing else), the API answers over it as over plain
//! HTTP, kept-alive connections are numbered in the request log, and
//! `close_connections` closes them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use lbha_dosim::{SimConfig, SimHandle, start};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

const TOKEN: &str = "test-token";
const FIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

async fn sim() -> SimHandle {
    let mut config = SimConfig::new(TOKEN)
        .droplet(1, "127.0.0.1".parse().unwrap())
        .floating_ip(FIP, Some(1))
        .tls();
    config.tls_names = vec!["api.lab.test".into()];
    start(config).await.unwrap()
}

fn connector(trusting: Option<&str>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = trusting {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn connect(
    addr: SocketAddr,
    name: &str,
    trusting: Option<&str>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    connector(trusting).connect(name, tcp).await
}

/// One `GET` of the IP on `stream`, kept alive; returns the status line.
async fn get_ip(stream: &mut BufReader<TlsStream<TcpStream>>) -> String {
    let request = format!(
        "GET /v2/floating_ips/{FIP} HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .unwrap();
    let mut status = String::new();
    stream.read_line(&mut status).await.unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    status.trim().to_owned()
}

#[tokio::test]
async fn https_is_served_with_a_certificate_from_the_simulators_ca_only() {
    let sim = sim().await;
    let addr = sim.api_tls_addr().expect("HTTPS listener");
    let ca = sim.ca_pem().expect("CA").to_owned();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    assert_eq!(sim.api_tls_url(), Some(format!("https://{addr}")));

    // Trusting nothing (the system's roots do not know the lab CA): refused.
    let error = connect(addr, "127.0.0.1", None).await.unwrap_err();
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
    // A name the certificate is not for: refused.
    let error = connect(addr, "other.lab.test", Some(&ca))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not valid for name"), "{error}");

    // The listener's address and the extra name are both in it.
    for name in ["127.0.0.1", "api.lab.test"] {
        let mut stream = BufReader::new(connect(addr, name, Some(&ca)).await.unwrap());
        assert_eq!(get_ip(&mut stream).await, "HTTP/1.1 200 OK", "{name}");
    }
    let requests = sim.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests
            .iter()
            .all(|r| r.tls && r.status.as_deref() == Some("200"))
    );
    assert_eq!(requests[0].caller.ip(), IpAddr::from([127, 0, 0, 1]));
    // The plain listener still serves the same API.
    let plain = TcpStream::connect(sim.api_addr()).await;
    assert!(plain.is_ok());
}

#[tokio::test]
async fn kept_alive_connections_are_numbered_and_can_be_closed() {
    let sim = sim().await;
    let addr = sim.api_tls_addr().unwrap();
    let ca = sim.ca_pem().unwrap().to_owned();
    let mut first = BufReader::new(connect(addr, "127.0.0.1", Some(&ca)).await.unwrap());
    for _ in 0..3 {
        assert_eq!(get_ip(&mut first).await, "HTTP/1.1 200 OK");
    }
    let connections: Vec<u64> = sim.requests().iter().map(|r| r.connection).collect();
    assert_eq!(connections, [1, 1, 1], "one kept-alive connection");
    assert_eq!(sim.state().api_connections, 1);

    assert_eq!(sim.close_connections(), 1);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), first.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "closed by the simulator: {read:?}"
    );

    let mut second = BufReader::new(connect(addr, "127.0.0.1", Some(&ca)).await.unwrap());
    assert_eq!(get_ip(&mut second).await, "HTTP/1.1 200 OK");
    assert_eq!(sim.requests().last().unwrap().connection, 2);
    assert_eq!(sim.state().api_connections, 2);
}
