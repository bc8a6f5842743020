//! The one boundary between the safe protocol core and ring memory.
//!
//! A ring is two positions and a data area. The kernel maps its data pages twice, back to
//! back, so a record that wraps past the end of the ring is contiguous in virtual memory. The
//! core reaches all of it through [`RingMemory`] (and [`RingMemoryMut`] where it writes the data
//! area): the Linux front end implements it over `mmap`, [`HeapRing`](crate::model::HeapRing)
//! over an allocation, the loom models over loom's atomics, and a BPF library can implement it
//! over a mapping it already holds.

use crate::sync::atomic::{AtomicU32, AtomicUsize};

/// Access to a ring's positions and data area.
///
/// # Safety
///
/// Implementors promise, for the whole lifetime of the value:
///
/// - [`size`](Self::size) is constant, a power of two, at least
///   [`MIN_RING_SIZE`](crate::geometry::MIN_RING_SIZE).
/// - [`consumer_pos`](Self::consumer_pos) and [`producer_pos`](Self::producer_pos) return the
///   ring's two position words (the same ones the other side uses), each always the same one.
/// - [`header`](Self::header) returns, for every 8-byte-aligned `offset < size`, the 32-bit
///   word at that offset of the data area — the same memory [`bytes`](Self::bytes) covers.
/// - [`bytes`](Self::bytes) returns the data area's bytes `offset..offset + len` for any
///   `offset + len <= 2 * size`, where byte `size + i` is byte `i` (the double mapping), or, for
///   memory that is not double mapped, where every reader and writer of a record uses the same
///   start offset `position & mask` (as [`HeapRing`](crate::model::HeapRing) does).
/// - The memory stays valid and at the same address while `self` lives (a `&self` borrow
///   keeps a returned slice alive).
///
/// A custom implementation (say, over a mapping another BPF library made) is correct when it
/// hands out the addresses the kernel's `mmap` of the map returned, checked against the map's
/// `max_entries`. See `docs/vendoring.md`.
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
