//! Hostile rings against the real kernel, with a real second process.
//!
//! Any process holding a RINGBUF's fd may map its consumer page read-write, so `consumer_pos`
//! is untrusted input. These tests run a second process that scribbles `consumer_pos` while
//! a BPF program produces, once for every read API (zero-copy batches, callbacks, copies, the
//! poller and, with feature `tokio`, the async reader), and check that the reader:
//!
//! - never panics, and every call returns within [`CALL_BOUND`];
//! - on every read no scribble overlapped (the shared log below says which), reports a
//!   scribble in place as `ConsumerPosMoved` naming its own cursor and the value written,
//!   delivering nothing, and with none in place delivers every record waiting; a read that
//!   raced a scribble may go either way, but what it delivers is verified all the same and
//!   its only possible error is `ConsumerPosMoved` naming the cursor;
//! - after `follow`ing a position corrupt beyond doubt, reports the corruption itself
//!   (`ConsumerAhead`, `MisalignedPosition`);
//! - never overwrites, when a batch ends, a `consumer_pos` written while the batch lent
//!   records (some batches are held until a scribble lands);
//! - recovers with `resume` when it can; `resume` refuses exactly when `producer_pos` is more
//!   than a ring past the cursor (the kernel may have reused the space), and then `resync`
//!   skips what is there: nothing else is lost, nothing garbled is delivered;
//! - after the scribbler has exited, delivers every record produced, byte-exact and in order,
//!   with no error and no recovery.
//!
//! The second process is this test executable run again ([`scribbler_process`], an ignored
//! test that does nothing unless [`SCRIBBLE_ENV`] carries its plan). Each scribble is
//! bracketed by a counter the two processes share (a seqlock in an mmapable array map), so
//! the reader knows exactly which of its reads no scribble overlapped: for those the outcome
//! is exact, not statistical.
//!
//! The records are produced between reads, by the reading thread itself: a scribble that
//! moves `consumer_pos` forward lets the kernel reuse space after the reader's cursor, and a
//! producer running while a batch lends records would then overwrite them under the borrow
//! (the trust assumption no reader can remove, `guide::design`). Produced between reads, the
//! kernel overwrites only records not lent, and `resume` must notice.
//!
//! The last tests check that waits end at their deadline while a child process stops and
//! continues this one every 100 ms (each stop makes `epoll_wait` fail with `EINTR`).

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bpf_ringbuf::geometry::distance;
use bpf_ringbuf::{
    Error, PollOutcome, Poller, ReadError, ReserveError, RingBuf, UserRingBuf, WaitOutcome,
};
use bpf_ringbuf_sys::{self as sys, MapCreate, MapFlags, MapType, Mapping};
use bpf_ringbuf_testkit::{self as kit, require_feature, require_kernel, PositionWatch};
use rustix::mm::ProtFlags;

/// The environment variable that carries the scribbler's plan to the second process.
const SCRIBBLE_ENV: &str = "BPF_RINGBUF_HOSTILE_SCRIBBLE";
/// The name of the second process's entry test.
const SCRIBBLER_TEST: &str = "hostile::scribbler_process";
/// What the second process prints once it has mapped everything and starts writing.
const READY: &str = "hostile-scribbler: ready";
/// What it prints when it is done, followed by its counts (`name=count`).
const DONE: &str = "hostile-scribbler: done";

/// The ring's size, in pages.
const RING_PAGES: usize = 4;
/// How long the second process scribbles.
const SCRIBBLE_FOR: Duration = Duration::from_millis(400);
/// The time between two scribbles.
const SCRIBBLE_EVERY: Duration = Duration::from_micros(500);
/// The longest any call may take. A hang is forever; waits are given [`WAIT_FOR`] and a held
/// batch waits up to [`HOLD_FOR`] for a scribble, and the rest is slack for two busy cores or
/// an emulated CPU (the kernel-matrix guests), whose host may stall it for seconds.
const CALL_BOUND: Duration = Duration::from_secs(30);
/// The timeout given to the waiting reads (poller, async).
const WAIT_FOR: Duration = Duration::from_millis(20);
/// How long a held batch waits for a scribble to land while it lends records.
const HOLD_FOR: Duration = Duration::from_millis(250);
/// How long the second process may take to start, or to exit after it is done.
const CHILD_BOUND: Duration = Duration::from_secs(60);
/// Records produced and verified after the scribbler has exited.
const AFTER_RECORDS: u64 = 1000;

const RW: ProtFlags = ProtFlags::READ.union(ProtFlags::WRITE);

fn page() -> usize {
    kit::page_size()
}

// ---------------------------------------------------------------------------------------------
// Shared memory of the two processes.

/// The first word of a shared mapping, accessed atomically only.
struct SharedWord(Mapping);

impl SharedWord {
    fn map(fd: BorrowedFd<'_>, offset: usize, prot: ProtFlags) -> Self {
        Self(Mapping::map_shared(fd, offset as u64, page(), prot).expect("map a shared page"))
    }

    fn word(&self) -> &AtomicUsize {
        // SAFETY: the mapping is one page, page-aligned, and lives as long as `self`; the word
        // is shared with the kernel and the other process, and only accessed atomically.
        unsafe { AtomicUsize::from_ptr(self.0.as_ptr().as_ptr().cast()) }
    }
}

/// A counter the scribbler increments before and after each write of `consumer_pos` (a
/// seqlock): a read that sees it even, and the same before and after, overlapped no write.
/// It lives in an mmapable array map, which the second process opens by id.
struct ScribbleLog {
    _map: OwnedFd,
    id: u32,
    count: SharedWord,
}

impl ScribbleLog {
    fn new() -> Self {
        let map = sys::map_create(&MapCreate {
            flags: MapFlags::MMAPABLE,
            ..MapCreate::new(MapType::ARRAY, 4, 8, 1)
        })
        .expect("create the mmapable array of the scribble log");
        Self::from_map(map)
    }

    fn open(id: u32) -> Self {
        Self::from_map(sys::map_get_fd_by_id(id).expect("open the scribble log by id"))
    }

    fn from_map(map: OwnedFd) -> Self {
        let id = sys::map_info(map.as_fd()).expect("scribble log info").id;
        let count = SharedWord::map(map.as_fd(), 0, RW);
        Self {
            _map: map,
            id,
            count,
        }
    }

