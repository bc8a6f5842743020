//! Reading a ring in overwrite mode (`BPF_F_RB_OVERWRITE`, Linux 6.19+): a flight recorder.
//!
//! An overwrite-mode RINGBUF never refuses a reservation because the reader is slow: when the
//! ring is full, `__bpf_ringbuf_reserve` moves `overwrite_pos` forward over whole committed
//! records until the new one fits, and the new record's bytes land where the oldest ones were —
//! possibly while a reader is looking at them. So the reader here works like a seqlock reader:
//!
//! ```text
//! prod  = load_acquire(producer_pos)
//! over  = load_acquire(overwrite_pos)          -- written before producer_pos is released
//! start = max(consumer_pos, over)               -- everything before `over` is gone
//! header at start: BUSY -> stop; a length that does not fit -> re-check `over`
//! copy the payload with atomic word loads
//! fence(acquire); over' = load(overwrite_pos)
//! over' > start -> the copy may be torn: drop it, count it lost, go on from over'
//! else          -> deliver the copy; consumer_pos = next record
//! ```
//!
//! The producer page and the data area are mapped read-only, so every acquire load here is a
//! relaxed load and an acquire fence (see `sync::load_acquire_usize`).
//!
//! Records are never lent zero-copy here: there is no way to keep the kernel from overwriting
//! them while borrowed. [`OverwriteConsumer`] therefore only has copying reads, and the
//! zero-copy [`Consumer`](crate::Consumer) is not offered for overwrite-mode rings by the Linux
//! front end.
//!
//! The validation is exact when the producer's stores become visible in program order (x86's
//! TSO): the kernel writes `overwrite_pos` before it releases `producer_pos`, and the new
//! record's bytes after both. On weakly ordered CPUs the kernel has no barrier between its
//! `overwrite_pos` store and the program's later payload stores, so a torn copy could in
//! principle pass validation there; `docs/protocol.md` discusses it.

use core::ops::ControlFlow;

use crate::error::{GeometryError, ReadError};
use crate::geometry::{distance, is_after, Geometry, Positions, Readiness};
use crate::header::{RecordHeader, HEADER_SIZE};
use crate::memory::OverwriteMemory;
use crate::sync::atomic::{fence, Ordering};
use crate::sync::{fence_at, load_acquire_u32, load_acquire_usize, weakened, SyncPoint};

/// Counters of an [`OverwriteConsumer`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OverwriteStats {
    /// Records delivered.
    pub records: u64,
    /// Payload bytes delivered.
    pub bytes: u64,
    /// Ring bytes the producer overwrote before they were read (headers and padding
    /// included): whole records skipped, plus records whose copy was torn.
    pub lost_bytes: u64,
    /// Records whose copy was found torn (overwritten while being copied) and dropped.
    pub torn_records: u64,
}

/// Where a read starts, and how far it may go.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: usize,
    producer_pos: usize,
}

/// What one copy attempt found.
enum Copy {
    /// Nothing (more) before producer_pos.
    End,
    /// The record there is reserved, not committed.
    Busy,
    /// A discarded record; the next starts at the given position.
    Discarded(usize),
    /// A valid copy of `len` bytes; the next record starts at `next`.
    Record { len: usize, next: usize },
    /// The producer overwrote the record (or its header) while we read it; `overwrite_pos` is now
    /// at the given position.
    Overwritten(usize),
    /// The record does not fit the buffer (it was not consumed).
    TooSmall(usize),
    /// The header is inconsistent and was not overwritten: a corrupt ring.
    Corrupt(ReadError),
}

