//! The raw `bpf(2)` system call.
//!
//! rustix does not wrap `bpf(2)` and has no generic raw-syscall entry point, so this module issues
//! the system call itself. It is the only place in the crate that does.
//!
//! - x86_64, aarch64, riscv64: inline assembly (stable on these since Rust 1.59, below the MSRV).
//! - powerpc64 (big- and little-endian) and s390x: the C library's `syscall()` through the `libc`
//!   crate. Inline assembly for these architectures became stable only after the crate's MSRV
//!   (s390x in Rust 1.84, PowerPC later still), and rustix itself goes through libc there (its
//!   raw-syscall backend needs an opt-in cfg on these architectures), so libc is linked anyway.
//!   `syscall()` also hides powerpc's error convention (a positive errno in r3 with CR0.SO set),
//!   which a hand-written arm would have to decode. The system-call *number* stays ours, from the
//!   kernel's table, as for the other architectures.

use rustix::io::Errno;

use crate::{BpfError, Command};

/// `__NR_bpf` for the target architecture: `arch/x86/entry/syscalls/syscall_64.tbl` (x86_64),
/// the generic `include/uapi/asm-generic/unistd.h` table (aarch64, riscv64),
/// `arch/powerpc/kernel/syscalls/syscall.tbl` (powerpc64, `common`) and
/// `arch/s390/kernel/syscalls/syscall.tbl` (s390x, `common`).
#[cfg(target_arch = "x86_64")]
const SYS_BPF: usize = 321;
#[cfg(any(target_arch = "aarch64", target_arch = "riscv64"))]
const SYS_BPF: usize = 280;
#[cfg(target_arch = "powerpc64")]
const SYS_BPF: usize = 361;
#[cfg(target_arch = "s390x")]
const SYS_BPF: usize = 351;

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "powerpc64",
    target_arch = "s390x"
)))]
compile_error!(
    "bpf-ringbuf-sys: the bpf(2) system call is only wired up for x86_64, aarch64, riscv64, \
     powerpc64 and s390x"
);

/// Issues `bpf(command, attr, size_of::<T>())`.
///
/// Returns the non-negative return value of the system call (a new file descriptor for the
/// commands that create one, zero for the others), or a [`BpfError`] naming `command` and the
/// `errno` the kernel reported: the command is named once, so the one in an error is always
/// the one issued.
///
/// # Safety
///
/// - `T` must be the `#[repr(C)]` layout of the `union bpf_attr` member that `command` reads,
///   with every byte initialized (no implicit padding): the kernel reads `size_of::<T>()` bytes
///   and rejects non-zero bytes beyond the fields it knows.
/// - Every pointer stored in `attr` must be valid for the reads and writes the kernel performs
///   through it for `command`, for the lengths stored next to it, for the duration of the call.
pub(crate) unsafe fn bpf<T>(command: Command, attr: &mut T) -> Result<usize, BpfError> {
    let size = core::mem::size_of::<T>();
    let attr = (attr as *mut T).cast::<u8>();
    // SAFETY: the kernel reads and writes `size` bytes at `attr`, which is a live, exclusive
    // borrow of a `T` of exactly that size; the caller guarantees the pointers inside it are
    // valid (see `# Safety`). The asm block declares every register the system-call ABI
    // clobbers and does not declare `nomem`/`readonly`, so the compiler assumes the kernel
    // may read and write memory reachable from the arguments. No stack is used.
    let ret = unsafe { raw_syscall3(SYS_BPF, command as usize, attr as usize, size) };
    // The kernel returns `-errno` in the range -4095..=-1 on failure.
    if (-4095..0).contains(&ret) {
        Err(BpfError::new(
            command,
            Errno::from_raw_os_error(-ret as i32),
        ))
    } else {
        Ok(ret as usize)
    }
}

