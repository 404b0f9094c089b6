//! keepalived's `auth_type AH` against adverts a real keepalived sent: the
//! parser's handling of protocol 51, the HMAC-MD5-96 ICV, the SPI and
//! sequence-number rules, and lbha's own AH adverts byte for byte.
//!
//! How the packets were captured: keepalived v2.2.7 (01/16,2022), Debian 12
//! package. Two throw-away network namespaces joined by a veth pair,
//! `vka` = 10.203.9.1/24 and `vkb` = 10.203.9.2/24; keepalived ran in the
//! first (`keepalived -n -l -D -P -f CONF -p k.pid -r v.pid`) with
//!
//! ```text
//! global_defs { vrrp_version 2 }
//! vrrp_instance VI_1 {
//!     interface vka  state BACKUP  virtual_router_id 77  priority 255
//!     advert_int 1
//!     [unicast_src_ip 10.203.9.1  unicast_peer { 10.203.9.2 }]   (unicast capture only)
//!     authentication { auth_type AH  auth_pass ahsecret }
//!     virtual_ipaddress { 10.203.9.100/32  10.203.9.101/32 }
//! }
//! ```
//!
//! and an `AF_PACKET` socket on `vkb` in the other kept the IPv4 packets of
//! protocol 51. The first advert of each run is below, from the IP header
//! on (the Ethernet header is added by [`frame`]).

use lbha_common::{
    DropReason, Outcome, VridConfig,
    event::{Counter, VRID_SLOTS, VridKey},
    vrrp::{
        AH_HEADER_LEN, AUTH_AH, AUTH_NONE, AUTH_PASS, IPPROTO_AH, VridTable,
        ah::{self, AhError, SeqCounter},
        encode::{Advert, auth_data},
        parse_frame, parse_ipv4,
    },
};
use std::net::{IpAddr, Ipv4Addr};

const PASSWORD: &[u8] = b"ahsecret";
const VRID: u8 = 77;

/// Multicast to 224.0.0.18: IP id 1, TTL 255, protocol 51; AH next header
/// 112, payload length 4, SPI 10.203.9.1, sequence number 1, ICV; VRRPv2
/// VRID 77, priority 255, 2 addresses, auth type 2, 1 s, 8 zero bytes.
const MULTICAST_SEQ1: &str = "45c0004400010000ff33c6e70acb0901e0000012\
                              700400000acb0901000000018d24f553a9db1e716f46bf10\
                              214dff020201b54f0acb09640acb09650000000000000000";
/// The next advert of the same run: IP id 2, sequence number 2.
const MULTICAST_SEQ2: &str = "45c0004400020000ff33c6e60acb0901e0000012\
                              700400000acb090100000002d3f3ab08be36262af4259453\
                              214dff020201b54f0acb09640acb09650000000000000000";
/// Unicast to 10.203.9.2 (the ICV leaves the TTL out), sequence number 1.
const UNICAST_SEQ1: &str = "45c0004400010000ff33932d0acb09010acb0902\
                            700400000acb090100000001d6bd4d8a975fb9dfb678ebc3\
                            214dff020201b54f0acb09640acb09650000000000000000";

fn bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn key() -> [u8; 8] {
    auth_data(PASSWORD)
}

/// The packet in an Ethernet frame, as the XDP program sees it.
fn frame(packet: &[u8]) -> Vec<u8> {
    let mut out = vec![
        0x01, 0x00, 0x5e, 0x00, 0x00, 0x12, 2, 0, 0, 0, 0, 1, 0x08, 0x00,
    ];
    out.extend_from_slice(packet);
    out
}

struct Table(Vec<Option<VridConfig>>);

impl Table {
    fn with(auth_type: u8, pass: &[u8]) -> Self {
        let mut t = vec![None; VRID_SLOTS as usize];
        t[VridKey::v4(VRID).index() as usize] =
            Some(VridConfig::new(2, auth_type, auth_data(pass)));
        Self(t)
    }
}

impl VridTable for Table {
    fn lookup(&self, key: VridKey) -> Option<&VridConfig> {
        self.0[key.index() as usize].as_ref()
    }
}

#[test]
fn keepalived_ah_adverts_are_handed_on_for_verification() {
    let table = Table::with(AUTH_AH, PASSWORD);
    for hex in [MULTICAST_SEQ1, MULTICAST_SEQ2, UNICAST_SEQ1] {
        let packet = bytes(hex);
        let Outcome::AhToVerify(event) = parse_frame(frame(&packet).as_slice(), &table) else {
            panic!(
                "not handed on: {:?}",
                parse_frame(frame(&packet).as_slice(), &table)
            );
        };
        assert_eq!((event.vrid, event.priority, event.version), (VRID, 255, 2));
        assert_eq!(event.count_addr, 2);
        assert_eq!(event.interval_cs, 100);
        assert_eq!(event.src_ip(), IpAddr::V4(Ipv4Addr::new(10, 203, 9, 1)));
        // The raw socket's bytes (no Ethernet header) give the same.
        assert_eq!(
            parse_ipv4(packet.as_slice(), 0, &table),
            Outcome::AhToVerify(event)
        );
        assert_eq!(Outcome::AhToVerify(event).counter(), Counter::AhToUserSpace);
    }
}

