//! The one boundary between the safe protocol core and ring memory.
//!
//! A ring is two positions and a data area. The kernel maps its data pages twice, back to
//! back, so a record that wraps past the end of the ring is contiguous in virtual memory. The
//! core reaches all of it through [`RingMemory`] (and [`RingMemoryMut`] where it writes the data
//! area): the Linux front end implements it over `mmap`, [`HeapRing`](crate::model::HeapRing)
//! over an allocation, the loom models over loom's atomics, and a BPF library can implement it
//! over a mapping it already holds.

use core::ptr::NonNull;

use crate::sync::atomic::{AtomicU32, AtomicUsize};

/// Access to a ring's positions and data area: the one thing the protocol core needs from
/// whoever mapped the ring.
///
/// Implement it to run the core over memory this crate did not create — for instance the
/// mapping a BPF library already made (see [`guide::vendoring`](crate::guide::vendoring) and
/// `examples/byo_mapping.rs`), or use [`RawRingMemory`](crate::RawRingMemory), which
/// implements it over raw addresses. The core turns what these methods return into atomic
/// loads and stores and into `&[u8]` slices without further checks, which is why the trait is
/// `unsafe` to implement.
///
/// # Safety
///
/// An implementation promises, for as long as the value lives:
///
/// 1. **Size.** [`size`](Self::size) returns the same value on every call: the size of the
///    data area in bytes, a power of two, at least
///    [`MIN_RING_SIZE`](crate::geometry::MIN_RING_SIZE). For a kernel map it is the map's
///    `max_entries`.
/// 2. **Positions.** [`consumer_pos`](Self::consumer_pos) and
///    [`producer_pos`](Self::producer_pos) return the ring's two position words — the very
///    words the other side of the ring (the kernel) reads and writes — and always the same
///    ones. A [`Consumer`](crate::Consumer) stores to `consumer_pos` and only loads
///    `producer_pos`, so `consumer_pos` must be writable memory when the value is read by a
///    consumer.
/// 3. **Headers.** For every `offset < size` that is a multiple of 8,
///    [`header`](Self::header) returns the 32-bit word at byte `offset` of the data area (the
///    same memory [`bytes`](Self::bytes) covers). It may panic for other offsets; the core
///    never asks for one.
/// 4. **Bytes.** For every `offset + len <= 2 * size`, [`bytes`](Self::bytes) returns the data
///    area's bytes `offset..offset + len`, where byte `size + i` is byte `i`: the kernel maps
///    the data pages twice, back to back, so a record that wraps past the end is contiguous.
///    Memory that is not double mapped may instead hold `2 * size` plain bytes, provided every
///    reader and writer of the ring reaches each record from its start offset
///    (`position & (size - 1)`), so a wrapping record is stored contiguously past `size`
///    (this is what [`HeapRing`](crate::model::HeapRing) does; it can only work when both
///    sides of the ring use the same implementation, never for a kernel map).
/// 5. **Lifetime.** The memory stays valid, and at the same address, while `self` lives;
///    every returned reference borrows `self`.
/// 6. **Access.** Apart from the core, the positions and headers are only accessed
///    atomically (the kernel's `smp_load_acquire`, `smp_store_release`, `xchg`,
///    `READ_ONCE`), and the data area is only written as the ring protocol allows. This is
///    what the other side of the ring (the kernel, or a model of it) promises; see
///    [`guide::design`](crate::guide::design) for what happens when a third process breaks
///    it.
///
/// 7. **Data pointer.** If [`data_ptr`](Self::data_ptr) returns `Some(data)`, it returns the
///    same pointer on every call; `data` is 8-byte aligned, valid for reads of `2 * size`
///    bytes, and for every offset the core asks for, `data + offset` is where
///    [`header`](Self::header) and [`bytes`](Self::bytes) point: the header word at an
///    8-aligned `offset < size` is at `data + offset`, and the bytes `offset..offset + len` are
///    at `data + offset`.
///
/// An implementation over a kernel map is correct when it hands out the addresses the two
/// `mmap` calls of the map returned (offset 0 for the consumer page, offset `page_size` for
/// the producer page, with the data area one page further) and the size is the map's
/// `max_entries` (a wrong size makes the kernel refuse the mapping's length, as long as the
/// implementation maps `page_size + 2 * size` bytes).
///
/// Whether the type is `Send` or `Sync` is the implementor's call, as for any type holding
/// raw pointers; a `Consumer` is `Send` when its memory is.
pub unsafe trait RingMemory {
    /// The `consumer_pos` word (start of the consumer page).
    fn consumer_pos(&self) -> &AtomicUsize;

