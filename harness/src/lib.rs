//! One way to test lbha: the guards and helpers every privileged test and
//! the lab share, so that each piece of setup and cleanup exists once.
//!
//! - [`Netns`]: a uniquely named network namespace, deleted on drop with
//!   every process still in it; namespaces of killed earlier runs are
//!   removed when a process creates its first one. [`enter`], [`in_netns`]
//!   and [`ns_pid`] work with namespaces by name, from threads.
//! - [`veth_pair`], [`bridge`], [`bridge_port`]: links between namespaces,
//!   created directly inside them (the host's own namespace is never
//!   touched).
//! - [`run_command`]: a command run to completion with a timeout.
//! - [`ChildGuard`]: a child process killed and reaped on drop.
//! - [`Daemon`]: a long-running program with a log file, the shape
//!   keepalived, `lbha-agent` and the lab's daemons are built on.
//! - [`BpfFs`]: a private BPF filesystem, unmounted on drop.
//! - [`temp_dir`]: a temporary directory ([`tempfile::TempDir`]).
//! - [`require_root`] and [`require_privilege`]: a test that needs root
//!   fails without it, unless `LBHA_SKIP_PRIVILEGED=1` says to skip.
//!
//! The crate is a leaf (no lbha crate): `lbha-agent` and `lbha-dosim` use it
//! as a dev-dependency for their own privileged unit tests, and xtask (through
//! `lbha-lab`) builds it before the BPF toolchain exists. Every wait is
//! bounded, so a broken daemon fails a test instead of hanging it.

mod bpffs;
mod child;
mod command;
mod daemon;
mod link;
mod netns;

use std::{
    io,
    process::ExitStatus,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

pub use bpffs::BpfFs;
pub use child::ChildGuard;
pub use command::{run_command, wait_timeout};
pub use daemon::Daemon;
pub use link::{bridge, bridge_port, veth_pair};
pub use netns::{Netns, enter, in_netns, ns_pid};
pub use tempfile::TempDir;

/// Set to `1` to skip (instead of fail) tests that need root.
pub const SKIP_PRIVILEGED_ENV: &str = "LBHA_SKIP_PRIVILEGED";
/// Bound for short helper commands (`ip ...`).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong in a harness helper. Messages carry what is needed to
/// debug a failed test (the command line, its stderr, a daemon's log).
#[derive(thiserror::Error)]
pub enum Error {
    #[error("starting {command}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("{command} did not finish within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    #[error("{command} failed ({status}): {output}")]
    Failed {
        command: String,
        status: ExitStatus,
        /// Its stderr, or its stdout when stderr was empty.
        output: String,
    },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A helper's step failed; `what` says which.
    #[error("{what}")]
    Step {
        what: String,
        #[source]
        source: Box<Error>,
    },
    #[error("{daemon} exited ({status}) while waiting for {what}; its log:\n{log}")]
    DaemonExited {
        daemon: String,
        status: ExitStatus,
        what: String,
        log: String,
    },
    #[error("{daemon}: still waiting for {what} after {timeout:?}; its log:\n{log}")]
    DaemonTimeout {
        daemon: String,
        what: String,
        timeout: Duration,
        log: String,
    },
    #[error("unexpected output of {command}: {output:?}")]
    Output { command: String, output: String },
    #[error("the thread in network namespace {0} panicked")]
    ThreadPanicked(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The message and its causes, as anyhow shows them: tests `unwrap()`
/// harness results, and a derived `Debug` would bury the stderr of a failed
/// command inside struct syntax.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        if source.is_some() {
            write!(f, "\n\nCaused by:")?;
        }
        while let Some(cause) = source {
            write!(f, "\n    {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl Error {
    fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    fn step(what: impl Into<String>) -> impl FnOnce(Error) -> Self {
        let what = what.into();
        move |source| Error::Step {
            what,
            source: Box::new(source),
        }
    }
}

/// A fresh directory `<tmp>/lbha-<tag>-XXXXXX`, removed with its content
/// when the guard drops (unless told otherwise, see
/// [`TempDir::disable_cleanup`]). Mode 0700: callers needing more (script
/// security) set it themselves.
pub fn temp_dir(tag: &str) -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("lbha-{tag}-"))
        .tempdir()
        .map_err(Error::io(format!(
            "creating a temporary directory for {tag}"
        )))
}

static UNIQUE: AtomicU32 = AtomicU32::new(0);

/// `PID-N`, unique within this machine while this process lives.
fn unique_suffix() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

/// Name of the running test (libtest names each test's thread after it).
fn test_name() -> String {
    thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string()
}

/// Returns `true` when running as root. Otherwise panics with an
/// explanation, unless `LBHA_SKIP_PRIVILEGED=1` is set: then it prints that
/// the test was skipped and returns `false`, and the test should return
/// early:
///
/// ```no_run
/// if !lbha_harness::require_root() {
///     return;
/// }
/// ```
#[track_caller]
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    require_privilege(root, "root (network namespaces, BPF, mounts)")
}

