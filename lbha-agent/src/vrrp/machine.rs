//! The VRRP state machine of RFC 5798 section 6.4 (and RFC 3768 for v2),
//! with keepalived's Fault state, as a pure value: inputs carry their own
//! timestamps (`CLOCK_MONOTONIC` ns, the kernel's advert timestamps included),
//! outputs are [`Action`]s for the driver. Nothing here does I/O or reads a
//! clock, so every transition is tested with a simulated one.

use std::net::IpAddr;

/// RFC 5798 states, plus Fault: a tracked check with weight 0 is down, so
/// the router must neither advertise nor take over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Initialize,
    Backup,
    Master,
    Fault,
}

impl State {
    /// keepalived's spelling, used by notify scripts and logs.
    pub const fn name(self) -> &'static str {
        match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

/// What does not change while an instance runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    pub version: u8,
    /// Advertisement_Interval in centiseconds (v2: whole seconds x 100).
    pub advert_interval_cs: u16,
    pub preempt: bool,
    pub preempt_delay_ns: u64,
    /// Our primary address, the source of our adverts; breaks priority ties.
    pub primary_addr: IpAddr,
    /// keepalived's `down_timer_adverts`: Master_Adver_Intervals in
    /// Master_Down_Interval (RFC 3768/5798: 3).
    pub down_timer_adverts: u8,
    /// keepalived's `lower_prio_no_advert`: a Master does not answer a
    /// lower-priority advert with one of its own.
    pub lower_prio_no_advert: bool,
    /// keepalived's `higher_prio_send_advert`: a Master sends one advert of
    /// its own before a higher-priority one makes it Backup.
    pub higher_prio_send_advert: bool,
}

/// An advert as the state machine needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceivedAdvert {
    /// When it arrived (kernel timestamp on the XDP path).
    pub timestamp_ns: u64,
    pub src: IpAddr,
    pub priority: u8,
    pub interval_cs: u16,
}

/// What the driver must do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send one advert with this priority (0: resignation).
    SendAdvert { priority: u8 },
    /// The state changed: take or release the virtual addresses, send
    /// gratuitous ARP, run notify scripts.
    Transition {
        from: State,
        to: State,
        reason: Reason,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Startup,
    /// We own the addresses (priority 255).
    AddressOwner,
    /// No advert from a master for Master_Down_Interval.
    MasterDown,
    /// The master resigned (priority 0) and Skew_Time passed.
    MasterResigned,
    /// An advert with higher priority (or equal priority and higher address).
    HigherPriorityMaster,
    /// A tracked check with weight 0 failed.
    TrackFault,
    /// All tracked checks with weight 0 are up again.
    TrackRecovered,
    /// The interface went down (no one can hear us, nor we them).
    InterfaceDown,
    /// The interface is up again.
    InterfaceUp,
    /// The instance's sync group moved it (another member's state).
    SyncGroup,
    /// A planned handover (`lbha-agent handover`): the peer holds the
    /// floating IP already; we resign and hold our priority low.
    Handover,
    Shutdown,
}

impl Reason {
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Startup => "startup",
            Reason::AddressOwner => "address owner",
            Reason::MasterDown => "master down",
            Reason::MasterResigned => "master resigned",
            Reason::HigherPriorityMaster => "higher priority master",
            Reason::TrackFault => "tracked check failed",
            Reason::TrackRecovered => "tracked checks recovered",
            Reason::InterfaceDown => "interface down",
            Reason::InterfaceUp => "interface up",
            Reason::SyncGroup => "sync group",
            Reason::Handover => "handover",
            Reason::Shutdown => "shutdown",
        }
    }
}

/// Why an advert was not acted upon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// Our own advert looped back.
    Own,
    /// v2: Adver Int differs from ours (RFC 3768 7.1 says discard).
    IntervalMismatch,
    /// Not in a state that listens (Initialize, Fault).
    NotListening,
    /// Lower priority than ours (Master, or Backup that preempts).
    LowerPriority,
}

const NS_PER_CS: u64 = 10_000_000;

pub struct Machine {
    params: Params,
    state: State,
    /// Effective priority (configured priority adjusted by tracked checks).
    priority: u8,
    fault: bool,
    /// Why we are (or would start) in Fault.
    fault_reason: Reason,
    /// Master_Adver_Interval: v3 learns it from the master's adverts.
    master_adver_interval_cs: u16,
    master_down_at: Option<u64>,
    /// Set while Master_Down_Timer runs for Skew_Time after a resignation.
    resigned: bool,
    adver_at: Option<u64>,
    started_at: u64,
    /// When we first saw the current lower-priority master (preempt_delay).
    lower_master_since: Option<u64>,
    /// The last master we accepted adverts from: address, priority, time.
    master: Option<(IpAddr, u8, u64)>,
    /// When we last accepted an advert from any master (kept across our own
    /// takeover, to measure how long the group went without one).
    last_master_advert_ns: Option<u64>,
    /// Backup: the last advert came from a lower-priority master we are
    /// waiting out in order to preempt it.
    ignoring_lower_master: bool,
    /// The master we followed when we last became Master ourselves
    /// (address, priority): the node we took over from.
    previous_master: Option<(IpAddr, u8)>,
    /// Until when a heartbeat over another network says a healthy master
    /// of this VRID is alive.
    master_alive_until: Option<u64>,
    /// Backup: the master-down timer ran out, but the heartbeat shows the
    /// master alive: the VRRP path is partitioned, so we stay Backup.
    held_by_heartbeat: bool,
    /// A member of a sync group that is not Master: a Backup does not take
    /// over on its own but says it wants to ([`Self::wants_master`]); the
    /// group moves every member together ([`Self::force_master`]).
    sync_hold: bool,
    /// Held Backup: its master-down timer ran out (or it owns the
    /// addresses) since the last advert of a master it follows.
    wants_master: bool,
    /// After a planned handover: we advertise and compete with
    /// [`HANDOVER_PRIORITY`] instead of `priority`, so a preempting node
    /// does not take the IP straight back. Cleared by
    /// [`Self::release_handover_hold`] or by becoming Master again (the
    /// peer failed, or handed back): a Master at priority 1 would be
    /// preempted by any peer that comes back.
    handover_hold: bool,
}

/// The priority a node holds after handing over: the lowest a Backup can
/// have (0 is a resignation), so it still takes over if the peer dies but
/// never preempts it.
pub const HANDOVER_PRIORITY: u8 = 1;

impl Machine {
    pub fn new(params: Params, priority: u8) -> Self {
        let interval = params.advert_interval_cs;
        Self {
            params,
            state: State::Initialize,
            priority,
            fault: false,
            fault_reason: Reason::TrackFault,
            master_adver_interval_cs: interval,
            master_down_at: None,
            resigned: false,
            adver_at: None,
            started_at: 0,
            lower_master_since: None,
            master: None,
            last_master_advert_ns: None,
            ignoring_lower_master: false,
            previous_master: None,
            master_alive_until: None,
            held_by_heartbeat: false,
            sync_hold: false,
            wants_master: false,
            handover_hold: false,
        }
    }

