//! Where the running HAProxy listens for commands, when the `haproxy`
//! check names no socket: the master's command line (`-S` master CLI, `-f`
//! configuration files or directories, `-C`) and the `global` section's
//! `stats socket` lines, read as HAProxy reads them. Unix sockets only: a
//! TCP bind (`ipv4@`, `host:port`) or an abstract one is skipped.
//!
//! The parsers are pure; [`discover`] reads procfs and the files (blocking:
//! call it on the blocking pool).

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::config::HaproxySocket;

/// What a master's command line says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cmdline {
    /// `-S`'s socket, when it is a unix one.
    pub master_socket: Option<PathBuf>,
    /// `-f` arguments and those after `--`, in order (files or directories),
    /// relative to `-C`'s directory when given.
    pub configs: Vec<PathBuf>,
    /// `-C`: the directory HAProxy changes to before reading the files.
    pub chdir: Option<PathBuf>,
}

/// Reads HAProxy's arguments (without the program name) as its option
/// parser does: `-f FILE`, `-S BIND[,OPTS]`, `-C DIR`, and every argument
/// after `--` is a configuration file. Other options are skipped (with
/// their argument, for those that take one).
pub fn parse_cmdline(args: &[String]) -> Cmdline {
    // HAProxy's options that take the next argument (haproxy.c).
    const WITH_ARG: &[&str] = &["-L", "-n", "-N", "-p", "-m", "-x"];
    let mut out = Cmdline::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--" => {
                out.configs.extend(it.by_ref().map(PathBuf::from));
            }
            "-f" => {
                if let Some(path) = it.next() {
                    out.configs.push(path.into());
                }
            }
            "-C" => out.chdir = it.next().map(PathBuf::from),
            "-S" => {
                if let Some(bind) = it.next() {
                    // `-S <bind>[,<bind options>...]`.
                    let addr = bind.split(',').next().unwrap_or_default();
                    if let Some(path) = unix_path(addr) {
                        out.master_socket = Some(path);
                    }
                }
            }
            // `-sf`/`-st` take a list of PIDs: every argument up to the
            // next option.
            "-sf" | "-st" => {
                let rest: Vec<&String> = it.clone().take_while(|a| !a.starts_with('-')).collect();
                for _ in 0..rest.len() {
                    it.next();
                }
            }
            a if WITH_ARG.contains(&a) => {
                it.next();
            }
            _ => {}
        }
    }
    out
}

/// The path of a unix socket address as HAProxy writes one (`/path`,
/// `unix@path`); `None` for any other kind (`ipv4@`, `ipv6@`, `abns@`,
/// `fd@`, `sockpair@`, `host:port`).
fn unix_path(addr: &str) -> Option<PathBuf> {
    if let Some(path) = addr.strip_prefix("unix@") {
        return (!path.is_empty()).then(|| path.into());
    }
    addr.starts_with('/').then(|| addr.into())
}

/// The words of one configuration line as HAProxy splits them: whitespace
/// separates, `"..."` and `'...'` group (single quotes take everything
/// literally), a backslash escapes the next character, and `#` outside
/// quotes starts a comment.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some('\''), '\'') | (Some('"'), '"') => quote = None,
            (Some('\''), c) => word.push(c),
            (_, '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '#') => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// Keywords that open a section of haproxy.cfg (and so end `global`).
const SECTIONS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "peers",
    "resolvers",
    "userlist",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "log-forward",
    "crt-store",
    "traces",
    "acme",
];

/// The unix `stats socket` paths of a configuration file's `global`
/// section(s), in order, with `unix-bind prefix` applied (HAProxy puts it
/// before every unix socket path bound after it). A path with a `$` (an
/// environment variable) is skipped: this process's environment is not
/// HAProxy's.
pub fn stats_sockets(text: &str) -> Vec<PathBuf> {
    let mut in_global = false;
    let mut prefix: Option<String> = None;
    let mut out = Vec::new();
    for line in text.lines() {
        let w = words(line);
        let Some(first) = w.first() else { continue };
        if SECTIONS.contains(&first.as_str()) {
            in_global = first == "global";
            continue;
        }
        if !in_global {
            continue;
        }
        match (first.as_str(), w.get(1).map(String::as_str), w.get(2)) {
            ("unix-bind", _, _) => {
                if let Some(i) = w.iter().position(|x| x == "prefix") {
                    prefix = w.get(i + 1).cloned();
                }
            }
            ("stats", Some("socket"), Some(addr)) => {
                if addr.contains('$') {
                    continue;
                }
                let Some(path) = unix_path(addr) else {
                    continue;
                };
                out.push(match &prefix {
                    Some(prefix) => PathBuf::from(format!("{prefix}{}", path.display())),
                    None => path,
                });
            }
            _ => {}
        }
    }
    out
}

