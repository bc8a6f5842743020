//! RINGBUF against PERF_EVENT_ARRAY: the same kernel event stream from both CPUs into one
//! ring buffer read by this crate, and into per-CPU perf buffers read by libbpf's
//! `perf_buffer`.
//!
//! The producers are tc programs that emit one 64-byte event each run (`bpf_ringbuf_output`,
//! or `bpf_perf_event_output(.., BPF_F_CURRENT_CPU, ..)`), both copying it from the stack.
//! Each event carries a sequence number from one counter shared by the CPUs. Two threads,
//! pinned to CPU 0 and CPU 1, take turns: one runs a burst of [`BURST`] events in the kernel,
//! then hands over to the other, so the events of each burst happen after those of the one
//! before it. The consumer thread (not pinned: it runs wherever a producer is not) waits with
//! epoll and reads; an event whose number is below one it already read arrived out of order.
//!
//! The burst experiment sizes the buffers: producers emit a burst while nobody reads, into
//! the smallest buffers (powers of two, as both map types require) that lose nothing.

use std::ffi::c_void;
use std::fmt::Write as _;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bpf_ringbuf::RingBuf;
use bpf_ringbuf_sys::rustix::time::{clock_gettime, ClockId};
use bpf_ringbuf_sys::{map_create, MapCreate, MapType};
use bpf_ringbuf_testkit as kit;
use bpf_ringbuf_testkit::insn::{
    self, helper, AluOp, JmpOp, MemSize, Program, R0, R1, R10, R2, R3, R4, R5, R6, R8, R9,
};
use bpf_ringbuf_testkit::{prog_load, ProgLoad, ProgType};

use crate::drain::run_tc;
use crate::{median, Options};

/// Payload bytes per event.
pub const EVENT_LEN: usize = 64;
/// Events per burst of one producer before it hands over to the other CPU.
pub const BURST: u32 = 256;
/// Memory of the streaming comparison: the ring, and the perf buffers of all CPUs together.
const STREAM_MEMORY: usize = 16 << 20;
/// Events in the burst experiment.
pub const BURST_EVENTS: u32 = 7000;
/// `bpf_perf_event_output`.
const PERF_EVENT_OUTPUT: u32 = 25;

/// The two transports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// One `BPF_MAP_TYPE_RINGBUF`, read by `RingBuf::wait` and a batch.
    Ringbuf,
    /// `BPF_MAP_TYPE_PERF_EVENT_ARRAY`, read by libbpf `perf_buffer__poll` with its default
    /// wakeup for every event.
    Perfbuf,
    /// The same with `perf_buffer_opts.sample_period = 64`: a wakeup every 64 events.
    Perfbuf64,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Ringbuf => "RINGBUF, ours (wait + batch)",
            Transport::Perfbuf => "PERF_EVENT_ARRAY, libbpf perf_buffer__poll",
            Transport::Perfbuf64 => "PERF_EVENT_ARRAY, perf_buffer__poll, wakeup per 64 events",
        }
    }
}

/// A tc program emitting one event: `u64` sequence number (a shared counter in `sequence`,
/// incremented each run), `u32` CPU, zeros. A failed output increments `drops[cpu]`.
fn producer(
    transport: Transport,
    target: BorrowedFd<'_>,
    sequence: BorrowedFd<'_>,
    drops: BorrowedFd<'_>,
) -> OwnedFd {
    let event = -(EVENT_LEN as i16) - 8;
    let mut p = Program::new();
    p.push(insn::mov64_reg(R6, R1))
        .lookup_first_elem(sequence, "fail")
        .push(insn::mov64_reg(R9, R0))
        .push(insn::ldx_mem(MemSize::DW, R8, R9, 0))
        .push(insn::alu64_imm(AluOp::ADD, R8, 1))
        .push(insn::stx_mem(MemSize::DW, R9, R8, 0))
        .push(insn::stx_mem(MemSize::DW, R10, R8, event));
    for word in 1..EVENT_LEN as i16 / 8 {
        p.push(insn::st_mem(MemSize::DW, R10, event + 8 * word, 0));
    }
    p.push(insn::call_helper(helper::GET_SMP_PROCESSOR_ID))
        .push(insn::stx_mem(MemSize::W, R10, R0, event + 8));
    match transport {
        Transport::Ringbuf => {
            p.extend(insn::ld_map_fd(R1, target))
                .push(insn::mov64_reg(R2, R10))
                .push(insn::alu64_imm(AluOp::ADD, R2, i32::from(event)))
                .push(insn::mov64_imm(R3, EVENT_LEN as i32))
                .push(insn::mov64_imm(R4, 0))
                .push(insn::call_helper(helper::RINGBUF_OUTPUT));
        }
        Transport::Perfbuf | Transport::Perfbuf64 => {
            p.push(insn::mov64_reg(R1, R6))
                .extend(insn::ld_map_fd(R2, target))
                // BPF_F_CURRENT_CPU: 0xffffffff (a 32-bit move zero-extends).
                .push(insn::alu32_imm(AluOp::MOV, R3, -1))
                .push(insn::mov64_reg(R4, R10))
                .push(insn::alu64_imm(AluOp::ADD, R4, i32::from(event)))
                .push(insn::mov64_imm(R5, EVENT_LEN as i32))
                .push(insn::call_helper(PERF_EVENT_OUTPUT));
        }
    }
    p.jmp_imm_label(JmpOp::JEQ, R0, 0, "done")
        .lookup_first_elem(drops, "fail")
        .push(insn::ldx_mem(MemSize::DW, R1, R0, 0))
        .push(insn::alu64_imm(AluOp::ADD, R1, 1))
        .push(insn::stx_mem(MemSize::DW, R0, R1, 0))
        .label("done")
        .push(insn::mov64_imm(R0, 0))
        .push(insn::exit())
        .label("fail")
        .push(insn::mov64_imm(R0, 2))
        .push(insn::exit());
    let insns = p.build().expect("assemble event producer");
    prog_load(&ProgLoad::new(ProgType::SCHED_CLS, &insns, c"GPL")).expect("load event producer")
}

