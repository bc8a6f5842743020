//! Shared by the loom models beside it: a ring in loom-tracked memory, the model runner, and
//! the runner for negative controls.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use bpf_ringbuf::memory::{DataWord, PositionWord};
use bpf_ringbuf::model::{KernelProducer, Reservation, Wakeup};
use bpf_ringbuf::sync::atomic::{AtomicU32, AtomicUsize};
use bpf_ringbuf::sync::{with_weakened, ControlPoint};
use bpf_ringbuf::{OverwriteMemory, RingMemory, RingMemoryMut};

/// Preemption bound used when `LOOM_MAX_PREEMPTIONS` is not set.
pub const DEFAULT_PREEMPTIONS: usize = 3;

/// Size of one tracked slot: the protocol's alignment (record starts are 8-byte aligned).
const SLOT: usize = 8;

/// A ring in memory loom can reason about.
///
/// - `consumer_pos`, `producer_pos` and one header word per 8-byte slot are loom atomics, so
///   loom explores every value a load may return under the C++ memory model.
/// - The data bytes are plain memory (`size` bytes: one copy, as the kernel's double mapping
///   makes the second half of the data area the same bytes as the first), and every access to
///   them goes through a loom `UnsafeCell` per 8-byte slot: [`bytes`](RingMemory::bytes)
///   records a read of each slot it covers, [`bytes_mut`](RingMemoryMut::bytes_mut) a write.
///   A read that does not happen-after the last write of the slot, or a write that does not
///   happen-after every earlier read and write, makes loom report a causality violation:
///   that is how a missing acquire/release shows up, whatever values the bytes hold.
/// - `bytes` returns a snapshot of the bytes taken at the call (a record may wrap around
///   the end, and one copy of the data cannot lend a contiguous slice across the end);
///   `bytes_mut` lends a buffer that is written back to the ring at the next call on the
///   ring, from any thread. Loom switches threads only at its own operations, and every
///   writer in the models drops the buffer before its next one, so the write-back happens
///   before anyone else can look. Snapshots are kept until the ring drops.
///
/// Header words live apart from the data bytes: the core reads and writes headers only
/// through [`header`](RingMemory::header), never through the byte slices.
pub struct LoomRing {
    consumer_pos: AtomicUsize,
    producer_pos: AtomicUsize,
    size: usize,
    /// The `len` word of the header at each 8-byte slot.
    headers: Box<[AtomicU32]>,
    /// One access tracker per 8-byte slot of the data area.
    slots: Box<[loom::cell::UnsafeCell<()>]>,
    /// The data area (`size` bytes).
    data: Box<[UnsafeCell<u8>]>,
    buffers: Mutex<Buffers>,
}

/// Buffers lent out, as raw pointers from `Box::into_raw` (a `Box` moved into a vector would
/// assert it is unique while a lent slice still points into it), freed when the ring drops.
#[derive(Default)]
struct Buffers {
    /// Buffers lent by `bytes_mut`, with their start offset, not yet written back.
    pending: Vec<(usize, *mut [u8])>,
    /// Snapshots lent by `bytes` and written-back buffers.
    retired: Vec<*mut [u8]>,
    /// Where each snapshot lent by `bytes` came from: `(snapshot start, offset, len)`.
    lent: Vec<(*const u8, usize, usize)>,
}

impl Drop for Buffers {
    fn drop(&mut self) {
        for (_, buffer) in self.pending.drain(..) {
            self.retired.push(buffer);
        }
        for buffer in self.retired.drain(..) {
            // SAFETY: from `Box::into_raw`, freed once; the ring (and every slice it lent,
            // which borrows it) is gone.
            drop(unsafe { Box::from_raw(buffer) });
        }
    }
}

// SAFETY: loom runs a model's threads one at a time, as coroutines on one OS thread; the data
// bytes are only reached through `bytes`/`bytes_mut`, which check with loom that the protocol
// orders every access, and the buffers behind a mutex.
unsafe impl Sync for LoomRing {}
// SAFETY: as above.
unsafe impl Send for LoomRing {}

impl LoomRing {
    /// An empty ring of `size` bytes (a power of two, at least 16) whose positions start at
    /// `position`. Must be called inside a loom model.
    pub fn starting_at(size: usize, position: usize) -> Self {
        assert!(size.is_power_of_two() && size >= 16);
        assert_eq!(position % 8, 0);
        Self {
            consumer_pos: AtomicUsize::new(position),
            producer_pos: AtomicUsize::new(position),
            size,
            headers: (0..size / SLOT).map(|_| AtomicU32::new(0)).collect(),
            slots: (0..size / SLOT)
                .map(|_| loom::cell::UnsafeCell::new(()))
                .collect(),
            data: (0..size).map(|_| UnsafeCell::new(0)).collect(),
            buffers: Mutex::new(Buffers::default()),
        }
    }

