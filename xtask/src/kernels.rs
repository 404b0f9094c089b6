//! `cargo xtask kernels`: the XDP tests on the kernels DigitalOcean's Debian
//! images run, each booted in a QEMU/KVM guest.
//!
//! - The kernels are Debian's own (`linux-image-amd64` of bullseye, bookworm
//!   and trixie), downloaded with apt into a private directory with its own
//!   sources list (`~/.cache/lbha-kernels/apt`; the system's sources and
//!   lists are never touched) and unpacked there; `depmod` indexes their
//!   modules.
//! - The guest's root is this machine's `/`, shared read-only over virtio-9p
//!   (so the test binaries, the agent and keepalived run as built and
//!   installed here), with tmpfs on `/tmp` and `/run`; the guest kernel's
//!   own modules load from the cache (`kernel.modprobe` points at a
//!   `modprobe -d` wrapper, so autoloading works too). A small initramfs
//!   (busybox and the 9p modules) mounts it and hands over to a script.
//! - In the guest: the XDP `test_run` tests (once per program variant the
//!   kernel runs), the probe's choice checked against the variant expected
//!   for that kernel, and the two-namespace receive test with real
//!   keepalived adverts. Results come back on a second, writable 9p share.
//!
//! Without `/dev/kvm` it fails, saying so, unless `--skip-without-kvm`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{cargo, run, workspace_root};

/// One kernel of the matrix.
struct Kernel {
    suite: &'static str,
    /// The receive program the agent must pick there.
    expect: &'static str,
    /// The XDP variants its `test_run` tests run with.
    variants: &'static [&'static str],
}

const KERNELS: [Kernel; 3] = [
    Kernel {
        suite: "bullseye",
        expect: "no-timer",
        variants: &["no-timer"],
    },
    Kernel {
        suite: "bookworm",
        expect: "full",
        variants: &["full", "no-timer"],
    },
    Kernel {
        suite: "trixie",
        expect: "full",
        variants: &["full", "no-timer"],
    },
];

const HOST_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "kmod"];

/// How long one guest may run (boot, tests, power-off).
const GUEST_TIMEOUT: Duration = Duration::from_mins(7);

/// The modules the initramfs loads to mount the 9p root.
const ROOT_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p"];

#[derive(clap::Args)]
pub struct KernelsArgs {
    /// Succeed (after saying so) where /dev/kvm is missing, instead of failing.
    #[arg(long)]
    skip_without_kvm: bool,
    /// Only these suites (bullseye, bookworm, trixie).
    #[arg(long = "only", value_delimiter = ',')]
    only: Vec<String>,
    /// How QEMU runs the guests: kvm, tcg (software emulation, slow), or
    /// auto: kvm, unless this machine's KVM is PVM (`kvm_pvm`), which only
    /// runs guest kernels built for it, never Debian's.
    #[arg(long, default_value = "auto")]
    accel: Accel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Accel {
    Auto,
    Kvm,
    Tcg,
}

/// The accelerator `requested` comes to on this machine, and why.
fn accelerator(requested: Accel, pvm: bool) -> (Accel, Option<&'static str>) {
    match requested {
        Accel::Auto if pvm => (
            Accel::Tcg,
            Some(
                "this machine's /dev/kvm is PVM (kvm_pvm: KVM without hardware virtualisation, for guest kernels built as PVM guests); Debian's kernels hang in it after their real-mode setup, so the guests run under TCG (software emulation; slower, same kernels)",
            ),
        ),
        Accel::Auto => (Accel::Kvm, None),
        other => (other, None),
    }
}

fn cache_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/lbha-kernels"))
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// A private apt configuration: its own sources list, lists and cache.
struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    fn new(dir: PathBuf, suites: &[&str]) -> Result<Self> {
        for sub in ["etc", "lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let sources: String = suites
            .iter()
            .map(|suite| {
                format!(
                    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian {suite} main\n"
                )
            })
            .collect();
        let list = dir.join("etc/sources.list");
        if std::fs::read_to_string(&list).ok().as_deref() != Some(sources.as_str()) {
            std::fs::write(&list, sources)?;
            // Lists of other suites would otherwise stay and count.
            let _ = std::fs::remove_dir_all(dir.join("lists"));
            std::fs::create_dir_all(dir.join("lists/partial"))?;
        }
        Ok(Self { dir })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        cmd.arg(format!("-oDir::Etc::sourcelist={}", d("etc/sources.list")))
            .arg("-oDir::Etc::sourceparts=-")
            .arg(format!("-oDir::State::Lists={}", d("lists")))
            .arg(format!("-oDir::Cache={}", d("cache")))
            .arg("-oAPT::Get::List-Cleanup=0")
            // The cache is root's: apt's own user could not write there.
            .arg("-oAPT::Sandbox::User=root")
            .arg("-oAcquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false")
            .arg("-oAcquire::IndexTargets::deb::DEP-11::DefaultEnabled=false")
            .arg("-oAcquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false")
            .arg("-oAcquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false")
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    fn update(&self) -> Result<()> {
        run(self.command("apt-get").args(["update", "-q"]))
    }
}

/// qemu, busybox and kmod on this machine. A plain install first; where
/// a newer qemu-utils from bookworm-backports is already installed (it
/// breaks bookworm's qemu-system), qemu-system from the same backports,
/// through a private apt configuration too.
fn ensure_host_packages(cache: &Path) -> Result<()> {
    let missing: Vec<&str> = HOST_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("kernels: installing {}", missing.join(" "));
    let plain = Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    if plain.is_ok_and(|s| s.success()) {
        return Ok(());
    }
    let apt = PrivateApt::new(cache.join("host-apt"), &["bookworm", "bookworm-backports"])?;
    apt.update()?;
    run(apt
        .command("apt-get")
        .args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "-t",
            "bookworm-backports",
        ])
        .args(&missing))
}

