use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::string::String;

use bpf_ringbuf_sys::{BpfError, MapType};

use super::probe::Feature;
use crate::error::{GeometryError, ReadError};
use crate::producer::ReserveError;

/// Why the front end failed: opening a map, a read, a reservation or a wait.
///
/// Every variant says what it was about, so a program can match on the kind without parsing
/// text: an open failure names the map as the caller named it ([`MapSource`]) and why
/// ([`OpenError`]); a read failure the map's id.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Opening a map failed.
    Open {
        /// The map, as the caller named it.
        map: MapSource,
        /// What went wrong.
        reason: OpenError,
    },
    /// A ring turned out corrupt, or moved by another writer, while reading or waiting.
    Read {
        /// The id of the map read, where the front end knows it (`None` for a
        /// [`ReadError`] converted with `?`).
        map_id: Option<u32>,
        /// What is wrong with it.
        error: ReadError,
    },
    /// A USER_RINGBUF reservation was refused (for a reservation with a timeout:
    /// [`ReserveError::NoSpace`] when the time ran out).
    Reserve(ReserveError),
    /// A bpf(2) command outside opening a ring failed (probing, creating a map, reading a
    /// drop counter); the error names the command and carries the errno.
    Bpf(BpfError),
    /// Another system call failed (epoll, eventfd).
    Io(io::Error),
    /// The running kernel lacks a feature: a ring map type or a creation flag (see
    /// [`probe`](crate::probe)).
    Unsupported {
        /// The missing feature.
        feature: Feature,
        /// The running kernel's release (`uname -r`).
        kernel_release: String,
    },
}

/// How the caller named the map an [`Error::Open`] is about.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MapSource {
    /// A path in a BPF file system (`from_pinned`).
    Pinned(PathBuf),
    /// A map id (`from_map_id`).
    Id(u32),
    /// A file descriptor (`new`, `from_owned_fd`): its number in this process when it was
    /// passed.
    Fd(RawFd),
}

impl fmt::Display for MapSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pinned(path) => write!(f, "pinned map {}", path.display()),
            Self::Id(id) => write!(f, "map id {id}"),
            Self::Fd(fd) => write!(f, "map fd {fd}"),
        }
    }
}

