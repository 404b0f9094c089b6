//! The lab: the whole failover setup of the seed deployment on one machine,
//! with no cloud account.
//!
//! ```text
//!  client ──── router (DO simulator: API + metadata, routes the floating IP)
//!                 │ public 10.230.0.0/24 (bridge)
//!          ┌──────┴──────┐
//!         lb1           lb2      each: HAProxy + lbha in its own network and PID namespace
//!          └──────┬──────┘
//!                 │ private 10.230.1.0/24 (bridge in a switch namespace): VRRP + backends
//!        web1   web2   web3     (HAProxy answering "webN")
//! ```
//!
//! Like DigitalOcean's anchor IPs, both load balancers accept the floating
//! IP (it is on their loopback); the simulator's router sends it to whichever
//! droplet currently holds it. With [`LabOptions::dual_stack`] the client,
//! the router and the load balancers' public side also get IPv6 addresses
//! (ULA `fd00:230::/48`), the simulator serves a reserved IPv6
//! ([`RESERVED_IPV6`], on both load balancers' loopback too) and routes it
//! (`/128 via` the holder's IPv6) as it routes the floating IP, and lbha
//! moves both; VRRP itself stays on IPv4, unless [`LabOptions::vrrp_ipv6`]
//! runs it over IPv6 instead (VRRPv3 between the load balancers' private
//! IPv6 addresses, [`lb_private6`], holding the virtual IPv6 [`VIP6`] on
//! `priv0`; the floating IP and the reserved IPv6 follow that instance).
//! Everything is removed when the [`Lab`] drops.
//!
//! The API is plain HTTP next door by default. With [`ApiPath::Remote`] the
//! droplets reach it as they reach DigitalOcean's: over HTTPS (the
//! simulator's lab CA, trusted through lbha's `ca_file` and curl's
//! `--cacert`), through [`relay::DelayRelay`] in the router namespace,
//! which delays every segment each way. The metadata service stays local
//! and fast, as on a droplet; the plain listener stays for the lab's own
//! control requests.
//!
//! Namespaces, links and the guards of the lab's daemons (the simulator and
//! each load balancer's node) are `lbha-harness`'s, the same the integration
//! tests use.

pub mod relay;
mod stack;
mod timeline;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail};
use lbha_harness::{
    COMMAND_TIMEOUT, Daemon, Netns, TempDir, bridge, bridge_port, enter, in_netns, ns_pid,
    run_command, send_signal, temp_dir, veth_pair,
};
pub use stack::{
    ScriptApi, SimAction, SimClock, Stack, StackScripts, instance_name, instance_vrid,
    keepalived_conf, keepalived_transitions, notify_accepts, vrrp_address, vrrp_interface,
    write_scripts,
};
pub use timeline::{Transition, assign_answers, parse_address_changes, parse_transitions, unix_ms};

pub const FLOATING_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const ROUTER_PUBLIC: Ipv4Addr = Ipv4Addr::new(10, 230, 0, 1);
/// The reserved IPv6 of a dual-stack lab (documentation range).
pub const RESERVED_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0x10);
/// The router on the public network, IPv6 (dual-stack labs).
pub const ROUTER_PUBLIC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x230, 0, 0, 0, 0, 0, 1);
/// The IPv6 instance's virtual address on the private network
/// ([`LabOptions::vrrp_ipv6`]).
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x230, 1, 0, 0, 0, 0, 0x100);
/// The client's network, IPv6: the router is `::1`, the client `::2`.
const CLIENT_NET6: &str = "fd00:230:9::";
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const API_PORT: u16 = 8080;
/// The relay in front of the HTTPS API ([`ApiPath::Remote`]), on
/// [`ROUTER_PUBLIC`].
pub const API_TLS_PORT: u16 = 8443;
/// The simulator's HTTPS listener behind the relay, on the router's loopback.
const SIM_TLS_LISTEN: &str = "127.0.0.1:8444";
/// A DigitalOcean API region tens of milliseconds away: each way.
pub const REMOTE_API_DELAY: Duration = Duration::from_millis(15);
pub const TOKEN: &str = "lab-token-7f3a9c";
pub const VRID: u8 = 51;
/// The heartbeat's UDP port on the public network (with `heartbeat`).
pub const HEARTBEAT_PORT: u16 = 7823;

/// What happens to VRRP packets a load balancer sends (its heartbeat, API
/// and client traffic are untouched), through nftables in its namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VrrpPath {
    Intact,
    /// Every advert dropped.
    Cut,
    /// One advert in `n` dropped, at random.
    LoseOneIn(u32),
}
/// `RUST_LOG` of the lbha agents.
const LBHA_LOG_FILTER: &str = "info,lbha_agent::cloud=debug";

/// How the load balancers reach the simulated API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ApiPath {
    /// Plain HTTP on the router, next door.
    #[default]
    Local,
    /// HTTPS through a relay delaying every segment `delay` each way.
    Remote { delay: Duration },
}

/// Load balancer `i`'s public IPv6 (dual-stack labs).
pub fn lb_public6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x230, 0, 0, 0, 0, 0, 0x12 + i as u16)
}

/// Load balancer `i`'s private IPv6 ([`LabOptions::vrrp_ipv6`]): its
/// VRRP unicast source and its peer's unicast peer.
pub fn lb_private6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x230, 1, 0, 0, 0, 0, 0x11 + i as u16)
}

/// Droplet id of load balancer `i` (0 or 1).
pub fn droplet_id(i: usize) -> u64 {
    1001 + i as u64
}

pub fn lb_public(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 230, 0, 11 + i as u8)
}

pub fn lb_private(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 230, 1, 11 + i as u8)
}

pub fn web_private(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 230, 1, 21 + i as u8)
}

/// Programs the lab runs.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub agent: PathBuf,
    pub dosim: PathBuf,
}

