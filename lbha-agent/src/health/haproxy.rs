//! The `haproxy` check: asks HAProxy itself, over its stats socket or master
//! CLI, whether it serves, instead of only whether its process exists.
//!
//! - `show info` answered within the check's timeout proves the worker
//!   serves (a hung or SIGSTOPped HAProxy accepts the connection and never
//!   answers); `show stat` says which frontends are OPEN and which backends
//!   have a server UP.
//! - One connection is held in interactive (`prompt`) mode for every
//!   command of every run; it is dropped on any error, on a timeout (a late
//!   answer would be read as the next command's) and when the worker it
//!   reaches is stopping (`Stopping: 1` after a reload: a held connection
//!   would keep the old worker alive and ask it, not the new one).
//! - Reloads: while the master lives and has a worker, a refused or closed
//!   socket is a reload in progress (the new worker binds the socket a
//!   moment later), not a failure, for up to `reload_grace`. The master's
//!   and the answering worker's pidfds make a crash of the master, or of
//!   the last worker, count at once.
//! - Nothing forks; all I/O is non-blocking on the runtime, and the procfs
//!   reads (a worker's parent, a master's children) run on the blocking pool.

use std::{
    collections::HashMap,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use thiserror::Error;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, unix::AsyncFd},
    net::UnixStream,
};

use crate::config::{self, BackendsDown, HaproxyCheck, HaproxySocket};

pub mod discover;

/// The most a reply may hold: a `show stat` of thousands of servers is a
/// few MiB; anything larger is not HAProxy talking.
const MAX_REPLY: usize = 32 << 20;

#[derive(Debug, Error)]
pub enum CliError {
    #[error("connect {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed by HAProxy")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("reply larger than {MAX_REPLY} bytes")]
    TooLarge,
    #[error("finding HAProxy's socket: {0}")]
    Discover(#[from] discover::DiscoverError),
}

impl CliError {
    /// What a reload looks like from the socket: nothing listening for a
    /// moment, or the old worker closing the connection.
    fn reload_shaped(&self) -> bool {
        match self {
            CliError::Connect { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ),
            CliError::Closed => true,
            CliError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            CliError::Timeout(_) | CliError::TooLarge | CliError::Discover(_) => false,
        }
    }
}

/// One interactive CLI connection.
struct Cli {
    stream: UnixStream,
    /// `@1 ` on the master CLI: the command goes to the current worker.
    prefix: &'static str,
    buf: Vec<u8>,
}

impl Cli {
    async fn connect(socket: &HaproxySocket) -> Result<Self, CliError> {
        let (path, prefix) = match socket {
            HaproxySocket::Stats(path) => (path, ""),
            HaproxySocket::Master(path) => (path, "@1 "),
            // The probe resolves it first ([`HaproxyProbe::resolve`]).
            HaproxySocket::Discover { .. } => {
                return Err(CliError::Discover(discover::DiscoverError::NoMaster));
            }
        };
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| CliError::Connect {
                path: path.clone(),
                source,
            })?;
        let mut cli = Self {
            stream,
            prefix,
            buf: Vec::new(),
        };
        // Interactive mode: the connection stays open after each command,
        // and every reply ends with a prompt line.
        cli.send_raw("prompt").await?;
        Ok(cli)
    }

    async fn command(&mut self, command: &str) -> Result<String, CliError> {
        let line = format!("{}{command}", self.prefix);
        self.send_raw(&line).await
    }

    async fn send_raw(&mut self, line: &str) -> Result<String, CliError> {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .await?;
        self.buf.clear();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(CliError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = reply_end(&self.buf) {
                return Ok(String::from_utf8_lossy(&self.buf[..end]).into_owned());
            }
            if self.buf.len() > MAX_REPLY {
                return Err(CliError::TooLarge);
            }
        }
    }
}

/// Where the reply ends when `buf` ends with the prompt line (`> ` on a
/// stats socket, `master> ` on the master CLI), alone on its line.
fn reply_end(buf: &[u8]) -> Option<usize> {
    let start = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let last = &buf[start..];
    (last == b"> " || last == b"master> ").then_some(start)
}

/// What `show info` tells.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Info {
    /// The answering worker's PID (in HAProxy's PID namespace).
    pub pid: Option<i32>,
    /// The worker is draining after a reload.
    pub stopping: bool,
}

