//! Loom model 3: the wakeup handshake.
//!
//! The consumer drains, publishes `consumer_pos`, runs [`Consumer::check_before_sleep`] (a
//! full fence, then a fresh look) and sleeps if it finds nothing committed. The kernel
//! commits (an `xchg`, a full barrier) and wakes the consumer only if the `consumer_pos` it
//! then reads equals the record's position (bpf_ringbuf_commit). A wakeup that arrives while
//! the consumer is awake stays pending (as an edge-triggered epoll event does) and makes the
//! next sleep return at once.
//!
//! The property: no execution leaves the consumer asleep, with no wakeup pending, while a
//! committed record is unread. Here that state is a deadlock (the consumer waits for a
//! wakeup that never comes, the producer has finished), which loom reports.

use std::ops::ControlFlow;
use std::sync::Arc;

use crate::common::{expect_failure, model, payload, reached, times_reached, Kernel, LoomRing};
use bpf_ringbuf::model::{KernelPoint, Wakeup};
use bpf_ringbuf::sync::SyncPoint;
use bpf_ringbuf::{Consumer, Readiness};
use loom::sync::Notify;

/// A 64-byte ring; two records with 4-byte payloads (16 bytes each) fit without waiting, so
/// the only thing the consumer ever waits for is a wakeup.
const RING_SIZE: usize = 64;
const LEN: usize = 4;
const RECORDS: u8 = 2;

/// Coverage: the answers of `check_before_sleep`.
const ANSWERS: [&str; 3] = ["Readable", "Empty", "HeadBusy"];

fn no_lost_wakeup() {
    let ring = Arc::new(LoomRing::new(RING_SIZE));
    // SAFETY: the model is the ring's only writer; its one consumer publishes only past
    // records it has finished reading.
    let kernel = unsafe { Kernel::new(ring.clone()) }.unwrap();
    // The consumer's wait queue: `notify` is the kernel's wakeup (irq_work → wake_up_all),
    // `wait` the consumer's sleep (epoll_wait); a notification sent while nobody waits is kept.
    let wakeup = Arc::new(Notify::new());

    let consumer = {
        let ring = ring.clone();
        let wakeup = wakeup.clone();
        loom::thread::spawn(move || {
            // SAFETY: the model's only consumer of this ring; the kernel model writes payloads only in
            // space consumer_pos handed back.
            let mut consumer = unsafe { Consumer::new(ring) }.unwrap();
            let mut next_tag = 0u8;
            loop {
                consumer
                    .consume(usize::MAX, |record| {
                        assert_eq!(
                            record,
                            payload(next_tag, LEN),
                            "record out of order or torn"
                        );
                        next_tag += 1;
                        ControlFlow::Continue(())
                    })
                    .expect("the ring is never corrupt");
                if next_tag == RECORDS {
                    return;
                }
                let readiness = consumer.check_before_sleep();
                let index = match readiness {
                    Readiness::Readable => 0,
                    Readiness::Empty => 1,
                    Readiness::HeadBusy => 2,
                };
                reached(ANSWERS[index]);
                match readiness {
                    Readiness::Readable => continue,
                    // Sleeping is safe only if a commit at our position will wake us.
                    Readiness::Empty | Readiness::HeadBusy => wakeup.wait(),
                }
            }
        })
    };

    for tag in 0..RECORDS {
        let mut reservation = kernel.reserve(LEN).expect("both records fit");
        reservation.write(&payload(tag, LEN));
        if reservation.submit(Wakeup::Adaptive) {
            wakeup.notify();
        }
    }
    consumer.join().unwrap();
}

#[test]
fn wakeup_handshake() {
    model(no_lost_wakeup);
    let seen = ANSWERS.map(times_reached);
    assert!(
        seen.iter().all(|&count| count > 0),
        "some answer of check_before_sleep never happened ({ANSWERS:?}): {seen:?}"
    );
}

/// Control: without the full fence in `check_before_sleep`, the consumer's publish of
/// `consumer_pos` and its re-read of `producer_pos` form a store-buffer pattern with the
/// kernel's commit and its read of `consumer_pos`: both can miss the other's store, so the
/// consumer sleeps past a record the kernel decided not to wake it for.
#[test]
fn control_no_fence_before_sleep() {
    expect_failure(SyncPoint::SleepFence, "deadlock", no_lost_wakeup);
}

/// Control (kernel side): the kernel's `xchg` is a full barrier; reduced to an `AcqRel`
/// exchange, the kernel's read of `consumer_pos` may miss the consumer's publish while the
/// consumer's re-check misses the commit.
#[test]
fn control_kernel_commit_without_full_barrier() {
    expect_failure(KernelPoint::CommitFence, "deadlock", no_lost_wakeup);
}
