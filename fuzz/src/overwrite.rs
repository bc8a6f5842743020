//! Target `overwrite`: the differential consumer in overwrite mode (`BPF_F_RB_OVERWRITE`).
//!
//! Scripts of kernel-producer operations on an overwrite-mode ring (reserve of any size,
//! submit or discard in any order, output, wrap-around) interleaved with copying reads
//! (`read_into` with buffers of any size), snapshots, resyncs and the sleep check, run on the
//! heap ring with the overwrite-mode model of the kernel producer and compared with a queue
//! oracle that applies the 6.19 rules on its own:
//!
//! - a reservation fails only when the uncommitted span would exceed the ring
//!   (`new_prod - pending_pos > mask`); otherwise the oldest records are evicted, whole, until
//!   the new one fits (`new_prod - overwrite_pos <= mask`);
//! - a read starts at `max(consumer_pos, overwrite_pos)`, skips discarded records, stops at a
//!   BUSY one, and counts every byte it jumps over as lost;
//! - a snapshot returns every committed record from `overwrite_pos` up to the first BUSY one.
//!
//! Everything runs on one thread, so copies are never torn here (the loom model and the
//! racing tests cover that); what this target checks is the bookkeeping: positions,
//! `overwrite_pos`, which records survive, the lost-byte count, and typed errors instead of
//! panics for buffers that are too small.
//!
//! Hostile input too: another writer's `consumer_pos` (any value) must be reported as
//! [`ReadError::ConsumerPosMoved`] by the next read, after which the reader resumes from its
//! own cursor (exact again), follows the value (then, until a resync, every read must end in
//! a value or a typed error, never a panic), or leaves it; an arbitrary word written over a
//! record header must give a typed error or a plausible read, never a panic, and the
//! snapshot (which ignores `consumer_pos`) stays exact around it.
//!
//! Input: `[size selector][start: 8]` then operations `[selector][arguments]`.

use std::collections::VecDeque;

use bpf_ringbuf::geometry::distance;
use bpf_ringbuf::header::{record_size, MAX_RECORD_LEN};
use bpf_ringbuf::model::{HeapRing, Reservation, Wakeup};
use bpf_ringbuf::{OverwriteMemory, ReadError, Readiness, RingMemory};

use super::input::Input;

/// One operation of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `bpf_ringbuf_reserve(len)`, payload filled at once.
    Reserve { len: usize },
    /// Submit outstanding reservation `index % count`.
    Submit { index: usize },
    /// Discard outstanding reservation `index % count`.
    Discard { index: usize },
    /// `bpf_ringbuf_output` of `len` bytes.
    Output { len: usize },
    /// `read_into` a buffer of `capacity` bytes.
    Read { capacity: usize },
    /// `snapshot_vec`.
    Snapshot,
    /// `resync`.
    Resync,
    /// `check_before_sleep`.
    SleepCheck,
    /// Another process writes `consumer_pos`, then the reader recovers (`recovery % 3`: the
    /// other writer puts the word back, `resume`, `follow`).
    Hostile {
        /// Where to (see `hostile_position`).
        kind: u8,
        /// Argument for the kind.
        value: u64,
        /// How the reader recovers.
        recovery: u8,
    },
    /// An arbitrary word over the header of live record `index % count`; one read (`read_into`
    /// when `read`, else a snapshot) meets it; then the word is restored.
    CorruptHeader {
        /// Which record.
        index: usize,
        /// The word.
        raw: u32,
        /// Whether the read consumes (`read_into`) rather than only looks (snapshot).
        read: bool,
    },
}

/// A decoded script.
#[derive(Clone, Debug)]
pub struct Script {
    /// Ring size.
    pub size: usize,
    /// Where both positions (and overwrite_pos) start (8-byte aligned).
    pub start: usize,
    /// The operations.
    pub ops: Vec<Op>,
}

