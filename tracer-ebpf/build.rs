//! Makes cargo rebuild the eBPF object when bpf-linker changes (as aya-template does).
use which::which;

fn main() {
    let bpf_linker = which("bpf-linker").unwrap_or_default();
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
