//! Several rings read as one stream, in the order of a key each record carries.
//!
//! At high event rates BPF programs shard their output into one RINGBUF per CPU and lose the
//! one thing a shared ring gives for free: a single order. A [`Merge`] puts it back. The caller
//! says how to read a record's key (`Fn(&[u8]) -> u64`, typically a `bpf_ktime_get_ns()` stamp
//! at a known offset); a [`MergeRound`] then lends records of all rings zero-copy, as
//! `&[u8]` slices of the rings themselves, in non-decreasing key order, and publishes each
//! ring's `consumer_pos` once when the round ends.
//!
//! # The rule
//!
//! A round starts from `now`, a reading of the key's clock taken before the round looks at any
//! ring. It releases the record with the smallest key among the rings' committed head records
//! (ties: the lowest ring index), and only when no ring can still deliver an earlier key: every
//! other ring either
//!
//! - has a committed head record (its key is then at least as large), or
//! - showed no committed head (empty, or its head still BUSY) when this round looked at it,
//!   and `key + lateness <= now`.
//!
//! Otherwise the round ends ([`RoundEnd::Waiting`]): a later round, started at or after
//! `key + lateness`, releases the record unless the quiet ring delivers an earlier one first.
//! A ring that stays silent therefore holds records back by at most `lateness`.
//!
//! **The guarantee.** Released keys are non-decreasing provided (1) every record is committed
//! at most `lateness` after its key was read from the clock (stamp-to-commit delay, in either
//! order of stamp and reserve), and no reservation stays BUSY (until its commit or discard)
//! more than `lateness` after the key of a record reserved behind it in its ring was read;
//! (2) each ring's keys are non-decreasing in the order its records were reserved (one program
//! at a time per ring, e.g. per-CPU rings without nested programs, where both hold by
//! themselves once (1) holds for each record); and (3) `now` comes from the same clock as the
//! keys. A record that breaks them is still delivered, marked
//! [`out_of_order`](MergedRecord::out_of_order) and counted in [`MergeStats::out_of_order`];
//! nothing is lost or stalled. [`guide::merging`] has the proof, the trade-off between latency
//! and order, and what breaks the guarantee in practice.
//!
//! [`guide::merging`]: crate::guide::merging
//!
//! # Examples
//!
//! Two rings (a heap ring and the model of the kernel producer stand in for per-CPU maps), each
//! record starting with a `u64` stamp:
//!
//! ```
//! use bpf_ringbuf::merge::{u64_key_at, Merge, MergeRing, RoundEnd};
//! use bpf_ringbuf::model::{HeapRing, Wakeup};
//!
//! let mut producers = Vec::new();
//! let mut rings = Vec::new();
//! for _ in 0..2 {
//!     let (producer, consumer) = HeapRing::new(4096)?.split();
//!     producers.push(producer);
//!     rings.push(MergeRing::new(consumer));
//! }
//! let stamped = |stamp: u64| stamp.to_ne_bytes();
//! producers[0].output(&stamped(10), Wakeup::Adaptive).unwrap();
//! producers[0].output(&stamped(30), Wakeup::Adaptive).unwrap();
//! producers[1].output(&stamped(20), Wakeup::Adaptive).unwrap();
//!
//! // Keys are stamps at offset 0; records may commit up to 5 time units after their stamp.
//! let mut merge = Merge::new(u64_key_at(0), 5);
//! let round = merge.round(&mut rings, 32); // the clock read 32 before the round
//! let keys: Vec<u64> = round.iter().map(|record| record.unwrap().key).collect();
//! // 30 waits: ring 1 is quiet, and could still commit a record stamped after 32 - 5.
//! assert_eq!(keys, [10, 20]);
//! assert_eq!(round.status(), RoundEnd::Waiting { ring: 0, key: 30, quiet: 1, until: 35 });
//! drop(round); // publishes consumer_pos of both rings
//!
//! let round = merge.round(&mut rings, 35);
//! assert_eq!(round.iter().map(|record| record.unwrap().key).collect::<Vec<_>>(), [30]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::cell::Cell;
use core::fmt;

