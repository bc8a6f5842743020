//! `guest-exit CODE`: reports CODE (0..=127) to the host from inside a qemu guest of
//! `.ci/kernel-matrix` by ending qemu with exit status `(CODE << 1) | 1` (so 0, what qemu
//! returns on a plain poweroff, means "no report"):
//!
//! - x86_64: writes CODE to qemu's `isa-debug-exit` device at I/O port 0xf4, which exits with
//!   `(CODE << 1) | 1` itself. The cloud kernels have no `/dev/port`, so the port is opened
//!   with `ioperm(2)` and written with `out`.
//! - aarch64: Arm semihosting `SYS_EXIT` (`hlt #0xf000`, allowed from user space by qemu's
//!   `-semihosting-config enable=on,userspace=on`) with reason `ADP_Stopped_ApplicationExit`;
//!   qemu exits with the subcode as given, so the program passes `(CODE << 1) | 1`.
//!
//! Built alone with `rustc` for the guest's static target (a binary for the initramfs); not
//! part of the workspace. The ppc64el and s390x guests have no such device: the host reads
//! the status line their /init prints.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(code) = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse::<u8>().ok())
    else {
        eprintln!("usage: guest-exit CODE (0..=127)");
        return ExitCode::from(2);
    };
    if code > 127 {
        eprintln!("guest-exit: {code} does not fit qemu's exit status");
        return ExitCode::from(2);
    }
    exit_qemu(code)
}

#[cfg(target_arch = "x86_64")]
fn exit_qemu(code: u8) -> ExitCode {
    use std::arch::asm;

    /// The `isa-debug-exit` device's port (`-device isa-debug-exit,iobase=0xf4`).
    const DEBUG_EXIT_PORT: u16 = 0xf4;
    /// `__NR_ioperm` on x86_64.
    const SYS_IOPERM: usize = 173;

    let result: isize;
    // SAFETY: ioperm(from, num, turn_on) takes three integers and touches no memory of ours;
    // the syscall instruction clobbers rcx and r11, declared here.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_IOPERM => result,
            in("rdi") usize::from(DEBUG_EXIT_PORT),
            in("rsi") 4usize,
            in("rdx") 1usize,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if result != 0 {
        eprintln!("guest-exit: ioperm failed (errno {})", -result);
        return ExitCode::from(1);
    }
    // SAFETY: ioperm above granted this process the port; writing it makes qemu exit, which
    // affects no memory of this process.
    unsafe {
        asm!("out dx, eax", in("dx") DEBUG_EXIT_PORT, in("eax") u32::from(code), options(nostack, nomem));
    }
    // Only reached when no isa-debug-exit device is present.
    eprintln!("guest-exit: still running after writing port {DEBUG_EXIT_PORT:#x}: no isa-debug-exit device?");
    ExitCode::from(1)
}

#[cfg(target_arch = "aarch64")]
fn exit_qemu(code: u8) -> ExitCode {
    use std::arch::asm;

    /// Semihosting operation `SYS_EXIT`.
    const SYS_EXIT: u64 = 0x18;
    /// `ADP_Stopped_ApplicationExit`: the reason that makes qemu exit with the subcode.
    const APPLICATION_EXIT: u64 = 0x20026;

    let block: [u64; 2] = [APPLICATION_EXIT, (u64::from(code) << 1) | 1];
    // SAFETY: the semihosting call reads the two words of `block` (live for the call) and
    // makes qemu exit; it writes no memory of this process. With semihosting disabled or not
    // allowed from user space the instruction raises SIGILL, which ends the process.
    unsafe {
        asm!("hlt #0xf000", in("x0") SYS_EXIT, in("x1") block.as_ptr(), options(nostack, readonly));
    }
    eprintln!("guest-exit: still running after semihosting SYS_EXIT: semihosting not enabled?");
    ExitCode::from(1)
}
