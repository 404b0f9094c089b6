//! lbha's native configuration: TOML, read with every value's position so
//! that each mistake is reported with its line (all of them, not just the
//! first), and written back by [`to_toml`].
//!
//! The document is walked by hand rather than through serde's derive: derive
//! stops at the first error, and the walk reports every unknown key, wrong
//! type and missing key at once.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use ::toml::{
    Spanned, Value,
    de::{DeArray, DeTable, DeValue},
};

use super::{
    AuthType, Check, Config, ConfigErrors, Diagnostic, FloatingIp, Garp, Global, Heartbeat,
    InitialState, Instance, Loaded, Notify, Probe, SyncGroup, TrackFile, TrackFileInit,
    TrackFileRef, TrackInterface, VirtualAddress, Vmac,
    validate::{FieldLines, Lines, Syntax, finish},
};
use crate::{
    BackendsDown, DEFAULT_DOWN_TIMER_ADVERTS, DOWN_TIMER_ADVERTS_RANGE, FloatingIpConfig,
    HaproxyCheck, HaproxySocket, PathFamily, ReceivePathChoice, ReservedIpv6, TokenSource,
};

type SValue<'i> = Spanned<DeValue<'i>>;

const GLOBAL_KEYS: &[&str] = &[
    "vrrp_version",
    "script_security",
    "script_user",
    "script_group",
    "metrics_listen",
    "status_socket",
    "bpf_pin",
    "bpf_pin_dir",
    "notify_fifos",
];
const NOTIFY_FIFO_KEYS: &[&str] = &["path", "owner", "group", "script"];
const CHECK_KEYS: &[&str] = &[
    "name",
    "script",
    "process",
    "pidfile",
    "tcp",
    "http",
    "haproxy",
    "interval",
    "timeout",
    "weight",
    "weight_reverse",
    "rise",
    "fall",
    "init_fail",
];
const INSTANCE_KEYS: &[&str] = &[
    "name",
    "interface",
    "vrid",
    "priority",
    "version",
    "advert_interval",
    "state",
    "preempt",
    "preempt_delay",
    "unicast_src",
    "unicast_peers",
    "check_unicast_src",
    "down_timer_adverts",
    "auth_pass",
    "auth_type",
    "virtual_addresses",
    "virtual_routes",
    "virtual_rules",
    "track",
    "track_interfaces",
    "track_files",
    "notify_priority_changes",
    "dont_track_primary",
    "lower_prio_no_advert",
    "higher_prio_send_advert",
    "unicast_ttl",
    "vmac",
    "vmac_xmit_base",
    "accept",
    "receive_path",
    "notify",
    "garp",
];
const HAPROXY_KEYS: &[&str] = &[
    "stats_socket",
    "master_socket",
    "config",
    "pidfile",
    "require_frontends",
    "backends",
    "backends_down",
    "backends_weight",
    "reload_grace",
];
const TRACK_INTERFACE_KEYS: &[&str] = &["name", "weight", "reverse"];
const TRACK_FILE_KEYS: &[&str] = &[
    "name",
    "path",
    "weight",
    "reverse",
    "init_value",
    "init_overwrite",
];
const TRACK_FILE_REF_KEYS: &[&str] = &["name", "weight", "reverse"];
const NOTIFY_KEYS: &[&str] = &["master", "backup", "fault", "stop", "any"];
const GARP_KEYS: &[&str] = &[
    "master_repeat",
    "master_delay",
    "master_refresh",
    "master_refresh_repeat",
    "lower_prio_repeat",
    "lower_prio_delay",
];
const SYNC_GROUP_KEYS: &[&str] = &["name", "members", "notify"];
const VIRTUAL_ADDRESS_KEYS: &[&str] = &[
    "address",
    "dev",
    "label",
    "scope",
    "broadcast",
    "peer",
    "excluded",
];
const HEARTBEAT_KEYS: &[&str] = &["listen", "peers", "key_file", "interval"];
const FLOATING_IP_KEYS: &[&str] = &[
    "ip",
    "instance",
    "reserved_ipv6",
    "reserved_ipv6_instance",
    "token_file",
    "token_env",
    "api_url",
    "metadata_url",
    "api_path",
    "droplet_id",
    "peer_droplet_id",
    "recheck_interval",
    "operation_deadline",
    "request_timeout",
    "metadata_timeout",
    "ca_file",
    "keepalive_interval",
];

/// Environment variable the API token is read from when no file is given.
pub const DEFAULT_TOKEN_ENV: &str = "DIGITALOCEAN_TOKEN";

/// Parses lbha's TOML configuration; `adjust` sees the configuration
/// before it is validated.
pub fn parse(
    text: &str,
    path: &Path,
    adjust: &mut dyn FnMut(&mut Config),
) -> Result<Loaded, ConfigErrors> {
    let mut r = Reader::new(text, path);
    let (root, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        for e in syntax_errors {
            let line = e.span().map(|s| r.line(s.start));
            r.errors.push(r.diag(line, e.message().trim().to_string()));
        }
        r.errors.sort_by_key(|d| d.line.unwrap_or(0));
        return Err(ConfigErrors::only(r.errors));
    }

    let mut lines = Lines::default();
    let mut fields = Fields::new(&r, root.get_ref(), 1, "the top level");
    let global = match fields.take("global") {
        Some((_, value)) => {
            if let DeValue::Table(table) = value.get_ref() {
                let line = r.line(value.span().start);
                read_global(&mut r, table, line, &mut lines.global)
            } else {
                r.type_error(value, "global", "a table ([global])");
                Global::default()
            }
        }
        None => Global::default(),
    };
    let mut checks = Vec::new();
    if let Some((_, value)) = fields.take("check") {
        for table in r.tables(value, "check") {
            let mut fl = FieldLines::at(table.1);
            checks.push(read_check(&mut r, table.0, table.1, &mut fl));
            lines.checks.push(fl);
        }
    }
    let mut instances = Vec::new();
    if let Some((_, value)) = fields.take("instance") {
        for table in r.tables(value, "instance") {
            let mut fl = FieldLines::at(table.1);
            instances.push(read_instance(&mut r, table.0, table.1, &mut fl, &global));
            lines.instances.push(fl);
        }
    }
    let floating_ip = match fields.take("floating_ip") {
        Some((_, value)) => {
            if let DeValue::Table(table) = value.get_ref() {
                let line = r.line(value.span().start);
                read_floating_ip(&mut r, table, line, &mut lines.floating_ip)
            } else {
                r.type_error(value, "floating_ip", "a table ([floating_ip])");
                None
            }
        }
        None => None,
    };
    let heartbeat = match fields.take("heartbeat") {
        Some((_, value)) => {
            if let DeValue::Table(table) = value.get_ref() {
                let line = r.line(value.span().start);
                read_heartbeat(&mut r, table, line, &mut lines.heartbeat)
            } else {
                r.type_error(value, "heartbeat", "a table ([heartbeat])");
                None
            }
        }
        None => None,
    };
    let mut sync_groups = Vec::new();
    if let Some((_, value)) = fields.take("sync_group") {
        for table in r.tables(value, "sync_group") {
            let mut fl = FieldLines::at(table.1);
            if let Some(group) = read_sync_group(&mut r, table.0, table.1, &mut fl) {
                sync_groups.push(group);
                lines.sync_groups.push(fl);
            }
        }
    }
    let mut track_files: Vec<TrackFile> = Vec::new();
    if let Some((_, value)) = fields.take("track_file") {
        for (table, line) in r.tables(value, "track_file") {
            if let Some(file) = read_track_file(&mut r, table, line) {
                if track_files.iter().any(|f| f.name == file.name) {
                    r.error(
                        line,
                        format!("[[track_file]] `{}` is defined twice", file.name),
                    );
                } else {
                    track_files.push(file);
                }
            }
        }
    }
    for (instance, fl) in instances.iter().zip(&lines.instances) {
        for t in &instance.track_files {
            if !track_files.iter().any(|f| f.name == t.name) {
                let line = fl.line("track_files").or(fl.table);
                r.errors.push(r.diag(
                    line,
                    format!(
                        "[[instance]] `{}`: `track_files` names `{}`, but no [[track_file]] has that name",
                        instance.name, t.name
                    ),
                ));
            }
        }
    }
    fields.finish(
        &mut r,
        &[
            "global",
            "check",
            "instance",
            "floating_ip",
            "heartbeat",
            "sync_group",
            "track_file",
        ],
    );
    if let Some(FloatingIp {
        instance: Some(name),
        ..
    }) = &floating_ip
        && !instances.iter().any(|i| &i.name == name)
    {
        r.errors.push(r.diag(
            None,
            format!("[floating_ip]: `instance` {name:?} is not a configured [[instance]]"),
        ));
    }
    if let Some(name) = floating_ip
        .as_ref()
        .and_then(|f| f.settings.reserved_ipv6.as_ref())
        .and_then(|v6| v6.instance.as_ref())
        && !instances.iter().any(|i| &i.name == name)
    {
        r.errors.push(r.diag(
            None,
            format!(
                "[floating_ip]: `reserved_ipv6_instance` {name:?} is not a configured [[instance]]"
            ),
        ));
    }

    let mut config = Config {
        global,
        checks,
        instances,
        floating_ip,
        heartbeat,
        sync_groups,
        track_files,
    };
    adjust(&mut config);
    finish(config, &lines, path, Syntax::Toml, r.errors, r.warnings)
}

fn read_global(r: &mut Reader, table: &DeTable, line: usize, fl: &mut FieldLines) -> Global {
    fl.table = Some(line);
    let mut f = Fields::new(r, table, line, "[global]");
    let mut global = Global::default();
    if let Some(v) = f.int(r, fl, "vrrp_version", 0, 255) {
        global.vrrp_version = v as u8;
    }
    if let Some(v) = f.bool(r, fl, "script_security") {
        global.script_security = v;
    }
    global.script_user = f.string(r, fl, "script_user");
    global.script_group = f.string(r, fl, "script_group");
    global.metrics_listen = f.take_with(r, fl, "metrics_listen", |r, v| {
        let text = r.str(v, "metrics_listen")?;
        if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
            Some(addr)
        } else {
            r.error_at(
                v,
                format!("`metrics_listen`: {text:?} is not an address:port"),
            );
            None
        }
    });
    if let Some(path) = f.string(r, fl, "status_socket") {
        global.status_socket = path.into();
    }
    if let Some(path) = f.string(r, fl, "bpf_pin_dir") {
        global.bpf_pin_dir = Some(path.into());
    }
    if f.bool(r, fl, "bpf_pin") == Some(false) {
        global.bpf_pin_dir = None;
    }
    global.notify_fifos = f.list(r, fl, "notify_fifos", read_notify_fifo);
    let mut paths = std::collections::HashSet::new();
    for fifo in &global.notify_fifos {
        if !paths.insert(fifo.path.clone()) {
            r.error(
                fl.line("notify_fifos").unwrap_or(line),
                format!(
                    "[global]: `notify_fifos` lists {} twice; keepalived needs every FIFO name to differ",
                    fifo.path.display()
                ),
            );
        }
    }
    f.finish(r, GLOBAL_KEYS);
    global
}

/// One `notify_fifos` element: `"/run/lbha.fifo"`, or `{ path = "...",
/// owner = "user", group = "group", script = "/usr/local/bin/reader" }`.
fn read_notify_fifo(r: &mut Reader, v: &SValue) -> Option<crate::NotifyFifo> {
    let DeValue::Table(table) = v.get_ref() else {
        let path = r.str(v, "notify_fifos")?;
        return Some(crate::NotifyFifo {
            path: path.into(),
            owner: None,
            group: None,
            script: None,
        });
    };
    let line = r.line(v.span().start);
    let mut f = Fields::new(r, table, line, "notify_fifos element");
    let mut scratch = FieldLines::default();
    let path = f.required_string(r, &mut scratch, "path");
    let owner = f.string(r, &mut scratch, "owner");
    let group = f.string(r, &mut scratch, "group");
    let script = f.string(r, &mut scratch, "script");
    f.finish(r, NOTIFY_FIFO_KEYS);
    if scratch.is_bad("path") {
        return None;
    }
    Some(crate::NotifyFifo {
        path: path.into(),
        owner,
        group,
        script,
    })
}

