//! Fallback receive path: an `AF_INET`/`SOCK_RAW` protocol-112 socket bound to
//! the interface, for kernels or permissions without XDP. Same parser, same
//! counters, same change classification as the XDP program.

use std::{io, mem::MaybeUninit, net::Ipv4Addr};

use lbha_common::{
    AdvertEvent, Counter, Outcome, VridConfig,
    event::{DEFAULT_DOWN_TIMER_ADVERTS, ReceivePath, VRID_SLOTS, VridKey},
    fastpath,
    vrrp::{self, VRRP_MULTICAST_GROUP, VridTable},
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::ReceiveError;
use crate::{bpf::Counters, clock};

const SLOTS: usize = VRID_SLOTS as usize;

/// VRID table held in user space (the raw path has no BPF map), indexed as
/// the XDP program's by [`VridKey::index`].
pub struct VridArray(pub Box<[Option<VridConfig>]>);

impl VridArray {
    pub fn new(vrids: &[(VridKey, VridConfig)]) -> Self {
        let mut table = vec![None; SLOTS].into_boxed_slice();
        for (key, config) in vrids {
            table[key.index() as usize] = Some(*config);
        }
        Self(table)
    }
}

impl VridTable for VridArray {
    fn lookup(&self, key: VridKey) -> Option<&VridConfig> {
        self.0[key.index() as usize]
            .as_ref()
            .filter(|c| c.enabled != 0)
    }
}

pub struct RawSocketReceiver {
    socket: AsyncFd<Socket>,
    interface: String,
    ifindex: u32,
    vrids: VridArray,
    /// Indexed by [`VridKey::index`], as the XDP program's `LAST_ADVERT`.
    last: Box<[AdvertEvent]>,
    counters: Counters,
    /// Accepted adverts not yet handed out (the socket may deliver several
    /// before anyone asks).
    pending: std::collections::VecDeque<AdvertEvent>,
}

impl RawSocketReceiver {
    pub fn open(interface: &str, vrids: &[(VridKey, VridConfig)]) -> Result<Self, ReceiveError> {
        let ifindex = crate::sys::iface::if_index(interface)
            .map_err(|_| ReceiveError::UnknownInterface(interface.into()))?;
        let err = |source| ReceiveError::RawSocket {
            interface: interface.to_owned(),
            source,
        };
        let socket = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(vrrp::IPPROTO_VRRP))),
        )
        .map_err(err)?;
        socket
            .bind_device(Some(interface.as_bytes()))
            .map_err(err)?;
        // Multicast adverts reach a raw socket only once the group is joined;
        // unicast peers do not need it, so a failure here is not fatal.
        let group = Ipv4Addr::from(VRRP_MULTICAST_GROUP);
        if let Err(error) =
            socket.join_multicast_v4_n(&group, &InterfaceIndexOrAddress::Index(ifindex))
        {
            tracing::warn!(interface, %error, "could not join 224.0.0.18; only unicast adverts will be seen");
        }
        socket.set_nonblocking(true).map_err(err)?;
        // SAFETY: the Socket owns its fd and returns that same fd until dropped.
        let socket = unsafe { AsyncFd::register(socket) }.map_err(|e| err(e.into_parts().1))?;
        tracing::info!(interface, "receiving VRRP adverts on a raw socket");
        Ok(Self {
            socket,
            interface: interface.to_owned(),
            ifindex,
            vrids: VridArray::new(vrids),
            last: vec![AdvertEvent::default(); SLOTS].into_boxed_slice(),
            counters: Counters::default(),
            pending: std::collections::VecDeque::default(),
        })
    }

    /// Runs one received IPv4 packet through the shared rules, updating the
    /// counters and last-advert table as the XDP program does.
    fn process(&mut self, packet: &[u8], timestamp_ns: u64) -> Option<AdvertEvent> {
        self.counters.increment(Counter::PacketsSeen);
        let outcome = vrrp::parse_ipv4(packet, 0, &self.vrids);
        self.counters.increment(outcome.counter());
        let Outcome::Accept(mut event) = outcome else {
            if let Outcome::Drop(reason) = outcome {
                tracing::debug!(?reason, "VRRP packet dropped");
            }
            return None;
        };
        event.timestamp_ns = timestamp_ns;
        event.ifindex = self.ifindex;
        event.receive_path = ReceivePath::RawSocket as u8;
        let slot = event.slot() as usize;
        let silence_intervals = self.vrids.0[slot]
            .as_ref()
            .map_or(DEFAULT_DOWN_TIMER_ADVERTS, VridConfig::silence_intervals);
        let last = &mut self.last[slot];
        event.flags = fastpath::classify(last, &event, silence_intervals);
        *last = event;
        self.counters.increment(if event.flags == 0 {
            Counter::WakeupsSaved
        } else {
            Counter::Wakeups
        });
        Some(event)
    }

    /// Reads everything the socket holds right now.
    fn drain(&mut self) -> io::Result<()> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
        loop {
            match self.socket.get_ref().recv(&mut buf) {
                Ok(len) => {
                    let now = clock::monotonic_ns();
                    // SAFETY: recv initialised the first `len` bytes.
                    let packet: &[u8] =
                        unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), len) };
                    if let Some(event) = self.process(packet, now) {
                        self.pending.push_back(event);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub fn try_next(&mut self) -> Option<AdvertEvent> {
        if self.pending.is_empty()
            && let Err(error) = self.drain()
        {
            tracing::warn!(%error, "raw VRRP socket read failed");
        }
        self.pending.pop_front()
    }

    pub async fn next(&mut self) -> Result<AdvertEvent, ReceiveError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let interface = self.interface.clone();
            let err = |source| ReceiveError::RawSocket { interface, source };
            let ready = async {
                let mut guard = self.socket.readable().await?;
                // Cleared before reading: drain() reads until EWOULDBLOCK, so
                // any packet arriving afterwards raises readiness again.
                guard.clear_ready();
                Ok(())
            };
            ready.await.and_then(|()| self.drain()).map_err(err)?;
        }
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn last_advert(&self, key: VridKey) -> Option<AdvertEvent> {
        let event = self.last[key.index() as usize];
        (event.timestamp_ns != 0).then_some(event)
    }
}
