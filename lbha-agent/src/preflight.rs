//! What a configuration needs from this host, checked before anything runs
//! it: users and groups, interfaces and their addresses, scripts (present,
//! and acceptable under script security), the API token and CA bundle, the
//! listening sockets. The daemon runs these checks at start and before every reload
//! swaps anything, and `check-config` runs the same ones, so what
//! check-config accepts a reload accepts.
//!
//! Everything here blocks (file system, NSS, sockets): call it from the
//! blocking pool, never from the runtime thread.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
};

use crate::{
    cloud::{load_ca_file, load_token},
    config::{Config, Diagnostic, Family, Loaded},
    health::{
        process::{process_check_of, wrapped_process_check},
        script::{self, ScriptPolicy},
    },
    sys::iface::{if_index, interface_ipv4, interface_ipv6_link_local},
};

/// What the running agent already holds, so a reload does not report a
/// socket it bound itself as unavailable.
#[derive(Clone, Copy, Debug, Default)]
pub struct Held<'a> {
    pub running: Option<&'a Config>,
}

/// Every problem this host has with `loaded` (empty: it can run).
pub fn check_host(loaded: &Loaded, held: Held<'_>) -> Vec<Diagnostic> {
    let config = &loaded.config;
    let lines = &loaded.lines;
    let mut problems = Vec::new();
    let mut problem = |line: Option<usize>, message: String| {
        problems.push(loaded.diagnostic(line, message));
    };

    if let Err(error) = ScriptPolicy::new(
        config.global.script_security,
        config.global.script_user.as_deref(),
        config.global.script_group.as_deref(),
    ) {
        let field = match error {
            script::ScriptError::UnknownGroup(_) => "script_group",
            _ => "script_user",
        };
        problem(
            lines.global.line(field),
            format!("{error}: scripts could not run"),
        );
    }
    let security = config.global.script_security;

    for (index, check) in config.checks.iter().enumerate() {
        if check.probe.is_some() {
            continue;
        }
        let words = script::split_command(&check.script);
        // Answered from procfs, as the runner does (see health::runner).
        if process_check_of(&words).is_some()
            || wrapped_process_check(&words)
                .is_some_and(|_| !security || script::check_secure(Path::new(&words[0])).is_ok())
        {
            continue;
        }
        if let Err(why) = runnable(&check.script, security) {
            problem(
                lines.check(index).line("script"),
                format!("check {}: {why}", check.name),
            );
        }
    }

    for (index, instance) in config.instances.iter().enumerate() {
        let at = lines.instance(index);
        match if_index(&instance.interface) {
            Err(error) => problem(
                at.line("interface"),
                format!("instance {}: {error}", instance.name),
            ),
            Ok(_) if instance.unicast_src.is_none() => {
                let missing = match instance.family() {
                    Family::V4 => interface_ipv4(&instance.interface)
                        .is_err()
                        .then_some("IPv4 address"),
                    Family::V6 => interface_ipv6_link_local(&instance.interface)
                        .is_err()
                        .then_some("IPv6 link-local address"),
                };
                if let Some(missing) = missing {
                    problem(
                        at.line("interface"),
                        format!(
                            "instance {}: interface {} has no {missing} to send adverts from (set unicast_src_ip)",
                            instance.name, instance.interface
                        ),
                    );
                }
            }
            Ok(_) => {}
        }
        for tracked in &instance.track_interfaces {
            if let Err(error) = if_index(&tracked.name) {
                problem(
                    at.line("track_interfaces"),
                    format!("instance {} track_interface: {error}", instance.name),
                );
            }
        }
        // A virtual address's own `dev` must exist too: it goes there.
        let devices: std::collections::BTreeSet<&str> = instance
            .virtual_addresses
            .iter()
            .filter_map(|v| v.dev.as_deref())
            .filter(|d| *d != instance.interface)
            .collect();
        for device in devices {
            if let Err(error) = if_index(device) {
                problem(
                    at.line("virtual_addresses"),
                    format!("instance {}: virtual address `dev`: {error}", instance.name),
                );
            }
        }
        // A route's `dev` and a rule's `iif`/`oif`: keepalived (without
        // `dynamic_interfaces`) drops a route naming a missing interface.
        let route_devices: std::collections::BTreeSet<(&str, &str)> = instance
            .virtual_routes
            .iter()
            .filter_map(|r| r.dev.as_deref().map(|d| ("virtual_routes", d)))
            .chain(instance.virtual_rules.iter().flat_map(|r| {
                [r.iif.as_deref(), r.oif.as_deref()]
                    .into_iter()
                    .flatten()
                    .map(|d| ("virtual_rules", d))
            }))
            .collect();
        for (key, device) in route_devices {
            if let Err(error) = if_index(device) {
                problem(
                    at.line(key),
                    format!("instance {}: `{key}` interface: {error}", instance.name),
                );
            }
        }
        let notify = &instance.notify;
        for (kind, command) in [
            ("notify_master", &notify.master),
            ("notify_backup", &notify.backup),
            ("notify_fault", &notify.fault),
            ("notify_stop", &notify.stop),
            ("notify", &notify.any),
        ] {
            if let Some(command) = command
                && let Err(why) = runnable(command, security)
            {
                problem(
                    at.line("notify"),
                    format!("instance {} {kind}: {why}", instance.name),
                );
            }
        }
    }

    if let Some(floating_ip) = &config.floating_ip {
        let at = lines.floating_ip.table;
        let follows = floating_ip.instance.as_deref();
        let known = match follows {
            Some(name) => config.instances.iter().any(|i| i.name == name),
            None => !config.instances.is_empty(),
        };
        if !known {
            problem(
                at,
                format!(
                    "[floating_ip] follows instance {}, which is not configured",
                    follows.unwrap_or("(none)")
                ),
            );
        }
        // `--reserved-ipv6-instance` is not checked by the file's parser.
        if let Some(name) = floating_ip
            .settings
            .reserved_ipv6
            .as_ref()
            .and_then(|v6| v6.instance.as_deref())
            && !config.instances.iter().any(|i| i.name == name)
        {
            problem(
                at,
                format!("the reserved IPv6 follows instance {name}, which is not configured"),
            );
        }
        if let Err(error) = floating_ip.settings.validate() {
            problem(at, error.to_string());
        }
        if let Err(error) = load_token(&floating_ip.settings.token) {
            problem(
                lines.floating_ip.line("token_file").or(at),
                format!(
                    "{}: the floating IP could not be moved",
                    crate::error_chain(&error)
                ),
            );
        }
        if let Some(path) = &floating_ip.settings.ca_file
            && let Err(error) = load_ca_file(path)
        {
            problem(
                lines.floating_ip.line("ca_file").or(at),
                format!(
                    "{}: the API client could not be built",
                    crate::error_chain(&error)
                ),
            );
        }
    }

    if let Some(heartbeat) = &config.heartbeat {
        let at = &lines.heartbeat;
        if let Err(error) = crate::heartbeat::read_key(&heartbeat.key_file) {
            problem(at.line("key_file"), crate::error_chain(&error));
        }
        let held_listen = held
            .running
            .and_then(|c| c.heartbeat.as_ref())
            .map(|h| h.listen);
        if held_listen != Some(heartbeat.listen)
            && let Err(error) = std::net::UdpSocket::bind(heartbeat.listen)
        {
            problem(
                at.line("listen"),
                format!(
                    "[heartbeat] listen {} cannot be bound: {error}",
                    heartbeat.listen
                ),
            );
        }
    }

    let running = held.running.map(|c| &c.global);
    if let Some(addr) = config.global.metrics_listen
        && running.and_then(|g| g.metrics_listen) != Some(addr)
        && let Err(error) = TcpListener::bind(addr)
    {
        problem(
            lines.global.line("metrics_listen"),
            format!("metrics_listen {addr} cannot be bound: {error}"),
        );
    }
    let socket = &config.global.status_socket;
    if running.map(|g| &g.status_socket) != Some(socket)
        && let Err(why) = creatable(socket)
    {
        problem(
            lines.global.line("status_socket"),
            format!("status_socket {}: {why}", socket.display()),
        );
    }
    problems
}

