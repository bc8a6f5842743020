//! Read operations through every consumer API, each checked against the reference steps.

use core::ops::ControlFlow;

use bpf_ringbuf::geometry::distance;
use bpf_ringbuf::{Consumer, ReadError, Readiness, RingMemory};

use super::input::Input;
use super::reference::Step;

/// One call into the consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOp {
    /// A zero-copy batch: `take` calls to `next_record` (`None`: until it returns `None`),
    /// every record kept borrowed until the batch ends, then `commit` or drop.
    Batch {
        /// Calls to make, or until the end.
        take: Option<usize>,
        /// End with `commit()` rather than by dropping.
        commit: bool,
    },
    /// `consume` with a record budget; the callback breaks on record number `break_after`.
    Consume {
        /// Records at most.
        budget: usize,
        /// Break on this record (1-based).
        break_after: Option<usize>,
    },
    /// `read_into` a buffer of `capacity` bytes.
    ReadInto {
        /// Buffer length.
        capacity: usize,
    },
    /// `read_vec` into a buffer holding stale bytes.
    ReadVec,
    /// `read_owned`.
    ReadOwned,
    /// `available`.
    Available,
    /// `check_before_sleep`.
    CheckBeforeSleep,
    /// `resync`.
    Resync,
}

impl ReadOp {
    /// Decodes one operation (its selector byte has already been read).
    pub fn decode(selector: u8, input: &mut Input<'_>) -> Self {
        match selector % 8 {
            0 => {
                let take = input.u8();
                ReadOp::Batch {
                    take: (take < 32).then_some(usize::from(take % 16)),
                    commit: take & 0x80 != 0,
                }
            }
            1 => {
                let budget = input.u8();
                let break_after = input.u8();
                ReadOp::Consume {
                    budget: if budget >= 64 {
                        usize::MAX
                    } else {
                        usize::from(budget)
                    },
                    break_after: (break_after > 0 && break_after < 64)
                        .then_some(usize::from(break_after)),
                }
            }
            2 => ReadOp::ReadInto {
                capacity: usize::from(input.u16() % 1024),
            },
            3 => ReadOp::ReadVec,
            4 => ReadOp::ReadOwned,
            5 => ReadOp::Available,
            6 => ReadOp::CheckBeforeSleep,
            _ => ReadOp::Resync,
        }
    }
}

/// Address of the ring's data area (the header word at offset 0).
fn data_base<M: RingMemory>(memory: &M) -> usize {
    memory.header(0) as *const _ as *const u8 as usize
}

/// Checks that `record` is the bytes of the committed record whose header is at `position`:
/// the same address in the ring (inside the data area, before `producer_pos`) and contents.
fn check_record(record: &[u8], position: usize, payload: &[u8], size: usize, base: usize) {
    let start = record.as_ptr() as usize;
    assert_eq!(
        start,
        base + position % size + 8,
        "record at position {position:#x} lent from the wrong address"
    );
    assert!(
        start >= base && start + record.len() <= base + 2 * size,
        "record outside the data area"
    );
    assert_eq!(record, payload, "record at position {position:#x}");
}

