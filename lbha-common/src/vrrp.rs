//! VRRP (RFC 3768 v2, RFC 5798 v3) over IPv4, and v3 over IPv6: the
//! validation rules every receive path applies, written once against
//! [`PacketView`].

use crate::{
    checksum,
    event::{AdvertEvent, Counter, Family, VridConfig, VridKey, silence_timer, wire_v4},
    packet::PacketView,
};

pub const ETH_HEADER_LEN: usize = 14;
pub const VLAN_TAG_LEN: usize = 4;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPV4_MIN_HEADER_LEN: usize = 20;
/// The fixed IPv6 header (RFC 8200 section 3).
pub const IPV6_HEADER_LEN: usize = 40;
/// ff02::12, the VRRP IPv6 multicast group.
pub const VRRP_IPV6_MULTICAST_GROUP: [u8; 16] =
    [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12];
/// IPv6 extension headers that may precede an advert (RFC 8200 4.1 order:
/// hop-by-hop first, destination options before the upper layer).
pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_DSTOPTS: u8 = 60;
/// How many of those the parser walks; a longer chain is counted as
/// [`Counter::Ipv6ExtHeaderPassed`] and passed. RFC 8200 allows each once
/// (destination options twice), so 3 is every legal chain.
pub const MAX_IPV6_EXT_HEADERS: usize = 3;
/// The other IPv6 extension headers (IANA "IPv6 Extension Header Types"):
/// routing, fragment, ESP, AH, mobility, HIP, shim6 and the two
/// experimental ones. A packet with one of them is not parsed further.
pub const IPV6_OTHER_EXT_HEADERS: [u8; 9] = [43, 44, 50, 51, 135, 139, 140, 253, 254];
/// Largest VRRPv3 packet over IPv6: 255 addresses of 16 bytes.
pub const MAX_VRRP_V6_LEN: usize = VRRP_HEADER_LEN + 255 * 16;
const MAX_VRRP_V6_WORDS: usize = MAX_VRRP_V6_LEN / 4;
pub const IPPROTO_VRRP: u8 = 112;
/// IP Authentication Header (RFC 2402), which keepalived's `auth_type AH`
/// puts between the IPv4 header and a VRRPv2 packet.
pub const IPPROTO_AH: u8 = 51;
/// keepalived's AH header: next header, payload length, 2 reserved bytes,
/// SPI, sequence number, then a 12-byte HMAC-MD5-96 ICV.
pub const AH_HEADER_LEN: usize = 24;
/// The AH payload length field for a 96-bit ICV (RFC 2402 2.2: 32-bit
/// words minus 2), the only one keepalived sends.
pub const AH_PAYLOAD_LEN: u8 = 4;
/// RFC 5798 5.1.1.3 / RFC 3768 5.2.3: adverts are sent with TTL 255 and a
/// receiver MUST discard others, so an off-link sender cannot inject them.
pub const VRRP_TTL: u8 = 255;
/// 224.0.0.18, the VRRP multicast group.
pub const VRRP_MULTICAST_GROUP: [u8; 4] = [224, 0, 0, 18];

pub const TYPE_ADVERTISEMENT: u8 = 1;
pub const VRRP_HEADER_LEN: usize = 8;
/// v2 always carries 8 bytes of authentication data after the addresses.
pub const V2_AUTH_DATA_LEN: usize = 8;
pub const AUTH_NONE: u8 = 0;
pub const AUTH_PASS: u8 = 1;
/// RFC 2338's IP Authentication Header type, keepalived's `auth_type AH`.
pub const AUTH_AH: u8 = 2;
/// Largest valid VRRP packet: v2 with 255 addresses and auth data.
pub const MAX_VRRP_LEN: usize = VRRP_HEADER_LEN + 255 * 4 + V2_AUTH_DATA_LEN;
const MAX_VRRP_WORDS: usize = MAX_VRRP_LEN / 4;
const MAX_IPV4_HEADER_WORDS: usize = 15;

/// Why a VRRP packet was rejected. Each maps to one counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Headers cut short, IP length beyond the frame, or a fragment.
    Truncated,
    BadTtl,
    /// IPv4 header or VRRP checksum wrong.
    BadChecksum,
    /// Not version 2/3, not the configured version, or not an advertisement.
    BadVersionType,
    /// Length disagrees with the address count.
    BadLength,
    /// Well formed, but for a VRID nobody configured. Passed on to the stack
    /// untouched: another VRRP speaker on the host may own it.
    UnknownVrid,
    /// v2 authentication type or PASS data differs from the configuration.
    AuthMismatch,
    /// A valid advert from an IPv4 source that is not one of the VRID's
    /// allowed sources (its unicast peers). Checked last, as keepalived
    /// checks `check_unicast_src`, so a malformed advert from anywhere is
    /// counted as malformed.
    UnknownSource,
    /// An AH header whose next header is VRRP but whose payload length is
    /// not keepalived's (4: a 96-bit ICV), or which the packet cuts short.
    MalformedAh,
}

impl DropReason {
    pub const fn counter(self) -> Counter {
        match self {
            DropReason::Truncated => Counter::DropTruncated,
            DropReason::BadTtl => Counter::DropBadTtl,
            DropReason::BadChecksum => Counter::DropBadChecksum,
            DropReason::BadVersionType => Counter::DropBadVersionType,
            DropReason::BadLength => Counter::DropBadLength,
            DropReason::UnknownVrid => Counter::DropUnknownVrid,
            DropReason::AuthMismatch => Counter::DropAuthMismatch,
            DropReason::UnknownSource => Counter::DropUnknownSource,
            DropReason::MalformedAh => Counter::DropMalformedAh,
        }
    }
}

