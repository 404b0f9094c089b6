//! lbha's receive paths against a real keepalived over IPv6: keepalived
//! (VRRPv3 over IPv6, multicast to ff02::12 or unicast) is master in one
//! namespace, `lbha-agent watch --vrid N:ipv6` receives in the other
//! through XDP or the AF_INET6 raw socket, and the adverts it reports must
//! carry what keepalived was configured to send. The agent's IPv6
//! instances are not wired yet, so this exercises the receive path
//! directly, as `watch` does.
//!
//! Each test has its own pair of namespaces and its own fd00:201:N::/64.

use std::time::Duration;

use lbha_tests::{Keepalived, Netns, WAIT, Watch, WatchOutput, require_root, veth_pair};
use serde_json::Value;

const KA_IF: &str = "veth-ka";
const LB_IF: &str = "veth-lb";
const INSTANCE: &str = "VI_6";

struct Lab {
    subnet: u8,
    /// keepalived's link-local address, the source of its multicast
    /// adverts (read before keepalived adds fe80::61 beside it).
    ka_link_local: String,
    ka: Netns,
    lb: Netns,
}

impl Lab {
    fn new(subnet: u8) -> Self {
        let ka = Netns::new("ka6").expect("keepalived namespace");
        let lb = Netns::new("lb6").expect("lbha namespace");
        // No duplicate address detection: the link-local source keepalived
        // multicasts from is usable at once, not a second or two later.
        for ns in [&ka, &lb] {
            ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"])
                .expect("sysctl accept_dad");
        }
        veth_pair(
            &ka,
            KA_IF,
            &format!("10.202.{subnet}.1/24"),
            &lb,
            LB_IF,
            &format!("10.202.{subnet}.2/24"),
        )
        .expect("veth pair");
        let ka_link_local = link_local(&ka);
        let lab = Lab {
            subnet,
            ka_link_local,
            ka,
            lb,
        };
        lab.ka
            .ip(&["addr", "add", &format!("{}/64", lab.ka6()), "dev", KA_IF])
            .expect("keepalived's IPv6 address");
        lab.lb
            .ip(&["addr", "add", &format!("{}/64", lab.lb6()), "dev", LB_IF])
            .expect("lbha's IPv6 address");
        lab
    }

    fn ka6(&self) -> String {
        format!("fd00:201:{}::1", self.subnet)
    }

    fn lb6(&self) -> String {
        format!("fd00:201:{}::2", self.subnet)
    }

    fn start_master(&self, instance: &str) -> Keepalived {
        let mut keepalived = Keepalived::start(&self.ka, instance).expect("starting keepalived");
        keepalived
            .wait_for_state(INSTANCE, "MASTER", Duration::from_secs(15))
            .expect("keepalived becomes master");
        keepalived
    }

    fn watch(&self, args: &[&str]) -> WatchOutput {
        let mut full = vec!["-i", LB_IF];
        full.extend_from_slice(args);
        let mut watch = Watch::spawn(&self.lb, &full).expect("starting lbha-agent watch");
        watch
            .wait_ready(Duration::from_secs(10))
            .expect("lbha-agent opens its receive path");
        watch.finish(WAIT).expect("lbha-agent watch finishes")
    }
}

/// The advert lines of a watch run (IPv6 ones are not the harness's
/// IPv4 `Advert`, so they arrive as unparsed lines).
fn adverts(out: &WatchOutput) -> Vec<Value> {
    out.other_lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v.get("vrid").is_some())
        .collect()
}

/// The link-local address of `KA_IF` in `ns`.
fn link_local(ns: &Netns) -> String {
    let out = ns
        .ip(&["-6", "-o", "addr", "show", "dev", KA_IF, "scope", "link"])
        .expect("ip addr show");
    let word = out
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .unwrap_or_else(|| panic!("no link-local address in {out:?}"));
    word.split('/').next().unwrap().to_owned()
}

fn multicast_instance(vrid: u8) -> String {
    format!(
        "vrrp_instance {INSTANCE} {{\n    interface {KA_IF}\n    state MASTER\n    \
         virtual_router_id {vrid}\n    priority 150\n    advert_int 0.5\n    \
         virtual_ipaddress {{\n        fe80::61/64\n        fd00:201::61/64\n    }}\n}}\n"
    )
}