    /// Planned handover: a Master resigns (priority-0 advert, Backup)
    /// and holds [`HANDOVER_PRIORITY`] until released. `None` (nothing
    /// changed) when not Master.
    pub fn hand_over(&mut self, now: u64) -> Option<Vec<Action>> {
        if self.state != State::Master {
            return None;
        }
        let mut actions = vec![Action::SendAdvert { priority: 0 }];
        self.handover_hold = true;
        self.master = None;
        self.become_backup(now, Reason::Handover, &mut actions);
        Some(actions)
    }

    /// Ends the hold of a handover; returns whether there was one. The
    /// configured (tracked) priority counts again from the next decision.
    pub fn release_handover_hold(&mut self) -> bool {
        std::mem::take(&mut self.handover_hold)
    }

    pub fn handover_held(&self) -> bool {
        self.handover_hold
    }

    /// The priority elections use: the tracked one, or the handover's.
    fn effective(&self) -> u8 {
        if self.handover_hold {
            HANDOVER_PRIORITY
        } else {
            self.priority
        }
    }

    /// The tracked priority, hold or not (what checks set).
    pub fn base_priority(&self) -> u8 {
        self.priority
    }

    /// Sync groups: while `hold`, a Backup whose master-down timer runs out
    /// (or that owns the addresses) stays Backup and wants Master instead,
    /// its timer restarted (keepalived's `vrrp_sync_can_goto_master`).
    pub fn set_sync_hold(&mut self, hold: bool) {
        self.sync_hold = hold;
        if !hold {
            self.wants_master = false;
        }
    }

    /// A held Backup that would have become Master.
    pub fn wants_master(&self) -> bool {
        self.wants_master
    }

    /// The sync group went Master: a Backup takes over now.
    pub fn force_master(&mut self, now: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state == State::Backup {
            self.become_master(now, Reason::SyncGroup, &mut actions);
        }
        actions
    }

    /// The sync group went Backup (another member lost an election): a
    /// Master steps down without a resignation advert, as keepalived's
    /// `vrrp_sync_backup` does.
    pub fn force_backup(&mut self, now: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state == State::Master {
            self.become_backup(now, Reason::SyncGroup, &mut actions);
        }
        actions
    }

    /// A heartbeat over another network says a healthy master of this VRID
    /// is alive until `until` (monotonic ns), or no one says so (`None`).
    /// A Backup whose master-down timer runs out before then stays Backup.
    pub fn set_master_alive_until(&mut self, until: Option<u64>) {
        self.master_alive_until = until;
    }

    /// Whether this Backup stays Backup only because the heartbeat shows the
    /// master alive while its adverts do not arrive (a partitioned VRRP path).
    pub fn held_by_heartbeat(&self) -> bool {
        self.held_by_heartbeat
    }

    /// The master we followed before we last became Master (address,
    /// priority as it advertised), if we took over from one.
    pub fn previous_master(&self) -> Option<(IpAddr, u8)> {
        self.previous_master
    }

    /// Whether this Backup follows a master whose adverts it accepts, so that
    /// the master-down timer can only matter once that master falls silent
    /// or its adverts change. Then a kernel report of silence can stand in
    /// for waking at every master-down deadline. Not while a resignation's
    /// Skew_Time runs, nor while waiting out a lower-priority master.
    pub fn follows_master(&self) -> bool {
        self.state == State::Backup
            && !self.resigned
            && !self.ignoring_lower_master
            && self.master.is_some_and(|(_, priority, _)| {
                !self.params.preempt || priority >= self.effective()
            })
    }

