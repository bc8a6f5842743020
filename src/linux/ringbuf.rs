use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use bpf_ringbuf_sys::{self as sys, MapType};
use rustix::event::epoll;

use super::claim::{MapClaim, Role};
use super::flush::{Flusher, WaitOutcome};
use super::mapping::{map_info_of_type, MapKind, RingMapping};
use super::wait::{deadline_after, WaitStats, Waiter};
use crate::consumer::{Consumer, Readiness};
use crate::Error;

/// A `BPF_MAP_TYPE_RINGBUF` map opened for reading: the kernel→user direction.
///
/// `RingBuf` dereferences to its [`Consumer`], so every read API is available on it:
/// zero-copy [batches](Consumer::batch), [callbacks](Consumer::consume) with a budget, and
/// [copies](Consumer::read_into). [`wait`](RingBuf::wait) sleeps until the kernel signals new
/// records, without losing a wakeup and without spinning on a BUSY head record.
///
/// The ring is opened from any map fd (`AsFd`: a libbpf-rs or aya map works; the fd is
/// duplicated), a pinned path, or a map id. Reading starts at the ring's current
/// `consumer_pos`, so a pinned map reopened mid-stream continues where its last reader
/// stopped.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bpf_ringbuf::RingBuf;
/// use std::ops::ControlFlow;
/// use std::time::Duration;
///
/// let mut ring = RingBuf::from_map_id(42)?;
/// while ring.wait(Some(Duration::from_millis(100)))? {
///     ring.consume(1024, |record| {
///         println!("{record:02x?}");
///         ControlFlow::Continue(())
///     })?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RingBuf {
    // Field order: the consumer (and its mapping) is dropped first, then the waiter, then
    // the map fd — unmapping before closing.
    consumer: Consumer<RingMapping>,
    waiter: Waiter,
    /// This process's only reader of the map (released after the mapping is gone).
    claim: MapClaim,
    map: OwnedFd,
}

impl RingBuf {
    /// Opens the RINGBUF map behind `map`, duplicating the fd.
    ///
    /// # Errors
    ///
    /// [`Error::WrongMapType`] if `map` is not a RINGBUF map; [`Error::Bpf`], [`Error::Map`]
    /// or [`Error::Io`] if the kernel refuses an operation.
    pub fn new(map: impl AsFd) -> Result<Self, Error> {
        let fd = rustix::io::fcntl_dupfd_cloexec(map.as_fd(), 0)?;
        Self::from_owned_fd(fd)
    }

    /// Opens the RINGBUF map behind `map`, taking ownership of the fd.
    ///
    /// # Errors
    ///
    /// As for [`RingBuf::new`].
    pub fn from_owned_fd(map: OwnedFd) -> Result<Self, Error> {
        let info = map_info_of_type(map.as_fd(), MapType::RINGBUF)?;
        if info.flags().contains(sys::MapFlags::RB_OVERWRITE) {
            // Zero-copy batches would lend records the kernel may overwrite while borrowed.
            return Err(Error::OverwriteMode {
                map_overwrites: true,
            });
        }
        let claim = MapClaim::new(info.id, Role::Reader)?;
        let mapping = RingMapping::new(
            map.as_fd(),
            info.max_entries as usize,
            MapKind::KernelProducer,
        )?;
        let consumer = Consumer::new(mapping).map_err(Error::Geometry)?;
        let waiter = Waiter::new(map.as_fd(), epoll::EventFlags::IN)?;
        Ok(Self {
            consumer,
            waiter,
            claim,
            map,
        })
    }

    /// Opens a RINGBUF map pinned in a BPF filesystem.
    ///
    /// # Errors
    ///
    /// As for [`RingBuf::new`]; [`Error::Bpf`] (`BPF_OBJ_GET`) if nothing is pinned there.
    pub fn from_pinned(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::from_owned_fd(sys::obj_get(path.as_ref())?)
    }

    /// Opens a RINGBUF map by its id.
    ///
    /// # Errors
    ///
    /// As for [`RingBuf::new`]; [`Error::Bpf`] (`BPF_MAP_GET_FD_BY_ID`) if no map has this id.
    pub fn from_map_id(id: u32) -> Result<Self, Error> {
        Self::from_owned_fd(sys::map_get_fd_by_id(id)?)
    }

