//! The test kit's own program tooling against the real kernel: the assembler, program loads
//! and test runs, BTF for callback subprograms, and the verifier and BTF logs that failed loads
//! carry. Every other kernel test builds on these.

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use bpf_ringbuf_sys::{map_create, page_size, Command, Errno, MapCreate, MapType, Mapping};
use bpf_ringbuf_testkit::btf::{BtfBuilder, FuncLinkage};
use bpf_ringbuf_testkit::insn::{self, helper, AluOp, MemSize, Program, R0, R1, R10, R2, R3, R4};
use bpf_ringbuf_testkit::{
    self as kit, btf_load, prog_load, prog_test_run, require_feature, require_kernel, xdp_action,
    FuncInfo, ProgLoad, ProgType, TestRun,
};
use rustix::mm::ProtFlags;

const GPL: &CStr = c"GPL";

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
    require_kernel!();
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
    require_kernel!();
    require_feature!(kit::user_ringbuf_missing());
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
    require_kernel!();
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
    require_kernel!();
    let mut btf = BtfBuilder::new();
    btf.ptr(42); // a pointer to a type that does not exist
    let err = btf_load(&btf.build()).unwrap_err();
    assert_eq!(err.command(), Command::BtfLoad);
    assert_eq!(err.errno(), Errno::INVAL);
    assert!(err.log().is_some_and(|log| !log.is_empty()), "{err}");
}
