//! The RINGBUF consumer: reading records a BPF program produced.
//!
//! The algorithm (libbpf's `ringbuf_process_ring`, kernel/bpf/ringbuf.c on the other side):
//!
//! ```text
//! cons = load_acquire(consumer_pos); prod = load_acquire(producer_pos)
//! while cons != prod:
//!     len = load_acquire(header at cons & mask)
//!     BUSY    -> stop: records become readable strictly in reservation order
//!     DISCARD -> skip, but consume its space
//!     else    -> deliver data[cons & mask + 8 ..][..len]
//!     cons += round_up(len + 8, 8)
//! store_release(consumer_pos, cons)    -- once per batch
//! ```
//!
//! Three ways in: [`Consumer::batch`] lends records zero-copy, several at once, and publishes
//! `consumer_pos` once when the batch ends; [`Consumer::consume`] calls a closure with a record
//! budget and early stop; [`Consumer::read_into`] (and, with `alloc`, [`Consumer::read_vec`]
//! and [`Consumer::read_owned`]) copy one record out.
//!
//! Every position and header is checked before it is used (see [`ReadError`]).

use core::cell::Cell;
use core::ops::ControlFlow;
use core::ptr::NonNull;

use crate::error::{GeometryError, ReadError};
use crate::geometry::{distance, Geometry, Positions, Readiness};
use crate::header::{record_size, RecordHeader, BUSY_BIT, DISCARD_BIT, HEADER_SIZE};
use crate::memory::{DataWord, RingMemory};
use crate::sync::atomic::Ordering;
use crate::sync::{
    fence_at, load_acquire_u32, load_acquire_usize, ordering, prefetch, weakened, SyncPoint,
};

/// How far ahead of itself the read loop prefetches, in records: with each record it reads,
/// it prefetches the header this many records further on, as if the records between had the
/// size of this one.
///
/// Each header says where the next record starts, so a reader's header loads form a chain:
/// one cache miss at a time, unless the line is already on its way. The hardware prefetcher
/// brings lines ahead of a reader that touches every line (a copy, a reader of small records),
/// but not reliably of one that touches only every second or third line, which is what a
/// zero-copy reader of 128–320-byte records does. How much the prefetch pays varies with the
/// size and the run (docs/benchmarks.md compares the hand-written loop with and without it).
const PREFETCH_RECORDS: usize = 8;

// The read loop as plain data, for the merged reader (crate-private).
mod cursor;
pub(crate) use cursor::{Peek, Peeked, ReadCursor};

/// Reads a kernel-produced ring (`BPF_MAP_TYPE_RINGBUF`).
///
/// There must be one consumer per ring: `consumer_pos` has a single writer.
///
/// # Examples
///
/// A heap-backed ring and the model of the kernel producer stand in for a real map here; the
/// Linux front end ([`RingBuf`](crate::RingBuf)) wraps a `Consumer` over the map's `mmap`.
///
/// ```
/// use bpf_ringbuf::model::{HeapRing, Wakeup};
///
/// // A ring with its two endpoints: the model of the kernel's producer, and the consumer.
/// let (producer, mut consumer) = HeapRing::new(4096)?.split();
/// producer.output(b"hello", Wakeup::Adaptive).unwrap();
/// producer.output(b"world", Wakeup::Adaptive).unwrap();
///
/// let batch = consumer.batch();
/// let first = batch.next_record().unwrap()?;
/// let second = batch.next_record().unwrap()?; // `first` is still borrowed: fine
/// assert_eq!((first, second), (&b"hello"[..], &b"world"[..]));
/// drop(batch); // publishes consumer_pos once
/// assert_eq!(consumer.available()?, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Consumer<M: RingMemory> {
    memory: M,
    geometry: Geometry,
    /// The position this consumer has read up to: what it published last, or what it found
    /// when it was created. Always 8-byte aligned unless it was found so. The shared
    /// `consumer_pos` holds the same value unless someone else wrote it, which the next read
    /// reports ([`ReadError::ConsumerPosMoved`]).
    cursor: usize,
    /// What this consumer has read so far; updated once per batch.
    stats: Stats,
}

/// What a [`Consumer`] has read: records counted in a register while a batch runs, the rest
/// derived from positions or counted off the fast path, and all added up once when the batch
/// ends, so the per-record cost is one increment.
///
/// Payload bytes are not counted: the caller holds every record and its length (adding them
/// up would cost the read loop an add per record); `consumed_bytes`, the ring space read, comes
/// free from the positions.
///
/// Records lost because the ring was full never reach the ring, so they cannot be counted
/// here: BPF programs count them themselves, and `DropCounter` (feature `std`) reads the
/// usual per-CPU counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Committed records delivered (lent, copied or passed to a callback).
    pub records: u64,
    /// Records the producer discarded (`bpf_ringbuf_discard`), skipped.
    pub discarded: u64,
    /// Ring bytes handed back to the producer: records, discarded records, headers, padding.
    pub consumed_bytes: u64,
    /// Reads that stopped at a head record still BUSY (reserved, not yet committed): the
    /// records behind it wait for its commit.
    pub busy_stops: u64,
    /// Batches that consumed anything (each published `consumer_pos` once).
    pub batches: u64,
}

impl Stats {
    /// Adds another set of counters to these.
    pub fn add(&mut self, other: &Stats) {
        self.records += other.records;
        self.discarded += other.discarded;
        self.consumed_bytes += other.consumed_bytes;
        self.busy_stops += other.busy_stops;
        self.batches += other.batches;
    }
}

/// What one step of the read loop found.
enum Step {
    /// `available == 0`: nothing more to read before `end`.
    End,
    /// The record whose header is at `offset`, `available` bytes before the end, is still
    /// reserved.
    Busy { offset: usize, available: usize },
    /// A committed record.
    Record(Found),
    /// The header `available` bytes before the end contradicts the positions.
    Corrupt { error: ReadError, available: usize },
}

