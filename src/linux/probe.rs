//! Kernel feature probes: does the running kernel have the ring map types and creation flags a
//! program needs?
//!
//! Each probe creates a one-page map of the feature's type with its flags and closes it at
//! once. The kernel's answer is read as follows:
//!
//! - the map is created: [`Support::Supported`];
//! - `EINVAL` (unknown map type or refused flag, as `map_create` and `ringbuf_map_alloc` in
//!   `kernel/bpf/` answer): [`Support::Unsupported`], with a reason naming the feature, the
//!   kernel release and the first mainline release that has it;
//! - anything else (`EPERM` without `CAP_BPF`, `ENOSYS` without bpf(2), ...) is no answer
//!   about the feature: the probe returns [`Error::Bpf`].
//!
//! [`create_ring_map`] creates a ring map and turns a refusal caused by a missing feature into
//! [`Error::Unsupported`], so an old kernel gives a clear error instead of a bare `EINVAL`.
//!
//! ```no_run
//! # fn main() -> Result<(), bpf_ringbuf::Error> {
//! use bpf_ringbuf::probe::{self, Support};
//!
//! match probe::probe_user_ringbuf()? {
//!     Support::Supported => println!("USER_RINGBUF is there"),
//!     Support::Unsupported { reason } => println!("falling back: {reason}"),
//! }
//! # Ok(()) }
//! ```

use std::borrow::ToOwned;
use std::fmt;
use std::format;
use std::os::fd::OwnedFd;
use std::string::String;

use bpf_ringbuf_sys::{self as sys, Errno, MapCreate, MapFlags, MapType};

use crate::Error;

/// A kernel feature this crate can probe for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Feature {
    /// `BPF_MAP_TYPE_RINGBUF`, kernel → user (Linux 5.8).
    RingBuf,
    /// `BPF_MAP_TYPE_USER_RINGBUF`, user → kernel (Linux 6.1).
    UserRingBuf,
    /// A ring map type that accepts the given creation flags, e.g.
    /// [`MapFlags::RB_OVERWRITE`] on a RINGBUF (Linux 6.19).
    RingFlags {
        /// The ring map type.
        map_type: MapType,
        /// The creation flags it must accept.
        flags: MapFlags,
    },
}

impl Feature {
    /// The ring map type the feature belongs to.
    pub fn map_type(self) -> MapType {
        match self {
            Feature::RingBuf => MapType::RINGBUF,
            Feature::UserRingBuf => MapType::USER_RINGBUF,
            Feature::RingFlags { map_type, .. } => map_type,
        }
    }

    /// The creation flags the feature needs (empty for a bare map type).
    pub fn flags(self) -> MapFlags {
        match self {
            Feature::RingFlags { flags, .. } => flags,
            _ => MapFlags::empty(),
        }
    }

    /// The first mainline Linux release with the feature, when this crate knows it.
    pub fn since(self) -> Option<&'static str> {
        match self {
            Feature::RingBuf => Some("5.8"),
            Feature::UserRingBuf => Some("6.1"),
            Feature::RingFlags { map_type, flags } => {
                let known = if map_type == MapType::RINGBUF {
                    MapFlags::NUMA_NODE | MapFlags::RB_OVERWRITE
                } else if map_type == MapType::USER_RINGBUF {
                    MapFlags::NUMA_NODE
                } else {
                    MapFlags::empty()
                };
                if !known.contains(flags) {
                    None
                } else if flags.contains(MapFlags::RB_OVERWRITE) {
                    Some("6.19")
                } else {
                    Feature::from_map_type(map_type).since()
                }
            }
        }
    }

    fn from_map_type(map_type: MapType) -> Feature {
        match map_type {
            MapType::USER_RINGBUF => Feature::UserRingBuf,
            MapType::RINGBUF => Feature::RingBuf,
            map_type => Feature::RingFlags {
                map_type,
                flags: MapFlags::empty(),
            },
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Feature::RingBuf | Feature::UserRingBuf => self.map_type().fmt(f),
            Feature::RingFlags { map_type, flags } if flags.is_empty() => map_type.fmt(f),
            Feature::RingFlags { map_type, flags } => {
                write!(f, "{map_type} with flags ")?;
                let mut first = true;
                for (name, _) in flags.iter_names() {
                    if !first {
                        f.write_str("|")?;
                    }
                    write!(f, "BPF_F_{name}")?;
                    first = false;
                }
                let unknown = flags.bits() & !MapFlags::all().bits();
                if unknown != 0 {
                    if !first {
                        f.write_str("|")?;
                    }
                    write!(f, "{unknown:#x}")?;
                }
                Ok(())
            }
        }
    }
}

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    /// The kernel has the feature.
    Supported,
    /// The kernel refused it.
    Unsupported {
        /// Which feature is missing, on which kernel, and since when mainline has it.
        reason: String,
    },
}