    /// The map's fd.
    pub fn map_fd(&self) -> BorrowedFd<'_> {
        self.map.as_fd()
    }

    /// The map's id. This process reads the map through this value only: opening it a second
    /// time while this one lives fails with [`Error::ReaderExists`].
    pub fn map_id(&self) -> u32 {
        self.claim.map_id
    }

    /// Size of the data area in bytes (the map's `max_entries`).
    pub fn size(&self) -> usize {
        self.consumer.geometry().size()
    }

    /// The `pending_pos` word the kernel keeps in the producer page since Linux 6.10 (0 on
    /// older kernels): reservations before it are all committed.
    pub fn pending_pos(&self) -> usize {
        self.consumer
            .memory()
            .producer_page_word(8)
            .load(crate::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until a committed record can be read, or `timeout` passes (`None`: no limit).
    /// Returns `Ok(true)` when a record (or a corrupt ring, which the next read reports) is
    /// waiting, `Ok(false)` on timeout.
    ///
    /// Before each sleep it runs [`Consumer::check_before_sleep`] (full fence, then look at
    /// the positions and the head record), so a record committed at any moment is either seen
    /// or signalled. It sleeps in an edge-triggered `epoll_wait`, so a BUSY head record does
    /// not make it spin: the kernel signals when that record is committed. Records committed
    /// with `BPF_RB_NO_WAKEUP` are found only when a wait ends, by its timeout or another
    /// wakeup, or at the [periodic drain](RingBuf::set_periodic_drain) interval.
    ///
    /// A [flush or close](RingBuf::flusher) ends the wait with `Ok(false)` when nothing is
    /// readable; [`wait_for`](RingBuf::wait_for) tells these apart.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `epoll_wait` fails.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<bool, Error> {
        let consumer = &self.consumer;
        self.waiter.wait_until(timeout, || {
            consumer.check_before_sleep() == Readiness::Readable
        })
    }

    /// Waits until a committed record can be read, `timeout` passes (`None`: no limit), or a
    /// [`Flusher`] flushes or closes this ring; see [`WaitOutcome`]. Like
    /// [`wait`](RingBuf::wait), it checks the ring before every sleep, so a record waiting is
    /// always reported ([`WaitOutcome::Ready`]) before a flush or close.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `epoll_wait` fails.
    pub fn wait_for(&mut self, timeout: Option<Duration>) -> Result<WaitOutcome, Error> {
        self.wait_deadline(deadline_after(timeout))
    }

    /// As [`wait_for`](RingBuf::wait_for), with a deadline instead of a timeout (`None`: no
    /// limit). A deadline in the past still checks the ring once.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use bpf_ringbuf::{RingBuf, WaitOutcome};
    /// use std::time::{Duration, Instant};
    ///
    /// let mut ring = RingBuf::from_map_id(42)?;
    /// let deadline = Instant::now() + Duration::from_secs(1);
    /// let mut records = 0;
    /// while ring.wait_deadline(Some(deadline))? == WaitOutcome::Ready {
    ///     records += ring.batch().iter().count();
    /// }
    /// println!("{records} records in one second");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `epoll_wait` fails.
    pub fn wait_deadline(&mut self, deadline: Option<Instant>) -> Result<WaitOutcome, Error> {
        let consumer = &self.consumer;
        self.waiter.wait_outcome(deadline, || {
            consumer.check_before_sleep() == Readiness::Readable
        })
    }

    /// A handle that wakes this ring's waits from another thread: see [`Flusher`]. Every call
    /// returns a handle to the same eventfd, created on the first call.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the eventfd cannot be created or added to the epoll set.
    pub fn flusher(&mut self) -> Result<Flusher, Error> {
        self.waiter.flusher()
    }

    /// Makes every wait check the ring at least every `interval` even when the kernel sends no
    /// wakeup (`None`, the default: only wakeups and timeouts end a sleep).
    ///
    /// Needed when producers commit with `BPF_RB_NO_WAKEUP`: such records are in the ring, but
    /// nothing wakes a sleeping reader, so without this they wait until the next record
    /// committed with a wakeup, or the wait's timeout. Each check is a fence and two loads; the
    /// count is in [`WaitStats::periodic_checks`].
    pub fn set_periodic_drain(&mut self, interval: Option<Duration>) {
        self.waiter.periodic_drain = interval;
    }

    /// Waits up to `timeout` for the kernel to signal the map's fd, without looking at the
    /// ring; returns whether a signal came. This observes the kernel's wakeup decisions
    /// (`BPF_RB_NO_WAKEUP`, `BPF_RB_FORCE_WAKEUP`, adaptive); to wait for data, use
    /// [`RingBuf::wait`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `epoll_wait` fails.
    pub fn wait_for_signal(&mut self, timeout: Duration) -> Result<bool, Error> {
        self.waiter.wait_for_signal(timeout)
    }

    /// Counters of this ring's waits.
    pub fn wait_stats(&self) -> WaitStats {
        self.waiter.stats
    }

    /// For waits made elsewhere (the async reader) to count in [`RingBuf::wait_stats`].
    #[cfg(feature = "tokio")]
    pub(crate) fn waiter_stats_mut(&mut self) -> &mut WaitStats {
        &mut self.waiter.stats
    }

    /// The edge-triggered epoll fd this ring sleeps on; it becomes readable when the kernel
    /// signals the ring, so it can be nested in another event loop.
    pub fn epoll_fd(&self) -> BorrowedFd<'_> {
        self.waiter.epoll_fd()
    }
}

impl Deref for RingBuf {
    type Target = Consumer<RingMapping>;

    fn deref(&self) -> &Self::Target {
        &self.consumer
    }
}

impl DerefMut for RingBuf {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.consumer
    }
}

impl AsFd for RingBuf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.map.as_fd()
    }
}
