//! `lbha-agent handover`: moving the floating IP to the peer without an
//! outage. A resign-then-assign leaves clients without a server for the
//! whole API action (seconds on DigitalOcean); here the Master assigns the
//! IP to the peer's droplet while it keeps serving (both nodes' HAProxy
//! answer on it), waits until the action completed and the API shows the
//! peer as the holder, and only then resigns (priority-0 advert) with its
//! priority held low, so the peer becomes Master on an IP it already holds
//! (its manager asks the API after a resignation and assigns nothing) and
//! this node does not preempt it back.
//!
//! [`choose`] (which peer, or why not) is pure; [`run`] carries a request
//! out and reports each step as a progress line for the CLI, and in the log.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};

use lbha_common::event::VridKey;

use crate::{
    cloud::{ApiClient, Assigned, FloatingIpStatus, Holder, Mastership},
    heartbeat::{
        PeerTable,
        wire::{PeerState, Record},
    },
    status::{
        Telemetry,
        socket::{HandoverRequest, Reply},
    },
    vrrp::driver::{Command, Commands},
};

/// A peer agent as the heartbeat shows it, for one VRID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerFacts {
    /// Its heartbeat address (as configured in `[heartbeat] peers`).
    pub heartbeat: SocketAddr,
    /// 0: it does not know its droplet id yet.
    pub droplet_id: u64,
    /// Its record for the VRID, if it sent one.
    pub record: Option<Record>,
    pub fresh: bool,
    /// How long ago its last heartbeat came.
    pub age: Duration,
}

/// What the refusal rules look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub instance: String,
    /// The instance the floating IP follows (None: no `[floating_ip]`).
    pub followed: Option<String>,
    /// Our instance's state (keepalived's names), None: not running here.
    pub state: Option<String>,
    /// A heartbeat runs (without one nothing tells a Backup's health).
    pub heartbeat: bool,
    pub peers: Vec<PeerFacts>,
    /// Our droplet id, when the floating-IP manager knows it.
    pub our_droplet: Option<u64>,
    /// The peer's droplet id as configured (`peer_droplet_id`,
    /// `--do-peer-droplet-id`): used when its heartbeat carries none.
    pub configured_peer_droplet: Option<u64>,
}

/// The peer a handover goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub heartbeat: SocketAddr,
    pub address: IpAddr,
    pub droplet_id: u64,
    /// Where [`Self::droplet_id`] came from, for the progress line.
    pub droplet_from: DropletSource,
    pub priority: u8,
    pub age: Duration,
}

/// Where the peer's droplet id came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropletSource {
    /// The peer's heartbeat (and the configuration agrees, if it says).
    Heartbeat,
    /// The configuration: the heartbeat carried none.
    Config,
}

impl DropletSource {
    fn describe(self) -> &'static str {
        match self {
            DropletSource::Heartbeat => "from its heartbeat",
            DropletSource::Config => "from the configuration",
        }
    }
}

/// Why a handover was refused; nothing was changed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("no [floating_ip] is configured: there is nothing to hand over")]
    NoFloatingIp,
    #[error("the floating IP follows instance {followed}, not {instance}")]
    NotFollowed { instance: String, followed: String },
    #[error("instance {0} does not run here")]
    UnknownInstance(String),
    #[error("instance {instance} is {state}, not MASTER: only the Master hands over")]
    NotMaster { instance: String, state: String },
    #[error(
        "no heartbeat is configured ([heartbeat], --heartbeat-listen): a Backup sends no adverts, so only the heartbeat shows whether the peer is Backup and healthy (a configured peer droplet id does not)"
    )]
    NoHeartbeat,
    #[error("no peer matches --to {0}")]
    UnknownPeer(String),
    #[error("no peer reports instance {0}'s VRID over the heartbeat")]
    NoPeer(String),
    #[error("several peers report this VRID ({0}): name one with --to")]
    Ambiguous(String),
    #[error("peer {peer} has not been heard from for {age_ms} ms")]
    Stale { peer: String, age_ms: u64 },
    #[error("peer {peer} is {state}, not BACKUP")]
    NotBackup { peer: String, state: String },
    #[error("peer {peer} is not healthy (its checks fail, or its priority is 0)")]
    Unhealthy { peer: String },
    #[error(
        "peer {0}'s heartbeat carries no droplet id (its metadata look-up failed?) and none is configured (`peer_droplet_id` in [floating_ip], --do-peer-droplet-id)"
    )]
    DropletUnknown(String),
    #[error(
        "peer {peer} reports droplet {heartbeat} over the heartbeat, but the configuration says droplet {configured} (`peer_droplet_id`, --do-peer-droplet-id): fix whichever is wrong"
    )]
    DropletMismatch {
        peer: String,
        heartbeat: u64,
        configured: u64,
    },
    #[error("peer {peer} reports our own droplet id {droplet}")]
    SameDroplet { peer: String, droplet: u64 },
    #[error("a handover is already running")]
    Busy,
}

