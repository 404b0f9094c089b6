//! XDP program for lbha. It validates VRRP adverts (over IPv4, and v3 over
//! IPv6) with the shared rules of
//! `lbha_common::vrrp`, queues accepted ones in a ring buffer (waking user
//! space only when something changed), records the last advert per VRID and
//! counts every packet. Non-VRRP traffic is always passed untouched.
//!
//! When the agent loads it with diagnostics on, it also reports through
//! aya-log what the counters cannot say: its first packet, each VRID's first
//! advert, and who sent what it drops, and why (see [`diagnose`]).
#![no_std]
#![no_main]
// Every helper is inlined: the verifier then sees each load's bounds check
// at its call site, and BPF-to-BPF calls stay out of the hot path.
#![expect(
    clippy::inline_always,
    reason = "the eBPF verifier needs these inlined"
)]

use aya_ebpf::{
    Global,
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, bpf_timer, xdp_action},
    btf_maps,
    helpers::generated::{
        bpf_ktime_get_ns, bpf_loop, bpf_timer_init, bpf_timer_set_callback, bpf_timer_start,
    },
    macros::{btf_map, map, xdp},
    maps::{Array, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use lbha_common::{
    AdvertEvent, AgentLease, Counter, Outcome, VridConfig,
    diag::{self, BPF_LOG_TARGET, seen},
    event::{
        DEFAULT_DOWN_TIMER_ADVERTS, EVENTS_BYTES, Family, LAST_ADVERT_MAP_FLAGS, ReceivePath,
        VRID_SLOTS, VridKey, change,
        silence_timer::{
            self,
            state::{PREPARED as TIMER_PREPARED, UNPREPARED as TIMER_UNPREPARED},
        },
    },
    fastpath,
    packet::PacketView,
    vrrp::{self, DropReason, VridTable},
};

/// (family, VRID) -> configuration (indexed by `VridKey::index`), written by
/// the agent. Disabled entries mean "unknown VRID".
#[map]
static VRID_CONFIG: Array<VridConfig> = Array::with_max_entries(VRID_SLOTS, 0);

/// (family, VRID) -> last accepted advert, so a sleeping backup can check
/// the master is alive at its deadline without draining the ring buffer.
#[map]
static LAST_ADVERT: Array<AdvertEvent> = Array::with_max_entries(VRID_SLOTS, LAST_ADVERT_MAP_FLAGS);

/// Per-CPU packet counters indexed by `Counter`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Accepted changes and silence reports for user space (see `EVENTS_BYTES`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Entry 0: the running agent's lease. Without it accepted adverts are
/// passed on instead of consumed (see `AgentLease`).
#[map]
static AGENT_LEASE: Array<AgentLease> = Array::with_max_entries(1, 0);

/// Non-zero: report diagnostics through aya-log. Set by the agent at load
/// time under the name `diag::DIAGNOSTICS_GLOBAL`, which must stay this
/// symbol's (the load fails otherwise). A `Global` lives in `.rodata`, which aya
/// freezes before the program is verified, so the verifier knows the value:
/// with 0 it never walks the diagnostic code, and the XDP path pays one
/// branch on a constant.
#[unsafe(no_mangle)]
static LBHA_DIAGNOSTICS: Global<u8> = Global::new(0);

/// Non-zero: queue steady adverts on the ring buffer too (without a
/// wakeup); zero: they only update `LAST_ADVERT` (see
/// `diag::QUEUE_STEADY_GLOBAL`, which must stay this symbol's name).
#[unsafe(no_mangle)]
static LBHA_QUEUE_STEADY: Global<u8> = Global::new(0);

/// What the once-only diagnostics already reported (`diag::seen` bits):
/// entry `VridKey::index` per VRID, entry `diag::SEEN_PROGRAM` for the program. Not
/// pinned, unlike the other maps, so that every loaded program (a restarted
/// agent's included) reports afresh.
#[map]
static DIAG_SEEN: Array<u8> = Array::with_max_entries(diag::SEEN_ENTRIES, 0);

/// The program's one silence timer: it sweeps [`SILENCE_DUE`] at the
/// earliest deadline of any VRID, reports the VRIDs whose deadline passed,
/// and arms itself again at the next. One timer, not one per VRID: a
/// steady advert then only moves its VRID's deadline (a store), and the
/// kernel allocates one timer per loaded program. Linux 6.18's
/// `bpf_timer_init` allocates without locks and refuses (-ENOMEM) once the
/// slab has no free object, which at a thousand VRIDs was most of them.
#[repr(C)]
pub struct SilenceSweep {
    timer: bpf_timer,
    /// When the timer is due (`CLOCK_MONOTONIC` ns); `u64::MAX` while it is
    /// not armed. Only ever lowered by an advert, so it stays at or before
    /// every pending deadline.
    armed_ns: u64,
    /// [`TIMER_UNPREPARED`], [`TIMER_PREPARED`] (initialised and pointed at
    /// this program's `silence_reached`), or else refused until that time.
    state: u64,
}

/// Entry 0: the silence timer (see [`SilenceSweep`]). A BTF map, as the
/// kernel finds the `bpf_timer` through the value's BTF. Not pinned: each
/// loaded program has its own, and the kernel cancels it once no
/// user-space fd holds the map, so a program left attached after its agent
/// stopped reports nothing.
#[btf_map]
static SILENCE_SWEEP: btf_maps::Array<SilenceSweep, 1> = btf_maps::Array::new();

/// One VRID's master-down deadline, as the sweep sees it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SilenceDue {
    /// `down_timer_adverts` intervals after the VRID's last accepted advert
    /// (`CLOCK_MONOTONIC` ns); 0: none (never armed, or refused).
    due_ns: u64,
    /// The deadline already reported silent: written only by the sweep, so
    /// that an advert moving `due_ns` at the same time is never lost.
    reported_ns: u64,
}

