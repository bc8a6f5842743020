//! The merged reader against the real kernel: one RINGBUF per CPU, a BPF program on each CPU
//! stamping `bpf_ktime_get_ns()` before it reserves, and the reader's output globally in stamp
//! order and complete; a silent CPU delays records by the lateness and no more; a close
//! drains what is held back.

use std::ops::ControlFlow;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bpf_ringbuf::merge::u64_key_at;
use bpf_ringbuf::{DropCounter, KeyClock, MergedReader, PollOutcome, RingBuf};
use bpf_ringbuf_testkit::{self as kit, require_feature, require_kernel};

/// A ring map with a `ktime_stamped` producer writing into it.
struct CpuRing {
    map: OwnedFd,
    producer: kit::Producer,
    sequence: OwnedFd,
    drops: OwnedFd,
}

/// The one place rings are created in this file. The producer spends `work` `bpf_loop`
/// iterations between its stamp and its reservation, and records how long it took from the
/// stamp to right before its submit (`kit::ktime_delay`).
fn cpu_ring(size: usize, work: u32) -> CpuRing {
    let map = kit::ringbuf_map(size);
    let sequence = kit::percpu_counter_map();
    let drops = kit::percpu_counter_map();
    let producer = kit::ktime_stamped(map.as_fd(), sequence.as_fd(), drops.as_fd(), 0, work, true);
    CpuRing {
        map,
        producer,
        sequence,
        drops,
    }
}

/// `bpf_loop` iterations between a record's stamp and its reservation: tens of microseconds.
const WORK: u32 = 10_000;

fn reader(rings: &[CpuRing], lateness: Duration) -> MergedReader<impl Fn(&[u8]) -> u64> {
    let rings = rings.iter().map(|ring| RingBuf::new(&ring.map).unwrap());
    MergedReader::new(rings, u64_key_at(0), lateness).unwrap()
}

