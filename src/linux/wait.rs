//! Sleeping until the kernel signals a ring's fd: the one waiting engine of the front end.
//!
//! A [`Sleeper`] is the epoll set holding the ring fds a reader or producer waits on (one for
//! [`RingBuf`](crate::RingBuf), many for [`Poller`](crate::Poller)) and, once a [`Flusher`] was
//! handed out, its eventfd. Every wait of the front end is the same loop around it: *check*,
//! then *sleep* once, until a signal, the deadline, or the periodic drain interval; repeat.
//! [`guide::waiting`](crate::guide::waiting) explains the rules (the check, edge triggering).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::io::Errno;

use super::flush::{Flusher, WaitOutcome, WakeState};
use crate::Error;

/// epoll data of the flush/close eventfd; ring tokens are map ids (`u32`) and never reach it.
const WAKE_TOKEN: u64 = u64::MAX;

/// Events taken from the epoll set per `epoll_wait`.
const EVENT_BATCH: usize = 64;

/// Counters of a reader's (or poller's) waits, for tests, benchmarks and monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitStats {
    /// Calls to `epoll_wait` that slept (or could have).
    pub sleeps: u64,
    /// Ring signals `epoll_wait` reported (kernel wakeups; one per ring per event).
    pub wakeups: u64,
    /// Wakeups after which nothing was ready (a BUSY head, or data already read).
    pub spurious_wakeups: u64,
    /// Sleeps cut short by the periodic drain interval, after which the rings were checked
    /// (this is how records committed with `BPF_RB_NO_WAKEUP` are found).
    pub periodic_checks: u64,
}

/// How one sleep ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Woke {
    /// A watched fd was signalled (the callback was told which).
    Signalled,
    /// The periodic drain interval passed without a signal: check every ring.
    Periodic,
    /// Nothing to report: a flush or close request, an interrupted `epoll_wait` (`EINTR`), or
    /// the deadline reached while asleep. The caller checks and asks again; the next sleep
    /// computes its timeout from the same deadline.
    Nothing,
    /// The deadline has passed: no sleep was made.
    TimedOut,
}

/// A deadline `timeout` from now; `None` for no limit (or one too far to represent).
pub(crate) fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|timeout| Instant::now().checked_add(timeout))
}

/// Whether `deadline` has passed.
pub(crate) fn passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|deadline| Instant::now() >= deadline)
}

/// An edge-triggered epoll set (a BUSY head keeps a RINGBUF fd level-ready:
/// [`guide::waiting`](crate::guide::waiting)) and what belongs to sleeping on it.
#[derive(Debug)]
pub(crate) struct Sleeper {
    epoll: OwnedFd,
    /// Flush/close requests, once a [`Flusher`] was handed out.
    wake: Option<Arc<WakeState>>,
    /// Longest sleep before the rings are checked again without a wakeup.
    pub(crate) periodic_drain: Option<Duration>,
    pub(crate) stats: WaitStats,
}

impl Sleeper {
    /// An empty epoll set.
    pub(crate) fn new() -> Result<Self, Errno> {
        Ok(Self {
            epoll: epoll::create(epoll::CreateFlags::CLOEXEC)?,
            wake: None,
            periodic_drain: None,
            stats: WaitStats::default(),
        })
    }

    /// Watches `fd` for `interest` (`IN` for a RINGBUF, `OUT` for a USER_RINGBUF),
    /// edge-triggered; its signals are reported with `token`.
    pub(crate) fn watch(
        &self,
        fd: BorrowedFd<'_>,
        token: u32,
        interest: epoll::EventFlags,
    ) -> Result<(), Errno> {
        epoll::add(
            &self.epoll,
            fd,
            epoll::EventData::new_u64(u64::from(token)),
            interest | epoll::EventFlags::ET,
        )
    }

