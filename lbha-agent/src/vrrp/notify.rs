//! keepalived's notify hooks: `notify_master`/`notify_backup`/`notify_fault`
//! run as written, then `notify` with `INSTANCE <name> <STATE> <priority>`.
//! One queue runs them one after the other, in the order the transitions
//! happened, so a slow script can never reorder MASTER and BACKUP.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::{
    config,
    health::script::{self, ScriptPolicy},
    vrrp::machine::State,
};

/// keepalived gives notify scripts no timeout; a hung one must not block
/// every later transition forever, so lbha allows this long.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyJob {
    pub command: String,
    pub args: Vec<String>,
}

impl NotifyJob {
    /// The hooks keepalived would run for entering `state`.
    pub fn for_transition(config: &config::Instance, state: State, priority: u8) -> Vec<Self> {
        let specific = match state {
            State::Master => config.notify.master.as_ref(),
            State::Backup => config.notify.backup.as_ref(),
            State::Fault => config.notify.fault.as_ref(),
            State::Initialize => None,
        };
        let mut jobs: Vec<Self> = specific
            .map(|command| NotifyJob {
                command: command.clone(),
                args: Vec::new(),
            })
            .into_iter()
            .collect();
        if state != State::Initialize
            && let Some(command) = &config.notify.any
        {
            jobs.push(NotifyJob {
                command: command.clone(),
                args: vec![
                    "INSTANCE".into(),
                    config.name.clone(),
                    state.name().into(),
                    priority.to_string(),
                ],
            });
        }
        jobs
    }
}

/// Runs queued jobs in order until every sender is gone.
pub async fn run_queue(mut jobs: mpsc::UnboundedReceiver<NotifyJob>, policy: ScriptPolicy) {
    while let Some(job) = jobs.recv().await {
        match script::run(&job.command, &job.args, &policy, NOTIFY_TIMEOUT).await {
            Ok(true) => tracing::debug!(command = %job.command, "notify script done"),
            Ok(false) => tracing::warn!(command = %job.command, "notify script exited non-zero"),
            Err(error) => tracing::error!(%error, "notify script failed"),
        }
    }
}
