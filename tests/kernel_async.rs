//! The tokio reader against the real kernel (feature `tokio`): producers pinned to both CPUs,
//! a ping-pong that hangs if one wakeup is lost, a BUSY head that must not make the reader
//! spin, and the user-ring space waiter.

use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bpf_ringbuf::{
    AsyncRingBuf, AsyncSpaceWaiter, DropCounter, RingBuf, UserRingBuf, UserRingSpace,
};
use bpf_ringbuf_testkit::{self as kit, require_feature, require_kernel, Commit};

/// A stamped producer into `map`, with its own sequence and drop counters.
struct Stamped {
    producer: kit::Producer,
    _sequence: OwnedFd,
    drops: OwnedFd,
}

fn stamped(map: BorrowedFd<'_>, len: u32) -> Stamped {
    let sequence = kit::percpu_counter_map();
    let drops = kit::percpu_counter_map();
    let producer = kit::stamped(map, sequence.as_fd(), drops.as_fd(), len, Commit::Submit, 0);
    Stamped {
        producer,
        _sequence: sequence,
        drops,
    }
}

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_reader_gets_every_record_from_producers_on_both_cpus() {
    require_kernel!();
    let cpus = kit::online_cpus().min(2);
    let per_cpu: u64 = 10_000;
    let map = kit::ringbuf_map(256 * 1024);
    let source = stamped(map.as_fd(), 48);
    let mut ring = AsyncRingBuf::new(RingBuf::new(&map).unwrap()).unwrap();
    let producer = std::sync::Arc::new(source.producer);

    let threads: Vec<_> = (0..cpus)
        .map(|cpu| {
            let producer = producer.clone();
            thread::spawn(move || {
                kit::pin_to_cpu(cpu);
                let mut sent = 0;
                let mut burst = 1;
                while sent < per_cpu {
                    // Bursts of 1..=64 with pauses: the reader both catches up and sleeps.
                    let n = burst.min(per_cpu - sent);
                    producer.run(n as u32);
                    sent += n;
                    burst = burst % 64 + 1;
                    if burst % 16 == 0 {
                        thread::sleep(Duration::from_micros(200));
                    }
                }
            })
        })
        .collect();

    // Every run either delivers a record or counts a drop (the reader shares two busy CPUs
    // with the producers, so the ring may fill): read until both add up.
    let runs = per_cpu * cpus as u64;
    let mut drops = DropCounter::new(&source.drops).unwrap();
    let mut next_sequence = vec![1u64; cpus];
    let mut total = 0u64;
    let read = tokio::time::timeout(LIMIT, async {
        while total + drops.total().unwrap() < runs {
            let batch = ring.next_batch().await.unwrap();
            for record in &batch {
                let record = record.unwrap();
                assert_eq!(record.len(), 48);
                assert_eq!(&record[16..], &kit::stamped_tail(48)[..]);
                let (cpu, sequence) = kit::stamp(record);
                let cpu = cpu as usize;
                assert!(cpu < cpus, "record from CPU {cpu}");
                assert_eq!(sequence, next_sequence[cpu], "CPU {cpu}");
                next_sequence[cpu] += 1;
                total += 1;
            }
        }
    })
    .await;
    for thread in threads {
        thread.join().unwrap();
    }
    let lost = drops.total().unwrap();
    assert!(
        read.is_ok(),
        "reader stuck at {total} of {runs} ({lost} dropped)"
    );
    assert_eq!(total + lost, runs);
    assert!(total > lost, "{total} read, {lost} dropped");
    // Sequences count successful reservations only, so drops leave them contiguous.
    let per_cpu_drops = drops.per_cpu().unwrap();
    for cpu in 0..cpus {
        assert_eq!(
            next_sequence[cpu] - 1 + per_cpu_drops[cpu],
            per_cpu,
            "CPU {cpu}"
        );
    }
    let stats = ring.stats();
    assert_eq!(stats.records, total);
    assert_eq!(stats.consumed_bytes, total * 56);
    assert!(ring.wait_stats().wakeups >= 1, "{:?}", ring.wait_stats());
    assert_eq!(ring.available().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_pong_loses_no_wakeup() {
    require_kernel!();
    // One record at a time, and the producer waits for the reader to take it before the
    // next: the reader sleeps before every record, so a single lost wakeup hangs the test.
    let rounds = 3000;
    let map = kit::ringbuf_map(4096);
    let source = stamped(map.as_fd(), 16);
    let mut ring = AsyncRingBuf::new(RingBuf::new(&map).unwrap()).unwrap();
    let (ack, acks) = mpsc::channel::<()>();
    let producer = thread::spawn(move || {
        kit::pin_to_cpu(1 % kit::online_cpus());
        for _ in 0..rounds {
            source.producer.run(1);
            if acks.recv_timeout(LIMIT).is_err() {
                return false;
            }
        }
        true
    });
    let read = tokio::time::timeout(LIMIT, async {
        for expected in 1..=rounds {
            let mut got = 0;
            let delivered = ring
                .consume(usize::MAX, |record| {
                    got = kit::stamp(record).1;
                    ControlFlow::Continue(())
                })
                .await
                .unwrap();
            assert_eq!((delivered, got), (1, expected));
            ack.send(()).unwrap();
        }
    })
    .await;
    assert!(read.is_ok(), "a wakeup was lost");
    assert!(producer.join().unwrap());
    assert_eq!(ring.stats().records, rounds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_head_is_awaited_without_spinning() {
    require_kernel!();
    let map = kit::ringbuf_map(4096);
    let holder = kit::busy_holder(map.as_fd(), 1 << 23, 0xbeef);
    let mut ring = AsyncRingBuf::new(RingBuf::new(&map).unwrap()).unwrap();
    let thread = thread::spawn(move || holder.run(1));
    tokio::time::timeout(LIMIT, ring.readable())
        .await
        .expect("commit of the held record was signalled")
        .unwrap();
    thread.join().unwrap();
    assert_eq!(ring.read_owned().unwrap().unwrap(), 0xbeefu64.to_ne_bytes());
    // A level-triggered wait would wake ~10^5 times while the record is held.
    let stats = ring.wait_stats();
    assert!(stats.wakeups <= 3, "{stats:?}");
}

#[tokio::test]
async fn a_cancelled_wait_loses_nothing() {
    require_kernel!();
    kit::pin_to_cpu(0);
    let map = kit::ringbuf_map(4096);
    let source = stamped(map.as_fd(), 16);
    let mut ring = AsyncRingBuf::new(RingBuf::new(&map).unwrap()).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(20), ring.readable())
            .await
            .is_err(),
        "nothing to read yet"
    );
    source.producer.run(2);
    let batch = tokio::time::timeout(LIMIT, ring.next_batch())
        .await
        .unwrap()
        .unwrap();
    let sequences: Vec<u64> = batch.iter().map(|r| kit::stamp(r.unwrap()).1).collect();
    assert_eq!(sequences, [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_waiter_wakes_when_the_kernel_drains_a_full_user_ring() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    let map = kit::user_ringbuf_map(4096);
    let drainer = kit::user_ringbuf_drain(map.as_fd(), 0);
    let ring = UserRingBuf::new(&map).unwrap();
    let mut samples = 0;
    while ring.output(&[3; 100]).is_ok() {
        samples += 1;
    }
    let mut space = AsyncSpaceWaiter::new(UserRingSpace::new(ring, 100)).unwrap();
    // Full: the wait does not return (and is cancel-safe).
    assert!(
        tokio::time::timeout(Duration::from_millis(30), space.writable())
            .await
            .is_err()
    );
    let drain = thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        drainer.drain()
    });
    let writer = tokio::time::timeout(LIMIT, space.writable())
        .await
        .expect("the drain's EPOLLOUT woke the waiter")
        .unwrap();
    writer.ring().output(&[4; 100]).unwrap();
    assert_eq!(drain.join().unwrap(), samples);
    // Room again right away: no wait.
    space.writable().await.unwrap();
}
