//! `cargo xtask dist`: the release artifacts in `target/dist/`, all holding
//! one fully static `x86_64-unknown-linux-musl` lbha-agent (the XDP program
//! embedded, rustls on aws-lc, no libc from the system), so the same file
//! runs on every droplet whatever its distribution and glibc:
//!
//! - `lbha-<version>-<arch>-linux.tar.gz`:
//!
//!   ```text
//!   lbha-<version>-<arch>-linux/
//!     bin/lbha-agent                 the static binary
//!     systemd/lbha-agent.service     dist/lbha-agent.service
//!     default/lbha-agent             dist/lbha-agent.default (/etc/default/lbha-agent)
//!     examples/                      examples/*.toml, examples/keepalived.conf
//!     README.md
//!     install.sh                     dist/install.sh (PREFIX=, DESTDIR=)
//!   ```
//!
//! - `lbha-agent_<version>_amd64.deb` and `lbha-agent-<version>-1.x86_64.rpm`
//!   ([`crate::package`]).
//!
//! Afterwards it checks what it built: the binary links nothing (`file`,
//! `ldd`, `objdump`), it runs in an empty root directory holding nothing
//! but itself (`--version`, `check-config`, `watch` receiving adverts over
//! a veth pair in network namespaces), the tarball's `install.sh` lands
//! every file where it should, and the packages hold the right files and
//! scripts. `cargo xtask test-dist` goes on to install, upgrade and purge
//! the .deb in Debian roots.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{cargo, package, run, setup::STATIC_TARGET, workspace_root};

/// What `dist` built.
pub struct Dist {
    pub version: String,
    /// The static binary (in the tarball, the .deb and the .rpm).
    pub binary: PathBuf,
    pub deb: PathBuf,
}

/// lbha-agent's version, from `cargo metadata`.
fn agent_version() -> Result<String> {
    let out = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "lbha-agent")
        .and_then(|p| p["version"].as_str())
        .map(str::to_owned)
        .context("lbha-agent is not in cargo metadata")
}

/// The timestamp every file in the artifacts gets: `SOURCE_DATE_EPOCH`, or
/// the last commit's time, so two builds of one commit differ only in the
/// binary.
pub fn source_date_epoch() -> String {
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") {
        return epoch;
    }
    Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(workspace_root())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|epoch| !epoch.is_empty())
        .unwrap_or_else(|| "0".into())
}

pub fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The files of `dir` (sorted, no subdirectories) whose names `keep` accepts.
pub fn files_in(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| path.is_file() && keep(path));
    files.sort();
    Ok(files)
}

/// The examples shipped everywhere: the TOML files and the keepalived.conf.
pub fn examples() -> Result<Vec<PathBuf>> {
    files_in(&workspace_root().join("examples"), |path| {
        path.extension().is_some_and(|ext| ext == "toml")
            || path.file_name().is_some_and(|n| n == "keepalived.conf")
    })
}

/// Builds the static release binary and returns its path.
pub fn build_static_binary() -> Result<PathBuf> {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "lbha-agent",
        "--target",
        STATIC_TARGET,
    ]))?;
    let binary = workspace_root()
        .join("target")
        .join(STATIC_TARGET)
        .join("release/lbha-agent");
    check_static(&binary)?;
    Ok(binary)
}

