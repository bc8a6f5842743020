//! RINGBUF against the real kernel: records produced by BPF programs run with
//! BPF_PROG_TEST_RUN, read through `RingBuf`. Mirrors the user-space-visible scenarios of the
//! kernel selftest `tools/testing/selftests/bpf/prog_tests/ringbuf.c` (mapping permissions,
//! positions and `bpf_ringbuf_query`, submit/discard, early stop, `consume_n`, the wakeup
//! modes, a hostile `consumer_pos`), and adds what a reader must survive: every payload size,
//! wrapping records, two producer CPUs, reopening a pinned map mid-stream, BUSY head records.
//!
//! Every test uses its own maps, so the tests run in parallel. Wakeups travel through the
//! kernel's irq_work, asynchronously: a test that expects a signal allows [`SIGNAL`] for it;
//! a test that expects none watches for [`NO_SIGNAL`]. The kernel's wakeup decisions are
//! observed with a [`kit::SignalWatch`] of the test's own on the map fd, made before the
//! records in question are produced.

use std::ops::ControlFlow;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use bpf_ringbuf::geometry::distance;
use bpf_ringbuf::{
    Error, MapSource, OpenError, ReadError, Readiness, RingBuf, UserRingBuf, WaitOutcome,
};
use bpf_ringbuf_sys::{map_info, obj_pin, MapType, Mapping};
use bpf_ringbuf_testkit::{
    self as kit, require_feature, require_kernel, Commit, EventFlags, SamplerWord, SignalWatch,
};
use rustix::io::Errno;
use rustix::mm::{MapFlags, MprotectFlags, MremapFlags, ProtFlags};

/// How long a test waits for a wakeup it expects (irq_work is asynchronous).
const SIGNAL: Duration = Duration::from_secs(2);
/// How long a test watches for a wakeup it expects not to come.
const NO_SIGNAL: Duration = Duration::from_millis(200);

const RW: ProtFlags = ProtFlags::READ.union(ProtFlags::WRITE);

fn page() -> usize {
    kit::page_size()
}

/// Bytes a record of `len` payload bytes occupies in the ring.
fn record_size(len: usize) -> usize {
    (len + 8 + 7) & !7
}

/// A payload that differs for every (`seed`, `len`) pair.
fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(131) ^ seed.wrapping_mul(29) ^ len) as u8)
        .collect()
}

/// Reads every committed record as an owned copy.
fn drain(ring: &mut RingBuf) -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    while let Some(record) = ring.read_owned().unwrap() {
        records.push(record);
    }
    records
}

/// `mmap` with any flags; the result is unmapped right away if it succeeded (the tests only
/// look at whether the kernel allows it).
fn try_mmap(
    map: BorrowedFd<'_>,
    offset: usize,
    len: usize,
    prot: ProtFlags,
    flags: MapFlags,
) -> Result<(), Errno> {
    // SAFETY: a null hint without MAP_FIXED never replaces an existing mapping.
    let address =
        unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, prot, flags, map, offset as u64) }?;
    // SAFETY: `address`/`len` is the mapping just created, used by nobody else.
    unsafe { rustix::mm::munmap(address, len) }.expect("munmap");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Mapping permissions (selftest `ringbuf_subtest`, first part).

#[test]
fn consumer_page_is_writable_at_offset_zero_for_exactly_one_page() {
    require_kernel!();
    let map = kit::ringbuf_map(page());
    let ring = RingBuf::new(&map).unwrap();
    let consumer = kit::ConsumerPosWriter::new(map.as_fd());
    // Writable, and shared with the ring's own mapping: the reader sees the word change, and
    // reports that someone else wrote it.
    consumer.store(64);
    assert_eq!(ring.positions().consumer, 64);
    assert_eq!(
        ring.available(),
        Err(ReadError::ConsumerPosMoved {
            expected: 0,
            found: 64
        })
    );
    consumer.store(0);
    assert_eq!(ring.positions().consumer, 0);
    assert_eq!(ring.available(), Ok(0));

    // Writable means exactly one page at offset 0.
    assert_eq!(
        Mapping::map_shared(map.as_fd(), 0, 2 * page(), RW).unwrap_err(),
        Errno::PERM
    );
    assert_eq!(
        try_mmap(map.as_fd(), 0, page(), ProtFlags::WRITE, MapFlags::SHARED),
        Ok(())
    );
    // Growing the writable mapping is refused too.
    // SAFETY: MAYMOVE without FIXED: on success the kernel would pick a new range (and the
    // test fails); on failure the mapping is left as it was.
    let grown = unsafe {
        rustix::mm::mremap(
            consumer.mapping().as_ptr().as_ptr().cast(),
            page(),
            2 * page(),
            MremapFlags::MAYMOVE,
        )
    };
    assert!(grown.is_err(), "mremap grew the consumer page: {grown:?}");
    // It cannot be made executable.
    assert!(kit::try_mprotect(consumer.mapping(), MprotectFlags::EXEC).is_err());
    assert_eq!(
        kit::try_mprotect(consumer.mapping(), MprotectFlags::READ),
        Ok(())
    );
}

#[test]
fn producer_page_and_data_are_read_only() {
    require_kernel!();
    let map = kit::ringbuf_map(page());
    let fd = map.as_fd();
    for (offset, len) in [
        (page(), page()),
        (2 * page(), page()),
        (3 * page(), page()),
        (2 * page(), 2 * page()),
    ] {
        for prot in [ProtFlags::WRITE, RW] {
            assert_eq!(
                Mapping::map_shared(fd, offset as u64, len, prot).unwrap_err(),
                Errno::PERM,
                "offset {offset} len {len} {prot:?}"
            );
        }
    }
    // Read-only: everything from offset 0 (consumer, producer, data twice), or from the
    // producer page on.
    for (offset, len) in [(0, 4 * page()), (page(), page()), (page(), 3 * page())] {
        let mapping = Mapping::map_shared(fd, offset as u64, len, ProtFlags::READ).unwrap();
        assert_eq!(
            kit::try_mprotect(&mapping, MprotectFlags::WRITE),
            Err(Errno::ACCESS),
            "offset {offset} len {len}"
        );
        assert_eq!(
            kit::try_mprotect(&mapping, MprotectFlags::READ | MprotectFlags::WRITE),
            Err(Errno::ACCESS)
        );
        assert_eq!(
            kit::try_mprotect(&mapping, MprotectFlags::EXEC),
            Err(Errno::ACCESS)
        );
    }
}

#[test]
fn private_and_executable_mappings_are_refused() {
    require_kernel!();
    let map = kit::ringbuf_map(page());
    let fd = map.as_fd();
    // PROT_EXEC is refused (EPERM, do_mmap's path_noexec check) since the anon inodes behind
    // map fds became SB_I_NOEXEC in Linux 6.15 ("anon_inode: raise SB_I_NODEV and
    // SB_I_NOEXEC"); older kernels map it (the kernel matrix sees 6.1 and 6.12 do).
    let exec = if kit::kernel_version() >= (6, 15) {
        Err(Errno::PERM)
    } else {
        Ok(())
    };
    for (offset, len) in [(0, page()), (page(), 3 * page())] {
        assert_eq!(
            try_mmap(fd, offset, len, ProtFlags::READ, MapFlags::PRIVATE),
            Err(Errno::INVAL),
            "MAP_PRIVATE at {offset}"
        );
        assert_eq!(
            try_mmap(
                fd,
                offset,
                len,
                ProtFlags::READ | ProtFlags::EXEC,
                MapFlags::SHARED
            ),
            exec,
            "PROT_EXEC at {offset} on Linux {}",
            kit::kernel_release()
        );
    }
}

