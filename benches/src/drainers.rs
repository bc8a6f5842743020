//! The consumers under test, each draining a kernel-filled ring once.
//!
//! Every one does the same work per record, one of two [`Workload`]s: the header and the
//! first and last byte ([`touch`]), or every byte ([`checksum`], what a parser does). The
//! checksums cross-check that each consumer read every record right, so none gets ahead by
//! not looking at the data.

use std::ffi::{c_int, c_void};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::ptr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use bpf_ringbuf::{ReadError, RingBuf};
use bpf_ringbuf_sys::rustix::mm::ProtFlags;
use bpf_ringbuf_sys::Mapping;

/// The light per-record work: length, first byte, last byte.
#[inline(always)]
pub fn touch(record: &[u8]) -> u64 {
    record.len() as u64
        + u64::from(record.first().copied().unwrap_or(0))
        + u64::from(record.last().copied().unwrap_or(0))
}

/// The heavy per-record work: every byte of the payload, added up eight at a time (the
/// compiler turns it into vector adds), plus the length.
#[inline(always)]
pub fn checksum(record: &[u8]) -> u64 {
    let (words, tail) = record.as_chunks::<8>();
    let mut sum = record.len() as u64;
    for word in words {
        sum = sum.wrapping_add(u64::from_ne_bytes(*word));
    }
    for &byte in tail {
        sum = sum.wrapping_add(u64::from(byte));
    }
    sum
}

/// What a consumer does with each record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// [`touch`]: length, first and last byte (two of a large record's cache lines).
    Touch,
    /// [`checksum`]: every byte.
    ReadAll,
}

impl Workload {
    /// Both, in report order.
    pub const ALL: [Workload; 2] = [Workload::Touch, Workload::ReadAll];

    /// Short name used in tables and the CSV.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Touch => "first+last byte",
            Workload::ReadAll => "every byte",
        }
    }

    /// The CSV's name.
    pub fn key(self) -> &'static str {
        match self {
            Workload::Touch => "touch",
            Workload::ReadAll => "read-all",
        }
    }

    /// The inverse of [`Workload::key`].
    pub fn from_key(key: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.key() == key)
    }

    /// This workload's checksum of one record.
    pub fn of(self, record: &[u8]) -> u64 {
        match self {
            Workload::Touch => touch(record),
            Workload::ReadAll => checksum(record),
        }
    }
}

/// A [`Workload`] as a type, so that every drain loop is compiled for it.
pub trait Work {
    /// Which one.
    const WORKLOAD: Workload;
    /// The workload's checksum of one record.
    fn record(record: &[u8]) -> u64;
}

/// [`Workload::Touch`].
pub struct Touch;
/// [`Workload::ReadAll`].
pub struct ReadAll;

impl Work for Touch {
    const WORKLOAD: Workload = Workload::Touch;
    #[inline(always)]
    fn record(record: &[u8]) -> u64 {
        touch(record)
    }
}

impl Work for ReadAll {
    const WORKLOAD: Workload = Workload::ReadAll;
    #[inline(always)]
    fn record(record: &[u8]) -> u64 {
        checksum(record)
    }
}

/// Which consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    /// `RingBuf::batch()`: zero-copy records, one `consumer_pos` store per batch.
    Batch,
    /// `RingBuf::consume(usize::MAX, ..)`: zero-copy callback.
    Callback,
    /// `RingBuf::read_into(&mut buf)`: one copy per record into a reused buffer.
    Copy,
    /// `RingBuf::batch()` and a `copy_from_slice` of each record into a reused buffer: the
    /// reference for a copying reader (the batch's cost plus `memcpy`'s).
    BatchMemcpy,
    /// libbpf `ring_buffer__consume` (libbpf-sys, vendored libbpf 1.7).
    Libbpf,
    /// aya 0.14 `RingBuf::next`.
    Aya,
    /// A minimal unchecked loop over the mapping: the floor.
    Hand,
    /// The hand loop with the software prefetch ours does (the header eight records ahead).
    HandPrefetch,
}

impl Impl {
    /// All of them, in report order.
    pub const ALL: [Impl; 8] = [
        Impl::Batch,
        Impl::Callback,
        Impl::Copy,
        Impl::BatchMemcpy,
        Impl::Libbpf,
        Impl::Aya,
        Impl::Hand,
        Impl::HandPrefetch,
    ];

    /// The zero-copy readers ours is held against.
    pub const PEERS: [Impl; 3] = [Impl::Libbpf, Impl::Aya, Impl::Hand];

