//! Loading and attaching the XDP program, and reading what it produces.

mod last_advert;
pub mod pin;
pub mod variant;

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, MapData, MapError, PerCpuArray, RingBuf},
    programs::{
        ProgramError, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use aya_log::EbpfLogger;
use last_advert::LastAdvertTable;
use lbha_common::{
    AdvertEvent, AgentLease, Counter, VridConfig, diag,
    event::{Family, VRID_SLOTS, VridKey},
};
use thiserror::Error;
use tokio::io::unix::AsyncFd;

pub use pin::{PinDir, PinError};
pub use variant::Variant;

/// The XDP object built by lbha-agent's build script from lbha-ebpf.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lbha"));

pub(crate) use lbha_common::event::EVENTS_BYTES;

/// How long the program keeps consuming adverts after the agent's last
/// renewal: long enough to ride out a stalled runtime, short enough that a
/// crashed agent stops swallowing adverts within a few seconds.
const LEASE: Duration = Duration::from_secs(3);
const LEASE_RENEWAL: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum BpfError {
    #[error("loading the BPF object failed")]
    Load(#[source] Box<EbpfError>),
    #[error("the BPF object has no {kind} named {name}")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("loading the XDP program into the kernel failed")]
    Verify(#[source] Box<ProgramError>),
    #[error(
        "attaching XDP to {interface} failed in default mode ({default}) and in skb mode ({skb})"
    )]
    Attach {
        interface: String,
        default: Box<ProgramError>,
        skb: Box<ProgramError>,
    },
    #[error("BPF map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<MapError>,
    },
    #[error("registering the ring buffer with the reactor failed")]
    Reactor(#[source] std::io::Error),
    #[error("opening the XDP program's log records failed")]
    KernelLog(#[source] Box<aya_log::Error>),
    #[error("unknown interface {0}")]
    UnknownInterface(String),
}

/// The mode XDP ended up attached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// The kernel's choice: native (driver) mode when the driver supports it.
    Default,
    /// Generic XDP in the network stack, used when the driver refused.
    Skb,
}

impl AttachMode {
    pub const fn name(self) -> &'static str {
        match self {
            AttachMode::Default => "xdp",
            AttachMode::Skb => "xdp-skb",
        }
    }

    const fn xdp_mode(self) -> XdpMode {
        match self {
            AttachMode::Default => XdpMode::Default,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, BpfError> {
    ebpf.take_map(name)
        .ok_or(BpfError::Missing { kind: "map", name })
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> BpfError {
    move |source| BpfError::Map {
        name,
        source: Box::new(source),
    }
}

/// Raises RLIMIT_MEMLOCK for kernels before 5.11, which charge BPF maps
/// against it. Harmless where memory cgroups do the accounting.
fn raise_memlock_limit() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};
    if let Err(errno) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        tracing::debug!(error = %errno, "could not raise RLIMIT_MEMLOCK");
    }
}

/// Whether the program is loaded with its kernel-side diagnostics: aya-log
/// records of its first packet, each VRID's first advert, and every drop
/// with its sender and reason. Fixed at load time (see `diagnose` in
/// lbha-ebpf): off, the verifier proves that code unreachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Diagnostics {
    Off,
    On,
}

impl Diagnostics {
    /// On when the current subscriber logs the records' target
    /// ([`diag::BPF_LOG_TARGET`]) at debug level, e.g. with
    /// `RUST_LOG=lbha_agent=debug`.
    pub fn from_tracing() -> Self {
        if tracing::enabled!(target: diag::BPF_LOG_TARGET, tracing::Level::DEBUG) {
            Self::On
        } else {
            Self::Off
        }
    }
}

/// What the program does with a steady advert (the master repeating itself):
/// keep it only in `LAST_ADVERT` (the daemon, which reads the map before
/// acting on a deadline), or also queue it without a wakeup (`watch`, which
/// prints every advert). See `diag::QUEUE_STEADY_GLOBAL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SteadyAdverts {
    MapOnly,
    Queued,
}

/// Loads the `variant` program into the kernel without attaching it
/// (`test_run` uses this directly). Returns the object, its ring buffer and
/// its other maps.
pub fn load(
    variant: Variant,
    diagnostics: Diagnostics,
    steady: SteadyAdverts,
) -> Result<(Ebpf, RingBuf<MapData>, XdpTables), BpfError> {
    load_with_pins(None, variant, diagnostics, steady)
}

