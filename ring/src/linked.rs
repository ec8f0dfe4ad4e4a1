//! A balanced ring kept for runs of changes ([`LinkedRing`]): each token is a node
//! linked to its neighbours, so a change costs the pieces it moves, not the size of the
//! ring.
//!
//! A `Ring` keeps its tokens in one sorted list, which lookups, checksums and events
//! need: every change builds a new list, and its tables find the arcs a change touched
//! by searching. A run of changes with nothing asked of the rings in between (a fold
//! catching up with epochs already stored, a ring built from a member list, a
//! membership sync of many members) would spend most of its time there. A `LinkedRing`
//! plans each join and leave with the same code as a `Ring` (through [`Layout`]), each
//! arc carrying the node of its token, then inserts, re-owns and drops only the nodes
//! the pieces touch, and updates the tables at those nodes alone.
//! [`LinkedRing::into_parts`] gives back the members and slots of the ring the same
//! changes make.
//!
//! The rules of a change are the `Ring`'s (`docs/ring-spec.md` 6): each piece's end
//! becomes a token of its new owner (replacing a token at that position), then every
//! token followed by one of its own owner is dropped. A ring of one member or none
//! holds one token or none, so the changes that reach or leave it (a first join, a leave
//! from two members or one) set it directly. A step is checked as a `Ring` checks it,
//! with the same errors.
//!
//! # How it fits
//! `Ring::change_recording` makes a change of many steps on a `LinkedRing` built for
//! it; `RingBuilder` keeps one across changes. Nothing outside the crate sees it.

use crate::balanced::{self, Layout};
use crate::derived::{LINKED_TOP, MemberArcs};
use crate::members::{check_join, index_by_id};
use crate::plan::{Piece, Who};
use crate::slots::{ArcSpan, RING, Slot};
use crate::{MAX_TOKENS, Member, RingConfig, RingError, Token};

/// No node: the `prev` of a free node, the `pos` of a node whose arc is not listed.
const NONE: u32 = u32::MAX;

/// A balanced ring as a cyclic linked list of tokens (see the module docs). Nodes are
/// numbered; a node's fields sit at its number in each vector.
#[derive(Clone, Debug)]
pub(crate) struct LinkedRing {
    config: RingConfig,
    /// Sorted by id: plans name members by index in this list.
    members: Vec<Member>,
    /// Each member's slot, by index. A node's owner is a slot, which stays the
    /// member's while it is in the ring: a join or leave renumbers the members after
    /// it, not every token.
    slot_of: Vec<u32>,
    /// Each slot's member index ([`NONE`] for a free slot).
    index_of: Vec<u32>,
    /// Free slots, for the next joiners.
    free_slots: Vec<u32>,
    token: Vec<Token>,
    /// The slot of the node's owner.
    owner: Vec<u32>,
    /// The node before (counter-clockwise); [`NONE`] for a free node.
    prev: Vec<u32>,
    /// The node after (clockwise).
    next: Vec<u32>,
    /// Where the node's arc is in its owner's list of arcs; [`NONE`] while a change has
    /// taken it out.
    pos: Vec<u32>,
    /// Free node numbers, for the next inserted tokens.
    free: Vec<u32>,
    /// Live nodes: the ring's tokens.
    live: usize,
    /// Sum of the members' weights.
    total_weight: u128,
    /// Owned arc length per member index.
    own: Vec<u128>,
    /// Arcs per slot, each with the node of its token.
    arcs: Vec<MemberArcs<u32, LINKED_TOP>>,
}

