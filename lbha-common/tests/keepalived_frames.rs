//! `parse_frame` against adverts captured from a real keepalived, and against
//! damaged copies of them.
//!
//! How the frames were captured: keepalived v2.2.7 (01/16,2022), Debian 12
//! package, on Linux 6.18. Two throw-away network namespaces were joined by a
//! veth pair, `vetha` = 10.231.0.1/24 and `vethb` = 10.231.0.2/24. keepalived
//! ran in the first one (`ip netns exec A keepalived -n -l -D -P -f CONF -p
//! k.pid -r v.pid`) and `tcpdump -i vethb -w cap.pcap -c 3 proto 112` in the
//! other. The first advert of each capture is embedded below, byte for byte,
//! starting at the Ethernet header. The MAC addresses are the random veth
//! ones; keepalived (without `use_vmac`) sends from the interface's own MAC,
//! not from 00:00:5e:00:01:VRID. veth does not pad short frames, so these are
//! shorter than the 60-byte Ethernet minimum and carry no padding.

use DropReason::{BadChecksum, BadLength, BadTtl, BadVersionType, Truncated};
use Verdict::{Dropped, NotVrrp, Same};
use lbha_common::{
    AdvertEvent, DropReason, Outcome, VridConfig,
    checksum::{checksum, pseudo_header_sum},
    event::{Family, VRID_SLOTS, VridKey, wire_v4},
    vrrp::{AUTH_NONE, AUTH_PASS, IPPROTO_VRRP, Sender, VridTable, frame_sender, parse_frame},
};
use rstest::rstest;

/// Offset of the IPv4 header in an untagged frame.
const L3: usize = 14;

/// Capture (a): VRRPv2, unicast, PASS authentication.
///
/// ```text
/// global_defs { router_id kfcap_a  vrrp_version 2 }
/// vrrp_instance VI_51 {
///     state MASTER  interface vetha  virtual_router_id 51  priority 150
///     advert_int 1
///     unicast_src_ip 10.231.0.1  unicast_peer { 10.231.0.2 }
///     authentication { auth_type PASS  auth_pass secret12345 }
///     virtual_ipaddress { 10.231.0.100/32  10.231.0.101/32 }
/// }
/// ```
///
/// keepalived logged "Truncating auth_pass to 8 characters" and sent "secret12".
const V2_UNICAST_PASS: [u8; 58] = [
    0x9e, 0xb5, 0xa6, 0x84, 0xfa, 0xf1, // dst MAC (vethb)
    0x9a, 0x71, 0x0b, 0xa9, 0xbd, 0x8a, // src MAC (vetha)
    0x08, 0x00, // IPv4
    // IHL 5, DSCP CS6 (0xc0), length 44, id 1, no flags, TTL 255, proto 112, checksum
    0x45, 0xc0, 0x00, 0x2c, 0x00, 0x01, 0x00, 0x00, 0xff, 0x70, 0xa4, 0xd0, //
    0x0a, 0xe7, 0x00, 0x01, // src 10.231.0.1
    0x0a, 0xe7, 0x00, 0x02, // dst 10.231.0.2 (the unicast peer)
    // v2 advert, vrid 51, priority 150, 2 addresses, auth PASS, 1 s, checksum
    0x21, 0x33, 0x96, 0x02, 0x01, 0x01, 0xc3, 0xb3, //
    0x0a, 0xe7, 0x00, 0x64, 0x0a, 0xe7, 0x00, 0x65, // 10.231.0.100, 10.231.0.101
    0x73, 0x65, 0x63, 0x72, 0x65, 0x74, 0x31, 0x32, // "secret12"
];

/// Capture (b): VRRPv3, unicast, 100 ms adverts (keepalived accepts
/// `advert_int 0.1` for v3 and sends 10 centiseconds).
///
/// ```text
/// global_defs { router_id kfcap_b  vrrp_version 3 }
/// vrrp_instance VI_52 {
///     version 3  state MASTER  interface vetha  virtual_router_id 52
///     priority 200  advert_int 0.1
///     unicast_src_ip 10.231.0.1  unicast_peer { 10.231.0.2 }
///     virtual_ipaddress { 10.231.0.102/32 }
/// }
/// ```
const V3_UNICAST: [u8; 46] = [
    0xb6, 0xcd, 0x53, 0x31, 0x87, 0x32, // dst MAC (vethb)
    0xbe, 0x14, 0x53, 0x4a, 0xa2, 0xed, // src MAC (vetha)
    0x08, 0x00, // IPv4
    // IHL 5, DSCP CS6, length 32, id 1, no flags, TTL 255, proto 112, checksum
    0x45, 0xc0, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0xff, 0x70, 0xa4, 0xdc, //
    0x0a, 0xe7, 0x00, 0x01, // src 10.231.0.1
    0x0a, 0xe7, 0x00, 0x02, // dst 10.231.0.2 (the unicast peer)
    // v3 advert, vrid 52, priority 200, 1 address, 10 cs, checksum (with pseudo-header)
    0x31, 0x34, 0xc8, 0x01, 0x00, 0x0a, 0xe5, 0x25, //
    0x0a, 0xe7, 0x00, 0x66, // 10.231.0.102
];

/// Capture (c): VRRPv3, multicast to 224.0.0.18.
///
/// ```text
/// global_defs { router_id kfcap_c  vrrp_version 3 }
/// vrrp_instance VI_53 {
///     version 3  state MASTER  interface vetha  virtual_router_id 53
///     priority 100  advert_int 1
///     virtual_ipaddress { 10.231.0.103/32  10.231.0.104/32 }
/// }
/// ```
const V3_MULTICAST: [u8; 50] = [
    0x01, 0x00, 0x5e, 0x00, 0x00, 0x12, // dst MAC 01:00:5e:00:00:12
    0xa2, 0x3b, 0x9c, 0xf9, 0x52, 0xb7, // src MAC (vetha)
    0x08, 0x00, // IPv4
    // IHL 5, DSCP CS6, length 36, id 1, no flags, TTL 255, proto 112, checksum
    0x45, 0xc0, 0x00, 0x24, 0x00, 0x01, 0x00, 0x00, 0xff, 0x70, 0xcf, 0xae, //
    0x0a, 0xe7, 0x00, 0x01, // src 10.231.0.1
    0xe0, 0x00, 0x00, 0x12, // dst 224.0.0.18
    // v3 advert, vrid 53, priority 100, 2 addresses, 100 cs, checksum (with pseudo-header)
    0x31, 0x35, 0x64, 0x02, 0x00, 0x64, 0x68, 0x4c, //
    0x0a, 0xe7, 0x00, 0x67, 0x0a, 0xe7, 0x00, 0x68, // 10.231.0.103, 10.231.0.104
];

