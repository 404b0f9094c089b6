//! lbha's receive paths against a real keepalived: keepalived advertises over
//! unicast from one namespace, `lbha-agent watch` receives in another (XDP or
//! raw socket), and the adverts it reports must carry exactly what keepalived
//! was configured to send. Adverts lbha must refuse (wrong password, VRID it
//! does not manage, a source that is not a unicast peer) must be counted as
//! drops and never reported.
//!
//! Each test has its own pair of namespaces and its own `10.201.N.0/24`.

use std::{net::Ipv4Addr, time::Duration};

use lbha_tests::{
    Advert, Keepalived, KeepalivedConfig, Netns, Summary, VrrpInstance, WAIT, Watch, WatchOutput,
    require_root, veth_pair,
};

const KA_IF: &str = "veth-ka";
const LB_IF: &str = "veth-lb";
const PASSWORD: &str = "hunter42";
const INSTANCE: &str = "VI_1";

/// keepalived's namespace and lbha's, joined by a veth pair on `10.201.N.0/24`.
struct Lab {
    subnet: u8,
    ka_addr: Ipv4Addr,
    lb_addr: Ipv4Addr,
    lb_ifindex: u32,
    ka: Netns,
    lb: Netns,
}

impl Lab {
    fn new(subnet: u8) -> Self {
        let ka = Netns::new("ka").expect("keepalived namespace");
        let lb = Netns::new("lb").expect("lbha namespace");
        let ka_addr = Ipv4Addr::new(10, 201, subnet, 1);
        let lb_addr = Ipv4Addr::new(10, 201, subnet, 2);
        veth_pair(
            &ka,
            KA_IF,
            &format!("{ka_addr}/24"),
            &lb,
            LB_IF,
            &format!("{lb_addr}/24"),
        )
        .expect("veth pair");
        let lb_ifindex = lb.ifindex(LB_IF).expect("ifindex of lbha's interface");
        Lab {
            subnet,
            ka_addr,
            lb_addr,
            lb_ifindex,
            ka,
            lb,
        }
    }

    /// The `i`-th virtual address keepalived is configured with.
    fn vip(&self, i: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 201, self.subnet, 100 + i)
    }

    /// A unicast instance from keepalived's side to lbha's, with two VIPs.
    fn instance(&self, vrid: u8) -> VrrpInstance {
        VrrpInstance::unicast(INSTANCE, KA_IF, vrid, self.ka_addr)
            .unicast_peer(self.lb_addr)
            .virtual_ipaddress(format!("{}/32", self.vip(0)))
            .virtual_ipaddress(format!("{}/32", self.vip(1)))
    }

    /// Starts keepalived with `instance` and waits until it is master, i.e.
    /// sending adverts.
    fn start_master(&self, instance: VrrpInstance) -> Keepalived {
        let config = KeepalivedConfig::new().instance(instance).render();
        let mut keepalived = Keepalived::start(&self.ka, &config).expect("starting keepalived");
        keepalived
            .wait_for_state(INSTANCE, "MASTER", Duration::from_secs(15))
            .expect("keepalived becomes master");
        keepalived
    }

    /// Runs `lbha-agent watch -i veth-lb ARGS` to completion.
    fn watch(&self, args: &[&str]) -> WatchOutput {
        let mut full = vec!["-i", LB_IF];
        full.extend_from_slice(args);
        let mut watch = Watch::spawn(&self.lb, &full).expect("starting lbha-agent watch");
        watch
            .wait_ready(Duration::from_secs(10))
            .expect("lbha-agent opens its receive path");
        let out = watch.finish(WAIT).expect("lbha-agent watch finishes");
        // The kernel matrix (`cargo xtask kernels`) says which XDP program
        // this kernel must get; the raw socket is chosen by configuration.
        if let Ok(expected) = std::env::var("LBHA_EXPECT_PROGRAM") {
            let program = if args.windows(2).any(|w| w == ["--receive-path", "raw"]) {
                "raw-socket"
            } else {
                expected.as_str()
            };
            assert!(
                out.stderr.contains(&format!("\nprogram: {program} (")),
                "expected the {program} program; stderr:\n{}",
                out.stderr
            );
        }
        out
    }
}

/// What every advert from keepalived must look like.
struct Expected<'a> {
    lab: &'a Lab,
    vrid: u8,
    priority: u8,
    version: u8,
    interval_cs: u16,
    receive_path: &'a str,
}

