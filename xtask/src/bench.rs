//! `cargo xtask bench`: lbha against the seed's keepalived stack, in the
//! lab's namespace topology.
//!
//! Three stacks run on the two load balancers in turn: keepalived 2.2 with
//! the seed's `pidof haproxy` check and a master.sh-style `notify_master`
//! script; lbha with that very keepalived.conf; lbha with its native TOML.
//! Four measurements, reported side by side with ratios:
//!
//! 1. HAProxy SIGKILLed on the Master → the assign request reaches the
//!    simulated API (its `requested_at_ms`, against the kill instant put on
//!    the simulator's clock), 10 ms adverts, `--runs` times.
//! 2. The Master node crashes (every process SIGKILLed) → assign request.
//! 3. CPU time and context switches per second of the BACKUP's daemon at
//!    100 adverts/s (1 VRID, v3 `advert_int 0.01`) and at 16 VRIDs (16
//!    instances, each at 0.01) over a fixed window.
//! 4. Unexpected state transitions in a run at 20 ms adverts with every CPU
//!    kept busy by spinning threads (all stacks side by side, at once).
//! 5. lbha's advert lateness while its HAProxy check rescans many processes.
//! 6. Scale: many VRIDs per node.
//! 7. The real API path: HTTPS through a relay 15 ms each way (the lab's
//!    [`ApiPath::Remote`]), HAProxy killed and node crashed → the assign
//!    accepted (the 201 received by the client): keepalived + master.sh
//!    (curl, a new connection each time) against lbha with either
//!    configuration (its warm connection), and lbha with the keep-alive off
//!    to show what the warm connection saves. Before each fault the
//!    simulator closes every API connection, as DigitalOcean's side drops
//!    idle ones, so only a keep-alive sent since can have left one open.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use lbha_harness::{COMMAND_TIMEOUT, run_command};
use lbha_lab::{
    ApiPath, Binaries, Lab, LabOptions, REMOTE_API_DELAY, Stack, assign_answers, droplet_id,
};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Failovers measured per stack in scenarios 1 and 2.
    #[arg(long, default_value = "5")]
    runs: usize,
    /// Shorter windows: 5 s CPU windows and a 60 s stress run instead of 20 s and 10 minutes.
    #[arg(long)]
    quick: bool,
    /// Scenarios to run, e.g. `--only 1,3` (default: all seven).
    #[arg(long, value_delimiter = ',')]
    only: Vec<u8>,
    /// Override the CPU measurement window of scenario 3, in seconds.
    #[arg(long)]
    window_secs: Option<u64>,
    /// Override the duration of the stress run of scenario 4, in seconds.
    #[arg(long)]
    stress_secs: Option<u64>,
    /// Override the measurement window of scenario 6 (scale), in seconds.
    #[arg(long)]
    scale_secs: Option<u64>,
    /// Scenario 6 only for lbha (native TOML), e.g. while tuning it.
    #[arg(long)]
    scale_lbha_only: bool,
    /// Scenario 6 only at these sizes (VRIDs: 1, 255, 1020), e.g. `--scale-vrids 1020`.
    #[arg(long, value_delimiter = ',')]
    scale_vrids: Vec<u32>,
    /// Directory for results.json and results.md.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

/// The stacks compared, in report order.
const STACKS: [Stack; 3] = [Stack::Keepalived, Stack::LbhaKeepalivedConf, Stack::Lbha];

/// Adverts of scenarios 1-3 (VRRPv3 `advert_int 0.01`).
const FAST_ADVERTS: Duration = Duration::from_millis(10);
/// Adverts of the stress run.
const STRESS_ADVERTS: Duration = Duration::from_millis(20);
/// A stack is settled when nothing changed (holder, actions, transitions)
/// for this long: longer than master.sh's 3 s retry pause.
const QUIET: Duration = Duration::from_secs(4);
/// How long a settled lab may leave the floating IP on the wrong node before
/// the bench puts it right through the API: longer than lbha's default
/// `recheck_interval` (10 s), after which lbha takes it back by itself.
const REPAIR_AFTER: Duration = Duration::from_secs(15);

fn stack_key(stack: Stack) -> &'static str {
    match stack {
        Stack::Keepalived => "keepalived",
        Stack::LbhaKeepalivedConf => "lbha_keepalived_conf",
        Stack::Lbha => "lbha_native",
    }
}

fn stack_tag(stack: Stack) -> char {
    match stack {
        Stack::Keepalived => 'k',
        Stack::LbhaKeepalivedConf => 'c',
        Stack::Lbha => 'n',
    }
}

struct Bench {
    bins: Binaries,
    stop: Arc<AtomicBool>,
    runs: usize,
    window: Duration,
    stress: Duration,
    quick: bool,
    /// Scenario 5's measurement window.
    lateness_window: Duration,
    /// Scenario 6's measurement window.
    scale_window: Duration,
}

impl Bench {
    fn check_stop(&self) -> Result<()> {
        if self.stop.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        Ok(())
    }

    /// Sleeps `d`, returning early with an error on Ctrl-C.
    fn sleep(&self, d: Duration) -> Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.check_stop()?;
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
        Ok(())
    }

    fn start_lab(&self, tag: &str, opts: LabOptions) -> Result<Lab> {
        self.check_stop()?;
        Lab::start(tag, self.bins.clone(), opts)
    }
}

/// What is observable about a lab's failover state, to tell when it has
/// settled.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Signature {
    holder: Option<u64>,
    actions: usize,
    pending: bool,
    transitions: [usize; 2],
    last: [Option<String>; 2],
}

fn signature(lab: &Lab) -> Signature {
    let actions = lab.sim_actions();
    let t = [lab.transitions(0), lab.transitions(1)];
    Signature {
        holder: lab.holder(),
        actions: actions.len(),
        pending: actions.iter().any(|a| a.status == "in-progress"),
        transitions: [t[0].len(), t[1].len()],
        last: [
            t[0].last().map(|t| t.to.clone()),
            t[1].last().map(|t| t.to.clone()),
        ],
    }
}