/// As [`load`], reusing (or creating and pinning) the maps in `pins`.
fn load_with_pins(
    pins: Option<&PinDir>,
    variant: Variant,
    diagnostics: Diagnostics,
    steady: SteadyAdverts,
) -> Result<(Ebpf, RingBuf<MapData>, XdpTables), BpfError> {
    raise_memlock_limit();
    let mut loader = EbpfLoader::new();
    let diagnostics_switch = u8::from(diagnostics == Diagnostics::On);
    loader.override_global(diag::DIAGNOSTICS_GLOBAL, &diagnostics_switch, true);
    let queue_steady = u8::from(steady == SteadyAdverts::Queued);
    loader.override_global(diag::QUEUE_STEADY_GLOBAL, &queue_steady, true);
    let map_paths;
    if let Some(pins) = pins {
        pins.drop_incompatible_maps();
        map_paths = pin::MAP_SHAPES.map(|shape| (shape.name, pins.map_path(shape.name)));
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
    }
    let mut ebpf = loader
        .load(EBPF_OBJECT)
        .map_err(|e| BpfError::Load(Box::new(e)))?;
    let program = program_mut(&mut ebpf, variant)?;
    program.load().map_err(|e| BpfError::Verify(Box::new(e)))?;
    tracing::debug!(
        ?diagnostics,
        variant = variant.name(),
        verified_insns = program
            .info()
            .ok()
            .and_then(|info| info.verified_instruction_count()),
        "XDP program verified"
    );
    // SILENCE_SWEEP stays inside the Ebpf object on purpose: the kernel
    // cancels a map's timers once no user-space fd holds the map.
    if ebpf.map("SILENCE_SWEEP").is_none() {
        return Err(BpfError::Missing {
            kind: "map",
            name: "SILENCE_SWEEP",
        });
    }
    let events = RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?).map_err(map_err("EVENTS"))?;
    let tables = XdpTables {
        counters: PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?)
            .map_err(map_err("COUNTERS"))?,
        last_advert: Arc::new(LastAdvertTable::new(
            Array::try_from(take_map(&mut ebpf, "LAST_ADVERT")?).map_err(map_err("LAST_ADVERT"))?,
        )),
        vrid_config: Array::try_from(take_map(&mut ebpf, "VRID_CONFIG")?)
            .map_err(map_err("VRID_CONFIG"))?,
        lease: Lease(Arc::new(Mutex::new(
            Array::try_from(take_map(&mut ebpf, "AGENT_LEASE")?).map_err(map_err("AGENT_LEASE"))?,
        ))),
    };
    Ok((ebpf, events, tables))
}

/// Reader of the records the program writes to aya-log's ring buffer
/// (`AYA_LOGS`), handing them to `logger`: only a program loaded with
/// [`Diagnostics::On`] writes any. Takes the map out of `ebpf`.
pub fn kernel_log<T: log::Log>(ebpf: &mut Ebpf, logger: T) -> Result<EbpfLogger<T>, BpfError> {
    EbpfLogger::init_with_logger(ebpf, logger).map_err(|e| BpfError::KernelLog(Box::new(e)))
}