#[test]
fn mapping_one_page_too_many_is_refused() {
    require_kernel!();
    let size = 4 * page();
    let map = kit::ringbuf_map(size);
    let fd = map.as_fd();
    let full = page() + 2 * size;
    Mapping::map_shared(fd, page() as u64, full, ProtFlags::READ).unwrap();
    assert_eq!(
        Mapping::map_shared(fd, page() as u64, full + page(), ProtFlags::READ).unwrap_err(),
        Errno::INVAL
    );
    Mapping::map_shared(fd, 0, page() + full, ProtFlags::READ).unwrap();
    assert_eq!(
        Mapping::map_shared(fd, 0, 2 * page() + full, ProtFlags::READ).unwrap_err(),
        Errno::INVAL
    );
    assert_eq!(
        Mapping::map_shared(fd, (page() + full) as u64, page(), ProtFlags::READ).unwrap_err(),
        Errno::INVAL
    );
    // And the ring still works after all that.
    let mut ring = RingBuf::new(&map).unwrap();
    let out = kit::variable_output(fd);
    out.emit(b"still here", 0, 1);
    assert_eq!(drain(&mut ring), [b"still here".to_vec()]);
}

// ---------------------------------------------------------------------------------------------
// Positions, submit and discard (selftest `ringbuf_subtest`, with the BPF side of
// progs/test_ringbuf.c).

