//! The keepalived.conf front-end's unit tests.

use std::{net::IpAddr, path::PathBuf};

use super::*;

fn path() -> PathBuf {
    PathBuf::from("/etc/keepalived/keepalived.conf")
}

/// The parser without adjustments, as `parse_*` calls it.
fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigErrors> {
    super::parse(
        text,
        path,
        &KeepalivedOptions::default(),
        &NoFiles,
        &mut |_| {},
    )
}

fn load(text: &str) -> Loaded {
    match parse(text, &path()) {
        Ok(loaded) => loaded,
        Err(errors) => panic!("{errors}"),
    }
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match parse(text, &path()) {
        Ok(loaded) => panic!("expected errors, got {loaded:?}"),
        Err(ConfigErrors { errors, .. }) => errors,
    }
}

fn at(diags: &[Diagnostic]) -> Vec<(usize, &str)> {
    diags
        .iter()
        .map(|d| (d.line.unwrap_or(0), d.message.as_str()))
        .collect()
}

const SEED: &str = include_str!("../../../examples/keepalived.conf");

fn seed_config() -> Config {
    Config {
        floating_ip: None,
        heartbeat: None,
        track_files: Vec::new(),
        sync_groups: Vec::new(),
        global: Global::default(),
        checks: vec![Check {
            name: "chk_haproxy".into(),
            script: "pidof haproxy".into(),
            probe: None,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            weight: 0,
            weight_reverse: false,
            rise: 1,
            fall: 1,
            init_fail: false,
        }],
        instances: vec![Instance {
            name: "VI_1".into(),
            interface: "eth1".into(),
            vrid: 33,
            priority: 200,
            version: 2,
            advert_interval: Duration::from_secs(1),
            initial_state: InitialState::Master,
            preempt: true,
            preempt_delay: Duration::ZERO,
            unicast_src: Some(Ipv4Addr::new(10, 132, 7, 12).into()),
            unicast_peers: vec![Ipv4Addr::new(10, 132, 7, 13).into()],
            check_unicast_src: true,
            down_timer_adverts: 3,
            auth_pass: Some("password".into()),
            auth_type: crate::AuthType::Pass,
            virtual_addresses: vec![],
            virtual_routes: vec![],
            virtual_rules: vec![],
            track: vec!["chk_haproxy".into()],
            track_interfaces: Vec::new(),
            track_files: Vec::new(),
            notify_priority_changes: false,
            dont_track_primary: false,
            lower_prio_no_advert: false,
            higher_prio_send_advert: false,
            unicast_ttl: None,
            accept: true,
            notify: Notify {
                master: Some("/etc/keepalived/master.sh".into()),
                ..Notify::default()
            },
            receive_path: ReceivePathChoice::Auto,
            garp: Garp::default(),
            vmac: None,
        }],
    }
}

/// A minimal instance around `body`, for keyword tests.
fn instance_with(body: &str) -> String {
    format!("vrrp_instance VI_1 {{\n    interface eth1\n    virtual_router_id 1\n{body}\n}}\n")
}

#[test]
fn config_keepalived_seed_parses_exactly() {
    let loaded = load(SEED);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.config, seed_config());
}

#[test]
fn config_keepalived_seed_round_trips_through_toml() {
    let config = load(SEED).config;
    let text = crate::to_toml(&config);
    let again = crate::parse_toml(&text, Path::new("seed.toml")).unwrap();
    assert_eq!(again.config, config, "{text}");
    assert!(again.warnings.is_empty());
}

#[test]
fn config_keepalived_seed_equals_the_native_example() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lbha.toml");
    let native = crate::load_toml(&file).unwrap();
    assert_eq!(native.config, seed_config());
}

#[test]
fn config_keepalived_reader_comments_quotes_and_glued_braces() {
    let mut cx = Cx {
        file: Path::new("x"),
        sources: SourceMap::default(),
        errors: vec![],
        warnings: vec![],
    };
    let tokens = read::read(
        "a{b}c # comment { }\n! whole line\n  \"x y\"{ \"#not comment\" pa\\#ss!tail\nz\"q r\"",
        Path::new("x"),
        &KeepalivedOptions::default(),
        &NoFiles,
        &mut cx,
    );
    let line = |words: &[(&str, bool)], raw: &str, line: usize| Token::Line {
        words: words
            .iter()
            .map(|(text, quoted)| Word {
                text: (*text).into(),
                quoted: *quoted,
                line,
            })
            .collect(),
        raw: raw.into(),
        line,
    };
    assert_eq!(
        tokens,
        vec![
            line(&[("a", false)], "a", 1),
            Token::Open(1),
            line(&[("b", false)], "b", 1),
            Token::Close(1),
            line(&[("c", false)], "c", 1),
            line(&[("x y", true)], "\"x y\"", 3),
            Token::Open(3),
            line(
                &[("#not comment", true), ("pa#ss", false)],
                "\"#not comment\" pa#ss",
                3
            ),
            line(&[("z", false), ("q r", true)], "z\"q r\"", 4),
        ]
    );
    assert!(cx.errors.is_empty());
    read::read(
        "script \"pidof haproxy\n",
        Path::new("x"),
        &KeepalivedOptions::default(),
        &NoFiles,
        &mut cx,
    );
    assert_eq!(cx.errors.len(), 1, "{:?}", cx.errors);
    assert!(
        cx.errors[0]
            .message
            .contains("unterminated double-quoted string")
    );
}

#[test]
fn config_keepalived_glued_braces_and_one_line_blocks() {
    let text = "vrrp_script chk{script \"pidof haproxy\"}\nvrrp_instance VI_1{interface eth1\nvirtual_router_id 7 }\n";
    let loaded = load(text);
    assert_eq!(loaded.config.checks[0].name, "chk");
    assert_eq!(loaded.config.checks[0].script, "pidof haproxy");
    assert_eq!(loaded.config.instances[0].vrid, 7);
    // Block on the next line, as keepalived allows.
    let text = "vrrp_instance VI_1\n{\n interface eth1\n virtual_router_id 7\n unicast_peer { 10.0.0.2 }\n}\n";
    let loaded = load(text);
    assert_eq!(
        loaded.config.instances[0].unicast_peers,
        vec![Ipv4Addr::new(10, 0, 0, 2)]
    );
}

#[test]
fn config_keepalived_every_supported_keyword() {
    let text = r#"
global_defs {
enable_script_security
script_user keepalived_script nogroup
vrrp_version 3
vrrp_down_timer_adverts 5
vrrp_check_unicast_src
}

vrrp_script chk_haproxy {
script "/usr/bin/killall -0 haproxy"
interval 2
timeout 3
weight -20 reverse
rise 2
fall 3
}

vrrp_script chk_web {
script "/usr/local/bin/check web 'with space'"
}

vrrp_instance VI_1 {
interface eth1
state BACKUP
priority 150
virtual_router_id 51
advert_int 0.25
preempt_delay 15
mcast_src_ip 10.0.0.1
unicast_src_ip 10.0.0.2
unicast_peer {
    10.0.0.3
    10.0.0.4
}
check_unicast_src
down_timer_adverts 2
virtual_ipaddress {
    203.0.113.10/24
    203.0.113.11
}
track_script {
    chk_haproxy
    chk_web
}
notify_master "/etc/keepalived/master.sh arg"
notify_backup /etc/keepalived/backup.sh
notify_fault /etc/keepalived/fault.sh
notify /etc/keepalived/notify.sh
}

vrrp_instance VI_2 {
interface eth2
state MASTER
virtual_router_id 52
version 2
advert_int 3
preempt
authentication {
    auth_type PASS
    auth_pass "se cret"
}
}
"#;
    let loaded = load(text);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert_eq!(
        c.global,
        Global {
            script_security: true,
            script_user: Some("keepalived_script".into()),
            script_group: Some("nogroup".into()),
            vrrp_version: 3,
            ..Global::default()
        }
    );
    assert_eq!(
        c.checks,
        vec![
            Check {
                name: "chk_haproxy".into(),
                script: "/usr/bin/killall -0 haproxy".into(),
                probe: None,
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(3),
                weight: -20,
                weight_reverse: true,
                rise: 2,
                fall: 3,
                init_fail: false,
            },
            Check {
                name: "chk_web".into(),
                script: "/usr/local/bin/check web 'with space'".into(),
                probe: None,
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                weight: 0,
                weight_reverse: false,
                rise: 1,
                fall: 1,
                init_fail: false,
            },
        ]
    );
    let i = &c.instances[0];
    assert_eq!(i.interface, "eth1");
    assert_eq!(i.initial_state, InitialState::Backup);
    assert_eq!(i.priority, 150);
    assert_eq!(i.vrid, 51);
    assert_eq!(i.version, 3, "global vrrp_version");
    assert_eq!(i.advert_interval, Duration::from_millis(250));
    assert!(i.preempt);
    assert_eq!(i.preempt_delay, Duration::from_secs(15));
    assert_eq!(i.unicast_src, Some(Ipv4Addr::new(10, 0, 0, 2).into()));
    assert_eq!(
        i.unicast_peers,
        vec![Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 0, 4)]
    );
    assert!(i.check_unicast_src);
    assert_eq!(i.down_timer_adverts, 2, "its own down_timer_adverts");
    assert_eq!(
        i.virtual_addresses,
        vec![
            VirtualAddress::new(Ipv4Addr::new(203, 0, 113, 10), 24),
            VirtualAddress::new(Ipv4Addr::new(203, 0, 113, 11), 32)
        ]
    );
    assert_eq!(i.track, vec!["chk_haproxy".to_string(), "chk_web".into()]);
    assert_eq!(
        i.notify,
        Notify {
            master: Some("/etc/keepalived/master.sh arg".into()),
            backup: Some("/etc/keepalived/backup.sh".into()),
            fault: Some("/etc/keepalived/fault.sh".into()),
            stop: None,
            any: Some("/etc/keepalived/notify.sh".into()),
        }
    );
    assert_eq!(i.auth_pass, None);
    let i2 = &c.instances[1];
    assert_eq!(i2.initial_state, InitialState::Master);
    assert_eq!(
        i2.priority, 255,
        "a MASTER without priority owns the addresses"
    );
    assert_eq!(i2.version, 2);
    assert_eq!(i2.advert_interval, Duration::from_secs(3));
    assert!(i2.preempt);
    assert_eq!(i2.auth_pass.as_deref(), Some("se cret"));
    assert_eq!(i2.down_timer_adverts, 5, "global vrrp_down_timer_adverts");
    // Without peers there is nothing to check against; the flag says
    // what would happen with some.
    assert!(i2.check_unicast_src);

    // And the whole thing round-trips through the native format.
    let again = crate::parse_toml(&crate::to_toml(&c), Path::new("t")).unwrap();
    assert_eq!(again.config, c);
}

