//! RINGBUF against the real kernel: records produced by BPF programs run with
//! BPF_PROG_TEST_RUN, read through `RingBuf`. Mirrors the user-space-visible scenarios of the
//! kernel selftest `tools/testing/selftests/bpf/prog_tests/ringbuf.c`.

use std::ops::ControlFlow;
use std::os::fd::AsFd;

use bpf_ringbuf::RingBuf;
use bpf_ringbuf_testkit::{self as kit, require_kernel, Commit};

#[test]
fn records_from_a_kernel_program_arrive_intact() {
    require_kernel!();
    let map = kit::ringbuf_map(64 * 1024);
    let payload = kit::array_map(4096);
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i * 31 + 7) as u8).collect();
    kit::set_array_value(payload.as_fd(), &bytes);
    let mut ring = RingBuf::new(&map).unwrap();
    for len in [1u32, 7, 8, 9, 100, 1000, 4000] {
        let producer = kit::output_from_array(map.as_fd(), payload.as_fd(), len, 0);
        producer.run(3);
        let batch = ring.batch();
        let records: Vec<&[u8]> = batch.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(records.len(), 3, "len {len}");
        for record in records {
            assert_eq!(record, &bytes[..len as usize]);
        }
    }
    assert_eq!(ring.available().unwrap(), 0);
}

#[test]
fn stamped_records_submit_and_discard() {
    require_kernel!();
    let map = kit::ringbuf_map(4096 * 4);
    let sequence = kit::percpu_counter_map();
    let drops = kit::percpu_counter_map();
    let submit = kit::stamped(
        map.as_fd(),
        sequence.as_fd(),
        drops.as_fd(),
        40,
        Commit::Submit,
        0,
    );
    let discard = kit::stamped(
        map.as_fd(),
        sequence.as_fd(),
        drops.as_fd(),
        40,
        Commit::Discard,
        0,
    );
    let mut ring = RingBuf::new(&map).unwrap();
    // Sequence numbers are per CPU: stay on one.
    kit::pin_to_cpu(0);
    submit.run(2);
    discard.run(3);
    submit.run(1);
    let mut seen = Vec::new();
    ring.consume(usize::MAX, |record| {
        assert_eq!(record.len(), 40);
        assert_eq!(&record[16..], &kit::stamped_tail(40)[..]);
        seen.push(kit::stamp(record).1);
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(seen, [1, 2, 6]);
    let positions = ring.positions();
    assert_eq!(positions.consumer, 6 * 48);
    assert_eq!(positions.producer, 6 * 48);
}

#[test]
fn busy_head_record_is_waited_for_without_spinning() {
    require_kernel!();
    let map = kit::ringbuf_map(4096);
    let holder = kit::busy_holder(map.as_fd(), 1 << 23, 0xfeed);
    let mut ring = RingBuf::new(&map).unwrap();
    let thread = std::thread::spawn(move || {
        holder.run(1);
    });
    assert!(ring.wait(Some(std::time::Duration::from_secs(10))).unwrap());
    thread.join().unwrap();
    let record = ring.read_owned().unwrap().unwrap();
    assert_eq!(record, 0xfeedu64.to_ne_bytes());
    let stats = ring.wait_stats();
    assert!(stats.wakeups <= 3, "{stats:?}");
}
