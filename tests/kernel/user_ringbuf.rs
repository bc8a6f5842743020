//! USER_RINGBUF against the real kernel: samples written through `UserRingBuf`, drained by BPF
//! programs calling `bpf_user_ringbuf_drain` (run with BPF_PROG_TEST_RUN; the program returns
//! what the drain returned). Mirrors the user-space-visible scenarios of the kernel selftest
//! `tools/testing/selftests/bpf/prog_tests/user_ringbuf.c`, and checks the kernel's verdicts
//! on malformed samples against the model (`bpf_ringbuf::model::KernelDrain`).

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use bpf_ringbuf::model::{HeapRing, Wakeup};
use bpf_ringbuf::producer::{MAX_SAMPLES_PER_DRAIN, MAX_SAMPLE_LEN};
use bpf_ringbuf::{Error, MapSource, OpenError, ReserveError, RingBuf, UserRingBuf};
use bpf_ringbuf_sys::MapType;
use bpf_ringbuf_testkit::{self as kit, require_feature, require_kernel};

const EINVAL: i64 = 22;
const E2BIG: i64 = 7;

/// The selftest's sample: `struct sample { int pid; long value; char comm[16]; u32 seq; }`
/// is 40 bytes; a 4096-byte ring holds 4096 / 48 = 85 of them.
const SAMPLE_LEN: usize = 40;

fn sample_bytes(seq: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as usize * 131 + i * 7 + 1) as u8)
        .collect()
}

fn write_samples(ring: &UserRingBuf, count: usize, first_seq: u32) -> Result<(), ReserveError> {
    for i in 0..count {
        let seq = first_seq + i as u32;
        let mut sample = ring.reserve(SAMPLE_LEN)?;
        sample.copy_from_slice(&sample_bytes(seq, SAMPLE_LEN));
        sample.submit();
    }
    Ok(())
}

#[test]
fn mappings_have_the_kernel_permissions() {
    use rustix::mm::{MprotectFlags, ProtFlags};
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    let page = kit::page_size();
    let map = kit::user_ringbuf_map(page);
    let fd = map.as_fd();
    // consumer_pos: read-only, and cannot be made writable or executable.
    assert!(kit::try_map(fd, 0, page, ProtFlags::READ | ProtFlags::WRITE).is_err());
    let consumer = kit::try_map(fd, 0, page, ProtFlags::READ).expect("RO consumer page");
    assert!(kit::try_mprotect(&consumer, MprotectFlags::READ | MprotectFlags::WRITE).is_err());
    assert!(kit::try_mprotect(&consumer, MprotectFlags::READ | MprotectFlags::EXEC).is_err());
    // producer_pos and data: read-write, never executable.
    let producer =
        kit::try_map(fd, page, page, ProtFlags::READ | ProtFlags::WRITE).expect("RW producer page");
    assert!(kit::try_mprotect(&producer, MprotectFlags::READ | MprotectFlags::EXEC).is_err());
    let data = kit::try_map(fd, 2 * page, page, ProtFlags::WRITE).expect("RW data");
    assert!(kit::try_mprotect(&data, MprotectFlags::READ | MprotectFlags::EXEC).is_err());
    // One page past the double-mapped data is refused.
    assert!(kit::try_map(fd, page, 4 * page, ProtFlags::READ).is_err());
    // The front end maps it the same way and can produce.
    let ring = UserRingBuf::new(&map).unwrap();
    assert_eq!(ring.size(), page);
    ring.output(&[7; 9]).unwrap();
    assert_eq!(ring.positions().producer, 24);
}

