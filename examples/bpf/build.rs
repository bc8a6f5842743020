//! Build script of the integration examples: compiles `exec_events.bpf.c` with clang into
//! `$OUT_DIR/exec_events.bpf.o`, which the example embeds. The object is built, not
//! committed: what runs is always what the C source says.
//!
//! Needs clang (with the BPF target: Debian's `clang`) and libbpf's `bpf/bpf_helpers.h`
//! (Debian's `libbpf-dev`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let source = manifest_dir.join("../bpf/exec_events.bpf.c");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("exec_events.bpf.o");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-env-changed=CLANG");

    // <linux/bpf.h> includes <asm/types.h>, which Debian keeps under the multiarch directory
    // of the host; the BPF target does not search it by itself.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap();
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let status = Command::new(&clang)
        .args(["-target", "bpf", "-g", "-O2", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .arg("-c")
        .arg(&source)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run {clang} ({error}): the example's BPF program is C, built with \
                 clang (Debian: apt-get install clang libbpf-dev)"
            )
        });
    assert!(
        status.success(),
        "{clang} failed to build {}",
        source.display()
    );
}
