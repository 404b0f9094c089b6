//! Process liveness without forking `pidof`: find the processes through
//! procfs, hold a pidfd for each and let the tokio reactor tell us the
//! instant one exits. A periodic rescan picks up restarts (HAProxy's
//! master-worker mode replaces workers on reload).

use std::{
    collections::HashMap,
    os::fd::{FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    time::Duration,
};

use futures_util::future::select_all;
use tokio::io::unix::AsyncFd;

/// Which processes count as "the service is running".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessMatch {
    /// Any process with this program name, as `pidof NAME` matches it: the
    /// kernel's `comm`, or the base name of `argv[0]` or of the executable.
    Name(String),
    /// The process whose PID is in this file (HAProxy's `-p` pidfile: the master).
    Pidfile(PathBuf),
}

/// Whether `pid`'s program name is `name`, as `pidof` decides it.
fn name_matches(
    process: &procfs::process::Process,
    stat: &procfs::process::Stat,
    name: &str,
) -> bool {
    // comm is truncated to 15 bytes by the kernel.
    if stat.comm == name
        || (name.len() > 15 && name.starts_with(&stat.comm) && stat.comm.len() == 15)
    {
        return true;
    }
    let base = |p: &str| Path::new(p).file_name().is_some_and(|f| f == name);
    if process
        .cmdline()
        .ok()
        .and_then(|argv| argv.into_iter().next())
        .is_some_and(|argv0| base(&argv0))
    {
        return true;
    }
    process
        .exe()
        .ok()
        .is_some_and(|exe| exe.file_name().is_some_and(|f| f == name))
}

fn alive(stat: &procfs::process::Stat) -> bool {
    // Zombies (and dead tasks) have exited; only their parent has not reaped them.
    !matches!(stat.state, 'Z' | 'X' | 'x')
}

/// The live (non-zombie) PIDs matching `what`, in this PID namespace's /proc.
pub fn scan(what: &ProcessMatch) -> Vec<i32> {
    MatchCache::default().scan(what)
}

/// What a scan learnt of one process for one name.
struct Known {
    starttime: u64,
    comm: String,
    matched: bool,
}

/// Remembers, per name, which processes matched, so that a rescan reads
/// only each process's stat instead of stat, cmdline and exe (on a host
/// with thousands of processes, a third of the reads every second).
///
/// An entry stands while the process's start time and `comm` are
/// unchanged: an exec changes `comm` (the kernel sets it to the new
/// program's name), so a process caught between fork and exec is looked at
/// again once it has become HAProxy. What it cannot see is a process that
/// rewrites its `argv[0]` in place to the name without exec; `pidof` would
/// match it at its next run, lbha when it restarts.
#[derive(Default)]
struct MatchCache {
    by_name: HashMap<String, HashMap<i32, Known>>,
}

impl MatchCache {
    fn scan(&mut self, what: &ProcessMatch) -> Vec<i32> {
        match what {
            ProcessMatch::Name(name) => self.scan_name(name),
            ProcessMatch::Pidfile(path) => std::fs::read_to_string(path)
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok())
                .filter(|pid| *pid > 0)
                .and_then(|pid| procfs::process::Process::new(pid).ok())
                .filter(|p| p.stat().is_ok_and(|s| alive(&s)))
                .map(|p| vec![p.pid])
                .unwrap_or_default(),
        }
    }

    fn scan_name(&mut self, name: &str) -> Vec<i32> {
        let Ok(all) = procfs::process::all_processes() else {
            return Vec::new();
        };
        let own = std::process::id() as i32;
        let known = self.by_name.entry(name.to_owned()).or_default();
        let mut seen = std::collections::HashSet::new();
        let mut found = Vec::new();
        for process in all.filter_map(Result::ok) {
            if process.pid == own {
                continue;
            }
            let Ok(stat) = process.stat() else {
                continue;
            };
            seen.insert(process.pid);
            if !alive(&stat) {
                continue;
            }
            let matched = match known.get(&process.pid) {
                Some(k) if k.starttime == stat.starttime && k.comm == stat.comm => k.matched,
                _ => {
                    let matched = name_matches(&process, &stat, name);
                    known.insert(
                        process.pid,
                        Known {
                            starttime: stat.starttime,
                            comm: stat.comm.clone(),
                            matched,
                        },
                    );
                    matched
                }
            };
            if matched {
                found.push(process.pid);
            }
        }
        known.retain(|pid, _| seen.contains(pid));
        found
    }
}