fn state_name(state: PeerState) -> &'static str {
    match state {
        PeerState::Init => "INIT",
        PeerState::Backup => "BACKUP",
        PeerState::Master => "MASTER",
        PeerState::Fault => "FAULT",
    }
}

/// The peer's droplet id: from its heartbeat (0: it sent none) or else
/// from the configuration; when both say, they must agree (one of them is
/// wrong, and assigning to the wrong droplet would take the IP away from
/// both load balancers). Pure.
pub fn peer_droplet(
    peer: &str,
    heartbeat: u64,
    configured: Option<u64>,
) -> Result<(u64, DropletSource), Refusal> {
    match (heartbeat, configured) {
        (0, None) => Err(Refusal::DropletUnknown(peer.to_owned())),
        (0, Some(id)) => Ok((id, DropletSource::Config)),
        (id, None) => Ok((id, DropletSource::Heartbeat)),
        (id, Some(configured)) if id == configured => Ok((id, DropletSource::Heartbeat)),
        (id, Some(configured)) => Err(Refusal::DropletMismatch {
            peer: peer.to_owned(),
            heartbeat: id,
            configured,
        }),
    }
}

/// Whether `to` names this peer: its heartbeat address (with or without
/// the port), its VRRP address, or its droplet id (its heartbeat's, else
/// `configured`).
fn names(peer: &PeerFacts, configured: Option<u64>, to: &str) -> bool {
    let to = to.trim();
    let droplet = match peer.droplet_id {
        0 => configured,
        id => Some(id),
    };
    to == peer.heartbeat.to_string()
        || to.parse::<IpAddr>().is_ok_and(|ip| {
            ip == peer.heartbeat.ip() || peer.record.is_some_and(|r| r.address == ip)
        })
        || droplet.is_some_and(|id| to.parse::<u64>() == Ok(id))
}

