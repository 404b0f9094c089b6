//! Checks shared by both front-ends: everything about a [`Config`] that the
//! types alone do not guarantee (ranges, cross references, uniqueness).
//!
//! Front-ends tell where each value came from through [`Lines`] so that every
//! diagnostic points at the offending line, and which values they already
//! reported as unreadable (so the same mistake is not reported twice).

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    Config, ConfigErrors, DOWN_TIMER_ADVERTS_RANGE, Diagnostic, Family, InitialState, Loaded,
    MAX_FILTERED_PEERS,
};

/// Which syntax the configuration was written in, so messages use the
/// keywords the operator actually wrote (`vrid` vs `virtual_router_id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    Toml,
    Keepalived,
}

impl Syntax {
    /// What [`crate::load_any`] reads `path` as: TOML when it ends in
    /// `.toml`, keepalived.conf otherwise.
    pub fn of_path(path: &Path) -> Self {
        if path.extension().is_some_and(|ext| ext == "toml") {
            Syntax::Toml
        } else {
            Syntax::Keepalived
        }
    }

    /// The keyword for a model field, as written in this syntax.
    pub fn keyword(self, field: &str) -> &str {
        match self {
            Syntax::Toml => match field {
                "initial_state" => "state",
                other => other,
            },
            Syntax::Keepalived => match field {
                "vrid" => "virtual_router_id",
                "advert_interval" => "advert_int",
                "initial_state" => "state",
                "preempt" => "nopreempt",
                "unicast_src" => "unicast_src_ip",
                "unicast_peers" => "unicast_peer",
                "virtual_addresses" => "virtual_ipaddress",
                "track" => "track_script",
                "instance" => "vrrp_instance",
                "check" => "vrrp_script",
                other => other,
            },
        }
    }
}

/// Where the values of one table (an instance, a check, the globals) are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldLines {
    /// Line of the table itself (`[[instance]]`, `vrrp_instance NAME {`).
    pub table: Option<usize>,
    fields: HashMap<String, usize>,
    bad: HashSet<String>,
}

impl FieldLines {
    pub fn at(line: usize) -> Self {
        Self {
            table: Some(line),
            ..Self::default()
        }
    }

    /// Records the line of `field` (a model field name, or `field[i]` for
    /// the i-th element of a list).
    pub fn set(&mut self, field: impl Into<String>, line: usize) {
        self.fields.insert(field.into(), line);
    }

    /// Marks `field` as already reported unreadable: validation skips it.
    pub fn mark_bad(&mut self, field: impl Into<String>) {
        self.bad.insert(field.into());
    }

    pub fn is_bad(&self, field: &str) -> bool {
        self.bad.contains(field)
    }

    /// The line of `field`, else of the table.
    pub fn line(&self, field: &str) -> Option<usize> {
        self.fields.get(field).copied().or(self.table)
    }

    /// The line of element `index` of list `field`, else of the list.
    pub fn item_line(&self, field: &str, index: usize) -> Option<usize> {
        self.fields
            .get(&format!("{field}[{index}]"))
            .copied()
            .or_else(|| self.line(field))
    }
}

/// Which file a recorded line is in, for configurations read from several
/// files (keepalived's `include`).
///
/// Lines are recorded as one number each ("positions"), so that everything
/// that keeps or sorts lines stays a number: a position up to the main
/// file's last line is that line of the main file; each included file gets
/// the next free range of positions after the main file's and the files
/// included before it. Empty for a single file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceMap {
    included: Vec<IncludedFile>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct IncludedFile {
    /// Position of its line 1.
    first: usize,
    /// How many positions it has (its line count).
    lines: usize,
    path: PathBuf,
}

impl SourceMap {
    /// Gives `path`, of `lines` lines, the positions after every file's so
    /// far (the main file has `main_lines`); returns its line 1's position.
    pub(crate) fn add(&mut self, main_lines: usize, path: PathBuf, lines: usize) -> usize {
        let first = self.next_free(main_lines);
        self.included.push(IncludedFile {
            first,
            lines: lines.max(1),
            path,
        });
        first
    }

    fn next_free(&self, main_lines: usize) -> usize {
        self.included
            .last()
            .map_or(main_lines + 1, |f| f.first + f.lines)
    }

    /// The file and line of `position` (`main` for the main file's).
    pub fn locate<'a>(&'a self, main: &'a Path, position: usize) -> (&'a Path, usize) {
        self.included
            .iter()
            .find(|f| (f.first..f.first + f.lines).contains(&position))
            .map_or((main, position), |f| {
                (f.path.as_path(), position - f.first + 1)
            })
    }

    /// A diagnostic at `position` (a main-file line when nothing is included).
    pub fn diagnostic(&self, main: &Path, position: Option<usize>, message: String) -> Diagnostic {
        match position {
            Some(position) => {
                let (file, line) = self.locate(main, position);
                Diagnostic {
                    file: file.to_path_buf(),
                    line: Some(line),
                    message,
                }
            }
            None => Diagnostic {
                file: main.to_path_buf(),
                line: None,
                message,
            },
        }
    }
}

