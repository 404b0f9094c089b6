//! Fuzzes the VRRP receive-path parser shared by the XDP program and the raw
//! socket fallback.
//!
//! Input: the first byte picks a VRID configuration scenario, the rest is an
//! Ethernet frame. The frame goes through `parse_frame` (XDP view) and, as a
//! whole, through `parse_ipv4(.., 0, ..)` (raw socket view); an IPv6 frame
//! also through `parse_ipv6` from its IPv6 header (the raw socket's IPv6
//! view), checked against a model of the IPv6 rules. Besides "never
//! panics", every outcome is checked against a small slice-based model of the
//! RFC 3768/5798 rules written independently of the parser: an advert is
//! accepted exactly when the model says it is valid, and an accepted event
//! carries the bytes found at the expected offsets. Accepted events are then
//! fed to `fastpath::classify`.

#![no_main]

use lbha_common::{
    AdvertEvent, Outcome, VridConfig, checksum,
    event::{Family, VridKey, change, wire_v4},
    fastpath,
    vrrp::{self, DropReason, VridTable},
};
use libfuzzer_sys::fuzz_target;

/// The VRID the seeds use.
const VRID: u8 = 51;
const OTHER_VRID: u8 = 52;
const PASS: [u8; 8] = *b"secret\0\0";
const ALL_CHANGE_BITS: u8 = change::NEW_SOURCE
    | change::PRIORITY
    | change::RESIGN
    | change::INTERVAL
    | change::AFTER_SILENCE
    | change::VERSION;

/// Same semantics as the XDP `VRID_CONFIG` array map: 256 slots, a slot
/// whose `enabled` is 0 is not configured. Every scenario configures the
/// same VRIDs over IPv6 as over IPv4 (a v2 entry then holds for no IPv6
/// advert), except for the allowed sources, which are IPv6 ones there.
struct Table([VridConfig; 256], [VridConfig; 256]);

impl VridTable for Table {
    fn lookup(&self, key: VridKey) -> Option<&VridConfig> {
        let slots = match key.family {
            Family::Ipv4 => &self.0,
            Family::Ipv6 => &self.1,
        };
        let config = &slots[usize::from(key.vrid)];
        (config.enabled != 0).then_some(config)
    }
}

