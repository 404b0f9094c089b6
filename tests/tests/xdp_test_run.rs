//! The loaded XDP program, exercised with `BPF_PROG_TEST_RUN` on crafted
//! frames: verdicts, counters, ring-buffer events, the last-advert map and
//! the wakeup/no-wakeup fast path, and the diagnostics it logs through
//! aya-log when loaded with them. Needs root (CI is root).

use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsRawFd, RawFd},
    sync::{Arc, Mutex},
    time::Duration,
};

use aya::{Ebpf, TestRun, TestRunOptions, maps::MapData, maps::RingBuf};
use lbha_agent::{
    bpf::{
        self, Diagnostics, SteadyAdverts, Variant, XdpTables,
        variant::{self, KernelFeatures},
    },
    clock::monotonic_ns,
};
use lbha_common::{
    AdvertEvent, Counter, VridConfig,
    diag::BPF_LOG_TARGET,
    event::{ReceivePath, VridKey, change},
    vrrp::{AUTH_AH, AUTH_NONE, AUTH_PASS, encode::Advert, encode::auth_data},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const PEER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const OTHER_PEER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 3);
const US: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const VIPS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(10, 9, 0, 100)),
    IpAddr::V4(Ipv4Addr::new(10, 9, 0, 101)),
];

struct Loaded {
    variant: Variant,
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    tables: XdpTables,
}

/// A host on the link that is no instance's unicast peer.
const STRANGER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 66);
/// The v3 VRID whose adverts are accepted only from [`PEER`] and
/// [`OTHER_PEER`] (its unicast peers, `check_unicast_src`).
const PEERS_ONLY: u8 = 53;

/// The v2 VRID configured with keepalived's `auth_type AH`.
const AH_VRID: u8 = 54;

/// Loads the program with VRID 51 as v2/PASS "secret", VRID 52 as v3 and
/// VRID 53 ([`PEERS_ONLY`]) as v3 from its unicast peers only.
fn load() -> Option<Loaded> {
    load_with(Diagnostics::Off)
}

/// Loaded as `lbha-agent watch` loads it: steady adverts queued too (without
/// a wakeup), so every accepted advert can be seen in the ring buffer.
fn load_with(diagnostics: Diagnostics) -> Option<Loaded> {
    load_steady(diagnostics, SteadyAdverts::Queued)
}

/// The program under test: `LBHA_TEST_VARIANT` (`full`, `no-timer`; the
/// kernel matrix runs this file once per variant a kernel supports), else
/// the best one the kernel's probe allows.
fn variant_under_test() -> Variant {
    let supported = variant::supported(&KernelFeatures::probe());
    match std::env::var("LBHA_TEST_VARIANT") {
        Ok(name) => {
            let wanted = Variant::ALL
                .into_iter()
                .find(|v| v.name() == name)
                .unwrap_or_else(|| panic!("LBHA_TEST_VARIANT={name}: not a variant"));
            assert!(
                supported.contains(&wanted),
                "LBHA_TEST_VARIANT={name}, but this kernel supports {supported:?}"
            );
            wanted
        }
        Err(_) => *supported
            .first()
            .expect("this kernel runs an XDP variant (ring buffer and XDP)"),
    }
}

fn load_steady(diagnostics: Diagnostics, steady: SteadyAdverts) -> Option<Loaded> {
    if !lbha_tests::require_root() {
        return None;
    }
    let variant = variant_under_test();
    let (ebpf, events, mut tables) = bpf::load(variant, diagnostics, steady).unwrap_or_else(|e| {
        panic!(
            "the {} XDP program loads and verifies: {e:?}",
            variant.name()
        )
    });
    tables
        .configure(&[
            (
                VridKey::v4(51),
                VridConfig::new(2, AUTH_PASS, auth_data(b"secret")),
            ),
            (VridKey::v4(52), VridConfig::new(3, AUTH_NONE, [0; 8])),
            (
                VridKey::v4(PEERS_ONLY),
                VridConfig::new(3, AUTH_NONE, [0; 8])
                    .with_allowed_ips(&[PEER.into(), OTHER_PEER.into()])
                    .expect("two peers"),
            ),
            (
                VridKey::v4(AH_VRID),
                VridConfig::new(2, AUTH_AH, auth_data(b"ahsecret")),
            ),
        ])
        .expect("VRID table written");
    // As the running agent does: it holds the lease while it reads events.
    tables.set_lease(u64::MAX).expect("lease written");
    Some(Loaded {
        variant,
        ebpf,
        events,
        tables,
    })
}

impl Loaded {
    /// Runs the program once on `frame`; returns the verdict and the frame
    /// as the program left it.
    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let program = bpf::program_mut(&mut self.ebpf, self.variant).expect("program");
        let mut out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        let result = program.test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(result.data_size_out as usize);
        (result.return_value, out)
    }

    fn drain(&mut self) -> Vec<AdvertEvent> {
        let mut events = Vec::new();
        while let Some(item) = self.events.next() {
            events.push(bpf::decode_event(&item).expect("ring record is an AdvertEvent"));
        }
        events
    }

    fn counter(&self, counter: Counter) -> u64 {
        self.tables.counters().expect("counters").get(counter)
    }
}

fn v2(priority: u8, pass: &[u8]) -> Advert<'_> {
    Advert {
        version: 2,
        vrid: 51,
        priority,
        interval_cs: 100,
        auth_pass: Some(pass),
        virtual_addrs: &VIPS,
    }
}

fn v3(vrid: u8, priority: u8, interval_cs: u16) -> Advert<'static> {
    Advert {
        version: 3,
        vrid,
        priority,
        interval_cs,
        auth_pass: None,
        virtual_addrs: &VIPS[..1],
    }
}

fn frame(advert: &Advert<'_>, src: Ipv4Addr) -> Vec<u8> {
    advert.ethernet_frame(src, US, None)
}

/// An Ethernet + IPv4 + UDP frame: ordinary traffic that must pass untouched.
fn udp_frame() -> Vec<u8> {
    let mut f = frame(&v3(52, 100, 100), PEER);
    f[14 + 9] = 17; // protocol UDP; nothing else needs to be valid
    f
}

