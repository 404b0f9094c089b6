//! Splitting a command line into words the way keepalived 2.2 does for
//! `script`, `notify_*` and the like (its `alloc_strvec_quoted_escaped`), so
//! that lbha runs exactly the argv keepalived would run.
//!
//! Whitespace separates words. Single and double quotes group (and may
//! start or stop in the middle of a word: `a"b c"d` is the one word `ab
//! cd`); the other quote kind is literal inside them. A backslash escapes,
//! inside quotes too: `\a \b \E \f \n \r \t \v`, `\cX` (control-X), `\NNN`
//! (up to three octal digits), `\xHH...` (hex digits), and any other
//! character stands for itself (`\"`, `\'`, `\\`, `\ `). keepalived fails
//! the whole command on an unterminated quote or a backslash at the end.

/// Why a command line cannot be split.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("missing closing {0} quote")]
    UnterminatedQuote(char),
    #[error("backslash at the end with nothing to escape")]
    TrailingBackslash,
    #[error("an escape makes a word that is not UTF-8")]
    NotUtf8,
}

/// keepalived's whitespace (`WHITE_SPACE_STR`).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\x0c' | b'\n' | b'\r' | b'\x0b')
}

/// Splits `command` into words as keepalived does (see the module doc).
pub fn split_command(command: &str) -> Result<Vec<String>, SplitError> {
    let bytes = command.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && is_space(bytes[i]) {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let mut word: Vec<u8> = Vec::new();
        let mut quote: Option<u8> = None;
        while i < bytes.len() {
            let b = bytes[i];
            match (quote, b) {
                (_, b'\\') => {
                    i += 1;
                    let Some(&next) = bytes.get(i) else {
                        return Err(SplitError::TrailingBackslash);
                    };
                    let (value, used) = escape(&bytes[i..], next);
                    word.push(value);
                    i += used;
                }
                (Some(q), b) if b == q => {
                    quote = None;
                    i += 1;
                }
                (None, b'"' | b'\'') => {
                    quote = Some(b);
                    i += 1;
                }
                (None, b) if is_space(b) => break,
                (_, b) => {
                    word.push(b);
                    i += 1;
                }
            }
        }
        if let Some(q) = quote {
            return Err(SplitError::UnterminatedQuote(q as char));
        }
        // keepalived keeps words as C strings: an escaped NUL ends one.
        if let Some(nul) = word.iter().position(|&b| b == 0) {
            word.truncate(nul);
        }
        words.push(String::from_utf8(word).map_err(|_| SplitError::NotUtf8)?);
    }
    Ok(words)
}

/// The byte an escape after a backslash stands for, and how many bytes of
/// `rest` (which starts at the escape's first character, `first`) it used.
fn escape(rest: &[u8], first: u8) -> (u8, usize) {
    match first {
        b'x' if rest.get(1).is_some_and(u8::is_ascii_hexdigit) => {
            // As keepalived: every following hex digit, keeping the low
            // eight bits.
            let digits = rest[1..]
                .iter()
                .take_while(|b| b.is_ascii_hexdigit())
                .count();
            let value = rest[1..=digits].iter().fold(0u8, |acc, &d| {
                let v = (d as char).to_digit(16).unwrap_or(0) as u8;
                acc.wrapping_shl(4) | v
            });
            (value, 1 + digits)
        }
        b'c' if rest.len() > 1 => (rest[1] & 0x1f, 2),
        b'0'..=b'7' => {
            let digits = rest
                .iter()
                .take(3)
                .take_while(|b| (b'0'..=b'7').contains(b))
                .count();
            let value = rest[..digits]
                .iter()
                .fold(0u8, |acc, &d| acc.wrapping_shl(3).wrapping_add(d - b'0'));
            (value, digits)
        }
        b'a' => (0x07, 1),
        b'b' => (0x08, 1),
        b'E' => (0x1b, 1),
        b'f' => (0x0c, 1),
        b'n' => (b'\n', 1),
        b'r' => (b'\r', 1),
        b't' => (b'\t', 1),
        b'v' => (0x0b, 1),
        other => (other, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(command: &str) -> Vec<String> {
        split_command(command).unwrap()
    }

    /// Each case checked against keepalived 2.2.7's `--dump-conf` of a
    /// `vrrp_script` whose `script` is the quoted command.
    #[test]
    fn words_quotes_and_escapes_as_keepalived() {
        assert_eq!(split("pidof haproxy"), ["pidof", "haproxy"]);
        assert_eq!(
            split("/usr/bin/killall -0 haproxy"),
            ["/usr/bin/killall", "-0", "haproxy"]
        );
        assert_eq!(split("  a\t b  "), ["a", "b"]);
        assert_eq!(
            split(r#"/bin/echo "x y" 'z w'"#),
            ["/bin/echo", "x y", "z w"]
        );
        assert_eq!(split(r#"a"b c"d"#), ["ab cd"]);
        assert_eq!(split(r#"'it"s' "it's""#), ["it\"s", "it's"]);
        assert_eq!(split(r"a\ b c\\d"), ["a b", "c\\d"]);
        assert_eq!(split(r#""a\"b" 'c\'d'"#), ["a\"b", "c'd"]);
        assert_eq!(split(r"\t\n\x41\101\cA\q"), ["\t\n\u{41}\u{41}\u{1}q"]);
        assert_eq!(split(r"x\0y"), ["x"], "an escaped NUL ends the word");
        assert_eq!(split("'' \"\""), ["", ""], "empty quoted words count");
        assert!(split("   ").is_empty());
    }

    #[test]
    fn broken_quoting_is_an_error() {
        assert_eq!(
            split_command("sh -c 'exit 1"),
            Err(SplitError::UnterminatedQuote('\''))
        );
        assert_eq!(
            split_command("a \"b"),
            Err(SplitError::UnterminatedQuote('"'))
        );
        assert_eq!(split_command("a b\\"), Err(SplitError::TrailingBackslash));
        assert_eq!(split_command(r"\xff"), Err(SplitError::NotUtf8));
    }
}
