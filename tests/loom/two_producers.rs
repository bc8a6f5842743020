//! Loom model 2: the consumer against two kernel producers (two CPUs) that commit out of
//! order.

use std::sync::Arc;

use bpf_ringbuf::sync::atomic::Ordering;

use crate::common::{expect_failure, model, payload, reached, times_reached, Kernel, LoomRing};
use bpf_ringbuf::model::KernelPoint;
use bpf_ringbuf::sync::SyncPoint;
use bpf_ringbuf::Consumer;

/// A 64-byte ring: both records (4-byte payloads, 16 bytes each) fit without waiting.
const RING_SIZE: usize = 64;
const LEN: usize = 4;

/// Coverage: the record reserved second was committed first.
const OUT_OF_ORDER: &str = "out-of-order commit";

/// One producer thread: reserve, fill, submit. Returns the record's position and its place
/// in the commit order.
///
/// The commit order is taken from a loom atomic (a `Relaxed` RMW: it orders the two commits
/// for loom, which then explores both orders, without creating a happens-before between the
/// producers that could hide a bug).
fn produce(kernel: &Kernel, tag: u8, commits: &loom::sync::atomic::AtomicUsize) -> (usize, usize) {
    let mut reservation = kernel.reserve(LEN).expect("both records fit");
    let position = reservation.position();
    reservation.write(&payload(tag, LEN));
    let place = commits.fetch_add(1, Ordering::Relaxed);
    reservation.submit(bpf_ringbuf::model::Wakeup::Adaptive);
    (position, place)
}

/// Reads attempted while the producers run.
const ATTEMPTS: usize = 2;

/// One `read_into`; returns whether it read a record.
fn read_one(consumer: &mut Consumer<Arc<LoomRing>>, seen: &mut Vec<Vec<u8>>) -> bool {
    let mut buf = [0u8; 16];
    match consumer
        .read_into(&mut buf)
        .expect("the ring is never corrupt")
    {
        Some(len) => {
            seen.push(buf[..len].to_vec());
            true
        }
        None => false,
    }
}

fn records_arrive_in_reservation_order() {
    let ring = Arc::new(LoomRing::new(RING_SIZE));
    // SAFETY: the model is the ring's only writer; its one consumer publishes only past
    // records it has finished reading.
    let kernel = Arc::new(unsafe { Kernel::new(ring.clone()) }.unwrap());

    // The consumer makes a bounded number of attempts while the producers run (a spinning
    // consumer multiplies loom's state space without reaching new interleavings), and
    // drains the rest once they are done.
    let consumer = {
        let ring = ring.clone();
        loom::thread::spawn(move || {
            // SAFETY: the model's only consumer of this ring; the kernel model writes payloads only in
            // space consumer_pos handed back.
            let mut consumer = unsafe { Consumer::new(ring) }.unwrap();
            let mut seen = Vec::new();
            for _ in 0..ATTEMPTS {
                read_one(&mut consumer, &mut seen);
            }
            (consumer, seen)
        })
    };
    let commits = Arc::new(loom::sync::atomic::AtomicUsize::new(0));
    let second = {
        let kernel = kernel.clone();
        let commits = commits.clone();
        loom::thread::spawn(move || produce(&kernel, 2, &commits))
    };
    let (first_position, first_place) = produce(&kernel, 1, &commits);
    let (second_position, _) = second.join().unwrap();
    let (mut consumer, mut seen) = consumer.join().unwrap();
    while read_one(&mut consumer, &mut seen) {}

    // Both records, each once, with the bytes their producer wrote, in reservation order
    // (whichever producer reserved first), whatever the order of the commits.
    let mut expected = [
        (first_position, payload(1, LEN)),
        (second_position, payload(2, LEN)),
    ];
    expected.sort();
    let expected: Vec<Vec<u8>> = expected.into_iter().map(|(_, bytes)| bytes).collect();
    assert_eq!(
        seen, expected,
        "records out of reservation order, torn or repeated"
    );
    if (first_position < second_position) == (first_place == 1) {
        reached(OUT_OF_ORDER);
    }
}

#[test]
fn two_producers_out_of_order_commit() {
    model(records_arrive_in_reservation_order);
    assert!(
        times_reached(OUT_OF_ORDER) > 0,
        "the model never committed out of order"
    );
}

/// Control (kernel side): a commit that clears BUSY with a `Relaxed` exchange does not
/// publish the payload written before it.
#[test]
fn control_kernel_commit_relaxed() {
    expect_failure(
        KernelPoint::Commit,
        "Causality violation",
        records_arrive_in_reservation_order,
    );
}

/// Control (our side): the consumer reads the header with `Relaxed`; the out-of-order commit
/// of the second record does not make the first one's payload visible either.
#[test]
fn control_header_load_relaxed() {
    expect_failure(
        SyncPoint::HeaderLoad,
        "Causality violation",
        records_arrive_in_reservation_order,
    );
}