type ScanRequest = (ProcessMatch, tokio::sync::oneshot::Sender<Vec<i32>>);

/// Scans run on one thread of their own at the lowest CPU priority (nice
/// 19): on a busy host a scan costs tens to hundreds of milliseconds of CPU
/// a second, and on a droplet with one or two vCPUs it must never be what
/// keeps the runtime thread (the adverts) waiting for a CPU. Deaths are
/// seen by the pidfds at once; only finding new processes can wait.
fn scanner() -> Option<&'static std::sync::mpsc::Sender<ScanRequest>> {
    static SCANNER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<ScanRequest>>> =
        std::sync::OnceLock::new();
    SCANNER
        .get_or_init(|| {
            let (requests, incoming) = std::sync::mpsc::channel::<ScanRequest>();
            std::thread::Builder::new()
                .name(SCANNER_THREAD.into())
                .spawn(move || {
                    lower_own_priority();
                    let mut cache = MatchCache::default();
                    for (what, reply) in incoming {
                        let _ = reply.send(cache.scan(&what));
                    }
                })
                .inspect_err(|error| {
                    tracing::warn!(%error, "no process-scan thread; scanning on the blocking pool");
                })
                .ok()
                .map(|_| requests)
        })
        .as_ref()
}

const SCANNER_THREAD: &str = "lbha-procscan";
const SCANNER_NICE: i32 = 19;

fn lower_own_priority() {
    let tid = nix::unistd::gettid().as_raw();
    // SAFETY: plain syscall on this thread's own id (on Linux the nice
    // value is per thread); raising it needs no privilege.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, SCANNER_NICE) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "process-scan thread keeps normal priority");
    }
}

/// Runs [`scan`] on the scan thread (or the blocking pool if it is gone).
async fn scan_off_runtime(what: ProcessMatch) -> Option<Vec<i32>> {
    if let Some(requests) = scanner() {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if requests.send((what.clone(), reply)).is_ok()
            && let Ok(pids) = answer.await
        {
            return Some(pids);
        }
    }
    tokio::task::spawn_blocking(move || scan(&what))
        .await
        .inspect_err(|error| tracing::warn!(%error, "process scan failed"))
        .ok()
}

/// A pidfd: readable once the process has exited.
pub(super) fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success it returns a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Watches the processes matching one [`ProcessMatch`].
pub struct ProcessWatcher {
    what: ProcessMatch,
    pidfds: HashMap<i32, AsyncFd<OwnedFd>>,
}

impl ProcessWatcher {
    pub fn new(what: ProcessMatch) -> Self {
        Self {
            what,
            pidfds: HashMap::new(),
        }
    }

    /// Rescans procfs, starts watching new processes and returns whether
    /// any matching process is alive.
    ///
    /// The scan runs off the runtime thread (see [`scanner`]): it reads
    /// every process's stat (and a new process's cmdline and exe),
    /// thousands of reads on a busy host, and a cmdline read waits for that
    /// process's memory lock, which another process can hold for long (a
    /// big mmap, a core dump). On the runtime thread that would delay the
    /// adverts.
    pub async fn refresh(&mut self) -> bool {
        let Some(pids) = scan_off_runtime(self.what.clone()).await else {
            tracing::warn!("process scan failed; keeping the processes already watched");
            return !self.pidfds.is_empty();
        };
        self.pidfds.retain(|pid, _| pids.contains(pid));
        for pid in &pids {
            if self.pidfds.contains_key(pid) {
                continue;
            }
            // SAFETY (register): the OwnedFd is kept inside the AsyncFd and
            // returns the same fd until dropped.
            match pidfd_open(*pid)
                .and_then(|fd| unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1))
            {
                Ok(fd) => {
                    self.pidfds.insert(*pid, fd);
                }
                // Gone between the scan and pidfd_open: the next rescan sees it.
                Err(error) => tracing::debug!(pid, %error, "pidfd_open failed"),
            }
        }
        !pids.is_empty()
    }

    /// PIDs currently watched.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self.pidfds.keys().copied().collect();
        pids.sort_unstable();
        pids
    }

    /// Returns when a watched process exits, or after `rescan` at the latest.
    pub async fn wait(&mut self, rescan: Duration) {
        if self.pidfds.is_empty() {
            tokio::time::sleep(rescan).await;
            return;
        }
        let exits = select_all(self.pidfds.values().map(|fd| Box::pin(fd.readable())));
        tokio::select! {
            _ = exits => {}
            () = tokio::time::sleep(rescan) => {}
        }
    }
}