#[test]
fn per_cpu_rings_are_merged_in_stamp_order_and_complete() {
    require_kernel!();
    // The producers' work between stamp and reservation is a bpf_loop, which takes a callback.
    require_feature!(kit::callbacks_missing());
    // One ring per CPU, each fed in bursts by a program pinned to its CPU (bursts and pauses
    // differ per CPU, so rings are often empty while others are not), stamping before it
    // reserves, with some work in between: a record stamped earlier is often committed later,
    // while its ring still looks empty. (A merge that took an empty ring for one with nothing
    // earlier to deliver, or forgot the lateness, fails here within a few thousand records.)
    // The reader polls with a small budget and no timeout; a watchdog closes it after a minute.
    let cpus = kit::online_cpus();
    let per_cpu: u64 = 20_000;
    let budget = 64;
    // Generous: the program's work takes tens of microseconds, plus whatever interrupts it.
    let lateness = Duration::from_millis(10);
    let rings: Vec<CpuRing> = (0..cpus).map(|_| cpu_ring(1 << 20, WORK)).collect();
    let mut reader = reader(&rings, lateness);
    reader.set_budget(budget);
    let mut drops: Vec<DropCounter> = rings
        .iter()
        .map(|ring| DropCounter::new(&ring.drops).unwrap())
        .collect();
    let flusher = reader.flusher().unwrap();
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
                let mut burst = 1 + cpu as u64 * 7;
                while sent < per_cpu {
                    let n = burst.min(per_cpu - sent);
                    ring.producer.run(n as u32);
                    sent += n;
                    burst = burst * 3 % 701 + 1;
                    if burst % (3 + cpu as u64) == 0 {
                        thread::sleep(Duration::from_micros(200));
                    }
                }
                ring
            })
        })
        .collect();

    let runs = per_cpu * cpus as u64;
    let lateness_ns = lateness.as_nanos() as u64;
    let mut next_sequence = vec![1u64; cpus];
    let mut last_stamp = 0;
    // Records committed so late that the guarantee did not apply (see below), and the longest
    // stamp-to-submit delay any program measured.
    let mut late = 0u64;
    let mut worst_delay = 0u64;
    let mut total = 0u64;
    let mut lost = 0;
    let mut polls = 0u64;
    while total + lost < runs {
        let outcome = reader
            .poll(None, |record| {
                let (stamp, cpu, sequence) = kit::ktime_stamp(record.data);
                assert_eq!(
                    cpu as usize, record.ring,
                    "ring {} is fed from CPU {cpu}",
                    record.ring
                );
                assert_eq!(sequence, next_sequence[record.ring], "CPU {cpu}: a gap");
                next_sequence[record.ring] += 1;
                assert_eq!(record.key, stamp);
                let delay = u64::from(kit::ktime_delay(record.data));
                worst_delay = worst_delay.max(delay);
                if stamp < last_stamp {
                    // Only a record committed more than the lateness after its stamp can come
                    // out after a later one (released while its ring looked quiet, the clock at
                    // least the lateness past the other stamp). The reader must say so, and the
                    // program must have seen itself late: its own delay measurement stops just
                    // before the submit, so allow half the lateness for the rest.
                    assert!(
                        record.out_of_order,
                        "stamp {stamp} (CPU {cpu}, #{sequence}) after {last_stamp}, not marked"
                    );
                    assert!(
                        delay > lateness_ns / 2,
                        "stamp {stamp} (CPU {cpu}, #{sequence}) after {last_stamp}, although \
                         its program submitted {delay} ns after the stamp (lateness \
                         {lateness_ns} ns)"
                    );
                    late += 1;
                } else {
                    assert!(!record.out_of_order);
                    last_stamp = stamp;
                }
                total += 1;
                ControlFlow::Continue(())
            })
            .unwrap();
        polls += 1;
        match outcome {
            PollOutcome::Ready { records, .. } => {
                assert!(
                    records <= budget,
                    "{records} records in one poll, budget {budget}"
                )
            }
            other => panic!("{other:?} after {total} of {runs} ({lost} dropped)"),
        }
        lost = drops.iter_mut().map(|d| d.total().unwrap()).sum();
    }
    finished.send(()).unwrap();
    watchdog.join().unwrap();
    let rings: Vec<CpuRing> = producers.into_iter().map(|p| p.join().unwrap()).collect();
    // Complete: every successful reservation was delivered, each CPU's without a gap.
    for (cpu, ring) in rings.iter().enumerate() {
        let reserved: u64 = kit::percpu_counters(ring.sequence.as_fd()).iter().sum();
        assert_eq!(next_sequence[cpu] - 1, reserved, "CPU {cpu}");
    }
    assert_eq!(total + lost, runs);
    assert!(total > lost, "{total} read, {lost} dropped");
    let merge = reader.merge_stats();
    assert_eq!(merge.records, total);
    assert_eq!(merge.out_of_order, late);
    assert_eq!(merge.future_keys, 0);
    assert_eq!(reader.stats().records, total);
    eprintln!(
        "{total} records from {cpus} CPUs in {polls} polls; {merge:?}; {:?}; longest \
         stamp-to-submit {worst_delay} ns",
        reader.wait_stats()
    );
    if cpus > 1 {
        assert!(
            merge.waits > 0,
            "no record was ever held back for a quiet ring"
        );
    }
}

#[test]
fn a_silent_cpu_holds_records_back_by_the_lateness_and_no_more() {
    require_kernel!();
    kit::pin_to_cpu(0);
    let lateness = Duration::from_millis(200);
    let rings: Vec<CpuRing> = (0..2).map(|_| cpu_ring(64 * 1024, 0)).collect();
    let mut reader = reader(&rings, lateness);
    // Only CPU 0's ring receives records; CPU 1's stays silent.
    rings[0].producer.run(3);
    let first_look = KeyClock::Monotonic.now();
    let mut released = Vec::new();
    while released.len() < 3 {
        let outcome = reader
            .poll(Some(Duration::from_secs(10)), |record| {
                released.push((record.key, KeyClock::Monotonic.now()));
                ControlFlow::Continue(())
            })
            .unwrap();
        assert!(matches!(outcome, PollOutcome::Ready { .. }), "{outcome:?}");
    }
    let lateness = lateness.as_nanos() as u64;
    let first_due = released.iter().map(|&(stamp, _)| stamp).min().unwrap() + lateness;
    for (stamp, at) in released {
        // Never before the silent ring can no longer deliver an earlier stamp ...
        assert!(
            at >= stamp + lateness,
            "released {} ns after its stamp",
            at - stamp
        );
        // ... and not held back for ever (a generous bound: this is a shared machine).
        assert!(
            at < stamp + lateness + 5_000_000_000,
            "released {} ns late",
            at - stamp
        );
    }
    let stats = reader.merge_stats();
    assert_eq!(stats.out_of_order, 0, "{stats:?}");
    if first_look < first_due {
        // The reader looked before the records were due: it must have held them and slept.
        assert!(stats.waits > 0, "{stats:?}");
        assert!(reader.wait_stats().sleeps > 0, "{:?}", reader.wait_stats());
    } else {
        // A loaded machine: the test run returned after the records were already due.
        eprintln!(
            "the first look came {} ns after the records were due",
            first_look - first_due
        );
    }
}

