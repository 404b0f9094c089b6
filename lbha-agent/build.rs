//! Builds the XDP program (lbha-ebpf) for bpfel-unknown-none with the nightly
//! toolchain and bpf-linker, and leaves the object in OUT_DIR for
//! `include_bytes_aligned!`. `cargo xtask setup` installs what this needs.
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let workspace = Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow::anyhow!("lbha-agent has no parent directory"))?;
    let ebpf_dir = workspace.join("lbha-ebpf");
    // The XDP program is built from lbha-common too; aya-build only watches
    // the package it builds.
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("lbha-common/src").display()
    );
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lbha-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