#[test]
fn config_keepalived_track_script_weight_override_derives_a_check() {
    let text = r#"vrrp_script chk {
script "true"
weight 10
}
vrrp_instance A {
interface eth1
virtual_router_id 1
track_script {
    chk weight -30
}
}
vrrp_instance B {
interface eth1
virtual_router_id 2
track_script {
    chk weight 10
    chk weight -30
}
}
vrrp_instance C {
interface eth1
virtual_router_id 3
track_script {
    chk weight 5 reverse
}
}
"#;
    let loaded = load(text);
    let c = loaded.config;
    let names: Vec<_> = c.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["chk", "chk:weight=-30", "chk:weight=5:reverse"]);
    assert_eq!(c.checks[1].weight, -30);
    assert!(!c.checks[1].weight_reverse);
    assert_eq!(c.checks[1].script, "true");
    assert_eq!(c.checks[2].weight, 5);
    assert!(c.checks[2].weight_reverse);
    assert_eq!(c.instances[0].track, vec!["chk:weight=-30".to_string()]);
    assert_eq!(
        c.instances[1].track,
        vec!["chk".to_string(), "chk:weight=-30".into()]
    );
    assert_eq!(
        c.instances[2].track,
        vec!["chk:weight=5:reverse".to_string()]
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn config_keepalived_warnings_carry_line_numbers() {
    let text = r#"global_defs {
    router_id LB1
    notification_email {
        ops@example.com
    }
    smtp_server 127.0.0.1
}
vrrp_script chk {
    script "true" extra
    init_fail
}
vrrp_instance VI_1 {
    interface eth1
    virtual_router_id 1
    garp_extra_if 5
    notify_master /etc/keepalived/master.sh root
    virtual_ipaddress {
        203.0.113.10/24 dev eth1 label eth1:1
    }
    unicast_peer {
        10.0.0.3 extra
    }
    priority 100 extra
    priority 101
    track_interface {
        eth1 weight 10
    }
}
static_routes {
    10.0.0.0/8 via 10.0.0.1
}
"#;
    let loaded = load(text);
    let w = at(&loaded.warnings);
    let lines: Vec<usize> = w.iter().map(|(l, _)| *l).collect();
    assert_eq!(
        lines,
        vec![2, 3, 6, 9, 15, 18, 21, 23, 24, 26, 29],
        "{w:#?}"
    );
    assert!(w[0].1.contains("global_defs: `router_id` ignored"));
    assert!(
        w[3].1
            .contains("keepalived runs only `true` and ignores `extra`")
    );
    assert!(
        w[4].1
            .contains("unsupported keyword `garp_extra_if` ignored")
    );
    assert!(w[5].1.contains("`label eth1:1` kept"), "{}", w[5].1);
    assert!(w[6].1.contains("extra words `extra`"));
    assert!(w[8].1.contains("`priority` given again"));
    assert!(w[9].1.contains("own interface"), "{}", w[9].1);
    assert!(
        w[10]
            .1
            .contains("unsupported block `static_routes` ignored")
    );
    let c = &loaded.config;
    assert!(c.checks[0].init_fail);
    assert_eq!(c.instances[0].priority, 101);
    let mut vip = VirtualAddress::new(Ipv4Addr::new(203, 0, 113, 10), 24);
    vip.dev = Some("eth1".into());
    vip.label = Some("eth1:1".into());
    assert_eq!(c.instances[0].virtual_addresses, vec![vip]);
    assert_eq!(
        c.instances[0].notify.master.as_deref(),
        Some("/etc/keepalived/master.sh"),
        "root is the user every script runs as: nothing to refuse"
    );
}

#[test]
fn config_keepalived_dangerous_keywords_are_errors_with_lines() {
    let text = r"include /etc/keepalived/other.conf
global_defs {
    net_namespace blue
}
vrrp_sync_group G1 {
    group {
        VI_1
    }
}
vrrp_instance VI_1 {
    interface eth1
    virtual_router_id 1
    track_interface {
        eth0
    }
    track_process {
        haproxy
    }
    use_ipvlan
    virtual_routes {
        default via 10.0.0.1 mtu 1400
    }
    priorty 100
}
virtual_server 10.0.0.50 80 {
    real_server 10.0.0.10 80 {
    }
}
";
    let errs = errors(text);
    let e = at(&errs);
    let lines: Vec<usize> = e.iter().map(|(l, _)| *l).collect();
    // The sync group (line 5) is read, no longer refused; the typo on
    // line 23 is a warning (keepalived ignores it).
    assert_eq!(lines, vec![3, 16, 19, 21, 25], "{e:#?}");
    assert!(e[1].1.contains("`track_process` is not supported"));
    assert!(
        e[3].1.contains("`mtu` is not supported: not implemented"),
        "a route option lbha lacks is named: {}",
        e[3].1
    );
    assert!(e[4].1.contains("no LVS"));
}

#[test]
fn config_keepalived_sync_group_members_notify_and_tracking() {
    let text = r#"vrrp_script chk_haproxy {
    script "pidof haproxy"
    weight 2
}
vrrp_script chk_api {
    script "/bin/true"
}
vrrp_sync_group VG1 {
    group {
        VI_1 VI_MISSING
        VI_2
    }
    track_script {
        chk_api
    }
    track_interface {
        eth9 weight 5
    }
    notify_master "/usr/local/bin/vrrp.mast arg1"
    notify "/usr/local/bin/vrrp.any"
}
vrrp_sync_group VG2 {
    group {
        VI_2
    }
}
vrrp_instance VI_1 {
    interface eth1
    state MASTER
    priority 150
    virtual_router_id 1
    track_script {
        chk_haproxy
    }
    track_interface {
        eth3 weight -10
    }
}
vrrp_instance VI_2 {
    interface eth2
    virtual_router_id 2
}
"#;
    let loaded = load(text);
    let c = &loaded.config;
    assert_eq!(c.sync_groups.len(), 1, "VG2 has no member left: removed");
    let g = &c.sync_groups[0];
    assert_eq!(g.name, "VG1");
    assert_eq!(g.members, vec!["VI_1".to_string(), "VI_2".to_string()]);
    assert_eq!(
        g.notify.master.as_deref(),
        Some("/usr/local/bin/vrrp.mast arg1")
    );
    assert_eq!(g.notify.any.as_deref(), Some("/usr/local/bin/vrrp.any"));
    // VI_1: its weighted script dropped, its interface's weight cleared,
    // the group's tracking added (with the group's weight).
    let i1 = &c.instances[0];
    assert_eq!(i1.track, vec!["chk_api".to_string()]);
    let tracked: Vec<(&str, i32)> = i1
        .track_interfaces
        .iter()
        .map(|t| (t.name.as_str(), t.weight))
        .collect();
    assert_eq!(tracked, vec![("eth3", 0), ("eth9", 5)]);
    assert_eq!(c.instances[1].track, vec!["chk_api".to_string()]);
    assert_eq!(
        i1.initial_state,
        InitialState::Backup,
        "keepalived starts a member in its group's state"
    );
    let warnings: Vec<&str> = loaded.warnings.iter().map(|w| w.message.as_str()).collect();
    for expected in [
        "no vrrp_instance `VI_MISSING`",
        "already in another sync group",
        "no member instance",
        "`chk_haproxy` has a weight",
    ] {
        assert!(
            warnings.iter().any(|w| w.contains(expected)),
            "{expected}: {warnings:#?}"
        );
    }
}

#[test]
fn config_keepalived_sync_group_global_tracking_keeps_weights() {
    let text = r#"vrrp_script chk_haproxy {
    script "pidof haproxy"
    weight 2
}
vrrp_sync_group VG1 {
    group {
        VI_1
        VI_2
    }
    global_tracking
}
vrrp_instance VI_1 {
    interface eth1
    virtual_router_id 1
    track_script {
        chk_haproxy
    }
}
vrrp_instance VI_2 {
    interface eth2
    virtual_router_id 2
}
"#;
    let c = load(text).config;
    assert_eq!(c.instances[0].track, vec!["chk_haproxy".to_string()]);
}

/// keepalived's `virtual_ipaddress_excluded`: held by the master, not
/// advertised.
#[test]
fn config_keepalived_excluded_addresses_are_held_but_not_advertised() {
    let loaded = load(&instance_with(
        "    virtual_ipaddress {\n        10.0.0.100/24\n    }\n    virtual_ipaddress_excluded {\n        10.0.0.101 dev eth2\n    }",
    ));
    let v = &loaded.config.instances[0].virtual_addresses;
    let got: Vec<(String, bool)> = v
        .iter()
        .map(|a| (a.address.to_string(), a.excluded))
        .collect();
    assert_eq!(
        got,
        [
            ("10.0.0.100".to_string(), false),
            ("10.0.0.101".to_string(), true)
        ]
    );
    assert_eq!(v[1].dev.as_deref(), Some("eth2"));
    let again = crate::parse_toml(&crate::to_toml(&loaded.config), Path::new("t")).unwrap();
    assert_eq!(again.config, loaded.config);
    // keepalived still wants a real one with VRRPv3.
    let errs = errors(&instance_with(
        "    version 3\n    virtual_ipaddress_excluded {\n        10.0.0.101\n    }",
    ));
    assert!(
        at(&errs)
            .iter()
            .any(|(_, m)| m.contains("no `virtual_ipaddress`")),
        "{errs:?}"
    );
}

/// keepalived's `track_interface`: other interfaces with their weights; the
/// instance's own one is ignored (always tracked), as keepalived does.
#[test]
fn config_keepalived_track_interface_with_weights() {
    let loaded = load(&instance_with(
        "    track_interface {\n        eth1\n        eth2\n        eth3 weight -20\n        eth4 weight 10 reverse\n    }",
    ));
    let i = &loaded.config.instances[0];
    let t: Vec<(&str, i32, bool)> = i
        .track_interfaces
        .iter()
        .map(|t| (t.name.as_str(), t.weight, t.reverse))
        .collect();
    assert_eq!(
        t,
        [("eth2", 0, false), ("eth3", -20, false), ("eth4", 10, true)]
    );
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.line == Some(5) && w.message.contains("own interface")),
        "{:?}",
        loaded.warnings
    );
    // import-keepalived's TOML reads back the same.
    let again = crate::parse_toml(&crate::to_toml(&loaded.config), Path::new("t")).unwrap();
    assert_eq!(again.config, loaded.config);
    let errs = errors(&instance_with(
        "    track_interface {\n        eth2 weight 300\n    }",
    ));
    assert!(
        at(&errs)[0].1.contains("`weight` must be -253..=253"),
        "{errs:?}"
    );
}

