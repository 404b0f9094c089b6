//! The Grafana dashboard (`dist/grafana/`) and the Prometheus rules with
//! their unit tests (`dist/prometheus/`) name metrics and label values of
//! the exposition; these tests render the exposition of a Telemetry with
//! every family populated and fail when one of them names something the
//! agent does not export, or when the dashboard leaves a family out.
//!
//! Label values are checked where the agent fixes them (`state`,
//! `counter`, `outcome`, `path`), for `=` matchers and for `=~` ones made
//! of literal alternatives.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use super::render;
use crate::status::{InstanceStatus, Telemetry};

fn dist_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist")
}

/// A Telemetry as a running agent with a floating IP and a heartbeat fills
/// it: every metric family has samples.
fn populated() -> Telemetry {
    use crate::cloud::{ApiCallCounts, FloatingIpStatus};
    let t = Telemetry::default();
    t.add_instance(InstanceStatus {
        name: "VI_1".into(),
        interface: "eth1".into(),
        vrid: 51,
        state: "BACKUP".into(),
        priority: 100,
        ..InstanceStatus::default()
    });
    t.transition(
        "VI_1",
        "MASTER",
        "master down",
        Some(Duration::from_millis(40)),
    );
    let mut lateness = crate::status::Histogram::default();
    lateness.observe(&crate::status::ADVERT_LATENESS_BUCKETS, 0.0003);
    t.set_advert_lateness("VI_1", &lateness, 0.0003);
    t.add_check("haproxy");
    t.check_result("haproxy", true, true, Duration::from_millis(2));
    // One interface per receive path the agent reports (recv::AdvertReceiver::path_name).
    // And one per receive program (bpf::variant::Program::name).
    use crate::bpf::variant::{Program, Variant};
    let paths = [
        (
            "eth1",
            crate::bpf::AttachMode::Default.name(),
            true,
            Program::Xdp(Variant::Full),
        ),
        (
            "eth2",
            crate::bpf::AttachMode::Skb.name(),
            true,
            Program::Xdp(Variant::NoTimer),
        ),
        ("eth3", "raw-socket", false, Program::RawSocket),
    ];
    for (interface, path, pinned, program) in paths {
        t.add_interface(interface, path, pinned, (program.name(), "probed"));
        t.update_interface(interface, |i| {
            for counter in lbha_common::event::Counter::ALL {
                i.counters.insert(counter.name().into(), 1);
            }
            i.wakeups = 3;
        });
    }
    t.reload_result(Err("line 3: unknown key".into()));
    let (status, status_rx) = tokio::sync::watch::channel(FloatingIpStatus::default());
    status.send_modify(|s| {
        s.master = true;
        s.holder_known = Some(true);
    });
    let (_report, report_rx) = tokio::sync::watch::channel(None);
    t.set_floating_ip(
        "203.0.113.10".into(),
        "VI_1".into(),
        status_rx,
        report_rx,
        Arc::new(ApiCallCounts::default()),
    );
    let (_peers, peers_rx) = tokio::sync::watch::channel(crate::heartbeat::PeerTable::default());
    t.set_heartbeat(Some((
        peers_rx,
        Arc::new(crate::heartbeat::Counters::default()),
        vec!["198.51.100.2:7500".parse().unwrap()],
    )));
    // The watch senders may go: receivers keep the last value.
    drop(status);
    t
}

/// `name{k="v",...}` as (name, [(key, operator, value)]); the name alone
/// when no braces follow.
type Selector = (String, Vec<(String, String, String)>);

fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
}

/// Every `lbha_*` metric name in `text`, with the label matchers of the
/// braces right after it.
fn selectors(text: &str) -> Vec<Selector> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i..].starts_with(&['l', 'b', 'h', 'a', '_'])
            && (i == 0 || !(is_name_char(chars[i - 1]) || chars[i - 1].is_ascii_uppercase()));
        if !starts {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_name_char(chars[i]) {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect();
        let mut matchers = Vec::new();
        if chars.get(i) == Some(&'{') {
            i += 1;
            let mut body = String::new();
            let mut quoted = false;
            while i < chars.len() && (quoted || chars[i] != '}') {
                if chars[i] == '"' && chars[i - 1] != '\\' {
                    quoted = !quoted;
                }
                body.push(chars[i]);
                i += 1;
            }
            matchers = parse_matchers(&body);
        }
        out.push((name, matchers));
    }
    out
}

/// `a="x", b=~"y|z"` as [(a, =, x), (b, =~, y|z)].
fn parse_matchers(body: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let key = rest[..key_end].to_owned();
        rest = rest[key_end..].trim_start();
        let op_end = rest.find('"').unwrap_or(rest.len());
        let op = rest[..op_end].trim().to_owned();
        rest = &rest[(op_end + 1).min(rest.len())..];
        let value_end = rest.find('"').unwrap_or(rest.len());
        let value = rest[..value_end].to_owned();
        rest = rest[(value_end + 1).min(rest.len())..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
        if key.is_empty() {
            break;
        }
        out.push((key, op, value));
    }
    out
}

