//! The accept loop: HTTP/1.1 through hyper directly (rather than
//! `axum::serve`) so that a handler can close a connection without any
//! response, which is how the `drop` fault is done.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The request's source address, put in the request's extensions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub SocketAddr);

/// Returned by a handler to close the connection without answering (hyper
/// ends an HTTP/1 connection whose service fails, writing nothing).
#[derive(Debug, thiserror::Error)]
#[error("connection closed unanswered (injected fault)")]
pub(crate) struct Dropped;

/// Resolves once shutdown is asked for (or the handle is gone).
pub(crate) async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Accepts until shutdown, serving each connection with `handler`.
pub(crate) async fn serve<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
    handler: F,
) where
    F: Fn(SocketAddr, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Dropped>> + Send + 'static,
{
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
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| handler(peer, request));
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(listener = name, %peer, %error, "connection ended");
                    }
                }
                () = stopped(shutdown) => {}
            }
        });
    }
}
