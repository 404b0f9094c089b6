//! `#[repr(C)]` records exchanged through BPF maps and the ring buffer. They
//! have no implicit padding so that they are `Pod` on both sides.

/// The address family a VRID runs over. keepalived runs VRID 1 over IPv4
/// and VRID 1 over IPv6 as two independent routers, so every per-VRID table
/// is keyed by family and VRID ([`VridKey`]).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ipv4 = 4,
    Ipv6 = 6,
}

impl Family {
    /// The family of an [`AdvertEvent::family`] byte.
    #[inline(always)]
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            4 => Some(Self::Ipv4),
            6 => Some(Self::Ipv6),
            _ => None,
        }
    }

    /// Bytes of one address on the wire (a VRRP address entry).
    #[inline(always)]
    pub const fn addr_len(self) -> usize {
        match self {
            Self::Ipv4 => 4,
            Self::Ipv6 => 16,
        }
    }

    /// "IPv4" or "IPv6", for logs.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "IPv4",
            Self::Ipv6 => "IPv6",
        }
    }
}

/// Entries of each per-VRID table (`VRID_CONFIG`, `LAST_ADVERT`,
/// `SILENCE_TIMERS`, the raw path's arrays): 256 VRIDs per family, IPv4's
/// first (so an IPv4 VRID's index is the VRID, as before IPv6).
pub const VRID_SLOTS: u32 = 512;

/// Size of the `EVENTS` ring buffer. Only changes and silence reports are
/// queued (steady adverts stay in `LAST_ADVERT`), so it is sized for bursts
/// of changes: 819 events of 80 bytes (header included), three times every
/// VRID of an interface changing at once. Each byte is resident twice in
/// the agent (the consumer maps the data area twice, for wrap-around), per
/// interface: 256 KiB cost 1.5 MB more with four interfaces. A full ring is
/// counted (`ringbuf_full`) and delays a change by at most the backstop.
pub const EVENTS_BYTES: u32 = 64 * 1024;

/// Map flags of `LAST_ADVERT`: `BPF_F_MMAPABLE` (kernel 5.5+), so user space
/// maps the array and reads a VRID's last advert without a syscall (a backup
/// with a thousand VRIDs checks each about twice a second).
pub const LAST_ADVERT_MAP_FLAGS: u32 = 1 << 10;

/// One VRRP router's identity on a link: its family and VRID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VridKey {
    pub family: Family,
    pub vrid: u8,
}

impl VridKey {
    pub const fn v4(vrid: u8) -> Self {
        Self {
            family: Family::Ipv4,
            vrid,
        }
    }

    pub const fn v6(vrid: u8) -> Self {
        Self {
            family: Family::Ipv6,
            vrid,
        }
    }

    /// Index into the per-VRID tables, below [`VRID_SLOTS`].
    #[inline(always)]
    pub const fn index(self) -> u32 {
        let base = match self.family {
            Family::Ipv4 => 0,
            Family::Ipv6 => 256,
        };
        base + self.vrid as u32
    }

    /// The key of a table index (`None` at or beyond [`VRID_SLOTS`]).
    #[inline(always)]
    pub const fn from_index(index: u32) -> Option<Self> {
        let family = match index / 256 {
            0 => Family::Ipv4,
            1 => Family::Ipv6,
            _ => return None,
        };
        Some(Self {
            family,
            vrid: (index % 256) as u8,
        })
    }
}

/// An address as [`AdvertEvent`] and [`VridConfig`] store it: IPv6 as its
/// 16 bytes, IPv4 as its 4 bytes followed by 12 zeros (the family says
/// which; the bytes alone do not).
pub type WireAddr = [u8; 16];

/// An IPv4 address (network order) as a [`WireAddr`].
#[inline(always)]
pub const fn wire_v4(addr: [u8; 4]) -> WireAddr {
    let mut out = [0; 16];
    out[0] = addr[0];
    out[1] = addr[1];
    out[2] = addr[2];
    out[3] = addr[3];
    out
}

/// Whether two stored addresses are equal, compared as two words: an
/// array comparison may become a `bcmp` call, which BPF has not.
#[inline(always)]
pub fn same_addr(a: &WireAddr, b: &WireAddr) -> bool {
    let (a0, a1) = split_words(a);
    let (b0, b1) = split_words(b);
    a0 == b0 && a1 == b1
}

#[inline(always)]
fn split_words(addr: &WireAddr) -> (u64, u64) {
    (
        u64::from_ne_bytes([
            addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
        ]),
        u64::from_ne_bytes([
            addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
        ]),
    )
}

