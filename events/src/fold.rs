//! The fold: ring state = fold(membership events). [`RingLedger`] is the pure,
//! synchronous state machine every reader of the stream shares.
//!
//! # How it fits
//! The reducer applies each membership event of the `RINGSIDE` stream, in stream order,
//! with [`RingLedger::apply`] and publishes the [`pb::RingRebalanced`] it returns;
//! `ringside replay` runs the very same fold to answer post-mortem questions; both
//! start from a [`pb::RingSnapshot`] ([`RingLedger::from_snapshot`]) to bound the work.
//!
//! Three ways to fold an event, by what the caller needs after it:
//! - [`RingLedger::apply`]: the epoch's event (the reducer past the stored history).
//! - [`RingLedger::advance`]: only the state, read after every epoch (`ringside replay
//!   key-history`); the ring changes in place.
//! - [`CatchUp::advance`]: only the state at the end of a run nobody reads in between
//!   (a reducer catching up with epochs already stored, a replay to a point). The
//!   caller says so by turning the ledger into a [`CatchUp`]
//!   ([`RingLedger::catch_up`]), whose ring changes in a form where a change costs the
//!   tokens it moves rather than the ring's size ([`RingBuilder`]), and turns it back
//!   with [`CatchUp::finish`], which builds the ring once. A catch-up has no ring to
//!   read, so no read can make a later change cost more, or less.
//!
//! Time never enters the fold: the ring depends on the order and content of the
//! events only, so the same events give the same ring, byte for byte, however they
//! are batched, restarted from snapshots or interleaved with other subjects.
//!
//! # Rules
//! - `MembersJoined` adds absent members, re-weights present members whose weight
//!   changed, and updates the details (address, uid, labels) of present ones.
//! - `MemberLeft` removes the member if present, unless both uids are set and differ
//!   (a late leave of an earlier incarnation must not remove the current one).
//! - `MembershipSynced` is the truth: members it does not list leave, listed ones
//!   join or update, all in one epoch.
//! - Within one event, removals apply first, in id order, then additions in id order
//!   (a re-weight is a removal and an addition). One event makes at most one epoch.
//! - An event that changes nothing is [`Outcome::Unchanged`]; one the fold cannot
//!   apply (weight 0, a member listed twice, not a membership fact) is
//!   [`Outcome::Rejected`] and leaves the ring as it was. Either way the ledger's
//!   position advances, so every fold skips it the same way.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use ringside_ring::{Edits, Member, Ring, RingBuilder, RingConfig, RingError};

use crate::convert::{self, ConvertError};
use crate::event::{Body, EventKind};
use crate::names::{NameError, RingName};
use crate::pb;

