//! A heap-backed ring and a model of the kernel's producer, for tests without a kernel.
//!
//! [`HeapRing`] implements [`RingMemory`] over an allocation; [`KernelProducer`] follows
//! `__bpf_ringbuf_reserve` and `bpf_ringbuf_commit` (kernel/bpf/ringbuf.c, Linux 6.10+ with
//! `pending_pos`): reservations are serialised by a lock and handed out in order, each header
//! is written `len | BUSY` before `producer_pos` is published with a store-release, commit and
//! discard clear BUSY with an exchange in any order, and the wakeup decision is the kernel's.
//! The fuzz targets and loom models reuse the same code.
//!
//! [`KernelDrain`] is the other direction: `bpf_user_ringbuf_drain` reading what a
//! [`Producer`](crate::Producer) wrote into a USER_RINGBUF, with the kernel's checks and limits.

use core::ops::ControlFlow;

use crate::error::GeometryError;
use crate::geometry::{distance, is_after, Geometry};
use crate::header::{record_size, RecordHeader, HEADER_SIZE, MAX_RECORD_LEN};
use crate::memory::{DataWord, OverwriteMemory, PositionWord, RingMemory, RingMemoryMut};
use crate::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use crate::sync::{fence_at, ordering, spin_loop, weakened, ControlPoint};

/// The kernel model's synchronisation points that the loom models' negative controls can
/// weaken (the core's own are `sync::SyncPoint`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(bpf_ringbuf_loom, doc(hidden))]
pub enum KernelPoint {
    /// The `xchg` of the header at commit (made `Relaxed`).
    Commit,
    /// The full fence after the commit `xchg` (the kernel's `xchg` is a full barrier; left out,
    /// it is only an `AcqRel` exchange).
    CommitFence,
    /// The `pending_pos` check at reserve (left out).
    PendingPos,
    /// The payload word stores of an overwrite-mode producer, `Release` to model a TSO (x86)
    /// writer (made `Relaxed`: a weakly ordered writer with no write barrier).
    PayloadStoreTso,
}

impl From<KernelPoint> for ControlPoint {
    fn from(point: KernelPoint) -> Self {
        let name = match point {
            KernelPoint::Commit => "KernelPoint::Commit",
            KernelPoint::CommitFence => "KernelPoint::CommitFence",
            KernelPoint::PendingPos => "KernelPoint::PendingPos",
            KernelPoint::PayloadStoreTso => "KernelPoint::PayloadStoreTso",
        };
        ControlPoint {
            id: 256 + point as u16,
            name,
        }
    }
}

#[cfg(not(bpf_ringbuf_loom))]
pub use heap::HeapRing;

#[cfg(not(bpf_ringbuf_loom))]
mod heap {
    use super::*;
    use crate::{Consumer, OverwriteConsumer, Producer};
    use alloc::alloc::{alloc_zeroed, dealloc, handle_alloc_error, Layout};
    use alloc::sync::Arc;
    use core::ptr::NonNull;

    /// A ring in ordinary heap memory: two positions and a `2 * size` data area.
    ///
    /// The second half of the data area stands in for the kernel's second mapping of the data
    /// pages: a record that wraps is stored contiguously past `size`, and since every reader
    /// and writer reaches a record from its start offset (`position & mask`), they all see the
    /// same bytes, as with the real double mapping.
    pub struct HeapRing {
        consumer_pos: AtomicUsize,
        producer_pos: AtomicUsize,
        /// `overwrite_pos`, used only by rings in overwrite mode.
        overwrite_pos: AtomicUsize,
        /// `2 * size` bytes, 8-byte aligned, zeroed at creation; accessed through atomics
        /// (headers) and through slices the protocol hands out one owner at a time.
        data: NonNull<u8>,
        size: usize,
    }

    // SAFETY: the data area is shared memory in the same sense as the kernel's mapping: the
    // protocol, not the type, decides who touches which bytes, and every access that can race
    // (positions, headers) is atomic.
    unsafe impl Send for HeapRing {}
    // SAFETY: as above.
    unsafe impl Sync for HeapRing {}

    impl HeapRing {
        /// An empty ring with a `size`-byte data area (a power of two, at least 16).
        ///
        /// # Errors
        ///
        /// [`GeometryError`] for a size the protocol cannot use.
        pub fn new(size: usize) -> Result<Self, GeometryError> {
            Self::starting_at(size, 0)
        }

        /// An empty ring whose positions both start at `position` (8-byte aligned), to test
        /// what happens when positions wrap around `usize::MAX`.
        ///
        /// # Errors
        ///
        /// [`GeometryError`] for a size the protocol cannot use.
        pub fn starting_at(size: usize, position: usize) -> Result<Self, GeometryError> {
            let geometry = Geometry::new(size)?;
            let layout = Layout::from_size_align(2 * geometry.size(), 8)
                .map_err(|_| GeometryError::NotPowerOfTwo { size })?;
            // SAFETY: the layout has a non-zero size (size >= 16).
            let data = unsafe { alloc_zeroed(layout) };
            let Some(data) = NonNull::new(data) else {
                handle_alloc_error(layout)
            };
            Ok(Self {
                consumer_pos: AtomicUsize::new(position),
                producer_pos: AtomicUsize::new(position),
                overwrite_pos: AtomicUsize::new(position),
                data,
                size: geometry.size(),
            })
        }