/// What the consumer saw.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    events: u64,
    /// Events whose sequence number is below the highest one read before them.
    out_of_order: u64,
    highest: u64,
}

impl Seen {
    #[inline]
    fn event(&mut self, event: &[u8]) {
        let sequence = u64::from_ne_bytes(event[..8].try_into().expect("an event"));
        self.events += 1;
        if sequence < self.highest {
            self.out_of_order += 1;
        } else {
            self.highest = sequence;
        }
    }
}

/// libbpf's `perf_buffer` over a PERF_EVENT_ARRAY.
struct PerfBuffer {
    buffer: *mut libbpf_sys::perf_buffer,
    /// The callbacks' context, from `Box::into_raw`, freed in `Drop`; used by the callbacks
    /// during libbpf calls and by us between them.
    seen: *mut (Seen, u64),
}

unsafe extern "C" fn perf_sample(ctx: *mut c_void, _cpu: i32, data: *mut c_void, size: u32) {
    // SAFETY: `ctx` is `PerfBuffer::seen`, not otherwise in use during the call; libbpf hands
    // `size` readable bytes at `data`.
    unsafe {
        let record = std::slice::from_raw_parts(data.cast::<u8>(), size as usize);
        (*ctx.cast::<(Seen, u64)>()).0.event(record);
    }
}

unsafe extern "C" fn perf_lost(ctx: *mut c_void, _cpu: i32, count: u64) {
    // SAFETY: as in `perf_sample`.
    unsafe { (*ctx.cast::<(Seen, u64)>()).1 += count };
}

impl PerfBuffer {
    /// `perf_buffer__new(map, pages_per_cpu, ..)`, a wakeup every `wakeup` events (libbpf's
    /// default is 1).
    fn new(map: BorrowedFd<'_>, pages_per_cpu: usize, wakeup: u32) -> PerfBuffer {
        let seen = Box::into_raw(Box::new((Seen::default(), 0u64)));
        let opts = libbpf_sys::perf_buffer_opts {
            sz: std::mem::size_of::<libbpf_sys::perf_buffer_opts>() as libbpf_sys::size_t,
            sample_period: wakeup,
            ..Default::default()
        };
        // SAFETY: a valid PERF_EVENT_ARRAY fd; the callbacks' context outlives the buffer;
        // the options outlive the call.
        let buffer = unsafe {
            libbpf_sys::perf_buffer__new(
                map.as_raw_fd(),
                pages_per_cpu as libbpf_sys::size_t,
                Some(perf_sample),
                Some(perf_lost),
                seen.cast(),
                &opts,
            )
        };
        assert!(!buffer.is_null(), "perf_buffer__new failed");
        PerfBuffer { buffer, seen }
    }

    fn poll(&mut self, timeout_ms: i32) {
        // SAFETY: a live perf_buffer.
        let n = unsafe { libbpf_sys::perf_buffer__poll(self.buffer, timeout_ms) };
        assert!(n >= 0, "perf_buffer__poll: {n}");
    }

    fn consume(&mut self) {
        // SAFETY: a live perf_buffer.
        let n = unsafe { libbpf_sys::perf_buffer__consume(self.buffer) };
        assert!(n >= 0, "perf_buffer__consume: {n}");
    }

    fn seen(&self) -> (Seen, u64) {
        // SAFETY: outside libbpf calls nobody else uses the context.
        unsafe { self.seen.read() }
    }
}

