//! The Linux front end: opening ring maps, mapping them, waiting for data.
//!
//! The kernel operations themselves (bpf(2), mmap, epoll) come from `bpf-ringbuf-sys`; this
//! module joins them with the protocol core.

mod error;
mod mapping;
mod ringbuf;
mod user;
mod wait;

pub use error::Error;
pub use mapping::{MapKind, RingMapping};
pub use ringbuf::RingBuf;
pub use user::UserRingBuf;
pub use wait::WaitStats;

/// The kernel interface crate, re-exported so users name the same types (`MapType`,
/// `BpfError`, ...) this crate uses.
pub use bpf_ringbuf_sys as sys;
