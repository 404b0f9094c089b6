//! Flood: thousands of hostile packets a second at an lbha receive path,
//! while a legitimate keepalived master keeps advertising.
//!
//! The test process itself blasts Ethernet frames from the master's side of
//! a veth pair (an `AF_PACKET` socket opened in that namespace by a thread
//! that `setns`es into it), paced to [`RATE`] frames/s for [`FLOOD`]:
//! malformed VRRP for the configured VRID (bad VRRP and IPv4 checksums,
//! TTL 64, IPv4 length past the frame, a cut VRRP header, a fragment,
//! version 4, v2 to a v3 instance, type 2, an address count that disagrees
//! with the length), VRRP for a foreign VRID (valid, and malformed), UDP, and
//! a non-IPv4 EtherType. Each malformed advert claims to come from the
//! master's address with priority 0: one accepted by mistake would wake the
//! backup as a resignation (and make it take over whenever the master's next
//! advert is more than Skew_Time away). What proves that none was accepted
//! is the exact drop counts.
//!
//! * `flood_counters_account_for_every_packet`: `lbha-agent watch` (the
//!   daemon's XDP receive path) on the receiving side; its counters must
//!   show exactly what was sent in each drop counter, the master's adverts
//!   as accepted, none of the flood as an advert, and `packets_seen` equal
//!   to the sum of the outcome counters.
//! * `flood_leaves_the_backup_in_backup`: the daemon, BACKUP behind the
//!   keepalived master; the flood must cause no transition and hardly any
//!   wakeup, the daemon's counters (its status socket) must account for it
//!   exactly, and the daemon must still take over when the master dies.
//!
//! Both namespaces run IPv6-free with static neighbours, so apart from the
//! flood only the master's adverts reach the receive path. The two tests take
//! turns (a mutex) so that one flood at a time loads the machine.

use std::{
    collections::BTreeMap,
    fs::File,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use lbha_common::{checksum, vrrp::encode::Advert};
use lbha_tests::{
    Agent, COMMAND_TIMEOUT, Keepalived, KeepalivedConfig, Netns, VrrpInstance, VrrpState, WAIT,
    Watch, require_root, run_command, veth_pair,
};

const INSTANCE: &str = "VI_FLOOD";
const VRID: u8 = 51;
const FOREIGN_VRID: u8 = 99;
/// Frames per second the flood sends.
const RATE: u32 = 4000;
/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(3);
/// Frames are sent in bursts this often (RATE × TICK frames per burst).
const TICK: Duration = Duration::from_millis(2);
/// keepalived's advert interval (VRRPv3, centiseconds on the wire).
const ADVERT_INT: &str = "0.1";
const ADVERT_INTERVAL: Duration = Duration::from_millis(100);
const MASTER_PRIORITY: u8 = 200;
const BACKUP_PRIORITY: u8 = 100;

/// One flood at a time: the machine has two shared cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// What a frame is, and which receive-path counter must count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    BadVrrpChecksum,
    BadIpChecksum,
    Ttl64,
    IpLengthPastFrame,
    CutVrrpHeader,
    Fragment,
    Version4,
    V2ForV3Instance,
    Type2,
    CountDisagreesWithLength,
    ForeignVridValid,
    ForeignVridMalformed,
    Udp,
    NotIpv4,
}

impl Kind {
    const ALL: [Kind; 14] = [
        Kind::BadVrrpChecksum,
        Kind::BadIpChecksum,
        Kind::Ttl64,
        Kind::IpLengthPastFrame,
        Kind::CutVrrpHeader,
        Kind::Fragment,
        Kind::Version4,
        Kind::V2ForV3Instance,
        Kind::Type2,
        Kind::CountDisagreesWithLength,
        Kind::ForeignVridValid,
        Kind::ForeignVridMalformed,
        Kind::Udp,
        Kind::NotIpv4,
    ];

    fn counter(self) -> &'static str {
        match self {
            Kind::BadVrrpChecksum | Kind::BadIpChecksum => "drop_bad_checksum",
            Kind::Ttl64 => "drop_bad_ttl",
            Kind::IpLengthPastFrame | Kind::CutVrrpHeader | Kind::Fragment => "drop_truncated",
            Kind::Version4 | Kind::V2ForV3Instance | Kind::Type2 => "drop_bad_version_type",
            Kind::CountDisagreesWithLength => "drop_bad_length",
            Kind::ForeignVridValid | Kind::ForeignVridMalformed => "drop_unknown_vrid",
            Kind::Udp | Kind::NotIpv4 => "not_vrrp",
        }
    }
}