fn unicast_instance(lab: &Lab, vrid: u8) -> String {
    format!(
        "vrrp_instance {INSTANCE} {{\n    interface {KA_IF}\n    state MASTER\n    \
         virtual_router_id {vrid}\n    priority 200\n    advert_int 0.5\n    native_ipv6\n    \
         unicast_src_ip {}\n    unicast_peer {{\n        {}\n    }}\n    \
         virtual_ipaddress {{\n        fd00:201::62/64\n    }}\n}}\n",
        lab.ka6(),
        lab.lb6()
    )
}

#[track_caller]
fn check(out: &WatchOutput, src: &str, dst: &str, vrid: u8, priority: u64, path: &str) {
    assert!(
        out.status.success(),
        "watch failed; stderr:\n{}",
        out.stderr
    );
    let got = adverts(out);
    assert!(got.len() >= 2, "{got:?}\nstderr:\n{}", out.stderr);
    for advert in &got {
        assert_eq!(advert["family"], "IPv6", "{advert}");
        assert_eq!(advert["src"], src, "{advert}");
        assert_eq!(advert["dst"], dst, "{advert}");
        assert_eq!(advert["vrid"], u64::from(vrid), "{advert}");
        assert_eq!(advert["version"], 3, "{advert}");
        assert_eq!(advert["priority"], priority, "{advert}");
        assert_eq!(advert["interval_cs"], 50, "{advert}");
        assert_eq!(advert["receive_path"], path, "{advert}");
    }
    assert!(out.summary().counter("adverts_accepted") >= 2);
}

fn multicast_via(path: &str, subnet: u8) {
    if !require_root() {
        return;
    }
    let lab = Lab::new(subnet);
    let _keepalived = lab.start_master(&multicast_instance(61));
    let out = lab.watch(&[
        "--vrid",
        "61:ipv6",
        "--receive-path",
        path,
        "--count",
        "2",
        "--timeout",
        "10",
    ]);
    let path_name = if path == "raw" { "raw-socket" } else { "xdp" };
    check(&out, &lab.ka_link_local, "ff02::12", 61, 150, path_name);
    for advert in adverts(&out) {
        // The RFC's rule, as keepalived follows it: link-local first.
        assert_eq!(advert["first_vip"], "fe80::61", "{advert}");
        assert_eq!(advert["count_addr"], 2, "{advert}");
    }
}

fn unicast_via(path: &str, subnet: u8) {
    if !require_root() {
        return;
    }
    let lab = Lab::new(subnet);
    let _keepalived = lab.start_master(&unicast_instance(&lab, 62));
    let from = format!("62:ipv6:from={}", lab.ka6());
    let out = lab.watch(&[
        "--vrid",
        &from,
        "--receive-path",
        path,
        "--count",
        "2",
        "--timeout",
        "10",
    ]);
    let path_name = if path == "raw" { "raw-socket" } else { "xdp" };
    check(&out, &lab.ka6(), &lab.lb6(), 62, 200, path_name);
}

#[test]
fn keepalived_ipv6_multicast_via_xdp() {
    multicast_via("xdp", 1);
}

#[test]
fn keepalived_ipv6_multicast_via_raw_socket() {
    multicast_via("raw", 2);
}

/// keepalived 2.2.7 sends these with hop limit 64: accepted all the same.
#[test]
fn keepalived_ipv6_unicast_via_xdp() {
    unicast_via("xdp", 3);
}

#[test]
fn keepalived_ipv6_unicast_via_raw_socket() {
    unicast_via("raw", 4);
}

/// Only IPv4 VRID 61 configured: keepalived's IPv6 VRID 61 is someone
/// else's, passed to the stack and counted, never reported.
#[test]
fn an_ipv6_vrid_is_not_its_ipv4_namesake() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(5);
    let _keepalived = lab.start_master(&multicast_instance(61));
    // Waits 2 s for one advert, in vain: exits with an error and its
    // counters.
    let out = lab.watch(&[
        "--vrid",
        "61",
        "--receive-path",
        "xdp",
        "--count",
        "1",
        "--timeout",
        "2",
    ]);
    assert!(!out.status.success());
    assert!(adverts(&out).is_empty(), "{:?}", out.other_lines);
    assert!(
        out.summary().counter("drop_unknown_vrid") >= 2,
        "{:?}",
        out.summary()
    );
}
