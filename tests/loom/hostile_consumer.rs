//! Loom model 5: a hostile `consumer_pos` cannot make the kernel hand out space that a BUSY
//! record still occupies.
//!
//! `consumer_pos` is writable by any process holding the map's fd. Since Linux 6.10 the
//! kernel keeps `pending_pos`, the oldest record that may still be BUSY, and refuses a
//! reservation that would reach it, whatever `consumer_pos` says (__bpf_ringbuf_reserve).
//! Here a consumer calls [`Consumer::resync`], which publishes `consumer_pos = producer_pos`
//! over a record another CPU is still writing, while a third CPU asks for a record big enough
//! to wrap onto it.

use std::sync::{Arc, Mutex};

use crate::common::{expect_failure, model, payload, reached, times_reached, Kernel, LoomRing};
use bpf_ringbuf::geometry::distance;
use bpf_ringbuf::header::record_size;
use bpf_ringbuf::model::{KernelPoint, Wakeup};
use bpf_ringbuf::Consumer;

/// A 64-byte ring. The first record (16 bytes at 0) is BUSY while the hostile consumer skips
/// it; the second (56 bytes) then fits after it as far as `consumer_pos` is concerned, and
/// would wrap onto it: only `pending_pos` stops it.
const RING_SIZE: usize = 64;
const FIRST_LEN: usize = 4;
const SECOND_LEN: usize = 48;

/// Coverage: the second reservation succeeded after the first record was reserved, skipped
/// by the hostile consumer and committed (the model reaches the reuse of its space).
const SECOND_RESERVED: &str = "second reservation reuses the first record's space";

/// The reservations handed out and not yet committed, as `(position, bytes)`, kept outside
/// loom's view; every new one is checked against them.
#[derive(Default)]
struct Ledger(Mutex<Vec<(usize, usize)>>);

impl Ledger {
    fn reserved(&self, position: usize, bytes: usize) {
        let mut live = self.0.lock().unwrap();
        for &(other, other_bytes) in live.iter() {
            // Two ring ranges overlap iff either starts inside the other (modulo the ring).
            let overlap = distance(other, position) % RING_SIZE < other_bytes
                || distance(position, other) % RING_SIZE < bytes;
            assert!(
                !overlap,
                "two live reservations overlap: {other}+{other_bytes} and {position}+{bytes}"
            );
        }
        live.push((position, bytes));
    }

    fn committing(&self, position: usize) {
        self.0
            .lock()
            .unwrap()
            .retain(|&(other, _)| other != position);
    }
}

fn reservations_never_overlap() {
    let ring = Arc::new(LoomRing::new(RING_SIZE));
    // SAFETY: the model is the ring's only writer; its one consumer publishes only past
    // records it has finished reading.
    let kernel = Arc::new(unsafe { Kernel::new(ring.clone()) }.unwrap());
    let ledger = Arc::new(Ledger::default());

    let hostile = {
        let ring = ring.clone();
        loom::thread::spawn(move || {
            // SAFETY: the model's only consumer of this ring; the kernel model writes payloads only in
            // space consumer_pos handed back.
            let mut consumer = unsafe { Consumer::new(ring) }.unwrap();
            consumer.resync();
        })
    };
    let second = {
        let kernel = kernel.clone();
        let ledger = ledger.clone();
        loom::thread::spawn(move || {
            // One attempt: the property is safety, not that the reservation succeeds.
            if let Some(mut reservation) = kernel.reserve(SECOND_LEN) {
                let reused = reservation.position() != 0;
                ledger.reserved(reservation.position(), record_size(SECOND_LEN));
                reservation.write(&payload(2, SECOND_LEN));
                ledger.committing(reservation.position());
                reservation.submit(Wakeup::Adaptive);
                if reused {
                    reached(SECOND_RESERVED);
                }
            }
        })
    };

    // If the second record was reserved first, the ring has no room for this one.
    if let Some(mut first) = kernel.reserve(FIRST_LEN) {
        ledger.reserved(first.position(), record_size(FIRST_LEN));
        // The BPF program works between reserve and submit: let the other CPUs run here.
        // (Without a loom operation in this window the ledger could not see the record
        // live: loom only switches threads at its own operations.)
        loom::thread::yield_now();
        first.write(&payload(1, FIRST_LEN));
        ledger.committing(first.position());
        first.submit(Wakeup::Adaptive);
    }

    hostile.join().unwrap();
    second.join().unwrap();
}

#[test]
fn hostile_consumer_pos() {
    model(reservations_never_overlap);
    assert!(
        times_reached(SECOND_RESERVED) > 0,
        "the model never reached the reuse of the first record's space"
    );
}

/// Control (kernel side): without the `pending_pos` check (kernels before 6.10), the
/// hostile `consumer_pos` lets the second reservation wrap onto the BUSY first record.
#[test]
fn control_without_pending_pos() {
    expect_failure(
        KernelPoint::PendingPos,
        "two live reservations overlap",
        reservations_never_overlap,
    );
}