/// Forwards the program's log records to the `log` crate's logger, which
/// tracing-subscriber bridges into the agent's `tracing` output, until the
/// task is aborted.
async fn forward_kernel_log(mut records: AsyncFd<EbpfLogger<&'static dyn log::Log>>) {
    loop {
        match records.readable_mut().await {
            Ok(mut guard) => {
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            Err(error) => {
                tracing::warn!(%error, "waiting for XDP log records failed; kernel diagnostics stop");
                return;
            }
        }
    }
}

/// Starts forwarding the program's log records; a failure only costs the
/// diagnostics.
fn spawn_kernel_log(ebpf: &mut Ebpf, interface: &str) -> Option<tokio::task::JoinHandle<()>> {
    let records = kernel_log(ebpf, log::logger()).and_then(|records| {
        // SAFETY: the logger owns its ring buffer's fd and returns that same
        // fd until dropped.
        unsafe { AsyncFd::register(records) }.map_err(|e| BpfError::Reactor(e.into_parts().1))
    });
    match records {
        Ok(records) => Some(tokio::spawn(forward_kernel_log(records))),
        Err(error) => {
            tracing::warn!(interface, error = %crate::error_chain(&error), "XDP diagnostics unavailable");
            None
        }
    }
}

/// The `variant` XDP program inside a loaded object.
pub fn program_mut(ebpf: &mut Ebpf, variant: Variant) -> Result<&mut Xdp, BpfError> {
    ebpf.program_mut(variant.program())
        .ok_or(BpfError::Missing {
            kind: "program",
            name: variant.program(),
        })?
        .try_into()
        .map_err(|e| BpfError::Verify(Box::new(e)))
}

/// The program's array maps, owned by user space.
pub struct XdpTables {
    counters: PerCpuArray<MapData, u64>,
    /// Shared with status queries (see [`XdpTables::last_advert_reader`]).
    last_advert: Arc<LastAdvertTable>,
    vrid_config: Array<MapData, VridConfig>,
    lease: Lease,
}

/// The `AGENT_LEASE` map, shared with the task that renews it.
#[derive(Clone)]
struct Lease(Arc<Mutex<Array<MapData, AgentLease>>>);

impl Lease {
    fn set(&self, until_ns: u64) -> Result<(), BpfError> {
        // A poisoned lock still guards a usable map handle.
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.set(0, AgentLease { until_ns }, 0)
            .map_err(map_err("AGENT_LEASE"))
    }

    /// Renews the lease until the task is aborted.
    async fn keep_renewed(self) {
        let mut tick = tokio::time::interval(LEASE_RENEWAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let until = crate::clock::monotonic_ns() + LEASE.as_nanos() as u64;
            if let Err(error) = self.set(until) {
                tracing::error!(%error, "renewing the XDP agent lease failed; adverts will be passed to the stack");
            }
        }
    }
}

impl XdpTables {
    /// Writes the VRID table: entries for `vrids`, every other (family,
    /// VRID) disabled.
    pub fn configure(&mut self, vrids: &[(VridKey, VridConfig)]) -> Result<(), BpfError> {
        for index in 0..VRID_SLOTS {
            let config = vrids
                .iter()
                .find(|(key, _)| key.index() == index)
                .map(|(_, c)| *c)
                .unwrap_or_default();
            self.vrid_config
                .set(index, config, 0)
                .map_err(map_err("VRID_CONFIG"))?;
        }
        Ok(())
    }

    /// Lets the program consume adverts until `until_ns` (`CLOCK_MONOTONIC`);
    /// 0 hands them back to the network stack at once.
    pub fn set_lease(&mut self, until_ns: u64) -> Result<(), BpfError> {
        self.lease.set(until_ns)
    }

    /// Sums every counter over all CPUs.
    pub fn counters(&self) -> Result<Counters, BpfError> {
        let mut counters = Counters::default();
        for counter in Counter::ALL {
            let per_cpu = self
                .counters
                .get(&(counter as u32), 0)
                .map_err(map_err("COUNTERS"))?;
            counters.0[counter as usize] = per_cpu.iter().sum();
        }
        Ok(counters)
    }

    /// The last advert accepted for `key`, if any.
    pub fn last_advert(&self, key: VridKey) -> Result<Option<AdvertEvent>, BpfError> {
        self.last_advert.get(key)
    }

    /// Whether [`Self::last_advert`] reads a shared mapping of the map
    /// (no syscall) rather than looking entries up.
    pub fn last_advert_mapped(&self) -> bool {
        self.last_advert.mapped()
    }

    /// A handle reading [`Self::last_advert`] from elsewhere (status), valid
    /// as long as it is kept.
    pub fn last_advert_reader(
        &self,
    ) -> impl Fn(VridKey) -> Option<AdvertEvent> + Send + Sync + 'static {
        let map = Arc::clone(&self.last_advert);
        move |key| map.get(key).ok().flatten()
    }
}

/// A snapshot of the packet counters, indexed by [`Counter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub [u64; Counter::COUNT as usize]);

impl Counters {
    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter as usize]
    }

    pub fn increment(&mut self, counter: Counter) {
        self.0[counter as usize] += 1;
    }

    /// (name, value) pairs in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Counter::ALL.iter().map(|c| (c.name(), self.get(*c)))
    }
}