/// Where everything in a [`Config`] came from, index for index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lines {
    /// Which file each recorded position is in (keepalived `include`).
    pub sources: SourceMap,
    pub global: FieldLines,
    /// `[floating_ip]` (TOML only; keepalived.conf has none).
    pub floating_ip: FieldLines,
    /// `[heartbeat]` (TOML only).
    pub heartbeat: FieldLines,
    pub checks: Vec<FieldLines>,
    pub instances: Vec<FieldLines>,
    /// `[[sync_group]]` / `vrrp_sync_group`, index for index.
    pub sync_groups: Vec<FieldLines>,
}

impl Lines {
    /// Where check `index` was written (empty when unknown).
    pub fn check(&self, index: usize) -> &FieldLines {
        self.checks.get(index).unwrap_or(&EMPTY)
    }

    /// Where instance `index` was written (empty when unknown).
    pub fn instance(&self, index: usize) -> &FieldLines {
        self.instances.get(index).unwrap_or(&EMPTY)
    }
}

static EMPTY: std::sync::LazyLock<FieldLines> = std::sync::LazyLock::new(FieldLines::default);

/// What validation found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

/// Largest VRRPv3 advert interval: 4095 centiseconds (12-bit field).
const V3_MAX_ADVERT: Duration = Duration::from_millis(40_950);
const V3_MIN_ADVERT: Duration = Duration::from_millis(10);
const CENTISECOND_NANOS: u32 = 10_000_000;

struct Validator<'a> {
    file: &'a Path,
    sources: &'a SourceMap,
    syntax: Syntax,
    findings: Findings,
}

impl Validator<'_> {
    fn diag(&self, line: Option<usize>, message: String) -> Diagnostic {
        self.sources.diagnostic(self.file, line, message)
    }

    fn error(&mut self, lines: &FieldLines, field: &str, message: String) {
        if !lines.is_bad(field) {
            let d = self.diag(lines.line(field), message);
            self.findings.errors.push(d);
        }
    }

    fn item_error(&mut self, lines: &FieldLines, field: &str, index: usize, message: String) {
        if !lines.is_bad(field) && !lines.is_bad(&format!("{field}[{index}]")) {
            let d = self.diag(lines.item_line(field, index), message);
            self.findings.errors.push(d);
        }
    }

    fn warning(&mut self, lines: &FieldLines, field: &str, message: String) {
        if !lines.is_bad(field) {
            let d = self.diag(lines.line(field), message);
            self.findings.warnings.push(d);
        }
    }

    fn item_warning(&mut self, lines: &FieldLines, field: &str, index: usize, message: String) {
        let d = self.diag(lines.item_line(field, index), message);
        self.findings.warnings.push(d);
    }

    fn kw<'f>(&self, field: &'f str) -> &'f str {
        self.syntax.keyword(field)
    }
}

/// Validates `config`; `lines` says where its values were written.
pub fn validate(config: &Config, lines: &Lines, file: &Path, syntax: Syntax) -> Findings {
    let mut v = Validator {
        file,
        sources: &lines.sources,
        syntax,
        findings: Findings::default(),
    };

    let global = &lines.global;
    if !matches!(config.global.vrrp_version, 2 | 3) {
        let kw = v.kw("vrrp_version");
        v.error(
            global,
            "vrrp_version",
            format!("`{kw}` must be 2 or 3 (got {})", config.global.vrrp_version),
        );
    }
    if config.global.script_user.as_deref() == Some("") {
        v.error(
            global,
            "script_user",
            "`script_user` must not be empty".into(),
        );
    }
    if config.global.script_group.as_deref() == Some("") {
        v.error(
            global,
            "script_group",
            "`script_group` must not be empty".into(),
        );
    }

    if let Some(dir) = &config.global.bpf_pin_dir
        && !dir.is_absolute()
    {
        v.error(
            global,
            "bpf_pin_dir",
            format!(
                "`bpf_pin_dir` must be an absolute path on a BPF filesystem (got {:?})",
                dir.display().to_string()
            ),
        );
    }

    validate_checks(&mut v, config, lines);
    validate_instances(&mut v, config, lines);
    validate_sync_groups(&mut v, config, lines);

    v.findings
}

/// Sync groups: unique names, members that exist, each instance in at most
/// one group, at least one member (keepalived removes an empty group; lbha's
/// keepalived.conf reader already dropped what keepalived drops, warning).
fn validate_sync_groups(v: &mut Validator<'_>, config: &Config, lines: &Lines) {
    let mut names: HashSet<&str> = HashSet::new();
    let mut member_of: HashMap<&str, &str> = HashMap::new();
    for (index, group) in config.sync_groups.iter().enumerate() {
        let fl = lines.sync_groups.get(index).unwrap_or(&EMPTY);
        if !names.insert(group.name.as_str()) {
            v.error(
                fl,
                "name",
                format!("sync group {:?} is defined twice", group.name),
            );
        }
        if group.members.is_empty() {
            v.error(
                fl,
                "members",
                format!("sync group {:?} has no members", group.name),
            );
        }
        for (i, member) in group.members.iter().enumerate() {
            if !config.instances.iter().any(|inst| &inst.name == member) {
                v.item_error(
                    fl,
                    "members",
                    i,
                    format!(
                        "sync group {:?}: {member:?} is not a configured instance",
                        group.name
                    ),
                );
            } else if let Some(other) = member_of.insert(member.as_str(), group.name.as_str()) {
                v.item_error(
                    fl,
                    "members",
                    i,
                    format!(
                        "sync group {:?}: instance {member:?} is already in sync group {other:?} (an instance is in at most one)",
                        group.name
                    ),
                );
            }
        }
    }
}