/// A committed record the read loop found: header at `offset`, `len` payload bytes, `size`
/// ring bytes; the next one starts `remaining` bytes before the end.
#[derive(Clone, Copy)]
struct Found {
    offset: usize,
    len: usize,
    size: usize,
    remaining: usize,
}

/// How the read loop reaches headers and records: the mask, and the data area's address if
/// the memory has one ([`RingMemory::data_ptr`]).
///
/// It is copied into each batch, where the compiler keeps it in registers: the loads of the
/// memory's own fields behind `header_unchecked` and `bytes` it would have to repeat after
/// every acquire fence, since the memory is reachable from outside the read loop.
#[derive(Clone, Copy)]
struct Locator {
    mask: usize,
    /// Always `None` under loom, whose atomics are not memory.
    #[cfg_attr(bpf_ringbuf_loom, allow(dead_code))]
    data: Option<NonNull<u8>>,
}

impl Locator {
    #[inline(always)]
    fn new<M: RingMemory>(memory: &M, geometry: Geometry) -> Self {
        Self {
            mask: geometry.mask(),
            data: if cfg!(bpf_ringbuf_loom) {
                None
            } else {
                memory.data_ptr()
            },
        }
    }

    /// The header word at `offset`.
    ///
    /// # Safety
    ///
    /// `offset` is 8-byte aligned and below the ring size, and the geometry is `memory`'s.
    #[inline(always)]
    unsafe fn header<M: RingMemory>(self, memory: &M, offset: usize) -> &DataWord {
        #[cfg(not(bpf_ringbuf_loom))]
        if let Some(data) = self.data {
            // SAFETY: promise 7 of `RingMemory`: `data + offset` is the header word of this
            // 8-aligned `offset < size`, inside the `2 * size` bytes `data` is valid for,
            // 4-byte aligned since `data` is 8-byte aligned, valid while `memory` lives (the
            // returned borrow); header words are accessed only atomically while shared.
            return unsafe { DataWord::from_ptr(data.as_ptr().add(offset).cast()) };
        }
        // SAFETY: the caller's contract is `header_unchecked`'s.
        unsafe { memory.header_unchecked(offset) }
    }

    /// The record bytes `offset..offset + len`.
    ///
    /// # Safety
    ///
    /// As for [`RingMemory::bytes`].
    #[inline(always)]
    unsafe fn bytes<M: RingMemory>(self, memory: &M, offset: usize, len: usize) -> &[u8] {
        #[cfg(not(bpf_ringbuf_loom))]
        if let Some(data) = self.data {
            // SAFETY: promise 7: `data + offset` starts the bytes `bytes(offset, len)` covers,
            // inside the `2 * size` readable bytes (the caller ensures `offset + len <= 2 *
            // size`); nobody writes them while the slice lives (the caller ensures it); the
            // borrow of `memory` keeps them mapped.
            return unsafe { core::slice::from_raw_parts(data.as_ptr().add(offset), len) };
        }
        // SAFETY: the caller's contract is `bytes`'.
        unsafe { memory.bytes(offset, len) }
    }

    /// Prefetches the header [`PREFETCH_RECORDS`] records past the one of `record_size` bytes
    /// at `offset`, as if they all had its size.
    #[inline(always)]
    fn prefetch_ahead<M: RingMemory>(self, memory: &M, offset: usize, record_size: usize) {
        let ahead = record_size.wrapping_mul(PREFETCH_RECORDS);
        #[cfg(not(bpf_ringbuf_loom))]
        if let Some(data) = self.data {
            // Not masked: within the double-mapped `2 * size` bytes whenever the ring holds
            // more than `2 * PREFETCH_RECORDS` such records, and a hint either way
            // (`wrapping_add` forms the address without claiming it is in bounds).
            prefetch(data.as_ptr().wrapping_add(offset).wrapping_add(ahead));
            return;
        }
        if cfg!(not(bpf_ringbuf_loom)) {
            // Both terms are multiples of 8, so the masked offset is a valid header offset.
            let target = offset.wrapping_add(ahead) & self.mask;
            // SAFETY: `target` is 8-byte aligned and below the ring size.
            let word = unsafe { memory.header_unchecked(target) };
            prefetch((word as *const DataWord).cast());
        }
    }
}

/// The read loop's fast path at the record `available` bytes (at most one ring size) before
/// the end, at `offset` in the data area (its position masked); `at` is `memory`'s: the
/// record, if it is committed and fits, else `Err` with what [`step_slow`] needs to handle
/// the rest (the end, BUSY, DISCARD, corruption). Inlined into every read loop.
///
/// The loops carry `available` down instead of recomputing it from the end position: one
/// subtraction then both checks the record's size and gives the next `available`, and the
/// position itself (`end - available`) is needed only to report a corrupt header
/// (docs/benchmarks.md: instructions per record). Each case other than a committed record
/// leaves through one branch.
#[inline(always)]
fn step<M: RingMemory>(
    memory: &M,
    at: Locator,
    offset: usize,
    available: usize,
) -> Result<Found, (usize, usize)> {
    // No test of `available == 0` first: the header at the end is a word of the ring like any
    // other, and whatever it holds, the size check below sends the loop to `step_slow`, which
    // reports the end.
    // SAFETY: the caller passes an 8-byte aligned `offset` below `size` (see `Batch::offset`).
    let header_word = unsafe { at.header(memory, offset) };
    // Acquire: pairs with the xchg() on hdr->len in bpf_ringbuf_commit, which is a full
    // barrier: the payload the program wrote before committing is visible once we see the
    // BUSY bit clear.
    let raw = load_acquire_u32(header_word, SyncPoint::HeaderLoad);
    // `step_slow` gets `available` back as the sum of the pair: the loop need not keep it
    // once it has subtracted the record's size.
    if raw & (BUSY_BIT | DISCARD_BIT) != 0 {
        return Err((available, 0));
    }
    // No flag set: the word is the length.
    let len = raw as usize;
    let size = record_size(len);
    // `available <= size` (checked when the read started, and it only shrinks), so this one
    // check keeps the record inside the ring and before producer_pos.
    let (remaining, overflow) = available.overflowing_sub(size);
    if overflow {
        return Err((remaining, size));
    }
    at.prefetch_ahead(memory, offset, size);
    Ok(Found {
        offset,
        len,
        size,
        remaining,
    })
}

