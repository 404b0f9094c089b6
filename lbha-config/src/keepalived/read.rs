//! Stage one: keepalived's line reader (`read_line` in keepalived 2.2's
//! lib/parser.c), which turns the file and the files it includes into the
//! lines the keyword parser sees, each split into words.
//!
//! For every line, in keepalived's order:
//!
//! 1. comments go: `#` or `!` outside double quotes starts one, `\#` and
//!    `\!` are the characters; leading and trailing blanks go;
//! 2. `@ID rest` keeps `rest` only when ID is the configuration id
//!    (keepalived's `--config-id`, by default the host name), `@^ID rest`
//!    only when it is not;
//! 3. `$NAME=value` defines NAME (a value ending in `\` continues on the
//!    next lines); `$NAME` and `${NAME}` elsewhere are replaced by their
//!    value, and the line is looked at again (it may now start with `@`);
//!    `$_PWD`, `$_INSTANCE`, `$_HASH` and `$_BANG` are predefined;
//! 4. `include PATTERN` (and `includer`/`includem`/`includew`/`includeb`/
//!    `includea`) reads the files PATTERN names ([`super::include`]) there;
//! 5. the first `{` or `}` outside double quotes ends the line: it is a line
//!    of its own, and what follows it is read as the next line (going
//!    through 2 to 5 again);
//! 6. the words: whitespace separates, a double-quoted string is one word.
//!
//! Every step is bounded (line length, expansions per line, include depth
//! and count), so no input makes it loop or grow without end.

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
};

use super::{
    Cx,
    include::{self, Files},
};
use crate::KeepalivedOptions;

/// keepalived reads a line into 1024 bytes (its `MAXBUF`), and refuses to
/// expand definitions beyond it.
const MAX_LINE: usize = 1023;
/// Definitions replaced in one line at most: keepalived would loop forever
/// on `$A=$A`.
const MAX_EXPANSIONS: usize = 256;
/// keepalived has no limit, and an include of itself loops until it runs
/// out of file descriptors.
const MAX_INCLUDE_DEPTH: usize = 16;
const MAX_FILES: usize = 256;

/// A word of a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Word {
    pub text: String,
    /// Written in double quotes (kept as one word, quotes removed).
    pub quoted: bool,
    /// Position of its line (see [`crate::SourceMap`]).
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Token {
    /// The words of one line (up to a brace), and the text they were split
    /// from, which keepalived splits again, differently, for scripts.
    Line {
        words: Vec<Word>,
        raw: String,
        line: usize,
    },
    Open(usize),
    Close(usize),
}

impl Token {
    pub fn line(&self) -> usize {
        match self {
            Token::Line { line, .. } | Token::Open(line) | Token::Close(line) => *line,
        }
    }
}

/// A predefined definition worked out when used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Computed {
    Pwd,
    Instance,
    Random,
}

struct Def {
    name: String,
    /// Lines separated by `\n` when `multiline`.
    value: String,
    multiline: bool,
    computed: Option<Computed>,
}

/// Reads `text` (the main file, at `path`) and what it includes into tokens.
pub(super) fn read(
    text: &str,
    path: &Path,
    options: &KeepalivedOptions,
    files: &dyn Files,
    cx: &mut Cx,
) -> Vec<Token> {
    let plain = |name: &str, value: &str| Def {
        name: name.into(),
        value: value.into(),
        multiline: false,
        computed: None,
    };
    let computed = |name: &str, which| Def {
        name: name.into(),
        value: String::new(),
        multiline: false,
        computed: Some(which),
    };
    let mut reader = Reader {
        cx,
        files,
        config_id: options.config_id.clone(),
        defs: vec![
            computed("_PWD", Computed::Pwd),
            computed("_INSTANCE", Computed::Instance),
            computed("_RANDOM", Computed::Random),
            plain("_HASH", "#"),
            plain("_BANG", "!"),
        ],
        collecting: None,
        tokens: Vec::new(),
        main_lines: line_count(text),
        reading: vec![path.to_path_buf()],
        files_read: 1,
        pwd: PathBuf::new(),
    };
    reader.read_text(text, path, 0);
    reader.tokens
}

/// Lines as both parsers and the fuzzers count them: one more than the
/// newlines.
pub(super) fn line_count(text: &str) -> usize {
    text.bytes().filter(|&b| b == b'\n').count() + 1
}

