//! Drain throughput: a ring pre-filled by a kernel producer, drained by each consumer in turn.

use std::fmt::Write as _;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use bpf_ringbuf_testkit as kit;
use bpf_ringbuf_testkit::insn::{self, helper, JmpOp, Program, R0, R1, R2, R3, R4};
use bpf_ringbuf_testkit::{prog_load, prog_test_run, ProgLoad, ProgType, TestRun};

use crate::drainers::{Drainers, Impl, Workload};
use crate::{median, Options};

/// The ring the drain benchmark uses: 16 MiB, larger than the caches, as in the C reference.
pub const RING_SIZE: usize = 1 << 24;
/// A ring that fits this machine's 1 MiB L2 cache.
pub const SMALL_RING_SIZE: usize = 1 << 19;

/// What a run over a ring of `ring_size` bytes measures.
pub fn title(ring_size: usize) -> String {
    if ring_size < 1 << 20 {
        format!("Drain of a kernel-filled {} KiB ring", ring_size >> 10)
    } else {
        format!("Drain of a kernel-filled {} MiB ring", ring_size >> 20)
    }
}

/// Why ns/record grows with the record size: the 512 KiB ring, read once (untimed) through
/// one consumer's mapping before a timed drain by ours and by the hand loop. Each has its own
/// mapping of the same pages: the pre-read puts the data in the cache for both, but the
/// page translations in the TLB only for the mapping it went through.
pub fn tlb(options: &Options) -> String {
    let mut out = String::new();
    writeln!(
        out,
        "\n## Translation, not code: {} read through one mapping first (ns/record, median)\n",
        title(SMALL_RING_SIZE)
    )
    .unwrap();
    writeln!(
        out,
        "| size B | read first through | ours-batch | hand-loop |\n|---:|---|---:|---:|"
    )
    .unwrap();
    if crate::cpus() > 1 {
        kit::pin_to_cpu(0);
    }
    for size in [512, 2048, 4000] {
        let fill = Fill::new(size, SMALL_RING_SIZE);
        let mut drainers = Drainers::new(fill.map.as_fd(), SMALL_RING_SIZE);
        for via in [Impl::Batch, Impl::Hand] {
            let mut samples = [Vec::new(), Vec::new()];
            for rep in 0..options.reps.max(1) {
                for k in 0..2 {
                    let index = (k + rep) % 2;
                    let which = [Impl::Batch, Impl::Hand][index];
                    fill.fill();
                    drainers.warm(via);
                    drainers.prepare(which);
                    let start = Instant::now();
                    let drained = drainers.drain(which, Workload::Touch, None);
                    let elapsed = start.elapsed();
                    assert_eq!(drained.checksum, fill.checksum(Workload::Touch));
                    samples[index].push(elapsed.as_nanos() as f64 / f64::from(fill.records));
                }
            }
            let through = if via == Impl::Hand {
                "the hand loop's mapping"
            } else {
                "our mapping"
            };
            writeln!(
                out,
                "| {size} | {through} | {:.2} | {:.2} |",
                median(&mut samples[0]),
                median(&mut samples[1])
            )
            .unwrap();
        }
    }
    eprintln!("translation experiment: done");
    out
}