        /// A ring holding arbitrary bytes and positions, as a hostile or corrupted ring might:
        /// `data` is repeated over the data area and mirrored into its second half.
        ///
        /// # Errors
        ///
        /// [`GeometryError`] for a size the protocol cannot use.
        pub fn from_parts(
            size: usize,
            data: &[u8],
            consumer_pos: usize,
            producer_pos: usize,
        ) -> Result<Self, GeometryError> {
            let ring = Self::new(size)?;
            if !data.is_empty() {
                // SAFETY: the whole data area is in bounds, and nobody else can reach the
                // ring yet.
                let bytes = unsafe { ring.bytes_mut(0, 2 * size) };
                for (i, byte) in bytes.iter_mut().enumerate() {
                    *byte = data[(i % size) % data.len()];
                }
            }
            ring.consumer_pos.store(consumer_pos, Ordering::Relaxed);
            ring.producer_pos.store(producer_pos, Ordering::Relaxed);
            Ok(ring)
        }

        /// The ring as a RINGBUF: a model of the kernel's producer and this crate's
        /// [`Consumer`], its only two endpoints, made together (as rtrb's `split`).
        ///
        /// ```
        /// use bpf_ringbuf::model::{HeapRing, Wakeup};
        ///
        /// let (producer, mut consumer) = HeapRing::new(4096)?.split();
        /// producer.output(b"hello", Wakeup::Adaptive).unwrap();
        /// assert_eq!(consumer.read_owned()?.as_deref(), Some(&b"hello"[..]));
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn split(self) -> (KernelProducer<Arc<HeapRing>>, Consumer<Arc<HeapRing>>) {
            let (ring, geometry) = self.shared();
            // SAFETY: the ring was owned by value until now, so these are its only endpoints;
            // any other needs an `unsafe` constructor (or an `unsafe` store below) whose
            // caller takes the contracts over. The model producer writes payloads only in
            // space the consumer handed back and only before committing; the consumer
            // publishes only past records it has finished with. The heap is writable.
            unsafe {
                (
                    KernelProducer::from_geometry(ring.clone(), geometry),
                    Consumer::from_geometry(ring, geometry),
                )
            }
        }

        /// The ring as a RINGBUF in overwrite mode (`BPF_F_RB_OVERWRITE`): a model of the
        /// kernel's overwriting producer and an [`OverwriteConsumer`], made together.
        ///
        /// The reader copies records while the producer may overwrite them; the producer
        /// writes payloads with atomic word stores, so the two may run on different threads.
        pub fn split_overwrite(
            self,
        ) -> (
            KernelProducer<Arc<HeapRing>>,
            OverwriteConsumer<Arc<HeapRing>>,
        ) {
            let (ring, geometry) = self.shared();
            // SAFETY: as in `split`. The overwrite reader lends no bytes: it copies words with
            // atomic loads and validates the copy, and in overwrite mode the producer writes
            // payloads only with atomic word stores (`write_payload_at`), so the two racing
            // over a record is no data race.
            unsafe {
                (
                    KernelProducer::from_geometry(ring.clone(), geometry).overwriting(),
                    OverwriteConsumer::from_geometry(ring, geometry),
                )
            }
        }

        /// The ring as a USER_RINGBUF: this crate's [`Producer`] and a model of the kernel's
        /// drain, made together.
        ///
        /// ```
        /// use bpf_ringbuf::model::{HeapRing, Wakeup};
        /// use std::ops::ControlFlow;
        ///
        /// let (producer, drain) = HeapRing::new(4096)?.split_user();
        /// producer.output(b"command")?;
        /// let mut seen = Vec::new();
        /// drain.drain(Wakeup::Adaptive, |sample| {
        ///     seen.push(sample.to_vec());
        ///     ControlFlow::Continue(())
        /// })?;
        /// assert_eq!(seen, [b"command".to_vec()]);
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn split_user(self) -> (Producer<Arc<HeapRing>>, KernelDrain<Arc<HeapRing>>) {
            let (ring, geometry) = self.shared();
            // SAFETY: as in `split`: the only producer and the only drain; the drain moves
            // consumer_pos only past samples its callback has returned from.
            unsafe {
                (
                    Producer::from_geometry(ring.clone(), geometry),
                    KernelDrain::from_geometry(ring, geometry),
                )
            }
        }

        fn shared(self) -> (Arc<HeapRing>, Geometry) {
            let geometry = Geometry::new(self.size).expect("size checked at creation");
            (Arc::new(self), geometry)
        }

        /// Stores `value` as `consumer_pos`, as a hostile process holding the map's fd could
        /// (tests of corrupt and hostile rings).
        ///
        /// # Safety
        ///
        /// A moved `consumer_pos` may let the producer reserve space whose bytes a reader
        /// still lends. Until the ring's reader has recovered from the store
        /// ([`Consumer::resume`], [`Consumer::follow`], [`Consumer::resync`]) or read past
        /// `value`, nothing writes record payloads while a [`Batch`](crate::Batch) of the ring
        /// lends records.
        pub unsafe fn store_consumer_pos(&self, value: usize) {
            self.consumer_pos.store(value, Ordering::SeqCst);
        }

