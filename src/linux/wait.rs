//! Sleeping until the kernel signals a ring's fd.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::io::Errno;

use crate::Error;

/// Counters of a ring's waits, for tests, benchmarks and monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitStats {
    /// Calls to `epoll_wait` that slept (or could have).
    pub sleeps: u64,
    /// `epoll_wait` returns that reported an event (a kernel wakeup).
    pub wakeups: u64,
    /// Wakeups after which nothing was readable (a BUSY head, or data already read).
    pub spurious_wakeups: u64,
}

/// An edge-triggered epoll set watching one ring fd.
///
/// Edge-triggered, because a ring fd is level-ready whenever `producer_pos != consumer_pos`,
/// which stays true while the head record is BUSY: a level-triggered wait returns at once, in
/// a loop, until the record is committed (libbpf spins ~10^5 times in 70 ms there). With
/// `EPOLLET`, `epoll_wait` returns once per kernel wakeup; the wakeup for the BUSY record
/// comes when it is committed, because our published `consumer_pos` equals its position.
#[derive(Debug)]
pub(crate) struct Waiter {
    epoll: OwnedFd,
    pub(crate) stats: WaitStats,
}

impl Waiter {
    /// Watches `fd` for `interest` (`IN` for RINGBUF, `OUT` for USER_RINGBUF), edge-triggered.
    pub(crate) fn new(fd: BorrowedFd<'_>, interest: epoll::EventFlags) -> Result<Self, Error> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(
            &epoll,
            fd,
            epoll::EventData::new_u64(0),
            interest | epoll::EventFlags::ET,
        )?;
        Ok(Self {
            epoll,
            stats: WaitStats::default(),
        })
    }

    /// Waits until `ready()` holds or `timeout` passes (`None`: no limit). `ready` must make
    /// the lost-wakeup check itself (publish, full fence, look again) and is called before
    /// every sleep and after every wakeup. Returns whether `ready()` held.
    pub(crate) fn wait_until(
        &mut self,
        timeout: Option<Duration>,
        mut ready: impl FnMut() -> bool,
    ) -> Result<bool, Error> {
        let deadline = timeout.map(|t| Instant::now().checked_add(t));
        let mut events = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        }; 1];
        let mut woken = false;
        loop {
            if ready() {
                return Ok(true);
            }
            if woken {
                self.stats.spurious_wakeups += 1;
            }
            let remaining = match deadline {
                None | Some(None) => None,
                Some(Some(deadline)) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    Some(left)
                }
            };
            let timespec = remaining.map(|left| {
                rustix::time::Timespec::try_from(left).unwrap_or(rustix::time::Timespec {
                    tv_sec: i64::MAX,
                    tv_nsec: 0,
                })
            });
            self.stats.sleeps += 1;
            match epoll::wait(&self.epoll, &mut events[..], timespec.as_ref()) {
                Ok(0) => woken = false,
                Ok(_) => {
                    self.stats.wakeups += 1;
                    woken = true;
                }
                Err(Errno::INTR) => woken = false,
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    /// Whether the kernel signalled the fd within `timeout`, without looking at the ring.
    pub(crate) fn wait_for_signal(&mut self, timeout: Duration) -> Result<bool, Error> {
        let mut events = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        }; 1];
        let timespec = rustix::time::Timespec::try_from(timeout).ok();
        self.stats.sleeps += 1;
        loop {
            match epoll::wait(&self.epoll, &mut events[..], timespec.as_ref()) {
                Ok(0) => return Ok(false),
                Ok(_) => {
                    self.stats.wakeups += 1;
                    return Ok(true);
                }
                Err(Errno::INTR) => continue,
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    pub(crate) fn epoll_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}
