//! Target `merge`: scripts over 2 to 4 heap rings, each with its own model kernel producer,
//! all stamping one clock; merged rounds (holding every record they lend, with producer
//! operations while a round is open), drains and pre-sleep checks, checked against an oracle
//! that knows every record's stamp, commit time and state.
//!
//! The oracle checks, for every script:
//!
//! - each released record is its ring's next committed record (discarded ones skipped, none
//!   released past a BUSY one), with the bytes its producer wrote, once; at the end every
//!   committed record has been released;
//! - `out_of_order` is set exactly on records released after a larger key (records with a
//!   future key excepted), and `future_key` only on the corrupt keys the script wrote (or,
//!   as `Merge::round` allows, after a round whose `now` lagged by more than the lateness);
//! - when a round says why it stopped, it is right: `Idle` means no ring has a committed
//!   record; `Waiting { key, quiet, until }` means `key` is the smallest committed head key,
//!   ring `quiet` has no committed record, and `until = key + lateness > now`;
//! - `check_before_sleep` lets the reader sleep only when no ring that could unblock the merge
//!   has a committed record, and not past `until`;
//! - **the reference merge**: when the script keeps the guarantee's conditions (every commit
//!   within the lateness of its stamp, no reservation BUSY for longer than the lateness after a
//!   later record's stamp, each ring's keys non-decreasing, every round's `now`
//!   the current clock, no corrupt key, no drain before the end of the stream), the released
//!   keys are exactly the produced keys in sorted order, and no record is marked out of order.
//!
//! Input: `[ring count][ring size][lateness: 2]` then operations `[selector][arguments]`.

use bpf_ringbuf::merge::{
    u64_key_at, Merge, MergeReadiness, MergeRing, MergeStats, MergedRecord, RoundEnd,
};
use bpf_ringbuf::model::{HeapRing, KernelProducer, Reservation, Wakeup};
use bpf_ringbuf::Consumer;

use super::input::Input;

/// The clock's first reading: stamps reach back from it without going below zero.
const CLOCK_START: u64 = 1 << 20;
/// Bytes before a record's filler: key (8), ring (4), sequence (4).
const STAMP_LEN: usize = 16;

/// One operation of a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Reserve a record on `ring`; stamp it now (`stamp_first`) or when it is committed.
    Reserve {
        /// Which ring.
        ring: usize,
        /// Filler bytes after the stamp.
        extra: usize,
        /// Stamp before reserving (otherwise at commit).
        stamp_first: bool,
    },
    /// Commit (or discard) outstanding reservation `index % count` of `ring`.
    Commit {
        /// Which ring.
        ring: usize,
        /// Which of its reservations.
        index: usize,
        /// Discard instead of submit.
        discard: bool,
    },
    /// Output a record on `ring` stamped `delay` before the current clock.
    Output {
        /// Which ring.
        ring: usize,
        /// How long before now it was stamped.
        delay: u64,
        /// Filler bytes.
        extra: usize,
    },
    /// Output a record whose key is `key`, not a stamp of the clock.
    Corrupt {
        /// Which ring.
        ring: usize,
        /// The key.
        key: u64,
    },
    /// The clock advances.
    Tick {
        /// By how much.
        delta: u64,
    },
    /// A merged round: take up to `first` records, output `middle` (if any), take up to
    /// `second` more, holding every record until the round ends.
    Round {
        /// Records to take before the middle output (`None`: until the round stops).
        first: Option<usize>,
        /// An output while the round is open: (ring, delay).
        middle: Option<(usize, u64)>,
        /// Records to take after it.
        second: Option<usize>,
        /// How far `now` lags the clock (0: the fresh reading the contract asks for).
        lag: u64,
        /// A drain instead of a round.
        drain: bool,
    },
    /// `check_before_sleep` at the current clock.
    CheckBeforeSleep,
}

/// A decoded `merge` input.
#[derive(Clone, Debug)]
pub struct Script {
    /// Number of rings (2 to 4).
    pub rings: usize,
    /// Their size (64 to 1024).
    pub size: usize,
    /// The merge's lateness.
    pub lateness: u64,
    /// The operations.
    pub ops: Vec<Op>,
}

fn take_count(raw: u8) -> Option<usize> {
    (raw < 0xf0).then_some(usize::from(raw % 8))
}