impl LinkedRing {
    /// The linked form of the balanced ring of `config`, `members` (sorted by id) and
    /// `slots` (sorted by position, owners indexing `members`).
    pub(crate) fn new(config: RingConfig, members: Vec<Member>, slots: &[Slot]) -> LinkedRing {
        let t = slots.len() as u32;
        let n = members.len();
        let total_weight = members.iter().map(|m| u128::from(m.weight)).sum();
        let mut linked = LinkedRing {
            config,
            // Slots start as the indices.
            slot_of: (0..n as u32).collect(),
            index_of: (0..n as u32).collect(),
            members,
            free_slots: Vec::new(),
            token: slots.iter().map(|s| s.token).collect(),
            owner: slots.iter().map(|s| s.owner).collect(),
            prev: (0..t).map(|i| if i == 0 { t - 1 } else { i - 1 }).collect(),
            next: (0..t).map(|i| if i + 1 == t { 0 } else { i + 1 }).collect(),
            pos: vec![NONE; t as usize],
            free: Vec::new(),
            live: t as usize,
            total_weight,
            own: vec![0; n],
            arcs: vec![MemberArcs::default(); n],
        };
        for x in 0..t {
            linked.attach(x);
        }
        linked
    }

    /// The ring's configuration.
    pub(crate) fn config(&self) -> RingConfig {
        self.config
    }

    /// The members (sorted by id) and slots (sorted by position) of the ring: those the
    /// same changes make on a `Ring`.
    pub(crate) fn into_parts(self) -> (Vec<Member>, Vec<Slot>) {
        // The live nodes in the order they are stored, then sorted by position (all
        // distinct): a walk along the links would visit the nodes in no order memory
        // likes.
        let mut slots: Vec<Slot> = (0..self.token.len())
            .filter(|&x| self.prev[x] != NONE)
            .map(|x| Slot {
                token: self.token[x],
                owner: self.index_of[self.owner[x] as usize],
            })
            .collect();
        slots.sort_unstable_by_key(|s| s.token);
        (self.members, slots)
    }

