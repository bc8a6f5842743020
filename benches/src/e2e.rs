//! End to end: a kernel producer on the other CPU, an epoll-driven consumer on this one; and
//! a BUSY head record held ~50 ms, counting how often each consumer's epoll wait returns.

use std::fmt::Write as _;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bpf_ringbuf::RingBuf;
use bpf_ringbuf_sys::rustix::time::{clock_gettime, ClockId};
use bpf_ringbuf_testkit::insn::{self, helper, AluOp, MemSize, Program, R1, R10, R2, R3, R4};
use bpf_ringbuf_testkit::{self as kit, Commit};
use bpf_ringbuf_testkit::{prog_load, prog_test_run, ProgLoad, ProgType, TestRun};

use crate::drainers::{drain_batch, LibbpfRing, Touch};
use crate::{median, Options};

const RING_SIZE: usize = 1 << 24;
/// Record sizes of the streams.
pub const RECORD_LENS: [u32; 2] = [64, 1024];
/// Epoll timeout of both consumers; a wait that lasts this long returned without an event.
const TIMEOUT: Duration = Duration::from_millis(20);

/// The end-to-end consumers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumer {
    /// `RingBuf::wait` (edge-triggered epoll + check before sleeping) and a zero-copy batch.
    Ours,
    /// libbpf `ring_buffer__poll` (level-triggered epoll + `ring_buffer__consume`).
    Libbpf,
}

impl Consumer {
    fn name(self) -> &'static str {
        match self {
            Consumer::Ours => "ours (wait + batch)",
            Consumer::Libbpf => "libbpf ring_buffer__poll",
        }
    }
}

/// One end-to-end run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stream {
    /// Payload bytes per record.
    pub len: u32,
    /// Records consumed (all that were produced: checked).
    pub records: u64,
    /// Reservations that failed because the ring was full.
    pub drops: u64,
    /// Records read after the first read.
    pub timed_records: u64,
    /// Wall time from the end of the first read to the end of the last.
    pub seconds: f64,
    /// CPU time of the consumer thread.
    pub cpu_seconds: f64,
    /// `epoll_wait` calls.
    pub waits: u64,
    /// `epoll_wait` returns with an event.
    pub wakeups: u64,
}

fn thread_cpu_seconds() -> f64 {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Medians of `reps` alternating runs of each consumer, 2M records of each of
/// [`RECORD_LENS`].
///
/// One test run produces the whole stream: every `BPF_PROG_TEST_RUN` of an XDP program
/// attaches and detaches it from the XDP dispatcher, which waits for an RCU grace period
/// (~20 ms here), so a stream of short runs would be mostly gaps.
pub fn run(options: &Options) -> Vec<(Consumer, Vec<Stream>)> {
    run_with(options, 2_000_000)
}

/// As [`run`], with `repeat` records per stream.
pub fn run_with(options: &Options, repeat: u32) -> Vec<(Consumer, Vec<Stream>)> {
    let mut results = Vec::new();
    for len in RECORD_LENS {
        let mut pair = [(Consumer::Ours, Vec::new()), (Consumer::Libbpf, Vec::new())];
        for rep in 0..options.reps.max(1) {
            for k in 0..2 {
                let index = (k + rep) % 2;
                let stream = stream(pair[index].0, repeat, len);
                pair[index].1.push(stream);
            }
        }
        results.extend(pair);
    }
    eprintln!("end to end: done");
    results
}

fn stream(consumer: Consumer, repeat: u32, len: u32) -> Stream {
    let map = kit::ringbuf_map(RING_SIZE);
    let sequence = kit::percpu_counter_map();
    let drops = kit::percpu_counter_map();
    let producer = kit::stamped(
        map.as_fd(),
        sequence.as_fd(),
        drops.as_fd(),
        len,
        Commit::Submit,
        0,
    );
    let cpus = crate::cpus();
    if cpus > 1 {
        kit::pin_to_cpu(0);
    }
    let mut ours = RingBuf::new(&map).expect("open RingBuf");
    let mut libbpf = LibbpfRing::new::<Touch>(map.as_fd());
    let done = Arc::new(AtomicBool::new(false));
    let producer_done = done.clone();
    let producer_thread = std::thread::spawn(move || {
        if cpus > 1 {
            kit::pin_to_cpu(1);
        }
        producer.run(repeat);
        producer_done.store(true, Ordering::Release);
    });
    let mut result = Stream {
        len,
        ..Stream::default()
    };
    let cpu_start = thread_cpu_seconds();
    // The rate counts the records read after the first read, over the time from the end of
    // the first read to the end of the last: that leaves out the producer's start-up and the
    // final timeout.
    let (mut first, mut last, mut first_records) = (None, Instant::now(), 0);
    loop {
        let finished = done.load(Ordering::Acquire);
        let read = match consumer {
            Consumer::Ours => {
                ours.wait(Some(TIMEOUT)).expect("wait");
                drain_batch::<Touch>(&mut ours)
                    .expect("ring is not corrupt")
                    .records
            }
            Consumer::Libbpf => {
                let before = Instant::now();
                let read = libbpf.poll(TIMEOUT.as_millis() as i32).records;
                result.waits += 1;
                if before.elapsed() < TIMEOUT {
                    result.wakeups += 1;
                }
                read
            }
        };
        result.records += read;
        if read > 0 {
            last = Instant::now();
            if first.is_none() {
                first = Some(last);
                first_records = read;
            }
        }
        if finished && read == 0 {
            break;
        }
    }
    result.seconds = first.map_or(0.0, |first| (last - first).as_secs_f64());
    result.timed_records = result.records - first_records;
    result.cpu_seconds = thread_cpu_seconds() - cpu_start;
    producer_thread.join().expect("producer thread");
    if consumer == Consumer::Ours {
        let stats = ours.wait_stats();
        result.waits = stats.sleeps;
        result.wakeups = stats.wakeups;
    }
    let produced: u64 = kit::percpu_counters(sequence.as_fd()).iter().sum();
    result.drops = kit::percpu_counters(drops.as_fd()).iter().sum();
    assert_eq!(result.records, produced, "{} lost records", consumer.name());
    result
}

/// The BUSY-head scenario's outcome for one consumer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Busy {
    /// How long the reservation was held (kernel-measured run time of the holder).
    pub held_ms: f64,
    /// `epoll_wait` returns with an event until both records were read.
    pub wakeups: u64,
    /// `epoll_wait` calls until both records were read.
    pub waits: u64,
}

