//! The floating IP following one VRRP instance: which instance that is, the
//! channel its interface task reports mastership on, the manager task that
//! acts on it, and the DigitalOcean checks run once at start. A reserved
//! IPv6 (`reserved_ipv6`) gets a manager of its own beside it, on the
//! channel of the instance it follows: the IPv4's (one failover moves both,
//! one assign each) or its own `reserved_ipv6_instance`. Without a floating
//! IPv4 (an IPv6-only service) the reserved IPv6's manager is the only one,
//! on the main channel, and nothing touches `/v2/floating_ips`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

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

/// Where the instances the floating IP (and the reserved IPv6) follow tell
/// their managers whether they are Master, and what they know of their
/// peers ([`VrrpView`]). `set` and `update` speak for the main channel's
/// instance; [`Mastership::for_instance`] gives any followed instance's
/// channel.
#[derive(Debug)]
pub struct Mastership {
    /// The main channel's instance: the one the floating IPv4 follows, or
    /// the reserved IPv6's when there is no IPv4.
    pub instance: String,
    view: watch::Sender<VrrpView>,
    /// The reserved IPv6's own instance and its channel, when that is not
    /// `instance`.
    other: Option<(String, watch::Sender<VrrpView>)>,
}

fn set_master(view: &watch::Sender<VrrpView>, is_master: bool) {
    view.send_if_modified(|view| {
        let changed = view.is_master != is_master;
        view.is_master = is_master;
        changed
    });
}

/// Changes the view; the managers hear of it only when `f` changed
/// something.
fn update_view(view: &watch::Sender<VrrpView>, f: impl FnOnce(&mut VrrpView)) {
    view.send_if_modified(|view| {
        let before = view.clone();
        f(view);
        *view != before
    });
}

impl Mastership {
    /// The instances an address follows (one or two).
    pub fn followed(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.instance.as_str()).chain(self.other.as_ref().map(|(o, _)| o.as_str()))
    }

    /// Whether a floating IP or the reserved IPv6 follows `instance`.
    pub fn follows(&self, instance: &str) -> bool {
        self.instance == instance || self.other.as_ref().is_some_and(|(o, _)| o == instance)
    }

    /// The channel of `instance`, if an address follows it. Speaks for
    /// every address that follows it (both, when they share one).
    pub fn for_instance(&self, instance: &str) -> Option<MastershipOf<'_>> {
        if self.instance == instance {
            Some(MastershipOf(&self.view))
        } else {
            self.other
                .as_ref()
                .filter(|(o, _)| o == instance)
                .map(|(_, view)| MastershipOf(view))
        }
    }

    pub fn set(&self, is_master: bool) {
        set_master(&self.view, is_master);
    }

    /// Whether the instance the floating IPv4 follows is Master.
    pub fn is_master(&self) -> bool {
        self.view.borrow().is_master
    }

    /// Changes the view; the manager hears of it only when `f` changed
    /// something.
    pub fn update(&self, f: impl FnOnce(&mut VrrpView)) {
        update_view(&self.view, f);
    }
}

/// A borrowed followed instance's channel (see [`Mastership::for_instance`]).
#[derive(Clone, Copy, Debug)]
pub struct MastershipOf<'a>(&'a watch::Sender<VrrpView>);

impl MastershipOf<'_> {
    pub fn set(&self, is_master: bool) {
        set_master(self.0, is_master);
    }

    pub fn update(&self, f: impl FnOnce(&mut VrrpView)) {
        update_view(self.0, f);
    }
}

/// Everything a [`Follower`] needs, built before anything starts: the part
/// that can fail and that blocks (the token file, the TLS set-up), so it
/// runs on the blocking pool and a failure leaves nothing half-started.
pub struct FollowerSetup {
    /// The instance of the main channel ([`Mastership::instance`]): the
    /// floating IPv4's, or the reserved IPv6's when it is alone.
    instance: String,
    /// The floating IPv4 (on the main channel), if one is moved.
    ipv4: Option<Ipv4Addr>,
    /// The reserved IPv6 and the instance it follows.
    reserved_ipv6: Option<(Ipv6Addr, String)>,
    settings: FloatingIpConfig,
    metadata: MetadataClient,
    api: ApiClient,
}

impl FollowerSetup {
    /// For `config`'s `[floating_ip]`, if there is one: the IPv4 follows
    /// the named instance, or the first; the reserved IPv6 its own
    /// instance, else the same. Blocks (reads the token).
    pub fn prepare(config: &Config) -> Result<Option<Self>, FollowError> {
        let Some(floating_ip) = &config.floating_ip else {
            return Ok(None);
        };
        let named = |name: &str| {
            config
                .instances
                .iter()
                .find(|i| i.name == name)
                .map(|i| i.name.clone())
                .ok_or_else(|| FollowError::UnknownInstance(name.to_owned()))
        };
        let base = match &floating_ip.instance {
            Some(name) => named(name)?,
            None => config
                .instances
                .first()
                .map(|i| i.name.clone())
                .ok_or_else(|| FollowError::UnknownInstance("(none)".into()))?,
        };
        let reserved_ipv6 = match &floating_ip.settings.reserved_ipv6 {
            None => None,
            Some(v6) => {
                let follows = match &v6.instance {
                    None => base.clone(),
                    Some(name) => named(name)?,
                };
                Some((v6.address, follows))
            }
        };
        // Validates too: one of the two addresses is there.
        let (metadata, api) = build_clients(&floating_ip.settings)?;
        let instance = match (&floating_ip.settings.ip, &reserved_ipv6) {
            (None, Some((_, follows))) => follows.clone(),
            _ => base,
        };
        Ok(Some(Self {
            instance,
            ipv4: floating_ip.settings.ip,
            reserved_ipv6,
            settings: floating_ip.settings.clone(),
            metadata,
            api,
        }))
    }

