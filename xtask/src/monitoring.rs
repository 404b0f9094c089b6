//! The checks of what operators look at: the Prometheus alert rules
//! (`dist/prometheus/`) with promtool (`check rules`, and `test rules` on
//! their unit tests), and the Grafana dashboard (`dist/grafana/lbha.json`):
//! its structure as Grafana imports it, and every query in it is PromQL
//! that promtool accepts once Grafana's variables are filled in.
//!
//! Which metric names and label values they may use is checked against the
//! agent's own exposition by the agent's unit tests
//! (`lbha-agent/src/status/metrics_drift_tests.rs`).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{dist::bounded, workspace_root};

const PROMTOOL_TIMEOUT: u64 = 60;

pub fn rules_file() -> PathBuf {
    workspace_root().join("dist/prometheus/lbha.rules.yml")
}

pub fn rules_test_file() -> PathBuf {
    workspace_root().join("dist/prometheus/lbha.rules.test.yml")
}

pub fn dashboard_file() -> PathBuf {
    workspace_root().join("dist/grafana/lbha.json")
}

fn promtool(args: &[&std::ffi::OsStr], dir: &Path) -> Result<String> {
    bounded(
        Command::new("promtool").args(args).current_dir(dir),
        PROMTOOL_TIMEOUT,
    )
    .context("promtool (Debian's prometheus package; cargo xtask setup installs it)")
}

/// `promtool check rules`: the rules parse, their expressions are PromQL.
pub fn check_rules(file: &Path) -> Result<String> {
    let dir = file.parent().context("rules file without a directory")?;
    promtool(&["check".as_ref(), "rules".as_ref(), file.as_os_str()], dir)
}

/// `promtool test rules`: the alerts fire (and stay quiet) as the unit tests
/// say.
pub fn test_rules(file: &Path) -> Result<String> {
    let dir = file
        .parent()
        .context("rules test file without a directory")?;
    promtool(&["test".as_ref(), "rules".as_ref(), file.as_os_str()], dir)
}

/// A query of the dashboard with Grafana's variables replaced by what they
/// stand for at query time, so promtool can parse it.
fn fill_variables(expr: &str) -> String {
    // Longest names first: `$__rate_interval` before `$__interval`.
    let mut out = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h");
    // Template variables only stand inside label matchers (`=~"$pair"`).
    for var in ["$pair", "$node", "$vrrp", "${pair}", "${node}", "${vrrp}"] {
        out = out.replace(var, ".*");
    }
    out
}

/// `label_values(SELECTOR, label)`: the selector, which is PromQL.
fn label_values_selector(query: &str) -> Option<&str> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let comma = inner.rfind(',')?;
    Some(inner[..comma].trim())
}

/// The dashboard's PromQL: (where, expression) for every panel target and
/// every query variable.
pub fn dashboard_queries(dashboard: &Value) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let panels = dashboard["panels"]
        .as_array()
        .context("the dashboard has no panels")?;
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .with_context(|| format!("panel {} has a target without expr", panel["title"]))?;
            out.push((
                format!(
                    "panel {} ({}) {}",
                    panel["id"], panel["title"], target["refId"]
                ),
                expr.to_owned(),
            ));
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] != "query" {
            continue;
        }
        let query = var["query"]["query"]
            .as_str()
            .or_else(|| var["query"].as_str())
            .with_context(|| format!("variable {} has no query", var["name"]))?;
        let selector = label_values_selector(query).with_context(|| {
            format!(
                "variable {}: {query:?} is not label_values(SELECTOR, label)",
                var["name"]
            )
        })?;
        out.push((format!("variable {}", var["name"]), selector.to_owned()));
    }
    Ok(out)
}

