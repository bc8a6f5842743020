//! Target `differential`: scripts of kernel-producer operations (reserve of any size, commit
//! or discard in any order, output, wrap-around) interleaved with reads through every consumer
//! API and hostile `consumer_pos` writes, run on the heap ring with the model of the kernel
//! producer and compared with a queue oracle.
//!
//! The oracle keeps every record whose header lies within one ring size of `producer_pos`
//! (exactly the records whose bytes are still intact) with its state. Whenever
//! `consumer_pos` sits on one of their boundaries, the records a read must deliver follow from
//! the oracle alone, and must also equal what [`reference::walk`](super::reference::walk)
//! finds in the ring's memory. A hostile write that puts `consumer_pos` ahead of
//! `producer_pos`, more than a ring behind it, or off 8-byte alignment must make every read
//! fail with the matching [`ReadError`](bpf_ringbuf::ReadError) and move nothing; an aligned
//! position inside a record is garbage the consumer must survive (checked against the
//! reference walk, no panic, nothing out of bounds) until a resync or a read brings it back
//! to a boundary. The producer's answers (room or not, the wakeup decision) are checked
//! against the kernel's rules.
//!
//! Input: `[size selector][start mode][start: 8]` then operations `[selector][arguments]`.

use std::collections::VecDeque;

use bpf_ringbuf::geometry::distance;
use bpf_ringbuf::header::MAX_RECORD_LEN;
use bpf_ringbuf::model::{HeapRing, Reservation, Wakeup};
use bpf_ringbuf::{ReadError, RingMemory};

use super::check::{apply, ReadOp};
use super::input::Input;
use super::reference::{record_size, walk, Step};

/// One operation of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `bpf_ringbuf_reserve(len)`, payload filled at once.
    Reserve {
        /// Payload length (may exceed the ring or the kernel's limit).
        len: usize,
    },
    /// Submit outstanding reservation number `index % count`.
    Submit {
        /// Which reservation.
        index: usize,
        /// Wakeup flag.
        wakeup: Wakeup,
    },
    /// Discard outstanding reservation number `index % count`.
    Discard {
        /// Which reservation.
        index: usize,
        /// Wakeup flag.
        wakeup: Wakeup,
    },
    /// `bpf_ringbuf_output` of a `len`-byte payload.
    Output {
        /// Payload length.
        len: usize,
        /// Wakeup flag.
        wakeup: Wakeup,
    },
    /// A read through one of the consumer APIs.
    Read(ReadOp),
    /// Another process writes `consumer_pos`; then the reader recovers or not.
    Hostile {
        /// Which kind of position (see `Oracle::hostile_position`, low two bits) and how the
        /// reader recovers (bits 2 and 3: none, `follow`, `resume`).
        kind: u8,
        /// Argument for the kind.
        value: u64,
    },
}

/// A decoded `differential` input.
#[derive(Clone, Debug)]
pub struct Script {
    /// Data-area size (16 to 1024).
    pub size: usize,
    /// Where both positions start (8-aligned; near `usize::MAX` to test the wrap).
    pub start: usize,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

fn payload_len(raw: u16) -> usize {
    match raw {
        0xffff => MAX_RECORD_LEN as usize + 1,
        0xfffe => MAX_RECORD_LEN as usize,
        _ => usize::from(raw % 1100),
    }
}

fn wakeup(raw: u8) -> Wakeup {
    match raw % 3 {
        0 => Wakeup::Adaptive,
        1 => Wakeup::Never,
        _ => Wakeup::Force,
    }
}

impl Script {
    /// Decodes fuzzer bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut input = Input::new(bytes);
        let size = 16usize << (input.u8() % 7);
        let start = match input.u8() % 3 {
            0 => 0,
            1 => 0usize.wrapping_sub(8 * (1 + usize::from(input.u8()))),
            _ => input.position() & !7,
        };
        let mut ops = Vec::new();
        while !input.is_empty() && ops.len() < 512 {
            let op = match input.u8() % 7 {
                0 | 1 => Op::Reserve {
                    len: payload_len(input.u16()),
                },
                2 => Op::Submit {
                    index: usize::from(input.u8()),
                    wakeup: wakeup(input.u8()),
                },
                3 => Op::Discard {
                    index: usize::from(input.u8()),
                    wakeup: wakeup(input.u8()),
                },
                4 => {
                    let selector = input.u8();
                    Op::Read(ReadOp::decode(selector, &mut input))
                }
                5 => Op::Hostile {
                    kind: input.u8(),
                    value: input.u64(),
                },
                _ => Op::Output {
                    len: usize::from(input.u16() % 1100),
                    wakeup: wakeup(input.u8()),
                },
            };
            ops.push(op);
        }
        Self { size, start, ops }
    }
}

/// What the oracle knows about a record.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Busy(Vec<u8>),
    Committed(Vec<u8>),
    Discarded,
}

