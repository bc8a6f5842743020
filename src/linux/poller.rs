//! Waiting on many rings at once: one epoll set, a per-ring record budget, rings added and
//! removed at run time.

use std::any::Any;
use std::boxed::Box;
use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use std::vec::Vec;

use rustix::event::epoll;

use super::flush::{Flusher, WaitOutcome, WakeState};
use super::ringbuf::RingBuf;
use super::wait::{deadline_after, epoll_wait, next_sleep, WaitStats};
use crate::consumer::{Readiness, Stats};
use crate::Error;

/// epoll data of the flush/close eventfd; ring ids count up from 0 and never reach it.
const WAKE_TOKEN: u64 = u64::MAX;

/// Events taken from the epoll set per `epoll_wait`.
const EVENT_BATCH: usize = 64;

/// Names a ring in a [`Poller`]; ids are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RingId(u64);

impl RingId {
    /// The id as a number (unique within its poller).
    pub fn get(self) -> u64 {
        self.0
    }
}

/// A ring the [`Poller`] watches for free space: a `BPF_MAP_TYPE_USER_RINGBUF` producer
/// waiting for the kernel to drain records.
///
/// The poller registers [`fd`](SpaceWaiter::fd) for `EPOLLOUT`, edge-triggered, and asks
/// [`has_space`](SpaceWaiter::has_space) before every sleep and after every wakeup, as the
/// reader side does with [`check_before_sleep`](crate::Consumer::check_before_sleep).
pub trait SpaceWaiter: Send {
    /// The map's fd, which the kernel signals writable after `bpf_user_ringbuf_drain`
    /// consumed records.
    fn fd(&self) -> BorrowedFd<'_>;

    /// Whether the producer can write what it is waiting to write. Must issue a full fence
    /// before reading `consumer_pos`, so that a drain that happens after this returns `false`
    /// is signalled.
    fn has_space(&self) -> bool;
}

/// What one [`Poller::poll`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollOutcome {
    /// Records were delivered (`records` of them, at most the budget per ring), and/or
    /// `writable` user rings have space (see [`Poller::writable`]).
    Ready {
        /// Records passed to the callback.
        records: usize,
        /// User rings found to have space.
        writable: usize,
    },
    /// The timeout passed, or the deadline was reached, with nothing to deliver.
    TimedOut,
    /// A [`Flusher::flush`] was requested and every ring has been drained since.
    Flushed,
    /// A [`Flusher::close`] was requested and every ring has been drained.
    Closed,
}

enum Source {
    Reader(RingBuf),
    Writer(Box<dyn AnyWriter>),
}

/// A [`SpaceWaiter`] that can be given back as its own type.
trait AnyWriter: SpaceWaiter {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn as_any(&self) -> &dyn Any;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

impl<W: SpaceWaiter + 'static> AnyWriter for W {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

struct Entry {
    source: Source,
    /// In `pending`: signalled or found readable, not yet drained.
    pending: bool,
    /// The fd was signalled since the ring last left the queue (for `spurious_wakeups`).
    signalled: bool,
}

/// Waits on many rings at once — per-CPU rings, the inner rings of a map-in-map — through one
/// edge-triggered epoll set, and drains the ready ones fairly.
///
/// [`poll`](Poller::poll) sleeps until a ring is signalled (or a deadline, a
/// [flush or close](Poller::flusher), or the [periodic drain](Poller::set_periodic_drain)
/// interval; before reporting a timeout, flush or close it checks every ring once more),
/// then goes once round the ready rings, taking at most
/// [`budget`](Poller::set_budget) records from each, so one busy ring cannot starve the
/// others: a ring that hit its budget goes to the back of the queue and is served again by
/// the next `poll` without waiting for another wakeup (with edge-triggered epoll none would
/// come).
///
/// Like [`RingBuf::wait`], it checks each ring it drained before it sleeps (publish, full
/// fence, look again), so no record is stranded by a wakeup the kernel decided not to send,
/// and a ring whose head record is BUSY leaves the queue until the kernel signals its commit:
/// no spinning.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bpf_ringbuf::{PollOutcome, Poller, RingBuf};
/// use std::ops::ControlFlow;
/// use std::time::Duration;
///
/// let mut poller = Poller::new()?;
/// let mut names = std::collections::HashMap::new();
/// for cpu in 0..2 {
///     let id = poller.add(RingBuf::from_pinned(format!("/sys/fs/bpf/events_{cpu}"))?)?;
///     names.insert(id, cpu);
/// }
/// loop {
///     match poller.poll(Some(Duration::from_secs(1)), |id, record| {
///         println!("cpu {}: {} bytes", names[&id], record.len());
///         ControlFlow::Continue(())
///     })? {
///         PollOutcome::Closed => break,
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
pub struct Poller {
    epoll: OwnedFd,
    entries: HashMap<u64, Entry>,
    /// Ring ids to drain, in order: signalled, found readable, or over budget last round.
    pending: VecDeque<u64>,
    /// Writers found to have space by the last poll.
    writable: Vec<RingId>,
    next_id: u64,
    budget: usize,
    periodic_drain: Option<Duration>,
    wake: Option<Arc<WakeState>>,
    stats: WaitStats,
}

impl Poller {
    /// Records taken from one ring per round, unless [`set_budget`](Poller::set_budget)
    /// changes it.
    pub const DEFAULT_BUDGET: usize = 1024;