use crate::consumer::{Consumer, Peek, Peeked, ReadCursor};
use crate::error::ReadError;
use crate::geometry::Readiness;
use crate::memory::RingMemory;
use crate::sync::{weakened, SyncPoint};

mod private {
    use crate::{Consumer, RingMemory};

    /// Proof that the caller is this crate. A bound `T: MergeSource` makes the supertrait's
    /// methods callable from outside without naming it; only the token keeps the front end's
    /// `&mut Consumer` (which `mem::swap` would part from its mapping's claim) inside.
    pub struct Token(pub(crate) ());

    /// How the merge reaches a ring's consumer; sealed, so a ring type whose consumer must not
    /// be handed out as `&mut` (the front end's) can still be merged.
    pub trait Source {
        /// The memory the consumer reads.
        type Memory: RingMemory;
        /// The ring's consumer.
        fn consumer(&self, token: Token) -> &Consumer<Self::Memory>;
        /// The ring's consumer, to publish and count what a round read.
        fn consumer_mut(&mut self, token: Token) -> &mut Consumer<Self::Memory>;
    }
}

// The front end merges its `RingBuf`s through this.
#[cfg_attr(
    not(all(feature = "std", not(bpf_ringbuf_loom))),
    allow(unused_imports)
)]
pub(crate) use private::{Source, Token};

/// A ring a [`Merge`] can read: a [`Consumer`], or (feature `std`) a `RingBuf`.
///
/// Sealed: the merge reads through the ring's consumer, which only this crate reaches.
pub trait MergeSource: private::Source {}

impl<T: private::Source> MergeSource for T {}

impl<M: RingMemory> private::Source for Consumer<M> {
    type Memory = M;

    fn consumer(&self, _: private::Token) -> &Consumer<M> {
        self
    }

    fn consumer_mut(&mut self, _: private::Token) -> &mut Consumer<M> {
        self
    }
}

/// A key function reading a native-endian `u64` at `offset` of each record: where a BPF program
/// put its `bpf_ktime_get_ns()` stamp. A record too short to hold one gets key 0 (delivered
/// at once, and [out of order](MergedRecord::out_of_order) if anything came before it).
///
/// ```
/// let key = bpf_ringbuf::merge::u64_key_at(8);
/// let mut record = [0u8; 16];
/// record[8..].copy_from_slice(&42u64.to_ne_bytes());
/// assert_eq!(key(&record), 42);
/// assert_eq!(key(&record[..12]), 0);
/// ```
pub fn u64_key_at(offset: usize) -> impl Fn(&[u8]) -> u64 + Copy {
    move |record: &[u8]| {
        record
            .get(offset..)
            .and_then(|rest| rest.get(..8))
            .and_then(|bytes| bytes.try_into().ok())
            .map_or(0, u64::from_ne_bytes)
    }
}

/// One ring of a merge: its reader and what the merge remembers about it between rounds.
///
/// The caller keeps the rings (in an array, a slice or a `Vec`) and lends them to each
/// [`Merge::round`]; nothing is allocated.
pub struct MergeRing<R: MergeSource> {
    ring: R,
    /// The committed head record an earlier round held back, if it is still the ring's next
    /// record: its position and the largest key it can legitimately carry.
    held: Option<Held>,
    /// Where this ring's read stands in the current round (reset when a round starts).
    cursor: Cell<ReadCursor>,
    /// What the current round knows of this ring's next record.
    head: Cell<Head>,
}

/// A head record held back across rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    /// Ring position of its header.
    position: usize,
    /// `now + lateness` of the first round that started after the record was seen (`None`
    /// until that round starts). The record was committed before that `now` was read, so a
    /// key above the bound is not a stamp of this clock: it is ordered as the bound instead.
    bound: Option<u64>,
}

