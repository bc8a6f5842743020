//! The stride experiment: why a zero-copy reader of 128–320-byte records is slower than a
//! copy, shown without the kernel.
//!
//! Records of one size are written into plain memory mapped twice (a memfd: a writer's alias
//! and a reader's, as the kernel writes a ring through its own mapping and the consumer reads
//! through another), then walked through the reader's alias in five ways that differ in one
//! thing each:
//!
//! - `chain`: what a ring reader does: each header gives the next record's position, and the
//!   reader touches the header and the first and last byte;
//! - `chain, every line`: the same, and one byte of every cache line of the record besides
//!   (more loads, in a dense, sequential pattern);
//! - `chain + prefetch`: `chain`, prefetching the header eight records ahead, as ours does;
//! - `independent`: the same bytes as `chain`, at positions computed from the size instead of
//!   read from the headers: no chain of dependent loads;
//! - `copy`: a `memcpy` of each record out, following the headers.

use std::fmt::Write as _;
use std::time::Instant;

use bpf_ringbuf_sys::rustix::fs::{ftruncate, memfd_create, MemfdFlags};
use bpf_ringbuf_sys::rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
use bpf_ringbuf_testkit as kit;

use crate::drainers::touch;
use crate::{median, Options};

/// Payload sizes of the experiment.
pub const SIZES: [usize; 14] = [
    64, 96, 120, 128, 136, 144, 160, 192, 256, 320, 512, 1024, 2048, 4000,
];

/// Bytes of memory walked: as much as the large ring.
const LEN: usize = crate::drain::RING_SIZE;

/// Plain memory mapped twice.
struct Aliased {
    writer: *mut u8,
    reader: *const u8,
}

impl Aliased {
    fn new() -> Aliased {
        let fd = memfd_create("stride", MemfdFlags::CLOEXEC).expect("memfd_create");
        ftruncate(&fd, LEN as u64).expect("ftruncate");
        // SAFETY: fresh shared mappings of a memfd of `LEN` bytes; unmapped in Drop.
        unsafe {
            let writer = mmap(
                std::ptr::null_mut(),
                LEN,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )
            .expect("mmap the writer's alias");
            let reader = mmap(
                std::ptr::null_mut(),
                LEN,
                ProtFlags::READ,
                MapFlags::SHARED,
                &fd,
                0,
            )
            .expect("mmap the reader's alias");
            Aliased {
                writer: writer.cast(),
                reader: reader.cast_const().cast(),
            }
        }
    }

    /// Writes records of `len` payload bytes, back to back, through the writer's alias, as
    /// the kernel lays them out (an 8-byte header, the payload, padding to 8); returns how
    /// many.
    fn fill(&self, len: usize) -> usize {
        let stride = bpf_ringbuf::header::record_size(len);
        let records = LEN / stride;
        let payload = kit::packet_bytes(len);
        for k in 0..records {
            // SAFETY: `k * stride + stride <= LEN`, inside the writer's mapping.
            unsafe {
                let record = self.writer.add(k * stride);
                record.cast::<u64>().write(len as u64);
                std::ptr::copy_nonoverlapping(payload.as_ptr(), record.add(8), len);
            }
        }
        records
    }
}

impl Drop for Aliased {
    fn drop(&mut self) {
        // SAFETY: the two mappings made in `new`, unmapped once.
        unsafe {
            let _ = munmap(self.writer.cast(), LEN);
            let _ = munmap(self.reader.cast_mut().cast(), LEN);
        }
    }
}

/// How the records are walked (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// Header to header, touching the header and the first and last byte.
    Chain,
    /// `Chain`, and one byte of every cache line of the record.
    ChainEveryLine,
    /// `Chain`, prefetching the header eight records ahead.
    ChainPrefetch,
    /// The bytes `Chain` reads, at positions computed from the size.
    Independent,
    /// A copy of each record, header to header.
    Copy,
}

impl Walk {
    /// All of them, in report order.
    pub const ALL: [Walk; 5] = [
        Walk::Chain,
        Walk::ChainEveryLine,
        Walk::ChainPrefetch,
        Walk::Independent,
        Walk::Copy,
    ];

    fn name(self) -> &'static str {
        match self {
            Walk::Chain => "chain",
            Walk::ChainEveryLine => "chain, every line",
            Walk::ChainPrefetch => "chain + prefetch",
            Walk::Independent => "independent",
            Walk::Copy => "copy",
        }
    }
}

