//! `parse_frame` (the XDP view) and `check_ipv6_vrrp` (the raw socket's)
//! against VRRPv3-over-IPv6 adverts captured from a real keepalived, and
//! against damaged copies of them.
//!
//! How the frames were captured: keepalived v2.2.7 (01/16,2022), Debian 12
//! package, on Linux 6.18. Two throw-away network namespaces joined by a
//! veth pair, `vetha` = fd00:231::1/64 and `vethb` = fd00:231::2/64 (both
//! `nodad`, plus their link-local addresses). keepalived ran in the first
//! (`ip netns exec A keepalived -n -l -D -P -f CONF -p k.pid -r v.pid`), and
//! in the other a Python `AF_PACKET` socket on `vethb` printed incoming
//! frames of ethertype 0x86dd and next header 112 (no tcpdump on the
//! machine). The first advert of each capture is embedded below, byte for
//! byte from the Ethernet header. keepalived sends from the interface's
//! own MAC (no `use_vmac`); veth does not pad.
//!
//! Measured with these captures: keepalived 2.2.7 sends multicast IPv6
//! adverts with hop limit 255 but unicast ones with 64 (it sets only
//! IPV6_MULTICAST_HOPS), and a keepalived BACKUP with the mirrored unicast
//! configuration accepts them and stays BACKUP; hence the parser's rule
//! that the hop limit must be 255 on multicast adverts only.

use DropReason::{BadChecksum, BadLength, BadTtl, BadVersionType, Truncated, UnknownSource};
use lbha_common::{
    AdvertEvent, DropReason, Outcome, VridConfig,
    checksum::{checksum, pseudo_header_sum_v6},
    event::{Family, VRID_SLOTS, VridKey},
    vrrp::{
        AUTH_NONE, IPPROTO_VRRP, Sender, VridTable, frame_sender, ipv6_header, parse_frame,
        parse_ipv6,
    },
};
use rstest::rstest;

/// Offset of the IPv6 header in an untagged frame.
const L3: usize = 14;
/// Offset of the VRRP packet in an untagged frame without extension headers.
const L4: usize = L3 + 40;

/// Capture (d): multicast to ff02::12, VIPs link-local first, as the RFC
/// requires.
///
/// ```text
/// global_defs { router_id kfcap_d }
/// vrrp_instance VI_61 {
///     state MASTER  interface vetha  virtual_router_id 61  priority 150
///     advert_int 1
///     virtual_ipaddress { fe80::61/64  fd00:231::61/64 }
/// }
/// ```
const V3_MULTICAST_V6: [u8; 94] = [
    0x33, 0x33, 0x00, 0x00, 0x00, 0x12, // dst MAC 33:33:00:00:00:12
    0xe2, 0x20, 0x00, 0xde, 0xdb, 0x5b, // src MAC (vetha)
    0x86, 0xdd, // IPv6
    // version 6, traffic class 0xc0, flow label, payload 40, next header 112, hop limit 255
    0x6c, 0x00, 0x2b, 0xa5, 0x00, 0x28, 0x70, 0xff, //
    // src fe80::e020:ff:fede:db5b (vetha's link-local)
    0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe0, 0x20, 0x00, 0xff, 0xfe, 0xde, 0xdb, 0x5b,
    // dst ff02::12
    0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x12,
    // v3 advert, vrid 61, priority 150, 2 addresses, 100 cs, checksum
    0x31, 0x3d, 0x96, 0x02, 0x00, 0x64, 0x80, 0x5e, //
    // fe80::61, fd00:231::61
    0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x61,
    0xfd, 0x00, 0x02, 0x31, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x61,
];