    /// Short name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Impl::Batch => "ours-batch",
            Impl::Callback => "ours-callback",
            Impl::Copy => "ours-copy",
            Impl::BatchMemcpy => "batch+memcpy",
            Impl::Libbpf => "libbpf",
            Impl::Aya => "aya",
            Impl::Hand => "hand-loop",
            Impl::HandPrefetch => "hand+prefetch",
        }
    }

    /// The inverse of [`Impl::name`].
    pub fn from_name(name: &str) -> Option<Impl> {
        Impl::ALL.into_iter().find(|i| i.name() == name)
    }

    /// Its index in [`Impl::ALL`].
    pub fn index(self) -> usize {
        Impl::ALL.iter().position(|&i| i == self).unwrap()
    }

    /// Whether it reads through this crate's `RingBuf`.
    pub fn is_ours(self) -> bool {
        matches!(
            self,
            Impl::Batch | Impl::Callback | Impl::Copy | Impl::BatchMemcpy
        )
    }
}

/// One consumer of each kind over the same map, built once (aya's is rebuilt per drain,
/// untimed: it caches `consumer_pos` when built).
pub struct Drainers {
    ours: RingBuf,
    copy_buf: Vec<u8>,
    libbpf_touch: LibbpfRing,
    libbpf_read_all: LibbpfRing,
    hand: HandRing,
    map: std::os::fd::OwnedFd,
}

/// A result of one drain: records read and their checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Drained {
    /// Records read.
    pub records: u64,
    /// Sum of the workload's checksum over them.
    pub checksum: u64,
}

impl Drainers {
    /// Consumers of the RINGBUF map `map` of `size` bytes.
    pub fn new(map: BorrowedFd<'_>, size: usize) -> Self {
        let map = map.try_clone_to_owned().expect("dup map fd");
        Drainers {
            ours: RingBuf::new(&map).expect("open RingBuf"),
            copy_buf: vec![0; 1 << 16],
            libbpf_touch: LibbpfRing::new::<Touch>(map.as_fd()),
            libbpf_read_all: LibbpfRing::new::<ReadAll>(map.as_fd()),
            hand: HandRing::new(map.as_fd(), size),
            map,
        }
    }

    /// Makes what `which` needs before a drain, outside the timed region; returns it.
    ///
    /// The consumers take turns on one ring, so before one of ours the last drain was
    /// usually another's: our reader, which keeps its own cursor, would report that
    /// `consumer_pos` moved (`ReadError::ConsumerPosMoved`). Another reader legitimately took
    /// over, so ours follows it (`RingBuf::follow`), untimed, as a real program would.
    pub fn prepare(&mut self, which: Impl) -> Option<AyaRing> {
        if which.is_ours() {
            self.ours.follow();
        }
        (which == Impl::Aya).then(|| AyaRing::new(self.map.as_fd()))
    }

    /// Reads one byte of every cache line of the data area through the mapping of `via`
    /// (ours or the hand loop's): the data is then in the cache, and that mapping's pages
    /// in the TLB.
    pub fn warm(&mut self, via: Impl) {
        let mut sum = 0u8;
        match via {
            Impl::Hand => {
                let (data, size) = (self.hand.data().cast_const(), self.hand.mask + 1);
                for offset in (0..size).step_by(64) {
                    // SAFETY: `offset < size` lies inside the mapped data area.
                    sum = sum.wrapping_add(unsafe { data.add(offset).read_volatile() });
                }
            }
            _ => {
                // Every line of every record, through our mapping, without consuming: a
                // forgotten batch publishes nothing. (After another reader's drain, ours
                // follows it first, or the batch would report the moved consumer_pos.)
                self.ours.follow();
                let batch = self.ours.batch();
                for record in &batch {
                    for byte in record.expect("ring is not corrupt").iter().step_by(64) {
                        sum = sum.wrapping_add(*byte);
                    }
                }
                std::mem::forget(batch);
            }
        }
        std::hint::black_box(sum);
    }

    /// Drains everything committed with `which`, doing `workload` per record.
    pub fn drain(&mut self, which: Impl, workload: Workload, aya: Option<&mut AyaRing>) -> Drained {
        match workload {
            Workload::Touch => self.drain_with::<Touch>(which, aya),
            Workload::ReadAll => self.drain_with::<ReadAll>(which, aya),
        }
    }

