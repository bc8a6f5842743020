//! Drain throughput: a ring pre-filled by a kernel producer, drained by each consumer in turn.

use std::fmt::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use bpf_ringbuf_testkit::{self as kit, Producer};

use crate::drainers::{touch, Drainers, Impl};
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
                    let start = Instant::now();
                    let drained = drainers.drain(which, None);
                    let elapsed = start.elapsed();
                    assert_eq!(drained.checksum, fill.checksum);
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

/// A RINGBUF map and a kernel program that fills it with `len`-byte records.
pub struct Fill {
    /// The map.
    pub map: OwnedFd,
    producer: Producer,
    /// Records per fill: as many as fit, less a page of slack.
    pub records: u32,
    /// The checksum a full drain must produce.
    pub checksum: u64,
}

impl Fill {
    /// A `ring_size` ring and a reserve + `bpf_xdp_load_bytes` + submit(`BPF_RB_NO_WAKEUP`)
    /// producer of `len`-byte records.
    pub fn new(len: usize, ring_size: usize) -> Fill {
        let map = kit::ringbuf_map(ring_size);
        let producer = kit::reserve_load_submit(map.as_fd(), len as u32, kit::NO_WAKEUP);
        let records =
            ((ring_size - kit::page_size()) / bpf_ringbuf::header::record_size(len)) as u32;
        let checksum = u64::from(records) * touch(&kit::packet_bytes(len)[..len]);
        Fill {
            map,
            producer,
            records,
            checksum,
        }
    }

    /// Runs the producer `records` times in the kernel (on this CPU): the ring is then full.
    pub fn fill(&self) {
        self.producer.run(self.records);
    }
}

/// Per-size results: ns/record samples for each implementation.
pub struct SizeResult {
    /// Data area of the ring.
    pub ring_size: usize,
    /// Payload length.
    pub size: usize,
    /// Records per drain.
    pub records: u32,
    /// Samples (ns/record) per implementation, in [`Impl::ALL`] order.
    pub samples: Vec<Vec<f64>>,
}

impl SizeResult {
    /// Smallest ns/record of `which`.
    pub fn min(&self, which: Impl) -> f64 {
        let index = Impl::ALL.iter().position(|&i| i == which).unwrap();
        self.samples[index]
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
    }

    /// Median ns/record of `which`.
    pub fn median(&self, which: Impl) -> f64 {
        let index = Impl::ALL.iter().position(|&i| i == which).unwrap();
        median(&mut self.samples[index].clone())
    }
}

/// Runs the drain benchmark: for each size, `reps` rounds, each draining a fresh fill with
/// every implementation (the order rotates each round), checking counts and checksums.
pub fn run(options: &Options, ring_size: usize) -> Vec<SizeResult> {
    if crate::cpus() > 1 {
        kit::pin_to_cpu(0);
    }
    let mut results = Vec::new();
    for &size in &options.sizes {
        let fill = Fill::new(size, ring_size);
        let mut drainers = Drainers::new(fill.map.as_fd(), ring_size);
        let mut samples = vec![Vec::new(); Impl::ALL.len()];
        for rep in 0..options.reps.max(1) {
            for k in 0..Impl::ALL.len() {
                let index = (k + rep) % Impl::ALL.len();
                let which = Impl::ALL[index];
                fill.fill();
                let mut aya = drainers.prepare(which);
                let start = Instant::now();
                let drained = drainers.drain(which, aya.as_mut());
                let elapsed = start.elapsed();
                assert_eq!(
                    (drained.records, drained.checksum),
                    (u64::from(fill.records), fill.checksum),
                    "{} at {size} B read the wrong records",
                    which.name()
                );
                samples[index].push(elapsed.as_nanos() as f64 / f64::from(fill.records));
            }
        }
        eprintln!("drain {size} B ({} KiB ring): done", ring_size >> 10);
        results.push(SizeResult {
            ring_size,
            size,
            records: fill.records,
            samples,
        });
    }
    results
}

