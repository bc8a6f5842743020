//! Reading the counter BPF programs keep of the records they could not reserve.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::vec::Vec;
use std::{io, vec};

use bpf_ringbuf_sys::{self as sys, MapType};

use crate::{Error, MapSource, OpenError};

/// The lost-event counter of a BPF program: a `u64` the program increments when
/// `bpf_ringbuf_reserve` (or `bpf_ringbuf_output`) fails because the ring is full.
///
/// Such records never reach the ring, so no reader can count them; the usual idiom is a
/// one-element `BPF_MAP_TYPE_PERCPU_ARRAY` of `u64` (no atomics needed in the program):
///
/// ```c
/// struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 1);
///          __type(key, u32); __type(value, u64); } drops SEC(".maps");
/// ...
/// event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
/// if (!event) {
///     u32 zero = 0;
///     u64 *count = bpf_map_lookup_elem(&drops, &zero);
///     if (count) (*count)++;
///     return 0;
/// }
/// ```
///
/// `DropCounter` reads that value (summed over the possible CPUs), or a plain
/// `BPF_MAP_TYPE_ARRAY` `u64` the program increments atomically, at key 0 or another key.
///
/// ```no_run
/// use bpf_ringbuf::DropCounter;
/// use std::os::fd::AsFd;
///
/// // `map` is the program's `drops` map, from the loader (a libbpf-rs `Map`, an aya map's fd).
/// fn report(map: impl AsFd) -> Result<(), bpf_ringbuf::Error> {
///     let mut drops = DropCounter::new(map)?;
///     loop {
///         std::thread::sleep(std::time::Duration::from_secs(1));
///         let lost = drops.lost_since_last()?;
///         if lost > 0 {
///             eprintln!("lost {lost} events in the last second ({} in all)", drops.last_total());
///         }
///     }
/// }
/// ```
#[derive(Debug)]
pub struct DropCounter {
    map: OwnedFd,
    key: u32,
    /// Lookup buffer: 8 bytes per slot (per possible CPU for a per-CPU map, else one).
    buf: Vec<u8>,
    /// The total the last `lost_since_last` saw.
    last_total: u64,
}

impl DropCounter {
    /// The counter at key 0 of `map` (the fd is duplicated).
    ///
    /// # Errors
    ///
    /// As for [`DropCounter::with_key`].
    pub fn new(map: impl AsFd) -> Result<Self, Error> {
        Self::with_key(map, 0)
    }

    /// The counter at `key` of `map` (the fd is duplicated). The first
    /// [`lost_since_last`](DropCounter::lost_since_last) reports everything counted so far.
    ///
    /// # Errors
    ///
    /// [`Error::Open`] naming the fd with [`OpenError::WrongMapType`] unless `map` is a
    /// `PERCPU_ARRAY` or an `ARRAY`; [`Error::Io`] (`InvalidInput`) unless its values are 8
    /// bytes and `key` is in range; [`Error::Bpf`] if the kernel refuses an operation.
    pub fn with_key(map: impl AsFd, key: u32) -> Result<Self, Error> {
        let source = MapSource::Fd(map.as_fd().as_raw_fd());
        let map = rustix::io::fcntl_dupfd_cloexec(map.as_fd(), 0)?;
        let info = sys::map_info(map.as_fd())?;
        let slots = match info.map_type() {
            MapType::PERCPU_ARRAY => {
                sys::possible_cpus().map_err(|errno| Error::Io(errno.into()))?
            }
            MapType::ARRAY => 1,
            found => {
                return Err(Error::Open {
                    map: source,
                    reason: OpenError::WrongMapType {
                        expected: MapType::PERCPU_ARRAY,
                        found,
                    },
                })
            }
        };
        if info.value_size != 8 {
            return Err(invalid(format_args!(
                "a drop counter holds u64 values, this map's values are {} bytes",
                info.value_size
            )));
        }
        if key >= info.max_entries {
            return Err(invalid(format_args!(
                "key {key} is out of range: the map has {} entries",
                info.max_entries
            )));
        }
        Ok(Self {
            map,
            key,
            buf: vec![0; 8 * slots],
            last_total: 0,
        })
    }

    /// The counter's value on each possible CPU (one value for a plain array).
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] if the lookup fails.
    pub fn per_cpu(&mut self) -> Result<Vec<u64>, Error> {
        self.lookup()?;
        Ok(self.values().collect())
    }

    /// The counter summed over all CPUs: every event lost since the map was created.
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] if the lookup fails.
    pub fn total(&mut self) -> Result<u64, Error> {
        self.lookup()?;
        Ok(self.values().fold(0u64, u64::wrapping_add))
    }

    /// Events lost since the previous call (since the map was created, on the first call).
    ///
    /// # Errors
    ///
    /// [`Error::Bpf`] if the lookup fails.
    pub fn lost_since_last(&mut self) -> Result<u64, Error> {
        let total = self.total()?;
        let lost = total.wrapping_sub(self.last_total);
        self.last_total = total;
        Ok(lost)
    }

    /// The total the last [`lost_since_last`](DropCounter::lost_since_last) saw.
    pub fn last_total(&self) -> u64 {
        self.last_total
    }

    /// The map's fd.
    pub fn map_fd(&self) -> BorrowedFd<'_> {
        self.map.as_fd()
    }

    fn lookup(&mut self) -> Result<(), Error> {
        sys::map_lookup_elem(self.map.as_fd(), &self.key.to_ne_bytes(), &mut self.buf)?;
        Ok(())
    }

    fn values(&self) -> impl Iterator<Item = u64> + '_ {
        self.buf.chunks_exact(8).map(|slot| {
            let mut word = [0; 8];
            word.copy_from_slice(slot);
            u64::from_ne_bytes(word)
        })
    }
}

fn invalid(message: std::fmt::Arguments<'_>) -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::InvalidInput,
        std::format!("{message}"),
    ))
}