fn read_floating_ip(
    r: &mut Reader,
    table: &DeTable,
    line: usize,
    fl: &mut FieldLines,
) -> Option<FloatingIp> {
    *fl = FieldLines::at(line);
    let mut f = Fields::new(r, table, line, "[floating_ip]");
    let ip = f.take_with(r, fl, "ip", |r, v| r.ip4(v, "ip"));
    let instance = f.string(r, fl, "instance");
    let reserved_ipv6 = f.take_with(r, fl, "reserved_ipv6", |r, v| {
        let text = r.str(v, "reserved_ipv6")?;
        ReservedIpv6::parse_address(&text)
            .map_err(|e| r.error_at(v, format!("`reserved_ipv6`: {e}")))
            .ok()
    });
    let reserved_ipv6_instance = f.string(r, fl, "reserved_ipv6_instance");
    let token_file = f.string(r, fl, "token_file");
    let token_env = f.string(r, fl, "token_env");
    let api_url = f.string(r, fl, "api_url");
    let metadata_url = f.string(r, fl, "metadata_url");
    let path_family = f.choice(
        r,
        fl,
        "api_path",
        "api_path",
        &[
            ("floating_ips", PathFamily::FloatingIps),
            ("reserved_ips", PathFamily::ReservedIps),
        ],
    );
    let droplet_id = f.int(r, fl, "droplet_id", 1, i64::MAX);
    let peer_droplet_id = f.int(r, fl, "peer_droplet_id", 1, i64::MAX);
    let recheck_interval = f.secs(r, fl, "recheck_interval");
    let operation_deadline = f.secs(r, fl, "operation_deadline");
    let request_timeout = f.secs(r, fl, "request_timeout");
    let metadata_timeout = f.secs(r, fl, "metadata_timeout");
    let ca_file = f.string(r, fl, "ca_file");
    let keepalive_interval = f.secs(r, fl, "keepalive_interval");
    f.finish(r, FLOATING_IP_KEYS);
    if token_file.is_some() && token_env.is_some() {
        r.error(
            line,
            "[floating_ip]: `token_file` and `token_env` exclude each other".into(),
        );
    }
    // An IPv6-only service moves a reserved IPv6 alone; one of the two is
    // needed. A bad value was reported where it is; no second error for it.
    if ip.is_none() && reserved_ipv6.is_none() {
        if !fl.is_bad("ip") && !fl.is_bad("reserved_ipv6") {
            r.error(
                line,
                "[floating_ip]: nothing to move: give `ip` (a floating IPv4), `reserved_ipv6` (a reserved IPv6), or both".into(),
            );
        }
        return None;
    }
    let token = match token_file {
        Some(path) => TokenSource::File(path.into()),
        None => TokenSource::Env(token_env.unwrap_or_else(|| DEFAULT_TOKEN_ENV.into())),
    };
    // The reserved IPv6 is set below, with its instance.
    let mut settings = FloatingIpConfig::with_addresses(ip, None, token);
    if let Some(url) = api_url {
        settings.api_url = url;
    }
    if let Some(url) = metadata_url {
        settings.metadata_url = url;
    }
    if let Some(family) = path_family {
        settings.path_family = family;
    }
    settings.droplet_id = droplet_id.map(|id| id as u64);
    settings.peer_droplet_id = peer_droplet_id.map(|id| id as u64);
    if settings.droplet_id.is_some() && settings.droplet_id == settings.peer_droplet_id {
        r.error(
            line,
            "[floating_ip]: `peer_droplet_id` is `droplet_id`: the peer is another droplet".into(),
        );
    }
    match (reserved_ipv6, reserved_ipv6_instance) {
        (Some(address), instance) => {
            settings.reserved_ipv6 = Some(ReservedIpv6 { address, instance });
        }
        (None, Some(_)) if !fl.is_bad("reserved_ipv6") => r.error(
            line,
            "[floating_ip]: `reserved_ipv6_instance` without `reserved_ipv6`".into(),
        ),
        (None, _) => {}
    }
    settings.ca_file = ca_file.map(PathBuf::from);
    for (value, field) in [
        (recheck_interval, &mut settings.recheck_interval),
        (operation_deadline, &mut settings.operation_deadline),
        (request_timeout, &mut settings.request_timeout),
        (metadata_timeout, &mut settings.metadata_timeout),
        (keepalive_interval, &mut settings.keepalive_interval),
    ] {
        if let Some(value) = value {
            *field = value;
        }
    }
    if let Err(e) = settings.validate() {
        r.error(line, format!("[floating_ip]: {e}"));
    }
    Some(FloatingIp { instance, settings })
}

/// `address:port`, for `key`.
fn socket_addr(r: &mut Reader, v: &SValue, key: &str) -> Option<std::net::SocketAddr> {
    let text = r.str(v, key)?;
    if let Ok(addr) = text.parse() {
        Some(addr)
    } else {
        r.error_at(v, format!("`{key}`: {text:?} is not an address:port"));
        None
    }
}

/// One `[[sync_group]]`: `name`, `members` (instance names), optional
/// `[sync_group.notify]`.
fn read_sync_group(
    r: &mut Reader,
    table: &DeTable,
    line: usize,
    fl: &mut FieldLines,
) -> Option<SyncGroup> {
    let mut f = Fields::new(r, table, line, "[[sync_group]]");
    let name = f.string(r, fl, "name");
    let members = f.list(r, fl, "members", |r, v| r.str(v, "members"));
    let notify = match f.take("notify") {
        Some((key_line, value)) => {
            fl.set("notify", key_line);
            if let DeValue::Table(table) = value.get_ref() {
                let line = r.line(value.span().start);
                read_notify(r, table, line, fl, "[sync_group.notify]")
            } else {
                r.type_error(value, "notify", "a table ([sync_group.notify])");
                fl.mark_bad("notify");
                Notify::default()
            }
        }
        None => Notify::default(),
    };
    f.finish(r, SYNC_GROUP_KEYS);
    if name.is_none() && !fl.is_bad("name") {
        r.error(line, "[[sync_group]]: missing key `name`".into());
    }
    Some(SyncGroup {
        name: name?,
        members,
        notify,
    })
}

fn read_heartbeat(
    r: &mut Reader,
    table: &DeTable,
    line: usize,
    fl: &mut FieldLines,
) -> Option<Heartbeat> {
    *fl = FieldLines::at(line);
    let mut f = Fields::new(r, table, line, "[heartbeat]");
    let listen = f.take_with(r, fl, "listen", |r, v| socket_addr(r, v, "listen"));
    let peers = f.list(r, fl, "peers", |r, v| socket_addr(r, v, "peers"));
    let key_file = f.string(r, fl, "key_file");
    let interval = f.secs(r, fl, "interval");
    f.finish(r, HEARTBEAT_KEYS);
    let mut missing = |key: &str| {
        if !fl.is_bad(key) {
            r.error(line, format!("[heartbeat]: missing key `{key}`"));
        }
    };
    if listen.is_none() {
        missing("listen");
    }
    if key_file.is_none() {
        missing("key_file");
    }
    if peers.is_empty() && !fl.is_bad("peers") {
        r.error(
            line,
            "[heartbeat]: `peers` must name at least one peer".into(),
        );
    }
    let interval = interval.unwrap_or(Heartbeat::DEFAULT_INTERVAL);
    if interval < std::time::Duration::from_millis(10) {
        r.error(
            fl.line("interval").unwrap_or(line),
            "[heartbeat]: `interval` must be at least 0.01 s".into(),
        );
    }
    Some(Heartbeat {
        listen: listen?,
        peers,
        key_file: key_file?.into(),
        interval,
    })
}

fn read_check(r: &mut Reader, table: &DeTable, line: usize, fl: &mut FieldLines) -> Check {
    let mut f = Fields::new(r, table, line, "[[check]]");
    let name = f.required_string(r, fl, "name");
    // Exactly one of the ways to check.
    let script = f.string(r, fl, "script");
    let process = f.string(r, fl, "process").map(Probe::Process);
    let pidfile = f.string(r, fl, "pidfile").map(|p| Probe::Pidfile(p.into()));
    let tcp = f.take_with(r, fl, "tcp", |r, v| {
        let text = r.str(v, "tcp")?;
        if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
            Some(Probe::Tcp(addr))
        } else {
            r.error_at(v, format!("`tcp`: {text:?} is not an address:port"));
            None
        }
    });
    let http = f.take_with(r, fl, "http", |r, v| {
        let text = r.str(v, "http")?;
        if text.starts_with("http://") || text.starts_with("https://") {
            Some(Probe::Http(text))
        } else {
            r.error_at(
                v,
                format!("`http`: {text:?} is not an http:// or https:// URL"),
            );
            None
        }
    });
    let haproxy = f.take_with(r, fl, "haproxy", |r, v| {
        if let DeValue::Table(table) = v.get_ref() {
            let line = r.line(v.span().start);
            read_haproxy(r, table, line).map(Probe::Haproxy)
        } else {
            r.type_error(v, "haproxy", "a table ([check.haproxy])");
            None
        }
    });
    let is_haproxy = haproxy.is_some();
    let probes: Vec<Probe> = [process, pidfile, tcp, http, haproxy]
        .into_iter()
        .flatten()
        .collect();
    let kinds = probes.len() + usize::from(script.is_some());
    if kinds == 0
        && !["script", "process", "pidfile", "tcp", "http", "haproxy"]
            .iter()
            .any(|k| fl.is_bad(k))
    {
        r.error(
            line,
            "[[check]]: one of `script`, `process`, `pidfile`, `tcp`, `http` or `haproxy` is required".into(),
        );
    } else if kinds > 1 {
        r.error(
            line,
            "[[check]]: `script`, `process`, `pidfile`, `tcp`, `http` and `haproxy` exclude each other".into(),
        );
    }
    if kinds == 0 {
        // Reported above (or as a bad value); validation need not repeat it.
        fl.mark_bad("script");
    }
    let script = script.unwrap_or_default();
    let probe = probes.into_iter().next();
    let interval = f.secs(r, fl, "interval").unwrap_or(Duration::from_secs(1));
    let timeout = f.secs(r, fl, "timeout").unwrap_or(if is_haproxy {
        // A serving HAProxy answers `show info` in well under a millisecond;
        // a check that waited a whole interval would see a hang late.
        HaproxyCheck::DEFAULT_TIMEOUT.min(interval)
    } else {
        interval
    });
    let weight = f
        .int(r, fl, "weight", i32::MIN.into(), i32::MAX.into())
        .unwrap_or(0) as i32;
    let weight_reverse = f.bool(r, fl, "weight_reverse").unwrap_or(false);
    let rise = f.int(r, fl, "rise", 0, u32::MAX.into()).unwrap_or(1) as u32;
    let fall = f.int(r, fl, "fall", 0, u32::MAX.into()).unwrap_or(1) as u32;
    let init_fail = f.bool(r, fl, "init_fail").unwrap_or(false);
    f.finish(r, CHECK_KEYS);
    Check {
        name,
        script,
        probe,
        interval,
        timeout,
        weight,
        weight_reverse,
        rise,
        fall,
        init_fail,
    }
}

/// `[check.haproxy]`: which socket, and what must hold.
fn read_haproxy(r: &mut Reader, table: &DeTable, line: usize) -> Option<HaproxyCheck> {
    let mut f = Fields::new(r, table, line, "[check.haproxy]");
    let mut fl = FieldLines::at(line);
    let stats = f.string(r, &mut fl, "stats_socket");
    let master = f.string(r, &mut fl, "master_socket");
    let config = f.string(r, &mut fl, "config");
    let pidfile = f.string(r, &mut fl, "pidfile").map(PathBuf::from);
    let require_frontends = f.list(r, &mut fl, "require_frontends", |r, v| {
        r.str(v, "require_frontends")
    });
    let backends = f.list(r, &mut fl, "backends", |r, v| r.str(v, "backends"));
    let down_fault = f.choice(
        r,
        &mut fl,
        "backends_down",
        "backends_down",
        &[("weight", false), ("fault", true)],
    );
    let weight = f
        .int(r, &mut fl, "backends_weight", -253, -1)
        .map(|w| w as i32);
    let reload_grace = f.secs(r, &mut fl, "reload_grace");
    f.finish(r, HAPROXY_KEYS);
    if down_fault == Some(true) && weight.is_some() {
        r.error(
            line,
            "[check.haproxy]: `backends_weight` has no effect with `backends_down = \"fault\"`"
                .into(),
        );
    }
    let socket = match (stats, master, config) {
        (Some(path), None, None) => HaproxySocket::Stats(path.into()),
        (None, Some(path), None) => HaproxySocket::Master(path.into()),
        (None, None, config) => HaproxySocket::Discover {
            config: config.map(PathBuf::from),
        },
        _ => {
            r.error(
                line,
                "[check.haproxy]: `stats_socket`, `master_socket` and `config` exclude each other"
                    .into(),
            );
            return None;
        }
    };
    Some(HaproxyCheck {
        socket,
        pidfile,
        require_frontends,
        backends,
        backends_down: if down_fault == Some(true) {
            BackendsDown::Fault
        } else {
            BackendsDown::Weight(weight.unwrap_or(HaproxyCheck::DEFAULT_BACKENDS_WEIGHT))
        },
        reload_grace: reload_grace.unwrap_or(HaproxyCheck::DEFAULT_RELOAD_GRACE),
    })
}

