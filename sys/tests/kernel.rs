//! Tests against the real kernel: maps, programs, BTF, test runs, pinning.
//!
//! When `bpf(2)` is unavailable (no privilege, no syscall) each test prints `skipped: <reason>`
//! and passes, unless `BPF_RINGBUF_REQUIRE_KERNEL=1`, in which case it fails.

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use bpf_ringbuf_sys::btf::{BtfBuilder, FuncLinkage};
use bpf_ringbuf_sys::insn::{self, helper, AluOp, MemSize, Program, R0, R1, R10, R2, R3, R4};
use bpf_ringbuf_sys::rustix::mm::ProtFlags;
use bpf_ringbuf_sys::{
    btf_load, map_create, map_get_fd_by_id, map_info, map_lookup_elem, map_update_elem, obj_get,
    obj_pin, page_size, prog_load, prog_test_run, xdp_action, Command, Errno, FuncInfo, MapCreate,
    MapFlags, MapType, Mapping, ProgLoad, ProgType, TestRun,
};

const GPL: &CStr = c"GPL";

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

/// Whether the kernel has `BPF_MAP_TYPE_USER_RINGBUF` (Linux 6.1); prints `skipped: <reason>`
/// when it does not. A 6.1+ kernel without it fails under `BPF_RINGBUF_REQUIRE_KERNEL=1`.
fn user_ringbuf_or_skip() -> bool {
    let probe = map_create(&MapCreate::new(
        MapType::USER_RINGBUF,
        0,
        0,
        page_size() as u32,
    ));
    match probe {
        Ok(_) => true,
        Err(e) if e.errno() == Errno::INVAL => {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
            let release = release.trim();
            let mut version = release.split(|c: char| !c.is_ascii_digit());
            let major: u32 = version.next().unwrap().parse().unwrap();
            let minor: u32 = version.next().unwrap().parse().unwrap();
            let required = std::env::var("BPF_RINGBUF_REQUIRE_KERNEL").is_ok_and(|v| v == "1");
            assert!(
                !(required && (major, minor) >= (6, 1)),
                "Linux {release} refuses BPF_MAP_TYPE_USER_RINGBUF: {e}"
            );
            eprintln!("skipped: Linux {release} lacks BPF_MAP_TYPE_USER_RINGBUF (needs 6.1+): {e}");
            false
        }
        Err(e) => panic!("unexpected error probing USER_RINGBUF: {e}"),
    }
}

fn ringbuf(size: u32) -> OwnedFd {
    map_create(&MapCreate::new(MapType::RINGBUF, 0, 0, size)).expect("create RINGBUF")
}

