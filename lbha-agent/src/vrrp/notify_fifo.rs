//! keepalived 2.2.7's notify FIFOs (`lib/notify.c`, `vrrp_notify.c`):
//! every state change written as one line, `INSTANCE "NAME" STATE
//! PRIORITY` (the effective priority) or `GROUP "NAME" STATE 0`, STATE
//! being MASTER, BACKUP, FAULT or STOP (at shutdown), to `notify_fifo` and
//! then `vrrp_notify_fifo`.
//!
//! As keepalived: a missing FIFO is created (mode 0644, then chowned to
//! the configured user and group) and removed at stop; the FIFO is opened
//! read-write and non-blocking, so the open never waits for a reader and a
//! write never blocks: with no reader, or one that does not keep up, the
//! pipe fills and lines are dropped (counted in the log), never waited on.
//! Each line is far below PIPE_BUF, so it is written whole or not at all,
//! and lines from several interface tasks never interleave.

use std::{
    fs::File,
    io::Write,
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::PathBuf,
    sync::Mutex,
};

use crate::{config, health::script::ScriptPolicy, sys::users, vrrp::machine::State};

/// The configured FIFOs, open; shared by every task that reports state.
#[derive(Default)]
pub struct NotifyFifos {
    open: Mutex<Vec<Fifo>>,
}

struct Fifo {
    path: PathBuf,
    file: File,
    /// Made by lbha: removed at stop.
    created: bool,
    /// The `notify_fifo_script`, killed when the FIFO closes.
    _script: Option<tokio::process::Child>,
    dropped: u64,
}

impl Drop for Fifo {
    fn drop(&mut self) {
        // Removed first, as keepalived does, so that a reader that reopens
        // it on EOF cannot reopen this one.
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// keepalived's state names in the FIFO.
fn state_name(state: State) -> &'static str {
    match state {
        State::Master => "MASTER",
        State::Backup => "BACKUP",
        State::Fault => "FAULT",
        // Initialize is only re-entered when the instance stops.
        State::Initialize => "STOP",
    }
}

/// An instance's line, as keepalived's `notify_fifo` formats it.
pub fn instance_line(name: &str, state: State, priority: u8) -> String {
    format!("INSTANCE \"{name}\" {} {priority}\n", state_name(state))
}

/// keepalived's line for a change of the effective priority
/// (`notify_priority_changes`): MASTER_PRIORITY while Master, else
/// BACKUP_PRIORITY.
pub fn priority_line(name: &str, state: State, priority: u8) -> String {
    let event = if state == State::Master {
        "MASTER_PRIORITY"
    } else {
        "BACKUP_PRIORITY"
    };
    format!("INSTANCE \"{name}\" {event} {priority}\n")
}

/// A sync group's line (a group's priority is always 0).
pub fn group_line(name: &str, state: State) -> String {
    format!("GROUP \"{name}\" {} 0\n", state_name(state))
}

impl NotifyFifos {
    /// Closes the FIFOs open now and opens `fifos` (a reload with other
    /// FIFOs; the first configuration). Blocks (user look-ups, mkfifo,
    /// spawning the scripts): call from the blocking pool, in the
    /// runtime's context. A FIFO that cannot be made or opened is logged
    /// and left out, as keepalived leaves it out.
    pub fn configure(&self, fifos: &[config::NotifyFifo], policy: &ScriptPolicy) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.clear();
        for fifo in fifos {
            if let Some(f) = open_one(fifo, policy) {
                open.push(f);
            }
        }
    }

    pub fn instance(&self, name: &str, state: State, priority: u8) {
        self.write(&instance_line(name, state, priority));
    }

    pub fn priority(&self, name: &str, state: State, priority: u8) {
        self.write(&priority_line(name, state, priority));
    }

    pub fn group(&self, name: &str, state: State) {
        self.write(&group_line(name, state));
    }

    fn write(&self, line: &str) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for fifo in open.iter_mut() {
            // Non-blocking: a full pipe refuses the whole line at once.
            if let Err(error) = (&fifo.file).write(line.as_bytes()) {
                fifo.dropped += 1;
                tracing::warn!(fifo = %fifo.path.display(), %error, dropped = fifo.dropped, "notify FIFO line dropped (no reader keeping up)");
            }
        }
    }
}

