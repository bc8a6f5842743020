//! Shared by the tests, examples and benchmarks of `bpf-ringbuf`: the kernel-test policy and
//! small BPF programs assembled in Rust (no C toolchain at test time).
//!
//! # Kernel-test policy
//!
//! Tests that need bpf(2) start with [`require_kernel!`]. With `BPF_RINGBUF_REQUIRE_KERNEL=1`
//! (CI sets it) a missing kernel is a failure; otherwise the test prints why it skips and
//! returns.
//!
//! Tests that need a newer kernel *feature* (a map type or flag the oldest supported kernel
//! lacks) add [`require_feature!`] with a probe such as [`user_ringbuf_missing`]: on a kernel
//! without it they print `skipped: <reason>` and return, even with
//! `BPF_RINGBUF_REQUIRE_KERNEL=1`; a missing feature on a kernel that should have it fails.

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use bpf_ringbuf_sys::{
    map_create, map_lookup_elem, map_update_elem, BpfError, Errno, MapCreate, MapFlags, MapType,
    Mapping,
};

use btf::{BtfBuilder, FuncLinkage};
use insn::{
    helper, AluOp, Insn, JmpOp, MemSize, Program, R0, R1, R10, R2, R3, R4, R5, R6, R7, R8, R9,
};

/// `BPF_RB_NO_WAKEUP`.
pub const NO_WAKEUP: u64 = 1;
/// `BPF_RB_FORCE_WAKEUP`.
pub const FORCE_WAKEUP: u64 = 2;
/// `XDP_PASS`, what every producer program here returns on success.
pub const XDP_PASS: u32 = 2;

mod bpf;
pub mod btf;
pub mod exec;
pub mod insn;
mod prog;

pub use bpf::FuncInfo;
pub use btf::btf_load;
pub use prog::{
    prog_load, prog_test_run, xdp_action, ProgLoad, ProgType, TestRun, TestRunOutput,
    LOG_BUFFER_SIZE,
};

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

/// Returns from the calling test, printing `skipped: <reason>`, when `missing` (an
/// `Option<String>` from a probe such as [`user_ringbuf_missing`]) names a missing feature.
#[macro_export]
macro_rules! require_feature {
    ($missing:expr) => {
        if let Some(reason) = $missing {
            $crate::skip_feature(&reason);
            return;
        }
    };
}

/// Prints why a test skips for a missing kernel feature (see [`require_feature!`]).
pub fn skip_feature(reason: &str) {
    eprintln!("skipped: {reason}");
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .expect("read /proc/sys/kernel/osrelease")
        .trim()
        .to_owned()
}

/// The running kernel's (major, minor) version, parsed from [`kernel_release`].
pub fn kernel_version() -> (u32, u32) {
    let release = kernel_release();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>());
    match (numbers.next(), numbers.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor),
        _ => panic!("cannot parse the kernel release {release:?}"),
    }
}

/// `None` when a one-page ring map of `map_type` with `flags` can be created; otherwise why
/// not. `since` is the first mainline (major, minor) with the feature: a kernel at least that
/// new that refuses it fails the test under `BPF_RINGBUF_REQUIRE_KERNEL=1` (a broken probe or
/// a kernel built without it must not pass as a skip). Errors other than `EINVAL` mean the
/// kernel itself is unusable and panic (tests call [`require_kernel!`] first).
pub fn ring_flags_missing(map_type: MapType, flags: MapFlags, since: (u32, u32)) -> Option<String> {
    let attempt = map_create(&MapCreate {
        flags,
        ..MapCreate::new(map_type, 0, 0, page_size() as u32)
    });
    let error = match attempt {
        Ok(_) => return None,
        Err(error) if error.errno() == Errno::INVAL => error,
        Err(error) => panic!("probing {map_type} with {flags:?}: {error}"),
    };
    let release = kernel_release();
    let mut flag_names: Vec<String> = flags
        .iter_names()
        .map(|(name, _)| format!("BPF_F_{name}"))
        .collect();
    let unknown = flags.bits() & !MapFlags::all().bits();
    if unknown != 0 {
        flag_names.push(format!("{unknown:#x}"));
    }
    let feature = if flags.is_empty() {
        format!("{map_type}")
    } else {
        format!("{map_type} with {}", flag_names.join("|"))
    };
    let required = std::env::var("BPF_RINGBUF_REQUIRE_KERNEL").is_ok_and(|v| v == "1");
    assert!(
        !(required && kernel_version() >= since),
        "Linux {release} refuses {feature} ({error}) although mainline has it since {}.{}",
        since.0,
        since.1
    );
    Some(format!(
        "Linux {release} lacks {feature} (needs {}.{}+; refused with {error})",
        since.0, since.1
    ))
}

