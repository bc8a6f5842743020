//! RINGBUF producers: XDP programs that write records into a ring map when run with
//! `BPF_PROG_TEST_RUN`, and what their records contain.

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use bpf_ringbuf_sys::{map_lookup_elem, BpfError};

use crate::bpf::FuncInfo;
use crate::btf::btf_load;
use crate::btf::{BtfBuilder, FuncLinkage};
use crate::insn::{
    self, helper, AluOp, JmpOp, MemSize, Program, R0, R1, R2, R3, R4, R6, R7, R8, R9,
};
use crate::maps::array_map;
use crate::maps::page_size;
use crate::maps::set_array_value;
use crate::prog::prog_load;
use crate::prog::prog_test_run;
use crate::prog::ProgLoad;
use crate::prog::ProgType;
use crate::prog::TestRun;
use crate::prog::TestRunOutput;
use crate::XDP_PASS;

const GPL: &CStr = c"GPL";

pub(crate) fn load_xdp(
    program: &Program,
    btf: Option<(&OwnedFd, &[FuncInfo])>,
) -> Result<OwnedFd, BpfError> {
    let insns = program.build().expect("assemble program");
    let mut load = ProgLoad::new(ProgType::XDP, &insns, GPL);
    if let Some((btf_fd, func_info)) = btf {
        load.btf_fd = Some(btf_fd.as_fd());
        load.func_info = func_info;
    }
    prog_load(&load)
}

/// BTF for a program made of a main function and one static callback subprogram, as the
/// verifier requires for bpf_loop and bpf_user_ringbuf_drain callbacks. Returns the BTF fd
/// and the two func_info records (main at instruction 0, callback at `callback_insn`).
pub fn btf_main_and_callback(callback_insn: u32) -> (OwnedFd, [FuncInfo; 2]) {
    let mut btf = BtfBuilder::new();
    let int = btf.int("int", 4, true);
    let ptr = btf.ptr(0);
    let main_proto = btf.func_proto(int, &[("ctx", ptr)]);
    let callback_proto = btf.func_proto(int, &[("a", ptr), ("b", ptr)]);
    let main = btf.func("main", main_proto, FuncLinkage::Global);
    let callback = btf.func("callback", callback_proto, FuncLinkage::Static);
    let fd = btf_load(&btf.build()).expect("load BTF");
    (
        fd,
        [
            FuncInfo {
                insn_off: 0,
                type_id: main,
            },
            FuncInfo {
                insn_off: callback_insn,
                type_id: callback,
            },
        ],
    )
}

/// A loaded XDP program; [`Producer::run`] executes it with `BPF_PROG_TEST_RUN`.
pub struct Producer {
    fd: OwnedFd,
    packet: Vec<u8>,
}

impl Producer {
    /// Runs the program `repeat` times (at least once) in the kernel, on the calling CPU.
    pub fn run(&self, repeat: u32) -> TestRunOutput {
        let output = prog_test_run(
            self.fd.as_fd(),
            &TestRun {
                data_in: &self.packet,
                repeat,
                ..TestRun::default()
            },
        )
        .expect("BPF_PROG_TEST_RUN");
        assert_eq!(output.retval, XDP_PASS, "producer program failed");
        output
    }

    /// Replaces the test packet (the payload source of packet-copying programs).
    pub fn set_packet(&mut self, packet: Vec<u8>) {
        self.packet = packet;
    }

    /// The program fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

pub(crate) fn packet(len: usize) -> Vec<u8> {
    (0..len.max(64)).map(|i| (i * 7 + 3) as u8).collect()
}

/// `bpf_ringbuf_output(ring, &payload[0], len, flags)`: each run emits one `len`-byte record
/// whose bytes are element 0 of the array map `payload` (at least `len` bytes long).
pub fn output_from_array(
    ring: BorrowedFd<'_>,
    payload: BorrowedFd<'_>,
    len: u32,
    flags: u64,
) -> Producer {
    let mut p = Program::new();
    p.lookup_first_elem(payload, "fail")
        .push(insn::mov64_reg(R2, R0))
        .extend(insn::ld_map_fd(R1, ring))
        .push(insn::mov64_imm(R3, len as i32))
        .push(insn::mov64_imm(R4, flags as i32))
        .push(insn::call_helper(helper::RINGBUF_OUTPUT))
        .jmp_imm_label(JmpOp::JNE, R0, 0, "fail")
        .push(insn::mov64_imm(R0, XDP_PASS as i32))
        .push(insn::exit())
        .label("fail")
        .push(insn::mov64_imm(R0, 0))
        .push(insn::exit());
    Producer {
        fd: load_xdp(&p, None).expect("load output program"),
        packet: packet(64),
    }
}

/// What a [`stamped`] producer does with its reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// `bpf_ringbuf_submit`.
    Submit,
    /// `bpf_ringbuf_discard`.
    Discard,
}

/// Layout of a [`stamped`] record: `u64 sequence` (per CPU, from 1), `u32 cpu`, `u32 len`,
/// then `len - 16` bytes copied from the test packet.
pub const STAMP_LEN: usize = 16;

/// Decodes a [`stamped`] record: (cpu, sequence).
pub fn stamp(record: &[u8]) -> (u32, u64) {
    let sequence = u64::from_ne_bytes(record[..8].try_into().unwrap());
    let cpu = u32::from_ne_bytes(record[8..12].try_into().unwrap());
    (cpu, sequence)
}

