//! Floating IP failover: a task that follows this node's VRRP mastership and
//! makes sure that, while we are Master, the floating IP points at our
//! droplet.
//!
//! - On becoming Master, and every `recheck_interval` while Master, it checks
//!   who holds the IP and assigns it to us when we do not hold it. The API
//!   decides (metadata lags an assign by seconds on DigitalOcean): it is
//!   asked alongside the metadata service, and metadata only stands in when
//!   the API cannot answer or does not show the holder. A holder the API
//!   does not show is unknown, never "unassigned": a Master that metadata
//!   says holds the IP does not assign because of it.
//! - Single flight: at most one check-and-assign runs at a time, so one agent
//!   never has two assigns in flight. Mastership changes during it are noted
//!   and acted on when it ends.
//! - Losing mastership does not cancel a running assign (the request may
//!   already be with DO), but its retries stop and no new one starts.
//! - Split brain (two Masters: the VRRP path is cut while both reach the
//!   API): a Master that held the IP during its mastership and finds it on
//!   another droplet D yields when D's agent outranks it (VRRP's election
//!   order, [`Router::outranks`]) and takes the IP back otherwise, so the
//!   two never fight. D's agent is the fresh heartbeat peer with droplet
//!   id D if there is one; else the master we took over from, as it last
//!   advertised; knowing nothing of it, we outrank it. Finding the IP
//!   elsewhere on becoming Master is an ordinary failover: the IP is taken.
//!   Yielding, the manager stays Master (VRRP's to change), stops
//!   assigning and says so in its status, until the peer's adverts come
//!   back (VRRP decides again, and the manager re-checks at once) or D no
//!   longer holds the IP. Adverts from another router while we are Master
//!   trigger a re-check at once (at most one a second), so that after a
//!   freeze or a false takeover the IP returns to the real Master without
//!   waiting for the next periodic re-check.
//! - A warm connection: while Backup, one cheap API request (the holder
//!   `GET`, no retries) every `keepalive_interval` keeps a connection to
//!   the API in the client's pool, so that a takeover's assign goes out on
//!   it: one round trip to DigitalOcean instead of three (TCP, TLS, the
//!   request). A Master's re-checks keep its connection warm anyway. A
//!   connection the far side closed is replaced at the next request.

use std::{future::Future, net::IpAddr, pin::Pin, sync::Arc, time::Duration};

use thiserror::Error;
use tokio::{sync::watch, task::JoinHandle, time::Instant};
use tracing::{debug, info, warn};

use lbha_config::{FloatingIpConfig, InvalidFloatingIpConfig};

use super::{
    api::{ApiClient, ApiError, ApiOptions, Assigned, DEFAULT_POOL_IDLE_TIMEOUT, Holder},
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
        ca_file: settings.ca_file.clone(),
        // Idle connections outlive the gap between two keep-alives.
        pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT
            .max(settings.keepalive_interval.saturating_mul(2)),
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
    /// The completed action's id (None: DO refused the assign because the
    /// IP already was ours), or the error's text.
    pub result: Result<Option<u64>, String>,
}

/// A VRRP router as the manager needs to rank it: what an election compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Router {
    /// Effective priority.
    pub priority: u8,
    /// Primary (advert source) address: breaks priority ties. An IPv6
    /// instance's is IPv6 (its link-local or unicast source).
    pub address: IpAddr,
}

impl Router {
    /// Whether `self` wins a VRRP election against `other` (higher
    /// priority, then higher address, compared as an unsigned integer as
    /// RFC 5798 section 6.4.3 does for either family). One election never
    /// mixes families; if two routers of different families are compared
    /// anyway, IPv6 ranks above IPv4 (an order, not a VRRP rule).
    pub fn outranks(&self, other: &Router) -> bool {
        (self.priority, address_rank(self.address)) > (other.priority, address_rank(other.address))
    }
}

