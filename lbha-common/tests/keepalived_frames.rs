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

use lbha_common::{
    AdvertEvent, DropReason, Outcome, VridConfig,
    checksum::{checksum, pseudo_header_sum},
    vrrp::{AUTH_NONE, AUTH_PASS, IPPROTO_VRRP, Sender, VridTable, frame_sender, parse_frame},
};

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

/// A VRID table backed by a plain array, as the XDP map is.
struct Table([Option<VridConfig>; 256]);

impl Table {
    fn empty() -> Self {
        Self([None; 256])
    }

    fn with(mut self, vrid: u8, config: VridConfig) -> Self {
        self.0[usize::from(vrid)] = Some(config);
        self
    }

    /// What an lbha configured like the three keepalived instances would load.
    fn keepalived() -> Self {
        Self::empty()
            .with(51, v2_pass(b"secret12"))
            .with(52, v3())
            .with(53, v3())
    }
}

impl VridTable for Table {
    fn lookup(&self, vrid: u8) -> Option<VridConfig> {
        self.0[usize::from(vrid)]
    }
}

fn v2_pass(pass: &[u8; 8]) -> VridConfig {
    VridConfig::new(2, AUTH_PASS, *pass)
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

fn captures() -> [Capture; 3] {
    [
        Capture {
            name: "v2 unicast PASS",
            frame: &V2_UNICAST_PASS,
            expected: AdvertEvent {
                timestamp_ns: 0,
                src_addr: [10, 231, 0, 1],
                dst_addr: [10, 231, 0, 2],
                first_vip: [10, 231, 0, 100],
                ifindex: 0,
                interval_cs: 100,
                vrid: 51,
                priority: 150,
                version: 2,
                flags: 0,
                count_addr: 2,
                receive_path: 0,
            },
        },
        Capture {
            name: "v3 unicast",
            frame: &V3_UNICAST,
            expected: AdvertEvent {
                timestamp_ns: 0,
                src_addr: [10, 231, 0, 1],
                dst_addr: [10, 231, 0, 2],
                first_vip: [10, 231, 0, 102],
                ifindex: 0,
                interval_cs: 10,
                vrid: 52,
                priority: 200,
                version: 3,
                flags: 0,
                count_addr: 1,
                receive_path: 0,
            },
        },
        Capture {
            name: "v3 multicast",
            frame: &V3_MULTICAST,
            expected: AdvertEvent {
                timestamp_ns: 0,
                src_addr: [10, 231, 0, 1],
                dst_addr: [224, 0, 0, 18],
                first_vip: [10, 231, 0, 103],
                ifindex: 0,
                interval_cs: 100,
                vrid: 53,
                priority: 100,
                version: 3,
                flags: 0,
                count_addr: 2,
                receive_path: 0,
            },
        },
    ]
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

#[test]
fn keepalived_v2_unicast_pass_is_accepted() {
    let [capture, _, _] = captures();
    assert_eq!(
        accept(capture.frame, &Table::keepalived()),
        capture.expected
    );
}

#[test]
fn keepalived_v3_unicast_100ms_is_accepted() {
    let [_, capture, _] = captures();
    assert_eq!(
        accept(capture.frame, &Table::keepalived()),
        capture.expected
    );
}

#[test]
fn keepalived_v3_multicast_is_accepted() {
    let [_, _, capture] = captures();
    assert_eq!(
        accept(capture.frame, &Table::keepalived()),
        capture.expected
    );
}

/// What keepalived 2.2.7 actually puts on the wire, which the parser (and the
/// advert encoder) must agree with.
#[test]
fn keepalived_wire_format() {
    for c in captures() {
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
    // auth_pass "secret12345" was cut to 8 bytes, not NUL terminated.
    assert_eq!(&V2_UNICAST_PASS[50..58], b"secret12");
}

#[test]
fn configured_version_must_match() {
    let v3_configured = Table::empty()
        .with(51, VridConfig::new(3, AUTH_PASS, *b"secret12"))
        .with(52, v3())
        .with(53, v3());
    let v2_configured = Table::empty()
        .with(51, v2_pass(b"secret12"))
        .with(52, v2_no_auth())
        .with(53, v2_no_auth());
    for c in captures() {
        let wrong = if c.expected.version == 2 {
            &v3_configured
        } else {
            &v2_configured
        };
        assert_drop(c.frame, wrong, DropReason::BadVersionType, c.name);
    }
}

#[test]
fn unconfigured_vrid_is_unknown() {
    // Every VRID except the advert's own is configured.
    let mut others = Table::empty();
    for vrid in 0..=255 {
        others = others.with(vrid, v3());
    }
    for c in captures() {
        let vrid = c.expected.vrid;
        assert_drop(c.frame, &Table::empty(), DropReason::UnknownVrid, c.name);
        let mut all_but = Table(others.0);
        all_but.0[usize::from(vrid)] = None;
        assert_drop(c.frame, &all_but, DropReason::UnknownVrid, c.name);
    }
}

#[test]
fn v2_pass_authentication_must_match() {
    let table_with = |config| Table::empty().with(51, config);
    let ok = table_with(v2_pass(b"secret12"));

    // The configuration disagrees with the (unchanged) advert.
    for (config, what) in [
        (v2_no_auth(), "no auth configured"),
        (v2_pass(b"secret13"), "other password"),
        (v2_pass(b"Secret12"), "case differs"),
        (v2_pass(b"secret\0\0"), "prefix of the password"),
        (v2_pass(&[0; 8]), "empty password"),
    ] {
        let table = table_with(config);
        assert_drop(&V2_UNICAST_PASS, &table, DropReason::AuthMismatch, what);
    }

    // The advert is changed, its checksum kept valid.
    let start = L3 + 20;
    let mut no_auth = V2_UNICAST_PASS;
    no_auth[start + 4] = AUTH_NONE;
    fix_vrrp_checksum(&mut no_auth, L3);
    assert_drop(
        &no_auth,
        &ok,
        DropReason::AuthMismatch,
        "auth type NONE, PASS configured",
    );

    let mut no_auth_no_data = no_auth;
    no_auth_no_data[start + 16..start + 24].fill(0);
    fix_vrrp_checksum(&mut no_auth_no_data, L3);
    assert_drop(
        &no_auth_no_data,
        &ok,
        DropReason::AuthMismatch,
        "no auth at all, PASS configured",
    );
    // ... which is what an instance without authentication sends, and fine there.
    let event = accept(&no_auth_no_data, &table_with(v2_no_auth()));
    assert_eq!(event, captures()[0].expected);

    let mut ah = V2_UNICAST_PASS;
    ah[start + 4] = 2; // RFC 2338 IP Authentication Header, removed in RFC 3768
    fix_vrrp_checksum(&mut ah, L3);
    assert_drop(&ah, &ok, DropReason::AuthMismatch, "auth type AH");

    for i in start + 16..start + 24 {
        let mut wrong = V2_UNICAST_PASS;
        wrong[i] ^= 0x20;
        fix_vrrp_checksum(&mut wrong, L3);
        assert_drop(
            &wrong,
            &ok,
            DropReason::AuthMismatch,
            "one password byte differs",
        );
    }
    let mut longer = V2_UNICAST_PASS;
    longer[start + 16..start + 24].copy_from_slice(b"secret1\0");
    fix_vrrp_checksum(&mut longer, L3);
    assert_drop(
        &longer,
        &ok,
        DropReason::AuthMismatch,
        "advert password shorter",
    );
}

#[test]
fn ttl_other_than_255_is_bad_ttl() {
    let table = Table::keepalived();
    for c in captures() {
        for ttl in [64, 254, 1, 0] {
            let mut f = c.frame.to_vec();
            f[L3 + 8] = ttl;
            fix_ip_checksum(&mut f, L3);
            assert_drop(&f, &table, DropReason::BadTtl, c.name);
        }
    }
}

#[test]
fn flipped_vrrp_byte_is_bad_checksum() {
    for c in captures() {
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
}

#[test]
fn v3_checksum_covers_the_pseudo_header() {
    let table = Table::keepalived();
    for c in captures() {
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
                addr
            );
        }
    }
}

#[test]
fn broken_ip_header_checksum_is_bad_checksum() {
    let table = Table::keepalived();
    for c in captures() {
        // TOS, id, checksum, source and destination: fields no earlier rule looks at.
        for i in [1, 4, 5, 10, 11, 12, 15, 16, 19] {
            let mut f = c.frame.to_vec();
            f[L3 + i] ^= 0x01;
            assert_drop(
                &f,
                &table,
                DropReason::BadChecksum,
                &format!("{}: IP byte {i}", c.name),
            );
        }
        let mut zero = c.frame.to_vec();
        zero[L3 + 10..L3 + 12].fill(0);
        assert_drop(
            &zero,
            &table,
            DropReason::BadChecksum,
            &format!("{}: checksum 0", c.name),
        );
    }
}

/// Every prefix of every frame (the real ones, tagged and with options) is
/// rejected without a panic: NotVrrp while the IPv4 header is incomplete,
/// Truncated once it is there but the packet it announces is not.
#[test]
fn every_truncation_is_rejected() {
    let table = Table::keepalived();
    for c in captures() {
        let variants = [
            (c.frame.to_vec(), L3, "as captured"),
            (tagged(c.frame, 0x8100, 100), L3 + 4, "802.1Q"),
            (tagged(c.frame, 0x88a8, 100), L3 + 4, "802.1ad"),
            (
                with_ip_options(c.frame, &[0x94, 0x04, 0x00, 0x00]),
                L3,
                "IP options",
            ),
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
}

#[test]
fn ip_total_length_beyond_the_frame_is_truncated() {
    let table = Table::keepalived();
    for c in captures() {
        for extra in [1, 4, 8] {
            let mut f = c.frame.to_vec();
            let total = (be16(&f, L3 + 2) + extra) as u16;
            f[L3 + 2..L3 + 4].copy_from_slice(&total.to_be_bytes());
            fix_ip_checksum(&mut f, L3);
            assert_drop(&f, &table, DropReason::Truncated, c.name);
        }
        let mut f = c.frame.to_vec();
        f[L3 + 2..L3 + 4].copy_from_slice(&[0xff, 0xff]);
        fix_ip_checksum(&mut f, L3);
        assert_drop(&f, &table, DropReason::Truncated, c.name);
    }
}

#[test]
fn malformed_ip_header_lengths_are_truncated() {
    let table = Table::keepalived();
    for c in captures() {
        // IHL below the minimum.
        for ihl in [0, 4] {
            let mut f = c.frame.to_vec();
            f[L3] = 0x40 | ihl;
            assert_drop(&f, &table, DropReason::Truncated, c.name);
        }
        // IHL past the end of the packet.
        let mut f = c.frame.to_vec();
        f[L3] = 0x4f;
        assert_drop(&f, &table, DropReason::Truncated, c.name);
        // Total length too short for a VRRP header.
        let mut f = c.frame.to_vec();
        f[L3 + 2..L3 + 4].copy_from_slice(&27u16.to_be_bytes());
        fix_ip_checksum(&mut f, L3);
        assert_drop(&f, &table, DropReason::Truncated, c.name);
    }
}

#[test]
fn length_disagreeing_with_address_count_is_bad_length() {
    let table = Table::keepalived();
    for c in captures() {
        let (start, _) = vrrp_span(c.frame, L3);
        let count = c.expected.count_addr;
        for wrong in [count - 1, count + 1, 0, 255] {
            let mut f = c.frame.to_vec();
            f[start + 3] = wrong;
            fix_vrrp_checksum(&mut f, L3);
            assert_drop(
                &f,
                &table,
                DropReason::BadLength,
                &format!("{}: count {wrong}", c.name),
            );
        }
        // The IP length cuts the last address off (the frame still holds it).
        let mut f = c.frame.to_vec();
        let total = (be16(&f, L3 + 2) - 4) as u16;
        f[L3 + 2..L3 + 4].copy_from_slice(&total.to_be_bytes());
        fix_ip_checksum(&mut f, L3);
        fix_vrrp_checksum(&mut f, L3);
        assert_drop(
            &f,
            &table,
            DropReason::BadLength,
            &format!("{}: IP length - 4", c.name),
        );
    }
}

#[test]
fn wrong_version_or_type_is_bad_version_type() {
    let table = Table::keepalived();
    for c in captures() {
        let (start, _) = vrrp_span(c.frame, L3);
        let version = c.expected.version;
        let mut bytes = vec![];
        // Not an advertisement (RFC 5798 knows only type 1).
        bytes.extend([0, 2, 3, 15].map(|ty| (version << 4) | ty));
        // Not VRRP version 2 or 3.
        bytes.extend([0, 1, 4, 15].map(|v| (v << 4) | 1));
        for byte in bytes {
            let mut f = c.frame.to_vec();
            f[start] = byte;
            fix_vrrp_checksum(&mut f, L3);
            assert_drop(
                &f,
                &table,
                DropReason::BadVersionType,
                &format!("{}: {byte:#04x}", c.name),
            );
        }
    }
}

#[test]
fn vlan_tagged_copy_is_accepted() {
    let table = Table::keepalived();
    for c in captures() {
        for (tpid, tci) in [(0x8100, 100), (0x8100, 0xe000 | 4094), (0x88a8, 7)] {
            let f = tagged(c.frame, tpid, tci);
            assert_eq!(
                accept(&f, &table),
                c.expected,
                "{} tagged {tpid:#x}/{tci}",
                c.name
            );
        }
    }
}

#[test]
fn ip_options_are_skipped() {
    let table = Table::keepalived();
    let router_alert = [0x94, 0x04, 0x00, 0x00];
    // The largest header IHL allows: 40 bytes of options (NOPs, then EOL).
    let mut longest = [0x01; 40];
    longest[39] = 0x00;
    for c in captures() {
        let f = with_ip_options(c.frame, &router_alert);
        assert_eq!(f[L3], 0x46);
        assert_eq!(accept(&f, &table), c.expected, "{}", c.name);

        let f = with_ip_options(c.frame, &longest);
        assert_eq!(f[L3], 0x4f);
        assert_eq!(accept(&f, &table), c.expected, "{}", c.name);

        // Still under the same rules: e.g. a broken header checksum.
        let mut f = with_ip_options(c.frame, &router_alert);
        f[L3 + 21] ^= 0x01;
        assert_drop(&f, &table, DropReason::BadChecksum, c.name);
    }
}

#[test]
fn the_sender_of_a_dropped_frame_is_read_where_it_can_be() {
    for c in captures() {
        let expected = Sender {
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
    assert_eq!(frame_sender(&KEEPALIVED_GARP[..]), Sender::default());
}

#[test]
fn fragments_are_truncated() {
    let table = Table::keepalived();
    for c in captures() {
        // MF, a non-zero offset (a last fragment), both.
        for flags in [0x2000u16, 0x0001, 0x2001, 0x1fff] {
            let mut f = c.frame.to_vec();
            f[L3 + 6..L3 + 8].copy_from_slice(&flags.to_be_bytes());
            fix_ip_checksum(&mut f, L3);
            assert_drop(
                &f,
                &table,
                DropReason::Truncated,
                &format!("{}: {flags:#06x}", c.name),
            );
        }
        // DF is no fragment.
        let mut f = c.frame.to_vec();
        f[L3 + 6] = 0x40;
        fix_ip_checksum(&mut f, L3);
        assert_eq!(accept(&f, &table), c.expected, "{} with DF", c.name);
    }
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

    for c in captures() {
        // Another EtherType (IPv6) with the same bytes behind it.
        let mut f = c.frame.to_vec();
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(parse(&f, &table), Outcome::NotVrrp, "{}", c.name);
        // IP version 6 in an IPv4 EtherType.
        let mut f = c.frame.to_vec();
        f[L3] = 0x65;
        assert_eq!(parse(&f, &table), Outcome::NotVrrp, "{}", c.name);
        // Same packet, other IP protocol (checksum fixed).
        for proto in [17, 6, 1, 51, 113] {
            let mut f = c.frame.to_vec();
            f[L3 + 9] = proto;
            fix_ip_checksum(&mut f, L3);
            assert_eq!(
                parse(&f, &table),
                Outcome::NotVrrp,
                "{} proto {proto}",
                c.name
            );
        }
    }
}

#[test]
fn ethernet_padding_is_ignored() {
    let table = Table::keepalived();
    for c in captures() {
        for (len, fill) in [
            (60, 0x00),
            (64, 0xa5),
            (c.frame.len() + 1, 0xff),
            (1514, 0x00),
        ] {
            let f = padded(c.frame, len, fill);
            assert_eq!(accept(&f, &table), c.expected, "{} padded to {len}", c.name);
        }
        let f = padded(&tagged(c.frame, 0x8100, 100), 64, 0);
        assert_eq!(
            accept(&f, &table),
            c.expected,
            "{} tagged and padded",
            c.name
        );
    }
}

/// No single-byte change to a real advert makes the parser panic, and none
/// past the MAC addresses yields an Accept: the IP header checksum covers the
/// IP header and the VRRP checksum the rest.
#[test]
fn single_byte_changes_never_panic_or_pass() {
    let table = Table::keepalived();
    for c in captures() {
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
}