/// A producer that reserves `len >= 16` bytes, stamps the record with the CPU and a per-CPU
/// sequence number (counted in `sequence`, a [`percpu_counter_map`](crate::percpu_counter_map), only for successful
/// reservations), copies the rest from the test packet with `bpf_xdp_load_bytes`, and commits
/// it with `flags`. A failed reservation increments `drops` (another per-CPU counter): the
/// usual way BPF programs count lost events.
pub fn stamped(
    ring: BorrowedFd<'_>,
    sequence: BorrowedFd<'_>,
    drops: BorrowedFd<'_>,
    len: u32,
    commit: Commit,
    flags: u64,
) -> Producer {
    assert!(len as usize >= STAMP_LEN);
    let mut p = Program::new();
    p.push(insn::mov64_reg(R6, R1))
        // r9 = &sequence[cpu]
        .lookup_first_elem(sequence, "fail")
        .push(insn::mov64_reg(R9, R0))
        // r7 = reserve(ring, len)
        .extend(insn::ld_map_fd(R1, ring))
        .push(insn::mov64_imm(R2, len as i32))
        .push(insn::mov64_imm(R3, 0))
        .push(insn::call_helper(helper::RINGBUF_RESERVE))
        .jmp_imm_label(JmpOp::JEQ, R0, 0, "dropped")
        .push(insn::mov64_reg(R7, R0))
        // r8 = ++sequence
        .push(insn::ldx_mem(MemSize::DW, R8, R9, 0))
        .push(insn::alu64_imm(AluOp::ADD, R8, 1))
        .push(insn::stx_mem(MemSize::DW, R9, R8, 0))
        .push(insn::stx_mem(MemSize::DW, R7, R8, 0))
        .push(insn::call_helper(helper::GET_SMP_PROCESSOR_ID))
        .push(insn::stx_mem(MemSize::W, R7, R0, 8))
        .push(insn::st_mem(MemSize::W, R7, 12, len as i32));
    if len as usize > STAMP_LEN {
        p.push(insn::mov64_reg(R1, R6))
            .push(insn::mov64_imm(R2, 0))
            .push(insn::mov64_reg(R3, R7))
            .push(insn::alu64_imm(AluOp::ADD, R3, STAMP_LEN as i32))
            .push(insn::mov64_imm(R4, len as i32 - STAMP_LEN as i32))
            .push(insn::call_helper(helper::XDP_LOAD_BYTES))
            // A failed copy leaves the bytes as they were: the test will see it.
            ;
    }
    let commit_helper = match commit {
        Commit::Submit => helper::RINGBUF_SUBMIT,
        Commit::Discard => helper::RINGBUF_DISCARD,
    };
    commit_or_count_drop(&mut p, commit_helper, flags, drops);
    Producer {
        fd: load_xdp(&p, None).expect("load stamped producer"),
        packet: packet(len as usize),
    }
}

/// Layout of a [`ktime_stamped`] record: `u64 stamp` (`bpf_ktime_get_ns()`, taken before the
/// reservation), `u64 sequence` (per CPU, from 1, counted only for successful reservations),
/// `u32 cpu`, `u32 delay` (with `measure_delay`: nanoseconds from the stamp to a second
/// `bpf_ktime_get_ns()` right before the submit, saturated at `u32::MAX`; otherwise zero).
pub const KTIME_STAMP_LEN: usize = 24;

/// The `delay` word of a [`ktime_stamped`] record (see [`KTIME_STAMP_LEN`]).
pub fn ktime_delay(record: &[u8]) -> u32 {
    u32::from_ne_bytes(record[20..24].try_into().unwrap())
}

/// The end of the stamped producers: commits the reservation in R7 with `commit_helper` and
/// `flags` and returns `XDP_PASS`; at label `dropped` (a failed reservation) adds one to this
/// CPU's counter in `drops`.
fn commit_or_count_drop(p: &mut Program, commit_helper: u32, flags: u64, drops: BorrowedFd<'_>) {
    p.push(insn::mov64_reg(R1, R7))
        .push(insn::mov64_imm(R2, flags as i32))
        .push(insn::call_helper(commit_helper))
        .push(insn::mov64_imm(R0, XDP_PASS as i32))
        .push(insn::exit())
        // drops[cpu] += 1
        .label("dropped")
        .lookup_first_elem(drops, "fail")
        .push(insn::ldx_mem(MemSize::DW, R1, R0, 0))
        .push(insn::alu64_imm(AluOp::ADD, R1, 1))
        .push(insn::stx_mem(MemSize::DW, R0, R1, 0))
        .push(insn::mov64_imm(R0, XDP_PASS as i32))
        .push(insn::exit())
        .label("fail")
        .push(insn::mov64_imm(R0, 0))
        .push(insn::exit());
}

/// Decodes a [`ktime_stamped`] record: (stamp, cpu, sequence).
pub fn ktime_stamp(record: &[u8]) -> (u64, u32, u64) {
    let stamp = u64::from_ne_bytes(record[..8].try_into().unwrap());
    let sequence = u64::from_ne_bytes(record[8..16].try_into().unwrap());
    let cpu = u32::from_ne_bytes(record[16..20].try_into().unwrap());
    (stamp, cpu, sequence)
}