    fn load(&self) -> usize {
        self.count.word().load(Ordering::SeqCst)
    }

    /// Runs `write` as one logged write.
    fn write(&self, write: impl FnOnce()) {
        self.count.word().fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        write();
        fence(Ordering::SeqCst);
        self.count.word().fetch_add(1, Ordering::SeqCst);
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

// ---------------------------------------------------------------------------------------------
// The second process.

/// What the scribbler writes into `consumer_pos`, computed from the word it finds there
/// (`cons`) and `producer_pos` (`prod`).
#[derive(Clone, Copy, Debug)]
enum Pattern {
    /// Any 64-bit value.
    Random,
    /// `prod + 8`: just ahead of the producer.
    ProducerPlus8,
    /// `prod + 64`.
    ProducerPlus64,
    /// `0`.
    Zero,
    /// `cons - 8`: a step back, onto the bytes before the record at `cons`.
    ConsumerMinus8,
    /// `cons + 4`: misaligned, into a header.
    ConsumerPlus4,
    /// An aligned position in `(cons, prod]` (a record boundary or the middle of a record);
    /// `prod` when `cons` is not a plausible position behind it.
    ForwardInRange,
    /// `prod`: every unread record skipped, a boundary as plausible as any.
    ForwardToProducer,
}

const PATTERNS: [Pattern; 8] = [
    Pattern::Random,
    Pattern::ProducerPlus8,
    Pattern::ProducerPlus64,
    Pattern::Zero,
    Pattern::ConsumerMinus8,
    Pattern::ConsumerPlus4,
    Pattern::ForwardInRange,
    Pattern::ForwardToProducer,
];

impl Pattern {
    fn name(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::ProducerPlus8 => "prod+8",
            Self::ProducerPlus64 => "prod+64",
            Self::Zero => "zero",
            Self::ConsumerMinus8 => "cons-8",
            Self::ConsumerPlus4 => "cons+4",
            Self::ForwardInRange => "forward-in-range",
            Self::ForwardToProducer => "forward-to-prod",
        }
    }

    fn value(self, cons: usize, prod: usize, size: usize, rng: &mut Rng) -> usize {
        match self {
            Self::Random => rng.next() as usize,
            Self::ProducerPlus8 => prod.wrapping_add(8),
            Self::ProducerPlus64 => prod.wrapping_add(64),
            Self::Zero => 0,
            Self::ConsumerMinus8 => cons.wrapping_sub(8),
            Self::ConsumerPlus4 => cons.wrapping_add(4),
            Self::ForwardInRange => {
                let behind = distance(cons, prod);
                if cons % 8 == 0 && (8..=size).contains(&behind) {
                    cons.wrapping_add(8 * (1 + rng.below(behind as u64 / 8) as usize))
                } else {
                    prod
                }
            }
            Self::ForwardToProducer => prod,
        }
    }
}

/// What the second process is told to do.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// The RINGBUF's map id.
    ring: u32,
    /// The scribble log's map id.
    log: u32,
    seed: u64,
    every: Duration,
    duration: Duration,
}

impl Plan {
    fn encode(&self) -> String {
        format!(
            "ring={},log={},seed={},every_us={},duration_ms={}",
            self.ring,
            self.log,
            self.seed,
            self.every.as_micros(),
            self.duration.as_millis()
        )
    }

    fn decode(text: &str) -> Self {
        let fields: BTreeMap<&str, u64> = text
            .split(',')
            .map(|field| {
                let (key, value) = field.split_once('=').expect("plan fields are key=value");
                (key, value.parse().expect("plan values are integers"))
            })
            .collect();
        let field = |key: &str| {
            *fields
                .get(key)
                .unwrap_or_else(|| panic!("plan lacks {key}"))
        };
        Self {
            ring: field("ring") as u32,
            log: field("log") as u32,
            seed: field("seed"),
            every: Duration::from_micros(field("every_us")),
            duration: Duration::from_millis(field("duration_ms")),
        }
    }
}