        /// Stores `value` as `producer_pos`, as a second producer could.
        ///
        /// # Safety
        ///
        /// As for [`store_consumer_pos`](Self::store_consumer_pos), for `producer_pos`: until
        /// the ring's producer has noticed ([`ReserveError::ProducerPosMoved`]) and recovered,
        /// no reservation's payload is written while a record is lent.
        ///
        /// [`ReserveError::ProducerPosMoved`]: crate::ReserveError::ProducerPosMoved
        pub unsafe fn store_producer_pos(&self, value: usize) {
            self.producer_pos.store(value, Ordering::SeqCst);
        }

        /// Stores `value` as `overwrite_pos` (overwrite-mode tests).
        ///
        /// # Safety
        ///
        /// As for [`store_consumer_pos`](Self::store_consumer_pos).
        pub unsafe fn store_overwrite_pos(&self, value: usize) {
            self.overwrite_pos.store(value, Ordering::SeqCst);
        }

        /// Stores `raw` as the header word at `offset` (4-byte aligned, below the size), as a
        /// corrupted ring could hold.
        ///
        /// # Safety
        ///
        /// No record or reservation whose bytes include the word is lent out while the store
        /// happens, nor afterwards unless the header belongs to it.
        ///
        /// # Panics
        ///
        /// If `offset` is misaligned or outside the ring.
        pub unsafe fn store_header(&self, offset: usize, raw: u32) {
            self.header(offset).atomic().store(raw, Ordering::SeqCst);
        }

        fn layout(&self) -> Layout {
            // Cannot fail: the same layout was built in `starting_at`.
            Layout::from_size_align(2 * self.size, 8).expect("layout checked at creation")
        }

        fn check(&self, offset: usize, len: usize) {
            assert!(
                offset
                    .checked_add(len)
                    .is_some_and(|end| end <= 2 * self.size),
                "HeapRing access {offset}+{len} outside its data area"
            );
        }
    }

    impl Drop for HeapRing {
        fn drop(&mut self) {
            // SAFETY: allocated in `starting_at` with this layout, freed once.
            unsafe { dealloc(self.data.as_ptr(), self.layout()) }
        }
    }

    // SAFETY: `size` is fixed and valid (checked by `Geometry::new`); the positions are fields;
    // `header` and `bytes` address the same allocation, which lives as long as `self`;
    // out-of-range offsets panic instead of reaching outside it.
    unsafe impl RingMemory for HeapRing {
        #[inline]
        fn consumer_pos(&self) -> &PositionWord {
            PositionWord::from_atomic(&self.consumer_pos)
        }

        #[inline]
        fn producer_pos(&self) -> &PositionWord {
            PositionWord::from_atomic(&self.producer_pos)
        }

        #[inline]
        fn size(&self) -> usize {
            self.size
        }

        #[inline]
        fn header(&self, offset: usize) -> &DataWord {
            assert!(
                offset % 4 == 0 && offset < self.size,
                "header offset {offset} misaligned or outside the ring"
            );
            // SAFETY: in bounds (checked) and 4-byte aligned (the allocation is 8-aligned);
            // the memory lives as long as `&self`, and the protocol accesses header words only
            // atomically while they can be shared.
            unsafe { DataWord::from_ptr(self.data.as_ptr().add(offset).cast()) }
        }

        #[inline]
        unsafe fn bytes(&self, offset: usize, len: usize) -> &[u8] {
            self.check(offset, len);
            // SAFETY: in bounds (checked); the caller guarantees nobody writes the range
            // while the slice lives.
            unsafe { core::slice::from_raw_parts(self.data.as_ptr().add(offset), len) }
        }

        #[inline]
        fn data_ptr(&self) -> Option<NonNull<u8>> {
            // The allocation `header` and `bytes` address: `2 * size` bytes, 8-byte aligned.
            Some(self.data)
        }
    }

    // SAFETY: `overwrite_pos` is a field; `data_word` addresses the same allocation as
    // `header` and `bytes`, and panics instead of reaching outside it.
    unsafe impl OverwriteMemory for HeapRing {
        #[inline]
        fn overwrite_pos(&self) -> &PositionWord {
            PositionWord::from_atomic(&self.overwrite_pos)
        }

        #[inline]
        fn data_word(&self, offset: usize) -> &DataWord {
            assert!(offset % 4 == 0, "misaligned data word offset {offset}");
            self.check(offset, 4);
            // SAFETY: in bounds (checked), 4-byte aligned; the memory lives as long as `&self`.
            unsafe { DataWord::from_ptr(self.data.as_ptr().add(offset).cast()) }
        }
    }

    // SAFETY: as for `RingMemory`; `bytes_mut` addresses the same bytes as `bytes`.
    unsafe impl RingMemoryMut for HeapRing {
        #[inline]
        unsafe fn bytes_mut(&self, offset: usize, len: usize) -> &mut [u8] {
            self.check(offset, len);
            // SAFETY: in bounds (checked); the caller guarantees exclusive access to the range
            // while the slice lives. The allocation is only ever reached through raw pointers.
            unsafe { core::slice::from_raw_parts_mut(self.data.as_ptr().add(offset), len) }
        }
    }
}

/// How a commit asks the kernel to notify the consumer (`BPF_RB_*` flags of
/// `bpf_ringbuf_submit`/`_discard`/`_output`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Wakeup {
    /// No flag: wake the consumer only if it has caught up with this record.
    #[default]
    Adaptive,
    /// `BPF_RB_NO_WAKEUP`: never wake.
    Never,
    /// `BPF_RB_FORCE_WAKEUP`: always wake.
    Force,
}

