//! The fold: ring state = fold(membership events). [`RingLedger`] is the pure,
//! synchronous state machine every reader of the stream shares.
//!
//! # How it fits
//! The reducer applies each membership event of the `RINGSIDE` stream, in stream order,
//! with [`RingLedger::apply`] and publishes the [`pb::RingRebalanced`] it returns;
//! `ringside replay` runs the very same fold to answer post-mortem questions; both
//! start from a [`pb::RingSnapshot`] ([`RingLedger::from_snapshot`]) to bound the work.
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
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};

use ringside_ring::{Edits, LinkedRing, Member, Ring, RingConfig, RingError};

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
    name: RingName,
    ring: Working,
    /// Members with their details (address, uid, labels), by id.
    details: BTreeMap<String, pb::Member>,
    epoch: u64,
    membership_sequence: u64,
    rebalance_sequence: u64,
}

/// The ring in the form its last change left it. [`RingLedger::apply`] changes a
/// [`Ring`], which the event needs (before and after). [`RingLedger::advance`] changes
/// a [`LinkedRing`] (balanced rings) once advances come in a run that nobody reads
/// between: such a run costs the tokens each change moves, not the ring's size each
/// time, and the `Ring` is built once, when something asks for it. A reader of every
/// epoch (`ringside replay key-history`) would have it built every time, which costs
/// more than changing the `Ring` itself: advances go on with the `Ring` when it is read
/// between them.
#[derive(Debug, Clone)]
enum Working {
    /// The ring, and the advances made on it since it was last read.
    Ring(Ring, Unread),
    /// The linked ring and, once asked for, the `Ring` it makes.
    Linked(Box<LinkedRing>, OnceLock<Ring>),
}

/// Advances on a `Ring` nobody read after which the ledger moves to a `LinkedRing`.
const UNREAD_RUN: u32 = 16;

/// A count of advances since the ring was read (reading resets it through `&self`).
#[derive(Debug, Default)]
struct Unread(AtomicU32);

impl Clone for Unread {
    fn clone(&self) -> Self {
        Unread(AtomicU32::new(self.0.load(AtomicOrdering::Relaxed)))
    }
}

impl Working {
    fn new(ring: Ring) -> Working {
        Working::Ring(ring, Unread::default())
    }

    fn ring(&self) -> &Ring {
        match self {
            Working::Ring(ring, unread) => {
                unread.0.store(0, AtomicOrdering::Relaxed);
                ring
            }
            Working::Linked(linked, ring) => ring.get_or_init(|| linked.to_ring()),
        }
    }

    /// The ring as a `Ring`, to change.
    fn ring_mut(&mut self) -> &mut Ring {
        if let Working::Linked(linked, ring) = self {
            let ring = ring.take().unwrap_or_else(|| linked.to_ring());
            *self = Working::new(ring);
        }
        let Working::Ring(ring, _) = self else {
            unreachable!("the linked ring was replaced just above")
        };
        ring
    }

    /// The ring as a `LinkedRing` to advance, or `None` to advance the `Ring`: a random
    /// ring, or one read within the last [`UNREAD_RUN`] advances.
    fn linked_mut(&mut self) -> Option<&mut LinkedRing> {
        match self {
            Working::Linked(_, ring) => {
                // Built since the last advance: someone reads between advances.
                if let Some(read) = ring.take() {
                    *self = Working::new(read);
                }
            }
            Working::Ring(ring, unread) => {
                if unread.0.fetch_add(1, AtomicOrdering::Relaxed) >= UNREAD_RUN - 1 {
                    let linked = LinkedRing::from_ring(ring)?;
                    *self = Working::Linked(Box::new(linked), OnceLock::new());
                }
            }
        }
        match self {
            Working::Linked(linked, _) => Some(linked),
            Working::Ring(..) => None,
        }
    }

    fn contains(&self, id: &str) -> bool {
        match self {
            Working::Ring(ring, _) => ring.contains(id),
            Working::Linked(linked, _) => linked.contains(id),
        }
    }
}

