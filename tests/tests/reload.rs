//! SIGHUP reloads the configuration: an unchanged instance keeps mastership,
//! a changed one restarts, and a broken file changes nothing.

use std::{net::Ipv4Addr, time::Duration};

use lbha_tests::{Agent, KeepalivedConfig, Netns, VrrpInstance, require_root, veth_pair};

const WAIT: Duration = Duration::from_secs(15);

fn conf(vi2_priority: u8) -> String {
    KeepalivedConfig::new()
        .global_def("vrrp_version 3")
        .instance(
            VrrpInstance::unicast("VI_1", "va1", 51, Ipv4Addr::new(10, 203, 1, 1))
                .priority(200)
                .advert_int("0.1")
                .version(3)
                .unicast_peer(Ipv4Addr::new(10, 203, 1, 2))
                .virtual_ipaddress("10.203.1.100/32"),
        )
        .instance(
            VrrpInstance::unicast("VI_2", "va2", 52, Ipv4Addr::new(10, 203, 2, 1))
                .priority(vi2_priority)
                .advert_int("0.1")
                .version(3)
                .unicast_peer(Ipv4Addr::new(10, 203, 2, 2))
                .virtual_ipaddress("10.203.2.100/32"),
        )
        .render()
}

fn sighup(agent: &Agent) {
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
}

/// Starts VI_1's peer once the agent under test is Master, and checks that
/// it settles as Backup. The order matters: a peer started first becomes
/// Master while the other agent still attaches its program, and its later
/// resignation would be counted as a change the reload caused.
fn start_peer_under_the_master(netns: &Netns, peer: &str) -> Agent {
    let mut backup = Agent::start(netns, peer).unwrap();
    backup
        .wait_for_transition("VI_1", "BACKUP", 0, WAIT)
        .unwrap();
    // Longer than the peer's Master_Down_Interval (0.36 s): had it not heard
    // the Master, it would have taken over by now.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        backup.transitions().len(),
        1,
        "the peer should stay Backup under the Master:\n{}",
        backup.log()
    );
    backup
}

#[test]
fn sighup_keeps_unchanged_instances_and_restarts_changed_ones() {
    if !require_root() {
        return;
    }
    let a = Netns::new("rla").unwrap();
    let b = Netns::new("rlb").unwrap();
    let c = Netns::new("rlc").unwrap();
    veth_pair(&a, "va1", "10.203.1.1/24", &b, "vb", "10.203.1.2/24").unwrap();
    veth_pair(&a, "va2", "10.203.2.1/24", &c, "vc", "10.203.2.2/24").unwrap();
    let peer = KeepalivedConfig::new()
        .global_def("vrrp_version 3")
        .instance(
            VrrpInstance::unicast("VI_1", "vb", 51, Ipv4Addr::new(10, 203, 1, 2))
                .priority(100)
                .advert_int("0.1")
                .version(3)
                .unicast_peer(Ipv4Addr::new(10, 203, 1, 1))
                .virtual_ipaddress("10.203.1.100/32"),
        )
        .render();
    let mut agent = Agent::start(&a, &conf(200)).unwrap();
    agent
        .wait_for_transition("VI_1", "MASTER", 0, WAIT)
        .unwrap();
    agent
        .wait_for_transition("VI_2", "MASTER", 0, WAIT)
        .unwrap();
    let backup = start_peer_under_the_master(&b, &peer);
    let conf_path = agent.dir().join("keepalived.conf");

    // The same file again: nothing happens.
    let before = agent.transitions().len();
    sighup(&agent);
    agent.wait_for_log("nothing changed", WAIT).unwrap();
    assert_eq!(agent.transitions().len(), before);

    // A broken file: reported, and the running configuration stays.
    std::fs::write(
        &conf_path,
        "vrrp_instance VI_1 {\n  virtual_router_id 300\n",
    )
    .unwrap();
    sighup(&agent);
    agent
        .wait_for_log("configuration not reloaded", WAIT)
        .unwrap();
    assert_eq!(agent.transitions().len(), before, "{}", agent.log());
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent keeps running"
    );

    // VI_2 (on va2) changes; VI_1 (on va1) does not and keeps mastership.
    let backup_before = backup.transitions().len();
    std::fs::write(&conf_path, conf(150)).unwrap();
    sighup(&agent);
    agent
        .wait_for_transition("VI_2", "MASTER", before, WAIT)
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let after: Vec<_> = agent.transitions().into_iter().skip(before).collect();
    assert!(
        after.iter().all(|t| t.instance == "VI_2"),
        "only VI_2 restarted: {after:#?}"
    );
    assert!(
        after.iter().any(|t| t.to == "INIT"),
        "VI_2 was stopped and started: {after:#?}"
    );
    assert_eq!(
        backup.transitions().len(),
        backup_before,
        "the peer of VI_1 saw no change:\n{}",
        backup.log()
    );
}

/// The reload report in `lbha-agent status --json`.
fn reload_report(socket: &std::path::Path) -> serde_json::Value {
    let out = lbha_tests::run_command(
        std::process::Command::new(lbha_tests::agent_bin())
            .args(["status", "--json", "--status-socket"])
            .arg(socket),
        lbha_tests::COMMAND_TIMEOUT,
    )
    .unwrap();
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["reload"].clone()
}

