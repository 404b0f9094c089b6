//! Checks shared by the configuration fuzz targets.

use std::path::Path;

use lbha_config::{self as config, ConfigErrors, Diagnostic, Loaded};

/// The path the targets give the parsers; it only labels diagnostics.
pub const TOML_PATH: &str = "/etc/lbha/fuzz.toml";
pub const KEEPALIVED_PATH: &str = "/etc/keepalived/fuzz.conf";

/// The last line a diagnostic may point at. Lines are 1-based and counted at
/// `\n` as both parsers do; the empty line after a final newline counts,
/// because a TOML error "at the end of the input" is reported there.
pub fn last_line(text: &str) -> usize {
    text.bytes().filter(|&b| b == b'\n').count() + 1
}

/// Every diagnostic names the file it was given and a line that exists.
pub fn check_diagnostics(kind: &str, diagnostics: &[Diagnostic], text: &str, path: &Path) {
    let last = last_line(text);
    for d in diagnostics {
        assert_eq!(d.file, path, "{kind} names another file: {d}");
        if let Some(line) = d.line {
            assert!(
                (1..=last).contains(&line),
                "{kind} on line {line} of a {last}-line input: {d}"
            );
        }
        assert!(!d.message.is_empty(), "{kind} without a message: {d:?}");
    }
}

/// Checks a parse result's diagnostics; returns the configuration when it loaded.
pub fn check_result(
    result: Result<Loaded, ConfigErrors>,
    text: &str,
    path: &Path,
) -> Option<Loaded> {
    match result {
        Ok(loaded) => {
            check_diagnostics("warning", &loaded.warnings, text, path);
            Some(loaded)
        }
        Err(ConfigErrors { errors, warnings }) => {
            assert!(!errors.is_empty(), "Err without a diagnostic");
            check_diagnostics("error", &errors, text, path);
            // Warnings come with the errors now: they must point into the
            // file as well.
            check_diagnostics("warning", &warnings, text, path);
            None
        }
    }
}

/// `to_toml` writes a configuration that `parse_toml` reads back unchanged,
/// without errors, and writing that again gives the same text.
pub fn check_toml_round_trip(loaded: &Loaded, origin: &str) {
    let path = Path::new(TOML_PATH);
    let written = config::to_toml(&loaded.config);
    let reread = match config::parse_toml(&written, path) {
        Ok(reread) => reread,
        Err(errors) => panic!(
            "to_toml output of a configuration loaded from {origin} is rejected:\n{errors}\n\
             ---- written ----\n{written}---- config ----\n{:#?}",
            loaded.config
        ),
    };
    check_diagnostics("warning", &reread.warnings, &written, path);
    assert!(
        reread.config == loaded.config,
        "to_toml/parse_toml changes a configuration loaded from {origin}\n\
         ---- written ----\n{written}---- before ----\n{:#?}\n---- after ----\n{:#?}",
        loaded.config,
        reread.config
    );
    assert_eq!(config::to_toml(&reread.config), written);
}
