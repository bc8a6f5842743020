//! Loom model 8: the merged reader over two rings, each with its own kernel producer, all
//! stamping one clock; the merge never releases a later key before an earlier one when every
//! record is committed within the lateness of its stamp.

use std::sync::Arc;

use crate::common::{
    expect_failure, model, reached, times_reached, with_preemption_cap, Kernel, LoomRing,
};
use bpf_ringbuf::merge::{u64_key_at, Merge, MergeRing, RoundEnd};
use bpf_ringbuf::model::Wakeup;
use bpf_ringbuf::sync::SyncPoint;
use bpf_ringbuf::Consumer;
use loom::sync::atomic::{AtomicU64, Ordering};

/// 64-byte rings: one 8-byte record (16 bytes with its header) each, never full.
const RING_SIZE: usize = 64;
const LEN: usize = 8;

/// The lateness, in clock ticks. Every `tick` (a stamp, a commit's timestamp, a round's
/// `now`) advances the clock by one, so a record committed right after another thread
/// stamped and a round started is 3 ticks late: the smallest lateness at which a merge that
/// released too early would be caught with the guarantee's condition holding.
const LATENESS: u64 = 3;

/// Rounds the merger makes while the producers run (more multiply the executions without
/// reaching new orders); it drains the rest once they are done.
const ROUNDS: usize = 2;

