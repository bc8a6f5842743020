//! Shared by the tests, examples and benchmarks of `bpf-ringbuf`: the kernel-test policy and
//! small BPF programs assembled in Rust (no C toolchain at test time).
//!
//! # Kernel-test policy
//!
//! Tests that need bpf(2) start with [`require_kernel!`]. With `BPF_RINGBUF_REQUIRE_KERNEL=1`
//! (CI sets it) a missing kernel is a failure; otherwise the test prints why it skips and
//! returns.
//!
//! Tests that need a newer kernel *feature* (a map type or flag the oldest supported kernel
//! lacks) add [`require_feature!`] with a probe such as [`user_ringbuf_missing`]: on a kernel
//! without it they print `skipped: <reason>` and return, even with
//! `BPF_RINGBUF_REQUIRE_KERNEL=1`; a missing feature on a kernel that should have it fails.
//!
//! # Layout
//!
//! Everything is re-exported here, so tests name `kit::ringbuf_map`, not its module:
//!
//! | module | what |
//! |---|---|
//! | `policy` | the policy above and the kernel-feature probes |
//! | `maps` | ring, array and per-CPU maps, ring sizes, CPUs |
//! | `producers` | RINGBUF producer programs and the records they write |
//! | `drainers` | USER_RINGBUF drain programs |
//! | `memory` | ring memory mapped by hand, raw USER_RINGBUF writes |
//! | `watch` | wakeups, positions and a second `consumer_pos` writer beside an endpoint |
//! | `system` | a private bpffs; a test alone in its own process |
//! | [`insn`], [`btf`], `prog`, `bpf` | the assembler, the BTF builder, program loads and test runs, and the kit's own `bpf()` |
//! | [`exec`] | the exec tracer of the demo and examples |

// Empty under the loom cfg, which compiles the crate's front end out: only the loom models
// are built then, and they need nothing here (the kit is every test's dev-dependency).
#![cfg(not(bpf_ringbuf_loom))]

/// `BPF_RB_NO_WAKEUP`.
pub const NO_WAKEUP: u64 = 1;
/// `BPF_RB_FORCE_WAKEUP`.
pub const FORCE_WAKEUP: u64 = 2;
/// `XDP_PASS`, what every producer program here returns on success.
pub const XDP_PASS: u32 = 2;

mod bpf;
pub mod btf;
mod drainers;
pub mod exec;
pub mod insn;
mod maps;
mod memory;
mod policy;
mod producers;
mod prog;
mod system;
mod watch;

pub use drainers::*;
pub use maps::*;
pub use memory::*;
pub use policy::*;
pub use producers::*;
pub use system::*;
pub use watch::*;

pub use bpf::FuncInfo;
pub use btf::btf_load;
pub use prog::{
    prog_load, prog_test_run, xdp_action, ProgLoad, ProgType, TestRun, TestRunOutput,
    LOG_BUFFER_SIZE,
};
