//! keepalived's accept mode: an lbha Master (not the address owner) with
//! `no_accept` holds its virtual address (answers ARP for it, advertises)
//! but drops what is sent to it, as keepalived's nftables rules do; with
//! `accept` the address answers. The rules are gone once the agent stops,
//! and a restart after a crash does not inherit them.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

use lbha_tests::{Agent, KeepalivedConfig, Netns, VrrpInstance, in_netns, require_root, veth_pair};

const WAIT: Duration = Duration::from_secs(20);

/// lbha's namespace (`va`, 10.207.N.1) and a peer's (`vp`, .2) on one link.
fn topology(n: u8) -> (Netns, Netns) {
    let a = Netns::new("ama").unwrap();
    let p = Netns::new("amp").unwrap();
    veth_pair(
        &a,
        "va",
        &format!("10.207.{n}.1/24"),
        &p,
        "vp",
        &format!("10.207.{n}.2/24"),
    )
    .unwrap();
    (a, p)
}

/// A Master of priority 200 (not the owner) advertising to the peer.
fn config(n: u8, mode: &str) -> String {
    KeepalivedConfig::new()
        .instance(
            VrrpInstance::unicast("VI_1", "va", 90 + n, Ipv4Addr::new(10, 207, n, 1))
                .priority(200)
                .advert_int("0.1")
                .version(3)
                .unicast_peer(Ipv4Addr::new(10, 207, n, 2))
                .virtual_ipaddress(format!("10.207.{n}.100/24"))
                .extra(mode),
        )
        .render()
}

fn vip(n: u8) -> String {
    format!("10.207.{n}.100")
}

/// An ICMP echo request from the peer is answered within a second (a
/// raw socket: the test hosts have no `ping`).
fn ping(p: &Netns, n: u8) -> bool {
    let to: Ipv4Addr = vip(n).parse().unwrap();
    in_netns(p.name(), move || {
        // Echo request, id 0x4c42, seq 1, with its checksum.
        let mut echo = [8u8, 0, 0, 0, 0x4c, 0x42, 0, 1, b'l', b'b', b'h', b'a'];
        let sum = echo
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>();
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        echo[2..4].copy_from_slice(&sum.to_be_bytes());
        // SAFETY: a raw socket of our own, with local buffers.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
            if fd < 0 {
                return false;
            }
            set_timeout(fd, 1);
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(to).to_be(),
                },
                sin_zero: [0; 8],
            };
            libc::sendto(
                fd,
                echo.as_ptr().cast(),
                echo.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            let mut buf = [0u8; 256];
            let mut answered = false;
            // Replies come with their IP header; skip what is not ours.
            loop {
                let got = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                if got < 28 {
                    break;
                }
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                if buf[12..16] == to.octets()
                    && buf[ihl] == 0
                    && buf[ihl + 4..ihl + 6] == [0x4c, 0x42]
                {
                    answered = true;
                    break;
                }
            }
            libc::close(fd);
            answered
        }
    })
    .unwrap()
}

/// SO_RCVTIMEO of `seconds`.
unsafe fn set_timeout(fd: i32, seconds: i64) {
    let tv = libc::timeval {
        tv_sec: seconds,
        tv_usec: 0,
    };
    // SAFETY: `tv` outlives the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
}

/// A TCP connect from the peer to a closed port of the IPv4 VIP:
/// `Some(true)` when the kernel answers (refused), `Some(false)` when
/// nothing comes back.
fn tcp_answered(p: &Netns, n: u8) -> Option<bool> {
    tcp_answered_at(p, vip(n).parse().unwrap())
}

/// The same to any address.
fn tcp_answered_at(p: &Netns, to: std::net::IpAddr) -> Option<bool> {
    let to = SocketAddr::new(to, 9);
    let result = in_netns(p.name(), move || {
        TcpStream::connect_timeout(&to, Duration::from_millis(800))
    })
    .unwrap();
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(true),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Some(false),
        _ => None,
    }
}

/// The peer learned the address's MAC (ARP answered).
fn arp_answered(p: &Netns, n: u8) -> bool {
    p.ip(&["neigh", "show", &vip(n), "dev", "vp"])
        .is_ok_and(|out| out.contains("lladdr"))
}

/// One VRRP advert reaches the peer within two seconds.
fn advert_heard(p: &Netns) -> bool {
    in_netns(p.name(), || {
        // SAFETY: a raw socket of our own, read into a local buffer.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, 112);
            if fd < 0 {
                return false;
            }
            set_timeout(fd, 2);
            let mut buf = [0u8; 256];
            let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
            libc::close(fd);
            n > 0
        }
    })
    .unwrap()
}