/// The read loop where [`step`] returned `Err((remaining, size))` (`available` is their sum):
/// the end, a flagged or corrupt header, and on past discarded records. Returns what it found
/// and how many discarded records it skipped on the way. (It loads the header again; a newer
/// value is as good as the first.)
#[cold]
#[inline(never)]
fn step_slow<M: RingMemory>(
    memory: &M,
    at: Locator,
    mut offset: usize,
    (remaining, size): (usize, usize),
    end: usize,
) -> (Step, u64) {
    let mut available = remaining.wrapping_add(size);
    let mut discarded = 0;
    loop {
        if available == 0 {
            return (Step::End, discarded);
        }
        // SAFETY: as in `step`: `offset` is 8-byte aligned and below `size`.
        let header_word = unsafe { at.header(memory, offset) };
        // Acquire: pairs with the xchg() in bpf_ringbuf_commit, as in `step`.
        let header = RecordHeader::from_raw(load_acquire_u32(header_word, SyncPoint::HeaderLoad));
        let size = header.record_size();
        // As in `step`: every record, discarded and BUSY ones too, must lie before
        // producer_pos. Checked before BUSY on purpose: a real reservation always fits
        // (__bpf_ringbuf_reserve writes its length before it releases producer_pos past it),
        // so a BUSY header that does not fit is garbage — payload bytes under a moved
        // consumer_pos — to report, not a record to wait for.
        let Some(remaining) = available.checked_sub(size) else {
            let error = ReadError::RecordOutOfBounds {
                position: end.wrapping_sub(available),
                header: header.raw(),
                record_size: size,
                available,
            };
            return (Step::Corrupt { error, available }, discarded);
        };
        if header.is_busy() {
            return (Step::Busy { offset, available }, discarded);
        }
        if !header.is_discarded() {
            at.prefetch_ahead(memory, offset, size);
            let record = Found {
                offset,
                len: header.len(),
                size,
                remaining,
            };
            return (Step::Record(record), discarded);
        }
        discarded += 1;
        offset = offset.wrapping_add(size) & at.mask;
        available = remaining;
    }
}

/// Where a batch's read stands after [`slow_next`].
struct Slow<'m> {
    /// What the read returns (`None` at BUSY and at the end).
    item: Option<Result<&'m [u8], ReadError>>,
    /// The cursor's offset and the bytes left after it.
    offset: usize,
    available: usize,
    /// Discarded records skipped.
    discarded: u64,
    /// Why it stopped, if it did not find a record.
    stop: Stop,
}

/// Why [`slow_next`] found no record.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// It found one.
    No,
    /// At a BUSY record.
    Busy,
    /// At the end.
    End,
    /// At a corrupt header (the cursor stays there).
    Corrupt,
}

/// A batch iterator's read where the fast path found no committed record: [`step_slow`], and
/// the record past discarded ones if there is one. Out of line and on values only, so that
/// the read loop it leaves keeps its state in registers.
///
/// # Safety
///
/// As for lending a record from a batch: `memory` is read by the batch whose cursor is at
/// `offset` (`back` gives `available`, as [`step`] returned it) and whose end is `end`, and
/// the batch does not publish a position past the returned record while it is borrowed.
#[cold]
#[inline(never)]
unsafe fn slow_next<M: RingMemory>(
    memory: &M,
    at: Locator,
    offset: usize,
    back: (usize, usize),
    end: usize,
) -> Slow<'_> {
    let (found, discarded) = step_slow(memory, at, offset, back, end);
    let (item, offset, available, stop) = match found {
        Step::Record(Found {
            offset,
            len,
            size,
            remaining,
        }) => {
            // SAFETY: `step_slow` checked `offset + 8 + len <= 2 * size`; the record is
            // committed and the batch keeps it unpublished while it is borrowed (the
            // caller's contract).
            let record = unsafe { at.bytes(memory, offset + HEADER_SIZE, len) };
            let next = offset.wrapping_add(size) & at.mask;
            (Some(Ok(record)), next, remaining, Stop::No)
        }
        Step::Busy { offset, available } => (None, offset, available, Stop::Busy),
        Step::End => (None, offset, 0, Stop::End),
        Step::Corrupt { error, available } => (Some(Err(error)), offset, available, Stop::Corrupt),
    };
    Slow {
        item,
        offset,
        available,
        discarded,
        stop,
    }
}

impl<M: RingMemory> Consumer<M> {
    /// A consumer of the ring in `memory`, starting at the ring's current `consumer_pos`
    /// (so a pinned map reopened mid-stream continues where its last reader stopped).
    ///
    /// [`RingBuf`](crate::RingBuf) makes one for you, safely, and
    /// [`HeapRing::split`](crate::model::HeapRing::split) makes a model ring together with
    /// its consumer; this constructor is for memory you bring yourself
    /// ([`guide::vendoring`](crate::guide::vendoring)).
    ///
    /// # Safety
    ///
    /// A `Consumer` lends records as `&[u8]` slices of the data area and publishes
    /// `consumer_pos` once it is done with them. For as long as it lives:
    ///
    /// - it is the only consumer of this ring in this process: no second `Consumer` or
    ///   [`OverwriteConsumer`](crate::OverwriteConsumer) over the same memory, and no other
    ///   code that stores to `consumer_pos` (a store that moved it past a record a
    ///   [`Batch`] still lends would let the producer overwrite the record under the borrow);
    /// - `consumer_pos` is writable memory (a RINGBUF's consumer page, mapped read-write);
    /// - the producer writes a record's bytes only in space `consumer_pos` has handed back,
    ///   and only before it commits the record (what the kernel does).
    ///
    /// Another *process* holding the map's fd can still write `consumer_pos`: no mapping can
    /// rule that out. This consumer detects it ([`ReadError::ConsumerPosMoved`]) but cannot
    /// prevent it; [`guide::design`](crate::guide::design) states this trust assumption.
    ///
    /// # Errors
    ///
    /// [`GeometryError`] if `memory.size()` is not a valid ring size.
    pub unsafe fn new(memory: M) -> Result<Self, GeometryError> {
        let geometry = Geometry::new(memory.size())?;
        // SAFETY: the caller upholds the contract, which is `from_geometry`'s.
        Ok(unsafe { Self::from_geometry(memory, geometry) })
    }