#[derive(Clone, Debug)]
struct Record {
    position: usize,
    len: usize,
    state: State,
}

/// The oracle: records still intact in the ring, in reservation order.
struct Oracle {
    size: usize,
    producer_pos: usize,
    records: VecDeque<Record>,
    serial: usize,
}

impl Oracle {
    /// Forgets records whose bytes may have been overwritten (more than a ring behind).
    fn prune(&mut self) {
        while let Some(front) = self.records.front() {
            if distance(front.position, self.producer_pos) > self.size {
                assert!(
                    !matches!(front.state, State::Busy(_)),
                    "the producer overran a BUSY record"
                );
                self.records.pop_front();
            } else {
                break;
            }
        }
    }

    fn record_mut(&mut self, position: usize) -> &mut Record {
        self.records
            .iter_mut()
            .find(|record| record.position == position)
            .expect("an outstanding reservation is never pruned")
    }

    fn payload(&mut self, len: usize) -> Vec<u8> {
        self.serial += 1;
        (0..len).map(|i| (self.serial * 31 + i) as u8).collect()
    }

    /// The steps a reader must take from `consumer_pos`, if the oracle knows them: the
    /// position is invalid, or it is a record boundary.
    fn steps(&self, consumer_pos: usize) -> Option<Vec<Step>> {
        let producer_pos = self.producer_pos;
        if distance(consumer_pos, producer_pos) > self.size {
            return Some(vec![Step::Invalid(ReadError::ConsumerAhead {
                consumer_pos,
                producer_pos,
            })]);
        }
        if consumer_pos % 8 != 0 {
            return Some(vec![Step::Invalid(ReadError::MisalignedPosition {
                position: consumer_pos,
            })]);
        }
        let first = if consumer_pos == producer_pos {
            self.records.len()
        } else {
            self.records
                .iter()
                .position(|record| record.position == consumer_pos)?
        };
        let mut steps = Vec::new();
        for record in self.records.iter().skip(first) {
            let next = record
                .position
                .wrapping_add(record_size(record.len as u32) as usize);
            match &record.state {
                State::Busy(_) => {
                    steps.push(Step::Busy {
                        position: record.position,
                    });
                    return Some(steps);
                }
                State::Discarded => steps.push(Step::Discarded { next }),
                State::Committed(payload) => steps.push(Step::Record {
                    position: record.position,
                    payload: payload.clone(),
                    next,
                }),
            }
        }
        steps.push(Step::End {
            position: producer_pos,
        });
        Some(steps)
    }

    /// A position for a hostile `consumer_pos` write.
    fn hostile_position(&self, kind: u8, value: u64) -> usize {
        let value = value as usize;
        let producer_pos = self.producer_pos;
        match kind % 4 {
            0 => value,
            // At or ahead of producer_pos.
            1 => producer_pos.wrapping_add(value % 64),
            // About one ring behind producer_pos.
            2 => producer_pos
                .wrapping_sub(self.size)
                .wrapping_sub(value % 64),
            // A record boundary, or a little past one.
            _ => {
                let boundary = self
                    .records
                    .get(value % (self.records.len() + 1))
                    .map_or(producer_pos, |record| record.position);
                let past = if (value >> 16) & 1 == 0 {
                    0
                } else {
                    (value >> 17) % 24
                };
                boundary.wrapping_add(past)
            }
        }
    }
}

/// Decodes and runs one input.
pub fn run(bytes: &[u8]) {
    check(&Script::from_bytes(bytes));
}

/// The kernel's rule for whether `bpf_ringbuf_reserve(len)` finds room.
fn reserve_fits(
    size: usize,
    len: usize,
    consumer_pos: usize,
    oldest_busy: usize,
    producer_pos: usize,
) -> bool {
    if len > MAX_RECORD_LEN as usize || record_size(len as u32) > size as u128 {
        return false;
    }
    let new_producer_pos = producer_pos.wrapping_add(record_size(len as u32) as usize);
    distance(consumer_pos, new_producer_pos) < size
        && distance(oldest_busy, new_producer_pos) < size
}