fn validate_checks(v: &mut Validator<'_>, config: &Config, lines: &Lines) {
    let check_kw = v.kw("check");
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, check) in config.checks.iter().enumerate() {
        let fl = lines.check(index);
        if check.name.is_empty() {
            v.error(fl, "name", format!("a `{check_kw}` needs a non-empty name"));
        } else if let Some(first) = seen.get(check.name.as_str()) {
            let at = describe_line(lines.check(*first).line("name"));
            v.error(
                fl,
                "name",
                format!(
                    "duplicate {check_kw} name `{}` (first defined{at})",
                    check.name
                ),
            );
        } else {
            seen.insert(&check.name, index);
        }
        let name = &check.name;
        if check.probe.is_none() {
            match crate::split_command(&check.script) {
                Ok(words) if words.is_empty() => v.error(
                    fl,
                    "script",
                    format!("{check_kw} `{name}`: `script` is empty"),
                ),
                Ok(_) => {}
                Err(why) => v.error(
                    fl,
                    "script",
                    format!("{check_kw} `{name}`: `script` cannot be split into words: {why}"),
                ),
            }
        }
        if check.interval.is_zero() {
            v.error(
                fl,
                "interval",
                format!("{check_kw} `{name}`: `interval` must be greater than 0"),
            );
        }
        if check.timeout.is_zero() {
            v.error(
                fl,
                "timeout",
                format!("{check_kw} `{name}`: `timeout` must be greater than 0"),
            );
        }
        if check.rise < 1 {
            v.error(
                fl,
                "rise",
                format!("{check_kw} `{name}`: `rise` must be at least 1"),
            );
        }
        if check.fall < 1 {
            v.error(
                fl,
                "fall",
                format!("{check_kw} `{name}`: `fall` must be at least 1"),
            );
        }
        if !(-253..=253).contains(&check.weight) {
            v.error(
                fl,
                "weight",
                format!(
                    "{check_kw} `{name}`: `weight` must be -253..=253 (got {})",
                    check.weight
                ),
            );
        }
    }
}

