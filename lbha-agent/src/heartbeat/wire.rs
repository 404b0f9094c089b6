//! The heartbeat on the wire: a small binary message authenticated with
//! HMAC-SHA256 under the shared key. Pure: encoding, decoding and the
//! checks a receiver applies, host-tested here.
//!
//! ```text
//!  0..4    magic "LBHB"
//!  4       version (1 or 2)
//!  5       record count N (at most MAX_RECORDS)
//!  6..8    zero
//!  8..16   sender's droplet id (0: not known), big-endian
//! 16..24   boot id: random per agent start
//! 24..32   sequence number, increasing within a boot
//! 32..40   send time, Unix milliseconds
//! 40..     N records:
//!          version 1, 8 bytes: VRID, state, effective priority, flags
//!            (bit 0: healthy), primary IPv4 address (IPv4 instances only)
//!          version 2, 24 bytes: VRID, family (4 or 6), state, effective
//!            priority, flags, 3 zero bytes, primary address (IPv6: 16
//!            bytes; IPv4: 4 bytes then 12 zero bytes)
//! then     32 bytes: HMAC-SHA256 of everything before
//! ```
//!
//! Why two versions: an IPv6 instance and an IPv4 instance with the same
//! VRID are different routers, and version 1 has no room for the family
//! (nor for an IPv6 address); its decoders check the exact length, so it
//! cannot be extended in place. A sender uses version 1 while all its
//! records are IPv4 (byte for byte what older agents send and accept, so a
//! rolling upgrade of an IPv4 pair keeps its heartbeat) and version 2 once
//! one is IPv6. Every version is accepted here; an older agent counts a
//! version 2 heartbeat as `malformed` (upgrade both agents before adding
//! IPv6 instances to a pair that relies on the heartbeat). A version this
//! agent does not know is refused as `unsupported_version`, so a mismatch
//! shows by name in the counters.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aws_lc_rs::hmac;
use lbha_common::event::{Family, VridKey};
use thiserror::Error;

const MAGIC: &[u8; 4] = b"LBHB";
/// IPv4 records only, as every agent before IPv6 heartbeats sends.
const VERSION_V4: u8 = 1;
/// Records carry their family.
const VERSION_FAMILY: u8 = 2;
const HEADER: usize = 40;
/// A record's bytes in each version.
const RECORD_V4: usize = 8;
const RECORD_FAMILY: usize = 24;
const TAG: usize = 32;
/// Records in one heartbeat (one per VRRP instance).
pub const MAX_RECORDS: usize = 255;
/// Shortest acceptable shared key.
pub const MIN_KEY_BYTES: usize = 16;
/// A heartbeat sent longer ago than this (by the sender's clock) is refused:
/// a replay, or a clock so wrong the rest cannot be trusted either.
pub const MAX_AGE_MS: u64 = 30_000;

/// One VRRP instance's state as its agent reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub vrid: u8,
    pub state: PeerState,
    pub priority: u8,
    /// Its checks pass (not in Fault because of them).
    pub healthy: bool,
    /// The instance's primary address: of the instance's family (VRRP over
    /// IPv6 is sent from an IPv6 address), so it says which router of the
    /// VRID this is.
    pub address: IpAddr,
}

impl Record {
    /// The router this record speaks for: its family and VRID.
    pub fn key(&self) -> VridKey {
        match self.address {
            IpAddr::V4(_) => VridKey::v4(self.vrid),
            IpAddr::V6(_) => VridKey::v6(self.vrid),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    Init,
    Backup,
    Master,
    Fault,
}

impl PeerState {
    fn to_u8(self) -> u8 {
        match self {
            PeerState::Init => 0,
            PeerState::Backup => 1,
            PeerState::Master => 2,
            PeerState::Fault => 3,
        }
    }

    fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => PeerState::Init,
            1 => PeerState::Backup,
            2 => PeerState::Master,
            3 => PeerState::Fault,
            _ => return None,
        })
    }

    /// keepalived's names, as status shows them.
    pub fn from_name(name: &str) -> Self {
        match name {
            "BACKUP" => PeerState::Backup,
            "MASTER" => PeerState::Master,
            "FAULT" => PeerState::Fault,
            _ => PeerState::Init,
        }
    }
}