#[test]
fn map_type_is_checked_and_one_producer_per_map() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    let user_map = kit::user_ringbuf_map(kit::ring_size_at_least(4096));
    let kernel_map = kit::ringbuf_map(kit::ring_size_at_least(4096));
    match UserRingBuf::new(&kernel_map) {
        Err(Error::Open {
            map: MapSource::Fd(fd),
            reason: OpenError::WrongMapType { expected, found },
        }) => {
            assert_eq!(fd, kernel_map.as_raw_fd());
            assert_eq!(expected, MapType::USER_RINGBUF);
            assert_eq!(found, MapType::RINGBUF);
        }
        other => panic!("expected WrongMapType, got {other:?}"),
    }
    assert!(matches!(
        RingBuf::new(&user_map),
        Err(Error::Open {
            reason: OpenError::WrongMapType {
                expected: MapType::RINGBUF,
                found: MapType::USER_RINGBUF
            },
            ..
        })
    ));
    let array = kit::array_map(8);
    assert!(matches!(
        UserRingBuf::new(&array),
        Err(Error::Open {
            reason: OpenError::WrongMapType {
                found: MapType::ARRAY,
                ..
            },
            ..
        })
    ));

    let ring = UserRingBuf::new(&user_map).unwrap();
    let id = ring.map_id();
    match UserRingBuf::from_map_id(id) {
        Err(Error::Open {
            map: MapSource::Id(named),
            reason: OpenError::InUse { map_id },
        }) => assert_eq!((named, map_id), (id, id)),
        other => panic!("expected InUse, got {other:?}"),
    }
    // Through another fd of the same map too.
    assert!(matches!(
        UserRingBuf::new(&user_map),
        Err(Error::Open { reason: OpenError::InUse { map_id }, .. }) if map_id == id
    ));
    ring.output(b"first").unwrap();
    drop(ring);
    // Reopened by id: continues at the published producer_pos.
    let ring = UserRingBuf::from_map_id(id).unwrap();
    assert_eq!(ring.positions().producer, 16);
    ring.output(b"second").unwrap();
    let drainer = kit::user_ringbuf_drain(user_map.as_fd(), 0);
    assert_eq!(drainer.drain(), 2);
}

/// Posts a raw header of `len` at position 0 with `producer_pos` (bypassing the producer),
/// drains it in the kernel and in the model, and checks both give `errno` and consume nothing.
fn post_invalid_sample(len: u32, producer_pos: u64, errno: i64) {
    let size = kit::ring_size_at_least(4096);
    let map = kit::user_ringbuf_map(size);
    let raw = kit::RawUserRing::new(map.as_fd(), size);
    raw.write_header(0, len);
    raw.set_producer_pos(producer_pos);
    let drainer = kit::user_ringbuf_drain(map.as_fd(), 0);
    assert_eq!(drainer.drain(), -errno, "kernel verdict on len {len}");
    // The bad header is not skipped: the next drain fails the same way.
    assert_eq!(drainer.drain(), -errno);
    assert_eq!(raw.consumer_pos(), 0);

    // The same state in the model.
    let model = HeapRing::from_parts(size, &[0], 0, producer_pos as usize).unwrap();
    // SAFETY: the ring has no endpoint yet, so nothing is lent while the header is stored.
    unsafe { model.store_header(0, len) };
    let (_producer, drain) = model.split_user();
    let verdict = drain
        .drain(Wakeup::Adaptive, |_| ControlFlow::Continue(()))
        .unwrap_err();
    assert_eq!(
        i64::from(verdict.errno()),
        errno,
        "model verdict {verdict:?}"
    );
}

#[test]
fn misaligned_producer_pos_is_einval() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    // The selftest's post_misaligned: a 39-byte sample published at producer_pos 47.
    post_invalid_sample(39, 39 + 8, EINVAL);
}

#[test]
fn sample_past_producer_pos_is_einval() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    // The selftest's post_producer_wrong_offset: a 32-byte sample (40 bytes) with only 32
    // bytes produced.
    post_invalid_sample(32, 32, EINVAL);
}

