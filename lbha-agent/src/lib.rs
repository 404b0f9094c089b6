//! lbha agent library: the receive paths for VRRP adverts (XDP fast path and
//! raw-socket fallback) and, on top of them, the daemon's concerns.

pub mod bpf;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod daemon;
pub mod health;
pub mod ops;
pub mod recv;
pub mod status;
pub mod vrrp;
