use std::ops::ControlFlow;
use std::vec::Vec;

use super::endpoint::{endpoint_methods, reader_waiting_methods, sleeper_for, Endpoint};
use super::error::OpenError;
use super::mapping::{RingKind, RingMapping};
use super::wait::Sleeper;
use crate::error::ReadError;
use crate::geometry::{Positions, Readiness};
use crate::overwrite::{OverwriteConsumer, OverwriteStats};

/// A `BPF_MAP_TYPE_RINGBUF` created with `BPF_F_RB_OVERWRITE` (Linux 6.19+), opened for
/// reading: a flight recorder that keeps the newest records.
///
/// Records are copied out and validated against `overwrite_pos` by an
/// [`OverwriteConsumer`] ([`read_into`](OverwriteRingBuf::read_into),
/// [`snapshot`](OverwriteRingBuf::snapshot)), never lent zero-copy, because the kernel may
/// overwrite a record while it is being read. Records lost to overwriting are counted in
/// [`stats`](OverwriteRingBuf::stats).
///
/// Opening a map without the flag fails with
/// [`OpenError::OverwriteMode`](crate::OpenError::OverwriteMode); so does opening an
/// overwrite-mode map with [`RingBuf`](crate::RingBuf).
///
/// # Examples
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bpf_ringbuf::OverwriteRingBuf;
///
/// let mut recorder = OverwriteRingBuf::from_pinned("/sys/fs/bpf/flight_recorder")?;
/// // Something went wrong: dump the newest events, oldest first.
/// for event in recorder.snapshot_vec()? {
///     println!("{event:02x?}");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct OverwriteRingBuf {
    /// The reader over the mapping (which holds the map fd and the claim); never lent out
    /// mutably.
    consumer: OverwriteConsumer<RingMapping>,
    sleeper: Sleeper,
}

impl Endpoint for OverwriteRingBuf {
    const KIND: RingKind = RingKind::OverwriteRing;

    fn from_mapping(mapping: RingMapping) -> Result<Self, OpenError> {
        let sleeper = sleeper_for(&mapping, Self::KIND)?;
        let geometry = mapping.geometry();
        // SAFETY: as for `RingBuf`: the mapping's claim makes this the map's only reader in
        // this process, and it moves into the reader; the consumer page is read-write.
        let consumer = unsafe { OverwriteConsumer::from_geometry(mapping, geometry) };
        Ok(Self { consumer, sleeper })
    }
}

endpoint_methods!(
    OverwriteRingBuf,
    "`BPF_MAP_TYPE_RINGBUF` (overwrite mode)",
    |ring| ring.consumer.memory()
);
reader_waiting_methods!(OverwriteRingBuf, |consumer| consumer.check_before_sleep()
    == Readiness::Readable);

impl OverwriteRingBuf {
    /// Copies the oldest record not yet read (and not overwritten) into `buf` and consumes
    /// it. See [`OverwriteConsumer::read_into`].
    ///
    /// # Errors
    ///
    /// [`ReadError::BufferTooSmall`] if it does not fit, or a ring-corruption [`ReadError`].
    pub fn read_into(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ReadError> {
        self.consumer.read_into(buf)
    }

    /// Reads records one by one into `scratch`, calling `f` with each copy. See
    /// [`OverwriteConsumer::consume`].
    ///
    /// # Errors
    ///
    /// As for [`read_into`](OverwriteRingBuf::read_into).
    pub fn consume<F>(
        &mut self,
        scratch: &mut [u8],
        budget: usize,
        f: F,
    ) -> Result<usize, ReadError>
    where
        F: FnMut(&[u8]) -> ControlFlow<()>,
    {
        self.consumer.consume(scratch, budget, f)
    }

    /// Calls `f` with a copy of every record in the ring, oldest first, consuming nothing.
    /// See [`OverwriteConsumer::snapshot`].
    ///
    /// # Errors
    ///
    /// [`ReadError::BufferTooSmall`] if a record does not fit `scratch`, or a
    /// ring-corruption [`ReadError`].
    pub fn snapshot<F>(&mut self, scratch: &mut [u8], f: F) -> Result<usize, ReadError>
    where
        F: FnMut(&[u8]),
    {
        self.consumer.snapshot(scratch, f)
    }

    /// Every record in the ring, oldest first, as owned copies. See
    /// [`OverwriteConsumer::snapshot_vec`].
    ///
    /// # Errors
    ///
    /// A ring-corruption [`ReadError`].
    pub fn snapshot_vec(&mut self) -> Result<Vec<Vec<u8>>, ReadError> {
        self.consumer.snapshot_vec()
    }

    /// Bytes of records still in the ring and not yet read. See
    /// [`OverwriteConsumer::available`].
    ///
    /// # Errors
    ///
    /// A [`ReadError`] if `consumer_pos` was moved or is corrupt.
    pub fn available(&self) -> Result<usize, ReadError> {
        self.consumer.available()
    }

    /// Both positions, as the ring's shared words hold them now.
    pub fn positions(&self) -> Positions {
        self.consumer.positions()
    }

    /// The position this reader has read up to.
    pub fn cursor(&self) -> usize {
        self.consumer.cursor()
    }

    /// `overwrite_pos`: every record before it has been overwritten.
    pub fn overwrite_pos(&self) -> usize {
        self.consumer.overwrite_pos()
    }

    /// Counters of what was read and lost so far.
    pub fn stats(&self) -> OverwriteStats {
        self.consumer.stats()
    }

    /// The check before sleeping in an event loop of your own; [`wait`](Self::wait) runs it
    /// for you. See [`OverwriteConsumer::check_before_sleep`].
    pub fn check_before_sleep(&mut self) -> Readiness {
        self.consumer.check_before_sleep()
    }

    /// After [`ReadError::ConsumerPosMoved`]: continue from this reader's own cursor.
    pub fn resume(&mut self) {
        self.consumer.resume()
    }

    /// After [`ReadError::ConsumerPosMoved`]: adopt the other writer's position.
    pub fn follow(&mut self) {
        self.consumer.follow()
    }

    /// Skips everything written so far; returns the bytes skipped.
    pub fn resync(&mut self) -> usize {
        self.consumer.resync()
    }
}
