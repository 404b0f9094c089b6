//! Runs the instances of one interface: feeds their state machines from the
//! receive path, timers and tracked checks, and carries out what they decide.
//!
//! The XDP program queues steady adverts without waking us, and its kernel
//! timer reports when a VRID's adverts stop for the instance's
//! `down_timer_adverts` intervals (its master-down interval less Skew_Time).
//! So a backup following a healthy master sleeps (up to a backstop of a second past its
//! master-down deadline, in case the kernel timer could not be armed), and
//! wakes when something changed or the master went quiet; it then drains
//! what was queued (each advert with its kernel timestamp) and from there
//! keeps its exact master-down deadline: the same decisions as waking on
//! every advert, with almost none of the wakeups. On the raw-socket path,
//! which has no such timer, it wakes at every master-down deadline.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc, time::Duration};

use lbha_common::{
    AdvertEvent,
    event::{VridKey, change, silence_timer},
    vrrp::encode::Advert,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    clock::monotonic_ns,
    cloud::{FloatingIpStatus, Mastership, MastershipOf, Router},
    config,
    heartbeat::{
        self, PeerTable,
        wire::{PeerState, Record},
    },
    recv::{
        AdvertReceiver,
        ah::{AhCounter, lock},
    },
    status::{ADVERT_LATENESS_BUCKETS, Histogram, Telemetry},
    sys::{firewall, timer::DeadlineTimer},
    vrrp::{
        garp::GarpSchedule,
        link::LinkStates,
        machine::{Action, Ignored, Machine, Params, Reason, ReceivedAdvert, State},
        net::{Addresses, AdvertOut, AdvertSocket, Batch, GarpSender},
        notify::NotifyJob,
        notify_fifo::NotifyFifos,
        sync::{Follow, MemberReport, SyncHub, follow},
        track::{FileWeighted, Weighted, effective_priority_with_files},
        track_file::FileValues,
    },
};

/// How tracked checks weigh on one instance: (check index, weight, reverse).
pub type TrackRefs = Vec<(usize, i32, bool)>;

/// One running instance.
pub struct InstanceRuntime {
    pub config: config::Instance,
    pub machine: Machine,
    sender: Box<dyn AdvertOut>,
    tracks: TrackRefs,
    /// Its track files: (name, weight, reverse), resolved from the
    /// `[[track_file]]`s' defaults.
    files: Vec<(String, i32, bool)>,
    /// A change of the effective priority for the notify FIFOs (keepalived
    /// `notify_priority_changes`): the state then, the new priority.
    priority_notice: Option<(State, u8)>,
    /// Its (family, VRID): which adverts of the receive path are its own.
    key: VridKey,
    vips: Vec<IpAddr>,
    /// Whether the checks (not the link) were failing at the last update.
    faulted_by_checks: bool,
    /// A fault of its own (checks, tracked interfaces, its link) at the
    /// last update; what its sync group hears.
    own_fault: bool,
    /// Its sync group is in FAULT (so is the instance, fault or not).
    group_fault: bool,
    /// In Fault only because of its sync group at the last update.
    faulted_by_group: bool,
    /// What its sync group was last told (None: not yet; members only).
    sync_reported: Option<MemberReport>,
    /// A member of a sync group.
    in_group: bool,
    /// The kernel reported this VRID silent since the last advert we processed.
    silence_reported: bool,
    /// The kernel said it could not arm this VRID's silence timer (and has
    /// not said since that it could): its master-down deadline is kept
    /// here, as on the raw-socket path.
    kernel_timer_refused: bool,
    /// Opened at start (when there are VIPs) and kept; see [`GarpSender`].
    garp: Option<GarpSender>,
    /// The addresses whose packets the nftables rules drop now (accept
    /// mode off, as Master); removed on leaving Master.
    blocked: Vec<firewall::Blocked>,
    /// The announcements still to come as Master (keepalived's `garp_*`).
    garp_schedule: GarpSchedule,
    /// As Master: the deadline of the advert about to be sent, so its
    /// lateness can be measured when it goes out.
    advert_due: Option<u64>,
    /// The effective priority changed since the floating-IP view was last
    /// published.
    priority_changed: bool,
    /// How late this instance's adverts left as Master (seconds), kept here
    /// and handed to telemetry with the counters, about once a second.
    lateness: (Histogram, f64),
    lateness_changed: bool,
    /// What status and the heartbeat were last told of this instance: only
    /// a change is published again (with a thousand instances, publishing
    /// all of them at every wakeup would cost more than the adverts).
    published: Option<Published>,
    /// The master's last advert (kernel time) as status was last told it:
    /// it changes at every wakeup of a backup, so it alone is updated
    /// (without the rest of [`Published`]), and on the XDP path at most
    /// once per [`ADVERT_TIME_REFRESH_NS`].
    published_advert_ns: Option<u64>,
    /// When `published_advert_ns` was last copied into telemetry.
    advert_published_at_ns: u64,
    /// Where telemetry's list held this instance last time.
    status_slot: usize,
    /// keepalived's `auth_type AH`: the sequence counter the instance's
    /// sender and the AH socket share. Its adverts never reach the
    /// kernel's fast path, so the kernel reports no silence for it.
    pub ah: Option<AhCounter>,
}

/// The fields of an instance that status and the heartbeat show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Published {
    state: State,
    priority: u8,
    master: Option<IpAddr>,
    partitioned: bool,
}

/// How long past its master-down deadline a backup following a healthy
/// master may sleep when the kernel reports silence: only matters if the
/// kernel's timer failed (counted as `silence_timer_errors`) or a change
/// was lost to a full ring buffer.
const SILENCE_BACKSTOP_NS: u64 = 1_000_000_000;

/// Backstop wakeups fall on a grid of half the backstop on the monotonic
/// clock, so the instances of an interface wake together (with a thousand
/// VRIDs, one wakeup per grid step instead of one per instance, each of
/// which would also walk every instance): at least half a backstop and at
/// most a whole one past the deadline.
const BACKSTOP_GRID_NS: u64 = SILENCE_BACKSTOP_NS / 2;

/// How often a Backup copies its master's latest advert time into telemetry
/// when nothing else it shows changed and the kernel keeps that time where
/// status reads it when asked (`LAST_ADVERT`). Copying it at every wakeup
/// cost a lock and a name comparison per instance, about 40 times a second
/// for each of 1,020 VRIDs in the scale bench.
const ADVERT_TIME_REFRESH_NS: u64 = 1_000_000_000;

fn backstop_after(deadline: u64) -> u64 {
    (deadline + BACKSTOP_GRID_NS).div_ceil(BACKSTOP_GRID_NS) * BACKSTOP_GRID_NS
}

/// The VRRP advertisement interval of an instance in centiseconds.
pub fn interval_cs(instance: &config::Instance) -> u16 {
    let cs = instance.advert_interval.as_millis() / 10;
    cs.clamp(1, 0x0fff) as u16
}

