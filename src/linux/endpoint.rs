//! What the three front-end types share: one opener (an fd, a pinned path or a map id, checked
//! and mapped by [`RingMapping::open`](super::mapping::RingMapping::open)), the accessors of
//! the map behind them, and the waiting controls of the two readers.
//!
//! The methods are generated per type so that each carries its own documentation; the logic
//! lives once, in [`open_endpoint`] and the types' `from_mapping`.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use bpf_ringbuf_sys::{self as sys, BpfError};
use rustix::io::Errno;

use super::error::{Error, MapSource, OpenError};
use super::mapping::{RingKind, RingMapping};
use super::wait::Sleeper;

/// A front-end type made from a checked, claimed mapping.
pub(crate) trait Endpoint: Sized {
    /// The kind of ring and endpoint.
    const KIND: RingKind;

    /// Builds the endpoint over `mapping` (and registers its fd for waiting).
    fn from_mapping(mapping: RingMapping) -> Result<Self, OpenError>;
}

/// The epoll set of a new endpoint, watching its map for the endpoint's kind of readiness
/// (registered before the endpoint's first look at the ring, so that any change after that
/// look leaves an event for the next sleep).
pub(crate) fn sleeper_for(mapping: &RingMapping, kind: RingKind) -> Result<Sleeper, OpenError> {
    let sleeper = Sleeper::new().map_err(|errno| OpenError::Io(errno.into()))?;
    sleeper
        .watch(mapping.map_fd(), mapping.map_id(), kind.interest())
        .map_err(|errno| OpenError::Io(errno.into()))?;
    Ok(sleeper)
}

/// How a failed bpf(2) open reads to the user: `ENOENT` is "no such map".
fn bpf_open_error(error: BpfError) -> OpenError {
    if error.errno() == Errno::NOENT {
        OpenError::NotFound
    } else {
        OpenError::Bpf(error)
    }
}

/// Where a map comes from, for [`open_endpoint`].
pub(crate) enum Opening<'a> {
    Borrowed(BorrowedFd<'a>),
    Owned(OwnedFd),
    Pinned(&'a Path),
    Id(u32),
}

/// The one way a front-end type is opened.
pub(crate) fn open_endpoint<E: Endpoint>(opening: Opening<'_>) -> Result<E, Error> {
    let (source, fd) = match opening {
        Opening::Borrowed(fd) => {
            let source = MapSource::Fd(fd.as_raw_fd());
            let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0);
            (source, dup.map_err(|errno| OpenError::Io(errno.into())))
        }
        Opening::Owned(fd) => (MapSource::Fd(fd.as_raw_fd()), Ok(fd)),
        Opening::Pinned(path) => (
            MapSource::Pinned(path.to_path_buf()),
            sys::obj_get(path).map_err(bpf_open_error),
        ),
        Opening::Id(id) => (
            MapSource::Id(id),
            sys::map_get_fd_by_id(id).map_err(bpf_open_error),
        ),
    };
    fd.and_then(|fd| RingMapping::open(fd, E::KIND))
        .and_then(E::from_mapping)
        .map_err(|reason| Error::Open {
            map: source,
            reason,
        })
}

/// The openers and map accessors of a front-end type over a [`RingMapping`] reached as
/// `$self.$($mapping)+`.
macro_rules! endpoint_methods {
    ($ty:ident, $map_type:literal, |$this:ident| $mapping:expr) => {
        impl $ty {
            #[doc = concat!("Opens the ", $map_type, " map behind `map`, duplicating the fd.")]
            ///
            /// Any `AsFd` works: a libbpf-rs `Map`, an aya `MapData`'s fd, an `OwnedFd`
            /// (the README shows both libraries).
            ///
            /// # Errors
            ///
            /// [`Error::Open`](crate::Error::Open) naming the fd, with the reason
            /// ([`OpenError`](crate::OpenError)): not a BPF map, the wrong map type or mode,
            /// the ring already open in this process, or a refused mapping.
            pub fn new(map: impl std::os::fd::AsFd) -> Result<Self, crate::Error> {
                super::endpoint::open_endpoint(super::endpoint::Opening::Borrowed(map.as_fd()))
            }

            #[doc = concat!("Opens the ", $map_type, " map behind `map`, taking ownership of the fd.")]
            ///
            /// # Errors
            ///
            #[doc = concat!("As for [`", stringify!($ty), "::new`].")]
            pub fn from_owned_fd(map: std::os::fd::OwnedFd) -> Result<Self, crate::Error> {
                super::endpoint::open_endpoint(super::endpoint::Opening::Owned(map))
            }

            #[doc = concat!("Opens the ", $map_type, " map pinned at `path` in a BPF file system.")]
            ///
            /// # Errors
            ///
            #[doc = concat!("As for [`", stringify!($ty), "::new`], naming the path; ")]
            /// [`OpenError::NotFound`](crate::OpenError::NotFound) if nothing is pinned there.
            pub fn from_pinned(path: impl AsRef<std::path::Path>) -> Result<Self, crate::Error> {
                super::endpoint::open_endpoint(super::endpoint::Opening::Pinned(path.as_ref()))
            }

            #[doc = concat!("Opens the ", $map_type, " map with this id.")]
            ///
            /// # Errors
            ///
            #[doc = concat!("As for [`", stringify!($ty), "::new`], naming the id; ")]
            /// [`OpenError::NotFound`](crate::OpenError::NotFound) if no map has it.
            pub fn from_map_id(id: u32) -> Result<Self, crate::Error> {
                super::endpoint::open_endpoint(super::endpoint::Opening::Id(id))
            }

            /// The map's fd.
            pub fn map_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                let $this = self;
                $mapping.map_fd()
            }

            /// The map's id. This process has the ring open through this value only: opening
            /// it a second time while this one lives fails with
            /// [`OpenError::InUse`](crate::OpenError::InUse).
            pub fn map_id(&self) -> u32 {
                let $this = self;
                $mapping.map_id()
            }

            /// Size of the data area in bytes (the map's `max_entries`).
            pub fn size(&self) -> usize {
                let $this = self;
                $mapping.geometry().size()
            }
        }

        impl std::os::fd::AsFd for $ty {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                self.map_fd()
            }
        }
    };
}

