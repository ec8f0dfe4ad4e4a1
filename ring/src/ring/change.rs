//! Changing a ring: a join or a leave, a change of several steps (all or nothing), and
//! their plans (what they would move, without changing the ring).
//!
//! Every change has a plan: the strategy modules compute the moved pieces of an add or
//! remove without touching the ring ([`Ring::plan_add`], [`Ring::plan_remove`]). Balanced
//! rings apply exactly those pieces, building the new slots in one pass over the old
//! ones ([`Build`]); random rings insert or delete the member's tokens, which moves the
//! same ranges. The property tests check plan == diff for both. A change of many steps
//! goes at once (see [`Ring::change_recording`]).

use std::sync::{Arc, OnceLock};

use super::Ring;
use crate::balanced::{self, Layout};
use crate::derived::{Renumber, Touched};
use crate::linked::LinkedRing;
use crate::members::check_join;
use crate::plan::{Edits, Ideal, Piece, RingDiff, Who, into_diff, whole_ring};
use crate::slots::{Slot, check_token_limit, seek};
use crate::{Member, RingError, Strategy, Token, random};

/// Steps (leaves and joins) from which a change is made at once: below it, rebuilding
/// the slots at each step costs less than building the linked form and the slots back.
const AT_ONCE: usize = 32;

impl Ring {
    /// Adds a member: random rings give it `vnodes * weight` hashed tokens; balanced
    /// rings let it take its weight's share from the members that own the most.
    /// Only ranges that move to the new member change owner.
    pub fn add(&mut self, member: Member) -> Result<(), RingError> {
        self.add_recording(member, &mut Edits::default())
    }

    /// [`Ring::add`], recording in `edits` the positions whose tokens it changed (see
    /// [`Edits`]). On an error the ring and `edits` are as they were.
    pub fn add_recording(&mut self, member: Member, edits: &mut Edits) -> Result<(), RingError> {
        let pos = check_join(&self.config, &self.members, &member)?;
        let (slots, touched) = match self.config.strategy {
            Strategy::Random => {
                let tokens = self.random_join_tokens(&member)?;
                let out = self.pool.list(self.slots.len() + tokens.len());
                let slots = random::merge_joiner(&self.slots, &tokens, pos as u32, out);
                let touched = Touched::at(&self.slots, &slots, &tokens);
                edits.record(tokens);
                (slots, touched)
            }
            Strategy::Balanced => {
                let pieces = balanced::plan_join(self, member.weight)?;
                let pos = pos as u32;
                // By value (`move`), so the copy loop keeps `pos` in a register.
                let renumber = move |who| match who {
                    Who::Member(o) => o + u32::from(o >= pos),
                    Who::Joiner | Who::Nobody => pos,
                };
                self.apply_pieces(&pieces, renumber, self.members.len() + 1, edits)
            }
        };
        self.members.insert(pos, member);
        self.install(slots, &touched, Renumber::Joined(pos));
        Ok(())
    }

    /// Removes a member and returns it. Only its own ranges change owner: random rings
    /// hand each to the next token's owner, balanced rings share them out between the
    /// neighbouring members (and, past a small tolerance, the least loaded ones).
    pub fn remove(&mut self, id: &str) -> Result<Member, RingError> {
        self.remove_recording(id, &mut Edits::default())
    }

    /// [`Ring::remove`], recording in `edits` the positions whose tokens it changed
    /// (see [`Edits`]). On an error the ring and `edits` are as they were.
    pub fn remove_recording(&mut self, id: &str, edits: &mut Edits) -> Result<Member, RingError> {
        let leaver = self
            .member_index(id)
            .ok_or_else(|| RingError::UnknownMember(id.to_owned()))?;
        let shift = {
            let leaver = leaver as u32;
            // By value (`move`), so copy loops keep `leaver` in a register.
            move |o: u32| o - u32::from(o > leaver)
        };
        let (slots, touched) = match self.config.strategy {
            // The last member leaves: nothing is left to update.
            _ if self.members.len() == 1 => {
                edits.record_all();
                (Vec::new(), Touched::default())
            }
            Strategy::Random => {
                let out = self.pool.list(self.slots.len());
                let (slots, dropped) = random::drop_member(&self.slots, leaver as u32, shift, out);
                let touched = Touched::at(&self.slots, &slots, &dropped);
                edits.record(dropped);
                (slots, touched)
            }
            Strategy::Balanced => {
                let pieces = balanced::plan_leave(self, leaver);
                let renumber = move |who| match who {
                    Who::Member(o) => shift(o),
                    // A leave's pieces all go to surviving members.
                    Who::Joiner | Who::Nobody => 0,
                };
                self.apply_pieces(&pieces, renumber, self.members.len() - 1, edits)
            }
        };
        let member = self.members.remove(leaver);
        self.install(slots, &touched, Renumber::Left(leaver));
        Ok(member)
    }

