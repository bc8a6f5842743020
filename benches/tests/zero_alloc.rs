//! Reading records allocates nothing in steady state: a counting global allocator watches
//! the reading thread while it waits for and drains kernel-filled rings through every
//! non-owning API (zero-copy batch, callback, `read_into`, `read_vec` with a reused buffer).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ops::ControlFlow;
use std::os::fd::AsFd;
use std::time::Duration;

use bpf_ringbuf::RingBuf;
use bpf_ringbuf_testkit::{self as kit, require_kernel};

/// Counts allocations made by threads that switched counting on.
struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: the allocator may run while this thread's locals are being torn down.
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: forwards every call to `System`, only counting on the side.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Allocations this thread makes while running `f`.
fn allocations_in<R>(f: impl FnOnce() -> R) -> (u64, R) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    let result = f();
    COUNTING.with(|c| c.set(false));
    (ALLOCATIONS.with(Cell::get), result)
}

const RECORD_LEN: u32 = 100;
const RECORDS: u32 = 2_000;
const ROUNDS: usize = 5;

#[derive(Clone, Copy, Debug)]
enum Api {
    Batch,
    Callback,
    ReadInto,
    ReadVec,
}

#[test]
fn steady_state_reads_allocate_nothing() {
    require_kernel!();
    let map = kit::ringbuf_map(1 << 20);
    let producer = kit::reserve_load_submit(map.as_fd(), RECORD_LEN, kit::NO_WAKEUP);
    let expected = kit::packet_bytes(RECORD_LEN as usize)[..RECORD_LEN as usize].to_vec();
    let mut ring = RingBuf::new(&map).unwrap();
    let mut buf = vec![0u8; 4096];
    let mut vec_buf = Vec::with_capacity(4096);

    for round in 0..=ROUNDS {
        for api in [Api::Batch, Api::Callback, Api::ReadInto, Api::ReadVec] {
            producer.run(RECORDS);
            let (allocations, (records, matching)) = allocations_in(|| {
                assert!(ring.wait(Some(Duration::ZERO)).unwrap().is_ready());
                let (mut records, mut matching) = (0u32, 0u32);
                let mut check = |record: &[u8]| {
                    records += 1;
                    matching += u32::from(record == expected.as_slice());
                };
                match api {
                    Api::Batch => {
                        let batch = ring.batch();
                        for record in &batch {
                            check(record.unwrap());
                        }
                    }
                    Api::Callback => {
                        ring.consume(usize::MAX, |record| {
                            check(record);
                            ControlFlow::Continue(())
                        })
                        .unwrap();
                    }
                    Api::ReadInto => {
                        while let Some(len) = ring.read_into(&mut buf).unwrap() {
                            check(&buf[..len]);
                        }
                    }
                    Api::ReadVec => {
                        while ring.read_vec(&mut vec_buf).unwrap() {
                            check(&vec_buf);
                        }
                    }
                }
                assert!(!ring.wait(Some(Duration::ZERO)).unwrap().is_ready());
                (records, matching)
            });
            assert_eq!((records, matching), (RECORDS, RECORDS), "{api:?}");
            // Round 0 warms up (first use of the epoll set, buffers); after it, nothing.
            if round > 0 {
                assert_eq!(allocations, 0, "{api:?} allocated in round {round}");
            }
        }
    }
}

/// The counter sees allocations: `read_owned` makes one per record.
#[test]
fn the_counter_sees_allocations() {
    require_kernel!();
    let map = kit::ringbuf_map(1 << 16);
    let producer = kit::reserve_load_submit(map.as_fd(), RECORD_LEN, kit::NO_WAKEUP);
    let mut ring = RingBuf::new(&map).unwrap();
    producer.run(10);
    let (allocations, records) = allocations_in(|| {
        let mut records = Vec::new();
        while let Some(record) = ring.read_owned().unwrap() {
            records.push(record.len());
        }
        records
    });
    assert_eq!(records, vec![RECORD_LEN as usize; 10]);
    assert!(allocations >= 10, "only {allocations} allocations counted");
}
