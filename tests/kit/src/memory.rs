//! Ring memory mapped by hand, bypassing the crate: mappings with a chosen protection, and raw
//! writes to a USER_RINGBUF for the malformed samples the kernel must reject.

use std::os::fd::BorrowedFd;

use bpf_ringbuf_sys::Mapping;

use crate::maps::page_size;

/// Tries to map `len` bytes of a map fd at `offset` with the given protection.
pub fn try_map(
    map: BorrowedFd<'_>,
    offset: usize,
    len: usize,
    prot: rustix::mm::ProtFlags,
) -> Result<Mapping, rustix::io::Errno> {
    Mapping::map_shared(map, offset as u64, len, prot)
}

/// `mprotect` on a whole mapping made by [`try_map`].
pub fn try_mprotect(
    mapping: &Mapping,
    prot: rustix::mm::MprotectFlags,
) -> Result<(), rustix::io::Errno> {
    // SAFETY: the range is exactly a mapping we own; changing its protection cannot affect
    // Rust-owned memory. Only raw pointers to it exist, so no reference is invalidated.
    unsafe { rustix::mm::mprotect(mapping.as_ptr().as_ptr().cast(), mapping.len(), prot) }
}

/// Raw write access to a USER_RINGBUF's producer page and data area, bypassing the protocol:
/// to post the malformed samples the kernel must reject.
pub struct RawUserRing {
    consumer_page: Mapping,
    producer_and_data: Mapping,
    size: usize,
}

impl RawUserRing {
    /// Maps the USER_RINGBUF `map` of `size` bytes (consumer page read-only, the rest
    /// read-write).
    pub fn new(map: BorrowedFd<'_>, size: usize) -> Self {
        use rustix::mm::ProtFlags;
        let page = page_size();
        RawUserRing {
            consumer_page: try_map(map, 0, page, ProtFlags::READ).expect("map consumer page"),
            producer_and_data: try_map(
                map,
                page,
                page + 2 * size,
                ProtFlags::READ | ProtFlags::WRITE,
            )
            .expect("map producer page and data"),
            size,
        }
    }

    fn word_u64(&self, mapping: &Mapping, offset: usize) -> &std::sync::atomic::AtomicU64 {
        assert!(offset % 8 == 0 && offset + 8 <= mapping.len());
        // SAFETY: in bounds (checked), 8-byte aligned (page-aligned mapping, offset multiple
        // of 8); the mapping lives as long as `self`; shared words are only accessed
        // atomically.
        unsafe {
            std::sync::atomic::AtomicU64::from_ptr(mapping.as_ptr().as_ptr().add(offset).cast())
        }
    }

    /// The kernel's `consumer_pos`.
    pub fn consumer_pos(&self) -> u64 {
        self.word_u64(&self.consumer_page, 0)
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// `producer_pos`.
    pub fn producer_pos(&self) -> u64 {
        self.word_u64(&self.producer_and_data, 0)
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Store-releases `producer_pos` (pairs with the kernel's smp_load_acquire in
    /// `__bpf_user_ringbuf_peek`).
    pub fn set_producer_pos(&self, position: u64) {
        self.word_u64(&self.producer_and_data, 0)
            .store(position, std::sync::atomic::Ordering::Release);
    }

    /// Writes the 8-byte header `{len, 0}` at ring position `position`.
    pub fn write_header(&self, position: u64, len: u32) {
        let offset = page_size() + (position as usize & (self.size - 1));
        self.word_u64(&self.producer_and_data, offset)
            .store(u64::from(len), std::sync::atomic::Ordering::Release);
    }
}