/// A kernel unpacked in the cache: its image, its modules, indexed.
struct Unpacked {
    release: String,
    vmlinuz: PathBuf,
    /// The directory holding `lib/modules/<release>` (`usr` on trixie).
    modules_base: PathBuf,
}

/// Downloads (once) and unpacks `suite`'s current `linux-image-amd64`.
fn kernel(apt: &PrivateApt, cache: &Path, suite: &str, updated: &mut bool) -> Result<Unpacked> {
    let stamp = cache.join(format!("{suite}.release"));
    let release = if let Ok(release) = std::fs::read_to_string(&stamp) {
        release.trim().to_owned()
    } else {
        if !*updated {
            apt.update()?;
            *updated = true;
        }
        let madison = output(
            apt.command("apt-cache")
                .args(["madison", "linux-image-amd64"]),
        )?;
        let version = madison
            .lines()
            .map(|l| l.split('|').map(str::trim).collect::<Vec<_>>())
            .find(|f| f.len() == 3 && f[2].contains(&format!(" {suite}/main ")))
            .map(|f| f[1].to_owned())
            .with_context(|| format!("no linux-image-amd64 in {suite}: {madison}"))?;
        let depends = output(
            apt.command("apt-cache")
                .args(["depends", &format!("linux-image-amd64={version}")]),
        )?;
        let image = depends
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-"))
            .with_context(|| format!("linux-image-amd64={version}: no image in {depends}"))?
            .to_owned();
        let release = image.trim_start_matches("linux-image-").to_owned();
        let debs = cache.join("debs");
        std::fs::create_dir_all(&debs)?;
        run(apt
            .command("apt-get")
            .current_dir(&debs)
            .args(["download", "-q", &image]))?;
        let deb = std::fs::read_dir(&debs)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{image}_")))
            })
            .with_context(|| format!("{image} downloaded but not found"))?;
        let root = cache.join("x").join(&release);
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        let unpacked = locate(cache, &release)?;
        println!("kernels: indexing the modules of {release}");
        run(Command::new("depmod")
            .arg("-b")
            .arg(&unpacked.modules_base)
            .arg(&release))?;
        std::fs::write(&stamp, &release)?;
        release
    };
    locate(cache, &release)
}

fn locate(cache: &Path, release: &str) -> Result<Unpacked> {
    let root = cache.join("x").join(release);
    let modules_base = if root.join("lib/modules").is_dir() {
        root.clone()
    } else {
        root.join("usr")
    };
    let vmlinuz = root.join(format!("boot/vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!(
            "{} missing: delete {} and retry",
            vmlinuz.display(),
            cache.display()
        );
    }
    Ok(Unpacked {
        release: release.to_owned(),
        vmlinuz,
        modules_base,
    })
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.list); do insmod "/modules/$m" || echo "initramfs: insmod $m failed"; done
mkdir -p /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot /newroot || { echo "initramfs: no 9p root"; poweroff -f; }
mount -t tmpfs tmp /newroot/tmp
mount -t tmpfs run /newroot/run
mkdir -p /newroot/tmp/results
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 results /newroot/tmp/results
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
exec switch_root /newroot /bin/bash /tmp/results/guest.sh
"#;