/// An address as the tie-break compares it: family first, then value.
fn address_rank(address: IpAddr) -> (u8, u128) {
    match address {
        IpAddr::V4(v4) => (4, u32::from(v4).into()),
        IpAddr::V6(v6) => (6, u128::from(v6)),
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
    /// A planned handover moves the IP to this droplet: while set, a
    /// Master starts no check (it would take the IP back), and the status
    /// says so ([`FloatingIpStatus::handover_paused`]) once none runs.
    pub handover_to: Option<u64>,
    /// This mastership began with the old master's resignation (a
    /// shutdown, a fault, or a planned handover). After a handover the IP
    /// is ours already while metadata, which lags an assign by seconds,
    /// does not show it yet: so with a heartbeat (which a handover needs)
    /// the API decides at such a takeover (one round trip) instead of
    /// metadata's "not here" (see `who_holds`). Without one, no handover
    /// can have happened, and the takeover keeps the fast path.
    pub after_resignation: bool,
}

impl VrrpView {
    /// The agent on droplet `droplet`, as far as we know it: the fresh
    /// heartbeat peer with that droplet id, else (`last_master_counts`) the
    /// master we took over from.
    fn agent_on(&self, droplet: u64, last_master_counts: bool) -> Option<Router> {
        self.peers
            .iter()
            .find(|peer| peer.fresh && peer.droplet_id == droplet)
            .map(|peer| peer.router)
            .or(self.last_master.filter(|_| last_master_counts))
    }

    /// A router we know of that outranks us: a fresh heartbeat peer, or
    /// (`last_master_counts`) the master we took over from.
    fn outranked_by(&self, last_master_counts: bool) -> Option<Router> {
        let us = self.us?;
        self.peers
            .iter()
            .filter(|peer| peer.fresh)
            .map(|peer| peer.router)
            .chain(self.last_master.filter(|_| last_master_counts))
            .find(|router| router.outranks(&us))
    }
}

/// A split-brain yield: another Master's droplet holds the IP and its
/// agent outranks us, so we leave the IP there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Yielding {
    /// The droplet holding the IP.
    pub droplet_id: u64,
    /// Its agent, as we know it (priority and address).
    pub peer: Router,
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
    /// Split brain: we are Master but leave the IP with this peer.
    pub yielding_to: Option<Yielding>,
    /// Keep-alive requests sent while Backup (see the module's "warm
    /// connection").
    pub keepalives: u64,
    /// A handover paused the checks ([`VrrpView::handover_to`]) and none
    /// is running: the IP is the handover's to move.
    pub handover_paused: bool,
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

    /// Changes the view in place.
    pub fn update_view(&self, f: impl FnOnce(&mut VrrpView)) {
        self.master.send_modify(f);
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
    /// Starts the manager of `ip` as Backup, on a channel of its own; feed
    /// it with `set_master`.
    pub fn spawn(
        ip: IpAddr,
        config: &FloatingIpConfig,
        metadata: MetadataClient,
        api: ApiClient,
    ) -> FloatingIpHandle {
        let (master_tx, master_rx) = watch::channel(VrrpView::default());
        let (status, task) = Self::spawn_for(ip, config, metadata, api, master_rx);
        FloatingIpHandle {
            master: master_tx,
            status,
            task,
        }
    }

    /// Starts the manager of `ip` (the floating IPv4 or the reserved IPv6
    /// of `config`) on an existing mastership channel (the VRRP driver's);
    /// it stops when the channel's sender is dropped. Each address has a
    /// manager of its own (its own single flight, status and assigns); the
    /// settings, the token and the API client (and so its warm connection)
    /// are shared.
    pub fn spawn_for(
        ip: IpAddr,
        config: &FloatingIpConfig,
        metadata: MetadataClient,
        api: ApiClient,
        master: watch::Receiver<VrrpView>,
    ) -> (watch::Receiver<FloatingIpStatus>, JoinHandle<()>) {
        let (status_tx, status_rx) = watch::channel(FloatingIpStatus {
            droplet_id: config.droplet_id,
            ..FloatingIpStatus::default()
        });
        let ctx = Arc::new(Ctx {
            ip,
            keepalive: config.keepalive_interval,
            configured_droplet: config.droplet_id,
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
    /// The floating IPv4 or the reserved IPv6 this manager moves.
    ip: IpAddr,
    /// Zero: no keep-alive.
    keepalive: Duration,
    configured_droplet: Option<u64>,
    metadata: MetadataClient,
    api: ApiClient,
    status: watch::Sender<FloatingIpStatus>,
}

/// The soonest a peer's adverts trigger another check after the last one
/// started; repeated triggers that find nothing to do wait twice as long
/// each time, up to the re-check interval, so a peer that keeps
/// advertising (it does not hear us) cannot spend the token's rate limit.
const ADVERT_RECHECK_MIN: Duration = Duration::from_secs(1);

/// What one term as Master has taught the manager; forgotten when the
/// term ends.
#[derive(Clone, Copy, Debug, Default)]
struct Term {
    /// The IP was ours at some point of this term.
    held: bool,
    /// Peer adverts came while we were Master: ordinary VRRP decides
    /// again, so the master we took over from no longer says who outranks
    /// whom.
    last_master_stale: bool,
    yielding: Option<Yielding>,
}

/// What a check is given: our droplet id if known, the view and the term
/// as they were when it started.
struct CheckInput {
    cached: Option<u64>,
    view: VrrpView,
    term: Term,
}

/// What a check found.
#[derive(Clone, Copy, Debug, Default)]
struct CheckOutcome {
    /// Our droplet id, if it learned it.
    learned: Option<u64>,
    /// The IP is (now) ours.
    held: bool,
    /// It yields to a split-brain peer.
    yielding: Option<Yielding>,
    /// It assigned, or started or ended a yield: something changed.
    acted: bool,
    /// An action on the IP is pending and may be a peer's that outranks
    /// us: check again soon, when it may have ended.
    soon: bool,
}

type Job = Pin<Box<dyn Future<Output = CheckOutcome> + Send>>;

/// The running check, and what it started from.
struct Running {
    job: Job,
    /// The term it belongs to (see `run`'s `term_id`).
    term_id: u64,
    /// Peer adverts counted when it started.
    adverts: u64,
    /// Peer adverts asked for it.
    advert_triggered: bool,
}

async fn run(ctx: Arc<Ctx>, mut master_rx: watch::Receiver<VrrpView>, recheck: Duration) {
    let mut view = master_rx.borrow_and_update().clone();
    let mut droplet = ctx.configured_droplet;
    let mut running: Option<Running> = None;
    // Mastership (re)gained while a job ran: check again as soon as it ends
    // instead of waiting a whole interval.
    let mut rearm = false;
    let mut next_check = Instant::now();
    let mut term = Term::default();
    // Counts terms, so a check that ends in a later term than it started
    // in does not teach the new one.
    let mut term_id: u64 = 0;
    // Peer adverts: a re-check they asked for, how long such re-checks
    // keep apart, when the last advert came, when the last check started.
    let mut advert_check = false;
    let mut advert_gap = ADVERT_RECHECK_MIN;
    let mut last_advert: Option<Instant> = None;
    let mut last_check_start: Option<Instant> = None;
    // Checks in a row that found an action pending and wait for its end.
    let mut pending_checks: u32 = 0;
    // The Backup's keep-alive request in flight, and when the next is due
    // (one interval after start: the checks at start have just used the
    // connection).
    let mut warm: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = None;
    let mut next_warm = deadline_after(ctx.keepalive);
    ctx.status.send_modify(|s| s.master = view.is_master);
    info!(ip = %ctx.ip, master = view.is_master, "floating IP manager started");
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
                warn!(ip = %ctx.ip, error = %e, "cannot learn our droplet id yet; will retry when Master");
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
                let old = std::mem::replace(&mut view, master_rx.borrow_and_update().clone());
                if view.is_master != old.is_master {
                    info!(ip = %ctx.ip, master = view.is_master, "mastership changed");
                    if !view.is_master {
                        // The Master's requests have just used the connection.
                        next_warm = deadline_after(ctx.keepalive);
                    }
                }
                // A notification of nothing new is a Backup->Master flap the
                // watch folded (every sender only notifies changes).
                let folded = view == old;
                // A new term (or none): what the last one learned is about
                // another time. Taking over again sets `last_master` anew.
                if view.is_master != old.is_master
                    || folded
                    || (view.is_master && view.last_master != old.last_master)
                {
                    term = Term::default();
                    term_id += 1;
                    set_yielding(&ctx, None);
                }
                if view.is_master {
                    // Anything but the heartbeat's peers or the advert count
                    // changed (mastership, our rank, the master we took over
                    // from), or a folded flap (whose Backup half may have
                    // stopped an assign's retries): check now.
                    let same = VrrpView {
                        peers: view.peers.clone(),
                        peer_adverts_while_master: view.peer_adverts_while_master,
                        ..old.clone()
                    } == view;
                    if !same || folded {
                        if running.is_some() {
                            rearm = true;
                        } else {
                            next_check = Instant::now();
                        }
                    }
                }
                if view.peer_adverts_while_master > old.peer_adverts_while_master {
                    // A peer is back on the VRRP path: VRRP decides again.
                    let now = Instant::now();
                    if last_advert.is_none_or(|at| now.saturating_duration_since(at) > recheck) {
                        // Back after a silence, not advertising all along.
                        advert_gap = ADVERT_RECHECK_MIN;
                    }
                    last_advert = Some(now);
                    term.last_master_stale = true;
                    if let Some(peer) = term.yielding.take() {
                        info!(ip = %ctx.ip, holder = peer.droplet_id, peer = %peer.peer.address, "split brain over: the peer's adverts are back; re-checking");
                        set_yielding(&ctx, None);
                    }
                    if view.is_master {
                        advert_check = true;
                        if running.is_none() {
                            next_check = next_check.min(advert_due(last_check_start, advert_gap));
                        }
                    }
                }
                let paused = view.handover_to.is_some() && running.is_none();
                ctx.status.send_modify(|s| {
                    s.master = view.is_master;
                    s.handover_paused = paused;
                });
            }
            outcome = async {
                match running.as_mut() {
                    Some(r) => (&mut r.job).await,
                    None => std::future::pending().await,
                }
            } => {
                let Some(done) = running.take() else { continue };
                droplet = droplet.or(outcome.learned);
                if view.is_master && done.term_id == term_id {
                    term.held |= outcome.held;
                    if outcome.yielding.is_some() && view.peer_adverts_while_master > done.adverts {
                        // Decided before the peer's adverts came back: VRRP
                        // decides now, so check again.
                        rearm = true;
                    } else {
                        term.yielding = outcome.yielding;
                        set_yielding(&ctx, term.yielding);
                    }
                }
                if outcome.acted {
                    advert_gap = ADVERT_RECHECK_MIN;
                } else if done.advert_triggered {
                    advert_gap = (advert_gap * 2).min(recheck.max(ADVERT_RECHECK_MIN));
                }
                let paused = view.handover_to.is_some();
                ctx.status.send_modify(|s| {
                    s.in_flight = false;
                    s.droplet_id = droplet;
                    s.handover_paused = paused;
                });
                pending_checks = if outcome.soon { pending_checks + 1 } else { 0 };
                next_check = if std::mem::take(&mut rearm) {
                    Instant::now()
                } else if advert_check {
                    advert_due(last_check_start, advert_gap)
                } else if outcome.soon {
                    // As the API client waits out a pending event.
                    deadline_after(ctx.api.pending_backoff(pending_checks).min(recheck))
                } else {
                    deadline_after(recheck)
                };
            }
            () = async {
                match warm.as_mut() {
                    Some(w) => w.await,
                    None => std::future::pending().await,
                }
            } => {
                warm = None;
                next_warm = deadline_after(ctx.keepalive);
            }
            // Not while a check runs (its requests keep the connection
            // busy, and warm), nor while Master (its re-checks do).
            () = tokio::time::sleep_until(next_warm), if !ctx.keepalive.is_zero()
                && !view.is_master
                && running.is_none()
                && warm.is_none() => {
                ctx.status.send_modify(|s| s.keepalives += 1);
                warm = Some(Box::pin(keep_warm(ctx.clone())));
            }
            () = tokio::time::sleep_until(next_check), if view.is_master
                && running.is_none()
                && view.handover_to.is_none() => {
                last_check_start = Some(Instant::now());
                ctx.status.send_modify(|s| s.in_flight = true);
                let input = CheckInput { cached: droplet, view: view.clone(), term };
                running = Some(Running {
                    job: Box::pin(reconcile(ctx.clone(), input, master_rx.clone())),
                    term_id,
                    adverts: view.peer_adverts_while_master,
                    advert_triggered: std::mem::take(&mut advert_check),
                });
            }
        }
    }
}

/// One keep-alive request; its outcome is only logged (a failure means the
/// next request connects again).
async fn keep_warm(ctx: Arc<Ctx>) {
    let ip = ctx.ip;
    let started = Instant::now();
    match ctx.api.keep_warm(ip).await {
        Ok(holder) => {
            debug!(%ip, %holder, elapsed_ms = started.elapsed().as_millis() as u64, "API connection kept warm");
        }
        Err(e) => {
            info!(%ip, elapsed_ms = started.elapsed().as_millis() as u64, error = %e, "keeping the API connection warm failed; the next request connects again");
        }
    }
}

/// When a re-check that peer adverts asked for may start: `gap` after the
/// last check started, and not before now.
fn advert_due(last_check_start: Option<Instant>, gap: Duration) -> Instant {
    let now = Instant::now();
    last_check_start
        .and_then(|at| at.checked_add(gap))
        .map_or(now, |at| at.max(now))
}

fn set_yielding(ctx: &Ctx, yielding: Option<Yielding>) {
    ctx.status.send_if_modified(|s| {
        let changed = s.yielding_to != yielding;
        s.yielding_to = yielding;
        changed
    });
}

/// Who holds the IP, as a check sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// Ours.
    Ours,
    /// Ours, but an action on the IP is pending (another Master's assign,
    /// say) and will move it when it completes.
    OursPending,
    /// Droplet D, according to the API.
    Elsewhere(u64),
    /// Not ours: the API says unassigned, or metadata says not ours and
    /// the API cannot confirm either way.
    NotOurs,
    /// Neither source could tell.
    Unknown,
}

