//! keepalived's notify hooks: `notify_master`/`notify_backup`/`notify_fault`
//! run as written, then `notify` with `INSTANCE <name> <STATE> <priority>`
//! (STATE is MASTER, BACKUP, FAULT, or STOP when the agent shuts down).
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
        if let Some(command) = &config.notify.any {
            // Initialize is only re-entered on shutdown, which keepalived
            // reports to the generic script as STOP.
            let state = match state {
                State::Initialize => "STOP",
                other => other.name(),
            };
            jobs.push(NotifyJob {
                command: command.clone(),
                args: vec![
                    "INSTANCE".into(),
                    config.name.clone(),
                    state.into(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Notify;

    fn instance(notify: Notify) -> config::Instance {
        let mut config = crate::config::parse_keepalived(
            "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 7\n}\n",
            std::path::Path::new("t.conf"),
        )
        .expect("valid")
        .config;
        let mut instance = config.instances.remove(0);
        instance.notify = notify;
        instance
    }

    #[test]
    fn hooks_run_as_keepalived_runs_them() {
        let i = instance(Notify {
            master: Some("/m.sh".into()),
            backup: None,
            fault: Some("/f.sh x".into()),
            any: Some("/any.sh".into()),
        });
        let jobs = NotifyJob::for_transition(&i, State::Master, 150);
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            jobs[0],
            NotifyJob {
                command: "/m.sh".into(),
                args: vec![]
            }
        );
        assert_eq!(jobs[1].command, "/any.sh");
        assert_eq!(jobs[1].args, ["INSTANCE", "VI_1", "MASTER", "150"]);
        let backup = NotifyJob::for_transition(&i, State::Backup, 100);
        assert_eq!(
            backup.len(),
            1,
            "no notify_backup configured: only the generic one"
        );
        assert_eq!(backup[0].args[2], "BACKUP");
        assert_eq!(
            NotifyJob::for_transition(&i, State::Fault, 100)[0].command,
            "/f.sh x"
        );
        let stop = NotifyJob::for_transition(&i, State::Initialize, 100);
        assert_eq!(stop.len(), 1);
        assert_eq!(stop[0].args, ["INSTANCE", "VI_1", "STOP", "100"]);
    }
}
