//! The network side of an instance: sending adverts, holding the virtual
//! addresses, announcing them with gratuitous ARP.

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4},
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

/// Where an instance's adverts go: [`AdvertSender`] in the daemon, a
/// recorder in the driver's unit tests (which cannot open raw sockets).
pub trait AdvertOut: Send + Sync {
    /// The address adverts are sent from (the instance's primary address).
    fn source(&self) -> Ipv4Addr;
    /// Sends `advert` to every destination; returns how many went out.
    fn send(&self, advert: &Advert<'_>) -> Result<usize, NetError>;
}

/// Sends one instance's adverts: an `IPPROTO_RAW` socket (we write the IP
/// header: TTL 255, DSCP CS6 as keepalived) bound to the interface. Such a
/// socket never receives, so adverts reach us only through the receive path.
pub struct AdvertSender {
    socket: Socket,
    interface: String,
    src: Ipv4Addr,
    /// Unicast peers, or 224.0.0.18.
    destinations: Vec<Ipv4Addr>,
}

impl AdvertSender {
    pub fn open(interface: &str, src: Ipv4Addr, peers: &[Ipv4Addr]) -> Result<Self, NetError> {
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
        socket
            .bind_device(Some(interface.as_bytes()))
            .map_err(err("binding the advert socket"))?;
        let destinations = if peers.is_empty() {
            socket
                .set_multicast_if_v4(&src)
                .map_err(err("selecting the multicast interface"))?;
            vec![Ipv4Addr::from(VRRP_MULTICAST_GROUP)]
        } else {
            peers.to_vec()
        };
        // Sends must never block the event loop; a full queue drops one advert.
        socket
            .set_nonblocking(true)
            .map_err(err("making the advert socket non-blocking"))?;
        Ok(Self {
            socket,
            interface: interface.to_owned(),
            src,
            destinations,
        })
    }
}

impl AdvertOut for AdvertSender {
    fn source(&self) -> Ipv4Addr {
        self.src
    }

    fn send(&self, advert: &Advert<'_>) -> Result<usize, NetError> {
        let mut sent = 0;
        let mut last_error = None;
        for dst in &self.destinations {
            let packet = advert.ipv4_packet(self.src, *dst);
            match self
                .socket
                .send_to(&packet, &SockAddr::from(SocketAddrV4::new(*dst, 0)))
            {
                Ok(_) => sent += 1,
                Err(source) => last_error = Some(source),
            }
        }
        match (sent, last_error) {
            (0, Some(source)) => Err(NetError::Io {
                what: "sending an advert",
                interface: self.interface.clone(),
                source,
            }),
            _ => Ok(sent),
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
