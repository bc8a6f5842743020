//! The tokio reader against the real kernel (feature `tokio`): producers pinned to both CPUs,
//! a ping-pong that hangs if one wakeup is lost, a BUSY head that must not make the reader
//! spin, and the user ring's async reservation.
//!
//! The async types sleep in tokio's reactor, so their sleeps are counted from outside: a
//! future that returns `Pending` has gone to sleep, and each later poll is a wakeup
//! ([`counting_sleeps`]).

use std::future::Future;
use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bpf_ringbuf::{AsyncRingBuf, AsyncUserRingBuf, DropCounter, RingBuf, UserRingBuf};
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

/// Runs `future` to completion, adding to `sleeps` every time it returned `Pending`: each is a
/// sleep, ended by a wakeup that made the runtime poll it again.
async fn counting_sleeps<F: Future>(future: F, sleeps: &mut u64) -> F::Output {
    calling_on_sleep(future, sleeps, || {}).await
}

/// [`counting_sleeps`], calling `on_sleep` after each `Pending`.
async fn calling_on_sleep<F: Future>(
    future: F,
    sleeps: &mut u64,
    mut on_sleep: impl FnMut(),
) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        let poll = future.as_mut().poll(cx);
        if poll.is_pending() {
            *sleeps += 1;
            on_sleep();
        }
        poll
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_reader_gets_every_record_from_producers_on_both_cpus() {
    require_kernel!();
    let cpus = kit::online_cpus().min(2);
    let per_cpu: u64 = 10_000;
    let map = kit::ringbuf_map(kit::ring_size_at_least(256 * 1024));
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
    let mut sleeps = 0u64;
    let read = tokio::time::timeout(LIMIT, async {
        while total + drops.total().unwrap() < runs {
            let batch = counting_sleeps(ring.next_batch(), &mut sleeps)
                .await
                .unwrap();
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
    let stats = ring.get_ref().stats();
    assert_eq!(stats.records, total);
    assert_eq!(stats.consumed_bytes, total * 56);
    // The reader caught up and slept at least once, and a wakeup ended the sleep.
    assert!(sleeps >= 1, "never slept");
    assert_eq!(ring.get_ref().available().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_pong_loses_no_wakeup() {
    require_kernel!();
    // One record at a time, and the producer waits for the reader to take it before the
    // next: the reader sleeps before every record, so a single lost wakeup hangs the test.
    let rounds = 3000;
    let map = kit::ringbuf_map(kit::ring_size_at_least(4096));
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
    assert_eq!(ring.get_ref().stats().records, rounds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_head_is_awaited_without_spinning() {
    require_kernel!();
    require_feature!(kit::callbacks_missing());
    let map = kit::ringbuf_map(kit::ring_size_at_least(4096));
    let holder = kit::busy_holder(map.as_fd(), 1 << 23, 0xbeef);
    let mut ring = AsyncRingBuf::new(RingBuf::new(&map).unwrap()).unwrap();
    let thread = thread::spawn(move || holder.run(1));
    let mut sleeps = 0;
    tokio::time::timeout(LIMIT, counting_sleeps(ring.readable(), &mut sleeps))
        .await
        .expect("commit of the held record was signalled")
        .unwrap();
    thread.join().unwrap();
    {
        let batch = ring.next_batch().await.unwrap();
        let records: Vec<&[u8]> = batch.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(records, [&0xbeefu64.to_ne_bytes()[..]]);
    }
    // A level-triggered wait would wake ~10^5 times while the record is held.
    assert!(sleeps <= 3, "readable() woke {sleeps} times");
    assert_eq!(ring.get_ref().available(), Ok(0));
}

#[tokio::test]
async fn a_cancelled_wait_loses_nothing() {
    require_kernel!();
    kit::pin_to_cpu(0);
    let map = kit::ringbuf_map(kit::ring_size_at_least(4096));
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
async fn async_reserve_wakes_when_the_kernel_drains_a_full_user_ring() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    require_feature!(kit::callbacks_missing());
    let map = kit::user_ringbuf_map(kit::ring_size_at_least(4096));
    let drainer = kit::user_ringbuf_drain(map.as_fd(), 0);
    let ring = UserRingBuf::new(&map).unwrap();
    let mut samples = 0;
    while ring.output(&[3; 100]).is_ok() {
        samples += 1;
    }
    let ring = AsyncUserRingBuf::new(ring).unwrap();
    // Full: the reservation waits (and is cancel-safe: nothing was reserved).
    assert!(
        tokio::time::timeout(Duration::from_millis(30), ring.reserve(100))
            .await
            .is_err()
    );
    assert_eq!(ring.get_ref().positions().producer, samples as usize * 112);
    // The kernel drains once the reservation has gone to sleep.
    let (asleep, asleep_rx) = mpsc::channel();
    let drain = thread::spawn(move || {
        asleep_rx
            .recv_timeout(LIMIT)
            .expect("the reservation went to sleep");
        drainer.drain()
    });
    let mut sleeps = 0;
    let reserve = calling_on_sleep(ring.reserve(100), &mut sleeps, || {
        let _ = asleep.send(());
    });
    let mut sample = tokio::time::timeout(LIMIT, reserve)
        .await
        .expect("the drain's EPOLLOUT woke the waiter")
        .unwrap();
    assert!(sleeps >= 1);
    sample.copy_from_slice(&[4; 100]);
    sample.submit();
    assert_eq!(drain.join().unwrap(), samples);
    // Room again right away: no wait (a zero timeout still polls the reservation once).
    tokio::time::timeout(Duration::ZERO, ring.reserve(100))
        .await
        .expect("room without waiting")
        .unwrap()
        .discard();
    // Too large for the ring: refused at once instead of waiting forever.
    assert!(matches!(
        tokio::time::timeout(Duration::ZERO, ring.reserve(ring.get_ref().max_len() + 1)).await,
        Ok(Err(bpf_ringbuf::Error::Reserve(
            bpf_ringbuf::ReserveError::TooLarge { .. }
        )))
    ));
    assert_eq!(
        ring.into_inner().positions().producer,
        (samples as usize + 2) * 112
    );
}
