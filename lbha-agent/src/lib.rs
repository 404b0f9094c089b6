//! lbha agent library: the receive paths for VRRP adverts (XDP fast path and
//! raw-socket fallback) and, on top of them, the daemon's concerns.

pub mod bpf;
pub mod clock;
pub mod cloud;
pub mod daemon;
pub mod health;
pub mod heartbeat;
pub mod ops;
pub mod preflight;
pub mod recv;
pub mod status;
pub mod sys;
pub mod vrrp;

/// The configuration model and its parsers: a crate of its own, so that it
/// cannot depend on the runtime that carries it out.
pub use lbha_config as config;

/// An error and its sources on one line, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
