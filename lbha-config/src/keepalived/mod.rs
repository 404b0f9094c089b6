//! keepalived.conf (keepalived 2.2 syntax) as a configuration front-end.
//!
//! Three stages: keepalived's line reader ([`read`]: comments, `@ID`
//! conditional lines, `$NAME` definitions, `include`, braces, words), a
//! block parser (statements: the words of one line, plus an optional
//! `{ ... }` block), and the mapping of the keepalived keywords onto
//! [`Config`], with keepalived's own rules for what the file means
//! (`vrrp_complete_instance`: a MASTER without `priority` is 255, a
//! priority of 255 starts MASTER, `nopreempt` on a MASTER is cleared,
//! `vrrp_strict`, ...).
//!
//! Nothing is dropped silently: a keyword lbha does not implement is a
//! warning with its line when ignoring it is harmless, or an error when
//! ignoring it would change failover (`auth_type AH`, `use_vmac`,
//! ...); a keyword keepalived itself does not know is an error too.

mod include;
mod keywords;
mod read;
mod track_file;

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::Duration,
};

pub use include::{DiskFiles, Files, NoFiles};
use read::{Token, Word};

use super::{
    AuthType, Check, Config, ConfigErrors, Diagnostic, Family, Global, InitialState, Instance,
    KeepalivedOptions, Loaded, Notify, SyncGroup, VirtualAddress,
    toml::secs_to_duration,
    validate::{FieldLines, Lines, SourceMap, Syntax, finish},
};
use crate::{DEFAULT_DOWN_TIMER_ADVERTS, DOWN_TIMER_ADVERTS_RANGE, Garp, ReceivePathChoice, Vmac};

/// Parses a keepalived.conf (`text`, read from `path`; includes through
/// `files`); `adjust` sees the configuration before it is validated.
pub fn parse(
    text: &str,
    path: &Path,
    options: &KeepalivedOptions,
    files: &dyn Files,
    adjust: &mut dyn FnMut(&mut Config),
) -> Result<Loaded, ConfigErrors> {
    let mut cx = Cx {
        file: path,
        sources: SourceMap::default(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let tokens = read::read(text, path, options, files, &mut cx);
    let statements = parse_statements(&tokens, &mut cx);
    let mut builder = Builder::default();
    for statement in &statements {
        builder.top_level(statement, &mut cx);
    }
    let (mut config, mut lines) = builder.resolve(&mut cx);
    lines.sources = cx.sources.clone();
    adjust(&mut config);
    finish(
        config,
        &lines,
        path,
        Syntax::Keepalived,
        cx.errors,
        cx.warnings,
    )
}

// ---------------------------------------------------------------- blocks

/// One keyword line: its words (the keyword first), the text they came
/// from and, if a `{` follows, the statements of its block.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Statement {
    words: Vec<Word>,
    raw: String,
    block: Option<Vec<Statement>>,
}

impl Statement {
    fn keyword(&self) -> &str {
        &self.words[0].text
    }

    fn line(&self) -> usize {
        self.words[0].line
    }

    fn args(&self) -> &[Word] {
        &self.words[1..]
    }
}

fn parse_statements(tokens: &[Token], cx: &mut Cx) -> Vec<Statement> {
    let mut pos = 0;
    let statements = parse_block(tokens, &mut pos, None, cx, 0);
    debug_assert_eq!(pos, tokens.len());
    statements
}

/// keepalived's own configurations nest three levels deep; anything deeper
/// than this is not a configuration, and recursing on it could exhaust the
/// stack.
const MAX_NESTING: usize = 16;

/// Parses statements until the `}` closing the block opened on `open_line`
/// (or the end of the file at the top level).
fn parse_block(
    tokens: &[Token],
    pos: &mut usize,
    open_line: Option<usize>,
    cx: &mut Cx,
    depth: usize,
) -> Vec<Statement> {
    if depth > MAX_NESTING {
        cx.error(
            open_line.unwrap_or(1),
            format!("blocks nested more than {MAX_NESTING} deep; the rest of the file is ignored"),
        );
        *pos = tokens.len();
        return Vec::new();
    }
    let mut statements = Vec::new();
    while let Some(token) = tokens.get(*pos) {
        match token {
            Token::Line { words, raw, .. } => {
                *pos += 1;
                let block = match tokens.get(*pos) {
                    Some(Token::Open(line)) => {
                        let line = *line;
                        *pos += 1;
                        Some(parse_block(tokens, pos, Some(line), cx, depth + 1))
                    }
                    _ => None,
                };
                statements.push(Statement {
                    words: words.clone(),
                    raw: raw.clone(),
                    block,
                });
            }
            Token::Open(line) => {
                cx.error(*line, "`{` without a keyword before it".into());
                *pos += 1;
                // Parse and drop the block so that its `}` is not unexpected.
                parse_block(tokens, pos, Some(*line), cx, depth + 1);
            }
            Token::Close(line) => {
                *pos += 1;
                if open_line.is_some() {
                    return statements;
                }
                // keepalived reports an extra `}` at the top level and
                // ignores it.
                cx.warn(
                    *line,
                    "`}` without a matching `{`: keepalived reports it and ignores it, and so does lbha".into(),
                );
            }
        }
    }
    if let Some(line) = open_line {
        let last = tokens.last().map_or(line, Token::line);
        cx.error(
            last,
            format!("missing `}}` at the end of the file for the `{{` on line {line}"),
        );
    }
    statements
}

// ---------------------------------------------------------------- mapping

struct Cx<'a> {
    file: &'a Path,
    /// Which file each position is in (filled by the reader's includes).
    sources: SourceMap,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Cx<'_> {
    fn diag(&self, line: usize, message: String) -> Diagnostic {
        self.sources.diagnostic(self.file, Some(line), message)
    }

    fn error(&mut self, line: usize, message: String) {
        let d = self.diag(line, message);
        self.errors.push(d);
    }

    fn warn(&mut self, line: usize, message: String) {
        let d = self.diag(line, message);
        self.warnings.push(d);
    }

    /// A keyword keepalived knows (in `known`) that lbha ignores: a
    /// warning; one keepalived does not know: an error.
    fn unsupported(&mut self, s: &Statement, context: &str, known: &[&str]) {
        let kw = s.keyword();
        if !known.contains(&kw) {
            self.unknown(s, context);
            return;
        }
        let kind = if s.block.is_some() {
            "block"
        } else {
            "keyword"
        };
        self.warn(
            s.line(),
            format!("{context}unsupported {kind} `{kw}` ignored"),
        );
    }

    /// A keyword keepalived does not know here.
    ///
    /// keepalived reports it and reads on. Without a block, that is all: it
    /// is ignored, and so lbha ignores it, with a warning (a typo, a line
    /// left outside its block by a `}` too early: the file does not do what
    /// it seems to, but what keepalived did with it). With a block,
    /// keepalived reads the block's lines at this level, and its `}` closes
    /// the enclosing block: another meaning than lbha's tree, so an error;
    /// except at the top level (the empty `context`), where that `}` closes
    /// nothing and the lines are ignored too, unless one of them is a
    /// top-level keyword.
    fn unknown(&mut self, s: &Statement, context: &str) {
        let kw = s.keyword();
        let hint = undefined_hint(kw);
        let ignored = match &s.block {
            None => true,
            Some(block) => context.is_empty() && ignored_at_top_level(block),
        };
        if ignored {
            // At the top level, an instance's keyword most likely follows a
            // `}` that closed the instance too early.
            let misplaced = if context.is_empty() && keywords::INSTANCE.contains(&kw) {
                "; it is a `vrrp_instance` keyword: a `}` before it may have closed the instance early, and the instance does without it"
            } else {
                ""
            };
            self.warn(
                s.line(),
                format!(
                    "{context}`{kw}` is not a keepalived keyword here{hint}: keepalived reports it as unknown and ignores it{}, and so does lbha{misplaced}",
                    if s.block.is_some() { " with its block" } else { "" }
                ),
            );
        } else {
            self.error(
                s.line(),
                format!(
                    "{context}`{kw}` is not a keepalived keyword here{hint}: keepalived reports it as unknown and reads the lines of its block as if they were outside it"
                ),
            );
        }
    }

    /// The keyword takes no block: warn about one.
    fn no_block(&mut self, s: &Statement, context: &str) {
        if s.block.is_some() {
            self.warn(
                s.line(),
                format!(
                    "{context}`{}` takes no `{{ ... }}` block; the block is ignored",
                    s.keyword()
                ),
            );
        }
    }

    /// The single argument of a keyword; more are warned about.
    fn one_arg<'s>(&mut self, s: &'s Statement, context: &str) -> Option<&'s Word> {
        self.no_block(s, context);
        match s.args() {
            [] => {
                self.error(
                    s.line(),
                    format!("{context}`{}` needs a value", s.keyword()),
                );
                None
            }
            [arg, rest @ ..] => {
                if !rest.is_empty() {
                    self.extra_words(s.line(), rest, context, s.keyword());
                }
                Some(arg)
            }
        }
    }

    fn no_args(&mut self, s: &Statement, context: &str) {
        self.no_block(s, context);
        if !s.args().is_empty() {
            self.extra_words(s.line(), s.args(), context, s.keyword());
        }
    }

    fn extra_words(&mut self, line: usize, words: &[Word], context: &str, after: &str) {
        let text: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
        self.warn(
            line,
            format!(
                "{context}extra words `{}` after `{after}` ignored (keepalived ignores them too)",
                text.join(" ")
            ),
        );
    }

    /// "`keyword`: `value` is not WHAT", with a hint when the value looks
    /// like an undefined `$NAME`.
    fn not_a(&mut self, s: &Statement, word: &Word, context: &str, what: &str) {
        self.error(
            word.line,
            format!(
                "{context}`{}`: `{}` is not {what}{}",
                s.keyword(),
                word.text,
                undefined_hint(&word.text)
            ),
        );
    }

    fn int(&mut self, s: &Statement, context: &str, min: i64, max: i64) -> Option<i64> {
        let word = self.one_arg(s, context)?;
        match word.text.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            Ok(n) => {
                self.error(
                    word.line,
                    format!("{context}`{}` must be {min}..={max} (got {n})", s.keyword()),
                );
                None
            }
            Err(_) => {
                self.not_a(s, word, context, "an integer");
                None
            }
        }
    }

    /// Seconds with decimals (keepalived's `read_decimal_unsigned`).
    fn secs(&mut self, s: &Statement, context: &str) -> Option<Duration> {
        let word = self.one_arg(s, context)?;
        let decimal = !word.text.is_empty()
            && word.text.chars().all(|c| c.is_ascii_digit() || c == '.')
            && word.text.matches('.').count() <= 1;
        let duration = decimal
            .then(|| word.text.parse::<f64>().ok())
            .flatten()
            .and_then(secs_to_duration);
        if duration.is_none() {
            self.not_a(s, word, context, "a number of seconds (0 to a year)");
        }
        duration
    }

    /// Whole seconds (keepalived 2.2 reads a `vrrp_script`'s `interval` and
    /// `timeout` as unsigned integers).
    fn whole_secs(&mut self, s: &Statement, context: &str) -> Option<Duration> {
        let word = self.one_arg(s, context)?;
        match word.text.parse::<u32>() {
            Ok(0) => {
                self.error(
                    word.line,
                    format!(
                        "{context}`{}` must be at least 1 (keepalived replaces 0 with 1)",
                        s.keyword()
                    ),
                );
                None
            }
            Ok(n) if n <= 4294 => Some(Duration::from_secs(n.into())),
            _ => {
                self.not_a(
                    s,
                    word,
                    context,
                    "a whole number of seconds 1..=4294; keepalived 2.2 reads whole seconds only and would ignore it (use lbha's TOML for sub-second checks)",
                );
                None
            }
        }
    }

    /// An address as keepalived reads a source or peer address: what
    /// follows a `-` (a range) or a `/` (a prefix) is dropped.
    fn ip(&mut self, word: &Word, context: &str, keyword: &str) -> Option<IpAddr> {
        let text = &word.text;
        let bare = text
            .split_once('-')
            .or_else(|| text.split_once('/'))
            .map_or(text.as_str(), |(addr, _)| addr);
        if let Ok(ip) = bare.parse() {
            Some(ip)
        } else {
            self.error(
                word.line,
                format!(
                    "{context}`{keyword}`: `{text}` is not an IPv4 or IPv6 address{}",
                    undefined_hint(text)
                ),
            );
            None
        }
    }
}

