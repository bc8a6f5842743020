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
//!   sizes the kernel would reject are refused up front ([`ReserveError`]).
//! - **The Linux front end** (feature `std`, on by default): [`RingBuf`] opens a map (from any
//!   fd, a pinned path or a map id), checks its type, maps it with the right permissions and
//!   waits for data through epoll; [`UserRingBuf`] does the same for the producer side of a
//!   USER_RINGBUF. `Poller` waits on many rings at once, `Flusher` stops a waiting reader
//!   from another thread, `DropCounter` reads the counter BPF programs keep of lost events
//!   (`docs/waiting.md` explains the waiting). The kernel calls live in the `bpf-ringbuf-sys`
//!   crate.
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
//! # Guides
//!
//! - [`guide::protocol`]: the protocol as a specification, with the kernel code each rule
//!   pairs with.
//! - [`guide::design`]: how the crate is built and where its guarantees end.
//! - [`guide::vendoring`]: using the core from another BPF library, with a mapping you
//!   already hold; the stability promise and MSRV (Rust 1.81).
//!
//! # Crate features
//!
//! - `std` (default): the Linux front end; implies `alloc`.
//! - `tokio`: `AsyncRingBuf` and `AsyncSpaceWaiter`, waiting through tokio's reactor; implies
//!   `std`.
//! - `alloc`: owned-record helpers ([`Consumer::read_vec`], [`Consumer::read_owned`]) and the
//!   heap-backed [`model`] of a ring and of the kernel's producer.
//!
//! With `default-features = false` the crate has no dependencies and builds for `no_std`
//! targets.

#![no_std]
#![deny(missing_docs, unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(docsrs, feature(doc_cfg))]

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
#[cfg(feature = "alloc")]
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
    #[doc = include_str!("../docs/vendoring.md")]
    pub mod vendoring {}
}

#[cfg(all(feature = "std", not(bpf_ringbuf_loom)))]
mod linux;

pub use consumer::{Batch, BatchIter, Consumer, Positions, Readiness, Stats};
pub use error::{GeometryError, ReadError};
pub use geometry::Geometry;
pub use header::RecordHeader;
pub use memory::{OverwriteMemory, RingMemory, RingMemoryMut};
pub use overwrite::{OverwriteConsumer, OverwriteStats};

pub use producer::{Producer, Reservation, ReserveError, WriteBatch};
#[cfg(not(bpf_ringbuf_loom))]
pub use raw::RawRingMemory;

#[cfg(all(feature = "std", not(bpf_ringbuf_loom)))]
pub use linux::*;
