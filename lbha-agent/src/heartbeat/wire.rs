//! The heartbeat on the wire: a small binary message authenticated with
//! HMAC-SHA256 under the shared key. Pure: encoding, decoding and the
//! checks a receiver applies, host-tested here.
//!
//! ```text
//!  0..4    magic "LBHB"
//!  4       version (1)
//!  5       record count N (at most MAX_RECORDS)
//!  6..8    zero
//!  8..16   sender's droplet id (0: not known), big-endian
//! 16..24   boot id: random per agent start
//! 24..32   sequence number, increasing within a boot
//! 32..40   send time, Unix milliseconds
//! 40..     N records of 8 bytes: VRID, state, effective priority, flags
//!          (bit 0: healthy), primary IPv4 address
//! then     32 bytes: HMAC-SHA256 of everything before
//! ```

use std::net::Ipv4Addr;

use aws_lc_rs::hmac;
use thiserror::Error;

const MAGIC: &[u8; 4] = b"LBHB";
const VERSION: u8 = 1;
const HEADER: usize = 40;
const RECORD: usize = 8;
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
    pub address: Ipv4Addr,
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
}

impl Refused {
    pub const ALL: [Refused; 5] = [
        Refused::Malformed,
        Refused::BadMac,
        Refused::Stale,
        Refused::Replayed,
        Refused::UnknownSender,
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
/// [`MAX_RECORDS`] are left out).
pub fn encode(message: &Message, key: &Key) -> Vec<u8> {
    let records = &message.records[..message.records.len().min(MAX_RECORDS)];
    let mut out = Vec::with_capacity(HEADER + records.len() * RECORD + TAG);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
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
        out.extend_from_slice(&[r.vrid, r.state.to_u8(), r.priority, u8::from(r.healthy)]);
        out.extend_from_slice(&r.address.octets());
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

/// Verifies and decodes a datagram. The MAC is checked (in constant time)
/// before anything else is believed.
pub fn decode(datagram: &[u8], key: &Key) -> Result<Message, Refused> {
    if datagram.len() < HEADER + TAG || &datagram[..4] != MAGIC || datagram[4] != VERSION {
        return Err(Refused::Malformed);
    }
    let count = usize::from(datagram[5]);
    if datagram.len() != HEADER + count * RECORD + TAG {
        return Err(Refused::Malformed);
    }
    let (body, tag) = datagram.split_at(datagram.len() - TAG);
    hmac::verify(&key.0, body, tag).map_err(|_| Refused::BadMac)?;
    let mut records = Vec::with_capacity(count);
    for chunk in body[HEADER..].chunks_exact(RECORD) {
        records.push(Record {
            vrid: chunk[0],
            state: PeerState::from_u8(chunk[1]).ok_or(Refused::Malformed)?,
            priority: chunk[2],
            healthy: chunk[3] & 1 != 0,
            address: Ipv4Addr::new(chunk[4], chunk[5], chunk[6], chunk[7]),
        });
    }
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
                    address: Ipv4Addr::new(10, 0, 0, 1),
                },
                Record {
                    vrid: 52,
                    state: PeerState::Fault,
                    priority: 100,
                    healthy: false,
                    address: Ipv4Addr::new(10, 0, 1, 1),
                },
            ],
        }
    }

    #[test]
    fn round_trips_under_the_key() {
        let bytes = encode(&message(), &key());
        assert_eq!(bytes.len(), HEADER + 2 * RECORD + TAG);
        assert_eq!(decode(&bytes, &key()), Ok(message()));
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
        let mut wrong_version = bytes;
        wrong_version[4] = 2;
        assert_eq!(decode(&wrong_version, &key()), Err(Refused::Malformed));
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
