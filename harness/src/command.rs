//! Running a command to completion with a bound on how long it may take:
//! a hung `ip` or `keepalived --config-test` fails the test instead of
//! stalling it.

use std::{
    io::Read,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver},
    thread,
    time::{Duration, Instant},
};

use crate::{Error, Result};

/// Waits up to `timeout` for `child` to exit; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Reads `reader` to the end on a thread; the text arrives on the channel.
fn read_in_thread(mut reader: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = reader.read_to_end(&mut bytes);
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

/// Runs `cmd` to completion (stdin closed, output captured), killing it after
/// `timeout`. Returns its stdout; fails, with its stderr, if it exits non-zero.
pub fn run_command(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let command = format!("{cmd:?}");
    let mut child = match cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(source) => return Err(Error::Spawn { command, source }),
    };
    let stdout = read_in_thread(child.stdout.take().expect("piped"));
    let stderr = read_in_thread(child.stderr.take().expect("piped"));
    let waited =
        wait_timeout(&mut child, timeout).map_err(Error::io(format!("waiting for {command}")))?;
    let Some(status) = waited else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::Timeout { command, timeout });
    };
    // A grandchild (a daemon it started) could keep the pipes open: bound
    // the wait for EOF too.
    let grace = Duration::from_secs(2);
    let stdout = stdout.recv_timeout(grace).unwrap_or_default();
    let stderr = stderr.recv_timeout(grace).unwrap_or_default();
    if !status.success() {
        let output = if stderr.trim().is_empty() {
            stdout.trim()
        } else {
            stderr.trim()
        };
        return Err(Error::Failed {
            command,
            status,
            output: output.to_string(),
        });
    }
    Ok(stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_stdout_of_a_success() {
        let out = run_command(
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(out, "out\n");
    }

    #[test]
    fn a_failure_carries_its_stderr() {
        let error = run_command(
            Command::new("sh").args(["-c", "echo out; echo broken >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .unwrap_err();
        match error {
            Error::Failed { status, output, .. } => {
                assert_eq!(status.code(), Some(3));
                assert_eq!(output, "broken");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_hung_command_is_killed_at_the_timeout() {
        let started = Instant::now();
        let error =
            run_command(Command::new("sleep").arg("30"), Duration::from_millis(100)).unwrap_err();
        assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_missing_program_fails_to_start() {
        let error = run_command(
            &mut Command::new("/nonexistent/lbha-harness-test"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(error, Error::Spawn { .. }), "{error:?}");
    }
}
