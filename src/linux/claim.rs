//! One reader or producer per ring map in this process.
//!
//! A ring has one consumer and, for USER_RINGBUF, one producer: a second `RingBuf` on the same
//! map would publish `consumer_pos` past records the first still lends out, and a second
//! `UserRingBuf` would hand out overlapping reservations. The front end keeps a registry of
//! the map ids it has open and refuses a second one while the first lives. The claim is a
//! field of the [`RingMapping`](super::mapping::RingMapping) it guards, so it lives exactly as
//! long as the memory does.

use std::sync::Mutex;
use std::vec::Vec;

use super::error::OpenError;

/// Ids of the ring maps this process has a reader (RINGBUF) or producer (USER_RINGBUF) for.
static OPEN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// This process's claim on one ring map; released on drop.
#[derive(Debug)]
pub(crate) struct MapClaim {
    map_id: u32,
}

impl MapClaim {
    /// Claims `map_id`, or fails if this process already has it open.
    pub(crate) fn new(map_id: u32) -> Result<Self, OpenError> {
        let mut open = OPEN.lock().unwrap_or_else(|poison| poison.into_inner());
        if open.contains(&map_id) {
            return Err(OpenError::InUse { map_id });
        }
        open.push(map_id);
        Ok(Self { map_id })
    }

    /// The claimed map's id.
    pub(crate) fn map_id(&self) -> u32 {
        self.map_id
    }
}

impl Drop for MapClaim {
    fn drop(&mut self) {
        let mut open = OPEN.lock().unwrap_or_else(|poison| poison.into_inner());
        open.retain(|&id| id != self.map_id);
    }
}