/// A record reserved in the ring by [`KernelProducer::reserve`], BUSY until
/// [submitted](Reservation::submit) or [discarded](Reservation::discard) (dropping it
/// discards it). It borrows the producer that made it, so it cannot be committed through
/// another one.
///
/// The payload is written with [`write`](Reservation::write) and [`fill`](Reservation::fill),
/// never lent as `&mut [u8]`: in overwrite mode a reader may copy these bytes while they are
/// written, so there the writes are atomic word stores.
#[must_use = "dropping a reservation discards it"]
pub struct Reservation<'p, M: RingMemoryMut> {
    producer: &'p KernelProducer<M>,
    position: usize,
    len: usize,
}

impl<M: RingMemoryMut> Reservation<'_, M> {
    /// Ring position of the record's header.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Payload length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `data` to the start of the payload (what a BPF program's stores into the record
    /// do).
    ///
    /// # Panics
    ///
    /// If `data` is longer than the payload.
    pub fn write(&mut self, data: &[u8]) {
        assert!(
            data.len() <= self.len,
            "{} bytes do not fit a {}-byte reservation",
            data.len(),
            self.len
        );
        self.producer.write_payload(self.position, data);
    }

    /// Sets every payload byte to `byte`.
    pub fn fill(&mut self, byte: u8) {
        for start in (0..self.len).step_by(256) {
            let chunk = [byte; 256];
            let end = (start + 256).min(self.len);
            self.producer
                .write_payload_at(self.position, start, &chunk[..end - start]);
        }
    }

    /// `bpf_ringbuf_submit`: commits the record; returns whether the consumer was woken.
    pub fn submit(self, wakeup: Wakeup) -> bool {
        let this = core::mem::ManuallyDrop::new(self);
        this.producer.commit(this.position, this.len, wakeup, false)
    }

    /// `bpf_ringbuf_discard`: commits the record as discarded; returns whether the consumer
    /// was woken.
    pub fn discard(self, wakeup: Wakeup) -> bool {
        let this = core::mem::ManuallyDrop::new(self);
        this.producer.commit(this.position, this.len, wakeup, true)
    }
}

impl<M: RingMemoryMut> Drop for Reservation<'_, M> {
    fn drop(&mut self) {
        self.producer
            .commit(self.position, self.len, Wakeup::Adaptive, true);
    }
}

impl<M: RingMemoryMut> core::fmt::Debug for Reservation<'_, M> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Reservation")
            .field("position", &self.position)
            .field("len", &self.len)
            .finish()
    }
}

/// How an overwrite-mode [`KernelProducer`] reaches its memory's [`OverwriteMemory`] words
/// (the producer type itself needs only [`RingMemoryMut`]).
struct OverwriteWords<M> {
    overwrite_pos: fn(&M) -> &PositionWord,
    data_word: fn(&M, usize) -> &DataWord,
}

/// A model of the kernel side of a RINGBUF: `bpf_ringbuf_reserve`, `_submit`, `_discard` and
/// `_output`, with the kernel's checks, orderings and wakeup rule.
///
/// Several threads may use one producer, as several CPUs share a ring in the kernel.
pub struct KernelProducer<M: RingMemoryMut> {
    memory: M,
    geometry: Geometry,
    /// The ring's spinlock: serialises reservations.
    lock: AtomicBool,
    /// The kernel's `pending_pos` (6.10+): the oldest position that may still be BUSY.
    /// Only read and written under `lock`.
    pending_pos: AtomicUsize,
    /// Number of wakeups the model decided on (`irq_work_queue` calls).
    wakeups: AtomicUsize,
    /// Overwrite mode (`BPF_F_RB_OVERWRITE`): how to reach the memory's overwrite-mode words.
    overwrite: Option<OverwriteWords<M>>,
}

impl<M: RingMemoryMut> KernelProducer<M> {
    /// A producer for the ring in `memory`, continuing from its current `producer_pos`.
    ///
    /// # Safety
    ///
    /// The model writes record payloads through `&mut [u8]` slices of the data area, trusting
    /// the ring's consumer as the kernel does. For as long as it lives:
    ///
    /// - it is the only writer of this ring's data area, headers and `producer_pos` (several
    ///   threads may share this one producer);
    /// - `consumer_pos` only moves past records their reader is done with: one [`Consumer`]
    ///   (or [`OverwriteConsumer`]) reads the ring, and nothing else moves `consumer_pos` ahead
    ///   while that reader holds records lent by a [`Batch`].
    ///
    /// Tests that write a hostile `consumer_pos` keep to this by not producing while a batch
    /// is held.
    ///
    /// [`Consumer`]: crate::Consumer
    /// [`OverwriteConsumer`]: crate::OverwriteConsumer
    /// [`Batch`]: crate::Batch
    ///
    /// # Errors
    ///
    /// [`GeometryError`] if `memory.size()` is not a valid ring size.
    pub unsafe fn new(memory: M) -> Result<Self, GeometryError> {
        let geometry = Geometry::new(memory.size())?;
        // SAFETY: the caller upholds the contract, which is `from_geometry`'s.
        Ok(unsafe { Self::from_geometry(memory, geometry) })
    }