    /// An empty ring of `size` bytes with positions at 0.
    pub fn new(size: usize) -> Self {
        Self::starting_at(size, 0)
    }

    /// The tracked slots `offset..offset + len` covers (modulo the ring, as the double mapping
    /// does).
    fn slots_of(
        &self,
        offset: usize,
        len: usize,
    ) -> impl Iterator<Item = &loom::cell::UnsafeCell<()>> {
        let slot_count = self.size / SLOT;
        let (first, end) = if len == 0 {
            (0, 0)
        } else {
            (offset / SLOT, (offset + len - 1) / SLOT + 1)
        };
        (first..end).map(move |slot| &self.slots[slot % slot_count])
    }

    /// Writes back the buffers `bytes_mut` lent.
    fn write_back(&self, buffers: &mut Buffers) {
        let Buffers {
            pending, retired, ..
        } = buffers;
        for (offset, buffer) in pending.drain(..) {
            // SAFETY: the writer is done with `buffer` (see the type's documentation), which
            // is alive until the ring drops.
            let written = unsafe { &*buffer };
            for (i, byte) in written.iter().enumerate() {
                // SAFETY: no slice of `data` is ever lent out; the caller holds `buffers`' lock.
                unsafe { *self.data[(offset + i) % self.size].get() = *byte };
            }
            retired.push(buffer);
        }
    }

    /// Records that the reader is still reading `record` (a slice `bytes` returned): each of
    /// its slots is read again now, so a write that reused its space without happening-after
    /// this point (the space was handed back too early) is reported by loom.
    pub fn still_reading(&self, record: &[u8]) {
        let buffers = self.buffers();
        let &(_, offset, len) = buffers
            .lent
            .iter()
            .rev()
            .find(|&&(start, _, len)| start == record.as_ptr() && len == record.len())
            .expect("not a slice this ring lent");
        for slot in self.slots_of(offset, len) {
            slot.with(|_| ());
        }
    }

    fn buffers(&self) -> std::sync::MutexGuard<'_, Buffers> {
        let mut buffers = self
            .buffers
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        self.write_back(&mut buffers);
        buffers
    }

    fn snapshot(&self, offset: usize, len: usize) -> Box<[u8]> {
        (0..len)
            // SAFETY: no slice of `data` is ever lent out; writes happen under `buffers`'
            // lock, which the caller holds.
            .map(|i| unsafe { *self.data[(offset + i) % self.size].get() })
            .collect()
    }
}

// SAFETY: `size` is fixed and a power of two; positions are fields; `header` returns one word
// per slot for every 8-aligned offset below `size` (and panics otherwise); `bytes` and
// `bytes_mut` address the same bytes (modulo `size`, as the double mapping does) and the
// slices they return live as long as `self` (retired buffers are only freed on drop). Header
// words are kept apart from the data bytes, which the core never reads a header through.
unsafe impl RingMemory for LoomRing {
    fn consumer_pos(&self) -> &PositionWord {
        drop(self.buffers());
        PositionWord::from_atomic(&self.consumer_pos)
    }

    fn producer_pos(&self) -> &PositionWord {
        drop(self.buffers());
        PositionWord::from_atomic(&self.producer_pos)
    }

    fn size(&self) -> usize {
        self.size
    }

    fn header(&self, offset: usize) -> &DataWord {
        assert!(
            offset < self.size && offset % SLOT == 0,
            "header offset {offset} outside the ring or misaligned"
        );
        drop(self.buffers());
        DataWord::from_atomic(&self.headers[offset / SLOT])
    }

    unsafe fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        assert!(
            offset + len <= 2 * self.size,
            "read {offset}+{len} outside the data area"
        );
        let mut buffers = self.buffers();
        for slot in self.slots_of(offset, len) {
            slot.with(|_| ());
        }
        let snapshot = Box::into_raw(self.snapshot(offset, len));
        buffers.retired.push(snapshot);
        buffers.lent.push((snapshot as *const u8, offset, len));
        // SAFETY: the snapshot is freed only when the ring drops; nobody writes it.
        unsafe { &*snapshot }
    }
}

