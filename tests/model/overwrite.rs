//! Overwrite mode (flight recorder) on the heap ring with the kernel-producer model in
//! overwrite mode. The same scenarios run against Linux 7.2 in `tests/kernel/overwrite.rs`.

use std::cell::Cell;
use std::ops::ControlFlow;
use std::sync::Arc;

use bpf_ringbuf::memory::{DataWord, PositionWord};
use bpf_ringbuf::model::{HeapRing, KernelProducer, Wakeup};
use bpf_ringbuf::{OverwriteConsumer, OverwriteMemory, ReadError, Readiness, RingMemory};

type Ring = (
    Arc<HeapRing>,
    KernelProducer<Arc<HeapRing>>,
    OverwriteConsumer<Arc<HeapRing>>,
);

fn split(ring: HeapRing) -> Ring {
    let (producer, reader) = ring.split_overwrite();
    (reader.memory().clone(), producer, reader)
}

fn ring(size: usize) -> Ring {
    split(HeapRing::new(size).unwrap())
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
    rec1.fill(0xaa);
    rec2.fill(0xbb);
    rec4.fill(0xcc);
    rec1.submit(Wakeup::Adaptive);
    rec2.submit(Wakeup::Adaptive);
    rec4.submit(Wakeup::Adaptive);
    let mut rec5 = producer
        .reserve(len3)
        .expect("reserve 5 overwrites record 1");
    rec5.fill(0xdd);
    rec5.submit(Wakeup::Adaptive);

    let producer_pos = ring.producer_pos().load_acquire();
    assert_eq!(producer_pos, len1 + len2 + len4 + len3 + 4 * 8);
    assert_eq!(ring.overwrite_pos().load_acquire(), len1 + 8);
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
    assert_eq!(reader.check_before_sleep(), Readiness::HeadBusy);
    assert_eq!(reader.snapshot_vec().unwrap(), vec![vec![1u8; 20]]);
    held.submit(Wakeup::Never);
    assert_eq!(reader.check_before_sleep(), Readiness::Readable);
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
    // SAFETY (all stores here): the overwrite reader lends no bytes, and nothing produces
    // until the header is restored.
    unsafe { ring.store_header(0, 200) };
    let mut buf = [0u8; 256];
    assert!(matches!(
        reader.read_into(&mut buf),
        Err(ReadError::RecordOutOfBounds { position: 0, .. })
    ));
    assert_eq!(ring.consumer_pos().load_acquire(), 0);
    // (The kernel's own bookkeeping trusts its headers: restore it before producing more.)
    unsafe { ring.store_header(0, 8) };
    // A consumer_pos moved by someone else is reported; adopted, one ahead of the producer
    // is an error too; resync recovers.
    unsafe { ring.store_consumer_pos(1 << 20) };
    assert_eq!(
        reader.read_into(&mut buf),
        Err(ReadError::ConsumerPosMoved {
            expected: 0,
            found: 1 << 20
        })
    );
    assert_eq!(reader.check_before_sleep(), Readiness::Readable);
    reader.follow();
    assert!(matches!(
        reader.read_into(&mut buf),
        Err(ReadError::ConsumerAhead { .. })
    ));
    assert_eq!(reader.resync(), 256, "capped at the ring size");
    producer.output(&[2; 8], Wakeup::Never).unwrap();
    assert_eq!(reader.read_into(&mut buf).unwrap(), Some(8));
    assert_eq!(&buf[..8], &[2; 8]);
}

#[test]
fn positions_wrap_around_usize_max_in_overwrite_mode() {
    let start = (usize::MAX - 300) & !7;
    let (ring, producer, mut reader) = split(HeapRing::starting_at(256, start).unwrap());
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
        ring.producer_pos().load_acquire() < start,
        "positions wrapped"
    );
}

