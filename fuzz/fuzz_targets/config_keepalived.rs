//! Fuzzes the keepalived.conf parser.
//!
//! Input: the file's bytes (invalid UTF-8 replaced, as for a text file).
//! Invariants: parsing never panics; an error result holds at least one
//! diagnostic; every diagnostic (error or warning) names the given path and
//! a line between 1 and the input's last line (or none); a configuration
//! that loads converts to TOML (`to_toml`, what `lbha-agent
//! import-keepalived` prints) that `parse_toml` reads back as the same
//! configuration.

#![no_main]

use std::path::Path;

use lbha_config as config;
use lbha_fuzz::{KEEPALIVED_PATH, check_result, check_toml_round_trip};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = Path::new(KEEPALIVED_PATH);
    if let Some(loaded) = check_result(config::parse_keepalived(&text, path), &text, path) {
        check_toml_round_trip(&loaded, "keepalived.conf");
    }
});
