//! The user-space producer of a `BPF_MAP_TYPE_USER_RINGBUF` (Linux 6.1+).
//!
//! User space writes records; a BPF program drains them with `bpf_user_ringbuf_drain`
//! (kernel/bpf/ringbuf.c). The protocol, from the producer's side:
//!
//! 1. **Reserve.** Free space is `size - (producer_pos - consumer_pos)`. A record of `len`
//!    payload bytes takes [`record_size(len)`](crate::header::record_size) bytes. Write its
//!    header `len | BUSY` at `producer_pos`, *then* publish `producer_pos + record_size` with a
//!    store-release. (Publishing the position first would let the kernel read the stale header
//!    left there by the previous lap of the ring.)
//! 2. **Fill** the payload.
//! 3. **Commit**: exchange the header for `len` (submit) or `len | DISCARD` (discard), with
//!    release semantics so the payload is visible before the kernel sees BUSY clear.
//!
//! The kernel checks every header it reaches (`__bpf_user_ringbuf_peek`): a record that
//! extends past `producer_pos` is `-EINVAL`, one larger than the ring or than a dynptr can
//! describe ([`MAX_SAMPLE_LEN`]) is `-E2BIG`. Such a header is never skipped: every later
//! drain fails on it again, so the ring is stalled for good. [`Producer::reserve`] therefore
//! refuses those sizes up front with [`ReserveError::TooLarge`]; it never publishes a header
//! the kernel would reject.
//!
//! Several reservations may be outstanding at once and committed in any order, as with
//! libbpf. The kernel drains in reservation order and stops at the first BUSY record, so a
//! reservation held for long holds back every later one; a [`Reservation`] dropped without
//! [`submit`](Reservation::submit) is discarded, never left BUSY.
//!
//! There is one producer per ring: [`Producer`] is not `Sync`, so it cannot be shared between
//! threads (it can be moved to another thread), and every reservation borrows it.
//!
//! ```
//! use bpf_ringbuf::model::{HeapRing, Wakeup};
//! use std::ops::ControlFlow;
//!
//! // A USER_RINGBUF with its two endpoints: this crate's producer, a model of the kernel's
//! // drain.
//! let (producer, drain) = HeapRing::new(4096)?.split_user();
//! let mut first = producer.reserve(5)?;
//! let second = producer.reserve(3)?;
//! first.copy_from_slice(b"hello");
//! second.discard();
//! first.submit();
//! producer.output(b"world")?;
//!
//! // The kernel side (modelled here) sees the submitted samples, in order.
//! let mut samples = Vec::new();
//! let drained = drain.drain(Wakeup::Adaptive, |sample| {
//!     samples.push(sample.to_vec());
//!     ControlFlow::Continue(())
//! })?;
//! assert_eq!(drained, 2);
//! assert_eq!(samples, [b"hello".to_vec(), b"world".to_vec()]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::cell::Cell;
use core::fmt;
use core::ops::{Deref, DerefMut};

use crate::error::GeometryError;
use crate::geometry::{distance, Geometry, Positions};
use crate::header::{record_size, RecordHeader, HEADER_SIZE};
use crate::memory::RingMemoryMut;
use crate::sync::atomic::{fence, Ordering};
use crate::sync::{load_acquire_usize, ordering, SyncPoint};

/// The largest sample payload `bpf_user_ringbuf_drain` accepts: a dynptr's size field is 24
/// bits (`DYNPTR_MAX_SIZE`, checked by `bpf_dynptr_check_size`). A larger header makes the
/// drain fail with `-E2BIG`.
pub const MAX_SAMPLE_LEN: usize = (1 << 24) - 1;

/// The most samples one `bpf_user_ringbuf_drain` call visits (`BPF_MAX_USER_RINGBUF_SAMPLES`);
/// discarded samples count towards it. The rest wait for the next call.
pub const MAX_SAMPLES_PER_DRAIN: usize = 128 * 1024;