/// Capture (e): unicast between global addresses, 100 ms adverts.
///
/// ```text
/// global_defs { router_id kfcap_e }
/// vrrp_instance VI_62 {
///     state MASTER  interface vetha  virtual_router_id 62  priority 200
///     advert_int 0.1  native_ipv6
///     unicast_src_ip fd00:231::1  unicast_peer { fd00:231::2 }
///     virtual_ipaddress { fd00:231::62/64 }
/// }
/// ```
const V3_UNICAST_V6: [u8; 78] = [
    0x9a, 0xb0, 0xb4, 0x20, 0x39, 0xc5, // dst MAC (vethb)
    0xc6, 0xf6, 0x72, 0x66, 0x7d, 0xbf, // src MAC (vetha)
    0x86, 0xdd, // IPv6
    // version 6, traffic class 0xc0, flow label, payload 24, next header 112, hop limit 64 (!)
    0x6c, 0x0c, 0xfe, 0xf5, 0x00, 0x18, 0x70, 0x40, //
    // src fd00:231::1
    0xfd, 0x00, 0x02, 0x31, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    // dst fd00:231::2 (the unicast peer)
    0xfd, 0x00, 0x02, 0x31, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
    // v3 advert, vrid 62, priority 200, 1 address, 10 cs, checksum
    0x31, 0x3e, 0xc8, 0x01, 0x00, 0x0a, 0x08, 0x33, //
    // fd00:231::62
    0xfd, 0x00, 0x02, 0x31, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x62,
];

