//! keepalived.conf (keepalived 2.2 syntax) as a configuration front-end.
//!
//! Three stages: a tokenizer (words, double-quoted strings, `{` and `}` even
//! when glued to words, `#`/`!` comments, line numbers), a block parser
//! (statements: the words of one line, plus an optional `{ ... }` block), and
//! the mapping of the keepalived keywords onto [`Config`].
//!
//! Nothing is dropped silently: a keyword lbha does not implement is a
//! warning with its line, or an error when ignoring it would change failover
//! behaviour in a dangerous way (`track_interface`, `vrrp_sync_group`, ...).

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    path::Path,
    time::Duration,
};

use super::{
    Check, Config, ConfigErrors, Diagnostic, Global, InitialState, Instance, Loaded, Notify,
    toml::{parse_cidr, secs_to_duration},
    validate::{FieldLines, Lines, Syntax, finish},
};
use crate::{DEFAULT_DOWN_TIMER_ADVERTS, DOWN_TIMER_ADVERTS_RANGE, ReceivePathChoice};

/// Parses a keepalived.conf; `adjust` sees the configuration before it is
/// validated.
pub fn parse(
    text: &str,
    path: &Path,
    adjust: &mut dyn FnMut(&mut Config),
) -> Result<Loaded, ConfigErrors> {
    let mut cx = Cx {
        file: path,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let tokens = tokenize(text, &mut cx);
    let statements = parse_statements(&tokens, &mut cx);
    let mut builder = Builder::default();
    for statement in &statements {
        builder.top_level(statement, &mut cx);
    }
    let (mut config, lines) = builder.resolve();
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

// ---------------------------------------------------------------- tokens

#[derive(Clone, Debug, PartialEq, Eq)]
struct Word {
    text: String,
    /// Written in double quotes (kept as one word, quotes removed).
    quoted: bool,
    line: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(Word),
    Open(usize),
    Close(usize),
}

impl Token {
    fn line(&self) -> usize {
        match self {
            Token::Word(w) => w.line,
            Token::Open(line) | Token::Close(line) => *line,
        }
    }
}

/// Splits keepalived.conf into tokens, as keepalived reads it: `#` and `!`
/// outside double quotes start a comment (`\#` and `\!` are the literal
/// characters), `{` and `}` outside quotes are tokens of their own, a
/// double-quoted string is one word without its quotes.
fn tokenize(text: &str, cx: &mut Cx) -> Vec<Token> {
    let mut tokens = Vec::new();
    for (index, line_text) in text.lines().enumerate() {
        let line = index + 1;
        let mut word = String::new();
        let mut in_word = false;
        let mut chars = line_text.chars().peekable();
        let flush = |word: &mut String, in_word: &mut bool, tokens: &mut Vec<Token>| {
            if *in_word {
                tokens.push(Token::Word(Word {
                    text: std::mem::take(word),
                    quoted: false,
                    line,
                }));
                *in_word = false;
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '\\' if matches!(chars.peek(), Some('#' | '!')) => {
                    word.extend(chars.next());
                    in_word = true;
                }
                '#' | '!' => break,
                '{' | '}' => {
                    flush(&mut word, &mut in_word, &mut tokens);
                    tokens.push(if c == '{' {
                        Token::Open(line)
                    } else {
                        Token::Close(line)
                    });
                }
                '"' => {
                    flush(&mut word, &mut in_word, &mut tokens);
                    let mut quoted = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '"' {
                            closed = true;
                            break;
                        }
                        quoted.push(c);
                    }
                    if !closed {
                        cx.error(line, "unterminated double-quoted string".into());
                    }
                    tokens.push(Token::Word(Word {
                        text: quoted,
                        quoted: true,
                        line,
                    }));
                }
                c if c.is_whitespace() => flush(&mut word, &mut in_word, &mut tokens),
                c => {
                    word.push(c);
                    in_word = true;
                }
            }
        }
        flush(&mut word, &mut in_word, &mut tokens);
    }
    tokens
}

// ---------------------------------------------------------------- blocks

/// One keyword line: its words (the keyword first) and, if a `{` follows,
/// the statements of its block.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Statement {
    words: Vec<Word>,
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

/// Parses statements until the `}` closing the block opened on `open_line`
/// (or the end of the file at the top level).
/// keepalived's own configurations nest three levels deep; anything deeper
/// than this is not a configuration, and recursing on it could exhaust the
/// stack.
const MAX_NESTING: usize = 16;

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
            Token::Word(first) => {
                let mut words = vec![first.clone()];
                *pos += 1;
                while let Some(Token::Word(w)) = tokens.get(*pos) {
                    if w.line != first.line {
                        break;
                    }
                    words.push(w.clone());
                    *pos += 1;
                }
                let block = match tokens.get(*pos) {
                    Some(Token::Open(line)) => {
                        let line = *line;
                        *pos += 1;
                        Some(parse_block(tokens, pos, Some(line), cx, depth + 1))
                    }
                    _ => None,
                };
                statements.push(Statement { words, block });
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
                cx.error(*line, "`}` without a matching `{`".into());
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
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Cx<'_> {
    fn diag(&self, line: usize, message: String) -> Diagnostic {
        Diagnostic {
            file: self.file.to_path_buf(),
            line: Some(line),
            message,
        }
    }

    fn error(&mut self, line: usize, message: String) {
        let d = self.diag(line, message);
        self.errors.push(d);
    }

    fn warn(&mut self, line: usize, message: String) {
        let d = self.diag(line, message);
        self.warnings.push(d);
    }

    fn unsupported(&mut self, s: &Statement, context: &str) {
        let kind = if s.block.is_some() {
            "block"
        } else {
            "keyword"
        };
        self.warn(
            s.line(),
            format!("{context}unsupported {kind} `{}` ignored", s.keyword()),
        );
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
                "{context}extra words `{}` after `{after}` ignored",
                text.join(" ")
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
                self.error(
                    word.line,
                    format!(
                        "{context}`{}`: `{}` is not an integer",
                        s.keyword(),
                        word.text
                    ),
                );
                None
            }
        }
    }

    fn secs(&mut self, s: &Statement, context: &str) -> Option<Duration> {
        let word = self.one_arg(s, context)?;
        let duration = word.text.parse::<f64>().ok().and_then(secs_to_duration);
        if duration.is_none() {
            self.error(
                word.line,
                format!(
                    "{context}`{}`: `{}` is not a number of seconds (0 to a year)",
                    s.keyword(),
                    word.text
                ),
            );
        }
        duration
    }

    fn ip(&mut self, word: &Word, context: &str, keyword: &str) -> Option<Ipv4Addr> {
        if let Ok(ip) = word.text.parse() {
            Some(ip)
        } else {
            self.error(
                word.line,
                format!(
                    "{context}`{keyword}`: `{}` is not an IPv4 address (IPv6 is not supported)",
                    word.text
                ),
            );
            None
        }
    }
}

