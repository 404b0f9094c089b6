//! `--route`: keeps `FLOATING_IP/32 via HOLDER_ADDRESS` in the simulator's
//! own network namespace (main table), so that in the lab packets to the
//! floating IP reach whichever droplet holds it, as DO's network does.

use std::net::{IpAddr, Ipv4Addr};

use rtnetlink::packet_route::route::RouteMessage;

/// The route sending `ip` to `via`: `ip/32 via via`, main table, protocol
/// static, scope universe (what `ip route replace ip/32 via via` sends).
pub fn holder_route(ip: Ipv4Addr, via: Ipv4Addr) -> RouteMessage {
    rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(ip, 32)
        .gateway(via)
        .build()
}

/// The route to delete when `ip` is unassigned: `ip/32` in the main table,
/// whatever its next hop.
pub fn unassigned_route(ip: Ipv4Addr) -> RouteMessage {
    rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(ip, 32)
        .build()
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
    pub async fn set(&self, ip: Ipv4Addr, holder: Option<IpAddr>) -> Result<(), String> {
        match holder {
            Some(IpAddr::V4(via)) => self.replace(ip, via).await,
            Some(IpAddr::V6(via)) => Err(format!(
                "cannot route {ip} via {via}: holder addresses must be IPv4"
            )),
            None => self.remove(ip).await,
        }
    }

    /// `ip route replace ip/32 via via`.
    pub async fn replace(&self, ip: Ipv4Addr, via: Ipv4Addr) -> Result<(), String> {
        match self
            .handle
            .route()
            .add(holder_route(ip, via))
            .replace()
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == 0 => Ok(()),
            Err(e) => Err(format!("replacing the route {ip}/32 via {via}: {e}")),
        }
    }

    /// `ip route del ip/32`; no such route is fine.
    pub async fn remove(&self, ip: Ipv4Addr) -> Result<(), String> {
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
            Err(e) => Err(format!("deleting the route {ip}/32: {e}")),
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
    fn unassigned_route_names_only_the_destination() {
        let message = unassigned_route(Ipv4Addr::new(203, 0, 113, 10));
        assert_eq!(message.header.destination_prefix_length, 32);
        assert_eq!(
            message.attributes,
            vec![RouteAttribute::Destination(RouteAddress::Inet(
                Ipv4Addr::new(203, 0, 113, 10)
            ))]
        );
    }
}