/// Why a reservation was refused. Nothing was written to the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReserveError {
    /// The payload can never be reserved in this ring: it is longer than the ring minus a
    /// header, or than [`MAX_SAMPLE_LEN`]. The kernel would reject (and stall on) its header.
    TooLarge {
        /// The requested payload length.
        len: usize,
        /// The longest payload this ring accepts ([`Producer::max_len`]).
        max_len: usize,
    },
    /// Not enough free space now; the kernel frees space as it drains.
    NoSpace {
        /// Bytes the record needs (header included, rounded up to 8).
        needed: usize,
        /// Bytes free in the ring.
        available: usize,
    },
    /// `consumer_pos` is misaligned, or not within one ring size behind `producer_pos` (or
    /// `producer_pos` is misaligned): the ring's shared state is corrupt. Only the kernel
    /// writes `consumer_pos`, so this means someone wrote the producer page behind our back.
    CorruptPositions {
        /// The consumer position found in the ring.
        consumer_pos: usize,
        /// The producer position this producer published last.
        producer_pos: usize,
    },
    /// `producer_pos` is not what this producer published last: another producer (another
    /// process, or a second `Producer` on the same memory) is writing the ring.
    /// [`Producer::follow`] adopts the new position.
    ProducerPosMoved {
        /// The position this producer published last.
        expected: usize,
        /// The position found in the ring.
        found: usize,
    },
}

impl fmt::Display for ReserveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooLarge { len, max_len } => write!(
                f,
                "a {len}-byte sample is larger than this ring accepts ({max_len} bytes at most)"
            ),
            Self::NoSpace { needed, available } => write!(
                f,
                "ring full: the record needs {needed} bytes, {available} are free"
            ),
            Self::CorruptPositions {
                consumer_pos,
                producer_pos,
            } => write!(
                f,
                "corrupt ring: consumer_pos {consumer_pos:#x} is not an aligned position within \
                 one ring size behind producer_pos {producer_pos:#x}"
            ),
            Self::ProducerPosMoved { expected, found } => write!(
                f,
                "producer_pos is {found:#x}, expected {expected:#x}: another producer is \
                 writing this ring"
            ),
        }
    }
}

impl core::error::Error for ReserveError {}

/// The producer of a USER_RINGBUF: reserves records, which are filled and committed.
///
/// `reserve` takes `&self`, so several [`Reservation`]s can be outstanding and committed in
/// any order. The producer keeps the position it published last in a [`Cell`], which makes
/// it `!Sync`: one thread produces at a time, which is what the protocol requires (the kernel
/// side assumes a single user-space producer; libbpf's is not thread-safe either). It is
/// `Send` when its memory is.
///
/// ```compile_fail,E0277
/// fn shared_between_threads<T: Sync>() {}
/// shared_between_threads::<bpf_ringbuf::Producer<bpf_ringbuf::model::HeapRing>>();
/// ```
///
/// One `Producer` per ring: a second one (in this or another process) is detected at the
/// next reservation ([`ReserveError::ProducerPosMoved`]), but two producers racing on the
/// same memory can hand out the same space before that (within one process: two `&mut [u8]`
/// to the same bytes). Building one is therefore `unsafe` ([`Producer::new`]); the Linux front
/// end refuses to open a second producer for the same map in one process
/// (`OpenError::InUse`).
pub struct Producer<M: RingMemoryMut> {
    memory: M,
    geometry: Geometry,
    /// The `producer_pos` this producer published last. Only this producer writes the shared
    /// word; a mismatch means another writer appeared.
    producer_pos: Cell<usize>,
}

