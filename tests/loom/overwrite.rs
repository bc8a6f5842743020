//! Loom model 7: the overwrite-mode reader (`OverwriteConsumer`) copying records while the
//! kernel producer overwrites them.

use std::sync::Arc;

use crate::common::{expect_failure, model, reached, times_reached, LoomOverwriteRing};
use bpf_ringbuf::model::{KernelPoint, KernelProducer, Wakeup};
use bpf_ringbuf::sync::SyncPoint;
use bpf_ringbuf::{OverwriteConsumer, OverwriteMemory, RingMemory};

/// A ring, its records, and where the positions start.
struct Scenario {
    ring_size: usize,
    start: usize,
    records: usize,
    payload_len: usize,
}

impl Scenario {
    /// Header and payload, rounded up to 8 bytes.
    const fn record_size(&self) -> usize {
        (8 + self.payload_len + 7) & !7
    }
}

/// Lapped: a 32-byte ring whose positions start 16 bytes before `usize::MAX` wraps
/// (offset 16), and three 16-byte records (8-byte payloads). The ring keeps one record: each
/// reservation moves `overwrite_pos` past the previous record, and record 2 is written over
/// record 0's bytes — by a later reservation than the one that declared record 0 gone.
///
/// | record | position  | offset | overwrite_pos after its reserve | overwrites the bytes of |
/// |--------|-----------|--------|---------------------------------|-------------------------|
/// | 0      | MAX-15    | 16..32 | MAX-15                          | —                       |
/// | 1      | 0         | 0..16  | 0 (record 0 gone)               | —                       |
/// | 2      | 16        | 16..32 | 16 (record 1 gone)              | record 0                |
const LAPPED: Scenario = Scenario {
    ring_size: 32,
    start: usize::MAX - 15,
    records: 3,
    payload_len: 8,
};

/// Same reservation: a 32-byte ring whose positions start 24 bytes before `usize::MAX` wraps
/// (offset 8), and two 24-byte records (16-byte payloads). Record 1's reservation both moves
/// `overwrite_pos` past record 0 and writes its payload over record 0's first two payload
/// words: only the order of that reservation's own stores tells the reader its copy is torn.
///
/// | record | position  | offset      | overwrite_pos after its reserve | payload overwrites |
/// |--------|-----------|-------------|---------------------------------|--------------------|
/// | 0      | MAX-23    | 8..32       | MAX-23                          | —                  |
/// | 1      | 0         | 0..24       | 0 (record 0 gone)               | record 0's 16..24  |
const SAME_RESERVATION: Scenario = Scenario {
    ring_size: 32,
    start: usize::MAX - 23,
    records: 2,
    payload_len: 16,
};

/// `read_into` calls the reader makes while the producer runs (the rest is drained after it
/// finished; more calls multiply the executions without reaching new races).
const READ_ATTEMPTS: usize = 1;

/// What every payload word of record `sequence` holds: never the initial zero.
fn word_of(sequence: usize) -> u32 {
    sequence as u32 + 1
}

fn payload_of(scenario: &Scenario, sequence: usize) -> Vec<u8> {
    let word = word_of(sequence).to_ne_bytes();
    (0..scenario.payload_len).map(|i| word[i % 4]).collect()
}

type Reader = OverwriteConsumer<Arc<LoomOverwriteRing>>;

/// One `read_into`; checks a delivered record: every word from the record at the position
/// the reader consumed (not torn, not a newer record read at an older position), and newer
/// than every record delivered before. Returns whether a record was delivered.
fn read_and_check(scenario: &Scenario, reader: &mut Reader, delivered: &mut Vec<usize>) -> bool {
    let torn_before = reader.stats().torn_records;
    let mut buf = vec![0u8; scenario.payload_len];
    let result = reader
        .read_into(&mut buf)
        .expect("the reader never reports an error on a well-formed ring");
    if reader.stats().torn_records > torn_before {
        reached("torn copy dropped");
    }
    let Some(len) = result else {
        return false;
    };
    // The reader published consumer_pos just past the record it delivered (its own store).
    let position = reader
        .memory()
        .consumer_pos()
        .load_relaxed()
        .wrapping_sub(scenario.record_size());
    let sequence = position.wrapping_sub(scenario.start) / scenario.record_size();
    let words: Vec<u32> = buf[..len.min(buf.len())]
        .chunks_exact(4)
        .map(|chunk| u32::from_ne_bytes(chunk.try_into().unwrap()))
        .collect();
    assert!(
        len == scenario.payload_len
            && sequence < scenario.records
            && words.iter().all(|&word| word == word_of(sequence))
            && delivered.iter().all(|&earlier| earlier < sequence),
        "torn or stale record delivered: record {sequence} at position {position:#x}, \
         words {words:?} (expected all {}), delivered before {delivered:?}",
        word_of(sequence)
    );
    delivered.push(sequence);
    true
}