/// The current round's view of a ring's next record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Head {
    /// Not looked at since the round began or since its last record was released.
    Unknown,
    /// A committed record, not released yet.
    Record {
        record: Peeked,
        /// The key the record is ordered by (the key function's, or the held bound).
        order_key: u64,
        /// The key function's value.
        key: u64,
        /// `key` was above the held bound.
        future: bool,
    },
    /// No committed record (empty, or the head is BUSY) at a look made in this round.
    Quiet,
    /// The ring contradicts the protocol.
    Failed(ReadError),
}

impl<R: MergeSource> MergeRing<R> {
    /// A ring to merge, read from where its consumer stands.
    pub fn new(ring: R) -> Self {
        Self {
            ring,
            held: None,
            cursor: Cell::new(ReadCursor::default()),
            head: Cell::new(Head::Unknown),
        }
    }

    /// The ring.
    pub fn get(&self) -> &R {
        &self.ring
    }

    /// The ring, to read or [`resync`](Consumer::resync) it directly; the merge notices that
    /// it moved.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.ring
    }

    /// Gives the ring back.
    pub fn into_inner(self) -> R {
        self.ring
    }

    /// Whether the last round ended with this ring's next record committed but held back for
    /// order (the kernel does not signal such a ring again: its record is already there).
    pub fn is_holding(&self) -> bool {
        self.held.is_some()
    }

    fn consumer(&self) -> &Consumer<R::Memory> {
        self.ring.consumer(private::Token(()))
    }
}

impl<R: MergeSource> fmt::Debug for MergeRing<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MergeRing")
            .field("positions", &self.consumer().positions())
            .field("held", &self.held)
            .finish()
    }
}

/// A record released by a [`MergeRound`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MergedRecord<'a> {
    /// Index of its ring in the slice given to the round.
    pub ring: usize,
    /// Its key, as the key function read it.
    pub key: u64,
    /// The record's bytes, in the ring itself; borrowed from the round.
    pub data: &'a [u8],
    /// The record was released after one with a larger key: the guarantee's conditions were
    /// broken for it (it was committed more than the lateness after its stamp, or its ring's
    /// keys went backwards). Such records are delivered, never dropped. Records with a
    /// [`future_key`](Self::future_key) do not count as "larger" for the ones after them.
    pub out_of_order: bool,
    /// Its key lay beyond the lateness after a clock reading taken once the record was
    /// already committed, so it cannot be a stamp of the merge's clock (a corrupt or foreign
    /// key): it was ordered as that bound instead (see [`MergeStats::future_keys`]).
    pub future_key: bool,
}

/// Counters of a [`Merge`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Records released.
    pub records: u64,
    /// Records released out of order (see [`MergedRecord::out_of_order`]).
    pub out_of_order: u64,
    /// Records whose key lay beyond the lateness after a clock reading taken once they were
    /// already committed: not stamps of the merge's clock. They were ordered as that bound,
    /// so a corrupt key cannot hold its ring back for ever.
    pub future_keys: u64,
    /// Rounds that ended with a record held back for a quiet ring ([`RoundEnd::Waiting`]).
    pub waits: u64,
}

/// Why a [`MergeRound`] stopped releasing records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundEnd {
    /// The round has not ended: the last call released a record (or none was made yet).
    Open,
    /// No ring has a committed record: the next commit of any ring signals the reader.
    Idle,
    /// The smallest committed key waits for a quiet ring, which could still deliver an
    /// earlier key.
    Waiting {
        /// Ring of the record held back.
        ring: usize,
        /// Its key (as ordered).
        key: u64,
        /// A ring that showed no committed record (the first, if there are several).
        quiet: usize,
        /// `key + lateness`: a round whose `now` is at least this releases the record
        /// (unless a quiet ring delivers an earlier key first).
        until: u64,
    },
    /// A ring is corrupt (reported as a [`MergeError`]); it holds the merge back until it is
    /// resynchronised or removed.
    Failed {
        /// The corrupt ring.
        ring: usize,
    },
}