/// The command line written after `script` or `notify_*`: a quoted string is
/// taken as it is; several words are joined, re-quoting any that contain
/// whitespace so that the runner splits them the same way.
fn command_line(words: &[Word]) -> String {
    if let [word] = words {
        return word.text.clone();
    }
    words
        .iter()
        .map(|w| {
            if w.text.is_empty() || w.text.contains(char::is_whitespace) {
                format!("\"{}\"", w.text)
            } else {
                w.text.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Keywords whose absence from lbha would change failover behaviour
/// dangerously: refusing them beats pretending.
fn dangerous_top_level(keyword: &str) -> Option<&'static str> {
    Some(match keyword {
        "include" => "lbha does not read included files; copy their contents into this file",
        "vrrp_sync_group" => {
            "lbha does not support sync groups: the grouped instances would fail over independently"
        }
        "virtual_server" | "virtual_server_group" => {
            "lbha does not do IPVS load balancing: traffic to the virtual server would not be balanced"
        }
        _ => return None,
    })
}

fn dangerous_global(keyword: &str) -> Option<&'static str> {
    Some(match keyword {
        "net_namespace" | "net_namespace_ipvs" => {
            "lbha does not switch network namespace: it would run VRRP in the wrong one"
        }
        _ => return None,
    })
}

fn dangerous_instance(keyword: &str) -> Option<&'static str> {
    Some(match keyword {
        "track_interface" | "track_process" | "track_file" | "track_bfd" => {
            "lbha cannot track this: the instance would stay master while what it tracks is down"
        }
        "virtual_ipaddress_excluded" => {
            "these addresses would not move to the new master on failover"
        }
        "virtual_routes" | "virtual_rules" => {
            "these routes or rules would not follow the master on failover"
        }
        "use_vmac" | "vmac_xmit_base" | "use_ipvlan" => {
            "lbha does not create VRRP virtual MAC interfaces"
        }
        "native_ipv6" => "lbha implements IPv4 VRRP only",
        "old_unicast_checksum" => {
            "lbha computes the current checksum: peers expecting the old one would reject its adverts"
        }
        _ => return None,
    })
}

/// A `track_script` entry, resolved once all checks are known.
struct TrackRef {
    name: String,
    /// `weight N [reverse]` override.
    weight: Option<(i32, bool)>,
    line: usize,
}

struct PendingInstance {
    instance: Instance,
    version: Option<u8>,
    down_timer_adverts: Option<u8>,
    tracks: Vec<TrackRef>,
    lines: FieldLines,
}

#[derive(Default)]
struct Builder {
    global: Global,
    global_lines: FieldLines,
    /// global_defs `vrrp_down_timer_adverts`: the instances' default.
    down_timer_adverts: Option<u8>,
    checks: Vec<(Check, FieldLines)>,
    instances: Vec<PendingInstance>,
}

impl Builder {
    fn top_level(&mut self, s: &Statement, cx: &mut Cx) {
        let kw = s.keyword();
        if kw.starts_with('@') || kw.starts_with('$') || kw.starts_with('~') {
            cx.error(
                s.line(),
                format!(
                    "keepalived conditional configuration, definitions and sequences (`{kw}`) are not supported"
                ),
            );
            return;
        }
        if let Some(reason) = dangerous_top_level(kw) {
            cx.error(s.line(), format!("`{kw}` is not supported: {reason}"));
            return;
        }
        match kw {
            "global_defs" => self.global_defs(s, cx),
            "vrrp_script" => self.vrrp_script(s, cx),
            "vrrp_instance" => self.vrrp_instance(s, cx),
            _ => cx.unsupported(s, ""),
        }
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
                // What lbha does anyway: with unicast peers, only their
                // adverts are accepted (unless --no-check-unicast-src).
                "vrrp_check_unicast_src" => cx.no_args(item, context),
                _ => cx.warn(line, format!("{context}`{kw}` ignored")),
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
        };
        let mut timeout = None;
        let mut has_script = false;
        let block = block_of(s, cx, context);
        let mut seen = HashSet::new();
        for item in block {
            let kw = item.keyword();
            let line = item.line();
            if !seen.insert(kw) {
                cx.warn(
                    line,
                    format!("{context}`{kw}` given again; the last one is used"),
                );
            }
            match kw {
                "script" => {
                    cx.no_block(item, context);
                    fl.set("script", line);
                    if item.args().is_empty() {
                        cx.error(line, format!("{context}`script` needs a command"));
                        fl.mark_bad("script");
                    } else {
                        check.script = command_line(item.args());
                        has_script = true;
                    }
                }
                "interval" => {
                    fl.set("interval", line);
                    match cx.secs(item, context) {
                        Some(d) => check.interval = d,
                        None => fl.mark_bad("interval"),
                    }
                }
                "timeout" => {
                    fl.set("timeout", line);
                    match cx.secs(item, context) {
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
                    match cx.int(item, context, 1, u32::MAX.into()) {
                        Some(n) if kw == "rise" => check.rise = n as u32,
                        Some(n) => check.fall = n as u32,
                        None => fl.mark_bad(kw),
                    }
                }
                "user" => cx.warn(
                    line,
                    format!(
                        "{context}per-script `user` is not supported and is ignored; scripts run as global_defs `script_user`"
                    ),
                ),
                _ => cx.unsupported(item, context),
            }
        }
        if !has_script && !fl.is_bad("script") {
            cx.error(s.line(), format!("{context}missing `script`"));
            fl.mark_bad("script");
        }
        check.timeout = timeout.unwrap_or(check.interval);
        self.checks.push((check, fl));
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
            virtual_addresses: Vec::new(),
            track: Vec::new(),
            notify: Notify::default(),
            receive_path: ReceivePathChoice::Auto,
        };
        let mut version = None;
        let mut down_timer = None;
        let mut tracks = Vec::new();
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
                "unicast_peer" | "virtual_ipaddress" | "track_script" | "authentication"
            );
            if !repeatable && !seen.insert(kw) {
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
                    fl.set("initial_state", line);
                    let Some(w) = cx.one_arg(item, context) else {
                        fl.mark_bad("initial_state");
                        continue;
                    };
                    match w.text.to_ascii_uppercase().as_str() {
                        "MASTER" => inst.initial_state = InitialState::Master,
                        "BACKUP" => inst.initial_state = InitialState::Backup,
                        _ => {
                            cx.error(
                                w.line,
                                format!(
                                    "{context}`state` must be MASTER or BACKUP (got `{}`)",
                                    w.text
                                ),
                            );
                            fl.mark_bad("initial_state");
                        }
                    }
                }
                "priority" => {
                    fl.set("priority", line);
                    match cx.int(item, context, 1, 255) {
                        Some(p) => inst.priority = p as u8,
                        None => fl.mark_bad("priority"),
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
                        Some(v) => version = Some(v as u8),
                        None => fl.mark_bad("version"),
                    }
                }
                "unicast_src_ip" | "mcast_src_ip" => {
                    fl.set("unicast_src", line);
                    let src = cx
                        .one_arg(item, context)
                        .and_then(|w| cx.ip(w, context, kw));
                    match src {
                        Some(ip) => inst.unicast_src = Some(ip),
                        None => fl.mark_bad("unicast_src"),
                    }
                }
                "unicast_peer" => {
                    fl.set("unicast_peers", line);
                    for peer in list_block(item, context, cx) {
                        if !peer.args().is_empty() {
                            cx.extra_words(peer.line(), peer.args(), context, peer.keyword());
                        }
                        // An unreadable peer is reported here and left out,
                        // so validation does not report it again.
                        if let Some(ip) = cx.ip(&peer.words[0], context, kw) {
                            fl.set(
                                format!("unicast_peers[{}]", inst.unicast_peers.len()),
                                peer.line(),
                            );
                            inst.unicast_peers.push(ip);
                        }
                    }
                }
                "check_unicast_src" => {
                    cx.no_args(item, context);
                    fl.set("check_unicast_src", line);
                    inst.check_unicast_src = true;
                }
                "down_timer_adverts" => {
                    fl.set("down_timer_adverts", line);
                    match down_timer_adverts(item, context, cx) {
                        Some(n) => down_timer = Some(n),
                        None => fl.mark_bad("down_timer_adverts"),
                    }
                }
                "authentication" => {
                    fl.set("auth_pass", line);
                    match authentication(item, context, cx) {
                        Ok(pass) => inst.auth_pass = pass,
                        Err(()) => fl.mark_bad("auth_pass"),
                    }
                }
                "track_script" => {
                    fl.set("track", line);
                    for entry in list_block(item, context, cx) {
                        let weight = match entry.args() {
                            [] => None,
                            [w, rest @ ..] if w.text == "weight" => {
                                parse_weight(rest, entry.line(), context, cx)
                            }
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
                }
                "notify_master" | "notify_backup" | "notify_fault" | "notify" => {
                    cx.no_block(item, context);
                    let script = match item.args() {
                        [] => {
                            cx.error(line, format!("{context}`{kw}` needs a script"));
                            continue;
                        }
                        [script, rest @ ..] => {
                            if !rest.is_empty() {
                                let text: Vec<&str> =
                                    rest.iter().map(|w| w.text.as_str()).collect();
                                cx.warn(
                                    line,
                                    format!(
                                        "{context}`{kw}`: per-script user/group `{}` ignored; scripts run as global_defs `script_user` (quote the script to pass it arguments)",
                                        text.join(" ")
                                    ),
                                );
                            }
                            script.text.clone()
                        }
                    };
                    let slot = match kw {
                        "notify_master" => &mut inst.notify.master,
                        "notify_backup" => &mut inst.notify.backup,
                        "notify_fault" => &mut inst.notify.fault,
                        _ => &mut inst.notify.any,
                    };
                    *slot = Some(script);
                }
                "nopreempt" => {
                    cx.no_args(item, context);
                    fl.set("preempt", line);
                    inst.preempt = false;
                }
                "preempt" => {
                    cx.no_args(item, context);
                    inst.preempt = true;
                }
                "preempt_delay" => {
                    fl.set("preempt_delay", line);
                    match cx.secs(item, context) {
                        Some(d) => inst.preempt_delay = d,
                        None => fl.mark_bad("preempt_delay"),
                    }
                }
                "virtual_ipaddress" => {
                    fl.set("virtual_addresses", line);
                    for vip in list_block(item, context, cx) {
                        if !vip.args().is_empty() {
                            cx.extra_words(vip.line(), vip.args(), context, vip.keyword());
                        }
                        match parse_cidr(vip.keyword()) {
                            Ok(addr) => {
                                fl.set(
                                    format!("virtual_addresses[{}]", inst.virtual_addresses.len()),
                                    vip.line(),
                                );
                                inst.virtual_addresses.push(addr);
                            }
                            Err(message) => {
                                cx.error(
                                    vip.line(),
                                    format!("{context}`virtual_ipaddress`: {message}"),
                                );
                            }
                        }
                    }
                }
                _ => cx.unsupported(item, context),
            }
        }
        if !has_vrid {
            cx.error(s.line(), format!("{context}missing `virtual_router_id`"));
            fl.mark_bad("vrid");
        }
        self.instances.push(PendingInstance {
            instance: inst,
            version,
            down_timer_adverts: down_timer,
            tracks,
            lines: fl,
        });
    }

    /// Applies defaults that depend on the whole file (the global VRRP
    /// version) and turns per-instance `track_script` weights into checks.
    fn resolve(self) -> (Config, Lines) {
        let Builder {
            global,
            global_lines,
            down_timer_adverts: default_down_timer,
            checks,
            instances,
        } = self;
        let (mut checks, mut check_lines): (Vec<Check>, Vec<FieldLines>) =
            checks.into_iter().unzip();
        let by_name: HashMap<String, usize> = checks
            .iter()
            .enumerate()
            .rev()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let mut derived: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::new();
        let mut instance_lines = Vec::new();
        for pending in instances {
            let PendingInstance {
                mut instance,
                version,
                down_timer_adverts,
                tracks,
                mut lines,
            } = pending;
            instance.version = version.unwrap_or(global.vrrp_version);
            instance.down_timer_adverts = down_timer_adverts
                .or(default_down_timer)
                .unwrap_or(DEFAULT_DOWN_TIMER_ADVERTS);
            for (i, track) in tracks.into_iter().enumerate() {
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
        let lines = Lines {
            global: global_lines,
            checks: check_lines,
            instances: instance_lines,
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
            },
            lines,
        )
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

/// The entries of a list block (`unicast_peer { ... }`): each line is one
/// entry, its first word the value.
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

/// `authentication { auth_type PASS auth_pass X }`: the password, None
/// without authentication, Err after reporting an error.
fn authentication(s: &Statement, context: &str, cx: &mut Cx) -> Result<Option<String>, ()> {
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
            _ => cx.unsupported(item, context),
        }
    }
    if !ok {
        return Err(());
    }
    match auth_type {
        Some((t, _)) if t == "PASS" => {
            if let Some(pass) = pass {
                Ok(Some(pass))
            } else {
                cx.error(
                    s.line(),
                    format!("{context}`auth_type PASS` needs an `auth_pass`"),
                );
                Err(())
            }
        }
        Some((t, line)) if t == "AH" => {
            cx.error(
                line,
                format!(
                    "{context}`auth_type AH` is not supported (use PASS, or no authentication)"
                ),
            );
            Err(())
        }
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
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn path() -> PathBuf {
        PathBuf::from("/etc/keepalived/keepalived.conf")
    }

    /// The parser without adjustments, as `parse_*` calls it.
    fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigErrors> {
        super::parse(text, path, &mut |_| {})
    }

    fn load(text: &str) -> Loaded {
        match parse(text, &path()) {
            Ok(loaded) => loaded,
            Err(errors) => panic!("{errors}"),
        }
    }

    fn errors(text: &str) -> Vec<Diagnostic> {
        match parse(text, &path()) {
            Ok(loaded) => panic!("expected errors, got {loaded:?}"),
            Err(ConfigErrors(errors)) => errors,
        }
    }

    fn at(diags: &[Diagnostic]) -> Vec<(usize, &str)> {
        diags
            .iter()
            .map(|d| (d.line.unwrap_or(0), d.message.as_str()))
            .collect()
    }

    const SEED: &str = include_str!("../../examples/keepalived.conf");

    fn seed_config() -> Config {
        Config {
            floating_ip: None,
            heartbeat: None,
            global: Global::default(),
            checks: vec![Check {
                name: "chk_haproxy".into(),
                script: "pidof haproxy".into(),
                probe: None,
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(2),
                weight: 0,
                weight_reverse: false,
                rise: 1,
                fall: 1,
            }],
            instances: vec![Instance {
                name: "VI_1".into(),
                interface: "eth1".into(),
                vrid: 33,
                priority: 200,
                version: 2,
                advert_interval: Duration::from_secs(1),
                initial_state: InitialState::Master,
                preempt: true,
                preempt_delay: Duration::ZERO,
                unicast_src: Some(Ipv4Addr::new(10, 132, 7, 12)),
                unicast_peers: vec![Ipv4Addr::new(10, 132, 7, 13)],
                check_unicast_src: true,
                down_timer_adverts: 3,
                auth_pass: Some("password".into()),
                virtual_addresses: vec![],
                track: vec!["chk_haproxy".into()],
                notify: Notify {
                    master: Some("/etc/keepalived/master.sh".into()),
                    ..Notify::default()
                },
                receive_path: ReceivePathChoice::Auto,
            }],
        }
    }

    /// A minimal instance around `body`, for keyword tests.
    fn instance_with(body: &str) -> String {
        format!("vrrp_instance VI_1 {{\n    interface eth1\n    virtual_router_id 1\n{body}\n}}\n")
    }

    #[test]
    fn config_keepalived_seed_parses_exactly() {
        let loaded = load(SEED);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.config, seed_config());
    }

    #[test]
    fn config_keepalived_seed_round_trips_through_toml() {
        let config = load(SEED).config;
        let text = crate::to_toml(&config);
        let again = crate::parse_toml(&text, Path::new("seed.toml")).unwrap();
        assert_eq!(again.config, config, "{text}");
        assert!(again.warnings.is_empty());
    }

    #[test]
    fn config_keepalived_seed_equals_the_native_example() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lbha.toml");
        let native = crate::load_toml(&file).unwrap();
        assert_eq!(native.config, seed_config());
    }

    #[test]
    fn config_keepalived_tokenizer_comments_quotes_and_glued_braces() {
        let mut cx = Cx {
            file: Path::new("x"),
            errors: vec![],
            warnings: vec![],
        };
        let tokens = tokenize(
            "a{b}c # comment { }\n! whole line\n  \"x y\"{ \"#not comment\" pa\\#ss!tail\nz\"q r\"",
            &mut cx,
        );
        let word = |text: &str, quoted: bool, line: usize| {
            Token::Word(Word {
                text: text.into(),
                quoted,
                line,
            })
        };
        assert_eq!(
            tokens,
            vec![
                word("a", false, 1),
                Token::Open(1),
                word("b", false, 1),
                Token::Close(1),
                word("c", false, 1),
                word("x y", true, 3),
                Token::Open(3),
                word("#not comment", true, 3),
                word("pa#ss", false, 3),
                word("z", false, 4),
                word("q r", true, 4),
            ]
        );
        assert!(cx.errors.is_empty());
        tokenize("script \"pidof haproxy\n", &mut cx);
        assert_eq!(
            at(&cx.errors),
            vec![(1, "unterminated double-quoted string")]
        );
    }

    #[test]
    fn config_keepalived_glued_braces_and_one_line_blocks() {
        let text = "vrrp_script chk{script \"pidof haproxy\"}\nvrrp_instance VI_1{interface eth1\nvirtual_router_id 7 }\n";
        let loaded = load(text);
        assert_eq!(loaded.config.checks[0].name, "chk");
        assert_eq!(loaded.config.checks[0].script, "pidof haproxy");
        assert_eq!(loaded.config.instances[0].vrid, 7);
        // Block on the next line, as keepalived allows.
        let text = "vrrp_instance VI_1\n{\n interface eth1\n virtual_router_id 7\n unicast_peer { 10.0.0.2 }\n}\n";
        let loaded = load(text);
        assert_eq!(
            loaded.config.instances[0].unicast_peers,
            vec![Ipv4Addr::new(10, 0, 0, 2)]
        );
    }

    #[test]
    fn config_keepalived_every_supported_keyword() {
        let text = r#"
global_defs {
    enable_script_security
    script_user keepalived_script nogroup
    vrrp_version 3
    vrrp_down_timer_adverts 5
    vrrp_check_unicast_src
}

vrrp_script chk_haproxy {
    script "/usr/bin/killall -0 haproxy"
    interval 0.5
    timeout 3
    weight -20 reverse
    rise 2
    fall 3
}

vrrp_script chk_web {
    script /usr/local/bin/check web "with space"
}

vrrp_instance VI_1 {
    interface eth1
    state BACKUP
    priority 150
    virtual_router_id 51
    advert_int 0.25
    nopreempt
    preempt_delay 15
    mcast_src_ip 10.0.0.1
    unicast_src_ip 10.0.0.2
    unicast_peer {
        10.0.0.3
        10.0.0.4
    }
    check_unicast_src
    down_timer_adverts 2
    virtual_ipaddress {
        203.0.113.10/24
        203.0.113.11
    }
    track_script {
        chk_haproxy
        chk_web
    }
    notify_master "/etc/keepalived/master.sh arg"
    notify_backup /etc/keepalived/backup.sh
    notify_fault /etc/keepalived/fault.sh
    notify /etc/keepalived/notify.sh
}

vrrp_instance VI_2 {
    interface eth2
    state master
    virtual_router_id 52
    version 2
    advert_int 3
    preempt
    authentication {
        auth_type PASS
        auth_pass "se cret"
    }
}
"#;
        let loaded = load(text);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let c = loaded.config;
        assert_eq!(
            c.global,
            Global {
                script_security: true,
                script_user: Some("keepalived_script".into()),
                script_group: Some("nogroup".into()),
                vrrp_version: 3,
                ..Global::default()
            }
        );
        assert_eq!(
            c.checks,
            vec![
                Check {
                    name: "chk_haproxy".into(),
                    script: "/usr/bin/killall -0 haproxy".into(),
                    probe: None,
                    interval: Duration::from_millis(500),
                    timeout: Duration::from_secs(3),
                    weight: -20,
                    weight_reverse: true,
                    rise: 2,
                    fall: 3,
                },
                Check {
                    name: "chk_web".into(),
                    script: "/usr/local/bin/check web \"with space\"".into(),
                    probe: None,
                    interval: Duration::from_secs(1),
                    timeout: Duration::from_secs(1),
                    weight: 0,
                    weight_reverse: false,
                    rise: 1,
                    fall: 1,
                },
            ]
        );
        let i = &c.instances[0];
        assert_eq!(i.interface, "eth1");
        assert_eq!(i.initial_state, InitialState::Backup);
        assert_eq!(i.priority, 150);
        assert_eq!(i.vrid, 51);
        assert_eq!(i.version, 3, "global vrrp_version");
        assert_eq!(i.advert_interval, Duration::from_millis(250));
        assert!(!i.preempt);
        assert_eq!(i.preempt_delay, Duration::from_secs(15));
        assert_eq!(i.unicast_src, Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(
            i.unicast_peers,
            vec![Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 0, 4)]
        );
        assert!(i.check_unicast_src);
        assert_eq!(i.down_timer_adverts, 2, "its own down_timer_adverts");
        assert_eq!(
            i.virtual_addresses,
            vec![
                (Ipv4Addr::new(203, 0, 113, 10), 24),
                (Ipv4Addr::new(203, 0, 113, 11), 32)
            ]
        );
        assert_eq!(i.track, vec!["chk_haproxy".to_string(), "chk_web".into()]);
        assert_eq!(
            i.notify,
            Notify {
                master: Some("/etc/keepalived/master.sh arg".into()),
                backup: Some("/etc/keepalived/backup.sh".into()),
                fault: Some("/etc/keepalived/fault.sh".into()),
                any: Some("/etc/keepalived/notify.sh".into()),
            }
        );
        assert_eq!(i.auth_pass, None);
        let i2 = &c.instances[1];
        assert_eq!(i2.initial_state, InitialState::Master);
        assert_eq!(i2.priority, 100, "keepalived default");
        assert_eq!(i2.version, 2);
        assert_eq!(i2.advert_interval, Duration::from_secs(3));
        assert!(i2.preempt);
        assert_eq!(i2.auth_pass.as_deref(), Some("se cret"));
        assert_eq!(i2.down_timer_adverts, 5, "global vrrp_down_timer_adverts");
        // Without peers there is nothing to check against; the flag says
        // what would happen with some.
        assert!(i2.check_unicast_src);

        // And the whole thing round-trips through the native format.
        let again = crate::parse_toml(&crate::to_toml(&c), Path::new("t")).unwrap();
        assert_eq!(again.config, c);
    }

    #[test]
    fn config_keepalived_track_script_weight_override_derives_a_check() {
        let text = r#"vrrp_script chk {
    script "true"
    weight 10
}
vrrp_instance A {
    interface eth1
    virtual_router_id 1
    track_script {
        chk weight -30
    }
}
vrrp_instance B {
    interface eth1
    virtual_router_id 2
    track_script {
        chk weight 10
        chk weight -30
    }
}
vrrp_instance C {
    interface eth1
    virtual_router_id 3
    track_script {
        chk weight 5 reverse
    }
}
"#;
        let loaded = load(text);
        let c = loaded.config;
        let names: Vec<_> = c.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["chk", "chk:weight=-30", "chk:weight=5:reverse"]);
        assert_eq!(c.checks[1].weight, -30);
        assert!(!c.checks[1].weight_reverse);
        assert_eq!(c.checks[1].script, "true");
        assert_eq!(c.checks[2].weight, 5);
        assert!(c.checks[2].weight_reverse);
        assert_eq!(c.instances[0].track, vec!["chk:weight=-30".to_string()]);
        assert_eq!(
            c.instances[1].track,
            vec!["chk".to_string(), "chk:weight=-30".into()]
        );
        assert_eq!(
            c.instances[2].track,
            vec!["chk:weight=5:reverse".to_string()]
        );
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn config_keepalived_warnings_carry_line_numbers() {
        let text = r#"global_defs {
    router_id LB1
    notification_email {
        ops@example.com
    }
    smtp_server 127.0.0.1
}
vrrp_script chk {
    script "true"
    user nobody
    init_fail
}
vrrp_instance VI_1 {
    interface eth1
    virtual_router_id 1
    garp_master_delay 5
    notify_master /etc/keepalived/master.sh root
    virtual_ipaddress {
        203.0.113.10/24 dev eth1 label eth1:1
    }
    unicast_peer {
        10.0.0.3 min_ttl 5
    }
    priority 100 extra
    priority 101
    dont_track_primary
}
static_routes {
    10.0.0.0/8 via 10.0.0.1
}
"#;
        let loaded = load(text);
        let w = at(&loaded.warnings);
        let lines: Vec<usize> = w.iter().map(|(l, _)| *l).collect();
        assert_eq!(
            lines,
            vec![2, 3, 6, 10, 11, 16, 17, 19, 22, 24, 25, 26, 28],
            "{w:#?}"
        );
        assert!(w[0].1.contains("global_defs: `router_id` ignored"));
        assert!(w[3].1.contains("per-script `user` is not supported"));
        assert!(w[4].1.contains("unsupported keyword `init_fail` ignored"));
        assert!(
            w[5].1
                .contains("unsupported keyword `garp_master_delay` ignored")
        );
        assert!(w[6].1.contains("per-script user/group `root` ignored"));
        assert!(w[7].1.contains("extra words `dev eth1 label eth1:1`"));
        assert!(w[10].1.contains("`priority` given again"));
        assert!(
            w[12]
                .1
                .contains("unsupported block `static_routes` ignored")
        );
        assert_eq!(loaded.config.instances[0].priority, 101);
        assert_eq!(
            loaded.config.instances[0].virtual_addresses,
            vec![(Ipv4Addr::new(203, 0, 113, 10), 24)]
        );
    }

    #[test]
    fn config_keepalived_dangerous_keywords_are_errors_with_lines() {
        let text = r"include /etc/keepalived/other.conf
global_defs {
    net_namespace blue
}
vrrp_sync_group G1 {
    group {
        VI_1
    }
}
vrrp_instance VI_1 {
    interface eth1
    virtual_router_id 1
    track_interface {
        eth0
    }
    track_process {
        haproxy
    }
    virtual_ipaddress_excluded {
        10.0.0.50
    }
    use_vmac
    virtual_routes {
        default via 10.0.0.1
    }
}
virtual_server 10.0.0.50 80 {
    real_server 10.0.0.10 80 {
    }
}
@lb1 priority 200
";
        let errs = errors(text);
        let e = at(&errs);
        let lines: Vec<usize> = e.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![1, 3, 5, 13, 16, 19, 22, 23, 27, 31], "{e:#?}");
        assert!(e[0].1.contains("`include` is not supported"));
        assert!(e[3].1.contains("`track_interface` is not supported"));
        assert!(e[9].1.contains("conditional configuration"));
    }

    #[test]
    fn config_keepalived_multiple_errors_are_all_reported() {
        let text = r"vrrp_script chk {
    interval abc
    weight 300
    rise -1
}
vrrp_instance VI_1 {
    interface eth1
    state PRIMARY
    priority 0
    virtual_router_id 256
    advert_int 1.5
    unicast_src_ip 10.0.0.1
    unicast_peer {
        fe80::1
        10.0.0.1
    }
    authentication {
        auth_type AH
        auth_pass secret
    }
    virtual_ipaddress {
        10.0.0.9/40
    }
    track_script {
        chk
        missing
    }
}
vrrp_instance VI_2 {
    interface eth1
    virtual_router_id 5
    version 3
    authentication {
        auth_type PASS
        auth_pass secret
    }
}
vrrp_instance VI_3 {
    interface eth1
    virtual_router_id 5
}
vrrp_instance VI_4 {
    interface eth1
}
";
        let errs = errors(text);
        let e = at(&errs);
        let lines: Vec<usize> = e.iter().map(|(l, _)| *l).collect();
        assert_eq!(
            lines,
            vec![1, 2, 3, 4, 8, 9, 10, 11, 14, 15, 18, 22, 26, 33, 40, 42],
            "{e:#?}"
        );
        assert!(e[0].1.contains("missing `script`"));
        assert!(
            e[1].1
                .contains("`interval`: `abc` is not a number of seconds")
        );
        assert!(e[2].1.contains("`weight` must be -253..=253"));
        assert!(e[3].1.contains("`rise` must be 1..="));
        assert!(e[4].1.contains("`state` must be MASTER or BACKUP"));
        assert!(e[5].1.contains("`priority` must be 1..=255 (got 0"));
        assert!(
            e[6].1
                .contains("`virtual_router_id` must be 1..=255 (got 256)")
        );
        assert!(e[7].1.contains("VRRPv2 `advert_int` must be whole seconds"));
        assert!(e[8].1.contains("`fe80::1` is not an IPv4 address"));
        assert!(e[9].1.contains("is this node's own `unicast_src_ip`"));
        assert!(e[10].1.contains("`auth_type AH` is not supported"));
        assert!(e[11].1.contains("prefix length"));
        assert!(e[12].1.contains("`track_script` names `missing`"));
        assert!(e[13].1.contains("VRRPv3 has no authentication"));
        assert!(
            e[14]
                .1
                .contains("`virtual_router_id` 5 on eth1 is already used by `VI_2`")
        );
        assert!(e[15].1.contains("missing `virtual_router_id`"));
        for d in &errs {
            assert_eq!(d.file, path());
        }
    }

    #[test]
    fn config_keepalived_structure_errors() {
        let errs = errors("}\nvrrp_instance VI_1 {\n  interface eth1\n  virtual_router_id 1\n");
        let e = at(&errs);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0], (1, "`}` without a matching `{`"));
        assert_eq!(e[1].0, 4);
        assert!(
            e[1].1
                .contains("missing `}` at the end of the file for the `{` on line 2")
        );

        let errs = errors("vrrp_instance VI_1\nvrrp_script\n{ }\n");
        let e = at(&errs);
        assert!(e[0].1.contains("needs a `{ ... }` block"), "{e:?}");
        assert!(
            e.iter()
                .any(|(_, m)| m.contains("`vrrp_script` needs a name"))
        );
    }

    #[test]
    fn config_keepalived_auth_variants() {
        let loaded = load(&instance_with(
            "    authentication {\n        auth_pass secret\n    }",
        ));
        assert_eq!(loaded.config.instances[0].auth_pass, None);
        assert_eq!(loaded.warnings.len(), 1);
        assert_eq!(loaded.warnings[0].line, Some(4));

        let loaded = load(&instance_with(
            "    authentication {\n        auth_type PASS\n        auth_pass 123456789\n    }",
        ));
        assert_eq!(
            loaded.config.instances[0].auth_pass.as_deref(),
            Some("123456789")
        );
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].message.contains("first 8 characters"));
        assert_eq!(loaded.warnings[0].line, Some(4));

        let errs = errors(&instance_with(
            "    authentication {\n        auth_type PASS\n    }",
        ));
        assert!(errs[0].message.contains("needs an `auth_pass`"));
    }

    #[test]
    fn config_keepalived_nopreempt_with_master_warns() {
        let loaded = load(&instance_with("    state MASTER\n    nopreempt"));
        assert_eq!(loaded.warnings.len(), 1);
        assert_eq!(loaded.warnings[0].line, Some(5));
        assert!(
            loaded.warnings[0]
                .message
                .contains("`nopreempt` only works")
        );
    }

    /// lbha checks advert sources unless told not to, and keepalived's own
    /// defaults for the master-down timer apply.
    #[test]
    fn config_keepalived_source_checking_and_down_timer_defaults() {
        let loaded = load(&instance_with(
            "    unicast_peer {\n        10.0.0.3\n    }",
        ));
        let i = &loaded.config.instances[0];
        assert!(i.check_unicast_src, "on by default, unlike keepalived");
        assert_eq!(i.down_timer_adverts, 3, "RFC 5798's 3 intervals");
    }

    #[test]
    fn config_keepalived_down_timer_adverts_range() {
        for (body, line) in [
            ("    down_timer_adverts 0", 4),
            ("    down_timer_adverts 101", 4),
            ("    down_timer_adverts x", 4),
        ] {
            let errs = errors(&instance_with(body));
            assert_eq!(errs.len(), 1, "{body}: {errs:?}");
            assert_eq!(errs[0].line, Some(line), "{body}");
            assert!(errs[0].message.contains("`down_timer_adverts`"), "{errs:?}");
        }
        for n in [1, 100] {
            let loaded = load(&instance_with(&format!("    down_timer_adverts {n}")));
            assert_eq!(loaded.config.instances[0].down_timer_adverts, n);
        }
        let errs = errors(&format!(
            "global_defs {{\n    vrrp_down_timer_adverts 101\n}}\n{}",
            instance_with("")
        ));
        assert_eq!(at(&errs)[0].0, 2, "{errs:?}");
        assert!(errs[0].message.contains("must be 1..=100"), "{errs:?}");
    }

    /// More unicast peers than lbha can check sources against: an error
    /// naming the way out, which `--no-check-unicast-src` (an adjustment
    /// before validation) takes.
    #[test]
    fn config_keepalived_too_many_peers_to_check() {
        let peers: String = (1..=9).map(|i| format!("        10.0.0.{i}\n")).collect();
        let text = instance_with(&format!("    unicast_peer {{\n{peers}    }}"));
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        // The line of the ninth peer.
        assert_eq!(errs[0].line, Some(13), "{errs:?}");
        assert!(
            errs[0].message.contains("at most 8")
                && errs[0].message.contains("(this lists 9)")
                && errs[0].message.contains("--no-check-unicast-src"),
            "{errs:?}"
        );
        let eight: String = (1..=8).map(|i| format!("        10.0.0.{i}\n")).collect();
        load(&instance_with(&format!(
            "    unicast_peer {{\n{eight}    }}"
        )));

        let unfiltered = super::parse(&text, &path(), &mut |config| {
            for instance in &mut config.instances {
                instance.check_unicast_src = false;
            }
        })
        .expect("nine peers without source checking");
        assert_eq!(unfiltered.config.instances[0].unicast_peers.len(), 9);
        assert!(!unfiltered.config.instances[0].check_unicast_src);
    }

    #[test]
    fn config_load_any_dispatches_on_the_extension() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let from_conf = crate::load_any(&examples.join("keepalived.conf")).unwrap();
        let from_toml = crate::load_any(&examples.join("lbha.toml")).unwrap();
        assert_eq!(from_conf.config, from_toml.config);
        let missing = examples.join("no-such-file.conf");
        let ConfigErrors(errs) = crate::load_any(&missing).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].file, missing);
        assert_eq!(errs[0].line, None);
        assert!(errs[0].message.starts_with("cannot read: "));
    }

    #[test]
    fn config_keepalived_errors_display_with_file_and_line() {
        let err = parse(&instance_with("    priority 0"), &path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "1 error(s) in configuration:\n  /etc/keepalived/keepalived.conf:4: vrrp_instance `VI_1`: `priority` must be 1..=255 (got 0)"
        );
    }

    #[test]
    fn config_keepalived_command_line_quoting() {
        let w = |text: &str, quoted: bool| Word {
            text: text.into(),
            quoted,
            line: 1,
        };
        assert_eq!(command_line(&[w("a b", true)]), "a b");
        assert_eq!(command_line(&[w("a", false), w("b c", true)]), "a \"b c\"");
        assert_eq!(command_line(&[w("a", false), w("", true)]), "a \"\"");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = "{".repeat(50_000);
        let errors = parse(&text, std::path::Path::new("deep.conf"))
            .unwrap_err()
            .0;
        assert!(
            errors
                .iter()
                .any(|e| e.message.contains("nested more than")),
            "{errors:?}"
        );
    }

    #[test]
    fn empty_quoted_names_are_errors() {
        let text = "vrrp_script \"\" {\n  script true\n}\nvrrp_instance \"\" {\n  interface eth0\n  virtual_router_id 5\n}\n";
        let errors = parse(text, std::path::Path::new("e.conf")).unwrap_err().0;
        assert!(errors.len() >= 2, "{errors:?}");
    }
}
