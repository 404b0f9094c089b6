//! What one configuration runs besides its instances: the checks, the notify
//! queue, the floating IP manager and the link watcher. Rebuilt on reload
//! only when the checks, `[global]` or `[floating_ip]` change.

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, watch};

use super::DaemonError;
use crate::{
    cloud::{FloatingIpStatus, Follower, Mastership},
    config::Config,
    health::{
        runner::{CheckRunner, CheckStates},
        script::ScriptPolicy,
    },
    status::Telemetry,
    vrrp::{link, notify},
};

pub(super) struct Core {
    checks: CheckRunner,
    pub notify_tx: mpsc::UnboundedSender<notify::NotifyJob>,
    notify_queue: tokio::task::JoinHandle<()>,
    follower: Option<Follower>,
    pub links: watch::Receiver<link::LinkStates>,
}

impl Core {
    pub fn start(config: &Config, telemetry: &Telemetry) -> Result<Self, DaemonError> {
        let policy = ScriptPolicy::new(
            config.global.script_security,
            config.global.script_user.as_deref(),
            config.global.script_group.as_deref(),
        )?;
        // Everything that can fail comes before the first task is spawned,
        // so a failed start leaves nothing running behind it.
        let follower = Follower::start(config)?;
        let checks = CheckRunner::start(&config.checks, &policy, telemetry);
        if let (Some(follower), Some(floating_ip)) = (&follower, &config.floating_ip) {
            telemetry.set_floating_ip(
                floating_ip.settings.ip.to_string(),
                follower.mastership.instance.clone(),
                follower.status.clone(),
                follower.calls.clone(),
            );
        }
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
        Ok(Self {
            checks,
            notify_tx,
            notify_queue,
            follower,
            links: link::watch_links(interfaces),
        })
    }

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