fn addr(text: &str) -> [u8; 16] {
    text.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

/// A VRID table indexed by `VridKey::index`, as the XDP map is.
struct Table(Vec<Option<VridConfig>>);

impl Table {
    fn empty() -> Self {
        Self(vec![None; VRID_SLOTS as usize])
    }

    fn with(mut self, key: VridKey, config: VridConfig) -> Self {
        self.0[key.index() as usize] = Some(config);
        self
    }

    /// As an lbha configured like the keepalived instances would load it:
    /// 61 (multicast) from anyone, 62 (unicast) from its peer only, both
    /// over IPv6.
    fn keepalived() -> Self {
        Self::empty().with(VridKey::v6(61), v3()).with(
            VridKey::v6(62),
            v3().with_allowed_sources(&[addr("fd00:231::1")]).unwrap(),
        )
    }
}

impl VridTable for Table {
    fn lookup(&self, key: VridKey) -> Option<&VridConfig> {
        self.0[key.index() as usize].as_ref()
    }
}

fn v3() -> VridConfig {
    VridConfig::new(3, AUTH_NONE, [0; 8])
}

struct Capture {
    name: &'static str,
    frame: &'static [u8],
    expected: AdvertEvent,
}

fn multicast() -> Capture {
    Capture {
        name: "v3 multicast over IPv6",
        frame: &V3_MULTICAST_V6,
        expected: AdvertEvent {
            src_addr: addr("fe80::e020:ff:fede:db5b"),
            dst_addr: addr("ff02::12"),
            first_vip: addr("fe80::61"),
            interval_cs: 100,
            vrid: 61,
            priority: 150,
            version: 3,
            count_addr: 2,
            family: Family::Ipv6 as u8,
            ..AdvertEvent::default()
        },
    }
}

fn unicast() -> Capture {
    Capture {
        name: "v3 unicast over IPv6",
        frame: &V3_UNICAST_V6,
        expected: AdvertEvent {
            src_addr: addr("fd00:231::1"),
            dst_addr: addr("fd00:231::2"),
            first_vip: addr("fd00:231::62"),
            interval_cs: 10,
            vrid: 62,
            priority: 200,
            version: 3,
            count_addr: 1,
            family: Family::Ipv6 as u8,
            ..AdvertEvent::default()
        },
    }
}

/// The raw socket's view of an untagged frame without extension headers:
/// the VRRP packet alone, behind the header rebuilt from the addresses
/// and hop limit the socket reports.
fn raw_view(frame: &[u8], table: &Table) -> Outcome {
    let ip = &frame[L3..L4];
    let vrrp = &frame[L4..];
    let mut packet = ipv6_header(
        ip[8..24].try_into().unwrap(),
        ip[24..40].try_into().unwrap(),
        ip[7],
        vrrp.len() as u16,
    )
    .to_vec();
    packet.extend_from_slice(vrrp);
    parse_ipv6(&packet[..], 0, table)
}

/// Both views agree on `frame`, and this is what they say.
#[track_caller]
fn outcome(frame: &[u8], table: &Table) -> Outcome {
    let xdp = parse_frame(frame, table);
    let payload_end = L4 - 40 + 40 + usize::from(u16::from_be_bytes([frame[18], frame[19]]));
    // Only untagged frames without extension headers have a raw view
    // here, and only whole ones (the kernel hands a raw socket the payload
    // the IPv6 header announces).
    if frame.len() >= L4 && frame[20] == IPPROTO_VRRP && payload_end <= frame.len() {
        let raw = raw_view(&frame[..payload_end], table);
        assert_eq!(raw, xdp, "raw socket and XDP views differ on {frame:02x?}");
    }
    xdp
}

#[track_caller]
fn assert_drop(frame: &[u8], table: &Table, reason: DropReason, what: &str) {
    assert_eq!(
        outcome(frame, table),
        Outcome::Drop(reason),
        "{what}: {frame:02x?}"
    );
}

/// Recomputes the VRRP checksum of an untagged frame whose VRRP packet
/// starts at `l4` and runs to the end of the IPv6 payload.
fn fix_checksum(frame: &mut [u8], l4: usize) {
    let end = L4 + usize::from(u16::from_be_bytes([frame[18], frame[19]]));
    frame[l4 + 6..l4 + 8].copy_from_slice(&[0, 0]);
    let src: [u8; 16] = frame[L3 + 8..L3 + 24].try_into().unwrap();
    let dst: [u8; 16] = frame[L3 + 24..L3 + 40].try_into().unwrap();
    let sum = checksum(
        pseudo_header_sum_v6(&src, &dst, IPPROTO_VRRP, (end - l4) as u32),
        &frame[l4..end],
    );
    frame[l4 + 6..l4 + 8].copy_from_slice(&sum.to_be_bytes());
}

#[rstest]
fn keepalived_capture_is_accepted(#[values(multicast(), unicast())] c: Capture) {
    assert_eq!(
        outcome(c.frame, &Table::keepalived()),
        Outcome::Accept(c.expected),
        "{}",
        c.name
    );
}

/// The encoder builds what keepalived sends (but for the traffic class
/// and flow label keepalived leaves to the kernel, and the MACs).
#[rstest]
fn the_encoder_matches_keepalived(#[values(multicast(), unicast())] c: Capture) {
    use lbha_common::vrrp::encode::Advert;
    use std::net::{IpAddr, Ipv6Addr};
    let e = c.expected;
    let vips: Vec<IpAddr> = c.frame[L4 + 8..]
        .chunks(16)
        .map(|a| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(a).unwrap())))
        .collect();
    let advert = Advert {
        version: 3,
        vrid: e.vrid,
        priority: e.priority,
        interval_cs: e.interval_cs,
        auth_pass: None,
        virtual_addrs: &vips,
    };
    let (src, dst) = (Ipv6Addr::from(e.src_addr), Ipv6Addr::from(e.dst_addr));
    assert_eq!(
        advert.vrrp_bytes(src.into(), dst.into()),
        c.frame[L4..],
        "{}",
        c.name
    );
    let packet = advert.ipv6_packet(src, dst);
    assert_eq!(packet[4..6], c.frame[L3 + 4..L3 + 6], "payload length");
    assert_eq!((packet[6], packet[7]), (IPPROTO_VRRP, 255));
    let frame = advert.ethernet_frame_v6(src, dst, None);
    assert_eq!(frame[..6], [0x33, 0x33, 0, 0, 0, 0x12]);
    assert_eq!(frame[6..12], [0x00, 0x00, 0x5e, 0x00, 0x02, e.vrid]);
    assert_eq!(
        parse_frame(&frame[..], &Table::keepalived()),
        Outcome::Accept(e)
    );
}

/// VRIDs are per family: IPv6 VRID 61 configured says nothing of IPv4
/// VRID 61, and the other way round.
#[rstest]
fn the_vrid_is_looked_up_in_the_ipv6_table(#[values(multicast(), unicast())] c: Capture) {
    let v4_only = Table::empty().with(VridKey::v4(c.expected.vrid), v3());
    assert_drop(c.frame, &v4_only, DropReason::UnknownVrid, c.name);
    let v6 = Table::empty().with(VridKey::v6(c.expected.vrid), v3());
    assert!(matches!(outcome(c.frame, &v6), Outcome::Accept(_)));
}