/// (family, VRID) -> its master-down deadline. Not pinned, like the timer
/// that reads it.
#[map]
static SILENCE_DUE: Array<SilenceDue> = Array::with_max_entries(VRID_SLOTS, 0);

/// Per VRID, what this loaded program last told the agent about the
/// silence timer: [`TIMER_UNPREPARED`] (nothing yet), [`TIMER_PREPARED`]
/// (the sweep covers the VRID), or else refused, to be retried from that
/// kernel time on. A refusal (of the one timer, for every VRID) is reported
/// once per VRID, and retried once a second rather than at every advert.
#[map]
static TIMER_STATE: Array<u64> = Array::with_max_entries(VRID_SLOTS, 0);

/// How long a VRID whose timer the kernel refused waits before trying again.
const TIMER_RETRY_NS: u64 = 1_000_000_000;

const CLOCK_MONOTONIC: u64 = 1;
const EBUSY: i64 = 16;

/// Offsets beyond this are never needed (Ethernet + VLAN + the IPv6 header
/// and its walked extension headers + the largest IPv6 VRRP packet, 4088
/// bytes; IPv4's are smaller) and bounding them keeps the verifier's range
/// tracking simple.
const MAX_OFFSET: usize = 8192;

struct Frame<'a>(&'a XdpContext);

impl Frame<'_> {
    /// `data` and `data_end` are read with volatile loads on purpose: if LLVM
    /// may assume they do not change, it proves later bounds checks redundant
    /// from earlier ones (e.g. the IP total length check) and deletes them,
    /// and the verifier, which cannot follow that reasoning, rejects the
    /// load. Fresh reads keep every `ptr_at` check in the object.
    #[inline(always)]
    fn bounds(&self) -> (usize, usize) {
        // SAFETY: ctx points to the xdp_md the kernel passed to the program.
        unsafe {
            let md = self.0.ctx;
            (
                core::ptr::read_volatile(&raw const (*md).data) as usize,
                core::ptr::read_volatile(&raw const (*md).data_end) as usize,
            )
        }
    }
}