/// A producer as tracing programs are written: `ts = bpf_ktime_get_ns()` first, then some
/// work (`work` iterations of an empty `bpf_loop`, as a program collecting its event's
/// fields would spend), then `bpf_ringbuf_reserve` of a [`KTIME_STAMP_LEN`]-byte record,
/// filled with the stamp, the next per-CPU sequence number (counted in `sequence`, a
/// [`percpu_counter_map`](crate::percpu_counter_map), only for successful reservations) and the CPU, then submitted with
/// `flags`. A failed reservation increments `drops` (another per-CPU counter). Stamping before
/// reserving is the order that makes merging per-CPU rings hard: a record stamped earlier may
/// be committed later, while its ring still looks empty. With `measure_delay`, the program
/// reads the clock again right before it submits and stores how long it took since the stamp
/// ([`ktime_delay`]): how late the commit came, as the program itself saw it.
pub fn ktime_stamped(
    ring: BorrowedFd<'_>,
    sequence: BorrowedFd<'_>,
    drops: BorrowedFd<'_>,
    flags: u64,
    work: u32,
    measure_delay: bool,
) -> Producer {
    let mut p = Program::new();
    // r9 = &sequence[cpu]
    p.lookup_first_elem(sequence, "fail")
        .push(insn::mov64_reg(R9, R0))
        // r8 = bpf_ktime_get_ns()
        .push(insn::call_helper(helper::KTIME_GET_NS))
        .push(insn::mov64_reg(R8, R0));
    if work > 0 {
        p.push(insn::mov64_imm(R1, work as i32))
            .ld_pseudo_func_label(R2, "callback")
            .push(insn::mov64_imm(R3, 0))
            .push(insn::mov64_imm(R4, 0))
            .push(insn::call_helper(helper::LOOP));
    }
    // r7 = reserve(ring, 24)
    p.extend(insn::ld_map_fd(R1, ring))
        .push(insn::mov64_imm(R2, KTIME_STAMP_LEN as i32))
        .push(insn::mov64_imm(R3, 0))
        .push(insn::call_helper(helper::RINGBUF_RESERVE))
        .jmp_imm_label(JmpOp::JEQ, R0, 0, "dropped")
        .push(insn::mov64_reg(R7, R0))
        .push(insn::stx_mem(MemSize::DW, R7, R8, 0))
        // record.sequence = ++sequence[cpu]
        .push(insn::ldx_mem(MemSize::DW, R1, R9, 0))
        .push(insn::alu64_imm(AluOp::ADD, R1, 1))
        .push(insn::stx_mem(MemSize::DW, R9, R1, 0))
        .push(insn::stx_mem(MemSize::DW, R7, R1, 8))
        .push(insn::call_helper(helper::GET_SMP_PROCESSOR_ID))
        .push(insn::stx_mem(MemSize::W, R7, R0, 16))
        .push(insn::st_mem(MemSize::W, R7, 20, 0));
    if measure_delay {
        // record.delay = min(bpf_ktime_get_ns() - stamp, u32::MAX)
        p.push(insn::call_helper(helper::KTIME_GET_NS))
            .push(insn::alu64_reg(AluOp::SUB, R0, R8))
            .push(insn::mov64_reg(R1, R0))
            .push(insn::alu64_imm(AluOp::RSH, R1, 32))
            .jmp_imm_label(JmpOp::JEQ, R1, 0, "delay_fits")
            .push(insn::st_mem(MemSize::W, R7, 20, -1))
            .jmp_imm_label(JmpOp::JA, R0, 0, "delay_stored")
            .label("delay_fits")
            .push(insn::stx_mem(MemSize::W, R7, R0, 20))
            .label("delay_stored");
    }
    commit_or_count_drop(&mut p, helper::RINGBUF_SUBMIT, flags, drops);
    let fd = if work > 0 {
        p.label("callback")
            .push(insn::mov64_imm(R0, 0))
            .push(insn::exit());
        let callback = p.label_index("callback").expect("callback label") as u32;
        let (btf, func_info) = btf_main_and_callback(callback);
        load_xdp(&p, Some((&btf, &func_info)))
    } else {
        load_xdp(&p, None)
    };
    Producer {
        fd: fd.expect("load ktime-stamped producer"),
        packet: packet(64),
    }
}

/// `BPF_F_XDP_HAS_FRAGS`: the program handles multi-buffer packets, so `BPF_PROG_TEST_RUN`
/// accepts test packets longer than one page's linear area (the rest goes into fragments).
pub const XDP_HAS_FRAGS: u32 = 1 << 5;