/// A hint for a value that still holds `$NAME`: keepalived replaces only
/// names defined before with `$NAME=value`.
/// Whether keepalived, reading `block` at the top level (an unknown
/// keyword's), ignores every line of it: none is a top-level keyword.
fn ignored_at_top_level(block: &[Statement]) -> bool {
    block.iter().all(|s| {
        !keywords::TOP_LEVEL.contains(&s.keyword())
            && s.block.as_deref().is_none_or(ignored_at_top_level)
    })
}

fn undefined_hint(text: &str) -> String {
    let refers = text.match_indices('$').any(|(i, _)| {
        text[i + 1..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '{')
    });
    if refers {
        " (a `$NAME` that no `$NAME=value` line defined before is left as written)".into()
    } else {
        String::new()
    }
}

/// A script command as keepalived reads it for `script`, `notify_*`: the
/// line is split again with quotes and escapes ([`crate::split_command`]);
/// the second word is the command line, whose words are the argv. Returns
/// the command line and the words after it (`notify_*`: user and group).
fn script_words(s: &Statement, context: &str, cx: &mut Cx) -> Option<(String, Vec<String>)> {
    let kw = s.keyword();
    let words = match crate::split_command(&s.raw) {
        Ok(words) => words,
        Err(why) => {
            cx.error(
                s.line(),
                format!(
                    "{context}`{kw}` cannot be split into words ({why}); keepalived ignores it"
                ),
            );
            return None;
        }
    };
    let Some(command) = words.get(1) else {
        cx.error(s.line(), format!("{context}`{kw}` needs a command"));
        return None;
    };
    match crate::split_command(command) {
        Ok(argv) if !argv.is_empty() => Some((command.clone(), words[2..].to_vec())),
        Ok(_) => {
            cx.error(s.line(), format!("{context}`{kw}`: the command is empty"));
            None
        }
        Err(why) => {
            cx.error(
                s.line(),
                format!(
                    "{context}`{kw}`: `{command}` cannot be split into words ({why}); keepalived ignores it"
                ),
            );
            None
        }
    }
}

/// Top-level keywords whose absence from lbha would change failover
/// behaviour dangerously: refusing them beats pretending.
fn dangerous_top_level(keyword: &str) -> Option<&'static str> {
    Some(match keyword {
        "virtual_server" | "virtual_server_group" => {
            "lbha does no LVS (IPVS) load balancing: traffic to the virtual server would not be balanced"
        }
        "net_namespace" => "not implemented: lbha would run VRRP in the wrong network namespace",
        _ => return None,
    })
}

fn dangerous_global(keyword: &str) -> Option<&'static str> {
    Some(match keyword {
        "net_namespace" | "net_namespace_ipvs" => {
            "not implemented: lbha would run VRRP in the wrong network namespace"
        }
        "vrrp_mcast_group4" => {
            "not implemented: lbha advertises to 224.0.0.18 only, so the peers would not hear it"
        }
        _ => return None,
    })
}

fn dangerous_instance(keyword: &str) -> Option<&'static str> {
    Some(match keyword {
        "track_process" | "track_bfd" => {
            "not implemented: the instance would stay master while what it tracks is down"
        }
        "use_ipvlan" | "use_vmac_addr" => {
            "not implemented: lbha creates no such interface, so the addresses would not move on failover"
        }
        "old_unicast_checksum" => {
            "lbha computes the current checksum: peers expecting the old one would reject its adverts"
        }
        "mcast_dst_ip" => {
            "not implemented: lbha advertises to 224.0.0.18 only, so the peers would not hear it"
        }
        "vrf" => "not implemented: lbha would advertise outside the VRF",
        _ => return None,
    })
}

/// The interface name of `use_vmac [NAME] [MAC]` (keepalived 2.2.7's
/// `vrrp_vmac_handler`): none for the default `vrrp.VRID`. A word with a
/// `:` is a MAC address, which lbha does not take; a name the kernel would
/// refuse is ignored with a warning, as keepalived ignores it.
fn use_vmac_name(item: &Statement, context: &str, cx: &mut Cx) -> Option<String> {
    let mut name = None;
    for (i, word) in item.args().iter().enumerate() {
        let text = word.text.as_str();
        if i >= 2 {
            cx.extra_words(item.line(), &item.args()[2..], context, "use_vmac");
            break;
        }
        if text.contains(':') {
            cx.error(
                item.line(),
                format!("{context}`use_vmac {text}`: a MAC address of one's own is not supported: not implemented: lbha gives the macvlan the VRRP virtual MAC 00:00:5e:00:01:VRID only"),
            );
        } else if name.is_some() {
            cx.warn(
                item.line(),
                format!("{context}`use_vmac`: interface name already given; `{text}` ignored, as keepalived ignores it"),
            );
        } else if !crate::validate::interface_name_valid(text) {
            cx.warn(
                item.line(),
                format!("{context}`use_vmac {text}`: not a valid interface name (at most 15 characters, no `/`, `:` or spaces); keepalived ignores it and uses `vrrp.VRID`, and so does lbha"),
            );
        } else {
            name = Some(text.to_owned());
        }
    }
    name
}

/// keepalived's `vrrp_complete_instance` on `use_vmac` / `vmac_xmit_base`.
fn complete_vmac(
    instance: &Instance,
    vmac: Option<(Option<String>, usize)>,
    xmit_base: Option<usize>,
    strict: bool,
    context: &str,
    cx: &mut Cx,
) -> Option<Vmac> {
    let Some((name, line)) = vmac else {
        if let Some(line) = xmit_base {
            cx.warn(
                line,
                format!("{context}`vmac_xmit_base` is only valid with `use_vmac`; keepalived ignores it, and so does lbha"),
            );
        }
        return None;
    };
    if instance.family() == Family::V6 {
        cx.error(
            line,
            format!("{context}`use_vmac` on an IPv6 instance is not supported: not implemented: lbha creates the IPv4 virtual MAC interface only, so the IPv6 addresses would not move with the virtual MAC"),
        );
        return None;
    }
    let mut xmit_base = xmit_base.is_some();
    if strict && xmit_base {
        cx.warn(
            line,
            format!("{context}`vmac_xmit_base` is incompatible with strict mode; keepalived resets it, and so does lbha"),
        );
        xmit_base = false;
    }
    if !instance.unicast_peers.is_empty() && !xmit_base {
        cx.warn(
            line,
            format!("{context}unicast peers with `use_vmac` need `vmac_xmit_base`; keepalived sets it, and so does lbha"),
        );
        xmit_base = true;
    }
    Some(Vmac {
        name: name.unwrap_or_else(|| Vmac::default_name(instance.vrid)),
        xmit_base,
    })
}

/// A `weight N [reverse]` as read: none when it could not be.
type Weight = Option<(i32, bool)>;

/// A `track_script` entry, resolved once all checks are known.
struct TrackRef {
    name: String,
    /// `weight N [reverse]` override.
    weight: Option<(i32, bool)>,
    line: usize,
}

/// A script's own `user [group]` (keepalived runs it as them), checked
/// against `global_defs`' `script_user` once the whole file is read.
struct ScriptUser {
    user: String,
    group: Option<String>,
    what: String,
    line: usize,
}

/// What keepalived reads into a `vrrp_instance` before
/// `vrrp_complete_instance` works out what it means.
struct PendingInstance {
    instance: Instance,
    priority: Option<u8>,
    state: Option<InitialState>,
    version: Option<u8>,
    down_timer_adverts: Option<u8>,
    strict: Option<bool>,
    accept: Option<bool>,
    /// `lower_prio_no_advert` / `higher_prio_send_advert`: unset, they come
    /// from global_defs (or strict mode) once the whole file is read.
    lower_prio_no_advert: Option<bool>,
    higher_prio_send_advert: Option<bool>,
    nopreempt: bool,
    /// The instance's own `garp_lower_prio_repeat` / `_delay`: unset, they
    /// come from global_defs once the whole file is read.
    garp_lower_prio_repeat: Option<u32>,
    garp_lower_prio_delay: Option<Duration>,
    /// The family keepalived settled on: that of the first source, peer or
    /// virtual address read, or `native_ipv6`'s.
    family: Option<Family>,
    tracks: Vec<TrackRef>,
    /// `track_interface` entries (name, weight, line).
    track_interfaces: Vec<(String, Weight, usize)>,
    track_files: Vec<track_file::FileTrack>,
    notify_priority_changes: Option<bool>,
    /// `use_vmac [NAME]`: the name given, and the line.
    vmac: Option<(Option<String>, usize)>,
    /// `vmac_xmit_base`'s line.
    xmit_base: Option<usize>,
    lines: FieldLines,
}

#[derive(Default)]
struct Builder {
    global: Global,
    global_lines: FieldLines,
    /// global_defs `vrrp_down_timer_adverts`: the instances' default.
    down_timer_adverts: Option<u8>,
    /// global_defs `vrrp_strict`.
    strict: bool,
    /// global_defs `vrrp_lower_prio_no_advert` / `vrrp_higher_prio_send_advert`.
    lower_prio_no_advert: bool,
    higher_prio_send_advert: bool,
    /// global_defs' `vrrp_garp_*`, as read so far.
    garp: GlobalGarp,
    checks: Vec<(Check, FieldLines)>,
    instances: Vec<PendingInstance>,
    script_users: Vec<ScriptUser>,
    /// `vrrp_script`s without a `script`, which keepalived removes.
    removed_scripts: HashSet<String>,
    sync_groups: Vec<PendingGroup>,
    /// global_defs' `vrrp_notify_priority_changes`.
    notify_priority_changes: bool,
    /// global_defs' `notify_fifo` (0) and `vrrp_notify_fifo` (1), with
    /// their scripts.
    fifos: [PendingFifo; 2],
    /// `track_file` definitions, in order (an instance's block finds only
    /// those before it, as in keepalived).
    track_files: Vec<(crate::TrackFile, FieldLines)>,
    /// keepalived's automatic rule preferences, shared by every rule of
    /// the file.
    rule_priorities: crate::RulePriorities,
}

/// A `virtual_routes` / `virtual_rules` line lbha does not add: an error
/// when lbha lacks the option, a warning when keepalived drops the line
/// too (the same meaning: neither adds it).
fn route_error(
    result: Result<(), crate::RouteError>,
    entry: &Statement,
    kw: &str,
    context: &str,
    cx: &mut Cx,
) {
    let what = if kw == "virtual_routes" {
        "route"
    } else {
        "rule"
    };
    match result {
        Ok(()) => {}
        Err(e @ crate::RouteError::Unsupported(_)) => cx.error(
            entry.line(),
            format!(
                "{context}`{kw}` `{}`: {e}; the {what} would not follow the master on failover",
                entry.raw.trim()
            ),
        ),
        Err(crate::RouteError::Dropped(why)) => cx.warn(
            entry.line(),
            format!(
                "{context}`{kw}` `{}`: {why}; keepalived drops this {what}, and so does lbha",
                entry.raw.trim()
            ),
        ),
    }
}

/// `notify_master` ... `notify` of an instance or sync group: keepalived
/// keeps the first of each and ignores the others (with a warning here).
fn set_notify(notify: &mut Notify, item: &Statement, command: String, context: &str, cx: &mut Cx) {
    let kw = item.keyword();
    let slot = match kw {
        "notify_master" => &mut notify.master,
        "notify_backup" => &mut notify.backup,
        "notify_fault" => &mut notify.fault,
        "notify_stop" => &mut notify.stop,
        _ => &mut notify.any,
    };
    if slot.is_some() {
        cx.warn(
            item.line(),
            format!("{context}`{kw}` given again; keepalived keeps the first and ignores this one"),
        );
    } else {
        *slot = Some(command);
    }
}

/// keepalived's `check_true_false` for `KEYWORD [true|false]` (no word:
/// true).
fn true_false(item: &Statement, context: &str, cx: &mut Cx) -> Option<bool> {
    cx.no_block(item, context);
    match item.args().first().map(|w| w.text.as_str()) {
        None | Some("true" | "on" | "yes") => Some(true),
        Some("false" | "off" | "no") => Some(false),
        Some(other) => {
            cx.error(
                item.line(),
                format!(
                    "{context}`{}` must be true or false (got `{other}`); keepalived ignores it",
                    item.keyword()
                ),
            );
            None
        }
    }
}