/// A gratuitous ARP keepalived 2.2.7 sent for 10.231.0.100 on becoming master
/// with configuration (a), captured the same way with `tcpdump -i vethb -c 1
/// arp src host 10.231.0.100`.
const KEEPALIVED_GARP: [u8; 42] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst MAC broadcast
    0x42, 0x5f, 0x93, 0x08, 0x0d, 0x70, // src MAC (vetha)
    0x08, 0x06, // ARP
    0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // Ethernet/IPv4, request
    0x42, 0x5f, 0x93, 0x08, 0x0d, 0x70, // sender MAC
    0x0a, 0xe7, 0x00, 0x64, // sender 10.231.0.100
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // target MAC
    0x0a, 0xe7, 0x00, 0x64, // target 10.231.0.100
];

/// Not captured: a hand-built, fully valid UDP datagram 10.231.0.1:50000 ->
/// 10.231.0.2:8080 carrying "lbha-udp", with TTL 255 so that only the
/// protocol number tells it apart from an advert.
const UDP_FRAME: [u8; 50] = [
    0x9e, 0xb5, 0xa6, 0x84, 0xfa, 0xf1, // dst MAC
    0x9a, 0x71, 0x0b, 0xa9, 0xbd, 0x8a, // src MAC
    0x08, 0x00, // IPv4
    // IHL 5, length 36, DF, TTL 255, proto 17, checksum
    0x45, 0x00, 0x00, 0x24, 0xab, 0xcd, 0x40, 0x00, 0xff, 0x11, 0xba, 0x2a, //
    0x0a, 0xe7, 0x00, 0x01, // src 10.231.0.1
    0x0a, 0xe7, 0x00, 0x02, // dst 10.231.0.2
    0xc3, 0x50, 0x1f, 0x90, 0x00, 0x10, 0xa0, 0x73, // UDP header
    0x6c, 0x62, 0x68, 0x61, 0x2d, 0x75, 0x64, 0x70, // "lbha-udp"
];

/// A VRID table indexed by `VridKey::index`, as the XDP map is.
struct Table(Vec<Option<VridConfig>>);

impl Table {
    fn empty() -> Self {
        Self(vec![None; VRID_SLOTS as usize])
    }

    /// With IPv4 VRID `vrid` configured.
    fn with(self, vrid: u8, config: VridConfig) -> Self {
        self.with_key(VridKey::v4(vrid), config)
    }

    fn with_key(mut self, key: VridKey, config: VridConfig) -> Self {
        self.0[key.index() as usize] = Some(config);
        self
    }

    /// What an lbha configured like the three keepalived instances would
    /// load: the unicast ones (51, 52) with their sender as unicast peer,
    /// whose adverts alone they accept; the multicast one (53) has no peers.
    fn keepalived() -> Self {
        Self::empty()
            .with(51, peers(v2_pass(*b"secret12"), &[SENDER]))
            .with(52, peers(v3(), &[SENDER]))
            .with(53, v3())
    }

    /// The same with source checking off (`check_unicast_src = false`):
    /// no VRID restricts the source.
    fn keepalived_unfiltered() -> Self {
        Self::empty()
            .with(51, v2_pass(*b"secret12"))
            .with(52, v3())
            .with(53, v3())
    }
}

impl VridTable for Table {
    fn lookup(&self, key: VridKey) -> Option<&VridConfig> {
        self.0[key.index() as usize].as_ref()
    }
}

/// The source of every capture: the keepalived master, the unicast peer of
/// an lbha receiving its adverts.
const SENDER: [u8; 4] = [10, 231, 0, 1];
/// An address on the same link that is no instance's peer.
const NOT_A_PEER: [u8; 4] = [10, 231, 0, 66];

/// `config` accepting adverts only from `sources`.
fn peers(config: VridConfig, sources: &[[u8; 4]]) -> VridConfig {
    let sources: Vec<_> = sources.iter().copied().map(wire_v4).collect();
    config
        .with_allowed_sources(&sources)
        .expect("at most 8 peers")
}

fn v2_pass(pass: [u8; 8]) -> VridConfig {
    VridConfig::new(2, AUTH_PASS, pass)
}

fn v2_no_auth() -> VridConfig {
    VridConfig::new(2, AUTH_NONE, [0; 8])
}

fn v3() -> VridConfig {
    VridConfig::new(3, AUTH_NONE, [0; 8])
}

struct Capture {
    name: &'static str,
    frame: &'static [u8],
    expected: AdvertEvent,
}

fn v2_unicast_pass() -> Capture {
    Capture {
        name: "v2 unicast PASS",
        frame: &V2_UNICAST_PASS,
        expected: AdvertEvent {
            timestamp_ns: 0,
            src_addr: wire_v4([10, 231, 0, 1]),
            dst_addr: wire_v4([10, 231, 0, 2]),
            first_vip: wire_v4([10, 231, 0, 100]),
            ifindex: 0,
            interval_cs: 100,
            vrid: 51,
            priority: 150,
            version: 2,
            flags: 0,
            count_addr: 2,
            receive_path: 0,
            family: Family::Ipv4 as u8,
            silence_timer: 0,
            reserved: [0; 2],
        },
    }
}

