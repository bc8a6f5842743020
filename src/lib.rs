//! The Linux BPF ring buffer protocol, both directions.
//!
//! `BPF_MAP_TYPE_RINGBUF` carries records from BPF programs to user space;
//! `BPF_MAP_TYPE_USER_RINGBUF` carries them the other way. Both share one memory layout: a
//! consumer page holding `consumer_pos`, a producer page holding `producer_pos`, and a data
//! area of `max_entries` bytes mapped twice back to back, so records that wrap around the end
//! are contiguous. Each record starts with an 8-byte header whose `len` word carries the BUSY
//! and DISCARD bits. [`guide::protocol`] specifies it all.
//!
//! This crate is in two layers:
//!
//! - **The protocol core** (always available, `no_std`, no allocation, no dependencies):
//!   [`header`], [`geometry`], and the [`Consumer`], which reads through the narrow
//!   [`RingMemory`] abstraction. Its zero-copy [`Batch`] lends records as `&[u8]` checked by
//!   the borrow checker — safe code, no `unsafe` for the user. Every position and header is
//!   treated as untrusted input ([`ReadError`]). The USER_RINGBUF [`Producer`] writes the
//!   other way: [`Reservation`]s are `&mut [u8]` in the ring, several may be outstanding, and
//!   sizes the kernel would reject are refused up front ([`ReserveError`]). The [`merge`]
//!   module reads several rings (one per CPU) as one stream, zero-copy, in the order of a key
//!   each record carries.
//! - **The Linux front end** (feature `std`, on by default): [`RingBuf`] opens a map (from any
//!   fd, a pinned path or a map id), checks through the kernel that it is a ring map of the
//!   right type, claims the ring's one reader for this process, maps it with the right
//!   permissions and waits for data through epoll; [`UserRingBuf`] does the same for the producer side of a
//!   USER_RINGBUF. `Poller` waits on many rings at once, `MergedReader` reads them in one
//!   key order ([`guide::merging`]), `Flusher` stops a waiting reader
//!   from another thread, `DropCounter` reads the counter BPF programs keep of lost events
//!   (`docs/waiting.md` explains the waiting). The kernel calls live in the `bpf-ringbuf-sys`
//!   crate.
//!
//! Safe code cannot reach undefined behaviour through this crate: no safe call sequence makes
//! a second reader or producer of one ring, hands out an atomic over a read-only page or over
//! lent bytes, or lets a lent record outlive its lease. The constructors that could
//! ([`Consumer::new`], [`Producer::new`], ...) are `unsafe fn`s with their contract; the front
//! end and the model's [`HeapRing::split`](model::HeapRing::split) make endpoints safely by
//! establishing it. [`guide::design`] states the guarantee and its one trust assumption
//! (another *process* holding the map fd), which the readers detect
//! ([`ReadError::ConsumerPosMoved`]).
//!
//! # Quick start
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use bpf_ringbuf::RingBuf;
//! use std::time::Duration;
//!
//! let mut ring = RingBuf::from_pinned("/sys/fs/bpf/events")?;
//! loop {
//!     ring.wait(Some(Duration::from_secs(1)))?;
//!     for record in &ring.batch() {
//!         let record: &[u8] = record?;
//!         println!("{} bytes", record.len());
//!     }
//! }
//! # }
//! ```
//!
//! # Writing to the kernel (USER_RINGBUF)
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use bpf_ringbuf::{ReserveError, UserRingBuf};
//! use std::time::Duration;
//!
//! let ring = UserRingBuf::from_pinned("/sys/fs/bpf/commands")?;
//! let mut command = ring.reserve(16)?; // &mut [u8] in the ring itself
//! command.copy_from_slice(&[0x2a; 16]);
//! command.submit();
//! match ring.output(b"a copied sample") {
//!     Err(ReserveError::NoSpace { .. }) => {
//!         // Full until the BPF program drains it: wait for the kernel's EPOLLOUT.
//!         let mut sample = ring.reserve_timeout(15, Some(Duration::from_secs(1)))?;
//!         sample.copy_from_slice(b"a copied sample");
//!         sample.submit();
//!     }
//!     other => other?,
//! }
//! # Ok(()) }
//! ```
//!
//! # From aya, libbpf-rs and other loaders
//!
//! The front end takes the map fd of whatever loaded the program (`impl AsFd`, duplicated).
//! [`guide::ecosystem`] has the exact code, compiled with examples that CI runs against the
//! kernel: from aya, match `Map::RingBuf(events)` and pass `events.fd()` (and load with
//! `EbpfLoader::allow_unsupported_maps()` when the object has a USER_RINGBUF); from
//! libbpf-rs, pass `&map`. A reader the library opens itself on the same map (aya's or
//! libbpf's own ring buffer types) is a second consumer this crate cannot see: do not make
//! one.
//!
//! # Typed records
//!
//! Every payload is 8-byte aligned, both ways ([`guide::protocol`], "Payload alignment"), so a
//! `#[repr(C)]` event is read in place with bytemuck or zerocopy, which check its size and
//! alignment:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use bpf_ringbuf::RingBuf;
//! use bytemuck::{Pod, Zeroable};
//!
//! #[repr(C)]
//! #[derive(Clone, Copy, Pod, Zeroable)]
//! struct Event {
//!     pid: u32,
//!     tid: u32,
//!     ktime_ns: u64,
//!     comm: [u8; 16],
//! }
//!
//! let mut ring = RingBuf::from_pinned("/sys/fs/bpf/events")?;
//! ring.wait(None)?;
//! for record in &ring.batch() {
//!     let event: &Event = bytemuck::try_from_bytes(record?)?; // zero-copy, checked
//!     println!("{} {:?}", event.pid, event.comm);
//! }
//! # Ok(()) }
//! ```
//!
//! # Guides
//!
//! - [`guide::protocol`]: the protocol as a specification, with the kernel code each rule
//!   pairs with.
//! - [`guide::design`]: how the crate is built and where its guarantees end.
//! - [`guide::waiting`]: sleeping until the kernel signals without losing a wakeup or
//!   spinning; many rings, deadlines, flush and close, async.
//! - [`guide::user_ringbuf`]: writing to the kernel (USER_RINGBUF).
//! - [`guide::merging`]: per-CPU rings read in one order: the release rule, its guarantee,
//!   and the trade-off between latency and order.
//! - [`guide::vendoring`]: using the core from another BPF library, with a mapping you
//!   already hold; the stability promise and MSRV.
//! - [`guide::ecosystem`]: the maps of aya and libbpf-rs, and typed records.
//!
//! # Crate features
//!
//! - `std` (default): the Linux front end; implies `alloc`.
//! - `tokio`: `AsyncRingBuf` and `AsyncUserRingBuf`, waiting through tokio's reactor; implies
//!   `std`.
//! - `alloc`: owned-record helpers ([`Consumer::read_vec`], [`Consumer::read_owned`]).
//! - `model` (opt-in, for tests; implies `alloc`): the heap-backed `model` of a ring, of the
//!   kernel's RINGBUF producer and of its USER_RINGBUF drain, to test code over the core
//!   without a kernel.
//!
//! With `default-features = false` the crate has no dependencies and builds for `no_std`
//! targets. (`loom` is not for users: it brings the dependency of the crate's own loom models,
//! and does nothing without `--cfg bpf_ringbuf_loom`.)
//!
//! # Minimum supported Rust version
//!
//! Rust 1.81 without features, with `alloc` and with `std` (the default). The `tokio` feature
//! needs Rust 1.85 with tokio 1.54 (what a fresh lockfile picks), or 1.81 with tokio held at
//! 1.53. CI checks each.