    /// Removes the `leave` members, then adds the `join` members, in the order given,
    /// all or nothing: on an error the ring is as it was. Each step is the
    /// [`Ring::remove_recording`] or [`Ring::add_recording`] of the ring the previous
    /// steps made, and `edits` records them all (on an error, what it holds is
    /// meaningless). The ring changes in place, so a ring that shares nothing with a
    /// clone copies nothing but the slots each step rebuilds.
    ///
    /// A change of many steps (a membership sync, a ring built from a member list) is
    /// made at once instead, with the same result and the same errors: each step would
    /// rebuild every slot, so that such a change would cost its steps times the ring.
    /// It records every position as edited.
    pub fn change_recording<'a>(
        &mut self,
        leave: impl IntoIterator<Item = &'a str>,
        join: impl IntoIterator<Item = Member>,
        edits: &mut Edits,
    ) -> Result<(), RingError> {
        let leave: Vec<&str> = leave.into_iter().collect();
        let join: Vec<Member> = join.into_iter().collect();
        if leave.len() + join.len() >= AT_ONCE {
            self.change_at_once(&leave, join)?;
            edits.record_all();
            return Ok(());
        }
        // Undo: every step installs new slots, so the first slots are the ones to go
        // back to; the members come back by undoing each step's insert or removal.
        let slots = Arc::clone(&self.slots);
        let mut undo = Vec::new();
        let steps = |ring: &mut Ring| -> Result<(), RingError> {
            for id in leave {
                let member = ring.remove_recording(id, edits)?;
                let at = ring.members.partition_point(|m| m.id < member.id);
                undo.push(Undo::Left(at, member));
            }
            for member in join {
                let at = ring.members.partition_point(|m| m.id < member.id);
                ring.add_recording(member, edits)?;
                undo.push(Undo::Joined(at));
            }
            Ok(())
        };
        let Err(err) = steps(self) else {
            return Ok(());
        };
        if !undo.is_empty() {
            for step in undo.into_iter().rev() {
                match step {
                    Undo::Joined(at) => drop(self.members.remove(at)),
                    Undo::Left(at, member) => self.members.insert(at, member),
                }
            }
            self.tables = OnceLock::new();
            self.slots = slots;
            self.index = OnceLock::new();
            self.checksum = OnceLock::new();
        }
        Err(err)
    }

    /// What [`Ring::add`] would move, without changing the ring: equal to
    /// `diff(&ring, &ring_after_add)`, but computed from the plan alone.
    pub fn plan_add(&self, member: &Member) -> Result<RingDiff, RingError> {
        check_join(&self.config, &self.members, member)?;
        let pieces = match self.config.strategy {
            Strategy::Random => {
                let tokens = self.random_join_tokens(member)?;
                random::join_pieces(&self.slots, &self.members, &tokens, &member.id)
            }
            Strategy::Balanced => balanced::plan_join(self, member.weight)?,
        };
        Ok(self.join_diff(member, pieces))
    }

    /// What [`Ring::remove`] would move, without changing the ring: equal to
    /// `diff(&ring, &ring_after_remove)`.
    pub fn plan_remove(&self, id: &str) -> Result<RingDiff, RingError> {
        let leaver = self
            .member_index(id)
            .ok_or_else(|| RingError::UnknownMember(id.to_owned()))?;
        let pieces = match self.config.strategy {
            _ if self.members.len() == 1 => vec![whole_ring(&self.slots, Who::Nobody)],
            Strategy::Random => random::leave_pieces(&self.slots, leaver as u32),
            Strategy::Balanced => balanced::plan_leave(self, leaver),
        };
        let total = self.total_weight();
        let weight = u128::from(self.members[leaver].weight);
        let ideal = Ideal::new(weight * (total - weight), total * (total - weight));
        Ok(into_diff(
            pieces,
            |who| self.name(who, id),
            |who| self.name(who, id),
            ideal,
        ))
    }

    /// Member id behind a plan's owner reference.
    fn name(&self, who: Who, joiner: &str) -> String {
        match who {
            Who::Member(o) => self.members[o as usize].id.clone(),
            Who::Joiner => joiner.to_owned(),
            Who::Nobody => String::new(),
        }
    }

    /// The diff of a join from its pieces.
    fn join_diff(&self, member: &Member, pieces: Vec<Piece>) -> RingDiff {
        let total = self.total_weight();
        let ideal = Ideal::new(
            u128::from(member.weight) * total,
            total * (total + u128::from(member.weight)),
        );
        into_diff(
            pieces,
            |who| self.name(who, &member.id),
            |who| self.name(who, &member.id),
            ideal,
        )
    }

    /// The tokens of a random joiner, after checking the token limit.
    fn random_join_tokens(&self, member: &Member) -> Result<Vec<Token>, RingError> {
        let count = u64::from(self.config.vnodes) * u64::from(member.weight);
        check_token_limit(self.slots.len() as u64 + count)?;
        Ok(random::member_tokens(&member.id, count as usize))
    }

    /// The slots after giving every piece's range to its new owner, and the slots the
    /// change touched: each piece's end becomes a token of that owner (replacing a
    /// token at that position), owners are renumbered by `renumber`, and redundant
    /// tokens are dropped (canonical form, for a ring of `members_after` members).
    /// The positions of the edits and of the dropped tokens go to `edits_out`.
    /// Balanced rings only: positions are distinct and the ring is canonical before.
    fn apply_pieces(
        &self,
        pieces: &[Piece],
        renumber: impl Fn(Who) -> u32,
        members_after: usize,
        edits_out: &mut Edits,
    ) -> (Vec<Slot>, Touched) {
        let mut edits: Vec<Slot> = pieces
            .iter()
            .map(|p| Slot {
                token: p.end,
                owner: renumber(p.to),
            })
            .collect();
        edits.sort_unstable_by_key(|s| s.token);
        let old = &self.slots[..];
        let keep = |s: &Slot| Slot {
            token: s.token,
            owner: renumber(Who::Member(s.owner)),
        };
        if members_after <= 1 {
            // One owner left: only its last token stays (spec 6.1), the new ring's last
            // slot. The ring now has a single token, so its tables are computed afresh:
            // nothing is touched.
            let last = match edits.last() {
                Some(&e) if old.last().is_none_or(|s| s.token <= e.token) => Some(e),
                _ => old.last().map(keep),
            };
            edits_out.record_all();
            return (last.into_iter().collect(), Touched::default());
        }
        // One pass in position order: the old slots before each edit (a run), the edit
        // (in place of an old slot at its position), and the old slots after the last
        // edit. Each slot pushed drops the one before it if that has the same owner
        // (spec 6.1: a token followed by one of its owner is redundant); the old ring
        // was canonical, so that can only happen at an edit or at the first slot of a
        // run, and the last slot against the first, at the end.
        let mut build = Build::new(old, self.pool.list(old.len() + edits.len()));
        let mut from = 0;
        for e in &edits {
            let i = seek(old, from, e.token);
            build.run(from, i, &keep);
            build.edit(*e);
            // A changed position: the old slot there, if any, and the first after it.
            let replaced = old.get(i).is_some_and(|s| s.token == e.token);
            if replaced {
                build.touch_old(i);
            }
            from = i + usize::from(replaced);
            build.touch_old(from);
        }
        build.run(from, old.len(), &keep);
        let (out, touched, dropped) = build.finish();
        // Every other slot keeps its position and its member (renumbered).
        edits_out.record(
            edits
                .iter()
                .map(|e| e.token)
                .chain(dropped.iter().map(|&j| old[j].token)),
        );
        #[cfg(debug_assertions)]
        {
            // The touched slots are those a search from the changed positions finds.
            let mut changed: Vec<Token> = edits.iter().map(|e| e.token).collect();
            changed.extend(dropped.iter().map(|&j| old[j].token));
            changed.sort_unstable();
            changed.dedup();
            debug_assert_eq!(touched, Touched::at(old, &out, &changed));
        }
        (out, touched)
    }

    /// Installs new slots after a change that touched `touched` and renumbered the
    /// members as `renumber` says (the member list is already the new one): updates
    /// ownership and arcs, and forgets the index and the checksum of the old slots.
    fn install(&mut self, slots: Vec<Slot>, touched: &Touched, renumber: Renumber) {
        let old = std::mem::replace(&mut self.slots, Arc::new(self.pool.slots(slots)));
        // Tables nobody asked for yet are computed from the new slots when they are.
        if let Some(tables) = self.tables.get_mut() {
            tables.update(&old, &self.slots, touched, renumber);
        }
        self.index = OnceLock::new();
        self.checksum = OnceLock::new();
    }

    /// [`Ring::change_recording`] of many steps, made at once, with the same result and
    /// errors (all or nothing: the ring changes only once every step succeeded). A
    /// balanced ring makes the steps on its linked form, where each costs the tokens it
    /// moves; a random ring checks every step, then merges the joiners' tokens in one
    /// pass. The derived tables are computed again when next needed.
    fn change_at_once(&mut self, leave: &[&str], join: Vec<Member>) -> Result<(), RingError> {
        let (members, slots) = match self.config.strategy {
            Strategy::Balanced => {
                let mut linked = LinkedRing::new(self.config, self.members.clone(), &self.slots);
                linked.steps(leave, join)?;
                linked.into_parts()
            }
            Strategy::Random => {
                let out = self.pool.list(self.slots.len());
                random::change_at_once(&self.config, &self.members, &self.slots, leave, join, out)?
            }
        };
        self.members = members;
        self.slots = Arc::new(self.pool.slots(slots));
        self.tables = OnceLock::new();
        self.index = OnceLock::new();
        self.checksum = OnceLock::new();
        Ok(())
    }
}