/// The configuration files an `-f` argument stands for: the file itself,
/// or a directory's regular `*.cfg` files in lexical order (HAProxy's
/// `alphasort`), hidden ones skipped. `entries` lists a directory (`None`:
/// `path` is no directory). Pure.
pub fn config_files(path: &Path, entries: Option<Vec<String>>) -> Vec<PathBuf> {
    match entries {
        None => vec![path.to_owned()],
        Some(mut names) => {
            #[expect(
                clippy::case_sensitive_file_extension_comparisons,
                reason = "HAProxy compares the extension case-sensitively: FOO.CFG is not read"
            )]
            names.retain(|n| !n.starts_with('.') && n.ends_with(".cfg"));
            names.sort();
            names.into_iter().map(|n| path.join(n)).collect()
        }
    }
}

/// Which socket to use from what was found: the master CLI first (it
/// follows reloads: `@1` is always the current worker), else the first
/// unix stats socket.
pub fn choose(cmdline: &Cmdline, stats: &[PathBuf]) -> Option<HaproxySocket> {
    cmdline
        .master_socket
        .clone()
        .map(HaproxySocket::Master)
        .or_else(|| stats.first().cloned().map(HaproxySocket::Stats))
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DiscoverError {
    #[error("no HAProxy master runs (no `haproxy` process whose parent is not one)")]
    NoMaster,
    #[error(
        "several HAProxy masters run ({0}): name the socket (`stats_socket`, `master_socket`) or the `pidfile`"
    )]
    SeveralMasters(String),
    #[error(
        "HAProxy {origin} has no unix command socket: no `-S` master socket, and no unix `stats socket` in the `global` section of {files}; add `stats socket /run/haproxy/admin.sock level admin`, or name the socket"
    )]
    NoSocket { origin: String, files: String },
}

/// What was found: the socket, and the master it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub socket: HaproxySocket,
    /// `None` with an explicit `config`.
    pub master: Option<i32>,
}