struct Reader<'r, 'c> {
    cx: &'r mut Cx<'c>,
    files: &'r dyn Files,
    config_id: Option<String>,
    defs: Vec<Def>,
    /// The multi-line definition whose lines are being read.
    collecting: Option<usize>,
    tokens: Vec<Token>,
    main_lines: usize,
    /// The files being read, outermost first.
    reading: Vec<PathBuf>,
    files_read: usize,
    /// `$_PWD`: the directory of the file being read.
    pwd: PathBuf,
}

/// What a line's definitions did to it.
enum Expansion {
    Unchanged,
    /// Reported; the line is dropped.
    Failed,
    Changed {
        text: String,
        /// The further lines of a multi-line definition, read next.
        more: Vec<String>,
    },
}

impl Reader<'_, '_> {
    /// Reads one file's text; its line N is at position `offset + N`.
    fn read_text(&mut self, text: &str, path: &Path, offset: usize) {
        let dir = path.parent().unwrap_or(Path::new(""));
        let listed = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let saved_pwd = std::mem::replace(&mut self.pwd, self.files.absolute(listed));
        for (index, raw) in text.split('\n').enumerate() {
            let pos = offset + index + 1;
            let raw = raw.trim_end_matches(['\r', '\n']);
            if raw.len() > MAX_LINE {
                self.cx.error(
                    pos,
                    format!(
                        "line is {} bytes long; keepalived reads at most {MAX_LINE} bytes of a line and would take the rest for another line",
                        raw.len()
                    ),
                );
                continue;
            }
            if raw.is_empty() {
                // An empty line ends a multi-line definition.
                self.end_definition();
                continue;
            }
            let line = decomment(raw, pos, self.cx);
            if line.is_empty() {
                continue;
            }
            if self.collecting.is_some() {
                self.continue_definition(&line);
                continue;
            }
            self.process(line, pos);
        }
        self.end_definition();
        self.pwd = saved_pwd;
    }

    fn end_definition(&mut self) {
        if let Some(index) = self.collecting.take() {
            let def = &mut self.defs[index];
            if def.value.is_empty() {
                def.multiline = false;
            }
        }
    }

    /// A line of a multi-line definition: added to it; a final `\` means
    /// more follow.
    fn continue_definition(&mut self, line: &str) {
        let Some(index) = self.collecting else {
            return;
        };
        let (text, more) = match line.strip_suffix('\\') {
            Some(body) => (format!("{}\n", body.trim_end_matches([' ', '\t'])), true),
            None => (line.to_string(), false),
        };
        let def = &mut self.defs[index];
        // As keepalived: a line holding only the `\` adds nothing.
        if text.len() >= 2 || (!text.is_empty() && !more) {
            def.value.push_str(&text);
        }
        if !more {
            self.end_definition();
        }
    }

    /// Steps 2 to 5 for one line (and the lines it turns into).
    fn process(&mut self, line: String, pos: usize) {
        let mut pending = VecDeque::from([line]);
        while let Some(mut buf) = pending.pop_front() {
            let mut expansions = 0;
            let keep = loop {
                if buf.starts_with('@') {
                    match self.conditional(&buf) {
                        Some(rest) => buf = rest,
                        None => break false,
                    }
                }
                if buf.starts_with('$') && self.define(&buf) {
                    break false;
                }
                if buf.starts_with("~SEQ") || buf.starts_with("~LST") {
                    self.cx.error(
                        pos,
                        format!(
                            "keepalived's `{}` (a line repeated over a sequence or list) is not supported: write the lines out",
                            &buf[..4]
                        ),
                    );
                    break false;
                }
                if buf.starts_with('~') || !buf.contains('$') {
                    break true;
                }
                match self.expand(&buf, pos, &mut expansions) {
                    Expansion::Unchanged => break true,
                    Expansion::Failed => break false,
                    Expansion::Changed { text, more } => {
                        for (i, line) in more.into_iter().enumerate() {
                            pending.insert(i, line);
                        }
                        buf = decomment(&text, pos, self.cx);
                        if !(buf.starts_with('@') || buf.contains('$')) {
                            break true;
                        }
                    }
                }
            };
            if !keep || buf.is_empty() {
                continue;
            }
            if let Some((kind, pattern)) = include_of(&buf) {
                self.include(kind, pattern, pos);
                continue;
            }
            let (segment, residue) = split_at_brace(&buf);
            self.emit(segment, pos);
            if let Some(residue) = residue {
                pending.push_front(residue);
            }
        }
    }

    /// `@ID rest` / `@^ID rest`: `rest` when the line applies here.
    fn conditional(&self, line: &str) -> Option<String> {
        let (reverse, start) = match line.as_bytes().get(1) {
            Some(b'^') => (true, 2),
            _ => (false, 1),
        };
        // keepalived drops a line with nothing after the id.
        let end = start + line[start..].find([' ', '\t'])?;
        let id = &line[start..end];
        let matches = self.config_id.as_deref() == Some(id);
        (matches != reverse).then(|| line[end..].trim_start_matches([' ', '\t']).to_string())
    }