#[test]
fn config_keepalived_multiple_errors_are_all_reported() {
    let text = r"vrrp_script chk {
interval abc
weight 300
rise -1
}
vrrp_instance VI_1 {
interface eth1
state PRIMARY
priority 0
virtual_router_id 256
advert_int 1.5
unicast_src_ip 10.0.0.1
unicast_peer {
    fe80::x
    10.0.0.1
}
authentication {
    auth_type MD5
    auth_pass secret
}
virtual_ipaddress {
    10.0.0.9/40
}
track_script {
    chk
    missing
}
}
vrrp_instance VI_2 {
interface eth1
virtual_router_id 5
version 3
authentication {
    auth_type PASS
    auth_pass secret
}
}
vrrp_instance VI_3 {
interface eth1
virtual_router_id 5
}
vrrp_instance VI_4 {
interface eth1
}
";
    let errs = errors(text);
    let e = at(&errs);
    let lines: Vec<usize> = e.iter().map(|(l, _)| *l).collect();
    assert_eq!(
        lines,
        vec![2, 3, 4, 8, 10, 11, 14, 15, 18, 22, 26, 29, 40, 42],
        "{e:#?}"
    );
    assert!(
        e[0].1
            .contains("`interval`: `abc` is not a whole number of seconds")
    );
    assert!(e[1].1.contains("`weight` must be -253..=253"));
    assert!(e[2].1.contains("`rise` must be 1..="));
    assert!(e[3].1.contains("`state` must be MASTER or BACKUP"));
    assert!(
        e[4].1
            .contains("`virtual_router_id` must be 1..=255 (got 256)")
    );
    assert!(e[5].1.contains("VRRPv2 `advert_int` must be whole seconds"));
    assert!(e[6].1.contains("`fe80::x` is not an IPv4 or IPv6 address"));
    assert!(e[7].1.contains("is this node's own `unicast_src_ip`"));
    assert!(
        e[8].1
            .contains("`auth_type` must be PASS or AH (got `MD5`)")
    );
    assert!(e[9].1.contains("prefix length"));
    assert!(e[10].1.contains("`track_script` names `missing`"));
    assert!(e[11].1.contains("no `virtual_ipaddress`"), "{}", e[11].1);
    assert!(
        e[12]
            .1
            .contains("`virtual_router_id` 5 on eth1 is already used by `VI_2`")
    );
    assert!(e[13].1.contains("missing `virtual_router_id`"));
    for d in &errs {
        assert_eq!(d.file, path());
    }
    // What keepalived reports and replaces, lbha warns about and replaces.
    let warnings = parse(text, &path()).unwrap_err().warnings;
    let w: Vec<(Option<usize>, &str)> = warnings
        .iter()
        .map(|d| (d.line, d.message.as_str()))
        .collect();
    assert!(
        w.iter()
            .any(|(l, m)| *l == Some(1) && m.contains("no `script`: keepalived removes")),
        "{w:#?}"
    );
    assert!(
        w.iter()
            .any(|(l, m)| *l == Some(9) && m.contains("keepalived uses its default 100")),
        "{w:#?}"
    );
    assert!(
        w.iter()
            .any(|(l, m)| *l == Some(25) && m.contains("does not track it")),
        "{w:#?}"
    );
}

#[test]
fn config_keepalived_structure_errors() {
    let errs = errors("}\nvrrp_instance VI_1 {\n  interface eth1\n  virtual_router_id 1\n");
    let e = at(&errs);
    // The extra `}` is keepalived's warning (ignored); the missing one is
    // an error.
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, 4);
    assert!(
        e[0].1
            .contains("missing `}` at the end of the file for the `{` on line 2")
    );

    let errs = errors("vrrp_instance VI_1\nvrrp_script\n{ }\n");
    let e = at(&errs);
    assert!(e[0].1.contains("needs a `{ ... }` block"), "{e:?}");
    assert!(
        e.iter()
            .any(|(_, m)| m.contains("`vrrp_script` needs a name"))
    );
}

/// `auth_type AH`, with keepalived's meaning: the password is the
/// HMAC-MD5 key, a non-owner's `state MASTER` starts BACKUP, IPv6 and
/// strict mode drop it; the TOML form says `auth_type = "ah"`.
#[test]
fn config_keepalived_auth_ah() {
    let loaded = load(&instance_with(
        "    state MASTER\n    priority 150\n    authentication {\n        auth_type AH\n        auth_pass ahsecret\n    }",
    ));
    let i = &loaded.config.instances[0];
    assert_eq!(i.auth_pass.as_deref(), Some("ahsecret"));
    assert_eq!(i.auth_type, crate::AuthType::Ah);
    assert_eq!(i.initial_state, InitialState::Backup);
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.message.contains("`state MASTER` with AH authentication")),
        "{:?}",
        loaded.warnings
    );
    let toml = crate::to_toml(&loaded.config);
    assert!(toml.contains("auth_type = \"ah\""), "{toml}");
    let again = crate::parse_toml(&toml, Path::new("t")).unwrap();
    assert_eq!(again.config.instances[0].auth_type, crate::AuthType::Ah);
    // The address owner keeps MASTER.
    let owner = load(&instance_with(
        "    state MASTER\n    priority 255\n    authentication {\n        auth_type AH\n        auth_pass ahsecret\n    }",
    ));
    assert_eq!(
        owner.config.instances[0].initial_state,
        InitialState::Master
    );
    // PASS is unchanged, and says nothing of AH in TOML.
    let pass = load(&instance_with(
        "    authentication {\n        auth_type PASS\n        auth_pass secret\n    }",
    ));
    assert_eq!(pass.config.instances[0].auth_type, crate::AuthType::Pass);
    assert!(!crate::to_toml(&pass.config).contains("auth_type"));
    // Without a password: no authentication, as keepalived.
    let none = load(&instance_with(
        "    authentication {\n        auth_type AH\n    }",
    ));
    assert_eq!(none.config.instances[0].auth_pass, None);
    assert_eq!(none.config.instances[0].auth_type, crate::AuthType::Pass);
}

#[test]
fn config_keepalived_auth_variants() {
    let loaded = load(&instance_with(
        "    authentication {\n        auth_pass secret\n    }",
    ));
    assert_eq!(loaded.config.instances[0].auth_pass, None);
    assert_eq!(loaded.warnings.len(), 1);
    assert_eq!(loaded.warnings[0].line, Some(4));

    let loaded = load(&instance_with(
        "    authentication {\n        auth_type PASS\n        auth_pass 123456789\n    }",
    ));
    assert_eq!(
        loaded.config.instances[0].auth_pass.as_deref(),
        Some("123456789")
    );
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].message.contains("first 8 characters"));
    assert_eq!(loaded.warnings[0].line, Some(4));

    // keepalived ignores PASS without a password, and says so.
    let loaded = load(&instance_with(
        "    authentication {\n        auth_type PASS\n    }",
    ));
    assert_eq!(loaded.config.instances[0].auth_pass, None);
    assert!(
        loaded.warnings[0]
            .message
            .contains("without an `auth_pass`")
    );
}

/// keepalived clears `nopreempt` (and `preempt_delay`) on a MASTER and on
/// the address owner, and says so: lbha preempts then too.
#[test]
fn config_keepalived_nopreempt_with_master_is_cleared() {
    let loaded = load(&instance_with(
        "    state MASTER\n    priority 150\n    nopreempt\n    preempt_delay 5",
    ));
    let i = &loaded.config.instances[0];
    assert!(i.preempt, "keepalived preempts");
    assert_eq!(i.preempt_delay, Duration::ZERO);
    let w = at(&loaded.warnings);
    assert_eq!(w.len(), 2, "{w:?}");
    assert_eq!(w[0].0, 6);
    assert!(
        w[0].1
            .contains("`nopreempt` does not work with `state MASTER`")
    );
    assert_eq!(w[1].0, 7);

    let owner = load(&instance_with("    priority 255\n    nopreempt"));
    assert!(owner.config.instances[0].preempt);
    assert_eq!(
        owner.config.instances[0].initial_state,
        InitialState::Master
    );

    let backup = load(&instance_with("    state BACKUP\n    nopreempt"));
    assert!(!backup.config.instances[0].preempt);
    assert!(backup.warnings.is_empty(), "{:?}", backup.warnings);
}

#[test]
fn config_keepalived_source_checking_and_down_timer_defaults() {
    let loaded = load(&instance_with(
        "    unicast_peer {\n        10.0.0.3\n    }",
    ));
    let i = &loaded.config.instances[0];
    assert!(i.check_unicast_src, "on by default, unlike keepalived");
    assert_eq!(i.down_timer_adverts, 3, "RFC 5798's 3 intervals");
}

#[test]
fn config_keepalived_down_timer_adverts_range() {
    for (body, line) in [
        ("    down_timer_adverts 0", 4),
        ("    down_timer_adverts 101", 4),
        ("    down_timer_adverts x", 4),
    ] {
        let errs = errors(&instance_with(body));
        assert_eq!(errs.len(), 1, "{body}: {errs:?}");
        assert_eq!(errs[0].line, Some(line), "{body}");
        assert!(errs[0].message.contains("`down_timer_adverts`"), "{errs:?}");
    }
    for n in [1, 100] {
        let loaded = load(&instance_with(&format!("    down_timer_adverts {n}")));
        assert_eq!(loaded.config.instances[0].down_timer_adverts, n);
    }
    let errs = errors(&format!(
        "global_defs {{\n    vrrp_down_timer_adverts 101\n}}\n{}",
        instance_with("")
    ));
    assert_eq!(at(&errs)[0].0, 2, "{errs:?}");
    assert!(errs[0].message.contains("must be 1..=100"), "{errs:?}");
}

/// More unicast peers than lbha can check sources against: an error
/// naming the way out, which `--no-check-unicast-src` (an adjustment
/// before validation) takes.
#[test]
fn config_keepalived_too_many_peers_to_check() {
    let peers: String = (1..=9).map(|i| format!("        10.0.0.{i}\n")).collect();
    let text = instance_with(&format!("    unicast_peer {{\n{peers}    }}"));
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    // The line of the ninth peer.
    assert_eq!(errs[0].line, Some(13), "{errs:?}");
    assert!(
        errs[0].message.contains("at most 8")
            && errs[0].message.contains("(this lists 9)")
            && errs[0].message.contains("--no-check-unicast-src"),
        "{errs:?}"
    );
    let eight: String = (1..=8).map(|i| format!("        10.0.0.{i}\n")).collect();
    load(&instance_with(&format!(
        "    unicast_peer {{\n{eight}    }}"
    )));

    let unfiltered = super::parse(
        &text,
        &path(),
        &KeepalivedOptions::default(),
        &NoFiles,
        &mut |config| {
            for instance in &mut config.instances {
                instance.check_unicast_src = false;
            }
        },
    )
    .expect("nine peers without source checking");
    assert_eq!(unfiltered.config.instances[0].unicast_peers.len(), 9);
    assert!(!unfiltered.config.instances[0].check_unicast_src);
}

#[test]
fn config_load_any_dispatches_on_the_extension() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let from_conf = crate::load_any(&examples.join("keepalived.conf")).unwrap();
    let from_toml = crate::load_any(&examples.join("lbha.toml")).unwrap();
    assert_eq!(from_conf.config, from_toml.config);
    let missing = examples.join("no-such-file.conf");
    let ConfigErrors { errors: errs, .. } = crate::load_any(&missing).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].file, missing);
    assert_eq!(errs[0].line, None);
    assert!(errs[0].message.starts_with("cannot read: "));
}

