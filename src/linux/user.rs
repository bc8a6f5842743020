use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use bpf_ringbuf_sys::{self as sys, MapType};
use rustix::event::epoll;

use super::claim::{MapClaim, Role};
use super::mapping::{map_info_of_type, MapKind, RingMapping};
use super::wait::{WaitStats, Waiter};
use crate::producer::{Producer, Reservation, ReserveError};
use crate::Error;

/// A `BPF_MAP_TYPE_USER_RINGBUF` map opened for writing: the user→kernel direction.
///
/// `UserRingBuf` dereferences to its [`Producer`]: [`reserve`](Producer::reserve) a record,
/// fill it through the [`Reservation`] (`&mut [u8]`), then [`submit`](Reservation::submit)
/// or [`discard`](Reservation::discard) it (dropping it discards it). Several reservations
/// may be outstanding; the kernel drains them in reservation order once committed.
/// [`reserve_timeout`](UserRingBuf::reserve_timeout) waits for the kernel to free space.
///
/// Nothing drains the ring by itself: a BPF program calls `bpf_user_ringbuf_drain`, which
/// runs its callback for each committed sample.
///
/// The consumer page is mapped read-only (the kernel refuses a writable mapping), the
/// producer page and the data area read-write. One producer per map and process: opening a
/// second one fails with [`Error::ProducerExists`] while the first lives.
///
/// # Examples
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bpf_ringbuf::UserRingBuf;
/// use std::time::Duration;
///
/// let ring = UserRingBuf::from_pinned("/sys/fs/bpf/commands")?;
/// let mut command = ring.reserve_timeout(16, Some(Duration::from_secs(1)))?;
/// command[..8].copy_from_slice(&42u64.to_ne_bytes());
/// command[8..].fill(0);
/// command.submit();
/// ring.output(b"a whole sample")?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct UserRingBuf {
    // Field order: the producer (and its mapping) is dropped first, then the waiter, the
    // claim and the map fd — unmapping before closing.
    producer: Producer<RingMapping>,
    waiter: RefCell<Waiter>,
    claim: MapClaim,
    map: OwnedFd,
}

impl UserRingBuf {
    /// Opens the USER_RINGBUF map behind `map`, duplicating the fd.
    ///
    /// # Errors
    ///
    /// [`Error::WrongMapType`] if `map` is not a USER_RINGBUF map; [`Error::ProducerExists`]
    /// if this process already has a producer for it; [`Error::Bpf`], [`Error::Map`] or
    /// [`Error::Io`] if the kernel refuses an operation.
    pub fn new(map: impl AsFd) -> Result<Self, Error> {
        let fd = rustix::io::fcntl_dupfd_cloexec(map.as_fd(), 0)?;
        Self::from_owned_fd(fd)
    }

    /// Opens the USER_RINGBUF map behind `map`, taking ownership of the fd.
    ///
    /// # Errors
    ///
    /// As for [`UserRingBuf::new`].
    pub fn from_owned_fd(map: OwnedFd) -> Result<Self, Error> {
        let info = map_info_of_type(map.as_fd(), MapType::USER_RINGBUF)?;
        let claim = MapClaim::new(info.id, Role::Producer)?;
        let mapping = RingMapping::new(
            map.as_fd(),
            info.max_entries as usize,
            MapKind::UserProducer,
        )?;
        // SAFETY: `claim` makes this the only producer of the map in this process for as long
        // as it lives (it is kept with the producer); the reader is the kernel's
        // bpf_user_ringbuf_drain, which moves consumer_pos only past samples it has finished.
        // Another process mapping the same map writable is outside what any mapping can rule
        // out (docs/design.md).
        let producer = unsafe { Producer::new(mapping) }.map_err(Error::Geometry)?;
        let waiter = Waiter::new(map.as_fd(), epoll::EventFlags::OUT)?;
        Ok(Self {
            producer,
            waiter: RefCell::new(waiter),
            claim,
            map,
        })
    }

    /// Opens a USER_RINGBUF map pinned in a BPF filesystem.
    ///
    /// # Errors
    ///
    /// As for [`UserRingBuf::new`]; [`Error::Bpf`] (`BPF_OBJ_GET`) if nothing is pinned there.
    pub fn from_pinned(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::from_owned_fd(sys::obj_get(path.as_ref())?)
    }

    /// Opens a USER_RINGBUF map by its id.
    ///
    /// # Errors
    ///
    /// As for [`UserRingBuf::new`]; [`Error::Bpf`] (`BPF_MAP_GET_FD_BY_ID`) if no map has
    /// this id.
    pub fn from_map_id(id: u32) -> Result<Self, Error> {
        Self::from_owned_fd(sys::map_get_fd_by_id(id)?)
    }

    /// The map's fd.
    pub fn map_fd(&self) -> BorrowedFd<'_> {
        self.map.as_fd()
    }

    /// The map's id.
    pub fn map_id(&self) -> u32 {
        self.claim.map_id
    }

    /// Size of the data area in bytes (the map's `max_entries`).
    pub fn size(&self) -> usize {
        self.producer.geometry().size()
    }

    /// Reserves a record with a `len`-byte payload, waiting up to `timeout` (`None`: no
    /// limit) for the kernel to drain enough space.
    ///
    /// It sleeps in an edge-triggered `epoll_wait` on the map's fd for `EPOLLOUT`, which the
    /// kernel signals after a `bpf_user_ringbuf_drain` that consumed at least one sample
    /// (always with `BPF_RB_FORCE_WAKEUP`, never with `BPF_RB_NO_WAKEUP`). Before each sleep
    /// it runs [`Producer::check_before_sleep`] (full fence, then look at the free space
    /// again), and the fd was registered when the ring was opened, so space freed at any
    /// moment is either seen or signalled.
    ///
    /// # Errors
    ///
    /// [`Error::Reserve`]: [`ReserveError::NoSpace`] when `timeout` passed without enough
    /// space; at once, any other [`ReserveError`] (a sample larger than the ring never
    /// fits). [`Error::Io`] if `epoll_wait` fails.
    pub fn reserve_timeout(
        &self,
        len: usize,
        timeout: Option<Duration>,
    ) -> Result<Reservation<'_, RingMapping>, Error> {
        let producer = &self.producer;
        let mut outcome = None;
        let ready =
            self.waiter
                .borrow_mut()
                .wait_until(timeout, || match producer.reserve(len) {
                    Err(ReserveError::NoSpace { needed, .. }) => {
                        match producer.check_before_sleep() {
                            // Space was freed between the two looks: try again now.
                            Ok(available) if available >= needed => {
                                outcome = Some(producer.reserve(len));
                                !matches!(outcome, Some(Err(ReserveError::NoSpace { .. })))
                            }
                            Ok(_) => false,
                            Err(error) => {
                                outcome = Some(Err(error));
                                true
                            }
                        }
                    }
                    other => {
                        outcome = Some(other);
                        true
                    }
                })?;
        match outcome {
            Some(result) if ready => Ok(result?),
            // Timed out: one last look, as the time may have run out just as space was freed.
            _ => Ok(producer.reserve(len)?),
        }
    }

    /// Counters of this ring's waits.
    pub fn wait_stats(&self) -> WaitStats {
        self.waiter.borrow().stats
    }
}

impl Deref for UserRingBuf {
    type Target = Producer<RingMapping>;

    fn deref(&self) -> &Self::Target {
        &self.producer
    }
}

impl DerefMut for UserRingBuf {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.producer
    }
}

impl AsFd for UserRingBuf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.map.as_fd()
    }
}