impl Script {
    /// Decodes fuzzer bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut input = Input::new(bytes);
        let rings = 2 + usize::from(input.u8() % 3);
        let size = 64usize << (input.u8() % 5);
        let lateness = u64::from(input.u16() % 512);
        let mut ops = Vec::new();
        while !input.is_empty() && ops.len() < 256 {
            let selector = input.u8();
            let ring = usize::from(input.u8()) % rings;
            let op = match selector % 8 {
                0 => {
                    let raw = input.u8();
                    Op::Reserve {
                        ring,
                        extra: usize::from(raw % 32),
                        stamp_first: raw & 0x80 != 0,
                    }
                }
                1 => {
                    let raw = input.u8();
                    Op::Commit {
                        ring,
                        index: usize::from(raw & 0x7f),
                        discard: raw & 0x80 != 0 && raw % 5 == 0,
                    }
                }
                2 => Op::Output {
                    ring,
                    delay: u64::from(input.u16() % 768),
                    extra: usize::from(input.u8() % 32),
                },
                3 => Op::Corrupt {
                    ring,
                    key: input.u64(),
                },
                4 => Op::Tick {
                    delta: u64::from(input.u16() % 1024),
                },
                5 | 6 => {
                    let first = take_count(input.u8());
                    let middle_raw = input.u8();
                    let middle =
                        (middle_raw & 1 == 1).then_some((ring, u64::from(middle_raw >> 1) * 4));
                    let second = take_count(input.u8());
                    let lag_raw = input.u8();
                    Op::Round {
                        first,
                        middle,
                        second,
                        lag: if lag_raw >= 0xf8 {
                            u64::from(lag_raw & 7) * 100
                        } else {
                            0
                        },
                        drain: selector % 8 == 6 && lag_raw & 0x40 != 0,
                    }
                }
                _ => Op::CheckBeforeSleep,
            };
            ops.push(op);
        }
        Self {
            rings,
            size,
            lateness,
            ops,
        }
    }
}

/// Decodes and checks one input.
pub fn run(bytes: &[u8]) {
    check(&Script::from_bytes(bytes));
}

/// What a checked script went through (for the test that the seed cases are not vacuous).
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    /// The merge's counters at the end.
    pub stats: MergeStats,
    /// Records released by rounds (not by drains), and by drains.
    pub released_by_rounds: usize,
    /// Records released by drains.
    pub released_by_drains: usize,
    /// The script kept the guarantee's conditions, so the reference merge was checked.
    pub in_time: bool,
    /// A round was open while a producer committed.
    pub output_during_round: bool,
    /// `check_before_sleep` said sleep, with a deadline.
    pub slept_until: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Busy,
    Committed,
    Discarded,
}

/// A record as the oracle knows it.
#[derive(Clone, Debug)]
struct Known {
    sequence: u32,
    /// Its key (`None` while a reserve-then-stamp record is BUSY).
    key: Option<u64>,
    /// When its key was read from the clock (`None`: not a stamp).
    stamp: Option<u64>,
    /// The clock when it was committed.
    committed_at: Option<u64>,
    state: State,
    /// The bytes it was given.
    bytes: Vec<u8>,
    released: bool,
}

/// A ring, its producer, and the oracle's records of it in reservation order.
struct Oracle<'p> {
    producer: &'p KernelProducer<std::sync::Arc<HeapRing>>,
    records: Vec<Known>,
    /// Outstanding reservations: (index into `records`, the reservation).
    outstanding: Vec<(usize, Reservation<'p, std::sync::Arc<HeapRing>>)>,
    next_sequence: u32,
}

struct World<'p> {
    rings: Vec<Oracle<'p>>,
    clock: u64,
    lateness: u64,
    /// Every round so far was given the current clock as `now`, and none was a drain (which
    /// releases without waiting for quiet rings, so a record committed later with a smaller key
    /// comes out of order, as `Merge::drain` says).
    fresh_nows: bool,
    /// Some round's `now` lagged the clock by more than the lateness, which the contract of
    /// `Merge::round` allows to make a held record's key look like a future key.
    stale_nows: bool,
    /// Released so far: (ring, key, out of order, future key).
    released: Vec<(usize, u64, bool, bool)>,
    /// The largest key released so far, future keys excepted.
    largest: Option<u64>,
    summary: Summary,
}