fn read_instance(
    r: &mut Reader,
    table: &DeTable,
    line: usize,
    fl: &mut FieldLines,
    global: &Global,
) -> Instance {
    let mut f = Fields::new(r, table, line, "[[instance]]");
    let name = f.required_string(r, fl, "name");
    let interface = f.required_string(r, fl, "interface");
    let vrid = if let Some(v) = f.int(r, fl, "vrid", 1, 255) {
        v as u8
    } else {
        if !fl.is_bad("vrid") {
            r.error(line, "[[instance]]: missing key `vrid`".into());
            fl.mark_bad("vrid");
        }
        0
    };
    let priority = f.int(r, fl, "priority", 1, 255).unwrap_or(100) as u8;
    let version = f
        .int(r, fl, "version", 0, 255)
        .map_or(global.vrrp_version, |v| v as u8);
    let advert_interval = f
        .secs(r, fl, "advert_interval")
        .unwrap_or(Duration::from_secs(1));
    let initial_state = f
        .choice(
            r,
            fl,
            "state",
            "initial_state",
            &[
                ("backup", InitialState::Backup),
                ("master", InitialState::Master),
            ],
        )
        .unwrap_or(InitialState::Backup);
    let preempt = f.bool(r, fl, "preempt").unwrap_or(true);
    let preempt_delay = f.secs(r, fl, "preempt_delay").unwrap_or(Duration::ZERO);
    let unicast_src = f.take_with(r, fl, "unicast_src", |r, v| r.ip(v, "unicast_src"));
    let unicast_peers = f.list(r, fl, "unicast_peers", |r, v| r.ip(v, "unicast_peers"));
    let check_unicast_src = f.bool(r, fl, "check_unicast_src").unwrap_or(true);
    let down_timer_adverts = f
        .int(
            r,
            fl,
            "down_timer_adverts",
            (*DOWN_TIMER_ADVERTS_RANGE.start()).into(),
            (*DOWN_TIMER_ADVERTS_RANGE.end()).into(),
        )
        .map_or(DEFAULT_DOWN_TIMER_ADVERTS, |n| n as u8);
    let auth_pass = f.string(r, fl, "auth_pass");
    let auth_type = f
        .choice(
            r,
            fl,
            "auth_type",
            "auth_type",
            &[("pass", AuthType::Pass), ("ah", AuthType::Ah)],
        )
        .unwrap_or_default();
    let virtual_addresses = f.list(r, fl, "virtual_addresses", read_virtual_address);
    let virtual_routes = f.list(r, fl, "virtual_routes", |r, v| {
        read_route_line(r, v, "virtual_routes", |words, _, w| {
            crate::parse_route(words, w)
        })
    });
    let virtual_rules = f.list(r, fl, "virtual_rules", |r, v| {
        read_route_line(r, v, "virtual_rules", crate::parse_rule)
    });
    let track = f.list(r, fl, "track", |r, v| r.str(v, "track"));
    let track_interfaces = f.list(r, fl, "track_interfaces", read_track_interface);
    let track_files = f.list(r, fl, "track_files", read_track_file_ref);
    let dont_track_primary = f.bool(r, fl, "dont_track_primary").unwrap_or(false);
    let lower_prio_no_advert = f.bool(r, fl, "lower_prio_no_advert").unwrap_or(false);
    let higher_prio_send_advert = f.bool(r, fl, "higher_prio_send_advert").unwrap_or(false);
    let unicast_ttl = f.int(r, fl, "unicast_ttl", 0, 255).map(|n| n as u8);
    let accept = f.bool(r, fl, "accept").unwrap_or(true);
    let notify_priority_changes = f.bool(r, fl, "notify_priority_changes").unwrap_or(false);
    // `vmac = "NAME"` (keepalived's `use_vmac NAME`; `vrrp.VRID` is its
    // default name) and `vmac_xmit_base = true`.
    let vmac_name = f.string(r, fl, "vmac");
    let xmit_base = f.bool(r, fl, "vmac_xmit_base");
    if vmac_name.is_none() && xmit_base.is_some() {
        r.error(
            fl.line("vmac_xmit_base").unwrap_or(line),
            "[[instance]]: `vmac_xmit_base` needs `vmac`".to_owned(),
        );
    }
    let vmac = vmac_name.map(|name| Vmac {
        name,
        xmit_base: xmit_base.unwrap_or(false),
    });
    let receive_path = f
        .choice(
            r,
            fl,
            "receive_path",
            "receive_path",
            &[
                ("auto", ReceivePathChoice::Auto),
                ("xdp", ReceivePathChoice::Xdp),
                ("xdp-no-timer", ReceivePathChoice::XdpNoTimer),
                ("raw", ReceivePathChoice::Raw),
            ],
        )
        .unwrap_or(ReceivePathChoice::Auto);
    let notify = match f.take("notify") {
        Some((key_line, value)) => {
            fl.set("notify", key_line);
            if let DeValue::Table(table) = value.get_ref() {
                let line = r.line(value.span().start);
                read_notify(r, table, line, fl, "[instance.notify]")
            } else {
                r.type_error(value, "notify", "a table ([instance.notify])");
                fl.mark_bad("notify");
                Notify::default()
            }
        }
        None => Notify::default(),
    };
    let garp = match f.take("garp") {
        Some((key_line, value)) => {
            fl.set("garp", key_line);
            if let DeValue::Table(table) = value.get_ref() {
                let line = r.line(value.span().start);
                read_garp(r, table, line, fl)
            } else {
                r.type_error(value, "garp", "a table ([instance.garp])");
                fl.mark_bad("garp");
                Garp::default()
            }
        }
        None => Garp::default(),
    };
    f.finish(r, INSTANCE_KEYS);
    Instance {
        name,
        interface,
        vrid,
        priority,
        version,
        advert_interval,
        initial_state,
        preempt,
        preempt_delay,
        unicast_src,
        unicast_peers,
        check_unicast_src,
        down_timer_adverts,
        auth_pass,
        auth_type,
        virtual_addresses,
        virtual_routes,
        virtual_rules,
        track,
        track_interfaces,
        track_files,
        notify_priority_changes,
        dont_track_primary,
        lower_prio_no_advert,
        higher_prio_send_advert,
        unicast_ttl,
        accept,
        notify,
        receive_path,
        garp,
        vmac,
    }
}

/// One `[[track_file]]` (keepalived's `track_file NAME { ... }`): `name`,
/// `path`, `weight` (default 1), `reverse`, and keepalived's `init_file`
/// as `init_value` (write it at start when the file is missing) and
/// `init_overwrite` (write it even when the file exists).
fn read_track_file(r: &mut Reader, table: &DeTable, line: usize) -> Option<TrackFile> {
    let mut f = Fields::new(r, table, line, "[[track_file]]");
    let mut fl = FieldLines::at(line);
    let name = Some(f.required_string(r, &mut fl, "name")).filter(|_| !fl.is_bad("name"));
    let path = Some(f.required_string(r, &mut fl, "path")).filter(|_| !fl.is_bad("path"));
    let weight = f.int(r, &mut fl, "weight", -254, 254).unwrap_or(1) as i32;
    let reverse = f.bool(r, &mut fl, "reverse").unwrap_or(false);
    let init_value = f.int(r, &mut fl, "init_value", i32::MIN.into(), i32::MAX.into());
    let overwrite = f.bool(r, &mut fl, "init_overwrite");
    f.finish(r, TRACK_FILE_KEYS);
    let init = (init_value.is_some() || overwrite == Some(true)).then(|| TrackFileInit {
        value: init_value.unwrap_or(0),
        overwrite: overwrite.unwrap_or(false),
    });
    Some(TrackFile {
        name: name?,
        path: PathBuf::from(path?),
        weight,
        reverse,
        init,
    })
}

/// One `track_files` element: `"name"` (the file's weight and direction)
/// or `{ name = "name", weight = -10, reverse = true }`.
fn read_track_file_ref(r: &mut Reader, v: &SValue) -> Option<TrackFileRef> {
    let DeValue::Table(table) = v.get_ref() else {
        let name = r.str(v, "track_files")?;
        return Some(TrackFileRef {
            name,
            weight: None,
            reverse: None,
        });
    };
    let line = r.line(v.span().start);
    let mut f = Fields::new(r, table, line, "track_files element");
    let mut scratch = FieldLines::default();
    let name = f.string(r, &mut scratch, "name");
    let weight = f
        .int(r, &mut scratch, "weight", -254, 254)
        .map(|w| w as i32);
    let reverse = f.bool(r, &mut scratch, "reverse");
    f.finish(r, TRACK_FILE_REF_KEYS);
    let Some(name) = name else {
        if !scratch.is_bad("name") {
            r.error(line, "track_files element: missing key `name`".into());
        }
        return None;
    };
    Some(TrackFileRef {
        name,
        weight,
        reverse,
    })
}

/// One `track_interfaces` element: `"eth1"` (weight 0: down means Fault),
/// or `{ name = "eth1", weight = -20, reverse = false }`.
fn read_track_interface(r: &mut Reader, v: &SValue) -> Option<TrackInterface> {
    let DeValue::Table(table) = v.get_ref() else {
        let name = r.str(v, "track_interfaces")?;
        return Some(TrackInterface {
            name,
            weight: 0,
            reverse: false,
        });
    };
    let line = r.line(v.span().start);
    let mut f = Fields::new(r, table, line, "track_interfaces element");
    let mut scratch = FieldLines::default();
    let name = f.string(r, &mut scratch, "name");
    let weight = f.int(r, &mut scratch, "weight", -253, 253).unwrap_or(0) as i32;
    let reverse = f.bool(r, &mut scratch, "reverse").unwrap_or(false);
    f.finish(r, TRACK_INTERFACE_KEYS);
    let Some(name) = name else {
        if !scratch.is_bad("name") {
            r.error(line, "track_interfaces element: missing key `name`".into());
        }
        return None;
    };
    Some(TrackInterface {
        name,
        weight,
        reverse,
    })
}

fn read_notify(
    r: &mut Reader,
    table: &DeTable,
    line: usize,
    fl: &mut FieldLines,
    context: &'static str,
) -> Notify {
    let mut f = Fields::new(r, table, line, context);
    let mut scratch = FieldLines::default();
    let notify = Notify {
        master: f.string(r, &mut scratch, "master"),
        backup: f.string(r, &mut scratch, "backup"),
        fault: f.string(r, &mut scratch, "fault"),
        stop: f.string(r, &mut scratch, "stop"),
        any: f.string(r, &mut scratch, "any"),
    };
    if NOTIFY_KEYS.iter().any(|k| scratch.is_bad(k)) {
        fl.mark_bad("notify");
    }
    f.finish(r, NOTIFY_KEYS);
    notify
}

/// `[instance.garp]`: keepalived's `garp_*` keywords without the prefix,
/// with its defaults; the lower-priority settings default to the master
/// ones given here, as keepalived's do to its global master settings.
fn read_garp(r: &mut Reader, table: &DeTable, line: usize, fl: &mut FieldLines) -> Garp {
    let mut f = Fields::new(r, table, line, "[instance.garp]");
    let mut scratch = FieldLines::default();
    let default = Garp::default();
    let max = Garp::MAX_REPEAT.into();
    let master_repeat = f
        .int(r, &mut scratch, "master_repeat", 1, max)
        .map_or(default.master_repeat, |n| n as u32);
    let master_refresh_repeat = f
        .int(r, &mut scratch, "master_refresh_repeat", 1, max)
        .map_or(default.master_refresh_repeat, |n| n as u32);
    let lower_prio_repeat = f
        .int(r, &mut scratch, "lower_prio_repeat", 0, max)
        .map_or(master_repeat, |n| n as u32);
    let master_delay = f
        .secs(r, &mut scratch, "master_delay")
        .unwrap_or(default.master_delay);
    let garp = Garp {
        master_repeat,
        master_delay,
        master_refresh: f
            .secs(r, &mut scratch, "master_refresh")
            .unwrap_or(default.master_refresh),
        master_refresh_repeat,
        lower_prio_repeat,
        lower_prio_delay: f
            .secs(r, &mut scratch, "lower_prio_delay")
            .unwrap_or(master_delay),
    };
    if GARP_KEYS.iter().any(|k| scratch.is_bad(k)) {
        fl.mark_bad("garp");
    }
    f.finish(r, GARP_KEYS);
    garp
}

/// One `virtual_routes` / `virtual_rules` element: a line in keepalived's
/// (and `ip route` / `ip rule`'s) syntax. What keepalived would drop is an
/// error here: a native file has no legacy to keep running.
fn read_route_line<T>(
    r: &mut Reader,
    v: &SValue,
    key: &str,
    parse: impl FnOnce(
        &[&str],
        &mut crate::RulePriorities,
        &mut Vec<String>,
    ) -> Result<T, crate::RouteError>,
) -> Option<T> {
    let text = r.str(v, key)?;
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut warnings = Vec::new();
    let mut priorities = r.rule_priorities;
    let result = parse(&words, &mut priorities, &mut warnings);
    r.rule_priorities = priorities;
    let line = r.line(v.span().start);
    for w in warnings {
        let d = r.diag(Some(line), format!("`{key}` `{text}`: {w}"));
        r.warnings.push(d);
    }
    match result {
        Ok(item) => Some(item),
        Err(e) => {
            r.error(line, format!("`{key}` `{text}`: {e}"));
            None
        }
    }
}

/// One `virtual_addresses` element: `"a.b.c.d/len"`, or an inline table
/// `{ address = "a.b.c.d/len", dev = ..., label = ..., scope = ...,
/// broadcast = ..., peer = ... }` (keepalived's `virtual_ipaddress` options).
fn read_virtual_address(r: &mut Reader, v: &SValue) -> Option<VirtualAddress> {
    let cidr = |r: &mut Reader, v: &SValue| {
        let text = r.str(v, "virtual_addresses")?;
        match parse_cidr(&text) {
            Ok((addr, prefix)) => Some(VirtualAddress::new(addr, prefix)),
            Err(message) => {
                r.error_at(v, format!("`virtual_addresses`: {message}"));
                None
            }
        }
    };
    let DeValue::Table(table) = v.get_ref() else {
        return cidr(r, v);
    };
    let line = r.line(v.span().start);
    let mut f = Fields::new(r, table, line, "virtual_addresses element");
    let mut scratch = FieldLines::default();
    let address = f.take_with(r, &mut scratch, "address", cidr);
    let dev = f.string(r, &mut scratch, "dev");
    let label = f.string(r, &mut scratch, "label");
    let scope = f.take_with(r, &mut scratch, "scope", |r, v| {
        let text = r.str(v, "scope")?;
        let scope = crate::parse_scope(&text);
        if scope.is_none() {
            r.error_at(v, format!("`scope`: unknown scope `{text}`"));
        }
        scope
    });
    let broadcast = f.take_with(r, &mut scratch, "broadcast", |r, v| r.ip4(v, "broadcast"));
    let peer = f.take_with(r, &mut scratch, "peer", |r, v| r.ip4(v, "peer"));
    let excluded = f.bool(r, &mut scratch, "excluded").unwrap_or(false);
    f.finish(r, VIRTUAL_ADDRESS_KEYS);
    let Some(mut vip) = address else {
        if !scratch.is_bad("address") {
            r.error(
                line,
                "virtual_addresses element: missing key `address`".into(),
            );
        }
        return None;
    };
    vip.dev = dev;
    vip.label = label;
    vip.scope = scope.filter(|s| *s != 0);
    vip.broadcast = broadcast;
    vip.peer = peer;
    vip.excluded = excluded;
    Some(vip)
}

