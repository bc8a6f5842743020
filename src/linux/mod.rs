//! The Linux front end: opening ring maps, mapping them, waiting for data.
//!
//! The kernel operations themselves (bpf(2), mmap, epoll) come from `bpf-ringbuf-sys`; this
//! module joins them with the protocol core.

mod claim;
mod drops;
mod endpoint;
mod error;
mod flush;
mod mapping;
mod merged;
mod overwrite;
mod poller;
pub mod probe;
mod ringbuf;
#[cfg(feature = "tokio")]
mod tokio;
mod user;
mod wait;

pub use drops::DropCounter;
pub use error::{Error, MapSource, OpenError};
pub use flush::{Flusher, WaitOutcome};
pub use mapping::RingMapping;
pub use merged::{KeyClock, MergedReader};
pub use overwrite::OverwriteRingBuf;
pub use poller::{PollOutcome, Poller};
pub use probe::{Feature, Support};
pub use ringbuf::RingBuf;
#[cfg(feature = "tokio")]
pub use tokio::{AsyncRingBuf, AsyncUserRingBuf};
pub use user::UserRingBuf;
pub use wait::WaitStats;

/// The kernel interface crate, re-exported so users name the same types (`MapType`,
/// `BpfError`, ...) this crate uses.
pub use bpf_ringbuf_sys as sys;
