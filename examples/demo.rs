//! The main job: stream real kernel events through the crate.
//!
//! A small XDP program (assembled in Rust by the test kit) reserves a record in a RINGBUF
//! map, stamps it with its CPU and a per-CPU sequence number, copies the rest from the test
//! packet and submits it. A producer thread runs it in the kernel with BPF_PROG_TEST_RUN on
//! the other CPU; this thread waits on the ring (epoll) and reads zero-copy batches, checking
//! every record. Then it times zero-copy against copying reads on a pre-filled ring.
//!
//! Run: `cargo run --release --example demo` (root or CAP_BPF).

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bpf_ringbuf::RingBuf;
use bpf_ringbuf_testkit::{self as kit, Commit};

const RECORD_LEN: u32 = 64;
const RUNS: u32 = 100;
const REPEAT: u32 = 20_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if !kit::kernel_available() {
        return Err("the demo needs bpf(2): run it as root or with CAP_BPF".into());
    }
    stream()?;
    zero_copy_vs_copy()?;
    Ok(())
}

fn stream() -> Result<(), Box<dyn std::error::Error>> {
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
    println!(
        "streaming: {} runs x {} records of {} bytes from a kernel program into a {} KiB ring",
        RUNS,
        REPEAT,
        RECORD_LEN,
        ring.size() / 1024
    );

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
    let (mut records, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    loop {
        let finished = done.load(Ordering::Acquire);
        ring.wait(Some(Duration::from_millis(50)))?;
        let batch = ring.batch();
        for record in &batch {
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
            bytes += record.len() as u64;
        }
        drop(batch);
        if finished && ring.available()? == 0 {
            break;
        }
    }
    let elapsed = start.elapsed();
    producer_thread.join().expect("producer thread");

    let produced: u64 = kit::percpu_counters(sequence.as_fd()).iter().sum();
    let dropped: u64 = kit::percpu_counters(drops.as_fd()).iter().sum();
    let stats = ring.wait_stats();
    println!(
        "received {records} records ({:.1} MiB) in {:.3} s: {:.2} M records/s, {:.0} MiB/s",
        bytes as f64 / (1 << 20) as f64,
        elapsed.as_secs_f64(),
        records as f64 / elapsed.as_secs_f64() / 1e6,
        bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64()
    );
    println!(
        "verified: every record in per-CPU order with its payload; produced {produced}, \
         dropped by the program when the ring was full {dropped}; {} wakeups, {} sleeps",
        stats.wakeups, stats.sleeps
    );
    if produced != records || produced + dropped != u64::from(RUNS) * u64::from(REPEAT) {
        return Err("record counts do not add up".into());
    }
    Ok(())
}

fn zero_copy_vs_copy() -> Result<(), Box<dyn std::error::Error>> {
    println!("\nzero-copy batch vs copy into a reused buffer, ring pre-filled by the kernel:");
    println!(
        "{:>8} {:>10} {:>14} {:>14} {:>8}",
        "size", "records", "zero-copy ns", "copy ns", "speedup"
    );
    for len in [128u32, 1024, 2048, 2432] {
        let ring_size = 16 << 20;
        let map = kit::ringbuf_map(ring_size);
        let sequence = kit::percpu_counter_map();
        let drops = kit::percpu_counter_map();
        let producer = kit::stamped(
            map.as_fd(),
            sequence.as_fd(),
            drops.as_fd(),
            len,
            Commit::Submit,
            kit::NO_WAKEUP,
        );
        let count = (ring_size / (len as usize + 8 + 7) / 8 * 8)
            .min(ring_size / (len as usize + 16)) as u32
            - 1;
        let mut ring = RingBuf::new(&map)?;
        let mut buf = vec![0u8; 4096];
        let (mut zero_copy, mut copy) = (Vec::new(), Vec::new());
        for round in 0..10 {
            producer.run(count);
            let start = Instant::now();
            let mut checksum = 0u64;
            if round % 2 == 0 {
                let batch = ring.batch();
                for record in &batch {
                    let record = record?;
                    checksum += u64::from(record[record.len() - 1]);
                }
                drop(batch);
                zero_copy.push(start.elapsed());
            } else {
                while let Some(n) = ring.read_into(&mut buf)? {
                    checksum += u64::from(buf[n - 1]);
                }
                copy.push(start.elapsed());
            }
            std::hint::black_box(checksum);
            assert_eq!(ring.available()?, 0);
        }
        let median = |v: &mut Vec<Duration>| {
            v.sort();
            v[v.len() / 2].as_nanos() as f64 / f64::from(count)
        };
        let (z, c) = (median(&mut zero_copy), median(&mut copy));
        println!("{len:>8} {count:>10} {z:>14.2} {c:>14.2} {:>7.2}x", c / z);
    }
    Ok(())
}