/// Runs `op` on `consumer`, whose ring nobody else touches meanwhile, and checks every result
/// and the published `consumer_pos` against `steps` (the reference walk from the current
/// `consumer_pos`).
///
/// When the shared `consumer_pos` is not the reader's own cursor (someone else wrote it), every
/// read must report [`ReadError::ConsumerPosMoved`] and move nothing, whatever `steps` say.
pub fn apply<M: RingMemory>(consumer: &mut Consumer<M>, steps: &[Step], op: &ReadOp) {
    assert!(steps.last().is_some_and(Step::is_terminal));
    let size = consumer.geometry().size();
    let base = data_base(consumer.memory());
    let before = consumer.positions();
    let start = before.consumer;
    let cursor = consumer.cursor();
    let moved = (start != cursor).then_some(ReadError::ConsumerPosMoved {
        expected: cursor,
        found: start,
    });
    let moved_steps;
    let steps = match moved {
        Some(error) => {
            moved_steps = [Step::Invalid(error)];
            &moved_steps[..]
        }
        None => steps,
    };
    // Where consumer_pos must end up.
    let after = match op {
        ReadOp::Batch { take, commit } => {
            let batch = consumer.batch();
            let mut held: Vec<(&[u8], usize, &[u8])> = Vec::new();
            let mut index = 0;
            let mut cursor = start;
            let mut error_reported = false;
            let mut busy_seen = false;
            let calls = take.unwrap_or(usize::MAX);
            let mut call = 0;
            while call < calls {
                call += 1;
                let got = batch.next_record();
                let ended = loop {
                    match &steps[index] {
                        Step::Discarded { next } => {
                            cursor = *next;
                            index += 1;
                        }
                        Step::Record {
                            position,
                            payload,
                            next,
                        } => {
                            let record = got.expect("a record is due").expect("a record is due");
                            held.push((record, *position, payload));
                            cursor = *next;
                            index += 1;
                            break false;
                        }
                        Step::Busy { .. } => {
                            assert_eq!(got, None, "reading must stop at a BUSY record");
                            busy_seen = true;
                            break true;
                        }
                        Step::End { .. } => {
                            assert_eq!(got, None, "nothing after producer_pos");
                            break true;
                        }
                        Step::Corrupt { error, .. } | Step::Invalid(error) => {
                            if error_reported {
                                assert_eq!(got, None, "an error ends the batch");
                            } else {
                                assert_eq!(got, Some(Err(*error)));
                                error_reported = true;
                            }
                            break true;
                        }
                    }
                };
                if ended && take.is_none() {
                    break;
                }
            }
            assert_eq!(batch.consumed_bytes(), distance(start, cursor));
            assert_eq!(batch.stopped_at_busy(), busy_seen);
            // Every record lent by this batch is still intact while the others are held.
            for (record, position, payload) in &held {
                check_record(record, *position, payload, size, base);
            }
            drop(held);
            if *commit {
                batch.commit();
            } else {
                drop(batch);
            }
            cursor
        }
        ReadOp::Consume {
            budget,
            break_after,
        } => {
            let mut seen: Vec<(usize, Vec<u8>)> = Vec::new();
            let result = consumer.consume(*budget, |record| {
                seen.push((record.as_ptr() as usize, record.to_vec()));
                if Some(seen.len()) == *break_after {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            let mut cursor = start;
            let mut delivered = 0;
            let mut expected = Ok(0);
            if *budget > 0 {
                for step in steps {
                    match step {
                        Step::Discarded { next } => cursor = *next,
                        Step::Record {
                            position,
                            payload,
                            next,
                        } => {
                            let (address, bytes) = &seen[delivered];
                            assert_eq!(*address, base + position % size + 8);
                            assert_eq!(bytes, payload);
                            delivered += 1;
                            cursor = *next;
                            if Some(delivered) == *break_after || delivered == *budget {
                                expected = Ok(delivered);
                                break;
                            }
                        }
                        Step::Busy { .. } | Step::End { .. } => {
                            expected = Ok(delivered);
                            break;
                        }
                        Step::Corrupt { error, .. } | Step::Invalid(error) => {
                            // Reported by the call only if it delivered nothing: otherwise the
                            // next call does.
                            expected = if delivered == 0 {
                                Err(*error)
                            } else {
                                Ok(delivered)
                            };
                            break;
                        }
                    }
                }
            }
            assert_eq!(seen.len(), delivered, "records delivered");
            assert_eq!(result, expected);
            cursor
        }
        ReadOp::ReadInto { capacity } => {
            let mut buf = vec![0xa5u8; *capacity];
            let result = consumer.read_into(&mut buf);
            let (expected, cursor, payload) = copy_expectation(steps, start, Some(*capacity));
            assert_eq!(result, expected);
            if let Some(payload) = payload {
                assert_eq!(&buf[..payload.len()], payload);
                assert!(buf[payload.len()..].iter().all(|&b| b == 0xa5));
            } else {
                assert!(
                    buf.iter().all(|&b| b == 0xa5),
                    "buffer written without a record"
                );
            }
            cursor
        }
        ReadOp::ReadVec => {
            let mut buf = vec![0x5au8; 3];
            let result = consumer.read_vec(&mut buf);
            let (expected, cursor, payload) = copy_expectation(steps, start, None);
            assert_eq!(result, expected.map(|r| r.is_some()));
            match payload {
                Some(payload) => assert_eq!(buf, payload),
                None => assert_eq!(buf, [0x5a; 3], "buffer changed without a record"),
            }
            cursor
        }
        ReadOp::ReadOwned => {
            let result = consumer.read_owned();
            let (expected, cursor, payload) = copy_expectation(steps, start, None);
            let expected = expected.map(|read| read.map(|_| payload.unwrap_or_default().to_vec()));
            assert_eq!(result, expected);
            cursor
        }
        ReadOp::Available => {
            let expected = match &steps[0] {
                Step::Invalid(error) => Err(*error),
                _ => Ok(distance(start, before.producer)),
            };
            assert_eq!(consumer.available(), expected);
            start
        }
        ReadOp::CheckBeforeSleep => {
            let expected = if matches!(steps[0], Step::Invalid(_)) {
                // A moved or corrupt consumer_pos: a read reports it.
                Readiness::Readable
            } else if start == before.producer {
                Readiness::Empty
            } else if matches!(steps[0], Step::Busy { .. }) {
                Readiness::HeadBusy
            } else {
                Readiness::Readable
            };
            assert_eq!(consumer.check_before_sleep(), expected);
            start
        }
        ReadOp::Resync => {
            // The bytes skipped, capped at the ring size (a corrupt consumer_pos can be any
            // distance away; no more than a ring's worth can have been lost).
            // They are counted from the reader's own cursor.
            let skipped = distance(cursor, before.producer).min(consumer.geometry().size());
            assert_eq!(consumer.resync(), skipped);
            before.producer
        }
    };
    let now = consumer.positions();
    assert_eq!(now.producer, before.producer, "a read moved producer_pos");
    assert_eq!(
        now.consumer, after,
        "consumer_pos after {op:?} (started at {start:#x})"
    );
}

/// What a copying read (`read_into` with `capacity`, or `read_vec`/`read_owned` with `None`)
/// must return, where `consumer_pos` must end up, and the payload it must copy.
fn copy_expectation(
    steps: &[Step],
    start: usize,
    capacity: Option<usize>,
) -> (Result<Option<usize>, ReadError>, usize, Option<&[u8]>) {
    let mut cursor = start;
    for step in steps {
        match step {
            Step::Discarded { next } => cursor = *next,
            Step::Record {
                position,
                payload,
                next,
            } => {
                return match capacity {
                    Some(capacity) if payload.len() > capacity => (
                        Err(ReadError::BufferTooSmall {
                            needed: payload.len(),
                            capacity,
                        }),
                        *position,
                        None,
                    ),
                    _ => (Ok(Some(payload.len())), *next, Some(payload)),
                };
            }
            Step::Busy { position } | Step::End { position } => {
                assert_eq!(*position, cursor);
                return (Ok(None), cursor, None);
            }
            Step::Corrupt { position, error } => {
                assert_eq!(*position, cursor);
                return (Err(*error), cursor, None);
            }
            Step::Invalid(error) => return (Err(*error), start, None),
        }
    }
    unreachable!("the reference ends with a terminal step")
}