pub fn parse_info(text: &str) -> Info {
    let mut info = Info::default();
    for line in text.lines() {
        match line.split_once(':').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("Pid", pid)) => info.pid = pid.parse().ok(),
            Some(("Stopping", v)) => info.stopping = v != "0",
            _ => {}
        }
    }
    info
}

/// One backend's servers, from `show stat`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// HAProxy's own verdict on the backend row (it weighs backup servers,
    /// maintenance and drain): UP while some server can take traffic.
    pub up: bool,
    pub servers: u32,
    pub servers_up: u32,
}

/// What `show stat` tells: frontend statuses and backends.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stat {
    /// Frontend name -> status (`OPEN`, `STOP`, ...).
    pub frontends: HashMap<String, String>,
    pub backends: HashMap<String, Backend>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StatError {
    #[error("`show stat` has no CSV header")]
    NoHeader,
    #[error("`show stat` header has no `{0}` column")]
    NoColumn(&'static str),
}

/// Parses `show stat`'s CSV (columns found by the header, so that fields
/// HAProxy adds in later versions do not shift them).
pub fn parse_stat(text: &str) -> Result<Stat, StatError> {
    let mut lines = text.lines();
    let header = lines
        .find_map(|l| l.strip_prefix("# "))
        .ok_or(StatError::NoHeader)?;
    let columns: Vec<&str> = header.split(',').collect();
    let col = |name: &'static str| {
        columns
            .iter()
            .position(|c| *c == name)
            .ok_or(StatError::NoColumn(name))
    };
    let (px, sv, status) = (col("pxname")?, col("svname")?, col("status")?);
    let mut stat = Stat::default();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(px), Some(sv), Some(status)) =
            (fields.get(px), fields.get(sv), fields.get(status))
        else {
            continue;
        };
        match *sv {
            "FRONTEND" => {
                stat.frontends.insert((*px).into(), (*status).into());
            }
            "BACKEND" => stat.backends.entry((*px).into()).or_default().up = *status == "UP",
            _ => {
                let backend = stat.backends.entry((*px).into()).or_default();
                backend.servers += 1;
                // `UP`, `UP 1/3` (going down), and a server without health
                // checks, which HAProxy always uses.
                if status.starts_with("UP") || *status == "no check" {
                    backend.servers_up += 1;
                }
            }
        }
    }
    Ok(stat)
}

/// Whether the frontends required are open: `Err` names the first that is not.
pub fn frontends_verdict(check: &HaproxyCheck, stat: &Stat) -> Result<(), String> {
    for name in &check.require_frontends {
        match stat.frontends.get(name) {
            Some(status) if status == "OPEN" => {}
            Some(status) => return Err(format!("frontend {name} is {status}")),
            None => return Err(format!("no frontend {name}")),
        }
    }
    Ok(())
}

/// Whether the backends have servers UP: with names, each named one must;
/// without, at least one backend that has servers must.
pub fn backends_verdict(check: &HaproxyCheck, stat: &Stat) -> Result<(), String> {
    if check.backends.is_empty() {
        let with_servers: Vec<_> = stat.backends.values().filter(|b| b.servers > 0).collect();
        if !with_servers.is_empty() && with_servers.iter().all(|b| !b.up) {
            return Err(format!(
                "no server UP in any of {} backend(s)",
                with_servers.len()
            ));
        }
        return Ok(());
    }
    for name in &check.backends {
        match stat.backends.get(name) {
            Some(b) if b.up => {}
            Some(b) => {
                return Err(format!(
                    "backend {name}: no server UP ({} of {})",
                    b.servers_up, b.servers
                ));
            }
            None => return Err(format!("no backend {name}")),
        }
    }
    Ok(())
}

/// The result of one run.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// HAProxy answered: whether it serves (frontends) and whether the
    /// backends have servers, each with why not.
    Answered {
        serving: Result<(), String>,
        backends: Result<(), String>,
    },
    /// HAProxy does not serve: a hang, the master or every worker gone, a
    /// socket refused past the reload grace.
    Down(String),
    /// A reload in progress: nothing to record.
    Reloading(String),
}

/// A pidfd registered with the reactor.
struct Watched {
    pid: i32,
    fd: AsyncFd<OwnedFd>,
}

impl Watched {
    fn open(pid: i32) -> Option<Self> {
        let fd = super::process::pidfd_open(pid).ok()?;
        // SAFETY (register): the OwnedFd is kept inside the AsyncFd and
        // returns the same fd until dropped.
        let fd = unsafe { AsyncFd::register(fd) }.ok()?;
        Some(Self { pid, fd })
    }