    /// Removes the `leave` members, then adds the `join` members, in the order given,
    /// all or nothing, as `Ring::change_recording` does (with the same errors).
    pub(crate) fn change<'a>(
        &mut self,
        leave: impl IntoIterator<Item = &'a str>,
        join: impl IntoIterator<Item = Member>,
    ) -> Result<(), RingError> {
        let leave: Vec<&str> = leave.into_iter().collect();
        let join: Vec<Member> = join.into_iter().collect();
        if self.certain(&leave, &join) {
            return self.steps(&leave, join);
        }
        // A step may fail: the steps go to a copy, so that a failure leaves this ring as
        // it was.
        let mut next = self.clone();
        next.steps(&leave, join)?;
        *self = next;
        Ok(())
    }

    /// Removes the `leave` members, then adds the `join` members, one step at a time,
    /// each checked as a `Ring` checks it; stops at the first step that fails, with its
    /// error (the steps before it made).
    pub(crate) fn steps(&mut self, leave: &[&str], join: Vec<Member>) -> Result<(), RingError> {
        for &id in leave {
            let leaver = index_by_id(&self.members, id)
                .ok_or_else(|| RingError::UnknownMember(id.to_owned()))?;
            match self.members.len() {
                // The last member leaves: the ring is empty.
                1 => *self = LinkedRing::new(self.config, Vec::new(), &[]),
                2 => self.leave_one_behind(leaver),
                _ => self.remove(leaver),
            }
        }
        for member in join {
            let at = check_join(&self.config, &self.members, &member)?;
            if self.members.is_empty() {
                // The first member: one token at the last position (spec 6.2).
                let first = Slot {
                    token: Token::MAX,
                    owner: 0,
                };
                *self = LinkedRing::new(self.config, vec![member], &[first]);
            } else {
                self.add(member, at)?;
            }
        }
        Ok(())
    }

    /// Whether no step of the change can fail: the leavers are distinct members, the
    /// joiners valid and distinct and not members once the leavers are gone, and no
    /// join can pass [`MAX_TOKENS`].
    ///
    /// The token bound: a join adds at most one token per donor, and it has at most
    /// `min(vnodes * weight, members)` donors (what `plan_join` checks); the first
    /// member gets one token. A leave adds fewer than `members` tokens: each arc of the
    /// leaver is cut into pieces, one piece's end is the leaver's own token (given away,
    /// not added), the left neighbour's token before the arc becomes redundant when it
    /// takes a left part, and the cuts of the rest between recipients are at most one
    /// per recipient.
    fn certain(&self, leave: &[&str], join: &[Member]) -> bool {
        if self.config.validate().is_err() {
            return false;
        }
        let n = self.members.len();
        let mut gone: Vec<usize> = Vec::with_capacity(leave.len());
        for id in leave {
            match index_by_id(&self.members, id) {
                Some(i) => gone.push(i),
                None => return false,
            }
        }
        gone.sort_unstable();
        if gone.windows(2).any(|w| w[0] == w[1]) {
            return false;
        }
        let stay = n - gone.len();
        let mut ids: Vec<&str> = join.iter().map(|m| m.id.as_str()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return false;
        }
        let present = |m: &Member| {
            index_by_id(&self.members, &m.id).is_some_and(|i| gone.binary_search(&i).is_err())
        };
        if join.iter().any(|m| m.validate().is_err() || present(m)) {
            return false;
        }
        let donors = |(members, m): (u64, &Member)| {
            (u64::from(self.config.vnodes) * u64::from(m.weight))
                .min(members)
                .max(1)
        };
        let joins: u64 = (stay as u64..).zip(join).map(donors).sum();
        let tokens = self.live as u64 + (gone.len() * n) as u64 + joins;
        tokens <= MAX_TOKENS as u64
    }

    /// The leave of member index `leaver` from a ring of two members: the other keeps
    /// one token, at the highest position (spec 6.1: of a ring whose tokens all belong
    /// to one member, only the last stays). No plan is needed: the other member's cap
    /// (129/128 of the ring) has room for every arc of the leaver, whole, so the pieces
    /// end at the leaver's own tokens.
    fn leave_one_behind(&mut self, leaver: usize) {
        let last = (0..self.token.len() as u32)
            .filter(|&x| self.is_live(x))
            .map(|x| self.token[x as usize])
            .max();
        let survivor = self.members.swap_remove(1 - leaver);
        let slots: Vec<Slot> = last
            .map(|token| Slot { token, owner: 0 })
            .into_iter()
            .collect();
        *self = LinkedRing::new(self.config, vec![survivor], &slots);
    }

    /// The leave of member index `leaver` from a ring that keeps two members or more.
    fn remove(&mut self, leaver: usize) {
        let pieces = balanced::plan_leave(self, leaver);
        let slot = self.slot_of[leaver];
        // Every arc of the leaver goes: unlisted at once. One by one, largest first
        // (the order of the pieces), each would search the rest for the largest.
        for node in self.arcs[slot as usize].take_handles() {
            self.pos[node as usize] = NONE;
        }
        self.own[leaver] = 0;
        // A leave's pieces all go to surviving members, named by index before the leave.
        let slot_of = std::mem::take(&mut self.slot_of);
        self.apply(&pieces, |who| match who {
            Who::Member(o) => slot_of[o as usize],
            Who::Joiner | Who::Nobody => 0,
        });
        self.slot_of = slot_of;
        debug_assert_eq!(self.arcs[slot as usize].len(), 0, "the leaver got arcs");
        let gone = self.members.remove(leaver);
        self.total_weight -= u128::from(gone.weight);
        self.own.remove(leaver);
        self.slot_of.remove(leaver);
        self.index_of[slot as usize] = NONE;
        self.free_slots.push(slot);
        self.renumber(leaver);
    }

    /// The join of `member`, checked, at index `at` of the member list, to a ring of
    /// one member or more.
    fn add(&mut self, member: Member, at: usize) -> Result<(), RingError> {
        let pieces = balanced::plan_join(self, member.weight)?;
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.arcs.push(MemberArcs::default());
                self.index_of.push(NONE);
                (self.arcs.len() - 1) as u32
            }
        };
        self.total_weight += u128::from(member.weight);
        self.members.insert(at, member);
        self.own.insert(at, 0);
        self.slot_of.insert(at, slot);
        self.renumber(at);
        // A join's pieces all go to the joiner.
        self.apply(&pieces, |_| slot);
        Ok(())
    }

    /// Brings `index_of` up to date for the members from index `from` on.
    fn renumber(&mut self, from: usize) {
        for (i, &slot) in self.slot_of.iter().enumerate().skip(from) {
            self.index_of[slot as usize] = i as u32;
        }
    }

    /// Gives every piece's range to its new owner (`to`: its slot), drops the tokens
    /// that became redundant, and updates the tables at the nodes whose arcs changed.
    fn apply(&mut self, pieces: &[Piece], to: impl Fn(Who) -> u32) {
        // A piece ends inside the arc of its node `at`: at the node's own position (the
        // node changes owner) or before it (a new node, inserted just before `at`). An
        // arc may hold several ends; the plans list those before the node in clockwise
        // order (a leave's left part, then its cuts of the rest), so each new node
        // goes after the ones inserted before it.
        let mut changed = Vec::with_capacity(pieces.len() * 2);
        for piece in pieces {
            let (at, position, owner) = (piece.at, piece.end, to(piece.to));
            if self.token[at as usize] == position {
                self.detach(at);
                self.owner[at as usize] = owner;
            } else {
                let old = self.arc(at);
                debug_assert!(
                    old.len == RING || u128::from(position.wrapping_sub(old.start)) < old.len,
                    "a piece ends outside what is left of its arc"
                );
                changed.push(self.insert_before(at, position, owner));
                self.shrink(at, &old);
            }
            changed.push(at);
        }
        // Only a changed node or the one before it can have become redundant. Dropping
        // a token leaves the owners of the tokens that follow as they were, so the
        // order of the drops does not matter.
        let mut k = 0;
        while let Some(&x) = changed.get(k) {
            k += 1;
            if !self.is_live(x) {
                continue;
            }
            for c in [self.prev[x as usize], x] {
                let after = self.next[c as usize];
                if after != c && self.owner[after as usize] == self.owner[c as usize] {
                    self.detach(c);
                    self.detach(after);
                    self.unlink(c);
                    changed.push(after);
                }
            }
        }
        for x in changed {
            if self.is_live(x) && self.pos[x as usize] == NONE {
                self.attach(x);
            }
        }
    }

    fn is_live(&self, x: u32) -> bool {
        self.prev[x as usize] != NONE
    }

    /// A new node at `position`, owned by `owner`, just before node `at`.
    fn insert_before(&mut self, at: u32, position: Token, owner: u32) -> u32 {
        let before = self.prev[at as usize];
        let x = match self.free.pop() {
            Some(x) => {
                let i = x as usize;
                (self.token[i], self.owner[i]) = (position, owner);
                (self.prev[i], self.next[i], self.pos[i]) = (before, at, NONE);
                x
            }
            None => {
                self.token.push(position);
                self.owner.push(owner);
                self.prev.push(before);
                self.next.push(at);
                self.pos.push(NONE);
                (self.token.len() - 1) as u32
            }
        };
        self.next[before as usize] = x;
        self.prev[at as usize] = x;
        self.live += 1;
        x
    }

    /// Takes node `x` (not the only one, its arc not listed) out of the ring.
    fn unlink(&mut self, x: u32) {
        let (before, after) = (self.prev[x as usize], self.next[x as usize]);
        self.next[before as usize] = after;
        self.prev[after as usize] = before;
        // Free nodes own nothing: renumbering leaves them alone.
        self.prev[x as usize] = NONE;
        self.free.push(x);
        self.live -= 1;
    }

    /// The arc of node `x`: from the token before it to its own.
    fn arc(&self, x: u32) -> ArcSpan {
        let before = self.prev[x as usize];
        let (start, end) = (self.token[before as usize], self.token[x as usize]);
        let len = if before == x {
            RING
        } else {
            u128::from(end.wrapping_sub(start))
        };
        ArcSpan { start, end, len }
    }

    /// Adds node `x`'s arc to its owner's share and list.
    fn attach(&mut self, x: u32) {
        let arc = self.arc(x);
        let slot = self.owner[x as usize] as usize;
        self.own[self.index_of[slot] as usize] += arc.len;
        self.pos[x as usize] = self.arcs[slot].insert(&arc, x) as u32;
    }

    /// Updates the tables after node `x`'s arc lost its front to a node inserted before
    /// it (if the arc is listed): `old` is the arc it had.
    fn shrink(&mut self, x: u32, old: &ArcSpan) {
        let i = self.pos[x as usize];
        if i == NONE {
            return;
        }
        let arc = self.arc(x);
        let slot = self.owner[x as usize] as usize;
        self.own[self.index_of[slot] as usize] -= old.len - arc.len;
        self.arcs[slot].shrink(i as usize, &arc);
    }

    /// Takes node `x`'s arc out of its owner's share and list, before a change alters
    /// it (if it is listed).
    fn detach(&mut self, x: u32) {
        let i = self.pos[x as usize];
        if i == NONE {
            return;
        }
        let arc = self.arc(x);
        let slot = self.owner[x as usize] as usize;
        self.own[self.index_of[slot] as usize] -= arc.len;
        if let Some(moved) = self.arcs[slot].remove_at(i as usize) {
            self.pos[moved as usize] = i;
        }
        self.pos[x as usize] = NONE;
    }
}

