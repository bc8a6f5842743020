//! Loom model 1: the consumer against one kernel producer, across the end of the data area
//! and across the wrap of the positions at `usize::MAX`.

use std::sync::Arc;

use crate::common::{
    expect_failure, fill_and_commit, model, payload, reserve_blocking, Kernel, LoomRing,
};
use bpf_ringbuf::sync::SyncPoint;
use bpf_ringbuf::{Consumer, RingMemory};

/// A 32-byte ring whose positions start 24 bytes before `usize::MAX` wraps (offset 8).
///
/// | record | position  | len | bytes | offset | what it exercises                          |
/// |--------|-----------|-----|-------|--------|--------------------------------------------|
/// | 0      | MAX-23    | 12  | 24    | 8..32  | submit; ends exactly where positions wrap  |
/// | 1      | 0         | 4   | 16    | 0..16  | discard; needs record 0's space back       |
/// | 2      | 16        | 12  | 24    | 16..40 | submit; payload wraps the end of the data  |
///
/// Record 1 cannot be reserved until the consumer has published past record 0, and record 2
/// reuses the slot that held record 0's payload, so the consumer's reads must happen-before
/// the producer's writes there (store-release of `consumer_pos`, load-acquire in reserve).
const RING_SIZE: usize = 32;
const START: usize = usize::MAX - 23;
const RECORDS: [(usize, u8, bool); 3] = [(12, 0, false), (4, 1, true), (12, 2, false)];

fn consumer_sees_every_committed_record_once_in_order() {
    let ring = Arc::new(LoomRing::starting_at(RING_SIZE, START));
    // SAFETY: the model is the ring's only writer; its one consumer publishes only past
    // records it has finished reading.
    let kernel = unsafe { Kernel::new(ring.clone()) }.unwrap();
    let expected: Vec<Vec<u8>> = RECORDS
        .iter()
        .filter(|(_, _, discard)| !discard)
        .map(|&(len, tag, _)| payload(tag, len))
        .collect();

    // The consumer runs in a thread of its own (not the one that created the ring), so that
    // loom lets its first look at each header word return the initial zero: loom never
    // returns a value a thread had already seen before its last `yield_now`.
    let consumer = {
        let ring = ring.clone();
        let expected = expected.clone();
        loom::thread::spawn(move || {
            // SAFETY: the model's only consumer of this ring; the kernel model writes payloads only in
            // space consumer_pos handed back.
            let mut consumer = unsafe { Consumer::new(ring) }.unwrap();
            let mut seen: Vec<Vec<u8>> = Vec::new();
            while seen.len() < expected.len() {
                let batch = consumer.batch();
                for record in &batch {
                    seen.push(record.expect("the ring is never corrupt").to_vec());
                    assert!(
                        seen.len() <= expected.len()
                            && seen[seen.len() - 1] == expected[seen.len() - 1],
                        "records out of order or torn: {seen:?}"
                    );
                }
                let moved = batch.consumed_bytes() > 0;
                batch.commit();
                if !moved {
                    loom::thread::yield_now();
                }
            }
            (consumer, seen)
        })
    };

    for (len, tag, discard) in RECORDS {
        let reservation = reserve_blocking(&kernel, len);
        fill_and_commit(reservation, tag, discard);
    }
    let (mut consumer, seen) = consumer.join().unwrap();

    assert_eq!(
        seen, expected,
        "every committed record exactly once, in order"
    );
    // Nothing else is readable, and consumer_pos ends at producer_pos (past the wrap).
    assert!(
        consumer.batch().next_record().is_none(),
        "a record was delivered twice"
    );
    let end = START.wrapping_add(24 + 16 + 24);
    assert_eq!(ring.producer_pos().load_relaxed(), end);
    assert_eq!(ring.consumer_pos().load_relaxed(), end);
}

#[test]
fn single_producer_wraparound() {
    model(consumer_sees_every_committed_record_once_in_order);
}

/// Control: reading the header with `Relaxed` instead of `Acquire` lets the consumer read a
/// payload whose writes it has not synchronised with.
#[test]
fn control_header_load_relaxed() {
    expect_failure(
        SyncPoint::HeaderLoad,
        "Causality violation",
        consumer_sees_every_committed_record_once_in_order,
    );
}

/// Control: reading `producer_pos` with `Relaxed` lets the consumer see a reservation without
/// its header: it reads a stale header word (a zero: an empty committed record that was never
/// produced, or record 0's header a lap later).
#[test]
fn control_producer_pos_load_relaxed() {
    expect_failure(
        SyncPoint::ProducerPosLoad,
        "records out of order or torn",
        consumer_sees_every_committed_record_once_in_order,
    );
}