fn reader_never_delivers_a_torn_record(scenario: &'static Scenario) {
    let ring = Arc::new(LoomOverwriteRing::starting_at(
        scenario.ring_size,
        scenario.start,
    ));
    // SAFETY: the model is the ring's only writer and writes payloads only with
    // output_atomic; its one reader publishes only past records it has copied.
    let kernel = unsafe { KernelProducer::new_overwrite(ring.clone()) }.unwrap();

    // The reader runs in a thread of its own (see docs/verification.md, loom's yield
    // heuristic), racing with the producer.
    let reader = {
        let ring = ring.clone();
        loom::thread::spawn(move || {
            // SAFETY: the model's only reader of this ring.
            let mut reader = unsafe { OverwriteConsumer::new(ring) }.unwrap();
            let mut delivered = Vec::new();
            for _ in 0..READ_ATTEMPTS {
                read_and_check(scenario, &mut reader, &mut delivered);
            }
            (reader, delivered)
        })
    };

    for sequence in 0..scenario.records {
        kernel
            .output(&payload_of(scenario, sequence), Wakeup::Never)
            .expect("overwrite mode never refuses a reservation here");
    }
    let (mut reader, mut delivered) = reader.join().unwrap();

    // Drain what is left, now that the producer is done.
    let mut calls = 0;
    while read_and_check(scenario, &mut reader, &mut delivered) {
        calls += 1;
        assert!(
            calls <= scenario.records,
            "the reader delivered more records than exist"
        );
    }
    let stats = reader.stats();
    let record_size = scenario.record_size();
    let end = scenario.start.wrapping_add(scenario.records * record_size);
    assert_eq!(
        delivered.last(),
        Some(&(scenario.records - 1)),
        "the newest record is never overwritten, so it is always delivered"
    );
    assert_eq!(stats.records, delivered.len() as u64);
    assert_eq!(stats.bytes, (delivered.len() * scenario.payload_len) as u64);
    assert!(
        stats.lost_bytes % record_size as u64 == 0
            && delivered.len() + (stats.lost_bytes / record_size as u64) as usize
                == scenario.records,
        "every record is either delivered or counted lost: delivered {delivered:?}, {stats:?}"
    );
    assert_eq!(ring.producer_pos().load_relaxed(), end);
    assert_eq!(ring.consumer_pos().load_relaxed(), end);
    assert_eq!(
        ring.overwrite_pos().load_relaxed(),
        end.wrapping_sub(record_size)
    );
}

/// Runs the model on `scenario`; some execution must have caught a torn copy (and dropped
/// it): the model is only meaningful if the race it is about happens.
fn check(scenario: &'static Scenario) {
    model(move || reader_never_delivers_a_torn_record(scenario));
    assert!(
        times_reached("torn copy dropped") > 0,
        "no execution overwrote a record while the reader copied it"
    );
}

#[test]
fn overwrite_reader_lapped() {
    check(&LAPPED);
}

#[test]
fn overwrite_reader_same_reservation() {
    check(&SAME_RESERVATION);
}

/// Control: without the re-check of `overwrite_pos` after the copy, a record overwritten
/// while it was copied is delivered torn.
#[test]
fn control_without_recheck() {
    expect_failure(
        SyncPoint::OverwriteRecheck,
        "torn or stale record delivered",
        || reader_never_delivers_a_torn_record(&LAPPED),
    );
}

/// Control: without the acquire fence between the copy and the re-check, the re-check may
/// read an `overwrite_pos` older than the payload words it follows.
#[test]
fn control_without_fence_before_recheck() {
    expect_failure(
        SyncPoint::OverwriteFence,
        "torn or stale record delivered",
        || reader_never_delivers_a_torn_record(&LAPPED),
    );
}

/// The arm64 caveat as a checked fact: with a writer whose payload stores are not ordered
/// after its own `overwrite_pos` store (Relaxed here; on weakly ordered CPUs the kernel has
/// no write barrier between them), a torn copy passes the validation when the reservation
/// that overwrites a record is the one that moved `overwrite_pos` past it. The reader is
/// proven only against a TSO (x86) writer; docs/protocol.md section 11.
#[test]
fn control_non_tso_writer_defeats_validation() {
    expect_failure(
        KernelPoint::PayloadStoreTso,
        "torn or stale record delivered",
        || reader_never_delivers_a_torn_record(&SAME_RESERVATION),
    );
}

/// With a non-TSO writer, a record overwritten by a *later* reservation than the one that
/// moved `overwrite_pos` past it is still caught: the full barrier of that reservation's
/// commit (`xchg` in bpf_ringbuf_commit) orders the `overwrite_pos` store before the later
/// payload stores (fence-to-fence synchronisation with the reader's acquire fence).
#[test]
fn non_tso_writer_lapped_is_still_caught() {
    sync_weakened_model(KernelPoint::PayloadStoreTso, &LAPPED);
}

fn sync_weakened_model(
    point: impl Into<bpf_ringbuf::sync::ControlPoint> + Copy,
    scenario: &'static Scenario,
) {
    bpf_ringbuf::sync::with_weakened(point, || check(scenario));
}