    /// [`KernelProducer::new`] for memory whose size is known to be valid.
    ///
    /// # Safety
    ///
    /// As for [`KernelProducer::new`], and `geometry` is `Geometry::new(memory.size())`.
    pub(crate) unsafe fn from_geometry(memory: M, geometry: Geometry) -> Self {
        let pending = memory.producer_pos().atomic().load(Ordering::Relaxed);
        Self {
            memory,
            geometry,
            lock: AtomicBool::new(false),
            pending_pos: AtomicUsize::new(pending),
            wakeups: AtomicUsize::new(0),
            overwrite: None,
        }
    }

    /// The memory this producer writes.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// Whether this producer overwrites the oldest records when the ring is full.
    pub fn is_overwrite(&self) -> bool {
        self.overwrite.is_some()
    }

    /// How many times a commit decided to wake the consumer.
    pub fn wakeups(&self) -> usize {
        self.wakeups.load(Ordering::Relaxed)
    }

    /// `bpf_ringbuf_reserve`: reserves a `len`-byte record, or `None` when the ring has no
    /// room (or `len` is larger than the kernel allows).
    pub fn reserve(&self, len: usize) -> Option<Reservation<'_, M>> {
        if len > MAX_RECORD_LEN as usize {
            return None;
        }
        let size = record_size(len);
        if size > self.geometry.size() {
            return None;
        }
        // Acquire: the kernel's smp_load_acquire(&rb->consumer_pos), pairing with the
        // consumer's store-release: the consumer is done with the space it handed back.
        let consumer_pos = self.memory.consumer_pos().atomic().load(Ordering::Acquire);
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spin_loop();
        }
        // Under the lock, producer_pos has no other writer.
        let producer_pos = self.memory.producer_pos().atomic().load(Ordering::Relaxed);
        let mut pending_pos = self.pending_pos.load(Ordering::Relaxed);
        // (A loom negative control leaves this walk, and the check it feeds, out.)
        let guard_pending = !weakened(KernelPoint::PendingPos);
        // `pend_pos < prod_pos` in the kernel; compared across the wrap here, so that a corrupt
        // header that jumps past producer_pos ends the walk instead of running around the ring.
        while guard_pending && is_after(producer_pos, pending_pos) {
            let offset = self.geometry.offset(pending_pos);
            // Relaxed: READ_ONCE(hdr->len) in __bpf_ringbuf_reserve; only decides whether
            // the space may be reused, never reads the payload.
            let header =
                RecordHeader::from_raw(self.memory.header(offset).atomic().load(Ordering::Relaxed));
            if header.is_busy() {
                break;
            }
            pending_pos = pending_pos.wrapping_add(header.record_size());
        }
        self.pending_pos.store(pending_pos, Ordering::Relaxed);
        let new_producer_pos = producer_pos.wrapping_add(size);
        let mask = self.geometry.mask();
        // bpf_ringbuf_has_space: the reserved-but-uncommitted span must fit; outside overwrite
        // mode, so must everything the consumer has not read.
        let reservation = if (guard_pending && distance(pending_pos, new_producer_pos) > mask)
            || (self.overwrite.is_none() && distance(consumer_pos, new_producer_pos) > mask)
        {
            None
        } else {
            if let Some(overwrite) = &self.overwrite {
                // Overwrite mode: move overwrite_pos forward over whole records until the new
                // one fits. They are all committed (pending_pos is past them, checked above).
                let overwrite_pos = (overwrite.overwrite_pos)(&self.memory);
                let mut position = overwrite_pos.atomic().load(Ordering::Relaxed);
                while distance(position, new_producer_pos) > mask
                    && is_after(new_producer_pos, position)
                {
                    let offset = self.geometry.offset(position);
                    let header = RecordHeader::from_raw(
                        self.memory.header(offset).atomic().load(Ordering::Relaxed),
                    );
                    position = position.wrapping_add(header.record_size());
                }
                // WRITE_ONCE(rb->overwrite_pos): ordered before readers see the reservation by
                // the store-release of producer_pos below, and before the new record's bytes.
                // Release models x86 (TSO), where every store is a release store: a reader
                // that sees this value also sees the earlier reservations' producer_pos.
                overwrite_pos.atomic().store(position, Ordering::Release);
            }
            let offset = self.geometry.offset(producer_pos);
            // The payload length fits in 30 bits: checked against MAX_RECORD_LEN above.
            let header = RecordHeader::busy(len as u32);
            self.memory
                .header(offset)
                .atomic()
                .store(header.raw(), Ordering::Relaxed);
            // Release: smp_store_release(&rb->producer_pos); pairs with the consumer's
            // load-acquire, which then sees the BUSY header written above.
            self.memory
                .producer_pos()
                .atomic()
                .store(new_producer_pos, Ordering::Release);
            Some(Reservation {
                producer: self,
                position: producer_pos,
                len,
            })
        };
        self.lock.store(false, Ordering::Release);
        reservation
    }

    /// `bpf_ringbuf_output`: reserve, copy, submit. `None` when the ring has no room.
    pub fn output(&self, data: &[u8], wakeup: Wakeup) -> Option<bool> {
        let mut reservation = self.reserve(data.len())?;
        reservation.write(data);
        Some(reservation.submit(wakeup))
    }

    /// Writes `data` into the payload of the record at `position`.
    fn write_payload(&self, position: usize, data: &[u8]) {
        self.write_payload_at(position, 0, data);
    }

    /// Writes `data` at byte `start` of the payload of the record at `position` (a
    /// reservation of this producer; `start + data.len()` within its length).
    fn write_payload_at(&self, position: usize, start: usize, data: &[u8]) {
        let payload = self.geometry.offset(position) + HEADER_SIZE + start;
        if let Some(overwrite) = &self.overwrite {
            // Overwrite mode: a reader may copy these bytes while they are written, so they
            // are written with atomic word stores. Stores are whole words from `start`
            // (a multiple of 4 here: `fill` steps by 256), padding the last one with zeros,
            // which stay inside the record (its size is rounded up to 8).
            debug_assert!(start % 4 == 0);
            self.store_words(overwrite, payload, data);
        } else {
            // SAFETY: the record lies inside the ring (`record_size <= size` at reserve), so
            // `payload + data.len() <= 2 * size`. The space was reserved for the one
            // `Reservation` calling this, through `&mut self`, and nobody reads it while it
            // is BUSY (outside overwrite mode no reader looks at a BUSY record's payload);
            // the slice does not outlive this call.
            unsafe { self.memory.bytes_mut(payload, data.len()) }.copy_from_slice(data);
        }
    }

    /// Atomic word stores of `data` from byte `payload` of the data area.
    fn store_words(&self, overwrite: &OverwriteWords<M>, payload: usize, data: &[u8]) {
        for (index, chunk) in data.chunks(4).enumerate() {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            // Release models x86 (TSO), where the BPF program's plain stores become visible
            // in program order: a reader that loads this word and then fences (acquire)
            // also sees the overwrite_pos written at reserve (WRITE_ONCE in
            // __bpf_ringbuf_reserve), which the overwrite reader's validation needs. On
            // weakly ordered CPUs the kernel has no write barrier there; the loom control
            // `KernelPayloadStoreTso` makes these Relaxed and shows torn copies pass.
            (overwrite.data_word)(&self.memory, payload + 4 * index)
                .atomic()
                .store(
                    u32::from_ne_bytes(word),
                    ordering(KernelPoint::PayloadStoreTso, Ordering::Release),
                );
        }
    }

    fn commit(&self, position: usize, len: usize, wakeup: Wakeup, discard: bool) -> bool {
        let offset = self.geometry.offset(position);
        // The length was checked against MAX_RECORD_LEN at reserve.
        let len = len as u32;
        let header = if discard {
            RecordHeader::discarded(len)
        } else {
            RecordHeader::committed(len)
        };
        // xchg(&hdr->len, new_len): a fully ordered RMW. AcqRel publishes the payload to the
        // consumer's load-acquire of the header; the fence makes it a full barrier against
        // the consumer_pos load below, as the kernel's xchg is.
        self.memory.header(offset).atomic().swap(
            header.raw(),
            ordering(KernelPoint::Commit, Ordering::AcqRel),
        );
        fence_at(KernelPoint::CommitFence, Ordering::SeqCst);
        // smp_load_acquire(&rb->consumer_pos) & rb->mask, compared with the record's offset.
        let consumer_offset = self
            .geometry
            .offset(self.memory.consumer_pos().atomic().load(Ordering::Acquire));
        let wake = match wakeup {
            Wakeup::Force => true,
            Wakeup::Never => false,
            Wakeup::Adaptive => consumer_offset == offset,
        };
        if wake {
            self.wakeups.fetch_add(1, Ordering::Relaxed);
        }
        wake
    }
}

