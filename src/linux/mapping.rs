use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

use bpf_ringbuf_sys::Mapping;
use rustix::mm::ProtFlags;

use crate::error::GeometryError;
use crate::geometry::Geometry;
use crate::memory::{OverwriteMemory, RingMemory, RingMemoryMut};
use crate::sync::atomic::{AtomicU32, AtomicUsize};
use crate::Error;

/// The map's `BPF_OBJ_GET_INFO_BY_FD` record, if the map is of type `expected`.
pub(crate) fn map_info_of_type(
    map: BorrowedFd<'_>,
    expected: bpf_ringbuf_sys::MapType,
) -> Result<bpf_ringbuf_sys::MapInfo, Error> {
    let info = bpf_ringbuf_sys::map_info(map)?;
    if info.map_type() != expected {
        return Err(Error::WrongMapType {
            expected,
            found: info.map_type(),
        });
    }
    Ok(info)
}

/// Which side of the ring this process is on; it decides the page permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// `BPF_MAP_TYPE_RINGBUF`: the kernel produces. The consumer page is mapped read-write
    /// (we publish `consumer_pos`), the producer page and data read-only (the kernel refuses
    /// a writable mapping of them with `EPERM`).
    KernelProducer,
    /// `BPF_MAP_TYPE_USER_RINGBUF`: we produce. The consumer page is read-only (a writable
    /// mapping is refused with `EPERM`), the producer page and data read-write.
    UserProducer,
}

/// A ring map's pages mapped into this process: the [`RingMemory`] of the Linux front end.
///
/// Two mappings of the map fd: offset 0, one page — the consumer page; offset `page_size`,
/// `page_size + 2 * size` bytes — the producer page followed by the data pages, which the
/// kernel maps twice back to back. Both are unmapped on drop; the mappings stay valid after
/// the map fd is closed.
pub struct RingMapping {
    consumer_page: Mapping,
    producer_and_data: Mapping,
    data: NonNull<u8>,
    geometry: Geometry,
    kind: MapKind,
}

// SAFETY: the mappings are plain shared memory; every access the protocol makes to words
// another party writes is atomic, and the rest is handed out under the protocol's ownership
// rules (`RingMemory`'s contract).
unsafe impl Send for RingMapping {}
// SAFETY: as above.
unsafe impl Sync for RingMapping {}

impl RingMapping {
    /// Maps the ring behind `map` (a RINGBUF or USER_RINGBUF map fd whose `max_entries` is
    /// `size`).
    ///
    /// # Errors
    ///
    /// [`Error::Geometry`] if `size` is not a size the kernel accepts for ring maps;
    /// [`Error::Map`] if the kernel refuses a mapping (for instance because `map` is not a
    /// ring map of `kind`, or `size` is not its real size: the kernel checks the length).
    pub fn new(map: BorrowedFd<'_>, size: usize, kind: MapKind) -> Result<Self, Error> {
        let page_size = rustix::param::page_size();
        let geometry = Geometry::for_map(size, page_size).map_err(Error::Geometry)?;
        let (consumer_prot, producer_prot) = match kind {
            MapKind::KernelProducer => (ProtFlags::READ | ProtFlags::WRITE, ProtFlags::READ),
            MapKind::UserProducer => (ProtFlags::READ, ProtFlags::READ | ProtFlags::WRITE),
        };
        let consumer_page =
            Mapping::map_shared(map, 0, page_size, consumer_prot).map_err(|e| Error::Map {
                part: "consumer page",
                source: e.into(),
            })?;
        let length = 2usize
            .checked_mul(size)
            .and_then(|data| data.checked_add(page_size))
            .ok_or(Error::Geometry(GeometryError::NotPowerOfTwo { size }))?;
        let producer_and_data = Mapping::map_shared(map, page_size as u64, length, producer_prot)
            .map_err(|e| Error::Map {
            part: "producer page and data",
            source: e.into(),
        })?;
        // SAFETY: the mapping is `page_size + 2 * size` bytes long, so the data area starts
        // inside it; the result is non-null as an address inside a mapping.
        let data = unsafe { producer_and_data.as_ptr().add(page_size) };
        Ok(Self {
            consumer_page,
            producer_and_data,
            data,
            geometry,
            kind,
        })
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The side this mapping was made for.
    pub fn kind(&self) -> MapKind {
        self.kind
    }

    /// Address of the consumer page.
    pub fn consumer_page(&self) -> NonNull<u8> {
        self.consumer_page.as_ptr()
    }

    /// Address of the producer page (the data area follows it).
    pub fn producer_page(&self) -> NonNull<u8> {
        self.producer_and_data.as_ptr()
    }

    /// The word at `byte_offset` of the producer page (`pending_pos` at 8 since Linux 6.10,
    /// `overwrite_pos` at 16 since 6.19).
    pub(crate) fn producer_page_word(&self, byte_offset: usize) -> &AtomicUsize {
        assert!(byte_offset % 8 == 0 && byte_offset + 8 <= rustix::param::page_size());
        // SAFETY: in bounds of the producer page (checked), aligned (pages are aligned and the
        // offset is a multiple of 8), and mapped as long as `self` lives.
        unsafe {
            AtomicUsize::from_ptr(
                self.producer_and_data
                    .as_ptr()
                    .as_ptr()
                    .add(byte_offset)
                    .cast(),
            )
        }
    }
}

// SAFETY: `size` is the map's `max_entries` (validated by `Geometry::for_map`; a wrong size
// makes the kernel refuse the mapping's length). The positions are the first words of the
// consumer and producer pages. `header` and `bytes` address the data area, which the kernel
// maps twice back to back over `2 * size` bytes, so `offset + len <= 2 * size` stays inside
// the mapping; both mappings live as long as `self`.
unsafe impl RingMemory for RingMapping {
    #[inline]
    fn consumer_pos(&self) -> &AtomicUsize {
        // SAFETY: the consumer page is mapped, page-aligned, and lives as long as `self`.
        unsafe { AtomicUsize::from_ptr(self.consumer_page.as_ptr().as_ptr().cast()) }
    }