    /// [`Consumer::new`] for memory whose size is already known to be valid.
    ///
    /// # Safety
    ///
    /// As for [`Consumer::new`], and `geometry` is `Geometry::new(memory.size())`.
    pub(crate) unsafe fn from_geometry(memory: M, geometry: Geometry) -> Self {
        // Acquire: pairs with the store-release of a previous reader of this ring (another
        // process, or this one before a reopen), whose position we continue from.
        let cursor = memory.consumer_pos().load_acquire();
        Self {
            memory,
            geometry,
            cursor,
            stats: Stats::default(),
        }
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The memory this consumer reads.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// The position this consumer has read up to: what it published as `consumer_pos` last
    /// (or found there when it was created). The shared word differs from it only when
    /// someone else wrote it; see [`ReadError::ConsumerPosMoved`].
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// What this consumer has read so far (see [`Stats`]).
    ///
    /// ```
    /// # use bpf_ringbuf::model::{HeapRing, Wakeup};
    /// let (producer, mut consumer) = HeapRing::new(4096)?.split();
    /// producer.output(b"abc", Wakeup::Adaptive).unwrap();
    /// consumer.batch().iter().for_each(drop);
    /// let stats = consumer.stats();
    /// assert_eq!((stats.records, stats.consumed_bytes), (1, 16));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Returns the counters and sets them to zero.
    pub fn take_stats(&mut self) -> Stats {
        core::mem::take(&mut self.stats)
    }

    /// Gives the memory back.
    pub fn into_memory(self) -> M {
        self.memory
    }

    /// Both positions, as the ring's shared words hold them now.
    pub fn positions(&self) -> Positions {
        Positions {
            // Relaxed: only compared with our own cursor, which is what we read from; nothing
            // is read on the strength of it (`follow` fences before adopting it).
            consumer: self.memory.consumer_pos().load_relaxed(),
            // Acquire: pairs with smp_store_release(&rb->producer_pos) in
            // __bpf_ringbuf_reserve, making the headers it wrote visible. (A relaxed load and
            // an acquire fence: the producer page is mapped read-only.)
            producer: load_acquire_usize(self.memory.producer_pos(), SyncPoint::ProducerPosLoad),
        }
    }

    /// Bytes between `consumer_pos` and `producer_pos`: records ready to read, records still
    /// reserved, and discarded ones (what `bpf_ringbuf_query(BPF_RB_AVAIL_DATA)` reports).
    ///
    /// # Errors
    ///
    /// [`ReadError::ConsumerPosMoved`] if someone else wrote `consumer_pos`;
    /// [`ReadError::ConsumerAhead`] or [`ReadError::MisalignedPosition`] if it is corrupt.
    pub fn available(&self) -> Result<usize, ReadError> {
        let positions = self.positions();
        self.validate(positions)
    }

    /// Checks the positions a read starts from; returns the bytes between them.
    #[inline]
    fn validate(&self, Positions { consumer, producer }: Positions) -> Result<usize, ReadError> {
        if consumer != self.cursor {
            return Err(ReadError::ConsumerPosMoved {
                expected: self.cursor,
                found: consumer,
            });
        }
        let available = distance(consumer, producer);
        if available > self.geometry.size() {
            return Err(ReadError::ConsumerAhead {
                consumer_pos: consumer,
                producer_pos: producer,
            });
        }
        if consumer % 8 != 0 {
            return Err(ReadError::MisalignedPosition { position: consumer });
        }
        Ok(available)
    }

    /// Where the read loop finds headers and records in this consumer's memory.
    #[inline(always)]
    fn locator(&self) -> Locator {
        Locator::new(&self.memory, self.geometry)
    }

    /// Publishes `position` as the new `consumer_pos`, moving on from our cursor.
    ///
    /// A compare-exchange, not a store: it publishes only if `consumer_pos` still holds our
    /// cursor, so a write by someone else while we read is not silently overwritten — the
    /// cursor moves on regardless and the next read reports the difference
    /// ([`ReadError::ConsumerPosMoved`]). Once per batch, not per record.
    #[inline]
    fn publish(&mut self, position: usize) {
        // Release (on success): pairs with smp_load_acquire(&rb->consumer_pos) in
        // __bpf_ringbuf_reserve (and in bpf_ringbuf_commit's wakeup check): our reads of the
        // records before `position` are complete before the kernel may reuse their space.
        // Relaxed on failure: nothing is published, and the value found is not used.
        let _ = self.memory.consumer_pos().atomic().compare_exchange(
            self.cursor,
            position,
            ordering(SyncPoint::ConsumerPosPublish, Ordering::Release),
            Ordering::Relaxed,
        );
        self.cursor = position;
    }

    /// Stores `position` as `consumer_pos` and makes it our cursor (the recovery verbs).
    fn store_cursor(&mut self, position: usize) {
        // Release: as in `publish`; the records before `position` are not read again.
        self.memory
            .consumer_pos()
            .atomic()
            .store(position, Ordering::Release);
        self.cursor = position;
    }

    /// Starts a zero-copy batch over the records committed so far.
    ///
    /// The batch lends each record as a `&[u8]` into the ring itself; the borrow checker keeps
    /// every record borrowed from the batch alive no longer than the batch, and the batch
    /// publishes `consumer_pos` once, when it is dropped or [committed](Batch::commit). Reading
    /// stops at the first BUSY record.
    ///
    /// ```
    /// # use bpf_ringbuf::model::{HeapRing, Wakeup};
    /// let (producer, mut consumer) = HeapRing::new(4096)?.split();
    /// # for i in 0..3u8 { producer.output(&[i; 4], Wakeup::Adaptive).unwrap(); }
    /// let batch = consumer.batch();
    /// let records: Vec<&[u8]> = batch.iter().collect::<Result<_, _>>()?;
    /// assert_eq!(records, [&[0u8; 4][..], &[1; 4], &[2; 4]]);
    /// batch.commit();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn batch(&mut self) -> Batch<'_, M> {
        let positions = self.positions();
        let (end, available, error) = match self.validate(positions) {
            Ok(available) => (positions.producer, available, None),
            Err(error) => (self.cursor, 0, Some(error)),
        };
        let start = self.cursor;
        Batch {
            at: self.locator(),
            consumer: self,
            start,
            end: Cell::new(end),
            available: Cell::new(available),
            error: Cell::new(error),
            stopped_at_busy: Cell::new(false),
            records: Cell::new(0),
            discarded: Cell::new(0),
        }
    }