fn v3_unicast_100ms() -> Capture {
    Capture {
        name: "v3 unicast",
        frame: &V3_UNICAST,
        expected: AdvertEvent {
            timestamp_ns: 0,
            src_addr: wire_v4([10, 231, 0, 1]),
            dst_addr: wire_v4([10, 231, 0, 2]),
            first_vip: wire_v4([10, 231, 0, 102]),
            ifindex: 0,
            interval_cs: 10,
            vrid: 52,
            priority: 200,
            version: 3,
            flags: 0,
            count_addr: 1,
            receive_path: 0,
            family: Family::Ipv4 as u8,
            silence_timer: 0,
            reserved: [0; 2],
        },
    }
}

fn v3_multicast() -> Capture {
    Capture {
        name: "v3 multicast",
        frame: &V3_MULTICAST,
        expected: AdvertEvent {
            timestamp_ns: 0,
            src_addr: wire_v4([10, 231, 0, 1]),
            dst_addr: wire_v4([224, 0, 0, 18]),
            first_vip: wire_v4([10, 231, 0, 103]),
            ifindex: 0,
            interval_cs: 100,
            vrid: 53,
            priority: 100,
            version: 3,
            flags: 0,
            count_addr: 2,
            receive_path: 0,
            family: Family::Ipv4 as u8,
            silence_timer: 0,
            reserved: [0; 2],
        },
    }
}

/// `parse_frame` on a byte slice.
fn parse(frame: &[u8], table: &Table) -> Outcome {
    parse_frame(frame, table)
}

#[track_caller]
fn accept(frame: &[u8], table: &Table) -> AdvertEvent {
    match parse(frame, table) {
        Outcome::Accept(event) => event,
        other => panic!("expected Accept, got {other:?} for {frame:02x?}"),
    }
}

#[track_caller]
fn assert_drop(frame: &[u8], table: &Table, reason: DropReason, what: &str) {
    assert_eq!(
        parse(frame, table),
        Outcome::Drop(reason),
        "{what}: {frame:02x?}"
    );
}

fn be16(frame: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([frame[at], frame[at + 1]]))
}

fn ip_header_len(frame: &[u8], l3: usize) -> usize {
    usize::from(frame[l3] & 0x0f) * 4
}

/// Start and length of the VRRP packet, from the IP header.
fn vrrp_span(frame: &[u8], l3: usize) -> (usize, usize) {
    let ihl = ip_header_len(frame, l3);
    (l3 + ihl, be16(frame, l3 + 2) - ihl)
}

fn ip_header_checksum_ok(frame: &[u8], l3: usize) -> bool {
    checksum(0, &frame[l3..l3 + ip_header_len(frame, l3)]) == 0
}

fn fix_ip_checksum(frame: &mut [u8], l3: usize) {
    frame[l3 + 10..l3 + 12].fill(0);
    let sum = checksum(0, &frame[l3..l3 + ip_header_len(frame, l3)]);
    frame[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
    assert!(ip_header_checksum_ok(frame, l3));
}

fn vrrp_pseudo_header_sum(frame: &[u8], l3: usize) -> u64 {
    let (_, len) = vrrp_span(frame, l3);
    let src = frame[l3 + 12..l3 + 16].try_into().unwrap();
    let dst = frame[l3 + 16..l3 + 20].try_into().unwrap();
    pseudo_header_sum(src, dst, IPPROTO_VRRP, len as u16)
}

/// Recomputes the VRRP checksum the way the version in the packet requires:
/// v3 over the pseudo-header too, v2 over the VRRP packet only.
fn fix_vrrp_checksum(frame: &mut [u8], l3: usize) {
    let (start, len) = vrrp_span(frame, l3);
    frame[start + 6..start + 8].fill(0);
    let initial = if frame[start] >> 4 == 3 {
        vrrp_pseudo_header_sum(frame, l3)
    } else {
        0
    };
    let sum = checksum(initial, &frame[start..start + len]);
    frame[start + 6..start + 8].copy_from_slice(&sum.to_be_bytes());
}

/// The frame with a VLAN tag (TPID `tpid`) inserted after the MAC addresses.
fn tagged(frame: &[u8], tpid: u16, tci: u16) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    out.extend_from_slice(&tpid.to_be_bytes());
    out.extend_from_slice(&tci.to_be_bytes());
    out.extend_from_slice(&frame[12..]);
    out
}

/// The frame with IPv4 options inserted (IHL, total length and header
/// checksum adjusted). The VRRP packet, and so its checksum, is unchanged.
fn with_ip_options(frame: &[u8], options: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    assert_eq!(frame[L3], 0x45);
    let mut out = frame[..L3 + 20].to_vec();
    out.extend_from_slice(options);
    out.extend_from_slice(&frame[L3 + 20..]);
    out[L3] = 0x40 | (5 + options.len() / 4) as u8;
    let total = (be16(frame, L3 + 2) + options.len()) as u16;
    out[L3 + 2..L3 + 4].copy_from_slice(&total.to_be_bytes());
    fix_ip_checksum(&mut out, L3);
    out
}

fn padded(frame: &[u8], len: usize, fill: u8) -> Vec<u8> {
    let mut out = frame.to_vec();
    out.resize(len, fill);
    out
}

/// `frame` with the IPv4 header bytes from `at` (an offset in the header) set
/// to `bytes` and the header checksum fixed, so that only the change itself
/// can be what the parser objects to.
fn ip_set(frame: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut f = ip_set_raw(frame, at, bytes);
    fix_ip_checksum(&mut f, L3);
    f
}

/// `ip_set` without fixing the header checksum: for headers whose checksum
/// cannot be computed (IHL out of range) or is the thing being broken.
fn ip_set_raw(frame: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[L3 + at..L3 + at + bytes.len()].copy_from_slice(bytes);
    f
}

/// `frame` with one bit of the IPv4 header byte `at` flipped, checksum not fixed.
fn ip_flip(frame: &[u8], at: usize) -> Vec<u8> {
    ip_set_raw(frame, at, &[frame[L3 + at] ^ 0x01])
}

/// `frame` with the IPv4 total length moved by `delta` (header checksum fixed).
fn ip_length_plus(frame: &[u8], delta: isize) -> Vec<u8> {
    let total = be16(frame, L3 + 2).checked_add_signed(delta).unwrap() as u16;
    ip_set(frame, 2, &total.to_be_bytes())
}