    /// When the last advert from a master was accepted.
    pub fn last_master_advert_ns(&self) -> Option<u64> {
        self.last_master_advert_ns
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The priority we advertise: the tracked one, or
    /// [`HANDOVER_PRIORITY`] while a handover holds it.
    pub fn priority(&self) -> u8 {
        self.effective()
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The master we last heard from (address, priority, when), or ourselves.
    pub fn master(&self) -> Option<(IpAddr, u8, u64)> {
        match self.state {
            State::Master => Some((self.params.primary_addr, self.effective(), 0)),
            _ => self.master,
        }
    }

    pub fn master_adver_interval_cs(&self) -> u16 {
        self.master_adver_interval_cs
    }

    /// Skew_Time in ns: v3 `((256 - Priority) * Master_Adver_Interval) / 256`
    /// centiseconds, v2 `(256 - Priority) / 256` seconds.
    pub fn skew_time_ns(&self) -> u64 {
        let weight = 256 - u64::from(self.effective());
        if self.params.version == 2 {
            weight * 1_000_000_000 / 256
        } else {
            weight * u64::from(self.master_adver_interval_cs) * NS_PER_CS / 256
        }
    }

    /// Master_Down_Interval in ns: `N * Master_Adver_Interval + Skew_Time`
    /// with N = `down_timer_adverts` (the RFCs' 3 by default), as keepalived
    /// 2.2 computes it (`VRRP_MS_DOWN_TIMER`).
    pub fn master_down_interval_ns(&self) -> u64 {
        u64::from(self.params.down_timer_adverts)
            * u64::from(self.master_adver_interval_cs)
            * NS_PER_CS
            + self.skew_time_ns()
    }

    fn advert_interval_ns(&self) -> u64 {
        u64::from(self.params.advert_interval_cs) * NS_PER_CS
    }

    /// The first advert deadline after `now` on the cadence every Master
    /// with this interval shares: the multiples of the interval on the
    /// monotonic clock. At most one interval away (never later than the RFC
    /// asks), and the same instant for every instance with this interval,
    /// so an interface's thousand masters wake once per interval and send
    /// their adverts in one batch instead of a thousand times.
    fn next_advert_after(&self, now: u64) -> u64 {
        let interval = self.advert_interval_ns().max(1);
        (now / interval + 1) * interval
    }

    /// The earliest time [`Self::poll_timers`] has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        match (self.master_down_at, self.adver_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the master-down timer fires, if it runs (Backup only).
    pub fn master_down_at(&self) -> Option<u64> {
        self.master_down_at
    }

    fn transition(&mut self, to: State, reason: Reason, actions: &mut Vec<Action>) {
        self.held_by_heartbeat = false;
        self.wants_master = false;
        let from = self.state;
        self.state = to;
        actions.push(Action::Transition { from, to, reason });
    }

    fn become_master(&mut self, now: u64, reason: Reason, actions: &mut Vec<Action>) {
        self.previous_master = self
            .master
            .map(|(address, priority, _)| (address, priority));
        self.master_down_at = None;
        self.resigned = false;
        self.ignoring_lower_master = false;
        self.lower_master_since = None;
        self.master = None;
        // Master again (the peer failed or handed back): the hold's job,
        // not preempting the peer, is done.
        self.handover_hold = false;
        actions.push(Action::SendAdvert {
            priority: self.effective(),
        });
        self.adver_at = Some(self.next_advert_after(now));
        self.transition(State::Master, reason, actions);
    }

    fn become_backup(&mut self, now: u64, reason: Reason, actions: &mut Vec<Action>) {
        self.adver_at = None;
        self.resigned = false;
        self.ignoring_lower_master = false;
        self.master_down_at = Some(now + self.master_down_interval_ns());
        self.transition(State::Backup, reason, actions);
    }

    /// RFC 5798 6.4.1: leave Initialize.
    fn initialize(&mut self, now: u64, reason: Reason, actions: &mut Vec<Action>) {
        self.master_adver_interval_cs = self.params.advert_interval_cs;
        if self.fault {
            self.master_down_at = None;
            self.transition(State::Fault, self.fault_reason, actions);
        } else if self.effective() == 255 && self.sync_hold {
            self.become_backup(now, reason, actions);
            self.wants_master = true;
        } else if self.effective() == 255 {
            self.become_master(now, Reason::AddressOwner, actions);
        } else {
            self.become_backup(now, reason, actions);
        }
    }

    /// Startup event.
    pub fn start(&mut self, now: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state == State::Initialize {
            self.started_at = now;
            self.initialize(now, Reason::Startup, &mut actions);
        }
        actions
    }

    /// Shutdown event: a master resigns with a priority-0 advert.
    pub fn shutdown(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state == State::Master {
            actions.push(Action::SendAdvert { priority: 0 });
        }
        if self.state != State::Initialize {
            self.master_down_at = None;
            self.adver_at = None;
            self.transition(State::Initialize, Reason::Shutdown, &mut actions);
        }
        actions
    }

    /// Fires the timers that are due at `now`.
    pub fn poll_timers(&mut self, now: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        match self.state {
            State::Backup => {
                if self.master_down_at.is_some_and(|at| at <= now) {
                    // Adverts stopped but the master is alive on the other
                    // path: taking over would make two masters. Look again
                    // when its heartbeat runs out. (A resignation is the
                    // master saying it stops: no heartbeat overrides that.)
                    // Nor is a lower-priority master we hear and wait out
                    // to preempt: the path works, and its heartbeat saying
                    // it is alive must not keep it Master over us.
                    if !self.resigned
                        && !self.ignoring_lower_master
                        && let Some(alive_until) = self.master_alive_until
                        && alive_until > now
                    {
                        self.master_down_at = Some(alive_until);
                        self.held_by_heartbeat = true;
                        return actions;
                    }
                    if self.sync_hold {
                        self.wants_master = true;
                        self.resigned = false;
                        self.master = None;
                        self.master_down_at = Some(now + self.master_down_interval_ns());
                        return actions;
                    }
                    let reason = if self.resigned {
                        Reason::MasterResigned
                    } else {
                        Reason::MasterDown
                    };
                    self.become_master(now, reason, &mut actions);
                }
            }
            State::Master => {
                if let Some(at) = self.adver_at
                    && at <= now
                {
                    actions.push(Action::SendAdvert {
                        priority: self.effective(),
                    });
                    // Keep the cadence: the next advert is one interval after
                    // this one was due, unless we are more than that late
                    // (then the next point of the shared cadence).
                    let next = at + self.advert_interval_ns();
                    self.adver_at = Some(if next > now {
                        next
                    } else {
                        self.next_advert_after(now)
                    });
                }
            }
            State::Initialize | State::Fault => {}
        }
        actions
    }

    /// Whether an advert with `priority` from `src` beats us.
    fn beats_us(&self, priority: u8, src: IpAddr) -> bool {
        priority > self.effective()
            // One family per instance: IPv4 compares as its u32, IPv6 as
            // its u128 (RFC 5798 6.4.3: the larger primary address wins).
            || (priority == self.effective() && src > self.params.primary_addr)
    }

    /// Receive an ADVERTISEMENT (RFC 5798 6.4.2 Backup, 6.4.3 Master).
    pub fn advert(&mut self, advert: &ReceivedAdvert) -> Result<Vec<Action>, Ignored> {
        if advert.src == self.params.primary_addr {
            return Err(Ignored::Own);
        }
        if self.params.version == 2 && advert.interval_cs != self.params.advert_interval_cs {
            return Err(Ignored::IntervalMismatch);
        }
        let now = advert.timestamp_ns;
        let mut actions = Vec::new();
        match self.state {
            State::Initialize | State::Fault => return Err(Ignored::NotListening),
            State::Backup => {
                if advert.priority == 0 {
                    self.last_master_advert_ns = Some(now);
                    // The master resigned: take over after Skew_Time unless a
                    // higher-priority backup speaks first.
                    self.master_down_at = Some(now + self.skew_time_ns());
                    self.resigned = true;
                    self.ignoring_lower_master = false;
                    self.master = None;
                } else if !self.params.preempt
                    || advert.priority >= self.effective()
                    || !self.preempt_allowed(now)
                {
                    if self.params.version == 3 {
                        self.master_adver_interval_cs = advert.interval_cs;
                    }
                    if advert.priority >= self.effective() {
                        self.lower_master_since = None;
                    }
                    self.master_down_at = Some(now + self.master_down_interval_ns());
                    self.resigned = false;
                    self.ignoring_lower_master = false;
                    self.master = Some((advert.src, advert.priority, now));
                    self.last_master_advert_ns = Some(now);
                    self.held_by_heartbeat = false;
                    self.wants_master = false;
                } else {
                    // Lower priority master and we preempt: let the
                    // master-down timer run out.
                    self.ignoring_lower_master = true;
                    return Err(Ignored::LowerPriority);
                }
            }
            State::Master => {
                if advert.priority == 0 {
                    // Another master resigned: make sure backups hear us now.
                    actions.push(Action::SendAdvert {
                        priority: self.effective(),
                    });
                    self.adver_at = Some(self.next_advert_after(now));
                } else if self.beats_us(advert.priority, advert.src) {
                    if self.params.higher_prio_send_advert {
                        actions.push(Action::SendAdvert {
                            priority: self.effective(),
                        });
                    }
                    if self.params.version == 3 {
                        self.master_adver_interval_cs = advert.interval_cs;
                    }
                    self.master = Some((advert.src, advert.priority, now));
                    self.become_backup(now, Reason::HigherPriorityMaster, &mut actions);
                } else {
                    return Err(Ignored::LowerPriority);
                }
            }
        }
        Ok(actions)
    }

    /// What a Master does after it ignored a lower-priority advert at `now`:
    /// as keepalived, it answers at once with an advert of its own, so the
    /// other router (which may have missed ours: a healed partition, a
    /// second master) goes Backup within one packet rather than one
    /// interval, and its next advert is one interval later. Nothing with
    /// `lower_prio_no_advert` (RFC 5798's "discard"), nor outside Master.
    pub fn answer_lower_priority(&mut self, now: u64) -> Vec<Action> {
        if self.state != State::Master || self.params.lower_prio_no_advert {
            return Vec::new();
        }
        self.adver_at = Some(self.next_advert_after(now));
        vec![Action::SendAdvert {
            priority: self.effective(),
        }]
    }

    /// preempt_delay: a lower-priority master is tolerated until the delay
    /// has passed since startup and since we first saw it.
    fn preempt_allowed(&mut self, now: u64) -> bool {
        if self.params.preempt_delay_ns == 0 {
            return true;
        }
        let since = *self.lower_master_since.get_or_insert(now);
        now >= self.started_at.max(since) + self.params.preempt_delay_ns
    }

    /// The effective priority changed (tracked checks with a weight). A
    /// master advertises the new priority from its next advert on.
    pub fn set_priority(&mut self, priority: u8) {
        self.priority = priority;
    }

    /// A tracked check with weight 0 went down (`true`) or all came back.
    pub fn set_fault(&mut self, now: u64, fault: bool) -> Vec<Action> {
        let reason = if fault {
            Reason::TrackFault
        } else {
            Reason::TrackRecovered
        };
        self.set_fault_because(now, fault, reason)
    }

    /// Enters or leaves Fault, saying why (a check, the interface).
    pub fn set_fault_because(&mut self, now: u64, fault: bool, reason: Reason) -> Vec<Action> {
        let mut actions = Vec::new();
        if fault == self.fault {
            return actions;
        }
        self.fault = fault;
        if fault {
            self.fault_reason = reason;
        }
        match (fault, self.state) {
            (true, State::Master) => {
                actions.push(Action::SendAdvert { priority: 0 });
                self.adver_at = None;
                self.transition(State::Fault, reason, &mut actions);
            }
            (true, State::Backup) => {
                self.master_down_at = None;
                self.transition(State::Fault, reason, &mut actions);
            }
            (false, State::Fault) => self.initialize(now, reason, &mut actions),
            _ => {}
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use std::net::Ipv4Addr;

    use super::*;

    const MS: u64 = 1_000_000;
    const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    const LOW: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const HIGH: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));

    fn params(version: u8, interval_cs: u16) -> Params {
        Params {
            version,
            advert_interval_cs: interval_cs,
            preempt: true,
            preempt_delay_ns: 0,
            primary_addr: ME,
            down_timer_adverts: 3,
            lower_prio_no_advert: false,
            higher_prio_send_advert: false,
        }
    }

    fn machine(priority: u8) -> Machine {
        Machine::new(params(3, 100), priority)
    }

    fn adv(ms: u64, src: IpAddr, priority: u8) -> ReceivedAdvert {
        ReceivedAdvert {
            timestamp_ns: ms * MS,
            src,
            priority,
            interval_cs: 100,
        }
    }

    fn to(state: State, reason: Reason) -> impl Fn(&Action) -> bool {
        move |a| matches!(a, Action::Transition { to, reason: r, .. } if *to == state && *r == reason)
    }

    /// A non-owner that became master when nobody spoke for
    /// Master_Down_Interval after it started.
    fn master_by_timeout(priority: u8) -> Machine {
        let mut m = machine(priority);
        m.start(0);
        m.poll_timers(m.next_deadline().unwrap());
        assert_eq!(m.state(), State::Master);
        m
    }

    /// Whether the timers due at `at` make `m` master, for `reason`.
    fn becomes_master(m: &mut Machine, at: u64, reason: Reason) -> bool {
        m.poll_timers(at).iter().any(to(State::Master, reason))
    }

    /// A partitioned VRRP path is not a dead master: while a heartbeat over
    /// another network shows the master alive, a Backup whose adverts
    /// stopped stays Backup, and takes over once the heartbeat stops too.
    #[test]
    fn a_held_sync_group_member_wants_master_instead_of_taking_over() {
        let peer = IpAddr::from(Ipv4Addr::new(10, 0, 0, 9));
        let mut m = machine(100);
        m.set_sync_hold(true);
        m.start(0);
        m.advert(&adv(10, peer, 200)).unwrap();
        let down = m.next_deadline().unwrap();
        assert!(m.poll_timers(down).is_empty(), "held: no takeover");
        assert_eq!(m.state(), State::Backup);
        assert!(m.wants_master());
        assert!(m.next_deadline().unwrap() > down, "its timer restarted");
        // Its master speaks again: it no longer wants to.
        m.advert(&adv(down / MS + 1, peer, 200)).unwrap();
        assert!(!m.wants_master());
        // The group goes Master: it takes over now, advertising.
        let actions = m.force_master(down + MS);
        assert_eq!(actions[0], Action::SendAdvert { priority: 100 });
        assert!(matches!(
            actions[1],
            Action::Transition {
                from: State::Backup,
                to: State::Master,
                reason: Reason::SyncGroup
            }
        ));
        assert!(m.force_master(down + 2 * MS).is_empty(), "already Master");
        // The group goes Backup: it steps down without a resignation.
        let actions = m.force_backup(down + 3 * MS);
        assert_eq!(
            actions,
            vec![Action::Transition {
                from: State::Master,
                to: State::Backup,
                reason: Reason::SyncGroup
            }]
        );
        assert!(
            m.next_deadline().is_some(),
            "a Backup's master-down timer runs"
        );
    }

    #[test]
    fn a_held_address_owner_starts_backup_wanting_master() {
        let mut m = machine(255);
        m.set_sync_hold(true);
        m.start(0);
        assert_eq!(m.state(), State::Backup);
        assert!(m.wants_master());
        m.set_sync_hold(false);
        assert!(!m.wants_master());
        let mut unheld = machine(255);
        unheld.start(0);
        assert_eq!(unheld.state(), State::Master);
    }

    #[test]
    fn a_heartbeat_holds_a_backup_whose_master_is_only_cut_off() {
        let peer = IpAddr::from(Ipv4Addr::new(10, 0, 0, 9));
        let mut m = machine(100);
        m.start(0);
        m.advert(&adv(10, peer, 200)).unwrap();
        let down = m.next_deadline().unwrap();
        m.set_master_alive_until(Some(down + 250 * MS));
        assert!(
            m.poll_timers(down).is_empty(),
            "no takeover while the master is alive"
        );
        assert_eq!(m.state(), State::Backup);
        assert!(m.held_by_heartbeat());
        assert_eq!(
            m.next_deadline(),
            Some(down + 250 * MS),
            "looks again when it runs out"
        );

        // Heartbeats keep coming: still held.
        m.set_master_alive_until(Some(down + 500 * MS));
        assert!(m.poll_timers(down + 250 * MS).is_empty());
        // The heartbeat stops too: the master is gone.
        assert!(becomes_master(&mut m, down + 500 * MS, Reason::MasterDown));
        assert!(!m.held_by_heartbeat());
    }

    /// A lower-priority Master (it came up first) whose adverts we hear
    /// and wait out: its heartbeat is no partition, we preempt it.
    #[test]
    fn a_heartbeat_does_not_keep_a_lower_master_from_being_preempted() {
        let mut m = machine(200);
        m.start(0);
        assert_eq!(m.advert(&adv(10, LOW, 100)), Err(Ignored::LowerPriority));
        let down = m.next_deadline().unwrap();
        m.set_master_alive_until(Some(down + 10_000 * MS));
        assert!(becomes_master(&mut m, down, Reason::MasterDown));
        assert!(!m.held_by_heartbeat());
    }

    #[test]
    fn adverts_returning_end_the_hold_and_a_resignation_is_never_held() {
        let peer = IpAddr::from(Ipv4Addr::new(10, 0, 0, 9));
        let mut m = machine(100);
        m.start(0);
        m.advert(&adv(10, peer, 200)).unwrap();
        let down = m.next_deadline().unwrap();
        m.set_master_alive_until(Some(down + 10_000 * MS));
        m.poll_timers(down);
        assert!(m.held_by_heartbeat());
        m.advert(&adv(down / MS + 1, peer, 200)).unwrap();
        assert!(!m.held_by_heartbeat(), "the VRRP path is back");

        // The master resigns (priority 0): it stops on purpose, the heartbeat
        // (still fresh) does not override that.
        let at = down / MS + 2;
        m.advert(&adv(at, peer, 0)).unwrap();
        let skew = m.next_deadline().unwrap();
        assert!(becomes_master(&mut m, skew, Reason::MasterResigned));
    }

    /// The floating IP's split-brain rule needs to know whom a Master took
    /// over from: the last master it followed, as that master advertised.
    #[test]
    fn a_takeover_remembers_the_master_it_replaced() {
        let peer = IpAddr::from(Ipv4Addr::new(10, 0, 0, 9));
        let mut m = machine(100);
        m.start(0);
        m.advert(&adv(10, peer, 200)).unwrap();
        assert_eq!(m.previous_master(), None, "still Backup");
        let down = m.next_deadline().unwrap();
        assert!(becomes_master(&mut m, down, Reason::MasterDown));
        assert_eq!(m.previous_master(), Some((peer, 200)));

        // Becoming Master without having followed anyone forgets it.
        let mut fresh = master_by_timeout(100);
        assert_eq!(fresh.previous_master(), None);
        fresh.shutdown();
    }

    /// RFC 5798 6.1: Skew_Time = ((256 - priority) * interval) / 256 and
    /// Master_Down_Interval = N * interval + Skew_Time (v2: whole seconds),
    /// N being keepalived's `down_timer_adverts` (the RFCs' 3 by default).
    #[rstest]
    // v3, priority 100, 1 s: skew = 156 * 100 cs / 256 = 60.9375 cs.
    #[case::v3_priority_100_1s(3, 100, 100, 3, 156 * 100 * 10_000_000 / 256, 3_000 * MS + 609_375_000)]
    // v2, priority 200: skew = 56/256 s.
    #[case::v2_priority_200_1s(2, 100, 200, 3, 218_750_000, 3_218_750_000)]
    // 10 ms adverts: master down within 3 intervals + skew.
    #[case::v3_priority_254_10ms(3, 1, 254, 3, 2 * 10 * MS / 256, 30 * MS + 2 * 10 * MS / 256)]
    // down_timer_adverts 1: one interval + the same skew.
    #[case::v3_priority_100_1s_one_advert(3, 100, 100, 1, 609_375_000, 1_000 * MS + 609_375_000)]
    #[case::v2_priority_200_1s_one_advert(2, 100, 200, 1, 218_750_000, 1_218_750_000)]
    // down_timer_adverts 10 at 100 ms, priority 150: skew = 106 * 10 cs / 256.
    #[case::v3_priority_150_100ms_ten_adverts(3, 10, 150, 10, 41_406_250, 1_041_406_250)]
    // The largest: 100 intervals of the longest v2 interval (255 s).
    #[case::v2_priority_1_255s_hundred_adverts(2, 25_500, 1, 100, 996_093_750, 25_500_996_093_750)]
    // And of the longest v3 interval (40.95 s), skew 1/256 of it.
    #[case::v3_priority_255_4095cs_hundred_adverts(
        3,
        4095,
        255,
        100,
        159_960_937,
        4_095_159_960_937
    )]
    fn rfc_timers(
        #[case] version: u8,
        #[case] interval_cs: u16,
        #[case] priority: u8,
        #[case] down_timer_adverts: u8,
        #[case] skew_ns: u64,
        #[case] master_down_ns: u64,
    ) {
        let m = Machine::new(
            Params {
                down_timer_adverts,
                ..params(version, interval_cs)
            },
            priority,
        );
        assert_eq!(m.skew_time_ns(), skew_ns);
        assert_eq!(m.master_down_interval_ns(), master_down_ns);
    }

