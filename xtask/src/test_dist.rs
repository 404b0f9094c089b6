//! `cargo xtask test-dist`: builds everything `dist` builds (and checks it),
//! then installs, upgrades and purges the .deb with dpkg in Debian roots:
//! bookworm (with systemd installed, not running) and bullseye (glibc 2.31:
//! the static binary must not care). The roots are made once with
//! debootstrap and cached in `target/debroot/`; each test runs on an
//! overlay of the cached root that is thrown away afterwards, so the
//! cache stays pristine and reruns take seconds.
//!
//! Everything runs in a private mount namespace: the overlays and `/proc`
//! mounts vanish with the process, even when it is killed.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    dist::{self, bounded, privileged},
    monitoring,
    package::{self, Kind},
    workspace_root,
};

/// A Debian root the tests run in.
pub struct Suite {
    pub name: &'static str,
    /// Packages added to debootstrap's minbase.
    pub include: &'static [&'static str],
}

pub const BOOKWORM: Suite = Suite {
    name: "bookworm",
    // systemctl for `enable` (offline) and the unit check; iproute2 and
    // dbus for the systemd container.
    include: &["systemd", "systemd-sysv", "dbus", "iproute2"],
};
pub const BULLSEYE: Suite = Suite {
    name: "bullseye",
    include: &[],
};

const DEBOOTSTRAP_TIMEOUT: u64 = 20 * 60;
const CHROOT_TIMEOUT: u64 = 120;

fn mirror() -> String {
    std::env::var("LBHA_DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into())
}

/// The cached root of `suite`, made with debootstrap when missing (or made
/// with another package list).
pub fn cached_root(suite: &Suite) -> Result<PathBuf> {
    let cache = workspace_root().join("target/debroot");
    let root = cache.join(suite.name);
    let stamp = cache.join(format!("{}.stamp", suite.name));
    let want = format!("minbase {}\n", suite.include.join(","));
    if root.is_dir() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(root);
    }
    std::fs::create_dir_all(&cache)?;
    let partial = cache.join(format!("{}.partial", suite.name));
    for dir in [&root, &partial] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    let started = Instant::now();
    println!(
        "test-dist: debootstrap {} into {} (once; cached)",
        suite.name,
        root.display()
    );
    let mut cmd = Command::new("debootstrap");
    cmd.arg("--variant=minbase");
    if !suite.include.is_empty() {
        cmd.arg(format!("--include={}", suite.include.join(",")));
    }
    cmd.arg(suite.name).arg(&partial).arg(mirror());
    bounded(&mut cmd, DEBOOTSTRAP_TIMEOUT)
        .with_context(|| format!("debootstrap {}", suite.name))?;
    // What a package would find on a real system, not a debootstrap
    // leftover.
    let _ = std::fs::remove_dir_all(partial.join("var/cache/apt/archives"));
    std::fs::create_dir_all(partial.join("var/cache/apt/archives/partial"))?;
    std::fs::rename(&partial, &root)?;
    std::fs::write(&stamp, want)?;
    println!(
        "test-dist: {} root made in {:.0?}",
        suite.name,
        started.elapsed()
    );
    Ok(root)
}

/// Moves this process into a private mount namespace, so no mount it makes
/// outlives it or is seen outside.
pub fn private_mounts() -> Result<()> {
    // SAFETY: unshare and mount with valid arguments; only this process's
    // (and its future children's) view of the mounts changes.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNS)");
        }
        let none = c"none";
        if libc::mount(
            none.as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error()).context("making / private");
        }
    }
    Ok(())
}