/// Reads a kernel-shared u64 position with acquire ordering.
fn load_pos(mapping: &Mapping, offset: usize) -> u64 {
    assert!(offset + 8 <= mapping.len() && offset % 8 == 0);
    // SAFETY: the offset is in bounds and 8-aligned (mappings are page aligned); the kernel
    // updates positions with atomic stores, so reading through an AtomicU64 is the right
    // access, and the mapping outlives the reference.
    let pos = unsafe { AtomicU64::from_ptr(mapping.as_ptr().as_ptr().add(offset).cast()) };
    pos.load(Ordering::Acquire)
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

/// The XDP producer of reference/kernel_producer_xdp.c: one 8-byte ringbuf_output per run.
fn output_program(map: BorrowedFd<'_>) -> Vec<insn::Insn> {
    let mut program = Program::new();
    program
        .push(insn::mov64_imm(R1, 0x5566_7788))
        .push(insn::stx_mem(MemSize::DW, R10, R1, -8))
        .extend(insn::ld_map_fd(R1, map))
        .push(insn::mov64_reg(R2, R10))
        .push(insn::alu64_imm(AluOp::ADD, R2, -8))
        .push(insn::mov64_imm(R3, 8))
        .push(insn::mov64_imm(R4, 0))
        .push(insn::call_helper(helper::RINGBUF_OUTPUT))
        .push(insn::mov64_imm(R0, xdp_action::PASS))
        .push(insn::exit());
    program.build().unwrap()
}

#[test]
fn xdp_ringbuf_output_produces_records() {
    if !kernel_or_skip() {
        return;
    }
    let page = page_size();
    let size = 16 * page;
    let ring = ringbuf(size as u32);
    let insns = output_program(ring.as_fd());
    let prog = prog_load(&ProgLoad {
        name: Some("rb_output"),
        ..ProgLoad::new(ProgType::XDP, &insns, GPL)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let packet = [0u8; 64];
    let out = prog_test_run(
        prog.as_fd(),
        &TestRun {
            data_in: &packet,
            repeat: 1000,
            ..TestRun::default()
        },
    )
    .unwrap();
    assert_eq!(out.retval, xdp_action::PASS as u32);

    let consumer =
        Mapping::map_shared(ring.as_fd(), 0, page, ProtFlags::READ | ProtFlags::WRITE).unwrap();
    let producer =
        Mapping::map_shared(ring.as_fd(), page as u64, page + 2 * size, ProtFlags::READ).unwrap();
    assert_eq!(producer.len(), page + 2 * size);
    assert_eq!(load_pos(&consumer, 0), 0);
    assert_eq!(load_pos(&producer, 0), 1000 * 16);
    // First record: header { len = 8, pg_off }, then the payload.
    // SAFETY: the data area starts one page into the producer mapping and holds >= 16 bytes;
    // the kernel wrote these records before test_run returned (no concurrent writer now).
    let (len, payload) = unsafe {
        let data = producer.as_ptr().as_ptr().add(page);
        (
            AtomicU32::from_ptr(data.cast()).load(Ordering::Acquire),
            data.add(8).cast::<u64>().read(),
        )
    };
    assert_eq!(len, 8);
    assert_eq!(payload, 0x5566_7788);

    // The producer side of a RINGBUF cannot be mapped writable, nor past its end.
    let err = Mapping::map_shared(
        ring.as_fd(),
        page as u64,
        page,
        ProtFlags::READ | ProtFlags::WRITE,
    )
    .unwrap_err();
    assert_eq!(err, Errno::PERM);
    let err = Mapping::map_shared(
        ring.as_fd(),
        page as u64,
        2 * page + 2 * size,
        ProtFlags::READ,
    )
    .unwrap_err();
    assert_eq!(err, Errno::INVAL);
}

#[test]
fn user_ringbuf_drain_with_btf_callback() {
    if !kernel_or_skip() || !user_ringbuf_or_skip() {
        return;
    }
    let page = page_size();
    let size = 4 * page;
    let map = map_create(&MapCreate::new(MapType::USER_RINGBUF, 0, 0, size as u32)).unwrap();

    let mut btf = BtfBuilder::new();
    let int = btf.int("int", 4, true);
    let void_ptr = btf.ptr(0);
    let main_proto = btf.func_proto(int, &[("ctx", void_ptr)]);
    let cb_proto = btf.func_proto(int, &[("dynptr", void_ptr), ("ctx", void_ptr)]);
    let main_func = btf.func("main", main_proto, FuncLinkage::Global);
    let cb_func = btf.func("cb", cb_proto, FuncLinkage::Static);
    let btf_fd = btf_load(&btf.build()).unwrap_or_else(|e| panic!("{e}"));

    let mut program = Program::new();
    program
        .extend(insn::ld_map_fd(R1, map.as_fd()))
        .ld_pseudo_func_label(R2, "cb")
        .push(insn::mov64_imm(R3, 0))
        .push(insn::mov64_imm(R4, 0))
        .push(insn::call_helper(helper::USER_RINGBUF_DRAIN))
        .push(insn::exit())
        .label("cb")
        .push(insn::mov64_imm(R0, 0))
        .push(insn::exit());
    let insns = program.build().unwrap();
    let cb_index = program.label_index("cb").unwrap() as u32;
    assert_eq!(insns[2].imm, 5, "same callback offset as the C reference");
    let func_info = [
        FuncInfo {
            insn_off: 0,
            type_id: main_func,
        },
        FuncInfo {
            insn_off: cb_index,
            type_id: cb_func,
        },
    ];
    let prog = match prog_load(&ProgLoad {
        btf_fd: Some(btf_fd.as_fd()),
        func_info: &func_info,
        ..ProgLoad::new(ProgType::XDP, &insns, GPL)
    }) {
        Ok(prog) => prog,
        // The verifier allows callbacks only in JIT-compiled programs; a kernel built without
        // a BPF JIT (Debian's s390x) has no sysctl for it. With a JIT, this is a failure.
        Err(e)
            if e.log().is_some_and(|log| {
                log.contains("callbacks are not allowed in non-JITed programs")
            }) && !std::path::Path::new("/proc/sys/net/core/bpf_jit_enable").exists() =>
        {
            eprintln!("skipped: this kernel has no BPF JIT, and callbacks need one: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };

    let consumer = Mapping::map_shared(map.as_fd(), 0, page, ProtFlags::READ).unwrap();
    let producer = Mapping::map_shared(
        map.as_fd(),
        page as u64,
        page,
        ProtFlags::READ | ProtFlags::WRITE,
    )
    .unwrap();
    let data = Mapping::map_shared(
        map.as_fd(),
        2 * page as u64,
        2 * size,
        ProtFlags::READ | ProtFlags::WRITE,
    )
    .unwrap();
    let mut prod = load_pos(&producer, 0);
    for i in 0..3u8 {
        let offset = (prod as usize) & (size - 1);
        // SAFETY: `offset + 24 <= size <= data.len()`; this process is the only producer and
        // the kernel does not read past producer_pos, which is published below with Release.
        unsafe {
            let record = data.as_ptr().as_ptr().add(offset);
            record.cast::<u32>().write(16); // len, not BUSY
            record.add(4).cast::<u32>().write(0); // pg_off
            record.add(8).write_bytes(i, 16);
        }
        prod += 24;
    }
    // SAFETY: producer_pos is the first u64 of the page-aligned producer mapping; Release
    // pairs with the kernel's smp_load_acquire of producer_pos in __bpf_user_ringbuf_peek.
    unsafe { AtomicU64::from_ptr(producer.as_ptr().as_ptr().cast()) }
        .store(prod, Ordering::Release);

    let packet = [0u8; 64];
    let out = prog_test_run(
        prog.as_fd(),
        &TestRun {
            data_in: &packet,
            repeat: 1,
            ..TestRun::default()
        },
    )
    .unwrap();
    assert_eq!(out.retval, 3);
    assert_eq!(load_pos(&consumer, 0), 72);
    assert_eq!(load_pos(&producer, 0), 72);
}

#[test]
fn verifier_failure_carries_log() {
    if !kernel_or_skip() {
        return;
    }
    // `exit` without setting r0: "R0 !read_ok".
    let insns = [insn::exit()];
    let err = prog_load(&ProgLoad::new(ProgType::XDP, &insns, GPL)).unwrap_err();
    assert_eq!(err.command(), Command::ProgLoad);
    assert!(
        matches!(err.errno(), Errno::ACCESS | Errno::INVAL),
        "unexpected errno: {err}"
    );
    let log = err.log().expect("verifier log");
    assert!(!log.is_empty());
    assert!(log.contains("R0"), "log: {log}");
    let io: std::io::Error = err.into();
    assert!(io.to_string().contains("BPF_PROG_LOAD"));
}

#[test]
fn btf_failure_carries_log() {
    if !kernel_or_skip() {
        return;
    }
    let mut btf = BtfBuilder::new();
    btf.ptr(42); // a pointer to a type that does not exist
    let err = btf_load(&btf.build()).unwrap_err();
    assert_eq!(err.command(), Command::BtfLoad);
    assert_eq!(err.errno(), Errno::INVAL);
    assert!(err.log().is_some_and(|log| !log.is_empty()), "{err}");
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
