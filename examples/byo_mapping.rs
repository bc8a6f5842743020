//! Bring your own mapping: read a kernel ring through `bpf_ringbuf::Consumer` over memory this
//! crate did not map.
//!
//! A BPF library (aya, libbpf-rs, an in-house loader) already creates its ring maps and maps
//! their pages. To use the protocol core it only has to describe that memory: implement
//! `RingMemory` for its own type (as `LibraryRing` does below), or hand the raw addresses to
//! `RawRingMemory::from_raw_parts`. This example does both against the real kernel: it creates
//! a RINGBUF map, maps it by hand with rustix, has a BPF program produce records with
//! `bpf_ringbuf_output`, reads them zero-copy, and checks every byte.
//!
//! ```text
//! sudo cargo run --example byo_mapping
//! ```
//!
//! Exits non-zero if a record is missing, extra or wrong. Without bpf() access it prints why
//! and exits 0, unless `BPF_RINGBUF_REQUIRE_KERNEL=1` is set (as in CI).

use std::error::Error;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::ptr::NonNull;

use bpf_ringbuf::memory::{DataWord, PositionWord};
use bpf_ringbuf::{Consumer, RawRingMemory, Readiness, RingMemory};
use bpf_ringbuf_testkit as kit;
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

/// A RINGBUF map's pages as a BPF library would hold them: two `MAP_SHARED` mappings of the
/// map fd, unmapped on drop.
pub struct LibraryRing {
    /// Offset 0, one page, read-write: `consumer_pos` at its start.
    consumer_page: NonNull<u8>,
    /// Offset `page_size`, `page_size + 2 * size` bytes, read-only: `producer_pos` at its
    /// start, the data area (mapped twice back to back by the kernel) one page in.
    producer_page: NonNull<u8>,
    page_size: usize,
    /// The map's `max_entries`.
    size: usize,
}

// SAFETY: the pages are shared memory reachable from any thread; all concurrent accesses to
// them go through atomics or through slices the ring protocol hands to one reader at a time.
unsafe impl Send for LibraryRing {}
// SAFETY: as above.
unsafe impl Sync for LibraryRing {}

impl LibraryRing {
    /// Maps the RINGBUF map `map`, whose `max_entries` is `size`, the way libbpf does.
    pub fn map(map: BorrowedFd<'_>, size: usize) -> io::Result<Self> {
        let page_size = rustix::param::page_size();
        if !size.is_power_of_two() || size % page_size != 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad ring size"));
        }
        // SAFETY: a fresh mapping chosen by the kernel (null hint, no MAP_FIXED), so no
        // existing memory is replaced.
        let consumer_page = unsafe {
            mmap(
                std::ptr::null_mut(),
                page_size,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                map,
                0,
            )
        }?;
        // SAFETY: as above.
        let producer_page = unsafe {
            mmap(
                std::ptr::null_mut(),
                page_size + 2 * size,
                ProtFlags::READ,
                MapFlags::SHARED,
                map,
                page_size as u64,
            )
        };
        let producer_page = match producer_page {
            Ok(address) => address,
            Err(error) => {
                // SAFETY: mapped just above with this length, not used afterwards.
                unsafe { munmap(consumer_page, page_size) }?;
                return Err(error.into());
            }
        };
        Ok(Self {
            // A successful mmap never returns null.
            consumer_page: NonNull::new(consumer_page.cast()).expect("mmap returned null"),
            producer_page: NonNull::new(producer_page.cast()).expect("mmap returned null"),
            page_size,
            size,
        })
    }

    /// Start of the data area.
    pub fn data(&self) -> *mut u8 {
        // SAFETY: the producer mapping is `page_size + 2 * size` bytes long, so one page in is
        // inside it.
        unsafe { self.producer_page.as_ptr().add(self.page_size) }
    }

    /// The same memory as a `RawRingMemory`, for code that would rather not write the
    /// `unsafe impl` below.
    ///
    /// # Safety
    ///
    /// A `RawRingMemory` holds addresses, not a borrow: the caller keeps `self` (and so the
    /// mapping) alive for as long as the result, or anything made from it, is in use.
    pub unsafe fn as_raw(&self) -> RawRingMemory {
        // SAFETY: the addresses are this mapping's consumer page (writable), producer page and
        // data area (`2 * size` bytes, double mapped by the kernel), all page aligned; `size` is
        // the map's max_entries. The caller keeps `self` alive while the result is in use.
        unsafe {
            RawRingMemory::from_raw_parts(
                self.consumer_page.as_ptr().cast(),
                self.producer_page.as_ptr().cast(),
                self.data(),
                self.size,
            )
        }
        .expect("size checked in LibraryRing::map")
    }
}