impl<M: RingMemoryMut + OverwriteMemory> KernelProducer<M> {
    /// A producer for a ring in overwrite mode (`BPF_F_RB_OVERWRITE`, Linux 6.19+): when the
    /// ring is full, reservations advance `overwrite_pos` over the oldest committed records
    /// instead of failing; they fail only while uncommitted records fill the ring. Payloads
    /// are written with atomic word stores, since readers copy records the producer may be
    /// overwriting.
    ///
    /// [`HeapRing::split_overwrite`] makes one with its reader, safely.
    ///
    /// # Safety
    ///
    /// As for [`KernelProducer::new`].
    ///
    /// # Errors
    ///
    /// [`GeometryError`] if `memory.size()` is not a valid ring size.
    pub unsafe fn new_overwrite(memory: M) -> Result<Self, GeometryError> {
        // SAFETY: the caller upholds `new`'s contract.
        Ok(unsafe { Self::new(memory)? }.overwriting())
    }

    /// This producer, in overwrite mode.
    pub(crate) fn overwriting(mut self) -> Self {
        self.overwrite = Some(OverwriteWords {
            overwrite_pos: |memory: &M| memory.overwrite_pos(),
            data_word: |memory: &M, offset| memory.data_word(offset),
        });
        self
    }
}

/// Why a (modelled) `bpf_user_ringbuf_drain` call failed: the kernel's error return.
///
/// A bad header is not skipped: `consumer_pos` stays at it, and every later drain fails the
/// same way until user space rewrites it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DrainError {
    /// `-EINVAL`: `producer_pos` is not 8-byte aligned.
    MisalignedProducerPos {
        /// The producer position found in the ring.
        producer_pos: usize,
    },
    /// `-EINVAL`: the sample at `consumer_pos` extends past `producer_pos`.
    SampleOutOfBounds {
        /// Position of the bad header.
        position: usize,
        /// The raw `len` word of the header.
        header: u32,
        /// Bytes the header claims (header included, rounded up).
        record_size: usize,
        /// Bytes between `consumer_pos` and `producer_pos`.
        available: usize,
    },
    /// `-E2BIG`: the sample is larger than the ring, or than a dynptr can describe
    /// ([`MAX_SAMPLE_LEN`](crate::producer::MAX_SAMPLE_LEN)).
    SampleTooLarge {
        /// Position of the bad header.
        position: usize,
        /// The raw `len` word of the header.
        header: u32,
    },
    /// `-EBUSY`: another drain of the same ring is running.
    Busy,
    /// `consumer_pos` is not 8-byte aligned. The kernel has no such error because its
    /// `consumer_pos` cannot be misaligned (only the drain writes it, by whole records from 0);
    /// the model's memory can be written by anyone, so it reports this (as `-EINVAL`) rather
    /// than reading a misaligned header.
    MisalignedConsumerPos {
        /// The consumer position found in the ring.
        consumer_pos: usize,
    },
}