impl PacketView for Frame<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        let (start, end) = self.bounds();
        end - start
    }

    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        // ptr_at: every load is checked against data_end.
        if offset > MAX_OFFSET {
            return None;
        }
        let (start, end) = self.bounds();
        let at = start + offset;
        if at + N > end {
            return None;
        }
        // SAFETY: [at, at + N) was just checked to lie inside the packet.
        Some(unsafe { core::ptr::read_unaligned(at as *const [u8; N]) })
    }
}

struct ConfiguredVrids;

impl VridTable for ConfiguredVrids {
    #[inline(always)]
    fn lookup(&self, key: VridKey) -> Option<&VridConfig> {
        let config = VRID_CONFIG.get(key.index())?;
        (config.enabled != 0).then_some(config)
    }
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot of a map value; XDP programs are not preempted
        // on their CPU, so a plain increment cannot race.
        unsafe { *slot += 1 };
    }
}

/// The full program: the fast path with the silence timer (`bpf_timer`,
/// Linux 5.15).
#[xdp]
pub fn lbha_xdp(ctx: XdpContext) -> u32 {
    run(&ctx, SilenceTimer::Armed)
}

/// The same fast path without the silence timer, for kernels before
/// `bpf_timer` (Debian 11's 5.10, RHEL 9's 5.14): its code holds no timer
/// helper call and no callback reference, which such kernels reject even in
/// dead code. The agent then wakes at a backup's master-down deadlines and
/// reads `LAST_ADVERT`, as on the raw-socket path.
#[xdp]
pub fn lbha_xdp_notimer(ctx: XdpContext) -> u32 {
    run(&ctx, SilenceTimer::None)
}

/// Which program `run` is inlined into.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SilenceTimer {
    Armed,
    None,
}

#[inline(always)]
fn run(ctx: &XdpContext, timer: SilenceTimer) -> u32 {
    let frame = Frame(ctx);
    let outcome = vrrp::parse_frame(&frame, &ConfiguredVrids);
    // Ahead of the counters only because that order measured cheapest for
    // the verifier with diagnostics off; what is counted is the same.
    if LBHA_DIAGNOSTICS.load() != 0 {
        diagnose(ctx, &frame, &outcome);
    }
    count(Counter::PacketsSeen);
    count(outcome.counter());
    match outcome {
        // keepalived's `auth_type AH` (AhToVerify): only user space can
        // check the HMAC-MD5 ICV and the sequence number, so a well-formed
        // AH advert goes to the stack, where the agent's protocol-51 socket
        // reads it. It never touches LAST_ADVERT or the silence timer: an
        // unverified advert must not keep a backup quiet.
        Outcome::NotVrrp
        | Outcome::Ipv6ExtHeaderPassed
        | Outcome::Drop(DropReason::UnknownVrid)
        | Outcome::AhToVerify(_) => xdp_action::XDP_PASS,
        Outcome::Drop(DropReason::UnknownSource) => {
            // The peer list is the running agent's policy, not a defect of
            // the packet: without an agent, whatever runs in its place
            // (keepalived, with peers of its own) decides.
            // SAFETY: bpf_ktime_get_ns takes no arguments and cannot fail.
            if agent_present(unsafe { bpf_ktime_get_ns() }) {
                xdp_action::XDP_DROP
            } else {
                count(Counter::PassedNoAgent);
                xdp_action::XDP_PASS
            }
        }
        Outcome::Drop(_) => xdp_action::XDP_DROP,
        Outcome::Accept(mut event) => {
            // SAFETY: bpf_ktime_get_ns takes no arguments and cannot fail.
            let now = unsafe { bpf_ktime_get_ns() };
            event.timestamp_ns = now;
            event.ifindex = ctx.ingress_ifindex() as u32;
            event.receive_path = ReceivePath::Xdp as u8;
            let slot = event.slot();
            let silence_intervals = VRID_CONFIG
                .get(slot)
                .map_or(DEFAULT_DOWN_TIMER_ADVERTS, VridConfig::silence_intervals);
            event.flags = remember(slot, &event, silence_intervals);
            if !agent_present(now) {
                // Kept attached for the next agent, but nobody reads the
                // ring buffer: let the stack (or another VRRP daemon) have it.
                count(Counter::PassedNoAgent);
                return xdp_action::XDP_PASS;
            }
            let interval_cs = event.interval_cs;
            deliver(event);
            if timer == SilenceTimer::Armed
                && let Some(changed) = arm_silence_timer(slot, interval_cs, silence_intervals, now)
            {
                report_timer(slot, changed);
            }
            // The advert is consumed here: lbha sends through an IPPROTO_RAW
            // socket that never receives, so passing it would only make the
            // stack answer unicast adverts with ICMP protocol-unreachable.
            xdp_action::XDP_DROP
        }
    }
}

