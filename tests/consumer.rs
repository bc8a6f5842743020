//! The consumer against the heap-backed ring and the model of the kernel producer: no root
//! needed. Every behaviour here is also checked against the real kernel in `kernel_*.rs`.

use std::ops::ControlFlow;
use std::sync::Arc;

use bpf_ringbuf::model::{HeapRing, KernelProducer, Wakeup};
use bpf_ringbuf::{Consumer, ReadError, Readiness, RingMemory};

fn ring(
    size: usize,
) -> (
    Arc<HeapRing>,
    KernelProducer<Arc<HeapRing>>,
    Consumer<Arc<HeapRing>>,
) {
    let ring = Arc::new(HeapRing::new(size).unwrap());
    // SAFETY: the only writer of this ring, whose one consumer publishes only past records it has finished reading.
    let producer = unsafe { KernelProducer::new(ring.clone()) }.unwrap();
    let consumer = Consumer::new(ring.clone()).unwrap();
    (ring, producer, consumer)
}

fn consumer_pos(ring: &HeapRing) -> usize {
    ring.consumer_pos()
        .load(std::sync::atomic::Ordering::SeqCst)
}

fn producer_pos(ring: &HeapRing) -> usize {
    ring.producer_pos()
        .load(std::sync::atomic::Ordering::SeqCst)
}

fn drain(consumer: &mut Consumer<Arc<HeapRing>>) -> Vec<Vec<u8>> {
    let batch = consumer.batch();
    batch.iter().map(|r| r.unwrap().to_vec()).collect()
}

#[test]
fn empty_ring_reads_nothing_and_publishes_nothing() {
    let (ring, _producer, mut consumer) = ring(4096);
    let batch = consumer.batch();
    assert!(batch.next_record().is_none());
    assert!(!batch.stopped_at_busy());
    drop(batch);
    assert_eq!(consumer_pos(&ring), 0);
    assert_eq!(consumer.read_owned().unwrap(), None);
    assert_eq!(consumer.available().unwrap(), 0);
}

#[test]
fn batch_lends_several_records_at_once_and_publishes_once() {
    let (ring, producer, mut consumer) = ring(4096);
    for i in 0..5u8 {
        producer
            .output(&vec![i; i as usize + 1], Wakeup::Adaptive)
            .unwrap();
    }
    let batch = consumer.batch();
    let first = batch.next_record().unwrap().unwrap();
    let rest: Vec<&[u8]> = batch.iter().map(Result::unwrap).collect();
    assert_eq!(first, &[0]);
    assert_eq!(rest, [&[1u8, 1][..], &[2; 3], &[3; 4], &[4; 5]]);
    // Nothing is published while the records are lent out.
    assert_eq!(consumer_pos(&ring), 0);
    assert_eq!(batch.consumed_bytes(), 16 * 5);
    batch.commit();
    assert_eq!(consumer_pos(&ring), 80);
    assert_eq!(consumer_pos(&ring), producer_pos(&ring));
}

#[test]
fn discarded_records_are_skipped_but_consumed() {
    let (ring, producer, mut consumer) = ring(4096);
    let a = producer.reserve(10).unwrap();
    let mut b = producer.reserve(3).unwrap();
    producer.payload(&mut b).copy_from_slice(b"xyz");
    producer.discard(a, Wakeup::Adaptive);
    producer.submit(b, Wakeup::Adaptive);
    let only_discard = producer.reserve(1).unwrap();
    producer.discard(only_discard, Wakeup::Adaptive);
    assert_eq!(drain(&mut consumer), vec![b"xyz".to_vec()]);
    assert_eq!(consumer_pos(&ring), 24 + 16 + 16);
}

#[test]
fn a_busy_record_stops_reading_and_is_never_published_past() {
    let (ring, producer, mut consumer) = ring(4096);
    producer.output(b"one", Wakeup::Adaptive).unwrap();
    let held = producer.reserve(8).unwrap();
    producer.output(b"three", Wakeup::Adaptive).unwrap();

    let batch = consumer.batch();
    assert_eq!(batch.next_record().unwrap().unwrap(), b"one");
    assert!(batch.next_record().is_none());
    assert!(batch.stopped_at_busy());
    drop(batch);
    assert_eq!(consumer_pos(&ring), held.position());
    assert_eq!(consumer.check_before_sleep(), Readiness::HeadBusy);

    // Still busy: nothing, and no movement.
    assert!(drain(&mut consumer).is_empty());
    assert_eq!(consumer_pos(&ring), held.position());

    producer.submit(held, Wakeup::Adaptive);
    assert_eq!(consumer.check_before_sleep(), Readiness::Readable);
    assert_eq!(drain(&mut consumer), vec![vec![0; 8], b"three".to_vec()]);
    assert_eq!(consumer_pos(&ring), producer_pos(&ring));
}