/// [`require_root`] for a privilege other than being root (a capability,
/// say): `held` tells whether the test has it, `needs` names it in the
/// messages. `true` when held; otherwise a panic, or `false` (with a
/// printed SKIPPED line) when `LBHA_SKIP_PRIVILEGED=1` is set.
#[track_caller]
pub fn require_privilege(held: bool, needs: &str) -> bool {
    if held {
        return true;
    }
    if std::env::var(SKIP_PRIVILEGED_ENV).as_deref() == Ok("1") {
        eprintln!(
            "SKIPPED {}: needs {needs}; {SKIP_PRIVILEGED_ENV}=1 is set",
            test_name()
        );
        return false;
    }
    panic!(
        "{} needs {needs}. Run the tests as root (e.g. `sudo -E cargo xtask test`), \
         or set {SKIP_PRIVILEGED_ENV}=1 to skip them.",
        test_name()
    );
}

/// Sends `signal` to process `pid`, ignoring a process that is already gone.
pub fn send_signal(pid: i32, signal: libc::c_int) {
    if pid > 0 {
        // SAFETY: plain kill(2).
        unsafe { libc::kill(pid, signal) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_dirs_are_distinct_and_removed_on_drop() {
        let a = temp_dir("unit").unwrap();
        let b = temp_dir("unit").unwrap();
        assert_ne!(a.path(), b.path());
        let name = a.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("lbha-unit-"), "{name}");
        let path = a.path().to_owned();
        std::fs::write(path.join("file"), "x").unwrap();
        drop(a);
        assert!(!path.exists());
    }

    #[test]
    fn a_held_privilege_is_required_silently() {
        assert!(require_privilege(true, "nothing"));
    }

    #[test]
    fn a_missing_privilege_fails_or_is_skipped_as_told() {
        let result = std::panic::catch_unwind(|| require_privilege(false, "a unicorn"));
        if std::env::var(SKIP_PRIVILEGED_ENV).as_deref() == Ok("1") {
            assert!(!result.unwrap());
        } else {
            let message = result.unwrap_err();
            let message = message.downcast_ref::<String>().unwrap();
            assert!(message.contains("needs a unicorn"), "{message}");
            assert!(message.contains(SKIP_PRIVILEGED_ENV), "{message}");
        }
    }

    #[test]
    fn errors_show_their_steps() {
        let error = Error::step("creating network namespace x")(Error::Timeout {
            command: "ip".into(),
            timeout: Duration::from_secs(1),
        });
        assert_eq!(error.to_string(), "creating network namespace x");
        let source = std::error::Error::source(&error).unwrap();
        assert_eq!(source.to_string(), "ip did not finish within 1s");
        assert_eq!(
            format!("{error:?}"),
            "creating network namespace x\n\nCaused by:\n    ip did not finish within 1s"
        );
    }
}