    /// An empty poller.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the epoll set cannot be created.
    pub fn new() -> Result<Self, Error> {
        Ok(Self {
            epoll: epoll::create(epoll::CreateFlags::CLOEXEC)?,
            entries: HashMap::new(),
            pending: VecDeque::new(),
            writable: Vec::new(),
            next_id: 0,
            budget: Self::DEFAULT_BUDGET,
            periodic_drain: None,
            wake: None,
            stats: WaitStats::default(),
        })
    }

    /// Sets the most records taken from one ring per round (at least 1).
    pub fn set_budget(&mut self, records_per_ring: usize) {
        self.budget = records_per_ring.max(1);
    }

    /// Makes [`poll`](Poller::poll) check every ring at least every `interval` even without a
    /// wakeup (`None`, the default: only wakeups end a sleep). Needed for producers that commit
    /// with `BPF_RB_NO_WAKEUP`; see [`RingBuf::set_periodic_drain`].
    pub fn set_periodic_drain(&mut self, interval: Option<Duration>) {
        self.periodic_drain = interval;
    }

    /// Adds a ring to read; it is drained by the next poll (it may hold records already).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if its fd cannot be added to the epoll set.
    pub fn add(&mut self, ring: RingBuf) -> Result<RingId, Error> {
        self.insert(Source::Reader(ring), epoll::EventFlags::IN)
    }

    /// Adds a user ring to wait for space on (`EPOLLOUT`), such as a
    /// [`UserRingSpace`](crate::UserRingSpace); [`poll`](Poller::poll) reports it in
    /// [`writable`](Poller::writable) when [`SpaceWaiter::has_space`] holds. Reach it again
    /// with [`writer_mut`](Poller::writer_mut) (to write) or
    /// [`remove_writer`](Poller::remove_writer).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if its fd cannot be added to the epoll set.
    pub fn add_writer<W: SpaceWaiter + 'static>(&mut self, writer: W) -> Result<RingId, Error> {
        self.insert(Source::Writer(Box::new(writer)), epoll::EventFlags::OUT)
    }

    fn insert(&mut self, source: Source, interest: epoll::EventFlags) -> Result<RingId, Error> {
        let id = self.next_id;
        let fd = match &source {
            Source::Reader(ring) => ring.map_fd(),
            Source::Writer(writer) => writer.fd(),
        };
        epoll::add(
            &self.epoll,
            fd,
            epoll::EventData::new_u64(id),
            interest | epoll::EventFlags::ET,
        )?;
        self.next_id += 1;
        self.entries.insert(
            id,
            Entry {
                source,
                pending: true,
                signalled: false,
            },
        );
        self.pending.push_back(id);
        Ok(RingId(id))
    }

    /// Removes a reader and gives it back (`None` if `id` is not a reader here). Records it
    /// holds stay in it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if its fd cannot be removed from the epoll set.
    pub fn remove(&mut self, id: RingId) -> Result<Option<RingBuf>, Error> {
        match self.entries.get(&id.0).map(|entry| &entry.source) {
            Some(Source::Reader(_)) => {}
            _ => return Ok(None),
        }
        match self.take(id)? {
            Some(Source::Reader(ring)) => Ok(Some(ring)),
            _ => Ok(None),
        }
    }

