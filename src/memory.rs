//! The one boundary between the safe protocol core and ring memory.
//!
//! A ring is two positions and a data area. The kernel maps its data pages twice, back to
//! back, so a record that wraps past the end of the ring is contiguous in virtual memory. The
//! core reaches all of it through [`RingMemory`] (and [`RingMemoryMut`] where it writes the data
//! area): the Linux front end implements it over `mmap`, [`HeapRing`](crate::model::HeapRing)
//! over an allocation, the loom models over loom's atomics, and a BPF library can implement it
//! over a mapping it already holds.

use core::ptr::NonNull;

use crate::sync::atomic::{fence, AtomicU32, AtomicUsize, Ordering};

/// A ring position word (`consumer_pos`, `producer_pos`, `overwrite_pos`) as the protocol
/// core reaches it through [`RingMemory`].
///
/// Outside this crate it can only be *loaded*: it may lie on a page the kernel mapped
/// read-only (a RINGBUF's producer page, a USER_RINGBUF's consumer page), where Rust allows
/// only relaxed atomic loads, and storing to a position is the one thing that can hand ring
/// space back to the other side while a record is still lent. The core's own stores and
/// exchanges live inside the crate, each next to the kernel code it pairs with.
///
/// ```
/// use bpf_ringbuf::memory::PositionWord;
/// use std::sync::atomic::AtomicUsize;
///
/// let word = AtomicUsize::new(64);
/// assert_eq!(PositionWord::from_atomic(&word).load_acquire(), 64);
/// ```
#[repr(transparent)]
pub struct PositionWord(AtomicUsize);

impl PositionWord {
    /// A view of `atomic` that offers only loads.
    #[inline]
    pub fn from_atomic(atomic: &AtomicUsize) -> &PositionWord {
        // SAFETY: `PositionWord` is `repr(transparent)` over `AtomicUsize`, so the two
        // references have the same layout; the result borrows `atomic`.
        unsafe { &*(atomic as *const AtomicUsize).cast::<PositionWord>() }
    }

    /// A view of the position word at `ptr`, as [`AtomicUsize::from_ptr`].
    ///
    /// # Safety
    ///
    /// `ptr` is non-null, aligned for `usize`, valid for reads for `'a`, and during `'a` every
    /// access to the word is atomic (the kernel's `smp_load_acquire`, `smp_store_release`,
    /// `READ_ONCE`, `WRITE_ONCE`). The memory may be mapped read-only unless code of this
    /// crate stores to the word (see [`RingMemory`]'s contract).
    #[cfg(not(bpf_ringbuf_loom))]
    #[inline]
    pub unsafe fn from_ptr<'a>(ptr: *mut usize) -> &'a PositionWord {
        // SAFETY: the caller upholds `AtomicUsize::from_ptr`'s contract; the cast is the
        // identity layout of `from_atomic`.
        Self::from_atomic(unsafe { AtomicUsize::from_ptr(ptr) })
    }

    /// A relaxed load (`READ_ONCE`).
    #[inline]
    pub fn load_relaxed(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// A relaxed load followed by an acquire fence: an acquire load that is also sound on
    /// memory mapped read-only (the same `mov` on x86).
    #[inline]
    pub fn load_acquire(&self) -> usize {
        let value = self.0.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        value
    }

    /// The atomic itself, for the core's stores, which the memory contract allows.
    #[inline(always)]
    pub(crate) fn atomic(&self) -> &AtomicUsize {
        &self.0
    }
}

impl core::fmt::Debug for PositionWord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("PositionWord")
            .field(&self.load_relaxed())
            .finish()
    }
}

/// A 32-bit word of a ring's data area — a record header's `len` word, or a payload word
/// copied by the overwrite-mode reader — as the protocol core reaches it through
/// [`RingMemory`].
///
/// Outside this crate it can only be loaded, for the reasons [`PositionWord`] gives, and
/// because its bytes may belong to a record currently lent out as `&[u8]` or `&mut [u8]`:
/// a store there would write under a live borrow.
///
/// ```
/// use bpf_ringbuf::memory::DataWord;
/// use std::sync::atomic::AtomicU32;
///
/// let word = AtomicU32::new(0x8000_0010);
/// assert_eq!(DataWord::from_atomic(&word).load_relaxed(), 0x8000_0010);
/// ```
#[repr(transparent)]
pub struct DataWord(AtomicU32);

impl DataWord {
    /// A view of `atomic` that offers only loads.
    #[inline]
    pub fn from_atomic(atomic: &AtomicU32) -> &DataWord {
        // SAFETY: `DataWord` is `repr(transparent)` over `AtomicU32`; the result borrows
        // `atomic`.
        unsafe { &*(atomic as *const AtomicU32).cast::<DataWord>() }
    }

