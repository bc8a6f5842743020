//! Ring geometry: the data area's size, its mask, positions and their arithmetic.
//!
//! Positions (`consumer_pos`, `producer_pos`) are the kernel's `unsigned long` byte counters:
//! they only grow, and wrap around at `usize::MAX` on a long enough run (quickly on 32-bit
//! kernels). A position's place in the data area is `position & mask`. Two positions are only
//! ever compared through their wrapping difference, which stays correct across the wrap as
//! long as the true distance is below `usize::MAX / 2` — the ring size bounds it far lower.

use crate::error::GeometryError;

/// The smallest data area the core accepts, in bytes (two 8-byte record slots). Useful for
/// small models and tests; kernel ring maps are at least one page of the running kernel
/// (4 KiB on x86_64, 4, 16 or 64 KiB on arm64, 64 KiB on most ppc64el kernels; see
/// [`Geometry::for_map`]), and at most 2 GiB (`max_entries` is a `u32` power of two).
pub const MIN_RING_SIZE: usize = 16;

/// Size and mask of a ring's data area.
///
/// ```
/// use bpf_ringbuf::Geometry;
/// let geometry = Geometry::for_map(64 * 1024, 4096).unwrap();
/// assert_eq!(geometry.mask(), 0xffff);
/// assert_eq!(geometry.offset(usize::MAX), 0xffff);
/// assert!(Geometry::for_map(3 * 4096, 4096).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    mask: usize,
}

impl Geometry {
    /// Geometry of a data area of `size` bytes: a power of two of at least
    /// [`MIN_RING_SIZE`] bytes.
    ///
    /// This is what the protocol itself needs; tiny rings are useful for models and tests.
    /// Use [`Geometry::for_map`] to apply the kernel's additional page-size rule.
    pub const fn new(size: usize) -> Result<Self, GeometryError> {
        if !size.is_power_of_two() {
            return Err(GeometryError::NotPowerOfTwo { size });
        }
        if size < MIN_RING_SIZE {
            return Err(GeometryError::TooSmall { size });
        }
        Ok(Self { mask: size - 1 })
    }

    /// Geometry of a kernel ring map whose `max_entries` is `size`: the kernel requires a
    /// power of two that is a multiple of its page size (`ringbuf_map_alloc` returns `EINVAL`
    /// otherwise), so the smallest ring is one page. `page_size` is the running kernel's
    /// (`AT_PAGESZ`, e.g. `rustix::param::page_size()`), never an assumed 4096: a 4096-byte
    /// ring is refused on 16 KiB and 64 KiB pages.
    pub const fn for_map(size: usize, page_size: usize) -> Result<Self, GeometryError> {
        if page_size == 0 || size % page_size != 0 || size == 0 {
            return Err(GeometryError::NotPageMultiple { size, page_size });
        }
        Self::new(size)
    }

    /// Size of the data area in bytes.
    #[inline]
    pub const fn size(self) -> usize {
        self.mask + 1
    }

    /// `size - 1`: the bits of a position that select a byte of the data area.
    #[inline]
    pub const fn mask(self) -> usize {
        self.mask
    }

    /// Where `position` falls in the data area.
    #[inline]
    pub const fn offset(self, position: usize) -> usize {
        position & self.mask
    }
}

/// Both positions of a ring, as read from its shared words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Positions {
    /// `consumer_pos`: everything before it has been consumed.
    pub consumer: usize,
    /// `producer_pos`: everything before it has been reserved.
    pub producer: usize,
}

/// What the check before sleeping found (a reader's `check_before_sleep`): whether sleeping
/// until the kernel signals is safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// A record (or a corrupt ring, which a read reports) is waiting: do not sleep.
    Readable,
    /// Nothing was produced past `consumer_pos`: sleeping is safe, the kernel wakes us.
    Empty,
    /// The next record is reserved but not committed: sleeping is safe, its commit wakes us.
    HeadBusy,
}

/// Bytes from position `from` forward to position `to`, correct across the wrap at
/// `usize::MAX`.
///
/// ```
/// use bpf_ringbuf::geometry::distance;
/// assert_eq!(distance(usize::MAX - 7, 8), 16);
/// ```
#[inline]
pub const fn distance(from: usize, to: usize) -> usize {
    to.wrapping_sub(from)
}

/// Whether position `a` is strictly after position `b`, compared across the wrap at
/// `usize::MAX` (correct while the two are less than `usize::MAX / 2` apart).
///
/// ```
/// use bpf_ringbuf::geometry::is_after;
/// assert!(is_after(8, usize::MAX - 7));
/// assert!(!is_after(usize::MAX - 7, 8));
/// assert!(!is_after(8, 8));
/// ```
#[inline]
pub const fn is_after(a: usize, b: usize) -> bool {
    (a.wrapping_sub(b) as isize) > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_sizes_the_kernel_rejects() {
        assert_eq!(
            Geometry::for_map(4096 * 3, 4096),
            Err(GeometryError::NotPowerOfTwo { size: 4096 * 3 })
        );
        assert_eq!(
            Geometry::for_map(2048, 4096),
            Err(GeometryError::NotPageMultiple {
                size: 2048,
                page_size: 4096
            })
        );
        assert_eq!(
            Geometry::for_map(0, 4096),
            Err(GeometryError::NotPageMultiple {
                size: 0,
                page_size: 4096
            })
        );
        assert_eq!(Geometry::new(8), Err(GeometryError::TooSmall { size: 8 }));
        assert_eq!(Geometry::for_map(1 << 20, 4096).unwrap().size(), 1 << 20);
    }

    #[test]
    fn the_page_size_rule_holds_for_16k_and_64k_pages() {
        for page in [16 * 1024, 64 * 1024] {
            for size in [4096, page / 2] {
                assert_eq!(
                    Geometry::for_map(size, page),
                    Err(GeometryError::NotPageMultiple {
                        size,
                        page_size: page
                    })
                );
            }
            assert_eq!(Geometry::for_map(page, page).unwrap().size(), page);
            assert_eq!(
                Geometry::for_map(8 * page, page).unwrap().mask(),
                8 * page - 1
            );
            assert_eq!(
                Geometry::for_map(3 * page, page),
                Err(GeometryError::NotPowerOfTwo { size: 3 * page })
            );
        }
    }

    #[test]
    fn offsets_wrap_with_positions() {
        let g = Geometry::new(64).unwrap();
        assert_eq!(g.offset(64), 0);
        assert_eq!(g.offset(usize::MAX - 7), 56);
        assert_eq!(g.offset((usize::MAX - 7).wrapping_add(8)), 0);
        assert_eq!(distance(usize::MAX - 15, 16), 32);
        assert_eq!(distance(5, 5), 0);
    }
}
