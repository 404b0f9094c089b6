//! The floating IP following one VRRP instance: which instance that is, the
//! channel its interface task reports mastership on, the manager task that
//! acts on it, and the DigitalOcean checks run once at start.

use std::{sync::Arc, time::Duration};

use thiserror::Error;
use tokio::{sync::watch, task::JoinHandle};

use super::{
    ApiCallCounts, ApiClient, CloudReport, FloatingIpManager, FloatingIpStatus, MetadataClient,
    SetupError, VrrpView, build_clients, check::check_at_start,
};
use crate::config::{Config, FloatingIpConfig};

#[derive(Debug, Error)]
pub enum FollowError {
    #[error("floating IP")]
    Setup(#[from] SetupError),
    #[error("[floating_ip] follows instance {0}, which is not configured")]
    UnknownInstance(String),
}

/// Where the instance the floating IP follows tells the manager whether it
/// is Master, and what it knows of its peers ([`VrrpView`]).
#[derive(Debug)]
pub struct Mastership {
    pub instance: String,
    view: watch::Sender<VrrpView>,
}

impl Mastership {
    pub fn set(&self, is_master: bool) {
        self.view.send_if_modified(|view| {
            let changed = view.is_master != is_master;
            view.is_master = is_master;
            changed
        });
    }

    /// Changes the view; the manager hears of it only when `f` changed
    /// something.
    pub fn update(&self, f: impl FnOnce(&mut VrrpView)) {
        self.view.send_if_modified(|view| {
            let before = view.clone();
            f(view);
            *view != before
        });
    }
}

/// Everything a [`Follower`] needs, built before anything starts: the part
/// that can fail and that blocks (the token file, the TLS set-up), so it
/// runs on the blocking pool and a failure leaves nothing half-started.
pub struct FollowerSetup {
    instance: String,
    settings: FloatingIpConfig,
    metadata: MetadataClient,
    api: ApiClient,
}

impl FollowerSetup {
    /// For `config`'s `[floating_ip]`, if there is one: it follows the
    /// named instance, or the first. Blocks (reads the token).
    pub fn prepare(config: &Config) -> Result<Option<Self>, FollowError> {
        let Some(floating_ip) = &config.floating_ip else {
            return Ok(None);
        };
        let instance = match &floating_ip.instance {
            Some(name) => config
                .instances
                .iter()
                .find(|i| &i.name == name)
                .ok_or_else(|| FollowError::UnknownInstance(name.clone()))?,
            None => config
                .instances
                .first()
                .ok_or_else(|| FollowError::UnknownInstance("(none)".into()))?,
        };
        let (metadata, api) = build_clients(&floating_ip.settings)?;
        Ok(Some(Self {
            instance: instance.name.clone(),
            settings: floating_ip.settings.clone(),
            metadata,
            api,
        }))
    }

    /// Starts the manager and, beside it, the checks of what failover will
    /// need (inside the runtime; cannot fail). A problem the checks find is
    /// logged and reported, never a reason not to start: the API may be
    /// down for a moment only.
    pub fn start(self) -> Follower {
        let calls = self.api.call_counts();
        let (view, master_rx) = watch::channel(VrrpView::default());
        let ip = self.settings.ip;
        let (report_tx, cloud_check) = watch::channel(None);
        let check = check_at_start(
            self.settings.clone(),
            self.metadata.clone(),
            self.api.clone(),
        );
        let check_task = tokio::spawn(async move {
            report_tx.send_replace(Some(check.await));
        });
        let (status, task) =
            FloatingIpManager::spawn_watching(self.settings, self.metadata, self.api, master_rx);
        tracing::info!(%ip, instance = %self.instance, "floating IP follows instance");
        Follower {
            mastership: Arc::new(Mastership {
                instance: self.instance,
                view,
            }),
            status,
            cloud_check,
            calls,
            task,
            check_task,
        }
    }
}

/// A running floating-IP manager and what the rest of the agent needs of it.
pub struct Follower {
    pub mastership: Arc<Mastership>,
    pub status: watch::Receiver<FloatingIpStatus>,
    /// The checks at start, once they are done.
    pub cloud_check: watch::Receiver<Option<CloudReport>>,
    pub calls: Arc<ApiCallCounts>,
    task: JoinHandle<()>,
    check_task: JoinHandle<()>,
}

impl Follower {
    /// Stops the manager once the interface tasks (which hold clones of the
    /// mastership) have stopped: dropping the last sender ends it, and an
    /// assign in flight gets a few seconds to finish.
    pub async fn stop(self) {
        self.check_task.abort();
        drop(self.mastership);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}