/// `frame` with the VRRP byte `at` set to `value` and the VRRP checksum fixed.
fn vrrp_set(frame: &[u8], at: usize, value: u8) -> Vec<u8> {
    let mut f = frame.to_vec();
    let (start, _) = vrrp_span(&f, L3);
    f[start + at] = value;
    fix_vrrp_checksum(&mut f, L3);
    f
}

/// The VRRP header byte `at` of `frame`.
fn vrrp_byte(frame: &[u8], at: usize) -> u8 {
    frame[vrrp_span(frame, L3).0 + at]
}

/// `frame` with another EtherType, the bytes behind it unchanged.
fn with_ethertype(frame: &[u8], ethertype: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
    f
}

const ROUTER_ALERT: [u8; 4] = [0x94, 0x04, 0x00, 0x00];

/// The largest header IHL allows: 40 bytes of options (NOPs, then EOL).
fn longest_options() -> [u8; 40] {
    let mut longest = [0x01; 40];
    longest[39] = 0x00;
    longest
}

/// What the parser must say about a changed capture.
#[derive(Clone, Copy)]
enum Verdict {
    /// Accept, with exactly the event of the capture as sent.
    Same,
    Dropped(DropReason),
    NotVrrp,
}

/// One change to a captured advert, and the verdict on the changed frame
/// against the VRID table of the three keepalived instances. Each row runs on
/// each capture; the test name says which row and which capture failed.
#[rstest]
// A broken IPv4 header checksum, in fields no earlier rule looks at.
#[case::ip_checksum_tos(|f: &[u8]| ip_flip(f, 1), Dropped(BadChecksum))]
#[case::ip_checksum_id_high(|f: &[u8]| ip_flip(f, 4), Dropped(BadChecksum))]
#[case::ip_checksum_id_low(|f: &[u8]| ip_flip(f, 5), Dropped(BadChecksum))]
#[case::ip_checksum_high(|f: &[u8]| ip_flip(f, 10), Dropped(BadChecksum))]
#[case::ip_checksum_low(|f: &[u8]| ip_flip(f, 11), Dropped(BadChecksum))]
#[case::ip_checksum_src_first(|f: &[u8]| ip_flip(f, 12), Dropped(BadChecksum))]
#[case::ip_checksum_src_last(|f: &[u8]| ip_flip(f, 15), Dropped(BadChecksum))]
#[case::ip_checksum_dst_first(|f: &[u8]| ip_flip(f, 16), Dropped(BadChecksum))]
#[case::ip_checksum_dst_last(|f: &[u8]| ip_flip(f, 19), Dropped(BadChecksum))]
#[case::ip_checksum_zero(|f: &[u8]| ip_set_raw(f, 10, &[0, 0]), Dropped(BadChecksum))]
// An IP total length beyond the frame.
#[case::ip_length_plus_1(|f: &[u8]| ip_length_plus(f, 1), Dropped(Truncated))]
#[case::ip_length_plus_4(|f: &[u8]| ip_length_plus(f, 4), Dropped(Truncated))]
#[case::ip_length_plus_8(|f: &[u8]| ip_length_plus(f, 8), Dropped(Truncated))]
#[case::ip_length_ffff(|f: &[u8]| ip_set(f, 2, &[0xff, 0xff]), Dropped(Truncated))]
// Malformed IP header lengths: IHL below the minimum or past the end of the
// packet (no checksum to fix), a total length too short for a VRRP header.
#[case::ihl_0(|f: &[u8]| ip_set_raw(f, 0, &[0x40]), Dropped(Truncated))]
#[case::ihl_4(|f: &[u8]| ip_set_raw(f, 0, &[0x44]), Dropped(Truncated))]
#[case::ihl_15(|f: &[u8]| ip_set_raw(f, 0, &[0x4f]), Dropped(Truncated))]
#[case::ip_length_27(|f: &[u8]| ip_set(f, 2, &27u16.to_be_bytes()), Dropped(Truncated))]
// A VRRP length disagreeing with the address count (VRRP checksum fixed).
#[case::count_minus_1(|f: &[u8]| vrrp_set(f, 3, vrrp_byte(f, 3) - 1), Dropped(BadLength))]
#[case::count_plus_1(|f: &[u8]| vrrp_set(f, 3, vrrp_byte(f, 3) + 1), Dropped(BadLength))]
#[case::count_0(|f: &[u8]| vrrp_set(f, 3, 0), Dropped(BadLength))]
#[case::count_255(|f: &[u8]| vrrp_set(f, 3, 255), Dropped(BadLength))]
// The IP length cuts the last address off (the frame still holds it).
#[case::ip_length_minus_4(
    |f: &[u8]| {
        let mut f = ip_length_plus(f, -4);
        fix_vrrp_checksum(&mut f, L3);
        f
    },
    Dropped(BadLength)
)]
// Not an advertisement (RFC 5798 knows only type 1).
#[case::type_0(|f: &[u8]| vrrp_set(f, 0, vrrp_byte(f, 0) & 0xf0), Dropped(BadVersionType))]
#[case::type_2(|f: &[u8]| vrrp_set(f, 0, vrrp_byte(f, 0) & 0xf0 | 2), Dropped(BadVersionType))]
#[case::type_3(|f: &[u8]| vrrp_set(f, 0, vrrp_byte(f, 0) & 0xf0 | 3), Dropped(BadVersionType))]
#[case::type_15(|f: &[u8]| vrrp_set(f, 0, vrrp_byte(f, 0) & 0xf0 | 15), Dropped(BadVersionType))]
// Not VRRP version 2 or 3.
#[case::version_0(|f: &[u8]| vrrp_set(f, 0, 0x01), Dropped(BadVersionType))]
#[case::version_1(|f: &[u8]| vrrp_set(f, 0, 0x11), Dropped(BadVersionType))]
#[case::version_4(|f: &[u8]| vrrp_set(f, 0, 0x41), Dropped(BadVersionType))]
#[case::version_15(|f: &[u8]| vrrp_set(f, 0, 0xf1), Dropped(BadVersionType))]
// Fragments: MF, a non-zero offset (a last fragment), both; DF is no fragment.
#[case::fragment_more(|f: &[u8]| ip_set(f, 6, &0x2000u16.to_be_bytes()), Dropped(Truncated))]
#[case::fragment_last(|f: &[u8]| ip_set(f, 6, &0x0001u16.to_be_bytes()), Dropped(Truncated))]
#[case::fragment_middle(|f: &[u8]| ip_set(f, 6, &0x2001u16.to_be_bytes()), Dropped(Truncated))]
#[case::fragment_offset_max(|f: &[u8]| ip_set(f, 6, &0x1fffu16.to_be_bytes()), Dropped(Truncated))]
#[case::dont_fragment(|f: &[u8]| ip_set(f, 6, &[0x40]), Same)]
// VLAN tags are skipped.
#[case::tagged_8021q(|f: &[u8]| tagged(f, 0x8100, 100), Same)]
#[case::tagged_8021q_pcp_7_vid_4094(|f: &[u8]| tagged(f, 0x8100, 0xe000 | 0x0ffe), Same)]
#[case::tagged_8021ad(|f: &[u8]| tagged(f, 0x88a8, 7), Same)]
// IP options are skipped, and the rules still hold behind them.
#[case::ip_option_router_alert(|f: &[u8]| with_ip_options(f, &ROUTER_ALERT), Same)]
#[case::ip_options_40_bytes(|f: &[u8]| with_ip_options(f, &longest_options()), Same)]
#[case::ip_options_broken_checksum(
    |f: &[u8]| ip_flip(&with_ip_options(f, &ROUTER_ALERT), 21),
    Dropped(BadChecksum)
)]
// Ethernet padding is ignored.
#[case::padded_to_60(|f: &[u8]| padded(f, 60, 0x00), Same)]
#[case::padded_to_64(|f: &[u8]| padded(f, 64, 0xa5), Same)]
#[case::padded_by_1(|f: &[u8]| padded(f, f.len() + 1, 0xff), Same)]
#[case::padded_to_1514(|f: &[u8]| padded(f, 1514, 0x00), Same)]
#[case::tagged_and_padded(|f: &[u8]| padded(&tagged(f, 0x8100, 100), 64, 0), Same)]
// Other traffic: another EtherType (IPv6) with the same bytes behind it, IP
// version 6 in an IPv4 EtherType, the same packet with another IP protocol.
#[case::ethertype_ipv6(|f: &[u8]| with_ethertype(f, 0x86dd), NotVrrp)]
#[case::ip_version_6(|f: &[u8]| ip_set_raw(f, 0, &[0x65]), NotVrrp)]
#[case::proto_udp(|f: &[u8]| ip_set(f, 9, &[17]), NotVrrp)]
#[case::proto_tcp(|f: &[u8]| ip_set(f, 9, &[6]), NotVrrp)]
#[case::proto_icmp(|f: &[u8]| ip_set(f, 9, &[1]), NotVrrp)]
#[case::proto_ah(|f: &[u8]| ip_set(f, 9, &[51]), NotVrrp)]
#[case::proto_113(|f: &[u8]| ip_set(f, 9, &[113]), NotVrrp)]
fn changed_capture(
    #[case] change: fn(&[u8]) -> Vec<u8>,
    #[case] verdict: Verdict,
    #[values(v2_unicast_pass(), v3_unicast_100ms(), v3_multicast())] c: Capture,
) {
    let f = change(c.frame);
    let expected = match verdict {
        Same => Outcome::Accept(c.expected),
        Dropped(reason) => Outcome::Drop(reason),
        NotVrrp => Outcome::NotVrrp,
    };
    assert_eq!(
        parse(&f, &Table::keepalived()),
        expected,
        "{}: {f:02x?}",
        c.name
    );
}

