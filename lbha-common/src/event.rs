//! `#[repr(C)]` records exchanged through BPF maps and the ring buffer. They
//! have no implicit padding so that they are `Pod` on both sides.

/// One accepted VRRP advertisement, as both receive paths report it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct AdvertEvent {
    /// `CLOCK_MONOTONIC` nanoseconds (`bpf_ktime_get_ns` in the kernel), so
    /// it compares directly with tokio's `Instant`. 0 means "no advert yet".
    pub timestamp_ns: u64,
    /// IPv4 source (the advertising router's primary address), network order.
    pub src_addr: [u8; 4],
    /// IPv4 destination (224.0.0.18 or our unicast address), network order.
    pub dst_addr: [u8; 4],
    /// First virtual address carried in the advert (0.0.0.0 when it carries none).
    pub first_vip: [u8; 4],
    /// Interface the advert arrived on.
    pub ifindex: u32,
    /// Advertisement interval in centiseconds (v2's whole seconds x 100).
    pub interval_cs: u16,
    pub vrid: u8,
    pub priority: u8,
    /// VRRP version, 2 or 3.
    pub version: u8,
    /// [`change`] bits: why this advert woke user space (0: it did not).
    pub flags: u8,
    /// Number of virtual addresses in the advert.
    pub count_addr: u8,
    /// [`ReceivePath`] the advert came through.
    pub receive_path: u8,
}

/// Why an advert is interesting to the state machine. An advert with none of
/// these bits is submitted to the ring buffer without a wakeup.
pub mod change {
    /// First advert for this VRID, or from a different source than the last one.
    pub const NEW_SOURCE: u8 = 1 << 0;
    /// Same source, different priority.
    pub const PRIORITY: u8 = 1 << 1;
    /// Priority 0: the master resigns (RFC 5798 section 6.4.3).
    pub const RESIGN: u8 = 1 << 2;
    /// Same source, different advertisement interval.
    pub const INTERVAL: u8 = 1 << 3;
    /// The previous advert is older than the silence threshold.
    pub const AFTER_SILENCE: u8 = 1 << 4;
    /// Same source, different VRRP version.
    pub const VERSION: u8 = 1 << 5;
    /// Not an advert: the kernel's silence timer for this VRID fired, no
    /// advert having arrived for [`crate::fastpath::SILENCE_INTERVALS`]
    /// intervals. Only `timestamp_ns`, `vrid`, `interval_cs` (of the last
    /// advert) and `receive_path` are set.
    pub const SILENCE: u8 = 1 << 6;
}

/// How an advert reached user space.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceivePath {
    Xdp = 1,
    RawSocket = 2,
}

impl ReceivePath {
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Xdp),
            2 => Some(Self::RawSocket),
            _ => None,
        }
    }
}

/// What user space configured for one VRID; the XDP program drops adverts for
/// VRIDs whose entry is not `enabled` as "unknown VRID".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct VridConfig {
    /// 1 when this VRID is configured.
    pub enabled: u8,
    /// Expected VRRP version (2 or 3).
    pub version: u8,
    /// Expected v2 auth type: [`crate::vrrp::AUTH_NONE`] or [`crate::vrrp::AUTH_PASS`].
    pub auth_type: u8,
    pub _reserved: u8,
    /// PASS password, zero padded to 8 bytes, compared byte for byte as
    /// keepalived does (it keeps only the first 8 characters).
    pub auth_data: [u8; 8],
}

impl VridConfig {
    pub const fn new(version: u8, auth_type: u8, auth_data: [u8; 8]) -> Self {
        Self {
            enabled: 1,
            version,
            auth_type,
            _reserved: 0,
            auth_data,
        }
    }
}

