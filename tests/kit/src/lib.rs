//! Shared by the tests, examples and benchmarks of `bpf-ringbuf`: the kernel-test policy and
//! small BPF programs assembled in Rust (no C toolchain at test time).
//!
//! # Kernel-test policy
//!
//! Tests that need bpf(2) start with [`require_kernel!`]. With `BPF_RINGBUF_REQUIRE_KERNEL=1`
//! (CI sets it) a missing kernel is a failure; otherwise the test prints why it skips and
//! returns.

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use bpf_ringbuf_sys::btf::{BtfBuilder, FuncLinkage};
use bpf_ringbuf_sys::insn::{
    self, helper, AluOp, JmpOp, MemSize, Program, R0, R1, R10, R2, R3, R4, R6, R7, R8, R9,
};
use bpf_ringbuf_sys::{
    map_create, map_lookup_elem, map_update_elem, prog_load, prog_test_run, BpfError, FuncInfo,
    MapCreate, MapType, ProgLoad, ProgType, TestRun, TestRunOutput,
};

/// `BPF_RB_NO_WAKEUP`.
pub const NO_WAKEUP: u64 = 1;
/// `BPF_RB_FORCE_WAKEUP`.
pub const FORCE_WAKEUP: u64 = 2;
/// `XDP_PASS`, what every producer program here returns on success.
pub const XDP_PASS: u32 = 2;

const GPL: &CStr = c"GPL";

/// Whether bpf(2) works here. Panics if it does not and `BPF_RINGBUF_REQUIRE_KERNEL=1`.
pub fn kernel_available() -> bool {
    let required = std::env::var("BPF_RINGBUF_REQUIRE_KERNEL").is_ok_and(|v| v == "1");
    match map_create(&MapCreate::new(MapType::RINGBUF, 0, 0, page_size() as u32)) {
        Ok(_) => true,
        Err(error) if required => {
            panic!("BPF_RINGBUF_REQUIRE_KERNEL=1 but bpf() does not work here: {error}")
        }
        Err(error) => {
            eprintln!(
                "skipped: bpf() does not work here ({error}); kernel tests need root or \
                 CAP_BPF (set BPF_RINGBUF_REQUIRE_KERNEL=1 to make this a failure)"
            );
            false
        }
    }
}

/// Returns from the calling test when the kernel is unavailable (see [`kernel_available`]).
#[macro_export]
macro_rules! require_kernel {
    () => {
        if !$crate::kernel_available() {
            return;
        }
    };
}

/// The system page size.
pub fn page_size() -> usize {
    bpf_ringbuf_sys::page_size()
}

/// A new `BPF_MAP_TYPE_RINGBUF` map with a `size`-byte data area.
pub fn ringbuf_map(size: usize) -> OwnedFd {
    map_create(&MapCreate::new(MapType::RINGBUF, 0, 0, size as u32)).expect("create RINGBUF map")
}

/// A new `BPF_MAP_TYPE_USER_RINGBUF` map with a `size`-byte data area.
pub fn user_ringbuf_map(size: usize) -> OwnedFd {
    map_create(&MapCreate::new(MapType::USER_RINGBUF, 0, 0, size as u32))
        .expect("create USER_RINGBUF map")
}

/// A one-element `BPF_MAP_TYPE_ARRAY` with `value_size`-byte values.
pub fn array_map(value_size: u32) -> OwnedFd {
    map_create(&MapCreate::new(MapType::ARRAY, 4, value_size, 1)).expect("create ARRAY map")
}

/// A one-element `BPF_MAP_TYPE_PERCPU_ARRAY` of `u64` counters.
pub fn percpu_counter_map() -> OwnedFd {
    map_create(&MapCreate::new(MapType::PERCPU_ARRAY, 4, 8, 1)).expect("create PERCPU_ARRAY map")
}

/// Sets element 0 of an array map.
pub fn set_array_value(map: BorrowedFd<'_>, value: &[u8]) {
    map_update_elem(map, &0u32.to_ne_bytes(), value, 0).expect("update array element");
}

/// The per-CPU values of element 0 of a per-CPU `u64` array, one per possible CPU.
pub fn percpu_counters(map: BorrowedFd<'_>) -> Vec<u64> {
    let cpus = possible_cpus();
    let mut values = vec![0u8; 8 * cpus];
    map_lookup_elem(map, &0u32.to_ne_bytes(), &mut values).expect("lookup per-CPU counters");
    values
        .chunks_exact(8)
        .map(|chunk| u64::from_ne_bytes(chunk.try_into().unwrap()))
        .collect()
}

/// Number of possible CPUs (the number of slots in per-CPU map values).
pub fn possible_cpus() -> usize {
    bpf_ringbuf_sys::possible_cpus().expect("read possible CPUs")
}

fn load_xdp(program: &Program, btf: Option<(&OwnedFd, &[FuncInfo])>) -> Result<OwnedFd, BpfError> {
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
    let fd = bpf_ringbuf_sys::btf_load(&btf.build()).expect("load BTF");
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

fn packet(len: usize) -> Vec<u8> {
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
    p.push(insn::st_mem(MemSize::W, R10, -4, 0))
        .extend(insn::ld_map_fd(R1, payload))
        .push(insn::mov64_reg(R2, R10))
        .push(insn::alu64_imm(AluOp::ADD, R2, -4))
        .push(insn::call_helper(helper::MAP_LOOKUP_ELEM))
        .jmp_imm_label(JmpOp::JEQ, R0, 0, "fail")
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
/// sequence number (counted in `sequence`, a [`percpu_counter_map`], only for successful
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
        .push(insn::st_mem(MemSize::W, R10, -4, 0))
        .extend(insn::ld_map_fd(R1, sequence))
        .push(insn::mov64_reg(R2, R10))
        .push(insn::alu64_imm(AluOp::ADD, R2, -4))
        .push(insn::call_helper(helper::MAP_LOOKUP_ELEM))
        .jmp_imm_label(JmpOp::JEQ, R0, 0, "fail")
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
    p.push(insn::mov64_reg(R1, R7))
        .push(insn::mov64_imm(R2, flags as i32))
        .push(insn::call_helper(commit_helper))
        .push(insn::mov64_imm(R0, XDP_PASS as i32))
        .push(insn::exit())
        // drops[cpu] += 1
        .label("dropped")
        .push(insn::st_mem(MemSize::W, R10, -4, 0))
        .extend(insn::ld_map_fd(R1, drops))
        .push(insn::mov64_reg(R2, R10))
        .push(insn::alu64_imm(AluOp::ADD, R2, -4))
        .push(insn::call_helper(helper::MAP_LOOKUP_ELEM))
        .jmp_imm_label(JmpOp::JEQ, R0, 0, "fail")
        .push(insn::ldx_mem(MemSize::DW, R1, R0, 0))
        .push(insn::alu64_imm(AluOp::ADD, R1, 1))
        .push(insn::stx_mem(MemSize::DW, R0, R1, 0))
        .push(insn::mov64_imm(R0, XDP_PASS as i32))
        .push(insn::exit())
        .label("fail")
        .push(insn::mov64_imm(R0, 0))
        .push(insn::exit());
    Producer {
        fd: load_xdp(&p, None).expect("load stamped producer"),
        packet: packet(len as usize),
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

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).expect("sched_setaffinity");
}

/// Number of CPUs this process may run on.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
