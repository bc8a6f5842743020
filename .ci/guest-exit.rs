//! `guest-exit CODE`: reports CODE (0..=127) to the host from inside a qemu guest of
//! `.ci/kernel-matrix` by writing it to qemu's `isa-debug-exit` device at I/O port 0xf4, which
//! ends qemu with exit status `(CODE << 1) | 1`. The cloud kernels have no `/dev/port`, so the
//! port is opened with `ioperm(2)` and written with `out`. Built alone with `rustc` for
//! `x86_64-unknown-linux-musl` (a static binary for the initramfs); not part of the workspace.

use std::arch::asm;
use std::process::ExitCode;

/// The `isa-debug-exit` device's port (`-device isa-debug-exit,iobase=0xf4`).
const DEBUG_EXIT_PORT: u16 = 0xf4;
/// `__NR_ioperm` on x86_64.
const SYS_IOPERM: usize = 173;

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
