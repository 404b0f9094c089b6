//! systemd integration: `sd_notify` readiness, reload and stop
//! notifications, watchdog pings (through the `sd-notify` crate), and log
//! lines journald files under the right priority.
//!
//! With `WatchdogSec=` set, systemd passes `$WATCHDOG_USEC` (and
//! `$WATCHDOG_PID`) and restarts the service when `WATCHDOG=1` does not
//! arrive within it. The crate sends to the socket `$NOTIFY_SOCKET` names
//! (a path: systemd's `/run/systemd/notify`, or `/run/host/notify` in a
//! container), reading the variable at each call, so it stays in this
//! process's environment; the script runner removes it from the scripts'
//! (see [`NOTIFY_SOCKET`]).
//!
//! Outside systemd (no `$NOTIFY_SOCKET`) every call here does nothing.

use std::{
    ffi::OsStr,
    fmt,
    os::unix::fs::MetadataExt,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sd_notify::NotifyState;
use tokio::task::{AbortHandle, JoinHandle};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// The variable naming systemd's notification socket. Scripts must not
/// inherit it: with `NotifyAccess=main` systemd would only log their
/// messages as refused, and a script that sent `READY=1` or `STOPPING=1`
/// under another setting would speak for the agent.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// What systemd told this process through its environment, read once at
/// start.
#[derive(Debug, Default)]
struct Systemd {
    active: bool,
    watchdog: Option<Duration>,
}

/// The ping interval for a `WATCHDOG_USEC` timeout: half of it, as
/// `sd_watchdog_enabled(3)` advises.
pub fn watchdog_interval(timeout: Option<Duration>) -> Option<Duration> {
    timeout
        .filter(|timeout| !timeout.is_zero())
        .map(|timeout| (timeout / 2).max(Duration::from_millis(1)))
}

static SYSTEMD: OnceLock<Systemd> = OnceLock::new();

fn systemd() -> &'static Systemd {
    SYSTEMD.get_or_init(|| Systemd {
        active: std::env::var_os(NOTIFY_SOCKET).is_some(),
        // `WATCHDOG_PID` naming another process means the watchdog is not ours.
        watchdog: watchdog_interval(sd_notify::watchdog_enabled()),
    })
}

/// Reads systemd's variables once and removes the watchdog's from the
/// environment, so scripts do not inherit them. `$NOTIFY_SOCKET` stays
/// (the crate reads it at each notification); the script runner removes
/// it from the scripts' environment.
///
/// # Safety
///
/// No other thread may be running (this calls `std::env::remove_var`):
/// call it at the top of `main`.
pub unsafe fn take_from_env() {
    systemd();
    // SAFETY: the caller guarantees a single thread.
    unsafe { sd_notify::watchdog_enabled_and_unset_env() };
}

/// Whether the service runs under systemd with a notification socket.
pub fn is_active() -> bool {
    systemd().active
}

/// Sends `state`; failures are logged, never fatal (a missed notification
/// costs at worst a restart by systemd). The crate's datagram socket has
/// no send timeout (the hand-written one gave up after 1 s): a send blocks
/// only while PID 1 leaves its notification queue (8 MB) full, i.e. when
/// the service manager itself has stopped working.
fn notify(state: &[NotifyState<'_>]) {
    if !systemd().active {
        return;
    }
    if let Err(error) = sd_notify::notify(state) {
        let state: Vec<String> = state.iter().map(ToString::to_string).collect();
        tracing::warn!(%error, state = state.join(" "), "sd_notify failed");
    }
}

/// `READY=1`, with a status line for `systemctl status`.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` at the start of a configuration reload; send [`ready`]
/// when it is done. `MONOTONIC_USEC` is what `Type=notify-reload` expects.
pub fn reloading() {
    notify(&[
        NotifyState::Reloading,
        NotifyState::MonotonicUsec(i128::from(monotonic_usec())),
        NotifyState::Status("reloading"),
    ]);
}

/// Set once shutdown has begun: tasks finishing is expected from then on.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// `STOPPING=1` when shutdown begins.
pub fn stopping() {
    STOPPING.store(true, Ordering::Relaxed);
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: resigning mastership"),
    ]);
}

/// `STATUS=` only.
pub fn status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

fn monotonic_usec() -> u64 {
    crate::clock::monotonic_ns() / 1_000
}

/// The tasks whose liveness the watchdog vouches for (the daemon's
/// interface tasks); replaced wholesale, e.g. after a reload.
static WATCHED: Mutex<Vec<AbortHandle>> = Mutex::new(Vec::new());