impl InstanceRuntime {
    pub fn new(
        config: config::Instance,
        sender: impl AdvertOut + 'static,
        tracks: TrackRefs,
    ) -> Self {
        let params = Params {
            version: config.version,
            advert_interval_cs: interval_cs(&config),
            preempt: config.preempt,
            preempt_delay_ns: config.preempt_delay.as_nanos() as u64,
            primary_addr: sender.source(),
            down_timer_adverts: config.down_timer_adverts,
            lower_prio_no_advert: config.lower_prio_no_advert,
            higher_prio_send_advert: config.higher_prio_send_advert,
        };
        let machine = Machine::new(params, config.priority);
        // What the adverts list: `virtual_ipaddress_excluded` addresses are
        // held by the master too, but not advertised (keepalived's rule).
        let vips: Vec<IpAddr> = config
            .virtual_addresses
            .iter()
            .filter(|v| !v.excluded)
            .map(|v| v.address)
            .collect();
        let key = vrid_key(&config);
        let garp = if vips_by_device(&config).contains_key(config.vip_interface()) {
            GarpSender::open(config.vip_interface())
                .inspect_err(|error| tracing::warn!(instance = %config.name, %error, "no gratuitous ARP socket yet; retrying at takeover"))
                .ok()
        } else {
            None
        };
        Self {
            config,
            machine,
            sender: Box::new(sender),
            tracks,
            files: Vec::new(),
            priority_notice: None,
            key,
            vips,
            faulted_by_checks: false,
            own_fault: false,
            group_fault: false,
            faulted_by_group: false,
            sync_reported: None,
            in_group: false,
            silence_reported: false,
            kernel_timer_refused: false,
            garp,
            blocked: Vec::new(),
            garp_schedule: GarpSchedule::default(),
            advert_due: None,
            priority_changed: false,
            lateness: (Histogram::default(), 0.0),
            lateness_changed: false,
            published: None,
            published_advert_ns: None,
            advert_published_at_ns: 0,
            status_slot: usize::MAX,
            ah: None,
        }
    }

    /// When the loop must wake for this instance. `kernel_reports_silence`:
    /// the receive path wakes us when the VRID's adverts stop.
    fn wake_at(&self, kernel_reports_silence: bool) -> Option<u64> {
        // AH adverts are verified in user space: the kernel never sees one
        // accepted, so it cannot tell when they stop.
        let kernel_reports_silence =
            kernel_reports_silence && self.ah.is_none() && !self.kernel_timer_refused;
        let machine = self.machine.next_deadline().map(|deadline| {
            if kernel_reports_silence && !self.silence_reported && self.machine.follows_master() {
                backstop_after(deadline)
            } else {
                deadline
            }
        });
        [machine, self.garp_schedule.next_due()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Sends `sets` gratuitous ARPs (IPv4) and unsolicited Neighbor
    /// Advertisements (IPv6) for every virtual address, on each address's
    /// own interface, as keepalived does.
    fn announce(&self, sets: u32) {
        if sets == 0 {
            return;
        }
        let config = &self.config;
        for (device, vips) in vips_by_device(config) {
            // The instance's interface has its socket from the start; if
            // that failed, and for another `dev`, one for this burst
            // (slower: closing it stalls the thread briefly).
            let fallback;
            let garp = if device == config.vip_interface()
                && let Some(garp) = &self.garp
            {
                Some(garp)
            } else {
                fallback = GarpSender::open(device)
                    .inspect_err(|error| tracing::warn!(instance = %config.name, %error, device, "gratuitous ARP / neighbor advertisement not sent"))
                    .ok();
                fallback.as_ref()
            };
            let Some(garp) = garp else { continue };
            for _ in 0..sets {
                if let Err(error) = garp.send(&vips) {
                    tracing::warn!(instance = %config.name, %error, device, "gratuitous ARP / neighbor advertisement not sent");
                    break;
                }
            }
        }
    }

    /// This instance as an election ranks it.
    fn router(&self) -> Router {
        router(self.machine.priority(), self.machine.params().primary_addr)
    }

    /// What our heartbeat says of this instance: its state and rank, keyed
    /// by its family and VRID through its primary address (an IPv4 and an
    /// IPv6 instance may share a VRID). None if that address is not of the
    /// instance's family, which no sender gives it (it would be read as the
    /// other family's router).
    fn heartbeat_record(&self) -> Option<Record> {
        let machine = &self.machine;
        let record = Record {
            vrid: self.config.vrid,
            state: PeerState::from_name(machine.state().name()),
            priority: machine.priority(),
            healthy: machine.state() != State::Fault,
            address: machine.params().primary_addr,
        };
        (record.key() == self.key).then_some(record)
    }

    /// Tells the machine until when the peers' heartbeats show this
    /// instance's master (of its family and VRID) alive.
    fn consult_heartbeat(&mut self, peers: &PeerTable) {
        self.machine
            .set_master_alive_until(peers.master_alive_until(self.key));
    }

    /// Sets the track files it weighs: (name, weight, reverse).
    pub fn with_files(mut self, files: Vec<(String, i32, bool)>) -> Self {
        self.files = files;
        self
    }

    fn advert(&self, priority: u8) -> Advert<'_> {
        Advert {
            version: self.config.version,
            vrid: self.config.vrid,
            priority,
            interval_cs: interval_cs(&self.config),
            auth_pass: self.config.auth_pass.as_deref().map(str::as_bytes),
            virtual_addrs: &self.vips,
        }
    }

    /// Applies the tracked checks' states and the link state: effective
    /// priority, and Fault when a weight-0 check fails or the link is down.
    #[cfg(test)]
    fn apply_tracks(&mut self, checks: &[bool], link_up: bool, now: u64) -> Vec<Action> {
        self.apply_tracks_with(checks, link_up, &BTreeMap::new(), &BTreeMap::new(), now)
    }

    /// The checks' and the tracked interfaces' (`links`: up/down by name,
    /// an unknown one counts as up) weights, the track files' (`files`:
    /// value by name; one missing or not tracked weighs nothing), and the
    /// instance's own link.
    fn apply_tracks_with(
        &mut self,
        checks: &[bool],
        link_up: bool,
        links: &BTreeMap<String, bool>,
        files: &BTreeMap<String, Option<i64>>,
        now: u64,
    ) -> Vec<Action> {
        // keepalived's `dont_track_primary`: its own link does not count.
        let link_up = link_up || self.config.dont_track_primary;
        let weighted: Vec<Weighted> = self
            .tracks
            .iter()
            .map(|&(index, weight, reverse)| Weighted {
                weight,
                reverse,
                up: checks.get(index).copied().unwrap_or(true),
            })
            .chain(self.config.track_interfaces.iter().map(|t| Weighted {
                weight: t.weight,
                reverse: t.reverse,
                up: links.get(&t.name).copied().unwrap_or(true),
            }))
            .collect();
        let tracked_files: Vec<FileWeighted> = self
            .files
            .iter()
            .filter_map(|(name, weight, reverse)| {
                Some(FileWeighted {
                    weight: *weight,
                    reverse: *reverse,
                    value: (*files.get(name)?)?,
                })
            })
            .collect();
        let (priority, check_fault) =
            effective_priority_with_files(self.config.priority, &weighted, &tracked_files);
        let own_fault = check_fault || !link_up;
        let fault = own_fault || self.group_fault;
        let in_fault = self.machine.state() == State::Fault;
        let reason = match (own_fault, link_up) {
            (true, false) => Reason::InterfaceDown,
            (true, true) => Reason::TrackFault,
            (false, _) if fault || (in_fault && self.faulted_by_group) => Reason::SyncGroup,
            (false, _) if in_fault && !self.faulted_by_checks => Reason::InterfaceUp,
            (false, _) => Reason::TrackRecovered,
        };
        self.faulted_by_checks = check_fault;
        self.own_fault = own_fault;
        self.faulted_by_group = !own_fault && self.group_fault;
        if priority != self.machine.base_priority() {
            tracing::info!(instance = %self.config.name, from = self.machine.base_priority(), to = priority, "effective priority changed");
            self.machine.set_priority(priority);
            self.priority_changed = true;
            // keepalived reports changes once running, not the priority its
            // tracking gives it at start.
            if self.config.notify_priority_changes && self.machine.state() != State::Initialize {
                self.priority_notice = Some((self.machine.state(), priority));
            }
        }
        self.machine.set_fault_because(now, fault, reason)
    }
}

/// What the daemon asks of a running instance (`lbha-agent handover`).
#[derive(Debug)]
pub enum Command {
    /// Resign for a planned handover: priority-0 advert, Backup, priority
    /// held at [`crate::vrrp::machine::HANDOVER_PRIORITY`]. Answers the
    /// state it was in when it was not Master (nothing changed then).
    HandOver {
        instance: String,
        reply: oneshot::Sender<Result<(), State>>,
    },
    /// Ends a handover's hold; answers whether there was one.
    Release {
        instance: String,
        reply: oneshot::Sender<bool>,
    },
}

/// Where commands for each running instance go: its interface task.
#[derive(Clone, Debug, Default)]
pub struct Commands(Arc<std::sync::Mutex<BTreeMap<String, mpsc::UnboundedSender<Command>>>>);

impl Commands {
    /// `instances` now run in the task reading `rx`'s other end.
    pub fn register<'a>(
        &self,
        instances: impl IntoIterator<Item = &'a str>,
        tx: &mpsc::UnboundedSender<Command>,
    ) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for name in instances {
            map.insert(name.to_owned(), tx.clone());
        }
    }

    /// Sends `command` to `instance`'s task; `false` when it does not run.
    pub fn send(&self, instance: &str, command: Command) -> bool {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(instance).is_some_and(|tx| tx.send(command).is_ok())
    }
}