/// The second process: started by the scribbled-reader tests with [`SCRIBBLE_ENV`] set, it
/// opens the ring by id, maps its consumer page read-write and writes [`PATTERNS`] into
/// `consumer_pos` at a steady rate for the planned time, then prints its counts and exits.
/// Without the variable (`cargo test -- --ignored`) it does nothing.
#[test]
#[ignore = "the second process of the scribbled-reader tests, which start it themselves"]
fn scribbler_process() {
    let Ok(plan) = std::env::var(SCRIBBLE_ENV) else {
        eprintln!(
            "{SCRIBBLER_TEST}: {SCRIBBLE_ENV} is not set, nothing to do (this is the second \
             process of the scribbled-reader tests, which start it with a plan)"
        );
        return;
    };
    let plan = Plan::decode(&plan);
    let ring = sys::map_get_fd_by_id(plan.ring).expect("open the ring by id");
    let info = sys::map_info(ring.as_fd()).expect("ring info");
    assert_eq!(
        info.map_type(),
        MapType::RINGBUF,
        "map {} is no RINGBUF",
        plan.ring
    );
    let size = info.max_entries as usize;
    // The raw mappings any process holding the fd may make: the consumer page read-write,
    // the producer page read-only.
    let consumer = SharedWord::map(ring.as_fd(), 0, RW);
    let producer = SharedWord::map(ring.as_fd(), page(), ProtFlags::READ);
    let log = ScribbleLog::open(plan.log);
    let mut rng = Rng(plan.seed | 1);
    let mut counts = [0u64; PATTERNS.len()];
    println!("{READY}");

    let started = Instant::now();
    let mut next = started;
    while started.elapsed() < plan.duration {
        let pattern = rng.below(PATTERNS.len() as u64) as usize;
        let cons = consumer.word().load(Ordering::SeqCst);
        let prod = producer.word().load(Ordering::SeqCst);
        let value = PATTERNS[pattern].value(cons, prod, size, &mut rng);
        log.write(|| consumer.word().store(value, Ordering::SeqCst));
        counts[pattern] += 1;
        // A steady rate: the next write at the next tick (not a burst after a delay).
        next = (next + plan.every).max(Instant::now());
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let total: u64 = counts.iter().sum();
    let counts: Vec<String> = PATTERNS
        .iter()
        .zip(counts)
        .map(|(pattern, count)| format!("{}={count}", pattern.name()))
        .collect();
    println!("{DONE} total={total} {}", counts.join(" "));
}

/// The second process, seen from the test: started, watched, and waited for.
struct Scribbler {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Option<thread::JoinHandle<String>>,
}

/// What the second process reported.
struct Scribbles {
    total: u64,
    by_pattern: String,
}

impl Scribbler {
    /// Starts this executable again as [`scribbler_process`], and waits until it writes.
    fn start(plan: Plan) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("this test executable"))
            .args([SCRIBBLER_TEST, "--exact", "--ignored", "--nocapture"])
            .arg("--test-threads=1")
            .env(SCRIBBLE_ENV, plan.encode())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the scribbler process");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut scribbler = Self {
            child: Some(child),
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
        };
        let deadline = Instant::now() + CHILD_BOUND;
        loop {
            match scribbler
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    let ready = line.contains(READY);
                    scribbler.seen.push(line);
                    if ready {
                        return scribbler;
                    }
                }
                Err(_) => panic!(
                    "the scribbler process did not start: {}",
                    scribbler.kill_and_describe()
                ),
            }
        }
    }

    /// Whether it is still running.
    fn running(&mut self) -> bool {
        let child = self.child.as_mut().expect("the child");
        child
            .try_wait()
            .expect("waitpid on the scribbler")
            .is_none()
    }

    /// Waits for it to exit (it must succeed) and returns its counts.
    fn finish(mut self) -> Scribbles {
        let deadline = Instant::now() + CHILD_BOUND;
        let status = loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the scribbler did not exit: {}",
                self.kill_and_describe()
            );
            thread::sleep(Duration::from_millis(5));
        };
        self.child = None;
        // Its stdout ends with the process: the reader thread sends the rest, then hangs up.
        while let Ok(line) = self.lines.recv_timeout(CHILD_BOUND) {
            self.seen.push(line);
        }
        let stderr = self.stderr.take().unwrap().join().unwrap_or_default();
        assert!(
            status.success(),
            "the scribbler failed ({status}):\n{}\n{stderr}",
            self.seen.join("\n")
        );
        let done = self
            .seen
            .iter()
            .find_map(|line| line.split_once(DONE).map(|(_, counts)| counts.trim()))
            .unwrap_or_else(|| {
                panic!(
                    "the scribbler ran no scribbles (filtered out?):\n{}\n{stderr}",
                    self.seen.join("\n")
                )
            });
        let (total, by_pattern) = done.split_once(' ').unwrap_or((done, ""));
        Scribbles {
            total: total
                .strip_prefix("total=")
                .and_then(|total| total.parse().ok())
                .expect("the scribbler's total"),
            by_pattern: by_pattern.to_owned(),
        }
    }

    fn kill_and_describe(&mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let stderr = self
            .stderr
            .take()
            .map(|stderr| stderr.join().unwrap_or_default())
            .unwrap_or_default();
        format!("{}\n{stderr}", self.seen.join("\n"))
    }
}

impl Drop for Scribbler {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The records: produced by a BPF program, verified byte by byte.

/// Record `seq`: `u64 seq`, `u32 len`, `u32` FNV-1a checksum of the rest, then
/// `len - 16` bytes derived from `seq`; 16 to 256 bytes.
fn payload(seq: u64) -> Vec<u8> {
    let len = 16 + (seq.wrapping_mul(37) % 241) as usize;
    let mut record = vec![0u8; len];
    for (i, byte) in record[16..].iter_mut().enumerate() {
        *byte = (seq.wrapping_mul(131) as usize ^ i.wrapping_mul(7) ^ (i >> 3)) as u8;
    }
    let checksum = fnv1a(&record[16..]);
    record[..8].copy_from_slice(&seq.to_le_bytes());
    record[8..12].copy_from_slice(&(len as u32).to_le_bytes());
    record[12..16].copy_from_slice(&checksum.to_le_bytes());
    record
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// The producer, and what the reader must deliver: the records the kernel accepted and the
/// reader has not read yet, in order.
struct Stream {
    out: kit::VariableOutput,
    rng: Rng,
    next_seq: u64,
    in_ring: VecDeque<u64>,
    accepted: u64,
    refused: u64,
    delivered: u64,
    skipped: u64,
}

impl Stream {
    fn new(ring: BorrowedFd<'_>, seed: u64) -> Self {
        Self {
            out: kit::variable_output(ring),
            rng: Rng(seed | 1),
            next_seq: 1,
            in_ring: VecDeque::new(),
            accepted: 0,
            refused: 0,
            delivered: 0,
            skipped: 0,
        }
    }

    /// Produces the next record; whether the kernel accepted it (it refuses when the ring
    /// is full, or looks full through a scribbled `consumer_pos`).
    fn emit(&mut self) -> bool {
        let seq = self.next_seq;
        if self.out.try_emit(&payload(seq), 0, 1) {
            self.next_seq += 1;
            self.in_ring.push_back(seq);
            self.accepted += 1;
            true
        } else {
            self.refused += 1;
            false
        }
    }

    /// Produces up to `n` records, stopping at the first refusal.
    fn burst(&mut self, n: u64) {
        for _ in 0..n {
            if !self.emit() {
                break;
            }
        }
    }

    /// What one iteration produces: usually a few records, every 25th time until the kernel
    /// refuses (a full ring; after a forward jump, the kernel overwrites unread records).
    fn produce(&mut self, iteration: u64) {
        if iteration % 25 == 24 {
            self.burst(4 * RING_PAGES as u64 * page() as u64 / 16);
        } else {
            let n = self.rng.below(7);
            self.burst(n);
        }
    }

    /// Checks that `record` is the next one expected, byte for byte.
    fn deliver(&mut self, record: &[u8]) {
        let head = &record[..record.len().min(16)];
        let Some(expected) = self.in_ring.pop_front() else {
            panic!("a record nobody produced (or delivered twice): {head:02x?}");
        };
        let seq = record
            .get(..8)
            .map(|seq| u64::from_le_bytes(seq.try_into().unwrap()));
        assert_eq!(
            seq,
            Some(expected),
            "record out of order or garbage ({} bytes, starts {head:02x?})",
            record.len()
        );
        let checksum = record
            .get(12..16)
            .map(|sum| u32::from_le_bytes(sum.try_into().unwrap()));
        assert_eq!(
            checksum,
            record.get(16..).map(fnv1a),
            "record {expected}: bad checksum"
        );
        assert!(
            record == payload(expected),
            "record {expected}: bytes differ from what was produced"
        );
        self.delivered += 1;
    }

    /// After a `resync`: everything produced so far was skipped; returns how much.
    fn skip_all(&mut self) -> u64 {
        let skipped = self.in_ring.len() as u64;
        self.skipped += skipped;
        self.in_ring.clear();
        skipped
    }
}

// ---------------------------------------------------------------------------------------------
// The readers under test.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    /// `RingBuf::batch`, zero-copy.
    Batch,
    /// `RingBuf::consume`, a callback.
    Consume,
    /// `RingBuf::read_into` and `read_vec`, alternately.
    Copy,
    /// `Poller::poll`.
    Poller,
    /// `AsyncRingBuf::next_batch` and `consume`, alternately.
    #[cfg(feature = "tokio")]
    Async,
}

enum Reader {
    Ring(Api, RingBuf),
    Poller {
        poller: Poller,
        id: u32,
    },
    #[cfg(feature = "tokio")]
    Async {
        ring: Option<bpf_ringbuf::AsyncRingBuf>,
        runtime: tokio::runtime::Runtime,
    },
}

/// What one read did.
#[derive(Default)]
struct Outcome {
    delivered: usize,
    error: Option<ReadError>,
    /// A wait ended at its timeout with nothing to report.
    timed_out: bool,
    /// A batch that lent records while a scribble landed.
    held: Option<Held>,
    /// How long the read held a batch, waiting for a scribble.
    held_for: Duration,
}

/// A scribble seen while a batch lent records.
struct Held {
    /// The batch's first position.
    start: usize,
    /// What the scribbler wrote.
    written: usize,
    /// The scribble log's count right after.
    count: usize,
}

/// Figures of one run.
#[derive(Default)]
struct Tally {
    reads: u64,
    /// Reads no scribble overlapped, with `consumer_pos` our own: every record delivered.
    quiet_clean: u64,
    /// Reads no scribble overlapped, with a scribble in place: reported, nothing delivered.
    quiet_scribbled: u64,
    /// Reads a scribble overlapped (whatever they returned was checked all the same).
    racing: u64,
    errors: BTreeMap<&'static str, u64>,
    timeouts: u64,
    resumes: u64,
    resumes_refused: u64,
    follows: u64,
    resyncs: u64,
    follow_candidates: u64,
    /// Records `resync` skipped after a refused `resume` (the kernel may have overwritten
    /// them), and after a `follow` (the reader gave its cursor up).
    skipped_refused: u64,
    skipped_followed: u64,
    writes_during_batch: u64,
    longest_call: Duration,
    /// The longest call, not counting the time it held a batch on purpose.
    longest_unheld: Duration,
}

impl Tally {
    fn error(&mut self, error: &ReadError) {
        *self.errors.entry(kind(error)).or_default() += 1;
    }

