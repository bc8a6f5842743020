//! Tests against the real kernel: maps, mappings, pinning.
//!
//! When `bpf(2)` is unavailable (no privilege, no syscall) each test prints `skipped: <reason>`
//! and passes, unless `BPF_RINGBUF_REQUIRE_KERNEL=1`, in which case it fails.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use bpf_ringbuf_sys::{
    map_create, map_get_fd_by_id, map_info, map_lookup_elem, map_update_elem, obj_get, obj_pin,
    page_size, Command, Errno, MapCreate, MapFlags, MapType,
};

/// Whether the kernel lets us use bpf(); see the module docs for the policy.
fn kernel_or_skip() -> bool {
    let probe = map_create(&MapCreate::new(MapType::RINGBUF, 0, 0, page_size() as u32));
    let required = std::env::var("BPF_RINGBUF_REQUIRE_KERNEL").is_ok_and(|v| v == "1");
    match probe {
        Ok(_) => true,
        Err(e) if matches!(e.errno(), Errno::PERM | Errno::NOSYS | Errno::ACCESS) => {
            assert!(
                !required,
                "BPF_RINGBUF_REQUIRE_KERNEL=1 but bpf() is unavailable: {e}"
            );
            eprintln!("skipped: bpf() unavailable: {e}");
            false
        }
        Err(e) => panic!("unexpected error probing bpf(): {e}"),
    }
}

fn ringbuf(size: u32) -> OwnedFd {
    map_create(&MapCreate::new(MapType::RINGBUF, 0, 0, size)).expect("create RINGBUF")
}

#[test]
fn ringbuf_map_info() {
    if !kernel_or_skip() {
        return;
    }
    let size = 16 * page_size() as u32;
    let ring = map_create(&MapCreate {
        name: Some("sys_test_rb"),
        ..MapCreate::new(MapType::RINGBUF, 0, 0, size)
    })
    .unwrap();
    let info = map_info(ring.as_fd()).unwrap();
    assert_eq!(info.map_type(), MapType::RINGBUF);
    assert_eq!(info.max_entries, size);
    assert_eq!((info.key_size, info.value_size), (0, 0));
    assert_eq!(info.flags(), MapFlags::empty());
    assert_eq!(info.name(), "sys_test_rb");
    assert_ne!(info.id, 0);
}

#[test]
fn ringbuf_bad_size_is_einval() {
    if !kernel_or_skip() {
        return;
    }
    for size in [16 * page_size() as u32 + 1, 1000, 3 * page_size() as u32] {
        let err = map_create(&MapCreate::new(MapType::RINGBUF, 0, 0, size)).unwrap_err();
        assert_eq!(err.command(), Command::MapCreate);
        assert_eq!(err.errno(), Errno::INVAL, "size {size}: {err}");
    }
    let err = map_create(&MapCreate {
        name: Some("a_name_that_is_too_long"),
        ..MapCreate::new(MapType::RINGBUF, 0, 0, page_size() as u32)
    })
    .unwrap_err();
    assert_eq!(err.errno(), Errno::INVAL);
}

/// A bpffs directory for pins, removed (and unmounted, if mounted here) on drop.
struct BpfFs {
    dir: PathBuf,
    mounted: bool,
}

impl BpfFs {
    const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

    fn is_bpffs(path: &Path) -> bool {
        bpf_ringbuf_sys::rustix::fs::statfs(path)
            .is_ok_and(|stat| stat.f_type as u64 == Self::BPF_FS_MAGIC)
    }