#[test]
fn sample_larger_than_the_ring_is_e2big_and_refused_by_the_producer() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    // The selftest's post_larger_than_ringbuf_sz.
    let size = kit::ring_size_at_least(4096);
    post_invalid_sample(size as u32, size as u64 + 8, E2BIG);
    // Our producer never publishes such a header.
    let map = kit::user_ringbuf_map(size);
    let ring = UserRingBuf::new(&map).unwrap();
    assert_eq!(
        ring.reserve(size).unwrap_err(),
        ReserveError::TooLarge {
            len: size,
            max_len: size - 8
        }
    );
    assert_eq!(
        ring.reserve(MAX_SAMPLE_LEN + 1).unwrap_err(),
        ReserveError::TooLarge {
            len: MAX_SAMPLE_LEN + 1,
            max_len: size - 8
        }
    );
    assert_eq!(ring.positions().producer, 0);
    assert_eq!(kit::user_ringbuf_drain(map.as_fd(), 0).drain(), 0);
}

#[test]
fn basic_submit_and_drain() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    let size = kit::ring_size_at_least(4096);
    let map = kit::user_ringbuf_map(size);
    let ring = UserRingBuf::new(&map).unwrap();
    let drainer = kit::user_ringbuf_drain(map.as_fd(), 0);
    assert_eq!(drainer.drain(), 0);
    write_samples(&ring, 2, 0).unwrap();
    assert_eq!(ring.free_space().unwrap(), size - 2 * 48);
    assert_eq!(drainer.drain(), 2);
    let positions = ring.positions();
    assert_eq!((positions.consumer, positions.producer), (96, 96));
    assert_eq!(ring.free_space().unwrap(), size);
    assert_eq!(drainer.drain(), 0);
}

/// A forwarding setup: the user ring, a kernel ring the program re-emits into, and the
/// program.
struct Forward {
    user_map: std::os::fd::OwnedFd,
    kernel: RingBuf,
    scratch: std::os::fd::OwnedFd,
    drainer: kit::Drainer,
    max_len: u32,
}

impl Forward {
    fn new(user_size: usize, kernel_size: usize, max_len: u32) -> Self {
        let user_map = kit::user_ringbuf_map(user_size);
        let kernel_map = kit::ringbuf_map(kernel_size);
        let scratch = kit::array_map(kit::forward_scratch_size(max_len));
        let drainer = kit::user_ringbuf_forward(
            user_map.as_fd(),
            kernel_map.as_fd(),
            scratch.as_fd(),
            max_len,
        );
        let kernel = RingBuf::new(&kernel_map).unwrap();
        Forward {
            user_map,
            kernel,
            scratch,
            drainer,
            max_len,
        }
    }

    /// Drains once; returns the drain's result and the re-emitted samples.
    fn drain(&mut self) -> (i64, Vec<Vec<u8>>) {
        let drained = self.drainer.drain();
        let mut out = Vec::new();
        while let Some(record) = self.kernel.read_owned().unwrap() {
            out.push(record);
        }
        assert_eq!(
            kit::forward_failures(self.scratch.as_fd(), self.max_len),
            0,
            "the forwarding program failed on a sample"
        );
        (drained, out)
    }
}

#[test]
fn full_size_sample_round_trips() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    let size = kit::ring_size_at_least(4096);
    let mut forward = Forward::new(size, 4 * size, size as u32 - 8);
    let ring = UserRingBuf::new(&forward.user_map).unwrap();
    let bytes = sample_bytes(9, size - 8);
    let mut sample = ring.reserve(size - 8).unwrap();
    sample.copy_from_slice(&bytes);
    sample.submit();
    assert_eq!(ring.free_space().unwrap(), 0);
    assert!(matches!(
        ring.reserve(0),
        Err(ReserveError::NoSpace {
            needed: 8,
            available: 0
        })
    ));
    let (drained, out) = forward.drain();
    assert_eq!(drained, 1);
    assert_eq!(out, [bytes]);
    assert_eq!(ring.free_space().unwrap(), size);
}

