//! Floating IP failover: a task that follows this node's VRRP mastership and
//! makes sure that, while we are Master, the floating IP points at our
//! droplet.
//!
//! - On becoming Master, and every `recheck_interval` while Master, it checks
//!   who holds the IP (metadata service first; the API when metadata is
//!   unavailable) and assigns it to us when we do not hold it. The periodic
//!   re-check is what repairs a split brain where another droplet grabbed the
//!   IP while we stayed Master (keepalived issues #100, #950).
//! - Single flight: at most one check-and-assign runs at a time, so one agent
//!   never has two assigns in flight. Mastership changes during it are noted
//!   and acted on when it ends.
//! - Losing mastership does not cancel a running assign (the request may
//!   already be with DO), but its retries stop and no new one starts.

use std::{future::Future, net::Ipv4Addr, pin::Pin, sync::Arc, time::Duration};

use thiserror::Error;
use tokio::{sync::watch, task::JoinHandle, time::Instant};
use tracing::{debug, info, warn};

use lbha_config::{FloatingIpConfig, InvalidFloatingIpConfig};

use super::{
    api::{ActionStatus, ApiClient, ApiError, ApiOptions, deadline_after},
    metadata::{MetadataClient, MetadataError},
    secret::{TokenError, load_token},
};

#[derive(Debug, Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] InvalidFloatingIpConfig),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// The API client's options for these settings.
pub fn api_options(settings: &FloatingIpConfig) -> ApiOptions {
    ApiOptions {
        base_url: settings.api_url.clone(),
        path_family: settings.path_family,
        request_timeout: settings.request_timeout,
        operation_deadline: settings.operation_deadline,
        ..ApiOptions::default()
    }
}

/// Validates the settings, loads the token and builds both clients.
pub fn build_clients(
    settings: &FloatingIpConfig,
) -> Result<(MetadataClient, ApiClient), SetupError> {
    settings.validate()?;
    let token = load_token(&settings.token)?;
    let api = ApiClient::new(api_options(settings), token)?;
    let metadata =
        MetadataClient::with_timeout(settings.metadata_url.clone(), settings.metadata_timeout)?;
    Ok((metadata, api))
}

/// The outcome of one assign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignRecord {
    /// When the assign was requested.
    pub at: Instant,
    pub droplet_id: u64,
    pub duration: Duration,
    /// The completed action's id, or the error's text.
    pub result: Result<u64, String>,
}

/// A VRRP router as the manager needs to rank it: what an election compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Router {
    /// Effective priority.
    pub priority: u8,
    /// Primary (advert source) address: breaks priority ties.
    pub address: Ipv4Addr,
}

impl Router {
    /// Whether `self` wins a VRRP election against `other` (higher
    /// priority, then higher address).
    pub fn outranks(&self, other: &Router) -> bool {
        (self.priority, u32::from(self.address)) > (other.priority, u32::from(other.address))
    }
}

/// A peer agent as the heartbeat reports it, for the followed instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerRouter {
    pub droplet_id: u64,
    pub router: Router,
    /// The peer says it is Master of the instance.
    pub master: bool,
    /// Its last heartbeat is recent enough to count.
    pub fresh: bool,
}

/// What the VRRP side tells the manager about the instance it follows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VrrpView {
    /// The instance is Master: the floating IP belongs here.
    pub is_master: bool,
    /// This node, as the instance's adverts show it.
    pub us: Option<Router>,
    /// The master this node followed last before it became Master itself
    /// (the node it took over from), as that master last advertised.
    pub last_master: Option<Router>,
    /// Counts adverts from other routers received while Master: a peer is
    /// back on the VRRP path (after a partition, a freeze, a false
    /// takeover), so who holds the IP deserves a look now.
    pub peer_adverts_while_master: u64,
    /// Peers known through the heartbeat (empty without one).
    pub peers: Vec<PeerRouter>,
}