/// A notify FIFO of global_defs as read.
#[derive(Default)]
struct PendingFifo {
    path: Option<String>,
    owner: Option<String>,
    group: Option<String>,
    script: Option<(String, usize)>,
    line: usize,
}

/// A `vrrp_sync_group` as read, before its members are matched with the
/// instances (keepalived's `vrrp_sync_set_group`).
struct PendingGroup {
    group: SyncGroup,
    /// (member name, line)
    members: Vec<(String, usize)>,
    tracks: Vec<TrackRef>,
    track_interfaces: Vec<(String, Weight, usize)>,
    track_files: Vec<track_file::FileTrack>,
    notify_priority_changes: Option<bool>,
    /// `global_tracking` / `sync_group_tracking_weight`: the members keep
    /// their own weighted tracking.
    tracking_weight: bool,
    lines: FieldLines,
}

impl Builder {
    fn top_level(&mut self, s: &Statement, cx: &mut Cx) {
        let kw = s.keyword();
        if let Some(reason) = dangerous_top_level(kw) {
            cx.error(s.line(), format!("`{kw}` is not supported: {reason}"));
            return;
        }
        match kw {
            "global_defs" => self.global_defs(s, cx),
            "vrrp_script" => self.vrrp_script(s, cx),
            "vrrp_instance" => self.vrrp_instance(s, cx),
            "vrrp_sync_group" => self.vrrp_sync_group(s, cx),
            "track_file" | "vrrp_track_file" => {
                if let Some((file, fl)) = track_file::definition(s, cx) {
                    if self.track_files.iter().any(|(f, _)| f.name == file.name) {
                        cx.warn(
                            s.line(),
                            format!("`{kw} {}` defined again; keepalived finds the first one, and so does lbha", file.name),
                        );
                    } else {
                        self.track_files.push((file, fl));
                    }
                }
            }
            "static_rules" => {
                // Ignored, but numbered as keepalived numbers them: a rule
                // without a preference takes the next number, so the
                // virtual rules after it get keepalived's numbers.
                if let Some(block) = &s.block {
                    for entry in block {
                        let words: Vec<&str> =
                            entry.words.iter().map(|w| w.text.as_str()).collect();
                        let _ = crate::parse_rule(&words, &mut self.rule_priorities, &mut Vec::new());
                    }
                }
                cx.warn(
                    s.line(),
                    format!(
                        "unsupported block `{kw}` ignored: keepalived sets these at start whatever the VRRP state, so they belong in the system's network configuration"
                    ),
                );
            }
            "static_ipaddress" | "static_routes" => cx.warn(
                s.line(),
                format!(
                    "unsupported block `{kw}` ignored: keepalived sets these at start whatever the VRRP state, so they belong in the system's network configuration"
                ),
            ),
            _ => cx.unsupported(s, "", keywords::TOP_LEVEL),
        }
    }

    /// A notify-style command, `KEYWORD COMMAND [user [group]]` (keepalived's
    /// `notify_*` and `*notify_fifo_script`): its command line and the words
    /// after it, the user they name kept for the `script_user` check as
    /// `what`.
    fn notify_command(
        &mut self,
        item: &Statement,
        context: &str,
        what: String,
        cx: &mut Cx,
    ) -> Option<(String, Vec<String>)> {
        cx.no_block(item, context);
        let (command, user) = script_words(item, context, cx)?;
        if let [name, rest @ ..] = user.as_slice() {
            self.script_users.push(ScriptUser {
                user: name.clone(),
                group: rest.first().cloned(),
                what,
                line: item.line(),
            });
        }
        Some((command, user))
    }

    fn global_defs(&mut self, s: &Statement, cx: &mut Cx) {
        let context = "global_defs: ";
        if !s.args().is_empty() {
            cx.extra_words(s.line(), s.args(), context, "global_defs");
        }
        let Some(block) = &s.block else {
            cx.error(s.line(), "`global_defs` needs a `{ ... }` block".into());
            return;
        };
        self.global_lines.table.get_or_insert(s.line());
        for item in block {
            let kw = item.keyword();
            let line = item.line();
            if let Some(reason) = dangerous_global(kw) {
                cx.error(line, format!("{context}`{kw}` is not supported: {reason}"));
                continue;
            }
            match kw {
                "enable_script_security" => {
                    cx.no_args(item, context);
                    self.global.script_security = true;
                }
                "script_user" => {
                    cx.no_block(item, context);
                    self.global_lines.set("script_user", line);
                    self.global_lines.set("script_group", line);
                    match item.args() {
                        [] => cx.error(line, format!("{context}`script_user` needs a user")),
                        [user, rest @ ..] => {
                            self.global.script_user = Some(user.text.clone());
                            self.global.script_group = None;
                            if let [group, extra @ ..] = rest {
                                self.global.script_group = Some(group.text.clone());
                                if !extra.is_empty() {
                                    cx.extra_words(line, extra, context, "script_user");
                                }
                            }
                        }
                    }
                }
                "vrrp_version" => {
                    self.global_lines.set("vrrp_version", line);
                    match cx.int(item, context, 0, 255) {
                        Some(v) => self.global.vrrp_version = v as u8,
                        None => self.global_lines.mark_bad("vrrp_version"),
                    }
                }
                "vrrp_down_timer_adverts" => {
                    if let Some(n) = down_timer_adverts(item, context, cx) {
                        self.down_timer_adverts = Some(n);
                    }
                }
                "vrrp_strict" => {
                    cx.no_args(item, context);
                    self.strict = true;
                }
                "vrrp_lower_prio_no_advert" => {
                    if let Some(on) = true_false(item, context, cx) {
                        self.lower_prio_no_advert = on;
                    }
                }
                "vrrp_higher_prio_send_advert" => {
                    if let Some(on) = true_false(item, context, cx) {
                        self.higher_prio_send_advert = on;
                    }
                }
                "vrrp_garp_master_delay" => {
                    if let Some(d) = garp_delay(item, context, cx) {
                        self.garp.master_delay = d;
                    }
                }
                "vrrp_garp_master_repeat" => {
                    if let Some(n) = garp_repeat(item, context, cx, 1) {
                        self.garp.master_repeat = n;
                    }
                }
                "vrrp_garp_master_refresh" => {
                    self.garp.master_refresh = garp_refresh(item, context, cx);
                }
                "vrrp_garp_master_refresh_repeat" => {
                    if let Some(n) = garp_repeat(item, context, cx, 1) {
                        self.garp.master_refresh_repeat = n;
                    }
                }
                "vrrp_garp_lower_prio_delay" => {
                    if let Some(d) = garp_delay(item, context, cx) {
                        self.garp.lower_prio_delay = Some(d);
                    }
                }
                "vrrp_garp_lower_prio_repeat" => {
                    if let Some(n) = garp_repeat(item, context, cx, 0) {
                        self.garp.lower_prio_repeat = Some(n);
                    }
                }
                "vrrp_min_garp" => {
                    cx.no_block(item, context);
                    match item.args().first().map(|w| w.text.as_str()) {
                        None | Some("true" | "on" | "yes") => self.garp.minimal(),
                        Some("false" | "off" | "no") => {}
                        Some(other) => cx.warn(
                            line,
                            format!("{context}`vrrp_min_garp` must be true or false (got `{other}`); keepalived ignores it, and so does lbha"),
                        ),
                    }
                }
                "vrrp_notify_priority_changes" => {
                    if let Some(on) = true_false(item, context, cx) {
                        self.notify_priority_changes = on;
                    }
                }
                "notify_fifo" | "vrrp_notify_fifo" => {
                    cx.no_block(item, context);
                    match item.args() {
                        [] => cx.error(line, format!("{context}`{kw}` needs a FIFO path")),
                        [path, rest @ ..] => {
                            let slot = usize::from(kw == "vrrp_notify_fifo");
                            let fifo = &mut self.fifos[slot];
                            fifo.path = Some(path.text.clone());
                            fifo.owner = rest.first().map(|w| w.text.clone());
                            fifo.group = rest.get(1).map(|w| w.text.clone());
                            if rest.len() > 2 {
                                cx.extra_words(line, &rest[2..], context, "PATH [user [group]]");
                            }
                            fifo.line = line;
                        }
                    }
                }
                "notify_fifo_script" | "vrrp_notify_fifo_script" => {
                    let what = format!("global_defs `{kw}`");
                    let Some((command, _)) = self.notify_command(item, context, what, cx) else {
                        continue;
                    };
                    let slot = usize::from(kw == "vrrp_notify_fifo_script");
                    self.fifos[slot].script = Some((command, line));
                }
                // What lbha does anyway: with unicast peers, only their
                // adverts are accepted (unless --no-check-unicast-src).
                "vrrp_check_unicast_src" => cx.no_args(item, context),
                _ if keywords::GLOBAL_DEFS.contains(&kw) => {
                    cx.warn(line, format!("{context}`{kw}` ignored"));
                }
                _ => cx.unknown(item, context),
            }
        }
    }

    fn vrrp_script(&mut self, s: &Statement, cx: &mut Cx) {
        let (name, mut fl) = block_name(s, cx, "vrrp_script");
        let context = format!("vrrp_script `{name}`: ");
        let context = context.as_str();
        let mut check = Check {
            name,
            script: String::new(),
            probe: None,
            interval: Duration::from_secs(1),
            timeout: Duration::ZERO,
            weight: 0,
            weight_reverse: false,
            rise: 1,
            fall: 1,
            init_fail: false,
        };
        let mut timeout = None;
        let mut has_script = false;
        let block = block_of(s, cx, context);
        let mut seen = HashSet::new();
        for item in block {
            let kw = item.keyword();
            let line = item.line();
            if !seen.insert(kw) && keywords::SCRIPT.contains(&kw) {
                cx.warn(
                    line,
                    format!("{context}`{kw}` given again; the last one is used"),
                );
            }
            match kw {
                "script" => {
                    cx.no_block(item, context);
                    fl.set("script", line);
                    match script_words(item, context, cx) {
                        Some((command, extra)) => {
                            if !extra.is_empty() {
                                cx.warn(
                                    line,
                                    format!(
                                        "{context}`script`: keepalived runs only `{command}` and ignores `{}`; quote the whole command line to pass arguments",
                                        extra.join(" ")
                                    ),
                                );
                            }
                            check.script = command;
                            has_script = true;
                        }
                        None => fl.mark_bad("script"),
                    }
                }
                "interval" => {
                    fl.set("interval", line);
                    match cx.whole_secs(item, context) {
                        Some(d) => check.interval = d,
                        None => fl.mark_bad("interval"),
                    }
                }
                "timeout" => {
                    fl.set("timeout", line);
                    match cx.whole_secs(item, context) {
                        Some(d) => timeout = Some(d),
                        None => fl.mark_bad("timeout"),
                    }
                }
                "weight" => {
                    cx.no_block(item, context);
                    fl.set("weight", line);
                    match parse_weight(item.args(), line, context, cx) {
                        Some((weight, reverse)) => {
                            check.weight = weight;
                            check.weight_reverse = reverse;
                        }
                        None => fl.mark_bad("weight"),
                    }
                }
                "rise" | "fall" => {
                    fl.set(kw, line);
                    match cx.int(item, context, 1, i32::MAX.into()) {
                        Some(n) if kw == "rise" => check.rise = n as u32,
                        Some(n) => check.fall = n as u32,
                        None => fl.mark_bad(kw),
                    }
                }
                "init_fail" => {
                    cx.no_args(item, context);
                    check.init_fail = true;
                }
                "user" => {
                    cx.no_block(item, context);
                    match item.args() {
                        [] => cx.error(line, format!("{context}`user` needs a user")),
                        [user, rest @ ..] => self.script_users.push(ScriptUser {
                            user: user.text.clone(),
                            group: rest.first().map(|g| g.text.clone()),
                            what: format!("vrrp_script `{}`", check.name),
                            line,
                        }),
                    }
                }
                _ => cx.unknown(item, context),
            }
        }
        if !has_script && !fl.is_bad("script") {
            // keepalived removes it (and every `track_script` of it): so
            // does lbha, saying so.
            cx.warn(
                s.line(),
                format!(
                    "{context}no `script`: keepalived removes this vrrp_script and the instances tracking it do not track it; lbha does the same"
                ),
            );
            self.removed_scripts.insert(check.name);
            return;
        }
        // keepalived: no timeout (or 0) means the interval.
        check.timeout = timeout.unwrap_or(check.interval);
        self.checks.push((check, fl));
    }