/// A file that parses but that this host cannot run is refused before
/// anything running is touched: the Master stays Master (its backup never
/// sees a priority-0 advert, so it never takes over), and a good file
/// afterwards applies.
#[test]
fn reloads_this_host_cannot_run_keep_the_master_serving() {
    if !require_root() {
        return;
    }
    let a = Netns::new("rfa").unwrap();
    let b = Netns::new("rfb").unwrap();
    let c = Netns::new("rfc").unwrap();
    veth_pair(&a, "va1", "10.203.1.1/24", &b, "vb", "10.203.1.2/24").unwrap();
    veth_pair(&a, "va2", "10.203.2.1/24", &c, "vc", "10.203.2.2/24").unwrap();
    let peer = KeepalivedConfig::new()
        .global_def("vrrp_version 3")
        .instance(
            VrrpInstance::unicast("VI_1", "vb", 51, Ipv4Addr::new(10, 203, 1, 2))
                .priority(100)
                .advert_int("0.1")
                .version(3)
                .unicast_peer(Ipv4Addr::new(10, 203, 1, 1))
                .virtual_ipaddress("10.203.1.100/32"),
        )
        .render();
    let files = lbha_tests::temp_dir("reload-files").unwrap();
    let token = files.path().join("token");
    std::fs::write(&token, "dop_v1_reloadtest\n").unwrap();
    let check = files.path().join("check.sh");
    std::fs::write(&check, "#!/bin/sh\nexit 0\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&check, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let socket = files.path().join("status.sock");
    // The floating IP's API is a closed loopback port: nothing is ever
    // assigned, but the token must be readable at every reload.
    let extra = [
        "--floating-ip",
        "203.0.113.10",
        "--do-token-file",
        token.to_str().unwrap(),
        "--do-api-url",
        "http://127.0.0.1:9",
        "--do-metadata-url",
        "http://127.0.0.1:9",
        "--status-socket",
        socket.to_str().unwrap(),
    ];
    let good = |vi2_priority: u8| {
        format!(
            "global_defs {{\n  enable_script_security\n}}\nvrrp_script chk {{\n  script \"{}\"\n  interval 1\n}}\n{}",
            check.display(),
            conf(vi2_priority)
        )
    };
    let mut agent = Agent::start_with_args(&a, &good(200), &extra).unwrap();
    agent
        .wait_for_transition("VI_1", "MASTER", 0, WAIT)
        .unwrap();
    agent
        .wait_for_transition("VI_2", "MASTER", 0, WAIT)
        .unwrap();
    let backup = start_peer_under_the_master(&b, &peer);
    let conf_path = agent.dir().join("keepalived.conf");
    let before = agent.transitions().len();
    let backup_before = backup.transitions().len();

    let mut refused = 0;
    let mut refuse = |agent: &mut Agent, what: &str, expected: &str| {
        sighup(agent);
        refused += 1;
        let deadline = std::time::Instant::now() + WAIT;
        while agent.log().matches("configuration not reloaded").count() < refused {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: no refusal logged\n{}",
                agent.log()
            );
            assert!(
                agent.try_wait().unwrap().is_none(),
                "{what}: the agent exited\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let report = reload_report(&socket);
        assert_eq!(report["failures"], refused, "{what}: {report}");
        assert_eq!(report["last_ok"], false, "{what}: {report}");
        let error = report["last_error"].as_str().unwrap_or_default().to_owned();
        assert!(
            error.contains(expected),
            "{what}: {error:?} should say {expected:?}"
        );
    };

    // An unknown script_user (a [global] change: applied, it would restart
    // every instance).
    std::fs::write(
        &conf_path,
        good(200).replace(
            "enable_script_security",
            "enable_script_security\n  script_user lbha-no-such-user",
        ),
    )
    .unwrap();
    refuse(&mut agent, "unknown script_user", "lbha-no-such-user");

    // An instance on an interface this host does not have.
    std::fs::write(
        &conf_path,
        good(200).replace("interface va2", "interface va9"),
    )
    .unwrap();
    refuse(&mut agent, "vanished interface", "va9 does not exist");

    // The same file, but the token file is gone.
    std::fs::write(&conf_path, good(200)).unwrap();
    std::fs::rename(&token, files.path().join("token.moved")).unwrap();
    refuse(&mut agent, "unreadable token", "token");
    std::fs::rename(files.path().join("token.moved"), &token).unwrap();

    // The check script became group-writable (script security refuses it).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&check, std::fs::Permissions::from_mode(0o775)).unwrap();
        refuse(&mut agent, "group-writable script", "script security");
        std::fs::set_permissions(&check, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    assert_eq!(
        agent.transitions().len(),
        before,
        "no instance changed state through the refused reloads:\n{}",
        agent.log()
    );
    assert_eq!(
        backup.transitions().len(),
        backup_before,
        "the peer never saw the master resign:\n{}",
        backup.log()
    );

    // A good file applies again.
    std::fs::write(&conf_path, good(150)).unwrap();
    sighup(&agent);
    agent
        .wait_for_transition("VI_2", "MASTER", before, WAIT)
        .unwrap();
    let report = reload_report(&socket);
    assert_eq!(report["last_ok"], true, "{report}");
    assert_eq!(report["failures"], refused, "{report}");
}