fn arp_frame() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.resize(60, 0);
    f
}

/// Recomputes the IPv4 header checksum of a frame without VLAN tag.
fn fix_ip_checksum(f: &mut [u8]) {
    f[24..26].copy_from_slice(&[0, 0]);
    let sum = lbha_common::checksum::checksum(0, &f[14..34]);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
}

#[test]
fn verdicts_and_counters_account_for_every_packet() {
    let Some(mut bpf) = load() else { return };

    let bad_ttl = bad_ttl_frame();
    let mut bad_checksum = frame(&v3(52, 100, 100), PEER);
    bad_checksum[14 + 20 + 2] ^= 0x01; // priority changed after checksumming
    let mut truncated = frame(&v2(100, b"secret"), PEER);
    truncated.truncate(14 + 20 + 8 + 4);
    let mut bad_length = frame(&v3(52, 100, 100), PEER);
    bad_length[14 + 20 + 3] = 2; // claims two addresses, carries one

    let cases: Vec<(&str, Vec<u8>, u32, Counter)> = vec![
        (
            "v2 PASS advert",
            frame(&v2(100, b"secret"), PEER),
            XDP_DROP,
            Counter::AdvertsAccepted,
        ),
        (
            "v3 advert",
            frame(&v3(52, 100, 100), PEER),
            XDP_DROP,
            Counter::AdvertsAccepted,
        ),
        (
            "v3 advert in 802.1Q",
            v3(52, 100, 100).ethernet_frame(PEER, US, Some(7)),
            XDP_DROP,
            Counter::AdvertsAccepted,
        ),
        ("UDP", udp_frame(), XDP_PASS, Counter::NotVrrp),
        ("ARP", arp_frame(), XDP_PASS, Counter::NotVrrp),
        (
            "unknown VRID",
            frame(&v3(99, 100, 100), PEER),
            XDP_PASS,
            Counter::DropUnknownVrid,
        ),
        ("TTL 64", bad_ttl, XDP_DROP, Counter::DropBadTtl),
        (
            "bad checksum",
            bad_checksum,
            XDP_DROP,
            Counter::DropBadChecksum,
        ),
        (
            "wrong password",
            frame(&v2(100, b"guess"), PEER),
            XDP_DROP,
            Counter::DropAuthMismatch,
        ),
        ("truncated", truncated, XDP_DROP, Counter::DropTruncated),
        (
            "v3 for a v2 VRID",
            frame(
                &Advert {
                    vrid: 51,
                    ..v3(51, 100, 100)
                },
                PEER,
            ),
            XDP_DROP,
            Counter::DropBadVersionType,
        ),
        (
            "address count vs length",
            bad_length,
            XDP_DROP,
            Counter::DropBadLength,
        ),
        (
            "v3 advert from a unicast peer",
            frame(&v3(PEERS_ONLY, 100, 100), OTHER_PEER),
            XDP_DROP,
            Counter::AdvertsAccepted,
        ),
        (
            "v3 advert from a stranger",
            frame(&v3(PEERS_ONLY, 255, 100), STRANGER),
            XDP_DROP,
            Counter::DropUnknownSource,
        ),
        (
            "a stranger's advert for an unfiltered VRID",
            frame(&v3(52, 100, 100), STRANGER),
            XDP_DROP,
            Counter::AdvertsAccepted,
        ),
    ];

    for (name, input, verdict, counter) in &cases {
        let before = bpf.counter(*counter);
        let (got, out) = bpf.run(input);
        assert_eq!(got, *verdict, "{name}: verdict");
        assert_eq!(
            bpf.counter(*counter),
            before + 1,
            "{name}: counted as {counter:?}"
        );
        if *verdict == XDP_PASS {
            assert_eq!(&out, input, "{name}: passed frames are untouched");
        }
    }

    let counters = bpf.tables.counters().unwrap();
    let seen = counters.get(Counter::PacketsSeen);
    assert_eq!(seen, cases.len() as u64);
    let outcomes: u64 = [
        Counter::NotVrrp,
        Counter::AdvertsAccepted,
        Counter::DropTruncated,
        Counter::DropBadTtl,
        Counter::DropBadChecksum,
        Counter::DropBadVersionType,
        Counter::DropBadLength,
        Counter::DropUnknownVrid,
        Counter::DropAuthMismatch,
        Counter::DropUnknownSource,
    ]
    .iter()
    .map(|c| counters.get(*c))
    .sum();
    assert_eq!(outcomes, seen, "every packet has exactly one outcome");
    assert_eq!(counters.get(Counter::AdvertsAccepted), 5);
    assert_eq!(bpf.drain().len(), 5, "one ring event per accepted advert");
}