    fn vrrp_sync_group(&mut self, s: &Statement, cx: &mut Cx) {
        let (name, fl) = block_name(s, cx, "vrrp_sync_group");
        let context = format!("vrrp_sync_group `{name}`: ");
        let context = context.as_str();
        if self.sync_groups.iter().any(|g| g.group.name == name) {
            cx.error(
                s.line(),
                format!("{context}defined twice; keepalived skips the second block"),
            );
            return;
        }
        let mut pending = PendingGroup {
            group: SyncGroup {
                name,
                members: Vec::new(),
                notify: Notify::default(),
            },
            members: Vec::new(),
            tracks: Vec::new(),
            track_interfaces: Vec::new(),
            track_files: Vec::new(),
            notify_priority_changes: None,
            tracking_weight: false,
            lines: fl,
        };
        let mut group_seen = false;
        for item in block_of(s, cx, context) {
            let kw = item.keyword();
            let line = item.line();
            match kw {
                "group" => {
                    if group_seen {
                        cx.warn(
                            line,
                            format!("{context}`group` given again; keepalived ignores this one"),
                        );
                        continue;
                    }
                    group_seen = true;
                    pending.lines.set("members", line);
                    let entries = list_block(item, context, cx);
                    if entries.is_empty() {
                        cx.warn(line, format!("{context}empty `group` block"));
                    }
                    for entry in entries {
                        // keepalived reads every word of the block as a name.
                        for word in &entry.words {
                            pending.members.push((word.text.clone(), word.line));
                        }
                    }
                }
                "track_script" => pending.tracks.extend(track_script_block(item, context, cx)),
                "track_interface" => pending
                    .track_interfaces
                    .extend(track_interface_block(item, context, cx)),
                "track_file" => {
                    let tracked = track_file::block(item, &self.track_files, context, cx);
                    track_file::add(&mut pending.track_files, tracked, context, cx);
                }
                "track_process" | "track_bfd" => cx.error(
                    line,
                    format!(
                        "{context}`{kw}` is not supported: not implemented: the group would stay master while what it tracks is down"
                    ),
                ),
                "global_tracking" | "sync_group_tracking_weight" => {
                    cx.no_args(item, context);
                    pending.tracking_weight = true;
                }
                "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" | "notify" => {
                    let what = format!("vrrp_sync_group `{}` `{kw}`", pending.group.name);
                    let Some((command, _)) = self.notify_command(item, context, what, cx) else {
                        continue;
                    };
                    pending.lines.set("notify", line);
                    set_notify(&mut pending.group.notify, item, command, context, cx);
                }
                "notify_priority_changes" => {
                    if let Some(on) = true_false(item, context, cx) {
                        pending.notify_priority_changes = Some(on);
                    }
                }
                "smtp_alert" => {
                    cx.warn(line, format!("{context}`{kw}` ignored"));
                }
                _ => cx.unknown(item, context),
            }
        }
        self.sync_groups.push(pending);
    }

    fn vrrp_instance(&mut self, s: &Statement, cx: &mut Cx) {
        let (name, mut fl) = block_name(s, cx, "vrrp_instance");
        let context = format!("vrrp_instance `{name}`: ");
        let context = context.as_str();
        let mut inst = Instance {
            name,
            interface: String::new(),
            vrid: 0,
            priority: 100,
            version: 2,
            advert_interval: Duration::from_secs(1),
            initial_state: InitialState::Backup,
            preempt: true,
            preempt_delay: Duration::ZERO,
            unicast_src: None,
            unicast_peers: Vec::new(),
            // On by default in lbha, unlike keepalived: see the README.
            check_unicast_src: true,
            down_timer_adverts: DEFAULT_DOWN_TIMER_ADVERTS,
            auth_pass: None,
            auth_type: AuthType::Pass,
            virtual_addresses: Vec::new(),
            virtual_routes: Vec::new(),
            virtual_rules: Vec::new(),
            track: Vec::new(),
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
            vmac: None,
            // keepalived copies the global settings read so far when the
            // instance's block opens (`alloc_vrrp`).
            garp: self.garp.instance_defaults(),
        };
        let mut pending = PendingInstance {
            instance: inst.clone(),
            priority: None,
            state: None,
            version: None,
            down_timer_adverts: None,
            strict: None,
            accept: None,
            lower_prio_no_advert: None,
            higher_prio_send_advert: None,
            nopreempt: false,
            garp_lower_prio_repeat: None,
            garp_lower_prio_delay: None,
            family: None,
            tracks: Vec::new(),
            track_interfaces: Vec::new(),
            track_files: Vec::new(),
            notify_priority_changes: None,
            vmac: None,
            xmit_base: None,
            lines: FieldLines::default(),
        };
        let mut has_vrid = false;
        let block = block_of(s, cx, context);
        let mut seen = HashSet::new();
        for item in block {
            let kw = item.keyword();
            let line = item.line();
            if let Some(reason) = dangerous_instance(kw) {
                cx.error(line, format!("{context}`{kw}` is not supported: {reason}"));
                continue;
            }
            let repeatable = matches!(
                kw,
                "unicast_peer"
                    | "virtual_ipaddress"
                    | "virtual_routes"
                    | "virtual_rules"
                    | "track_script"
                    | "track_interface"
                    | "track_file"
                    | "authentication"
                    | "notify_master"
                    | "notify_backup"
                    | "notify_fault"
                    | "notify_stop"
                    | "notify"
                    | "state"
            );
            if !repeatable && !seen.insert(kw) && keywords::INSTANCE.contains(&kw) {
                cx.warn(
                    line,
                    format!("{context}`{kw}` given again; the last one is used"),
                );
            }
            match kw {
                "interface" => {
                    fl.set("interface", line);
                    if let Some(w) = cx.one_arg(item, context) {
                        inst.interface = w.text.clone();
                    } else {
                        fl.mark_bad("interface");
                    }
                }
                "state" => {
                    let Some(w) = cx.one_arg(item, context) else {
                        fl.mark_bad("initial_state");
                        continue;
                    };
                    // keepalived compares exactly: `master` is no state.
                    match (w.text.as_str(), pending.state) {
                        ("MASTER", _) => {
                            fl.set("initial_state", line);
                            pending.state = Some(InitialState::Master);
                        }
                        ("BACKUP", Some(InitialState::Master)) => cx.warn(
                            line,
                            format!(
                                "{context}`state BACKUP` after `state MASTER` ignored, as keepalived ignores it"
                            ),
                        ),
                        ("BACKUP", _) => {
                            fl.set("initial_state", line);
                            pending.state = Some(InitialState::Backup);
                        }
                        (other, _) => {
                            fl.set("initial_state", line);
                            cx.error(
                                w.line,
                                format!(
                                    "{context}`state` must be MASTER or BACKUP, in capitals as keepalived reads it (got `{other}`; keepalived would start it as BACKUP)"
                                ),
                            );
                            fl.mark_bad("initial_state");
                        }
                    }
                }
                "priority" => {
                    fl.set("priority", line);
                    // keepalived: a priority it cannot read (not a number,
                    // or outside 1..=255) is reported and replaced by its
                    // default 100, even with `state MASTER`.
                    if let Some(word) = cx.one_arg(item, context) {
                        match word.text.parse::<i64>() {
                            Ok(p) if (1..=255).contains(&p) => pending.priority = Some(p as u8),
                            _ => {
                                cx.warn(
                                    word.line,
                                    format!(
                                        "{context}`priority` must be 1..=255 (got `{}`); keepalived uses its default 100, and so does lbha",
                                        word.text
                                    ),
                                );
                                pending.priority = Some(100);
                            }
                        }
                    } else {
                        fl.mark_bad("priority");
                    }
                }
                "virtual_router_id" => {
                    fl.set("vrid", line);
                    has_vrid = true;
                    match cx.int(item, context, 1, 255) {
                        Some(v) => inst.vrid = v as u8,
                        None => fl.mark_bad("vrid"),
                    }
                }
                "advert_int" => {
                    fl.set("advert_interval", line);
                    match cx.secs(item, context) {
                        Some(d) => inst.advert_interval = d,
                        None => fl.mark_bad("advert_interval"),
                    }
                }
                "version" => {
                    fl.set("version", line);
                    match cx.int(item, context, 0, 255) {
                        // keepalived's vrrp_version_handler: an instance
                        // already known to be IPv6 keeps VRRPv3.
                        Some(2) if pending.family == Some(Family::V6) => cx.warn(
                            line,
                            format!(
                                "{context}`version 2` after IPv6 addresses (or `native_ipv6`) ignored, as keepalived ignores it: IPv6 runs VRRPv3"
                            ),
                        ),
                        Some(v) => pending.version = Some(v as u8),
                        None => fl.mark_bad("version"),
                    }
                }
                "native_ipv6" => {
                    cx.no_args(item, context);
                    if pending.family == Some(Family::V4) {
                        cx.warn(
                            line,
                            format!(
                                "{context}`native_ipv6` after IPv4 addresses ignored, as keepalived ignores it (it reports \"Cannot specify native_ipv6 with IPv4 addresses\")"
                            ),
                        );
                    } else {
                        fl.set("version", line);
                        pending.family = Some(Family::V6);
                        pending.version = Some(3);
                    }
                }
                "unicast_src_ip" | "mcast_src_ip" => {
                    fl.set("unicast_src", line);
                    let src = cx
                        .one_arg(item, context)
                        .and_then(|w| cx.ip(w, context, kw))
                        .filter(|ip| same_family(&mut pending.family, *ip, line, context, kw, cx));
                    match src {
                        Some(ip) => inst.unicast_src = Some(ip),
                        None => fl.mark_bad("unicast_src"),
                    }
                }
                "unicast_peer" => {
                    fl.set("unicast_peers", line);
                    for peer in list_block(item, context, cx) {
                        match peer.args() {
                            [] => {}
                            [option, ..]
                                if option.text == "min_ttl" || option.text == "max_ttl" =>
                            {
                                cx.error(
                                    peer.line(),
                                    format!(
                                        "{context}`unicast_peer` `{}` is not supported: not implemented: lbha does not check a peer's TTL range, so adverts keepalived would drop would count",
                                        option.text
                                    ),
                                );
                            }
                            rest => cx.extra_words(peer.line(), rest, context, peer.keyword()),
                        }
                        // An unreadable peer is reported here and left out,
                        // so validation does not report it again.
                        if let Some(ip) = cx.ip(&peer.words[0], context, kw).filter(|ip| {
                            same_family(&mut pending.family, *ip, peer.line(), context, kw, cx)
                        }) {
                            fl.set(
                                format!("unicast_peers[{}]", inst.unicast_peers.len()),
                                peer.line(),
                            );
                            inst.unicast_peers.push(ip);
                        }
                    }
                }
                "garp_master_delay" => {
                    if let Some(d) = garp_delay(item, context, cx) {
                        inst.garp.master_delay = d;
                    }
                }
                "garp_master_repeat" => {
                    if let Some(n) = garp_repeat(item, context, cx, 1) {
                        inst.garp.master_repeat = n;
                    }
                }
                "garp_master_refresh" => {
                    inst.garp.master_refresh = garp_refresh(item, context, cx);
                }
                "garp_master_refresh_repeat" => {
                    if let Some(n) = garp_repeat(item, context, cx, 1) {
                        inst.garp.master_refresh_repeat = n;
                    }
                }
                "garp_lower_prio_delay" => {
                    fl.set("garp_lower_prio_delay", line);
                    if let Some(d) = garp_delay(item, context, cx) {
                        pending.garp_lower_prio_delay = Some(d);
                    }
                }
                "garp_lower_prio_repeat" => {
                    fl.set("garp_lower_prio_repeat", line);
                    if let Some(n) = garp_repeat(item, context, cx, 0) {
                        pending.garp_lower_prio_repeat = Some(n);
                    }
                }
                "check_unicast_src" => {
                    cx.no_args(item, context);
                    fl.set("check_unicast_src", line);
                    inst.check_unicast_src = true;
                }
                "lower_prio_no_advert" => {
                    fl.set("lower_prio_no_advert", line);
                    if let Some(on) = true_false(item, context, cx) {
                        pending.lower_prio_no_advert = Some(on);
                    }
                }
                "higher_prio_send_advert" => {
                    fl.set("higher_prio_send_advert", line);
                    if let Some(on) = true_false(item, context, cx) {
                        pending.higher_prio_send_advert = Some(on);
                    }
                }
                "unicast_ttl" => {
                    fl.set("unicast_ttl", line);
                    match cx.int(item, context, 0, 255) {
                        Some(ttl) => inst.unicast_ttl = Some(ttl as u8),
                        None => fl.mark_bad("unicast_ttl"),
                    }
                }
                "down_timer_adverts" => {
                    fl.set("down_timer_adverts", line);
                    match down_timer_adverts(item, context, cx) {
                        Some(n) => pending.down_timer_adverts = Some(n),
                        None => fl.mark_bad("down_timer_adverts"),
                    }
                }
                "authentication" => {
                    fl.set("auth_pass", line);
                    fl.set("auth_type", line);
                    match authentication(item, context, cx) {
                        Ok(auth) => {
                            inst.auth_type = auth.as_ref().map_or(AuthType::Pass, |a| a.1);
                            inst.auth_pass = auth.map(|a| a.0);
                        }
                        Err(()) => fl.mark_bad("auth_pass"),
                    }
                }
                "track_script" => {
                    fl.set("track", line);
                    pending.tracks.extend(track_script_block(item, context, cx));
                }
                "track_interface" => {
                    fl.set("track_interfaces", line);
                    pending
                        .track_interfaces
                        .extend(track_interface_block(item, context, cx));
                }
                "notify_priority_changes" => {
                    if let Some(on) = true_false(item, context, cx) {
                        pending.notify_priority_changes = Some(on);
                    }
                }
                "track_file" => {
                    fl.set("track_files", line);
                    let tracked = track_file::block(item, &self.track_files, context, cx);
                    track_file::add(&mut pending.track_files, tracked, context, cx);
                }
                "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" | "notify" => {
                    let what = format!("vrrp_instance `{}` `{kw}`", inst.name);
                    let Some((command, user)) = self.notify_command(item, context, what, cx) else {
                        continue;
                    };
                    // `COMMAND user group extra...`
                    if user.len() > 2 {
                        cx.warn(
                            line,
                            format!(
                                "{context}`{kw}`: words after the user and group ignored (keepalived ignores them too)"
                            ),
                        );
                    }
                    fl.set("notify", line);
                    set_notify(&mut inst.notify, item, command, context, cx);
                }
                "nopreempt" => {
                    cx.no_args(item, context);
                    fl.set("preempt", line);
                    pending.nopreempt = true;
                }
                "preempt" => {
                    cx.no_args(item, context);
                    pending.nopreempt = false;
                }
                "preempt_delay" => {
                    fl.set("preempt_delay", line);
                    match cx.secs(item, context) {
                        Some(d) if d <= Duration::from_secs(1000) => inst.preempt_delay = d,
                        Some(_) => {
                            cx.error(
                                line,
                                format!("{context}`preempt_delay` must be 0..=1000 seconds"),
                            );
                            fl.mark_bad("preempt_delay");
                        }
                        None => fl.mark_bad("preempt_delay"),
                    }
                }
                "strict_mode" => {
                    cx.no_block(item, context);
                    fl.set("strict_mode", line);
                    match item.args().first().map(|w| w.text.as_str()) {
                        None | Some("true" | "on" | "yes") => pending.strict = Some(true),
                        Some("false" | "off" | "no") => pending.strict = Some(false),
                        Some(other) => cx.error(
                            line,
                            format!("{context}`strict_mode` must be true or false (got `{other}`)"),
                        ),
                    }
                }
                "accept" => {
                    cx.no_args(item, context);
                    fl.set("accept", line);
                    pending.accept = Some(true);
                }
                "no_accept" => {
                    cx.no_args(item, context);
                    fl.set("accept", line);
                    pending.accept = Some(false);
                }
                "virtual_ipaddress" | "virtual_ipaddress_excluded" => {
                    fl.set("virtual_addresses", line);
                    let excluded = kw == "virtual_ipaddress_excluded";
                    for vip in list_block(item, context, cx) {
                        // keepalived's alloc_vrrp_vip checks the family of
                        // each virtual address; alloc_vrrp_evip does not
                        // (excluded addresses are not in the adverts).
                        if let Some(mut addr) = virtual_address(vip, context, cx).filter(|a| {
                            excluded
                                || same_family(
                                    &mut pending.family,
                                    a.address,
                                    vip.line(),
                                    context,
                                    kw,
                                    cx,
                                )
                        }) {
                            addr.excluded = excluded;
                            fl.set(
                                format!("virtual_addresses[{}]", inst.virtual_addresses.len()),
                                vip.line(),
                            );
                            inst.virtual_addresses.push(addr);
                        }
                    }
                }
                "virtual_routes" | "virtual_rules" => {
                    fl.set(kw, line);
                    for entry in list_block(item, context, cx) {
                        let words: Vec<&str> =
                            entry.words.iter().map(|w| w.text.as_str()).collect();
                        let mut warnings = Vec::new();
                        let result = if kw == "virtual_routes" {
                            crate::parse_route(&words, &mut warnings)
                                .map(|r| inst.virtual_routes.push(r))
                        } else {
                            crate::parse_rule(&words, &mut self.rule_priorities, &mut warnings)
                                .map(|r| inst.virtual_rules.push(r))
                        };
                        for w in warnings {
                            cx.warn(entry.line(), format!("{context}`{kw}`: {w}"));
                        }
                        route_error(result, entry, kw, context, cx);
                    }
                    let tracked = if kw == "virtual_routes" {
                        inst.virtual_routes.iter().any(|r| !r.no_track)
                    } else {
                        inst.virtual_rules.iter().any(|r| !r.no_track)
                    };
                    if tracked {
                        cx.warn(
                            line,
                            format!("{context}`{kw}`: keepalived takes the instance out of MASTER when one it tracks (no `no_track`) is deleted behind its back; lbha does not watch them: one deleted stays deleted until the next takeover, as with `no_track`"),
                        );
                    }
                }
                "dont_track_primary" => {
                    cx.no_args(item, context);
                    inst.dont_track_primary = true;
                }
                "use_vmac" => {
                    cx.no_block(item, context);
                    pending.vmac = Some((use_vmac_name(item, context, cx), line));
                }
                "vmac_xmit_base" => {
                    cx.no_args(item, context);
                    pending.xmit_base = Some(line);
                }
                _ if keywords::INSTANCE.contains(&kw) => {
                    cx.unsupported(item, context, keywords::INSTANCE);
                }
                _ => cx.unknown(item, context),
            }
        }
        if !has_vrid {
            cx.error(s.line(), format!("{context}missing `virtual_router_id`"));
            fl.mark_bad("vrid");
        }
        pending.instance = inst;
        pending.lines = fl;
        self.instances.push(pending);
    }

