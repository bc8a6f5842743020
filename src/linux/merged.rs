//! Per-CPU rings read as one stream in key order: the front end of [`crate::merge`].
//!
//! The ordering lives in the core ([`Merge`]); this file only reads the clock, sleeps through
//! the front end's one waiting engine ([`Sleeper`]: edge-triggered epoll; publish, full fence,
//! look again before every sleep), and adds one deadline of its own: the moment a record held
//! back for a quiet ring may be released.

use std::io;
use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};
use std::vec::Vec;

use rustix::time::{clock_gettime, ClockId};

use super::flush::{Flusher, WaitOutcome};
use super::mapping::{RingKind, RingMapping};
use super::poller::PollOutcome;
use super::ringbuf::RingBuf;
use super::wait::{deadline_after, Sleeper, WaitStats};
use crate::consumer::{Consumer, Stats};
use crate::merge::{
    Merge, MergeReadiness, MergeRing, MergeRound, MergeStats, MergedRecord, Source, Token,
};
use crate::{Error, ReadError};

/// The merge reaches a `RingBuf`'s consumer here, and nowhere else.
impl Source for RingBuf {
    type Memory = RingMapping;

    fn consumer(&self, _: Token) -> &Consumer<RingMapping> {
        self.consumer()
    }

    fn consumer_mut(&mut self, _: Token) -> &mut Consumer<RingMapping> {
        self.consumer_mut()
    }
}

/// The clock a [`MergedReader`]'s keys come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyClock {
    /// `CLOCK_MONOTONIC`: what `bpf_ktime_get_ns()` returns.
    #[default]
    Monotonic,
    /// `CLOCK_BOOTTIME`: what `bpf_ktime_get_boot_ns()` returns (it keeps counting while
    /// the system is suspended).
    Boottime,
}

impl KeyClock {
    /// The clock now, in nanoseconds.
    pub fn now(self) -> u64 {
        let id = match self {
            Self::Monotonic => ClockId::Monotonic,
            Self::Boottime => ClockId::Boottime,
        };
        let time = clock_gettime(id);
        // Both clocks start at boot, so the seconds are small and positive.
        (time.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(time.tv_nsec as u64)
    }
}

/// Several RINGBUFs (typically one per CPU) read as one stream, zero-copy, in the order of a
/// key each record carries: a `bpf_ktime_get_ns()` stamp at a known offset, say.
///
/// A record is released only when no ring can still deliver an earlier key: every other ring
/// has a committed record with a later (or equal) key, or was seen with nothing committed at
/// least `lateness` after the record's key was stamped. The exact rule and guarantee are in
/// [`crate::merge`]; [`guide::merging`](crate::guide::merging) explains the trade-off between
/// latency and order. `lateness` must cover the delay between a program's stamp and its commit
/// (a program that stamps, reserves and submits straight away needs microseconds; leave room
/// for interrupts); a ring that stays silent holds every other ring's records back by that much.
///
/// Waiting is [`RingBuf`]'s: edge-triggered epoll over every ring's map fd, and before every
/// sleep each ring that could unblock the merge is published, fenced and looked at again; the
/// sleep also ends when a record held back for a quiet ring becomes due. Flush and close
/// ([`flusher`](MergedReader::flusher)) end with a drain that releases what is held back.
///
/// The reader owns its rings and lends them out only shared ([`ring`](MergedReader::ring)), as
/// [`Poller`](crate::Poller) does; a corrupt ring is reported as [`Error::Read`] with its map
/// id, and [`resume`](MergedReader::resume), [`follow`](MergedReader::follow) or
/// [`resync`](MergedReader::resync) recovers it in place, as on a [`RingBuf`].
///
/// # Examples
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bpf_ringbuf::merge::u64_key_at;
/// use bpf_ringbuf::{MergedReader, PollOutcome, RingBuf};
/// use std::ops::ControlFlow;
/// use std::time::Duration;
///
/// // One ring per CPU; every record starts with its bpf_ktime_get_ns() stamp.
/// let rings = (0..2)
///     .map(|cpu| RingBuf::from_pinned(format!("/sys/fs/bpf/events_{cpu}")))
///     .collect::<Result<Vec<_>, _>>()?;
/// let mut reader = MergedReader::new(rings, u64_key_at(0), Duration::from_millis(1))?;
/// loop {
///     let outcome = reader.poll(Some(Duration::from_secs(1)), |record| {
///         println!("{} from ring {}: {} bytes", record.key, record.ring, record.data.len());
///         ControlFlow::Continue(())
///     })?;
///     if outcome == PollOutcome::Closed {
///         break;
///     }
/// }
/// # Ok(()) }
/// ```
pub struct MergedReader<K> {
    rings: Vec<MergeRing<RingBuf>>,
    merge: Merge<K>,
    /// The epoll set watching every ring's map fd (token: the map id).
    sleeper: Sleeper,
    clock: KeyClock,
    budget: usize,
    /// A flush or close the waiter reported: the next polls drain before reporting it.
    ending: Option<WaitOutcome>,
}

/// The largest lateness [`MergedReader`] accepts: the key clock is in nanoseconds.
const MAX_LATENESS: Duration = Duration::from_secs(1 << 32);

impl<K: Fn(&[u8]) -> u64> MergedReader<K> {
    /// Records released per [`poll`](MergedReader::poll), unless
    /// [`set_budget`](MergedReader::set_budget) changes it.
    pub const DEFAULT_BUDGET: usize = 1024;