/// keepalived's `check_unicast_src`, on by default in lbha: a stranger's
/// advert (here a would-be master at priority 255) is dropped and counted,
/// tells user space nothing and leaves the last advert of the VRID alone;
/// the peers' adverts go through. Without an agent the stranger's advert is
/// passed to the stack, which then decides.
#[test]
fn adverts_from_strangers_are_dropped_and_counted() {
    let Some(mut bpf) = load() else { return };
    let epoll = Epoll::watch(bpf.events.as_raw_fd());
    let peer = frame(&v3(PEERS_ONLY, 100, 100), PEER);
    let stranger = frame(&v3(PEERS_ONLY, 255, 100), STRANGER);

    assert_eq!(bpf.run(&peer).0, XDP_DROP);
    assert_eq!(bpf.drain().len(), 1);
    while epoll.woken(Duration::ZERO) {}
    let last = bpf
        .tables
        .last_advert(VridKey::v4(PEERS_ONLY))
        .unwrap()
        .expect("peer's advert");

    for n in 1..=3 {
        let (verdict, _) = bpf.run(&stranger);
        assert_eq!(verdict, XDP_DROP, "stranger {n}");
        assert_eq!(bpf.counter(Counter::DropUnknownSource), n);
    }
    assert!(!epoll.woken(Duration::from_millis(50)), "no wakeup");
    assert!(bpf.drain().is_empty(), "nothing queued");
    assert_eq!(
        bpf.tables.last_advert(VridKey::v4(PEERS_ONLY)).unwrap(),
        Some(last)
    );
    assert_eq!(bpf.counter(Counter::AdvertsAccepted), 1);
    assert_eq!(bpf.counter(Counter::PassedNoAgent), 0);

    // One source off, and the other peer: as listed.
    let near = frame(&v3(PEERS_ONLY, 100, 100), Ipv4Addr::new(10, 9, 0, 4));
    assert_eq!(bpf.run(&near).0, XDP_DROP);
    assert_eq!(bpf.counter(Counter::DropUnknownSource), 4);
    assert_eq!(
        bpf.run(&frame(&v3(PEERS_ONLY, 100, 100), OTHER_PEER)).0,
        XDP_DROP
    );
    assert_eq!(bpf.counter(Counter::AdvertsAccepted), 2);

    // No agent: the pinned program leaves the verdict to the stack.
    bpf.tables.set_lease(0).unwrap();
    let (verdict, out) = bpf.run(&stranger);
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(out, stranger, "passed unmodified");
    assert_eq!(bpf.counter(Counter::DropUnknownSource), 5);
    assert_eq!(bpf.counter(Counter::PassedNoAgent), 1);
}

/// keepalived's `auth_type AH`: the kernel cannot check the HMAC-MD5 ICV,
/// so a well-formed AH advert is passed to the stack unmodified (for the
/// agent's protocol-51 socket) and never queued, remembered or allowed
/// to arm the silence timer; a malformed one is a counted drop.
#[test]
fn ah_adverts_are_passed_on_for_user_space_to_verify() {
    let Some(mut bpf) = load() else { return };
    let ah_frame_for = |vrid, seq| {
        let advert = Advert {
            version: 2,
            vrid,
            priority: 100,
            interval_cs: 100,
            auth_pass: None,
            virtual_addrs: &VIPS,
        };
        let mut f = vec![
            0x01, 0x00, 0x5e, 0x00, 0x00, 0x12, 2, 0, 0, 0, 0, 1, 0x08, 0x00,
        ];
        f.extend_from_slice(&advert.ipv4_ah_packet(PEER, US, b"ahsecret", seq, 7, Some(255)));
        f
    };
    let ah_frame = |seq| ah_frame_for(AH_VRID, seq);
    for n in 1..=3 {
        let f = ah_frame(n);
        let (verdict, out) = bpf.run(&f);
        assert_eq!(verdict, XDP_PASS, "AH advert {n}");
        assert_eq!(out, f, "passed unmodified");
        assert_eq!(bpf.counter(Counter::AhToUserSpace), u64::from(n));
    }
    assert!(bpf.drain().is_empty(), "nothing queued");
    assert_eq!(bpf.tables.last_advert(VridKey::v4(AH_VRID)).unwrap(), None);
    assert_eq!(bpf.counter(Counter::AdvertsAccepted), 0);

    // An AH payload length keepalived never sends: dropped, counted.
    let mut odd = ah_frame(4);
    odd[14 + 20 + 1] = 5;
    assert_eq!(bpf.run(&odd).0, XDP_DROP);
    assert_eq!(bpf.counter(Counter::DropMalformedAh), 1);
    // Cut inside the AH header (IP length kept): the same.
    let cut = ah_frame(5)[..14 + 20 + 10].to_vec();
    assert_eq!(bpf.run(&cut).0, XDP_DROP);
    assert_eq!(bpf.counter(Counter::DropMalformedAh), 2);
    // AH around something else: not ours.
    let mut other = ah_frame(6);
    other[14 + 20] = 6;
    assert_eq!(bpf.run(&other).0, XDP_PASS);
    // An AH advert for the PASS VRID: the configuration disagrees.
    let pass_vrid = ah_frame_for(51, 7);
    let before = bpf.counter(Counter::DropAuthMismatch);
    assert_eq!(bpf.run(&pass_vrid).0, XDP_DROP);
    assert_eq!(bpf.counter(Counter::DropAuthMismatch), before + 1);
    assert_eq!(bpf.counter(Counter::AhToUserSpace), 3);
}

/// The kernel's silence timer and the fast path's "after silence" both
/// count in the VRID's `down_timer_adverts` intervals, not a fixed three.
#[test]
fn silence_is_the_vrids_down_timer_adverts_intervals() {
    let Some(mut bpf) = load() else { return };
    let v3_after = |n: u8| VridConfig::new(3, AUTH_NONE, [0; 8]).with_down_timer_adverts(n);
    bpf.tables
        .configure(&[
            (VridKey::v4(52), v3_after(3)),
            (VridKey::v4(54), v3_after(1)),
            (VridKey::v4(55), v3_after(6)),
        ])
        .unwrap();
    let epoll = Epoll::watch(bpf.events.as_raw_fd());
    // 10 cs adverts: silence after 100 ms for VRID 54, 600 ms for VRID 55.
    for (vrid, n) in [(54u8, 1u64), (55, 6)] {
        bpf.run(&frame(&v3(vrid, 100, 10), PEER));
        let sent = bpf
            .tables
            .last_advert(VridKey::v4(vrid))
            .unwrap()
            .unwrap()
            .timestamp_ns;
        assert_eq!(bpf.drain().len(), 1);
        while epoll.woken(Duration::ZERO) {}
        if bpf.variant == Variant::NoTimer {
            // No timer: nothing is reported (the agent keeps the deadline).
            assert!(
                !epoll.woken(Duration::from_millis(n * 100 + 300)),
                "VRID {vrid}: no-timer program reported something"
            );
            assert!(bpf.drain().is_empty());
            assert_eq!(bpf.counter(Counter::SilenceReported), 0);
            continue;
        }
        assert!(
            epoll.woken(Duration::from_secs(2)),
            "VRID {vrid}: silence reported"
        );
        let reports = bpf.drain();
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!((reports[0].flags, reports[0].vrid), (change::SILENCE, vrid));
        let after = reports[0].timestamp_ns - sent;
        let expected = n * 100_000_000;
        assert!(
            (expected..expected + 150_000_000).contains(&after),
            "VRID {vrid}: reported {after} ns after the advert ({n} x 100 ms expected)"
        );
        while epoll.woken(Duration::ZERO) {}
    }

    // A 400 ms gap: silence for a VRID that is down after 3 intervals or
    // 1, a steady master for one that waits 6.
    for (vrid, flags) in [
        (52u8, change::AFTER_SILENCE),
        (54, change::AFTER_SILENCE),
        (55, 0),
    ] {
        bpf.run(&frame(&v3(vrid, 100, 10), PEER));
        std::thread::sleep(Duration::from_millis(400));
        bpf.drain();
        bpf.run(&frame(&v3(vrid, 100, 10), PEER));
        let events: Vec<_> = bpf
            .drain()
            .into_iter()
            .filter(|e| e.flags & change::SILENCE == 0)
            .collect();
        assert_eq!(events.len(), 1, "VRID {vrid}: {events:?}");
        assert_eq!(events[0].flags, flags, "VRID {vrid}");
    }
}

