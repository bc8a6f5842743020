//! Opening a ring map: checking what the fd is, claiming the ring, mapping its pages.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::string::{String, ToString};

use bpf_ringbuf_sys::{self as sys, MapFlags, MapType, Mapping};
use rustix::event::epoll::EventFlags;
use rustix::io::Errno;
use rustix::mm::ProtFlags;

use super::claim::MapClaim;
use super::error::OpenError;
use crate::geometry::Geometry;
use crate::memory::{DataWord, OverwriteMemory, PositionWord, RingMemory, RingMemoryMut};

/// Which endpoint of which kind of ring this process opens a map as. It decides the checks,
/// the page permissions and what the fd is watched for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RingKind {
    /// A `BPF_MAP_TYPE_RINGBUF` read zero-copy ([`RingBuf`](crate::RingBuf)).
    Ring,
    /// A `BPF_MAP_TYPE_RINGBUF` created with `BPF_F_RB_OVERWRITE`
    /// ([`OverwriteRingBuf`](crate::OverwriteRingBuf)).
    OverwriteRing,
    /// A `BPF_MAP_TYPE_USER_RINGBUF` this process produces into
    /// ([`UserRingBuf`](crate::UserRingBuf)).
    UserRing,
}

impl RingKind {
    fn map_type(self) -> MapType {
        match self {
            Self::Ring | Self::OverwriteRing => MapType::RINGBUF,
            Self::UserRing => MapType::USER_RINGBUF,
        }
    }

    /// The kernel's permissions: a RINGBUF's consumer page is writable (we publish
    /// `consumer_pos`), its producer page and data are not (a writable mapping is `EPERM`); a
    /// USER_RINGBUF's the other way round.
    fn protections(self) -> (ProtFlags, ProtFlags) {
        match self {
            Self::Ring | Self::OverwriteRing => {
                (ProtFlags::READ | ProtFlags::WRITE, ProtFlags::READ)
            }
            Self::UserRing => (ProtFlags::READ, ProtFlags::READ | ProtFlags::WRITE),
        }
    }

    /// What the kernel signals on the map's fd for this endpoint: data to read (`EPOLLIN`)
    /// or space to write (`EPOLLOUT`).
    pub(crate) fn interest(self) -> EventFlags {
        match self {
            Self::Ring | Self::OverwriteRing => EventFlags::IN,
            Self::UserRing => EventFlags::OUT,
        }
    }
}

/// A ring map opened by this process: the map's fd, this process's claim on the ring's one
/// reader or producer, and the ring's pages mapped into memory — the [`RingMemory`] of the
/// Linux front end.
///
/// Only the front end's openers make one ([`RingBuf::new`](crate::RingBuf::new) and its
/// siblings), after checking through the kernel that the fd is a BPF map of the right type
/// and mode, and mapping exactly its `max_entries`. The claim lives here, with the mapping,
/// so nothing can separate the two: while this value lives, no other reader (or producer)
/// of the same map can be opened in this process ([`OpenError::InUse`]).
///
/// Two mappings of the map fd: offset 0, one page — the consumer page; offset `page_size`,
/// `page_size + 2 * size` bytes — the producer page followed by the data pages, which the
/// kernel maps twice back to back.
pub struct RingMapping {
    // Field order is drop order: unmap, then release the claim, then close the fd.
    consumer_page: Mapping,
    producer_and_data: Mapping,
    /// The data area: one page into `producer_and_data`, `2 * size` bytes.
    data: NonNull<u8>,
    geometry: Geometry,
    kind: RingKind,
    claim: MapClaim,
    map: OwnedFd,
}

// SAFETY: the mappings are plain shared memory; every access the protocol makes to words
// another party writes is atomic, and the rest is handed out under the protocol's ownership
// rules (`RingMemory`'s contract).
unsafe impl Send for RingMapping {}
// SAFETY: as above.
unsafe impl Sync for RingMapping {}