/// The running master: the one `haproxy` process whose parent is not
/// another `haproxy` (a master, or a standalone HAProxy), or the pidfile's.
fn find_master(pidfile: Option<&Path>) -> Result<i32, DiscoverError> {
    if let Some(pid) = pidfile.and_then(super::read_pidfile) {
        return Ok(pid);
    }
    let mut masters = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if super::proc_comm(pid).as_deref() != Some("haproxy") {
            continue;
        }
        let Some((ppid, state)) = super::proc_ppid_and_state(pid) else {
            continue;
        };
        if super::live(state) && super::proc_comm(ppid).as_deref() != Some("haproxy") {
            masters.push(pid);
        }
    }
    match masters.as_slice() {
        [] => Err(DiscoverError::NoMaster),
        [one] => Ok(*one),
        many => Err(DiscoverError::SeveralMasters(
            many.iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// `/proc/PID/cmdline` as arguments, the program name dropped.
fn read_cmdline(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0)
        .skip(1)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn list_dir(path: &Path) -> Option<Vec<String>> {
    if !path.is_dir() {
        return None;
    }
    Some(
        std::fs::read_dir(path)
            .ok()?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect(),
    )
}

/// The stats sockets of the files `configs` stands for (directories
/// expanded), relative paths against `base`.
fn sockets_of(configs: &[PathBuf], base: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut files = Vec::new();
    for config in configs {
        let path = base.join(config);
        files.extend(config_files(&path, list_dir(&path)));
    }
    let sockets = files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| stats_sockets(&text))
        .map(|s| base.join(s))
        .collect();
    (files, sockets)
}

fn describe(files: &[PathBuf]) -> String {
    if files.is_empty() {
        return "no configuration file".into();
    }
    files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finds the socket: in `config` (a file or directory) when given, else
/// from the running master (`pidfile`'s, or the one found in procfs).
/// Blocking.
pub fn discover(config: Option<&Path>, pidfile: Option<&Path>) -> Result<Found, DiscoverError> {
    if let Some(config) = config {
        let (files, sockets) = sockets_of(&[config.to_owned()], Path::new("/"));
        return choose(&Cmdline::default(), &sockets)
            .map(|socket| Found {
                socket,
                master: None,
            })
            .ok_or_else(|| DiscoverError::NoSocket {
                origin: format!("configuration {}", config.display()),
                files: describe(&files),
            });
    }
    let master = find_master(pidfile)?;
    let cmdline = parse_cmdline(&read_cmdline(master));
    let cwd = std::fs::read_link(format!("/proc/{master}/cwd")).unwrap_or_else(|_| "/".into());
    let base = match &cmdline.chdir {
        Some(dir) => cwd.join(dir),
        None => cwd,
    };
    let (files, sockets) = sockets_of(&cmdline.configs, &base);
    let mut cmdline = cmdline;
    cmdline.master_socket = cmdline.master_socket.map(|s| base.join(s));
    choose(&cmdline, &sockets)
        .map(|socket| Found {
            socket,
            master: Some(master),
        })
        .ok_or_else(|| DiscoverError::NoSocket {
            origin: format!("master {master}"),
            files: describe(&files),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn the_command_line_gives_configs_and_the_master_socket() {
        let c = parse_cmdline(&args(
            "-W -D -f /etc/haproxy/haproxy.cfg -f /etc/haproxy/conf.d -p /run/haproxy.pid -S /run/haproxy-master.sock,mode,600",
        ));
        assert_eq!(
            c.configs,
            [
                PathBuf::from("/etc/haproxy/haproxy.cfg"),
                "/etc/haproxy/conf.d".into()
            ]
        );
        assert_eq!(c.master_socket, Some("/run/haproxy-master.sock".into()));
        // systemd's unit: `-Ws -f $CONFIG -p $PIDFILE $EXTRAOPTS`, a reload
        // adding `-sf PIDS`; `--` makes every later word a file.
        let c = parse_cmdline(&args(
            "-Ws -S unix@/run/m.sock -p /run/h.pid -sf 120 121 -C /etc/haproxy -- a.cfg b.cfg",
        ));
        assert_eq!(c.configs, [PathBuf::from("a.cfg"), "b.cfg".into()]);
        assert_eq!(c.master_socket, Some("/run/m.sock".into()));
        assert_eq!(c.chdir, Some("/etc/haproxy".into()));
        // A TCP master CLI is no unix socket; the pidfile is no config.
        let c = parse_cmdline(&args("-S ipv4@127.0.0.1:9999 -p /x.cfg -f h.cfg"));
        assert_eq!(c.master_socket, None);
        assert_eq!(c.configs, [PathBuf::from("h.cfg")]);
        assert_eq!(parse_cmdline(&args("-f")), Cmdline::default());
    }

    #[test]
    fn stats_sockets_of_the_global_section_only() {
        let cfg = r#"
# the admin socket
global
    log /dev/log local0
    stats socket ipv4@127.0.0.1:9999 level admin
    stats socket /run/haproxy/admin.sock mode 660 level admin expose-fd listeners  # for lbha
    stats socket "/run/haproxy/with space.sock" level user
    # stats socket /run/commented.sock
    stats timeout 30s
    stats socket 127.0.0.1:8888
    stats socket unix@/run/haproxy/operator.sock level operator

defaults
    mode http
frontend fe
    bind *:80
    stats socket /run/not-global.sock
global
    stats socket '/run/second global.sock'
"#;
        assert_eq!(
            stats_sockets(cfg),
            [
                PathBuf::from("/run/haproxy/admin.sock"),
                "/run/haproxy/with space.sock".into(),
                "/run/haproxy/operator.sock".into(),
                "/run/second global.sock".into(),
            ]
        );
        assert_eq!(
            stats_sockets(
                "global\n  unix-bind prefix /var/lib/haproxy mode 770\n  stats socket /admin.sock\n"
            ),
            [PathBuf::from("/var/lib/haproxy/admin.sock")]
        );
        assert_eq!(
            stats_sockets("global\n  stats socket \"${SOCK}\"\n  stats socket \\#odd.sock\n"),
            Vec::<PathBuf>::new(),
            "an environment variable is skipped; a relative path without unix@ is no unix address"
        );
        assert!(stats_sockets("defaults\n  stats socket /run/x.sock\n").is_empty());
    }

    #[test]
    fn a_directory_is_its_cfg_files_in_lexical_order() {
        let entries = vec![
            "20-backends.cfg".to_owned(),
            "10-global.cfg".into(),
            "README".into(),
            ".hidden.cfg".into(),
            "09-first.cfg".into(),
        ];
        assert_eq!(
            config_files(Path::new("/etc/haproxy/conf.d"), Some(entries)),
            [
                PathBuf::from("/etc/haproxy/conf.d/09-first.cfg"),
                "/etc/haproxy/conf.d/10-global.cfg".into(),
                "/etc/haproxy/conf.d/20-backends.cfg".into(),
            ]
        );
        assert_eq!(
            config_files(Path::new("/etc/haproxy/haproxy.cfg"), None),
            [PathBuf::from("/etc/haproxy/haproxy.cfg")]
        );
    }

    #[test]
    fn the_master_cli_is_preferred_and_nothing_is_none() {
        let stats = [PathBuf::from("/run/a.sock")];
        let mut c = Cmdline::default();
        assert_eq!(
            choose(&c, &stats),
            Some(HaproxySocket::Stats("/run/a.sock".into()))
        );
        c.master_socket = Some("/run/m.sock".into());
        assert_eq!(
            choose(&c, &stats),
            Some(HaproxySocket::Master("/run/m.sock".into()))
        );
        assert_eq!(choose(&Cmdline::default(), &[]), None);
    }

    /// The files of a directory `-f` (or `config`), read from disk.
    #[test]
    fn discovery_from_a_config_directory() {
        let dir = std::env::temp_dir().join(format!("lbha-discover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("50-fe.cfg"), "frontend fe\n  bind :80\n").unwrap();
        std::fs::write(
            dir.join("00-global.cfg"),
            "global\n  stats socket /run/lbha-x.sock level admin\n",
        )
        .unwrap();
        let found = discover(Some(&dir), None).expect("found");
        assert_eq!(
            found.socket,
            HaproxySocket::Stats("/run/lbha-x.sock".into())
        );
        std::fs::write(
            dir.join("00-global.cfg"),
            "global\n  stats socket ipv4@:9000\n",
        )
        .unwrap();
        let err = discover(Some(&dir), None).unwrap_err();
        assert!(
            err.to_string().contains("no unix `stats socket`")
                && err.to_string().contains("00-global.cfg"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