impl Drop for PerfBuffer {
    fn drop(&mut self) {
        // SAFETY: created by perf_buffer__new, freed once; then its context.
        unsafe {
            libbpf_sys::perf_buffer__free(self.buffer);
            drop(Box::from_raw(self.seen));
        }
    }
}

/// The maps and programs of one transport.
struct Setup {
    target: OwnedFd,
    sequence: OwnedFd,
    drops: OwnedFd,
    program: Arc<OwnedFd>,
}

impl Setup {
    /// A ring of `bytes`, or perf buffers of `bytes / CPUs` each (whole pages).
    fn new(transport: Transport, bytes: usize) -> Setup {
        let target = match transport {
            Transport::Ringbuf => kit::ringbuf_map(bytes),
            Transport::Perfbuf | Transport::Perfbuf64 => map_create(&MapCreate::new(
                MapType::PERF_EVENT_ARRAY,
                4,
                4,
                kit::possible_cpus() as u32,
            ))
            .expect("create PERF_EVENT_ARRAY"),
        };
        let sequence = kit::array_map(8);
        let drops = kit::percpu_counter_map();
        let program = producer(transport, target.as_fd(), sequence.as_fd(), drops.as_fd());
        Setup {
            target,
            sequence,
            drops,
            program: Arc::new(program),
        }
    }

    fn drops(&self) -> u64 {
        kit::percpu_counters(self.drops.as_fd()).iter().sum()
    }

    fn produced(&self) -> u64 {
        let mut value = [0u8; 8];
        bpf_ringbuf_sys::map_lookup_elem(self.sequence.as_fd(), &0u32.to_ne_bytes(), &mut value)
            .expect("read the sequence counter");
        u64::from_ne_bytes(value)
    }
}

/// One streaming run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stream {
    events: u64,
    seconds: f64,
    cpu_seconds: f64,
    out_of_order: u64,
    drops: u64,
}

fn thread_cpu_seconds() -> f64 {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Two producer threads taking turns, `bursts` bursts in all; returns when they are done.
fn spawn_producers(program: Arc<OwnedFd>, bursts: u32) -> Vec<std::thread::JoinHandle<()>> {
    let turn = Arc::new((Mutex::new((0usize, 0u32)), Condvar::new()));
    let cpus = crate::cpus();
    (0..2)
        .map(|me| {
            let turn = turn.clone();
            let program = program.clone();
            std::thread::spawn(move || {
                if cpus > 1 {
                    kit::pin_to_cpu(me);
                }
                let (lock, changed) = &*turn;
                loop {
                    let mut state = lock.lock().unwrap();
                    while state.0 != me && state.1 < bursts {
                        state = changed.wait(state).unwrap();
                    }
                    if state.1 >= bursts {
                        return;
                    }
                    drop(state);
                    run_tc(program.as_fd(), BURST);
                    let mut state = lock.lock().unwrap();
                    state.0 = 1 - me;
                    state.1 += 1;
                    changed.notify_all();
                }
            })
        })
        .collect()
}

fn stream(transport: Transport, events: u32) -> Stream {
    let setup = Setup::new(transport, STREAM_MEMORY);
    let pages = STREAM_MEMORY / kit::page_size() / kit::possible_cpus();
    let mut ours = (transport == Transport::Ringbuf)
        .then(|| RingBuf::new(&setup.target).expect("open RingBuf"));
    let wakeup = if transport == Transport::Perfbuf64 {
        64
    } else {
        1
    };
    let mut perf = (transport != Transport::Ringbuf)
        .then(|| PerfBuffer::new(setup.target.as_fd(), pages, wakeup));
    let bursts = events.div_ceil(BURST);
    let total = u64::from(bursts * BURST);
    let start = Instant::now();
    let cpu_start = thread_cpu_seconds();
    let producers = spawn_producers(setup.program.clone(), bursts);
    let mut seen = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (events, lost) = match (&mut ours, &mut perf) {
            (Some(ring), _) => {
                ring.wait(Some(Duration::from_millis(20))).expect("wait");
                for record in &ring.batch() {
                    seen.event(record.expect("ring is not corrupt"));
                }
                (seen.events, 0)
            }
            (_, Some(perf)) => {
                perf.poll(20);
                let (s, lost) = perf.seen();
                seen = s;
                (s.events, lost)
            }
            _ => unreachable!(),
        };
        let _ = lost;
        if events + setup.drops() >= total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}: events missing",
            transport.name()
        );
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = thread_cpu_seconds() - cpu_start;
    for producer in producers {
        producer.join().expect("producer thread");
    }
    // A failed output is counted by the program (the perf buffer's own lost-record count,
    // `perf_lost`, counts the same events again).
    let drops = setup.drops();
    assert_eq!(setup.produced(), total, "every run numbered an event");
    assert_eq!(
        seen.events + drops,
        total,
        "{}: events lost",
        transport.name()
    );
    Stream {
        events: seen.events,
        seconds,
        cpu_seconds,
        out_of_order: seen.out_of_order,
        drops,
    }
}