/// The plainest copying producer: each run reserves `len` bytes, fills them from the test
/// packet with `bpf_xdp_load_bytes` (fragments included: the program is loaded with
/// [`XDP_HAS_FRAGS`], so `len` may exceed the ~3.5 KiB linear limit of XDP test packets) and
/// submits with `flags`. Returns `XDP_DROP` (so [`Producer::run`] panics) if a reservation or
/// the copy fails. Record `i` of every run carries [`packet_bytes`]`(len)`.
pub fn reserve_load_submit(ring: BorrowedFd<'_>, len: u32, flags: u64) -> Producer {
    let mut p = Program::new();
    p.push(insn::mov64_reg(R6, R1))
        .extend(insn::ld_map_fd(R1, ring))
        .push(insn::mov64_imm(R2, len as i32))
        .push(insn::mov64_imm(R3, 0))
        .push(insn::call_helper(helper::RINGBUF_RESERVE))
        .jmp_imm_label(JmpOp::JEQ, R0, 0, "fail")
        .push(insn::mov64_reg(R7, R0))
        .push(insn::mov64_reg(R1, R6))
        .push(insn::mov64_imm(R2, 0))
        .push(insn::mov64_reg(R3, R7))
        .push(insn::mov64_imm(R4, len as i32))
        .push(insn::call_helper(helper::XDP_LOAD_BYTES))
        .push(insn::mov64_reg(R8, R0))
        .push(insn::mov64_reg(R1, R7))
        .push(insn::mov64_imm(R2, flags as i32))
        .push(insn::call_helper(helper::RINGBUF_SUBMIT))
        .jmp_imm_label(JmpOp::JNE, R8, 0, "fail")
        .push(insn::mov64_imm(R0, XDP_PASS as i32))
        .push(insn::exit())
        .label("fail")
        .push(insn::mov64_imm(R0, 1))
        .push(insn::exit());
    let insns = p.build().expect("assemble program");
    let mut load = ProgLoad::new(ProgType::XDP, &insns, GPL);
    load.prog_flags = XDP_HAS_FRAGS;
    Producer {
        fd: prog_load(&load).expect("load reserve_load_submit producer"),
        packet: packet(len as usize),
    }
}

/// The test packet the kit's copying producers read from: at least 64 bytes, `len` if longer.
pub fn packet_bytes(len: usize) -> Vec<u8> {
    packet(len)
}

/// The bytes a [`stamped`] record of `len` bytes carries after its stamp.
pub fn stamped_tail(len: usize) -> Vec<u8> {
    packet(len)[..len - STAMP_LEN].to_vec()
}

/// A producer that reserves an 8-byte record holding `tag`, then spins in `bpf_loop` for
/// `loops` iterations (up to 1 << 23) before submitting it: a BUSY record held for a while.
pub fn busy_holder(ring: BorrowedFd<'_>, loops: u32, tag: u64) -> Producer {
    let mut p = Program::new();
    p.extend(insn::ld_map_fd(R1, ring))
        .push(insn::mov64_imm(R2, 8))
        .push(insn::mov64_imm(R3, 0))
        .push(insn::call_helper(helper::RINGBUF_RESERVE))
        .jmp_imm_label(JmpOp::JEQ, R0, 0, "fail")
        .push(insn::mov64_reg(R7, R0))
        .extend(insn::ld_imm64(R1, tag))
        .push(insn::stx_mem(MemSize::DW, R7, R1, 0))
        .push(insn::mov64_imm(R1, loops as i32))
        .ld_pseudo_func_label(R2, "callback")
        .push(insn::mov64_imm(R3, 0))
        .push(insn::mov64_imm(R4, 0))
        .push(insn::call_helper(helper::LOOP))
        .push(insn::mov64_reg(R1, R7))
        .push(insn::mov64_imm(R2, 0))
        .push(insn::call_helper(helper::RINGBUF_SUBMIT))
        .push(insn::mov64_imm(R0, XDP_PASS as i32))
        .push(insn::exit())
        .label("fail")
        .push(insn::mov64_imm(R0, 0))
        .push(insn::exit())
        .label("callback")
        .push(insn::mov64_imm(R0, 0))
        .push(insn::exit());
    let callback = p.label_index("callback").expect("callback label") as u32;
    let (btf, func_info) = btf_main_and_callback(callback);
    Producer {
        fd: load_xdp(&p, Some((&btf, &func_info))).expect("load busy holder"),
        packet: packet(64),
    }
}

impl Producer {
    /// Runs the program `repeat` times (at least once) like [`Producer::run`], but returns
    /// the output whatever the program returned (`retval` is that of the last run).
    pub fn try_run(&self, repeat: u32) -> TestRunOutput {
        prog_test_run(
            self.fd.as_fd(),
            &TestRun {
                data_in: &self.packet,
                repeat,
                ..TestRun::default()
            },
        )
        .expect("BPF_PROG_TEST_RUN")
    }
}

/// Largest payload a [`VariableOutput`] emits: one page, and at least 4096 bytes, so a
/// record can fill a one-page ring on any page size.
pub fn variable_output_max() -> usize {
    page_size().max(4096)
}

/// `retval` of a [`VariableOutput`] run whose `bpf_ringbuf_output` failed (ring full).
pub const XDP_DROP: u32 = 1;

/// A `bpf_ringbuf_output` producer whose length, flags and payload are set from user space
/// between runs (in an array map the program reads), so one loaded program emits records
/// of any size from 0 to [`variable_output_max`].
///
/// Control value layout: `u32 len`, `u32` unused, `u64 flags`, then the payload bytes.
pub struct VariableOutput {
    producer: Producer,
    control: OwnedFd,
}

const VARIABLE_OUTPUT_HEADER: usize = 16;

impl VariableOutput {
    /// Sets the next records' payload and commit flags.
    pub fn set(&self, payload: &[u8], flags: u64) {
        assert!(payload.len() <= variable_output_max());
        let mut value = vec![0u8; VARIABLE_OUTPUT_HEADER + variable_output_max()];
        value[..4].copy_from_slice(&(payload.len() as u32).to_ne_bytes());
        value[8..16].copy_from_slice(&flags.to_ne_bytes());
        value[VARIABLE_OUTPUT_HEADER..][..payload.len()].copy_from_slice(payload);
        set_array_value(self.control.as_fd(), &value);
    }

