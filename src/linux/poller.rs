//! Waiting on many rings at once: one epoll set, a per-ring record budget, rings added and
//! removed at run time.

use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};
use std::vec::Vec;

use super::flush::{Flusher, WaitOutcome};
use super::mapping::RingKind;
use super::ringbuf::RingBuf;
use super::user::UserRingBuf;
use super::wait::{deadline_after, passed, Sleeper, WaitStats, Woke};
use crate::consumer::Stats;
use crate::geometry::Readiness;
use crate::header::record_size;
use crate::Error;

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

/// A ring the poller holds.
#[derive(Debug)]
enum Polled {
    /// A RINGBUF to read.
    Ring(RingBuf),
    /// A USER_RINGBUF waiting for room for a `space`-byte payload.
    UserRing { ring: UserRingBuf, space: usize },
}

impl Polled {
    fn map_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Ring(ring) => ring.map_fd(),
            Self::UserRing { ring, .. } => ring.map_fd(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    polled: Polled,
    /// In `pending`: signalled or found ready, not yet served.
    pending: bool,
    /// The fd was signalled since the ring last left the queue (for `spurious_wakeups`).
    signalled: bool,
}

/// Waits on many rings at once — per-CPU rings, the inner rings of a map-in-map — through one
/// edge-triggered epoll set, and drains the ready ones fairly. It also watches user rings
/// (USER_RINGBUF) for room to write.
///
/// Rings are named by their map ids (what [`RingBuf::map_id`] returns): a process has at most
/// one reader or producer per map, so the id names one ring here.
///
/// [`poll`](Poller::poll) sleeps until a ring is signalled (or a deadline, a
/// [flush or close](Poller::flusher), or the [periodic drain](Poller::set_periodic_drain)
/// interval; before reporting a timeout, flush or close it checks every ring once more),
/// then goes once round the ready rings, taking at most [`budget`](Poller::set_budget)
/// records from each, so one busy ring cannot starve the others: a ring that hit its budget
/// goes to the back of the queue and is served again by the next `poll` without waiting for
/// another wakeup (with edge-triggered epoll none would come).
///
/// Like [`RingBuf::wait`], it checks each ring it drained before it sleeps (publish, full
/// fence, look again), so no record is stranded by a wakeup the kernel decided not to send,
/// and a ring whose head record is BUSY leaves the queue until the kernel signals its commit:
/// no spinning.
///
/// The poller owns its rings and lends them out only shared ([`ring`](Poller::ring),
/// [`user_ring`](Poller::user_ring)): a ring in the poller cannot be swapped for another
/// behind its epoll registration. To act on one mutably (recover from a [`ReadError`]),
/// [remove](Poller::remove_ring) it and add it back.
///
/// [`ReadError`]: crate::ReadError
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
/// let mut cpus = std::collections::HashMap::new();
/// for cpu in 0..2 {
///     let id = poller.add_ring(RingBuf::from_pinned(format!("/sys/fs/bpf/events_{cpu}"))?)?;
///     cpus.insert(id, cpu);
/// }
/// loop {
///     match poller.poll(Some(Duration::from_secs(1)), |id, record| {
///         println!("cpu {}: {} bytes", cpus[&id], record.len());
///         ControlFlow::Continue(())
///     })? {
///         PollOutcome::Closed => break,
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Poller {
    sleeper: Sleeper,
    entries: HashMap<u32, Entry>,
    /// Map ids to serve, in order: signalled, found ready, or over budget last round.
    pending: VecDeque<u32>,
    /// User rings found to have space by the last poll.
    writable: Vec<u32>,
    budget: usize,
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
            sleeper: Sleeper::new()?,
            entries: HashMap::new(),
            pending: VecDeque::new(),
            writable: Vec::new(),
            budget: Self::DEFAULT_BUDGET,
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
        self.sleeper.periodic_drain = interval;
    }

    /// Adds a ring to read; returns its map id. It is drained by the next poll (it may hold
    /// records already).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if its fd cannot be added to the epoll set.
    pub fn add_ring(&mut self, ring: RingBuf) -> Result<u32, Error> {
        self.insert(ring.map_id(), Polled::Ring(ring), RingKind::Ring)
    }

    /// Adds a user ring to watch for room for a `space`-byte payload; returns its map id.
    /// [`poll`](Poller::poll) reports it in [`writable`](Poller::writable) once the kernel's
    /// drain has made that room (or when `space` can never fit, or the ring is corrupt: the
    /// next [`reserve`](UserRingBuf::reserve) then says why); write through
    /// [`user_ring`](Poller::user_ring).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if its fd cannot be added to the epoll set.
    pub fn add_user_ring(&mut self, ring: UserRingBuf, space: usize) -> Result<u32, Error> {
        self.insert(
            ring.map_id(),
            Polled::UserRing { ring, space },
            RingKind::UserRing,
        )
    }