#[rstest]
fn hop_limit_must_be_255_on_multicast_adverts() {
    let c = multicast();
    for hop_limit in [0, 1, 64, 254] {
        let mut f = c.frame.to_vec();
        f[L3 + 7] = hop_limit;
        assert_drop(&f, &Table::keepalived(), BadTtl, "multicast");
    }
}

/// keepalived 2.2.7 sends unicast IPv6 adverts with hop limit 64 (capture
/// (e)); any hop limit is accepted there.
#[test]
fn unicast_adverts_are_accepted_with_any_hop_limit() {
    let c = unicast();
    for hop_limit in [1, 64, 255] {
        let mut f = c.frame.to_vec();
        f[L3 + 7] = hop_limit;
        assert_eq!(
            outcome(&f, &Table::keepalived()),
            Outcome::Accept(c.expected)
        );
    }
}

#[rstest]
fn a_flipped_bit_anywhere_in_vrrp_or_the_addresses_is_a_bad_checksum(
    #[values(multicast(), unicast())] c: Capture,
) {
    // Unfiltered table: a changed source is nobody's peer, but the
    // checksum is judged first.
    let table = Table::empty()
        .with(VridKey::v6(61), v3())
        .with(VridKey::v6(62), v3());
    // The source and destination (pseudo-header), then the VRRP packet
    // past the VRID, version and count (whose change is another reason).
    let positions = (L3 + 8..L3 + 40).chain(L4 + 4..c.frame.len());
    for at in positions {
        if at == L3 + 24 {
            // A multicast destination whose first byte changes is no
            // longer multicast, and the hop limit rule with it.
            continue;
        }
        let mut f = c.frame.to_vec();
        f[at] ^= 0x10;
        assert_drop(&f, &table, BadChecksum, &format!("{} byte {at}", c.name));
    }
}

#[rstest]
fn v2_over_ipv6_is_a_bad_version(#[values(multicast(), unicast())] c: Capture) {
    let mut f = c.frame.to_vec();
    f[L4] = 0x21;
    fix_checksum(&mut f, L4);
    assert_drop(&f, &Table::keepalived(), BadVersionType, c.name);
    // Nor does a configuration asking for v2 make it acceptable.
    let v2 = Table::empty().with(
        VridKey::v6(c.expected.vrid),
        VridConfig::new(2, AUTH_NONE, [0; 8]),
    );
    assert_drop(c.frame, &v2, BadVersionType, c.name);
    // Not an advertisement (type 2).
    let mut f = c.frame.to_vec();
    f[L4] = 0x32;
    fix_checksum(&mut f, L4);
    assert_drop(&f, &Table::keepalived(), BadVersionType, c.name);
}

#[rstest]
fn the_address_count_must_match_the_length(#[values(multicast(), unicast())] c: Capture) {
    for count in [0, c.expected.count_addr + 1, 255] {
        let mut f = c.frame.to_vec();
        f[L4 + 3] = count;
        fix_checksum(&mut f, L4);
        assert_drop(&f, &Table::keepalived(), BadLength, c.name);
    }
    // Four bytes per address, as over IPv4, is not IPv6's 16.
    let mut f = c.frame.to_vec();
    f[L4 + 3] = c.expected.count_addr * 4;
    fix_checksum(&mut f, L4);
    assert_drop(&f, &Table::keepalived(), BadLength, c.name);
}