    /// Emits `repeat` records of `payload` with `flags`; panics if the ring refused one.
    pub fn emit(&self, payload: &[u8], flags: u64, repeat: u32) {
        self.set(payload, flags);
        self.producer.run(repeat);
    }

    /// Emits `repeat` records of `payload` with `flags`; returns whether the last
    /// `bpf_ringbuf_output` succeeded (`false`: the ring had no room).
    pub fn try_emit(&self, payload: &[u8], flags: u64, repeat: u32) -> bool {
        self.set(payload, flags);
        match self.producer.try_run(repeat).retval {
            XDP_PASS => true,
            XDP_DROP => false,
            other => panic!("variable output program failed ({other})"),
        }
    }

    /// The program fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.producer.fd()
    }
}

/// A [`VariableOutput`] for `ring`.
pub fn variable_output(ring: BorrowedFd<'_>) -> VariableOutput {
    let control = array_map((VARIABLE_OUTPUT_HEADER + variable_output_max()) as u32);
    let mut p = Program::new();
    p.extend(insn::ld_map_value(R6, control.as_fd(), 0))
        .push(insn::ldx_mem(MemSize::W, R3, R6, 0))
        // Bounds the length for the verifier (and refuses a bad control value).
        .jmp_imm_label(JmpOp::JGT, R3, variable_output_max() as i32, "fail")
        .push(insn::ldx_mem(MemSize::DW, R4, R6, 8))
        .push(insn::mov64_reg(R2, R6))
        .push(insn::alu64_imm(
            AluOp::ADD,
            R2,
            VARIABLE_OUTPUT_HEADER as i32,
        ))
        .extend(insn::ld_map_fd(R1, ring))
        .push(insn::call_helper(helper::RINGBUF_OUTPUT))
        .jmp_imm_label(JmpOp::JNE, R0, 0, "full")
        .push(insn::mov64_imm(R0, XDP_PASS as i32))
        .push(insn::exit())
        .label("full")
        .push(insn::mov64_imm(R0, XDP_DROP as i32))
        .push(insn::exit())
        .label("fail")
        .push(insn::mov64_imm(R0, 0))
        .push(insn::exit());
    let fd = load_xdp(&p, None).expect("load variable output program");
    VariableOutput {
        producer: Producer {
            fd,
            packet: packet(64),
        },
        control,
    }
}

/// Size of a [`selftest_sampler`] record: `struct sample { int marker; int seq; long value;
/// char tail[16]; }` (the kernel selftest's `struct sample`, with a fixed marker and tail
/// instead of pid and comm).
pub const SAMPLE_LEN: usize = 32;
/// The `marker` word of every [`selftest_sampler`] record.
pub const SAMPLE_MARKER: u32 = 0x5a5a_5a5a;
/// The two `u64` words of a [`selftest_sampler`] record's tail.
pub const SAMPLE_TAIL: u64 = 0x0123_4567;

/// Words of a [`selftest_sampler`]'s state map (indexes into [`Sampler::state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum SamplerWord {
    /// In: the `value` of the next sample.
    Value = 0,
    /// In: the flags passed to submit, output and discard.
    Flags = 1,
    /// Inner: the next sample's `seq`.
    Seq = 2,
    /// Out: samples reserved.
    Total = 3,
    /// Out: samples copied with `bpf_ringbuf_output` then discarded (odd `seq`).
    Discarded = 4,
    /// Out: failed reservations.
    Dropped = 5,
    /// Out: `bpf_ringbuf_query(BPF_RB_AVAIL_DATA)` after the last sample.
    AvailData = 6,
    /// Out: `bpf_ringbuf_query(BPF_RB_RING_SIZE)`.
    RingSize = 7,
    /// Out: `bpf_ringbuf_query(BPF_RB_CONS_POS)`.
    ConsPos = 8,
    /// Out: `bpf_ringbuf_query(BPF_RB_PROD_POS)`.
    ProdPos = 9,
}

const SAMPLER_WORDS: usize = 10;

/// The BPF side of the kernel selftest `progs/test_ringbuf.c`, as an XDP program: each run
/// reserves a [`SAMPLE_LEN`]-byte sample; an even `seq` is submitted, an odd one is copied
/// with `bpf_ringbuf_output` and the reservation discarded (so two runs leave three records:
/// submitted, copy, discarded); then it stores `bpf_ringbuf_query` results in its state.
pub struct Sampler {
    producer: Producer,
    state: OwnedFd,
}

impl Sampler {
    /// Reads the state map.
    pub fn state(&self) -> [u64; SAMPLER_WORDS] {
        let mut value = [0u8; SAMPLER_WORDS * 8];
        map_lookup_elem(self.state.as_fd(), &0u32.to_ne_bytes(), &mut value)
            .expect("lookup sampler state");
        let mut words = [0u64; SAMPLER_WORDS];
        for (word, bytes) in words.iter_mut().zip(value.chunks_exact(8)) {
            *word = u64::from_ne_bytes(bytes.try_into().unwrap());
        }
        words
    }

    /// One word of the state.
    pub fn get(&self, word: SamplerWord) -> u64 {
        self.state()[word as usize]
    }

    /// Sets one word of the state.
    pub fn set(&self, word: SamplerWord, value: u64) {
        let mut words = self.state();
        words[word as usize] = value;
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        set_array_value(self.state.as_fd(), &bytes);
    }