#[test]
fn odd_sizes_are_aligned_and_arrive_intact() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    let mut forward = Forward::new(
        kit::ring_size_at_least(4096),
        kit::ring_size_at_least(16384),
        256,
    );
    let ring = UserRingBuf::new(&forward.user_map).unwrap();
    let mut expected = Vec::new();
    let mut position = 0;
    // The selftest's post_alignment_autoadjust (sizeof(sample) + 1), and every small size.
    for len in (0..=17).chain([SAMPLE_LEN + 1, 255]) {
        let bytes = sample_bytes(len as u32, len);
        let mut sample = ring.reserve(len).unwrap();
        assert_eq!(sample.position(), position);
        sample.copy_from_slice(&bytes);
        sample.submit();
        position += bpf_ringbuf::header::record_size(len);
        assert_eq!(ring.positions().producer, position);
        assert_eq!(position % 8, 0);
        expected.push(bytes);
    }
    let (drained, out) = forward.drain();
    assert_eq!(drained, expected.len() as i64);
    assert_eq!(out, expected);
}

#[test]
fn overfill_is_refused_and_corrupts_nothing() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    let size = kit::ring_size_at_least(4096);
    let mut forward = Forward::new(size, 4 * size, SAMPLE_LEN as u32);
    let ring = UserRingBuf::new(&forward.user_map).unwrap();
    let max_entries = size / 48;
    // The selftest's overfill: write five rings' worth.
    let mut written = 0;
    let error = loop {
        match write_samples(&ring, 1, written) {
            Ok(()) => written += 1,
            Err(error) => break error,
        }
        assert!(written as usize <= 5 * max_entries);
    };
    assert_eq!(written as usize, max_entries);
    assert_eq!(
        error,
        ReserveError::NoSpace {
            needed: 48,
            available: size - max_entries * 48
        }
    );
    let (drained, out) = forward.drain();
    assert_eq!(drained, max_entries as i64);
    let expected: Vec<Vec<u8>> = (0..written)
        .map(|seq| sample_bytes(seq, SAMPLE_LEN))
        .collect();
    assert_eq!(out, expected);
}

#[test]
fn discards_are_skipped_and_their_space_reused() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    let size = kit::ring_size_at_least(4096);
    let map = kit::user_ringbuf_map(size);
    let ring = UserRingBuf::new(&map).unwrap();
    let drainer = kit::user_ringbuf_drain(map.as_fd(), 0);
    let mut discarded = 0;
    loop {
        match ring.reserve(8) {
            Ok(mut token) => {
                token.copy_from_slice(&0xdead_beef_u64.to_ne_bytes());
                if discarded % 2 == 0 {
                    token.discard();
                } else {
                    drop(token); // dropping discards too
                }
                discarded += 1;
            }
            Err(error) => {
                assert!(matches!(error, ReserveError::NoSpace { .. }), "{error}");
                break;
            }
        }
    }
    assert_eq!(discarded, size / 16);
    assert_eq!(drainer.drain(), 0, "discarded samples are not delivered");
    let positions = ring.positions();
    assert_eq!(positions.consumer, size, "but their space is freed");
    ring.reserve(8).unwrap().discard();
    assert_eq!(drainer.drain(), 0);
    assert_eq!(ring.positions().consumer, size + 16);
}

#[test]
fn eight_thousand_samples_in_a_loop() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    let size = kit::ring_size_at_least(4096);
    let map = kit::user_ringbuf_map(size);
    let ring = UserRingBuf::new(&map).unwrap();
    let drainer = kit::user_ringbuf_drain(map.as_fd(), 0);
    let max_entries = size / 48;
    let total = 8192;
    let mut read = 0;
    let mut remaining = total;
    while remaining > 0 {
        let batch = remaining.min(max_entries);
        write_samples(&ring, batch, (total - remaining) as u32).unwrap();
        let drained = drainer.drain();
        assert_eq!(drained, batch as i64);
        read += drained;
        remaining -= batch;
    }
    assert_eq!(read, total as i64);
    let positions = ring.positions();
    assert_eq!(positions.consumer, total * 48);
    assert_eq!(positions.producer, total * 48);
}