#[test]
fn accepted_adverts_arrive_as_events_with_their_fields() {
    let Some(mut bpf) = load() else { return };
    let before = monotonic_ns();
    bpf.run(&frame(&v2(150, b"secret"), PEER));
    bpf.run(&frame(&v3(52, 200, 10), OTHER_PEER));
    let after = monotonic_ns();

    let events = bpf.drain();
    assert_eq!(events.len(), 2);
    let (a, b) = (events[0], events[1]);
    assert_eq!(a.src_ip(), PEER);
    assert_eq!(a.dst_ip(), US);
    assert_eq!(a.first_vip_ip(), VIPS[0]);
    assert_eq!(
        (a.vrid, a.priority, a.version, a.interval_cs, a.count_addr),
        (51, 150, 2, 100, 2)
    );
    assert_eq!(a.receive_path, ReceivePath::Xdp as u8);
    assert_eq!(b.src_ip(), OTHER_PEER);
    assert_eq!(
        (b.vrid, b.priority, b.version, b.interval_cs, b.count_addr),
        (52, 200, 3, 10, 1)
    );
    for e in [a, b] {
        assert!(
            (before..=after).contains(&e.timestamp_ns),
            "kernel timestamp {} is on the agent's monotonic clock [{before}, {after}]",
            e.timestamp_ns
        );
    }
    // Read through the map's shared mapping, as a backup does, not a
    // lookup syscall per VRID.
    assert!(bpf.tables.last_advert_mapped(), "LAST_ADVERT is mmapped");
    assert_eq!(bpf.tables.last_advert(VridKey::v4(51)).unwrap(), Some(a));
    assert_eq!(bpf.tables.last_advert(VridKey::v4(52)).unwrap(), Some(b));
    assert_eq!(bpf.tables.last_advert(VridKey::v4(53)).unwrap(), None);
}

/// An epoll instance watching the ring buffer, to observe kernel wakeups:
/// epoll only reports the fd once the kernel has notified it, which
/// `BPF_RB_NO_WAKEUP` submissions do not do.
struct Epoll(RawFd);

impl Epoll {
    fn watch(fd: RawFd) -> Self {
        // SAFETY: plain syscalls with valid arguments.
        unsafe {
            let epfd = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            assert!(epfd >= 0, "epoll_create1");
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 0,
            };
            assert_eq!(
                libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &raw mut ev),
                0
            );
            Epoll(epfd)
        }
    }

    /// Whether a wakeup arrives within `timeout`.
    fn woken(&self, timeout: Duration) -> bool {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: one valid event slot.
        let n = unsafe { libc::epoll_wait(self.0, &raw mut ev, 1, timeout.as_millis() as i32) };
        assert!(n >= 0, "epoll_wait");
        n == 1
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: closing the fd we own.
        unsafe { libc::close(self.0) };
    }
}