/// What in a script shows that it moves a DigitalOcean floating (reserved)
/// IP itself, as the master.sh lbha replaces does.
fn moves_floating_ip(text: &str) -> Option<&'static str> {
    let lower = text.to_ascii_lowercase();
    if lower.contains("/v2/floating_ips") {
        Some("it calls DigitalOcean's API, `/v2/floating_ips`")
    } else if lower.contains("/v2/reserved_ips") {
        Some("it calls DigitalOcean's API, `/v2/reserved_ips`")
    } else if lower.contains("doctl compute floating-ip-action")
        || lower.contains("doctl compute reserved-ip-action")
    {
        Some("it runs `doctl compute floating-ip-action`")
    } else if lower.contains("assign") && (lower.contains("floating") || lower.contains("reserved"))
    {
        Some("it assigns a floating IP")
    } else {
        None
    }
}

/// Largest script read to look for a floating-IP assignment.
const SCRIPT_READ_LIMIT: u64 = 1 << 20;

/// Why `command` (a notify script) moves the floating IP itself, from the
/// command line or the files it names (the script, or what a shell runs).
fn notify_moves_floating_ip(command: &str) -> Option<&'static str> {
    if let Some(why) = moves_floating_ip(command) {
        return Some(why);
    }
    let words = script::split_command(command);
    for (i, word) in words.iter().enumerate() {
        // The program itself, and file arguments (`bash /etc/x.sh`).
        let path = if i == 0 {
            script::resolve(word).ok()
        } else if word.starts_with('/') {
            Some(PathBuf::from(word))
        } else {
            None
        };
        let Some(path) = path else { continue };
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        let mut text = Vec::new();
        let _ = std::io::Read::read_to_end(
            &mut std::io::Read::take(file, SCRIPT_READ_LIMIT),
            &mut text,
        );
        if let Some(why) = moves_floating_ip(&String::from_utf8_lossy(&text)) {
            return Some(why);
        }
    }
    None
}

