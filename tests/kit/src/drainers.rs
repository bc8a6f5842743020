//! USER_RINGBUF drainers: XDP programs that call `bpf_user_ringbuf_drain` on what user space
//! produced.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use bpf_ringbuf_sys::map_lookup_elem;

use crate::insn::{
    self, helper, AluOp, Insn, JmpOp, MemSize, Program, R0, R1, R10, R2, R3, R4, R5, R6, R7, R8, R9,
};
use crate::producers::btf_main_and_callback;
use crate::producers::load_xdp;
use crate::producers::packet;
use crate::prog::prog_test_run;
use crate::prog::TestRun;

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
        .lookup_first_elem(scratch, "no_scratch")
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
