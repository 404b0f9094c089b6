//! The accept loop: HTTP/1.1 through hyper directly (rather than
//! `axum::serve`) so that a handler can close a connection without any
//! response, which is how the `drop` fault is done. An API listener may
//! serve TLS; every API connection gets an id (in the request log) and can
//! be closed from outside ([`crate::SimHandle::close_connections`]), as a
//! load balancer in front of DigitalOcean closes idle ones.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::Shared;

/// The request's source address, put in the request's extensions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub SocketAddr);

/// The connection a request came on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conn {
    pub peer: SocketAddr,
    /// API connections: 1, 2, ... in order of acceptance, over every API
    /// listener; 0 on the metadata listener.
    pub id: u64,
    pub tls: bool,
}

/// Returned by a handler to close the connection without answering (hyper
/// ends an HTTP/1 connection whose service fails, writing nothing).
#[derive(Debug, thiserror::Error)]
#[error("connection closed unanswered (injected fault)")]
pub(crate) struct Dropped;

/// How long a client may take over its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a listener serves.
#[derive(Clone)]
pub(crate) struct Listener {
    pub name: &'static str,
    /// API connections are numbered and can be closed from outside.
    pub api: bool,
    pub tls: Option<TlsAcceptor>,
}

/// Resolves once shutdown is asked for (or the handle is gone).
pub(crate) async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Resolves when the connections open now are to be closed (never
/// without a receiver).
async fn closed(close: Option<watch::Receiver<u64>>) {
    match close {
        Some(mut close) => {
            let _ = close.changed().await;
        }
        None => std::future::pending().await,
    }
}

/// Accepts until shutdown, serving each connection with `handler`.
pub(crate) async fn serve<F, Fut>(
    listener_kind: Listener,
    listener: TcpListener,
    shared: Arc<Shared>,
    handler: F,
) where
    F: Fn(Conn, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Dropped>> + Send + 'static,
{
    let name = listener_kind.name;
    let shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            () = stopped(shutdown.clone()) => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(listener = name, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = if listener_kind.api {
            shared.lock().open_api_connection()
        } else {
            0
        };
        let conn = Conn {
            peer,
            id,
            tls: listener_kind.tls.is_some(),
        };
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        // Only API connections listen (and count) for a close.
        let close = listener_kind
            .api
            .then(|| shared.close_connections.subscribe());
        let api = listener_kind.api;
        let tls = listener_kind.tls.clone();
        tokio::spawn(async move {
            if api {
                tracing::debug!(listener = name, %peer, connection = id, tls = conn.tls, "API connection accepted");
            }
            let ended = async {
                match tls {
                    None => serve_stream(name, conn, stream, handler).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => serve_stream(name, conn, stream, handler).await,
                            Ok(Err(error)) => {
                                tracing::info!(listener = name, %peer, connection = id, %error, "TLS handshake failed");
                            }
                            Err(_) => {
                                tracing::info!(listener = name, %peer, connection = id, "TLS handshake timed out");
                            }
                        }
                    }
                }
            };
            tokio::select! {
                () = ended => {}
                () = stopped(shutdown) => {}
                () = closed(close) => {
                    tracing::info!(listener = name, %peer, connection = id, "closing the connection (asked through /_sim/close_connections)");
                }
            }
        });
    }
}

async fn serve_stream<S, F, Fut>(name: &'static str, conn: Conn, stream: S, handler: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Conn, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Dropped>> + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| handler(conn, request));
    if let Err(error) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(listener = name, peer = %conn.peer, connection = conn.id, %error, "connection ended");
    }
}
