//! Feature probes against the real kernel: each probe's answer must agree with the kernel's
//! version, and creating a map the kernel lacks a feature for must give
//! `Error::Unsupported`. The kernel matrix (`.ci/kernel-matrix`) runs these on 6.1, 6.12 and
//! 7.2, where the answers differ: the ring buffer's overwrite mode exists only from 6.19.
//! (Debian's kernels are mainline releases with fixes; a kernel that backports a ring feature
//! would make the version checks here fail, which is the point of checking.)

use std::os::fd::AsFd;

use bpf_ringbuf::probe::{self, Feature, Support};
use bpf_ringbuf::{Error, RingBuf};
use bpf_ringbuf_sys::{self as sys, Errno, MapFlags, MapType, Mapping};
use bpf_ringbuf_testkit::{self as kit, require_feature, require_kernel};
use rustix::mm::ProtFlags;

/// `BPF_F_RB_OVERWRITE` on a RINGBUF: Linux 6.19.
const OVERWRITE_SINCE: (u32, u32) = (6, 19);

#[test]
fn ring_map_types_match_the_kernel_version() {
    require_kernel!();
    let release = probe::kernel_release();
    let osrelease = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(release, osrelease.trim());
    println!("Linux {release}");
    assert_eq!(probe::probe_ringbuf().unwrap(), Support::Supported);
    let user = probe::probe_user_ringbuf().unwrap();
    println!("USER_RINGBUF: {user:?}");
    assert_eq!(
        user.is_supported(),
        kit::kernel_version() >= (6, 1),
        "{user:?} on Linux {release}"
    );
    assert_eq!(kit::user_ringbuf_missing().is_none(), user.is_supported());
}

#[test]
fn overwrite_flag_is_probed_and_creation_reports_it() {
    require_kernel!();
    let release = probe::kernel_release();
    let page = kit::page_size() as u32;
    let support = probe::probe_map_flags(MapType::RINGBUF, MapFlags::RB_OVERWRITE).unwrap();
    println!("Linux {release}: RINGBUF with RB_OVERWRITE: {support:?}");
    assert_eq!(
        support.is_supported(),
        kit::kernel_version() >= OVERWRITE_SINCE,
        "{support:?} on Linux {release}"
    );
    let created = probe::create_ring_map(MapType::RINGBUF, page, MapFlags::RB_OVERWRITE);
    match (support, created) {
        (Support::Supported, Ok(map)) => {
            let info = sys::map_info(map.as_fd()).unwrap();
            assert_eq!(info.map_type(), MapType::RINGBUF);
            assert_eq!(info.map_flags, MapFlags::RB_OVERWRITE.bits());
        }
        (Support::Unsupported { reason }, Err(error)) => {
            assert!(
                reason.contains(&release) && reason.contains("6.19"),
                "{reason}"
            );
            let Error::Unsupported {
                feature,
                kernel_release,
            } = &error
            else {
                panic!("expected Error::Unsupported, got {error:?}");
            };
            assert_eq!(
                *feature,
                Feature::RingFlags {
                    map_type: MapType::RINGBUF,
                    flags: MapFlags::RB_OVERWRITE
                }
            );
            assert_eq!(kernel_release, &release);
            let message = error.to_string();
            assert!(
                message.contains("BPF_F_RB_OVERWRITE") && message.contains("needs Linux 6.19"),
                "{message}"
            );
            assert_eq!(
                std::io::Error::from(error).kind(),
                std::io::ErrorKind::Unsupported
            );
        }
        (support, created) => panic!("probe said {support:?} but creation gave {created:?}"),
    }
}

