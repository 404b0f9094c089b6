use which::which;

/// Rebuild the BPF object when bpf-linker changes (e.g. after `cargo xtask
/// setup` rebuilt it against a new nightly), as aya's template does.
fn main() {
    if let Ok(bpf_linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", bpf_linker.display());
    }
}