impl DrainError {
    /// The positive errno the kernel returns (negated) for this error.
    pub fn errno(self) -> i32 {
        match self {
            Self::MisalignedProducerPos { .. }
            | Self::SampleOutOfBounds { .. }
            | Self::MisalignedConsumerPos { .. } => 22, // EINVAL
            Self::SampleTooLarge { .. } => 7, // E2BIG
            Self::Busy => 16,                 // EBUSY
        }
    }
}

impl core::fmt::Display for DrainError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::MisalignedProducerPos { producer_pos } => {
                write!(
                    f,
                    "EINVAL: producer_pos {producer_pos:#x} is not 8-byte aligned"
                )
            }
            Self::SampleOutOfBounds {
                position,
                header,
                record_size,
                available,
            } => write!(
                f,
                "EINVAL: sample at {position:#x} (header {header:#010x}) needs {record_size} \
                 bytes, {available} were produced"
            ),
            Self::SampleTooLarge { position, header } => write!(
                f,
                "E2BIG: sample at {position:#x} (header {header:#010x}) is too large"
            ),
            Self::Busy => write!(f, "EBUSY: another drain is running"),
            Self::MisalignedConsumerPos { consumer_pos } => write!(
                f,
                "corrupt ring: consumer_pos {consumer_pos:#x} is not 8-byte aligned"
            ),
        }
    }
}

impl core::error::Error for DrainError {}

/// What one step of the drain found at `consumer_pos` (`__bpf_user_ringbuf_peek`).
enum Peek {
    /// `-ENODATA`: nothing produced, or a BUSY sample.
    NoData,
    /// `-EAGAIN`: a discarded sample, already skipped (consumer_pos moved past it).
    Discarded,
    /// A committed sample: payload offset (from the header's offset) and length.
    Sample { offset: usize, len: usize },
}

/// A model of the kernel side of a USER_RINGBUF: `bpf_user_ringbuf_drain`, with the checks,
/// orderings, limits and wakeup rule of kernel/bpf/ringbuf.c (`__bpf_user_ringbuf_peek`,
/// `__bpf_user_ringbuf_sample_release`).
///
/// The one deliberate difference: the kernel compares `consumer_pos >= producer_pos` as raw
/// 64-bit numbers, which never wrap in practice; the model compares their wrapping distance,
/// so that tests can start the positions just below `usize::MAX`.
pub struct KernelDrain<M: RingMemory> {
    memory: M,
    geometry: Geometry,
    /// The ring's `busy` word: one drain at a time.
    busy: AtomicBool,
    /// Number of wakeups the model decided on (`irq_work_queue` calls).
    wakeups: AtomicUsize,
}

impl<M: RingMemory> KernelDrain<M> {
    /// A drain for the ring in `memory`. [`HeapRing::split_user`] makes one with its
    /// producer, safely.
    ///
    /// # Safety
    ///
    /// The drain lends samples to its callback as `&[u8]` and then moves `consumer_pos` past
    /// them. For as long as it lives it is the only reader of the ring (the only code storing
    /// to `consumer_pos`), and the producer writes a sample's bytes only in space
    /// `consumer_pos` handed back, before committing it (what [`Producer`](crate::Producer)
    /// does).
    ///
    /// # Errors
    ///
    /// [`GeometryError`] if `memory.size()` is not a valid ring size.
    pub unsafe fn new(memory: M) -> Result<Self, GeometryError> {
        let geometry = Geometry::new(memory.size())?;
        // SAFETY: the caller upholds the contract, which is `from_geometry`'s.
        Ok(unsafe { Self::from_geometry(memory, geometry) })
    }

    /// [`KernelDrain::new`] for memory whose size is known to be valid.
    ///
    /// # Safety
    ///
    /// As for [`KernelDrain::new`], and `geometry` is `Geometry::new(memory.size())`.
    pub(crate) unsafe fn from_geometry(memory: M, geometry: Geometry) -> Self {
        Self {
            memory,
            geometry,
            busy: AtomicBool::new(false),
            wakeups: AtomicUsize::new(0),
        }
    }

    /// The memory this drain reads.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// How many times a drain decided to wake the producer's waiters.
    pub fn wakeups(&self) -> usize {
        self.wakeups.load(Ordering::Relaxed)
    }