/// Everything an interface task shares with the rest of the daemon.
pub struct Shared {
    pub addresses: Addresses,
    pub notify: mpsc::UnboundedSender<NotifyJob>,
    /// Up/down of every check, by index.
    pub checks: watch::Receiver<Arc<Vec<bool>>>,
    /// Up/down of the interfaces (a down link means Fault).
    pub links: watch::Receiver<LinkStates>,
    /// The track files' values.
    pub files: watch::Receiver<FileValues>,
    /// The notify FIFOs every state change is written to.
    pub fifos: Arc<NotifyFifos>,
    pub shutdown: watch::Receiver<bool>,
    /// The instance the floating IP follows, and where to say whether it is
    /// Master.
    pub mastership: Option<Arc<Mastership>>,
    /// The floating-IP manager's status, when there is one.
    pub floating_ip_status: Option<watch::Receiver<FloatingIpStatus>>,
    pub telemetry: Telemetry,
    /// What this agent's heartbeat reports (kept current here).
    pub local: heartbeat::Local,
    /// What the peers' heartbeats say, when there is a heartbeat.
    pub peers: Option<watch::Receiver<PeerTable>>,
    /// The sync groups, when there are any.
    pub sync: Option<Arc<SyncHub>>,
}

pub struct InterfaceTask {
    pub interface: String,
    pub receiver: AdvertReceiver,
    /// The interface's advert socket, shared by its instances.
    pub socket: AdvertSocket,
    /// Adverts queued during this wakeup, sent together by [`Self::flush`].
    pub outbox: Batch,
    /// (instance, deadline) of the queued adverts a Master timer sent.
    pub outbox_due: Vec<(usize, u64)>,
    pub instances: Vec<InstanceRuntime>,
    pub shared: Shared,
    /// Times the loop woke up (adverts that changed something, timers,
    /// checks); what the fast path saves shows here.
    pub wakeups: u64,
    /// When the receive path's counters were last copied into telemetry.
    pub counters_published_ns: u64,
    /// The daemon's requests for these instances ([`Commands`]).
    pub commands: mpsc::UnboundedReceiver<Command>,
}

fn sleep_until_ns(deadline: Option<u64>) -> tokio::time::Sleep {
    let now = monotonic_ns();
    // Far enough to mean "never" while staying a valid Instant.
    let wait = deadline.map_or(Duration::from_hours(1), |d| {
        Duration::from_nanos(d.saturating_sub(now))
    });
    tokio::time::sleep(wait)
}