/// Debug records for the agent's log. Accepted adverts and foreign VRIDs
/// are reported once per VRID (a steady master sends one per interval);
/// every other drop each time, as each means a broken or hostile sender.
/// Records go to aya-log's own ring buffer, never to `EVENTS`.
#[inline(always)]
fn diagnose(ctx: &XdpContext, frame: &Frame<'_>, outcome: &Outcome) {
    if first_time(diag::SEEN_PROGRAM, seen::PACKET) {
        let ifindex = ctx.ingress_ifindex() as u32;
        debug!(
            ctx,
            target: BPF_LOG_TARGET,
            "XDP program running: first packet on ifindex {}",
            ifindex
        );
    }
    match outcome {
        Outcome::NotVrrp | Outcome::Ipv6ExtHeaderPassed | Outcome::AhToVerify(_) => {}
        Outcome::Accept(event) => {
            if first_time(event.slot(), seen::ADVERT) {
                if event.family == Family::Ipv6 as u8 {
                    debug!(
                        ctx,
                        target: BPF_LOG_TARGET,
                        "first advert for IPv6 VRID {} from {:i}: VRRPv{}, priority {}, interval {} cs",
                        event.vrid,
                        event.src_addr,
                        event.version,
                        event.priority,
                        event.interval_cs
                    );
                } else {
                    debug!(
                        ctx,
                        target: BPF_LOG_TARGET,
                        "first advert for VRID {} from {:i}: VRRPv{}, priority {}, interval {} cs",
                        event.vrid,
                        v4(&event.src_addr),
                        event.version,
                        event.priority,
                        event.interval_cs
                    );
                }
            }
        }
        Outcome::Drop(reason) => {
            // One sender read for every drop: each inlined copy of it
            // (an IPv6 extension header walk) costs stack.
            let sender = vrrp::frame_sender(frame);
            let v6 = sender.family == Some(Family::Ipv6);
            if *reason == DropReason::UnknownVrid {
                let key = VridKey {
                    family: if v6 { Family::Ipv6 } else { Family::Ipv4 },
                    vrid: sender.vrid,
                };
                if !first_time(key.index(), seen::UNKNOWN_VRID) {
                    return;
                }
                if v6 {
                    debug!(
                        ctx,
                        target: BPF_LOG_TARGET,
                        "advert for unconfigured IPv6 VRID {} from {:i} passed to the stack (reported once per VRID)",
                        sender.vrid,
                        sender.src_addr
                    );
                } else {
                    debug!(
                        ctx,
                        target: BPF_LOG_TARGET,
                        "advert for unconfigured VRID {} from {:i} passed to the stack (reported once per VRID)",
                        sender.vrid,
                        v4(&sender.src_addr)
                    );
                }
            } else if v6 {
                debug!(
                    ctx,
                    target: BPF_LOG_TARGET,
                    "dropped VRRP from {:i} (IPv6 VRID {}): {}",
                    sender.src_addr,
                    sender.vrid,
                    reason.counter().name()
                );
            } else {
                debug!(
                    ctx,
                    target: BPF_LOG_TARGET,
                    "dropped VRRP from {:i} (VRID {}): {}",
                    v4(&sender.src_addr),
                    sender.vrid,
                    reason.counter().name()
                );
            }
        }
    }
}

