//! Pinned objects in the BPF file system: `BPF_OBJ_PIN` and `BPF_OBJ_GET`.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::io::Errno;

use crate::abi::ObjAttr;
use crate::syscall::{bpf, owned_fd};
use crate::{BpfError, Command};

fn c_path(command: Command, path: &Path) -> Result<CString, BpfError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| BpfError::new(command, Errno::INVAL))
}

/// `BPF_OBJ_PIN`: pins the map, program or link `object` at `path`, which must lie in a
/// mounted BPF file system (`bpffs`) and must not exist yet. The pin keeps the object alive
/// until the file is removed.
///
/// # Errors
///
/// `EEXIST` when `path` exists, `EPERM` when it is not inside a bpffs, `ENOENT` for a missing
/// directory; `EINVAL` without a system call when `path` contains a NUL byte.
pub fn obj_pin(object: impl AsFd, path: &Path) -> Result<(), BpfError> {
    let path = c_path(Command::ObjPin, path)?;
    let mut raw = ObjAttr {
        pathname: path.as_ptr() as usize as u64,
        bpf_fd: object.as_fd().as_raw_fd() as u32,
        ..ObjAttr::default()
    };
    // SAFETY: `ObjAttr` is the BPF_OBJ_PIN layout with no implicit padding; `pathname` points
    // to a NUL-terminated string that lives until the end of this function and that the kernel
    // only reads.
    unsafe { bpf(Command::ObjPin, &mut raw) }?;
    Ok(())
}

/// `BPF_OBJ_GET`: opens the object pinned at `path` (read-write) and returns a new descriptor.
///
/// # Errors
///
/// `ENOENT` when nothing is pinned there, `EACCES` without permission on the pin;
/// `EINVAL` without a system call when `path` contains a NUL byte.
pub fn obj_get(path: &Path) -> Result<OwnedFd, BpfError> {
    let path = c_path(Command::ObjGet, path)?;
    let mut raw = ObjAttr {
        pathname: path.as_ptr() as usize as u64,
        ..ObjAttr::default()
    };
    // SAFETY: `ObjAttr` is the BPF_OBJ_GET layout with no implicit padding; `pathname` points
    // to a NUL-terminated string that lives until the end of this function and that the kernel
    // only reads.
    let fd = unsafe { bpf(Command::ObjGet, &mut raw) }?;
    // SAFETY: a successful BPF_OBJ_GET returns a new descriptor owned by the caller.
    Ok(unsafe { owned_fd(fd) })
}