/// The new slots of a balanced change, built in one pass by [`Ring::apply_pieces`], with
/// the slots it touched (see `derived`): in the old ring, those at each changed
/// position (an edit's, a dropped slot's) and the first after it; in the new ring, the
/// kept edits and the first slot after each edit or dropped slot (both wrapping).
struct Build<'a> {
    old: &'a [Slot],
    out: Vec<Slot>,
    touched: Touched,
    /// Old indices of the old slots dropped as redundant.
    dropped: Vec<usize>,
    /// The old index of `out`'s last slot, if that is an old slot.
    last_old: Option<usize>,
    /// The next slot pushed is the first after an edit or a dropped slot.
    after_change: bool,
    /// Old slot 0 is touched: it is the first after a change past the last old slot.
    first_old: bool,
}

impl<'a> Build<'a> {
    fn new(old: &'a [Slot], out: Vec<Slot>) -> Build<'a> {
        Build {
            old,
            out,
            touched: Touched::default(),
            dropped: Vec::new(),
            last_old: None,
            after_change: false,
            first_old: false,
        }
    }

    /// Marks old slot `i` touched (`old.len()` wraps to 0); indices come in order.
    fn touch_old(&mut self, i: usize) {
        if i == self.old.len() {
            self.first_old = true;
        } else if self.touched.old.last() != Some(&i) {
            self.touched.old.push(i);
        }
    }

    /// Marks new slot `i` touched; indices come in order.
    fn touch_new(&mut self, i: usize) {
        if self.touched.new.last() != Some(&i) {
            self.touched.new.push(i);
        }
    }

    /// Drops the last slot if the next one, of `owner`, has its owner; whether it did.
    fn drop_redundant(&mut self, owner: u32) -> bool {
        if self.out.last().is_none_or(|last| last.owner != owner) {
            return false;
        }
        self.out.pop();
        if let Some(j) = self.last_old.take() {
            self.dropped.push(j);
            self.touch_old(j);
            self.touch_old(j + 1);
        }
        self.after_change = true;
        true
    }

    /// Appends an edit.
    fn edit(&mut self, e: Slot) {
        self.drop_redundant(e.owner);
        self.touch_new(self.out.len());
        self.out.push(e);
        self.last_old = None;
        self.after_change = true;
    }

    /// Appends the old slots `from..to`, renumbered by `keep`.
    fn run(&mut self, from: usize, to: usize, keep: &impl Fn(&Slot) -> Slot) {
        let Some(first) = self.old[from..to].first() else {
            return;
        };
        self.drop_redundant(keep(first).owner);
        if self.after_change {
            self.touch_new(self.out.len());
            self.after_change = false;
        }
        self.out.extend(self.old[from..to].iter().map(keep));
        self.last_old = Some(to - 1);
    }

    /// Compares the last slot with the first (wrapping), and puts the touched slots
    /// that wrap to slot 0 in front: the slots, the touched ones, the dropped old ones.
    fn finish(mut self) -> (Vec<Slot>, Touched, Vec<usize>) {
        let last = self.out.len().saturating_sub(1);
        if let Some(first) = self.out.first().map(|s| s.owner)
            && last > 0
            && self.drop_redundant(first)
            && self.touched.new.last() == Some(&last)
        {
            // The dropped last slot was listed as touched; the first after it is slot 0.
            self.touched.new.pop();
        }
        if self.after_change && self.touched.new.first() != Some(&0) {
            self.touched.new.insert(0, 0);
        }
        if self.first_old && self.touched.old.first() != Some(&0) {
            self.touched.old.insert(0, 0);
        }
        (self.out, self.touched, self.dropped)
    }
}

/// One step of [`Ring::change_recording`], to undo on an error.
enum Undo {
    /// A member joined at this index.
    Joined(usize),
    /// This member left from this index.
    Left(usize, Member),
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::RingConfig;
    use crate::Strategy as Placement;
    use crate::ring::diff::diff;
    use crate::slots::{ArcSpan, RING, arc_at};

