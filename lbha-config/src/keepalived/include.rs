//! keepalived's `include`: which files a pattern names, found the way
//! keepalived finds them (glibc `glob` with `GLOB_BRACE | GLOB_MARK`).
//!
//! A relative pattern is relative to the directory of the file that holds
//! the `include` (keepalived changes into that directory while it reads the
//! file). `*`, `?` and `[...]` match within one path component and never a
//! leading dot; `{a,b}` expands to each alternative in turn (each one's
//! matches sorted, as glibc appends them); `\` escapes. Directories and
//! executable files are skipped, as keepalived skips them.
//!
//! File access goes through [`Files`], so that the fuzzers and unit tests
//! parse without touching the disk.

use std::path::{Path, PathBuf};

/// What a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Missing,
    Dir,
    /// A regular file keepalived reads: not executable.
    File,
    /// Anything else keepalived refuses to read as configuration: an
    /// executable file, a device, a socket.
    NotConfig,
}

/// The file system an include is resolved in.
pub trait Files {
    /// What `path` is (following symbolic links, as keepalived's `stat`).
    fn kind(&self, path: &Path) -> Kind;
    /// The names in directory `dir` (`None`: not a readable directory).
    fn list(&self, dir: &Path) -> Option<Vec<String>>;
    fn read(&self, path: &Path) -> std::io::Result<String>;
    /// The directory `$_PWD` names while `dir`'s files are read.
    fn absolute(&self, dir: &Path) -> PathBuf {
        dir.to_path_buf()
    }
}

/// No file at all: what [`crate::parse_keepalived`] reads text with.
pub struct NoFiles;

impl Files for NoFiles {
    fn kind(&self, _: &Path) -> Kind {
        Kind::Missing
    }
    fn list(&self, _: &Path) -> Option<Vec<String>> {
        None
    }
    fn read(&self, path: &Path) -> std::io::Result<String> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{}: not read (parsing text only)", path.display()),
        ))
    }
}

/// The real file system.
pub struct DiskFiles;

