//! The atomics the core is built on.
//!
//! Normally these are `core`'s. Built with `RUSTFLAGS="--cfg bpf_ringbuf_loom"`, they are
//! [loom](https://docs.rs/loom)'s, so the model checker explores every interleaving and
//! weak-memory outcome of the real protocol code (see `tests/loom_*.rs` and
//! `docs/verification.md`). The cfg is specific to this crate so that turning it on does not
//! switch other crates in the build to loom.
//!
//! Implementors of [`RingMemory`](crate::RingMemory) name the atomic types through this module,
//! so that the same implementation compiles in both configurations.

/// Atomic integer types and orderings used by the ring protocol.
pub mod atomic {
    #[cfg(not(bpf_ringbuf_loom))]
    pub use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicUsize, Ordering};
    #[cfg(bpf_ringbuf_loom)]
    pub use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicUsize, Ordering};
}

/// Hint used inside spin loops (only the model of the kernel's ring lock spins).
#[cfg_attr(not(feature = "alloc"), allow(dead_code))]
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(not(bpf_ringbuf_loom))]
    core::hint::spin_loop();
    #[cfg(bpf_ringbuf_loom)]
    loom::thread::yield_now();
}
