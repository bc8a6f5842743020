//! The kit's own `bpf(2)` calls: the program and BTF commands that only tests, examples and
//! benchmarks issue (loading programs, test runs, raw tracepoints). The published
//! `bpf-ringbuf-sys` wraps only the map commands the crate itself needs.
//!
//! The call goes through the C library's `syscall()` (the `libc` crate), which every
//! architecture the kernel matrix covers has; failures are `bpf_ringbuf_sys::BpfError`s, as the
//! sys layer's, so a test reads one error type.

use std::os::fd::{FromRawFd, OwnedFd};

use bpf_ringbuf_sys::{Command, Errno};

/// `BPF_OBJ_NAME_LEN`: object names are at most 15 bytes plus a NUL.
pub(crate) const OBJ_NAME_LEN: usize = 16;

/// Issues `bpf(command, attr, size_of::<T>())`; returns the non-negative result.
///
/// # Safety
///
/// `T` must be the `#[repr(C)]` layout of the `union bpf_attr` member `command` reads, with
/// every byte initialized, and every pointer in it valid for what the kernel reads and writes
/// through it for the duration of the call.
pub(crate) unsafe fn bpf<T>(command: Command, attr: &mut T) -> Result<usize, Errno> {
    // SAFETY: the caller's contract (see `# Safety`); the kernel reads `size_of::<T>()` bytes
    // of a live, exclusive borrow of a `T`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command as libc::c_long,
            attr as *mut T,
            core::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ))
    } else {
        Ok(ret as usize)
    }
}

/// Wraps a descriptor a creating command just returned.
///
/// # Safety
///
/// `raw` must be a new descriptor nothing else owns (a successful fd-creating command's result).
pub(crate) unsafe fn owned_fd(raw: usize) -> OwnedFd {
    // SAFETY: the caller guarantees a fresh descriptor; the kernel never returns one above
    // `i32::MAX`.
    unsafe { OwnedFd::from_raw_fd(raw as i32) }
}

/// `name` as an object-name field: `None` unless it is at most 15 bytes without a NUL.
///
/// The same rule as `bpf-ringbuf-sys`'s private one for map names, written again here on
/// purpose: program names are the kit's business, and exporting the helper would put it in
/// the published crate's API for the test kit's sake.
pub(crate) fn object_name(name: Option<&str>) -> Option<[u8; OBJ_NAME_LEN]> {
    let mut field = [0u8; OBJ_NAME_LEN];
    if let Some(name) = name {
        let bytes = name.as_bytes();
        if bytes.len() >= OBJ_NAME_LEN || bytes.contains(&0) {
            return None;
        }
        field[..bytes.len()].copy_from_slice(bytes);
    }
    Some(field)
}

/// The `BPF_PROG_LOAD` member of `union bpf_attr`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ProgLoadAttr {
    pub prog_type: u32,
    pub insn_cnt: u32,
    pub insns: u64,
    pub license: u64,
    pub log_level: u32,
    pub log_size: u32,
    pub log_buf: u64,
    pub kern_version: u32,
    pub prog_flags: u32,
    pub prog_name: [u8; OBJ_NAME_LEN],
    pub prog_ifindex: u32,
    pub expected_attach_type: u32,
    pub prog_btf_fd: u32,
    pub func_info_rec_size: u32,
    pub func_info: u64,
    pub func_info_cnt: u32,
    pub line_info_rec_size: u32,
    pub line_info: u64,
    pub line_info_cnt: u32,
    pub attach_btf_id: u32,
    /// `attach_prog_fd` or `attach_btf_obj_fd`.
    pub attach_prog_fd: u32,
    pub core_relo_cnt: u32,
    pub fd_array: u64,
    pub core_relos: u64,
    pub core_relo_rec_size: u32,
    pub log_true_size: u32,
    pub prog_token_fd: i32,
    pub fd_array_cnt: u32,
}

/// The `BPF_PROG_TEST_RUN` member (`test`) of `union bpf_attr`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TestRunAttr {
    pub prog_fd: u32,
    pub retval: u32,
    pub data_size_in: u32,
    pub data_size_out: u32,
    pub data_in: u64,
    pub data_out: u64,
    pub repeat: u32,
    pub duration: u32,
    pub ctx_size_in: u32,
    pub ctx_size_out: u32,
    pub ctx_in: u64,
    pub ctx_out: u64,
    pub flags: u32,
    pub cpu: u32,
    pub batch_size: u32,
    pub _pad0: u32,
}

/// The `BPF_BTF_LOAD` member of `union bpf_attr`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct BtfLoadAttr {
    pub btf: u64,
    pub btf_log_buf: u64,
    pub btf_size: u32,
    pub btf_log_size: u32,
    pub btf_log_level: u32,
    pub btf_log_true_size: u32,
    pub btf_flags: u32,
    pub btf_token_fd: i32,
}

/// `struct bpf_func_info`: ties the subprogram starting at instruction `insn_off` to its BTF
/// `FUNC` type. Passed to [`prog_load`](crate::prog_load) together with the BTF object.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FuncInfo {
    /// Index of the subprogram's first instruction (in instructions, not bytes).
    pub insn_off: u32,
    /// BTF type id of the subprogram's `FUNC` type.
    pub type_id: u32,
}