/// Index of each per-CPU counter in the `COUNTERS` map. Every packet the XDP
/// program sees is counted as `PacketsSeen` and exactly one of the outcome
/// counters (`NotVrrp`, `AdvertsAccepted` or one `Drop*`), so the outcomes
/// always add up to `PacketsSeen`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    PacketsSeen = 0,
    NotVrrp = 1,
    AdvertsAccepted = 2,
    DropTruncated = 3,
    DropBadTtl = 4,
    DropBadChecksum = 5,
    DropBadVersionType = 6,
    DropBadLength = 7,
    DropUnknownVrid = 8,
    DropAuthMismatch = 9,
    /// Accepted adverts that could not be queued because the ring buffer was full.
    RingBufFull = 10,
    /// Accepted adverts submitted with a wakeup (something changed).
    Wakeups = 11,
    /// Accepted adverts submitted without a wakeup (nothing changed).
    WakeupsSaved = 12,
    /// Accepted adverts passed to the network stack instead of consumed
    /// because no agent holds the lease (lbha stopped, program left pinned).
    PassedNoAgent = 13,
    /// Silence reports queued by the per-VRID kernel timer (no advert for
    /// three intervals): the backup's cue to check the master-down timer.
    SilenceReported = 14,
    /// Failures to arm the silence timer or to queue its report; user
    /// space then relies on its own (later) deadline.
    SilenceTimerErrors = 15,
}

impl Counter {
    pub const COUNT: u32 = 16;
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::PacketsSeen,
        Counter::NotVrrp,
        Counter::AdvertsAccepted,
        Counter::DropTruncated,
        Counter::DropBadTtl,
        Counter::DropBadChecksum,
        Counter::DropBadVersionType,
        Counter::DropBadLength,
        Counter::DropUnknownVrid,
        Counter::DropAuthMismatch,
        Counter::RingBufFull,
        Counter::Wakeups,
        Counter::WakeupsSaved,
        Counter::PassedNoAgent,
        Counter::SilenceReported,
        Counter::SilenceTimerErrors,
    ];

    /// Stable snake_case name, used for metrics and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::PacketsSeen => "packets_seen",
            Counter::NotVrrp => "not_vrrp",
            Counter::AdvertsAccepted => "adverts_accepted",
            Counter::DropTruncated => "drop_truncated",
            Counter::DropBadTtl => "drop_bad_ttl",
            Counter::DropBadChecksum => "drop_bad_checksum",
            Counter::DropBadVersionType => "drop_bad_version_type",
            Counter::DropBadLength => "drop_bad_length",
            Counter::DropUnknownVrid => "drop_unknown_vrid",
            Counter::DropAuthMismatch => "drop_auth_mismatch",
            Counter::RingBufFull => "ringbuf_full",
            Counter::Wakeups => "wakeups",
            Counter::WakeupsSaved => "wakeups_saved",
            Counter::PassedNoAgent => "passed_no_agent",
            Counter::SilenceReported => "silence_reported",
            Counter::SilenceTimerErrors => "silence_timer_errors",
        }
    }
}

/// The running agent's claim on the XDP program. The program stays attached
/// (pinned) across agent restarts; while nobody holds the lease it passes
/// every advert to the network stack untouched, so a stopped or crashed lbha
/// never silences VRRP for whatever runs in its place (keepalived, say).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct AgentLease {
    /// `CLOCK_MONOTONIC` nanoseconds until which an agent is reading the
    /// ring buffer; the agent renews it periodically and zeroes it on exit.
    pub until_ns: u64,
}

impl AgentLease {
    /// Whether an agent holds the lease at `now_ns`.
    #[inline(always)]
    pub const fn held_at(&self, now_ns: u64) -> bool {
        now_ns < self.until_ns
    }
}

/// Size of a value of the XDP program's `SILENCE_TIMERS` map: a kernel
/// `struct bpf_timer` (16 bytes, opaque to user space) and the time the
/// timer is due.
pub const SILENCE_TIMER_VALUE_SIZE: u32 = 24;

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are repr(C), made only of integers and byte arrays, with no
    // padding (checked by the size assertions below), so any bit pattern is valid.
    unsafe impl aya::Pod for super::AdvertEvent {}
    unsafe impl aya::Pod for super::VridConfig {}
    unsafe impl aya::Pod for super::AgentLease {}
}

const _: () = assert!(core::mem::size_of::<AdvertEvent>() == 32);
const _: () = assert!(core::mem::size_of::<VridConfig>() == 12);
const _: () = assert!(core::mem::size_of::<AgentLease>() == 8);