/// Waits until load balancer `master` holds the floating IP and is MASTER,
/// the other is BACKUP (when `other_backup`), and nothing changed for
/// [`QUIET`]. Returns how often the floating IP had to be put right by hand
/// (see [`REPAIR_AFTER`]).
fn settle(bench: &Bench, lab: &Lab, master: usize, other_backup: bool) -> Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut repairs = 0;
    let mut since = Instant::now();
    let mut last = signature(lab);
    loop {
        bench.check_stop()?;
        std::thread::sleep(Duration::from_millis(100));
        let now = signature(lab);
        if now != last {
            last = now;
            since = Instant::now();
            continue;
        }
        let roles = !now.pending
            && now.last[master].as_deref() == Some("MASTER")
            && (!other_backup || now.last[1 - master].as_deref() == Some("BACKUP"));
        let good = roles && now.holder == Some(droplet_id(master));
        if good && since.elapsed() >= QUIET {
            return Ok(repairs);
        }
        // The roles are right but the floating IP stayed elsewhere: the seed's
        // master.sh race (a notify script still retrying after its node lost
        // Mastership, or two notify scripts at start-up). Nothing in
        // keepalived puts it right (lbha re-checks every recheck_interval,
        // 10 s by default); an operator would.
        if roles && now.holder != Some(droplet_id(master)) && since.elapsed() >= REPAIR_AFTER {
            println!(
                "bench: {}: lb{} is Master but the floating IP is on {:?}: assigning it through the API",
                lab.stack().name(),
                master + 1,
                now.holder
            );
            lab.api_assign(droplet_id(master))?;
            repairs += 1;
            since = Instant::now();
        }
        if Instant::now() > deadline {
            bail!(
                "{}: lb{} never settled as the holder and Master ({now:?}).\n\
                 lb1 log (tail):\n{}\nlb2 log (tail):\n{}\nsimulator log (tail):\n{}",
                lab.stack().name(),
                master + 1,
                tail(&lab.lb_log(0), 40),
                tail(&lab.lb_log(1), 40),
                tail(&lab.sim_log(), 20),
            );
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    HaproxyKill,
    NodeCrash,
}

/// Scenario 1 or 2 for one stack.
struct Failovers {
    /// Kill → assign request, ms.
    latencies: Vec<f64>,
    /// Kill → the backup logged MASTER, ms (lbha only: keepalived stamps
    /// its log to the second).
    to_master: Vec<Option<f64>>,
    /// Times the floating IP had to be put back on lb1 by hand.
    repairs: u32,
}

fn failovers(bench: &Bench, stack: Stack, failure: Failure) -> Result<Failovers> {
    let tag = format!(
        "b{}{}",
        if failure == Failure::HaproxyKill {
            1
        } else {
            2
        },
        stack_tag(stack)
    );
    let opts = LabOptions {
        advert_interval: FAST_ADVERTS,
        stack,
        ..LabOptions::default()
    };
    let mut lab = bench.start_lab(&tag, opts)?;
    let mut result = Failovers {
        latencies: Vec::new(),
        to_master: Vec::new(),
        repairs: settle(bench, &lab, 0, true)?,
    };
    for run in 0..bench.runs {
        bench.check_stop()?;
        // A random pause, so that the kill falls anywhere in the check
        // scripts' 2 s interval rather than at the same phase every run.
        bench.sleep(Duration::from_millis(jitter_ms(2000)))?;
        let clock = lab.sim_clock()?;
        let before = lab.sim_actions().len();
        let at = match failure {
            Failure::HaproxyKill => {
                let (at, killed) = lab.kill_haproxy_at(0);
                if killed == 0 {
                    bail!("no HAProxy process on lb1");
                }
                at
            }
            Failure::NodeCrash => lab.crash_lb_at(0),
        };
        let killed_ms = clock.ms(at);
        let mut request = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while request.is_none() && Instant::now() < deadline {
            bench.check_stop()?;
            std::thread::sleep(Duration::from_millis(20));
            request = lab
                .sim_actions()
                .iter()
                .skip(before)
                .find(|a| a.droplet_id == Some(droplet_id(1)))
                .map(|a| a.requested_at_ms);
        }
        let Some(requested_ms) = request else {
            bail!(
                "{}: no assign to lb2 within 20 s of the {failure:?}.\nlb2 log (tail):\n{}",
                stack.name(),
                tail(&lab.lb_log(1), 40)
            );
        };
        // requested_at_ms is truncated to the millisecond: +0.5 on average.
        let latency = requested_ms as f64 + 0.5 - killed_ms;
        // Log stamps are wall clock, placed against the lab's start (ms).
        let killed_in_lab = at.duration_since(lab.started).as_secs_f64() * 1e3;
        let to_master = (stack != Stack::Keepalived)
            .then(|| {
                lab.transitions(1)
                    .iter()
                    .map(|t| (t.at.as_secs_f64() * 1e3, t.to.clone()))
                    .find(|(t, to)| *t + 1.0 >= killed_in_lab && to == "MASTER")
                    .map(|(t, _)| t - killed_in_lab)
            })
            .flatten();
        println!(
            "bench: {:<28} {failure:?} run {}: assign requested {latency:.1} ms after the kill{} (clock ±{:.2} ms)",
            stack.name(),
            run + 1,
            to_master.map_or(String::new(), |m| format!(", lb2 MASTER after ~{m:.0} ms")),
            clock.uncertainty.as_secs_f64() * 1e3
        );
        result.latencies.push(latency);
        result.to_master.push(to_master);
        // Let the failover finish (lb2 holds the IP, notify scripts done)
        // before lb1 comes back, as it would after a real outage.
        result.repairs += settle(bench, &lab, 1, false)?;
        match failure {
            Failure::HaproxyKill => lab.start_haproxy(0)?,
            Failure::NodeCrash => lab.start_lb(0)?,
        }
        result.repairs += settle(bench, &lab, 0, true)?;
    }
    Ok(result)
}

/// Scenario 7 for one stack.
struct RemoteFailovers {
    /// Kill → the assign's 201 received by the client, ms.
    latencies: Vec<f64>,
    /// Runs whose accepted assign came on a connection that had carried an
    /// earlier request (a warm one).
    warm: usize,
    /// Per run: connections the load balancers opened through the relay
    /// between the fault and the 201.
    opened: Vec<u64>,
    repairs: u32,
}

/// One column of scenario 7: a stack, and lbha's `keepalive_interval`.
struct RemoteVariant {
    key: &'static str,
    stack: Stack,
    keepalive: Option<Duration>,
}

/// lbha's `keepalive_interval` in scenario 7: short, so that a keep-alive
/// follows the simulator's closing of every connection well within
/// [`REWARM_WAIT`]. The interval only decides how soon after the far side
/// dropped it a connection is warm again; the default (25 s) does the same
/// within the minute DigitalOcean's side keeps an idle one.
const BENCH_KEEPALIVE: Duration = Duration::from_secs(1);
/// Between closing every API connection and the fault: long enough for one
/// keep-alive (a new connection: TCP, TLS and the request, ~90 ms).
const REWARM_WAIT: Duration = Duration::from_millis(1500);

/// Scenario 7's adverts: what is measured is the API path, so an interval
/// at which keepalived keeps its roles on a loaded shared machine (at 10 ms
/// it flaps there).
const REMOTE_ADVERTS: Duration = Duration::from_millis(50);

/// Scenario 7's lbha (native TOML) with `keepalive_interval = 0`.
const NO_KEEPALIVE_KEY: &str = "lbha_native_no_keepalive";

/// The columns of scenario 7; the first three are [`STACKS`]' (same keys).
const REMOTE_VARIANTS: [RemoteVariant; 4] = [
    RemoteVariant {
        key: "keepalived",
        stack: Stack::Keepalived,
        keepalive: None,
    },
    RemoteVariant {
        key: "lbha_keepalived_conf",
        stack: Stack::LbhaKeepalivedConf,
        keepalive: Some(BENCH_KEEPALIVE),
    },
    RemoteVariant {
        key: "lbha_native",
        stack: Stack::Lbha,
        keepalive: Some(BENCH_KEEPALIVE),
    },
    RemoteVariant {
        key: NO_KEEPALIVE_KEY,
        stack: Stack::Lbha,
        keepalive: Some(Duration::ZERO),
    },
];

/// When load balancer 2's client got the 201 of an assign to itself, at or
/// after `after`: lbha's `answered_unix_us`, master.sh's log line.
fn accepted_at(lab: &Lab, after: std::time::SystemTime) -> Option<std::time::SystemTime> {
    let accepts = match lab.stack_of(1) {
        Stack::Keepalived => lab.notify_accepts(),
        Stack::Lbha | Stack::LbhaKeepalivedConf => assign_answers(&lab.lb_log(1)),
    };
    accepts
        .into_iter()
        .filter(|(droplet, at)| *droplet == droplet_id(1) && *at >= after)
        .map(|(_, at)| at)
        .min()
}

/// Whether the first 201 to an assign to lb2 received at or after
/// `after_us` (the simulator's clock) came on a connection that had
/// carried an earlier request.
fn assign_was_warm(lab: &Lab, after_us: f64) -> Result<bool> {
    let requests = lab.sim_requests()?;
    let body = format!("\"droplet_id\":{}", droplet_id(1));
    let Some(assign) = requests.iter().find(|r| {
        r["method"] == "POST"
            && r["status"] == "201"
            && r["body"].as_str().is_some_and(|b| b.contains(&body))
            && r["received_us"].as_f64().is_some_and(|us| us >= after_us)
    }) else {
        bail!("no accepted assign to lb2 in the simulator's request log");
    };
    Ok(requests.iter().any(|r| {
        r["connection"] == assign["connection"] && r["seq"].as_u64() < assign["seq"].as_u64()
    }))
}

fn remote_failovers(
    bench: &Bench,
    variant: &RemoteVariant,
    failure: Failure,
) -> Result<RemoteFailovers> {
    let stack = variant.stack;
    let tag = format!(
        "b7{}{}{}",
        if failure == Failure::HaproxyKill {
            'h'
        } else {
            'c'
        },
        stack_tag(stack),
        if variant.keepalive == Some(Duration::ZERO) {
            "0"
        } else {
            ""
        }
    );
    let opts = LabOptions {
        advert_interval: REMOTE_ADVERTS,
        stack,
        api: ApiPath::Remote {
            delay: REMOTE_API_DELAY,
        },
        keepalive_interval: variant.keepalive,
        ..LabOptions::default()
    };
    let mut lab = bench.start_lab(&tag, opts)?;
    let mut result = RemoteFailovers {
        latencies: Vec::new(),
        warm: 0,
        opened: Vec::new(),
        repairs: settle(bench, &lab, 0, true)?,
    };
    for run in 0..bench.runs {
        let mut tries = 0;
        loop {
            bench.check_stop()?;
            let before = signature(&lab);
            bench.sleep(Duration::from_millis(jitter_ms(2000)))?;
            // DigitalOcean's side has dropped whatever connection the last
            // failover left: only a keep-alive since can have opened one.
            lab.close_api_connections()?;
            bench.sleep(REWARM_WAIT)?;
            // A false takeover meanwhile (a loaded machine) can leave a
            // notify script's assign behind: settle again and start over.
            if signature(&lab) == before {
                break;
            }
            tries += 1;
            println!(
                "bench: {} [{}]: the roles or the floating IP moved before the fault; settling again",
                stack.name(),
                variant.key
            );
            if tries >= 5 {
                bail!(
                    "{}: the lab never stayed settled before the fault",
                    stack.name()
                );
            }
            result.repairs += settle(bench, &lab, 0, true)?;
        }
        let clock = lab.sim_clock()?;
        let connections_before = lab.relay_connections().unwrap_or(0);
        let at = match failure {
            Failure::HaproxyKill => {
                let (at, killed) = lab.kill_haproxy_at(0);
                if killed == 0 {
                    bail!("no HAProxy process on lb1");
                }
                at
            }
            Failure::NodeCrash => lab.crash_lb_at(0),
        };
        // The kill on the wall clock, which both stacks' answers are on.
        let killed_wall = lab.started_wall + at.duration_since(lab.started);
        let mut accepted = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while accepted.is_none() && Instant::now() < deadline {
            bench.check_stop()?;
            std::thread::sleep(Duration::from_millis(20));
            accepted = accepted_at(&lab, killed_wall);
        }
        let Some(accepted) = accepted else {
            bail!(
                "{}: no accepted assign to lb2 within 20 s of the {failure:?}.\nlb2 log (tail):\n{}\nsimulator log (tail):\n{}",
                stack.name(),
                tail(&lab.lb_log(1), 40),
                tail(&lab.sim_log(), 20)
            );
        };
        let latency = accepted
            .duration_since(killed_wall)
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3;
        let warm = assign_was_warm(&lab, clock.ms(at) * 1e3)?;
        let opened = lab.relay_connections().unwrap_or(0) - connections_before;
        println!(
            "bench: {:<40} {failure:?} via TLS + {} ms each way, run {}: assign accepted {latency:.1} ms after the fault, on a {} connection ({opened} opened meanwhile)",
            format!("{} [{}]", stack.name(), variant.key),
            REMOTE_API_DELAY.as_millis(),
            run + 1,
            if warm { "warm" } else { "new" },
        );
        result.latencies.push(latency);
        result.warm += usize::from(warm);
        result.opened.push(opened);
        result.repairs += settle(bench, &lab, 1, false)?;
        match failure {
            Failure::HaproxyKill => lab.start_haproxy(0)?,
            Failure::NodeCrash => lab.start_lb(0)?,
        }
        result.repairs += settle(bench, &lab, 0, true)?;
    }
    Ok(result)
}

/// A pseudo-random number of milliseconds below `max` (no RNG crate: the
/// clock's nanoseconds, mixed).
fn jitter_ms(max: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64 ^ d.as_secs());
    let mixed = nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 32) % max.max(1)
}