/// What [`Merge::check_before_sleep`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeReadiness {
    /// A round can make progress now: do not sleep.
    Ready,
    /// Sleeping is safe: every ring that could unblock the merge is empty or BUSY at its head,
    /// and a commit there signals the reader. Sleep at most until the key clock reaches
    /// `until`, when the record held back may be released.
    Sleep {
        /// The key-clock time at which to look again (`None`: only a signal helps).
        until: Option<u64>,
    },
}

/// A ring of the merge is corrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MergeError {
    /// Index of the ring.
    pub ring: usize,
    /// What is wrong with it.
    pub error: ReadError,
}

impl fmt::Display for MergeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ring {} of the merge: {}", self.ring, self.error)
    }
}

impl core::error::Error for MergeError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The ordering state of a merged read: the key function, the lateness, and what was
/// released so far. The rings themselves are the caller's ([`MergeRing`]), lent to each round.
///
/// See the [module documentation](self) for the rule and its guarantee.
pub struct Merge<K> {
    key: K,
    lateness: u64,
    /// The largest key released so far (records with a future key excepted).
    last_key: Option<u64>,
    stats: MergeStats,
    /// How the last round ended.
    last_end: RoundEnd,
}

impl<K: Fn(&[u8]) -> u64> Merge<K> {
    /// A merge ordering records by `key`, which allows records to be committed up to
    /// `lateness` (in the key's units) after their key was taken from the clock.
    pub fn new(key: K, lateness: u64) -> Self {
        Self {
            key,
            lateness,
            last_key: None,
            stats: MergeStats::default(),
            last_end: RoundEnd::Open,
        }
    }

    /// The lateness allowed between a record's key and its commit.
    pub fn lateness(&self) -> u64 {
        self.lateness
    }

    /// Changes the lateness (for the rounds that follow).
    pub fn set_lateness(&mut self, lateness: u64) {
        self.lateness = lateness;
    }

    /// The counters.
    pub fn stats(&self) -> MergeStats {
        self.stats
    }

    /// The largest key released so far.
    pub fn last_key(&self) -> Option<u64> {
        self.last_key
    }

    /// How the last round ended ([`RoundEnd::Open`] if it was dropped before it ran out, or
    /// before any round).
    pub fn last_end(&self) -> RoundEnd {
        self.last_end
    }

    /// A round over `rings`: lends their records in key order until no more can be released
    /// (see the [rule](self#the-rule)). Each ring's `consumer_pos` is published once, when the
    /// round is dropped, past the records released from it.
    ///
    /// `now` is a reading of the clock the keys come from, taken before this call and after
    /// the previous round over these rings was dropped. An older reading only delays releases,
    /// unless it is older than that previous round's end by more than the lateness: then the
    /// key of a record held across rounds may look as if it came from the future, and be
    /// ordered early ([`MergedRecord::future_key`]). A reading from later than the call, or
    /// from another clock, breaks the order.
    pub fn round<'r, R: MergeSource>(
        &'r mut self,
        rings: &'r mut [MergeRing<R>],
        now: u64,
    ) -> MergeRound<'r, R, K> {
        MergeRound::new(self, rings, now, false)
    }

    /// A round that releases every committed record in key order without holding any back for
    /// quiet rings: for the end of a stream (every producer has stopped), or a flush that
    /// prefers delivering now to order. A record committed later with a smaller key is
    /// delivered [out of order](MergedRecord::out_of_order).
    pub fn drain<'r, R: MergeSource>(
        &'r mut self,
        rings: &'r mut [MergeRing<R>],
        now: u64,
    ) -> MergeRound<'r, R, K> {
        MergeRound::new(self, rings, now, true)
    }

    /// The check to make right before sleeping until a ring is signalled, after the last round
    /// was dropped (which published every ring's `consumer_pos`); `now` is a clock reading
    /// taken before the call.
    ///
    /// It runs [`Consumer::check_before_sleep`] (a full fence, then a look) on every ring the
    /// last round found without a committed record, since only those can unblock it, and a
    /// commit at their published position wakes the reader. A ring whose committed head was
    /// held back needs no signal; the record held back needs the clock to reach
    /// [`RoundEnd::Waiting::until`], which [`MergeReadiness::Sleep`] reports.
    pub fn check_before_sleep<R: MergeSource>(
        &self,
        rings: &[MergeRing<R>],
        now: u64,
    ) -> MergeReadiness {
        let until = match self.last_end {
            RoundEnd::Open | RoundEnd::Failed { .. } => return MergeReadiness::Ready,
            RoundEnd::Waiting { until, .. } if now >= until => return MergeReadiness::Ready,
            RoundEnd::Waiting { until, .. } => Some(until),
            RoundEnd::Idle => None,
        };
        let quiet_ring_ready = rings.iter().any(|ring| {
            !ring.is_holding() && ring.consumer().check_before_sleep() == Readiness::Readable
        });
        if quiet_ring_ready {
            MergeReadiness::Ready
        } else {
            MergeReadiness::Sleep { until }
        }
    }
}

