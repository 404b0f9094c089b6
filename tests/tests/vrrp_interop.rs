//! lbha's VRRP daemon (`lbha-agent --keepalived-conf`) in real elections:
//! against keepalived 2.2 in both roles and both protocol versions, against
//! itself, and in a group of three.
//!
//! Every daemon runs the same `notify` script, which appends each state it
//! enters to a file of its own: the state a daemon believes it is in is read
//! from there, and the VIP must be on the master's interface only. Each
//! scenario waits for a steady state (exactly one master, the highest
//! priority), kills the master (SIGKILL: the survivor must take over within
//! Master_Down_Interval; SIGTERM: the master resigns with a priority-0 advert
//! and the survivor must take over within Skew_Time), restarts it and
//! expects it to preempt, and does both in turn.
//!
//! Takeover times are measured from the kill to the survivor's notify script
//! (its timestamp, so polling does not inflate it) and printed as `TIMING`
//! lines (`cargo test ... -- --nocapture` shows them).
//!
//! Each test has its own namespaces and its own `10.202.N.0/24`.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant, SystemTime},
};

use lbha_tests::{
    Agent, Keepalived, KeepalivedConfig, Netns, NotifyScript, StateChange, StateLog, VrrpInstance,
    VrrpState, WAIT, bridge, bridge_port, require_root, veth_pair,
};

const INSTANCE: &str = "VI_1";
const VRID: u8 = 60;
/// Allowance for scheduling, notify-script start-up and a loaded 2-core
/// machine on top of the RFC timers.
const MARGIN: Duration = Duration::from_millis(300);
/// How long a steady state must hold before it counts.
const SETTLE_INTERVALS: u32 = 3;

/// What the daemons speak.
#[derive(Clone, Copy, Debug)]
struct Proto {
    version: u8,
    /// `advert_int` as keepalived.conf writes it.
    advert_int: &'static str,
    interval: Duration,
    auth_pass: Option<&'static str>,
    /// `auth_pass` is the key of keepalived's IPsec AH, not a password in
    /// clear.
    ah: bool,
}

/// VRRPv2 with a password: whole-second intervals.
const V2: Proto = Proto {
    version: 2,
    advert_int: "1",
    interval: Duration::from_secs(1),
    auth_pass: Some("lbha-v2p"),
    ah: false,
};

/// VRRPv2 with keepalived's `auth_type AH`.
const V2_AH: Proto = Proto {
    version: 2,
    advert_int: "1",
    interval: Duration::from_secs(1),
    auth_pass: Some("lbha-ah1"),
    ah: true,
};

/// VRRPv3 with a fast interval, to keep the tests short.
const V3: Proto = Proto {
    version: 3,
    advert_int: "0.1",
    interval: Duration::from_millis(100),
    auth_pass: None,
    ah: false,
};

impl Proto {
    /// Skew_Time for `priority` (RFC 3768 / RFC 5798; v2 has whole seconds).
    fn skew(&self, priority: u8) -> Duration {
        let weight = 256 - u32::from(priority);
        match self.version {
            2 => Duration::from_secs(1) * weight / 256,
            _ => self.interval * weight / 256,
        }
    }

