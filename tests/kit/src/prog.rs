//! Programs: loading (with the verifier log on failure) and test runs.

use core::fmt;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;

use bpf_ringbuf_sys::{BpfError, Command};

use crate::bpf::{bpf, object_name, owned_fd, FuncInfo, ProgLoadAttr, TestRunAttr, OBJ_NAME_LEN};
use crate::insn::Insn;

/// A program type (`enum bpf_prog_type`), transparent over `u32`.
///
/// [`Display`](fmt::Display) prints the uapi name (`BPF_PROG_TYPE_XDP`), `Debug` the constant.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ProgType(pub u32);

impl ProgType {
    /// `BPF_PROG_TYPE_UNSPEC`.
    pub const UNSPEC: ProgType = ProgType(0);
    /// `BPF_PROG_TYPE_SOCKET_FILTER`.
    pub const SOCKET_FILTER: ProgType = ProgType(1);
    /// `BPF_PROG_TYPE_KPROBE`.
    pub const KPROBE: ProgType = ProgType(2);
    /// `BPF_PROG_TYPE_SCHED_CLS`.
    pub const SCHED_CLS: ProgType = ProgType(3);
    /// `BPF_PROG_TYPE_SCHED_ACT`.
    pub const SCHED_ACT: ProgType = ProgType(4);
    /// `BPF_PROG_TYPE_TRACEPOINT`.
    pub const TRACEPOINT: ProgType = ProgType(5);
    /// `BPF_PROG_TYPE_XDP`.
    pub const XDP: ProgType = ProgType(6);
    /// `BPF_PROG_TYPE_PERF_EVENT`.
    pub const PERF_EVENT: ProgType = ProgType(7);
    /// `BPF_PROG_TYPE_CGROUP_SKB`.
    pub const CGROUP_SKB: ProgType = ProgType(8);
    /// `BPF_PROG_TYPE_CGROUP_SOCK`.
    pub const CGROUP_SOCK: ProgType = ProgType(9);
    /// `BPF_PROG_TYPE_LWT_IN`.
    pub const LWT_IN: ProgType = ProgType(10);
    /// `BPF_PROG_TYPE_LWT_OUT`.
    pub const LWT_OUT: ProgType = ProgType(11);
    /// `BPF_PROG_TYPE_LWT_XMIT`.
    pub const LWT_XMIT: ProgType = ProgType(12);
    /// `BPF_PROG_TYPE_SOCK_OPS`.
    pub const SOCK_OPS: ProgType = ProgType(13);
    /// `BPF_PROG_TYPE_SK_SKB`.
    pub const SK_SKB: ProgType = ProgType(14);
    /// `BPF_PROG_TYPE_CGROUP_DEVICE`.
    pub const CGROUP_DEVICE: ProgType = ProgType(15);
    /// `BPF_PROG_TYPE_SK_MSG`.
    pub const SK_MSG: ProgType = ProgType(16);
    /// `BPF_PROG_TYPE_RAW_TRACEPOINT`.
    pub const RAW_TRACEPOINT: ProgType = ProgType(17);
    /// `BPF_PROG_TYPE_CGROUP_SOCK_ADDR`.
    pub const CGROUP_SOCK_ADDR: ProgType = ProgType(18);
    /// `BPF_PROG_TYPE_LWT_SEG6LOCAL`.
    pub const LWT_SEG6LOCAL: ProgType = ProgType(19);
    /// `BPF_PROG_TYPE_LIRC_MODE2`.
    pub const LIRC_MODE2: ProgType = ProgType(20);
    /// `BPF_PROG_TYPE_SK_REUSEPORT`.
    pub const SK_REUSEPORT: ProgType = ProgType(21);
    /// `BPF_PROG_TYPE_FLOW_DISSECTOR`.
    pub const FLOW_DISSECTOR: ProgType = ProgType(22);
    /// `BPF_PROG_TYPE_CGROUP_SYSCTL`.
    pub const CGROUP_SYSCTL: ProgType = ProgType(23);
    /// `BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE`.
    pub const RAW_TRACEPOINT_WRITABLE: ProgType = ProgType(24);
    /// `BPF_PROG_TYPE_CGROUP_SOCKOPT`.
    pub const CGROUP_SOCKOPT: ProgType = ProgType(25);
    /// `BPF_PROG_TYPE_TRACING`.
    pub const TRACING: ProgType = ProgType(26);
    /// `BPF_PROG_TYPE_STRUCT_OPS`.
    pub const STRUCT_OPS: ProgType = ProgType(27);
    /// `BPF_PROG_TYPE_EXT`.
    pub const EXT: ProgType = ProgType(28);
    /// `BPF_PROG_TYPE_LSM`.
    pub const LSM: ProgType = ProgType(29);
    /// `BPF_PROG_TYPE_SK_LOOKUP`.
    pub const SK_LOOKUP: ProgType = ProgType(30);
    /// `BPF_PROG_TYPE_SYSCALL`.
    pub const SYSCALL: ProgType = ProgType(31);
    /// `BPF_PROG_TYPE_NETFILTER`.
    pub const NETFILTER: ProgType = ProgType(32);