fn tables(a: &Netns) -> String {
    a.exec(&["nft", "list", "tables"]).unwrap()
}

#[test]
fn a_no_accept_master_holds_the_address_but_drops_its_traffic() {
    if !require_root() {
        return;
    }
    let (a, p) = topology(1);
    let mut agent = Agent::start(&a, &config(1, "no_accept")).unwrap();
    agent
        .wait_for_transition("VI_1", "MASTER", 0, WAIT)
        .unwrap();
    assert!(advert_heard(&p), "the Master advertises");
    assert!(!ping(&p, 1), "no_accept: a ping to the address is dropped");
    assert_eq!(tcp_answered(&p, 1), Some(false), "no_accept: TCP dropped");
    assert!(arp_answered(&p, 1), "the address is still resolved (ARP)");
    let set = a
        .exec(&["nft", "list", "set", "ip", "lbha", "vips"])
        .unwrap();
    assert!(set.contains(&vip(1)), "{set}");

    // A clean stop leaves no rule behind.
    agent.stop(Duration::from_secs(5)).unwrap();
    assert!(!tables(&a).contains("lbha"), "{}", tables(&a));
}

#[test]
fn an_accept_master_answers_even_after_a_no_accept_crash() {
    if !require_root() {
        return;
    }
    let (a, p) = topology(2);
    let mut crashed = Agent::start(&a, &config(2, "no_accept")).unwrap();
    crashed
        .wait_for_transition("VI_1", "MASTER", 0, WAIT)
        .unwrap();
    crashed.kill().unwrap();
    assert!(tables(&a).contains("lbha"), "a crash leaves the rules");

    let mut agent = Agent::start(&a, &config(2, "accept")).unwrap();
    agent
        .wait_for_transition("VI_1", "MASTER", 0, WAIT)
        .unwrap();
    assert!(
        !tables(&a).contains("lbha"),
        "removed at start: {}",
        tables(&a)
    );
    assert!(ping(&p, 2), "accept: a ping to the address is answered");
    assert_eq!(tcp_answered(&p, 2), Some(true), "accept: TCP answered");
}

/// The same over IPv6 (VRRPv3 between IPv6 unicast addresses): with
/// `no_accept` the Master's IPv6 virtual address is resolved (Neighbor
/// Discovery) but drops TCP, through the `ip6 lbha` table; with `accept`
/// it answers.
#[test]
fn an_ipv6_no_accept_master_drops_its_traffic_and_accept_answers() {
    if !require_root() {
        return;
    }
    let n = 3;
    let (a, p) = topology(n);
    a.ip(&["addr", "add", "fd00:207:3::1/64", "dev", "va", "nodad"])
        .unwrap();
    p.ip(&["addr", "add", "fd00:207:3::2/64", "dev", "vp", "nodad"])
        .unwrap();
    let config = |mode: &str| {
        format!(
            "vrrp_instance VI_1 {{\n    interface va\n    virtual_router_id 93\n    priority 200\n    advert_int 0.1\n    version 3\n    unicast_src_ip fd00:207:3::1\n    unicast_peer {{\n        fd00:207:3::2\n    }}\n    virtual_ipaddress {{\n        fd00:207:3::100/64\n    }}\n    {mode}\n}}\n"
        )
    };
    let tcp = |p: &Netns| tcp_answered_at(p, "fd00:207:3::100".parse().unwrap());

    let mut agent = Agent::start(&a, &config("no_accept")).unwrap();
    agent
        .wait_for_transition("VI_1", "MASTER", 0, WAIT)
        .unwrap();
    assert_eq!(
        tcp(&p),
        Some(false),
        "no_accept: TCP to the IPv6 address dropped"
    );
    let set = a
        .exec(&["nft", "list", "set", "ip6", "lbha", "vips"])
        .unwrap();
    assert!(set.contains("fd00:207:3::100"), "{set}");
    let neigh = p
        .ip(&["-6", "neigh", "show", "fd00:207:3::100", "dev", "vp"])
        .unwrap();
    assert!(
        neigh.contains("lladdr"),
        "the address is still resolved (ND): {neigh}"
    );
    agent.stop(Duration::from_secs(5)).unwrap();
    assert!(!tables(&a).contains("lbha"), "{}", tables(&a));

    let mut agent = Agent::start(&a, &config("accept")).unwrap();
    agent
        .wait_for_transition("VI_1", "MASTER", 0, WAIT)
        .unwrap();
    assert_eq!(
        tcp(&p),
        Some(true),
        "accept: TCP to the IPv6 address answered"
    );
}