/// stdout and stderr of a command that may fail (ldd exits 1 on a static
/// binary).
fn combined_output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Fails unless `binary` is a static executable: `file` says so, `ldd`
/// finds no shared library, and `objdump` shows no program interpreter, no
/// `NEEDED` library and no glibc symbol version.
pub fn check_static(binary: &Path) -> Result<()> {
    let file = combined_output(Command::new("file").arg("-b").arg(binary))?;
    if !(file.contains("statically linked") || file.contains("static-pie linked")) {
        bail!(
            "{} is not static: file says {}",
            binary.display(),
            file.trim()
        );
    }
    let ldd = combined_output(Command::new("ldd").arg(binary))?;
    if !(ldd.contains("not a dynamic executable") || ldd.contains("statically linked")) {
        bail!(
            "{} is not static: ldd says\n{}",
            binary.display(),
            ldd.trim()
        );
    }
    let headers = combined_output(Command::new("objdump").arg("-p").arg(binary))?;
    if let Some(line) = headers
        .lines()
        .find(|line| line.trim_start().starts_with("NEEDED") || line.contains("INTERP"))
    {
        bail!(
            "{} links a shared library: {}",
            binary.display(),
            line.trim()
        );
    }
    let symbols = combined_output(Command::new("objdump").arg("-T").arg(binary))?;
    if let Some(line) = symbols.lines().find(|line| line.contains("GLIBC_")) {
        bail!("{} needs glibc: {}", binary.display(), line.trim());
    }
    println!(
        "dist: {} is static ({}; ldd: {})",
        binary.display(),
        file.split(',').take(3).collect::<Vec<_>>().join(",").trim(),
        ldd.trim()
    );
    Ok(())
}

/// Builds the tarball, the .deb and the .rpm, and checks them.
pub fn dist() -> Result<Dist> {
    let started = Instant::now();
    let root = workspace_root();
    let binary = build_static_binary()?;
    let version = agent_version()?;
    let name = format!("lbha-{version}-{}-linux", std::env::consts::ARCH);
    let out_dir = root.join("target/dist");
    let stage = out_dir.join(&name);
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }

    copy(&binary, &stage.join("bin/lbha-agent"), 0o755)?;
    copy(
        &root.join("dist/lbha-agent.service"),
        &stage.join("systemd/lbha-agent.service"),
        0o644,
    )?;
    copy(
        &root.join("dist/lbha-agent.default"),
        &stage.join("default/lbha-agent"),
        0o644,
    )?;
    copy(
        &root.join("dist/install.sh"),
        &stage.join("install.sh"),
        0o755,
    )?;
    copy(&root.join("README.md"), &stage.join("README.md"), 0o644)?;
    for example in examples()? {
        let file_name = example.file_name().context("example without a name")?;
        copy(&example, &stage.join("examples").join(file_name), 0o644)?;
    }
    for file in package::MONITORING {
        copy(&root.join("dist").join(file), &stage.join(file), 0o644)?;
    }

    let tarball = out_dir.join(format!("{name}.tar.gz"));
    let tar = out_dir.join(format!("{name}.tar"));
    let _ = std::fs::remove_file(&tarball);
    run(Command::new("tar")
        .current_dir(&out_dir)
        .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
        .arg(format!("--mtime=@{}", source_date_epoch()))
        .arg("-cf")
        .arg(&tar)
        .arg(&name))?;
    run(Command::new("gzip").args(["-9", "-n", "-f"]).arg(&tar))?;
    std::fs::remove_dir_all(&stage)?;

    run(Command::new("tar").arg("-tvzf").arg(&tarball))?;
    check_install(&tarball, &name)?;
    check_empty_root(&tarball, &name)?;

    let deb = package::build_deb(&binary, &version, &out_dir)?;
    let rpm = package::build_rpm(&binary, &version, &out_dir)?;
    package::check_deb(&deb, &version)?;
    package::check_rpm(&rpm)?;
    println!(
        "dist: {}\ndist: {}\ndist: {}\ndist: done in {:.0?}",
        tarball.display(),
        deb.display(),
        rpm.display(),
        started.elapsed()
    );
    Ok(Dist {
        version,
        binary,
        deb,
    })
}