/// Another task's member moved its sync group (never, without groups).
async fn group_changed(rx: &mut Option<watch::Receiver<u64>>) {
    match rx {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Waits for `deadline` on the timerfd when there is one (exact to
/// microseconds), else on tokio's millisecond timer.
async fn until(timer: Option<&DeadlineTimer>, deadline: Option<u64>) {
    match timer {
        Some(timer) => {
            if let Err(error) = timer.expired().await {
                tracing::warn!(%error, "deadline timer failed; waiting on the runtime's timer");
                sleep_until_ns(deadline).await;
            }
        }
        None => sleep_until_ns(deadline).await,
    }
}

impl InterfaceTask {
    pub async fn run(mut self) {
        let mut timer = DeadlineTimer::new()
            .inspect_err(|error| tracing::warn!(interface = %self.interface, %error, "no timerfd; deadlines are kept to the millisecond"))
            .ok();
        let mut group_rx = self.shared.sync.as_ref().map(|hub| hub.subscribe());
        if let Some(hub) = &self.shared.sync {
            for instance in &mut self.instances {
                instance.in_group = hub.is_member(&instance.config.name);
                // Held from the start: the group decides when members go
                // Master (an address owner included).
                instance.machine.set_sync_hold(instance.in_group);
            }
        }
        let now = monotonic_ns();
        let checks = self.shared.checks.borrow().clone();
        let link_up = self.link_up();
        let links = self.shared.links.borrow().clone();
        let files = self.shared.files.borrow().clone();
        for i in 0..self.instances.len() {
            let mut actions =
                self.instances[i].apply_tracks_with(&checks, link_up, &links, &files, now);
            actions.extend(self.instances[i].machine.start(now));
            self.execute(i, actions).await;
        }
        self.follow_groups().await;
        self.flush();
        loop {
            let silence_reports = self.receiver.reports_silence();
            let deadline = self
                .instances
                .iter()
                .filter_map(|i| i.wake_at(silence_reports))
                .min();
            if let Some(armed) = &timer
                && let Err(error) = armed.set(deadline)
            {
                tracing::warn!(interface = %self.interface, %error, "deadline timer unusable; deadlines are kept to the millisecond");
                timer = None;
            }
            tokio::select! {
                event = self.receiver.next() => {
                    self.wakeups += 1;
                    match event {
                        Ok(event) => self.on_advert(event).await,
                        Err(error) => {
                            tracing::error!(interface = %self.interface, %error, "receive path failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    self.drain_and_poll().await;
                }
                () = until(timer.as_ref(), deadline) => {
                    self.wakeups += 1;
                    self.drain_and_poll().await;
                }
                Ok(()) = self.shared.checks.changed() => {
                    self.wakeups += 1;
                    self.reapply_tracks().await;
                }
                Ok(()) = self.shared.links.changed() => {
                    self.wakeups += 1;
                    self.reapply_tracks().await;
                }
                Ok(()) = self.shared.files.changed() => {
                    self.wakeups += 1;
                    self.reapply_tracks().await;
                }
                () = group_changed(&mut group_rx) => {
                    self.wakeups += 1;
                    if let Some(rx) = &mut group_rx {
                        rx.borrow_and_update();
                    }
                }
                Some(command) = self.commands.recv() => {
                    self.wakeups += 1;
                    self.on_command(command).await;
                }
                _ = self.shared.shutdown.changed() => break,
            }
            self.follow_groups().await;
            self.flush();
            self.publish();
        }
        for i in 0..self.instances.len() {
            let actions = self.instances[i].machine.shutdown();
            self.execute(i, actions).await;
            self.shared.local.remove(self.instances[i].key);
            if let Some(hub) = &self.shared.sync
                && self.instances[i].in_group
            {
                hub.report(&self.instances[i].config.name, MemberReport::default());
            }
        }
        // The resignations (priority 0) go out together.
        self.flush();
        tracing::info!(interface = %self.interface, wakeups = self.wakeups, "interface stopped");
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::HandOver { instance, reply } => {
                let Some(i) = self.index_of(&instance) else {
                    return;
                };
                let now = monotonic_ns();
                let answer = match self.instances[i].machine.hand_over(now) {
                    Some(actions) => {
                        tracing::info!(instance = %instance, "handover: resigning (priority-0 advert), priority held low until `lbha-agent handover --release`");
                        self.execute(i, actions).await;
                        self.instances[i].priority_changed = true;
                        Ok(())
                    }
                    None => Err(self.instances[i].machine.state()),
                };
                let _ = reply.send(answer);
            }
            Command::Release { instance, reply } => {
                let Some(i) = self.index_of(&instance) else {
                    return;
                };
                let held = self.instances[i].machine.release_handover_hold();
                if held {
                    tracing::info!(instance = %instance, priority = self.instances[i].machine.priority(), "handover hold released");
                    self.instances[i].priority_changed = true;
                }
                let _ = reply.send(held);
            }
        }
    }

    fn index_of(&self, instance: &str) -> Option<usize> {
        self.instances
            .iter()
            .position(|i| i.config.name == instance)
    }

    /// Sends the adverts queued since the last flush, in one batch, and
    /// records how late each went out against its deadline.
    fn flush(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let queued = self.outbox.len();
        match self.socket.send(&mut self.outbox) {
            Ok(sent) if sent < queued => {
                tracing::warn!(interface = %self.interface, queued, sent, "some adverts not sent");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(interface = %self.interface, %error, "adverts not sent"),
        }
        let now = monotonic_ns();
        for (i, due) in self.outbox_due.drain(..) {
            let late = Duration::from_nanos(now.saturating_sub(due)).as_secs_f64();
            let (histogram, max) = &mut self.instances[i].lateness;
            histogram.observe(&ADVERT_LATENESS_BUCKETS, late);
            *max = max.max(late);
            self.instances[i].lateness_changed = true;
        }
    }

    /// The mastership channel of instance `i`, if the floating IP or the
    /// reserved IPv6 follows it.
    fn followed_by_floating_ip(&self, i: usize) -> Option<MastershipOf<'_>> {
        self.shared
            .mastership
            .as_ref()?
            .for_instance(&self.instances[i].config.name)
    }

    /// Copies what status and metrics show into telemetry. Cheap (one lock)
    /// on every wakeup; the receive path's counters, which cost a map read
    /// each, at most once a second.
    fn publish(&mut self) {
        for i in 0..self.instances.len() {
            if std::mem::take(&mut self.instances[i].priority_changed)
                && let Some(mastership) = self.followed_by_floating_ip(i)
            {
                let us = self.instances[i].router();
                mastership.update(|view| view.us = Some(us));
            }
        }
        let telemetry = &self.shared.telemetry;
        let now = monotonic_ns();
        let kernel_keeps_last_advert = self.receiver.kernel_keeps_last_advert();
        for instance in &mut self.instances {
            let machine = &instance.machine;
            let now_shown = Published {
                state: machine.state(),
                priority: machine.priority(),
                master: machine.master().map(|(addr, _, _)| addr),
                partitioned: machine.held_by_heartbeat(),
            };
            let last_advert_ns = match machine.state() {
                State::Master => None,
                _ => machine.master().map(|(_, _, at)| at),
            };
            if instance.published == Some(now_shown) {
                // AH adverts are verified in user space and never reach the
                // kernel's map.
                let status_reads_kernel = kernel_keeps_last_advert && instance.ah.is_none();
                if instance.published_advert_ns != last_advert_ns
                    && (!status_reads_kernel
                        || now.saturating_sub(instance.advert_published_at_ns)
                            >= ADVERT_TIME_REFRESH_NS)
                {
                    instance.published_advert_ns = last_advert_ns;
                    instance.advert_published_at_ns = now;
                    telemetry.update_instance_at(
                        &mut instance.status_slot,
                        &instance.config.name,
                        |s| s.last_advert_ns = last_advert_ns,
                    );
                }
                continue;
            }
            instance.published = Some(now_shown);
            instance.published_advert_ns = last_advert_ns;
            instance.advert_published_at_ns = now;
            if let Some(record) = instance.heartbeat_record() {
                self.shared.local.set(record);
            }
            telemetry.update_instance_at(&mut instance.status_slot, &instance.config.name, |s| {
                s.vrrp_path_partitioned = machine.held_by_heartbeat();
                s.handover_held = machine.handover_held();
                s.state = machine.state().name().to_owned();
                s.priority = machine.priority();
                s.master = machine.master().map(|(addr, _, _)| addr.to_string());
                s.last_advert_ns = last_advert_ns;
            });
        }
        let counters = if now.saturating_sub(self.counters_published_ns) >= 1_000_000_000 {
            self.counters_published_ns = now;
            for instance in &mut self.instances {
                if std::mem::take(&mut instance.lateness_changed) {
                    let (histogram, max) = &instance.lateness;
                    telemetry.set_advert_lateness(&instance.config.name, histogram, *max);
                }
            }
            self.receiver.counters().ok()
        } else {
            None
        };
        let (wakeups, link_up) = (self.wakeups, self.link_up());
        telemetry.update_interface(&self.interface, |s| {
            s.wakeups = wakeups;
            s.link_up = link_up;
            if let Some(counters) = counters {
                s.counters = counters.iter().map(|(k, v)| (k.to_owned(), v)).collect();
            }
        });
    }

    fn link_up(&self) -> bool {
        self.shared
            .links
            .borrow()
            .get(&self.interface)
            .copied()
            .unwrap_or(true)
    }

    /// Tells the sync groups what changed in their members here, and makes
    /// the members follow their groups' states (which can change the
    /// group again: a bounded number of rounds, each one only moving
    /// members towards the group's state).
    async fn follow_groups(&mut self) {
        let Some(hub) = self.shared.sync.clone() else {
            return;
        };
        for _ in 0..4 {
            let mut moved = false;
            for i in 0..self.instances.len() {
                let instance = &mut self.instances[i];
                if !instance.in_group {
                    continue;
                }
                let report = MemberReport {
                    state: instance.machine.state(),
                    fault: instance.own_fault,
                    wants_master: instance.machine.wants_master(),
                };
                let name = instance.config.name.as_str();
                let group = if instance.sync_reported == Some(report) {
                    hub.state_of(name)
                } else {
                    instance.sync_reported = Some(report);
                    hub.report(name, report)
                };
                let Some(group) = group else {
                    continue;
                };
                instance.group_fault = group == State::Fault;
                instance.machine.set_sync_hold(group != State::Master);
                let now = monotonic_ns();
                let actions = match follow(group, report.state, instance.own_fault) {
                    None => continue,
                    Some(Follow::EnterFault) => {
                        instance.faulted_by_group = !instance.own_fault;
                        instance
                            .machine
                            .set_fault_because(now, true, Reason::SyncGroup)
                    }
                    Some(Follow::LeaveFault) => {
                        instance.faulted_by_group = false;
                        instance
                            .machine
                            .set_fault_because(now, false, Reason::SyncGroup)
                    }
                    Some(Follow::BecomeMaster) => instance.machine.force_master(now),
                    Some(Follow::BecomeBackup) => instance.machine.force_backup(now),
                };
                if !actions.is_empty() {
                    moved = true;
                    self.execute(i, actions).await;
                }
            }
            if !moved {
                break;
            }
        }
    }

    async fn reapply_tracks(&mut self) {
        let checks = self.shared.checks.borrow_and_update().clone();
        let links = self.shared.links.borrow_and_update().clone();
        let files = self.shared.files.borrow_and_update().clone();
        let link_up = self.link_up();
        let now = monotonic_ns();
        for i in 0..self.instances.len() {
            let actions =
                self.instances[i].apply_tracks_with(&checks, link_up, &links, &files, now);
            if let Some((state, priority)) = self.instances[i].priority_notice.take() {
                let name = &self.instances[i].config.name;
                self.shared.fifos.priority(name, state, priority);
            }
            self.execute(i, actions).await;
        }
    }

    /// Processes every advert already queued, then fires due timers.
    async fn drain_and_poll(&mut self) {
        while let Some(event) = self.receiver.try_next() {
            self.on_advert(event).await;
        }
        let now = monotonic_ns();
        let peers = self.shared.peers.as_ref().map(|p| p.borrow().clone());
        for i in 0..self.instances.len() {
            self.catch_up_from_kernel(i, now).await;
            let instance = &mut self.instances[i];
            if let Some(peers) = &peers {
                instance.consult_heartbeat(peers);
            }
            let held_before = instance.machine.held_by_heartbeat();
            instance.advert_due = match (instance.machine.state(), instance.machine.next_deadline())
            {
                (State::Master, Some(due)) if due <= now => Some(due),
                _ => None,
            };
            let actions = instance.machine.poll_timers(now);
            if instance.machine.state() == State::Master {
                let sets = instance.garp_schedule.poll(&instance.config.garp, now);
                instance.announce(sets);
            }
            let held = instance.machine.held_by_heartbeat();
            if held && !held_before {
                tracing::warn!(
                    instance = %instance.config.name,
                    "VRRP adverts stopped but the heartbeat shows the master alive: the VRRP path is partitioned; staying BACKUP"
                );
            }
            self.execute(i, actions).await;
        }
    }

    /// Before a Backup acts on a due deadline: the kernel keeps a steady
    /// master's adverts in its last-advert map instead of queueing them, so
    /// the newest one is read there and handed to the machine first. No
    /// decision is taken on missing data: while the master advertises, its
    /// latest advert re-arms the master-down timer here (and a change lost
    /// to a full ring buffer shows up here too, at most a backstop late).
    async fn catch_up_from_kernel(&mut self, i: usize, now: u64) {
        let machine = &self.instances[i].machine;
        if machine.state() != State::Backup || machine.next_deadline().is_none_or(|d| d > now) {
            return;
        }
        let Ok(Some(latest)) = self.receiver.last_advert(self.instances[i].key) else {
            return;
        };
        if latest.timestamp_ns <= machine.last_master_advert_ns().unwrap_or(0) {
            return;
        }
        // Straight to the machine, not through `on_advert`: an advert read
        // from the map is older than any silence report the kernel sent
        // since (a master that speaks again after silence comes as an
        // event, which clears the report), so the report stands.
        let advert = ReceivedAdvert {
            timestamp_ns: latest.timestamp_ns,
            src: latest.src_ip(),
            priority: latest.priority,
            interval_cs: latest.interval_cs,
        };
        if let Ok(actions) = self.instances[i].machine.advert(&advert) {
            self.execute(i, actions).await;
        }
    }

    async fn on_advert(&mut self, event: AdvertEvent) {
        let Some(i) = self
            .instances
            .iter()
            .position(|i| Some(i.key) == event.key())
        else {
            return;
        };
        if event.flags & change::TIMER != 0 {
            let instance = &mut self.instances[i];
            let refused = event.silence_timer == silence_timer::REFUSED;
            if refused != instance.kernel_timer_refused {
                instance.kernel_timer_refused = refused;
                if refused {
                    tracing::warn!(instance = %instance.config.name, vrid = event.vrid, "the kernel refused this VRID's silence timer (counted in silence_timer_errors); its master-down deadline is kept in user space until the kernel's retry succeeds");
                } else {
                    tracing::info!(instance = %instance.config.name, vrid = event.vrid, "the kernel armed this VRID's silence timer again");
                }
            }
        }
        if event.flags & change::SILENCE != 0 {
            tracing::debug!(instance = %self.instances[i].config.name, "kernel reports the VRID silent");
            self.instances[i].silence_reported = true;
            return;
        }
        self.instances[i].silence_reported = false;
        let advert = ReceivedAdvert {
            timestamp_ns: event.timestamp_ns,
            src: event.src_ip(),
            priority: event.priority,
            interval_cs: event.interval_cs,
        };
        let held_before = self.instances[i].machine.held_by_heartbeat();
        let result = self.instances[i].machine.advert(&advert);
        if held_before && !self.instances[i].machine.held_by_heartbeat() {
            tracing::info!(instance = %self.instances[i].config.name, "VRRP adverts from the master are back");
        }
        match result {
            Ok(actions) => self.execute(i, actions).await,
            Err(ignored) => {
                tracing::trace!(instance = %self.instances[i].config.name, ?ignored, src = %advert.src, "advert ignored");
                // Another router advertising while we are Master: it is back
                // on the VRRP path (a healed partition, a thawed node, a
                // false takeover), and the floating IP may be on it.
                if ignored == Ignored::LowerPriority
                    && self.instances[i].machine.state() == State::Master
                {
                    let instance = &mut self.instances[i];
                    if let Some(counter) = &instance.ah {
                        // keepalived moves past a lower-priority advert's
                        // number; accepting it has just made that number
                        // the counter's.
                        let mut counter = lock(counter);
                        let seen = counter.last();
                        counter.lower_priority_seen(seen);
                    }
                    let answer = instance.machine.answer_lower_priority(advert.timestamp_ns);
                    let sets = instance
                        .garp_schedule
                        .lower_priority_advert(&instance.config.garp, monotonic_ns());
                    instance.announce(sets);
                    if let Some(mastership) = self.followed_by_floating_ip(i) {
                        mastership.update(|view| view.peer_adverts_while_master += 1);
                    }
                    self.execute(i, answer).await;
                }
            }
        }
    }

    async fn execute(&mut self, i: usize, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::SendAdvert { priority } => {
                    let instance = &self.instances[i];
                    instance
                        .sender
                        .queue(&instance.advert(priority), &mut self.outbox);
                    if let Some(due) = self.instances[i].advert_due.take() {
                        self.outbox_due.push((i, due));
                    }
                }
                Action::Transition { from, to, reason } => {
                    // The advert the machine decided with this transition
                    // leaves first, as the RFC orders it (then addresses, ARP).
                    self.flush();
                    let instance = &self.instances[i];
                    let name = &instance.config.name;
                    let without_master = match (to, reason) {
                        (State::Master, Reason::MasterDown | Reason::MasterResigned) => instance
                            .machine
                            .last_master_advert_ns()
                            .map(|at| Duration::from_nanos(monotonic_ns().saturating_sub(at))),
                        _ => None,
                    };
                    self.shared.telemetry.transition(
                        name,
                        to.name(),
                        reason.name(),
                        without_master,
                    );
                    tracing::info!(
                        instance = %name,
                        vrid = instance.config.vrid,
                        from = from.name(),
                        to = to.name(),
                        reason = reason.name(),
                        priority = instance.machine.priority(),
                        without_master_us = without_master.map(|d| d.as_micros() as u64),
                        "state transition"
                    );
                    self.on_transition(i, from, to, reason).await;
                }
            }
        }
    }

    async fn on_transition(&mut self, i: usize, from: State, to: State, reason: Reason) {
        // Gratuitous ARP (IPv4) and unsolicited Neighbor Advertisements
        // (IPv6): a burst once the addresses are on, later ones on the
        // schedule; none once no longer Master.
        let instance = &mut self.instances[i];
        if to == State::Master
            && let Some(counter) = &instance.ah
        {
            lock(counter).becoming_master();
        }
        let garp_sets = if to == State::Master {
            instance
                .garp_schedule
                .became_master(&instance.config.garp, monotonic_ns())
        } else {
            instance.garp_schedule.left_master();
            0
        };
        let instance = &self.instances[i];
        let config = &instance.config;
        // First, so the floating IP assign starts before anything slower.
        if let Some(mastership) = self.followed_by_floating_ip(i) {
            let previous = instance.machine.previous_master();
            let us = instance.router();
            mastership.update(|view| {
                view.is_master = to == State::Master;
                view.us = Some(us);
                if to == State::Master {
                    view.last_master =
                        previous.map(|(address, priority)| router(priority, address));
                    view.after_resignation = reason == Reason::MasterResigned;
                }
            });
        }
        if to == State::Master && firewall::blocks(config) && instance.blocked.is_empty() {
            // Accept mode off: the drop rules go on before the addresses,
            // as keepalived orders it. Should nft fail, the node still
            // takes over (answering on its addresses) and says so.
            let blocked = firewall::blocked_of(config);
            match firewall::apply(firewall::elements_script("add", &blocked)).await {
                Ok(()) => self.instances[i].blocked = blocked,
                Err(error) => tracing::error!(
                    instance = %config.name,
                    %error,
                    "accept mode off, but could not block the virtual addresses: they answer"
                ),
            }
        }
        let instance = &self.instances[i];
        let config = &instance.config;
        if to == State::Master {
            for vip in &config.virtual_addresses {
                // keepalived's `dev`: the address goes on that interface.
                let device = vip.dev.as_deref().unwrap_or(config.vip_interface());
                if let Err(error) = self
                    .shared
                    .addresses
                    .add(device, (vip.address, vip.prefix))
                    .await
                {
                    tracing::error!(instance = %config.name, %error, "could not add virtual address");
                }
            }
            // Routes after the addresses (a route's `src` may be one),
            // rules last, as keepalived orders them. A failure is logged
            // and the instance carries on as Master.
            for route in &config.virtual_routes {
                if let Err(error) = self.shared.addresses.add_route(route).await {
                    tracing::error!(instance = %config.name, %error, "could not add virtual route");
                }
            }
            for rule in &config.virtual_rules {
                if let Err(error) = self.shared.addresses.add_rule(rule).await {
                    tracing::error!(instance = %config.name, %error, "could not add virtual rule");
                }
            }
            instance.announce(garp_sets);
        } else if from == State::Master || from == State::Initialize {
            // Leaving Master, and at startup: a crashed predecessor may have
            // left the addresses on the interface (keepalived removes them
            // at startup too); a backup must not answer for them. Rules
            // and routes first, the reverse of their adding.
            for rule in &config.virtual_rules {
                if let Err(error) = self.shared.addresses.remove_rule(rule).await {
                    tracing::error!(instance = %config.name, %error, "could not remove virtual rule");
                }
            }
            for route in &config.virtual_routes {
                if let Err(error) = self.shared.addresses.remove_route(route).await {
                    tracing::error!(instance = %config.name, %error, "could not remove virtual route");
                }
            }
            for vip in &config.virtual_addresses {
                let device = vip.dev.as_deref().unwrap_or(config.vip_interface());
                if let Err(error) = self
                    .shared
                    .addresses
                    .remove(device, (vip.address, vip.prefix))
                    .await
                {
                    tracing::error!(instance = %config.name, %error, "could not remove virtual address");
                }
            }
        }
        if to != State::Master && !self.instances[i].blocked.is_empty() {
            let blocked = std::mem::take(&mut self.instances[i].blocked);
            if let Err(error) = firewall::apply(firewall::elements_script("delete", &blocked)).await
            {
                tracing::warn!(instance = %self.instances[i].config.name, %error, "could not unblock the virtual addresses");
            }
        }
        let instance = &self.instances[i];
        let config = &instance.config;
        // The floating IP goes first (see notify's FLOATING_IP_FIRST).
        let after_floating_ip_check =
            match (&self.shared.floating_ip_status, &self.shared.mastership) {
                (Some(status), Some(mastership))
                    if to == State::Master && mastership.instance == config.name =>
                {
                    Some(status.borrow().checks)
                }
                _ => None,
            };
        for mut job in NotifyJob::for_transition(config, to, instance.machine.priority()) {
            job.after_floating_ip_check = after_floating_ip_check;
            let _ = self.shared.notify.send(job);
        }
        // keepalived writes the line right after starting the scripts.
        self.shared
            .fifos
            .instance(&config.name, to, instance.machine.priority());
    }
}

/// The receive path's key of an instance's adverts: its family (that of
/// its addresses) and VRID.
pub fn vrid_key(config: &config::Instance) -> VridKey {
    match config.family() {
        config::Family::V4 => VridKey::v4(config.vrid),
        config::Family::V6 => VridKey::v6(config.vrid),
    }
}

/// An instance as the floating IP's elections rank it (the cloud module's
/// [`Router`]): its priority and primary address, IPv4 or IPv6.
fn router(priority: u8, address: IpAddr) -> Router {
    Router { priority, address }
}

/// The virtual addresses per interface they go on: their `dev`, else the
/// instance's interface.
fn vips_by_device(config: &config::Instance) -> BTreeMap<&str, Vec<IpAddr>> {
    let mut out: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
    for vip in &config.virtual_addresses {
        out.entry(vip.dev.as_deref().unwrap_or(config.vip_interface()))
            .or_default()
            .push(vip.address);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// One recorded advert: version, priority, interval, auth data, VIPs.
    type Sent = (u8, u8, u16, Option<Vec<u8>>, Vec<IpAddr>);

    /// Records the adverts an instance sends instead of sending them;
    /// sends from 10.0.0.1 unless given another source.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Sent>>>, Option<IpAddr>);

    impl AdvertOut for Recorder {
        fn source(&self) -> IpAddr {
            self.1.unwrap_or(IpAddr::from([10, 0, 0, 1]))
        }

        fn queue(&self, advert: &Advert<'_>, _batch: &mut Batch) {
            self.0.lock().unwrap().push((
                advert.version,
                advert.priority,
                advert.interval_cs,
                advert.auth_pass.map(<[u8]>::to_vec),
                advert.virtual_addrs.to_vec(),
            ));
        }
    }

    fn instance(extra: &str) -> config::Instance {
        let text = format!(
            "[[check]]\nname = \"c\"\nprocess = \"haproxy\"\n\n[[instance]]\nname = \"VI_1\"\n\
             interface = \"eth0\"\nvrid = 7\npriority = 100\n{extra}\n"
        );
        let loaded = config::parse_toml(&text, std::path::Path::new("t.toml")).expect("valid");
        loaded
            .config
            .instances
            .into_iter()
            .next()
            .expect("one instance")
    }

    fn runtime(extra: &str, tracks: TrackRefs) -> (InstanceRuntime, Recorder) {
        let recorder = Recorder::default();
        (
            InstanceRuntime::new(instance(extra), recorder.clone(), tracks),
            recorder,
        )
    }

    fn transitions(actions: &[Action]) -> Vec<(State, Reason)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Transition { to, reason, .. } => Some((*to, *reason)),
                Action::SendAdvert { .. } => None,
            })
            .collect()
    }

    #[test]
    fn the_advert_carries_the_instance_settings() {
        let (rt, recorder) = runtime(
            "version = 2\nadvert_interval = 3.0\nauth_pass = \"secret\"\n\
             virtual_addresses = [\"192.0.2.10/24\", \"192.0.2.11\", \
             { address = \"192.0.2.12\", excluded = true }]",
            vec![],
        );
        rt.sender.queue(&rt.advert(150), &mut Batch::default());
        let sent = recorder.0.lock().unwrap().clone();
        assert_eq!(
            sent,
            vec![(
                2,
                150,
                300,
                Some(b"secret".to_vec()),
                vec![IpAddr::from([192, 0, 2, 10]), IpAddr::from([192, 0, 2, 11])]
            )]
        );
        assert_eq!(
            rt.machine.params().primary_addr,
            IpAddr::from([10, 0, 0, 1])
        );
    }

    #[test]
    fn an_ipv6_instance_keys_its_adverts_by_family_and_lists_its_ipv6_addresses() {
        let (rt, recorder) = runtime(
            "version = 3\nadvert_interval = 0.1\n\
             virtual_addresses = [\"fe80::1/64\", \"2001:db8::10/64\", \
             { address = \"192.0.2.12/24\", excluded = true }]",
            vec![],
        );
        assert_eq!(rt.key, VridKey::v6(7));
        rt.sender.queue(&rt.advert(100), &mut Batch::default());
        let sent = recorder.0.lock().unwrap().clone();
        let six = |a: &str| a.parse::<IpAddr>().unwrap();
        assert_eq!(sent[0].4, vec![six("fe80::1"), six("2001:db8::10")]);
        // The same VRID over IPv4 is another key.
        let (v4, _) = runtime("virtual_addresses = [\"192.0.2.10/24\"]", vec![]);
        assert_eq!(v4.key, VridKey::v4(7));
    }

    /// An IPv4 and an IPv6 instance of VRID 7, as two routers of one agent.
    fn dual_stack_pair() -> (InstanceRuntime, InstanceRuntime) {
        let (v4, _) = runtime("virtual_addresses = [\"192.0.2.10/24\"]", vec![]);
        let source = Recorder(Arc::default(), Some("fe80::2".parse().unwrap()));
        let v6 = InstanceRuntime::new(
            instance("version = 3\nvirtual_addresses = [\"fe80::1/64\", \"2001:db8::10/64\"]"),
            source,
            vec![],
        );
        (v4, v6)
    }

    /// A peer's heartbeat saying it is Master of `records`' routers.
    fn heard(records: Vec<Record>, received_ns: u64) -> PeerTable {
        let message = heartbeat::wire::Message {
            droplet_id: 2,
            boot_id: 1,
            seq: 1,
            sent_unix_ms: 0,
            records,
        };
        // Through the wire, as a peer's heartbeat arrives.
        let key = heartbeat::wire::Key::new(b"driver-test-secret-16");
        let message = heartbeat::wire::decode(&heartbeat::wire::encode(&message, &key), &key)
            .expect("decodes");
        let mut table = PeerTable {
            valid_for_ns: 10_000_000_000,
            ..PeerTable::default()
        };
        table.peers.insert(
            "10.0.9.1:7823".parse().unwrap(),
            heartbeat::Peer::from_message(message, received_ns),
        );
        table
    }

    fn master_of(vrid: u8, address: &str) -> Record {
        Record {
            vrid,
            state: PeerState::Master,
            priority: 200,
            healthy: true,
            address: address.parse().unwrap(),
        }
    }

    /// Both instances follow a master, whose adverts then stop; at the
    /// master-down deadline, with `peers` heard: (v4 Master?, v6 Master?).
    fn takeovers(peers: &PeerTable) -> (bool, bool) {
        let (v4, v6) = dual_stack_pair();
        let mut outcome = [false; 2];
        for ((mut rt, master), took) in [(v4, "10.0.0.9"), (v6, "fe80::9")]
            .into_iter()
            .zip(&mut outcome)
        {
            rt.machine.start(0);
            let advert = ReceivedAdvert {
                timestamp_ns: 1_000_000,
                src: master.parse().unwrap(),
                priority: 200,
                interval_cs: interval_cs(&rt.config),
            };
            rt.machine.advert(&advert).expect("a master's advert");
            assert_eq!(rt.machine.state(), State::Backup);
            let down = rt.machine.next_deadline().expect("master-down timer");
            rt.consult_heartbeat(peers);
            rt.machine.poll_timers(down);
            *took = rt.machine.state() == State::Master;
        }
        (outcome[0], outcome[1])
    }

    #[test]
    fn an_ipv6_masters_heartbeat_holds_the_ipv6_backup_only() {
        let peers = heard(vec![master_of(7, "fe80::9")], 0);
        assert_eq!(
            takeovers(&peers),
            (true, false),
            "the IPv4 instance of VRID 7 takes over; the IPv6 one is held"
        );
    }

    #[test]
    fn an_ipv4_masters_heartbeat_holds_the_ipv4_backup_only() {
        let peers = heard(vec![master_of(7, "10.0.0.9")], 0);
        assert_eq!(takeovers(&peers), (false, true));
        // Both masters alive: both held; none: both take over.
        let both = heard(vec![master_of(7, "10.0.0.9"), master_of(7, "fe80::9")], 0);
        assert_eq!(takeovers(&both), (false, false));
        assert_eq!(takeovers(&PeerTable::default()), (true, true));
    }

    #[test]
    fn each_family_publishes_its_own_heartbeat_record() {
        let (v4, v6) = dual_stack_pair();
        let (r4, r6) = (
            v4.heartbeat_record().unwrap(),
            v6.heartbeat_record().unwrap(),
        );
        assert_eq!((r4.key(), r6.key()), (VridKey::v4(7), VridKey::v6(7)));
        assert_eq!(r6.address, "fe80::2".parse::<IpAddr>().unwrap());
        let local = heartbeat::Local::default();
        local.set(r4);
        local.set(r6);
        assert_eq!(
            local.records().len(),
            2,
            "one record per router, not per VRID"
        );
        // A source of the wrong family would be read as the other router.
        let odd = InstanceRuntime::new(
            instance("version = 3\nvirtual_addresses = [\"fe80::1/64\"]"),
            Recorder::default(),
            vec![],
        );
        assert_eq!(odd.heartbeat_record(), None);
    }

    #[test]
    fn intervals_are_whole_centiseconds_within_the_field() {
        let cs =
            |secs: f64| interval_cs(&instance(&format!("version = 3\nadvert_interval = {secs}")));
        assert_eq!(cs(0.01), 1);
        assert_eq!(cs(0.1), 10);
        assert_eq!(cs(40.95), 4095);
    }

    #[test]
    fn a_failed_weight_zero_check_faults_and_its_recovery_says_so() {
        let (mut rt, _) = runtime("", vec![(0, 0, false)]);
        let mut actions = rt.apply_tracks(&[true], true, 0);
        actions.extend(rt.machine.start(0));
        assert_eq!(transitions(&actions), [(State::Backup, Reason::Startup)]);

        let down = rt.apply_tracks(&[false], true, 1_000);
        assert_eq!(transitions(&down), [(State::Fault, Reason::TrackFault)]);
        let up = rt.apply_tracks(&[true], true, 2_000);
        assert_eq!(transitions(&up), [(State::Backup, Reason::TrackRecovered)]);
    }

    #[test]
    fn a_down_link_faults_and_the_link_coming_back_says_so() {
        let (mut rt, _) = runtime("", vec![(0, 0, false)]);
        rt.machine.start(0);
        let down = rt.apply_tracks(&[true], false, 1_000);
        assert_eq!(transitions(&down), [(State::Fault, Reason::InterfaceDown)]);
        let up = rt.apply_tracks(&[true], true, 2_000);
        assert_eq!(transitions(&up), [(State::Backup, Reason::InterfaceUp)]);
    }

    #[test]
    fn tracked_interfaces_fault_or_weigh_as_keepalived_tracks_them() {
        let (mut rt, _) = runtime(
            "track_interfaces = [\"eth2\", { name = \"eth3\", weight = -30 }]",
            vec![],
        );
        rt.machine.start(0);
        let links = |eth2: bool, eth3: bool| {
            BTreeMap::from([("eth2".to_string(), eth2), ("eth3".to_string(), eth3)])
        };
        assert!(
            transitions(&rt.apply_tracks_with(&[], true, &links(true, true), &BTreeMap::new(), 0))
                .is_empty()
        );
        assert_eq!(rt.machine.priority(), 100);
        // A weighted one down lowers the priority, and never faults.
        rt.apply_tracks_with(&[], true, &links(true, false), &BTreeMap::new(), 1);
        assert_eq!(rt.machine.priority(), 70);
        assert_eq!(rt.machine.state(), State::Backup);
        // Weight 0 down: Fault, as a failed check (the own link is up).
        let down = rt.apply_tracks_with(&[], true, &links(false, false), &BTreeMap::new(), 2);
        assert_eq!(transitions(&down), [(State::Fault, Reason::TrackFault)]);
        let up = rt.apply_tracks_with(&[], true, &links(true, true), &BTreeMap::new(), 3);
        assert_eq!(transitions(&up), [(State::Backup, Reason::TrackRecovered)]);
        assert_eq!(rt.machine.priority(), 100);
    }

    #[test]
    fn dont_track_primary_ignores_the_own_link() {
        let (mut rt, _) = runtime("dont_track_primary = true", vec![]);
        rt.machine.start(0);
        assert!(transitions(&rt.apply_tracks(&[], false, 1)).is_empty());
        assert_eq!(rt.machine.state(), State::Backup);
        let (mut plain, _) = runtime("", vec![]);
        plain.machine.start(0);
        assert_eq!(
            transitions(&plain.apply_tracks(&[], false, 1)),
            [(State::Fault, Reason::InterfaceDown)]
        );
    }

    #[test]
    fn track_files_weigh_and_fault_as_keepalived_applies_them() {
        let (rt, _) = runtime("", vec![]);
        let mut rt = rt.with_files(vec![
            ("maint".into(), 0, false),
            ("offset".into(), -10, false),
        ]);
        rt.machine.start(0);
        let files = |maint: i64, offset: Option<i64>| {
            BTreeMap::from([
                ("maint".to_string(), Some(maint)),
                ("offset".to_string(), offset),
            ])
        };
        fn apply(
            rt: &mut InstanceRuntime,
            files: &BTreeMap<String, Option<i64>>,
            now: u64,
        ) -> Vec<Action> {
            rt.apply_tracks_with(&[], true, &BTreeMap::new(), files, now)
        }
        assert!(transitions(&apply(&mut rt, &files(0, Some(0)), 0)).is_empty());
        assert_eq!(rt.machine.priority(), 100);
        // value x weight: 3 x -10.
        apply(&mut rt, &files(0, Some(3)), 1);
        assert_eq!(rt.machine.priority(), 70);
        // An untracked file (None) weighs nothing.
        apply(&mut rt, &files(0, None), 2);
        assert_eq!(rt.machine.priority(), 100);
        // -26 x -10 = 260, capped at 253: priority 254 at most.
        apply(&mut rt, &files(0, Some(-26)), 3);
        assert_eq!(rt.machine.priority(), 254);
        // 26 x -10 = -260: FAULT.
        let down = apply(&mut rt, &files(0, Some(26)), 4);
        assert_eq!(transitions(&down), [(State::Fault, Reason::TrackFault)]);
        let up = apply(&mut rt, &files(0, Some(0)), 5);
        assert_eq!(transitions(&up), [(State::Backup, Reason::TrackRecovered)]);
        // Weight 0: any non-zero value is FAULT.
        let down = apply(&mut rt, &files(1, Some(0)), 6);
        assert_eq!(transitions(&down), [(State::Fault, Reason::TrackFault)]);
    }

    #[test]
    fn weighted_checks_set_the_effective_priority() {
        // weight +20 while up, weight -30 while down.
        let (mut rt, _) = runtime("", vec![(0, 20, false), (1, -30, false)]);
        rt.machine.start(0);
        assert!(transitions(&rt.apply_tracks(&[true, true], true, 0)).is_empty());
        assert_eq!(rt.machine.priority(), 120);
        rt.apply_tracks(&[false, false], true, 1);
        assert_eq!(rt.machine.priority(), 70);
        assert_eq!(rt.machine.state(), State::Backup, "weights never fault");
    }

    #[test]
    fn a_backup_following_a_master_sleeps_past_its_deadline_only_with_kernel_silence_reports() {
        let (mut rt, _) = runtime("version = 3\nadvert_interval = 0.1", vec![]);
        rt.machine.start(0);
        let master = ReceivedAdvert {
            timestamp_ns: 1_000_000,
            src: IpAddr::from([10, 0, 0, 2]),
            priority: 200,
            interval_cs: 10,
        };
        rt.machine
            .advert(&master)
            .expect("a higher-priority master is followed");
        assert!(rt.machine.follows_master());
        let deadline = rt.machine.next_deadline().expect("master-down deadline");

        assert_eq!(
            rt.wake_at(false),
            Some(deadline),
            "raw socket: exact deadline"
        );
        let backstop = rt.wake_at(true).expect("a backstop");
        assert!(
            backstop >= deadline + SILENCE_BACKSTOP_NS / 2
                && backstop <= deadline + SILENCE_BACKSTOP_NS,
            "XDP: the kernel timer reports silence; only a backstop, within a second of the deadline: {deadline} -> {backstop}"
        );
        rt.kernel_timer_refused = true;
        assert_eq!(
            rt.wake_at(true),
            Some(deadline),
            "the kernel refused the VRID's timer: exact deadline"
        );
        rt.kernel_timer_refused = false;
        rt.silence_reported = true;
        assert_eq!(
            rt.wake_at(true),
            Some(deadline),
            "after a silence report the exact deadline counts"
        );
    }

    #[test]
    fn an_ah_backup_keeps_its_exact_deadline_even_with_kernel_silence_reports() {
        let (mut rt, _) = runtime("version = 2\nadvert_interval = 1.0", vec![]);
        rt.ah = Some(AhCounter::default());
        rt.machine.start(0);
        let master = ReceivedAdvert {
            timestamp_ns: 1_000_000,
            src: IpAddr::from([10, 0, 0, 2]),
            priority: 200,
            interval_cs: 100,
        };
        rt.machine.advert(&master).expect("followed");
        let deadline = rt.machine.next_deadline().expect("master-down deadline");
        // The kernel never accepts an AH advert, so it cannot report
        // their silence: the deadline is kept in user space.
        assert_eq!(rt.wake_at(true), Some(deadline));
    }

    #[test]
    fn backstops_of_nearby_deadlines_coalesce_within_a_second() {
        let grid = BACKSTOP_GRID_NS;
        // Deadlines spread over one grid step wake together.
        let first = backstop_after(7 * grid + 1);
        for offset in [1, 1_000, grid / 3, grid - 1, grid] {
            assert_eq!(backstop_after(7 * grid + offset), first, "offset {offset}");
        }
        for deadline in [0, 1, grid - 1, grid, 12_345_678_901, 99 * grid + 17] {
            let at = backstop_after(deadline);
            assert!(
                at >= deadline + SILENCE_BACKSTOP_NS / 2 && at <= deadline + SILENCE_BACKSTOP_NS,
                "{deadline} -> {at}"
            );
            assert_eq!(at % grid, 0, "on the grid");
        }
    }
}