/// One check, and an assign when needed.
async fn reconcile(
    ctx: Arc<Ctx>,
    input: CheckInput,
    master: watch::Receiver<VrrpView>,
) -> CheckOutcome {
    let ip = ctx.ip;
    let CheckInput { cached, view, term } = input;
    let mut outcome = CheckOutcome::default();
    let droplet = match cached {
        Some(id) => id,
        None => match ctx.metadata.droplet_id().await {
            Ok(id) => {
                info!(%ip, droplet_id = id, "learned our droplet id from metadata");
                outcome.learned = Some(id);
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
                return outcome;
            }
        },
    };

    let maybe_handed_over = view.after_resignation && !view.peers.is_empty();
    let seen = who_holds(&ctx, droplet, !term.held && !maybe_handed_over).await;
    ctx.status.send_modify(|s| {
        s.checks += 1;
        s.holder_known = match seen {
            Seen::Ours | Seen::OursPending => Some(true),
            Seen::Elsewhere(_) | Seen::NotOurs => Some(false),
            Seen::Unknown => None,
        };
        s.last_error = match seen {
            Seen::Unknown => Some("holder unknown: metadata and API both failed".into()),
            _ => None,
        };
    });
    match seen {
        Seen::Ours => {
            debug!(%ip, droplet_id = droplet, "floating IP is ours");
            outcome.held = true;
            outcome.acted = term.yielding.is_some();
            return outcome;
        }
        Seen::OursPending => {
            outcome.held = true;
            if let Some(peer) = view.outranked_by(!term.last_master_stale) {
                // Perhaps that peer taking the IP back in a split brain:
                // asserting now would fight it. Once the action ends the
                // rules above decide.
                info!(%ip, droplet_id = droplet, peer = %peer.address, "an action on the floating IP is pending and a Master that outranks us may be behind it; checking again when it may have ended");
                outcome.soon = true;
                outcome.yielding = term.yielding;
                return outcome;
            }
            // The old master's late assign, say: it will move the IP away
            // when it completes. Ours waits for it and then wins.
            warn!(%ip, droplet_id = droplet, "an action on the floating IP is pending; asserting our assignment");
        }
        Seen::Elsewhere(holder) if term.held => {
            // Someone took the IP while we are Master: a split brain.
            let peer = view.agent_on(holder, !term.last_master_stale);
            match (peer, view.us) {
                (Some(peer), Some(us)) if peer.outranks(&us) => {
                    let yielding = Yielding {
                        droplet_id: holder,
                        peer,
                    };
                    if term.yielding != Some(yielding) {
                        warn!(%ip, droplet_id = droplet, holder, peer = %peer.address, peer_priority = peer.priority, our_priority = us.priority, "split brain: another Master's droplet holds the floating IP and its agent outranks us; yielding (not assigning)");
                        outcome.acted = true;
                    }
                    outcome.yielding = Some(yielding);
                    return outcome;
                }
                (peer, _) => {
                    warn!(%ip, droplet_id = droplet, holder, peer = ?peer.map(|p| p.address), "split brain: another droplet took the floating IP while we are Master and we outrank its agent; taking it back");
                }
            }
        }
        Seen::Elsewhere(holder) => {
            info!(%ip, droplet_id = droplet, holder, "floating IP is on another droplet; assigning");
        }
        Seen::NotOurs => {
            warn!(%ip, droplet_id = droplet, "floating IP is not on this droplet; assigning");
        }
        // We are Master and cannot tell: assigning to ourselves is harmless
        // if we already hold it, and is what a Master must do otherwise.
        Seen::Unknown => {
            warn!(%ip, droplet_id = droplet, "cannot tell who holds the floating IP; assigning anyway");
        }
    }
    if !master.borrow().is_master {
        info!(%ip, "no longer Master; not assigning");
        return outcome;
    }

    let started = Instant::now();
    outcome.acted = true;
    ctx.status.send_modify(|s| s.assigns += 1);
    info!(%ip, droplet_id = droplet, "floating IP assign requested");
    let result = ctx
        .api
        .assign_and_wait(ip, droplet, || master.borrow().is_master)
        .await;
    let duration = started.elapsed();
    let duration_ms = duration.as_millis() as u64;
    let record = match &result {
        Ok(Assigned::Completed(action)) => {
            info!(%ip, droplet_id = droplet, action_id = action.id, duration_ms, "floating IP assign completed");
            Ok(Some(action.id))
        }
        Ok(Assigned::AlreadyHeld(refusal)) => {
            info!(%ip, droplet_id = droplet, duration_ms, %refusal, "floating IP assign refused, but the IP is on this droplet already");
            Ok(None)
        }
        Err(e) => {
            warn!(%ip, droplet_id = droplet, duration_ms, error = %e, "floating IP assign failed");
            Err(e.to_string())
        }
    };
    outcome.held = record.is_ok();
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
    outcome
}