impl PartialEq for Working {
    fn eq(&self, other: &Self) -> bool {
        self.ring() == other.ring()
    }
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
            name,
            ring: Working::new(Ring::new(config)),
            details: BTreeMap::new(),
            epoch: 0,
            membership_sequence: 0,
            rebalance_sequence: 0,
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
            name: RingName::new(snapshot.ring.as_str())?,
            ring: Working::new(ring),
            details,
            epoch: snapshot.epoch,
            membership_sequence: snapshot.membership_sequence,
            rebalance_sequence: snapshot.rebalance_sequence,
        })
    }

    /// A snapshot of the ledger (without `taken_at`: the caller stamps it).
    pub fn snapshot(&self) -> Result<pb::RingSnapshot, FoldError> {
        let details: Vec<pb::Member> = self.details.values().cloned().collect();
        Ok(convert::ring_to_snapshot(
            &self.name,
            self.ring.ring(),
            &details,
            self.epoch,
            self.membership_sequence,
            self.rebalance_sequence,
        )?)
    }

    /// Folds the membership event stored at stream sequence `sequence`; a new epoch
    /// comes with its `RingRebalanced`.
    pub fn apply(&mut self, sequence: u64, body: &Body) -> Outcome {
        self.step(sequence, body, |ledger, change| {
            ledger.commit(change, sequence).map(Box::new)
        })
    }

    /// [`RingLedger::apply`] without building the epoch's event: the same ledger
    /// afterwards, for a reader that only needs the state (a reducer catching up with
    /// epochs already stored, a replay to a point). The event of a large ring costs more
    /// than the change itself, and with no event to build, the ring changes in place:
    /// after a run of advances nobody reads between, a balanced ring changes as a
    /// [`LinkedRing`] (see `Working`), and [`RingLedger::ring`] builds the `Ring` once.
    pub fn advance(&mut self, sequence: u64, body: &Body) -> Outcome<()> {
        self.step(sequence, body, Self::commit_in_place)
    }

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

    /// Applies `change` to the ring (all or nothing) and, if the ring accepts it and
    /// the event can be built from the rings before and after, makes it the next
    /// epoch. The ring before is a clone that shares the slots (the change builds new
    /// ones). The details map is changed only once everything succeeded, and each
    /// member's details are copied once, into the event.
    fn commit(&mut self, change: Change, sequence: u64) -> Result<pb::RingRebalanced, FoldError> {
        let before = self.ring.ring_mut().clone();
        let mut edits = Edits::default();
        let (leave, join) = self.ring_steps(&change);
        self.ring
            .ring_mut()
            .change_recording(leave, join, &mut edits)?;
        // The event fails only if the details and the ring disagree (a bug, not an
        // input): the ring goes back all the same.
        let event = self
            .event(&before, &change, &edits, sequence)
            .inspect_err(|_| self.ring = Working::new(before))?;
        self.settle(change);
        Ok(event)
    }

    /// The event of the new epoch `change` made of the ring `before`.
    fn event(
        &self,
        before: &Ring,
        change: &Change,
        edits: &Edits,
        sequence: u64,
    ) -> Result<pb::RingRebalanced, FoldError> {
        Ok(convert::rebalanced_with_members(
            before,
            self.ring.ring(),
            edits,
            self.members_after(change),
            self.epoch + 1,
            sequence,
        )?)
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

    /// [`RingLedger::commit`] with no event to build, so no ring to keep from before.
    fn commit_in_place(&mut self, change: Change) -> Result<(), FoldError> {
        let (leave, join) = self.ring_steps(&change);
        match self.ring.linked_mut() {
            Some(linked) => linked.change(leave, join)?,
            // No event to build, so nothing to record.
            None => self
                .ring
                .ring_mut()
                .change_recording(leave, join, &mut Edits::all())?,
        }
        self.settle(change);
        Ok(())
    }

    /// The ring's part of `change`: the members to remove (leavers and re-weighted
    /// members), then the members to add (newcomers and re-weighted members).
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
            .filter(|m| reweighted(m) || !self.ring.contains(&m.id))
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

    /// Records the stream sequence at which the current epoch's event was stored.
    pub fn record_rebalance_sequence(&mut self, sequence: u64) {
        self.rebalance_sequence = sequence;
    }

    /// The ring name.
    pub fn ring_name(&self) -> &RingName {
        &self.name
    }

    /// The ring at the current epoch.
    pub fn ring(&self) -> &Ring {
        self.ring.ring()
    }

    /// The current epoch (0 before the first change).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Stream sequence of the last membership event folded (0: none).
    pub fn membership_sequence(&self) -> u64 {
        self.membership_sequence
    }

    /// Stream sequence of the current epoch's `RingRebalanced` (0: not recorded).
    pub fn rebalance_sequence(&self) -> u64 {
        self.rebalance_sequence
    }

    /// The members with their details, sorted by id.
    pub fn members(&self) -> impl Iterator<Item = &pb::Member> {
        self.details.values()
    }

    /// The ring's checksum ([`Ring::checksum`]).
    pub fn checksum(&self) -> u64 {
        self.ring.ring().checksum()
    }
}