/// Why a map could not be opened ([`Error::Open`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// Nothing is pinned at the path, or no map has the id (`ENOENT`).
    NotFound,
    /// The fd is not a BPF map: a BPF program, link or BTF object, or no BPF object at all.
    NotAMap {
        /// What it is, as the kernel names it (`anon_inode:bpf-prog`, `anon_inode:bpf-link`,
        /// a file's path, ...), or `"not a BPF object"` when `/proc` cannot tell.
        object: String,
    },
    /// The map is not of the type this reader or producer handles.
    WrongMapType {
        /// The type needed.
        expected: MapType,
        /// The map's actual type.
        found: MapType,
    },
    /// The map's overwrite mode (`BPF_F_RB_OVERWRITE`) is not the one this reader handles:
    /// overwrite-mode rings are read with [`OverwriteRingBuf`](crate::OverwriteRingBuf)
    /// (copy, then validate), others with [`RingBuf`](crate::RingBuf) (zero-copy, which
    /// would lend records the kernel may overwrite).
    OverwriteMode {
        /// Whether the map was created with `BPF_F_RB_OVERWRITE`.
        map_overwrites: bool,
    },
    /// This process already has the ring's one reader (a [`RingBuf`](crate::RingBuf) or
    /// [`OverwriteRingBuf`](crate::OverwriteRingBuf)) or its one producer (a
    /// [`UserRingBuf`](crate::UserRingBuf)) open: a second would publish `consumer_pos` past
    /// records the first still lends, or hand out overlapping reservations.
    InUse {
        /// The map's id.
        map_id: u32,
    },
    /// The map's size is not one the kernel could have created for a ring.
    Geometry(GeometryError),
    /// A bpf(2) command failed (`EPERM`, `EACCES`, ...).
    Bpf(BpfError),
    /// Mapping the ring's pages failed.
    Map {
        /// Which part of the ring was being mapped.
        part: &'static str,
        /// The error `mmap` returned.
        source: io::Error,
    },
    /// Another system call failed (duplicating the fd, registering it with epoll).
    Io(io::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound => write!(f, "no such map"),
            Self::NotAMap { object } => write!(f, "not a BPF map but {object}"),
            Self::WrongMapType { expected, found } => {
                write!(f, "the map is of type {found}, expected {expected}")
            }
            Self::OverwriteMode {
                map_overwrites: true,
            } => write!(
                f,
                "the map was created with BPF_F_RB_OVERWRITE: the kernel may overwrite records \
                 while they are read, so zero-copy reads are refused; read it with \
                 OverwriteRingBuf"
            ),
            Self::OverwriteMode {
                map_overwrites: false,
            } => write!(
                f,
                "the map was not created with BPF_F_RB_OVERWRITE: read it with RingBuf"
            ),
            Self::InUse { map_id } => write!(
                f,
                "this process already has the ring's one reader or producer open (map id \
                 {map_id})"
            ),
            Self::Geometry(error) => write!(f, "invalid ring map: {error}"),
            Self::Bpf(error) => error.fmt(f),
            Self::Map { part, source } => write!(f, "mmap of the ring's {part} failed: {source}"),
            Self::Io(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Geometry(error) => Some(error),
            Self::Bpf(error) => Some(error),
            Self::Map { source, .. } => Some(source),
            Self::Io(error) => Some(error),
            Self::NotFound
            | Self::NotAMap { .. }
            | Self::WrongMapType { .. }
            | Self::OverwriteMode { .. }
            | Self::InUse { .. } => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open { map, reason } => write!(f, "cannot open {map}: {reason}"),
            Self::Read {
                map_id: Some(id),
                error,
            } => write!(f, "ring (map id {id}): {error}"),
            Self::Read {
                map_id: None,
                error,
            } => error.fmt(f),
            Self::Reserve(error) => error.fmt(f),
            Self::Bpf(error) => error.fmt(f),
            Self::Io(error) => error.fmt(f),
            Self::Unsupported {
                feature,
                kernel_release,
            } => match feature.since() {
                Some(since) => write!(
                    f,
                    "Linux {kernel_release} does not support {feature} (needs Linux {since} or newer)"
                ),
                None => write!(f, "Linux {kernel_release} does not support {feature}"),
            },
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Open { reason, .. } => Some(reason),
            Self::Read { error, .. } => Some(error),
            Self::Reserve(error) => Some(error),
            Self::Bpf(error) => Some(error),
            Self::Io(error) => Some(error),
            Self::Unsupported { .. } => None,
        }
    }
}

impl From<ReadError> for Error {
    /// A read error of a ring the caller holds, so that `record?` works in a function
    /// returning this error; the map id is not known here.
    fn from(error: ReadError) -> Self {
        Self::Read {
            map_id: None,
            error,
        }
    }
}

impl From<ReserveError> for Error {
    fn from(error: ReserveError) -> Self {
        Self::Reserve(error)
    }
}

impl From<BpfError> for Error {
    fn from(error: BpfError) -> Self {
        Self::Bpf(error)
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(errno: rustix::io::Errno) -> Self {
        Self::Io(errno.into())
    }
}

impl From<Error> for io::Error {
    fn from(error: Error) -> Self {
        let error = match error {
            Error::Io(error) => return error,
            other => other,
        };
        let kind = match &error {
            Error::Open {
                reason: OpenError::NotFound,
                ..
            } => io::ErrorKind::NotFound,
            Error::Open {
                reason: OpenError::Bpf(bpf),
                ..
            }
            | Error::Bpf(bpf) => io::Error::from_raw_os_error(bpf.errno().raw_os_error()).kind(),
            Error::Open {
                reason: OpenError::Map { source, .. } | OpenError::Io(source),
                ..
            } => source.kind(),
            Error::Reserve(ReserveError::NoSpace { .. }) => io::ErrorKind::WouldBlock,
            Error::Unsupported { .. } => io::ErrorKind::Unsupported,
            Error::Read { .. } => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, error)
    }
}
