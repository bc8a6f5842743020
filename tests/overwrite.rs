//! Overwrite mode (flight recorder) on the heap ring with the kernel-producer model in
//! overwrite mode. The same scenarios run against Linux 7.2 in `kernel_overwrite.rs`.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bpf_ringbuf::model::{HeapRing, KernelProducer, Wakeup};
use bpf_ringbuf::{OverwriteConsumer, OverwriteMemory, ReadError, RingMemory};

fn ring(
    size: usize,
) -> (
    Arc<HeapRing>,
    KernelProducer<Arc<HeapRing>>,
    OverwriteConsumer<Arc<HeapRing>>,
) {
    let ring = Arc::new(HeapRing::new(size).unwrap());
    // SAFETY: the only writer of this ring; its one reader publishes only what it has read, and payloads written while it may run go through output_atomic.
    let producer = unsafe { KernelProducer::new_overwrite(ring.clone()) }.unwrap();
    let reader = OverwriteConsumer::new(ring.clone()).unwrap();
    (ring, producer, reader)
}

/// The kernel selftest's `ringbuf_overwrite_mode` scenario (prog_tests/ringbuf.c).
#[test]
fn selftest_scenario_positions_and_contents() {
    let size = 4096;
    let (ring, producer, mut reader) = ring(size);
    let (len1, len2) = (size / 2, size / 4);
    let len3 = size - len1 - len2 - 8 * 3;
    let len4 = len3 - 8;
    let mut rec1 = producer.reserve(len1).expect("reserve 1");
    let mut rec2 = producer.reserve(len2).expect("reserve 2");
    // Uncommitted records fill the ring: even overwrite mode refuses.
    assert!(producer.reserve(len3).is_none(), "reserve 3 must fail");
    let mut rec4 = producer.reserve(len4).expect("reserve 4");
    producer.payload(&mut rec1).fill(0xaa);
    producer.payload(&mut rec2).fill(0xbb);
    producer.payload(&mut rec4).fill(0xcc);
    producer.submit(rec1, Wakeup::Adaptive);
    producer.submit(rec2, Wakeup::Adaptive);
    producer.submit(rec4, Wakeup::Adaptive);
    let mut rec5 = producer
        .reserve(len3)
        .expect("reserve 5 overwrites record 1");
    producer.payload(&mut rec5).fill(0xdd);
    producer.submit(rec5, Wakeup::Adaptive);

    let producer_pos = ring.producer_pos().load(Ordering::SeqCst);
    assert_eq!(producer_pos, len1 + len2 + len4 + len3 + 4 * 8);
    assert_eq!(ring.overwrite_pos().load(Ordering::SeqCst), len1 + 8);
    assert_eq!(reader.available().unwrap(), len2 + len4 + len3 + 3 * 8);

    let records = reader.snapshot_vec().unwrap();
    assert_eq!(
        records,
        vec![vec![0xbb; len2], vec![0xcc; len4], vec![0xdd; len3]]
    );
    // The snapshot consumed nothing; a streaming read skips the overwritten record.
    let mut buf = vec![0; size];
    assert_eq!(reader.read_into(&mut buf).unwrap(), Some(len2));
    assert_eq!(reader.stats().lost_bytes, (len1 + 8) as u64);
    assert_eq!(reader.stats().torn_records, 0);
}

#[test]
fn burst_of_ten_ring_sizes_leaves_exactly_the_newest_records() {
    let size = 4096;
    let (_ring, producer, mut reader) = ring(size);
    let record = 48; // 40-byte payload
    let total = 10 * size / record;
    for sequence in 0..total as u32 {
        let mut payload = [0u8; 40];
        payload[..4].copy_from_slice(&sequence.to_le_bytes());
        payload[4..].fill(sequence as u8);
        producer
            .output(&payload, Wakeup::Never)
            .expect("overwrite mode never refuses");
    }
    let records = reader.snapshot_vec().unwrap();
    // The ring keeps at most size - 1 bytes (the kernel's `> mask` rule): 85 records of 48.
    assert_eq!(records.len(), (size - 1) / record);
    let first = total - records.len();
    for (i, record) in records.iter().enumerate() {
        let sequence = u32::from_le_bytes(record[..4].try_into().unwrap());
        assert_eq!(sequence as usize, first + i, "oldest first, no gaps");
        assert!(record[4..].iter().all(|&b| b == sequence as u8));
    }
}

