//! `cargo xtask setup`: makes a fresh machine able to build and test lbha,
//! and does nothing when everything is already there.
//!
//! - the nightly toolchain's `rust-src` (the BPF target builds `core` itself);
//! - `bpf-linker`, built against the nightly toolchain's own libLLVM (no
//!   prebuilt LLVM can be downloaded), through a persistent prefix of symlinks
//!   so that it keeps working and is rebuilt only when nightly's LLVM changes;
//! - the `x86_64-unknown-linux-musl` standard library, for the static
//!   release binary (`cargo xtask dist`);
//! - the Debian packages the tests, the lab and the packaging checks use.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::run;

// nftables: the fault tests cut and thin the VRRP path inside their namespaces.
// musl-tools: musl-gcc, the C compiler aws-lc-sys (rustls' crypto) needs to
// build for the static musl binary. file, binutils: the dist check that the
// binary links no libc. rpm: rpmbuild and `rpm -qp` for the .rpm (the .deb
// needs only dpkg-deb, part of dpkg). debootstrap: the Debian roots the .deb
// is installed into. prometheus: promtool, which checks and unit-tests
// the alert rules.
const APT_PACKAGES: &[&str] = &[
    "haproxy",
    "keepalived",
    "iproute2",
    "curl",
    "nftables",
    "musl-tools",
    "file",
    "binutils",
    "rpm",
    "debootstrap",
    "prometheus",
];

/// The target of the release binary: fully static, so one file runs on every
/// droplet whatever its libc.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";

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
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")
}

fn nightly_sysroot() -> Result<PathBuf> {
    let sysroot = output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
        .context("the nightly toolchain is needed to build the XDP program (rustup toolchain install nightly)")?;
    Ok(PathBuf::from(sysroot))
}

fn ensure_rust_src(sysroot: &Path) -> Result<()> {
    if sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .exists()
    {
        return Ok(());
    }
    println!("setup: installing rust-src for nightly");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// The file name of nightly's libLLVM (e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`).
fn llvm_soname(sysroot: &Path) -> Result<String> {
    let lib = sysroot.join("lib");
    for entry in std::fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with("libLLVM.so.")
            || (name.starts_with("libLLVM-")
                && std::path::Path::new(&name)
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("so")))
        {
            return Ok(name);
        }
    }
    bail!("no libLLVM shared library in {}", lib.display())
}

/// LLVM major version from a soname such as `libLLVM.so.22.1-rust-...`.
fn llvm_major(soname: &str) -> Result<u32> {
    let rest = soname
        .strip_prefix("libLLVM.so.")
        .or_else(|| soname.strip_prefix("libLLVM-"))
        .context("unexpected libLLVM name")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .with_context(|| format!("no LLVM version in {soname}"))
}

fn ensure_bpf_linker(sysroot: &Path) -> Result<()> {
    let soname = llvm_soname(sysroot)?;
    let prefix = home()?.join(".local/share/bpf-linker-llvm");
    let lib = prefix.join("lib");
    let stamp = prefix.join("built-for");
    let bin = home()?.join(".cargo/bin/bpf-linker");
    let linker_works = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let built_for = std::fs::read_to_string(&stamp).unwrap_or_default();
    if linker_works && built_for.trim() == soname {
        return Ok(());
    }
    println!("setup: building bpf-linker against {soname} (a few minutes, once)");
    std::fs::create_dir_all(&lib)?;
    let target = sysroot.join("lib").join(&soname);
    for link in [lib.join("libLLVM.so"), lib.join(&soname)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    let feature = format!("llvm-{}", llvm_major(&soname)?);
    run(Command::new("cargo")
        .args([
            "install",
            "--force",
            "bpf-linker",
            "--no-default-features",
            "--features",
            &feature,
        ])
        .env("LLVM_PREFIX", &prefix))?;
    std::fs::write(&stamp, &soname)?;
    Ok(())
}

fn missing_apt_packages() -> Vec<&'static str> {
    APT_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", pkg])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect()
}

fn ensure_apt_packages() -> Result<()> {
    let missing = missing_apt_packages();
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: installing {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    // The Debian packages start their services; the lab and tests run their
    // own instances in namespaces, so stop the host-wide ones (prometheus is
    // installed for promtool only).
    for service in ["haproxy", "keepalived", "prometheus"] {
        let _ = Command::new("service").args([service, "stop"]).output();
    }
    Ok(())
}

fn ensure_static_target() -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|line| line.trim() == STATIC_TARGET) {
        return Ok(());
    }
    println!("setup: adding the {STATIC_TARGET} target");
    run(Command::new("rustup").args(["target", "add", STATIC_TARGET]))
}

pub fn setup() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    ensure_rust_src(&sysroot)?;
    ensure_static_target()?;
    ensure_bpf_linker(&sysroot)?;
    ensure_apt_packages()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::llvm_major;

    #[test]
    fn llvm_major_from_rust_sonames() {
        assert_eq!(
            llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly").unwrap(),
            22
        );
        assert_eq!(llvm_major("libLLVM-19-rust-1.82.0-nightly.so").unwrap(), 19);
        assert!(llvm_major("libLLVM.so.x").is_err());
    }
}
