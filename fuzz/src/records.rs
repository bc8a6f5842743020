//! Target `records`: a ring laid out record by record — any header word, any length, BUSY and
//! DISCARD bits, wrap-around, a producer_pos before, at or after the end of the layout — read
//! through every API with budgets and tiny buffers.
//!
//! Random bytes (target `decode`) rarely form long chains of plausible records; this layout
//! reaches the deep paths (many discards before a record, a corrupt header after good ones,
//! `BufferTooSmall` on the first record after skipped ones) on purpose.
//!
//! Input: `[size selector][start mode][start: 8][record count]` then per record
//! `[flags][length: 2 or 4]`, then `[producer mode][producer delta: 2][op count][ops...]`.

use bpf_ringbuf::model::HeapRing;
use bpf_ringbuf::{RingMemory, RingMemoryMut};

use super::check::{apply, ReadOp};
use super::input::Input;
use super::reference::{record_size, walk};

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;

/// A decoded `records` input.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Data-area size (16 to 4096).
    pub size: usize,
    /// `consumer_pos`, where the first record is laid.
    pub consumer_pos: usize,
    /// Raw header words, laid one after the other from `consumer_pos`.
    pub headers: Vec<u32>,
    /// How `producer_pos` relates to the end of the layout (in bytes, may be negative or odd).
    pub producer_delta: isize,
    /// Reads to run, in order.
    pub ops: Vec<ReadOp>,
}

impl Layout {
    /// Decodes fuzzer bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut input = Input::new(bytes);
        let size = 16usize << (input.u8() % 9);
        let consumer_pos = match input.u8() % 4 {
            0 => 0,
            // Just before the wrap at usize::MAX.
            1 => 0usize.wrapping_sub(8 * (1 + usize::from(input.u8()))),
            2 => input.position() & !7,
            _ => input.position(),
        };
        let count = input.u8() % 48;
        let headers = (0..count)
            .map(|_| {
                let flags = input.u8();
                if flags & 0x80 != 0 {
                    // Any header word at all.
                    input.u32()
                } else {
                    let len = u32::from(input.u16()) % (size as u32 / 2 + 9);
                    let busy = if flags & 1 != 0 { BUSY_BIT } else { 0 };
                    let discard = if flags & 2 != 0 { DISCARD_BIT } else { 0 };
                    len | busy | discard
                }
            })
            .collect();
        let mode = input.u8();
        let delta = isize::from(input.u16() as i16);
        let producer_delta = match mode % 4 {
            0 => 0,
            1 => 8 * (delta % 64),
            2 => delta % 64,
            _ => delta,
        };
        let count = input.u8() % 16;
        let ops = (0..count)
            .map(|_| {
                let selector = input.u8();
                ReadOp::decode(selector, &mut input)
            })
            .collect();
        Self {
            size,
            consumer_pos,
            headers,
            producer_delta,
            ops,
        }
    }
}

/// Decodes and runs one input.
pub fn run(bytes: &[u8]) {
    check(&Layout::from_bytes(bytes));
}

/// Lays out the records of `layout`, runs its reads and checks each of them.
pub fn check(layout: &Layout) {
    let size = layout.size;
    let ring = HeapRing::from_parts(size, &[], layout.consumer_pos, 0).expect("valid size");
    // Headers are 8-byte aligned; a misaligned consumer_pos (which the consumer must refuse)
    // gets the records laid from the aligned position below it.
    let mut position = layout.consumer_pos & !7;
    let mut laid = 0usize;
    for (serial, &raw) in layout.headers.iter().enumerate() {
        let record = record_size(raw & (DISCARD_BIT - 1));
        if laid + 8 > 2 * size {
            break;
        }
        let offset = position % size;
        // SAFETY: no consumer exists yet: this thread is the only one touching the ring.
        unsafe { ring.store_header(offset, raw) };
        let payload_len = ((record as usize) - 8).min(2 * size - offset - 8);
        // SAFETY: `offset + 8 + payload_len <= 2 * size`, and no consumer exists yet: this
        // thread is the only one touching the ring.
        let payload = unsafe { ring.bytes_mut(offset + 8, payload_len) };
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte = (serial * 37 + i) as u8;
        }
        let step = (record as usize).min(2 * size);
        position = position.wrapping_add(step);
        laid += step;
    }
    let producer_pos = position.wrapping_add_signed(layout.producer_delta);
    // SAFETY: as above.
    unsafe { ring.store_producer_pos(producer_pos) };
    // The ring's only endpoints (the producer is never used: the layout is the ring's state).
    let (_producer, mut consumer) = ring.split();
    let ring = consumer.memory().clone();
    let header = |offset: usize| ring.header(offset).load_relaxed();
    // SAFETY: the walk asks for ranges inside the data area; nothing writes the ring while the
    // copy is taken (single thread, no producer).
    let bytes = |offset: usize, len: usize| unsafe { ring.bytes(offset, len) }.to_vec();
    let final_ops = [
        ReadOp::Consume {
            budget: usize::MAX,
            break_after: None,
        },
        ReadOp::Resync,
        ReadOp::CheckBeforeSleep,
    ];
    for op in layout.ops.iter().chain(&final_ops) {
        let positions = consumer.positions();
        let steps = walk(size, positions.consumer, positions.producer, header, bytes);
        apply(&mut consumer, &steps, op);
    }
}