// SAFETY: as for `RingMemory`; `bytes_mut` lends a buffer that becomes those same bytes.
unsafe impl RingMemoryMut for LoomRing {
    unsafe fn bytes_mut(&self, offset: usize, len: usize) -> &mut [u8] {
        assert!(
            offset + len <= 2 * self.size,
            "write {offset}+{len} outside the data area"
        );
        let mut buffers = self.buffers();
        for slot in self.slots_of(offset, len) {
            slot.with_mut(|_| ());
        }
        let buffer = Box::into_raw(self.snapshot(offset, len));
        buffers.pending.push((offset, buffer));
        // SAFETY: the buffer is freed only when the ring drops; only the caller touches it
        // until the write-back, which happens after it is done.
        unsafe { &mut *buffer }
    }
}

/// A ring in overwrite mode (`BPF_F_RB_OVERWRITE`) in memory loom can reason about.
///
/// Every word is a loom atomic: the three positions and the whole data area, one `AtomicU32`
/// per 4-byte word. The overwrite-mode reader (`OverwriteConsumer`) and the kernel model's
/// `output_atomic` reach the data only word by word ([`header`](RingMemory::header) and
/// [`data_word`](OverwriteMemory::data_word)), so loom sees, for every load, each store it
/// may read under the C++ memory model: a torn copy shows up as words from two records.
/// `header(offset)` is the same word as `data_word(offset)`, and `data_word` indexes
/// `(offset % size) / 4`, as the kernel's double mapping makes byte `size + i` byte `i`.
pub struct LoomOverwriteRing {
    consumer_pos: AtomicUsize,
    producer_pos: AtomicUsize,
    overwrite_pos: AtomicUsize,
    size: usize,
    /// The data area, one word per 4 bytes.
    words: Box<[AtomicU32]>,
}