/// Makes the watchdog stop pinging as soon as one of `tasks` has finished
/// (returned or panicked) while the daemon runs, so systemd restarts a
/// daemon that lost an interface instead of trusting a half-dead one.
pub fn watch_tasks(tasks: impl IntoIterator<Item = AbortHandle>) {
    *WATCHED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = tasks.into_iter().collect();
}

fn watched_tasks_alive() -> bool {
    WATCHED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .all(|task| !task.is_finished())
}

/// Starts the watchdog pinger when systemd asked for one (`WatchdogSec=`).
///
/// It runs on the daemon's runtime, so pings stop when the runtime stops
/// making progress, when a task registered with [`watch_tasks`] has died,
/// or when `alive` says so; systemd then kills and restarts the service.
pub fn spawn_watchdog(alive: impl Fn() -> bool + Send + 'static) -> Option<JoinHandle<()>> {
    let interval = systemd().watchdog?;
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog enabled"
    );
    Some(tokio::spawn(run_watchdog(
        interval,
        || notify(&[NotifyState::Watchdog]),
        move || STOPPING.load(Ordering::Relaxed) || (alive() && watched_tasks_alive()),
    )))
}

/// Calls `ping` every `interval` while `alive()` holds; logs once when it
/// stops holding.
async fn run_watchdog(interval: Duration, ping: impl Fn(), alive: impl Fn() -> bool) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    loop {
        tick.tick().await;
        if alive() {
            ping();
            healthy = true;
        } else if healthy {
            tracing::error!(
                "a daemon task has stopped; no more watchdog pings (systemd will restart lbha-agent)"
            );
            healthy = false;
        }
    }
}

/// Whether standard error is connected to journald: `$JOURNAL_STREAM`
/// (`DEVICE:INODE`) names the stream systemd connected, and it is still fd 2.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(stderr).metadata() else {
        return false;
    };
    journal_stream_matches(&value, meta.dev(), meta.ino())
}