/// Result of looking at one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not IPv4 protocol 112 or IPv6 next header 112: none of our business.
    NotVrrp,
    /// IPv6 with an extension header the parser does not walk (see
    /// [`Counter::Ipv6ExtHeaderPassed`]): passed, like `NotVrrp`.
    Ipv6ExtHeaderPassed,
    Drop(DropReason),
    /// An advert behind an AH header (keepalived's `auth_type AH`) that
    /// passed every rule but the ones the kernel cannot check: its HMAC-MD5
    /// ICV and its sequence number. Only user space may accept it (see
    /// [`ah`]): the XDP program passes it to the stack, where the agent's
    /// protocol-51 socket reads it.
    AhToVerify(AdvertEvent),
    /// A valid advert. `timestamp_ns`, `ifindex`, `flags` and `receive_path`
    /// are left zero for the receive path to fill in.
    Accept(AdvertEvent),
}

impl Outcome {
    pub const fn counter(&self) -> Counter {
        match self {
            Outcome::NotVrrp => Counter::NotVrrp,
            Outcome::Ipv6ExtHeaderPassed => Counter::Ipv6ExtHeaderPassed,
            Outcome::Drop(reason) => reason.counter(),
            Outcome::AhToVerify(_) => Counter::AhToUserSpace,
            Outcome::Accept(_) => Counter::AdvertsAccepted,
        }
    }
}

/// Which VRIDs are configured, and how, per family. A reference, not a
/// copy: in the XDP program it points into the map value, and a copy of
/// every field would not fit the BPF stack next to the parser's own.
pub trait VridTable {
    fn lookup(&self, key: VridKey) -> Option<&VridConfig>;
}

/// Parses an Ethernet frame (optionally with one 802.1Q/802.1ad tag)
/// carrying IPv4 or IPv6.
#[inline(always)]
pub fn parse_frame<P: PacketView + ?Sized, T: VridTable + ?Sized>(pkt: &P, table: &T) -> Outcome {
    match l3_offset(pkt) {
        Some((l3, Family::Ipv4)) => parse_ipv4(pkt, l3, table),
        Some((l3, Family::Ipv6)) => parse_ipv6(pkt, l3, table),
        None => Outcome::NotVrrp,
    }
}

/// Where the IP header of an Ethernet frame starts (after at most one
/// 802.1Q/802.1ad tag) and which IP it is, or `None` for other frames.
#[inline(always)]
pub fn l3_offset<P: PacketView + ?Sized>(pkt: &P) -> Option<(usize, Family)> {
    let mut ethertype = u16::from_be_bytes(pkt.load::<2>(12)?);
    let mut l3 = ETH_HEADER_LEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = u16::from_be_bytes(pkt.load::<2>(ETH_HEADER_LEN + 2)?);
        l3 += VLAN_TAG_LEN;
    }
    match ethertype {
        ETH_P_IPV4 => Some((l3, Family::Ipv4)),
        ETH_P_IPV6 => Some((l3, Family::Ipv6)),
        _ => None,
    }
}

/// Where the IPv4 header of an Ethernet frame starts, or `None` when the
/// frame does not carry IPv4.
#[inline(always)]
pub fn ipv4_offset<P: PacketView + ?Sized>(pkt: &P) -> Option<usize> {
    match l3_offset(pkt)? {
        (l3, Family::Ipv4) => Some(l3),
        (_, Family::Ipv6) => None,
    }
}

/// Who sent a VRRP frame, as far as it can be read: for reporting drops,
/// whose [`Outcome`] carries only the reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sender {
    /// The frame's IP family; `None` when neither IP header is there.
    pub family: Option<Family>,
    /// Source, a [`crate::event::WireAddr`] of `family`; zeros when the IP
    /// header is cut short.
    pub src_addr: crate::event::WireAddr,
    /// VRID; 0 (never a valid VRID) when the VRRP header is cut short.
    pub vrid: u8,
}

/// The [`Sender`] of an Ethernet frame, read without validating anything.
#[inline(always)]
pub fn frame_sender<P: PacketView + ?Sized>(pkt: &P) -> Sender {
    let l3 = match l3_offset(pkt) {
        Some((l3, Family::Ipv4)) => l3,
        Some((l3, Family::Ipv6)) => return ipv6_sender(pkt, l3),
        None => return Sender::default(),
    };
    let Some(ip) = pkt.load::<IPV4_MIN_HEADER_LEN>(l3) else {
        return Sender::default();
    };
    let ip_header_len = usize::from(ip[0] & 0x0f) * 4;
    let ah_len = if ip[9] == IPPROTO_AH {
        AH_HEADER_LEN
    } else {
        0
    };
    Sender {
        family: Some(Family::Ipv4),
        src_addr: wire_v4([ip[12], ip[13], ip[14], ip[15]]),
        vrid: pkt
            .load::<2>(l3 + ip_header_len + ah_len)
            .map_or(0, |vrrp| vrrp[1]),
    }
}