impl Support {
    /// Whether the feature is there.
    pub fn is_supported(&self) -> bool {
        matches!(self, Support::Supported)
    }

    /// The reason the feature is missing, or `None` when it is there.
    pub fn unsupported_reason(&self) -> Option<&str> {
        match self {
            Support::Supported => None,
            Support::Unsupported { reason } => Some(reason),
        }
    }
}

/// The running kernel's release (`uname -r`), read from `/proc/sys/kernel/osrelease`;
/// `"unknown"` when that cannot be read.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Why `feature` is missing on the kernel `release`.
fn unsupported_reason(feature: Feature, release: &str) -> String {
    match feature.since() {
        Some(since) => format!("Linux {release} lacks {feature} (mainline has it since {since})"),
        None => format!("Linux {release} lacks {feature}"),
    }
}

/// Reads the kernel's answer to a probe map creation (see the module docs).
fn classify(result: Result<OwnedFd, sys::BpfError>, feature: Feature) -> Result<Support, Error> {
    match result {
        Ok(_map) => Ok(Support::Supported),
        Err(error) if error.errno() == Errno::INVAL => Ok(Support::Unsupported {
            reason: unsupported_reason(feature, &kernel_release()),
        }),
        Err(error) => Err(Error::Bpf(error)),
    }
}

/// Probes for `feature` by creating (and closing) a one-page map of its type with its flags.
///
/// # Errors
///
/// [`Error::Bpf`] when the kernel refuses for another reason than a missing feature (no
/// `CAP_BPF`, no bpf(2), out of memory).
pub fn probe(feature: Feature) -> Result<Support, Error> {
    let map = sys::map_create(&MapCreate {
        flags: feature.flags(),
        ..MapCreate::new(feature.map_type(), 0, 0, sys::page_size() as u32)
    });
    classify(map, feature)
}

/// Probes for `BPF_MAP_TYPE_RINGBUF` (Linux 5.8).
///
/// # Errors
///
/// As for [`probe`].
pub fn probe_ringbuf() -> Result<Support, Error> {
    probe(Feature::RingBuf)
}

/// Probes for `BPF_MAP_TYPE_USER_RINGBUF` (Linux 6.1).
///
/// # Errors
///
/// As for [`probe`].
pub fn probe_user_ringbuf() -> Result<Support, Error> {
    probe(Feature::UserRingBuf)
}

/// Probes whether the ring map type `map_type` (`RINGBUF` or `USER_RINGBUF`) accepts the
/// creation `flags` (for example [`MapFlags::RB_OVERWRITE`] on [`MapType::RINGBUF`], Linux
/// 6.19). When the map type itself is missing, the reason names the map type.
///
/// # Errors
///
/// As for [`probe`].
pub fn probe_map_flags(map_type: MapType, flags: MapFlags) -> Result<Support, Error> {
    let bare = probe(Feature::from_map_type(map_type))?;
    if flags.is_empty() || !bare.is_supported() {
        return Ok(bare);
    }
    probe(Feature::RingFlags { map_type, flags })
}