impl Script {
    /// Decodes fuzzer bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut input = Input::new(bytes);
        let size = 32 << (input.u8() % 5);
        let start = input.position() & !7;
        let mut ops = Vec::new();
        while !input.is_empty() && ops.len() < 400 {
            let selector = input.u8();
            let op = match selector % 10 {
                0 => Op::Reserve {
                    len: length(&mut input, size),
                },
                1 => Op::Submit {
                    index: usize::from(input.u8()),
                },
                2 => Op::Discard {
                    index: usize::from(input.u8()),
                },
                3 => Op::Output {
                    len: length(&mut input, size),
                },
                4 => Op::Read {
                    capacity: usize::from(input.u16()) % (2 * size),
                },
                5 => Op::Snapshot,
                6 => Op::Resync,
                7 => Op::SleepCheck,
                8 => Op::Hostile {
                    kind: input.u8(),
                    value: input.u64(),
                    recovery: input.u8(),
                },
                _ => Op::CorruptHeader {
                    index: usize::from(input.u8()),
                    raw: input.u32(),
                    read: input.u8() & 1 != 0,
                },
            };
            ops.push(op);
        }
        Self { size, start, ops }
    }
}

/// A payload length: mostly below the ring size, sometimes at or past the limits.
fn length(input: &mut Input<'_>, size: usize) -> usize {
    match input.u8() {
        0..=239 => usize::from(input.u16()) % size,
        240..=247 => size - 8 + usize::from(input.u8() % 16),
        _ => MAX_RECORD_LEN as usize + usize::from(input.u8() % 2),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Busy,
    Committed,
    Discarded,
}

/// A record the oracle still has in the ring.
#[derive(Clone, Debug)]
struct Record {
    position: usize,
    payload: Vec<u8>,
    state: State,
}

impl Record {
    fn end(&self) -> usize {
        self.position.wrapping_add(record_size(self.payload.len()))
    }
}

/// The kernel's rules, kept independently of the model.
struct Oracle {
    mask: usize,
    producer_pos: usize,
    overwrite_pos: usize,
    consumer_pos: usize,
    /// Records between overwrite_pos and producer_pos, oldest first.
    records: VecDeque<Record>,
    lost_bytes: u64,
    serial: u8,
}

/// `a` is at or after `b`.
fn at_or_after(a: usize, b: usize) -> bool {
    (a.wrapping_sub(b) as isize) >= 0
}

impl Oracle {
    /// Returns the new record's position, or `None` when the kernel refuses.
    fn reserve(&mut self, len: usize) -> Option<usize> {
        if len > MAX_RECORD_LEN as usize || record_size(len) > self.mask + 1 {
            return None;
        }
        let new_producer_pos = self.producer_pos.wrapping_add(record_size(len));
        let pending_pos = self
            .records
            .iter()
            .find(|record| record.state == State::Busy)
            .map_or(self.producer_pos, |record| record.position);
        if distance(pending_pos, new_producer_pos) > self.mask {
            return None;
        }
        while distance(self.overwrite_pos, new_producer_pos) > self.mask {
            let evicted = self.records.pop_front().expect("a record to evict");
            assert_ne!(evicted.state, State::Busy, "evicting a BUSY record");
            self.overwrite_pos = evicted.end();
        }
        let position = self.producer_pos;
        self.serial = self.serial.wrapping_add(1);
        let payload = (0..len).map(|i| self.serial ^ i as u8).collect();
        self.records.push_back(Record {
            position,
            payload,
            state: State::Busy,
        });
        self.producer_pos = new_producer_pos;
        Some(position)
    }

    /// Where a read starts, counting what it jumps over.
    fn read_start(&mut self) -> usize {
        if !at_or_after(self.consumer_pos, self.overwrite_pos) {
            self.lost_bytes += distance(self.consumer_pos, self.overwrite_pos) as u64;
            self.consumer_pos = self.overwrite_pos;
        }
        self.consumer_pos
    }

    /// The next readable record from `consumer_pos` (discarded ones skipped): its index, or
    /// `None` at the end or at a BUSY record; also where reading stopped.
    fn next(&self, mut position: usize) -> (Option<usize>, usize) {
        for (index, record) in self.records.iter().enumerate() {
            if record.position != position {
                continue;
            }
            match record.state {
                State::Busy => return (None, position),
                State::Discarded => position = record.end(),
                State::Committed => return (Some(index), position),
            }
        }
        (None, position)
    }

    fn snapshot(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for record in &self.records {
            match record.state {
                State::Busy => break,
                State::Discarded => {}
                State::Committed => out.push(record.payload.clone()),
            }
        }
        out
    }
}

/// A position for a hostile `consumer_pos` write.
fn hostile_position(oracle: &Oracle, kind: u8, value: u64) -> usize {
    let value = value as usize;
    match kind % 4 {
        0 => value,
        1 => oracle.producer_pos.wrapping_add(value % 64),
        2 => oracle
            .overwrite_pos
            .wrapping_sub(value % (4 * (oracle.mask + 1))),
        // Far behind: the lost-byte count must not overflow.
        _ => oracle
            .overwrite_pos
            .wrapping_sub((1usize << (usize::BITS - 1)) - 8 * (value % 64)),
    }
}

/// What a read that meets garbage may return: a value, or a typed corruption error.
fn plausible<T: core::fmt::Debug>(result: &Result<T, ReadError>, op: &Op) {
    if let Err(error) = result {
        assert!(
            matches!(
                error,
                ReadError::ConsumerAhead { .. }
                    | ReadError::MisalignedPosition { .. }
                    | ReadError::RecordOutOfBounds { .. }
                    | ReadError::BufferTooSmall { .. }
            ),
            "{error:?} after {op:?}"
        );
    }
}

/// Runs a script and checks it against the oracle; panics on any disagreement.
pub fn check(script: &Script) {
    let (producer, mut reader) = HeapRing::starting_at(script.size, script.start)
        .expect("valid size")
        .split_overwrite();
    let ring = reader.memory().clone();
    // The reader follows a hostile consumer_pos: its cursor and lost count are unknown to the
    // oracle until the next resync.
    let mut following_garbage = false;
    let mut oracle = Oracle {
        mask: script.size - 1,
        producer_pos: script.start,
        overwrite_pos: script.start,
        consumer_pos: script.start,
        records: VecDeque::new(),
        lost_bytes: 0,
        serial: 0,
    };
    let mut outstanding: Vec<Reservation<'_, _>> = Vec::new();
    for op in &script.ops {
        match *op {
            Op::Reserve { len } | Op::Output { len } => {
                let expected = oracle.reserve(len);
                let got = producer.reserve(len);
                assert_eq!(got.as_ref().map(Reservation::position), expected, "{op:?}");
                if let Some(mut reservation) = got {
                    let payload = oracle.records.back().unwrap().payload.clone();
                    reservation.write(&payload);
                    if matches!(op, Op::Output { .. }) {
                        reservation.submit(Wakeup::Adaptive);
                        oracle.records.back_mut().unwrap().state = State::Committed;
                    } else {
                        outstanding.push(reservation);
                    }
                }
            }
            Op::Submit { index } | Op::Discard { index } if !outstanding.is_empty() => {
                let reservation = outstanding.remove(index % outstanding.len());
                let position = reservation.position();
                let record = oracle
                    .records
                    .iter_mut()
                    .find(|record| record.position == position)
                    .expect("a BUSY record is never evicted");
                if matches!(op, Op::Submit { .. }) {
                    reservation.submit(Wakeup::Never);
                    record.state = State::Committed;
                } else {
                    reservation.discard(Wakeup::Never);
                    record.state = State::Discarded;
                }
            }
            Op::Submit { .. } | Op::Discard { .. } => {}
            Op::Read { capacity } if following_garbage => {
                let mut buf = vec![0u8; capacity];
                let got = reader.read_into(&mut buf);
                plausible(&got, op);
                if let Ok(Some(len)) = got {
                    assert!(len <= capacity);
                }
            }
            Op::Read { capacity } => {
                let mut buf = vec![0u8; capacity];
                let got = reader.read_into(&mut buf);
                let start = oracle.read_start();
                let (next, stop) = oracle.next(start);
                match next {
                    None => {
                        assert_eq!(got, Ok(None), "{op:?}");
                        oracle.consumer_pos = stop;
                    }
                    Some(index) => {
                        let record = &oracle.records[index];
                        let len = record.payload.len();
                        if len > capacity {
                            assert_eq!(
                                got,
                                Err(ReadError::BufferTooSmall {
                                    needed: len,
                                    capacity
                                }),
                                "{op:?}"
                            );
                            // Discarded records before it were consumed; it was not.
                            oracle.consumer_pos = record.position;
                        } else {
                            assert_eq!(got, Ok(Some(len)), "{op:?}");
                            assert_eq!(&buf[..len], &record.payload[..], "{op:?}");
                            oracle.consumer_pos = record.end();
                        }
                    }
                }
            }
            Op::Snapshot => {
                assert_eq!(reader.snapshot_vec().unwrap(), oracle.snapshot(), "{op:?}");
            }
            Op::Resync => {
                let cursor = reader.cursor();
                let skipped = reader.resync();
                assert_eq!(
                    skipped,
                    distance(cursor, oracle.producer_pos).min(oracle.mask + 1)
                );
                oracle.consumer_pos = oracle.producer_pos;
                if following_garbage {
                    oracle.lost_bytes = reader.stats().lost_bytes;
                    following_garbage = false;
                }
            }
            Op::SleepCheck if following_garbage => {
                reader.check_before_sleep();
            }
            Op::Hostile {
                kind,
                value,
                recovery,
            } => {
                let position = hostile_position(&oracle, kind, value);
                let cursor = reader.cursor();
                // SAFETY: the overwrite reader lends no bytes.
                unsafe { ring.store_consumer_pos(position) };
                if position != cursor {
                    let moved = ReadError::ConsumerPosMoved {
                        expected: cursor,
                        found: position,
                    };
                    let mut buf = [0u8; 8];
                    assert_eq!(reader.read_into(&mut buf), Err(moved), "{op:?}");
                    assert_eq!(reader.available(), Err(moved), "{op:?}");
                    assert_eq!(reader.check_before_sleep(), Readiness::Readable, "{op:?}");
                    // Nothing moved.
                    assert_eq!(ring.consumer_pos().load_relaxed(), position);
                }
                match recovery % 3 {
                    1 => {
                        reader.resume();
                        assert_eq!(ring.consumer_pos().load_relaxed(), cursor);
                    }
                    2 => {
                        reader.follow();
                        assert_eq!(reader.cursor(), position);
                        following_garbage |= position != cursor;
                    }
                    // The other writer puts the word back: the reader goes on as if nothing
                    // had happened.
                    _ => {
                        // SAFETY: as above.
                        unsafe { ring.store_consumer_pos(cursor) };
                    }
                }
            }
            Op::CorruptHeader { index, raw, read } if !oracle.records.is_empty() => {
                let record = &oracle.records[index % oracle.records.len()];
                let offset = record.position & oracle.mask;
                let original = ring.header(offset).load_relaxed();
                // SAFETY: the overwrite reader lends no bytes; the producer does not run until
                // the word is restored.
                unsafe { ring.store_header(offset, raw) };
                if read {
                    let mut buf = vec![0u8; oracle.mask + 1];
                    plausible(&reader.read_into(&mut buf), op);
                    // What it consumed depends on the garbage.
                    following_garbage = true;
                } else {
                    plausible(&reader.snapshot_vec(), op);
                }
                // SAFETY: as above.
                unsafe { ring.store_header(offset, original) };
            }
            Op::CorruptHeader { .. } => {}
            Op::SleepCheck => {
                // "Read before sleeping" unless nothing is there or the head is BUSY: a
                // discarded head must be consumed first, or consumer_pos would stay behind the
                // record whose commit should wake us.
                let start = oracle.read_start();
                let head = oracle
                    .records
                    .iter()
                    .find(|record| record.position == start);
                let expected = match head {
                    None => Readiness::Empty,
                    Some(record) if record.state == State::Busy => Readiness::HeadBusy,
                    Some(_) => Readiness::Readable,
                };
                assert_eq!(reader.check_before_sleep(), expected, "{op:?}");
            }
        }
        // The shared words and the lost-byte count agree with the oracle after every step.
        assert_eq!(
            ring.producer_pos().load_relaxed(),
            oracle.producer_pos,
            "{op:?}"
        );
        assert_eq!(
            ring.overwrite_pos().load_relaxed(),
            oracle.overwrite_pos,
            "{op:?}"
        );
        if !following_garbage {
            assert_eq!(
                ring.consumer_pos().load_relaxed(),
                oracle.consumer_pos,
                "{op:?}"
            );
            assert_eq!(reader.stats().lost_bytes, oracle.lost_bytes, "{op:?}");
        }
        assert_eq!(
            reader.stats().torn_records,
            0,
            "single-threaded copies are never torn"
        );
    }
    for reservation in outstanding {
        reservation.discard(Wakeup::Never);
    }
}

/// Decodes and checks `bytes` (the fuzz target and the regression replay).
pub fn run(bytes: &[u8]) {
    check(&Script::from_bytes(bytes));
}
