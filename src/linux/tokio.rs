//! Waiting in the tokio runtime (feature `tokio`): [`AsyncRingBuf`] for reading,
//! [`AsyncSpaceWaiter`] for user rings waiting for space.
//!
//! Both register the map's own fd with tokio's reactor through
//! [`AsyncFd`](::tokio::io::unix::AsyncFd). tokio's epoll is edge-triggered, which is what a
//! ring needs (a BUSY head record keeps the fd level-ready; see `docs/waiting.md`), so there
//! is no point nesting the ring's own epoll set: it would add a second edge to reason about
//! and a syscall per wakeup.
//!
//! Edge triggering makes the ring's lost-wakeup rule the reader's job: the kernel signals a
//! commit only if the reader had *published* a `consumer_pos` equal to the record's position,
//! so records committed while a batch was being read raise no signal. Before every await the
//! reader therefore publishes (every batch does when it ends), fences and looks at the ring
//! again ([`check_before_sleep`](crate::Consumer::check_before_sleep)). It clears tokio's
//! readiness before that look, never after, so a signal that lands in between sets the
//! readiness again (tokio also tags readiness with a tick and ignores a clear from a guard
//! older than the latest event, which protects the other order too).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use ::tokio::io::unix::AsyncFd;
use ::tokio::io::Interest;

use super::mapping::RingMapping;
use super::poller::SpaceWaiter;
use super::ringbuf::RingBuf;
use crate::consumer::{Batch, Readiness};
use crate::Error;

fn register(fd: BorrowedFd<'_>, interest: Interest) -> Result<AsyncFd<OwnedFd>, Error> {
    let fd = rustix::io::fcntl_dupfd_cloexec(fd, 0)?;
    // SAFETY: `fd` is an `OwnedFd` we just duplicated and hand over to the `AsyncFd`: it stays
    // open, and names the same file description, until the `AsyncFd` drops it.
    unsafe { AsyncFd::register_with_interest(fd, interest) }
        .map_err(|error| Error::Io(error.into()))
}