    /// A random join with chosen tokens (to force collisions): the ring after it and
    /// the plan, both computed the way `add` and `plan_add` do.
    fn join_with_tokens(ring: &Ring, member: Member, tokens: &[Token]) -> (Ring, RingDiff) {
        let pos = check_join(&ring.config, &ring.members, &member).unwrap();
        let pieces = random::join_pieces(&ring.slots, &ring.members, tokens, &member.id);
        let plan = ring.join_diff(&member, pieces);
        let mut after = ring.clone();
        after.members.insert(pos, member);
        let slots = random::merge_joiner(&ring.slots, tokens, pos as u32, Vec::new());
        let touched = Touched::at(&ring.slots, &slots, tokens);
        after.install(slots, &touched, Renumber::Joined(pos));
        (after, plan)
    }

    fn random_ring(ids: &[&str]) -> Ring {
        let mut ring = Ring::new(RingConfig::new(Placement::Random, 3).unwrap());
        for id in ids {
            ring.add(Member::new(*id, 1)).unwrap();
        }
        ring
    }

    #[test]
    fn colliding_tokens_go_to_the_smaller_id_and_move_nothing_else() {
        let ring = random_ring(&["a", "c"]);
        let a_tokens: Vec<Token> = ring.tokens().filter(|t| t.1 == "a").map(|t| t.0).collect();
        let c_tokens: Vec<Token> = ring.tokens().filter(|t| t.1 == "c").map(|t| t.0).collect();
        // b collides with one token of each: it sorts after a and before c.
        let mut tokens = vec![a_tokens[0], c_tokens[0], c_tokens[1].wrapping_add(1)];
        tokens.sort_unstable();
        let (after, plan) = join_with_tokens(&ring, Member::new("b", 1), &tokens);
        assert_eq!(plan, diff(&ring, &after));
        assert!(plan.ranges.iter().all(|r| r.to == "b"));
        assert_eq!(after.owner_of_hash(a_tokens[0]), Ok("a"));
        assert_eq!(after.owner_of_hash(c_tokens[0]), Ok("b"));
        assert_eq!(after.token_count(), ring.token_count() + 3);
        // b's token behind a's at the same position owns nothing.
        let shares = after.ownership();
        assert_eq!(shares.iter().map(|s| s.arc).sum::<u128>(), RING);
        // Leaving undoes the join exactly, and the plan says so.
        let mut back = after.clone();
        let leave = after.plan_remove("b").unwrap();
        back.remove("b").unwrap();
        assert_eq!(back, ring);
        assert_eq!(leave, diff(&after, &back));
        assert!(leave.ranges.iter().all(|r| r.from == "b"));
    }