    /// A backup takes over `down_timer_adverts` intervals (and Skew_Time)
    /// after the master's last advert, not a nanosecond earlier, counting
    /// in the master's interval (learned from its v3 adverts).
    #[rstest]
    #[case::one_advert(1)]
    #[case::rfc(3)]
    #[case::ten_adverts(10)]
    fn backup_takes_over_after_down_timer_adverts_intervals(#[case] n: u8) {
        let mut m = Machine::new(
            Params {
                down_timer_adverts: n,
                ..params(3, 100)
            },
            100,
        );
        m.start(0);
        // The master advertises every 500 ms (v3: its interval is learned).
        let mut advert = adv(100, HIGH, 200);
        advert.interval_cs = 50;
        assert_eq!(m.advert(&advert), Ok(vec![]));
        let skew = 156 * 50 * 10_000_000 / 256;
        let down = 100 * MS + u64::from(n) * 500 * MS + skew;
        assert_eq!(m.master_down_interval_ns(), u64::from(n) * 500 * MS + skew);
        assert_eq!(m.next_deadline(), Some(down));
        assert!(m.poll_timers(down - 1).is_empty());
        assert!(becomes_master(&mut m, down, Reason::MasterDown));
    }

    #[test]
    fn startup_enters_backup_then_master_when_nobody_speaks() {
        let mut m = machine(100);
        let actions = m.start(0);
        assert!(actions.iter().any(to(State::Backup, Reason::Startup)));
        assert_eq!(m.state(), State::Backup);
        let down = m.master_down_interval_ns();
        assert_eq!(m.next_deadline(), Some(down));
        assert!(m.poll_timers(down - 1).is_empty());
        let actions = m.poll_timers(down);
        assert_eq!(actions[0], Action::SendAdvert { priority: 100 });
        assert!(actions.iter().any(to(State::Master, Reason::MasterDown)));
        // The next advert on the cadence every 1 s master shares (the
        // multiples of the interval): within one interval, here at 4 s.
        assert_eq!(m.next_deadline(), Some(4_000 * MS));
        assert!(m.next_deadline().unwrap() - down <= 1_000 * MS);
        // And from there one interval apart.
        m.poll_timers(4_000 * MS);
        assert_eq!(m.next_deadline(), Some(5_000 * MS));
    }