/// Context switches and on-CPU time of one thread.
#[derive(Clone, Copy, Debug, Default)]
struct TaskCounters {
    voluntary: u64,
    involuntary: u64,
    /// Time on CPU from schedstat, ns (finer than ticks).
    runtime_ns: u64,
}

/// CPU and scheduling counters of a set of processes.
#[derive(Clone, Debug, Default)]
struct Usage {
    /// utime + stime, clock ticks (the whole process, exited threads included).
    ticks: u64,
    /// stime alone: time in the kernel (sending, and on veth the peer's
    /// receive path, XDP included, runs in the sender's context).
    system_ticks: u64,
    /// cutime + cstime (reaped children: forked scripts), clock ticks.
    child_ticks: u64,
    /// Per thread: the kernel keeps context switches per thread only.
    tasks: std::collections::BTreeMap<(i32, String), TaskCounters>,
}

/// What happened between two [`Usage`] snapshots, per thread: threads born
/// in between count whole; threads that died in between are lost (counted).
#[derive(Clone, Copy, Debug, Default)]
struct UsageDelta {
    voluntary: u64,
    involuntary: u64,
    runtime_ns: u64,
    threads_exited: usize,
}

impl Usage {
    fn delta(&self, later: &Usage) -> UsageDelta {
        let mut d = UsageDelta::default();
        for (key, end) in &later.tasks {
            let start = self.tasks.get(key).copied().unwrap_or_default();
            d.voluntary += end.voluntary.saturating_sub(start.voluntary);
            d.involuntary += end.involuntary.saturating_sub(start.involuntary);
            d.runtime_ns += end.runtime_ns.saturating_sub(start.runtime_ns);
        }
        d.threads_exited = self
            .tasks
            .keys()
            .filter(|key| !later.tasks.contains_key(*key))
            .count();
        d
    }
}

fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .parse()
        .ok()
}

fn usage(pids: &[i32]) -> Result<Usage> {
    let mut u = Usage::default();
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("process {pid} is gone"))?;
        let fields: Vec<u64> = stat[stat.rfind(')').context("stat")? + 1..]
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // After `state`: ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime cutime cstime ...
        u.ticks += fields[10] + fields[11];
        u.system_ticks += fields[11];
        u.child_ticks += fields[12] + fields[13];
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let task = task?;
            let path = task.path();
            let Ok(status) = std::fs::read_to_string(path.join("status")) else {
                continue; // exited meanwhile
            };
            let schedstat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
            // A thread id with its start time: ids are reused.
            let started = std::fs::read_to_string(path.join("stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat[stat.rfind(')')? + 1..].to_owned();
                    rest.split_whitespace().nth(19).map(str::to_owned)
                })
                .unwrap_or_default();
            let tid: i32 = task.file_name().to_string_lossy().parse().unwrap_or(0);
            u.tasks.insert(
                (tid, started),
                TaskCounters {
                    voluntary: status_field(&status, "voluntary_ctxt_switches:").unwrap_or(0),
                    involuntary: status_field(&status, "nonvoluntary_ctxt_switches:").unwrap_or(0),
                    runtime_ns: schedstat
                        .split_whitespace()
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0),
                },
            );
        }
    }
    Ok(u)
}

