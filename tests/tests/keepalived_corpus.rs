//! Real keepalived.conf files (the corpus in `../shared/keepalived-corpus/`,
//! collected from public deployments; never copied into this repository)
//! read by lbha and by keepalived 2.2.7 itself, compared.
//!
//! For every file:
//!
//! - lbha: `lbha-agent check-config --no-host-checks FILE` (accepted or not)
//!   and `lbha-agent import-keepalived FILE`, whose TOML is read back as
//!   lbha's meaning of the file;
//! - keepalived, in a private network namespace holding a veth for every
//!   interface name the file uses and in a private mount namespace where
//!   every script and notify program the file names is a harmless stub (so
//!   keepalived neither disables the checks nor runs the host's programs):
//!   `keepalived -t -f FILE` (its verdict: 0 clean, 4 refused, 5 started
//!   with configuration errors reported), then a short VRRP-only run with
//!   `--dump-conf` on the console, whose "VRRP Topology" and "VRRP Scripts"
//!   sections are keepalived's meaning of the file.
//!
//! Both meanings are reduced to the same facts (instance, VRID, priority,
//! effective state, preempt and its delay, advert interval, version,
//! unicast source and peers, authentication, virtual addresses with their
//! device, tracked scripts with their weights, the argv keepalived would
//! exec, interval / timeout / rise / fall, virtual routes and rules) and
//! compared. A table with one
//! line per file is printed (`-- --nocapture`), then the counts.
//!
//! The test fails when a file keepalived runs (exit 0 or 5 of `-t`, at
//! least one instance in its dump) without `virtual_server` is refused by
//! lbha or read with another meaning, when a `virtual_server` file is
//! refused without naming it, or when lbha panics or exceeds its time
//! bound. A second test feeds truncated and mutated copies of every file to
//! the parser (no root needed) and fails on a panic or a hang.
//!
//! The corpus is found at `$LBHA_KEEPALIVED_CORPUS`, else at
//! `shared/keepalived-corpus` beside this repository or one of its parent
//! directories (CI's `<repo>/../shared`, a worktree's `../../shared`).
//! Without it the tests fail, saying where they looked, unless
//! `LBHA_SKIP_CORPUS=1` is set: then they print why they were skipped.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    io::Read,
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use lbha_agent::config::{self, Config, Probe};
use lbha_tests::{Netns, agent_bin, require_root, temp_dir};

const CORPUS_ENV: &str = "LBHA_KEEPALIVED_CORPUS";
/// Set to 1 to skip (not pass) the corpus tests where there is no corpus.
const SKIP_CORPUS_ENV: &str = "LBHA_SKIP_CORPUS";
/// One `lbha-agent` run, one keepalived step.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long keepalived runs for its dump (it prints it at start-up), and
/// how long when that dump and lbha's reading differ, in case keepalived
/// was stopped before it had printed the whole dump (seen on a loaded
/// machine: the dump cut off in a list of addresses).
const KEEPALIVED_RUN: &str = "2";
const KEEPALIVED_RUN_AGAIN: &str = "8";
/// Files compared at once (the machine has few cores; keepalived mostly sleeps).
const WORKERS: usize = 4;
/// Any one parse of a mutated copy; the whole pass.
const PARSE_BOUND: Duration = Duration::from_secs(5);
const MUTATION_PASS_BOUND: Duration = Duration::from_secs(90);

/// The corpus directory, or why there is none.
fn corpus_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(CORPUS_ENV) {
        let dir = PathBuf::from(dir);
        return if dir.is_dir() {
            Ok(dir)
        } else {
            Err(format!("{CORPUS_ENV}={} is not a directory", dir.display()))
        };
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    let mut tried = Vec::new();
    for ancestor in repo.ancestors().skip(1) {
        let dir = ancestor.join("shared/keepalived-corpus");
        if dir.is_dir() {
            return Ok(dir);
        }
        tried.push(dir.display().to_string());
    }
    Err(format!(
        "no keepalived corpus: {CORPUS_ENV} is unset and none of {} exists",
        tried.join(", ")
    ))
}

/// The corpus files (SOURCES.md describes them and is not one).
fn corpus_files() -> Result<Vec<PathBuf>, String> {
    let dir = corpus_dir()?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "SOURCES.md"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("{} holds no files", dir.display()));
    }
    Ok(files)
}

/// One tracked script as the instance uses it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Tracked {
    name: String,
    weight: String,
    /// The argv, or for lbha's built-in probes what they watch.
    command: String,
    interval_s: u64,
    timeout_s: u64,
    rise: u32,
    fall: u32,
}

/// What an instance means, in the terms both readings can be put in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Meaning {
    version: String,
    state: String,
    interface: String,
    vrid: String,
    priority: String,
    advert: String,
    preempt: String,
    unicast_src: String,
    peers: BTreeSet<String>,
    auth: String,
    vips: BTreeSet<String>,
    /// `virtual_ipaddress_excluded`, as `vips`.
    excluded: BTreeSet<String>,
    tracked: BTreeSet<Tracked>,
    /// `track_interface`: `NAME weight W[ reverse]`.
    interfaces: BTreeSet<String>,
    /// `virtual_routes`, each as [`route_text`] puts it.
    routes: BTreeSet<String>,
    /// `virtual_rules`, each as [`rule_text`] puts it.
    rules: BTreeSet<String>,
    /// "Send advert after receive lower / higher priority advert":
    /// `lower_prio_no_advert` (negated) and `higher_prio_send_advert`.
    answers_lower: String,
    answers_higher: String,
    /// "Unicast TTL" (unicast instances: IPv4's 255 unless `unicast_ttl`).
    unicast_ttl: String,
}

