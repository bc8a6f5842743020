//! The USER_RINGBUF producer against the heap-backed ring and the model of the kernel's drain
//! (`bpf_user_ringbuf_drain`): no root needed. The same scenarios run against the real kernel
//! in `tests/kernel/user_ringbuf.rs`.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;

use bpf_ringbuf::header::{record_size, RecordHeader, BUSY_BIT, DISCARD_BIT};
use bpf_ringbuf::model::{DrainError, HeapRing, KernelDrain, Wakeup};
use bpf_ringbuf::producer::{MAX_SAMPLES_PER_DRAIN, MAX_SAMPLE_LEN};
use bpf_ringbuf::{Producer, ReserveError, RingMemory};

type Ring = Arc<HeapRing>;

fn setup(size: usize) -> (Ring, Producer<Ring>, KernelDrain<Ring>) {
    setup_at(size, 0)
}

fn setup_at(size: usize, position: usize) -> (Ring, Producer<Ring>, KernelDrain<Ring>) {
    let (producer, drain) = HeapRing::starting_at(size, position).unwrap().split_user();
    (producer.memory().clone(), producer, drain)
}

fn header(ring: &HeapRing, position: usize) -> RecordHeader {
    RecordHeader::from_raw(ring.header(position & (ring.size() - 1)).load_acquire())
}

fn consumer_pos(ring: &HeapRing) -> usize {
    ring.consumer_pos().load_acquire()
}

fn producer_pos(ring: &HeapRing) -> usize {
    ring.producer_pos().load_acquire()
}