    fn insert(&mut self, id: u32, polled: Polled, kind: RingKind) -> Result<u32, Error> {
        self.sleeper.watch(polled.map_fd(), id, kind.interest())?;
        self.entries.insert(
            id,
            Entry {
                polled,
                pending: true,
                signalled: false,
            },
        );
        self.pending.push_back(id);
        Ok(id)
    }

    /// Removes the ring with map id `id` and gives it back (`None` if no ring here has it).
    /// Records it holds stay in it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if its fd cannot be removed from the epoll set.
    pub fn remove_ring(&mut self, id: u32) -> Result<Option<RingBuf>, Error> {
        if self.ring(id).is_none() {
            return Ok(None);
        }
        Ok(match self.take(id)? {
            Polled::Ring(ring) => Some(ring),
            Polled::UserRing { .. } => None,
        })
    }

    /// Removes the user ring with map id `id` and gives it back (`None` if no user ring here
    /// has it).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if its fd cannot be removed from the epoll set.
    pub fn remove_user_ring(&mut self, id: u32) -> Result<Option<UserRingBuf>, Error> {
        if self.user_ring(id).is_none() {
            return Ok(None);
        }
        Ok(match self.take(id)? {
            Polled::UserRing { ring, .. } => Some(ring),
            Polled::Ring(_) => None,
        })
    }

    /// Removes entry `id`, which exists.
    fn take(&mut self, id: u32) -> Result<Polled, Error> {
        let entry = &self.entries[&id];
        self.sleeper.unwatch(entry.polled.map_fd())?;
        let entry = self
            .entries
            .remove(&id)
            .expect("entry checked by the caller");
        if entry.pending {
            self.pending.retain(|&pending| pending != id);
        }
        self.writable.retain(|&writable| writable != id);
        Ok(entry.polled)
    }

    /// The ring with map id `id`, if it is here.
    pub fn ring(&self, id: u32) -> Option<&RingBuf> {
        match &self.entries.get(&id)?.polled {
            Polled::Ring(ring) => Some(ring),
            Polled::UserRing { .. } => None,
        }
    }

    /// The user ring with map id `id`, if it is here: write to it once
    /// [`poll`](Poller::poll) reported it [writable](Poller::writable).
    pub fn user_ring(&self, id: u32) -> Option<&UserRingBuf> {
        match &self.entries.get(&id)?.polled {
            Polled::UserRing { ring, .. } => Some(ring),
            Polled::Ring(_) => None,
        }
    }

    /// Changes the payload length the user ring `id` waits for room for; returns whether it
    /// is here. It is checked again by the next poll.
    pub fn set_space(&mut self, id: u32, space: usize) -> bool {
        let Some(entry) = self.entries.get_mut(&id) else {
            return false;
        };
        let Polled::UserRing { space: wanted, .. } = &mut entry.polled else {
            return false;
        };
        *wanted = space;
        if !entry.pending {
            entry.pending = true;
            self.pending.push_back(id);
        }
        true
    }