/// The IPv6 sources scenario 7 allows.
const PEERS_V6: [[u8; 16]; 2] = [
    [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    [0xfd, 0, 2, 0x31, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
];

const SCENARIOS: u8 = 9;

/// The sources scenario 7 allows: the seeds' sender among other peers.
const PEERS: [[u8; 16]; 3] = [
    wire_v4([10, 0, 0, 7]),
    wire_v4([10, 0, 0, 1]),
    wire_v4([192, 0, 2, 1]),
];

fn table(selector: u8) -> Table {
    let mut slots = [VridConfig::default(); 256];
    let v2_pass = VridConfig::new(2, vrrp::AUTH_PASS, PASS);
    let v2_none = VridConfig::new(2, vrrp::AUTH_NONE, [0; 8]);
    let v3 = VridConfig::new(3, vrrp::AUTH_NONE, [0; 8]);
    match selector % SCENARIOS {
        // v2 with PASS "secret" (keepalived `auth_type PASS`).
        0 => slots[usize::from(VRID)] = v2_pass,
        // v3.
        1 => slots[usize::from(VRID)] = v3,
        // Nothing configured: every advert is someone else's.
        2 => {}
        // v2 without authentication.
        3 => slots[usize::from(VRID)] = v2_none,
        // Two VRIDs with different versions side by side.
        4 => {
            slots[usize::from(VRID)] = v3;
            slots[usize::from(OTHER_VRID)] = v2_pass;
        }
        // Every VRID, version 0 (the parser takes it as "either version").
        5 => slots = [VridConfig::new(0, vrrp::AUTH_NONE, [0; 8]); 256],
        // A slot that holds a config but is disabled.
        6 => slots[usize::from(VRID)] = VridConfig { enabled: 0, ..v3 },
        // Unicast peers: adverts only from them.
        7 => {
            slots[usize::from(VRID)] = v3.with_allowed_sources(&PEERS).expect("3 <= 8");
            slots[usize::from(OTHER_VRID)] =
                v2_pass.with_allowed_sources(&PEERS[..1]).expect("1 <= 8");
        }
        // A short master-down timer (down_timer_adverts 1), for the fast path.
        _ => slots[usize::from(VRID)] = v3.with_down_timer_adverts(1),
    }
    let mut v6 = slots;
    if selector % SCENARIOS == 7 {
        v6[usize::from(VRID)] = v6[usize::from(VRID)]
            .with_allowed_sources(&PEERS_V6)
            .expect("2 <= 8");
        v6[usize::from(OTHER_VRID)] = v6[usize::from(OTHER_VRID)]
            .with_allowed_sources(&PEERS_V6[..1])
            .expect("1 <= 8");
    }
    Table(slots, v6)
}

fuzz_target!(|input: &[u8]| {
    let Some((&selector, frame)) = input.split_first() else {
        return;
    };
    let table = table(selector);

    // XDP view: Ethernet frame, optionally VLAN tagged.
    let xdp = vrrp::parse_frame(frame, &table);
    let _ = xdp.counter();
    if let Some(l3) = l3_offset_v6(frame) {
        assert_eq!(xdp, vrrp::parse_ipv6(frame, l3, &table));
        assert_eq!(xdp, vrrp::parse_ipv6(&frame[l3..], 0, &table));
        check_v6(&frame[l3..], xdp, &table);
    }
    match l3_offset(frame) {
        None => assert!(
            xdp == Outcome::NotVrrp || l3_offset_v6(frame).is_some(),
            "not an IP frame"
        ),
        Some(l3) => {
            // The offset only shifts where the packet starts.
            assert_eq!(xdp, vrrp::parse_ipv4(frame, l3, &table));
            assert_eq!(xdp, vrrp::parse_ipv4(&frame[l3..], 0, &table));
            check(&frame[l3..], xdp, &table, input);
        }
    }

    // Raw socket view: the same bytes taken as an IPv4 packet.
    let raw = vrrp::parse_ipv4(frame, 0, &table);
    let _ = raw.counter();
    check(frame, raw, &table, input);
});

/// Where the IPv6 header starts, or `None` when the frame is not IPv6.
fn l3_offset_v6(frame: &[u8]) -> Option<usize> {
    let ethertype = |at: usize| Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
    match ethertype(12)? {
        0x86dd => Some(14),
        0x8100 | 0x88a8 if ethertype(16)? == 0x86dd => Some(18),
        _ => None,
    }
}

/// Checks the outcome of parsing `ip` as IPv6 against the rules stated on
/// the bytes: the extension header walk, then RFC 5798's for IPv6.
fn check_v6(ip: &[u8], outcome: Outcome, table: &Table) {
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        assert_eq!(outcome, Outcome::NotVrrp);
        return;
    }
    // Walk hop-by-hop (0) and destination options (60), at most 3.
    let (mut next, mut at) = (ip[6], 40);
    let mut walked = 0;
    let vrrp = loop {
        match next {
            112 => break at,
            0 | 60 if walked < 3 => {
                if at + 2 > ip.len() {
                    assert_eq!(outcome, Outcome::NotVrrp, "chain cut short");
                    return;
                }
                next = ip[at];
                at += (usize::from(ip[at + 1]) + 1) * 8;
                walked += 1;
            }
            0 | 60 | 43 | 44 | 50 | 51 | 135 | 139 | 140 | 253 | 254 => {
                assert_eq!(outcome, Outcome::Ipv6ExtHeaderPassed);
                return;
            }
            _ => {
                assert_eq!(outcome, Outcome::NotVrrp);
                return;
            }
        }
    };
    let end = 40 + be16(ip, 4);
    if end > ip.len() || vrrp + 8 > end {
        assert_eq!(outcome, Outcome::Drop(DropReason::Truncated));
        return;
    }
    let v = &ip[vrrp..end];
    let Some(config) = table.lookup(VridKey::v6(v[1])) else {
        assert_eq!(outcome, Outcome::Drop(DropReason::UnknownVrid));
        return;
    };
    let src: [u8; 16] = ip[8..24].try_into().unwrap();
    let mut pseudo = Vec::with_capacity(40 + v.len());
    pseudo.extend_from_slice(&ip[8..40]);
    pseudo.extend_from_slice(&(v.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 112]);
    pseudo.extend_from_slice(v);
    let count = usize::from(config.allowed_source_count);
    let valid = v[0] == 0x31
        && (config.version == 0 || config.version == 3)
        && v.len() == 8 + 16 * usize::from(v[3])
        && (ip[24] != 0xff || ip[7] == 255)
        && checksum::checksum(0, &pseudo) == 0
        && (count == 0 || config.allowed_sources[..count].contains(&src));
    match outcome {
        Outcome::Accept(event) => {
            assert!(
                valid,
                "accepted an IPv6 advert the model rejects: {event:?}"
            );
            assert_eq!(event.family, Family::Ipv6 as u8);
            assert_eq!(
                (event.vrid, event.priority, event.count_addr),
                (v[1], v[2], v[3])
            );
            assert_eq!(event.src_addr, src);
            assert_eq!(event.dst_addr[..], ip[24..40]);
            let first_vip: [u8; 16] = if v[3] > 0 {
                v[8..24].try_into().unwrap()
            } else {
                [0; 16]
            };
            assert_eq!(event.first_vip, first_vip);
            assert_eq!(event.interval_cs, u16::from_be_bytes([v[4] & 0x0f, v[5]]));
        }
        Outcome::Drop(reason) => assert!(!valid, "dropped a valid IPv6 advert as {reason:?}"),
        other => panic!("IPv6 VRRP parsed as {other:?}"),
    }
}

/// Where the IPv4 header starts, or `None` when the frame is not IPv4.
fn l3_offset(frame: &[u8]) -> Option<usize> {
    let ethertype = |at: usize| Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
    match ethertype(12)? {
        0x0800 => Some(14),
        0x8100 | 0x88a8 if ethertype(16)? == 0x0800 => Some(18),
        _ => None,
    }
}

/// AH (protocol 51): never accepted in the kernel's path; only AH around
/// VRRP is ours, and a malformed AH header is a counted drop.
fn check_ah(ip: &[u8], outcome: Outcome) {
    let ah_at = usize::from(ip[0] & 0x0f) * 4;
    // Next header and payload length, both needed to tell.
    let next_header = ip.get(ah_at..ah_at + 2).map(|ah| ah[0]);
    if next_header != Some(vrrp::IPPROTO_VRRP) {
        assert_eq!(outcome, Outcome::NotVrrp, "AH around another protocol");
        return;
    }
    // The 24-byte AH header with payload length 4 (in 32-bit words, minus 2).
    if ip.len() < ah_at + 24 || ip[ah_at + 1] != 4 {
        assert_eq!(outcome, Outcome::Drop(DropReason::MalformedAh));
        return;
    }
    assert!(
        matches!(outcome, Outcome::AhToVerify(_) | Outcome::Drop(_)),
        "AH advert: {outcome:?}"
    );
}

fn be16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([b[at], b[at + 1]]))
}