    /// Master_Down_Interval for `priority`.
    fn master_down(&self, priority: u8) -> Duration {
        3 * self.interval + self.skew(priority)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Impl {
    Keepalived,
    Lbha,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    /// A crash: no resignation.
    Sigkill,
    /// A clean stop: a master resigns with a priority-0 advert.
    Sigterm,
}

enum Daemon {
    Keepalived(Keepalived),
    Agent(Agent),
}

/// One router: a namespace, its configuration, and its daemon when running.
struct Node {
    // Field order matters: the daemon goes before its namespace.
    daemon: Option<Daemon>,
    /// Whether the daemon runs (a stopped one is kept for its log).
    running: bool,
    /// The logs of the daemons this node ran before the current one.
    past_logs: Vec<String>,
    name: String,
    kind: Impl,
    priority: u8,
    interface: String,
    config: String,
    states: StateLog,
    ns: Netns,
}

impl Node {
    fn label(&self) -> String {
        let kind = match self.kind {
            Impl::Keepalived => "keepalived",
            Impl::Lbha => "lbha",
        };
        format!("{} ({kind}, priority {})", self.name, self.priority)
    }

    fn start(&mut self) {
        if let Some(old) = self.daemon.take() {
            self.past_logs.push(log_of(&old));
        }
        let daemon = match self.kind {
            Impl::Keepalived => Daemon::Keepalived(
                Keepalived::start(&self.ns, &self.config)
                    .unwrap_or_else(|e| panic!("starting {}: {e:#}", self.label())),
            ),
            Impl::Lbha => {
                let mut agent = Agent::start_with_status(&self.ns, &self.config)
                    .unwrap_or_else(|e| panic!("starting {}: {e:#}", self.label()));
                agent
                    .wait_for_log("interface ready", WAIT)
                    .unwrap_or_else(|e| panic!("{}: {e:#}", self.label()));
                Daemon::Agent(agent)
            }
        };
        self.daemon = Some(daemon);
        self.running = true;
    }

    fn kill(&mut self, how: Kill) {
        let grace = Duration::from_secs(5);
        match (self.daemon.as_mut(), how) {
            (Some(Daemon::Keepalived(k)), Kill::Sigkill) => k.kill(),
            (Some(Daemon::Keepalived(k)), Kill::Sigterm) => {
                k.stop(grace).expect("stopping keepalived");
            }
            (Some(Daemon::Agent(a)), Kill::Sigkill) => {
                a.kill().expect("killing lbha-agent");
            }
            (Some(Daemon::Agent(a)), Kill::Sigterm) => {
                let status = a.stop(grace).expect("stopping lbha-agent");
                assert!(
                    status.success(),
                    "lbha-agent exited with {status} on SIGTERM; its log:\n{}",
                    a.log()
                );
            }
            (None, _) => panic!("{} is not running", self.label()),
        }
        self.running = false;
    }

    /// The current (or last) daemon's log.
    fn log(&self) -> String {
        self.daemon.as_ref().map(log_of).unwrap_or_default()
    }

    fn agent(&self) -> Option<&Agent> {
        match &self.daemon {
            Some(Daemon::Agent(a)) => Some(a),
            _ => None,
        }
    }

    /// Whether the running daemon has logged entering MASTER (its log
    /// starts afresh with every start).
    fn entered_master(&self) -> bool {
        match &self.daemon {
            Some(Daemon::Keepalived(k)) => k
                .log()
                .contains(&format!("({INSTANCE}) Entering MASTER STATE")),
            Some(Daemon::Agent(a)) => a.transitions().iter().any(|t| t.to == "MASTER"),
            None => false,
        }
    }

    fn has_vip(&self, vip: Ipv4Addr) -> bool {
        self.ns
            .ipv4_addresses(&self.interface)
            .expect("listing addresses")
            .contains(&format!("{vip}/32"))
    }
}

/// Routers on one link, ordered by decreasing priority: node 0 must be
/// master whenever it runs.
struct Group {
    test: &'static str,
    proto: Proto,
    vip: Ipv4Addr,
    nodes: Vec<Node>,
    // Dropped after the nodes: the bridge namespace, then the scripts.
    _switch: Option<Netns>,
    _scripts: NotifyScript,
}

impl Group {
    /// Two routers joined by a veth pair on `10.202.subnet.0/24`.
    fn pair(test: &'static str, subnet: u8, proto: Proto, nodes: [(Impl, u8); 2]) -> Self {
        Self::build(test, subnet, proto, &nodes, false)
    }

    /// Routers plugged into one bridge, in a namespace of its own.
    fn bridged(test: &'static str, subnet: u8, proto: Proto, nodes: &[(Impl, u8)]) -> Self {
        Self::build(test, subnet, proto, nodes, true)
    }

    fn build(
        test: &'static str,
        subnet: u8,
        proto: Proto,
        specs: &[(Impl, u8)],
        bridged: bool,
    ) -> Self {
        assert!(
            specs.windows(2).all(|w| w[0].1 > w[1].1),
            "nodes must come by decreasing priority"
        );
        let scripts = NotifyScript::new().expect("notify script");
        let addr = |i: usize| Ipv4Addr::new(10, 202, subnet, i as u8 + 1);
        let vip = Ipv4Addr::new(10, 202, subnet, 100);
        let names: Vec<String> = specs
            .iter()
            .enumerate()
            .map(|(i, (kind, _))| match kind {
                Impl::Keepalived => format!("ka{}", i + 1),
                Impl::Lbha => format!("lb{}", i + 1),
            })
            .collect();
        let namespaces: Vec<Netns> = names
            .iter()
            .map(|name| Netns::new(name).expect("namespace"))
            .collect();
        let interface = |i: usize| format!("v-{}", names[i]);
        let switch = if bridged {
            let switch = Netns::new("sw").expect("switch namespace");
            bridge(&switch, "br0").expect("bridge");
            for (i, ns) in namespaces.iter().enumerate() {
                bridge_port(
                    &switch,
                    "br0",
                    &format!("p-{}", names[i]),
                    ns,
                    &interface(i),
                    &format!("{}/24", addr(i)),
                )
                .expect("bridge port");
            }
            Some(switch)
        } else {
            assert_eq!(specs.len(), 2, "a veth pair joins two routers");
            veth_pair(
                &namespaces[0],
                &interface(0),
                &format!("{}/24", addr(0)),
                &namespaces[1],
                &interface(1),
                &format!("{}/24", addr(1)),
            )
            .expect("veth pair");
            None
        };

        let nodes = namespaces
            .into_iter()
            .enumerate()
            .map(|(i, ns)| {
                let (kind, priority) = specs[i];
                let states = scripts.state_log(&names[i]);
                let mut instance = VrrpInstance::unicast(INSTANCE, interface(i), VRID, addr(i))
                    .priority(priority)
                    // With AH both daemons start a non-owner BACKUP
                    // whatever `state` says (and warn about MASTER).
                    .state(if i == 0 && !proto.ah {
                        VrrpState::Master
                    } else {
                        VrrpState::Backup
                    })
                    .version(proto.version)
                    .advert_int(proto.advert_int)
                    .virtual_ipaddress(format!("{vip}/32"))
                    .extra(states.notify_line());
                for peer in (0..specs.len()).filter(|&p| p != i) {
                    instance = instance.unicast_peer(addr(peer));
                }
                match proto.auth_pass {
                    Some(pass) if proto.ah => instance = instance.auth_ah(pass),
                    Some(pass) => instance = instance.auth_pass(pass),
                    None => {}
                }
                let config = KeepalivedConfig::new()
                    .global_def("script_user root")
                    .global_def("enable_script_security")
                    .global_def(format!("vrrp_version {}", proto.version))
                    .instance(instance)
                    .render();
                Node {
                    daemon: None,
                    running: false,
                    past_logs: Vec::new(),
                    name: names[i].clone(),
                    kind,
                    priority,
                    interface: interface(i),
                    config,
                    states,
                    ns,
                }
            })
            .collect();
        Self {
            test,
            proto,
            vip,
            nodes,
            _switch: switch,
            _scripts: scripts,
        }
    }

    /// Every node's reported states, the logs of daemons already replaced
    /// (the current ones print theirs when dropped during a panic), and the
    /// agents' transitions, for failure messages.
    fn report(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            out.push_str(&format!(
                "{}: states {:?}\n",
                node.label(),
                node.states
                    .changes()
                    .iter()
                    .map(|c| c.state.as_str())
                    .collect::<Vec<_>>()
            ));
            for (i, log) in node.past_logs.iter().enumerate() {
                out.push_str(&format!("  ---- log of run {} ----\n{log}", i + 1));
            }
            if let Some(agent) = node.agent() {
                out.push_str("  current run's transitions:\n");
                for t in agent.transitions() {
                    out.push_str(&format!("    {}\n", t.line));
                }
            }
        }
        out
    }

    fn timing(&self, what: &str, took: Duration, bound: Duration) {
        eprintln!(
            "TIMING {}: {what}: {:.0} ms (bound {:.0} ms)",
            self.test,
            took.as_secs_f64() * 1000.0,
            bound.as_secs_f64() * 1000.0
        );
    }

    fn start_all(&mut self) {
        for node in &mut self.nodes {
            node.start();
        }
    }

    /// The states each running node reports, `None` for a stopped one.
    fn current(&self) -> Vec<Option<String>> {
        self.nodes
            .iter()
            .map(|n| n.running.then(|| n.states.current()).flatten())
            .collect()
    }

    /// Waits until `master` reports MASTER and every other running node
    /// BACKUP, checks that this holds for a few advert intervals, that only
    /// the master holds the VIP, and that the agents' logs agree with their
    /// notify scripts.
    fn wait_steady(&self, master: usize, context: &str) {
        self.wait_steady_for(
            master,
            context,
            (self.proto.interval * SETTLE_INTERVALS).max(Duration::from_millis(500)),
        );
    }

    /// Waits for `master` as the only Master, then checks the state holds
    /// for `hold`.
    fn wait_steady_for(&self, master: usize, context: &str, hold: Duration) {
        let expected: Vec<Option<String>> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                n.running
                    .then(|| if i == master { "MASTER" } else { "BACKUP" }.to_string())
            })
            .collect();
        let deadline = Instant::now() + WAIT;
        while self.current() != expected {
            assert!(
                Instant::now() < deadline,
                "{context}: no steady state with {} as master within {WAIT:?}: \
                 states {:?}, expected {expected:?}\n{}",
                self.nodes[master].label(),
                self.current(),
                self.report()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let counts: Vec<usize> = self.nodes.iter().map(|n| n.states.count()).collect();
        std::thread::sleep(hold);
        let after: Vec<usize> = self.nodes.iter().map(|n| n.states.count()).collect();
        assert_eq!(
            (self.current(), &after),
            (expected, &counts),
            "{context}: the steady state did not hold\n{}",
            self.report()
        );
        let masters = self
            .current()
            .iter()
            .filter(|s| s.as_deref() == Some("MASTER"))
            .count();
        assert_eq!(masters, 1, "{context}: {}", self.report());

        for (i, node) in self.nodes.iter().enumerate() {
            if !node.running {
                continue;
            }
            assert_eq!(
                node.has_vip(self.vip),
                i == master,
                "{context}: {} {} the VIP {}; addresses {:?}\n{}",
                node.label(),
                if i == master { "lacks" } else { "holds" },
                self.vip,
                node.ns.ipv4_addresses(&node.interface),
                self.report()
            );
            if let Some(agent) = node.agent() {
                let last = agent.transitions().pop().map(|t| t.to);
                assert_eq!(
                    last,
                    node.states.current(),
                    "{context}: {}'s log and notify script disagree\n{}",
                    node.label(),
                    agent.log()
                );
            }
        }
    }

    /// Stops node 0 (the master) and checks that node 1 takes over within
    /// the RFC bound while every other node stays BACKUP.
    fn take_over(&mut self, how: Kill) {
        let context = format!("{} of {}", kill_name(how), self.nodes[0].label());
        let counts: Vec<usize> = self.nodes.iter().map(|n| n.states.count()).collect();
        let transitions: Vec<usize> = self
            .nodes
            .iter()
            .map(|n| n.agent().map_or(0, |a| a.transitions().len()))
            .collect();
        let survivor_log = self.nodes[1].log().len();
        let killed_at = SystemTime::now();
        self.nodes[0].kill(how);
        if how == Kill::Sigterm {
            assert!(
                !self.nodes[0].has_vip(self.vip),
                "{context}: {} left the VIP {} on its interface",
                self.nodes[0].label(),
                self.vip
            );
        }
        let survivor = &self.nodes[1];
        let change: StateChange = survivor
            .states
            .wait_for("MASTER", counts[1], WAIT)
            .unwrap_or_else(|e| panic!("{context}: {e:#}\n{}", self.report()));
        let took = change.after(killed_at);

        let master_down = self.proto.master_down(survivor.priority);
        let skew = self.proto.skew(survivor.priority);
        let (bound, reason) = match how {
            Kill::Sigkill => (master_down + MARGIN, "master down"),
            Kill::Sigterm => (skew + MARGIN, "master resigned"),
        };
        self.timing(
            &format!("{context}: {} takes over", survivor.label()),
            took,
            bound,
        );
        assert!(
            took <= bound,
            "{context}: {} took over after {took:?}, beyond {bound:?}\n{}",
            survivor.label(),
            self.report()
        );
        if how == Kill::Sigkill {
            // The last advert came at most one interval before the kill: an
            // earlier takeover means the survivor did not wait for the
            // master to be down.
            let earliest = master_down.saturating_sub(self.proto.interval + MARGIN / 6);
            assert!(
                took >= earliest,
                "{context}: {} took over after only {took:?} (Master_Down_Interval {master_down:?})\n{}",
                survivor.label(),
                self.report()
            );
        }
        // Why it took over, as the survivor itself tells it.
        match &survivor.daemon {
            Some(Daemon::Agent(agent)) => {
                let t = agent
                    .transitions()
                    .into_iter()
                    .skip(transitions[1])
                    .find(|t| t.to == "MASTER")
                    .expect("the log has the transition the notify script reported");
                assert_eq!(t.reason, reason, "{context}: {}", t.line);
            }
            Some(Daemon::Keepalived(k)) => {
                let needle = match how {
                    Kill::Sigkill => "Receive advertisement timeout",
                    Kill::Sigterm => "Backup received priority 0 advertisement",
                };
                assert!(
                    k.log()[survivor_log..].contains(needle),
                    "{context}: keepalived did not log {needle:?}:\n{}",
                    k.log()
                );
            }
            None => unreachable!(),
        }

        self.wait_steady(1, &context);
        for (i, node) in self.nodes.iter().enumerate().skip(2) {
            assert_eq!(
                node.states.count(),
                counts[i],
                "{context}: {} changed state (it should have stayed BACKUP)\n{}",
                node.label(),
                self.report()
            );
        }
    }

    /// Restarts node 0 and checks that it preempts: MASTER again, node 1
    /// back to BACKUP.
    fn fail_back(&mut self) {
        let context = format!("restart of {}", self.nodes[0].label());
        let counts: Vec<usize> = self.nodes.iter().map(|n| n.states.count()).collect();
        let started_at = SystemTime::now();
        self.nodes[0].start();
        let node = &self.nodes[0];
        // Until it preempts, the restarted router is a backup and must not
        // hold the VIP, even one a crash left on its interface.
        let backup = node
            .states
            .wait_for("BACKUP", counts[0], WAIT)
            .unwrap_or_else(|e| panic!("{context}: {e:#}\n{}", self.report()));
        let holds_vip = node.has_vip(self.vip);
        // Daemons log entering MASTER before they add the VIP.
        if !node.entered_master() {
            assert!(
                !holds_vip,
                "{context}: {} holds the VIP {} in BACKUP (after {:?}), as does the master {}\n{}",
                node.label(),
                self.vip,
                backup.after(started_at),
                self.nodes[1].label(),
                self.report()
            );
        }
        let master = node
            .states
            .wait_for("MASTER", counts[0], WAIT)
            .unwrap_or_else(|e| panic!("{context}: {e:#}\n{}", self.report()));
        // A backup ignores a lower-priority master's adverts, so it takes
        // over when its Master_Down_Interval runs out.
        let took = master.after(backup.at);
        let bound = self.proto.master_down(node.priority) + MARGIN;
        self.timing(
            &format!(
                "{context}: preempts after entering BACKUP (start-up took {:.0} ms more)",
                backup.after(started_at).as_secs_f64() * 1000.0
            ),
            took,
            bound,
        );
        assert!(
            took <= bound,
            "{context}: {} preempted {took:?} after entering BACKUP, beyond {bound:?}\n{}",
            node.label(),
            self.report()
        );
        self.wait_steady(0, &context);
        let survivor = &self.nodes[1];
        let back = survivor
            .states
            .wait_for("BACKUP", counts[1], Duration::ZERO)
            .unwrap_or_else(|e| panic!("{context}: {e:#}\n{}", self.report()));
        assert!(
            back.at >= master.at.checked_sub(MARGIN).unwrap_or(master.at),
            "{context}: {} went BACKUP before {} became MASTER\n{}",
            survivor.label(),
            node.label(),
            self.report()
        );
        if let Some(agent) = survivor.agent() {
            let t = agent.transitions().pop().expect("transitions");
            assert_eq!(t.reason, "higher priority master", "{}", t.line);
        }
    }

    /// lbha must have had nothing to complain about: every advert sent,
    /// every address added and removed, every notify script run.
    fn check_agent_logs(&self) {
        for node in self.nodes.iter().filter(|n| n.kind == Impl::Lbha) {
            for log in node.past_logs.iter().cloned().chain([node.log()]) {
                let complaints: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                    // Kernels without XDP on veth: the raw socket is fine.
                    .filter(|l| !l.contains("XDP unavailable"))
                    .collect();
                assert!(
                    complaints.is_empty(),
                    "{} logged warnings or errors:\n{}",
                    node.label(),
                    complaints.join("\n")
                );
            }
        }
    }

    /// The whole scenario: steady state, crash and failback, clean stop and
    /// failback.
    fn run(mut self) {
        self.start_all();
        // Longer than a backup's sleep past its deadlines (the kernel keeps a
        // steady master's adverts in its map; the backup reads them there
        // at a backstop of one second): a backup that did not would take
        // over here.
        self.wait_steady_for(0, "start-up", Duration::from_millis(2500));
        for how in [Kill::Sigkill, Kill::Sigterm] {
            self.take_over(how);
            self.fail_back();
        }
        self.check_agent_logs();
    }
}

fn log_of(daemon: &Daemon) -> String {
    match daemon {
        Daemon::Keepalived(k) => k.log(),
        Daemon::Agent(a) => a.log(),
    }
}

fn kill_name(how: Kill) -> &'static str {
    match how {
        Kill::Sigkill => "SIGKILL",
        Kill::Sigterm => "SIGTERM",
    }
}

