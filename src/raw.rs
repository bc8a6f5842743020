//! Ring memory from raw pointers, for a mapping this crate did not make.
//!
//! A BPF library that already mapped a ring map (aya, libbpf-rs, an in-house loader) holds
//! three addresses: the consumer page, the producer page and the data area after it.
//! [`RawRingMemory::from_raw_parts`] turns them into a [`RingMemory`] the protocol core can
//! read, so the library can use [`Consumer`](crate::Consumer) without a second mapping and
//! without writing the `unsafe impl` itself. Writing one by hand is just as possible;
//! `examples/byo_mapping.rs` shows both against a real kernel.
//!
//! Not available under `--cfg bpf_ringbuf_loom`: loom's atomics cannot be created over
//! existing memory.

use core::ptr::NonNull;

use crate::error::GeometryError;
use crate::geometry::Geometry;
use crate::memory::{DataWord, PositionWord};
use crate::memory::{RingMemory, RingMemoryMut};

/// A ring's memory given as raw addresses: a [`RingMemory`] over a mapping owned elsewhere.
///
/// It owns nothing: dropping it does not unmap anything, and the caller keeps the mapping
/// alive (see [`from_raw_parts`](Self::from_raw_parts)).
///
/// ```
/// use bpf_ringbuf::model::{KernelProducer, Wakeup};
/// use bpf_ringbuf::{Consumer, RawRingMemory};
///
/// // Stand-in for memory some other code owns: two position words and a 2 * 4096-byte,
/// // 8-byte aligned data area (a real ring's data area is the kernel's double mapping).
/// let mut consumer_pos = 0usize;
/// let mut producer_pos = 0usize;
/// let mut data = vec![0u64; 2 * 4096 / 8];
///
/// // SAFETY: the addresses are valid, aligned, writable and outlive `memory`; nothing else
/// // touches them while it lives.
/// let memory = unsafe {
///     RawRingMemory::from_raw_parts_mut(
///         &mut consumer_pos,
///         &mut producer_pos,
///         data.as_mut_ptr().cast(),
///         4096,
///     )
/// }?;
/// // SAFETY: the ring's only two endpoints: the model producer writes only space the consumer
/// // handed back, the consumer publishes only past records it has finished reading, and
/// // `consumer_pos` is writable.
/// let (producer, mut consumer) =
///     unsafe { (KernelProducer::new(&memory)?, Consumer::new(&memory)?) };
/// producer.output(b"borrowed", Wakeup::Adaptive).unwrap();
/// assert_eq!(consumer.read_owned()?.as_deref(), Some(&b"borrowed"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RawRingMemory {
    /// The `consumer_pos` word: aligned, valid for as long as `self` lives.
    consumer_pos: NonNull<usize>,
    /// The `producer_pos` word: aligned, valid for as long as `self` lives.
    producer_pos: NonNull<usize>,
    /// Start of the data area: 8-byte aligned, `2 * size` bytes, the second half the same
    /// memory as the first (or the caller's single-offset rule, see `RingMemory`).
    data: NonNull<u8>,
    geometry: Geometry,
    /// The data area may be written through `bytes_mut` (`from_raw_parts_mut`).
    data_writable: bool,
}

// SAFETY: the addresses point at shared memory that `from_raw_parts`' contract keeps valid
// for any thread; every access the protocol makes to words another party writes is atomic, and
// the rest is handed out under the protocol's ownership rules (`RingMemory`'s contract).
unsafe impl Send for RawRingMemory {}
// SAFETY: as above.
unsafe impl Sync for RawRingMemory {}

impl RawRingMemory {
    /// A [`RingMemory`] over a ring that is already mapped: the addresses of `consumer_pos`
    /// (start of the consumer page), `producer_pos` (start of the producer page) and the data
    /// area (the page after the producer page), and the data area's size (the map's
    /// `max_entries`).
    ///
    /// The data area is only read. For a USER_RINGBUF producer, whose data area is
    /// writable, use [`from_raw_parts_mut`](Self::from_raw_parts_mut).
    ///
    /// # Safety
    ///
    /// For as long as the returned value (or anything borrowing from it) lives:
    ///
    /// - `consumer_pos` and `producer_pos` are non-null, aligned for `usize`, and point at
    ///   the ring's two position words — the ones the other side of the ring uses.
    ///   `consumer_pos` is writable if the memory is read by a
    ///   [`Consumer`](crate::Consumer), which publishes its position there.
    /// - `data` is non-null, 8-byte aligned, and valid for reads of `2 * size` bytes, where
    ///   byte `size + i` is byte `i`: the kernel's double mapping of the data pages, as
    ///   returned by `mmap(fd, offset = page_size, len = page_size + 2 * size)` plus
    ///   `page_size`.
    /// - `size` is the map's real `max_entries` (a wrong size makes offsets point at the
    ///   wrong bytes or outside the mapping).
    /// - The memory is not freed or unmapped, and nothing writes it other than through
    ///   atomics or as the ring protocol allows (the kernel, or the other side of the ring).
    ///
    /// # Errors
    ///
    /// [`GeometryError`] if `size` is not a power of two of at least
    /// [`MIN_RING_SIZE`](crate::geometry::MIN_RING_SIZE) bytes.
    ///
    /// # Panics
    ///
    /// If an address is null or misaligned (a broken contract caught early).
    pub unsafe fn from_raw_parts(
        consumer_pos: *mut usize,
        producer_pos: *mut usize,
        data: *mut u8,
        size: usize,
    ) -> Result<Self, GeometryError> {
        // SAFETY: the caller upholds the same contract.
        unsafe { Self::new(consumer_pos, producer_pos, data, size, false) }
    }

