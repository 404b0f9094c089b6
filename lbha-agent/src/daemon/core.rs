//! What one configuration runs besides its instances: the checks, the notify
//! queue, the floating IP manager and the link watcher. Rebuilt on reload
//! only when the checks, `[global]` or `[floating_ip]` change.

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, watch};

use super::DaemonError;
use crate::{
    cloud::{FloatingIpStatus, Follower, FollowerSetup, Mastership},
    config::Config,
    health::{
        runner::{CheckRunner, CheckStates},
        script::ScriptPolicy,
    },
    status::Telemetry,
    vrrp::{link, notify},
};

/// A [`Core`] with everything that can fail already done: user and group
/// look-ups, the token, the API clients. Built on the blocking pool (all of
/// that blocks), so neither the runtime thread nor the running
/// configuration waits for it, and a failure leaves nothing started.
pub(super) struct CoreSetup {
    config: Config,
    policy: ScriptPolicy,
    follower: Option<FollowerSetup>,
}

impl CoreSetup {
    /// Blocks: call from the blocking pool.
    fn prepare(config: Config) -> Result<Self, DaemonError> {
        let policy = ScriptPolicy::new(
            config.global.script_security,
            config.global.script_user.as_deref(),
            config.global.script_group.as_deref(),
        )?;
        let follower = FollowerSetup::prepare(&config)?;
        Ok(Self {
            config,
            policy,
            follower,
        })
    }

    /// Prepares on the blocking pool.
    pub async fn prepare_off_thread(config: &Config) -> Result<Self, DaemonError> {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Self::prepare(config))
            .await
            .map_err(|e| DaemonError::Startup(e.to_string()))?
    }

    /// Starts the tasks; cannot fail.
    pub fn start(self, telemetry: &Telemetry) -> Core {
        let Self {
            config,
            policy,
            follower,
        } = self;
        let follower = follower.map(FollowerSetup::start);
        if let (Some(follower), Some(floating_ip)) = (&follower, &config.floating_ip) {
            telemetry.set_floating_ip(
                floating_ip.settings.ip.to_string(),
                follower.mastership.instance.clone(),
                follower.status.clone(),
                follower.cloud_check.clone(),
                follower.calls.clone(),
            );
        }
        let checks = CheckRunner::start(&config.checks, &policy, telemetry);
        let (notify_tx, notify_rx) = mpsc::unbounded_channel();
        let notify_queue = tokio::spawn(notify::run_queue(
            notify_rx,
            policy,
            follower.as_ref().map(|f| f.status.clone()),
        ));
        let interfaces = config
            .instances
            .iter()
            .map(|i| i.interface.clone())
            .collect();
        Core {
            checks,
            notify_tx,
            notify_queue,
            follower,
            links: link::watch_links(interfaces),
        }
    }
}

pub(super) struct Core {
    checks: CheckRunner,
    pub notify_tx: mpsc::UnboundedSender<notify::NotifyJob>,
    notify_queue: tokio::task::JoinHandle<()>,
    follower: Option<Follower>,
    pub links: watch::Receiver<link::LinkStates>,
}

impl Core {
    pub fn check_states(&self) -> CheckStates {
        self.checks.states.clone()
    }

    pub fn mastership(&self) -> Option<Arc<Mastership>> {
        self.follower.as_ref().map(|f| f.mastership.clone())
    }

    pub fn floating_ip_status(&self) -> Option<watch::Receiver<FloatingIpStatus>> {
        self.follower.as_ref().map(|f| f.status.clone())
    }

    /// Stops everything; call after the instances that used it stopped.
    pub async fn stop(self) {
        self.checks.stop();
        if let Some(follower) = self.follower {
            follower.stop().await;
        }
        drop(self.notify_tx);
        // Let the notify scripts of the final transitions run, within reason.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.notify_queue).await;
    }
}
