//! A [`UserRingBuf`] waiting for space, for the [`Poller`](crate::Poller) and the async
//! [`AsyncSpaceWaiter`](crate::AsyncSpaceWaiter) (feature `tokio`).

use std::os::fd::BorrowedFd;

use super::poller::SpaceWaiter;
use super::user::UserRingBuf;
use crate::header::record_size;

/// A [`UserRingBuf`] that wants room for a record of [`len`](UserRingSpace::len) payload
/// bytes: register it with a [`Poller`](crate::Poller) (`add_writer`) or wrap it in an
/// `AsyncSpaceWaiter` to learn when the kernel's drain has made that room.
///
/// Its [`has_space`](SpaceWaiter::has_space) is the producer's
/// [`check_before_sleep`](crate::Producer::check_before_sleep) (full fence, then the free
/// space). A ring whose positions are corrupt, or a length that can never fit, counts as
/// having space, so that the next [`reserve`](crate::Producer::reserve) reports the error
/// instead of a wait hiding it.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bpf_ringbuf::{PollOutcome, Poller, UserRingBuf, UserRingSpace};
/// use std::time::Duration;
///
/// let mut poller = Poller::new()?;
/// let commands = poller.add_writer(UserRingSpace::new(
///     UserRingBuf::from_pinned("/sys/fs/bpf/commands")?,
///     64,
/// ))?;
/// poller.poll(Some(Duration::from_secs(1)), |_, _| std::ops::ControlFlow::Continue(()))?;
/// if poller.writable().contains(&commands) {
///     let ring = poller.writer_mut::<UserRingSpace>(commands).unwrap().ring();
///     ring.output(&[0; 64])?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct UserRingSpace {
    ring: UserRingBuf,
    len: usize,
}

impl UserRingSpace {
    /// `ring`, waiting for room for a `len`-byte payload.
    pub fn new(ring: UserRingBuf, len: usize) -> Self {
        Self { ring, len }
    }

    /// The payload length it waits for room for.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it waits for room for an empty payload (a header alone).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Changes the payload length it waits for room for.
    pub fn set_len(&mut self, len: usize) {
        self.len = len;
    }

    /// The ring, to reserve in.
    pub fn ring(&self) -> &UserRingBuf {
        &self.ring
    }

    /// The ring.
    pub fn ring_mut(&mut self) -> &mut UserRingBuf {
        &mut self.ring
    }

    /// Gives the ring back.
    pub fn into_inner(self) -> UserRingBuf {
        self.ring
    }
}

impl SpaceWaiter for UserRingSpace {
    fn fd(&self) -> BorrowedFd<'_> {
        self.ring.map_fd()
    }

    fn has_space(&self) -> bool {
        if self.len > self.ring.max_len() {
            // Never fits: let `reserve` say so (`ReserveError::TooLarge`) instead of waiting.
            return true;
        }
        match self.ring.check_before_sleep() {
            Ok(available) => available >= record_size(self.len),
            Err(_) => true,
        }
    }
}