/// Why the fold cannot apply an event or load a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    /// The event is not a membership fact (only those change the ring).
    #[error("{0:?} is not a membership event")]
    NotMembership(EventKind),
    /// One event lists the same member id twice.
    #[error("member '{0}' is listed twice in one event")]
    DuplicateMember(String),
    /// The ring refused the change (weight 0, empty id, too many tokens...).
    #[error("the ring refused the change")]
    Ring(#[from] RingError),
    /// Building the rebalance event or reading a snapshot failed.
    #[error("cannot convert between the ring and its events")]
    Convert(#[from] ConvertError),
    /// A snapshot names an invalid ring.
    #[error("the snapshot's ring name is invalid")]
    RingName(#[from] NameError),
}

/// What one membership event did to the ledger. `E` is what a new epoch comes with:
/// its event ([`RingLedger::apply`]) or nothing ([`RingLedger::advance`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<E = Box<pb::RingRebalanced>> {
    /// The sequence was folded before (a redelivery): nothing to do.
    AlreadyFolded,
    /// A membership fact that changes nothing (a join of a present member, a leave of
    /// an absent one).
    Unchanged,
    /// A new epoch: publish this event.
    Rebalanced(E),
    /// The fold cannot apply the event; the ring is as it was.
    Rejected(FoldError),
}

/// The ring of one ring name, folded from its membership events.
#[derive(Debug, Clone, PartialEq)]
pub struct RingLedger {
    ring: Ring,
    book: Book,
}

/// A [`RingLedger`] folding a run of events that nobody reads in between (see the
/// module docs): it folds like [`RingLedger::advance`] and tells where it is, but has
/// no ring to read until [`CatchUp::finish`] gives the ledger back.
#[derive(Debug, Clone)]
pub struct CatchUp {
    ring: RingBuilder,
    book: Book,
}

/// What a ledger keeps besides its ring: the members' details and where the fold is.
#[derive(Debug, Clone, PartialEq)]
struct Book {
    name: RingName,
    /// Members with their details (address, uid, labels), by id: the ring's members.
    details: BTreeMap<String, pb::Member>,
    epoch: u64,
    membership_sequence: u64,
    rebalance_sequence: u64,
}

/// The membership change one event asks for, before it touches the ring.
struct Change {
    leave: BTreeSet<String>,
    upsert: BTreeMap<String, pb::Member>,
}

impl RingLedger {
    /// An empty ring at epoch 0 that has folded nothing yet.
    pub fn new(name: RingName, config: RingConfig) -> Self {
        Self {
            ring: Ring::new(config),
            book: Book {
                name,
                details: BTreeMap::new(),
                epoch: 0,
                membership_sequence: 0,
                rebalance_sequence: 0,
            },
        }
    }

    /// The ledger a snapshot describes (checked against its checksum).
    pub fn from_snapshot(snapshot: &pb::RingSnapshot) -> Result<Self, FoldError> {
        let ring = convert::snapshot_to_ring(snapshot)?;
        let details = snapshot
            .members
            .iter()
            .map(|m| (m.id.clone(), m.clone()))
            .collect();
        Ok(Self {
            ring,
            book: Book {
                name: RingName::new(snapshot.ring.as_str())?,
                details,
                epoch: snapshot.epoch,
                membership_sequence: snapshot.membership_sequence,
                rebalance_sequence: snapshot.rebalance_sequence,
            },
        })
    }

    /// A snapshot of the ledger (without `taken_at`: the caller stamps it).
    pub fn snapshot(&self) -> Result<pb::RingSnapshot, FoldError> {
        let details: Vec<pb::Member> = self.book.details.values().cloned().collect();
        let book = &self.book;
        Ok(convert::ring_to_snapshot(
            &book.name,
            &self.ring,
            &details,
            book.epoch,
            book.membership_sequence,
            book.rebalance_sequence,
        )?)
    }

    /// Folds the membership event stored at stream sequence `sequence`; a new epoch
    /// comes with its `RingRebalanced`.
    pub fn apply(&mut self, sequence: u64, body: &Body) -> Outcome {
        let ring = &mut self.ring;
        self.book.step(sequence, body, |book, change| {
            book.commit(ring, change, sequence).map(Box::new)
        })
    }

    /// [`RingLedger::apply`] without building the epoch's event: the same ledger
    /// afterwards, for a reader that needs the state after every epoch. The event of a
    /// large ring costs more than the change itself, and with no event to build, the
    /// ring changes in place. A run of events read only at its end goes faster through
    /// [`RingLedger::catch_up`].
    pub fn advance(&mut self, sequence: u64, body: &Body) -> Outcome<()> {
        let ring = &mut self.ring;
        self.book.step(sequence, body, |book, change| {
            // No event to build, so nothing to record.
            book.settle_with(change, |leave, join| {
                ring.change_recording(leave, join, &mut Edits::all())
            })
        })
    }

    /// Starts a run of events that nobody reads in between (see the module docs):
    /// the ledger becomes a [`CatchUp`], which [`CatchUp::finish`] turns back.
    pub fn catch_up(self) -> CatchUp {
        CatchUp {
            ring: RingBuilder::from(self.ring),
            book: self.book,
        }
    }

    /// Records the stream sequence at which the current epoch's event was stored.
    pub fn record_rebalance_sequence(&mut self, sequence: u64) {
        self.book.rebalance_sequence = sequence;
    }

    /// The ring name.
    pub fn ring_name(&self) -> &RingName {
        &self.book.name
    }

    /// The ring at the current epoch.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The current epoch (0 before the first change).
    pub fn epoch(&self) -> u64 {
        self.book.epoch
    }

    /// Stream sequence of the last membership event folded (0: none).
    pub fn membership_sequence(&self) -> u64 {
        self.book.membership_sequence
    }

    /// Stream sequence of the current epoch's `RingRebalanced` (0: not recorded).
    pub fn rebalance_sequence(&self) -> u64 {
        self.book.rebalance_sequence
    }

    /// The members with their details, sorted by id.
    pub fn members(&self) -> impl Iterator<Item = &pb::Member> {
        self.book.details.values()
    }

    /// The ring's checksum ([`Ring::checksum`]).
    pub fn checksum(&self) -> u64 {
        self.ring.checksum()
    }
}

impl CatchUp {
    /// Folds the membership event stored at stream sequence `sequence`, as
    /// [`RingLedger::advance`] does.
    pub fn advance(&mut self, sequence: u64, body: &Body) -> Outcome<()> {
        let ring = &mut self.ring;
        self.book.step(sequence, body, |book, change| {
            book.settle_with(change, |leave, join| ring.change(leave, join))
        })
    }

    /// Ends the run: the ledger, its ring built once.
    pub fn finish(self) -> RingLedger {
        RingLedger {
            ring: self.ring.build(),
            book: self.book,
        }
    }

    /// The current epoch (0 before the first change).
    pub fn epoch(&self) -> u64 {
        self.book.epoch
    }

    /// Stream sequence of the last membership event folded (0: none).
    pub fn membership_sequence(&self) -> u64 {
        self.book.membership_sequence
    }
}

impl Book {
    /// The fold of one event; `commit` makes a change the next epoch (or refuses it
    /// and leaves the ledger as it was).
    fn step<E>(
        &mut self,
        sequence: u64,
        body: &Body,
        commit: impl FnOnce(&mut Self, Change) -> Result<E, FoldError>,
    ) -> Outcome<E> {
        if sequence <= self.membership_sequence {
            return Outcome::AlreadyFolded;
        }
        // The position advances whatever the outcome: a skipped event is skipped by
        // every fold alike, and a redelivery of it is recognised.
        self.membership_sequence = sequence;
        let change = match self.change_for(body) {
            Ok(change) => change,
            Err(err) => return Outcome::Rejected(err),
        };
        if change.leave.is_empty() && change.upsert.is_empty() {
            return Outcome::Unchanged;
        }
        match commit(self, change) {
            Ok(event) => Outcome::Rebalanced(event),
            Err(err) => Outcome::Rejected(err),
        }
    }

    /// The change `body` asks for, reduced to what differs from the current state.
    fn change_for(&self, body: &Body) -> Result<Change, FoldError> {
        let (leave, listed): (BTreeSet<String>, &[pb::Member]) = match body {
            Body::MembersJoined(joined) => (BTreeSet::new(), &joined.members),
            Body::MemberLeft(left) => {
                let current = self.details.get(&left.member_id);
                let same_incarnation = match (current.and_then(|m| m.uid.as_ref()), &left.uid) {
                    (Some(ours), Some(theirs)) => ours == theirs,
                    _ => true,
                };
                let leave = (current.is_some() && same_incarnation)
                    .then(|| left.member_id.clone())
                    .into_iter()
                    .collect();
                (leave, &[])
            }
            Body::MembershipSynced(synced) => {
                let listed: BTreeSet<&str> = synced.members.iter().map(|m| m.id.as_str()).collect();
                let leave = self
                    .details
                    .keys()
                    .filter(|id| !listed.contains(id.as_str()))
                    .cloned()
                    .collect();
                (leave, &synced.members)
            }
            other => return Err(FoldError::NotMembership(EventKind::of(other))),
        };
        let mut upsert = BTreeMap::new();
        for member in listed {
            if upsert.insert(member.id.clone(), member.clone()).is_some() {
                return Err(FoldError::DuplicateMember(member.id.clone()));
            }
        }
        upsert.retain(|id, member| self.details.get(id) != Some(member));
        Ok(Change { leave, upsert })
    }

    /// Applies `change` to `ring` (all or nothing) and, if the ring accepts it and
    /// the event can be built from the rings before and after, makes it the next
    /// epoch. The ring before is a clone that shares the slots (the change builds new
    /// ones). The details are changed only once everything succeeded, and each
    /// member's details are copied once, into the event.
    fn commit(
        &mut self,
        ring: &mut Ring,
        change: Change,
        sequence: u64,
    ) -> Result<pb::RingRebalanced, FoldError> {
        let before = ring.clone();
        let mut edits = Edits::default();
        let (leave, join) = self.ring_steps(&change);
        ring.change_recording(leave, join, &mut edits)?;
        // The event fails only if the details and the ring disagree (a bug, not an
        // input): the ring goes back all the same.
        let event = convert::rebalanced_with_members(
            &before,
            ring,
            &edits,
            self.members_after(&change),
            self.epoch + 1,
            sequence,
        )
        .inspect_err(|_| *ring = before)?;
        self.settle(change);
        Ok(event)
    }

    /// The members after `change`, with their details, by id: the details without the
    /// leavers, with the upserted ones in place. One merge walk of two sorted maps (the
    /// event checks the result against the ring's members).
    fn members_after(&self, change: &Change) -> Vec<pb::Member> {
        let mut kept = self
            .details
            .iter()
            .filter(|(id, _)| !change.leave.contains(*id))
            .peekable();
        let mut upserted = change.upsert.iter().peekable();
        let mut out = Vec::with_capacity(self.details.len() + change.upsert.len());
        loop {
            let next = match (kept.peek(), upserted.peek()) {
                (None, None) => break,
                (Some(_), None) => kept.next(),
                (None, Some(_)) => upserted.next(),
                (Some((a, _)), Some((b, _))) => match a.cmp(b) {
                    Ordering::Less => kept.next(),
                    Ordering::Greater => upserted.next(),
                    // Upserted details replace the kept ones.
                    Ordering::Equal => {
                        kept.next();
                        upserted.next()
                    }
                },
            };
            out.extend(next.map(|(_, member)| member.clone()));
        }
        out
    }

    /// Applies `change` to the ring with `apply` (given the ring's part of it, see
    /// [`Book::ring_steps`]) and, if the ring accepts it, makes it the next epoch.
    fn settle_with(
        &mut self,
        change: Change,
        apply: impl FnOnce(Vec<&str>, Vec<Member>) -> Result<(), RingError>,
    ) -> Result<(), FoldError> {
        let (leave, join) = self.ring_steps(&change);
        apply(leave, join)?;
        self.settle(change);
        Ok(())
    }

    /// The ring's part of `change`: the members to remove (leavers and re-weighted
    /// members), then the members to add (newcomers and re-weighted members). The
    /// ring's members are those with details.
    fn ring_steps<'c>(&self, change: &'c Change) -> (Vec<&'c str>, Vec<Member>) {
        let reweighted = |m: &&pb::Member| {
            self.details
                .get(&m.id)
                .is_some_and(|old| old.weight != m.weight)
        };
        let leave = change
            .leave
            .iter()
            .map(String::as_str)
            .chain(
                change
                    .upsert
                    .values()
                    .filter(reweighted)
                    .map(|m| m.id.as_str()),
            )
            .collect();
        let join = change
            .upsert
            .values()
            .filter(|m| reweighted(m) || !self.details.contains_key(&m.id))
            .map(Member::from)
            .collect();
        (leave, join)
    }

    /// Makes `change` (already applied to the ring) the next epoch's membership.
    fn settle(&mut self, change: Change) {
        for id in &change.leave {
            self.details.remove(id);
        }
        self.details.extend(change.upsert);
        self.epoch += 1;
    }
}