/// The plans read the tables kept here; arcs carry their nodes, so a leaver's
/// neighbours are the nodes beside it.
impl Layout for LinkedRing {
    fn members(&self) -> &[Member] {
        &self.members
    }

    fn own(&self) -> &[u128] {
        &self.own
    }

    fn token_count(&self) -> usize {
        self.live
    }

    fn vnodes(&self) -> u32 {
        self.config.vnodes
    }

    fn total_weight(&self) -> u128 {
        self.total_weight
    }

    fn largest(&self, m: u32) -> Option<(ArcSpan, u32)> {
        self.arcs[self.slot_of[m as usize] as usize].largest()
    }

    fn largest_first(&self, m: u32) -> Vec<(ArcSpan, u32)> {
        self.arcs[self.slot_of[m as usize] as usize].largest_first()
    }

    fn largest_first_lazily(&self, m: u32) -> impl Iterator<Item = (ArcSpan, u32)> {
        self.arcs[self.slot_of[m as usize] as usize].largest_first_lazily()
    }

    fn beside(&self, _: Token, at: u32) -> (u32, u32) {
        let (before, after) = (self.prev[at as usize], self.next[at as usize]);
        let index = |node: u32| self.index_of[self.owner[node as usize] as usize];
        (index(before), index(after))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{Edits, Ring, Strategy as Placement};

    /// The linked form of `ring`.
    fn linked(ring: &Ring) -> LinkedRing {
        LinkedRing::new(
            *ring.config(),
            ring.members().cloned().collect(),
            ring.slots(),
        )
    }

    /// The ring `linked` holds.
    fn ring(linked: &LinkedRing) -> Ring {
        let (members, slots) = linked.clone().into_parts();
        Ring::with_slots(linked.config, members, slots)
    }

    /// The tables of `linked` equal those of its ring computed afresh.
    fn check_tables(linked: &LinkedRing) {
        let fresh = self::linked(&ring(linked));
        assert_eq!(linked.own, fresh.own, "ownership");
        assert_eq!(linked.total_weight, fresh.total_weight, "total weight");
        assert_eq!(linked.live, fresh.live, "tokens");
        for m in 0..linked.members.len() as u32 {
            let spans = |l: &LinkedRing| -> Vec<ArcSpan> {
                l.largest_first(m).into_iter().map(|a| a.0).collect()
            };
            assert_eq!(spans(linked), spans(&fresh), "arcs of member {m}");
            assert_eq!(
                linked.largest(m).map(|a| a.0),
                fresh.largest(m).map(|a| a.0)
            );
            for (arc, node) in linked.largest_first(m) {
                assert_eq!(linked.arc(node), arc, "the node of an arc of member {m}");
                assert_eq!(linked.index_of[linked.owner[node as usize] as usize], m);
            }
        }
    }

    /// Leaves (by position in the member list) and joins (id, weight) of one change.
    type Step = (Vec<u8>, Vec<(u8, u32)>);

    /// Steps of up to three leaves and three joins (ids `0..12`, weights 0 to 3): rings
    /// of a few members, emptied and started again, and some refused changes.
    fn steps() -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
        let leave = prop::collection::vec(any::<u8>(), 0..3);
        let join = prop::collection::vec((0u8..12, 0u32..4), 0..3);
        prop::collection::vec((leave, join), 1..40)
    }

