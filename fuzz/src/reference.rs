//! The protocol's read rules, written out plainly as the reference the consumer is compared
//! with: from `consumer_pos`, the list of steps any reader must take.
//!
//! It shares no code with `bpf_ringbuf::consumer`: positions are walked with `u128`
//! arithmetic relative to `consumer_pos` (no wrapping), and bytes come through the closures
//! the caller passes (an independent image of the ring, or the ring's memory).

use bpf_ringbuf::ReadError;

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const LENGTH_MASK: u32 = DISCARD_BIT - 1;

/// One step of the read loop, as the protocol defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A committed record: header at `position`, `payload` after it; the next record starts at
    /// `next`.
    Record {
        /// Position of the header.
        position: usize,
        /// The payload bytes.
        payload: Vec<u8>,
        /// Position of the following header.
        next: usize,
    },
    /// A discarded record; the next one starts at `next`.
    Discarded {
        /// Position of the following header.
        next: usize,
    },
    /// The record at `position` is reserved: reading stops.
    Busy {
        /// Position of the BUSY header.
        position: usize,
    },
    /// `position == producer_pos`: nothing more.
    End {
        /// The producer position.
        position: usize,
    },
    /// The header at `position` contradicts the positions.
    Corrupt {
        /// Position of the bad header.
        position: usize,
        /// The error a reader must report.
        error: ReadError,
    },
    /// `consumer_pos` itself is unusable; nothing may be read.
    Invalid(ReadError),
}

impl Step {
    /// Whether reading stops at this step.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Step::Record { .. } | Step::Discarded { .. })
    }
}

/// Record bytes the protocol assigns to a `len`-byte payload: `round_up(len + 8, 8)`.
pub fn record_size(len: u32) -> u128 {
    (u128::from(len) + 8).div_ceil(8) * 8
}

/// The steps from `consumer_pos` to the end of what may be read, ending with a terminal step.
///
/// `header(offset)` returns the `len` word at data-area offset `offset` (`< size`, 8-aligned);
/// `bytes(offset, len)` the data area's bytes there (`offset + len <= 2 * size`).
pub fn walk(
    size: usize,
    consumer_pos: usize,
    producer_pos: usize,
    header: impl Fn(usize) -> u32,
    bytes: impl Fn(usize, usize) -> Vec<u8>,
) -> Vec<Step> {
    assert!(size.is_power_of_two() && size >= 16);
    let modulus = 1u128 << usize::BITS;
    // How far producer_pos is ahead of consumer_pos, counting across the wrap at usize::MAX.
    let ahead = (producer_pos as u128 + modulus - consumer_pos as u128) % modulus;
    if ahead > size as u128 {
        return vec![Step::Invalid(ReadError::ConsumerAhead {
            consumer_pos,
            producer_pos,
        })];
    }
    if consumer_pos % 8 != 0 {
        return vec![Step::Invalid(ReadError::MisalignedPosition {
            position: consumer_pos,
        })];
    }
    let at = |walked: u128| ((consumer_pos as u128 + walked) % modulus) as usize;
    let mut steps = Vec::new();
    let mut walked = 0u128;
    loop {
        let position = at(walked);
        if walked == ahead {
            steps.push(Step::End { position });
            return steps;
        }
        let offset = position % size;
        let raw = header(offset);
        let len = raw & LENGTH_MASK;
        let record = record_size(len);
        let available = ahead - walked;
        // A BUSY record always fits before producer_pos (its length is written before the
        // position is released past it): a BUSY header that does not fit is corruption.
        if raw & BUSY_BIT != 0 && record <= available {
            steps.push(Step::Busy { position });
            return steps;
        }
        if record > available {
            steps.push(Step::Corrupt {
                position,
                error: ReadError::RecordOutOfBounds {
                    position,
                    header: raw,
                    record_size: record as usize,
                    available: available as usize,
                },
            });
            return steps;
        }
        walked += record;
        let next = at(walked);
        if raw & DISCARD_BIT != 0 {
            steps.push(Step::Discarded { next });
        } else {
            assert!(
                offset + 8 + len as usize <= 2 * size,
                "reference walked out of the ring"
            );
            steps.push(Step::Record {
                position,
                payload: bytes(offset + 8, len as usize),
                next,
            });
        }
    }
}
