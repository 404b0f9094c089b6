//! systemd integration written out by hand (it is one datagram per message):
//! `sd_notify` readiness, reload and stop notifications, watchdog pings, and
//! log lines journald files under the right priority.
//!
//! The protocol (`man sd_notify`): newline-separated `KEY=VALUE` assignments
//! in one datagram sent to the `AF_UNIX` socket named by `$NOTIFY_SOCKET`, a
//! path or, when it starts with `@`, a name in the abstract namespace. With
//! `WatchdogSec=` set, systemd passes `$WATCHDOG_USEC` (and `$WATCHDOG_PID`)
//! and restarts the service when `WATCHDOG=1` does not arrive within it.
//!
//! Outside systemd (no `$NOTIFY_SOCKET`) every call here does nothing.

use std::{
    ffi::{OsStr, OsString},
    fmt, io,
    os::{
        linux::net::SocketAddrExt,
        unix::{
            ffi::OsStrExt,
            fs::MetadataExt,
            net::{SocketAddr, UnixDatagram},
        },
    },
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::task::{AbortHandle, JoinHandle};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// A connection to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// Targets the socket `$NOTIFY_SOCKET` names: a path, or `@name` for an
    /// abstract socket.
    pub fn new(notify_socket: &OsStr) -> io::Result<Self> {
        let bytes = notify_socket.as_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None if bytes.starts_with(b"/") => SocketAddr::from_pathname(notify_socket)?,
            // systemd 253+ also knows `vsock:` addresses (for virtual
            // machines), which have nothing to do on a load balancer.
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("unsupported NOTIFY_SOCKET {}", notify_socket.display()),
                ));
            }
        };
        let socket = UnixDatagram::unbound()?;
        // systemd reads the socket promptly; never let a stuck manager stall
        // the runtime thread for long.
        socket.set_write_timeout(Some(Duration::from_secs(1)))?;
        Ok(Self { socket, addr })
    }

    /// Sends one notification (`KEY=VALUE` lines).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.socket.send_to_addr(state.as_bytes(), &self.addr)?;
        Ok(())
    }
}

/// What systemd told this process through its environment.
#[derive(Debug, Default)]
pub struct Systemd {
    notifier: Option<Notifier>,
    watchdog: Option<Duration>,
}

impl Systemd {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Self {
        let notifier = var("NOTIFY_SOCKET").and_then(|path| match Notifier::new(&path) {
            Ok(notifier) => Some(notifier),
            Err(error) => {
                tracing::warn!(%error, "cannot notify systemd");
                None
            }
        });
        let watchdog = watchdog_interval(
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        );
        Self { notifier, watchdog }
    }

    /// Whether `$NOTIFY_SOCKET` was usable.
    pub fn is_active(&self) -> bool {
        self.notifier.is_some()
    }

    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, as
    /// `sd_watchdog_enabled(3)` advises.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `state`; failures are logged, never fatal (a missed
    /// notification costs at worst a restart by systemd).
    pub fn notify(&self, state: &str) {
        if let Some(notifier) = &self.notifier
            && let Err(error) = notifier.notify(state)
        {
            tracing::warn!(%error, state, "sd_notify failed");
        }
    }
}

/// The ping interval for `WATCHDOG_USEC` (microseconds), unless
/// `WATCHDOG_PID` names another process.
pub fn watchdog_interval(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    our_pid: u32,
) -> Option<Duration> {
    let parse = |value: &OsStr| value.to_str()?.trim().parse::<u64>().ok();
    if let Some(pid) = pid
        && parse(pid) != Some(u64::from(our_pid))
    {
        return None;
    }
    let usec = parse(usec?).filter(|&usec| usec > 0)?;
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

static SYSTEMD: OnceLock<Systemd> = OnceLock::new();

fn systemd() -> &'static Systemd {
    SYSTEMD.get_or_init(|| Systemd::from_vars(|name| std::env::var_os(name)))
}

/// Reads systemd's variables once and removes them from the environment,
/// so notify and check scripts do not inherit a notification socket (with
/// `NotifyAccess=main` systemd would only log their messages as refused).
///
/// # Safety
///
/// No other thread may be running (this calls `std::env::remove_var`):
/// call it at the top of `main`.
pub unsafe fn take_from_env() {
    systemd();
    for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        // SAFETY: the caller guarantees a single thread.
        unsafe { std::env::remove_var(name) };
    }
}

/// Whether the service runs under systemd with a notification socket.
pub fn is_active() -> bool {
    systemd().is_active()
}

/// `READY=1`, with a status line for `systemctl status`.
pub fn ready(status: &str) {
    systemd().notify(&format!("READY=1\nSTATUS={status}"));
}

/// `RELOADING=1` at the start of a configuration reload; send [`ready`]
/// when it is done. `MONOTONIC_USEC` is what `Type=notify-reload` expects.
pub fn reloading() {
    systemd().notify(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading",
        monotonic_usec()
    ));
}

/// Set once shutdown has begun: tasks finishing is expected from then on.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// `STOPPING=1` when shutdown begins.
pub fn stopping() {
    STOPPING.store(true, Ordering::Relaxed);
    systemd().notify("STOPPING=1\nSTATUS=stopping: resigning mastership");
}

/// `STATUS=` only.
pub fn status(status: &str) {
    systemd().notify(&format!("STATUS={status}"));
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
    let interval = systemd().watchdog_interval()?;
    let sd = systemd();
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog enabled"
    );
    Some(tokio::spawn(run_watchdog(
        interval,
        || sd.notify("WATCHDOG=1"),
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

    fn receive(listener: &UnixDatagram) -> String {
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = listener.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn notifies_a_path_socket() {
        let dir = lbha_harness::temp_dir("ops-notify").unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let systemd = Systemd::from_vars(|name| match name {
            "NOTIFY_SOCKET" => Some(path.clone().into_os_string()),
            _ => None,
        });
        assert!(systemd.is_active());
        assert_eq!(systemd.watchdog_interval(), None);
        systemd.notify("READY=1\nSTATUS=running");
        assert_eq!(receive(&listener), "READY=1\nSTATUS=running");
        systemd.notify("STOPPING=1");
        assert_eq!(receive(&listener), "STOPPING=1");
    }

    #[test]
    fn notifies_an_abstract_socket() {
        let name = format!("lbha-ops-test-{}-{}", std::process::id(), fastrand::u64(..));
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let notifier = Notifier::new(OsStr::new(&format!("@{name}"))).unwrap();
        notifier.notify("WATCHDOG=1").unwrap();
        assert_eq!(receive(&listener), "WATCHDOG=1");
    }

    #[test]
    fn without_notify_socket_nothing_happens() {
        let systemd = Systemd::from_vars(|_| None);
        assert!(!systemd.is_active());
        systemd.notify("READY=1");
        assert!(Notifier::new(OsStr::new("vsock:2:1234")).is_err());
        assert!(Notifier::new(OsStr::new("relative/path")).is_err());
    }

    #[test]
    fn watchdog_interval_is_half_of_watchdog_usec_for_us() {
        let us = |s: &'static str| Some(OsStr::new(s));
        assert_eq!(
            watchdog_interval(us("10000000"), None, 42),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            watchdog_interval(us("10000000"), us("42"), 42),
            Some(Duration::from_secs(5))
        );
        assert_eq!(watchdog_interval(us("10000000"), us("7"), 42), None);
        assert_eq!(watchdog_interval(us("0"), None, 42), None);
        assert_eq!(watchdog_interval(us("soon"), None, 42), None);
        assert_eq!(watchdog_interval(None, None, 42), None);
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
