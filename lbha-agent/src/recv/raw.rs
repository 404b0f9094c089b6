//! Fallback receive path: an `AF_INET`/`SOCK_RAW` protocol-112 socket bound to
//! the interface, for kernels or permissions without XDP, and an `AF_INET6`
//! one when the interface has IPv6 instances. Same parser, same counters,
//! same change classification as the XDP program.

use std::{
    io,
    mem::MaybeUninit,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
};

use lbha_common::{
    AdvertEvent, Counter, Outcome, VridConfig,
    event::{DEFAULT_DOWN_TIMER_ADVERTS, Family, ReceivePath, VRID_SLOTS, VridKey},
    fastpath,
    vrrp::{self, IPV6_HEADER_LEN, VRRP_IPV6_MULTICAST_GROUP, VRRP_MULTICAST_GROUP, VridTable},
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
    /// The IPv6 socket, opened only when an IPv6 VRID is configured.
    socket_v6: Option<AsyncFd<Socket>>,
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

/// A non-blocking raw IPv4 socket of `protocol` bound to `interface`, in
/// 224.0.0.18 (multicast adverts reach a raw socket only once the group is
/// joined; unicast peers do not need it, so failing to join is only
/// logged), and the interface's index.
pub(super) fn open_raw_v4(
    interface: &str,
    protocol: u8,
) -> Result<(AsyncFd<Socket>, u32), ReceiveError> {
    let ifindex = crate::sys::iface::if_index(interface)
        .map_err(|_| ReceiveError::UnknownInterface(interface.into()))?;
    let err = |source| ReceiveError::RawSocket {
        interface: interface.to_owned(),
        source,
    };
    let socket = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(i32::from(protocol))),
    )
    .map_err(err)?;
    socket
        .bind_device(Some(interface.as_bytes()))
        .map_err(err)?;
    let group = Ipv4Addr::from(VRRP_MULTICAST_GROUP);
    if let Err(error) = socket.join_multicast_v4_n(&group, &InterfaceIndexOrAddress::Index(ifindex))
    {
        tracing::warn!(interface, protocol, %error, "could not join 224.0.0.18; only unicast adverts will be seen");
    }
    socket.set_nonblocking(true).map_err(err)?;
    // SAFETY: the Socket owns its fd and returns that same fd until dropped.
    let socket = unsafe { AsyncFd::register(socket) }.map_err(|e| err(e.into_parts().1))?;
    Ok((socket, ifindex))
}

/// The next packet waiting on the non-blocking `socket`, read into `buf`;
/// `None` once none is left (`EWOULDBLOCK`), an interrupted read retried.
pub(super) fn recv_packet<'b>(
    socket: &Socket,
    buf: &'b mut [MaybeUninit<u8>],
) -> io::Result<Option<&'b [u8]>> {
    loop {
        match socket.recv(buf) {
            Ok(len) => {
                // SAFETY: recv initialised the first `len` bytes.
                let packet = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), len) };
                return Ok(Some(packet));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

