//! The kernel's `LAST_ADVERT` map, read from user space.
//!
//! A backup following a steady master reads each VRID's entry before acting
//! on a master-down deadline (and status reads it for the last advert's age).
//! With a thousand VRIDs that is about two thousand reads a second; a
//! `bpf(BPF_MAP_LOOKUP_ELEM)` syscall each cost the backup ~3 ms of CPU a
//! second. The map is created `BPF_F_MMAPABLE`, so the entries are read from
//! a shared read-only mapping instead, with no syscall. When the mapping
//! cannot be made (a map pinned by an older build without the flag is
//! replaced at load, so this is only a kernel refusing), reads fall back to
//! the syscall.

use std::{
    os::fd::{AsFd, AsRawFd},
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use aya::maps::{Array, IterableMap, MapData};
use lbha_common::{
    AdvertEvent,
    event::{VRID_SLOTS, VridKey},
};
use memmap2::{Mmap, MmapOptions};

use super::{BpfError, map_err};

/// An array map's entries are `value_size` rounded up to 8 bytes apart, in
/// the kernel's layout and in its mmap.
const ENTRY_STRIDE: usize = size_of::<AdvertEvent>().next_multiple_of(8);
const ENTRY_WORDS: usize = ENTRY_STRIDE / 8;
const _: () = assert!(ENTRY_STRIDE == size_of::<AdvertEvent>());

/// How often a read is retried when the program rewrote the entry under it.
const TORN_READ_RETRIES: usize = 4;

pub(super) struct LastAdvertTable {
    map: Mutex<Array<MapData, AdvertEvent>>,
    view: Option<Mmap>,
}

impl LastAdvertTable {
    pub(super) fn new(map: Array<MapData, AdvertEvent>) -> Self {
        let len = ENTRY_STRIDE * VRID_SLOTS as usize;
        // SAFETY: a read-only shared mapping of the map's value area; the
        // kernel keeps the pages alive while the mapping exists, and we only
        // ever read it through atomics (the XDP program writes concurrently).
        let view = unsafe {
            MmapOptions::new()
                .len(len)
                .map(map.map().fd().as_fd().as_raw_fd())
        };
        let view = match view {
            Ok(view) if view.len() >= len => Some(view),
            Ok(_) => None,
            Err(error) => {
                tracing::debug!(%error, "LAST_ADVERT cannot be mapped; reading it with syscalls");
                None
            }
        };
        Self {
            map: Mutex::new(map),
            view,
        }
    }

    /// Whether reads go through the shared mapping (no syscall).
    pub(super) fn mapped(&self) -> bool {
        self.view.is_some()
    }

    /// The last advert accepted for `key`, if any.
    pub(super) fn get(&self, key: VridKey) -> Result<Option<AdvertEvent>, BpfError> {
        let event = if let Some(view) = &self.view {
            read_mapped(view, key.index() as usize)
        } else {
            // A poisoned lock still guards a usable map handle.
            let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
            map.get(&key.index(), 0).map_err(map_err("LAST_ADVERT"))?
        };
        Ok((event.timestamp_ns != 0).then_some(event))
    }
}

/// Reads entry `index` of the mapping. The program copies a whole advert
/// into the entry without a lock, so a read racing that copy could mix two
/// adverts: the entry is read twice and kept only when both reads agree.
/// A reader that keeps losing the race gets the last read, as the lookup
/// syscall (which copies without a lock too) would.
fn read_mapped(view: &Mmap, index: usize) -> AdvertEvent {
    let words = entry_words(view, index);
    let read =
        || -> [u64; ENTRY_WORDS] { std::array::from_fn(|w| words[w].load(Ordering::Acquire)) };
    let mut last = read();
    for _ in 0..TORN_READ_RETRIES {
        let again = read();
        if again == last {
            break;
        }
        last = again;
    }
    bytemuck::cast(last)
}

#[allow(
    clippy::cast_ptr_alignment,
    reason = "the mapping is page-aligned and entries 8 bytes apart"
)]
fn entry_words(view: &Mmap, index: usize) -> &[AtomicU64] {
    let start = index * ENTRY_STRIDE;
    let bytes = &view[start..start + ENTRY_STRIDE];
    let words = bytes.as_ptr().cast::<AtomicU64>();
    debug_assert!(words.is_aligned());
    // SAFETY: in bounds (sliced above) and 8-aligned (the mapping is
    // page-aligned, ENTRY_STRIDE a multiple of 8); AtomicU64 has u64's
    // layout, and atomics are how memory another agent (the kernel) writes
    // is read.
    unsafe { std::slice::from_raw_parts(words, ENTRY_WORDS) }
}