    /// Calls `f` with each committed record, zero-copy, until `budget` records were delivered,
    /// `f` returns [`ControlFlow::Break`], or no committed record is left. Returns the number of
    /// records delivered (the one `f` broke on included).
    ///
    /// `consumer_pos` is published after each internal batch (at least once per call that read
    /// anything). Records that arrive while the call runs are read too, up to the budget.
    ///
    /// ```
    /// # use bpf_ringbuf::model::{HeapRing, Wakeup};
    /// # use std::ops::ControlFlow;
    /// let (producer, mut consumer) = HeapRing::new(4096)?.split();
    /// # for i in 0..10u8 { producer.output(&[i], Wakeup::Adaptive).unwrap(); }
    /// let mut seen = Vec::new();
    /// let n = consumer.consume(usize::MAX, |record| {
    ///     seen.push(record[0]);
    ///     if record[0] == 4 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    /// })?;
    /// assert_eq!(n, 5);
    /// assert_eq!(consumer.consume(3, |_| ControlFlow::Continue(()))?, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ReadError`] when the ring is corrupt (or `consumer_pos` was moved) before any record
    /// was delivered. When it turns up after some were, the call returns their number and the
    /// next call reports it: records before the bad spot are delivered and consumed, nothing
    /// after it is skipped.
    pub fn consume<F>(&mut self, budget: usize, mut f: F) -> Result<usize, ReadError>
    where
        F: FnMut(&[u8]) -> ControlFlow<()>,
    {
        let mut delivered = 0;
        while delivered < budget {
            let batch = self.batch();
            // The iterator counts records in registers and adds them to the batch when dropped.
            let mut records = batch.iter();
            while delivered < budget {
                match records.next() {
                    Some(Ok(record)) => {
                        delivered += 1;
                        if f(record).is_break() {
                            return Ok(delivered);
                        }
                    }
                    // Records delivered before it stay delivered (and consumed): the call says
                    // how many, and the next call reports the error, which moved nothing.
                    Some(Err(error)) if delivered == 0 => return Err(error),
                    Some(Err(_)) => return Ok(delivered),
                    None => break,
                }
            }
            drop(records);
            // Another round only if this one moved and ended at producer_pos (more may have
            // been committed since); a BUSY head would stop the next one just the same.
            if batch.consumed_bytes() == 0 || batch.stopped_at_busy.get() {
                break;
            }
        }
        Ok(delivered)
    }

    /// Reads the next committed record with `f` and consumes it if `f` returns `Ok`. Always
    /// inlined: in a caller's loop of copying reads, the ring's addresses then stay in
    /// registers from one read to the next.
    #[inline(always)]
    fn read_one<R>(
        &mut self,
        f: impl FnOnce(&[u8]) -> Result<R, ReadError>,
    ) -> Result<Option<R>, ReadError> {
        let positions = self.positions();
        let available = self.validate(positions)?;
        let at = self.locator();
        let offset = positions.consumer & at.mask;
        let (found, discarded) = match step(&self.memory, at, offset, available) {
            Ok(record) => (Step::Record(record), 0),
            Err(back) => step_slow(&self.memory, at, offset, back, positions.producer),
        };
        // Where the read ends: past the discarded records skipped, and past the record if `f`
        // takes it.
        let (position, result) = match found {
            Step::End => (positions.producer, Ok(None)),
            Step::Busy { available, .. } => {
                self.stats.busy_stops += 1;
                (positions.producer.wrapping_sub(available), Ok(None))
            }
            Step::Corrupt { error, available } => {
                (positions.producer.wrapping_sub(available), Err(error))
            }
            Step::Record(Found {
                offset,
                len,
                size,
                remaining,
            }) => {
                // SAFETY: `step` checked `offset + 8 + len <= 2 * size` (the record lies
                // before producer_pos, at most one ring size ahead of an offset below
                // `size`). The record is committed (BUSY clear, seen with Acquire) and lies
                // at or after consumer_pos, so the kernel does not write it until we publish
                // a consumer_pos past it, which happens below, after `f` returned.
                let record = unsafe { at.bytes(&self.memory, offset + HEADER_SIZE, len) };
                match f(record) {
                    Ok(value) => {
                        self.stats.records += 1;
                        (positions.producer.wrapping_sub(remaining), Ok(Some(value)))
                    }
                    // The record stays; the discarded ones before it are consumed.
                    Err(error) => (
                        positions.producer.wrapping_sub(remaining + size),
                        Err(error),
                    ),
                }
            }
        };
        if position != positions.consumer {
            self.publish(position);
            let stats = &mut self.stats;
            stats.discarded += discarded;
            stats.consumed_bytes += distance(positions.consumer, position) as u64;
            stats.batches += 1;
        }
        result
    }