    /// Starts the managers and, beside them, the checks of what failover
    /// will need (inside the runtime; cannot fail). A problem the checks
    /// find is logged and reported, never a reason not to start: the API
    /// may be down for a moment only.
    pub fn start(self) -> Follower {
        let calls = self.api.call_counts();
        let (view, master_rx) = watch::channel(VrrpView::default());
        let (report_tx, cloud_check) = watch::channel(None);
        let check = check_at_start(
            self.settings.clone(),
            self.metadata.clone(),
            self.api.clone(),
        );
        let check_task = tokio::spawn(async move {
            report_tx.send_replace(Some(check.await));
        });
        // The IPv6 manager watches the main channel when it follows its
        // instance (the IPv4's, or its own when alone), else a channel of
        // its own.
        let (other, v6_master_rx) = match &self.reserved_ipv6 {
            None => (None, None),
            Some((_, follows)) if *follows == self.instance => (None, Some(master_rx.clone())),
            Some((_, follows)) => {
                let (tx, rx) = watch::channel(VrrpView::default());
                (Some((follows.clone(), tx)), Some(rx))
            }
        };
        let spawn = |ip: IpAddr, instance: &str, rx| {
            let (status, task) = FloatingIpManager::spawn_for(
                ip,
                &self.settings,
                self.metadata.clone(),
                self.api.clone(),
                rx,
            );
            tracing::info!(%ip, %instance, "address follows instance");
            AddressFollower {
                ip,
                instance: instance.to_owned(),
                status,
                task,
            }
        };
        let reserved_ipv6 = self
            .reserved_ipv6
            .as_ref()
            .zip(v6_master_rx)
            .map(|((address, follows), rx)| spawn(IpAddr::V6(*address), follows, rx));
        let ipv4 = self
            .ipv4
            .map(|ip| spawn(IpAddr::V4(ip), &self.instance, master_rx));
        Follower {
            api: self.api.clone(),
            operation_deadline: self.settings.operation_deadline,
            peer_droplet_id: self.settings.peer_droplet_id,
            mastership: Arc::new(Mastership {
                instance: self.instance,
                view,
                other,
            }),
            ipv4,
            reserved_ipv6,
            cloud_check,
            calls,
            check_task,
        }
    }
}

/// The running floating-IP managers and what the rest of the agent needs
/// of them.
pub struct Follower {
    /// The managers' API client (a planned handover assigns through it).
    pub api: ApiClient,
    pub operation_deadline: Duration,
    /// The configured peer droplet id (`peer_droplet_id`), for a handover.
    pub peer_droplet_id: Option<u64>,
    pub mastership: Arc<Mastership>,
    /// The floating IPv4's manager, when one is configured.
    pub ipv4: Option<AddressFollower>,
    /// The reserved IPv6's manager, when one is configured.
    pub reserved_ipv6: Option<AddressFollower>,
    /// The checks at start, once they are done.
    pub cloud_check: watch::Receiver<Option<CloudReport>>,
    pub calls: Arc<ApiCallCounts>,
    check_task: JoinHandle<()>,
}

impl Follower {
    /// The status of the manager on the main channel (the floating IPv4's,
    /// or the reserved IPv6's when it is alone): what notify scripts of
    /// [`Mastership::instance`] wait for, and where our droplet id is
    /// learned.
    pub fn status(&self) -> Option<watch::Receiver<FloatingIpStatus>> {
        self.ipv4
            .as_ref()
            .or(self.reserved_ipv6.as_ref())
            .map(|f| f.status.clone())
    }

    /// Stops the managers once the interface tasks (which hold clones of
    /// the mastership) have stopped: dropping the last sender ends them,
    /// and an assign in flight gets a few seconds to finish.
    pub async fn stop(self) {
        self.check_task.abort();
        drop(self.mastership);
        let tasks = self
            .ipv4
            .into_iter()
            .chain(self.reserved_ipv6)
            .map(|f| f.task);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            for task in tasks {
                let _ = task.await;
            }
        })
        .await;
    }
}

/// One address's manager: what it moves, the instance it follows, and its
/// status.
pub struct AddressFollower {
    pub ip: IpAddr,
    pub instance: String,
    pub status: watch::Receiver<FloatingIpStatus>,
    task: JoinHandle<()>,
}