    fn recoveries(&self) -> u64 {
        self.resumes + self.resumes_refused + self.follows + self.resyncs
    }
}

fn kind(error: &ReadError) -> &'static str {
    match error {
        ReadError::ConsumerPosMoved { .. } => "ConsumerPosMoved",
        ReadError::ConsumerAhead { .. } => "ConsumerAhead",
        ReadError::MisalignedPosition { .. } => "MisalignedPosition",
        ReadError::RecordOutOfBounds { .. } => "RecordOutOfBounds",
        ReadError::BufferTooSmall { .. } => "BufferTooSmall",
        _ => "other",
    }
}

/// Everything a read needs besides the reader.
struct Ctx {
    stream: Stream,
    tally: Tally,
    log: ScribbleLog,
    watch: PositionWatch,
    size: usize,
    /// Hold some batches until a scribble lands (only while the scribbler runs).
    holds: bool,
    iteration: u64,
}

impl Ctx {
    fn hold_now(&self) -> bool {
        self.holds && self.iteration % 8 == 3
    }
}

/// Waits up to [`HOLD_FOR`] for the scribbler to complete a write; returns what it wrote, and
/// adds the time it waited to `held_for`.
fn await_scribble(
    log: &ScribbleLog,
    watch: &PositionWatch,
    start: usize,
    held_for: &mut Duration,
) -> Option<Held> {
    let started = Instant::now();
    let held = wait_for_scribble(log, watch, start);
    *held_for += started.elapsed();
    held
}

fn wait_for_scribble(log: &ScribbleLog, watch: &PositionWatch, start: usize) -> Option<Held> {
    let before = log.load();
    let deadline = Instant::now() + HOLD_FOR;
    while Instant::now() < deadline {
        let count = log.load();
        if count != before && count % 2 == 0 {
            let written = watch.consumer_pos();
            fence(Ordering::SeqCst);
            if log.load() == count {
                return Some(Held {
                    start,
                    written,
                    count,
                });
            }
        }
        // Not a spin: the scribbler may need this CPU.
        thread::sleep(Duration::from_micros(50));
    }
    None
}

/// Reads a batch's records into the stream; if asked, holds it once (after its first record)
/// until a scribble lands.
fn drain_batch<'r>(
    records: impl Iterator<Item = Result<&'r [u8], ReadError>>,
    ctx: &mut Ctx,
    start: usize,
    mut hold: bool,
) -> Outcome {
    let mut outcome = Outcome::default();
    for record in records {
        match record {
            Ok(record) => {
                ctx.stream.deliver(record);
                outcome.delivered += 1;
                if std::mem::take(&mut hold) {
                    outcome.held =
                        await_scribble(&ctx.log, &ctx.watch, start, &mut outcome.held_for);
                }
            }
            Err(error) => {
                outcome.error = Some(error);
                break;
            }
        }
    }
    outcome
}

