//! Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, 2018): each
//! key goes to the first member clockwise from its position whose load is below the
//! capacity `ceil(c * m / n)`, where `m` counts the assigned keys including the new one
//! and `n` the members. No member ever exceeds the capacity at the time it gets a key.

use crate::slots::slot_at;
use crate::{Ring, RingError, hash_key};

/// Key assignment with bounded loads over a borrowed ring.
#[derive(Clone, Debug)]
pub struct BoundedLoads<'r> {
    ring: &'r Ring,
    c: f64,
    /// Assigned keys per member index.
    loads: Vec<u64>,
    /// Sum of `loads`.
    assigned: u64,
}

impl<'r> BoundedLoads<'r> {
    /// Starts with no keys assigned; `c` (the load factor) must be finite and at least 1.
    pub fn new(ring: &'r Ring, c: f64) -> Result<Self, RingError> {
        if !(c.is_finite() && c >= 1.0) {
            return Err(RingError::InvalidConfig(format!(
                "the load factor c must be a finite number >= 1, got {c}"
            )));
        }
        if ring.is_empty() {
            return Err(RingError::Empty);
        }
        Ok(BoundedLoads {
            ring,
            c,
            loads: vec![0; ring.len()],
            assigned: 0,
        })
    }

    /// The capacity the next assigned key sees: `ceil(c * (m + 1) / n)` for `m` keys
    /// assigned now, and never below `ceil((m + 1) / n)` whatever float rounding does,
    /// so the members together always have room.
    pub fn capacity(&self) -> u64 {
        let m = self.assigned + 1;
        let n = self.loads.len() as u64;
        let bound = (self.c * m as f64 / n as f64).ceil() as u64;
        bound.max(m.div_ceil(n))
    }

    /// Assigns a key: the first member clockwise from its position below capacity.
    pub fn assign(&mut self, key: &[u8]) -> Result<&'r str, RingError> {
        self.assign_hash(hash_key(key))
    }

    /// [`BoundedLoads::assign`] for a ring position.
    pub fn assign_hash(&mut self, hash: u64) -> Result<&'r str, RingError> {
        let cap = self.capacity();
        let slots = self.ring.slots();
        let start = slot_at(slots, hash);
        // n * cap >= m exceeds the current total load and every member holds a token,
        // so one lap always finds a member with room.
        let owner = (0..slots.len())
            .map(|step| slots[(start + step) % slots.len()].owner as usize)
            .find(|&o| self.loads[o] < cap)
            .ok_or(RingError::Empty)?;
        self.loads[owner] += 1;
        self.assigned += 1;
        Ok(self.ring.id_at(owner))
    }

    /// Releases one key previously assigned to member `id`.
    pub fn release(&mut self, id: &str) -> Result<(), RingError> {
        let i = self
            .ring
            .member_index(id)
            .ok_or_else(|| RingError::UnknownMember(id.to_owned()))?;
        if self.loads[i] == 0 {
            return Err(RingError::NothingAssigned(id.to_owned()));
        }
        self.loads[i] -= 1;
        self.assigned -= 1;
        Ok(())
    }

    /// Keys currently assigned to member `id` (0 for an unknown id).
    pub fn load(&self, id: &str) -> u64 {
        self.ring.member_index(id).map_or(0, |i| self.loads[i])
    }

    /// Keys currently assigned in total.
    pub fn assigned(&self) -> u64 {
        self.assigned
    }

    /// The load factor `c`.
    pub fn factor(&self) -> f64 {
        self.c
    }
}
