//! Runs the configured checks: one task per check, each publishing its
//! debounced up/down (rise/fall) into one shared vector that the interface
//! tasks watch.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use super::{
    debounce::TrackState,
    probe::{self, ProbeResult},
    process::{ProcessMatch, ProcessWatcher, process_check_of, wrapped_process_check},
    script::{self, ScriptPolicy},
};
use crate::{
    config::{self, Probe},
    status::Telemetry,
};

/// Up/down of every check, by its index in the configuration.
pub type CheckStates = watch::Receiver<Arc<Vec<bool>>>;

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
        let (states_tx, states) =
            watch::channel(Arc::new(checks.iter().map(|c| !c.init_fail).collect()));
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
        if let Some(up) = state.record(ok, check.rise, check.fall) {
            tracing::info!(check = %check.name, up, "check changed state");
            self.states
                .send_modify(|all| Arc::make_mut(all)[self.index] = up);
        }
        self.telemetry
            .check_result(&check.name, state.is_up(), ok, took);
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
        Some(Probe::Tcp(_) | Probe::Http(_)) => None,
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

fn log_probe(check: &config::Check, result: ProbeResult) -> bool {
    if let ProbeResult::Down(why) = &result {
        tracing::debug!(check = %check.name, %why, "probe failed");
    }
    result.is_up()
}