/// Every prefix is rejected without a panic: NotVrrp while the IPv6 header
/// is incomplete, Truncated once it says VRRP follows but the packet it
/// announces is not all there.
#[rstest]
fn every_truncation_is_rejected(#[values(multicast(), unicast())] c: Capture) {
    for len in 0..c.frame.len() {
        let cut = &c.frame[..len];
        let expected = if len < L4 {
            Outcome::NotVrrp
        } else {
            Outcome::Drop(Truncated)
        };
        assert_eq!(parse_frame(cut, &Table::keepalived()), expected, "{len}");
    }
    // A payload length beyond the frame, and one too short for the header.
    let mut f = c.frame.to_vec();
    f[L3 + 5] += 1;
    assert_drop(&f, &Table::keepalived(), Truncated, c.name);
    let mut f = c.frame.to_vec();
    f[L3 + 4..L3 + 6].copy_from_slice(&7u16.to_be_bytes());
    assert_eq!(
        parse_frame(&f[..], &Table::keepalived()),
        Outcome::Drop(Truncated)
    );
    // Link-layer padding after the payload is not part of the advert.
    let mut padded = c.frame.to_vec();
    padded.resize(c.frame.len() + 20, 0xee);
    assert_eq!(
        parse_frame(&padded[..], &Table::keepalived()),
        Outcome::Accept(c.expected)
    );
}

/// `frame` with extension headers (each `(type, bytes after the first 2)`)
/// between the IPv6 header and VRRP, payload length and VRRP checksum
/// fixed.
fn with_ext_headers(frame: &[u8], headers: &[(u8, usize)]) -> Vec<u8> {
    let mut f = frame[..L4].to_vec();
    let mut next_header_at = L3 + 6;
    for &(kind, body) in headers {
        assert_eq!((body + 2) % 8, 0, "extension headers are 8-byte multiples");
        f[next_header_at] = kind;
        next_header_at = f.len();
        f.push(0); // next header, set by the following one
        f.push(((body + 2) / 8 - 1) as u8);
        // PadN option filling the rest (RFC 8200 4.2).
        f.push(1);
        f.push((body - 2) as u8);
        f.extend(std::iter::repeat_n(0, body - 2));
    }
    f[next_header_at] = IPPROTO_VRRP;
    let vrrp_at = f.len();
    f.extend_from_slice(&frame[L4..]);
    let payload = (f.len() - L4) as u16;
    f[L3 + 4..L3 + 6].copy_from_slice(&payload.to_be_bytes());
    fix_checksum(&mut f, vrrp_at);
    f
}

#[rstest]
#[case::hop_by_hop(&[(0, 6)])]
#[case::destination_options(&[(60, 14)])]
#[case::both(&[(0, 6), (60, 6)])]
#[case::longest_legal_chain(&[(0, 6), (60, 22), (60, 6)])]
fn hop_by_hop_and_destination_options_are_walked(
    #[case] headers: &[(u8, usize)],
    #[values(multicast(), unicast())] c: Capture,
) {
    let f = with_ext_headers(c.frame, headers);
    assert_eq!(
        parse_frame(&f[..], &Table::keepalived()),
        Outcome::Accept(c.expected),
        "{}",
        c.name
    );
    assert_eq!(frame_sender(&f[..]).vrid, c.expected.vrid);
    // Cut inside the chain: whether VRRP follows is unknown, so it is
    // passed as not VRRP; cut after it, the advert is truncated.
    let chain_end = f.len() - (c.frame.len() - L4);
    assert_eq!(
        parse_frame(&f[..=L4], &Table::keepalived()),
        Outcome::NotVrrp
    );
    assert_eq!(
        parse_frame(&f[..chain_end + 4], &Table::keepalived()),
        Outcome::Drop(Truncated)
    );
}

#[rstest]
#[case::routing(43)]
#[case::fragment(44)]
#[case::esp(50)]
#[case::ah(51)]
#[case::mobility(135)]
fn other_extension_headers_are_counted_and_passed(
    #[case] kind: u8,
    #[values(multicast(), unicast())] c: Capture,
) {
    // Directly after the IPv6 header, and after a hop-by-hop header.
    let mut f = with_ext_headers(c.frame, &[(0, 6)]);
    f[L3 + 6] = kind;
    assert_eq!(
        parse_frame(&f[..], &Table::keepalived()),
        Outcome::Ipv6ExtHeaderPassed
    );
    let mut f = with_ext_headers(c.frame, &[(0, 6)]);
    f[L4] = kind;
    assert_eq!(
        parse_frame(&f[..], &Table::keepalived()),
        Outcome::Ipv6ExtHeaderPassed
    );
    assert_eq!(
        Outcome::Ipv6ExtHeaderPassed.counter().name(),
        "ipv6_ext_header_passed"
    );
}

