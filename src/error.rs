//! Typed errors of the protocol core.
//!
//! Ring memory is shared with the kernel and with any process that holds the map's file
//! descriptor (it can write `consumer_pos`). Every header and position is therefore untrusted
//! input: where it contradicts the protocol, the core reports one of these errors instead of
//! panicking or reading out of bounds, and leaves the ring as it was so nothing is lost.

use core::fmt;

/// A ring size the protocol (or the kernel) does not accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GeometryError {
    /// The size is not a power of two.
    NotPowerOfTwo {
        /// The rejected size.
        size: usize,
    },
    /// The size is not a non-zero multiple of the page size.
    NotPageMultiple {
        /// The rejected size.
        size: usize,
        /// The page size it must be a multiple of.
        page_size: usize,
    },
    /// The size is smaller than [`MIN_RING_SIZE`](crate::geometry::MIN_RING_SIZE).
    TooSmall {
        /// The rejected size.
        size: usize,
    },
}

impl fmt::Display for GeometryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotPowerOfTwo { size } => {
                write!(f, "ring size {size} is not a power of two")
            }
            Self::NotPageMultiple { size, page_size } => write!(
                f,
                "ring size {size} is not a non-zero multiple of the page size {page_size}"
            ),
            Self::TooSmall { size } => write!(f, "ring size {size} is too small"),
        }
    }
}

impl core::error::Error for GeometryError {}

/// The ring's shared state contradicts the protocol, or a copy target is too small.
///
/// Ring-state errors leave `consumer_pos` where it was: the records before the bad spot
/// have been delivered, nothing after it is skipped silently. How to go on (the same verbs
/// on every reader):
///
/// - [`ConsumerPosMoved`](Self::ConsumerPosMoved): someone else wrote `consumer_pos`.
///   [`resume`](crate::Consumer::resume) continues from the reader's own cursor (nothing it had
///   not read is lost), [`follow`](crate::Consumer::follow) adopts the other writer's position.
/// - Any other corruption: [`resync`](crate::Consumer::resync) moves past everything written
///   so far.
///
/// [`guide::design`](crate::guide::design) says what is detected and what cannot be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadError {
    /// `consumer_pos` is not what this reader published last: another writer (a second
    /// reader in another process, or a process scribbling on the consumer page) moved it.
    /// Nothing was read or moved.
    ConsumerPosMoved {
        /// The position this reader published last (its own cursor).
        expected: usize,
        /// The position found in the ring.
        found: usize,
    },
    /// `consumer_pos` is ahead of `producer_pos`, or further behind it than the ring holds:
    /// someone wrote a bogus `consumer_pos`.
    ConsumerAhead {
        /// The consumer position found in the ring.
        consumer_pos: usize,
        /// The producer position found in the ring.
        producer_pos: usize,
    },
    /// The position a read would start from (`consumer_pos`, or in overwrite mode
    /// `overwrite_pos`) is not 8-byte aligned, so it does not point at a record header.
    MisalignedPosition {
        /// The misaligned position.
        position: usize,
    },
    /// A header claims a record that extends past `producer_pos` (or past the ring).
    RecordOutOfBounds {
        /// Position of the bad header.
        position: usize,
        /// The raw `len` word of the header.
        header: u32,
        /// Bytes the header claims (header included, rounded up).
        record_size: usize,
        /// Bytes actually available between the header and `producer_pos`.
        available: usize,
    },
    /// The next record does not fit in the caller's buffer; it was not consumed.
    BufferTooSmall {
        /// Payload length of the record.
        needed: usize,
        /// Length of the buffer offered.
        capacity: usize,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ConsumerPosMoved { expected, found } => write!(
                f,
                "consumer_pos is {found:#x}, but this reader published {expected:#x}: another \
                 writer moved it"
            ),
            Self::ConsumerAhead {
                consumer_pos,
                producer_pos,
            } => write!(
                f,
                "corrupt ring: consumer_pos {consumer_pos:#x} is not within one ring size \
                 behind producer_pos {producer_pos:#x}"
            ),
            Self::MisalignedPosition { position } => write!(
                f,
                "corrupt ring: position {position:#x} is not 8-byte aligned"
            ),
            Self::RecordOutOfBounds {
                position,
                header,
                record_size,
                available,
            } => write!(
                f,
                "corrupt ring: record at {position:#x} (header {header:#010x}) claims \
                 {record_size} bytes but only {available} are available"
            ),
            Self::BufferTooSmall { needed, capacity } => write!(
                f,
                "record of {needed} bytes does not fit in a buffer of {capacity} bytes"
            ),
        }
    }
}

impl core::error::Error for ReadError {}