/// A reservation held ~50 ms at the head of the ring, and a record committed behind it with
/// `BPF_RB_FORCE_WAKEUP` (so the consumer is woken while the head is BUSY). Counts epoll
/// returns until both records are read, for each consumer.
pub fn busy(options: &Options) -> Vec<(Consumer, Vec<Busy>)> {
    let loops = calibrate_hold(Duration::from_millis(50));
    let mut results = vec![(Consumer::Ours, Vec::new()), (Consumer::Libbpf, Vec::new())];
    for rep in 0..options.reps.clamp(1, 5) {
        for k in 0..2 {
            let index = (k + rep) % 2;
            let outcome = busy_once(results[index].0, loops);
            results[index].1.push(outcome);
        }
    }
    eprintln!("busy head: done");
    results
}

/// A tc program that outputs one 8-byte record with `BPF_RB_FORCE_WAKEUP`.
///
/// Not XDP: an XDP test run attaches the program to the XDP dispatcher, which waits for an
/// RCU grace period, and the holder's long test run is one RCU read-side section, so an XDP
/// waker would only run after the held record is committed.
fn skb_forced_output(ring: BorrowedFd<'_>) -> OwnedFd {
    let mut program = Program::new();
    program
        .push(insn::st_mem(MemSize::DW, R10, -8, 0x77))
        .extend(insn::ld_map_fd(R1, ring))
        .push(insn::mov64_reg(R2, R10))
        .push(insn::alu64_imm(AluOp::ADD, R2, -8))
        .push(insn::mov64_imm(R3, 8))
        .push(insn::mov64_imm(R4, kit::FORCE_WAKEUP as i32))
        .push(insn::call_helper(helper::RINGBUF_OUTPUT))
        .push(insn::exit());
    let insns = program.build().expect("assemble waker");
    prog_load(&ProgLoad::new(ProgType::SCHED_CLS, &insns, c"GPL")).expect("load waker")
}

/// `bpf_loop` iterations that hold a reservation for about `hold`.
fn calibrate_hold(hold: Duration) -> u32 {
    let map = kit::ringbuf_map(1 << 16);
    let probe_loops = 1 << 20;
    let holder = kit::busy_holder(map.as_fd(), probe_loops, 1);
    let ns = holder.run(1).duration_ns.max(1);
    let loops = u64::from(probe_loops) * hold.as_nanos() as u64 / u64::from(ns);
    loops.clamp(1, 1 << 23) as u32
}

