//! Sleeping until the kernel signals a ring's fd.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::io::Errno;

use super::flush::{Flusher, WaitOutcome, WakeState};
use crate::Error;

/// epoll data of the watched ring fd.
const RING_TOKEN: u64 = 0;
/// epoll data of the flush/close eventfd.
const WAKE_TOKEN: u64 = 1;

/// Counters of a ring's waits, for tests, benchmarks and monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitStats {
    /// Calls to `epoll_wait` that slept (or could have).
    pub sleeps: u64,
    /// `epoll_wait` returns that reported an event (a kernel wakeup).
    pub wakeups: u64,
    /// Wakeups after which nothing was readable (a BUSY head, or data already read).
    pub spurious_wakeups: u64,
    /// Sleeps cut short by the periodic drain interval, after which the ring was checked
    /// (this is how records committed with `BPF_RB_NO_WAKEUP` are found).
    pub periodic_checks: u64,
}

/// How long the next sleep may last: the time left until `deadline`, capped by the periodic
/// drain `interval`. `None` when the deadline has passed; otherwise the sleep (`None`: no
/// limit) and whether the interval cut it short.
pub(crate) fn next_sleep(
    deadline: Option<Instant>,
    interval: Option<Duration>,
) -> Option<(Option<Duration>, bool)> {
    let left = match deadline {
        None => None,
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            Some(left)
        }
    };
    Some(match (left, interval) {
        (Some(left), Some(interval)) if interval < left => (Some(interval), true),
        (None, Some(interval)) => (Some(interval), true),
        (left, _) => (left, false),
    })
}

/// `epoll_wait` with an optional timeout; `EINTR` counts as "no event".
pub(crate) fn epoll_wait(
    epoll: &OwnedFd,
    events: &mut [epoll::Event],
    timeout: Option<Duration>,
) -> Result<usize, Error> {
    let timespec = timeout.map(|left| {
        rustix::time::Timespec::try_from(left).unwrap_or(rustix::time::Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        })
    });
    match epoll::wait(epoll, events, timespec.as_ref()) {
        Ok(n) => Ok(n),
        Err(Errno::INTR) => Ok(0),
        Err(errno) => Err(errno.into()),
    }
}

/// A deadline `timeout` from now; `None` for no limit (or one too far to represent).
pub(crate) fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|timeout| Instant::now().checked_add(timeout))
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
    /// Flush/close requests, once a [`Flusher`] was handed out.
    wake: Option<Arc<WakeState>>,
    /// Longest sleep before the ring is checked again without a wakeup.
    pub(crate) periodic_drain: Option<Duration>,
}

impl Waiter {
    /// Watches `fd` for `interest` (`IN` for RINGBUF, `OUT` for USER_RINGBUF), edge-triggered.
    pub(crate) fn new(fd: BorrowedFd<'_>, interest: epoll::EventFlags) -> Result<Self, Error> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(
            &epoll,
            fd,
            epoll::EventData::new_u64(RING_TOKEN),
            interest | epoll::EventFlags::ET,
        )?;
        Ok(Self {
            epoll,
            stats: WaitStats::default(),
            wake: None,
            periodic_drain: None,
        })
    }

    /// A handle that wakes this waiter from another thread (created on first use).
    pub(crate) fn flusher(&mut self) -> Result<Flusher, Error> {
        WakeState::flusher_for(self.epoll.as_fd(), &mut self.wake, WAKE_TOKEN)
    }

    /// Waits until `ready()` holds, a flush or close was requested (and `ready()` does not
    /// hold), or `deadline` passes (`None`: no limit). `ready` must make the lost-wakeup check
    /// itself (publish, full fence, look again); it is called before every sleep and after
    /// every wakeup, including the periodic ones.
    pub(crate) fn wait_outcome(
        &mut self,
        deadline: Option<Instant>,
        mut ready: impl FnMut() -> bool,
    ) -> Result<WaitOutcome, Error> {
        let mut events = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        }; 2];
        let mut woken = false;
        loop {
            if ready() {
                return Ok(WaitOutcome::Ready);
            }
            if woken {
                self.stats.spurious_wakeups += 1;
            }
            if let Some(outcome) = self.wake.as_ref().and_then(|wake| wake.take()) {
                return Ok(outcome);
            }
            let Some((sleep, periodic)) = next_sleep(deadline, self.periodic_drain) else {
                return Ok(WaitOutcome::TimedOut);
            };
            self.stats.sleeps += 1;
            let n = epoll_wait(&self.epoll, &mut events, sleep)?;
            woken = false;
            for event in &events[..n] {
                if event.data.u64() == WAKE_TOKEN {
                    if let Some(wake) = &self.wake {
                        wake.clear_signal()?;
                    }
                } else {
                    self.stats.wakeups += 1;
                    woken = true;
                }
            }
            if n == 0 && periodic {
                self.stats.periodic_checks += 1;
            }
        }
    }

    /// Waits until `ready()` holds or `timeout` passes (`None`: no limit); returns whether
    /// `ready()` held (a flush or close also ends the wait, with `false`). See
    /// [`Waiter::wait_outcome`].
    pub(crate) fn wait_until(
        &mut self,
        timeout: Option<Duration>,
        ready: impl FnMut() -> bool,
    ) -> Result<bool, Error> {
        let outcome = self.wait_outcome(deadline_after(timeout), ready)?;
        Ok(outcome == WaitOutcome::Ready)
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
                Ok(_) if events[0].data.u64() == WAKE_TOKEN => {
                    // A flush or close, not the kernel.
                    if let Some(wake) = &self.wake {
                        wake.clear_signal()?;
                    }
                    return Ok(false);
                }
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