fn record_bytes(ring: usize, sequence: u32, key: u64, extra: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(STAMP_LEN + extra);
    bytes.extend_from_slice(&key.to_ne_bytes());
    bytes.extend_from_slice(&(ring as u32).to_ne_bytes());
    bytes.extend_from_slice(&sequence.to_ne_bytes());
    bytes.extend((0..extra).map(|i| (sequence as usize * 31 + i) as u8));
    bytes
}

impl World<'_> {
    fn output(&mut self, ring: usize, key: u64, stamp: Option<u64>, extra: usize) {
        let oracle = &mut self.rings[ring];
        let sequence = oracle.next_sequence;
        let bytes = record_bytes(ring, sequence, key, extra);
        if oracle.producer.output(&bytes, Wakeup::Adaptive).is_none() {
            return; // no room: nothing produced
        }
        oracle.next_sequence += 1;
        oracle.records.push(Known {
            sequence,
            key: Some(key),
            stamp,
            committed_at: Some(self.clock),
            state: State::Committed,
            bytes,
            released: false,
        });
    }

    /// The ring's next record that a reader would deliver, if it is committed: `None` when the
    /// ring is empty or BUSY at its next record.
    fn committed_head(&self, ring: usize) -> Option<&Known> {
        self.rings[ring]
            .records
            .iter()
            .filter(|record| !record.released && record.state != State::Discarded)
            .take(1)
            .find(|record| record.state == State::Committed)
    }

    /// Checks a released record against its ring's oracle and marks it released.
    fn released(&mut self, record: &MergedRecord<'_>) {
        let ring = record.ring;
        let oracle = &mut self.rings[ring];
        let next = oracle
            .records
            .iter_mut()
            .find(|known| !known.released && known.state != State::Discarded)
            .unwrap_or_else(|| panic!("ring {ring} released a record it does not hold"));
        assert_eq!(
            next.state,
            State::Committed,
            "ring {ring} released record {} while it is BUSY",
            next.sequence
        );
        assert_eq!(
            record.data,
            &next.bytes[..],
            "ring {ring}: wrong bytes for record {}",
            next.sequence
        );
        assert_eq!(Some(record.key), next.key);
        next.released = true;
        let corrupt = next.stamp.is_none();
        assert!(
            !record.future_key || corrupt || self.stale_nows,
            "ring {ring}: record {} stamped {:?} treated as a future key",
            next.sequence,
            next.stamp
        );
        if !record.future_key {
            let expected = self.largest.is_some_and(|largest| record.key < largest);
            assert_eq!(
                record.out_of_order, expected,
                "out-of-order flag of key {} (largest before: {:?})",
                record.key, self.largest
            );
            self.largest = self.largest.max(Some(record.key));
        }
        self.released
            .push((ring, record.key, record.out_of_order, record.future_key));
    }

    /// Checks how a round said it ended (when no producer ran since its last look).
    fn check_end(&self, end: RoundEnd, now: u64, draining: bool) {
        match end {
            RoundEnd::Open => {}
            RoundEnd::Idle => {
                for ring in 0..self.rings.len() {
                    assert!(
                        self.committed_head(ring).is_none(),
                        "round idle while ring {ring} has a committed record"
                    );
                }
            }
            RoundEnd::Waiting {
                ring,
                key,
                quiet,
                until,
            } => {
                assert!(!draining, "a drain waited");
                assert!(
                    self.committed_head(quiet).is_none(),
                    "ring {quiet} is not quiet"
                );
                assert_eq!(until, key.saturating_add(self.lateness));
                assert!(until > now, "waited although {key} + lateness <= {now}");
                let head = self
                    .committed_head(ring)
                    .expect("the held ring has a record");
                // A corrupt key (or, after a stale `now`, any held key) may be ordered as its
                // bound rather than as itself.
                let clamped_head = self.stale_nows
                    || (0..self.rings.len())
                        .any(|r| self.committed_head(r).is_some_and(|h| h.stamp.is_none()));
                if !clamped_head {
                    assert_eq!(head.key, Some(key));
                    let smallest = (0..self.rings.len())
                        .filter_map(|r| self.committed_head(r).and_then(|h| h.key))
                        .min();
                    assert_eq!(smallest, Some(key), "not the smallest committed head");
                }
            }
            RoundEnd::Failed { ring } => panic!("ring {ring} reported corrupt"),
        }
    }
}

