//! The one shape of a daemon under test: a long-running program (spawned,
//! typically, inside a [`crate::Netns`]) writing a log file, that a test
//! waits on by reading that log, stops with a grace period or kills, and
//! that is killed on drop — with its log printed when the test is failing,
//! since that is where the reason usually is.
//!
//! keepalived and `lbha-agent` in the integration tests and the lab's
//! simulator and load balancers are all a [`Daemon`] plus what is their own.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{ChildGuard, Error, Result, TempDir, temp_dir};

/// How often [`Daemon::wait_until`] reads the log again.
const POLL: Duration = Duration::from_millis(10);

/// A daemon process and its log file. Killed (SIGKILL: no clean shutdown)
/// on drop; if the thread is panicking, its log is printed first unless
/// [`Daemon::quiet_on_panic`] said otherwise. A directory the daemon owns
/// ([`Daemon::start_in_temp_dir`]) is removed after the process is gone.
pub struct Daemon {
    // Field order matters: the process goes before its directory.
    child: ChildGuard,
    log: PathBuf,
    show_log_on_panic: bool,
    dir: Option<TempDir>,
}

impl Daemon {
    /// Spawns `cmd` as daemon `name` exactly as the caller configured it:
    /// the daemon writes `log` itself (a shell script redirecting into it)
    /// or the caller pointed its output there.
    pub fn spawn(name: &str, cmd: &mut Command, log: impl Into<PathBuf>) -> Result<Self> {
        Ok(Self {
            child: ChildGuard::spawn(name, cmd)?,
            log: log.into(),
            show_log_on_panic: true,
            dir: None,
        })
    }

    /// Starts daemon `name` with a fresh temporary directory of its own
    /// (`lbha-TAG-XXXXXX`): `prepare(dir)` writes what the daemon needs
    /// there and returns its command, which runs with stdin closed and
    /// stdout and stderr in `dir/TAG.log`. The directory is removed when the
    /// daemon is gone.
    pub fn start_in_temp_dir<E: From<Error>>(
        name: &str,
        tag: &str,
        prepare: impl FnOnce(&Path) -> Result<Command, E>,
    ) -> Result<Self, E> {
        let dir = temp_dir(tag)?;
        let mut cmd = prepare(dir.path())?;
        let log = dir.path().join(format!("{tag}.log"));
        let file = File::create(&log).map_err(Error::io(format!("creating {}", log.display())))?;
        let copy = file
            .try_clone()
            .map_err(Error::io(format!("opening {}", log.display())))?;
        cmd.stdin(Stdio::null()).stdout(copy).stderr(file);
        let mut daemon = Self::spawn(name, &mut cmd, log)?;
        daemon.dir = Some(dir);
        Ok(daemon)
    }

    /// Leaves the log unprinted when a test panics: for callers that print
    /// it themselves (the lab's tests redact a token from it).
    pub fn quiet_on_panic(mut self) -> Self {
        self.show_log_on_panic = false;
        self
    }

    pub fn name(&self) -> &str {
        self.child.name()
    }

    /// The directory holding the log (and, for [`Daemon::start_in_temp_dir`],
    /// the daemon's own files).
    pub fn dir(&self) -> &Path {
        self.log.parent().unwrap_or(Path::new("/"))
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the daemon has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's pid (the program's own under `ip netns exec`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process guard, e.g. to take a pipe or send a signal.
    pub fn child_mut(&mut self) -> &mut ChildGuard {
        &mut self.child
    }

    /// Its exit status if it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Reads the log until `found` finds something in it and returns that;
    /// fails early if the daemon exits, and after `timeout`. `what` (e.g.
    /// `VI_1 to enter MASTER`) names it in the errors, which show the log.
    pub fn wait_until<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut found: impl FnMut(&str) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(value) = found(&log) {
                return Ok(value);
            }
            if let Some(status) = self.child.try_wait()? {
                // What it logged while exiting too.
                let log = self.log();
                return Err(Error::DaemonExited {
                    daemon: self.name().to_string(),
                    status,
                    what: what.to_string(),
                    log,
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::DaemonTimeout {
                    daemon: self.name().to_string(),
                    what: what.to_string(),
                    timeout,
                    log,
                });
            }
            thread::sleep(POLL);
        }
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        self.wait_until(&format!("{needle:?} in its log"), timeout, |log| {
            log.contains(needle).then_some(())
        })
    }

    /// Stops the daemon as a service manager would (SIGTERM), SIGKILL after
    /// `grace`.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        self.child.terminate(grace)
    }

    /// Kills the daemon abruptly (SIGKILL), as a crash would.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        self.child.kill()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        if self.show_log_on_panic && thread::panicking() {
            eprintln!(
                "---- {name} log ({path}) ----\n{log}---- end of {name} log ----",
                name = self.name(),
                path = self.log.display(),
                log = self.log(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> impl FnOnce(&Path) -> Result<Command> + '_ {
        move |_| {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", script]);
            Ok(cmd)
        }
    }

    #[test]
    fn waits_on_the_log_and_cleans_up() {
        let mut daemon = Daemon::start_in_temp_dir(
            "talker",
            "unit-talker",
            shell("echo starting; echo ready >&2; exec sleep 60"),
        )
        .unwrap();
        daemon
            .wait_for_log("ready", Duration::from_secs(5))
            .unwrap();
        assert!(daemon.log().contains("starting\n"));
        let dir = daemon.dir().to_owned();
        assert_eq!(daemon.log_path(), dir.join("unit-talker.log"));
        let pid = daemon.pid();
        drop(daemon);
        assert!(!dir.exists());
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn an_exit_ends_the_wait_early() {
        let mut daemon =
            Daemon::start_in_temp_dir("quitter", "unit-quitter", shell("echo bye; exit 4"))
                .unwrap();
        let started = Instant::now();
        let error = daemon
            .wait_for_log("never", Duration::from_secs(20))
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        match error {
            Error::DaemonExited { status, log, .. } => {
                assert_eq!(status.code(), Some(4));
                assert_eq!(log, "bye\n");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_wait_is_bounded_and_finds_values() {
        let mut daemon = Daemon::start_in_temp_dir(
            "counter",
            "unit-counter",
            shell("echo n=1; echo n=2; exec sleep 60"),
        )
        .unwrap();
        let second = daemon
            .wait_until("the second line", Duration::from_secs(5), |log| {
                log.lines().nth(1).map(str::to_owned)
            })
            .unwrap();
        assert_eq!(second, "n=2");
        let error = daemon
            .wait_for_log("n=3", Duration::from_millis(100))
            .unwrap_err();
        assert!(matches!(error, Error::DaemonTimeout { .. }), "{error:?}");
        let status = daemon.stop(Duration::from_secs(5)).unwrap();
        assert!(!status.success());
    }
}