    /// A view of the data word at `ptr`, as [`AtomicU32::from_ptr`].
    ///
    /// # Safety
    ///
    /// `ptr` is non-null, 4-byte aligned, valid for reads for `'a`, and during `'a` every
    /// access to the word that can race is atomic or a read (the kernel writes headers with
    /// `xchg`/`WRITE_ONCE`; payload bytes are written only as the protocol allows). The
    /// memory may be mapped read-only unless code of this crate stores to the word.
    #[cfg(not(bpf_ringbuf_loom))]
    #[inline]
    pub unsafe fn from_ptr<'a>(ptr: *mut u32) -> &'a DataWord {
        // SAFETY: the caller upholds `AtomicU32::from_ptr`'s contract.
        Self::from_atomic(unsafe { AtomicU32::from_ptr(ptr) })
    }

    /// A relaxed load (`READ_ONCE`).
    #[inline]
    pub fn load_relaxed(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// A relaxed load followed by an acquire fence (see [`PositionWord::load_acquire`]).
    #[inline]
    pub fn load_acquire(&self) -> u32 {
        let value = self.0.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        value
    }

    /// The atomic itself, for the core's stores and exchanges, which the memory contract
    /// allows.
    #[inline(always)]
    pub(crate) fn atomic(&self) -> &AtomicU32 {
        &self.0
    }
}

impl core::fmt::Debug for DataWord {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("DataWord")
            .field(&self.load_relaxed())
            .finish()
    }
}

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
/// Implementing the trait makes no reader or producer: the endpoints over a ring
/// ([`Consumer::new`](crate::Consumer::new), [`Producer::new`](crate::Producer::new), ...) are
/// `unsafe fn`s whose callers promise that they are the ring's only ones, and the front end
/// ([`RingBuf`](crate::RingBuf), [`UserRingBuf`](crate::UserRingBuf)) makes that promise by
/// claiming the map. What the trait hands out to anyone else is harmless: position and data
/// words that can only be loaded ([`PositionWord`], [`DataWord`]), and byte slices only
/// through `unsafe fn`s.
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
///    consumer; a [`Producer`](crate::Producer) stores to `producer_pos` and to headers, so
///    those and the data area must be writable when the value is written by a producer.
///    Words nobody in this process writes may be on read-only pages: the core loads them only
///    with relaxed loads (followed by a fence where it needs acquire semantics).
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
    fn consumer_pos(&self) -> &PositionWord;

    /// The `producer_pos` word (start of the producer page).
    fn producer_pos(&self) -> &PositionWord;

    /// Size of the data area in bytes (the map's `max_entries`).
    fn size(&self) -> usize;

    /// The `len` word of the record header at `offset` (8-byte aligned, `< size`).
    ///
    /// Implementations may panic (or return any word) for other offsets; the core never
    /// asks for one.
    fn header(&self, offset: usize) -> &DataWord;

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
    unsafe fn header_unchecked(&self, offset: usize) -> &DataWord {
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
            fn consumer_pos(&self) -> &PositionWord {
                (**self).consumer_pos()
            }
            #[inline]
            fn producer_pos(&self) -> &PositionWord {
                (**self).producer_pos()
            }
            #[inline]
            fn size(&self) -> usize {
                (**self).size()
            }
            #[inline]
            fn header(&self, offset: usize) -> &DataWord {
                (**self).header(offset)
            }
            #[inline]
            unsafe fn header_unchecked(&self, offset: usize) -> &DataWord {
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
    fn overwrite_pos(&self) -> &PositionWord;

    /// The 32-bit word at `offset` (4-byte aligned, `< 2 * size`) of the data area.
    fn data_word(&self, offset: usize) -> &DataWord;
}

macro_rules! forward_overwrite_memory {
    ($($pointer:ty),*) => {$(
        // SAFETY: forwards to `T`, which upholds the contract.
        unsafe impl<T: OverwriteMemory + ?Sized> OverwriteMemory for $pointer {
            #[inline]
            fn overwrite_pos(&self) -> &PositionWord {
                (**self).overwrite_pos()
            }
            #[inline]
            fn data_word(&self, offset: usize) -> &DataWord {
                (**self).data_word(offset)
            }
        }
    )*};
}

forward_overwrite_memory!(&T);
#[cfg(feature = "alloc")]
forward_overwrite_memory!(alloc::sync::Arc<T>, alloc::boxed::Box<T>);
