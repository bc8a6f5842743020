//! Bring your own mapping, against the real kernel: `Consumer` over a RINGBUF mapping made by
//! hand (the `LibraryRing` of `examples/byo_mapping.rs`, with its own `RingMemory` impl) and
//! over `RawRingMemory`, reading records a BPF program produced.

use std::os::fd::AsFd;

use bpf_ringbuf::{Consumer, Positions, ReadError, RingBuf, RingMemory};
use bpf_ringbuf_testkit::{self as kit, require_kernel};

#[path = "../../examples/byo_mapping.rs"]
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
    // The positions as the hand-made mapping shows them (its words can only be loaded).
    let hand_made = |ring: &LibraryRing| Positions {
        consumer: ring.consumer_pos().load_acquire(),
        producer: ring.producer_pos().load_acquire(),
    };
    {
        // SAFETY: this consumer is the process's only reader of the map while it lives (the
        // front end below is opened after it is dropped); the consumer page is mapped
        // read-write, and the producer is the kernel.
        let mut ours = unsafe { Consumer::new(&ring) }.unwrap();
        assert_eq!(ours.available().unwrap(), 5 * 48);
        // Read two records through the hand-made mapping...
        for _ in 0..2 {
            assert_eq!(
                ours.read_owned().unwrap().as_deref(),
                Some(&byo::pattern(40)[..])
            );
        }
        assert_eq!(ours.positions(), hand_made(&ring));
    }
    // ...and the crate's own front end, mapping the same map, continues after them.
    let mut front_end = RingBuf::new(&map).unwrap();
    assert_eq!(front_end.positions(), hand_made(&ring));
    assert_eq!(front_end.positions().consumer, 2 * 48);
    let rest: Vec<Vec<u8>> = std::iter::from_fn(|| front_end.read_owned().unwrap()).collect();
    assert_eq!(rest, vec![byo::pattern(40); 3]);
    // Both mappings show the kernel's pages: what the front end published, the hand-made
    // mapping sees.
    assert_eq!(hand_made(&ring).consumer, 5 * 48);
    assert_eq!(front_end.positions(), hand_made(&ring));
    drop(front_end);
    {
        // A consumer over the hand-made mapping, made once the front end is gone, starts
        // there.
        // SAFETY: as above: the front end, the map's other reader, was dropped.
        let mut ours = unsafe { Consumer::new(&ring) }.unwrap();
        assert_eq!(ours.cursor(), 5 * 48);
        assert_eq!(ours.read_owned().unwrap(), None);
    }

    // The raw-pointer view of the same pages agrees too.
    // SAFETY: `ring` lives until the end of the test, past every use of `raw`.
    let raw = unsafe { ring.as_raw() };
    assert_eq!(raw.size(), size);
    // SAFETY: the only reader of the map now (`ours` was dropped); as above otherwise.
    let through_raw = unsafe { Consumer::new(raw) }.unwrap();
    assert_eq!(through_raw.positions(), hand_made(&ring));
    assert_eq!(through_raw.available(), Ok(0));
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

    // A corrupt consumer_pos, written by another mapping of the consumer page (as any process
    // holding the map fd can), gives a typed error.
    let ring = LibraryRing::map(map.as_fd(), size).unwrap();
    let other = kit::ConsumerPosWriter::new(map.as_fd());
    other.store(64);
    assert_eq!(ring.consumer_pos().load_acquire(), 64);
    // SAFETY: the process's only reader of the map; the consumer page is mapped read-write,
    // and the producer is the kernel.
    let mut consumer = unsafe { Consumer::new(&ring) }.unwrap();
    assert_eq!(
        consumer.read_owned(),
        Err(ReadError::ConsumerAhead {
            consumer_pos: 64,
            producer_pos: 0
        })
    );
    // Nothing moved; resync moves consumer_pos to producer_pos, as every mapping sees (a
    // cursor ahead of producer_pos says nothing about what was lost: the count is capped at
    // what the ring can hold).
    assert_eq!(other.load(), 64);
    assert_eq!(consumer.resync(), size);
    assert_eq!(other.load(), 0);
    assert_eq!(consumer.available().unwrap(), 0);
}