/// One accepted VRRP advertisement, as both receive paths report it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct AdvertEvent {
    /// `CLOCK_MONOTONIC` nanoseconds (`bpf_ktime_get_ns` in the kernel), so
    /// it compares directly with tokio's `Instant`. 0 means "no advert yet".
    pub timestamp_ns: u64,
    /// Source (the advertising router's primary or link-local address), a
    /// [`WireAddr`] of [`Self::family`]. User space reads it with
    /// [`Self::src_ip`].
    pub src_addr: WireAddr,
    /// Destination (224.0.0.18, ff02::12 or our unicast address).
    pub dst_addr: WireAddr,
    /// First virtual address carried in the advert (all zeros when it
    /// carries none).
    pub first_vip: WireAddr,
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
    /// [`Family`] as its `u8` (4 or 6); silence reports carry it too.
    pub family: u8,
    /// [`silence_timer`]: whether the kernel could arm the VRID's silence
    /// timer at this advert; meaningful with [`change::TIMER`].
    pub silence_timer: u8,
    pub reserved: [u8; 2],
}

impl AdvertEvent {
    /// The advert's family (`None` for a record no receive path writes).
    #[inline(always)]
    pub const fn family(&self) -> Option<Family> {
        Family::from_u8(self.family)
    }

    /// Index of the event's VRID in the per-VRID tables
    /// ([`VridKey::index`]; a family no receive path writes counts as
    /// IPv4's).
    #[inline(always)]
    pub const fn slot(&self) -> u32 {
        let base = if self.family == Family::Ipv6 as u8 {
            256
        } else {
            0
        };
        base + self.vrid as u32
    }

    /// The router the advert is about: `None` as for [`Self::family`].
    #[inline(always)]
    pub const fn key(&self) -> Option<VridKey> {
        match self.family() {
            Some(family) => Some(VridKey {
                family,
                vrid: self.vrid,
            }),
            None => None,
        }
    }
}

#[cfg(any(test, feature = "user"))]
impl AdvertEvent {
    /// A stored address as the `IpAddr` of the event's family (anything but
    /// IPv6 reads as IPv4).
    pub fn wire_to_ip(&self, addr: &WireAddr) -> std::net::IpAddr {
        if self.family() == Some(Family::Ipv6) {
            std::net::Ipv6Addr::from(*addr).into()
        } else {
            std::net::Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).into()
        }
    }

    /// The advert's source address.
    pub fn src_ip(&self) -> std::net::IpAddr {
        self.wire_to_ip(&self.src_addr)
    }

    /// The advert's destination address.
    pub fn dst_ip(&self) -> std::net::IpAddr {
        self.wire_to_ip(&self.dst_addr)
    }

    /// The first virtual address the advert carries (the family's
    /// unspecified address, 0.0.0.0 or ::, when it carries none).
    pub fn first_vip_ip(&self) -> std::net::IpAddr {
        self.wire_to_ip(&self.first_vip)
    }
}

/// An `IpAddr` as a [`WireAddr`], with its family.
#[cfg(any(test, feature = "user"))]
pub fn wire_addr(addr: std::net::IpAddr) -> (Family, WireAddr) {
    match addr {
        std::net::IpAddr::V4(v4) => (Family::Ipv4, wire_v4(v4.octets())),
        std::net::IpAddr::V6(v6) => (Family::Ipv6, v6.octets()),
    }
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
    /// advert having arrived for the VRID's `down_timer_adverts`
    /// ([`VridConfig::silence_intervals`]) intervals. Only `timestamp_ns`, `vrid`, `interval_cs` (of the last
    /// advert) and `receive_path` are set.
    pub const SILENCE: u8 = 1 << 6;
    /// The kernel's silence timer for this VRID could not be armed where it
    /// was before (or can again after it could not): `silence_timer` says
    /// which. Reported once per change, not at every advert, in an event
    /// of its own: the VRID's last advert with this flag alone.
    pub const TIMER: u8 = 1 << 7;
}

/// Values of [`AdvertEvent::silence_timer`].
pub mod silence_timer {
    /// Not reported: the raw-socket path, the timerless program, or an
    /// advert that was not queued.
    pub const UNKNOWN: u8 = 0;
    /// Armed: the kernel reports the VRID's silence.
    pub const ARMED: u8 = 1;
    /// The kernel refused the program's silence timer (`bpf_timer_init`
    /// or `bpf_timer_start` failed; counted as `silence_timer_errors`).
    /// The program retries about once a second; until then user space
    /// keeps the VRID's exact master-down deadline itself.
    pub const REFUSED: u8 = 2;

