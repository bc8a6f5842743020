//! Benchmarks of bpf-ringbuf against libbpf and aya, on real kernel rings.
//!
//! ```text
//! cargo run --release --manifest-path benches/Cargo.toml -- all [--out docs]   # everything: tables, CSV, plots
//! cargo run --release --manifest-path benches/Cargo.toml -- drain [--reps N] [--sizes 8,128,...]
//! cargo run --release --manifest-path benches/Cargo.toml -- sweep | stride | tlb | e2e | busy | user | perfbuf | merge
//! cargo run --release --manifest-path benches/Cargo.toml -- instructions | smoke
//! cargo run --release --manifest-path benches/Cargo.toml -- callgrind <impl> <workload> <size> <fill-only|fill-and-drain>
//! ```
//!
//! Needs root (or CAP_BPF + CAP_PERFMON); `instructions` needs valgrind. `stride` needs
//! neither.

mod drain;
mod drainers;
mod e2e;
mod instructions;
mod merge;
mod perfbuf;
mod plot;
mod stride;
mod user;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use drainers::{Impl, Workload};

/// Command-line options shared by the modes.
pub struct Options {
    /// Repetitions per (implementation, size); the median is reported.
    pub reps: usize,
    /// Record sizes for the drain benchmark.
    pub sizes: Vec<usize>,
    /// Where `all` writes the CSV files, the report and the plots (none: print only).
    pub out: Option<PathBuf>,
}

/// The record sizes of the main drain tables.
pub const SIZES: [usize; 8] = [8, 64, 128, 512, 1024, 2048, 2432, 4000];

/// The sweep's sizes: 64 to 320 B in 8-byte steps (where the stride of the records' headers
/// goes from every cache line to every fifth).
pub fn sweep_sizes() -> Vec<usize> {
    (64..=320).step_by(8).collect()
}

/// The sweep measures the zero-copy readers and the copy, not the extra references.
const SWEEP_IMPLS: [Impl; 6] = [
    Impl::Batch,
    Impl::Copy,
    Impl::Libbpf,
    Impl::Aya,
    Impl::Hand,
    Impl::HandPrefetch,
];

fn main() {
    cpus(); // before any thread is pinned
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut options = Options {
        reps: 41,
        sizes: SIZES.to_vec(),
        out: None,
    };
    let mut sizes_given = false;
    let mut i = 0;
    while i < args.len() {
        let value = || args.get(i + 1).cloned().expect("option needs a value");
        match args[i].as_str() {
            "--reps" => options.reps = value().parse().expect("--reps N"),
            "--sizes" => {
                sizes_given = true;
                options.sizes = value()
                    .split(',')
                    .map(|s| s.parse().expect("--sizes 8,64,..."))
                    .collect()
            }
            "--out" => options.out = Some(PathBuf::from(value())),
            _ => {
                i += 1;
                continue;
            }
        }
        args.drain(i..i + 2);
    }
    let mode = args.first().map(String::as_str).unwrap_or("all");
    if !matches!(mode, "callgrind" | "stride" | "plot") && !bpf_ringbuf_testkit::kernel_available()
    {
        eprintln!("these benchmarks need bpf(2): run as root or with CAP_BPF");
        std::process::exit(1);
    }
    match mode {
        "drain" => {
            for run in drain_runs(&options, &Impl::ALL) {
                print!("{}", drain::report(&run));
            }
        }
        "sweep" => {
            if !sizes_given {
                options.sizes = sweep_sizes();
            }
            for run in drain_runs(&options, &SWEEP_IMPLS) {
                print!("{}", drain::report(&run));
            }
        }
        "stride" => {
            if !sizes_given {
                options.sizes = stride::SIZES.to_vec();
            }
            print!("{}", stride::report(&stride::run(&options)));
        }
        "e2e" => print!("{}", e2e::report(&e2e::run(&options), &e2e::busy(&options))),
        "busy" => print!("{}", e2e::report(&[], &e2e::busy(&options))),
        "tlb" => print!("{}", drain::tlb(&options)),
        "user" => print!("{}", user::report(&user::run(&options))),
        "perfbuf" => print!("{}", perfbuf::report(&perfbuf::run(&options))),
        "merge" => print!("{}", merge::report(&merge::run(&options))),
        "instructions" => print!("{}", instructions::report(&instructions::run(&options))),
        "callgrind" => instructions::driver(&args[1..]),
        "smoke" => smoke(),
        "plot" => {
            let dir = options.out.clone().unwrap_or_else(|| PathBuf::from("docs"));
            for (file, log_x) in [
                ("benchmarks-drain.csv", true),
                ("benchmarks-sweep.csv", false),
            ] {
                let csv = std::fs::read_to_string(dir.join(file)).expect("read the CSV");
                write_plots(&dir, &drain::from_csv(&csv), log_x);
            }
        }
        "all" => all(&options),
        other => {
            eprintln!(
                "unknown mode {other}: drain | sweep | stride | tlb | e2e | busy | user | perfbuf | merge | instructions | callgrind | smoke | plot | all"
            );
            std::process::exit(2);
        }
    }
}

