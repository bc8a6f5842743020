//! Waiting well against the real kernel: the `Poller` over several rings (the scenarios of
//! the kernel selftest `tools/testing/selftests/bpf/prog_tests/ringbuf_multi.c`), per-ring
//! budgets, rings added and removed at run time, flush and close from another thread,
//! deadlines, the periodic drain of `BPF_RB_NO_WAKEUP` records, and the drop counter.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bpf_ringbuf::{
    DropCounter, Error, OpenError, PollOutcome, Poller, ReserveError, RingBuf, UserRingBuf,
    WaitOutcome,
};
use bpf_ringbuf_testkit::{
    self as kit, require_feature, require_kernel, Commit, EventFlags, SignalWatch,
};

/// A ring map with a stamped producer writing `len`-byte records into it.
struct StampedRing {
    map: OwnedFd,
    producer: kit::Producer,
    _sequence: OwnedFd,
    drops: OwnedFd,
}

fn stamped_ring(size: usize, len: u32, flags: u64) -> StampedRing {
    let map = kit::ringbuf_map(size);
    let sequence = kit::percpu_counter_map();
    let drops = kit::percpu_counter_map();
    let producer = kit::stamped(
        map.as_fd(),
        sequence.as_fd(),
        drops.as_fd(),
        len,
        Commit::Submit,
        flags,
    );
    StampedRing {
        map,
        producer,
        _sequence: sequence,
        drops,
    }
}

/// Polls until `want` records came or `timeout` passed; returns them per ring as sequences.
fn collect(poller: &mut Poller, want: usize, timeout: Duration) -> HashMap<u32, Vec<u64>> {
    let deadline = Instant::now() + timeout;
    let mut seen: HashMap<u32, Vec<u64>> = HashMap::new();
    let mut total = 0;
    while total < want {
        let outcome = poller
            .poll_deadline(Some(deadline), |id, record| {
                seen.entry(id).or_default().push(kit::stamp(record).1);
                ControlFlow::Continue(())
            })
            .unwrap();
        match outcome {
            PollOutcome::Ready { records, .. } => total += records,
            other => panic!("expected records, got {other:?} after {total} of {want}"),
        }
    }
    seen
}

#[test]
fn two_rings_in_one_poller_one_empty_then_both_delivered() {
    require_kernel!();
    kit::pin_to_cpu(0);
    let first = stamped_ring(kit::ring_size_at_least(64 * 1024), 32, 0);
    let second = stamped_ring(kit::ring_size_at_least(64 * 1024), 32, 0);
    let mut poller = Poller::new().unwrap();
    let first_ring = RingBuf::new(&first.map).unwrap();
    let second_ring = RingBuf::new(&second.map).unwrap();
    // Rings are named by their map ids.
    let (first_map, second_map) = (first_ring.map_id(), second_ring.map_id());
    let first_id = poller.add_ring(first_ring).unwrap();
    let second_id = poller.add_ring(second_ring).unwrap();
    assert_eq!((first_id, second_id), (first_map, second_map));
    assert_ne!(first_id, second_id);
    assert_eq!(poller.len(), 2);
    assert_eq!(poller.ring(first_id).map(RingBuf::map_id), Some(first_id));

    // Nothing yet: the poll times out.
    assert_eq!(
        poller
            .poll(Some(Duration::from_millis(20)), |_, _| unreachable!())
            .unwrap(),
        PollOutcome::TimedOut
    );

    // Only the first ring has data; the empty second one does not hold it up.
    first.producer.run(2);
    let seen = collect(&mut poller, 2, Duration::from_secs(5));
    assert_eq!(seen.get(&first_id), Some(&vec![1, 2]));
    assert_eq!(seen.get(&second_id), None);

    // Both have data: both are delivered.
    first.producer.run(1);
    second.producer.run(3);
    let seen = collect(&mut poller, 4, Duration::from_secs(5));
    assert_eq!(seen[&first_id], [3]);
    assert_eq!(seen[&second_id], [1, 2, 3]);

    // Nothing left, nothing stranded.
    assert_eq!(
        poller
            .poll(Some(Duration::ZERO), |_, _| unreachable!())
            .unwrap(),
        PollOutcome::TimedOut
    );
    let stats = poller.stats();
    assert_eq!(stats.records, 6);
    assert_eq!(stats.consumed_bytes, 6 * 40);
    assert!(
        poller.wait_stats().wakeups >= 2,
        "{:?}",
        poller.wait_stats()
    );
}

