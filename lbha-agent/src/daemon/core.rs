//! What one configuration runs besides its instances: the checks, the notify
//! queue, the floating IP manager and the link watcher. Rebuilt on reload
//! only when the checks, `[global]` or `[floating_ip]` change.

use std::{sync::Arc, time::Duration};

use lbha_common::event::VridKey;
use tokio::sync::{mpsc, watch};

use super::DaemonError;
use crate::{
    cloud::{FloatingIpStatus, Follower, FollowerSetup, Mastership, PeerRouter, Router},
    config::Config,
    health::{
        runner::{CheckRunner, CheckStates},
        script::ScriptPolicy,
    },
    heartbeat::{self, PeerTable, wire::PeerState},
    recv::ah::AhCounters,
    status::Telemetry,
    vrrp::{
        driver::{Commands, vrid_key},
        link, notify,
        notify_fifo::NotifyFifos,
        sync::SyncHub,
        track_file,
    },
};

/// A [`Core`] with everything that can fail already done: user and group
/// look-ups, the token, the API clients. Built on the blocking pool (all of
/// that blocks), so neither the runtime thread nor the running
/// configuration waits for it, and a failure leaves nothing started.
pub(super) struct CoreSetup {
    config: Config,
    policy: ScriptPolicy,
    follower: Option<FollowerSetup>,
    track_files: track_file::Prepared,
}

impl CoreSetup {
    /// Blocks: call from the blocking pool.
    fn prepare(config: Config, reload: bool) -> Result<Self, DaemonError> {
        let policy = ScriptPolicy::new(
            config.global.script_security,
            config.global.script_user.as_deref(),
            config.global.script_group.as_deref(),
        )?;
        let follower = FollowerSetup::prepare(&config)?;
        let track_files = track_file::Prepared::new(&config.track_files, reload);
        Ok(Self {
            config,
            policy,
            follower,
            track_files,
        })
    }

    /// Prepares on the blocking pool.
    pub async fn prepare_off_thread(config: &Config, reload: bool) -> Result<Self, DaemonError> {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Self::prepare(config, reload))
            .await
            .map_err(|e| DaemonError::Startup(e.to_string()))?
    }

    /// Starts the tasks; cannot fail.
    /// The script policy the configuration's scripts run with.
    pub fn policy(&self) -> &ScriptPolicy {
        &self.policy
    }

    /// Starts the tasks; cannot fail. `fifos`: the daemon's notify FIFOs.
    pub fn start(
        self,
        telemetry: &Telemetry,
        link: &HeartbeatLink,
        fifos: &Arc<NotifyFifos>,
    ) -> Core {
        let Self {
            config,
            policy,
            follower,
            track_files,
        } = self;
        let follower = follower.map(FollowerSetup::start);
        // A reload may have dropped an address: its report goes with it.
        telemetry.forget_addresses();
        if let Some(follower) = &follower {
            if let Some(v4) = &follower.ipv4 {
                telemetry.set_floating_ip(
                    v4.ip.to_string(),
                    v4.instance.clone(),
                    v4.status.clone(),
                    follower.cloud_check.clone(),
                    follower.calls.clone(),
                );
            }
            if let Some(v6) = &follower.reserved_ipv6 {
                telemetry.set_reserved_ipv6(
                    v6.ip.to_string(),
                    v6.instance.clone(),
                    v6.status.clone(),
                    follower.cloud_check.clone(),
                    follower.calls.clone(),
                );
            }
        }
        let checks = CheckRunner::start(&config.checks, &policy, telemetry);
        let (notify_tx, notify_rx) = mpsc::unbounded_channel();
        let notify_queue = tokio::spawn(notify::run_queue(
            notify_rx,
            policy,
            follower.as_ref().and_then(Follower::status),
        ));
        // Their own interfaces, and those they track (`track_interface`).
        let interfaces: std::collections::BTreeSet<String> = config
            .instances
            .iter()
            .flat_map(|i| {
                std::iter::once(i.interface.clone())
                    .chain(i.track_interfaces.iter().map(|t| t.name.clone()))
            })
            .collect();
        let interfaces = interfaces.into_iter().collect();
        let feeder = link.peers.clone().map(|peers| {
            // Each followed instance's channel hears of the peers' routers
            // of its own family and VRID.
            let followed: Vec<(String, VridKey)> = follower
                .as_ref()
                .map(|f| {
                    f.mastership
                        .followed()
                        .filter_map(|name| {
                            let instance = config.instances.iter().find(|i| i.name == name)?;
                            Some((name.to_owned(), vrid_key(instance)))
                        })
                        .collect()
                })
                .unwrap_or_default();
            tokio::spawn(feed_from_heartbeat(
                peers,
                link.droplet.clone(),
                follower
                    .as_ref()
                    .and_then(|f| Some((f.status()?, f.mastership.clone()))),
                followed,
            ))
        });
        let sync = (!config.sync_groups.is_empty()).then(|| {
            Arc::new(SyncHub::new(
                &config.sync_groups,
                notify_tx.clone(),
                fifos.clone(),
            ))
        });
        Core {
            checks,
            sync,
            notify_tx,
            notify_queue,
            follower,
            links: link::watch_links(interfaces),
            files: track_files.start(),
            fifos: fifos.clone(),
            local: link.local.clone(),
            peers: link.peers.clone(),
            feeder,
            commands: Commands::default(),
            ah_counters: AhCounters::default(),
        }
    }
}

