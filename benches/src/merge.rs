//! Per-CPU rings in one order: the merged reader against one shared ring and against per-CPU
//! rings read unmerged (the `Poller`), with a kernel producer on every CPU stamping
//! `bpf_ktime_get_ns()` before it reserves.
//!
//! Each CPU runs the kit's `ktime_stamped` program in long `BPF_PROG_TEST_RUN`s (a run per
//! chunk: every XDP test run waits for an RCU grace period when it starts). The consumer
//! thread is not pinned: on a two-CPU machine it competes with both producers, as a real
//! consumer of per-CPU rings does. Reported per reader: events/s (from its first read to its
//! last), the consumer thread's CPU time per event, how many events came out of stamp order
//! (an event with a stamp below one delivered before it), and drops (failed reservations:
//! the ring was full).

use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bpf_ringbuf::merge::u64_key_at;
use bpf_ringbuf::{MergedReader, PollOutcome, Poller, RingBuf};
use bpf_ringbuf_sys::rustix::time::{clock_gettime, ClockId};
use bpf_ringbuf_testkit as kit;

use crate::{median, Options};

/// Data area of each per-CPU ring; the shared ring gets this times the CPU count.
const PER_CPU_RING: usize = 1 << 23;
/// Events per CPU per run.
const PER_CPU_EVENTS: u32 = 1_000_000;
/// Test runs per CPU per run (each starts with an RCU grace period).
const CHUNKS: u32 = 4;
/// The merged reader's lateness.
const LATENESS: Duration = Duration::from_millis(1);
/// Longest sleep of every reader while the producers run.
const TIMEOUT: Duration = Duration::from_millis(20);
/// Records per poll for the `Poller` and the merged reader.
const BUDGET: usize = 1024;

/// How the events are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    /// One RINGBUF shared by every CPU, `RingBuf::wait` + a zero-copy batch.
    Shared,
    /// One RINGBUF per CPU, read by a `Poller` (budget 1024): no global order.
    Unmerged,
    /// One RINGBUF per CPU, read by a `MergedReader` (lateness 1 ms, budget 1024).
    Merged,
}

impl Reader {
    const ALL: [Reader; 3] = [Reader::Merged, Reader::Shared, Reader::Unmerged];

    fn name(self) -> &'static str {
        match self {
            Reader::Shared => "one shared ring (RingBuf)",
            Reader::Unmerged => "per-CPU rings, unmerged (Poller)",
            Reader::Merged => "per-CPU rings, merged (MergedReader)",
        }
    }
}

/// One run of one reader.
#[derive(Clone, Copy, Debug, Default)]
pub struct Run {
    /// Events read (all that were produced: checked).
    pub events: u64,
    /// Failed reservations.
    pub drops: u64,
    /// Wall time from the end of the first read to the end of the last.
    pub seconds: f64,
    /// Events read after the first read (the rate's numerator).
    pub timed_events: u64,
    /// CPU time of the consumer thread.
    pub cpu_seconds: f64,
    /// Events delivered with a stamp below one delivered before.
    pub out_of_order: u64,
    /// Kernel wakeups the reader's epoll wait returned with (one per ring signal).
    pub wakeups: u64,
}

