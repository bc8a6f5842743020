//! Target `user_producer`: API sequences of the USER_RINGBUF [`Producer`] (reserve of any size,
//! at and past the limits; submit, discard or drop in any order; output) interleaved with
//! drains by the model of the kernel ([`KernelDrain`]), compared with a queue oracle.
//!
//! Checked after every operation: the headers between `consumer_pos` and `producer_pos` are
//! exactly the records the oracle holds, in order, each with the state the oracle expects, and
//! every one passes the kernel's checks (`__bpf_user_ringbuf_peek`: inside what was produced,
//! no larger than the ring or a dynptr) — the producer never publishes a header the kernel
//! would reject. Every drain delivers exactly the submitted samples, in reservation order, and
//! never fails; every refusal is the documented [`ReserveError`].
//!
//! Input: `[size selector][start mode][start: 1]` then operations `[selector][arguments]`.

use std::collections::VecDeque;
use std::ops::ControlFlow;

use bpf_ringbuf::geometry::distance;
use bpf_ringbuf::model::{HeapRing, Wakeup};
use bpf_ringbuf::producer::{MAX_SAMPLES_PER_DRAIN, MAX_SAMPLE_LEN};
use bpf_ringbuf::{ReserveError, RingMemory};

use super::input::Input;
use super::reference::record_size;

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;

/// Requested payload length, in terms of the ring's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Length {
    /// This many bytes.
    Bytes(usize),
    /// [`Producer::max_len`].
    Max,
    /// One more than [`Producer::max_len`].
    PastMax,
    /// One more than [`MAX_SAMPLE_LEN`].
    PastSampleLimit,
    /// `usize::MAX`.
    Huge,
}

/// One operation of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `reserve(len)`, payload filled at once.
    Reserve(Length),
    /// Submit held reservation number `index % count`.
    Submit(usize),
    /// Discard held reservation number `index % count`.
    Discard(usize),
    /// Drop held reservation number `index % count`.
    Drop(usize),
    /// `output` of a `len`-byte payload.
    Output(usize),
    /// A kernel drain whose callback breaks on sample number `break_after`.
    Drain {
        /// Break on this sample (1-based).
        break_after: Option<usize>,
        /// The drain's wakeup flag.
        wakeup: Wakeup,
    },
    /// `free_space` (or `check_before_sleep`).
    FreeSpace {
        /// Call `check_before_sleep` instead.
        before_sleep: bool,
    },
}