/// The drain benchmark over both rings and both workloads.
fn drain_runs(options: &Options, impls: &[Impl]) -> Vec<Vec<drain::SizeResult>> {
    let mut runs = Vec::new();
    for ring in [drain::RING_SIZE, drain::SMALL_RING_SIZE] {
        for workload in Workload::ALL {
            runs.push(drain::run(options, ring, workload, impls));
        }
    }
    runs
}

/// A quick pass through every mode, for CI: proves the benchmarks run and cross-check.
fn smoke() {
    let options = Options {
        // Two, so that the rotation puts another consumer before ours: ours must take over the
        // ring after it (a reader that keeps its own cursor sees `consumer_pos` moved).
        reps: 2,
        sizes: vec![64, 4000],
        out: None,
    };
    for workload in Workload::ALL {
        let run = drain::run(&options, drain::SMALL_RING_SIZE, workload, &Impl::ALL);
        print!("{}", drain::report(&run));
    }
    print!("{}", drain::tlb(&options));
    print!(
        "{}",
        e2e::report(&e2e::run_with(&options, 20_000), &e2e::busy(&options))
    );
    print!("{}", user::report(&user::run(&options)));
    print!("{}", perfbuf::report(&perfbuf::run_with(&options, 20_000)));
    print!(
        "{}",
        stride::report(&stride::run(&Options {
            reps: 1,
            sizes: vec![64, 136],
            out: None,
        }))
    );
    print!("{}", merge::report(&merge::run_with(&options, 20_000)));
}

/// Every benchmark, then the report (and with `--out DIR`, CSV files and the plots there).
fn all(options: &Options) {
    let machine = machine();
    let load_before = load_average();
    let drain = drain_runs(options, &Impl::ALL);
    let sweep_options = Options {
        reps: options.reps.min(15),
        sizes: sweep_sizes(),
        out: None,
    };
    let sweep = drain_runs(&sweep_options, &SWEEP_IMPLS);
    let stride = stride::run(&Options {
        reps: options.reps,
        sizes: stride::SIZES.to_vec(),
        out: None,
    });
    let tlb = drain::tlb(options);
    let e2e_results = e2e::run(options);
    let busy = e2e::busy(options);
    let user = user::run(options);
    let perfbuf = perfbuf::run(options);
    let merge = merge::run(options);
    let instructions = instructions::run(options);
    let load_after = load_average();
    let mut report = String::new();
    writeln!(report, "{machine}").unwrap();
    writeln!(
        report,
        "load average (1, 5, 15 min): {load_before} at the start, {load_after} at the end"
    )
    .unwrap();
    for run in &drain {
        report += &drain::report(run);
    }
    writeln!(
        report,
        "\n# The sweep: 64 to 320 B in 8-byte steps ({} repetitions)",
        sweep_options.reps
    )
    .unwrap();
    for run in &sweep {
        report += &drain::report(run);
    }
    report += &stride::report(&stride);
    report += &tlb;
    report += &e2e::report(&e2e_results, &busy);
    report += &user::report(&user);
    report += &perfbuf::report(&perfbuf);
    report += &merge::report(&merge);
    report += &instructions::report(&instructions);
    print!("{report}");
    if let Some(out) = &options.out {
        std::fs::create_dir_all(out).expect("create output directory");
        let csv = |runs: &[Vec<drain::SizeResult>]| {
            let mut text = drain::CSV_HEADER.to_string();
            for run in runs {
                text += &drain::csv(run);
            }
            text
        };
        std::fs::write(out.join("benchmarks-drain.csv"), csv(&drain)).expect("write csv");
        std::fs::write(out.join("benchmarks-sweep.csv"), csv(&sweep)).expect("write csv");
        std::fs::write(out.join("benchmarks-results.md"), &report).expect("write report");
        write_plots(out, &drain, true);
        write_plots(out, &sweep, false);
        eprintln!(
            "wrote {}/benchmarks-{{drain.csv,sweep.csv,results.md}} and the plots",
            out.display()
        );
    }
}

/// One SVG per ring size and workload: `benchmarks-drain.svg` (16 MiB, first+last byte),
/// `benchmarks-drain-512k.svg`, `benchmarks-drain-read-all.svg`, ... and `benchmarks-sweep*`
/// for the sweep (linear size axis).
fn write_plots(dir: &Path, runs: &[Vec<drain::SizeResult>], log_x: bool) {
    for results in runs {
        let Some(first) = results.first() else {
            continue;
        };
        let mut name = String::from(if log_x {
            "benchmarks-drain"
        } else {
            "benchmarks-sweep"
        });
        if first.ring_size != drain::RING_SIZE {
            write!(name, "-{}k", first.ring_size >> 10).unwrap();
        }
        if first.workload != Workload::Touch {
            write!(name, "-{}", first.workload.key()).unwrap();
        }
        name += ".svg";
        std::fs::write(dir.join(name), plot::svg(results, log_x)).expect("write plot");
    }
}

/// A description of the machine the figures come from.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("machine: {model}, {} CPUs, Linux {}", cpus(), kernel.trim())
}

/// `/proc/loadavg`'s three load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The median of `values` (sorted in place).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// CPUs this process may run on, as counted before the benchmarks pin any thread (the
/// affinity of a pinned thread would say 1).
pub fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(bpf_ringbuf_testkit::online_cpus)
}