    #[test]
    fn owners_at_each_position_in_any_order() {
        let ring = random_ring(&["a", "c"]);
        let a_tokens: Vec<Token> = ring.tokens().filter(|t| t.1 == "a").map(|t| t.0).collect();
        let c_tokens: Vec<Token> = ring.tokens().filter(|t| t.1 == "c").map(|t| t.0).collect();
        // b shares a position with a and with c.
        let (after, _) = join_with_tokens(&ring, Member::new("b", 1), &{
            let mut t = vec![a_tokens[0], c_tokens[1]];
            t.sort_unstable();
            t
        });
        let by_scan = |p: Token| -> Vec<u32> {
            (after.tokens().zip(after.indexed_tokens()))
                .filter(|((t, _), _)| *t == p)
                .map(|(_, (_, owner))| owner)
                .collect()
        };
        let mut positions: Vec<Token> = after.tokens().map(|t| t.0).collect();
        positions.extend([0, u64::MAX, a_tokens[0].wrapping_add(1)]);
        positions.sort_unstable();
        positions.dedup();
        // Ascending, then a few going back (searched from the start again).
        positions.extend([c_tokens[1], a_tokens[0], 0]);
        let found: Vec<Vec<u32>> = after
            .owners_at_each(&positions)
            .map(Iterator::collect)
            .collect();
        let expected: Vec<Vec<u32>> = positions.iter().map(|&p| by_scan(p)).collect();
        assert_eq!(found, expected);
        // Shared positions list both owners, by id.
        let shared: Vec<u32> = after.owners_at_each(&a_tokens[..1]).flatten().collect();
        assert_eq!(shared, vec![0, 1]);
    }