    /// Values of the XDP program's per-load `TIMER_STATE` map (one `u64`
    /// per VRID slot); any other value is a refused timer's retry time
    /// (kernel nanoseconds).
    pub mod state {
        /// Not yet initialised by this loaded program.
        pub const UNPREPARED: u64 = 0;
        /// Covered by this program's silence timer (initialised and pointed
        /// at its callback).
        pub const PREPARED: u64 = u64::MAX;
    }
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

/// How many sources one VRID can restrict its adverts to (its unicast
/// peers). keepalived configurations rarely list more than a handful of
/// peers; a configuration with more is refused (see lbha-config) rather than
/// silently left unfiltered.
pub const MAX_ALLOWED_SOURCES: usize = 8;

/// Master_Down_Interval in advert intervals when nothing else is
/// configured: RFC 5798's 3, keepalived's default `down_timer_adverts`.
pub const DEFAULT_DOWN_TIMER_ADVERTS: u8 = 3;

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
    /// Expected v2 auth type: [`crate::vrrp::AUTH_NONE`], [`crate::vrrp::AUTH_PASS`]
    /// or [`crate::vrrp::AUTH_AH`].
    pub auth_type: u8,
    /// keepalived's `down_timer_adverts`: the master counts as down after
    /// this many advert intervals (plus Skew_Time) without one, so the
    /// kernel's silence timer reports after this many. 0 means
    /// [`DEFAULT_DOWN_TIMER_ADVERTS`].
    pub down_timer_adverts: u8,
    /// PASS password, zero padded to 8 bytes, compared byte for byte as
    /// keepalived does (it keeps only the first 8 characters).
    pub auth_data: [u8; 8],
    /// How many entries of `allowed_sources` apply. 0: adverts from any
    /// source are accepted (multicast, or source checking turned off).
    pub allowed_source_count: u8,
    pub reserved: [u8; 3],
    /// The sources adverts must come from, as [`WireAddr`]s of the table's
    /// family: the instance's unicast peers (keepalived's
    /// `check_unicast_src`).
    pub allowed_sources: [WireAddr; MAX_ALLOWED_SOURCES],
}

/// More allowed sources than a [`VridConfig`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManySources(pub usize);

impl VridConfig {
    /// A configured VRID accepting adverts from any source, with the
    /// default Master_Down_Interval.
    pub const fn new(version: u8, auth_type: u8, auth_data: [u8; 8]) -> Self {
        Self {
            enabled: 1,
            version,
            auth_type,
            down_timer_adverts: DEFAULT_DOWN_TIMER_ADVERTS,
            auth_data,
            allowed_source_count: 0,
            reserved: [0; 3],
            allowed_sources: [[0; 16]; MAX_ALLOWED_SOURCES],
        }
    }

    /// The same, with the master counted down after `adverts` intervals.
    pub const fn with_down_timer_adverts(mut self, adverts: u8) -> Self {
        self.down_timer_adverts = adverts;
        self
    }

    /// The same, accepting adverts only from `sources` (any source when
    /// empty), [`WireAddr`]s of the family whose table the entry goes in.
    pub fn with_allowed_sources(mut self, sources: &[WireAddr]) -> Result<Self, TooManySources> {
        if sources.len() > MAX_ALLOWED_SOURCES {
            return Err(TooManySources(sources.len()));
        }
        self.allowed_sources = [[0; 16]; MAX_ALLOWED_SOURCES];
        self.allowed_sources[..sources.len()].copy_from_slice(sources);
        self.allowed_source_count = sources.len() as u8;
        Ok(self)
    }

    /// As [`Self::with_allowed_sources`], from addresses (all of the
    /// table's family).
    #[cfg(any(test, feature = "user"))]
    pub fn with_allowed_ips(self, sources: &[std::net::IpAddr]) -> Result<Self, TooManySources> {
        let wire: std::vec::Vec<WireAddr> = sources.iter().map(|a| wire_addr(*a).1).collect();
        self.with_allowed_sources(&wire)
    }

    /// Whether an advert from `src` (a [`WireAddr`]) may be accepted. A
    /// loop of at most [`MAX_ALLOWED_SOURCES`] steps, so the BPF verifier
    /// bounds it.
    #[inline(always)]
    pub fn allows_source(&self, src: &WireAddr) -> bool {
        let count = usize::from(self.allowed_source_count);
        if count == 0 {
            return true;
        }
        // An index loop with a constant bound: an iterator's end pointer
        // and the count are two bounds the verifier cannot relate.
        for i in 0..MAX_ALLOWED_SOURCES {
            if i >= count {
                break;
            }
            if same_addr(&self.allowed_sources[i], src) {
                return true;
            }
        }
        false
    }