/// Runs `script` and checks every step against the oracle.
pub fn check(script: &Script) {
    let size = script.size;
    let mask = size - 1;
    let (producer, mut consumer) = HeapRing::starting_at(size, script.start)
        .expect("valid size")
        .split();
    let ring = consumer.memory().clone();
    let mut oracle = Oracle {
        size,
        producer_pos: script.start,
        records: VecDeque::new(),
        serial: 0,
    };
    // Outstanding reservations, in reservation order.
    let mut outstanding: Vec<Reservation<'_, _>> = Vec::new();
    let mut wakeups = 0usize;
    let wakes = |wakeup: Wakeup, position: usize, consumer_pos: usize| match wakeup {
        Wakeup::Force => true,
        Wakeup::Never => false,
        Wakeup::Adaptive => consumer_pos & mask == position & mask,
    };

    let final_ops = [
        Op::Read(ReadOp::Resync),
        Op::Output {
            len: 3,
            wakeup: Wakeup::Adaptive,
        },
        Op::Read(ReadOp::Batch {
            take: None,
            commit: true,
        }),
    ];
    for op in script.ops.iter().chain(&final_ops) {
        let consumer_pos = ring.consumer_pos().load_relaxed();
        match op {
            Op::Reserve { len } | Op::Output { len, .. } => {
                let oldest_busy = outstanding
                    .first()
                    .map_or(oracle.producer_pos, Reservation::position);
                let fits = reserve_fits(size, *len, consumer_pos, oldest_busy, oracle.producer_pos);
                // Only a payload that will be written is made (a refused reservation may
                // ask for a gigabyte).
                let payload = oracle.payload(if fits || matches!(op, Op::Output { .. }) {
                    *len
                } else {
                    0
                });
                let position = oracle.producer_pos;
                let state = match op {
                    Op::Output { wakeup, .. } => {
                        let woke = producer.output(&payload, *wakeup);
                        assert_eq!(woke.is_some(), fits, "output of {len} bytes");
                        if let Some(woke) = woke {
                            assert_eq!(woke, wakes(*wakeup, position, consumer_pos));
                            wakeups += usize::from(woke);
                        }
                        State::Committed(payload)
                    }
                    _ => {
                        let reservation = producer.reserve(*len);
                        assert_eq!(reservation.is_some(), fits, "reserve of {len} bytes");
                        if let Some(mut reservation) = reservation {
                            assert_eq!(reservation.position(), position);
                            assert_eq!(reservation.len(), *len);
                            reservation.write(&payload);
                            outstanding.push(reservation);
                        }
                        State::Busy(payload)
                    }
                };
                if fits {
                    oracle.producer_pos = position.wrapping_add(record_size(*len as u32) as usize);
                    oracle.records.push_back(Record {
                        position,
                        len: *len,
                        state,
                    });
                    oracle.prune();
                }
            }
            Op::Submit { index, wakeup } | Op::Discard { index, wakeup } => {
                if outstanding.is_empty() {
                    continue;
                }
                let reservation = outstanding.remove(index % outstanding.len());
                let position = reservation.position();
                let record = oracle.record_mut(position);
                let State::Busy(payload) = core::mem::replace(&mut record.state, State::Discarded)
                else {
                    panic!("an outstanding reservation is BUSY in the oracle");
                };
                let woke = if matches!(op, Op::Submit { .. }) {
                    record.state = State::Committed(payload);
                    reservation.submit(*wakeup)
                } else {
                    record.state = State::Discarded;
                    reservation.discard(*wakeup)
                };
                assert_eq!(woke, wakes(*wakeup, position, consumer_pos));
                wakeups += usize::from(woke);
            }
            Op::Read(read) => {
                let positions = consumer.positions();
                assert_eq!(positions.producer, oracle.producer_pos);
                let header = |offset: usize| ring.header(offset).load_relaxed();
                // SAFETY: the walk asks for ranges inside the data area; no reservation is
                // being written while the copy is taken (single thread).
                let bytes = |offset: usize, len: usize| unsafe { ring.bytes(offset, len) }.to_vec();
                let steps = walk(size, positions.consumer, positions.producer, header, bytes);
                if let Some(expected) = oracle.steps(positions.consumer) {
                    assert_eq!(
                        steps, expected,
                        "the ring's contents differ from what the producer was asked to write"
                    );
                }
                apply(&mut consumer, &steps, read);
            }
            Op::Hostile { kind, value } => {
                let position = oracle.hostile_position(*kind, *value);
                // SAFETY: reads run one operation at a time and no batch outlives its
                // operation, so no record is lent out while the producer may use the space
                // this store hands back.
                unsafe { ring.store_consumer_pos(position) };
                let cursor = consumer.cursor();
                match (kind >> 2) % 4 {
                    // The reader takes over what the other writer stored.
                    1 => {
                        consumer.follow();
                        assert_eq!(consumer.cursor(), position);
                    }
                    // The reader continues from its own cursor, unless the producer may have
                    // reused the space after it.
                    2 => {
                        let producer_pos = oracle.producer_pos;
                        let expected = if distance(cursor, producer_pos) > size {
                            Err(ReadError::ConsumerAhead {
                                consumer_pos: cursor,
                                producer_pos,
                            })
                        } else {
                            Ok(())
                        };
                        assert_eq!(consumer.resume(), expected);
                        let now = ring.consumer_pos().load_relaxed();
                        assert_eq!(now, if expected.is_ok() { cursor } else { position });
                    }
                    // Left as it is: every read reports it until a resync.
                    _ => {}
                }
            }
        }
    }
    assert_eq!(producer.wakeups(), wakeups);
}
