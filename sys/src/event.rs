//! Small `eventfd` helpers for waking a ring reader. Everything else a reader needs from the
//! kernel (epoll, poll) is in [`rustix::event`], re-exported as [`crate::rustix`].

use std::os::fd::{AsFd, OwnedFd};

use rustix::event::{eventfd, EventfdFlags};
use rustix::io::{read, write, Errno};

/// A new non-blocking, close-on-exec eventfd with counter 0.
///
/// # Errors
///
/// `EMFILE`/`ENFILE` when out of descriptors.
pub fn eventfd_new() -> Result<OwnedFd, Errno> {
    eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
}

/// Adds 1 to the eventfd counter, making it readable (waking pollers).
///
/// # Errors
///
/// `EAGAIN` if the counter would overflow (after 2^64 - 2 unconsumed signals).
pub fn eventfd_signal(fd: impl AsFd) -> Result<(), Errno> {
    write(fd, &1u64.to_ne_bytes()).map(|_| ())
}

/// Reads and resets the eventfd counter; returns 0 when it was already zero (non-blocking fd).
///
/// # Errors
///
/// The error of `read(2)` other than `EAGAIN`.
pub fn eventfd_drain(fd: impl AsFd) -> Result<u64, Errno> {
    let mut buf = [0u8; 8];
    match read(fd, &mut buf) {
        Ok(8) => Ok(u64::from_ne_bytes(buf)),
        Ok(_) => Err(Errno::INVAL),
        Err(Errno::AGAIN) => Ok(0),
        Err(errno) => Err(errno),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn signal_and_drain() {
        let fd = eventfd_new().unwrap();
        assert_eq!(eventfd_drain(fd.as_fd()).unwrap(), 0);
        eventfd_signal(fd.as_fd()).unwrap();
        eventfd_signal(fd.as_fd()).unwrap();
        assert_eq!(eventfd_drain(fd.as_fd()).unwrap(), 2);
        assert_eq!(eventfd_drain(fd.as_fd()).unwrap(), 0);
    }
}