/// A tc program that emits one `len`-byte record, copied from element 0 of the array map
/// `payload`, with `bpf_ringbuf_output(ring, value, len, BPF_RB_NO_WAKEUP)`; returns
/// `TC_ACT_SHOT` (2) if the output fails, so that a fill that does not fit is caught.
///
/// A tc program, not XDP: every `BPF_PROG_TEST_RUN` of an XDP program attaches it to the XDP
/// dispatcher and detaches it again, waiting for RCU grace periods (~20 ms here), during which
/// other jobs on this shared machine run and evict the freshly written ring from the caches.
/// A drain would then measure the neighbours.
pub fn tc_output(ring: BorrowedFd<'_>, payload: BorrowedFd<'_>, len: u32, flags: u64) -> OwnedFd {
    let mut p = Program::new();
    p.lookup_first_elem(payload, "fail")
        .push(insn::mov64_reg(R2, R0))
        .extend(insn::ld_map_fd(R1, ring))
        .push(insn::mov64_imm(R3, len as i32))
        .push(insn::mov64_imm(R4, flags as i32))
        .push(insn::call_helper(helper::RINGBUF_OUTPUT))
        .jmp_imm_label(JmpOp::JNE, R0, 0, "fail")
        .push(insn::mov64_imm(R0, 0))
        .push(insn::exit())
        .label("fail")
        .push(insn::mov64_imm(R0, 2))
        .push(insn::exit());
    let insns = p.build().expect("assemble tc producer");
    prog_load(&ProgLoad::new(ProgType::SCHED_CLS, &insns, c"GPL")).expect("load tc producer")
}

/// Runs a program from [`tc_output`] `repeat` times on this CPU; panics if an output failed.
pub fn run_tc(program: BorrowedFd<'_>, repeat: u32) {
    let output = prog_test_run(
        program,
        &TestRun {
            data_in: &[0; 64],
            repeat,
            ..TestRun::default()
        },
    )
    .expect("BPF_PROG_TEST_RUN");
    assert_eq!(
        output.retval, 0,
        "bpf_ringbuf_output failed: the ring is full"
    );
}

/// A RINGBUF map and a kernel program that fills it with `len`-byte records.
pub struct Fill {
    /// The map.
    pub map: OwnedFd,
    producer: OwnedFd,
    _payload: OwnedFd,
    /// The payload of every record.
    pub record: Vec<u8>,
    /// Records per fill: as many as fit, less a page of slack.
    pub records: u32,
}

impl Fill {
    /// A `ring_size` ring and a [`tc_output`] producer of `len`-byte records.
    pub fn new(len: usize, ring_size: usize) -> Fill {
        let map = kit::ringbuf_map(ring_size);
        let record = kit::packet_bytes(len)[..len].to_vec();
        let payload = kit::array_map(len.max(1) as u32);
        kit::set_array_value(
            payload.as_fd(),
            &kit::packet_bytes(len.max(1))[..len.max(1)],
        );
        let producer = tc_output(map.as_fd(), payload.as_fd(), len as u32, kit::NO_WAKEUP);
        let records =
            ((ring_size - kit::page_size()) / bpf_ringbuf::header::record_size(len)) as u32;
        Fill {
            map,
            producer,
            _payload: payload,
            record,
            records,
        }
    }

    /// The checksum a full drain doing `workload` must produce.
    pub fn checksum(&self, workload: Workload) -> u64 {
        u64::from(self.records).wrapping_mul(workload.of(&self.record))
    }

    /// Runs the producer `records` times in the kernel (on this CPU): the ring is then full.
    pub fn fill(&self) {
        run_tc(self.producer.as_fd(), self.records);
    }
}

/// Per-size results: ns/record samples for each implementation.
pub struct SizeResult {
    /// Data area of the ring.
    pub ring_size: usize,
    /// What each consumer did per record.
    pub workload: Workload,
    /// Payload length.
    pub size: usize,
    /// Records per drain.
    pub records: u32,
    /// Samples (ns/record) per implementation, in [`Impl::ALL`] order (empty if not run).
    pub samples: Vec<Vec<f64>>,
}

impl SizeResult {
    /// Smallest ns/record of `which`.
    pub fn min(&self, which: Impl) -> f64 {
        self.samples[which.index()]
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
    }

    /// Median ns/record of `which`.
    pub fn median(&self, which: Impl) -> f64 {
        median(&mut self.samples[which.index()].clone())
    }

    /// Whether `which` was measured.
    pub fn has(&self, which: Impl) -> bool {
        !self.samples[which.index()].is_empty()
    }