/// If `command` is `pidof NAME`, `pgrep NAME`/`pgrep -x NAME` or
/// `killall -0 NAME`, the process it looks for: lbha answers those from
/// procfs instead of forking every interval.
pub fn process_check_of(command: &[String]) -> Option<String> {
    let words: Vec<&str> = command.iter().map(String::as_str).collect();
    let program = Path::new(words.first()?).file_name()?.to_str()?;
    match (program, &words[1..]) {
        ("pidof" | "pgrep", [name]) | ("pgrep", ["-x", name]) | ("killall", ["-0", name]) => {
            Some((*name).to_owned())
        }
        _ => None,
    }
}

/// If `command` runs a tiny shell script whose only command is one of
/// [`process_check_of`]'s forms (the wrapper Debian users put around
/// `pidof` because keepalived's script security trips on the `pidof ->
/// killall5` link), the process it looks for. Output redirections and a
/// leading `exec` are allowed; anything else means "run the script".
pub fn wrapped_process_check(command: &[String]) -> Option<String> {
    let [script] = command else {
        return None;
    };
    let path = Path::new(script);
    if !path.is_absolute() || std::fs::metadata(path).ok()?.len() > 4096 {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let shebang = lines.next()?.trim();
    const SHELLS: [&str; 6] = [
        "#!/bin/sh",
        "#!/bin/bash",
        "#!/usr/bin/sh",
        "#!/usr/bin/bash",
        "#!/usr/bin/env sh",
        "#!/usr/bin/env bash",
    ];
    if !SHELLS.contains(&shebang) {
        return None;
    }
    let mut commands = lines
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let only = commands.next()?;
    if commands.next().is_some() {
        return None;
    }
    const REDIRECTIONS: [&str; 6] = [
        ">/dev/null",
        "1>/dev/null",
        "2>/dev/null",
        "2>&1",
        "&>/dev/null",
        ">&/dev/null",
    ];
    let words: Vec<String> = only
        .split_whitespace()
        .filter(|w| !REDIRECTIONS.contains(w))
        .skip_while(|w| *w == "exec")
        .map(String::from)
        .collect();
    process_check_of(&words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn recognises_the_process_checks_keepalived_users_write() {
        assert_eq!(
            process_check_of(&words("pidof haproxy")),
            Some("haproxy".into())
        );
        assert_eq!(
            process_check_of(&words("/usr/bin/pidof haproxy")),
            Some("haproxy".into())
        );
        assert_eq!(
            process_check_of(&words("pgrep -x haproxy")),
            Some("haproxy".into())
        );
        assert_eq!(
            process_check_of(&words("killall -0 haproxy")),
            Some("haproxy".into())
        );
        assert_eq!(process_check_of(&words("pidof -s haproxy")), None);
        assert_eq!(process_check_of(&words("/etc/check.sh")), None);
        assert_eq!(process_check_of(&words("pgrep -f haproxy.cfg")), None);
    }

    /// A child process with a distinctive name, killed and reaped on drop.
    struct Sleeper(std::process::Child);

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn spawn_named(dir: &Path, name: &str) -> Sleeper {
        let bin = dir.join(name);
        std::fs::copy("/bin/sleep", &bin).unwrap();
        Sleeper(std::process::Command::new(&bin).arg("30").spawn().unwrap())
    }

    #[tokio::test]
    async fn sees_a_death_at_once_and_ignores_zombies() {
        let dir = std::env::temp_dir().join(format!("lbha-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let name = format!("lbhaproc{}", std::process::id() % 100_000);
        let mut watcher = ProcessWatcher::new(ProcessMatch::Name(name.clone()));
        assert!(!watcher.refresh().await, "nothing runs yet");

        let mut child = spawn_named(&dir, &name);
        let pid = child.0.id() as i32;
        assert!(watcher.refresh().await);
        assert_eq!(watcher.pids(), vec![pid]);
        assert_eq!(scan(&ProcessMatch::Name(name.clone())), vec![pid]);

        // Kill without reaping: the child stays a zombie, which must not count.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
        let started = std::time::Instant::now();
        watcher.wait(Duration::from_secs(20)).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "woken by the pidfd, not the rescan"
        );
        assert!(!watcher.refresh().await, "a zombie is not alive");
        let _ = child.0.wait();
        drop(child);

        // Pidfile form.
        let child = spawn_named(&dir, &name);
        let pidfile = dir.join("p.pid");
        std::fs::write(&pidfile, format!("{}\n", child.0.id())).unwrap();
        assert_eq!(
            scan(&ProcessMatch::Pidfile(pidfile.clone())),
            vec![child.0.id() as i32]
        );
        drop(child);
        assert!(scan(&ProcessMatch::Pidfile(pidfile)).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn recognises_a_pidof_wrapper_script() {
        let dir = std::env::temp_dir().join(format!("lbha-wrap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            vec![p.to_string_lossy().into_owned()]
        };
        let wrapper = write(
            "chk.sh",
            "#!/bin/sh\n# keepalived resolves pidof -> killall5: wrap it\nexec pidof haproxy >/dev/null 2>&1\n",
        );
        assert_eq!(wrapped_process_check(&wrapper), Some("haproxy".into()));
        let plain = write("chk2.sh", "#!/bin/bash\n\n/usr/bin/pgrep -x haproxy\n");
        assert_eq!(wrapped_process_check(&plain), Some("haproxy".into()));
        let more = write(
            "chk3.sh",
            "#!/bin/sh\npidof haproxy\ncurl -f http://localhost/\n",
        );
        assert_eq!(
            wrapped_process_check(&more),
            None,
            "a second command must run"
        );
        let other = write("chk4.sh", "#!/usr/bin/python3\nprint(1)\n");
        assert_eq!(wrapped_process_check(&other), None);
        let piped = write("chk5.sh", "#!/bin/sh\npidof haproxy | grep -q .\n");
        assert_eq!(wrapped_process_check(&piped), None);
        assert_eq!(wrapped_process_check(&["relative.sh".to_string()]), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn scans_run_on_a_thread_of_their_own_at_the_lowest_priority() {
        let mut watcher = ProcessWatcher::new(ProcessMatch::Name("lbha-no-such-process".into()));
        assert!(!watcher.refresh().await);
        let tasks = std::fs::read_dir("/proc/self/task").unwrap();
        let scanner_nice = tasks.filter_map(Result::ok).find_map(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // comm is in parentheses; nice is the 19th field, the 17th after it.
            let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            (comm == SCANNER_THREAD).then(|| rest.split(' ').nth(16)?.parse::<i32>().ok())?
        });
        assert_eq!(scanner_nice, Some(SCANNER_NICE));
    }

    #[test]
    fn a_process_that_execs_into_the_name_is_seen_by_the_next_scan() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("lbhaexec{}", std::process::id() % 100_000);
        let bin = dir.path().join(&name);
        std::fs::copy("/bin/sleep", &bin).unwrap();
        let gate = dir.path().join("go");
        // A shell (comm "sh") that becomes `name` by exec once told to.
        let script = format!(
            "while [ ! -e {} ]; do sleep 0.02; done; exec {} 30",
            gate.display(),
            bin.display()
        );
        let child = Sleeper(
            std::process::Command::new("/bin/sh")
                .args(["-c", &script])
                .spawn()
                .unwrap(),
        );
        let pid = child.0.id() as i32;
        let mut cache = MatchCache::default();
        let what = ProcessMatch::Name(name.clone());
        assert!(cache.scan(&what).is_empty(), "still the shell");
        assert!(
            cache.by_name[&name].contains_key(&pid),
            "the shell is remembered as not matching"
        );
        std::fs::write(&gate, "").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while cache.scan(&what).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "exec into {name} never seen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(cache.scan(&what), vec![pid]);
        drop(child);
        assert!(cache.scan(&what).is_empty());
        assert!(
            !cache.by_name[&name].contains_key(&pid),
            "gone processes are forgotten"
        );
    }
}