/// Parses an IPv4 packet starting at `l3` (0 for what a raw socket returns).
#[inline(always)]
pub fn parse_ipv4<P: PacketView + ?Sized, T: VridTable + ?Sized>(
    pkt: &P,
    l3: usize,
    table: &T,
) -> Outcome {
    let Some(ip) = pkt.load::<IPV4_MIN_HEADER_LEN>(l3) else {
        return Outcome::NotVrrp;
    };
    if ip[0] >> 4 != 4 {
        return Outcome::NotVrrp;
    }
    match ip[9] {
        IPPROTO_VRRP => match check_advert(pkt, l3, &ip, 0, table) {
            Ok(event) => Outcome::Accept(event),
            Err(reason) => Outcome::Drop(reason),
        },
        IPPROTO_AH => {
            // Only AH whose next header is VRRP is ours: other IPsec
            // traffic goes to the stack untouched (keepalived ignores it).
            let ah_at = l3 + usize::from(ip[0] & 0x0f) * 4;
            let Some(ah) = pkt.load::<2>(ah_at) else {
                return Outcome::NotVrrp;
            };
            if ah[0] != IPPROTO_VRRP {
                return Outcome::NotVrrp;
            }
            if ah[1] != AH_PAYLOAD_LEN || pkt.load::<AH_HEADER_LEN>(ah_at).is_none() {
                return Outcome::Drop(DropReason::MalformedAh);
            }
            match check_advert(pkt, l3, &ip, AH_HEADER_LEN, table) {
                Ok(event) => Outcome::AhToVerify(event),
                Err(reason) => Outcome::Drop(reason),
            }
        }
        _ => Outcome::NotVrrp,
    }
}

#[inline(always)]
fn check_advert<P: PacketView + ?Sized, T: VridTable + ?Sized>(
    pkt: &P,
    l3: usize,
    ip: &[u8; IPV4_MIN_HEADER_LEN],
    ah_len: usize,
    table: &T,
) -> Result<AdvertEvent, DropReason> {
    let ip_header_len = usize::from(ip[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let fragment = u16::from_be_bytes([ip[6], ip[7]]);
    // MF set or a non-zero offset: a piece of an advert is no advert.
    if ip_header_len < IPV4_MIN_HEADER_LEN
        || total_len < ip_header_len + ah_len + VRRP_HEADER_LEN
        || l3 + total_len > pkt.len()
        || fragment & 0x3fff != 0
    {
        return Err(DropReason::Truncated);
    }
    // With AH (`ah_len` 24), VRRP follows the AH header.
    let vrrp = l3 + ip_header_len + ah_len;
    let vrrp_len = total_len - ip_header_len - ah_len;
    let header = pkt
        .load::<VRRP_HEADER_LEN>(vrrp)
        .ok_or(DropReason::Truncated)?;

    let vrid = header[1];
    // Foreign VRIDs are checked first so that nothing else about them can
    // make us drop traffic that belongs to another VRRP speaker.
    let config = table
        .lookup(VridKey::v4(vrid))
        .ok_or(DropReason::UnknownVrid)?;

    let version = header[0] >> 4;
    if header[0] & 0x0f != TYPE_ADVERTISEMENT
        || !(version == 2 || version == 3)
        || (config.version != 0 && config.version != version)
    {
        return Err(DropReason::BadVersionType);
    }
    let count_addr = header[3];
    let auth_len = if version == 2 { V2_AUTH_DATA_LEN } else { 0 };
    if vrrp_len != VRRP_HEADER_LEN + usize::from(count_addr) * 4 + auth_len {
        return Err(DropReason::BadLength);
    }
    // RFC 3768 7.1 / RFC 5798 7.1: a multicast advert with another TTL came
    // from beyond the link. keepalived checks multicast adverts only (as
    // for IPv6 below): a unicast advert may cross a router, and its
    // `unicast_ttl` sends one with any TTL.
    if ip[16] & 0xf0 == 0xe0 && ip[8] != VRRP_TTL {
        return Err(DropReason::BadTtl);
    }

    let mut ip_sum = 0;
    for word in 0..MAX_IPV4_HEADER_WORDS {
        if word * 4 >= ip_header_len {
            break;
        }
        ip_sum = checksum::add_word(
            ip_sum,
            pkt.load::<4>(l3 + word * 4).ok_or(DropReason::Truncated)?,
        );
    }
    if checksum::fold(ip_sum) != 0 {
        return Err(DropReason::BadChecksum);
    }

    let src = [ip[12], ip[13], ip[14], ip[15]];
    let dst = [ip[16], ip[17], ip[18], ip[19]];
    // v3 covers an IPv4 pseudo-header (RFC 5798 5.2.8); v2 only the VRRP packet.
    let mut sum = if version == 3 {
        checksum::pseudo_header_sum(src, dst, IPPROTO_VRRP, vrrp_len as u16)
    } else {
        0
    };
    for word in 0..MAX_VRRP_WORDS {
        if word * 4 >= vrrp_len {
            break;
        }
        sum = checksum::add_word(
            sum,
            pkt.load::<4>(vrrp + word * 4)
                .ok_or(DropReason::Truncated)?,
        );
    }
    if checksum::fold(sum) != 0 {
        return Err(DropReason::BadChecksum);
    }

    let interval_cs = if version == 2 {
        // v2: whole seconds in the second byte after the auth type.
        // AH in the VRRP header and an AH header around it go together
        // (keepalived: "No AH header but auth type is AH" and the reverse).
        if header[4] != config.auth_type || (header[4] == AUTH_AH) != (ah_len != 0) {
            return Err(DropReason::AuthMismatch);
        }
        if header[4] == AUTH_PASS {
            // The auth data follows the addresses (the length check above
            // made that the end of the packet). Written as an offset from the
            // start so the BPF verifier sees a forward access.
            let auth_at = vrrp + VRRP_HEADER_LEN + usize::from(count_addr) * 4;
            let data = pkt
                .load::<V2_AUTH_DATA_LEN>(auth_at)
                .ok_or(DropReason::Truncated)?;
            if data != config.auth_data {
                return Err(DropReason::AuthMismatch);
            }
        }
        u16::from(header[5]) * 100
    } else {
        // VRRPv3 has no authentication (keepalived: AH only with v2).
        if ah_len != 0 {
            return Err(DropReason::AuthMismatch);
        }
        // v3: 4 reserved bits, then 12 bits of centiseconds.
        u16::from_be_bytes([header[4] & 0x0f, header[5]])
    };

    if !config.allows_source(&wire_v4(src)) {
        return Err(DropReason::UnknownSource);
    }

    let first_vip = if count_addr > 0 {
        pkt.load::<4>(vrrp + VRRP_HEADER_LEN)
            .ok_or(DropReason::Truncated)?
    } else {
        [0; 4]
    };

    Ok(AdvertEvent {
        timestamp_ns: 0,
        src_addr: wire_v4(src),
        dst_addr: wire_v4(dst),
        first_vip: wire_v4(first_vip),
        ifindex: 0,
        interval_cs,
        vrid,
        priority: header[2],
        version,
        flags: 0,
        count_addr,
        receive_path: 0,
        family: Family::Ipv4 as u8,
        silence_timer: silence_timer::UNKNOWN,
        reserved: [0; 2],
    })
}

/// The [`Sender`] of an IPv6 packet at `l3`: its source, and the VRID when
/// VRRP follows the fixed header or the walked extension headers.
#[inline(always)]
fn ipv6_sender<P: PacketView + ?Sized>(pkt: &P, l3: usize) -> Sender {
    // Piecewise, not the whole header: the XDP program's stack is tight
    // where it reports drops.
    if pkt.load::<1>(l3 + IPV6_HEADER_LEN - 1).is_none() {
        return Sender::default();
    }
    let Some(fixed) = pkt.load::<8>(l3) else {
        return Sender::default();
    };
    let Some(src) = pkt.load::<16>(l3 + 8) else {
        return Sender::default();
    };
    let vrid = match ipv6_upper_layer(pkt, l3 + IPV6_HEADER_LEN, fixed[6]) {
        UpperLayer::Vrrp(at) => pkt.load::<2>(at).map_or(0, |vrrp| vrrp[1]),
        _ => 0,
    };
    Sender {
        family: Some(Family::Ipv6),
        src_addr: src,
        vrid,
    }
}

/// What follows an IPv6 header's extension headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UpperLayer {
    /// VRRP, starting at this offset.
    Vrrp(usize),
    /// Another protocol, or a chain cut short: not ours to judge.
    Other,
    /// An extension header the parser does not walk, or too many.
    UnwalkedExtHeader,
}

/// Walks hop-by-hop and destination-options headers (at most
/// [`MAX_IPV6_EXT_HEADERS`], each bounds-checked) from `at`, where header
/// `next` starts, to the upper layer.
#[inline(always)]
fn ipv6_upper_layer<P: PacketView + ?Sized>(pkt: &P, mut at: usize, mut next: u8) -> UpperLayer {
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if next != IPPROTO_HOPOPTS && next != IPPROTO_DSTOPTS {
            break;
        }
        // Next header, then length in 8-byte units, not counting the
        // first 8 (RFC 8200 4.3, 4.6).
        let Some(header) = pkt.load::<2>(at) else {
            return UpperLayer::Other;
        };
        next = header[0];
        at += (usize::from(header[1]) + 1) * 8;
    }
    match next {
        IPPROTO_VRRP => UpperLayer::Vrrp(at),
        // Still an option header after the longest legal chain.
        IPPROTO_HOPOPTS | IPPROTO_DSTOPTS => UpperLayer::UnwalkedExtHeader,
        other => {
            let mut i = 0;
            while i < IPV6_OTHER_EXT_HEADERS.len() {
                if IPV6_OTHER_EXT_HEADERS[i] == other {
                    return UpperLayer::UnwalkedExtHeader;
                }
                i += 1;
            }
            UpperLayer::Other
        }
    }
}