impl Meaning {
    /// The fields that differ, `field: keepalived | lbha`.
    fn differences(&self, lbha: &Meaning) -> Vec<String> {
        let mut out = Vec::new();
        let mut field = |name: &str, k: &dyn std::fmt::Debug, l: &dyn std::fmt::Debug| {
            let (k, l) = (format!("{k:?}"), format!("{l:?}"));
            if k != l {
                out.push(format!("{name}: keepalived {k} | lbha {l}"));
            }
        };
        field("version", &self.version, &lbha.version);
        field("state", &self.state, &lbha.state);
        field("interface", &self.interface, &lbha.interface);
        field("vrid", &self.vrid, &lbha.vrid);
        field("priority", &self.priority, &lbha.priority);
        field("advert_int", &self.advert, &lbha.advert);
        field("preempt", &self.preempt, &lbha.preempt);
        field("unicast_src", &self.unicast_src, &lbha.unicast_src);
        field("unicast_peers", &self.peers, &lbha.peers);
        field("auth", &self.auth, &lbha.auth);
        field("virtual_ipaddress", &self.vips, &lbha.vips);
        field("virtual_ipaddress_excluded", &self.excluded, &lbha.excluded);
        field("track_script", &self.tracked, &lbha.tracked);
        field("track_interface", &self.interfaces, &lbha.interfaces);
        field("virtual_routes", &self.routes, &lbha.routes);
        field("virtual_rules", &self.rules, &lbha.rules);
        field(
            "lower_prio_no_advert",
            &self.answers_lower,
            &lbha.answers_lower,
        );
        field(
            "higher_prio_send_advert",
            &self.answers_higher,
            &lbha.answers_higher,
        );
        field("unicast_ttl", &self.unicast_ttl, &lbha.unicast_ttl);
        out
    }
}

/// A VIP as `address[/prefix] dev DEV[ label L]` (keepalived omits /32).
fn vip_text(address: &str, prefix: u8, dev: &str, label: Option<&str>) -> String {
    let mut s = if prefix == 32 {
        address.to_string()
    } else {
        format!("{address}/{prefix}")
    };
    let _ = write!(s, " dev {dev}");
    if let Some(label) = label {
        let _ = write!(s, " label {label}");
    }
    s
}

/// A route's facts, whoever read it: what lbha adds through netlink.
#[derive(Default)]
struct RouteFacts {
    kind: String,
    dst: String,
    src: String,
    via: Vec<String>,
    dev: String,
    table: String,
    scope: String,
    metric: String,
    onlink: bool,
    no_track: bool,
}

fn route_text(r: &RouteFacts) -> String {
    format!(
        "{} {} src={} via={} dev={} table={} scope={} metric={} onlink={} no_track={}",
        r.kind,
        r.dst,
        r.src,
        r.via.join(","),
        r.dev,
        r.table,
        r.scope,
        r.metric,
        r.onlink,
        r.no_track
    )
}

/// keepalived's `ipaddresstos`: the prefix only when not a host's.
fn prefix_text(address: &str, len: u8) -> String {
    let host = if address.contains(':') { 128 } else { 32 };
    if len == host {
        address.to_string()
    } else {
        format!("{address}/{len}")
    }
}

/// A rule's facts: `v6 not from to priority fwmark iif oif action no_track`.
#[allow(clippy::too_many_arguments)]
fn rule_text(
    v6: bool,
    invert: bool,
    from: &str,
    to: &str,
    priority: &str,
    fwmark: &str,
    iif: &str,
    oif: &str,
    action: &str,
    no_track: bool,
) -> String {
    format!(
        "v6={v6} not={invert} from={from} to={to} priority={priority} fwmark={fwmark} iif={iif} oif={oif} action={action} no_track={no_track}"
    )
}

/// A `Virtual Routes :` line of keepalived's dump (`format_iproute`).
fn keepalived_route(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut r = RouteFacts {
        kind: "unicast".into(),
        table: "254".into(),
        ..RouteFacts::default()
    };
    let mut i = 0;
    let mut in_nexthop = false;
    while i < words.len() {
        let w = words[i];
        let next = words.get(i + 1).copied().unwrap_or_default().to_string();
        match w {
            "prepend" | "add" | "append" | "proto" | "weight" => {
                if matches!(w, "proto" | "weight") {
                    i += 1;
                }
            }
            "blackhole" | "unreachable" | "prohibit" if r.dst.is_empty() => r.kind = w.into(),
            "src" => {
                r.src = next;
                i += 1;
            }
            "via" => {
                // `via inet ADDR`
                r.via
                    .push(words.get(i + 2).copied().unwrap_or_default().into());
                i += 2;
            }
            "dev" => {
                if !in_nexthop {
                    r.dev = next;
                }
                i += 1;
            }
            "table" => {
                r.table = next;
                i += 1;
            }
            "scope" => {
                r.scope = next;
                i += 1;
            }
            "metric" => {
                r.metric = next;
                i += 1;
            }
            "onlink" => r.onlink = true,
            "nexthop" => in_nexthop = true,
            "no_track" => r.no_track = true,
            _ if r.dst.is_empty() => r.dst = w.into(),
            _ => {}
        }
        i += 1;
    }
    route_text(&r)
}

