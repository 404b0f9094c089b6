//! `cargo xtask`: lbha's developer commands. Every command that builds or
//! runs something calls `setup` first, so they all work from a fresh clone.

mod bench;
mod dist;
mod kernels;
mod lab;
mod monitoring;
mod package;
mod setup;
mod test_dist;
mod test_systemd;

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what lbha needs (nightly rust-src, bpf-linker, Debian packages); no-op when present.
    Setup,
    /// Build the XDP object into target/bpfel-unknown-none/release/lbha.
    BuildEbpf,
    /// Run every check: unit tests, BPF test_run tests, namespace integration tests.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build the XDP object and the agent, then run `lbha-agent ARGS` as root
    /// (through `sudo -E` when not root): the one command to iterate with,
    /// e.g. `cargo xtask run -- --config examples/lbha.toml`.
    Run {
        /// Build and run the release binary.
        #[arg(long)]
        release: bool,
        /// Arguments for lbha-agent.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the local lab in network namespaces (needs root).
    Lab(lab::LabArgs),
    /// Build the static release binary and, in target/dist/, the tarball, the
    /// .deb and the .rpm; check the binary links no libc and runs in an empty
    /// root, and what the tarball and the packages hold (root for the empty root).
    Dist,
    /// Boot Debian's kernels (bullseye 5.10, bookworm 6.1, trixie 6.12) in
    /// QEMU/KVM and run the XDP tests and the keepalived receive test in each.
    Kernels(kernels::KernelsArgs),
    /// `dist`, then install, upgrade and purge the .deb in Debian roots
    /// (bookworm, bullseye; made with debootstrap, cached in target/debroot/);
    /// first the `monitoring` checks.
    TestDist,
    /// Boot systemd in a container (systemd-nspawn) on the bookworm root,
    /// install the .deb there and check what the unit promises: readiness,
    /// reload, watchdog, restart with the pinned XDP link, the sandbox,
    /// journal priorities (root; LBHA_SKIP_SYSTEMD_BOOT=1 skips it when the
    /// container cannot boot).
    TestSystemd(test_systemd::TestSystemdArgs),
    /// Check the Prometheus alert rules (`promtool check rules`, `promtool
    /// test rules`) and the Grafana dashboard (structure; every query parses).
    Monitoring,
    /// Benchmark lbha against keepalived in the lab (needs root; writes target/bench/).
    Bench(bench::BenchArgs),
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Runs a command, failing with its command line when it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn build_ebpf() -> Result<()> {
    // The same invocation aya-build makes from lbha-agent's build script, with
    // the result left where developers can inspect it (llvm-objdump, bpftool).
    let mut cmd = Command::new("rustup");
    cmd.current_dir(workspace_root().join("lbha-ebpf"))
        .args(["run", "nightly", "cargo", "build", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(workspace_root().join("target"))
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "--cfg=bpf_target_arch=\"x86_64\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf",
        )
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    run(&mut cmd)?;
    println!(
        "BPF object: {}",
        workspace_root()
            .join("target/bpfel-unknown-none/release/lbha")
            .display()
    );
    Ok(())
}

fn test(args: &[String]) -> Result<()> {
    // The namespace tests run the agent and the DigitalOcean simulator,
    // binaries `cargo test` does not build for another package; build them
    // first and tell the tests where they are.
    run(cargo().args([
        "build",
        "--package",
        "lbha-agent",
        "--package",
        "lbha-dosim",
    ]))?;
    let debug = workspace_root().join("target/debug");
    run(cargo()
        .args([
            "test",
            "--workspace",
            "--exclude",
            "lbha-ebpf",
            "--no-fail-fast",
        ])
        .args(args)
        .env("LBHA_AGENT_BIN", debug.join("lbha-agent"))
        .env("LBHA_DOSIM_BIN", debug.join("lbha-dosim")))
}

/// Builds lbha-agent and runs it with `args`, as root: the XDP program,
/// raw sockets and virtual addresses need it.
fn run_agent(release: bool, args: &[String]) -> Result<()> {
    let mut build = cargo();
    build.args(["build", "--package", "lbha-agent"]);
    if release {
        build.arg("--release");
    }
    run(&mut build)?;
    let binary = workspace_root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("lbha-agent");
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mut agent = if root {
        Command::new(&binary)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("-E").arg(&binary);
        sudo
    };
    run(agent.args(args))
}

/// Sets up, builds the agent and the simulator in release mode, and returns
/// their paths (what the lab and the benchmark run).
fn release_binaries() -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    setup::setup()?;
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "lbha-agent",
        "--package",
        "lbha-dosim",
    ]))?;
    let release = workspace_root().join("target/release");
    Ok((release.join("lbha-agent"), release.join("lbha-dosim")))
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::setup(),
        Cmd::BuildEbpf => {
            setup::setup()?;
            build_ebpf()
        }
        Cmd::Test { args } => {
            setup::setup()?;
            test(&args)
        }
        Cmd::Run { release, args } => {
            setup::setup()?;
            build_ebpf()?;
            run_agent(release, &args)
        }
        Cmd::Dist => {
            setup::setup()?;
            dist::dist().map(drop)
        }
        Cmd::TestDist => {
            setup::setup()?;
            test_dist::test_dist()
        }
        Cmd::TestSystemd(args) => {
            setup::setup()?;
            test_systemd::test_systemd(&args)
        }
        Cmd::Monitoring => {
            setup::setup()?;
            test_dist::test_monitoring()
        }
        Cmd::Lab(args) => {
            let (agent, dosim) = release_binaries()?;
            lab::run_lab(&args, &agent, &dosim)
        }
        Cmd::Kernels(args) => {
            setup::setup()?;
            kernels::kernels(&args)
        }
        Cmd::Bench(args) => {
            let (agent, dosim) = release_binaries()?;
            bench::run_bench(&args, &agent, &dosim)
        }
    }
}
