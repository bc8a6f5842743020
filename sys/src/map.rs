//! Maps: creation, information, lookup by id, element access.

use core::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use bitflags::bitflags;
use rustix::io::Errno;

use crate::abi::{GetFdByIdAttr, InfoAttr, MapCreateAttr, MapElemAttr, OBJ_NAME_LEN};
use crate::syscall::{bpf, owned_fd};
use crate::{BpfError, Command, MapInfo};

/// A map type (`enum bpf_map_type`). A transparent `u32` so that types this crate does not
/// name can still be passed and reported.
///
/// [`Display`](fmt::Display) prints the uapi name (`BPF_MAP_TYPE_RINGBUF`), `Debug` the constant
/// (`MapType::RINGBUF`); unknown values print as numbers.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MapType(pub u32);

impl MapType {
    /// `BPF_MAP_TYPE_UNSPEC`.
    pub const UNSPEC: MapType = MapType(0);
    /// `BPF_MAP_TYPE_HASH`.
    pub const HASH: MapType = MapType(1);
    /// `BPF_MAP_TYPE_ARRAY`.
    pub const ARRAY: MapType = MapType(2);
    /// `BPF_MAP_TYPE_PROG_ARRAY`.
    pub const PROG_ARRAY: MapType = MapType(3);
    /// `BPF_MAP_TYPE_PERF_EVENT_ARRAY`.
    pub const PERF_EVENT_ARRAY: MapType = MapType(4);
    /// `BPF_MAP_TYPE_PERCPU_HASH`.
    pub const PERCPU_HASH: MapType = MapType(5);
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`.
    pub const PERCPU_ARRAY: MapType = MapType(6);
    /// `BPF_MAP_TYPE_STACK_TRACE`.
    pub const STACK_TRACE: MapType = MapType(7);
    /// `BPF_MAP_TYPE_CGROUP_ARRAY`.
    pub const CGROUP_ARRAY: MapType = MapType(8);
    /// `BPF_MAP_TYPE_LRU_HASH`.
    pub const LRU_HASH: MapType = MapType(9);
    /// `BPF_MAP_TYPE_LRU_PERCPU_HASH`.
    pub const LRU_PERCPU_HASH: MapType = MapType(10);
    /// `BPF_MAP_TYPE_LPM_TRIE`.
    pub const LPM_TRIE: MapType = MapType(11);
    /// `BPF_MAP_TYPE_ARRAY_OF_MAPS`.
    pub const ARRAY_OF_MAPS: MapType = MapType(12);
    /// `BPF_MAP_TYPE_HASH_OF_MAPS`.
    pub const HASH_OF_MAPS: MapType = MapType(13);
    /// `BPF_MAP_TYPE_DEVMAP`.
    pub const DEVMAP: MapType = MapType(14);
    /// `BPF_MAP_TYPE_SOCKMAP`.
    pub const SOCKMAP: MapType = MapType(15);
    /// `BPF_MAP_TYPE_CPUMAP`.
    pub const CPUMAP: MapType = MapType(16);
    /// `BPF_MAP_TYPE_XSKMAP`.
    pub const XSKMAP: MapType = MapType(17);
    /// `BPF_MAP_TYPE_SOCKHASH`.
    pub const SOCKHASH: MapType = MapType(18);
    /// `BPF_MAP_TYPE_CGROUP_STORAGE`.
    pub const CGROUP_STORAGE: MapType = MapType(19);
    /// `BPF_MAP_TYPE_REUSEPORT_SOCKARRAY`.
    pub const REUSEPORT_SOCKARRAY: MapType = MapType(20);
    /// `BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE`.
    pub const PERCPU_CGROUP_STORAGE: MapType = MapType(21);
    /// `BPF_MAP_TYPE_QUEUE`.
    pub const QUEUE: MapType = MapType(22);
    /// `BPF_MAP_TYPE_STACK`.
    pub const STACK: MapType = MapType(23);
    /// `BPF_MAP_TYPE_SK_STORAGE`.
    pub const SK_STORAGE: MapType = MapType(24);
    /// `BPF_MAP_TYPE_DEVMAP_HASH`.
    pub const DEVMAP_HASH: MapType = MapType(25);
    /// `BPF_MAP_TYPE_STRUCT_OPS`.
    pub const STRUCT_OPS: MapType = MapType(26);
    /// `BPF_MAP_TYPE_RINGBUF`.
    pub const RINGBUF: MapType = MapType(27);
    /// `BPF_MAP_TYPE_INODE_STORAGE`.
    pub const INODE_STORAGE: MapType = MapType(28);
    /// `BPF_MAP_TYPE_TASK_STORAGE`.
    pub const TASK_STORAGE: MapType = MapType(29);
    /// `BPF_MAP_TYPE_BLOOM_FILTER`.
    pub const BLOOM_FILTER: MapType = MapType(30);
    /// `BPF_MAP_TYPE_USER_RINGBUF`.
    pub const USER_RINGBUF: MapType = MapType(31);
    /// `BPF_MAP_TYPE_CGRP_STORAGE`.
    pub const CGRP_STORAGE: MapType = MapType(32);
    /// `BPF_MAP_TYPE_ARENA`.
    pub const ARENA: MapType = MapType(33);

    /// The name of a known type without the `BPF_MAP_TYPE_` prefix, e.g. `"RINGBUF"`.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            MapType::UNSPEC => "UNSPEC",
            MapType::HASH => "HASH",
            MapType::ARRAY => "ARRAY",
            MapType::PROG_ARRAY => "PROG_ARRAY",
            MapType::PERF_EVENT_ARRAY => "PERF_EVENT_ARRAY",
            MapType::PERCPU_HASH => "PERCPU_HASH",
            MapType::PERCPU_ARRAY => "PERCPU_ARRAY",
            MapType::STACK_TRACE => "STACK_TRACE",
            MapType::CGROUP_ARRAY => "CGROUP_ARRAY",
            MapType::LRU_HASH => "LRU_HASH",
            MapType::LRU_PERCPU_HASH => "LRU_PERCPU_HASH",
            MapType::LPM_TRIE => "LPM_TRIE",
            MapType::ARRAY_OF_MAPS => "ARRAY_OF_MAPS",
            MapType::HASH_OF_MAPS => "HASH_OF_MAPS",
            MapType::DEVMAP => "DEVMAP",
            MapType::SOCKMAP => "SOCKMAP",
            MapType::CPUMAP => "CPUMAP",
            MapType::XSKMAP => "XSKMAP",
            MapType::SOCKHASH => "SOCKHASH",
            MapType::CGROUP_STORAGE => "CGROUP_STORAGE",
            MapType::REUSEPORT_SOCKARRAY => "REUSEPORT_SOCKARRAY",
            MapType::PERCPU_CGROUP_STORAGE => "PERCPU_CGROUP_STORAGE",
            MapType::QUEUE => "QUEUE",
            MapType::STACK => "STACK",
            MapType::SK_STORAGE => "SK_STORAGE",
            MapType::DEVMAP_HASH => "DEVMAP_HASH",
            MapType::STRUCT_OPS => "STRUCT_OPS",
            MapType::RINGBUF => "RINGBUF",
            MapType::INODE_STORAGE => "INODE_STORAGE",
            MapType::TASK_STORAGE => "TASK_STORAGE",
            MapType::BLOOM_FILTER => "BLOOM_FILTER",
            MapType::USER_RINGBUF => "USER_RINGBUF",
            MapType::CGRP_STORAGE => "CGRP_STORAGE",
            MapType::ARENA => "ARENA",
            _ => return None,
        })
    }

    /// Whether lookups return one value per possible CPU (the value buffer is then
    /// `round_up(value_size, 8) * possible_cpus` bytes).
    pub const fn is_per_cpu(self) -> bool {
        matches!(
            self,
            MapType::PERCPU_HASH
                | MapType::PERCPU_ARRAY
                | MapType::LRU_PERCPU_HASH
                | MapType::PERCPU_CGROUP_STORAGE
        )
    }
}

impl fmt::Display for MapType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "BPF_MAP_TYPE_{name}"),
            None => write!(f, "BPF_MAP_TYPE({})", self.0),
        }
    }
}

impl fmt::Debug for MapType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "MapType::{name}"),
            None => write!(f, "MapType({})", self.0),
        }
    }
}

bitflags! {
    /// Map creation and access flags (`BPF_F_*` in the anonymous flag enum of
    /// `include/uapi/linux/bpf.h`). Which ones a map type accepts is up to the kernel: ring
    /// buffers accept only [`NUMA_NODE`](MapFlags::NUMA_NODE) (and
    /// [`RB_OVERWRITE`](MapFlags::RB_OVERWRITE) on Linux 6.19+).
    #[repr(transparent)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct MapFlags: u32 {
        /// `BPF_F_NO_PREALLOC`: allocate hash elements on demand.
        const NO_PREALLOC = 1 << 0;
        /// `BPF_F_NO_COMMON_LRU`: per-CPU LRU lists.
        const NO_COMMON_LRU = 1 << 1;
        /// `BPF_F_NUMA_NODE`: allocate on the node given in `numa_node`.
        const NUMA_NODE = 1 << 2;
        /// `BPF_F_RDONLY`: read-only from the syscall side.
        const RDONLY = 1 << 3;
        /// `BPF_F_WRONLY`: write-only from the syscall side.
        const WRONLY = 1 << 4;
        /// `BPF_F_STACK_BUILD_ID`: stack maps store build id + offset.
        const STACK_BUILD_ID = 1 << 5;
        /// `BPF_F_ZERO_SEED`: zero hash seed (testing only).
        const ZERO_SEED = 1 << 6;
        /// `BPF_F_RDONLY_PROG`: read-only from programs.
        const RDONLY_PROG = 1 << 7;
        /// `BPF_F_WRONLY_PROG`: write-only from programs.
        const WRONLY_PROG = 1 << 8;
        /// `BPF_F_CLONE`: clone socket-local storage to accepted sockets.
        const CLONE = 1 << 9;
        /// `BPF_F_MMAPABLE`: allow `mmap` of array maps.
        const MMAPABLE = 1 << 10;
        /// `BPF_F_PRESERVE_ELEMS`: share perf events among processes.
        const PRESERVE_ELEMS = 1 << 11;
        /// `BPF_F_INNER_MAP`: usable as an inner map with dynamic `max_entries`.
        const INNER_MAP = 1 << 12;
        /// `BPF_F_LINK`: struct_ops map registered through a link.
        const LINK = 1 << 13;
        /// `BPF_F_PATH_FD`: `path_fd` is set for pin/get.
        const PATH_FD = 1 << 14;
        /// `BPF_F_VTYPE_BTF_OBJ_FD`: `value_type_btf_obj_fd` is set.
        const VTYPE_BTF_OBJ_FD = 1 << 15;
        /// `BPF_F_TOKEN_FD`: a BPF token fd is passed.
        const TOKEN_FD = 1 << 16;
        /// `BPF_F_SEGV_ON_FAULT`: arena faults raise SIGSEGV.
        const SEGV_ON_FAULT = 1 << 17;
        /// `BPF_F_NO_USER_CONV`: no arena pointer translation.
        const NO_USER_CONV = 1 << 18;
        /// `BPF_F_RB_OVERWRITE`: ring buffer overwrites the oldest records when full
        /// (Linux 6.19+).
        const RB_OVERWRITE = 1 << 19;
    }
}

/// Arguments of [`map_create`]: the fields of `BPF_MAP_CREATE` that this crate sets.
///
/// ```
/// use bpf_ringbuf_sys::{MapCreate, MapType};
/// let ring = MapCreate {
///     name: Some("events"),
///     ..MapCreate::new(MapType::RINGBUF, 0, 0, 64 * 1024)
/// };
/// assert_eq!(ring.max_entries, 65536);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapCreate<'a> {
    /// The map type.
    pub map_type: MapType,
    /// Key size in bytes (0 for ring buffers).
    pub key_size: u32,
    /// Value size in bytes (0 for ring buffers).
    pub value_size: u32,
    /// Maximum number of entries; for ring buffers the data size in bytes (a power of two and
    /// a multiple of the page size).
    pub max_entries: u32,
    /// Creation flags.
    pub flags: MapFlags,
    /// Optional name: at most 15 bytes of ASCII alphanumerics, `_` and `.`.
    pub name: Option<&'a str>,
    /// NUMA node, used only with [`MapFlags::NUMA_NODE`].
    pub numa_node: u32,
    /// Per-map-type extra value (`map_extra`), usually 0.
    pub map_extra: u64,
}

