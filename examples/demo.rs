//! The main job: real kernel events read through the crate, then what the reader costs.
//!
//! 1. **Every `exec` on this machine, live.** A BPF program on the `sched_process_exec`
//!    tracepoint writes one 32-byte record per exec (pid, command name) into a RINGBUF map;
//!    the demo reads the records in place as a `#[repr(C)]` struct (zero-copy, through
//!    bytemuck). It runs `true` itself a known number of times and checks that every one of
//!    those execs arrived, with its pid and name. The program is assembled by the crate's test
//!    kit (no clang) and attached as a raw tracepoint.
//! 2. **Throughput**, with a synthetic producer (`BPF_PROG_TEST_RUN` running a program in a
//!    loop on the other CPU), and what bounds it.
//! 3. **Zero-copy against copying**, on a workload that reads every byte of every record.
//!
//! Run: `cargo run --release --example demo` (root, or `CAP_BPF` + `CAP_PERFMON`).

use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bpf_ringbuf::RingBuf;
use bpf_ringbuf_testkit::exec::{self, ExecTracer};
use bpf_ringbuf_testkit::{self as kit, Commit};
use bytemuck::{Pod, Zeroable};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// One exec, as the tracepoint program writes it (`u32 pid; u32 tid; u64 ktime_ns;
/// char comm[16];`). Payloads in the ring are 8-byte aligned, so it can be read in place.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ExecEvent {
    pid: u32,
    tid: u32,
    ktime_ns: u64,
    comm: [u8; 16],
}

// The layout the program writes (tests/kit/src/exec.rs).
const _: () = {
    assert!(core::mem::size_of::<ExecEvent>() == exec::EXEC_EVENT_LEN);
    assert!(core::mem::offset_of!(ExecEvent, pid) == exec::EXEC_EVENT_PID);
    assert!(core::mem::offset_of!(ExecEvent, tid) == exec::EXEC_EVENT_TID);
    assert!(core::mem::offset_of!(ExecEvent, ktime_ns) == exec::EXEC_EVENT_KTIME);
    assert!(core::mem::offset_of!(ExecEvent, comm) == exec::EXEC_EVENT_COMM);
};

impl ExecEvent {
    fn command(&self) -> String {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.comm[..end]).into_owned()
    }
}

/// How many times the demo runs `true` itself.
const OUR_EXECS: usize = 20;
/// Rows of the exec table.
const SHOWN: usize = 8;

fn main() -> Result<()> {
    if !kit::kernel_available() {
        return Err(
            "the demo needs bpf(2): run it as root (or with CAP_BPF and CAP_PERFMON)".into(),
        );
    }
    println!("bpf-ringbuf demo on Linux {}", kit::kernel_release());
    execs()?;
    throughput()?;
    zero_copy_vs_copy()?;
    Ok(())
}