/// The exposition's samples: sample name -> label name -> values seen.
fn samples(exposition: &str) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..end].to_owned()).or_default();
        if line[end..].starts_with('{') {
            let body = &line[end + 1..line.rfind('}').unwrap_or(line.len())];
            for (key, _, value) in parse_matchers(body) {
                labels.entry(key).or_default().insert(value);
            }
        }
    }
    out
}

/// The labels whose values the agent fixes (the others name things of a
/// deployment: checks, interfaces, peers, the IP, or are target labels).
const ENUMERATED_LABELS: [&str; 4] = ["state", "counter", "outcome", "path"];

/// The literal alternatives of a `=~` value, when it has no other regex
/// syntax than `|` (`ringbuf_full|silence_timer_errors`).
fn literal_alternatives(value: &str) -> Option<Vec<&str>> {
    let meta = |c: char| ".*+?()[]{}^$\\".contains(c);
    (!value.contains(meta)).then(|| value.split('|').collect())
}

/// Problems with the selectors of `text` (the file `what`) against the
/// exposition: unknown metrics, label values the agent never exports.
fn check_text(
    what: &str,
    text: &str,
    exported: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, matchers) in selectors(text) {
        let Some(labels) = exported.get(&name) else {
            problems.push(format!("{what}: {name} is not in the agent's exposition"));
            continue;
        };
        for (key, op, value) in matchers {
            if !ENUMERATED_LABELS.contains(&key.as_str()) {
                continue;
            }
            let Some(values) = labels.get(&key) else {
                problems.push(format!("{what}: {name} has no label {key}"));
                continue;
            };
            let wanted = match op.as_str() {
                "=" => vec![value.as_str()],
                "=~" => literal_alternatives(&value).unwrap_or_default(),
                _ => Vec::new(),
            };
            for want in wanted {
                if !want.starts_with('$') && !values.contains(want) {
                    problems.push(format!(
                        "{what}: {name}{{{key}{op}\"{value}\"}}: the agent exports no {key}=\"{want}\" (it has {values:?})"
                    ));
                }
            }
        }
    }
    problems
}

/// Every string in a JSON document, with the key it is the value of:
/// queries (`expr`, a variable's `query` and `definition`) and prose
/// (titles, legends, descriptions).
fn json_strings(value: &serde_json::Value, key: &str, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::String(s) => out.push((key.to_owned(), s.clone())),
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, key, out)),
        serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| json_strings(v, k, out)),
        _ => {}
    }
}

/// The dashboard's path, its queries and its prose, each joined by lines.
fn dashboard() -> (String, String, String) {
    let path = dist_dir().join("grafana/lbha.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut strings = Vec::new();
    json_strings(&json, "", &mut strings);
    let (queries, prose): (Vec<_>, Vec<_>) = strings
        .into_iter()
        .partition(|(key, _)| ["expr", "query", "definition"].contains(&key.as_str()));
    let join =
        |v: Vec<(String, String)>| v.into_iter().map(|(_, s)| s).collect::<Vec<_>>().join("\n");
    (path.display().to_string(), join(queries), join(prose))
}

/// The exposition's metric families (`# TYPE`): a histogram's own name is
/// one, though no sample carries it.
fn families(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn dashboard_and_rules_name_only_exported_metrics() {
    let exposition = render(&populated());
    let exported = samples(&exposition);
    let mut problems = Vec::new();
    let (name, queries, prose) = dashboard();
    // Queries name samples; prose may name a histogram by its family.
    problems.extend(check_text(&name, &queries, &exported));
    let mut prose_names = exported.clone();
    for family in families(&exposition) {
        prose_names.entry(family).or_default();
    }
    problems.extend(check_text(&name, &prose, &prose_names));
    for file in [
        "prometheus/lbha.rules.yml",
        "prometheus/lbha.rules.test.yml",
    ] {
        let path = dist_dir().join(file);
        // YAML double-quoted annotations escape their quotes.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\\\"", "\"");
        problems.extend(check_text(&path.display().to_string(), &text, &exported));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn dashboard_shows_every_metric_family() {
    let families = families(&render(&populated()));
    // Shown means queried, not mentioned in a description.
    let (_, queries, _) = dashboard();
    let used: BTreeSet<String> = selectors(&queries)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let missing: Vec<_> = families
        .iter()
        .filter(|family| {
            !used.iter().any(|name| {
                name == family.as_str()
                    || name
                        .strip_prefix(family.as_str())
                        .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard shows nothing of {missing:?}"
    );
}

#[test]
fn the_checks_catch_drift() {
    let exported = samples(&render(&populated()));
    let problems = check_text(
        "test",
        r#"rate(lbha_vrrp_transition_total[5m]) lbha_vrrp_state{state="MASTR"} lbha_packets_total{counter=~"ringbuf_full|drop_bad_tll"} lbha_vrrp_state{exported_instance="VI_1", pair="p1"} lbha_packets_total{counter=~"drop_.*"}"#,
        &exported,
    );
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].contains("lbha_vrrp_transition_total is not"));
    assert!(problems[1].contains("state=\"MASTR\""));
    assert!(problems[2].contains("counter=\"drop_bad_tll\""));
}
