//! The consumer against the heap-backed ring and the model of the kernel producer: no root
//! needed. Every behaviour here is also checked against the real kernel in `tests/kernel`.

use std::ops::ControlFlow;
use std::sync::Arc;

use bpf_ringbuf::model::{HeapRing, KernelProducer, Wakeup};
use bpf_ringbuf::{Consumer, ReadError, Readiness, RingMemory};

type Ring = (
    Arc<HeapRing>,
    KernelProducer<Arc<HeapRing>>,
    Consumer<Arc<HeapRing>>,
);

/// A model ring split into its two endpoints, and the ring itself for looking at it.
fn split(ring: HeapRing) -> Ring {
    let (producer, consumer) = ring.split();
    (consumer.memory().clone(), producer, consumer)
}

fn ring(size: usize) -> Ring {
    split(HeapRing::new(size).unwrap())
}

fn consumer_pos(ring: &HeapRing) -> usize {
    ring.consumer_pos().load_acquire()
}

fn producer_pos(ring: &HeapRing) -> usize {
    ring.producer_pos().load_acquire()
}

/// Writes `consumer_pos` behind the consumer's back, as another process holding the map
/// could.
fn scribble_consumer_pos(ring: &HeapRing, value: usize) {
    // SAFETY: no batch is alive while a test calls this, and the tests recover (or keep
    // failing reads) before producing into space the store handed back.
    unsafe { ring.store_consumer_pos(value) }
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
    b.write(b"xyz");
    a.discard(Wakeup::Adaptive);
    b.submit(Wakeup::Adaptive);
    let only_discard = producer.reserve(1).unwrap();
    only_discard.discard(Wakeup::Adaptive);
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

    held.submit(Wakeup::Adaptive);
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
    a.write(b"a");
    b.write(b"b");
    c.write(b"c");
    c.submit(Wakeup::Adaptive);
    b.submit(Wakeup::Adaptive);
    assert!(drain(&mut consumer).is_empty());
    a.submit(Wakeup::Adaptive);
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
    let (ring, producer, mut consumer) = split(HeapRing::starting_at(256, start).unwrap());
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
fn a_moved_consumer_pos_is_reported_and_nothing_moves() {
    let (ring, producer, mut consumer) = ring(4096);
    producer.output(b"before", Wakeup::Adaptive).unwrap();
    scribble_consumer_pos(&ring, 4096 * 10);
    let moved = ReadError::ConsumerPosMoved {
        expected: 0,
        found: 40960,
    };
    assert_eq!(consumer.batch().next_record(), Some(Err(moved)));
    assert!(moved.to_string().contains("another writer"), "{moved}");
    assert_eq!(consumer.read_owned(), Err(moved));
    assert_eq!(consumer.available(), Err(moved));
    assert_eq!(
        consumer.consume(10, |_| ControlFlow::Continue(())),
        Err(moved)
    );
    assert_eq!(consumer.check_before_sleep(), Readiness::Readable);
    // The error did not move anything, the shared word nor the cursor.
    assert_eq!(consumer_pos(&ring), 40960);
    assert_eq!(consumer.cursor(), 0);
}

#[test]
fn resume_continues_from_the_own_cursor_and_loses_nothing() {
    let (ring, producer, mut consumer) = ring(4096);
    producer.output(b"one", Wakeup::Adaptive).unwrap();
    assert_eq!(drain(&mut consumer), vec![b"one".to_vec()]);
    producer.output(b"two", Wakeup::Adaptive).unwrap();
    producer.output(b"three", Wakeup::Adaptive).unwrap();
    // A forward jump over the unread records: without the own cursor they would be lost
    // silently.
    scribble_consumer_pos(&ring, producer_pos(&ring));
    assert_eq!(
        consumer.read_owned(),
        Err(ReadError::ConsumerPosMoved {
            expected: 16,
            found: 48
        })
    );
    consumer.resume().unwrap();
    assert_eq!(consumer_pos(&ring), 16);
    producer.output(b"four", Wakeup::Adaptive).unwrap();
    assert_eq!(
        drain(&mut consumer),
        vec![b"two".to_vec(), b"three".to_vec(), b"four".to_vec()]
    );
}

#[test]
fn resume_refuses_once_the_producer_may_have_reused_the_space() {
    let (ring, producer, mut consumer) = ring(64);
    producer.output(&[1; 8], Wakeup::Adaptive).unwrap();
    // The other writer hands the space back; the producer laps our cursor.
    scribble_consumer_pos(&ring, 32);
    for _ in 0..4 {
        producer.output(&[2; 8], Wakeup::Adaptive).unwrap();
    }
    assert!(matches!(
        consumer.read_owned(),
        Err(ReadError::ConsumerPosMoved {
            expected: 0,
            found: 32
        })
    ));
    assert_eq!(
        consumer.resume(),
        Err(ReadError::ConsumerAhead {
            consumer_pos: 0,
            producer_pos: 80
        })
    );
    assert_eq!(consumer.resync(), 64);
    assert!(drain(&mut consumer).is_empty());
}

#[test]
fn follow_adopts_the_other_writers_position() {
    let (ring, producer, mut consumer) = ring(4096);
    for record in [&b"a"[..], b"b", b"c"] {
        producer.output(record, Wakeup::Adaptive).unwrap();
    }
    // Another reader took "a" and published past it.
    scribble_consumer_pos(&ring, 16);
    assert!(consumer.read_owned().is_err());
    consumer.follow();
    assert_eq!(consumer.cursor(), 16);
    assert_eq!(drain(&mut consumer), vec![b"b".to_vec(), b"c".to_vec()]);
}

#[test]
fn a_write_during_a_batch_is_not_overwritten_silently() {
    let (ring, producer, mut consumer) = ring(4096);
    producer.output(b"one", Wakeup::Adaptive).unwrap();
    producer.output(b"two", Wakeup::Adaptive).unwrap();
    let batch = consumer.batch();
    assert_eq!(batch.next_record().unwrap().unwrap(), b"one");
    // Nothing is written while the batch lends "one"; the store only changes the word.
    scribble_consumer_pos(&ring, 32);
    drop(batch);
    // The batch's publish saw the word changed and left it: the next read reports it.
    assert_eq!(consumer_pos(&ring), 32);
    assert_eq!(
        consumer.read_owned(),
        Err(ReadError::ConsumerPosMoved {
            expected: 16,
            found: 32
        })
    );
    consumer.resume().unwrap();
    assert_eq!(drain(&mut consumer), vec![b"two".to_vec()]);
}

#[test]
fn consumer_ahead_of_producer_is_an_error_then_resync_recovers() {
    let (ring, producer, mut consumer) = ring(4096);
    producer.output(b"before", Wakeup::Adaptive).unwrap();
    scribble_consumer_pos(&ring, 4096 * 10);
    consumer.follow();
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

    assert_eq!(consumer.resync(), 4096, "capped at the ring size");
    assert_eq!(consumer_pos(&ring), producer_pos(&ring));
    producer.output(b"after", Wakeup::Adaptive).unwrap();
    assert_eq!(drain(&mut consumer), vec![b"after".to_vec()]);
}

#[test]
fn a_ring_opened_with_a_corrupt_consumer_pos_reports_it() {
    // A fresh reader adopts what it finds; an impossible position is reported, not read.
    let data = [0u8; 8];
    let (_ring, _producer, mut consumer) =
        split(HeapRing::from_parts(4096, &data, 16usize.wrapping_sub(8192), 16).unwrap());
    assert!(matches!(
        consumer.batch().next_record(),
        Some(Err(ReadError::ConsumerAhead { .. }))
    ));
}

#[test]
fn consumer_far_behind_is_an_error() {
    let (ring, producer, mut consumer) = ring(4096);
    producer.output(b"x", Wakeup::Adaptive).unwrap();
    // More than a ring size behind the producer.
    scribble_consumer_pos(&ring, 16usize.wrapping_sub(8192));
    consumer.follow();
    assert!(matches!(
        consumer.batch().next_record(),
        Some(Err(ReadError::ConsumerAhead { .. }))
    ));
}

#[test]
fn misaligned_consumer_pos_is_an_error() {
    let (ring, producer, mut consumer) = ring(4096);
    producer.output(b"0123456789", Wakeup::Adaptive).unwrap();
    scribble_consumer_pos(&ring, 3);
    consumer.follow();
    let batch = consumer.batch();
    assert_eq!(
        batch.next_record(),
        Some(Err(ReadError::MisalignedPosition { position: 3 }))
    );
    assert_eq!(batch.next_record(), None, "the error ends the batch");
    drop(batch);
    assert_eq!(consumer_pos(&ring), 3);
    let mut buf = [0; 64];
    assert_eq!(
        consumer.read_into(&mut buf),
        Err(ReadError::MisalignedPosition { position: 3 })
    );
}

/// Rewrites the header at `position` (as a hostile process or a corrupt ring would).
fn corrupt_header(ring: &HeapRing, position: usize, raw: u32) {
    let offset = position & (ring.size() - 1);
    // SAFETY: no batch or reservation covering the word is alive when the tests call this.
    unsafe { ring.store_header(offset, raw) }
}

#[test]
fn a_busy_header_that_does_not_fit_is_corruption_not_a_wait() {
    // Payload bytes with bit 31 set under a moved consumer_pos read as a BUSY header claiming
    // more than the ring holds: reported, not waited on forever.
    let (ring, producer, mut consumer) = ring(4096);
    producer.output(&[0xe1; 64], Wakeup::Adaptive).unwrap();
    scribble_consumer_pos(&ring, 8);
    consumer.follow();
    let err = consumer.batch().next_record().unwrap().unwrap_err();
    assert_eq!(
        err,
        ReadError::RecordOutOfBounds {
            position: 8,
            header: 0xe1e1_e1e1,
            record_size: bpf_ringbuf::header::record_size(0xe1e1_e1e1 & 0x3fff_ffff),
            available: 64,
        }
    );
    assert_eq!(consumer.check_before_sleep(), Readiness::Readable);
    let mut buf = [0; 128];
    assert_eq!(consumer.read_into(&mut buf), Err(err));
    assert_eq!(consumer.consume(1, |_| ControlFlow::Continue(())), Err(err));
    // A BUSY header that fits is a reservation: waited for, as before.
    corrupt_header(&ring, 8, 0x8000_0010);
    assert!(consumer.batch().next_record().is_none());
    assert_eq!(consumer.check_before_sleep(), Readiness::HeadBusy);
}

#[test]
fn header_longer_than_the_data_produced_is_an_error_after_the_good_records() {
    let (ring, producer, mut consumer) = ring(4096);
    producer.output(b"good", Wakeup::Adaptive).unwrap();
    let bad = producer.reserve(8).unwrap();
    let bad_position = bad.position();
    bad.submit(Wakeup::Adaptive);
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
    discarded.discard(Wakeup::Adaptive);
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
    held.discard(Wakeup::Adaptive);
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
    big.submit(Wakeup::Adaptive);
    assert!(producer.reserve(0).is_none());
    assert_eq!(drain(&mut consumer).len(), 1);
    producer.reserve(0).unwrap().submit(Wakeup::Never);
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
    held.submit(Wakeup::Never);
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
    assert!(!b.submit(Wakeup::Adaptive));
    assert!(a.submit(Wakeup::Adaptive));
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
    // Miri interprets every step: fewer, shorter runs there (the same code paths).
    let (seeds, steps): (u64, usize) = if cfg!(miri) { (6, 300) } else { (40, 2000) };
    for seed in 1..seeds {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let size = 64 << rng.below(4);
        let start = if seed % 2 == 0 {
            0
        } else {
            usize::MAX - 8 * rng.below(64) - 7
        };
        let (_ring, producer, mut consumer) =
            split(HeapRing::starting_at(size, start & !7).unwrap());
        // Outstanding reservations with the payload they will get, in reservation order.
        let mut outstanding: Vec<(bpf_ringbuf::model::Reservation<'_, _>, Vec<u8>, bool)> =
            Vec::new();
        // Committed-or-pending records in reservation order: Some(payload) or None (discard).
        let mut order: VecDeque<(usize, Option<Vec<u8>>)> = VecDeque::new();
        let mut committed = std::collections::HashSet::new();
        let mut serial = 0u32;
        for _ in 0..steps {
            match rng.below(6) {
                0 | 1 => {
                    let len = rng.below(size as u64 / 3);
                    if let Some(mut r) = producer.reserve(len) {
                        serial += 1;
                        let payload: Vec<u8> =
                            (0..len).map(|i| (serial as usize + i) as u8).collect();
                        r.write(&payload);
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
                        r.discard(Wakeup::Adaptive);
                    } else {
                        r.submit(Wakeup::Adaptive);
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
    let (producer, mut consumer) = HeapRing::new(4096).unwrap().split();
    let producer = Arc::new(producer);
    // Under miri the interleavings are explored by its scheduler; fewer records suffice.
    const PER_THREAD: u32 = if cfg!(miri) { 300 } else { 20_000 };
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