/// Which peer the handover goes to, or why there is none. Pure.
pub fn choose(facts: &Facts, to: Option<&str>) -> Result<Target, Refusal> {
    let followed = facts.followed.as_ref().ok_or(Refusal::NoFloatingIp)?;
    if *followed != facts.instance {
        return Err(Refusal::NotFollowed {
            instance: facts.instance.clone(),
            followed: followed.clone(),
        });
    }
    let state = facts
        .state
        .as_ref()
        .ok_or_else(|| Refusal::UnknownInstance(facts.instance.clone()))?;
    if state != "MASTER" {
        return Err(Refusal::NotMaster {
            instance: facts.instance.clone(),
            state: state.clone(),
        });
    }
    if !facts.heartbeat {
        return Err(Refusal::NoHeartbeat);
    }
    let reporting: Vec<&PeerFacts> = facts.peers.iter().filter(|p| p.record.is_some()).collect();
    let peer = match to {
        Some(to) => facts
            .peers
            .iter()
            .find(|p| names(p, facts.configured_peer_droplet, to))
            .ok_or_else(|| Refusal::UnknownPeer(to.to_owned()))?,
        None => match reporting.as_slice() {
            [] => return Err(Refusal::NoPeer(facts.instance.clone())),
            [one] => *one,
            many => {
                let list: Vec<String> = many.iter().map(|p| p.heartbeat.to_string()).collect();
                return Err(Refusal::Ambiguous(list.join(", ")));
            }
        },
    };
    let name = peer.heartbeat.to_string();
    if !peer.fresh {
        return Err(Refusal::Stale {
            peer: name,
            age_ms: peer.age.as_millis() as u64,
        });
    }
    let Some(record) = peer.record else {
        return Err(Refusal::NoPeer(facts.instance.clone()));
    };
    if record.state != PeerState::Backup {
        return Err(Refusal::NotBackup {
            peer: name,
            state: state_name(record.state).to_owned(),
        });
    }
    if !record.healthy || record.priority == 0 {
        return Err(Refusal::Unhealthy { peer: name });
    }
    let (droplet_id, droplet_from) =
        peer_droplet(&name, peer.droplet_id, facts.configured_peer_droplet)?;
    if facts.our_droplet == Some(droplet_id) {
        return Err(Refusal::SameDroplet {
            peer: name,
            droplet: droplet_id,
        });
    }
    Ok(Target {
        heartbeat: peer.heartbeat,
        address: record.address,
        droplet_id,
        droplet_from,
        priority: record.priority,
        age: peer.age,
    })
}

/// The peers of `table` as [`choose`] sees them, for the router `key`.
pub fn peer_facts(table: &PeerTable, key: VridKey, now_ns: u64) -> Vec<PeerFacts> {
    table
        .peers
        .iter()
        .map(|(addr, peer)| PeerFacts {
            heartbeat: *addr,
            droplet_id: peer.droplet_id,
            record: peer.records.iter().find(|r| r.key() == key).copied(),
            fresh: table.is_fresh(peer, now_ns),
            age: Duration::from_nanos(now_ns.saturating_sub(peer.received_ns)),
        })
        .collect()
}

/// What a handover needs of the floating IP ([`super::core::Core::handover_cloud`]).
pub struct Cloud {
    pub mastership: Arc<Mastership>,
    pub api: ApiClient,
    pub operation_deadline: Duration,
    /// The configured peer droplet id (`peer_droplet_id`).
    pub peer_droplet_id: Option<u64>,
    /// The floating IPv4, and the reserved IPv6 when it follows the same
    /// instance, each with its manager's status.
    pub ips: Vec<(IpAddr, watch::Receiver<FloatingIpStatus>)>,
}

/// Everything [`run`] works with, cloned from the daemon when the request
/// came.
pub struct Context {
    pub cloud: Option<Cloud>,
    pub commands: Commands,
    pub telemetry: Telemetry,
    pub peers: Option<watch::Receiver<PeerTable>>,
    /// The instance's router (family and VRID), by instance name: what
    /// its heartbeat records are keyed by.
    pub vrids: Vec<(String, VridKey)>,
}

/// Says one step: in the log and to the CLI.
struct Steps {
    replies: mpsc::UnboundedSender<Reply>,
    started: Instant,
}

impl Steps {
    fn say(&self, text: &str) {
        let at = self.started.elapsed().as_secs_f64();
        tracing::info!(elapsed_s = at, "handover: {text}");
        let _ = self
            .replies
            .send(Reply::Progress(format!("{at:>7.3}s {text}")));
    }

    fn done(self, ok: bool, message: String) {
        if ok {
            tracing::info!("handover: {message}");
        } else {
            tracing::warn!("handover: {message}");
        }
        let _ = self.replies.send(Reply::Done { ok, message });
    }
}