/// Parses `a.b.c.d` or `a.b.c.d/len` (default /32), or an IPv6 address
/// with an optional `/len` (default /128).
pub(crate) fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = match text.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{text}` is not an IPv4 or IPv6 address"))?;
    let max = crate::Family::of(addr).max_prefix();
    let prefix = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(p) if p <= max => p,
            _ => return Err(format!("`{text}`: prefix length must be 0..={max}")),
        },
    };
    Ok((addr, prefix))
}

/// Converts float seconds to a [`Duration`], to the nearest nanosecond.
pub(crate) fn secs_to_duration(secs: f64) -> Option<Duration> {
    // A year is far beyond any sensible interval. Microseconds: an f64 of
    // seconds up to a year holds them exactly, so durations written back by
    // `to_toml` read back the same (nanoseconds would not survive above
    // ~48 days), and nothing here needs finer than 10 ms anyway.
    const MAX_SECS: f64 = 366.0 * 24.0 * 3600.0;
    if secs.is_finite() && (0.0..=MAX_SECS).contains(&secs) {
        Some(Duration::from_micros((secs * 1e6).round() as u64))
    } else {
        None
    }
}

struct Reader<'a> {
    file: &'a Path,
    line_starts: Vec<usize>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    /// Automatic rule preferences, as keepalived numbers them per file.
    rule_priorities: crate::RulePriorities,
}

impl<'a> Reader<'a> {
    fn new(text: &str, file: &'a Path) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            file,
            line_starts,
            errors: Vec::new(),
            warnings: Vec::new(),
            rule_priorities: crate::RulePriorities::default(),
        }
    }

    /// 1-based line of a byte offset.
    fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    fn diag(&self, line: Option<usize>, message: String) -> Diagnostic {
        Diagnostic {
            file: self.file.to_path_buf(),
            line,
            message,
        }
    }

    fn error(&mut self, line: usize, message: String) {
        let d = self.diag(Some(line), message);
        self.errors.push(d);
    }

    fn error_at(&mut self, value: &SValue, message: String) {
        let line = self.line(value.span().start);
        self.error(line, message);
    }

    fn type_error(&mut self, value: &SValue, key: &str, expected: &str) {
        let found = value.get_ref().type_str();
        self.error_at(
            value,
            format!("`{key}`: expected {expected}, found {found}"),
        );
    }

    fn str(&mut self, value: &SValue, key: &str) -> Option<String> {
        if let DeValue::String(s) = value.get_ref() {
            Some(s.to_string())
        } else {
            self.type_error(value, key, "a string");
            None
        }
    }

    fn ip(&mut self, value: &SValue, key: &str) -> Option<IpAddr> {
        let text = self.str(value, key)?;
        if let Ok(ip) = text.parse() {
            Some(ip)
        } else {
            self.error_at(
                value,
                format!("`{key}`: `{text}` is not an IPv4 or IPv6 address"),
            );
            None
        }
    }

    /// An IPv4 address (a virtual address's `broadcast` or `peer`).
    fn ip4(&mut self, value: &SValue, key: &str) -> Option<Ipv4Addr> {
        let text = self.str(value, key)?;
        if let Ok(ip) = text.parse() {
            Some(ip)
        } else {
            self.error_at(value, format!("`{key}`: `{text}` is not an IPv4 address"));
            None
        }
    }

    /// The tables of an array of tables (`[[check]]`), with their lines.
    fn tables<'t, 'i>(
        &mut self,
        value: &'t SValue<'i>,
        key: &str,
    ) -> Vec<(&'t DeTable<'i>, usize)> {
        if let DeValue::Array(items) = value.get_ref() {
            items
                .iter()
                .filter_map(|item| {
                    if let DeValue::Table(table) = item.get_ref() {
                        Some((table, self.line(item.span().start)))
                    } else {
                        self.type_error(item, key, &format!("a table ([[{key}]])"));
                        None
                    }
                })
                .collect()
        } else {
            self.type_error(value, key, &format!("an array of tables ([[{key}]])"));
            Vec::new()
        }
    }
}

/// The entries of one table, tracking which were read so that the rest can
/// be reported as unknown.
struct Fields<'t, 'i> {
    entries: Vec<(&'t str, usize, &'t SValue<'i>)>,
    used: Vec<bool>,
    line: usize,
    what: &'static str,
}

impl<'t, 'i> Fields<'t, 'i> {
    fn new(r: &Reader, table: &'t DeTable<'i>, line: usize, what: &'static str) -> Self {
        let entries: Vec<_> = table
            .iter()
            .map(|(k, v)| (k.get_ref().as_ref(), r.line(k.span().start), v))
            .collect();
        let used = vec![false; entries.len()];
        Self {
            entries,
            used,
            line,
            what,
        }
    }

    /// The value of `key` and the line of the key.
    fn take(&mut self, key: &str) -> Option<(usize, &'t SValue<'i>)> {
        let index = self.entries.iter().position(|(k, _, _)| *k == key)?;
        self.used[index] = true;
        let (_, line, value) = self.entries[index];
        Some((line, value))
    }

    /// Reads `key` with `read`, recording its line (and whether it was bad).
    fn take_with<T>(
        &mut self,
        r: &mut Reader,
        fl: &mut FieldLines,
        key: &str,
        read: impl FnOnce(&mut Reader, &SValue) -> Option<T>,
    ) -> Option<T> {
        let (line, value) = self.take(key)?;
        fl.set(key, line);
        let result = read(r, value);
        if result.is_none() {
            fl.mark_bad(key);
        }
        result
    }

    fn string(&mut self, r: &mut Reader, fl: &mut FieldLines, key: &str) -> Option<String> {
        self.take_with(r, fl, key, |r, v| r.str(v, key))
    }

    fn required_string(&mut self, r: &mut Reader, fl: &mut FieldLines, key: &str) -> String {
        if !self.entries.iter().any(|(k, _, _)| *k == key) {
            r.error(self.line, format!("{}: missing key `{key}`", self.what));
            fl.mark_bad(key);
            return String::new();
        }
        self.string(r, fl, key).unwrap_or_default()
    }

    fn bool(&mut self, r: &mut Reader, fl: &mut FieldLines, key: &str) -> Option<bool> {
        self.take_with(r, fl, key, |r, v| {
            if let DeValue::Boolean(b) = v.get_ref() {
                Some(*b)
            } else {
                r.type_error(v, key, "true or false");
                None
            }
        })
    }

    fn int(
        &mut self,
        r: &mut Reader,
        fl: &mut FieldLines,
        key: &str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        self.take_with(r, fl, key, |r, v| {
            let DeValue::Integer(i) = v.get_ref() else {
                r.type_error(v, key, "an integer");
                return None;
            };
            match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) if (min..=max).contains(&n) => Some(n),
                _ => {
                    r.error_at(v, format!("`{key}`: {i} is out of range {min}..={max}"));
                    None
                }
            }
        })
    }

    /// Seconds, as an integer or a float.
    fn secs(&mut self, r: &mut Reader, fl: &mut FieldLines, key: &str) -> Option<Duration> {
        self.take_with(r, fl, key, |r, v| {
            let secs = match v.get_ref() {
                DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                    .ok()
                    .map(|n| n as f64),
                DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
                _ => {
                    r.type_error(v, key, "a number of seconds");
                    return None;
                }
            };
            let duration = secs.and_then(secs_to_duration);
            if duration.is_none() {
                r.error_at(
                    v,
                    format!("`{key}`: must be a number of seconds from 0 to a year"),
                );
            }
            duration
        })
    }

    /// One of a fixed set of strings. `field` is the model field name.
    fn choice<T: Copy>(
        &mut self,
        r: &mut Reader,
        fl: &mut FieldLines,
        key: &str,
        field: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let (line, value) = self.take(key)?;
        fl.set(field, line);
        let result = r.str(value, key).and_then(|text| {
            let found = choices.iter().find(|(name, _)| *name == text).map(|c| c.1);
            if found.is_none() {
                let names: Vec<_> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                r.error_at(
                    value,
                    format!("`{key}`: `{text}` is not one of {}", names.join(", ")),
                );
            }
            found
        });
        if result.is_none() {
            fl.mark_bad(field);
        }
        result
    }

    /// An array, each element read with `read`; records each element's line.
    fn list<T>(
        &mut self,
        r: &mut Reader,
        fl: &mut FieldLines,
        key: &str,
        mut read: impl FnMut(&mut Reader, &SValue) -> Option<T>,
    ) -> Vec<T> {
        let Some((line, value)) = self.take(key) else {
            return Vec::new();
        };
        fl.set(key, line);
        let items: &DeArray = if let DeValue::Array(items) = value.get_ref() {
            items
        } else {
            r.type_error(value, key, "an array");
            return Vec::new();
        };
        let mut out = Vec::new();
        // An unreadable element is reported by `read` and left out, so
        // validation does not report it again.
        for item in items {
            if let Some(v) = read(r, item) {
                fl.set(format!("{key}[{}]", out.len()), r.line(item.span().start));
                out.push(v);
            }
        }
        out
    }

    /// Reports every key that was not read.
    fn finish(self, r: &mut Reader, allowed: &[&str]) {
        for ((key, line, _), used) in self.entries.iter().zip(&self.used) {
            if !used {
                r.error(
                    *line,
                    format!(
                        "{}: unknown key `{key}` (expected one of: {})",
                        self.what,
                        allowed.join(", ")
                    ),
                );
            }
        }
    }
}

/// Writes `config` as lbha's TOML; [`parse`] reads it back unchanged.
pub fn to_toml(config: &Config) -> String {
    use std::fmt::Write as _;

    fn string(s: &str) -> String {
        Value::String(s.to_string()).to_string()
    }
    fn secs(d: Duration) -> String {
        // Exact decimal microseconds (what parsing keeps), not an f64 print.
        let micros = d.as_micros();
        let (whole, frac) = (micros / 1_000_000, micros % 1_000_000);
        if frac == 0 {
            format!("{whole}.0")
        } else {
            format!("{whole}.{}", format!("{frac:06}").trim_end_matches('0'))
        }
    }
    fn strings<I: IntoIterator<Item = String>>(items: I) -> String {
        let items: Vec<String> = items.into_iter().map(|s| string(&s)).collect();
        format!("[{}]", items.join(", "))
    }
    /// One inline table, so that the check's other keys can follow it.
    fn write_haproxy(out: &mut String, h: &HaproxyCheck) {
        let mut parts = vec![match &h.socket {
            HaproxySocket::Stats(p) => format!("stats_socket = {}", string(&p.to_string_lossy())),
            HaproxySocket::Master(p) => {
                format!("master_socket = {}", string(&p.to_string_lossy()))
            }
            HaproxySocket::Discover { config: Some(p) } => {
                format!("config = {}", string(&p.to_string_lossy()))
            }
            HaproxySocket::Discover { config: None } => String::new(),
        }];
        parts.retain(|p| !p.is_empty());
        if let Some(p) = &h.pidfile {
            parts.push(format!("pidfile = {}", string(&p.to_string_lossy())));
        }
        if !h.require_frontends.is_empty() {
            parts.push(format!(
                "require_frontends = {}",
                strings(h.require_frontends.iter().cloned())
            ));
        }
        if !h.backends.is_empty() {
            parts.push(format!(
                "backends = {}",
                strings(h.backends.iter().cloned())
            ));
        }
        match h.backends_down {
            BackendsDown::Fault => parts.push("backends_down = \"fault\"".into()),
            BackendsDown::Weight(w) => parts.push(format!("backends_weight = {w}")),
        }
        parts.push(format!("reload_grace = {}", secs(h.reload_grace)));
        let _ = writeln!(out, "haproxy = {{ {} }}", parts.join(", "));
    }

    let mut out = String::new();
    let g = &config.global;
    // Writing to a String cannot fail.
    let _ = writeln!(out, "[global]");
    let _ = writeln!(out, "vrrp_version = {}", g.vrrp_version);
    let _ = writeln!(out, "script_security = {}", g.script_security);
    if let Some(user) = &g.script_user {
        let _ = writeln!(out, "script_user = {}", string(user));
    }
    if let Some(group) = &g.script_group {
        let _ = writeln!(out, "script_group = {}", string(group));
    }
    if let Some(addr) = &g.metrics_listen {
        let _ = writeln!(out, "metrics_listen = {}", string(&addr.to_string()));
    }
    let _ = writeln!(
        out,
        "status_socket = {}",
        string(&g.status_socket.to_string_lossy())
    );
    if !g.notify_fifos.is_empty() {
        let fifos: Vec<String> = g
            .notify_fifos
            .iter()
            .map(|f| {
                let mut fields = vec![format!("path = {}", string(&f.path.to_string_lossy()))];
                for (key, value) in [
                    ("owner", &f.owner),
                    ("group", &f.group),
                    ("script", &f.script),
                ] {
                    if let Some(value) = value {
                        fields.push(format!("{key} = {}", string(value)));
                    }
                }
                format!("{{ {} }}", fields.join(", "))
            })
            .collect();
        let _ = writeln!(out, "notify_fifos = [{}]", fifos.join(", "));
    }
    match &g.bpf_pin_dir {
        Some(dir) => {
            let _ = writeln!(out, "bpf_pin_dir = {}", string(&dir.to_string_lossy()));
        }
        None => {
            let _ = writeln!(out, "bpf_pin = false");
        }
    }

    for c in &config.checks {
        let _ = writeln!(out, "\n[[check]]");
        let _ = writeln!(out, "name = {}", string(&c.name));
        match &c.probe {
            None => {
                let _ = writeln!(out, "script = {}", string(&c.script));
            }
            Some(Probe::Process(name)) => {
                let _ = writeln!(out, "process = {}", string(name));
            }
            Some(Probe::Pidfile(path)) => {
                let _ = writeln!(out, "pidfile = {}", string(&path.to_string_lossy()));
            }
            Some(Probe::Tcp(addr)) => {
                let _ = writeln!(out, "tcp = {}", string(&addr.to_string()));
            }
            Some(Probe::Http(url)) => {
                let _ = writeln!(out, "http = {}", string(url));
            }
            Some(Probe::Haproxy(h)) => write_haproxy(&mut out, h),
        }
        let _ = writeln!(out, "interval = {}", secs(c.interval));
        let _ = writeln!(out, "timeout = {}", secs(c.timeout));
        let _ = writeln!(out, "weight = {}", c.weight);
        let _ = writeln!(out, "weight_reverse = {}", c.weight_reverse);
        let _ = writeln!(out, "rise = {}", c.rise);
        let _ = writeln!(out, "fall = {}", c.fall);
        if c.init_fail {
            let _ = writeln!(out, "init_fail = true");
        }
    }

    for i in &config.instances {
        let _ = writeln!(out, "\n[[instance]]");
        let _ = writeln!(out, "name = {}", string(&i.name));
        let _ = writeln!(out, "interface = {}", string(&i.interface));
        let _ = writeln!(out, "vrid = {}", i.vrid);
        let _ = writeln!(out, "priority = {}", i.priority);
        let _ = writeln!(out, "version = {}", i.version);
        let _ = writeln!(out, "advert_interval = {}", secs(i.advert_interval));
        let state = match i.initial_state {
            InitialState::Backup => "backup",
            InitialState::Master => "master",
        };
        let _ = writeln!(out, "state = {}", string(state));
        let _ = writeln!(out, "preempt = {}", i.preempt);
        let _ = writeln!(out, "preempt_delay = {}", secs(i.preempt_delay));
        if let Some(src) = i.unicast_src {
            let _ = writeln!(out, "unicast_src = {}", string(&src.to_string()));
        }
        let _ = writeln!(
            out,
            "unicast_peers = {}",
            strings(i.unicast_peers.iter().map(std::string::ToString::to_string))
        );
        let _ = writeln!(out, "check_unicast_src = {}", i.check_unicast_src);
        let _ = writeln!(out, "down_timer_adverts = {}", i.down_timer_adverts);
        if let Some(pass) = &i.auth_pass {
            let _ = writeln!(out, "auth_pass = {}", string(pass));
            if i.auth_type != AuthType::Pass {
                let _ = writeln!(out, "auth_type = {}", string(i.auth_type.as_str()));
            }
        }
        let vips: Vec<String> = i
            .virtual_addresses
            .iter()
            .map(|vip| {
                let cidr = string(&format!("{}/{}", vip.address, vip.prefix));
                if !vip.has_options() {
                    return cidr;
                }
                let mut parts = vec![format!("address = {cidr}")];
                if let Some(dev) = &vip.dev {
                    parts.push(format!("dev = {}", string(dev)));
                }
                if let Some(label) = &vip.label {
                    parts.push(format!("label = {}", string(label)));
                }
                if let Some(scope) = vip.scope {
                    parts.push(format!("scope = {}", string(&crate::scope_name(scope))));
                }
                if let Some(b) = vip.broadcast {
                    parts.push(format!("broadcast = {}", string(&b.to_string())));
                }
                if let Some(p) = vip.peer {
                    parts.push(format!("peer = {}", string(&p.to_string())));
                }
                if vip.excluded {
                    parts.push("excluded = true".into());
                }
                format!("{{ {} }}", parts.join(", "))
            })
            .collect();
        let _ = writeln!(out, "virtual_addresses = [{}]", vips.join(", "));
        if !i.virtual_routes.is_empty() {
            let _ = writeln!(
                out,
                "virtual_routes = {}",
                strings(i.virtual_routes.iter().map(ToString::to_string))
            );
        }
        if !i.virtual_rules.is_empty() {
            let _ = writeln!(
                out,
                "virtual_rules = {}",
                strings(i.virtual_rules.iter().map(ToString::to_string))
            );
        }
        let _ = writeln!(out, "track = {}", strings(i.track.iter().cloned()));
        if !i.track_interfaces.is_empty() {
            let tracked: Vec<String> = i
                .track_interfaces
                .iter()
                .map(|t| {
                    format!(
                        "{{ name = {}, weight = {}, reverse = {} }}",
                        string(&t.name),
                        t.weight,
                        t.reverse
                    )
                })
                .collect();
            let _ = writeln!(out, "track_interfaces = [{}]", tracked.join(", "));
        }
        if i.dont_track_primary {
            let _ = writeln!(out, "dont_track_primary = true");
        }
        if i.lower_prio_no_advert {
            let _ = writeln!(out, "lower_prio_no_advert = true");
        }
        if i.higher_prio_send_advert {
            let _ = writeln!(out, "higher_prio_send_advert = true");
        }
        if let Some(ttl) = i.unicast_ttl {
            let _ = writeln!(out, "unicast_ttl = {ttl}");
        }
        if let Some(vmac) = &i.vmac {
            let _ = writeln!(out, "vmac = {}", string(&vmac.name));
            if vmac.xmit_base {
                let _ = writeln!(out, "vmac_xmit_base = true");
            }
        }
        if !i.accept {
            let _ = writeln!(out, "accept = false");
        }
        if i.notify_priority_changes {
            let _ = writeln!(out, "notify_priority_changes = true");
        }
        if !i.track_files.is_empty() {
            let tracked: Vec<String> = i
                .track_files
                .iter()
                .map(|t| {
                    let mut fields = vec![format!("name = {}", string(&t.name))];
                    if let Some(w) = t.weight {
                        fields.push(format!("weight = {w}"));
                    }
                    if let Some(rev) = t.reverse {
                        fields.push(format!("reverse = {rev}"));
                    }
                    format!("{{ {} }}", fields.join(", "))
                })
                .collect();
            let _ = writeln!(out, "track_files = [{}]", tracked.join(", "));
        }
        let _ = writeln!(out, "receive_path = {}", string(i.receive_path.as_str()));
        let n = &i.notify;
        let scripts = [
            ("master", &n.master),
            ("backup", &n.backup),
            ("fault", &n.fault),
            ("stop", &n.stop),
            ("any", &n.any),
        ];
        if scripts.iter().any(|(_, s)| s.is_some()) {
            let _ = writeln!(out, "\n[instance.notify]");
            for (key, script) in scripts {
                if let Some(script) = script {
                    let _ = writeln!(out, "{key} = {}", string(script));
                }
            }
        }
        let g = &i.garp;
        if *g != Garp::default() {
            // Every key: the lower-priority ones default to the master ones.
            let _ = writeln!(out, "\n[instance.garp]");
            let _ = writeln!(out, "master_repeat = {}", g.master_repeat);
            let _ = writeln!(out, "master_delay = {}", secs(g.master_delay));
            let _ = writeln!(out, "master_refresh = {}", secs(g.master_refresh));
            let _ = writeln!(out, "master_refresh_repeat = {}", g.master_refresh_repeat);
            let _ = writeln!(out, "lower_prio_repeat = {}", g.lower_prio_repeat);
            let _ = writeln!(out, "lower_prio_delay = {}", secs(g.lower_prio_delay));
        }
    }
    if let Some(f) = &config.floating_ip {
        let c = &f.settings;
        let _ = writeln!(out, "\n[floating_ip]");
        if let Some(ip) = c.ip {
            let _ = writeln!(out, "ip = {}", string(&ip.to_string()));
        }
        if let Some(instance) = &f.instance {
            let _ = writeln!(out, "instance = {}", string(instance));
        }
        if let Some(v6) = &c.reserved_ipv6 {
            let _ = writeln!(out, "reserved_ipv6 = {}", string(&v6.address.to_string()));
            if let Some(instance) = &v6.instance {
                let _ = writeln!(out, "reserved_ipv6_instance = {}", string(instance));
            }
        }
        match &c.token {
            TokenSource::File(path) => {
                let _ = writeln!(out, "token_file = {}", string(&path.to_string_lossy()));
            }
            TokenSource::Env(var) => {
                let _ = writeln!(out, "token_env = {}", string(var));
            }
        }
        let _ = writeln!(out, "api_url = {}", string(&c.api_url));
        let _ = writeln!(out, "metadata_url = {}", string(&c.metadata_url));
        let _ = writeln!(out, "api_path = {}", string(c.path_family.as_str()));
        if let Some(id) = c.droplet_id {
            let _ = writeln!(out, "droplet_id = {id}");
        }
        if let Some(id) = c.peer_droplet_id {
            let _ = writeln!(out, "peer_droplet_id = {id}");
        }
        let _ = writeln!(out, "recheck_interval = {}", secs(c.recheck_interval));
        let _ = writeln!(out, "operation_deadline = {}", secs(c.operation_deadline));
        let _ = writeln!(out, "request_timeout = {}", secs(c.request_timeout));
        let _ = writeln!(out, "metadata_timeout = {}", secs(c.metadata_timeout));
        if let Some(path) = &c.ca_file {
            let _ = writeln!(out, "ca_file = {}", string(&path.to_string_lossy()));
        }
        let _ = writeln!(out, "keepalive_interval = {}", secs(c.keepalive_interval));
    }
    for t in &config.track_files {
        let _ = writeln!(out, "\n[[track_file]]");
        let _ = writeln!(out, "name = {}", string(&t.name));
        let _ = writeln!(out, "path = {}", string(&t.path.to_string_lossy()));
        let _ = writeln!(out, "weight = {}", t.weight);
        let _ = writeln!(out, "reverse = {}", t.reverse);
        if let Some(init) = t.init {
            let _ = writeln!(out, "init_value = {}", init.value);
            let _ = writeln!(out, "init_overwrite = {}", init.overwrite);
        }
    }
    for g in &config.sync_groups {
        let _ = writeln!(out, "\n[[sync_group]]");
        let _ = writeln!(out, "name = {}", string(&g.name));
        let _ = writeln!(out, "members = {}", strings(g.members.iter().cloned()));
        let n = &g.notify;
        let scripts = [
            ("master", &n.master),
            ("backup", &n.backup),
            ("fault", &n.fault),
            ("stop", &n.stop),
            ("any", &n.any),
        ];
        if scripts.iter().any(|(_, s)| s.is_some()) {
            let _ = writeln!(out, "\n[sync_group.notify]");
            for (key, script) in scripts {
                if let Some(script) = script {
                    let _ = writeln!(out, "{key} = {}", string(script));
                }
            }
        }
    }
    if let Some(h) = &config.heartbeat {
        let _ = writeln!(out, "\n[heartbeat]");
        let _ = writeln!(out, "listen = {}", string(&h.listen.to_string()));
        let _ = writeln!(
            out,
            "peers = {}",
            strings(h.peers.iter().map(ToString::to_string))
        );
        let _ = writeln!(out, "key_file = {}", string(&h.key_file.to_string_lossy()));
        let _ = writeln!(out, "interval = {}", secs(h.interval));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DEFAULT_KEEPALIVE_INTERVAL, Family};

    fn path() -> PathBuf {
        PathBuf::from("/etc/lbha/lbha.toml")
    }

    /// The parser without adjustments, as `parse_*` calls it.
    fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigErrors> {
        super::parse(text, path, &mut |_| {})
    }

    fn errors(text: &str) -> Vec<Diagnostic> {
        match parse(text, &path()) {
            Ok(loaded) => panic!("expected errors, got {loaded:?}"),
            Err(ConfigErrors { errors, .. }) => errors,
        }
    }

    fn lines_of(diags: &[Diagnostic]) -> Vec<Option<usize>> {
        diags.iter().map(|d| d.line).collect()
    }

    const MINIMAL: &str = r#"
[[instance]]
name = "VI_1"
interface = "eth1"
vrid = 33
"#;

    #[test]
    fn config_toml_bpf_pinning_keys() {
        let pinned = |global: &str| {
            let text = format!("[global]\n{global}\n{MINIMAL}");
            let config = parse(&text, &path()).unwrap().config;
            // Written back and read again, the choice survives.
            let again = parse(&to_toml(&config), &path()).unwrap().config;
            assert_eq!(again.global.bpf_pin_dir, config.global.bpf_pin_dir);
            config.global.bpf_pin_dir
        };
        assert_eq!(pinned(""), Some(PathBuf::from("/sys/fs/bpf/lbha")));
        assert_eq!(
            pinned("bpf_pin_dir = \"/mnt/bpf/x\""),
            Some(PathBuf::from("/mnt/bpf/x"))
        );
        assert_eq!(pinned("bpf_pin = false"), None);
        assert_eq!(
            pinned("bpf_pin = true"),
            Some(PathBuf::from("/sys/fs/bpf/lbha"))
        );

        let errs = errors(&format!("[global]\nbpf_pin_dir = \"bpf/lbha\"\n{MINIMAL}"));
        assert_eq!(lines_of(&errs), vec![Some(2)], "{errs:?}");
        assert!(errs[0].message.contains("absolute"), "{errs:?}");
    }

    #[test]
    fn config_toml_sync_groups_read_validated_and_round_trip() {
        let text = r#"
[[instance]]
name = "VI_1"
interface = "eth1"
vrid = 1

[[instance]]
name = "VI_2"
interface = "eth2"
vrid = 2

[[sync_group]]
name = "G"
members = ["VI_1", "VI_2"]
[sync_group.notify]
master = "/bin/m"
any = "/bin/any"
"#;
        let c = parse(text, &path()).unwrap().config;
        assert_eq!(
            c.sync_groups,
            vec![SyncGroup {
                name: "G".into(),
                members: vec!["VI_1".into(), "VI_2".into()],
                notify: Notify {
                    master: Some("/bin/m".into()),
                    any: Some("/bin/any".into()),
                    ..Notify::default()
                },
            }]
        );
        let again = parse(&to_toml(&c), &path()).unwrap().config;
        assert_eq!(again, c);
        for (bad, expected) in [
            (r#"members = ["VI_3"]"#, "not a configured instance"),
            (r"members = []", "has no members"),
            (r#"members = ["VI_1", "VI_1"]"#, "already in sync group"),
            (
                r#"members = ["VI_1"]
colour = "red""#,
                "unknown key `colour`",
            ),
        ] {
            let text = text.replace(r#"members = ["VI_1", "VI_2"]"#, bad);
            let Err(errors) = parse(&text, &path()) else {
                panic!("{bad}: accepted");
            };
            assert!(errors.to_string().contains(expected), "{bad}: {errors}");
        }
    }

    #[test]
    fn config_toml_notify_fifos() {
        let text = format!(
            "[global]\nnotify_fifos = [\"/run/a.fifo\", {{ path = \"/run/b.fifo\", owner = \"u\", script = \"/bin/r\" }}]\n{MINIMAL}"
        );
        let c = parse(&text, &path()).unwrap().config;
        assert_eq!(c.global.notify_fifos.len(), 2);
        assert_eq!(c.global.notify_fifos[1].owner.as_deref(), Some("u"));
        assert_eq!(c.global.notify_fifos[1].script.as_deref(), Some("/bin/r"));
        assert_eq!(parse(&to_toml(&c), &path()).unwrap().config, c);
        let twice = format!("[global]\nnotify_fifos = [\"/run/a\", \"/run/a\"]\n{MINIMAL}");
        let msgs: Vec<String> = errors(&twice).into_iter().map(|d| d.message).collect();
        assert!(msgs.iter().any(|m| m.contains("twice")), "{msgs:?}");
    }

    #[test]
    fn config_toml_track_files() {
        let text = "[[track_file]]\nname = \"maint\"\npath = \"/run/maint\"\ninit_value = 3\n\n\
                    [[track_file]]\nname = \"offset\"\npath = \"/run/offset\"\nweight = -2\nreverse = true\n\n\
                    [[instance]]\nname = \"VI_1\"\ninterface = \"eth1\"\nvrid = 1\n\
                    track_files = [\"maint\", { name = \"offset\", weight = 10 }]\n";
        let c = parse(text, &path()).unwrap().config;
        assert_eq!(
            c.track_files[0],
            TrackFile {
                name: "maint".into(),
                path: "/run/maint".into(),
                weight: 1,
                reverse: false,
                init: Some(TrackFileInit {
                    value: 3,
                    overwrite: false
                }),
            }
        );
        let refs = &c.instances[0].track_files;
        // Unset weight and direction: the file's own.
        assert_eq!(refs[0].resolve(&c.track_files[0]), (1, false));
        assert_eq!(refs[1].resolve(&c.track_files[1]), (10, true));
        let again = parse(&to_toml(&c), &path()).unwrap().config;
        assert_eq!(again, c);
        // A name no [[track_file]] has, a duplicate, a missing path, a bad weight.
        let bad = "[[track_file]]\nname = \"a\"\npath = \"/a\"\n[[track_file]]\nname = \"a\"\npath = \"/b\"\n\
                   [[track_file]]\nname = \"b\"\n[[track_file]]\nname = \"c\"\npath = \"/c\"\nweight = 300\n\
                   [[instance]]\nname = \"VI_1\"\ninterface = \"eth1\"\nvrid = 1\ntrack_files = [\"zz\"]\n";
        let msgs: Vec<String> = errors(bad).into_iter().map(|d| d.message).collect();
        for expected in [
            "`a` is defined twice",
            "missing key `path`",
            "out of range -254..=254",
            "names `zz`, but no [[track_file]]",
        ] {
            assert!(
                msgs.iter().any(|m| m.contains(expected)),
                "{expected}: {msgs:#?}"
            );
        }
    }

    #[test]
    fn config_toml_minimal_instance_gets_defaults() {
        let loaded = parse(MINIMAL, &path()).unwrap();
        assert!(loaded.warnings.is_empty());
        let c = loaded.config;
        assert_eq!(c.global, Global::default());
        assert!(c.checks.is_empty());
        let i = &c.instances[0];
        assert_eq!(i.name, "VI_1");
        assert_eq!(i.interface, "eth1");
        assert_eq!(i.vrid, 33);
        assert_eq!(i.priority, 100);
        assert_eq!(i.version, 2);
        assert_eq!(i.advert_interval, Duration::from_secs(1));
        assert_eq!(i.initial_state, InitialState::Backup);
        assert!(i.preempt);
        assert_eq!(i.preempt_delay, Duration::ZERO);
        assert_eq!(i.unicast_src, None);
        assert!(i.unicast_peers.is_empty());
        assert!(i.check_unicast_src, "lbha checks sources by default");
        assert_eq!(i.down_timer_adverts, 3);
        assert_eq!(i.auth_pass, None);
        assert!(i.virtual_addresses.is_empty());
        assert!(i.track.is_empty());
        assert_eq!(i.notify, Notify::default());
        assert_eq!(i.receive_path, ReceivePathChoice::Auto);
    }

    #[test]
    fn config_toml_every_key() {
        let text = r#"
[global]
vrrp_version = 3
script_security = true
script_user = "keepalived_script"
script_group = "nogroup"

[[check]]
name = "chk_haproxy"
script = "pidof haproxy"
interval = 2
timeout = 0.5
weight = -20
weight_reverse = true
rise = 3
fall = 2

[[instance]]
name = "VI_1"
interface = "eth1"
vrid = 33
priority = 200
advert_interval = 0.25
state = "master"
preempt = false
preempt_delay = 30.5
unicast_src = "10.132.7.12"
unicast_peers = ["10.132.7.13", "10.132.7.14"]
virtual_addresses = ["203.0.113.10/24", "203.0.113.11"]
track = ["chk_haproxy"]
receive_path = "raw"
check_unicast_src = false
down_timer_adverts = 10

[instance.notify]
master = "/etc/keepalived/master.sh"
backup = "/etc/keepalived/backup.sh"
fault = "/etc/keepalived/fault.sh"
any = "/etc/keepalived/notify.sh"

[[instance]]
name = "VI_2"
interface = "eth1"
vrid = 34
version = 2
auth_pass = "secret"
receive_path = "xdp"
"#;
        let loaded = parse(text, &path()).unwrap();
        // preempt = false with state master warns.
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert_eq!(loaded.warnings[0].line, Some(25));
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
            vec![Check {
                name: "chk_haproxy".into(),
                script: "pidof haproxy".into(),
                probe: None,
                interval: Duration::from_secs(2),
                timeout: Duration::from_millis(500),
                weight: -20,
                weight_reverse: true,
                rise: 3,
                fall: 2,
                init_fail: false,
            }]
        );
        let i = &c.instances[0];
        assert_eq!(i.version, 3, "global default");
        assert_eq!(i.priority, 200);
        assert_eq!(i.advert_interval, Duration::from_millis(250));
        assert_eq!(i.initial_state, InitialState::Master);
        assert!(!i.preempt);
        assert_eq!(i.preempt_delay, Duration::from_millis(30_500));
        assert_eq!(i.unicast_src, Some(Ipv4Addr::new(10, 132, 7, 12).into()));
        assert_eq!(
            i.unicast_peers,
            vec![
                IpAddr::from([10, 132, 7, 13]),
                IpAddr::from([10, 132, 7, 14])
            ]
        );
        assert_eq!(
            i.virtual_addresses,
            vec![
                VirtualAddress::new(Ipv4Addr::new(203, 0, 113, 10), 24),
                VirtualAddress::new(Ipv4Addr::new(203, 0, 113, 11), 32)
            ]
        );
        assert_eq!(i.track, vec!["chk_haproxy".to_string()]);
        assert_eq!(i.receive_path, ReceivePathChoice::Raw);
        assert!(!i.check_unicast_src);
        assert_eq!(i.down_timer_adverts, 10);
        assert_eq!(
            i.notify,
            Notify {
                master: Some("/etc/keepalived/master.sh".into()),
                backup: Some("/etc/keepalived/backup.sh".into()),
                fault: Some("/etc/keepalived/fault.sh".into()),
                stop: None,
                any: Some("/etc/keepalived/notify.sh".into()),
            }
        );
        let i2 = &c.instances[1];
        assert_eq!(i2.version, 2);
        assert_eq!(i2.auth_pass.as_deref(), Some("secret"));
        assert_eq!(i2.receive_path, ReceivePathChoice::Xdp);
        assert_eq!(i2.notify, Notify::default());
    }

    #[test]
    fn receive_path_names_the_timerless_xdp_program() {
        let text = "[[instance]]\nname = \"VI_1\"\ninterface = \"eth1\"\nvrid = 51\nreceive_path = \"xdp-no-timer\"\n";
        let loaded = parse(text, &path()).unwrap();
        let choice = loaded.config.instances[0].receive_path;
        assert_eq!(choice, ReceivePathChoice::XdpNoTimer);
        assert_eq!(choice.as_str(), "xdp-no-timer");
    }

    #[test]
    fn config_toml_garp_timing_defaults_overrides_and_bounds() {
        let load = |extra: &str| parse(&format!("{MINIMAL}{extra}"), &path());
        // keepalived's defaults without the table.
        let plain = load("").unwrap().config;
        assert_eq!(plain.instances[0].garp, Garp::default());
        assert_eq!(plain.instances[0].garp.master_repeat, 5);
        assert_eq!(plain.instances[0].garp.master_delay, Duration::from_secs(5));

        // The lower-priority settings follow the master ones given here.
        let c =
            load("\n[instance.garp]\nmaster_repeat = 2\nmaster_delay = 0.5\nmaster_refresh = 60\n")
                .unwrap()
                .config;
        let g = c.instances[0].garp;
        assert_eq!(
            g,
            Garp {
                master_repeat: 2,
                master_delay: Duration::from_millis(500),
                master_refresh: Duration::from_mins(1),
                master_refresh_repeat: 1,
                lower_prio_repeat: 2,
                lower_prio_delay: Duration::from_millis(500),
            }
        );
        assert_eq!(parse(&to_toml(&c), &path()).unwrap().config, c);
        let quiet = load("\n[instance.garp]\nlower_prio_repeat = 0\nmaster_delay = 0\n")
            .unwrap()
            .config;
        assert_eq!(quiet.instances[0].garp.lower_prio_repeat, 0);
        assert_eq!(quiet.instances[0].garp.lower_prio_delay, Duration::ZERO);
        assert_eq!(parse(&to_toml(&quiet), &path()).unwrap().config, quiet);

        for bad in [
            "master_repeat = 0",
            "master_repeat = 101",
            "master_refresh_repeat = 0",
            "master_delay = -1",
            "lower_prio_repeat = \"5\"",
            "burst = 3",
        ] {
            let ConfigErrors { errors: errs, .. } =
                load(&format!("\n[instance.garp]\n{bad}\n")).unwrap_err();
            assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
            assert_eq!(lines_of(&errs), vec![Some(8)], "{bad}: {errs:?}");
        }
    }

    #[test]
    fn config_toml_source_checking_and_down_timer_keys() {
        let peers = |n: u8| -> String {
            let list: Vec<String> = (1..=n).map(|i| format!("\"10.0.0.{i}\"")).collect();
            format!("unicast_peers = [{}]\n", list.join(", "))
        };
        let load = |extra: &str| parse(&format!("{MINIMAL}{extra}"), &path());

        // Eight peers are checked; nine are an error at the ninth, unless
        // source checking is off.
        let eight = load(&peers(8)).expect("eight peers").config;
        assert!(eight.instances[0].check_unicast_src);
        let ConfigErrors { errors: errs, .. } = load(&peers(9)).unwrap_err();
        assert_eq!(lines_of(&errs), vec![Some(6)], "{errs:?}");
        assert!(
            errs[0].message.contains("(this lists 9)")
                && errs[0].message.contains("`check_unicast_src = false`"),
            "{errs:?}"
        );
        let off = load(&format!("{}check_unicast_src = false\n", peers(9)))
            .expect("nine peers, unchecked")
            .config;
        assert!(!off.instances[0].check_unicast_src);
        let again = parse(&to_toml(&off), &path()).expect("round trip").config;
        assert_eq!(again, off);

        for n in [1, 100] {
            let c = load(&format!("down_timer_adverts = {n}\n")).unwrap().config;
            assert_eq!(c.instances[0].down_timer_adverts, n);
            assert_eq!(parse(&to_toml(&c), &path()).unwrap().config, c);
        }
        for bad in ["0", "101", "3.5", "\"3\""] {
            let ConfigErrors { errors: errs, .. } =
                load(&format!("down_timer_adverts = {bad}\n")).unwrap_err();
            assert_eq!(lines_of(&errs), vec![Some(6)], "{bad}: {errs:?}");
            assert!(errs[0].message.contains("`down_timer_adverts`"), "{errs:?}");
        }
        let ConfigErrors { errors: errs, .. } = load("check_unicast_src = \"no\"\n").unwrap_err();
        assert!(
            errs[0]
                .message
                .contains("`check_unicast_src`: expected true or false"),
            "{errs:?}"
        );
    }

    #[test]
    fn config_toml_unknown_key_is_an_error_with_its_line() {
        let text = "[global]\nvrrp_version = 2\nscript_securty = true\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, Some(3));
        assert!(errs[0].message.contains("unknown key `script_securty`"));
        assert_eq!(
            errs[0].to_string(),
            format!("{}:3: {}", path().display(), errs[0].message)
        );
    }

    #[test]
    fn config_toml_unknown_keys_everywhere() {
        let text = r#"bogus = 1
[[check]]
name = "c"
script = "true"
colour = "red"
[[instance]]
name = "VI_1"
interface = "eth1"
vrid = 1
track = ["c"]
prio = 5
[instance.notify]
master = "/x"
restart = "/y"
"#;
        let errs = errors(text);
        assert_eq!(lines_of(&errs), vec![Some(1), Some(5), Some(11), Some(14)]);
        assert!(
            errs[3]
                .message
                .contains("[instance.notify]: unknown key `restart`")
        );
    }

    #[test]
    fn config_toml_syntax_error_has_a_line() {
        let text = "[global]\nvrrp_version = 2\nscript_security = \n";
        let errs = errors(text);
        assert!(!errs.is_empty());
        assert_eq!(errs[0].line, Some(3), "{errs:?}");
    }

    #[test]
    fn config_toml_all_type_and_semantic_errors_are_reported() {
        let text = r#"[[check]]
name = "chk"
script = "true"
interval = "2s"
rise = 0

[[instance]]
name = "VI_1"
interface = "eth1"
vrid = 300
priority = 0
state = "primary"
unicast_peers = ["10.0.0.1", "not-an-ip"]
virtual_addresses = ["10.0.0.9/33"]
track = ["chk", "nope"]

[[instance]]
interface = "eth1"
advert_interval = 1.5
auth_pass = "123456789"
"#;
        let errs = errors(text);
        let msgs: Vec<_> = errs
            .iter()
            .map(|d| format!("{}: {}", d.line.unwrap(), d.message))
            .collect();
        assert_eq!(
            lines_of(&errs),
            vec![
                Some(4),
                Some(5),
                Some(10),
                Some(11),
                Some(12),
                Some(13),
                Some(14),
                Some(15),
                Some(17),
                Some(17),
                Some(19)
            ],
            "{msgs:#?}"
        );
        assert!(msgs[0].contains("`interval`: expected a number of seconds, found string"));
        assert!(msgs[2].contains("`vrid`: 300 is out of range 1..=255"));
        assert!(msgs[4].contains("`state`: `primary` is not one of \"backup\", \"master\""));
        assert!(msgs[7].contains("no check has that name"));
        assert!(msgs[8].contains("missing key `name`"));
        assert!(msgs[9].contains("missing key `vrid`"));
        assert!(msgs[10].contains("VRRPv2"));
    }

    #[test]
    fn config_toml_wrong_shapes() {
        let text = "global = 5\ncheck = 3\n[instance]\nname = \"x\"\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].message.contains("`global`: expected a table"));
        assert!(
            errs[1]
                .message
                .contains("`check`: expected an array of tables")
        );
        assert!(
            errs[2]
                .message
                .contains("`instance`: expected an array of tables")
        );
    }

    #[test]
    fn config_toml_round_trip_of_escapes_and_odd_durations() {
        let text = r#"
[[check]]
name = "quote \" and \\ back"
script = "/bin/sh -c \"exit 0\""
interval = 0.1
timeout = 0.033

[[instance]]
name = "VI_1"
interface = "eth1"
vrid = 1
version = 3
advert_interval = 0.03
track = ["quote \" and \\ back"]
"#;
        let loaded = parse(text, &path()).unwrap();
        assert_eq!(loaded.config.checks[0].interval, Duration::from_millis(100));
        assert_eq!(loaded.config.checks[0].timeout, Duration::from_millis(33));
        let written = to_toml(&loaded.config);
        let again = parse(&written, &path()).unwrap();
        assert_eq!(again.config, loaded.config, "{written}");
    }

    #[test]
    fn config_toml_example_file_parses_and_round_trips() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lbha.toml");
        let text = std::fs::read_to_string(&file).unwrap();
        let loaded = parse(&text, &file).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let c = &loaded.config;
        assert_eq!(c.instances.len(), 1);
        assert_eq!(c.instances[0].vrid, 33);
        assert_eq!(c.checks[0].name, "chk_haproxy");
        let again = parse(&to_toml(c), Path::new("again.toml")).unwrap();
        assert_eq!(&again.config, c);
    }

    /// An IPv6 instance: `[[instance]]` named `name` with `body` added.
    fn v6_instance(name: &str, vrid: u8, body: &str) -> String {
        format!(
            "[[instance]]\nname = \"{name}\"\ninterface = \"eth1\"\nvrid = {vrid}\nversion = 3\nadvert_interval = 0.1\n{body}"
        )
    }

    #[test]
    fn config_toml_ipv6_instances_read_and_round_trip() {
        let text = format!(
            "{}{}{}",
            v6_instance(
                "multicast",
                1,
                "virtual_addresses = [\"fe80::1/64\", \"2001:db8::10/64\", { address = \"203.0.113.9/24\", excluded = true }]\n",
            ),
            v6_instance(
                "unicast",
                2,
                "unicast_src = \"2001:db8::1\"\nunicast_peers = [\"2001:db8::2\"]\nvirtual_addresses = [\"2001:db8::20/64\"]\n",
            ),
            // VRID 1 again, over IPv4: another protocol instance.
            "[[instance]]\nname = \"v4\"\ninterface = \"eth1\"\nvrid = 1\nvirtual_addresses = [\"10.0.0.1/24\"]\n",
        );
        let c = parse(&text, &path()).expect("valid").config;
        let [m, u, v4] = &c.instances[..] else {
            panic!("{c:?}")
        };
        assert_eq!(
            (m.family(), u.family(), v4.family()),
            (Family::V6, Family::V6, Family::V4)
        );
        assert_eq!(
            m.virtual_addresses[0].address,
            "fe80::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(m.virtual_addresses[0].prefix, 64);
        assert!(m.virtual_addresses[2].excluded && m.virtual_addresses[2].address.is_ipv4());
        assert_eq!(u.unicast_src, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(
            u.unicast_peers,
            vec!["2001:db8::2".parse::<IpAddr>().unwrap()]
        );
        let again = parse(&to_toml(&c), &path()).expect("round trip").config;
        assert_eq!(again, c);
    }

    #[test]
    fn config_toml_ipv6_refusals() {
        let one = |body: &str| -> Vec<String> {
            errors(&v6_instance("six", 1, body))
                .into_iter()
                .map(|d| d.message)
                .collect()
        };
        // A peer of the other family, named with the instance.
        let e = one(
            "unicast_src = \"2001:db8::1\"\nunicast_peers = [\"10.0.0.2\"]\nvirtual_addresses = [\"2001:db8::20/64\"]\n",
        );
        assert!(
            e.len() == 1
                && e[0].contains("`six`")
                && e[0].contains("10.0.0.2 is IPv4, but the instance is IPv6"),
            "{e:?}"
        );
        // A virtual address of the other family (not excluded).
        let e = one(
            "unicast_peers = [\"2001:db8::2\"]\nvirtual_addresses = [\"2001:db8::20/64\", \"10.0.0.9/24\"]\n",
        );
        assert!(
            e.len() == 1 && e[0].contains("`virtual_addresses` 10.0.0.9 is IPv4"),
            "{e:?}"
        );
        // The source of the other family.
        let e = one(
            "unicast_src = \"10.0.0.1\"\nunicast_peers = [\"2001:db8::2\"]\nvirtual_addresses = [\"2001:db8::20/64\"]\n",
        );
        assert!(
            e.iter()
                .any(|m| m.contains("2001:db8::2 is IPv6, but the instance is IPv4")),
            "{e:?}"
        );
        // VRRPv2 over IPv6.
        let e = errors(
            "[[instance]]\nname = \"six\"\ninterface = \"eth1\"\nvrid = 1\nversion = 2\nvirtual_addresses = [\"fe80::1/64\"]\n",
        );
        assert!(
            e.len() == 1
                && e[0]
                    .message
                    .contains("`six`: an IPv6 instance runs VRRP version 3")
                && e[0].message.contains("`version = 3`"),
            "{e:?}"
        );
        // Multicast: the first virtual address should be link-local (a
        // warning, as keepalived only logs it: what import-keepalived
        // writes must load) ...
        let warned = |body: &str| -> Vec<String> {
            parse(&v6_instance("six", 1, body), &path())
                .expect("valid, with a warning")
                .warnings
                .into_iter()
                .map(|d| d.message)
                .collect()
        };
        let w = warned("virtual_addresses = [\"2001:db8::10/64\", \"fe80::1/64\"]\n");
        assert!(
            w.len() == 1 && w[0].contains("2001:db8::10 is not link-local"),
            "{w:?}"
        );
        // ... an excluded one does not count ...
        let w = warned(
            "virtual_addresses = [{ address = \"fe80::1/64\", excluded = true }, \"2001:db8::10/64\"]\n",
        );
        assert!(
            w.len() == 1 && w[0].contains("2001:db8::10 is not link-local"),
            "{w:?}"
        );
        // ... and over unicast any address may come first.
        let w = warned(
            "unicast_peers = [\"2001:db8::2\"]\nvirtual_addresses = [\"2001:db8::10/64\"]\n",
        );
        assert!(w.is_empty(), "unicast: no link-local rule: {w:?}");
        // Prefix lengths of the family.
        let e = one("virtual_addresses = [\"fe80::1/129\"]\n");
        assert!(
            e.len() == 1 && e[0].contains("prefix length must be 0..=128"),
            "{e:?}"
        );
        // One VRID per interface within a family.
        let twice = format!(
            "{}{}",
            v6_instance("a", 7, "virtual_addresses = [\"fe80::1/64\"]\n"),
            v6_instance("b", 7, "virtual_addresses = [\"fe80::2/64\"]\n"),
        );
        let e = errors(&twice);
        assert!(
            e.len() == 1
                && e[0]
                    .message
                    .contains("`vrid` 7 on eth1 is already used by `a`")
                && e[0].message.contains("IPv6"),
            "{e:?}"
        );
        // Not an address at all.
        let e = one("unicast_peers = [\"2001:db8::zz\"]\nvirtual_addresses = [\"fe80::1/64\"]\n");
        assert!(
            e.iter()
                .any(|m| m.contains("`2001:db8::zz` is not an IPv4 or IPv6 address")),
            "{e:?}"
        );
    }

    #[test]
    fn config_toml_cidr_and_secs_helpers() {
        assert_eq!(parse_cidr("1.2.3.4/0"), Ok((IpAddr::from([1, 2, 3, 4]), 0)));
        assert!(parse_cidr("1.2.3.4/").is_err());
        assert_eq!(parse_cidr("::1"), Ok(("::1".parse().unwrap(), 128)));
        assert_eq!(
            parse_cidr("2001:db8::10/64"),
            Ok(("2001:db8::10".parse().unwrap(), 64))
        );
        assert!(parse_cidr("2001:db8::10/129").is_err());
        assert!(parse_cidr("1.2.3.4/33").is_err());
        assert_eq!(secs_to_duration(0.01), Some(Duration::from_millis(10)));
        assert_eq!(secs_to_duration(-1.0), None);
        assert_eq!(secs_to_duration(f64::NAN), None);
    }

    #[test]
    fn built_in_probes_replace_the_script() {
        let text = r#"
[[check]]
name = "haproxy_running"
process = "haproxy"

[[check]]
name = "haproxy_master"
pidfile = "/run/haproxy.pid"

[[check]]
name = "frontend"
tcp = "127.0.0.1:80"

[[check]]
name = "health"
http = "http://127.0.0.1:8404/health"
interval = 0.5
"#;
        let loaded = parse(text, &path()).expect("probes parse");
        let probes: Vec<_> = loaded
            .config
            .checks
            .iter()
            .map(|c| c.probe.clone())
            .collect();
        assert_eq!(
            probes,
            vec![
                Some(Probe::Process("haproxy".into())),
                Some(Probe::Pidfile("/run/haproxy.pid".into())),
                Some(Probe::Tcp("127.0.0.1:80".parse().unwrap())),
                Some(Probe::Http("http://127.0.0.1:8404/health".into())),
            ]
        );
        let again = parse(&to_toml(&loaded.config), &path()).expect("round trip");
        assert_eq!(again.config, loaded.config);
    }

    #[test]
    fn config_toml_haproxy_check_reads_defaults_and_round_trips() {
        let text = r#"
[[check]]
name = "hap"
haproxy = { stats_socket = "/run/haproxy/admin.sock", require_frontends = ["fe"] }

[[check]]
name = "hap2"
interval = 0.5
timeout = 0.1
[check.haproxy]
master_socket = "/run/haproxy-master.sock"
pidfile = "/run/haproxy.pid"
backends = ["app", "api"]
backends_down = "fault"
reload_grace = 2
"#;
        let loaded = parse(text, &path()).expect("haproxy checks parse");
        let [a, b] = &loaded.config.checks[..] else {
            panic!("two checks");
        };
        assert_eq!(
            a.timeout,
            HaproxyCheck::DEFAULT_TIMEOUT,
            "200 ms unless told"
        );
        assert_eq!(
            a.probe,
            Some(Probe::Haproxy(HaproxyCheck {
                socket: HaproxySocket::Stats("/run/haproxy/admin.sock".into()),
                pidfile: None,
                require_frontends: vec!["fe".into()],
                backends: vec![],
                backends_down: BackendsDown::Weight(HaproxyCheck::DEFAULT_BACKENDS_WEIGHT),
                reload_grace: HaproxyCheck::DEFAULT_RELOAD_GRACE,
            }))
        );
        assert_eq!(b.timeout, Duration::from_millis(100));
        assert_eq!(
            b.probe,
            Some(Probe::Haproxy(HaproxyCheck {
                socket: HaproxySocket::Master("/run/haproxy-master.sock".into()),
                pidfile: Some("/run/haproxy.pid".into()),
                require_frontends: vec![],
                backends: vec!["app".into(), "api".into()],
                backends_down: BackendsDown::Fault,
                reload_grace: Duration::from_secs(2),
            }))
        );
        let again = parse(&to_toml(&loaded.config), &path()).expect("round trip");
        assert_eq!(again.config, loaded.config);

        let both = errors(
            "[[check]]\nname = \"c\"\nhaproxy = { stats_socket = \"/a\", master_socket = \"/b\" }\n",
        );
        assert!(both[0].message.contains("exclude each other"), "{both:?}");
        // No socket: discovered from the running HAProxy, or from `config`.
        let discover = parse(
            "[[check]]\nname = \"c\"\nhaproxy = { backends = [\"x\"] }\n[[check]]\nname = \"d\"\nhaproxy = { config = \"/etc/haproxy\" }\n",
            &path(),
        )
        .expect("parses");
        let sockets: Vec<_> = discover
            .config
            .checks
            .iter()
            .map(|c| match &c.probe {
                Some(Probe::Haproxy(h)) => h.socket.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            sockets,
            [
                HaproxySocket::Discover { config: None },
                HaproxySocket::Discover {
                    config: Some("/etc/haproxy".into())
                }
            ]
        );
        let again = parse(&to_toml(&discover.config), &path()).expect("round trip");
        assert_eq!(again.config, discover.config);
        let two = errors(
            "[[check]]\nname = \"c\"\nhaproxy = { stats_socket = \"/a\", config = \"/b\" }\n",
        );
        assert!(two[0].message.contains("exclude each other"), "{two:?}");
        let positive = errors(
            "[[check]]\nname = \"c\"\nhaproxy = { stats_socket = \"/a\", backends_weight = 10 }\n",
        );
        assert!(positive[0].message.contains("out of range"), "{positive:?}");
    }

    #[test]
    fn a_check_needs_exactly_one_way_to_check() {
        let none = errors("[[check]]\nname = \"c\"\n");
        assert!(none[0].message.contains("is required"), "{none:?}");
        assert_eq!(none[0].line, Some(1));
        let two = errors("[[check]]\nname = \"c\"\nscript = \"true\"\nprocess = \"haproxy\"\n");
        assert!(two[0].message.contains("exclude each other"), "{two:?}");
        let bad = errors("[[check]]\nname = \"c\"\ntcp = \"localhost\"\n");
        assert!(bad[0].message.contains("not an address:port"), "{bad:?}");
        assert_eq!(bad[0].line, Some(3));
    }

    #[test]
    fn heartbeat_section_reads_and_round_trips() {
        let loaded = parse(
            &format!(
                "{MINIMAL}\n[heartbeat]\nlisten = \"192.0.2.1:7823\"\npeers = [\"192.0.2.2:7823\", \"[2001:db8::2]:7823\"]\nkey_file = \"/etc/lbha/hb.key\"\n"
            ),
            &path(),
        )
        .unwrap();
        let h = loaded.config.heartbeat.clone().expect("section");
        assert_eq!(h.listen, "192.0.2.1:7823".parse().unwrap());
        assert_eq!(h.peers.len(), 2);
        assert_eq!(h.key_file, PathBuf::from("/etc/lbha/hb.key"));
        assert_eq!(h.interval, Heartbeat::DEFAULT_INTERVAL);
        let again = parse(&to_toml(&loaded.config), &path()).unwrap();
        assert_eq!(again.config, loaded.config);
    }

    #[test]
    fn heartbeat_mistakes_are_reported_with_lines() {
        let errs = errors(&format!(
            "{MINIMAL}\n[heartbeat]\nlisten = \"nowhere\"\npeers = []\ninterval = 0.001\ncolour = 1\n"
        ));
        let text: Vec<String> = errs.iter().map(|d| d.message.clone()).collect();
        let has = |needle: &str| text.iter().any(|m| m.contains(needle));
        assert!(has("\"nowhere\" is not an address:port"), "{text:?}");
        assert!(has("missing key `key_file`"), "{text:?}");
        assert!(has("`peers` must name at least one peer"), "{text:?}");
        assert!(has("`interval` must be at least 0.01 s"), "{text:?}");
        assert!(has("unknown key `colour`"), "{text:?}");
        assert!(
            !has("missing key `listen`"),
            "reported once, as unreadable: {text:?}"
        );
    }

    /// A reserved IPv6 beside the floating IPv4: following the IPv4's
    /// instance by default or an instance of its own; the family, the
    /// instance and a lone `reserved_ipv6_instance` are checked.
    #[test]
    fn floating_ip_reserved_ipv6() {
        let two = format!(
            "{MINIMAL}
[[instance]]
name = \"VI_6\"
interface = \"eth1\"
vrid = 34
"
        );
        let section = |extra: &str| {
            format!(
                "{two}
[floating_ip]
ip = \"203.0.113.10\"
instance = \"VI_1\"
{extra}"
            )
        };
        let same = parse(
            &section("reserved_ipv6 = \"2604:a880:400:d1::7a2:1\"\n"),
            &path(),
        )
        .expect("parses");
        let v6 = same
            .config
            .floating_ip
            .as_ref()
            .unwrap()
            .settings
            .reserved_ipv6
            .clone();
        assert_eq!(
            v6,
            Some(ReservedIpv6 {
                address: "2604:a880:400:d1::7a2:1".parse().unwrap(),
                instance: None,
            })
        );
        let again = parse(&to_toml(&same.config), &path()).expect("round trip");
        assert_eq!(again.config, same.config);

        let own = parse(
            &section(
                "reserved_ipv6 = \"2604:a880:400:d1::7a2:1\"\nreserved_ipv6_instance = \"VI_6\"\n",
            ),
            &path(),
        )
        .expect("parses");
        let v6 = own
            .config
            .floating_ip
            .as_ref()
            .unwrap()
            .settings
            .reserved_ipv6
            .clone();
        assert_eq!(v6.and_then(|v| v.instance).as_deref(), Some("VI_6"));
        let again = parse(&to_toml(&own.config), &path()).expect("round trip");
        assert_eq!(again.config, own.config);

        // Without the new keys nothing changes (existing configs stay valid).
        let plain = parse(&section(""), &path()).expect("parses");
        assert_eq!(
            plain.config.floating_ip.unwrap().settings.reserved_ipv6,
            None
        );

        for (extra, needle) in [
            ("reserved_ipv6 = \"203.0.113.11\"\n", "is an IPv4 address"),
            (
                "reserved_ipv6 = \"fe80::1\"\n",
                "not a global unicast address",
            ),
            ("reserved_ipv6 = \"nope\"\n", "is not an IPv6 address"),
            ("reserved_ipv6 = 6\n", "`reserved_ipv6`"),
            (
                "reserved_ipv6 = \"2604:a880::1\"\nreserved_ipv6_instance = \"VI_9\"\n",
                "`reserved_ipv6_instance` \"VI_9\" is not a configured [[instance]]",
            ),
            (
                "reserved_ipv6_instance = \"VI_6\"\n",
                "`reserved_ipv6_instance` without `reserved_ipv6`",
            ),
        ] {
            let text: Vec<String> = errors(&section(extra))
                .iter()
                .map(|d| d.message.clone())
                .collect();
            assert!(text.iter().any(|m| m.contains(needle)), "{extra}: {text:?}");
        }
    }

    /// An IPv6-only service: a reserved IPv6 without a floating IPv4,
    /// following `reserved_ipv6_instance`, else `instance`, else the first;
    /// a table with neither address is refused, and a bad one is reported
    /// once, where it is.
    #[test]
    fn floating_ip_reserved_ipv6_alone() {
        let table = |keys: &str| format!("{MINIMAL}\n[floating_ip]\n{keys}");
        let loaded = parse(
            &table("reserved_ipv6 = \"2604:a880:400:d1::7a2:1\"\ninstance = \"VI_1\"\n"),
            &path(),
        )
        .expect("an IPv6-only [floating_ip] parses");
        let f = loaded.config.floating_ip.clone().expect("section");
        assert_eq!(f.settings.ip, None);
        assert_eq!(f.instance.as_deref(), Some("VI_1"));
        assert_eq!(
            f.settings.reserved_ipv6.as_ref().map(|v| v.address),
            Some("2604:a880:400:d1::7a2:1".parse().unwrap())
        );
        let text = to_toml(&loaded.config);
        assert!(!text.contains("\nip = "), "{text}");
        let again = parse(&text, &path()).expect("round trip");
        assert_eq!(again.config, loaded.config);

        let messages = |keys: &str| -> Vec<String> {
            errors(&table(keys))
                .iter()
                .map(|d| d.message.clone())
                .collect()
        };
        let none = messages("token_env = \"T\"\n");
        assert!(
            none.iter()
                .any(|m| m.contains("nothing to move: give `ip`") && m.contains("`reserved_ipv6`")),
            "{none:?}"
        );
        let bad = messages("reserved_ipv6 = \"fe80::1\"\n");
        assert!(
            bad.iter()
                .any(|m| m.contains("not a global unicast address"))
                && !bad.iter().any(|m| m.contains("nothing to move")),
            "{bad:?}"
        );
    }

    #[test]
    fn floating_ip_section() {
        let text = format!(
            "{MINIMAL}\n[floating_ip]\nip = \"203.0.113.10\"\ntoken_file = \"/etc/lbha/token\"\napi_path = \"reserved_ips\"\nrecheck_interval = 5\n"
        );
        let loaded = parse(&text, &path()).expect("parses");
        let f = loaded.config.floating_ip.clone().expect("section");
        assert_eq!(
            f.settings.ip,
            Some(std::net::Ipv4Addr::new(203, 0, 113, 10))
        );
        assert_eq!(
            f.settings.token,
            TokenSource::File("/etc/lbha/token".into())
        );
        assert_eq!(f.settings.path_family, PathFamily::ReservedIps);
        assert_eq!(f.settings.recheck_interval, Duration::from_secs(5));
        assert_eq!(f.settings.api_url, "https://api.digitalocean.com");
        assert_eq!(f.settings.ca_file, None);
        assert_eq!(f.settings.keepalive_interval, DEFAULT_KEEPALIVE_INTERVAL);
        let again = parse(&to_toml(&loaded.config), &path()).expect("round trip");
        assert_eq!(again.config, loaded.config);

        // A CA bundle, and the keep-alive turned off (zero is allowed).
        let tls = parse(
            &format!(
                "{MINIMAL}\n[floating_ip]\nip = \"203.0.113.10\"\nca_file = \"/etc/lbha/ca.pem\"\nkeepalive_interval = 0\n"
            ),
            &path(),
        )
        .expect("parses");
        let settings = &tls.config.floating_ip.as_ref().expect("section").settings;
        assert_eq!(settings.ca_file, Some(PathBuf::from("/etc/lbha/ca.pem")));
        assert_eq!(settings.keepalive_interval, Duration::ZERO);
        let again = parse(&to_toml(&tls.config), &path()).expect("round trip");
        assert_eq!(again.config, tls.config);

        let defaults = parse(
            &format!("{MINIMAL}\n[floating_ip]\nip = \"203.0.113.10\"\n"),
            &path(),
        )
        .unwrap();
        assert_eq!(
            defaults.config.floating_ip.unwrap().settings.token,
            TokenSource::Env(DEFAULT_TOKEN_ENV.into())
        );
        let missing = errors(&format!("{MINIMAL}\n[floating_ip]\ninstance = \"VI_1\"\n"));
        assert!(
            missing[0].message.contains("nothing to move: give `ip`"),
            "{missing:?}"
        );
        let both = errors(&format!(
            "{MINIMAL}\n[floating_ip]\nip = \"203.0.113.10\"\ntoken_file = \"/t\"\ntoken_env = \"T\"\n"
        ));
        assert!(both[0].message.contains("exclude each other"), "{both:?}");
    }

    #[test]
    fn floating_ip_peer_droplet_id() {
        let text = format!(
            "{MINIMAL}\n[floating_ip]\nip = \"203.0.113.10\"\ndroplet_id = 1001\npeer_droplet_id = 1002\n"
        );
        let loaded = parse(&text, &path()).expect("parses");
        let settings = &loaded
            .config
            .floating_ip
            .as_ref()
            .expect("section")
            .settings;
        assert_eq!(settings.peer_droplet_id, Some(1002));
        let again = parse(&to_toml(&loaded.config), &path()).expect("round trip");
        assert_eq!(again.config, loaded.config);
        let same = errors(&format!(
            "{MINIMAL}\n[floating_ip]\nip = \"203.0.113.10\"\ndroplet_id = 7\npeer_droplet_id = 7\n"
        ));
        assert!(
            same[0]
                .message
                .contains("`peer_droplet_id` is `droplet_id`"),
            "{same:?}"
        );
        let zero = errors(&format!(
            "{MINIMAL}\n[floating_ip]\nip = \"203.0.113.10\"\npeer_droplet_id = 0\n"
        ));
        assert!(zero[0].message.contains("peer_droplet_id"), "{zero:?}");
    }

    #[test]
    fn digitalocean_example_parses_and_round_trips() {
        let file = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/digitalocean.toml"
        ));
        let loaded = crate::load_toml(file).expect("examples/digitalocean.toml is valid");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let f = loaded
            .config
            .floating_ip
            .as_ref()
            .expect("floating_ip section");
        assert_eq!(f.instance.as_deref(), Some("VI_1"));
        assert_eq!(
            loaded.config.checks[0].probe,
            Some(Probe::Process("haproxy".into()))
        );
        let again = parse(&to_toml(&loaded.config), file).expect("round trip");
        assert_eq!(again.config, loaded.config);
    }

    #[test]
    fn readme_example_is_valid() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("```toml\n")
            .expect("the README has a TOML example")
            + 8;
        let end = start + readme[start..].find("```").expect("closed");
        let loaded =
            parse(&readme[start..end], Path::new("README.md")).expect("README example parses");
        assert_eq!(loaded.config.instances.len(), 1);
        assert!(loaded.config.floating_ip.is_some());
    }

    #[test]
    fn durations_round_trip_exactly() {
        for text in ["4297188.009010294", "0.033", "0.03", "2", "31622400"] {
            let conf = format!(
                "{MINIMAL}advert_interval = 1\n\n[[check]]\nname = \"c\"\nscript = \"true\"\ninterval = {text}\n"
            );
            let loaded = parse(&conf, &path()).expect(text);
            let again = parse(&to_toml(&loaded.config), &path()).expect("round trip");
            assert_eq!(again.config, loaded.config, "{text}");
        }
    }
}