    /// `bpf_user_ringbuf_drain(map, callback, ctx, flags)`: calls `callback` with each
    /// committed sample, in order, until it returns [`ControlFlow::Break`], a BUSY sample or
    /// `producer_pos` is reached, or [`MAX_SAMPLES_PER_DRAIN`] samples (discarded ones
    /// included) were visited. Returns the number of samples delivered (discarded ones not
    /// counted), as the kernel does.
    ///
    /// [`MAX_SAMPLES_PER_DRAIN`]: crate::producer::MAX_SAMPLES_PER_DRAIN
    ///
    /// # Errors
    ///
    /// The kernel's error returns ([`DrainError`]); samples delivered before the error stay
    /// consumed.
    pub fn drain<F>(&self, wakeup: Wakeup, mut callback: F) -> Result<usize, DrainError>
    where
        F: FnMut(&[u8]) -> ControlFlow<()>,
    {
        // atomic_try_cmpxchg(&rb->busy, 0, 1).
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(DrainError::Busy);
        }
        let mut samples = 0;
        let mut discarded = 0;
        let mut result = Ok(());
        while samples < crate::producer::MAX_SAMPLES_PER_DRAIN {
            match self.peek() {
                Err(error) => {
                    result = Err(error);
                    break;
                }
                Ok(Peek::NoData) => break,
                Ok(Peek::Discarded) => {
                    samples += 1;
                    discarded += 1;
                }
                Ok(Peek::Sample { offset, len }) => {
                    samples += 1;
                    // SAFETY: `peek` checked `record_size(len) <= size` and `offset < size`,
                    // so `offset + len <= 2 * size`. The sample is committed (BUSY clear,
                    // seen with Acquire) and lies before producer_pos and at consumer_pos, so
                    // the producer does not write it until consumer_pos moves past it, which
                    // happens below, after the callback returned.
                    let sample = unsafe { self.memory.bytes(offset, len) };
                    let flow = callback(sample);
                    self.release(len);
                    if flow.is_break() {
                        break;
                    }
                }
            }
        }
        // smp_mb__before_atomic(); atomic_set(&rb->busy, 0).
        self.busy.store(false, Ordering::Release);
        let wake = match wakeup {
            Wakeup::Force => true,
            Wakeup::Never => false,
            Wakeup::Adaptive => samples > 0,
        };
        if wake {
            self.wakeups.fetch_add(1, Ordering::Relaxed);
        }
        result.map(|()| samples - discarded)
    }

    /// `__bpf_user_ringbuf_peek`: checks the sample at `consumer_pos`, in the kernel's order.
    fn peek(&self) -> Result<Peek, DrainError> {
        // Acquire: smp_load_acquire(&rb->producer_pos), pairs with the user-space producer's
        // store-release, so the header written before it is visible.
        let producer_pos = self.memory.producer_pos().atomic().load(Ordering::Acquire);
        if producer_pos % 8 != 0 {
            return Err(DrainError::MisalignedProducerPos { producer_pos });
        }
        // Acquire: our own earlier store-release; only one drain runs at a time.
        let consumer_pos = self.memory.consumer_pos().atomic().load(Ordering::Acquire);
        let available = distance(consumer_pos, producer_pos);
        // The kernel: `cons_pos >= prod_pos` on raw u64 values (see the type's docs).
        if available == 0 || available > usize::MAX / 2 {
            return Ok(Peek::NoData);
        }
        if consumer_pos % 8 != 0 {
            return Err(DrainError::MisalignedConsumerPos { consumer_pos });
        }
        let offset = self.geometry.offset(consumer_pos);
        // Acquire: smp_load_acquire(hdr), pairs with the producer's release exchange at
        // commit, which published the payload.
        let header =
            RecordHeader::from_raw(self.memory.header(offset).atomic().load(Ordering::Acquire));
        let len = header.len();
        let size = header.record_size();
        if size > available {
            return Err(DrainError::SampleOutOfBounds {
                position: consumer_pos,
                header: header.raw(),
                record_size: size,
                available,
            });
        }
        if size > self.geometry.size() || len > crate::producer::MAX_SAMPLE_LEN {
            return Err(DrainError::SampleTooLarge {
                position: consumer_pos,
                header: header.raw(),
            });
        }
        // DISCARD is checked before BUSY: a sample with both bits set is skipped.
        if header.is_discarded() {
            // Release: smp_store_release(&rb->consumer_pos, ...), pairs with the producer's
            // load-acquire of consumer_pos: it may reuse the space.
            self.memory
                .consumer_pos()
                .atomic()
                .store(consumer_pos.wrapping_add(size), Ordering::Release);
            return Ok(Peek::Discarded);
        }
        if header.is_busy() {
            return Ok(Peek::NoData);
        }
        // The kernel addresses the payload as data + ((cons + 8) & mask), the same bytes as
        // data + (cons & mask) + 8 through the double mapping; the latter also works for
        // memory that is not double mapped (see `RingMemory::bytes`).
        Ok(Peek::Sample {
            offset: offset + HEADER_SIZE,
            len,
        })
    }

    /// `__bpf_user_ringbuf_sample_release`: moves `consumer_pos` past the sample.
    fn release(&self, len: usize) {
        // Relaxed: only the drain holding `busy` writes consumer_pos.
        let consumer_pos = self.memory.consumer_pos().atomic().load(Ordering::Relaxed);
        // Release: smp_store_release(&rb->consumer_pos, ...), pairs with the producer's
        // load-acquire: the callback has finished reading the sample.
        self.memory.consumer_pos().atomic().store(
            consumer_pos.wrapping_add(record_size(len)),
            Ordering::Release,
        );
    }
}
