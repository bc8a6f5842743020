//! `#[repr(C)]` layouts of the kernel ABI structures this crate passes to `bpf(2)`.
//!
//! Each `*Attr` struct is the member of `union bpf_attr` (`include/uapi/linux/bpf.h`) that one
//! command reads. The kernel accepts an attribute shorter than its own `union bpf_attr` (it
//! zero-extends) and a longer one whose extra bytes are zero, so each struct stops at the last
//! field of the current uapi that matters here. Every struct spells out its padding as explicit
//! fields so that a `Default` value has no uninitialized bytes: the kernel checks that bytes
//! beyond the fields it knows are zero. Offsets are asserted at compile time against the uapi.

/// `BPF_OBJ_NAME_LEN`: object names are at most 15 bytes plus a NUL.
pub const OBJ_NAME_LEN: usize = 16;

/// The `BPF_MAP_CREATE` member of `union bpf_attr`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MapCreateAttr {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub inner_map_fd: u32,
    pub numa_node: u32,
    pub map_name: [u8; OBJ_NAME_LEN],
    pub map_ifindex: u32,
    pub btf_fd: u32,
    pub btf_key_type_id: u32,
    pub btf_value_type_id: u32,
    pub btf_vmlinux_value_type_id: u32,
    pub map_extra: u64,
    pub value_type_btf_obj_fd: i32,
    pub map_token_fd: i32,
}

/// The `BPF_MAP_*_ELEM` member of `union bpf_attr`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MapElemAttr {
    pub map_fd: u32,
    pub _pad0: u32,
    pub key: u64,
    /// `value` or `next_key`.
    pub value: u64,
    pub flags: u64,
}

/// The `BPF_OBJ_PIN` / `BPF_OBJ_GET` member of `union bpf_attr`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ObjAttr {
    pub pathname: u64,
    pub bpf_fd: u32,
    pub file_flags: u32,
    pub path_fd: i32,
    pub _pad0: u32,
}

/// The `BPF_*_GET_FD_BY_ID` member of `union bpf_attr`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GetFdByIdAttr {
    /// `start_id`, `prog_id`, `map_id`, `btf_id` or `link_id`.
    pub id: u32,
    pub next_id: u32,
    pub open_flags: u32,
    pub fd_by_id_token_fd: i32,
}

/// The `BPF_OBJ_GET_INFO_BY_FD` member (`info`) of `union bpf_attr`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct InfoAttr {
    pub bpf_fd: u32,
    pub info_len: u32,
    pub info: u64,
}

/// `struct bpf_map_info`: what `BPF_OBJ_GET_INFO_BY_FD` reports about a map
/// (see [`map_info`](crate::map_info)).
///
/// The layout is the current uapi one (through `hash_size`, Linux 6.16+). Older kernels fill
/// the prefix they know and leave the rest zero.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapInfo {
    /// The map type (`enum bpf_map_type`); see [`MapInfo::map_type`].
    pub type_: u32,
    /// The map's system-wide id (see [`map_get_fd_by_id`](crate::map_get_fd_by_id)).
    pub id: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Maximum number of entries; the data size in bytes for ring buffers.
    pub max_entries: u32,
    /// Creation flags; see [`MapInfo::flags`].
    pub map_flags: u32,
    /// The name given at creation, NUL-padded; see [`MapInfo::name`].
    pub name: [u8; OBJ_NAME_LEN],
    /// Interface index of an offloaded map, else 0.
    pub ifindex: u32,
    /// BTF type id of a kernel struct_ops value type.
    pub btf_vmlinux_value_type_id: u32,
    /// Network namespace device of an offloaded map.
    pub netns_dev: u64,
    /// Network namespace inode of an offloaded map.
    pub netns_ino: u64,
    /// Id of the map's BTF object, or 0.
    pub btf_id: u32,
    /// BTF type id of the key.
    pub btf_key_type_id: u32,
    /// BTF type id of the value.
    pub btf_value_type_id: u32,
    /// Id of the kernel BTF object of a struct_ops map.
    pub btf_vmlinux_id: u32,
    /// Per-map-type extra value (bloom filter hash count, arena address, ...).
    pub map_extra: u64,
    /// Input/output pointer to a SHA-256 buffer for the map contents (Linux 6.16+);
    /// [`map_info`](crate::map_info) leaves it zero, which requests no hash.
    pub hash: u64,
    /// Size of the `hash` buffer; zero here.
    pub hash_size: u32,
    /// Explicit tail padding (the uapi struct is 8-byte aligned); always zero.
    pub _pad0: u32,
}

impl MapInfo {
    /// The map type.
    pub fn map_type(&self) -> crate::MapType {
        crate::MapType(self.type_)
    }

    /// The creation flags, unknown bits retained.
    pub fn flags(&self) -> crate::MapFlags {
        crate::MapFlags::from_bits_retain(self.map_flags)
    }