#[rstest]
fn keepalived_capture_is_accepted(
    #[values(v2_unicast_pass(), v3_unicast_100ms(), v3_multicast())] c: Capture,
) {
    assert_eq!(accept(c.frame, &Table::keepalived()), c.expected);
}

/// What keepalived 2.2.7 actually puts on the wire, which the parser (and the
/// advert encoder) must agree with.
#[rstest]
fn keepalived_wire_format(
    #[values(v2_unicast_pass(), v3_unicast_100ms(), v3_multicast())] c: Capture,
) {
    let f = c.frame;
    // Unicast adverts too are sent with TTL 255, and all with DSCP CS6.
    assert_eq!(f[L3 + 8], 255, "{}: TTL", c.name);
    assert_eq!(f[L3 + 1], 0xc0, "{}: TOS", c.name);
    // No IP options, DF clear, not fragmented, IP ids count from 1.
    assert_eq!(f[L3], 0x45, "{}", c.name);
    assert_eq!(be16(f, L3 + 6), 0, "{}: flags/fragment offset", c.name);
    assert_eq!(be16(f, L3 + 4), 1, "{}: IP id", c.name);
    // No Ethernet padding on veth: the frame ends with the IP packet.
    assert_eq!(f.len(), L3 + be16(f, L3 + 2), "{}", c.name);
    assert!(ip_header_checksum_ok(f, L3), "{}", c.name);

    let (start, len) = vrrp_span(f, L3);
    let plain = checksum(0, &f[start..start + len]);
    let with_pseudo = checksum(vrrp_pseudo_header_sum(f, L3), &f[start..start + len]);
    if f[start] >> 4 == 3 {
        // RFC 5798 5.2.8: v3 covers the pseudo-header, even for unicast.
        assert_eq!(with_pseudo, 0, "{}", c.name);
        assert_ne!(plain, 0, "{}", c.name);
    } else {
        assert_eq!(plain, 0, "{}", c.name);
        assert_ne!(with_pseudo, 0, "{}", c.name);
    }
}

#[test]
fn keepalived_truncates_auth_pass_to_8_bytes() {
    // auth_pass "secret12345" was cut to 8 bytes, not NUL terminated.
    assert_eq!(&V2_UNICAST_PASS[50..58], b"secret12");
}