/// An overlay of a cached root, with `/proc` mounted inside: unmounted and
/// removed on drop.
pub struct Overlay {
    dir: Option<lbha_harness::TempDir>,
    pub merged: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Overlay {
    pub fn new(lower: &Path, tag: &str) -> Result<Self> {
        let overlay = Self::bare(lower, tag)?;
        let proc = overlay.merged.join("proc");
        let mut overlay = overlay;
        overlay.mount(
            Command::new("mount")
                .args(["-t", "proc", "proc"])
                .arg(&proc),
            proc,
        )?;
        Ok(overlay)
    }

    /// The overlay alone, without `/proc` (for a container manager that
    /// mounts its own).
    pub fn bare(lower: &Path, tag: &str) -> Result<Self> {
        let dir = lbha_harness::temp_dir(tag)?;
        let merged = dir.path().join("merged");
        let mut overlay = Self {
            merged: merged.clone(),
            dir: Some(dir),
            mounts: Vec::new(),
        };
        let base = overlay
            .dir
            .as_ref()
            .map(|d| d.path().to_owned())
            .unwrap_or_default();
        for sub in ["upper", "work", "merged"] {
            std::fs::create_dir_all(base.join(sub))?;
        }
        overlay.mount(
            Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o"])
                .arg(format!(
                    "lowerdir={},upperdir={},workdir={}",
                    lower.display(),
                    base.join("upper").display(),
                    base.join("work").display()
                ))
                .arg(&merged),
            merged,
        )?;
        Ok(overlay)
    }

    /// Runs `cmd`, a mount on `target`, which is unmounted on drop (in
    /// reverse order).
    pub fn mount(&mut self, cmd: &mut Command, target: PathBuf) -> Result<()> {
        bounded(cmd, 30)?;
        self.mounts.push(target);
        Ok(())
    }

    /// A path inside the root.
    pub fn path(&self, path: &str) -> PathBuf {
        self.merged.join(path.trim_start_matches('/'))
    }

    /// `chroot` into the root: runs `argv` there, bounded, returning stdout.
    pub fn chroot(&self, argv: &[&str]) -> Result<String> {
        bounded(
            Command::new("chroot")
                .arg(&self.merged)
                .args(argv)
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("LANG", "C")
                .env("DEBIAN_FRONTEND", "noninteractive"),
            CHROOT_TIMEOUT,
        )
        .with_context(|| format!("in the {} root: {}", self.merged.display(), argv.join(" ")))
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let mut clean = true;
        for target in self.mounts.iter().rev() {
            let unmounted = lbha_harness::run_command(
                Command::new("umount").arg(target),
                Duration::from_secs(30),
            )
            .or_else(|_| {
                lbha_harness::run_command(
                    Command::new("umount").arg("-l").arg(target),
                    Duration::from_secs(30),
                )
            });
            if let Err(error) = unmounted {
                eprintln!("test-dist: cannot unmount {}: {error:?}", target.display());
                clean = false;
            }
        }
        if !clean && let Some(dir) = self.dir.take() {
            // Never delete through a mount still in place; the private
            // mount namespace drops it when the process exits.
            let path = dir.keep();
            eprintln!("test-dist: left {} in place", path.display());
        }
    }
}

/// Every path below `root` (files, directories, links; not following
/// links), except the trees dpkg and the system write to on their own.
fn all_paths(root: &Path) -> Result<BTreeSet<String>> {
    const SKIP: [&str; 8] = [
        "/proc",
        "/dev",
        "/sys",
        "/run",
        "/tmp",
        "/var/lib/dpkg",
        "/var/log",
        "/var/cache/debconf",
    ];
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            let rel = format!("/{}", path.strip_prefix(base)?.display());
            if SKIP.contains(&rel.as_str()) {
                continue;
            }
            let is_dir = entry.file_type()?.is_dir();
            out.insert(rel);
            if is_dir {
                walk(base, &path, out)?;
            }
        }
        Ok(())
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

fn mode(path: &Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .permissions()
        .mode()
        & 0o7777)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The second version the upgrade installs, and what it changes in
/// /etc/default/lbha-agent (so dpkg has an upstream change to weigh against
/// the edit).
const UPGRADE_SUFFIX: &str = "+upgradetest1";
const UPGRADE_DEFAULTS_LINE: &str = "# (a setting the next version added)\n";
const EDIT: &str = "# edited by the operator\n";

/// Install, check, upgrade keeping the edited conffiles, purge leaving
/// nothing: the .deb's life in `suite`'s root.
fn deb_lifecycle(suite: &Suite, lower: &Path, v1: &Path, v2: &Path, version: &str) -> Result<()> {
    let started = Instant::now();
    let root = Overlay::new(lower, &format!("deb-{}", suite.name))?;
    let before = all_paths(&root.merged)?;
    dist::copy(v1, &root.path("/tmp/v1.deb"), 0o644)?;
    dist::copy(v2, &root.path("/tmp/v2.deb"), 0o644)?;
    let status = || root.chroot(&["dpkg-query", "-W", "-f=${Status} ${Version}", package::NAME]);

    let installed = root.chroot(&["dpkg", "-i", "/tmp/v1.deb"])?;
    if status()? != format!("install ok installed {version}") {
        bail!("after dpkg -i: {}\n{installed}", status()?);
    }
    for file in package::expected_files(Kind::Deb)? {
        if !root.path(&file).is_file() {
            bail!("dpkg -i did not install {file}");
        }
    }
    for (path, want) in [
        ("/etc/default/lbha-agent", 0o600),
        ("/etc/lbha/lbha.toml", 0o640),
        ("/etc/lbha", 0o750),
        ("/usr/bin/lbha-agent", 0o755),
    ] {
        let got = mode(&root.path(path))?;
        if got != want {
            bail!("{path} has mode {got:o}, not {want:o}");
        }
    }
    let conffiles = root.chroot(&["dpkg-query", "-W", "-f=${Conffiles}", package::NAME])?;
    for file in Kind::Deb.conffiles() {
        if !conffiles.contains(file) {
            bail!("dpkg does not know {file} as a conffile: {conffiles}");
        }
    }
    // The binary from the package runs on this root's libc, whatever it is.
    let reported = root.chroot(&["lbha-agent", "--version"])?;
    if reported.trim() != format!("lbha-agent {version}") {
        bail!("lbha-agent --version in {}: {reported:?}", suite.name);
    }
    root.chroot(&[
        "lbha-agent",
        "check-config",
        "--no-host-checks",
        "/etc/lbha/lbha.toml",
    ])?;
    let has_systemctl =
        root.path("/usr/bin/systemctl").exists() || root.path("/bin/systemctl").exists();
    let wants = "/etc/systemd/system/multi-user.target.wants/lbha-agent.service";
    if has_systemctl {
        // systemd does not run in the chroot: the unit must load offline,
        // and an operator's `enable` must be undone by the purge.
        let verify = root.chroot(&[
            "systemd-analyze",
            "verify",
            "--man=no",
            Kind::Deb.unit_path(),
        ]);
        if let Err(error) = verify {
            bail!("systemd-analyze verify of the packaged unit: {error:?}");
        }
        root.chroot(&["systemctl", "enable", "lbha-agent.service"])?;
        if std::fs::symlink_metadata(root.path(wants)).is_err() {
            bail!("systemctl enable made no {wants}");
        }
    }

    // The operator edits both configuration files; the next version
    // changes one of them too.
    let mut edited = Vec::new();
    for file in Kind::Deb.conffiles() {
        let text = format!("{}{EDIT}", read(&root.path(file))?);
        std::fs::write(root.path(file), &text)?;
        edited.push((file, text));
    }
    let upgraded = root.chroot(&[
        "dpkg",
        "--force-confdef",
        "--force-confold",
        "-i",
        "/tmp/v2.deb",
    ])?;
    if status()? != format!("install ok installed {version}{UPGRADE_SUFFIX}") {
        bail!("after the upgrade: {}\n{upgraded}", status()?);
    }
    for (file, text) in &edited {
        if read(&root.path(file))? != *text {
            bail!("the upgrade overwrote the edited {file}:\n{upgraded}");
        }
    }
    // dpkg kept ours and left the new version beside it.
    let dist_copy = read(&root.path("/etc/default/lbha-agent.dpkg-dist"))
        .context("the upgrade left no /etc/default/lbha-agent.dpkg-dist")?;
    if !dist_copy.contains(UPGRADE_DEFAULTS_LINE) || dist_copy.contains(EDIT) {
        bail!("/etc/default/lbha-agent.dpkg-dist is not the new version's:\n{dist_copy}");
    }

    let purged = root.chroot(&["dpkg", "--purge", package::NAME])?;
    if !purged.contains("nothing pinned under /sys/fs/bpf/lbha") {
        bail!("the removal did not run lbha-agent detach:\n{purged}");
    }
    let after = all_paths(&root.merged)?;
    let left: Vec<_> = after.difference(&before).collect();
    let removed: Vec<_> = before.difference(&after).collect();
    if !left.is_empty() || !removed.is_empty() {
        bail!("the purge left {left:?} and removed {removed:?}:\n{purged}");
    }
    if root
        .chroot(&["dpkg-query", "-W", "-f=${Status}", package::NAME])
        .is_ok_and(|s| s.contains("installed"))
    {
        bail!("dpkg still lists {} after the purge", package::NAME);
    }
    println!(
        "test-dist: .deb on {}: installed ({} files, runs on the root's libc), {}upgraded to {version}{UPGRADE_SUFFIX} keeping the edited conffiles, purged leaving nothing ({:.0?})",
        suite.name,
        package::expected_files(Kind::Deb)?.len(),
        if has_systemctl {
            "unit verified and enabled offline, "
        } else {
            ""
        },
        started.elapsed()
    );
    Ok(())
}

/// One named check, counted.
pub struct Tally {
    what: &'static str,
    passed: usize,
    failed: Vec<String>,
}

impl Tally {
    pub fn check(&mut self, name: &str, result: Result<()>) {
        match result {
            Ok(()) => {
                println!("{}: {name} ... ok", self.what);
                self.passed += 1;
            }
            Err(error) => {
                println!("{}: {name} ... FAILED", self.what);
                for (depth, cause) in error.chain().enumerate() {
                    println!("{}{cause}", if depth == 0 { "  " } else { "  caused by: " });
                }
                self.failed.push(name.to_owned());
            }
        }
    }
}

impl Tally {
    pub fn new(what: &'static str) -> Self {
        Self {
            what,
            passed: 0,
            failed: Vec::new(),
        }
    }

