//! Instructions per record, counted by `valgrind --tool=callgrind`: the stable figure on a
//! noisy machine. Each implementation runs twice under callgrind — fill only, and fill then
//! drain, with every consumer built in both — and the difference in total instructions,
//! divided by the records drained, is the cost of reading one record.

use std::fmt::Write as _;
use std::os::fd::AsFd;
use std::process::Command;

use crate::drain::{Fill, RING_SIZE};
use crate::drainers::{Drainers, Impl, Workload};
use crate::Options;

/// Sizes measured under callgrind (a subset of the drain sizes: each run is slow).
pub const SIZES: [usize; 4] = [8, 128, 1024, 4000];

/// `callgrind <impl> <workload> <size> <fill-only|fill-and-drain>`: the process valgrind runs.
pub fn driver(args: &[String]) {
    let [which, workload, size, mode] = args else {
        eprintln!("usage: callgrind <impl> <touch|read-all> <size> <fill-only|fill-and-drain>");
        std::process::exit(2);
    };
    let which = Impl::from_name(which).expect("unknown implementation");
    let workload = Workload::from_key(workload).expect("unknown workload");
    let size: usize = size.parse().expect("size");
    let drain = match mode.as_str() {
        "fill-only" => false,
        "fill-and-drain" => true,
        _ => panic!("mode is fill-only or fill-and-drain"),
    };
    let fill = Fill::new(size, RING_SIZE);
    let mut drainers = Drainers::new(fill.map.as_fd(), RING_SIZE);
    fill.fill();
    let mut aya = drainers.prepare(which);
    if drain {
        let drained = drainers.drain(which, workload, aya.as_mut());
        assert_eq!(drained.records, u64::from(fill.records));
        assert_eq!(drained.checksum, fill.checksum(workload));
    }
    println!("records {}", fill.records);
}

/// Instructions per record for each (workload, size, implementation).
pub struct Counts {
    /// (workload, size, implementation, instructions per record).
    pub rows: Vec<(Workload, usize, Impl, f64)>,
    /// Why there are no rows, if there are none.
    pub skipped: Option<String>,
}

fn total_instructions(
    which: Impl,
    workload: Workload,
    size: usize,
    mode: &str,
) -> Result<(u64, u64), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out_file = std::env::temp_dir().join(format!(
        "bpf-ringbuf-bench-callgrind-{}-{}-{size}-{mode}-{}.out",
        which.name(),
        workload.key(),
        std::process::id()
    ));
    let output = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(&exe)
        .args([
            "callgrind",
            which.name(),
            workload.key(),
            &size.to_string(),
            mode,
        ])
        .output()
        .map_err(|e| format!("valgrind: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "valgrind failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let records = stdout
        .lines()
        .find_map(|l| l.strip_prefix("records "))
        .and_then(|n| n.trim().parse().ok())
        .ok_or("driver printed no record count")?;
    let profile = std::fs::read_to_string(&out_file).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&out_file);
    let total = profile
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .ok_or("no totals in the callgrind output")?;
    Ok((total, records))
}

/// Runs every implementation at each of [`SIZES`] (or `--sizes`, if given and not the
/// default) under callgrind, for both workloads.
pub fn run(options: &Options) -> Counts {
    let sizes: Vec<usize> = if options.sizes == crate::SIZES {
        SIZES.to_vec()
    } else {
        options.sizes.clone()
    };
    let mut rows = Vec::new();
    for workload in Workload::ALL {
        for &size in &sizes {
            for which in Impl::ALL {
                let counted =
                    total_instructions(which, workload, size, "fill-only").and_then(|(fill, _)| {
                        total_instructions(which, workload, size, "fill-and-drain").map(
                            |(both, records)| (both.saturating_sub(fill)) as f64 / records as f64,
                        )
                    });
                match counted {
                    Ok(per_record) => rows.push((workload, size, which, per_record)),
                    Err(why) => {
                        return Counts {
                            rows,
                            skipped: Some(why),
                        }
                    }
                }
            }
            eprintln!("instructions {size} B ({}): done", workload.name());
        }
    }
    Counts {
        rows,
        skipped: None,
    }
}

/// The instructions-per-record tables, one per workload.
pub fn report(counts: &Counts) -> String {
    let mut out = String::new();
    if let Some(why) = &counts.skipped {
        writeln!(out, "\ninstructions per record: skipped: {why}").unwrap();
    }
    for workload in Workload::ALL {
        let mut sizes: Vec<usize> = counts
            .rows
            .iter()
            .filter(|r| r.0 == workload)
            .map(|r| r.1)
            .collect();
        sizes.dedup();
        if sizes.is_empty() {
            continue;
        }
        writeln!(
            out,
            "\n## Instructions per record, {} (callgrind: fill-and-drain minus fill-only, / records)\n",
            workload.name()
        )
        .unwrap();
        write!(out, "| size B |").unwrap();
        for which in Impl::ALL {
            write!(out, " {} |", which.name()).unwrap();
        }
        writeln!(out).unwrap();
        writeln!(out, "|---:|{}", "---:|".repeat(Impl::ALL.len())).unwrap();
        for size in sizes {
            write!(out, "| {size} |").unwrap();
            for which in Impl::ALL {
                match counts
                    .rows
                    .iter()
                    .find(|r| r.0 == workload && r.1 == size && r.2 == which)
                {
                    Some(row) => write!(out, " {:.1} |", row.3).unwrap(),
                    None => write!(out, " - |").unwrap(),
                }
            }
            writeln!(out).unwrap();
        }
    }
    out
}
