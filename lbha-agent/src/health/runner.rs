//! Runs the configured checks: one task per check, each publishing its
//! debounced up/down (rise/fall) into one shared vector that the interface
//! tasks watch.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use super::{
    debounce::TrackState,
    haproxy::{HaproxyProbe, Outcome},
    probe::{self, ProbeResult},
    process::{ProcessMatch, ProcessWatcher, process_check_of, wrapped_process_check},
    script::{self, ScriptPolicy},
};
use crate::{
    config::{self, Probe},
    status::Telemetry,
};

/// Up/down of every check, by its index in the configuration; after them,
/// one slot per `haproxy` check for its backends ([`backends_slot`]).
pub type CheckStates = watch::Receiver<Arc<Vec<bool>>>;

/// Where the backends result of the `haproxy` check at `index` goes: a
/// second slot, so that it weighs on its own (a weight by default) while
/// the check's own slot (HAProxy serving) keeps the check's weight.
pub fn backends_slot(checks: &[config::Check], index: usize) -> Option<usize> {
    let is_haproxy = |c: &config::Check| matches!(c.probe, Some(Probe::Haproxy(_)));
    is_haproxy(checks.get(index)?)
        .then(|| checks.len() + checks[..index].iter().filter(|c| is_haproxy(c)).count())
}

/// The name the backends slot has in status and metrics.
pub fn backends_name(check: &str) -> String {
    format!("{check}:backends")
}