#[derive(Clone, Debug)]
pub struct LabOptions {
    /// VRRPv3 advertisement interval.
    pub advert_interval: Duration,
    /// How long the simulated API takes to complete an assign.
    pub action_delay: Duration,
    /// How often a Master re-checks that it holds the floating IP.
    pub recheck_interval: Duration,
    /// Extra `--` style keys for lbha's `[[instance]]` (e.g. `preempt = false`).
    pub extra_instance_toml: String,
    /// Extra keys for lbha's `[floating_ip]` (e.g. `droplet_id = 1002`,
    /// where `{droplet_id}` stands for the load balancer's own id).
    pub extra_floating_ip_toml: String,
    /// What runs next to HAProxy: lbha (native TOML or the seed's
    /// keepalived.conf) or keepalived itself; on both load balancers unless
    /// `lb2_stack` says otherwise.
    pub stack: Stack,
    /// lb2 runs this stack instead of `stack`: a mixed pair, as an operator
    /// migrating one node at a time runs (e.g. lbha on lb1, keepalived on
    /// lb2). The two speak VRRP to each other; each moves the addresses
    /// its own way (lbha itself, keepalived through master.sh).
    pub lb2_stack: Option<Stack>,
    /// VRRP instances per VRRP interface (VRIDs from [`VRID`] up, wrapping
    /// at 255); the floating IP follows the first.
    pub instances: u8,
    /// VRRP interfaces per load balancer: `priv0`, then `vrrp1`.. on
    /// networks of their own (for the scale benchmark).
    pub interfaces: u8,
    /// How often lbha's HAProxy check rescans the processes.
    pub check_interval: Duration,
    /// lbha also exchanges heartbeats over the public network (`[heartbeat]`
    /// in the native TOML, the `--heartbeat-*` flags beside a keepalived.conf).
    pub heartbeat: bool,
    /// Where the API is, for lbha and the keepalived stack's master.sh alike.
    pub api: ApiPath,
    /// lbha's `keepalive_interval` (a Backup's warm API connection; zero:
    /// off), both configuration formats; `None`: lbha's default.
    pub keepalive_interval: Option<Duration>,
    /// IPv6 besides IPv4 on the client and public side, and a reserved
    /// IPv6 moved with the floating IP (see the module's doc).
    pub dual_stack: bool,
    /// The one VRRP instance runs over IPv6 instead of IPv4 (VRRPv3,
    /// unicast between [`lb_private6`] addresses, virtual address
    /// [`VIP6`]); needs `dual_stack`, one instance on one interface, and
    /// lbha's native TOML or keepalived on each load balancer (lbha's
    /// keepalived.conf mode has no reserved IPv6 flag).
    pub vrrp_ipv6: bool,
    /// lbha checks HAProxy over its stats socket (the `haproxy` check,
    /// requiring frontend `fe`) instead of watching its process.
    pub haproxy_check: bool,
    /// With `haproxy_check`: no socket and no pidfile in the check, which
    /// finds both from the running HAProxy (its command line's `-f`, the
    /// `stats socket` of haproxy.cfg's `global` section).
    pub haproxy_discover: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            advert_interval: Duration::from_millis(100),
            action_delay: Duration::from_millis(300),
            recheck_interval: Duration::from_secs(2),
            extra_instance_toml: String::new(),
            extra_floating_ip_toml: String::new(),
            stack: Stack::Lbha,
            lb2_stack: None,
            instances: 1,
            interfaces: 1,
            check_interval: Duration::from_secs(2),
            heartbeat: false,
            api: ApiPath::Local,
            keepalive_interval: None,
            dual_stack: false,
            vrrp_ipv6: false,
            haproxy_check: false,
            haproxy_discover: false,
        }
    }
}

pub struct Lab {
    pub dir: PathBuf,
    pub started: Instant,
    /// Wall clock at `started`, to place log timestamps on the timeline.
    pub started_wall: SystemTime,
    /// Wall clock when the simulator started (its action times count from it).
    sim_started_wall: SystemTime,
    bins: Binaries,
    opts: LabOptions,
    // The daemons print no log of their own when a test panics: the
    // failover tests print the lab's logs (with the token redacted).
    sim: Option<Daemon>,
    /// In front of the HTTPS API, with [`ApiPath::Remote`].
    relay: Option<relay::DelayRelay>,
    lbs: [Option<Daemon>; 2],
    /// `ip monitor address` on each load balancer, with
    /// [`LabOptions::vrrp_ipv6`]: when [`VIP6`] came and went.
    addr_monitors: [Option<Daemon>; 2],
    // Field order matters: processes above die before namespaces below go,
    // and the directory (`temp`, which `dir` names) last.
    pub client: Netns,
    pub router: Netns,
    pub switch: Netns,
    pub lb: [Netns; 2],
    pub web: [Netns; 3],
    temp: TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.sim.take();
        self.relay.take();
        self.lbs = [None, None];
        self.addr_monitors = [None, None];
        for ns in self.all_namespaces() {
            ns.kill_all();
        }
        // LBHA_LAB_KEEP=1 leaves the logs and configs for a post-mortem.
        if std::env::var_os("LBHA_LAB_KEEP").is_some() {
            self.temp.disable_cleanup(true);
            eprintln!("lab: kept {}", self.dir.display());
        }
    }
}

/// `dual_stack`: HAProxy also listens on IPv6 (the reserved IPv6).
/// `stats_socket`: the admin-level stats socket the `haproxy` check (and
/// the tests, through [`Lab::haproxy_cli`]) talk to.
fn haproxy_lb_config(dual_stack: bool, stats_socket: &std::path::Path) -> String {
    let servers: String = (0..3)
        .map(|i| {
            format!(
                "    server web{} {}:80 check inter 500 fall 2 rise 1\n",
                i + 1,
                web_private(i)
            )
        })
        .collect();
    format!(
        "global\n    stats socket {stats} mode 600 level admin\n\
         defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n    retries 2\n    option redispatch\n\
         frontend fe\n    bind *:80\n{v6}    default_backend webs\n\
         backend webs\n    balance roundrobin\n{servers}",
        stats = stats_socket.display(),
        v6 = if dual_stack {
            "    bind :::80 v6only\n"
        } else {
            ""
        }
    )
}

fn haproxy_web_config(i: usize) -> String {
    format!(
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\
         frontend web\n    bind *:80\n    http-request return status 200 content-type text/plain string \"web{}\\n\"\n",
        i + 1
    )
}