impl RingMapping {
    /// Checks that `map` is a ring map of `kind`, claims it and maps it.
    pub(crate) fn open(map: OwnedFd, kind: RingKind) -> Result<Self, OpenError> {
        check_is_map(map.as_fd())?;
        let info = sys::map_info(map.as_fd()).map_err(|error| match error.errno() {
            // BPF_OBJ_GET_INFO_BY_FD on something that is no BPF object.
            Errno::INVAL | Errno::BADF => OpenError::NotAMap {
                object: String::from("not a BPF object"),
            },
            _ => OpenError::Bpf(error),
        })?;
        if info.map_type() != kind.map_type() {
            return Err(OpenError::WrongMapType {
                expected: kind.map_type(),
                found: info.map_type(),
            });
        }
        let overwrites = info.flags().contains(MapFlags::RB_OVERWRITE);
        match kind {
            RingKind::Ring if overwrites => {
                return Err(OpenError::OverwriteMode {
                    map_overwrites: true,
                })
            }
            RingKind::OverwriteRing if !overwrites => {
                return Err(OpenError::OverwriteMode {
                    map_overwrites: false,
                })
            }
            _ => {}
        }
        let claim = MapClaim::new(info.id)?;
        let page_size = rustix::param::page_size();
        // The size comes from the kernel, never from the caller: mapping less than the map
        // holds would read old payload bytes as records.
        let size = info.max_entries as usize;
        let geometry = Geometry::for_map(size, page_size).map_err(OpenError::Geometry)?;
        let (consumer_prot, producer_prot) = kind.protections();
        let consumer_page =
            Mapping::map_shared(map.as_fd(), 0, page_size, consumer_prot).map_err(|errno| {
                OpenError::Map {
                    part: "consumer page",
                    source: errno.into(),
                }
            })?;
        // Cannot overflow: `size` is a u32 and the page size far below usize::MAX / 4.
        let length = page_size + 2 * size;
        let producer_and_data =
            Mapping::map_shared(map.as_fd(), page_size as u64, length, producer_prot).map_err(
                |errno| OpenError::Map {
                    part: "producer page and data",
                    source: errno.into(),
                },
            )?;
        // SAFETY: the mapping is `page_size + 2 * size` bytes long, so the data area starts
        // inside it; an address inside a mapping is not null.
        let data = unsafe { producer_and_data.as_ptr().add(page_size) };
        Ok(Self {
            consumer_page,
            producer_and_data,
            data,
            geometry,
            kind,
            claim,
            map,
        })
    }

    /// The ring's geometry (its size is the map's `max_entries`).
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The map's id.
    pub fn map_id(&self) -> u32 {
        self.claim.map_id()
    }

    /// The map's fd.
    pub(crate) fn map_fd(&self) -> BorrowedFd<'_> {
        self.map.as_fd()
    }

    /// The word at `byte_offset` of the producer page (`pending_pos` at 8 since Linux 6.10,
    /// `overwrite_pos` at 16 since 6.19).
    fn producer_page_word(&self, byte_offset: usize) -> &PositionWord {
        debug_assert!(byte_offset % 8 == 0 && byte_offset + 8 <= rustix::param::page_size());
        // SAFETY: in bounds of the producer page (every caller passes 8 or 16), aligned
        // (pages are aligned and the offset is a multiple of 8), and mapped as long as `self`
        // lives; the kernel accesses the word with READ_ONCE/WRITE_ONCE/smp_* only.
        unsafe {
            PositionWord::from_ptr(
                self.producer_and_data
                    .as_ptr()
                    .as_ptr()
                    .add(byte_offset)
                    .cast(),
            )
        }
    }

    /// The kernel's `pending_pos` (producer page +8, Linux 6.10+; 0 before).
    pub(crate) fn pending_pos(&self) -> usize {
        self.producer_page_word(8).load_relaxed()
    }
}

/// Refuses an fd that `/proc` says is something other than a BPF map (a program, a link, a
/// file), as bpftool does: asking the kernel for map information about a program fd would
/// answer with the program's information. Without `/proc` the check is skipped; the map
/// information and the mapping still refuse what is not a ring map, with a vaguer error.
fn check_is_map(fd: BorrowedFd<'_>) -> Result<(), OpenError> {
    let link = std::format!("/proc/self/fd/{}", fd.as_raw_fd());
    match std::fs::read_link(link) {
        Ok(target) if target.as_os_str() == "anon_inode:bpf-map" => Ok(()),
        Ok(target) => Err(OpenError::NotAMap {
            object: target.to_string_lossy().to_string(),
        }),
        Err(_) => Ok(()),
    }
}

