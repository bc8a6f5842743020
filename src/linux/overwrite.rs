use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use bpf_ringbuf_sys::{self as sys, MapFlags, MapType};
use rustix::event::epoll;

use super::claim::{MapClaim, Role};
use super::mapping::{map_info_of_type, MapKind, RingMapping};
use super::wait::{WaitStats, Waiter};
use crate::overwrite::OverwriteConsumer;
use crate::Error;

/// A `BPF_MAP_TYPE_RINGBUF` created with `BPF_F_RB_OVERWRITE` (Linux 6.19+), opened for
/// reading: a flight recorder that keeps the newest records.
///
/// It dereferences to an [`OverwriteConsumer`]: records are copied out and validated against
/// `overwrite_pos` ([`read_into`](OverwriteConsumer::read_into),
/// [`snapshot`](OverwriteConsumer::snapshot)), never lent zero-copy, because the kernel may
/// overwrite a record while it is being read. Records lost to overwriting are counted in
/// [`stats`](OverwriteConsumer::stats).
///
/// Opening a map without the flag gives [`Error::OverwriteMode`]; so does opening an
/// overwrite-mode map with [`RingBuf`](crate::RingBuf).
///
/// # Examples
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bpf_ringbuf::OverwriteRingBuf;
///
/// let mut recorder = OverwriteRingBuf::from_pinned("/sys/fs/bpf/flight_recorder")?;
/// // Something went wrong: dump the newest events, oldest first.
/// for event in recorder.snapshot_vec()? {
///     println!("{event:02x?}");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct OverwriteRingBuf {
    // Field order: unmap before closing the map fd.
    consumer: OverwriteConsumer<RingMapping>,
    waiter: Waiter,
    /// This process's only reader of the map (released after the mapping is gone).
    claim: MapClaim,
    map: OwnedFd,
}

impl OverwriteRingBuf {
    /// Opens the overwrite-mode RINGBUF map behind `map`, duplicating the fd.
    ///
    /// # Errors
    ///
    /// [`Error::WrongMapType`] if `map` is not a RINGBUF, [`Error::OverwriteMode`] if it was
    /// not created with `BPF_F_RB_OVERWRITE`; [`Error::Bpf`], [`Error::Map`] or [`Error::Io`]
    /// if the kernel refuses an operation.
    pub fn new(map: impl AsFd) -> Result<Self, Error> {
        let fd = rustix::io::fcntl_dupfd_cloexec(map.as_fd(), 0)?;
        Self::from_owned_fd(fd)
    }

    /// Opens the overwrite-mode RINGBUF map behind `map`, taking ownership of the fd.
    ///
    /// # Errors
    ///
    /// As for [`OverwriteRingBuf::new`].
    pub fn from_owned_fd(map: OwnedFd) -> Result<Self, Error> {
        let info = map_info_of_type(map.as_fd(), MapType::RINGBUF)?;
        if !info.flags().contains(MapFlags::RB_OVERWRITE) {
            return Err(Error::OverwriteMode {
                map_overwrites: false,
            });
        }
        let claim = MapClaim::new(info.id, Role::Reader)?;
        let mapping = RingMapping::new(
            map.as_fd(),
            info.max_entries as usize,
            MapKind::KernelProducer,
        )?;
        let consumer = OverwriteConsumer::new(mapping).map_err(Error::Geometry)?;
        let waiter = Waiter::new(map.as_fd(), epoll::EventFlags::IN)?;
        Ok(Self {
            consumer,
            waiter,
            claim,
            map,
        })
    }

    /// Opens an overwrite-mode RINGBUF map pinned in a BPF filesystem.
    ///
    /// # Errors
    ///
    /// As for [`OverwriteRingBuf::new`].
    pub fn from_pinned(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::from_owned_fd(sys::obj_get(path.as_ref())?)
    }

    /// Opens an overwrite-mode RINGBUF map by its id.
    ///
    /// # Errors
    ///
    /// As for [`OverwriteRingBuf::new`].
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

    /// Size of the data area in bytes.
    pub fn size(&self) -> usize {
        self.consumer.memory().geometry().size()
    }

    /// Waits until a record can be read, or `timeout` passes (`None`: no limit); returns
    /// whether one can. Before each sleep it runs
    /// [`OverwriteConsumer::check_before_sleep`], so no wakeup is lost, even after the reader
    /// was lapped.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if `epoll_wait` fails.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<bool, Error> {
        let consumer = &mut self.consumer;
        self.waiter
            .wait_until(timeout, || consumer.check_before_sleep())
    }

    /// Counters of this ring's waits.
    pub fn wait_stats(&self) -> WaitStats {
        self.waiter.stats
    }
}

impl Deref for OverwriteRingBuf {
    type Target = OverwriteConsumer<RingMapping>;

    fn deref(&self) -> &Self::Target {
        &self.consumer
    }
}

impl DerefMut for OverwriteRingBuf {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.consumer
    }
}

impl AsFd for OverwriteRingBuf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.map.as_fd()
    }
}