    /// Copies the next committed record into `buf` and consumes it; returns its length, or
    /// `None` if no committed record is waiting.
    ///
    /// ```
    /// # use bpf_ringbuf::model::{HeapRing, Wakeup};
    /// # use bpf_ringbuf::ReadError;
    /// let (producer, mut consumer) = HeapRing::new(4096)?.split();
    /// # producer.output(b"0123456789", Wakeup::Adaptive).unwrap();
    /// let mut small = [0u8; 4];
    /// assert_eq!(
    ///     consumer.read_into(&mut small),
    ///     Err(ReadError::BufferTooSmall { needed: 10, capacity: 4 })
    /// );
    /// let mut buf = [0u8; 64];
    /// assert_eq!(consumer.read_into(&mut buf)?, Some(10)); // nothing was lost
    /// assert_eq!(&buf[..10], b"0123456789");
    /// assert_eq!(consumer.read_into(&mut buf)?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ReadError::BufferTooSmall`] if the record does not fit (it stays in the ring), or a
    /// ring-corruption [`ReadError`].
    #[inline]
    pub fn read_into(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ReadError> {
        self.read_one(|record| {
            let capacity = buf.len();
            let target = buf
                .get_mut(..record.len())
                .ok_or(ReadError::BufferTooSmall {
                    needed: record.len(),
                    capacity,
                })?;
            target.copy_from_slice(record);
            Ok(record.len())
        })
    }

    /// Replaces the contents of `buf` with the next committed record and consumes it; returns
    /// whether there was one. `buf`'s allocation is reused, so a steady stream of records of
    /// similar sizes does not allocate.
    ///
    /// # Errors
    ///
    /// A ring-corruption [`ReadError`].
    #[cfg(feature = "alloc")]
    pub fn read_vec(&mut self, buf: &mut alloc::vec::Vec<u8>) -> Result<bool, ReadError> {
        self.read_one(|record| {
            buf.clear();
            buf.extend_from_slice(record);
            Ok(())
        })
        .map(|read| read.is_some())
    }

    /// The next committed record as an owned `Vec`, consumed; `None` if no committed record
    /// is waiting.
    ///
    /// # Errors
    ///
    /// A ring-corruption [`ReadError`].
    #[cfg(feature = "alloc")]
    pub fn read_owned(&mut self) -> Result<Option<alloc::vec::Vec<u8>>, ReadError> {
        self.read_one(|record| Ok(record.to_vec()))
    }

    /// The check to make right before going to sleep until the kernel signals new data.
    ///
    /// The kernel wakes a sleeping consumer only when it commits the record at the
    /// *published* `consumer_pos` (bpf_ringbuf_commit: `cons_pos == rec_pos`). A consumer that
    /// goes to sleep without having published how far it read, or that misses a commit that
    /// raced with its last look, sleeps past data. This check runs a full fence after the
    /// last publish (every batch publishes when it ends), then looks again: if it returns
    /// [`Readiness::Empty`] or [`Readiness::HeadBusy`], any later commit at our position
    /// sees our `consumer_pos` and wakes us.
    pub fn check_before_sleep(&self) -> Readiness {
        // SeqCst fence: pairs with the full barrier of the xchg() in bpf_ringbuf_commit (and of
        // the reservation's store-release followed by that xchg). Store-buffer pattern: we
        // stored consumer_pos then load producer_pos/header; the kernel stores the header then
        // loads consumer_pos. With a full barrier on both sides, at least one of us sees the
        // other's store: either we see the new record here, or the kernel sees our position
        // and wakes us.
        fence_at(SyncPoint::SleepFence, Ordering::SeqCst);
        let positions = self.positions();
        let Ok(available) = self.validate(positions) else {
            // A read reports what is wrong.
            return Readiness::Readable;
        };
        if available == 0 {
            return Readiness::Empty;
        }
        let offset = self.geometry.offset(positions.consumer);
        // Acquire: pairs with the xchg() in bpf_ringbuf_commit, as in `step`.
        let header = RecordHeader::from_raw(load_acquire_u32(
            self.memory.header(offset),
            SyncPoint::HeaderLoad,
        ));
        // A BUSY header that does not fit is corruption, which a read reports (see `step_slow`).
        if header.is_busy() && header.record_size() <= available {
            Readiness::HeadBusy
        } else {
            Readiness::Readable
        }
    }

    /// After [`ReadError::ConsumerPosMoved`]: publishes this consumer's own cursor again and
    /// continues from it, so nothing it had not read is lost.
    ///
    /// Exact as long as the producer has not reused the space after our cursor, which it
    /// could do once someone moved `consumer_pos` forward: this checks that `producer_pos`
    /// is still within one ring size of the cursor, and refuses otherwise (then
    /// [`resync`](Self::resync)). A producer reservation racing with this call may still have
    /// used the other writer's value; [`guide::design`](crate::guide::design) discusses it.
    ///
    /// # Errors
    ///
    /// [`ReadError::ConsumerAhead`] (naming our cursor) if `producer_pos` is more than a ring
    /// size past it: records after the cursor may have been overwritten.
    pub fn resume(&mut self) -> Result<(), ReadError> {
        let producer = load_acquire_usize(self.memory.producer_pos(), SyncPoint::ProducerPosLoad);
        if distance(self.cursor, producer) > self.geometry.size() {
            return Err(ReadError::ConsumerAhead {
                consumer_pos: self.cursor,
                producer_pos: producer,
            });
        }
        self.store_cursor(self.cursor);
        Ok(())
    }

    /// After [`ReadError::ConsumerPosMoved`]: adopts the `consumer_pos` the other writer
    /// stored as this consumer's cursor, skipping (or re-reading) what lies between.
    ///
    /// Use it when the other writer is a legitimate reader that took over; the next read
    /// validates the adopted position like any other (a position in the middle of a record
    /// gives a [`ReadError`], not garbage records, only when its bytes contradict the
    /// protocol: prefer [`resume`](Self::resume) or [`resync`](Self::resync) when in doubt).
    pub fn follow(&mut self) {
        // Acquire: pairs with the other writer's store-release, after which it read nothing
        // before that position.
        self.cursor = self.memory.consumer_pos().load_acquire();
    }

    /// Moves `consumer_pos` and this consumer's cursor to the current `producer_pos`,
    /// dropping everything between; returns the number of bytes skipped from the cursor. The
    /// way out after a [`ReadError`] that reports a corrupt ring, or when this consumer's
    /// cursor itself cannot be trusted (a fresh open onto a corrupt ring).
    ///
    /// The count is at most the ring size, the most the ring can hold: when the cursor was
    /// corrupt (ahead of `producer_pos`, or further behind than the ring holds), the distance
    /// says nothing about the data lost.
    pub fn resync(&mut self) -> usize {
        // Acquire: as in `positions`, so a read from the new position sees the headers.
        let producer = load_acquire_usize(self.memory.producer_pos(), SyncPoint::ProducerPosLoad);
        let skipped = distance(self.cursor, producer).min(self.geometry.size());
        self.store_cursor(producer);
        skipped
    }
}

impl<M: RingMemory> core::fmt::Debug for Consumer<M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Consumer")
            .field("geometry", &self.geometry)
            .field("positions", &self.positions())
            .finish()
    }
}