impl<'a> MapCreate<'a> {
    /// A map of `map_type` with the given sizes, no flags and no name.
    pub const fn new(map_type: MapType, key_size: u32, value_size: u32, max_entries: u32) -> Self {
        MapCreate {
            map_type,
            key_size,
            value_size,
            max_entries,
            flags: MapFlags::empty(),
            name: None,
            numa_node: 0,
            map_extra: 0,
        }
    }
}

/// Encodes an object name into the NUL-padded uapi field; `None` when it does not fit or
/// contains a NUL.
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

/// `BPF_MAP_CREATE`: creates a map and returns its file descriptor (close-on-exec).
///
/// # Errors
///
/// The kernel's error (`EINVAL` for sizes or flags the map type refuses, `EPERM` without
/// `CAP_BPF`, ...); `EINVAL` without a system call when `name` is 16 bytes or longer or contains
/// a NUL.
pub fn map_create(attr: &MapCreate<'_>) -> Result<OwnedFd, BpfError> {
    let map_name = object_name(attr.name).ok_or(BpfError::new(Command::MapCreate, Errno::INVAL))?;
    let mut raw = MapCreateAttr {
        map_type: attr.map_type.0,
        key_size: attr.key_size,
        value_size: attr.value_size,
        max_entries: attr.max_entries,
        map_flags: attr.flags.bits(),
        numa_node: attr.numa_node,
        map_name,
        map_extra: attr.map_extra,
        ..MapCreateAttr::default()
    };
    // SAFETY: `MapCreateAttr` is the BPF_MAP_CREATE layout with no implicit padding; it holds
    // no pointers.
    let fd = unsafe { bpf(Command::MapCreate, &mut raw) }?;
    // SAFETY: a successful BPF_MAP_CREATE returns a new descriptor owned by the caller.
    Ok(unsafe { owned_fd(fd) })
}

