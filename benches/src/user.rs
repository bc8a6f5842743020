//! USER_RINGBUF: user space produces (reserve, write the payload, submit), a BPF program
//! drains with `bpf_user_ringbuf_drain`. Each round fills the ring (timed), then the kernel
//! drains it (untimed, and checked: every sample must arrive).

use std::fmt::Write as _;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr;
use std::time::Instant;

use bpf_ringbuf::header::record_size;
use bpf_ringbuf::UserRingBuf;
use bpf_ringbuf_testkit::{self as kit, Drainer};

use crate::{median, Options};

const RING_SIZE: usize = 1 << 20;
/// Payload sizes measured.
pub const SIZES: [usize; 4] = [8, 64, 512, 2048];

/// The user-space producers compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserImpl {
    /// `UserRingBuf::reserve` + write + `Reservation::submit`.
    Ours,
    /// `UserRingBuf::batch()` + `WriteBatch::push` per record, one publish per round.
    OursBatch,
    /// libbpf `user_ring_buffer__reserve` + write + `user_ring_buffer__submit`.
    Libbpf,
}

struct LibbpfUserRing {
    ring: *mut libbpf_sys::user_ring_buffer,
}

impl LibbpfUserRing {
    fn new(map: BorrowedFd<'_>) -> Self {
        // SAFETY: a valid USER_RINGBUF map fd; default options.
        let ring = unsafe { libbpf_sys::user_ring_buffer__new(map.as_raw_fd(), ptr::null()) };
        assert!(!ring.is_null(), "user_ring_buffer__new failed");
        LibbpfUserRing { ring }
    }
}

impl Drop for LibbpfUserRing {
    fn drop(&mut self) {
        // SAFETY: created by user_ring_buffer__new, freed once.
        unsafe { libbpf_sys::user_ring_buffer__free(self.ring) }
    }
}

/// One producer's ring, its kernel drainer, and the records per round.
struct Setup {
    which: UserImpl,
    _map: OwnedFd,
    drainer: Drainer,
    ours: Option<UserRingBuf>,
    libbpf: Option<LibbpfUserRing>,
}

impl Setup {
    fn new(which: UserImpl) -> Setup {
        let map = kit::user_ringbuf_map(RING_SIZE);
        let drainer = kit::user_ringbuf_drain(map.as_fd(), 0);
        let (ours, libbpf) = match which {
            UserImpl::Ours | UserImpl::OursBatch => (
                Some(UserRingBuf::new(&map).expect("open UserRingBuf")),
                None,
            ),
            UserImpl::Libbpf => (None, Some(LibbpfUserRing::new(map.as_fd()))),
        };
        Setup {
            which,
            _map: map,
            drainer,
            ours,
            libbpf,
        }
    }

    /// Produces `records` samples copied from `payload`; returns the elapsed time.
    #[inline(never)]
    fn produce(&mut self, payload: &[u8], records: usize) -> f64 {
        let start = Instant::now();
        if let Some(ring) = &mut self.ours {
            if self.which == UserImpl::OursBatch {
                let mut batch = ring.batch().expect("a consistent ring");
                for _ in 0..records {
                    batch.push(payload).expect("space for the sample");
                }
                batch.commit();
            } else {
                for _ in 0..records {
                    let mut sample = ring.reserve(payload.len()).expect("space for the sample");
                    sample.copy_from_slice(payload);
                    sample.submit();
                }
            }
        }
        if let Some(ring) = &self.libbpf {
            for _ in 0..records {
                // SAFETY: a live user_ring_buffer; a non-null sample has `payload.len()`
                // writable bytes until it is submitted.
                unsafe {
                    let sample =
                        libbpf_sys::user_ring_buffer__reserve(ring.ring, payload.len() as u32);
                    assert!(!sample.is_null(), "user_ring_buffer__reserve: no space");
                    ptr::copy_nonoverlapping(payload.as_ptr(), sample.cast(), payload.len());
                    libbpf_sys::user_ring_buffer__submit(ring.ring, sample);
                }
            }
        }
        start.elapsed().as_nanos() as f64
    }

    /// Runs the kernel drain until `records` samples were delivered.
    fn drain(&self, records: usize) {
        let mut drained = 0;
        while drained < records {
            let n = self.drainer.drain();
            assert!(
                n > 0,
                "bpf_user_ringbuf_drain returned {n} after {drained} samples"
            );
            drained += n as usize;
        }
        assert_eq!(drained, records);
    }
}

/// Per-size results: ns/record samples per producer.
pub struct UserResult {
    size: usize,
    records: usize,
    samples: [Vec<f64>; 3],
}

/// Runs the USER_RINGBUF benchmark.
pub fn run(options: &Options) -> Vec<UserResult> {
    if crate::cpus() > 1 {
        kit::pin_to_cpu(0);
    }
    let impls = [UserImpl::Ours, UserImpl::OursBatch, UserImpl::Libbpf];
    let mut results = Vec::new();
    for size in SIZES {
        let payload = kit::packet_bytes(size)[..size].to_vec();
        // Leave one record of room: a full ring is legal, but neither side needs it.
        let records = RING_SIZE / record_size(size) - 1;
        let mut setups = impls.map(Setup::new);
        let mut samples = [Vec::new(), Vec::new(), Vec::new()];
        for rep in 0..options.reps.max(1) {
            for k in 0..impls.len() {
                let index = (k + rep) % impls.len();
                let elapsed = setups[index].produce(&payload, records);
                setups[index].drain(records);
                samples[index].push(elapsed / records as f64);
            }
        }
        eprintln!("user ringbuf {size} B: done");
        results.push(UserResult {
            size,
            records,
            samples,
        });
    }
    results
}

/// The USER_RINGBUF table.
pub fn report(results: &[UserResult]) -> String {
    let mut out = String::new();
    writeln!(
        out,
        "\n## USER_RINGBUF: reserve + write + submit, kernel drain between rounds (median ns/record)\n"
    )
    .unwrap();
    writeln!(
        out,
        "| size B | records/round | ours reserve+submit | ours batch | libbpf | libbpf / ours | libbpf / ours batch |"
    )
    .unwrap();
    writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|").unwrap();
    for result in results {
        let [ours, batch, libbpf] = [0, 1, 2].map(|i| median(&mut result.samples[i].clone()));
        writeln!(
            out,
            "| {} | {} | {ours:.2} | {batch:.2} | {libbpf:.2} | {:.2} | {:.2} |",
            result.size,
            result.records,
            libbpf / ours,
            libbpf / batch
        )
        .unwrap();
    }
    out
}