fn validate_instances(v: &mut Validator<'_>, config: &Config, lines: &Lines) {
    let instance_kw = v.kw("instance");
    let check_names_reliable = (0..config.checks.len()).all(|i| !lines.check(i).is_bad("name"));
    let check_names: HashSet<&str> = config.checks.iter().map(|c| c.name.as_str()).collect();
    let mut names: HashMap<&str, usize> = HashMap::new();
    // VRRP over IPv4 and over IPv6 are separate protocols with their own
    // VRIDs (RFC 5798 5.2.3): VRID 1 may run in both on one interface.
    let mut vrids: HashMap<(&str, Family, u8), usize> = HashMap::new();

    for (index, inst) in config.instances.iter().enumerate() {
        let fl = lines.instance(index);
        let name = &inst.name;

        if name.is_empty() {
            v.error(
                fl,
                "name",
                format!("a `{instance_kw}` needs a non-empty name"),
            );
        } else if let Some(first) = names.get(name.as_str()) {
            let at = describe_line(lines.instance(*first).line("name"));
            v.error(
                fl,
                "name",
                format!("duplicate {instance_kw} name `{name}` (first defined{at})"),
            );
        } else {
            names.insert(name, index);
        }

        if inst.interface.is_empty() {
            v.error(
                fl,
                "interface",
                format!("{instance_kw} `{name}`: `interface` is missing or empty"),
            );
        }

        let family = inst.family();
        let vrid_kw = v.kw("vrid");
        if inst.vrid == 0 {
            v.error(
                fl,
                "vrid",
                format!("{instance_kw} `{name}`: `{vrid_kw}` must be 1..=255 (got 0)"),
            );
        } else if !inst.interface.is_empty() && !fl.is_bad("interface") {
            match vrids.get(&(inst.interface.as_str(), family, inst.vrid)) {
                Some(other) => {
                    let other_name = &config.instances[*other].name;
                    let at = describe_line(lines.instance(*other).line("vrid"));
                    v.error(
                        fl,
                        "vrid",
                        format!(
                            "{instance_kw} `{name}`: `{vrid_kw}` {} on {} is already used by `{other_name}`{at} ({} VRIDs are one set per interface)",
                            inst.vrid, inst.interface, family.name()
                        ),
                    );
                }
                None => {
                    vrids.insert((&inst.interface, family, inst.vrid), index);
                }
            }
        }

        if let Some(vmac) = &inst.vmac {
            validate_vmac(v, config, inst, index, vmac, fl, instance_kw);
        }

        if inst.priority == 0 {
            v.error(
                fl,
                "priority",
                format!(
                    "{instance_kw} `{name}`: `priority` must be 1..=255 (got 0; 0 is reserved for a master giving up)"
                ),
            );
        }

        let version_ok = matches!(inst.version, 2 | 3);
        if !version_ok {
            v.error(
                fl,
                "version",
                format!(
                    "{instance_kw} `{name}`: `version` must be 2 or 3 (got {})",
                    inst.version
                ),
            );
        }

        if version_ok && family == Family::V6 && inst.version != 3 {
            let fix = match v.syntax {
                Syntax::Toml => "set `version = 3`",
                Syntax::Keepalived => {
                    "keepalived would send VRRPv2 over IPv6 here (`version 2` before the IPv6 addresses); remove `version 2` or add `native_ipv6`"
                }
            };
            v.error(
                fl,
                "version",
                format!(
                    "{instance_kw} `{name}`: an IPv6 instance runs VRRP version 3 (RFC 5798), not {}; {fix}",
                    inst.version
                ),
            );
        }

        validate_family(v, inst, fl, family);

        let advert_kw = v.kw("advert_interval");
        let advert = inst.advert_interval;
        if inst.version == 2 {
            if advert.subsec_nanos() != 0
                || advert < Duration::from_secs(1)
                || advert > Duration::from_secs(255)
            {
                v.error(
                    fl,
                    "advert_interval",
                    format!(
                        "{instance_kw} `{name}`: VRRPv2 `{advert_kw}` must be whole seconds 1..=255 (got {} s); use VRRPv3 for sub-second adverts",
                        advert.as_secs_f64()
                    ),
                );
            }
        } else if inst.version == 3
            && (advert < V3_MIN_ADVERT
                || advert > V3_MAX_ADVERT
                || advert.subsec_nanos() % CENTISECOND_NANOS != 0)
        {
            v.error(
                fl,
                "advert_interval",
                format!(
                    "{instance_kw} `{name}`: VRRPv3 `{advert_kw}` must be 0.01..=40.95 s in steps of 0.01 s (got {} s)",
                    advert.as_secs_f64()
                ),
            );
        }

        if let Some(pass) = &inst.auth_pass {
            if inst.version == 3 {
                v.error(
                    fl,
                    "auth_pass",
                    format!(
                        "{instance_kw} `{name}`: VRRPv3 has no authentication; remove `auth_pass` or use version 2"
                    ),
                );
            } else if pass.is_empty() {
                v.error(
                    fl,
                    "auth_pass",
                    format!("{instance_kw} `{name}`: `auth_pass` is empty"),
                );
            } else if inst.auth_type == crate::AuthType::Ah && inst.family() == crate::Family::V6 {
                v.error(
                    fl,
                    "auth_type",
                    format!(
                        "{instance_kw} `{name}`: AH authentication is for IPv4 only (keepalived ignores it on IPv6); remove `auth_type`"
                    ),
                );
            } else if pass.len() > 8 {
                v.warning(
                    fl,
                    "auth_pass",
                    format!(
                        "{instance_kw} `{name}`: `auth_pass` is longer than 8 bytes; keepalived uses only the first 8 characters, and so does lbha on the wire"
                    ),
                );
            }
        }

        let peers_kw = v.kw("unicast_peers");
        let mut peers_seen = HashSet::new();
        for (i, peer) in inst.unicast_peers.iter().enumerate() {
            if Some(*peer) == inst.unicast_src {
                let src_kw = v.kw("unicast_src");
                v.item_error(
                    fl,
                    "unicast_peers",
                    i,
                    format!(
                        "{instance_kw} `{name}`: `{peers_kw}` lists {peer}, which is this node's own `{src_kw}`"
                    ),
                );
            } else if !peers_seen.insert(*peer) {
                v.item_warning(
                    fl,
                    "unicast_peers",
                    i,
                    format!("{instance_kw} `{name}`: `{peers_kw}` lists {peer} twice"),
                );
            }
        }

        if inst.check_unicast_src && inst.unicast_peers.len() > MAX_FILTERED_PEERS {
            let off = match v.syntax {
                Syntax::Toml => "`check_unicast_src = false`",
                Syntax::Keepalived => "lbha-agent's `--no-check-unicast-src`",
            };
            v.item_error(
                fl,
                "unicast_peers",
                MAX_FILTERED_PEERS,
                format!(
                    "{instance_kw} `{name}`: lbha accepts adverts only from the `{peers_kw}` addresses and can check at most {MAX_FILTERED_PEERS} of them (this lists {}); list at most {MAX_FILTERED_PEERS}, or accept adverts from any source with {off}",
                    inst.unicast_peers.len()
                ),
            );
        }

        if inst.unicast_ttl.is_some() && inst.unicast_peers.is_empty() {
            v.error(
                fl,
                "unicast_ttl",
                format!(
                    "{instance_kw} `{name}`: `unicast_ttl` needs `{peers_kw}`: multicast adverts are sent with TTL 255, which receivers require (keepalived resets the TTL to 0 here, and its adverts are then dropped by every peer)"
                ),
            );
        }

        if !DOWN_TIMER_ADVERTS_RANGE.contains(&inst.down_timer_adverts) {
            v.error(
                fl,
                "down_timer_adverts",
                format!(
                    "{instance_kw} `{name}`: `down_timer_adverts` must be {}..={} (got {})",
                    DOWN_TIMER_ADVERTS_RANGE.start(),
                    DOWN_TIMER_ADVERTS_RANGE.end(),
                    inst.down_timer_adverts
                ),
            );
        }

        let vip_kw = v.kw("virtual_addresses");
        for (i, vip) in inst.virtual_addresses.iter().enumerate() {
            let (addr, prefix) = (vip.address, vip.prefix);
            let max = Family::of(addr).max_prefix();
            if prefix > max {
                v.item_error(
                    fl,
                    "virtual_addresses",
                    i,
                    format!("{instance_kw} `{name}`: `{vip_kw}` {addr}/{prefix}: prefix length must be 0..={max}"),
                );
            }
            if let Some(scope) = vip.scope.filter(|s| *s != 0) {
                v.item_error(
                    fl,
                    "virtual_addresses",
                    i,
                    format!(
                        "{instance_kw} `{name}`: `{vip_kw}` {addr} has `scope {}`; lbha adds virtual addresses with global scope only (not implemented yet), so the address would be reachable where it should not be",
                        crate::scope_name(scope)
                    ),
                );
            }
            if let Some(peer) = vip.peer {
                v.item_error(
                    fl,
                    "virtual_addresses",
                    i,
                    format!(
                        "{instance_kw} `{name}`: `{vip_kw}` {addr} has `peer {peer}`; lbha does not add point-to-point addresses yet, so it would add {addr}/{prefix} as an ordinary address",
                    ),
                );
            }
        }

        let track_kw = v.kw("track");
        let check_kw = v.kw("check");
        let mut tracked = HashSet::new();
        for (i, track) in inst.track.iter().enumerate() {
            if !check_names.contains(track.as_str()) {
                if check_names_reliable {
                    v.item_error(
                        fl,
                        "track",
                        i,
                        format!(
                            "{instance_kw} `{name}`: `{track_kw}` names `{track}`, but no {check_kw} has that name"
                        ),
                    );
                }
            } else if !tracked.insert(track.as_str()) {
                v.item_warning(
                    fl,
                    "track",
                    i,
                    format!("{instance_kw} `{name}`: `{track_kw}` lists `{track}` twice"),
                );
            }
        }

        // keepalived.conf: the front-end clears `nopreempt` on a MASTER as
        // keepalived does; TOML says what it means.
        if !inst.preempt && inst.initial_state == InitialState::Master {
            let preempt_kw = match v.syntax {
                Syntax::Keepalived => "nopreempt",
                Syntax::Toml => "preempt = false",
            };
            v.warning(
                fl,
                "preempt",
                format!(
                    "{instance_kw} `{name}`: `{preempt_kw}` only works with initial state BACKUP (keepalived warns about this too); set the state to backup"
                ),
            );
        }
    }
}