/// Attaches in default mode, or in skb mode when the driver refuses.
fn attach_fresh(
    program: &mut Xdp,
    interface: &str,
) -> Result<(AttachMode, aya::programs::xdp::XdpLinkId), BpfError> {
    match program.attach(interface, XdpMode::Default) {
        Ok(id) => Ok((AttachMode::Default, id)),
        Err(default) => {
            tracing::warn!(interface, error = %default, "XDP attach in default mode refused; trying skb mode");
            match program.attach(interface, XdpMode::Skb) {
                Ok(id) => Ok((AttachMode::Skb, id)),
                Err(skb) => Err(BpfError::Attach {
                    interface: interface.to_owned(),
                    default: Box::new(default),
                    skb: Box::new(skb),
                }),
            }
        }
    }
}

/// Replaces the program on a link a previous run left pinned for this
/// interface, keeping the attachment (no window without XDP).
fn take_over_pinned_link(
    program: &mut Xdp,
    pins: &PinDir,
    ifindex: u32,
    interface: &str,
) -> Option<(AttachMode, Attachment)> {
    let (path, mode) = pins.existing_link(ifindex)?;
    let mut replace = || -> Result<(), Box<dyn std::error::Error>> {
        let link = XdpLink::try_from(FdLink::from(PinnedLink::from_pin(&path)?))?;
        let id = program.attach_to_link(link)?;
        // The pin keeps the link attached; our handle is not needed.
        drop(program.take_link(id)?);
        Ok(())
    };
    match replace() {
        Ok(()) => {
            tracing::info!(interface, path = %path.display(), "took over the pinned XDP link; program replaced without detaching");
            Some((mode, Attachment::Pinned))
        }
        Err(error) => {
            tracing::warn!(interface, path = %path.display(), error = %crate::error_chain(error.as_ref()), "could not take over the pinned XDP link; attaching anew");
            let _ = std::fs::remove_file(&path);
            None
        }
    }
}

/// Pins a freshly attached link; on failure the program stays attached,
/// unpinned.
fn pin_link(
    program: &mut Xdp,
    link_id: aya::programs::xdp::XdpLinkId,
    pins: &PinDir,
    mode: AttachMode,
    interface: &str,
) -> Attachment {
    let path = pins.link_path(mode);
    let link = match program.take_link(link_id) {
        Ok(link) => link,
        Err(error) => {
            tracing::warn!(interface, %error, "XDP link not pinned");
            return Attachment::Owned;
        }
    };
    // Netlink-attached programs (kernels without XDP bpf_link) have no link
    // object to pin.
    let fd_link = match FdLink::try_from(link) {
        Ok(fd_link) => fd_link,
        Err(error) => {
            tracing::warn!(interface, %error, "XDP attached through netlink; it cannot be pinned and is detached when lbha stops");
            return Attachment::Owned;
        }
    };
    match fd_link.pin(&path) {
        // Dropping our handle closes only the fd: the pin keeps the link.
        Ok(_pinned) => Attachment::Pinned,
        Err(error) => {
            // The link was consumed by the failed pin: closing it detached
            // the program. Attach again, unpinned.
            tracing::warn!(interface, path = %path.display(), %error, "pinning the XDP link failed");
            match program.attach(interface, mode.xdp_mode()) {
                Ok(_) => Attachment::Owned,
                Err(error) => {
                    tracing::error!(interface, %error, "re-attaching XDP after a failed pin failed");
                    Attachment::Owned
                }
            }
        }
    }
}

/// Reads one ring buffer record as an event.
pub fn decode_event(bytes: &[u8]) -> Option<AdvertEvent> {
    (bytes.len() == size_of::<AdvertEvent>()).then(|| bytemuck::pod_read_unaligned(bytes))
}

/// Whether the program outlives this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attachment {
    /// Pinned: stays attached when the agent exits.
    Pinned,
    /// Owned by the `Ebpf` object: detached when the agent exits.
    Owned,
}