#![no_std]
#![deny(missing_docs, unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The loom build needs both the cfg (which switches the atomics) and the feature (which brings
// the dependency); see `sync` and docs/verification.md.
#[cfg(all(bpf_ringbuf_loom, not(feature = "loom")))]
compile_error!("`--cfg bpf_ringbuf_loom` needs `--features loom` (the loom dependency)");

#[cfg(feature = "alloc")]
extern crate alloc;
// Loom (and the negative-control switch in `sync`) need std.
#[cfg(any(feature = "std", bpf_ringbuf_loom))]
extern crate std;

pub mod consumer;
pub mod error;
pub mod geometry;
pub mod header;
pub mod memory;
pub mod merge;
// Documented whenever the docs have `alloc`, so that the guides' links to it resolve.
#[cfg(any(feature = "model", all(doc, feature = "alloc")))]
#[cfg_attr(docsrs, doc(cfg(feature = "model")))]
pub mod model;
pub mod overwrite;
pub mod producer;
#[cfg(not(bpf_ringbuf_loom))]
pub mod raw;
pub mod sync;

/// Guides that ship with the crate; their code blocks run as doctests.
pub mod guide {
    #[doc = include_str!("../docs/protocol.md")]
    pub mod protocol {}
    #[doc = include_str!("../docs/design.md")]
    pub mod design {}
    #[doc = include_str!("../docs/waiting.md")]
    pub mod waiting {}
    #[doc = include_str!("../docs/user-ringbuf.md")]
    pub mod user_ringbuf {}
    #[doc = include_str!("../docs/vendoring.md")]
    pub mod vendoring {}
    #[doc = include_str!("../docs/ecosystem.md")]
    pub mod ecosystem {}
    #[doc = include_str!("../docs/merging.md")]
    pub mod merging {}
}

#[cfg(all(feature = "std", not(bpf_ringbuf_loom)))]
mod linux;

// The routes to undefined behaviour safe code once had, each a doctest that must fail to
// compile (with the std front end and the model).
#[cfg(all(doctest, feature = "std"))]
#[doc = include_str!("../tests/compile_fail.md")]
mod compile_fail_tests {}

pub use consumer::{Batch, BatchIter, Consumer, Stats};
pub use error::{GeometryError, ReadError};
pub use geometry::{Geometry, Positions, Readiness};
pub use header::RecordHeader;
pub use memory::{OverwriteMemory, RingMemory, RingMemoryMut};
pub use merge::{Merge, MergeError, MergeRing, MergeRound, MergedRecord};
pub use overwrite::{OverwriteConsumer, OverwriteStats};

pub use producer::{Producer, Reservation, ReserveError, WriteBatch};
#[cfg(not(bpf_ringbuf_loom))]
pub use raw::RawRingMemory;

#[cfg(all(feature = "std", not(bpf_ringbuf_loom)))]
pub use linux::*;