#[test]
fn flags_no_kernel_knows_are_unsupported() {
    require_kernel!();
    let unknown = MapFlags::from_bits_retain(1 << 30);
    for map_type in [MapType::RINGBUF, MapType::USER_RINGBUF] {
        let support = probe::probe_map_flags(map_type, unknown).unwrap();
        let reason = support.unsupported_reason().expect("bit 30 is no map flag");
        assert!(reason.contains("0x40000000"), "{reason}");
        match probe::create_ring_map(map_type, kit::page_size() as u32, unknown) {
            Err(Error::Unsupported { feature, .. }) => {
                assert_eq!(
                    feature,
                    Feature::RingFlags {
                        map_type,
                        flags: unknown
                    }
                );
                assert_eq!(feature.since(), None);
            }
            other => panic!("{map_type} with bit 30: {other:?}"),
        }
    }
}

#[test]
fn bad_sizes_are_the_kernels_einval_not_a_missing_feature() {
    require_kernel!();
    let page = kit::page_size() as u32;
    for size in [0, page + 1, 3 * page] {
        match probe::create_ring_map(MapType::RINGBUF, size, MapFlags::empty()) {
            Err(Error::Bpf(error)) => assert_eq!(error.errno(), Errno::INVAL, "size {size}"),
            other => panic!("size {size}: {other:?}"),
        }
    }
}

#[test]
fn created_ring_maps_open_for_reading() {
    require_kernel!();
    let size = 4 * kit::page_size() as u32;
    let map = probe::create_ring_map(MapType::RINGBUF, size, MapFlags::empty()).unwrap();
    let ring = RingBuf::new(&map).unwrap();
    assert_eq!(ring.size(), size as usize);
    assert_eq!(ring.available().unwrap(), 0);
}

/// Reads the u64 at `offset` of a kernel-shared page.
fn load_u64(mapping: &Mapping, offset: usize) -> u64 {
    assert!(offset + 8 <= mapping.len() && offset % 8 == 0);
    // SAFETY: in bounds and 8-aligned (mappings are page aligned); the kernel writes these
    // positions with atomic stores (smp_store_release in kernel/bpf/ringbuf.c), which this
    // acquire load pairs with; the mapping outlives the reference.
    let word = unsafe {
        std::sync::atomic::AtomicU64::from_ptr(mapping.as_ptr().as_ptr().add(offset).cast())
    };
    word.load(std::sync::atomic::Ordering::Acquire)
}

#[test]
fn overwrite_ring_accepts_records_past_full() {
    require_kernel!();
    require_feature!(kit::ring_flags_missing(
        MapType::RINGBUF,
        MapFlags::RB_OVERWRITE,
        OVERWRITE_SINCE
    ));
    let page = kit::page_size();
    let payload = kit::array_map(8);
    // Records of 8 + 8 bytes, 45 more than a one-page ring holds: a plain ring keeps
    // producer_pos - consumer_pos <= size - 1 (`> rb->mask` fails in __bpf_ringbuf_reserve),
    // so it takes (page - 1) / 16 records (255 with 4 KiB pages) and refuses the other 45.
    let records = ((page - 1) / 16) as u32 + 45;
    let mut producer_pos = Vec::new();
    for flags in [MapFlags::empty(), MapFlags::RB_OVERWRITE] {
        let map = probe::create_ring_map(MapType::RINGBUF, page as u32, flags).unwrap();
        let producer = kit::output_from_array(map.as_fd(), payload.as_fd(), 8, 0);
        let mut refused = 0;
        for _ in 0..records {
            let run = kit::prog_test_run(
                producer.fd(),
                &kit::TestRun {
                    data_in: &[0u8; 64],
                    ..kit::TestRun::default()
                },
            )
            .unwrap();
            if run.retval != kit::XDP_PASS {
                refused += 1;
            }
        }
        let producer_page = Mapping::map_shared(map.as_fd(), page as u64, page, ProtFlags::READ)
            .expect("map the producer page");
        producer_pos.push((load_u64(&producer_page, 0), refused));
    }
    let taken = (page as u64 - 1) / 16;
    assert_eq!(
        producer_pos[0],
        (taken * 16, records - taken as u32),
        "a plain ring stops when full"
    );
    assert_eq!(
        producer_pos[1],
        (u64::from(records) * 16, 0),
        "an overwrite ring takes every record"
    );
}