impl<M: RingMemoryMut> Producer<M> {
    /// A producer for the ring in `memory`, continuing from its current `producer_pos`.
    ///
    /// [`UserRingBuf`](crate::UserRingBuf) makes one for you, safely; this constructor is for
    /// memory you bring yourself.
    ///
    /// # Safety
    ///
    /// A `Producer` hands out `&mut [u8]` slices of the data area. For as long as it lives:
    ///
    /// - it is the only writer of this ring's data area and `producer_pos` in this process
    ///   (no second `Producer`, [`KernelProducer`](crate::model::KernelProducer), or other
    ///   writer over the same memory);
    /// - whoever reads the ring (the kernel's `bpf_user_ringbuf_drain`, or a model of it) moves
    ///   `consumer_pos` only past samples it has finished reading, so the space it hands back
    ///   is no longer read.
    ///
    /// A second writer is detected at the next reservation
    /// ([`ReserveError::ProducerPosMoved`]), but slices handed out before that may overlap.
    ///
    /// # Errors
    ///
    /// [`GeometryError`] if `memory.size()` is not a valid ring size.
    pub unsafe fn new(memory: M) -> Result<Self, GeometryError> {
        let geometry = Geometry::new(memory.size())?;
        // SAFETY: the caller upholds the contract, which is `from_geometry`'s.
        Ok(unsafe { Self::from_geometry(memory, geometry) })
    }

    /// [`Producer::new`] for memory whose size is known to be valid.
    ///
    /// # Safety
    ///
    /// As for [`Producer::new`], and `geometry` is `Geometry::new(memory.size())`.
    pub(crate) unsafe fn from_geometry(memory: M, geometry: Geometry) -> Self {
        // Acquire: pairs with the store-release of a previous producer of this ring, whose
        // headers we may overwrite once the kernel has consumed them.
        let producer_pos = memory.producer_pos().load_acquire();
        Self {
            memory,
            geometry,
            producer_pos: Cell::new(producer_pos),
        }
    }