/// A `Virtual Rules :` line of keepalived's dump (`format_iprule`).
fn keepalived_rule(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let (mut v6, mut invert, mut no_track) = (false, false, false);
    let mut fields: BTreeMap<&str, String> = BTreeMap::new();
    let mut action = String::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let next = words.get(i + 1).copied().unwrap_or_default().to_string();
        match w {
            "inet6" => v6 = true,
            "not" => invert = true,
            "no_track" => no_track = true,
            "lookup" => {
                action = format!("table {next}");
                i += 1;
            }
            "type" => {
                action = next;
                i += 1;
            }
            "from" | "to" | "priority" | "fwmark" | "iif" | "oif" | "protocol" => {
                let value = if next == "all" { String::new() } else { next };
                fields.insert(w, value);
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
    rule_text(
        v6,
        invert,
        &get("from"),
        &get("to"),
        &get("priority"),
        &get("fwmark"),
        &get("iif"),
        &get("oif"),
        &action,
        no_track,
    )
}

/// A VIP's device as keepalived dumps it: its `dev`, else the instance's
/// interface, or its macvlan as `vrrp.1@eth0`.
fn vip_dev(i: &config::Instance, v: &config::VirtualAddress) -> String {
    match (&v.dev, &i.vmac) {
        (Some(dev), _) => dev.clone(),
        (None, Some(vmac)) => format!("{}@{}", vmac.name, i.interface),
        (None, None) => i.interface.clone(),
    }
}

/// `1 sec`, `100 milli-sec` (keepalived's own rendering: seconds for
/// VRRPv2, milliseconds for VRRPv3) from a duration.
fn advert_text(d: Duration, version: u8) -> String {
    if version == 2 && d.subsec_millis() == 0 {
        format!("{} sec", d.as_secs())
    } else {
        format!("{} milli-sec", d.as_millis())
    }
}

/// lbha's meaning, from the configuration `import-keepalived` printed.
fn lbha_meaning(config: &Config) -> BTreeMap<String, Meaning> {
    let mut out = BTreeMap::new();
    for i in &config.instances {
        let tracked = i
            .track
            .iter()
            .filter_map(|name| config.checks.iter().find(|c| &c.name == name))
            .map(|c| {
                let command = match &c.probe {
                    Some(Probe::Process(name)) => format!("process {name}"),
                    Some(probe) => format!("{probe:?}"),
                    None => config::split_command(&c.script).map_or_else(
                        |e| format!("unsplittable: {e}"),
                        |argv| {
                            argv.iter()
                                .enumerate()
                                .map(|(n, w)| {
                                    if n == 0 {
                                        format!("'{}'", resolve_program(w))
                                    } else {
                                        format!("'{w}'")
                                    }
                                })
                                .collect::<Vec<_>>()
                                .join(" ")
                        },
                    ),
                };
                let weight = if c.weight_reverse {
                    format!("{} reverse", c.weight)
                } else {
                    c.weight.to_string()
                };
                Tracked {
                    // A per-instance weight override is a check of its own
                    // (`NAME:weight=W`): the same script for keepalived.
                    name: c.name.split(':').next().unwrap_or(&c.name).to_string(),
                    weight,
                    command,
                    interval_s: c.interval.as_secs(),
                    timeout_s: c.timeout.as_secs(),
                    rise: c.rise,
                    fall: c.fall,
                }
            })
            .collect();
        // keepalived prints it for unicast instances: IPv4's default 255,
        // IPv6's only when set.
        let unicast_ttl = match (i.unicast_peers.first(), i.unicast_ttl) {
            (Some(_), Some(ttl)) => ttl.to_string(),
            (Some(peer), None) if peer.is_ipv4() => "255".into(),
            _ => String::new(),
        };
        let meaning = Meaning {
            answers_lower: (!i.lower_prio_no_advert).to_string(),
            answers_higher: i.higher_prio_send_advert.to_string(),
            unicast_ttl,
            version: i.version.to_string(),
            state: match i.initial_state {
                config::InitialState::Master => "MASTER".into(),
                config::InitialState::Backup => "BACKUP".into(),
            },
            // keepalived's `Interface = vrrp.1, vmac on eth0[, xmit base i/f]`.
            interface: match &i.vmac {
                Some(v) => format!(
                    "{}, vmac on {}{}",
                    v.name,
                    i.interface,
                    if v.xmit_base { ", xmit base i/f" } else { "" }
                ),
                None => i.interface.clone(),
            },
            vrid: i.vrid.to_string(),
            priority: i.priority.to_string(),
            advert: advert_text(i.advert_interval, i.version),
            preempt: if !i.preempt {
                "disabled".into()
            } else if i.preempt_delay.is_zero() {
                "enabled".into()
            } else {
                format!("enabled, delay {} secs", i.preempt_delay.as_secs())
            },
            unicast_src: i.unicast_src.map(|a| a.to_string()).unwrap_or_default(),
            peers: i.unicast_peers.iter().map(ToString::to_string).collect(),
            auth: i.auth_pass.as_ref().map_or_else(String::new, |p| {
                let p: String = p.chars().take(8).collect();
                match i.auth_type {
                    config::AuthType::Pass => format!("PASS {p}"),
                    // keepalived's dump does not print an AH key.
                    config::AuthType::Ah => "AH".to_owned(),
                }
            }),
            vips: i
                .virtual_addresses
                .iter()
                .filter(|v| !v.excluded)
                .map(|v| {
                    vip_text(
                        &v.address.to_string(),
                        v.prefix,
                        &vip_dev(i, v),
                        v.label.as_deref(),
                    )
                })
                .collect(),
            excluded: i
                .virtual_addresses
                .iter()
                .filter(|v| v.excluded)
                .map(|v| {
                    vip_text(
                        &v.address.to_string(),
                        v.prefix,
                        &vip_dev(i, v),
                        v.label.as_deref(),
                    )
                })
                .collect(),
            tracked,
            interfaces: i
                .track_interfaces
                .iter()
                .map(|t| {
                    let reverse = if t.reverse { " reverse" } else { "" };
                    format!("{} weight {}{reverse}", t.name, t.weight)
                })
                .collect(),
            routes: i
                .virtual_routes
                .iter()
                .map(|r| {
                    route_text(&RouteFacts {
                        kind: format!("{:?}", r.kind).to_lowercase(),
                        dst: prefix_text(&r.dst.address.to_string(), r.dst.len),
                        src: r.src.map(|a| a.to_string()).unwrap_or_default(),
                        via: r.via.iter().map(ToString::to_string).collect(),
                        dev: r.dev.clone().unwrap_or_default(),
                        table: r.table.to_string(),
                        scope: r.scope.map(|s| s.to_string()).unwrap_or_default(),
                        metric: r.metric.map(|m| m.to_string()).unwrap_or_default(),
                        onlink: r.onlink,
                        no_track: r.no_track,
                    })
                })
                .collect(),
            rules: i
                .virtual_rules
                .iter()
                .map(|r| {
                    let p = |p: Option<config::Prefix>| {
                        p.filter(|p| p.len != 0)
                            .map(|p| prefix_text(&p.address.to_string(), p.len))
                            .unwrap_or_default()
                    };
                    let fwmark = r.fwmark.map_or_else(String::new, |(m, k)| match k {
                        Some(k) => format!("{m:#x}/{k:#x}"),
                        None => format!("{m:#x}"),
                    });
                    let action = match r.action {
                        config::RuleAction::Table(t) => format!("table {t}"),
                        other => format!("{other:?}").to_lowercase(),
                    };
                    rule_text(
                        r.ipv6,
                        r.invert,
                        &p(r.from),
                        &p(r.to),
                        &r.priority.to_string(),
                        &fwmark,
                        r.iif.as_deref().unwrap_or_default(),
                        r.oif.as_deref().unwrap_or_default(),
                        &action,
                        r.no_track,
                    )
                })
                .collect(),
        };
        out.insert(i.name.clone(), meaning);
    }
    out
}

/// keepalived's meaning, from its `--dump-conf` console output.
fn keepalived_meaning(dump: &str) -> BTreeMap<String, Meaning> {
    #[derive(Default)]
    struct Script {
        command: String,
        interval_s: u64,
        timeout_s: u64,
        rise: u32,
        fall: u32,
    }
    let mut section = "";
    let mut instances: BTreeMap<String, Meaning> = BTreeMap::new();
    let mut tracked: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut scripts: BTreeMap<String, Script> = BTreeMap::new();
    let mut current = String::new();
    let mut list = "";
    for line in dump.lines() {
        // `Tue Dec  1 14:28:47 2026: text`
        let Some(at) = line.find(": ") else { continue };
        let text = &line[at + 2..];
        if let Some(name) = text.strip_prefix("------< ") {
            section = name.trim_end_matches(" >------").trim();
            // The static and global sections come first; only these matter.
            list = "";
            continue;
        }
        let indent = text.len() - text.trim_start().len();
        let text = text.trim();
        let (key, value) = text.split_once(" = ").unwrap_or((text, ""));
        match section {
            "VRRP Topology" => {
                if indent == 1 && key == "VRRP Instance" {
                    current = value.to_string();
                    instances.insert(current.clone(), Meaning::default());
                    list = "";
                    continue;
                }
                let Some(m) = instances.get_mut(&current) else {
                    continue;
                };
                if indent >= 5 {
                    match list {
                        "vip" | "excluded" => {
                            // `10.0.0.100/24 dev eth0 scope global label eth0:1`
                            let words: Vec<&str> = text.split_whitespace().collect();
                            let get = |k: &str| {
                                words
                                    .windows(2)
                                    .find(|w| w[0] == k)
                                    .map(|w| w[1].to_string())
                            };
                            let (address, prefix) = match words[0].split_once('/') {
                                Some((a, p)) => (a, p.parse().unwrap_or(32)),
                                None => (words[0], 32),
                            };
                            let text = vip_text(
                                address,
                                prefix,
                                &get("dev").unwrap_or_default(),
                                get("label").as_deref(),
                            );
                            if list == "vip" {
                                m.vips.insert(text);
                            } else {
                                m.excluded.insert(text);
                            }
                        }
                        "peer" => {
                            if let Some(peer) = text.split_whitespace().next() {
                                m.peers.insert(peer.to_string());
                            }
                        }
                        "interface" => {
                            m.interfaces.insert(text.to_string());
                        }
                        "routes" => {
                            m.routes.insert(keepalived_route(text));
                        }
                        "rules" => {
                            m.rules.insert(keepalived_rule(text));
                        }
                        "track" => {
                            // `chk weight -30` (`... reverse`)
                            let mut words = text.splitn(3, ' ');
                            let name = words.next().unwrap_or_default().to_string();
                            let weight = words.nth(1).unwrap_or("0").to_string();
                            tracked
                                .entry(current.clone())
                                .or_default()
                                .push((name, weight));
                        }
                        _ => {}
                    }
                    continue;
                }
                list = "";
                match key {
                    "VRRP Version" => m.version = value.into(),
                    "Wantstate" => m.state = value.into(),
                    "Interface" => m.interface = value.into(),
                    "Virtual Router ID" => m.vrid = value.into(),
                    "Priority" => m.priority = value.into(),
                    "Advert interval" => m.advert = value.into(),
                    "Preempt" => m.preempt = value.into(),
                    "Preempt delay" if m.preempt == "enabled" => {
                        let secs: f64 = value
                            .split_whitespace()
                            .next()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0.0);
                        if secs > 0.0 {
                            m.preempt = format!("enabled, delay {} secs", secs as u64);
                        }
                    }
                    "Using src_ip" if value.ends_with("(from configuration)") => {
                        m.unicast_src = value.split_whitespace().next().unwrap_or("").into();
                    }
                    "Authentication type" => {
                        m.auth = match value {
                            "SIMPLE_PASSWORD" => "PASS".into(),
                            "IPSEC_AH" => "AH".into(),
                            "none" => String::new(),
                            other => other.into(),
                        };
                    }
                    "Password" => m.auth = format!("{} {value}", m.auth),
                    "Send advert after receive lower priority advert" => {
                        m.answers_lower = value.into();
                    }
                    "Send advert after receive higher priority advert" => {
                        m.answers_higher = value.into();
                    }
                    "Unicast TTL" => m.unicast_ttl = value.into(),
                    _ if key.starts_with("Virtual IP (") => list = "vip",
                    "Virtual IP Excluded :" => list = "excluded",
                    "Unicast Peer :" => list = "peer",
                    "Tracked scripts :" => list = "track",
                    "Tracked interfaces :" => list = "interface",
                    "Virtual Routes :" => list = "routes",
                    "Virtual Rules :" => list = "rules",
                    _ => {}
                }
            }
            "VRRP Scripts" => {
                if indent == 1 && key == "VRRP Script" {
                    current = value.to_string();
                    scripts.insert(current.clone(), Script::default());
                    continue;
                }
                let Some(s) = scripts.get_mut(&current) else {
                    continue;
                };
                let secs = || {
                    value
                        .split_whitespace()
                        .next()
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                match key {
                    "Command" => {
                        // `'/usr/bin/killall' '-0' 'haproxy'`
                        s.command = match value.strip_prefix('\'').and_then(|v| v.split_once('\''))
                        {
                            Some((program, rest)) => {
                                format!("'{}'{rest}", resolve_program(program))
                            }
                            // One word keepalived printed without quotes.
                            None => format!("'{value}'"),
                        };
                    }
                    "Interval" => s.interval_s = secs(),
                    "Timeout" => s.timeout_s = secs(),
                    "Rise" => s.rise = value.parse().unwrap_or(0),
                    "Fall" => s.fall = value.parse().unwrap_or(0),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    for (instance, list) in tracked {
        let Some(m) = instances.get_mut(&instance) else {
            continue;
        };
        for (name, weight) in list {
            let empty = Script::default();
            let s = scripts.get(&name).unwrap_or(&empty);
            m.tracked.insert(Tracked {
                name,
                weight,
                command: s.command.clone(),
                interval_s: s.interval_s,
                // keepalived's timeout 0 means "the interval".
                timeout_s: if s.timeout_s == 0 {
                    s.interval_s
                } else {
                    s.timeout_s
                },
                rise: s.rise,
                fall: s.fall,
            });
        }
    }
    instances
}

/// Where the program of an argv is: on keepalived's `PATH` when relative,
/// through symbolic links of its directory (`/bin` is `/usr/bin` on a
/// merged-/usr system), so `pidof`, `/bin/pidof` and `/usr/bin/pidof` are
/// one program.
fn resolve_program(program: &str) -> String {
    let path = if program.contains('/') {
        PathBuf::from(program)
    } else {
        PATH_DIRS
            .iter()
            .map(|d| Path::new(d).join(program))
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from(program))
    };
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => dir
            .canonicalize()
            .map_or(path.clone(), |d| d.join(name))
            .display()
            .to_string(),
        _ => path.display().to_string(),
    }
}

/// keepalived's `PATH` for scripts (`set_std_fd`/`script_path` in 2.2.7).
const PATH_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// lbha's built-in probe for `pidof NAME` & co. watches what keepalived's
/// argv would test: the same meaning.
fn probe_matches(keepalived: &Tracked, lbha: &Tracked) -> bool {
    let Some(name) = lbha.command.strip_prefix("process ") else {
        return false;
    };
    let argv: Vec<&str> = keepalived
        .command
        .split('\'')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, w)| w)
        .collect();
    let program = argv.first().map(|p| p.rsplit('/').next().unwrap_or(p));
    let shell_wrapped = argv.iter().any(|w| w.split_whitespace().any(|x| x == name));
    (matches!(program, Some("pidof" | "pgrep" | "killall")) && argv.last() == Some(&name))
        || (matches!(program, Some("sh" | "bash")) && shell_wrapped)
        || argv.len() == 1
        || (argv.len() > 1 && argv.last() == Some(&name))
}

/// The words of `text` after `keyword` at the start of a (possibly
/// `@`-conditional) line, and the first word of each line of the
/// `track_interface` blocks: the interface names keepalived looks up.
fn interface_names(text: &str) -> BTreeSet<String> {
    // keepalived's `$NAME=value` definitions, expanded as `$NAME`/`${NAME}`.
    let definitions: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('$')?.split_once('='))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect();
    let mut names = BTreeSet::new();
    let mut in_track = false;
    for line in text.lines() {
        let line = line.split(['#', '!']).next().unwrap_or("");
        let mut line = line.replace('"', "");
        for (name, value) in &definitions {
            line = line
                .replace(&format!("${{{name}}}"), value)
                .replace(&format!("${name}"), value);
        }
        let mut words: Vec<&str> = line.split_whitespace().collect();
        if words.first().is_some_and(|w| w.starts_with('@')) {
            words.remove(0);
        }
        if in_track {
            if words.contains(&"}") {
                in_track = false;
            }
            if let Some(w) = words.first().filter(|w| **w != "}") {
                names.insert((*w).to_string());
            }
            continue;
        }
        for pair in words.windows(2) {
            if matches!(
                pair[0],
                "interface" | "dev" | "default_interface" | "lvs_sync_daemon_interface"
            ) {
                names.insert(pair[1].to_string());
            }
        }
        if words.first() == Some(&"track_interface") {
            in_track = !words.contains(&"}");
        }
    }
    names.retain(|n| {
        !n.is_empty()
            && n.len() <= 15
            && n != "lo"
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    });
    names
}

const SHELLS: &[&str] = &["sh", "bash", "dash", "env"];

/// The programs keepalived would exec for the file's scripts and notify
/// hooks, as absolute paths (resolved on `PATH` when relative).
fn programs(text: &str) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim_start();
        let line = if line.starts_with('@') {
            line.split_once(char::is_whitespace)
                .map_or("", |(_, r)| r.trim_start())
        } else {
            line
        };
        let Some((keyword, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        if !(keyword == "script" || keyword.starts_with("notify")) {
            continue;
        }
        let rest = rest.trim();
        // A quoted command is one argument; otherwise the rest of the line.
        let command = config::split_command(rest)
            .ok()
            .and_then(|w| {
                if rest.starts_with(['"', '\'']) {
                    w.first().cloned()
                } else {
                    Some(rest.to_string())
                }
            })
            .unwrap_or_default();
        let argv = config::split_command(&command).unwrap_or_default();
        let mut candidates = argv.iter().take(3);
        let Some(first) = candidates.next() else {
            continue;
        };
        let program = if SHELLS.contains(&first.rsplit('/').next().unwrap_or(first)) {
            // The script a shell runs.
            match candidates.find(|w| w.starts_with('/')) {
                Some(script) => script.clone(),
                None => continue,
            }
        } else {
            first.clone()
        };
        if program.starts_with('/') {
            out.insert(PathBuf::from(program));
        } else if !program.contains('/') {
            for dir in PATH_DIRS {
                let p = Path::new(dir).join(&program);
                if p.exists() {
                    out.insert(p);
                }
            }
        }
    }
    out
}

/// What keepalived made of one file.
#[derive(Default)]
struct KeepalivedReading {
    test_rc: Option<i32>,
    test_output: String,
    instances: BTreeMap<String, Meaning>,
    /// Scripts keepalived disabled because their program is missing on this
    /// machine (under a directory the test cannot stub): not compared.
    disabled_scripts: BTreeSet<String>,
    error: Option<String>,
}

/// Runs `cmd`, bounded; (exit code, stdout + stderr).
fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<(Option<i32>, String), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning {cmd:?}: {e}"))?;
    let reader = |mut r: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            let _ = tx.send(String::from_utf8_lossy(&s).into_owned());
        });
        rx
    };
    let out = reader(Box::new(child.stdout.take().expect("piped")));
    let err = reader(Box::new(child.stderr.take().expect("piped")));
    let status = lbha_harness::wait_timeout(&mut child, timeout).map_err(|e| e.to_string())?;
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{cmd:?} did not finish within {timeout:?}"));
    };
    let grace = Duration::from_secs(2);
    let text =
        out.recv_timeout(grace).unwrap_or_default() + &err.recv_timeout(grace).unwrap_or_default();
    Ok((status.code(), text))
}

