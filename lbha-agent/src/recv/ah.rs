//! keepalived's `auth_type AH` on the receive side: an `AF_INET`/`SOCK_RAW`
//! protocol-51 socket bound to the interface, opened next to either receive
//! path when an instance there uses AH.
//!
//! The kernel cannot compute HMAC-MD5, so the XDP program (and the shared
//! parser on the raw path) only checks what it can and passes a
//! well-formed AH advert to the stack ([`Outcome::AhToVerify`]); this
//! socket gets it there, runs the same parser on it, then checks the ICV,
//! the SPI and the sequence number as keepalived does. Every AH advert
//! wakes the agent: none is taken on the fast path, and none reaches the
//! kernel's last-advert map or silence timer, so a forged one can never
//! hold a backup back.

use std::{
    io,
    mem::MaybeUninit,
    sync::{Arc, Mutex},
};

use lbha_common::{
    AdvertEvent, Counter, Outcome, VridConfig,
    event::{DEFAULT_DOWN_TIMER_ADVERTS, ReceivePath, VRID_SLOTS, VridKey},
    fastpath,
    vrrp::{
        self,
        ah::{self, SeqCounter},
    },
};
use socket2::Socket;
use tokio::io::unix::AsyncFd;

use super::{ReceiveError, raw::VridArray};
use crate::{bpf::Counters, clock};

/// An instance's AH sequence number, shared by its sender and this
/// receiver (keepalived keeps one counter per instance for both).
pub type AhCounter = Arc<Mutex<SeqCounter>>;

/// The AH counters of a daemon's instances by name (see
/// `daemon::core::Core`).
pub type AhCounters = Arc<Mutex<std::collections::HashMap<String, AhCounter>>>;

/// `instance`'s counter in `counters`, a fresh one the first time.
pub fn counter_for(counters: &AhCounters, instance: &str) -> AhCounter {
    counters
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(instance.to_owned())
        .or_default()
        .clone()
}

/// Locks an [`AhCounter`]; a panic elsewhere while holding it leaves a
/// plain number, still usable.
pub fn lock(counter: &AhCounter) -> std::sync::MutexGuard<'_, SeqCounter> {
    counter
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What checking one AH instance's adverts takes.
#[derive(Clone, Debug)]
pub struct AhVerifier {
    pub vrid: u8,
    /// Its VRID table entry (auth type AH), for the shared parser.
    pub config: VridConfig,
    /// The password as keepalived keys HMAC-MD5 with it: 8 bytes, zero
    /// padded.
    pub key: [u8; 8],
    /// The instance has unicast peers: the ICV leaves out the TTL.
    pub unicast: bool,
    pub counter: AhCounter,
}

pub struct AhReceiver {
    socket: AsyncFd<Socket>,
    ifindex: u32,
    table: AhTable,
    pending: std::collections::VecDeque<AdvertEvent>,
}

/// The AH instances of one interface and what their receiver has counted:
/// everything but the socket.
pub struct AhTable {
    vrids: VridArray,
    /// Indexed by VRID (IPv4 only).
    verifiers: Box<[Option<AhVerifier>]>,
    last: Box<[AdvertEvent]>,
    counters: Counters,
}

impl AhTable {
    pub fn new(verifiers: Vec<AhVerifier>) -> Self {
        let table: Vec<(VridKey, VridConfig)> = verifiers
            .iter()
            .map(|v| (VridKey::v4(v.vrid), v.config))
            .collect();
        let mut by_vrid = vec![None; 256].into_boxed_slice();
        for v in verifiers {
            let vrid = usize::from(v.vrid);
            by_vrid[vrid] = Some(v);
        }
        Self {
            vrids: VridArray::new(&table),
            verifiers: by_vrid,
            last: vec![AdvertEvent::default(); VRID_SLOTS as usize].into_boxed_slice(),
            counters: Counters::default(),
        }
    }

    /// One received packet (from the IPv4 header on): parsed, verified,
    /// counted; the advert when it passes.
    pub fn process(
        &mut self,
        packet: &[u8],
        timestamp_ns: u64,
        ifindex: u32,
    ) -> Option<AdvertEvent> {
        self.counters.increment(Counter::PacketsSeen);
        let outcome = vrrp::parse_ipv4(packet, 0, &self.vrids);
        let event = match outcome {
            Outcome::AhToVerify(event) => event,
            other => {
                self.counters.increment(other.counter());
                if let Outcome::Drop(reason) = other {
                    tracing::debug!(?reason, "AH packet dropped");
                }
                return None;
            }
        };
        let verifier = self.verifiers[usize::from(event.vrid)].as_ref()?;
        // The parser checked the total length against the packet.
        let total = usize::from(u16::from_be_bytes([packet[2], packet[3]])).min(packet.len());
        let checked = ah::verify(&verifier.key, &packet[..total], verifier.unicast)
            .and_then(|seq| lock(&verifier.counter).accept(seq));
        if let Err(error) = checked {
            self.counters.increment(error.counter());
            tracing::debug!(?error, vrid = event.vrid, src = %event.src_ip(), "AH advert refused");
            return None;
        }
        self.counters.increment(Counter::AdvertsAccepted);
        let mut event = event;
        event.timestamp_ns = timestamp_ns;
        event.ifindex = ifindex;
        event.receive_path = ReceivePath::RawSocket as u8;
        let slot = event.slot() as usize;
        let intervals = self.vrids.0[slot]
            .as_ref()
            .map_or(DEFAULT_DOWN_TIMER_ADVERTS, VridConfig::silence_intervals);
        event.flags = fastpath::classify(&self.last[slot], &event, intervals);
        self.last[slot] = event;
        Some(event)
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }
}