    /// `$NAME=value`: records it and returns true; false when the line is
    /// not a definition (keepalived then reads it as a keyword).
    fn define(&mut self, line: &str) -> bool {
        let bytes = line.as_bytes();
        if !bytes
            .get(1)
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        {
            return false;
        }
        // As keepalived: only letters, digits and `_` up to the `=` (so
        // `$NAME = value`, with a blank, is not a definition).
        let Some(eq) = bytes[2..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
            .map(|i| i + 2)
            .filter(|&i| bytes[i] == b'=')
        else {
            return false;
        };
        let name = &line[1..eq];
        let value = line[eq + 1..].trim_start_matches([' ', '\t']);
        let (value, multiline) = match value.strip_suffix('\\') {
            Some(body) => {
                let body = body.trim_end_matches([' ', '\t']);
                if body.is_empty() {
                    (String::new(), true)
                } else {
                    (format!("{body}\n"), true)
                }
            }
            None => (value.to_string(), false),
        };
        let def = Def {
            name: name.to_string(),
            value,
            multiline,
            computed: None,
        };
        let index = if let Some(index) = self.defs.iter().position(|d| d.name == name) {
            self.defs[index] = def;
            index
        } else {
            self.defs.push(def);
            self.defs.len() - 1
        };
        if multiline {
            self.collecting = Some(index);
        }
        true
    }

    /// Replaces the definitions `line` refers to, as keepalived's
    /// `replace_param`: the text put in is looked at again (so a value may
    /// refer to other definitions).
    fn expand(&mut self, line: &str, pos: usize, expansions: &mut usize) -> Expansion {
        let mut out = line.to_string();
        let mut more = Vec::new();
        let mut changed = false;
        let mut from = 0;
        while let Some(offset) = out[from..].find('$') {
            let at = from + offset;
            if at + 1 >= out.len() {
                break;
            }
            let Some((index, used)) = self.reference(&out[at + 1..]) else {
                from = at + 1;
                continue;
            };
            *expansions += 1;
            if *expansions > MAX_EXPANSIONS {
                self.cx.error(
                    pos,
                    format!(
                        "definitions on this line expand more than {MAX_EXPANSIONS} times (one refers to itself?); keepalived would not finish reading it"
                    ),
                );
                return Expansion::Failed;
            }
            let def = &self.defs[index];
            let value = match def.computed {
                None => def.value.clone(),
                Some(Computed::Pwd) => self.pwd.display().to_string(),
                Some(Computed::Instance) => self.config_id.clone().unwrap_or_default(),
                Some(Computed::Random) => {
                    self.cx.error(
                        pos,
                        "`$_RANDOM` is not supported: keepalived picks another number at every read, so check-config, the start and every reload would each read another configuration".into(),
                    );
                    return Expansion::Failed;
                }
            };
            let first = if def.multiline {
                let mut lines = value.split('\n');
                let first = lines.next().unwrap_or_default().to_string();
                more = lines
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect();
                first
            } else {
                value.clone()
            };
            out.replace_range(at..at + 1 + used, &first);
            changed = true;
            if out.len() > MAX_LINE {
                self.cx.error(
                    pos,
                    format!(
                        "expanding the definitions makes this line longer than keepalived's {MAX_LINE} bytes"
                    ),
                );
                return Expansion::Failed;
            }
            if value.trim_start_matches([' ', '\t']).starts_with('~') {
                break;
            }
            // Not advancing: the value is looked at again.
            from = at;
        }
        if changed {
            Expansion::Changed { text: out, more }
        } else {
            Expansion::Unchanged
        }
    }

    /// The definition `rest` (what follows a `$`) refers to, and how many
    /// bytes of `rest` the reference takes (keepalived's `find_definition`).
    fn reference(&self, rest: &str) -> Option<(usize, usize)> {
        let bytes = rest.as_bytes();
        let braces = bytes.first() == Some(&b'{');
        let start = usize::from(braces);
        if !bytes
            .get(start)
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        {
            return None;
        }
        let len = bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .count();
        let mut end = start + len;
        let mut params = false;
        if braces {
            // `${_RANDOM 1 10}`: numbers after the name.
            let param_start = end;
            while bytes
                .get(end)
                .is_some_and(|b| *b == b' ' || b.is_ascii_digit())
            {
                end += 1;
            }
            let given = rest[param_start..end].trim();
            if !given.is_empty() {
                if rest[param_start..end].ends_with(' ') {
                    return None;
                }
                params = true;
            }
            if bytes.get(end) != Some(&b'}') {
                return None;
            }
            end += 1;
        } else if bytes
            .get(end)
            .is_some_and(|b| !matches!(b, b' ' | b'\t' | b',' | b')'))
        {
            return None;
        }
        // A multi-line definition only where the reference ends the line.
        let at_end = end == bytes.len();
        let name = &rest[start..start + len];
        let index = self
            .defs
            .iter()
            .position(|d| d.name == name && (at_end || !d.multiline))?;
        if params && self.defs[index].computed != Some(Computed::Random) {
            return None;
        }
        Some((index, end))
    }

    fn include(&mut self, kind: IncludeKind, pattern: &str, pos: usize) {
        if pattern.is_empty() {
            self.cx.error(pos, "`include` needs a file name".into());
            return;
        }
        let keyword = kind.keyword();
        if self.reading.len() > MAX_INCLUDE_DEPTH {
            self.cx.error(
                pos,
                format!("`{keyword}`: includes nested more than {MAX_INCLUDE_DEPTH} deep"),
            );
            return;
        }
        let current = self.reading.last().cloned().unwrap_or_default();
        let base = current.parent().unwrap_or(Path::new(""));
        let found = include::resolve(self.files, base, pattern);
        // keepalived's include checks: plain `include` reports nothing (it
        // only logs), the typed ones make these errors.
        let report = |cx: &mut Cx, strict: bool, message: String| {
            if strict {
                cx.error(pos, message);
            } else {
                cx.warn(pos, message);
            }
        };
        if found.files.is_empty() {
            if found.missing {
                report(
                    self.cx,
                    kind.missing_is_error(),
                    format!(
                        "`{keyword} {pattern}` names no file; keepalived reads nothing for it either (`includem` makes that an error)"
                    ),
                );
            } else if found.wildcards && found.skipped.is_empty() {
                report(
                    self.cx,
                    kind.no_match_is_error(),
                    format!(
                        "`{keyword} {pattern}` matches no file; keepalived reads nothing for it either (`includew` makes that an error)"
                    ),
                );
            }
        } else if found.missing && pattern.contains('{') {
            report(
                self.cx,
                kind.brace_is_error(),
                format!("`{keyword} {pattern}`: some of the files it names do not exist"),
            );
        }
        for (path, why) in &found.skipped {
            report(
                self.cx,
                kind.read_is_error(),
                format!(
                    "`{keyword} {pattern}`: {} {why}; keepalived skips it",
                    path.display()
                ),
            );
        }
        for path in found.files {
            if self.reading.contains(&path) {
                self.cx.error(
                    pos,
                    format!(
                        "`{keyword} {pattern}`: {} is already being read (it includes itself); keepalived would not finish reading",
                        path.display()
                    ),
                );
                continue;
            }
            if self.files_read >= MAX_FILES {
                self.cx.error(
                    pos,
                    format!("`{keyword}`: more than {MAX_FILES} files included"),
                );
                return;
            }
            let text = match self.files.read(&path) {
                Ok(text) => text,
                Err(error) => {
                    report(
                        self.cx,
                        kind.read_is_error(),
                        format!(
                            "`{keyword} {pattern}`: cannot read {}: {error}; keepalived skips it",
                            path.display()
                        ),
                    );
                    continue;
                }
            };
            self.files_read += 1;
            let first = self
                .cx
                .sources
                .add(self.main_lines, path.clone(), line_count(&text));
            self.reading.push(path.clone());
            self.read_text(&text, &path, first - 1);
            self.reading.pop();
        }
    }

    /// One line (no brace in it, or a brace alone) becomes a token.
    fn emit(&mut self, segment: String, pos: usize) {
        match segment.as_str() {
            "{" => self.tokens.push(Token::Open(pos)),
            "}" => self.tokens.push(Token::Close(pos)),
            _ => {
                let words = words(&segment, pos);
                if !words.is_empty() {
                    self.tokens.push(Token::Line {
                        words,
                        raw: segment,
                        line: pos,
                    });
                }
            }
        }
    }
}

/// keepalived's include keywords and the checks each makes errors of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IncludeKind {
    Plain,
    /// `includer`, `includem`, `includew`, `includeb`, `includea`.
    Checked(u8),
}