    pub fn finish(self) -> Result<()> {
        let what = self.what;
        println!(
            "{what}: {} passed, {} failed",
            self.passed,
            self.failed.len()
        );
        if !self.failed.is_empty() {
            bail!("{what}: failed: {}", self.failed.join(", "));
        }
        Ok(())
    }

    fn monitoring(&mut self) {
        for (name, result) in monitoring::checks() {
            self.check(name, result);
        }
    }
}

/// `cargo xtask monitoring`: the alert rules and the dashboard alone.
pub fn test_monitoring() -> Result<()> {
    let mut tally = Tally::new("monitoring");
    tally.monitoring();
    tally.finish()
}

pub fn test_dist() -> Result<()> {
    let started = Instant::now();
    // What operators look at ships in the packages: checked first (seconds,
    // no root).
    let mut tally = Tally::new("test-dist");
    tally.monitoring();
    let root = privileged("the .deb install, upgrade and purge in Debian roots")?;
    // From cold, debootstrap spends minutes on downloads and dpkg while the
    // static build spends them on the CPUs: the roots are made meanwhile,
    // each in its own thread (their errors are reported with their test).
    let roots: Vec<_> = [&BOOKWORM, &BULLSEYE]
        .into_iter()
        .filter(|_| root)
        .map(|suite| (suite, std::thread::spawn(move || cached_root(suite))))
        .collect();
    let built = dist::dist();
    // Joined before anything else: the mount namespace below is unshared
    // by a process with no other threads.
    let roots: Vec<_> = roots
        .into_iter()
        .map(|(suite, thread)| {
            let made = thread
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("debootstrap {} panicked", suite.name)));
            (suite, made)
        })
        .collect();
    let built = built?;
    if !root {
        return tally.finish();
    }
    private_mounts()?;
    let out_dir = workspace_root().join("target/dist/upgrade-test");
    let v2 = package::build_deb_with(
        &built.binary,
        &format!("{}{UPGRADE_SUFFIX}", built.version),
        &out_dir,
        UPGRADE_DEFAULTS_LINE,
    )?;
    for (suite, made) in roots {
        tally.check(
            &format!("deb_install_upgrade_purge_{}", suite.name),
            made.and_then(|lower| deb_lifecycle(suite, &lower, &built.deb, &v2, &built.version)),
        );
    }
    println!("test-dist: done in {:.0?}", started.elapsed());
    tally.finish()
}
