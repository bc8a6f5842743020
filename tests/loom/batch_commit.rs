//! Loom model 4: a zero-copy batch publishes `consumer_pos` once, at its end, and never past
//! a record still being read, a BUSY record, or `producer_pos`.

use std::sync::Arc;

use crate::common::{expect_failure, model, payload, reserve_blocking, Kernel, LoomRing};
use bpf_ringbuf::geometry::distance;
use bpf_ringbuf::model::Wakeup;
use bpf_ringbuf::sync::SyncPoint;
use bpf_ringbuf::{Consumer, RingMemory};

/// A 64-byte ring and one kernel thread that holds two reservations and commits them in
/// reverse order (a BPF program may), then needs the space of both back:
///
/// | record | position | len | bytes | payload slots (8 bytes) | committed               |
/// |--------|----------|-----|-------|-------------------------|-------------------------|
/// | 0      | 0        | 4   | 16    | 1                       | second (BUSY meanwhile) |
/// | 1      | 16       | 4   | 16    | 3                       | first                   |
/// | 2      | 32       | 36  | 48    | 5, 6, 7, 0, 1 (wraps)   | after 0 and 1 are read  |
///
/// Record 2 can only be reserved once `consumer_pos` is past both, and it overwrites record
/// 0's payload: the consumer's reads of the whole batch must happen-before that write.
const RING_SIZE: usize = 64;
const SIZES: [usize; 3] = [4, 4, 36];

/// Not past `producer_pos`: seen from the producer, the only writer of `producer_pos`.
fn assert_consumer_not_ahead(ring: &LoomRing) {
    let producer_pos = ring.producer_pos().load_relaxed();
    // Relaxed: a monitor, not part of the protocol.
    let consumer_pos = ring.consumer_pos().load_relaxed();
    assert!(
        distance(consumer_pos, producer_pos) <= RING_SIZE,
        "consumer_pos {consumer_pos} published past producer_pos {producer_pos}"
    );
}

fn batch_publishes_only_what_was_read() {
    let ring = Arc::new(LoomRing::new(RING_SIZE));
    // SAFETY: the model is the ring's only writer; its one consumer publishes only past
    // records it has finished reading.
    let kernel = unsafe { Kernel::new(ring.clone()) }.unwrap();

    let consumer = {
        let ring = ring.clone();
        loom::thread::spawn(move || {
            // SAFETY: the model's only consumer of this ring; the kernel model writes payloads only in
            // space consumer_pos handed back.
            let mut consumer = unsafe { Consumer::new(ring.clone()) }.unwrap();
            let mut read = 0;
            while read < SIZES.len() {
                let batch = consumer.batch();
                // Hold every record of the batch at once, zero-copy, and check them all
                // before the batch ends.
                let records: Vec<&[u8]> = batch
                    .iter()
                    .collect::<Result<_, _>>()
                    .expect("the ring is never corrupt");
                for (i, record) in records.iter().enumerate() {
                    let tag = (read + i) as u8;
                    assert_eq!(
                        *record,
                        payload(tag, SIZES[read + i]),
                        "record out of order or torn"
                    );
                }
                read += records.len();
                let published = batch.consumed_bytes() > 0;
                // Still reading every record up to the end of the batch: the space must not
                // have been handed back yet.
                for record in &records {
                    ring.still_reading(record);
                }
                drop(records);
                batch.commit();
                if !published {
                    loom::thread::yield_now();
                }
            }
        })
    };

    let mut first = kernel.reserve(SIZES[0]).expect("fits");
    let mut second = kernel.reserve(SIZES[1]).expect("fits");
    second.write(&payload(1, SIZES[1]));
    second.submit(Wakeup::Adaptive);
    // Record 0 is still BUSY: the consumer may read nothing yet (record 1 stays behind it),
    // and must not have published past it. Its payload is written only now: a consumer that
    // had read it would race with this write.
    // Relaxed: a monitor, not part of the protocol.
    let consumer_pos = ring.consumer_pos().load_relaxed();
    assert_eq!(consumer_pos, 0, "consumer_pos published past a BUSY record");
    first.write(&payload(0, SIZES[0]));
    first.submit(Wakeup::Adaptive);

    assert_consumer_not_ahead(&ring);
    let mut third = reserve_blocking(&kernel, SIZES[2]);
    assert_consumer_not_ahead(&ring);
    third.write(&payload(2, SIZES[2]));
    third.submit(Wakeup::Adaptive);

    consumer.join().unwrap();
    assert_consumer_not_ahead(&ring);
    assert_eq!(ring.consumer_pos().load_relaxed(), 16 + 16 + 48);
}

#[test]
fn batch_commit_bounds() {
    model(batch_publishes_only_what_was_read);
}

/// Control: publishing `consumer_pos` with `Relaxed` hands record 0's space back without
/// ordering the batch's reads before the kernel's next write there.
#[test]
fn control_publish_relaxed() {
    expect_failure(
        SyncPoint::ConsumerPosPublish,
        "Causality violation",
        batch_publishes_only_what_was_read,
    );
}

/// Control: a batch that publishes `consumer_pos` past each record as it lends it (instead of
/// once, at its end) hands the space back while the record is still being read; the kernel's
/// reuse of it then races with the batch's reads.
#[test]
fn control_publish_before_batch_end() {
    expect_failure(
        SyncPoint::BatchEarlyPublish,
        "Causality violation",
        batch_publishes_only_what_was_read,
    );
}
