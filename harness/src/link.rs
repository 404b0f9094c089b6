//! Links between [`Netns`]es: veth pairs and bridges, created directly
//! inside the namespaces so that nothing ever appears in the host's own.

use std::process::Command;

use crate::{COMMAND_TIMEOUT, Error, Netns, Result, run_command};

/// `ip link add A netns NS_A type veth peer name B netns NS_B`.
fn add_veth(ns_a: &Netns, name_a: &str, ns_b: &Netns, name_b: &str) -> Result<()> {
    run_command(
        Command::new("ip").args([
            "link",
            "add",
            name_a,
            "netns",
            ns_a.name(),
            "type",
            "veth",
            "peer",
            "name",
            name_b,
            "netns",
            ns_b.name(),
        ]),
        COMMAND_TIMEOUT,
    )
    .map_err(Error::step(format!("creating veth {name_a}/{name_b}")))?;
    Ok(())
}

/// Creates a veth pair with one end in each namespace, assigns the addresses
/// (CIDR notation, e.g. `10.201.3.1/24`) and brings both ends up.
pub fn veth_pair(
    ns_a: &Netns,
    name_a: &str,
    addr_a: &str,
    ns_b: &Netns,
    name_b: &str,
    addr_b: &str,
) -> Result<()> {
    add_veth(ns_a, name_a, ns_b, name_b)?;
    address_up(ns_a, name_a, addr_a)?;
    address_up(ns_b, name_b, addr_b)
}

/// Assigns `addr` to interface `name` in `ns` and brings it up.
fn address_up(ns: &Netns, name: &str, addr: &str) -> Result<()> {
    ns.ip(&["addr", "add", addr, "dev", name])?;
    ns.ip(&["link", "set", name, "up"])?;
    Ok(())
}

/// Creates the bridge `name` inside `ns` and brings it up. Spanning tree is
/// off, so its ports forward at once: a "switch" for more than two
/// namespaces on one link (see [`bridge_port`]).
pub fn bridge(ns: &Netns, name: &str) -> Result<()> {
    let what = || format!("bridge {name} in {}", ns.name());
    ns.ip(&["link", "add", name, "type", "bridge", "stp_state", "0"])
        .map_err(Error::step(what()))?;
    ns.ip(&["link", "set", name, "up"])
        .map_err(Error::step(what()))?;
    // A switch does not filter: with `br_netfilter` loaded (Docker loads
    // it), every bridged IPv4 / IPv6 / ARP frame would also run the
    // namespace's iptables and nftables hooks, which cost more per frame
    // than the rest of the bridge (a lab at a thousand VRIDs of 10 ms
    // adverts spent a fifth of its senders' CPU there). The switch in the
    // lab models DigitalOcean's network, not a firewall. Per namespace
    // (kernels since 5.3); absent without the module.
    if std::path::Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
        ns.exec(&[
            "sysctl",
            "-qw",
            "net.bridge.bridge-nf-call-iptables=0",
            "net.bridge.bridge-nf-call-ip6tables=0",
            "net.bridge.bridge-nf-call-arptables=0",
        ])
        .map_err(Error::step(what()))?;
    }
    Ok(())
}

/// Plugs `ns` into `bridge` (made by [`bridge`] inside `switch`) with a veth
/// pair: `name`, with `addr` (CIDR notation), inside `ns`, and `port`,
/// enslaved to the bridge, inside `switch`. Both ends are brought up.
pub fn bridge_port(
    switch: &Netns,
    bridge: &str,
    port: &str,
    ns: &Netns,
    name: &str,
    addr: &str,
) -> Result<()> {
    add_veth(switch, port, ns, name)?;
    switch.ip(&["link", "set", port, "master", bridge])?;
    switch.ip(&["link", "set", port, "up"])?;
    address_up(ns, name, addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        net::{SocketAddr, TcpListener, TcpStream},
        time::Duration,
    };

    /// Whether a TCP connection from `from` reaches a listener on `addr`
    /// in `to` (the kernel completes it: no accept needed).
    fn reaches(from: &Netns, to: &Netns, addr: &str) -> bool {
        let addr: SocketAddr = format!("{addr}:0").parse().unwrap();
        let listener = crate::in_netns(to.name(), move || TcpListener::bind(addr))
            .unwrap()
            .unwrap();
        let addr = listener.local_addr().unwrap();
        crate::in_netns(from.name(), move || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
        })
        .unwrap()
    }

    #[test]
    fn namespaces_on_a_veth_and_a_bridge_reach_each_other() {
        if !crate::require_root() {
            return;
        }
        // Addresses only inside these namespaces (10.201.250.0/24 is this
        // test's own).
        let a = Netns::new("hlink-a").unwrap();
        let b = Netns::new("hlink-b").unwrap();
        let sw = Netns::new("hlink-sw").unwrap();
        veth_pair(&a, "va", "10.201.250.1/24", &b, "vb", "10.201.250.2/24").unwrap();
        assert_eq!(a.ipv4_addresses("va").unwrap(), ["10.201.250.1/24"]);
        assert!(reaches(&a, &b, "10.201.250.2"));
        bridge(&sw, "br0").unwrap();
        bridge_port(&sw, "br0", "pa", &a, "ba", "10.201.251.1/24").unwrap();
        bridge_port(&sw, "br0", "pb", &b, "bb", "10.201.251.2/24").unwrap();
        let ports = sw.ip(&["-o", "link", "show", "master", "br0"]).unwrap();
        assert!(ports.contains("pa@") && ports.contains("pb@"), "{ports}");
        assert!(reaches(&a, &b, "10.201.251.2"));
        // Nothing of this in the host's namespace.
        let host = run_command(Command::new("ip").args(["-o", "link"]), COMMAND_TIMEOUT).unwrap();
        assert!(!host.contains(" va@") && !host.contains(" pa@"), "{host}");
    }
}