#[test]
fn config_keepalived_errors_display_with_file_and_line() {
    let err = parse(&instance_with("    advert_int 0"), &path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "1 error(s) in configuration:\n  /etc/keepalived/keepalived.conf:4: vrrp_instance `VI_1`: VRRPv2 `advert_int` must be whole seconds 1..=255 (got 0 s); use VRRPv3 for sub-second adverts"
    );
}

/// keepalived re-splits a script line with quotes and escapes, takes the
/// second word as the command line and runs that word's words.
#[test]
fn config_keepalived_scripts_split_as_keepalived() {
    let text = |script: &str| {
        format!(
            "vrrp_script chk {{\n    script {script}\n}}\n{}",
            instance_with("    track_script {\n        chk\n    }")
        )
    };
    for (script, command, argv) in [
        (
            "'/usr/bin/killall -0 haproxy'",
            "/usr/bin/killall -0 haproxy",
            &["/usr/bin/killall", "-0", "haproxy"][..],
        ),
        (
            "\"/usr/bin/killall -0 haproxy\"",
            "/usr/bin/killall -0 haproxy",
            &["/usr/bin/killall", "-0", "haproxy"][..],
        ),
        (
            r#""/bin/echo \"x y\" 'z w'""#,
            r#"/bin/echo "x y" 'z w'"#,
            &["/bin/echo", "x y", "z w"][..],
        ),
        (r"/bin/echo\ a", "/bin/echo a", &["/bin/echo", "a"][..]),
    ] {
        let loaded = load(&text(script));
        let check = &loaded.config.checks[0];
        assert_eq!(check.script, command, "{script}");
        assert_eq!(
            crate::split_command(&check.script).unwrap(),
            argv,
            "{script}"
        );
    }
    let unquoted = load(&text("/usr/bin/killall -0 haproxy"));
    assert_eq!(unquoted.config.checks[0].script, "/usr/bin/killall");
    assert!(
        unquoted.warnings[0]
            .message
            .contains("keepalived runs only")
    );
    let errs = errors(&text("'/usr/bin/killall -0"));
    assert!(errs[0].message.contains("cannot be split"), "{errs:?}");
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let text = "{\n".repeat(50_000);
    let errors = parse(&text, std::path::Path::new("deep.conf"))
        .unwrap_err()
        .errors;
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("nested more than")),
        "{errors:?}"
    );
}

#[test]
fn empty_quoted_names_are_errors() {
    let text = "vrrp_script \"\" {\n  script true\n}\nvrrp_instance \"\" {\n  interface eth0\n  virtual_router_id 5\n}\n";
    let errors = parse(text, std::path::Path::new("e.conf"))
        .unwrap_err()
        .errors;
    assert!(errors.len() >= 2, "{errors:?}");
}

/// Parses with a configuration id and in-memory files.
fn parse_with(
    text: &str,
    config_id: Option<&str>,
    files: &[(&str, &str)],
) -> Result<Loaded, ConfigErrors> {
    let files = include::MemoryFiles(
        files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), (*t).to_string()))
            .collect(),
    );
    super::parse(
        text,
        &path(),
        &KeepalivedOptions {
            config_id: config_id.map(str::to_string),
        },
        &files,
        &mut |_| {},
    )
}

/// keepalived's `vrrp_complete_instance`: without `priority` a MASTER is
/// the address owner (255); without `state`, priority 255 starts MASTER.
#[test]
fn config_keepalived_state_and_priority_default_from_each_other() {
    let master = load(&instance_with("    state MASTER"));
    assert_eq!(master.config.instances[0].priority, 255);
    assert_eq!(
        master.config.instances[0].initial_state,
        InitialState::Master
    );
    let owner = load(&instance_with("    priority 255"));
    assert_eq!(
        owner.config.instances[0].initial_state,
        InitialState::Master
    );
    let plain = load(&instance_with(""));
    assert_eq!(plain.config.instances[0].priority, 100);
    assert_eq!(
        plain.config.instances[0].initial_state,
        InitialState::Backup
    );
    let second = load(&instance_with("    state MASTER\n    state BACKUP"));
    assert_eq!(
        second.config.instances[0].initial_state,
        InitialState::Master,
        "keepalived ignores BACKUP after MASTER"
    );
    let errs = errors(&instance_with("    state master"));
    assert!(errs[0].message.contains("in capitals"), "{errs:?}");
}

#[test]
fn config_keepalived_conditional_lines_follow_the_config_id() {
    let text = instance_with(
        "@lb1 priority 200\n@lb2 priority 150\n@^lb1 state BACKUP\n@lb1\tstate MASTER",
    );
    let lb1 = parse_with(&text, Some("lb1"), &[]).unwrap();
    assert_eq!(lb1.config.instances[0].priority, 200);
    assert_eq!(lb1.config.instances[0].initial_state, InitialState::Master);
    let lb2 = parse_with(&text, Some("lb2"), &[]).unwrap();
    assert_eq!(lb2.config.instances[0].priority, 150);
    assert_eq!(lb2.config.instances[0].initial_state, InitialState::Backup);
    let other = parse_with(&text, None, &[]).unwrap();
    assert_eq!(other.config.instances[0].priority, 100);
    assert!(other.warnings.is_empty(), "{:?}", other.warnings);
}

#[test]
fn config_keepalived_definitions_expand_as_keepalived() {
    let text = r#"$IF=eth1
$VIP=10.0.0.100
$PEERS=10.0.0.2 \
    10.0.0.3
$PRIO=@lb1 priority 200
vrrp_instance VI_1 {
    interface $IF
    virtual_router_id 7
    $PRIO
    unicast_peer {
        $PEERS
    }
    virtual_ipaddress {
        ${VIP}/24 label ${IF}:1
    }
    notify_master "/bin/echo ${_INSTANCE}"
}
"#;
    let loaded = parse_with(text, Some("lb1"), &[]).unwrap();
    let i = &loaded.config.instances[0];
    assert_eq!(i.interface, "eth1");
    assert_eq!(i.priority, 200, "an expansion starting with @ is checked");
    assert_eq!(
        i.unicast_peers,
        vec![IpAddr::from([10, 0, 0, 2]), IpAddr::from([10, 0, 0, 3])],
        "a multi-line definition gives one line per line"
    );
    assert_eq!(i.virtual_addresses[0].address, Ipv4Addr::new(10, 0, 0, 100));
    assert_eq!(i.virtual_addresses[0].label.as_deref(), Some("eth1:1"));
    assert_eq!(i.notify.master.as_deref(), Some("/bin/echo lb1"));
    // `$VIP/24` is no reference (`/` may not follow a name): left as
    // written, as keepalived leaves it, and so not an address.
    let errs = parse_with(
        &text.replace("${VIP}/24 label", "$VIP/24 label"),
        Some("lb1"),
        &[],
    )
    .unwrap_err()
    .errors;
    assert!(
        errs[0]
            .message
            .contains("`$VIP/24` is not an IPv4 or IPv6 address"),
        "{errs:?}"
    );
}

#[test]
fn config_keepalived_definitions_cannot_loop() {
    let errs = errors("$A=x $A\nvrrp_instance $A {\n}\n");
    assert!(
        errs.iter().any(|e| e.message.contains("expand more than")),
        "{errs:?}"
    );
    let errs = errors(&instance_with("    priority ${_RANDOM 1 10}"));
    assert!(
        errs[0].message.contains("`$_RANDOM` is not supported"),
        "{errs:?}"
    );
}

/// keepalived reads `unicast_src_ip 10.0.0.1/24` (and peers) without the
/// prefix, and `a-b` ranges as their first address.
#[test]
fn config_keepalived_source_and_peer_prefixes_are_dropped() {
    let loaded = load(&instance_with(
        "    unicast_src_ip 10.0.0.1/24\n    unicast_peer {\n        10.0.0.2/32\n        10.0.0.3-9\n    }",
    ));
    let i = &loaded.config.instances[0];
    assert_eq!(i.unicast_src, Some(Ipv4Addr::new(10, 0, 0, 1).into()));
    assert_eq!(
        i.unicast_peers,
        vec![IpAddr::from([10, 0, 0, 2]), IpAddr::from([10, 0, 0, 3])]
    );
    let errs = errors(&instance_with("    unicast_src_ip x.x.x.x"));
    assert!(
        errs[0].message.contains("is not an IPv4 or IPv6 address"),
        "not an address at all: {errs:?}"
    );
}

/// `vrrp_strict`: no authentication, only the owner starts MASTER, no
/// preempt_delay, no unicast peers, and accept mode off by default.
#[test]
fn config_keepalived_strict_mode_rules() {
    let text = format!(
        "global_defs {{\n    vrrp_strict\n}}\n{}",
        "vrrp_instance VI_1 {\n    interface eth1\n    virtual_router_id 1\n    version 3\n    state MASTER\n    priority 200\n    accept\n    preempt_delay 5\n    virtual_ipaddress {\n        10.0.0.100\n    }\n}\n"
    );
    let loaded = load(&text);
    let i = &loaded.config.instances[0];
    assert_eq!(i.initial_state, InitialState::Backup, "not the owner");
    assert_eq!(i.preempt_delay, Duration::ZERO);
    assert!(i.accept, "VRRPv3 strict keeps an explicit `accept`");
    assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);

    let auth = load(&format!(
        "global_defs {{\n    vrrp_strict\n}}\n{}",
        "vrrp_instance VI_1 {\n    interface eth1\n    virtual_router_id 1\n    priority 255\n    authentication {\n        auth_type PASS\n        auth_pass secret\n    }\n    virtual_ipaddress {\n        10.0.0.100\n    }\n}\n"
    ));
    assert_eq!(auth.config.instances[0].auth_pass, None);
    assert!(
        auth.warnings[0]
            .message
            .contains("strict mode has no authentication")
    );

    let errs = errors(&format!(
        "global_defs {{\n    vrrp_strict\n}}\n{}",
        instance_with("    unicast_peer {\n        10.0.0.2\n    }")
    ));
    let e = at(&errs);
    assert!(
        e.iter().any(|(_, m)| m.contains("requires at least one")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|(_, m)| m.contains("unicast peers in strict mode")),
        "{e:?}"
    );
    assert!(!e.iter().any(|(_, m)| m.contains("accept")), "{e:?}");
}