/// The initramfs for `kernel`: busybox, the modules the 9p root needs
/// (decompressed: busybox's insmod takes plain objects) and [`INIT`].
fn initramfs(kernel: &Unpacked, cache: &Path) -> Result<PathBuf> {
    let image = cache.join(format!("initramfs-{}.cpio.gz", kernel.release));
    if image.is_file() {
        return Ok(image);
    }
    let tree = cache.join(format!("initramfs-{}", kernel.release));
    let _ = std::fs::remove_dir_all(&tree);
    for sub in ["bin", "proc", "sys", "dev", "modules"] {
        std::fs::create_dir_all(tree.join(sub))?;
    }
    std::fs::copy("/bin/busybox", tree.join("bin/busybox"))?;
    let mut order: Vec<String> = Vec::new();
    let mut objects: Vec<PathBuf> = Vec::new();
    for module in ROOT_MODULES {
        let deps = output(
            Command::new("modprobe")
                .arg("-d")
                .arg(&kernel.modules_base)
                .args(["-S", &kernel.release, "--show-depends", module]),
        )?;
        for line in deps.lines() {
            if let Some(path) = line.trim().strip_prefix("insmod ") {
                let path = PathBuf::from(path.split_whitespace().next().unwrap_or(path));
                if !objects.contains(&path) {
                    objects.push(path);
                }
            }
        }
    }
    for object in objects {
        let name = object
            .file_name()
            .and_then(|n| n.to_str())
            .context("module name")?;
        let plain = name
            .trim_end_matches(".xz")
            .trim_end_matches(".zst")
            .to_owned();
        let target = tree.join("modules").join(&plain);
        let bytes = match object.extension().and_then(|e| e.to_str()) {
            Some("xz") => decompress("xz", &object)?,
            Some("zst") => decompress("zstd", &object)?,
            _ => std::fs::read(&object)?,
        };
        std::fs::write(&target, bytes)?;
        order.push(plain);
    }
    std::fs::write(tree.join("modules.list"), order.join("\n") + "\n")?;
    let init = tree.join("init");
    std::fs::write(&init, INIT)?;
    run(Command::new("chmod").arg("755").arg(&init))?;
    let script = format!(
        "cd '{}' && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 > '{}'",
        tree.display(),
        image.display()
    );
    run(Command::new("sh").args(["-c", &script]))?;
    Ok(image)
}

fn decompress(tool: &str, path: &Path) -> Result<Vec<u8>> {
    let out = Command::new(tool)
        .args(["-dc"])
        .arg(path)
        .output()
        .with_context(|| format!("{tool} -dc {}", path.display()))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed", path.display());
    }
    Ok(out.stdout)
}

/// The test binaries the guests run, built as `cargo test` builds them.
struct Binaries {
    xdp_test_run: PathBuf,
    keepalived_receive: PathBuf,
    /// The same over IPv6 (multicast and unicast, XDP and the raw socket).
    keepalived_receive_v6: PathBuf,
    agent: PathBuf,
}

fn build() -> Result<Binaries> {
    run(cargo().args(["build", "--package", "lbha-agent"]))?;
    let out = cargo()
        .args([
            "test",
            "--package",
            "lbha-tests",
            "--test",
            "xdp_test_run",
            "--test",
            "keepalived_receive",
            "--test",
            "keepalived_receive_v6",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut found = (None, None, None);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(name), Some(exe)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) else {
            continue;
        };
        match name {
            "xdp_test_run" => found.0 = Some(PathBuf::from(exe)),
            "keepalived_receive" => found.1 = Some(PathBuf::from(exe)),
            "keepalived_receive_v6" => found.2 = Some(PathBuf::from(exe)),
            _ => {}
        }
    }
    let (Some(xdp_test_run), Some(keepalived_receive), Some(keepalived_receive_v6)) = found else {
        bail!("cargo did not report the test executables");
    };
    Ok(Binaries {
        xdp_test_run,
        keepalived_receive,
        keepalived_receive_v6,
        agent: workspace_root().join("target/debug/lbha-agent"),
    })
}