    /// The selftest's `trigger_samples`: clears the counters, then one sample with value 333
    /// and one with 777.
    pub fn trigger_samples(&self) {
        for word in [
            SamplerWord::Dropped,
            SamplerWord::Total,
            SamplerWord::Discarded,
        ] {
            self.set(word, 0);
        }
        self.set(SamplerWord::Value, 333);
        self.producer.run(1);
        self.set(SamplerWord::Value, 777);
        self.producer.run(1);
    }

    /// Runs the program once with the current state.
    pub fn run(&self) {
        self.producer.run(1);
    }
}

/// Decodes a [`selftest_sampler`] record: (seq, value); checks the marker and the tail.
pub fn sample(record: &[u8]) -> (u32, u64) {
    assert_eq!(record.len(), SAMPLE_LEN);
    let word = |at: usize| u64::from_ne_bytes(record[at..at + 8].try_into().unwrap());
    assert_eq!(
        u32::from_ne_bytes(record[..4].try_into().unwrap()),
        SAMPLE_MARKER
    );
    assert_eq!((word(16), word(24)), (SAMPLE_TAIL, SAMPLE_TAIL));
    let seq = u32::from_ne_bytes(record[4..8].try_into().unwrap());
    (seq, word(8))
}

/// A [`Sampler`] for `ring`.
pub fn selftest_sampler(ring: BorrowedFd<'_>) -> Sampler {
    let state = array_map((SAMPLER_WORDS * 8) as u32);
    let at = |word: SamplerWord| (word as usize * 8) as i16;
    let mut p = Program::new();
    p.extend(insn::ld_map_value(R6, state.as_fd(), 0))
        .extend(insn::ld_map_fd(R1, ring))
        .push(insn::mov64_imm(R2, SAMPLE_LEN as i32))
        .push(insn::mov64_imm(R3, 0))
        .push(insn::call_helper(helper::RINGBUF_RESERVE))
        .jmp_imm_label(JmpOp::JEQ, R0, 0, "dropped")
        .push(insn::mov64_reg(R7, R0))
        .push(insn::st_mem(MemSize::W, R7, 0, SAMPLE_MARKER as i32))
        .push(insn::ldx_mem(MemSize::DW, R8, R6, at(SamplerWord::Seq)))
        .push(insn::stx_mem(MemSize::W, R7, R8, 4))
        .push(insn::mov64_reg(R1, R8))
        .push(insn::alu64_imm(AluOp::ADD, R1, 1))
        .push(insn::stx_mem(MemSize::DW, R6, R1, at(SamplerWord::Seq)))
        .push(insn::ldx_mem(MemSize::DW, R1, R6, at(SamplerWord::Value)))
        .push(insn::stx_mem(MemSize::DW, R7, R1, 8))
        .push(insn::st_mem(MemSize::DW, R7, 16, SAMPLE_TAIL as i32))
        .push(insn::st_mem(MemSize::DW, R7, 24, SAMPLE_TAIL as i32))
        .push(insn::ldx_mem(MemSize::DW, R1, R6, at(SamplerWord::Total)))
        .push(insn::alu64_imm(AluOp::ADD, R1, 1))
        .push(insn::stx_mem(MemSize::DW, R6, R1, at(SamplerWord::Total)))
        .jmp_imm_label(JmpOp::JSET, R8, 1, "odd")
        .push(insn::mov64_reg(R1, R7))
        .push(insn::ldx_mem(MemSize::DW, R2, R6, at(SamplerWord::Flags)))
        .push(insn::call_helper(helper::RINGBUF_SUBMIT))
        .ja_label("query")
        .label("odd")
        .extend(insn::ld_map_fd(R1, ring))
        .push(insn::mov64_reg(R2, R7))
        .push(insn::mov64_imm(R3, SAMPLE_LEN as i32))
        .push(insn::ldx_mem(MemSize::DW, R4, R6, at(SamplerWord::Flags)))
        .push(insn::call_helper(helper::RINGBUF_OUTPUT))
        .push(insn::mov64_reg(R1, R7))
        .push(insn::ldx_mem(MemSize::DW, R2, R6, at(SamplerWord::Flags)))
        .push(insn::call_helper(helper::RINGBUF_DISCARD))
        .push(insn::ldx_mem(
            MemSize::DW,
            R1,
            R6,
            at(SamplerWord::Discarded),
        ))
        .push(insn::alu64_imm(AluOp::ADD, R1, 1))
        .push(insn::stx_mem(
            MemSize::DW,
            R6,
            R1,
            at(SamplerWord::Discarded),
        ))
        .label("query");
    for (selector, word) in [
        (helper::RB_AVAIL_DATA, SamplerWord::AvailData),
        (helper::RB_RING_SIZE, SamplerWord::RingSize),
        (helper::RB_CONS_POS, SamplerWord::ConsPos),
        (helper::RB_PROD_POS, SamplerWord::ProdPos),
    ] {
        p.extend(insn::ld_map_fd(R1, ring))
            .push(insn::mov64_imm(R2, selector))
            .push(insn::call_helper(helper::RINGBUF_QUERY))
            .push(insn::stx_mem(MemSize::DW, R6, R0, at(word)));
    }
    p.push(insn::mov64_imm(R0, XDP_PASS as i32))
        .push(insn::exit())
        .label("dropped")
        .push(insn::ldx_mem(MemSize::DW, R1, R6, at(SamplerWord::Dropped)))
        .push(insn::alu64_imm(AluOp::ADD, R1, 1))
        .push(insn::stx_mem(MemSize::DW, R6, R1, at(SamplerWord::Dropped)))
        .push(insn::mov64_imm(R0, XDP_PASS as i32))
        .push(insn::exit());
    Sampler {
        producer: Producer {
            fd: load_xdp(&p, None).expect("load selftest sampler"),
            packet: packet(64),
        },
        state,
    }
}