/// Parses an IPv6 packet starting at `l3`: an Ethernet frame's IPv6
/// header, or (raw socket, which is given no IPv6 header) one rebuilt from
/// the socket's ancillary data by [`ipv6_header`].
///
/// The rules of IPv4 where they apply, plus RFC 5798's for IPv6: version
/// 3 only, addresses 16 bytes each, the checksum over the IPv6
/// pseudo-header. The hop limit must be 255 on adverts to ff02::12;
/// unicast ones are accepted with any: keepalived 2.2.7 sends them with
/// the socket's default (64, measured: see
/// lbha-common/tests/keepalived_frames_v6.rs) and accepts them so, and
/// unicast adverts are meant to be restricted to their peers
/// ([`VridConfig::allowed_sources`]).
#[inline(always)]
pub fn parse_ipv6<P: PacketView + ?Sized, T: VridTable + ?Sized>(
    pkt: &P,
    l3: usize,
    table: &T,
) -> Outcome {
    // Read in small pieces where used, never as one 40-byte copy: the XDP
    // program's stack is tight.
    let Some(fixed) = pkt.load::<8>(l3) else {
        return Outcome::NotVrrp;
    };
    if fixed[0] >> 4 != 6 || pkt.load::<1>(l3 + IPV6_HEADER_LEN - 1).is_none() {
        return Outcome::NotVrrp;
    }
    let vrrp = match ipv6_upper_layer(pkt, l3 + IPV6_HEADER_LEN, fixed[6]) {
        UpperLayer::Vrrp(at) => at,
        UpperLayer::Other => return Outcome::NotVrrp,
        UpperLayer::UnwalkedExtHeader => return Outcome::Ipv6ExtHeaderPassed,
    };
    let payload_end = l3 + IPV6_HEADER_LEN + usize::from(u16::from_be_bytes([fixed[4], fixed[5]]));
    if payload_end > pkt.len() || vrrp + VRRP_HEADER_LEN > payload_end {
        return Outcome::Drop(DropReason::Truncated);
    }
    match check_ipv6_advert(pkt, l3, fixed[7], vrrp, payload_end - vrrp, table) {
        Ok(event) => Outcome::Accept(event),
        Err(reason) => Outcome::Drop(reason),
    }
}