    /// Removes the writer `id` and gives it back (`None`, and nothing removed, if `id` is not
    /// a writer of type `W` here).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if its fd cannot be removed from the epoll set.
    pub fn remove_writer<W: SpaceWaiter + 'static>(
        &mut self,
        id: RingId,
    ) -> Result<Option<W>, Error> {
        if self.writer::<W>(id).is_none() {
            return Ok(None);
        }
        match self.take(id)? {
            Some(Source::Writer(writer)) => Ok(writer.into_any().downcast().ok().map(|w| *w)),
            _ => Ok(None),
        }
    }

    fn take(&mut self, id: RingId) -> Result<Option<Source>, Error> {
        let Some(entry) = self.entries.get(&id.0) else {
            return Ok(None);
        };
        let fd = match &entry.source {
            Source::Reader(ring) => ring.map_fd(),
            Source::Writer(writer) => writer.fd(),
        };
        epoll::delete(&self.epoll, fd)?;
        let entry = self.entries.remove(&id.0).expect("entry checked above");
        if entry.pending {
            self.pending.retain(|&pending| pending != id.0);
        }
        self.writable.retain(|&writable| writable != id);
        Ok(Some(entry.source))
    }

    /// The reader `id`, if it is here.
    pub fn ring(&self, id: RingId) -> Option<&RingBuf> {
        match &self.entries.get(&id.0)?.source {
            Source::Reader(ring) => Some(ring),
            Source::Writer(_) => None,
        }
    }

    /// The reader `id`, if it is here, to read or [`resync`](crate::Consumer::resync) it
    /// directly. The ring is queued for the next [`poll`](Poller::poll) to check, since what
    /// is done with it here may leave records that no new wakeup will announce.
    pub fn ring_mut(&mut self, id: RingId) -> Option<&mut RingBuf> {
        let entry = self.entries.get_mut(&id.0)?;
        let Source::Reader(ring) = &mut entry.source else {
            return None;
        };
        if !entry.pending {
            entry.pending = true;
            self.pending.push_back(id.0);
        }
        Some(ring)
    }

    /// The writer `id`, if it is here and of type `W`.
    pub fn writer<W: SpaceWaiter + 'static>(&self, id: RingId) -> Option<&W> {
        match &self.entries.get(&id.0)?.source {
            Source::Writer(writer) => writer.as_any().downcast_ref(),
            Source::Reader(_) => None,
        }
    }

    /// The writer `id`, if it is here and of type `W`: to write once [`poll`](Poller::poll)
    /// reported it [writable](Poller::writable).
    pub fn writer_mut<W: SpaceWaiter + 'static>(&mut self, id: RingId) -> Option<&mut W> {
        match &mut self.entries.get_mut(&id.0)?.source {
            Source::Writer(writer) => writer.as_any_mut().downcast_mut(),
            Source::Reader(_) => None,
        }
    }

    /// Ids of every ring and writer here, in no particular order.
    pub fn ids(&self) -> impl Iterator<Item = RingId> + '_ {
        self.entries.keys().map(|&id| RingId(id))
    }

    /// Number of rings and writers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// User rings the last [`poll`](Poller::poll) found to have space.
    pub fn writable(&self) -> &[RingId] {
        &self.writable
    }

    /// A handle that wakes this poller from another thread: see [`Flusher`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the eventfd cannot be created or added to the epoll set.
    pub fn flusher(&mut self) -> Result<Flusher, Error> {
        WakeState::flusher_for(self.epoll.as_fd(), &mut self.wake, WAKE_TOKEN)
    }

    /// Read accounting summed over the readers here now (see [`Stats`]).
    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for entry in self.entries.values() {
            if let Source::Reader(ring) = &entry.source {
                total.add(&ring.stats());
            }
        }
        total
    }

    /// Counters of this poller's sleeps and wakeups (wakeups count ring signals, one per
    /// ring per event).
    pub fn wait_stats(&self) -> WaitStats {
        self.stats
    }

    /// The epoll fd; it becomes readable when a ring here is signalled, so the poller can be
    /// nested in another event loop.
    pub fn epoll_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }

    /// Waits up to `timeout` (`None`: no limit) for records, then calls `f` with each, zero
    /// copy, taking at most the budget from each ready ring; see [`PollOutcome`]. `f` may stop
    /// early with [`ControlFlow::Break`]; the ring it stopped in is served first next time.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `epoll_wait` fails; [`Error::Read`] if a ring is corrupt (records
    /// before the corrupt spot were delivered; the ring stays queued, so
    /// [`resync`](crate::Consumer::resync) it through [`ring_mut`](Poller::ring_mut) or
    /// [`remove`](Poller::remove) it).
    pub fn poll<F>(&mut self, timeout: Option<Duration>, f: F) -> Result<PollOutcome, Error>
    where
        F: FnMut(RingId, &[u8]) -> ControlFlow<()>,
    {
        self.poll_deadline(deadline_after(timeout), f)
    }

    /// As [`poll`](Poller::poll), with a deadline instead of a timeout (`None`: no limit).
    ///
    /// # Errors
    ///
    /// As for [`poll`](Poller::poll).
    pub fn poll_deadline<F>(
        &mut self,
        deadline: Option<Instant>,
        mut f: F,
    ) -> Result<PollOutcome, Error>
    where
        F: FnMut(RingId, &[u8]) -> ControlFlow<()>,
    {
        self.writable.clear();
        // Before reporting anything but records, every ring is checked once more: records
        // committed with BPF_RB_NO_WAKEUP are there without a signal, and a flush or close
        // must find everything that was committed before it.
        let mut final_check_done = false;
        loop {
            if !self.pending.is_empty() {
                // Pick up signals that arrived meanwhile, so those rings join this round.
                self.harvest(Some(Duration::ZERO))?;
                if let Some(outcome) = self.round(&mut f)? {
                    return Ok(outcome);
                }
                // Every queued ring turned out empty or BUSY at its head (each was checked
                // before leaving the queue): go to sleep.
                continue;
            }
            let sleep = next_sleep(deadline, self.periodic_drain);
            let wake_requested = self.wake.as_ref().is_some_and(|wake| wake.requested());
            if wake_requested || sleep.is_none() {
                if !final_check_done {
                    final_check_done = true;
                    self.queue_all();
                    continue;
                }
                if let Some(outcome) = self.wake.as_ref().and_then(|wake| wake.take()) {
                    return Ok(match outcome {
                        WaitOutcome::Closed => PollOutcome::Closed,
                        _ => PollOutcome::Flushed,
                    });
                }
            }
            let Some((sleep, periodic)) = sleep else {
                return Ok(PollOutcome::TimedOut);
            };
            self.stats.sleeps += 1;
            if self.harvest(sleep)? == 0 && periodic {
                self.stats.periodic_checks += 1;
                self.queue_all();
            }
        }
    }

    /// Takes the events of one `epoll_wait` and queues the rings they name; returns the
    /// number of events.
    fn harvest(&mut self, timeout: Option<Duration>) -> Result<usize, Error> {
        // On the stack: `epoll::Event` is not `Send`, and the poller should be.
        let mut events = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        }; EVENT_BATCH];
        let n = epoll_wait(&self.epoll, &mut events, timeout)?;
        for event in &events[..n] {
            let id = event.data.u64();
            if id == WAKE_TOKEN {
                if let Some(wake) = &self.wake {
                    wake.clear_signal()?;
                }
                continue;
            }
            self.stats.wakeups += 1;
            if let Some(entry) = self.entries.get_mut(&id) {
                entry.signalled = true;
                if !entry.pending {
                    entry.pending = true;
                    self.pending.push_back(id);
                }
            }
        }
        Ok(n)
    }

    /// Queues every ring (the periodic drain: the rounds check them).
    fn queue_all(&mut self) {
        for (&id, entry) in &mut self.entries {
            if !entry.pending {
                entry.pending = true;
                self.pending.push_back(id);
            }
        }
    }

    /// Once round the queue as it is now. `None` if nothing was delivered or found writable.
    fn round<F>(&mut self, f: &mut F) -> Result<Option<PollOutcome>, Error>
    where
        F: FnMut(RingId, &[u8]) -> ControlFlow<()>,
    {
        let budget = self.budget;
        let mut records = 0;
        for _ in 0..self.pending.len() {
            let Some(id) = self.pending.pop_front() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            let ring_id = RingId(id);
            match &mut entry.source {
                Source::Writer(writer) => {
                    entry.pending = false;
                    if writer.has_space() {
                        self.writable.push(ring_id);
                    } else if entry.signalled {
                        self.stats.spurious_wakeups += 1;
                    }
                    entry.signalled = false;
                }
                Source::Reader(ring) => {
                    let mut stopped = false;
                    let delivered = ring
                        .consume(budget, |record| {
                            let flow = f(ring_id, record);
                            stopped = flow.is_break();
                            flow
                        })
                        .map_err(|error| {
                            self.pending.push_front(id);
                            Error::Read {
                                ring: Some(ring_id),
                                error,
                            }
                        })?;
                    records += delivered;
                    if stopped {
                        // Served first next time.
                        self.pending.push_front(id);
                        return Ok(Some(PollOutcome::Ready {
                            records,
                            writable: self.writable.len(),
                        }));
                    }
                    if delivered == budget || ring.check_before_sleep() == Readiness::Readable {
                        // More may be there, and no wakeup would announce it (the kernel
                        // already signalled, edge-triggered): keep it queued.
                        self.pending.push_back(id);
                    } else {
                        // Empty or BUSY at the head, checked after a fence: any later commit
                        // at our published consumer_pos signals the fd.
                        entry.pending = false;
                        if delivered == 0 && entry.signalled {
                            self.stats.spurious_wakeups += 1;
                        }
                        entry.signalled = false;
                    }
                }
            }
        }
        if records > 0 || !self.writable.is_empty() {
            Ok(Some(PollOutcome::Ready {
                records,
                writable: self.writable.len(),
            }))
        } else {
            Ok(None)
        }
    }
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("rings", &self.entries.len())
            .field("pending", &self.pending.len())
            .field("budget", &self.budget)
            .field("periodic_drain", &self.periodic_drain)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poller_is_send() {
        fn send<T: Send>() {}
        send::<Poller>();
        send::<RingBuf>();
    }
}
