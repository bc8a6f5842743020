//! Maps the tests create and read: ring maps sized for any page size, arrays and per-CPU
//! counters; and the CPUs per-CPU values are indexed by.

use std::os::fd::{BorrowedFd, OwnedFd};

use bpf_ringbuf_sys::{map_create, map_lookup_elem, map_update_elem, MapCreate, MapType};

/// The system page size.
pub fn page_size() -> usize {
    bpf_ringbuf_sys::page_size()
}

/// The smallest data area of a ring map (`max_entries` of a RINGBUF or USER_RINGBUF) that
/// holds at least `min_bytes`: a power of two and a multiple of the page size, as the kernel
/// requires. Tests size kernel rings with it, so they run unchanged on 4 KiB, 16 KiB and
/// 64 KiB pages; `ring_size_at_least(4096)` is 4096 on 4 KiB pages and one page otherwise.
pub fn ring_size_at_least(min_bytes: usize) -> usize {
    min_bytes.next_power_of_two().max(page_size())
}

/// A new `BPF_MAP_TYPE_RINGBUF` map with a `size`-byte data area.
pub fn ringbuf_map(size: usize) -> OwnedFd {
    map_create(&MapCreate::new(MapType::RINGBUF, 0, 0, size as u32)).expect("create RINGBUF map")
}

/// A new `BPF_MAP_TYPE_USER_RINGBUF` map with a `size`-byte data area.
pub fn user_ringbuf_map(size: usize) -> OwnedFd {
    map_create(&MapCreate::new(MapType::USER_RINGBUF, 0, 0, size as u32))
        .expect("create USER_RINGBUF map")
}

/// A one-element `BPF_MAP_TYPE_ARRAY` with `value_size`-byte values.
pub fn array_map(value_size: u32) -> OwnedFd {
    map_create(&MapCreate::new(MapType::ARRAY, 4, value_size, 1)).expect("create ARRAY map")
}

/// A one-element `BPF_MAP_TYPE_PERCPU_ARRAY` of `u64` counters.
pub fn percpu_counter_map() -> OwnedFd {
    map_create(&MapCreate::new(MapType::PERCPU_ARRAY, 4, 8, 1)).expect("create PERCPU_ARRAY map")
}

/// Sets element 0 of an array map.
pub fn set_array_value(map: BorrowedFd<'_>, value: &[u8]) {
    map_update_elem(map, &0u32.to_ne_bytes(), value, 0).expect("update array element");
}

/// The per-CPU values of element 0 of a per-CPU `u64` array, one per possible CPU.
pub fn percpu_counters(map: BorrowedFd<'_>) -> Vec<u64> {
    let cpus = possible_cpus();
    let mut values = vec![0u8; 8 * cpus];
    map_lookup_elem(map, &0u32.to_ne_bytes(), &mut values).expect("lookup per-CPU counters");
    values
        .chunks_exact(8)
        .map(|chunk| u64::from_ne_bytes(chunk.try_into().unwrap()))
        .collect()
}

/// Number of possible CPUs (the number of slots in per-CPU map values).
pub fn possible_cpus() -> usize {
    bpf_ringbuf_sys::possible_cpus().expect("read possible CPUs")
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).expect("sched_setaffinity");
}

/// Number of CPUs this process may run on.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