fn keepalived_reading(file: &Path, text: &str, run_secs: &str) -> KeepalivedReading {
    let mut reading = KeepalivedReading::default();
    let fail = |mut r: KeepalivedReading, e: String| {
        r.error = Some(e);
        r
    };
    let ns = match Netns::new("corpus") {
        Ok(ns) => ns,
        Err(e) => return fail(reading, format!("namespace: {e}")),
    };
    for (n, name) in interface_names(text).iter().enumerate() {
        let peer = format!("kcp{n}");
        if let Err(e) = ns
            .ip(&["link", "add", name, "type", "veth", "peer", "name", &peer])
            .and_then(|_| ns.ip(&["link", "set", name, "up"]))
            .and_then(|_| ns.ip(&["link", "set", &peer, "up"]))
        {
            return fail(reading, format!("interface {name}: {e}"));
        }
    }
    let dir = match temp_dir("corpus") {
        Ok(d) => d,
        Err(e) => return fail(reading, format!("temp dir: {e}")),
    };
    // Every program the file names becomes `exit 0` in a private mount
    // namespace: an overlay on its top-level directory (the host's files
    // stay untouched), the stub written into it.
    let mut script = String::from("set -e\nmount --make-rprivate /\n");
    let stubs = programs(text);
    let tops: BTreeSet<PathBuf> = stubs
        .iter()
        .filter_map(|p| p.components().nth(1).map(|c| Path::new("/").join(c)))
        .filter(|t| t.is_dir() && t != Path::new("/tmp") && t != Path::new("/proc"))
        .collect();
    for (n, top) in tops.iter().enumerate() {
        let (upper, work) = (
            dir.path().join(format!("u{n}")),
            dir.path().join(format!("w{n}")),
        );
        let _ = std::fs::create_dir_all(&upper);
        let _ = std::fs::create_dir_all(&work);
        let _ = writeln!(
            script,
            "mount -t overlay overlay -o lowerdir={top},upperdir={upper},workdir={work} {top}",
            top = top.display(),
            upper = upper.display(),
            work = work.display()
        );
    }
    for stub in &stubs {
        if !stub
            .components()
            .nth(1)
            .is_some_and(|c| tops.contains(&Path::new("/").join(c)))
        {
            continue;
        }
        let quoted = shell_quote(&stub.display().to_string());
        let _ = writeln!(
            script,
            "mkdir -p \"$(dirname {quoted})\" && rm -f {quoted} && printf '#!/bin/sh\\nexit 0\\n' > {quoted} && chmod 755 {quoted}"
        );
    }
    let conf = shell_quote(&file.display().to_string());
    let pids = dir.path().display().to_string();
    let _ = writeln!(
        script,
        "set +e\nip netns exec {ns} keepalived -t -f {conf} -p {pids}/t.pid -r {pids}/tv.pid -c {pids}/tc.pid -b {pids}/tb.pid > {pids}/t.out 2>&1\necho \"KA_TEST_RC=$?\"\ncat {pids}/t.out\necho KA_RUN\nexec ip netns exec {ns} timeout -s TERM {run_secs} keepalived -n -l -P -d -D -f {conf} -p {pids}/k.pid -r {pids}/v.pid -c {pids}/c.pid -b {pids}/b.pid",
        ns = ns.name(),
    );
    let result = run_bounded(
        Command::new("unshare").args(["-m", "sh", "-c", &script]),
        STEP_TIMEOUT,
    );
    let output = match result {
        Ok((_, output)) => output,
        Err(e) => return fail(reading, e),
    };
    let (test, run) = output.split_once("KA_RUN\n").unwrap_or((&output, ""));
    reading.test_rc = test
        .lines()
        .find_map(|l| l.strip_prefix("KA_TEST_RC="))
        .and_then(|v| v.trim().parse().ok());
    reading.test_output = test
        .lines()
        .filter(|l| !l.starts_with("KA_TEST_RC="))
        .collect::<Vec<_>>()
        .join("\n");
    reading.instances = keepalived_meaning(run);
    reading.disabled_scripts = run
        .lines()
        .filter_map(|l| l.split_once("Disabling track script ").map(|(_, r)| r))
        .filter_map(|r| r.split_whitespace().next())
        .map(str::to_string)
        .collect();
    reading
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What lbha made of one file.
#[derive(Default)]
struct LbhaReading {
    check_ok: bool,
    check_output: String,
    import_ok: bool,
    instances: BTreeMap<String, Meaning>,
    error: Option<String>,
}

fn lbha_reading(file: &Path) -> LbhaReading {
    let mut reading = LbhaReading::default();
    let bin = agent_bin();
    let check = run_bounded(
        Command::new(&bin)
            .arg("check-config")
            .arg("--no-host-checks")
            .arg(file),
        STEP_TIMEOUT,
    );
    match check {
        Ok((code, output)) => {
            reading.check_ok = code == Some(0);
            reading.check_output = output;
            if code.is_none() || output_panicked(&reading.check_output) {
                reading.error = Some(format!("check-config crashed: {}", reading.check_output));
            }
        }
        Err(e) => reading.error = Some(e),
    }
    let mut import = Command::new(&bin);
    import.arg("import-keepalived").arg(file);
    let imported = import
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())
        .and_then(|mut child| {
            let mut stdout = child.stdout.take().expect("piped");
            let mut stderr = child.stderr.take().expect("piped");
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let (mut out, mut err) = (String::new(), String::new());
                let _ = stdout.read_to_string(&mut out);
                let _ = stderr.read_to_string(&mut err);
                let _ = tx.send((out, err));
            });
            let status = lbha_harness::wait_timeout(&mut child, STEP_TIMEOUT)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    let _ = child.kill();
                    let _ = child.wait();
                    "import-keepalived did not finish".to_string()
                })?;
            let (out, err) = rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
            Ok((status, out, err))
        });
    match imported {
        Ok((status, out, err)) => {
            if status.code().is_none() || output_panicked(&err) {
                reading.error = Some(format!("import-keepalived crashed: {err}"));
            }
            reading.import_ok = status.success();
            if status.success() {
                match config::parse_toml(&out, Path::new("imported.toml")) {
                    Ok(loaded) => reading.instances = lbha_meaning(&loaded.config),
                    Err(e) => {
                        reading.error = Some(format!(
                            "import-keepalived printed TOML lbha does not read: {e:?}"
                        ));
                    }
                }
            }
        }
        Err(e) => reading.error = Some(e),
    }
    reading
}

