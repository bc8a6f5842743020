//! Real kernel events, not test runs: a program on the `sched/sched_process_exec` tracepoint
//! that writes one record per `exec` on the machine into a RINGBUF map, assembled here (no
//! clang) and attached as a raw tracepoint (`BPF_RAW_TRACEPOINT_OPEN`, no tracefs needed).
//!
//! The attach code lives here, in the unpublished test kit: the published crates read rings,
//! they do not load or attach programs.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::bpf::{bpf, owned_fd};
use crate::insn::{self, helper, AluOp, JmpOp, MemSize, Program, R0, R1, R2, R3, R7};
use crate::{prog_load, ProgLoad, ProgType};
use bpf_ringbuf_sys::{BpfError, Command, Errno};

/// `bpf_get_current_pid_tgid()` (include/uapi/linux/bpf.h).
const GET_CURRENT_PID_TGID: u32 = 14;
/// `bpf_get_current_comm(buf, size)`.
const GET_CURRENT_COMM: u32 = 16;

/// Size of an exec record.
pub const EXEC_EVENT_LEN: usize = 32;
/// Offset of the `u32` process id (the kernel's tgid) in an exec record.
pub const EXEC_EVENT_PID: usize = 0;
/// Offset of the `u32` thread id (the kernel's pid) of the thread that called `exec`.
pub const EXEC_EVENT_TID: usize = 4;
/// Offset of the `u64` time of the exec (`bpf_ktime_get_ns`, CLOCK_MONOTONIC).
pub const EXEC_EVENT_KTIME: usize = 8;
/// Offset of the 16-byte command name (`comm`, NUL-padded) the process has after the exec.
pub const EXEC_EVENT_COMM: usize = 16;

/// The tracepoint the program is attached to (`sched:sched_process_exec`, which the kernel
/// fires in `exec_binprm` once the new program is in place, so `comm` is already the new
/// program's name).
pub const EXEC_TRACEPOINT: &CStr = c"sched_process_exec";

/// An exec tracer: a loaded `BPF_PROG_TYPE_RAW_TRACEPOINT` program attached to
/// [`EXEC_TRACEPOINT`]. Each exec reserves [`EXEC_EVENT_LEN`] bytes in the ring and writes
///
/// ```text
/// u32 pid; u32 tid; u64 ktime_ns; char comm[16];
/// ```
///
/// (offsets [`EXEC_EVENT_PID`], ...), then submits it. A failed reservation (ring full)
/// increments element 0 of `drops`, a [`percpu_counter_map`](crate::percpu_counter_map).
/// Dropping the tracer detaches the program.
pub struct ExecTracer {
    // Field order: detach (close the raw tracepoint fd) before the program goes.
    link: OwnedFd,
    prog: OwnedFd,
}

impl ExecTracer {
    /// Loads the program for `ring` and attaches it.
    ///
    /// # Errors
    ///
    /// What `BPF_PROG_LOAD` (the verifier log included) or `BPF_RAW_TRACEPOINT_OPEN` report.
    pub fn attach(ring: BorrowedFd<'_>, drops: BorrowedFd<'_>) -> Result<Self, BpfError> {
        let insns = exec_program(ring, drops)
            .build()
            .expect("assemble exec program");
        let prog = prog_load(&ProgLoad {
            name: Some("exec_events"),
            ..ProgLoad::new(ProgType::RAW_TRACEPOINT, &insns, c"GPL")
        })?;
        let link = raw_tracepoint_open(EXEC_TRACEPOINT, prog.as_fd())
            .map_err(|errno| BpfError::new(Command::RawTracepointOpen, errno))?;
        Ok(ExecTracer { link, prog })
    }

    /// The program fd.
    pub fn prog_fd(&self) -> BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// The attachment's fd (closing it detaches the program).
    pub fn link_fd(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }
}

fn exec_program(ring: BorrowedFd<'_>, drops: BorrowedFd<'_>) -> Program {
    let mut p = Program::new();
    p.extend(insn::ld_map_fd(R1, ring))
        .push(insn::mov64_imm(R2, EXEC_EVENT_LEN as i32))
        .push(insn::mov64_imm(R3, 0))
        .push(insn::call_helper(helper::RINGBUF_RESERVE))
        .jmp_imm_label(JmpOp::JEQ, R0, 0, "dropped")
        .push(insn::mov64_reg(R7, R0))
        // r0 = tgid << 32 | pid: the process id is the upper half, the thread id the lower.
        .push(insn::call_helper(GET_CURRENT_PID_TGID))
        .push(insn::stx_mem(MemSize::W, R7, R0, EXEC_EVENT_TID as i16))
        .push(insn::alu64_imm(AluOp::RSH, R0, 32))
        .push(insn::stx_mem(MemSize::W, R7, R0, EXEC_EVENT_PID as i16))
        .push(insn::call_helper(helper::KTIME_GET_NS))
        .push(insn::stx_mem(MemSize::DW, R7, R0, EXEC_EVENT_KTIME as i16))
        .push(insn::mov64_reg(R1, R7))
        .push(insn::alu64_imm(AluOp::ADD, R1, EXEC_EVENT_COMM as i32))
        .push(insn::mov64_imm(R2, 16))
        .push(insn::call_helper(GET_CURRENT_COMM))
        .push(insn::mov64_reg(R1, R7))
        .push(insn::mov64_imm(R2, 0))
        .push(insn::call_helper(helper::RINGBUF_SUBMIT))
        .push(insn::mov64_imm(R0, 0))
        .push(insn::exit())
        // drops[cpu] += 1
        .label("dropped")
        .lookup_first_elem(drops, "out")
        .push(insn::ldx_mem(MemSize::DW, R1, R0, 0))
        .push(insn::alu64_imm(AluOp::ADD, R1, 1))
        .push(insn::stx_mem(MemSize::DW, R0, R1, 0))
        .label("out")
        .push(insn::mov64_imm(R0, 0))
        .push(insn::exit());
    p
}

/// The `BPF_RAW_TRACEPOINT_OPEN` member of `union bpf_attr` (through `prog_fd`: the fields
/// every kernel since 4.17 knows; later ones, such as `cookie`, are left out, which the
/// kernel reads as zero).
#[repr(C, align(8))]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

/// `BPF_RAW_TRACEPOINT_OPEN`: attaches `prog` to the raw tracepoint `name`; the returned fd
/// holds the attachment.
pub fn raw_tracepoint_open(name: &CStr, prog: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    let mut attr = RawTracepointAttr {
        name: name.as_ptr() as usize as u64,
        prog_fd: prog.as_raw_fd() as u32,
        _pad: 0,
    };
    // SAFETY: `attr` is the uapi layout of this command's attributes with every byte
    // initialized (explicit padding); the kernel reads it and a NUL-terminated string at
    // `name`, which `name` borrows for the whole call.
    let fd = unsafe { bpf(Command::RawTracepointOpen, &mut attr) }?;
    // SAFETY: a successful BPF_RAW_TRACEPOINT_OPEN returns a new fd that nothing else owns.
    Ok(unsafe { owned_fd(fd) })
}
