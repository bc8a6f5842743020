//! Loom models of USER_RINGBUF: the user-space `Producer` against the model of the kernel's
//! `bpf_user_ringbuf_drain` (`KernelDrain`), in loom-tracked memory (`common::LoomRing`).
//!
//! What a wrong ordering would show here:
//! - publishing `producer_pos` before writing the BUSY header: the drain reads the stale
//!   header left at that offset (the zeroed ring's `len = 0`, a committed empty sample) and
//!   delivers a sample nobody produced;
//! - a `Relaxed` commit exchange: the drain reads payload bytes it has not synchronised with
//!   (loom reports a causality violation on the tracked payload);
//! - a `Relaxed` load of `consumer_pos` at reserve: the producer rewrites space the drain may
//!   still be reading (causality violation);
//! - a `Relaxed` store of `producer_pos`: the drain sees the position without the header
//!   (with a write batch, without the headers of every sample in it).
//!
//! Each of these four weakenings, applied by hand to `src/producer.rs`, made loom report the
//! failure named above. The last three run as negative controls below, through
//! `bpf_ringbuf::sync::SyncPoint`.

use std::ops::ControlFlow;
use std::sync::Arc;

use crate::common::{expect_failure, model, payload, LoomRing};
use bpf_ringbuf::model::{KernelDrain, Wakeup};
use bpf_ringbuf::sync::SyncPoint;
use bpf_ringbuf::{Producer, ReserveError, RingMemory};

/// A 32-byte ring whose positions start 24 bytes before `usize::MAX` wraps (offset 8).
///
/// | sample | position | len | bytes | offset | what it exercises                            |
/// |--------|----------|-----|-------|--------|----------------------------------------------|
/// | 0      | MAX-23   | 12  | 24    | 8..32  | submit; ends exactly where positions wrap    |
/// | 1      | 0        | 4   | 16    | 0..16  | discard; needs sample 0's space back         |
/// | 2      | 16       | 12  | 24    | 16..40 | submit; payload wraps the end of the data    |
const RING_SIZE: usize = 32;
const START: usize = usize::MAX - 23;
const SAMPLES: [(usize, u8, bool); 3] = [(12, 0, false), (4, 1, true), (12, 2, false)];

/// Reserves, retrying (yielding to the drain) while the ring is full.
fn reserve_blocking<M: bpf_ringbuf::RingMemoryMut>(
    producer: &Producer<M>,
    len: usize,
) -> bpf_ringbuf::Reservation<'_, M> {
    loop {
        match producer.reserve(len) {
            Ok(reservation) => return reservation,
            Err(ReserveError::NoSpace { .. }) => loom::thread::yield_now(),
            Err(error) => panic!("reserve: {error}"),
        }
    }
}

/// The drain, in a thread of its own, until `expected` was delivered; checks order and bytes.
fn spawn_drain(
    ring: Arc<LoomRing>,
    expected: Vec<Vec<u8>>,
) -> loom::thread::JoinHandle<KernelDrain<Arc<LoomRing>>> {
    loom::thread::spawn(move || {
        // SAFETY: the model's only drain of this ring; its producer writes only reserved space.
        let drain = unsafe { KernelDrain::new(ring) }.unwrap();
        let mut seen: Vec<Vec<u8>> = Vec::new();
        while seen.len() < expected.len() {
            let delivered = drain
                .drain(Wakeup::Adaptive, |sample| {
                    seen.push(sample.to_vec());
                    assert!(
                        seen.len() <= expected.len()
                            && seen[seen.len() - 1] == expected[seen.len() - 1],
                        "samples out of order, torn or never produced: {seen:?}"
                    );
                    ControlFlow::Continue(())
                })
                .expect("the kernel never sees a header it rejects");
            if delivered == 0 {
                loom::thread::yield_now();
            }
        }
        drain
    })
}

fn drain_sees_every_submitted_sample_once_in_order() {
    let ring = Arc::new(LoomRing::starting_at(RING_SIZE, START));
    let expected: Vec<Vec<u8>> = SAMPLES
        .iter()
        .filter(|(_, _, discard)| !discard)
        .map(|&(len, tag, _)| payload(tag, len))
        .collect();
    let drain = spawn_drain(ring.clone(), expected);

    // SAFETY: the only producer of this ring; its drain publishes only past samples it has finished reading.
    let producer = unsafe { Producer::new(ring.clone()) }.unwrap();
    for (len, tag, discard) in SAMPLES {
        let mut reservation = reserve_blocking(&producer, len);
        reservation.copy_from_slice(&payload(tag, len));
        if discard {
            reservation.discard();
        } else {
            reservation.submit();
        }
    }
    let drain = drain.join().unwrap();

    let end = START.wrapping_add(24 + 16 + 24);
    assert_eq!(ring.producer_pos().load_relaxed(), end);
    // The discarded sample is skipped by the drain that delivers sample 2, or is the last
    // thing left: one more drain consumes everything.
    assert_eq!(
        drain.drain(Wakeup::Adaptive, |sample| panic!("extra sample {sample:?}")),
        Ok(0)
    );
    assert_eq!(ring.consumer_pos().load_relaxed(), end);
}

