//! Target `decode`: arbitrary bytes as ring data, arbitrary positions, every read API.
//!
//! Input: `[size selector][position mode][consumer_pos: 8][producer_pos or distance: 8]`
//! `[op count][ops...][ring data...]`. The data bytes are repeated over the data area (both
//! halves). Each read is checked against [`reference::walk`](super::reference::walk) over an
//! image of the ring built here, independently of `HeapRing`.

use bpf_ringbuf::model::HeapRing;

use super::check::{apply, ReadOp};
use super::input::Input;
use super::reference::walk;

/// A decoded `decode` input.
#[derive(Clone, Debug)]
pub struct DecodeCase {
    /// Data-area size (16 to 4096).
    pub size: usize,
    /// Initial `consumer_pos`.
    pub consumer_pos: usize,
    /// `producer_pos`.
    pub producer_pos: usize,
    /// Reads to run, in order.
    pub ops: Vec<ReadOp>,
    /// Bytes repeated over the data area.
    pub data: Vec<u8>,
}

impl DecodeCase {
    /// Decodes fuzzer bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut input = Input::new(bytes);
        let size = 16usize << (input.u8() % 9);
        let mode = input.u8();
        let consumer_pos = input.position();
        let raw = input.position();
        // Mode bit 0: producer_pos is consumer_pos plus a small distance (the interesting
        // region), rather than a free value.
        let producer_pos = if mode & 1 != 0 {
            consumer_pos.wrapping_add(raw % (2 * size + 16))
        } else {
            raw
        };
        let count = input.u8() % 12;
        let ops = (0..count)
            .map(|_| {
                let selector = input.u8();
                ReadOp::decode(selector, &mut input)
            })
            .collect();
        Self {
            size,
            consumer_pos,
            producer_pos,
            ops,
            data: input.rest().to_vec(),
        }
    }
}

/// Decodes and runs one input.
pub fn run(bytes: &[u8]) {
    check(&DecodeCase::from_bytes(bytes));
}

/// Runs the reads of `case` on a fresh ring and checks each of them; ends with a full batch
/// and a resync.
pub fn check(case: &DecodeCase) {
    let size = case.size;
    let ring = HeapRing::from_parts(size, &case.data, case.consumer_pos, case.producer_pos)
        .expect("sizes are valid");
    // The ring as the protocol sees it: `data` repeated, the second half a copy of the first.
    let image: Vec<u8> = (0..2 * size)
        .map(|i| match case.data.len() {
            0 => 0,
            len => case.data[(i % size) % len],
        })
        .collect();
    let header =
        |offset: usize| u32::from_ne_bytes(image[offset..offset + 4].try_into().expect("4 bytes"));
    let bytes = |offset: usize, len: usize| image[offset..offset + len].to_vec();
    let (_producer, mut consumer) = ring.split();
    let final_ops = [
        ReadOp::Batch {
            take: None,
            commit: false,
        },
        ReadOp::Resync,
        ReadOp::CheckBeforeSleep,
        ReadOp::Available,
    ];
    for op in case.ops.iter().chain(&final_ops) {
        let positions = consumer.positions();
        let steps = walk(size, positions.consumer, positions.producer, header, bytes);
        apply(&mut consumer, &steps, op);
    }
}
