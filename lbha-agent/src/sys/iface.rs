//! Interfaces by name: index, first IPv4 address, IPv6 link-local
//! address, MAC address.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr},
};

use nix::sys::socket::SockaddrLike;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum IfaceError {
    #[error("interface {0} does not exist")]
    Unknown(String),
    #[error("interface {0} has no IPv4 address")]
    NoIpv4Address(String),
    #[error(
        "interface {0} has no IPv6 link-local address (is IPv6 disabled on it, or is it down?)"
    )]
    NoIpv6LinkLocal(String),
    #[error("listing interface addresses")]
    List(#[source] io::Error),
    #[error("reading the MAC address of {interface}")]
    Mac {
        interface: String,
        #[source]
        source: io::Error,
    },
}

/// The kernel's index of `interface`.
pub fn if_index(interface: &str) -> Result<u32, IfaceError> {
    nix::net::if_::if_nametoindex(interface).map_err(|_| IfaceError::Unknown(interface.into()))
}

/// The first IPv4 address configured on `interface` (keepalived's default
/// source when `unicast_src_ip` is not set).
pub fn interface_ipv4(interface: &str) -> Result<Ipv4Addr, IfaceError> {
    let addresses =
        nix::ifaddrs::getifaddrs().map_err(|errno| IfaceError::List(io::Error::from(errno)))?;
    addresses
        .filter(|entry| entry.interface_name == interface)
        .find_map(|entry| {
            let address = entry.address?;
            (address.family() == Some(nix::sys::socket::AddressFamily::Inet))
                .then(|| {
                    address
                        .as_sockaddr_in()
                        .map(nix::sys::socket::SockaddrIn::ip)
                })
                .flatten()
        })
        .ok_or_else(|| IfaceError::NoIpv4Address(interface.into()))
}

/// The IPv6 link-local address of `interface`: the source of its IPv6
/// adverts when `unicast_src` is not set (RFC 5798 5.1.2.2, keepalived's
/// default).
pub fn interface_ipv6_link_local(interface: &str) -> Result<Ipv6Addr, IfaceError> {
    interface_ipv6_link_local_except(interface, &[])
}

/// The same, skipping `virtual` addresses: a link-local virtual address
/// left on the interface by a crashed predecessor (the kernel lists the
/// newest first) must not become the advert source, as keepalived skips
/// its virtual addresses when it picks one.
pub fn interface_ipv6_link_local_except(
    interface: &str,
    virtual_addresses: &[Ipv6Addr],
) -> Result<Ipv6Addr, IfaceError> {
    let addresses =
        nix::ifaddrs::getifaddrs().map_err(|errno| IfaceError::List(io::Error::from(errno)))?;
    addresses
        .filter(|entry| entry.interface_name == interface)
        .find_map(|entry| {
            let ip = entry.address?.as_sockaddr_in6()?.ip();
            (ip.is_unicast_link_local() && !virtual_addresses.contains(&ip)).then_some(ip)
        })
        .ok_or_else(|| IfaceError::NoIpv6LinkLocal(interface.into()))
}

/// The current MAC address of `interface` (read at each use: it can change).
pub fn interface_mac(interface: &str) -> Result<[u8; 6], IfaceError> {
    let error = |source| IfaceError::Mac {
        interface: interface.to_owned(),
        source,
    };
    let text =
        std::fs::read_to_string(format!("/sys/class/net/{interface}/address")).map_err(error)?;
    parse_mac(&text).ok_or_else(|| {
        error(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad MAC address",
        ))
    })
}

/// `02:00:00:00:00:01` (with optional surrounding whitespace) as bytes.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_an_index_and_127_0_0_1() {
        assert!(if_index("lo").unwrap() > 0);
        assert_eq!(interface_ipv4("lo").unwrap(), Ipv4Addr::LOCALHOST);
    }

    #[test]
    fn unknown_interfaces_are_named_in_the_error() {
        let error = if_index("lbha-nonexistent0").unwrap_err();
        assert_eq!(
            error.to_string(),
            "interface lbha-nonexistent0 does not exist"
        );
        assert!(matches!(
            interface_ipv4("lbha-nonexistent0"),
            Err(IfaceError::NoIpv4Address(_))
        ));
    }

    #[test]
    fn loopback_has_no_link_local_address() {
        // `lo` holds ::1 only: the error, not a wrong source.
        assert!(matches!(
            interface_ipv6_link_local("lo"),
            Err(IfaceError::NoIpv6LinkLocal(_))
        ));
    }

    #[test]
    fn mac_addresses_parse_exactly() {
        assert_eq!(
            parse_mac("02:00:0a:ff:00:01\n"),
            Some([2, 0, 10, 255, 0, 1])
        );
        assert_eq!(parse_mac("02:00:0a:ff:00"), None);
        assert_eq!(parse_mac("02:00:0a:ff:00:01:07"), None);
        assert_eq!(parse_mac("02:00:0a:ff:00:zz"), None);
    }
}