    /// The memory this producer writes.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The longest payload a reservation can have in this ring (when it is empty): the ring
    /// size minus one header, capped at [`MAX_SAMPLE_LEN`].
    ///
    /// ```
    /// # use bpf_ringbuf::model::HeapRing;
    /// let (producer, _drain) = HeapRing::new(4096)?.split_user();
    /// assert_eq!(producer.max_len(), 4088);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_len(&self) -> usize {
        (self.geometry.size() - HEADER_SIZE).min(MAX_SAMPLE_LEN)
    }

    /// `consumer_pos` as the kernel last published it, and the `producer_pos` this producer
    /// published last.
    pub fn positions(&self) -> Positions {
        Positions {
            // Acquire: pairs with the smp_store_release() of consumer_pos in
            // __bpf_user_ringbuf_sample_release / __bpf_user_ringbuf_peek.
            // (A relaxed load and an acquire fence: the consumer page is mapped read-only.)
            consumer: load_acquire_usize(
                self.memory.consumer_pos(),
                SyncPoint::UserConsumerPosLoad,
            ),
            producer: self.producer_pos.get(),
        }
    }

    /// Bytes of the ring not holding records the kernel has yet to drain: the most a
    /// reservation can take now (a `len`-byte payload needs
    /// [`record_size(len)`](crate::header::record_size) bytes).
    ///
    /// # Errors
    ///
    /// [`ReserveError::CorruptPositions`] or [`ReserveError::ProducerPosMoved`], as for
    /// [`Producer::reserve`].
    pub fn free_space(&self) -> Result<usize, ReserveError> {
        self.check_positions()
            .map(|used| self.geometry.size() - used)
    }

    /// Bytes in use, after checking that the shared positions are consistent with ours.
    fn check_positions(&self) -> Result<usize, ReserveError> {
        let producer_pos = self.producer_pos.get();
        // Relaxed: this producer is the only legitimate writer of producer_pos; the load only
        // detects another writer.
        let found = self.memory.producer_pos().load_relaxed();
        if found != producer_pos {
            return Err(ReserveError::ProducerPosMoved {
                expected: producer_pos,
                found,
            });
        }
        // Acquire: pairs with the smp_store_release() of consumer_pos in
        // __bpf_user_ringbuf_sample_release (and in __bpf_user_ringbuf_peek for discarded
        // samples): the kernel has finished reading the space it hands back.
        // (A relaxed load and an acquire fence: the consumer page is mapped read-only.)
        let consumer_pos =
            load_acquire_usize(self.memory.consumer_pos(), SyncPoint::UserConsumerPosLoad);
        let used = distance(consumer_pos, producer_pos);
        if used > self.geometry.size() || consumer_pos % 8 != 0 || producer_pos % 8 != 0 {
            return Err(ReserveError::CorruptPositions {
                consumer_pos,
                producer_pos,
            });
        }
        Ok(used)
    }

    /// Reserves a record with a `len`-byte payload, BUSY until committed.
    ///
    /// The payload holds whatever bytes the ring held there before: fill all of it. Drop or
    /// [`discard`](Reservation::discard) the reservation to give up the record.
    ///
    /// ```
    /// # use bpf_ringbuf::{model::HeapRing, ReserveError};
    /// let (producer, _drain) = HeapRing::new(64)?.split_user();
    /// assert_eq!(
    ///     producer.reserve(57).unwrap_err(),
    ///     ReserveError::TooLarge { len: 57, max_len: 56 }
    /// );
    /// let held = producer.reserve(40)?; // 48 bytes
    /// assert_eq!(
    ///     producer.reserve(9).unwrap_err(),
    ///     ReserveError::NoSpace { needed: 24, available: 16 }
    /// );
    /// let mut small = producer.reserve(8)?; // 16 bytes: the ring is now full
    /// small.copy_from_slice(&[1; 8]);
    /// small.submit();
    /// held.submit();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// - [`ReserveError::TooLarge`]: `len` exceeds [`max_len`](Self::max_len) (the kernel
    ///   would refuse such a header forever);
    /// - [`ReserveError::NoSpace`]: the ring is too full now;
    /// - [`ReserveError::CorruptPositions`], [`ReserveError::ProducerPosMoved`]: the shared
    ///   positions were written by someone else; nothing is written.
    #[inline]
    pub fn reserve(&self, len: usize) -> Result<Reservation<'_, M>, ReserveError> {
        // One check for both limits on the fast path: a record that fits in the free space
        // fits in the ring, so only the dynptr limit needs its own test.
        if len > MAX_SAMPLE_LEN {
            return Err(self.too_large(len));
        }
        let used = self.check_positions()?;
        let available = self.geometry.size() - used;
        let needed = record_size(len);
        if needed > available {
            return Err(self.no_space(len, needed, available));
        }
        let producer_pos = self.producer_pos.get();
        let offset = self.geometry.offset(producer_pos);
        // `len <= MAX_SAMPLE_LEN < 2^24`: it fits the length bits and sets no flag.
        let header = RecordHeader::busy(len as u32);
        // Relaxed: ordered before the kernel's reads by the store-release of producer_pos
        // below. The space is free (the kernel handed it back, seen through the Acquire load
        // of consumer_pos), and the kernel reads no header at or past producer_pos.
        self.memory
            .header(offset)
            .atomic()
            .store(header.raw(), Ordering::Relaxed);
        let new_producer_pos = producer_pos.wrapping_add(needed);
        // Release: pairs with smp_load_acquire(&rb->producer_pos) in __bpf_user_ringbuf_peek,
        // which then sees the BUSY header written above, never a stale one.
        self.memory.producer_pos().atomic().store(
            new_producer_pos,
            ordering(SyncPoint::UserProducerPosPublish, Ordering::Release),
        );
        self.producer_pos.set(new_producer_pos);
        Ok(Reservation {
            producer: self,
            position: producer_pos,
            len,
        })
    }

    /// Starts a batch of records written one after another and published together: one
    /// check of the positions when it starts, and one store-release of `producer_pos` when it
    /// ends, however many records it holds.
    ///
    /// Each record is written committed (its final header, then its payload) beyond the
    /// published `producer_pos`, where `bpf_user_ringbuf_drain` does not look (it reads headers
    /// only below the `producer_pos` it loaded with acquire); publishing the new position
    /// makes all of them visible at once, payloads included. The batch takes `&mut self`: no
    /// [`Reservation`] is outstanding while it writes, and none can be made.
    ///
    /// ```
    /// # use bpf_ringbuf::model::{HeapRing, Wakeup};
    /// # use std::ops::ControlFlow;
    /// let (mut producer, drain) = HeapRing::new(4096)?.split_user();
    /// let mut batch = producer.batch()?;
    /// batch.push(b"hello")?;
    /// batch.reserve(5)?.copy_from_slice(b"world");
    /// assert_eq!(batch.len(), 2);
    /// batch.commit(); // publishes producer_pos once
    ///
    /// let mut samples = Vec::new();
    /// drain.drain(Wakeup::Adaptive, |sample| {
    ///     samples.push(sample.to_vec());
    ///     ControlFlow::Continue(())
    /// })?;
    /// assert_eq!(samples, [b"hello".to_vec(), b"world".to_vec()]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ReserveError::CorruptPositions`] or [`ReserveError::ProducerPosMoved`], as for
    /// [`Producer::reserve`].
    pub fn batch(&mut self) -> Result<WriteBatch<'_, M>, ReserveError> {
        let used = self.check_positions()?;
        let start = self.producer_pos.get();
        Ok(WriteBatch {
            free: self.geometry.size() - used,
            producer: self,
            start,
            end: start,
            records: 0,
        })
    }

    /// Why `len` exceeds [`max_len`](Self::max_len).
    #[cold]
    fn too_large(&self, len: usize) -> ReserveError {
        ReserveError::TooLarge {
            len,
            max_len: self.max_len(),
        }
    }

    /// Why a record of `needed` ring bytes does not fit in the `available` ones.
    #[cold]
    fn no_space(&self, len: usize, needed: usize, available: usize) -> ReserveError {
        if len > self.max_len() {
            self.too_large(len)
        } else {
            ReserveError::NoSpace { needed, available }
        }
    }

    /// Reserves a record, copies `data` into it and submits it.
    ///
    /// # Errors
    ///
    /// As for [`Producer::reserve`].
    pub fn output(&self, data: &[u8]) -> Result<(), ReserveError> {
        let mut reservation = self.reserve(data.len())?;
        reservation.copy_from_slice(data);
        reservation.submit();
        Ok(())
    }

    /// The check to make right before sleeping until the kernel frees space: a full fence,
    /// then the free space. If it is still too small for the record, a drain that frees
    /// space afterwards signals the map's fd (`EPOLLOUT`), so the sleep cannot miss it.
    ///
    /// # Errors
    ///
    /// As for [`Producer::free_space`].
    pub fn check_before_sleep(&self) -> Result<usize, ReserveError> {
        // SeqCst fence before the fresh look. What makes the wait lost-wakeup safe is that the
        // map fd is registered with epoll before the first check: the kernel stores
        // consumer_pos (smp_store_release in __bpf_user_ringbuf_sample_release), then, after
        // smp_mb__before_atomic(), queues the irq_work that wakes the fd's waiters; a drain
        // that frees space after this look leaves an event for the next epoll_wait, and one
        // that freed it before is visible to the Acquire load below. The fence is the cheap
        // belt to that: no load of this look is satisfied ahead of our last producer_pos store.
        fence(Ordering::SeqCst);
        self.free_space()
    }

    /// After [`ReserveError::ProducerPosMoved`]: adopts the `producer_pos` the other writer
    /// stored, so the next reservation starts after whatever it wrote. Taking `&mut self`
    /// guarantees no reservation of this producer is outstanding.
    pub fn follow(&mut self) {
        // Acquire: as in `new`.
        self.producer_pos
            .set(self.memory.producer_pos().load_acquire());
    }

    fn commit(&self, position: usize, len: usize, discard: bool) {
        let offset = self.geometry.offset(position);
        // `len` was checked against MAX_SAMPLE_LEN at reserve.
        let header = if discard {
            RecordHeader::discarded(len as u32)
        } else {
            RecordHeader::committed(len as u32)
        };
        // Release: pairs with smp_load_acquire(hdr) in __bpf_user_ringbuf_peek, publishing
        // the payload before the kernel sees BUSY clear. A store, not libbpf's
        // __atomic_exchange_n(..., __ATOMIC_ACQ_REL): nothing else writes the header word of a
        // reserved record (the kernel only loads user-ring headers, and moves consumer_pos),
        // so there is no value to exchange with and nothing to acquire; the exchange is a
        // locked instruction that costs more than the rest of a small reservation
        // (docs/benchmarks.md: USER_RINGBUF).
        self.memory.header(offset).atomic().store(
            header.raw(),
            ordering(SyncPoint::UserCommit, Ordering::Release),
        );
    }
}