/// Checks the outcome of parsing `ip` (an IPv4 packet, possibly followed by
/// link-layer padding).
fn check(ip: &[u8], outcome: Outcome, table: &Table, input: &[u8]) {
    if ip.len() >= 20 && ip[0] >> 4 == 4 && ip[9] == vrrp::IPPROTO_AH {
        check_ah(ip, outcome);
        return;
    }
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != vrrp::IPPROTO_VRRP {
        assert_eq!(outcome, Outcome::NotVrrp);
        return;
    }
    assert_ne!(outcome, Outcome::NotVrrp, "IPv4 protocol 112 is VRRP");

    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = be16(ip, 2);
    let header_present =
        ihl >= 20 && total >= ihl + 8 && total <= ip.len() && be16(ip, 6) & 0x3fff == 0;
    if header_present {
        // Foreign VRIDs are reported as such whatever else is wrong with them.
        let configured = table.lookup(VridKey::v4(ip[ihl + 1])).is_some();
        if !configured {
            assert_eq!(outcome, Outcome::Drop(DropReason::UnknownVrid));
        } else {
            assert_ne!(outcome, Outcome::Drop(DropReason::UnknownVrid));
        }
    } else {
        assert_eq!(outcome, Outcome::Drop(DropReason::Truncated));
    }

    let valid = header_present && model_accepts(ip, ihl, total, table);
    match outcome {
        Outcome::Accept(event) => {
            assert!(valid, "accepted an advert the model rejects: {event:?}");
            check_event(ip, ihl, total, &event, table);
            let intervals = table
                .lookup(VridKey::v4(event.vrid))
                .map_or(3, |c| c.silence_intervals());
            check_classify(&event, input, intervals);
        }
        Outcome::Drop(reason) => assert!(!valid, "dropped a valid advert as {reason:?}"),
        Outcome::NotVrrp | Outcome::Ipv6ExtHeaderPassed | Outcome::AhToVerify(_) => {
            unreachable!("IPv4 VRRP, protocol 112")
        }
    }
}