    /// A pidfd polls readable once its process has exited.
    fn exited(&self) -> bool {
        let mut poll = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(self.fd.get_ref()),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, owned by this frame; timeout 0 never blocks.
        unsafe { libc::poll(&raw mut poll, 1, 0) > 0 }
    }
}

/// The check's state between runs.
pub struct HaproxyProbe {
    check: HaproxyCheck,
    timeout: Duration,
    cli: Option<Cli>,
    master: Option<Watched>,
    worker: Option<Watched>,
    /// When the socket started refusing while a reload looked possible.
    refusing_since: Option<Instant>,
    /// Connections made: a steady one means the connection is held.
    pub connects: u64,
    /// The last query connected afresh (instead of using the held connection).
    fresh: bool,
    /// The socket in use: the configured one, or the one discovered
    /// (`None` until found, and again after a connection to it failed).
    socket: Option<HaproxySocket>,
}

/// What the process table says of a master PID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Family {
    master_alive: bool,
    workers: usize,
    /// How long ago the newest worker started.
    youngest: Option<Duration>,
}

/// How long ago `pid` started (procfs start time against the uptime).
fn age_of(pid: i32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // starttime is field 22; after the comm's ')' it is the 20th.
    let start_ticks: u64 = stat.rsplit_once(") ")?.1.split(' ').nth(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks <= 0 {
        return None;
    }
    let started = start_ticks as f64 / ticks as f64;
    Some(Duration::from_secs_f64((uptime - started).max(0.0)))
}

fn proc_comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim_end().to_owned())
}