    /// Stops watching `fd`. A registration the kernel already dropped (`ENOENT`: the file
    /// was closed everywhere) counts as removed.
    pub(crate) fn unwatch(&self, fd: BorrowedFd<'_>) -> Result<(), Errno> {
        match epoll::delete(&self.epoll, fd) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(errno) => Err(errno),
        }
    }

    /// A handle that wakes this sleeper from another thread (its eventfd joins the epoll set
    /// on first use; later calls hand out clones).
    pub(crate) fn flusher(&mut self) -> Result<Flusher, Error> {
        if let Some(wake) = &self.wake {
            return Ok(Flusher::new(wake.clone()));
        }
        let wake = WakeState::new()?;
        epoll::add(
            &self.epoll,
            wake.eventfd(),
            epoll::EventData::new_u64(WAKE_TOKEN),
            epoll::EventFlags::IN | epoll::EventFlags::ET,
        )?;
        self.wake = Some(wake.clone());
        Ok(Flusher::new(wake))
    }

    /// Whether a flush or close is waiting to be reported (without taking it).
    pub(crate) fn wake_requested(&self) -> bool {
        self.wake.as_ref().is_some_and(|wake| wake.requested())
    }

    /// The flush or close to report instead of sleeping, if one was requested.
    pub(crate) fn take_wake(&self) -> Option<WaitOutcome> {
        self.wake.as_ref().and_then(|wake| wake.take())
    }

    /// The epoll fd; it becomes readable when a watched fd is signalled.
    pub(crate) fn epoll_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }

    /// Sleeps once: until a watched fd is signalled (`signalled` is called with its token), a
    /// flush or close, `deadline` (`None`: no limit) or the periodic drain interval, whichever
    /// comes first.
    pub(crate) fn sleep(
        &mut self,
        deadline: Option<Instant>,
        signalled: impl FnMut(u32),
    ) -> Result<Woke, Error> {
        let left = match deadline {
            None => None,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(Woke::TimedOut);
                }
                Some(left)
            }
        };
        let (timeout, periodic) = match (left, self.periodic_drain) {
            (Some(left), Some(interval)) if interval < left => (Some(interval), true),
            (None, Some(interval)) => (Some(interval), true),
            (left, _) => (left, false),
        };
        self.stats.sleeps += 1;
        Ok(match self.take_events(timeout, signalled)? {
            0 if periodic => {
                self.stats.periodic_checks += 1;
                Woke::Periodic
            }
            0 => Woke::Nothing,
            _ => Woke::Signalled,
        })
    }

    /// Takes the signals that are already there, without sleeping.
    pub(crate) fn take_signals(&mut self, signalled: impl FnMut(u32)) -> Result<(), Error> {
        self.take_events(Some(Duration::ZERO), signalled).map(drop)
    }

    /// One `epoll_wait`; returns the number of ring signals (`EINTR` counts as none).
    fn take_events(
        &mut self,
        timeout: Option<Duration>,
        mut signalled: impl FnMut(u32),
    ) -> Result<usize, Error> {
        // On the stack: `epoll::Event` is not `Send`, and the front-end types should be.
        let mut events = [epoll::Event {
            flags: epoll::EventFlags::empty(),
            data: epoll::EventData::new_u64(0),
        }; EVENT_BATCH];
        let timespec = timeout.map(|timeout| {
            rustix::time::Timespec::try_from(timeout).unwrap_or(rustix::time::Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            })
        });
        let n = match epoll::wait(&self.epoll, &mut events, timespec.as_ref()) {
            Ok(n) => n,
            Err(Errno::INTR) => 0,
            Err(errno) => return Err(errno.into()),
        };
        let mut rings = 0;
        for event in &events[..n] {
            match event.data.u64() {
                WAKE_TOKEN => {
                    if let Some(wake) = &self.wake {
                        wake.clear_signal()?;
                    }
                }
                token => {
                    self.stats.wakeups += 1;
                    rings += 1;
                    // Tokens are the u32 map ids `watch` registered.
                    signalled(token as u32);
                }
            }
        }
        Ok(rings)
    }

    /// Waits until `ready()` holds, a flush or close was requested (and `ready()` does not
    /// hold), or `deadline` passes (`None`: no limit). `ready` makes the lost-wakeup check
    /// itself (publish, full fence, look again); it is called before every sleep and after
    /// every wakeup, including the periodic ones.
    pub(crate) fn wait(
        &mut self,
        deadline: Option<Instant>,
        mut ready: impl FnMut() -> bool,
    ) -> Result<WaitOutcome, Error> {
        let mut woken = false;
        loop {
            if ready() {
                return Ok(WaitOutcome::Ready);
            }
            if woken {
                self.stats.spurious_wakeups += 1;
            }
            if let Some(outcome) = self.take_wake() {
                return Ok(outcome);
            }
            woken = false;
            if self.sleep(deadline, |_| woken = true)? == Woke::TimedOut {
                return Ok(WaitOutcome::TimedOut);
            }
        }
    }
}
