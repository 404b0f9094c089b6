//! Kernel-side diagnostics: aya-log records the XDP program writes when the
//! agent asks for them at load time, and what both sides must agree on.

/// The `log` target of the XDP program's records. Under the agent's crate so
/// that `RUST_LOG=lbha_agent=debug` shows them with the agent's own debug
/// logs; the agent asks its subscriber about this target to decide whether
/// to load the program with diagnostics on.
pub const BPF_LOG_TARGET: &str = "lbha_agent::bpf::xdp";

/// Name of the program's `.rodata` switch (a `u8`, 0 = off) that the agent
/// overrides at load time. The program defaults to off, so an object loaded
/// by anything else (bpftool, a test) stays quiet.
pub const DIAGNOSTICS_GLOBAL: &str = "LBHA_DIAGNOSTICS";

/// Name of the program's `.rodata` switch (a `u8`) that decides whether a
/// steady advert (nothing changed, see `fastpath::classify`) is also queued
/// on the ring buffer (without a wakeup), or only kept in `LAST_ADVERT`. The
/// daemon leaves it 0: steady state lives in the kernel's maps, and the ring
/// buffer carries only changes and silence reports, so its use grows with
/// events, not with advert rate (a thousand VRIDs at 10 ms would overflow
/// it otherwise). `lbha-agent watch`, which prints every advert, sets 1.
pub const QUEUE_STEADY_GLOBAL: &str = "LBHA_QUEUE_STEADY";

/// Entries of the program's `DIAG_SEEN` map: one per (family, VRID)
/// ([`crate::event::VridKey::index`]), then one for the program as a whole.
pub const SEEN_ENTRIES: u32 = crate::event::VRID_SLOTS + 1;
/// The `DIAG_SEEN` entry recording that the first packet was reported.
pub const SEEN_PROGRAM: u32 = crate::event::VRID_SLOTS;

/// Bits of a `DIAG_SEEN` entry: what was already reported once.
pub mod seen {
    /// The program's first packet (entry [`super::SEEN_PROGRAM`]).
    pub const PACKET: u8 = 1 << 0;
    /// The VRID's first accepted advert.
    pub const ADVERT: u8 = 1 << 1;
    /// An advert for the VRID while it was not configured.
    pub const UNKNOWN_VRID: u8 = 1 << 2;
}