fn open_one(fifo: &config::NotifyFifo, policy: &ScriptPolicy) -> Option<Fifo> {
    let path = &fifo.path;
    let created = match nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)) {
        Ok(()) => true,
        Err(nix::errno::Errno::EEXIST) => false,
        Err(error) => {
            tracing::error!(fifo = %path.display(), %error, "unable to create notify FIFO; state changes are not written to it");
            return None;
        }
    };
    if created && (fifo.owner.is_some() || fifo.group.is_some()) {
        let uid = fifo
            .owner
            .as_deref()
            .and_then(users::lookup_user)
            .map(|(u, _)| u);
        let gid = fifo.group.as_deref().and_then(users::lookup_group);
        if let Err(error) = nix::unistd::chown(
            path,
            uid.map(nix::unistd::Uid::from_raw),
            gid.map(nix::unistd::Gid::from_raw),
        ) {
            tracing::warn!(fifo = %path.display(), %error, "failed to set the notify FIFO's owner");
        }
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .inspect_err(|error| {
            tracing::error!(fifo = %path.display(), %error, "unable to open notify FIFO; state changes are not written to it");
            if created {
                let _ = std::fs::remove_file(path);
            }
        })
        .ok()?;
    if !file.metadata().is_ok_and(|m| m.file_type().is_fifo()) {
        tracing::error!(fifo = %path.display(), "notify FIFO path is not a FIFO; state changes are not written to it");
        return None;
    }
    // keepalived starts the script after creating the FIFO, with its name
    // as the last argument.
    let script = fifo.script.as_deref().and_then(|command| {
        let words = crate::health::script::split_command(command);
        let (program, args) = words.split_first()?;
        let mut argv = args.to_vec();
        argv.push(path.to_string_lossy().into_owned());
        crate::health::script::spawn(program, &argv, policy, command)
            .inspect_err(|error| tracing::error!(fifo = %path.display(), %error, "notify FIFO script not started"))
            .ok()
    });
    Some(Fifo {
        path: path.clone(),
        file,
        created,
        _script: script,
        dropped: 0,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn lines_are_keepalived_s() {
        assert_eq!(
            instance_line("VI_1", State::Master, 150),
            "INSTANCE \"VI_1\" MASTER 150\n"
        );
        assert_eq!(
            instance_line("VI 2", State::Initialize, 100),
            "INSTANCE \"VI 2\" STOP 100\n"
        );
        assert_eq!(group_line("G", State::Fault), "GROUP \"G\" FAULT 0\n");
        assert_eq!(
            priority_line("VI_1", State::Master, 90),
            "INSTANCE \"VI_1\" MASTER_PRIORITY 90\n"
        );
        assert_eq!(
            priority_line("VI_1", State::Fault, 90),
            "INSTANCE \"VI_1\" BACKUP_PRIORITY 90\n"
        );
    }

    fn policy() -> ScriptPolicy {
        ScriptPolicy::new(false, None, None).unwrap()
    }

    #[tokio::test]
    async fn the_fifo_is_made_written_without_a_reader_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.fifo");
        let fifos = NotifyFifos::default();
        let config = [config::NotifyFifo {
            path: path.clone(),
            owner: None,
            group: None,
            script: None,
        }];
        fifos.configure(&config, &policy());
        assert!(std::fs::metadata(&path).unwrap().file_type().is_fifo());
        // No reader: written into the pipe, never blocking.
        fifos.instance("VI_1", State::Backup, 100);
        fifos.group("G", State::Backup);
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        let mut got = vec![0u8; 256];
        let n = reader.read(&mut got).unwrap();
        assert_eq!(
            std::str::from_utf8(&got[..n]).unwrap(),
            "INSTANCE \"VI_1\" BACKUP 100\nGROUP \"G\" BACKUP 0\n"
        );
        // A full pipe drops lines instead of blocking.
        for _ in 0..5000 {
            fifos.instance("VI_1", State::Master, 100);
        }
        fifos.configure(&[], &policy());
        assert!(!path.exists(), "made by lbha: removed at stop");
    }

    #[tokio::test]
    async fn an_existing_fifo_is_used_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let fifos = NotifyFifos::default();
        let config = [config::NotifyFifo {
            path: path.clone(),
            owner: None,
            group: None,
            script: None,
        }];
        fifos.configure(&config, &policy());
        fifos.configure(&[], &policy());
        assert!(path.exists());
        // A regular file is not a FIFO: left out.
        let file = dir.path().join("plain");
        std::fs::write(&file, "").unwrap();
        let config = [config::NotifyFifo {
            path: file,
            owner: None,
            group: None,
            script: None,
        }];
        fifos.configure(&config, &policy());
        assert!(fifos.open.lock().unwrap().is_empty());
    }
}
