//! The network side of an instance: sending adverts (over IPv4 or IPv6),
//! holding the virtual addresses, announcing them with gratuitous ARP
//! (IPv4) or unsolicited Neighbor Advertisements (IPv6).

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6},
    sync::{Arc, Mutex},
};

use lbha_common::vrrp::{VRRP_MULTICAST_GROUP, encode::Advert};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use thiserror::Error;

use crate::{
    recv::ah::AhCounter,
    sys::iface::{IfaceError, if_index, interface_mac},
};

/// RFC 5798's IPv6 multicast group for VRRP, ff02::12.
pub const VRRP_MULTICAST_GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// All-nodes, where unsolicited Neighbor Advertisements go (RFC 4861 7.2.6).
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

#[derive(Debug, Error)]
pub enum NetError {
    #[error(transparent)]
    Interface(#[from] IfaceError),
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
        address: IpAddr,
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
    packets: Vec<(Arc<[u8]>, IpAddr)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.packets.len()
    }

    fn push(&mut self, packet: Arc<[u8]>, to: IpAddr) {
        self.packets.push((packet, to));
    }

    /// The queued packets and their destinations, for tests and transports.
    pub fn packets(&self) -> &[(Arc<[u8]>, IpAddr)] {
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
    fn source(&self) -> IpAddr;
    /// Queues `advert` for every destination on `batch`.
    fn queue(&self, advert: &Advert<'_>, batch: &mut Batch);
}

/// Sends the adverts of one interface's instances: one `IPPROTO_RAW` socket
/// per family (we write the IP header: TTL / hop limit 255, DSCP CS6 as
/// keepalived, each instance's own source; the IPv6 one only when the
/// interface has IPv6 instances) bound to the interface. Such a socket never
/// receives, so adverts reach us only through the receive path.
///
/// IPv6 too is written whole, header and VRRP checksum over the IPv6
/// pseudo-header included, rather than sent on an `IPPROTO_VRRP` socket with
/// `IPV6_CHECKSUM` and hop-limit options as keepalived does: such a socket
/// would receive a copy of every VRRP packet on the host (which the receive
/// path already takes) that nobody reads, and the packets are built once
/// per priority and reused anyway, so the checksum costs nothing per send.
#[derive(Debug)]
pub struct AdvertSocket {
    v4: Socket,
    v6: Option<Socket>,
    interface: String,
    ifindex: u32,
}

impl AdvertSocket {
    /// The IPv4 socket, and with `ipv6` the IPv6 one.
    pub fn open(interface: &str, ipv6: bool) -> Result<Self, NetError> {
        let ifindex = if_index(interface)?;
        let v4 = Self::raw(interface, Domain::IPV4)?;
        let v6 = if ipv6 {
            Some(Self::raw(interface, Domain::IPV6)?)
        } else {
            None
        };
        Ok(Self {
            v4,
            v6,
            interface: interface.to_owned(),
            ifindex,
        })
    }

    /// A non-blocking `IPPROTO_RAW` socket of `domain` bound to `interface`
    /// (IPv6's implies `IPV6_HDRINCL`, as IPv4's implies `IP_HDRINCL`).
    fn raw(interface: &str, domain: Domain) -> Result<Socket, NetError> {
        let err = |what| {
            move |source| NetError::Io {
                what,
                interface: interface.to_owned(),
                source,
            }
        };
        let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))
            .map_err(err(if domain == Domain::IPV6 {
                "opening the IPv6 advert socket"
            } else {
                "opening the advert socket"
            }))?;
        // Bound to the interface: multicast adverts leave through it too.
        socket
            .bind_device(Some(interface.as_bytes()))
            .map_err(err("binding the advert socket"))?;
        // Sends must never block the event loop; a full queue drops adverts.
        socket
            .set_nonblocking(true)
            .map_err(err("making the advert socket non-blocking"))?;
        Ok(socket)
    }