    #[inline(never)]
    fn drain_with<W: Work>(&mut self, which: Impl, aya: Option<&mut AyaRing>) -> Drained {
        match which {
            Impl::Batch => drain_batch::<W>(&mut self.ours).expect("ring is not corrupt"),
            Impl::Callback => drain_callback::<W>(&mut self.ours),
            Impl::Copy => drain_copy::<W>(&mut self.ours, &mut self.copy_buf),
            Impl::BatchMemcpy => drain_batch_memcpy::<W>(&mut self.ours, &mut self.copy_buf)
                .expect("ring is not corrupt"),
            Impl::Libbpf => match W::WORKLOAD {
                Workload::Touch => self.libbpf_touch.drain(),
                Workload::ReadAll => self.libbpf_read_all.drain(),
            },
            Impl::Aya => aya.expect("prepared aya ring").drain::<W>(),
            Impl::Hand => self.hand.drain::<W, false>(),
            Impl::HandPrefetch => self.hand.drain::<W, true>(),
        }
    }
}

/// Ours, zero-copy batch. Errors go up with `?`, as in a function that returns them.
#[inline(never)]
pub fn drain_batch<W: Work>(ring: &mut RingBuf) -> Result<Drained, ReadError> {
    let mut drained = Drained::default();
    let batch = ring.batch();
    for record in &batch {
        let record = record?;
        drained.records += 1;
        drained.checksum += W::record(record);
    }
    Ok(drained)
}

/// Ours, callback.
#[inline(never)]
pub fn drain_callback<W: Work>(ring: &mut RingBuf) -> Drained {
    let mut checksum = 0;
    let records = ring
        .consume(usize::MAX, |record| {
            checksum += W::record(record);
            std::ops::ControlFlow::Continue(())
        })
        .expect("ring is not corrupt");
    Drained {
        records: records as u64,
        checksum,
    }
}

/// Ours, one copy per record into a reused buffer.
#[inline(never)]
pub fn drain_copy<W: Work>(ring: &mut RingBuf, buf: &mut [u8]) -> Drained {
    let mut drained = Drained::default();
    while let Some(len) = ring.read_into(buf).expect("ring is not corrupt") {
        drained.records += 1;
        drained.checksum += W::record(&buf[..len]);
    }
    drained
}

/// Ours, zero-copy batch, each record copied into a reused buffer before the work.
#[inline(never)]
pub fn drain_batch_memcpy<W: Work>(
    ring: &mut RingBuf,
    buf: &mut [u8],
) -> Result<Drained, ReadError> {
    let mut drained = Drained::default();
    let batch = ring.batch();
    for record in &batch {
        let record = record?;
        let copy = &mut buf[..record.len()];
        copy.copy_from_slice(record);
        drained.records += 1;
        drained.checksum += W::record(copy);
    }
    Ok(drained)
}

/// libbpf's `struct ring_buffer` over the map, with a checksumming callback.
pub struct LibbpfRing {
    ring: *mut libbpf_sys::ring_buffer,
    /// The callback's context, from `Box::into_raw`: reached only through this pointer (by
    /// libbpf's callback during a drain, by us between drains), freed in `Drop`.
    state: *mut Drained,
}

unsafe extern "C" fn libbpf_sample<W: Work>(
    ctx: *mut c_void,
    data: *mut c_void,
    size: libbpf_sys::size_t,
) -> c_int {
    // SAFETY: `ctx` is `LibbpfRing::state`, alive while the ring is and not otherwise in use
    // during a drain; libbpf hands `size` readable bytes at `data` for the call.
    unsafe {
        let state = &mut *ctx.cast::<Drained>();
        let record = std::slice::from_raw_parts(data.cast::<u8>(), size as usize);
        state.records += 1;
        state.checksum += W::record(record);
    }
    0
}

impl LibbpfRing {
    /// `ring_buffer__new(map)`, with a callback doing `W` per record.
    pub fn new<W: Work>(map: BorrowedFd<'_>) -> Self {
        let state = Box::into_raw(Box::new(Drained::default()));
        // SAFETY: a valid map fd; the callback and its context outlive the ring (freed in
        // Drop after it).
        let ring = unsafe {
            libbpf_sys::ring_buffer__new(
                map.as_raw_fd(),
                Some(libbpf_sample::<W>),
                state.cast(),
                ptr::null(),
            )
        };
        assert!(!ring.is_null(), "ring_buffer__new failed");
        LibbpfRing { ring, state }
    }

    /// `ring_buffer__consume`.
    #[inline(never)]
    pub fn drain(&mut self) -> Drained {
        // SAFETY: `state` is live and, outside a libbpf call, used by nobody else;
        // `self.ring` is a live ring_buffer.
        unsafe {
            self.state.write(Drained::default());
            let n = libbpf_sys::ring_buffer__consume(self.ring);
            assert!(n >= 0, "ring_buffer__consume: {n}");
            self.state.read()
        }
    }

