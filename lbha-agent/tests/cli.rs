//! Snapshots of what `lbha-agent check-config`, `lbha-agent
//! import-keepalived` and `lbha-agent check-cloud` (its refusals before any
//! request; `tests/check_cloud.rs` runs it against the simulator) print, so
//! that every change to a message or an exit status is a diff of
//! `tests/cmd/` that a reviewer sees.
//!
//! Each `tests/cmd/NAME.toml` is one command line; `NAME.stdout` and
//! `NAME.stderr` hold what it must print and `status` its exit code. The
//! commands run from a fixed directory (the workspace root for `examples/`,
//! `tests/cmd/files/` for the bad files) and name their file relatively, so
//! the paths in the messages are the same on every machine.
//!
//! After an intended change of messages: `TRYCMD=overwrite cargo test -p
//! lbha-agent --test cli`, then review the diff of `tests/cmd/`.

#[test]
fn cli() {
    trycmd::TestCases::new()
        .register_bin("lbha-agent", trycmd::cargo::cargo_bin!("lbha-agent"))
        // Logging goes to stderr, which is snapshotted: a developer's RUST_LOG
        // must not add lines, and a JOURNAL_STREAM inherited from a systemd
        // session must not switch the log format.
        .env("RUST_LOG", "info")
        .env("JOURNAL_STREAM", "")
        .case("tests/cmd/*.toml");
}