fn proc_ppid_and_state(pid: i32) -> Option<(i32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm is in parentheses and may contain anything: split after the last ')'.
    let rest = stat.rsplit_once(") ")?.1;
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

fn live(state: char) -> bool {
    !matches!(state, 'Z' | 'X' | 'x')
}

/// The master's liveness and how many live children it has (its workers,
/// old draining ones included). Blocking: procfs reads.
fn family_of(master: i32) -> Family {
    let master_alive = proc_ppid_and_state(master).is_some_and(|(_, s)| live(s));
    if !master_alive {
        return Family {
            master_alive,
            workers: 0,
            youngest: None,
        };
    }
    // The kernel lists each thread's children; HAProxy's master forks from
    // its main thread, but read them all to be safe.
    let mut children: Vec<i32> = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{master}/task")) {
        for task in tasks.filter_map(Result::ok) {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                children.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    let workers: Vec<i32> = children
        .into_iter()
        .filter(|pid| proc_ppid_and_state(*pid).is_some_and(|(ppid, s)| ppid == master && live(s)))
        .collect();
    Family {
        master_alive,
        workers: workers.len(),
        youngest: workers.iter().filter_map(|pid| age_of(*pid)).min(),
    }
}

/// The master of a worker: its parent, when that is an HAProxy too (in
/// master-worker mode); `None` for a standalone HAProxy. Blocking.
fn master_of(worker: i32) -> Option<i32> {
    let comm = proc_comm(worker)?;
    let (ppid, _) = proc_ppid_and_state(worker)?;
    (ppid > 1 && proc_comm(ppid).is_some_and(|c| c == comm)).then_some(ppid)
}

fn read_pidfile(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

impl HaproxyProbe {
    pub fn new(check: HaproxyCheck, timeout: Duration) -> Self {
        Self {
            check,
            timeout,
            cli: None,
            master: None,
            worker: None,
            refusing_since: None,
            connects: 0,
            fresh: false,
            socket: None,
        }
    }

    /// Returns when the master or the watched worker exits (so that a
    /// crash counts at once), or after `interval`.
    pub async fn wait(&self, interval: Duration) {
        let sleep = tokio::time::sleep(interval);
        let master = async {
            match &self.master {
                Some(w) => drop(w.fd.readable().await),
                None => std::future::pending().await,
            }
        };
        let worker = async {
            match &self.worker {
                Some(w) => drop(w.fd.readable().await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = master => {}
            () = worker => {}
        }
    }

    /// One run: the process family first (a dead master or no worker left
    /// is down at once), then `show info` and `show stat`.
    pub async fn run(&mut self) -> Outcome {
        self.refresh_master().await;
        if let Some(master) = &self.master
            && master.exited()
        {
            let pid = master.pid;
            self.forget();
            return Outcome::Down(format!("HAProxy master {pid} exited"));
        }
        if let Some(worker) = &self.worker
            && worker.exited()
        {
            // A draining worker's exit after a reload, or a crash: the
            // master's children tell.
            self.worker = None;
            self.cli = None;
            if let Some(family) = self.family().await
                && family.workers == 0
            {
                return Outcome::Down("every HAProxy worker exited".into());
            }
        }
        match self.query().await {
            Ok((info, stat)) => {
                self.refusing_since = None;
                self.track_worker(info.pid).await;
                Outcome::Answered {
                    serving: frontends_verdict(&self.check, &stat),
                    backends: backends_verdict(&self.check, &stat),
                }
            }
            Err(error) => {
                self.cli = None;
                let fresh = self.fresh;
                let family = self.family().await;
                // A new worker that has not yet started polling leaves a
                // fresh connection unanswered in its backlog (the master
                // bound the socket for it). A held connection that stops
                // answering, or a worker older than a reload, is a hang.
                let starting = matches!(error, CliError::Timeout(_))
                    && fresh
                    && family.is_some_and(|f| {
                        f.youngest.is_some_and(|age| age < self.check.reload_grace)
                    });
                if !error.reload_shaped() && !starting {
                    return Outcome::Down(error.to_string());
                }
                let since = *self.refusing_since.get_or_insert_with(Instant::now);
                match family {
                    Some(f) if f.master_alive && f.workers > 0 => {
                        if since.elapsed() < self.check.reload_grace {
                            Outcome::Reloading(format!(
                                "{error} while the master runs {} worker(s)",
                                f.workers
                            ))
                        } else {
                            Outcome::Down(format!(
                                "{error} for {:?} (longer than a reload)",
                                since.elapsed()
                            ))
                        }
                    }
                    Some(f) if f.master_alive => {
                        Outcome::Down(format!("{error}; the master has no worker"))
                    }
                    Some(_) => Outcome::Down(format!("{error}; the master is gone")),
                    None => Outcome::Down(error.to_string()),
                }
            }
        }
    }

    fn forget(&mut self) {
        self.cli = None;
        self.master = None;
        self.worker = None;
    }

    /// `show info` (reconnecting once when the worker reached is draining)
    /// and `show stat`, each within the timeout.
    async fn query(&mut self) -> Result<(Info, Stat), CliError> {
        self.fresh = false;
        let (info, stat) = self.query_once().await?;
        if info.stopping || frontends_verdict(&self.check, &stat).is_ok() {
            return Ok((info, stat));
        }
        // A reload's soft stop can land between `show info` (not yet
        // stopping) and `show stat` (its frontends already STOP): ask again
        // whether this worker is stopping, and if so ask the new one.
        let again = self.timed("show info").await.map(|t| parse_info(&t))?;
        if !again.stopping {
            return Ok((info, stat));
        }
        self.cli = None;
        self.query_once().await
    }

    async fn query_once(&mut self) -> Result<(Info, Stat), CliError> {
        let mut info = self.timed("show info").await.map(|t| parse_info(&t))?;
        if info.stopping {
            // The old worker of a reload: let it go, ask the new one.
            self.cli = None;
            info = self.timed("show info").await.map(|t| parse_info(&t))?;
        }
        let text = self.timed("show stat").await?;
        let stat = parse_stat(&text).map_err(|e| {
            self.cli = None;
            CliError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })?;
        Ok((info, stat))
    }

    /// The socket to connect to: the configured one, or the one found
    /// from the running HAProxy (blocking pool: procfs and the config
    /// files); the master it was found from is watched, as a pidfile's.
    async fn resolve(&mut self) -> Result<HaproxySocket, CliError> {
        if let Some(socket) = &self.socket {
            return Ok(socket.clone());
        }
        let HaproxySocket::Discover { config } = &self.check.socket else {
            self.socket = Some(self.check.socket.clone());
            return Ok(self.check.socket.clone());
        };
        let (config, pidfile) = (config.clone(), self.check.pidfile.clone());
        let found = tokio::task::spawn_blocking(move || {
            discover::discover(config.as_deref(), pidfile.as_deref())
        })
        .await
        .map_err(|e| CliError::Io(std::io::Error::other(e)))??;
        if let Some(pid) = found.master
            && self.master.as_ref().is_none_or(|m| m.pid != pid)
        {
            self.master = Watched::open(pid);
        }
        tracing::info!(socket = ?found.socket, master = ?found.master, "haproxy check: socket discovered");
        self.socket = Some(found.socket.clone());
        Ok(found.socket)
    }

    /// One command within the timeout, connecting first when needed.
    async fn timed(&mut self, command: &str) -> Result<String, CliError> {
        let timeout = self.timeout;
        // Outside the timeout: finding the socket reads procfs and files.
        let socket = if self.cli.is_none() {
            Some(self.resolve().await?)
        } else {
            None
        };
        let result = tokio::time::timeout(timeout, async {
            if let Some(socket) = &socket {
                self.fresh = true;
                self.cli = Some(Cli::connect(socket).await?);
                self.connects += 1;
            }
            let cli = self.cli.as_mut().expect("connected above");
            cli.command(command).await
        })
        .await;
        match result {
            Ok(Ok(text)) => Ok(text),
            Ok(Err(error)) => {
                self.cli = None;
                // A discovered socket that refuses or closes may have moved
                // (a reload with a changed configuration): find it again
                // before the next connection.
                if matches!(self.check.socket, HaproxySocket::Discover { .. }) {
                    self.socket = None;
                }
                Err(error)
            }
            Err(_) => {
                // A late answer would be read as the next command's.
                self.cli = None;
                Err(CliError::Timeout(timeout))
            }
        }
    }

    /// The master from the pidfile, when one is configured (read each run:
    /// a restart writes a new PID).
    async fn refresh_master(&mut self) {
        let Some(path) = self.check.pidfile.clone() else {
            return;
        };
        let pid = tokio::task::spawn_blocking(move || read_pidfile(&path))
            .await
            .ok()
            .flatten();
        match pid {
            Some(pid) if self.master.as_ref().is_some_and(|m| m.pid == pid) => {}
            Some(pid) => self.master = Watched::open(pid),
            None => {}
        }
    }

    /// Watches the worker that answered, and its master.
    async fn track_worker(&mut self, pid: Option<i32>) {
        let Some(pid) = pid else { return };
        if self.worker.as_ref().is_some_and(|w| w.pid == pid) {
            return;
        }
        // The PID is HAProxy's view; only trust it if this PID namespace has
        // an HAProxy by it (not so when HAProxy runs in a container).
        let found = tokio::task::spawn_blocking(move || {
            let comm = proc_comm(pid)?;
            comm.starts_with("haproxy").then(|| master_of(pid))
        })
        .await
        .ok()
        .flatten();
        let Some(master) = found else {
            self.worker = None;
            return;
        };
        self.worker = Watched::open(pid);
        if self.check.pidfile.is_none()
            && let Some(master) = master
            && self.master.as_ref().is_none_or(|m| m.pid != master)
        {
            self.master = Watched::open(master);
        }
    }

    /// The master's family, when a master is known.
    async fn family(&self) -> Option<Family> {
        let master = self.master.as_ref()?.pid;
        tokio::task::spawn_blocking(move || family_of(master))
            .await
            .ok()
    }
}

/// `backends_down` as a track's weight: 0 (Fault) or the negative weight.
pub fn backends_weight(check: &HaproxyCheck) -> i32 {
    match check.backends_down {
        BackendsDown::Weight(w) => w,
        BackendsDown::Fault => 0,
    }
}

/// For `import-keepalived`: a suggestion when a check is a `pidof haproxy`
/// / `killall -0 haproxy` (which cannot tell a hang, a closed frontend or a
/// reload from health).
pub fn import_suggestion(check: &config::Check) -> Option<String> {
    if check.probe.is_some() {
        return None;
    }
    let words = super::script::split_command(&check.script);
    if super::process::process_check_of(&words)? != "haproxy" {
        return None;
    }
    Some(format!(
        "check `{}` runs `{}`, which sees HAProxy exist, not serve: consider the `haproxy` check \
         (HAProxy's stats socket: a hang, a closed frontend or backends without servers count, \
         a reload does not), e.g.\n  \
         [[check]]\n  name = \"{}\"\n  haproxy = {{ }}\n  \
         which finds the socket from the running HAProxy: its `-S` master socket, or a \
         `stats socket /run/haproxy/admin.sock level admin` line in haproxy.cfg's global section \
         (or name it: `stats_socket = \"PATH\"`)",
        check.name, check.script, check.name
    ))
}

#[cfg(test)]
mod tests;