/// keepalived's accept mode (vrrp_complete_instance): `accept` /
/// `no_accept`, the last one wins; unset, on unless strict mode (the owner
/// always); VRRPv2 strict resets `accept` on a non-owner with a warning.
#[test]
fn config_keepalived_accept_mode() {
    let strict = |body: &str| {
        format!(
            "global_defs {{\n    vrrp_strict\n}}\nvrrp_instance VI_1 {{\n    interface eth1\n    virtual_router_id 1\n{body}\n    virtual_ipaddress {{\n        10.0.0.100\n    }}\n}}\n"
        )
    };
    let accept = |text: &str| load(text).config.instances[0].accept;
    assert!(accept(&instance_with("")), "on by default");
    assert!(!accept(&instance_with("    no_accept")));
    assert!(
        accept(&instance_with("    no_accept\n    accept")),
        "last wins"
    );
    assert!(
        !accept(&instance_with("    accept\n    no_accept")),
        "last wins"
    );
    assert!(!accept(&strict("    version 3")), "strict: off by default");
    assert!(accept(&strict("    version 3\n    accept")));
    assert!(
        accept(&strict("    priority 255")),
        "strict: the owner accepts"
    );
    let v2 = load(&strict("    accept"));
    assert!(
        !v2.config.instances[0].accept,
        "VRRPv2 strict resets accept"
    );
    assert!(
        v2.warnings.iter().any(|w| w.message.contains("RFC 3768")),
        "{:?}",
        v2.warnings
    );
    // The native file says the same, and reads back the same.
    let config = load(&instance_with("    no_accept")).config;
    let toml = crate::to_toml(&config);
    assert!(toml.contains("accept = false"), "{toml}");
    let again = crate::parse_toml(&toml, &path()).unwrap().config;
    assert_eq!(again.instances[0], config.instances[0]);
}

#[test]
fn config_keepalived_virtual_address_options_are_kept() {
    let loaded = load(&instance_with(
        "    virtual_ipaddress {\n        10.0.0.100/24 dev eth1 label eth1:vip brd +\n        10.0.0.101/24 brd - scope global\n    }",
    ));
    let v = &loaded.config.instances[0].virtual_addresses;
    assert_eq!(v[0].dev.as_deref(), Some("eth1"));
    assert_eq!(v[0].label.as_deref(), Some("eth1:vip"));
    assert_eq!(v[0].broadcast, Some(Ipv4Addr::new(10, 0, 0, 255)));
    assert_eq!(v[1].broadcast, Some(Ipv4Addr::new(10, 0, 0, 0)));
    assert_eq!(v[1].scope, None);
    // And TOML keeps them too.
    let again = crate::parse_toml(&crate::to_toml(&loaded.config), Path::new("t")).unwrap();
    assert_eq!(again.config, loaded.config);

    let errs = errors(&instance_with(
        "    virtual_ipaddress {\n        10.0.0.101 scope link\n        10.0.0.102 peer 10.0.0.1\n        10.0.0.103 dev\n    }",
    ));
    let e = at(&errs);
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(e[0].1.contains("`scope link`"));
    assert!(e[1].1.contains("`peer 10.0.0.1`"));
    assert!(e[2].1.contains("`dev` needs a value"));
    // Another interface than the instance's: the address goes there, as
    // with keepalived (the agent adds it and sends its ARP on eth2).
    let other = load(&instance_with(
        "    virtual_ipaddress {\n        10.0.0.100/24 dev eth2\n    }",
    ));
    let vip = &other.config.instances[0].virtual_addresses[0];
    assert_eq!(vip.dev.as_deref(), Some("eth2"));
}

#[test]
fn config_keepalived_include_reads_globs_relative_to_the_including_file() {
    let main =
        "include conf.d/*.conf\ninclude /etc/keepalived/{a,b}.extra\nincludem missing.conf\n";
    let files = [
        (
            "/etc/keepalived/conf.d/20-vi2.conf",
            "vrrp_instance VI_2 {\n  interface eth1\n  virtual_router_id 2\n  include ../vips/vi2\n}\n",
        ),
        (
            "/etc/keepalived/conf.d/10-vi1.conf",
            "vrrp_instance VI_1 {\n  interface eth1\n  virtual_router_id 1\n  advert_int 0\n}\n",
        ),
        (
            "/etc/keepalived/vips/vi2",
            "virtual_ipaddress {\n  10.0.0.2\n}\n",
        ),
        (
            "/etc/keepalived/a.extra",
            "vrrp_script chk {\n  script true\n}\n",
        ),
    ];
    let ConfigErrors { errors, .. } = parse_with(main, None, &files).unwrap_err();
    let e: Vec<(String, Option<usize>, &str)> = errors
        .iter()
        .map(|d| (d.file.display().to_string(), d.line, d.message.as_str()))
        .collect();
    assert_eq!(e.len(), 2, "{e:#?}");
    assert_eq!(e[0].0, "/etc/keepalived/keepalived.conf");
    assert_eq!(e[0].1, Some(3));
    assert!(e[0].2.contains("`includem missing.conf` names no file"));
    assert_eq!(e[1].0, "/etc/keepalived/conf.d/10-vi1.conf");
    assert_eq!(e[1].1, Some(4), "the error names the included file's line");

    let fixed: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| {
            (
                *p,
                if p.ends_with("10-vi1.conf") {
                    "vrrp_instance VI_1 {\n  interface eth1\n  virtual_router_id 1\n}\n"
                } else {
                    *t
                },
            )
        })
        .collect();
    let loaded = parse_with(&main.replace("includem missing.conf\n", ""), None, &fixed).unwrap();
    let names: Vec<&str> = loaded
        .config
        .instances
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(names, ["VI_1", "VI_2"], "sorted as glob sorts");
    assert_eq!(
        loaded.config.instances[1].virtual_addresses,
        vec![VirtualAddress::new(Ipv4Addr::new(10, 0, 0, 2), 32)]
    );
    assert_eq!(loaded.config.checks[0].name, "chk");
    // The missing `b.extra` of the braces: a warning with its line.
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert_eq!(loaded.warnings[0].line, Some(2));
    // Later diagnostics (validation, host checks) map positions too.
    let pos = loaded.lines.instance(1).line("vrid").unwrap();
    let d = loaded.diagnostic(Some(pos), "x");
    assert_eq!(d.file, PathBuf::from("/etc/keepalived/conf.d/20-vi2.conf"));
    assert_eq!(d.line, Some(3));
}

#[test]
fn config_keepalived_include_of_itself_is_an_error_not_a_loop() {
    let errs = parse_with(
        "include keepalived.conf\n",
        None,
        &[(
            "/etc/keepalived/keepalived.conf",
            "include keepalived.conf\n",
        )],
    )
    .unwrap_err()
    .errors;
    assert!(errs[0].message.contains("includes itself"), "{errs:?}");
}

/// An unknown keyword is ignored with a warning where keepalived ignores
/// it (no block; or at the top level, a block of nothing keepalived knows
/// there); one with a block inside another block is an error: keepalived
/// would read its lines as the outer block's, and its `}` would close it.
#[test]
fn config_keepalived_unknown_keywords() {
    let errs = errors(&instance_with(
        "    priorty 200\n    foo {\n        bar\n    }",
    ));
    let e = at(&errs);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].0, 5, "{e:?}");
    assert!(
        e[0].1
            .contains("reads the lines of its block as if they were outside it")
    );
    // A typo: ignored as keepalived ignores it, priority 100.
    let loaded = load(&instance_with("    priorty 200"));
    assert_eq!(loaded.config.instances[0].priority, 100);
    let w = at(&loaded.warnings);
    assert!(
        w.iter().any(|(l, m)| *l == 4
            && m.contains("`priorty` is not a keepalived keyword here")
            && m.contains("ignores it, and so does lbha")),
        "{w:#?}"
    );
    // A block closed too early (a corpus file does this): the instance's
    // `track_script` lands at the top level, where keepalived ignores it
    // and the extra `}`; so the instance tracks nothing, in both.
    let text = "vrrp_script chk {\n    script true\n}\nvrrp_instance VI_1 {\n    interface eth1\n    virtual_router_id 1\n}\n    track_script {\n        chk\n    }\n}\n";
    let loaded = load(text);
    assert!(loaded.config.instances[0].track.is_empty());
    let w = at(&loaded.warnings);
    assert!(
        w.iter().any(|(l, m)| *l == 8
            && m.contains("`track_script` is not a keepalived keyword here")
            && m.contains("may have closed the instance early")),
        "{w:#?}"
    );
    assert!(
        w.iter()
            .any(|(l, m)| *l == 11 && m.contains("`}` without a matching `{`")),
        "{w:#?}"
    );
    // At the top level too, a block holding a top-level keyword is read by
    // keepalived: refused.
    let e = errors(
        "foo {\n    vrrp_instance VI_1 {\n        interface eth1\n        virtual_router_id 1\n    }\n}\n",
    );
    assert!(
        e[0].message.contains("reads the lines of its block"),
        "{e:#?}"
    );
}

#[test]
fn config_keepalived_per_script_users() {
    let same = load(&format!(
        "global_defs {{\n    script_user root root\n}}\nvrrp_script c {{\n    script true\n    user root\n}}\n{}",
        instance_with("    notify_master /x.sh root root")
    ));
    assert!(same.warnings.is_empty(), "{:?}", same.warnings);
    let errs = errors(&instance_with("    notify_master /x.sh nobody"));
    assert!(errs[0].message.contains("runs as `nobody`"), "{errs:?}");
}

#[test]
fn config_keepalived_notify_first_wins_and_stop_is_kept() {
    let loaded = load(&instance_with(
        "    notify_master /a.sh\n    notify_master /b.sh\n    notify_stop /stop.sh",
    ));
    let n = &loaded.config.instances[0].notify;
    assert_eq!(n.master.as_deref(), Some("/a.sh"));
    assert_eq!(n.stop.as_deref(), Some("/stop.sh"));
    assert!(loaded.warnings[0].message.contains("keeps the first"));
}

#[test]
fn config_keepalived_v3_authentication_is_dropped() {
    let loaded = load(&instance_with(
        "    version 3\n    authentication {\n        auth_type PASS\n        auth_pass x\n    }\n    virtual_ipaddress {\n        10.0.0.1\n    }",
    ));
    assert_eq!(loaded.config.instances[0].auth_pass, None);
    assert!(
        loaded.warnings[0]
            .message
            .contains("VRRPv3 has no authentication")
    );
}

fn warnings_of(loaded: &Loaded) -> Vec<(usize, &str)> {
    at(&loaded.warnings)
}

