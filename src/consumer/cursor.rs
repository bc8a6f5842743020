//! The consumer's read loop as plain data, for readers that keep many rings open at once.
//!
//! A [`Batch`](super::Batch) holds `&mut Consumer`, so a reader that keeps the read state of
//! several rings side by side (the merged reader, [`crate::merge`]) cannot hold one batch per
//! ring without allocating somewhere to put them. A [`ReadCursor`] is the state a batch keeps
//! in its cells, as a `Copy` value the caller stores where it likes; the methods below are the
//! batch's steps over it: [`Consumer::open_cursor`] starts a read (checking the positions as
//! [`Consumer::batch`] does), [`Consumer::peek`] finds the next committed record without moving
//! past it, [`ReadCursor::take`] moves past it, and [`Consumer::close_cursor`] publishes
//! `consumer_pos` once and adds up the statistics, as a batch does when it ends.
//!
//! Crate-private: lending a record's bytes needs the guarantee a batch gets from the borrow
//! checker (nothing publishes past a record while it is lent), which the user of a cursor must
//! provide itself ([`Consumer::peeked_bytes`]).

use super::{step, step_slow, Consumer, Found, Step};
use crate::error::ReadError;
use crate::geometry::distance;
use crate::header::HEADER_SIZE;
use crate::memory::RingMemory;
use crate::sync::{load_acquire_usize, SyncPoint};

/// Where a read over one ring stands: what a [`Batch`](super::Batch) keeps in its cells.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReadCursor {
    /// The consumer's cursor when the read began: what is published until the read closes.
    start: usize,
    /// Position of the next record to look at (after every record taken and every discarded
    /// record skipped).
    position: usize,
    /// `producer_pos` as last loaded.
    end: usize,
    /// Bytes from `position` to `end`.
    available: usize,
    /// Records taken so far.
    records: u64,
    /// Discarded records skipped so far.
    discarded: u64,
    /// A look stopped at a BUSY record.
    stopped_at_busy: bool,
}

/// What [`Consumer::peek`] found at a cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Peek {
    /// A committed record, not taken yet.
    Record(Peeked),
    /// The next record is reserved, not committed.
    Busy,
    /// Nothing past the cursor: `producer_pos` was loaded again and had not moved.
    End,
    /// The ring contradicts the protocol here; the cursor stays at the bad header.
    Corrupt(ReadError),
}

/// A committed record found by [`Consumer::peek`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Peeked {
    /// Ring position of the record's header.
    pub(crate) position: usize,
    /// Offset of the payload in the data area (`offset + len <= 2 * size`).
    offset: usize,
    /// Payload length.
    len: usize,
    /// Position of the next record.
    next: usize,
    /// Bytes from `next` to the cursor's end.
    remaining: usize,
}

impl Peeked {
    /// The record at `position`, as the read loop found it.
    fn new(position: usize, found: Found) -> Self {
        Self {
            position,
            offset: found.offset + HEADER_SIZE,
            len: found.len,
            next: position.wrapping_add(found.size),
            remaining: found.remaining,
        }
    }
}

impl ReadCursor {
    /// Moves past `record`, the record [`Consumer::peek`] just returned for this cursor.
    pub(crate) fn take(&mut self, record: &Peeked) {
        debug_assert_eq!(
            record.position, self.position,
            "not this cursor's next record"
        );
        self.position = record.next;
        self.available = record.remaining;
        self.records += 1;
    }

    /// Position of the next record to look at: what closing the cursor publishes.
    pub(crate) fn position(&self) -> usize {
        self.position
    }

    /// Moves to the record `available` bytes before the end.
    fn seek(&mut self, available: usize) {
        self.position = self.end.wrapping_sub(available);
        self.available = available;
    }
}