/// Who holds the IP. The API decides; it is asked together with the
/// metadata service (which lags an assign by seconds, and only says
/// whether *a* floating IP is on this droplet: DO allows one reserved IPv4
/// per droplet, so that is ours to manage). Metadata stands in when the API
/// fails or does not show the holder.
/// Who holds the IP: metadata and the API asked at once, the API deciding.
/// At a takeover (`takeover`: we have not held the IP in this mastership),
/// metadata saying "not ours" decides at once: the IP is not here, nobody's
/// rank matters yet, and waiting for the API would only delay the assign by
/// a round trip to DigitalOcean.
async fn who_holds(ctx: &Ctx, droplet: u64, takeover: bool) -> Seen {
    let ip = ctx.ip;
    // DO's metadata shows whether a reserved IPv4 is on this droplet
    // (`reserved_ip/ipv4/active`); lbha reads no such entry for a reserved
    // IPv6, so for one the API alone decides (no shortcut at takeover).
    if ip.is_ipv6() {
        return match ctx.api.holder_and_lock(ip).await {
            Ok((Holder::Droplet(id), locked)) if id == droplet && locked => Seen::OursPending,
            Ok((Holder::Droplet(id), _)) if id == droplet => Seen::Ours,
            Ok((Holder::Droplet(id), _)) => Seen::Elsewhere(id),
            Ok((Holder::Unassigned, _)) => Seen::NotOurs,
            Ok((Holder::Unknown, _)) => {
                warn!(%ip, "the API does not show who holds the reserved IPv6 (a token without droplet:read?)");
                Seen::Unknown
            }
            Err(e) => {
                warn!(%ip, error = %e, "cannot ask the API who holds the reserved IPv6");
                Seen::Unknown
            }
        };
    }
    let (metadata, api) = if takeover {
        // Metadata first: it is link-local, the API is a round trip away.
        let metadata = ctx.metadata.floating_ip_active().await;
        if matches!(metadata, Ok(false)) {
            debug!(%ip, droplet_id = droplet, "taking over: metadata says the floating IP is not here");
            return Seen::NotOurs;
        }
        (metadata, ctx.api.holder_and_lock(ip).await)
    } else {
        tokio::join!(
            ctx.metadata.floating_ip_active(),
            ctx.api.holder_and_lock(ip)
        )
    };
    let metadata = match metadata {
        Ok(active) => Some(active),
        Err(e) => {
            warn!(%ip, error = %e, "metadata unavailable; the API alone says who holds the floating IP");
            None
        }
    };
    match api {
        Ok((holder, locked)) => {
            debug!(%ip, %holder, locked, metadata_says_ours = ?metadata, "floating IP holder from the API");
            match holder {
                Holder::Droplet(id) if id == droplet && locked => Seen::OursPending,
                Holder::Droplet(id) if id == droplet => {
                    if metadata == Some(false) {
                        info!(%ip, droplet_id = droplet, "metadata does not show the floating IP on this droplet yet, but the API does: not assigning");
                    }
                    Seen::Ours
                }
                Holder::Droplet(id) => Seen::Elsewhere(id),
                Holder::Unassigned => Seen::NotOurs,
                // The token cannot see droplets (`droplet:read`): metadata
                // decides, and an unknown holder is no reason to assign.
                Holder::Unknown => match metadata {
                    Some(true) if locked => Seen::OursPending,
                    Some(true) => Seen::Ours,
                    Some(false) => Seen::NotOurs,
                    None => Seen::Unknown,
                },
            }
        }
        Err(e) => {
            warn!(%ip, error = %e, "cannot ask the API who holds the floating IP");
            // The API being unreachable is no reason to distrust metadata.
            match metadata {
                Some(true) => Seen::Ours,
                Some(false) => Seen::NotOurs,
                None => Seen::Unknown,
            }
        }
    }
}

