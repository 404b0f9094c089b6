//! The DigitalOcean API token. It can move the floating IP anywhere in the
//! account (and do much more), so it is kept in a type that cannot print it:
//! Debug and Display show `***`, and errors about loading it name where it came
//! from, never what it is.

use std::{fmt, path::PathBuf};

use lbha_config::TokenSource;
use thiserror::Error;

/// A string that never shows itself in Debug/Display output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself; call sites are the only places it leaves this type
    /// (the `Authorization` header), which keeps them easy to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Error)]
pub enum TokenError {
    #[error("reading API token file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("API token environment variable {0} is not set")]
    EnvMissing(String),
    #[error("API token environment variable {0} is not valid UTF-8")]
    EnvNotUnicode(String),
    #[error("API token from {0} is empty")]
    Empty(String),
    // The offending character is deliberately not reported: it is part of
    // the token.
    #[error("API token from {0} contains characters not allowed in an HTTP header")]
    Invalid(String),
}

/// Loads and trims the token (files usually end in a newline).
pub fn load_token(source: &TokenSource) -> Result<Secret, TokenError> {
    let raw = match source {
        TokenSource::File(path) => {
            std::fs::read_to_string(path).map_err(|source| TokenError::Read {
                path: path.clone(),
                source,
            })?
        }
        TokenSource::Env(name) => match std::env::var(name) {
            Ok(v) => v,
            Err(std::env::VarError::NotPresent) => {
                return Err(TokenError::EnvMissing(name.clone()));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(TokenError::EnvNotUnicode(name.clone()));
            }
        },
    };
    let token = raw.trim();
    if token.is_empty() {
        return Err(TokenError::Empty(describe(source)));
    }
    // Checked here rather than when building the header so a bad token
    // is a configuration error at startup, not a failure at failover time.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::Invalid(describe(source)));
    }
    Ok(Secret::new(token))
}

/// Where a token comes from, for errors (never the token itself).
fn describe(source: &TokenSource) -> String {
    match source {
        TokenSource::File(path) => format!("file {}", path.display()),
        TokenSource::Env(name) => format!("environment variable {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "dop_v1_0123456789abcdefSECRET";

    fn temp_file(name: &str, contents: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("lbha-cloud-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new(TOKEN);
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(***)");
        assert_eq!(s.expose(), TOKEN);
    }

    #[test]
    fn file_token_is_trimmed() {
        let path = temp_file("trim", &format!("  {TOKEN}\n\n"));
        let s = load_token(&TokenSource::File(path.clone())).unwrap();
        assert_eq!(s.expose(), TOKEN);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn env_token_loads_and_missing_is_clear() {
        let name = format!("LBHA_CLOUD_TEST_TOKEN_{}", std::process::id());
        // SAFETY: the variable name is unique to this test; no other thread
        // reads or writes it.
        unsafe { std::env::set_var(&name, format!("{TOKEN}\n")) };
        assert_eq!(
            load_token(&TokenSource::Env(name.clone()))
                .unwrap()
                .expose(),
            TOKEN
        );
        // SAFETY: as above.
        unsafe { std::env::remove_var(&name) };
        let err = load_token(&TokenSource::Env(name.clone())).unwrap_err();
        assert!(
            matches!(err, TokenError::EnvMissing(ref n) if *n == name),
            "{err}"
        );
    }

    #[test]
    fn bad_tokens_are_rejected_without_echoing_them() {
        let empty = temp_file("empty", " \n");
        let err = load_token(&TokenSource::File(empty.clone())).unwrap_err();
        assert!(matches!(err, TokenError::Empty(_)), "{err}");
        std::fs::remove_file(empty).unwrap();

        let inner_space = temp_file("invalid", &format!("{TOKEN} {TOKEN}\n"));
        let err = load_token(&TokenSource::File(inner_space.clone())).unwrap_err();
        assert!(matches!(err, TokenError::Invalid(_)), "{err}");
        assert!(!format!("{err} {err:?}").contains(TOKEN));
        std::fs::remove_file(inner_space).unwrap();

        let missing = load_token(&TokenSource::File("/nonexistent/lbha/token".into())).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/lbha/token"),
            "{missing}"
        );
    }
}