#[test]
fn keepalived_master_lbha_backup_v2() {
    if !require_root() {
        return;
    }
    Group::pair(
        "keepalived_master_lbha_backup_v2",
        1,
        V2,
        [(Impl::Keepalived, 150), (Impl::Lbha, 100)],
    )
    .run();
}

#[test]
fn lbha_master_keepalived_backup_v2() {
    if !require_root() {
        return;
    }
    Group::pair(
        "lbha_master_keepalived_backup_v2",
        2,
        V2,
        [(Impl::Lbha, 150), (Impl::Keepalived, 100)],
    )
    .run();
}

/// keepalived's `auth_type AH` both ways: each side checks the other's
/// HMAC-MD5 ICV and sequence numbers, and a restarted node (numbering
/// from 1 again) learns the survivor's numbers as BACKUP before it
/// preempts. keepalived starts BACKUP with AH (its `state MASTER` is
/// cleared), and so does lbha.
#[test]
fn keepalived_master_lbha_backup_v2_ah() {
    if !require_root() {
        return;
    }
    Group::pair(
        "keepalived_master_lbha_backup_v2_ah",
        12,
        V2_AH,
        [(Impl::Keepalived, 150), (Impl::Lbha, 100)],
    )
    .run();
}

#[test]
fn lbha_master_keepalived_backup_v2_ah() {
    if !require_root() {
        return;
    }
    Group::pair(
        "lbha_master_keepalived_backup_v2_ah",
        13,
        V2_AH,
        [(Impl::Lbha, 150), (Impl::Keepalived, 100)],
    )
    .run();
}