/// The kernel's rule for an interface name (`dev_valid_name`, which
/// keepalived copies): 1 to 15 bytes, not `.` or `..`, no `/`, `:` or
/// white space.
pub(crate) fn interface_name_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_ascii_whitespace())
}

/// `vmac` (keepalived's `use_vmac`): a valid name of its own (not the
/// instance's interface, nor another instance's macvlan), IPv4 only, and
/// `vmac_xmit_base` with unicast peers (keepalived's rule: the macvlan in
/// private mode would not hear unicast replies addressed to the base).
fn validate_vmac(
    v: &mut Validator<'_>,
    config: &Config,
    inst: &crate::Instance,
    index: usize,
    vmac: &crate::Vmac,
    fl: &FieldLines,
    instance_kw: &str,
) {
    let name = &inst.name;
    if !interface_name_valid(&vmac.name) {
        v.error(
            fl,
            "vmac",
            format!("{instance_kw} `{name}`: `vmac` `{}` is not a valid interface name (at most 15 characters, no `/`, `:` or spaces)", vmac.name),
        );
    } else if vmac.name == inst.interface
        || config.instances.iter().any(|o| o.interface == vmac.name)
    {
        v.error(
            fl,
            "vmac",
            format!("{instance_kw} `{name}`: `vmac` `{}` is an instance's interface; lbha creates the macvlan and deletes it at stop", vmac.name),
        );
    } else if let Some(other) = config.instances[..index]
        .iter()
        .find(|o| o.vmac.as_ref().is_some_and(|o| o.name == vmac.name))
    {
        v.error(
            fl,
            "vmac",
            format!(
                "{instance_kw} `{name}`: `vmac` `{}` is already the macvlan of `{}`",
                vmac.name, other.name
            ),
        );
    }
    if inst.family() == Family::V6 {
        v.error(
            fl,
            "vmac",
            format!("{instance_kw} `{name}`: `vmac` on an IPv6 instance is not supported: not implemented: lbha creates the IPv4 virtual MAC interface only"),
        );
    }
    if !inst.unicast_peers.is_empty() && !vmac.xmit_base {
        v.error(
            fl,
            "vmac",
            format!("{instance_kw} `{name}`: `vmac` with unicast peers needs `vmac_xmit_base = true` (keepalived sets it): the replies come to the base interface's address"),
        );
    }
}