/// The smallest buffer (bytes of data pages) that takes a burst of [`BURST_EVENTS`] events
/// without a drop while nobody reads, the events coming from CPU 0 only (`one_cpu`) or half
/// from each CPU.
fn burst_memory(transport: Transport, one_cpu: bool) -> usize {
    let page = kit::page_size();
    let cpus = kit::possible_cpus();
    let cpus_used = if one_cpu || crate::cpus() < 2 { 1 } else { 2 };
    for shift in 0..16 {
        let pages = 1usize << shift;
        let bytes = match transport {
            Transport::Ringbuf => pages * page,
            Transport::Perfbuf | Transport::Perfbuf64 => pages * page * cpus,
        };
        let setup = Setup::new(transport, bytes.max(page));
        let perf = (transport != Transport::Ringbuf)
            .then(|| PerfBuffer::new(setup.target.as_fd(), pages, 1));
        let per_cpu = BURST_EVENTS / cpus_used as u32;
        let threads: Vec<_> = (0..cpus_used)
            .map(|cpu| {
                let program = setup.program.clone();
                std::thread::spawn(move || {
                    kit::pin_to_cpu(cpu);
                    run_tc(program.as_fd(), per_cpu);
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("burst producer");
        }
        let lost = perf.as_ref().map_or(0, |p| p.seen().1);
        if setup.drops() + lost == 0 {
            if let Some(mut perf) = perf {
                perf.consume();
                assert_eq!(perf.seen().0.events, u64::from(per_cpu) * cpus_used as u64);
            }
            return bytes;
        }
    }
    panic!(
        "{}: no buffer up to 2^15 pages takes the burst",
        transport.name()
    );
}

/// Streams and burst sizes of both transports.
pub struct Results {
    streams: Vec<(Transport, Vec<Stream>)>,
    /// (transport, one CPU?, bytes).
    memory: Vec<(Transport, bool, usize)>,
}

/// Medians of `reps` (at most 15) alternating streams of 500k events each, and the burst
/// experiment. (libbpf's perf buffer wakes its reader for every event, ~10 µs of consumer
/// time each: a longer stream takes minutes.)
pub fn run(options: &Options) -> Results {
    run_with(options, 500_000)
}

/// As [`run`], with `events` events per stream.
pub fn run_with(options: &Options, events: u32) -> Results {
    let transports = [Transport::Ringbuf, Transport::Perfbuf, Transport::Perfbuf64];
    let mut streams = transports.map(|t| (t, Vec::new())).to_vec();
    for rep in 0..options.reps.clamp(1, 15) {
        for k in 0..transports.len() {
            let index = (k + rep) % transports.len();
            let result = stream(streams[index].0, events);
            streams[index].1.push(result);
        }
    }
    let mut memory = Vec::new();
    for one_cpu in [false, true] {
        for transport in [Transport::Ringbuf, Transport::Perfbuf] {
            memory.push((transport, one_cpu, burst_memory(transport, one_cpu)));
        }
    }
    eprintln!("perfbuf: done");
    Results { streams, memory }
}

/// The RINGBUF against PERF_EVENT_ARRAY table.
pub fn report(results: &Results) -> String {
    let mut out = String::new();
    writeln!(
        out,
        "\n## RINGBUF against PERF_EVENT_ARRAY: {EVENT_LEN} B events from both CPUs, bursts of {BURST} taking turns (median)\n"
    )
    .unwrap();
    writeln!(
        out,
        "| transport | events/run | M events/s | consumer CPU ns/event | out-of-order events/run | drops/run | memory for zero drops, {BURST_EVENTS}-event burst from both CPUs | from one CPU |"
    )
    .unwrap();
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|").unwrap();
    for (transport, runs) in &results.streams {
        let m = |f: &dyn Fn(&Stream) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
        let memory = |one_cpu: bool| {
            results
                .memory
                .iter()
                .find(|m| m.0 == *transport && m.1 == one_cpu)
                .map_or("-".into(), |m| format!("{} KiB", m.2 >> 10))
        };
        writeln!(
            out,
            "| {} | {:.0} | {:.2} | {:.1} | {:.0} | {:.0} | {} | {} |",
            transport.name(),
            m(&|s| s.events as f64),
            m(&|s| s.events as f64 / s.seconds / 1e6),
            m(&|s| s.cpu_seconds * 1e9 / s.events as f64),
            m(&|s| s.out_of_order as f64),
            m(&|s| s.drops as f64),
            memory(false),
            memory(true),
        )
        .unwrap();
    }
    out
}
