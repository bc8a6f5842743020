//! The atomics the core is built on.
//!
//! Normally these are `core`'s. Built with `RUSTFLAGS="--cfg bpf_ringbuf_loom"` (and the
//! `loom` feature, which brings the dependency), they are [loom](https://docs.rs/loom)'s, so
//! the model checker explores every interleaving and weak-memory outcome of the real protocol
//! code (see `tests/loom` and `docs/verification.md`). The cfg is specific to this crate
//! so that turning it on does not switch other crates in the build to loom.
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

use crate::memory::{DataWord, PositionWord};

/// An acquire load that is sound on memory mapped read-only.
///
/// Rust promises only that small *Relaxed* atomic loads work on read-only pages (see "Atomic
/// accesses to read-only memory" in `core::sync::atomic`), and the rings put words we load
/// with acquire semantics on such pages: a RINGBUF's producer page and data, a USER_RINGBUF's
/// consumer page. A relaxed load followed by an acquire fence orders every later access just
/// as an acquire load does (on x86 both are a plain `mov`). A loom negative control at `point`
/// drops the fence.
#[inline(always)]
pub(crate) fn load_acquire_usize(word: &PositionWord, point: SyncPoint) -> usize {
    let value = word.load_relaxed();
    fence_at(point, atomic::Ordering::Acquire);
    value
}

/// [`load_acquire_usize`] for a 32-bit word (record headers).
#[inline(always)]
pub(crate) fn load_acquire_u32(word: &DataWord, point: SyncPoint) -> u32 {
    let value = word.load_relaxed();
    fence_at(point, atomic::Ordering::Acquire);
    value
}

/// Asks the CPU to bring the cache line holding `address` closer (into L1), without reading
/// it: a software prefetch.
///
/// A prefetch is a hint, not a memory access: it never faults, whatever the address, and the
/// program cannot observe it except in time, so any address will do (the read loop forms them
/// with `wrapping_add`, in or near the ring's data area). Through `core::arch` on x86 and
/// x86-64 (`prefetcht0`) and as `prfm pldl1keep` on AArch64; elsewhere, under miri and under
/// loom (whose atomics are not memory) it does nothing.
#[inline(always)]
pub(crate) fn prefetch(address: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri), not(bpf_ringbuf_loom)))]
    // SAFETY: `_mm_prefetch` only hints the cache hierarchy: it reads nothing the program can
    // observe and cannot fault, for any address. SSE is part of the x86-64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(all(
        target_arch = "x86",
        target_feature = "sse",
        not(miri),
        not(bpf_ringbuf_loom)
    ))]
    // SAFETY: as above; the cfg makes sure the target has SSE.
    unsafe {
        core::arch::x86::_mm_prefetch::<{ core::arch::x86::_MM_HINT_T0 }>(address.cast());
    }
    #[cfg(all(target_arch = "aarch64", not(miri), not(bpf_ringbuf_loom)))]
    // SAFETY: `prfm` is a hint: it does not access memory architecturally, never faults (an
    // invalid address is ignored), touches no register but its input, and no flags.
    unsafe {
        core::arch::asm!(
            "prfm pldl1keep, [{address}]",
            address = in(reg) address,
            options(nostack, preserves_flags, readonly)
        );
    }
    #[cfg(not(all(
        any(
            target_arch = "x86_64",
            all(target_arch = "x86", target_feature = "sse"),
            target_arch = "aarch64"
        ),
        not(miri),
        not(bpf_ringbuf_loom)
    )))]
    let _ = address;
}

/// Hint used inside spin loops (only the model of the kernel's ring lock spins).
#[cfg_attr(not(feature = "model"), allow(dead_code))]
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(not(bpf_ringbuf_loom))]
    core::hint::spin_loop();
    #[cfg(bpf_ringbuf_loom)]
    loom::thread::yield_now();
}

