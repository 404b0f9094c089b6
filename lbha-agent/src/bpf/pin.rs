//! Pinning the XDP link and its maps under bpffs, so that restarting the
//! agent (an upgrade, a crash and systemd's restart) neither detaches the
//! program nor loses the last advert seen per VRID.
//!
//! Layout: `<root>/netns-<inode>/if-<ifindex>/` holds `link-xdp` or
//! `link-xdp-skb` (the mode it was attached in) and one pin per map. The
//! network namespace's inode is part of the path because interface indexes
//! are only unique within a namespace, and one bpffs can be shared by agents
//! in several namespaces.
//!
//! What a pinned program does while no agent runs is decided by the
//! `AGENT_LEASE` map: it passes adverts on instead of consuming them.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
};

use aya::maps::{MapInfo, MapType};
use lbha_common::{
    AdvertEvent, AgentLease, Counter, VridConfig,
    event::{LAST_ADVERT_MAP_FLAGS, VRID_SLOTS},
};
use thiserror::Error;

use super::{AttachMode, EVENTS_BYTES};

/// Where the system's bpffs is expected (and mounted when absent).
const SYSTEM_BPFFS: &str = "/sys/fs/bpf";

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_TYPE_XDP: u32 = 6;

#[derive(Debug, Error)]
pub enum PinError {
    #[error("mounting a BPF filesystem at {SYSTEM_BPFFS} failed")]
    Mount(#[source] io::Error),
    #[error("{} is not on a BPF filesystem (mount one with `mount -t bpf bpf DIR`)", .0.display())]
    NotBpffs(PathBuf),
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PinError + 'a {
    move |source| PinError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The shape of each map the program declares. A pinned map left by another
/// build with a different shape is replaced rather than reused (reusing it
/// would make the verifier reject the program, or worse, misread records).
pub(super) struct MapShape {
    pub name: &'static str,
    pub kind: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

pub(super) const MAP_SHAPES: [MapShape; 5] = [
    MapShape {
        name: "VRID_CONFIG",
        kind: MapType::Array,
        key_size: 4,
        value_size: size_of::<VridConfig>() as u32,
        max_entries: VRID_SLOTS,
        flags: 0,
    },
    MapShape {
        name: "LAST_ADVERT",
        kind: MapType::Array,
        key_size: 4,
        value_size: size_of::<AdvertEvent>() as u32,
        max_entries: VRID_SLOTS,
        flags: LAST_ADVERT_MAP_FLAGS,
    },
    MapShape {
        name: "COUNTERS",
        kind: MapType::PerCpuArray,
        key_size: 4,
        value_size: 8,
        max_entries: Counter::COUNT,
        flags: 0,
    },
    MapShape {
        name: "EVENTS",
        kind: MapType::RingBuf,
        key_size: 0,
        value_size: 0,
        max_entries: EVENTS_BYTES,
        flags: 0,
    },
    MapShape {
        name: "AGENT_LEASE",
        kind: MapType::Array,
        key_size: 4,
        value_size: size_of::<AgentLease>() as u32,
        max_entries: 1,
        flags: 0,
    },
];

/// Maps of the program that are created afresh by every load, never
/// pinned: `AYA_LOGS` (aya-log's records, only of use to the agent that
/// loaded the program, and in a format only that build's reader is sure to
/// parse), `DIAG_SEEN` (what this program's diagnostics already reported),
/// `SILENCE_SWEEP`, `SILENCE_DUE` and `TIMER_STATE` (the program's silence
/// timer, the deadlines it sweeps, and what the program told its agent about
/// it: a timer in a pinned map would outlive its agent and keep reporting
/// into the pinned ring buffer) and `.rodata` (load-time constants, frozen).
#[cfg(test)]
pub(super) const UNPINNED_MAPS: [&str; 6] = [
    "AYA_LOGS",
    "DIAG_SEEN",
    "SILENCE_SWEEP",
    "SILENCE_DUE",
    "TIMER_STATE",
    ".rodata",
];

/// Pins that earlier builds left and this one no longer uses: removed so
/// that what they hold (for `SILENCE_TIMERS`, one kernel timer per VRID still
/// pointed at the old program, which keeps it loaded) is freed.
const RETIRED_PINS: [&str; 1] = ["SILENCE_TIMERS"];

impl MapShape {
    fn matches(&self, info: &MapInfo) -> bool {
        info.map_type().ok() == Some(self.kind)
            && info.key_size() == self.key_size
            && info.value_size() == self.value_size
            && info.max_entries() == self.max_entries
            && info.map_flags() == self.flags
    }
}

/// The pin directory of one interface in the current network namespace.
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    /// Makes sure `root` is on bpffs (mounting the system one when `root` is
    /// under /sys/fs/bpf and nothing is mounted there), removes pins whose
    /// interface is gone, and creates this interface's directory.
    pub fn prepare(root: &Path, ifindex: u32) -> Result<Self, PinError> {
        ensure_bpffs(root)?;
        sweep_defunct(root);
        let path = netns_dir(root)?.join(format!("if-{ifindex}"));
        std::fs::create_dir_all(&path).map_err(io_err("creating", &path))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn map_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn link_path(&self, mode: AttachMode) -> PathBuf {
        link_file(&self.path, mode)
    }

    /// Unpins maps whose shape differs from what this build declares, so the
    /// loader creates fresh ones in their place, and those it no longer uses.
    pub(super) fn drop_incompatible_maps(&self) {
        for name in RETIRED_PINS {
            let path = self.map_path(name);
            if path.exists() {
                tracing::info!(map = name, path = %path.display(), "removing a pin this lbha no longer uses (left by an older one)");
                if let Err(error) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), %error, "could not remove the old pin");
                }
            }
        }
        for shape in &MAP_SHAPES {
            let path = self.map_path(shape.name);
            if !path.exists() {
                continue;
            }
            let compatible = MapInfo::from_pin(&path).is_ok_and(|info| shape.matches(&info));
            if !compatible {
                tracing::warn!(map = shape.name, path = %path.display(), "pinned map has another layout (older or newer lbha); replacing it");
                if let Err(error) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), %error, "could not unpin the old map");
                }
            }
        }
    }

    /// The pinned link for `ifindex` and the mode it was attached in, if a
    /// live one is there. Dead or foreign pins are removed.
    pub fn existing_link(&self, ifindex: u32) -> Option<(PathBuf, AttachMode)> {
        for mode in [AttachMode::Default, AttachMode::Skb] {
            let path = self.link_path(mode);
            if !path.exists() {
                continue;
            }
            match pinned_xdp_ifindex(&path) {
                Ok(Some(index)) if index == ifindex => return Some((path, mode)),
                outcome => {
                    tracing::info!(path = %path.display(), ?outcome, "removing a pinned link that is no longer attached here");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        None
    }
}

/// The link pin in an interface directory: named after the mode it was
/// attached in, which the kernel's link info does not tell.
fn link_file(interface_dir: &Path, mode: AttachMode) -> PathBuf {
    interface_dir.join(format!("link-{}", mode.name()))
}

/// This network namespace's directory under `root`.
fn netns_dir(root: &Path) -> Result<PathBuf, PinError> {
    let ns = Path::new("/proc/self/ns/net");
    let inode = std::fs::metadata(ns).map_err(io_err("reading", ns))?.ino();
    Ok(root.join(format!("netns-{inode}")))
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let stat = nix::sys::statfs::statfs(path).map_err(io::Error::from)?;
    Ok(stat.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

fn ensure_bpffs(root: &Path) -> Result<(), PinError> {
    let system = Path::new(SYSTEM_BPFFS);
    if root.starts_with(system) && !is_bpffs(system).unwrap_or(false) {
        nix::mount::mount(
            Some("bpf"),
            system,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            Some("mode=0700"),
        )
        .map_err(|errno| PinError::Mount(io::Error::from(errno)))?;
        tracing::info!(path = SYSTEM_BPFFS, "mounted a BPF filesystem");
    }
    std::fs::create_dir_all(root).map_err(io_err("creating", root))?;
    if !is_bpffs(root).map_err(io_err("checking", root))? {
        return Err(PinError::NotBpffs(root.to_owned()));
    }
    Ok(())
}

/// Removes interface directories (of any namespace) whose pinned link is
/// no longer attached: the interface, or its whole namespace, was deleted.
/// Directories without a link are left alone, as another agent may be
/// setting one up.
fn sweep_defunct(root: &Path) {
    let Ok(namespaces) = std::fs::read_dir(root) else {
        return;
    };
    for ns in namespaces.flatten() {
        let Ok(interfaces) = std::fs::read_dir(ns.path()) else {
            continue;
        };
        for dir in interfaces.flatten() {
            let links =
                [AttachMode::Default, AttachMode::Skb].map(|mode| link_file(&dir.path(), mode));
            let Some(link) = links.iter().find(|p| p.exists()) else {
                continue;
            };
            if let Ok(Some(0)) = pinned_xdp_ifindex(link) {
                tracing::info!(path = %dir.path().display(), "removing pins of a deleted interface");
                if let Err(error) = std::fs::remove_dir_all(dir.path()) {
                    tracing::warn!(path = %dir.path().display(), %error, "could not remove stale pins");
                }
            }
        }
        // Only succeeds once the namespace's last interface is gone.
        let _ = std::fs::remove_dir(ns.path());
    }
}

/// Removes this network namespace's pins under `root`: every program lbha
/// left attached here is detached once no running agent holds it. Returns
/// the interface directories removed.
pub fn remove_namespace_pins(root: &Path) -> Result<Vec<PathBuf>, PinError> {
    let dir = netns_dir(root)?;
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(io_err("reading", &dir)(e)),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        std::fs::remove_dir_all(&path).map_err(io_err("removing", &path))?;
        removed.push(path);
    }
    let _ = std::fs::remove_dir(&dir);
    Ok(removed)
}

/// The interface index a pinned XDP link is attached to: `Some(0)` once
/// the interface is gone, `None` when the pin is not an XDP link.
fn pinned_xdp_ifindex(path: &Path) -> io::Result<Option<u32>> {
    let fd = bpf_obj_get(path)?;
    let info = link_info(&fd)?;
    Ok((info.kind == BPF_LINK_TYPE_XDP).then_some(info.union[0]))
}

fn bpf_obj_get(path: &Path) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct ObjGetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut attr = ObjGetAttr {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: BPF_OBJ_GET reads the attr (a valid path pointer) and returns
    // a new fd that we own.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &raw mut attr,
            size_of::<ObjGetAttr>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor returned by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The head of `struct bpf_link_info`: type, ids, then the per-type union
/// (for XDP its first word is the interface index).
#[repr(C, align(8))]
#[derive(Default)]
struct LinkInfoHead {
    kind: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    union: [u32; 12],
}

fn link_info(fd: &OwnedFd) -> io::Result<LinkInfoHead> {
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = LinkInfoHead::default();
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<LinkInfoHead>() as u32,
        info: &raw mut info as u64,
    };
    // SAFETY: the kernel writes at most info_len bytes into `info`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw mut attr,
            size_of::<InfoAttr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info)
}
