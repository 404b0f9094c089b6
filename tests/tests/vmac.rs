//! keepalived's `use_vmac` against real keepalived 2.2.7: an lbha Master
//! creates the macvlan `vrrp.VRID` with the VRRP virtual MAC and holds the
//! VIP on it; a keepalived Backup hears it and stays BACKUP; a third
//! namespace reaches the VIP and has the virtual MAC in its neighbour
//! table; when lbha stops, the macvlan is gone and keepalived takes over.
//!
//! Three namespaces on a bridge, 10.207.1.0/24.

use std::time::{Duration, Instant};

use lbha_tests::{
    Agent, Keepalived, Netns, bridge, bridge_port, capture::PacketSocket, in_netns, require_root,
};

const VRID: u8 = 71;
const VIP: &str = "10.207.1.100";
const VMAC: &str = "00:00:5e:00:01:47";

fn conf(priority: u8, state: &str) -> String {
    format!(
        "global_defs {{
    vrrp_garp_master_delay 0
}}
vrrp_instance VI_1 {{
    state {state}
    interface eth0
    virtual_router_id {VRID}
    priority {priority}
    advert_int 0.1
    version 3
    use_vmac
    virtual_ipaddress {{
        {VIP}/24
    }}
}}
"
    )
}

/// Polls `ok` until it holds or `timeout` passes.
fn eventually(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ok()
}

/// Whether `VIP` answers a TCP connection from `ns` (a refusal is an
/// answer: the holder's kernel replied with a reset). No `ping` needed.
fn vip_answers(ns: &Netns) -> bool {
    answers(ns, VIP)
}

fn answers(ns: &Netns, address: &'static str) -> bool {
    in_netns(ns.name(), move || {
        let to = std::net::SocketAddr::new(address.parse().unwrap(), 9);
        match std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
        }
    })
    .unwrap()
}

/// The source MAC of the first VRRP advert (IPv4 protocol 112) seen on
/// `interface` of `ns` within 3 s.
fn advert_source_mac(ns: &Netns, interface: &'static str) -> Option<String> {
    in_netns(ns.name(), move || {
        const ETH_P_IP: u16 = 0x0800;
        let socket = PacketSocket::open(interface, ETH_P_IP).expect("packet socket");
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut frame = [0u8; 1514];
        let mut found = None;
        while found.is_none() && Instant::now() < deadline {
            let n = socket.recv(&mut frame).unwrap_or(0);
            if n >= 34 && frame[23] == 112 {
                let mac: Vec<String> = frame[6..12].iter().map(|b| format!("{b:02x}")).collect();
                found = Some(mac.join(":"));
            }
        }
        found
    })
    .unwrap()
}

fn link_exists(ns: &Netns, name: &str) -> bool {
    ns.ip(&["link", "show", name]).is_ok()
}

#[test]
fn lbha_master_with_use_vmac_against_keepalived() {
    if !require_root() {
        return;
    }
    let switch = Netns::new("vmsw").unwrap();
    let lb = Netns::new("vmlb").unwrap();
    let ka = Netns::new("vmka").unwrap();
    let client = Netns::new("vmcl").unwrap();
    bridge(&switch, "br0").unwrap();
    bridge_port(&switch, "br0", "p-lb", &lb, "eth0", "10.207.1.1/24").unwrap();
    bridge_port(&switch, "br0", "p-ka", &ka, "eth0", "10.207.1.2/24").unwrap();
    bridge_port(&switch, "br0", "p-cl", &client, "eth0", "10.207.1.3/24").unwrap();

    let mut agent = Agent::start(&lb, &conf(200, "MASTER")).unwrap();
    agent
        .wait_for_transition("VI_1", "MASTER", 0, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", agent.log()));
    // The macvlan, as keepalived creates it: private mode, virtual MAC,
    // the VIP on it and not on eth0.
    let details = lb.ip(&["-d", "link", "show", "vrrp.71"]).unwrap();
    assert!(details.contains("macvlan mode private"), "{details}");
    assert!(details.contains(VMAC), "{details}");
    let on_vmac = lb.ip(&["-4", "addr", "show", "dev", "vrrp.71"]).unwrap();
    assert!(on_vmac.contains(VIP), "VIP on the macvlan: {on_vmac}");
    let on_base = lb.ip(&["-4", "addr", "show", "dev", "eth0"]).unwrap();
    assert!(!on_base.contains(VIP), "VIP not on eth0: {on_base}");

    // Adverts leave from the macvlan, so from the virtual MAC.
    assert_eq!(advert_source_mac(&client, "eth0").as_deref(), Some(VMAC));

    let mut keepalived = Keepalived::start(&ka, &conf(100, "BACKUP")).unwrap();
    keepalived
        .wait_for_state("VI_1", "BACKUP", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", keepalived.log()));
    // Several Master_Down_Intervals (0.3 s + skew): keepalived hears lbha
    // through its own macvlan and stays Backup.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !keepalived.log().contains("Entering MASTER STATE"),
        "keepalived took over from a running lbha master:\n{}\nlbha:\n{}",
        keepalived.log(),
        agent.log()
    );

    // The client reaches the VIP, and learned the virtual MAC for it. It
    // talks to lbha's own address first, so lbha's node knows its MAC:
    // otherwise the node would ARP for the client with the VIP as sender
    // from eth0 (the subnet's first route), and the client would file
    // eth0's MAC for the VIP, as it would with keepalived.
    assert!(answers(&client, "10.207.1.1"));
    assert!(vip_answers(&client), "VIP unreachable\n{}", agent.log());
    let neigh = client.ip(&["neigh", "show", VIP]).unwrap();
    assert!(
        neigh.contains(VMAC),
        "the client's neighbour entry for {VIP} is the virtual MAC: {neigh}\nlbha's links: {}\nkeepalived's: {}",
        lb.ip(&["-br", "link"]).unwrap_or_default(),
        ka.ip(&["-br", "link"]).unwrap_or_default()
    );

    // lbha stops: the macvlan goes, keepalived takes over (at once: the
    // master resigns with a priority-0 advert).
    let status = agent.stop(Duration::from_secs(5)).unwrap();
    assert!(status.success(), "{}", agent.log());
    assert!(
        !link_exists(&lb, "vrrp.71"),
        "the macvlan is gone after stop:\n{}",
        agent.log()
    );
    keepalived
        .wait_for_state("VI_1", "MASTER", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", keepalived.log()));
    // And the VIP answers from keepalived's own macvlan (same MAC).
    let ka_vmac = ka.ip(&["-4", "addr", "show", "dev", "vrrp.71"]).unwrap();
    assert!(ka_vmac.contains(VIP), "{ka_vmac}");
    assert!(eventually(Duration::from_secs(5), || vip_answers(&client)));
}