// The negative-control switch. `SyncPoint` and `ControlPoint` are public (hidden) only under the
// loom cfg; in normal builds they are private to the crate and every point keeps its ordering.
mod weaken {
    /// A synchronisation point of the protocol core that the loom models' negative controls can
    /// weaken. (The kernel model's own points are `model::KernelPoint`.)
    ///
    /// A model that cannot fail proves nothing: each loom model has a control that weakens one of
    /// these points (an ordering to `Relaxed`, a fence or a check left out) and expects the model
    /// checker to report the failure (`tests/loom`, `docs/verification.md`). The switch only
    /// exists under `--cfg bpf_ringbuf_loom`; in normal builds every point keeps its ordering and
    /// this compiles to nothing.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum SyncPoint {
        /// The consumer's load-acquire of `producer_pos`.
        ProducerPosLoad,
        /// The consumer's load-acquire of a record header.
        HeaderLoad,
        /// The consumer's store-release of `consumer_pos`.
        ConsumerPosPublish,
        /// The full fence in `Consumer::check_before_sleep`.
        SleepFence,
        /// A batch's single publish at its end: when weakened, the batch publishes
        /// `consumer_pos` past each record as it lends it (while it is still being read).
        BatchEarlyPublish,
        /// The USER_RINGBUF producer's load-acquire of `consumer_pos` at reserve.
        UserConsumerPosLoad,
        /// The USER_RINGBUF producer's store-release of `producer_pos` at reserve.
        UserProducerPosPublish,
        /// The USER_RINGBUF producer's exchange of the header at commit (made `Relaxed`).
        UserCommit,
        /// The overwrite-mode reader's re-check of `overwrite_pos` after copying a record
        /// (left out: the copy is delivered without validation).
        OverwriteRecheck,
        /// The overwrite-mode reader's acquire fence between the payload copy and the
        /// re-check of `overwrite_pos` (left out).
        OverwriteFence,
        /// The merged reader's hold for quiet rings (left out: a ring that shows no committed
        /// record is taken to have nothing earlier to deliver, so the smallest visible key is
        /// released at once).
        MergeQuietCheck,
        /// The lateness the merged reader allows between a record's key and its commit (left
        /// out: a ring seen quiet at `now` is taken to deliver nothing keyed before `now`).
        MergeLateness,
    }

    /// Any point a negative control can weaken: one of the core's [`SyncPoint`]s or one of the
    /// kernel model's points, told apart by an id (the model numbers its own from 256), with
    /// its name for messages.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub struct ControlPoint {
        pub(crate) id: u16,
        pub(crate) name: &'static str,
    }

    impl From<SyncPoint> for ControlPoint {
        fn from(point: SyncPoint) -> Self {
            let name = match point {
                SyncPoint::ProducerPosLoad => "ProducerPosLoad",
                SyncPoint::HeaderLoad => "HeaderLoad",
                SyncPoint::ConsumerPosPublish => "ConsumerPosPublish",
                SyncPoint::SleepFence => "SleepFence",
                SyncPoint::BatchEarlyPublish => "BatchEarlyPublish",
                SyncPoint::UserConsumerPosLoad => "UserConsumerPosLoad",
                SyncPoint::UserProducerPosPublish => "UserProducerPosPublish",
                SyncPoint::UserCommit => "UserCommit",
                SyncPoint::OverwriteRecheck => "OverwriteRecheck",
                SyncPoint::OverwriteFence => "OverwriteFence",
                SyncPoint::MergeQuietCheck => "MergeQuietCheck",
                SyncPoint::MergeLateness => "MergeLateness",
            };
            ControlPoint {
                id: point as u16,
                name,
            }
        }
    }
}

impl core::fmt::Debug for weaken::ControlPoint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name)
    }
}

#[cfg(not(bpf_ringbuf_loom))]
pub(crate) use weaken::{ControlPoint, SyncPoint};
#[cfg(bpf_ringbuf_loom)]
#[doc(hidden)]
pub use weaken::{ControlPoint, SyncPoint};

/// `required`, or `Relaxed` while a loom negative control weakens `point`.
#[inline(always)]
pub(crate) fn ordering(
    point: impl Into<ControlPoint>,
    required: atomic::Ordering,
) -> atomic::Ordering {
    if weakened(point) {
        atomic::Ordering::Relaxed
    } else {
        required
    }
}

/// `fence(ordering)`, left out while a loom negative control weakens `point`.
#[inline(always)]
pub(crate) fn fence_at(point: impl Into<ControlPoint>, ordering: atomic::Ordering) {
    if !weakened(point) {
        atomic::fence(ordering);
    }
}

/// Whether a loom negative control currently weakens `point` (always `false` in normal builds).
#[inline(always)]
pub(crate) fn weakened(point: impl Into<ControlPoint>) -> bool {
    #[cfg(bpf_ringbuf_loom)]
    {
        let id = point.into().id;
        WEAKENED.with(|weakened| weakened.get() == Some(id))
    }
    #[cfg(not(bpf_ringbuf_loom))]
    {
        let _ = point;
        false
    }
}

#[cfg(bpf_ringbuf_loom)]
std::thread_local! {
    // A thread-local, not a global: tests in one binary run in parallel threads, and loom runs a
    // model's threads as coroutines on the thread that called `loom::model`.
    static WEAKENED: core::cell::Cell<Option<u16>> = const { core::cell::Cell::new(None) };
}

/// Runs `f` (a loom model) with `point` weakened; for negative controls only.
#[cfg(bpf_ringbuf_loom)]
#[doc(hidden)]
pub fn with_weakened<R>(point: impl Into<ControlPoint>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<u16>);
    impl Drop for Restore {
        fn drop(&mut self) {
            WEAKENED.with(|weakened| weakened.set(self.0));
        }
    }
    let id = point.into().id;
    let _restore = Restore(WEAKENED.with(|weakened| weakened.replace(Some(id))));
    f()
}