#[test]
fn only_changes_wake_user_space() {
    let Some(mut bpf) = load() else { return };
    let epoll = Epoll::watch(bpf.events.as_raw_fd());
    // Under the silence timer of the shortest interval used (3 x 10 cs).
    let wait = Duration::from_millis(100);
    let step = |bpf: &mut Loaded, advert: Advert<'_>, src: Ipv4Addr| -> (bool, u8) {
        bpf.run(&frame(&advert, src));
        let woken = epoll.woken(wait);
        let events = bpf.drain();
        assert_eq!(events.len(), 1, "every accepted advert is queued");
        // Re-poll so a level-triggered report of the drained ring is consumed.
        while epoll.woken(Duration::ZERO) {}
        (woken, events[0].flags)
    };

    assert_eq!(
        step(&mut bpf, v3(52, 100, 100), PEER),
        (true, change::NEW_SOURCE)
    );
    assert_eq!(
        step(&mut bpf, v3(52, 100, 100), PEER),
        (false, 0),
        "steady master: no wakeup"
    );
    assert_eq!(step(&mut bpf, v3(52, 100, 100), PEER), (false, 0));
    assert_eq!(
        step(&mut bpf, v3(52, 90, 100), PEER),
        (true, change::PRIORITY)
    );
    assert_eq!(
        step(&mut bpf, v3(52, 90, 50), PEER),
        (true, change::INTERVAL)
    );
    assert_eq!(
        step(&mut bpf, v3(52, 90, 50), OTHER_PEER),
        (true, change::NEW_SOURCE)
    );
    assert_eq!(
        step(&mut bpf, v3(52, 0, 50), OTHER_PEER),
        (true, change::PRIORITY | change::RESIGN)
    );
    assert_eq!(bpf.counter(Counter::Wakeups), 5);
    assert_eq!(bpf.counter(Counter::WakeupsSaved), 2);

    // Silence: 10 cs adverts, then a gap. When it reaches three intervals
    // the kernel's silence timer queues a report with a wakeup (what wakes a
    // backup whose master died); the next advert is flagged AFTER_SILENCE.
    assert_eq!(
        step(&mut bpf, v3(52, 100, 10), PEER),
        (true, change::NEW_SOURCE)
    );
    assert_eq!(step(&mut bpf, v3(52, 100, 10), PEER).1, 0);
    if bpf.variant == Variant::NoTimer {
        // Without the timer nothing wakes user space during the silence;
        // the advert after it still says so.
        assert!(
            !epoll.woken(Duration::from_millis(600)),
            "no silence report"
        );
        assert!(bpf.drain().is_empty());
        assert_eq!(
            step(&mut bpf, v3(52, 100, 10), PEER),
            (true, change::AFTER_SILENCE)
        );
        assert_eq!(bpf.counter(Counter::SilenceReported), 0);
        assert_eq!(bpf.counter(Counter::SilenceTimerErrors), 0);
        return;
    }
    let last_advert = bpf
        .tables
        .last_advert(VridKey::v4(52))
        .unwrap()
        .unwrap()
        .timestamp_ns;
    assert!(
        epoll.woken(Duration::from_secs(2)),
        "the silence report wakes user space"
    );
    let reports = bpf.drain();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let report = reports[0];
    assert_eq!(
        (report.flags, report.vrid, report.interval_cs),
        (change::SILENCE, 52, 10)
    );
    let after = report.timestamp_ns - last_advert;
    assert!(
        (300_000_000..500_000_000).contains(&after),
        "reported {after} ns after the last advert (3 x 100 ms expected)"
    );
    assert_eq!(bpf.counter(Counter::SilenceReported), 1);
    while epoll.woken(Duration::ZERO) {}
    assert_eq!(
        step(&mut bpf, v3(52, 100, 10), PEER),
        (true, change::AFTER_SILENCE)
    );
    // A steady master keeps restarting the timer: no report. Each gap is
    // measured with the kernel's own timestamps: on a loaded machine (or an
    // emulated guest, `cargo xtask kernels`) a 50 ms sleep can stretch past
    // the 300 ms timer, and then a report is due.
    let mut previous = bpf
        .tables
        .last_advert(VridKey::v4(52))
        .unwrap()
        .unwrap()
        .timestamp_ns;
    let (mut surely_silent, mut maybe_silent) = (0, 0);
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(50));
        bpf.run(&frame(&v3(52, 100, 10), PEER));
        let at = bpf
            .tables
            .last_advert(VridKey::v4(52))
            .unwrap()
            .unwrap()
            .timestamp_ns;
        let gap = at - previous;
        previous = at;
        surely_silent += u64::from(gap > 320_000_000);
        maybe_silent += u64::from(gap >= 300_000_000);
    }
    let reported = bpf.counter(Counter::SilenceReported);
    assert!(
        (1 + surely_silent..=1 + maybe_silent).contains(&reported),
        "{reported} silence reports; gaps over the timer: {surely_silent} to {maybe_silent}"
    );
    assert_eq!(bpf.counter(Counter::SilenceTimerErrors), 0);
}

/// As the daemon loads it: a steady advert only updates the last-advert
/// map (which the agent reads before acting on a deadline); the ring buffer
/// carries changes alone, so its use grows with events, not advert rate.
#[test]
fn the_daemon_keeps_steady_adverts_in_the_map_only() {
    let Some(mut bpf) = load_steady(Diagnostics::Off, SteadyAdverts::MapOnly) else {
        return;
    };
    bpf.run(&frame(&v3(52, 100, 100), PEER));
    let first = bpf.drain();
    assert_eq!(first.len(), 1, "a new master is an event");
    assert_eq!(first[0].flags, change::NEW_SOURCE);
    for _ in 0..100 {
        bpf.run(&frame(&v3(52, 100, 100), PEER));
    }
    assert!(bpf.drain().is_empty(), "steady adverts are not queued");
    assert_eq!(bpf.counter(Counter::WakeupsSaved), 100);
    assert_eq!(bpf.counter(Counter::RingBufFull), 0);
    let last = bpf
        .tables
        .last_advert(VridKey::v4(52))
        .unwrap()
        .expect("kept in the map");
    assert!(
        last.timestamp_ns > first[0].timestamp_ns,
        "the map has the latest"
    );
    bpf.run(&frame(&v3(52, 90, 100), PEER));
    let change = bpf.drain();
    assert_eq!(change.len(), 1);
    assert_eq!(
        change[0].flags,
        change::PRIORITY,
        "changes are still events"
    );
}

#[test]
fn vrid_table_changes_take_effect_without_reloading() {
    let Some(mut bpf) = load() else { return };
    let advert = frame(&v3(52, 100, 100), PEER);
    assert_eq!(bpf.run(&advert).0, XDP_DROP);
    bpf.tables.configure(&[]).unwrap();
    assert_eq!(
        bpf.run(&advert).0,
        XDP_PASS,
        "unconfigured VRIDs are passed on"
    );
    assert_eq!(bpf.counter(Counter::DropUnknownVrid), 1);
}

#[test]
fn without_an_agent_lease_adverts_are_passed_on_not_consumed() {
    let Some(mut bpf) = load() else { return };
    let advert = frame(&v3(52, 200, 10), PEER);

    // The agent stopped (lease zeroed): the pinned program keeps counting and
    // remembering, but hands the advert to the stack and queues nothing.
    bpf.tables.set_lease(0).unwrap();
    let (verdict, out) = bpf.run(&advert);
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(out, advert, "the frame is passed unmodified");
    assert!(bpf.drain().is_empty(), "nothing queued for an absent agent");
    assert_eq!(bpf.counter(Counter::AdvertsAccepted), 1);
    assert_eq!(bpf.counter(Counter::PassedNoAgent), 1);
    let remembered = bpf
        .tables
        .last_advert(VridKey::v4(52))
        .unwrap()
        .expect("last advert kept");
    assert_eq!(remembered.priority, 200);

    // An expired lease is no lease.
    bpf.tables.set_lease(monotonic_ns() - 1).unwrap();
    assert_eq!(bpf.run(&advert).0, XDP_PASS);
    assert_eq!(bpf.counter(Counter::PassedNoAgent), 2);

    // A (re)started agent takes the lease: adverts are consumed and queued again.
    bpf.tables
        .set_lease(monotonic_ns() + 3_000_000_000)
        .unwrap();
    assert_eq!(bpf.run(&advert).0, XDP_DROP);
    assert_eq!(bpf.drain().len(), 1);
    assert_eq!(bpf.counter(Counter::PassedNoAgent), 2);
    assert_eq!(bpf.counter(Counter::AdvertsAccepted), 3);

    // That advert armed the silence timer (3 x 10 cs); the agent going away
    // before it fires means nobody is told.
    bpf.tables.set_lease(0).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(bpf.drain().is_empty());
    assert_eq!(bpf.counter(Counter::SilenceReported), 0);
}