/// keepalived 2.2.7's family rules (vrrp_parser.c, vrrp_data.c,
/// `keepalived -t` on the same files): the first address read sets the
/// family, a later one of the other family is reported and left out (exit
/// 5: it runs without it); excluded addresses may be of either family.
#[test]
fn config_keepalived_ipv6_instance_family_follows_the_first_address() {
    let loaded = load(&instance_with(
        "    virtual_ipaddress {\n        fe80::10/64\n        2001:db8::10/64\n        10.0.0.5/24\n    }\n    virtual_ipaddress_excluded {\n        10.0.0.6/24\n        2001:db8::11\n    }",
    ));
    let i = &loaded.config.instances[0];
    assert_eq!(i.family(), Family::V6);
    assert_eq!(
        i.version, 3,
        "IPv6 defaults to VRRPv3, whatever vrrp_version says"
    );
    let addrs: Vec<(String, u8, bool)> = i
        .virtual_addresses
        .iter()
        .map(|v| (v.address.to_string(), v.prefix, v.excluded))
        .collect();
    assert_eq!(
        addrs,
        vec![
            ("fe80::10".into(), 64, false),
            ("2001:db8::10".into(), 64, false),
            ("10.0.0.6".into(), 24, true),
            ("2001:db8::11".into(), 128, true),
        ]
    );
    let w = warnings_of(&loaded);
    assert!(
        w.iter().any(|(l, m)| *l == 7
            && m.contains("10.0.0.5 is IPv4, but the instance is IPv6")
            && m.contains("leaves it out")),
        "{w:?}"
    );
    // Sources and peers follow the same rule; the family is the first's.
    let loaded = load(&instance_with(
        "    unicast_src_ip 2001:db8::1\n    unicast_peer {\n        10.0.0.2\n        2001:db8::2\n    }\n    virtual_ipaddress {\n        2001:db8::10/64\n    }",
    ));
    let i = &loaded.config.instances[0];
    assert_eq!(i.unicast_src, Some("2001:db8::1".parse().unwrap()));
    assert_eq!(
        i.unicast_peers,
        vec!["2001:db8::2".parse::<IpAddr>().unwrap()]
    );
    assert!(
        warnings_of(&loaded)
            .iter()
            .any(|(l, m)| *l == 6 && m.contains("`unicast_peer` 10.0.0.2 is IPv4")),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn config_keepalived_native_ipv6_and_versions() {
    // `native_ipv6` after an IPv4 source: reported and ignored, so the
    // IPv6 peer and address are the ones left out (keepalived -t: exit 5,
    // "Cannot specify native_ipv6 with IPv4 addresses").
    let text = instance_with(
        "    unicast_src_ip 10.0.0.1\n    native_ipv6\n    unicast_peer {\n        2001:db8::2\n    }\n    virtual_ipaddress {\n        10.0.0.9/24\n    }",
    );
    let loaded = load(&text);
    let i = &loaded.config.instances[0];
    assert_eq!(i.family(), Family::V4);
    assert_eq!(i.version, 2);
    assert!(i.unicast_peers.is_empty());
    let w = warnings_of(&loaded);
    assert!(
        w.iter()
            .any(|(l, m)| *l == 5 && m.contains("`native_ipv6` after IPv4 addresses ignored")),
        "{w:?}"
    );
    // `native_ipv6` first: an IPv4 address after it is left out.
    let loaded = load(&instance_with(
        "    native_ipv6\n    virtual_ipaddress {\n        fe80::1/64\n        10.0.0.9/24\n    }",
    ));
    let i = &loaded.config.instances[0];
    assert_eq!((i.family(), i.version), (Family::V6, 3));
    assert_eq!(i.virtual_addresses.len(), 1);
    // `version 2` after IPv6 addresses: ignored (keepalived: "conflicts
    // with configured or deduced version"), VRRPv3.
    let loaded = load(&instance_with(
        "    virtual_ipaddress {\n        fe80::1/64\n    }\n    version 2",
    ));
    assert_eq!(loaded.config.instances[0].version, 3);
    assert!(
        warnings_of(&loaded)
            .iter()
            .any(|(l, m)| *l == 7 && m.contains("`version 2` after IPv6 addresses"))
    );
    // `version 2` before them: keepalived (not strict) runs VRRPv2 over
    // IPv6, which lbha refuses.
    let e = errors(&instance_with(
        "    version 2\n    virtual_ipaddress {\n        fe80::1/64\n    }",
    ));
    assert!(
        e.len() == 1
            && e[0].line == Some(4)
            && e[0]
                .message
                .contains("an IPv6 instance runs VRRP version 3")
            && e[0].message.contains("remove `version 2`"),
        "{e:?}"
    );
    // In strict mode keepalived reports it and uses version 3.
    let loaded = load(&format!(
        "global_defs {{\n    vrrp_strict\n}}\n{}",
        instance_with(
            "    version 2\n    priority 255\n    virtual_ipaddress {\n        fe80::1/64\n    }"
        )
    ));
    assert_eq!(loaded.config.instances[0].version, 3);
    assert!(
        warnings_of(&loaded)
            .iter()
            .any(|(_, m)| m.contains("IPv6 cannot use VRRP version 2"))
    );
}

#[test]
fn config_keepalived_ipv6_link_local_first_and_vrids_per_family() {
    // keepalived only logs a non-link-local first address over multicast.
    let loaded = load(&instance_with(
        "    virtual_ipaddress {\n        2001:db8::10/64\n    }",
    ));
    assert!(
        warnings_of(&loaded)
            .iter()
            .any(|(l, m)| *l == 5 && m.contains("2001:db8::10 is not link-local")),
        "{:?}",
        loaded.warnings
    );
    // VRID 1 over IPv4 and over IPv6 on one interface (keepalived -t: 0).
    let both = format!(
        "{}{}",
        instance_with("    virtual_ipaddress {\n        fe80::1/64\n    }"),
        instance_with("    virtual_ipaddress {\n        10.0.0.1/24\n    }")
            .replace("VI_1", "VI_2"),
    );
    let loaded = load(&both);
    assert_eq!(loaded.config.instances.len(), 2);
    let again = format!(
        "{}{}",
        instance_with("    virtual_ipaddress {\n        fe80::1/64\n    }"),
        instance_with("    virtual_ipaddress {\n        fe80::2/64\n    }").replace("VI_1", "VI_2"),
    );
    let e = errors(&again);
    assert!(
        e.len() == 1 && e[0].message.contains("already used by `VI_1`"),
        "{e:?}"
    );
    // IPv4-only options on an IPv6 address, IPv6 flags lbha does not set.
    let e = errors(&instance_with(
        "    virtual_ipaddress {\n        fe80::1/64 brd +\n        fe80::2/64 -nodad\n        fe80::3/64 preferred_lft 0\n    }",
    ));
    let m: Vec<&str> = e.iter().map(|d| d.message.as_str()).collect();
    assert!(
        m[0].contains("IPv6 addresses have no broadcast address"),
        "{m:?}"
    );
    assert!(m[1].contains("`-nodad` is not supported"), "{m:?}");
    assert!(m[2].contains("`preferred_lft` is not supported"), "{m:?}");
}

/// What `import-keepalived` writes for IPv6 instances loads as TOML with
/// the same meaning (the fuzzer's invariant), a non-link-local first
/// address and a mixed-family excluded list included.
#[test]
fn config_keepalived_ipv6_round_trips_through_toml() {
    let text = format!(
        "{}{}",
        instance_with(
            "    virtual_ipaddress {\n        2001:db8::10/64\n    }\n    virtual_ipaddress_excluded {\n        10.0.0.6/24\n    }"
        ),
        instance_with(
            "    unicast_src_ip fe80::1\n    unicast_peer {\n        fe80::2\n    }\n    virtual_ipaddress {\n        2001:db8::20\n    }"
        )
        .replace("VI_1", "VI_2")
        .replace("virtual_router_id 1", "virtual_router_id 2"),
    );
    let config = load(&text).config;
    let toml = crate::to_toml(&config);
    let again = crate::parse_toml(&toml, Path::new("v6.toml")).unwrap();
    assert_eq!(again.config, config, "{toml}");
}

/// keepalived's `garp_*` settings: its defaults, global_defs' `vrrp_garp_*`
/// as each instance's starting point, instance overrides, the
/// lower-priority settings following the global master ones, strict
/// mode's reset, `vrrp_min_garp`, and bad values ignored with a warning.
#[test]
fn config_keepalived_garp_timing_as_keepalived_reads_it() {
    let secs = Duration::from_secs;
    let plain = load(&instance_with("")).config;
    assert_eq!(plain.instances[0].garp, Garp::default());

    let text = format!(
        "global_defs {{\n    vrrp_garp_master_delay 2\n    vrrp_garp_master_repeat 3\n    vrrp_garp_master_refresh 60\n}}\n{}",
        instance_with("    garp_master_repeat 1\n    garp_master_refresh_repeat 2")
    );
    let g = load(&text).config.instances[0].garp;
    assert_eq!(
        g,
        Garp {
            master_repeat: 1,
            master_delay: secs(2),
            master_refresh: secs(60),
            master_refresh_repeat: 2,
            // The global master settings, not the instance's.
            lower_prio_repeat: 3,
            lower_prio_delay: secs(2),
        }
    );

    let text = format!(
        "global_defs {{\n    vrrp_garp_lower_prio_repeat 0\n}}\n{}",
        instance_with("    garp_lower_prio_delay 7")
    );
    let g = load(&text).config.instances[0].garp;
    assert_eq!((g.lower_prio_repeat, g.lower_prio_delay), (0, secs(7)));

    // vrrp_min_garp: one set, no second burst, no refresh; what was set
    // before it stays.
    let text = format!(
        "global_defs {{\n    vrrp_garp_master_refresh 30\n    vrrp_min_garp\n}}\n{}",
        instance_with("")
    );
    let g = load(&text).config.instances[0].garp;
    assert_eq!(
        (g.master_repeat, g.master_delay, g.master_refresh),
        (1, Duration::ZERO, secs(30))
    );
    assert_eq!(
        (g.lower_prio_repeat, g.lower_prio_delay),
        (1, Duration::ZERO)
    );

    // Strict mode sends no lower-priority repeats, and says so when asked.
    let text = format!(
        "global_defs {{\n    vrrp_strict\n}}\n{}",
        instance_with(
            "    priority 255\n    version 3\n    garp_lower_prio_repeat 4\n    virtual_ipaddress {\n        10.0.0.9\n    }"
        )
    );
    let loaded = load(&text);
    let g = loaded.config.instances[0].garp;
    assert_eq!(
        (g.lower_prio_repeat, g.lower_prio_delay),
        (0, Duration::ZERO)
    );
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.message.contains("resets `garp_lower_prio_repeat` to 0")),
        "{:?}",
        loaded.warnings
    );

    // Bad values: warned about and ignored (a zero master repeat is 1), as
    // keepalived reports and ignores them; the file still loads.
    let loaded = load(&instance_with(
        "    garp_master_repeat 0\n    garp_master_delay soon\n    garp_master_refresh -1\n    garp_lower_prio_repeat 100000",
    ));
    let g = loaded.config.instances[0].garp;
    assert_eq!(g.master_repeat, 1);
    assert_eq!(g.master_delay, secs(5));
    assert_eq!(g.master_refresh, Duration::ZERO);
    assert_eq!(g.lower_prio_repeat, Garp::MAX_REPEAT);
    let lines: Vec<usize> = loaded.warnings.iter().filter_map(|w| w.line).collect();
    assert_eq!(lines, vec![4, 5, 6, 7], "{:?}", loaded.warnings);

    // And what import-keepalived writes means the same.
    let config = load(&text).config;
    let toml = crate::to_toml(&config);
    assert_eq!(
        crate::parse_toml(&toml, Path::new("garp.toml"))
            .unwrap()
            .config,
        config,
        "{toml}"
    );
}

