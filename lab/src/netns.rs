//! Network namespaces that clean up after themselves.

use std::{
    os::fd::AsRawFd,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// Runs a command; its stdout, or an error with its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace, deleted with every process in it on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn create(name: &str) -> Result<Self> {
        // A namespace of that name left by a killed earlier run goes first.
        if std::path::Path::new("/run/netns").join(name).exists() {
            Netns(name.to_owned()).kill_all();
            let _ = run(Command::new("ip").args(["netns", "del", name]));
        }
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Netns(name.to_owned());
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0]).arg(program);
        cmd
    }

    pub fn exec(&self, argv: &[&str]) -> Result<String> {
        run(self.command(argv[0]).args(&argv[1..]))
    }

    /// Host PIDs of the processes in this namespace.
    pub fn pids(&self) -> Vec<i32> {
        run(Command::new("ip").args(["netns", "pids", &self.0]))
            .map(|out| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// SIGKILLs every process in the namespace until none is left (2 s at most).
    pub fn kill_all(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() > deadline {
                return;
            }
            for pid in pids {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        let _ = run(Command::new("ip").args(["netns", "del", &self.0]));
    }
}

/// A veth pair from `a` (named `name_a`) to `b` (named `name_b`), both up.
/// Created directly inside the namespaces: the host's own is never touched.
pub fn veth(a: &Netns, name_a: &str, b: &Netns, name_b: &str) -> Result<()> {
    run(Command::new("ip").args([
        "link", "add", name_a, "netns", &a.0, "type", "veth", "peer", "name", name_b, "netns", &b.0,
    ]))?;
    a.exec(&["ip", "link", "set", name_a, "up"])?;
    b.exec(&["ip", "link", "set", name_b, "up"])?;
    Ok(())
}

/// Moves the calling thread into network namespace `name`.
pub fn enter(name: &str) -> Result<()> {
    let file = std::fs::File::open(format!("/run/netns/{name}"))
        .with_context(|| format!("opening namespace {name}"))?;
    // SAFETY: valid namespace fd; affects only the calling thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns({name}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a thread inside network namespace `name`.
pub fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let name = name.to_owned();
    std::thread::spawn(move || -> Result<T> {
        enter(&name)?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
}

/// The PID a process has inside its own PID namespace.
pub fn ns_pid(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}
