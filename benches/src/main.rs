//! Benchmarks of bpf-ringbuf against libbpf and aya, on real kernel rings.
//!
//! ```text
//! cargo run --release --manifest-path benches/Cargo.toml -- all [--out docs]   # everything, docs/benchmarks tables + plot
//! cargo run --release --manifest-path benches/Cargo.toml -- drain [--reps N] [--sizes 8,128,...]
//! cargo run --release --manifest-path benches/Cargo.toml -- tlb | e2e | busy | user | instructions | smoke
//! cargo run --release --manifest-path benches/Cargo.toml -- callgrind <impl> <size> <fill-only|fill-and-drain>
//! ```
//!
//! Needs root (or CAP_BPF + CAP_PERFMON); `instructions` needs valgrind.

mod drain;
mod drainers;
mod e2e;
mod instructions;
mod plot;
mod user;

use std::fmt::Write as _;
use std::path::PathBuf;

/// Command-line options shared by the modes.
pub struct Options {
    /// Repetitions per (implementation, size); the median is reported.
    pub reps: usize,
    /// Record sizes for the drain benchmark.
    pub sizes: Vec<usize>,
    /// Where `all` writes the CSV files, the report and the plot (none: print only).
    pub out: Option<PathBuf>,
}

/// The record sizes the issue asks for.
pub const SIZES: [usize; 8] = [8, 64, 128, 512, 1024, 2048, 2432, 4000];

fn main() {
    cpus(); // before any thread is pinned
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut options = Options {
        reps: 41,
        sizes: SIZES.to_vec(),
        out: None,
    };
    let mut i = 0;
    while i < args.len() {
        let value = || args.get(i + 1).cloned().expect("option needs a value");
        match args[i].as_str() {
            "--reps" => options.reps = value().parse().expect("--reps N"),
            "--sizes" => {
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
    if mode != "callgrind" && !bpf_ringbuf_testkit::kernel_available() {
        eprintln!("these benchmarks need bpf(2): run as root or with CAP_BPF");
        std::process::exit(1);
    }
    match mode {
        "drain" => {
            let results = drain::run(&options, drain::RING_SIZE);
            print!("{}", drain::report(&results));
            let results = drain::run(&options, drain::SMALL_RING_SIZE);
            print!("{}", drain::report(&results));
        }
        "e2e" => print!("{}", e2e::report(&e2e::run(&options), &e2e::busy(&options))),
        "busy" => print!("{}", e2e::report(&[], &e2e::busy(&options))),
        "tlb" => print!("{}", drain::tlb(&options)),
        "user" => print!("{}", user::report(&user::run(&options))),
        "instructions" => print!("{}", instructions::report(&instructions::run(&options))),
        "callgrind" => instructions::driver(&args[1..]),
        "smoke" => smoke(),
        "plot" => {
            let dir = options.out.clone().unwrap_or_else(|| PathBuf::from("docs"));
            let csv = std::fs::read_to_string(dir.join("benchmarks-drain.csv"))
                .expect("read benchmarks-drain.csv");
            write_plots(&dir, &drain::from_csv(&csv));
        }
        "all" => all(&options),
        other => {
            eprintln!(
                "unknown mode {other}: drain | tlb | e2e | busy | user | instructions | callgrind | smoke | plot | all"
            );
            std::process::exit(2);
        }
    }
}

/// A quick pass through every mode, for CI: proves the benchmarks run and cross-check.
fn smoke() {
    let options = Options {
        reps: 1,
        sizes: vec![64, 4000],
        out: None,
    };
    print!("{}", drain::report(&drain::run(&options, drain::RING_SIZE)));
    print!(
        "{}",
        e2e::report(&e2e::run_with(&options, 1, 20_000), &e2e::busy(&options))
    );
    print!("{}", user::report(&user::run(&options)));
}

/// Every benchmark, then the report (and with `--out DIR`, CSV files and the plot there).
fn all(options: &Options) {
    let machine = machine();
    let drain = drain::run(options, drain::RING_SIZE);
    let small = drain::run(options, drain::SMALL_RING_SIZE);
    let tlb = drain::tlb(options);
    let e2e_results = e2e::run(options);
    let busy = e2e::busy(options);
    let user = user::run(options);
    let instructions = instructions::run(options);
    let mut report = String::new();
    writeln!(report, "{machine}").unwrap();
    report += &drain::report(&drain);
    report += &drain::report(&small);
    report += &tlb;
    report += &e2e::report(&e2e_results, &busy);
    report += &user::report(&user);
    report += &instructions::report(&instructions);
    print!("{report}");
    if let Some(out) = &options.out {
        std::fs::create_dir_all(out).expect("create output directory");
        let csv = drain::csv(&drain) + drain::csv(&small).split_once('\n').unwrap().1;
        std::fs::write(out.join("benchmarks-drain.csv"), csv).expect("write csv");
        std::fs::write(out.join("benchmarks-results.md"), &report).expect("write report");
        write_plots(out, &[drain, small]);
        eprintln!(
            "wrote {}/benchmarks-{{drain.csv,results.md,drain.svg,drain-512k.svg}}",
            out.display()
        );
    }
}

/// One SVG per ring size: `benchmarks-drain.svg` (16 MiB), `benchmarks-drain-512k.svg`.
fn write_plots(dir: &std::path::Path, rings: &[Vec<drain::SizeResult>]) {
    for results in rings {
        let Some(first) = results.first() else {
            continue;
        };
        let name = if first.ring_size == drain::RING_SIZE {
            "benchmarks-drain.svg".to_string()
        } else {
            format!("benchmarks-drain-{}k.svg", first.ring_size >> 10)
        };
        std::fs::write(dir.join(name), plot::svg(results)).expect("write plot");
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

/// The median of `values` (sorted in place).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
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