/// keepalived's `track_file` (and `vrrp_track_file`): the definition's
/// defaults (weight 1), an instance's own weight and direction, init_file,
/// and TOML reading it back the same.
#[test]
fn config_keepalived_track_file_definitions_and_weights() {
    let text = format!(
        "track_file maint {{\n    file /run/maint\n    init_file 5 overwrite\n}}\n\
         vrrp_track_file offset {{\n    file \"/run/offset\"\n    weight -3 reverse\n}}\n{}",
        instance_with(
            "    track_file {\n        maint\n        offset\n        maint\n    }\n    track_file {\n        offset weight 7 noreverse\n    }"
        )
    );
    let loaded = load(&text);
    let files: Vec<_> = loaded
        .config
        .track_files
        .iter()
        .map(|f| {
            (
                f.name.as_str(),
                f.path.to_str().unwrap(),
                f.weight,
                f.reverse,
                f.init,
            )
        })
        .collect();
    assert_eq!(
        files,
        [
            (
                "maint",
                "/run/maint",
                1,
                false,
                Some(crate::TrackFileInit {
                    value: 5,
                    overwrite: true
                })
            ),
            ("offset", "/run/offset", -3, true, None),
        ]
    );
    let refs: Vec<_> = loaded.config.instances[0]
        .track_files
        .iter()
        .map(|t| (t.name.as_str(), t.weight, t.reverse))
        .collect();
    // The file's defaults; a repeat is ignored, in the same block or another.
    assert_eq!(
        refs,
        [
            ("maint", Some(1), Some(false)),
            ("offset", Some(-3), Some(true)),
        ]
    );
    let again_lines: Vec<_> = loaded
        .warnings
        .iter()
        .filter(|w| w.message.contains("given again"))
        .map(|w| w.line)
        .collect();
    assert!(again_lines == [Some(15), Some(18)], "{:?}", loaded.warnings);
    let again = crate::parse_toml(&crate::to_toml(&loaded.config), Path::new("t")).unwrap();
    assert_eq!(again.config, loaded.config);
}

/// What keepalived refuses or ignores in a track_file: lbha says so.
#[test]
fn config_keepalived_track_file_errors() {
    // Defined after the instance: keepalived does not find it.
    let errs = errors(&format!(
        "{}track_file late {{\n    file /run/late\n}}\n",
        instance_with("    track_file {\n        late\n    }")
    ));
    assert!(
        at(&errs)[0]
            .1
            .contains("no track_file of that name is defined before"),
        "{errs:?}"
    );
    let errs = errors("track_file f {\n    weight 2\n}\n");
    assert!(at(&errs)[0].1.contains("no `file`"), "{errs:?}");
    let errs = errors("track_file f {\n    file /x\n    weight 255\n}\n");
    assert!(at(&errs)[0].1.contains("-254..=254"), "{errs:?}");
    let errs = errors(&format!(
        "track_file f {{\n    file /x\n}}\n{}",
        instance_with("    track_file {\n        f weight 3 sideways\n    }")
    ));
    assert!(at(&errs)[0].1.contains("unknown weight option"), "{errs:?}");
}

/// The address owner and sync group members without
/// `sync_group_tracking_weight`: weight 1 (the default) becomes 0, any
/// other weight drops the file (keepalived's `vrrp_complete_instance`); a
/// group's own track_file applies to its members.
#[test]
fn config_keepalived_track_file_owner_and_sync_group_rules() {
    let files = "track_file a {\n    file /run/a\n}\ntrack_file b {\n    file /run/b\n    weight 5\n}\ntrack_file c {\n    file /run/c\n}\n";
    let owner = load(&format!(
        "{files}{}",
        instance_with("    priority 255\n    track_file {\n        a\n        b\n    }")
    ));
    let refs: Vec<_> = owner.config.instances[0]
        .track_files
        .iter()
        .map(|t| (t.name.as_str(), t.weight))
        .collect();
    assert_eq!(refs, [("a", Some(0))]);
    let grouped = load(&format!(
        "{files}vrrp_sync_group G {{\n    group {{\n        VI_1\n    }}\n    track_file {{\n        c weight -4\n    }}\n}}\n{}",
        instance_with("    track_file {\n        a\n        b\n    }")
    ));
    let refs: Vec<_> = grouped.config.instances[0]
        .track_files
        .iter()
        .map(|t| (t.name.as_str(), t.weight))
        .collect();
    assert_eq!(refs, [("a", Some(0)), ("c", Some(-4))]);
}

/// global_defs' `notify_fifo` / `vrrp_notify_fifo` with their owners and
/// scripts: `notify_fifo` first, as keepalived writes to it first.
#[test]
fn config_keepalived_notify_fifos() {
    let text = "global_defs {\n    vrrp_notify_fifo /run/vrrp.fifo\n    vrrp_notify_fifo_script \"/usr/local/bin/reader --x\"\n    notify_fifo /run/all.fifo nobody nogroup\n}\n";
    let loaded = load(&format!("{text}{}", instance_with("")));
    let fifos = &loaded.config.global.notify_fifos;
    assert_eq!(
        fifos,
        &[
            crate::NotifyFifo {
                path: "/run/all.fifo".into(),
                owner: Some("nobody".into()),
                group: Some("nogroup".into()),
                script: None,
            },
            crate::NotifyFifo {
                path: "/run/vrrp.fifo".into(),
                owner: None,
                group: None,
                script: Some("/usr/local/bin/reader --x".into()),
            },
        ]
    );
    let again = crate::parse_toml(&crate::to_toml(&loaded.config), Path::new("t")).unwrap();
    assert_eq!(again.config, loaded.config);
    // The same FIFO twice: keepalived needs them to differ.
    let errs = errors(&format!(
        "global_defs {{\n    notify_fifo /run/x\n    vrrp_notify_fifo /run/x\n}}\n{}",
        instance_with("")
    ));
    assert!(
        at(&errs)[0].1.contains("every FIFO name to differ"),
        "{errs:?}"
    );
    // A script without its FIFO runs nothing: a warning.
    let loaded = load(&format!(
        "global_defs {{\n    notify_fifo_script /bin/true\n}}\n{}",
        instance_with("")
    ));
    assert!(loaded.config.global.notify_fifos.is_empty());
    assert!(
        loaded.warnings.iter().any(|w| w.line == Some(2)),
        "{:?}",
        loaded.warnings
    );
}

/// `notify_priority_changes`: the instance's own, else its sync group's,
/// else global_defs' `vrrp_notify_priority_changes` (keepalived's order).
#[test]
fn config_keepalived_notify_priority_changes_precedence() {
    let two = "vrrp_instance A {\n    interface eth1\n    virtual_router_id 1\n    notify_priority_changes false\n}\n\
               vrrp_instance B {\n    interface eth1\n    virtual_router_id 2\n}\n\
               vrrp_instance C {\n    interface eth1\n    virtual_router_id 3\n}\n\
               vrrp_sync_group G {\n    group {\n        C\n    }\n    notify_priority_changes off\n}\n";
    let loaded = load(&format!(
        "global_defs {{\n    vrrp_notify_priority_changes\n}}\n{two}"
    ));
    let on: Vec<bool> = loaded
        .config
        .instances
        .iter()
        .map(|i| i.notify_priority_changes)
        .collect();
    assert_eq!(on, [false, true, false]);
    let again = crate::parse_toml(&crate::to_toml(&loaded.config), Path::new("t")).unwrap();
    assert_eq!(again.config, loaded.config);
    let errs = errors(&instance_with("    notify_priority_changes maybe"));
    assert!(at(&errs)[0].1.contains("must be true or false"), "{errs:?}");
}

/// `dont_track_primary`: keepalived's flag, read into the model and back
/// from TOML.
#[test]
fn config_keepalived_dont_track_primary() {
    let loaded = load(&instance_with("    dont_track_primary"));
    assert!(loaded.config.instances[0].dont_track_primary);
    assert!(!load(&instance_with("")).config.instances[0].dont_track_primary);
    let again = crate::parse_toml(&crate::to_toml(&loaded.config), Path::new("t")).unwrap();
    assert_eq!(again.config, loaded.config);
}

/// The shapes of keepalived's own samples (`doc/samples/keepalived.conf.vrrp.routes`,
/// `.vrrp.rules`): read with keepalived 2.2.7's meaning, and written to
/// TOML and read back unchanged.
#[test]
fn config_keepalived_virtual_routes_and_rules() {
    let text = r"static_rules {
    from 192.168.100.0/24 table 1
    to 192.168.100./24 table 1
}
vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 100
    virtual_ipaddress {
        192.168.200.16
    }
    virtual_routes {
        src 192.168.100.1 192.168.109.0/24 via 192.168.200.254 dev eth1
        192.168.111.0/24 dev eth2 no_track
        192.168.113.0/24 via 192.168.100.252 or 192.168.100.253
        blackhole 192.168.113.1/32
        0.0.0.0/0 gw 192.168.0.1 table 100  # a default gateway in table 100
    }
    virtual_rules {
        from 192.168.200.0/24 table 2
        to 192.168.200./24 table 2
        to 10.9.0.0/16 lookup 7 preference 100 no_track
    }
}
";
    let loaded = load(text);
    let i = &loaded.config.instances[0];
    let routes: Vec<String> = i.virtual_routes.iter().map(ToString::to_string).collect();
    assert_eq!(
        routes,
        vec![
            "src 192.168.100.1 192.168.109.0/24 via 192.168.200.254 dev eth1",
            "192.168.111.0/24 dev eth2 no_track",
            // No `dev`: keepalived cannot track these (and says so).
            "192.168.113.0/24 via 192.168.100.252 or 192.168.100.253 no_track",
            "blackhole 192.168.113.1/32 no_track",
            "0.0.0.0/0 via 192.168.0.1 table 100 no_track",
        ]
    );
    assert!(!i.virtual_routes[0].no_track);
    assert_eq!(i.virtual_routes[0].effective_protocol(), 18);
    let rules: Vec<String> = i.virtual_rules.iter().map(ToString::to_string).collect();
    // The static rule took 16384 (keepalived numbers every rule of the
    // file in order); the broken ones are dropped, as keepalived drops them.
    assert_eq!(
        rules,
        vec![
            "from 192.168.200.0/24 preference 16383 table 2",
            "to 10.9.0.0/16 preference 100 table 7 no_track",
        ]
    );
    let w = at(&loaded.warnings);
    assert!(
        w.iter()
            .any(|(l, m)| *l == 22 && m.contains("keepalived drops this rule, and so does lbha")),
        "{w:#?}"
    );
    assert!(
        w.iter()
            .any(|(l, m)| *l == 21 && m.contains("setting to 16383")),
        "{w:#?}"
    );
    assert!(
        w.iter().any(|(l, m)| *l == 18 && m.contains("deprecated")),
        "{w:#?}"
    );

    let toml = crate::to_toml(&loaded.config);
    assert!(
        toml.contains("virtual_routes = [\"src 192.168.100.1"),
        "{toml}"
    );
    let back = crate::parse_toml(&toml, Path::new("back.toml")).expect("the TOML reads back");
    assert_eq!(back.config.instances[0].virtual_routes, i.virtual_routes);
    assert_eq!(back.config.instances[0].virtual_rules, i.virtual_rules);
}