/// The script the guest runs as PID 1 after the initramfs.
fn guest_script(kernel: &Kernel, unpacked: &Unpacked, binaries: &Binaries) -> String {
    let q = |p: &Path| format!("'{}'", p.display());
    let mut s = format!(
        r#"#!/bin/bash
# The guest kernel's modules, from the cache (the host has none of its own).
printf '#!/bin/sh\nexec /usr/sbin/modprobe -d {base} "$@"\n' > /tmp/modprobe
chmod 755 /tmp/modprobe
echo /tmp/modprobe > /proc/sys/kernel/modprobe
/tmp/modprobe veth || echo "guest: loading veth failed"
"#,
        base = unpacked.modules_base.display()
    );
    s.push_str(
        r#"# Written by cargo xtask kernels; runs as PID 1 in the guest.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp TMPDIR=/tmp RUST_BACKTRACE=1
echo 1 > /proc/sys/kernel/sysrq
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs shm /dev/shm
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
ip link set lo up
echo "guest: kernel $(uname -r)"
failed=0
step() {
    local name=$1; shift
    local start=$(date +%s%N)
    echo "guest: step $name"
    timeout --kill-after=5 240 "$@" > "/tmp/results/$name.log" 2>&1
    local rc=$?
    echo "guest: $name rc=$rc in $(( ($(date +%s%N) - start) / 1000000 )) ms"
    grep -E '^test |^test result' "/tmp/results/$name.log"
    if [ $rc -ne 0 ]; then failed=1; tail -n 60 "/tmp/results/$name.log"; fi
}
"#,
    );
    s.push_str(&format!(
        "export LBHA_AGENT_BIN={}\nexport LBHA_EXPECT_PROGRAM={}\n",
        q(&binaries.agent),
        kernel.expect
    ));
    s.push_str(&format!(
        "step probe {} --exact the_kernel_probe_picks_the_expected_program --nocapture --test-threads=1\n",
        q(&binaries.xdp_test_run)
    ));
    for variant in kernel.variants {
        s.push_str(&format!(
            "LBHA_TEST_VARIANT={variant} step xdp-test-run-{variant} {} --test-threads=1\n",
            q(&binaries.xdp_test_run)
        ));
    }
    s.push_str(&format!(
        "step keepalived-receive {} --test-threads=2\n",
        q(&binaries.keepalived_receive)
    ));
    s.push_str(&format!(
        "step keepalived-receive-v6 {} --test-threads=2\n",
        q(&binaries.keepalived_receive_v6)
    ));
    s.push_str(
        r#"echo "$failed" > /tmp/results/rc
sync
echo "guest: done, failed=$failed"
echo o > /proc/sysrq-trigger
sleep 10
"#,
    );
    s
}