/// Carries out one request, answering on `replies`.
pub async fn run(request: HandoverRequest, ctx: Context, replies: mpsc::UnboundedSender<Reply>) {
    let steps = Steps {
        replies,
        started: Instant::now(),
    };
    let instance = request
        .instance
        .clone()
        .or_else(|| ctx.cloud.as_ref().map(|c| c.mastership.instance.clone()))
        .or_else(|| ctx.vrids.first().map(|(name, _)| name.clone()));
    let Some(instance) = instance else {
        steps.done(false, "no instance runs here".into());
        return;
    };
    if request.release {
        release(&instance, &ctx, steps).await;
    } else {
        hand_over(&instance, &request, ctx, steps).await;
    }
}

async fn release(instance: &str, ctx: &Context, steps: Steps) {
    let (tx, rx) = oneshot::channel();
    let sent = ctx.commands.send(
        instance,
        Command::Release {
            instance: instance.to_owned(),
            reply: tx,
        },
    );
    match (sent, rx.await) {
        (true, Ok(true)) => steps.done(
            true,
            format!("released: instance {instance} competes with its configured priority again"),
        ),
        (true, Ok(false)) => steps.done(
            true,
            format!("instance {instance} held no handover priority; nothing changed"),
        ),
        _ => steps.done(false, format!("instance {instance} does not run here")),
    }
}

/// The instance's state and priority as it last published them.
fn instance_status(telemetry: &Telemetry, instance: &str) -> Option<(String, u8)> {
    telemetry
        .snapshot()
        .instances
        .into_iter()
        .find(|i| i.name == instance)
        .map(|i| (i.state, i.priority))
}

