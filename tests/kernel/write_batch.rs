//! `Producer::batch` against the real `bpf_user_ringbuf_drain`: records written committed
//! past `producer_pos` and published with one store are drained in order, byte for byte,
//! around the end of the ring too; a batch that is not yet published is invisible to the
//! drain.

use std::os::fd::AsFd;

use bpf_ringbuf::{ReserveError, RingBuf, UserRingBuf};
use bpf_ringbuf_testkit::{self as kit, require_feature, require_kernel};

/// A user ring, a RINGBUF the drain program re-emits every sample into, and the program.
struct Forward {
    user_map: std::os::fd::OwnedFd,
    kernel: RingBuf,
    scratch: std::os::fd::OwnedFd,
    drainer: kit::Drainer,
    max_len: u32,
}

impl Forward {
    fn new(user_size: usize, max_len: u32) -> Self {
        let user_map = kit::user_ringbuf_map(user_size);
        let kernel_map = kit::ringbuf_map(4 * user_size);
        let scratch = kit::array_map(kit::forward_scratch_size(max_len));
        let drainer = kit::user_ringbuf_forward(
            user_map.as_fd(),
            kernel_map.as_fd(),
            scratch.as_fd(),
            max_len,
        );
        Forward {
            kernel: RingBuf::new(&kernel_map).unwrap(),
            user_map,
            scratch,
            drainer,
            max_len,
        }
    }

    /// Drains once; returns how many samples the drain reported and what it re-emitted.
    fn drain(&mut self) -> (i64, Vec<Vec<u8>>) {
        let drained = self.drainer.drain();
        let mut out = Vec::new();
        while let Some(record) = self.kernel.read_owned().unwrap() {
            out.push(record);
        }
        assert_eq!(kit::forward_failures(self.scratch.as_fd(), self.max_len), 0);
        (drained, out)
    }
}

fn sample(round: usize, i: usize) -> Vec<u8> {
    let len = 1 + (round * 7 + i * 13) % 200;
    (0..len).map(|b| (round + i + b) as u8).collect()
}

#[test]
fn a_published_batch_is_drained_in_order_across_the_wrap() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    // The drain program passes a callback to bpf_user_ringbuf_drain.
    require_feature!(kit::callbacks_missing());
    let size = kit::ring_size_at_least(4096);
    let mut forward = Forward::new(size, 256);
    let mut ring = UserRingBuf::new(&forward.user_map).unwrap();
    // Rounds of batches of various sizes: about 5 records of about 110 bytes a round, so the
    // records wrap around the ring (one page, at least 4 KiB) several times.
    for round in 0..40 * size / 4096 {
        let mut written = Vec::new();
        let mut batch = ring.batch().unwrap();
        for i in 0..(round % 9 + 1) {
            let data = sample(round, i);
            match batch.push(&data) {
                Ok(()) => written.push(data),
                Err(ReserveError::NoSpace { .. }) => break,
                Err(error) => panic!("{error}"),
            }
        }
        if round % 2 == 0 {
            // Written but not published: the drain sees none of it.
            assert_eq!(forward.drainer.drain(), 0, "round {round}");
        }
        assert_eq!(batch.len(), written.len());
        batch.commit();
        let (drained, out) = forward.drain();
        assert_eq!(drained, written.len() as i64, "round {round}");
        assert_eq!(out, written, "round {round}");
    }
    assert_eq!(ring.free_space().unwrap(), size);
}

#[test]
fn a_batch_fills_the_ring_exactly_and_reservations_follow_it() {
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
    // The drain program passes a callback to bpf_user_ringbuf_drain.
    require_feature!(kit::callbacks_missing());
    let size = kit::ring_size_at_least(4096);
    let mut forward = Forward::new(size, 256);
    let mut ring = UserRingBuf::new(&forward.user_map).unwrap();
    let mut batch = ring.batch().unwrap();
    // Records of 120 payload bytes take 128 each: `size / 128` of them fill the ring.
    let count = size / 128;
    let record = |i: usize| vec![i as u8; 120];
    for i in 0..count {
        batch.push(&record(i)).unwrap();
    }
    assert_eq!(batch.free_space(), 0);
    assert!(matches!(
        batch.reserve(0),
        Err(ReserveError::NoSpace {
            needed: 8,
            available: 0
        })
    ));
    drop(batch); // publishes too
    let (drained, out) = forward.drain();
    assert_eq!(drained, count as i64);
    assert_eq!(out, (0..count).map(record).collect::<Vec<_>>());
    // The single-record path continues from where the batch left producer_pos.
    ring.output(b"after").unwrap();
    assert_eq!(forward.drain(), (1, vec![b"after".to_vec()]));
}