impl<M: RingMemory> Consumer<M> {
    /// Starts a read at this consumer's cursor, checking the positions as
    /// [`Consumer::batch`] does.
    ///
    /// # Errors
    ///
    /// As for [`Consumer::available`]: nothing can be read until it is resolved
    /// ([`resume`](Consumer::resume), [`follow`](Consumer::follow),
    /// [`resync`](Consumer::resync)).
    pub(crate) fn open_cursor(&self) -> Result<ReadCursor, ReadError> {
        let positions = self.positions();
        let available = self.validate(positions)?;
        Ok(ReadCursor {
            start: positions.consumer,
            position: positions.consumer,
            end: positions.producer,
            available,
            ..ReadCursor::default()
        })
    }

    /// The next committed record at `cursor`, without moving past it; discarded records before
    /// it are skipped (and will be consumed when the cursor closes). When the cursor has reached
    /// the `producer_pos` it last loaded, `producer_pos` is loaded again, so a look always sees
    /// what was committed before it began.
    pub(crate) fn peek(&self, cursor: &mut ReadCursor) -> Peek {
        let at = self.locator();
        loop {
            let offset = cursor.position & at.mask;
            let back = match step(&self.memory, at, offset, cursor.available) {
                Ok(found) => return Peek::Record(Peeked::new(cursor.position, found)),
                Err(back) => back,
            };
            let (found, discarded) = step_slow(&self.memory, at, offset, back, cursor.end);
            cursor.discarded += discarded;
            match found {
                Step::Record(found) => {
                    cursor.seek(found.remaining + found.size);
                    return Peek::Record(Peeked::new(cursor.position, found));
                }
                Step::Busy { available, .. } => {
                    cursor.seek(available);
                    cursor.stopped_at_busy = true;
                    return Peek::Busy;
                }
                Step::Corrupt { error, available } => {
                    cursor.seek(available);
                    return Peek::Corrupt(error);
                }
                Step::End => {
                    cursor.seek(0);
                    // Acquire: pairs with smp_store_release(&rb->producer_pos) in
                    // __bpf_ringbuf_reserve, as in `positions` (a relaxed load and a fence:
                    // the producer page is read-only).
                    let end =
                        load_acquire_usize(self.memory.producer_pos(), SyncPoint::ProducerPosLoad);
                    if end == cursor.end {
                        return Peek::End;
                    }
                    // Nothing was published since the read began, so the kernel cannot have
                    // reserved more than one ring size past `start`.
                    if distance(cursor.start, end) > self.geometry.size() {
                        return Peek::Corrupt(ReadError::ConsumerAhead {
                            consumer_pos: cursor.start,
                            producer_pos: end,
                        });
                    }
                    cursor.end = end;
                    cursor.available = distance(cursor.position, end);
                }
            }
        }
    }

    /// The bytes of `record`, which [`peek`](Self::peek) returned.
    ///
    /// # Safety
    ///
    /// `record` came from `peek` on a cursor of this consumer that has not been closed, and
    /// nothing publishes a `consumer_pos` past the record while the slice lives (the cursor
    /// is closed only after it is dropped).
    pub(crate) unsafe fn peeked_bytes(&self, record: &Peeked) -> &[u8] {
        // SAFETY: `peek` found the record committed (BUSY clear, seen with Acquire) and checked
        // `offset + len <= 2 * size`; it lies at or after the published `consumer_pos` and
        // before `producer_pos`, so the kernel does not write it until `consumer_pos` moves
        // past it, which the caller rules out while the slice lives.
        unsafe {
            self.locator()
                .bytes(&self.memory, record.offset, record.len)
        }
    }

    /// Ends a read: publishes `consumer_pos` at the cursor (once, and only if it moved) and adds
    /// what it read to the consumer's [`Stats`](super::Stats), as a batch does when it ends.
    pub(crate) fn close_cursor(&mut self, cursor: &ReadCursor) {
        if cursor.stopped_at_busy {
            self.stats.busy_stops += 1;
        }
        if cursor.position != cursor.start {
            debug_assert_eq!(cursor.start, self.cursor, "a cursor of another read");
            self.publish(cursor.position);
            let stats = &mut self.stats;
            stats.records += cursor.records;
            stats.discarded += cursor.discarded;
            stats.consumed_bytes += distance(cursor.start, cursor.position) as u64;
            stats.batches += 1;
        }
    }
}