    /// The name of a known type without the `BPF_PROG_TYPE_` prefix, e.g. `"XDP"`.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            ProgType::UNSPEC => "UNSPEC",
            ProgType::SOCKET_FILTER => "SOCKET_FILTER",
            ProgType::KPROBE => "KPROBE",
            ProgType::SCHED_CLS => "SCHED_CLS",
            ProgType::SCHED_ACT => "SCHED_ACT",
            ProgType::TRACEPOINT => "TRACEPOINT",
            ProgType::XDP => "XDP",
            ProgType::PERF_EVENT => "PERF_EVENT",
            ProgType::CGROUP_SKB => "CGROUP_SKB",
            ProgType::CGROUP_SOCK => "CGROUP_SOCK",
            ProgType::LWT_IN => "LWT_IN",
            ProgType::LWT_OUT => "LWT_OUT",
            ProgType::LWT_XMIT => "LWT_XMIT",
            ProgType::SOCK_OPS => "SOCK_OPS",
            ProgType::SK_SKB => "SK_SKB",
            ProgType::CGROUP_DEVICE => "CGROUP_DEVICE",
            ProgType::SK_MSG => "SK_MSG",
            ProgType::RAW_TRACEPOINT => "RAW_TRACEPOINT",
            ProgType::CGROUP_SOCK_ADDR => "CGROUP_SOCK_ADDR",
            ProgType::LWT_SEG6LOCAL => "LWT_SEG6LOCAL",
            ProgType::LIRC_MODE2 => "LIRC_MODE2",
            ProgType::SK_REUSEPORT => "SK_REUSEPORT",
            ProgType::FLOW_DISSECTOR => "FLOW_DISSECTOR",
            ProgType::CGROUP_SYSCTL => "CGROUP_SYSCTL",
            ProgType::RAW_TRACEPOINT_WRITABLE => "RAW_TRACEPOINT_WRITABLE",
            ProgType::CGROUP_SOCKOPT => "CGROUP_SOCKOPT",
            ProgType::TRACING => "TRACING",
            ProgType::STRUCT_OPS => "STRUCT_OPS",
            ProgType::EXT => "EXT",
            ProgType::LSM => "LSM",
            ProgType::SK_LOOKUP => "SK_LOOKUP",
            ProgType::SYSCALL => "SYSCALL",
            ProgType::NETFILTER => "NETFILTER",
            _ => return None,
        })
    }
}

impl fmt::Display for ProgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "BPF_PROG_TYPE_{name}"),
            None => write!(f, "BPF_PROG_TYPE({})", self.0),
        }
    }
}

impl fmt::Debug for ProgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "ProgType::{name}"),
            None => write!(f, "ProgType({})", self.0),
        }
    }
}

/// `enum xdp_action`: XDP program return values.
pub mod xdp_action {
    /// `XDP_ABORTED`.
    pub const ABORTED: i32 = 0;
    /// `XDP_DROP`.
    pub const DROP: i32 = 1;
    /// `XDP_PASS`.
    pub const PASS: i32 = 2;
    /// `XDP_TX`.
    pub const TX: i32 = 3;
    /// `XDP_REDIRECT`.
    pub const REDIRECT: i32 = 4;
}

/// Size of the verifier log buffer used when a load fails (1 MiB).
pub const LOG_BUFFER_SIZE: usize = 1 << 20;