/// The acceptance rules, stated directly on the byte slice. `ip[..total]`
/// holds at least the IPv4 header and 8 bytes of VRRP header.
fn model_accepts(ip: &[u8], ihl: usize, total: usize, table: &Table) -> bool {
    let v = &ip[ihl..total];
    let Some(config) = table.lookup(VridKey::v4(v[1])) else {
        return false;
    };
    let version = v[0] >> 4;
    let count = usize::from(v[3]);
    let auth_len = if version == 2 { 8 } else { 0 };
    if v[0] & 0x0f != 1
        || !(version == 2 || version == 3)
        || (config.version != 0 && config.version != version)
        || v.len() != 8 + 4 * count + auth_len
        // TTL 255 only for multicast: a unicast advert may cross a router
        // (keepalived's `unicast_ttl`).
        || (ip[16] & 0xf0 == 0xe0 && ip[8] != 255)
        || checksum::checksum(0, &ip[..ihl]) != 0
        || vrrp_checksum(ip, v, version) != 0
    {
        return false;
    }
    let auth_ok = version != 2
        || (v[4] == config.auth_type
            && (v[4] != vrrp::AUTH_PASS || v[v.len() - 8..] == config.auth_data));
    // With unicast peers, only their adverts.
    let count = usize::from(config.allowed_source_count);
    let source_ok = count == 0
        || config.allowed_sources[..count].contains(&wire_v4([ip[12], ip[13], ip[14], ip[15]]));
    auth_ok && source_ok
}

/// VRRP checksum over the packet, plus the pseudo-header for v3 (RFC 5798
/// 5.2.8), built as bytes rather than through `pseudo_header_sum`.
fn vrrp_checksum(ip: &[u8], v: &[u8], version: u8) -> u16 {
    if version == 3 {
        let mut bytes = Vec::with_capacity(12 + v.len());
        bytes.extend_from_slice(&ip[12..20]);
        bytes.extend_from_slice(&[0, vrrp::IPPROTO_VRRP]);
        bytes.extend_from_slice(&(v.len() as u16).to_be_bytes());
        bytes.extend_from_slice(v);
        checksum::checksum(0, &bytes)
    } else {
        checksum::checksum(0, v)
    }
}

