//! The network side of an instance: sending adverts, holding the virtual
//! addresses, announcing them with gratuitous ARP.

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4},
    sync::{Arc, Mutex},
};

use lbha_common::vrrp::{VRRP_MULTICAST_GROUP, encode::Advert};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use thiserror::Error;

use crate::sys::iface::{IfaceError, if_index, interface_mac};

#[derive(Debug, Error)]
pub enum NetError {
    #[error(transparent)]
    Interface(#[from] IfaceError),
    #[error("interface {0} has no IPv4 address to send adverts from (set unicast_src_ip)")]
    NoSourceAddress(String),
    #[error("{what} on {interface}")]
    Io {
        what: &'static str,
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error("netlink: {what} {address}/{prefix} on {interface}: {message}")]
    Netlink {
        what: &'static str,
        address: Ipv4Addr,
        prefix: u8,
        interface: String,
        message: String,
    },
}

/// Adverts ready to leave, across the instances of one interface: sent
/// together in one `sendmmsg`, so a master's cost grows with packets, not
/// with syscalls.
#[derive(Debug, Default)]
pub struct Batch {
    packets: Vec<(Arc<[u8]>, Ipv4Addr)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.packets.len()
    }

    fn push(&mut self, packet: Arc<[u8]>, to: Ipv4Addr) {
        self.packets.push((packet, to));
    }

    /// The queued packets and their destinations, for tests and transports.
    pub fn packets(&self) -> &[(Arc<[u8]>, Ipv4Addr)] {
        &self.packets
    }

    pub fn clear(&mut self) {
        self.packets.clear();
    }
}

/// Where an instance's adverts go: [`AdvertSender`] in the daemon, a
/// recorder in the driver's unit tests (which cannot open raw sockets).
pub trait AdvertOut: Send + Sync {
    /// The address adverts are sent from (the instance's primary address).
    fn source(&self) -> Ipv4Addr;
    /// Queues `advert` for every destination on `batch`.
    fn queue(&self, advert: &Advert<'_>, batch: &mut Batch);
}

/// Sends the adverts of one interface's instances: one `IPPROTO_RAW` socket
/// (we write the IP header: TTL 255, DSCP CS6 as keepalived, each
/// instance's own source) bound to the interface. Such a socket never
/// receives, so adverts reach us only through the receive path.
#[derive(Debug)]
pub struct AdvertSocket {
    socket: Socket,
    interface: String,
}

impl AdvertSocket {
    pub fn open(interface: &str) -> Result<Self, NetError> {
        let err = |what| {
            move |source| NetError::Io {
                what,
                interface: interface.to_owned(),
                source,
            }
        };
        let socket = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )
        .map_err(err("opening the advert socket"))?;
        // Bound to the interface: multicast adverts leave through it too.
        socket
            .bind_device(Some(interface.as_bytes()))
            .map_err(err("binding the advert socket"))?;
        // Sends must never block the event loop; a full queue drops adverts.
        socket
            .set_nonblocking(true)
            .map_err(err("making the advert socket non-blocking"))?;
        Ok(Self {
            socket,
            interface: interface.to_owned(),
        })
    }

    /// Sends everything in `batch` (in as few `sendmmsg` calls as the
    /// kernel takes) and empties it; returns how many went out. An error is
    /// returned only when none did.
    pub fn send(&self, batch: &mut Batch) -> Result<usize, NetError> {
        use std::{io::IoSlice, os::fd::AsRawFd};

        use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrIn, sendmmsg};