impl IncludeKind {
    fn keyword(self) -> String {
        match self {
            IncludeKind::Plain => "include".into(),
            IncludeKind::Checked(c) => format!("include{}", c as char),
        }
    }
    fn has(self, checks: &[u8]) -> bool {
        matches!(self, IncludeKind::Checked(c) if checks.contains(&c))
    }
    fn read_is_error(self) -> bool {
        self.has(b"rmwba")
    }
    fn missing_is_error(self) -> bool {
        self.has(b"mwa")
    }
    fn no_match_is_error(self) -> bool {
        self.has(b"wa")
    }
    fn brace_is_error(self) -> bool {
        self.has(b"ba")
    }
}

/// `include PATTERN` and its typed forms (keepalived's `is_include`).
fn include_of(line: &str) -> Option<(IncludeKind, &str)> {
    let rest = line.strip_prefix("include")?;
    let bytes = rest.as_bytes();
    let (kind, pattern) = match bytes.first()? {
        b if b.is_ascii_whitespace() || *b == 0x0b => (IncludeKind::Plain, &rest[1..]),
        c if b"rmwba".contains(c)
            && bytes
                .get(1)
                .is_some_and(|b| b.is_ascii_whitespace() || *b == 0x0b) =>
        {
            (IncludeKind::Checked(*c), &rest[2..])
        }
        _ => return None,
    };
    Some((kind, pattern.trim_start_matches([' ', '\t'])))
}