fn thread_cpu_seconds() -> f64 {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// A ring map with its program and counters.
struct Ring {
    map: OwnedFd,
    producer: kit::Producer,
    sequence: OwnedFd,
    drops: OwnedFd,
}

fn ring(size: usize) -> Ring {
    let map = kit::ringbuf_map(size);
    let sequence = kit::percpu_counter_map();
    let drops = kit::percpu_counter_map();
    let producer = kit::ktime_stamped(map.as_fd(), sequence.as_fd(), drops.as_fd(), 0, 0, false);
    Ring {
        map,
        producer,
        sequence,
        drops,
    }
}

/// Counts what a reader delivers: events, per-CPU sequence gaps, stamp inversions.
struct Tally {
    events: u64,
    largest_stamp: u64,
    out_of_order: u64,
    next_sequence: Vec<u64>,
}

impl Tally {
    fn new(cpus: usize) -> Self {
        Self {
            events: 0,
            largest_stamp: 0,
            out_of_order: 0,
            next_sequence: vec![1; cpus],
        }
    }

    #[inline]
    fn record(&mut self, record: &[u8]) {
        let (stamp, cpu, sequence) = kit::ktime_stamp(record);
        let next = &mut self.next_sequence[cpu as usize];
        assert_eq!(sequence, *next, "CPU {cpu}: an event lost or repeated");
        *next += 1;
        if stamp < self.largest_stamp {
            self.out_of_order += 1;
        } else {
            self.largest_stamp = stamp;
        }
        self.events += 1;
    }
}

/// Medians over `reps` runs of each reader, interleaved.
pub fn run(options: &Options) -> Vec<(Reader, Vec<Run>)> {
    run_with(options, PER_CPU_EVENTS)
}

/// As [`run`], with `per_cpu` events per CPU per run.
pub fn run_with(options: &Options, per_cpu: u32) -> Vec<(Reader, Vec<Run>)> {
    let mut results: Vec<(Reader, Vec<Run>)> = Reader::ALL
        .iter()
        .map(|&reader| (reader, Vec::new()))
        .collect();
    for rep in 0..options.reps.max(1) {
        for k in 0..results.len() {
            let index = (k + rep) % results.len();
            let run = run_once(results[index].0, per_cpu);
            results[index].1.push(run);
        }
    }
    eprintln!("merge: done");
    results
}

fn run_once(reader: Reader, per_cpu: u32) -> Run {
    let cpus = crate::cpus();
    let rings: Vec<Ring> = match reader {
        Reader::Shared => vec![ring(PER_CPU_RING * cpus)],
        Reader::Unmerged | Reader::Merged => (0..cpus).map(|_| ring(PER_CPU_RING)).collect(),
    };
    let readers = || {
        rings
            .iter()
            .map(|ring| RingBuf::new(&ring.map).expect("open RingBuf"))
    };
    let mut shared = (reader == Reader::Shared).then(|| readers().next().unwrap());
    let mut poller = (reader == Reader::Unmerged).then(|| {
        let mut poller = Poller::new().expect("poller");
        poller.set_budget(BUDGET);
        for ring in readers() {
            poller.add_ring(ring).expect("add ring");
        }
        poller
    });
    let mut merged = (reader == Reader::Merged).then(|| {
        let mut merged =
            MergedReader::new(readers(), u64_key_at(0), LATENESS).expect("merged reader");
        merged.set_budget(BUDGET);
        merged
    });

    let remaining = Arc::new(std::sync::atomic::AtomicUsize::new(cpus));
    let done = Arc::new(AtomicBool::new(false));
    let rings = Arc::new(rings);
    let threads: Vec<_> = (0..cpus)
        .map(|cpu| {
            let rings = rings.clone();
            let remaining = remaining.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                kit::pin_to_cpu(cpu);
                let producer = &rings[cpu.min(rings.len() - 1)].producer;
                for _ in 0..CHUNKS {
                    producer.run(per_cpu / CHUNKS);
                }
                if remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    done.store(true, Ordering::Release);
                }
            })
        })
        .collect();

    let mut tally = Tally::new(cpus);
    let mut result = Run::default();
    let cpu_start = thread_cpu_seconds();
    let (mut first, mut last, mut first_events) = (None, Instant::now(), 0);
    let mut produced = None;
    loop {
        let before = tally.events;
        if let Some(ring) = &mut shared {
            ring.wait(Some(TIMEOUT)).expect("wait");
            let batch = ring.batch();
            for record in &batch {
                tally.record(record.expect("ring is not corrupt"));
            }
        } else if let Some(poller) = &mut poller {
            poller
                .poll(Some(TIMEOUT), |_, record| {
                    tally.record(record);
                    ControlFlow::Continue(())
                })
                .expect("poll");
        } else if let Some(merged) = &mut merged {
            let outcome = merged
                .poll(Some(TIMEOUT), |record| {
                    tally.record(record.data);
                    ControlFlow::Continue(())
                })
                .expect("poll");
            if outcome == PollOutcome::TimedOut && produced.is_some() {
                // The producers are done: what is held back for a quiet ring is all there
                // is (the lateness would release it anyway).
                let drain = merged.drain();
                for record in &drain {
                    tally.record(record.expect("ring is not corrupt").data);
                }
            }
        }
        let read = tally.events - before;
        if read > 0 {
            last = Instant::now();
            if first.is_none() {
                first = Some(last);
                first_events = read;
            }
        }
        if produced.is_none() && done.load(Ordering::Acquire) {
            produced = Some(
                rings
                    .iter()
                    .map(|ring| {
                        kit::percpu_counters(ring.sequence.as_fd())
                            .iter()
                            .sum::<u64>()
                    })
                    .sum::<u64>(),
            );
        }
        if produced == Some(tally.events) {
            break;
        }
    }
    result.cpu_seconds = thread_cpu_seconds() - cpu_start;
    for thread in threads {
        thread.join().expect("producer thread");
    }
    result.events = tally.events;
    result.timed_events = tally.events - first_events;
    result.seconds = first.map_or(0.0, |first| (last - first).as_secs_f64());
    result.out_of_order = tally.out_of_order;
    result.wakeups = if let Some(ring) = &shared {
        ring.wait_stats().wakeups
    } else if let Some(poller) = &poller {
        poller.wait_stats().wakeups
    } else {
        merged
            .as_ref()
            .map_or(0, |merged| merged.wait_stats().wakeups)
    };
    result.drops = rings
        .iter()
        .map(|ring| kit::percpu_counters(ring.drops.as_fd()).iter().sum::<u64>())
        .sum();
    if let Some(merged) = &merged {
        assert_eq!(
            merged.merge_stats().out_of_order,
            tally.out_of_order,
            "the merged reader's own count"
        );
    }
    result
}

/// The table for docs/benchmarks.md.
pub fn report(results: &[(Reader, Vec<Run>)]) -> String {
    let mut out = String::new();
    writeln!(
        out,
        "\n## Per-CPU rings in one order: a producer on each of {} CPUs stamping bpf_ktime_get_ns(), 24 B events (median)\n",
        crate::cpus()
    )
    .unwrap();
    writeln!(
        out,
        "| reader | events/run | M events/s | consumer CPU ns/event | out of order/run | wakeups/1k events | drops/run |"
    )
    .unwrap();
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|").unwrap();
    for (reader, runs) in results {
        let m = |f: &dyn Fn(&Run) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
        writeln!(
            out,
            "| {} | {:.0} | {:.2} | {:.1} | {:.0} | {:.2} | {:.0} |",
            reader.name(),
            m(&|r| r.events as f64),
            m(&|r| r.timed_events as f64 / r.seconds.max(1e-9) / 1e6),
            m(&|r| r.cpu_seconds * 1e9 / r.events.max(1) as f64),
            m(&|r| r.out_of_order as f64),
            m(&|r| r.wakeups as f64 * 1e3 / r.events.max(1) as f64),
            m(&|r| r.drops as f64),
        )
        .unwrap();
    }
    out
}