/// The waiting controls of a reader whose [`Sleeper`](super::wait::Sleeper) is
/// `$self.sleeper` and whose readiness check is `$check` (publish, fence, look again).
macro_rules! reader_waiting_methods {
    ($ty:ident, |$this:ident| $ready:expr) => {
        impl $ty {
            /// Waits until a record can be read, `timeout` passes (`None`: no limit), or a
            /// [`Flusher`](crate::Flusher) flushes or closes this reader; see
            /// [`WaitOutcome`](crate::WaitOutcome).
            ///
            /// Before each sleep it runs `check_before_sleep`, so a record committed at any
            /// moment is either seen or signalled, a waiting record is always reported before
            /// a flush or close, and a BUSY head record does not make it spin
            /// ([`guide::waiting`](crate::guide::waiting)). Records committed with
            /// `BPF_RB_NO_WAKEUP` are found when a wait ends or at the
            #[doc = concat!("[periodic drain](", stringify!($ty), "::set_periodic_drain) interval.")]
            /// The timeout is a deadline computed once: signals (`EINTR`) do not extend it.
            ///
            /// # Errors
            ///
            /// [`Error::Io`](crate::Error::Io) if `epoll_wait` fails.
            pub fn wait(
                &mut self,
                timeout: Option<std::time::Duration>,
            ) -> Result<crate::WaitOutcome, crate::Error> {
                self.wait_deadline(super::wait::deadline_after(timeout))
            }

            #[doc = concat!("As [`wait`](", stringify!($ty), "::wait), with a deadline instead of a timeout")]
            /// (`None`: no limit). A deadline in the past still checks the ring once.
            ///
            /// # Errors
            ///
            /// [`Error::Io`](crate::Error::Io) if `epoll_wait` fails.
            pub fn wait_deadline(
                &mut self,
                deadline: Option<std::time::Instant>,
            ) -> Result<crate::WaitOutcome, crate::Error> {
                let $this = &mut self.consumer;
                self.sleeper.wait(deadline, || $ready)
            }

            /// A handle that wakes this reader's waits from another thread: see
            /// [`Flusher`](crate::Flusher). Every call returns a handle to the same eventfd,
            /// created on the first call.
            ///
            /// # Errors
            ///
            /// [`Error::Io`](crate::Error::Io) if the eventfd cannot be created or added to
            /// the epoll set.
            pub fn flusher(&mut self) -> Result<crate::Flusher, crate::Error> {
                self.sleeper.flusher()
            }

            /// Makes every wait check the ring at least every `interval` even when the kernel
            /// sends no wakeup (`None`, the default: only wakeups and the timeout end a
            /// sleep). Needed when producers commit with `BPF_RB_NO_WAKEUP`; each check is a
            /// fence and a few loads, counted in
            /// [`WaitStats::periodic_checks`](crate::WaitStats::periodic_checks).
            pub fn set_periodic_drain(&mut self, interval: Option<std::time::Duration>) {
                self.sleeper.periodic_drain = interval;
            }

            /// Counters of this reader's waits.
            pub fn wait_stats(&self) -> crate::WaitStats {
                self.sleeper.stats
            }

            /// The edge-triggered epoll fd this reader sleeps on; it becomes readable when the
            /// kernel signals the ring, so it can be nested in another event loop (run
            /// `check_before_sleep` before every sleep there too).
            pub fn epoll_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                self.sleeper.epoll_fd()
            }
        }
    };
}

pub(crate) use {endpoint_methods, reader_waiting_methods};