/// What Grafana needs to import the dashboard and draw every panel where
/// it is meant to be: unique panel ids, every query on the dashboard's
/// Prometheus variable with a unique refId, panels inside the 24-column
/// grid, the variables the queries use defined.
pub fn check_dashboard_structure(dashboard: &Value) -> Result<()> {
    let mut problems = Vec::new();
    for key in ["title", "uid", "schemaVersion", "panels", "templating"] {
        if dashboard.get(key).is_none() {
            problems.push(format!("no {key}"));
        }
    }
    let vars: BTreeSet<&str> = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    if !vars.contains("datasource") {
        problems.push("no datasource variable: the import cannot choose a Prometheus".into());
    }
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?");
        match panel["id"].as_u64() {
            Some(id) if !ids.insert(id) => problems.push(format!("panel id {id} twice")),
            Some(_) => {}
            None => problems.push(format!("panel {title:?} has no id")),
        }
        let grid = &panel["gridPos"];
        match (grid["x"].as_u64(), grid["w"].as_u64(), grid["h"].as_u64()) {
            (Some(x), Some(w), Some(h)) if x + w <= 24 && w > 0 && h > 0 => {}
            _ => problems.push(format!(
                "panel {title:?}: gridPos {grid} is not inside the 24-column grid"
            )),
        }
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel {title:?} has no query"));
        }
        let mut refs = BTreeSet::new();
        for target in std::iter::once(panel).chain(targets.iter()) {
            let uid = target["datasource"]["uid"].as_str();
            if uid != Some("${datasource}") {
                problems.push(format!(
                    "panel {title:?}: datasource {} is not the dashboard's ${{datasource}}",
                    target["datasource"]
                ));
            }
        }
        for target in &targets {
            let Some(r) = target["refId"].as_str() else {
                problems.push(format!("panel {title:?}: a query without refId"));
                continue;
            };
            if !refs.insert(r.to_owned()) {
                problems.push(format!("panel {title:?}: refId {r} twice"));
            }
            let expr = target["expr"].as_str().unwrap_or_default();
            for var in ["$pair", "$node", "$vrrp"] {
                if expr.contains(var) && !vars.contains(&var[1..]) {
                    problems.push(format!("panel {title:?} uses {var}, which is not defined"));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("\n"))
    }
}

/// Every dashboard query through promtool's parser: they go into a rules
/// file as recording rules, which `promtool check rules` parses.
pub fn check_dashboard_queries(dashboard: &Value) -> Result<usize> {
    let queries = dashboard_queries(dashboard)?;
    let tmp = lbha_harness::temp_dir("dashboard-queries")?;
    let file = tmp.path().join("dashboard.rules.yml");
    let mut yaml = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, (_, expr)) in queries.iter().enumerate() {
        // A JSON string is a YAML double-quoted scalar.
        let quoted = serde_json::to_string(&fill_variables(expr))?;
        yaml.push_str(&format!(
            "      - record: lbha_dashboard:query_{n}\n        expr: {quoted}\n"
        ));
    }
    std::fs::write(&file, yaml)?;
    if let Err(error) = check_rules(&file) {
        // Say which query: promtool names the rule by its index.
        let listing: Vec<String> = queries
            .iter()
            .enumerate()
            .map(|(n, (at, expr))| format!("  query_{n}: {at}: {expr}"))
            .collect();
        return Err(error.context(format!(
            "a dashboard query is not PromQL:\n{}",
            listing.join("\n")
        )));
    }
    Ok(queries.len())
}

pub fn load_dashboard(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// The monitoring checks, each a named result (for test-dist's tally).
pub fn checks() -> Vec<(&'static str, Result<()>)> {
    let dashboard = load_dashboard(&dashboard_file());
    let structure = dashboard
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .and_then(check_dashboard_structure);
    let queries = dashboard
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .and_then(check_dashboard_queries)
        .map(|n| println!("monitoring: {n} dashboard queries parse"));
    vec![
        (
            "promtool_check_rules",
            check_rules(&rules_file()).map(|out| print!("{out}")),
        ),
        (
            "promtool_test_rules",
            test_rules(&rules_test_file()).map(|out| print!("{out}")),
        ),
        ("grafana_dashboard_structure", structure),
        ("grafana_dashboard_queries_parse", queries),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_filled_in() {
        assert_eq!(
            fill_variables(r#"rate(x{pair=~"$pair", instance=~"${node}"}[$__rate_interval])"#),
            r#"rate(x{pair=~".*", instance=~".*"}[1m])"#
        );
        assert_eq!(
            label_values_selector(r#"label_values(lbha_vrrp_state{pair=~"$pair"}, instance)"#),
            Some(r#"lbha_vrrp_state{pair=~"$pair"}"#)
        );
        assert_eq!(label_values_selector("up"), None);
    }

    #[test]
    fn the_shipped_dashboard_is_well_formed() {
        let dashboard = load_dashboard(&dashboard_file()).unwrap();
        check_dashboard_structure(&dashboard).unwrap();
        assert!(dashboard_queries(&dashboard).unwrap().len() > 20);
    }

    #[test]
    fn structure_problems_are_found() {
        let mut dashboard = load_dashboard(&dashboard_file()).unwrap();
        let panels = dashboard["panels"].as_array_mut().unwrap();
        let first_graph = panels.iter().position(|p| p["type"] != "row").unwrap();
        panels[first_graph]["datasource"]["uid"] = "P1809F7CD0C75ACF3".into();
        let id = panels[0]["id"].clone();
        panels[first_graph + 1]["id"] = id;
        panels[first_graph + 2]["gridPos"]["x"] = 20.into();
        let error = check_dashboard_structure(&dashboard)
            .unwrap_err()
            .to_string();
        assert!(error.contains("is not the dashboard's"), "{error}");
        assert!(error.contains("twice"), "{error}");
        assert!(error.contains("24-column"), "{error}");
    }
}
