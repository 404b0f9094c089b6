//! Multicast group membership held for a receive path that has no socket of
//! its own: the XDP program sees only the frames the NIC lets through, and a
//! NIC (or a hypervisor's virtual switch) filters multicast to the groups
//! somebody on the host joined. The raw-socket path joins with its own
//! sockets; XDP joins here, with UDP sockets that never receive VRRP (it is
//! not UDP), so holding them costs nothing per packet.

use std::net::{Ipv4Addr, Ipv6Addr};

use socket2::{Domain, InterfaceIndexOrAddress, Socket, Type};

/// 224.0.0.18 (RFC 5798's IPv4 group).
const VRRP_GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// ff02::12 (RFC 5798's IPv6 group).
const VRRP_GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);

/// The VRRP groups joined on one interface, left when dropped.
#[derive(Debug)]
pub struct VrrpGroups {
    /// Kept open: closing a socket leaves its groups.
    sockets: Vec<Socket>,
}

impl VrrpGroups {
    /// Joins 224.0.0.18 (`ipv4`) and ff02::12 (`ipv6`) on `ifindex`. A group
    /// that cannot be joined is logged, not fatal: unicast adverts (what
    /// DigitalOcean's VPC carries) arrive without it.
    pub fn join(interface: &str, ifindex: u32, ipv4: bool, ipv6: bool) -> Self {
        let mut sockets = Vec::new();
        if ipv4 {
            let joined = Socket::new(Domain::IPV4, Type::DGRAM, None).and_then(|socket| {
                socket.join_multicast_v4_n(
                    &VRRP_GROUP_V4,
                    &InterfaceIndexOrAddress::Index(ifindex),
                )?;
                Ok(socket)
            });
            match joined {
                Ok(socket) => sockets.push(socket),
                Err(error) => {
                    tracing::warn!(interface, %error, "could not join 224.0.0.18; a NIC filtering multicast would hide multicast adverts from XDP");
                }
            }
        }
        if ipv6 {
            let joined = Socket::new(Domain::IPV6, Type::DGRAM, None).and_then(|socket| {
                socket.join_multicast_v6(&VRRP_GROUP_V6, ifindex)?;
                Ok(socket)
            });
            match joined {
                Ok(socket) => sockets.push(socket),
                Err(error) => {
                    tracing::warn!(interface, %error, "could not join ff02::12; a NIC filtering multicast would hide multicast IPv6 adverts from XDP");
                }
            }
        }
        Self { sockets }
    }

    /// How many groups are held.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The groups as the kernel lists them for `ifindex` (`/proc/thread-self/net/igmp`
    /// and `/proc/thread-self/net/igmp6`), so the test checks the kernel's view.
    fn joined(ifindex: u32) -> (bool, bool) {
        let v4 = std::fs::read_to_string("/proc/thread-self/net/igmp").unwrap_or_default();
        // igmp: a device line "<idx>\t<name>: ..." then group lines "\t\t<hex> ...";
        // 224.0.0.18 is 120000E0 in the host (little-endian) order it prints.
        let mut in_device = false;
        let mut has_v4 = false;
        for line in v4.lines().skip(1) {
            if !line.starts_with('\t') {
                in_device = line
                    .split_whitespace()
                    .next()
                    .and_then(|idx| idx.parse::<u32>().ok())
                    == Some(ifindex);
            } else if in_device && line.trim_start().starts_with("120000E0") {
                has_v4 = true;
            }
        }
        let v6 = std::fs::read_to_string("/proc/thread-self/net/igmp6").unwrap_or_default();
        let has_v6 = v6.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 2
                && fields[0].parse::<u32>().ok() == Some(ifindex)
                && fields[2] == "ff020000000000000000000000000012"
        });
        (has_v4, has_v6)
    }

    #[test]
    fn groups_are_joined_while_held_and_left_on_drop() {
        if !lbha_harness::require_root() {
            return;
        }
        let ns = lbha_harness::Netns::new("mcast groups").unwrap();
        ns.exec(&[
            "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
        ])
        .unwrap();
        ns.exec(&["ip", "link", "set", "d1", "up"]).unwrap();
        ns.exec(&["ip", "link", "set", "d0", "up"]).unwrap();
        let ifindex = ns.ifindex("d0").unwrap();
        let (held, during, after) = lbha_harness::in_netns(ns.name(), move || {
            let groups = VrrpGroups::join("d0", ifindex, true, true);
            let during = joined(ifindex);
            let held = groups.len();
            drop(groups);
            (held, during, joined(ifindex))
        })
        .unwrap();
        assert_eq!(held, 2);
        assert_eq!(during, (true, true), "both groups joined while held");
        assert_eq!(after, (false, false), "both groups left on drop");
    }
}
