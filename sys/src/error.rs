//! The error type of the `bpf(2)` operations.

use core::fmt;
use std::io;

use rustix::io::Errno;

use crate::Command;

/// A failed `bpf(2)` operation: which command failed, the `errno` the kernel returned and, for
/// program and BTF loads, the verifier's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BpfError {
    /// The command that failed.
    command: Command,
    /// The error the kernel returned (or the argument check that refused the call).
    errno: Errno,
    /// The verifier or BTF log, trimmed; `None` when there is none or it is empty.
    log: Option<String>,
}

impl BpfError {
    /// An error of `command` with `errno` and no log.
    pub fn new(command: Command, errno: Errno) -> Self {
        BpfError {
            command,
            errno,
            log: None,
        }
    }

    /// Attaches a kernel log (the bytes the kernel wrote into the log buffer). Trailing NUL
    /// bytes and white space are trimmed; an empty log is stored as `None`.
    pub fn with_log(mut self, log: &[u8]) -> Self {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let text = String::from_utf8_lossy(&log[..end]);
        let text = text.trim_end();
        self.log = if text.is_empty() {
            None
        } else {
            Some(text.to_owned())
        };
        self
    }

    /// The command that failed.
    pub fn command(&self) -> Command {
        self.command
    }

    /// The error number.
    pub fn errno(&self) -> Errno {
        self.errno
    }

    /// The verifier or BTF log written by the kernel for a failed load, if any.
    pub fn log(&self) -> Option<&str> {
        self.log.as_deref()
    }
}

impl fmt::Display for BpfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed: {}",
            self.command,
            io::Error::from_raw_os_error(self.errno.raw_os_error())
        )?;
        if let Some(log) = &self.log {
            write!(f, "\nkernel log:\n{log}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BpfError {}

impl From<BpfError> for io::Error {
    /// Keeps the error kind of the `errno` and the whole [`BpfError`] (command, log) as the
    /// payload: recover it with `io::Error::get_ref` and `downcast_ref::<BpfError>()`.
    fn from(error: BpfError) -> io::Error {
        let kind = io::Error::from_raw_os_error(error.errno.raw_os_error()).kind();
        io::Error::new(kind, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_is_trimmed_and_empty_log_is_none() {
        let e =
            BpfError::new(Command::ProgLoad, Errno::ACCESS).with_log(b"R0 !read_ok\n\0\0garbage");
        assert_eq!(e.log(), Some("R0 !read_ok"));
        let e = BpfError::new(Command::ProgLoad, Errno::ACCESS).with_log(b"\0");
        assert_eq!(e.log(), None);
    }

    #[test]
    fn display_and_io_error() {
        let e = BpfError::new(Command::MapCreate, Errno::INVAL);
        let text = e.to_string();
        assert!(text.starts_with("BPF_MAP_CREATE failed: "), "{text}");
        let io: io::Error = e.clone().into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidInput);
        let inner = io.get_ref().and_then(|e| e.downcast_ref::<BpfError>());
        assert_eq!(inner, Some(&e));
    }
}
