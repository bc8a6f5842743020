use std::cell::RefCell;
use std::time::Duration;

use super::endpoint::{endpoint_methods, sleeper_for, Endpoint};
use super::error::OpenError;
use super::mapping::{RingKind, RingMapping};
use super::wait::{deadline_after, Sleeper, Woke};
use crate::geometry::Positions;
use crate::producer::{Producer, Reservation, ReserveError, WriteBatch};
use crate::Error;

/// A `BPF_MAP_TYPE_USER_RINGBUF` map opened for writing: the user→kernel direction.
///
/// [`reserve`](UserRingBuf::reserve) a record, fill it through the [`Reservation`]
/// (`&mut [u8]` in the ring itself), then [`submit`](Reservation::submit) or
/// [`discard`](Reservation::discard) it (dropping it discards it). Several reservations may
/// be outstanding; the kernel drains them in reservation order once committed.
/// [`reserve_timeout`](UserRingBuf::reserve_timeout) waits for the kernel to free space.
///
/// Nothing drains the ring by itself: a BPF program calls `bpf_user_ringbuf_drain`, which
/// runs its callback for each committed sample.
///
/// The consumer page is mapped read-only (the kernel refuses a writable mapping), the
/// producer page and the data area read-write. One producer per map and process: opening a
/// second one fails with [`OpenError::InUse`](crate::OpenError::InUse) while the first
/// lives.
///
/// # Sharing between threads
///
/// The protocol has one producer, and so does this type: it is `Send` but not `Sync`
/// (reservations are handed out from the position it keeps in a `Cell`). To produce from
/// several threads, put it in a `Mutex` and hold the lock while a reservation is filled:
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bpf_ringbuf::UserRingBuf;
/// use std::sync::{Arc, Mutex};
///
/// let ring = Arc::new(Mutex::new(UserRingBuf::from_pinned("/sys/fs/bpf/commands")?));
/// let workers: Vec<_> = (0..4u8)
///     .map(|worker| {
///         let ring = ring.clone();
///         std::thread::spawn(move || {
///             let ring = ring.lock().unwrap();
///             ring.output(&[worker; 8]).unwrap();
///         })
///     })
///     .collect();
/// for worker in workers {
///     worker.join().unwrap();
/// }
/// # Ok(()) }
/// ```
///
/// # Examples
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bpf_ringbuf::UserRingBuf;
/// use std::time::Duration;
///
/// let ring = UserRingBuf::from_pinned("/sys/fs/bpf/commands")?;
/// let mut command = ring.reserve_timeout(16, Some(Duration::from_secs(1)))?;
/// command[..8].copy_from_slice(&42u64.to_ne_bytes());
/// command[8..].fill(0);
/// command.submit();
/// ring.output(b"a whole sample")?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct UserRingBuf {
    /// The producer over the mapping (which holds the map fd and the claim); never lent out
    /// mutably.
    producer: Producer<RingMapping>,
    /// The epoll set watching the map's fd for `EPOLLOUT`; a `RefCell` because reservations
    /// borrow the ring shared while `reserve_timeout` sleeps.
    sleeper: RefCell<Sleeper>,
}

impl Endpoint for UserRingBuf {
    const KIND: RingKind = RingKind::UserRing;

    fn from_mapping(mapping: RingMapping) -> Result<Self, OpenError> {
        // Before the first look at the free space: a drain after any look leaves an event for
        // the next sleep.
        let sleeper = sleeper_for(&mapping, Self::KIND)?;
        let geometry = mapping.geometry();
        // SAFETY: the mapping's claim makes this the only producer of the map in this process
        // for as long as the mapping lives, and the mapping (with the claim) moves into the
        // producer, which this type never lends out mutably; the producer page and data are
        // mapped read-write. The reader is the kernel's bpf_user_ringbuf_drain, which moves
        // consumer_pos only past samples it has finished. Another process mapping the same
        // map writable is outside what any mapping can rule out (docs/design.md).
        let producer = unsafe { Producer::from_geometry(mapping, geometry) };
        Ok(Self {
            producer,
            sleeper: RefCell::new(sleeper),
        })
    }
}

endpoint_methods!(UserRingBuf, "`BPF_MAP_TYPE_USER_RINGBUF`", |ring| ring
    .producer
    .memory());