    /// What the file means, as keepalived works it out once everything is
    /// read (its `vrrp_complete_instance`), and per-instance `track_script`
    /// weights turned into checks.
    fn resolve(self, cx: &mut Cx) -> (Config, Lines) {
        let Builder {
            global,
            global_lines,
            down_timer_adverts: default_down_timer,
            strict: global_strict,
            lower_prio_no_advert,
            higher_prio_send_advert,
            garp: global_garp,
            checks,
            instances,
            script_users,
            removed_scripts,
            sync_groups,
            track_files,
            fifos,
            notify_priority_changes,
            rule_priorities: _,
        } = self;
        let mut global = global;
        for (fifo, kw) in fifos.into_iter().zip(["notify_fifo", "vrrp_notify_fifo"]) {
            let Some(path) = fifo.path else {
                if let Some((_, line)) = fifo.script {
                    cx.warn(
                        line,
                        format!("global_defs: `{kw}_script` without `{kw}`: keepalived runs nothing, and neither does lbha"),
                    );
                }
                continue;
            };
            if global
                .notify_fifos
                .iter()
                .any(|f| f.path.as_os_str() == path.as_str())
            {
                cx.error(
                    fifo.line,
                    format!("global_defs: `{kw}` {path} is the `notify_fifo` too; keepalived needs every FIFO name to differ"),
                );
                continue;
            }
            global.notify_fifos.push(crate::NotifyFifo {
                path: path.into(),
                owner: fifo.owner,
                group: fifo.group,
                script: fifo.script.map(|(s, _)| s),
            });
        }
        check_script_users(&global, &script_users, cx);
        let (mut checks, mut check_lines): (Vec<Check>, Vec<FieldLines>) =
            checks.into_iter().unzip();
        let by_name: HashMap<String, usize> = checks
            .iter()
            .enumerate()
            .rev()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let (groups, group_of) = match_sync_groups(sync_groups, &instances, cx);
        let mut derived: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::new();
        let mut instance_lines = Vec::new();
        for mut pending in instances {
            // keepalived: the instance's own, else its group's, else global_defs'.
            let group = group_of.get(&pending.instance.name).map(|&g| &groups[g]);
            pending.instance.notify_priority_changes = pending
                .notify_priority_changes
                .or(group.and_then(|g| g.notify_priority_changes))
                .unwrap_or(notify_priority_changes);
            if let Some(group) = group {
                sync_member_tracking(&mut pending, group, &checks, &by_name, cx);
            }
            let defaults = InstanceDefaults {
                down_timer_adverts: default_down_timer,
                strict: global_strict,
                lower_prio_no_advert,
                higher_prio_send_advert,
                garp: &global_garp,
            };
            let (mut instance, (mut lines, tracks)) =
                complete_instance(pending, &global, &defaults, cx);
            let tracks = tracks.into_iter().filter(|track| {
                let removed =
                    removed_scripts.contains(&track.name) && !by_name.contains_key(&track.name);
                if removed {
                    cx.warn(
                        track.line,
                        format!(
                            "vrrp_instance `{}`: `track_script` {}: that vrrp_script has no `script`, so keepalived removed it and this instance does not track it (nor does lbha)",
                            instance.name, track.name
                        ),
                    );
                }
                !removed
            });
            for (i, track) in tracks.enumerate() {
                lines.set(format!("track[{i}]"), track.line);
                let name = match (track.weight, by_name.get(&track.name)) {
                    (Some((weight, reverse)), Some(&base))
                        if (weight, reverse)
                            != (checks[base].weight, checks[base].weight_reverse) =>
                    {
                        let name = derived_name(&track.name, weight, reverse);
                        if !derived.contains_key(&name) {
                            let mut check = checks[base].clone();
                            check.name = name.clone();
                            check.weight = weight;
                            check.weight_reverse = reverse;
                            let mut fl = check_lines[base].clone();
                            fl.set("weight", track.line);
                            derived.insert(name.clone(), checks.len());
                            checks.push(check);
                            check_lines.push(fl);
                        }
                        name
                    }
                    _ => track.name,
                };
                instance.track.push(name);
            }
            out.push(instance);
            instance_lines.push(lines);
        }
        sync_initial_states(&groups, &mut out, &instance_lines, cx);
        let lines = Lines {
            global: global_lines,
            checks: check_lines,
            instances: instance_lines,
            sync_groups: groups.iter().map(|g| g.lines.clone()).collect(),
            ..Lines::default()
        };
        (
            Config {
                global,
                checks,
                instances: out,
                // keepalived.conf has no such block; `--floating-ip` adds it.
                floating_ip: None,
                heartbeat: None,
                track_files: track_files.into_iter().map(|(f, _)| f).collect(),
                sync_groups: groups.iter().map(|g| g.group.clone()).collect(),
            },
            lines,
        )
    }
}