/// Reads a ring in overwrite mode, copying each record and validating the copy.
///
/// # Examples
///
/// ```
/// use bpf_ringbuf::model::{HeapRing, Wakeup};
///
/// // An overwrite-mode ring with its producer (a model of the kernel's) and reader.
/// let (producer, mut reader) = HeapRing::new(64)?.split_overwrite();
/// for i in 0..10u8 {
///     producer.output(&[i; 8], Wakeup::Adaptive).unwrap(); // never refused
/// }
/// // The newest records, oldest first: 64 bytes hold three 16-byte records.
/// let records = reader.snapshot_vec()?;
/// assert_eq!(records, [[7u8; 8], [8; 8], [9; 8]]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct OverwriteConsumer<M: OverwriteMemory> {
    memory: M,
    geometry: Geometry,
    /// The `consumer_pos` this reader published last (or found when it was created); the
    /// shared word differs only when someone else wrote it ([`ReadError::ConsumerPosMoved`]).
    cursor: usize,
    stats: OverwriteStats,
}

impl<M: OverwriteMemory> OverwriteConsumer<M> {
    /// A reader of the overwrite-mode ring in `memory`, starting at its current
    /// `consumer_pos`.
    ///
    /// [`OverwriteRingBuf`](crate::OverwriteRingBuf) makes one for you, safely, and
    /// [`HeapRing::split_overwrite`](crate::model::HeapRing::split_overwrite) makes a model
    /// ring with its reader; this constructor is for memory you bring yourself.
    ///
    /// # Safety
    ///
    /// For as long as the reader lives it is the only reader of this ring in this process (no
    /// other `OverwriteConsumer` or [`Consumer`](crate::Consumer) over the same memory, no other
    /// code storing to `consumer_pos`), and `consumer_pos` is writable memory. (It lends no
    /// record bytes, so a producer racing with it is not a soundness question: torn copies are
    /// detected and dropped.)
    ///
    /// # Errors
    ///
    /// [`GeometryError`] if `memory.size()` is not a valid ring size.
    pub unsafe fn new(memory: M) -> Result<Self, GeometryError> {
        let geometry = Geometry::new(memory.size())?;
        // SAFETY: the caller upholds the contract, which is `from_geometry`'s.
        Ok(unsafe { Self::from_geometry(memory, geometry) })
    }

    /// [`OverwriteConsumer::new`] for memory whose size is known to be valid.
    ///
    /// # Safety
    ///
    /// As for [`OverwriteConsumer::new`], and `geometry` is `Geometry::new(memory.size())`.
    pub(crate) unsafe fn from_geometry(memory: M, geometry: Geometry) -> Self {
        // Acquire: pairs with a previous reader's store-release.
        let cursor = memory.consumer_pos().load_acquire();
        Self {
            memory,
            geometry,
            cursor,
            stats: OverwriteStats::default(),
        }
    }

    /// The memory this reader reads.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// Counters of what was read and lost so far.
    pub fn stats(&self) -> OverwriteStats {
        self.stats
    }

    /// The `consumer_pos` this reader published last (see [`Consumer::cursor`]).
    ///
    /// [`Consumer::cursor`]: crate::Consumer::cursor
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// `consumer_pos` and `producer_pos`, as the ring's shared words hold them now.
    pub fn positions(&self) -> Positions {
        Positions {
            // Relaxed: only compared with our cursor.
            consumer: self.memory.consumer_pos().load_relaxed(),
            // Acquire: pairs with smp_store_release(&rb->producer_pos) in __bpf_ringbuf_reserve.
            producer: load_acquire_usize(self.memory.producer_pos(), SyncPoint::ProducerPosLoad),
        }
    }

    /// `overwrite_pos`: every record before it has been overwritten.
    pub fn overwrite_pos(&self) -> usize {
        // Acquire: the kernel's smp_load_acquire(&rb->overwrite_pos) in bpf_ringbuf_query.
        load_acquire_usize(self.memory.overwrite_pos(), SyncPoint::ProducerPosLoad)
    }