    /// Intervals without an advert after which the VRID counts as silent.
    #[inline(always)]
    pub const fn silence_intervals(&self) -> u8 {
        if self.down_timer_adverts == 0 {
            DEFAULT_DOWN_TIMER_ADVERTS
        } else {
            self.down_timer_adverts
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
    /// Adverts passed to the network stack instead of consumed because no
    /// agent holds the lease (lbha stopped, program left pinned): accepted
    /// ones, and those from a source the last agent did not allow (its
    /// peer list is its own policy, not something a keepalived started in
    /// its place must live with).
    PassedNoAgent = 13,
    /// Silence reports queued by the per-VRID kernel timer (no advert for
    /// `down_timer_adverts` intervals): the backup's cue to check the
    /// master-down timer.
    SilenceReported = 14,
    /// Failures to arm the silence timer or to queue its report; user
    /// space then relies on its own (later) deadline.
    SilenceTimerErrors = 15,
    /// Well-formed adverts for a configured VRID whose source is not
    /// one of the instance's unicast peers (keepalived's
    /// `check_unicast_src`, on by default in lbha). An outcome, like the
    /// other drops.
    DropUnknownSource = 16,
    /// IPv6 packets whose extension header chain holds a header other
    /// than hop-by-hop or destination options (routing, fragment, AH,
    /// ESP...), or more of those than the parser walks, before reaching
    /// an upper layer: whether they carry VRRP is not looked into; they
    /// are passed to the stack untouched. An outcome, like `NotVrrp`.
    Ipv6ExtHeaderPassed = 17,
    /// AH adverts (keepalived's `auth_type AH`) with a VRRP next header but
    /// an AH header keepalived never sends (payload length other than 4)
    /// or cut short. An outcome.
    DropMalformedAh = 18,
    /// Well-formed AH adverts for a VRID configured with AH, handed to the
    /// agent's protocol-51 socket to check their ICV and sequence number
    /// (the kernel cannot compute HMAC-MD5): passed to the stack by the XDP
    /// program, never taken on its fast path. An outcome.
    AhToUserSpace = 19,
    /// AH adverts whose HMAC-MD5-96 ICV is wrong (another password, or a
    /// field changed on the way). Counted in user space only.
    DropAhBadIcv = 20,
    /// AH adverts whose SPI is not their source address, as keepalived
    /// requires. Counted in user space only.
    DropAhBadSpi = 21,
    /// AH adverts whose sequence number is not above the last one this
    /// instance accepted or sent (keepalived's replay rule). Counted in
    /// user space only.
    DropAhReplay = 22,
}

impl Counter {
    pub const COUNT: u32 = 23;
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
        Counter::DropUnknownSource,
        Counter::Ipv6ExtHeaderPassed,
        Counter::DropMalformedAh,
        Counter::AhToUserSpace,
        Counter::DropAhBadIcv,
        Counter::DropAhBadSpi,
        Counter::DropAhReplay,
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
            Counter::DropUnknownSource => "drop_unknown_source",
            Counter::Ipv6ExtHeaderPassed => "ipv6_ext_header_passed",
            Counter::DropMalformedAh => "drop_malformed_ah",
            Counter::AhToUserSpace => "ah_to_user_space",
            Counter::DropAhBadIcv => "drop_ah_bad_icv",
            Counter::DropAhBadSpi => "drop_ah_bad_spi",
            Counter::DropAhReplay => "drop_ah_replay",
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

#[cfg(feature = "user")]
mod user {
    // SAFETY: all three are repr(C), made only of integers and byte arrays,
    // with no padding (checked by the size assertions below), so any bit
    // pattern is a valid value, as aya's Pod requires.
    unsafe impl aya::Pod for super::AdvertEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VridConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AgentLease {}
}

const _: () = assert!(core::mem::size_of::<AdvertEvent>() == 72);
const _: () = assert!(core::mem::size_of::<VridConfig>() == 144);
const _: () = assert!(core::mem::size_of::<AgentLease>() == 8);

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: WireAddr = wire_v4([10, 0, 0, 1]);
    const OTHER: WireAddr = wire_v4([10, 0, 0, 9]);

    #[test]
    fn no_allowed_sources_allows_every_source() {
        let config = VridConfig::new(3, 0, [0; 8]);
        assert_eq!(config.allowed_source_count, 0);
        assert!(config.allows_source(&PEER));
        assert!(config.allows_source(&[0; 16]));
        // An emptied list filters nothing again.
        let emptied = config
            .with_allowed_sources(&[PEER])
            .unwrap()
            .with_allowed_sources(&[])
            .unwrap();
        assert!(emptied.allows_source(&OTHER));
    }

    #[test]
    fn allowed_sources_are_the_only_ones_allowed() {
        let peers: Vec<WireAddr> = (1..=MAX_ALLOWED_SOURCES as u8)
            .map(|i| wire_v4([10, 0, 0, i]))
            .collect();
        let config = VridConfig::new(3, 0, [0; 8])
            .with_allowed_sources(&peers)
            .unwrap();
        assert_eq!(
            usize::from(config.allowed_source_count),
            MAX_ALLOWED_SOURCES
        );
        for peer in &peers {
            assert!(config.allows_source(peer), "{peer:?}");
        }
        assert!(!config.allows_source(&OTHER));
        // A byte order mix-up would let 1.0.0.10 through.
        assert!(!config.allows_source(&wire_v4([1, 0, 0, 10])));

        // Only the first `allowed_source_count` entries count: zeroed
        // slots do not allow 0.0.0.0.
        let one = VridConfig::new(3, 0, [0; 8])
            .with_allowed_sources(&[PEER])
            .unwrap();
        assert!(one.allows_source(&PEER));
        assert!(!one.allows_source(&[0; 16]));
        assert!(!one.allows_source(&wire_v4([10, 0, 0, 2])));
        // Replacing the list forgets the old one.
        let other = one.with_allowed_sources(&[OTHER]).unwrap();
        assert!(!other.allows_source(&PEER));
        assert!(other.allows_source(&OTHER));
    }

    #[test]
    fn ipv6_sources_compare_all_sixteen_bytes() {
        let peer: WireAddr = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let config = VridConfig::new(3, 0, [0; 8])
            .with_allowed_sources(&[peer])
            .unwrap();
        assert!(config.allows_source(&peer));
        // Differing in the first word only, and in the last byte only.
        let mut first = peer;
        first[1] = 0x81;
        let mut last = peer;
        last[15] = 2;
        assert!(!config.allows_source(&first));
        assert!(!config.allows_source(&last));
    }

    #[test]
    fn keys_index_per_family_tables() {
        assert_eq!(VridKey::v4(0).index(), 0);
        assert_eq!(VridKey::v4(51).index(), 51);
        assert_eq!(VridKey::v6(51).index(), 256 + 51);
        assert_eq!(VridKey::v6(255).index(), VRID_SLOTS - 1);
        for index in 0..VRID_SLOTS {
            assert_eq!(VridKey::from_index(index).unwrap().index(), index);
        }
        assert_eq!(VridKey::from_index(VRID_SLOTS), None);
        assert_ne!(VridKey::v4(1), VridKey::v6(1));
    }

    #[test]
    fn event_addresses_read_back_in_their_family() {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let v6: Ipv6Addr = "fe80::1".parse().unwrap();
        let event = AdvertEvent {
            src_addr: v6.octets(),
            dst_addr: "ff02::12".parse::<Ipv6Addr>().unwrap().octets(),
            family: Family::Ipv6 as u8,
            vrid: 9,
            ..AdvertEvent::default()
        };
        assert_eq!(event.src_ip(), IpAddr::V6(v6));
        assert_eq!(event.dst_ip().to_string(), "ff02::12");
        assert_eq!(event.first_vip_ip(), IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert_eq!(event.key(), Some(VridKey::v6(9)));
        let v4 = AdvertEvent {
            src_addr: wire_v4([10, 0, 0, 1]),
            family: Family::Ipv4 as u8,
            ..AdvertEvent::default()
        };
        assert_eq!(v4.src_ip(), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(wire_addr(v4.src_ip()), (Family::Ipv4, v4.src_addr));
        assert_eq!(AdvertEvent::default().key(), None);
    }

    #[test]
    fn more_sources_than_the_table_holds_are_refused() {
        let peers = [PEER; MAX_ALLOWED_SOURCES + 1];
        assert_eq!(
            VridConfig::new(3, 0, [0; 8]).with_allowed_sources(&peers),
            Err(TooManySources(MAX_ALLOWED_SOURCES + 1))
        );
    }

    #[test]
    fn silence_intervals_default_to_three() {
        let config = VridConfig::new(3, 0, [0; 8]);
        assert_eq!(config.silence_intervals(), 3);
        assert_eq!(config.with_down_timer_adverts(1).silence_intervals(), 1);
        assert_eq!(config.with_down_timer_adverts(100).silence_intervals(), 100);
        // A zeroed entry (never written by this build) keeps the RFC's 3.
        assert_eq!(config.with_down_timer_adverts(0).silence_intervals(), 3);
    }
}