/// What the manager knows, for health endpoints, logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FloatingIpStatus {
    pub master: bool,
    /// Some(true): our droplet holds the IP; Some(false): it does not; None:
    /// not checked yet, or neither metadata nor the API could tell.
    pub holder_known: Option<bool>,
    pub droplet_id: Option<u64>,
    /// A check or assign is running.
    pub in_flight: bool,
    pub checks: u64,
    /// Assigns requested so far.
    pub assigns: u64,
    pub last_assign: Option<AssignRecord>,
    /// Why the last check could not run to its end, if it could not.
    pub last_error: Option<String>,
}

/// Controls a running manager. Dropping it (or [`shutdown`](Self::shutdown))
/// stops the task.
#[derive(Debug)]
pub struct FloatingIpHandle {
    master: watch::Sender<VrrpView>,
    status: watch::Receiver<FloatingIpStatus>,
    task: JoinHandle<()>,
}

impl FloatingIpHandle {
    pub fn set_master(&self, master: bool) {
        self.master.send_modify(|view| view.is_master = master);
    }

    /// Replaces the whole view (tests of the split-brain rules).
    pub fn set_view(&self, view: VrrpView) {
        self.master.send_replace(view);
    }

    pub fn status(&self) -> FloatingIpStatus {
        self.status.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<FloatingIpStatus> {
        self.status.clone()
    }

    /// Stops the manager. A check or assign in progress is dropped: the
    /// daemon is going away, and a request already sent to DO completes
    /// there regardless.
    pub async fn shutdown(self) {
        drop(self.master);
        if let Err(e) = self.task.await
            && e.is_panic()
        {
            warn!(error = %e, "floating IP manager task panicked");
        }
    }
}

pub struct FloatingIpManager;

impl FloatingIpManager {
    /// Starts the manager as Backup; feed it with `set_master`.
    pub fn spawn(
        config: FloatingIpConfig,
        metadata: MetadataClient,
        api: ApiClient,
    ) -> FloatingIpHandle {
        let (master_tx, master_rx) = watch::channel(VrrpView::default());
        let (status, task) = Self::spawn_watching(config, metadata, api, master_rx);
        FloatingIpHandle {
            master: master_tx,
            status,
            task,
        }
    }