/// One instance is one family (keepalived's rule, RFC 5798's separate
/// protocol instances): its source, peers and virtual addresses are all
/// IPv4 or all IPv6; excluded virtual addresses, which are not in the
/// adverts, may be of either (keepalived allows that too). Over IPv6
/// multicast, the first virtual address should be link-local (RFC 5798
/// 5.2.9); keepalived 2.2.7 only logs it (and reports it, still running,
/// in strict mode), so lbha warns, in both syntaxes: what
/// `import-keepalived` writes must load as TOML.
fn validate_family(v: &mut Validator<'_>, inst: &crate::Instance, fl: &FieldLines, family: Family) {
    let instance_kw = v.kw("instance");
    let name = &inst.name;
    let from = if let Some(src) = inst.unicast_src {
        format!("`{}` {src}", v.kw("unicast_src"))
    } else if let Some(peer) = inst.unicast_peers.first() {
        format!("`{}` {peer}", v.kw("unicast_peers"))
    } else {
        inst.virtual_addresses
            .iter()
            .find(|a| !a.excluded)
            .map_or_else(String::new, |a| {
                format!("`{}` {}", v.kw("virtual_addresses"), a.address)
            })
    };
    let wrong = |v: &mut Validator<'_>, field: &str, index: Option<usize>, addr: IpAddr| {
        if Family::of(addr) == family {
            return;
        }
        let kw = v.kw(field).to_string();
        let message = format!(
            "{instance_kw} `{name}`: `{kw}` {addr} is {}, but the instance is {} (from {from}); an instance is one family: use one instance per family",
            Family::of(addr).name(),
            family.name()
        );
        match index {
            Some(i) => v.item_error(fl, field, i, message),
            None => v.error(fl, field, message),
        }
    };
    if let Some(src) = inst.unicast_src {
        wrong(v, "unicast_src", None, src);
    }
    for (i, peer) in inst.unicast_peers.iter().enumerate() {
        wrong(v, "unicast_peers", Some(i), *peer);
    }
    for (i, vip) in inst.virtual_addresses.iter().enumerate() {
        if !vip.excluded {
            wrong(v, "virtual_addresses", Some(i), vip.address);
        }
    }
    if family == Family::V6 && inst.unicast_peers.is_empty() {
        let first = inst
            .virtual_addresses
            .iter()
            .enumerate()
            .find(|(_, a)| !a.excluded);
        if let Some((i, vip)) = first {
            let link_local = matches!(vip.address, IpAddr::V6(a) if a.is_unicast_link_local());
            if !link_local {
                let vip_kw = v.kw("virtual_addresses");
                let addr = vip.address;
                v.item_warning(
                    fl,
                    "virtual_addresses",
                    i,
                    format!(
                        "{instance_kw} `{name}`: the first `{vip_kw}` {addr} is not link-local; RFC 5798 requires a link-local address first over IPv6 multicast (keepalived only logs this), and lbha advertises the addresses as written: put one first"
                    ),
                );
            }
        }
    }
}

/// Runs validation after a front-end, merges its diagnostics with the
/// front-end's, orders everything by line, and decides.
pub(crate) fn finish(
    config: Config,
    lines: &Lines,
    file: &Path,
    syntax: Syntax,
    mut errors: Vec<Diagnostic>,
    mut warnings: Vec<Diagnostic>,
) -> Result<Loaded, ConfigErrors> {
    let findings = validate(&config, lines, file, syntax);
    errors.extend(findings.errors);
    warnings.extend(findings.warnings);
    for list in [&mut errors, &mut warnings] {
        // By position (which orders included files after the main one),
        // and each diagnostic once however many paths led to it.
        list.sort_by_key(|d| (order(lines, file, d), d.line.unwrap_or(0)));
        let mut seen: HashSet<(PathBuf, Option<usize>, String)> = HashSet::new();
        list.retain(|d| seen.insert((d.file.clone(), d.line, d.message.clone())));
    }
    if errors.is_empty() {
        Ok(Loaded {
            config,
            warnings,
            file: file.to_path_buf(),
            lines: lines.clone(),
        })
    } else {
        Err(ConfigErrors { errors, warnings })
    }
}

/// Where a diagnostic sorts: the main file first, included files after it
/// in the order they were read.
fn order(lines: &Lines, main: &Path, d: &Diagnostic) -> usize {
    if d.file == main {
        return 0;
    }
    lines
        .sources
        .included
        .iter()
        .position(|f| f.path == d.file)
        .map_or(usize::MAX, |i| i + 1)
}