/// `BPF_OBJ_GET_INFO_BY_FD` on a map: its type, sizes, flags, name and id.
///
/// # Errors
///
/// `EINVAL` when `map` is not a BPF object, `EBADF` for a bad descriptor. `map` must be a map:
/// programs, links and BTF objects answer with their own info structures, which this function
/// would misread as a [`MapInfo`] (harmlessly: every bit pattern is a valid `MapInfo`).
pub fn map_info(map: impl AsFd) -> Result<MapInfo, BpfError> {
    let mut info = MapInfo::default();
    let mut raw = InfoAttr {
        bpf_fd: map.as_fd().as_raw_fd() as u32,
        info_len: core::mem::size_of::<MapInfo>() as u32,
        info: &mut info as *mut MapInfo as usize as u64,
    };
    // SAFETY: `InfoAttr` is the BPF_OBJ_GET_INFO_BY_FD layout with no implicit padding;
    // `info` points to a live, exclusively borrowed `MapInfo` of `info_len` bytes, which the
    // kernel writes at most `info_len` bytes of. All bit patterns are valid for `MapInfo`
    // (integers and byte arrays only).
    unsafe { bpf(Command::ObjGetInfoByFd, &mut raw) }?;
    Ok(info)
}

/// `BPF_MAP_GET_FD_BY_ID`: opens a new descriptor for the map with system-wide `id`.
///
/// # Errors
///
/// `ENOENT` when no map has that id, `EPERM` without `CAP_SYS_ADMIN`.
pub fn map_get_fd_by_id(id: u32) -> Result<OwnedFd, BpfError> {
    let mut raw = GetFdByIdAttr {
        id,
        ..GetFdByIdAttr::default()
    };
    // SAFETY: `GetFdByIdAttr` is the BPF_MAP_GET_FD_BY_ID layout with no implicit padding; it
    // holds no pointers.
    let fd = unsafe { bpf(Command::MapGetFdById, &mut raw) }?;
    // SAFETY: a successful BPF_MAP_GET_FD_BY_ID returns a new descriptor owned by the caller.
    Ok(unsafe { owned_fd(fd) })
}

