use std::fmt;
use std::io;
use std::string::String;

use bpf_ringbuf_sys::{BpfError, MapType};

use super::probe::Feature;
use crate::error::{GeometryError, ReadError};
use crate::producer::ReserveError;
use crate::RingId;

/// Why opening, mapping or waiting on a ring failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A bpf(2) command failed (the error names the command and carries the errno).
    Bpf(BpfError),
    /// The map is not of the type this reader handles.
    WrongMapType {
        /// The type this reader needs.
        expected: MapType,
        /// The map's actual type.
        found: MapType,
    },
    /// The map's size is not one the kernel could have created (for a ring map).
    Geometry(GeometryError),
    /// Mapping the ring's pages failed.
    Map {
        /// Which part of the ring was being mapped.
        part: &'static str,
        /// The error `mmap` returned.
        source: io::Error,
    },
    /// Another system call failed (epoll, eventfd, dup).
    Io(io::Error),
    /// A ring read while waiting turned out corrupt.
    Read {
        /// Which ring of a [`Poller`](crate::Poller) (`None` for a single ring).
        ring: Option<RingId>,
        /// What is wrong with it.
        error: ReadError,
    },
    /// A USER_RINGBUF reservation was refused (for a reservation with a timeout:
    /// [`ReserveError::NoSpace`] when the time ran out).
    Reserve(ReserveError),
    /// This process already has a producer for the USER_RINGBUF map with this id: the protocol
    /// allows one producer per ring.
    ProducerExists {
        /// The map's id.
        map_id: u32,
    },
    /// This process already has a reader ([`RingBuf`](crate::RingBuf) or
    /// [`OverwriteRingBuf`](crate::OverwriteRingBuf)) for the RINGBUF map with this id: the
    /// protocol allows one consumer per ring, and a second would publish `consumer_pos` past
    /// records the first still lends out.
    ReaderExists {
        /// The map's id.
        map_id: u32,
    },
    /// The map's overwrite mode (`BPF_F_RB_OVERWRITE`) is not the one this reader handles:
    /// overwrite-mode rings are read with [`OverwriteRingBuf`](crate::OverwriteRingBuf)
    /// (copy, then validate), others with [`RingBuf`](crate::RingBuf) (zero-copy).
    OverwriteMode {
        /// Whether the map was created with `BPF_F_RB_OVERWRITE`.
        map_overwrites: bool,
    },
    /// The running kernel lacks a feature: a ring map type or a creation flag (see
    /// [`probe`](crate::probe)).
    Unsupported {
        /// The missing feature.
        feature: Feature,
        /// The running kernel's release (`uname -r`).
        kernel_release: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bpf(error) => error.fmt(f),
            Self::WrongMapType { expected, found } => {
                write!(f, "map is of type {found}, expected {expected}")
            }
            Self::Geometry(error) => write!(f, "invalid ring map: {error}"),
            Self::Map { part, source } => write!(f, "mmap of the ring's {part} failed: {source}"),
            Self::Io(error) => error.fmt(f),
            Self::Read {
                ring: Some(ring),
                error,
            } => write!(f, "ring {}: {error}", ring.get()),
            Self::Read { ring: None, error } => error.fmt(f),
            Self::Reserve(error) => error.fmt(f),
            Self::OverwriteMode {
                map_overwrites: true,
            } => write!(
                f,
                "map was created with BPF_F_RB_OVERWRITE: the kernel may overwrite records while \
                 they are read, so zero-copy reads are refused; read it with OverwriteRingBuf"
            ),
            Self::OverwriteMode {
                map_overwrites: false,
            } => write!(
                f,
                "map was not created with BPF_F_RB_OVERWRITE: read it with RingBuf"
            ),
            Self::ReaderExists { map_id } => write!(
                f,
                "this process already has a reader for RINGBUF map {map_id}"
            ),
            Self::ProducerExists { map_id } => write!(
                f,
                "this process already has a producer for USER_RINGBUF map {map_id}"
            ),
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
            Self::Bpf(error) => Some(error),
            Self::Geometry(error) => Some(error),
            Self::Map { source, .. } => Some(source),
            Self::Io(error) => Some(error),
            Self::Read { error, .. } => Some(error),
            Self::Reserve(error) => Some(error),
            Self::WrongMapType { .. }
            | Self::ProducerExists { .. }
            | Self::ReaderExists { .. }
            | Self::OverwriteMode { .. }
            | Self::Unsupported { .. } => None,
        }
    }
}

impl From<BpfError> for Error {
    fn from(error: BpfError) -> Self {
        Self::Bpf(error)
    }
}

impl From<ReserveError> for Error {
    fn from(error: ReserveError) -> Self {
        Self::Reserve(error)
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(errno: rustix::io::Errno) -> Self {
        Self::Io(errno.into())
    }
}

impl From<Error> for io::Error {
    fn from(error: Error) -> Self {
        match error {
            Error::Io(error) => error,
            Error::Map { source, .. } => source,
            Error::Bpf(error) => error.into(),
            Error::Reserve(error @ ReserveError::NoSpace { .. }) => {
                io::Error::new(io::ErrorKind::WouldBlock, error)
            }
            unsupported @ Error::Unsupported { .. } => {
                io::Error::new(io::ErrorKind::Unsupported, unsupported)
            }
            other => io::Error::new(io::ErrorKind::InvalidInput, other),
        }
    }
}