    /// Bytes of records still in the ring and not yet read: `producer_pos - max(consumer_pos,
    /// overwrite_pos)`, what `bpf_ringbuf_query(BPF_RB_AVAIL_DATA)` reports in overwrite mode.
    ///
    /// # Errors
    ///
    /// [`ReadError::ConsumerPosMoved`] if someone else wrote `consumer_pos`;
    /// [`ReadError::ConsumerAhead`] if it is ahead of `producer_pos`.
    pub fn available(&self) -> Result<usize, ReadError> {
        self.check_cursor()?;
        self.window(self.cursor)
            .map(|w| distance(w.start, w.producer_pos))
    }

    /// Whether the shared `consumer_pos` still holds our cursor.
    fn check_cursor(&self) -> Result<(), ReadError> {
        let found = self.memory.consumer_pos().load_relaxed();
        if found != self.cursor {
            return Err(ReadError::ConsumerPosMoved {
                expected: self.cursor,
                found,
            });
        }
        Ok(())
    }

    /// The positions a read goes between, starting no earlier than `from`.
    fn window(&self, from: usize) -> Result<Window, ReadError> {
        // Acquire: pairs with smp_store_release(&rb->producer_pos) in __bpf_ringbuf_reserve,
        // which is ordered after WRITE_ONCE(rb->overwrite_pos): the overwrite_pos loaded next
        // is at least the one that reservation wrote.
        let mut producer_pos =
            load_acquire_usize(self.memory.producer_pos(), SyncPoint::ProducerPosLoad);
        let mut overwrite_pos = self.overwrite_pos();
        // A fast producer may have moved overwrite_pos past the producer_pos we read: read
        // producer_pos again (a few times at most; each time the producer made progress).
        for _ in 0..4 {
            if !is_after(overwrite_pos, producer_pos) {
                break;
            }
            producer_pos =
                load_acquire_usize(self.memory.producer_pos(), SyncPoint::ProducerPosLoad);
            overwrite_pos = self.overwrite_pos();
        }
        let start = if is_after(overwrite_pos, from) {
            overwrite_pos
        } else {
            from
        };
        if is_after(start, producer_pos) || distance(start, producer_pos) > self.geometry.size() {
            return Err(ReadError::ConsumerAhead {
                consumer_pos: start,
                producer_pos,
            });
        }
        if start % 8 != 0 {
            return Err(ReadError::MisalignedPosition { position: start });
        }
        Ok(Window {
            start,
            producer_pos,
        })
    }

    /// Whether the record at `position` may have been overwritten; if so, where overwrite_pos is.
    #[inline]
    fn overwritten(&self, position: usize) -> Option<usize> {
        let overwrite_pos = self.memory.overwrite_pos().load_relaxed();
        is_after(overwrite_pos, position).then_some(overwrite_pos)
    }

    /// Where to go on after the producer overwrote the record at `position`: `resume`, the
    /// `overwrite_pos` found, if it is aligned and not more than a ring size past
    /// `producer_pos` (a reservation moves `overwrite_pos` before it releases `producer_pos`,
    /// never further than its own size); otherwise the ring is corrupt. A `resume` more than a
    /// ring size *behind* `producer_pos` is only stale (the producer went on meanwhile): the next
    /// copy finds the record there overwritten too.
    fn resume_at(&self, resume: usize) -> Result<usize, ReadError> {
        if resume % 8 != 0 {
            return Err(ReadError::MisalignedPosition { position: resume });
        }
        let producer_pos =
            load_acquire_usize(self.memory.producer_pos(), SyncPoint::ProducerPosLoad);
        if is_after(resume, producer_pos) && distance(producer_pos, resume) > self.geometry.size() {
            return Err(ReadError::ConsumerAhead {
                consumer_pos: resume,
                producer_pos,
            });
        }
        Ok(resume)
    }