/// Runs a script and checks it (see the module documentation).
pub fn check(script: &Script) -> Summary {
    let mut merging = Vec::new();
    let mut producers = Vec::new();
    for _ in 0..script.rings {
        let (producer, consumer) = HeapRing::new(script.size).expect("valid size").split();
        producers.push(producer);
        merging.push(MergeRing::new(consumer));
    }
    let mut rings = Vec::new();
    for producer in &producers {
        rings.push(Oracle {
            producer,
            records: Vec::new(),
            outstanding: Vec::new(),
            next_sequence: 0,
        });
    }
    let mut world = World {
        rings,
        clock: CLOCK_START,
        lateness: script.lateness,
        fresh_nows: true,
        stale_nows: false,
        released: Vec::new(),
        largest: None,
        summary: Summary::default(),
    };
    let mut merge = Merge::new(u64_key_at(0), script.lateness);
    for op in &script.ops {
        apply(&mut world, &mut merge, &mut merging, op);
    }
    // The end of the stream: every reservation committed, then drained.
    for ring in 0..world.rings.len() {
        while !world.rings[ring].outstanding.is_empty() {
            apply(
                &mut world,
                &mut merge,
                &mut merging,
                &Op::Commit {
                    ring,
                    index: 0,
                    discard: false,
                },
            );
        }
    }
    world.summary.released_by_rounds = world.released.len() - world.summary.released_by_drains;
    loop {
        let before = world.released.len();
        let drain = merge.drain(&mut merging, world.clock);
        for record in &drain {
            world.released(&record.expect("the rings are never corrupt"));
        }
        world.check_end(drain.status(), world.clock, true);
        drop(drain);
        if world.released.len() == before {
            break;
        }
    }
    for (ring, oracle) in world.rings.iter().enumerate() {
        for known in &oracle.records {
            assert!(
                known.released || known.state == State::Discarded,
                "ring {ring} record {} never released",
                known.sequence
            );
        }
    }
    assert_eq!(merge.stats().records as usize, world.released.len());

    // The reference merge, when the script kept the guarantee's conditions.
    let mut in_time = world.fresh_nows;
    for oracle in &world.rings {
        // No reservation holds a record behind it back for more than the lateness after that
        // record's stamp (the one a BUSY head hides may have been committed before the look).
        for (at, earlier) in oracle.records.iter().enumerate() {
            let Some(done) = earlier.committed_at else {
                continue;
            };
            for later in &oracle.records[at + 1..] {
                if let (State::Committed, Some(stamp)) = (later.state, later.stamp) {
                    in_time &= done <= stamp + world.lateness;
                }
            }
        }
        let mut previous = None;
        for known in oracle
            .records
            .iter()
            .filter(|k| k.state == State::Committed)
        {
            let (Some(stamp), Some(committed), Some(key)) =
                (known.stamp, known.committed_at, known.key)
            else {
                in_time = false; // a corrupt key
                continue;
            };
            in_time &= committed - stamp <= world.lateness;
            in_time &= previous.map_or(true, |previous| previous <= key);
            previous = Some(key);
        }
    }
    if in_time {
        let mut expected: Vec<u64> = world
            .rings
            .iter()
            .flat_map(|oracle| oracle.records.iter())
            .filter(|known| known.state == State::Committed)
            .filter_map(|known| known.key)
            .collect();
        expected.sort_unstable();
        let keys: Vec<u64> = world.released.iter().map(|&(_, key, _, _)| key).collect();
        assert_eq!(keys, expected, "not the reference merge");
        assert_eq!(merge.stats().out_of_order, 0);
    }
    Summary {
        stats: merge.stats(),
        in_time,
        ..world.summary
    }
}