/// Checks `key` and `value` lengths against the map's sizes, so that the kernel never reads or
/// writes past either buffer.
fn check_elem_sizes(
    command: Command,
    map: BorrowedFd<'_>,
    key: &[u8],
    value: &[u8],
) -> Result<(), BpfError> {
    let info = map_info(map)?;
    let value_len = if info.map_type().is_per_cpu() {
        // One slot per possible CPU, each rounded up to 8 bytes (bpf_map_value_size()).
        let cpus = possible_cpus().map_err(|errno| BpfError::new(command, errno))?;
        (info.value_size as usize).next_multiple_of(8) * cpus
    } else {
        info.value_size as usize
    };
    if key.len() != info.key_size as usize || value.len() != value_len {
        return Err(BpfError::new(command, Errno::INVAL));
    }
    Ok(())
}

/// The number of possible CPUs (`/sys/devices/system/cpu/possible`): the number of slots in a
/// per-CPU map's value, as the kernel lays it out for lookups and updates.
///
/// # Errors
///
/// The `errno` of reading the sysfs file; `EINVAL` if its text is not a CPU list.
pub fn possible_cpus() -> Result<usize, Errno> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .map_err(|error| Errno::from_io_error(&error).unwrap_or(Errno::IO))?;
    parse_cpu_ranges(&text).ok_or(Errno::INVAL)
}