/// Records written into a USER_RINGBUF and published together, from [`Producer::batch`].
///
/// Dropping the batch publishes what it holds, as [`commit`](Self::commit) does: every record
/// in it is complete once [`push`](Self::push) returned, or once the slice
/// [`reserve`](Self::reserve) lent is given back (fill all of it: the payload holds whatever
/// the ring held there before).
#[must_use = "a batch publishes its records when it is dropped or committed"]
pub struct WriteBatch<'p, M: RingMemoryMut> {
    producer: &'p mut Producer<M>,
    /// `producer_pos` when the batch began (published).
    start: usize,
    /// Where the next record goes.
    end: usize,
    /// Bytes free from `end` on, as seen when the batch began.
    free: usize,
    /// Records written.
    records: usize,
}

impl<M: RingMemoryMut> WriteBatch<'_, M> {
    /// Appends a record of `len` payload bytes and lends its payload, to be filled before the
    /// next call.
    ///
    /// # Errors
    ///
    /// [`ReserveError::TooLarge`], or [`ReserveError::NoSpace`] if it does not fit in the
    /// space that was free when the batch began, less what the batch took. Nothing is
    /// written.
    #[inline]
    pub fn reserve(&mut self, len: usize) -> Result<&mut [u8], ReserveError> {
        let producer = &*self.producer;
        if len > MAX_SAMPLE_LEN {
            return Err(producer.too_large(len));
        }
        let needed = record_size(len);
        if needed > self.free {
            return Err(producer.no_space(len, needed, self.free));
        }
        let offset = producer.geometry.offset(self.end);
        // `len <= MAX_SAMPLE_LEN < 2^24`: it fits the length bits and sets no flag.
        let header = RecordHeader::committed(len as u32);
        // Relaxed: past the published producer_pos, where the kernel reads no header; the
        // store-release of producer_pos when the batch ends publishes it (and the payload).
        // The space is free: the kernel handed it back (seen through the Acquire load of
        // consumer_pos when the batch began).
        producer
            .memory
            .header(offset)
            .atomic()
            .store(header.raw(), Ordering::Relaxed);
        self.end = self.end.wrapping_add(needed);
        self.free -= needed;
        self.records += 1;
        // SAFETY: the record lies inside the ring (`needed <= free <= size`, offset `< size`),
        // so `offset + 8 + len <= 2 * size`. The space is past the published producer_pos and
        // free (handed back by the kernel): nobody reads it until the batch publishes, and
        // this batch, which holds the producer mutably, is its only writer; the slice
        // borrows the batch, so it ends before the next record or the publish.
        Ok(unsafe { producer.memory.bytes_mut(offset + HEADER_SIZE, len) })
    }

    /// Appends a record holding `data`.
    ///
    /// # Errors
    ///
    /// As for [`reserve`](Self::reserve).
    #[inline]
    pub fn push(&mut self, data: &[u8]) -> Result<(), ReserveError> {
        self.reserve(data.len())?.copy_from_slice(data);
        Ok(())
    }

    /// Records written so far.
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether no record was written.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Bytes still free for this batch (a `len`-byte payload needs
    /// [`record_size(len)`](crate::header::record_size)).
    pub fn free_space(&self) -> usize {
        self.free
    }

    /// Publishes the records (dropping the batch does the same).
    pub fn commit(self) {}
}

