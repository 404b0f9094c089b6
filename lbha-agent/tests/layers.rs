//! The agent's modules form layers (ARCHITECTURE.md): `sys` and `clock` at
//! the bottom import nothing of the agent, the runtime modules import
//! downwards only, and `daemon` wires them. This test reads the sources and
//! fails on an import that closes a cycle, so a new dependency is a decision
//! and not an accident. (The configuration is a crate of its own,
//! `lbha-config`, so the compiler already keeps it a leaf.)

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Modules that must import nothing from the rest of the agent.
const LEAVES: &[&str] = &["clock", "sys"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without `//` comments (doc links are not dependencies).
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| line.find("//").map_or(line, |at| &line[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first path segments after `crate::`: `crate::a::b` gives `a`, and
/// `crate::{a::{b, c}, d}` gives `a` and `d`.
fn crate_imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        // `lbha_crate::` or `dcrate::` are not `crate::`.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item_start = true;
            let mut name = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if depth == 0 && item_start && (c.is_alphanumeric() || c == '_') => {
                        name.push(c);
                        continue;
                    }
                    _ => {}
                }
                if !name.is_empty() {
                    found.insert(std::mem::take(&mut name));
                    item_start = c == ',';
                }
            }
            if !name.is_empty() {
                found.insert(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found
}

/// Top-level module -> the top-level modules it imports.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .expect("src")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let stem = path.file_stem()?.to_str()?.to_owned();
            (path.is_dir() || path.extension().is_some_and(|x| x == "rs")).then_some(stem)
        })
        .filter(|m| !["lib", "main", "watch"].contains(&m.as_str()))
        .collect();
    let mut graph = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let top = relative
            .components()
            .next()
            .and_then(|c| Path::new(c.as_os_str()).file_stem())
            .and_then(|s| s.to_str())
            .expect("module name")
            .to_owned();
        if !modules.contains(&top) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        let imports = crate_imports(&without_comments(&text));
        let entry: &mut BTreeSet<String> = graph.entry(top.clone()).or_default();
        entry.extend(
            imports
                .into_iter()
                .filter(|m| modules.contains(m) && *m != top),
        );
    }
    graph
}

/// A cycle through `start`, if there is one.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    walk(graph, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn the_import_parser_reads_groups_and_paths() {
    let text = "use crate::{a::{b, c}, d, e::f as g};\nlet x = crate::h::i();\nlbha_crate::z";
    let found: Vec<_> = crate_imports(text).into_iter().collect();
    assert_eq!(found, ["a", "d", "e", "h"]);
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(cycle_from(&graph, "a").unwrap(), ["a", "b", "c", "a"]);
    assert_eq!(cycle_from(&graph, "d"), None);
}

#[test]
fn modules_import_downwards_only() {
    let graph = module_graph();
    assert!(
        graph.len() >= 8,
        "the graph should cover the agent's modules: {graph:?}"
    );
    for leaf in LEAVES {
        let imports = graph.get(*leaf).cloned().unwrap_or_default();
        assert!(
            imports.is_empty(),
            "{leaf} is a bottom layer and must import nothing of the agent, but imports {imports:?}"
        );
    }
    for module in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, module) {
            panic!(
                "import cycle {} (the graph: {graph:#?})",
                cycle.join(" -> ")
            );
        }
    }
}