/// One heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub droplet_id: u64,
    pub boot_id: u64,
    pub seq: u64,
    pub sent_unix_ms: u64,
    pub records: Vec<Record>,
}

/// Why a datagram was not accepted (each counted by name).
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum Refused {
    #[error("malformed")]
    Malformed,
    #[error("bad_mac")]
    BadMac,
    #[error("stale")]
    Stale,
    #[error("replayed")]
    Replayed,
    #[error("unknown_sender")]
    UnknownSender,
    /// Magic right, version not one this agent speaks (a newer agent).
    #[error("unsupported_version")]
    UnsupportedVersion,
}

impl Refused {
    pub const ALL: [Refused; 6] = [
        Refused::Malformed,
        Refused::BadMac,
        Refused::Stale,
        Refused::Replayed,
        Refused::UnknownSender,
        Refused::UnsupportedVersion,
    ];
}

/// The shared key, ready to sign and verify.
pub struct Key(hmac::Key);

impl Key {
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }
}

/// The authenticated datagram for `message` (records beyond
/// [`MAX_RECORDS`] are left out): version 1 while every record is IPv4,
/// version 2 otherwise (see the module's documentation).
pub fn encode(message: &Message, key: &Key) -> Vec<u8> {
    let records = &message.records[..message.records.len().min(MAX_RECORDS)];
    let v4_only = records.iter().all(|r| r.address.is_ipv4());
    let (version, record_len) = if v4_only {
        (VERSION_V4, RECORD_V4)
    } else {
        (VERSION_FAMILY, RECORD_FAMILY)
    };
    let mut out = Vec::with_capacity(HEADER + records.len() * record_len + TAG);
    out.extend_from_slice(MAGIC);
    out.push(version);
    out.push(records.len() as u8);
    out.extend_from_slice(&[0, 0]);
    for field in [
        message.droplet_id,
        message.boot_id,
        message.seq,
        message.sent_unix_ms,
    ] {
        out.extend_from_slice(&field.to_be_bytes());
    }
    for r in records {
        let (state, healthy) = (r.state.to_u8(), u8::from(r.healthy));
        match (version, r.address) {
            (VERSION_V4, IpAddr::V4(address)) => {
                out.extend_from_slice(&[r.vrid, state, r.priority, healthy]);
                out.extend_from_slice(&address.octets());
            }
            (_, address) => {
                let family = r.key().family as u8;
                out.extend_from_slice(&[r.vrid, family, state, r.priority, healthy, 0, 0, 0]);
                let mut wire = [0u8; 16];
                match address {
                    IpAddr::V4(a) => wire[..4].copy_from_slice(&a.octets()),
                    IpAddr::V6(a) => wire = a.octets(),
                }
                out.extend_from_slice(&wire);
            }
        }
    }
    let tag = hmac::sign(&key.0, &out);
    out.extend_from_slice(tag.as_ref());
    out
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut field = [0u8; 8];
    field.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(field)
}

/// One version 1 record: an IPv4 instance.
fn record_v4(chunk: &[u8]) -> Option<Record> {
    Some(Record {
        vrid: chunk[0],
        state: PeerState::from_u8(chunk[1])?,
        priority: chunk[2],
        healthy: chunk[3] & 1 != 0,
        address: Ipv4Addr::new(chunk[4], chunk[5], chunk[6], chunk[7]).into(),
    })
}

/// One version 2 record. Reserved bytes must be zero (an IPv4 address's
/// padding too): what no agent sends is not guessed at.
fn record_family(chunk: &[u8]) -> Option<Record> {
    if chunk[5..8] != [0, 0, 0] {
        return None;
    }
    let mut wire = [0u8; 16];
    wire.copy_from_slice(&chunk[8..24]);
    let address = match Family::from_u8(chunk[1])? {
        Family::Ipv4 if wire[4..] == [0; 12] => {
            IpAddr::V4(Ipv4Addr::new(wire[0], wire[1], wire[2], wire[3]))
        }
        Family::Ipv4 => return None,
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(wire)),
    };
    Some(Record {
        vrid: chunk[0],
        state: PeerState::from_u8(chunk[2])?,
        priority: chunk[3],
        healthy: chunk[4] & 1 != 0,
        address,
    })
}

