//! Named network namespaces (`ip netns`) that clean up after themselves,
//! and entering them by name from a thread.
//!
//! Names are `lbha-<tag>-<pid>-<n>`: unique per process and call, so tests
//! and labs running in parallel never share one, and recognisable as ours,
//! so a later run can delete those whose creating process is gone (killed
//! by a timeout, say) without touching anybody else's.

use std::{
    ffi::OsStr,
    os::fd::AsRawFd,
    path::Path,
    process::Command,
    sync::Once,
    thread,
    time::{Duration, Instant},
};

use crate::{COMMAND_TIMEOUT, Error, Result, run_command, send_signal, unique_suffix};

/// Start of every namespace name [`Netns`] makes (and of nothing else).
const PREFIX: &str = "lbha-";
/// Namespace names have no short limit, but long ones are unwieldy in `ip
/// netns list`.
const TAG_MAX: usize = 24;
/// How long [`Netns::kill_all`] keeps killing before it gives up.
const KILL_ALL_BOUND: Duration = Duration::from_secs(2);

/// A network namespace, deleted on drop.
///
/// Its loopback interface is up. On drop, every process still running in
/// it is killed (SIGKILL) before it is deleted, so daemons whose guards were
/// leaked or dropped later cannot keep it alive.
///
/// The first `Netns::new` of a process also deletes `lbha-*` namespaces left
/// by earlier processes that no longer run.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace; `tag` (lowercase letters, digits and `-`; others
    /// are dropped, and it is shortened as needed) makes its name
    /// recognisable, e.g. `ka` or `fohk-lb1`.
    pub fn new(tag: &str) -> Result<Self> {
        static CLEANUP: Once = Once::new();
        // Before our first namespace, one named with our pid can only be
        // a leftover of an earlier process that had the same pid.
        CLEANUP.call_once(|| remove_stale_namespaces(Some(std::process::id() as i32)));

        let tag: String = tag
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .filter(|c| is_tag_char(*c))
            .take(TAG_MAX)
            .collect();
        let tag = if tag.is_empty() { "ns".into() } else { tag };
        let name = format!("{PREFIX}{tag}-{}", unique_suffix());
        run_command(
            Command::new("ip").args(["netns", "add", &name]),
            COMMAND_TIMEOUT,
        )
        .map_err(Error::step(format!("creating network namespace {name}")))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME program`: add arguments, then spawn or run it (e.g.
    /// with [`run_command`] or [`crate::ChildGuard::spawn`]). `ip netns exec`
    /// execs the program, so the child's pid is the program's own.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `argv` inside the namespace (bounded by [`COMMAND_TIMEOUT`]) and
    /// returns its stdout; an error, with its stderr, if it fails.
    pub fn exec(&self, argv: &[&str]) -> Result<String> {
        let Some((program, args)) = argv.split_first() else {
            return Err(Error::Output {
                command: format!("exec in {}", self.name),
                output: "no program".into(),
            });
        };
        run_command(self.command(program).args(args), COMMAND_TIMEOUT)
            .map_err(Error::step(format!("in network namespace {}", self.name)))
    }

    /// `ip -n NAME ARGS` (bounded by [`COMMAND_TIMEOUT`]): `ip` acting on the
    /// namespace without running inside it.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run_command(
            Command::new("ip").args(["-n", &self.name]).args(args),
            COMMAND_TIMEOUT,
        )
        .map_err(Error::step(format!("in network namespace {}", self.name)))
    }

    /// Index of `interface` inside the namespace.
    pub fn ifindex(&self, interface: &str) -> Result<u32> {
        let out = self.ip(&["-o", "link", "show", "dev", interface])?;
        out.split(':')
            .next()
            .and_then(|index| index.trim().parse().ok())
            .ok_or_else(|| Error::Output {
                command: format!("ip -n {} link show dev {interface}", self.name),
                output: out.clone(),
            })
    }

    /// The IPv4 addresses on `interface` inside the namespace, in CIDR
    /// notation (`10.201.1.1/24`), as `ip -4 addr` lists them.
    pub fn ipv4_addresses(&self, interface: &str) -> Result<Vec<String>> {
        let out = self.ip(&["-o", "-4", "addr", "show", "dev", interface])?;
        Ok(out
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                words.find(|word| *word == "inet")?;
                words.next().map(str::to_string)
            })
            .collect())
    }

    /// Host pids of the processes running in the namespace (`ip netns pids`).
    pub fn pids(&self) -> Vec<i32> {
        pids_of(&self.name)
    }

    /// SIGKILLs every process in the namespace, waiting (bounded) for them
    /// to go.
    pub fn kill_all(&self) {
        kill_all_in(&self.name);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete(&self.name);
    }
}

fn is_tag_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

fn pids_of(name: &str) -> Vec<i32> {
    run_command(
        Command::new("ip").args(["netns", "pids", name]),
        COMMAND_TIMEOUT,
    )
    .map(|out| {
        out.split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect()
    })
    .unwrap_or_default()
}

fn kill_all_in(name: &str) {
    let deadline = Instant::now() + KILL_ALL_BOUND;
    loop {
        let pids = pids_of(name);
        if pids.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("warning: processes {pids:?} still running in namespace {name}");
            return;
        }
        for pid in pids {
            send_signal(pid, libc::SIGKILL);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Kills what runs in namespace `name`, then deletes it.
fn delete(name: &str) {
    kill_all_in(name);
    if let Err(error) = run_command(
        Command::new("ip").args(["netns", "del", name]),
        COMMAND_TIMEOUT,
    ) {
        eprintln!("warning: deleting network namespace {name}: {error}");
    }
}

/// The pid in a name [`Netns::new`] made (`lbha-<tag>-<pid>-<n>`); `None`
/// for any other name.
fn creator_pid(name: &str) -> Option<i32> {
    let mut parts = name.rsplitn(3, '-');
    let (n, pid, head) = (parts.next()?, parts.next()?, parts.next()?);
    let tag = head.strip_prefix(PREFIX)?;
    let ours = !tag.is_empty() && tag.chars().all(is_tag_char) && n.parse::<u32>().is_ok();
    ours.then(|| pid.parse().ok()).flatten()
}

/// Deletes namespaces [`Netns::new`] made whose creating process is gone,
/// or is `recycled` (a pid known to belong to another process now). Never
/// touches other names, nor those of processes still running.
fn remove_stale_namespaces(recycled: Option<i32>) {
    let Ok(list) = run_command(Command::new("ip").args(["netns", "list"]), COMMAND_TIMEOUT) else {
        return;
    };
    for name in list
        .lines()
        .filter_map(|line| line.split_whitespace().next())
    {
        let Some(pid) = creator_pid(name) else {
            continue;
        };
        if Some(pid) == recycled || !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing stale namespace {name}");
            delete(name);
        }
    }
}

/// Moves the calling thread into network namespace `name`.
pub fn enter(name: &str) -> Result<()> {
    let file = std::fs::File::open(format!("/run/netns/{name}"))
        .map_err(Error::io(format!("opening namespace {name}")))?;
    // SAFETY: valid namespace fd; affects only the calling thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::Io {
            what: format!("setns({name})"),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Runs `f` on a new thread inside network namespace `name` (sockets it
/// opens live there) and returns what it returns.
pub fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let owned = name.to_owned();
    thread::spawn(move || -> Result<T> {
        enter(&owned)?;
        Ok(f())
    })
    .join()
    .map_err(|_| Error::ThreadPanicked(name.to_owned()))?
}

/// The pid process `pid` (a host pid) has inside its own PID namespace.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_names_have_a_creator() {
        assert_eq!(creator_pid("lbha-ka-1234-0"), Some(1234));
        assert_eq!(creator_pid("lbha-fohk-lb1-99-12"), Some(99));
        for other in [
            "lbha-1234-0",
            "lbha--1234-0",
            "lbha-ka-x-0",
            "lbha-ka-1234-y",
            "lbha-Ka-1234-0",
            "lbtka-1234-0",
            "prod",
            "prod-1-2",
        ] {
            assert_eq!(creator_pid(other), None, "{other}");
        }
    }

    #[test]
    fn ns_pid_of_this_process() {
        // Tests run in the host's PID namespace or in one of their own;
        // either way the innermost pid is there.
        let pid = std::process::id() as i32;
        assert!(ns_pid(pid).is_some_and(|inner| inner > 0));
        assert_eq!(ns_pid(-1), None);
    }

    #[test]
    fn namespaces_of_dead_creators_are_removed() {
        if !crate::require_root() {
            return;
        }
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let stale = format!("{PREFIX}hstale-{}-0", gone.id());
        // pid 1 always runs: its namespace stays.
        let alive = format!("{PREFIX}halive-1-{}", std::process::id());
        let foreign = format!("hforeign-{}-0", gone.id());
        // Guards, so the namespaces go even if this test fails half-way.
        let mut guards = Vec::new();
        for name in [&stale, &alive, &foreign] {
            run_command(
                Command::new("ip").args(["netns", "add", name]),
                COMMAND_TIMEOUT,
            )
            .unwrap();
            guards.push(Netns { name: name.clone() });
        }
        // Not our pid as `recycled`: the other tests' namespaces stay.
        remove_stale_namespaces(None);
        let exists = |name: &str| Path::new("/run/netns").join(name).exists();
        let left = (exists(&stale), exists(&alive), exists(&foreign));
        if !left.0 {
            // Already deleted: its guard has nothing left to do.
            std::mem::forget(guards.remove(0));
        }
        assert_eq!(left, (false, true, true));
    }

    #[test]
    fn a_namespace_and_its_processes_go_on_drop() {
        if !crate::require_root() {
            return;
        }
        let ns = Netns::new("Harness Unit!").unwrap();
        let name = ns.name().to_owned();
        assert!(name.starts_with("lbha-harnessunit-"), "{name}");
        assert_eq!(creator_pid(&name), Some(std::process::id() as i32));
        assert_eq!(ns.ipv4_addresses("lo").unwrap(), ["127.0.0.1/8"]);
        assert_eq!(ns.ifindex("lo").unwrap(), 1);
        let mut sleeper = crate::ChildGuard::spawn("sleep", ns.command("sleep").arg("60")).unwrap();
        let pid = sleeper.id() as i32;
        // `ip netns exec` enters the namespace after the spawn returns: wait
        // (bounded) for the child to be counted.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while ns.pids().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(ns.pids(), [pid]);
        let inside = in_netns(&name, || std::fs::read_link("/proc/thread-self/ns/net")).unwrap();
        let outside = std::fs::read_link("/proc/thread-self/ns/net");
        assert_ne!(inside.unwrap(), outside.unwrap());
        drop(ns);
        assert!(!Path::new("/run/netns").join(&name).exists());
        // Killed by the namespace's drop, not by its own guard.
        let status = sleeper.wait_timeout(Duration::from_secs(2)).unwrap();
        assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    }
}