/// The accepted event reports what is on the wire.
fn check_event(ip: &[u8], ihl: usize, total: usize, event: &AdvertEvent, table: &Table) {
    let v = &ip[ihl..total];
    assert!(event.version == 2 || event.version == 3);
    let config = table
        .lookup(VridKey::v4(event.vrid))
        .expect("accepted an unconfigured VRID");
    assert_eq!(event.family, Family::Ipv4 as u8);
    assert!(config.version == 0 || config.version == event.version);
    assert_eq!(event.vrid, v[1]);
    assert_eq!(event.priority, v[2]);
    assert_eq!(event.count_addr, v[3]);
    assert_eq!(event.version, v[0] >> 4);
    assert_eq!(event.src_addr, wire_v4([ip[12], ip[13], ip[14], ip[15]]));
    assert_eq!(event.dst_addr, wire_v4([ip[16], ip[17], ip[18], ip[19]]));
    let auth_len = if event.version == 2 { 8 } else { 0 };
    assert_eq!(
        total,
        ihl + 8 + 4 * usize::from(event.count_addr) + auth_len
    );
    let first_vip = if event.count_addr > 0 {
        [v[8], v[9], v[10], v[11]]
    } else {
        [0; 4]
    };
    assert_eq!(event.first_vip, wire_v4(first_vip));
    let interval_cs = if event.version == 2 {
        u16::from(v[5]) * 100
    } else {
        u16::from_be_bytes([v[4] & 0x0f, v[5]])
    };
    assert_eq!(event.interval_cs, interval_cs);
    // Left for the receive path to fill in.
    assert_eq!(event.timestamp_ns, 0);
    assert_eq!(event.ifindex, 0);
    assert_eq!(event.flags, 0);
    assert_eq!(event.receive_path, 0);
}

/// Runs the fast-path wakeup decision on an accepted advert against a few
/// previous adverts, one of them made of fuzzer bytes.
fn check_classify(event: &AdvertEvent, input: &[u8], intervals: u8) {
    let resign = if event.priority == 0 {
        change::RESIGN
    } else {
        0
    };
    let mut next = *event;
    next.timestamp_ns = 2_000_000_000;

    // No previous advert.
    let flags = fastpath::classify(&AdvertEvent::default(), &next, intervals);
    assert_eq!(flags, change::NEW_SOURCE | resign);

    // The master repeating itself promptly.
    let mut previous = next;
    previous.timestamp_ns = 1_000_000_000;
    // One second apart: silence only for `intervals` intervals under 1 s.
    let silence = if u64::from(next.interval_cs) * u64::from(intervals) * 10_000_000 < 1_000_000_000
    {
        change::AFTER_SILENCE
    } else {
        0
    };
    assert_eq!(
        fastpath::classify(&previous, &next, intervals),
        resign | silence
    );

    // Extreme timestamps in both directions.
    for (prev_ts, next_ts) in [(1, u64::MAX), (u64::MAX, 1), (u64::MAX, u64::MAX)] {
        previous.timestamp_ns = prev_ts;
        next.timestamp_ns = next_ts;
        let flags = fastpath::classify(&previous, &next, intervals);
        assert_eq!(flags & !ALL_CHANGE_BITS, 0);
        assert_eq!(flags & (change::NEW_SOURCE | change::RESIGN), resign);
    }

    // A previous advert taken from the tail of the input.
    let mut tail = input.iter().rev().copied().chain(core::iter::repeat(0));
    let mut byte = || tail.next().unwrap_or_default();
    let previous = AdvertEvent {
        timestamp_ns: u64::from_le_bytes(core::array::from_fn(|_| byte())),
        src_addr: core::array::from_fn(|_| byte()),
        interval_cs: u16::from_le_bytes([byte(), byte()]),
        priority: byte(),
        version: byte(),
        ..*event
    };
    let flags = fastpath::classify(&previous, &next, intervals);
    assert_eq!(flags & !ALL_CHANGE_BITS, 0);
    assert_eq!(flags & change::RESIGN, resign);
    let new_source = previous.timestamp_ns == 0 || previous.src_addr != next.src_addr;
    assert_eq!(flags & change::NEW_SOURCE != 0, new_source);
}