fn apply<'p, K: Fn(&[u8]) -> u64>(
    world: &mut World<'p>,
    merge: &mut Merge<K>,
    merging: &mut [MergeRing<Consumer<std::sync::Arc<HeapRing>>>],
    op: &Op,
) {
    match *op {
        Op::Reserve {
            ring,
            extra,
            stamp_first,
        } => {
            let clock = world.clock;
            let oracle = &mut world.rings[ring];
            let Some(reservation) = oracle.producer.reserve(STAMP_LEN + extra) else {
                return;
            };
            let sequence = oracle.next_sequence;
            oracle.next_sequence += 1;
            oracle.records.push(Known {
                sequence,
                key: stamp_first.then_some(clock),
                stamp: stamp_first.then_some(clock),
                committed_at: None,
                state: State::Busy,
                bytes: Vec::new(),
                released: false,
            });
            oracle
                .outstanding
                .push((oracle.records.len() - 1, reservation));
        }
        Op::Commit {
            ring,
            index,
            discard,
        } => {
            let clock = world.clock;
            let oracle = &mut world.rings[ring];
            if oracle.outstanding.is_empty() {
                return;
            }
            let (at, mut reservation) = oracle.outstanding.remove(index % oracle.outstanding.len());
            let known = &mut oracle.records[at];
            // Reserve-then-stamp: the stamp is taken now.
            let key = *known.key.get_or_insert(clock);
            known.stamp.get_or_insert(clock);
            let bytes = record_bytes(ring, known.sequence, key, reservation.len() - STAMP_LEN);
            reservation.write(&bytes);
            let known = &mut oracle.records[at];
            known.bytes = bytes;
            known.committed_at = Some(clock);
            if discard {
                known.state = State::Discarded;
                reservation.discard(Wakeup::Adaptive);
            } else {
                known.state = State::Committed;
                reservation.submit(Wakeup::Adaptive);
            }
        }
        Op::Output { ring, delay, extra } => {
            let stamp = world.clock - delay;
            world.output(ring, stamp, Some(stamp), extra);
        }
        Op::Corrupt { ring, key } => world.output(ring, key, None, 0),
        Op::Tick { delta } => world.clock += delta,
        Op::Round {
            first,
            middle,
            second,
            lag,
            drain,
        } => {
            world.fresh_nows &= lag == 0 && !drain;
            world.stale_nows |= lag > world.lateness;
            let now = world.clock - lag;
            let released_before = world.released.len();
            let round = if drain {
                merge.drain(merging, now)
            } else {
                merge.round(merging, now)
            };
            let mut held: Vec<MergedRecord<'_>> = Vec::new();
            let take = |limit: Option<usize>, world: &mut World, held: &mut Vec<_>| {
                while limit.map_or(true, |limit| held.len() < limit) {
                    match round.next_record() {
                        Some(record) => {
                            let record = record.expect("the rings are never corrupt");
                            world.released(&record);
                            held.push(record);
                        }
                        None => break,
                    }
                }
            };
            take(first, world, &mut held);
            // A round that ended before the middle output reports a state the output changed.
            let stale = middle.is_some() && round.status() != RoundEnd::Open;
            if let Some((ring, delay)) = middle {
                let stamp = world.clock - delay;
                world.output(ring, stamp, Some(stamp), 0);
                world.summary.output_during_round = true;
            }
            let limit = second.map(|second| held.len() + second);
            take(limit, world, &mut held);
            // Every record is still intact while the round holds it.
            for record in &held {
                let known = world.rings[record.ring]
                    .records
                    .iter()
                    .find(|known| known.released && known.bytes == record.data);
                assert!(known.is_some(), "a held record changed under its borrow");
            }
            let end = round.status();
            // `Idle` and `Waiting` look again at quiet rings before they are reported, so they
            // are exact even after the middle output, as long as the round ended after it.
            if !stale {
                world.check_end(end, now, drain);
            }
            drop(held);
            drop(round);
            if drain {
                world.summary.released_by_drains += world.released.len() - released_before;
            }
        }
        Op::CheckBeforeSleep => {
            let now = world.clock;
            match merge.check_before_sleep(merging, now) {
                MergeReadiness::Ready => {}
                MergeReadiness::Sleep { until } => {
                    for (ring, merging) in merging.iter().enumerate() {
                        if !merging.is_holding() {
                            assert!(
                                world.committed_head(ring).is_none(),
                                "sleep allowed while ring {ring} has a committed record"
                            );
                        }
                    }
                    if let Some(until) = until {
                        assert!(now < until, "sleep allowed past {until} at {now}");
                        world.summary.slept_until = true;
                    }
                }
            }
        }
    }
}