/// The IPv6 header a raw socket's packet arrived with, as far as
/// [`parse_ipv6`] reads it: rebuilt from the source address, the
/// destination (IPV6_PKTINFO) and hop limit (IPV6_HOPLIMIT) the socket
/// reports, for a VRRP packet of `payload_len` bytes following it directly
/// (the kernel has walked any extension headers).
pub fn ipv6_header(src: [u8; 16], dst: [u8; 16], hop_limit: u8, payload_len: u16) -> [u8; 40] {
    let mut header = [0; IPV6_HEADER_LEN];
    header[0] = 0x60;
    header[4..6].copy_from_slice(&payload_len.to_be_bytes());
    header[6] = IPPROTO_VRRP;
    header[7] = hop_limit;
    header[8..24].copy_from_slice(&src);
    header[24..40].copy_from_slice(&dst);
    header
}

#[inline(always)]
fn check_ipv6_advert<P: PacketView + ?Sized, T: VridTable + ?Sized>(
    pkt: &P,
    l3: usize,
    hop_limit: u8,
    vrrp: usize,
    vrrp_len: usize,
    table: &T,
) -> Result<AdvertEvent, DropReason> {
    let header = pkt
        .load::<VRRP_HEADER_LEN>(vrrp)
        .ok_or(DropReason::Truncated)?;
    let vrid = header[1];
    let config = table
        .lookup(VridKey::v6(vrid))
        .ok_or(DropReason::UnknownVrid)?;
    let version = header[0] >> 4;
    if header[0] & 0x0f != TYPE_ADVERTISEMENT
        || version != 3
        || (config.version != 0 && config.version != 3)
    {
        return Err(DropReason::BadVersionType);
    }
    let count_addr = header[3];
    if vrrp_len != VRRP_HEADER_LEN + usize::from(count_addr) * 16 {
        return Err(DropReason::BadLength);
    }
    let dst_first = pkt.load::<1>(l3 + 24).ok_or(DropReason::Truncated)?;
    if dst_first[0] == 0xff && hop_limit != VRRP_TTL {
        return Err(DropReason::BadTtl);
    }
    // The pseudo-header (RFC 8200 8.1): source and destination word by
    // word from the packet, then the length and next header.
    let mut sum = 0;
    for word in 0..8 {
        sum = checksum::add_word(
            sum,
            pkt.load::<4>(l3 + 8 + word * 4)
                .ok_or(DropReason::Truncated)?,
        );
    }
    sum = checksum::add_word(sum, (vrrp_len as u32).to_be_bytes());
    sum = checksum::add_word(sum, [0, 0, 0, IPPROTO_VRRP]);
    for word in 0..MAX_VRRP_V6_WORDS {
        if word * 4 >= vrrp_len {
            break;
        }
        sum = checksum::add_word(
            sum,
            pkt.load::<4>(vrrp + word * 4)
                .ok_or(DropReason::Truncated)?,
        );
    }
    if checksum::fold(sum) != 0 {
        return Err(DropReason::BadChecksum);
    }
    let src = pkt.load::<16>(l3 + 8).ok_or(DropReason::Truncated)?;
    if !config.allows_source(&src) {
        return Err(DropReason::UnknownSource);
    }
    Ok(AdvertEvent {
        timestamp_ns: 0,
        src_addr: src,
        dst_addr: pkt.load::<16>(l3 + 24).ok_or(DropReason::Truncated)?,
        first_vip: if count_addr > 0 {
            pkt.load::<16>(vrrp + VRRP_HEADER_LEN)
                .ok_or(DropReason::Truncated)?
        } else {
            [0; 16]
        },
        ifindex: 0,
        // 4 reserved bits, then 12 bits of centiseconds.
        interval_cs: u16::from_be_bytes([header[4] & 0x0f, header[5]]),
        vrid,
        priority: header[2],
        version,
        flags: 0,
        count_addr,
        receive_path: 0,
        family: Family::Ipv6 as u8,
        silence_timer: silence_timer::UNKNOWN,
        reserved: [0; 2],
    })
}

/// keepalived's `auth_type AH` (keepalived 2.2.7 `vrrp.c`,
/// `vrrp_ipsecah.c`), in user space only: the XDP program cannot compute
/// HMAC-MD5, so it hands AH adverts on ([`Outcome::AhToVerify`]).
///
/// The ICV is HMAC-MD5 (RFC 2104) keyed with the password as keepalived
/// stores it (zero padded or cut to 8 bytes), truncated to 96 bits, over
/// the IP header with TOS, fragment field and checksum zeroed (and the TTL
/// too on a unicast instance, whose adverts may cross routers), the AH
/// header with its ICV zeroed, and the VRRP packet. The SPI is the sender's
/// IPv4 address. Sequence numbers start at 1; an instance keeps one
/// counter for what it sends and what it accepts ([`SeqCounter`]).
#[cfg(feature = "user")]
pub mod ah {
    use super::{AH_HEADER_LEN, IPV4_MIN_HEADER_LEN, V2_AUTH_DATA_LEN};
    use hmac::{Hmac, Mac};
    use md5::Md5;