/// What lbha's errors say about a feature it lacks.
const NOT_IMPLEMENTED: &str = "is not supported: not implemented";
/// ... about a keyword keepalived does not know (and ignores).
const UNKNOWN_KEYWORD: &str = "is not a keepalived keyword here";
/// ... about the `}` that closed an unknown keyword's block in keepalived's
/// reading (keepalived reads that block's lines as outside it).
const STRAY_CLOSE: &str = "`}` without a matching `{`";

/// The error lines of `check-config`'s output, without the corpus path.
fn lbha_errors(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(|l| {
            let l = l.trim();
            // `/path/file:LINE: message` -> `LINE: message`
            match l.split_once(": ") {
                Some((location, message)) => {
                    let line = location.rsplit(':').next().unwrap_or("");
                    format!("{line}: {message}")
                }
                None => l.to_string(),
            }
        })
        .collect()
}

fn output_panicked(output: &str) -> bool {
    output.contains("panicked at")
}

/// Whether the file configures LVS (out of lbha's scope).
fn is_lvs(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start();
        let l = if l.starts_with('@') {
            l.split_once(char::is_whitespace)
                .map_or("", |(_, r)| r.trim_start())
        } else {
            l
        };
        l.starts_with("virtual_server ") || l.starts_with("virtual_server_group ")
    })
}