#[test]
fn selftest_samples_positions_and_early_stop() {
    require_kernel!();
    let map = kit::ringbuf_map(page());
    let sampler = kit::selftest_sampler(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    let rec = record_size(kit::SAMPLE_LEN) as u64;

    sampler.trigger_samples();
    // 2 submitted + 1 discarded records, as the kernel reports them...
    let state = sampler.state();
    assert_eq!(state[SamplerWord::AvailData as usize], 3 * rec);
    assert_eq!(state[SamplerWord::RingSize as usize], page() as u64);
    assert_eq!(state[SamplerWord::ConsPos as usize], 0);
    assert_eq!(state[SamplerWord::ProdPos as usize], 3 * rec);
    // ...and as the reader sees them.
    assert_eq!(ring.available().unwrap(), 3 * rec as usize);
    assert_eq!(ring.size(), page());
    assert_eq!(ring.positions().consumer, 0);
    assert_eq!(ring.positions().producer, 3 * rec as usize);

    // The callback stops at the second sample (the selftest's -EDONE).
    let mut samples = Vec::new();
    let delivered = ring
        .consume(usize::MAX, |record| {
            let (seq, value) = kit::sample(record);
            samples.push((seq, value));
            if seq == 1 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(delivered, 2);
    assert_eq!(samples, [(0, 333), (1, 777)]);
    // The discarded reservation comes before its copy (reserved first), so stopping at the
    // copy consumed all three records.
    assert_eq!(ring.positions().consumer, 3 * rec as usize);
    // An extra poll returns nothing.
    assert_eq!(
        ring.consume(usize::MAX, |_| ControlFlow::Continue(())),
        Ok(0)
    );
    assert_eq!(ring.positions().consumer, 3 * rec as usize);
    assert_eq!(sampler.get(SamplerWord::Dropped), 0);
    assert_eq!(sampler.get(SamplerWord::Total), 2);
    assert_eq!(sampler.get(SamplerWord::Discarded), 1);

    // The kernel sees the consumer position we published.
    sampler.trigger_samples();
    let state = sampler.state();
    assert_eq!(state[SamplerWord::ConsPos as usize], 3 * rec);
    assert_eq!(state[SamplerWord::ProdPos as usize], 6 * rec);
    assert_eq!(state[SamplerWord::AvailData as usize], 3 * rec);
    let samples: Vec<_> = drain(&mut ring).iter().map(|r| kit::sample(r)).collect();
    assert_eq!(samples, [(2, 333), (3, 777)]);
    assert_eq!(ring.available(), Ok(0));
}

#[test]
fn selftest_wakeup_modes_seen_by_a_background_waiter() {
    require_kernel!();
    let map = kit::ringbuf_map(page());
    let sampler = kit::selftest_sampler(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    let watch = SignalWatch::new(ring.map_fd(), EventFlags::IN);
    // A first round, read in full: the consumer has caught up.
    sampler.trigger_samples();
    assert!(watch.wait(SIGNAL), "adaptive wakeup");
    assert_eq!(drain(&mut ring).len(), 2);
    assert!(!watch.wait(Duration::from_millis(20)));

    let (signalled, waited) = mpsc::channel();
    let waiter = thread::spawn(move || {
        let signal = watch.wait(Duration::from_secs(10));
        signalled.send(signal).unwrap();
    });
    thread::sleep(Duration::from_millis(50));

    // Notifications off.
    sampler.set(SamplerWord::Flags, kit::NO_WAKEUP);
    sampler.trigger_samples();
    assert_eq!(
        waited.recv_timeout(NO_SIGNAL),
        Err(mpsc::RecvTimeoutError::Timeout)
    );
    assert_eq!(sampler.get(SamplerWord::Dropped), 0);
    assert_eq!(sampler.get(SamplerWord::Total), 2);
    assert_eq!(sampler.get(SamplerWord::Discarded), 1);

    // Adaptive again, but the consumer is behind now: still no notification.
    sampler.set(SamplerWord::Flags, 0);
    sampler.trigger_samples();
    assert_eq!(
        waited.recv_timeout(NO_SIGNAL),
        Err(mpsc::RecvTimeoutError::Timeout)
    );

    // Forced notification.
    sampler.set(SamplerWord::Value, 333);
    sampler.run();
    sampler.set(SamplerWord::Flags, kit::FORCE_WAKEUP);
    sampler.set(SamplerWord::Value, 777);
    sampler.run();
    assert_eq!(waited.recv_timeout(SIGNAL), Ok(true));
    waiter.join().unwrap();

    // 3 rounds, 2 samples each, in order.
    let samples: Vec<_> = drain(&mut ring).iter().map(|r| kit::sample(r)).collect();
    let expected: Vec<_> = (2..8)
        .map(|seq| (seq, if seq % 2 == 0 { 333 } else { 777 }))
        .collect();
    assert_eq!(samples, expected);
    assert_eq!(sampler.get(SamplerWord::Dropped), 0);
}

#[test]
fn stamped_records_submit_and_discard() {
    require_kernel!();
    let map = kit::ringbuf_map(kit::ring_size_at_least(4 * 4096));
    let sequence = kit::percpu_counter_map();
    let drops = kit::percpu_counter_map();
    let submit = kit::stamped(
        map.as_fd(),
        sequence.as_fd(),
        drops.as_fd(),
        40,
        Commit::Submit,
        0,
    );
    let discard = kit::stamped(
        map.as_fd(),
        sequence.as_fd(),
        drops.as_fd(),
        40,
        Commit::Discard,
        0,
    );
    let mut ring = RingBuf::new(&map).unwrap();
    // Sequence numbers are per CPU: stay on one.
    kit::pin_to_cpu(0);
    submit.run(2);
    discard.run(3);
    submit.run(1);
    let mut seen = Vec::new();
    ring.consume(usize::MAX, |record| {
        assert_eq!(record.len(), 40);
        assert_eq!(&record[16..], &kit::stamped_tail(40)[..]);
        seen.push(kit::stamp(record).1);
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(seen, [1, 2, 6]);
    let positions = ring.positions();
    assert_eq!(positions.consumer, 6 * 48);
    assert_eq!(positions.producer, 6 * 48);
}

#[test]
fn discarded_records_are_consumed_without_being_delivered() {
    require_kernel!();
    let map = kit::ringbuf_map(4 * page());
    let sequence = kit::percpu_counter_map();
    let drops = kit::percpu_counter_map();
    let discard = kit::stamped(
        map.as_fd(),
        sequence.as_fd(),
        drops.as_fd(),
        24,
        Commit::Discard,
        0,
    );
    let mut ring = RingBuf::new(&map).unwrap();
    discard.run(10);
    assert_eq!(ring.available(), Ok(10 * 32));
    assert_eq!(ring.check_before_sleep(), Readiness::Readable);
    assert_eq!(
        ring.consume(usize::MAX, |_| ControlFlow::Continue(())),
        Ok(0)
    );
    assert_eq!(ring.positions().consumer, 10 * 32);
    assert_eq!(ring.check_before_sleep(), Readiness::Empty);
    let batch = ring.batch();
    assert!(batch.next_record().is_none());
    assert_eq!(batch.consumed_bytes(), 0);
}

// ---------------------------------------------------------------------------------------------
// Budgets, early stop, partial reads.

#[test]
fn budget_consumes_n_records_at_a_time() {
    require_kernel!();
    // Selftest `ringbuf_n_subtest`: 32 samples of value 42, consumed 4 at a time.
    let map = kit::ringbuf_map(page());
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    out.emit(&42u64.to_ne_bytes(), 0, 32);
    for round in 1..=8 {
        let delivered = ring
            .consume(4, |record| {
                assert_eq!(record, 42u64.to_ne_bytes());
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(delivered, 4);
        assert_eq!(ring.positions().consumer, round * 4 * record_size(8));
    }
    assert_eq!(ring.consume(4, |_| ControlFlow::Continue(())), Ok(0));
    assert_eq!(ring.consume(0, |_| unreachable!()), Ok(0));
}

#[test]
fn callback_break_stops_early_and_keeps_the_rest() {
    require_kernel!();
    let map = kit::ringbuf_map(4 * page());
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    for i in 0..10 {
        out.emit(&pattern(i, 20), 0, 1);
    }
    let mut seen = Vec::new();
    let delivered = ring
        .consume(usize::MAX, |record| {
            seen.push(record.to_vec());
            if seen.len() == 4 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(delivered, 4);
    assert_eq!(ring.positions().consumer, 4 * record_size(20));
    assert_eq!(ring.available(), Ok(6 * record_size(20)));
    seen.extend(drain(&mut ring));
    let expected: Vec<_> = (0..10).map(|i| pattern(i, 20)).collect();
    assert_eq!(seen, expected);
}

#[test]
fn partial_then_full_consumption() {
    require_kernel!();
    let map = kit::ringbuf_map(4 * page());
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    let expected: Vec<_> = (0..20).map(|i| pattern(i, 10 + i)).collect();
    for payload in &expected {
        out.emit(payload, 0, 1);
    }
    let total: usize = expected.iter().map(|p| record_size(p.len())).sum();
    let first_seven: usize = expected[..7].iter().map(|p| record_size(p.len())).sum();

    // A batch that reads 7 records, all held at once, then ends.
    {
        let batch = ring.batch();
        assert_eq!(batch.producer_pos(), total);
        let records: Vec<&[u8]> = (0..7)
            .map(|_| batch.next_record().unwrap().unwrap())
            .collect();
        assert_eq!(
            records,
            expected[..7].iter().map(Vec::as_slice).collect::<Vec<_>>()
        );
        assert_eq!(batch.consumed_bytes(), first_seven);
        // Nothing is published before the batch ends.
        assert_eq!(ring_consumer_pos(&map), 0);
    }
    assert_eq!(ring.positions().consumer, first_seven);
    assert_eq!(ring.available(), Ok(total - first_seven));

    // One copied out...
    let mut buf = [0u8; 64];
    assert_eq!(ring.read_into(&mut buf), Ok(Some(17)));
    assert_eq!(&buf[..17], &expected[7][..]);
    // ...and the rest in one batch.
    let rest: Vec<Vec<u8>> = ring.batch().iter().map(|r| r.unwrap().to_vec()).collect();
    assert_eq!(rest, expected[8..]);
    assert_eq!(ring.positions().consumer, total);
    assert_eq!(ring.available(), Ok(0));
    assert_eq!(ring.read_into(&mut buf), Ok(None));
}

/// `consumer_pos` as the kernel sees it (through a mapping of our own).
fn ring_consumer_pos(map: &impl AsFd) -> usize {
    kit::ConsumerPosWriter::new(map.as_fd()).load()
}

#[test]
fn read_into_a_small_buffer_keeps_the_record() {
    require_kernel!();
    let map = kit::ringbuf_map(page());
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    out.emit(&pattern(1, 100), 0, 1);
    let mut small = [0u8; 99];
    assert_eq!(
        ring.read_into(&mut small),
        Err(ReadError::BufferTooSmall {
            needed: 100,
            capacity: 99
        })
    );
    assert_eq!(ring.positions().consumer, 0);
    let mut buf = Vec::new();
    assert_eq!(ring.read_vec(&mut buf), Ok(true));
    assert_eq!(buf, pattern(1, 100));
    assert_eq!(ring.read_vec(&mut buf), Ok(false));
}

// ---------------------------------------------------------------------------------------------
// Payloads end to end.

#[test]
fn records_from_a_kernel_program_arrive_intact() {
    require_kernel!();
    let map = kit::ringbuf_map(kit::ring_size_at_least(64 * 1024));
    let payload = kit::array_map(4096);
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i * 31 + 7) as u8).collect();
    kit::set_array_value(payload.as_fd(), &bytes);
    let mut ring = RingBuf::new(&map).unwrap();
    for len in [1u32, 7, 8, 9, 100, 1000, 4000] {
        let producer = kit::output_from_array(map.as_fd(), payload.as_fd(), len, 0);
        producer.run(3);
        let batch = ring.batch();
        let records: Vec<&[u8]> = batch.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(records.len(), 3, "len {len}");
        for record in records {
            assert_eq!(record, &bytes[..len as usize]);
        }
    }
    assert_eq!(ring.available().unwrap(), 0);
}

#[test]
fn every_payload_size_arrives_intact() {
    require_kernel!();
    let map = kit::ringbuf_map(kit::ring_size_at_least(64 * 1024));
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    let spread = [
        65, 100, 127, 128, 129, 255, 256, 257, 511, 512, 513, 1000, 1023, 1024, 1025, 2000, 2047,
        2048, 2049, 3000, 3333, 3999, 4000, 4095, 4096,
    ];
    let mut position = 0;
    for len in (0..=64).chain(spread) {
        let first = pattern(len, len);
        let second = pattern(len + 1000, len);
        out.emit(&first, 0, 1);
        out.emit(&second, 0, 1);
        let batch = ring.batch();
        let records: Vec<&[u8]> = batch.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(records, [&first[..], &second[..]], "len {len}");
        drop(batch);
        position += 2 * record_size(len);
        assert_eq!(ring.positions().consumer, position, "len {len}");
    }
    assert_eq!(ring.available(), Ok(0));
}

#[test]
fn records_that_wrap_arrive_intact() {
    require_kernel!();
    // One page of data; record sizes that do not divide it, so records straddle the end of
    // the ring (the kernel maps the data twice, back to back, for them).
    let size = page();
    let map = kit::ringbuf_map(size);
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    // (Scaled with the page: the same pattern of straddles, and wraps, on any page size.)
    let lens = [1000, 1500, 13, 2040, 333, 1, 4000, 777, 2900].map(|len| len * size / 4096);
    let mut position = 0usize;
    let mut straddling = 0;
    for round in 0..400 {
        let len = lens[round % lens.len()];
        // Two records when they fit, so some batches cross the end of the ring.
        let count = if 2 * record_size(len) <= size - 8 {
            2
        } else {
            1
        };
        let payloads: Vec<_> = (0..count).map(|i| pattern(round * 2 + i, len)).collect();
        for payload in &payloads {
            out.emit(payload, 0, 1);
        }
        let got: Vec<Vec<u8>> = ring.batch().iter().map(|r| r.unwrap().to_vec()).collect();
        assert_eq!(got, payloads, "round {round}");
        for _ in 0..count {
            let offset = position & (size - 1);
            if offset + record_size(len) > size {
                straddling += 1;
            }
            position += record_size(len);
        }
        assert_eq!(ring.positions().consumer, position, "round {round}");
    }
    assert!(position > 100 * size, "{position}");
    assert!(straddling > 50, "{straddling} records straddled the end");
}

#[test]
fn full_ring_refuses_records_and_recovers() {
    require_kernel!();
    let size = page();
    let map = kit::ringbuf_map(size);
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    // The kernel never fills the ring to the last byte: a record of exactly `size` bytes is
    // refused even when the ring is empty (new_prod_pos - cons_pos > mask).
    assert!(!out.try_emit(&pattern(0, size - 8), 0, 1));
    assert!(out.try_emit(&pattern(0, size - 16), 0, 1));
    assert!(!out.try_emit(&[1], 0, 1));
    assert_eq!(drain(&mut ring), [pattern(0, size - 16)]);

    // Fill with 100-byte records: as many as fit in size - 1 bytes, not one more.
    let fit = (size - 1) / record_size(100);
    let mut accepted = 0;
    while out.try_emit(&pattern(accepted, 100), 0, 1) {
        accepted += 1;
        assert!(accepted <= fit);
    }
    assert_eq!(accepted, fit);
    let records = drain(&mut ring);
    assert_eq!(
        records,
        (0..fit).map(|i| pattern(i, 100)).collect::<Vec<_>>()
    );
    assert!(out.try_emit(b"room again", 0, 1));
    assert_eq!(drain(&mut ring), [b"room again".to_vec()]);
}

#[test]
fn ring_outlives_the_fd_it_was_opened_from() {
    require_kernel!();
    let map = kit::ringbuf_map(page());
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    let id = map_info(map.as_fd()).unwrap().id;
    drop(map);
    assert_eq!(map_info(ring.map_fd()).unwrap().id, id);
    out.emit(b"after close", 0, 2);
    assert!(ring.wait(Some(SIGNAL)).unwrap().is_ready());
    assert_eq!(
        drain(&mut ring),
        [b"after close".to_vec(), b"after close".to_vec()]
    );
}

// ---------------------------------------------------------------------------------------------
// Wakeups: adaptive, BPF_RB_NO_WAKEUP, BPF_RB_FORCE_WAKEUP; `wait`.

#[test]
fn adaptive_wakeup_only_when_the_consumer_has_caught_up() {
    require_kernel!();
    let map = kit::ringbuf_map(4 * page());
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    let watch = SignalWatch::new(ring.map_fd(), EventFlags::IN);
    out.emit(b"first", 0, 1);
    assert!(watch.wait(SIGNAL), "first record at consumer_pos");
    out.emit(b"second", 0, 1);
    assert!(!watch.wait(NO_SIGNAL), "consumer is behind");
    assert_eq!(drain(&mut ring).len(), 2);
    // Caught up: the next record wakes again; the ones behind it in the same run do not
    // add a second signal.
    out.emit(b"third", 0, 3);
    assert!(watch.wait(SIGNAL));
    assert!(!watch.wait(NO_SIGNAL));
    assert_eq!(drain(&mut ring).len(), 3);
}

#[test]
fn no_wakeup_never_signals_but_wait_finds_the_data() {
    require_kernel!();
    let map = kit::ringbuf_map(4 * page());
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    let watch = SignalWatch::new(ring.map_fd(), EventFlags::IN);
    out.emit(b"quiet", kit::NO_WAKEUP, 3);
    assert!(!watch.wait(NO_SIGNAL));
    // `wait` looks at the ring before sleeping: it returns at once.
    let sleeps = ring.wait_stats().sleeps;
    assert_eq!(
        ring.wait(Some(Duration::from_secs(5))).unwrap(),
        WaitOutcome::Ready
    );
    assert_eq!(
        ring.wait_stats().sleeps,
        sleeps,
        "wait slept with data ready"
    );
    assert_eq!(drain(&mut ring), vec![b"quiet".to_vec(); 3]);
}

#[test]
fn force_wakeup_signals_even_when_the_consumer_is_behind() {
    require_kernel!();
    let map = kit::ringbuf_map(4 * page());
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    let watch = SignalWatch::new(ring.map_fd(), EventFlags::IN);
    out.emit(b"a", 0, 1);
    assert!(watch.wait(SIGNAL));
    out.emit(b"b", 0, 1);
    assert!(!watch.wait(NO_SIGNAL));
    out.emit(b"c", kit::FORCE_WAKEUP, 1);
    assert!(watch.wait(SIGNAL));
    out.emit(b"d", kit::FORCE_WAKEUP, 1);
    assert!(watch.wait(SIGNAL));
    assert_eq!(
        drain(&mut ring),
        [b"a", b"b", b"c", b"d"].map(|r| r.to_vec())
    );
    // NO_WAKEUP wins over a caught-up consumer.
    out.emit(b"e", kit::NO_WAKEUP, 1);
    assert!(!watch.wait(NO_SIGNAL));
    assert_eq!(drain(&mut ring), [b"e".to_vec()]);
}

#[test]
fn a_signal_for_records_already_read_does_not_wake_wait() {
    require_kernel!();
    let map = kit::ringbuf_map(page());
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    out.emit(b"read before waiting", 0, 1);
    // The kernel signals; the record is read before anyone waits.
    let deadline = Instant::now() + SIGNAL;
    while ring.read_owned().unwrap().is_none() {
        assert!(Instant::now() < deadline);
    }
    thread::sleep(Duration::from_millis(50)); // let the irq_work deliver the signal
                                              // epoll re-polls the fd before reporting an edge (ep_send_events), and the ring fd is no
                                              // longer ready (producer_pos == consumer_pos): the stale signal is dropped.
    assert_eq!(ring.wait(Some(NO_SIGNAL)).unwrap(), WaitOutcome::TimedOut);
    let stats = ring.wait_stats();
    assert_eq!(
        (stats.sleeps, stats.wakeups, stats.spurious_wakeups),
        (1, 0, 0),
        "{stats:?}"
    );
    // A record produced after that does wake it.
    out.emit(b"later", 0, 1);
    assert_eq!(ring.wait(Some(SIGNAL)).unwrap(), WaitOutcome::Ready);
    assert_eq!(drain(&mut ring), [b"later".to_vec()]);
}

#[test]
fn the_epoll_fd_nests_in_another_event_loop() {
    require_kernel!();
    let map = kit::ringbuf_map(page());
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    let poll = |ring: &RingBuf, timeout: Duration| {
        let epoll_fd = ring.epoll_fd();
        let mut fds = [rustix::event::PollFd::new(
            &epoll_fd,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::time::Timespec::try_from(timeout).unwrap();
        rustix::event::poll(&mut fds, Some(&timeout)).unwrap()
    };
    assert_eq!(poll(&ring, Duration::from_millis(50)), 0);
    out.emit(b"nested", 0, 1);
    assert_eq!(poll(&ring, SIGNAL), 1);
    assert_eq!(ring.wait(Some(Duration::ZERO)).unwrap(), WaitOutcome::Ready);
    assert_eq!(drain(&mut ring), [b"nested".to_vec()]);
}

#[test]
fn wait_times_out_on_an_empty_ring() {
    require_kernel!();
    let map = kit::ringbuf_map(page());
    let mut ring = RingBuf::new(&map).unwrap();
    let timeout = Duration::from_millis(100);
    let start = Instant::now();
    assert_eq!(ring.wait(Some(timeout)).unwrap(), WaitOutcome::TimedOut);
    assert!(start.elapsed() >= timeout, "{:?}", start.elapsed());
    let stats = ring.wait_stats();
    assert!(stats.sleeps >= 1, "{stats:?}");
    assert_eq!(stats.wakeups, 0, "{stats:?}");
    assert_eq!(
        ring.wait(Some(Duration::ZERO)).unwrap(),
        WaitOutcome::TimedOut
    );
}

#[test]
fn wait_without_timeout_returns_when_another_thread_produces() {
    require_kernel!();
    let map = kit::ringbuf_map(page());
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    let producer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        out.emit(b"from another thread", 0, 1);
    });
    assert_eq!(ring.wait(None).unwrap(), WaitOutcome::Ready);
    producer.join().unwrap();
    assert_eq!(drain(&mut ring), [b"from another thread".to_vec()]);
}

/// One attempt of the BUSY-record tests: `before` committed records, then a record held
/// BUSY for ~50 ms by a bpf_loop, read by a consumer that sleeps in `wait`. Returns `false`
/// if the held record was already committed when we first looked at it (the scheduler kept
/// this thread away for the whole hold), so the attempt proves nothing.
fn busy_record_attempt(attempt: u64, before: usize) -> bool {
    let map = kit::ringbuf_map(kit::ring_size_at_least(4096));
    let out = kit::variable_output(map.as_fd());
    // 1 << 23 empty bpf_loop iterations: the reservation stays BUSY for ~50 ms.
    let tag = 0xfeed_0000 + attempt;
    let holder = kit::busy_holder(map.as_fd(), 1 << 23, tag);
    let mut ring = RingBuf::new(&map).unwrap();
    emit_numbered(&out, 0..before);
    if before > 0 {
        // Take the signal of the first record from the reader's own epoll set, so every later
        // wakeup its wait counts is one of those below.
        assert!(kit::epoll_signalled(ring.epoll_fd(), SIGNAL));
    }
    let held_at = ring.positions().producer;
    let holding = thread::spawn(move || {
        holder.run(1);
    });
    // Wait for the reservation, then make sure it is really BUSY.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ring.positions().producer == held_at {
        assert!(Instant::now() < deadline, "the holder never reserved");
        std::hint::spin_loop();
    }
    let mut records = Vec::new();
    {
        let batch = ring.batch();
        for record in &batch {
            records.push(record.unwrap().to_vec());
        }
        if records.len() > before {
            // The held record was committed before we got here.
            drop(batch);
            holding.join().unwrap();
            assert_eq!(records.pop().unwrap(), tag.to_ne_bytes());
            assert_eq!(records, numbered(0..before));
            return false;
        }
        assert!(batch.stopped_at_busy());
        // The batch ends here: consumer_pos is published up to the BUSY record, which is
        // what makes the kernel wake us when it is committed (cons_pos == rec_pos).
    }
    assert_eq!(records, numbered(0..before));
    assert_eq!(
        ring.positions().consumer,
        held_at,
        "consumed exactly up to the BUSY record"
    );
    assert_eq!(ring.check_before_sleep(), Readiness::HeadBusy);

    let stats_before = ring.wait_stats();
    assert_eq!(
        ring.wait(Some(Duration::from_secs(10))).unwrap(),
        WaitOutcome::Ready
    );
    // `wait` returned: the record is committed and readable right away.
    let record = ring
        .read_owned()
        .unwrap()
        .expect("committed record after wait");
    assert_eq!(record, tag.to_ne_bytes());
    holding.join().unwrap();
    // Delivered once.
    assert_eq!(ring.read_owned(), Ok(None));
    assert_eq!(ring.available(), Ok(0));
    let after = ring.wait_stats();
    let wakeups = after.wakeups - stats_before.wakeups;
    assert!(
        wakeups <= 3,
        "{wakeups} epoll returns while the head was BUSY: {after:?}"
    );
    // Woken by the kernel's commit, not by the timeout.
    assert!(wakeups >= 1, "wait was never woken: {after:?}");
    assert!(
        after.sleeps > stats_before.sleeps,
        "wait never slept: {after:?}"
    );
    true
}

/// Repeats [`busy_record_attempt`] until one attempt saw the record BUSY: on a loaded machine
/// this thread may not run at all while the record is held (such attempts still checked that
/// every record arrived intact).
fn busy_record_scenario(before: usize) {
    let attempts = 5;
    let observed = (0..attempts).find(|&attempt| busy_record_attempt(attempt, before));
    assert!(
        observed.is_some(),
        "never saw the record BUSY in {attempts} attempts"
    );
}

#[test]
fn busy_head_record_is_waited_for_without_spinning() {
    require_kernel!();
    require_feature!(kit::callbacks_missing());
    busy_record_scenario(0);
}

#[test]
fn busy_record_behind_committed_ones_wakes_the_reader_that_caught_up() {
    require_kernel!();
    require_feature!(kit::callbacks_missing());
    busy_record_scenario(3);
}

// ---------------------------------------------------------------------------------------------
// Two producer CPUs, one consumer.

#[test]
fn two_pinned_producers_and_a_concurrent_consumer_lose_nothing() {
    require_kernel!();
    // One record per BPF_PROG_TEST_RUN: with `repeat > 1` the kernel attaches the program
    // to the XDP dispatcher around the run (bpf_prog_test_run_xdp), which costs tens of
    // milliseconds per call; single runs interleave the two CPUs more finely anyway.
    const ROUNDS: u32 = 10_000;
    const REPEAT: u32 = 1;
    const LEN: u32 = 64;
    // Small enough that the consumer may fall behind: failed reservations are counted.
    let map = kit::ringbuf_map(16 * page());
    let sequence = kit::percpu_counter_map();
    let drops = kit::percpu_counter_map();
    let cpus: [usize; 2] = if kit::online_cpus() >= 2 {
        [0, 1]
    } else {
        [0, 0]
    };
    let done = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = cpus
        .iter()
        .map(|&cpu| {
            let producer = kit::stamped(
                map.as_fd(),
                sequence.as_fd(),
                drops.as_fd(),
                LEN,
                Commit::Submit,
                0,
            );
            thread::spawn(move || {
                kit::pin_to_cpu(cpu);
                for _ in 0..ROUNDS {
                    producer.run(REPEAT);
                }
            })
        })
        .collect();
    let finisher = {
        let done = done.clone();
        thread::spawn(move || {
            for producer in producers {
                producer.join().unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    let mut ring = RingBuf::new(&map).unwrap();
    let mut last = vec![0u64; kit::possible_cpus()];
    let mut read = 0u64;
    let tail = kit::stamped_tail(LEN as usize);
    let mut check = |record: &[u8]| {
        assert_eq!(record.len(), LEN as usize);
        let (cpu, seq) = kit::stamp(record);
        let cpu = cpu as usize;
        assert_eq!(seq, last[cpu] + 1, "CPU {cpu} sequence out of order");
        last[cpu] = seq;
        assert_eq!(&record[kit::STAMP_LEN..], &tail[..]);
        read += 1;
        ControlFlow::Continue(())
    };
    loop {
        let finished = done.load(Ordering::SeqCst);
        ring.consume(usize::MAX, &mut check).unwrap();
        if finished {
            // Every test run has returned, so every record was committed before this last
            // round began.
            break;
        }
        ring.wait(Some(Duration::from_millis(10))).unwrap();
    }
    finisher.join().unwrap();
    assert_eq!(ring.available(), Ok(0));

    let sequences = kit::percpu_counters(sequence.as_fd());
    let dropped: u64 = kit::percpu_counters(drops.as_fd()).iter().sum();
    assert_eq!(
        sequences.iter().sum::<u64>(),
        read,
        "records reserved vs read"
    );
    for (cpu, (&reserved, &seen)) in sequences.iter().zip(&last).enumerate() {
        assert_eq!(reserved, seen, "CPU {cpu}");
    }
    assert_eq!(read + dropped, u64::from(2 * ROUNDS * REPEAT));
    if kit::online_cpus() >= 2 {
        assert!(sequences[0] > 0 && sequences[1] > 0, "{sequences:?}");
    }
    eprintln!("read {read}, dropped {dropped} (ring full), per CPU {sequences:?}");
}

// ---------------------------------------------------------------------------------------------
// Reopening mid-stream: pinned path, map id.

/// A private BPF filesystem mounted on a fresh temporary directory; unmounted and removed on
/// drop.
struct BpfFs {
    dir: PathBuf,
}

impl BpfFs {
    fn mount() -> Self {
        let dir = std::env::temp_dir().join(
            format!(
                "bpf-ringbuf-kernel-test-{}-{:?}",
                std::process::id(),
                Instant::now()
            )
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"),
        );
        std::fs::create_dir(&dir).unwrap();
        let fs = Self { dir };
        rustix::mount::mount(
            "bpf",
            &fs.dir,
            "bpf",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .unwrap_or_else(|e| panic!("mount bpffs on {}: {e}", fs.dir.display()));
        fs
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.dir, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Emits `count` records numbered from `first` (payload `pattern(i, 8 + i % 50)`).
fn emit_numbered(out: &kit::VariableOutput, range: std::ops::Range<usize>) {
    for i in range {
        out.emit(&pattern(i, 8 + i % 50), 0, 1);
    }
}

fn numbered(range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range.map(|i| pattern(i, 8 + i % 50)).collect()
}

fn read_n(ring: &mut RingBuf, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| ring.read_owned().unwrap().expect("a record"))
        .collect()
}

#[test]
fn pinned_map_reopened_mid_stream_continues_where_the_reader_stopped() {
    require_kernel!();
    let fs = BpfFs::mount();
    let pin = fs.path("ring");
    let map = kit::ringbuf_map(4 * page());
    let out = kit::variable_output(map.as_fd());
    obj_pin(map.as_fd(), &pin).unwrap();
    drop(map);

    let mut ring = RingBuf::from_pinned(&pin).unwrap();
    emit_numbered(&out, 0..10);
    assert_eq!(read_n(&mut ring, 5), numbered(0..5));
    let stopped_at = ring.positions().consumer;
    drop(ring);

    let mut ring = RingBuf::from_pinned(&pin).unwrap();
    assert_eq!(ring.positions().consumer, stopped_at);
    emit_numbered(&out, 10..12);
    assert_eq!(drain(&mut ring), numbered(5..12));
    // One reader per map and process: a third one is refused while the second lives, however
    // it is named (the pin, the id, another fd of the map)...
    let id = ring.map_id();
    match RingBuf::from_pinned(&pin) {
        Err(Error::Open {
            map: MapSource::Pinned(path),
            reason: OpenError::InUse { map_id },
        }) => assert_eq!((path, map_id), (pin.clone(), id)),
        other => panic!("expected InUse, got {other:?}"),
    }
    match RingBuf::from_map_id(id) {
        Err(Error::Open {
            map: MapSource::Id(named),
            reason: OpenError::InUse { map_id },
        }) => assert_eq!((named, map_id), (id, id)),
        other => panic!("expected InUse, got {other:?}"),
    }
    assert!(matches!(
        RingBuf::new(ring.map_fd()),
        Err(Error::Open { reason: OpenError::InUse { map_id }, .. }) if map_id == id
    ));
    // The refused opens moved nothing.
    assert_eq!(ring.available(), Ok(0));
    // ...and, once it is gone, starts at the position the second one published.
    let published = ring.positions();
    drop(ring);
    let third = RingBuf::from_pinned(&pin).unwrap();
    assert_eq!(third.positions(), published);
    assert_eq!(third.available(), Ok(0));

    drop(third);
    std::fs::remove_file(&pin).unwrap();
    let error = RingBuf::from_pinned(&pin).unwrap_err();
    match &error {
        Error::Open {
            map: MapSource::Pinned(path),
            reason: OpenError::NotFound,
        } => assert_eq!(path, &pin),
        other => panic!("expected NotFound, got {other:?}"),
    }
    // The message names the path, and io::Error sees "not found".
    let message = error.to_string();
    assert!(message.contains(&*pin.to_string_lossy()), "{message}");
    assert_eq!(
        std::io::Error::from(error).kind(),
        std::io::ErrorKind::NotFound
    );
}

#[test]
fn map_id_reopened_mid_stream_continues_where_the_reader_stopped() {
    require_kernel!();
    let map = kit::ringbuf_map(4 * page());
    let out = kit::variable_output(map.as_fd());
    let id = map_info(map.as_fd()).unwrap().id;
    let mut ring = RingBuf::new(&map).unwrap();
    emit_numbered(&out, 0..9);
    assert_eq!(read_n(&mut ring, 3), numbered(0..3));
    drop(ring);
    let mut ring = RingBuf::from_map_id(id).unwrap();
    assert_eq!(map_info(ring.map_fd()).unwrap().id, id);
    assert_eq!(read_n(&mut ring, 3), numbered(3..6));
    drop(ring);
    let mut ring = RingBuf::from_map_id(id).unwrap();
    assert_eq!(drain(&mut ring), numbered(6..9));
}

#[test]
fn wrong_map_types_are_refused() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    let array = kit::array_map(8);
    let user_ring = kit::user_ringbuf_map(page());
    let percpu = kit::percpu_counter_map();
    for (fd, found) in [
        (array.as_fd(), MapType::ARRAY),
        (user_ring.as_fd(), MapType::USER_RINGBUF),
        (percpu.as_fd(), MapType::PERCPU_ARRAY),
    ] {
        match RingBuf::new(fd) {
            Err(Error::Open {
                map: MapSource::Fd(raw),
                reason:
                    OpenError::WrongMapType {
                        expected,
                        found: actual,
                    },
            }) => {
                assert_eq!((expected, actual), (MapType::RINGBUF, found));
                assert_eq!(raw, fd.as_raw_fd());
            }
            other => panic!("{found}: {other:?}"),
        }
        let id = map_info(fd).unwrap().id;
        match RingBuf::from_map_id(id) {
            Err(Error::Open {
                map: MapSource::Id(named),
                reason: OpenError::WrongMapType { found: actual, .. },
            }) => assert_eq!((named, actual), (id, found)),
            other => panic!("{found}: {other:?}"),
        }
    }
    let error = RingBuf::new(array.as_fd()).unwrap_err();
    assert!(error.to_string().contains("expected"), "{error}");
    // The message names the map as it was given.
    assert!(
        error
            .to_string()
            .contains(&format!("map fd {}", array.as_raw_fd())),
        "{error}"
    );
}

#[test]
fn fds_that_are_not_maps_are_refused_as_not_a_map() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    let map = kit::ringbuf_map(page());
    // A BPF program (here, one that writes into a ring) is no map.
    let program = kit::variable_output(map.as_fd());
    let program_fd = program.fd();
    for error in [
        RingBuf::new(program_fd).unwrap_err(),
        UserRingBuf::new(program_fd).unwrap_err(),
    ] {
        match &error {
            Error::Open {
                map: MapSource::Fd(raw),
                reason: OpenError::NotAMap { object },
            } => {
                assert_eq!(*raw, program_fd.as_raw_fd());
                assert!(object.contains("bpf-prog"), "{object}");
            }
            other => panic!("expected NotAMap, got {other:?}"),
        }
        assert!(error.to_string().contains("not a BPF map"), "{error}");
    }
    // Neither is a regular file; the error says what it is.
    let path = std::env::temp_dir().join(format!("bpf-ringbuf-not-a-map-{}", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    for error in [
        RingBuf::new(&file).unwrap_err(),
        UserRingBuf::from_owned_fd(file.try_clone().unwrap().into()).unwrap_err(),
    ] {
        match &error {
            Error::Open {
                map: MapSource::Fd(_),
                reason: OpenError::NotAMap { object },
            } => assert_eq!(
                object,
                &*std::fs::canonicalize(&path).unwrap().to_string_lossy()
            ),
            other => panic!("expected NotAMap, got {other:?}"),
        }
    }
    std::fs::remove_file(&path).unwrap();
    // A map id that no map has.
    match RingBuf::from_map_id(u32::MAX) {
        Err(Error::Open {
            map: MapSource::Id(u32::MAX),
            reason: OpenError::NotFound,
        }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    // None of this claimed the real map: it still opens, and works.
    let mut ring = RingBuf::new(&map).unwrap();
    program.emit(b"still a ring", 0, 1);
    assert_eq!(drain(&mut ring), [b"still a ring".to_vec()]);
}

// ---------------------------------------------------------------------------------------------
// A hostile consumer_pos, written by someone else holding the map fd.

/// Checks that every read API of `ring` reports `error`, that `wait` does not sleep on it
/// (the next read reports it), and that none of it moved either position or the reader's
/// cursor. Errors in the positions are reported by `available` too; errors in a header are
/// not (it does not read headers).
fn every_read_reports(ring: &mut RingBuf, page: &kit::ConsumerPosWriter, error: ReadError) {
    let consumer_pos = page.load();
    let positions = ring.positions();
    let cursor = ring.cursor();
    match error {
        ReadError::RecordOutOfBounds { .. } => assert_eq!(
            ring.available(),
            Ok(distance(positions.consumer, positions.producer))
        ),
        _ => assert_eq!(ring.available(), Err(error)),
    }
    {
        let batch = ring.batch();
        assert_eq!(batch.next_record(), Some(Err(error)));
        assert_eq!(batch.next_record(), None);
    }
    assert_eq!(
        ring.consume(usize::MAX, |_| ControlFlow::Continue(())),
        Err(error)
    );
    assert_eq!(ring.read_into(&mut [0u8; 4096]), Err(error));
    assert_eq!(ring.read_vec(&mut Vec::new()), Err(error));
    assert_eq!(ring.read_owned(), Err(error));
    assert_eq!(ring.check_before_sleep(), Readiness::Readable);
    let sleeps = ring.wait_stats().sleeps;
    assert_eq!(
        ring.wait(Some(Duration::from_secs(5))).unwrap(),
        WaitOutcome::Ready
    );
    assert_eq!(ring.wait_stats().sleeps, sleeps, "wait slept on {error:?}");
    // Nothing moved.
    assert_eq!(page.load(), consumer_pos);
    assert_eq!(ring.positions(), positions);
    assert_eq!(ring.cursor(), cursor);
}

/// Writes `hostile(consumer_pos, producer_pos)` into `consumer_pos` through a second mapping.
/// The reader first reports that someone else moved its position (`ConsumerPosMoved`); once
/// it adopts the position (`follow`), every read API reports `expected` without moving
/// anything; then it resyncs, and later records arrive intact. `kernel_accepts` says whether
/// the kernel still accepts records while the position is hostile.
fn hostile_consumer_pos(
    hostile: impl Fn(usize, usize) -> usize,
    expected: impl Fn(usize, usize) -> ReadError,
    kernel_accepts: bool,
) {
    let map = kit::ringbuf_map(page());
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    emit_numbered(&out, 0..3);
    assert_eq!(read_n(&mut ring, 1), numbered(0..1));
    let positions = ring.positions();
    let bad = hostile(positions.consumer, positions.producer);
    let error = expected(bad, positions.producer);
    let page = kit::ConsumerPosWriter::new(map.as_fd());
    page.store(bad);

    // The reader keeps its own cursor: the move itself is what it reports first.
    every_read_reports(
        &mut ring,
        &page,
        ReadError::ConsumerPosMoved {
            expected: positions.consumer,
            found: bad,
        },
    );
    assert_eq!(ring.cursor(), positions.consumer);
    // Adopting the hostile position makes the reader validate it like its own.
    ring.follow();
    assert_eq!(ring.cursor(), bad);
    every_read_reports(&mut ring, &page, error);

    // What the kernel does with such a position.
    assert_eq!(out.try_emit(b"during", 0, 1), kernel_accepts);
    let producer_pos = ring.positions().producer;

    let skipped = ring.resync();
    // Never more than the ring holds (a corrupt consumer_pos may be anywhere).
    assert_eq!(skipped, distance(bad, producer_pos).min(ring.size()));
    assert_eq!(page.load(), producer_pos);
    assert_eq!(ring.available(), Ok(0));
    emit_numbered(&out, 100..104);
    assert_eq!(drain(&mut ring), numbered(100..104));
}

#[test]
fn consumer_pos_ahead_of_producer_is_reported_then_resync_recovers() {
    require_kernel!();
    hostile_consumer_pos(
        |_, producer| producer + 64,
        |consumer_pos, producer_pos| ReadError::ConsumerAhead {
            consumer_pos,
            producer_pos,
        },
        // new_prod_pos - cons_pos wraps to a huge value: __bpf_ringbuf_reserve refuses.
        false,
    );
}

#[test]
fn misaligned_consumer_pos_is_reported_then_resync_recovers() {
    require_kernel!();
    hostile_consumer_pos(
        |consumer, _| consumer + 4,
        |position, _| ReadError::MisalignedPosition { position },
        true,
    );
}

#[test]
fn consumer_pos_far_behind_is_reported_then_resync_recovers() {
    require_kernel!();
    hostile_consumer_pos(
        |_, producer| producer.wrapping_sub(3 * page()),
        |consumer_pos, producer_pos| ReadError::ConsumerAhead {
            consumer_pos,
            producer_pos,
        },
        // The kernel sees a full ring.
        false,
    );
}

#[test]
fn consumer_pos_at_a_record_payload_is_reported_as_out_of_bounds() {
    require_kernel!();
    // Aligned and within the ring, but pointing into a payload whose bytes look like a
    // header claiming far more than was produced.
    let map = kit::ringbuf_map(page());
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    let mut payload = vec![0u8; 32];
    payload[8..12].copy_from_slice(&3000u32.to_ne_bytes());
    out.emit(&payload, 0, 1);
    let page = kit::ConsumerPosWriter::new(map.as_fd());
    page.store(16); // the header is at 0, the payload at 8: payload[8..] is read as a header
    assert_eq!(
        ring.batch().next_record(),
        Some(Err(ReadError::ConsumerPosMoved {
            expected: 0,
            found: 16
        }))
    );
    ring.follow();
    every_read_reports(
        &mut ring,
        &page,
        ReadError::RecordOutOfBounds {
            position: 16,
            header: 3000,
            record_size: record_size(3000),
            available: 24,
        },
    );
    assert_eq!(page.load(), 16);
    assert_eq!(ring.resync(), 24);
    out.emit(b"fine", 0, 1);
    assert_eq!(drain(&mut ring), [b"fine".to_vec()]);
}

#[test]
fn hostile_consumer_pos_cannot_make_the_kernel_hand_out_overlapping_records() {
    require_kernel!();
    // Selftest `ringbuf_write_subtest`: consumer_pos written three pages ahead of a
    // four-page ring lets a three-page reservation pass the consumer check, but the
    // kernel's pending_pos check refuses a second one that would overlap the first.
    let size = 4 * page();
    let map = kit::ringbuf_map(size);
    let producer = kit::double_reserve(map.as_fd(), 3 * page() as u32);
    let mut ring = RingBuf::new(&map).unwrap();
    let page_mapping = kit::ConsumerPosWriter::new(map.as_fd());
    page_mapping.store(3 * page());
    // The reader sees that someone else wrote its position...
    assert_eq!(
        ring.available(),
        Err(ReadError::ConsumerPosMoved {
            expected: 0,
            found: 3 * page(),
        })
    );
    // ...and, once it adopts it, that the position is ahead of the producer.
    ring.follow();
    assert_eq!(
        ring.available(),
        Err(ReadError::ConsumerAhead {
            consumer_pos: 3 * page(),
            producer_pos: 0,
        })
    );
    assert_eq!(
        kit::run_double_reserve(&producer),
        kit::DoubleReserve::SecondRefused
    );
    // The first reservation was granted (and discarded): producer_pos moved past it, which
    // makes the hostile consumer_pos look plausible (it now points into that record).
    let record = record_size(3 * page());
    assert_eq!(ring.positions().producer, record);
    assert_eq!(ring.available(), Ok(record - 3 * page()));
    // Once adopted, nothing tells that position from an honest one: the reader parses the
    // (zeroed, never written) payload bytes there as a header, an empty committed record.
    // Safe, in bounds, and the positions agree again afterwards.
    assert_eq!(ring.read_owned(), Ok(Some(Vec::new())));
    assert_eq!(ring.positions().consumer, record);
    assert_eq!(ring.available(), Ok(0));
    // Back to normal: an honest consumer_pos, and the kernel grants what fits.
    assert_eq!(
        kit::run_double_reserve(&producer),
        kit::DoubleReserve::SecondRefused
    );
    let out = kit::variable_output(map.as_fd());
    assert_eq!(ring.resync(), record, "the discarded reservation");
    emit_numbered(&out, 0..3);
    assert_eq!(drain(&mut ring), numbered(0..3));
}

#[test]
fn busy_looking_garbage_at_a_moved_consumer_pos_is_out_of_bounds_not_a_wait() {
    require_kernel!();
    // consumer_pos moved onto a payload word with bit 31 set: it reads as a BUSY header. A
    // real reservation always fits before producer_pos (__bpf_ringbuf_reserve writes its
    // header before it releases producer_pos past it), so a BUSY header claiming more than
    // was produced is garbage to report; waiting for its commit would wait forever.
    let map = kit::ringbuf_map(page());
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    let garbage = 0x8000_0000 | 3000u32;
    let mut payload = vec![0u8; 32];
    payload[8..12].copy_from_slice(&garbage.to_ne_bytes());
    out.emit(&payload, 0, 1);
    // The header is at 0, the payload at 8: payload[8..] is read as a header at 16.
    let page = kit::ConsumerPosWriter::new(map.as_fd());
    page.store(16);
    let error = ReadError::RecordOutOfBounds {
        position: 16,
        header: garbage,
        record_size: record_size(3000),
        available: 24,
    };
    // The open reader reports the move; once it follows it, the garbage head.
    assert_eq!(
        ring.available(),
        Err(ReadError::ConsumerPosMoved {
            expected: 0,
            found: 16
        })
    );
    ring.follow();
    // batch, consume, read_into, read_vec, read_owned report it; wait returns at once.
    every_read_reports(&mut ring, &page, error);
    // A reader opened onto the moved position reports the same.
    drop(ring);
    let mut ring = RingBuf::new(&map).unwrap();
    assert_eq!(ring.cursor(), 16);
    every_read_reports(&mut ring, &page, error);
    let started = Instant::now();
    assert_eq!(
        ring.wait(Some(Duration::from_secs(10))).unwrap(),
        WaitOutcome::Ready
    );
    assert!(started.elapsed() < Duration::from_secs(5), "wait slept");
    assert_eq!(ring.resync(), 24);
    out.emit(b"fine", 0, 1);
    assert_eq!(drain(&mut ring), [b"fine".to_vec()]);
}

#[test]
fn consumer_pos_moved_forward_over_unread_records_is_reported_and_resume_loses_nothing() {
    require_kernel!();
    let map = kit::ringbuf_map(4 * page());
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    emit_numbered(&out, 0..10);
    assert_eq!(read_n(&mut ring, 3), numbered(0..3));
    let cursor = ring.cursor();
    assert_eq!(ring.positions().consumer, cursor);
    // Another process holding the map fd skips every unread record: an aligned record
    // boundary, as plausible as any position.
    let jumped = ring.positions().producer;
    let page = kit::ConsumerPosWriter::new(map.as_fd());
    page.store(jumped);
    let moved = ReadError::ConsumerPosMoved {
        expected: cursor,
        found: jumped,
    };
    every_read_reports(&mut ring, &page, moved);
    // The kernel takes the skipped records as consumed and goes on producing after them.
    emit_numbered(&out, 10..14);
    assert_eq!(ring.available(), Err(moved));
    assert_eq!(page.load(), jumped);
    // Resume: publish our own cursor again and read on from it.
    ring.resume().unwrap();
    assert_eq!(page.load(), cursor);
    assert_eq!(ring.cursor(), cursor);
    assert_eq!(drain(&mut ring), numbered(3..14));
    emit_numbered(&out, 14..16);
    assert_eq!(drain(&mut ring), numbered(14..16));
    assert_eq!(page.load(), ring.positions().producer);
    assert_eq!(ring.available(), Ok(0));
}

#[test]
fn resume_is_refused_once_the_kernel_may_have_reused_the_unread_space() {
    require_kernel!();
    let size = page();
    let map = kit::ringbuf_map(size);
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    emit_numbered(&out, 0..3);
    assert_eq!(read_n(&mut ring, 1), numbered(0..1));
    let cursor = ring.cursor();
    let jumped = ring.positions().producer;
    let page = kit::ConsumerPosWriter::new(map.as_fd());
    page.store(jumped);
    // The kernel fills the ring from the jumped position, over the records we had not read.
    let mut accepted = 0;
    while out.try_emit(&[0xab; 8], 0, 1) {
        accepted += 1;
        assert!(accepted <= size / 16);
    }
    let producer = ring.positions().producer;
    assert!(distance(cursor, producer) > size, "{cursor} {producer}");
    assert_eq!(
        ring.resume(),
        Err(ReadError::ConsumerAhead {
            consumer_pos: cursor,
            producer_pos: producer,
        })
    );
    // Refused without moving anything.
    assert_eq!(page.load(), jumped);
    assert_eq!(ring.cursor(), cursor);
    // The way out skips it all (at most a ring's worth is counted).
    assert_eq!(ring.resync(), size);
    assert_eq!(page.load(), producer);
    assert_eq!(ring.available(), Ok(0));
    emit_numbered(&out, 10..12);
    assert_eq!(drain(&mut ring), numbered(10..12));
}

#[test]
fn a_consumer_pos_written_during_a_batch_is_reported_not_overwritten() {
    require_kernel!();
    let map = kit::ringbuf_map(4 * page());
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    emit_numbered(&out, 0..6);
    let producer = ring.positions().producer;
    let three: usize = numbered(0..3).iter().map(|r| record_size(r.len())).sum();
    let page = kit::ConsumerPosWriter::new(map.as_fd());
    {
        let batch = ring.batch();
        for expected in numbered(0..3) {
            assert_eq!(batch.next_record(), Some(Ok(&expected[..])));
        }
        // While the batch lends records, another writer moves consumer_pos past all six.
        // (Nothing is produced while the batch lives, so the kernel writes nothing it lends.)
        page.store(producer);
    } // The batch ends: its publish finds consumer_pos changed and leaves it alone.
    assert_eq!(page.load(), producer, "the batch overwrote the other write");
    assert_eq!(ring.cursor(), three);
    let moved = ReadError::ConsumerPosMoved {
        expected: three,
        found: producer,
    };
    every_read_reports(&mut ring, &page, moved);
    ring.resume().unwrap();
    assert_eq!(page.load(), three);
    assert_eq!(drain(&mut ring), numbered(3..6));

    // The same during a `consume` callback: the call delivers what its first internal batch
    // held and says how many; the next read reports the move.
    emit_numbered(&out, 6..9);
    let end = ring.positions().producer;
    let mut seen = Vec::new();
    let result = ring.consume(usize::MAX, |record| {
        if seen.is_empty() {
            page.store(0);
        }
        seen.push(record.to_vec());
        ControlFlow::Continue(())
    });
    assert_eq!(seen, numbered(6..9));
    assert_eq!(result, Ok(3));
    assert_eq!(
        ring.consume(usize::MAX, |_| ControlFlow::Continue(())),
        Err(ReadError::ConsumerPosMoved {
            expected: end,
            found: 0
        })
    );
    assert_eq!(page.load(), 0, "consume overwrote the other write");
    assert_eq!(ring.cursor(), end);
    ring.resume().unwrap();
    assert_eq!(page.load(), end);
    assert_eq!(ring.available(), Ok(0));
    emit_numbered(&out, 9..10);
    assert_eq!(drain(&mut ring), numbered(9..10));
}

// ---------------------------------------------------------------------------------------------
// Accessors.

#[test]
fn accessors_report_known_values() {
    require_kernel!();
    let size = 8 * page();
    let map = kit::ringbuf_map(size);
    let out = kit::variable_output(map.as_fd());
    let mut ring = RingBuf::new(&map).unwrap();
    assert_eq!(ring.size(), size);
    assert_eq!(ring.positions().consumer, 0);
    assert_eq!(ring.positions().producer, 0);
    assert_eq!(ring.available(), Ok(0));
    assert_eq!(ring.pending_pos(), 0);
    assert_eq!(ring.check_before_sleep(), Readiness::Empty);

    out.emit(&[7; 8], 0, 5);
    assert_eq!(ring.positions().producer, 5 * 16);
    assert_eq!(ring.available(), Ok(5 * 16));
    // Each reservation first walks pending_pos over the committed records before it, so
    // after five it points at the fifth (Linux 6.10+).
    assert_eq!(ring.pending_pos(), 4 * 16);
    assert_eq!(ring.check_before_sleep(), Readiness::Readable);

    assert_eq!(read_n(&mut ring, 2), vec![vec![7; 8]; 2]);
    assert_eq!(ring.positions().consumer, 2 * 16);
    assert_eq!(ring.available(), Ok(3 * 16));
    assert_eq!(ring_consumer_pos(&map), 2 * 16);

    out.emit(&[1; 100], 0, 1);
    assert_eq!(ring.positions().producer, 5 * 16 + record_size(100));
    assert_eq!(ring.pending_pos(), 5 * 16);
    assert_eq!(ring.available(), Ok(3 * 16 + record_size(100)));
    assert_eq!(drain(&mut ring).len(), 4);
    assert_eq!(ring.available(), Ok(0));
    assert_eq!(map_info(ring.as_fd()).unwrap().max_entries as usize, size);
}