#[test]
fn streaming_reader_counts_what_was_overwritten() {
    let size = 1024;
    let (_ring, producer, mut reader) = ring(size);
    let mut buf = [0u8; 64];
    let mut delivered = Vec::new();
    let mut produced = 0u32;
    for round in 0..20u32 {
        // Sometimes less than a ring, sometimes several laps between reads.
        let burst = [3, 30, 100, 7][round as usize % 4];
        for _ in 0..burst {
            producer
                .output(&produced.to_le_bytes().repeat(6), Wakeup::Never)
                .unwrap();
            produced += 1;
        }
        let take = [usize::MAX, 2][round as usize % 2];
        for _ in 0..take {
            match reader.read_into(&mut buf).unwrap() {
                Some(len) => {
                    assert_eq!(len, 24);
                    let sequence = u32::from_le_bytes(buf[..4].try_into().unwrap());
                    assert!(buf[..24].chunks(4).all(|c| c == sequence.to_le_bytes()));
                    delivered.push(sequence);
                }
                None => break,
            }
        }
    }
    while reader.read_into(&mut buf).unwrap().is_some() {
        delivered.push(u32::from_le_bytes(buf[..4].try_into().unwrap()));
    }
    assert!(
        delivered.windows(2).all(|w| w[0] < w[1]),
        "in order, each once"
    );
    let stats = reader.stats();
    // Uniform 32-byte records: lost bytes are exactly the records never delivered.
    assert_eq!(stats.lost_bytes % 32, 0);
    assert_eq!(
        delivered.len() as u64 + stats.lost_bytes / 32,
        u64::from(produced)
    );
    assert_eq!(stats.records, delivered.len() as u64);
    assert_eq!(
        *delivered.last().unwrap(),
        produced - 1,
        "the newest record is never lost"
    );
}

#[test]
fn busy_record_stops_the_reader_and_a_small_buffer_loses_nothing() {
    let (_ring, producer, mut reader) = ring(256);
    producer.output(&[1; 20], Wakeup::Never).unwrap();
    let held = producer.reserve(8).unwrap();
    producer.output(&[3; 8], Wakeup::Never).unwrap();
    let mut small = [0u8; 10];
    assert_eq!(
        reader.read_into(&mut small),
        Err(ReadError::BufferTooSmall {
            needed: 20,
            capacity: 10
        })
    );
    let mut buf = [0u8; 64];
    assert_eq!(reader.read_into(&mut buf).unwrap(), Some(20));
    assert_eq!(
        reader.read_into(&mut buf).unwrap(),
        None,
        "BUSY record stops reading"
    );
    assert!(!reader.check_before_sleep());
    assert_eq!(reader.snapshot_vec().unwrap(), vec![vec![1u8; 20]]);
    producer.submit(held, Wakeup::Never);
    assert!(reader.check_before_sleep());
    assert_eq!(
        reader
            .consume(&mut buf, 10, |_| ControlFlow::Continue(()))
            .unwrap(),
        2
    );
}

#[test]
fn a_corrupt_header_that_was_not_overwritten_is_an_error() {
    let (ring, producer, mut reader) = ring(256);
    producer.output(&[1; 8], Wakeup::Never).unwrap();
    ring.header(0).store(200, Ordering::SeqCst);
    let mut buf = [0u8; 256];
    assert!(matches!(
        reader.read_into(&mut buf),
        Err(ReadError::RecordOutOfBounds { position: 0, .. })
    ));
    assert_eq!(ring.consumer_pos().load(Ordering::SeqCst), 0);
    // (The kernel's own bookkeeping trusts its headers: restore it before producing more.)
    ring.header(0).store(8, Ordering::SeqCst);
    // A consumer_pos ahead of the producer is an error too; resync recovers.
    ring.consumer_pos().store(1 << 20, Ordering::SeqCst);
    assert!(matches!(
        reader.read_into(&mut buf),
        Err(ReadError::ConsumerAhead { .. })
    ));
    reader.resync();
    producer.output(&[2; 8], Wakeup::Never).unwrap();
    assert_eq!(reader.read_into(&mut buf).unwrap(), Some(8));
    assert_eq!(&buf[..8], &[2; 8]);
}