impl LoomOverwriteRing {
    /// An empty ring of `size` bytes (a power of two, at least 16) whose positions (and
    /// `overwrite_pos`) start at `position`. Must be called inside a loom model.
    pub fn starting_at(size: usize, position: usize) -> Self {
        assert!(size.is_power_of_two() && size >= 16);
        assert_eq!(position % 8, 0);
        Self {
            consumer_pos: AtomicUsize::new(position),
            producer_pos: AtomicUsize::new(position),
            overwrite_pos: AtomicUsize::new(position),
            size,
            words: (0..size / 4).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

// SAFETY: `size` is fixed and a power of two; the positions are fields; `header` returns the
// data word at every 8-aligned offset below `size` (and panics otherwise). `bytes` is never
// reached: the overwrite reader and the overwrite-mode kernel model access the data only
// through `header` and `data_word`, and a model that called it would fail loudly, never
// read wrong bytes.
unsafe impl RingMemory for LoomOverwriteRing {
    fn consumer_pos(&self) -> &PositionWord {
        PositionWord::from_atomic(&self.consumer_pos)
    }

    fn producer_pos(&self) -> &PositionWord {
        PositionWord::from_atomic(&self.producer_pos)
    }

    fn size(&self) -> usize {
        self.size
    }

    fn header(&self, offset: usize) -> &DataWord {
        assert!(
            offset < self.size && offset % 8 == 0,
            "header offset {offset} outside the ring or misaligned"
        );
        DataWord::from_atomic(&self.words[offset / 4])
    }

    unsafe fn bytes(&self, _offset: usize, _len: usize) -> &[u8] {
        // Loom atomics cannot be lent as bytes; the overwrite models never need to.
        unreachable!("the overwrite-mode models read the data only word by word")
    }
}

// SAFETY: as for `RingMemory`; `bytes_mut` is never reached (an overwrite-mode producer
// writes payloads word by word).
unsafe impl RingMemoryMut for LoomOverwriteRing {
    unsafe fn bytes_mut(&self, _offset: usize, _len: usize) -> &mut [u8] {
        unreachable!("the overwrite-mode models write the data only word by word")
    }
}

// SAFETY: `overwrite_pos` is a field; `data_word` returns the word at `offset % size` for
// every 4-aligned `offset < 2 * size` (the double mapping), the same word `header` returns
// for that offset, and panics otherwise.
unsafe impl OverwriteMemory for LoomOverwriteRing {
    fn overwrite_pos(&self) -> &PositionWord {
        PositionWord::from_atomic(&self.overwrite_pos)
    }

    fn data_word(&self, offset: usize) -> &DataWord {
        assert!(
            offset < 2 * self.size && offset % 4 == 0,
            "data word offset {offset} outside the double-mapped data area or misaligned"
        );
        DataWord::from_atomic(&self.words[(offset % self.size) / 4])
    }
}

/// The kernel model used by the models: the crate's `KernelProducer` over a shared ring.
pub type Kernel = KernelProducer<std::sync::Arc<LoomRing>>;

/// `bpf_ringbuf_reserve`, retried (yielding to the other threads) until there is room.
pub fn reserve_blocking(kernel: &Kernel, len: usize) -> Reservation<'_, std::sync::Arc<LoomRing>> {
    loop {
        if let Some(reservation) = kernel.reserve(len) {
            return reservation;
        }
        loom::thread::yield_now();
    }
}

/// Fills a reservation with `payload(tag, len)` and submits (or discards) it; returns whether
/// the kernel decided to wake the consumer.
pub fn fill_and_commit(
    mut reservation: Reservation<'_, std::sync::Arc<LoomRing>>,
    tag: u8,
    discard: bool,
) -> bool {
    let len = reservation.len();
    reservation.write(&payload(tag, len));
    if discard {
        reservation.discard(Wakeup::Adaptive)
    } else {
        reservation.submit(Wakeup::Adaptive)
    }
}

/// The payload the models write for record `tag`: distinct for every tag and byte.
pub fn payload(tag: u8, len: usize) -> Vec<u8> {
    (0..len as u8)
        .map(|i| tag.wrapping_mul(16).wrapping_add(i))
        .collect()
}

std::thread_local! {
    /// A cap on the preemption bound for the models run inside [`with_preemption_cap`].
    static PREEMPTION_CAP: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with the preemption bound of its models capped at `cap` (for a model whose
/// executions grow too fast to explore at the bound the others use; its file says why).
pub fn with_preemption_cap<R>(cap: usize, f: impl FnOnce() -> R) -> R {
    PREEMPTION_CAP.with(|slot| slot.set(Some(cap)));
    let result = catch_unwind(AssertUnwindSafe(f));
    PREEMPTION_CAP.with(|slot| slot.set(None));
    result.unwrap_or_else(|payload| std::panic::resume_unwind(payload))
}

/// Runs `f` under loom, exploring every interleaving up to the preemption bound
/// (`LOOM_MAX_PREEMPTIONS`, or [`DEFAULT_PREEMPTIONS`], capped inside
/// [`with_preemption_cap`]).
pub fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(DEFAULT_PREEMPTIONS);
    }
    if let Some(cap) = PREEMPTION_CAP.with(|cap| cap.get()) {
        builder.preemption_bound = builder.preemption_bound.map(|bound| bound.min(cap));
    }
    let bound = builder.preemption_bound;
    let executions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = executions.clone();
    let start = std::time::Instant::now();
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    eprintln!(
        "loom: {} executions explored in {:.2?} (preemption bound {bound:?})",
        executions.load(std::sync::atomic::Ordering::Relaxed),
        start.elapsed()
    );
}

/// A negative control: runs the model with `point` weakened and requires loom to report a
/// failure whose message contains `expected`. Returns the message.
pub fn expect_failure<F>(point: impl Into<ControlPoint>, expected: &str, f: F) -> String
where
    F: Fn() + Sync + Send + 'static,
{
    let point: ControlPoint = point.into();
    let outcome = catch_unwind(AssertUnwindSafe(|| with_weakened(point, || model(f))));
    let payload = match outcome {
        Ok(()) => panic!(
            "negative control {point:?}: the model passed with the weakening, so it cannot \
             detect this bug"
        ),
        Err(payload) => payload,
    };
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        message.contains(expected),
        "negative control {point:?} failed, but not as expected ({expected:?}): {message}"
    );
    eprintln!(
        "negative control {point:?}: loom reported: {}",
        message.trim().lines().next().unwrap_or("")
    );
    message
}

std::thread_local! {
    /// Coverage counters of the current test: loom runs the model's threads on the test's own
    /// OS thread, so a thread-local counts this model's executions only (tests run in
    /// parallel, and a negative control's executions must not count for the real model).
    static COVERAGE: std::cell::RefCell<std::collections::HashMap<&'static str, usize>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Notes that an execution reached `what` (kept outside loom's view).
pub fn reached(what: &'static str) {
    COVERAGE.with(|coverage| *coverage.borrow_mut().entry(what).or_default() += 1);
}

/// How many executions of this test's models reached `what`.
pub fn times_reached(what: &'static str) -> usize {
    COVERAGE.with(|coverage| coverage.borrow().get(what).copied().unwrap_or(0))
}