    #[inline]
    fn producer_pos(&self) -> &AtomicUsize {
        // SAFETY: the producer page is mapped, page-aligned, and lives as long as `self`.
        unsafe { AtomicUsize::from_ptr(self.producer_and_data.as_ptr().as_ptr().cast()) }
    }

    #[inline]
    fn size(&self) -> usize {
        self.geometry.size()
    }

    #[inline]
    fn header(&self, offset: usize) -> &AtomicU32 {
        // Masked rather than asserted: for every offset the core asks for (8-aligned, below
        // `size`) this is the identity, and any other offset still lands on an aligned word
        // inside the data area, which the trait allows. It takes two compare-and-branch
        // pairs out of the consumer's read loop (docs/benchmarks.md: instructions per record).
        let offset = offset & self.geometry.mask() & !3;
        // SAFETY: `offset <= mask < size` lies inside the data area, 4-byte aligned (low bits
        // cleared; the data area is page-aligned); the mapping lives as long as `self`.
        unsafe { AtomicU32::from_ptr(self.data.as_ptr().add(offset).cast()) }
    }

    #[inline]
    unsafe fn header_unchecked(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset < self.geometry.size() && offset % 8 == 0);
        // SAFETY: the caller guarantees `offset < size` and 8-byte alignment: an aligned
        // word inside the data area (which is page-aligned); the mapping lives as long as
        // `self`.
        unsafe { AtomicU32::from_ptr(self.data.as_ptr().add(offset).cast()) }
    }

    #[inline]
    unsafe fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        debug_assert!(offset + len <= 2 * self.geometry.size());
        // SAFETY: the caller guarantees `offset + len <= 2 * size`, inside the double-mapped
        // data area, and that nobody writes the range while the slice lives.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr().add(offset), len) }
    }

    #[inline]
    fn data_ptr(&self) -> Option<NonNull<u8>> {
        // The double-mapped data area `header` and `bytes` address: page-aligned, `2 * size`
        // bytes, mapped as long as `self` lives.
        Some(self.data)
    }
}

// SAFETY: as for `RingMemory`. Only USER_RINGBUF mappings have a writable data area; for a
// RINGBUF mapping the data is read-only and `bytes_mut` panics instead of handing out a
// slice that would fault when written.
unsafe impl RingMemoryMut for RingMapping {
    #[inline]
    unsafe fn bytes_mut(&self, offset: usize, len: usize) -> &mut [u8] {
        assert!(
            self.kind == MapKind::UserProducer,
            "the data area of a RINGBUF map is read-only"
        );
        debug_assert!(offset + len <= 2 * self.geometry.size());
        // SAFETY: the caller guarantees `offset + len <= 2 * size`, inside the double-mapped
        // data area (mapped writable for USER_RINGBUF), and exclusive access while the slice
        // lives.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr().add(offset), len) }
    }
}

// SAFETY: `overwrite_pos` is the producer page's third word (byte 16, Linux 6.19's layout:
// producer_pos, pending_pos, overwrite_pos); on older kernels it is a word of the zeroed
// producer page that stays 0. `data_word` addresses the double-mapped data area, which spans
// `2 * size` bytes; offsets past it are refused with a panic.
unsafe impl OverwriteMemory for RingMapping {
    #[inline]
    fn overwrite_pos(&self) -> &AtomicUsize {
        self.producer_page_word(16)
    }

    #[inline]
    fn data_word(&self, offset: usize) -> &AtomicU32 {
        assert!(offset % 4 == 0 && offset + 4 <= 2 * self.geometry.size());
        // SAFETY: in bounds of the double-mapped data area (checked) and 4-byte aligned; the
        // mapping lives as long as `self`.
        unsafe { AtomicU32::from_ptr(self.data.as_ptr().add(offset).cast()) }
    }
}

impl std::fmt::Debug for RingMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingMapping")
            .field("kind", &self.kind)
            .field("size", &self.geometry.size())
            .field("consumer_page", &self.consumer_page.as_ptr())
            .field("producer_page", &self.producer_and_data.as_ptr())
            .finish()
    }
}