/// `now + d`, saturating (see [`super::api::deadline_after`]).
fn deadline_after(d: Duration) -> Instant {
    super::api::deadline_after(d)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use lbha_dosim::{FaultsUpdate, ScriptedFault, max_concurrent};

    use super::*;
    use crate::{
        cloud::{
            secret::Secret,
            test_support::{
                ALWAYS, IP, OTHER_DROPLET, OUR_DROPLET, Sim, TOKEN, capture_logs, closed_port_url,
                metadata_hangs,
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
        spawn_with(cfg, |opts| opts)
    }

    /// [`spawn`] with the API client's test options changed by `f`.
    fn spawn_with(
        cfg: FloatingIpConfig,
        f: impl FnOnce(ApiOptions) -> ApiOptions,
    ) -> FloatingIpHandle {
        let api = ApiClient::new(
            f(ApiOptions {
                backoff_base: Duration::from_millis(20),
                backoff_max: Duration::from_millis(100),
                action_poll_interval: Duration::from_millis(20),
                ..api_options(&cfg)
            }),
            Secret::new(TOKEN),
        )
        .unwrap();
        let md =
            MetadataClient::with_timeout(cfg.metadata_url.clone(), cfg.metadata_timeout).unwrap();
        FloatingIpManager::spawn(IP.into(), &cfg, md, api)
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
        // Without the keep-alive, a Backup sends nothing at all.
        let h = spawn(FloatingIpConfig {
            keepalive_interval: Duration::ZERO,
            ..config(&sim)
        });
        h.set_master(false);
        tokio::time::sleep(RECHECK * 3).await;
        assert!(sim.requests().is_empty());
        assert_eq!(h.status().checks, 0);
        h.shutdown().await;
    }

    /// [`config`] for the simulator's HTTPS listener, trusting its CA,
    /// with a keep-alive every `keepalive`.
    fn https_config(sim: &Sim, keepalive: Duration) -> FloatingIpConfig {
        FloatingIpConfig {
            api_url: sim.https_url(),
            ca_file: Some(sim.ca_file()),
            keepalive_interval: keepalive,
            ..config(sim)
        }
    }

    const KEEPALIVE: Duration = Duration::from_millis(50);

    /// Waits until `n` more keep-alives than `after` were sent and answered.
    async fn keepalives_answered(h: &FloatingIpHandle, sim: &Sim, n: u64) {
        let after = h.status().keepalives;
        wait_for(h, "keep-alives", |s| s.keepalives > after + n).await;
        // The last one sent is still out: wait for it to end too.
        poll_until("keep-alives answered", || {
            sim.requests().iter().all(|r| r.finished_us.is_some())
        })
        .await;
    }

    #[tokio::test]
    async fn a_backup_keeps_a_connection_warm_and_the_takeover_assigns_on_it() {
        let sim = Sim::start_https(None).await;
        let h = spawn(https_config(&sim, KEEPALIVE));
        let started = Instant::now();
        keepalives_answered(&h, &sim, 3).await;
        let requests = sim.requests();
        assert!(
            requests
                .iter()
                .all(|r| r.is("GET", &format!("/v2/floating_ips/{IP}"))
                    && r.tls
                    && r.status.as_deref() == Some("200")),
            "only look-ups while Backup: {requests:?}"
        );
        // At one interval apart, not a flood.
        let most = (started.elapsed().as_millis() / KEEPALIVE.as_millis()) as usize + 1;
        assert!(requests.len() <= most, "{} > {most}", requests.len());
        assert!(
            sim.connections().iter().all(|c| *c == 1),
            "one kept-alive connection: {:?}",
            sim.connections()
        );

        h.set_master(true);
        let s = wait_for(&h, "assign", |s| s.last_assign.is_some()).await;
        assert!(s.last_assign.unwrap().result.is_ok());
        let posts = sim.posts();
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0].connection, 1, "the assign went out warm");
        assert_eq!(sim.state().api_connections, 1);
        // A Master sends no keep-alives (its re-checks keep it warm).
        let sent = h.status().keepalives;
        tokio::time::sleep(KEEPALIVE * 4).await;
        assert_eq!(h.status().keepalives, sent);
        h.shutdown().await;
    }

    #[tokio::test]
    async fn a_connection_the_api_closed_is_opened_again_before_the_takeover() {
        let sim = Sim::start_https(None).await;
        let h = spawn(https_config(&sim, KEEPALIVE));
        keepalives_answered(&h, &sim, 2).await;
        assert_eq!(sim.state().api_connections, 1);
        assert_eq!(sim.close_connections(), 1);
        keepalives_answered(&h, &sim, 2).await;
        assert_eq!(sim.state().api_connections, 2);
        assert!(
            sim.requests()
                .iter()
                .all(|r| r.status.as_deref() == Some("200")),
            "no keep-alive failed: {:?}",
            sim.requests()
        );
        h.set_master(true);
        wait_for(&h, "assign", |s| s.last_assign.is_some()).await;
        assert_eq!(sim.posts()[0].connection, 2, "the new connection, warm");
        assert_eq!(sim.state().api_connections, 2);
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

    /// A token without droplet:read: the API does not show the holder.
    /// That is not "unassigned": metadata says the IP is ours, so no assign.
    #[tokio::test]
    async fn a_holder_the_api_does_not_show_is_no_reason_to_assign() {
        let sim = Sim::start(Some(OUR_DROPLET)).await;
        sim.faults(FaultsUpdate {
            token_scopes: Some(Some(vec![
                "reserved_ip:read".into(),
                "reserved_ip:update".into(),
            ])),
            ..FaultsUpdate::default()
        });
        assert_master_leaves_the_ip_alone(&sim).await;
    }

    /// A Master that checks four times, finds the IP ours and assigns
    /// nothing.
    async fn assert_master_leaves_the_ip_alone(sim: &Sim) {
        let h = spawn(config(sim));
        h.set_master(true);
        let s = wait_for(&h, "checks", |s| s.checks >= 4).await;
        assert_eq!(s.holder_known, Some(true));
        assert_eq!((s.assigns, sim.assigns()), (0, 0));
        h.shutdown().await;
    }

    /// Metadata lags an assign by seconds on DO: after our own assign it
    /// still says "not ours" while the API shows us as the holder, and the
    /// re-checks assign nothing more.
    #[tokio::test]
    async fn metadata_lagging_our_assign_does_not_trigger_another() {
        let sim = Sim::start(Some(OTHER_DROPLET)).await;
        sim.faults(FaultsUpdate {
            metadata_lag_ms: Some(60_000),
            ..FaultsUpdate::default()
        });
        let h = spawn(config(&sim));
        h.set_master(true);
        let s = wait_for(&h, "the takeover's assign", |s| s.last_assign.is_some()).await;
        assert!(s.last_assign.unwrap().result.is_ok());
        let md = MetadataClient::new(sim.metadata_url()).unwrap();
        assert!(!md.floating_ip_active().await.unwrap(), "metadata lags");
        let checks = h.status().checks;
        let s = wait_for(&h, "re-checks", |s| s.checks >= checks + 3).await;
        assert_eq!(s.holder_known, Some(true));
        assert_eq!((s.assigns, sim.assigns()), (1, 1));
        h.shutdown().await;
    }

    /// A planned handover pauses a Master's checks: the IP moving to the
    /// peer is not taken back while the pause lasts, and ending it (a
    /// rollback) re-checks at once and takes the IP back.
    #[tokio::test]
    async fn a_handover_pauses_the_checks_and_its_end_takes_the_ip_back() {
        let sim = Sim::start(Some(OUR_DROPLET)).await;
        let h = spawn(config(&sim));
        h.set_view(master_view(Some(LOWER)));
        wait_for(&h, "the IP seen as ours", |s| {
            s.holder_known == Some(true) && !s.in_flight
        })
        .await;
        h.update_view(|v| v.handover_to = Some(OTHER_DROPLET));
        let s = wait_for(&h, "paused", |s| s.handover_paused).await;
        sim.set_holder(IP, Some(OTHER_DROPLET)).await.unwrap();
        tokio::time::sleep(RECHECK * 5).await;
        assert_eq!(h.status().checks, s.checks, "no check while paused");
        assert_eq!(sim.holder(IP), Some(OTHER_DROPLET));
        assert_eq!(sim.assigns(), 0);
        h.update_view(|v| v.handover_to = None);
        taken_back(&h, &sim).await;
        assert!(!h.status().handover_paused);
        assert_eq!(sim.assigns(), 1);
        h.shutdown().await;
    }

    /// After a resignation with a heartbeat (a handover: the old Master
    /// moved the IP here first) metadata still lags the assign; the
    /// takeover asks the API, which shows the IP here, and assigns nothing.
    /// Without the resignation, or without a heartbeat (no handover is
    /// possible: HAProxy's death resigns too, and must not cost a round
    /// trip), metadata's "not here" decides at once (and assigns).
    #[rstest::rstest]
    #[case::after_a_resignation(true, true, 0)]
    #[case::after_a_master_down(false, true, 1)]
    #[case::after_a_resignation_without_heartbeat(true, false, 1)]
    #[tokio::test]
    async fn a_takeover_after_a_resignation_trusts_the_api_over_lagging_metadata(
        #[case] after_resignation: bool,
        #[case] heartbeat: bool,
        #[case] assigns: u64,
    ) {
        let sim = Sim::start(Some(OTHER_DROPLET)).await;
        sim.faults(FaultsUpdate {
            metadata_lag_ms: Some(60_000),
            ..FaultsUpdate::default()
        });
        // The old Master's handover assign, to us.
        let api = crate::cloud::test_support::fast_client(&sim);
        api.assign_and_wait(IP, OUR_DROPLET, || true).await.unwrap();
        let md = MetadataClient::new(sim.metadata_url()).unwrap();
        assert!(!md.floating_ip_active().await.unwrap(), "metadata lags");
        let before = sim.assigns();
        let h = spawn(config(&sim));
        let peers = if heartbeat {
            vec![PeerRouter {
                droplet_id: OTHER_DROPLET,
                router: HIGHER,
                master: false,
                fresh: true,
            }]
        } else {
            Vec::new()
        };
        h.set_view(VrrpView {
            peers,
            after_resignation,
            ..master_view(Some(HIGHER))
        });
        let s = wait_for(&h, "a check", |s| s.checks >= 2 && !s.in_flight).await;
        assert_eq!(s.assigns, assigns);
        assert_eq!(sim.assigns() - before, assigns as usize);
        assert_eq!(sim.holder(IP), Some(OUR_DROPLET));
        h.shutdown().await;
    }

    /// A takeover does not wait for the API when metadata says the IP is
    /// elsewhere: the assign is the first request DigitalOcean sees.
    #[tokio::test]
    async fn a_takeover_assigns_without_asking_the_api_first() {
        let sim = Sim::start(Some(OTHER_DROPLET)).await;
        let h = spawn(config(&sim));
        h.set_master(true);
        wait_for(&h, "the assign", |s| s.last_assign.is_some()).await;
        let first = sim.requests().into_iter().next().expect("a request");
        assert_eq!(
            (first.method.as_str(), first.path.ends_with("/actions")),
            ("POST", true),
            "{first:?}"
        );
        h.shutdown().await;
    }

    /// DO refusing (422) to assign the IP to the droplet that holds it is
    /// a success, once the API shows us as the holder.
    #[tokio::test]
    async fn a_422_for_the_ip_we_hold_is_success() {
        let sim = Sim::start(Some(OUR_DROPLET)).await;
        sim.faults(FaultsUpdate {
            same_holder_assign: Some(lbha_dosim::SameHolderAssign::Reject),
            ..metadata_hangs()
        });
        // The first look-up fails: the Master cannot tell, and assigns.
        sim.script(vec![ScriptedFault::error(404, "not_found", "gone")]);
        let h = spawn(FloatingIpConfig {
            droplet_id: Some(OUR_DROPLET),
            ..config(&sim)
        });
        h.set_master(true);
        let s = wait_for(&h, "assign", |s| s.last_assign.is_some()).await;
        assert_eq!(s.last_assign.unwrap().result, Ok(None));
        assert_eq!(s.holder_known, Some(true));
        let refused = sim.posts();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].status.as_deref(), Some("422"));
        let checks = h.status().checks;
        wait_for(&h, "re-checks", |s| s.checks >= checks + 2).await;
        assert_eq!((h.status().assigns, sim.assign_actions()), (1, 0));
        h.shutdown().await;
    }

    #[tokio::test]
    async fn an_errored_assign_is_assigned_again() {
        let sim = Sim::start(Some(OTHER_DROPLET)).await;
        sim.faults(FaultsUpdate {
            complete_after_polls: Some(1),
            action_errors: Some(1),
            ..FaultsUpdate::default()
        });
        let h = spawn(config(&sim));
        h.set_master(true);
        let s = wait_for(&h, "assign", |s| s.last_assign.is_some()).await;
        assert!(s.last_assign.unwrap().result.is_ok());
        assert_eq!(s.assigns, 1, "one assign, two actions");
        assert_eq!(sim.assign_actions(), 2);
        assert_eq!(sim.holder(IP), Some(OUR_DROPLET));
        h.shutdown().await;
    }

    /// Another action stays pending for the whole operation: the failover
    /// spends at most 20 requests (here 10 assign requests, 250 ms doubling
    /// to 5 s in 30 s, at a tenth of the scale; a takeover asks no API
    /// look-up first when metadata says the IP is elsewhere); polling every
    /// 250 ms it spent 120.
    #[tokio::test]
    async fn waiting_out_a_pending_event_costs_at_most_twenty_requests() {
        let sim = Sim::start(Some(OTHER_DROPLET)).await;
        // An action nobody polls to its end keeps the IP locked.
        sim.faults(FaultsUpdate {
            complete_after_polls: Some(u32::MAX),
            ..FaultsUpdate::default()
        });
        let other = ApiClient::new(api_options(&config(&sim)), Secret::new(TOKEN)).unwrap();
        other.assign(IP, OTHER_DROPLET).await.unwrap();
        let before = sim.requests().len();
        let h = spawn_with(config(&sim), |opts| ApiOptions {
            pending_backoff_base: Duration::from_millis(25),
            pending_backoff_max: Duration::from_millis(500),
            ..opts
        });
        h.set_master(true);
        let s = wait_for(&h, "the assign given up", |s| s.last_assign.is_some()).await;
        // The next check is a re-check interval away.
        let spent = sim.requests().len() - before;
        let err = s.last_assign.unwrap().result.unwrap_err();
        assert!(err.contains("pending event"), "{err}");
        assert!(spent <= 20, "{spent} requests");
        assert_eq!(sim.posts().len() - 1, 10, "assign requests");
        assert_eq!(spent, 10, "the assign requests");
        h.shutdown().await;
    }

    const US: Router = Router {
        priority: 100,
        address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
    };
    const HIGHER: Router = Router {
        priority: 200,
        address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
    };
    const LOWER: Router = Router {
        priority: 50,
        address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)),
    };

    /// An IPv6 instance's tie-break uses its IPv6 source address (not a
    /// placeholder that makes every IPv6 router equal), ordered as RFC
    /// 5798 orders addresses: by value, across the whole 128 bits.
    #[test]
    fn ipv6_routers_break_priority_ties_by_address() {
        let router = |address: &str| Router {
            priority: 100,
            address: address.parse().unwrap(),
        };
        let (low, high) = (router("fe80::1"), router("fe80::2"));
        assert!(high.outranks(&low));
        assert!(!low.outranks(&high));
        assert!(!low.outranks(&low));
        // The top 64 bits count: a 32-bit comparison would tie these.
        assert!(router("fd00::1").outranks(&router("fc00::ffff:ffff")));
        // Priority still comes first.
        let above = Router {
            priority: 101,
            ..low
        };
        assert!(above.outranks(&high));
    }

    fn master_view(last_master: Option<Router>) -> VrrpView {
        VrrpView {
            is_master: true,
            us: Some(US),
            last_master,
            ..VrrpView::default()
        }
    }

    /// A Master holding the IP (its first check saw it), then another
    /// droplet takes the IP: the split brain the rules are about.
    async fn held_then_taken(cfg: FloatingIpConfig, sim: &Sim, view: VrrpView) -> FloatingIpHandle {
        let h = spawn(cfg);
        h.set_view(view);
        wait_for(&h, "the IP seen as ours", |s| {
            s.checks >= 1 && s.holder_known == Some(true) && !s.in_flight
        })
        .await;
        sim.set_holder(IP, Some(OTHER_DROPLET)).await.unwrap();
        h
    }

    /// Waits for the manager's assign, which must have put the IP back on
    /// our droplet and ended any yield.
    async fn taken_back(h: &FloatingIpHandle, sim: &Sim) {
        let s = wait_for(h, "the IP taken back", |s| s.last_assign.is_some()).await;
        assert!(s.last_assign.unwrap().result.is_ok());
        assert_eq!(s.yielding_to, None);
        assert_eq!(sim.holder(IP), Some(OUR_DROPLET));
    }

    fn warnings(logs: &Arc<std::sync::Mutex<Vec<u8>>>, what: &str) -> usize {
        String::from_utf8_lossy(&logs.lock().unwrap())
            .matches(what)
            .count()
    }

    #[tokio::test]
    async fn split_brain_yields_when_the_master_we_took_over_from_outranks_us() {
        let (_guard, logs) = capture_logs();
        let sim = Sim::start(Some(OUR_DROPLET)).await;
        let h = held_then_taken(config(&sim), &sim, master_view(Some(HIGHER))).await;
        let s = wait_for(&h, "yielding", |s| s.yielding_to.is_some()).await;
        assert_eq!(
            s.yielding_to,
            Some(Yielding {
                droplet_id: OTHER_DROPLET,
                peer: HIGHER
            })
        );
        assert!(s.master, "still VRRP Master");
        let checks = s.checks;
        wait_for(&h, "re-checks", |s| s.checks >= checks + 4).await;
        assert_eq!((h.status().assigns, sim.assigns()), (0, 0));
        assert_eq!(sim.holder(IP), Some(OTHER_DROPLET));
        assert_eq!(
            warnings(&logs, "split brain: another Master"),
            1,
            "logged once"
        );
        h.shutdown().await;
    }

    #[tokio::test]
    async fn split_brain_takes_the_ip_back_from_a_master_we_outrank() {
        let sim = Sim::start(Some(OUR_DROPLET)).await;
        let h = held_then_taken(config(&sim), &sim, master_view(Some(LOWER))).await;
        taken_back(&h, &sim).await;
        assert_eq!(sim.assigns(), 1);
        h.shutdown().await;
    }

    /// Nothing known of the other droplet's agent: we are Master and nobody
    /// told us otherwise.
    #[tokio::test]
    async fn split_brain_takes_the_ip_back_when_nothing_is_known() {
        let sim = Sim::start(Some(OUR_DROPLET)).await;
        let h = held_then_taken(config(&sim), &sim, master_view(None)).await;
        taken_back(&h, &sim).await;
        h.shutdown().await;
    }

    /// A fresh heartbeat peer on the holding droplet says who its agent is,
    /// whatever the master we took over from was; a stale one does not.
    #[tokio::test]
    async fn a_fresh_heartbeat_peer_is_the_holders_agent() {
        let sim = Sim::start(Some(OUR_DROPLET)).await;
        let peer = PeerRouter {
            droplet_id: OTHER_DROPLET,
            router: HIGHER,
            master: true,
            fresh: true,
        };
        let view = VrrpView {
            peers: vec![peer],
            ..master_view(Some(LOWER))
        };
        let h = held_then_taken(config(&sim), &sim, view).await;
        let s = wait_for(&h, "yielding", |s| s.yielding_to.is_some()).await;
        assert_eq!(s.yielding_to.unwrap().peer, HIGHER);
        // Its heartbeat goes stale: the master we took over from decides.
        h.update_view(|v| v.peers[0].fresh = false);
        taken_back(&h, &sim).await;
        h.shutdown().await;
    }

    /// The peer's adverts come back while we yield: VRRP decides again
    /// (they are adverts of a router we beat), so the manager re-checks at
    /// once rather than at the next re-check, and takes the IP back.
    #[tokio::test]
    async fn a_yield_ends_when_the_peers_adverts_return() {
        let sim = Sim::start(Some(OUR_DROPLET)).await;
        let cfg = FloatingIpConfig {
            recheck_interval: Duration::from_secs(30),
            ..config(&sim)
        };
        let h = held_then_taken(cfg, &sim, master_view(Some(HIGHER))).await;
        // Our rank changing is a reason to look now.
        h.update_view(|v| {
            v.us = Some(Router {
                priority: 101,
                ..US
            });
        });
        wait_for(&h, "yielding", |s| s.yielding_to.is_some() && !s.in_flight).await;
        let asked = Instant::now();
        h.update_view(|v| v.peer_adverts_while_master += 1);
        taken_back(&h, &sim).await;
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "re-checked {:?} later",
            asked.elapsed()
        );
        h.shutdown().await;
    }

    #[tokio::test]
    async fn a_yield_ends_when_the_peer_no_longer_holds_the_ip() {
        let sim = Sim::start(Some(OUR_DROPLET)).await;
        let h = held_then_taken(config(&sim), &sim, master_view(Some(HIGHER))).await;
        wait_for(&h, "yielding", |s| s.yielding_to.is_some()).await;
        sim.set_holder(IP, None).await.unwrap();
        taken_back(&h, &sim).await;
        h.shutdown().await;
    }

    /// Adverts from a peer while we are Master (a frozen node thawed, a
    /// false takeover): the IP comes back at once, not at the next
    /// re-check; and however many adverts come, at most one check a second
    /// and never two at once.
    #[tokio::test]
    async fn peer_adverts_recheck_at_once_at_most_once_a_second() {
        let sim = Sim::start(Some(OUR_DROPLET)).await;
        sim.faults(FaultsUpdate {
            delay_ms: Some(150),
            ..FaultsUpdate::default()
        });
        let h = spawn(FloatingIpConfig {
            recheck_interval: Duration::from_secs(30),
            ..config(&sim)
        });
        h.set_view(master_view(None));
        wait_for(&h, "first check", |s| s.checks == 1 && !s.in_flight).await;
        // The peer took the IP while we were frozen, and advertises.
        sim.set_holder(IP, Some(OTHER_DROPLET)).await.unwrap();
        let thawed = Instant::now();
        h.update_view(|v| v.peer_adverts_while_master += 1);
        let s = wait_for(&h, "taken back", |s| {
            s.last_assign.is_some() && !s.in_flight
        })
        .await;
        assert!(s.last_assign.unwrap().result.is_ok());
        assert!(
            thawed.elapsed() < Duration::from_secs(3),
            "{:?}",
            thawed.elapsed()
        );

        let checks = h.status().checks;
        let storm = Instant::now();
        while storm.elapsed() < Duration::from_millis(1500) {
            h.update_view(|v| v.peer_adverts_while_master += 1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let during = h.status().checks - checks;
        assert!(
            (1..=2).contains(&during),
            "{during} checks in 1.5 s of adverts"
        );
        assert_eq!(max_concurrent(&sim.requests()), 1, "two checks at once");
        assert_eq!(sim.assigns(), 1);
        h.shutdown().await;
    }

    /// An action is pending on our IP. With a Master we know of that
    /// outranks us, it may be that Master taking the IP back: no assign
    /// against it; once it ends, the split-brain rules decide (here: yield).
    /// Knowing of no such Master, ours is queued behind it, as before.
    #[tokio::test]
    async fn a_pending_action_is_not_fought_when_an_outranking_master_may_be_behind_it() {
        for (last_master, fights) in [(Some(HIGHER), false), (None, true)] {
            let sim = Sim::start(Some(OUR_DROPLET)).await;
            sim.faults(FaultsUpdate {
                complete_after_polls: Some(1),
                ..FaultsUpdate::default()
            });
            let other = ApiClient::new(api_options(&config(&sim)), Secret::new(TOKEN)).unwrap();
            let pending = other.assign(IP, OTHER_DROPLET).await.unwrap();
            let h = spawn(config(&sim));
            h.set_view(master_view(last_master));
            wait_for(&h, "checks", |s| s.checks >= 3).await;
            let asserted = sim.assigns() > 1;
            assert_eq!(asserted, fights, "{last_master:?}: {:?}", sim.posts());
            // The other Master's action ends (its first poll ends it).
            other.action(IP, pending.id).await.unwrap();
            if fights {
                poll_until("ours after it", || sim.holder(IP) == Some(OUR_DROPLET)).await;
            } else {
                let s = wait_for(&h, "yielding", |s| s.yielding_to.is_some()).await;
                assert_eq!(s.yielding_to.unwrap().peer, HIGHER);
                assert_eq!(sim.assigns(), 1, "only the other Master's");
                assert_eq!(sim.holder(IP), Some(OTHER_DROPLET));
            }
            h.shutdown().await;
        }
    }

    /// The target: the VRRP path between two Masters is cut while both
    /// reach the API. The backup takes over (1 assign), the higher node
    /// takes the IP back (2), then the backup yields and nothing more
    /// happens; after the heal the IP is on the Master with no assign.
    #[tokio::test]
    async fn two_masters_settle_after_at_most_two_assigns() {
        let sim = Sim::start(Some(OUR_DROPLET)).await;
        // lb1, on our droplet: Master from the start, priority 200.
        let lb1 = spawn(config(&sim));
        let lb1_view = VrrpView {
            us: Some(HIGHER),
            ..master_view(None)
        };
        lb1.set_view(lb1_view);
        wait_for(&lb1, "lb1 holds the IP", |s| s.holder_known == Some(true)).await;
        // lb2, on the other droplet (metadata is its own: here unreachable,
        // so the API alone tells it), took over from lb1 when the adverts
        // stopped.
        let lb2 = spawn(FloatingIpConfig {
            droplet_id: Some(OTHER_DROPLET),
            metadata_url: closed_port_url().await,
            ..config(&sim)
        });
        lb2.set_view(master_view(Some(HIGHER)));
        wait_for(&lb2, "lb2 yields", |s| s.yielding_to.is_some()).await;
        poll_until("the IP back on lb1", || sim.holder(IP) == Some(OUR_DROPLET)).await;
        let (c1, c2) = (lb1.status().checks, lb2.status().checks);
        wait_for(&lb1, "lb1 re-checks", |s| s.checks >= c1 + 5).await;
        wait_for(&lb2, "lb2 re-checks", |s| s.checks >= c2 + 5).await;
        let actions: Vec<_> = sim.state().actions.iter().map(|a| a.droplet_id).collect();
        assert_eq!(
            actions,
            [Some(OTHER_DROPLET), Some(OUR_DROPLET)],
            "the takeover, then lb1 taking it back"
        );
        assert_eq!(
            lb2.status().yielding_to,
            Some(Yielding {
                droplet_id: OUR_DROPLET,
                peer: HIGHER
            })
        );

        // The heal: lb2 hears lb1 and becomes Backup, lb1 hears lb2.
        lb2.set_master(false);
        lb1.update_view(|v| v.peer_adverts_while_master += 1);
        let c1 = lb1.status().checks;
        wait_for(&lb1, "lb1 re-checks", |s| s.checks >= c1 + 3).await;
        assert_eq!(sim.assign_actions(), 2);
        assert_eq!(sim.holder(IP), Some(OUR_DROPLET));
        assert_eq!(lb2.status().yielding_to, None);
        lb1.shutdown().await;
        lb2.shutdown().await;
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
            Err(InvalidFloatingIpConfig::ZeroDuration {
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