#[test]
fn one_drain_visits_at_most_131072_samples() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    let extra = 100;
    let size = 2 << 20; // holds 131072 + extra empty samples of 8 bytes
    let map = kit::user_ringbuf_map(size);
    let ring = UserRingBuf::new(&map).unwrap();
    let drainer = kit::user_ringbuf_drain(map.as_fd(), 0);
    for _ in 0..MAX_SAMPLES_PER_DRAIN + extra {
        ring.reserve(0).unwrap().submit();
    }
    assert_eq!(drainer.drain(), MAX_SAMPLES_PER_DRAIN as i64);
    assert_eq!(ring.positions().consumer, MAX_SAMPLES_PER_DRAIN * 8);
    assert_eq!(drainer.drain(), extra as i64);

    // Discarded samples count towards the limit, but not in the result.
    let start = ring.positions().consumer;
    for i in 0..MAX_SAMPLES_PER_DRAIN + extra {
        let sample = ring.reserve(0).unwrap();
        if i % 2 == 0 {
            sample.discard();
        } else {
            sample.submit();
        }
    }
    assert_eq!(drainer.drain(), (MAX_SAMPLES_PER_DRAIN / 2) as i64);
    assert_eq!(ring.positions().consumer - start, MAX_SAMPLES_PER_DRAIN * 8);
    assert_eq!(drainer.drain(), (extra / 2) as i64);
}

#[test]
fn reserve_with_timeout_times_out_then_succeeds_after_a_drain() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    let size = kit::ring_size_at_least(4096);
    let map = kit::user_ringbuf_map(size);
    let ring = UserRingBuf::new(&map).unwrap();
    let drainer = kit::user_ringbuf_drain(map.as_fd(), 0);
    let mut written = 0;
    while ring.reserve(8).map(|token| token.submit()).is_ok() {
        written += 1;
    }
    assert_eq!(written, size as i64 / 16);

    let timeout = Duration::from_millis(200);
    let started = Instant::now();
    match ring.reserve_timeout(8, Some(timeout)) {
        Err(Error::Reserve(ReserveError::NoSpace {
            needed: 16,
            available: 0,
        })) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() >= timeout, "returned before the timeout");
    // A sample that can never fit fails at once instead of waiting.
    assert!(matches!(
        ring.reserve_timeout(size, None),
        Err(Error::Reserve(ReserveError::TooLarge { .. }))
    ));

    let before = ring.wait_stats();
    let kick = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        drainer.drain()
    });
    let long = Duration::from_secs(10);
    let started = Instant::now();
    let token = ring
        .reserve_timeout(8, Some(long))
        .expect("space after the drain");
    // It returned before its timeout: the kernel's wakeup after the drain ended the sleep.
    assert!(started.elapsed() < long);
    assert_eq!(kick.join().unwrap(), written);
    token.discard();
    let after = ring.wait_stats();
    assert!(after.wakeups > before.wakeups, "{before:?} {after:?}");
}

#[test]
fn a_no_wakeup_drain_frees_space_silently_and_the_timeout_still_finds_it() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    let size = kit::ring_size_at_least(4096);
    let map = kit::user_ringbuf_map(size);
    let ring = UserRingBuf::new(&map).unwrap();
    let silent = kit::user_ringbuf_drain(map.as_fd(), kit::NO_WAKEUP);
    while ring.reserve(8).map(|token| token.submit()).is_ok() {}
    // Consume the event epoll reports for the initially writable fd.
    assert!(ring
        .reserve_timeout(8, Some(Duration::from_millis(50)))
        .is_err());
    let before = ring.wait_stats();
    let kick = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        silent.drain()
    });
    let timeout = Duration::from_millis(400);
    let started = Instant::now();
    let token = ring
        .reserve_timeout(8, Some(timeout))
        .expect("the last attempt at the timeout finds the space");
    assert!(
        started.elapsed() >= timeout,
        "BPF_RB_NO_WAKEUP must not wake the producer"
    );
    assert_eq!(kick.join().unwrap(), size as i64 / 16);
    assert_eq!(ring.wait_stats().wakeups, before.wakeups);
    token.submit();
}