impl Reader {
    fn new(api: Api, ring: RingBuf) -> Self {
        match api {
            Api::Poller => {
                let mut poller = Poller::new().unwrap();
                // One poll takes everything waiting (the checks expect a quiet read to drain).
                poller.set_budget(usize::MAX);
                let id = poller.add_ring(ring).unwrap();
                Self::Poller { poller, id }
            }
            #[cfg(feature = "tokio")]
            Api::Async => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let entered = runtime.enter();
                let ring = Some(bpf_ringbuf::AsyncRingBuf::new(ring).unwrap());
                drop(entered);
                Self::Async { ring, runtime }
            }
            api => Self::Ring(api, ring),
        }
    }

    fn cursor(&self) -> usize {
        match self {
            Self::Ring(_, ring) => ring.cursor(),
            Self::Poller { poller, id } => poller.ring(*id).unwrap().cursor(),
            #[cfg(feature = "tokio")]
            Self::Async { ring, .. } => ring.as_ref().unwrap().get_ref().cursor(),
        }
    }

    /// Runs `f` on the plain ring: what recovery needs (out of the poller, out of tokio).
    fn with_ring<R>(&mut self, f: impl FnOnce(&mut RingBuf) -> R) -> R {
        match self {
            Self::Ring(_, ring) => f(ring),
            Self::Poller { poller, id } => {
                let mut ring = poller.remove_ring(*id).unwrap().expect("the poller's ring");
                let result = f(&mut ring);
                assert_eq!(poller.add_ring(ring).unwrap(), *id);
                result
            }
            #[cfg(feature = "tokio")]
            Self::Async { ring, runtime } => {
                let _entered = runtime.enter();
                let mut plain = ring.take().unwrap().into_inner();
                let result = f(&mut plain);
                *ring = Some(bpf_ringbuf::AsyncRingBuf::new(plain).unwrap());
                result
            }
        }
    }

    /// One read with the API under test.
    fn read(&mut self, ctx: &mut Ctx) -> Outcome {
        // Hold the read's first batch across a scribble, once.
        let mut hold = ctx.hold_now();
        let start = self.cursor();
        match self {
            Self::Ring(Api::Batch, ring) => {
                let batch = ring.batch();
                drain_batch(batch.iter(), ctx, start, hold)
            }
            Self::Ring(Api::Consume, ring) => {
                let mut outcome = Outcome::default();
                let mut held = None;
                let mut held_for = Duration::ZERO;
                let result = ring.consume(usize::MAX, |record| {
                    ctx.stream.deliver(record);
                    outcome.delivered += 1;
                    if std::mem::take(&mut hold) {
                        held = await_scribble(&ctx.log, &ctx.watch, start, &mut held_for);
                    }
                    ControlFlow::Continue(())
                });
                outcome.held = held;
                outcome.held_for = held_for;
                match result {
                    Ok(n) => assert_eq!(n, outcome.delivered),
                    Err(error) => {
                        assert_eq!(outcome.delivered, 0, "an error after records: {error}");
                        outcome.error = Some(error);
                    }
                }
                outcome
            }
            Self::Ring(_, ring) => {
                // Copies, read_into and read_vec in turn, until none is left.
                let mut outcome = Outcome::default();
                let mut buf = [0u8; 512];
                let mut vec = Vec::new();
                loop {
                    let copied = if (ctx.iteration + outcome.delivered as u64) % 2 == 0 {
                        ring.read_into(&mut buf)
                            .map(|len| len.map(|len| &buf[..len]))
                    } else {
                        ring.read_vec(&mut vec).map(|read| read.then_some(&vec[..]))
                    };
                    match copied {
                        Ok(Some(record)) => {
                            ctx.stream.deliver(record);
                            outcome.delivered += 1;
                        }
                        Ok(None) => break,
                        Err(error) => {
                            outcome.error = Some(error);
                            break;
                        }
                    }
                }
                outcome
            }
            Self::Poller { poller, id } => {
                let id = *id;
                let mut outcome = Outcome::default();
                let mut held = None;
                let mut held_for = Duration::ZERO;
                let result = poller.poll(Some(WAIT_FOR), |from, record| {
                    assert_eq!(from, id);
                    ctx.stream.deliver(record);
                    outcome.delivered += 1;
                    if std::mem::take(&mut hold) {
                        held = await_scribble(&ctx.log, &ctx.watch, start, &mut held_for);
                    }
                    ControlFlow::Continue(())
                });
                outcome.held = held;
                outcome.held_for = held_for;
                match result {
                    Ok(PollOutcome::Ready { records, writable }) => {
                        assert_eq!((records, writable), (outcome.delivered, 0));
                    }
                    Ok(PollOutcome::TimedOut) => outcome.timed_out = true,
                    Ok(other) => panic!("poll: {other:?}"),
                    Err(Error::Read {
                        map_id: Some(from),
                        error,
                    }) => {
                        assert_eq!(from, id);
                        assert_eq!(outcome.delivered, 0, "an error after records: {error}");
                        outcome.error = Some(error);
                    }
                    Err(other) => panic!("poll: {other}"),
                }
                outcome
            }
            #[cfg(feature = "tokio")]
            Self::Async { ring, runtime } => {
                let ring = ring.as_mut().unwrap();
                let id = ring.get_ref().map_id();
                let by_batch = ctx.iteration % 2 == 0;
                runtime.block_on(async {
                    if by_batch {
                        match tokio::time::timeout(WAIT_FOR, ring.next_batch()).await {
                            Err(_elapsed) => Outcome {
                                timed_out: true,
                                ..Outcome::default()
                            },
                            Ok(Err(error)) => panic!("next_batch: {error}"),
                            Ok(Ok(batch)) => drain_batch(batch.iter(), ctx, start, hold),
                        }
                    } else {
                        let mut outcome = Outcome::default();
                        let mut held = None;
                        let mut held_for = Duration::ZERO;
                        let result = tokio::time::timeout(
                            WAIT_FOR,
                            ring.consume(usize::MAX, |record| {
                                ctx.stream.deliver(record);
                                outcome.delivered += 1;
                                if std::mem::take(&mut hold) {
                                    held =
                                        await_scribble(&ctx.log, &ctx.watch, start, &mut held_for);
                                }
                                ControlFlow::Continue(())
                            }),
                        )
                        .await;
                        outcome.held = held;
                        outcome.held_for = held_for;
                        match result {
                            Err(_elapsed) => outcome.timed_out = true,
                            Ok(Ok(n)) => assert_eq!(n, outcome.delivered),
                            Ok(Err(Error::Read {
                                map_id: Some(from),
                                error,
                            })) => {
                                assert_eq!(from, id);
                                assert_eq!(outcome.delivered, 0, "an error after records");
                                outcome.error = Some(error);
                            }
                            Ok(Err(other)) => panic!("consume: {other}"),
                        }
                        outcome
                    }
                })
            }
        }
    }
}

