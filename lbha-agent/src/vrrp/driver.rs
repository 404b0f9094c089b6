//! Runs the instances of one interface: feeds their state machines from the
//! receive path, timers and tracked checks, and carries out what they decide.
//!
//! The XDP program queues steady adverts without waking us, and a kernel
//! timer per VRID reports when adverts stop for three intervals. So a backup
//! following a healthy master sleeps (up to a backstop of a second past its
//! master-down deadline, in case the kernel timer could not be armed), and
//! wakes when something changed or the master went quiet; it then drains
//! what was queued (each advert with its kernel timestamp) and from there
//! keeps its exact master-down deadline: the same decisions as waking on
//! every advert, with almost none of the wakeups. On the raw-socket path,
//! which has no such timer, it wakes at every master-down deadline.

use std::{net::Ipv4Addr, sync::Arc, time::Duration};

use lbha_common::{AdvertEvent, event::change, vrrp::encode::Advert};
use tokio::sync::{mpsc, watch};

use crate::{
    clock::monotonic_ns,
    cloud::{FloatingIpStatus, Mastership},
    config,
    recv::AdvertReceiver,
    status::Telemetry,
    vrrp::{
        link::LinkStates,
        machine::{Action, Machine, Params, Reason, ReceivedAdvert, State},
        net::{Addresses, AdvertSender, GarpSender},
        notify::NotifyJob,
        track::{Weighted, effective_priority},
    },
};

/// How tracked checks weigh on one instance: (check index, weight, reverse).
pub type TrackRefs = Vec<(usize, i32, bool)>;

/// One running instance.
pub struct InstanceRuntime {
    pub config: config::Instance,
    pub machine: Machine,
    sender: AdvertSender,
    tracks: TrackRefs,
    vips: Vec<Ipv4Addr>,
    /// Whether the checks (not the link) were failing at the last update.
    faulted_by_checks: bool,
    /// The kernel reported this VRID silent since the last advert we processed.
    silence_reported: bool,
    /// Opened at start (when there are VIPs) and kept; see [`GarpSender`].
    garp: Option<GarpSender>,
}

/// How long past its master-down deadline a backup following a healthy
/// master may sleep when the kernel reports silence: only matters if the
/// kernel's timer failed (counted as `silence_timer_errors`).
const SILENCE_BACKSTOP_NS: u64 = 1_000_000_000;

/// The VRRP advertisement interval of an instance in centiseconds.
pub fn interval_cs(instance: &config::Instance) -> u16 {
    let cs = instance.advert_interval.as_millis() / 10;
    cs.clamp(1, 0x0fff) as u16
}

impl InstanceRuntime {
    pub fn new(config: config::Instance, sender: AdvertSender, tracks: TrackRefs) -> Self {
        let params = Params {
            version: config.version,
            advert_interval_cs: interval_cs(&config),
            preempt: config.preempt,
            preempt_delay_ns: config.preempt_delay.as_nanos() as u64,
            primary_addr: sender.source(),
        };
        let machine = Machine::new(params, config.priority);
        let vips: Vec<Ipv4Addr> = config.virtual_addresses.iter().map(|(a, _)| *a).collect();
        let garp = if vips.is_empty() {
            None
        } else {
            GarpSender::open(&config.interface)
                .inspect_err(|error| tracing::warn!(instance = %config.name, %error, "no gratuitous ARP socket yet; retrying at takeover"))
                .ok()
        };
        Self {
            config,
            machine,
            sender,
            tracks,
            vips,
            faulted_by_checks: false,
            silence_reported: false,
            garp,
        }
    }