/// `"0-3,5"` -> 6 (one more than the highest CPU listed).
fn parse_cpu_ranges(text: &str) -> Option<usize> {
    let mut highest = None;
    for range in text.trim().split(',') {
        let last = range.rsplit('-').next()?.trim().parse::<usize>().ok()?;
        highest = highest.max(Some(last));
    }
    highest.map(|cpu| cpu + 1)
}

/// `BPF_MAP_LOOKUP_ELEM`: copies the value stored under `key` into `value`.
///
/// `key` and `value` must be exactly the map's key and value sizes: this is checked with one
/// [`map_info`] call first, because the kernel copies those sizes blindly.
///
/// # Errors
///
/// `ENOENT` when there is no such element; `EINVAL` (without the lookup) for wrong buffer
/// sizes. A per-CPU map's value spans one 8-byte-aligned slot per [possible CPU](possible_cpus).
pub fn map_lookup_elem(map: impl AsFd, key: &[u8], value: &mut [u8]) -> Result<(), BpfError> {
    let map = map.as_fd();
    check_elem_sizes(Command::MapLookupElem, map, key, value)?;
    let mut raw = MapElemAttr {
        map_fd: map.as_fd().as_raw_fd() as u32,
        key: key.as_ptr() as usize as u64,
        value: value.as_mut_ptr() as usize as u64,
        ..MapElemAttr::default()
    };
    // SAFETY: `MapElemAttr` is the BPF_MAP_*_ELEM layout with no implicit padding. The kernel
    // reads `key_size` bytes from `key` and writes `value_size` bytes to `value`; both slices
    // were just checked to have exactly those lengths (per-CPU values included), and they
    // stay borrowed for the call.
    unsafe { bpf(Command::MapLookupElem, &mut raw) }?;
    Ok(())
}