impl Lab {
    /// Builds the topology and starts the simulator, the web servers and both
    /// load balancers. `tag` keeps parallel labs apart (≤ 6 characters).
    pub fn start(tag: &str, bins: Binaries, opts: LabOptions) -> Result<Self> {
        let started = Instant::now();
        let started_wall = SystemTime::now();
        if opts.vrrp_ipv6 {
            let stacks = [opts.stack, opts.lb2_stack.unwrap_or(opts.stack)];
            if !opts.dual_stack
                || opts.instances > 1
                || opts.interfaces > 1
                || stacks.contains(&Stack::LbhaKeepalivedConf)
            {
                bail!(
                    "vrrp_ipv6 needs dual_stack, one instance on one interface, and lbha's \
                     native TOML or keepalived on each load balancer"
                );
            }
        }
        let temp = temp_dir(&format!("lab-{tag}"))?;
        let ns = |role: &str| Netns::new(&format!("{tag}-{role}"));
        let mut lab = Lab {
            dir: temp.path().to_owned(),
            started,
            started_wall,
            sim_started_wall: started_wall,
            bins,
            opts,
            sim: None,
            relay: None,
            lbs: [None, None],
            addr_monitors: [None, None],
            client: ns("client")?,
            router: ns("router")?,
            switch: ns("switch")?,
            lb: [ns("lb1")?, ns("lb2")?],
            web: [ns("web1")?, ns("web2")?, ns("web3")?],
            temp,
        };
        lab.wire()?;
        lab.start_sim()?;
        for i in 0..3 {
            let config = lab.dir.join(format!("web{}.cfg", i + 1));
            std::fs::write(&config, haproxy_web_config(i))?;
            let pidfile = lab.dir.join(format!("web{}.pid", i + 1));
            lab.web[i].exec(&[
                "haproxy",
                "-D",
                "-f",
                &config.to_string_lossy(),
                "-p",
                &pidfile.to_string_lossy(),
            ])?;
        }
        std::fs::write(lab.dir.join("token"), format!("{TOKEN}\n"))?;
        std::fs::write(
            lab.dir.join("heartbeat.key"),
            "lab-heartbeat-secret-0123456789\n",
        )?;
        for i in 0..2 {
            std::fs::write(
                lab.dir.join(format!("lb{}-haproxy.cfg", i + 1)),
                haproxy_lb_config(lab.opts.dual_stack, &lab.haproxy_socket(i)),
            )?;
            lab.start_lb(i)?;
        }
        Ok(lab)
    }

    fn all_namespaces(&self) -> Vec<&Netns> {
        let mut all = vec![&self.client, &self.router, &self.switch];
        all.extend(self.lb.iter());
        all.extend(self.web.iter());
        all
    }