impl Drop for LibraryRing {
    fn drop(&mut self) {
        // SAFETY: both ranges were mapped by `map` with these lengths and are unmapped once;
        // every borrow handed out by the RingMemory impl borrows `self`, so none outlives this.
        unsafe {
            let _ = munmap(self.consumer_page.as_ptr().cast(), self.page_size);
            let _ = munmap(
                self.producer_page.as_ptr().cast(),
                self.page_size + 2 * self.size,
            );
        }
    }
}

// SAFETY: `RingMemory`'s contract, point by point:
// - `size` is the map's max_entries, fixed, a power of two (checked in `map`, and the kernel
//   refuses maps whose size is not one).
// - `consumer_pos` / `producer_pos` are the first words of the consumer and producer pages,
//   the words the kernel reads and writes; always the same ones.
// - `header` and `bytes` address the data area, which the kernel maps twice back to back over
//   `2 * size` bytes: byte `size + i` is byte `i`, and `offset + len <= 2 * size` stays inside
//   the mapping.
// - Both mappings stay in place until `self` is dropped, and every reference handed out
//   borrows `self`.
unsafe impl RingMemory for LibraryRing {
    fn consumer_pos(&self) -> &PositionWord {
        // SAFETY: page aligned, mapped read-write for as long as `self` lives (the returned
        // reference borrows `self`); the kernel only reads and writes this word with
        // smp_load_acquire/smp_store_release.
        unsafe { PositionWord::from_ptr(self.consumer_page.as_ptr().cast()) }
    }

    fn producer_pos(&self) -> &PositionWord {
        // SAFETY: page aligned, mapped read-only for as long as `self` lives; the kernel
        // writes it with smp_store_release, and a `PositionWord` is only ever loaded outside
        // the core, which never stores to a RINGBUF's producer_pos.
        unsafe { PositionWord::from_ptr(self.producer_page.as_ptr().cast()) }
    }

    fn size(&self) -> usize {
        self.size
    }

    fn header(&self, offset: usize) -> &DataWord {
        assert!(
            offset < self.size && offset % 8 == 0,
            "bad header offset {offset}"
        );
        // SAFETY: inside the data area (checked), 8-byte aligned (the area is page aligned),
        // mapped read-only for as long as `self` lives; the kernel writes header words
        // atomically (xchg, WRITE_ONCE), and a `DataWord` is only ever loaded outside the core.
        unsafe { DataWord::from_ptr(self.data().add(offset).cast()) }
    }

    unsafe fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        debug_assert!(offset + len <= 2 * self.size);
        // SAFETY: the caller guarantees `offset + len <= 2 * size` (inside the double-mapped
        // data area) and that the protocol keeps writers away while the slice lives.
        unsafe { std::slice::from_raw_parts(self.data().add(offset), len) }
    }
}

/// The byte pattern the producer copies records from.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 + 17) as u8).collect()
}

/// Record lengths produced in each round, and how many records of each.
pub const LENGTHS: [u32; 5] = [1, 8, 13, 200, 1000];
/// Records of each length per round.
pub const PER_ROUND: u32 = 7;
/// Rounds: enough traffic (about 420 KiB) to wrap a 64 KiB ring several times, the
/// smallest ring there is with 64 KiB pages.
pub const ROUNDS: usize = 48;

