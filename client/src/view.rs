//! [`RingView`]: the ring at one epoch, immutable, with the members' details, for
//! lookups from any number of tasks; and [`KeyRange`], an arc of the ring.
//!
//! A view is never changed: the follower builds the next one from it and the next
//! event, and swaps the `Arc` readers take. A reader holding a view keeps a consistent
//! ring (its epoch, members and owners agree) however far the follower has moved on.

use ringside_events::{RingName, pb};
use ringside_ring::{Ring, RingConfig, RingError, Token, hash_key};

use crate::error::LookupError;

/// The ring at one epoch: members with their details, owners, checksum.
///
/// Before the first event of a ring without a snapshot (epoch 0), the configuration is
/// not known yet (the first `RingRebalanced` carries it): the view has no members and
/// [`RingView::ring`], [`RingView::config`] and [`RingView::checksum`] are `None`.
#[derive(Debug)]
pub struct RingView {
    name: RingName,
    epoch: u64,
    sequence: u64,
    membership_sequence: u64,
    /// `None` only at epoch 0 without a snapshot: no configuration yet.
    ring: Option<Ring>,
    /// Sorted by id (the contract's order, checked when events and snapshots decode).
    members: Vec<pb::Member>,
}

impl RingView {
    /// A view of `ring` (any epoch); `members` sorted by id, one per ring member.
    pub(crate) fn new(
        name: RingName,
        epoch: u64,
        sequence: u64,
        membership_sequence: u64,
        ring: Option<Ring>,
        members: Vec<pb::Member>,
    ) -> RingView {
        RingView {
            name,
            epoch,
            sequence,
            membership_sequence,
            ring,
            members,
        }
    }

    /// The ring's name.
    pub fn name(&self) -> &RingName {
        &self.name
    }

    /// The epoch (0: before the first rebalance).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// `RINGSIDE` stream sequence of this epoch's `RingRebalanced` (0 at epoch 0).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// `RINGSIDE` stream sequence of the last membership event folded into this ring.
    pub fn membership_sequence(&self) -> u64 {
        self.membership_sequence
    }

    /// The ring itself (for what this view does not wrap: shares, bounded loads), or
    /// `None` before the first event of a ring without a snapshot.
    pub fn ring(&self) -> Option<&Ring> {
        self.ring.as_ref()
    }

    /// The ring's configuration (`None`: not known yet, see [`RingView`]).
    pub fn config(&self) -> Option<&RingConfig> {
        self.ring.as_ref().map(Ring::config)
    }

    /// `Ring::checksum` of this epoch, the `checksum` of its `RingRebalanced`
    /// (`None`: no configuration yet, see [`RingView`]).
    pub fn checksum(&self) -> Option<u64> {
        self.ring.as_ref().map(Ring::checksum)
    }

    /// The members with their details (address, weight, uid, zone), sorted by id.
    pub fn members(&self) -> &[pb::Member] {
        &self.members
    }

    /// One member's details.
    pub fn member(&self, id: &str) -> Option<&pb::Member> {
        self.members
            .binary_search_by(|m| m.id.as_str().cmp(id))
            .ok()
            .and_then(|i| self.members.get(i))
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the ring has no members (every lookup fails).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The owner of `key`: the member of the first token at or after `hash_key(key)`.
    pub fn lookup(&self, key: &[u8]) -> Result<&pb::Member, LookupError> {
        let ring = self
            .ring
            .as_ref()
            .ok_or(LookupError::Ring(RingError::Empty))?;
        let id = ring.owner(key)?;
        self.details(id)
    }

    /// The owner of `key` and the next `n - 1` distinct members clockwise (its
    /// replicas), owner first. `n` over the member count is an error.
    pub fn successors(&self, key: &[u8], n: usize) -> Result<Vec<&pb::Member>, LookupError> {
        let ring = self
            .ring
            .as_ref()
            .ok_or(LookupError::Ring(RingError::Empty))?;
        ring.successors(key, n)?
            .into_iter()
            .map(|id| self.details(id))
            .collect()
    }

    fn details(&self, id: &str) -> Result<&pb::Member, LookupError> {
        self.member(id)
            .ok_or_else(|| LookupError::MissingDetails(id.to_owned()))
    }
}

/// An arc `(start, end]` of the ring, clockwise, wrapping past `u64::MAX`;
/// `start == end` is the whole ring (as in a `MovedRanges` entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyRange {
    /// Exclusive start: the position before the first one in the range.
    pub start: Token,
    /// Inclusive end.
    pub end: Token,
}

impl KeyRange {
    /// Whether the ring position `position` lies in the range.
    pub fn contains(&self, position: Token) -> bool {
        match self.start.cmp(&self.end) {
            std::cmp::Ordering::Equal => true,
            std::cmp::Ordering::Less => self.start < position && position <= self.end,
            // Wraps past the top of the ring.
            std::cmp::Ordering::Greater => position > self.start || position <= self.end,
        }
    }

    /// Whether `key` hashes into the range (`ringside_ring::hash_key`).
    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.contains(hash_key(key))
    }

    /// Number of positions in the range (`2^64` for the whole ring).
    pub fn width(&self) -> u128 {
        match self.end.wrapping_sub(self.start) {
            0 => 1 << 64,
            n => u128::from(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_contains_its_end_not_its_start() {
        let r = KeyRange { start: 10, end: 20 };
        assert!(!r.contains(10));
        assert!(r.contains(11));
        assert!(r.contains(20));
        assert!(!r.contains(21));
        assert_eq!(r.width(), 10);
    }

    #[test]
    fn a_range_wraps_past_the_top() {
        let r = KeyRange {
            start: u64::MAX - 1,
            end: 1,
        };
        assert!(r.contains(u64::MAX));
        assert!(r.contains(0));
        assert!(r.contains(1));
        assert!(!r.contains(2));
        assert!(!r.contains(u64::MAX - 1));
        assert_eq!(r.width(), 3);
    }

    #[test]
    fn equal_ends_are_the_whole_ring() {
        let r = KeyRange { start: 7, end: 7 };
        assert!(r.contains(7));
        assert!(r.contains(0));
        assert!(r.contains(u64::MAX));
        assert_eq!(r.width(), 1 << 64);
    }
}