    /// The `producer_pos` word (start of the producer page).
    fn producer_pos(&self) -> &AtomicUsize;

    /// Size of the data area in bytes (the map's `max_entries`).
    fn size(&self) -> usize;

    /// The `len` word of the record header at `offset` (8-byte aligned, `< size`).
    ///
    /// Implementations may panic (or return any word) for other offsets; the core never
    /// asks for one.
    fn header(&self, offset: usize) -> &AtomicU32;

    /// [`header`](Self::header) at an offset the caller has proven valid, so an
    /// implementation may skip its own check of it. The default calls `header`.
    ///
    /// The consumer's read loop uses this: its offsets are `position & mask` of 8-aligned
    /// positions, valid by construction, and a second check in `header` costs two
    /// instructions per record (docs/benchmarks.md).
    ///
    /// # Safety
    ///
    /// `offset` is 8-byte aligned and below [`size`](Self::size).
    #[inline]
    unsafe fn header_unchecked(&self, offset: usize) -> &AtomicU32 {
        self.header(offset)
    }

    /// The data area's bytes `offset..offset + len`.
    ///
    /// # Safety
    ///
    /// The caller ensures `offset + len <= 2 * size`, and that nobody writes these bytes while
    /// the returned slice lives: the protocol hands a committed record to its reader until
    /// `consumer_pos` moves past it.
    unsafe fn bytes(&self, offset: usize, len: usize) -> &[u8];

    /// The start of the data area, when it is one run of `2 * size` bytes in which
    /// [`header`](Self::header) and [`bytes`](Self::bytes) point at `data + offset`
    /// (promise 7 of the trait). `None`, the default, if it is not.
    ///
    /// With a pointer, the consumer's read loop computes the address of each header and
    /// record itself, from a pointer it keeps in a register, instead of calling `header` and
    /// `bytes` for every record, whose loads of the implementation's fields the compiler must
    /// repeat after every acquire fence (docs/benchmarks.md: instructions per record). It also
    /// prefetches ahead of itself through it. Memory this crate maps, and
    /// [`RawRingMemory`](crate::RawRingMemory), return their pointer.
    #[inline]
    fn data_ptr(&self) -> Option<NonNull<u8>> {
        None
    }
}

/// A ring whose data area this process writes (USER_RINGBUF producers, and models of the
/// kernel's producer).
///
/// # Safety
///
/// As for [`RingMemory`], and [`bytes_mut`](Self::bytes_mut) returns the same bytes that
/// [`bytes`](RingMemory::bytes) does, writable.
pub unsafe trait RingMemoryMut: RingMemory {
    /// The data area's bytes `offset..offset + len`, writable.
    ///
    /// # Safety
    ///
    /// The caller ensures `offset + len <= 2 * size`, and that nobody else reads or writes these
    /// bytes while the returned slice lives: the protocol gives a reserved record to its writer
    /// alone until the writer commits it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn bytes_mut(&self, offset: usize, len: usize) -> &mut [u8];
}