/// AH with different passwords: neither accepts the other's adverts. lbha
/// (the lower priority) would go BACKUP for keepalived's adverts had it
/// accepted them, and stays MASTER counting them as bad ICVs; keepalived
/// logs lbha's as invalid. (`lower_prio_no_advert` keeps keepalived
/// sending: without it a keepalived Master restarts its advert timer on
/// every packet it reads, and lbha's, one a second, would silence it.)
#[test]
fn ah_with_another_password_is_refused_both_ways() {
    if !require_root() {
        return;
    }
    let group = Group::pair(
        "ah_with_another_password_is_refused_both_ways",
        14,
        V2_AH,
        [(Impl::Keepalived, 150), (Impl::Lbha, 100)],
    );
    let Group { mut nodes, .. } = group;
    let keepalived = nodes[0]
        .config
        .replace("auth_pass lbha-ah1", "auth_pass lbha-ah2")
        .replace(
            "    advert_int 1\n",
            "    advert_int 1\n    lower_prio_no_advert\n",
        );
    assert_ne!(keepalived, nodes[0].config);
    nodes[0].config = keepalived;
    nodes[0].start();
    let lbha = Agent::start_with_status(&nodes[1].ns, &nodes[1].config).expect("lbha-agent");
    let deadline = Instant::now() + WAIT;
    loop {
        let both = nodes[0].states.current().as_deref() == Some("MASTER")
            && nodes[1].states.current().as_deref() == Some("MASTER");
        let ka_refused = nodes[0].log().contains("invalid IPSEC HMAC-MD5 value");
        let refused = lbha
            .status()
            .ok()
            .map_or(0, |s| counter_sum(&s, "drop_ah_bad_icv"));
        if both && ka_refused && refused >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "states {:?} / {:?}, lbha drop_ah_bad_icv {refused}, keepalived refused: {ka_refused}\n{:?}\n{}\n{}",
            nodes[0].states.current(),
            nodes[1].states.current(),
            lbha.status(),
            lbha.log(),
            nodes[0].log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = lbha.status().expect("status");
    assert_eq!(counter_sum(&status, "adverts_accepted"), 0, "{status:#}");
    assert_eq!(nodes[1].states.current().as_deref(), Some("MASTER"));
}

/// AH on the raw-socket receive path (no XDP at all): lbha, a backup in
/// native TOML with `receive_path = "raw"`, follows keepalived's AH adverts
/// and takes over when keepalived stops.
#[test]
fn ah_on_the_raw_socket_path() {
    if !require_root() {
        return;
    }
    let group = Group::pair(
        "ah_on_the_raw_socket_path",
        15,
        V2_AH,
        [(Impl::Keepalived, 150), (Impl::Lbha, 100)],
    );
    let Group { mut nodes, .. } = group;
    let dir = lbha_tests::temp_dir("ah-raw").expect("temp dir");
    let conf = dir.path().join("keepalived.conf");
    std::fs::write(&conf, &nodes[1].config).expect("keepalived.conf");
    let out = std::process::Command::new(lbha_tests::agent_bin())
        .arg("import-keepalived")
        .arg(&conf)
        .output()
        .expect("import-keepalived");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(toml.contains("auth_type = \"ah\""), "{toml}");
    let toml = toml.replace("receive_path = \"auto\"", "receive_path = \"raw\"");
    assert!(toml.contains("receive_path = \"raw\""), "{toml}");
    nodes[0].start();
    let lbha = Agent::start_native(&nodes[1].ns, &toml).expect("lbha-agent");
    let status = lbha.wait_status("BACKUP following keepalived's AH adverts", |s| {
        counter_sum(s, "adverts_accepted") >= 3
            && s["instances"][0]["state"].as_str() == Some("BACKUP")
    });
    assert_eq!(counter_sum(&status, "drop_ah_bad_icv"), 0, "{status:#}");
    assert_eq!(
        status["interfaces"][0]["receive_path"], "raw-socket",
        "{status:#}"
    );
    let count = nodes[1].states.count();
    nodes[0].kill(Kill::Sigterm);
    nodes[1]
        .states
        .wait_for("MASTER", count, WAIT)
        .unwrap_or_else(|e| panic!("lbha did not take over: {e:#}\n{}", lbha.log()));
}

/// The sum of every `name` counter anywhere in a status document.
fn counter_sum(value: &serde_json::Value, name: &str) -> u64 {
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                if k == name {
                    v.as_u64().unwrap_or(0)
                } else {
                    counter_sum(v, name)
                }
            })
            .sum(),
        serde_json::Value::Array(items) => items.iter().map(|v| counter_sum(v, name)).sum(),
        _ => 0,
    }
}

