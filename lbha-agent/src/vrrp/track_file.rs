//! keepalived's `track_file` (2.2.7, `trackers/track_file.c`): a number in
//! a file, re-read when the file is closed after a write or moved in
//! (inotify on its directory, no polling), 0 when it is missing, empty,
//! unreadable, deleted or moved away. How the number weighs on an
//! instance is `vrrp::track::file_status`.

use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsString,
    io::Read,
    os::{
        fd::{AsFd, AsRawFd, RawFd},
        unix::fs::OpenOptionsExt,
    },
    path::{Path, PathBuf},
    sync::Arc,
};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::{io::unix::AsyncFd, sync::watch};

use crate::config::TrackFile;

/// Each track file's value by name; None for one keepalived does not track
/// (its directory did not exist at start).
pub type FileValues = Arc<BTreeMap<String, Option<i64>>>;

/// What reading a file gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    Value(i64),
    /// Out of keepalived's range: logged, and the previous value kept.
    Invalid,
}

/// C's `strtol(text, NULL, 0)` on a 64-bit host, as keepalived reads the
/// file: leading white space, a sign, `0x` (hex) or `0` (octal) prefixes,
/// digits up to the first other byte (or NUL); no digits is 0. None on
/// overflow (ERANGE).
pub fn strtol0(bytes: &[u8]) -> Option<i64> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let mut s = &bytes[..end];
    while let [b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r', rest @ ..] = s {
        s = rest;
    }
    let negative = match s {
        [b'-', rest @ ..] => {
            s = rest;
            true
        }
        [b'+', rest @ ..] => {
            s = rest;
            false
        }
        _ => false,
    };
    let radix = match s {
        [b'0', b'x' | b'X', d, ..] if d.is_ascii_hexdigit() => {
            s = &s[2..];
            16
        }
        [b'0', ..] => 8,
        _ => 10,
    };
    // Accumulated negatively so that i64::MIN fits.
    let mut value: i64 = 0;
    for &b in s {
        let Some(digit) = char::from(b).to_digit(radix) else {
            break;
        };
        value = value
            .checked_mul(i64::from(radix))?
            .checked_sub(i64::from(digit))?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

/// What keepalived makes of the first 127 bytes of the file.
pub fn parse(bytes: &[u8]) -> Reading {
    match strtol0(&bytes[..bytes.len().min(127)]) {
        // keepalived's bound: INT32_MIN..=INT32_MAX + 1.
        Some(v) if (i64::from(i32::MIN)..=i64::from(i32::MAX) + 1).contains(&v) => {
            Reading::Value(v)
        }
        _ => Reading::Invalid,
    }
}

/// Reads `path` as keepalived does: non-blocking open (a FIFO there never
/// hangs the read), one read of at most 127 bytes; a file that cannot be
/// opened or read, or is empty, is 0. Blocks: run on the blocking pool.
pub fn read(path: &Path) -> Reading {
    let Ok(mut file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    else {
        return Reading::Value(0);
    };
    let mut buf = [0u8; 127];
    match file.read(&mut buf) {
        Ok(len) if len > 0 => parse(&buf[..len]),
        _ => Reading::Value(0),
    }
}

/// keepalived's `init_file`: at start, write the value when the file is
/// missing, or, with `overwrite`, over an existing regular file (but not
/// on a reload). A failure is logged, as keepalived reports it, and the
/// file is then tracked as it is. Blocks.
pub fn initialise(files: &[TrackFile], reload: bool) {
    for file in files {
        let Some(init) = file.init else { continue };
        match std::fs::metadata(&file.path) {
            Ok(_) if !init.overwrite || reload => continue,
            Ok(meta) if !meta.is_file() => {
                tracing::warn!(track_file = %file.name, path = %file.path.display(), "cannot initialise track file: not a regular file");
                continue;
            }
            _ => {}
        }
        if let Err(error) = std::fs::write(&file.path, format!("{}\n", init.value)) {
            tracing::warn!(track_file = %file.name, path = %file.path.display(), %error, "unable to initialise track file");
        }
    }
}

/// Where a file is watched: its directory (resolved as keepalived's
/// `init_track_files` resolves it: the file's real path when it exists,
/// else its directory's) and its name there. None when the directory does
/// not exist: keepalived then drops the track file.
fn location(path: &Path) -> Option<(PathBuf, OsString)> {
    let resolved = if let Ok(real) = std::fs::canonicalize(path) {
        real
    } else {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let dir = std::fs::canonicalize(dir).ok().filter(|d| d.is_dir())?;
        dir.join(path.file_name()?)
    };
    Some((
        resolved.parent()?.to_path_buf(),
        resolved.file_name()?.into(),
    ))
}

struct Watched {
    name: String,
    path: PathBuf,
    wd: WatchDescriptor,
    file_name: OsString,
}

/// Sets up the watches and reads every file once. Blocks.
fn start(files: &[TrackFile]) -> (Option<Inotify>, Vec<Watched>, BTreeMap<String, Option<i64>>) {
    let mut values = BTreeMap::new();
    let inotify = match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
        Ok(i) => Some(i),
        Err(error) => {
            tracing::error!(%error, "unable to monitor track files; their values stay as read at start");
            None
        }
    };
    let mut watched = Vec::new();
    let mut dirs: HashMap<PathBuf, WatchDescriptor> = HashMap::new();
    for file in files {
        let Some((dir, file_name)) = location(&file.path) else {
            tracing::warn!(track_file = %file.name, path = %file.path.display(), "track file directory does not exist: not tracked, as keepalived drops it");
            values.insert(file.name.clone(), None);
            continue;
        };
        let path = dir.join(&file_name);
        let value = match read(&path) {
            Reading::Value(v) => v,
            Reading::Invalid => {
                tracing::warn!(track_file = %file.name, path = %path.display(), "invalid number in track file: ignored (0), as keepalived ignores it");
                0
            }
        };
        values.insert(file.name.clone(), Some(value));
        let Some(inotify) = &inotify else { continue };
        let wd = match dirs.get(&dir) {
            Some(wd) => *wd,
            None => match inotify.add_watch(
                &dir,
                AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVE,
            ) {
                Ok(wd) => {
                    dirs.insert(dir.clone(), wd);
                    wd
                }
                Err(error) => {
                    tracing::error!(track_file = %file.name, dir = %dir.display(), %error, "cannot watch the track file's directory; its value stays as read at start");
                    continue;
                }
            },
        };
        watched.push(Watched {
            name: file.name.clone(),
            path,
            wd,
            file_name,
        });
    }
    (inotify, watched, values)
}

/// The track files initialised (`init_file`), watched and read once:
/// instances start with their values, as keepalived's do.
pub struct Prepared {
    inotify: Option<Inotify>,
    watched: Vec<Watched>,
    values: BTreeMap<String, Option<i64>>,
}

impl Prepared {
    /// Blocks: call from the blocking pool. `reload`: not the daemon's
    /// first configuration (`init_file overwrite` then leaves files alone).
    pub fn new(files: &[TrackFile], reload: bool) -> Self {
        initialise(files, reload);
        let (inotify, watched, values) = start(files);
        Self {
            inotify,
            watched,
            values,
        }
    }

    /// Publishes the values and follows their changes (a task, which ends
    /// when every receiver is gone).
    pub fn start(self) -> watch::Receiver<FileValues> {
        let (tx, rx) = watch::channel(Arc::new(self.values));
        let Some(inotify) = self.inotify else {
            return rx;
        };
        if self.watched.is_empty() {
            return rx;
        }
        // SAFETY: the AsyncFd owns the inotify descriptor and it stays the
        // same descriptor until the AsyncFd drops it.
        match unsafe { AsyncFd::register(InotifyFd(inotify)) }.map_err(|e| e.into_parts().1) {
            Ok(fd) => {
                tokio::spawn(follow(fd, self.watched, tx));
            }
            Err(error) => {
                tracing::error!(%error, "unable to monitor track files; their values stay as read at start");
            }
        }
        rx
    }
}

/// The inotify descriptor, as the reactor registers descriptors.
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

async fn follow(fd: AsyncFd<InotifyFd>, watched: Vec<Watched>, tx: watch::Sender<FileValues>) {
    let watched = Arc::new(watched);
    loop {
        let events = tokio::select! {
            guard = fd.readable() => {
                let Ok(mut guard) = guard else { return };
                match guard.try_io(|fd| fd.get_ref().0.read_events().map_err(std::io::Error::from)) {
                    Ok(Ok(events)) => events,
                    // Would block: readiness cleared, wait again.
                    Err(_) => continue,
                    Ok(Err(error)) => {
                        tracing::error!(%error, "reading track file events failed; values stay as they are");
                        return;
                    }
                }
            }
            () = tx.closed() => return,
        };
        // (index, None: gone, so 0 without reading; Some: read it)
        let mut changed: Vec<(usize, bool)> = Vec::new();
        for event in &events {
            if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                // Events were lost: read them all again.
                changed.extend((0..watched.len()).map(|i| (i, true)));
                continue;
            }
            if event.mask.contains(AddWatchFlags::IN_ISDIR) {
                continue;
            }
            let Some(name) = &event.name else { continue };
            let gone = event
                .mask
                .intersects(AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM);
            for (i, w) in watched.iter().enumerate() {
                if w.wd == event.wd && &w.file_name == name {
                    changed.push((i, !gone));
                }
            }
        }
        if changed.is_empty() {
            continue;
        }
        let list = Arc::clone(&watched);
        let read_back = tokio::task::spawn_blocking(move || {
            changed
                .into_iter()
                .map(|(i, reread)| {
                    let reading = if reread {
                        read(&list[i].path)
                    } else {
                        Reading::Value(0)
                    };
                    (i, reading)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let Ok(read_back) = read_back else { continue };
        tx.send_if_modified(|current| {
            let mut next = (**current).clone();
            for (i, reading) in read_back {
                let w = &watched[i];
                match reading {
                    Reading::Value(v) => {
                        if next.get(&w.name) != Some(&Some(v)) {
                            tracing::info!(track_file = %w.name, value = v, "track file value changed");
                        }
                        next.insert(w.name.clone(), Some(v));
                    }
                    Reading::Invalid => {
                        tracing::warn!(track_file = %w.name, path = %w.path.display(), "invalid number read from track file: ignored, the previous value stays (keepalived's rule)");
                    }
                }
            }
            let modified = next != **current;
            if modified {
                *current = Arc::new(next);
            }
            modified
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_as_strtol_base_0_reads_them() {
        assert_eq!(strtol0(b"42\n"), Some(42));
        assert_eq!(strtol0(b"  -17 trailing"), Some(-17));
        assert_eq!(strtol0(b"+5"), Some(5));
        assert_eq!(strtol0(b"0x1F"), Some(31));
        assert_eq!(strtol0(b"0X1f"), Some(31));
        assert_eq!(strtol0(b"010"), Some(8));
        // "0x" without a hex digit is the 0 before it.
        assert_eq!(strtol0(b"0xg"), Some(0));
        assert_eq!(strtol0(b"09"), Some(0));
        assert_eq!(strtol0(b"abc"), Some(0));
        assert_eq!(strtol0(b""), Some(0));
        assert_eq!(strtol0(b"1\x002"), Some(1));
        assert_eq!(strtol0(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(strtol0(b"9223372036854775808"), None);
    }

    #[test]
    fn values_beyond_keepalived_bounds_are_invalid() {
        assert_eq!(parse(b"2147483648"), Reading::Value(2_147_483_648));
        assert_eq!(parse(b"2147483649"), Reading::Invalid);
        assert_eq!(parse(b"-2147483648"), Reading::Value(-2_147_483_648));
        assert_eq!(parse(b"-2147483649"), Reading::Invalid);
        assert_eq!(parse(b"99999999999999999999"), Reading::Invalid);
        assert_eq!(parse(b"not a number"), Reading::Value(0));
    }

    #[test]
    fn a_missing_or_empty_file_is_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert_eq!(read(&path), Reading::Value(0));
        std::fs::write(&path, "").unwrap();
        assert_eq!(read(&path), Reading::Value(0));
        std::fs::write(&path, "12\n").unwrap();
        assert_eq!(read(&path), Reading::Value(12));
        // A directory cannot be read: 0.
        assert_eq!(read(dir.path()), Reading::Value(0));
    }

    fn file(path: &Path, init: Option<(i64, bool)>) -> TrackFile {
        TrackFile {
            name: "f".into(),
            path: path.to_path_buf(),
            weight: 1,
            reverse: false,
            init: init.map(|(value, overwrite)| crate::config::TrackFileInit { value, overwrite }),
        }
    }

    #[test]
    fn init_file_creates_and_overwrites_only_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        initialise(&[file(&path, Some((7, false)))], false);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "7\n");
        // Exists, no overwrite: left alone.
        initialise(&[file(&path, Some((9, false)))], false);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "7\n");
        // Overwrite on a reload: left alone; at start: written.
        initialise(&[file(&path, Some((9, true)))], true);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "7\n");
        initialise(&[file(&path, Some((9, true)))], false);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "9\n");
        // No init_file: never written.
        let other = dir.path().join("g");
        initialise(&[file(&other, None)], false);
        assert!(!other.exists());
    }

    #[tokio::test]
    async fn changes_are_followed_without_polling() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let missing = TrackFile {
            name: "gone".into(),
            ..file(&dir.path().join("no-such-dir/x"), None)
        };
        let mut rx = Prepared::new(&[file(&path, None), missing], false).start();
        let value = |rx: &watch::Receiver<FileValues>| rx.borrow().get("f").copied().flatten();
        assert_eq!(value(&rx), Some(0));
        assert_eq!(rx.borrow().get("gone"), Some(&None));
        async fn wait(rx: &mut watch::Receiver<FileValues>) {
            tokio::time::timeout(std::time::Duration::from_secs(5), rx.changed())
                .await
                .expect("no change seen")
                .unwrap();
        }
        std::fs::write(&path, "5\n").unwrap();
        wait(&mut rx).await;
        assert_eq!(value(&rx), Some(5));
        // Moved in over it (an atomic replace).
        let tmp = dir.path().join("f.tmp");
        std::fs::write(&tmp, "-3").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        wait(&mut rx).await;
        assert_eq!(value(&rx), Some(-3));
        // An invalid number keeps the value; deleting makes it 0.
        std::fs::write(&path, "99999999999").unwrap();
        std::fs::remove_file(&path).unwrap();
        wait(&mut rx).await;
        assert_eq!(value(&rx), Some(0));
    }
}