    #[test]
    fn a_joiner_sharing_every_position_of_a_one_token_ring() {
        let mut ring = Ring::new(RingConfig::new(Placement::Random, 1).unwrap());
        ring.add(Member::new("m", 1)).unwrap();
        let t = ring.tokens().next().unwrap().0;
        for (id, owner) in [("a", "a"), ("z", "m")] {
            let (after, plan) = join_with_tokens(&ring, Member::new(id, 1), &[t]);
            assert_eq!(plan, diff(&ring, &after), "joiner {id}");
            for h in [0, t, t.wrapping_add(1), u64::MAX] {
                assert_eq!(
                    after.owner_of_hash(h),
                    Ok(owner),
                    "joiner {id}, position {h}"
                );
            }
            assert_eq!(plan.moved, if owner == id { RING } else { 0 });
        }
    }

    #[test]
    fn applied_pieces_keep_the_last_token_of_each_run() {
        let slot = |token, owner| Slot { token, owner };
        let piece = |start, end, to| Piece {
            start,
            end,
            from: Who::Nobody,
            to: Who::Member(to),
            at: 0,
        };
        let ring = |tokens: &[(Token, &str)]| {
            let members = ["a", "b", "c"].map(|id| Member::new(id, 1)).to_vec();
            let tokens = tokens.iter().map(|&(t, id)| (t, id.to_owned())).collect();
            Ring::from_parts(RingConfig::default(), members, tokens).unwrap()
        };
        let same = |who| match who {
            Who::Member(o) => o,
            Who::Joiner | Who::Nobody => u32::MAX,
        };
        // The touched slots are those the search from the changed positions finds.
        let check = |r: &Ring, pieces: &[Piece], members: usize, changed: &[Token]| {
            let (slots, touched) = r.apply_pieces(pieces, same, members, &mut Edits::default());
            if members > 1 {
                assert_eq!(touched, Touched::at(&r.slots, &slots, changed));
            }
            slots
        };
        // (1, 3] goes to a: a's tokens at 1 and 3 are followed by a's at 5.
        let r = ring(&[(1, "a"), (3, "b"), (5, "a"), (7, "c")]);
        let slots = check(&r, &[piece(1, 3, 0)], 3, &[1, 3]);
        assert_eq!(slots, vec![slot(5, 0), slot(7, 2)]);
        // (3, 7] goes to a: the last token is followed, wrapping, by a's first.
        let r = ring(&[(1, "a"), (3, "b"), (7, "c")]);
        let slots = check(&r, &[piece(3, 7, 0)], 3, &[7]);
        assert_eq!(slots, vec![slot(1, 0), slot(3, 1)]);
        // A piece inside an arc adds a token; one owner left keeps only its last token.
        let slots = check(&r, &[piece(3, 5, 0)], 3, &[5]);
        assert_eq!(slots, vec![slot(1, 0), slot(3, 1), slot(5, 0), slot(7, 2)]);
        let slots = check(&r, &[piece(1, 3, 2), piece(7, 1, 2)], 1, &[]);
        assert_eq!(slots, vec![slot(7, 2)]);
    }