/// The counters every flood frame of a VRRP kind lands in, and which the
/// legitimate traffic never touches: they must match what was sent exactly.
const EXACT_COUNTERS: [&str; 8] = [
    "drop_bad_checksum",
    "drop_bad_ttl",
    "drop_truncated",
    "drop_bad_version_type",
    "drop_bad_length",
    "drop_unknown_vrid",
    "drop_auth_mismatch",
    // The flood claims the master's address: none of it is a stranger's.
    "drop_unknown_source",
];

/// The outcome counters: every packet the XDP program sees lands in exactly one.
const OUTCOME_COUNTERS: [&str; 10] = [
    "not_vrrp",
    "adverts_accepted",
    "drop_truncated",
    "drop_bad_ttl",
    "drop_bad_checksum",
    "drop_bad_version_type",
    "drop_bad_length",
    "drop_unknown_vrid",
    "drop_auth_mismatch",
    "drop_unknown_source",
];

/// The two ends of the flooded link.
struct Link {
    master: Netns,
    backup: Netns,
    master_if: &'static str,
    backup_if: &'static str,
    master_ip: Ipv4Addr,
    backup_ip: Ipv4Addr,
    master_mac: [u8; 6],
    backup_mac: [u8; 6],
    /// The master's virtual address.
    vip: Ipv4Addr,
}

impl Link {
    /// Two IPv6-free namespaces joined by a veth pair in `10.205.<net>.0/24`,
    /// with static neighbour entries (no ARP either).
    fn new(net: u8) -> Result<Self> {
        let master = Netns::new("flm")?;
        let backup = Netns::new("flb")?;
        for ns in [&master, &backup] {
            for key in ["all", "default"] {
                ns.exec(&[
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
                ])?;
            }
        }
        let (master_if, backup_if) = ("flood-m", "flood-b");
        let master_ip = Ipv4Addr::new(10, 205, net, 1);
        let backup_ip = Ipv4Addr::new(10, 205, net, 2);
        veth_pair(
            &master,
            master_if,
            &format!("{master_ip}/24"),
            &backup,
            backup_if,
            &format!("{backup_ip}/24"),
        )?;
        let master_mac = mac(&master, master_if)?;
        let backup_mac = mac(&backup, backup_if)?;
        for (ns, interface, peer, peer_mac) in [
            (&master, master_if, backup_ip, backup_mac),
            (&backup, backup_if, master_ip, master_mac),
        ] {
            ns.exec(&[
                "ip",
                "neigh",
                "replace",
                &peer.to_string(),
                "lladdr",
                &format_mac(peer_mac),
                "dev",
                interface,
                "nud",
                "permanent",
            ])?;
        }
        Ok(Self {
            master,
            backup,
            master_if,
            backup_if,
            master_ip,
            backup_ip,
            master_mac,
            backup_mac,
            vip: Ipv4Addr::new(10, 205, net, 100),
        })
    }

    /// keepalived, MASTER with the higher priority, advertising to the backup.
    fn start_master(&self) -> Result<Keepalived> {
        let config = KeepalivedConfig::new().instance(
            VrrpInstance::unicast(INSTANCE, self.master_if, VRID, self.master_ip)
                .version(3)
                .advert_int(ADVERT_INT)
                .priority(MASTER_PRIORITY)
                .unicast_peer(self.backup_ip)
                // keepalived wants one; its gratuitous ARPs are `not_vrrp`.
                .virtual_ipaddress(format!("{}/32", self.vip)),
        );
        let mut keepalived = Keepalived::start(&self.master, &config.render())?;
        keepalived.wait_for_state(INSTANCE, "MASTER", WAIT)?;
        Ok(keepalived)
    }

    /// The frame of each kind, from the master's side to the backup.
    fn frames(&self) -> Vec<(Kind, Vec<u8>)> {
        Kind::ALL
            .iter()
            .map(|&kind| (kind, self.frame(kind)))
            .collect()
    }