/// A three-argument system call. Returns the raw kernel return value.
///
/// # Safety
///
/// The caller must uphold the contract of system call `number` with these arguments.
#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn raw_syscall3(number: usize, arg0: usize, arg1: usize, arg2: usize) -> isize {
    let ret: isize;
    // SAFETY: x86_64 Linux system-call ABI: number in rax, arguments in rdi/rsi/rdx, result in
    // rax; the `syscall` instruction clobbers rcx and r11. The caller upholds the contract of
    // the call itself.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") number as isize => ret,
            in("rdi") arg0,
            in("rsi") arg1,
            in("rdx") arg2,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// A three-argument system call. Returns the raw kernel return value.
///
/// # Safety
///
/// The caller must uphold the contract of system call `number` with these arguments.
#[cfg(target_arch = "aarch64")]
#[inline]
unsafe fn raw_syscall3(number: usize, arg0: usize, arg1: usize, arg2: usize) -> isize {
    let ret: isize;
    // SAFETY: aarch64 Linux system-call ABI: number in x8, arguments in x0..x2, result in x0;
    // `svc 0` preserves every other register. The caller upholds the contract of the call.
    unsafe {
        core::arch::asm!(
            "svc 0",
            in("x8") number,
            inlateout("x0") arg0 as isize => ret,
            in("x1") arg1,
            in("x2") arg2,
            options(nostack),
        );
    }
    ret
}

/// A three-argument system call. Returns the raw kernel return value.
///
/// # Safety
///
/// The caller must uphold the contract of system call `number` with these arguments.
#[cfg(target_arch = "riscv64")]
#[inline]
unsafe fn raw_syscall3(number: usize, arg0: usize, arg1: usize, arg2: usize) -> isize {
    let ret: isize;
    // SAFETY: riscv64 Linux system-call ABI: number in a7, arguments in a0..a2, result in a0;
    // `ecall` preserves every other register. The caller upholds the contract of the call.
    unsafe {
        core::arch::asm!(
            "ecall",
            in("a7") number,
            inlateout("a0") arg0 as isize => ret,
            in("a1") arg1,
            in("a2") arg2,
            options(nostack),
        );
    }
    ret
}

/// A three-argument system call. Returns the raw kernel return value (`-errno` on failure, as
/// the other arms).
///
/// # Safety
///
/// The caller must uphold the contract of system call `number` with these arguments.
#[cfg(any(target_arch = "powerpc64", target_arch = "s390x"))]
#[inline]
unsafe fn raw_syscall3(number: usize, arg0: usize, arg1: usize, arg2: usize) -> isize {
    // `syscall(long number, ...)`: on these 64-bit targets `c_long` and `usize` are both 64
    // bits, so each argument reaches its register unchanged.
    const _: () = assert!(core::mem::size_of::<libc::c_long>() == core::mem::size_of::<usize>());
    // SAFETY: libc's `syscall` loads the number and arguments into the registers of the
    // architecture's system-call ABI, traps, and maps a failure to -1 with errno set; it
    // touches no memory but errno. The caller upholds the contract of the call itself.
    let ret = unsafe { libc::syscall(number as libc::c_long, arg0, arg1, arg2) };
    if ret == -1 {
        // errno is thread-local and was set by this call (syscall() returns -1 only on
        // failure for bpf(2), whose successful results are non-negative).
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        -(errno as isize)
    } else {
        ret as isize
    }
}

/// Wraps a file descriptor the kernel just returned from a creating command.
///
/// # Safety
///
/// `raw` must be a file descriptor newly created for the caller (the return value of a
/// successful fd-creating `bpf` command), not owned by anything else.
pub(crate) unsafe fn owned_fd(raw: usize) -> std::os::fd::OwnedFd {
    use std::os::fd::{FromRawFd, RawFd};
    // SAFETY: the caller guarantees `raw` is a fresh descriptor that nothing else owns; the
    // kernel never returns a descriptor above `i32::MAX`.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(raw as RawFd) }
}