impl<M: RingMemoryMut> Drop for WriteBatch<'_, M> {
    fn drop(&mut self) {
        if self.end != self.start {
            let producer = &*self.producer;
            // Release: pairs with smp_load_acquire(&rb->producer_pos) in
            // __bpf_user_ringbuf_peek: the headers and payloads written above are visible
            // before the kernel reads them.
            producer.memory.producer_pos().atomic().store(
                self.end,
                ordering(SyncPoint::UserProducerPosPublish, Ordering::Release),
            );
            producer.producer_pos.set(self.end);
        }
    }
}

impl<M: RingMemoryMut> fmt::Debug for WriteBatch<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteBatch")
            .field("start", &self.start)
            .field("end", &self.end)
            .field("records", &self.records)
            .finish()
    }
}

impl<M: RingMemoryMut> fmt::Debug for Producer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("geometry", &self.geometry)
            .field("positions", &self.positions())
            .finish()
    }
}

/// A record reserved by [`Producer::reserve`]: its payload, writable through `Deref`/
/// `DerefMut` to `[u8]`, until [`submit`](Reservation::submit) or
/// [`discard`](Reservation::discard). Dropping it discards it.
///
/// While it is held, the kernel stops draining at it: every record reserved after it waits.
/// (Leaking it with `mem::forget` leaves it BUSY and stalls the ring for good.)
#[must_use = "dropping a reservation discards it"]
pub struct Reservation<'p, M: RingMemoryMut> {
    producer: &'p Producer<M>,
    /// Ring position of the record's header.
    position: usize,
    /// Payload length; `record_size(len) <= size`, checked at reserve.
    len: usize,
}