#[test]
fn keepalived_master_lbha_backup_v3() {
    if !require_root() {
        return;
    }
    Group::pair(
        "keepalived_master_lbha_backup_v3",
        3,
        V3,
        [(Impl::Keepalived, 150), (Impl::Lbha, 100)],
    )
    .run();
}

#[test]
fn lbha_master_keepalived_backup_v3() {
    if !require_root() {
        return;
    }
    Group::pair(
        "lbha_master_keepalived_backup_v3",
        4,
        V3,
        [(Impl::Lbha, 150), (Impl::Keepalived, 100)],
    )
    .run();
}

/// keepalived's `unicast_ttl` on both sides: each hears the other's
/// unicast adverts with TTL 64 (a multicast advert needs 255; a unicast one
/// may cross a router), through failover and back. Before lbha accepted
/// such adverts it took keepalived's TTL-64 adverts for none, and both were
/// Master.
#[test]
fn unicast_ttl_both_ways_v3() {
    if !require_root() {
        return;
    }
    let mut group = Group::pair(
        "unicast_ttl_both_ways_v3",
        16,
        V3,
        [(Impl::Keepalived, 150), (Impl::Lbha, 100)],
    );
    for node in &mut group.nodes {
        let config = node
            .config
            .replace("    advert_int ", "    unicast_ttl 64\n    advert_int ");
        assert_ne!(config, node.config);
        node.config = config;
    }
    group.run();
}

#[test]
fn lbha_pair_v2() {
    if !require_root() {
        return;
    }
    Group::pair(
        "lbha_pair_v2",
        5,
        V2,
        [(Impl::Lbha, 150), (Impl::Lbha, 100)],
    )
    .run();
}

#[test]
fn lbha_pair_v3() {
    if !require_root() {
        return;
    }
    Group::pair(
        "lbha_pair_v3",
        6,
        V3,
        [(Impl::Lbha, 150), (Impl::Lbha, 100)],
    )
    .run();
}

/// Three routers on a bridge: the middle priority takes over from the
/// highest, the lowest never moves. The interval is longer than [`V3`]'s:
/// the two backups' timers differ by their skew only, (150 - 50) / 256 of
/// an interval, and the lowest must hear the new master within that.
#[test]
fn lbha_three_nodes_v3() {
    if !require_root() {
        return;
    }
    let proto = Proto {
        advert_int: "0.5",
        interval: Duration::from_millis(500),
        ..V3
    };
    Group::bridged(
        "lbha_three_nodes_v3",
        7,
        proto,
        &[(Impl::Lbha, 250), (Impl::Lbha, 150), (Impl::Lbha, 50)],
    )
    .run();
}