struct Row {
    file: String,
    lvs: bool,
    keepalived: KeepalivedReading,
    lbha: LbhaReading,
    differences: Vec<String>,
}

impl Row {
    /// keepalived runs the file: `-t` says 0 (clean), 5 (configuration
    /// errors reported, keepalived starts anyway) or 6 (script security
    /// warnings, likewise), and its dump holds an instance.
    fn keepalived_accepts(&self) -> bool {
        matches!(self.keepalived.test_rc, Some(0 | 5 | 6)) && !self.keepalived.instances.is_empty()
    }
}

fn compare(file: &Path) -> Row {
    let text = String::from_utf8_lossy(&std::fs::read(file).unwrap_or_default()).into_owned();
    let lbha = lbha_reading(file);
    let mut keepalived = keepalived_reading(file, &text, KEEPALIVED_RUN);
    let mut differences = differences(&keepalived, &lbha);
    if !differences.is_empty() {
        keepalived = keepalived_reading(file, &text, KEEPALIVED_RUN_AGAIN);
        differences = self::differences(&keepalived, &lbha);
    }
    Row {
        file: file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        lvs: is_lvs(&text),
        keepalived,
        lbha,
        differences,
    }
}

/// How lbha's reading differs from keepalived's, instance by instance.
fn differences(keepalived: &KeepalivedReading, lbha: &LbhaReading) -> Vec<String> {
    let mut differences = Vec::new();
    if lbha.check_ok && lbha.import_ok && !keepalived.instances.is_empty() {
        let names: BTreeSet<&String> = keepalived
            .instances
            .keys()
            .chain(lbha.instances.keys())
            .collect();
        for name in names {
            match (keepalived.instances.get(name), lbha.instances.get(name)) {
                (Some(k), Some(l)) => {
                    let mut l = l.clone();
                    // A built-in probe stands for the argv it replaces.
                    let probe_for: BTreeSet<Tracked> = l
                        .tracked
                        .iter()
                        .map(|t| {
                            k.tracked
                                .iter()
                                .find(|kt| kt.name == t.name && probe_matches(kt, t))
                                .map_or_else(
                                    || t.clone(),
                                    |kt| Tracked {
                                        command: kt.command.clone(),
                                        ..t.clone()
                                    },
                                )
                        })
                        .collect();
                    l.tracked = probe_for
                        .into_iter()
                        .filter(|t| !keepalived.disabled_scripts.contains(&t.name))
                        .collect();
                    for d in k.differences(&l) {
                        differences.push(format!("{name}: {d}"));
                    }
                }
                (Some(_), None) => differences.push(format!("{name}: only keepalived has it")),
                (None, Some(_)) => differences.push(format!("{name}: only lbha has it")),
                (None, None) => {}
            }
        }
    }
    differences
}