#[rstest]
fn configured_version_must_match(
    #[values(v2_unicast_pass(), v3_unicast_100ms(), v3_multicast())] c: Capture,
) {
    let v3_configured = Table::empty()
        .with(51, VridConfig::new(3, AUTH_PASS, *b"secret12"))
        .with(52, v3())
        .with(53, v3());
    let v2_configured = Table::empty()
        .with(51, v2_pass(*b"secret12"))
        .with(52, v2_no_auth())
        .with(53, v2_no_auth());
    let wrong = if c.expected.version == 2 {
        &v3_configured
    } else {
        &v2_configured
    };
    assert_drop(c.frame, wrong, DropReason::BadVersionType, c.name);
}

#[rstest]
fn unconfigured_vrid_is_unknown(
    #[values(v2_unicast_pass(), v3_unicast_100ms(), v3_multicast())] c: Capture,
) {
    assert_drop(c.frame, &Table::empty(), DropReason::UnknownVrid, c.name);
    // Every VRID except the advert's own is configured.
    let mut all_but = Table::empty();
    for vrid in 0..=255 {
        if vrid != c.expected.vrid {
            all_but = all_but.with(vrid, v3());
        }
    }
    assert_drop(c.frame, &all_but, DropReason::UnknownVrid, c.name);
}

/// The configuration disagrees with the (unchanged) PASS advert.
#[rstest]
#[case::no_auth_configured(v2_no_auth())]
#[case::other_password(v2_pass(*b"secret13"))]
#[case::case_differs(v2_pass(*b"Secret12"))]
#[case::prefix_of_the_password(v2_pass(*b"secret\0\0"))]
#[case::empty_password(v2_pass([0; 8]))]
fn v2_pass_configuration_must_match(#[case] config: VridConfig) {
    let table = Table::empty().with(51, config);
    assert_drop(
        &V2_UNICAST_PASS,
        &table,
        DropReason::AuthMismatch,
        "unchanged advert",
    );
}

/// Start of the VRRP packet in V2_UNICAST_PASS, and of its PASS data.
const V2_VRRP: usize = L3 + 20;
const V2_PASS_DATA: usize = V2_VRRP + 16;

/// V2_UNICAST_PASS with bytes from `at` set to `bytes`, the VRRP checksum
/// kept valid, so only the authentication can be wrong.
fn v2_pass_advert_with(at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut f = V2_UNICAST_PASS.to_vec();
    f[at..at + bytes.len()].copy_from_slice(bytes);
    fix_vrrp_checksum(&mut f, L3);
    f
}

/// V2_UNICAST_PASS with byte `i` of its password changed (case flipped for
/// the letters).
fn v2_pass_byte_flipped(i: usize) -> Vec<u8> {
    let at = V2_PASS_DATA + i;
    v2_pass_advert_with(at, &[V2_UNICAST_PASS[at] ^ 0x20])
}

/// The advert is changed, its checksum kept valid, against an instance
/// configured with the advert's own password.
#[rstest]
#[case::auth_type_none(v2_pass_advert_with(V2_VRRP + 4, &[AUTH_NONE]))]
#[case::no_auth_at_all(v2_no_auth_advert())]
// RFC 2338 IP Authentication Header, removed in RFC 3768.
#[case::auth_type_ah(v2_pass_advert_with(V2_VRRP + 4, &[2]))]
#[case::password_byte_0_differs(v2_pass_byte_flipped(0))]
#[case::password_byte_1_differs(v2_pass_byte_flipped(1))]
#[case::password_byte_2_differs(v2_pass_byte_flipped(2))]
#[case::password_byte_3_differs(v2_pass_byte_flipped(3))]
#[case::password_byte_4_differs(v2_pass_byte_flipped(4))]
#[case::password_byte_5_differs(v2_pass_byte_flipped(5))]
#[case::password_byte_6_differs(v2_pass_byte_flipped(6))]
#[case::password_byte_7_differs(v2_pass_byte_flipped(7))]
#[case::advert_password_shorter(v2_pass_advert_with(V2_PASS_DATA, b"secret1\0"))]
fn v2_pass_advert_must_match(#[case] advert: Vec<u8>) {
    let ok = Table::empty().with(51, v2_pass(*b"secret12"));
    assert_drop(&advert, &ok, DropReason::AuthMismatch, "changed advert");
}

/// What an instance without authentication sends: V2_UNICAST_PASS with auth
/// type NONE and no PASS data.
fn v2_no_auth_advert() -> Vec<u8> {
    let mut f = v2_pass_advert_with(V2_VRRP + 4, &[AUTH_NONE]);
    f[V2_PASS_DATA..V2_PASS_DATA + 8].fill(0);
    fix_vrrp_checksum(&mut f, L3);
    f
}

#[test]
fn v2_without_authentication_is_accepted_where_none_is_configured() {
    let table = Table::empty().with(51, v2_no_auth());
    assert_eq!(
        accept(&v2_no_auth_advert(), &table),
        v2_unicast_pass().expected
    );
}

#[rstest]
fn flipped_vrrp_byte_is_bad_checksum(
    #[values(v2_unicast_pass(), v3_unicast_100ms(), v3_multicast())] c: Capture,
) {
    // Only this VRID, so that any change to it makes it unknown.
    let vrid = c.expected.vrid;
    let table = Table::empty().with(vrid, Table::keepalived().0[usize::from(vrid)].unwrap());
    let (start, len) = vrrp_span(c.frame, L3);
    for i in start..start + len {
        for flip in [0x01, 0x80, 0xff] {
            let mut f = c.frame.to_vec();
            f[i] ^= flip;
            let expected = match i - start {
                // Version/type, VRID and address count are judged before
                // the checksum (unknown VRIDs must pass untouched).
                0 => DropReason::BadVersionType,
                1 => DropReason::UnknownVrid,
                3 => DropReason::BadLength,
                // Priority, auth type/interval, checksum, addresses and
                // PASS data are all covered by the checksum, which is
                // checked before the PASS data.
                _ => DropReason::BadChecksum,
            };
            assert_drop(
                &f,
                &table,
                expected,
                &format!("{}: byte {i} ^ {flip:#x}", c.name),
            );
        }
    }
}

