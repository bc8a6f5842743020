//! Overwrite mode (`BPF_F_RB_OVERWRITE`, Linux 6.19+) against the real kernel: the kernel
//! selftest's `ringbuf_overwrite_mode` scenario, a burst of ten ring sizes read back as a
//! snapshot, and a reader racing a producer that laps it. On kernels without the flag these
//! tests skip with the reason, and the feature probe must report a clear `Unsupported` error.
//! The CI kernel matrix (`.ci/kernel-matrix`) runs them in a Linux 7.2 guest.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bpf_ringbuf::probe::{self, Feature, Support};
use bpf_ringbuf::{Error, MapSource, OpenError, OverwriteRingBuf, RingBuf, WaitOutcome};
use bpf_ringbuf_sys::{MapFlags, MapType};
use bpf_ringbuf_testkit::{self as kit, require_feature, require_kernel};

const OVERWRITE_SINCE: (u32, u32) = (6, 19);

/// `None` when overwrite-mode rings work here; otherwise why not (a skip reason).
fn overwrite_missing() -> Option<String> {
    kit::ring_flags_missing(MapType::RINGBUF, MapFlags::RB_OVERWRITE, OVERWRITE_SINCE)
}

fn overwrite_map(size: usize) -> OwnedFd {
    probe::create_ring_map(MapType::RINGBUF, size as u32, MapFlags::RB_OVERWRITE)
        .expect("create an overwrite-mode RINGBUF")
}

#[test]
fn overwrite_probe_gives_a_clear_answer_on_every_kernel() {
    require_kernel!();
    let feature = Feature::RingFlags {
        map_type: MapType::RINGBUF,
        flags: MapFlags::RB_OVERWRITE,
    };
    let supported = kit::kernel_version() >= OVERWRITE_SINCE;
    match probe::probe(feature).unwrap() {
        Support::Supported => assert!(
            supported,
            "probe says supported on {}",
            kit::kernel_release()
        ),
        Support::Unsupported { reason } => {
            assert!(
                !supported,
                "probe says unsupported on {}: {reason}",
                kit::kernel_release()
            );
            assert!(reason.contains("BPF_F_RB_OVERWRITE"), "{reason}");
        }
    }
    match probe::create_ring_map(
        MapType::RINGBUF,
        kit::page_size() as u32,
        MapFlags::RB_OVERWRITE,
    ) {
        Ok(map) => {
            assert!(supported);
            OverwriteRingBuf::new(&map).expect("open the overwrite ring");
        }
        Err(error @ Error::Unsupported { .. }) => {
            assert!(!supported, "{error}");
            let message = error.to_string();
            assert!(message.contains("BPF_F_RB_OVERWRITE"), "{message}");
            eprintln!("as expected on {}: {message}", kit::kernel_release());
        }
        Err(other) => panic!("expected Unsupported or a map, got {other}"),
    }
}

#[test]
fn overwrite_each_reader_refuses_the_other_mode() {
    require_kernel!();
    let normal = kit::ringbuf_map(kit::page_size());
    let error = OverwriteRingBuf::new(&normal).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Open {
                map: MapSource::Fd(fd),
                reason: OpenError::OverwriteMode {
                    map_overwrites: false
                },
            } if fd == normal.as_raw_fd()
        ),
        "{error}"
    );
    assert!(error.to_string().contains("RingBuf"), "{error}");
    require_feature!(overwrite_missing());
    let overwrite = overwrite_map(kit::page_size());
    let error = RingBuf::new(&overwrite).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Open {
                map: MapSource::Fd(fd),
                reason: OpenError::OverwriteMode {
                    map_overwrites: true
                },
            } if fd == overwrite.as_raw_fd()
        ),
        "{error}"
    );
    assert!(error.to_string().contains("zero-copy"), "{error}");
}

/// progs/test_ringbuf_overwrite.c and prog_tests/ringbuf.c `ringbuf_overwrite_mode`.
#[test]
fn overwrite_selftest_scenario() {
    require_kernel!();
    require_feature!(overwrite_missing());
    let size = kit::page_size();
    let map = overwrite_map(size);
    let (len1, len2) = (size / 2, size / 4);
    let len3 = size - len1 - len2 - 8 * 3;
    let len4 = len3 - 8;
    let program = kit::overwrite_selftest(map.as_fd(), [len1, len2, len3, len4].map(|l| l as u32));
    let mut ring = OverwriteRingBuf::new(&map).unwrap();
    let retval = program.try_run(1).retval;
    // Reservations 1, 2, 4 and 5 granted; 3 refused (uncommitted records fill the ring).
    assert_eq!(kit::overwrite_selftest_failures(retval), Vec::<u32>::new());

    let positions = ring.positions();
    assert_eq!(positions.consumer, 0);
    assert_eq!(positions.producer, len1 + len2 + len4 + len3 + 4 * 8);
    assert_eq!(ring.overwrite_pos(), len1 + 8);
    assert_eq!(ring.available().unwrap(), len2 + len4 + len3 + 3 * 8);

    let records = ring.snapshot_vec().unwrap();
    let lens: Vec<usize> = records.iter().map(Vec::len).collect();
    assert_eq!(lens, [len2, len4, len3], "record 1 was overwritten");
    assert_eq!(records[0][..8], [0xbb; 8]);
    assert_eq!(records[1][..8], [0xcc; 8]);
    assert!(records[2].iter().all(|&b| b == 0xdd));

    // Streaming: the reader starts at overwrite_pos and counts record 1 as lost.
    let mut buf = vec![0; size];
    let mut got = Vec::new();
    while let Some(len) = ring.read_into(&mut buf).unwrap() {
        got.push(len);
    }
    assert_eq!(got, [len2, len4, len3]);
    assert_eq!(ring.stats().lost_bytes, (len1 + 8) as u64);
    assert_eq!(ring.positions().consumer, positions.producer);
}

