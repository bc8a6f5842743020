//! Typed records against the real kernel: the payload alignment the protocol guarantees
//! (docs/protocol.md, "Payload alignment"), `#[repr(C)]` structs read and written in place
//! through bytemuck, and real kernel events (every exec, from a tracepoint program).

use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use bpf_ringbuf::{RingBuf, UserRingBuf};
use bpf_ringbuf_testkit::exec::{self, ExecTracer};
use bpf_ringbuf_testkit::{self as kit, require_feature, require_kernel};
use bytemuck::{Pod, Zeroable};

/// Every payload a kernel producer hands us is 8-byte aligned, for every length and across
/// the end of the data area; the first record's header is the page-aligned start of the data
/// area, so payload = data + position + 8 with 8-aligned positions.
#[test]
fn ringbuf_payloads_are_8_byte_aligned() {
    require_kernel!();
    let page = kit::page_size();
    let size = 4 * page;
    let map = kit::ringbuf_map(size);
    let producer = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    let payload: Vec<u8> = (0..=255).collect();

    producer.emit(&payload[..1], 0, 1);
    let batch = ring.batch();
    let first = batch.iter().next().unwrap().unwrap();
    let data_start = first.as_ptr() as usize - 8;
    assert_eq!(data_start % page, 0, "the data area starts a page");
    drop(batch);

    // Lengths 1..=255, over at least two laps of the ring (four pages: 16 KiB with 4 KiB
    // pages), so records start at every 8-byte offset class and some cross the end of the
    // data area.
    let per_round: usize = (1..=255).map(bpf_ringbuf::header::record_size).sum();
    let rounds = ((2 * size).div_ceil(per_round) + 1).max(6);
    let (mut records, mut crossed) = (0usize, 0usize);
    for round in 0..rounds {
        for len in 1..=255usize {
            if !producer.try_emit(&payload[..len], 0, 1) {
                let batch = ring.batch();
                for record in &batch {
                    let record = record.unwrap();
                    check_record(record, data_start, size, &mut crossed);
                    records += 1;
                }
                drop(batch);
                assert!(
                    producer.try_emit(&payload[..len], 0, 1),
                    "round {round} len {len}"
                );
            }
        }
    }
    for record in &ring.batch() {
        check_record(record.unwrap(), data_start, size, &mut crossed);
        records += 1;
    }
    assert!(records > 1000, "{records} records");
    assert!(crossed > 0, "no record crossed the end of the data area");
}

fn check_record(record: &[u8], data_start: usize, size: usize, crossed: &mut usize) {
    let address = record.as_ptr() as usize;
    assert_eq!(
        address % 8,
        0,
        "a {}-byte payload at {address:#x}",
        record.len()
    );
    let offset = address - 8 - data_start;
    assert!(
        offset < size,
        "the header lies in the first copy of the data area"
    );
    assert_eq!(
        record,
        &(0..record.len() as u32)
            .map(|b| b as u8)
            .collect::<Vec<_>>()[..]
    );
    if offset + 8 + record.len() > size {
        *crossed += 1; // read through the second mapping of the data area
    }
}

/// Reservations in a USER_RINGBUF are 8-byte aligned too, and the kernel accepts what we
/// place there.
#[test]
fn user_ringbuf_reservations_are_8_byte_aligned() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    let page = kit::page_size();
    let map = kit::user_ringbuf_map(page);
    let drain = kit::user_ringbuf_drain(map.as_fd(), 0);
    let ring = UserRingBuf::new(&map).unwrap();
    let mut submitted = 0i64;
    for round in 0..4 {
        for len in 1..=200usize {
            let mut sample = match ring.reserve(len) {
                Ok(sample) => sample,
                Err(_) => {
                    assert_eq!(drain.drain(), submitted, "round {round}");
                    submitted = 0;
                    ring.reserve(len).unwrap()
                }
            };
            assert_eq!(sample.as_ptr() as usize % 8, 0, "a {len}-byte reservation");
            sample.fill(len as u8);
            sample.submit();
            submitted += 1;
        }
    }
    assert_eq!(drain.drain(), submitted);
}

/// The kernel selftest's sample (`int marker; int seq; long value; char tail[16]`), as a
/// user would declare it.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Sample {
    marker: u32,
    seq: u32,
    value: u64,
    tail: [u64; 2],
}

/// `bytemuck::try_from_bytes` reads kernel records in place: it never fails on alignment.
#[test]
fn records_read_in_place_as_repr_c_structs() {
    require_kernel!();
    let map = kit::ringbuf_map(kit::page_size());
    let sampler = kit::selftest_sampler(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    sampler.trigger_samples();
    let batch = ring.batch();
    let records: Vec<&[u8]> = batch.iter().map(Result::unwrap).collect();
    // Two runs: one submitted sample (seq 0), one copied with bpf_ringbuf_output (seq 1).
    assert_eq!(records.len(), 2);
    for (seq, (record, value)) in records.iter().zip([333, 777]).enumerate() {
        let sample: &Sample = bytemuck::try_from_bytes(record).unwrap();
        assert_eq!(sample.marker, kit::SAMPLE_MARKER);
        assert_eq!(sample.seq, seq as u32);
        assert_eq!(sample.value, value);
        assert_eq!(sample.tail, [kit::SAMPLE_TAIL; 2]);
        // In place: the reference points into the ring, not into a copy.
        assert_eq!(core::ptr::from_ref(sample).cast::<u8>(), record.as_ptr());
    }
}

/// One exec, as `bpf_ringbuf_testkit::exec` writes it.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ExecEvent {
    pid: u32,
    tid: u32,
    ktime_ns: u64,
    comm: [u8; 16],
}

/// Real events: the exec tracer reports each exec this test causes, with the child's pid and
/// command name. Other processes exec at the same time; only our children's pids count.
#[test]
fn exec_events_of_our_children_arrive() {
    require_kernel!();
    assert_eq!(core::mem::size_of::<ExecEvent>(), exec::EXEC_EVENT_LEN);
    let map = kit::ringbuf_map(256 * 1024);
    let drops = kit::percpu_counter_map();
    let _tracer = ExecTracer::attach(map.as_fd(), drops.as_fd()).expect("attach exec tracer");
    let mut ring = RingBuf::new(&map).unwrap();

    let mut children = Vec::new();
    for _ in 0..5 {
        let mut child = Command::new("true").spawn().expect("run true");
        children.push(child.id());
        assert!(child.wait().unwrap().success());
    }
    // Each record was committed during its exec, before `wait` returned; a record of
    // another process may still be BUSY ahead of ours for a moment.
    let mut seen: Vec<ExecEvent> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while children
        .iter()
        .any(|pid| !seen.iter().any(|e| e.pid == *pid))
    {
        assert!(
            Instant::now() < deadline,
            "missing exec events: {children:?}"
        );
        ring.wait(Some(Duration::from_millis(50))).unwrap();
        for record in &ring.batch() {
            seen.push(*bytemuck::try_from_bytes::<ExecEvent>(record.unwrap()).unwrap());
        }
    }
    for pid in children {
        let event = seen.iter().find(|e| e.pid == pid).unwrap();
        assert_eq!(
            event.tid, pid,
            "a single-threaded child execs on its main thread"
        );
        assert_eq!(&event.comm[..5], b"true\0");
        assert!(event.ktime_ns > 0);
    }
    assert_eq!(kit::percpu_counters(drops.as_fd()).iter().sum::<u64>(), 0);
}