fn describe_line(line: Option<usize>) -> String {
    match line {
        Some(line) => format!(" on line {line}"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, path::PathBuf};

    use super::*;
    use crate::{Check, Garp, Global, Instance, Notify, ReceivePathChoice};

    fn check(name: &str) -> Check {
        Check {
            name: name.into(),
            script: "true".into(),
            probe: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            weight: 0,
            weight_reverse: false,
            rise: 1,
            fall: 1,
            init_fail: false,
        }
    }

    fn instance(name: &str, vrid: u8) -> Instance {
        Instance {
            name: name.into(),
            interface: "eth1".into(),
            vrid,
            priority: 100,
            version: 2,
            advert_interval: Duration::from_secs(1),
            initial_state: InitialState::Backup,
            preempt: true,
            preempt_delay: Duration::ZERO,
            unicast_src: None,
            unicast_peers: vec![],
            check_unicast_src: true,
            down_timer_adverts: 3,
            auth_pass: None,
            auth_type: crate::AuthType::Pass,
            virtual_addresses: vec![],
            virtual_routes: vec![],
            virtual_rules: vec![],
            track: vec![],
            track_interfaces: Vec::new(),
            track_files: Vec::new(),
            notify_priority_changes: false,
            dont_track_primary: false,
            lower_prio_no_advert: false,
            higher_prio_send_advert: false,
            unicast_ttl: None,
            accept: true,
            notify: Notify::default(),
            receive_path: ReceivePathChoice::Auto,
            garp: Garp::default(),
            vmac: None,
        }
    }

    fn config(checks: Vec<Check>, instances: Vec<Instance>) -> Config {
        Config {
            global: Global::default(),
            checks,
            instances,
            floating_ip: None,
            heartbeat: None,
            track_files: Vec::new(),
            sync_groups: Vec::new(),
        }
    }

    fn run(config: &Config) -> Findings {
        validate(config, &Lines::default(), &PathBuf::from("t"), Syntax::Toml)
    }

    fn messages(diags: &[Diagnostic]) -> Vec<&str> {
        diags.iter().map(|d| d.message.as_str()).collect()
    }

    #[test]
    fn config_valid_minimal_config_has_no_findings() {
        let mut inst = instance("VI_1", 33);
        inst.track = vec!["chk".into()];
        let findings = run(&config(vec![check("chk")], vec![inst]));
        assert_eq!(findings, Findings::default());
    }

    #[test]
    fn config_vrid_and_priority_ranges() {
        let mut inst = instance("VI_1", 0);
        inst.priority = 0;
        let findings = run(&config(vec![], vec![inst]));
        let msgs = messages(&findings.errors);
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs[0].contains("`vrid` must be 1..=255"));
        assert!(msgs[1].contains("`priority` must be 1..=255"));
    }

    #[test]
    fn config_vrid_unique_per_interface() {
        let a = instance("A", 5);
        let b = instance("B", 5);
        let mut c = instance("C", 5);
        c.interface = "eth2".into();
        let findings = run(&config(vec![], vec![a, b, c]));
        let msgs = messages(&findings.errors);
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(msgs[0].contains("already used by `A`"), "{msgs:?}");
    }

    #[test]
    fn config_versions_and_advert_intervals() {
        let mut bad_version = instance("A", 1);
        bad_version.version = 4;
        let mut v2_fraction = instance("B", 2);
        v2_fraction.advert_interval = Duration::from_millis(1500);
        let mut v2_too_long = instance("C", 3);
        v2_too_long.advert_interval = Duration::from_secs(256);
        let mut v3_ok = instance("D", 4);
        v3_ok.version = 3;
        v3_ok.advert_interval = Duration::from_millis(10);
        let mut v3_max = instance("E", 5);
        v3_max.version = 3;
        v3_max.advert_interval = Duration::from_millis(40_950);
        let mut v3_too_short = instance("F", 6);
        v3_too_short.version = 3;
        v3_too_short.advert_interval = Duration::from_millis(5);
        let mut v3_not_centi = instance("G", 7);
        v3_not_centi.version = 3;
        v3_not_centi.advert_interval = Duration::from_millis(15);
        let mut v3_too_long = instance("H", 8);
        v3_too_long.version = 3;
        v3_too_long.advert_interval = Duration::from_millis(40_960);
        let findings = run(&config(
            vec![],
            vec![
                bad_version,
                v2_fraction,
                v2_too_long,
                v3_ok,
                v3_max,
                v3_too_short,
                v3_not_centi,
                v3_too_long,
            ],
        ));
        let msgs = messages(&findings.errors);
        assert_eq!(msgs.len(), 6, "{msgs:?}");
        assert!(msgs[0].contains("`A`: `version` must be 2 or 3"));
        assert!(msgs[1].contains("`B`: VRRPv2"));
        assert!(msgs[2].contains("`C`: VRRPv2"));
        assert!(msgs[3].contains("`F`: VRRPv3"));
        assert!(msgs[4].contains("`G`: VRRPv3"));
        assert!(msgs[5].contains("`H`: VRRPv3"));
    }

    #[test]
    fn config_auth_pass_rules() {
        let mut v3 = instance("A", 1);
        v3.version = 3;
        v3.advert_interval = Duration::from_secs(1);
        v3.auth_pass = Some("secret".into());
        let mut empty = instance("B", 2);
        empty.auth_pass = Some(String::new());
        let mut long = instance("C", 3);
        long.auth_pass = Some("123456789".into());
        let findings = run(&config(vec![], vec![v3, empty, long]));
        let errors = messages(&findings.errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("VRRPv3 has no authentication"));
        assert!(errors[1].contains("`auth_pass` is empty"));
        let warnings = messages(&findings.warnings);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("keepalived uses only the first 8 characters"));
    }

    #[test]
    fn config_peers_must_not_contain_src() {
        let mut inst = instance("A", 1);
        inst.unicast_src = Some(Ipv4Addr::new(10, 0, 0, 1).into());
        inst.unicast_peers = vec![
            Ipv4Addr::new(10, 0, 0, 2).into(),
            Ipv4Addr::new(10, 0, 0, 1).into(),
            Ipv4Addr::new(10, 0, 0, 2).into(),
        ];
        let mut lines = Lines::default();
        let mut fl = FieldLines::at(1);
        fl.set("unicast_peers", 5);
        fl.set("unicast_peers[1]", 7);
        lines.instances.push(fl);
        let findings = validate(
            &config(vec![], vec![inst]),
            &lines,
            Path::new("k"),
            Syntax::Keepalived,
        );
        assert_eq!(findings.errors.len(), 1);
        assert_eq!(findings.errors[0].line, Some(7));
        assert!(
            findings.errors[0]
                .message
                .contains("`unicast_peer` lists 10.0.0.1")
        );
        assert_eq!(findings.warnings.len(), 1);
        assert_eq!(findings.warnings[0].line, Some(5));
    }

    #[test]
    fn config_source_checking_holds_at_most_eight_peers() {
        let with_peers = |n: u8, check: bool| {
            let mut inst = instance("A", 1);
            inst.unicast_peers = (1..=n).map(|i| Ipv4Addr::new(10, 0, 0, i).into()).collect();
            inst.check_unicast_src = check;
            run(&config(vec![], vec![inst]))
        };
        assert_eq!(with_peers(8, true), Findings::default());
        assert_eq!(with_peers(9, false), Findings::default());
        let errors = messages(&with_peers(9, true).errors).join("\n");
        assert!(errors.contains("can check at most 8"), "{errors}");
    }

    #[test]
    fn config_down_timer_adverts_range() {
        for (n, ok) in [(0, false), (1, true), (3, true), (100, true), (101, false)] {
            let mut inst = instance("A", 1);
            inst.down_timer_adverts = n;
            let findings = run(&config(vec![], vec![inst]));
            assert_eq!(findings.errors.is_empty(), ok, "{n}: {findings:?}");
        }
    }

    #[test]
    fn config_tracks_must_exist_and_names_be_unique() {
        let mut a = instance("A", 1);
        a.track = vec!["chk".into(), "missing".into()];
        let b = instance("A", 2);
        let mut c = instance("", 3);
        c.interface = String::new();
        let findings = run(&config(vec![check("chk"), check("chk")], vec![a, b, c]));
        let msgs = messages(&findings.errors);
        assert_eq!(msgs.len(), 5, "{msgs:?}");
        assert!(msgs[0].contains("duplicate check name `chk`"));
        assert!(msgs[1].contains("no check has that name"));
        assert!(msgs[2].contains("duplicate instance name `A`"));
        assert!(msgs[3].contains("non-empty name"));
        assert!(msgs[4].contains("`interface` is missing"));
    }

    #[test]
    fn config_check_ranges() {
        let mut c = check("chk");
        c.interval = Duration::ZERO;
        c.timeout = Duration::ZERO;
        c.rise = 0;
        c.fall = 0;
        c.weight = 254;
        let mut empty = check("");
        empty.script = " ".into();
        empty.weight = -253;
        let findings = run(&config(vec![c, empty], vec![]));
        let msgs = messages(&findings.errors);
        assert_eq!(msgs.len(), 7, "{msgs:?}");
        assert!(msgs[4].contains("`weight` must be -253..=253 (got 254)"));
    }

    #[test]
    fn config_nopreempt_with_master_warns() {
        let mut inst = instance("A", 1);
        inst.preempt = false;
        inst.initial_state = InitialState::Master;
        let findings = validate(
            &config(vec![], vec![inst]),
            &Lines::default(),
            Path::new("k"),
            Syntax::Keepalived,
        );
        assert!(findings.errors.is_empty());
        assert_eq!(findings.warnings.len(), 1);
        assert!(
            findings.warnings[0]
                .message
                .contains("`nopreempt` only works")
        );
    }

    #[test]
    fn config_bad_fields_are_not_reported_twice() {
        let inst = instance("A", 0);
        let mut lines = Lines::default();
        let mut fl = FieldLines::at(3);
        fl.mark_bad("vrid");
        lines.instances.push(fl);
        let findings = validate(
            &config(vec![], vec![inst]),
            &lines,
            Path::new("t"),
            Syntax::Toml,
        );
        assert!(findings.errors.is_empty(), "{:?}", findings.errors);
    }

    #[test]
    fn config_global_version_range() {
        let mut config = config(vec![], vec![]);
        config.global.vrrp_version = 1;
        let findings = run(&config);
        assert_eq!(findings.errors.len(), 1);
        assert!(
            findings.errors[0]
                .message
                .contains("`vrrp_version` must be 2 or 3")
        );
    }
}
