//! Shared mappings of map file descriptors (ring buffer pages).

use core::ptr::NonNull;
use std::os::fd::AsFd;

use rustix::io::Errno;
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

/// An owned `MAP_SHARED` mapping, unmapped on drop.
///
/// This type only owns the address range: it never reads or writes the memory itself. What
/// the memory may be used for (and with which atomics) is for the caller to decide; the kernel
/// and other processes may change it at any time.
#[derive(Debug)]
pub struct Mapping {
    /// Start of the mapping (page aligned, non-null).
    ptr: NonNull<u8>,
    /// Length passed to `mmap`, in bytes (non-zero).
    len: usize,
}

// SAFETY: a `Mapping` is an address range plus the duty to unmap it. It grants no access to
// the memory through `&self` (only a raw pointer), and `munmap` may be called from any thread,
// so moving or sharing the handle between threads cannot cause a data race by itself.
unsafe impl Send for Mapping {}
// SAFETY: see `Send`: `&Mapping` only exposes the address and length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `mmap(NULL, len, prot, MAP_SHARED, fd, offset)`.
    ///
    /// For a ring buffer map: offset 0 is the consumer page, offset `page_size()` the producer
    /// page followed by the data area mapped twice (`page_size() + 2 * max_entries` bytes).
    ///
    /// # Errors
    ///
    /// `EINVAL` when `len` is 0 or the range is not one the map allows, `EPERM`/`EACCES` for
    /// protections the map refuses (e.g. writing a RINGBUF's producer page).
    pub fn map_shared(
        fd: impl AsFd,
        offset: u64,
        len: usize,
        prot: ProtFlags,
    ) -> Result<Mapping, Errno> {
        if len == 0 {
            return Err(Errno::INVAL);
        }
        // SAFETY: the address hint is null and MAP_FIXED is not set, so the kernel picks a
        // fresh range and no existing mapping (in particular no Rust-owned memory) is replaced.
        let ptr = unsafe {
            mmap(
                core::ptr::null_mut(),
                len,
                prot,
                MapFlags::SHARED,
                fd,
                offset,
            )
        }?;
        // A successful mmap never returns null (it returns MAP_FAILED on error, which rustix
        // turns into `Err`).
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(Errno::NOMEM)?;
        Ok(Mapping { ptr, len })
    }

    /// The start of the mapping.
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always `false`: empty mappings cannot be created.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value created and owns exclusively; it
        // is unmapped exactly once, here. Callers must not use pointers derived from it after
        // the drop (they are raw pointers, so that is their documented obligation).
        let result = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
        // munmap of a range we mapped cannot fail short of a kernel bug; nothing to do if so.
        debug_assert!(result.is_ok(), "munmap failed: {result:?}");
    }
}