/// keepalived's `vrrp_complete_instance`, for what lbha models: the
/// defaults that depend on other settings, and what keepalived clears or
/// refuses (each with a warning or an error saying so).
/// keepalived starts a sync group's members in the group's state
/// (`vrrp_sync_set_group`, `vrrp_init_state`): MASTER only when every
/// member starts MASTER as the address owner, else BACKUP.
fn sync_initial_states(
    groups: &[PendingGroup],
    instances: &mut [Instance],
    lines: &[FieldLines],
    cx: &mut Cx,
) {
    for group in groups {
        let members = |i: &Instance| group.group.members.contains(&i.name);
        let all_owners = instances
            .iter()
            .filter(|i| members(i))
            .all(|i| i.initial_state == InitialState::Master && i.priority == 255);
        if all_owners {
            continue;
        }
        for (index, instance) in instances.iter_mut().enumerate() {
            if members(instance) && instance.initial_state == InitialState::Master {
                cx.warn(
                    lines.get(index).and_then(|l| l.line("initial_state")).unwrap_or(1),
                    format!(
                        "vrrp_instance `{}`: in sync group `{}`, whose members are not all address owners starting MASTER, keepalived starts it BACKUP, and so does lbha",
                        instance.name, group.group.name
                    ),
                );
                instance.initial_state = InitialState::Backup;
            }
        }
    }
}

/// keepalived's `vrrp_sync_set_group`: each group's members matched with the
/// instances (a name no instance has, or an instance already in another
/// group, is ignored with keepalived's warning), groups left without members
/// removed. Returns the groups kept and, per member, its group's index.
fn match_sync_groups(
    pending: Vec<PendingGroup>,
    instances: &[PendingInstance],
    cx: &mut Cx,
) -> (Vec<PendingGroup>, HashMap<String, usize>) {
    let mut kept = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    for mut group in pending {
        let context = format!("vrrp_sync_group `{}`: ", group.group.name);
        let index = kept.len();
        for (name, line) in std::mem::take(&mut group.members) {
            if !instances.iter().any(|i| i.instance.name == name) {
                cx.warn(
                    line,
                    format!("{context}no vrrp_instance `{name}`; keepalived ignores it, and so does lbha"),
                );
            } else if group_of.contains_key(&name) {
                cx.warn(
                    line,
                    format!("{context}vrrp_instance `{name}` is already in another sync group; keepalived ignores it here, and so does lbha"),
                );
            } else {
                group_of.insert(name.clone(), index);
                group.group.members.push(name);
            }
        }
        match group.group.members.len() {
            0 => {
                cx.warn(
                    group.lines.table.unwrap_or(1),
                    format!("{context}no member instance; keepalived removes the group, and so does lbha"),
                );
                continue;
            }
            1 => cx.warn(
                group.lines.table.unwrap_or(1),
                format!("{context}only 1 member instance: this probably isn't what you want (keepalived's warning)"),
            ),
            _ => {}
        }
        kept.push(group);
    }
    (kept, group_of)
}

/// keepalived's tracking rules for a sync group member
/// (`vrrp_complete_instance`, then `sync_group_tracking_init`): unless the
/// group has `global_tracking` (`sync_group_tracking_weight`), the member's
/// own weighted `track_script`s are dropped and its `track_interface`s lose
/// their weight (a tracked interface down means FAULT); then the group's own
/// tracking is added to every member, its weights cleared when a member is
/// the address owner (priority 255).
fn sync_member_tracking(
    pending: &mut PendingInstance,
    group: &PendingGroup,
    checks: &[Check],
    by_name: &HashMap<String, usize>,
    cx: &mut Cx,
) {
    let context = format!("vrrp_instance `{}`: ", pending.instance.name);
    let gname = &group.group.name;
    if !group.tracking_weight {
        pending.tracks.retain(|track| {
            let weight = track
                .weight
                .map(|(w, _)| w)
                .or_else(|| by_name.get(&track.name).map(|&i| checks[i].weight))
                .unwrap_or(0);
            if weight != 0 {
                cx.warn(
                    track.line,
                    format!("{context}tracked script `{}` has a weight and the instance is in sync group `{gname}`: keepalived ignores it, and so does lbha (`global_tracking` in the group keeps it)", track.name),
                );
            }
            weight == 0
        });
        for (name, weight, line) in &mut pending.track_interfaces {
            if weight.is_some_and(|(w, _)| w != 0) {
                cx.warn(
                    *line,
                    format!("{context}tracked interface `{name}`: its weight is ignored because the instance is in sync group `{gname}` (keepalived's rule: the interface down means FAULT; `global_tracking` in the group keeps the weight)"),
                );
                *weight = Some((0, false));
            }
        }
        let why = format!("sync group `{gname}`");
        track_file::unweight(&mut pending.track_files, &context, &why, cx);
    }
    let owner = pending.priority == Some(255);
    for track in &group.tracks {
        let weighted = track
            .weight
            .map(|(w, _)| w)
            .or_else(|| by_name.get(&track.name).map(|&i| checks[i].weight))
            .is_some_and(|w| w != 0);
        let weight = if owner && weighted {
            cx.warn(
                track.line,
                format!("sync group `{gname}`: tracked script `{}`: a member has priority 255, so keepalived clears its weight, and so does lbha", track.name),
            );
            Some((0, false))
        } else {
            track.weight
        };
        pending.tracks.push(TrackRef {
            name: track.name.clone(),
            weight,
            line: track.line,
        });
    }
    for (name, weight, line) in &group.track_interfaces {
        let weight = if owner { Some((0, false)) } else { *weight };
        pending.track_interfaces.push((name.clone(), weight, *line));
    }
    // keepalived's `add_obj_to_track_file`: a file the member tracks
    // itself takes the group's weight, unless the member's is 0.
    for (name, weight, reverse, line) in &group.track_files {
        let (weight, reverse) = if owner && *weight != 0 {
            cx.warn(
                *line,
                format!("sync group `{gname}`: tracked file `{name}`: a member has priority 255, so keepalived sets its weight to 0, and so does lbha"),
            );
            (0, *reverse)
        } else {
            (*weight, *reverse)
        };
        match pending.track_files.iter_mut().find(|t| &t.0 == name) {
            Some(own) => {
                if own.1 != 0 {
                    (own.1, own.2) = (weight, reverse);
                }
            }
            None => pending
                .track_files
                .push((name.clone(), weight, reverse, *line)),
        }
    }
}

/// What global_defs gives the instances that do not say otherwise.
struct InstanceDefaults<'a> {
    /// `vrrp_down_timer_adverts`.
    down_timer_adverts: Option<u8>,
    /// `vrrp_strict`.
    strict: bool,
    /// `vrrp_lower_prio_no_advert` / `vrrp_higher_prio_send_advert`.
    lower_prio_no_advert: bool,
    higher_prio_send_advert: bool,
    /// `vrrp_garp_*`.
    garp: &'a GlobalGarp,
}

fn complete_instance(
    pending: PendingInstance,
    global: &Global,
    defaults: &InstanceDefaults<'_>,
    cx: &mut Cx,
) -> (Instance, (FieldLines, Vec<TrackRef>)) {
    let PendingInstance {
        mut instance,
        priority,
        state,
        version,
        down_timer_adverts,
        strict,
        accept,
        lower_prio_no_advert,
        higher_prio_send_advert,
        nopreempt,
        garp_lower_prio_repeat,
        garp_lower_prio_delay,
        family,
        tracks,
        track_interfaces,
        mut track_files,
        notify_priority_changes: _,
        vmac,
        xmit_base,
        lines: fl,
    } = pending;
    let context = format!("vrrp_instance `{}`: ", instance.name);
    let at = |field: &str| fl.line(field).unwrap_or(1);
    let strict = strict.unwrap_or(defaults.strict);
    instance.version = match (family, version) {
        // keepalived's vrrp_complete_instance: IPv6 is VRRPv3 unless
        // `version 2` came before the addresses; strict mode then reports
        // it and uses 3, otherwise keepalived would run VRRPv2 over IPv6,
        // which validation refuses.
        (Some(Family::V6), Some(2)) if strict => {
            cx.warn(
                at("version"),
                format!("{context}IPv6 cannot use VRRP version 2; in strict mode keepalived reports it and uses version 3, and so does lbha"),
            );
            3
        }
        (Some(Family::V6), None) => 3,
        (_, version) => version.unwrap_or(global.vrrp_version),
    };
    if instance.virtual_addresses.iter().all(|v| v.excluded) && (instance.version == 3 || strict) {
        let why = if strict {
            "in strict mode"
        } else {
            "with VRRPv3"
        };
        cx.error(
            at("name"),
            format!(
                "{context}no `virtual_ipaddress`: keepalived requires at least one {why} and refuses to start"
            ),
        );
    }
    // No priority: from the state (a MASTER owns the addresses, 255).
    instance.priority = priority.unwrap_or(match state {
        Some(InitialState::Master) => 255,
        _ => 100,
    });
    let owner = instance.priority == 255;
    let derived = if owner {
        InitialState::Master
    } else {
        InitialState::Backup
    };
    instance.initial_state = match state {
        // No state: from the priority.
        None => derived,
        Some(s) if strict && s != derived => {
            cx.warn(
                at("initial_state"),
                format!(
                    "{context}in strict mode keepalived starts only the address owner (priority 255) as MASTER; it starts this one as {}, and so does lbha",
                    if owner { "MASTER" } else { "BACKUP" }
                ),
            );
            derived
        }
        Some(s) => s,
    };
    if instance.auth_pass.is_some() {
        if strict {
            cx.warn(
                at("auth_pass"),
                format!("{context}strict mode has no authentication; keepalived ignores it, and so does lbha"),
            );
            instance.auth_pass = None;
        } else if instance.version == 3 {
            cx.warn(
                at("auth_pass"),
                format!(
                    "{context}VRRPv3 has no authentication; keepalived ignores it, and so does lbha"
                ),
            );
            instance.auth_pass = None;
        } else if instance.auth_type == AuthType::Ah && instance.family() == Family::V6 {
            cx.warn(
                at("auth_type"),
                format!(
                    "{context}AH authentication is for IPv4 only; keepalived ignores it on IPv6, and so does lbha"
                ),
            );
            instance.auth_pass = None;
        } else if instance.auth_type == AuthType::Ah
            && instance.initial_state == InitialState::Master
            && !owner
        {
            // keepalived wants an advert's sequence number before it sends.
            cx.warn(
                at("initial_state"),
                format!(
                    "{context}`state MASTER` with AH authentication: keepalived starts a non-owner as BACKUP to learn the sequence number first, and so does lbha"
                ),
            );
            instance.initial_state = InitialState::Backup;
        }
    }
    if instance.auth_pass.is_none() {
        instance.auth_type = AuthType::Pass;
    }
    if strict && !instance.unicast_peers.is_empty() {
        cx.error(
            at("unicast_peers"),
            format!(
                "{context}keepalived refuses unicast peers in strict mode (on an interface that can multicast) and does not start"
            ),
        );
    }
    let mut preempt = !nopreempt;
    if owner && nopreempt {
        cx.warn(
            at("preempt"),
            format!("{context}`nopreempt` does not apply to the address owner (priority 255); keepalived clears it, and so does lbha"),
        );
        preempt = true;
    }
    if instance.initial_state == InitialState::Master {
        if !preempt {
            cx.warn(
                at("preempt"),
                format!(
                    "{context}`nopreempt` does not work with `state MASTER`: keepalived clears it (and preempts), and so does lbha; use `state BACKUP` on every node for nopreempt"
                ),
            );
            preempt = true;
        }
        if !instance.preempt_delay.is_zero() {
            cx.warn(
                at("preempt_delay"),
                format!("{context}`preempt_delay` does not work with `state MASTER`: keepalived clears it, and so does lbha"),
            );
            instance.preempt_delay = Duration::ZERO;
        }
    }
    if !instance.preempt_delay.is_zero() && (strict || !preempt) {
        let why = if strict { "strict mode" } else { "`nopreempt`" };
        cx.warn(
            at("preempt_delay"),
            format!("{context}`preempt_delay` does not work with {why}: keepalived clears it, and so does lbha"),
        );
        instance.preempt_delay = Duration::ZERO;
    }
    instance.preempt = preempt;
    instance.down_timer_adverts = down_timer_adverts
        .or(defaults.down_timer_adverts)
        .unwrap_or(DEFAULT_DOWN_TIMER_ADVERTS);
    if strict && instance.down_timer_adverts != DEFAULT_DOWN_TIMER_ADVERTS {
        cx.warn(
            at("down_timer_adverts"),
            format!("{context}strict mode uses {DEFAULT_DOWN_TIMER_ADVERTS} down timer adverts; keepalived resets it, and so does lbha"),
        );
        instance.down_timer_adverts = DEFAULT_DOWN_TIMER_ADVERTS;
    }
    // keepalived's vrrp_complete_instance: strict mode sends no
    // lower-priority repeats; otherwise unset ones come from global_defs
    // (whose own defaults are its master settings).
    let lower_prio = [
        (
            "garp_lower_prio_repeat",
            garp_lower_prio_repeat.is_some_and(|n| n > 0),
        ),
        (
            "garp_lower_prio_delay",
            garp_lower_prio_delay.is_some_and(|d| !d.is_zero()),
        ),
    ];
    for (keyword, set) in lower_prio {
        if strict && set {
            cx.warn(
                at(keyword),
                format!("{context}strict mode sends no repeated gratuitous ARPs after a lower-priority advert; keepalived resets `{keyword}` to 0, and so does lbha"),
            );
        }
    }
    let (global_repeat, global_delay) = defaults.garp.lower_prio();
    instance.garp.lower_prio_repeat = if strict {
        0
    } else {
        garp_lower_prio_repeat.unwrap_or(global_repeat)
    };
    instance.garp.lower_prio_delay = if strict {
        Duration::ZERO
    } else {
        garp_lower_prio_delay.unwrap_or(global_delay)
    };
    // keepalived's vrrp_complete_instance: strict mode never answers a
    // lower-priority advert and never sends one on hearing a higher
    // priority; otherwise unset ones come from global_defs.
    instance.lower_prio_no_advert = match lower_prio_no_advert {
        Some(false) if strict => {
            cx.warn(
                at("lower_prio_no_advert"),
                format!("{context}strict mode requires `lower_prio_no_advert`; keepalived sets it, and so does lbha"),
            );
            true
        }
        Some(on) => on,
        None => strict || defaults.lower_prio_no_advert,
    };
    instance.higher_prio_send_advert = match higher_prio_send_advert {
        Some(true) if strict => {
            cx.warn(
                at("higher_prio_send_advert"),
                format!("{context}strict mode requires `higher_prio_send_advert` to be clear; keepalived clears it, and so does lbha"),
            );
            false
        }
        Some(on) => on,
        None => !strict && defaults.higher_prio_send_advert,
    };
    // keepalived's vrrp_complete_instance: unset, accept mode is on for
    // the owner and off in strict mode; VRRPv2 strict resets it for a
    // non-owner (RFC 3768 has no accept mode).
    let mut accepts = accept.unwrap_or(owner || !strict);
    if accepts && !owner && strict && instance.version == 2 {
        cx.warn(
            fl.line("accept").unwrap_or(at("name")),
            format!(
                "{context}`accept` with VRRPv2 does not comply with RFC 3768 in strict mode; keepalived resets it to `no_accept`, and so does lbha"
            ),
        );
        accepts = false;
    }
    instance.vmac = complete_vmac(&instance, vmac, xmit_base, strict, &context, cx);
    instance.accept = accepts;
    for (name, weight, line) in track_interfaces {
        if name == instance.interface {
            cx.warn(
                line,
                format!(
                    "{context}`track_interface {name}` is the instance's own interface, which keepalived and lbha always track; ignored, as keepalived ignores it"
                ),
            );
        } else if let Some((weight, reverse)) = weight {
            if instance.track_interfaces.iter().any(|t| t.name == name) {
                cx.warn(
                    line,
                    format!("{context}`track_interface {name}` given again; the first one is used"),
                );
                continue;
            }
            instance.track_interfaces.push(crate::TrackInterface {
                name,
                weight,
                reverse,
            });
        }
    }
    if owner {
        track_file::unweight(
            &mut track_files,
            &context,
            "priority 255 (the address owner)",
            cx,
        );
    }
    instance.track_files = track_files
        .into_iter()
        .map(|(name, weight, reverse, _)| crate::TrackFileRef {
            name,
            weight: Some(weight),
            reverse: Some(reverse),
        })
        .collect();
    (instance, (fl, tracks))
}