/// The first line of a message, shortened for the table.
fn short(text: &str, max: usize) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("error: ") || l.len() > 40)
        .unwrap_or("");
    let mut s: String = line.chars().take(max).collect();
    if line.chars().count() > max {
        s.push('…');
    }
    s
}

/// The corpus files; without a corpus, a panic saying where it was looked
/// for, or `None` (a printed SKIPPED line) when `LBHA_SKIP_CORPUS=1` is set:
/// a missing corpus never reads as a pass.
fn corpus_or_skip(test: &str) -> Option<Vec<PathBuf>> {
    match corpus_files() {
        Ok(files) => Some(files),
        Err(why) if std::env::var(SKIP_CORPUS_ENV).as_deref() == Ok("1") => {
            eprintln!("SKIPPED {test}: {why}; {SKIP_CORPUS_ENV}=1 is set");
            None
        }
        Err(why) => panic!("{test}: {why}. Set {SKIP_CORPUS_ENV}=1 to skip it."),
    }
}

#[test]
fn corpus_matches_keepalived_reading() {
    let Some(files) = corpus_or_skip("corpus_matches_keepalived_reading") else {
        return;
    };
    if !require_root() {
        return;
    }
    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    for chunk in files.chunks(WORKERS) {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunk.iter().map(|f| s.spawn(|| compare(f))).collect();
            for h in handles {
                rows.push(h.join().expect("comparing a corpus file panicked"));
            }
        });
    }

    let mut table = String::from(
        "\nfile                                                         | lvs | ka -t | ka inst | lbha check | lbha import | meaning\n",
    );
    let (mut ka_accepts, mut lbha_accepts, mut lbha_accepts_of_ka, mut differ) = (0, 0, 0, 0);
    let (mut unimplemented, mut unknown_keywords, mut ka_accepts_vrrp) = (0, 0, 0);
    let mut failures = Vec::new();
    for row in &rows {
        let ka_ok = row.keepalived_accepts();
        ka_accepts += usize::from(ka_ok);
        ka_accepts_vrrp += usize::from(ka_ok && !row.lvs);
        lbha_accepts += usize::from(row.lbha.check_ok);
        if ka_ok && row.lbha.check_ok {
            lbha_accepts_of_ka += 1;
        }
        if ka_ok && row.lbha.check_ok && !row.differences.is_empty() {
            differ += 1;
        }
        let meaning = if !(ka_ok && row.lbha.check_ok) {
            "-".to_string()
        } else if row.differences.is_empty() {
            "same".to_string()
        } else {
            format!("{} difference(s)", row.differences.len())
        };
        let name: String = row.file.chars().take(60).collect();
        let _ = writeln!(
            table,
            "{name:<60} | {:<3} | {:>5} | {:>7} | {:<10} | {:<11} | {meaning}",
            if row.lvs { "yes" } else { "" },
            row.keepalived.test_rc.map_or("-".into(), |c| c.to_string()),
            row.keepalived.instances.len(),
            if row.lbha.check_ok { "ok" } else { "refused" },
            if row.lbha.import_ok { "ok" } else { "refused" },
        );
        for d in &row.differences {
            let _ = writeln!(table, "    differs: {d}");
        }
        let errors = lbha_errors(&row.lbha.check_output);
        if !row.lbha.check_ok && !row.lvs {
            for e in &errors {
                let _ = writeln!(table, "    lbha: {}", short(e, 220));
            }
        }
        if row.keepalived.test_rc != Some(0) {
            for line in row
                .keepalived
                .test_output
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(3)
            {
                let _ = writeln!(table, "    keepalived: {}", short(line, 220));
            }
        }
        if let Some(e) = &row.keepalived.error {
            let _ = writeln!(table, "    keepalived run failed: {e}");
            failures.push(format!("{}: keepalived could not be run: {e}", row.file));
        }
        if let Some(e) = &row.lbha.error {
            failures.push(format!("{}: {e}", row.file));
        }
        if row.lvs {
            if row.lbha.check_ok || !row.lbha.check_output.contains("virtual_server") {
                failures.push(format!(
                    "{}: an LVS file lbha does not refuse naming `virtual_server`",
                    row.file
                ));
            }
        } else if ka_ok && !row.lbha.check_ok {
            // Refusing what lbha does not implement, each with its line and
            // why, is the rule; so is refusing a keyword keepalived does not
            // know (keepalived ignores it, so the file does not do what it
            // says: README). Any other refusal is a misreading.
            let unknown = errors.iter().any(|e| e.contains(UNKNOWN_KEYWORD));
            let other: Vec<&String> = errors
                .iter()
                .filter(|e| {
                    !(e.contains(NOT_IMPLEMENTED)
                        || e.contains(UNKNOWN_KEYWORD)
                        || (unknown && e.contains(STRAY_CLOSE)))
                })
                .collect();
            if other.is_empty() && !errors.is_empty() {
                if unknown {
                    unknown_keywords += 1;
                } else {
                    unimplemented += 1;
                }
            } else {
                failures.push(format!(
                    "{}: keepalived runs it, lbha refuses it: {}",
                    row.file,
                    other
                        .iter()
                        .map(|e| e.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
        } else if ka_ok && !row.differences.is_empty() {
            failures.push(format!("{}: read with another meaning", row.file));
        }
    }
    let _ = writeln!(
        table,
        "\n{} files: keepalived accepts {ka_accepts} ({ka_accepts_vrrp} without LVS), lbha accepts {lbha_accepts} ({lbha_accepts_of_ka} of keepalived's), meaning differences in {differ}; \
         of the non-LVS files keepalived accepts, {unimplemented} refused for features lbha does not implement and \
         {unknown_keywords} for keywords keepalived does not know (it ignores them); {:.1} s",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    eprintln!("{table}");
    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A deterministic generator for the mutation pass (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Copies of `text`: truncated at many points, and mutated (bytes deleted,
/// duplicated, replaced by VRRP syntax, lines swapped or repeated).
fn mutations(text: &str, seed: u64) -> Vec<String> {
    const TOKENS: &[&str] = &[
        "{",
        "}",
        "\"",
        "'",
        "\\",
        "@",
        "$X",
        "include *",
        "\n",
        "!",
        "#",
        "0",
        "-1",
        "999999999999",
        "virtual_server 1.2.3.4 80 {",
    ];
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let cuts = 48.min(bytes.len());
    for n in 1..=cuts {
        let at = bytes.len() * n / (cuts + 1);
        out.push(String::from_utf8_lossy(&bytes[..at]).into_owned());
    }
    let mut rng = Rng(seed | 1);
    for _ in 0..64 {
        let mut b = bytes.to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(b.len());
            match rng.below(4) {
                0 if !b.is_empty() => {
                    let end = (at + 1 + rng.below(16)).min(b.len());
                    b.drain(at..end);
                }
                1 => {
                    let end = (at + 1 + rng.below(32)).min(b.len());
                    let piece = b[at..end].to_vec();
                    b.splice(at..at, piece);
                }
                2 => {
                    let t = TOKENS[rng.below(TOKENS.len())].as_bytes();
                    b.splice(at..at, t.iter().copied());
                }
                _ => {
                    let lines: Vec<&[u8]> = b.split(|c| *c == b'\n').collect();
                    let (i, j) = (rng.below(lines.len()), rng.below(lines.len()));
                    let mut l: Vec<Vec<u8>> = lines.iter().map(|l| l.to_vec()).collect();
                    l.swap(i, j);
                    let dup = l[i].clone();
                    l.insert(j, dup);
                    b = l.join(&b'\n');
                }
            }
        }
        out.push(String::from_utf8_lossy(&b).into_owned());
    }
    out
}

#[test]
fn corpus_truncated_and_mutated_copies_neither_panic_nor_hang() {
    let Some(files) = corpus_or_skip("corpus_truncated_and_mutated_copies_neither_panic_nor_hang")
    else {
        return;
    };
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<(String, usize, Result<(), String>)>();
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            (
                f.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                String::from_utf8_lossy(&std::fs::read(f).unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    let total: usize = texts
        .iter()
        .enumerate()
        .map(|(n, (_, t))| mutations(t, n as u64 + 1).len())
        .sum();
    std::thread::spawn(move || {
        for (n, (name, text)) in texts.iter().enumerate() {
            for (k, copy) in mutations(text, n as u64 + 1).into_iter().enumerate() {
                let path = Path::new("mutated.conf");
                let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    if let Ok(loaded) = config::parse_keepalived(&copy, path) {
                        // What import-keepalived prints must read back.
                        let toml = config::to_toml(&loaded.config);
                        config::parse_toml(&toml, Path::new("round.toml"))
                            .map(|_| ())
                            .map_err(|e| {
                                format!("import of a mutated copy does not read back: {e:?}")
                            })
                    } else {
                        Ok(())
                    }
                }))
                .unwrap_or_else(|_| Err("parser panicked".into()));
                if tx.send((name.clone(), k, result)).is_err() {
                    return;
                }
            }
        }
    });
    let mut done = 0;
    let mut failures = Vec::new();
    while done < total {
        match rx.recv_timeout(PARSE_BOUND) {
            Ok((name, k, Err(e))) => {
                failures.push(format!("{name} copy {k}: {e}"));
                done += 1;
            }
            Ok(_) => done += 1,
            Err(mpsc::RecvTimeoutError::Timeout | mpsc::RecvTimeoutError::Disconnected) => panic!(
                "a parse of a mutated copy took longer than {PARSE_BOUND:?} (after {done} of {total})"
            ),
        }
        assert!(
            started.elapsed() < MUTATION_PASS_BOUND,
            "the mutation pass exceeded {MUTATION_PASS_BOUND:?}"
        );
    }
    eprintln!(
        "{total} truncated/mutated copies of {} files parsed in {:.1} s",
        files.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