    /// The map name up to its NUL terminator. The kernel only accepts alphanumerics, `_` and
    /// `.` in names, so this is ASCII; any invalid UTF-8 tail is cut off.
    pub fn name(&self) -> &str {
        let end = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.name.len());
        match core::str::from_utf8(&self.name[..end]) {
            Ok(name) => name,
            Err(error) => {
                let valid = &self.name[..error.valid_up_to()];
                // `valid_up_to` marks the end of the longest valid prefix.
                core::str::from_utf8(valid).unwrap_or_default()
            }
        }
    }
}

// Compile-time layout checks against include/uapi/linux/bpf.h.
const _: () = {
    use core::mem::{align_of, offset_of, size_of};

    assert!(offset_of!(MapCreateAttr, map_type) == 0);
    assert!(offset_of!(MapCreateAttr, key_size) == 4);
    assert!(offset_of!(MapCreateAttr, value_size) == 8);
    assert!(offset_of!(MapCreateAttr, max_entries) == 12);
    assert!(offset_of!(MapCreateAttr, map_flags) == 16);
    assert!(offset_of!(MapCreateAttr, inner_map_fd) == 20);
    assert!(offset_of!(MapCreateAttr, numa_node) == 24);
    assert!(offset_of!(MapCreateAttr, map_name) == 28);
    assert!(offset_of!(MapCreateAttr, map_ifindex) == 44);
    assert!(offset_of!(MapCreateAttr, btf_fd) == 48);
    assert!(offset_of!(MapCreateAttr, btf_key_type_id) == 52);
    assert!(offset_of!(MapCreateAttr, btf_value_type_id) == 56);
    assert!(offset_of!(MapCreateAttr, btf_vmlinux_value_type_id) == 60);
    assert!(offset_of!(MapCreateAttr, map_extra) == 64);
    assert!(offset_of!(MapCreateAttr, value_type_btf_obj_fd) == 72);
    assert!(offset_of!(MapCreateAttr, map_token_fd) == 76);
    assert!(size_of::<MapCreateAttr>() == 80);

    assert!(offset_of!(MapElemAttr, map_fd) == 0);
    assert!(offset_of!(MapElemAttr, key) == 8);
    assert!(offset_of!(MapElemAttr, value) == 16);
    assert!(offset_of!(MapElemAttr, flags) == 24);
    assert!(size_of::<MapElemAttr>() == 32);

    assert!(offset_of!(ObjAttr, pathname) == 0);
    assert!(offset_of!(ObjAttr, bpf_fd) == 8);
    assert!(offset_of!(ObjAttr, file_flags) == 12);
    assert!(offset_of!(ObjAttr, path_fd) == 16);
    assert!(size_of::<ObjAttr>() == 24);

    assert!(offset_of!(GetFdByIdAttr, id) == 0);
    assert!(offset_of!(GetFdByIdAttr, next_id) == 4);
    assert!(offset_of!(GetFdByIdAttr, open_flags) == 8);
    assert!(offset_of!(GetFdByIdAttr, fd_by_id_token_fd) == 12);
    assert!(size_of::<GetFdByIdAttr>() == 16);

    assert!(offset_of!(InfoAttr, bpf_fd) == 0);
    assert!(offset_of!(InfoAttr, info_len) == 4);
    assert!(offset_of!(InfoAttr, info) == 8);
    assert!(size_of::<InfoAttr>() == 16);

    assert!(offset_of!(MapInfo, type_) == 0);
    assert!(offset_of!(MapInfo, id) == 4);
    assert!(offset_of!(MapInfo, key_size) == 8);
    assert!(offset_of!(MapInfo, value_size) == 12);
    assert!(offset_of!(MapInfo, max_entries) == 16);
    assert!(offset_of!(MapInfo, map_flags) == 20);
    assert!(offset_of!(MapInfo, name) == 24);
    assert!(offset_of!(MapInfo, ifindex) == 40);
    assert!(offset_of!(MapInfo, btf_vmlinux_value_type_id) == 44);
    assert!(offset_of!(MapInfo, netns_dev) == 48);
    assert!(offset_of!(MapInfo, netns_ino) == 56);
    assert!(offset_of!(MapInfo, btf_id) == 64);
    assert!(offset_of!(MapInfo, btf_key_type_id) == 68);
    assert!(offset_of!(MapInfo, btf_value_type_id) == 72);
    assert!(offset_of!(MapInfo, btf_vmlinux_id) == 76);
    assert!(offset_of!(MapInfo, map_extra) == 80);
    assert!(offset_of!(MapInfo, hash) == 88);
    assert!(offset_of!(MapInfo, hash_size) == 96);
    assert!(size_of::<MapInfo>() == 104);
    assert!(align_of::<MapInfo>() == 8);
};

#[cfg(test)]
mod tests {
    use super::MapInfo;

    #[test]
    fn map_info_name_stops_at_nul() {
        let mut info = MapInfo::default();
        info.name[..4].copy_from_slice(b"ring");
        assert_eq!(info.name(), "ring");
        info.name = *b"0123456789abcdef";
        assert_eq!(info.name(), "0123456789abcdef");
        info.name = [0; 16];
        info.name[..3].copy_from_slice(&[b'a', 0xff, b'b']);
        assert_eq!(info.name(), "a");
    }
}