impl Expected<'_> {
    fn advert(&self, timestamp_ns: u64, changes: &[&str]) -> Advert {
        Advert {
            timestamp_ns,
            src: self.lab.ka_addr,
            dst: self.lab.lb_addr,
            first_vip: self.lab.vip(0),
            ifindex: self.lab.lb_ifindex,
            vrid: self.vrid,
            priority: self.priority,
            version: self.version,
            interval_cs: self.interval_cs,
            count_addr: 2,
            changes: changes
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
            receive_path: self.receive_path.to_string(),
        }
    }

    /// Checks a successful `--count COUNT` run: exactly COUNT adverts, each
    /// with keepalived's exact fields, only the first one a change, spaced by
    /// about the advertisement interval; a summary with matching counters.
    fn check(&self, out: &WatchOutput, count: usize, summary_path: &str) {
        let context = format!("adverts: {:#?}\nstderr:\n{}", out.adverts, out.stderr);
        assert!(
            out.status.success(),
            "lbha-agent failed ({}); {context}",
            out.status
        );
        assert!(
            out.other_lines.is_empty(),
            "unexpected output {:?}",
            out.other_lines
        );
        assert_eq!(out.adverts.len(), count, "{context}");
        for (i, advert) in out.adverts.iter().enumerate() {
            let changes: &[&str] = if i == 0 { &["new_source"] } else { &[] };
            assert_eq!(
                *advert,
                self.advert(advert.timestamp_ns, changes),
                "advert {i}"
            );
        }

        // Kernel receive timestamps: increasing, one interval apart (keepalived
        // may drift under load, but a gap of 3 intervals would be "after
        // silence", already rejected above).
        let interval_ns = u64::from(self.interval_cs) * 10_000_000;
        let mut gaps: Vec<u64> = out
            .adverts
            .windows(2)
            .map(|pair| {
                assert!(pair[1].timestamp_ns > pair[0].timestamp_ns, "{context}");
                pair[1].timestamp_ns - pair[0].timestamp_ns
            })
            .collect();
        gaps.sort_unstable();
        let median = gaps[gaps.len() / 2];
        assert!(
            median > interval_ns / 2 && median < interval_ns * 3 / 2,
            "median gap {median} ns for an interval of {interval_ns} ns; gaps {gaps:?}"
        );

        let summary = out.summary();
        assert_eq!(summary.receive_path, summary_path);
        assert_eq!(summary.adverts, count as u64);
        let accepted = summary.counter("adverts_accepted");
        assert!(accepted >= count as u64, "{summary:?}");
        check_accounting(summary);
        for (name, value) in &summary.counters {
            if name.starts_with("drop_") || name == "ringbuf_full" {
                assert_eq!(*value, 0, "counter {name} in {summary:?}");
            }
        }
        // Only the first advert told the state machine anything new.
        assert_eq!(summary.counter("wakeups"), 1, "{summary:?}");
        let wakeups = summary.counter("wakeups") + summary.counter("wakeups_saved");
        // The XDP counters are read one by one while adverts keep arriving,
        // so allow for one advert landing in between.
        assert!(
            (accepted..=accepted + 1).contains(&wakeups),
            "every accepted advert is a wakeup or a saved one: {summary:?}"
        );
    }
}

/// Every packet the receive path saw has exactly one outcome: not VRRP,
/// accepted, or one drop reason. The XDP counters are read one at a time
/// while packets keep arriving, so allow one packet of skew.
fn check_accounting(summary: &Summary) {
    let seen = summary.counter("packets_seen");
    let outcomes: u64 = summary
        .counters
        .iter()
        .filter(|(name, _)| {
            name.starts_with("drop_") || *name == "not_vrrp" || *name == "adverts_accepted"
        })
        .map(|(_, value)| value)
        .sum();
    assert!(
        outcomes + 1 >= seen && outcomes <= seen + 1,
        "{outcomes} outcomes for {seen} packets: {summary:?}"
    );
}

/// Checks a run that must have received keepalived's adverts yet reported
/// none: it timed out, and `drop_counter` counted the refused adverts.
fn check_refused(out: &WatchOutput, summary_path: &str, drop_counter: &str) {
    let context = format!("stderr:\n{}", out.stderr);
    assert!(
        out.adverts.is_empty(),
        "unexpected adverts {:#?}",
        out.adverts
    );
    assert!(
        out.other_lines.is_empty(),
        "unexpected output {:?}",
        out.other_lines
    );
    assert!(
        !out.status.success(),
        "lbha-agent should time out; {context}"
    );
    assert!(
        out.stderr.contains("timed out after 0 adverts"),
        "{context}"
    );
    let summary = out.summary();
    assert_eq!(summary.receive_path, summary_path);
    assert_eq!(summary.adverts, 0);
    assert_eq!(summary.counter("adverts_accepted"), 0, "{summary:?}");
    assert_eq!(summary.counter("wakeups"), 0, "{summary:?}");
    // keepalived advertises every second; the watch lasts 4.
    let dropped = summary.counter(drop_counter);
    assert!(dropped >= 2, "{drop_counter} = {dropped}: {summary:?}");
    check_accounting(summary);
    for (name, value) in &summary.counters {
        if name.starts_with("drop_") && name != drop_counter {
            assert_eq!(*value, 0, "counter {name} in {summary:?}");
        }
    }
}