impl<K> fmt::Debug for Merge<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Merge")
            .field("lateness", &self.lateness)
            .field("last_key", &self.last_key)
            .field("stats", &self.stats)
            .field("last_end", &self.last_end)
            .finish()
    }
}

/// Records of several rings lent zero-copy in key order; publishes each ring's
/// `consumer_pos` once, when it is dropped.
///
/// Records are `&[u8]` slices of the rings borrowed from the round, so any number of them, from
/// any rings, can be held at once, and none can outlive the round:
///
/// ```compile_fail,E0505
/// # use bpf_ringbuf::merge::{u64_key_at, Merge, MergeRing};
/// # use bpf_ringbuf::model::HeapRing;
/// let (_producer, consumer) = HeapRing::new(4096).unwrap().split();
/// let mut rings = [MergeRing::new(consumer)];
/// let mut merge = Merge::new(u64_key_at(0), 0);
/// let round = merge.round(&mut rings, 0);
/// let record = round.next_record();
/// drop(round); // error: `round` is still borrowed by `record`
/// drop(record);
/// ```
#[must_use = "a round releases nothing until its records are taken"]
pub struct MergeRound<'r, R: MergeSource, K> {
    merge: &'r mut Merge<K>,
    rings: &'r mut [MergeRing<R>],
    now: u64,
    /// Quiet rings hold nothing back ([`Merge::drain`]).
    draining: bool,
    status: Cell<RoundEnd>,
    last_key: Cell<Option<u64>>,
    stats: Cell<MergeStats>,
}

impl<'r, R: MergeSource, K: Fn(&[u8]) -> u64> MergeRound<'r, R, K> {
    fn new(
        merge: &'r mut Merge<K>,
        rings: &'r mut [MergeRing<R>],
        now: u64,
        draining: bool,
    ) -> Self {
        let lateness = merge.lateness;
        for ring in rings.iter_mut() {
            if let Some(held) = &mut ring.held {
                // This `now` was read after the round that saw the held record ended, so after
                // the record was committed: a stamp of this clock cannot be later (the
                // lateness covers the two clocks' skew).
                held.bound.get_or_insert(now.saturating_add(lateness));
            }
            match ring.consumer().open_cursor() {
                Ok(cursor) => {
                    ring.cursor.set(cursor);
                    ring.head.set(Head::Unknown);
                }
                Err(error) => {
                    ring.cursor.set(ReadCursor::default());
                    ring.head.set(Head::Failed(error));
                }
            }
        }
        let last_key = merge.last_key;
        Self {
            merge,
            rings,
            now,
            draining,
            status: Cell::new(RoundEnd::Open),
            last_key: Cell::new(last_key),
            stats: Cell::new(MergeStats::default()),
        }
    }

    /// The clock reading this round started from.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Why the round stopped releasing records ([`RoundEnd::Open`] while it has not).
    pub fn status(&self) -> RoundEnd {
        self.status.get()
    }