    /// Map ids of every ring and user ring here, in no particular order.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries.keys().copied()
    }

    /// Number of rings and user rings.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// User rings the last [`poll`](Poller::poll) found to have room.
    pub fn writable(&self) -> &[u32] {
        &self.writable
    }

    /// A handle that wakes this poller from another thread: see [`Flusher`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the eventfd cannot be created or added to the epoll set.
    pub fn flusher(&mut self) -> Result<Flusher, Error> {
        self.sleeper.flusher()
    }

    /// Read accounting summed over the rings here now (see [`Stats`]).
    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for entry in self.entries.values() {
            if let Polled::Ring(ring) = &entry.polled {
                total.add(&ring.stats());
            }
        }
        total
    }

    /// Counters of this poller's sleeps and wakeups (wakeups count ring signals, one per
    /// ring per event).
    pub fn wait_stats(&self) -> WaitStats {
        self.sleeper.stats
    }

    /// The epoll fd; it becomes readable when a ring here is signalled, so the poller can be
    /// nested in another event loop.
    pub fn epoll_fd(&self) -> BorrowedFd<'_> {
        self.sleeper.epoll_fd()
    }

    /// Waits up to `timeout` (`None`: no limit) for records, then calls `f` with each (and
    /// the map id of its ring), zero copy, taking at most the budget from each ready ring;
    /// see [`PollOutcome`]. `f` may stop early with [`ControlFlow::Break`]; the ring it
    /// stopped in is served first next time. The timeout is a deadline computed once.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `epoll_wait` fails; [`Error::Read`] naming the map id if a ring is
    /// corrupt or its `consumer_pos` was moved. Records passed to `f` before the error stay
    /// delivered (the ring's records before the bad spot are consumed). The ring stays queued
    /// behind the others, so the next poll serves them first and then reports it again, until
    /// it is [removed](Poller::remove_ring), recovered ([`RingBuf::resume`],
    /// [`follow`](RingBuf::follow) or [`resync`](RingBuf::resync)) and added back.
    pub fn poll<F>(&mut self, timeout: Option<Duration>, f: F) -> Result<PollOutcome, Error>
    where
        F: FnMut(u32, &[u8]) -> ControlFlow<()>,
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
        F: FnMut(u32, &[u8]) -> ControlFlow<()>,
    {
        self.writable.clear();
        // Before reporting anything but records, every ring is checked once more: records
        // committed with BPF_RB_NO_WAKEUP are there without a signal, and a flush or close
        // must find everything that was committed before it.
        let mut final_check_done = false;
        loop {
            if !self.pending.is_empty() {
                // Pick up signals that arrived meanwhile, so those rings join this round.
                let Self {
                    sleeper,
                    entries,
                    pending,
                    ..
                } = self;
                sleeper.take_signals(|id| queue(entries, pending, id))?;
                if let Some(outcome) = self.round(&mut f)? {
                    return Ok(outcome);
                }
                // Every queued ring turned out empty or BUSY at its head (each was checked
                // before leaving the queue): go to sleep.
                continue;
            }
            if self.sleeper.wake_requested() || passed(deadline) {
                if !final_check_done {
                    final_check_done = true;
                    self.queue_all();
                    continue;
                }
                if let Some(outcome) = self.sleeper.take_wake() {
                    return Ok(match outcome {
                        WaitOutcome::Closed => PollOutcome::Closed,
                        _ => PollOutcome::Flushed,
                    });
                }
            }
            let Self {
                sleeper,
                entries,
                pending,
                ..
            } = self;
            match sleeper.sleep(deadline, |id| queue(entries, pending, id))? {
                Woke::TimedOut => return Ok(PollOutcome::TimedOut),
                Woke::Periodic => self.queue_all(),
                Woke::Signalled | Woke::Nothing => {}
            }
        }
    }

    /// Queues every ring (the periodic drain, the final check: the rounds check them).
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
        F: FnMut(u32, &[u8]) -> ControlFlow<()>,
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
            match &mut entry.polled {
                Polled::UserRing { ring, space } => {
                    entry.pending = false;
                    if has_room(ring, *space) {
                        self.writable.push(id);
                    } else if entry.signalled {
                        self.sleeper.stats.spurious_wakeups += 1;
                    }
                    entry.signalled = false;
                }
                Polled::Ring(ring) => {
                    let mut stopped = false;
                    let delivered = ring
                        .consume(budget, |record| {
                            let flow = f(id, record);
                            stopped = flow.is_break();
                            flow
                        })
                        .map_err(|error| {
                            // Still queued, behind the others: the next poll serves them
                            // before it reports this ring again, so one ring left in error
                            // does not starve the rest.
                            self.pending.push_back(id);
                            Error::Read {
                                map_id: Some(id),
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
                            self.sleeper.stats.spurious_wakeups += 1;
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

/// Queues the ring `id` after a signal.
fn queue(entries: &mut HashMap<u32, Entry>, pending: &mut VecDeque<u32>, id: u32) {
    if let Some(entry) = entries.get_mut(&id) {
        entry.signalled = true;
        if !entry.pending {
            entry.pending = true;
            pending.push_back(id);
        }
    }
}

/// Whether `ring` has room for a `space`-byte payload, after the lost-wakeup check (full
/// fence, then the free space). A length that can never fit, or a ring whose positions are
/// corrupt, counts as room, so that the next `reserve` reports the error instead of a wait
/// hiding it.
fn has_room(ring: &UserRingBuf, space: usize) -> bool {
    if space > ring.max_len() {
        return true;
    }
    match ring.check_before_sleep() {
        Ok(available) => available >= record_size(space),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_end_types_are_send() {
        fn send<T: Send>() {}
        send::<Poller>();
        send::<RingBuf>();
        send::<UserRingBuf>();
    }
}
