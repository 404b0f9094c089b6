//! Start-up with instances on several interfaces: every interface's receive
//! path is loaded (the XDP verifier's run, hundreds of milliseconds of CPU
//! each) before any instance starts, so a node never advertises on one
//! interface while it is still busy loading the next (with a thousand VRIDs
//! on a loaded machine, the late adverts made the peer take over).

use std::{net::Ipv4Addr, time::Duration};

use lbha_tests::{Agent, KeepalivedConfig, Netns, VrrpInstance, require_root, veth_pair};

#[test]
fn no_instance_starts_before_every_interface_is_loaded() {
    if !require_root() {
        return;
    }
    let a = Netns::new("sua").unwrap();
    let b = Netns::new("sub").unwrap();
    veth_pair(&a, "va1", "10.206.1.1/24", &b, "vb1", "10.206.1.2/24").unwrap();
    veth_pair(&a, "va2", "10.206.2.1/24", &b, "vb2", "10.206.2.2/24").unwrap();
    let instance = |name: &str, interface: &str, vrid: u8, subnet: u8| {
        VrrpInstance::unicast(name, interface, vrid, Ipv4Addr::new(10, 206, subnet, 1))
            .priority(150)
            .advert_int("0.1")
            .version(3)
            .unicast_peer(Ipv4Addr::new(10, 206, subnet, 2))
            .virtual_ipaddress(format!("10.206.{subnet}.100/32"))
    };
    let conf = KeepalivedConfig::new()
        .global_def("vrrp_version 3")
        .instance(instance("VI_1", "va1", 71, 1))
        .instance(instance("VI_2", "va2", 72, 2))
        .render();
    let mut agent = Agent::start(&a, &conf).unwrap();
    for name in ["VI_1", "VI_2"] {
        agent
            .wait_for_transition(name, "MASTER", 0, Duration::from_secs(15))
            .unwrap();
    }
    let log = agent.log();
    let lines: Vec<&str> = log.lines().collect();
    let position = |what: &dyn Fn(&str) -> bool| lines.iter().position(|l| what(l));
    let last_ready = ["va1", "va2"]
        .map(|interface| {
            let ready = format!("interface ready interface=\"{interface}\"");
            position(&|l: &str| l.contains(&ready))
                .unwrap_or_else(|| panic!("no `{ready}` in the log:\n{log}"))
        })
        .into_iter()
        .max();
    let first_transition = position(&|l: &str| l.contains("state transition"))
        .unwrap_or_else(|| panic!("no state transition in the log:\n{log}"));
    assert!(
        Some(first_transition) > last_ready,
        "an instance started (line {first_transition}) before both interfaces were loaded (line {last_ready:?}):\n{log}"
    );
}