        let mut sent = 0;
        let mut last_error = None;
        let mut rest = &batch.packets[..];
        while !rest.is_empty() {
            let slices: Vec<[IoSlice<'_>; 1]> = rest
                .iter()
                .map(|(packet, _)| [IoSlice::new(packet)])
                .collect();
            let addresses: Vec<Option<SockaddrIn>> = rest
                .iter()
                .map(|(_, to)| Some(SockaddrIn::from(SocketAddrV4::new(*to, 0))))
                .collect();
            let mut headers = MultiHeaders::<SockaddrIn>::preallocate(rest.len(), None);
            let no_control: [nix::sys::socket::ControlMessage<'_>; 0] = [];
            match sendmmsg(
                self.socket.as_raw_fd(),
                &mut headers,
                &slices,
                &addresses,
                no_control,
                MsgFlags::empty(),
            ) {
                Ok(results) => {
                    let went = results.count();
                    if went == 0 {
                        break;
                    }
                    sent += went;
                    rest = &rest[went..];
                }
                Err(errno) => {
                    // The first of the rest failed (a full queue, a route
                    // gone): skip it, try the others.
                    last_error = Some(io::Error::from(errno));
                    rest = &rest[1..];
                }
            }
        }
        batch.clear();
        match (sent, last_error) {
            (0, Some(source)) => Err(NetError::Io {
                what: "sending adverts",
                interface: self.interface.clone(),
                source,
            }),
            _ => Ok(sent),
        }
    }
}

/// One instance's adverts: its source address and destinations (unicast
/// peers, or 224.0.0.18), sent through its interface's [`AdvertSocket`].
///
/// An instance's advert changes only with its priority, so the packets are
/// built once per priority and reused: a Master sends the same bytes every
/// interval, and building them (checksums included) a thousand times a
/// second per instance would cost more than sending them.
pub struct AdvertSender {
    src: Ipv4Addr,
    destinations: Vec<Ipv4Addr>,
    built: Mutex<Option<Built>>,
}

/// The packets of the last advert an instance queued: its priority, and
/// one packet per destination.
type Built = (u8, Vec<Arc<[u8]>>);

impl AdvertSender {
    pub fn new(src: Ipv4Addr, peers: &[Ipv4Addr]) -> Self {
        let destinations = if peers.is_empty() {
            vec![Ipv4Addr::from(VRRP_MULTICAST_GROUP)]
        } else {
            peers.to_vec()
        };
        Self {
            src,
            destinations,
            built: Mutex::new(None),
        }
    }
}

impl AdvertOut for AdvertSender {
    fn source(&self) -> Ipv4Addr {
        self.src
    }

    fn queue(&self, advert: &Advert<'_>, batch: &mut Batch) {
        let mut built = self
            .built
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if built
            .as_ref()
            .is_none_or(|(priority, _)| *priority != advert.priority)
        {
            let packets = self
                .destinations
                .iter()
                .map(|dst| Arc::from(advert.ipv4_packet(self.src, *dst)))
                .collect();
            *built = Some((advert.priority, packets));
        }
        if let Some((_, packets)) = built.as_ref() {
            for (packet, dst) in packets.iter().zip(&self.destinations) {
                batch.push(packet.clone(), *dst);
            }
        }
    }
}

/// Adds and removes virtual addresses through rtnetlink (what `ip addr`
/// does, without forking it).
#[derive(Clone)]
pub struct Addresses {
    handle: rtnetlink::Handle,
}

impl Addresses {
    /// Opens the netlink connection; must be called inside the runtime.
    pub fn open() -> io::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    fn netlink_error(
        what: &'static str,
        interface: &str,
        (address, prefix): (Ipv4Addr, u8),
        error: rtnetlink::Error,
    ) -> NetError {
        NetError::Netlink {
            what,
            address,
            prefix,
            interface: interface.to_owned(),
            message: error.to_string(),
        }
    }

    /// Adds the address; already present is fine.
    pub async fn add(&self, interface: &str, vip: (Ipv4Addr, u8)) -> Result<(), NetError> {
        let index = if_index(interface)?;
        match self
            .handle
            .address()
            .add(index, vip.0.into(), vip.1)
            .execute()
            .await
        {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            result => result.map_err(|e| Self::netlink_error("adding", interface, vip, e)),
        }
    }

    /// Removes the address; already absent is fine.
    pub async fn remove(&self, interface: &str, vip: (Ipv4Addr, u8)) -> Result<(), NetError> {
        let index = if_index(interface)?;
        let message = rtnetlink::AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(vip.0, vip.1)
            .build();
        match self.handle.address().del(message).execute().await {
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == -libc::EADDRNOTAVAIL || e.raw_code() == -libc::ENODEV =>
            {
                Ok(())
            }
            result => result.map_err(|e| Self::netlink_error("removing", interface, vip, e)),
        }
    }
}

/// Sends gratuitous ARP on one interface, so switches and neighbours learn
/// the new master's MAC at once (RFC 5798 6.4.1: one broadcast per address).
///
/// The packet socket is opened once and kept: closing a packet socket waits
/// for an RCU grace period in the kernel (`synchronize_net()` in
/// `packet_release`), 10-20 ms measured here, which at every takeover would
/// stall the daemon's single runtime thread, floating-IP request included.
/// It is opened with protocol 0, so it sends only and never queues frames.
#[derive(Debug)]
pub struct GarpSender {
    interface: String,
    broadcast: SockAddr,
    socket: Socket,
}

impl GarpSender {
    pub fn open(interface: &str) -> Result<Self, NetError> {
        let ifindex = if_index(interface)?;
        // Protocol 0: the socket sends only, nothing is ever queued on it.
        let socket = Socket::new(Domain::PACKET, Type::RAW.cloexec(), None).map_err(|source| {
            NetError::Io {
                what: "opening a packet socket",
                interface: interface.to_owned(),
                source,
            }
        })?;
        Ok(Self {
            interface: interface.to_owned(),
            broadcast: link_broadcast(ifindex),
            socket,
        })
    }

