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
    config::{Config, Diagnostic, Loaded},
    health::{
        process::{process_check_of, wrapped_process_check},
        script::{self, ScriptPolicy},
    },
    sys::iface::{if_index, interface_ipv4},
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
                if interface_ipv4(&instance.interface).is_err() {
                    problem(
                        at.line("interface"),
                        format!(
                            "instance {}: interface {} has no IPv4 address to send adverts from (set unicast_src_ip)",
                            instance.name, instance.interface
                        ),
                    );
                }
            }
            Ok(_) => {}
        }
        let notify = &instance.notify;
        for (kind, command) in [
            ("notify_master", &notify.master),
            ("notify_backup", &notify.backup),
            ("notify_fault", &notify.fault),
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