// SAFETY: `size` is the map's `max_entries` as the kernel reports it (validated by
// `Geometry::for_map`), and exactly that much is mapped. The positions are the first words of
// the consumer and producer pages. `header` and `bytes` address the data area, which the
// kernel maps twice back to back over `2 * size` bytes, so `offset + len <= 2 * size` stays
// inside the mapping; both mappings live as long as `self`. The words on pages mapped
// read-only are only loaded (`PositionWord`/`DataWord` offer nothing else outside the core,
// and the core stores only to the words its endpoint owns: `consumer_pos` of a RINGBUF,
// `producer_pos` and headers of a USER_RINGBUF, which are the writable ones).
unsafe impl RingMemory for RingMapping {
    #[inline]
    fn consumer_pos(&self) -> &PositionWord {
        // SAFETY: the consumer page is mapped, page-aligned, and lives as long as `self`.
        unsafe { PositionWord::from_ptr(self.consumer_page.as_ptr().as_ptr().cast()) }
    }

    #[inline]
    fn producer_pos(&self) -> &PositionWord {
        // SAFETY: the producer page is mapped, page-aligned, and lives as long as `self`.
        unsafe { PositionWord::from_ptr(self.producer_and_data.as_ptr().as_ptr().cast()) }
    }

    #[inline]
    fn size(&self) -> usize {
        self.geometry.size()
    }

    #[inline]
    fn header(&self, offset: usize) -> &DataWord {
        // Masked rather than asserted: for every offset the core asks for (8-aligned, below
        // `size`) this is the identity, and any other offset still lands on an aligned word
        // inside the data area, which the trait allows.
        let offset = offset & self.geometry.mask() & !3;
        // SAFETY: `offset <= mask < size` lies inside the data area, 4-byte aligned (low bits
        // cleared; the data area is page-aligned); the mapping lives as long as `self`.
        unsafe { DataWord::from_ptr(self.data.as_ptr().add(offset).cast()) }
    }

    #[inline]
    unsafe fn header_unchecked(&self, offset: usize) -> &DataWord {
        debug_assert!(offset < self.geometry.size() && offset % 8 == 0);
        // SAFETY: the caller guarantees `offset < size` and 8-byte alignment: an aligned
        // word inside the data area (which is page-aligned); the mapping lives as long as
        // `self`.
        unsafe { DataWord::from_ptr(self.data.as_ptr().add(offset).cast()) }
    }

    #[inline]
    unsafe fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        debug_assert!(offset + len <= 2 * self.geometry.size());
        // SAFETY: the caller guarantees `offset + len <= 2 * size`, inside the double-mapped
        // data area, and that nobody writes the range while the slice lives.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr().add(offset), len) }
    }

    #[inline]
    fn data_ptr(&self) -> Option<NonNull<u8>> {
        // The double-mapped data area `header` and `bytes` address: page-aligned, `2 * size`
        // bytes, mapped as long as `self` lives.
        Some(self.data)
    }
}

// SAFETY: as for `RingMemory`. Only USER_RINGBUF mappings have a writable data area; for a
// RINGBUF mapping the data is read-only and `bytes_mut` panics instead of handing out a
// slice that would fault when written (no endpoint the front end makes asks for it).
unsafe impl RingMemoryMut for RingMapping {
    #[inline]
    unsafe fn bytes_mut(&self, offset: usize, len: usize) -> &mut [u8] {
        assert!(
            self.kind == RingKind::UserRing,
            "the data area of a RINGBUF map is read-only"
        );
        debug_assert!(offset + len <= 2 * self.geometry.size());
        // SAFETY: the caller guarantees `offset + len <= 2 * size`, inside the double-mapped
        // data area (mapped writable for USER_RINGBUF), and exclusive access while the slice
        // lives.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr().add(offset), len) }
    }
}

// SAFETY: `overwrite_pos` is the producer page's third word (byte 16, Linux 6.19's layout:
// producer_pos, pending_pos, overwrite_pos); on older kernels it is a word of the zeroed
// producer page that stays 0. `data_word` addresses the double-mapped data area, which spans
// `2 * size` bytes; offsets past it are refused with a panic (the core never asks for one).
unsafe impl OverwriteMemory for RingMapping {
    #[inline]
    fn overwrite_pos(&self) -> &PositionWord {
        self.producer_page_word(16)
    }

    #[inline]
    fn data_word(&self, offset: usize) -> &DataWord {
        assert!(offset % 4 == 0 && offset + 4 <= 2 * self.geometry.size());
        // SAFETY: in bounds of the double-mapped data area (checked) and 4-byte aligned; the
        // mapping lives as long as `self`.
        unsafe { DataWord::from_ptr(self.data.as_ptr().add(offset).cast()) }
    }
}

impl std::fmt::Debug for RingMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingMapping")
            .field("map_id", &self.map_id())
            .field("kind", &self.kind)
            .field("size", &self.geometry.size())
            .finish()
    }
}