/// Records lent zero-copy from a [`Consumer`]; publishes `consumer_pos` once when it ends.
///
/// Records are `&[u8]` slices of the ring borrowed from the batch (not from the consumer), so
/// any number of them can be held at once, and none can outlive the batch: the borrow checker
/// rules out reading a record after its space was handed back to the kernel.
///
/// ```compile_fail,E0505
/// # use bpf_ringbuf::model::HeapRing;
/// let (_producer, mut consumer) = HeapRing::new(4096).unwrap().split();
/// let batch = consumer.batch();
/// let record = batch.next_record();
/// batch.commit(); // error: `batch` is still borrowed by `record`
/// drop(record);
/// ```
#[must_use = "a batch reads nothing until its records are taken"]
pub struct Batch<'c, M: RingMemory> {
    consumer: &'c mut Consumer<M>,
    /// The consumer's [`Locator`], a copy the compiler can keep in registers.
    at: Locator,
    /// `consumer_pos` when the batch began.
    start: usize,
    /// Where reading stops: `producer_pos` when the batch began, or where corruption was found.
    end: Cell<usize>,
    /// Bytes from the next record to look at to `end`: the read cursor is `end - available`.
    /// The one word a read moves (an iterator carries its own copy and writes it back here).
    available: Cell<usize>,
    /// A corrupt `consumer_pos` found when the batch began, reported by the first read.
    error: Cell<Option<ReadError>>,
    /// The last read stopped at a BUSY record.
    stopped_at_busy: Cell<bool>,
    /// Records lent so far (added to the consumer's [`Stats`] when the batch ends).
    records: Cell<u64>,
    /// Discarded records skipped so far.
    discarded: Cell<u64>,
}

impl<'c, M: RingMemory> Batch<'c, M> {
    /// The next committed record, or `None` at the end of the batch or at a BUSY record.
    /// Discarded records are skipped (and consumed).
    ///
    /// After an error the batch ends: later calls return `None`.
    #[inline]
    pub fn next_record(&self) -> Option<Result<&[u8], ReadError>> {
        let available = self.available.get();
        let (next, _) = self.advance(self.offset(available), available);
        if let Some(Ok(_)) = &next {
            self.records.set(self.records.get() + 1);
        }
        next
    }

    /// The next committed record at or after the one at `offset`, `available` bytes before
    /// the end (the batch's cursor, masked, and `self.available`), without counting it in the
    /// batch's statistics: callers count in a local variable (a register in the read loop)
    /// and add it up once (see [`BatchIter`]). Returns the offset of the record after it.
    #[inline(always)]
    fn advance(
        &self,
        offset: usize,
        available: usize,
    ) -> (Option<Result<&[u8], ReadError>>, usize) {
        let memory = &self.consumer.memory;
        let back = match step(memory, self.at, offset, available) {
            Ok(found) => {
                let (record, next) = self.lend(found);
                return (Some(Ok(record)), next);
            }
            Err(back) => back,
        };
        let end = self.end.get();
        let (found, discarded) = step_slow(memory, self.at, offset, back, end);
        self.discarded.set(self.discarded.get() + discarded);
        match found {
            Step::Record(found) => {
                let (record, next) = self.lend(found);
                (Some(Ok(record)), next)
            }
            Step::Busy { offset, available } => {
                self.available.set(available);
                self.stopped_at_busy.set(true);
                (None, offset)
            }
            Step::End => {
                self.available.set(0);
                (self.error.take().map(Err), offset)
            }
            Step::Corrupt { error, available } => {
                // Reading stops at the corrupt record: the cursor stays there.
                self.end.set(end.wrapping_sub(available));
                self.available.set(0);
                (Some(Err(error)), offset)
            }
        }
    }

    /// Lends the record `found` and moves the cursor past it; returns the record and the
    /// offset of the next one.
    #[inline(always)]
    fn lend(&self, found: Found) -> (&[u8], usize) {
        let Found {
            offset,
            len,
            size,
            remaining,
        } = found;
        self.available.set(remaining);
        let consumer = &*self.consumer;
        // SAFETY: `step` checked `offset + 8 + len <= 2 * size`. The record is committed (BUSY
        // clear, seen with Acquire), at or after consumer_pos and before producer_pos, so
        // nobody writes it until consumer_pos moves past it. Only this batch moves
        // consumer_pos, when it ends (`commit`/`drop`), and ending takes the batch by value or
        // `&mut`, which the borrow checker forbids while the returned `&self`-borrowed slice
        // lives.
        let record = unsafe { self.at.bytes(&consumer.memory, offset + HEADER_SIZE, len) };
        if weakened(SyncPoint::BatchEarlyPublish) {
            // A loom negative control: publish while the record is still lent.
            consumer
                .memory
                .consumer_pos()
                .atomic()
                .store(self.end.get().wrapping_sub(remaining), Ordering::Release);
        }
        (record, offset.wrapping_add(size) & self.at.mask)
    }

