//! The read loop's two ways of reaching ring memory (through `RingMemory::data_ptr`, and
//! through `header_unchecked`/`bytes` for memory that has no data pointer) and its one cursor
//! per batch, shared by the batch's readers.

use std::sync::Arc;

use bpf_ringbuf::memory::{DataWord, PositionWord};
use bpf_ringbuf::model::{HeapRing, KernelProducer, Wakeup};
use bpf_ringbuf::{Consumer, ReadError, RingMemory};

/// A heap ring seen through the trait's required methods only: `data_ptr` is the default
/// `None`, so the read loop takes the accessor path.
struct Opaque(Arc<HeapRing>);

// SAFETY: forwards every method to `HeapRing`, which upholds the contract; `data_ptr` stays
// `None`, which promises nothing.
unsafe impl RingMemory for Opaque {
    fn consumer_pos(&self) -> &PositionWord {
        self.0.consumer_pos()
    }
    fn producer_pos(&self) -> &PositionWord {
        self.0.producer_pos()
    }
    fn size(&self) -> usize {
        self.0.size()
    }
    fn header(&self, offset: usize) -> &DataWord {
        self.0.header(offset)
    }
    unsafe fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        // SAFETY: the caller upholds `bytes`' contract.
        unsafe { self.0.bytes(offset, len) }
    }
}

fn producer(ring: &Arc<HeapRing>) -> KernelProducer<Arc<HeapRing>> {
    // SAFETY: the only writer of this ring, whose one consumer publishes only past records it
    // has finished reading.
    unsafe { KernelProducer::new(ring.clone()) }.unwrap()
}

/// A deterministic mix of records (some discarded, some large enough to wrap) written and read
/// in rounds, through both paths at once: a consumer over the ring's data pointer and one over
/// the same bytes without it must deliver the same records, with the same statistics.
#[test]
fn both_memory_paths_read_the_same_records() {
    let size = 4096;
    let direct = Arc::new(HeapRing::new(size).unwrap());
    let opaque = Arc::new(HeapRing::new(size).unwrap());
    let producers = [producer(&direct), producer(&opaque)];
    assert!(direct.data_ptr().is_some() && Opaque(opaque.clone()).data_ptr().is_none());
    // SAFETY: each ring's only consumer; its one producer (above) writes only space the
    // consumer handed back.
    let mut fast = unsafe { Consumer::new(direct.clone()) }.unwrap();
    // SAFETY: as above.
    let mut slow = unsafe { Consumer::new(Opaque(opaque.clone())) }.unwrap();
    let mut state = 0x9e37_79b9_u32;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let mut expected = Vec::new();
    for round in 0..200 {
        for _ in 0..(next() % 12) {
            let len = (next() % 300) as usize + 1;
            let fill = (round as u8).wrapping_mul(31) ^ len as u8;
            let discard = next() % 5 == 0;
            let mut ok = true;
            for producer in &producers {
                match producer.reserve(len) {
                    Some(mut reservation) => {
                        reservation.fill(fill);
                        if discard {
                            reservation.discard(Wakeup::Adaptive);
                        } else {
                            reservation.submit(Wakeup::Adaptive);
                        }
                    }
                    None => ok = false,
                }
            }
            if ok && !discard {
                expected.push(vec![fill; len]);
            }
        }
        let read_fast: Vec<Vec<u8>> = fast.batch().iter().map(|r| r.unwrap().to_vec()).collect();
        let read_slow: Vec<Vec<u8>> = slow.batch().iter().map(|r| r.unwrap().to_vec()).collect();
        assert_eq!(read_fast, read_slow, "round {round}");
        let wanted = std::mem::take(&mut expected);
        assert_eq!(read_fast, wanted, "round {round}");
    }
    assert_eq!(fast.stats(), slow.stats());
    assert!(fast.stats().discarded > 0 && fast.stats().records > 500);
}

fn filled(records: u8) -> (Arc<HeapRing>, Consumer<Arc<HeapRing>>) {
    let (producer, consumer) = HeapRing::new(4096).unwrap().split();
    for i in 0..records {
        producer.output(&[i; 10], Wakeup::Adaptive).unwrap();
    }
    (consumer.memory().clone(), consumer)
}