/// `None` when the kernel has `BPF_MAP_TYPE_USER_RINGBUF` (Linux 6.1), otherwise why not; see
/// [`ring_flags_missing`].
pub fn user_ringbuf_missing() -> Option<String> {
    ring_flags_missing(MapType::USER_RINGBUF, MapFlags::empty(), (6, 1))
}

/// `None` when the kernel verifies BPF programs that pass a callback to a helper
/// (`bpf_loop`, `bpf_user_ringbuf_drain`); otherwise why not. The verifier accepts callbacks
/// only in programs the JIT compiles ("callbacks are not allowed in non-JITed programs"), so
/// on a kernel built without a BPF JIT (Debian's s390x kernels) nothing can drain a
/// USER_RINGBUF or hold a record BUSY in `bpf_loop`, and tests that need either skip. A kernel
/// that has a JIT (`/proc/sys/net/core/bpf_jit_enable` exists) and refuses the probe fails it
/// under `BPF_RINGBUF_REQUIRE_KERNEL=1`; any other error panics (tests call
/// [`require_kernel!`] first).
pub fn callbacks_missing() -> Option<String> {
    static PROBE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    PROBE.get_or_init(probe_callbacks).clone()
}

fn probe_callbacks() -> Option<String> {
    let mut p = Program::new();
    p.push(insn::mov64_imm(R1, 1))
        .ld_pseudo_func_label(R2, "callback")
        .push(insn::mov64_imm(R3, 0))
        .push(insn::mov64_imm(R4, 0))
        .push(insn::call_helper(helper::LOOP))
        .push(insn::mov64_imm(R0, XDP_PASS as i32))
        .push(insn::exit())
        .label("callback")
        .push(insn::mov64_imm(R0, 0))
        .push(insn::exit());
    let callback = p.label_index("callback").expect("callback label") as u32;
    let (btf, func_info) = btf_main_and_callback(callback);
    let error = match load_xdp(&p, Some((&btf, &func_info))) {
        Ok(_) => return None,
        Err(error) => error,
    };
    let refused_without_jit = error.errno() == Errno::INVAL
        && error
            .log()
            .is_some_and(|log| log.contains("callbacks are not allowed in non-JITed programs"));
    assert!(refused_without_jit, "probing BPF callbacks: {error}");
    let has_jit = std::path::Path::new("/proc/sys/net/core/bpf_jit_enable").exists();
    let required = std::env::var("BPF_RINGBUF_REQUIRE_KERNEL").is_ok_and(|v| v == "1");
    let release = kernel_release();
    assert!(
        !(required && has_jit),
        "Linux {release} has a BPF JIT but refuses a bpf_loop callback: {error}"
    );
    Some(format!(
        "Linux {release} ({}) has no BPF JIT, and the verifier allows callbacks \
         (bpf_loop, bpf_user_ringbuf_drain) only in JIT-compiled programs",
        std::env::consts::ARCH
    ))
}

/// The system page size.
pub fn page_size() -> usize {
    bpf_ringbuf_sys::page_size()
}