/// Packets received on `dev` in load balancer `i`'s namespace.
fn rx_packets(lab: &Lab, i: usize, dev: &str) -> Option<u64> {
    let out = lab.lb[i]
        .exec(&["ip", "-j", "-s", "link", "show", "dev", dev])
        .ok()?;
    let v: Value = serde_json::from_str(&out).ok()?;
    v[0]["stats64"]["rx"]["packets"].as_u64()
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// Scenario 3 for one stack and number of instances.
fn backup_cost(bench: &Bench, stack: Stack, instances: u8) -> Result<Value> {
    let tag = format!("b3{}{instances}", stack_tag(stack));
    let opts = LabOptions {
        advert_interval: FAST_ADVERTS,
        stack,
        instances,
        ..LabOptions::default()
    };
    let lab = bench.start_lab(&tag, opts)?;
    let repairs = settle(bench, &lab, 0, true)?;
    let pids = lab.agent_pids(1);
    if pids.is_empty() {
        bail!("{}: no daemon on lb2", stack.name());
    }
    let transitions_before = lab.transitions(0).len() + lab.transitions(1).len();
    let (u0, rx0, t0) = (usage(&pids)?, rx_packets(&lab, 1, "priv0"), Instant::now());
    bench.sleep(bench.window)?;
    let (u1, rx1, t1) = (usage(&pids)?, rx_packets(&lab, 1, "priv0"), Instant::now());
    let secs = (t1 - t0).as_secs_f64();
    let transitions_during =
        lab.transitions(0).len() + lab.transitions(1).len() - transitions_before;
    let hz = clock_ticks_per_sec();
    let per_s = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / secs;
    let d = u0.delta(&u1);
    let result = json!({
        "stack": stack.name(),
        "instances": instances,
        "pids": pids,
        "window_s": secs,
        "cpu_ms_per_s": per_s(u0.ticks, u1.ticks) / hz * 1e3,
        "children_cpu_ms_per_s": per_s(u0.child_ticks, u1.child_ticks) / hz * 1e3,
        "runtime_ms_per_s": d.runtime_ns as f64 / secs / 1e6,
        "ctx_switches_per_s": (d.voluntary + d.involuntary) as f64 / secs,
        "voluntary_per_s": d.voluntary as f64 / secs,
        "involuntary_per_s": d.involuntary as f64 / secs,
        "threads": u1.tasks.len(),
        "threads_exited_during_window": d.threads_exited,
        "rx_packets_per_s": match (rx0, rx1) {
            (Some(a), Some(b)) => json!(per_s(a, b)),
            _ => Value::Null,
        },
        "transitions_during_window": transitions_during,
        "floating_ip_repairs": repairs,
    });
    println!(
        "bench: {:<28} {instances:>2} VRID(s): backup CPU {:.2} ms/s (schedstat {:.2}), {:.1} ctx switches/s, {} pkts/s on priv0",
        stack.name(),
        result["cpu_ms_per_s"].as_f64().unwrap_or(0.0),
        result["runtime_ms_per_s"].as_f64().unwrap_or(0.0),
        result["ctx_switches_per_s"].as_f64().unwrap_or(0.0),
        result["rx_packets_per_s"]
            .as_f64()
            .map_or("?".into(), |p| format!("{p:.0}")),
    );
    Ok(result)
}

/// Busy threads, one per CPU, until dropped.
struct Stress {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Stress {
    fn start(n: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x: u64 = 1;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005) + 1);
                        }
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Stress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// (busy, total) jiffies of all CPUs from /proc/stat.
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Scenario 4: every stack at once under full CPU load.
fn stress_run(bench: &Bench) -> Result<Value> {
    let mut labs = Vec::new();
    for stack in STACKS {
        let opts = LabOptions {
            advert_interval: STRESS_ADVERTS,
            stack,
            ..LabOptions::default()
        };
        let lab = bench.start_lab(&format!("b4{}", stack_tag(stack)), opts)?;
        labs.push(lab);
    }
    let mut repairs = Vec::new();
    for lab in &labs {
        repairs.push(settle(bench, lab, 0, true)?);
    }
    let before: Vec<(usize, usize, usize)> = labs
        .iter()
        .map(|lab| {
            (
                lab.transitions(0).len(),
                lab.transitions(1).len(),
                lab.sim_actions().len(),
            )
        })
        .collect();
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    println!(
        "bench: stress: {cpus} spinning threads for {} s, all three stacks at 20 ms adverts",
        bench.stress.as_secs()
    );
    let load0 = cpu_jiffies();
    let started = Instant::now();
    let stress = Stress::start(cpus);
    let result = (|| -> Result<()> {
        while started.elapsed() < bench.stress {
            bench.sleep(
                bench
                    .stress
                    .checked_sub(started.elapsed())
                    .unwrap()
                    .min(Duration::from_mins(1)),
            )?;
            let counts: Vec<String> = labs
                .iter()
                .zip(&before)
                .map(|(lab, b)| {
                    format!(
                        "{}: {}",
                        lab.stack().name(),
                        lab.transitions(0).len() + lab.transitions(1).len() - b.0 - b.1
                    )
                })
                .collect();
            println!(
                "bench: stress {:>4} s: unexpected transitions so far: {}",
                started.elapsed().as_secs(),
                counts.join(", ")
            );
        }
        Ok(())
    })();
    drop(stress);
    let elapsed = started.elapsed().as_secs_f64();
    let load1 = cpu_jiffies();
    result?;
    let busy = (load1.0 - load0.0) as f64 / (load1.1 - load0.1).max(1) as f64;
    let mut stacks = serde_json::Map::new();
    for ((lab, b), repairs) in labs.iter().zip(&before).zip(&repairs) {
        let mut transitions = Vec::new();
        for (i, skip) in [(0, b.0), (1, b.1)] {
            for t in lab.transitions(i).into_iter().skip(skip) {
                transitions.push(json!({
                    "node": format!("lb{}", i + 1),
                    "at_s": t.at.as_secs_f64(),
                    "from": t.from,
                    "to": t.to,
                    "reason": t.reason,
                }));
            }
        }
        let assigns = lab
            .sim_actions()
            .iter()
            .skip(b.2)
            .filter(|a| a.kind.starts_with("assign"))
            .count();
        stacks.insert(
            stack_key(lab.stack()).into(),
            json!({
                "stack": lab.stack().name(),
                "unexpected_transitions": transitions.len(),
                "transitions": transitions,
                "assigns": assigns,
                "holder_at_end": lab.holder(),
                "floating_ip_repairs_before": repairs,
            }),
        );
    }
    Ok(json!({
        "duration_s": elapsed,
        "advert_interval_ms": STRESS_ADVERTS.as_millis() as u64,
        "spinning_threads": cpus,
        "cpu_busy_fraction": busy,
        "stacks": stacks,
    }))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        f64::midpoint(s[n / 2 - 1], s[n / 2])
    }
}

fn summary(samples: &[f64]) -> Value {
    let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let max = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    json!({
        "samples_ms": samples,
        "median_ms": median(samples),
        "min_ms": min,
        "max_ms": max,
    })
}

/// Skew_Time of the backup (priority 100) at `interval`, RFC 5798.
fn skew(interval: Duration) -> f64 {
    (256.0 - 100.0) * interval.as_secs_f64() * 1e3 / 256.0
}

fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.1}×", a / b),
        (Some(a), Some(b)) if b == 0.0 && a == 0.0 => "—".into(),
        (Some(_), Some(_)) => "∞".into(),
        _ => "—".into(),
    }
}