#[test]
fn the_icv_is_keepalived_s() {
    for (hex, unicast) in [
        (MULTICAST_SEQ1, false),
        (MULTICAST_SEQ2, false),
        (UNICAST_SEQ1, true),
    ] {
        let packet = bytes(hex);
        let icv = ah::icv(&key(), &packet, unicast).expect("icv");
        assert_eq!(icv, packet[32..44], "ICV of {hex}");
        let seq = ah::verify(&key(), &packet, unicast).expect("verified");
        assert_eq!(seq, u32::from_be_bytes(packet[28..32].try_into().unwrap()));
    }
}

#[test]
fn the_ttl_is_in_the_multicast_icv_only() {
    // A unicast receiver leaves the TTL out: a multicast advert checked
    // that way fails, and the reverse.
    assert_eq!(
        ah::verify(&key(), &bytes(MULTICAST_SEQ1), true),
        Err(AhError::BadIcv)
    );
    assert_eq!(
        ah::verify(&key(), &bytes(UNICAST_SEQ1), false),
        Err(AhError::BadIcv)
    );
    // The mutable fields may change on the way without breaking the ICV.
    let mut packet = bytes(UNICAST_SEQ1);
    packet[1] = 0; // TOS
    packet[8] = 64; // TTL (unicast)
    packet[10] = 0x12; // checksum
    assert!(ah::verify(&key(), &packet, true).is_ok());
}

#[test]
fn a_wrong_password_a_changed_byte_or_a_forged_spi_is_refused() {
    let packet = bytes(MULTICAST_SEQ1);
    assert_eq!(
        ah::verify(&auth_data(b"ahsecreT"), &packet, false),
        Err(AhError::BadIcv)
    );
    // keepalived keeps 8 bytes: a longer password is the same key.
    assert!(ah::verify(&auth_data(b"ahsecret-and-more"), &packet, false).is_ok());
    for at in [4, 12, 24, 28, 44, 46, 52, 60] {
        let mut changed = packet.clone();
        changed[at] ^= 0x01;
        assert_eq!(
            ah::verify(&key(), &changed, false),
            Err(AhError::BadIcv),
            "byte {at}"
        );
    }
    // A SPI that is not the source, with an ICV computed over it.
    let mut forged = packet.clone();
    forged[27] = 9;
    let icv = ah::icv(&key(), &forged, false).unwrap();
    forged[32..44].copy_from_slice(&icv);
    assert_eq!(ah::verify(&key(), &forged, false), Err(AhError::BadSpi));
    assert_eq!(AhError::BadSpi.counter(), Counter::DropAhBadSpi);
    assert_eq!(AhError::BadIcv.counter(), Counter::DropAhBadIcv);
}

#[test]
fn truncated_or_odd_ah_is_a_counted_drop_never_a_panic() {
    let table = Table::with(AUTH_AH, PASSWORD);
    let packet = bytes(MULTICAST_SEQ1);
    for len in 0..packet.len() {
        let cut = &packet[..len];
        let _ = ah::verify(&key(), cut, false);
        let _ = ah::icv(&key(), cut, false);
        let outcome = parse_ipv4(cut, 0, &table);
        assert!(
            !matches!(outcome, Outcome::AhToVerify(_) | Outcome::Accept(_)),
            "{len} bytes: {outcome:?}"
        );
    }
    // Cut inside the AH header: malformed AH.
    assert_eq!(
        parse_ipv4(&packet[..30], 0, &table),
        Outcome::Drop(DropReason::MalformedAh)
    );
    // A payload length keepalived never sends.
    let mut odd = packet.clone();
    odd[21] = 5;
    assert_eq!(
        parse_ipv4(odd.as_slice(), 0, &table),
        Outcome::Drop(DropReason::MalformedAh)
    );
    assert_eq!(DropReason::MalformedAh.counter(), Counter::DropMalformedAh);
    // AH around something else is not ours.
    let mut other = packet.clone();
    other[20] = 6;
    assert_eq!(parse_ipv4(other.as_slice(), 0, &table), Outcome::NotVrrp);
    // An IP header length past the packet: no panic, no verification.
    let mut ihl = packet.clone();
    ihl[0] = 0x4f;
    assert!(ah::verify(&key(), &ihl, false).is_err());
    assert!(!matches!(
        parse_ipv4(ihl.as_slice(), 0, &table),
        Outcome::AhToVerify(_)
    ));
}

