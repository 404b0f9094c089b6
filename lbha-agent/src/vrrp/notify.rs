//! keepalived's notify hooks: `notify_master`/`notify_backup`/`notify_fault`
//! run as written, then `notify` with `INSTANCE <name> <STATE> <priority>`
//! (STATE is MASTER, BACKUP, FAULT, or STOP when the agent shuts down).
//! One queue runs them one after the other, in the order the transitions
//! happened, so a slow script can never reorder MASTER and BACKUP.
//!
//! The scripts of a transition to MASTER on the instance the floating IP
//! follows start once the floating-IP manager has decided (and, when the IP
//! is elsewhere, sent its assign request), at most [`FLOATING_IP_FIRST`]
//! later: starting shells and curls at the same moment competes for CPU with
//! the one request a failover depends on (measured: 10-20 ms later assign
//! requests on a busy 2-CPU machine).

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::{
    cloud::FloatingIpStatus,
    config,
    health::script::{self, ScriptPolicy},
    vrrp::machine::State,
};

/// keepalived gives notify scripts no timeout; a hung one must not block
/// every later transition forever, so lbha allows this long.
const NOTIFY_TIMEOUT: Duration = Duration::from_mins(1);

/// How long MASTER notify scripts wait for the floating-IP manager's
/// decision (a metadata round trip; the API's own retries are not waited for).
pub const FLOATING_IP_FIRST: Duration = Duration::from_millis(250);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyJob {
    pub command: String,
    pub args: Vec<String>,
    /// Start only after the floating-IP manager completed a check beyond
    /// this many (its `checks` count when the transition happened).
    pub after_floating_ip_check: Option<u64>,
}

impl NotifyJob {
    /// The hooks keepalived would run for entering `state`.
    pub fn for_transition(config: &config::Instance, state: State, priority: u8) -> Vec<Self> {
        let specific = match state {
            State::Master => config.notify.master.as_ref(),
            State::Backup => config.notify.backup.as_ref(),
            State::Fault => config.notify.fault.as_ref(),
            // Initialize is only re-entered when the instance stops.
            State::Initialize => config.notify.stop.as_ref(),
        };
        let mut jobs: Vec<Self> = specific
            .map(|command| NotifyJob {
                command: command.clone(),
                args: Vec::new(),
                after_floating_ip_check: None,
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
                after_floating_ip_check: None,
            });
        }
        jobs
    }
}

/// Runs queued jobs in order until every sender is gone. `floating_ip`:
/// the floating-IP manager's status, for jobs that wait for its decision.
pub async fn run_queue(
    mut jobs: mpsc::UnboundedReceiver<NotifyJob>,
    policy: ScriptPolicy,
    mut floating_ip: Option<watch::Receiver<FloatingIpStatus>>,
) {
    while let Some(job) = jobs.recv().await {
        if let (Some(before), Some(status)) = (job.after_floating_ip_check, floating_ip.as_mut()) {
            let decided = status.wait_for(|s| s.checks > before);
            if tokio::time::timeout(FLOATING_IP_FIRST, decided)
                .await
                .is_err()
            {
                tracing::debug!(command = %job.command, "floating IP still undecided; running the notify script anyway");
            }
        }
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
            stop: None,
            any: Some("/any.sh".into()),
        });
        let jobs = NotifyJob::for_transition(&i, State::Master, 150);
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            jobs[0],
            NotifyJob {
                command: "/m.sh".into(),
                args: vec![],
                after_floating_ip_check: None,
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
        // keepalived's notify_stop runs first, without arguments.
        let mut with_stop = i.clone();
        with_stop.notify.stop = Some("/stop.sh".into());
        let stop = NotifyJob::for_transition(&with_stop, State::Initialize, 100);
        assert_eq!(stop.len(), 2);
        assert_eq!(
            (stop[0].command.as_str(), stop[0].args.len()),
            ("/stop.sh", 0)
        );
        assert_eq!(stop[1].args[2], "STOP");
    }

    /// Polls for `path` for up to `within`.
    async fn appears(path: &std::path::Path, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if path.exists() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        path.exists()
    }

    #[tokio::test]
    async fn master_scripts_wait_for_the_floating_ip_decision_but_not_forever() {
        let dir = std::env::temp_dir().join(format!("lbha-notify-gate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (status_tx, status_rx) = watch::channel(FloatingIpStatus::default());
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        let policy = ScriptPolicy::new(false, None, None).unwrap();
        let queue = tokio::spawn(run_queue(jobs_rx, policy, Some(status_rx)));
        let touch = |name: &str, gate: Option<u64>| NotifyJob {
            command: format!("touch {}", dir.join(name).display()),
            args: vec![],
            after_floating_ip_check: gate,
        };

        // Held back until the manager finishes the check after the transition.
        jobs_tx.send(touch("decided", Some(0))).unwrap();
        assert!(!appears(&dir.join("decided"), Duration::from_millis(150)).await);
        status_tx.send_modify(|s| s.checks = 1);
        assert!(appears(&dir.join("decided"), Duration::from_secs(5)).await);

        // A manager that never answers delays scripts by FLOATING_IP_FIRST only.
        let sent = std::time::Instant::now();
        jobs_tx.send(touch("undecided", Some(1))).unwrap();
        assert!(appears(&dir.join("undecided"), Duration::from_secs(5)).await);
        let waited = sent.elapsed();
        assert!(waited >= FLOATING_IP_FIRST, "{waited:?}");

        // Ungated jobs run at once.
        jobs_tx.send(touch("plain", None)).unwrap();
        assert!(appears(&dir.join("plain"), Duration::from_millis(150)).await);

        drop(jobs_tx);
        queue.await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
