//! A child process that cannot outlive its test: killed and reaped on drop,
//! also when the test panics.

use std::{
    process::{Child, Command, ExitStatus},
    time::Duration,
};

use crate::{Error, Result, send_signal, wait_timeout};

/// A child process killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
    exited: Option<ExitStatus>,
}

impl ChildGuard {
    /// Guards an already spawned child; `name` appears in messages.
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        Self {
            child,
            name: name.into(),
            exited: None,
        }
    }

    /// Spawns `cmd` (stdin inherited unless the command set it) and guards it.
    pub fn spawn(name: impl Into<String>, cmd: &mut Command) -> Result<Self> {
        let name = name.into();
        match cmd.spawn() {
            Ok(child) => Ok(Self::new(name, child)),
            Err(source) => Err(Error::Spawn {
                command: format!("{name}: {cmd:?}"),
                source,
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id (that of the program itself under `ip netns exec`).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The guarded child, e.g. to take its pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Its exit status if it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self
                .child
                .try_wait()
                .map_err(Error::io(format!("waiting for {}", self.name)))?;
        }
        Ok(self.exited)
    }

    /// Waits up to `timeout` for it to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = wait_timeout(&mut self.child, timeout)
                .map_err(Error::io(format!("waiting for {}", self.name)))?;
        }
        Ok(self.exited)
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) unless it has already been reaped.
    pub fn signal(&mut self, signal: libc::c_int) {
        if self.exited.is_none() {
            send_signal(self.child.id() as i32, signal);
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM);
        match self.wait_timeout(grace)? {
            Some(status) => Ok(status),
            None => self.kill(),
        }
    }

    /// SIGKILL and reap it.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .map_err(Error::io(format!("reaping {}", self.name)))?;
        self.exited = Some(status);
        Ok(status)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn drop_kills_and_reaps() {
        let guard = ChildGuard::spawn("sleep", Command::new("sleep").arg("60")).unwrap();
        let pid = guard.id();
        drop(guard);
        // Reaped: not even a zombie is left.
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn terminate_asks_first_then_kills() {
        let mut polite = ChildGuard::spawn("sleep", Command::new("sleep").arg("60")).unwrap();
        let status = polite.terminate(Duration::from_secs(5)).unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        // A second stop reports the same exit.
        assert_eq!(polite.kill().unwrap(), status);

        let mut stubborn = ChildGuard::spawn(
            "sh",
            Command::new("sh").args(["-c", "trap '' TERM; while :; do sleep 0.05; done"]),
        )
        .unwrap();
        // Give the shell time to install its trap.
        std::thread::sleep(Duration::from_millis(200));
        let status = stubborn.terminate(Duration::from_millis(200)).unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn exits_are_seen() {
        let mut quick = ChildGuard::spawn("true", &mut Command::new("true")).unwrap();
        let status = quick.wait_timeout(Duration::from_secs(5)).unwrap();
        assert!(status.is_some_and(|s| s.success()));
        assert_eq!(quick.try_wait().unwrap(), status);
    }
}