impl Files for DiskFiles {
    fn kind(&self, path: &Path) -> Kind {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(path) {
            Err(_) => Kind::Missing,
            Ok(m) if m.is_dir() => Kind::Dir,
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 == 0 => Kind::File,
            Ok(_) => Kind::NotConfig,
        }
    }
    fn list(&self, dir: &Path) -> Option<Vec<String>> {
        let entries = std::fs::read_dir(dir).ok()?;
        Some(
            entries
                .filter_map(std::result::Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect(),
        )
    }
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn absolute(&self, dir: &Path) -> PathBuf {
        std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
    }
}

/// Files kept in memory, for tests: every parent of a file is a directory.
#[cfg(test)]
#[derive(Default)]
pub struct MemoryFiles(pub std::collections::BTreeMap<PathBuf, String>);

/// `a/b/../c` to `a/c`, as the kernel resolves it (without symlinks).
#[cfg(test)]
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
impl Files for MemoryFiles {
    fn kind(&self, path: &Path) -> Kind {
        let path = &lexical(path);
        if self.0.contains_key(path) {
            Kind::File
        } else if self.0.keys().any(|k| k.starts_with(path) && k != path) {
            Kind::Dir
        } else {
            Kind::Missing
        }
    }
    fn list(&self, dir: &Path) -> Option<Vec<String>> {
        let dir = &lexical(dir);
        if self.kind(dir) != Kind::Dir {
            return None;
        }
        let mut names: Vec<String> = self
            .0
            .keys()
            .filter_map(|k| k.strip_prefix(dir).ok())
            .filter_map(|rest| rest.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        names.dedup();
        Some(names)
    }
    fn read(&self, path: &Path) -> std::io::Result<String> {
        self.0
            .get(&lexical(path))
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
}

/// What a pattern matched.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Matches {
    /// Readable configuration files, in keepalived's order.
    pub files: Vec<PathBuf>,
    /// Matches keepalived skips, with why.
    pub skipped: Vec<(PathBuf, &'static str)>,
    /// A component without wildcards named nothing (glibc's "missing files").
    pub missing: bool,
    /// The pattern has wildcards.
    pub wildcards: bool,
}

/// At most this many alternatives from `{...}`: a pattern is one line of a
/// configuration, not a way to enumerate the disk.
const MAX_ALTERNATIVES: usize = 256;
/// At most this many matches of one pattern.
const MAX_MATCHES: usize = 1024;

/// Resolves `pattern` (relative to `base`) as keepalived does.
pub fn resolve(files: &dyn Files, base: &Path, pattern: &str) -> Matches {
    let mut out = Matches::default();
    for alternative in expand_braces(pattern) {
        let full = if alternative.starts_with('/') {
            alternative
        } else {
            format!("{}/{alternative}", base.display())
        };
        let mut found = Vec::new();
        glob_one(files, &full, &mut found, &mut out);
        found.sort();
        for path in found {
            if out.files.len() + out.skipped.len() >= MAX_MATCHES {
                break;
            }
            match files.kind(&path) {
                Kind::File => out.files.push(path),
                Kind::Dir => out.skipped.push((path, "is a directory")),
                Kind::NotConfig => out
                    .skipped
                    .push((path, "is not a regular non-executable file")),
                Kind::Missing => out.missing = true,
            }
        }
    }
    out
}

fn has_wildcard(component: &str) -> bool {
    let mut escaped = false;
    for c in component.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

fn unescape(component: &str) -> String {
    let mut out = String::new();
    let mut chars = component.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// Expands one brace-free pattern component by component.
fn glob_one(files: &dyn Files, pattern: &str, found: &mut Vec<PathBuf>, out: &mut Matches) {
    let mut current = vec![PathBuf::from("/")];
    for component in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        if has_wildcard(component) {
            out.wildcards = true;
            for dir in &current {
                let Some(mut names) = files.list(dir) else {
                    continue;
                };
                names.sort();
                for name in names {
                    if fnmatch(component.as_bytes(), name.as_bytes()) {
                        next.push(dir.join(name));
                        if next.len() > MAX_MATCHES {
                            break;
                        }
                    }
                }
            }
        } else {
            let literal = unescape(component);
            for dir in &current {
                let path = dir.join(&literal);
                if files.kind(&path) == Kind::Missing {
                    out.missing = true;
                } else {
                    next.push(path);
                }
            }
        }
        current = next;
        if current.is_empty() {
            return;
        }
    }
    found.extend(current);
}

/// `a{b,c}d` to `abd`, `acd` (nested braces too); a brace without its
/// closing one is literal, as glibc takes it.
fn expand_braces(pattern: &str) -> Vec<String> {
    let mut out = Vec::new();
    expand_into(pattern, &mut out);
    out
}

fn expand_into(pattern: &str, out: &mut Vec<String>) {
    if out.len() >= MAX_ALTERNATIVES {
        return;
    }
    let bytes = pattern.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'{' => {
                // Find the matching close and the top-level commas.
                let mut depth = 0;
                let mut commas = Vec::new();
                let mut j = i;
                let mut close = None;
                while j < bytes.len() {
                    match bytes[j] {
                        b'\\' => j += 1,
                        b'{' => depth += 1,
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                close = Some(j);
                                break;
                            }
                        }
                        b',' if depth == 1 => commas.push(j),
                        _ => {}
                    }
                    j += 1;
                }
                let Some(close) = close else {
                    i += 1;
                    continue;
                };
                let (prefix, suffix) = (&pattern[..i], &pattern[close + 1..]);
                let mut start = i + 1;
                for end in commas.into_iter().chain([close]) {
                    let alternative = &pattern[start..end];
                    expand_into(&format!("{prefix}{alternative}{suffix}"), out);
                    start = end + 1;
                }
                return;
            }
            _ => i += 1,
        }
    }
    out.push(pattern.to_string());
}

