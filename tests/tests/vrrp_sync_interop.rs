//! `vrrp_sync_group` against real keepalived: lbha runs two instances on two
//! links (two veth pairs, so two interface tasks) in one sync group, with
//! the higher priority; keepalived runs the same two instances, ungrouped,
//! as the backup. Taking one of lbha's links down faults that member, and
//! the group must take the other member out of MASTER too (keepalived's
//! instance on the healthy link takes over); bringing it back, the group
//! comes up BACKUP and both members preempt together. The group's `notify`
//! script hears `GROUP <name> <STATE> 0`, as keepalived calls it.

use lbha_tests::{
    Agent, Keepalived, KeepalivedConfig, Netns, NotifyScript, VrrpInstance, VrrpState, WAIT,
    require_root, veth_pair,
};

const GROUP: &str = "G_LB";

fn config(
    side: &str,
    priority: u8,
    state: VrrpState,
    subnet: u8,
    me: u8,
    peer: u8,
    extra: &str,
) -> String {
    let mut config = KeepalivedConfig::new()
        .global_def("script_user root")
        .global_def("enable_script_security")
        .global_def("vrrp_version 3");
    for (name, link, vrid, net) in [("VI_A", "a", 71, subnet), ("VI_B", "b", 72, subnet + 1)] {
        let addr = |host: u8| std::net::Ipv4Addr::new(10, 203, net, host);
        config = config.instance(
            VrrpInstance::unicast(name, format!("v{link}-{side}"), vrid, addr(me))
                .unicast_peer(addr(peer))
                .priority(priority)
                .state(state)
                .version(3)
                .advert_int("0.1")
                .virtual_ipaddress(format!("{}/32", addr(100))),
        );
    }
    config.render() + extra
}

#[test]
fn a_sync_group_faults_and_preempts_together_against_keepalived() {
    if !require_root() {
        return;
    }
    let scripts = NotifyScript::new().expect("notify script");
    let group_log = scripts.state_log("group");
    let lb = Netns::new("sglb").expect("namespace");
    let ka = Netns::new("sgka").expect("namespace");
    let subnet = 1;
    for (link, net) in [("a", subnet), ("b", subnet + 1)] {
        veth_pair(
            &lb,
            &format!("v{link}-lb"),
            &format!("10.203.{net}.1/24"),
            &ka,
            &format!("v{link}-ka"),
            &format!("10.203.{net}.2/24"),
        )
        .expect("veth pair");
    }
    let group = format!(
        "vrrp_sync_group {GROUP} {{\n    group {{\n        VI_A\n        VI_B\n    }}\n    {}\n}}\n",
        group_log.notify_line()
    );
    let lb_conf = config("lb", 200, VrrpState::Master, subnet, 1, 2, &group);
    let ka_conf = config("ka", 100, VrrpState::Backup, subnet, 2, 1, "");

    // lbha first, so keepalived starts under a master and logs entering
    // MASTER only when it takes over.
    let mut agent = Agent::start(&lb, &lb_conf).expect("lbha-agent");
    for vi in ["VI_A", "VI_B"] {
        agent
            .wait_for_transition(vi, "MASTER", 0, WAIT)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", agent.log()));
    }
    let mut keepalived = Keepalived::start(&ka, &ka_conf).expect("keepalived");
    keepalived
        .wait_for_state("VI_A", "BACKUP", WAIT)
        .expect("keepalived follows lbha");
    group_log
        .wait_for("MASTER", 0, WAIT)
        .expect("the group's notify hears GROUP G_LB MASTER 0");
    let seen = agent.transitions().len();
    let group_seen = group_log.count();

    // Link b down: VI_B faults; the group takes VI_A out of MASTER as well,
    // and keepalived's VI_A (on the healthy link a) takes over.
    lb.ip(&["link", "set", "vb-lb", "down"]).expect("link down");
    let fault = agent
        .wait_for_transition("VI_A", "FAULT", seen, WAIT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", agent.log()));
    assert_eq!(fault.reason, "sync group", "{}", fault.line);
    keepalived
        .wait_for_state("VI_A", "MASTER", WAIT)
        .expect("keepalived takes VI_A over on the healthy link");
    let change = group_log
        .wait_for("FAULT", group_seen, WAIT)
        .expect("GROUP G_LB FAULT 0");
    assert_eq!(change.priority, 0, "a group's priority is 0");
    let seen = agent.transitions().len();
    let group_seen = group_log.count();

    // Link b back: the group comes up BACKUP, then both members preempt
    // keepalived's lower priority together.
    lb.ip(&["link", "set", "vb-lb", "up"]).expect("link up");
    group_log
        .wait_for("BACKUP", group_seen, WAIT)
        .expect("GROUP G_LB BACKUP 0");
    for vi in ["VI_A", "VI_B"] {
        agent
            .wait_for_transition(vi, "MASTER", seen, WAIT)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", agent.log()));
    }
    group_log
        .wait_for("MASTER", group_seen, WAIT)
        .expect("GROUP G_LB MASTER 0");
    let vip = "10.203.1.100/32".to_string();
    assert!(
        lb.ipv4_addresses("va-lb")
            .expect("addresses")
            .contains(&vip),
        "lbha holds VI_A's address again"
    );
    let log = agent.log();
    assert!(!log.contains("panicked"), "{log}");
}