    /// HMAC-MD5-96: the first 12 bytes of the digest (RFC 2403).
    pub const ICV_LEN: usize = 12;
    /// Where the ICV starts in the AH header.
    const ICV_AT: usize = 12;

    /// Why user space refused an AH advert. Each maps to one counter.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum AhError {
        /// Too short for its IP and AH headers (the parser checks this
        /// first; kept so that [`verify`] is total on any bytes).
        Truncated,
        /// The ICV does not match: another password, or a changed field.
        BadIcv,
        /// The SPI is not the source address.
        BadSpi,
        /// The sequence number is not above the instance's counter.
        Replay,
    }

    impl AhError {
        pub const fn counter(self) -> crate::Counter {
            match self {
                AhError::Truncated => crate::Counter::DropMalformedAh,
                AhError::BadIcv => crate::Counter::DropAhBadIcv,
                AhError::BadSpi => crate::Counter::DropAhBadSpi,
                AhError::Replay => crate::Counter::DropAhReplay,
            }
        }
    }

    /// The HMAC-MD5-96 ICV of `packet` (an IPv4 packet, AH header right
    /// after the IP header, exactly the IP total length long) under `key`.
    /// `unicast`: the instance has unicast peers, so the TTL is left out,
    /// as keepalived does on both ends. `None` when the headers do not fit.
    pub fn icv(
        key: &[u8; V2_AUTH_DATA_LEN],
        packet: &[u8],
        unicast: bool,
    ) -> Option<[u8; ICV_LEN]> {
        let ip_header_len = usize::from(*packet.first()? & 0x0f) * 4;
        let headers = ip_header_len + AH_HEADER_LEN;
        if ip_header_len < IPV4_MIN_HEADER_LEN || packet.len() < headers {
            return None;
        }
        // The mutable fields zeroed (RFC 2402 3.3.3.1.1.1, keepalived's
        // choice of them), in a copy of the two headers.
        let mut fixed = [0u8; 60 + AH_HEADER_LEN];
        let fixed = &mut fixed[..headers];
        fixed.copy_from_slice(&packet[..headers]);
        fixed[1] = 0; // TOS
        fixed[6] = 0; // flags, fragment offset
        fixed[7] = 0;
        if unicast {
            fixed[8] = 0; // TTL
        }
        fixed[10] = 0; // header checksum
        fixed[11] = 0;
        fixed[ip_header_len + ICV_AT..headers].fill(0);
        // An 8-byte key never needs hashing first; new_from_slice takes any
        // length, so this cannot fail.
        let mut mac = Hmac::<Md5>::new_from_slice(key).ok()?;
        mac.update(fixed);
        mac.update(&packet[headers..]);
        let digest = mac.finalize().into_bytes();
        let mut out = [0; ICV_LEN];
        out.copy_from_slice(&digest[..ICV_LEN]);
        Some(out)
    }

    /// Checks an AH advert's ICV, then its SPI (keepalived's order), and
    /// returns its sequence number for the instance's [`SeqCounter`].
    /// `packet` starts at the IP header and ends at its total length.
    pub fn verify(
        key: &[u8; V2_AUTH_DATA_LEN],
        packet: &[u8],
        unicast: bool,
    ) -> Result<u32, AhError> {
        let expected = icv(key, packet, unicast).ok_or(AhError::Truncated)?;
        let ah = usize::from(packet[0] & 0x0f) * 4;
        let received = &packet[ah + ICV_AT..ah + ICV_AT + ICV_LEN];
        // Constant time, as keepalived's memcmp_constant_time: a timing
        // difference must not tell a forger how many bytes were right.
        let diff = expected
            .iter()
            .zip(received)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(AhError::BadIcv);
        }
        if packet[ah + 4..ah + 8] != packet[12..16] {
            return Err(AhError::BadSpi);
        }
        Ok(u32::from_be_bytes([
            packet[ah + 8],
            packet[ah + 9],
            packet[ah + 10],
            packet[ah + 11],
        ]))
    }

    /// An instance's AH sequence number: the last one it sent or accepted
    /// (keepalived's `ipsecah_counter`). Starts at 0, so the first advert
    /// sent carries 1; a restarted sender starts again at 1 and is refused
    /// by a peer that saw higher numbers until that peer, now Master,
    /// sends its own and the restarted one takes them up.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SeqCounter {
        seq: u32,
        /// The counter reached its end (after 2^32 - 3 adverts): sending
        /// repeats the last number, which peers refuse, until the next
        /// takeover restarts it.
        cycle: bool,
    }

    impl SeqCounter {
        pub const fn last(&self) -> u32 {
            self.seq
        }

        /// Accepts a received advert's number if it is above the last one
        /// (keepalived drops "already processed" numbers, equal included).
        pub fn accept(&mut self, seq: u32) -> Result<(), AhError> {
            if seq <= self.seq {
                return Err(AhError::Replay);
            }
            self.seq = seq;
            self.cycle = false;
            Ok(())
        }

        /// The number for the next advert sent.
        pub fn next_send(&mut self) -> u32 {
            if self.seq > 0xFFFF_FFFD {
                self.cycle = true;
            } else {
                self.seq += 1;
            }
            self.seq
        }

        /// On becoming Master: a counter at its end starts again.
        pub fn becoming_master(&mut self) {
            if self.cycle {
                self.cycle = false;
                self.seq = 0;
            }
        }

        /// A Master that accepted a lower-priority advert numbered `seq`
        /// moves past it, as keepalived does ("Syncing seq_num").
        pub fn lower_priority_seen(&mut self, seq: u32) {
            self.seq = seq.wrapping_add(1);
            self.cycle = false;
        }
    }
}