#[rstest]
fn v3_checksum_covers_the_pseudo_header(
    #[values(v2_unicast_pass(), v3_unicast_100ms(), v3_multicast())] c: Capture,
) {
    // Unfiltered: the changed source is nobody's peer.
    let table = Table::keepalived_unfiltered();
    for (field, addr) in [(L3 + 12, [10, 231, 0, 9]), (L3 + 16, [10, 231, 0, 3])] {
        let mut f = c.frame.to_vec();
        f[field..field + 4].copy_from_slice(&addr);
        fix_ip_checksum(&mut f, L3);
        if c.expected.version == 3 {
            assert_drop(&f, &table, DropReason::BadChecksum, c.name);
            fix_vrrp_checksum(&mut f, L3);
        }
        let event = accept(&f, &table);
        assert_eq!(
            if field == L3 + 12 {
                event.src_addr
            } else {
                event.dst_addr
            },
            wire_v4(addr)
        );
    }
}

/// Every prefix of every frame (the real ones, tagged and with options) is
/// rejected without a panic: NotVrrp while the IPv4 header is incomplete,
/// Truncated once it is there but the packet it announces is not.
#[rstest]
fn every_truncation_is_rejected(
    #[values(v2_unicast_pass(), v3_unicast_100ms(), v3_multicast())] c: Capture,
) {
    let table = Table::keepalived();
    let variants = [
        (c.frame.to_vec(), L3, "as captured"),
        (tagged(c.frame, 0x8100, 100), L3 + 4, "802.1Q"),
        (tagged(c.frame, 0x88a8, 100), L3 + 4, "802.1ad"),
        (with_ip_options(c.frame, &ROUTER_ALERT), L3, "IP options"),
    ];
    for (frame, l3, variant) in variants {
        accept(&frame, &table);
        for len in 0..frame.len() {
            let expected = if len < l3 + 20 {
                Outcome::NotVrrp
            } else {
                Outcome::Drop(DropReason::Truncated)
            };
            assert_eq!(
                parse(&frame[..len], &table),
                expected,
                "{} {variant} cut to {len}",
                c.name
            );
        }
    }
}

/// The options helper the table uses really lengthens the header.
#[rstest]
fn ip_options_lengthen_the_header(
    #[values(v2_unicast_pass(), v3_unicast_100ms(), v3_multicast())] c: Capture,
) {
    assert_eq!(with_ip_options(c.frame, &ROUTER_ALERT)[L3], 0x46);
    assert_eq!(with_ip_options(c.frame, &longest_options())[L3], 0x4f);
}

#[test]
fn other_traffic_is_not_vrrp() {
    let table = Table::keepalived();
    assert_eq!(parse(&UDP_FRAME, &table), Outcome::NotVrrp);
    assert_eq!(parse(&KEEPALIVED_GARP, &table), Outcome::NotVrrp);
    assert_eq!(
        parse(&tagged(&KEEPALIVED_GARP, 0x8100, 10), &table),
        Outcome::NotVrrp
    );
    assert_eq!(
        parse(&padded(&KEEPALIVED_GARP, 60, 0), &table),
        Outcome::NotVrrp
    );
}

/// No single-byte change to a real advert makes the parser panic, and none
/// past the MAC addresses yields an Accept: the IP header checksum covers the
/// IP header and the VRRP checksum the rest.
#[rstest]
fn single_byte_changes_never_panic_or_pass(
    #[values(v2_unicast_pass(), v3_unicast_100ms(), v3_multicast())] c: Capture,
) {
    let table = Table::keepalived();
    for variant in [c.frame.to_vec(), padded(c.frame, 64, 0)] {
        let ip_end = L3 + be16(c.frame, L3 + 2);
        for (i, &original) in variant.iter().enumerate() {
            for value in [
                0x00,
                0x01,
                0x45,
                0x7f,
                0x80,
                0x81,
                0xfe,
                0xff,
                original ^ 0x01,
            ] {
                if value == original {
                    continue;
                }
                let mut f = variant.clone();
                f[i] = value;
                let outcome = parse(&f, &table);
                if i < 12 || i >= ip_end {
                    // MAC addresses and padding are nobody's business.
                    assert_eq!(
                        outcome,
                        Outcome::Accept(c.expected),
                        "{}: byte {i} = {value:#x}",
                        c.name
                    );
                } else {
                    assert!(
                        !matches!(outcome, Outcome::Accept(_)),
                        "{}: byte {i} = {value:#x} accepted",
                        c.name
                    );
                }
            }
        }
    }
}