/// A decoded `user_producer` input.
#[derive(Clone, Debug)]
pub struct Script {
    /// Data-area size (16 to 1024).
    pub size: usize,
    /// Where both positions start (8-aligned; near `usize::MAX` to test the wrap).
    pub start: usize,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

impl Script {
    /// Decodes fuzzer bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut input = Input::new(bytes);
        let size = 16usize << (input.u8() % 7);
        let start = match input.u8() % 2 {
            0 => 0,
            _ => 0usize.wrapping_sub(8 * (1 + usize::from(input.u8()))),
        };
        let mut ops = Vec::new();
        while !input.is_empty() && ops.len() < 512 {
            let op = match input.u8() % 7 {
                0 | 1 => Op::Reserve(match input.u16() {
                    0xffff => Length::PastMax,
                    0xfffe => Length::Max,
                    0xfffd => Length::PastSampleLimit,
                    0xfffc => Length::Huge,
                    raw => Length::Bytes(usize::from(raw % 1100)),
                }),
                2 => Op::Submit(usize::from(input.u8())),
                3 => Op::Discard(usize::from(input.u8())),
                4 => Op::Drop(usize::from(input.u8())),
                5 => Op::Output(usize::from(input.u16() % 1100)),
                _ => {
                    let raw = input.u8();
                    if raw & 0x80 != 0 {
                        Op::FreeSpace {
                            before_sleep: raw & 1 != 0,
                        }
                    } else {
                        Op::Drain {
                            break_after: (raw % 16 != 0).then_some(usize::from(raw % 16)),
                            wakeup: match (raw >> 4) % 3 {
                                0 => Wakeup::Adaptive,
                                1 => Wakeup::Never,
                                _ => Wakeup::Force,
                            },
                        }
                    }
                }
            };
            ops.push(op);
        }
        Self { size, start, ops }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Busy,
    Submitted,
    Discarded,
}

#[derive(Clone, Debug)]
struct Record {
    position: usize,
    payload: Vec<u8>,
    state: State,
}

/// Decodes and runs one input.
pub fn run(bytes: &[u8]) {
    check(&Script::from_bytes(bytes));
}

/// Checks the headers in `[consumer_pos, producer_pos)` against the oracle and the kernel's
/// acceptance rules.
fn check_published(ring: &HeapRing, records: &VecDeque<Record>) {
    let size = ring.size();
    let consumer_pos = ring.consumer_pos().load_relaxed();
    let producer_pos = ring.producer_pos().load_relaxed();
    assert_eq!(producer_pos % 8, 0, "misaligned producer_pos published");
    assert!(
        distance(consumer_pos, producer_pos) <= size,
        "ring overfilled"
    );
    let mut position = consumer_pos;
    for record in records {
        assert_eq!(record.position, position, "records are not back to back");
        let raw = ring.header(position % size).load_relaxed();
        let len = (raw & (DISCARD_BIT - 1)) as usize;
        let claimed = record_size(len as u32);
        // __bpf_user_ringbuf_peek's checks, in its order.
        assert!(
            claimed <= distance(position, producer_pos) as u128,
            "header {raw:#x} at {position:#x} extends past producer_pos {producer_pos:#x}"
        );
        assert!(
            claimed <= size as u128 && len <= MAX_SAMPLE_LEN,
            "header {raw:#x} at {position:#x} is too large for the kernel"
        );
        let expected = record.payload.len() as u32
            | match record.state {
                State::Busy => BUSY_BIT,
                State::Submitted => 0,
                State::Discarded => DISCARD_BIT,
            };
        assert_eq!(raw, expected, "header at {position:#x}");
        position = position.wrapping_add(claimed as usize);
    }
    assert_eq!(position, producer_pos, "published space without a record");
}

/// Runs `script` and checks every step against the oracle.
pub fn check(script: &Script) {
    let size = script.size;
    let (producer, drain) = HeapRing::starting_at(size, script.start)
        .expect("valid size")
        .split_user();
    let ring = producer.memory().clone();
    let max_len = producer.max_len();
    assert_eq!(max_len, (size - 8).min(MAX_SAMPLE_LEN));
    let mut records: VecDeque<Record> = VecDeque::new();
    let mut held = Vec::new();
    let mut serial = 0usize;
    let mut wakeups = 0;
    let mut payload = |len: usize| {
        serial += 1;
        (0..len)
            .map(|i| (serial * 31 + i) as u8)
            .collect::<Vec<u8>>()
    };

    // At the end every held reservation is dropped, then a drain empties the ring.
    let mut ops: Vec<Op> = script.ops.clone();
    ops.extend((0..script.ops.len()).map(|_| Op::Drop(0)));
    ops.push(Op::Drain {
        break_after: None,
        wakeup: Wakeup::Adaptive,
    });
    for op in ops {
        let consumer_pos = ring.consumer_pos().load_relaxed();
        let producer_pos = ring.producer_pos().load_relaxed();
        let used = distance(consumer_pos, producer_pos);
        match op {
            Op::Reserve(_) | Op::Output(_) => {
                let len = match op {
                    Op::Output(len) | Op::Reserve(Length::Bytes(len)) => len,
                    Op::Reserve(Length::Max) => max_len,
                    Op::Reserve(Length::PastMax) => max_len + 1,
                    Op::Reserve(Length::PastSampleLimit) => MAX_SAMPLE_LEN + 1,
                    _ => usize::MAX,
                };
                let expected = if len > max_len {
                    Err(ReserveError::TooLarge { len, max_len })
                } else if record_size(len as u32) > (size - used) as u128 {
                    Err(ReserveError::NoSpace {
                        needed: record_size(len as u32) as usize,
                        available: size - used,
                    })
                } else {
                    Ok(())
                };
                let data = if expected.is_ok() {
                    payload(len)
                } else {
                    Vec::new()
                };
                if let Op::Output(_) = op {
                    let output_data = if expected.is_ok() {
                        data.clone()
                    } else {
                        vec![0; len]
                    };
                    assert_eq!(producer.output(&output_data), expected);
                    if expected.is_ok() {
                        records.push_back(Record {
                            position: producer_pos,
                            payload: data,
                            state: State::Submitted,
                        });
                    }
                } else {
                    match producer.reserve(len) {
                        Ok(mut reservation) => {
                            assert_eq!(expected, Ok(()), "reserve({len}) succeeded");
                            assert_eq!(reservation.position(), producer_pos);
                            assert_eq!(reservation.len(), len);
                            reservation.copy_from_slice(&data);
                            held.push(reservation);
                            records.push_back(Record {
                                position: producer_pos,
                                payload: data,
                                state: State::Busy,
                            });
                        }
                        Err(error) => assert_eq!(Err(error), expected),
                    }
                }
            }
            Op::Submit(which) | Op::Discard(which) | Op::Drop(which) => {
                if held.is_empty() {
                    continue;
                }
                let reservation = held.remove(which % held.len());
                let position = reservation.position();
                let record = records
                    .iter_mut()
                    .find(|record| record.position == position)
                    .expect("a held reservation is never drained");
                assert_eq!(record.state, State::Busy);
                match op {
                    Op::Submit(_) => {
                        assert_eq!(&*reservation, &record.payload[..]);
                        reservation.submit();
                        record.state = State::Submitted;
                    }
                    Op::Discard(_) => {
                        reservation.discard();
                        record.state = State::Discarded;
                    }
                    _ => {
                        drop(reservation);
                        record.state = State::Discarded;
                    }
                }
            }
            Op::Drain {
                break_after,
                wakeup,
            } => {
                let mut got = Vec::new();
                let result = drain.drain(wakeup, |sample| {
                    got.push(sample.to_vec());
                    if Some(got.len()) == break_after {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                });
                let mut expected = Vec::new();
                let mut visited = 0;
                while let Some(front) = records.front() {
                    if front.state == State::Busy
                        || visited == MAX_SAMPLES_PER_DRAIN
                        || (break_after.is_some() && Some(expected.len()) == break_after)
                    {
                        break;
                    }
                    let front = records.pop_front().expect("checked");
                    visited += 1;
                    if front.state == State::Submitted {
                        expected.push(front.payload);
                    }
                }
                assert_eq!(result, Ok(expected.len()), "the kernel rejected the ring");
                assert_eq!(got, expected);
                let woke = match wakeup {
                    Wakeup::Force => true,
                    Wakeup::Never => false,
                    Wakeup::Adaptive => visited > 0,
                };
                wakeups += usize::from(woke);
                let expected_consumer_pos = records
                    .front()
                    .map_or(producer_pos, |record| record.position);
                assert_eq!(ring.consumer_pos().load_relaxed(), expected_consumer_pos);
            }
            Op::FreeSpace { before_sleep } => {
                let free = if before_sleep {
                    producer.check_before_sleep()
                } else {
                    producer.free_space()
                };
                assert_eq!(free, Ok(size - used));
            }
        }
        check_published(&ring, &records);
    }
    assert!(records.is_empty(), "the final drain left records");
    assert_eq!(drain.wakeups(), wakeups);
}