/// A producer lapping a concurrent reader: no torn record is ever delivered, and what was
/// delivered plus what was counted lost is everything produced.
#[test]
fn reader_racing_a_lapping_producer_never_delivers_a_torn_record() {
    let (_ring, producer, mut reader) = ring(512);
    const RECORDS: u32 = 200_000;
    let writer = std::thread::spawn(move || {
        for sequence in 0..RECORDS {
            // Every word of a record carries its sequence number: a torn copy mixes two.
            let payload = sequence.to_le_bytes().repeat(14);
            producer.output(&payload, Wakeup::Never).unwrap();
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
    assert_eq!(
        reader.check_before_sleep(),
        Readiness::Readable,
        "records are waiting"
    );
    assert_eq!(
        ring.consumer_pos().load_acquire(),
        ring.overwrite_pos().load_acquire(),
        "consumer_pos moved up to overwrite_pos"
    );
    while reader.read_into(&mut buf).unwrap().is_some() {}
    assert_eq!(reader.check_before_sleep(), Readiness::Empty);
    // Caught up: the next commit is at consumer_pos, so the kernel's rule wakes us.
    assert_eq!(producer.output(&[1; 8], Wakeup::Adaptive), Some(true));
}

#[test]
fn a_cursor_far_behind_overwrite_pos_saturates_the_lost_count() {
    // A cursor adopted from a hostile consumer_pos just under 2^63 behind overwrite_pos
    // counts that many bytes lost; three times over, the count would overflow a u64.
    let (ring, producer, mut reader) = ring(256);
    producer.output(&[5; 8], Wakeup::Never).unwrap();
    let mut buf = [0u8; 64];
    let over = ring.overwrite_pos().load_acquire();
    for _ in 0..3 {
        // SAFETY: the overwrite reader lends no bytes.
        unsafe { ring.store_consumer_pos(over.wrapping_sub((1usize << 63) - 64)) };
        reader.follow();
        assert_eq!(reader.read_into(&mut buf).unwrap(), Some(8));
        assert_eq!(buf[..8], [5; 8]);
    }
    assert_eq!(reader.stats().lost_bytes, u64::MAX);
}

/// An overwrite-mode ring whose `overwrite_pos` a simulated concurrent writer moves to a
/// scripted value while a record is being copied (at the copy's first data word load), as a
/// corrupted producer page would.
struct MovingOverwritePos {
    ring: Arc<HeapRing>,
    moved_to: Cell<Option<usize>>,
}

// SAFETY: forwards every method to the HeapRing, which upholds the contract; the extra store
// is an atomic store to the ring's own overwrite_pos word, as another writer's would be.
unsafe impl RingMemory for MovingOverwritePos {
    fn consumer_pos(&self) -> &PositionWord {
        self.ring.consumer_pos()
    }
    fn producer_pos(&self) -> &PositionWord {
        self.ring.producer_pos()
    }
    fn size(&self) -> usize {
        self.ring.size()
    }
    fn header(&self, offset: usize) -> &DataWord {
        self.ring.header(offset)
    }
    unsafe fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        // SAFETY: the caller upholds the contract, which is the HeapRing's.
        unsafe { self.ring.bytes(offset, len) }
    }
}

// SAFETY: as above.
unsafe impl OverwriteMemory for MovingOverwritePos {
    fn overwrite_pos(&self) -> &PositionWord {
        self.ring.overwrite_pos()
    }
    fn data_word(&self, offset: usize) -> &DataWord {
        if let Some(value) = self.moved_to.take() {
            // SAFETY: the overwrite reader lends no bytes; nothing produces afterwards.
            unsafe { self.ring.store_overwrite_pos(value) };
        }
        self.ring.data_word(offset)
    }
}

#[test]
fn a_resume_position_from_a_corrupt_overwrite_pos_is_an_error_not_a_panic() {
    for (moved_to, expected) in [
        (3, ReadError::MisalignedPosition { position: 3 }),
        (
            1 << 40,
            ReadError::ConsumerAhead {
                consumer_pos: 1 << 40,
                producer_pos: 16,
            },
        ),
    ] {
        let (producer, reader) = HeapRing::new(256).unwrap().split_overwrite();
        producer.output(&[7; 8], Wakeup::Never).unwrap();
        let memory = MovingOverwritePos {
            ring: reader.memory().clone(),
            moved_to: Cell::new(Some(moved_to)),
        };
        drop(reader);
        // SAFETY: the only reader of the ring (the split one is gone); the consumer page is
        // heap memory.
        let mut reader = unsafe { OverwriteConsumer::new(memory) }.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(reader.read_into(&mut buf), Err(expected), "{moved_to:#x}");
        let mut scratch = [0u8; 64];
        reader.memory().moved_to.set(Some(moved_to));
        // SAFETY: as above.
        unsafe { reader.memory().ring.store_overwrite_pos(0) };
        assert_eq!(reader.snapshot(&mut scratch, |_| {}), Err(expected));
    }
}