    proptest! {
        #[test]
        fn changes_make_the_ring_a_ring_makes(vnodes in 1u32..24, steps in steps()) {
            let config = RingConfig::new(Placement::Balanced, vnodes).unwrap();
            let mut ring = Ring::new(config);
            let mut linked = self::linked(&ring);
            for (leave, join) in steps {
                let ids: Vec<String> = ring.members().map(|m| m.id.clone()).collect();
                let leave: Vec<&str> = leave
                    .iter()
                    .filter(|_| !ids.is_empty())
                    .map(|&i| ids[usize::from(i) % ids.len()].as_str())
                    .collect();
                let join: Vec<Member> = join
                    .into_iter()
                    .map(|(id, weight)| Member::new(format!("m{id}"), weight))
                    .collect();
                let expected = ring.change_recording(
                    leave.iter().copied(),
                    join.clone(),
                    &mut Edits::all(),
                );
                let got = linked.change(leave.iter().copied(), join);
                prop_assert_eq!(got, expected);
                prop_assert_eq!(&self::ring(&linked), &ring);
                check_tables(&linked);
            }
        }
    }

    #[test]
    fn a_long_churn_makes_the_ring_a_ring_makes() {
        let config = RingConfig::new(Placement::Balanced, 16).unwrap();
        let mut ring = Ring::new(config);
        for i in 0..120 {
            ring.add(Member::new(format!("m{i}"), 1 + i % 3)).unwrap();
        }
        let mut linked = self::linked(&ring);
        for step in 0..400usize {
            let id = ring
                .members()
                .nth((step * 7919) % ring.len())
                .unwrap()
                .id
                .clone();
            let join = Member::new(format!("j{step}"), 1 + (step % 3) as u32);
            ring.change_recording([id.as_str()], [join.clone()], &mut Edits::all())
                .unwrap();
            linked.change([id.as_str()], [join]).unwrap();
            assert_eq!(self::ring(&linked), ring, "step {step}");
        }
        check_tables(&linked);
        assert!(linked.free.len() < linked.token.len());
    }

    #[test]
    fn refused_changes_leave_the_ring_as_it_was() {
        let config = RingConfig::new(Placement::Balanced, 8).unwrap();
        let mut ring = Ring::new(config);
        for id in ["a", "b", "c"] {
            ring.add(Member::new(id, 1)).unwrap();
        }
        let mut linked = self::linked(&ring);
        let refused = [
            (vec!["zz"], vec![]),
            (vec!["a", "a"], vec![]),
            (vec!["a"], vec![Member::new("b", 1)]),
            (vec![], vec![Member::new("d", 0)]),
            (vec![], vec![Member::new("d", 1), Member::new("d", 2)]),
            (
                vec!["a", "b", "c"],
                vec![Member::new("d", 1), Member::new("", 1)],
            ),
        ];
        for (leave, join) in refused {
            let expected = ring.clone().change_recording(
                leave.iter().copied(),
                join.clone(),
                &mut Edits::all(),
            );
            assert!(expected.is_err());
            assert_eq!(linked.change(leave, join), expected);
            assert_eq!(self::ring(&linked), ring);
        }
    }
}