/// What [`run`] read.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    /// Records read through `LibraryRing`'s own `RingMemory` impl.
    pub through_impl: usize,
    /// Records read through `RawRingMemory`.
    pub through_raw: usize,
    /// Bytes the consumer position advanced over the whole run.
    pub bytes: usize,
}

/// Creates a ring map, maps it by hand, produces records in the kernel and reads them, in
/// alternating rounds, through the library's own impl and through `RawRingMemory`. Errs on
/// the first record that is missing, extra or wrong.
pub fn run(size: usize) -> Result<Report, Box<dyn Error>> {
    let map = kit::ringbuf_map(size);
    let ring = LibraryRing::map(map.as_fd(), size)?;
    let payload = kit::array_map(1024);
    let source = pattern(1024);
    kit::set_array_value(payload.as_fd(), &source);
    let producers: Vec<_> = LENGTHS
        .iter()
        .map(|&len| {
            (
                len,
                kit::output_from_array(map.as_fd(), payload.as_fd(), len, 0),
            )
        })
        .collect();

    let mut report = Report {
        through_impl: 0,
        through_raw: 0,
        bytes: 0,
    };
    for round in 0..ROUNDS {
        for (_, producer) in &producers {
            producer.run(PER_ROUND);
        }
        // Each round opens a new consumer, as a library reopening a pinned map would: it
        // continues from the consumer_pos the previous one published.
        let read = if round % 2 == 0 {
            // SAFETY: the map was created above and this process reads it through this
            // consumer alone: the previous round's consumer was dropped, and nothing else
            // maps it. The consumer page is mapped read-write; the producer is the kernel,
            // which writes a record only in space consumer_pos handed back, before committing.
            read_round(unsafe { Consumer::new(&ring) }?, &source)?
        } else {
            // SAFETY: as above, and `ring` outlives the raw view, which the round consumes.
            read_round(unsafe { Consumer::new(ring.as_raw()) }?, &source)?
        };
        if round % 2 == 0 {
            report.through_impl += read;
        } else {
            report.through_raw += read;
        }
    }
    // SAFETY: as in the rounds: every earlier consumer was dropped.
    let consumer = unsafe { Consumer::new(&ring) }?;
    if consumer.check_before_sleep() != Readiness::Empty {
        return Err("records left in the ring after the last round".into());
    }
    report.bytes = consumer.positions().consumer;
    Ok(report)
}

/// Reads one round's records zero-copy and checks them against what the producers sent.
fn read_round<M: RingMemory>(
    mut consumer: Consumer<M>,
    source: &[u8],
) -> Result<usize, Box<dyn Error>> {
    let batch = consumer.batch();
    let records: Vec<&[u8]> = batch.iter().collect::<Result<_, _>>()?;
    let expected = LENGTHS.len() * PER_ROUND as usize;
    if records.len() != expected {
        return Err(format!("read {} records, expected {expected}", records.len()).into());
    }
    for (index, record) in records.iter().enumerate() {
        let len = LENGTHS[index / PER_ROUND as usize] as usize;
        if *record != &source[..len] {
            return Err(format!("record {index} ({} bytes) does not match", record.len()).into());
        }
    }
    Ok(records.len())
}

#[allow(dead_code)] // `main` is unused where the kernel test includes this file as a module.
fn main() -> Result<(), Box<dyn Error>> {
    if !kit::kernel_available() {
        return Ok(());
    }
    let size = 4 * rustix::param::page_size();
    let report = run(size)?;
    let expected = ROUNDS * LENGTHS.len() * PER_ROUND as usize;
    if report.through_impl + report.through_raw != expected {
        return Err(format!("{report:?}: expected {expected} records").into());
    }
    println!(
        "byo_mapping: {} records read through the library's RingMemory impl, {} through \
         RawRingMemory, {} bytes ({} trips round a {size}-byte ring), all intact",
        report.through_impl,
        report.through_raw,
        report.bytes,
        report.bytes / size,
    );
    Ok(())
}