/// What a [`double_reserve`] run did, from its `retval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoubleReserve {
    /// The first reservation failed.
    FirstRefused,
    /// The first reservation succeeded, the second failed; the first was discarded.
    SecondRefused,
    /// Both reservations succeeded (both were discarded).
    BothGranted,
}

/// The BPF side of the kernel selftest `progs/test_ringbuf_write.c`: reserves `size` bytes
/// twice, then discards what it got. Run it with [`run_double_reserve`].
pub fn double_reserve(ring: BorrowedFd<'_>, size: u32) -> Producer {
    let mut p = Program::new();
    p.extend(insn::ld_map_fd(R1, ring))
        .push(insn::mov64_imm(R2, size as i32))
        .push(insn::mov64_imm(R3, 0))
        .push(insn::call_helper(helper::RINGBUF_RESERVE))
        .jmp_imm_label(JmpOp::JEQ, R0, 0, "first_refused")
        .push(insn::mov64_reg(R6, R0))
        .extend(insn::ld_map_fd(R1, ring))
        .push(insn::mov64_imm(R2, size as i32))
        .push(insn::mov64_imm(R3, 0))
        .push(insn::call_helper(helper::RINGBUF_RESERVE))
        .jmp_imm_label(JmpOp::JEQ, R0, 0, "second_refused")
        .push(insn::mov64_reg(R7, R0))
        .push(insn::mov64_reg(R1, R6))
        .push(insn::mov64_imm(R2, 0))
        .push(insn::call_helper(helper::RINGBUF_DISCARD))
        .push(insn::mov64_reg(R1, R7))
        .push(insn::mov64_imm(R2, 0))
        .push(insn::call_helper(helper::RINGBUF_DISCARD))
        .push(insn::mov64_imm(R0, 2))
        .push(insn::exit())
        .label("second_refused")
        .push(insn::mov64_reg(R1, R6))
        .push(insn::mov64_imm(R2, 0))
        .push(insn::call_helper(helper::RINGBUF_DISCARD))
        .push(insn::mov64_imm(R0, 1))
        .push(insn::exit())
        .label("first_refused")
        .push(insn::mov64_imm(R0, 0))
        .push(insn::exit());
    Producer {
        fd: load_xdp(&p, None).expect("load double reserve program"),
        packet: packet(64),
    }
}