async fn hand_over(instance: &str, request: &HandoverRequest, ctx: Context, steps: Steps) {
    let vrid = ctx
        .vrids
        .iter()
        .find(|(n, _)| n == instance)
        .map(|(_, v)| *v);
    let now = crate::clock::monotonic_ns();
    let facts = Facts {
        instance: instance.to_owned(),
        followed: ctx.cloud.as_ref().map(|c| c.mastership.instance.clone()),
        state: instance_status(&ctx.telemetry, instance).map(|(state, _)| state),
        heartbeat: ctx.peers.is_some(),
        peers: match (&ctx.peers, vrid) {
            (Some(peers), Some(vrid)) => peer_facts(&peers.borrow(), vrid, now),
            _ => Vec::new(),
        },
        our_droplet: ctx
            .cloud
            .as_ref()
            .and_then(|c| c.ips[0].1.borrow().droplet_id),
        configured_peer_droplet: ctx.cloud.as_ref().and_then(|c| c.peer_droplet_id),
    };
    let target = match choose(&facts, request.to.as_deref()) {
        Ok(target) => target,
        Err(refusal) => {
            steps.done(false, format!("refused, nothing changed: {refusal}"));
            return;
        }
    };
    let Some(cloud) = ctx.cloud else {
        steps.done(
            false,
            format!("refused, nothing changed: {}", Refusal::NoFloatingIp),
        );
        return;
    };
    let droplet = target.droplet_id;
    steps.say(&format!(
        "instance {instance} is MASTER; peer {} (VRRP {}, droplet {droplet} {}) is BACKUP and healthy at priority {}, heard {} ms ago",
        target.heartbeat,
        target.address,
        target.droplet_from.describe(),
        target.priority,
        target.age.as_millis()
    ));
    let timeout = request
        .timeout_secs
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(cloud.operation_deadline, Duration::from_secs_f64);

    // 1. Pause the managers' checks (they would take the IP back), and
    //    wait for a check in flight to end: one assign at a time.
    cloud.mastership.update(|v| v.handover_to = Some(droplet));
    for (ip, status) in &cloud.ips {
        let mut status = status.clone();
        let paused = tokio::time::timeout(timeout, status.wait_for(|s| s.handover_paused)).await;
        if !matches!(paused, Ok(Ok(_))) {
            rollback(&cloud, &steps);
            steps.done(
                false,
                format!("the floating-IP manager of {ip} did not pause within {timeout:?}; rolled back, still MASTER"),
            );
            return;
        }
    }
    steps.say("floating-IP re-checks paused (no check in flight); this node keeps serving");

    // 2. Assign each address to the peer's droplet while we keep serving.
    let still_master = || cloud.mastership.is_master();
    for (ip, _) in &cloud.ips {
        steps.say(&format!("assigning {ip} to droplet {droplet}"));
        let started = Instant::now();
        let assigned = tokio::time::timeout(
            timeout,
            cloud.api.assign_and_wait(*ip, droplet, still_master),
        )
        .await;
        let ms = started.elapsed().as_millis();
        let failure = match assigned {
            Ok(Ok(Assigned::Completed(action))) => {
                steps.say(&format!(
                    "assign action {} of {ip} completed in {ms} ms",
                    action.id
                ));
                None
            }
            Ok(Ok(Assigned::AlreadyHeld(_))) => {
                steps.say(&format!("{ip} was on droplet {droplet} already ({ms} ms)"));
                None
            }
            Ok(Err(e)) => Some(format!(
                "the assign of {ip} failed after {ms} ms: {}",
                crate::error_chain(&e)
            )),
            Err(_) => Some(format!(
                "the assign of {ip} did not complete within {timeout:?}"
            )),
        };
        if let Some(failure) = failure {
            rollback(&cloud, &steps);
            steps.done(false, format!("{failure}; rolled back: still MASTER with its priority, the manager re-checks now and takes back what moved"));
            return;
        }
        // 3. Confirm where the API says the address is.
        let Ok(holder) = tokio::time::timeout(timeout, cloud.api.holder(*ip)).await else {
            steps.say(&format!(
                "the API did not say {ip}'s holder within {timeout:?}; the completed action stands"
            ));
            continue;
        };
        match holder {
            Ok(Holder::Droplet(id)) if id == droplet => {
                steps.say(&format!("the API shows {ip} on droplet {droplet}: traffic goes to the peer"));
            }
            Ok(Holder::Unknown) => steps.say(&format!(
                "the API does not show {ip}'s holder (a token without droplet:read); the completed action stands"
            )),
            Ok(other) => {
                rollback(&cloud, &steps);
                steps.done(false, format!("the assign completed but the API shows {ip} as {other}; rolled back, still MASTER"));
                return;
            }
            Err(e) => steps.say(&format!("cannot confirm {ip}'s holder ({e}); the completed action stands")),
        }
    }

    // 4. Resign with the priority held low: the peer becomes Master on an
    //    IP it holds already.
    let (tx, rx) = oneshot::channel();
    let sent = ctx.commands.send(
        instance,
        Command::HandOver {
            instance: instance.to_owned(),
            reply: tx,
        },
    );
    let resigned = if sent { rx.await.ok() } else { None };
    cloud.mastership.update(|v| v.handover_to = None);
    match resigned {
        Some(Ok(())) => steps.say(&format!(
            "resigned: priority-0 advert sent; priority held at {} until `lbha-agent handover --release`",
            crate::vrrp::machine::HANDOVER_PRIORITY
        )),
        Some(Err(state)) => {
            steps.done(false, format!("the IP is on droplet {droplet}, but instance {instance} was {} by then and did not resign", state.name()));
            return;
        }
        None => {
            steps.done(false, format!("the IP is on droplet {droplet}, but instance {instance} stopped before it resigned"));
            return;
        }
    }

    // 5. The peer taking over, as its heartbeat shows it.
    if let (Some(peers), Some(vrid)) = (ctx.peers, vrid) {
        let mut peers = peers.clone();
        let master = tokio::time::timeout(
            Duration::from_secs(5),
            peers.wait_for(|table| {
                table.peers.get(&target.heartbeat).is_some_and(|p| {
                    p.records
                        .iter()
                        .any(|r| r.key() == vrid && r.state == PeerState::Master)
                })
            }),
        )
        .await;
        if matches!(master, Ok(Ok(_))) {
            steps.say(&format!("peer {} is MASTER", target.heartbeat));
        } else {
            steps.say(&format!(
                "peer {} not seen MASTER within 5 s (its heartbeat may lag)",
                target.heartbeat
            ));
        }
    }
    let total = steps.started.elapsed().as_millis();
    steps.done(
        true,
        format!("handed {instance} over to droplet {droplet} in {total} ms"),
    );
}