#[test]
fn a_chain_longer_than_any_legal_one_is_passed() {
    let f = with_ext_headers(&V3_MULTICAST_V6, &[(0, 6), (60, 6), (60, 6), (60, 6)]);
    assert_eq!(
        parse_frame(&f[..], &Table::keepalived()),
        Outcome::Ipv6ExtHeaderPassed
    );
}

#[rstest]
fn an_unknown_vrid_is_passed_as_unknown(#[values(multicast(), unicast())] c: Capture) {
    let mut f = c.frame.to_vec();
    f[L4 + 1] = 99;
    fix_checksum(&mut f, L4);
    assert_drop(&f, &Table::keepalived(), DropReason::UnknownVrid, c.name);
    // Even when everything else about it is wrong too.
    f[L3 + 7] = 1;
    f[L4 + 3] = 9;
    assert_drop(&f, &Table::keepalived(), DropReason::UnknownVrid, c.name);
}

#[test]
fn a_unicast_advert_from_another_source_is_an_unknown_source() {
    let c = unicast();
    let mut f = c.frame.to_vec();
    f[L3 + 8 + 15] = 0x66; // fd00:231::66
    fix_checksum(&mut f, L4);
    assert_drop(&f, &Table::keepalived(), UnknownSource, "unicast");
    // IPv4 peers' bytes do not match an IPv6 source that starts with them.
    let v4ish = Table::empty().with(
        VridKey::v6(62),
        v3().with_allowed_sources(&[lbha_common::event::wire_v4([0xfd, 0x00, 0x02, 0x31])])
            .unwrap(),
    );
    assert_drop(c.frame, &v4ish, UnknownSource, "IPv4-looking peer");
}

#[rstest]
fn the_sender_of_a_dropped_frame_is_read_where_it_can_be(
    #[values(multicast(), unicast())] c: Capture,
) {
    let expected = Sender {
        family: Some(Family::Ipv6),
        src_addr: c.expected.src_addr,
        vrid: c.expected.vrid,
    };
    assert_eq!(frame_sender(c.frame), expected, "{}", c.name);
    assert_eq!(
        frame_sender(&c.frame[..=L4]),
        Sender {
            vrid: 0,
            ..expected
        }
    );
    assert_eq!(frame_sender(&c.frame[..L4 - 1]), Sender::default());
}

#[test]
fn ipv6_traffic_that_is_not_vrrp_is_not_vrrp() {
    // ICMPv6 (58) and UDP (17) in place of VRRP; a version 4 header
    // behind the IPv6 ethertype.
    for (at, value) in [(L3 + 6, 58), (L3 + 6, 17), (L3, 0x4c)] {
        let mut f = V3_MULTICAST_V6.to_vec();
        f[at] = value;
        assert_eq!(parse_frame(&f[..], &Table::keepalived()), Outcome::NotVrrp);
    }
}

#[test]
fn single_byte_changes_never_panic_or_pass_unnoticed() {
    for c in [multicast(), unicast()] {
        for at in 0..c.frame.len() {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut f = c.frame.to_vec();
                if f[at] == value {
                    continue;
                }
                f[at] = value;
                match parse_frame(&f[..], &Table::keepalived()) {
                    // Only the MACs, the traffic class and flow label, the
                    // unicast hop limit and the priority (judged by the
                    // state machine, covered by the checksum: so only with
                    // a compensating change) may change and still pass.
                    Outcome::Accept(event) => assert!(
                        at < 12
                            || (L3..L3 + 4).contains(&at)
                            || (at == L3 + 7 && c.expected.dst_addr[0] != 0xff),
                        "{} byte {at} = {value:#x} accepted: {event:?}",
                        c.name
                    ),
                    Outcome::NotVrrp
                    | Outcome::Drop(_)
                    | Outcome::Ipv6ExtHeaderPassed
                    | Outcome::AhToVerify(_) => {}
                }
            }
        }
    }
}