impl RawSocketReceiver {
    pub fn open(interface: &str, vrids: &[(VridKey, VridConfig)]) -> Result<Self, ReceiveError> {
        let (socket, ifindex) = open_raw_v4(interface, vrrp::IPPROTO_VRRP)?;
        let err = |source| ReceiveError::RawSocket {
            interface: interface.to_owned(),
            source,
        };
        let socket_v6 = if vrids.iter().any(|(key, _)| key.family == Family::Ipv6) {
            let socket = open_v6(interface, ifindex).map_err(err)?;
            // SAFETY: as above.
            Some(unsafe { AsyncFd::register(socket) }.map_err(|e| err(e.into_parts().1))?)
        } else {
            None
        };
        tracing::info!(
            interface,
            ipv6 = socket_v6.is_some(),
            "receiving VRRP adverts on a raw socket"
        );
        Ok(Self {
            socket,
            socket_v6,
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
        let outcome = vrrp::parse_ipv4(packet, 0, &self.vrids);
        self.account(outcome, timestamp_ns)
    }

    /// The same for an IPv6 packet as [`recv_v6`] rebuilds it (the kernel
    /// strips the IPv6 header and walks its extension headers; the
    /// addresses and hop limit come from the socket).
    fn process_v6(&mut self, packet: &[u8], timestamp_ns: u64) -> Option<AdvertEvent> {
        let outcome = vrrp::parse_ipv6(packet, 0, &self.vrids);
        self.account(outcome, timestamp_ns)
    }

    fn account(&mut self, outcome: Outcome, timestamp_ns: u64) -> Option<AdvertEvent> {
        self.counters.increment(Counter::PacketsSeen);
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

    /// Reads everything the sockets hold right now.
    fn drain(&mut self) -> io::Result<()> {
        self.drain_v4()?;
        self.drain_v6()
    }

    fn drain_v6(&mut self) -> io::Result<()> {
        let Some(socket) = &self.socket_v6 else {
            return Ok(());
        };
        let fd = socket.get_ref().as_raw_fd();
        let mut buf = vec![0u8; IPV6_HEADER_LEN + vrrp::MAX_VRRP_V6_LEN + 64];
        loop {
            match recv_v6(fd, &mut buf) {
                Ok(len) => {
                    let now = clock::monotonic_ns();
                    let packet = buf[..len].to_vec();
                    if let Some(event) = self.process_v6(&packet, now) {
                        self.pending.push_back(event);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn drain_v4(&mut self) -> io::Result<()> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
        while let Some(packet) = recv_packet(self.socket.get_ref(), &mut buf)? {
            let now = clock::monotonic_ns();
            if let Some(event) = self.process(packet, now) {
                self.pending.push_back(event);
            }
        }
        Ok(())
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
                // Cleared before reading: drain() reads until EWOULDBLOCK, so
                // any packet arriving afterwards raises readiness again.
                match &self.socket_v6 {
                    None => self.socket.readable().await?.clear_ready(),
                    Some(v6) => tokio::select! {
                        guard = self.socket.readable() => guard?.clear_ready(),
                        guard = v6.readable() => guard?.clear_ready(),
                    },
                }
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

/// The IPv6 raw socket: protocol 112 on `interface`, in ff02::12, with the
/// hop limit and destination of every packet as ancillary data (the
/// socket gives no IPv6 header, and the rules need both). The kernel is
/// not asked to check the VRRP checksum (IPV6_CHECKSUM): it would drop bad
/// ones uncounted; the shared rules check it over the pseudo-header.
fn open_v6(interface: &str, ifindex: u32) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::IPV6,
        Type::RAW,
        Some(Protocol::from(i32::from(vrrp::IPPROTO_VRRP))),
    )?;
    socket.bind_device(Some(interface.as_bytes()))?;
    for option in [libc::IPV6_RECVHOPLIMIT, libc::IPV6_RECVPKTINFO] {
        let on: libc::c_int = 1;
        // SAFETY: setsockopt on an fd we own, with a c_int value of the
        // size passed.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IPV6,
                option,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let group = Ipv6Addr::from(VRRP_IPV6_MULTICAST_GROUP);
    if let Err(error) = socket.join_multicast_v6(&group, ifindex) {
        tracing::warn!(interface, %error, "could not join ff02::12; only unicast IPv6 adverts will be seen");
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// One `recvmsg` on the IPv6 raw socket: the VRRP packet into
/// `buf[40..]`, and in `buf[..40]` the IPv6 header rebuilt from its
/// source, destination and hop limit ([`vrrp::ipv6_header`]); returns the
/// length of both. A packet without the hop limit or destination (which
/// the socket options ask for on every one) gets hop limit 0 and
/// destination ::, which the rules reject.
fn recv_v6(fd: std::os::fd::RawFd, buf: &mut [u8]) -> io::Result<usize> {
    let (header, payload) = buf.split_at_mut(IPV6_HEADER_LEN);
    // SAFETY: all-zero is a valid sockaddr_in6 and msghdr.
    let mut name: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut control = [0u64; 16]; // 128 bytes, aligned for cmsghdr
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut name).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // `size_t` in glibc's msghdr, `socklen_t` in musl's: 128 fits either.
    msg.msg_controllen = size_of_val(&control) as _;
    // SAFETY: msg points to buffers that outlive the call, with their sizes.
    let len = unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_DONTWAIT) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    let (mut dst, mut hop_limit) = ([0u8; 16], 0u8);
    // SAFETY: the CMSG macros walk the control buffer recvmsg filled, within
    // msg_controllen; each payload is read unaligned at its CMSG_DATA.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                    let value = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                    hop_limit = u8::try_from(value).unwrap_or(0);
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    dst = info.ipi6_addr.s6_addr;
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    // A datagram longer than the buffer is cut: longer than any advert, so
    // its length check fails, as it should.
    let len = len as usize;
    header.copy_from_slice(&vrrp::ipv6_header(
        name.sin6_addr.s6_addr,
        dst,
        hop_limit,
        len as u16,
    ));
    Ok(IPV6_HEADER_LEN + len)
}