/// A per-script `user [group]` lbha can honour: the one every script runs
/// as (`global_defs`' `script_user`, root without one).
fn check_script_users(global: &Global, users: &[ScriptUser], cx: &mut Cx) {
    let normal = |user: &str, group: Option<&str>| {
        // root's own group is what "no group" means for root.
        let group = group.filter(|g| !(user == "root" && *g == "root"));
        (user.to_string(), group.map(str::to_string))
    };
    let global_user = global.script_user.as_deref().unwrap_or("root");
    let expected = normal(global_user, global.script_group.as_deref());
    for u in users {
        if normal(&u.user, u.group.as_deref()) != expected {
            let given = match &u.group {
                Some(group) => format!("{} {group}", u.user),
                None => u.user.clone(),
            };
            cx.error(
                u.line,
                format!(
                    "{}: runs as `{given}`, which is not supported: not implemented: lbha runs every script as global_defs `script_user` ({global_user}); set that to the same user, or drop the per-script one",
                    u.what
                ),
            );
        }
    }
}

/// Name of the check derived from `base` for a `track_script` weight override.
fn derived_name(base: &str, weight: i32, reverse: bool) -> String {
    if reverse {
        format!("{base}:weight={weight}:reverse")
    } else {
        format!("{base}:weight={weight}")
    }
}

/// `down_timer_adverts N` / `vrrp_down_timer_adverts N`: keepalived's 1..=100.
/// global_defs' `vrrp_garp_*`: keepalived 2.2.7's defaults (`vrrp.h`),
/// which each instance copies when its block opens.
#[derive(Debug)]
struct GlobalGarp {
    master_repeat: u32,
    master_delay: Duration,
    master_refresh: Duration,
    master_refresh_repeat: u32,
    lower_prio_repeat: Option<u32>,
    lower_prio_delay: Option<Duration>,
}

impl Default for GlobalGarp {
    fn default() -> Self {
        let d = Garp::default();
        Self {
            master_repeat: d.master_repeat,
            master_delay: d.master_delay,
            master_refresh: d.master_refresh,
            master_refresh_repeat: d.master_refresh_repeat,
            lower_prio_repeat: None,
            lower_prio_delay: None,
        }
    }
}

impl GlobalGarp {
    /// An instance's settings before its own keywords (the lower-priority
    /// ones are filled in once the whole file is read).
    fn instance_defaults(&self) -> Garp {
        Garp {
            master_repeat: self.master_repeat,
            master_delay: self.master_delay,
            master_refresh: self.master_refresh,
            master_refresh_repeat: self.master_refresh_repeat,
            lower_prio_repeat: 0,
            lower_prio_delay: Duration::ZERO,
        }
    }

    /// The global lower-priority settings, defaulting (as keepalived's
    /// `vrrp_complete_init` does) to the final global master ones.
    fn lower_prio(&self) -> (u32, Duration) {
        (
            self.lower_prio_repeat.unwrap_or(self.master_repeat),
            self.lower_prio_delay.unwrap_or(self.master_delay),
        )
    }

    /// `vrrp_min_garp`: one announcement, no second burst, no refresh,
    /// leaving alone what was already set (keepalived compares with its
    /// defaults, so a value set to the default is overwritten too).
    fn minimal(&mut self) {
        let d = Garp::default();
        if self.master_repeat == d.master_repeat {
            self.master_repeat = 1;
        }
        if self.master_refresh == d.master_refresh {
            self.master_refresh = Duration::ZERO;
        }
        // keepalived sets the refresh repeat to 0 here; with no refresh it
        // never counts, and lbha keeps 1..: the same behaviour.
        if self.master_delay == d.master_delay {
            self.master_delay = Duration::ZERO;
        }
    }
}

/// A `garp_*` repeat count (keepalived reads 0..=UINT_MAX; `min` 1 for
/// the master counts, where keepalived reports a 0 and uses 1). A bad
/// value keepalived reports and ignores: so does lbha, with a warning.
fn garp_repeat(s: &Statement, context: &str, cx: &mut Cx, min: u32) -> Option<u32> {
    let kw = s.keyword();
    let word = cx.one_arg(s, context)?;
    let Ok(n) = word.text.parse::<u32>() else {
        cx.warn(
            word.line,
            format!(
                "{context}`{kw}` `{}` is not a count; keepalived ignores it, and so does lbha",
                word.text
            ),
        );
        return None;
    };
    if n < min {
        cx.warn(
            word.line,
            format!(
                "{context}`{kw}` must be at least {min}; keepalived uses {min}, and so does lbha"
            ),
        );
        return Some(min);
    }
    if n > Garp::MAX_REPEAT {
        cx.warn(
            word.line,
            format!(
                "{context}`{kw} {n}`: lbha sends at most {} per burst",
                Garp::MAX_REPEAT
            ),
        );
        return Some(Garp::MAX_REPEAT);
    }
    Some(n)
}

/// A `garp_*_delay` in whole seconds, as keepalived reads it; a bad one
/// keepalived reports and ignores, and so does lbha.
fn garp_delay(s: &Statement, context: &str, cx: &mut Cx) -> Option<Duration> {
    let kw = s.keyword();
    let word = cx.one_arg(s, context)?;
    match word.text.parse::<u32>() {
        Ok(n) if u64::from(n) <= u64::from(u32::MAX) / 1_000_000 => {
            Some(Duration::from_secs(n.into()))
        }
        _ => {
            cx.warn(
                word.line,
                format!("{context}`{kw}` `{}` is not a number of seconds; keepalived ignores it, and so does lbha", word.text),
            );
            None
        }
    }
}

/// `garp_master_refresh` in whole seconds; a bad value turns the refresh
/// off (keepalived's handler sets it to 0), with a warning.
fn garp_refresh(s: &Statement, context: &str, cx: &mut Cx) -> Duration {
    let kw = s.keyword();
    let Some(word) = cx.one_arg(s, context) else {
        return Duration::ZERO;
    };
    if let Ok(n) = word.text.parse::<u32>() {
        return Duration::from_secs(n.into());
    }
    cx.warn(
        word.line,
        format!("{context}`{kw}` `{}` is not a number of seconds; keepalived turns the refresh off, and so does lbha", word.text),
    );
    Duration::ZERO
}

fn down_timer_adverts(s: &Statement, context: &str, cx: &mut Cx) -> Option<u8> {
    let (min, max) = (
        *DOWN_TIMER_ADVERTS_RANGE.start(),
        *DOWN_TIMER_ADVERTS_RANGE.end(),
    );
    cx.int(s, context, min.into(), max.into()).map(|n| n as u8)
}

/// `N [reverse]` after `weight`.
fn parse_weight(args: &[Word], line: usize, context: &str, cx: &mut Cx) -> Option<(i32, bool)> {
    let [n, rest @ ..] = args else {
        cx.error(line, format!("{context}`weight` needs a number"));
        return None;
    };
    let weight = match n.text.parse::<i32>() {
        Ok(w) if (-253..=253).contains(&w) => w,
        _ => {
            cx.error(
                n.line,
                format!("{context}`weight` must be -253..=253 (got `{}`)", n.text),
            );
            return None;
        }
    };
    match rest {
        [] => Some((weight, false)),
        [r, extra @ ..] if r.text == "reverse" => {
            if !extra.is_empty() {
                cx.extra_words(line, extra, context, "reverse");
            }
            Some((weight, true))
        }
        extra => {
            cx.extra_words(line, extra, context, "weight");
            Some((weight, false))
        }
    }
}