    /// The fastest of libbpf, aya and the hand loop (median), and which it is.
    pub fn best_peer(&self) -> (Impl, f64) {
        Impl::PEERS
            .into_iter()
            .filter(|&i| self.has(i))
            .map(|i| (i, self.median(i)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("a peer was measured")
    }
}

/// Runs the drain benchmark for each of `impls`: for each size, `reps` rounds, each draining
/// a fresh fill with every implementation (the order rotates each round), checking counts
/// and checksums.
pub fn run(
    options: &Options,
    ring_size: usize,
    workload: Workload,
    impls: &[Impl],
) -> Vec<SizeResult> {
    if crate::cpus() > 1 {
        kit::pin_to_cpu(0);
    }
    let mut results = Vec::new();
    for &size in &options.sizes {
        let fill = Fill::new(size, ring_size);
        let expected = (u64::from(fill.records), fill.checksum(workload));
        let mut drainers = Drainers::new(fill.map.as_fd(), ring_size);
        let mut samples = vec![Vec::new(); Impl::ALL.len()];
        for rep in 0..options.reps.max(1) {
            for k in 0..impls.len() {
                let which = impls[(k + rep) % impls.len()];
                fill.fill();
                let mut aya = drainers.prepare(which);
                let start = Instant::now();
                let drained = drainers.drain(which, workload, aya.as_mut());
                let elapsed = start.elapsed();
                assert_eq!(
                    (drained.records, drained.checksum),
                    expected,
                    "{} at {size} B read the wrong records",
                    which.name()
                );
                samples[which.index()].push(elapsed.as_nanos() as f64 / f64::from(fill.records));
            }
        }
        eprintln!(
            "drain {size} B ({} KiB ring, {}): done",
            ring_size >> 10,
            workload.name()
        );
        results.push(SizeResult {
            ring_size,
            workload,
            size,
            records: fill.records,
            samples,
        });
    }
    results
}

fn header(out: &mut String, first: &str, impls: &[Impl]) {
    write!(out, "| {first} |").unwrap();
    for which in impls {
        write!(out, " {} |", which.name()).unwrap();
    }
    writeln!(out).unwrap();
    writeln!(out, "|---:|{}", "---:|".repeat(impls.len())).unwrap();
}

/// The drain tables for one ring and workload: ns/record (median and best), ours-batch
/// against the others, and the zero-copy vs copy table.
pub fn report(results: &[SizeResult]) -> String {
    let mut out = String::new();
    let Some(first) = results.first() else {
        return out;
    };
    let impls: Vec<Impl> = Impl::ALL.into_iter().filter(|&i| first.has(i)).collect();
    let ring = format!("{}, {}", title(first.ring_size), first.workload.name());
    writeln!(out, "\n## {ring}: ns/record (median)\n").unwrap();
    header(&mut out, "size B", &impls);
    for result in results {
        write!(out, "| {} |", result.size).unwrap();
        for &which in &impls {
            write!(out, " {:.2} |", result.median(which)).unwrap();
        }
        writeln!(out).unwrap();
    }
    writeln!(
        out,
        "\n## {ring}: ns/record, best of the repetitions (least disturbed by other load)\n"
    )
    .unwrap();
    header(&mut out, "size B", &impls);
    for result in results {
        write!(out, "| {} |", result.size).unwrap();
        for &which in &impls {
            write!(out, " {:.2} |", result.min(which)).unwrap();
        }
        writeln!(out).unwrap();
    }
    let others: Vec<Impl> = impls
        .iter()
        .copied()
        .filter(|&i| i != Impl::Batch)
        .collect();
    writeln!(
        out,
        "\n## {ring}: time of each / time of ours-batch (medians, best-of in brackets; >1 = ours faster)\n"
    )
    .unwrap();
    write!(out, "| size B | best peer |").unwrap();
    for which in &others {
        write!(out, " {} |", which.name()).unwrap();
    }
    writeln!(out).unwrap();
    writeln!(out, "|---:|---:|{}", "---:|".repeat(others.len())).unwrap();
    for result in results {
        let (peer, peer_ns) = result.best_peer();
        write!(
            out,
            "| {} | {:.2} ({}) |",
            result.size,
            peer_ns / result.median(Impl::Batch),
            peer.name()
        )
        .unwrap();
        for &other in &others {
            write!(
                out,
                " {:.2} ({:.2}) |",
                result.median(other) / result.median(Impl::Batch),
                result.min(other) / result.min(Impl::Batch)
            )
            .unwrap();
        }
        writeln!(out).unwrap();
    }
    if first.has(Impl::Copy) {
        writeln!(
            out,
            "\n## {ring}: zero-copy against copying (medians)\n\n\
             | size B | ours-batch ns | ours-copy ns | copy / zero-copy | cilium/ebpf claim | ours-copy / (batch+memcpy) |\n\
             |---:|---:|---:|---:|---:|---:|"
        )
        .unwrap();
        for result in results {
            let zero = result.median(Impl::Batch);
            let copy = result.median(Impl::Copy);
            let claim = seed_claim(result.size).map_or("".into(), |c| format!("{c:.2}x"));
            let memcpy = if result.has(Impl::BatchMemcpy) {
                format!("{:.2}", copy / result.median(Impl::BatchMemcpy))
            } else {
                String::new()
            };
            writeln!(
                out,
                "| {} | {zero:.2} | {copy:.2} | {:.2}x | {claim} | {memcpy} |",
                result.size,
                copy / zero
            )
            .unwrap();
        }
    }
    out
}

/// cilium/ebpf's zero-copy speedups over its copying reader (github.com/cilium/ebpf pull
/// 1979: `UnsafeReader.ReadInto` against `Reader.ReadInto`).
pub fn seed_claim(size: usize) -> Option<f64> {
    match size {
        128 => Some(1.18),
        1024 => Some(3.61),
        2048 => Some(6.02),
        2432 => Some(6.39),
        _ => None,
    }
}

/// One line per (size, implementation): median, min, max ns/record and records/s.
pub fn csv(results: &[SizeResult]) -> String {
    let mut out = String::new();
    for result in results {
        for which in Impl::ALL {
            if !result.has(which) {
                continue;
            }
            let samples = &result.samples[which.index()];
            let median = result.median(which);
            let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
            let max = samples.iter().copied().fold(0.0, f64::max);
            writeln!(
                out,
                "{},{},{},{},{},{median:.3},{min:.3},{max:.3},{:.0}",
                result.ring_size,
                result.workload.key(),
                result.size,
                which.name(),
                result.records,
                1e9 / median
            )
            .unwrap();
        }
    }
    out
}

/// The header line of [`csv`] output.
pub const CSV_HEADER: &str =
    "ring_size,workload,size,implementation,records,median_ns,min_ns,max_ns,records_per_s\n";

/// Results read back from [`csv`] output (one sample each: the median), one list per
/// (ring size, workload), in the order they appear.
pub fn from_csv(text: &str) -> Vec<Vec<SizeResult>> {
    let mut runs: Vec<Vec<SizeResult>> = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let [ring_size, workload, size, name, records, median, ..] = fields[..] else {
            continue;
        };
        let (Ok(ring_size), Some(workload), Ok(size), Some(which), Ok(records), Ok(median)) = (
            ring_size.parse::<usize>(),
            Workload::from_key(workload),
            size.parse::<usize>(),
            Impl::from_name(name),
            records.parse::<u32>(),
            median.parse::<f64>(),
        ) else {
            continue;
        };
        let run = match runs
            .iter()
            .position(|r| r[0].ring_size == ring_size && r[0].workload == workload)
        {
            Some(index) => &mut runs[index],
            None => {
                runs.push(Vec::new());
                runs.last_mut().unwrap()
            }
        };
        let result = match run.iter().position(|r| r.size == size) {
            Some(index) => &mut run[index],
            None => {
                run.push(SizeResult {
                    ring_size,
                    workload,
                    size,
                    records,
                    samples: vec![Vec::new(); Impl::ALL.len()],
                });
                run.last_mut().unwrap()
            }
        };
        result.samples[which.index()] = vec![median];
    }
    runs
}
