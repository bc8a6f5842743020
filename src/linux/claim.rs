//! One reader or writer per ring map in this process.
//!
//! A ring has one consumer and, for USER_RINGBUF, one producer: a second `RingBuf` on the same
//! map would publish `consumer_pos` past records the first still lends out, and a second
//! `UserRingBuf` would hand out overlapping reservations. The front end keeps a registry of
//! the map ids it has open and refuses a second one while the first lives.

use std::sync::Mutex;
use std::vec::Vec;

use crate::Error;

/// Ids of the ring maps this process has a reader (RINGBUF) or producer (USER_RINGBUF) for.
static OPEN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Which side of a ring a claim is for (it only chooses the error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The consumer of a RINGBUF (zero-copy or overwrite mode).
    Reader,
    /// The producer of a USER_RINGBUF.
    Producer,
}

/// This process's claim on one ring map; released on drop.
#[derive(Debug)]
pub(crate) struct MapClaim {
    pub(crate) map_id: u32,
}

impl MapClaim {
    /// Claims `map_id`, or fails if this process already has it open.
    pub(crate) fn new(map_id: u32, role: Role) -> Result<Self, Error> {
        let mut open = OPEN.lock().unwrap_or_else(|poison| poison.into_inner());
        if open.contains(&map_id) {
            return Err(match role {
                Role::Reader => Error::ReaderExists { map_id },
                Role::Producer => Error::ProducerExists { map_id },
            });
        }
        open.push(map_id);
        Ok(Self { map_id })
    }
}

impl Drop for MapClaim {
    fn drop(&mut self) {
        let mut open = OPEN.lock().unwrap_or_else(|poison| poison.into_inner());
        open.retain(|&id| id != self.map_id);
    }
}