#[inline(never)]
fn walk(memory: &Aliased, records: usize, stride: usize, how: Walk, buf: &mut [u8]) -> u64 {
    let data = memory.reader;
    let mut sum = 0u64;
    let mut position = 0usize;
    // SAFETY: every position is a record start below `LEN` and every record lies inside the
    // reader's mapping; prefetches are hints at addresses formed with `wrapping_add`.
    unsafe {
        for k in 0..records {
            if how == Walk::Independent {
                position = k * stride;
            }
            let record = data.add(position);
            let len = record.cast::<u32>().read_volatile() as usize;
            let size = (len + 15) & !7;
            let payload = std::slice::from_raw_parts(record.add(8), len);
            match how {
                Walk::Chain | Walk::Independent => sum += touch(payload),
                Walk::ChainEveryLine => {
                    sum += touch(payload);
                    let mut line = 64 - (record as usize & 63);
                    while line < size {
                        sum += u64::from(record.add(line).read_volatile());
                        line += 64;
                    }
                }
                Walk::ChainPrefetch => {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        record.wrapping_add(8 * size).cast(),
                    );
                    sum += touch(payload);
                }
                Walk::Copy => {
                    let copy = &mut buf[..len];
                    copy.copy_from_slice(payload);
                    sum += touch(copy);
                }
            }
            if how != Walk::Independent {
                position += size;
            }
        }
    }
    sum
}

/// One record size's results.
pub struct StrideResult {
    size: usize,
    /// Samples (ns/record) per walk, in [`Walk::ALL`] order.
    samples: Vec<Vec<f64>>,
}

/// Runs the experiment: for each size, `reps` rounds of a fresh fill and each walk (the order
/// rotates each round), on CPU 0.
pub fn run(options: &Options) -> Vec<StrideResult> {
    if crate::cpus() > 1 {
        kit::pin_to_cpu(0);
    }
    let memory = Aliased::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut results = Vec::new();
    for &size in &options.sizes {
        let stride = bpf_ringbuf::header::record_size(size);
        let mut samples = vec![Vec::new(); Walk::ALL.len()];
        let mut expected = None;
        for rep in 0..options.reps.max(1) {
            for k in 0..Walk::ALL.len() {
                let index = (k + rep) % Walk::ALL.len();
                let how = Walk::ALL[index];
                let records = memory.fill(size);
                let start = Instant::now();
                let sum = walk(&memory, records, stride, how, &mut buf);
                samples[index].push(start.elapsed().as_nanos() as f64 / records as f64);
                if matches!(
                    how,
                    Walk::Chain | Walk::ChainPrefetch | Walk::Independent | Walk::Copy
                ) {
                    assert_eq!(
                        *expected.get_or_insert(sum),
                        sum,
                        "{how:?} read other bytes"
                    );
                }
            }
        }
        eprintln!("stride {size} B: done");
        results.push(StrideResult { size, samples });
    }
    results
}

/// Distinct cache lines the zero-copy reader touches (header, first and last byte) per
/// record, averaged over 64 records, and the lines a record spans (its stride / 64): how
/// sparse its access pattern is.
fn lines(size: usize) -> (f64, f64) {
    let stride = bpf_ringbuf::header::record_size(size);
    let mut touched = 0usize;
    let mut previous = usize::MAX;
    for k in 0..64 {
        let start = k * stride;
        for byte in [start, start + 8, start + 8 + size - 1] {
            if byte / 64 != previous {
                touched += 1;
                previous = byte / 64;
            }
        }
    }
    (touched as f64 / 64.0, stride as f64 / 64.0)
}

/// The experiment's table.
pub fn report(results: &[StrideResult]) -> String {
    let mut out = String::new();
    writeln!(
        out,
        "\n## Stride experiment: {} MiB of plain memory mapped twice, no kernel (ns/record, median; best in brackets)\n",
        LEN >> 20
    )
    .unwrap();
    write!(out, "| size B | lines touched / spanned |").unwrap();
    for how in Walk::ALL {
        write!(out, " {} |", how.name()).unwrap();
    }
    writeln!(out, " chain / chain + prefetch |").unwrap();
    writeln!(out, "|---:|---:|{}---:|", "---:|".repeat(Walk::ALL.len())).unwrap();
    for result in results {
        let (touched, spanned) = lines(result.size);
        write!(out, "| {} | {touched:.2} / {spanned:.2} |", result.size).unwrap();
        let mut medians = Vec::new();
        for samples in &result.samples {
            let best = samples.iter().copied().fold(f64::INFINITY, f64::min);
            let m = median(&mut samples.clone());
            medians.push(m);
            write!(out, " {m:.2} ({best:.2}) |").unwrap();
        }
        writeln!(out, " {:.2} |", medians[0] / medians[2]).unwrap();
    }
    out
}