    fn new() -> BpfFs {
        let unique = format!(
            "bpf-ringbuf-sys-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let system = Path::new("/sys/fs/bpf");
        if Self::is_bpffs(system) {
            let dir = system.join(unique);
            std::fs::create_dir(&dir).unwrap();
            return BpfFs {
                dir,
                mounted: false,
            };
        }
        let dir = std::env::temp_dir().join(unique);
        std::fs::create_dir(&dir).unwrap();
        let mounted = bpf_ringbuf_sys::rustix::mount::mount(
            "bpf",
            &dir,
            "bpf",
            bpf_ringbuf_sys::rustix::mount::MountFlags::empty(),
            None,
        );
        let fs = BpfFs { dir, mounted: true };
        mounted.unwrap_or_else(|e| panic!("mount bpffs on {}: {e}", fs.dir.display()));
        fs
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = bpf_ringbuf_sys::rustix::mount::unmount(
                &self.dir,
                bpf_ringbuf_sys::rustix::mount::UnmountFlags::DETACH,
            );
            let _ = std::fs::remove_dir(&self.dir);
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[test]
fn pin_and_get() {
    if !kernel_or_skip() {
        return;
    }
    let fs = BpfFs::new();
    let ring = ringbuf(page_size() as u32);
    let id = map_info(ring.as_fd()).unwrap().id;
    let pin = fs.dir.join("ring");
    obj_pin(ring.as_fd(), &pin).unwrap();
    let err = obj_pin(ring.as_fd(), &pin).unwrap_err();
    assert_eq!(
        (err.command(), err.errno()),
        (Command::ObjPin, Errno::EXIST)
    );
    drop(ring);
    let again = obj_get(&pin).unwrap();
    assert_eq!(map_info(again.as_fd()).unwrap().id, id);
    std::fs::remove_file(&pin).unwrap();
    let err = obj_get(&pin).unwrap_err();
    assert_eq!(
        (err.command(), err.errno()),
        (Command::ObjGet, Errno::NOENT)
    );
}

#[test]
fn map_get_fd_by_id_round_trip() {
    if !kernel_or_skip() {
        return;
    }
    let ring = ringbuf(2 * page_size() as u32);
    let info = map_info(ring.as_fd()).unwrap();
    let other = map_get_fd_by_id(info.id).unwrap();
    assert_eq!(map_info(other.as_fd()).unwrap(), info);
    let err = map_get_fd_by_id(u32::MAX).unwrap_err();
    assert_eq!(
        (err.command(), err.errno()),
        (Command::MapGetFdById, Errno::NOENT)
    );
}

#[test]
fn array_update_and_lookup() {
    if !kernel_or_skip() {
        return;
    }
    let array = map_create(&MapCreate::new(MapType::ARRAY, 4, 8, 4)).unwrap();
    let key = 2u32.to_ne_bytes();
    let value = 0x0102_0304_0506_0708u64.to_ne_bytes();
    map_update_elem(array.as_fd(), &key, &value, 0).unwrap();
    let mut out = [0u8; 8];
    map_lookup_elem(array.as_fd(), &key, &mut out).unwrap();
    assert_eq!(out, value);
    map_lookup_elem(array.as_fd(), &0u32.to_ne_bytes(), &mut out).unwrap();
    assert_eq!(out, [0; 8]);

    let err = map_lookup_elem(array.as_fd(), &9u32.to_ne_bytes(), &mut out).unwrap_err();
    assert_eq!(
        (err.command(), err.errno()),
        (Command::MapLookupElem, Errno::NOENT)
    );
    // Buffers of the wrong size are refused before the kernel sees them.
    let err = map_lookup_elem(array.as_fd(), &key, &mut [0u8; 4]).unwrap_err();
    assert_eq!(
        (err.command(), err.errno()),
        (Command::MapLookupElem, Errno::INVAL)
    );
    let err = map_update_elem(array.as_fd(), &[0u8; 2], &value, 0).unwrap_err();
    assert_eq!(
        (err.command(), err.errno()),
        (Command::MapUpdateElem, Errno::INVAL)
    );
    // BPF_NOEXIST is meaningless for arrays: the kernel says EEXIST.
    let err = map_update_elem(array.as_fd(), &key, &value, 1).unwrap_err();
    assert_eq!(err.errno(), Errno::EXIST);
}