/// Drains everything the model's kernel would deliver now.
fn drain_all(drain: &KernelDrain<Ring>) -> Result<Vec<Vec<u8>>, DrainError> {
    let mut out = Vec::new();
    drain.drain(Wakeup::Adaptive, |sample| {
        out.push(sample.to_vec());
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

fn bytes(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seed * 37 + i * 11 + 5) as u8).collect()
}

#[test]
fn producer_is_send_and_kernel_limits_match_the_uapi() {
    fn send<T: Send>() {}
    send::<Producer<HeapRing>>();
    send::<Producer<Arc<HeapRing>>>();
    assert_eq!(MAX_SAMPLE_LEN, 0xff_ffff);
    assert_eq!(MAX_SAMPLES_PER_DRAIN, 131_072);
}

#[test]
fn reserve_writes_a_busy_header_then_publishes_and_commit_clears_busy() {
    let (ring, producer, _drain) = setup(4096);
    let mut first = producer.reserve(5).unwrap();
    assert_eq!(first.position(), 0);
    assert_eq!(first.len(), 5);
    assert_eq!(header(&ring, 0).raw(), BUSY_BIT | 5);
    assert_eq!(producer_pos(&ring), 16);
    first.copy_from_slice(b"abcde");
    let second = producer.reserve(9).unwrap();
    assert_eq!(second.position(), 16);
    assert_eq!(producer_pos(&ring), 16 + 24);
    first.submit();
    assert_eq!(header(&ring, 0).raw(), 5);
    second.discard();
    assert_eq!(header(&ring, 16).raw(), DISCARD_BIT | 9);
    let third = producer.reserve(0).unwrap();
    drop(third);
    assert_eq!(header(&ring, 40).raw(), DISCARD_BIT, "dropping discards");
    let positions = producer.positions();
    assert_eq!((positions.consumer, positions.producer), (0, 48));
    assert_eq!(producer.free_space().unwrap(), 4096 - 48);
}

#[test]
fn outstanding_reservations_commit_in_any_order_and_drain_in_reservation_order() {
    let (ring, producer, drain) = setup(4096);
    let mut a = producer.reserve(3).unwrap();
    let mut b = producer.reserve(4).unwrap();
    let mut c = producer.reserve(5).unwrap();
    a.copy_from_slice(b"aaa");
    b.copy_from_slice(b"bbbb");
    c.copy_from_slice(b"ccccc");
    c.submit();
    b.submit();
    // `a` is BUSY at the head: the kernel stops there, without error.
    assert_eq!(drain_all(&drain).unwrap(), Vec::<Vec<u8>>::new());
    assert_eq!(consumer_pos(&ring), 0);
    a.submit();
    assert_eq!(
        drain_all(&drain).unwrap(),
        [b"aaa".to_vec(), b"bbbb".to_vec(), b"ccccc".to_vec()]
    );
    assert_eq!(consumer_pos(&ring), producer_pos(&ring));

    // A BUSY record in the middle holds back the ones after it.
    producer.output(b"one").unwrap();
    let held = producer.reserve(1).unwrap();
    producer.output(b"three").unwrap();
    assert_eq!(drain_all(&drain).unwrap(), [b"one".to_vec()]);
    held.discard();
    assert_eq!(drain_all(&drain).unwrap(), [b"three".to_vec()]);
}

#[test]
fn sizes_the_kernel_would_reject_are_refused_up_front() {
    let (ring, producer, _drain) = setup(64);
    assert_eq!(producer.max_len(), 56);
    assert_eq!(
        producer.reserve(57).unwrap_err(),
        ReserveError::TooLarge {
            len: 57,
            max_len: 56
        }
    );
    // Lengths with the BUSY or DISCARD bit set, or beyond u32, never reach a header.
    for len in [
        DISCARD_BIT as usize,
        BUSY_BIT as usize | 8,
        usize::MAX,
        MAX_SAMPLE_LEN + 1,
    ] {
        assert!(matches!(
            producer.reserve(len),
            Err(ReserveError::TooLarge { .. })
        ));
    }
    assert_eq!(producer_pos(&ring), 0);
    // A full-size sample fills the ring exactly.
    let full = producer.reserve(56).unwrap();
    assert_eq!(producer.free_space().unwrap(), 0);
    assert_eq!(
        producer.reserve(0).unwrap_err(),
        ReserveError::NoSpace {
            needed: 8,
            available: 0
        }
    );
    full.submit();

    // In a ring larger than a dynptr can describe, the dynptr limit applies.
    let big = HeapRing::new(1 << 25).unwrap();
    // SAFETY: the only producer of this ring; its drain publishes only past samples it has finished reading.
    let producer = unsafe { Producer::new(&big) }.unwrap();
    assert_eq!(producer.max_len(), MAX_SAMPLE_LEN);
    assert!(matches!(
        producer.reserve(MAX_SAMPLE_LEN + 1),
        Err(ReserveError::TooLarge { .. })
    ));
    producer.reserve(MAX_SAMPLE_LEN).unwrap().submit();
}

#[test]
fn no_space_reports_what_is_needed_and_writes_nothing() {
    let (ring, producer, drain) = setup(128);
    producer.output(&[1; 50]).unwrap(); // 64 bytes
    producer.output(&[2; 30]).unwrap(); // 40 bytes
    assert_eq!(
        producer.reserve(17).unwrap_err(),
        ReserveError::NoSpace {
            needed: 32,
            available: 24
        }
    );
    assert_eq!(producer_pos(&ring), 104);
    producer.reserve(16).unwrap().submit();
    assert_eq!(producer.free_space().unwrap(), 0);
    assert_eq!(drain_all(&drain).unwrap().len(), 3);
    assert_eq!(producer.free_space().unwrap(), 128);
    // Records that wrap around the end of the data area arrive intact.
    let mut first = producer.reserve(40).unwrap(); // 48 bytes at offset 0
    assert_eq!(first.position() % 128, 0);
    first.copy_from_slice(&bytes(1, 40));
    first.submit();
    assert_eq!(drain_all(&drain).unwrap(), [bytes(1, 40)]);
    let mut wrapping = producer.reserve(100).unwrap(); // 112 bytes at offset 48: wraps
    assert_eq!(wrapping.position() % 128, 48);
    wrapping.copy_from_slice(&bytes(2, 100));
    wrapping.submit();
    assert_eq!(drain_all(&drain).unwrap(), [bytes(2, 100)]);
}

#[test]
fn corrupt_consumer_pos_is_reported_and_nothing_is_overwritten() {
    // (consumer_pos, producer_pos): ahead of the producer, misaligned, more than a ring behind.
    for (consumer, producer_position) in [(64, 32), (12, 32), (0, 4096 + 8), (8, 12)] {
        let ring = HeapRing::from_parts(4096, &[0xaa], consumer, producer_position).unwrap();
        // SAFETY: the only producer of this ring; its drain publishes only past samples it has finished reading.
        let producer = unsafe { Producer::new(&ring) }.unwrap();
        let error = producer.reserve(8).unwrap_err();
        assert_eq!(
            error,
            ReserveError::CorruptPositions {
                consumer_pos: consumer,
                producer_pos: producer_position,
            }
        );
        assert_eq!(producer.free_space().unwrap_err(), error);
        assert_eq!(producer_pos(&ring), producer_position);
        let offset = producer_position & 4095 & !7;
        assert_eq!(ring.header(offset).load_acquire(), 0xaaaa_aaaa);
        assert!(!error.to_string().is_empty());
    }
}

#[test]
fn a_second_writer_of_producer_pos_is_detected_and_follow_adopts_it() {
    let (ring, mut producer, drain) = setup(4096);
    producer.output(b"ours").unwrap();
    // Someone else publishes a record.
    // SAFETY: a deliberate second writer, used only while `producer` has no reservation outstanding, so no two live slices overlap.
    let other = unsafe { Producer::new(ring.clone()) }.unwrap();
    other.output(b"theirs").unwrap();
    drop(other);
    assert_eq!(
        producer.reserve(1).unwrap_err(),
        ReserveError::ProducerPosMoved {
            expected: 16,
            found: 32
        }
    );
    producer.follow();
    assert_eq!(producer.positions().producer, 32);
    producer.output(b"ours again").unwrap();
    assert_eq!(
        drain_all(&drain).unwrap(),
        [b"ours".to_vec(), b"theirs".to_vec(), b"ours again".to_vec()]
    );
}

#[test]
fn positions_wrap_around_usize_max() {
    let start = (usize::MAX - 100) & !7;
    let (ring, producer, drain) = setup_at(256, start);
    let mut expected = Vec::new();
    for i in 0..40 {
        let data = bytes(i, i % 29);
        producer.output(&data).unwrap();
        expected.push(data);
        if i % 5 == 4 {
            assert_eq!(drain_all(&drain).unwrap(), expected);
            expected.clear();
        }
    }
    assert!(producer_pos(&ring) < start, "the position wrapped");
    assert_eq!(consumer_pos(&ring), producer_pos(&ring));
}

#[test]
fn drain_model_checks_in_the_kernel_order() {
    let size = 4096;
    let drain_of = |consumer: usize, producer: usize, header: u32| {
        let ring = HeapRing::from_parts(size, &[0], consumer, producer).unwrap();
        // SAFETY: nothing reads or writes the ring yet.
        unsafe { ring.store_header(consumer % size, header) };
        let (_producer, drain) = ring.split_user();
        let result = drain.drain(Wakeup::Adaptive, |_| ControlFlow::Continue(()));
        (result, consumer_pos(drain.memory()))
    };
    // Misaligned producer_pos: EINVAL before anything else.
    assert_eq!(
        drain_of(0, 47, 39).0,
        Err(DrainError::MisalignedProducerPos { producer_pos: 47 })
    );
    // A sample past producer_pos: EINVAL, even while BUSY or DISCARDED.
    for flags in [0, BUSY_BIT, DISCARD_BIT] {
        let (result, consumer) = drain_of(0, 32, 32 | flags);
        assert!(
            matches!(
                result,
                Err(DrainError::SampleOutOfBounds {
                    record_size: 40,
                    available: 32,
                    ..
                })
            ),
            "{result:?}"
        );
        assert_eq!(consumer, 0);
    }
    // Larger than the ring: E2BIG.
    let (result, _) = drain_of(0, 4104, 4096);
    assert_eq!(result.unwrap_err().errno(), 7);
    // DISCARD is checked before BUSY: skipped.
    let (result, consumer) = drain_of(0, 16, 8 | BUSY_BIT | DISCARD_BIT);
    assert_eq!((result, consumer), (Ok(0), 16));
    // BUSY: stop, no error.
    let (result, consumer) = drain_of(0, 16, 8 | BUSY_BIT);
    assert_eq!((result, consumer), (Ok(0), 0));
    // Nothing produced.
    assert_eq!(drain_of(64, 64, 0), (Ok(0), 64));
    // A misaligned consumer_pos (impossible in the kernel) is reported, not read through.
    let (result, consumer) = drain_of(4, 64, 8);
    assert_eq!(
        result,
        Err(DrainError::MisalignedConsumerPos { consumer_pos: 4 })
    );
    assert_eq!(consumer, 4);

    // Larger than a dynptr: E2BIG, in a ring big enough to hold it.
    let big = 1 << 25;
    let ring = HeapRing::from_parts(big, &[], 0, big).unwrap();
    // SAFETY: nothing reads or writes the ring yet.
    unsafe { ring.store_header(0, MAX_SAMPLE_LEN as u32 + 1) };
    let (_producer, drain) = ring.split_user();
    let error = drain
        .drain(Wakeup::Adaptive, |_| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(
        matches!(error, DrainError::SampleTooLarge { .. }),
        "{error}"
    );
    assert_eq!(error.errno(), 7);
}

#[test]
fn drain_model_limits_samples_per_call_and_counts_discards() {
    let (ring, producer, drain) = setup(2 << 20);
    for i in 0..MAX_SAMPLES_PER_DRAIN + 10 {
        let sample = producer.reserve(0).unwrap();
        if i % 4 == 0 {
            sample.discard();
        } else {
            sample.submit();
        }
    }
    let mut seen = 0;
    let delivered = drain
        .drain(Wakeup::Adaptive, |_| {
            seen += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(delivered, MAX_SAMPLES_PER_DRAIN * 3 / 4);
    assert_eq!(seen, delivered);
    assert_eq!(consumer_pos(&ring), MAX_SAMPLES_PER_DRAIN * 8);
    assert_eq!(drain_all(&drain).unwrap().len(), 10 - 3);
}

#[test]
fn drain_model_stops_when_the_callback_breaks_and_refuses_reentry() {
    let (ring, producer, drain) = setup(4096);
    for i in 0..5u8 {
        producer.output(&[i]).unwrap();
    }
    let mut inner = None;
    let delivered = drain
        .drain(Wakeup::Adaptive, |sample| {
            inner = Some(drain.drain(Wakeup::Adaptive, |_| ControlFlow::Continue(())));
            if sample == [1] {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(delivered, 2, "the sample the callback broke on counts");
    assert_eq!(inner, Some(Err(DrainError::Busy)));
    assert_eq!(DrainError::Busy.errno(), 16);
    assert_eq!(consumer_pos(&ring), 32);
    assert_eq!(drain_all(&drain).unwrap(), [vec![2], vec![3], vec![4]]);
}

#[test]
fn drain_model_wakeup_rule() {
    let (_ring, producer, drain) = setup(4096);
    let run = |wakeup| drain.drain(wakeup, |_| ControlFlow::Continue(())).unwrap();
    run(Wakeup::Adaptive);
    assert_eq!(drain.wakeups(), 0, "nothing drained, no wakeup");
    run(Wakeup::Force);
    assert_eq!(drain.wakeups(), 1, "forced");
    producer.output(b"x").unwrap();
    run(Wakeup::Never);
    assert_eq!(drain.wakeups(), 1, "never");
    producer.reserve(1).unwrap().discard();
    run(Wakeup::Adaptive);
    assert_eq!(drain.wakeups(), 2, "a discarded sample counts as drained");
}

/// One reserved record in the oracle: its bytes and what became of it.
#[derive(Clone, Debug, PartialEq)]
enum Slot {
    Pending,
    Submitted,
    Discarded,
}

#[test]
fn random_sequences_match_a_queue_oracle() {
    for seed in 1..=24u64 {
        let size = 256 << (seed % 4);
        let start = if seed % 3 == 0 {
            (usize::MAX - 3000) & !7
        } else {
            0
        };
        let (ring, producer, drain) = setup_at(size, start);
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move |bound: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % bound as u64) as usize
        };
        // Oracle: records in reservation order (bytes, record size, state).
        let mut oracle: VecDeque<(Vec<u8>, usize, Slot)> = VecDeque::new();
        let mut first_index = 0usize; // index of oracle[0] among all reservations
        let mut held = Vec::new(); // (index, Reservation)
        let mut serial = 0usize;
        let mut delivered_total = 0;
        let mut refused = 0;
        for _ in 0..3000 {
            match next(10) {
                0..=3 => {
                    let len = next(size / 3);
                    let used: usize = oracle.iter().map(|(_, record, _)| record).sum();
                    match producer.reserve(len) {
                        Ok(mut reservation) => {
                            assert!(used + record_size(len) <= size);
                            let data = bytes(serial, len);
                            reservation.copy_from_slice(&data);
                            oracle.push_back((data, record_size(len), Slot::Pending));
                            held.push((first_index + oracle.len() - 1, reservation));
                            serial += 1;
                        }
                        Err(ReserveError::NoSpace { needed, available }) => {
                            assert_eq!(needed, record_size(len));
                            assert_eq!(available, size - used);
                            assert!(needed > available);
                            refused += 1;
                        }
                        Err(error) => panic!("seed {seed}: {error}"),
                    }
                }
                4..=6 if !held.is_empty() => {
                    let (index, reservation) = held.swap_remove(next(held.len()));
                    let slot = &mut oracle[index - first_index].2;
                    match next(3) {
                        0 => {
                            reservation.discard();
                            *slot = Slot::Discarded;
                        }
                        1 => {
                            drop(reservation);
                            *slot = Slot::Discarded;
                        }
                        _ => {
                            reservation.submit();
                            *slot = Slot::Submitted;
                        }
                    }
                }
                _ => {
                    let budget = 1 + next(6);
                    let mut got = Vec::new();
                    let delivered = drain
                        .drain(Wakeup::Adaptive, |sample| {
                            got.push(sample.to_vec());
                            if got.len() == budget {
                                ControlFlow::Break(())
                            } else {
                                ControlFlow::Continue(())
                            }
                        })
                        .unwrap();
                    assert_eq!(delivered, got.len());
                    // The oracle: pop committed records from the front, skipping discards,
                    // stopping at a pending one or after `budget` deliveries.
                    let mut want = Vec::new();
                    while let Some((data, _, slot)) = oracle.front() {
                        if want.len() == budget {
                            break;
                        }
                        match slot {
                            Slot::Pending => break,
                            Slot::Discarded => {}
                            Slot::Submitted => want.push(data.clone()),
                        }
                        oracle.pop_front();
                        first_index += 1;
                    }
                    assert_eq!(got, want, "seed {seed}");
                    delivered_total += got.len();
                }
            }
            let used: usize = oracle.iter().map(|(_, record, _)| record).sum();
            assert_eq!(producer.free_space().unwrap(), size - used, "seed {seed}");
            assert_eq!(producer_pos(&ring).wrapping_sub(consumer_pos(&ring)), used);
        }
        drop(held);
        assert!(
            delivered_total > 100,
            "seed {seed}: {delivered_total} delivered"
        );
        assert!(refused > 0, "seed {seed}: the ring never filled");
    }
}