/// A [`RingBuf`] read from async code: waits through tokio's reactor, never loses a wakeup,
/// and hands out zero-copy [batches](AsyncRingBuf::next_batch).
///
/// `AsyncRingBuf` dereferences to its `RingBuf`, so every synchronous read works on it too.
/// Create it inside a tokio runtime (it registers with the current reactor).
///
/// A stream of batches is a loop over [`next_batch`](AsyncRingBuf::next_batch): each batch
/// borrows the ring, which a `futures::Stream` item cannot, so there is no `Stream` impl; for
/// owned records, copy them out of the batch.
///
/// Every method is cancel-safe: dropping the future (in `select!`, `timeout`, on shutdown)
/// loses no record. That is also how to stop a reader and how to bound a wait; for records
/// committed with `BPF_RB_NO_WAKEUP`, wait with `tokio::time::timeout(interval, ..)` so the
/// next call looks at the ring again.
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), bpf_ringbuf::Error> {
/// use bpf_ringbuf::{AsyncRingBuf, RingBuf};
///
/// let mut ring = AsyncRingBuf::new(RingBuf::from_pinned("/sys/fs/bpf/events")?)?;
/// loop {
///     let batch = ring.next_batch().await?;
///     for record in &batch {
///         let record: &[u8] = record.map_err(|error| bpf_ringbuf::Error::Read {
///             ring: None,
///             error,
///         })?;
///         println!("{} bytes", record.len());
///     }
/// } // each batch publishes consumer_pos when dropped
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncRingBuf {
    ring: RingBuf,
    /// A duplicate of the map fd, registered with tokio's reactor for reading.
    fd: AsyncFd<OwnedFd>,
}

impl AsyncRingBuf {
    /// Registers `ring` with the current tokio reactor.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the fd cannot be duplicated or registered.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as every tokio I/O type does).
    pub fn new(ring: RingBuf) -> Result<Self, Error> {
        let fd = register(ring.map_fd(), Interest::READABLE)?;
        Ok(Self { ring, fd })
    }

    /// Waits until a committed record can be read (or the ring is corrupt, which the next
    /// read reports).
    ///
    /// Before every await it runs [`check_before_sleep`](crate::Consumer::check_before_sleep)
    /// (publish, fence, look: records committed while the last batch was read raised no
    /// signal, and are found here), and after every readiness event it clears tokio's
    /// readiness *before* that check: a commit either happens before the check, which sees
    /// it, or after the clear, and then its wakeup sets the readiness again. A BUSY head
    /// record does not make it spin.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the reactor fails.
    pub async fn readable(&mut self) -> Result<(), Error> {
        loop {
            if self.ring.check_before_sleep() == Readiness::Readable {
                return Ok(());
            }
            self.ring.waiter_stats_mut().sleeps += 1;
            let mut guard = self.fd.readable().await.map_err(Error::Io)?;
            self.ring.waiter_stats_mut().wakeups += 1;
            // Clear first, check (at the top of the loop) second: see above.
            guard.clear_ready();
        }
    }

    /// Waits for records, then lends them zero-copy (see [`Batch`]); the batch publishes
    /// `consumer_pos` when dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the reactor fails.
    pub async fn next_batch(&mut self) -> Result<Batch<'_, RingMapping>, Error> {
        self.readable().await?;
        Ok(self.ring.batch())
    }

    /// Waits for records, then calls `f` with each, as
    /// [`Consumer::consume`](crate::Consumer::consume) does; returns how many it delivered
    /// (at least one, unless `budget` is 0).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the reactor fails; [`Error::Read`] if the ring is corrupt.
    pub async fn consume<F>(&mut self, budget: usize, f: F) -> Result<usize, Error>
    where
        F: FnMut(&[u8]) -> core::ops::ControlFlow<()>,
    {
        if budget == 0 {
            return Ok(0);
        }
        self.readable().await?;
        self.ring
            .consume(budget, f)
            .map_err(|error| Error::Read { ring: None, error })
    }

    /// The ring.
    pub fn get_ref(&self) -> &RingBuf {
        &self.ring
    }

    /// The ring, to read it synchronously.
    pub fn get_mut(&mut self) -> &mut RingBuf {
        &mut self.ring
    }

    /// Deregisters from the reactor and gives the ring back.
    pub fn into_inner(self) -> RingBuf {
        self.ring
    }
}

impl std::ops::Deref for AsyncRingBuf {
    type Target = RingBuf;

    fn deref(&self) -> &RingBuf {
        &self.ring
    }
}

impl std::ops::DerefMut for AsyncRingBuf {
    fn deref_mut(&mut self) -> &mut RingBuf {
        &mut self.ring
    }
}

/// Waits, in async code, until a user ring (`BPF_MAP_TYPE_USER_RINGBUF`) has space: the map's
/// fd is registered with tokio's reactor for writing, and [`SpaceWaiter::has_space`] is asked
/// before every await and after clearing every readiness event, as [`AsyncRingBuf`] does.
#[derive(Debug)]
pub struct AsyncSpaceWaiter<W: SpaceWaiter> {
    writer: W,
    fd: AsyncFd<OwnedFd>,
}

impl<W: SpaceWaiter> AsyncSpaceWaiter<W> {
    /// Registers `writer`'s fd with the current tokio reactor.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the fd cannot be duplicated or registered.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as every tokio I/O type does).
    pub fn new(writer: W) -> Result<Self, Error> {
        let fd = register(writer.fd(), Interest::WRITABLE)?;
        Ok(Self { writer, fd })
    }

    /// Waits until [`SpaceWaiter::has_space`] holds. Cancel-safe.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the reactor fails.
    pub async fn writable(&mut self) -> Result<&mut W, Error> {
        loop {
            if self.writer.has_space() {
                return Ok(&mut self.writer);
            }
            let mut guard = self.fd.writable().await.map_err(Error::Io)?;
            guard.clear_ready();
        }
    }

    /// The writer.
    pub fn get_ref(&self) -> &W {
        &self.writer
    }

    /// The writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.writer
    }

    /// Deregisters from the reactor and gives the writer back.
    pub fn into_inner(self) -> W {
        self.writer
    }
}

impl<W: SpaceWaiter> AsFd for AsyncSpaceWaiter<W> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}

impl AsFd for AsyncRingBuf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.map_fd()
    }
}