/// With a floating IP configured (`--floating-ip` or `[floating_ip]`),
/// warnings for the MASTER notify scripts of the instance it follows that
/// assign it themselves: every failover would assign it twice, and the
/// second assign is refused while the first is pending (or, worse, lands
/// after a failover back). Reads the scripts when readable, so call it off
/// the runtime thread.
pub fn double_assign_warnings(loaded: &Loaded) -> Vec<Diagnostic> {
    let config = &loaded.config;
    let Some(floating_ip) = &config.floating_ip else {
        return Vec::new();
    };
    // The scripts move a floating IPv4; a reserved IPv6 alone is not assigned
    // twice by them.
    let Some(ip) = floating_ip.settings.ip else {
        return Vec::new();
    };
    let followed = match floating_ip.instance.as_deref() {
        Some(name) => config.instances.iter().position(|i| i.name == name),
        None => (!config.instances.is_empty()).then_some(0),
    };
    let Some(index) = followed else {
        return Vec::new();
    };
    let instance = &config.instances[index];
    let (master_kw, any_kw, drop_ip) = match crate::config::Syntax::of_path(&loaded.file) {
        crate::config::Syntax::Keepalived => ("notify_master", "notify", "--floating-ip"),
        crate::config::Syntax::Toml => ("notify.master", "notify.any", "[floating_ip]"),
    };
    let mut warnings = Vec::new();
    for (kw, command) in [
        (master_kw, &instance.notify.master),
        (any_kw, &instance.notify.any),
    ] {
        let Some(command) = command else { continue };
        if let Some(why) = notify_moves_floating_ip(command) {
            warnings.push(loaded.diagnostic(
                loaded.lines.instance(index).line("notify"),
                format!(
                    "instance {}: `{kw}` ({command}) also moves the floating IP ({why}), and lbha assigns {} itself: every failover would assign it twice. Drop one: remove `{kw}` (lbha does what master.sh did), or remove {drop_ip} and keep the script",
                    instance.name, ip
                ),
            ));
        }
    }
    warnings
}