/// A `log` logger keeping the messages aya-log hands it, checking that each
/// is a debug record under the target the agent filters on.
#[derive(Clone, Default)]
struct Records(Arc<Mutex<Vec<String>>>);

impl Records {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl log::Log for Records {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args().to_string();
        assert_eq!(record.level(), log::Level::Debug, "{message}");
        assert_eq!(record.target(), BPF_LOG_TARGET, "{message}");
        self.0.lock().unwrap().push(message);
    }

    fn flush(&self) {}
}

/// The program with its aya-log records read into [`Records`].
struct Logged {
    bpf: Loaded,
    log: aya_log::EbpfLogger<Records>,
    records: Records,
}

impl Logged {
    fn load(diagnostics: Diagnostics) -> Option<Self> {
        let mut bpf = load_with(diagnostics)?;
        let records = Records::default();
        let log = bpf::kernel_log(&mut bpf.ebpf, records.clone()).expect("AYA_LOGS map");
        Some(Self { bpf, log, records })
    }

    /// Runs `frame`; returns the verdict and the records it produced.
    fn run(&mut self, frame: &[u8]) -> (u32, Vec<String>) {
        let (verdict, _) = self.bpf.run(frame);
        self.log.flush();
        (verdict, self.records.take())
    }
}

/// A multicast advert with TTL 64 (unicast ones may carry any TTL).
fn bad_ttl_frame() -> Vec<u8> {
    let mut f = v3(52, 100, 100).ethernet_frame(PEER, Ipv4Addr::new(224, 0, 0, 18), None);
    f[14 + 8] = 64;
    fix_ip_checksum(&mut f);
    f
}

#[test]
fn diagnostics_report_the_first_packet_first_adverts_and_drops() {
    let Some(mut logged) = Logged::load(Diagnostics::On) else {
        return;
    };

    let (verdict, records) = logged.run(&bad_ttl_frame());
    assert_eq!(verdict, XDP_DROP);
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(
        records[0].starts_with("XDP program running: first packet on ifindex "),
        "{records:?}"
    );
    assert_eq!(
        records[1],
        "dropped VRRP from 10.9.0.1 (VRID 52): drop_bad_ttl"
    );
    // Every drop is reported; the first packet only once.
    assert_eq!(
        logged.run(&bad_ttl_frame()),
        (
            XDP_DROP,
            vec!["dropped VRRP from 10.9.0.1 (VRID 52): drop_bad_ttl".to_owned()]
        )
    );
    let mut truncated = frame(&v2(100, b"secret"), OTHER_PEER);
    truncated.truncate(14 + 20 + 8 + 4);
    assert_eq!(
        logged.run(&truncated).1,
        ["dropped VRRP from 10.9.0.3 (VRID 51): drop_truncated"]
    );
    assert_eq!(
        logged.run(&frame(&v2(100, b"guess"), PEER)).1,
        ["dropped VRRP from 10.9.0.1 (VRID 51): drop_auth_mismatch"]
    );
    assert_eq!(
        logged.run(&frame(&v3(PEERS_ONLY, 255, 100), STRANGER)),
        (
            XDP_DROP,
            vec!["dropped VRRP from 10.9.0.66 (VRID 53): drop_unknown_source".to_owned()]
        )
    );

    // Accepted adverts: once per VRID, not once per advert.
    let advert = frame(&v3(52, 100, 100), PEER);
    assert_eq!(
        logged.run(&advert),
        (
            XDP_DROP,
            vec![
                "first advert for VRID 52 from 10.9.0.1: VRRPv3, priority 100, interval 100 cs"
                    .to_owned()
            ]
        )
    );
    assert_eq!(logged.run(&advert), (XDP_DROP, vec![]));
    assert_eq!(
        logged.run(&frame(&v2(150, b"secret"), OTHER_PEER)).1,
        ["first advert for VRID 51 from 10.9.0.3: VRRPv2, priority 150, interval 100 cs"]
    );
    // The fast path is untouched: every advert queued, a steady master
    // without a wakeup.
    let flags: Vec<u8> = logged.bpf.drain().iter().map(|e| e.flags).collect();
    assert_eq!(flags, [change::NEW_SOURCE, 0, change::NEW_SOURCE]);

    // Foreign VRIDs: passed, reported once per VRID.
    let foreign = frame(&v3(99, 100, 100), PEER);
    assert_eq!(
        logged.run(&foreign),
        (
            XDP_PASS,
            vec!["advert for unconfigured VRID 99 from 10.9.0.1 passed to the stack (reported once per VRID)".to_owned()]
        )
    );
    assert_eq!(logged.run(&foreign), (XDP_PASS, vec![]));
    // Other traffic: nothing.
    assert_eq!(logged.run(&udp_frame()), (XDP_PASS, vec![]));
    assert_eq!(logged.run(&arp_frame()), (XDP_PASS, vec![]));
}

#[test]
fn without_diagnostics_nothing_is_logged() {
    let Some(mut logged) = Logged::load(Diagnostics::Off) else {
        return;
    };
    for (frame, verdict) in [
        (bad_ttl_frame(), XDP_DROP),
        (frame(&v3(52, 100, 100), PEER), XDP_DROP),
        (frame(&v3(99, 100, 100), PEER), XDP_PASS),
        (udp_frame(), XDP_PASS),
    ] {
        assert_eq!(logged.run(&frame), (verdict, vec![]));
    }
    assert_eq!(logged.bpf.counter(Counter::DropBadTtl), 1);
}