/// The IPv4 address a [`lbha_common::event::WireAddr`] of an IPv4 advert
/// holds, as aya-log prints one.
#[inline(always)]
fn v4(addr: &[u8; 16]) -> [u8; 4] {
    [addr[0], addr[1], addr[2], addr[3]]
}

/// Whether `bit` of `DIAG_SEEN[slot]` was clear, setting it. Not atomic:
/// two CPUs may both report a first time, which is harmless.
#[inline(always)]
fn first_time(slot: u32, bit: u8) -> bool {
    let Some(seen) = DIAG_SEEN.get_ptr_mut(slot) else {
        return false;
    };
    // SAFETY: pointer to a value of an array map, valid for the program's run.
    let seen = unsafe { &mut *seen };
    if *seen & bit != 0 {
        return false;
    }
    *seen |= bit;
    true
}

#[inline(always)]
fn agent_present(now: u64) -> bool {
    AGENT_LEASE.get(0).is_some_and(|lease| lease.held_at(now))
}

/// Records `event` as the last advert of its VRID (table index `slot`) and
/// returns why it matters (its `change` flags), compared with the one it
/// replaces, for a VRID silent after `silence_intervals` intervals.
#[inline(always)]
fn remember(slot: u32, event: &AdvertEvent, silence_intervals: u8) -> u8 {
    match LAST_ADVERT.get_ptr_mut(slot) {
        Some(last) => {
            // SAFETY: pointer to a value of an array map, valid for the program's run.
            let last = unsafe { &mut *last };
            let flags = fastpath::classify(last, event, silence_intervals);
            *last = *event;
            last.flags = flags;
            flags
        }
        None => 0,
    }
}

#[inline(always)]
fn deliver(event: AdvertEvent) {
    let wakeup = if event.flags == 0 {
        count(Counter::WakeupsSaved);
        if LBHA_QUEUE_STEADY.load() == 0 {
            // Kept in LAST_ADVERT (by `remember`), where the agent reads it
            // before acting on a deadline.
            return;
        }
        BPF_RB_NO_WAKEUP
    } else {
        count(Counter::Wakeups);
        BPF_RB_FORCE_WAKEUP
    };
    match EVENTS.reserve::<AdvertEvent>(0) {
        Some(mut entry) => {
            entry.write(event);
            entry.submit(u64::from(wakeup));
        }
        None => count(Counter::RingBufFull),
    }
}

/// Queues (with a wakeup) the VRID's last advert, flagged [`change::TIMER`]
/// alone, to tell the agent the VRID's timer is now `state`: even after a
/// steady advert, since the agent must then keep the VRID's deadline
/// itself. Built from `LAST_ADVERT` rather than kept from the advert, so
/// that no event stays on the stack across the timer helpers (the stack
/// limit of Linux 6.1's verifier is that close).
#[inline(always)]
fn report_timer(slot: u32, state: u8) {
    let Some(last) = LAST_ADVERT.get_ptr(slot) else {
        return;
    };
    match EVENTS.reserve::<AdvertEvent>(0) {
        Some(mut entry) => {
            let report = entry.as_mut_ptr();
            // SAFETY: `last` points to a map value and `report` to the
            // reserved ring-buffer record, both valid AdvertEvents.
            unsafe {
                report.copy_from_nonoverlapping(last, 1);
                (*report).flags = change::TIMER;
                (*report).silence_timer = state;
            }
            count(Counter::Wakeups);
            entry.submit(u64::from(BPF_RB_FORCE_WAKEUP));
        }
        None => count(Counter::RingBufFull),
    }
}