/// Ends the pause: the managers re-check at once (the view changed) and,
/// as Master, take back what moved.
fn rollback(cloud: &Cloud, steps: &Steps) {
    cloud.mastership.update(|v| v.handover_to = None);
    steps.say("rolling back: re-checks resumed, priority unchanged");
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "192.0.2.12:5405";
    const OUR_DROPLET: u64 = 1001;
    const PEER_DROPLET: u64 = 1002;

    fn peer(state: PeerState) -> PeerFacts {
        PeerFacts {
            heartbeat: PEER.parse().unwrap(),
            droplet_id: PEER_DROPLET,
            record: Some(Record {
                vrid: 51,
                state,
                priority: 100,
                healthy: true,
                address: std::net::Ipv4Addr::new(10, 0, 0, 12).into(),
            }),
            fresh: true,
            age: Duration::from_millis(120),
        }
    }

    fn facts() -> Facts {
        Facts {
            instance: "VI_1".into(),
            followed: Some("VI_1".into()),
            state: Some("MASTER".into()),
            heartbeat: true,
            peers: vec![peer(PeerState::Backup)],
            our_droplet: Some(OUR_DROPLET),
            configured_peer_droplet: None,
        }
    }

    #[test]
    fn a_healthy_backup_peer_is_chosen_by_any_of_its_names() {
        let expected = Target {
            heartbeat: PEER.parse().unwrap(),
            address: std::net::Ipv4Addr::new(10, 0, 0, 12).into(),
            droplet_id: PEER_DROPLET,
            droplet_from: DropletSource::Heartbeat,
            priority: 100,
            age: Duration::from_millis(120),
        };
        for to in [
            None,
            Some(PEER),
            Some("192.0.2.12"),
            Some("10.0.0.12"),
            Some("1002"),
        ] {
            assert_eq!(choose(&facts(), to), Ok(expected.clone()), "--to {to:?}");
        }
    }

    fn refused(f: impl FnOnce(&mut Facts), to: Option<&str>) -> Refusal {
        let mut facts = facts();
        f(&mut facts);
        choose(&facts, to).expect_err("refused")
    }

    #[test]
    fn each_rule_refuses_with_its_reason() {
        assert_eq!(refused(|f| f.followed = None, None), Refusal::NoFloatingIp);
        assert!(matches!(
            refused(|f| f.followed = Some("VI_2".into()), None),
            Refusal::NotFollowed { .. }
        ));
        assert_eq!(
            refused(|f| f.state = None, None),
            Refusal::UnknownInstance("VI_1".into())
        );
        assert_eq!(
            refused(|f| f.state = Some("BACKUP".into()), None),
            Refusal::NotMaster {
                instance: "VI_1".into(),
                state: "BACKUP".into()
            }
        );
        assert_eq!(refused(|f| f.heartbeat = false, None), Refusal::NoHeartbeat);
        assert_eq!(
            refused(|_| {}, Some("10.9.9.9")),
            Refusal::UnknownPeer("10.9.9.9".into())
        );
        assert_eq!(
            refused(|f| f.peers.clear(), None),
            Refusal::NoPeer("VI_1".into())
        );
        assert_eq!(
            refused(|f| f.peers[0].record = None, None),
            Refusal::NoPeer("VI_1".into())
        );
        let mut other = peer(PeerState::Backup);
        other.heartbeat = "192.0.2.13:5405".parse().unwrap();
        assert!(matches!(
            refused(|f| f.peers.push(other.clone()), None),
            Refusal::Ambiguous(_)
        ));
        assert_eq!(
            refused(|f| f.peers[0].fresh = false, None),
            Refusal::Stale {
                peer: PEER.into(),
                age_ms: 120
            }
        );
        for state in [PeerState::Master, PeerState::Fault, PeerState::Init] {
            assert!(
                matches!(
                    refused(|f| f.peers[0] = peer(state), None),
                    Refusal::NotBackup { .. }
                ),
                "{state:?}"
            );
        }
        assert!(matches!(
            refused(
                |f| f.peers[0].record.as_mut().unwrap().healthy = false,
                None
            ),
            Refusal::Unhealthy { .. }
        ));
        assert!(matches!(
            refused(|f| f.peers[0].record.as_mut().unwrap().priority = 0, None),
            Refusal::Unhealthy { .. }
        ));
        assert_eq!(
            refused(|f| f.peers[0].droplet_id = 0, None),
            Refusal::DropletUnknown(PEER.into())
        );
        assert!(matches!(
            refused(|f| f.our_droplet = Some(PEER_DROPLET), None),
            Refusal::SameDroplet { .. }
        ));
    }

    #[test]
    fn the_peer_droplet_comes_from_the_heartbeat_or_the_config() {
        let resolve = |heartbeat, configured| peer_droplet(PEER, heartbeat, configured);
        assert_eq!(
            resolve(1002, None),
            Ok((1002, DropletSource::Heartbeat)),
            "heartbeat only"
        );
        assert_eq!(
            resolve(0, Some(1002)),
            Ok((1002, DropletSource::Config)),
            "config only"
        );
        assert_eq!(
            resolve(1002, Some(1002)),
            Ok((1002, DropletSource::Heartbeat)),
            "both, equal"
        );
        assert_eq!(
            resolve(1002, Some(1003)),
            Err(Refusal::DropletMismatch {
                peer: PEER.into(),
                heartbeat: 1002,
                configured: 1003
            }),
            "both, different"
        );
        assert_eq!(resolve(0, None), Err(Refusal::DropletUnknown(PEER.into())));
        let message = resolve(1002, Some(1003)).unwrap_err().to_string();
        assert!(
            message.contains("1002")
                && message.contains("1003")
                && message.contains("peer_droplet_id"),
            "{message}"
        );
    }

    /// Through [`choose`]: a peer whose heartbeat has no droplet id is
    /// handed over to with the configured one (and named by it); one that
    /// disagrees with the configuration is refused; without a heartbeat a
    /// configured id changes nothing (the peer's health is unknown).
    #[test]
    fn choose_uses_the_configured_peer_droplet() {
        let mut f = facts();
        f.peers[0].droplet_id = 0;
        f.configured_peer_droplet = Some(PEER_DROPLET);
        let target = choose(&f, None).expect("configured droplet");
        assert_eq!(target.droplet_id, PEER_DROPLET);
        assert_eq!(target.droplet_from, DropletSource::Config);
        assert_eq!(
            choose(&f, Some("1002")).map(|t| t.droplet_id),
            Ok(PEER_DROPLET)
        );

        f.peers[0].droplet_id = PEER_DROPLET;
        f.configured_peer_droplet = Some(1003);
        assert!(matches!(
            choose(&f, None),
            Err(Refusal::DropletMismatch { .. })
        ));

        f.configured_peer_droplet = Some(PEER_DROPLET);
        f.heartbeat = false;
        f.peers.clear();
        let refusal = choose(&f, None).unwrap_err();
        assert_eq!(refusal, Refusal::NoHeartbeat);
        assert!(
            refusal.to_string().contains("sends no adverts"),
            "{refusal}"
        );
    }

    #[test]
    fn naming_a_peer_picks_it_among_several() {
        let mut f = facts();
        let mut other = peer(PeerState::Backup);
        other.heartbeat = "192.0.2.13:5405".parse().unwrap();
        other.droplet_id = 1003;
        f.peers.push(other);
        assert_eq!(choose(&f, Some("1003")).unwrap().droplet_id, 1003);
        assert_eq!(
            choose(&f, Some("192.0.2.12")).unwrap().droplet_id,
            PEER_DROPLET
        );
    }
}