/// An iterator carries the batch's cursor in its own fields; `next_record` and a second
/// iterator on the same batch continue where the others left it: every record once, in
/// order, counted once.
#[test]
fn readers_of_one_batch_share_its_cursor() {
    let (_ring, mut consumer) = filled(8);
    let batch = consumer.batch();
    let mut first = batch.iter();
    assert_eq!(first.next().unwrap().unwrap(), &[0; 10]);
    assert_eq!(batch.next_record().unwrap().unwrap(), &[1; 10]);
    assert_eq!(first.next().unwrap().unwrap(), &[2; 10]);
    let mut second = batch.iter();
    assert_eq!(second.next().unwrap().unwrap(), &[3; 10]);
    assert_eq!(first.next().unwrap().unwrap(), &[4; 10]);
    assert_eq!(batch.consumed_bytes(), 5 * 24);
    assert_eq!(second.next().unwrap().unwrap(), &[5; 10]);
    drop(second);
    let rest: Vec<&[u8]> = first.map(Result::unwrap).collect();
    assert_eq!(rest, [&[6u8; 10][..], &[7; 10]]);
    assert!(batch.next_record().is_none());
    drop(batch);
    let stats = consumer.stats();
    assert_eq!((stats.records, stats.consumed_bytes), (8, 8 * 24));
    assert_eq!(consumer.available().unwrap(), 0);
}

/// A header too long for what is left, behind discarded records: the records before it are
/// delivered, the discarded ones consumed, and the batch stops at it.
#[test]
fn a_corrupt_header_after_discards_stops_the_batch_there() {
    let (producer, mut consumer) = HeapRing::new(4096).unwrap().split();
    let ring = consumer.memory().clone();
    producer.output(&[1; 8], Wakeup::Adaptive).unwrap();
    for _ in 0..3 {
        let reservation = producer.reserve(8).unwrap();
        reservation.discard(Wakeup::Adaptive);
    }
    producer.output(&[2; 8], Wakeup::Adaptive).unwrap();
    // The last record claims 2000 bytes: past producer_pos (a hostile write; nothing else
    // uses this quiescent ring).
    // SAFETY: no batch or reservation is alive.
    unsafe { ring.store_header(4 * 16, 2000) };
    let batch = consumer.batch();
    assert_eq!(batch.next_record().unwrap().unwrap(), &[1; 8]);
    let error = batch.next_record().unwrap().unwrap_err();
    assert_eq!(
        error,
        ReadError::RecordOutOfBounds {
            position: 64,
            header: 2000,
            record_size: 2008,
            available: 16,
        }
    );
    assert!(batch.next_record().is_none());
    drop(batch);
    assert_eq!(consumer.stats().discarded, 3);
    assert_eq!(consumer.stats().consumed_bytes, 64);
    assert_eq!(consumer.positions().consumer, 64);
}

/// Write batches and single reservations on the model of the kernel's drain: the same
/// samples, in order, with batches of every size the ring allows, across the wrap.
#[test]
fn write_batches_drain_like_reservations() {
    use bpf_ringbuf::ReserveError;
    use std::ops::ControlFlow;
    let (mut producer, drain) = HeapRing::starting_at(1024, usize::MAX - 511)
        .unwrap()
        .split_user();
    let mut state = 0x1234_5679_u32;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    for round in 0..500 {
        let mut written = Vec::new();
        if round % 3 == 0 {
            let len = (next() % 100) as usize;
            if let Ok(mut reservation) = producer.reserve(len) {
                reservation.fill(round as u8);
                reservation.submit();
                written.push(vec![round as u8; len]);
            }
        } else {
            let mut batch = producer.batch().unwrap();
            for i in 0..(next() % 12) {
                let data = vec![(round + i as usize) as u8; (next() % 100) as usize];
                match batch.push(&data) {
                    Ok(()) => written.push(data),
                    Err(ReserveError::NoSpace { .. }) => break,
                    Err(error) => panic!("{error}"),
                }
            }
            assert_eq!(batch.len(), written.len());
        }
        let mut seen = Vec::new();
        drain
            .drain(Wakeup::Adaptive, |sample| {
                seen.push(sample.to_vec());
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(seen, written, "round {round}");
    }
}