/// Moves the master-down deadline of the VRID at table index `index` to
/// `silence_intervals` (its `down_timer_adverts`) advert intervals from now,
/// and makes sure the sweep runs by then. Returns the VRID's new
/// [`silence_timer`] state when it differs from the one its last advert
/// left (covered, or refused by the kernel).
#[inline(always)]
fn arm_silence_timer(index: u32, interval_cs: u16, silence_intervals: u8, now: u64) -> Option<u8> {
    let due = SILENCE_DUE.get_ptr_mut(index)?;
    // SAFETY: pointer to a value of an array map, valid for the program's run.
    let due = unsafe { &mut *due };
    let state = TIMER_STATE.get_ptr_mut(index)?;
    // SAFETY: as above.
    let state = unsafe { &mut *state };
    let was_refused = *state != TIMER_UNPREPARED && *state != TIMER_PREPARED;
    if was_refused && now < *state {
        count(Counter::SilenceTimerErrors);
        return None;
    }
    let due_ns = now + fastpath::silence_threshold_ns(interval_cs, silence_intervals);
    if sweep_by(due_ns, now) {
        due.due_ns = due_ns;
        *state = TIMER_PREPARED;
        was_refused.then_some(silence_timer::ARMED)
    } else {
        // No deadline the sweep could report late: the agent keeps it.
        due.due_ns = 0;
        *state = now + TIMER_RETRY_NS;
        count(Counter::SilenceTimerErrors);
        (!was_refused).then_some(silence_timer::REFUSED)
    }
}

/// Makes sure the silence timer is initialised and due at `due_ns` at the
/// latest. False when the kernel refused it (retried after
/// [`TIMER_RETRY_NS`]). A steady advert's deadline is later than the
/// timer's, so it calls no helper at all.
#[inline(always)]
fn sweep_by(due_ns: u64, now: u64) -> bool {
    let Some(sweep) = SILENCE_SWEEP.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: pointer to a value of an array map, valid for the program's run.
    let sweep = unsafe { &mut *sweep };
    if sweep.state != TIMER_PREPARED {
        if sweep.state != TIMER_UNPREPARED && now < sweep.state {
            return false;
        }
        let map = core::ptr::from_ref(&SILENCE_SWEEP).cast_mut().cast();
        // SAFETY: helpers called on a bpf_timer inside a map value, as the
        // verifier requires; the callback has the signature timers expect.
        let init = unsafe { bpf_timer_init(&raw mut sweep.timer, map, CLOCK_MONOTONIC) };
        // -EBUSY: initialised already, before a set_callback that failed.
        let prepared = (init == 0 || init == -EBUSY)
            // SAFETY: as above.
            && unsafe { bpf_timer_set_callback(&raw mut sweep.timer, silence_reached as *mut _) }
                == 0;
        if !prepared {
            sweep.state = now + TIMER_RETRY_NS;
            return false;
        }
        sweep.state = TIMER_PREPARED;
        // SAFETY: a field of the map value above.
        unsafe { core::ptr::write_volatile(&raw mut sweep.armed_ns, u64::MAX) };
    }
    // Volatile: another CPU's advert, or the sweep, may move it meanwhile.
    // SAFETY: a field of the map value above.
    if due_ns >= unsafe { core::ptr::read_volatile(&raw const sweep.armed_ns) } {
        return true;
    }
    start_sweep(sweep, due_ns, now)
}

/// Arms the silence timer for `due_ns`, and once more if another CPU set a
/// later time between our store and our start (the later start would
/// otherwise win and leave our deadline to a later sweep).
#[inline(always)]
fn start_sweep(sweep: &mut SilenceSweep, due_ns: u64, now: u64) -> bool {
    for _ in 0..2 {
        // SAFETY: a field of a map value.
        unsafe { core::ptr::write_volatile(&raw mut sweep.armed_ns, due_ns) };
        // SAFETY: a bpf_timer inside a map value, initialised.
        if unsafe { bpf_timer_start(&raw mut sweep.timer, due_ns.saturating_sub(now), 0) } != 0 {
            // A timer the kernel freed (its map's last fd gone) starts with
            // -EINVAL: initialise it again at the retry.
            sweep.state = now + TIMER_RETRY_NS;
            return false;
        }
        // SAFETY: as above.
        if unsafe { core::ptr::read_volatile(&raw const sweep.armed_ns) } <= due_ns {
            break;
        }
    }
    true
}