/// Reads one record of a version (None: not a valid one).
type ParseRecord = fn(&[u8]) -> Option<Record>;

/// Verifies and decodes a datagram of either version. The MAC is checked
/// (in constant time) before anything else is believed.
pub fn decode(datagram: &[u8], key: &Key) -> Result<Message, Refused> {
    if datagram.len() < HEADER + TAG || &datagram[..4] != MAGIC {
        return Err(Refused::Malformed);
    }
    let (record_len, parse): (usize, ParseRecord) = match datagram[4] {
        VERSION_V4 => (RECORD_V4, record_v4),
        VERSION_FAMILY => (RECORD_FAMILY, record_family),
        _ => return Err(Refused::UnsupportedVersion),
    };
    let count = usize::from(datagram[5]);
    if datagram.len() != HEADER + count * record_len + TAG {
        return Err(Refused::Malformed);
    }
    let (body, tag) = datagram.split_at(datagram.len() - TAG);
    hmac::verify(&key.0, body, tag).map_err(|_| Refused::BadMac)?;
    let records = body[HEADER..]
        .chunks_exact(record_len)
        .map(parse)
        .collect::<Option<Vec<_>>>()
        .ok_or(Refused::Malformed)?;
    Ok(Message {
        droplet_id: u64_at(body, 8),
        boot_id: u64_at(body, 16),
        seq: u64_at(body, 24),
        sent_unix_ms: u64_at(body, 32),
        records,
    })
}

