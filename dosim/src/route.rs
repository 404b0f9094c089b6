//! `--route`: keeps `FLOATING_IP/32 via HOLDER_ADDRESS` (and for a reserved
//! IPv6 `IPV6/128 via HOLDER_IPV6`) in the simulator's own network
//! namespace (main table), so that in the lab packets to the floating IP
//! reach whichever droplet holds it, as DO's network does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rtnetlink::packet_route::route::RouteMessage;

/// The route sending `ip` to `via`: `ip/32 via via`, main table, protocol
/// static, scope universe (what `ip route replace ip/32 via via` sends).
pub fn holder_route(ip: Ipv4Addr, via: Ipv4Addr) -> RouteMessage {
    rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(ip, 32)
        .gateway(via)
        .build()
}

/// `ip/128 via via` for a reserved IPv6 (what `ip -6 route replace` sends).
pub fn holder_route_v6(ip: Ipv6Addr, via: Ipv6Addr) -> RouteMessage {
    rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(ip, 128)
        .gateway(via)
        .build()
}

/// The route to delete when `ip` is unassigned: `ip/32` (`ip/128`) in the
/// main table, whatever its next hop.
pub fn unassigned_route(ip: IpAddr) -> RouteMessage {
    match ip {
        IpAddr::V4(ip) => rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(ip, 32)
            .build(),
        IpAddr::V6(ip) => rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(ip, 128)
            .build(),
    }
}

/// The host-route prefix of `ip`'s family.
fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// A netlink route socket in the namespace the simulator was started in.
#[derive(Clone)]
pub struct RouteTable {
    handle: rtnetlink::Handle,
}

impl RouteTable {
    /// Opens the netlink connection; must be called inside the runtime.
    pub fn open() -> std::io::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// Points `ip` at its holder (`None`: removes the route).
    pub async fn set(&self, ip: IpAddr, holder: Option<IpAddr>) -> Result<(), String> {
        match (ip, holder) {
            (IpAddr::V4(ip), Some(IpAddr::V4(via))) => {
                self.replace(holder_route(ip, via), ip.into(), via.into())
                    .await
            }
            (IpAddr::V6(ip), Some(IpAddr::V6(via))) => {
                self.replace(holder_route_v6(ip, via), ip.into(), via.into())
                    .await
            }
            (ip, Some(via)) => Err(format!(
                "cannot route {ip} via {via}: the next hop must be of the same family"
            )),
            (ip, None) => self.remove(ip).await,
        }
    }

    /// `ip route replace ip/32 via via` (`ip -6 route replace ip/128 ...`).
    async fn replace(&self, message: RouteMessage, ip: IpAddr, via: IpAddr) -> Result<(), String> {
        match self.handle.route().add(message).replace().execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == 0 => Ok(()),
            Err(e) => Err(format!(
                "replacing the route {ip}/{} via {via}: {e}",
                host_prefix(ip)
            )),
        }
    }

    /// `ip route del ip/32` (`/128`); no such route is fine.
    pub async fn remove(&self, ip: IpAddr) -> Result<(), String> {
        match self
            .handle
            .route()
            .del(unassigned_route(ip))
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == 0 || e.raw_code() == -libc::ESRCH =>
            {
                Ok(())
            }
            Err(e) => Err(format!("deleting the route {ip}/{}: {e}", host_prefix(ip))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::AddressFamily;
    use rtnetlink::packet_route::route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteProtocol, RouteScope, RouteType,
    };

    #[test]
    fn holder_route_is_a_host_route_via_the_holder() {
        let message = holder_route(Ipv4Addr::new(203, 0, 113, 10), Ipv4Addr::new(192, 0, 2, 12));
        let header = &message.header;
        assert_eq!(header.address_family, AddressFamily::Inet);
        assert_eq!(header.destination_prefix_length, 32);
        assert_eq!(header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(header.protocol, RouteProtocol::Static);
        assert_eq!(header.scope, RouteScope::Universe);
        assert_eq!(header.kind, RouteType::Unicast);
        assert_eq!(
            message.attributes,
            vec![
                RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(203, 0, 113, 10))),
                RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(192, 0, 2, 12))),
            ]
        );
    }

    #[test]
    fn ipv6_holder_route_is_a_128_via_the_holders_ipv6() {
        let ip: Ipv6Addr = "2001:db8:10::10".parse().unwrap();
        let via: Ipv6Addr = "2001:db8::12".parse().unwrap();
        let message = holder_route_v6(ip, via);
        assert_eq!(message.header.address_family, AddressFamily::Inet6);
        assert_eq!(message.header.destination_prefix_length, 128);
        assert_eq!(message.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(
            message.attributes,
            vec![
                RouteAttribute::Destination(RouteAddress::Inet6(ip)),
                RouteAttribute::Gateway(RouteAddress::Inet6(via)),
            ]
        );
        let gone = unassigned_route(ip.into());
        assert_eq!(gone.header.address_family, AddressFamily::Inet6);
        assert_eq!(gone.header.destination_prefix_length, 128);
    }

    #[test]
    fn unassigned_route_names_only_the_destination() {
        let message = unassigned_route(Ipv4Addr::new(203, 0, 113, 10).into());
        assert_eq!(message.header.destination_prefix_length, 32);
        assert_eq!(
            message.attributes,
            vec![RouteAttribute::Destination(RouteAddress::Inet(
                Ipv4Addr::new(203, 0, 113, 10)
            ))]
        );
    }
}