/// The preemption bound of this file's models: two rings, each with its producer, and a
/// merger whose every round loads and publishes both consumer positions make the executions
/// grow fast with the bound. Measured on the project's 2-CPU machine (release build): bound 2
/// explores 61,367 executions in 6.6 s, but the lateness control passes there (the bug needs
/// three preemptions to show); bound 3 explores 1,055,681 in 94 s and every control fails as
/// it must; bound 4 had not finished after 7 minutes (on a shared machine). So 3, whatever
/// `LOOM_MAX_PREEMPTIONS` says for the other models; `LOOM_MERGE_MAX_PREEMPTIONS` overrides it.
fn preemption_cap() -> usize {
    std::env::var("LOOM_MERGE_MAX_PREEMPTIONS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(3)
}

/// Coverage: a round released a record although the other producer had not even stamped its
/// own when the round began (so its ring showed nothing), because the lateness had passed.
const RELEASED_PAST_QUIET: &str = "released before the other producer stamped";
/// Coverage: a round held a record back for a quiet ring.
const HELD_BACK: &str = "held back for a quiet ring";

/// The clock: a counter every reading advances. Its `SeqCst` read-modify-writes form one
/// total order, and a reading that follows another in it happens-after it: what a thread did
/// before reading the clock is visible to a thread that reads it later, as real time makes a
/// commit visible to a look that starts after it.
fn tick(clock: &AtomicU64) -> u64 {
    clock.fetch_add(1, Ordering::SeqCst) + 1
}

/// What a producer did: its record's stamp, and the clock right after its commit.
#[derive(Clone, Copy, Debug)]
struct Produced {
    stamp: u64,
    committed: u64,
}

/// One producer: stamp then reserve (`stamp_first`), or reserve then stamp, as a BPF program
/// may do either; then commit and read the clock.
fn produce(kernel: &Kernel, clock: &AtomicU64, stamp_first: bool) -> Produced {
    let early = stamp_first.then(|| tick(clock));
    let mut reservation = kernel.reserve(LEN).expect("the record fits");
    let stamp = early.unwrap_or_else(|| tick(clock));
    reservation.write(&stamp.to_ne_bytes());
    reservation.submit(Wakeup::Adaptive);
    let committed = tick(clock);
    Produced { stamp, committed }
}

fn merged_in_key_order() {
    let rings: Vec<Arc<LoomRing>> = (0..2).map(|_| Arc::new(LoomRing::new(RING_SIZE))).collect();
    let clock = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = rings
        .iter()
        .enumerate()
        .map(|(index, ring)| {
            // SAFETY: the model is the ring's only writer; its one consumer publishes only
            // past records it has finished reading.
            let kernel = unsafe { Kernel::new(ring.clone()) }.unwrap();
            let clock = clock.clone();
            loom::thread::spawn(move || produce(&kernel, &clock, index == 0))
        })
        .collect();

    let mut merging: Vec<_> = rings
        .iter()
        .map(|ring| {
            // SAFETY: the merge is the model's only consumer of this ring; the kernel model
            // writes payloads only in space consumer_pos handed back.
            MergeRing::new(unsafe { Consumer::new(ring.clone()) }.unwrap())
        })
        .collect();
    let mut merge = Merge::new(u64_key_at(0), LATENESS);
    // (ring, key, out of order)
    let mut released: Vec<(usize, u64, bool)> = Vec::new();
    // (ring, the `now` of its round) of the records released while the producers ran
    let mut early: Vec<(usize, u64)> = Vec::new();
    let mut held_back = false;
    for _ in 0..ROUNDS {
        let now = tick(&clock);
        let round = merge.round(&mut merging, now);
        for record in &round {
            let record = record.expect("the rings are never corrupt");
            assert_eq!(record.data.len(), LEN);
            released.push((record.ring, record.key, record.out_of_order));
            early.push((record.ring, now));
        }
        held_back |= matches!(round.status(), RoundEnd::Waiting { .. });
    }
    let produced: Vec<Produced> = producers.into_iter().map(|p| p.join().unwrap()).collect();
    // Both producers are done: what is committed is all there is.
    let now = tick(&clock);
    let drain = merge.drain(&mut merging, now);
    for record in &drain {
        let record = record.expect("the rings are never corrupt");
        released.push((record.ring, record.key, record.out_of_order));
    }
    drop(drain);

    // Every record once, from its own ring.
    let mut delivered: Vec<(usize, u64)> = released.iter().map(|&(r, k, _)| (r, k)).collect();
    delivered.sort();
    assert_eq!(
        delivered,
        [(0, produced[0].stamp), (1, produced[1].stamp)],
        "records lost, repeated or from the wrong ring: {released:?}"
    );
    // The flag says exactly which records came after a larger key.
    let mut largest = None;
    for &(ring, key, out_of_order) in &released {
        assert_eq!(
            out_of_order,
            largest.is_some_and(|largest| key < largest),
            "wrong out-of-order flag on ring {ring}'s {key}: {released:?}"
        );
        largest = largest.max(Some(key));
    }
    // The guarantee: within the lateness, the keys never go backwards.
    let in_time = produced.iter().all(|p| p.committed - p.stamp <= LATENESS);
    if in_time {
        assert!(
            released.windows(2).all(|pair| pair[0].1 <= pair[1].1),
            "released out of key order although every commit was within the lateness: \
             {released:?} (produced {produced:?})"
        );
    }
    if in_time
        && early
            .iter()
            .any(|&(ring, now)| produced[1 - ring].stamp > now)
    {
        reached(RELEASED_PAST_QUIET);
    }
    if held_back {
        reached(HELD_BACK);
    }
}

#[test]
fn merge_releases_in_key_order() {
    with_preemption_cap(preemption_cap(), || model(merged_in_key_order));
    assert!(
        times_reached(RELEASED_PAST_QUIET) > 0,
        "no execution released a record past a quiet ring"
    );
    assert!(
        times_reached(HELD_BACK) > 0,
        "no execution held a record back for a quiet ring"
    );
}

/// Control: a ring that shows no committed record (empty, or BUSY at its head) is taken to
/// have nothing earlier to deliver: Falco's trap. A record stamped before the released one
/// and committed right after the round looked is delivered after it.
#[test]
fn control_without_quiet_check() {
    with_preemption_cap(preemption_cap(), || {
        expect_failure(
            SyncPoint::MergeQuietCheck,
            "released out of key order",
            merged_in_key_order,
        )
    });
}

/// Control (our side, as in model 2): the header load `Relaxed`; the merge reads records (and
/// their keys) through the consumer's read step, so it would read a payload not yet written.
#[test]
fn control_header_load_relaxed() {
    with_preemption_cap(preemption_cap(), || {
        expect_failure(
            SyncPoint::HeaderLoad,
            "Causality violation",
            merged_in_key_order,
        )
    });
}

/// Control: a ring seen quiet at `now` is taken to deliver nothing stamped before `now`,
/// forgetting that a record stamped earlier may be committed up to the lateness later.
#[test]
fn control_without_lateness() {
    with_preemption_cap(preemption_cap(), || {
        expect_failure(
            SyncPoint::MergeLateness,
            "released out of key order",
            merged_in_key_order,
        )
    });
}