    /// The cursor's offset in the data area when `available` bytes are left: the position
    /// `end - available` masked, and 8-byte aligned, as the read loop needs it. (Every cursor
    /// is, but one at a corrupt `consumer_pos`, which the batch does not read from.)
    #[inline(always)]
    fn offset(&self, available: usize) -> usize {
        self.end.get().wrapping_sub(available) & self.at.mask & !7
    }

    /// An iterator over the rest of the batch's records (see [`Batch::next_record`]).
    pub fn iter(&self) -> BatchIter<'_, 'c, M> {
        let available = self.available.get();
        BatchIter {
            batch: self,
            offset: self.offset(available),
            available,
            records: 0,
        }
    }

    /// Bytes consumed so far by this batch (records, discarded records and headers).
    pub fn consumed_bytes(&self) -> usize {
        distance(self.start, self.cursor())
    }

    /// The position of the next record to look at.
    fn cursor(&self) -> usize {
        self.end.get().wrapping_sub(self.available.get())
    }

    /// Whether the last read stopped at a record that is still BUSY (reserved).
    pub fn stopped_at_busy(&self) -> bool {
        self.stopped_at_busy.get()
    }

    /// The `producer_pos` this batch reads up to.
    pub fn producer_pos(&self) -> usize {
        self.end.get()
    }

    /// Ends the batch, publishing `consumer_pos` past every record read (dropping the batch
    /// does the same).
    pub fn commit(self) {}
}

impl<M: RingMemory> Drop for Batch<'_, M> {
    // Inlined, so that a batch that lives in its caller's frame stays in registers: a call
    // that takes its address would make every per-record update of its cells a store and a
    // load again after each header's acquire fence.
    #[inline]
    fn drop(&mut self) {
        let cursor = self.cursor();
        let stats = &mut self.consumer.stats;
        if self.stopped_at_busy.get() {
            stats.busy_stops += 1;
        }
        if cursor != self.start {
            self.consumer.publish(cursor);
            let stats = &mut self.consumer.stats;
            stats.records += self.records.get();
            stats.discarded += self.discarded.get();
            stats.consumed_bytes += distance(self.start, cursor) as u64;
            stats.batches += 1;
        }
    }
}

impl<M: RingMemory> core::fmt::Debug for Batch<'_, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Batch")
            .field("start", &self.start)
            .field("cursor", &self.cursor())
            .field("end", &self.end.get())
            .finish()
    }
}

/// Iterator over a [`Batch`]'s records; each borrows the batch.
///
/// It carries the batch's cursor (masked) and the records it yields in its own fields, which
/// the compiler keeps in registers, writes one word back to the batch per record (so the
/// batch, and any other reader of it, always knows how far it got), and adds its counts to
/// the batch when it is dropped.
pub struct BatchIter<'b, 'c, M: RingMemory> {
    batch: &'b Batch<'c, M>,
    /// The batch's cursor, masked: where the next record starts in the data area.
    offset: usize,
    /// The batch's `available` as this iterator last wrote it; if the batch's differs,
    /// another reader of the batch moved on, and this iterator continues from there.
    available: usize,
    /// Records yielded, not yet added to the batch's count.
    records: u64,
}

impl<M: RingMemory> Drop for BatchIter<'_, '_, M> {
    fn drop(&mut self) {
        let batch = self.batch;
        batch.records.set(batch.records.get() + self.records);
    }
}

impl<M: RingMemory> core::fmt::Debug for BatchIter<'_, '_, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("BatchIter").field(self.batch).finish()
    }
}

impl<'b, M: RingMemory> Iterator for BatchIter<'b, '_, M> {
    type Item = Result<&'b [u8], ReadError>;

    // Always inlined: it is the read loop, and a call per record would cost more than the
    // loop's body (the compiler declines to inline it once several loops use it).
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        let batch = self.batch;
        let available = batch.available.get();
        if available != self.available {
            // `Batch::next_record` or another iterator read on (in a loop of ours alone the
            // compiler sees the word unchanged and drops this test).
            self.available = available;
            self.offset = batch.offset(available);
        }
        // The fast path, here and not in `advance`: the compiler keeps a loop this small in
        // registers, and the rest is out of line.
        let memory = &batch.consumer.memory;
        let back = match step(memory, batch.at, self.offset, available) {
            Ok(found) => {
                let (record, offset) = batch.lend(found);
                self.offset = offset;
                self.available = found.remaining;
                self.records += 1;
                return Some(Ok(record));
            }
            Err(back) => back,
        };
        let end = batch.end.get();
        // SAFETY: the batch's own cursor and end; it publishes only when it ends, which the
        // borrow of the returned record prevents.
        let slow = unsafe { slow_next(memory, batch.at, self.offset, back, end) };
        batch.discarded.set(batch.discarded.get() + slow.discarded);
        self.offset = slow.offset;
        match slow.stop {
            Stop::No => {
                if weakened(SyncPoint::BatchEarlyPublish) {
                    // A loom negative control, as in `lend`.
                    batch
                        .consumer
                        .memory
                        .consumer_pos()
                        .atomic()
                        .store(end.wrapping_sub(slow.available), Ordering::Release);
                }
                self.records += 1;
            }
            Stop::Busy => batch.stopped_at_busy.set(true),
            Stop::End => {
                batch.available.set(0);
                self.available = 0;
                return batch.error.take().map(Err);
            }
            Stop::Corrupt => {
                batch.end.set(end.wrapping_sub(slow.available));
                self.available = 0;
                batch.available.set(0);
                return slow.item;
            }
        }
        self.available = slow.available;
        batch.available.set(slow.available);
        slow.item
    }
}

impl<'b, 'c, M: RingMemory> IntoIterator for &'b Batch<'c, M> {
    type Item = Result<&'b [u8], ReadError>;
    type IntoIter = BatchIter<'b, 'c, M>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}