#[test]
fn ah_and_the_configuration_must_agree() {
    let packet = frame(&bytes(MULTICAST_SEQ1));
    // AH advert, VRID configured with PASS or without authentication.
    for auth in [AUTH_PASS, AUTH_NONE] {
        assert_eq!(
            parse_frame(packet.as_slice(), &Table::with(auth, PASSWORD)),
            Outcome::Drop(DropReason::AuthMismatch)
        );
    }
    // Plain VRRP claiming AH in its header, for an AH VRID: keepalived's
    // "No AH header but auth type is AH".
    let plain = Advert {
        version: 2,
        vrid: VRID,
        priority: 100,
        interval_cs: 100,
        auth_pass: None,
        virtual_addrs: &[],
    };
    let mut v = plain.ipv4_packet(Ipv4Addr::new(10, 203, 9, 1), Ipv4Addr::new(224, 0, 0, 18));
    v[20 + 4] = AUTH_AH;
    // Fix the VRRP checksum so that only the AH rule can refuse it.
    v[26] = 0;
    v[27] = 0;
    let sum = lbha_common::checksum::checksum(0, &v[20..]);
    v[26..28].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(
        parse_ipv4(v.as_slice(), 0, &Table::with(AUTH_AH, PASSWORD)),
        Outcome::Drop(DropReason::AuthMismatch)
    );
    // Unconfigured VRID: the stack's, untouched.
    let mut t = Table::with(AUTH_AH, PASSWORD);
    t.0 = vec![None; VRID_SLOTS as usize];
    assert_eq!(
        parse_frame(packet.as_slice(), &t),
        Outcome::Drop(DropReason::UnknownVrid)
    );
}

#[test]
fn lbha_builds_keepalived_s_bytes() {
    let vips = [
        IpAddr::V4(Ipv4Addr::new(10, 203, 9, 100)),
        IpAddr::V4(Ipv4Addr::new(10, 203, 9, 101)),
    ];
    let advert = Advert {
        version: 2,
        vrid: VRID,
        priority: 255,
        interval_cs: 100,
        auth_pass: None,
        virtual_addrs: &vips,
    };
    let src = Ipv4Addr::new(10, 203, 9, 1);
    let multicast = advert.ipv4_ah_packet(src, Ipv4Addr::new(224, 0, 0, 18), &key(), 1, 1, None);
    assert_eq!(multicast, bytes(MULTICAST_SEQ1));
    let next = advert.ipv4_ah_packet(src, Ipv4Addr::new(224, 0, 0, 18), &key(), 2, 2, None);
    assert_eq!(next, bytes(MULTICAST_SEQ2));
    let unicast = advert.ipv4_ah_packet(src, Ipv4Addr::new(10, 203, 9, 2), &key(), 1, 1, Some(255));
    assert_eq!(unicast, bytes(UNICAST_SEQ1));
    assert_eq!(multicast[9], IPPROTO_AH);
    assert_eq!(multicast.len(), 20 + AH_HEADER_LEN + 8 + 8 + 8);
}

#[test]
fn sequence_numbers_follow_keepalived() {
    let mut counter = SeqCounter::default();
    // A fresh instance sends 1, 2, ...
    assert_eq!(counter.next_send(), 1);
    assert_eq!(counter.next_send(), 2);
    // It accepts only numbers above the last one sent or accepted.
    assert_eq!(counter.accept(2), Err(AhError::Replay));
    assert_eq!(counter.accept(1), Err(AhError::Replay));
    assert_eq!(AhError::Replay.counter(), Counter::DropAhReplay);
    assert_eq!(counter.accept(40), Ok(()));
    assert_eq!(counter.last(), 40);
    // A Master that took over goes on from the peer's numbers.
    assert_eq!(counter.next_send(), 41);
    // A restarted peer starting again at 1 is refused...
    assert_eq!(counter.accept(1), Err(AhError::Replay));
    // ...and a lower-priority advert moves a Master past it.
    counter.lower_priority_seen(100);
    assert_eq!(counter.next_send(), 102);
    // At its end the counter repeats its last number until the next takeover.
    let mut end = SeqCounter::default();
    assert_eq!(end.accept(0xFFFF_FFFE), Ok(()));
    assert_eq!(end.next_send(), 0xFFFF_FFFE);
    assert_eq!(end.next_send(), 0xFFFF_FFFE);
    end.becoming_master();
    assert_eq!(end.next_send(), 1);
    // Without reaching the end, becoming Master keeps the count.
    counter.becoming_master();
    assert_eq!(counter.next_send(), 103);
}