/// Creates a ring map (`RINGBUF` or `USER_RINGBUF`) with a `size`-byte data area and the
/// creation `flags`.
///
/// # Errors
///
/// [`Error::Unsupported`] when the kernel refuses the map because it lacks the map type or one
/// of the flags (found by probing after the refusal); [`Error::Bpf`] for any other refusal,
/// such as `EINVAL` for a size that is not a power-of-two multiple of the page size.
pub fn create_ring_map(map_type: MapType, size: u32, flags: MapFlags) -> Result<OwnedFd, Error> {
    let error = match sys::map_create(&MapCreate {
        flags,
        ..MapCreate::new(map_type, 0, 0, size)
    }) {
        Ok(map) => return Ok(map),
        Err(error) if error.errno() == Errno::INVAL => error,
        Err(error) => return Err(Error::Bpf(error)),
    };
    // EINVAL: a bad size, or a missing feature. Probe the type, then the flags, on one page.
    for feature in [
        Feature::from_map_type(map_type),
        Feature::RingFlags { map_type, flags },
    ] {
        if let Support::Unsupported { .. } = probe(feature)? {
            return Err(Error::Unsupported {
                feature,
                kernel_release: kernel_release(),
            });
        }
    }
    Err(Error::Bpf(error))
}

#[cfg(test)]
mod tests {
    use std::string::ToString;

    use super::*;

    #[test]
    fn features_name_their_map_type_and_flags() {
        assert_eq!(
            Feature::UserRingBuf.to_string(),
            "BPF_MAP_TYPE_USER_RINGBUF"
        );
        let overwrite = Feature::RingFlags {
            map_type: MapType::RINGBUF,
            flags: MapFlags::RB_OVERWRITE,
        };
        assert_eq!(
            overwrite.to_string(),
            "BPF_MAP_TYPE_RINGBUF with flags BPF_F_RB_OVERWRITE"
        );
        let odd = Feature::RingFlags {
            map_type: MapType::RINGBUF,
            flags: MapFlags::NUMA_NODE | MapFlags::from_bits_retain(1 << 30),
        };
        assert_eq!(
            odd.to_string(),
            "BPF_MAP_TYPE_RINGBUF with flags BPF_F_NUMA_NODE|0x40000000"
        );
    }

    #[test]
    fn since_knows_the_ring_features() {
        assert_eq!(Feature::RingBuf.since(), Some("5.8"));
        assert_eq!(Feature::UserRingBuf.since(), Some("6.1"));
        let flags = |map_type, flags| Feature::RingFlags { map_type, flags }.since();
        assert_eq!(
            flags(MapType::RINGBUF, MapFlags::RB_OVERWRITE),
            Some("6.19")
        );
        assert_eq!(
            flags(MapType::USER_RINGBUF, MapFlags::NUMA_NODE),
            Some("6.1")
        );
        assert_eq!(flags(MapType::USER_RINGBUF, MapFlags::RB_OVERWRITE), None);
        assert_eq!(flags(MapType::RINGBUF, MapFlags::MMAPABLE), None);
    }

    #[test]
    fn einval_is_unsupported_and_other_errors_are_no_answer() {
        let einval = Err(sys::BpfError::new(sys::Command::MapCreate, Errno::INVAL));
        let support = classify(einval, Feature::UserRingBuf).unwrap();
        let reason = support
            .unsupported_reason()
            .expect("EINVAL means unsupported");
        assert!(reason.contains("BPF_MAP_TYPE_USER_RINGBUF"), "{reason}");
        assert!(reason.contains("since 6.1"), "{reason}");
        assert!(reason.contains(&kernel_release()), "{reason}");

        let eperm = Err(sys::BpfError::new(sys::Command::MapCreate, Errno::PERM));
        match classify(eperm, Feature::UserRingBuf) {
            Err(Error::Bpf(error)) => assert_eq!(error.errno(), Errno::PERM),
            other => panic!("EPERM must not read as a missing feature: {other:?}"),
        }
    }
}
