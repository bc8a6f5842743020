//! Consumer accounting (`Stats`) on the heap ring and the model of the kernel producer: every
//! way of reading counts records, discarded records, consumed ring bytes,
//! BUSY stops and batches.

use std::ops::ControlFlow;
use std::sync::Arc;

use bpf_ringbuf::model::{HeapRing, KernelProducer, Wakeup};
use bpf_ringbuf::{Consumer, Stats};

fn ring(size: usize) -> (KernelProducer<Arc<HeapRing>>, Consumer<Arc<HeapRing>>) {
    HeapRing::new(size).unwrap().split()
}

/// Ring bytes a record of `len` payload bytes takes: header plus payload, rounded up to 8.
fn footprint(len: usize) -> u64 {
    ((len + 8 + 7) & !7) as u64
}

#[test]
fn batch_counts_records_discards_and_consumed_space() {
    let (producer, mut consumer) = ring(4096);
    producer.output(&[1; 5], Wakeup::Adaptive).unwrap();
    let discarded = producer.reserve(12).unwrap();
    discarded.discard(Wakeup::Adaptive);
    producer.output(&[2; 17], Wakeup::Adaptive).unwrap();
    assert_eq!(consumer.stats(), Stats::default());

    let batch = consumer.batch();
    assert_eq!(batch.iter().count(), 2);
    drop(batch);
    let stats = consumer.stats();
    assert_eq!(
        stats,
        Stats {
            records: 2,
            discarded: 1,
            consumed_bytes: footprint(5) + footprint(12) + footprint(17),
            busy_stops: 0,
            batches: 1,
        }
    );
    // An empty batch consumes nothing and counts nothing.
    drop(consumer.batch());
    assert_eq!(consumer.stats(), stats);
}

#[test]
fn records_left_in_a_batch_are_not_counted() {
    let (producer, mut consumer) = ring(4096);
    for i in 0..4u8 {
        producer.output(&[i; 3], Wakeup::Adaptive).unwrap();
    }
    let batch = consumer.batch();
    batch.next_record().unwrap().unwrap();
    batch.next_record().unwrap().unwrap();
    drop(batch);
    let stats = consumer.take_stats();
    assert_eq!(stats.records, 2);
    assert_eq!(stats.consumed_bytes, 2 * footprint(3));
    assert_eq!(consumer.stats(), Stats::default(), "take_stats resets");
    assert_eq!(consumer.batch().iter().count(), 2);
    assert_eq!(consumer.stats().records, 2);
}

#[test]
fn busy_head_is_counted_as_a_busy_stop() {
    let (producer, mut consumer) = ring(4096);
    producer.output(&[7; 8], Wakeup::Adaptive).unwrap();
    let held = producer.reserve(8).unwrap();
    producer.output(&[8; 8], Wakeup::Adaptive).unwrap();
    assert_eq!(consumer.batch().iter().count(), 1);
    assert_eq!(consumer.stats().busy_stops, 1);
    assert_eq!(consumer.stats().records, 1);
    // The copying API counts the BUSY stop too, and consumes nothing.
    assert_eq!(consumer.read_owned().unwrap(), None);
    assert_eq!(consumer.stats().busy_stops, 2);
    held.submit(Wakeup::Adaptive);
    assert_eq!(consumer.batch().iter().count(), 2);
    let stats = consumer.stats();
    assert_eq!((stats.records, stats.busy_stops, stats.batches), (3, 2, 2));
}

#[test]
fn consume_and_copies_count_the_same_way() {
    let (producer, mut consumer) = ring(4096);
    let lens = [1usize, 8, 9, 100];
    for &len in &lens {
        producer.output(&vec![0xab; len], Wakeup::Adaptive).unwrap();
    }
    let discarded = producer.reserve(40).unwrap();
    discarded.discard(Wakeup::Adaptive);
    producer.output(&[3; 4], Wakeup::Adaptive).unwrap();

    // Two by callback, then the rest by copy.
    assert_eq!(
        consumer.consume(2, |_| ControlFlow::Continue(())).unwrap(),
        2
    );
    let mut buf = vec![0; 256];
    assert_eq!(consumer.read_into(&mut buf).unwrap(), Some(9));
    let mut vec = Vec::new();
    assert!(consumer.read_vec(&mut vec).unwrap());
    assert_eq!(consumer.read_owned().unwrap(), Some(vec![3; 4]));
    assert_eq!(consumer.read_owned().unwrap(), None);

    let stats = consumer.stats();
    assert_eq!(stats.records, 5);
    assert_eq!(stats.discarded, 1);
    let all: u64 =
        lens.iter().map(|&len| footprint(len)).sum::<u64>() + footprint(40) + footprint(4);
    assert_eq!(stats.consumed_bytes, all);
    assert_eq!(stats.busy_stops, 0);
    // consume: one batch; read_into, read_vec, read_owned: one each.
    assert_eq!(stats.batches, 4);
}

#[test]
fn a_record_that_does_not_fit_is_not_counted() {
    let (producer, mut consumer) = ring(4096);
    producer.output(&[9; 32], Wakeup::Adaptive).unwrap();
    let mut small = [0u8; 8];
    assert!(consumer.read_into(&mut small).is_err());
    assert_eq!(consumer.stats(), Stats::default());
}

#[test]
fn stats_add_sums_every_field() {
    let one = Stats {
        records: 1,
        discarded: 3,
        consumed_bytes: 4,
        busy_stops: 5,
        batches: 6,
    };
    let mut sum = one;
    sum.add(&one);
    assert_eq!(
        sum,
        Stats {
            records: 2,
            discarded: 6,
            consumed_bytes: 8,
            busy_stops: 10,
            batches: 12,
        }
    );
}