    /// Starts the manager on an existing mastership channel (e.g. the VRRP
    /// driver's). It stops when the channel's sender is dropped.
    pub fn spawn_watching(
        config: FloatingIpConfig,
        metadata: MetadataClient,
        api: ApiClient,
        master: watch::Receiver<VrrpView>,
    ) -> (watch::Receiver<FloatingIpStatus>, JoinHandle<()>) {
        let (status_tx, status_rx) = watch::channel(FloatingIpStatus {
            droplet_id: config.droplet_id,
            ..FloatingIpStatus::default()
        });
        let ctx = Arc::new(Ctx {
            ip: config.ip,
            configured_droplet: config.droplet_id,
            action_deadline: config.operation_deadline,
            metadata,
            api,
            status: status_tx,
        });
        // A zero interval (validate() rejects it, but spawn cannot fail)
        // would re-check in a tight loop against DO.
        let recheck = config.recheck_interval.max(Duration::from_millis(10));
        let task = tokio::spawn(run(ctx, master, recheck));
        (status_rx, task)
    }
}

struct Ctx {
    ip: Ipv4Addr,
    configured_droplet: Option<u64>,
    action_deadline: Duration,
    metadata: MetadataClient,
    api: ApiClient,
    status: watch::Sender<FloatingIpStatus>,
}

type Job = Pin<Box<dyn Future<Output = Option<u64>> + Send>>;

async fn run(ctx: Arc<Ctx>, mut master_rx: watch::Receiver<VrrpView>, recheck: Duration) {
    let mut master = master_rx.borrow_and_update().is_master;
    let mut droplet = ctx.configured_droplet;
    let mut job: Option<Job> = None;
    // Mastership (re)gained while a job ran: check again as soon as it ends
    // instead of waiting a whole interval.
    let mut rearm = false;
    let mut next_check = Instant::now();
    ctx.status.send_modify(|s| s.master = master);
    info!(ip = %ctx.ip, master, "floating IP manager started");
    if droplet.is_none() {
        // Learn our id now, while metadata is (probably) up, so that a
        // Backup can still fail over if metadata is down when it matters.
        match ctx.metadata.droplet_id().await {
            Ok(id) => {
                info!(ip = %ctx.ip, droplet_id = id, "learned our droplet id from metadata");
                droplet = Some(id);
                ctx.status.send_modify(|s| s.droplet_id = droplet);
            }
            Err(e) => {
                warn!(ip = %ctx.ip, error = %e, "cannot learn our droplet id yet; will retry when Master")
            }
        }
    }

    loop {
        tokio::select! {
            changed = master_rx.changed() => {
                if changed.is_err() {
                    info!(ip = %ctx.ip, "mastership input closed; floating IP manager stopping");
                    return;
                }
                let now_master = master_rx.borrow_and_update().is_master;
                if now_master != master {
                    info!(ip = %ctx.ip, master = now_master, "mastership changed");
                }
                // Checked even when the value looks unchanged: the watch
                // coalesces a quick Backup->Master flap, and the Backup
                // half may have stopped an assign's retries.
                if now_master {
                    if job.is_some() {
                        rearm = true;
                    } else {
                        next_check = Instant::now();
                    }
                }
                master = now_master;
                ctx.status.send_modify(|s| s.master = master);
            }
            learned = async {
                match job.as_mut() {
                    Some(j) => j.await,
                    None => std::future::pending().await,
                }
            } => {
                job = None;
                droplet = droplet.or(learned);
                ctx.status.send_modify(|s| {
                    s.in_flight = false;
                    s.droplet_id = droplet;
                });
                next_check = if std::mem::take(&mut rearm) {
                    Instant::now()
                } else {
                    deadline_after(recheck)
                };
            }
            () = tokio::time::sleep_until(next_check), if master && job.is_none() => {
                ctx.status.send_modify(|s| s.in_flight = true);
                job = Some(Box::pin(reconcile(ctx.clone(), droplet, master_rx.clone())));
            }
        }
    }
}

/// One check, and an assign when needed. Returns the droplet id it learned.
async fn reconcile(
    ctx: Arc<Ctx>,
    cached: Option<u64>,
    master: watch::Receiver<VrrpView>,
) -> Option<u64> {
    let ip = ctx.ip;
    let droplet = match cached {
        Some(id) => id,
        None => match ctx.metadata.droplet_id().await {
            Ok(id) => {
                info!(%ip, droplet_id = id, "learned our droplet id from metadata");
                id
            }
            Err(e) => {
                // Without our id there is nothing to assign to; the next
                // re-check tries again.
                warn!(%ip, error = %e, "cannot learn our droplet id; set droplet_id to fail over without metadata");
                ctx.status.send_modify(|s| {
                    s.checks += 1;
                    s.holder_known = None;
                    s.last_error = Some(format!("droplet id unknown: {e}"));
                });
                return None;
            }
        },
    };

    let held = held_by_us(&ctx, droplet).await;
    ctx.status.send_modify(|s| {
        s.checks += 1;
        s.holder_known = held;
        s.last_error = match held {
            Some(_) => None,
            None => Some("holder unknown: metadata and API both failed".into()),
        };
    });
    // Metadata says ours, but an action still pending on the IP (the old
    // master's assign, say) will move it away when it completes. Only the
    // API knows; treat a pending action as "not ours" and assign: our
    // request waits for the pending one and then wins.
    let held = match held {
        Some(true) => match ctx.api.holder_and_lock(ip).await {
            Ok((_, true)) => {
                warn!(%ip, droplet_id = droplet, "an action on the floating IP is pending; asserting our assignment");
                Some(false)
            }
            Ok((holder, false)) => Some(holder == Some(droplet)),
            // The API being unreachable is no reason to distrust metadata.
            Err(_) => Some(true),
        },
        other => other,
    };
    match held {
        Some(true) => {
            debug!(%ip, droplet_id = droplet, "floating IP is ours");
            return Some(droplet);
        }
        Some(false) => {
            warn!(%ip, droplet_id = droplet, "floating IP is not on this droplet; assigning")
        }
        // We are Master and cannot tell: assigning to ourselves is harmless
        // if we already hold it, and is what a Master must do otherwise.
        None => {
            warn!(%ip, droplet_id = droplet, "cannot tell who holds the floating IP; assigning anyway")
        }
    }
    if !master.borrow().is_master {
        info!(%ip, "no longer Master; not assigning");
        return Some(droplet);
    }

    let started = Instant::now();
    ctx.status.send_modify(|s| s.assigns += 1);
    info!(%ip, droplet_id = droplet, "floating IP assign requested");
    let result = assign_and_wait(&ctx, droplet, master).await;
    let duration = started.elapsed();
    let record = match &result {
        Ok(action_id) => {
            info!(%ip, droplet_id = droplet, action_id, duration_ms = duration.as_millis() as u64, "floating IP assign completed");
            Ok(*action_id)
        }
        Err(e) => {
            warn!(%ip, droplet_id = droplet, duration_ms = duration.as_millis() as u64, error = %e, "floating IP assign failed");
            Err(e.to_string())
        }
    };
    let ok = record.is_ok();
    ctx.status.send_modify(|s| {
        if ok {
            s.holder_known = Some(true);
        }
        s.last_assign = Some(AssignRecord {
            at: started,
            droplet_id: droplet,
            duration,
            result: record,
        });
    });
    Some(droplet)
}

async fn assign_and_wait(
    ctx: &Ctx,
    droplet: u64,
    master: watch::Receiver<VrrpView>,
) -> Result<u64, ApiError> {
    let action = ctx
        .api
        .assign_while(ctx.ip, droplet, || master.borrow().is_master)
        .await?;
    if action.status == ActionStatus::Completed {
        return Ok(action.id);
    }
    let deadline = deadline_after(ctx.action_deadline);
    Ok(ctx.api.wait_action(ctx.ip, action.id, deadline).await?.id)
}

/// Some(true) if our droplet holds the IP, Some(false) if not, None if
/// neither source could say.
async fn held_by_us(ctx: &Ctx, droplet: u64) -> Option<bool> {
    // Metadata only says whether *a* floating IP is on this droplet; DO
    // allows one reserved IPv4 per droplet, so that is ours to manage.
    match ctx.metadata.floating_ip_active().await {
        Ok(active) => return Some(active),
        Err(e) => {
            warn!(ip = %ctx.ip, error = %e, "metadata unavailable; asking the API who holds the floating IP")
        }
    }
    match ctx.api.holder(ctx.ip).await {
        Ok(holder) => {
            debug!(ip = %ctx.ip, holder = ?holder, "floating IP holder from API");
            Some(holder == Some(droplet))
        }
        Err(e) => {
            warn!(ip = %ctx.ip, error = %e, "cannot ask the API who holds the floating IP");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use lbha_dosim::{FaultsUpdate, ScriptedFault, max_concurrent};

    use super::*;
    use crate::{
        cloud::{
            secret::Secret,
            test_support::{
                ALWAYS, IP, OTHER_DROPLET, OUR_DROPLET, Sim, TOKEN, capture_logs, metadata_hangs,
            },
        },
        config::{DEFAULT_API_URL, DEFAULT_METADATA_URL, TokenSource},
    };

    const RECHECK: Duration = Duration::from_millis(100);

    fn config(sim: &Sim) -> FloatingIpConfig {
        FloatingIpConfig {
            api_url: sim.api_url(),
            metadata_url: sim.metadata_url(),
            recheck_interval: RECHECK,
            operation_deadline: Duration::from_secs(3),
            request_timeout: Duration::from_millis(500),
            metadata_timeout: Duration::from_millis(200),
            ..FloatingIpConfig::new(IP, TokenSource::Env("LBHA_UNUSED_IN_TESTS".into()))
        }
    }

    fn spawn(cfg: FloatingIpConfig) -> FloatingIpHandle {
        let api = ApiClient::new(
            ApiOptions {
                backoff_base: Duration::from_millis(20),
                backoff_max: Duration::from_millis(100),
                action_poll_interval: Duration::from_millis(20),
                ..api_options(&cfg)
            },
            Secret::new(TOKEN),
        )
        .unwrap();
        let md =
            MetadataClient::with_timeout(cfg.metadata_url.clone(), cfg.metadata_timeout).unwrap();
        FloatingIpManager::spawn(cfg, md, api)
    }

    async fn wait_for(
        h: &FloatingIpHandle,
        what: &str,
        f: impl FnMut(&FloatingIpStatus) -> bool,
    ) -> FloatingIpStatus {
        let mut rx = h.subscribe();
        match tokio::time::timeout(Duration::from_secs(5), rx.wait_for(f)).await {
            Ok(Ok(s)) => s.clone(),
            _ => panic!("timed out waiting for {what}: {:?}", h.status()),
        }
    }

    /// Every API call answers `delay_ms` late, so that mastership can change
    /// while an assign is in flight; actions end on their `polls`-th poll.
    fn slow_answers(delay_ms: u64, polls: u32) -> FaultsUpdate {
        FaultsUpdate {
            delay_ms: Some(delay_ms),
            complete_after_polls: Some(polls),
            ..FaultsUpdate::default()
        }
    }

    /// For conditions on the simulator, which the status channel does not
    /// signal.
    async fn poll_until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn becoming_master_assigns_exactly_once() {
        let (_guard, logs) = capture_logs();
        let sim = Sim::start(None).await;
        sim.faults(FaultsUpdate {
            complete_after_polls: Some(2),
            ..FaultsUpdate::default()
        });
        let h = spawn(config(&sim));
        h.set_master(true);
        let s = wait_for(&h, "assign", |s| s.last_assign.is_some()).await;
        let record = s.last_assign.clone().unwrap();
        assert!(record.result.is_ok(), "{record:?}");
        assert_eq!(record.droplet_id, OUR_DROPLET);
        assert_eq!(s.holder_known, Some(true));
        assert_eq!(s.droplet_id, Some(OUR_DROPLET));
        assert_eq!(sim.holder(IP), Some(OUR_DROPLET));

        // Several re-checks later: metadata says it is ours, no new assign.
        let checks = s.checks;
        wait_for(&h, "re-checks", |s| s.checks >= checks + 3).await;
        assert_eq!(sim.assigns(), 1);
        assert_eq!(h.status().assigns, 1);
        h.shutdown().await;

        let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
        assert!(logs.contains("floating IP assign requested"), "{logs}");
        assert!(
            logs.contains("floating IP assign completed") && logs.contains("duration_ms"),
            "{logs}"
        );
        assert!(!logs.contains(TOKEN));
    }

    #[tokio::test]
    async fn backup_leaves_the_ip_alone() {
        let sim = Sim::start(None).await;
        let h = spawn(config(&sim));
        h.set_master(false);
        tokio::time::sleep(RECHECK * 3).await;
        assert!(sim.requests().is_empty());
        assert_eq!(h.status().checks, 0);
        h.shutdown().await;
    }

    #[tokio::test]
    async fn holder_already_does_not_assign() {
        let sim = Sim::start(Some(OUR_DROPLET)).await;
        let h = spawn(config(&sim));
        h.set_master(true);
        let s = wait_for(&h, "checks", |s| s.checks >= 3).await;
        assert_eq!(s.holder_known, Some(true));
        assert_eq!(s.assigns, 0);
        assert!(
            sim.requests().iter().all(|r| r.method == "GET"),
            "only look-ups, no assign: {:?}",
            sim.requests()
        );
        h.shutdown().await;
    }

    #[tokio::test]
    async fn recheck_reclaims_the_ip_once_after_a_takeover() {
        let sim = Sim::start(None).await;
        let h = spawn(config(&sim));
        h.set_master(true);
        wait_for(&h, "first assign", |s| s.last_assign.is_some()).await;
        assert_eq!(sim.assigns(), 1);

        // Split brain: another droplet takes the IP while we stay Master.
        sim.set_holder(IP, Some(OTHER_DROPLET)).await.unwrap();
        let s = wait_for(&h, "re-assign", |s| {
            s.assigns == 2 && !s.in_flight && s.holder_known == Some(true)
        })
        .await;
        assert!(s.last_assign.unwrap().result.is_ok());
        let checks = h.status().checks;
        wait_for(&h, "re-checks", |s| s.checks >= checks + 3).await;
        assert_eq!(sim.assigns(), 2);
        assert_eq!(sim.holder(IP), Some(OUR_DROPLET));
        h.shutdown().await;
    }

    #[tokio::test]
    async fn master_flaps_never_overlap_assigns() {
        let sim = Sim::start(None).await;
        sim.faults(slow_answers(150, 3));
        let h = spawn(config(&sim));
        for i in 0..40u64 {
            h.set_master(i % 2 == 0);
            tokio::time::sleep(Duration::from_millis(5 + (i * 7) % 30)).await;
            // Someone keeps stealing the IP, so every check wants to assign.
            if i % 5 == 0 {
                sim.set_holder(IP, Some(OTHER_DROPLET)).await.unwrap();
            }
        }
        h.set_master(true);
        sim.set_holder(IP, Some(OTHER_DROPLET)).await.unwrap();
        poll_until("settled on us", || sim.holder(IP) == Some(OUR_DROPLET)).await;
        let s = wait_for(&h, "idle", |s| !s.in_flight).await;
        assert!(sim.assigns() >= 1);
        assert_eq!(s.assigns as usize, sim.assigns());
        assert_eq!(
            max_concurrent(&sim.posts()),
            1,
            "two assign requests at once"
        );
        // The simulator refuses an assign while another action on the IP
        // is unfinished ("pending event").
        let refused = sim
            .posts()
            .iter()
            .filter(|r| r.status.as_deref() == Some("422"))
            .count();
        assert_eq!(refused, 0, "assign started while another was unfinished");
        h.shutdown().await;
    }

    #[tokio::test]
    async fn losing_master_lets_a_running_assign_finish_without_retry() {
        let sim = Sim::start(None).await;
        sim.faults(slow_answers(300, 2));
        let h = spawn(config(&sim));
        h.set_master(true);
        wait_for(&h, "assign sent", |s| s.assigns == 1).await;
        h.set_master(false);
        let s = wait_for(&h, "assign finished", |s| s.last_assign.is_some()).await;
        assert!(s.last_assign.unwrap().result.is_ok());
        assert_eq!(sim.holder(IP), Some(OUR_DROPLET));
        // Someone else takes it: as Backup we must not react.
        sim.set_holder(IP, Some(OTHER_DROPLET)).await.unwrap();
        tokio::time::sleep(RECHECK * 4).await;
        assert_eq!(sim.assigns(), 1);
        h.shutdown().await;
    }

    #[tokio::test]
    async fn losing_master_stops_assign_retries() {
        let sim = Sim::start(None).await;
        sim.faults(FaultsUpdate {
            fail_5xx: Some(ALWAYS),
            fail_5xx_status: Some(503),
            fail_5xx_message: Some("busy".into()),
            ..FaultsUpdate::default()
        });
        let h = spawn(config(&sim));
        h.set_master(true);
        poll_until("assign sent", || sim.assigns() >= 1).await;
        h.set_master(false);
        let s = wait_for(&h, "assign given up", |s| s.last_assign.is_some()).await;
        let err = s.last_assign.unwrap().result.unwrap_err();
        assert!(err.contains("abandoned"), "{err}");
        let sent = sim.assigns();
        tokio::time::sleep(RECHECK * 4).await;
        assert_eq!(sim.assigns(), sent, "retried after losing mastership");
        assert_eq!(h.status().assigns, 1);
        h.shutdown().await;
    }

    #[tokio::test]
    async fn metadata_down_falls_back_to_the_api() {
        let sim = Sim::start(Some(OTHER_DROPLET)).await;
        sim.faults(metadata_hangs());
        let h = spawn(FloatingIpConfig {
            droplet_id: Some(OUR_DROPLET),
            ..config(&sim)
        });
        h.set_master(true);
        let s = wait_for(&h, "assign", |s| s.last_assign.is_some()).await;
        assert!(s.last_assign.unwrap().result.is_ok());
        assert_eq!(sim.holder(IP), Some(OUR_DROPLET));
        let checks = h.status().checks;
        let s = wait_for(&h, "re-checks", |s| s.checks >= checks + 2).await;
        assert_eq!(s.holder_known, Some(true));
        assert_eq!(sim.assigns(), 1);
        assert!(sim.count("GET", &format!("/v2/floating_ips/{IP}")) >= 3);
        h.shutdown().await;
    }

    #[tokio::test]
    async fn metadata_down_without_droplet_id_cannot_assign() {
        let sim = Sim::start(None).await;
        sim.faults(metadata_hangs());
        let h = spawn(config(&sim));
        h.set_master(true);
        let s = wait_for(&h, "failed check", |s| s.last_error.is_some()).await;
        assert!(s.last_error.unwrap().contains("droplet id unknown"));
        assert_eq!(s.holder_known, None);
        assert_eq!(sim.assigns(), 0);
        h.shutdown().await;
    }

    #[tokio::test]
    async fn unknown_holder_still_assigns_as_master() {
        let sim = Sim::start(None).await;
        sim.faults(metadata_hangs());
        // The holder lookup fails for good; the assign goes through.
        sim.script(vec![ScriptedFault::error(404, "not_found", "gone")]);
        let h = spawn(FloatingIpConfig {
            droplet_id: Some(OUR_DROPLET),
            ..config(&sim)
        });
        h.set_master(true);
        let s = wait_for(&h, "assign", |s| s.last_assign.is_some()).await;
        assert!(s.last_assign.unwrap().result.is_ok());
        assert_eq!(sim.assigns(), 1);
        h.shutdown().await;
    }

    #[tokio::test]
    async fn failover_through_faults_assigns_once() {
        let sim = Sim::start(Some(OTHER_DROPLET)).await;
        sim.faults(FaultsUpdate {
            fail_5xx: Some(2),
            rate_limit: Some(1),
            retry_after_secs: Some(1),
            drop: Some(1),
            ..FaultsUpdate::default()
        });
        let h = spawn(config(&sim));
        let start = Instant::now();
        h.set_master(true);
        let s = wait_for(&h, "assign", |s| s.last_assign.is_some()).await;
        let record = s.last_assign.unwrap();
        assert!(record.result.is_ok(), "{record:?}");
        assert!(
            start.elapsed() >= Duration::from_secs(1),
            "Retry-After not honoured"
        );
        assert_eq!(sim.holder(IP), Some(OUR_DROPLET));
        assert_eq!(s.droplet_id, Some(OUR_DROPLET));

        let checks = h.status().checks;
        wait_for(&h, "re-checks", |s| s.checks >= checks + 3).await;
        assert_eq!(sim.assign_actions(), 1);
        assert_eq!(h.status().assigns, 1);
        h.shutdown().await;
    }

    #[tokio::test]
    async fn metadata_503_uses_the_api_holder() {
        let sim = Sim::start(Some(OUR_DROPLET)).await;
        sim.faults(FaultsUpdate {
            metadata_down: Some(true),
            ..FaultsUpdate::default()
        });
        let h = spawn(FloatingIpConfig {
            droplet_id: Some(OUR_DROPLET),
            ..config(&sim)
        });
        h.set_master(true);
        let s = wait_for(&h, "checks", |s| s.checks >= 2).await;
        assert_eq!(s.holder_known, Some(true));
        assert_eq!(sim.assign_actions(), 0);
        h.shutdown().await;
    }

    #[test]
    fn config_validation_and_setup() {
        let mut cfg = FloatingIpConfig::with_token_file(IP, "/nonexistent/lbha/token");
        assert_eq!(cfg.recheck_interval, Duration::from_secs(10));
        assert_eq!(cfg.api_url, DEFAULT_API_URL);
        assert_eq!(cfg.metadata_url, DEFAULT_METADATA_URL);
        assert!(cfg.validate().is_ok());
        assert!(matches!(
            build_clients(&cfg),
            Err(SetupError::Token(TokenError::Read { .. }))
        ));
        cfg.recheck_interval = Duration::ZERO;
        assert_eq!(
            cfg.validate(),
            Err(InvalidFloatingIpConfig {
                field: "recheck_interval"
            })
        );

        let path = std::env::temp_dir().join(format!("lbha-cloud-{}-setup", std::process::id()));
        std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
        let cfg = FloatingIpConfig::with_token_file(IP, &path);
        let (md, api) = build_clients(&cfg).unwrap();
        assert_eq!(md.base_url(), DEFAULT_METADATA_URL);
        assert!(!format!("{api:?}").contains(TOKEN));
        std::fs::remove_file(path).unwrap();
    }
}