impl<M: RingMemoryMut> Reservation<'_, M> {
    /// Ring position of the record's header.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Commits the record: the kernel's next drain delivers it (after every record reserved
    /// before it is committed).
    pub fn submit(self) {
        self.finish(false);
    }

    /// Commits the record as discarded: the kernel skips it and frees its space.
    pub fn discard(self) {
        self.finish(true);
    }

    fn finish(self, discard: bool) {
        let this = core::mem::ManuallyDrop::new(self);
        this.producer.commit(this.position, this.len, discard);
    }

    fn payload_offset(&self) -> usize {
        self.producer.geometry.offset(self.position) + HEADER_SIZE
    }
}

impl<M: RingMemoryMut> Deref for Reservation<'_, M> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the record lies inside the ring (`record_size(len) <= size`, offset
        // `< size`), so `payload_offset + len <= 2 * size`. The record is BUSY and past
        // consumer_pos: the kernel does not read its payload, and this producer handed the
        // space to this reservation alone (later reservations start past it). The slice
        // borrows `self`, so it cannot outlive the reservation.
        unsafe { self.producer.memory.bytes(self.payload_offset(), self.len) }
    }
}

impl<M: RingMemoryMut> DerefMut for Reservation<'_, M> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only live view of the payload.
        unsafe {
            self.producer
                .memory
                .bytes_mut(self.payload_offset(), self.len)
        }
    }
}

impl<M: RingMemoryMut> Drop for Reservation<'_, M> {
    fn drop(&mut self) {
        self.producer.commit(self.position, self.len, true);
    }
}

impl<M: RingMemoryMut> fmt::Debug for Reservation<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("position", &self.position)
            .field("len", &self.len)
            .finish()
    }
}