#[test]
fn close_drains_what_is_held_back() {
    require_kernel!();
    kit::pin_to_cpu(0);
    // A lateness far longer than the test: records of CPU 0 wait for silent CPU 1 until the
    // close, which releases them (in order among themselves).
    let rings: Vec<CpuRing> = (0..2).map(|_| cpu_ring(64 * 1024, 0)).collect();
    let mut reader = reader(&rings, Duration::from_secs(3600));
    rings[0].producer.run(5);
    let mut keys = Vec::new();
    assert_eq!(
        reader
            .poll(Some(Duration::from_millis(100)), |record| {
                keys.push(record.key);
                ControlFlow::Continue(())
            })
            .unwrap(),
        PollOutcome::TimedOut
    );
    assert!(keys.is_empty());
    let flusher = reader.flusher().unwrap();
    let closer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        flusher.close().unwrap();
    });
    let mut outcomes = Vec::new();
    loop {
        let outcome = reader
            .poll(None, |record| {
                keys.push(record.key);
                ControlFlow::Continue(())
            })
            .unwrap();
        outcomes.push(outcome);
        if outcome == PollOutcome::Closed {
            break;
        }
    }
    closer.join().unwrap();
    assert_eq!(
        outcomes,
        [
            PollOutcome::Ready {
                records: 5,
                writable: 0
            },
            PollOutcome::Closed
        ]
    );
    assert_eq!(keys.len(), 5);
    assert!(keys.windows(2).all(|pair| pair[0] <= pair[1]), "{keys:?}");
    assert_eq!(reader.ring(0).unwrap().available().unwrap(), 0);
}

#[test]
fn a_moved_consumer_pos_is_reported_with_the_map_id_and_resumed_without_loss() {
    require_kernel!();
    kit::pin_to_cpu(0);
    let rings: Vec<CpuRing> = (0..2).map(|_| cpu_ring(64 * 1024, 0)).collect();
    let mut reader = reader(&rings, Duration::from_millis(1));
    let poll = |reader: &mut MergedReader<_>, want: usize| {
        let mut released = Vec::new();
        while released.len() < want {
            let outcome = reader.poll(Some(Duration::from_secs(10)), |record| {
                let (_, _, sequence) = kit::ktime_stamp(record.data);
                released.push((record.ring, sequence));
                ControlFlow::Continue(())
            })?;
            assert!(matches!(outcome, PollOutcome::Ready { .. }), "{outcome:?}");
        }
        Ok::<_, bpf_ringbuf::Error>(released)
    };
    rings[1].producer.run(2);
    assert_eq!(poll(&mut reader, 2).unwrap(), [(1, 1), (1, 2)]);
    rings[1].producer.run(2);
    // Another process holding the map fd moves ring 1's consumer_pos past its two unread
    // records.
    let consumer_pos = kit::ConsumerPosWriter::new(rings[1].map.as_fd());
    let ring = reader.ring(1).unwrap();
    let (map_id, cursor, producer) = (ring.map_id(), ring.cursor(), ring.positions().producer);
    consumer_pos.store(producer);
    match poll(&mut reader, 1) {
        Err(bpf_ringbuf::Error::Read {
            map_id: Some(id),
            error,
        }) => {
            assert_eq!(id, map_id);
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
    assert_eq!(reader.resume(map_id), Some(Ok(())));
    assert_eq!(reader.resume(0), None, "no ring has map id 0");
    // Nothing was lost: both records come out, and consumer_pos is ours again.
    assert_eq!(poll(&mut reader, 2).unwrap(), [(1, 3), (1, 4)]);
    assert_eq!(consumer_pos.load(), producer);
    assert_eq!(reader.ring(1).unwrap().cursor(), producer);
}