    /// One gratuitous ARP per address, from the interface's current MAC.
    pub fn send(&self, addresses: &[Ipv4Addr]) -> Result<(), NetError> {
        let err = |what| {
            move |source| NetError::Io {
                what,
                interface: self.interface.clone(),
                source,
            }
        };
        let mac = interface_mac(&self.interface)?;
        for address in addresses {
            let frame = gratuitous_arp_frame(mac, *address);
            self.socket
                .send_to(&frame, &self.broadcast)
                .map_err(err("sending gratuitous ARP"))?;
        }
        Ok(())
    }
}

/// The link-layer broadcast address of interface `ifindex`, for ARP.
fn link_broadcast(ifindex: u32) -> SockAddr {
    const ETH_P_ARP: u16 = 0x0806;
    let mut storage = socket2::SockAddrStorage::zeroed();
    // SAFETY: the storage is large and aligned enough for any socket
    // address, sockaddr_ll included; it is zeroed, which is a valid
    // sockaddr_ll, and every field is written before it is used.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as u16;
    ll.sll_protocol = ETH_P_ARP.to_be();
    ll.sll_ifindex = ifindex as i32;
    ll.sll_halen = 6;
    ll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: the storage holds an initialised sockaddr_ll of this length.
    unsafe {
        SockAddr::new(
            storage,
            size_of::<libc::sockaddr_ll>() as socket2::socklen_t,
        )
    }
}

/// A broadcast ARP request for `address` from `address` (the form keepalived
/// sends), padded to the Ethernet minimum.
pub fn gratuitous_arp_frame(mac: [u8; 6], address: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06]); // ARP
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]); // Ethernet/IPv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&address.octets());
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&address.octets());
    f.resize(60, 0);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advert(vrid: u8) -> Advert<'static> {
        Advert {
            version: 3,
            vrid,
            priority: 100,
            interval_cs: 100,
            auth_pass: None,
            virtual_addrs: &[],
        }
    }

    #[test]
    fn an_instance_queues_one_packet_per_destination() {
        let mut batch = Batch::default();
        let peers = [Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)];
        AdvertSender::new(Ipv4Addr::new(10, 0, 0, 1), &peers).queue(&advert(7), &mut batch);
        AdvertSender::new(Ipv4Addr::new(10, 0, 0, 1), &[]).queue(&advert(8), &mut batch);
        let to: Vec<Ipv4Addr> = batch.packets().iter().map(|(_, to)| *to).collect();
        assert_eq!(to, [peers[0], peers[1], Ipv4Addr::new(224, 0, 0, 18)]);
        let (packet, _) = &batch.packets()[0];
        assert_eq!(&packet[12..16], &[10, 0, 0, 1], "the instance's own source");
        assert_eq!(packet[8], 255, "TTL 255");
    }

    /// One sendmmsg carries every queued advert (loopback; needs root for
    /// the raw sockets).
    #[test]
    fn a_batch_leaves_in_one_call_and_arrives_whole() {
        if !lbha_harness::require_root() {
            return;
        }
        let receiver = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(lbha_common::vrrp::IPPROTO_VRRP))),
        )
        .unwrap();
        receiver.bind_device(Some(b"lo")).unwrap();
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let socket = AdvertSocket::open("lo").unwrap();
        let mut batch = Batch::default();
        for vrid in 1..=50 {
            AdvertSender::new(Ipv4Addr::LOCALHOST, &[Ipv4Addr::LOCALHOST])
                .queue(&advert(vrid), &mut batch);
        }
        assert_eq!(socket.send(&mut batch).unwrap(), 50);
        assert!(batch.is_empty());
        let mut vrids = Vec::new();
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 256];
        while vrids.len() < 50 {
            let len = receiver.recv(&mut buf).expect("every advert arrives");
            // SAFETY: recv initialised the first `len` bytes.
            let packet: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), len) };
            vrids.push(packet[21]);
        }
        assert_eq!(
            vrids,
            (1..=50).collect::<Vec<u8>>(),
            "all of them, in order"
        );
    }

    #[test]
    fn gratuitous_arp_announces_the_address_as_its_own() {
        let mac = [2, 0, 0, 0, 0, 1];
        let f = gratuitous_arp_frame(mac, Ipv4Addr::new(203, 0, 113, 10));
        assert_eq!(f.len(), 60);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[22..28], &mac, "sender MAC");
        assert_eq!(&f[28..32], &[203, 0, 113, 10], "sender IP");
        assert_eq!(&f[38..42], &[203, 0, 113, 10], "target IP = sender IP");
    }
}
