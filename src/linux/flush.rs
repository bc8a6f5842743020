//! Waking a blocked reader from another thread: [`Flusher`] (flush and close) and what a wait
//! ends with ([`WaitOutcome`]).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bpf_ringbuf_sys::event::{eventfd_drain, eventfd_new, eventfd_signal};

use crate::Error;

/// How a wait ended.
///
/// A wait reports [`Ready`](WaitOutcome::Ready) whenever a committed record is waiting, before
/// anything else: after a flush or a close the reader first drains what is left, and only the
/// wait that finds nothing left to read reports [`Flushed`](WaitOutcome::Flushed) or
/// [`Closed`](WaitOutcome::Closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// A committed record (or a corrupt ring, which the next read reports) is waiting.
    Ready,
    /// The timeout passed, or the deadline was reached, with nothing to read.
    TimedOut,
    /// [`Flusher::flush`] was called, and everything committed before it has been read
    /// (except records held back behind a head record that is still BUSY: they become
    /// readable when it is committed). The flush is used up: the next wait sleeps again.
    Flushed,
    /// [`Flusher::close`] was called, and everything committed has been read. Every later
    /// wait returns `Closed` at once (after reporting any record that still arrives).
    Closed,
}

impl WaitOutcome {
    /// Whether a committed record is waiting ([`WaitOutcome::Ready`]).
    pub fn is_ready(self) -> bool {
        self == Self::Ready
    }
}

/// State shared by a waiter and its [`Flusher`]s.
#[derive(Debug)]
pub(crate) struct WakeState {
    /// Signalled by `flush`/`close`; watched (edge-triggered) by the waiter's epoll set.
    eventfd: OwnedFd,
    /// A flush was requested and not yet reported.
    flush_pending: AtomicBool,
    /// Close was requested.
    closed: AtomicBool,
}

impl WakeState {
    pub(crate) fn new() -> Result<Arc<Self>, Error> {
        Ok(Arc::new(Self {
            eventfd: eventfd_new()?,
            flush_pending: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }))
    }

    pub(crate) fn eventfd(&self) -> BorrowedFd<'_> {
        self.eventfd.as_fd()
    }

    /// Resets the eventfd counter after it woke the waiter (the flags carry the meaning).
    pub(crate) fn clear_signal(&self) -> Result<(), Error> {
        eventfd_drain(self.eventfd.as_fd())?;
        Ok(())
    }

    /// Whether a flush or close is waiting to be reported (without taking it).
    pub(crate) fn requested(&self) -> bool {
        // Acquire: pairs with the Release stores in `Flusher::flush`/`close`.
        self.closed.load(Ordering::Acquire) || self.flush_pending.load(Ordering::Acquire)
    }

    /// What a waiter with nothing to read reports instead of sleeping, if anything.
    pub(crate) fn take(&self) -> Option<WaitOutcome> {
        // Acquire: pairs with the Release store in `Flusher::close`/`flush`; only the flag
        // matters (no data is published through it), but the pairing keeps the order
        // "request, then signal" visible to the waiter.
        if self.closed.load(Ordering::Acquire) {
            return Some(WaitOutcome::Closed);
        }
        if self.flush_pending.swap(false, Ordering::AcqRel) {
            return Some(WaitOutcome::Flushed);
        }
        None
    }
}

/// Wakes a reader blocked in a wait, from any thread: [`flush`](Flusher::flush) makes the
/// reader drain what is there and report [`WaitOutcome::Flushed`] once;
/// [`close`](Flusher::close) makes it drain and report [`WaitOutcome::Closed`] from then on.
///
/// Get one from [`RingBuf::flusher`](crate::RingBuf::flusher),
/// [`OverwriteRingBuf::flusher`](crate::OverwriteRingBuf::flusher) or
/// [`Poller::flusher`](crate::Poller::flusher). It is `Send + Sync + Clone`; clones act on
/// the same reader. Signalling goes through an eventfd in the reader's epoll set, so a reader
/// asleep in `epoll_wait` wakes at once, and a reader about to sleep finds the flag first.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bpf_ringbuf::{RingBuf, WaitOutcome};
/// use std::ops::ControlFlow;
///
/// let mut ring = RingBuf::from_pinned("/sys/fs/bpf/events")?;
/// let flusher = ring.flusher()?;
/// std::thread::spawn(move || {
///     std::thread::sleep(std::time::Duration::from_secs(5));
///     flusher.close().unwrap(); // e.g. on Ctrl-C
/// });
/// loop {
///     match ring.wait(None)? {
///         WaitOutcome::Ready => {
///             ring.consume(usize::MAX, |record| ControlFlow::Continue(()))?;
///         }
///         WaitOutcome::Closed => break, // everything committed has been read
///         WaitOutcome::Flushed | WaitOutcome::TimedOut => {}
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Flusher {
    state: Arc<WakeState>,
}

impl Flusher {
    pub(crate) fn new(state: Arc<WakeState>) -> Self {
        Self { state }
    }

    /// Wakes the reader: its current (or next) wait returns [`WaitOutcome::Ready`] while a
    /// record is waiting, then [`WaitOutcome::Flushed`] once.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the eventfd cannot be written (its counter overflowed).
    pub fn flush(&self) -> Result<(), Error> {
        // Release: pairs with the swap in `WakeState::take`.
        self.state.flush_pending.store(true, Ordering::Release);
        eventfd_signal(self.state.eventfd.as_fd())?;
        Ok(())
    }

    /// Closes the reader: its waits drain what is left, then return
    /// [`WaitOutcome::Closed`], now and from then on.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the eventfd cannot be written (its counter overflowed).
    pub fn close(&self) -> Result<(), Error> {
        // Release: pairs with the load in `WakeState::take`.
        self.state.closed.store(true, Ordering::Release);
        eventfd_signal(self.state.eventfd.as_fd())?;
        Ok(())
    }

    /// Whether [`close`](Flusher::close) was called.
    pub fn is_closed(&self) -> bool {
        self.state.closed.load(Ordering::Acquire)
    }
}
