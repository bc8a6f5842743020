//! Thin, safe wrappers over the Linux `bpf(2)` operations that the
//! [`bpf-ringbuf`](https://docs.rs/bpf-ringbuf) crate needs: one function per kernel operation.
//!
//! - Maps: [`map_create`], [`map_info`], [`map_get_fd_by_id`], [`map_lookup_elem`],
//!   [`map_update_elem`]; pinning with [`obj_pin`] / [`obj_get`].
//! - [`Mapping`]: an owned shared `mmap` of a map (ring buffer pages).
//! - [`event`]: `eventfd` helpers; [`rustix`] is re-exported for epoll and friends.
//!
//! The ring buffer protocol itself is not here: this crate only talks to the kernel. Nor are
//! programs: loading and running BPF programs is what the crate's tests do (their unpublished
//! test kit has its own assembler, BTF builder and program loader), never what the crate does.
//!
//! File descriptors go in as [`BorrowedFd`](std::os::fd::BorrowedFd) and come out as
//! [`OwnedFd`](std::os::fd::OwnedFd) (close-on-exec, as the kernel creates every BPF fd).
//! Failures are [`BpfError`]s: the command, the `errno` and, for loads, the kernel's log.
//!
//! The `bpf(2)` system call is issued directly (rustix does not wrap it) on x86_64, aarch64
//! and riscv64.
//!
//! ```no_run
//! use std::os::fd::AsFd;
//! use bpf_ringbuf_sys::{map_create, map_info, MapCreate, MapType};
//!
//! let ring = map_create(&MapCreate::new(MapType::RINGBUF, 0, 0, 64 * 1024))?;
//! let info = map_info(ring.as_fd())?;
//! assert_eq!(info.map_type(), MapType::RINGBUF);
//! # Ok::<(), bpf_ringbuf_sys::BpfError>(())
//! ```

#![deny(missing_docs, unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod abi;
mod command;
mod error;
pub mod event;
mod map;
mod mmap;
mod obj;
mod syscall;

pub use abi::{MapInfo, OBJ_NAME_LEN};
pub use command::Command;
pub use error::BpfError;
pub use map::{
    map_create, map_get_fd_by_id, map_info, map_lookup_elem, map_update_elem, possible_cpus,
    MapCreate, MapFlags, MapType,
};
pub use mmap::Mapping;
pub use obj::{obj_get, obj_pin};
/// The exact rustix this crate is built against (for `Errno`, `ProtFlags`, epoll, ...).
pub use rustix;
pub use rustix::io::Errno;

/// The system page size (the unit of ring buffer mappings).
pub fn page_size() -> usize {
    rustix::param::page_size()
}
