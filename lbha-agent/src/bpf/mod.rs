//! Loading and attaching the XDP program, and reading what it produces.

use aya::{
    Ebpf, EbpfError,
    maps::{Array, MapData, MapError, PerCpuArray, RingBuf},
    programs::{ProgramError, Xdp, XdpMode},
};
use lbha_common::{AdvertEvent, Counter, VridConfig};
use thiserror::Error;
use tokio::io::unix::AsyncFd;

/// The XDP object built by lbha-agent's build script from lbha-ebpf.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lbha"));

const PROGRAM: &str = "lbha_xdp";

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
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not raise RLIMIT_MEMLOCK");
    }
}

/// Loads the program into the kernel without attaching it (`test_run` uses
/// this directly). Returns the object, its ring buffer and its other maps.
pub fn load() -> Result<(Ebpf, RingBuf<MapData>, XdpTables), BpfError> {
    raise_memlock_limit();
    let mut ebpf = Ebpf::load(EBPF_OBJECT).map_err(|e| BpfError::Load(Box::new(e)))?;
    program_mut(&mut ebpf)?
        .load()
        .map_err(|e| BpfError::Verify(Box::new(e)))?;
    let events = RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?).map_err(map_err("EVENTS"))?;
    let tables = XdpTables {
        counters: PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?)
            .map_err(map_err("COUNTERS"))?,
        last_advert: Array::try_from(take_map(&mut ebpf, "LAST_ADVERT")?)
            .map_err(map_err("LAST_ADVERT"))?,
        vrid_config: Array::try_from(take_map(&mut ebpf, "VRID_CONFIG")?)
            .map_err(map_err("VRID_CONFIG"))?,
    };
    Ok((ebpf, events, tables))
}

/// The XDP program inside a loaded object.
pub fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp, BpfError> {
    ebpf.program_mut(PROGRAM)
        .ok_or(BpfError::Missing {
            kind: "program",
            name: PROGRAM,
        })?
        .try_into()
        .map_err(|e| BpfError::Verify(Box::new(e)))
}

/// The program's array maps, owned by user space.
pub struct XdpTables {
    counters: PerCpuArray<MapData, u64>,
    last_advert: Array<MapData, AdvertEvent>,
    vrid_config: Array<MapData, VridConfig>,
}

impl XdpTables {
    /// Writes the VRID table: entries for `vrids`, every other VRID disabled.
    pub fn configure(&mut self, vrids: &[(u8, VridConfig)]) -> Result<(), BpfError> {
        for vrid in 0..=255u8 {
            let config = vrids
                .iter()
                .find(|(v, _)| *v == vrid)
                .map(|(_, c)| *c)
                .unwrap_or_default();
            self.vrid_config
                .set(u32::from(vrid), config, 0)
                .map_err(map_err("VRID_CONFIG"))?;
        }
        Ok(())
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

    /// The last advert accepted for `vrid`, if any.
    pub fn last_advert(&self, vrid: u8) -> Result<Option<AdvertEvent>, BpfError> {
        let event = self
            .last_advert
            .get(&u32::from(vrid), 0)
            .map_err(map_err("LAST_ADVERT"))?;
        Ok((event.timestamp_ns != 0).then_some(event))
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

/// Reads one ring buffer record as an event.
pub fn decode_event(bytes: &[u8]) -> Option<AdvertEvent> {
    (bytes.len() == size_of::<AdvertEvent>()).then(|| bytemuck::pod_read_unaligned(bytes))
}

/// The loaded program, attached to one interface, with its maps. Dropping it
/// detaches the program.
pub struct XdpProgram {
    // Kept alive: dropping the Ebpf detaches the link and unloads the program.
    _ebpf: Ebpf,
    mode: AttachMode,
    events: AsyncFd<RingBuf<MapData>>,
    tables: XdpTables,
}

impl XdpProgram {
    /// Loads the program, writes the VRID table and attaches to `interface`:
    /// default mode first, generic (skb) mode if the driver refuses.
    pub fn attach(interface: &str, vrids: &[(u8, VridConfig)]) -> Result<Self, BpfError> {
        let (mut ebpf, events, mut tables) = load()?;
        tables.configure(vrids)?;
        let program = program_mut(&mut ebpf)?;
        let mode = match program.attach(interface, XdpMode::Default) {
            Ok(_) => AttachMode::Default,
            Err(default) => {
                tracing::warn!(interface, error = %default, "XDP attach in default mode refused; trying skb mode");
                match program.attach(interface, XdpMode::Skb) {
                    Ok(_) => AttachMode::Skb,
                    Err(skb) => {
                        return Err(BpfError::Attach {
                            interface: interface.to_owned(),
                            default: Box::new(default),
                            skb: Box::new(skb),
                        });
                    }
                }
            }
        };
        // SAFETY: the RingBuf owns its map fd and returns that same fd until dropped.
        let events = unsafe { AsyncFd::register(events) }
            .map_err(|e| BpfError::Reactor(e.into_parts().1))?;
        tracing::info!(interface, mode = mode.name(), "XDP program attached");
        Ok(Self {
            _ebpf: ebpf,
            mode,
            events,
            tables,
        })
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
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