#[rstest]
fn the_sender_of_a_dropped_frame_is_read_where_it_can_be(
    #[values(v2_unicast_pass(), v3_unicast_100ms(), v3_multicast())] c: Capture,
) {
    {
        let expected = Sender {
            family: Some(Family::Ipv4),
            src_addr: c.expected.src_addr,
            vrid: c.expected.vrid,
        };
        assert_eq!(frame_sender(c.frame), expected, "{}", c.name);
        assert_eq!(
            frame_sender(&tagged(c.frame, 0x8100, 10)[..]),
            expected,
            "{} tagged",
            c.name
        );
        // The VRID follows the options, not the first 20 bytes.
        let f = with_ip_options(c.frame, &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(frame_sender(&f[..]), expected, "{} with options", c.name);
        // Cut before the VRID: the source alone.
        assert_eq!(
            frame_sender(&c.frame[..L3 + 21]),
            Sender {
                family: Some(Family::Ipv4),
                src_addr: c.expected.src_addr,
                vrid: 0
            },
            "{} cut in the VRRP header",
            c.name
        );
        // Cut inside the IPv4 header: nothing.
        assert_eq!(
            frame_sender(&c.frame[..L3 + 19]),
            Sender::default(),
            "{} cut in the IP header",
            c.name
        );
    }
}

#[test]
fn a_frame_that_is_not_ipv4_has_no_sender() {
    assert_eq!(frame_sender(&KEEPALIVED_GARP[..]), Sender::default());
}

/// `frame` as if sent from `src`: the IPv4 header checksum and (v3, whose
/// checksum covers the addresses) the VRRP checksum fixed, so that only the
/// source differs.
fn sent_from(frame: &[u8], src: [u8; 4]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[L3 + 12..L3 + 16].copy_from_slice(&src);
    fix_ip_checksum(&mut f, L3);
    fix_vrrp_checksum(&mut f, L3);
    f
}

/// Another host's address, for peer lists that leave room for the sender.
fn host(i: u8) -> [u8; 4] {
    [10, 231, 0, 10 + i]
}

/// With unicast peers configured, an advert from one of them is accepted,
/// wherever it stands in the list (up to its full 8 entries).
#[rstest]
#[case::the_only_peer(vec![SENDER])]
#[case::first_of_two(vec![SENDER, host(1)])]
#[case::last_of_three(vec![host(1), host(2), SENDER])]
#[case::last_of_eight((1..8).map(host).chain([SENDER]).collect())]
fn an_advert_from_a_unicast_peer_is_accepted(
    #[case] sources: Vec<[u8; 4]>,
    #[values(v2_unicast_pass(), v3_unicast_100ms(), v3_multicast())] c: Capture,
) {
    let config = Table::keepalived_unfiltered().0[usize::from(c.expected.vrid)].unwrap();
    let table = Table::empty().with(c.expected.vrid, peers(config, &sources));
    assert_eq!(accept(c.frame, &table), c.expected, "{}", c.name);
}

/// A well-formed advert from an address that is not a peer is dropped as
/// an unknown source; the multicast instance has no peers and takes it.
#[rstest]
fn an_advert_from_another_source_is_an_unknown_source(
    #[values(v2_unicast_pass(), v3_unicast_100ms(), v3_multicast())] c: Capture,
) {
    let spoofed = sent_from(c.frame, NOT_A_PEER);
    let unicast = c.expected.dst_addr != wire_v4([224, 0, 0, 18]);
    if unicast {
        assert_drop(
            &spoofed,
            &Table::keepalived(),
            DropReason::UnknownSource,
            c.name,
        );
    } else {
        let event = accept(&spoofed, &Table::keepalived());
        assert_eq!(event.src_addr, wire_v4(NOT_A_PEER), "{}", c.name);
    }
    // The capture itself, against peers that do not include its sender.
    let config = Table::keepalived_unfiltered().0[usize::from(c.expected.vrid)].unwrap();
    let others: Vec<[u8; 4]> = (1..=8).map(host).collect();
    let table = Table::empty().with(c.expected.vrid, peers(config, &others));
    assert_drop(c.frame, &table, DropReason::UnknownSource, c.name);
    // One octet off is another host.
    let near = Table::empty().with(c.expected.vrid, peers(config, &[[10, 231, 0, 2]]));
    assert_drop(c.frame, &near, DropReason::UnknownSource, c.name);
}

/// Without allowed sources (source checking off, or no peers at all) an
/// advert from any address is accepted.
#[rstest]
fn without_allowed_sources_any_source_is_accepted(
    #[values(v2_unicast_pass(), v3_unicast_100ms(), v3_multicast())] c: Capture,
    #[values(NOT_A_PEER, [192, 0, 2, 1], [0, 0, 0, 0])] src: [u8; 4],
) {
    let event = accept(&sent_from(c.frame, src), &Table::keepalived_unfiltered());
    assert_eq!(
        event,
        AdvertEvent {
            src_addr: wire_v4(src),
            ..c.expected
        },
        "{}",
        c.name
    );
}

/// The source is judged last, as keepalived judges `check_unicast_src`: a
/// malformed or foreign advert from a stranger keeps its own reason.
#[rstest]
#[case::bad_ip_checksum(|f: &[u8]| ip_flip(f, 4), DropReason::BadChecksum)]
#[case::bad_length(|f: &[u8]| vrrp_set(f, 3, 0), DropReason::BadLength)]
#[case::bad_version(|f: &[u8]| vrrp_set(f, 0, 0x41), DropReason::BadVersionType)]
#[case::fragment(|f: &[u8]| ip_set(f, 6, &0x2000u16.to_be_bytes()), DropReason::Truncated)]
#[case::foreign_vrid(|f: &[u8]| vrrp_set(f, 1, 99), DropReason::UnknownVrid)]
fn a_strangers_malformed_advert_keeps_its_reason(
    #[case] change: fn(&[u8]) -> Vec<u8>,
    #[case] reason: DropReason,
    #[values(v2_unicast_pass(), v3_unicast_100ms())] c: Capture,
) {
    let f = change(&sent_from(c.frame, NOT_A_PEER));
    assert_drop(&f, &Table::keepalived(), reason, c.name);
}

/// A TTL other than 255 (RFC 3768 7.1, RFC 5798 7.1) on a multicast advert:
/// it came from beyond the link.
#[test]
fn ttl_must_be_255_on_multicast_adverts() {
    let c = v3_multicast();
    for ttl in [0, 1, 64, 254] {
        assert_drop(
            &ip_set(c.frame, 8, &[ttl]),
            &Table::keepalived(),
            BadTtl,
            c.name,
        );
    }
}

/// keepalived checks no TTL on unicast adverts: they may cross a router,
/// and its `unicast_ttl` sends them with any TTL. Neither does lbha.
#[rstest]
fn unicast_adverts_are_accepted_with_any_ttl(
    #[values(v2_unicast_pass(), v3_unicast_100ms())] c: Capture,
) {
    for ttl in [0, 1, 64, 254] {
        assert_eq!(
            parse(&ip_set(c.frame, 8, &[ttl]), &Table::keepalived()),
            Outcome::Accept(c.expected),
            "{} with TTL {ttl}",
            c.name
        );
    }
}

#[test]
fn a_strangers_wrong_password_is_an_auth_mismatch() {
    let f = sent_from(&v2_pass_byte_flipped(0), NOT_A_PEER);
    assert_drop(&f, &Table::keepalived(), DropReason::AuthMismatch, "PASS");
}