/// Builds adverts exactly as keepalived puts them on the wire. Used to send
/// adverts, and by tests to craft frames.
#[cfg(any(test, feature = "user"))]
pub mod encode {
    use super::{
        AUTH_NONE, AUTH_PASS, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_VRRP,
        IPV4_MIN_HEADER_LEN, MAX_VRRP_LEN, TYPE_ADVERTISEMENT, V2_AUTH_DATA_LEN, VRRP_TTL,
        checksum,
    };
    use std::{
        net::{IpAddr, Ipv4Addr, Ipv6Addr},
        vec::Vec,
    };

    #[derive(Clone, Debug)]
    pub struct Advert<'a> {
        pub version: u8,
        pub vrid: u8,
        pub priority: u8,
        pub interval_cs: u16,
        /// v2 only: `None` for no authentication, `Some(pass)` for PASS.
        pub auth_pass: Option<&'a [u8]>,
        /// All of one family, that of the addresses the advert is sent
        /// between (RFC 5798 5.2.9: 4 bytes each over IPv4, 16 over IPv6).
        pub virtual_addrs: &'a [IpAddr],
    }

    /// Zero-pads (and truncates) a password to the 8 bytes sent on the wire.
    pub fn auth_data(pass: &[u8]) -> [u8; V2_AUTH_DATA_LEN] {
        let mut data = [0; V2_AUTH_DATA_LEN];
        let n = pass.len().min(V2_AUTH_DATA_LEN);
        data[..n].copy_from_slice(&pass[..n]);
        data
    }

    impl Advert<'_> {
        /// The VRRP packet (no IP header), checksum filled in. v3 needs the
        /// addresses for its pseudo-header: the IPv4 one (RFC 5798 5.2.8)
        /// or, when `src` and `dst` are IPv6, RFC 8200 8.1's.
        pub fn vrrp_bytes(&self, src: IpAddr, dst: IpAddr) -> Vec<u8> {
            let (auth_type, data) = match self.auth_pass {
                Some(pass) => (AUTH_PASS, auth_data(pass)),
                None => (AUTH_NONE, [0; V2_AUTH_DATA_LEN]),
            };
            self.vrrp_bytes_with(src, dst, auth_type, data)
        }

        fn vrrp_bytes_with(
            &self,
            src: IpAddr,
            dst: IpAddr,
            auth_type: u8,
            data: [u8; V2_AUTH_DATA_LEN],
        ) -> Vec<u8> {
            let mut out = Vec::with_capacity(MAX_VRRP_LEN);
            out.push((self.version << 4) | TYPE_ADVERTISEMENT);
            out.push(self.vrid);
            out.push(self.priority);
            out.push(self.virtual_addrs.len() as u8);
            if self.version == 2 {
                out.push(auth_type);
                out.push((self.interval_cs / 100).max(1) as u8);
            } else {
                out.extend_from_slice(&(self.interval_cs & 0x0fff).to_be_bytes());
            }
            out.extend_from_slice(&[0, 0]);
            for addr in self.virtual_addrs {
                match addr {
                    IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
                    IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
                }
            }
            if self.version == 2 {
                out.extend_from_slice(&data);
            }
            let initial = match (self.version, src, dst) {
                (3, IpAddr::V6(src), IpAddr::V6(dst)) => checksum::pseudo_header_sum_v6(
                    &src.octets(),
                    &dst.octets(),
                    IPPROTO_VRRP,
                    out.len() as u32,
                ),
                (3, src, dst) => checksum::pseudo_header_sum(
                    v4_octets(src),
                    v4_octets(dst),
                    IPPROTO_VRRP,
                    out.len() as u16,
                ),
                _ => 0,
            };
            let sum = checksum::checksum(initial, &out);
            out[6..8].copy_from_slice(&sum.to_be_bytes());
            out
        }

        /// IPv4 header (TTL 255, protocol 112, DF clear as keepalived) + VRRP.
        pub fn ipv4_packet(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
            self.ipv4_packet_with_ttl(src, dst, VRRP_TTL)
        }

        /// The same with another TTL (keepalived's `unicast_ttl`: receivers
        /// require 255 of multicast adverts only).
        pub fn ipv4_packet_with_ttl(&self, src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
            let vrrp = self.vrrp_bytes(src.into(), dst.into());
            let total = (IPV4_MIN_HEADER_LEN + vrrp.len()) as u16;
            let mut out = Vec::with_capacity(usize::from(total));
            out.extend_from_slice(&[0x45, 0xc0]); // DSCP CS6, as keepalived
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, ttl, IPPROTO_VRRP, 0, 0]);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
            let sum = checksum::checksum(0, &out);
            out[10..12].copy_from_slice(&sum.to_be_bytes());
            out.extend_from_slice(&vrrp);
            out
        }

        /// A VRRPv2 advert behind an AH header, as keepalived's
        /// `auth_type AH` sends it: IPv4 protocol 51, IP id `ip_id` (which
        /// the ICV covers, so it must not be 0: the kernel would pick one),
        /// AH with next header 112, SPI the source, sequence number `seq`
        /// and the ICV under `key` (see [`super::ah`]); in the VRRP header
        /// auth type 2 and 8 zero bytes of auth data. `auth_pass` is
        /// ignored. `unicast_ttl`: `Some(TTL)` when the instance has
        /// unicast peers (the ICV then leaves out the TTL), `None` for
        /// multicast (TTL 255, in the ICV as keepalived computes it).
        #[cfg(feature = "user")]
        pub fn ipv4_ah_packet(
            &self,
            src: Ipv4Addr,
            dst: Ipv4Addr,
            key: &[u8; V2_AUTH_DATA_LEN],
            seq: u32,
            ip_id: u16,
            unicast_ttl: Option<u8>,
        ) -> Vec<u8> {
            use super::{AH_HEADER_LEN, AH_PAYLOAD_LEN, AUTH_AH, IPPROTO_AH};
            let vrrp = self.vrrp_bytes_with(src.into(), dst.into(), AUTH_AH, [0; V2_AUTH_DATA_LEN]);
            let total = (IPV4_MIN_HEADER_LEN + AH_HEADER_LEN + vrrp.len()) as u16;
            let mut out = Vec::with_capacity(usize::from(total));
            out.extend_from_slice(&[0x45, 0xc0]); // DSCP CS6, as keepalived
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&ip_id.to_be_bytes());
            out.extend_from_slice(&[0, 0, unicast_ttl.unwrap_or(VRRP_TTL), IPPROTO_AH, 0, 0]);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
            out.extend_from_slice(&[IPPROTO_VRRP, AH_PAYLOAD_LEN, 0, 0]);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&[0; super::ah::ICV_LEN]);
            out.extend_from_slice(&vrrp);
            // Computed with the header checksum still 0, as keepalived does
            // (and its receiver zeroes it anyway).
            if let Some(icv) = super::ah::icv(key, &out, unicast_ttl.is_some()) {
                out[IPV4_MIN_HEADER_LEN + 12..IPV4_MIN_HEADER_LEN + AH_HEADER_LEN]
                    .copy_from_slice(&icv);
            }
            let sum = checksum::checksum(0, &out[..IPV4_MIN_HEADER_LEN]);
            out[10..12].copy_from_slice(&sum.to_be_bytes());
            out
        }

        /// IPv6 header (traffic class CS6 as keepalived, hop limit 255,
        /// next header 112, no extension headers) + VRRP.
        pub fn ipv6_packet(&self, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
            self.ipv6_packet_with_hop_limit(src, dst, VRRP_TTL)
        }

        /// The same with another hop limit (keepalived's `unicast_ttl`).
        pub fn ipv6_packet_with_hop_limit(
            &self,
            src: Ipv6Addr,
            dst: Ipv6Addr,
            hop_limit: u8,
        ) -> Vec<u8> {
            let vrrp = self.vrrp_bytes(src.into(), dst.into());
            let mut out = Vec::with_capacity(super::IPV6_HEADER_LEN + vrrp.len());
            // Version 6, traffic class 0xc0, flow label 0.
            out.extend_from_slice(&[0x6c, 0x00, 0x00, 0x00]);
            out.extend_from_slice(&(vrrp.len() as u16).to_be_bytes());
            out.extend_from_slice(&[IPPROTO_VRRP, hop_limit]);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
            out.extend_from_slice(&vrrp);
            out
        }

        /// Ethernet frame around [`Self::ipv4_packet`], with an optional
        /// 802.1Q VLAN id, padded to the 60-byte Ethernet minimum.
        pub fn ethernet_frame(&self, src: Ipv4Addr, dst: Ipv4Addr, vlan: Option<u16>) -> Vec<u8> {
            // To 224.0.0.18's MAC, from the VRRP virtual MAC
            // 00:00:5e:00:01:VRID, as a master sends.
            ethernet(
                [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12],
                [0x00, 0x00, 0x5e, 0x00, 0x01, self.vrid],
                vlan,
                ETH_P_IPV4,
                &self.ipv4_packet(src, dst),
            )
        }

        /// Ethernet frame around [`Self::ipv6_packet`]: to ff02::12's MAC
        /// 33:33:00:00:00:12, from the IPv6 VRRP virtual MAC
        /// 00:00:5e:00:02:VRID (RFC 5798 7.3).
        pub fn ethernet_frame_v6(
            &self,
            src: Ipv6Addr,
            dst: Ipv6Addr,
            vlan: Option<u16>,
        ) -> Vec<u8> {
            ethernet(
                [0x33, 0x33, 0x00, 0x00, 0x00, 0x12],
                [0x00, 0x00, 0x5e, 0x00, 0x02, self.vrid],
                vlan,
                ETH_P_IPV6,
                &self.ipv6_packet(src, dst),
            )
        }
    }

    fn v4_octets(addr: IpAddr) -> [u8; 4] {
        match addr {
            IpAddr::V4(v4) => v4.octets(),
            // A v3 advert between IPv4-mapped addresses is the IPv4 one.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or([0; 4], |v4| v4.octets()),
        }
    }

    /// `payload` with an Ethernet header (and optional 802.1Q tag), padded
    /// to the 60-byte Ethernet minimum.
    fn ethernet(
        dst: [u8; 6],
        src: [u8; 6],
        vlan: Option<u16>,
        ethertype: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(18 + payload.len());
        out.extend_from_slice(&dst);
        out.extend_from_slice(&src);
        if let Some(id) = vlan {
            out.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            out.extend_from_slice(&(id & 0x0fff).to_be_bytes());
        }
        out.extend_from_slice(&ethertype.to_be_bytes());
        out.extend_from_slice(payload);
        if out.len() < 60 {
            out.resize(60, 0);
        }
        out
    }
}