/// One line of `virtual_ipaddress`, as keepalived's `alloc_ipaddress`
/// reads it: `ADDRESS[/PREFIX] [dev D] [scope S] [brd B|+|-] [label L]
/// [peer P] [flags]`.
fn virtual_address(vip: &Statement, context: &str, cx: &mut Cx) -> Option<VirtualAddress> {
    let kw = "virtual_ipaddress";
    let line = vip.line();
    let text = vip.keyword();
    let (addr_text, prefix_text) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let Ok(address) = addr_text.parse::<IpAddr>() else {
        cx.error(
            line,
            format!(
                "{context}`{kw}`: `{text}` is not an IPv4 or IPv6 address{}",
                undefined_hint(text)
            ),
        );
        return None;
    };
    let v6 = address.is_ipv6();
    let max = Family::of(address).max_prefix();
    let prefix = match prefix_text {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(p) if p <= max => p,
            _ => {
                cx.error(
                    line,
                    format!("{context}`{kw}`: `{text}`: prefix length must be 0..={max}"),
                );
                return None;
            }
        },
    };
    let mut vip_out = VirtualAddress::new(address, prefix);
    let mut broadcast: Option<String> = None;
    let args = vip.args();
    let mut i = 0;
    while i < args.len() {
        let option = args[i].text.as_str();
        let takes_value = matches!(
            option,
            "dev" | "scope" | "broadcast" | "brd" | "label" | "peer" | "preferred_lft"
        );
        let value = if takes_value {
            if let Some(v) = args.get(i + 1) {
                Some(v.text.clone())
            } else {
                cx.error(
                    line,
                    format!(
                        "{context}`{kw}` {text}: `{option}` needs a value (keepalived drops the address)"
                    ),
                );
                return None;
            }
        } else {
            None
        };
        match (option, value) {
            ("dev", Some(dev)) => {
                if vip_out.dev.is_some() {
                    cx.error(
                        line,
                        format!("{context}`{kw}` {text}: `dev` given twice (keepalived drops the address)"),
                    );
                    return None;
                }
                vip_out.dev = Some(dev);
            }
            ("scope", Some(scope)) => match crate::parse_scope(&scope) {
                Some(n) => vip_out.scope = Some(n).filter(|n| *n != 0),
                None => cx.error(
                    line,
                    format!("{context}`{kw}` {text}: unknown scope `{scope}`"),
                ),
            },
            ("broadcast" | "brd", Some(b)) => broadcast = Some(b),
            ("label", Some(label)) => {
                if label.len() >= 16 {
                    cx.error(
                        line,
                        format!(
                            "{context}`{kw}` {text}: `label {label}` is longer than 15 bytes (keepalived drops the address)"
                        ),
                    );
                    return None;
                }
                cx.warn(
                    line,
                    format!(
                        "{context}`{kw}` {text}: `label {label}` kept in the configuration, but lbha does not label addresses yet (the address itself moves as with keepalived)"
                    ),
                );
                vip_out.label = Some(label);
            }
            ("peer", Some(peer)) if v6 => cx.error(
                line,
                format!(
                    "{context}`{kw}` {text}: `peer {peer}` is not supported: not implemented: lbha does not add point-to-point addresses"
                ),
            ),
            ("peer", Some(peer)) => match peer.parse::<Ipv4Addr>() {
                Ok(peer) => {
                    if prefix != 32 {
                        cx.warn(
                            line,
                            format!(
                                "{context}`{kw}` {text}: a prefix with `peer` is ignored, as keepalived ignores it"
                            ),
                        );
                    }
                    vip_out.prefix = 32;
                    vip_out.peer = Some(peer);
                }
                Err(_) => cx.error(
                    line,
                    format!("{context}`{kw}` {text}: `peer {peer}` is not an IPv4 address"),
                ),
            },
            ("preferred_lft" | "home" | "-nodad" | "mngtmpaddr" | "autojoin", _) if !v6 => cx.warn(
                line,
                format!("{context}`{kw}` {text}: `{option}` ignored (it applies to IPv6 addresses only)"),
            ),
            ("-nodad", None) => cx.error(
                line,
                format!(
                    "{context}`{kw}` {text}: `-nodad` is not supported: not implemented: lbha always adds IPv6 virtual addresses with `nodad` (keepalived's default), so they skip Duplicate Address Detection"
                ),
            ),
            ("preferred_lft" | "home" | "mngtmpaddr" | "autojoin", _) => cx.error(
                line,
                format!(
                    "{context}`{kw}` {text}: `{option}` is not supported: not implemented: lbha would add the address without it"
                ),
            ),
            ("no_track", None) => cx.warn(
                line,
                format!(
                    "{context}`{kw}` {text}: `no_track` ignored: lbha does not watch for a virtual address being removed anyway"
                ),
            ),
            ("noprefixroute", None) => {
                cx.error(
                    line,
                    format!(
                        "{context}`{kw}` {text}: `noprefixroute` is not supported: not implemented: lbha would add the prefix route keepalived does not"
                    ),
                );
            }
            ("use_vmac", None) => {
                cx.error(
                    line,
                    format!(
                        "{context}`{kw}` {text}: `use_vmac` is not supported: not implemented: lbha creates no VRRP virtual MAC interface"
                    ),
                );
            }
            (other, _) => {
                cx.error(
                    line,
                    format!(
                        "{context}`{kw}` {text}: `{other}` is not an address option keepalived knows (it reports and ignores it)"
                    ),
                );
            }
        }
        i += if takes_value { 2 } else { 1 };
    }
    if let Some(b) = broadcast {
        if v6 {
            cx.error(
                line,
                format!(
                    "{context}`{kw}` {text}: `brd {b}`: IPv6 addresses have no broadcast address"
                ),
            );
            return None;
        }
        if vip_out.peer.is_some() {
            cx.warn(
                line,
                format!("{context}`{kw}` {text}: a broadcast with `peer` is ignored, as keepalived ignores it"),
            );
        } else {
            let computed = match b.as_str() {
                "+" | "-" if vip_out.prefix <= 30 => {
                    let mask = u32::MAX.checked_shr(vip_out.prefix.into()).unwrap_or(0);
                    let IpAddr::V4(v4) = address else {
                        unreachable!("IPv6 returned above")
                    };
                    let base = u32::from(v4);
                    Some(Ipv4Addr::from(if b == "+" {
                        base | mask
                    } else {
                        base & !mask
                    }))
                }
                "+" | "-" => {
                    cx.error(
                        line,
                        format!("{context}`{kw}` {text}: `brd {b}` needs a prefix of 30 or less"),
                    );
                    None
                }
                other => {
                    if let Ok(addr) = other.parse::<Ipv4Addr>() {
                        Some(addr)
                    } else {
                        cx.error(
                        line,
                        format!("{context}`{kw}` {text}: `brd {other}` is not an IPv4 address (keepalived drops the address)"),
                    );
                        return None;
                    }
                }
            };
            if let Some(addr) = computed {
                cx.warn(
                    line,
                    format!(
                        "{context}`{kw}` {text}: `brd {b}` kept in the configuration, but lbha does not set a broadcast address yet (the address itself moves as with keepalived)"
                    ),
                );
                vip_out.broadcast = Some(addr);
            }
        }
    }
    Some(vip_out)
}

/// keepalived's rule for an instance's family: the first source, peer or
/// virtual address read (or `native_ipv6`) sets it; a later one of the
/// other family is reported and skipped ("MUST be of the same family !!!
/// Skipping..."), and lbha leaves it out too, so that it means what
/// keepalived runs. Whether `addr` is kept.
fn same_family(
    family: &mut Option<Family>,
    addr: IpAddr,
    line: usize,
    context: &str,
    keyword: &str,
    cx: &mut Cx,
) -> bool {
    let this = Family::of(addr);
    match *family {
        None => {
            *family = Some(this);
            true
        }
        Some(f) if f == this => true,
        Some(f) => {
            cx.warn(
                line,
                format!(
                    "{context}`{keyword}` {addr} is {}, but the instance is {} (from its first address); keepalived reports it and leaves it out, and so does lbha",
                    this.name(),
                    f.name()
                ),
            );
            false
        }
    }
}

/// The entries of a list block (`unicast_peer { ... }`): each line is one
/// entry, its first word the value.
/// A `track_script { NAME [weight N [reverse]] ... }` block.
fn track_script_block(item: &Statement, context: &str, cx: &mut Cx) -> Vec<TrackRef> {
    let mut tracks = Vec::new();
    for entry in list_block(item, context, cx) {
        let weight = match entry.args() {
            [] => None,
            [w, rest @ ..] if w.text == "weight" => parse_weight(rest, entry.line(), context, cx),
            extra => {
                cx.extra_words(entry.line(), extra, context, entry.keyword());
                None
            }
        };
        tracks.push(TrackRef {
            name: entry.keyword().to_string(),
            weight,
            line: entry.line(),
        });
    }
    tracks
}

/// A `track_interface { NAME [weight N [reverse]] ... }` block.
fn track_interface_block(
    item: &Statement,
    context: &str,
    cx: &mut Cx,
) -> Vec<(String, Weight, usize)> {
    let mut tracked = Vec::new();
    for entry in list_block(item, context, cx) {
        let weight = match entry.args() {
            [] => Some((0, false)),
            [w, rest @ ..] if w.text == "weight" => parse_weight(rest, entry.line(), context, cx),
            extra => {
                cx.extra_words(entry.line(), extra, context, entry.keyword());
                Some((0, false))
            }
        };
        tracked.push((entry.keyword().to_string(), weight, entry.line()));
    }
    tracked
}

fn list_block<'s>(s: &'s Statement, context: &str, cx: &mut Cx) -> &'s [Statement] {
    if !s.args().is_empty() {
        cx.extra_words(s.line(), s.args(), context, s.keyword());
    }
    let Some(block) = &s.block else {
        cx.error(
            s.line(),
            format!("{context}`{}` needs a `{{ ... }}` block", s.keyword()),
        );
        return &[];
    };
    for entry in block {
        if entry.block.is_some() {
            cx.warn(
                entry.line(),
                format!(
                    "{context}unexpected block after `{}` in `{}` ignored",
                    entry.keyword(),
                    s.keyword()
                ),
            );
        }
    }
    block
}

/// `authentication { auth_type PASS|AH auth_pass X }`: the password and
/// its use, None without authentication, Err after reporting an error.
fn authentication(
    s: &Statement,
    context: &str,
    cx: &mut Cx,
) -> Result<Option<(String, AuthType)>, ()> {
    let Some(block) = &s.block else {
        cx.error(
            s.line(),
            format!("{context}`authentication` needs a `{{ ... }}` block"),
        );
        return Err(());
    };
    let mut auth_type: Option<(String, usize)> = None;
    let mut pass = None;
    let mut ok = true;
    for item in block {
        match item.keyword() {
            "auth_type" => match cx.one_arg(item, context) {
                Some(w) => auth_type = Some((w.text.clone(), w.line)),
                None => ok = false,
            },
            "auth_pass" => match cx.one_arg(item, context) {
                Some(w) => pass = Some(w.text.clone()),
                None => ok = false,
            },
            _ => cx.unknown(item, context),
        }
    }
    if !ok {
        return Err(());
    }
    match auth_type {
        Some((t, _)) if t == "PASS" || t == "AH" => match pass {
            Some(pass) if !pass.is_empty() => Ok(Some((
                pass,
                if t == "AH" {
                    AuthType::Ah
                } else {
                    AuthType::Pass
                },
            ))),
            _ => {
                cx.warn(
                    s.line(),
                    format!(
                        "{context}`auth_type {t}` without an `auth_pass`: keepalived ignores the authentication, and so does lbha"
                    ),
                );
                Ok(None)
            }
        },
        Some((t, line)) => {
            cx.error(
                line,
                format!("{context}`auth_type` must be PASS or AH (got `{t}`)"),
            );
            Err(())
        }
        None => {
            if pass.is_some() {
                cx.warn(
                    s.line(),
                    format!(
                        "{context}`auth_pass` without `auth_type PASS` ignored (keepalived ignores it too): no authentication"
                    ),
                );
            }
            Ok(None)
        }
    }
}

/// The statements of `s`'s `{ ... }` block; an error (and none) without one.
fn block_of<'a>(s: &'a Statement, cx: &mut Cx, context: &str) -> &'a [Statement] {
    if let Some(block) = &s.block {
        block.as_slice()
    } else {
        cx.error(s.line(), format!("{context}needs a `{{ ... }}` block"));
        &[]
    }
}

/// The name of a `vrrp_script NAME {` / `vrrp_instance NAME {` block, and
/// the field lines of the block with the name's line recorded.
fn block_name(s: &Statement, cx: &mut Cx, keyword: &str) -> (String, FieldLines) {
    let name = match s.args() {
        [] => {
            cx.error(s.line(), format!("`{keyword}` needs a name"));
            String::new()
        }
        [name, rest @ ..] => {
            if !rest.is_empty() {
                cx.extra_words(s.line(), rest, "", &format!("{keyword} NAME"));
            }
            name.text.clone()
        }
    };
    let mut fl = FieldLines::at(s.line());
    fl.set("name", s.line());
    if s.args().is_empty() {
        // Reported above; an empty quoted name ("") is left to validation.
        fl.mark_bad("name");
    }
    (name, fl)
}

#[cfg(test)]
mod tests;