fn busy_once(consumer: Consumer, loops: u32) -> Busy {
    let map = kit::ringbuf_map(1 << 16);
    let holder = kit::busy_holder(map.as_fd(), loops, 0xb05e);
    let waker = skb_forced_output(map.as_fd());
    let cpus = crate::cpus();
    if cpus > 1 {
        kit::pin_to_cpu(0);
    }
    let mut ours = RingBuf::new(&map).expect("open RingBuf");
    let mut libbpf = LibbpfRing::new::<Touch>(map.as_fd());
    let holder_thread = std::thread::spawn(move || {
        if cpus > 1 {
            kit::pin_to_cpu(1);
        }
        std::thread::sleep(Duration::from_millis(10));
        holder.run(1).duration_ns
    });
    // Watches the positions through read-only mappings of its own (one RingBuf reader per map).
    let watcher = kit::PositionWatch::new(map.as_fd());
    let waker_thread = std::thread::spawn(move || {
        // Once the reservation is made (producer_pos moved), commit a record behind it with
        // a forced wakeup.
        let deadline = Instant::now() + Duration::from_secs(5);
        let available = || watcher.producer_pos().wrapping_sub(watcher.consumer_pos());
        while available() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_millis(5));
        prog_test_run(
            waker.as_fd(),
            &TestRun {
                data_in: &[0; 64],
                repeat: 1,
                ..TestRun::default()
            },
        )
        .expect("run the waker");
    });
    let mut result = Busy::default();
    let mut records = 0;
    let stats_before = ours.wait_stats();
    let deadline = Instant::now() + Duration::from_secs(10);
    while records < 2 {
        assert!(
            Instant::now() < deadline,
            "{}: the BUSY-head scenario's records did not arrive",
            consumer.name()
        );
        match consumer {
            Consumer::Ours => {
                ours.wait(Some(Duration::from_secs(1))).expect("wait");
                records += drain_batch::<Touch>(&mut ours)
                    .expect("ring is not corrupt")
                    .records;
            }
            Consumer::Libbpf => {
                let before = Instant::now();
                records += libbpf.poll(1000).records;
                result.waits += 1;
                if before.elapsed() < Duration::from_secs(1) {
                    result.wakeups += 1;
                }
            }
        }
    }
    if consumer == Consumer::Ours {
        let stats = ours.wait_stats();
        result.waits = stats.sleeps - stats_before.sleeps;
        result.wakeups = stats.wakeups - stats_before.wakeups;
    }
    result.held_ms = f64::from(holder_thread.join().expect("holder")) / 1e6;
    waker_thread.join().expect("waker");
    result
}

/// The end-to-end and BUSY-head tables.
pub fn report(streams: &[(Consumer, Vec<Stream>)], busy: &[(Consumer, Vec<Busy>)]) -> String {
    let mut out = String::new();
    if !streams.is_empty() {
        writeln!(
            out,
            "\n## End to end: kernel producer on CPU 1, consumer on CPU 0 (median)\n"
        )
        .unwrap();
        writeln!(
            out,
            "| record B | consumer | records/run | M events/s | consumer CPU ns/event | CPU / libbpf's | epoll returns/event | epoll_wait calls/event | drops/run |"
        )
        .unwrap();
        writeln!(out, "|---:|---|---:|---:|---:|---:|---:|---:|---:|").unwrap();
        let cpu = |runs: &[Stream]| {
            median(
                &mut runs
                    .iter()
                    .map(|s| s.cpu_seconds * 1e9 / s.records as f64)
                    .collect::<Vec<_>>(),
            )
        };
        for (consumer, runs) in streams {
            let m =
                |f: &dyn Fn(&Stream) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
            let len = runs.first().map_or(0, |s| s.len);
            let libbpf = streams
                .iter()
                .find(|(c, r)| *c == Consumer::Libbpf && r.first().map(|s| s.len) == Some(len))
                .map_or(f64::NAN, |(_, r)| cpu(r));
            writeln!(
                out,
                "| {len} | {} | {:.0} | {:.2} | {:.1} | {:.2} | {:.5} | {:.5} | {:.0} |",
                consumer.name(),
                m(&|s| s.records as f64),
                m(&|s| s.timed_records as f64 / s.seconds / 1e6),
                m(&|s| s.cpu_seconds * 1e9 / s.records as f64),
                cpu(runs) / libbpf,
                m(&|s| s.wakeups as f64 / s.records as f64),
                m(&|s| s.waits as f64 / s.records as f64),
                m(&|s| s.drops as f64),
            )
            .unwrap();
        }
    }
    if !busy.is_empty() {
        writeln!(
            out,
            "\n## BUSY head: a reservation held ~50 ms, a FORCE_WAKEUP record behind it (median)\n"
        )
        .unwrap();
        writeln!(
            out,
            "| consumer | held ms | epoll returns until both records were read | epoll_wait calls |"
        )
        .unwrap();
        writeln!(out, "|---|---:|---:|---:|").unwrap();
        for (consumer, runs) in busy {
            let m = |f: &dyn Fn(&Busy) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
            writeln!(
                out,
                "| {} | {:.1} | {:.0} | {:.0} |",
                consumer.name(),
                m(&|b| b.held_ms),
                m(&|b| b.wakeups as f64),
                m(&|b| b.waits as f64),
            )
            .unwrap();
        }
    }
    out
}