/// Boots `kernel` with `initrd`; returns whether every step passed.
fn boot(
    kernel: &Kernel,
    unpacked: &Unpacked,
    initrd: &Path,
    binaries: &Binaries,
    accel: Accel,
) -> Result<bool> {
    let results = workspace_root().join("target/kernels").join(kernel.suite);
    let _ = std::fs::remove_dir_all(&results);
    std::fs::create_dir_all(&results)?;
    std::fs::write(
        results.join("guest.sh"),
        guest_script(kernel, unpacked, binaries),
    )?;
    let console = results.join("console.log");
    let mut qemu = Command::new("qemu-system-x86_64");
    match accel {
        // IA32_ARCH_CAPABILITIES cannot be set under nested KVM here.
        Accel::Kvm => qemu.args(["-accel", "kvm", "-cpu", "host,-arch-capabilities"]),
        Accel::Tcg | Accel::Auto => qemu.args(["-accel", "tcg,thread=multi", "-cpu", "max"]),
    };
    qemu.args(["-smp", "2", "-m", "1536"])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(&unpacked.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .args([
            "-fsdev",
            "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
            "-device",
            "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        ])
        .arg("-fsdev")
        .arg(format!(
            "local,id=results,path={},security_model=none",
            results.display()
        ))
        .args(["-device", "virtio-9p-pci,fsdev=results,mount_tag=results"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut guest = lbha_harness::ChildGuard::spawn(format!("qemu {}", kernel.suite), &mut qemu)?;
    let status = guest.wait_timeout(GUEST_TIMEOUT)?;
    let console_text = std::fs::read_to_string(&console).unwrap_or_default();
    for line in console_text.lines() {
        if line.starts_with("guest:") || line.starts_with("test ") || line.contains("panicked") {
            println!("  [{}] {line}", kernel.suite);
        }
    }
    let Some(status) = status else {
        println!("{console_text}");
        bail!(
            "{}: the guest did not finish within {GUEST_TIMEOUT:?}; console in {}",
            kernel.suite,
            console.display()
        );
    };
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = guest.child_mut().stderr.take() {
            use std::io::Read;
            let _ = pipe.read_to_string(&mut stderr);
        }
        bail!("{}: qemu failed: {status}: {stderr}", kernel.suite);
    }
    if let Ok(rc) = std::fs::read_to_string(results.join("rc")) {
        Ok(rc.trim() == "0")
    } else {
        println!("{console_text}");
        bail!(
            "{}: the guest wrote no result; console in {}",
            kernel.suite,
            console.display()
        )
    }
}

pub fn kernels(args: &KernelsArgs) -> Result<()> {
    if !Path::new("/dev/kvm").exists() {
        if args.skip_without_kvm {
            println!("kernels: SKIPPED: /dev/kvm is missing (no KVM on this machine)");
            return Ok(());
        }
        bail!(
            "/dev/kvm is missing: the kernel matrix needs KVM; `cargo xtask kernels --skip-without-kvm` skips it explicitly"
        );
    }
    let (accel, why) = accelerator(args.accel, Path::new("/sys/module/kvm_pvm").exists());
    if let Some(why) = why {
        println!("kernels: {why}");
    }
    let started = Instant::now();
    let cache = cache_dir()?;
    std::fs::create_dir_all(&cache)?;
    ensure_host_packages(&cache)?;
    let selected: Vec<&Kernel> = KERNELS
        .iter()
        .filter(|k| args.only.is_empty() || args.only.iter().any(|o| o == k.suite))
        .collect();
    if selected.is_empty() {
        bail!("--only: no such suite (bullseye, bookworm, trixie)");
    }
    let apt = PrivateApt::new(
        cache.join("apt"),
        &KERNELS.iter().map(|k| k.suite).collect::<Vec<_>>(),
    )?;
    let mut updated = false;
    let mut prepared = Vec::new();
    for kernel in &selected {
        let unpacked = self::kernel(&apt, &cache, kernel.suite, &mut updated)?;
        let initrd = initramfs(&unpacked, &cache)?;
        prepared.push((unpacked, initrd));
    }
    println!("kernels: kernels ready after {:.1?}", started.elapsed());
    let binaries = build()?;
    println!("kernels: binaries ready after {:.1?}", started.elapsed());
    let mut failures = Vec::new();
    for (kernel, (unpacked, initrd)) in selected.iter().zip(&prepared) {
        let boot_start = Instant::now();
        println!(
            "kernels: {} ({}), expecting the {} program",
            kernel.suite, unpacked.release, kernel.expect
        );
        let passed = boot(kernel, unpacked, initrd, &binaries, accel)?;
        println!(
            "kernels: {} {} in {:.1?}",
            kernel.suite,
            if passed { "passed" } else { "FAILED" },
            boot_start.elapsed()
        );
        if !passed {
            failures.push(kernel.suite);
        }
    }
    println!("kernels: total {:.1?}", started.elapsed());
    if !failures.is_empty() {
        bail!(
            "kernel matrix failed on {}: logs in target/kernels/",
            failures.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_runs_kvm_except_on_pvm_and_explicit_choices_stand() {
        assert_eq!(accelerator(Accel::Auto, false), (Accel::Kvm, None));
        assert_eq!(accelerator(Accel::Auto, true).0, Accel::Tcg);
        assert_eq!(accelerator(Accel::Kvm, true), (Accel::Kvm, None));
        assert_eq!(accelerator(Accel::Tcg, false), (Accel::Tcg, None));
    }

    #[test]
    fn each_kernel_runs_every_variant_it_expects_and_the_expected_one_first() {
        for kernel in &KERNELS {
            assert_eq!(kernel.variants[0], kernel.expect, "{}", kernel.suite);
        }
        let bullseye = &KERNELS[0];
        let binaries = Binaries {
            xdp_test_run: "/t/xdp".into(),
            keepalived_receive: "/t/ka".into(),
            keepalived_receive_v6: "/t/ka6".into(),
            agent: "/t/agent".into(),
        };
        let unpacked = Unpacked {
            release: "5.10.0-32-amd64".into(),
            vmlinuz: "/k/vmlinuz".into(),
            modules_base: "/k/base".into(),
        };
        let script = guest_script(bullseye, &unpacked, &binaries);
        assert!(script.contains("exec /usr/sbin/modprobe -d /k/base"));
        assert!(script.contains("export LBHA_EXPECT_PROGRAM=no-timer"));
        assert!(script.contains("LBHA_TEST_VARIANT=no-timer step xdp-test-run-no-timer '/t/xdp'"));
        assert!(!script.contains("LBHA_TEST_VARIANT=full"));
        assert!(script.contains("step keepalived-receive '/t/ka'"));
        assert!(script.contains("step keepalived-receive-v6 '/t/ka6'"));
    }
}
