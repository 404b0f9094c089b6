//! A private BPF filesystem, so a test's pins never mix with the host's
//! `/sys/fs/bpf` nor with another test's.

use std::{ffi::CString, path::Path};

use crate::{Error, Result, TempDir, temp_dir};

/// A BPF filesystem mounted on a temporary directory, for agents told to
/// pin there (`--bpf-pin-dir`) and for tests of the pinning code.
/// Everything pinned in it is released when it is unmounted on drop, so
/// nothing outlives the test; then the directory goes.
pub struct BpfFs {
    // Unmounted in Drop, before the directory guard removes the mount point.
    dir: TempDir,
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_encoded_bytes()).expect("temporary paths have no NUL")
}

impl BpfFs {
    /// Mounts a fresh bpffs (needs CAP_SYS_ADMIN).
    pub fn mount() -> Result<Self> {
        let dir = temp_dir("bpffs")?;
        let target = c_path(dir.path());
        // SAFETY: C strings valid for the call.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(Error::Io {
                what: format!("mounting bpffs on {}", dir.path().display()),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let target = c_path(self.dir.path());
        // SAFETY: C string valid for the call. MNT_DETACH: even if something
        // still has a pinned object open, the mount goes away.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filesystem type of the mount at `path`, from /proc/self/mounts.
    fn mounted_type(path: &Path) -> Option<String> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let path = path.to_str().unwrap();
        mounts.lines().find_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, target, kind) = (fields.next()?, fields.next()?, fields.next()?);
            (target == path).then(|| kind.to_owned())
        })
    }

    #[test]
    fn mounts_a_private_bpffs_and_removes_it() {
        if !crate::require_root() {
            return;
        }
        let bpffs = BpfFs::mount().unwrap();
        let path = bpffs.path().to_owned();
        assert_eq!(mounted_type(&path).as_deref(), Some("bpf"));
        drop(bpffs);
        assert_eq!(mounted_type(&path), None);
        assert!(!path.exists());
    }
}
