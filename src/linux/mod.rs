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

/// The kernel-interface types this crate's API names: the error of a refused `bpf(2)` command
/// ([`Error::Bpf`], [`OpenError::Bpf`]) with its command and `errno`, and the map type an
/// [`OpenError::WrongMapType`] reports. They come from `bpf-ringbuf-sys`, the crate's syscall
/// layer; nothing else of it is part of this crate's API.
pub mod sys {
    pub use bpf_ringbuf_sys::{BpfError, Command, Errno, MapType};
}