/// One read, checked: the outcome is exact when no scribble overlapped it.
fn step(reader: &mut Reader, ctx: &mut Ctx) {
    ctx.tally.reads += 1;
    let count_before = ctx.log.load();
    let word = ctx.watch.consumer_pos();
    let cursor = reader.cursor();
    let started = Instant::now();
    let outcome = reader.read(ctx);
    let took = started.elapsed();
    fence(Ordering::SeqCst);
    let quiet = count_before % 2 == 0 && ctx.log.load() == count_before;
    assert!(took < CALL_BOUND, "a read took {took:?}");
    ctx.tally.longest_call = ctx.tally.longest_call.max(took);
    ctx.tally.longest_unheld = ctx.tally.longest_unheld.max(took - outcome.held_for);

    if let Some(error) = outcome.error {
        ctx.tally.error(&error);
        // With its own cursor intact (it follows only to resync at once), the reader has
        // nothing else to report: the producer is honest.
        match error {
            ReadError::ConsumerPosMoved { expected, found } => {
                // A read that fails moves nothing: the error names the cursor it stopped at
                // (the copying API may have delivered records before it).
                assert_eq!(expected, reader.cursor(), "{error}");
                if quiet {
                    assert_eq!(found, word, "{error}");
                }
            }
            other => panic!("with its own cursor intact the reader reported {other:?}"),
        }
    }
    if outcome.timed_out {
        ctx.tally.timeouts += 1;
        // A wait ends empty-handed only when there was nothing to report: records waiting,
        // or a scribble in place when it looked, end it at once (or at its deadline).
        assert!(
            ctx.stream.in_ring.is_empty(),
            "a wait timed out with {} records waiting",
            ctx.stream.in_ring.len()
        );
    }
    if quiet {
        if word != cursor {
            assert!(
                matches!(outcome.error, Some(ReadError::ConsumerPosMoved { .. })),
                "a read with consumer_pos moved ({cursor:#x} -> {word:#x}) was not reported"
            );
            assert_eq!(outcome.delivered, 0);
            ctx.tally.quiet_scribbled += 1;
        } else {
            assert_eq!(outcome.error, None);
            assert!(
                ctx.stream.in_ring.is_empty(),
                "a read with nothing in the way left {} records behind",
                ctx.stream.in_ring.len()
            );
            ctx.tally.quiet_clean += 1;
        }
    } else {
        ctx.tally.racing += 1;
    }

    if let Some(held) = outcome.held {
        ctx.tally.writes_during_batch += 1;
        // The batch published with a compare-exchange from its start: a write made while it
        // lent records is left for the next read to report, not overwritten.
        fence(Ordering::SeqCst);
        let after = ctx.watch.consumer_pos();
        fence(Ordering::SeqCst);
        if ctx.log.load() == held.count {
            let published = if held.written == held.start {
                reader.cursor()
            } else {
                held.written
            };
            assert_eq!(
                after, published,
                "the batch's publish overwrote a consumer_pos written while it lent records"
            );
        }
    }

    if let Some(ReadError::ConsumerPosMoved { found, .. }) = outcome.error {
        reader.with_ring(|ring| recover(ring, found, ctx));
    }
}

/// Recovers from `ConsumerPosMoved`: `resume` from the reader's own cursor, `resync` when
/// the kernel may have reused the space after it. Now and then, when the position found is
/// corrupt beyond doubt, it `follow`s it first, to see the corruption reported as such.
fn recover(ring: &mut RingBuf, found: usize, ctx: &mut Ctx) {
    let size = ctx.size;
    let producer = ring.positions().producer;
    let corrupt = found % 8 != 0 || distance(found, producer) > size;
    if corrupt {
        ctx.tally.follow_candidates += 1;
    }
    if corrupt && ctx.tally.follow_candidates % 4 == 1 {
        ctx.tally.follows += 1;
        let count_before = ctx.log.load();
        fence(Ordering::SeqCst);
        ring.follow();
        let adopted = ring.cursor();
        let expected = if distance(adopted, producer) > size {
            Some(ReadError::ConsumerAhead {
                consumer_pos: adopted,
                producer_pos: producer,
            })
        } else if adopted % 8 != 0 {
            Some(ReadError::MisalignedPosition { position: adopted })
        } else {
            // The scribbler wrote again since: a plausible position, whose bytes could be
            // anything. Not read.
            None
        };
        if let Some(expected) = expected {
            // A position this corrupt is refused before any header is read.
            let got = ring
                .batch()
                .next_record()
                .map(|record| record.map(<[u8]>::len));
            fence(Ordering::SeqCst);
            let quiet = count_before % 2 == 0 && ctx.log.load() == count_before;
            match got {
                Some(Err(error)) if quiet => assert_eq!(error, expected),
                Some(Err(error @ ReadError::ConsumerPosMoved { expected: from, .. })) => {
                    assert_eq!(from, adopted, "{error}")
                }
                Some(Err(error)) => assert_eq!(error, expected),
                other => panic!("a corrupt position was read: {other:?}"),
            }
            if let Some(Err(error)) = got {
                ctx.tally.error(&error);
            }
        }
        // Our own cursor is given up: skip everything.
        assert!(ring.resync() <= size);
        ctx.tally.resyncs += 1;
        ctx.tally.skipped_followed += ctx.stream.skip_all();
        return;
    }
    let cursor = ring.cursor();
    match ring.resume() {
        Ok(()) => ctx.tally.resumes += 1,
        Err(ReadError::ConsumerAhead {
            consumer_pos,
            producer_pos,
        }) => {
            // Refused only when the kernel went more than a ring past our cursor, which it
            // does only after a forward jump: records after the cursor may be overwritten.
            assert_eq!(consumer_pos, cursor);
            assert!(distance(cursor, producer_pos) > size);
            ctx.tally.resumes_refused += 1;
            assert_eq!(ring.resync(), size);
            ctx.tally.resyncs += 1;
            ctx.tally.skipped_refused += ctx.stream.skip_all();
        }
        Err(other) => panic!("resume: {other:?}"),
    }
}