/// Cumulative bucket counts of a histogram in a Prometheus exposition:
/// (upper bound in seconds, count), in order, `+Inf` last.
fn buckets(metrics: &str, name: &str, label: &str) -> Vec<(f64, u64)> {
    let prefix = format!("{name}_bucket{{{label},le=\"");
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (bound, count) = rest.split_once("\"} ")?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().ok()?
            };
            Some((bound, count.trim().parse().ok()?))
        })
        .collect()
}

/// One sample of a metric with exactly these labels.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The `q` quantile of the observations between two scrapes of one
/// histogram, as an upper bound: the bound of the first bucket holding it
/// (what Prometheus would interpolate within, reported without guessing).
fn quantile_bound(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, u64)> = after
        .iter()
        .map(|(bound, n)| {
            let was = before
                .iter()
                .find(|(b, _)| b.to_bits() == bound.to_bits())
                .map_or(0, |(_, n)| *n);
            (*bound, n.saturating_sub(was))
        })
        .collect();
    let total = delta.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil() as u64;
    delta
        .iter()
        .find(|(_, n)| *n >= rank)
        .map(|(bound, _)| *bound)
}

/// Resident memory of `pids` together, in KiB (VmRSS).
fn rss_kib(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            // "VmRSS:	   11432 kB"
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// The sum of one XDP counter over a load balancer's interfaces, from its
/// metrics (lbha stacks only).
fn xdp_counter(metrics: &str, counter: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("lbha_packets_total{") && l.contains(&format!("counter=\"{counter}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// After the master node crashes with many VRIDs: how long each of the
/// backup's instances went without a master before taking over (the agent
/// logs it with each transition), against Master_Down_Interval + 5 ms, and
/// how many assigns the crash cost.
fn takeover_at_scale(bench: &Bench, lab: &mut Lab) -> Result<Value> {
    let assigns_before = lab.assigns().len();
    let log_before = lab.lb_log(1).len();
    lab.crash_lb(0);
    bench.sleep(Duration::from_secs(3))?;
    let log = lab.lb_log(1);
    let gaps_us: Vec<u64> = log[log_before.min(log.len())..]
        .lines()
        .filter(|l| l.contains("state transition") && l.contains("to=\"MASTER\""))
        .filter_map(|l| {
            l.split("without_master_us=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    // Backup priority 100 at 10 ms: 3 intervals + (256 - 100) / 256 of one.
    let bound_us = 30_000 + 156 * 10_000 / 256 + 5_000;
    let within = gaps_us.iter().filter(|g| **g <= bound_us).count();
    let result = json!({
        "instances_taken_over": gaps_us.len(),
        "within_master_down_plus_5ms": within,
        "bound_us": bound_us,
        "max_without_master_us": gaps_us.iter().max(),
        "assigns": lab.assigns().len() - assigns_before,
    });
    println!("bench: takeover at scale: {result}");
    Ok(result)
}

/// Scenario 6: the cost of `interfaces × instances` VRIDs at 10 ms adverts
/// on both nodes, and whether they hold: state transitions after start-up
/// should be zero.
fn scale(bench: &Bench, stack: Stack, interfaces: u8, instances: u8) -> Result<Value> {
    let vrids = u32::from(interfaces) * u32::from(instances);
    let opts = LabOptions {
        advert_interval: FAST_ADVERTS,
        stack,
        instances,
        interfaces,
        ..LabOptions::default()
    };
    let mut lab = bench.start_lab(&format!("b6{}{vrids}", stack_tag(stack)), opts)?;
    // keepalived may never settle at this size (its issues #390, #1333):
    // then the window measures what it does instead.
    let settled = settle(bench, &lab, 0, true);
    if let Err(error) = &settled {
        println!(
            "bench: scale {} {vrids} VRIDs did not settle: {}",
            stack.name(),
            error.to_string().lines().next().unwrap_or_default()
        );
    }
    let pids = [lab.agent_pids(0), lab.agent_pids(1)];
    let transitions = |lab: &Lab| lab.transitions(0).len() + lab.transitions(1).len();
    let before = transitions(&lab);
    let metrics_before = (stack == Stack::Lbha).then(|| lab.metrics(1).unwrap_or_default());
    let (u0, t0) = ([usage(&pids[0])?, usage(&pids[1])?], Instant::now());
    bench.sleep(bench.scale_window)?;
    let (u1, t1) = ([usage(&pids[0])?, usage(&pids[1])?], Instant::now());
    let secs = (t1 - t0).as_secs_f64();
    let hz = clock_ticks_per_sec();
    let cpu = |i: usize| (u1[i].ticks.saturating_sub(u0[i].ticks)) as f64 / hz / secs * 1e3;
    let kernel =
        |i: usize| (u1[i].system_ticks.saturating_sub(u0[i].system_ticks)) as f64 / hz / secs * 1e3;
    let ringbuf_full = metrics_before.map(|m0| {
        let m1 = lab.metrics(1).unwrap_or_default();
        xdp_counter(&m1, "ringbuf_full").saturating_sub(xdp_counter(&m0, "ringbuf_full"))
    });
    // Counted before the crash below, whose takeovers are its own figure.
    let transitions_during_window = transitions(&lab) - before;
    let rss = [rss_kib(&pids[0]), rss_kib(&pids[1])];
    let takeover = if stack == Stack::Lbha && vrids >= 255 && settled.is_ok() {
        Some(takeover_at_scale(bench, &mut lab)?)
    } else {
        None
    };
    let result = json!({
        "stack": stack.name(),
        "vrids": vrids,
        "takeover_after_crash": takeover,
        "window_s": secs,
        "master_cpu_ms_per_s": cpu(0),
        "backup_cpu_ms_per_s": cpu(1),
        "master_kernel_ms_per_s": kernel(0),
        "backup_kernel_ms_per_s": kernel(1),
        "master_rss_kib": rss[0],
        "backup_rss_kib": rss[1],
        "transitions_during_window": transitions_during_window,
        "backup_ringbuf_full": ringbuf_full,
        "settled": settled.is_ok(),
        "floating_ip_repairs": settled.unwrap_or(0),
    });
    println!(
        "bench: scale {:<28} {vrids:>4} VRIDs: master {:.1} ms/s, backup {:.1} ms/s, RSS {} / {} KiB, {} transitions, ringbuf_full {:?}",
        stack.name(),
        cpu(0),
        cpu(1),
        result["master_rss_kib"],
        result["backup_rss_kib"],
        result["transitions_during_window"],
        ringbuf_full,
    );
    Ok(result)
}

/// Scenario 5: how late the Master's adverts go out (10 ms adverts) while
/// its HAProxy check rescans `extra` idle processes every second.
fn advert_lateness(bench: &Bench, extra: usize) -> Result<Value> {
    let opts = LabOptions {
        advert_interval: FAST_ADVERTS,
        check_interval: Duration::from_secs(1),
        stack: Stack::Lbha,
        ..LabOptions::default()
    };
    let lab = bench.start_lab(&format!("b5{}", extra / 1000), opts)?;
    settle(bench, &lab, 0, true)?;
    if extra > 0 {
        lab.spawn_idle_processes(0, extra)?;
    }
    // Let the process table fill and a few scans run before measuring.
    bench.sleep(Duration::from_secs(5))?;
    let series = r#"instance="VI_1""#;
    let name = "lbha_vrrp_advert_lateness_seconds";
    let m0 = lab.metrics(0)?;
    let transitions_before = lab.transitions(0).len() + lab.transitions(1).len();
    bench.sleep(bench.lateness_window)?;
    let m1 = lab.metrics(0)?;
    let transitions = lab.transitions(0).len() + lab.transitions(1).len() - transitions_before;
    let (b0, b1) = (buckets(&m0, name, series), buckets(&m1, name, series));
    let count = |b: &[(f64, u64)]| b.last().map_or(0, |(_, n)| *n);
    let adverts = count(&b1) - count(&b0);
    let check = r#"check="haproxy""#;
    let scans = |m: &str| {
        (
            sample(m, &format!("lbha_check_duration_seconds_sum{{{check}}}")).unwrap_or(0.0),
            sample(m, &format!("lbha_check_duration_seconds_count{{{check}}}")).unwrap_or(0.0),
        )
    };
    let ((s0, n0), (s1, n1)) = (scans(&m0), scans(&m1));
    let ms = |v: Option<f64>| v.map(|s| s * 1e3);
    let result = json!({
        "extra_processes": extra,
        "window_s": bench.lateness_window.as_secs(),
        "adverts": adverts,
        "p50_ms_at_most": ms(quantile_bound(&b0, &b1, 0.50)),
        "p99_ms_at_most": ms(quantile_bound(&b0, &b1, 0.99)),
        "max_ms_at_most": ms(quantile_bound(&b0, &b1, 1.0)),
        "max_ms_since_start": ms(sample(&m1, &format!("lbha_vrrp_advert_lateness_max_seconds{{{series}}}"))),
        "scan_ms_mean": if n1 > n0 { Some((s1 - s0) / (n1 - n0) * 1e3) } else { None },
        "scans": n1 - n0,
        "transitions_during_window": transitions,
    });
    println!(
        "bench: advert lateness with {extra} extra processes: {adverts} adverts, p99 <= {:?} ms, max <= {:?} ms, scan {:?} ms",
        result["p99_ms_at_most"], result["max_ms_at_most"], result["scan_ms_mean"]
    );
    Ok(result)
}

/// The Markdown report of `results`.
fn report(results: &Value) -> String {
    let s = &results["scenarios"];
    let mut md = String::new();
    let _ = writeln!(
        md,
        "`{}` — {}{}; {} CPUs; load average before: {}\n",
        results["command"].as_str().unwrap_or_default(),
        results["date"].as_str().unwrap_or_default(),
        if results["quick"].as_bool() == Some(true) {
            " — QUICK run (short windows, 60 s stress)"
        } else {
            ""
        },
        results["cpus"],
        results["loadavg_before"]
            .as_str()
            .unwrap_or_default()
            .trim(),
    );
    md.push_str(
        "| measurement | keepalived | lbha (same keepalived.conf) | lbha (native TOML) | keepalived ÷ lbha (conf) | keepalived ÷ lbha (native) | target for lbha |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let keys = STACKS.map(stack_key);
    let row = |md: &mut String,
               label: &str,
               cells: [Option<f64>; 3],
               fmt: &dyn Fn(f64) -> String,
               target: &str| {
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {} | {} | {target} |",
            cells[0].map_or("—".into(), fmt),
            cells[1].map_or("—".into(), fmt),
            cells[2].map_or("—".into(), fmt),
            fmt_ratio(cells[0], cells[1]),
            fmt_ratio(cells[0], cells[2]),
        );
    };
    let crash_bound = 30.0 + skew(FAST_ADVERTS) + 5.0;
    for (key, label, bound, target) in [
        (
            "haproxy_kill",
            "1. HAProxy killed on the Master → assign request (ms, median [min–max])",
            20.0,
            "< 20 ms".to_owned(),
        ),
        (
            "node_crash",
            "2. Master node crashed → assign request (ms, median [min–max])",
            crash_bound,
            format!(
                "≤ 3×10 + skew {:.1} + 5 = {crash_bound:.1} ms",
                skew(FAST_ADVERTS)
            ),
        ),
    ] {
        let sc = &s[key];
        if sc.is_null() {
            continue;
        }
        let cell = |k: &str| -> String {
            let v = &sc[k];
            if v.is_null() {
                return "—".into();
            }
            format!(
                "{:.1} [{:.1}–{:.1}]",
                v["median_ms"].as_f64().unwrap_or(f64::NAN),
                v["min_ms"].as_f64().unwrap_or(f64::NAN),
                v["max_ms"].as_f64().unwrap_or(f64::NAN)
            )
        };
        let med = |k: &str| sc[k]["median_ms"].as_f64();
        let verdict = |k: &str| {
            let (Some(m), Some(x)) = (sc[k]["median_ms"].as_f64(), sc[k]["max_ms"].as_f64()) else {
                return "—";
            };
            if x <= bound {
                "met (every run)"
            } else if m <= bound {
                "median met, not every run"
            } else {
                "NOT met"
            }
        };
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {} | {} | {target}: conf {}, native {} |",
            cell(keys[0]),
            cell(keys[1]),
            cell(keys[2]),
            fmt_ratio(med(keys[0]), med(keys[1])),
            fmt_ratio(med(keys[0]), med(keys[2])),
            verdict(keys[1]),
            verdict(keys[2]),
        );
        // Where lbha's time goes: the backup's MASTER transition (its log,
        // ms precision; keepalived's log has whole seconds only).
        let to_master = |k: &str| -> Option<f64> {
            let v: Vec<f64> = sc[k]["to_master_ms"]
                .as_array()?
                .iter()
                .filter_map(Value::as_f64)
                .collect();
            (!v.is_empty()).then(|| median(&v))
        };
        let _ = writeln!(
            md,
            "| {} … lb2 logged MASTER (ms, median) | (log has whole seconds) | {} | {} | | | |",
            &label[..2],
            to_master(keys[1]).map_or("—".into(), |v| format!("{v:.0}")),
            to_master(keys[2]).map_or("—".into(), |v| format!("{v:.0}")),
        );
    }
    if let Some(cost) = s["backup_cost"].as_object() {
        for (config, per_stack) in cost {
            let get = |k: &str, field: &str| per_stack[k][field].as_f64();
            row(
                &mut md,
                &format!("3. BACKUP CPU time, utime+stime (ms/s), {config}"),
                keys.map(|k| get(k, "cpu_ms_per_s")),
                &|v| format!("{v:.2}"),
                "—",
            );
            row(
                &mut md,
                &format!("3. BACKUP on-CPU time, schedstat (ms/s), {config}"),
                keys.map(|k| get(k, "runtime_ms_per_s")),
                &|v| format!("{v:.3}"),
                "—",
            );
            row(
                &mut md,
                &format!("3. (check) VRRP packets/s received by the BACKUP, {config}"),
                keys.map(|k| get(k, "rx_packets_per_s")),
                &|v| format!("{v:.0}"),
                "—",
            );
            let ctx = keys.map(|k| get(k, "ctx_switches_per_s"));
            let verdict = |i: usize| match (ctx[0], ctx[i]) {
                (Some(k), Some(l)) if l * 10.0 <= k => "met",
                (Some(_), Some(_)) => "NOT met",
                _ => "—",
            };
            row(
                &mut md,
                &format!("3. BACKUP context switches (wakeups) per s, {config}"),
                ctx,
                &|v| format!("{v:.1}"),
                &format!(
                    "≥ 10× fewer than keepalived: conf {}, native {}",
                    verdict(1),
                    verdict(2)
                ),
            );
        }
    }
    let st = &s["stress"];
    if !st.is_null() {
        let counts = keys.map(|k| st["stacks"][k]["unexpected_transitions"].as_f64());
        let verdict = |i: usize| match counts[i] {
            Some(0.0) => "met",
            Some(_) => "NOT met",
            None => "—",
        };
        row(
            &mut md,
            &format!(
                "4. Unexpected state transitions, {:.0} s at 20 ms adverts, CPUs busy ({:.0}% busy)",
                st["duration_s"].as_f64().unwrap_or(0.0),
                st["cpu_busy_fraction"].as_f64().unwrap_or(0.0) * 100.0
            ),
            counts,
            &|v| format!("{v:.0}"),
            &format!("zero: conf {}, native {}", verdict(1), verdict(2)),
        );
    }
    let remote = &s["remote_api"];
    if !remote.is_null() {
        let delay = remote["delay_each_way_ms"].as_u64().unwrap_or(0);
        let adverts = remote["advert_interval_ms"].as_u64().unwrap_or(0);
        for (key, what) in [
            ("haproxy_kill", "HAProxy killed on the Master"),
            ("node_crash", "Master node crashed"),
        ] {
            let sc = &remote[key];
            if sc.is_null() {
                continue;
            }
            let cell = |k: &str| -> String {
                let v = &sc[k];
                if v.is_null() {
                    return "— (not run)".into();
                }
                if let Some(error) = v["error"].as_str() {
                    return format!("— (failed: {error})");
                }
                format!(
                    "{:.1} [{:.1}–{:.1}]",
                    v["median_ms"].as_f64().unwrap_or(f64::NAN),
                    v["min_ms"].as_f64().unwrap_or(f64::NAN),
                    v["max_ms"].as_f64().unwrap_or(f64::NAN)
                )
            };
            let med = |k: &str| sc[k]["median_ms"].as_f64();
            let warm = |k: &str| {
                let runs = sc[k]["samples_ms"].as_array().map_or(0, Vec::len);
                format!("{} of {runs}", sc[k]["warm_assigns"].as_u64().unwrap_or(0))
            };
            // Connections opened through the relay between the fault and
            // the 201, per run.
            let opened = |k: &str| {
                let runs: Vec<String> = sc[k]["connections_opened"]
                    .as_array()
                    .map(|v| v.iter().map(ToString::to_string).collect())
                    .unwrap_or_default();
                if runs.is_empty() {
                    "—".to_owned()
                } else {
                    runs.join(",")
                }
            };
            let _ = writeln!(
                md,
                "| 7. {what} → assign accepted (201 at the client), HTTPS API {delay} ms away each way, {adverts} ms adverts (ms, median [min–max]) | {} | {} | {} | {} | {} | assign on a warm connection: conf {}, native {}, keepalived {}; connections opened per failover: conf {}, native {}, keepalived {} |",
                cell(keys[0]),
                cell(keys[1]),
                cell(keys[2]),
                fmt_ratio(med(keys[0]), med(keys[1])),
                fmt_ratio(med(keys[0]), med(keys[2])),
                warm(keys[1]),
                warm(keys[2]),
                warm(keys[0]),
                opened(keys[1]),
                opened(keys[2]),
                opened(keys[0]),
            );
            if !sc[NO_KEEPALIVE_KEY].is_null() {
                let saved = match (med(NO_KEEPALIVE_KEY), med(keys[2])) {
                    (Some(cold), Some(warm)) => format!("{:.1} ms", cold - warm),
                    _ => "—".to_owned(),
                };
                let _ = writeln!(
                    md,
                    "| 7. the same, lbha (native TOML) with `keepalive_interval = 0` (no warm connection) | — | — | {} | — | {} | assign on a warm connection: {}; connections opened per failover: {}; the warm connection saves {saved} (medians) |",
                    cell(NO_KEEPALIVE_KEY),
                    fmt_ratio(med(keys[0]), med(NO_KEEPALIVE_KEY)),
                    warm(NO_KEEPALIVE_KEY),
                    opened(NO_KEEPALIVE_KEY),
                );
            }
        }
    }
    if let Some(runs) = s["scale"].as_array() {
        let _ = writeln!(
            md,
            "\n6. Scale: N VRIDs (VRRPv3, unicast, 10 ms adverts, no scripts), one agent per node; \
             CPU from /proc over the window, RSS summed over each daemon's processes\n\n\
             | stack | VRIDs | master CPU (ms/s; in the kernel) | backup CPU (ms/s; in the kernel) | RSS master / backup (KiB) | transitions | backup ringbuf_full |\n\
             |---|---|---|---|---|---|---|"
        );
        for run in runs {
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} ({:.1}) | {:.2} ({:.2}) | {} / {} | {} | {} |",
                run["stack"].as_str().unwrap_or("?"),
                run["vrids"],
                run["master_cpu_ms_per_s"].as_f64().unwrap_or(f64::NAN),
                run["master_kernel_ms_per_s"].as_f64().unwrap_or(f64::NAN),
                run["backup_cpu_ms_per_s"].as_f64().unwrap_or(f64::NAN),
                run["backup_kernel_ms_per_s"].as_f64().unwrap_or(f64::NAN),
                run["master_rss_kib"],
                run["backup_rss_kib"],
                run["transitions_during_window"],
                run["backup_ringbuf_full"]
                    .as_u64()
                    .map_or("—".into(), |n| n.to_string()),
            );
        }
    }
    if let Some(runs) = s["advert_lateness"].as_array() {
        let _ = writeln!(
            md,
            "\n5. lbha (native TOML) Master's advert lateness, 10 ms adverts, HAProxy check \
             rescanning every 1 s (target with 5,000 extra processes: p99 < 1 ms, max < 3 ms)\n\n\
             | extra processes | adverts | p50 | p99 | max | mean scan | transitions |\n|---|---|---|---|---|---|---|"
        );
        let ms = |v: &Value| v.as_f64().map_or("—".into(), |v| format!("≤ {v:.2} ms"));
        for run in runs {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                run["extra_processes"],
                run["adverts"],
                ms(&run["p50_ms_at_most"]),
                ms(&run["p99_ms_at_most"]),
                ms(&run["max_ms_at_most"]),
                run["scan_ms_mean"]
                    .as_f64()
                    .map_or("—".into(), |v| format!("{v:.1} ms")),
                run["transitions_during_window"],
            );
        }
    }
    let repairs: Vec<String> = STACKS
        .iter()
        .map(|stack| {
            let k = stack_key(*stack);
            let mut n = 0;
            for key in ["haproxy_kill", "node_crash"] {
                n += s[key][k]["floating_ip_repairs"].as_u64().unwrap_or(0);
                n += s["remote_api"][key][k]["floating_ip_repairs"]
                    .as_u64()
                    .unwrap_or(0);
            }
            if let Some(cost) = s["backup_cost"].as_object() {
                for per_stack in cost.values() {
                    n += per_stack[k]["floating_ip_repairs"].as_u64().unwrap_or(0);
                }
            }
            n += s["stress"]["stacks"][k]["floating_ip_repairs_before"]
                .as_u64()
                .unwrap_or(0);
            format!("{}: {n}", stack.name())
        })
        .collect();
    let _ = writeln!(
        md,
        "\nFloating IP left on the wrong node with the roles settled for {} s (the bench then \
         assigned it through the API, as an operator would): {}.",
        REPAIR_AFTER.as_secs(),
        repairs.join(", ")
    );
    md.push_str(
        "\nHow: 1-2: kill instant (taken just before the first kill(2), after looking the \
         processes up) against the simulator's `requested_at_ms` of the first assign to lb2, \
         the two clocks tied by `/_sim/state`'s `uptime_ms` (error under a millisecond); a \
         random 0-2 s pause before each kill spreads it over the checks' 2 s interval; \
         VRRPv3 at 10 ms. 3: lb2 (BACKUP), /proc/PID/stat utime+stime and the sum over \
         /proc/PID/task/*/status voluntary+nonvoluntary context switches (keepalived: parent + \
         VRRP child; forked scripts not included), over the window (per thread: threads that \
         exited during it are lost, results.json counts them); schedstat is the same threads' \
         on-CPU time in ns. lbha's XDP program runs in softirq context and is \
         charged to no process. 4: all three stacks at once, one spinning thread per CPU, \
         every state transition after the labs settled counted on both nodes. 5: lb1's \
         `lbha_vrrp_advert_lateness_seconds` histogram (send time minus the advert's deadline) \
         scraped before and after the window; each figure is the upper bound of the bucket the \
         quantile falls in. 7: the API over HTTPS (the simulator's lab CA) through a relay in \
         the router namespace delaying every segment 15 ms each way (and a new connection's \
         first bytes by the TCP handshake's round trip), metadata local; kill instant on the \
         wall clock against the time the 201 reached the client: lbha's `answered_unix_us` \
         (logged when the answer arrived), master.sh's `date +%s%N` right after curl returned \
         (a fork later). Before each fault the simulator closes every API connection (as \
         DigitalOcean's side drops idle ones) and the bench waits 1.5 s: lbha's keep-alive \
         (`keepalive_interval` 1 s here) opens a new one meanwhile; \"warm\": the accepted \
         assign came on a connection the simulator had already served a request on; \
         \"connections opened\": new connections through the relay between the fault and \
         the 201, either node's (after HAProxy's death lb1's re-checks go on; with keepalived.conf, lbha still runs master.sh, whose curl is one of them; \
         metadata is local and not counted).\n",
    );
    md
}

pub fn run_bench(args: &BenchArgs, agent: &Path, dosim: &Path) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the bench creates network namespaces and attaches XDP: run it as root");
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let only = |n: u8| args.only.is_empty() || args.only.contains(&n);
    let bench = Bench {
        bins: Binaries {
            agent: agent.to_owned(),
            dosim: dosim.to_owned(),
        },
        stop,
        runs: args.runs.max(1),
        window: Duration::from_secs(args.window_secs.unwrap_or(if args.quick { 5 } else { 20 })),
        stress: Duration::from_secs(
            args.stress_secs
                .unwrap_or(if args.quick { 60 } else { 600 }),
        ),
        quick: args.quick,
        lateness_window: Duration::from_secs(if args.quick { 20 } else { 60 }),
        scale_window: Duration::from_secs(args.scale_secs.unwrap_or(if args.quick {
            20
        } else {
            600
        })),
    };
    if bench.quick {
        println!(
            "bench: QUICK run: {} s CPU windows, {} s stress run (the full run uses 20 s and 10 minutes)",
            bench.window.as_secs(),
            bench.stress.as_secs()
        );
    }
    let command = format!(
        "cargo xtask {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let date = run_command(
        std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%dT%H:%M:%SZ"),
        COMMAND_TIMEOUT,
    )
    .unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let loadavg_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("bench: load average before: {}", loadavg_before.trim());
    let mut scenarios = serde_json::Map::new();

    for (n, key, failure) in [
        (1, "haproxy_kill", Failure::HaproxyKill),
        (2, "node_crash", Failure::NodeCrash),
    ] {
        if !only(n) {
            continue;
        }
        let mut per_stack = serde_json::Map::new();
        for stack in STACKS {
            let f = failovers(&bench, stack, failure)?;
            let mut entry = summary(&f.latencies);
            entry["to_master_ms"] = json!(f.to_master);
            entry["floating_ip_repairs"] = json!(f.repairs);
            per_stack.insert(stack_key(stack).into(), entry);
        }
        per_stack.insert(
            "advert_interval_ms".into(),
            json!(FAST_ADVERTS.as_millis() as u64),
        );
        scenarios.insert(key.into(), Value::Object(per_stack));
    }
    if only(3) {
        let mut cost = serde_json::Map::new();
        for instances in [1u8, 16] {
            let mut per_stack = serde_json::Map::new();
            for stack in STACKS {
                per_stack.insert(
                    stack_key(stack).into(),
                    backup_cost(&bench, stack, instances)?,
                );
            }
            let label = if instances == 1 {
                "1 VRID × 100 adverts/s".to_owned()
            } else {
                format!("{instances} VRIDs × 100 adverts/s")
            };
            cost.insert(label, Value::Object(per_stack));
        }
        scenarios.insert("backup_cost".into(), Value::Object(cost));
    }
    if only(4) {
        scenarios.insert("stress".into(), stress_run(&bench)?);
    }
    if only(5) {
        let runs: Result<Vec<Value>> = [0, 5_000]
            .into_iter()
            .map(|extra| advert_lateness(&bench, extra))
            .collect();
        scenarios.insert("advert_lateness".into(), Value::Array(runs?));
    }
    if only(6) {
        let mut runs = Vec::new();
        for (interfaces, instances) in [(1u8, 1u8), (1, 255), (4, 255)] {
            let vrids = u32::from(interfaces) * u32::from(instances);
            if !args.scale_vrids.is_empty() && !args.scale_vrids.contains(&vrids) {
                continue;
            }
            for stack in [Stack::Keepalived, Stack::Lbha] {
                if args.scale_lbha_only && stack != Stack::Lbha {
                    continue;
                }
                runs.push(scale(&bench, stack, interfaces, instances)?);
            }
        }
        scenarios.insert("scale".into(), Value::Array(runs));
    }

    if only(7) {
        let mut remote = serde_json::Map::new();
        for (key, failure) in [
            ("haproxy_kill", Failure::HaproxyKill),
            ("node_crash", Failure::NodeCrash),
        ] {
            let mut per_stack = serde_json::Map::new();
            for variant in &REMOTE_VARIANTS {
                // A stack that fails here (keepalived flapping on a loaded
                // machine, say) is reported as such; the others still run.
                let f = match remote_failovers(&bench, variant, failure) {
                    Ok(f) => f,
                    Err(e) if !bench.stop.load(Ordering::SeqCst) => {
                        println!("bench: {} {failure:?} via TLS FAILED: {e:?}", variant.key);
                        let first = e.to_string().lines().next().unwrap_or_default().to_owned();
                        per_stack.insert(variant.key.into(), json!({ "error": first }));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let mut entry = summary(&f.latencies);
                entry["warm_assigns"] = json!(f.warm);
                entry["connections_opened"] = json!(f.opened);
                entry["floating_ip_repairs"] = json!(f.repairs);
                entry["keepalive_interval_s"] = json!(variant.keepalive.map(|d| d.as_secs_f64()));
                per_stack.insert(variant.key.into(), entry);
            }
            remote.insert(key.into(), Value::Object(per_stack));
        }
        remote.insert(
            "delay_each_way_ms".into(),
            json!(REMOTE_API_DELAY.as_millis() as u64),
        );
        remote.insert(
            "advert_interval_ms".into(),
            json!(REMOTE_ADVERTS.as_millis() as u64),
        );
        scenarios.insert("remote_api".into(), Value::Object(remote));
    }
    let results = json!({
        "command": command,
        "date": date.trim(),
        "quick": bench.quick,
        "runs": bench.runs,
        "cpus": cpus,
        "loadavg_before": loadavg_before,
        "loadavg_after": std::fs::read_to_string("/proc/loadavg").unwrap_or_default(),
        "keepalived_version": run_command(
            std::process::Command::new("keepalived").arg("--version"),
            COMMAND_TIMEOUT,
        )
            .ok()
            .and_then(|v| v.lines().next().map(str::to_owned)),
        "scenarios": scenarios,
    });
    let md = report(&results);
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        crate::workspace_root().join(&args.out)
    };
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&results)? + "\n",
    )?;
    std::fs::write(out.join("results.md"), &md)?;
    println!("\n{md}");
    println!(
        "bench: results in {} and {}",
        out.join("results.json").display(),
        out.join("results.md").display()
    );
    Ok(())
}
