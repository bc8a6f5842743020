//! The 8-byte record header.
//!
//! Every record starts with `struct bpf_ringbuf_hdr { u32 len; u32 pg_off; }`
//! (kernel/bpf/ringbuf.c). Bit 31 of `len` is BUSY (reserved, not yet committed), bit 30 is
//! DISCARD (committed but to be skipped), and the low 30 bits are the payload length before
//! rounding. `pg_off` is kernel-internal (it lets `bpf_ringbuf_submit` find the ring from a
//! record pointer); user space ignores it.
//!
//! A record occupies `round_up(len + 8, 8)` bytes of the ring, so record starts are always
//! 8-byte aligned.

/// Size of the record header in bytes (`BPF_RINGBUF_HDR_SZ`).
pub const HEADER_SIZE: usize = 8;

/// `BPF_RINGBUF_BUSY_BIT`: the record is reserved and not yet committed or discarded.
pub const BUSY_BIT: u32 = 1 << 31;

/// `BPF_RINGBUF_DISCARD_BIT`: the record was discarded; consumers skip it.
pub const DISCARD_BIT: u32 = 1 << 30;

/// The payload-length bits of the header's `len` word.
pub const LENGTH_MASK: u32 = DISCARD_BIT - 1;

/// The largest payload the kernel's RINGBUF reserve accepts (`RINGBUF_MAX_RECORD_SZ`,
/// `UINT_MAX / 4`). Records are further limited by the ring size.
pub const MAX_RECORD_LEN: u32 = u32::MAX / 4;

/// Bytes a record with a `len`-byte payload occupies in the ring: `round_up(len + 8, 8)`.
///
/// ```
/// use bpf_ringbuf::header::record_size;
/// assert_eq!(record_size(0), 8);
/// assert_eq!(record_size(1), 16);
/// assert_eq!(record_size(8), 16);
/// assert_eq!(record_size(9), 24);
/// ```
#[inline]
pub const fn record_size(len: usize) -> usize {
    // `len` comes from a 30-bit field (or is checked against the ring size by producers), so
    // the addition cannot overflow for any length a header can carry.
    (len + HEADER_SIZE + 7) & !7
}

/// The first word of a record header (`len` with its BUSY and DISCARD bits).
///
/// ```
/// use bpf_ringbuf::header::RecordHeader;
/// let header = RecordHeader::from_raw(0x8000_0010);
/// assert!(header.is_busy());
/// assert!(!header.is_discarded());
/// assert_eq!(header.len(), 16);
/// assert_eq!(header.record_size(), 24);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordHeader(u32);

impl RecordHeader {
    /// Wraps a raw `len` word as read from the ring.
    #[inline]
    pub const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }

    /// A reserved, not yet committed header for a `len`-byte payload (`len | BUSY`).
    ///
    /// `len` must fit in the 30 length bits; higher bits are masked off.
    #[inline]
    pub const fn busy(len: u32) -> Self {
        Self((len & LENGTH_MASK) | BUSY_BIT)
    }

    /// A committed header for a `len`-byte payload.
    #[inline]
    pub const fn committed(len: u32) -> Self {
        Self(len & LENGTH_MASK)
    }

    /// A discarded header for a `len`-byte payload (`len | DISCARD`).
    #[inline]
    pub const fn discarded(len: u32) -> Self {
        Self((len & LENGTH_MASK) | DISCARD_BIT)
    }

    /// The raw `len` word.
    #[inline]
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// The record is reserved and not yet committed: readers must stop here.
    #[inline]
    pub const fn is_busy(self) -> bool {
        self.0 & BUSY_BIT != 0
    }

    /// The record was discarded: readers skip it but consume its space.
    #[inline]
    pub const fn is_discarded(self) -> bool {
        self.0 & DISCARD_BIT != 0
    }

    /// Payload length in bytes (the low 30 bits).
    #[inline]
    pub const fn len(self) -> usize {
        (self.0 & LENGTH_MASK) as usize
    }

    /// Whether the payload is empty.
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// Bytes the whole record (header and padded payload) occupies in the ring.
    #[inline]
    pub const fn record_size(self) -> usize {
        record_size(self.len())
    }
}

impl core::fmt::Debug for RecordHeader {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecordHeader")
            .field("len", &self.len())
            .field("busy", &self.is_busy())
            .field("discarded", &self.is_discarded())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_match_the_kernel_uapi() {
        assert_eq!(BUSY_BIT, 0x8000_0000);
        assert_eq!(DISCARD_BIT, 0x4000_0000);
        assert_eq!(LENGTH_MASK, 0x3fff_ffff);
        assert_eq!(MAX_RECORD_LEN, 0x3fff_ffff);
    }

    #[test]
    fn record_size_rounds_up_to_eight_including_header() {
        for len in 0..64 {
            let size = record_size(len);
            assert_eq!(size % 8, 0);
            assert!(size >= len + HEADER_SIZE);
            assert!(size < len + HEADER_SIZE + 8);
        }
        assert_eq!(record_size(LENGTH_MASK as usize), (1 << 30) + 8);
    }

    #[test]
    fn flags_are_independent_of_length() {
        let h = RecordHeader::from_raw(BUSY_BIT | DISCARD_BIT | 5);
        assert!(h.is_busy() && h.is_discarded());
        assert_eq!(h.len(), 5);
        assert_eq!(RecordHeader::busy(7).raw(), BUSY_BIT | 7);
        assert_eq!(RecordHeader::discarded(7).raw(), DISCARD_BIT | 7);
        assert_eq!(RecordHeader::committed(u32::MAX).raw(), LENGTH_MASK);
        assert!(RecordHeader::committed(0).is_empty());
    }
}