impl AhReceiver {
    pub fn open(interface: &str, verifiers: Vec<AhVerifier>) -> Result<Self, ReceiveError> {
        let (socket, ifindex) = super::raw::open_raw_v4(interface, vrrp::IPPROTO_AH)?;
        tracing::info!(interface, "receiving AH adverts on a protocol-51 socket");
        Ok(Self {
            socket,
            ifindex,
            table: AhTable::new(verifiers),
            pending: std::collections::VecDeque::default(),
        })
    }

    fn drain(&mut self) -> io::Result<()> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
        while let Some(packet) = super::raw::recv_packet(self.socket.get_ref(), &mut buf)? {
            let now = clock::monotonic_ns();
            if let Some(event) = self.table.process(packet, now, self.ifindex) {
                self.pending.push_back(event);
            }
        }
        Ok(())
    }

    pub fn try_next(&mut self) -> Option<AdvertEvent> {
        if self.pending.is_empty()
            && let Err(error) = self.drain()
        {
            tracing::warn!(%error, "AH socket read failed");
        }
        self.pending.pop_front()
    }

    pub async fn next(&mut self) -> io::Result<AdvertEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            self.socket.readable().await?.clear_ready();
            self.drain()?;
        }
    }

    pub fn counters(&self) -> Counters {
        self.table.counters()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lbha_common::vrrp::{AUTH_AH, encode::Advert};
    use std::net::Ipv4Addr;

    fn table(unicast: bool) -> (AhTable, AhCounter) {
        let counter = AhCounter::default();
        let verifier = AhVerifier {
            vrid: 9,
            config: VridConfig::new(2, AUTH_AH, *b"ahsecret"),
            key: *b"ahsecret",
            unicast,
            counter: counter.clone(),
        };
        (AhTable::new(vec![verifier]), counter)
    }

    const ADVERT: Advert<'static> = Advert {
        version: 2,
        vrid: 9,
        priority: 100,
        interval_cs: 100,
        auth_pass: None,
        virtual_addrs: &[],
    };
    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    #[test]
    fn replays_restarted_senders_and_other_keys_are_counted_drops() {
        let (mut t, counter) = table(false);
        let dst = Ipv4Addr::new(224, 0, 0, 18);
        let packet = |seq| ADVERT.ipv4_ah_packet(SRC, dst, b"ahsecret", seq, 1, None);
        let first = t.process(&packet(1), 5, 3).expect("accepted");
        assert_eq!((first.vrid, first.timestamp_ns, first.ifindex), (9, 5, 3));
        assert!(t.process(&packet(2), 6, 3).is_some());
        // Replayed, or a restarted sender.
        assert!(t.process(&packet(2), 7, 3).is_none());
        assert!(t.process(&packet(1), 8, 3).is_none());
        assert_eq!(t.counters().get(Counter::DropAhReplay), 2);
        assert_eq!(lock(&counter).last(), 2);
        // Another key.
        let forged = ADVERT.ipv4_ah_packet(SRC, dst, b"other\0\0\0", 3, 1, None);
        assert!(t.process(&forged, 9, 3).is_none());
        assert_eq!(t.counters().get(Counter::DropAhBadIcv), 1);
        // Cut short: counted, never a panic.
        assert!(t.process(&packet(4)[..30], 10, 3).is_none());
        assert_eq!(t.counters().get(Counter::DropMalformedAh), 1);
        assert_eq!(t.counters().get(Counter::AdvertsAccepted), 2);
        // The counter the sender uses goes on from what was accepted.
        assert_eq!(lock(&counter).next_send(), 3);
    }

    #[test]
    fn an_instance_keeps_its_counter_by_name() {
        let counters = AhCounters::default();
        lock(&counter_for(&counters, "VI_1")).next_send();
        // A restarted VI_1 (a reload) goes on from 1; VI_2 starts afresh.
        assert_eq!(lock(&counter_for(&counters, "VI_1")).next_send(), 2);
        assert_eq!(lock(&counter_for(&counters, "VI_2")).next_send(), 1);
    }

    #[test]
    fn a_unicast_instance_checks_the_icv_without_the_ttl() {
        let (mut t, _) = table(true);
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        let mut packet = ADVERT.ipv4_ah_packet(SRC, dst, b"ahsecret", 1, 1, Some(255));
        assert!(t.process(&packet, 1, 1).is_some());
        let (mut multicast, _) = table(false);
        packet[31] = 2; // sequence number 2, ICV recomputed as a unicast sender does
        let icv = ah::icv(b"ahsecret", &packet, true).unwrap();
        packet[32..44].copy_from_slice(&icv);
        assert!(t.process(&packet, 2, 1).is_some());
        assert!(multicast.process(&packet, 2, 1).is_none());
        assert_eq!(multicast.counters().get(Counter::DropAhBadIcv), 1);
    }
}
