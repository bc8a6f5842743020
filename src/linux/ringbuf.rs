use std::ops::ControlFlow;
use std::vec::Vec;

use super::endpoint::{endpoint_methods, reader_waiting_methods, sleeper_for, Endpoint};
use super::error::OpenError;
use super::mapping::{RingKind, RingMapping};
use super::wait::Sleeper;
use crate::consumer::{Batch, Consumer, Stats};
use crate::error::ReadError;
use crate::geometry::{Positions, Readiness};

/// A `BPF_MAP_TYPE_RINGBUF` map opened for reading: the kernel→user direction.
///
/// Every read API of the [`Consumer`] is here: zero-copy [batches](RingBuf::batch),
/// [callbacks](RingBuf::consume) with a budget, and [copies](RingBuf::read_into).
/// [`wait`](RingBuf::wait) sleeps until the kernel signals new records, without losing a
/// wakeup and without spinning on a BUSY head record.
///
/// The ring is opened from any map fd (`AsFd`: a libbpf-rs or aya map works; the fd is
/// duplicated), a pinned path, or a map id, after checking through the kernel that it is a
/// RINGBUF not in overwrite mode. Reading starts at the ring's current `consumer_pos`, so a
/// pinned map reopened mid-stream continues where its last reader stopped. A process has at
/// most one `RingBuf` (or [`OverwriteRingBuf`](crate::OverwriteRingBuf)) per map: a second
/// one would publish `consumer_pos` past records the first still lends, so opening it fails
/// with [`OpenError::InUse`](crate::OpenError::InUse).
///
/// # Examples
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bpf_ringbuf::RingBuf;
/// use std::ops::ControlFlow;
/// use std::time::Duration;
///
/// let mut ring = RingBuf::from_map_id(42)?;
/// while ring.wait(Some(Duration::from_millis(100)))?.is_ready() {
///     ring.consume(1024, |record| {
///         println!("{record:02x?}");
///         ControlFlow::Continue(())
///     })?;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RingBuf {
    /// The consumer over the mapping, which holds the map fd and this process's claim on the
    /// ring's one reader; no `&mut` to it leaves this type, so nothing can swap it out.
    consumer: Consumer<RingMapping>,
    /// The epoll set watching the map's fd.
    sleeper: Sleeper,
}

impl Endpoint for RingBuf {
    const KIND: RingKind = RingKind::Ring;

    fn from_mapping(mapping: RingMapping) -> Result<Self, OpenError> {
        let sleeper = sleeper_for(&mapping, Self::KIND)?;
        let geometry = mapping.geometry();
        // SAFETY: the mapping's claim makes this the only consumer of the map in this process
        // for as long as the mapping lives, and the mapping (with the claim) moves into the
        // consumer, which this type never lends out mutably. The consumer page is mapped
        // read-write; the kernel writes a record's bytes only in space consumer_pos handed
        // back, before committing it. Another process holding the map fd is the trust
        // assumption no mapping can rule out (docs/design.md).
        let consumer = unsafe { Consumer::from_geometry(mapping, geometry) };
        Ok(Self { consumer, sleeper })
    }
}

endpoint_methods!(RingBuf, "`BPF_MAP_TYPE_RINGBUF`", |ring| ring
    .consumer
    .memory());
reader_waiting_methods!(RingBuf, |consumer| consumer.check_before_sleep()
    == Readiness::Readable);

impl RingBuf {
    /// The consumer, for the merged reader ([`crate::merge`] reaches it through its sealed
    /// `Source` trait; nothing outside the crate does).
    pub(crate) fn consumer(&self) -> &Consumer<RingMapping> {
        &self.consumer
    }

    /// As [`consumer`](Self::consumer), to publish and count what a merge round read.
    pub(crate) fn consumer_mut(&mut self) -> &mut Consumer<RingMapping> {
        &mut self.consumer
    }

    /// A zero-copy batch of the records committed so far; it publishes `consumer_pos` once,
    /// when dropped. See [`Consumer::batch`].
    #[inline]
    pub fn batch(&mut self) -> Batch<'_, RingMapping> {
        self.consumer.batch()
    }

    /// Calls `f` with each committed record, zero-copy, up to `budget` records or until `f`
    /// breaks; returns the number delivered. See [`Consumer::consume`].
    ///
    /// # Errors
    ///
    /// A [`ReadError`] if the ring is corrupt or `consumer_pos` was moved.
    pub fn consume<F>(&mut self, budget: usize, f: F) -> Result<usize, ReadError>
    where
        F: FnMut(&[u8]) -> ControlFlow<()>,
    {
        self.consumer.consume(budget, f)
    }

    /// Copies the next committed record into `buf` and consumes it. See
    /// [`Consumer::read_into`].
    ///
    /// # Errors
    ///
    /// [`ReadError::BufferTooSmall`] if it does not fit (it stays in the ring), or a
    /// ring-corruption [`ReadError`].
    #[inline]
    pub fn read_into(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ReadError> {
        self.consumer.read_into(buf)
    }

    /// Replaces `buf`'s contents with the next committed record and consumes it. See
    /// [`Consumer::read_vec`].
    ///
    /// # Errors
    ///
    /// A ring-corruption [`ReadError`].
    #[inline]
    pub fn read_vec(&mut self, buf: &mut Vec<u8>) -> Result<bool, ReadError> {
        self.consumer.read_vec(buf)
    }

    /// The next committed record, copied and consumed. See [`Consumer::read_owned`].
    ///
    /// # Errors
    ///
    /// A ring-corruption [`ReadError`].
    pub fn read_owned(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        self.consumer.read_owned()
    }

    /// Bytes between `consumer_pos` and `producer_pos`. See [`Consumer::available`].
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

    /// The position this reader has read up to. See [`Consumer::cursor`].
    pub fn cursor(&self) -> usize {
        self.consumer.cursor()
    }

    /// The kernel's `pending_pos` (producer page, Linux 6.10+; 0 on older kernels):
    /// reservations before it are all committed.
    pub fn pending_pos(&self) -> usize {
        self.consumer.memory().pending_pos()
    }

    /// What this reader has read so far. See [`Stats`].
    pub fn stats(&self) -> Stats {
        self.consumer.stats()
    }

    /// Returns the counters and sets them to zero.
    pub fn take_stats(&mut self) -> Stats {
        self.consumer.take_stats()
    }

    /// The check before sleeping on the ring in an event loop of your own (around
    /// [`epoll_fd`](RingBuf::epoll_fd)); [`wait`](RingBuf::wait) runs it for you. See
    /// [`Consumer::check_before_sleep`].
    pub fn check_before_sleep(&self) -> Readiness {
        self.consumer.check_before_sleep()
    }

    /// After [`ReadError::ConsumerPosMoved`]: continue from this reader's own cursor. See
    /// [`Consumer::resume`].
    ///
    /// # Errors
    ///
    /// [`ReadError::ConsumerAhead`] if the kernel may have reused the space after the cursor.
    pub fn resume(&mut self) -> Result<(), ReadError> {
        self.consumer.resume()
    }

    /// After [`ReadError::ConsumerPosMoved`]: adopt the other writer's position. See
    /// [`Consumer::follow`].
    pub fn follow(&mut self) {
        self.consumer.follow()
    }

    /// Skips everything written so far; returns the bytes skipped. See
    /// [`Consumer::resync`].
    pub fn resync(&mut self) -> usize {
        self.consumer.resync()
    }
}