#[test]
fn budget_keeps_one_busy_ring_from_starving_the_others() {
    require_kernel!();
    kit::pin_to_cpu(0);
    let busy = stamped_ring(kit::ring_size_at_least(256 * 1024), 16, 0);
    let quiet = stamped_ring(kit::ring_size_at_least(16 * 1024), 16, 0);
    let mut poller = Poller::new().unwrap();
    poller.set_budget(10);
    let busy_id = poller.add_ring(RingBuf::new(&busy.map).unwrap()).unwrap();
    let quiet_id = poller.add_ring(RingBuf::new(&quiet.map).unwrap()).unwrap();
    busy.producer.run(95);
    quiet.producer.run(3);

    let mut order = Vec::new();
    let outcome = poller
        .poll(Some(Duration::from_secs(5)), |id, _| {
            order.push(id);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(
        outcome,
        PollOutcome::Ready {
            records: 13,
            writable: 0
        }
    );
    assert_eq!(order.iter().filter(|&&id| id == busy_id).count(), 10);
    assert_eq!(order.iter().filter(|&&id| id == quiet_id).count(), 3);

    // The rest of the busy ring comes without a new wakeup (edge-triggered epoll sends
    // none): a zero timeout still delivers, 10 at a time.
    let mut rounds = 0;
    let mut rest = 0;
    loop {
        match poller
            .poll(Some(Duration::ZERO), |id, _| {
                assert_eq!(id, busy_id);
                ControlFlow::Continue(())
            })
            .unwrap()
        {
            PollOutcome::Ready { records, .. } => {
                assert!(records <= 10);
                rest += records;
                rounds += 1;
            }
            PollOutcome::TimedOut => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rest, 85);
    assert_eq!(rounds, 9);
}

#[test]
fn rings_are_added_and_removed_at_run_time() {
    require_kernel!();
    kit::pin_to_cpu(0);
    let first = stamped_ring(kit::ring_size_at_least(16 * 1024), 16, 0);
    let second = stamped_ring(kit::ring_size_at_least(16 * 1024), 16, 0);
    let mut poller = Poller::new().unwrap();
    let first_id = poller.add_ring(RingBuf::new(&first.map).unwrap()).unwrap();
    first.producer.run(1);
    assert_eq!(
        collect(&mut poller, 1, Duration::from_secs(5))[&first_id],
        [1]
    );

    // Records already in a ring when it is added are delivered.
    second.producer.run(2);
    let second_id = poller.add_ring(RingBuf::new(&second.map).unwrap()).unwrap();
    assert_eq!(
        collect(&mut poller, 2, Duration::from_secs(5))[&second_id],
        [1, 2]
    );

    // A removed ring is no longer watched; its records stay in it.
    let mut removed = poller.remove_ring(first_id).unwrap().expect("first ring");
    assert_eq!(removed.map_id(), first_id);
    assert!(poller.remove_ring(first_id).unwrap().is_none());
    assert!(poller.ring(first_id).is_none());
    first.producer.run(1);
    assert_eq!(
        poller
            .poll(Some(Duration::from_millis(30)), |_, _| unreachable!())
            .unwrap(),
        PollOutcome::TimedOut
    );
    assert_eq!(kit::stamp(&removed.read_owned().unwrap().unwrap()).1, 2);
    assert_eq!(poller.ids().collect::<Vec<_>>(), [second_id]);

    // The handler can stop early; the ring is served first next time.
    second.producer.run(3);
    let mut got = Vec::new();
    let outcome = poller
        .poll(Some(Duration::from_secs(5)), |_, record| {
            got.push(kit::stamp(record).1);
            ControlFlow::Break(())
        })
        .unwrap();
    assert_eq!(
        outcome,
        PollOutcome::Ready {
            records: 1,
            writable: 0
        }
    );
    let rest = collect(&mut poller, 2, Duration::from_secs(5));
    got.extend(&rest[&second_id]);
    assert_eq!(got, [3, 4, 5]);
}

#[test]
fn flush_from_another_thread_wakes_the_poller_which_drains_then_reports_flushed() {
    require_kernel!();
    kit::pin_to_cpu(0);
    // NO_WAKEUP: the records raise no signal, so only the flush can end the sleep.
    let ring = stamped_ring(kit::ring_size_at_least(16 * 1024), 24, kit::NO_WAKEUP);
    let mut poller = Poller::new().unwrap();
    let id = poller.add_ring(RingBuf::new(&ring.map).unwrap()).unwrap();
    let flusher = poller.flusher().unwrap();
    let (started, started_rx) = mpsc::channel();
    let (done, done_rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut records = Vec::new();
        let mut outcomes = Vec::new();
        started.send(()).unwrap();
        loop {
            let outcome = poller
                .poll(None, |ring, record| {
                    assert_eq!(ring, id);
                    records.push(kit::stamp(record).1);
                    ControlFlow::Continue(())
                })
                .unwrap();
            outcomes.push(outcome);
            if outcome == PollOutcome::Flushed {
                done.send(()).unwrap();
            }
            if outcome == PollOutcome::Closed {
                return (records, outcomes, poller);
            }
        }
    });
    started_rx.recv().unwrap();
    ring.producer.run(3);
    // Committed without a wakeup: the reader stays asleep.
    assert!(done_rx.recv_timeout(Duration::from_millis(100)).is_err());
    flusher.flush().unwrap();
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the flush woke the reader");
    // Flushed once; it sleeps again, and close ends it after draining what came since.
    ring.producer.run(2);
    flusher.close().unwrap();
    assert!(flusher.is_closed());
    let (records, outcomes, mut poller) = reader.join().unwrap();
    assert_eq!(records, [1, 2, 3, 4, 5]);
    assert_eq!(
        outcomes,
        [
            PollOutcome::Ready {
                records: 3,
                writable: 0
            },
            PollOutcome::Flushed,
            PollOutcome::Ready {
                records: 2,
                writable: 0
            },
            PollOutcome::Closed,
        ]
    );
    // Closed stays closed.
    assert_eq!(
        poller.poll(None, |_, _| unreachable!()).unwrap(),
        PollOutcome::Closed
    );
}

#[test]
fn flush_and_close_wake_a_single_ring_wait() {
    require_kernel!();
    kit::pin_to_cpu(0);
    let ring = stamped_ring(kit::ring_size_at_least(16 * 1024), 16, kit::NO_WAKEUP);
    let mut reader = RingBuf::new(&ring.map).unwrap();
    let flusher = reader.flusher().unwrap();
    let other = flusher.clone();
    let waiter = thread::spawn(move || {
        let mut log = Vec::new();
        loop {
            let outcome = reader.wait(None).unwrap();
            if outcome == WaitOutcome::Ready {
                let count = reader.batch().iter().count();
                log.push(format!("{count} records"));
            } else {
                log.push(format!("{outcome:?}"));
            }
            if outcome == WaitOutcome::Closed {
                return log;
            }
        }
    });
    thread::sleep(Duration::from_millis(50));
    other.flush().unwrap();
    thread::sleep(Duration::from_millis(50));
    ring.producer.run(2);
    flusher.close().unwrap();
    let log = waiter.join().unwrap();
    assert_eq!(log, ["Flushed", "2 records", "Closed"]);
}

#[test]
fn deadline_expires_then_data_arrives() {
    require_kernel!();
    kit::pin_to_cpu(0);
    let ring = stamped_ring(kit::ring_size_at_least(16 * 1024), 16, 0);
    let mut reader = RingBuf::new(&ring.map).unwrap();
    let mut poller = Poller::new().unwrap();
    let other = stamped_ring(kit::ring_size_at_least(16 * 1024), 16, 0);
    let id = poller.add_ring(RingBuf::new(&other.map).unwrap()).unwrap();

    let deadline = Instant::now() + Duration::from_millis(50);
    assert_eq!(
        reader.wait_deadline(Some(deadline)).unwrap(),
        WaitOutcome::TimedOut
    );
    assert!(Instant::now() >= deadline, "returned before the deadline");
    let deadline = Instant::now() + Duration::from_millis(50);
    assert_eq!(
        poller
            .poll_deadline(Some(deadline), |_, _| unreachable!())
            .unwrap(),
        PollOutcome::TimedOut
    );
    assert!(Instant::now() >= deadline, "returned before the deadline");

    // A deadline in the past still looks once.
    ring.producer.run(1);
    other.producer.run(1);
    let past = Instant::now() - Duration::from_millis(1);
    assert_eq!(
        reader.wait_deadline(Some(past)).unwrap(),
        WaitOutcome::Ready
    );
    assert_eq!(kit::stamp(&reader.read_owned().unwrap().unwrap()).1, 1);
    let mut seen = Vec::new();
    poller
        .poll_deadline(Some(past), |ring, record| {
            seen.push((ring, kit::stamp(record).1));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(seen, [(id, 1)]);

    // Data produced by another thread while the wait sleeps ends it.
    let producer = thread::spawn(move || {
        kit::pin_to_cpu(0);
        thread::sleep(Duration::from_millis(30));
        ring.producer.run(1);
        ring
    });
    let outcome = reader
        .wait_deadline(Some(Instant::now() + Duration::from_secs(10)))
        .unwrap();
    assert_eq!(outcome, WaitOutcome::Ready);
    let _ring = producer.join().unwrap();
    assert_eq!(kit::stamp(&reader.read_owned().unwrap().unwrap()).1, 2);
    assert!(reader.wait_stats().wakeups >= 1);
}

#[test]
fn no_wakeup_records_are_drained_by_the_periodic_option() {
    require_kernel!();
    kit::pin_to_cpu(0);
    let ring = stamped_ring(kit::ring_size_at_least(16 * 1024), 16, kit::NO_WAKEUP);
    // Watches the kernel's signals on the map without reading it (one reader per map and
    // process: the poller's RingBuf is the reader).
    let signal_watch = SignalWatch::new(ring.map.as_fd(), EventFlags::IN);
    let mut poller = Poller::new().unwrap();
    let id = poller.add_ring(RingBuf::new(&ring.map).unwrap()).unwrap();
    poller.set_periodic_drain(Some(Duration::from_millis(10)));

    let producer = thread::spawn(move || {
        kit::pin_to_cpu(0);
        thread::sleep(Duration::from_millis(50));
        ring.producer.run(5);
        ring
    });
    let started = Instant::now();
    let mut seen = Vec::new();
    let outcome = poller
        .poll(Some(Duration::from_secs(20)), |ring, record| {
            assert_eq!(ring, id);
            seen.push(kit::stamp(record).1);
            ControlFlow::Continue(())
        })
        .unwrap();
    let ring = producer.join().unwrap();
    assert_eq!(
        outcome,
        PollOutcome::Ready {
            records: 5,
            writable: 0
        }
    );
    assert_eq!(seen, [1, 2, 3, 4, 5]);
    // Found by a periodic check, not by a kernel wakeup (there was none) or the timeout.
    let stats = poller.wait_stats();
    assert_eq!(stats.wakeups, 0, "{stats:?}");
    assert!(stats.periodic_checks >= 1, "{stats:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
    // The kernel really sent no wakeup for these records.
    assert!(!signal_watch.wait(Duration::from_millis(10)));

    // The same for a single ring.
    let mut reader = poller.remove_ring(id).unwrap().expect("the poller's ring");
    reader.set_periodic_drain(Some(Duration::from_millis(10)));
    let producer = thread::spawn(move || {
        kit::pin_to_cpu(0);
        thread::sleep(Duration::from_millis(50));
        ring.producer.run(1);
        ring
    });
    assert_eq!(
        reader.wait(Some(Duration::from_secs(20))).unwrap(),
        WaitOutcome::Ready
    );
    let _ring = producer.join().unwrap();
    let stats = reader.wait_stats();
    assert!(stats.periodic_checks >= 1, "{stats:?}");
    assert_eq!(stats.wakeups, 0, "{stats:?}");
}

#[test]
fn no_wakeup_records_are_found_when_a_poll_times_out() {
    require_kernel!();
    kit::pin_to_cpu(0);
    let ring = stamped_ring(kit::ring_size_at_least(16 * 1024), 16, kit::NO_WAKEUP);
    let mut poller = Poller::new().unwrap();
    poller.add_ring(RingBuf::new(&ring.map).unwrap()).unwrap();
    assert_eq!(
        poller
            .poll(Some(Duration::from_millis(5)), |_, _| unreachable!())
            .unwrap(),
        PollOutcome::TimedOut
    );
    ring.producer.run(2);
    // No signal, no periodic drain: the check before reporting the timeout finds them.
    let outcome = poller
        .poll(Some(Duration::from_millis(20)), |_, _| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(
        outcome,
        PollOutcome::Ready {
            records: 2,
            writable: 0
        }
    );
}

#[test]
fn drop_counter_reads_back_what_the_program_counted() {
    require_kernel!();
    kit::pin_to_cpu(0);
    // 4 records of a quarter of the ring less 24 bytes (4096: 1000 bytes, 1008 with the
    // header) fit; the rest are dropped.
    let size = kit::ring_size_at_least(4096);
    let ring = stamped_ring(size, size as u32 / 4 - 24, 0);
    let mut drops = DropCounter::new(&ring.drops).unwrap();
    assert_eq!(drops.total().unwrap(), 0);
    ring.producer.run(10);
    assert_eq!(drops.lost_since_last().unwrap(), 6);
    assert_eq!(drops.lost_since_last().unwrap(), 0);
    let per_cpu = drops.per_cpu().unwrap();
    assert_eq!(per_cpu.len(), kit::possible_cpus());
    assert_eq!(per_cpu[0], 6);

    let mut reader = RingBuf::new(&ring.map).unwrap();
    assert_eq!(reader.batch().iter().count(), 4);
    assert_eq!(reader.stats().records, 4);

    // On the other CPU too, summed.
    if kit::online_cpus() > 1 {
        let producer = thread::spawn(move || {
            kit::pin_to_cpu(1);
            ring.producer.run(6);
            ring
        });
        let _ring = producer.join().unwrap();
        assert_eq!(drops.lost_since_last().unwrap(), 2);
        assert_eq!(drops.per_cpu().unwrap()[1], 2);
    }
    assert_eq!(drops.last_total(), drops.total().unwrap());
}

#[test]
fn drop_counter_refuses_maps_it_cannot_read() {
    require_kernel!();
    let ring = kit::ringbuf_map(kit::ring_size_at_least(4096));
    assert!(matches!(
        DropCounter::new(&ring),
        Err(Error::Open {
            reason: OpenError::WrongMapType {
                found: bpf_ringbuf::sys::MapType::RINGBUF,
                ..
            },
            ..
        })
    ));
    let wide = kit::array_map(16);
    assert!(matches!(
        DropCounter::new(&wide),
        Err(Error::Io(error)) if error.kind() == std::io::ErrorKind::InvalidInput
    ));
    let counter = kit::percpu_counter_map();
    assert!(DropCounter::with_key(&counter, 1).is_err());
    // A plain array u64 counter works too.
    let plain = kit::array_map(8);
    kit::set_array_value(plain.as_fd(), &41u64.to_ne_bytes());
    let mut drops = DropCounter::new(&plain).unwrap();
    assert_eq!(drops.lost_since_last().unwrap(), 41);
}

/// Fills a USER_RINGBUF with 64-byte samples until one more does not fit; returns how many.
fn fill(ring: &UserRingBuf) -> usize {
    let mut written = 0;
    loop {
        match ring.output(&[7; 64]) {
            Ok(()) => written += 1,
            Err(ReserveError::NoSpace { .. }) => return written,
            Err(error) => panic!("{error}"),
        }
    }
}

#[test]
fn a_user_ring_waiting_for_space_is_reported_writable_after_the_kernel_drains() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    kit::pin_to_cpu(0);
    let size = kit::ring_size_at_least(4096);
    let map = kit::user_ringbuf_map(size);
    let drainer = kit::user_ringbuf_drain(map.as_fd(), 0);
    let user_ring = UserRingBuf::new(&map).unwrap();
    let samples = fill(&user_ring);
    assert_eq!(samples, size / 72);
    let reader_side = stamped_ring(kit::ring_size_at_least(16 * 1024), 16, 0);

    let mut poller = Poller::new().unwrap();
    let reader = poller
        .add_ring(RingBuf::new(&reader_side.map).unwrap())
        .unwrap();
    let user_ring_id = user_ring.map_id();
    let writer = poller.add_user_ring(user_ring, 64).unwrap();
    assert_eq!(writer, user_ring_id);
    // Full, and nothing to read: the poll times out.
    assert_eq!(
        poller
            .poll(Some(Duration::from_millis(30)), |_, _| unreachable!())
            .unwrap(),
        PollOutcome::TimedOut
    );
    assert!(poller.writable().is_empty());

    // The kernel drains from another thread while the poller sleeps: EPOLLOUT wakes it.
    let drain = thread::spawn(move || {
        kit::pin_to_cpu(0);
        thread::sleep(Duration::from_millis(30));
        drainer.drain()
    });
    let outcome = poller
        .poll(Some(Duration::from_secs(10)), |_, _| unreachable!())
        .unwrap();
    assert_eq!(drain.join().unwrap(), samples as i64);
    assert_eq!(
        outcome,
        PollOutcome::Ready {
            records: 0,
            writable: 1
        }
    );
    assert_eq!(poller.writable(), [writer]);
    assert!(poller.wait_stats().wakeups >= 1);

    // Readers and writers share the poller; a user ring is written through the shared
    // reference the poller lends.
    reader_side.producer.run(2);
    let user_ring = poller.user_ring(writer).unwrap();
    user_ring.output(&[1; 64]).unwrap();
    assert_eq!(user_ring.positions().producer, (samples + 1) * 72);
    let seen = collect(&mut poller, 2, Duration::from_secs(5));
    assert_eq!(seen[&reader], [1, 2]);

    // User rings come back as user rings, and readers as readers, only.
    assert!(poller.user_ring(reader).is_none());
    assert!(poller.ring(writer).is_none());
    assert!(
        !poller.set_space(reader, 64),
        "a reader has no space to wait for"
    );
    assert!(
        poller.remove_user_ring(reader).unwrap().is_none(),
        "not a user ring"
    );
    assert!(
        poller.remove_ring(writer).unwrap().is_none(),
        "not a reader"
    );
    assert_eq!(poller.len(), 2, "a refused removal removes nothing");
    let user_ring = poller.remove_user_ring(writer).unwrap().unwrap();
    assert_eq!(user_ring.map_id(), writer);
    assert!(poller.remove_user_ring(writer).unwrap().is_none());
    assert_eq!(poller.len(), 1);
    assert_eq!(poller.ids().collect::<Vec<_>>(), [reader]);
}

#[test]
fn the_space_a_user_ring_waits_for_can_change() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    let size = kit::ring_size_at_least(4096);
    let map = kit::user_ringbuf_map(size);
    let drainer = kit::user_ringbuf_drain(map.as_fd(), 0);
    let user_ring = UserRingBuf::new(&map).unwrap();
    let samples = fill(&user_ring);
    // `free` bytes are left (64 in a 4 KiB ring; never 0, as no power of two is a multiple of
    // 72): room for a `free - 8`-byte payload, not for one byte more.
    let free = size - samples * 72;
    assert_eq!(user_ring.free_space().unwrap(), free);
    assert!((8..72).contains(&free), "{free}");
    let fits = free - 8;
    let mut poller = Poller::new().unwrap();
    let id = poller.add_user_ring(user_ring, fits + 1).unwrap();
    assert_eq!(
        poller
            .poll(Some(Duration::from_millis(30)), |_, _| unreachable!())
            .unwrap(),
        PollOutcome::TimedOut
    );
    // Waiting for less: the next poll checks again and finds the room, without a wakeup.
    assert!(poller.set_space(id, fits));
    assert_eq!(
        poller
            .poll(Some(Duration::from_millis(30)), |_, _| unreachable!())
            .unwrap(),
        PollOutcome::Ready {
            records: 0,
            writable: 1
        }
    );
    assert_eq!(poller.writable(), [id]);
    poller
        .user_ring(id)
        .unwrap()
        .output(&vec![2; fits])
        .unwrap();
    // Full now for any payload: back to waiting, until the kernel drains.
    assert!(poller.set_space(id, 0));
    assert_eq!(
        poller
            .poll(Some(Duration::from_millis(30)), |_, _| unreachable!())
            .unwrap(),
        PollOutcome::TimedOut
    );
    assert!(poller.writable().is_empty());
    assert_eq!(drainer.drain(), samples as i64 + 1);
    assert_eq!(
        poller
            .poll(Some(Duration::from_secs(10)), |_, _| unreachable!())
            .unwrap(),
        PollOutcome::Ready {
            records: 0,
            writable: 1
        }
    );
}

#[test]
fn a_length_that_never_fits_is_reported_writable_so_reserve_can_say_why() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    let map = kit::user_ringbuf_map(kit::ring_size_at_least(4096));
    let user_ring = UserRingBuf::new(&map).unwrap();
    // Full, so only the length can make it writable.
    fill(&user_ring);
    let mut poller = Poller::new().unwrap();
    let id = poller.add_user_ring(user_ring, 1 << 20).unwrap();
    assert_eq!(
        poller
            .poll(Some(Duration::from_secs(10)), |_, _| unreachable!())
            .unwrap(),
        PollOutcome::Ready {
            records: 0,
            writable: 1
        }
    );
    assert_eq!(poller.writable(), [id]);
    assert!(matches!(
        poller.user_ring(id).unwrap().reserve(1 << 20),
        Err(ReserveError::TooLarge { .. })
    ));
}

#[test]
fn a_ring_read_directly_is_checked_by_the_next_poll() {
    require_kernel!();
    kit::pin_to_cpu(0);
    // NO_WAKEUP: nothing but the poller's own bookkeeping can find the records left over.
    let ring = stamped_ring(kit::ring_size_at_least(16 * 1024), 16, kit::NO_WAKEUP);
    let mut poller = Poller::new().unwrap();
    let id = poller.add_ring(RingBuf::new(&ring.map).unwrap()).unwrap();
    assert_eq!(
        poller
            .poll(Some(Duration::ZERO), |_, _| unreachable!())
            .unwrap(),
        PollOutcome::TimedOut
    );
    ring.producer.run(3);
    // Read directly: taken out of the poller (no `&mut` to a ring it holds), read, put back.
    let mut direct = poller.remove_ring(id).unwrap().unwrap();
    let first = direct.read_owned().unwrap().unwrap();
    assert_eq!(kit::stamp(&first).1, 1);
    assert_eq!(poller.add_ring(direct).unwrap(), id);
    let started = Instant::now();
    let mut rest = Vec::new();
    let outcome = poller
        .poll(Some(Duration::from_secs(20)), |_, record| {
            rest.push(kit::stamp(record).1);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(
        outcome,
        PollOutcome::Ready {
            records: 2,
            writable: 0
        }
    );
    assert_eq!(rest, [2, 3]);
    // Served at once, not by the check at the end of the 20 s timeout.
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn a_moved_consumer_pos_is_reported_with_the_map_id_and_recovered_outside_the_poller() {
    require_kernel!();
    kit::pin_to_cpu(0);
    let ring = stamped_ring(kit::ring_size_at_least(16 * 1024), 16, 0);
    let other = stamped_ring(kit::ring_size_at_least(16 * 1024), 16, 0);
    let mut poller = Poller::new().unwrap();
    let id = poller.add_ring(RingBuf::new(&ring.map).unwrap()).unwrap();
    let other_id = poller.add_ring(RingBuf::new(&other.map).unwrap()).unwrap();
    ring.producer.run(3);
    assert_eq!(
        collect(&mut poller, 3, Duration::from_secs(5))[&id],
        [1, 2, 3]
    );
    ring.producer.run(3);
    // Another process holding the map fd moves consumer_pos past the three unread records.
    let consumer_pos = kit::ConsumerPosWriter::new(ring.map.as_fd());
    let cursor = poller.ring(id).unwrap().cursor();
    let producer = poller.ring(id).unwrap().positions().producer;
    consumer_pos.store(producer);
    match poller.poll(Some(Duration::from_secs(5)), |_, _| unreachable!()) {
        Err(Error::Read {
            map_id: Some(map_id),
            error,
        }) => {
            assert_eq!(map_id, id);
            assert_eq!(
                error,
                bpf_ringbuf::ReadError::ConsumerPosMoved {
                    expected: cursor,
                    found: producer
                }
            );
        }
        other => panic!("expected a read error, got {other:?}"),
    }
    // It stays queued: the next poll reports it again, and nothing moved.
    assert!(matches!(
        poller.poll(Some(Duration::ZERO), |_, _| unreachable!()),
        Err(Error::Read { map_id: Some(map_id), .. }) if map_id == id
    ));
    assert_eq!(consumer_pos.load(), producer);
    // Recovered outside the poller: take it out, resume from its own cursor, put it back.
    let mut taken = poller.remove_ring(id).unwrap().unwrap();
    taken.resume().unwrap();
    assert_eq!(consumer_pos.load(), cursor);
    poller.add_ring(taken).unwrap();
    // Nothing was lost, and the other ring is served alongside.
    other.producer.run(1);
    let seen = collect(&mut poller, 4, Duration::from_secs(5));
    assert_eq!(seen[&id], [4, 5, 6]);
    assert_eq!(seen[&other_id], [1]);
}

#[test]
fn per_cpu_rings_with_producers_on_both_cpus_strand_nothing() {
    require_kernel!();
    // One ring per CPU, as per-CPU ring setups do, each fed in bursts by a producer pinned
    // to its CPU while the poller sleeps with no timeout: a record committed while a ring
    // was being drained raises no signal, so a poller that did not check each ring before
    // sleeping would sleep past it. A watchdog closes the poller after a minute; being
    // closed before everything arrived fails the test.
    let cpus = kit::online_cpus().min(2);
    let per_cpu: u64 = 4_000;
    let rings: Vec<StampedRing> = (0..cpus)
        .map(|_| stamped_ring(kit::ring_size_at_least(64 * 1024), 32, 0))
        .collect();
    let mut poller = Poller::new().unwrap();
    poller.set_budget(64);
    let ids: Vec<u32> = rings
        .iter()
        .map(|ring| poller.add_ring(RingBuf::new(&ring.map).unwrap()).unwrap())
        .collect();
    let mut drops: Vec<DropCounter> = rings
        .iter()
        .map(|ring| DropCounter::new(&ring.drops).unwrap())
        .collect();
    let flusher = poller.flusher().unwrap();
    let (finished, finished_rx) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if finished_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            flusher.close().unwrap();
        }
    });
    let producers: Vec<_> = rings
        .into_iter()
        .enumerate()
        .map(|(cpu, ring)| {
            thread::spawn(move || {
                kit::pin_to_cpu(cpu);
                let mut sent = 0;
                let mut burst = 1;
                while sent < per_cpu {
                    let n = burst.min(per_cpu - sent);
                    ring.producer.run(n as u32);
                    sent += n;
                    burst = burst % 50 + 1;
                    if burst % 10 == 0 {
                        thread::sleep(Duration::from_micros(100));
                    }
                }
                ring
            })
        })
        .collect();

    let mut next_sequence = vec![1u64; cpus];
    let mut total = 0u64;
    let runs = per_cpu * cpus as u64;
    let mut lost = 0;
    while total + lost < runs {
        let outcome = poller
            .poll(None, |id, record| {
                let ring = ids.iter().position(|&known| known == id).unwrap();
                let (cpu, sequence) = kit::stamp(record);
                assert_eq!(cpu as usize, ring, "ring {ring} is fed from CPU {ring}");
                assert_eq!(sequence, next_sequence[ring]);
                next_sequence[ring] += 1;
                total += 1;
                ControlFlow::Continue(())
            })
            .unwrap();
        lost = drops.iter_mut().map(|d| d.total().unwrap()).sum();
        assert_ne!(
            outcome,
            PollOutcome::Closed,
            "stuck at {total} of {runs} ({lost} dropped)"
        );
    }
    finished.send(()).unwrap();
    watchdog.join().unwrap();
    let _rings: Vec<StampedRing> = producers.into_iter().map(|p| p.join().unwrap()).collect();
    assert_eq!(total + lost, runs);
    assert!(total > lost, "{total} read, {lost} dropped");
    assert_eq!(poller.stats().records, total);
    let stats = poller.wait_stats();
    assert!(stats.wakeups >= 1, "{stats:?}");
}