    /// Sends everything in `batch` (in as few `sendmmsg` calls as the
    /// kernel takes, one run per family) and empties it; returns how many
    /// went out. An error is returned only when none did.
    pub fn send(&self, batch: &mut Batch) -> Result<usize, NetError> {
        use std::os::fd::AsRawFd;

        use nix::sys::socket::{SockaddrIn, SockaddrIn6};

        let (v4, v6): (Vec<_>, Vec<_>) = batch.packets.iter().partition(|(_, to)| to.is_ipv4());
        let mut sent = 0;
        let mut last_error = None;
        let (went, error) = send_all(self.v4.as_raw_fd(), &v4, |to| match to {
            IpAddr::V4(to) => Some(SockaddrIn::from(SocketAddrV4::new(to, 0))),
            IpAddr::V6(_) => None,
        });
        sent += went;
        last_error = last_error.or(error);
        if !v6.is_empty() {
            match &self.v6 {
                Some(socket) => {
                    // The scope makes link-local and multicast destinations
                    // leave through this interface whatever the routes say.
                    let scope = self.ifindex;
                    let (went, error) = send_all(socket.as_raw_fd(), &v6, |to| match to {
                        IpAddr::V6(to) => {
                            Some(SockaddrIn6::from(SocketAddrV6::new(to, 0, 0, scope)))
                        }
                        IpAddr::V4(_) => None,
                    });
                    sent += went;
                    last_error = last_error.or(error);
                }
                None => {
                    last_error = Some(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "no IPv6 advert socket on this interface",
                    ));
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

/// Sends `packets` on `fd` with `sendmmsg`, each to `address(destination)`;
/// returns how many went out and the last error.
fn send_all<S: nix::sys::socket::SockaddrLike + Copy>(
    fd: std::os::fd::RawFd,
    packets: &[&(Arc<[u8]>, IpAddr)],
    address: impl Fn(IpAddr) -> Option<S>,
) -> (usize, Option<io::Error>) {
    use std::io::IoSlice;

    use nix::sys::socket::{MsgFlags, MultiHeaders, sendmmsg};

    let mut sent = 0;
    let mut last_error = None;
    let mut rest = packets;
    while !rest.is_empty() {
        let slices: Vec<[IoSlice<'_>; 1]> = rest
            .iter()
            .map(|(packet, _)| [IoSlice::new(packet)])
            .collect();
        let addresses: Vec<Option<S>> = rest.iter().map(|(_, to)| address(*to)).collect();
        let mut headers = MultiHeaders::<S>::preallocate(rest.len(), None);
        let no_control: [nix::sys::socket::ControlMessage<'_>; 0] = [];
        match sendmmsg(
            fd,
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
    (sent, last_error)
}

/// One instance's adverts: its source address and destinations (unicast
/// peers, or 224.0.0.18 / ff02::12), sent through its interface's
/// [`AdvertSocket`].
///
/// An instance's advert changes only with its priority, so the packets are
/// built once per priority and reused: a Master sends the same bytes every
/// interval, and building them (checksums included) a thousand times a
/// second per instance would cost more than sending them.
pub struct AdvertSender {
    src: IpAddr,
    destinations: Vec<IpAddr>,
    /// TTL / hop limit: 255, or keepalived's `unicast_ttl` to unicast peers.
    ttl: u8,
    built: Mutex<Option<Built>>,
    /// keepalived's `auth_type AH`: every advert is built afresh.
    ah: Option<AhSend>,
    /// A socket of the instance's own (bound to its `use_vmac` macvlan,
    /// so adverts leave from the virtual MAC): its adverts are sent at
    /// once, not with the interface's batch.
    own: Option<AdvertSocket>,
}

/// What an AH instance's adverts need besides the advert: the key, the
/// sequence counter it shares with the receive side, and the IP id, which
/// the ICV covers (so lbha picks it, never 0, as keepalived does: the
/// kernel would fill in a 0 after the ICV was computed).
struct AhSend {
    key: [u8; 8],
    counter: AhCounter,
    unicast: bool,
    ip_id: Mutex<u16>,
}

/// The packets of the last advert an instance queued: its priority, and
/// one packet per destination.
type Built = (u8, Vec<Arc<[u8]>>);

impl AdvertSender {
    /// `src` and `peers` are of one family (validation makes sure).
    pub fn new(src: IpAddr, peers: &[IpAddr]) -> Self {
        let destinations = if peers.is_empty() {
            vec![match src {
                IpAddr::V4(_) => IpAddr::from(VRRP_MULTICAST_GROUP),
                IpAddr::V6(_) => IpAddr::V6(VRRP_MULTICAST_GROUP_V6),
            }]
        } else {
            peers.to_vec()
        };
        Self {
            src,
            destinations,
            ttl: lbha_common::vrrp::VRRP_TTL,
            built: Mutex::new(None),
            ah: None,
            own: None,
        }
    }

    /// The same, with keepalived's `unicast_ttl`: adverts to unicast peers
    /// carry `ttl` (multicast ones keep 255, which receivers require).
    pub fn with_unicast_ttl(mut self, ttl: u8) -> Self {
        if self.unicast() {
            self.ttl = ttl;
        }
        self
    }

    fn unicast(&self) -> bool {
        self.destinations.iter().all(|d| !d.is_multicast())
    }

    /// The same, sending through `socket` rather than the interface's.
    pub fn with_socket(mut self, socket: AdvertSocket) -> Self {
        self.own = Some(socket);
        self
    }

    /// The same, sending keepalived's AH adverts keyed with `key` and
    /// numbered from `counter`.
    pub fn with_ah(mut self, key: [u8; 8], counter: AhCounter) -> Self {
        let unicast = self.unicast();
        self.ah = Some(AhSend {
            key,
            counter,
            unicast,
            ip_id: Mutex::new(0),
        });
        self
    }

    /// One AH advert to every destination: one sequence number and IP id
    /// for all of them, as keepalived numbers an advert sent to several
    /// unicast peers.
    fn queue_ah(&self, ah: &AhSend, advert: &Advert<'_>, batch: &mut Batch) {
        let IpAddr::V4(src) = self.src else {
            // Validation allows AH on IPv4 instances only.
            return;
        };
        let seq = crate::recv::ah::lock(&ah.counter).next_send();
        let ip_id = {
            let mut id = ah
                .ip_id
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *id = id.checked_add(1).unwrap_or(1);
            *id
        };
        for dst in &self.destinations {
            if let IpAddr::V4(to) = dst {
                let ttl = ah.unicast.then_some(self.ttl);
                let packet = advert.ipv4_ah_packet(src, *to, &ah.key, seq, ip_id, ttl);
                batch.push(Arc::from(packet), *dst);
            }
        }
    }
}

impl AdvertOut for AdvertSender {
    fn source(&self) -> IpAddr {
        self.src
    }

    fn queue(&self, advert: &Advert<'_>, batch: &mut Batch) {
        if let Some(own) = &self.own {
            let mut mine = Batch::default();
            self.queue_into(advert, &mut mine);
            if let Err(error) = own.send(&mut mine) {
                tracing::warn!(%error, "adverts not sent");
            }
            return;
        }
        self.queue_into(advert, batch);
    }
}

impl AdvertSender {
    fn queue_into(&self, advert: &Advert<'_>, batch: &mut Batch) {
        if let Some(ah) = &self.ah {
            self.queue_ah(ah, advert, batch);
            return;
        }
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
                .filter_map(|dst| match (self.src, *dst) {
                    (IpAddr::V4(src), IpAddr::V4(dst)) => {
                        Some(advert.ipv4_packet_with_ttl(src, dst, self.ttl))
                    }
                    (IpAddr::V6(src), IpAddr::V6(dst)) => {
                        Some(advert.ipv6_packet_with_hop_limit(src, dst, self.ttl))
                    }
                    // Refused by validation; never a packet with a source
                    // of the other family.
                    _ => None,
                })
                .map(Arc::from)
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
    /// Shared with `routes.rs` (virtual routes and rules).
    pub(super) handle: rtnetlink::Handle,
}

impl Addresses {
    /// Opens the netlink connection; must be called inside the runtime.
    pub fn open() -> io::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// The netlink handle, for links (`use_vmac`'s macvlans).
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    fn netlink_error(
        what: &'static str,
        interface: &str,
        (address, prefix): (IpAddr, u8),
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

    /// Adds the address; already present is fine. An IPv6 address is added
    /// with `nodad`, as keepalived adds it: usable at once (no tentative
    /// second or two while the new master already answers for it), and a
    /// short split brain cannot leave it "dadfailed" for good; VRRP is the
    /// duplicate detection here.
    pub async fn add(&self, interface: &str, vip: (IpAddr, u8)) -> Result<(), NetError> {
        use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};

        let index = if_index(interface)?;
        let mut request = self.handle.address().add(index, vip.0, vip.1);
        if vip.0.is_ipv6() {
            let message = request.message_mut();
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match request.execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            result => result.map_err(|e| Self::netlink_error("adding", interface, vip, e)),
        }
    }

    /// Removes the address; already absent is fine.
    pub async fn remove(&self, interface: &str, vip: (IpAddr, u8)) -> Result<(), NetError> {
        let index = if_index(interface)?;
        let message = match vip.0 {
            IpAddr::V4(address) => rtnetlink::AddressMessageBuilder::<Ipv4Addr>::new()
                .index(index)
                .address(address, vip.1)
                .build(),
            IpAddr::V6(address) => rtnetlink::AddressMessageBuilder::<Ipv6Addr>::new()
                .index(index)
                .address(address, vip.1)
                .build(),
        };
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

/// Announces the virtual addresses on one interface, so switches and
/// neighbours learn the new master's MAC at once (RFC 5798 6.4.1): one
/// gratuitous ARP broadcast per IPv4 address, one unsolicited Neighbor
/// Advertisement to all-nodes per IPv6 address (RFC 4861 7.2.6), both
/// written whole as keepalived writes them.
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
    all_nodes: SockAddr,
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
            broadcast: link_address(ifindex, ETH_P_ARP, [0xff; 6]),
            all_nodes: link_address(ifindex, ETH_P_IPV6, ALL_NODES_MAC),
            socket,
        })
    }

    /// One gratuitous ARP per IPv4 address and one Neighbor Advertisement
    /// per IPv6 one, from the interface's current MAC.
    pub fn send(&self, addresses: &[IpAddr]) -> Result<(), NetError> {
        let err = |what| {
            move |source| NetError::Io {
                what,
                interface: self.interface.clone(),
                source,
            }
        };
        let mac = interface_mac(&self.interface)?;
        // keepalived sets the Router flag when the interface forwards IPv6
        // (read at each takeover, as it can change).
        let router = addresses.iter().any(IpAddr::is_ipv6) && ipv6_forwarding(&self.interface);
        for address in addresses {
            match address {
                IpAddr::V4(address) => {
                    let frame = gratuitous_arp_frame(mac, *address);
                    self.socket
                        .send_to(&frame, &self.broadcast)
                        .map_err(err("sending gratuitous ARP"))?;
                }
                IpAddr::V6(address) => {
                    let frame = unsolicited_na_frame(mac, *address, router);
                    self.socket
                        .send_to(&frame, &self.all_nodes)
                        .map_err(err("sending an unsolicited Neighbor Advertisement"))?;
                }
            }
        }
        Ok(())
    }
}

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
/// ff02::1's Ethernet address (RFC 2464 7: 33:33 and the group's last 32 bits).
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// Whether `interface` forwards IPv6 (`net.ipv6.conf.IF.forwarding`).
fn ipv6_forwarding(interface: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{interface}/forwarding"))
        .is_ok_and(|v| v.trim() != "0")
}

/// The link-layer address `mac` on interface `ifindex`, for frames of
/// `protocol`.
fn link_address(ifindex: u32, protocol: u16, mac: [u8; 6]) -> SockAddr {
    let mut storage = socket2::SockAddrStorage::zeroed();
    // SAFETY: the storage is large and aligned enough for any socket
    // address, sockaddr_ll included; it is zeroed, which is a valid
    // sockaddr_ll, and every field is written before it is used.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as u16;
    ll.sll_protocol = protocol.to_be();
    ll.sll_ifindex = ifindex as i32;
    ll.sll_halen = 6;
    ll.sll_addr[..6].copy_from_slice(&mac);
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
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]); // Ethernet/IPv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&address.octets());
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&address.octets());
    f.resize(60, 0);
    f
}

/// ICMPv6 Neighbor Advertisement, and its flags (RFC 4861 4.4).
const ICMPV6_NEIGHBOR_ADVERT: u8 = 136;
const NA_ROUTER: u8 = 0x80;
const NA_OVERRIDE: u8 = 0x20;
const IPPROTO_ICMPV6: u8 = 58;

/// An unsolicited Neighbor Advertisement for `address`, as keepalived sends
/// it: from the address itself to all-nodes (ff02::1, 33:33:00:00:00:01),
/// hop limit 255 (receivers drop any other), Override set (replace cached
/// link-layer addresses), Solicited clear, Router when the interface
/// forwards, and the Target Link-Layer Address option with `mac`.
pub fn unsolicited_na_frame(mac: [u8; 6], address: Ipv6Addr, router: bool) -> Vec<u8> {
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[ICMPV6_NEIGHBOR_ADVERT, 0, 0, 0]);
    icmp.push(NA_OVERRIDE | if router { NA_ROUTER } else { 0 });
    icmp.extend_from_slice(&[0; 3]);
    icmp.extend_from_slice(&address.octets());
    icmp.extend_from_slice(&[2, 1]); // Target Link-Layer Address, 8 bytes
    icmp.extend_from_slice(&mac);
    let checksum = icmpv6_checksum(address, ALL_NODES, &icmp);
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&ALL_NODES_MAC);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[IPPROTO_ICMPV6, 255]);
    f.extend_from_slice(&address.octets());
    f.extend_from_slice(&ALL_NODES.octets());
    f.extend_from_slice(&icmp);
    f
}

/// The ICMPv6 checksum of `message` (checksum field zero) between `src` and
/// `dst`: over the IPv6 pseudo-header (RFC 8200 8.1) and the message.
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, IPPROTO_ICMPV6]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
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
        let peers = [IpAddr::from([10, 0, 0, 2]), IpAddr::from([10, 0, 0, 3])];
        let src = IpAddr::from([10, 0, 0, 1]);
        AdvertSender::new(src, &peers).queue(&advert(7), &mut batch);
        AdvertSender::new(src, &[]).queue(&advert(8), &mut batch);
        let to: Vec<IpAddr> = batch.packets().iter().map(|(_, to)| *to).collect();
        assert_eq!(to, [peers[0], peers[1], IpAddr::from([224, 0, 0, 18])]);
        let (packet, _) = &batch.packets()[0];
        assert_eq!(&packet[12..16], &[10, 0, 0, 1], "the instance's own source");
        assert_eq!(packet[8], 255, "TTL 255");
    }

    /// keepalived's `unicast_ttl` sets the TTL of unicast adverts only:
    /// multicast receivers drop anything but 255.
    #[test]
    fn unicast_ttl_applies_to_unicast_peers_only() {
        let src = IpAddr::from([10, 0, 0, 1]);
        let peer = IpAddr::from([10, 0, 0, 2]);
        let mut batch = Batch::default();
        AdvertSender::new(src, &[peer])
            .with_unicast_ttl(5)
            .queue(&advert(7), &mut batch);
        AdvertSender::new(src, &[])
            .with_unicast_ttl(5)
            .queue(&advert(8), &mut batch);
        let v6_src: IpAddr = "2001:db8::1".parse().unwrap();
        let v6_peer: IpAddr = "2001:db8::2".parse().unwrap();
        AdvertSender::new(v6_src, &[v6_peer])
            .with_unicast_ttl(9)
            .queue(&advert(9), &mut batch);
        let packets = batch.packets();
        assert_eq!(packets[0].0[8], 5, "unicast: the configured TTL");
        assert_eq!(
            packets[1].0[8], 255,
            "multicast: 255 whatever is configured"
        );
        assert_eq!(packets[2].0[7], 9, "IPv6 unicast: the configured hop limit");
        // The header checksum covers the TTL.
        assert_eq!(lbha_common::checksum::checksum(0, &packets[0].0[..20]), 0);
    }

    #[test]
    fn an_ipv6_instance_queues_ipv6_packets_to_ff02_12_or_its_peers() {
        let src: Ipv6Addr = "fe80::1".parse().unwrap();
        let peer: IpAddr = "2001:db8::2".parse().unwrap();
        let mut batch = Batch::default();
        AdvertSender::new(src.into(), &[]).queue(&advert(7), &mut batch);
        AdvertSender::new(src.into(), &[peer]).queue(&advert(7), &mut batch);
        let to: Vec<IpAddr> = batch.packets().iter().map(|(_, to)| *to).collect();
        assert_eq!(to, [IpAddr::V6(VRRP_MULTICAST_GROUP_V6), peer]);
        let (packet, _) = &batch.packets()[0];
        assert_eq!(packet[0] >> 4, 6, "IPv6");
        assert_eq!((packet[6], packet[7]), (112, 255), "VRRP, hop limit 255");
        assert_eq!(&packet[8..24], &src.octets(), "the instance's own source");
        assert_eq!(&packet[24..40], &VRRP_MULTICAST_GROUP_V6.octets());
        assert_eq!(packet[40], 0x31, "VRRPv3 advertisement");
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
        let socket = AdvertSocket::open("lo", false).unwrap();
        let mut batch = Batch::default();
        for vrid in 1..=50 {
            AdvertSender::new(Ipv4Addr::LOCALHOST.into(), &[Ipv4Addr::LOCALHOST.into()])
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

    /// The same over IPv6: a mixed batch leaves in one call per family, and
    /// the IPv6 adverts arrive with the header and checksum we wrote: the
    /// receiving socket has `IPV6_CHECKSUM` at the VRRP checksum's offset,
    /// so the kernel drops any whose checksum over the IPv6 pseudo-header
    /// is wrong (and hands over the VRRP part only).
    #[test]
    fn an_ipv6_batch_leaves_through_the_ipv6_socket() {
        if !lbha_harness::require_root() {
            return;
        }
        let receiver = Socket::new(
            Domain::IPV6,
            Type::RAW,
            Some(Protocol::from(i32::from(lbha_common::vrrp::IPPROTO_VRRP))),
        )
        .unwrap();
        receiver.bind_device(Some(b"lo")).unwrap();
        receiver
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let offset: libc::c_int = 6;
        // SAFETY: a valid socket, option and int-sized value.
        let set = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&receiver),
                libc::IPPROTO_IPV6,
                libc::IPV6_CHECKSUM,
                (&raw const offset).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "IPV6_CHECKSUM");
        let socket = AdvertSocket::open("lo", true).unwrap();
        let mut batch = Batch::default();
        let lo6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        for vrid in 1..=20 {
            AdvertSender::new(lo6, &[lo6]).queue(&advert(vrid), &mut batch);
            AdvertSender::new(Ipv4Addr::LOCALHOST.into(), &[Ipv4Addr::LOCALHOST.into()])
                .queue(&advert(vrid), &mut batch);
        }
        assert_eq!(socket.send(&mut batch).unwrap(), 40);
        let mut vrids = Vec::new();
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 256];
        while vrids.len() < 20 {
            let len = receiver.recv(&mut buf).expect("every IPv6 advert arrives");
            // SAFETY: recv initialised the first `len` bytes.
            let vrrp: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), len) };
            assert_eq!(vrrp[0], 0x31, "VRRPv3 advertisement");
            vrids.push(vrrp[1]);
        }
        assert_eq!(vrids, (1..=20).collect::<Vec<u8>>());
        // Without the IPv6 socket, IPv6 adverts are an error, not silence.
        let v4_only = AdvertSocket::open("lo", false).unwrap();
        AdvertSender::new(lo6, &[lo6]).queue(&advert(1), &mut batch);
        assert!(v4_only.send(&mut batch).is_err());
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

    /// The fields RFC 4861 7.2.6 and keepalived's ndisc set; the checksum
    /// is checked by a receiving kernel in tests/tests/garp.rs (it drops
    /// a Neighbor Advertisement with a bad one).
    #[test]
    fn unsolicited_na_announces_the_address_with_override() {
        let mac = [2, 0, 0, 0, 0, 1];
        let vip: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let f = unsolicited_na_frame(mac, vip, false);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0, 0, 0, 1], "to all-nodes' MAC");
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!((f[20], f[21]), (58, 255), "ICMPv6, hop limit 255");
        assert_eq!(&f[22..38], &vip.octets(), "from the address itself");
        assert_eq!(&f[38..54], &ALL_NODES.octets());
        assert_eq!((f[54], f[55]), (136, 0), "Neighbor Advertisement");
        assert_eq!(f[58], 0x20, "Override only");
        assert_eq!(&f[62..78], &vip.octets(), "target");
        assert_eq!(&f[78..80], &[2, 1], "target link-layer address option");
        assert_eq!(&f[80..86], &mac);
        assert_eq!(
            unsolicited_na_frame(mac, vip, true)[58],
            0xa0,
            "Router + Override"
        );
        // The checksum sums to all ones with the pseudo-header.
        let mut icmp = f[54..].to_vec();
        let stored = u16::from_be_bytes([icmp[2], icmp[3]]);
        icmp[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(icmpv6_checksum(vip, ALL_NODES, &icmp), stored);
        assert_ne!(stored, 0);
    }
}
