//! The kernel-test policy (see the crate docs) and the probes for kernel features that tests
//! skip without.

use bpf_ringbuf::probe::{self, Support};
use bpf_ringbuf_sys::{Errno, MapFlags, MapType};

use crate::insn::{self, helper, Program, R0, R1, R2, R3, R4};
use crate::producers::btf_main_and_callback;
use crate::producers::load_xdp;
use crate::XDP_PASS;

/// Whether bpf(2) works here and has ring maps (`bpf_ringbuf::probe::probe_ringbuf`). Panics if
/// not and `BPF_RINGBUF_REQUIRE_KERNEL=1`.
pub fn kernel_available() -> bool {
    let problem = match probe::probe_ringbuf() {
        Ok(Support::Supported) => return true,
        Ok(Support::Unsupported { reason }) => reason,
        Err(error) => {
            format!("bpf() does not work here ({error}); kernel tests need root or CAP_BPF")
        }
    };
    if required() {
        panic!("BPF_RINGBUF_REQUIRE_KERNEL=1 but {problem}");
    }
    eprintln!("skipped: {problem} (set BPF_RINGBUF_REQUIRE_KERNEL=1 to make this a failure)");
    false
}

/// Whether `BPF_RINGBUF_REQUIRE_KERNEL=1`: a missing kernel, or a missing feature on a kernel
/// that should have it, fails instead of skipping.
fn required() -> bool {
    std::env::var("BPF_RINGBUF_REQUIRE_KERNEL").is_ok_and(|v| v == "1")
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

/// The running kernel's release (`uname -r`), as the crate reads it.
pub use bpf_ringbuf::probe::kernel_release;

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

/// `None` when the kernel has the ring map type `map_type` with the creation `flags`
/// (`bpf_ringbuf::probe::probe_map_flags`); otherwise the probe's reason. `since` is the first
/// mainline (major, minor) with the feature, known here independently of the crate: a kernel
/// at least that new that lacks it fails the test under `BPF_RINGBUF_REQUIRE_KERNEL=1` (a
/// broken probe or a kernel built without the feature must not pass as a skip). A probe that
/// gets no answer (no `CAP_BPF`, say) panics; tests call [`require_kernel!`] first.
pub fn ring_flags_missing(map_type: MapType, flags: MapFlags, since: (u32, u32)) -> Option<String> {
    let reason = match probe::probe_map_flags(map_type, flags) {
        Ok(Support::Supported) => return None,
        Ok(Support::Unsupported { reason }) => reason,
        Err(error) => panic!("probing {map_type} with {flags:?}: {error}"),
    };
    assert!(
        !(required() && kernel_version() >= since),
        "{reason}, although mainline has it since {}.{}",
        since.0,
        since.1
    );
    Some(reason)
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
    let release = kernel_release();
    assert!(
        !(required() && has_jit),
        "Linux {release} has a BPF JIT but refuses a bpf_loop callback: {error}"
    );
    Some(format!(
        "Linux {release} ({}) has no BPF JIT, and the verifier allows callbacks \
         (bpf_loop, bpf_user_ringbuf_drain) only in JIT-compiled programs",
        std::env::consts::ARCH
    ))
}