/// The drain tables: ns/record, records/s, ratios, and the zero-copy vs copy seed table.
pub fn report(results: &[SizeResult]) -> String {
    let mut out = String::new();
    let Some(first) = results.first() else {
        return out;
    };
    let ring = title(first.ring_size);
    writeln!(out, "\n## {ring}: ns/record (median)\n").unwrap();
    write!(out, "| size B | records |").unwrap();
    for which in Impl::ALL {
        write!(out, " {} |", which.name()).unwrap();
    }
    writeln!(out).unwrap();
    writeln!(out, "|---:|---:|{}", "---:|".repeat(Impl::ALL.len())).unwrap();
    for result in results {
        write!(out, "| {} | {} |", result.size, result.records).unwrap();
        for which in Impl::ALL {
            write!(out, " {:.2} |", result.median(which)).unwrap();
        }
        writeln!(out).unwrap();
    }
    writeln!(
        out,
        "\n## {ring}: ns/record, best of the repetitions (least disturbed by other load)\n"
    )
    .unwrap();
    write!(out, "| size B |").unwrap();
    for which in Impl::ALL {
        write!(out, " {} |", which.name()).unwrap();
    }
    writeln!(out).unwrap();
    writeln!(out, "|---:|{}", "---:|".repeat(Impl::ALL.len())).unwrap();
    for result in results {
        write!(out, "| {} |", result.size).unwrap();
        for which in Impl::ALL {
            write!(out, " {:.2} |", result.min(which)).unwrap();
        }
        writeln!(out).unwrap();
    }
    writeln!(out, "\n## {ring}: million records/s (median)\n").unwrap();
    write!(out, "| size B |").unwrap();
    for which in Impl::ALL {
        write!(out, " {} |", which.name()).unwrap();
    }
    writeln!(out).unwrap();
    writeln!(out, "|---:|{}", "---:|".repeat(Impl::ALL.len())).unwrap();
    for result in results {
        write!(out, "| {} |", result.size).unwrap();
        for which in Impl::ALL {
            write!(out, " {:.1} |", 1e3 / result.median(which)).unwrap();
        }
        writeln!(out).unwrap();
    }
    writeln!(
        out,
        "\n## {ring}: ours-batch against the others (time ratio of medians, best-of in brackets; >1 = ours faster)\n"
    )
    .unwrap();
    writeln!(
        out,
        "| size B | libbpf / ours | aya / ours | hand-loop / ours | ours-callback / ours | ours-copy / ours |"
    )
    .unwrap();
    writeln!(out, "|---:|---:|---:|---:|---:|---:|").unwrap();
    for result in results {
        write!(out, "| {} |", result.size).unwrap();
        for other in [
            Impl::Libbpf,
            Impl::Aya,
            Impl::Hand,
            Impl::Callback,
            Impl::Copy,
        ] {
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
    let seed: Vec<_> = results
        .iter()
        .filter_map(|r| {
            let claim = match r.size {
                128 => 1.18,
                1024 => 3.61,
                2048 => 6.02,
                2432 => 6.39,
                _ => return None,
            };
            Some((r, claim))
        })
        .collect();
    if !seed.is_empty() {
        writeln!(
            out,
            "\n## Seed table ({ring}): zero-copy speedup over copying (medians)\n"
        )
        .unwrap();
        writeln!(
            out,
            "| size B | ours-batch ns | ours-copy ns | ours copy / zero-copy | cilium/ebpf claim |"
        )
        .unwrap();
        writeln!(out, "|---:|---:|---:|---:|---:|").unwrap();
        for (result, claim) in seed {
            let zero = result.median(Impl::Batch);
            let copy = result.median(Impl::Copy);
            writeln!(
                out,
                "| {} | {zero:.2} | {copy:.2} | {:.2}x | {claim:.2}x |",
                result.size,
                copy / zero
            )
            .unwrap();
        }
    }
    out
}

/// One line per (size, implementation): median, min, max ns/record and records/s.
pub fn csv(results: &[SizeResult]) -> String {
    let mut out = String::from(
        "ring_size,size,implementation,records,median_ns,min_ns,max_ns,records_per_s\n",
    );
    for result in results {
        for (index, which) in Impl::ALL.into_iter().enumerate() {
            let samples = &result.samples[index];
            let median = result.median(which);
            let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
            let max = samples.iter().copied().fold(0.0, f64::max);
            writeln!(
                out,
                "{},{},{},{},{median:.3},{min:.3},{max:.3},{:.0}",
                result.ring_size,
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

/// Results read back from [`csv`] output (one sample each: the median), by ring size.
pub fn from_csv(text: &str) -> Vec<Vec<SizeResult>> {
    let mut rings: Vec<Vec<SizeResult>> = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let [ring_size, size, name, records, median, ..] = fields[..] else {
            continue;
        };
        let (Ok(ring_size), Ok(size), Some(which), Ok(records), Ok(median)) = (
            ring_size.parse::<usize>(),
            size.parse::<usize>(),
            Impl::from_name(name),
            records.parse::<u32>(),
            median.parse::<f64>(),
        ) else {
            continue;
        };
        let ring = match rings.iter().position(|r| r[0].ring_size == ring_size) {
            Some(index) => &mut rings[index],
            None => {
                rings.push(Vec::new());
                rings.last_mut().unwrap()
            }
        };
        let result = match ring.iter().position(|r| r.size == size) {
            Some(index) => &mut ring[index],
            None => {
                ring.push(SizeResult {
                    ring_size,
                    size,
                    records,
                    samples: vec![Vec::new(); Impl::ALL.len()],
                });
                ring.last_mut().unwrap()
            }
        };
        let index = Impl::ALL.iter().position(|&i| i == which).unwrap();
        result.samples[index] = vec![median];
    }
    rings
}