    /// When the loop must wake for this instance. `kernel_reports_silence`:
    /// the receive path wakes us when the VRID's adverts stop.
    fn wake_at(&self, kernel_reports_silence: bool) -> Option<u64> {
        let deadline = self.machine.next_deadline()?;
        if kernel_reports_silence && !self.silence_reported && self.machine.follows_master() {
            Some(deadline + SILENCE_BACKSTOP_NS)
        } else {
            Some(deadline)
        }
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
    fn apply_tracks(&mut self, checks: &[bool], link_up: bool, now: u64) -> Vec<Action> {
        let weighted: Vec<Weighted> = self
            .tracks
            .iter()
            .map(|&(index, weight, reverse)| Weighted {
                weight,
                reverse,
                up: checks.get(index).copied().unwrap_or(true),
            })
            .collect();
        let (priority, check_fault) = effective_priority(self.config.priority, &weighted);
        let fault = check_fault || !link_up;
        let reason = match (fault, link_up) {
            (true, false) => Reason::InterfaceDown,
            (true, true) => Reason::TrackFault,
            (false, _) if self.machine.state() == State::Fault && !self.faulted_by_checks => {
                Reason::InterfaceUp
            }
            (false, _) => Reason::TrackRecovered,
        };
        self.faulted_by_checks = check_fault;
        if priority != self.machine.priority() {
            tracing::info!(instance = %self.config.name, from = self.machine.priority(), to = priority, "effective priority changed");
            self.machine.set_priority(priority);
        }
        self.machine.set_fault_because(now, fault, reason)
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
    pub shutdown: watch::Receiver<bool>,
    /// The instance the floating IP follows, and where to say whether it is
    /// Master.
    pub mastership: Option<Arc<Mastership>>,
    /// The floating-IP manager's status, when there is one.
    pub floating_ip_status: Option<watch::Receiver<FloatingIpStatus>>,
    pub telemetry: Telemetry,
}

pub struct InterfaceTask {
    pub interface: String,
    pub receiver: AdvertReceiver,
    pub instances: Vec<InstanceRuntime>,
    pub shared: Shared,
    /// Times the loop woke up (adverts that changed something, timers,
    /// checks); what the fast path saves shows here.
    pub wakeups: u64,
    /// When the receive path's counters were last copied into telemetry.
    pub counters_published_ns: u64,
}

fn sleep_until_ns(deadline: Option<u64>) -> tokio::time::Sleep {
    let now = monotonic_ns();
    // Far enough to mean "never" while staying a valid Instant.
    let wait = deadline.map_or(Duration::from_secs(3600), |d| {
        Duration::from_nanos(d.saturating_sub(now))
    });
    tokio::time::sleep(wait)
}

impl InterfaceTask {
    pub async fn run(mut self) {
        let now = monotonic_ns();
        let checks = self.shared.checks.borrow().clone();
        let link_up = self.link_up();
        for i in 0..self.instances.len() {
            let mut actions = self.instances[i].apply_tracks(&checks, link_up, now);
            actions.extend(self.instances[i].machine.start(now));
            self.execute(i, actions).await;
        }
        loop {
            let silence_reports = self.receiver.reports_silence();
            let deadline = self
                .instances
                .iter()
                .filter_map(|i| i.wake_at(silence_reports))
                .min();
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
                () = sleep_until_ns(deadline) => {
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
                _ = self.shared.shutdown.changed() => break,
            }
            self.publish();
        }
        for i in 0..self.instances.len() {
            let actions = self.instances[i].machine.shutdown();
            self.execute(i, actions).await;
        }
        tracing::info!(interface = %self.interface, wakeups = self.wakeups, "interface stopped");
    }

    /// Copies what status and metrics show into telemetry. Cheap (one lock)
    /// on every wakeup; the receive path's counters, which cost a map read
    /// each, at most once a second.
    fn publish(&mut self) {
        let telemetry = &self.shared.telemetry;
        for instance in &self.instances {
            let machine = &instance.machine;
            telemetry.update_instance(&instance.config.name, |s| {
                s.state = machine.state().name().to_owned();
                s.priority = machine.priority();
                s.master = machine.master().map(|(addr, _, _)| addr.to_string());
                s.last_advert_ns = match machine.state() {
                    State::Master => None,
                    _ => machine.master().map(|(_, _, at)| at),
                };
            });
        }
        let now = monotonic_ns();
        let counters = if now.saturating_sub(self.counters_published_ns) >= 1_000_000_000 {
            self.counters_published_ns = now;
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

    async fn reapply_tracks(&mut self) {
        let checks = self.shared.checks.borrow_and_update().clone();
        self.shared.links.borrow_and_update();
        let link_up = self.link_up();
        let now = monotonic_ns();
        for i in 0..self.instances.len() {
            let actions = self.instances[i].apply_tracks(&checks, link_up, now);
            self.execute(i, actions).await;
        }
    }

    /// Processes every advert already queued, then fires due timers.
    async fn drain_and_poll(&mut self) {
        while let Some(event) = self.receiver.try_next() {
            self.on_advert(event).await;
        }
        let now = monotonic_ns();
        for i in 0..self.instances.len() {
            let actions = self.instances[i].machine.poll_timers(now);
            self.execute(i, actions).await;
        }
    }

    async fn on_advert(&mut self, event: AdvertEvent) {
        let Some(i) = self
            .instances
            .iter()
            .position(|i| i.config.vrid == event.vrid)
        else {
            return;
        };
        if event.flags & change::SILENCE != 0 {
            tracing::debug!(instance = %self.instances[i].config.name, "kernel reports the VRID silent");
            self.instances[i].silence_reported = true;
            return;
        }
        self.instances[i].silence_reported = false;
        let advert = ReceivedAdvert {
            timestamp_ns: event.timestamp_ns,
            src: Ipv4Addr::from(event.src_addr),
            priority: event.priority,
            interval_cs: event.interval_cs,
        };
        match self.instances[i].machine.advert(&advert) {
            Ok(actions) => self.execute(i, actions).await,
            Err(ignored) => {
                tracing::trace!(instance = %self.instances[i].config.name, ?ignored, src = %advert.src, "advert ignored")
            }
        }
    }

    async fn execute(&mut self, i: usize, actions: Vec<Action>) {
        for action in actions {
            let instance = &self.instances[i];
            let name = &instance.config.name;
            match action {
                Action::SendAdvert { priority } => {
                    if let Err(error) = instance.sender.send(&instance.advert(priority)) {
                        tracing::warn!(instance = %name, %error, "advert not sent");
                    }
                }
                Action::Transition { from, to, reason } => {
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
                        "state transition"
                    );
                    self.on_transition(i, from, to).await;
                }
            }
        }
    }

    async fn on_transition(&mut self, i: usize, from: State, to: State) {
        let instance = &self.instances[i];
        let config = &instance.config;
        // First, so the floating IP assign starts before anything slower.
        if let Some(mastership) = &self.shared.mastership
            && mastership.instance == config.name
        {
            mastership.set(to == State::Master);
        }
        if to == State::Master {
            for vip in &config.virtual_addresses {
                if let Err(error) = self.shared.addresses.add(&config.interface, *vip).await {
                    tracing::error!(instance = %config.name, %error, "could not add virtual address");
                }
            }
            if !instance.vips.is_empty() {
                // Normally opened at start; if that failed, one for this
                // takeover (slower: closing it stalls the thread briefly).
                let fallback;
                let garp = match &instance.garp {
                    Some(garp) => Some(garp),
                    None => {
                        fallback = GarpSender::open(&config.interface)
                            .inspect_err(|error| tracing::warn!(instance = %config.name, %error, "gratuitous ARP not sent"))
                            .ok();
                        fallback.as_ref()
                    }
                };
                if let Some(garp) = garp
                    && let Err(error) = garp.send(&instance.vips)
                {
                    tracing::warn!(instance = %config.name, %error, "gratuitous ARP not sent");
                }
            }
        } else if from == State::Master || from == State::Initialize {
            // Leaving Master, and at startup: a crashed predecessor may have
            // left the addresses on the interface (keepalived removes them
            // at startup too); a backup must not answer for them.
            for vip in &config.virtual_addresses {
                if let Err(error) = self.shared.addresses.remove(&config.interface, *vip).await {
                    tracing::error!(instance = %config.name, %error, "could not remove virtual address");
                }
            }
        }
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
    }
}