impl UserRingBuf {
    /// Reserves a record with a `len`-byte payload, BUSY until committed. See
    /// [`Producer::reserve`].
    ///
    /// # Errors
    ///
    /// [`ReserveError::TooLarge`] for a size the kernel would refuse forever,
    /// [`ReserveError::NoSpace`] when the ring is too full now, or a corruption error.
    #[inline]
    pub fn reserve(&self, len: usize) -> Result<Reservation<'_, RingMapping>, ReserveError> {
        self.producer.reserve(len)
    }

    /// Reserves a record, copies `data` into it and submits it. See [`Producer::output`].
    ///
    /// # Errors
    ///
    /// As for [`reserve`](UserRingBuf::reserve).
    pub fn output(&self, data: &[u8]) -> Result<(), ReserveError> {
        self.producer.output(data)
    }

    /// Starts a batch of records written in place and published together: one
    /// `producer_pos` store for the lot. See [`Producer::batch`].
    ///
    /// # Errors
    ///
    /// A corruption error, as for [`reserve`](UserRingBuf::reserve).
    #[inline]
    pub fn batch(&mut self) -> Result<WriteBatch<'_, RingMapping>, ReserveError> {
        self.producer.batch()
    }

    /// Bytes a reservation can take now. See [`Producer::free_space`].
    ///
    /// # Errors
    ///
    /// A corruption error, as for [`reserve`](UserRingBuf::reserve).
    pub fn free_space(&self) -> Result<usize, ReserveError> {
        self.producer.free_space()
    }

    /// The longest payload a reservation can have in this ring. See [`Producer::max_len`].
    pub fn max_len(&self) -> usize {
        self.producer.max_len()
    }

    /// `consumer_pos` as the kernel last published it, and the `producer_pos` this producer
    /// published last.
    pub fn positions(&self) -> Positions {
        self.producer.positions()
    }

    /// The check before sleeping until the kernel frees space, in an event loop of your own;
    /// [`reserve_timeout`](UserRingBuf::reserve_timeout) runs it for you. See
    /// [`Producer::check_before_sleep`].
    ///
    /// # Errors
    ///
    /// A corruption error, as for [`reserve`](UserRingBuf::reserve).
    pub fn check_before_sleep(&self) -> Result<usize, ReserveError> {
        self.producer.check_before_sleep()
    }

    /// After [`ReserveError::ProducerPosMoved`]: adopt the other writer's `producer_pos`.
    /// See [`Producer::follow`].
    pub fn follow(&mut self) {
        self.producer.follow()
    }

    /// Reserves a record with a `len`-byte payload, waiting up to `timeout` (`None`: no
    /// limit) for the kernel to drain enough space.
    ///
    /// A straight loop: reserve; if there is no room, look again after a fence
    /// ([`check_before_sleep`](UserRingBuf::check_before_sleep)); if there is still none, sleep
    /// until the kernel signals `EPOLLOUT` after a `bpf_user_ringbuf_drain` that consumed a
    /// sample ([`guide::user_ringbuf`](crate::guide::user_ringbuf), "Waiting"). Space freed at
    /// any moment is either seen or signalled. The timeout is a deadline computed once.
    ///
    /// # Errors
    ///
    /// [`Error::Reserve`]: [`ReserveError::NoSpace`] when `timeout` passed without enough
    /// space; at once, any other [`ReserveError`] (a sample larger than the ring never
    /// fits). [`Error::Io`] if `epoll_wait` fails.
    pub fn reserve_timeout(
        &self,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<Reservation<'_, RingMapping>, Error> {
        let deadline = deadline_after(timeout);
        let mut woken = false;
        loop {
            let needed = match self.producer.reserve(len) {
                Err(ReserveError::NoSpace { needed, .. }) => needed,
                other => return Ok(other?),
            };
            if self.producer.check_before_sleep()? >= needed {
                // Freed between the two looks.
                continue;
            }
            let mut sleeper = self.sleeper.borrow_mut();
            if woken {
                sleeper.stats.spurious_wakeups += 1;
            }
            woken = false;
            if sleeper.sleep(deadline, |_| woken = true)? == Woke::TimedOut {
                // One last look: the time may have run out just as space was freed.
                return Ok(self.producer.reserve(len)?);
            }
        }
    }

    /// Counters of this ring's waits.
    pub fn wait_stats(&self) -> super::wait::WaitStats {
        self.sleeper.borrow().stats
    }
}