/// The loaded program, attached to one interface, with its maps. Dropping
/// it hands adverts back to the network stack; the program itself is
/// detached too unless it is pinned.
pub struct XdpProgram {
    // Kept alive: dropping the Ebpf unloads the program (and detaches it
    // unless the link is pinned).
    _ebpf: Ebpf,
    attachment: Attachment,
    mode: AttachMode,
    variant: Variant,
    events: AsyncFd<RingBuf<MapData>>,
    tables: XdpTables,
    lease_renewal: tokio::task::JoinHandle<()>,
    /// Forwards the program's log records (loaded with diagnostics only).
    kernel_log: Option<tokio::task::JoinHandle<()>>,
    /// 224.0.0.18 / ff02::12 joined on the interface for the families with
    /// configured VRIDs, so a NIC filtering multicast shows the program the
    /// adverts (the raw path's sockets join on their own).
    _groups: crate::sys::multicast::VrrpGroups,
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        self.lease_renewal.abort();
        if let Some(task) = &self.kernel_log {
            task.abort();
        }
        if let Err(error) = self.tables.lease.set(0) {
            tracing::warn!(%error, "could not release the XDP agent lease; it expires on its own");
        }
    }
}

impl XdpProgram {
    /// Loads the program, writes the VRID table and attaches to `interface`:
    /// default mode first, generic (skb) mode if the driver refuses. With
    /// `pin_root`, the link and maps are pinned there, and a link pinned by
    /// a previous run is taken over (its program replaced atomically)
    /// instead of attaching anew. Pinning problems are logged and the
    /// program runs unpinned. With debug logging on for
    /// [`diag::BPF_LOG_TARGET`], the program's diagnostics are loaded and
    /// forwarded to the log (see [`Diagnostics`]).
    ///
    /// Must run inside a tokio runtime (the lease is renewed by a task).
    pub fn attach(
        interface: &str,
        vrids: &[(VridKey, VridConfig)],
        pin_root: Option<&Path>,
        variant: Variant,
        steady: SteadyAdverts,
    ) -> Result<Self, BpfError> {
        let ifindex = crate::sys::iface::if_index(interface)
            .map_err(|_| BpfError::UnknownInterface(interface.to_owned()))?;
        let pins = pin_root.and_then(|root| match PinDir::prepare(root, ifindex) {
            Ok(pins) => Some(pins),
            Err(error) => {
                tracing::warn!(interface, error = %crate::error_chain(&error), "BPF pinning unavailable; the XDP program will be detached when lbha stops");
                None
            }
        });
        let diagnostics = Diagnostics::from_tracing();
        let (mut ebpf, events, mut tables) =
            load_with_pins(pins.as_ref(), variant, diagnostics, steady)?;
        tables.configure(vrids)?;
        // Consume adverts from the moment the program runs: the lease is
        // renewed by a task from here on.
        tables
            .lease
            .set(crate::clock::monotonic_ns() + LEASE.as_nanos() as u64)?;
        let program = program_mut(&mut ebpf, variant)?;
        let taken_over = pins
            .as_ref()
            .and_then(|pins| take_over_pinned_link(program, pins, ifindex, interface));
        let (mode, attachment) = if let Some(taken) = taken_over {
            taken
        } else {
            let (mode, link_id) = attach_fresh(program, interface)?;
            let attachment = match &pins {
                Some(pins) => pin_link(program, link_id, pins, mode, interface),
                None => Attachment::Owned,
            };
            (mode, attachment)
        };
        // SAFETY: the RingBuf owns its map fd and returns that same fd until dropped.
        let events = unsafe { AsyncFd::register(events) }
            .map_err(|e| BpfError::Reactor(e.into_parts().1))?;
        let lease_renewal = tokio::spawn(tables.lease.clone().keep_renewed());
        // Started once attached, so that a failed attach leaves no task
        // behind; records written since wait in aya-log's ring buffer.
        let kernel_log = match diagnostics {
            Diagnostics::On => spawn_kernel_log(&mut ebpf, interface),
            Diagnostics::Off => None,
        };
        tracing::info!(
            interface,
            mode = mode.name(),
            program = variant.name(),
            pinned = attachment == Attachment::Pinned,
            diagnostics = kernel_log.is_some(),
            "XDP program attached"
        );
        let groups = crate::sys::multicast::VrrpGroups::join(
            interface,
            ifindex,
            vrids.iter().any(|(key, _)| key.family == Family::Ipv4),
            vrids.iter().any(|(key, _)| key.family == Family::Ipv6),
        );
        Ok(Self {
            _ebpf: ebpf,
            attachment,
            mode,
            variant,
            events,
            tables,
            lease_renewal,
            kernel_log,
            _groups: groups,
        })
    }