#[test]
fn a_held_reservation_holds_back_later_samples_until_committed() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    let mut forward = Forward::new(
        kit::ring_size_at_least(4096),
        kit::ring_size_at_least(16384),
        64,
    );
    let ring = UserRingBuf::new(&forward.user_map).unwrap();
    let mut first = ring.reserve(10).unwrap();
    let mut second = ring.reserve(20).unwrap();
    ring.output(b"third").unwrap();
    first.copy_from_slice(&[1; 10]);
    second.copy_from_slice(&[2; 20]);
    second.submit();
    // BUSY at the head: the kernel stops there, without error, and consumes nothing.
    let (drained, out) = forward.drain();
    assert_eq!((drained, out.len()), (0, 0));
    assert_eq!(ring.positions().consumer, 0);
    first.submit();
    let (drained, out) = forward.drain();
    assert_eq!(drained, 3);
    assert_eq!(out, [vec![1; 10], vec![2; 20], b"third".to_vec()]);
    // A discarded head releases the rest too.
    let head = ring.reserve(4).unwrap();
    ring.output(b"after").unwrap();
    assert_eq!(forward.drain().0, 0);
    drop(head);
    let (drained, out) = forward.drain();
    assert_eq!(drained, 1);
    assert_eq!(out, [b"after".to_vec()]);
}

#[test]
fn opens_from_a_pinned_path() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    let map = kit::user_ringbuf_map(kit::ring_size_at_least(4096));
    // A private BPF filesystem, so the test neither needs nor touches /sys/fs/bpf.
    let bpffs = kit::PrivateBpffs::new().expect("mount a private bpffs");
    let pin = bpffs.path().join("user_ring");
    bpf_ringbuf_sys::obj_pin(map.as_fd(), &pin).unwrap();
    let ring = UserRingBuf::from_pinned(&pin).unwrap();
    ring.output(b"via the pin").unwrap();
    assert_eq!(ring.positions().producer, 24);
    assert_eq!(kit::user_ringbuf_drain(map.as_fd(), 0).drain(), 1);
    let missing = bpffs.path().join("missing");
    let error = UserRingBuf::from_pinned(&missing).unwrap_err();
    match &error {
        Error::Open {
            map: MapSource::Pinned(path),
            reason: OpenError::NotFound,
        } => assert_eq!(path, &missing),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(
        error.to_string().contains(&*missing.to_string_lossy()),
        "{error}"
    );
    // The pinned map is claimed by the producer opened through it, however it is named.
    let id = ring.map_id();
    assert!(matches!(
        UserRingBuf::from_pinned(&pin),
        Err(Error::Open {
            map: MapSource::Pinned(_),
            reason: OpenError::InUse { map_id },
        }) if map_id == id
    ));
    std::fs::remove_file(&pin).unwrap();
}

#[test]
fn round_trip_random_sizes_across_wraparound() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    let user_size = kit::ring_size_at_least(16384);
    let max_len = 3000;
    let mut forward = Forward::new(user_size, 4 * user_size, max_len as u32);
    let ring = UserRingBuf::new(&forward.user_map).unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |bound: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % bound as u64) as usize
    };
    let mut expected = VecDeque::new();
    let mut seq = 0u32;
    let mut delivered = 0;
    for _round in 0..200 {
        // Reserve a few at once, commit them in a shuffled order, some discarded.
        let mut held = Vec::new();
        for _ in 0..1 + next(6) {
            let len = if next(8) == 0 {
                next(8)
            } else {
                next(max_len + 1)
            };
            match ring.reserve(len) {
                Ok(mut sample) => {
                    let bytes = sample_bytes(seq, len);
                    seq += 1;
                    sample.copy_from_slice(&bytes);
                    let keep = next(5) != 0;
                    held.push((sample, bytes, keep));
                }
                Err(ReserveError::NoSpace { .. }) => break,
                Err(error) => panic!("{error}"),
            }
        }
        for (_, bytes, keep) in &held {
            if *keep {
                expected.push_back(bytes.clone());
            }
        }
        while !held.is_empty() {
            let (sample, _, keep) = held.swap_remove(next(held.len()));
            if keep {
                sample.submit();
            } else {
                sample.discard();
            }
        }
        if next(3) == 0 {
            let (drained, out) = forward.drain();
            assert_eq!(drained, out.len() as i64);
            for record in out {
                assert_eq!(Some(record), expected.pop_front());
                delivered += 1;
            }
            assert!(expected.is_empty());
        }
    }
    let (_, out) = forward.drain();
    for record in out {
        assert_eq!(Some(record), expected.pop_front());
        delivered += 1;
    }
    assert!(expected.is_empty());
    assert!(delivered > 200, "only {delivered} samples went round");
    let positions = ring.positions();
    assert!(
        positions.producer > 4 * user_size,
        "the ring wrapped around several times ({positions:?})"
    );
    assert_eq!(positions.consumer, positions.producer);
}