/// The scribbled-reader test for `api`.
fn scribbled(api: Api, seed: u64) {
    let size = RING_PAGES * page();
    let map = kit::ringbuf_map(size);
    let ring = RingBuf::new(&map).unwrap();
    let ring_id = ring.map_id();
    let mut reader = Reader::new(api, ring);
    let mut ctx = Ctx {
        stream: Stream::new(map.as_fd(), seed),
        tally: Tally::default(),
        log: ScribbleLog::new(),
        watch: PositionWatch::new(map.as_fd()),
        size,
        holds: true,
        iteration: 0,
    };
    // One record first, so the reader's cursor is past 0 (a scribbled 0 is a move).
    ctx.stream.burst(1);
    step(&mut reader, &mut ctx);
    assert_eq!(ctx.stream.delivered, 1);

    let mut scribbler = Scribbler::start(Plan {
        ring: ring_id,
        log: ctx.log.id,
        seed,
        every: SCRIBBLE_EVERY,
        duration: SCRIBBLE_FOR,
    });
    let deadline = Instant::now() + SCRIBBLE_FOR + CHILD_BOUND;
    while scribbler.running() {
        assert!(
            Instant::now() < deadline,
            "the scribbler runs past its time"
        );
        ctx.iteration += 1;
        ctx.stream.produce(ctx.iteration);
        step(&mut reader, &mut ctx);
    }
    let scribbles = scribbler.finish();
    // The last scribble may still be in place: a read reports it and recovery repairs it;
    // the next read (nothing scribbles any more) delivers what waits.
    ctx.holds = false;
    step(&mut reader, &mut ctx);
    step(&mut reader, &mut ctx);
    let during = std::mem::take(&mut ctx.tally);
    let lost = ctx.stream.skipped;
    assert!(ctx.stream.in_ring.is_empty());
    let delivered_during = ctx.stream.delivered;

    // After the scribbler: every record produced is delivered, with no error and no recovery.
    let accepted_before = ctx.stream.accepted;
    while ctx.stream.accepted - accepted_before < AFTER_RECORDS {
        ctx.iteration += 1;
        ctx.stream.produce(ctx.iteration);
        step(&mut reader, &mut ctx);
    }
    step(&mut reader, &mut ctx);
    let after = &ctx.tally;
    let verified_after = ctx.stream.delivered - delivered_during;

    eprintln!(
        "{api:?} reader, scribbled by a second process (seed {seed:#x}): {} scribbles ({}); \
         {} reads: {} with none in the way (all records delivered), {} with one in place \
         (all reported), {} racing one; errors {:?}; {} waits timed out on an empty ring; \
         recoveries: {} resume, {} resume refused then resync, {} follow then resync; {} \
         writes during a lent batch, none overwritten; records: {} produced, {} verified, {} \
         skipped by resync ({} after a refused resume, {} after a follow); longest call {:?} \
         ({:?} not counting held batches). After the scribbler exited: {} records \
         verified in {} reads, errors {:?}, recoveries {}.",
        scribbles.total,
        scribbles.by_pattern,
        during.reads,
        during.quiet_clean,
        during.quiet_scribbled,
        during.racing,
        during.errors,
        during.timeouts,
        during.resumes,
        during.resumes_refused,
        during.follows,
        during.writes_during_batch,
        accepted_before,
        delivered_during,
        lost,
        during.skipped_refused,
        during.skipped_followed,
        during.longest_call.max(after.longest_call),
        during.longest_unheld.max(after.longest_unheld),
        verified_after,
        after.reads,
        after.errors,
        after.recoveries(),
    );
    // The scribbler really scribbled, and the reader really saw it.
    assert!(scribbles.total >= 20, "only {} scribbles", scribbles.total);
    assert!(during
        .errors
        .get("ConsumerPosMoved")
        .is_some_and(|&n| n > 0));
    assert!(during.resumes > 0);
    assert_eq!(during.resyncs, during.resumes_refused + during.follows);
    if api != Api::Copy {
        assert!(
            during.writes_during_batch > 0,
            "no batch held across a write"
        );
    }
    // Nothing lost but what resync skipped; nothing at all after the scribbler.
    assert_eq!(delivered_during + lost, accepted_before);
    assert_eq!(lost, during.skipped_refused + during.skipped_followed);
    assert_eq!(verified_after, ctx.stream.accepted - accepted_before);
    assert!(verified_after >= AFTER_RECORDS);
    assert!(
        after.errors.is_empty(),
        "errors after the scribbler: {:?}",
        after.errors
    );
    assert_eq!(after.recoveries(), 0);
    assert_eq!(after.quiet_clean, after.reads);
    assert!(ctx.stream.in_ring.is_empty());
    assert_eq!(ctx.watch.consumer_pos(), ctx.watch.producer_pos());
}

#[test]
fn batches_survive_a_second_process_scribbling_consumer_pos() {
    require_kernel!();
    scribbled(Api::Batch, 0x5eed_0001);
}

#[test]
fn callbacks_survive_a_second_process_scribbling_consumer_pos() {
    require_kernel!();
    scribbled(Api::Consume, 0x5eed_0002);
}

#[test]
fn copies_survive_a_second_process_scribbling_consumer_pos() {
    require_kernel!();
    scribbled(Api::Copy, 0x5eed_0003);
}

#[test]
fn the_poller_survives_a_second_process_scribbling_consumer_pos() {
    require_kernel!();
    scribbled(Api::Poller, 0x5eed_0004);
}

#[cfg(feature = "tokio")]
#[test]
fn the_async_reader_survives_a_second_process_scribbling_consumer_pos() {
    require_kernel!();
    scribbled(Api::Async, 0x5eed_0005);
}

// ---------------------------------------------------------------------------------------------
// Waiting under signals. Each of these tests runs alone in a process of its own
// (`kit::in_own_process`): the stops would reach every other test of this binary.

/// The timeout of the waits under signals.
const WAIT: Duration = Duration::from_millis(500);
/// The longest they may take: a wait that restarted its timeout after each `EINTR` would
/// not end while the signals go on (the signaller stops only once the wait has returned).
const WAIT_BOUND: Duration = Duration::from_millis(1500);