    /// The next record in key order, or `None` when no record can be released now (see
    /// [`status`](Self::status)); after an error, or once it returned `None`, the round is over
    /// and keeps returning `None`.
    ///
    /// # Errors
    ///
    /// A [`MergeError`] when a ring is corrupt: records released before it stay released.
    pub fn next_record(&self) -> Option<Result<MergedRecord<'_>, MergeError>> {
        if self.status.get() != RoundEnd::Open {
            return None;
        }
        let lateness = if weakened(SyncPoint::MergeLateness) {
            0
        } else {
            self.merge.lateness
        };
        let hold_for_quiet = !self.draining && !weakened(SyncPoint::MergeQuietCheck);
        loop {
            // The smallest committed head (the lowest index among equal keys), and the first
            // ring without one.
            let mut best: Option<(usize, u64)> = None;
            let mut quiet = None;
            for (index, ring) in self.rings.iter().enumerate() {
                match self.look(ring, false) {
                    Head::Record { order_key, .. } => {
                        if best.map_or(true, |(_, key)| order_key < key) {
                            best = Some((index, order_key));
                        }
                    }
                    Head::Quiet => {
                        quiet.get_or_insert(index);
                    }
                    Head::Failed(error) => return Some(Err(self.fail(index, error))),
                    Head::Unknown => unreachable!("`look` looks"),
                }
            }
            let Some((index, key)) = best else {
                // Look once more before saying so: a ring seen quiet earlier in the round may
                // have committed a record since.
                if self.look_again_at_quiet_rings() {
                    continue;
                }
                self.status.set(RoundEnd::Idle);
                return None;
            };
            if let Some(quiet) = quiet.filter(|_| hold_for_quiet) {
                // Every quiet ring was looked at in this round, after `now` was read: what it
                // delivers from here on was committed after `now`, so stamped after
                // `now - lateness`. Without `key + lateness <= now`, it may precede `key`.
                let until = key.saturating_add(lateness);
                if until > self.now {
                    if self.look_again_at_quiet_rings() {
                        continue;
                    }
                    self.status.set(RoundEnd::Waiting {
                        ring: index,
                        key,
                        quiet,
                        until,
                    });
                    self.count(|stats| stats.waits += 1);
                    return None;
                }
            }
            return Some(Ok(self.release(index)));
        }
    }

    /// An iterator over the records this round releases (see [`next_record`](Self::next_record)).
    pub fn iter(&self) -> MergeIter<'_, 'r, R, K> {
        MergeIter { round: self }
    }

    /// Looks at `ring`'s next record if the round does not know it yet (or, with `again`, if
    /// the ring was quiet); returns what the round now knows.
    fn look(&self, ring: &MergeRing<R>, again: bool) -> Head {
        let head = ring.head.get();
        match head {
            Head::Unknown => {}
            Head::Quiet if again => {}
            _ => return head,
        }
        let consumer = ring.consumer();
        let mut cursor = ring.cursor.get();
        let head = match consumer.peek(&mut cursor) {
            Peek::Record(record) => {
                // SAFETY: `record` is what `peek` just returned on this ring's open cursor.
                // Only this round moves this ring's `consumer_pos`, when it is dropped, which
                // takes `&mut self` and cannot happen while `&self` is borrowed; the slice
                // does not outlive this call.
                let data = unsafe { consumer.peeked_bytes(&record) };
                let key = (self.merge.key)(data);
                let bound = ring
                    .held
                    .filter(|held| held.position == record.position)
                    .and_then(|held| held.bound);
                let (order_key, future) = match bound {
                    Some(bound) if key > bound => (bound, true),
                    _ => (key, false),
                };
                Head::Record {
                    record,
                    order_key,
                    key,
                    future,
                }
            }
            Peek::Busy | Peek::End => Head::Quiet,
            Peek::Corrupt(error) => Head::Failed(error),
        };
        ring.cursor.set(cursor);
        ring.head.set(head);
        head
    }

    /// Looks again at every ring that was quiet; returns whether one of them now has a
    /// committed record (or turned out corrupt).
    fn look_again_at_quiet_rings(&self) -> bool {
        let mut changed = false;
        for ring in self.rings.iter() {
            if ring.head.get() == Head::Quiet {
                changed |= self.look(ring, true) != Head::Quiet;
            }
        }
        changed
    }

    /// Lends ring `index`'s head record and moves past it.
    fn release(&self, index: usize) -> MergedRecord<'_> {
        let ring = &self.rings[index];
        let Head::Record {
            record,
            order_key,
            key,
            future,
        } = ring.head.get()
        else {
            unreachable!("released a ring without a committed head")
        };
        let mut cursor = ring.cursor.get();
        cursor.take(&record);
        ring.cursor.set(cursor);
        ring.head.set(Head::Unknown);
        // SAFETY: `record` is what `peek` returned on this ring's open cursor (`look`), and
        // this round publishes past it only when it is dropped, which the borrow checker
        // forbids while the returned slice (borrowed from `&self`) lives.
        let data = unsafe { ring.consumer().peeked_bytes(&record) };
        let last_key = self.last_key.get();
        let out_of_order = last_key.is_some_and(|last| order_key < last);
        if !future {
            self.last_key
                .set(Some(last_key.map_or(order_key, |last| last.max(order_key))));
        }
        self.count(|stats| {
            stats.records += 1;
            stats.out_of_order += u64::from(out_of_order);
            stats.future_keys += u64::from(future);
        });
        MergedRecord {
            ring: index,
            key,
            data,
            out_of_order,
            future_key: future,
        }
    }

    fn fail(&self, ring: usize, error: ReadError) -> MergeError {
        self.status.set(RoundEnd::Failed { ring });
        MergeError { ring, error }
    }

    fn count(&self, f: impl FnOnce(&mut MergeStats)) {
        let mut stats = self.stats.get();
        f(&mut stats);
        self.stats.set(stats);
    }
}