#[test]
fn the_verifier_skips_the_diagnostics_when_they_are_off() {
    let Some(mut off) = load_with(Diagnostics::Off) else {
        return;
    };
    let Some(mut on) = load_with(Diagnostics::On) else {
        return;
    };
    let verified = |bpf: &mut Loaded| {
        let variant = bpf.variant;
        let info = bpf::program_mut(&mut bpf.ebpf, variant)
            .unwrap()
            .info()
            .unwrap();
        (
            info.verified_instruction_count(),
            info.size_translated().unwrap_or(0),
        )
    };
    let ((off, off_bytes), (on, on_bytes)) = (verified(&mut off), verified(&mut on));
    // Kernels before 5.16 do not report verified_insns; there the code the
    // verifier never walked is removed from the translated program.
    let (off, on) = match (off, on) {
        (Some(off), Some(on)) => (off, on),
        _ => (off_bytes, on_bytes),
    };
    eprintln!(
        "verified instructions: diagnostics off {off}, on {on}; \
         translated bytes: off {off_bytes}, on {on_bytes}"
    );
    // Were the switch not a constant the verifier knows (frozen .rodata),
    // it would walk the diagnostic code either way and count the same.
    assert!(off < on, "off {off}, on {on}");
}

/// The program the agent would pick on this kernel is the one the kernel
/// matrix expects for it (`LBHA_EXPECT_PROGRAM`, set by `cargo xtask
/// kernels`), and it loads. Without the variable, the best choice loads.
#[test]
fn the_kernel_probe_picks_the_expected_program() {
    if !lbha_tests::require_root() {
        return;
    }
    let features = KernelFeatures::probe();
    let choice = variant::choose(&features);
    eprintln!(
        "kernel {}: {features:?} -> {} ({})",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        choice.program.name(),
        choice.reason
    );
    if let Ok(expected) = std::env::var("LBHA_EXPECT_PROGRAM") {
        assert_eq!(choice.program.name(), expected, "{features:?}");
    }
    let supported = variant::supported(&features);
    for unsupported in Variant::ALL.iter().filter(|v| !supported.contains(v)) {
        assert!(
            bpf::load(*unsupported, Diagnostics::Off, SteadyAdverts::MapOnly).is_err(),
            "{} was probed as unsupported but loads",
            unsupported.name()
        );
    }
    for supported in supported {
        bpf::load(supported, Diagnostics::Off, SteadyAdverts::MapOnly).unwrap_or_else(|e| {
            panic!(
                "{} was probed as supported but does not load: {e:?}",
                supported.name()
            )
        });
    }
}

/// VRRPv3 over IPv6 through the loaded program: each verdict and its
/// counter, the event's IPv6 fields, and IPv6 VRIDs apart from IPv4's of
/// the same number (keepalived runs VRID 52 over both independently).
#[test]
fn ipv6_adverts_get_the_same_rules_in_their_own_vrid_table() {
    use std::net::Ipv6Addr;
    let Some(mut bpf) = load() else { return };
    let peer6: Ipv6Addr = "fe80::1".parse().unwrap();
    let stranger6: Ipv6Addr = "fe80::66".parse().unwrap();
    let group: Ipv6Addr = "ff02::12".parse().unwrap();
    let us6: Ipv6Addr = "fd00::2".parse().unwrap();
    let vips6 = [IpAddr::V6("fe80::64".parse().unwrap())];
    // IPv6 VRID 52 (from anyone), IPv6 VRID 53 from peer6 only; IPv4 52 as
    // before. IPv4 VRID 51 is configured, IPv6 VRID 51 is not.
    bpf.tables
        .configure(&[
            (
                VridKey::v4(51),
                VridConfig::new(2, AUTH_PASS, auth_data(b"secret")),
            ),
            (VridKey::v4(52), VridConfig::new(3, AUTH_NONE, [0; 8])),
            (VridKey::v6(52), VridConfig::new(3, AUTH_NONE, [0; 8])),
            (
                VridKey::v6(53),
                VridConfig::new(3, AUTH_NONE, [0; 8])
                    .with_allowed_ips(&[peer6.into()])
                    .unwrap(),
            ),
        ])
        .unwrap();
    let v6 = |vrid: u8, priority: u8| Advert {
        version: 3,
        vrid,
        priority,
        interval_cs: 100,
        auth_pass: None,
        virtual_addrs: &vips6,
    };
    let frame6 = |advert: &Advert<'_>, src: Ipv6Addr, dst: Ipv6Addr| {
        advert.ethernet_frame_v6(src, dst, None)
    };
    let mut hop_64 = frame6(&v6(52, 100), peer6, group);
    hop_64[14 + 7] = 64;
    let mut bad_checksum = frame6(&v6(52, 100), peer6, group);
    bad_checksum[14 + 40 + 2] ^= 1;
    let mut fragment = frame6(&v6(52, 100), peer6, group);
    fragment[14 + 6] = 44; // a fragment header where VRRP was
    let mut v2_over_v6 = frame6(&v6(52, 100), peer6, group);
    v2_over_v6[14 + 40] = 0x21;
    let cases: Vec<(&str, Vec<u8>, u32, Counter)> = vec![
        (
            "multicast advert",
            frame6(&v6(52, 100), peer6, group),
            XDP_DROP,
            Counter::AdvertsAccepted,
        ),
        (
            "multicast advert in 802.1Q",
            v6(52, 100).ethernet_frame_v6(peer6, group, Some(7)),
            XDP_DROP,
            Counter::AdvertsAccepted,
        ),
        (
            "hop limit 64 to ff02::12",
            hop_64,
            XDP_DROP,
            Counter::DropBadTtl,
        ),
        (
            "bad checksum",
            bad_checksum,
            XDP_DROP,
            Counter::DropBadChecksum,
        ),
        (
            "v2 over IPv6",
            v2_over_v6,
            XDP_DROP,
            Counter::DropBadVersionType,
        ),
        (
            "fragment header",
            fragment,
            XDP_PASS,
            Counter::Ipv6ExtHeaderPassed,
        ),
        (
            "IPv6 VRID 51 (only IPv4's is configured)",
            frame6(&v6(51, 100), peer6, group),
            XDP_PASS,
            Counter::DropUnknownVrid,
        ),
        (
            "unicast from a stranger",
            frame6(&v6(53, 100), stranger6, us6),
            XDP_DROP,
            Counter::DropUnknownSource,
        ),
        (
            "unicast from the peer",
            frame6(&v6(53, 100), peer6, us6),
            XDP_DROP,
            Counter::AdvertsAccepted,
        ),
    ];
    for (name, frame, verdict, counter) in &cases {
        let before = bpf.counter(*counter);
        let (got, _) = bpf.run(frame);
        assert_eq!(got, *verdict, "{name}: verdict");
        assert_eq!(bpf.counter(*counter), before + 1, "{name}: {counter:?}");
    }
    let events = bpf.drain();
    let accepted: Vec<_> = events
        .iter()
        .filter(|e| e.vrid == 52 || e.vrid == 53)
        .collect();
    assert_eq!(accepted.len(), 3, "{events:?}");
    let first = accepted[0];
    assert_eq!(first.key(), Some(VridKey::v6(52)));
    assert_eq!(first.src_ip(), IpAddr::V6(peer6));
    assert_eq!(first.dst_ip(), IpAddr::V6(group));
    assert_eq!(first.first_vip_ip(), vips6[0]);
    assert_eq!(
        (first.version, first.count_addr, first.interval_cs),
        (3, 1, 100)
    );
    assert_eq!(first.receive_path, ReceivePath::Xdp as u8);

    // The two VRID 52s keep their own last advert.
    bpf.run(&frame(&v3(52, 77, 100), PEER));
    let last_v4 = bpf.tables.last_advert(VridKey::v4(52)).unwrap().unwrap();
    let last_v6 = bpf.tables.last_advert(VridKey::v6(52)).unwrap().unwrap();
    assert_eq!((last_v4.priority, last_v4.src_ip()), (77, IpAddr::V4(PEER)));
    assert_eq!(
        (last_v6.priority, last_v6.src_ip()),
        (100, IpAddr::V6(peer6))
    );
    assert_eq!(bpf.tables.last_advert(VridKey::v6(51)).unwrap(), None);
}