/// Whether an authentic `message` is new: sent within [`MAX_AGE_MS`] of
/// `now_unix_ms`, and after `last` (the (boot id, sequence) last accepted
/// from that sender) when it comes from the same boot.
pub fn is_fresh(
    message: &Message,
    now_unix_ms: u64,
    last: Option<(u64, u64)>,
) -> Result<(), Refused> {
    if now_unix_ms.abs_diff(message.sent_unix_ms) > MAX_AGE_MS {
        return Err(Refused::Stale);
    }
    match last {
        Some((boot, seq)) if boot == message.boot_id && message.seq <= seq => {
            Err(Refused::Replayed)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new(b"0123456789abcdef-shared-secret")
    }

    fn message() -> Message {
        Message {
            droplet_id: 1001,
            boot_id: 0xfeed,
            seq: 7,
            sent_unix_ms: 1_700_000_000_000,
            records: vec![
                Record {
                    vrid: 51,
                    state: PeerState::Master,
                    priority: 200,
                    healthy: true,
                    address: Ipv4Addr::new(10, 0, 0, 1).into(),
                },
                Record {
                    vrid: 52,
                    state: PeerState::Fault,
                    priority: 100,
                    healthy: false,
                    address: Ipv4Addr::new(10, 0, 1, 1).into(),
                },
            ],
        }
    }

    /// [`message`] with an IPv6 instance of VRID 51 beside the IPv4 one.
    fn dual_stack() -> Message {
        let mut m = message();
        m.records.push(Record {
            vrid: 51,
            state: PeerState::Backup,
            priority: 150,
            healthy: true,
            address: "fe80::1".parse().unwrap(),
        });
        m
    }

    /// `bytes` with its MAC recomputed (to test what follows the MAC check).
    fn resigned(mut bytes: Vec<u8>) -> Vec<u8> {
        let body = bytes.len() - TAG;
        let tag = hmac::sign(&key().0, &bytes[..body]);
        bytes[body..].copy_from_slice(tag.as_ref());
        bytes
    }

    #[test]
    fn round_trips_under_the_key() {
        let bytes = encode(&message(), &key());
        assert_eq!(bytes.len(), HEADER + 2 * RECORD_V4 + TAG);
        assert_eq!(decode(&bytes, &key()), Ok(message()));
    }

    #[test]
    fn ipv4_only_heartbeats_keep_version_1_byte_for_byte() {
        let bytes = encode(&message(), &key());
        assert_eq!(bytes[4], 1, "what agents without IPv6 heartbeats accept");
        assert_eq!(&bytes[HEADER..HEADER + 8], &[51, 2, 200, 1, 10, 0, 0, 1]);
        assert_eq!(
            &bytes[HEADER + 8..HEADER + 16],
            &[52, 3, 100, 0, 10, 0, 1, 1]
        );
    }

    #[test]
    fn both_families_round_trip_in_version_2_and_keep_their_keys_apart() {
        let bytes = encode(&dual_stack(), &key());
        assert_eq!(bytes[4], 2);
        assert_eq!(bytes.len(), HEADER + 3 * RECORD_FAMILY + TAG);
        // The IPv4 record: family 4, its address padded with zeros.
        assert_eq!(&bytes[HEADER..HEADER + 8], &[51, 4, 2, 200, 1, 0, 0, 0]);
        assert_eq!(
            &bytes[HEADER + 8..HEADER + 24],
            &[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let decoded = decode(&bytes, &key()).unwrap();
        assert_eq!(decoded, dual_stack());
        let keys: Vec<VridKey> = decoded.records.iter().map(Record::key).collect();
        assert_eq!(keys, [VridKey::v4(51), VridKey::v4(52), VridKey::v6(51)]);
    }

    #[test]
    fn version_2_reserved_bytes_and_unknown_families_are_malformed() {
        let bytes = encode(&dual_stack(), &key());
        let third = HEADER + 2 * RECORD_FAMILY;
        for (at, value) in [
            (HEADER + 5, 1),  // a reserved byte
            (HEADER + 12, 1), // the IPv4 address's padding
            (third + 1, 5),   // family 5
            (third + 2, 9),   // state 9
        ] {
            let mut changed = bytes.clone();
            changed[at] = value;
            assert_eq!(
                decode(&resigned(changed), &key()),
                Err(Refused::Malformed),
                "byte {at}"
            );
        }
    }

    #[test]
    fn another_key_or_any_changed_byte_is_refused() {
        let bytes = encode(&message(), &key());
        assert_eq!(
            decode(&bytes, &Key::new(b"another-secret-of-16+")),
            Err(Refused::BadMac)
        );
        for at in 8..bytes.len() {
            let mut changed = bytes.clone();
            changed[at] ^= 0x01;
            assert!(decode(&changed, &key()).is_err(), "byte {at} changed");
        }
    }

    #[test]
    fn truncated_or_padded_datagrams_are_malformed() {
        let bytes = encode(&message(), &key());
        for len in 0..bytes.len() {
            assert_eq!(
                decode(&bytes[..len], &key()),
                Err(Refused::Malformed),
                "{len}"
            );
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert_eq!(decode(&padded, &key()), Err(Refused::Malformed));
        // A version 1 datagram's length read as version 2 (and back).
        let mut as_v2 = bytes;
        as_v2[4] = 2;
        assert_eq!(decode(&as_v2, &key()), Err(Refused::Malformed));
        let mut as_v1 = encode(&dual_stack(), &key());
        as_v1[4] = 1;
        assert_eq!(decode(&as_v1, &key()), Err(Refused::Malformed));
        let dual = encode(&dual_stack(), &key());
        for len in [0, 39, HEADER + TAG + 23, dual.len() - 1] {
            assert_eq!(
                decode(&dual[..len], &key()),
                Err(Refused::Malformed),
                "{len}"
            );
        }
    }

    #[test]
    fn an_unknown_version_is_refused_by_name() {
        let mut newer = encode(&message(), &key());
        newer[4] = 3;
        assert_eq!(decode(&newer, &key()), Err(Refused::UnsupportedVersion));
    }

    #[test]
    fn stale_and_replayed_heartbeats_are_refused() {
        let m = message();
        let now = m.sent_unix_ms + 500;
        assert_eq!(is_fresh(&m, now, None), Ok(()));
        assert_eq!(is_fresh(&m, now, Some((m.boot_id, 6))), Ok(()));
        assert_eq!(
            is_fresh(&m, now, Some((m.boot_id, 7))),
            Err(Refused::Replayed)
        );
        assert_eq!(
            is_fresh(&m, now, Some((m.boot_id, 9))),
            Err(Refused::Replayed)
        );
        assert_eq!(
            is_fresh(&m, now, Some((0xbeef, 9))),
            Ok(()),
            "a restarted agent starts a new sequence"
        );
        assert_eq!(
            is_fresh(&m, m.sent_unix_ms + MAX_AGE_MS + 1, None),
            Err(Refused::Stale)
        );
    }
}