/// Whether `command` can run: its program exists and, under script
/// security, is owned by root and writable by no one else.
fn runnable(command: &str, security: bool) -> Result<(), String> {
    let words = script::split_command(command);
    let Some(program) = words.first() else {
        return Err("empty command".into());
    };
    let path = script::resolve(program).map_err(|e| e.to_string())?;
    if !path.exists() {
        return Err(format!("{} does not exist", path.display()));
    }
    if security {
        script::check_secure(&path)
            .map_err(|e| format!("{e}; script security would refuse to run it"))?;
    }
    Ok(())
}

/// Whether the agent could create `path` (a socket): the nearest existing
/// ancestor is a directory this process may write in.
fn creatable(path: &Path) -> Result<(), String> {
    let mut ancestor: Option<PathBuf> = path.parent().map(Path::to_path_buf);
    while let Some(dir) = ancestor {
        if dir.exists() {
            if !dir.is_dir() {
                return Err(format!("{} is not a directory", dir.display()));
            }
            return nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK)
                .map_err(|errno| format!("{} is not writable: {errno}", dir.display()));
        }
        ancestor = dir.parent().map(Path::to_path_buf);
    }
    Err("has no parent directory".into())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn load(text: &str) -> Loaded {
        crate::config::parse_toml(text, Path::new("host.toml")).expect("valid configuration")
    }

    fn messages(problems: &[Diagnostic]) -> Vec<String> {
        problems.iter().map(ToString::to_string).collect()
    }

    const LO: &str =
        "[[instance]]\nname = \"VI_1\"\ninterface = \"lo\"\nvrid = 1\npriority = 100\n";

    #[test]
    fn a_runnable_configuration_has_no_problems() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[global]\nstatus_socket = \"{}/s/lbha.sock\"\n\n{LO}",
            dir.path().display()
        );
        assert_eq!(
            messages(&check_host(&load(&text), Held::default())),
            Vec::<String>::new()
        );
    }

    #[test]
    fn an_unknown_script_user_is_reported_at_its_line() {
        let text = format!("[global]\nscript_user = \"lbha-no-such-user\"\n\n{LO}");
        let problems = messages(&check_host(&load(&text), Held::default()));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("host.toml:2: "), "{problems:?}");
        assert!(problems[0].contains("lbha-no-such-user"), "{problems:?}");
    }

    #[test]
    fn a_missing_interface_is_reported_at_its_line() {
        let text =
            "[[instance]]\nname = \"VI_1\"\ninterface = \"lbha-gone0\"\nvrid = 1\npriority = 100\n";
        let problems = messages(&check_host(&load(text), Held::default()));
        assert_eq!(
            problems,
            ["host.toml:3: instance VI_1: interface lbha-gone0 does not exist"]
        );
    }

    /// An IPv6 instance sends from its interface's link-local address; `lo`
    /// has none (only ::1), so without `unicast_src` it cannot advertise.
    #[test]
    fn an_ipv6_instance_needs_a_link_local_address_or_a_source() {
        let v6 = "[[instance]]\nname = \"VI_6\"\ninterface = \"lo\"\nvrid = 1\nversion = 3\n\
                  virtual_addresses = [\"fe80::1/64\"]\n";
        let problems = messages(&check_host(&load(v6), Held::default()));
        assert_eq!(
            problems,
            [
                "host.toml:3: instance VI_6: interface lo has no IPv6 link-local address to send adverts from (set unicast_src_ip)"
            ]
        );
        let with_src = v6.replace(
            "version = 3\n",
            "version = 3\nunicast_src = \"::1\"\nunicast_peers = [\"::2\"]\n",
        );
        assert!(messages(&check_host(&load(&with_src), Held::default())).is_empty());
    }

    #[test]
    fn an_unreadable_token_file_is_reported_without_the_token() {
        let text = format!(
            "{LO}\n[floating_ip]\nip = \"203.0.113.10\"\ntoken_file = \"/nonexistent/lbha/token\"\n"
        );
        let problems = messages(&check_host(&load(&text), Held::default()));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("host.toml:9: "), "{problems:?}");
        assert!(
            problems[0].contains("/nonexistent/lbha/token"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_ca_file_must_be_readable_and_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let config = |ca: &Path| {
            format!(
                "{LO}\n[floating_ip]\nip = \"203.0.113.10\"\ntoken_env = \"PATH\"\nca_file = \"{}\"\n",
                ca.display()
            )
        };
        let missing = dir.path().join("missing.pem");
        let problems = messages(&check_host(&load(&config(&missing)), Held::default()));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("host.toml:10: ") && problems[0].contains("cannot read it"),
            "{problems:?}"
        );
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let problems = messages(&check_host(&load(&config(&not_pem)), Held::default()));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("holds no certificate"), "{problems:?}");

        let ca = lbha_dosim::tls::LabCa::generate(&["127.0.0.1".into()]).unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, ca.ca_pem()).unwrap();
        assert_eq!(
            messages(&check_host(&load(&config(&good)), Held::default())),
            Vec::<String>::new()
        );
    }

    #[test]
    fn scripts_must_exist_and_pass_script_security() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = dir.path().join("check.sh");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o775)).unwrap();
        let text = format!(
            "[global]\nscript_security = true\n\n[[check]]\nname = \"mine\"\nscript = \"{}\"\n\n\
             [[check]]\nname = \"gone\"\nscript = \"/nonexistent/lbha/check\"\n\n\
             [[check]]\nname = \"haproxy\"\nscript = \"pidof haproxy\"\n\n{LO}",
            script.display()
        );
        let problems = messages(&check_host(&load(&text), Held::default()));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("host.toml:6: check mine: ")
                && problems[0].contains("script security would refuse"),
            "a group-writable script: {problems:?}"
        );
        assert!(
            problems[1].starts_with("host.toml:10: check gone: "),
            "a missing script: {problems:?}"
        );
    }

    #[test]
    fn the_heartbeat_needs_a_long_enough_key_and_its_port() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("hb.key");
        std::fs::write(&key, "short\n").unwrap();
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let text = format!(
            "{LO}\n[heartbeat]\nlisten = \"{}\"\npeers = [\"127.0.0.1:9\"]\nkey_file = \"{}\"\n",
            taken.local_addr().unwrap(),
            key.display()
        );
        let problems = messages(&check_host(&load(&text), Held::default()));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("fewer than 16 bytes"), "{problems:?}");
        assert!(problems[1].contains("cannot be bound"), "{problems:?}");
        std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
        drop(taken);
        assert_eq!(
            messages(&check_host(&load(&text), Held::default())),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_bound_metrics_address_is_a_problem_unless_we_hold_it() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let text = format!("[global]\nmetrics_listen = \"{addr}\"\n\n{LO}");
        let loaded = load(&text);
        let problems = messages(&check_host(&loaded, Held::default()));
        assert!(
            problems.iter().any(|p| p.contains("cannot be bound")),
            "{problems:?}"
        );
        let held = Held {
            running: Some(&loaded.config),
        };
        assert!(
            !messages(&check_host(&loaded, held))
                .iter()
                .any(|p| p.contains("cannot be bound")),
            "the running agent's own listener is not a problem"
        );
    }
}