impl<R: MergeSource, K> Drop for MergeRound<'_, R, K> {
    fn drop(&mut self) {
        for ring in self.rings.iter_mut() {
            let cursor = ring.cursor.get();
            ring.held = match ring.head.get() {
                Head::Record { record, .. } => match ring.held {
                    Some(held) if held.position == record.position => Some(held),
                    _ => Some(Held {
                        position: record.position,
                        bound: None,
                    }),
                },
                // Not looked at since the round began: still the record held before, if any.
                Head::Unknown => ring.held.filter(|held| held.position == cursor.position()),
                Head::Quiet | Head::Failed(_) => None,
            };
            ring.head.set(Head::Unknown);
            ring.ring
                .consumer_mut(private::Token(()))
                .close_cursor(&cursor);
        }
        let stats = self.stats.get();
        let total = &mut self.merge.stats;
        total.records += stats.records;
        total.out_of_order += stats.out_of_order;
        total.future_keys += stats.future_keys;
        total.waits += stats.waits;
        self.merge.last_key = self.last_key.get();
        self.merge.last_end = self.status.get();
    }
}

impl<R: MergeSource, K> fmt::Debug for MergeRound<'_, R, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MergeRound")
            .field("rings", &self.rings.len())
            .field("now", &self.now)
            .field("draining", &self.draining)
            .field("status", &self.status.get())
            .finish()
    }
}

/// Iterator over the records a [`MergeRound`] releases; each borrows the round.
pub struct MergeIter<'b, 'r, R: MergeSource, K> {
    round: &'b MergeRound<'r, R, K>,
}

impl<'b, R: MergeSource, K: Fn(&[u8]) -> u64> Iterator for MergeIter<'b, '_, R, K> {
    type Item = Result<MergedRecord<'b>, MergeError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.round.next_record()
    }
}

impl<R: MergeSource, K> fmt::Debug for MergeIter<'_, '_, R, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MergeIter").field(self.round).finish()
    }
}

impl<'b, 'r, R: MergeSource, K: Fn(&[u8]) -> u64> IntoIterator for &'b MergeRound<'r, R, K> {
    type Item = Result<MergedRecord<'b>, MergeError>;
    type IntoIter = MergeIter<'b, 'r, R, K>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}