/// `BPF_MAP_UPDATE_ELEM`: stores `value` under `key`. `flags` is `BPF_ANY` (0),
/// `BPF_NOEXIST` (1), `BPF_EXIST` (2), optionally with `BPF_F_LOCK` (4).
///
/// Buffer sizes are checked as for [`map_lookup_elem`].
///
/// # Errors
///
/// The kernel's error (`E2BIG` when full, `EEXIST`/`ENOENT` for the existence flags, ...);
/// `EINVAL` (without the update) for wrong buffer sizes.
pub fn map_update_elem(
    map: impl AsFd,
    key: &[u8],
    value: &[u8],
    flags: u64,
) -> Result<(), BpfError> {
    let map = map.as_fd();
    check_elem_sizes(Command::MapUpdateElem, map, key, value)?;
    let mut raw = MapElemAttr {
        map_fd: map.as_fd().as_raw_fd() as u32,
        key: key.as_ptr() as usize as u64,
        value: value.as_ptr() as usize as u64,
        flags,
        ..MapElemAttr::default()
    };
    // SAFETY: `MapElemAttr` is the BPF_MAP_*_ELEM layout with no implicit padding. The kernel
    // only reads `key_size` bytes from `key` and `value_size` bytes from `value`; both lengths
    // were just checked, and the slices stay borrowed for the call.
    unsafe { bpf(Command::MapUpdateElem, &mut raw) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ranges() {
        assert_eq!(parse_cpu_ranges("0-1\n"), Some(2));
        assert_eq!(parse_cpu_ranges("0"), Some(1));
        assert_eq!(parse_cpu_ranges("0-3,8-11"), Some(12));
        assert_eq!(parse_cpu_ranges("x"), None);
    }

    #[test]
    fn map_type_names() {
        assert_eq!(MapType::RINGBUF.0, 27);
        assert_eq!(MapType::USER_RINGBUF.0, 31);
        assert_eq!(MapType::ARENA.0, 33);
        assert_eq!(MapType::PERCPU_ARRAY.0, 6);
        assert_eq!(MapType::RINGBUF.to_string(), "BPF_MAP_TYPE_RINGBUF");
        assert_eq!(
            format!("{:?}", MapType::USER_RINGBUF),
            "MapType::USER_RINGBUF"
        );
        assert_eq!(MapType(1000).to_string(), "BPF_MAP_TYPE(1000)");
        assert_eq!(format!("{:?}", MapType(1000)), "MapType(1000)");
    }

    #[test]
    fn flags_keep_unknown_bits() {
        assert_eq!(MapFlags::MMAPABLE.bits(), 1 << 10);
        assert_eq!(MapFlags::RB_OVERWRITE.bits(), 1 << 19);
        let flags = MapFlags::from_bits_retain(1 << 30 | 1 << 2);
        assert!(flags.contains(MapFlags::NUMA_NODE));
        assert_eq!(flags.bits(), 1 << 30 | 1 << 2);
    }

    #[test]
    fn object_names() {
        assert_eq!(object_name(None), Some([0; 16]));
        let name = object_name(Some("rb")).unwrap();
        assert_eq!(&name[..3], b"rb\0");
        assert!(object_name(Some("0123456789abcde")).is_some());
        assert!(object_name(Some("0123456789abcdef")).is_none());
        assert!(object_name(Some("a\0b")).is_none());
    }
}