    /// The tables of `ring` equal their definition: ownership is the sum of each
    /// member's arcs, and each arc list holds all its arcs (read largest first).
    fn check(ring: &Ring) {
        // The tables a change updated, not ones computed now.
        let tables = ring.tables.get().expect("the tables were kept and updated");
        let n = ring.members.len();
        let mut arcs: Vec<Vec<ArcSpan>> = vec![Vec::new(); n];
        for i in 0..ring.slots.len() {
            arcs[ring.slots[i].owner as usize].push(arc_at(&ring.slots, i));
        }
        let own: Vec<u128> = arcs.iter().map(|a| a.iter().map(|a| a.len).sum()).collect();
        assert_eq!(tables.own, own, "ownership");
        if ring.config.strategy == Placement::Random {
            assert!(tables.arcs.is_empty());
            return;
        }
        assert_eq!(tables.arcs.len(), n);
        for (m, (list, mut all)) in tables.arcs.iter().zip(arcs).enumerate() {
            all.sort_unstable_by(|a, b| b.len.cmp(&a.len).then(a.end.cmp(&b.end)));
            let listed: Vec<ArcSpan> = list.largest_first().into_iter().map(|a| a.0).collect();
            assert_eq!(listed, all, "member {m}");
            assert_eq!(
                list.largest().map(|a| a.0),
                all.first().copied(),
                "largest of member {m}"
            );
            assert_eq!(
                list.largest_first_lazily().map(|a| a.0).collect::<Vec<_>>(),
                all,
                "member {m}"
            );
        }
    }

    /// Joins (ids `0..40`, weights 1 to 3) and leaves (by position in the member list).
    fn ops() -> impl proptest::strategy::Strategy<Value = Vec<(bool, u8, u32)>> {
        prop::collection::vec((any::<bool>(), 0u8..40, 1u32..4), 1..80)
    }

    proptest! {
        #[test]
        fn tables_follow_every_change(
            balanced in any::<bool>(),
            vnodes in 1u32..24,
            ops in ops(),
        ) {
            let strategy = if balanced { Placement::Balanced } else { Placement::Random };
            let mut ring = Ring::new(RingConfig::new(strategy, vnodes).unwrap());
            ring.tables();
            for (join, pick, weight) in ops {
                if join || ring.is_empty() {
                    let _ = ring.add(Member::new(format!("m{pick}"), weight));
                } else {
                    let id = ring.members[usize::from(pick) % ring.len()].id.clone();
                    ring.remove(&id).unwrap();
                }
                check(&ring);
            }
        }
    }

    #[test]
    fn tables_follow_a_long_balanced_churn() {
        let mut ring = Ring::new(RingConfig::new(Placement::Balanced, 16).unwrap());
        for i in 0..150 {
            ring.add(Member::new(format!("m{i}"), 1 + i % 3)).unwrap();
        }
        check(&ring);
        for step in 0..300usize {
            let id = ring.members[(step * 7919) % ring.len()].id.clone();
            ring.remove(&id).unwrap();
            check(&ring);
            ring.add(Member::new(format!("j{step}"), 1)).unwrap();
            check(&ring);
        }
    }
}