/// The smallest data area of a ring map (`max_entries` of a RINGBUF or USER_RINGBUF) that
/// holds at least `min_bytes`: a power of two and a multiple of the page size, as the kernel
/// requires. Tests size kernel rings with it, so they run unchanged on 4 KiB, 16 KiB and
/// 64 KiB pages; `ring_size_at_least(4096)` is 4096 on 4 KiB pages and one page otherwise.
pub fn ring_size_at_least(min_bytes: usize) -> usize {
    min_bytes.next_power_of_two().max(page_size())
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
/// [`percpu_counter_map`], only for successful reservations) and the CPU, then submitted with
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
    p.push(insn::st_mem(MemSize::W, R10, -4, 0))
        .extend(insn::ld_map_fd(R1, sequence))
        .push(insn::mov64_reg(R2, R10))
        .push(insn::alu64_imm(AluOp::ADD, R2, -4))
        .push(insn::call_helper(helper::MAP_LOOKUP_ELEM))
        .jmp_imm_label(JmpOp::JEQ, R0, 0, "fail")
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
// USER_RINGBUF: kernel programs that drain what user space produced.

/// A loaded XDP program whose return value is what `bpf_user_ringbuf_drain` returned.
pub struct Drainer {
    fd: OwnedFd,
    packet: Vec<u8>,
}

impl Drainer {
    /// Runs the program once (on the calling CPU); returns the drain's return value: the
    /// number of samples delivered, or a negative errno (`-EINVAL`, `-E2BIG`, `-EBUSY`).
    pub fn drain(&self) -> i64 {
        let output = prog_test_run(
            self.fd.as_fd(),
            &TestRun {
                data_in: &self.packet,
                repeat: 1,
                ..TestRun::default()
            },
        )
        .expect("BPF_PROG_TEST_RUN");
        // The program returns the helper's `long` result; test_run reports its low 32 bits.
        i64::from(output.retval as i32)
    }

    /// The program fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Main program: `return bpf_user_ringbuf_drain(user_ring, callback, NULL, flags)`, followed
/// by the callback's instructions under the label "callback".
fn drain_program(user_ring: BorrowedFd<'_>, flags: u64, callback: &[Insn]) -> Program {
    let mut p = Program::new();
    p.extend(insn::ld_map_fd(R1, user_ring))
        .ld_pseudo_func_label(R2, "callback")
        .push(insn::mov64_imm(R3, 0))
        .push(insn::mov64_imm(R4, flags as i32))
        .push(insn::call_helper(helper::USER_RINGBUF_DRAIN))
        .push(insn::exit())
        .label("callback")
        .extend(callback.iter().copied());
    p
}

fn load_drainer(p: &Program, what: &str) -> Drainer {
    let callback = p.label_index("callback").expect("callback label") as u32;
    let (btf, func_info) = btf_main_and_callback(callback);
    Drainer {
        fd: load_xdp(p, Some((&btf, &func_info)))
            .unwrap_or_else(|error| panic!("load {what}: {error}")),
        packet: packet(64),
    }
}

/// A program that drains `user_ring` with `flags` (`NO_WAKEUP`, `FORCE_WAKEUP` or 0); its
/// callback accepts every sample and does nothing with it.
pub fn user_ringbuf_drain(user_ring: BorrowedFd<'_>, flags: u64) -> Drainer {
    let callback = [insn::mov64_imm(R0, 0), insn::exit()];
    load_drainer(&drain_program(user_ring, flags, &callback), "drain program")
}

/// Bytes of the scratch array value a [`user_ringbuf_forward`] program with `max_len` needs.
pub fn forward_scratch_size(max_len: u32) -> u32 {
    FORWARD_BUFFER + max_len
}

/// `bpf_dynptr_read(dst, len, src, offset, flags)` (include/uapi/linux/bpf.h).
const DYNPTR_READ: u32 = 201;

/// Offset of the copy buffer in the scratch value; before it: the probed length (u64) and the
/// failure counter (u64).
const FORWARD_BUFFER: u32 = 16;
/// Offset of the failure counter in the scratch value.
pub const FORWARD_FAILURES: usize = 8;

/// A program that drains `user_ring` and re-emits every sample, byte for byte, into the
/// RINGBUF `kernel_ring` (`bpf_ringbuf_output`). `scratch` is a one-element array whose value
/// is [`forward_scratch_size(max_len)`](forward_scratch_size) bytes; samples up to `max_len`
/// bytes are forwarded.
///
/// The callback learns each sample's length without helpers beyond `bpf_dynptr_read`: a
/// one-byte read at `offset` succeeds iff `offset < len`, so a binary search over the length
/// bits finds it. The search state lives in the scratch map value, so the verifier sees one
/// unknown scalar rather than a path per length. The sample is then copied into the scratch
/// value with `bpf_dynptr_read` and output. Failures (sample longer than `max_len`, ring full)
/// are counted at byte [`FORWARD_FAILURES`] of the scratch value (a `u64`).
pub fn user_ringbuf_forward(
    user_ring: BorrowedFd<'_>,
    kernel_ring: BorrowedFd<'_>,
    scratch: BorrowedFd<'_>,
    max_len: u32,
) -> Drainer {
    assert!(max_len >= 1);
    let top_bit = 31 - max_len.leading_zeros();
    let mut cb = Program::new();
    cb.push(insn::mov64_reg(R6, R1))
        // r9 = &scratch[0]
        .push(insn::st_mem(MemSize::W, R10, -4, 0))
        .extend(insn::ld_map_fd(R1, scratch))
        .push(insn::mov64_reg(R2, R10))
        .push(insn::alu64_imm(AluOp::ADD, R2, -4))
        .push(insn::call_helper(helper::MAP_LOOKUP_ELEM))
        .jmp_imm_label(JmpOp::JEQ, R0, 0, "no_scratch")
        .push(insn::mov64_reg(R9, R0))
        .push(insn::st_mem(MemSize::DW, R9, 0, 0));
    for bit in (0..=top_bit).rev() {
        let next = format!("bit{bit}");
        // r7 = found | 1 << bit; does byte r7 - 1 exist?
        cb.push(insn::ldx_mem(MemSize::DW, R7, R9, 0))
            .push(insn::alu64_imm(AluOp::OR, R7, 1 << bit))
            .push(insn::mov64_reg(R1, R10))
            .push(insn::alu64_imm(AluOp::ADD, R1, -16))
            .push(insn::mov64_imm(R2, 1))
            .push(insn::mov64_reg(R3, R6))
            .push(insn::mov64_reg(R4, R7))
            .push(insn::alu64_imm(AluOp::ADD, R4, -1))
            .push(insn::mov64_imm(R5, 0))
            .push(insn::call_helper(DYNPTR_READ))
            .jmp_imm_label(JmpOp::JNE, R0, 0, &next)
            .push(insn::stx_mem(MemSize::DW, R9, R7, 0))
            .label(&next);
    }
    cb.push(insn::ldx_mem(MemSize::DW, R8, R9, 0))
        .jmp_imm_label(JmpOp::JGT, R8, max_len as i32, "failed")
        // bpf_dynptr_read(&scratch.buffer, len, dynptr, 0, 0)
        .push(insn::mov64_reg(R1, R9))
        .push(insn::alu64_imm(AluOp::ADD, R1, FORWARD_BUFFER as i32))
        .push(insn::mov64_reg(R2, R8))
        .push(insn::mov64_reg(R3, R6))
        .push(insn::mov64_imm(R4, 0))
        .push(insn::mov64_imm(R5, 0))
        .push(insn::call_helper(DYNPTR_READ))
        .jmp_imm_label(JmpOp::JNE, R0, 0, "failed")
        // bpf_ringbuf_output(kernel_ring, &scratch.buffer, len, 0)
        .extend(insn::ld_map_fd(R1, kernel_ring))
        .push(insn::mov64_reg(R2, R9))
        .push(insn::alu64_imm(AluOp::ADD, R2, FORWARD_BUFFER as i32))
        .push(insn::mov64_reg(R3, R8))
        .push(insn::mov64_imm(R4, 0))
        .push(insn::call_helper(helper::RINGBUF_OUTPUT))
        .jmp_imm_label(JmpOp::JNE, R0, 0, "failed")
        .push(insn::mov64_imm(R0, 0))
        .push(insn::exit())
        .label("failed")
        .push(insn::ldx_mem(MemSize::DW, R1, R9, FORWARD_FAILURES as i16))
        .push(insn::alu64_imm(AluOp::ADD, R1, 1))
        .push(insn::stx_mem(MemSize::DW, R9, R1, FORWARD_FAILURES as i16))
        .push(insn::mov64_imm(R0, 0))
        .push(insn::exit())
        .label("no_scratch")
        .push(insn::mov64_imm(R0, 1))
        .push(insn::exit());
    let callback = cb.build().expect("assemble forward callback");
    load_drainer(&drain_program(user_ring, 0, &callback), "forward program")
}

/// The failure counter of a [`user_ringbuf_forward`] program's scratch map.
pub fn forward_failures(scratch: BorrowedFd<'_>, max_len: u32) -> u64 {
    let mut value = vec![0u8; forward_scratch_size(max_len) as usize];
    map_lookup_elem(scratch, &0u32.to_ne_bytes(), &mut value).expect("lookup scratch");
    u64::from_ne_bytes(
        value[FORWARD_FAILURES..FORWARD_FAILURES + 8]
            .try_into()
            .unwrap(),
    )
}

/// Tries to map `len` bytes of a map fd at `offset` with the given protection.
pub fn try_map(
    map: BorrowedFd<'_>,
    offset: usize,
    len: usize,
    prot: rustix::mm::ProtFlags,
) -> Result<Mapping, rustix::io::Errno> {
    Mapping::map_shared(map, offset as u64, len, prot)
}

/// `mprotect` on a whole mapping made by [`try_map`].
pub fn try_mprotect(
    mapping: &Mapping,
    prot: rustix::mm::MprotectFlags,
) -> Result<(), rustix::io::Errno> {
    // SAFETY: the range is exactly a mapping we own; changing its protection cannot affect
    // Rust-owned memory. Only raw pointers to it exist, so no reference is invalidated.
    unsafe { rustix::mm::mprotect(mapping.as_ptr().as_ptr().cast(), mapping.len(), prot) }
}

/// Raw write access to a USER_RINGBUF's producer page and data area, bypassing the protocol:
/// to post the malformed samples the kernel must reject.
pub struct RawUserRing {
    consumer_page: Mapping,
    producer_and_data: Mapping,
    size: usize,
}

impl RawUserRing {
    /// Maps the USER_RINGBUF `map` of `size` bytes (consumer page read-only, the rest
    /// read-write).
    pub fn new(map: BorrowedFd<'_>, size: usize) -> Self {
        use rustix::mm::ProtFlags;
        let page = page_size();
        RawUserRing {
            consumer_page: try_map(map, 0, page, ProtFlags::READ).expect("map consumer page"),
            producer_and_data: try_map(
                map,
                page,
                page + 2 * size,
                ProtFlags::READ | ProtFlags::WRITE,
            )
            .expect("map producer page and data"),
            size,
        }
    }

    fn word_u64(&self, mapping: &Mapping, offset: usize) -> &std::sync::atomic::AtomicU64 {
        assert!(offset % 8 == 0 && offset + 8 <= mapping.len());
        // SAFETY: in bounds (checked), 8-byte aligned (page-aligned mapping, offset multiple
        // of 8); the mapping lives as long as `self`; shared words are only accessed
        // atomically.
        unsafe {
            std::sync::atomic::AtomicU64::from_ptr(mapping.as_ptr().as_ptr().add(offset).cast())
        }
    }

    /// The kernel's `consumer_pos`.
    pub fn consumer_pos(&self) -> u64 {
        self.word_u64(&self.consumer_page, 0)
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// `producer_pos`.
    pub fn producer_pos(&self) -> u64 {
        self.word_u64(&self.producer_and_data, 0)
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Store-releases `producer_pos` (pairs with the kernel's smp_load_acquire in
    /// `__bpf_user_ringbuf_peek`).
    pub fn set_producer_pos(&self, position: u64) {
        self.word_u64(&self.producer_and_data, 0)
            .store(position, std::sync::atomic::Ordering::Release);
    }

    /// Writes the 8-byte header `{len, 0}` at ring position `position`.
    pub fn write_header(&self, position: u64, len: u32) {
        let offset = page_size() + (position as usize & (self.size - 1));
        self.word_u64(&self.producer_and_data, offset)
            .store(u64::from(len), std::sync::atomic::Ordering::Release);
    }
}

/// A private BPF filesystem mounted on a fresh temporary directory, for tests that pin
/// objects; unmounted (and the directory removed) on drop. Needs `CAP_SYS_ADMIN`; uses the
/// mount(2) system call, so no `mount` binary is needed.
pub struct PrivateBpffs {
    dir: std::path::PathBuf,
}

impl PrivateBpffs {
    /// Mounts a new bpffs instance on a new directory under the system's temporary directory.
    pub fn new() -> Result<Self, rustix::io::Errno> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "bpf-ringbuf-bpffs-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|_| rustix::io::Errno::IO)?;
        if let Err(errno) =
            rustix::mount::mount("bpf", &dir, "bpf", rustix::mount::MountFlags::empty(), None)
        {
            let _ = std::fs::remove_dir(&dir);
            return Err(errno);
        }
        Ok(PrivateBpffs { dir })
    }

    /// The mount point.
    pub fn path(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for PrivateBpffs {
    fn drop(&mut self) {
        // Detach even if a pin is still open elsewhere; the pins go with the instance.
        let _ = rustix::mount::unmount(&self.dir, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Overwrite mode (BPF_F_RB_OVERWRITE, Linux 6.19+).

/// A producer that reserves `len` bytes (a multiple of 8), increments a per-CPU sequence
/// counter (element 0 of `sequence`, a [`percpu_counter_map`]) and writes the new sequence
/// number into every 8-byte word of the record before submitting it: a record copied while
/// being overwritten mixes two numbers, so a torn copy is easy to see. A failed reservation
/// returns `XDP_DROP`.
pub fn sequence_filled(ring: BorrowedFd<'_>, sequence: BorrowedFd<'_>, len: u32) -> Producer {
    assert!(len >= 8 && len % 8 == 0);
    let mut p = Program::new();
    p.push(insn::st_mem(MemSize::W, R10, -4, 0))
        .extend(insn::ld_map_fd(R1, sequence))
        .push(insn::mov64_reg(R2, R10))
        .push(insn::alu64_imm(AluOp::ADD, R2, -4))
        .push(insn::call_helper(helper::MAP_LOOKUP_ELEM))
        .jmp_imm_label(JmpOp::JEQ, R0, 0, "fail")
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

// ---------------------------------------------------------------------------------------------
// Watching the kernel's wakeups on a ring map without reading the ring.

/// Epoll interest flags for [`SignalWatch::new`]: `IN` for a RINGBUF (data), `OUT` for a
/// USER_RINGBUF (space).
pub use bpf_ringbuf_sys::rustix::event::epoll::EventFlags;

/// Takes one event from the epoll set `epoll`, waiting up to `timeout` for it; returns whether
/// one came. The timeout is a deadline computed once: an interrupted `epoll_wait` (`EINTR`) is
/// retried with the time left, never with the whole timeout again.
///
/// Used on a [`SignalWatch`]'s own set, and on a reader's `epoll_fd()` to take a signal the
/// kernel already queued there (so that the reader's next wait counts only later ones).
pub fn epoll_signalled(epoll: BorrowedFd<'_>, timeout: std::time::Duration) -> bool {
    use bpf_ringbuf_sys::rustix::event::{epoll, Timespec};
    let deadline = std::time::Instant::now() + timeout;
    let mut events = [epoll::Event {
        flags: epoll::EventFlags::empty(),
        data: epoll::EventData::new_u64(0),
    }];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let left = Timespec::try_from(left).expect("timeout fits a timespec");
        match epoll::wait(epoll, &mut events[..], Some(&left)) {
            Ok(n) => return n > 0,
            Err(Errno::INTR) => continue,
            Err(errno) => panic!("epoll_wait: {errno}"),
        }
    }
}

/// An edge-triggered epoll set of its own on a ring map's fd: it sees the kernel's wakeups of
/// the map (`ringbuf_map_poll` readiness edges, raised by the kernel's irq_work) without
/// reading the ring, next to the ring's one reader or producer.
///
/// Create it *before* the step whose wakeup is in question: an edge after [`new`](Self::new)
/// is kept in the set until [`wait`](Self::wait) takes it. Readiness the fd already had when
/// the watch was made is dropped, so only signals sent after `new` count. As for every epoll
/// edge, the kernel re-polls the fd before reporting it: a signal for records that were read
/// before the `wait` is not reported.
pub struct SignalWatch {
    epoll: OwnedFd,
    /// A duplicate of the watched fd, so the registration lives as long as the watch.
    _fd: OwnedFd,
}

impl SignalWatch {
    /// Watches `fd` for `interest` (edge-triggered).
    pub fn new(fd: BorrowedFd<'_>, interest: EventFlags) -> Self {
        use bpf_ringbuf_sys::rustix::event::epoll;
        let fd = fd.try_clone_to_owned().expect("dup the watched fd");
        let set = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll_create");
        epoll::add(
            &set,
            &fd,
            epoll::EventData::new_u64(0),
            interest | epoll::EventFlags::ET,
        )
        .expect("add the fd to the watch's epoll set");
        // Adding a ready fd queues an event at once; it is no signal of the kernel's.
        epoll_signalled(set.as_fd(), std::time::Duration::ZERO);
        SignalWatch {
            epoll: set,
            _fd: fd,
        }
    }

    /// Whether the kernel signalled the fd since `new` or the last `wait` that returned
    /// `true`, waiting up to `timeout` for it (see [`epoll_signalled`]).
    pub fn wait(&self, timeout: std::time::Duration) -> bool {
        epoll_signalled(self.epoll.as_fd(), timeout)
    }
}

/// A RINGBUF's `consumer_pos`, mapped read-write as any process holding the map's fd may map
/// it: for tests that play the other writer the reader must detect.
pub struct ConsumerPosWriter(bpf_ringbuf_sys::Mapping);

impl ConsumerPosWriter {
    /// Maps the consumer page of `map` read-write.
    pub fn new(map: BorrowedFd<'_>) -> Self {
        let prot = rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE;
        Self(
            bpf_ringbuf_sys::Mapping::map_shared(map, 0, page_size(), prot)
                .expect("map the consumer page read-write"),
        )
    }

    fn word(&self) -> &std::sync::atomic::AtomicUsize {
        // SAFETY: the mapping is one page, page-aligned, read-write, and lives as long as
        // `self`; `consumer_pos` is its first word, shared with the kernel and the reader, so
        // it is only accessed atomically.
        unsafe { std::sync::atomic::AtomicUsize::from_ptr(self.0.as_ptr().as_ptr().cast()) }
    }

    /// Stores `position` as `consumer_pos`.
    pub fn store(&self, position: usize) {
        self.word()
            .store(position, std::sync::atomic::Ordering::SeqCst);
    }

    /// `consumer_pos` now.
    pub fn load(&self) -> usize {
        self.word().load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A ring map's two positions, watched through read-only mappings of its own: next to the
/// ring's one reader (the only one that may publish), for tests and benchmarks that need to see
/// the positions from another thread.
pub struct PositionWatch {
    consumer_page: bpf_ringbuf_sys::Mapping,
    producer_page: bpf_ringbuf_sys::Mapping,
}

impl PositionWatch {
    /// Maps the consumer page and the producer page of `map` read-only.
    pub fn new(map: BorrowedFd<'_>) -> Self {
        let page = bpf_ringbuf_sys::page_size();
        let read_only = rustix::mm::ProtFlags::READ;
        Self {
            consumer_page: bpf_ringbuf_sys::Mapping::map_shared(map, 0, page, read_only)
                .expect("map the consumer page read-only"),
            producer_page: bpf_ringbuf_sys::Mapping::map_shared(map, page as u64, page, read_only)
                .expect("map the producer page read-only"),
        }
    }

    fn word(page: &bpf_ringbuf_sys::Mapping) -> usize {
        // SAFETY: the page is mapped (and page-aligned) while `self` lives, and the kernel and
        // the reader access the word atomically; a relaxed load is sound on read-only memory.
        unsafe { std::sync::atomic::AtomicUsize::from_ptr(page.as_ptr().as_ptr().cast()) }
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `consumer_pos` now.
    pub fn consumer_pos(&self) -> usize {
        Self::word(&self.consumer_page)
    }

    /// `producer_pos` now.
    pub fn producer_pos(&self) -> usize {
        Self::word(&self.producer_page)
    }
}