    /// Whether the program stays attached after this process exits.
    pub fn pinned(&self) -> bool {
        self.attachment == Attachment::Pinned
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Which program of the object runs.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    pub fn tables(&self) -> &XdpTables {
        &self.tables
    }

    pub fn tables_mut(&mut self) -> &mut XdpTables {
        &mut self.tables
    }

    /// Takes the next queued event without waiting, including those the
    /// kernel queued without a wakeup.
    pub fn try_next(&mut self) -> Option<AdvertEvent> {
        loop {
            let item = self.events.get_mut().next()?;
            if let Some(event) = decode_event(&item) {
                return Some(event);
            }
            // Only a program/agent build mismatch could produce this; skip the
            // record rather than misread it.
            tracing::error!(
                len = item.len(),
                "ring buffer record of unexpected size skipped"
            );
        }
    }

    /// Waits until the kernel wakes us (an advert that changed something),
    /// then returns the next queued event.
    pub async fn next(&mut self) -> std::io::Result<AdvertEvent> {
        loop {
            if let Some(event) = self.try_next() {
                return Ok(event);
            }
            let mut guard = self.events.readable_mut().await?;
            guard.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use aya::maps::{MapInfo, MapType};

    use super::*;

    #[test]
    fn diagnostics_follow_the_debug_level_of_the_bpf_target() {
        let cases = [
            ("info", Diagnostics::Off),
            ("lbha_agent=info", Diagnostics::Off),
            ("lbha_agent::status=debug", Diagnostics::Off),
            ("debug", Diagnostics::On),
            ("lbha_agent=debug", Diagnostics::On),
            ("lbha_agent::bpf=trace", Diagnostics::On),
            ("info,lbha_agent::bpf::xdp=debug", Diagnostics::On),
        ];
        for (filter, expected) in cases {
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::sink)
                .finish();
            let got = tracing::subscriber::with_default(subscriber, Diagnostics::from_tracing);
            assert_eq!(got, expected, "RUST_LOG={filter}");
        }
    }

    fn map_id(pins: &PinDir, name: &str) -> u32 {
        MapInfo::from_pin(pins.map_path(name)).unwrap().id()
    }

    #[test]
    fn pinned_maps_match_the_declared_shapes_and_are_reused_or_replaced() {
        if !lbha_harness::require_root() {
            return;
        }
        let bpffs = lbha_harness::BpfFs::mount().unwrap();
        let pins = PinDir::prepare(bpffs.path(), 1).unwrap();
        let (mut first, _events, _tables) = load_with_pins(
            Some(&pins),
            Variant::Full,
            Diagnostics::On,
            SteadyAdverts::MapOnly,
        )
        .unwrap();

        // Every map the program uses is pinned with a declared shape, or
        // deliberately left unpinned: a map added to the program without a
        // decision either way fails here.
        let program = program_mut(&mut first, Variant::Full).unwrap();
        let map_ids = program.info().unwrap().map_ids().unwrap().unwrap();
        let mut names: Vec<String> = map_ids
            .iter()
            .map(|id| {
                MapInfo::from_id(*id)
                    .unwrap()
                    .name_as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        names.sort();
        let mut declared: Vec<&str> = pin::MAP_SHAPES
            .iter()
            .map(|shape| shape.name)
            .chain(pin::UNPINNED_MAPS)
            .collect();
        declared.sort_unstable();
        assert_eq!(names, declared);
        for name in pin::UNPINNED_MAPS {
            assert!(!pins.map_path(name).exists(), "{name} is not pinned");
        }

        // The table used to recognise stale pins agrees with the object.
        for shape in &pin::MAP_SHAPES {
            let info = MapInfo::from_pin(pins.map_path(shape.name)).unwrap();
            assert_eq!(
                (
                    info.map_type().unwrap(),
                    info.key_size(),
                    info.value_size(),
                    info.max_entries()
                ),
                (
                    shape.kind,
                    shape.key_size,
                    shape.value_size,
                    shape.max_entries
                ),
                "{}",
                shape.name
            );
        }

        // A second load (a restarted agent) reuses the pinned maps, the
        // mmapable LAST_ADVERT (whose flags are part of its shape) too.
        let counters = map_id(&pins, "COUNTERS");
        let last_advert = map_id(&pins, "LAST_ADVERT");
        let (_second, _, second_tables) = load_with_pins(
            Some(&pins),
            Variant::Full,
            Diagnostics::Off,
            SteadyAdverts::MapOnly,
        )
        .unwrap();
        assert_eq!(map_id(&pins, "COUNTERS"), counters);
        assert_eq!(map_id(&pins, "LAST_ADVERT"), last_advert);
        assert!(second_tables.last_advert_mapped());

        // A pin of another shape (another lbha version) is replaced.
        std::fs::remove_file(pins.map_path("COUNTERS")).unwrap();
        MapData::from_pin(pins.map_path("LAST_ADVERT"))
            .unwrap()
            .pin(pins.map_path("COUNTERS"))
            .unwrap();
        let (_third, _, _) = load_with_pins(
            Some(&pins),
            Variant::Full,
            Diagnostics::Off,
            SteadyAdverts::MapOnly,
        )
        .unwrap();
        let info = MapInfo::from_pin(pins.map_path("COUNTERS")).unwrap();
        assert_eq!(info.map_type().unwrap(), MapType::PerCpuArray);
        assert_ne!(info.id(), counters);

        // VRID_CONFIG as lbha pinned it before its values carried the
        // allowed sources and down_timer_adverts (12 bytes): replaced by
        // one of today's layout, which the program then reads.
        std::fs::remove_file(pins.map_path("VRID_CONFIG")).unwrap();
        let old = MapData::from_fd(array_map("VRID_CONFIG", 12, 256)).unwrap();
        let old_id = old.info().unwrap().id();
        old.pin(pins.map_path("VRID_CONFIG")).unwrap();
        drop(old);
        let (_fourth, _, mut tables) = load_with_pins(
            Some(&pins),
            Variant::Full,
            Diagnostics::Off,
            SteadyAdverts::MapOnly,
        )
        .unwrap();
        let info = MapInfo::from_pin(pins.map_path("VRID_CONFIG")).unwrap();
        assert_ne!(info.id(), old_id);
        assert_eq!(info.value_size(), size_of::<VridConfig>() as u32);
        let config = VridConfig::new(3, 0, [0; 8])
            .with_allowed_sources(&[lbha_common::event::wire_v4([10, 0, 0, 1])])
            .unwrap();
        tables.configure(&[(VridKey::v4(51), config)]).unwrap();
        let read: VridConfig = Array::<_, VridConfig>::try_from(aya::maps::Map::Array(
            MapData::from_pin(pins.map_path("VRID_CONFIG")).unwrap(),
        ))
        .unwrap()
        .get(&51, 0)
        .unwrap();
        assert_eq!(read, config);

        // The per-VRID timers an older lbha pinned (`SILENCE_TIMERS`, 24
        // bytes per VRID) are unpinned, so the kernel frees them and the
        // old program they point at.
        let retired = MapData::from_fd(array_map("SILENCE_TIMERS", 24, 512)).unwrap();
        retired.pin(pins.map_path("SILENCE_TIMERS")).unwrap();
        drop(retired);
        let (_fifth, _, _) = load_with_pins(
            Some(&pins),
            Variant::Full,
            Diagnostics::Off,
            SteadyAdverts::MapOnly,
        )
        .unwrap();
        assert!(!pins.map_path("SILENCE_TIMERS").exists());
    }

    /// A bare BPF array map (`BPF_MAP_CREATE`), of any value size: the shape
    /// an older build would have pinned.
    fn array_map(name: &str, value_size: u32, max_entries: u32) -> std::os::fd::OwnedFd {
        use std::os::fd::FromRawFd;
        const BPF_MAP_CREATE: libc::c_long = 0;
        const BPF_MAP_TYPE_ARRAY: u32 = 2;
        // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size,
        // max_entries, map_flags, inner_map_fd, numa_node, map_name[16].
        let mut attr = [0u8; 72];
        for (i, word) in [BPF_MAP_TYPE_ARRAY, 4, value_size, max_entries]
            .iter()
            .enumerate()
        {
            attr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
        attr[28..28 + name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: BPF_MAP_CREATE reads `attr` and returns a new fd we own.
        let fd =
            unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, attr.as_mut_ptr(), attr.len()) };
        assert!(
            fd >= 0,
            "BPF_MAP_CREATE: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh descriptor returned by the kernel.
        unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }
    }
}