#[test]
fn out_of_order_commits_are_delivered_in_reservation_order() {
    let (_ring, producer, mut consumer) = ring(4096);
    let mut a = producer.reserve(1).unwrap();
    let mut b = producer.reserve(1).unwrap();
    let mut c = producer.reserve(1).unwrap();
    producer.payload(&mut a)[0] = b'a';
    producer.payload(&mut b)[0] = b'b';
    producer.payload(&mut c)[0] = b'c';
    producer.submit(c, Wakeup::Adaptive);
    producer.submit(b, Wakeup::Adaptive);
    assert!(drain(&mut consumer).is_empty());
    producer.submit(a, Wakeup::Adaptive);
    assert_eq!(
        drain(&mut consumer),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
}

#[test]
fn records_that_wrap_are_read_contiguously() {
    let (ring, producer, mut consumer) = ring(64);
    // 5 records of 8 bytes (16 each) leave the producer at 80 = offset 16 on the second lap.
    for round in 0..20u8 {
        let payload: Vec<u8> = (0..20).map(|i| i ^ round).collect();
        producer.output(&payload, Wakeup::Adaptive).unwrap();
        assert_eq!(drain(&mut consumer), vec![payload]);
    }
    assert_eq!(consumer_pos(&ring), 20 * 32);
}

#[test]
fn positions_wrap_around_usize_max() {
    let start = (usize::MAX - 100) & !7;
    let ring = Arc::new(HeapRing::starting_at(256, start).unwrap());
    // SAFETY: the only writer of this ring, whose one consumer publishes only past records it has finished reading.
    let producer = unsafe { KernelProducer::new(ring.clone()) }.unwrap();
    let mut consumer = Consumer::new(ring.clone()).unwrap();
    let mut expected = 0u32;
    for round in 0..50u32 {
        for k in 0..3u32 {
            let value = round * 3 + k;
            producer
                .output(
                    &value.to_le_bytes().repeat(k as usize + 1),
                    Wakeup::Adaptive,
                )
                .unwrap();
        }
        consumer
            .consume(usize::MAX, |record| {
                let value = u32::from_le_bytes(record[..4].try_into().unwrap());
                assert_eq!(value, expected);
                assert_eq!(record.len(), 4 * (value as usize % 3 + 1));
                expected += 1;
                ControlFlow::Continue(())
            })
            .unwrap();
    }
    assert_eq!(expected, 150);
    let end = consumer_pos(&ring);
    assert!(end < start, "positions wrapped: {end:#x}");
    assert_eq!(end, producer_pos(&ring));
}

#[test]
fn consumer_ahead_of_producer_is_an_error_then_resync_recovers() {
    let (ring, producer, mut consumer) = ring(4096);
    producer.output(b"before", Wakeup::Adaptive).unwrap();
    ring.consumer_pos()
        .store(4096 * 10, std::sync::atomic::Ordering::SeqCst);
    let err = consumer.batch().next_record().unwrap().unwrap_err();
    assert_eq!(
        err,
        ReadError::ConsumerAhead {
            consumer_pos: 40960,
            producer_pos: 16
        }
    );
    assert!(err.to_string().contains("consumer_pos"));
    assert_eq!(consumer.read_owned(), Err(err));
    assert!(consumer.available().is_err());
    assert_eq!(consumer.check_before_sleep(), Readiness::Readable);
    // The error did not move anything.
    assert_eq!(consumer_pos(&ring), 40960);

    consumer.resync();
    assert_eq!(consumer_pos(&ring), producer_pos(&ring));
    producer.output(b"after", Wakeup::Adaptive).unwrap();
    assert_eq!(drain(&mut consumer), vec![b"after".to_vec()]);
}

#[test]
fn consumer_far_behind_is_an_error() {
    let (ring, producer, mut consumer) = ring(4096);
    producer.output(b"x", Wakeup::Adaptive).unwrap();
    // More than a ring size behind the producer.
    ring.consumer_pos().store(
        16usize.wrapping_sub(8192),
        std::sync::atomic::Ordering::SeqCst,
    );
    assert!(matches!(
        consumer.batch().next_record(),
        Some(Err(ReadError::ConsumerAhead { .. }))
    ));
}

#[test]
fn misaligned_consumer_pos_is_an_error() {
    let (ring, producer, mut consumer) = ring(4096);
    producer.output(b"0123456789", Wakeup::Adaptive).unwrap();
    ring.consumer_pos()
        .store(3, std::sync::atomic::Ordering::SeqCst);
    let batch = consumer.batch();
    assert_eq!(
        batch.next_record(),
        Some(Err(ReadError::MisalignedPosition { consumer_pos: 3 }))
    );
    assert_eq!(batch.next_record(), None, "the error ends the batch");
    drop(batch);
    assert_eq!(consumer_pos(&ring), 3);
    let mut buf = [0; 64];
    assert_eq!(
        consumer.read_into(&mut buf),
        Err(ReadError::MisalignedPosition { consumer_pos: 3 })
    );
}

/// Rewrites the header at `position` (as a hostile process or a corrupt ring would).
fn corrupt_header(ring: &HeapRing, position: usize, raw: u32) {
    let offset = position & (ring.size() - 1);
    ring.header(offset)
        .store(raw, std::sync::atomic::Ordering::SeqCst);
}

#[test]
fn header_longer_than_the_data_produced_is_an_error_after_the_good_records() {
    let (ring, producer, mut consumer) = ring(4096);
    producer.output(b"good", Wakeup::Adaptive).unwrap();
    let bad = producer.reserve(8).unwrap();
    let bad_position = bad.position();
    producer.submit(bad, Wakeup::Adaptive);
    producer.output(b"after", Wakeup::Adaptive).unwrap();
    corrupt_header(&ring, bad_position, 1000);

    let batch = consumer.batch();
    assert_eq!(batch.next_record().unwrap().unwrap(), b"good");
    let err = batch.next_record().unwrap().unwrap_err();
    assert_eq!(
        err,
        ReadError::RecordOutOfBounds {
            position: bad_position,
            header: 1000,
            record_size: 1008,
            available: 32,
        }
    );
    assert!(batch.next_record().is_none());
    drop(batch);
    // The good record is consumed, the bad one is not skipped silently.
    assert_eq!(consumer_pos(&ring), bad_position);
    assert_eq!(
        consumer.consume(10, |_| ControlFlow::Continue(())),
        Err(err)
    );
    assert_eq!(consumer.resync(), 32);
    assert!(drain(&mut consumer).is_empty());
}

#[test]
fn header_longer_than_the_ring_is_an_error() {
    let (ring, producer, mut consumer) = ring(4096);
    producer.output(b"x", Wakeup::Adaptive).unwrap();
    for raw in [0x3fff_ffff, 4096, 4089, 0x4000_0000 | 5000] {
        corrupt_header(&ring, 0, raw);
        assert!(
            matches!(
                consumer.batch().next_record(),
                Some(Err(ReadError::RecordOutOfBounds { .. }))
            ),
            "header {raw:#x}"
        );
        assert_eq!(consumer_pos(&ring), 0);
    }
}

#[test]
fn read_into_a_small_buffer_loses_nothing() {
    let (ring, producer, mut consumer) = ring(4096);
    let discarded = producer.reserve(4).unwrap();
    producer.discard(discarded, Wakeup::Adaptive);
    producer.output(&[7; 100], Wakeup::Adaptive).unwrap();
    let mut small = [0; 99];
    assert_eq!(
        consumer.read_into(&mut small),
        Err(ReadError::BufferTooSmall {
            needed: 100,
            capacity: 99
        })
    );
    // The discarded record before it was consumed; the record itself was not.
    assert_eq!(consumer_pos(&ring), 16);
    let mut buf = [0; 128];
    assert_eq!(consumer.read_into(&mut buf), Ok(Some(100)));
    assert_eq!(&buf[..100], &[7; 100]);
    assert_eq!(consumer_pos(&ring), producer_pos(&ring));
}

#[test]
fn read_vec_reuses_its_buffer() {
    let (_ring, producer, mut consumer) = ring(4096);
    let mut buf = Vec::with_capacity(256);
    let allocation = buf.as_ptr();
    for i in 0..100u8 {
        producer
            .output(&vec![i; (i as usize % 200) + 1], Wakeup::Adaptive)
            .unwrap();
        assert!(consumer.read_vec(&mut buf).unwrap());
        assert_eq!(buf, vec![i; (i as usize % 200) + 1]);
        assert_eq!(buf.as_ptr(), allocation);
    }
    assert!(!consumer.read_vec(&mut buf).unwrap());
}

#[test]
fn consume_honours_budget_and_break() {
    let (ring, producer, mut consumer) = ring(4096);
    for i in 0..20u8 {
        producer.output(&[i], Wakeup::Adaptive).unwrap();
    }
    let mut seen = Vec::new();
    assert_eq!(
        consumer
            .consume(7, |r| {
                seen.push(r[0]);
                ControlFlow::Continue(())
            })
            .unwrap(),
        7
    );
    assert_eq!(consumer_pos(&ring), 7 * 16);
    assert_eq!(
        consumer
            .consume(usize::MAX, |r| {
                seen.push(r[0]);
                if r[0] == 9 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap(),
        3
    );
    // The record the callback broke on is consumed.
    assert_eq!(consumer_pos(&ring), 10 * 16);
    assert_eq!(consumer.consume(0, |_| unreachable!()).unwrap(), 0);
    assert_eq!(
        consumer
            .consume(usize::MAX, |r| {
                seen.push(r[0]);
                ControlFlow::Continue(())
            })
            .unwrap(),
        10
    );
    assert_eq!(seen, (0..20).collect::<Vec<u8>>());
}

#[test]
fn consume_reads_records_committed_while_it_runs() {
    let (_ring, producer, mut consumer) = ring(4096);
    producer.output(&[0], Wakeup::Adaptive).unwrap();
    let mut next = 1u8;
    let n = consumer
        .consume(usize::MAX, |_| {
            if next < 10 {
                producer.output(&[next], Wakeup::Adaptive).unwrap();
                next += 1;
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(n, 10);
}

#[test]
fn check_before_sleep_tells_empty_from_busy_from_readable() {
    let (_ring, producer, mut consumer) = ring(4096);
    assert_eq!(consumer.check_before_sleep(), Readiness::Empty);
    let held = producer.reserve(1).unwrap();
    assert_eq!(consumer.check_before_sleep(), Readiness::HeadBusy);
    producer.discard(held, Wakeup::Adaptive);
    assert_eq!(consumer.check_before_sleep(), Readiness::Readable);
    assert!(drain(&mut consumer).is_empty());
    assert_eq!(consumer.check_before_sleep(), Readiness::Empty);
}

#[test]
fn kernel_model_refuses_when_full_and_never_fills_the_ring_completely() {
    let (_ring, producer, mut consumer) = ring(4096);
    // A record as large as the ring can never be reserved: data + header would fill it to 100%.
    assert!(producer.reserve(4088).is_none());
    assert!(producer.reserve(4096).is_none());
    let big = producer.reserve(4080).unwrap();
    producer.submit(big, Wakeup::Adaptive);
    assert!(producer.reserve(0).is_none());
    assert_eq!(drain(&mut consumer).len(), 1);
    assert!(producer.reserve(0).is_some());
}

#[test]
fn kernel_model_does_not_reuse_space_of_a_busy_record() {
    // Even when a hostile writer moves consumer_pos past a BUSY record, pending_pos
    // (Linux 6.10+) keeps the producer from overwriting it.
    let (ring, producer, mut consumer) = ring(4096);
    let held = producer.reserve(1000).unwrap();
    consumer.resync();
    assert_eq!(consumer_pos(&ring), 1008);
    let mut filled = 0;
    while producer.output(&[1; 100], Wakeup::Never).is_some() {
        filled += 1;
    }
    assert!(
        filled < 30,
        "must stop before reaching the held record: {filled}"
    );
    producer.submit(held, Wakeup::Never);
}

#[test]
fn wakeups_follow_the_kernel_rule() {
    let (_ring, producer, mut consumer) = ring(4096);
    // Consumer caught up: the first commit at its position wakes, the next does not.
    assert_eq!(producer.output(b"a", Wakeup::Adaptive), Some(true));
    assert_eq!(producer.output(b"b", Wakeup::Adaptive), Some(false));
    assert_eq!(producer.output(b"c", Wakeup::Force), Some(true));
    assert_eq!(drain(&mut consumer).len(), 3);
    assert_eq!(producer.output(b"d", Wakeup::Never), Some(false));
    drain(&mut consumer);
    // Out of order: committing the later record does not wake; the head one does.
    let a = producer.reserve(1).unwrap();
    let b = producer.reserve(1).unwrap();
    assert!(!producer.submit(b, Wakeup::Adaptive));
    assert!(producer.submit(a, Wakeup::Adaptive));
    assert_eq!(producer.wakeups(), 3);
}

/// Deterministic pseudo-random numbers (xorshift), so the test needs no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }
}

#[test]
fn random_operations_match_a_queue_oracle() {
    use std::collections::VecDeque;
    for seed in 1..40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let size = 64 << rng.below(4);
        let start = if seed % 2 == 0 {
            0
        } else {
            usize::MAX - 8 * rng.below(64) - 7
        };
        let ring = Arc::new(HeapRing::starting_at(size, start & !7).unwrap());
        // SAFETY: the only writer of this ring, whose one consumer publishes only past records it has finished reading.
        let producer = unsafe { KernelProducer::new(ring.clone()) }.unwrap();
        let mut consumer = Consumer::new(ring.clone()).unwrap();
        // Outstanding reservations with the payload they will get, in reservation order.
        let mut outstanding: Vec<(bpf_ringbuf::model::Reservation, Vec<u8>, bool)> = Vec::new();
        // Committed-or-pending records in reservation order: Some(payload) or None (discard).
        let mut order: VecDeque<(usize, Option<Vec<u8>>)> = VecDeque::new();
        let mut committed = std::collections::HashSet::new();
        let mut serial = 0u32;
        for _ in 0..2000 {
            match rng.below(6) {
                0 | 1 => {
                    let len = rng.below(size as u64 / 3);
                    if let Some(mut r) = producer.reserve(len) {
                        serial += 1;
                        let payload: Vec<u8> =
                            (0..len).map(|i| (serial as usize + i) as u8).collect();
                        producer.payload(&mut r).copy_from_slice(&payload);
                        let discard = rng.below(4) == 0;
                        order.push_back((r.position(), (!discard).then(|| payload.clone())));
                        outstanding.push((r, payload, discard));
                    }
                }
                2 | 3 if !outstanding.is_empty() => {
                    let i = rng.below(outstanding.len() as u64);
                    let (r, _, discard) = outstanding.remove(i);
                    committed.insert(r.position());
                    if discard {
                        producer.discard(r, Wakeup::Adaptive);
                    } else {
                        producer.submit(r, Wakeup::Adaptive);
                    }
                }
                _ => {
                    let mut expected = Vec::new();
                    while let Some((position, payload)) = order.front() {
                        if !committed.contains(position) {
                            break;
                        }
                        if let Some(p) = payload {
                            expected.push(p.clone());
                        }
                        order.pop_front();
                    }
                    let got = match rng.below(3) {
                        0 => drain(&mut consumer),
                        1 => {
                            let mut got = Vec::new();
                            while let Some(r) = consumer.read_owned().unwrap() {
                                got.push(r);
                            }
                            got
                        }
                        _ => {
                            let mut got = Vec::new();
                            while consumer
                                .consume(1 + rng.below(3), |r| {
                                    got.push(r.to_vec());
                                    ControlFlow::Continue(())
                                })
                                .unwrap()
                                > 0
                            {}
                            got
                        }
                    };
                    assert_eq!(got, expected, "seed {seed}");
                }
            }
        }
    }
}

#[test]
fn two_producer_threads_lose_nothing_and_keep_each_order() {
    let ring = Arc::new(HeapRing::new(4096).unwrap());
    // SAFETY: the only writer of this ring, whose one consumer publishes only past records it has finished reading.
    let producer = Arc::new(unsafe { KernelProducer::new(ring.clone()) }.unwrap());
    let mut consumer = Consumer::new(ring.clone()).unwrap();
    const PER_THREAD: u32 = 20_000;
    let threads: Vec<_> = (0..2u32)
        .map(|id| {
            let producer = producer.clone();
            std::thread::spawn(move || {
                for seq in 0..PER_THREAD {
                    let mut payload = [0u8; 12];
                    payload[..4].copy_from_slice(&id.to_le_bytes());
                    payload[4..8].copy_from_slice(&seq.to_le_bytes());
                    payload[8..].copy_from_slice(&(id ^ seq).to_le_bytes());
                    while producer
                        .output(&payload[..8 + 4 * (seq as usize % 2)], Wakeup::Never)
                        .is_none()
                    {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let mut next = [0u32; 2];
    while next != [PER_THREAD; 2] {
        consumer
            .consume(usize::MAX, |record| {
                let id = u32::from_le_bytes(record[..4].try_into().unwrap());
                let seq = u32::from_le_bytes(record[4..8].try_into().unwrap());
                assert_eq!(seq, next[id as usize], "producer {id} out of order");
                assert_eq!(record.len(), 8 + 4 * (seq as usize % 2));
                if record.len() == 12 {
                    assert_eq!(
                        u32::from_le_bytes(record[8..].try_into().unwrap()),
                        id ^ seq
                    );
                }
                next[id as usize] += 1;
                ControlFlow::Continue(())
            })
            .unwrap();
        std::thread::yield_now();
    }
    for t in threads {
        t.join().unwrap();
    }
}