/// Arguments of [`prog_load`].
#[derive(Clone, Copy, Debug)]
pub struct ProgLoad<'a> {
    /// The program type.
    pub prog_type: ProgType,
    /// The instructions.
    pub insns: &'a [Insn],
    /// The license; GPL-only helpers (all ring buffer helpers) need a GPL-compatible one.
    pub license: &'a CStr,
    /// Optional name: at most 15 bytes of ASCII alphanumerics, `_` and `.`.
    pub name: Option<&'a str>,
    /// The BTF object that `func_info` refers to (see [`btf_load`](crate::btf_load)).
    pub btf_fd: Option<BorrowedFd<'a>>,
    /// One record per subprogram (the main program at instruction 0 included), sorted by
    /// instruction; required when the program passes callbacks. Empty for none.
    pub func_info: &'a [FuncInfo],
    /// `prog_flags` (`BPF_F_STRICT_ALIGNMENT`, `BPF_F_SLEEPABLE`, `BPF_F_XDP_HAS_FRAGS`, ...).
    pub prog_flags: u32,
    /// `expected_attach_type` (`enum bpf_attach_type`), 0 for most types.
    pub expected_attach_type: u32,
}

impl<'a> ProgLoad<'a> {
    /// A program of `prog_type` with no name, BTF or flags.
    pub const fn new(prog_type: ProgType, insns: &'a [Insn], license: &'a CStr) -> Self {
        ProgLoad {
            prog_type,
            insns,
            license,
            name: None,
            btf_fd: None,
            func_info: &[],
            prog_flags: 0,
            expected_attach_type: 0,
        }
    }
}

/// Issues BPF_PROG_LOAD, with a log buffer when `log` is given. Retries `EAGAIN` a few times
/// as libbpf does (the verifier can ask for a retry).
fn prog_load_once(
    load: &ProgLoad<'_>,
    prog_name: [u8; OBJ_NAME_LEN],
    log: Option<&mut [u8]>,
) -> Result<OwnedFd, Errno> {
    let insn_cnt = u32::try_from(load.insns.len()).map_err(|_| Errno::TOOBIG)?;
    let func_info_cnt = u32::try_from(load.func_info.len()).map_err(|_| Errno::TOOBIG)?;
    let mut raw = ProgLoadAttr {
        prog_type: load.prog_type.0,
        insn_cnt,
        insns: load.insns.as_ptr() as usize as u64,
        license: load.license.as_ptr() as usize as u64,
        prog_flags: load.prog_flags,
        prog_name,
        expected_attach_type: load.expected_attach_type,
        ..ProgLoadAttr::default()
    };
    if let Some(btf) = load.btf_fd {
        raw.prog_btf_fd = btf.as_raw_fd() as u32;
    }
    if !load.func_info.is_empty() {
        raw.func_info_rec_size = core::mem::size_of::<FuncInfo>() as u32;
        raw.func_info = load.func_info.as_ptr() as usize as u64;
        raw.func_info_cnt = func_info_cnt;
    }
    if let Some(log) = log {
        raw.log_level = 1;
        // The kernel requires log_size >= 128 and < UINT_MAX >> 2.
        raw.log_size = u32::try_from(log.len()).map_err(|_| Errno::TOOBIG)?;
        raw.log_buf = log.as_mut_ptr() as usize as u64;
    }
    let mut attempts = 0;
    loop {
        // SAFETY: `ProgLoadAttr` is the BPF_PROG_LOAD layout with no implicit padding. The
        // kernel reads `insn_cnt` instructions (8 bytes each, `Insn` is `struct bpf_insn`)
        // from `insns`, a NUL-terminated string from `license`, `func_info_cnt` records of
        // `func_info_rec_size` = 8 bytes (`FuncInfo` is `struct bpf_func_info`) from
        // `func_info`, and writes at most `log_size` bytes to `log_buf`. All of these point
        // into borrows (`load`, `log`) that outlive the call.
        match unsafe { bpf(Command::ProgLoad, &mut raw) } {
            // SAFETY: a successful BPF_PROG_LOAD returns a new descriptor owned by the caller.
            Ok(fd) => return Ok(unsafe { owned_fd(fd) }),
            Err(Errno::AGAIN) if attempts < 5 => attempts += 1,
            Err(errno) => return Err(errno),
        }
    }
}