    fn frame(&self, kind: Kind) -> Vec<u8> {
        let (src, dst) = (self.master_ip, self.backup_ip);
        let vip = [std::net::IpAddr::V4(self.vip)];
        // The master resigning: what a wrongly accepted packet would act as.
        let resign = Advert {
            version: 3,
            vrid: VRID,
            priority: 0,
            interval_cs: 10,
            auth_pass: None,
            virtual_addrs: &vip,
        };
        let mut ethertype = 0x0800u16;
        let ip = match kind {
            Kind::BadVrrpChecksum => {
                let mut ip = resign.ipv4_packet(src, dst);
                ip[20 + 6] ^= 0x5a;
                ip
            }
            Kind::BadIpChecksum => {
                let mut ip = resign.ipv4_packet(src, dst);
                ip[10] ^= 0x5a;
                ip
            }
            Kind::Ttl64 => {
                // Multicast: a unicast advert may carry any TTL.
                let mut ip = resign.ipv4_packet(src, Ipv4Addr::new(224, 0, 0, 18));
                ip[8] = 64;
                fix_ip_checksum(&mut ip);
                ip
            }
            Kind::IpLengthPastFrame => {
                let mut ip = resign.ipv4_packet(src, dst);
                let claimed = (ip.len() + 40) as u16;
                ip[2..4].copy_from_slice(&claimed.to_be_bytes());
                fix_ip_checksum(&mut ip);
                ip
            }
            Kind::CutVrrpHeader => {
                let mut ip = resign.ipv4_packet(src, dst);
                ip.truncate(24);
                ip[2..4].copy_from_slice(&24u16.to_be_bytes());
                fix_ip_checksum(&mut ip);
                ip
            }
            Kind::Fragment => {
                let mut ip = resign.ipv4_packet(src, dst);
                // More fragments.
                ip[6] = 0x20;
                fix_ip_checksum(&mut ip);
                ip
            }
            Kind::Version4 => {
                let mut ip = resign.ipv4_packet(src, dst);
                ip[20] = 0x41;
                fix_vrrp_checksum(&mut ip);
                ip
            }
            Kind::V2ForV3Instance => Advert {
                version: 2,
                interval_cs: 100,
                ..resign.clone()
            }
            .ipv4_packet(src, dst),
            Kind::Type2 => {
                let mut ip = resign.ipv4_packet(src, dst);
                ip[20] = 0x32;
                fix_vrrp_checksum(&mut ip);
                ip
            }
            Kind::CountDisagreesWithLength => {
                let mut ip = resign.ipv4_packet(src, dst);
                ip[20 + 3] = 2;
                fix_vrrp_checksum(&mut ip);
                ip
            }
            Kind::ForeignVridValid => Advert {
                vrid: FOREIGN_VRID,
                priority: 255,
                ..resign.clone()
            }
            .ipv4_packet(src, dst),
            Kind::ForeignVridMalformed => {
                let mut ip = Advert {
                    vrid: FOREIGN_VRID,
                    ..resign.clone()
                }
                .ipv4_packet(src, dst);
                ip[8] = 1;
                ip[20 + 6] ^= 0x5a;
                ip
            }
            Kind::Udp => {
                let payload = b"lbha flood test!";
                let udp_len = (8 + payload.len()) as u16;
                let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
                ip.extend_from_slice(&src.octets());
                ip.extend_from_slice(&dst.octets());
                // Port 9 (discard); no UDP checksum.
                ip.extend_from_slice(&40000u16.to_be_bytes());
                ip.extend_from_slice(&9u16.to_be_bytes());
                ip.extend_from_slice(&udp_len.to_be_bytes());
                ip.extend_from_slice(&[0, 0]);
                ip.extend_from_slice(payload);
                let total = ip.len() as u16;
                ip[2..4].copy_from_slice(&total.to_be_bytes());
                fix_ip_checksum(&mut ip);
                ip
            }
            Kind::NotIpv4 => {
                // IEEE 802 local experimental EtherType.
                ethertype = 0x88b5;
                vec![0xa5; 46]
            }
        };
        let mut frame = Vec::with_capacity(14 + ip.len());
        frame.extend_from_slice(&self.backup_mac);
        frame.extend_from_slice(&self.master_mac);
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame
    }

    /// The veth pair's drop statistics so far.
    fn drops(&self) -> Result<LinkDrops> {
        Ok(LinkDrops {
            sender: link_stat(&self.master, self.master_if, "tx", "dropped")?,
            receiver: link_stat(&self.backup, self.backup_if, "rx", "dropped")?,
        })
    }
}

/// Frames the veth pair dropped: on transmit (they never reached the
/// receive path) and on receive (includes frames the receiver's stack
/// discarded after XDP saw them, e.g. an unknown EtherType).
#[derive(Clone, Copy, Debug)]
struct LinkDrops {
    sender: u64,
    receiver: u64,
}