macro_rules! forward_ring_memory {
    ($($pointer:ty),*) => {$(
        // SAFETY: forwards every method to `T`, which upholds the contract; a shared
        // reference or a shared owner keeps `T` alive and in place.
        unsafe impl<T: RingMemory + ?Sized> RingMemory for $pointer {
            #[inline]
            fn consumer_pos(&self) -> &AtomicUsize {
                (**self).consumer_pos()
            }
            #[inline]
            fn producer_pos(&self) -> &AtomicUsize {
                (**self).producer_pos()
            }
            #[inline]
            fn size(&self) -> usize {
                (**self).size()
            }
            #[inline]
            fn header(&self, offset: usize) -> &AtomicU32 {
                (**self).header(offset)
            }
            #[inline]
            unsafe fn header_unchecked(&self, offset: usize) -> &AtomicU32 {
                // SAFETY: the caller upholds `header_unchecked`'s contract, which is `T`'s.
                unsafe { (**self).header_unchecked(offset) }
            }
            #[inline]
            unsafe fn bytes(&self, offset: usize, len: usize) -> &[u8] {
                // SAFETY: the caller upholds `bytes`' contract, which is `T`'s.
                unsafe { (**self).bytes(offset, len) }
            }
            #[inline]
            fn data_ptr(&self) -> Option<NonNull<u8>> {
                (**self).data_ptr()
            }
        }

        // SAFETY: as above.
        unsafe impl<T: RingMemoryMut + ?Sized> RingMemoryMut for $pointer {
            #[inline]
            unsafe fn bytes_mut(&self, offset: usize, len: usize) -> &mut [u8] {
                // SAFETY: the caller upholds `bytes_mut`'s contract, which is `T`'s.
                unsafe { (**self).bytes_mut(offset, len) }
            }
        }
    )*};
}

forward_ring_memory!(&T);
#[cfg(feature = "alloc")]
forward_ring_memory!(alloc::sync::Arc<T>, alloc::boxed::Box<T>);

/// A ring in overwrite mode (`BPF_F_RB_OVERWRITE`, Linux 6.19+).
///
/// In overwrite mode the kernel never refuses a reservation for lack of space: it advances
/// `overwrite_pos` over the oldest records and reuses their space, even while a reader is
/// copying them. A reader therefore never borrows record bytes; it copies them word by word
/// with atomic loads ([`data_word`](Self::data_word)) and then checks
/// [`overwrite_pos`](Self::overwrite_pos) to learn whether the copy was torn.
///
/// # Safety
///
/// As for [`RingMemory`], and:
///
/// - [`overwrite_pos`](Self::overwrite_pos) returns the ring's `overwrite_pos` word (the third
///   word of the producer page, at byte 16), always the same one;
/// - [`data_word`](Self::data_word) returns, for every 4-byte-aligned `offset < 2 * size`, the
///   32-bit word at that offset of the (double-mapped) data area — the same memory
///   [`header`](RingMemory::header) and [`bytes`](RingMemory::bytes) cover.
pub unsafe trait OverwriteMemory: RingMemory {
    /// The `overwrite_pos` word: every record before it has been (or is being) overwritten.
    fn overwrite_pos(&self) -> &AtomicUsize;

    /// The 32-bit word at `offset` (4-byte aligned, `< 2 * size`) of the data area.
    fn data_word(&self, offset: usize) -> &AtomicU32;
}

macro_rules! forward_overwrite_memory {
    ($($pointer:ty),*) => {$(
        // SAFETY: forwards to `T`, which upholds the contract.
        unsafe impl<T: OverwriteMemory + ?Sized> OverwriteMemory for $pointer {
            #[inline]
            fn overwrite_pos(&self) -> &AtomicUsize {
                (**self).overwrite_pos()
            }
            #[inline]
            fn data_word(&self, offset: usize) -> &AtomicU32 {
                (**self).data_word(offset)
            }
        }
    )*};
}

forward_overwrite_memory!(&T);
#[cfg(feature = "alloc")]
forward_overwrite_memory!(alloc::sync::Arc<T>, alloc::boxed::Box<T>);
