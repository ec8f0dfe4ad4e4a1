//! [`Rebalance`]: one applied epoch as the follower hands it to subscribers, and the
//! ranges each member gained and lost in it.
//!
//! # Member indexes
//! A `RingRebalanced` names owners by index (`proto/ringside/v1/events.proto`):
//! `i < members.len()` is `members[i]` (the members *after* the epoch, sorted by id),
//! and `members.len() + j` is `departed[j]`. A moved range's `to` is always a member
//! after the epoch; its `from` is a member that stays (an index into `members`) or one
//! that left (into `departed`). `NO_OWNER` is nobody: the ring before (or after) was
//! empty. Resolving through the event's own lists, never the client's ring, is what
//! makes the answer right for members that just joined or left.

use ringside_events::event::NO_OWNER;
use ringside_events::pb;

use crate::view::KeyRange;

/// One epoch the follower applied: the stored event and its stream sequence.
///
/// Holds the decoded event, not the ring after it: a subscriber that lags keeps a few
/// events alive, not a ring per epoch. The ring after it is
/// [`crate::RingClient::ring`] (or a later one).
#[derive(Debug, Clone, PartialEq)]
pub struct Rebalance {
    sequence: u64,
    event: pb::RingRebalanced,
}

/// A range that changed owner in an epoch, with its owners resolved to member ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovedRange<'a> {
    /// The arc.
    pub range: KeyRange,
    /// Who owned it before (`None`: nobody, the ring was empty).
    pub from: Option<&'a str>,
    /// Who owns it now (`None`: nobody, the ring is empty).
    pub to: Option<&'a str>,
}

impl Rebalance {
    pub(crate) fn new(sequence: u64, event: pb::RingRebalanced) -> Rebalance {
        Rebalance { sequence, event }
    }

    /// The epoch this event made.
    pub fn epoch(&self) -> u64 {
        self.event.epoch
    }

    /// Its `RINGSIDE` stream sequence.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The ring's checksum after it.
    pub fn checksum(&self) -> u64 {
        self.event.checksum
    }

    /// The stored event (members after it with their details, joined, departed,
    /// token changes, moved ranges, fractions, checksums).
    pub fn event(&self) -> &pb::RingRebalanced {
        &self.event
    }

    /// The member id of an event member index (see the module docs).
    fn member_id(&self, index: u32) -> Option<&str> {
        if index == NO_OWNER {
            return None;
        }
        let index = index as usize;
        let members = &self.event.members;
        match index.checked_sub(members.len()) {
            None => members.get(index).map(|m| m.id.as_str()),
            Some(j) => self.event.departed.get(j).map(String::as_str),
        }
    }

    /// Every range that changed owner, in the event's order (sorted by end).
    pub fn moved(&self) -> impl Iterator<Item = MovedRange<'_>> {
        let moved = self.event.moved_ranges.as_ref();
        let column =
            |pick: fn(&pb::MovedRanges) -> &Vec<u64>| moved.map(pick).into_iter().flatten();
        let owners =
            |pick: fn(&pb::MovedRanges) -> &Vec<u32>| moved.map(pick).into_iter().flatten();
        // The decoder checks that the four columns have one length; zip would stop at
        // the shortest anyway.
        column(|m| &m.starts)
            .zip(column(|m| &m.ends))
            .zip(owners(|m| &m.from).zip(owners(|m| &m.to)))
            .map(|((&start, &end), (&from, &to))| MovedRange {
                range: KeyRange { start, end },
                from: self.member_id(from),
                to: self.member_id(to),
            })
    }

    /// The ranges `member` owns after this epoch and did not before.
    pub fn gained(&self, member: &str) -> Vec<KeyRange> {
        self.moved()
            .filter(|m| m.to == Some(member))
            .map(|m| m.range)
            .collect()
    }

    /// The ranges `member` owned before this epoch and does not any more.
    pub fn lost(&self, member: &str) -> Vec<KeyRange> {
        self.moved()
            .filter(|m| m.from == Some(member))
            .map(|m| m.range)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> pb::Member {
        pb::Member {
            id: id.to_owned(),
            address: format!("{id}:7000"),
            weight: 1,
            ..Default::default()
        }
    }

    /// b and c stay, a left, d joined: indexes 0 = b, 1 = c, 2 = d, 3 = a (departed).
    fn event() -> Rebalance {
        Rebalance::new(
            9,
            pb::RingRebalanced {
                epoch: 4,
                members: vec![member("b"), member("c"), member("d")],
                departed: vec!["a".into()],
                joined: vec!["d".into()],
                moved_ranges: Some(pb::MovedRanges {
                    starts: vec![u64::MAX - 5, 10, 30, 50],
                    ends: vec![5, 20, 40, 60],
                    from: vec![3, 3, 0, 1],
                    to: vec![2, 1, 2, 2],
                }),
                ..Default::default()
            },
        )
    }

    #[test]
    fn owners_resolve_through_members_then_departed() {
        let e = event();
        let moved: Vec<(Option<&str>, Option<&str>)> = e.moved().map(|m| (m.from, m.to)).collect();
        assert_eq!(
            moved,
            [
                (Some("a"), Some("d")),
                (Some("a"), Some("c")),
                (Some("b"), Some("d")),
                (Some("c"), Some("d")),
            ]
        );
    }

    #[test]
    fn gained_and_lost_per_member() {
        let e = event();
        let r = |start, end| KeyRange { start, end };
        assert_eq!(e.gained("d"), [r(u64::MAX - 5, 5), r(30, 40), r(50, 60)]);
        assert_eq!(e.gained("c"), [r(10, 20)]);
        assert_eq!(e.lost("c"), [r(50, 60)]);
        assert_eq!(e.lost("a"), [r(u64::MAX - 5, 5), r(10, 20)]);
        assert!(e.gained("a").is_empty());
        assert!(e.lost("d").is_empty());
        assert!(e.gained("nobody").is_empty());
    }

    #[test]
    fn no_owner_is_nobody() {
        let e = Rebalance::new(
            1,
            pb::RingRebalanced {
                epoch: 1,
                members: vec![member("a")],
                moved_ranges: Some(pb::MovedRanges {
                    starts: vec![3],
                    ends: vec![3],
                    from: vec![NO_OWNER],
                    to: vec![0],
                }),
                ..Default::default()
            },
        );
        let m: Vec<MovedRange<'_>> = e.moved().collect();
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].from, m[0].to), (None, Some("a")));
        assert_eq!(e.gained("a"), [KeyRange { start: 3, end: 3 }]);
    }
}