#[test]
fn user_producer_wraparound() {
    model(drain_sees_every_submitted_sample_once_in_order);
}

/// Two reservations outstanding, committed in reverse order: the drain must deliver them in
/// reservation order, never the second while the first is BUSY.
fn out_of_order_commits_drain_in_reservation_order() {
    let ring = Arc::new(LoomRing::new(RING_SIZE));
    let expected = vec![payload(0, 4), payload(1, 4)];
    let drain = spawn_drain(ring.clone(), expected);

    // SAFETY: the only producer of this ring; its drain publishes only past samples it has finished reading.
    let producer = unsafe { Producer::new(ring.clone()) }.unwrap();
    let mut first = producer.reserve(4).unwrap();
    let mut second = producer.reserve(4).unwrap();
    second.copy_from_slice(&payload(1, 4));
    second.submit();
    first.copy_from_slice(&payload(0, 4));
    first.submit();
    drain.join().unwrap();
    assert_eq!(ring.consumer_pos().load_relaxed(), 32);
}

#[test]
fn user_producer_out_of_order_commits() {
    model(out_of_order_commits_drain_in_reservation_order);
}

/// Control: a `Relaxed` commit exchange does not publish the payload: the drain reads bytes it
/// has not synchronised with.
#[test]
fn control_user_commit_relaxed() {
    expect_failure(
        SyncPoint::UserCommit,
        "Causality violation",
        drain_sees_every_submitted_sample_once_in_order,
    );
}

/// Control: a `Relaxed` load of `consumer_pos` at reserve lets the producer rewrite space the
/// drain has handed back without ordering the drain's reads before the writes.
#[test]
fn control_user_consumer_pos_load_relaxed() {
    expect_failure(
        SyncPoint::UserConsumerPosLoad,
        "Causality violation",
        drain_sees_every_submitted_sample_once_in_order,
    );
}

/// Control: a `Relaxed` store of `producer_pos` lets the drain see the new position without
/// the BUSY header written before it: it reads the zeroed word, an empty committed sample that
/// nobody produced.
#[test]
fn control_user_producer_pos_publish_relaxed() {
    expect_failure(
        SyncPoint::UserProducerPosPublish,
        "never produced",
        drain_sees_every_submitted_sample_once_in_order,
    );
}

/// Write batches: two samples written committed past `producer_pos` and published with one
/// store-release (the second one's payload wraps the end of the data area; together they fill
/// the ring), then a batch that needs their space back. The drain must see each batch whole or
/// not at all, bytes included.
fn batches_publish_whole_samples() {
    let ring = Arc::new(LoomRing::starting_at(RING_SIZE, START));
    let expected = vec![payload(0, 4), payload(1, 4), payload(2, 12)];
    let drain = spawn_drain(ring.clone(), expected);

    // SAFETY: the only producer of this ring; its drain publishes only past samples it has finished reading.
    let mut producer = unsafe { Producer::new(ring.clone()) }.unwrap();
    let mut batch = producer.batch().unwrap();
    batch.push(&payload(0, 4)).unwrap();
    batch.push(&payload(1, 4)).unwrap();
    assert_eq!(batch.free_space(), 0);
    batch.commit();
    loop {
        let mut batch = producer.batch().unwrap();
        match batch.push(&payload(2, 12)) {
            Ok(()) => break,
            Err(ReserveError::NoSpace { .. }) => {
                drop(batch);
                loom::thread::yield_now();
            }
            Err(error) => panic!("push: {error}"),
        }
    }
    drain.join().unwrap();
    assert_eq!(
        ring.producer_pos().load_relaxed(),
        START.wrapping_add(16 + 16 + 24)
    );
}

#[test]
fn user_producer_batches() {
    model(batches_publish_whole_samples);
}

/// Control: a `Relaxed` publish of a batch lets the drain see the position without the
/// headers written before it: it reads the zeroed word, an empty sample nobody produced.
#[test]
fn control_user_batch_publish_relaxed() {
    expect_failure(
        SyncPoint::UserProducerPosPublish,
        "never produced",
        batches_publish_whole_samples,
    );
}