/// A child shell that stops this process for 20 ms every 100 ms (`kill -STOP`, `kill
/// -CONT`) until its flag file is removed; on Linux each stop and continue makes a blocking
/// `epoll_wait` fail with `EINTR`. It always continues what it stopped, and gives up after
/// 100 rounds.
struct Signaller {
    child: Child,
    stdout: BufReader<ChildStdout>,
    flag: PathBuf,
}

impl Signaller {
    fn start(tag: &str) -> Self {
        let flag = std::env::temp_dir().join(format!(
            "bpf-ringbuf-signaller-{}-{tag}",
            std::process::id()
        ));
        std::fs::write(&flag, b"").expect("create the signaller's flag file");
        let script = r#"
            echo go
            n=0
            while [ -e "$2" ] && [ "$n" -lt 100 ]; do
                kill -STOP "$1" || exit 0
                sleep 0.02
                kill -CONT "$1"
                echo stopped
                n=$((n + 1))
                sleep 0.08
            done
        "#;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("signaller")
            .arg(std::process::id().to_string())
            .arg(&flag)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the signaller (sh)");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("the signaller's first line");
        assert_eq!(line.trim(), "go");
        Self {
            child,
            stdout,
            flag,
        }
    }

    /// Stops it; returns how many times it stopped this process.
    fn stop(mut self) -> usize {
        let _ = std::fs::remove_file(&self.flag);
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        assert!(self.child.wait().unwrap().success());
        rest.lines().filter(|line| *line == "stopped").count()
    }
}

impl Drop for Signaller {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.flag);
        let _ = self.child.wait();
    }
}

/// Runs `wait` under a [`Signaller`]; returns its result, how long it took and how many
/// stops the signaller made.
fn under_signals<R>(tag: &str, wait: impl FnOnce() -> R) -> (R, Duration, usize) {
    let signaller = Signaller::start(tag);
    let started = Instant::now();
    let result = wait();
    let took = started.elapsed();
    let stops = signaller.stop();
    (result, took, stops)
}

fn check_waited(what: &str, took: Duration, stops: usize, sleeps: u64, wakeups: u64) {
    eprintln!(
        "{what}: {WAIT:?} timeout under SIGSTOP/SIGCONT every 100 ms returned after {took:?} \
         ({stops} stops sent, {sleeps} epoll sleeps, {wakeups} kernel wakeups)"
    );
    assert!(took >= WAIT, "{what} returned before its timeout: {took:?}");
    assert!(
        took < WAIT_BOUND,
        "{what} took {took:?}: signals extended the timeout"
    );
    // Without signals the wait is one sleep to the deadline; each EINTR ends one early.
    assert!(sleeps > 1, "{what}: the signals never interrupted the wait");
    assert_eq!(wakeups, 0, "{what}: nothing should have signalled the ring");
}

#[test]
fn ring_wait_ends_at_its_deadline_under_signals() {
    require_kernel!();
    if kit::in_own_process("hostile::ring_wait_ends_at_its_deadline_under_signals") {
        return;
    }
    let map = kit::ringbuf_map(page());
    let mut ring = RingBuf::new(&map).unwrap();
    let before = ring.wait_stats();
    let (outcome, took, stops) = under_signals("wait", || ring.wait(Some(WAIT)));
    assert_eq!(outcome.unwrap(), WaitOutcome::TimedOut);
    let after = ring.wait_stats();
    check_waited(
        "RingBuf::wait on an empty ring",
        took,
        stops,
        after.sleeps - before.sleeps,
        after.wakeups - before.wakeups,
    );
}

/// A user ring filled until it refuses.
fn full_user_ring(map: &OwnedFd) -> UserRingBuf {
    let ring = UserRingBuf::new(map).unwrap();
    while ring.reserve(8).map(|sample| sample.submit()).is_ok() {}
    assert!(matches!(ring.reserve(8), Err(ReserveError::NoSpace { .. })));
    ring
}

#[test]
fn poll_ends_at_its_deadline_under_signals() {
    require_kernel!();
    if kit::in_own_process("hostile::poll_ends_at_its_deadline_under_signals") {
        return;
    }
    require_feature!(kit::user_ringbuf_missing());
    let ring_map = kit::ringbuf_map(page());
    let user_map = kit::user_ringbuf_map(page());
    let mut poller = Poller::new().unwrap();
    poller.add_ring(RingBuf::new(&ring_map).unwrap()).unwrap();
    poller.add_user_ring(full_user_ring(&user_map), 8).unwrap();
    // Take what registering the rings queued; afterwards nothing signals them.
    assert_eq!(
        poller
            .poll(Some(Duration::from_millis(50)), |_, _| unreachable!())
            .unwrap(),
        PollOutcome::TimedOut
    );
    let before = poller.wait_stats();
    let (outcome, took, stops) =
        under_signals("poll", || poller.poll(Some(WAIT), |_, _| unreachable!()));
    assert_eq!(outcome.unwrap(), PollOutcome::TimedOut);
    let after = poller.wait_stats();
    check_waited(
        "Poller::poll on an empty ring and a full user ring",
        took,
        stops,
        after.sleeps - before.sleeps,
        after.wakeups - before.wakeups,
    );
}

#[test]
fn reserve_timeout_ends_at_its_deadline_under_signals() {
    require_kernel!();
    if kit::in_own_process("hostile::reserve_timeout_ends_at_its_deadline_under_signals") {
        return;
    }
    require_feature!(kit::user_ringbuf_missing());
    let map = kit::user_ringbuf_map(page());
    let ring = full_user_ring(&map);
    // Take the edge epoll reports for the fd, writable when it was registered.
    assert!(matches!(
        ring.reserve_timeout(8, Some(Duration::from_millis(50))),
        Err(Error::Reserve(ReserveError::NoSpace { .. }))
    ));
    let before = ring.wait_stats();
    let (outcome, took, stops) = under_signals("reserve", || {
        ring.reserve_timeout(8, Some(WAIT))
            .map(|sample| sample.discard())
    });
    match outcome {
        Err(Error::Reserve(ReserveError::NoSpace { .. })) => {}
        other => panic!("expected NoSpace at the deadline, got {other:?}"),
    }
    let after = ring.wait_stats();
    check_waited(
        "UserRingBuf::reserve_timeout on a full user ring",
        took,
        stops,
        after.sleeps - before.sleeps,
        after.wakeups - before.wakeups,
    );
}