/// Unpacks `tarball` into a temporary directory and runs its install.sh
/// with `DESTDIR` and `PREFIX` pointing there; checks the installed tree,
/// and that a second run keeps the configuration files.
fn check_install(tarball: &Path, name: &str) -> Result<()> {
    let tmp = lbha_harness::temp_dir("dist-check")?;
    let tmp = tmp.path();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(tarball)
        .arg("-C")
        .arg(tmp))?;
    let dest = tmp.join("root");
    let install = |prefix: &str| -> Result<String> {
        let out = Command::new("sh")
            .arg(tmp.join(name).join("install.sh"))
            .env("DESTDIR", &dest)
            .env("PREFIX", prefix)
            .output()
            .context("running install.sh")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "install.sh failed: {}\n{text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(text)
    };
    install("/opt/lbha")?;
    let expected = [
        "opt/lbha/bin/lbha-agent",
        "opt/lbha/share/doc/lbha/README.md",
        "etc/systemd/system/lbha-agent.service",
        "etc/default/lbha-agent",
        "etc/lbha/lbha.toml",
        "etc/lbha/examples/lbha.toml",
        "etc/lbha/examples/keepalived.conf",
    ];
    for path in expected {
        if !dest.join(path).is_file() {
            bail!("install.sh did not install {path}");
        }
    }
    let unit = std::fs::read_to_string(dest.join("etc/systemd/system/lbha-agent.service"))?;
    if !unit.contains("ExecStart=/opt/lbha/bin/lbha-agent $LBHA_ARGS") {
        bail!("the installed unit does not name the PREFIX binary");
    }
    // A second run replaces the binary but keeps edited configuration.
    std::fs::write(dest.join("etc/lbha/lbha.toml"), "# edited\n")?;
    let second = install("/opt/lbha")?;
    if std::fs::read_to_string(dest.join("etc/lbha/lbha.toml"))? != "# edited\n"
        || !second.contains("kept existing /etc/lbha/lbha.toml")
    {
        bail!("install.sh overwrote /etc/lbha/lbha.toml");
    }
    println!("dist: install.sh checked (DESTDIR staging, PREFIX=/opt/lbha, configs kept)");
    Ok(())
}

/// Whether this process may run the checks that need root; without root,
/// fails unless `LBHA_SKIP_PRIVILEGED=1` says to skip them (then prints why).
pub fn privileged(what: &str) -> Result<bool> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(true);
    }
    if std::env::var(lbha_harness::SKIP_PRIVILEGED_ENV).as_deref() == Ok("1") {
        println!(
            "SKIPPED {what}: needs root (chroot, network namespaces); {}=1 is set",
            lbha_harness::SKIP_PRIVILEGED_ENV
        );
        return Ok(false);
    }
    bail!(
        "{what} needs root (chroot, network namespaces); run as root, or set {}=1 to skip it",
        lbha_harness::SKIP_PRIVILEGED_ENV
    )
}

/// Runs a command with a time bound, returning its stdout.
pub fn bounded(cmd: &mut Command, secs: u64) -> Result<String> {
    Ok(lbha_harness::run_command(cmd, Duration::from_secs(secs))?)
}

/// The tarball's binary in a directory that holds nothing but it (and the
/// example it checks): no libc, no /etc, no /proc. `chroot` there, it must
/// print its version, accept the example configuration, print `watch`'s
/// help, and receive adverts with `watch` on one end of a veth pair whose
/// other end, in another network namespace, sends them.
fn check_empty_root(tarball: &Path, name: &str) -> Result<()> {
    if !privileged("the empty-root run of the static binary")? {
        return Ok(());
    }
    let tmp = lbha_harness::temp_dir("dist-empty-root")?;
    run(Command::new("tar")
        .arg("-xzf")
        .arg(tarball)
        .arg("-C")
        .arg(tmp.path()))?;
    let unpacked = tmp.path().join(name);
    let root = tmp.path().join("root");
    copy(
        &unpacked.join("bin/lbha-agent"),
        &root.join("lbha-agent"),
        0o755,
    )?;
    copy(
        &unpacked.join("examples/lbha.toml"),
        &root.join("lbha.toml"),
        0o644,
    )?;
    let chrooted = |args: &[&str]| -> Result<String> {
        bounded(
            Command::new("chroot")
                .arg(&root)
                .arg("/lbha-agent")
                .args(args),
            20,
        )
        .with_context(|| format!("lbha-agent {} in an empty root", args.join(" ")))
    };
    let version = chrooted(&["--version"])?;
    if !version.starts_with("lbha-agent ") {
        bail!("lbha-agent --version printed {version:?}");
    }
    let check = chrooted(&["check-config", "--no-host-checks", "/lbha.toml"])?;
    let help = chrooted(&["watch", "--help"])?;
    if !help.contains("--receive-path") {
        bail!("lbha-agent watch --help printed {help:?}");
    }
    watch_in_empty_root(&root)?;
    println!(
        "dist: the static binary runs in an empty root ({}, check-config: {}, watch received adverts)",
        version.trim(),
        check.lines().last().unwrap_or_default().trim()
    );
    Ok(())
}