/// 255 VRIDs share the program's one silence timer: while their master
/// advertises, nothing is queued (no steady advert, no silence, no timer
/// refusal; Linux 6.18 refused most of a timer per VRID); once it stops,
/// each VRID is reported silent once, at its own deadline (1, 2 or 3
/// intervals of 10 cs after its own last advert), and a VRID heard again
/// is reported again at its new deadline, alone.
#[test]
fn one_timer_reports_each_of_255_vrids_at_its_own_deadline() {
    let Some(mut bpf) = load_steady(Diagnostics::Off, SteadyAdverts::MapOnly) else {
        return;
    };
    if bpf.variant == Variant::NoTimer {
        eprintln!("skipped: the timerless program arms no silence timer");
        return;
    }
    let intervals_of = |vrid: u8| vrid % 3 + 1;
    let table: Vec<_> = (1..=255u8)
        .map(|v| {
            let config =
                VridConfig::new(3, AUTH_NONE, [0; 8]).with_down_timer_adverts(intervals_of(v));
            (VridKey::v4(v), config)
        })
        .collect();
    bpf.tables.configure(&table).unwrap();
    let frames: Vec<_> = (1..=255u8).map(|v| frame(&v3(v, 100, 10), PEER)).collect();
    // A steady master: every 30 ms, inside the shortest deadline (100 ms).
    for round in 0..20 {
        for f in &frames {
            bpf.run(f);
        }
        for event in bpf.drain() {
            assert!(
                round == 0 && event.flags == change::NEW_SOURCE,
                "round {round}: only the first adverts are queued: {event:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(bpf.counter(Counter::SilenceTimerErrors), 0, "timer refused");
    assert_eq!(bpf.counter(Counter::SilenceReported), 0);

    // The master stops: each VRID is silent at its own deadline.
    let last_heard = |bpf: &Loaded, vrid: u8| {
        let last = bpf.tables.last_advert(VridKey::v4(vrid)).unwrap().unwrap();
        last.timestamp_ns
    };
    std::thread::sleep(Duration::from_millis(600));
    let mut reported = [0u32; 256];
    for event in bpf.drain() {
        assert_eq!(event.flags, change::SILENCE, "{event:?}");
        let vrid = event.vrid;
        reported[usize::from(vrid)] += 1;
        let due = u64::from(intervals_of(vrid)) * 100_000_000;
        let after = event.timestamp_ns - last_heard(&bpf, vrid);
        assert!(
            (due..due + 150_000_000).contains(&after),
            "VRID {vrid}: reported {after} ns after its last advert ({due} ns expected)"
        );
    }
    for vrid in 1..=255u8 {
        assert_eq!(reported[usize::from(vrid)], 1, "VRID {vrid}: reports");
    }

    // Heard again, then silent again: only that VRID is reported, once.
    bpf.run(&frames[0]);
    let events = bpf.drain();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0].flags & change::AFTER_SILENCE,
        change::AFTER_SILENCE
    );
    std::thread::sleep(Duration::from_millis(400));
    let again = bpf.drain();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!((again[0].flags, again[0].vrid), (change::SILENCE, 1));
    let after = again[0].timestamp_ns - last_heard(&bpf, 1);
    let due = u64::from(intervals_of(1)) * 100_000_000;
    assert!(
        (due..due + 150_000_000).contains(&after),
        "VRID 1 again: reported {after} ns after its advert"
    );
    assert_eq!(bpf.counter(Counter::SilenceReported), 256);
    assert_eq!(bpf.counter(Counter::SilenceTimerErrors), 0);
}