    /// Masters with the same interval advertise at the same instants, so
    /// an interface's many instances are sent in one batch per interval.
    #[test]
    fn masters_share_one_cadence_per_interval() {
        let mut a = machine(100);
        let mut b = machine(150);
        a.start(0);
        b.start(123 * MS);
        let (down_a, down_b) = (a.next_deadline().unwrap(), b.next_deadline().unwrap());
        assert_ne!(down_a, down_b);
        a.poll_timers(down_a);
        b.poll_timers(down_b);
        assert_eq!(a.next_deadline(), b.next_deadline());
        // Late by more than an interval: back on the cadence.
        let late = a.next_deadline().unwrap() + 2_500 * MS;
        a.poll_timers(late);
        assert_eq!(a.next_deadline().unwrap() % (1_000 * MS), 0);
    }

    #[test]
    fn address_owner_is_master_at_once() {
        let mut m = machine(255);
        let actions = m.start(0);
        assert_eq!(actions[0], Action::SendAdvert { priority: 255 });
        assert!(actions.iter().any(to(State::Master, Reason::AddressOwner)));
    }

    #[test]
    fn master_advertises_every_interval_keeping_cadence() {
        let mut m = machine(255);
        m.start(0);
        for n in 1..=5u64 {
            // Woken a little late each time: cadence must not drift.
            let actions = m.poll_timers(n * 1_000 * MS + 3 * MS);
            assert_eq!(actions, vec![Action::SendAdvert { priority: 255 }]);
            assert_eq!(m.next_deadline(), Some((n + 1) * 1_000 * MS));
        }
    }