fn execs() -> Result<()> {
    let map = kit::ringbuf_map(1 << 20);
    let drops = kit::percpu_counter_map();
    let tracer = ExecTracer::attach(map.as_fd(), drops.as_fd())?;
    let mut ring = RingBuf::new(&map)?;
    println!(
        "\n1. Every exec on this machine, live: a BPF program on the sched_process_exec \
         tracepoint\n   writes each one into a {} KiB ring buffer; this process reads them \
         in place.\n",
        ring.size() / 1024
    );

    // Our own execs, from another thread, a little apart so that the machine's own show up
    // between them. Each record is committed inside the exec, before `wait` returns.
    let mut runner = Some(std::thread::spawn(|| -> std::io::Result<Vec<u32>> {
        let mut pids = Vec::with_capacity(OUR_EXECS);
        for _ in 0..OUR_EXECS {
            let mut child = Command::new("true").spawn()?;
            pids.push(child.id());
            child.wait()?;
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(pids)
    }));

    let mut events: Vec<ExecEvent> = Vec::new();
    let mut ours: Option<Vec<u32>> = None;
    let mut deadline = Instant::now() + Duration::from_secs(30);
    loop {
        ring.wait(Some(Duration::from_millis(50)))?;
        for record in &ring.batch() {
            let record: &[u8] = record?;
            // The typed-record idiom: checks the length and the alignment, never copies.
            let event: &ExecEvent = bytemuck::try_from_bytes(record)?;
            events.push(*event);
        }
        if let Some(finished) = runner.take_if(|runner| runner.is_finished()) {
            ours = Some(finished.join().expect("exec thread")?);
            // Everything they exec'd is committed; allow for a record of another process
            // still BUSY in front of ours.
            deadline = Instant::now() + Duration::from_secs(2);
        }
        if let Some(pids) = &ours {
            let all_in = pids.iter().all(|pid| events.iter().any(|e| e.pid == *pid));
            if all_in || Instant::now() > deadline {
                break;
            }
        } else if Instant::now() > deadline {
            return Err("the exec thread did not finish in 30 s".into());
        }
    }
    drop(tracer);
    let ours = ours.unwrap_or_default();

    println!("   {:>8}  command", "pid");
    for event in events.iter().take(SHOWN) {
        let mark = if ours.contains(&event.pid) {
            "started by this demo"
        } else {
            ""
        };
        println!("   {:>8}  {:<16}  {mark}", event.pid, event.command());
    }
    if events.len() > SHOWN {
        println!("   ... and {} more", events.len() - SHOWN);
    }

    let missing: Vec<u32> = ours
        .iter()
        .copied()
        .filter(|pid| !events.iter().any(|e| e.pid == *pid))
        .collect();
    let misnamed = events
        .iter()
        .filter(|e| ours.contains(&e.pid) && e.command() != "true")
        .count();
    let others = events.iter().filter(|e| !ours.contains(&e.pid)).count();
    let dropped: u64 = kit::percpu_counters(drops.as_fd()).iter().sum();
    if !missing.is_empty() || misnamed != 0 {
        return Err(format!(
            "of the {} execs of `true` this demo ran, {} never arrived (pids {missing:?}) \
             and {misnamed} arrived with another name",
            ours.len(),
            missing.len()
        )
        .into());
    }
    println!(
        "\n   This demo ran `true` {} times: all {} execs arrived, each with its pid and the \
         name \"true\".\n   Other execs on the machine meanwhile: {others}. Events lost to a \
         full ring: {dropped}.",
        ours.len(),
        ours.len()
    );
    Ok(())
}

/// 64-byte records streamed from a program that `BPF_PROG_TEST_RUN` runs in a loop.
const RECORD_LEN: u32 = 64;
const RUNS: u32 = 100;
const REPEAT: u32 = 20_000;

fn throughput() -> Result<()> {
    println!(
        "\n2. Throughput: {}-byte records from a synthetic kernel producer (BPF_PROG_TEST_RUN \
         running\n   a program in a loop{}), every record checked: sequence and payload.\n",
        RECORD_LEN,
        if kit::online_cpus() > 1 {
            " on CPU 1; the reader on CPU 0"
        } else {
            "; one CPU: producer and reader take turns"
        }
    );
    let stream = stream()?;
    let drained = reader_alone()?;
    let streamed = stream.records as f64 / stream.elapsed.as_secs_f64();
    let busy = stream.reader_cpu.as_secs_f64() / stream.elapsed.as_secs_f64();
    println!(
        "   streamed:   {:.2} M records/s ({:.1} M records)",
        streamed / 1e6,
        stream.records as f64 / 1e6
    );
    println!(
        "   the reader: busy {:.0}% of that time ({:.0} ns of CPU per record, {} wakeups), \
         asleep the rest",
        100.0 * busy,
        stream.reader_cpu.as_nanos() as f64 / stream.records as f64,
        stream.wakeups
    );
    println!(
        "   the reader alone, draining a ring the kernel filled: {:.0} M records/s \
         (zero-copy batch, headers only)",
        drained / 1e6
    );
    println!(
        "   So the stream runs at the producer's pace, not the reader's: the reader sleeps \
         {:.0}% of the time\n   and alone drains {:.0}x faster.",
        100.0 * (1.0 - busy),
        drained / streamed
    );
    Ok(())
}

struct Streamed {
    records: u64,
    elapsed: Duration,
    /// CPU time of the reading thread while it streamed.
    reader_cpu: Duration,
    wakeups: u64,
}

/// Streams `RUNS * REPEAT` records from a producer thread.
fn stream() -> Result<Streamed> {
    let map = kit::ringbuf_map(8 << 20);
    let sequence = kit::percpu_counter_map();
    let drops = kit::percpu_counter_map();
    let producer = kit::stamped(
        map.as_fd(),
        sequence.as_fd(),
        drops.as_fd(),
        RECORD_LEN,
        Commit::Submit,
        0,
    );
    let mut ring = RingBuf::new(&map)?;

    let done = Arc::new(AtomicBool::new(false));
    let producer_done = done.clone();
    let cpus = kit::online_cpus();
    let producer_thread = std::thread::spawn(move || {
        if cpus > 1 {
            kit::pin_to_cpu(1);
        }
        for _ in 0..RUNS {
            producer.run(REPEAT);
        }
        producer_done.store(true, Ordering::Release);
    });
    if cpus > 1 {
        kit::pin_to_cpu(0);
    }

    let tail = kit::stamped_tail(RECORD_LEN as usize);
    let mut next_sequence = vec![1u64; kit::possible_cpus()];
    let mut records = 0u64;
    let start = Instant::now();
    let cpu_start = thread_cpu_time();
    loop {
        let finished = done.load(Ordering::Acquire);
        ring.wait(Some(Duration::from_millis(50)))?;
        for record in &ring.batch() {
            let record = record?;
            let (cpu, sequence) = kit::stamp(record);
            let expected = &mut next_sequence[cpu as usize];
            if sequence != *expected || record[kit::STAMP_LEN..] != tail[..] {
                return Err(format!(
                    "record {records}: cpu {cpu} sequence {sequence}, expected {expected}"
                )
                .into());
            }
            *expected += 1;
            records += 1;
        }
        if finished && ring.available()? == 0 {
            break;
        }
    }
    let reader_cpu = thread_cpu_time() - cpu_start;
    let elapsed = start.elapsed();
    producer_thread.join().expect("producer thread");

    let produced: u64 = kit::percpu_counters(sequence.as_fd()).iter().sum();
    let dropped: u64 = kit::percpu_counters(drops.as_fd()).iter().sum();
    if produced != records || produced + dropped != u64::from(RUNS) * u64::from(REPEAT) {
        return Err(format!(
            "record counts do not add up: read {records}, produced {produced}, dropped {dropped}"
        )
        .into());
    }
    Ok(Streamed {
        records,
        elapsed,
        reader_cpu,
        wakeups: ring.wait_stats().wakeups,
    })
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Drains a 16 MiB ring the kernel filled, with no producer running; returns records per
/// second, the median of five rounds.
fn reader_alone() -> Result<f64> {
    let ring_size = 16 << 20;
    let map = kit::ringbuf_map(ring_size);
    let sequence = kit::percpu_counter_map();
    let drops = kit::percpu_counter_map();
    let producer = kit::stamped(
        map.as_fd(),
        sequence.as_fd(),
        drops.as_fd(),
        RECORD_LEN,
        Commit::Submit,
        kit::NO_WAKEUP,
    );
    let count = records_fitting(ring_size, RECORD_LEN as usize);
    let mut ring = RingBuf::new(&map)?;
    let mut drains = Vec::new();
    for _ in 0..5 {
        producer.run(count);
        let start = Instant::now();
        let mut read = 0u32;
        for record in &ring.batch() {
            std::hint::black_box(record?);
            read += 1;
        }
        drains.push(start.elapsed());
        if read != count {
            return Err(format!("drained {read} of {count} records").into());
        }
    }
    drains.sort();
    Ok(f64::from(count) / drains[drains.len() / 2].as_secs_f64())
}

fn zero_copy_vs_copy() -> Result<()> {
    println!(
        "\n3. Zero-copy against copying, reading every byte of every record (a checksum, as a \
         parser\n   would); ring pre-filled by the kernel, medians of 5 rounds each, \
         interleaved:\n"
    );
    println!(
        "   {:>6}  {:>22}  {:>26}  {:>9}",
        "bytes", "zero-copy batch ns/rec", "copy (read_into) ns/rec", "zero-copy"
    );
    let ring_size = 16 << 20;
    for len in [64u32, 128, 512, 1024, 2048, 4000] {
        let map = kit::ringbuf_map(ring_size);
        let producer = kit::reserve_load_submit(map.as_fd(), len, kit::NO_WAKEUP);
        let count = records_fitting(ring_size, len as usize);
        let mut ring = RingBuf::new(&map)?;
        let mut buf = vec![0u8; 4096];
        let (mut zero_copy, mut copy) = (Vec::new(), Vec::new());
        let expected = checksum(&kit::packet_bytes(len as usize)[..len as usize])
            .wrapping_mul(u64::from(count));
        for round in 0..10 {
            producer.run(count);
            let mut sum = 0u64;
            let start = Instant::now();
            if round % 2 == 0 {
                for record in &ring.batch() {
                    sum = sum.wrapping_add(checksum(record?));
                }
                zero_copy.push(start.elapsed());
            } else {
                while let Some(n) = ring.read_into(&mut buf)? {
                    sum = sum.wrapping_add(checksum(&buf[..n]));
                }
                copy.push(start.elapsed());
            }
            if sum != expected || ring.available()? != 0 {
                return Err(format!("{len}-byte records: wrong checksum or records left").into());
            }
        }
        let median = |mut times: Vec<Duration>| {
            times.sort();
            times[times.len() / 2].as_nanos() as f64 / f64::from(count)
        };
        let (z, c) = (median(zero_copy), median(copy));
        println!("   {len:>6}  {z:>22.1}  {c:>26.1}  {:>8.2}x", c / z);
    }
    println!(
        "\n   (\"zero-copy\" is copy time / zero-copy time: above 1 means zero-copy was faster. \
         Shared,\n   noisy machines move these figures; docs/benchmarks.md has the careful \
         measurements.)"
    );
    Ok(())
}

/// Records of `len` bytes that fit in an empty ring of `ring_size` bytes (each takes its
/// 8-byte header plus the payload, rounded up to 8), less one.
fn records_fitting(ring_size: usize, len: usize) -> u32 {
    let footprint = (len + 8 + 7) & !7;
    (ring_size / footprint - 1) as u32
}

/// Sums every byte of `bytes`, 8 at a time.
fn checksum(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    let mut sum = 0u64;
    for word in &mut words {
        sum = sum.wrapping_add(u64::from_ne_bytes(word.try_into().unwrap()));
    }
    for &byte in words.remainder() {
        sum = sum.wrapping_add(u64::from(byte));
    }
    sum
}