    /// Copies the record at `position` into `buf` and validates the copy.
    fn copy(&self, position: usize, producer_pos: usize, buf: &mut [u8]) -> Copy {
        let available = distance(position, producer_pos);
        if available == 0 {
            return Copy::End;
        }
        let offset = self.geometry.offset(position);
        // Acquire: pairs with the xchg() in bpf_ringbuf_commit that clears BUSY after the
        // payload was written.
        let header = RecordHeader::from_raw(load_acquire_u32(
            self.memory.header(offset),
            SyncPoint::HeaderLoad,
        ));
        if header.is_busy() {
            // A BUSY record the producer has not reached for overwriting yet; if it has, the
            // header we saw belongs to the new record and we must not stop on it.
            return match self.overwritten(position) {
                Some(next) => Copy::Overwritten(next),
                None => Copy::Busy,
            };
        }
        let record_size = header.record_size();
        if record_size > available {
            return match self.overwritten(position) {
                Some(next) => Copy::Overwritten(next),
                None => Copy::Corrupt(ReadError::RecordOutOfBounds {
                    position,
                    header: header.raw(),
                    record_size,
                    available,
                }),
            };
        }
        let next = position.wrapping_add(record_size);
        if header.is_discarded() {
            return match self.overwritten(position) {
                Some(resume) => Copy::Overwritten(resume),
                None => Copy::Discarded(next),
            };
        }
        let len = header.len();
        let Some(target) = buf.get_mut(..len) else {
            return match self.overwritten(position) {
                Some(resume) => Copy::Overwritten(resume),
                None => Copy::TooSmall(len),
            };
        };
        let payload = offset + HEADER_SIZE;
        for (index, chunk) in target.chunks_mut(4).enumerate() {
            // Relaxed: a seqlock-style read; the fence below orders it before the re-check.
            // `payload + 4 * index < offset + record_size <= 2 * size`, inside the double map.
            let word = self
                .memory
                .data_word(payload + 4 * index)
                .load_relaxed()
                .to_ne_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        // Acquire fence: the payload loads above complete before the overwrite_pos load below
        // (seqlock read side). Pairs with the kernel writing overwrite_pos (WRITE_ONCE in
        // __bpf_ringbuf_reserve) before the new record's bytes: if we read new bytes, we also
        // see the new overwrite_pos. (A loom negative control leaves the fence out.)
        fence_at(SyncPoint::OverwriteFence, Ordering::Acquire);
        if weakened(SyncPoint::OverwriteRecheck) {
            // Loom negative control only: deliver the copy without validating it.
            return Copy::Record { len, next };
        }
        match self.overwritten(position) {
            Some(resume) => Copy::Overwritten(resume),
            None => Copy::Record { len, next },
        }
    }

    /// Publishes `position` as `consumer_pos`, moving on from our cursor; as
    /// `Consumer::publish`, a compare-exchange that leaves a write by someone else in place
    /// for the next read to report.
    fn publish(&mut self, position: usize) {
        // Release (on success): pairs with smp_load_acquire(&rb->consumer_pos) in
        // bpf_ringbuf_commit's wakeup check and in ringbuf_avail_data_sz (poll readiness).
        let _ = self.memory.consumer_pos().atomic().compare_exchange(
            self.cursor,
            position,
            Ordering::Release,
            Ordering::Relaxed,
        );
        self.cursor = position;
    }

    /// Stores `position` as `consumer_pos` and makes it our cursor (the recovery verbs).
    fn store_cursor(&mut self, position: usize) {
        // Release: as in `publish`.
        self.memory
            .consumer_pos()
            .atomic()
            .store(position, Ordering::Release);
        self.cursor = position;
    }

    /// Copies the oldest record not yet read (and not overwritten) into `buf` and consumes it;
    /// returns its length, or `None` if there is none. Records overwritten before they could
    /// be read are skipped and counted in [`stats`](Self::stats).
    ///
    /// # Errors
    ///
    /// [`ReadError::BufferTooSmall`] if the record does not fit (it stays in the ring), or a
    /// ring-corruption [`ReadError`].
    pub fn read_into(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ReadError> {
        self.check_cursor()?;
        let consumer_pos = self.cursor;
        let window = self.window(consumer_pos)?;
        self.add_lost(distance(consumer_pos, window.start));
        let mut position = window.start;
        let result = loop {
            match self.copy(position, window.producer_pos, buf) {
                Copy::End | Copy::Busy => break Ok(None),
                Copy::Discarded(next) => position = next,
                Copy::Record { len, next } => {
                    self.stats.records += 1;
                    self.stats.bytes += len as u64;
                    position = next;
                    break Ok(Some(len));
                }
                Copy::Overwritten(resume) => {
                    let resume = match self.resume_at(resume) {
                        Ok(resume) => resume,
                        Err(error) => break Err(error),
                    };
                    self.stats.torn_records += 1;
                    self.add_lost(distance(position, resume));
                    if is_after(resume, window.producer_pos) {
                        // The producer lapped us while we read: start over from a fresh window
                        // on the next call.
                        position = resume;
                        break Ok(None);
                    }
                    position = resume;
                }
                Copy::TooSmall(needed) => {
                    break Err(ReadError::BufferTooSmall {
                        needed,
                        capacity: buf.len(),
                    })
                }
                Copy::Corrupt(error) => break Err(error),
            }
        };
        if position != consumer_pos {
            self.publish(position);
        }
        result
    }

    /// Reads (and consumes) records one by one into `scratch`, calling `f` with each copy,
    /// until `budget` records were delivered, `f` breaks, or none is left. Returns the number
    /// delivered.
    ///
    /// # Errors
    ///
    /// As for [`read_into`](Self::read_into).
    pub fn consume<F>(
        &mut self,
        scratch: &mut [u8],
        budget: usize,
        mut f: F,
    ) -> Result<usize, ReadError>
    where
        F: FnMut(&[u8]) -> ControlFlow<()>,
    {
        let mut delivered = 0;
        while delivered < budget {
            let Some(len) = self.read_into(scratch)? else {
                break;
            };
            delivered += 1;
            if f(&scratch[..len]).is_break() {
                break;
            }
        }
        Ok(delivered)
    }

    /// Calls `f` with a copy of every record currently in the ring, oldest first — from
    /// `overwrite_pos` (or the start of the ring) to `producer_pos`, whether read before or
    /// not — without consuming anything. Records overwritten during the walk are skipped.
    /// Returns the number of records delivered.
    ///
    /// # Errors
    ///
    /// [`ReadError::BufferTooSmall`] if a record does not fit `scratch`, or a ring-corruption
    /// [`ReadError`].
    pub fn snapshot<F>(&mut self, scratch: &mut [u8], mut f: F) -> Result<usize, ReadError>
    where
        F: FnMut(&[u8]),
    {
        // The kernel keeps `producer_pos - overwrite_pos <= mask` (it moves overwrite_pos
        // forward before publishing each reservation), so overwrite_pos is the oldest record
        // still in the ring.
        let from = self.overwrite_pos();
        let window = self.window(from)?;
        let mut position = window.start;
        let mut delivered = 0;
        loop {
            match self.copy(position, window.producer_pos, scratch) {
                Copy::End | Copy::Busy => return Ok(delivered),
                Copy::Discarded(next) => position = next,
                Copy::Record { len, next } => {
                    f(&scratch[..len]);
                    delivered += 1;
                    position = next;
                }
                Copy::Overwritten(resume) => {
                    let resume = self.resume_at(resume)?;
                    if is_after(resume, window.producer_pos) {
                        return Ok(delivered);
                    }
                    position = resume;
                }
                Copy::TooSmall(needed) => {
                    return Err(ReadError::BufferTooSmall {
                        needed,
                        capacity: scratch.len(),
                    })
                }
                Copy::Corrupt(error) => return Err(error),
            }
        }
    }

    /// Every record currently in the ring, oldest first, as owned copies (see
    /// [`snapshot`](Self::snapshot)).
    ///
    /// # Errors
    ///
    /// A ring-corruption [`ReadError`].
    #[cfg(feature = "alloc")]
    pub fn snapshot_vec(&mut self) -> Result<alloc::vec::Vec<alloc::vec::Vec<u8>>, ReadError> {
        let mut scratch = alloc::vec![0u8; self.geometry.size()];
        let mut records = alloc::vec::Vec::new();
        self.snapshot(&mut scratch, |record| records.push(record.to_vec()))?;
        Ok(records)
    }

    /// Counts `bytes` more as lost; saturating, since a cursor far behind `overwrite_pos`
    /// (after a long sleep) can stand for more bytes than a `u64` counts.
    fn add_lost(&mut self, bytes: usize) {
        self.stats.lost_bytes = self.stats.lost_bytes.saturating_add(bytes as u64);
    }

    /// After [`ReadError::ConsumerPosMoved`]: publishes this reader's own cursor again and
    /// continues from it (records overwritten meanwhile are skipped and counted lost, as
    /// always in overwrite mode).
    pub fn resume(&mut self) {
        self.store_cursor(self.cursor);
    }

    /// After [`ReadError::ConsumerPosMoved`]: adopts the `consumer_pos` the other writer stored.
    pub fn follow(&mut self) {
        // Acquire: pairs with the other writer's store-release.
        self.cursor = self.memory.consumer_pos().load_acquire();
    }

    /// Moves `consumer_pos` and this reader's cursor to `producer_pos`, dropping everything
    /// unread; returns the bytes skipped from the cursor, at most the ring size (the most the
    /// ring holds).
    pub fn resync(&mut self) -> usize {
        let producer = load_acquire_usize(self.memory.producer_pos(), SyncPoint::ProducerPosLoad);
        let skipped = distance(self.cursor, producer).min(self.geometry.size());
        self.store_cursor(producer);
        skipped
    }

    /// The check to make right before sleeping until the kernel signals: whether a record is
    /// ready to read (or the ring is corrupt, which a read reports), as
    /// [`Consumer::check_before_sleep`](crate::Consumer::check_before_sleep) returns it.
    ///
    /// It takes one more step: the kernel wakes a sleeper only when it commits the record at
    /// the published `consumer_pos`, so a reader that was lapped first publishes
    /// `max(consumer_pos, overwrite_pos)` (counting what it lost), or it would sleep past every
    /// later record.
    pub fn check_before_sleep(&mut self) -> Readiness {
        if self.check_cursor().is_err() {
            return Readiness::Readable;
        }
        if let Ok(window) = self.window(self.cursor) {
            if window.start != self.cursor {
                self.add_lost(distance(self.cursor, window.start));
                self.publish(window.start);
            }
        }
        // SeqCst fence: pairs with the full barrier of the xchg() in bpf_ringbuf_commit, as in
        // Consumer::check_before_sleep: either we see the commit below, or the kernel sees the
        // consumer_pos published above and wakes us.
        fence(Ordering::SeqCst);
        if self.check_cursor().is_err() {
            return Readiness::Readable;
        }
        match self.window(self.cursor) {
            Err(_) => Readiness::Readable,
            Ok(window) if window.start == window.producer_pos => Readiness::Empty,
            Ok(window) => {
                let offset = self.geometry.offset(window.start);
                // Acquire: pairs with the xchg() in bpf_ringbuf_commit.
                let header = RecordHeader::from_raw(load_acquire_u32(
                    self.memory.header(offset),
                    SyncPoint::HeaderLoad,
                ));
                if header.is_busy() {
                    Readiness::HeadBusy
                } else {
                    Readiness::Readable
                }
            }
        }
    }
}

impl<M: OverwriteMemory> core::fmt::Debug for OverwriteConsumer<M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OverwriteConsumer")
            .field("geometry", &self.geometry)
            .field("positions", &self.positions())
            .field("overwrite_pos", &self.overwrite_pos())
            .field("stats", &self.stats)
            .finish()
    }
}