fn sequences(records: &[Vec<u8>]) -> Vec<u64> {
    records
        .iter()
        .map(|record| {
            let words: Vec<u64> = record
                .chunks(8)
                .map(|w| u64::from_ne_bytes(w.try_into().unwrap()))
                .collect();
            assert!(
                words.iter().all(|&w| w == words[0]),
                "torn record {words:?}"
            );
            words[0]
        })
        .collect()
}

#[test]
fn overwrite_burst_of_ten_ring_sizes_leaves_exactly_the_newest_records() {
    require_kernel!();
    require_feature!(overwrite_missing());
    let size = kit::page_size();
    let map = overwrite_map(size);
    let sequence = kit::percpu_counter_map();
    let producer = kit::sequence_filled(map.as_fd(), sequence.as_fd(), 56);
    let mut ring = OverwriteRingBuf::new(&map).unwrap();
    kit::pin_to_cpu(0); // one per-CPU sequence
    let total = (10 * size / 64) as u64;
    producer.run(total as u32);
    let records = ring.snapshot_vec().unwrap();
    // The kernel keeps at most size - 1 bytes: the newest (size - 1) / 64 records.
    assert_eq!(records.len(), (size - 1) / 64);
    let got = sequences(&records);
    let first = total - records.len() as u64 + 1;
    assert_eq!(
        got,
        (first..=total).collect::<Vec<_>>(),
        "the newest records, oldest first"
    );
    assert_eq!(
        ring.overwrite_pos(),
        ((total - records.len() as u64) * 64) as usize
    );
}

#[test]
fn overwrite_reader_racing_a_lapping_producer_delivers_no_torn_record() {
    require_kernel!();
    require_feature!(overwrite_missing());
    let map = overwrite_map(kit::page_size());
    let sequence = kit::percpu_counter_map();
    let producer = kit::sequence_filled(map.as_fd(), sequence.as_fd(), 120);
    let mut ring = OverwriteRingBuf::new(&map).unwrap();
    let cpus = kit::online_cpus();
    let done = Arc::new(AtomicBool::new(false));
    let producer_done = done.clone();
    const RUNS: u32 = 20_000;
    let thread = std::thread::spawn(move || {
        kit::pin_to_cpu(if cpus > 1 { 1 } else { 0 });
        for _ in 0..RUNS {
            producer.run(1);
        }
        producer_done.store(true, Ordering::Release);
    });
    kit::pin_to_cpu(0);
    let mut buf = [0u8; 128];
    let mut last = 0u64;
    let mut delivered = 0u64;
    loop {
        let finished = done.load(Ordering::Acquire);
        while let Some(len) = ring.read_into(&mut buf).unwrap() {
            assert_eq!(len, 120);
            let words: Vec<u64> = buf[..120]
                .chunks(8)
                .map(|w| u64::from_ne_bytes(w.try_into().unwrap()))
                .collect();
            assert!(
                words.iter().all(|&w| w == words[0]),
                "torn record delivered: {words:?}"
            );
            assert!(words[0] > last, "out of order: {} after {last}", words[0]);
            last = words[0];
            delivered += 1;
        }
        if finished {
            break;
        }
    }
    thread.join().unwrap();
    let produced: u64 = kit::percpu_counters(sequence.as_fd()).iter().sum();
    assert_eq!(produced, u64::from(RUNS));
    let stats = ring.stats();
    // Every record is 128 bytes in the ring: what was not delivered was counted lost.
    assert_eq!(stats.lost_bytes % 128, 0, "{stats:?}");
    assert_eq!(delivered + stats.lost_bytes / 128, produced, "{stats:?}");
    assert_eq!(last, produced, "the newest record is never lost");
    eprintln!(
        "delivered {delivered}, lost {} ({} torn copies)",
        stats.lost_bytes / 128,
        stats.torn_records
    );
}

#[test]
fn overwrite_wait_returns_when_the_producer_commits() {
    require_kernel!();
    require_feature!(overwrite_missing());
    let map = overwrite_map(kit::page_size());
    let sequence = kit::percpu_counter_map();
    let producer = kit::sequence_filled(map.as_fd(), sequence.as_fd(), 8);
    let mut ring = OverwriteRingBuf::new(&map).unwrap();
    assert_eq!(
        ring.wait(Some(Duration::from_millis(20))).unwrap(),
        WaitOutcome::TimedOut,
        "empty ring times out"
    );
    let thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        producer.run(1);
    });
    assert_eq!(
        ring.wait(Some(Duration::from_secs(10))).unwrap(),
        WaitOutcome::Ready
    );
    thread.join().unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(ring.read_into(&mut buf).unwrap(), Some(8));
}