#[test]
fn positions_wrap_around_usize_max_in_overwrite_mode() {
    let start = (usize::MAX - 300) & !7;
    let ring = Arc::new(HeapRing::starting_at(256, start).unwrap());
    // SAFETY: the only writer of this ring; its one reader publishes only what it has read, and payloads written while it may run go through output_atomic.
    let producer = unsafe { KernelProducer::new_overwrite(ring.clone()) }.unwrap();
    let mut reader = OverwriteConsumer::new(ring.clone()).unwrap();
    for i in 0..100u32 {
        producer.output(&i.to_le_bytes(), Wakeup::Never).unwrap();
    }
    let records = reader.snapshot_vec().unwrap();
    let sequences: Vec<u32> = records
        .iter()
        .map(|r| u32::from_le_bytes(r[..4].try_into().unwrap()))
        .collect();
    assert_eq!(
        sequences,
        (100 - sequences.len() as u32..100).collect::<Vec<_>>()
    );
    assert_eq!(sequences.len(), 255 / 16);
    assert!(
        ring.producer_pos().load(Ordering::SeqCst) < start,
        "positions wrapped"
    );
}

/// A producer lapping a concurrent reader: no torn record is ever delivered, and what was
/// delivered plus what was counted lost is everything produced.
#[test]
fn reader_racing_a_lapping_producer_never_delivers_a_torn_record() {
    let ring = Arc::new(HeapRing::new(512).unwrap());
    // SAFETY: the only writer of this ring; its one reader publishes only what it has read, and payloads written while it may run go through output_atomic.
    let producer = unsafe { KernelProducer::new_overwrite(ring.clone()) }.unwrap();
    let mut reader = OverwriteConsumer::new(ring.clone()).unwrap();
    const RECORDS: u32 = 200_000;
    let writer = std::thread::spawn(move || {
        for sequence in 0..RECORDS {
            // Every word of a record carries its sequence number: a torn copy mixes two.
            let payload = sequence.to_le_bytes().repeat(14);
            producer.output_atomic(&payload, Wakeup::Never).unwrap();
        }
    });
    let mut buf = [0u8; 64];
    let mut delivered = 0u64;
    let mut last = None;
    loop {
        let finished = writer.is_finished();
        while let Some(len) = reader.read_into(&mut buf).unwrap() {
            assert_eq!(len, 56);
            let sequence = u32::from_le_bytes(buf[..4].try_into().unwrap());
            assert!(
                buf[..56].chunks(4).all(|c| c == sequence.to_le_bytes()),
                "torn record delivered: {:?}",
                &buf[..56]
            );
            assert!(last.is_none_or(|l| sequence > l), "out of order");
            last = Some(sequence);
            delivered += 1;
        }
        if finished {
            break;
        }
    }
    writer.join().unwrap();
    let stats = reader.stats();
    assert_eq!(stats.records, delivered);
    assert_eq!(stats.lost_bytes % 64, 0, "{stats:?}");
    assert_eq!(
        delivered + stats.lost_bytes / 64,
        u64::from(RECORDS),
        "{stats:?}"
    );
    assert_eq!(last, Some(RECORDS - 1));
}

#[test]
fn a_lapped_reader_publishes_where_it_resumes_before_sleeping() {
    // The kernel wakes a sleeper only for the record at consumer_pos: a reader left behind
    // overwrite_pos must move consumer_pos up before it sleeps, or no wakeup would ever come.
    let (ring, producer, mut reader) = ring(256);
    for i in 0..40u8 {
        producer.output(&[i; 8], Wakeup::Never).unwrap();
    }
    let mut buf = [0u8; 8];
    while reader.read_into(&mut buf).unwrap().is_some() {}
    for i in 0..40u8 {
        producer.output(&[i; 8], Wakeup::Never).unwrap();
    }
    assert!(reader.check_before_sleep(), "records are waiting");
    assert_eq!(
        ring.consumer_pos().load(Ordering::SeqCst),
        ring.overwrite_pos().load(Ordering::SeqCst),
        "consumer_pos moved up to overwrite_pos"
    );
    while reader.read_into(&mut buf).unwrap().is_some() {}
    assert!(!reader.check_before_sleep());
    // Caught up: the next commit is at consumer_pos, so the kernel's rule wakes us.
    assert_eq!(producer.output(&[1; 8], Wakeup::Adaptive), Some(true));
}