/// Timer callback: the earliest deadline has come. Reports every VRID whose
/// deadline passed without an advert (once per deadline), and arms the
/// timer again at the next pending one.
extern "C" fn silence_reached(
    _map: *mut core::ffi::c_void,
    _key: *mut u32,
    sweep: *mut SilenceSweep,
) -> i32 {
    // SAFETY: bpf_ktime_get_ns takes no arguments and cannot fail.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the kernel passes a pointer to the timer's map value.
    let sweep = unsafe { &mut *sweep };
    // Adverts arriving during the walk lower it again (and start the timer
    // themselves) for deadlines the walk may have missed.
    // SAFETY: a field of the map value above.
    unsafe { core::ptr::write_volatile(&raw mut sweep.armed_ns, u64::MAX) };
    let mut walk = SweepWalk {
        now,
        next: u64::MAX,
        present: agent_present(now),
    };
    // bpf_loop, not a loop: the verifier checks its callback once, where a
    // bounded loop of VRID_SLOTS iterations is walked (and refused) as
    // that many copies.
    // SAFETY: the callback has the signature bpf_loop expects, and `walk`
    // lives on this stack for the whole call.
    unsafe {
        bpf_loop(VRID_SLOTS, sweep_one as *mut _, (&raw mut walk).cast(), 0);
    }
    let next = walk.next;
    // SAFETY: as above.
    if next != u64::MAX && next < unsafe { core::ptr::read_volatile(&raw const sweep.armed_ns) } {
        start_sweep(sweep, next, now);
    }
    // Timer callbacks must return 0.
    0
}

/// The sweep's state across its walk of the VRIDs.
struct SweepWalk {
    now: u64,
    /// The earliest deadline still to come.
    next: u64,
    /// Whether an agent is listening (else nothing is reported).
    present: bool,
}

/// `bpf_loop` callback: one VRID of the sweep. Returns 0 to go on.
extern "C" fn sweep_one(index: u64, walk: *mut SweepWalk) -> i64 {
    // SAFETY: bpf_loop passes the context given to it, a SweepWalk.
    let walk = unsafe { &mut *walk };
    let index = index as u32;
    let Some(due) = SILENCE_DUE.get_ptr_mut(index) else {
        return 0;
    };
    // SAFETY: pointer to a value of an array map, valid for the program's run.
    let due = unsafe { &mut *due };
    let due_ns = due.due_ns;
    if due_ns == 0 || due_ns == due.reported_ns {
        return 0;
    }
    if due_ns > walk.now {
        walk.next = walk.next.min(due_ns);
    } else if walk.present {
        report_silence(index, walk.now);
        due.reported_ns = due_ns;
    }
    0
}

/// Queues a silence report (with a wakeup) for the VRID at table index
/// `index`.
#[inline(always)]
fn report_silence(index: u32, now: u64) {
    let Some(key) = VridKey::from_index(index) else {
        return;
    };
    let interval_cs = LAST_ADVERT.get(index).map_or(0, |last| last.interval_cs);
    let report = AdvertEvent {
        timestamp_ns: now,
        vrid: key.vrid,
        family: key.family as u8,
        interval_cs,
        flags: change::SILENCE,
        receive_path: ReceivePath::Xdp as u8,
        ..AdvertEvent::default()
    };
    match EVENTS.reserve::<AdvertEvent>(0) {
        Some(mut entry) => {
            entry.write(report);
            entry.submit(u64::from(BPF_RB_FORCE_WAKEUP));
            count(Counter::SilenceReported);
        }
        None => count(Counter::SilenceTimerErrors),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