    /// `ring_buffer__poll(timeout_ms)`: one `epoll_wait`, then a drain of ready rings.
    pub fn poll(&mut self, timeout_ms: i32) -> Drained {
        // SAFETY: as in `drain`.
        unsafe {
            self.state.write(Drained::default());
            let n = libbpf_sys::ring_buffer__poll(self.ring, timeout_ms);
            assert!(n >= 0, "ring_buffer__poll: {n}");
            self.state.read()
        }
    }
}

impl Drop for LibbpfRing {
    fn drop(&mut self) {
        // SAFETY: created by ring_buffer__new, freed once; then the callback's context, from
        // Box::into_raw, which nothing uses any more.
        unsafe {
            libbpf_sys::ring_buffer__free(self.ring);
            drop(Box::from_raw(self.state));
        }
    }
}

/// aya's `RingBuf` over a fresh `MapData` of the map.
pub struct AyaRing {
    ring: aya::maps::RingBuf<aya::maps::MapData>,
}

impl AyaRing {
    /// `MapData::from_fd(dup(map))` and `RingBuf::try_from`.
    pub fn new(map: BorrowedFd<'_>) -> Self {
        let fd = map.try_clone_to_owned().expect("dup map fd");
        let data = aya::maps::MapData::from_fd(fd).expect("aya MapData::from_fd");
        let ring = aya::maps::RingBuf::try_from(aya::maps::Map::RingBuf(data))
            .expect("aya RingBuf::try_from");
        AyaRing { ring }
    }

    /// `while let Some(item) = ring.next()`.
    #[inline(never)]
    pub fn drain<W: Work>(&mut self) -> Drained {
        let mut drained = Drained::default();
        while let Some(item) = self.ring.next() {
            drained.records += 1;
            drained.checksum += W::record(&item);
        }
        drained
    }
}

/// The floor: a minimal loop with no checks beyond the protocol's own (BUSY, DISCARD),
/// publishing `consumer_pos` once, like the kernel selftests' batch consumer.
pub struct HandRing {
    consumer_page: Mapping,
    producer_and_data: Mapping,
    mask: usize,
    page_size: usize,
}

impl HandRing {
    /// Maps the ring itself.
    pub fn new(map: BorrowedFd<'_>, size: usize) -> Self {
        let page_size = bpf_ringbuf_sys::page_size();
        let consumer_page =
            Mapping::map_shared(map, 0, page_size, ProtFlags::READ | ProtFlags::WRITE)
                .expect("map consumer page");
        let producer_and_data =
            Mapping::map_shared(map, page_size as u64, page_size + 2 * size, ProtFlags::READ)
                .expect("map producer page and data");
        HandRing {
            consumer_page,
            producer_and_data,
            mask: size - 1,
            page_size,
        }
    }

    /// Start of the data area.
    pub fn data(&self) -> *mut u8 {
        // SAFETY: the data area starts one page into the producer mapping.
        unsafe { self.producer_and_data.as_ptr().as_ptr().add(self.page_size) }
    }

    /// Drains everything committed; with `PREFETCH`, prefetching the header eight records
    /// ahead as ours does (`prefetcht0` at the record's header plus eight times its size).
    #[inline(never)]
    pub fn drain<W: Work, const PREFETCH: bool>(&mut self) -> Drained {
        let mut drained = Drained::default();
        // SAFETY: the pages are mapped for as long as `self` lives; positions are the first
        // words of their pages; headers are 8-aligned inside the data area, and a record's
        // bytes lie within the double mapping (trusted: this is the unchecked floor). A
        // prefetch is a hint at an address formed with `wrapping_add`.
        unsafe {
            let consumer_pos = AtomicUsize::from_ptr(self.consumer_page.as_ptr().as_ptr().cast());
            let producer_pos =
                AtomicUsize::from_ptr(self.producer_and_data.as_ptr().as_ptr().cast());
            let data = self.producer_and_data.as_ptr().as_ptr().add(self.page_size);
            let mut cons = consumer_pos.load(Ordering::Acquire);
            let prod = producer_pos.load(Ordering::Acquire);
            while cons != prod {
                let record = data.add(cons & self.mask);
                let len = AtomicU32::from_ptr(record.cast()).load(Ordering::Acquire);
                if len & (1 << 31) != 0 {
                    break;
                }
                let payload = (len & !(3 << 30)) as usize;
                let size = (payload + 8 + 7) & !7;
                if PREFETCH {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        record.wrapping_add(8 * size).cast(),
                    );
                }
                cons += size;
                if len & (1 << 30) == 0 {
                    drained.records += 1;
                    drained.checksum +=
                        W::record(std::slice::from_raw_parts(record.add(8), payload));
                }
            }
            consumer_pos.store(cons, Ordering::Release);
        }
        drained
    }
}