    #[test]
    fn backup_adverts_from_higher_master_reset_the_timer() {
        let mut m = machine(100);
        m.start(0);
        for t in [500, 1500, 2500, 3500] {
            assert_eq!(m.advert(&adv(t, HIGH, 200)), Ok(vec![]));
            assert_eq!(
                m.next_deadline(),
                Some(t * MS + m.master_down_interval_ns())
            );
        }
        assert_eq!(m.master(), Some((HIGH, 200, 3500 * MS)));
        assert!(m.poll_timers(4000 * MS).is_empty());
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn backup_preempts_a_lower_priority_master() {
        let mut m = machine(100);
        m.start(0);
        assert_eq!(m.advert(&adv(500, LOW, 50)), Err(Ignored::LowerPriority));
        let down = m.master_down_interval_ns();
        assert!(becomes_master(&mut m, down, Reason::MasterDown));
    }

    #[test]
    fn nopreempt_backup_keeps_a_lower_priority_master() {
        let mut m = Machine::new(
            Params {
                preempt: false,
                ..params(3, 100)
            },
            100,
        );
        m.start(0);
        for t in [500, 1500, 2500, 3500, 4500] {
            assert_eq!(m.advert(&adv(t, LOW, 50)), Ok(vec![]));
            assert!(m.poll_timers(t * MS + 10 * MS).is_empty());
        }
        assert_eq!(m.state(), State::Backup);
        // ...but still takes over when that master goes silent.
        let at = 4500 * MS + m.master_down_interval_ns();
        assert!(becomes_master(&mut m, at, Reason::MasterDown));
    }

    #[test]
    fn preempt_delay_tolerates_a_lower_master_for_a_while() {
        let mut m = Machine::new(
            Params {
                preempt_delay_ns: 5_000 * MS,
                ..params(3, 100)
            },
            100,
        );
        m.start(0);
        for t in (500..5000).step_by(1000) {
            assert_eq!(m.advert(&adv(t, LOW, 50)), Ok(vec![]), "at {t} ms");
        }
        assert_eq!(m.advert(&adv(5500, LOW, 50)), Err(Ignored::LowerPriority));
        let at = 4500 * MS + m.master_down_interval_ns();
        assert!(becomes_master(&mut m, at, Reason::MasterDown));
    }

    #[test]
    fn follows_master_only_while_an_accepted_master_keeps_the_timer_meaningful() {
        let mut m = machine(100);
        assert!(!m.follows_master(), "Initialize");
        m.start(0);
        assert!(!m.follows_master(), "Backup without a master yet");
        m.advert(&adv(100, HIGH, 200)).unwrap();
        assert!(m.follows_master(), "Backup of a higher-priority master");

        // Our priority rises above the master's: we preempt, so its steady
        // adverts no longer keep us from taking over.
        m.set_priority(250);
        assert!(!m.follows_master());
        m.set_priority(100);
        assert!(m.follows_master());

        // The master resigns: Skew_Time runs.
        m.advert(&adv(200, HIGH, 0)).unwrap();
        assert!(!m.follows_master());
        m.advert(&adv(300, HIGH, 200)).unwrap();
        assert!(m.follows_master());

        // A lower-priority master takes over the group and we wait it out.
        assert_eq!(m.advert(&adv(400, LOW, 50)), Err(Ignored::LowerPriority));
        assert!(!m.follows_master());

        // Without preemption a lower-priority master is simply followed.
        let mut nopreempt = Machine::new(
            Params {
                preempt: false,
                ..params(3, 100)
            },
            100,
        );
        nopreempt.start(0);
        nopreempt.advert(&adv(100, LOW, 50)).unwrap();
        assert!(nopreempt.follows_master());

        // Master never follows.
        assert!(becomes_master(&mut m, 10_000 * MS, Reason::MasterDown));
        assert!(!m.follows_master());
    }

    #[test]
    fn resignation_makes_backup_take_over_after_skew_time() {
        let mut m = machine(100);
        m.start(0);
        m.advert(&adv(500, HIGH, 200)).unwrap();
        m.advert(&adv(1000, HIGH, 0)).unwrap();
        let skew = m.skew_time_ns();
        assert!(skew < 1_000 * MS);
        assert_eq!(m.next_deadline(), Some(1000 * MS + skew));
        assert!(m.poll_timers(1000 * MS + skew - 1).is_empty());
        assert!(becomes_master(
            &mut m,
            1000 * MS + skew,
            Reason::MasterResigned
        ));
    }

    #[test]
    fn higher_priority_backup_wins_the_race_after_a_resignation() {
        // Two backups (100 and 200) see the same resignation; the 200 one's
        // skew is shorter, it speaks first and the other stays backup.
        let mut low = machine(100);
        let mut high = Machine::new(
            Params {
                primary_addr: HIGH,
                ..params(3, 100)
            },
            200,
        );
        low.start(0);
        high.start(0);
        let master = IpAddr::from(Ipv4Addr::new(10, 0, 0, 9));
        for m in [&mut low, &mut high] {
            m.advert(&adv(500, master, 250)).unwrap();
            m.advert(&adv(1000, master, 0)).unwrap();
        }
        assert!(high.next_deadline() < low.next_deadline());
        let at = high.next_deadline().unwrap();
        assert!(becomes_master(&mut high, at, Reason::MasterResigned));
        let takeover = ReceivedAdvert {
            timestamp_ns: at,
            src: HIGH,
            priority: 200,
            interval_cs: 100,
        };
        low.advert(&takeover).unwrap();
        assert!(low.poll_timers(low.next_deadline().unwrap() - 1).is_empty());
        assert_eq!(low.state(), State::Backup);
    }

    #[test]
    fn master_yields_to_higher_priority() {
        let mut m = machine(255);
        m.start(0);
        m.set_priority(100);
        let actions = m.advert(&adv(100, HIGH, 200)).unwrap();
        assert!(
            actions
                .iter()
                .any(to(State::Backup, Reason::HigherPriorityMaster))
        );
        assert_eq!(
            m.next_deadline(),
            Some(100 * MS + m.master_down_interval_ns())
        );
    }

    #[test]
    fn equal_priority_tie_goes_to_the_higher_address() {
        let mut m = master_by_timeout(100);
        assert_eq!(m.advert(&adv(5000, LOW, 100)), Err(Ignored::LowerPriority));
        assert_eq!(m.state(), State::Master);
        let actions = m.advert(&adv(5100, HIGH, 100)).unwrap();
        assert!(
            actions
                .iter()
                .any(to(State::Backup, Reason::HigherPriorityMaster))
        );
        // As backup with preempt, an equal-priority master is accepted.
        assert_eq!(m.advert(&adv(6100, LOW, 100)), Ok(vec![]));
    }

    #[test]
    fn master_answers_another_masters_resignation() {
        let mut m = machine(255);
        m.start(0);
        let actions = m.advert(&adv(300, HIGH, 0)).unwrap();
        assert_eq!(actions, vec![Action::SendAdvert { priority: 255 }]);
        assert_eq!(m.next_deadline(), Some(1000 * MS), "back on the cadence");
    }

    #[test]
    fn shutdown_from_master_resigns() {
        let mut m = machine(255);
        m.start(0);
        let actions = m.shutdown();
        assert_eq!(actions[0], Action::SendAdvert { priority: 0 });
        assert!(actions.iter().any(to(State::Initialize, Reason::Shutdown)));
        assert_eq!(m.next_deadline(), None);
        let mut b = machine(100);
        b.start(0);
        assert!(
            !b.shutdown()
                .iter()
                .any(|a| matches!(a, Action::SendAdvert { .. }))
        );
    }

    #[test]
    fn fault_from_master_resigns_and_stops_advertising() {
        let mut m = machine(255);
        m.start(0);
        let actions = m.set_fault(500 * MS, true);
        assert_eq!(actions[0], Action::SendAdvert { priority: 0 });
        assert!(actions.iter().any(to(State::Fault, Reason::TrackFault)));
        assert_eq!(m.next_deadline(), None);
        assert!(m.poll_timers(10_000 * MS).is_empty());
        assert_eq!(m.advert(&adv(600, HIGH, 0)), Err(Ignored::NotListening));
        // Recovery: back through Initialize (owner: straight to Master).
        let actions = m.set_fault(20_000 * MS, false);
        assert!(actions.iter().any(to(State::Master, Reason::AddressOwner)));
    }

    #[test]
    fn fault_from_backup_and_recovery_to_backup() {
        let mut m = machine(100);
        m.start(0);
        let actions = m.set_fault(100 * MS, true);
        assert_eq!(actions.len(), 1);
        assert!(actions.iter().any(to(State::Fault, Reason::TrackFault)));
        assert!(
            m.poll_timers(100_000 * MS).is_empty(),
            "Fault never takes over"
        );
        let actions = m.set_fault(200_000 * MS, false);
        assert!(
            actions
                .iter()
                .any(to(State::Backup, Reason::TrackRecovered))
        );
        assert_eq!(
            m.next_deadline(),
            Some(200_000 * MS + m.master_down_interval_ns())
        );
        assert!(
            m.set_fault(200_001 * MS, false).is_empty(),
            "no change, no action"
        );
    }

    #[test]
    fn starting_with_a_failed_check_enters_fault() {
        let mut m = machine(100);
        m.set_fault(0, true);
        let actions = m.start(0);
        assert!(actions.iter().any(to(State::Fault, Reason::TrackFault)));
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn priority_drop_lets_a_preempting_backup_take_over() {
        let mut master = machine(255);
        master.start(0);
        master.set_priority(90);
        let actions = master.poll_timers(1000 * MS);
        assert_eq!(actions, vec![Action::SendAdvert { priority: 90 }]);

        let mut backup = Machine::new(
            Params {
                primary_addr: HIGH,
                ..params(3, 100)
            },
            100,
        );
        backup.start(0);
        assert_eq!(
            backup.advert(&adv(1000, ME, 90)),
            Err(Ignored::LowerPriority)
        );
        let at = backup.next_deadline().unwrap();
        assert!(becomes_master(&mut backup, at, Reason::MasterDown));
    }

    /// Master_Down_Interval at [`HANDOVER_PRIORITY`] with 1 s adverts:
    /// 3 x 1 s + (256 - 1) x 1 s / 256.
    const HELD_MASTER_DOWN_NS: u64 = 3_000_000_000 + 996_093_750;

    #[test]
    fn a_handover_resigns_and_the_held_priority_never_preempts_back() {
        let mut m = master_by_timeout(200);
        let at = 5000 * MS;
        let actions = m.hand_over(at).expect("a Master hands over");
        assert_eq!(actions[0], Action::SendAdvert { priority: 0 });
        assert!(actions.iter().any(to(State::Backup, Reason::Handover)));
        assert_eq!(m.priority(), HANDOVER_PRIORITY);
        assert_eq!(m.base_priority(), 200);
        assert!(m.handover_held());
        assert_eq!(m.master_down_at(), Some(at + HELD_MASTER_DOWN_NS));
        // The peer (priority 100 < our configured 200, and we preempt)
        // takes over and advertises: followed, never preempted.
        for k in 0..20u64 {
            let t = 5500 + k * 1000;
            let taken = m
                .advert(&adv(t, LOW, 100))
                .expect("followed, not waited out");
            assert!(taken.is_empty(), "{taken:?}");
            assert_eq!(m.master_down_at(), Some(t * MS + HELD_MASTER_DOWN_NS));
            assert!(m.poll_timers((t + 999) * MS).is_empty());
            assert_eq!(m.state(), State::Backup);
        }
        // Released, the configured priority preempts the lower master again.
        assert!(m.release_handover_hold());
        assert!(!m.release_handover_hold());
        assert_eq!(m.priority(), 200);
        assert_eq!(
            m.advert(&adv(26_000, LOW, 100)),
            Err(Ignored::LowerPriority)
        );
    }

    #[test]
    fn a_held_node_still_takes_over_when_the_peer_dies_and_mastership_ends_the_hold() {
        let mut m = master_by_timeout(200);
        m.hand_over(5000 * MS).unwrap();
        m.advert(&adv(5500, LOW, 100)).unwrap();
        let down = 5500 * MS + HELD_MASTER_DOWN_NS;
        assert!(m.poll_timers(down - 1).is_empty());
        assert!(becomes_master(&mut m, down, Reason::MasterDown));
        assert!(!m.handover_held());
        assert_eq!(m.priority(), 200);
    }

    #[test]
    fn only_a_master_hands_over() {
        let mut m = machine(100);
        m.start(0);
        assert_eq!(m.hand_over(10 * MS), None);
        assert_eq!(m.state(), State::Backup);
        assert!(!m.handover_held());
        assert_eq!(m.priority(), 100);
    }

    #[test]
    fn v3_backup_learns_the_masters_interval() {
        let mut m = machine(100);
        m.start(0);
        let fast = ReceivedAdvert {
            interval_cs: 10,
            ..adv(500, HIGH, 200)
        };
        m.advert(&fast).unwrap();
        assert_eq!(m.master_adver_interval_cs(), 10);
        assert_eq!(
            m.master_down_interval_ns(),
            300 * MS + 156 * 10 * 10 * MS / 256
        );
    }

    /// Adverts a started machine discards: the verdict, and no change of state.
    #[rstest]
    #[case::master_ignores_lower_priority(
        machine(255),
        adv(100, HIGH, 200),
        Ignored::LowerPriority,
        State::Master
    )]
    #[case::v2_discards_interval_mismatch(
        Machine::new(params(2, 100), 100),
        ReceivedAdvert { interval_cs: 200, ..adv(500, HIGH, 200) },
        Ignored::IntervalMismatch,
        State::Backup
    )]
    #[case::v2_discards_own_adverts(
        Machine::new(params(2, 100), 100),
        adv(500, ME, 200),
        Ignored::Own,
        State::Backup
    )]
    fn discarded_advert(
        #[case] mut m: Machine,
        #[case] advert: ReceivedAdvert,
        #[case] verdict: Ignored,
        #[case] state: State,
    ) {
        m.start(0);
        assert_eq!(m.advert(&advert), Err(verdict));
        assert_eq!(m.state(), state);
    }

    /// keepalived's default: a Master answers a lower-priority advert at
    /// once and starts its interval over; `lower_prio_no_advert` only
    /// discards it.
    #[rstest]
    #[case::answers(false, Some(200 * MS))]
    #[case::lower_prio_no_advert(true, None)]
    fn a_master_answers_a_lower_priority_advert(
        #[case] lower_prio_no_advert: bool,
        #[case] next_advert: Option<u64>,
    ) {
        let mut m = Machine::new(
            Params {
                lower_prio_no_advert,
                ..params(3, 10)
            },
            255,
        );
        m.start(0);
        assert_eq!(m.state(), State::Master);
        let before = m.next_deadline();
        assert_eq!(m.advert(&adv(150, LOW, 100)), Err(Ignored::LowerPriority));
        let answer = m.answer_lower_priority(150 * MS);
        if let Some(at) = next_advert {
            assert_eq!(answer, vec![Action::SendAdvert { priority: 255 }]);
            assert_eq!(m.next_deadline(), Some(at));
        } else {
            assert_eq!(answer, vec![]);
            assert_eq!(m.next_deadline(), before);
        }
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn a_backup_never_answers_a_lower_priority_advert() {
        let mut m = machine(200);
        m.start(0);
        assert_eq!(m.state(), State::Backup);
        assert_eq!(m.answer_lower_priority(150 * MS), vec![]);
    }

    /// `higher_prio_send_advert`: one advert of our own, then Backup.
    #[rstest]
    #[case::default(false, 0)]
    #[case::higher_prio_send_advert(true, 1)]
    fn a_master_beaten_sends_an_advert_first_when_asked(
        #[case] higher_prio_send_advert: bool,
        #[case] adverts: usize,
    ) {
        let mut beaten = Machine::new(
            Params {
                higher_prio_send_advert,
                ..params(3, 100)
            },
            100,
        );
        beaten.start(0);
        // No master heard: Master after Master_Down_Interval.
        beaten.poll_timers(10 * 1000 * MS);
        assert_eq!(beaten.state(), State::Master);
        let actions = beaten.advert(&adv(10_100, HIGH, 200)).unwrap();
        assert_eq!(beaten.state(), State::Backup);
        let sent: Vec<_> = actions
            .iter()
            .filter(|a| matches!(a, Action::SendAdvert { .. }))
            .collect();
        assert_eq!(sent.len(), adverts);
        if adverts == 1 {
            assert_eq!(actions[0], Action::SendAdvert { priority: 100 });
        }
    }

    #[test]
    fn late_processing_uses_the_advert_timestamp() {
        // A backup that slept and drains an advert that arrived at 2.5 s
        // only at 4 s must count Master_Down_Interval from 2.5 s.
        let mut m = machine(100);
        m.start(0);
        m.advert(&adv(2500, HIGH, 200)).unwrap();
        assert_eq!(
            m.next_deadline(),
            Some(2500 * MS + m.master_down_interval_ns())
        );
    }

    #[test]
    fn interface_down_is_a_fault_with_its_own_reason() {
        let mut m = master_by_timeout(100);
        let actions = m.set_fault_because(5_000 * MS, true, Reason::InterfaceDown);
        assert_eq!(actions[0], Action::SendAdvert { priority: 0 });
        assert!(actions.iter().any(to(State::Fault, Reason::InterfaceDown)));
        let actions = m.set_fault_because(6_000 * MS, false, Reason::InterfaceUp);
        assert!(actions.iter().any(to(State::Backup, Reason::InterfaceUp)));
    }
}