/// fnmatch(3) with FNM_PERIOD, within one component: `*`, `?`, `[...]`
/// (`!`/`^` negate, ranges), `\` escapes.
fn fnmatch(pattern: &[u8], name: &[u8]) -> bool {
    if name.first() == Some(&b'.') && pattern.first() != Some(&b'.') {
        return false;
    }
    matches(pattern, name)
}

fn matches(pattern: &[u8], name: &[u8]) -> bool {
    // Iterative with one backtrack point for `*`: linear in practice and
    // never recursive on hostile patterns.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                b'[' => match class(&pattern[p..], name[n]) {
                    Some((true, len)) => {
                        p += len;
                        n += 1;
                        continue;
                    }
                    // An unclosed `[` is literal.
                    None if name[n] == b'[' => {
                        p += 1;
                        n += 1;
                        continue;
                    }
                    Some((false, _)) | None => {}
                },
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == name[n] => {
                    p += 2;
                    n += 1;
                    continue;
                }
                c if c == name[n] => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Whether `c` is in the class at the start of `pattern` (`[...]`), and the
/// class's length; `None` when the `[` is not closed.
fn class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &b = pattern.get(i)?;
        if b == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        let lo = if b == b'\\' {
            i += 1;
            *pattern.get(i)?
        } else {
            b
        };
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = pattern[i + 2];
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(paths: &[&str]) -> MemoryFiles {
        MemoryFiles(
            paths
                .iter()
                .map(|p| (PathBuf::from(p), String::new()))
                .collect(),
        )
    }

    #[test]
    fn fnmatch_like_glibc() {
        assert!(fnmatch(b"*.conf", b"a.conf"));
        assert!(!fnmatch(b"*.conf", b".hidden.conf"));
        assert!(fnmatch(b".*.conf", b".hidden.conf"));
        assert!(fnmatch(b"a?c", b"abc"));
        assert!(fnmatch(b"[a-c]x", b"bx"));
        assert!(!fnmatch(b"[!a-c]x", b"bx"));
        assert!(fnmatch(b"\\*", b"*"));
        assert!(!fnmatch(b"\\*", b"a"));
        assert!(fnmatch(b"a*b*c", b"axxbyyc"));
        assert!(!fnmatch(b"a*b*c", b"axxbyy"));
        assert!(fnmatch(b"[x", b"[x"), "an unclosed class is literal");
    }

    #[test]
    fn braces_expand_in_order() {
        assert_eq!(expand_braces("a{b,c}d"), ["abd", "acd"]);
        assert_eq!(expand_braces("{x,y{1,2}}"), ["x", "y1", "y2"]);
        assert_eq!(expand_braces("a{b"), ["a{b"]);
    }

    #[test]
    fn patterns_resolve_relative_to_the_including_directory() {
        let fs = memory(&[
            "/etc/keepalived/conf.d/b.conf",
            "/etc/keepalived/conf.d/a.conf",
            "/etc/keepalived/conf.d/.swap.conf",
            "/etc/keepalived/conf.d/sub/c.conf",
            "/etc/keepalived/other.conf",
        ]);
        let base = Path::new("/etc/keepalived");
        let m = resolve(&fs, base, "conf.d/*.conf");
        assert_eq!(
            m.files,
            [
                PathBuf::from("/etc/keepalived/conf.d/a.conf"),
                PathBuf::from("/etc/keepalived/conf.d/b.conf")
            ]
        );
        assert!(m.wildcards && !m.missing);
        let m = resolve(&fs, base, "conf.d/*");
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.skipped.len(), 1, "the directory is skipped: {m:?}");
        let m = resolve(&fs, base, "/etc/keepalived/{other,conf.d/b}.conf");
        assert_eq!(
            m.files,
            [
                PathBuf::from("/etc/keepalived/other.conf"),
                PathBuf::from("/etc/keepalived/conf.d/b.conf")
            ]
        );
        let m = resolve(&fs, base, "missing.conf");
        assert!(m.files.is_empty() && m.missing && !m.wildcards);
        let m = resolve(&fs, base, "*.none");
        assert!(m.files.is_empty() && !m.missing && m.wildcards);
    }
}