/// Runs a [`double_reserve`] program once and decodes what it did.
pub fn run_double_reserve(producer: &Producer) -> DoubleReserve {
    match producer.try_run(1).retval {
        0 => DoubleReserve::FirstRefused,
        1 => DoubleReserve::SecondRefused,
        2 => DoubleReserve::BothGranted,
        other => panic!("double reserve program returned {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Overwrite mode (BPF_F_RB_OVERWRITE, Linux 6.19+).

/// A producer that reserves `len` bytes (a multiple of 8), increments a per-CPU sequence
/// counter (element 0 of `sequence`, a [`percpu_counter_map`](crate::percpu_counter_map)) and writes the new sequence
/// number into every 8-byte word of the record before submitting it: a record copied while
/// being overwritten mixes two numbers, so a torn copy is easy to see. A failed reservation
/// returns `XDP_DROP`.
pub fn sequence_filled(ring: BorrowedFd<'_>, sequence: BorrowedFd<'_>, len: u32) -> Producer {
    assert!(len >= 8 && len % 8 == 0);
    let mut p = Program::new();
    p.lookup_first_elem(sequence, "fail")
        .push(insn::mov64_reg(R9, R0))
        .extend(insn::ld_map_fd(R1, ring))
        .push(insn::mov64_imm(R2, len as i32))
        .push(insn::mov64_imm(R3, 0))
        .push(insn::call_helper(helper::RINGBUF_RESERVE))
        .jmp_imm_label(JmpOp::JEQ, R0, 0, "dropped")
        .push(insn::mov64_reg(R7, R0))
        .push(insn::ldx_mem(MemSize::DW, R8, R9, 0))
        .push(insn::alu64_imm(AluOp::ADD, R8, 1))
        .push(insn::stx_mem(MemSize::DW, R9, R8, 0));
    for offset in (0..len).step_by(8) {
        p.push(insn::stx_mem(MemSize::DW, R7, R8, offset as i16));
    }
    p.push(insn::mov64_reg(R1, R7))
        .push(insn::mov64_imm(R2, 0))
        .push(insn::call_helper(helper::RINGBUF_SUBMIT))
        .push(insn::mov64_imm(R0, XDP_PASS as i32))
        .push(insn::exit())
        .label("dropped")
        .push(insn::mov64_imm(R0, 1))
        .push(insn::exit())
        .label("fail")
        .push(insn::mov64_imm(R0, 0))
        .push(insn::exit());
    Producer {
        fd: load_xdp(&p, None).expect("load sequence-filled producer"),
        packet: packet(64),
    }
}

/// The reservations of an [`overwrite_selftest`] run that did not behave as the selftest
/// expects (1, 2, 4 and 5 granted; 3 refused): an empty list when all did.
pub fn overwrite_selftest_failures(retval: u32) -> Vec<u32> {
    (0..5)
        .filter(|bit| retval & (1 << (bit + 4)) != 0)
        .map(|bit| bit + 1)
        .collect()
}

/// The BPF side of the kernel selftest `ringbuf_overwrite_mode` (progs/test_ringbuf_overwrite.c)
/// for a one-page ring: reserve `len1` and `len2`, try `len3` (expected to fail: uncommitted
/// records fill the ring), reserve `len4`, submit 1, 2 and 4, then reserve `len3` again — which
/// overwrites record 1 — fill it with 0xdd and submit it. Records 1, 2 and 4 get their first 8
/// bytes set to 0xaa, 0xbb and 0xcc. Returns `XDP_PASS`, with bit `4 + n - 1` set when
/// reservation `n` did not behave as expected (see [`overwrite_selftest_failures`]).
pub fn overwrite_selftest(ring: BorrowedFd<'_>, lens: [u32; 4]) -> Producer {
    let [len1, len2, len3, len4] = lens;
    let mut p = Program::new();
    let reserve = |p: &mut Program, len: u32, into: insn::Reg, fail: &str| {
        p.extend(insn::ld_map_fd(R1, ring))
            .push(insn::mov64_imm(R2, len as i32))
            .push(insn::mov64_imm(R3, 0))
            .push(insn::call_helper(helper::RINGBUF_RESERVE))
            .jmp_imm_label(JmpOp::JEQ, R0, 0, fail)
            .push(insn::mov64_reg(into, R0));
    };
    let fill8 = |p: &mut Program, reg: insn::Reg, byte: u8| {
        p.extend(insn::ld_imm64(R1, u64::from_ne_bytes([byte; 8])))
            .push(insn::stx_mem(MemSize::DW, reg, R1, 0));
    };
    reserve(&mut p, len1, R6, "fail1");
    fill8(&mut p, R6, 0xaa);
    reserve(&mut p, len2, R7, "fail2");
    fill8(&mut p, R7, 0xbb);
    // Record 3 must fail; if it does not, discard everything and report it.
    p.extend(insn::ld_map_fd(R1, ring))
        .push(insn::mov64_imm(R2, len3 as i32))
        .push(insn::mov64_imm(R3, 0))
        .push(insn::call_helper(helper::RINGBUF_RESERVE))
        .jmp_imm_label(JmpOp::JEQ, R0, 0, "third_refused")
        .push(insn::mov64_reg(R1, R0))
        .push(insn::mov64_imm(R2, 0))
        .push(insn::call_helper(helper::RINGBUF_DISCARD))
        .push(insn::mov64_reg(R1, R6))
        .push(insn::mov64_imm(R2, 0))
        .push(insn::call_helper(helper::RINGBUF_DISCARD))
        .push(insn::mov64_reg(R1, R7))
        .push(insn::mov64_imm(R2, 0))
        .push(insn::call_helper(helper::RINGBUF_DISCARD))
        .push(insn::mov64_imm(R0, XDP_PASS as i32 | 1 << 6))
        .push(insn::exit())
        .label("third_refused");
    reserve(&mut p, len4, R8, "fail4");
    fill8(&mut p, R8, 0xcc);
    for reg in [R6, R7, R8] {
        p.push(insn::mov64_reg(R1, reg))
            .push(insn::mov64_imm(R2, 0))
            .push(insn::call_helper(helper::RINGBUF_SUBMIT));
    }
    reserve(&mut p, len3, R6, "fail5");
    p.extend(insn::ld_imm64(R1, u64::from_ne_bytes([0xdd; 8])));
    for offset in (0..len3).step_by(8) {
        p.push(insn::stx_mem(MemSize::DW, R6, R1, offset as i16));
    }
    p.push(insn::mov64_reg(R1, R6))
        .push(insn::mov64_imm(R2, 0))
        .push(insn::call_helper(helper::RINGBUF_SUBMIT))
        .push(insn::mov64_imm(R0, XDP_PASS as i32))
        .push(insn::exit())
        // Failures past the first reservation discard what they hold (the verifier insists).
        .label("fail1")
        .push(insn::mov64_imm(R0, XDP_PASS as i32 | 1 << 4))
        .push(insn::exit())
        .label("fail2")
        .push(insn::mov64_reg(R1, R6))
        .push(insn::mov64_imm(R2, 0))
        .push(insn::call_helper(helper::RINGBUF_DISCARD))
        .push(insn::mov64_imm(R0, XDP_PASS as i32 | 1 << 5))
        .push(insn::exit())
        .label("fail4")
        .push(insn::mov64_reg(R1, R6))
        .push(insn::mov64_imm(R2, 0))
        .push(insn::call_helper(helper::RINGBUF_DISCARD))
        .push(insn::mov64_reg(R1, R7))
        .push(insn::mov64_imm(R2, 0))
        .push(insn::call_helper(helper::RINGBUF_DISCARD))
        .push(insn::mov64_imm(R0, XDP_PASS as i32 | 1 << 7))
        .push(insn::exit())
        .label("fail5")
        .push(insn::mov64_imm(R0, XDP_PASS as i32 | 1 << 8))
        .push(insn::exit());
    Producer {
        fd: load_xdp(&p, None).expect("load overwrite selftest program"),
        packet: packet(64),
    }
}