impl std::ops::Sub for LinkDrops {
    type Output = LinkDrops;
    fn sub(self, before: LinkDrops) -> LinkDrops {
        LinkDrops {
            sender: self.sender - before.sender,
            receiver: self.receiver - before.receiver,
        }
    }
}

fn fix_ip_checksum(ip: &mut [u8]) {
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    ip[10..12].fill(0);
    let sum = checksum::checksum(0, &ip[..ihl]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// Recomputes a VRRPv3 checksum (with the IPv4 pseudo-header).
fn fix_vrrp_checksum(ip: &mut [u8]) {
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    ip[26..28].fill(0);
    let src = [ip[12], ip[13], ip[14], ip[15]];
    let dst = [ip[16], ip[17], ip[18], ip[19]];
    let initial = checksum::pseudo_header_sum(src, dst, 112, (total - 20) as u16);
    let sum = checksum::checksum(initial, &ip[20..total]);
    ip[26..28].copy_from_slice(&sum.to_be_bytes());
}

fn mac(ns: &Netns, interface: &str) -> Result<[u8; 6]> {
    let link = ip_json(ns, &["link", "show", "dev", interface])?;
    let text = link[0]["address"]
        .as_str()
        .with_context(|| format!("no MAC address in {link}"))?;
    let bytes: Vec<u8> = text
        .split(':')
        .map(|byte| u8::from_str_radix(byte, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("MAC address {text:?}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("MAC address {text:?} is not 6 bytes"))
}

fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|byte| format!("{byte:02x}")).join(":")
}

/// `ip -j -s link show dev INTERFACE` statistic `direction.name`.
fn link_stat(ns: &Netns, interface: &str, direction: &str, name: &str) -> Result<u64> {
    let link = ip_json(ns, &["-s", "link", "show", "dev", interface])?;
    link[0]["stats64"][direction][name]
        .as_u64()
        .with_context(|| format!("no {direction}.{name} in {link}"))
}

fn ip_json(ns: &Netns, args: &[&str]) -> Result<serde_json::Value> {
    let out = run_command(
        std::process::Command::new("ip")
            .args(["-n", ns.name(), "-j"])
            .args(args),
        COMMAND_TIMEOUT,
    )?;
    serde_json::from_str(&out).with_context(|| format!("ip -j {args:?}: {out:?}"))
}

/// What a flood sent, by kind. Only frames the kernel took are counted.
#[derive(Debug, Default)]
struct Sent {
    by_kind: BTreeMap<Kind, u64>,
    /// Sends the kernel refused (the frame did not leave).
    refused: u64,
    elapsed: Duration,
}

impl Sent {
    fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }

    /// Frames sent that the receive path must count in `counter`.
    fn expected(&self, counter: &str) -> u64 {
        self.by_kind
            .iter()
            .filter(|(kind, _)| kind.counter() == counter)
            .map(|(_, n)| n)
            .sum()
    }

    fn rate(&self) -> f64 {
        self.total() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Sends `frames` round-robin out of `interface` in `ns` at [`RATE`] for
/// [`FLOOD`], from a thread that enters the namespace (the test's own
/// threads stay where they are).
fn flood(ns: &Netns, interface: &str, frames: Vec<(Kind, Vec<u8>)>) -> Result<Sent> {
    let netns = format!("/run/netns/{}", ns.name());
    let interface = interface.to_owned();
    thread::spawn(move || -> Result<Sent> {
        let netns = File::open(&netns).with_context(|| format!("opening {netns}"))?;
        // SAFETY: setns on a namespace file descriptor we hold; it only moves
        // this thread, which ends with the flood.
        if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        let name = std::ffi::CString::new(interface.clone())?;
        // SAFETY: a valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        ensure!(ifindex != 0, "no interface {interface} in the namespace");
        // SAFETY: plain socket creation; the descriptor is owned right away.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        ensure!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        address.sll_ifindex = ifindex as i32;
        address.sll_halen = 6;

        let per_tick = (u64::from(RATE) * TICK.as_micros() as u64 / 1_000_000).max(1);
        let mut sent = Sent::default();
        let start = Instant::now();
        let mut next = start;
        let mut index = 0;
        while start.elapsed() < FLOOD {
            for _ in 0..per_tick {
                let (kind, frame) = &frames[index % frames.len()];
                index += 1;
                address.sll_addr[..6].copy_from_slice(&frame[..6]);
                // SAFETY: the buffer and address outlive the call; the
                // lengths are theirs.
                let n = unsafe {
                    libc::sendto(
                        socket.as_raw_fd(),
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&raw const address).cast(),
                        size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                    )
                };
                if n == frame.len() as isize {
                    *sent.by_kind.entry(*kind).or_default() += 1;
                } else {
                    sent.refused += 1;
                }
            }
            next += TICK;
            thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        sent.elapsed = start.elapsed();
        Ok(sent)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the flood thread panicked"))?
}

/// The counter `name` of a counters object.
fn counter(counters: &BTreeMap<String, u64>, name: &str) -> u64 {
    match counters.get(name) {
        Some(value) => *value,
        None => panic!("no counter {name:?} in {counters:?}"),
    }
}

/// Checks that `counters` account for every frame of `sent` and that the
/// outcome counters add up to `packets_seen`.
fn check_accounting(counters: &BTreeMap<String, u64>, sent: &Sent, link: LinkDrops) {
    let mut report = format!(
        "sent {} frames in {:?} ({:.0}/s); refused by the kernel: {}; veth drops: {} on \
         transmit, {} on receive (after XDP)\n",
        sent.total(),
        sent.elapsed,
        sent.rate(),
        sent.refused,
        link.sender,
        link.receiver
    );
    for name in OUTCOME_COUNTERS {
        report.push_str(&format!(
            "  {name:<22} {:>7} (flood: {})\n",
            counter(counters, name),
            sent.expected(name)
        ));
    }
    report.push_str(&format!(
        "  {:<22} {:>7} (flood: {})\n",
        "packets_seen",
        counter(counters, "packets_seen"),
        sent.total()
    ));
    eprintln!("FLOOD {report}");
    for name in EXACT_COUNTERS {
        assert_eq!(
            counter(counters, name),
            sent.expected(name),
            "{name} must count exactly the flood's frames of its kind\n{report}"
        );
    }
    assert!(
        counter(counters, "not_vrrp") >= sent.expected("not_vrrp"),
        "not_vrrp misses flood frames\n{report}"
    );
    let outcomes: u64 = OUTCOME_COUNTERS
        .iter()
        .map(|name| counter(counters, name))
        .sum();
    assert_eq!(
        counter(counters, "packets_seen"),
        outcomes,
        "every packet seen must land in exactly one outcome counter\n{report}"
    );
    assert!(
        counter(counters, "packets_seen") >= sent.total(),
        "the receive path saw fewer packets than were sent\n{report}"
    );
    assert_eq!(counter(counters, "ringbuf_full"), 0, "{report}");
}

/// Adverts the master sent while `duration` passed, at least (its interval,
/// with room for a loaded machine).
fn min_adverts(duration: Duration) -> u64 {
    (duration.as_millis() / ADVERT_INTERVAL.as_millis() / 2) as u64
}

#[test]
fn flood_counters_account_for_every_packet() {
    let _turn = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !require_root() {
        return;
    }
    let link = Link::new(1).unwrap();
    let mut master = link.start_master().unwrap();

    let vrid = format!("{VRID}:v3");
    let mut watch = Watch::spawn(
        &link.backup,
        &[
            "--interface",
            link.backup_if,
            "--vrid",
            &vrid,
            "--receive-path",
            "xdp",
            "--drain-ms",
            "0",
        ],
    )
    .unwrap();
    let path = watch.wait_ready(WAIT).unwrap();
    assert!(path.starts_with("xdp"), "receive path {path}");
    let first = watch
        .next_advert(WAIT)
        .expect("the master's adverts reach the watch");
    assert_eq!(first.src, link.master_ip);

    let drops_before = link.drops().unwrap();
    let started = Instant::now();
    let sent = flood(&link.master, link.master_if, link.frames()).unwrap();
    let flooded = started.elapsed();
    let link_drops = link.drops().unwrap() - drops_before;

    // Quiet link: with the master gone nothing else reaches the receive
    // path, so the final counters are one consistent snapshot.
    master.kill();
    thread::sleep(Duration::from_millis(300));
    let output = watch.stop(WAIT).unwrap();
    assert!(output.status.success(), "watch failed: {}", output.stderr);
    assert!(output.other_lines.is_empty(), "{:?}", output.other_lines);

    let summary = output.summary();
    check_accounting(&summary.counters, &sent, link_drops);
    assert!(
        summary.counter("adverts_accepted") >= min_adverts(flooded),
        "the master's adverts were not accepted during the flood: {:?}",
        summary.counters
    );
    // Only the master's adverts were accepted: none of the flood.
    for advert in &output.adverts {
        assert_eq!(
            (advert.src, advert.vrid, advert.priority, advert.version),
            (link.master_ip, VRID, MASTER_PRIORITY, 3),
            "accepted a flood packet: {advert:?}"
        );
    }
}

#[test]
fn flood_leaves_the_backup_in_backup() {
    let _turn = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !require_root() {
        return;
    }
    let link = Link::new(2).unwrap();
    let mut master = link.start_master().unwrap();

    let config = KeepalivedConfig::new().instance(
        VrrpInstance::unicast(INSTANCE, link.backup_if, VRID, link.backup_ip)
            .state(VrrpState::Backup)
            .version(3)
            .advert_int(ADVERT_INT)
            .priority(BACKUP_PRIORITY)
            .unicast_peer(link.master_ip)
            // keepalived refuses a VRRPv3 instance without one (so does lbha).
            .virtual_ipaddress(format!("{}/32", link.vip)),
    );
    let mut agent = Agent::start_with_status(&link.backup, &config.render()).unwrap();
    agent
        .wait_for_transition(INSTANCE, "BACKUP", 0, WAIT)
        .unwrap();
    // Backup, following the master's adverts.
    let status = agent.wait_status("the backup to follow the master", |s| {
        let i = &s["instances"][0];
        i["state"] == "BACKUP" && i["master"] == link.master_ip.to_string()
    });
    let path = status["interfaces"][0]["receive_path"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(path.starts_with("xdp"), "receive path {path:?}");
    let transitions_before = agent.transitions();
    let wakeups_before = status["interfaces"][0]["wakeups"].as_u64().unwrap();

    let drops_before = link.drops().unwrap();
    let sent = flood(&link.master, link.master_if, link.frames()).unwrap();
    let link_drops = link.drops().unwrap() - drops_before;
    // Longer than Master_Down_Interval: a late effect would show by now.
    thread::sleep(Duration::from_secs(1));

    assert_eq!(agent.try_wait().unwrap(), None, "the agent died");
    let transitions = agent.transitions();
    assert_eq!(
        transitions,
        transitions_before,
        "the flood moved the state machine:\n{}",
        agent.log()
    );
    let status = agent.wait_status("status after the flood", |_| true);
    let instance = &status["instances"][0];
    assert_eq!(instance["state"], "BACKUP", "{status}");
    assert_eq!(instance["master"], link.master_ip.to_string(), "{status}");
    let wakeups = status["interfaces"][0]["wakeups"].as_u64().unwrap() - wakeups_before;
    eprintln!(
        "FLOOD daemon: {} frames in {:?}, {wakeups} wakeups meanwhile",
        sent.total(),
        sent.elapsed
    );
    // The drops never reach user space: what wakes the daemon is its timers.
    assert!(
        wakeups < sent.total() / 20,
        "{wakeups} wakeups for {} flood frames",
        sent.total()
    );
    let log = master.log();
    assert_eq!(
        log.matches(&format!("({INSTANCE}) Entering MASTER STATE"))
            .count(),
        1,
        "keepalived lost mastership:\n{log}"
    );

    // The master dies: the flooded backup still takes over, as it should.
    let since = agent.transitions().len();
    let killed = Instant::now();
    master.kill();
    let takeover = agent
        .wait_for_transition(INSTANCE, "MASTER", since, WAIT)
        .unwrap();
    assert_eq!(takeover.reason, "master down", "{}", takeover.line);
    eprintln!("FLOOD takeover after the flood: {:?}", killed.elapsed());

    // The flood ended seconds ago and a master wakes up every advert
    // interval, so the published counters (at most once a second) hold all
    // of it. A snapshot read while a packet arrived can be torn (its outcome
    // counted, `packets_seen` read before): take a consistent one.
    thread::sleep(Duration::from_millis(1500));
    let status = agent.wait_status("a consistent counter snapshot", |s| {
        let counters = counters_of(s);
        let outcomes: u64 = OUTCOME_COUNTERS
            .iter()
            .map(|name| counters.get(*name).copied().unwrap_or(0))
            .sum();
        counters.get("packets_seen") == Some(&outcomes)
    });
    check_accounting(&counters_of(&status), &sent, link_drops);
}

fn counters_of(status: &serde_json::Value) -> BTreeMap<String, u64> {
    serde_json::from_value(status["interfaces"][0]["counters"].clone()).unwrap_or_default()
}
