//! Waiting in the tokio runtime (feature `tokio`): [`AsyncRingBuf`] for reading,
//! [`AsyncUserRingBuf`] for writing.
//!
//! Both register the map's own fd with tokio's reactor through
//! [`AsyncFd`](::tokio::io::unix::AsyncFd), which owns the ring, so the registration and the
//! ring cannot come apart. tokio's epoll is edge-triggered, which is what a ring needs. Before
//! every await they make the check before sleeping, after clearing tokio's readiness, never
//! before: [`guide::waiting`](crate::guide::waiting), "Async readiness", says why.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use ::tokio::io::unix::AsyncFd;
use ::tokio::io::Interest;

use super::mapping::RingMapping;
use super::ringbuf::RingBuf;
use super::user::UserRingBuf;
use super::wait::WaitStats;
use crate::consumer::Batch;
use crate::geometry::Readiness;
use crate::producer::{Reservation, ReserveError};
use crate::Error;

/// A ring handed to tokio's reactor: `AsyncFd` wants `AsRawFd`.
#[derive(Debug)]
struct Registered<T>(T);

impl<T: AsFd> Registered<T> {
    /// Registers `ring` with the current reactor for `interest`.
    fn register(ring: T, interest: Interest) -> Result<AsyncFd<Self>, Error> {
        // SAFETY: the fd is the map fd held inside the ring's mapping: open for as long as the
        // ring lives, never replaced (no method of the front-end types swaps or reopens their
        // mapping, and the ring moves into the `AsyncFd`, which lends it only to this module),
        // so every `as_raw_fd` returns the same open descriptor of the same file description
        // until the `AsyncFd` is dropped or `into_inner` gives the ring back.
        unsafe { AsyncFd::register_with_interest(Self(ring), interest) }
            .map_err(|error| Error::Io(error.into_parts().1))
    }
}

impl<T: AsFd> AsRawFd for Registered<T> {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A [`RingBuf`] read from async code: waits through tokio's reactor, never loses a wakeup,
/// and hands out zero-copy [batches](AsyncRingBuf::next_batch).
///
/// Create it inside a tokio runtime (it registers with the current reactor). A stream of
/// batches is a loop over [`next_batch`](AsyncRingBuf::next_batch): each batch borrows the
/// ring, which a `futures::Stream` item cannot, so there is no `Stream` impl; for owned
/// records, copy them out of the batch.
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
///         let record: &[u8] = record?;
///         println!("{} bytes", record.len());
///     }
/// } // each batch publishes consumer_pos when dropped
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncRingBuf {
    /// The ring, registered with tokio's reactor for reading.
    fd: AsyncFd<Registered<RingBuf>>,
    /// Counters of the awaits (the ring's own counters are of its own epoll waits).
    stats: WaitStats,
}

impl AsyncRingBuf {
    /// Registers `ring` with the current tokio reactor.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the fd cannot be registered.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as every tokio I/O type does).
    pub fn new(ring: RingBuf) -> Result<Self, Error> {
        Ok(Self {
            fd: Registered::register(ring, Interest::READABLE)?,
            stats: WaitStats::default(),
        })
    }

    /// Waits until a committed record can be read (or the ring is corrupt, which the next
    /// read reports).
    ///
    /// Before every await it runs [`RingBuf::check_before_sleep`], after clearing tokio's
    /// readiness, so no wakeup is lost and a BUSY head record does not make it spin
    /// ([`guide::waiting`](crate::guide::waiting)).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the reactor fails.
    pub async fn readable(&mut self) -> Result<(), Error> {
        loop {
            if self.fd.get_ref().0.check_before_sleep() == Readiness::Readable {
                return Ok(());
            }
            self.stats.sleeps += 1;
            let mut guard = self.fd.readable_mut().await.map_err(Error::Io)?;
            self.stats.wakeups += 1;
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
        Ok(self.fd.get_mut().0.batch())
    }

    /// Waits for records, then calls `f` with each, as [`RingBuf::consume`] does; returns how
    /// many it delivered (at least one, unless `budget` is 0).
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
        let ring = &mut self.fd.get_mut().0;
        let map_id = ring.map_id();
        ring.consume(budget, f).map_err(|error| Error::Read {
            map_id: Some(map_id),
            error,
        })
    }

    /// The ring.
    pub fn get_ref(&self) -> &RingBuf {
        &self.fd.get_ref().0
    }

    /// Counters of this reader's awaits: `sleeps` counts the times it awaited tokio's
    /// readiness, `wakeups` the readiness events it got.
    pub fn wait_stats(&self) -> WaitStats {
        self.stats
    }

    /// Deregisters from the reactor and gives the ring back (to read or recover it
    /// synchronously; wrap it again afterwards).
    pub fn into_inner(self) -> RingBuf {
        self.fd.into_inner().0
    }
}

impl AsFd for AsyncRingBuf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.get_ref().map_fd()
    }
}

/// A [`UserRingBuf`] written from async code: [`reserve`](AsyncUserRingBuf::reserve) waits
/// through tokio's reactor until the kernel's drain has made room.
///
/// It checks for room before every await and after clearing every readiness event, as
/// [`AsyncRingBuf`] does for data. Create it inside a tokio runtime; it is cancel-safe.
///
/// ```no_run
/// # async fn run() -> Result<(), bpf_ringbuf::Error> {
/// use bpf_ringbuf::{AsyncUserRingBuf, UserRingBuf};
///
/// let ring = AsyncUserRingBuf::new(UserRingBuf::from_pinned("/sys/fs/bpf/commands")?)?;
/// let mut command = ring.reserve(16).await?; // waits for room
/// command.fill(0x2a);
/// command.submit();
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AsyncUserRingBuf {
    /// The ring, registered with tokio's reactor for writing.
    fd: AsyncFd<Registered<UserRingBuf>>,
}

impl AsyncUserRingBuf {
    /// Registers `ring` with the current tokio reactor.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the fd cannot be registered.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new(ring: UserRingBuf) -> Result<Self, Error> {
        Ok(Self {
            fd: Registered::register(ring, Interest::WRITABLE)?,
        })
    }

    /// Reserves a record with a `len`-byte payload, waiting for room as long as it takes.
    ///
    /// # Errors
    ///
    /// [`Error::Reserve`] at once for any [`ReserveError`] but
    /// [`NoSpace`](ReserveError::NoSpace) (a sample larger than the ring never fits);
    /// [`Error::Io`] if the reactor fails.
    pub async fn reserve(&self, len: usize) -> Result<Reservation<'_, RingMapping>, Error> {
        let ring = &self.fd.get_ref().0;
        loop {
            let needed = match ring.reserve(len) {
                Err(ReserveError::NoSpace { needed, .. }) => needed,
                other => return Ok(other?),
            };
            if ring.check_before_sleep()? >= needed {
                continue;
            }
            let mut guard = self.fd.writable().await.map_err(Error::Io)?;
            // Clear first, look again (at the top of the loop) second.
            guard.clear_ready();
        }
    }

    /// The ring (its `reserve` does not wait).
    pub fn get_ref(&self) -> &UserRingBuf {
        &self.fd.get_ref().0
    }

    /// Deregisters from the reactor and gives the ring back.
    pub fn into_inner(self) -> UserRingBuf {
        self.fd.into_inner().0
    }
}

impl AsFd for AsyncUserRingBuf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.get_ref().map_fd()
    }
}