pub(super) struct Core {
    checks: CheckRunner,
    /// The sync groups, shared by the interface tasks holding their members.
    pub sync: Option<Arc<SyncHub>>,
    pub notify_tx: mpsc::UnboundedSender<notify::NotifyJob>,
    notify_queue: tokio::task::JoinHandle<()>,
    follower: Option<Follower>,
    pub links: watch::Receiver<link::LinkStates>,
    /// The track files' values (`track_file`).
    pub files: watch::Receiver<track_file::FileValues>,
    pub fifos: Arc<NotifyFifos>,
    pub local: heartbeat::Local,
    pub peers: Option<watch::Receiver<PeerTable>>,
    feeder: Option<tokio::task::JoinHandle<()>>,
    /// Requests for the running instances (`lbha-agent handover`).
    pub commands: Commands,
    /// The AH instances' sequence counters by instance name: an instance
    /// restarted by a reload goes on numbering where it was, as
    /// keepalived's does, so its peers do not refuse its adverts.
    pub ah_counters: AhCounters,
}

/// What the daemon's heartbeat (which outlives a core) shares with it.
#[derive(Clone, Default)]
pub(super) struct HeartbeatLink {
    pub local: heartbeat::Local,
    pub peers: Option<watch::Receiver<PeerTable>>,
    /// Our droplet id for the heartbeat to send, once the floating-IP
    /// manager has learned it.
    pub droplet: Option<Arc<watch::Sender<u64>>>,
}

/// Keeps the heartbeat and the floating-IP managers informed of each
/// other: our droplet id goes into our heartbeats, and the peers' heartbeats
/// (their droplet ids, state and rank for each followed instance's family
/// and VRID) into that instance's [`crate::cloud::VrrpView`]. Freshness
/// changes with time alone, so the views are also refreshed on a timer.
async fn feed_from_heartbeat(
    mut peers: watch::Receiver<PeerTable>,
    droplet: Option<Arc<watch::Sender<u64>>>,
    follower: Option<(watch::Receiver<FloatingIpStatus>, Arc<Mastership>)>,
    followed: Vec<(String, VridKey)>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = peers.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        let Some((status, mastership)) = &follower else {
            continue;
        };
        if let (Some(droplet), Some(id)) = (&droplet, status.borrow().droplet_id) {
            droplet.send_if_modified(|current| std::mem::replace(current, id) != id);
        }
        let now = crate::clock::monotonic_ns();
        let table = peers.borrow().clone();
        for (instance, key) in &followed {
            if let Some(channel) = mastership.for_instance(instance) {
                let known = peer_routers(&table, *key, now);
                channel.update(|view| view.peers = known);
            }
        }
    }
}

/// What the peers' heartbeats say of router `key` (one family's instance of
/// a VRID), as the floating-IP manager weighs them.
fn peer_routers(table: &PeerTable, key: VridKey, now: u64) -> Vec<PeerRouter> {
    table
        .peers
        .values()
        .filter_map(|peer| {
            let record = peer.records.iter().find(|r| r.key() == key)?;
            Some(PeerRouter {
                droplet_id: peer.droplet_id,
                router: Router {
                    priority: record.priority,
                    address: record.address,
                },
                master: record.state == PeerState::Master,
                fresh: table.is_fresh(peer, now),
            })
        })
        .collect()
}

impl Core {
    pub fn check_states(&self) -> CheckStates {
        self.checks.states.clone()
    }

    pub fn mastership(&self) -> Option<Arc<Mastership>> {
        self.follower.as_ref().map(|f| f.mastership.clone())
    }

    /// What a planned handover needs of the floating IP: its instance's
    /// channel, the API client, and each address that moves with it.
    pub fn handover_cloud(&self) -> Option<super::handover::Cloud> {
        let f = self.follower.as_ref()?;
        // Each address that follows the handed-over instance: the floating
        // IPv4, a reserved IPv6 beside it, or a reserved IPv6 alone.
        let ips = f
            .ipv4
            .iter()
            .chain(&f.reserved_ipv6)
            .filter(|a| a.instance == f.mastership.instance)
            .map(|a| (a.ip, a.status.clone()))
            .collect();
        Some(super::handover::Cloud {
            mastership: f.mastership.clone(),
            api: f.api.clone(),
            operation_deadline: f.operation_deadline,
            peer_droplet_id: f.peer_droplet_id,
            ips,
        })
    }

    pub fn floating_ip_status(&self) -> Option<watch::Receiver<FloatingIpStatus>> {
        self.follower.as_ref().and_then(Follower::status)
    }

    /// Stops everything; call after the instances that used it stopped.
    pub async fn stop(self) {
        if let Some(feeder) = self.feeder {
            feeder.abort();
        }
        self.checks.stop();
        if let Some(follower) = self.follower {
            follower.stop().await;
        }
        drop(self.notify_tx);
        // The hub holds the queue's sender too (the groups' scripts).
        drop(self.sync);
        // Let the notify scripts of the final transitions run, within reason.
        let _ = tokio::time::timeout(Duration::from_secs(10), self.notify_queue).await;
    }
}