fn v2_pass_unicast(subnet: u8, receive_path: &str, expected_path: &str) {
    if !require_root() {
        return;
    }
    let lab = Lab::new(subnet);
    let _keepalived = lab.start_master(
        lab.instance(51)
            .version(2)
            .priority(150)
            .advert_int("1")
            .auth_pass(PASSWORD),
    );
    let vrid = format!("51:v2:pass={PASSWORD}");
    let count = 3;
    let out = lab.watch(&[
        "--vrid",
        &vrid,
        "--receive-path",
        receive_path,
        "--count",
        &count.to_string(),
        "--timeout",
        "12",
    ]);
    Expected {
        lab: &lab,
        vrid: 51,
        priority: 150,
        version: 2,
        interval_cs: 100,
        receive_path: expected_path,
    }
    .check(&out, count, expected_path);
}

#[test]
fn keepalived_v2_pass_unicast_via_xdp() {
    v2_pass_unicast(11, "xdp", "xdp");
}

#[test]
fn keepalived_v2_pass_unicast_via_raw_socket() {
    v2_pass_unicast(12, "raw", "raw-socket");
}

#[test]
fn keepalived_v3_unicast_fast_interval_via_xdp() {
    if !require_root() {
        return;
    }
    let lab = Lab::new(13);
    let _keepalived = lab.start_master(lab.instance(52).version(3).priority(200).advert_int("0.1"));
    let count = 10;
    // From the unicast peers only, keepalived among them, as the daemon
    // filters them.
    let vrid = format!("52:v3:from=10.201.13.7:from={}", lab.ka_addr);
    let out = lab.watch(&[
        "--vrid",
        &vrid,
        "--receive-path",
        "xdp",
        "--count",
        &count.to_string(),
        "--timeout",
        "10",
        // Print the silently queued repeats promptly.
        "--drain-ms",
        "100",
    ]);
    Expected {
        lab: &lab,
        vrid: 52,
        priority: 200,
        version: 3,
        interval_cs: 10,
        receive_path: "xdp",
    }
    .check(&out, count, "xdp");
}

fn refused(subnet: u8, vrid_spec: &str, receive_path: &str, summary_path: &str, counter: &str) {
    if !require_root() {
        return;
    }
    let lab = Lab::new(subnet);
    let _keepalived = lab.start_master(
        lab.instance(51)
            .version(2)
            .priority(150)
            .auth_pass(PASSWORD),
    );
    let out = lab.watch(&[
        "--vrid",
        vrid_spec,
        "--receive-path",
        receive_path,
        "--count",
        "1",
        "--timeout",
        "4",
    ]);
    check_refused(&out, summary_path, counter);
}

#[test]
fn wrong_password_is_dropped_via_xdp() {
    refused(
        14,
        "51:v2:pass=wrongpw1",
        "xdp",
        "xdp",
        "drop_auth_mismatch",
    );
}

#[test]
fn wrong_password_is_dropped_via_raw_socket() {
    refused(
        15,
        "51:v2:pass=wrongpw1",
        "raw",
        "raw-socket",
        "drop_auth_mismatch",
    );
}

#[test]
fn unconfigured_vrid_is_dropped_via_xdp() {
    refused(
        16,
        &format!("99:v2:pass={PASSWORD}"),
        "xdp",
        "xdp",
        "drop_unknown_vrid",
    );
}

#[test]
fn unconfigured_vrid_is_dropped_via_raw_socket() {
    refused(
        17,
        &format!("99:v2:pass={PASSWORD}"),
        "raw",
        "raw-socket",
        "drop_unknown_vrid",
    );
}

#[test]
fn adverts_from_other_sources_are_dropped_via_xdp() {
    refused(
        18,
        &format!("51:v2:pass={PASSWORD}:from=10.201.18.9"),
        "xdp",
        "xdp",
        "drop_unknown_source",
    );
}

#[test]
fn adverts_from_other_sources_are_dropped_via_raw_socket() {
    refused(
        19,
        &format!("51:v2:pass={PASSWORD}:from=10.201.19.9:from=10.201.19.3"),
        "raw",
        "raw-socket",
        "drop_unknown_source",
    );
}