fn journal_stream_matches(value: &OsStr, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// The syslog priority journald reads from a `<N>` line prefix.
pub fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// An event format for standard error connected to journald: each line
/// starts with `<N>`, the syslog priority of its level, so `journalctl -p
/// warning` works (journald's `SyslogLevelPrefix=` is on by default).
///
/// Rather than `tracing-journald`: it files each field (`vrid`,
/// `interface`, `error`) as a journal field of its own and keeps only the
/// bare message in `MESSAGE`, so the lines operators read (`journalctl -u
/// lbha-agent`, `systemctl status`) would lose the very context that says
/// which instance changed state or why a request failed; and it writes to
/// journald's socket, beside the stderr stream panics still go to, which
/// the journal could then order differently. The stream with prefixes gets
/// the priorities right (`cargo xtask test-systemd` checks them) and keeps
/// every line whole.
pub struct JournalPrefix<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for JournalPrefix<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", syslog_priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::{io, os::unix::net::UnixDatagram, process::Command};

    fn receive(listener: &UnixDatagram) -> String {
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = listener.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    /// Set in the child process of [`notifies_through_the_socket`]: the
    /// variables systemd sets are process-wide, so the module reads them in
    /// a process of its own, never in the test runner's threads.
    const CHILD_ENV: &str = "LBHA_TEST_SD_NOTIFY_CHILD";

    /// Runs `test` of this test binary alone in a child process with `env`.
    fn run_child(test: &str, env: &[(&str, &OsStr)]) {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .env_remove(NOTIFY_SOCKET)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        for (name, value) in env {
            cmd.env(name, value);
        }
        let output = cmd.output().unwrap();
        assert!(
            output.status.success(),
            "child failed: {}\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The child half of [`notifies_through_the_socket`]: what the daemon
    /// sends over its life, with the watchdog systemd asked for.
    #[test]
    fn child_sends_the_daemon_notifications() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        // SAFETY: this test runs alone in its own process.
        unsafe { take_from_env() };
        assert!(is_active());
        assert!(std::env::var_os("WATCHDOG_USEC").is_none());
        assert_eq!(systemd().watchdog, Some(Duration::from_secs(5)));
        ready("running");
        reloading();
        status("half way");
        notify(&[NotifyState::Watchdog]);
        stopping();
    }

    #[test]
    fn notifies_through_the_socket() {
        let dir = lbha_harness::temp_dir("ops-notify").unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        run_child(
            "ops::systemd::tests::child_sends_the_daemon_notifications",
            &[
                (NOTIFY_SOCKET, path.as_os_str()),
                ("WATCHDOG_USEC", OsStr::new("10000000")),
            ],
        );
        assert_eq!(receive(&listener), "READY=1\nSTATUS=running\n");
        let reloading = receive(&listener);
        let lines: Vec<_> = reloading.lines().collect();
        assert_eq!(lines[0], "RELOADING=1", "{reloading}");
        let usec: u64 = lines[1]
            .strip_prefix("MONOTONIC_USEC=")
            .unwrap()
            .parse()
            .unwrap();
        assert!(usec > 0 && usec <= monotonic_usec(), "{reloading}");
        assert_eq!(lines[2..], ["STATUS=reloading"]);
        assert_eq!(receive(&listener), "STATUS=half way\n");
        assert_eq!(receive(&listener), "WATCHDOG=1\n");
        assert_eq!(
            receive(&listener),
            "STOPPING=1\nSTATUS=stopping: resigning mastership\n"
        );
    }

    /// The child half of [`without_systemd_nothing_happens`].
    #[test]
    fn child_without_systemd() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        // SAFETY: this test runs alone in its own process.
        unsafe { take_from_env() };
        assert!(!is_active());
        // Another process's watchdog (WATCHDOG_PID) is not ours.
        assert_eq!(systemd().watchdog, None);
        ready("running");
        stopping();
    }

    #[test]
    fn without_systemd_nothing_happens() {
        run_child(
            "ops::systemd::tests::child_without_systemd",
            &[
                ("WATCHDOG_USEC", OsStr::new("10000000")),
                ("WATCHDOG_PID", OsStr::new("1")),
            ],
        );
    }

    #[test]
    fn watchdog_interval_is_half_of_watchdog_usec() {
        assert_eq!(
            watchdog_interval(Some(Duration::from_secs(10))),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            watchdog_interval(Some(Duration::from_micros(1))),
            Some(Duration::from_millis(1))
        );
        assert_eq!(watchdog_interval(Some(Duration::ZERO)), None);
        assert_eq!(watchdog_interval(None), None);
    }

    #[tokio::test]
    async fn watchdog_pings_only_while_alive() {
        use std::sync::{
            Arc,
            atomic::{AtomicBool, AtomicUsize, Ordering},
        };
        let pings = Arc::new(AtomicUsize::new(0));
        let alive = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn({
            let (pings, alive) = (pings.clone(), alive.clone());
            async move {
                run_watchdog(
                    Duration::from_millis(20),
                    move || {
                        pings.fetch_add(1, Ordering::SeqCst);
                    },
                    move || alive.load(Ordering::SeqCst),
                )
                .await;
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let while_alive = pings.load(Ordering::SeqCst);
        assert!(while_alive >= 3, "{while_alive} pings");
        // The runtime is single-threaded: no tick runs between the store and
        // the load below, so any later ping would be counted.
        alive.store(false, Ordering::SeqCst);
        let stopped = pings.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(pings.load(Ordering::SeqCst), stopped);
        task.abort();
    }

    #[tokio::test]
    async fn watched_tasks_liveness() {
        let done = tokio::spawn(async {});
        let pending = tokio::spawn(std::future::pending::<()>());
        while !done.is_finished() {
            tokio::task::yield_now().await;
        }
        watch_tasks([pending.abort_handle()]);
        assert!(watched_tasks_alive());
        watch_tasks([pending.abort_handle(), done.abort_handle()]);
        assert!(!watched_tasks_alive());
        watch_tasks([]);
        pending.abort();
    }

    #[test]
    fn journal_stream_detection() {
        assert!(journal_stream_matches(OsStr::new("8:12345"), 8, 12345));
        assert!(!journal_stream_matches(OsStr::new("8:12345"), 8, 1));
        assert!(!journal_stream_matches(OsStr::new("garbage"), 8, 12345));
        assert_eq!(syslog_priority(Level::WARN), 4);
        assert_eq!(syslog_priority(Level::ERROR), 3);
    }

    #[test]
    fn journal_prefix_formats_priority() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Buf {
            fn write(&mut self, data: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(data);
                Ok(data.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .map_event_format(JournalPrefix)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("disk on fire");
            tracing::info!(vrid = 51, "became master");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert!(lines[0].starts_with("<4> WARN "), "{text}");
        assert!(lines[0].ends_with("disk on fire"), "{text}");
        assert!(lines[1].starts_with("<6> INFO "), "{text}");
    }
}