    fn wire(&self) -> Result<()> {
        let r = &self.router;
        // client <-> router
        veth_pair(
            &self.client,
            "eth0",
            "10.230.9.2/24",
            r,
            "client0",
            "10.230.9.1/24",
        )?;
        self.client
            .ip(&["route", "add", "default", "via", "10.230.9.1"])?;
        // the public bridge in the router, the private one in the switch
        bridge(r, "brpub")?;
        r.ip(&[
            "addr",
            "add",
            &format!("{ROUTER_PUBLIC}/24"),
            "dev",
            "brpub",
        ])?;
        r.ip(&["addr", "add", &format!("{METADATA_IP}/32"), "dev", "lo"])?;
        r.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        bridge(&self.switch, "brpriv")?;
        if self.opts.vrrp_ipv6 {
            // No Duplicate Address Detection on the load balancers: priv0's
            // link-local address (the source of lbha's Neighbor
            // Advertisements) is usable at once rather than tentative.
            for lb in &self.lb {
                for scope in ["all", "default"] {
                    lb.exec(&[
                        "sysctl",
                        "-qw",
                        &format!("net.ipv6.conf.{scope}.accept_dad=0"),
                    ])?;
                }
            }
        }
        for (i, lb) in self.lb.iter().enumerate() {
            let port = format!("lb{}", i + 1);
            let public = format!("{}/24", lb_public(i));
            bridge_port(r, "brpub", &port, lb, "pub0", &public)?;
            let private = format!("{}/24", lb_private(i));
            bridge_port(&self.switch, "brpriv", &port, lb, "priv0", &private)?;
            lb.ip(&["route", "add", "default", "via", &ROUTER_PUBLIC.to_string()])?;
            // The anchor: accept the floating IP whoever the router sends it to.
            lb.ip(&["addr", "add", &format!("{FLOATING_IP}/32"), "dev", "lo"])?;
            if self.opts.dual_stack {
                // nodad: usable at once, no duplicate detection to wait out.
                let public6 = format!("{}/64", lb_public6(i));
                lb.ip(&["-6", "addr", "add", &public6, "dev", "pub0", "nodad"])?;
                lb.ip(&[
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    &ROUTER_PUBLIC6.to_string(),
                ])?;
                let anchor6 = format!("{RESERVED_IPV6}/128");
                lb.ip(&["-6", "addr", "add", &anchor6, "dev", "lo", "nodad"])?;
            }
            if self.opts.vrrp_ipv6 {
                let private6 = format!("{}/64", lb_private6(i));
                lb.ip(&["-6", "addr", "add", &private6, "dev", "priv0", "nodad"])?;
            }
        }
        if self.opts.dual_stack {
            let router6 = format!("{ROUTER_PUBLIC6}/64");
            r.ip(&["-6", "addr", "add", &router6, "dev", "brpub", "nodad"])?;
            let (router_c, client_c) = (format!("{CLIENT_NET6}1/64"), format!("{CLIENT_NET6}2/64"));
            r.ip(&["-6", "addr", "add", &router_c, "dev", "client0", "nodad"])?;
            r.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
            self.client
                .ip(&["-6", "addr", "add", &client_c, "dev", "eth0", "nodad"])?;
            self.client.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &format!("{CLIENT_NET6}1"),
            ])?;
        }
        // Extra VRRP networks: a bridge each in the switch.
        for j in 1..self.opts.interfaces.max(1) {
            let bridge_name = format!("brvrrp{j}");
            bridge(&self.switch, &bridge_name)?;
            for (i, lb) in self.lb.iter().enumerate() {
                let port = format!("lb{}v{j}", i + 1);
                let address = format!("{}/24", vrrp_address(i, j));
                bridge_port(
                    &self.switch,
                    &bridge_name,
                    &port,
                    lb,
                    &vrrp_interface(j),
                    &address,
                )?;
            }
        }
        for (i, web) in self.web.iter().enumerate() {
            let port = format!("web{}", i + 1);
            let private = format!("{}/24", web_private(i));
            bridge_port(&self.switch, "brpriv", &port, web, "eth0", &private)?;
        }
        Ok(())
    }

    fn start_sim(&mut self) -> Result<()> {
        let mut cmd = self.router.command(&self.bins.dosim);
        cmd.args(["--token", TOKEN])
            .arg(format!("--api-listen={ROUTER_PUBLIC}:{API_PORT}"))
            .arg(format!("--metadata-listen={METADATA_IP}:80"))
            .arg(format!("--floating-ip={FLOATING_IP}"))
            .arg(format!(
                "--action-delay-ms={}",
                self.opts.action_delay.as_millis()
            ))
            .arg("--route")
            .arg("--state-file")
            .arg(self.dir.join("sim.json"));
        for i in 0..2 {
            if self.opts.dual_stack {
                cmd.arg(format!(
                    "--droplet={}={},{}",
                    droplet_id(i),
                    lb_public(i),
                    lb_public6(i)
                ));
            } else {
                cmd.arg(format!("--droplet={}={}", droplet_id(i), lb_public(i)));
            }
        }
        if self.opts.dual_stack {
            cmd.arg(format!("--floating-ip={RESERVED_IPV6}"));
        }
        if let ApiPath::Remote { .. } = self.opts.api {
            cmd.arg(format!("--api-tls-listen={SIM_TLS_LISTEN}"))
                .arg(format!("--tls-name={ROUTER_PUBLIC}"))
                .arg("--tls-ca-out")
                .arg(self.dir.join("api-ca.pem"));
        }
        let log = self.dir.join("sim.log");
        cmd.stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        let mut guard = Daemon::spawn("lbha-dosim", &mut cmd, log)?.quiet_on_panic();
        let stdout = guard
            .child_mut()
            .child_mut()
            .stdout
            .take()
            .context("simulator stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("waiting for the simulator to listen")?;
        if line.trim().is_empty() {
            bail!("the simulator exited: {}", self.sim_log());
        }
        self.sim_started_wall = SystemTime::now();
        self.sim = Some(guard);
        if let ApiPath::Remote { delay } = self.opts.api {
            let upstream: SocketAddr = SIM_TLS_LISTEN.parse()?;
            self.relay = Some(relay::DelayRelay::start_in(
                self.router.name(),
                SocketAddr::from((ROUTER_PUBLIC, API_TLS_PORT)),
                upstream,
                delay,
            )?);
        }
        Ok(())
    }

    /// The API's base URL as the load balancers use it.
    pub fn api_url(&self) -> String {
        match self.opts.api {
            ApiPath::Local => format!("http://{ROUTER_PUBLIC}:{API_PORT}"),
            ApiPath::Remote { .. } => format!("https://{ROUTER_PUBLIC}:{API_TLS_PORT}"),
        }
    }

    /// The simulator's CA certificate (PEM) the load balancers trust, with
    /// [`ApiPath::Remote`].
    pub fn api_ca_file(&self) -> Option<PathBuf> {
        match self.opts.api {
            ApiPath::Local => None,
            ApiPath::Remote { .. } => Some(self.dir.join("api-ca.pem")),
        }
    }

    /// Connections the load balancers opened to the API through the relay
    /// (with [`ApiPath::Remote`]).
    pub fn relay_connections(&self) -> Option<u64> {
        self.relay.as_ref().map(relay::DelayRelay::connections)
    }

    fn lbha_config(&self, i: usize) -> String {
        let o = &self.opts;
        format!(
            r#"[global]
status_socket = "{status}"
metrics_listen = "127.0.0.1:9464"

[[check]]
name = "haproxy"
{check_kind}
interval = {check_interval}
weight = 0

[[instance]]
name = "VI_1"
interface = "priv0"
vrid = {VRID}
priority = {priority}
version = 3
advert_interval = {interval}
unicast_src = "{src}"
unicast_peers = ["{peer}"]
{vips}track = ["haproxy"]
{extra}
[floating_ip]
ip = "{FLOATING_IP}"
{reserved_ipv6}
token_file = "{token}"
api_url = "{api_url}"
{ca_file}
metadata_url = "http://{METADATA_IP}"
recheck_interval = {recheck}
operation_deadline = 20.0
request_timeout = 2.0
metadata_timeout = 1.0
{keepalive}
{extra_floating_ip}
{heartbeat}"#,
            priority = if i == 0 { 200 } else { 100 },
            reserved_ipv6 = if o.dual_stack {
                format!("reserved_ipv6 = \"{RESERVED_IPV6}\"")
            } else {
                String::new()
            },
            api_url = self.api_url(),
            ca_file = self
                .api_ca_file()
                .map(|path| format!("ca_file = \"{}\"", path.display()))
                .unwrap_or_default(),
            keepalive = o
                .keepalive_interval
                .map(|d| format!("keepalive_interval = {:?}", d.as_secs_f64()))
                .unwrap_or_default(),
            check_interval = o.check_interval.as_secs_f64(),
            check_kind = if o.haproxy_check && o.haproxy_discover {
                "haproxy = { require_frontends = [\"fe\"] }".into()
            } else if o.haproxy_check {
                format!(
                    "haproxy = {{ stats_socket = \"{}\", pidfile = \"{}\", require_frontends = [\"fe\"] }}",
                    self.haproxy_socket(i).display(),
                    self.haproxy_pidfile(i).display()
                )
            } else {
                "process = \"haproxy\"".into()
            },
            interval = o.advert_interval.as_secs_f64(),
            src = if o.vrrp_ipv6 {
                IpAddr::from(lb_private6(i))
            } else {
                lb_private(i).into()
            },
            peer = if o.vrrp_ipv6 {
                IpAddr::from(lb_private6(1 - i))
            } else {
                lb_private(1 - i).into()
            },
            vips = if o.vrrp_ipv6 {
                format!("virtual_addresses = [\"{VIP6}/64\"]\n")
            } else {
                String::new()
            },
            extra = o.extra_instance_toml,
            token = self.dir.join("token").display(),
            recheck = o.recheck_interval.as_secs_f64(),
            status = self.status_socket(i).display(),
            extra_floating_ip = o
                .extra_floating_ip_toml
                .replace("{droplet_id}", &droplet_id(i).to_string()),
            heartbeat = if o.heartbeat {
                format!(
                    "[heartbeat]\nlisten = \"{}:{HEARTBEAT_PORT}\"\npeers = [\"{}:{HEARTBEAT_PORT}\"]\nkey_file = \"{}\"\n",
                    lb_public(i),
                    lb_public(1 - i),
                    self.dir.join("heartbeat.key").display()
                )
            } else {
                String::new()
            },
        )
    }

    /// Starts HAProxy and lbha on load balancer `i` in a fresh PID namespace
    /// (so procfs shows lbha only its own HAProxy). Its init is a shell that
    /// outlives lbha (so lbha alone can be killed, as a crash of the daemon
    /// would, leaving HAProxy up) and reaps orphans; killing the shell takes
    /// the whole node down.
    pub fn start_lb(&mut self, i: usize) -> Result<()> {
        let toml = self.dir.join(format!("lb{}.toml", i + 1));
        std::fs::write(&toml, self.lbha_config(i))?;
        self.write_stack_config(i)?;
        if self.opts.vrrp_ipv6 {
            self.start_addr_monitor(i)?;
        }
        // Not `exec`: lbha as the PID namespace's init would take every
        // process of the node with it when it dies.
        let script = format!(
            "{haproxy} 2>>{log}\n{agent}\nwhile :; do sleep 1; done\n",
            haproxy = self.haproxy_command(i),
            agent = self.agent_command(i),
            log = self.lb_log_path(i).display(),
        );
        let mut cmd = self.lb[i].command("unshare");
        cmd.args([
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "sh",
            "-c",
            &script,
        ])
        .env("RUST_LOG", LBHA_LOG_FILTER)
        .stdin(Stdio::null());
        // The node's shell writes the log (its commands redirect into it).
        let node = Daemon::spawn(&format!("lb{}", i + 1), &mut cmd, self.lb_log_path(i))
            .context("starting a load balancer")?;
        self.lbs[i] = Some(node.quiet_on_panic());
        Ok(())
    }

    /// Starts (again, after a crash took it down) `ip monitor address` on
    /// load balancer `i`, appending to its log: which daemon adds or
    /// removes [`VIP6`] (lbha or keepalived), the kernel tells when.
    fn start_addr_monitor(&mut self, i: usize) -> Result<()> {
        let log = self.dir.join(format!("lb{}-addresses.log", i + 1));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut cmd = self.lb[i].command("ip");
        // TZ=UTC: `-ts` stamps in local time, read back as UTC.
        cmd.args(["-6", "-ts", "monitor", "address", "dev", "priv0"])
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let monitor = Daemon::spawn(&format!("lb{}-addr-monitor", i + 1), &mut cmd, log)?;
        self.addr_monitors[i] = Some(monitor.quiet_on_panic());
        Ok(())
    }

    /// When [`VIP6`] was added to (`true`) or removed from load balancer
    /// `i`'s `priv0`, since the lab started ([`LabOptions::vrrp_ipv6`]).
    pub fn vip6_changes(&self, i: usize) -> Vec<(Duration, bool)> {
        let log = std::fs::read_to_string(self.dir.join(format!("lb{}-addresses.log", i + 1)))
            .unwrap_or_default();
        parse_address_changes(&log, &VIP6.to_string(), self.started_wall)
    }

    fn agent_command(&self, i: usize) -> String {
        if self.stack_of(i).uses_keepalived_conf() {
            return self.stack_agent_command(i);
        }
        format!(
            "{agent} --config {toml} 2>>{log}",
            agent = self.bins.agent.display(),
            toml = self.dir.join(format!("lb{}.toml", i + 1)).display(),
            log = self.lb_log_path(i).display(),
        )
    }

    /// The init (PID 1) of load balancer `i`'s PID namespace, as a host PID.
    fn lb_init(&self, i: usize) -> Result<i32> {
        self.lb[i]
            .pids()
            .into_iter()
            .find(|pid| ns_pid(*pid) == Some(1))
            .context("the load balancer is not running")
    }

    /// Runs `script` with `sh` inside load balancer `i`'s PID, mount and
    /// network namespaces.
    fn lb_sh(&self, i: usize, script: &str) -> Result<()> {
        let init = self.lb_init(i)?;
        let mut cmd = Command::new("nsenter");
        cmd.args([
            "-t",
            &init.to_string(),
            "-p",
            "-m",
            "-n",
            "sh",
            "-c",
            script,
        ])
        .env("RUST_LOG", LBHA_LOG_FILTER);
        run_command(&mut cmd, COMMAND_TIMEOUT)?;
        Ok(())
    }

    /// lbha's native configuration file of load balancer `i` (what a
    /// SIGHUP reloads).
    pub fn lbha_config_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("lb{}.toml", i + 1))
    }

    /// Cuts, thins or restores the VRRP adverts load balancer `i` sends.
    pub fn set_vrrp_path(&self, i: usize, path: VrrpPath) -> Result<()> {
        const TABLE: &str = "lbha_lab_fault";
        let ns = &self.lb[i];
        // Replaced whole each time; absent the first time.
        let _ = ns.exec(&["nft", "delete", "table", "inet", TABLE]);
        let verdict = match path {
            VrrpPath::Intact => return Ok(()),
            VrrpPath::Cut => "drop".to_owned(),
            VrrpPath::LoseOneIn(n) => format!("numgen random mod {n} 0 drop"),
        };
        ns.exec(&["nft", "add", "table", "inet", TABLE])?;
        ns.exec(&[
            "nft",
            "add",
            "chain",
            "inet",
            TABLE,
            "out",
            "{ type filter hook output priority 0; }",
        ])?;
        // `meta l4proto`: VRRP over IPv4 and over IPv6 alike.
        let rule = format!("add rule inet {TABLE} out meta l4proto vrrp {verdict}");
        let words: Vec<&str> = std::iter::once("nft").chain(rule.split(' ')).collect();
        ns.exec(&words)?;
        Ok(())
    }

    /// Sends `signal` to lbha on load balancer `i` (SIGSTOP freezes it,
    /// SIGCONT thaws it, SIGHUP reloads it); returns how many processes got it.
    pub fn signal_agent(&self, i: usize, signal: libc::c_int) -> usize {
        let pids = self.lb_pids(i, self.stack_of(i).process_name());
        for pid in &pids {
            send_signal(*pid, signal);
        }
        pids.len()
    }

    /// Starts `count` idle processes (`sleep`) inside load balancer `i`'s
    /// PID namespace, where lbha's process check scans them; they end with
    /// the node.
    pub fn spawn_idle_processes(&self, i: usize, count: usize) -> Result<()> {
        self.lb_sh(
            i,
            &format!(
                "n=0; while [ $n -lt {count} ]; do sleep 86400 </dev/null >/dev/null 2>&1 & n=$((n+1)); done"
            ),
        )
    }

    /// Load balancer `i`'s Prometheus metrics (lbha stacks only).
    pub fn metrics(&self, i: usize) -> Result<String> {
        let reply = in_netns(self.lb[i].name(), || {
            http_request(
                SocketAddr::from(([127, 0, 0, 1], 9464)),
                "GET /metrics HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
                Duration::from_secs(2),
            )
        })??;
        Ok(reply)
    }

    /// SIGKILLs lbha (only lbha: HAProxy keeps running) on load balancer
    /// `i`; returns how many processes it killed.
    pub fn kill_agent(&self, i: usize) -> usize {
        let pids = self.lb_pids(i, self.stack_of(i).process_name());
        for pid in &pids {
            send_signal(*pid, libc::SIGKILL);
        }
        pids.len()
    }

    /// Starts lbha again inside load balancer `i`'s namespaces (as a
    /// supervisor restarting it would), logging to the same file.
    pub fn start_agent(&self, i: usize) -> Result<()> {
        // Backgrounded with its output redirected, so `sh` and nsenter return
        // at once; the orphan is adopted (and later reaped) by the node's init.
        self.lb_sh(
            i,
            &format!("{} </dev/null >/dev/null &", self.agent_command(i)),
        )
    }

    fn haproxy_command(&self, i: usize) -> String {
        format!(
            "haproxy -W -D -f {} -p {}",
            self.dir.join(format!("lb{}-haproxy.cfg", i + 1)).display(),
            self.haproxy_pidfile(i).display()
        )
    }

    fn haproxy_pidfile(&self, i: usize) -> PathBuf {
        self.dir.join(format!("lb{}-haproxy.pid", i + 1))
    }

    /// Load balancer `i`'s HAProxy stats socket (admin level).
    pub fn haproxy_socket(&self, i: usize) -> PathBuf {
        self.dir.join(format!("lb{}-haproxy.sock", i + 1))
    }

    /// Sends one command to load balancer `i`'s HAProxy stats socket (a
    /// Unix socket: reachable from any network namespace) and returns its
    /// answer.
    pub fn haproxy_cli(&self, i: usize, command: &str) -> Result<String> {
        use std::io::{Read, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(self.haproxy_socket(i))
            .context("connecting to HAProxy's stats socket")?;
        stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
        stream.write_all(format!("{command}\n").as_bytes())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    }

    /// Reloads load balancer `i`'s HAProxy as `systemctl reload` does:
    /// SIGUSR2 to the master, which starts a new worker and lets the old
    /// one drain.
    pub fn reload_haproxy(&self, i: usize) -> Result<()> {
        self.lb_sh(
            i,
            &format!(
                "kill -USR2 \"$(cat {})\"",
                self.haproxy_pidfile(i).display()
            ),
        )
    }

    /// Sends `signal` to every HAProxy process of load balancer `i` (SIGSTOP
    /// for a hang, SIGCONT to end it); returns how many.
    pub fn signal_haproxy(&self, i: usize, signal: libc::c_int) -> usize {
        let pids = self.lb_pids(i, "haproxy");
        for pid in &pids {
            send_signal(*pid, signal);
        }
        pids.len()
    }

    /// Kills the three web servers (every backend server of both load
    /// balancers goes DOWN).
    pub fn stop_webs(&self) {
        for web in &self.web {
            web.kill_all();
        }
    }

    /// Load balancer `i`'s status socket (`lbha-agent status --socket`).
    pub fn status_socket(&self, i: usize) -> PathBuf {
        self.dir.join(format!("lb{}.sock", i + 1))
    }

    pub fn lb_log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("lb{}.log", i + 1))
    }

    pub fn lb_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.lb_log_path(i)).unwrap_or_default()
    }

    pub fn sim_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sim.log")).unwrap_or_default()
    }

    /// Host PIDs of the processes named `comm` in load balancer `i`.
    fn lb_pids(&self, i: usize, comm: &str) -> Vec<i32> {
        self.lb[i]
            .pids()
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
            })
            .collect()
    }

    /// SIGKILLs every HAProxy process of load balancer `i`; returns how many.
    pub fn kill_haproxy(&self, i: usize) -> usize {
        let pids = self.lb_pids(i, "haproxy");
        for pid in &pids {
            send_signal(*pid, libc::SIGKILL);
        }
        pids.len()
    }

    /// Starts HAProxy again inside load balancer `i`'s PID namespace.
    pub fn start_haproxy(&self, i: usize) -> Result<()> {
        self.lb_sh(i, &self.haproxy_command(i))
    }

    /// Kills every process of load balancer `i` at once, as a crash would.
    pub fn crash_lb(&mut self, i: usize) {
        self.lb[i].kill_all();
        self.lbs[i] = None;
    }

    /// Takes load balancer `i`'s links down (or up again): isolated from
    /// its peer, the API and the clients, but still running.
    pub fn isolate_lb(&self, i: usize, isolated: bool) -> Result<()> {
        let state = if isolated { "down" } else { "up" };
        for link in ["pub0", "priv0"] {
            self.lb[i].exec(&["ip", "link", "set", link, state])?;
        }
        if !isolated {
            // Routes through a link vanish with it.
            let _ = self.lb[i].exec(&[
                "ip",
                "route",
                "replace",
                "default",
                "via",
                &ROUTER_PUBLIC.to_string(),
            ]);
        }
        Ok(())
    }

    /// The simulator's state (holder, actions, call counts).
    pub fn sim_state(&self) -> Result<serde_json::Value> {
        let text =
            std::fs::read_to_string(self.dir.join("sim.json")).context("simulator state file")?;
        Ok(serde_json::from_str(&text)?)
    }

    /// The droplet currently holding the floating IP.
    pub fn holder(&self) -> Option<u64> {
        self.holder_of(FLOATING_IP.into())
    }

    /// The droplet currently holding `ip` (the floating IP, or the reserved
    /// IPv6 of a dual-stack lab).
    pub fn holder_of(&self, ip: IpAddr) -> Option<u64> {
        let state = self.sim_state().ok()?;
        state["floating_ips"]
            .as_array()?
            .iter()
            .find(|f| f["ip"] == ip.to_string())?["holder"]
            .as_u64()
    }

    /// Whether load balancer `i` holds [`VIP6`] on `priv0` (with
    /// [`LabOptions::vrrp_ipv6`]).
    pub fn holds_vip6(&self, i: usize) -> Result<bool> {
        let out = self.lb[i].ip(&["-6", "addr", "show", "dev", "priv0"])?;
        Ok(out.contains(&format!("inet6 {VIP6}/")))
    }

    /// `ip -6 route show RESERVED_IPV6/128` in the router: where the
    /// simulator sends the reserved IPv6 now.
    pub fn reserved_ipv6_route(&self) -> Result<String> {
        Ok(self
            .router
            .ip(&["-6", "route", "show", &format!("{RESERVED_IPV6}/128")])?
            .trim()
            .to_owned())
    }

    /// Assign actions so far: (droplet id, requested at, completed at), as
    /// times since the lab started.
    pub fn assigns(&self) -> Vec<(u64, Duration, Option<Duration>)> {
        let Ok(state) = self.sim_state() else {
            return Vec::new();
        };
        let offset = self
            .sim_started_wall
            .duration_since(self.started_wall)
            .unwrap_or_default();
        state["actions"]
            .as_array()
            .map(|actions| {
                actions
                    .iter()
                    .filter(|a| a["type"] == "assign_ip" || a["type"] == "assign")
                    .filter(|a| {
                        a["ip"]
                            .as_str()
                            .is_none_or(|ip| ip == FLOATING_IP.to_string())
                    })
                    .filter_map(|a| {
                        Some((
                            a["droplet_id"].as_u64()?,
                            offset + Duration::from_millis(a["requested_at_ms"].as_u64()?),
                            a["completed_at_ms"]
                                .as_u64()
                                .map(|ms| offset + Duration::from_millis(ms)),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Injects API faults (`{"fail_5xx": 3}` and so on) into the simulator.
    pub fn sim_faults(&self, faults: &str) -> Result<()> {
        self.sim_post("/_sim/faults", faults)
    }

    fn sim_post(&self, path: &str, body: &str) -> Result<()> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        // Both control calls are idempotent, so a call a loaded machine let
        // time out is made again rather than failing the test that made it.
        let post = || {
            let request = request.clone();
            in_netns(self.router.name(), move || -> Result<String> {
                http_request(
                    SocketAddr::from((ROUTER_PUBLIC, API_PORT)),
                    &request,
                    Duration::from_secs(3),
                )
            })?
        };
        let reply = post().or_else(|first| {
            eprintln!("lab: simulator {path} failed ({first:#}); trying again");
            post()
        })?;
        if !reply.starts_with("HTTP/1.1 2") {
            bail!(
                "simulator {path}: {}",
                reply.lines().next().unwrap_or_default()
            );
        }
        Ok(())
    }

    /// The simulator's request log (`GET /_sim/requests`, oldest first).
    pub fn sim_requests(&self) -> Result<Vec<serde_json::Value>> {
        Ok(serde_json::from_value(
            self.sim_get("/_sim/requests", Duration::from_secs(5))?,
        )?)
    }

    /// `GET path` at the simulator from the router namespace; the parsed
    /// JSON body.
    pub(crate) fn sim_get(&self, path: &str, timeout: Duration) -> Result<serde_json::Value> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n\r\n");
        let reply = in_netns(self.router.name(), move || {
            http_request(
                SocketAddr::from((ROUTER_PUBLIC, API_PORT)),
                &request,
                timeout,
            )
        })??;
        let body = reply
            .split_once("\r\n\r\n")
            .map(|(_, body)| body)
            .context("simulator reply without a body")?;
        Ok(serde_json::from_str(body)?)
    }

    /// Closes every open API connection at the simulator (`POST
    /// /_sim/close_connections`), as DigitalOcean's side drops idle ones:
    /// each client's next request opens a new one. The lab's own control
    /// connection is one of them, so its answer may be cut short.
    pub fn close_api_connections(&self) -> Result<()> {
        let request = "POST /_sim/close_connections HTTP/1.1\r\nHost: sim\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let reply = in_netns(self.router.name(), move || {
            http_request(
                SocketAddr::from((ROUTER_PUBLIC, API_PORT)),
                request,
                Duration::from_secs(2),
            )
        })?;
        match reply {
            Ok(reply) if !reply.is_empty() && !reply.starts_with("HTTP/1.1 2") => bail!(
                "simulator /_sim/close_connections: {}",
                reply.lines().next().unwrap_or_default()
            ),
            // Answered, or closed with the others before it could answer.
            _ => Ok(()),
        }
    }

    /// Clears every injected fault (`POST /_sim/reset_faults`).
    pub fn reset_faults(&self) -> Result<()> {
        self.sim_post("/_sim/reset_faults", "")
    }

    /// The state transitions lbha on load balancer `i` logged.
    pub fn transitions(&self, i: usize) -> Vec<Transition> {
        match self.stack_of(i) {
            Stack::Keepalived => keepalived_transitions(&self.lb_log(i), self.started_wall),
            Stack::Lbha | Stack::LbhaKeepalivedConf => {
                parse_transitions(&self.lb_log(i), self.started_wall)
            }
        }
    }

    /// Starts fetching `http://FLOATING_IP/` from the client every `every`.
    pub fn start_client(&self, every: Duration) -> Client {
        Client::start(self.client.name(), self.started, every, FLOATING_IP.into())
    }

    /// Starts fetching `http://[RESERVED_IPV6]/` from the client every
    /// `every` (dual-stack labs).
    pub fn start_client_v6(&self, every: Duration) -> Client {
        Client::start(
            self.client.name(),
            self.started,
            every,
            RESERVED_IPV6.into(),
        )
    }

    /// Assign actions on the reserved IPv6, as [`Lab::assigns`] gives them
    /// for the floating IP.
    pub fn assigns_v6(&self) -> Vec<(u64, Duration, Option<Duration>)> {
        let Ok(state) = self.sim_state() else {
            return Vec::new();
        };
        let offset = self
            .sim_started_wall
            .duration_since(self.started_wall)
            .unwrap_or_default();
        state["actions"]
            .as_array()
            .map(|actions| {
                actions
                    .iter()
                    .filter(|a| a["type"] == "assign_ip" || a["type"] == "assign")
                    .filter(|a| a["ip"] == RESERVED_IPV6.to_string())
                    .filter_map(|a| {
                        Some((
                            a["droplet_id"].as_u64()?,
                            offset + Duration::from_millis(a["requested_at_ms"].as_u64()?),
                            a["completed_at_ms"]
                                .as_u64()
                                .map(|ms| offset + Duration::from_millis(ms)),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn since_start(&self) -> Duration {
        self.started.elapsed()
    }

    /// What the lab was started with.
    pub fn options(&self) -> &LabOptions {
        &self.opts
    }

    /// `lbha-agent status --json` of load balancer `i`'s agent.
    pub fn status_json(&self, i: usize) -> Result<serde_json::Value> {
        let out = Command::new(&self.bins.agent)
            .args(["status", "--json", "--socket"])
            .arg(self.status_socket(i))
            .stdin(Stdio::null())
            .output()
            .context("running lbha-agent status")?;
        if !out.status.success() {
            bail!(
                "lbha-agent status: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Waits (up to `timeout`) until load balancer `i`'s heartbeat knows its
    /// peer's droplet id, which a handover needs (the peer sends it once
    /// its metadata look-up answered).
    pub fn wait_peer_droplet(&self, i: usize, timeout: Duration) -> bool {
        let peer = droplet_id(1 - i);
        wait_for(timeout, || {
            self.status_json(i).is_ok_and(|s| {
                s["heartbeat"]["peers"]
                    .as_array()
                    .is_some_and(|peers| peers.iter().any(|p| p["droplet_id"] == peer))
            })
        })
    }

    /// Runs `lbha-agent handover ARGS` against load balancer `i`'s agent
    /// (its status socket), recording each line as it comes; bounded by
    /// 30 s.
    pub fn handover(&self, i: usize, args: &[&str]) -> Result<HandoverRun> {
        let mut child = Command::new(&self.bins.agent)
            .arg("handover")
            .args(args)
            .arg("--socket")
            .arg(self.status_socket(i))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .context("running lbha-agent handover")?;
        let stdout = child.stdout.take().context("handover stdout")?;
        let started = self.started;
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
                .map(|line| (started.elapsed(), line))
                .collect::<Vec<_>>()
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("lbha-agent handover did not end within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut lines = reader.join().unwrap_or_default();
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        let at = self.started.elapsed();
        lines.extend(stderr.lines().map(|l| (at, l.to_owned())));
        Ok(HandoverRun {
            ok: status.success(),
            lines,
        })
    }
}

/// One HTTP/1.x exchange over a fresh connection; returns the raw reply.
pub fn http_request(addr: SocketAddr, request: &str, timeout: Duration) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(request.as_bytes())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

/// The result of one client request.
#[derive(Clone, Debug)]
pub struct Request {
    /// When it was sent, since the lab started.
    pub at: Duration,
    /// When its answer (or failure) came, since the lab started.
    pub ended: Duration,
    /// The web server that answered, or why it failed.
    pub result: Result<String, String>,
}

/// A client fetching the floating IP in a loop, in the client namespace.
pub struct Client {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Request>>>,
    thread: Option<JoinHandle<()>>,
}

impl Client {
    fn start(netns: &str, started: Instant, every: Duration, target: IpAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s, l, ns) = (stop.clone(), log.clone(), netns.to_owned());
        let thread = std::thread::spawn(move || {
            if let Err(e) = enter(&ns) {
                l.lock().unwrap().push(Request {
                    at: started.elapsed(),
                    ended: started.elapsed(),
                    result: Err(format!("entering the client namespace: {e}")),
                });
                return;
            }
            while !s.load(Ordering::SeqCst) {
                let at = started.elapsed();
                let result = http_request(
                    SocketAddr::new(target, 80),
                    "GET / HTTP/1.0\r\nHost: lab\r\n\r\n",
                    Duration::from_millis(400),
                )
                .map_err(|e| e.to_string())
                .and_then(|reply| {
                    if reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200") {
                        Ok(reply.lines().last().unwrap_or_default().trim().to_owned())
                    } else {
                        Err(reply.lines().next().unwrap_or("empty reply").to_owned())
                    }
                });
                let ended = started.elapsed();
                l.lock().unwrap().push(Request { at, ended, result });
                let spent = started.elapsed().checked_sub(at).unwrap();
                std::thread::sleep(every.saturating_sub(spent));
            }
        });
        Self {
            stop,
            log,
            thread: Some(thread),
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    /// Periods in which requests failed: (first failure, first success
    /// after it or None, failures).
    pub fn outages(&self) -> Vec<(Duration, Option<Duration>, usize)> {
        let mut outages = Vec::new();
        let mut current: Option<(Duration, usize)> = None;
        for r in self.requests() {
            match (&r.result, &mut current) {
                (Err(_), None) => current = Some((r.at, 1)),
                (Err(_), Some((_, n))) => *n += 1,
                (Ok(_), Some((start, n))) => {
                    outages.push((*start, Some(r.at), *n));
                    current = None;
                }
                (Ok(_), None) => {}
            }
        }
        if let Some((start, n)) = current {
            outages.push((start, None, n));
        }
        outages
    }
}

impl Client {
    /// Stops sending; the log stays readable.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How far a route move may be from a request's span and still count as
/// inside it: the simulator records action times to the millisecond.
pub const ROUTE_MOVE_SLACK: Duration = Duration::from_millis(5);

/// A client's failed requests split in two: those in flight at the
/// instant a route moved (`moves`: when the simulator moved it; their
/// connection was open to the old holder, which cannot answer for it any
/// more), and the others: an outage.
pub fn split_failures(requests: &[Request], moves: &[Duration]) -> (Vec<Request>, Vec<Request>) {
    requests
        .iter()
        .filter(|r| r.result.is_err())
        .cloned()
        .partition(|r| {
            moves.iter().any(|&m| {
                r.at.saturating_sub(ROUTE_MOVE_SLACK) <= m && m <= r.ended + ROUTE_MOVE_SLACK
            })
        })
}

/// What `lbha-agent handover` printed, each line with when it came.
#[derive(Clone, Debug)]
pub struct HandoverRun {
    pub ok: bool,
    pub lines: Vec<(Duration, String)>,
}

/// Waits up to `timeout` for `condition`, checking every 20 ms.
pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(at_ms: u64, ended_ms: u64, ok: bool) -> Request {
        Request {
            at: Duration::from_millis(at_ms),
            ended: Duration::from_millis(ended_ms),
            result: if ok {
                Ok("web1".into())
            } else {
                Err("reset".into())
            },
        }
    }

    #[test]
    fn a_failure_spanning_a_route_move_is_in_flight_and_the_others_are_an_outage() {
        let requests = [
            request(0, 2, true),
            request(100, 104, false), // in flight at the move at 102 ms
            request(150, 151, false), // after it: an outage
            request(196, 198, false), // ends 2 ms before the move at 200 ms: slack
            request(300, 301, true),
        ];
        let moves = [Duration::from_millis(102), Duration::from_millis(200)];
        let (in_flight, other) = split_failures(&requests, &moves);
        let at = |v: &[Request]| v.iter().map(|r| r.at.as_millis()).collect::<Vec<_>>();
        assert_eq!(at(&in_flight), [100, 196]);
        assert_eq!(at(&other), [150]);
        // Successes are never failures.
        assert!(split_failures(&requests[..1], &moves).0.is_empty());
    }
}