    /// As [`from_raw_parts`](Self::from_raw_parts), for memory whose data area this process
    /// writes (a USER_RINGBUF producer, or a model of the kernel producer): the value also
    /// implements [`RingMemoryMut`].
    ///
    /// # Safety
    ///
    /// As for [`from_raw_parts`](Self::from_raw_parts), and `data` is also valid for writes
    /// of `2 * size` bytes.
    ///
    /// # Errors and panics
    ///
    /// As for [`from_raw_parts`](Self::from_raw_parts).
    pub unsafe fn from_raw_parts_mut(
        consumer_pos: *mut usize,
        producer_pos: *mut usize,
        data: *mut u8,
        size: usize,
    ) -> Result<Self, GeometryError> {
        // SAFETY: the caller upholds the same contract, with a writable data area.
        unsafe { Self::new(consumer_pos, producer_pos, data, size, true) }
    }

    unsafe fn new(
        consumer_pos: *mut usize,
        producer_pos: *mut usize,
        data: *mut u8,
        size: usize,
        data_writable: bool,
    ) -> Result<Self, GeometryError> {
        let geometry = Geometry::new(size)?;
        let (Some(consumer_pos), Some(producer_pos), Some(data)) = (
            NonNull::new(consumer_pos),
            NonNull::new(producer_pos),
            NonNull::new(data),
        ) else {
            panic!("RawRingMemory::from_raw_parts: null address");
        };
        assert!(
            consumer_pos.as_ptr().is_aligned()
                && producer_pos.as_ptr().is_aligned()
                && data.as_ptr() as usize % 8 == 0,
            "RawRingMemory::from_raw_parts: misaligned address"
        );
        Ok(Self {
            consumer_pos,
            producer_pos,
            data,
            geometry,
            data_writable,
        })
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }
}

// SAFETY: `size` is fixed and valid (`Geometry::new`). The positions are the words
// `from_raw_parts`' caller vouched for. `header` and `bytes` address the data area, valid for
// `2 * size` bytes with the second half mirroring the first (the caller's contract); `header`
// checks its offset, and `bytes`' caller guarantees `offset + len <= 2 * size`.
unsafe impl RingMemory for RawRingMemory {
    #[inline]
    fn consumer_pos(&self) -> &PositionWord {
        // SAFETY: non-null, aligned, valid while `self` lives (constructor contract); every
        // concurrent access to the word is atomic (the kernel's smp_* accessors, ours).
        unsafe { PositionWord::from_ptr(self.consumer_pos.as_ptr()) }
    }

    #[inline]
    fn producer_pos(&self) -> &PositionWord {
        // SAFETY: as for `consumer_pos`.
        unsafe { PositionWord::from_ptr(self.producer_pos.as_ptr()) }
    }

    #[inline]
    fn size(&self) -> usize {
        self.geometry.size()
    }

    #[inline]
    fn header(&self, offset: usize) -> &DataWord {
        assert!(
            offset < self.geometry.size() && offset % 4 == 0,
            "header offset {offset} outside the data area or misaligned"
        );
        // SAFETY: `offset < size` lies inside the data area, 4-byte aligned (the area is
        // 8-byte aligned); valid while `self` lives (constructor contract).
        unsafe { DataWord::from_ptr(self.data.as_ptr().add(offset).cast()) }
    }

    #[inline]
    unsafe fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        debug_assert!(offset
            .checked_add(len)
            .is_some_and(|end| end <= 2 * self.size()));
        // SAFETY: the caller guarantees `offset + len <= 2 * size`, inside the data area
        // (valid for reads of `2 * size` bytes), and that nobody writes the range while the
        // slice lives.
        unsafe { core::slice::from_raw_parts(self.data.as_ptr().add(offset), len) }
    }

    #[inline]
    fn data_ptr(&self) -> Option<NonNull<u8>> {
        // The data area the caller vouched for: 8-byte aligned (checked), `2 * size` bytes,
        // the very memory `header` and `bytes` address.
        Some(self.data)
    }
}

// SAFETY: as for `RingMemory`; `bytes_mut` hands out the same bytes as `bytes`, and only when
// the constructor's caller vouched that the data area is writable (`from_raw_parts_mut`).
unsafe impl RingMemoryMut for RawRingMemory {
    #[inline]
    unsafe fn bytes_mut(&self, offset: usize, len: usize) -> &mut [u8] {
        assert!(
            self.data_writable,
            "RawRingMemory made by from_raw_parts has a read-only data area"
        );
        debug_assert!(offset
            .checked_add(len)
            .is_some_and(|end| end <= 2 * self.size()));
        // SAFETY: the caller guarantees `offset + len <= 2 * size`, inside the data area
        // (valid for writes: `from_raw_parts_mut`), and exclusive access while the slice lives.
        unsafe { core::slice::from_raw_parts_mut(self.data.as_ptr().add(offset), len) }
    }
}

impl core::fmt::Debug for RawRingMemory {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RawRingMemory")
            .field("consumer_pos", &self.consumer_pos)
            .field("producer_pos", &self.producer_pos)
            .field("data", &self.data)
            .field("size", &self.geometry.size())
            .finish()
    }
}