/// `BPF_PROG_LOAD`: verifies and loads a program, returning its file descriptor.
///
/// The first attempt runs without a verifier log. If it fails, the load is repeated once with
/// `log_level = 1` and a [`LOG_BUFFER_SIZE`] buffer, and the error carries the `errno` of the
/// first attempt and the log of the second ([`BpfError::log`]).
///
/// # Errors
///
/// `EACCES` or `EINVAL` when the verifier rejects the program, `EPERM` without `CAP_BPF`
/// (plus `CAP_PERFMON`/`CAP_NET_ADMIN` for some types), `E2BIG` for too many instructions;
/// `EINVAL` without a system call for a bad name.
pub fn prog_load(load: &ProgLoad<'_>) -> Result<OwnedFd, BpfError> {
    let prog_name = object_name(load.name).ok_or(BpfError::new(Command::ProgLoad, Errno::INVAL))?;
    let errno = match prog_load_once(load, prog_name, None) {
        Ok(fd) => return Ok(fd),
        Err(errno) => errno,
    };
    if errno == Errno::PERM || errno == Errno::TOOBIG {
        // No verifier ran (missing privilege, or a count too large): no log to fetch.
        return Err(BpfError::new(Command::ProgLoad, errno));
    }
    let mut log = vec![0u8; LOG_BUFFER_SIZE];
    match prog_load_once(load, prog_name, Some(&mut log)) {
        // A retry that passes (it should not: verification is deterministic) is still a
        // loaded program.
        Ok(fd) => Ok(fd),
        Err(_) => Err(BpfError::new(Command::ProgLoad, errno).with_log(&log)),
    }
}

/// Arguments of [`prog_test_run`] (`BPF_PROG_TEST_RUN`).
#[derive(Clone, Copy, Debug, Default)]
pub struct TestRun<'a> {
    /// The packet (or other input) the program sees; XDP needs at least 14 bytes (an Ethernet
    /// header).
    pub data_in: &'a [u8],
    /// How many times to run the program (0 behaves as 1).
    pub repeat: u32,
    /// `BPF_F_TEST_RUN_ON_CPU` (1), `BPF_F_TEST_XDP_LIVE_FRAMES` (2), ...
    pub flags: u32,
    /// The CPU to run on with `BPF_F_TEST_RUN_ON_CPU`.
    pub cpu: u32,
}

/// Results of [`prog_test_run`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The program's return value (of the last run).
    pub retval: u32,
    /// Average duration of one run in nanoseconds.
    pub duration_ns: u32,
    /// Size of the output packet (not copied out: no output buffer is passed).
    pub data_size_out: u32,
}

/// `BPF_PROG_TEST_RUN`: runs `prog` on `run.data_in`, `run.repeat` times, in the kernel.
///
/// # Errors
///
/// `EINVAL` for input the program type refuses (e.g. XDP data shorter than 14 bytes),
/// `ENOTSUPP`-style errors for types without test-run support.
pub fn prog_test_run(prog: BorrowedFd<'_>, run: &TestRun<'_>) -> Result<TestRunOutput, BpfError> {
    let data_size_in = u32::try_from(run.data_in.len())
        .map_err(|_| BpfError::new(Command::ProgTestRun, Errno::TOOBIG))?;
    let mut raw = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in,
        data_in: run.data_in.as_ptr() as usize as u64,
        repeat: run.repeat,
        flags: run.flags,
        cpu: run.cpu,
        ..TestRunAttr::default()
    };
    // SAFETY: `TestRunAttr` is the BPF_PROG_TEST_RUN layout with no implicit padding. The
    // kernel reads `data_size_in` bytes from `data_in` (a live borrow); `data_out`, `ctx_in`
    // and `ctx_out` are null with zero sizes, so nothing is written through them.
    unsafe { bpf(Command::ProgTestRun, &mut raw) }
        .map_err(|errno| BpfError::new(Command::ProgTestRun, errno))?;
    Ok(TestRunOutput {
        retval: raw.retval,
        duration_ns: raw.duration,
        data_size_out: raw.data_size_out,
    })
}

#[cfg(test)]
mod tests {
    use super::ProgType;

    #[test]
    fn prog_type_values() {
        assert_eq!(ProgType::SOCKET_FILTER.0, 1);
        assert_eq!(ProgType::XDP.0, 6);
        assert_eq!(ProgType::SYSCALL.0, 31);
        assert_eq!(ProgType::XDP.to_string(), "BPF_PROG_TYPE_XDP");
        assert_eq!(format!("{:?}", ProgType(99)), "ProgType(99)");
    }
}