/// `watch --receive-path raw` chrooted into `root`, in a network
/// namespace, receiving VRRPv3 adverts sent from another namespace over a
/// veth pair.
fn watch_in_empty_root(root: &Path) -> Result<()> {
    use lbha_harness::{ChildGuard, Netns, in_netns, veth_pair};
    use std::{net::Ipv4Addr, process::Stdio};

    let sender = Netns::new("dist-tx")?;
    let receiver = Netns::new("dist-rx")?;
    let (tx_addr, rx_addr) = (Ipv4Addr::new(10, 201, 90, 1), Ipv4Addr::new(10, 201, 90, 2));
    veth_pair(
        &sender,
        "veth-tx",
        "10.201.90.1/24",
        &receiver,
        "veth-rx",
        "10.201.90.2/24",
    )?;
    let mut watch = ChildGuard::spawn(
        "watch in an empty root",
        receiver
            .command("chroot")
            .arg(root)
            .args(["/lbha-agent", "watch", "--interface", "veth-rx"])
            .args(["--vrid", "51:v3", "--receive-path", "raw"])
            .args(["--count", "3", "--timeout", "15"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )?;
    let started = Instant::now();
    let status = loop {
        // One advert every 100 ms until watch has seen its three.
        in_netns(sender.name(), move || send_advert(tx_addr, rx_addr))??;
        if let Some(status) = watch.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("watch in an empty root did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let child = watch.child_mut();
    let mut stdout = String::new();
    let mut stderr = String::new();
    use std::io::Read;
    if let Some(out) = child.stdout.as_mut() {
        out.read_to_string(&mut stdout)?;
    }
    if let Some(err) = child.stderr.as_mut() {
        err.read_to_string(&mut stderr)?;
    }
    let adverts = stdout
        .lines()
        .filter(|line| line.contains("\"vrid\":51") && line.contains(&tx_addr.to_string()))
        .count();
    if !status.success() || adverts < 3 {
        bail!("watch in an empty root ({status}) saw {adverts} adverts:\n{stdout}\n{stderr}");
    }
    Ok(())
}

/// Sends one VRRPv3 advert (VRID 51, priority 100, 1 s) from `src` to `dst`.
fn send_advert(src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr) -> Result<()> {
    use lbha_common::vrrp::encode::Advert;
    let packet = Advert {
        version: 3,
        vrid: 51,
        priority: 100,
        interval_cs: 100,
        auth_pass: None,
        virtual_addrs: &[std::net::IpAddr::V4(std::net::Ipv4Addr::new(
            10, 201, 90, 100,
        ))],
    }
    .ipv4_packet(src, dst);
    // SAFETY: plain socket calls on an fd this function owns; the address
    // and buffer outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("opening a raw socket");
        }
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.octets()),
            },
            sin_zero: [0; 8],
        };
        let sent = libc::sendto(
            fd,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            std::ptr::from_ref(&addr).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let error = std::io::Error::last_os_error();
        libc::close(fd);
        if sent < 0 {
            return Err(error).context("sending an advert");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_binary_is_refused() {
        // The shell of the build machine links glibc.
        let error = check_static(Path::new("/bin/sh")).unwrap_err().to_string();
        assert!(error.contains("is not static"), "{error}");
    }
}