/// keepalived's `decomment`: drops the comment and the blanks around the
/// line, unescapes `\#` and `\!` outside double quotes, and keeps a final
/// `\` (a continued definition). An unterminated double quote is reported.
pub(super) fn decomment(line: &str, pos: usize, cx: &mut Cx) -> String {
    let line = line.trim_start_matches([' ', '\t']);
    let bytes = line.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut quote = false;
    let mut comment: Option<usize> = None;
    let mut continued = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                if comment.is_none() {
                    quote = !quote;
                }
                out.push(b'"');
                i += 1;
            }
            b'\\' => {
                if let Some(&next) = bytes.get(i + 1) {
                    if !quote && (next == b'#' || next == b'!') {
                        out.push(next);
                    } else {
                        out.extend([b'\\', next]);
                    }
                    i += 2;
                } else {
                    continued = true;
                    break;
                }
            }
            b @ (b'!' | b'#') => {
                if !quote && comment.is_none() {
                    comment = Some(out.len());
                }
                out.push(b);
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    if quote {
        cx.error(
            pos,
            "unterminated double-quoted string: keepalived reads it to the end of the line".into(),
        );
    }
    if let Some(at) = comment {
        out.truncate(at);
    }
    while out.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
        out.pop();
    }
    if continued {
        out.push(b'\\');
    }
    // Only ASCII was removed or kept whole, so this stays UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// Splits at the first `{` or `}` outside double quotes: the text before it
/// (or the brace alone, when the line starts with it) and what follows.
fn split_at_brace(line: &str) -> (String, Option<String>) {
    let bytes = line.as_bytes();
    let mut at = None;
    if matches!(bytes.first(), Some(b'{' | b'}')) {
        at = Some(0);
    } else {
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'{' | b'}' => {
                    at = Some(i);
                    break;
                }
                b'"' => match line[i + 1..].find('"') {
                    Some(close) => i += close + 2,
                    None => break,
                },
                _ => i += 1,
            }
        }
    }
    let trim = |s: &str| s.trim_end_matches([' ', '\t']).to_string();
    match at {
        None => (line.to_string(), None),
        Some(0) => {
            let rest = line[1..].trim_start_matches([' ', '\t']);
            let residue = (!rest.is_empty()).then(|| trim(rest));
            (line[..1].to_string(), residue)
        }
        Some(i) => (trim(&line[..i]), Some(trim(&line[i..]))),
    }
}

/// keepalived's word split of a keyword line (`alloc_strvec`): whitespace
/// separates, `"..."` is one word (and a `"` also ends an unquoted word).
fn words(segment: &str, pos: usize) -> Vec<Word> {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\x0c' | b'\n' | b'\r' | b'\x0b');
    let bytes = segment.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && is_space(bytes[i]) {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        if bytes[i] == b'"' {
            // An unmatched quote was reported when the line was read;
            // keepalived takes nothing after it.
            let Some(close) = segment[i + 1..].find('"') else {
                break;
            };
            out.push(Word {
                text: segment[i + 1..i + 1 + close].to_string(),
                quoted: true,
                line: pos,
            });
            i += close + 2;
        } else {
            let start = i;
            while i < bytes.len() && !is_space(bytes[i]) && bytes[i] != b'"' {
                i += 1;
            }
            out.push(Word {
                text: segment[start..i].to_string(),
                quoted: false,
                line: pos,
            });
        }
    }
    out
}