#[test]
fn config_toml_virtual_routes_and_rules_errors() {
    let base = "[[instance]]\nname = \"a\"\ninterface = \"eth1\"\nvrid = 1\nvirtual_addresses = [\"10.0.0.9/24\"]\n";
    let ok = format!(
        "{base}virtual_routes = [\"10.1.0.0/16 via 10.0.0.1 dev eth1\"]\nvirtual_rules = [\"from 10.0.0.9 table 5 preference 50\"]\n"
    );
    let loaded = crate::parse_toml(&ok, Path::new("a.toml")).expect("valid");
    let i = &loaded.config.instances[0];
    assert_eq!(i.virtual_routes[0].dev.as_deref(), Some("eth1"));
    assert_eq!(i.virtual_rules[0].priority, 50);
    for (bad, expect) in [
        (
            "virtual_routes = [\"10.1.0.0/16 via 10.0.0.1 mtu 9000\"]",
            "`mtu` is not supported",
        ),
        (
            "virtual_routes = [\"via 10.0.0.1\"]",
            "must have a destination",
        ),
        ("virtual_rules = [\"from 10.0.0.0/8\"]", "no action"),
        ("virtual_routes = [7]", "expected a string"),
    ] {
        let text = format!("{base}{bad}\n");
        let e = crate::parse_toml(&text, Path::new("a.toml")).expect_err(bad);
        let all = format!("{e:?}");
        assert!(all.contains(expect), "{bad}: {all}");
        assert!(all.contains("line: Some(6)"), "{bad}: {all}");
    }
}

/// keepalived's `use_vmac [NAME]` / `vmac_xmit_base`: the macvlan's name
/// (`vrrp.VRID` by default), the virtual MAC, where VIPs and adverts go,
/// and keepalived's own adjustments; lossless through TOML.
#[test]
fn config_keepalived_use_vmac_and_xmit_base() {
    let vip =
        "    virtual_ipaddress {\n        10.0.0.100/24\n        10.0.0.101/24 dev eth2\n    }";
    let loaded = load(&instance_with(&format!("    use_vmac\n{vip}")));
    let i = &loaded.config.instances[0];
    assert_eq!(
        i.vmac,
        Some(Vmac {
            name: "vrrp.1".into(),
            xmit_base: false
        })
    );
    assert_eq!(i.virtual_mac(), [0, 0, 0x5e, 0, 1, 1]);
    assert_eq!(
        (i.vip_interface(), i.send_interface()),
        ("vrrp.1", "vrrp.1")
    );
    let again = crate::parse_toml(&crate::to_toml(&loaded.config), Path::new("t")).unwrap();
    assert_eq!(again.config, loaded.config);

    let loaded = load(&instance_with(&format!(
        "    use_vmac vmac-lb\n    vmac_xmit_base\n{vip}"
    )));
    let i = &loaded.config.instances[0];
    assert_eq!(
        i.vmac,
        Some(Vmac {
            name: "vmac-lb".into(),
            xmit_base: true
        })
    );
    assert_eq!((i.vip_interface(), i.send_interface()), ("vmac-lb", "eth1"));
    let text = crate::to_toml(&loaded.config);
    assert!(
        text.contains("vmac = \"vmac-lb\"\nvmac_xmit_base = true\n"),
        "{text}"
    );
    let again = crate::parse_toml(&text, Path::new("t")).unwrap();
    assert_eq!(again.config, loaded.config);

    // Unicast peers: keepalived sets vmac_xmit_base itself, and warns.
    let loaded = load(&instance_with(&format!(
        "    use_vmac\n    unicast_src_ip 10.0.0.1\n    unicast_peer {{\n        10.0.0.2\n    }}\n{vip}"
    )));
    assert_eq!(
        loaded.config.instances[0]
            .vmac
            .as_ref()
            .map(|v| v.xmit_base),
        Some(true)
    );
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.message.contains("need `vmac_xmit_base`")),
        "{:?}",
        loaded.warnings
    );
    // vmac_xmit_base alone is ignored (with a warning), as keepalived does.
    let loaded = load(&instance_with(&format!("    vmac_xmit_base\n{vip}")));
    assert_eq!(loaded.config.instances[0].vmac, None);
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.message.contains("only valid with `use_vmac`"))
    );
    // A name keepalived would refuse: the default name, with a warning.
    let loaded = load(&instance_with(&format!("    use_vmac a/b\n{vip}")));
    assert_eq!(
        loaded.config.instances[0]
            .vmac
            .as_ref()
            .map(|v| v.name.as_str()),
        Some("vrrp.1")
    );
    // What lbha does not do stays an error: a MAC of one's own, IPv6.
    let errs = errors(&instance_with(&format!(
        "    use_vmac vm1 02:00:00:00:00:01\n{vip}"
    )));
    assert!(
        at(&errs)
            .iter()
            .any(|(l, m)| *l == 4 && m.contains("MAC address of one's own")),
        "{errs:?}"
    );
    let errs = errors(&instance_with(
        "    use_vmac\n    virtual_ipaddress {\n        2001:db8::10/64\n    }",
    ));
    assert!(
        at(&errs).iter().any(|(_, m)| m.contains("IPv6 instance")),
        "{errs:?}"
    );
}

/// The native `vmac` / `vmac_xmit_base` keys, and what validation refuses.
#[test]
fn config_keepalived_vmac_in_the_native_syntax_is_checked() {
    let base = "[[instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 5\nvirtual_addresses = [\"10.0.0.100/24\"]\n";
    let ok = crate::parse_toml(&format!("{base}vmac = \"vrrp.5\"\n"), Path::new("t")).unwrap();
    assert_eq!(ok.config.instances[0].vip_interface(), "vrrp.5");
    for (extra, needle) in [
        ("vmac = \"eth0\"\n", "is an instance's interface"),
        ("vmac = \"a:b\"\n", "not a valid interface name"),
        ("vmac_xmit_base = true\n", "needs `vmac`"),
        (
            "vmac = \"vrrp.5\"\nunicast_peers = [\"10.0.0.2\"]\n",
            "needs `vmac_xmit_base = true`",
        ),
    ] {
        let err = crate::parse_toml(&format!("{base}{extra}"), Path::new("t")).unwrap_err();
        assert!(err.to_string().contains(needle), "{extra}: {err}");
    }
}

/// keepalived 2.2.7's `vrrp_complete_instance`: an instance answers a
/// lower-priority advert unless `lower_prio_no_advert` (its own, else
/// global_defs'), and strict mode forces it; `higher_prio_send_advert`
/// likewise, strict mode clearing it.
#[test]
fn config_keepalived_lower_and_higher_priority_adverts() {
    let flags = |text: &str| {
        let loaded = load(text);
        let i = &loaded.config.instances[0];
        (i.lower_prio_no_advert, i.higher_prio_send_advert)
    };
    let vip = "    virtual_ipaddress {\n        10.0.0.9\n    }";
    assert_eq!(
        flags(&instance_with(vip)),
        (false, false),
        "keepalived's defaults"
    );
    assert_eq!(
        flags(&instance_with(&format!(
            "    lower_prio_no_advert\n    higher_prio_send_advert true\n{vip}"
        ))),
        (true, true)
    );
    let global =
        "global_defs {\n    vrrp_lower_prio_no_advert\n    vrrp_higher_prio_send_advert\n}\n";
    assert_eq!(
        flags(&format!("{global}{}", instance_with(vip))),
        (true, true),
        "global_defs' defaults"
    );
    assert_eq!(
        flags(&format!(
            "{global}{}",
            instance_with(&format!(
                "    lower_prio_no_advert false\n    higher_prio_send_advert off\n{vip}"
            ))
        )),
        (false, false),
        "the instance's own win"
    );
    // Strict mode: set and cleared whatever was asked, with a warning each.
    let strict = format!(
        "global_defs {{\n    vrrp_strict\n}}\n{}",
        instance_with(&format!(
            "    priority 255\n    lower_prio_no_advert false\n    higher_prio_send_advert\n{vip}"
        ))
    );
    let loaded = load(&strict);
    let i = &loaded.config.instances[0];
    assert_eq!(
        (i.lower_prio_no_advert, i.higher_prio_send_advert),
        (true, false)
    );
    let warned: Vec<&str> = loaded.warnings.iter().map(|w| w.message.as_str()).collect();
    assert!(
        warned
            .iter()
            .any(|w| w.contains("strict mode requires `lower_prio_no_advert`")),
        "{warned:#?}"
    );
    assert!(
        warned
            .iter()
            .any(|w| w.contains("requires `higher_prio_send_advert` to be clear")),
        "{warned:#?}"
    );
    let e = errors(&instance_with("    lower_prio_no_advert maybe"));
    assert!(e[0].message.contains("must be true or false"), "{e:#?}");
}

/// `unicast_ttl` sets the TTL of unicast adverts; without unicast peers
/// keepalived resets it to 0 (its multicast adverts would then be
/// dropped), so lbha refuses it.
#[test]
fn config_keepalived_unicast_ttl() {
    let unicast = "    unicast_src_ip 10.0.0.1\n    unicast_peer {\n        10.0.0.2\n    }\n    virtual_ipaddress {\n        10.0.0.9\n    }";
    let loaded = load(&instance_with(&format!("    unicast_ttl 64\n{unicast}")));
    assert_eq!(loaded.config.instances[0].unicast_ttl, Some(64));
    // `import-keepalived` keeps it, and the two advert flags.
    let text = instance_with(&format!(
        "    unicast_ttl 64\n    lower_prio_no_advert\n    higher_prio_send_advert\n{unicast}"
    ));
    let config = load(&text).config;
    let toml = crate::to_toml(&config);
    let again = crate::parse_toml(&toml, Path::new("imported.toml")).unwrap();
    assert_eq!(again.config, config, "{toml}");
    assert!(toml.contains("unicast_ttl = 64"), "{toml}");
    let loaded = load(&instance_with(unicast));
    assert_eq!(loaded.config.instances[0].unicast_ttl, None);
    let e = errors(&instance_with(&format!("    unicast_ttl 256\n{unicast}")));
    assert_eq!(at(&e)[0].0, 4, "{e:#?}");
    assert!(e[0].message.contains("0..=255"), "{e:#?}");
    let e = errors(&instance_with(
        "    unicast_ttl 5\n    virtual_ipaddress {\n        10.0.0.9\n    }",
    ));
    assert_eq!(at(&e)[0].0, 4, "{e:#?}");
    assert!(
        e[0].message.contains("`unicast_ttl` needs `unicast_peer`"),
        "{e:#?}"
    );
}