    /// A reader over `rings` (ring `i` of [`MergedRecord::ring`] is the `i`-th), ordering by
    /// `key`, which allows a record to be committed up to `lateness` after its key was read
    /// from the clock ([`KeyClock::Monotonic`] unless [`set_clock`](Self::set_clock) says
    /// otherwise).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `rings` is empty (`InvalidInput`), if `lateness` is above 2^32 s, or if
    /// the epoll set cannot be created.
    pub fn new(
        rings: impl IntoIterator<Item = RingBuf>,
        key: K,
        lateness: Duration,
    ) -> Result<Self, Error> {
        let rings: Vec<MergeRing<RingBuf>> = rings.into_iter().map(MergeRing::new).collect();
        if rings.is_empty() {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a merged reader needs at least one ring",
            )));
        }
        let lateness = lateness_nanos(lateness)?;
        let sleeper = Sleeper::new()?;
        for ring in &rings {
            // A signal of any ring is a reason to look at the merge: the token is not needed.
            let ring = ring.get();
            sleeper.watch(ring.map_fd(), ring.map_id(), RingKind::Ring.interest())?;
        }
        Ok(Self {
            rings,
            merge: Merge::new(key, lateness),
            sleeper,
            clock: KeyClock::default(),
            budget: Self::DEFAULT_BUDGET,
            ending: None,
        })
    }

    /// A round over the rings at the current clock: records lent zero-copy in key order until
    /// no more can be released; each ring's `consumer_pos` is published when it is dropped
    /// (see [`MergeRound`]).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use bpf_ringbuf::{merge::u64_key_at, MergedReader, RingBuf};
    /// # use std::time::Duration;
    /// # let rings = vec![RingBuf::from_map_id(42)?, RingBuf::from_map_id(43)?];
    /// let mut reader = MergedReader::new(rings, u64_key_at(0), Duration::from_millis(1))?;
    /// while reader.wait(Some(Duration::from_secs(1)))?.is_ready() {
    ///     let round = reader.round();
    ///     let records = round.iter().collect::<Result<Vec<_>, _>>()?; // all held at once
    ///     println!("{} records, the last stamped {:?}", records.len(), records.last().map(|r| r.key));
    /// }
    /// # Ok(()) }
    /// ```
    pub fn round(&mut self) -> MergeRound<'_, RingBuf, K> {
        let now = self.clock.now();
        self.merge.round(&mut self.rings, now)
    }

    /// A round that releases every committed record in key order without holding any back
    /// for quiet rings (see [`Merge::drain`]).
    pub fn drain(&mut self) -> MergeRound<'_, RingBuf, K> {
        let now = self.clock.now();
        self.merge.drain(&mut self.rings, now)
    }

    /// Waits until a round can release a record, `timeout` passes (`None`: no limit), or a
    /// [`Flusher`] flushes or closes this reader; see [`WaitOutcome`].
    ///
    /// Before every sleep it runs [`Merge::check_before_sleep`]: a full fence and a look at
    /// every ring that showed no committed record (they were published when the last round
    /// ended, so a commit there signals the map fd). A record held back for a quiet ring
    /// becomes due when the clock reaches its key plus the lateness: the sleep ends then.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `epoll_wait` fails.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<WaitOutcome, Error> {
        self.wait_deadline(deadline_after(timeout))
    }

    /// As [`wait`](Self::wait), with a deadline instead of a timeout (`None`: no limit).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `epoll_wait` fails.
    pub fn wait_deadline(&mut self, deadline: Option<Instant>) -> Result<WaitOutcome, Error> {
        let Self {
            rings,
            merge,
            sleeper,
            clock,
            ..
        } = self;
        loop {
            let now = clock.now();
            let until = match merge.check_before_sleep(rings, now) {
                MergeReadiness::Ready => return Ok(WaitOutcome::Ready),
                MergeReadiness::Sleep { until } => until,
            };
            let due = until.and_then(|until| {
                Instant::now().checked_add(Duration::from_nanos(until.saturating_sub(now)))
            });
            let sleep_until = match (deadline, due) {
                (Some(deadline), Some(due)) => Some(deadline.min(due)),
                (deadline, None) => deadline,
                (None, due) => due,
            };
            let outcome = sleeper.wait(sleep_until, || {
                merge.check_before_sleep(rings, clock.now()) == MergeReadiness::Ready
            })?;
            let caller_deadline_passed =
                deadline.is_some_and(|deadline| Instant::now() >= deadline);
            if outcome != WaitOutcome::TimedOut || caller_deadline_passed {
                return Ok(outcome);
            }
            // The held record is due: look again.
        }
    }

    /// Waits up to `timeout` (`None`: no limit) for records, then calls `f` with each, zero
    /// copy, in key order, at most the [budget](Self::set_budget) of them; publishes every
    /// ring's `consumer_pos` once before returning. `f` may stop early with
    /// [`ControlFlow::Break`].
    ///
    /// After a [flush or close](Self::flusher) it drains: records held back for quiet rings are
    /// released (in key order among themselves), then [`PollOutcome::Flushed`] or
    /// [`PollOutcome::Closed`] is reported.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `epoll_wait` fails; [`Error::Read`] with the map id of a ring that is
    /// corrupt (records released before it were passed to `f`): [`resume`](Self::resume) it
    /// after [`ReadError::ConsumerPosMoved`], [`resync`](Self::resync) it otherwise.
    pub fn poll<F>(&mut self, timeout: Option<Duration>, f: F) -> Result<PollOutcome, Error>
    where
        F: FnMut(MergedRecord<'_>) -> ControlFlow<()>,
    {
        self.poll_deadline(deadline_after(timeout), f)
    }

    /// As [`poll`](Self::poll), with a deadline (`None`: no limit).
    ///
    /// # Errors
    ///
    /// As for [`poll`](Self::poll).
    pub fn poll_deadline<F>(
        &mut self,
        deadline: Option<Instant>,
        mut f: F,
    ) -> Result<PollOutcome, Error>
    where
        F: FnMut(MergedRecord<'_>) -> ControlFlow<()>,
    {
        loop {
            let records = self.deliver(self.ending.is_some(), &mut f)?;
            if records > 0 {
                return Ok(PollOutcome::Ready {
                    records,
                    writable: 0,
                });
            }
            if let Some(end) = self.ending.take() {
                return Ok(match end {
                    WaitOutcome::Closed => PollOutcome::Closed,
                    _ => PollOutcome::Flushed,
                });
            }
            match self.wait_deadline(deadline)? {
                WaitOutcome::Ready => {}
                WaitOutcome::TimedOut => return Ok(PollOutcome::TimedOut),
                end => self.ending = Some(end),
            }
        }
    }

    /// One round (or drain) of at most the budget, passing each record to `f`.
    fn deliver<F>(&mut self, draining: bool, f: &mut F) -> Result<usize, Error>
    where
        F: FnMut(MergedRecord<'_>) -> ControlFlow<()>,
    {
        let now = self.clock.now();
        let round = if draining {
            self.merge.drain(&mut self.rings, now)
        } else {
            self.merge.round(&mut self.rings, now)
        };
        let mut records = 0;
        let mut failed = None;
        while records < self.budget {
            match round.next_record() {
                Some(Ok(record)) => {
                    records += 1;
                    if f(record).is_break() {
                        break;
                    }
                }
                Some(Err(error)) => {
                    failed = Some(error);
                    break;
                }
                None => break,
            }
        }
        drop(round);
        match failed {
            None => Ok(records),
            Some(error) => Err(Error::Read {
                map_id: Some(self.rings[error.ring].get().map_id()),
                error: error.error,
            }),
        }
    }

    /// After an [`Error::Read`] with [`ReadError::ConsumerPosMoved`] naming the ring with map
    /// id `map_id`: publishes that ring's own cursor again and continues from it, losing
    /// nothing (see [`Consumer::resume`]). `None` if no ring of this reader has that map id.
    ///
    /// # Errors
    ///
    /// As [`Consumer::resume`]: [`ReadError::ConsumerAhead`] if the producer may have reused
    /// the space after the cursor; then [`resync`](Self::resync).
    pub fn resume(&mut self, map_id: u32) -> Option<Result<(), ReadError>> {
        let index = self.index_of(map_id)?;
        Some(self.rings[index].get_mut().resume())
    }

    /// After [`ReadError::ConsumerPosMoved`]: adopts the `consumer_pos` another writer stored
    /// in the ring with map id `map_id` (see [`Consumer::follow`]). Returns `false` if no
    /// ring of this reader has that map id.
    pub fn follow(&mut self, map_id: u32) -> bool {
        let Some(index) = self.index_of(map_id) else {
            return false;
        };
        self.rings[index].get_mut().follow();
        true
    }

    /// Moves the `consumer_pos` of the ring with map id `map_id` to its `producer_pos`,
    /// dropping what it holds (see [`Consumer::resync`]); the way out after an
    /// [`Error::Read`] naming a corrupt ring. Returns the bytes skipped, or `None` if no ring
    /// of this reader has that map id.
    pub fn resync(&mut self, map_id: u32) -> Option<usize> {
        let index = self.index_of(map_id)?;
        Some(self.rings[index].get_mut().resync())
    }

    /// The index ([`MergedRecord::ring`]) of the ring with map id `map_id`.
    pub fn index_of(&self, map_id: u32) -> Option<usize> {
        self.rings
            .iter()
            .position(|ring| ring.get().map_id() == map_id)
    }

    /// Records released per [`poll`](Self::poll) at most (and so between two publishes of
    /// `consumer_pos`); at least 1.
    pub fn set_budget(&mut self, budget: usize) {
        self.budget = budget.max(1);
    }

    /// The lateness allowed between a record's key and its commit.
    pub fn lateness(&self) -> Duration {
        Duration::from_nanos(self.merge.lateness())
    }

    /// Changes the lateness.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] (`InvalidInput`) if it is above 2^32 s.
    pub fn set_lateness(&mut self, lateness: Duration) -> Result<(), Error> {
        self.merge.set_lateness(lateness_nanos(lateness)?);
        Ok(())
    }

    /// Which clock the keys come from (`CLOCK_MONOTONIC` unless set).
    pub fn clock(&self) -> KeyClock {
        self.clock
    }

    /// Sets the clock the keys come from: it must be the one the BPF programs stamp with.
    pub fn set_clock(&mut self, clock: KeyClock) {
        self.clock = clock;
    }

    /// Makes every wait look at the rings at least every `interval` even without a wakeup
    /// (for producers that commit with `BPF_RB_NO_WAKEUP`); see
    /// [`RingBuf::set_periodic_drain`].
    pub fn set_periodic_drain(&mut self, interval: Option<Duration>) {
        self.sleeper.periodic_drain = interval;
    }

    /// A handle that wakes this reader from another thread: see [`Flusher`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the eventfd cannot be created or added to the epoll set.
    pub fn flusher(&mut self) -> Result<Flusher, Error> {
        self.sleeper.flusher()
    }

    /// Counters of the merge: records, how many came out of order, future keys, waits for a
    /// quiet ring.
    pub fn merge_stats(&self) -> MergeStats {
        self.merge.stats()
    }

    /// Read accounting summed over the rings (see [`Stats`]).
    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for ring in &self.rings {
            total.add(&ring.get().stats());
        }
        total
    }

    /// Counters of this reader's sleeps and wakeups.
    pub fn wait_stats(&self) -> WaitStats {
        self.sleeper.stats
    }

    /// Ring `index`, if there is one.
    pub fn ring(&self, index: usize) -> Option<&RingBuf> {
        self.rings.get(index).map(MergeRing::get)
    }

    /// Number of rings.
    pub fn len(&self) -> usize {
        self.rings.len()
    }

    /// Whether there are no rings (never: [`new`](Self::new) needs one).
    pub fn is_empty(&self) -> bool {
        self.rings.is_empty()
    }

    /// Gives the rings back, in order. Records held back stay in them.
    pub fn into_rings(self) -> Vec<RingBuf> {
        self.rings.into_iter().map(MergeRing::into_inner).collect()
    }

    /// The edge-triggered epoll fd the reader sleeps on (readable when a ring is signalled),
    /// to nest it in another event loop; a record held back also needs the clock, see
    /// [`Merge::check_before_sleep`].
    pub fn epoll_fd(&self) -> BorrowedFd<'_> {
        self.sleeper.epoll_fd()
    }
}

fn lateness_nanos(lateness: Duration) -> Result<u64, Error> {
    if lateness > MAX_LATENESS {
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a merged reader's lateness must be at most 2^32 seconds",
        )));
    }
    Ok(lateness.as_nanos() as u64)
}

impl<K> std::fmt::Debug for MergedReader<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MergedReader")
            .field("rings", &self.rings.len())
            .field("merge", &self.merge)
            .field("clock", &self.clock)
            .field("budget", &self.budget)
            .finish()
    }
}

impl<K> AsFd for MergedReader<K> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sleeper.epoll_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_reader_is_send() {
        fn send<T: Send>() {}
        send::<MergedReader<fn(&[u8]) -> u64>>();
    }

    #[test]
    fn the_key_clocks_tick() {
        for clock in [KeyClock::Monotonic, KeyClock::Boottime] {
            let first = clock.now();
            let second = clock.now();
            assert!(first > 0 && second >= first, "{clock:?}");
        }
    }
}
