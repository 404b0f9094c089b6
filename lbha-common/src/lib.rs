//! Shared between the kernel (`lbha-ebpf`) and user space (`lbha-agent`).
//!
//! Everything here is `no_std` and panic-free so the XDP program can call it:
//! packet access goes through [`packet::PacketView`], which the eBPF side
//! implements with bounds-checked `ptr_at` loads and the host side with slices.
//! That way the XDP fast path and the raw-socket fallback run the exact same
//! validation rules, and those rules are unit-tested on the host.
#![cfg_attr(not(any(test, feature = "user")), no_std)]
// The XDP program calls these: inlined, each call site's bounds are
// visible to the verifier, and the program stays within its call limits.
#![expect(
    clippy::inline_always,
    reason = "the eBPF verifier needs these inlined"
)]

pub mod checksum;
pub mod diag;
pub mod event;
pub mod fastpath;
pub mod packet;
pub mod vrrp;

pub use event::{AdvertEvent, AgentLease, Counter, VridConfig};
pub use vrrp::{DropReason, Outcome};