#[test]
fn kernel_and_model_drain_the_same_sequence_alike() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    // The same operations on a real map and on the heap model: positions, results and the
    // payloads must agree at every step.
    let size = kit::ring_size_at_least(4096);
    let mut forward = Forward::new(size, 4 * size, 600);
    let ring = UserRingBuf::new(&forward.user_map).unwrap();
    let (model, drain) = HeapRing::new(size).unwrap().split_user();
    let mut rng = 12345u32;
    for step in 0..400 {
        rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let len = (rng >> 8) as usize % 601;
        let bytes = sample_bytes(step, len);
        let kernel_result = ring.output(&bytes);
        let model_result = model.output(&bytes);
        assert_eq!(kernel_result, model_result, "step {step}");
        if (rng >> 4) % 4 == 0 {
            let (drained, out) = forward.drain();
            let mut model_out = Vec::new();
            let model_drained = drain
                .drain(Wakeup::Adaptive, |sample| {
                    model_out.push(sample.to_vec());
                    ControlFlow::Continue(())
                })
                .unwrap();
            assert_eq!(drained, model_drained as i64);
            assert_eq!(out, model_out);
        }
        assert_eq!(ring.positions(), model.positions(), "step {step}");
    }
}

#[test]
fn wakeups_follow_the_drain_flags_when_nothing_is_drained() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    let size = kit::ring_size_at_least(4096);
    let map = kit::user_ringbuf_map(size);
    let ring = UserRingBuf::new(&map).unwrap();
    // A BUSY head: drains visit no sample. 64 bytes stay free: the fd is writable (the
    // kernel's poll wants any free byte), but a 100-byte sample (112 bytes) does not fit.
    let head = ring.reserve(8).unwrap();
    while ring.free_space().unwrap() > 64 {
        ring.reserve(8).unwrap().submit();
    }
    // Consume the event epoll reports for the initially writable fd.
    assert!(ring
        .reserve_timeout(100, Some(Duration::from_millis(20)))
        .is_err());

    for (flags, woken) in [
        (0, false),
        (kit::NO_WAKEUP, false),
        (kit::FORCE_WAKEUP, true),
    ] {
        let drainer = kit::user_ringbuf_drain(map.as_fd(), flags);
        let before = ring.wait_stats();
        let kick = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drainer.drain()
        });
        let result = ring.reserve_timeout(100, Some(Duration::from_millis(300)));
        assert!(
            matches!(
                result,
                Err(Error::Reserve(ReserveError::NoSpace {
                    needed: 112,
                    available: 64
                }))
            ),
            "{result:?}"
        );
        assert_eq!(kick.join().unwrap(), 0, "the BUSY head blocks the drain");
        let after = ring.wait_stats();
        // Woken only by BPF_RB_FORCE_WAKEUP (no sample was drained); the wakeup found too
        // little space, so it was spurious and the wait went on to its timeout.
        assert_eq!(
            after.wakeups > before.wakeups,
            woken,
            "flags {flags}: {before:?} -> {after:?}"
        );
        assert_eq!(
            after.spurious_wakeups - before.spurious_wakeups,
            after.wakeups - before.wakeups
        );
    }
    head.submit();
    let drainer = kit::user_ringbuf_drain(map.as_fd(), 0);
    assert_eq!(drainer.drain(), (size as i64 - 64) / 16);
}
