//! Bring your own mapping, against the real kernel: `Consumer` over a RINGBUF mapping made by
//! hand (the `LibraryRing` of `examples/byo_mapping.rs`, with its own `RingMemory` impl) and
//! over `RawRingMemory`, reading records a BPF program produced.

use std::os::fd::AsFd;

use bpf_ringbuf::{Consumer, ReadError, RingBuf, RingMemory};
use bpf_ringbuf_testkit::{self as kit, require_kernel};

#[path = "../examples/byo_mapping.rs"]
#[allow(dead_code)]
mod byo;

use byo::LibraryRing;

#[test]
fn the_example_reads_every_record_through_both_kinds_of_memory() {
    require_kernel!();
    let size = kit::ring_size_at_least(4 * 4096);
    let report = byo::run(size).unwrap();
    let per_round = byo::LENGTHS.len() * byo::PER_ROUND as usize;
    assert_eq!(report.through_impl, byo::ROUNDS.div_ceil(2) * per_round);
    assert_eq!(report.through_raw, byo::ROUNDS / 2 * per_round);
    let bytes_per_round: usize = byo::LENGTHS
        .iter()
        .map(|&len| bpf_ringbuf::header::record_size(len as usize))
        .sum::<usize>()
        * byo::PER_ROUND as usize;
    assert_eq!(report.bytes, byo::ROUNDS * bytes_per_round);
    // The run wrapped the ring several times, so records straddled its end.
    assert!(report.bytes > 4 * size, "{report:?}");
}

#[test]
fn hand_made_mapping_sees_the_same_positions_as_the_front_end() {
    require_kernel!();
    let size = 4 * kit::page_size();
    let map = kit::ringbuf_map(size);
    let payload = kit::array_map(64);
    kit::set_array_value(payload.as_fd(), &byo::pattern(64));
    let producer = kit::output_from_array(map.as_fd(), payload.as_fd(), 40, 0);
    producer.run(5);

    let ring = LibraryRing::map(map.as_fd(), size).unwrap();
    assert_eq!(ring.size(), size);
    let mut ours = Consumer::new(&ring).unwrap();
    assert_eq!(ours.available().unwrap(), 5 * 48);
    // Read two records through the hand-made mapping...
    for _ in 0..2 {
        assert_eq!(
            ours.read_owned().unwrap().as_deref(),
            Some(&byo::pattern(40)[..])
        );
    }
    // ...and the crate's own front end, mapping the same map, continues after them.
    let mut front_end = RingBuf::new(&map).unwrap();
    assert_eq!(front_end.positions(), ours.positions());
    assert_eq!(front_end.positions().consumer, 2 * 48);
    let rest: Vec<Vec<u8>> = std::iter::from_fn(|| front_end.read_owned().unwrap()).collect();
    assert_eq!(rest, vec![byo::pattern(40); 3]);
    // Both mappings show the kernel's pages: what one consumer published, the other sees.
    assert_eq!(ours.positions().consumer, 5 * 48);
    assert_eq!(ours.read_owned().unwrap(), None);

    // The raw-pointer view of the same pages agrees too.
    let raw = ring.as_raw();
    assert_eq!(raw.size(), size);
    assert_eq!(Consumer::new(raw).unwrap().positions(), ours.positions());
}

#[test]
fn a_wrong_size_is_caught_not_read_out_of_bounds() {
    require_kernel!();
    let size = 4 * kit::page_size();
    let map = kit::ringbuf_map(size);
    // Claiming a larger ring than the map has: the kernel refuses the longer mapping.
    assert!(LibraryRing::map(map.as_fd(), 2 * size).is_err());
    // A size that is not a power of two never reaches mmap.
    assert!(LibraryRing::map(map.as_fd(), 3 * kit::page_size()).is_err());

    // A corrupt consumer_pos written through the hand-made mapping gives a typed error.
    let ring = LibraryRing::map(map.as_fd(), size).unwrap();
    ring.consumer_pos()
        .store(64, std::sync::atomic::Ordering::Release);
    let mut consumer = Consumer::new(&ring).unwrap();
    assert_eq!(
        consumer.read_owned(),
        Err(ReadError::ConsumerAhead {
            consumer_pos: 64,
            producer_pos: 0
        })
    );
    consumer.resync();
    assert_eq!(consumer.available().unwrap(), 0);
}
