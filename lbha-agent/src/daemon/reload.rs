//! What a reload changes: a pure comparison of the running configuration
//! with the new one, so the rules the README promises are unit-tested here
//! and the daemon only carries them out.
//!
//! - Nothing changed: nothing happens.
//! - The checks, `[global]`, `[floating_ip]` or `[heartbeat]` changed:
//!   every instance restarts (they all share those).
//! - Otherwise, per interface: one whose instances are unchanged keeps
//!   running untouched (and keeps mastership); one whose instances changed
//!   restarts them; one no longer configured stops; a new one starts.

use std::collections::BTreeSet;

use crate::config::{self, Config};

/// The interfaces a reload stops, starts and leaves alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Checks, `[global]`, `[floating_ip]` or `[heartbeat]` changed: the
    /// shared parts are rebuilt and every interface restarts.
    pub restart_all: bool,
    /// Interfaces whose running instances stop (changed or removed).
    pub stop: BTreeSet<String>,
    /// Interfaces whose new instances start (changed or added).
    pub start: BTreeSet<String>,
    /// Interfaces that keep running untouched.
    pub keep: BTreeSet<String>,
}

impl ReloadPlan {
    pub fn is_noop(&self) -> bool {
        !self.restart_all && self.stop.is_empty() && self.start.is_empty()
    }
}

/// The interfaces `config`'s instances run on.
pub fn interfaces_of(config: &Config) -> BTreeSet<String> {
    config
        .instances
        .iter()
        .map(|i| i.interface.clone())
        .collect()
}

/// `config`'s instances on `interface`, in configuration order.
pub fn instances_on<'a>(config: &'a Config, interface: &str) -> Vec<&'a config::Instance> {
    config
        .instances
        .iter()
        .filter(|i| i.interface == interface)
        .collect()
}

/// What replacing `old` by `new` restarts.
pub fn plan(old: &Config, new: &Config) -> ReloadPlan {
    let (old_interfaces, new_interfaces) = (interfaces_of(old), interfaces_of(new));
    let shared_changed = new.checks != old.checks
        || new.global != old.global
        || new.floating_ip != old.floating_ip
        || new.heartbeat != old.heartbeat
        // The track files' watcher is shared by every interface.
        || new.track_files != old.track_files
        // A sync group's members may be on several interfaces and follow
        // one shared group state, which a partial restart would split.
        || ((!new.sync_groups.is_empty() || !old.sync_groups.is_empty()) && new != old);
    if shared_changed {
        return ReloadPlan {
            restart_all: true,
            stop: old_interfaces,
            start: new_interfaces,
            keep: BTreeSet::new(),
        };
    }
    let mut plan = ReloadPlan::default();
    for interface in old_interfaces.union(&new_interfaces) {
        let (before, after) = (instances_on(old, interface), instances_on(new, interface));
        if before == after {
            plan.keep.insert(interface.clone());
            continue;
        }
        if !before.is_empty() {
            plan.stop.insert(interface.clone());
        }
        if !after.is_empty() {
            plan.start.insert(interface.clone());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Config {
        config::parse_toml(text, Path::new("test.toml"))
            .expect("test configuration is valid")
            .config
    }

    /// Two interfaces, one instance each, one check, a floating IP.
    fn base(extra_instance: &str, global: &str, check: &str, floating_ip: &str) -> Config {
        parse(&format!(
            r#"
[global]
{global}

[[check]]
name = "haproxy"
{check}

[[instance]]
name = "VI_1"
interface = "eth0"
vrid = 1
priority = 100
track = ["haproxy"]

[[instance]]
name = "VI_2"
interface = "eth1"
vrid = 2
priority = 100
{extra_instance}

[floating_ip]
ip = "203.0.113.10"
{floating_ip}
"#
        ))
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|&n| n.to_owned()).collect()
    }

    fn default_config() -> Config {
        base("", "", r#"process = "haproxy""#, "")
    }

    #[test]
    fn an_identical_file_changes_nothing() {
        let plan = plan(&default_config(), &default_config());
        assert!(plan.is_noop(), "{plan:?}");
        assert_eq!(plan.keep, set(&["eth0", "eth1"]));
    }

    #[test]
    fn with_sync_groups_any_change_restarts_every_instance() {
        let mut old = default_config();
        old.sync_groups.push(config::SyncGroup {
            name: "G".into(),
            members: vec!["VI_1".into(), "VI_2".into()],
            notify: config::Notify::default(),
        });
        assert!(plan(&old, &old.clone()).is_noop());
        let mut new = old.clone();
        new.instances[1].preempt = false;
        let changed = plan(&old, &new);
        assert!(changed.restart_all, "{changed:?}");
        assert_eq!(changed.keep, BTreeSet::new());
        // Groups added (or removed) by a reload: the same.
        assert!(plan(&default_config(), &old).restart_all);
        assert!(plan(&old, &default_config()).restart_all);
    }

    #[test]
    fn a_changed_instance_restarts_only_its_interface() {
        let new = base("preempt = false", "", r#"process = "haproxy""#, "");
        let plan = plan(&default_config(), &new);
        assert!(!plan.restart_all);
        assert_eq!(plan.stop, set(&["eth1"]));
        assert_eq!(plan.start, set(&["eth1"]));
        assert_eq!(
            plan.keep,
            set(&["eth0"]),
            "the unchanged interface keeps running"
        );
    }

    #[test]
    fn an_instance_moved_to_another_interface_restarts_both() {
        let mut new = default_config();
        new.instances[1].interface = "eth0".into();
        let plan = plan(&default_config(), &new);
        assert_eq!(plan.stop, set(&["eth0", "eth1"]));
        assert_eq!(plan.start, set(&["eth0"]));
        assert!(plan.keep.is_empty());
    }

    #[test]
    fn an_added_interface_starts_and_a_removed_one_stops() {
        let mut added = default_config();
        let mut third = added.instances[1].clone();
        third.name = "VI_3".into();
        third.interface = "eth2".into();
        third.vrid = 3;
        added.instances.push(third);
        let plan_add = plan(&default_config(), &added);
        assert_eq!(plan_add.start, set(&["eth2"]));
        assert!(plan_add.stop.is_empty());
        assert_eq!(plan_add.keep, set(&["eth0", "eth1"]));

        let plan_remove = plan(&added, &default_config());
        assert_eq!(plan_remove.stop, set(&["eth2"]));
        assert!(plan_remove.start.is_empty());
        assert_eq!(plan_remove.keep, set(&["eth0", "eth1"]));
    }

    #[test]
    fn a_changed_check_restarts_every_instance() {
        let new = base("", "", "process = \"haproxy\"\nfall = 3", "");
        let plan = plan(&default_config(), &new);
        assert!(plan.restart_all);
        assert_eq!(plan.stop, set(&["eth0", "eth1"]));
        assert_eq!(plan.start, set(&["eth0", "eth1"]));
        assert!(plan.keep.is_empty());
    }

    #[test]
    fn a_changed_global_section_restarts_every_instance() {
        let new = base("", "script_security = true", r#"process = "haproxy""#, "");
        let plan = plan(&default_config(), &new);
        assert!(plan.restart_all);
        assert!(plan.keep.is_empty());
    }

    #[test]
    fn a_changed_floating_ip_restarts_every_instance() {
        let new = base("", "", r#"process = "haproxy""#, "recheck_interval = 30.0");
        let plan = plan(&default_config(), &new);
        assert!(plan.restart_all);
        assert_eq!(plan.start, set(&["eth0", "eth1"]));
        assert!(plan.keep.is_empty());
    }
}