/// The running checks of one configuration.
pub struct CheckRunner {
    pub states: CheckStates,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl CheckRunner {
    /// Starts one task per check; every check starts up (as keepalived's
    /// do), unless it has `init_fail`.
    pub fn start(checks: &[config::Check], policy: &ScriptPolicy, telemetry: &Telemetry) -> Self {
        for check in checks {
            telemetry.add_check(&check.name);
        }
        let mut initial: Vec<bool> = checks.iter().map(|c| !c.init_fail).collect();
        for (index, check) in checks.iter().enumerate() {
            if backends_slot(checks, index).is_some() {
                telemetry.add_check(&backends_name(&check.name));
                initial.push(!check.init_fail);
            }
        }
        let (states_tx, states) = watch::channel(Arc::new(initial));
        let states_tx = Arc::new(states_tx);
        let tasks = checks
            .iter()
            .enumerate()
            .map(|(index, check)| {
                let sink = CheckSink {
                    index,
                    states: states_tx.clone(),
                    telemetry: telemetry.clone(),
                };
                if let (Some(Probe::Haproxy(h)), Some(slot)) =
                    (&check.probe, backends_slot(checks, index))
                {
                    let backends = CheckSink {
                        index: slot,
                        states: states_tx.clone(),
                        telemetry: telemetry.clone(),
                    };
                    let probe = HaproxyProbe::new(h.clone(), check.timeout);
                    return tokio::spawn(run_haproxy(check.clone(), probe, sink, backends));
                }
                tokio::spawn(run_check(check.clone(), policy.clone(), sink))
            })
            .collect();
        Self { states, tasks }
    }

    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Where a check's results go.
struct CheckSink {
    index: usize,
    states: Arc<watch::Sender<Arc<Vec<bool>>>>,
    telemetry: Telemetry,
}

impl CheckSink {
    /// Records one result (and how long it took); publishes a debounced change.
    fn record(&self, check: &config::Check, state: &mut TrackState, ok: bool, took: Duration) {
        self.record_as(&check.name, check, state, ok, took);
    }

    fn record_as(
        &self,
        name: &str,
        check: &config::Check,
        state: &mut TrackState,
        ok: bool,
        took: Duration,
    ) {
        if let Some(up) = state.record(ok, check.rise, check.fall) {
            tracing::info!(check = %name, up, "check changed state");
            self.states
                .send_modify(|all| Arc::make_mut(all)[self.index] = up);
        }
        self.telemetry.check_result(name, state.is_up(), ok, took);
    }
}

/// What a script check can be answered with instead of running it: `pidof
/// haproxy` and friends, or a tiny shell wrapper around them, are answered
/// from procfs (unless script security would refuse the wrapper: then it
/// runs, and fails, as a script).
fn process_match(check: &config::Check, policy: &ScriptPolicy) -> Option<ProcessMatch> {
    match &check.probe {
        Some(Probe::Process(name)) => Some(ProcessMatch::Name(name.clone())),
        Some(Probe::Pidfile(path)) => Some(ProcessMatch::Pidfile(path.clone())),
        None => {
            let words = script::split_command(&check.script);
            process_check_of(&words)
                .or_else(|| {
                    wrapped_process_check(&words).filter(|_| {
                        !policy.security
                            || script::check_secure(std::path::Path::new(&words[0])).is_ok()
                    })
                })
                .map(ProcessMatch::Name)
        }
        Some(Probe::Tcp(_) | Probe::Http(_) | Probe::Haproxy(_)) => None,
    }
}

/// Runs one check forever, publishing debounced up/down through `sink`.
async fn run_check(check: config::Check, policy: ScriptPolicy, sink: CheckSink) {
    let mut state = TrackState::new(!check.init_fail);
    if let Some(what) = process_match(&check, &policy) {
        // A death is seen through the process's pidfd the moment it happens;
        // the interval only paces rescans for restarted processes.
        tracing::info!(check = %check.name, process = ?what, "watching through procfs (no fork)");
        let mut watcher = ProcessWatcher::new(what);
        loop {
            let started = std::time::Instant::now();
            let ok = watcher.refresh().await;
            sink.record(&check, &mut state, ok, started.elapsed());
            watcher.wait(check.interval).await;
        }
    }
    let http = match reqwest::Client::builder().build() {
        Ok(http) => Some(http),
        Err(error) => {
            // No TLS or resolver set-up: HTTP probes cannot run (and count
            // as failed); every other kind of check is unaffected.
            tracing::error!(check = %check.name, error = %crate::error_chain(&error), "HTTP client unavailable");
            None
        }
    };
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = std::time::Instant::now();
        let ok = match &check.probe {
            Some(Probe::Tcp(addr)) => log_probe(&check, probe::tcp(*addr, check.timeout).await),
            Some(Probe::Http(url)) => match &http {
                Some(http) => log_probe(&check, probe::http(http, url, check.timeout).await),
                None => false,
            },
            _ => match script::run(&check.script, &[], &policy, check.timeout).await {
                Ok(ok) => ok,
                Err(error) => {
                    tracing::warn!(check = %check.name, %error, "check could not run; counted as failed");
                    false
                }
            },
        };
        sink.record(&check, &mut state, ok, started.elapsed());
    }
}

/// Runs a `haproxy` check forever: HAProxy serving into `sink`, its
/// backends into `backends`. A run during a reload records nothing, so a
/// reload can never move either.
async fn run_haproxy(
    check: config::Check,
    mut probe: HaproxyProbe,
    sink: CheckSink,
    backends: CheckSink,
) {
    let mut state = TrackState::new(!check.init_fail);
    let mut backends_state = TrackState::new(!check.init_fail);
    let backends_name = backends_name(&check.name);
    let mut last_why: Option<String> = None;
    loop {
        let started = std::time::Instant::now();
        let outcome = probe.run().await;
        let took = started.elapsed();
        let why = match outcome {
            Outcome::Answered {
                serving,
                backends: backends_ok,
            } => {
                let why = serving
                    .as_ref()
                    .err()
                    .or(backends_ok.as_ref().err())
                    .cloned();
                sink.record(&check, &mut state, serving.is_ok(), took);
                backends.record_as(
                    &backends_name,
                    &check,
                    &mut backends_state,
                    backends_ok.is_ok(),
                    took,
                );
                why
            }
            Outcome::Down(why) => {
                // Not serving says nothing of the backends: their slot keeps
                // its state (and a peer's view of them decides nothing here).
                sink.record(&check, &mut state, false, took);
                Some(why)
            }
            Outcome::Reloading(why) => {
                tracing::debug!(check = %check.name, %why, "HAProxy reloading; not counted");
                probe.wait(RELOAD_RETRY.min(check.interval)).await;
                continue;
            }
        };
        if why != last_why {
            if let Some(why) = &why {
                tracing::warn!(check = %check.name, %why, "HAProxy check failed");
            } else {
                tracing::info!(check = %check.name, "HAProxy check passes");
            }
            last_why = why;
        }
        probe.wait(check.interval).await;
    }
}

/// How soon a run after a reload-shaped refusal retries: the new worker
/// binds the socket within milliseconds.
const RELOAD_RETRY: Duration = Duration::from_millis(100);

fn log_probe(check: &config::Check, result: ProbeResult) -> bool {
    if let ProbeResult::Down(why) = &result {
        tracing::debug!(check = %check.name, %why, "probe failed");
    }
    result.is_up()
}