// Compile-time layout checks against include/uapi/linux/bpf.h.
const _: () = {
    use core::mem::{offset_of, size_of};

    assert!(offset_of!(ProgLoadAttr, prog_type) == 0);
    assert!(offset_of!(ProgLoadAttr, insn_cnt) == 4);
    assert!(offset_of!(ProgLoadAttr, insns) == 8);
    assert!(offset_of!(ProgLoadAttr, license) == 16);
    assert!(offset_of!(ProgLoadAttr, log_level) == 24);
    assert!(offset_of!(ProgLoadAttr, log_size) == 28);
    assert!(offset_of!(ProgLoadAttr, log_buf) == 32);
    assert!(offset_of!(ProgLoadAttr, kern_version) == 40);
    assert!(offset_of!(ProgLoadAttr, prog_flags) == 44);
    assert!(offset_of!(ProgLoadAttr, prog_name) == 48);
    assert!(offset_of!(ProgLoadAttr, prog_ifindex) == 64);
    assert!(offset_of!(ProgLoadAttr, expected_attach_type) == 68);
    assert!(offset_of!(ProgLoadAttr, prog_btf_fd) == 72);
    assert!(offset_of!(ProgLoadAttr, func_info_rec_size) == 76);
    assert!(offset_of!(ProgLoadAttr, func_info) == 80);
    assert!(offset_of!(ProgLoadAttr, func_info_cnt) == 88);
    assert!(offset_of!(ProgLoadAttr, line_info_rec_size) == 92);
    assert!(offset_of!(ProgLoadAttr, line_info) == 96);
    assert!(offset_of!(ProgLoadAttr, line_info_cnt) == 104);
    assert!(offset_of!(ProgLoadAttr, attach_btf_id) == 108);
    assert!(offset_of!(ProgLoadAttr, attach_prog_fd) == 112);
    assert!(offset_of!(ProgLoadAttr, core_relo_cnt) == 116);
    assert!(offset_of!(ProgLoadAttr, fd_array) == 120);
    assert!(offset_of!(ProgLoadAttr, core_relos) == 128);
    assert!(offset_of!(ProgLoadAttr, core_relo_rec_size) == 136);
    assert!(offset_of!(ProgLoadAttr, log_true_size) == 140);
    assert!(offset_of!(ProgLoadAttr, prog_token_fd) == 144);
    assert!(offset_of!(ProgLoadAttr, fd_array_cnt) == 148);
    assert!(size_of::<ProgLoadAttr>() == 152);

    assert!(offset_of!(TestRunAttr, prog_fd) == 0);
    assert!(offset_of!(TestRunAttr, retval) == 4);
    assert!(offset_of!(TestRunAttr, data_size_in) == 8);
    assert!(offset_of!(TestRunAttr, data_size_out) == 12);
    assert!(offset_of!(TestRunAttr, data_in) == 16);
    assert!(offset_of!(TestRunAttr, data_out) == 24);
    assert!(offset_of!(TestRunAttr, repeat) == 32);
    assert!(offset_of!(TestRunAttr, duration) == 36);
    assert!(offset_of!(TestRunAttr, ctx_size_in) == 40);
    assert!(offset_of!(TestRunAttr, ctx_size_out) == 44);
    assert!(offset_of!(TestRunAttr, ctx_in) == 48);
    assert!(offset_of!(TestRunAttr, ctx_out) == 56);
    assert!(offset_of!(TestRunAttr, flags) == 64);
    assert!(offset_of!(TestRunAttr, cpu) == 68);
    assert!(offset_of!(TestRunAttr, batch_size) == 72);
    assert!(size_of::<TestRunAttr>() == 80);

    assert!(offset_of!(BtfLoadAttr, btf) == 0);
    assert!(offset_of!(BtfLoadAttr, btf_log_buf) == 8);
    assert!(offset_of!(BtfLoadAttr, btf_size) == 16);
    assert!(offset_of!(BtfLoadAttr, btf_log_size) == 20);
    assert!(offset_of!(BtfLoadAttr, btf_log_level) == 24);
    assert!(offset_of!(BtfLoadAttr, btf_log_true_size) == 28);
    assert!(offset_of!(BtfLoadAttr, btf_flags) == 32);
    assert!(offset_of!(BtfLoadAttr, btf_token_fd) == 36);
    assert!(size_of::<BtfLoadAttr>() == 40);

    assert!(offset_of!(FuncInfo, insn_off) == 0);
    assert!(offset_of!(FuncInfo, type_id) == 4);
    assert!(size_of::<FuncInfo>() == 8);
};

#[cfg(test)]
mod tests {
    use super::object_name;

    #[test]
    fn object_names() {
        assert_eq!(object_name(None), Some([0; 16]));
        assert!(object_name(Some("0123456789abcde")).is_some());
        assert!(object_name(Some("0123456789abcdef")).is_none());
        assert!(object_name(Some("a\0b")).is_none());
    }
}
