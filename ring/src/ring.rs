//! The ring: members sorted by id, slots (token, owner) sorted by position, and what is
//! derived from them: ownership per member and each member's arcs (computed on first
//! use, then updated from the slots each change touched, see `derived`), the lookup
//! index and the checksum (computed on first use after a change). Clones share the
//! slots and copy the index, not the derived tables; a change builds new slots and
//! leaves the clone's alone.
//!
//! Every change has a plan: the strategy modules compute the moved pieces of an add or
//! remove without touching the ring ([`Ring::plan_add`], [`Ring::plan_remove`]). Balanced
//! rings apply exactly those pieces; random rings insert or delete the member's tokens,
//! which moves the same ranges. The property tests check plan == diff for both.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, OnceLock};

use crate::balanced::Layout;
use crate::derived::{Derived, Renumber, Touched};
use crate::diff::{self, Edits, Piece, RingDiff, Who};
use crate::index::{self, LookupIndex};
use crate::slots::{Pool, Slots};
use crate::{
    MAX_TOKENS, Member, RingConfig, RingError, Strategy, Token, balanced, hash_key, random,
};

/// The whole ring, `2^64` positions, as an arc length.
pub(crate) const RING: u128 = 1 << 64;

/// One token: a position and the index of its owner in the sorted member list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Slot {
    /// Position on the ring (field order makes the derived `Ord` position-first).
    pub(crate) token: Token,
    /// Index into `Ring::members`; equal positions are ordered by it (that is, by id).
    pub(crate) owner: u32,
}

/// An arc `(start, end]` of the ring and its length (`2^64` for the whole ring).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ArcSpan {
    /// Exclusive start: the preceding token.
    pub(crate) start: Token,
    /// Inclusive end: the owning token.
    pub(crate) end: Token,
    /// Number of positions in the arc.
    pub(crate) len: u128,
}

/// One member's exact share of the ring.
#[derive(Clone, Debug, PartialEq)]
pub struct Share {
    /// Member id.
    pub id: String,
    /// Sum of the lengths of the arcs the member owns; the whole ring is `2^64`.
    pub arc: u128,
    /// `arc / 2^64`.
    pub fraction: f64,
}

/// A consistent-hash ring of weighted members (see the crate docs and `docs/ring-spec.md`).
pub struct Ring {
    pub(crate) config: RingConfig,
    /// Sorted by id; slot owners index into it.
    pub(crate) members: Vec<Member>,
    /// Sorted by (position, owner); equal positions only occur in random rings.
    /// Shared with clones: a change installs new slots.
    pub(crate) slots: Arc<Slots>,
    /// Where the slot lists of this ring and its clones go when nobody holds them,
    /// for the next change to fill.
    pool: Arc<Pool>,
    /// Ownership and arcs per member: computed on first use (a plan, `ownership`),
    /// then updated by each change. A clone starts without them.
    pub(crate) tables: OnceLock<Derived>,
    /// The lookup index, built by the first lookup after a change.
    index: OnceLock<LookupIndex>,
    /// The checksum, computed by the first call after a change.
    checksum: OnceLock<u64>,
}

impl Ring {
    /// An empty ring. The configuration is checked when the first member is added.
    pub fn new(config: RingConfig) -> Ring {
        let pool = Arc::new(Pool::default());
        Ring {
            config,
            members: Vec::new(),
            slots: Arc::new(pool.slots(Vec::new())),
            pool,
            tables: OnceLock::new(),
            index: OnceLock::new(),
            checksum: OnceLock::new(),
        }
    }

    /// The ring's configuration.
    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// Whether a member with this id is on the ring.
    pub fn contains(&self, id: &str) -> bool {
        self.member_index(id).is_some()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the ring has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member with this id.
    pub fn member(&self, id: &str) -> Option<&Member> {
        self.member_index(id).map(|i| &self.members[i])
    }

    /// Members sorted by id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter()
    }

    /// Number of tokens (virtual nodes) on the ring.
    pub fn token_count(&self) -> usize {
        self.slots.len()
    }

    /// For each of `positions`, the owners (indices into [`Ring::members`]) of the
    /// tokens at exactly that position, by id: none if no token is there; more than
    /// one only in random rings. Positions in ascending order (as [`Edits`] records
    /// them) are found each from the previous one, by a galloping search; a position
    /// below the previous one is searched from the start.
    pub fn owners_at_each<'a>(
        &'a self,
        positions: &'a [Token],
    ) -> impl Iterator<Item = impl Iterator<Item = u32> + 'a> + 'a {
        let slots = &self.slots[..];
        let (mut from, mut previous) = (0, 0);
        positions.iter().map(move |&position| {
            if position < previous {
                from = 0;
            }
            previous = position;
            from = seek(slots, from, position);
            slots[from..]
                .iter()
                .take_while(move |s| s.token == position)
                .map(|s| s.owner)
        })
    }

    /// Tokens and their owners, sorted by position (equal positions by owner id).
    pub fn tokens(&self) -> impl Iterator<Item = (Token, &str)> {
        self.slots
            .iter()
            .map(|s| (s.token, self.members[s.owner as usize].id.as_str()))
    }

    /// The owner of a key: the member of the first token at or after `hash_key(key)`.
    #[inline]
    pub fn owner(&self, key: &[u8]) -> Result<&str, RingError> {
        self.owner_of_hash(hash_key(key))
    }

    /// The owner of a ring position.
    #[inline]
    pub fn owner_of_hash(&self, hash: u64) -> Result<&str, RingError> {
        let index = self
            .index
            .get_or_init(|| LookupIndex::build(&self.slots, self.members.len()));
        let owner = match index.owner(hash) {
            Some(owner) => owner,
            None => index::search(&self.slots, hash).ok_or(RingError::Empty)?,
        };
        Ok(self.members[owner as usize].id.as_str())
    }

    /// `n` distinct members walking clockwise from the key's position; the first is the
    /// owner. `n == 0` gives an empty list; `n` above the member count is an error.
    pub fn successors(&self, key: &[u8], n: usize) -> Result<Vec<&str>, RingError> {
        self.successors_of_hash(hash_key(key), n)
    }

    /// [`Ring::successors`] for a ring position.
    pub fn successors_of_hash(&self, hash: u64, n: usize) -> Result<Vec<&str>, RingError> {
        if self.is_empty() {
            return Err(RingError::Empty);
        }
        if n > self.len() {
            return Err(RingError::TooFewMembers {
                asked: n,
                have: self.len(),
            });
        }
        let mut seen = vec![0u64; self.members.len().div_ceil(64)];
        let mut out = Vec::with_capacity(n);
        let start = self.slot_at(hash);
        // Every member holds at least one token, so one lap finds all of them.
        for step in 0..self.slots.len() {
            if out.len() == n {
                break;
            }
            let owner = self.slots[(start + step) % self.slots.len()].owner as usize;
            let (word, bit) = (owner / 64, 1u64 << (owner % 64));
            if seen[word] & bit == 0 {
                seen[word] |= bit;
                out.push(self.members[owner].id.as_str());
            }
        }
        Ok(out)
    }

    /// Exact arc share of every member, sorted by id.
    pub fn ownership(&self) -> Vec<Share> {
        self.members
            .iter()
            .zip(&self.tables().own)
            .map(|(m, &arc)| Share {
                id: m.id.clone(),
                arc,
                fraction: diff::fraction(arc),
            })
            .collect()
    }

    /// Adds a member: random rings give it `vnodes * weight` hashed tokens; balanced
    /// rings let it take its weight's share from the members that own the most.
    /// Only ranges that move to the new member change owner.
    pub fn add(&mut self, member: Member) -> Result<(), RingError> {
        self.add_recording(member, &mut Edits::default())
    }

    /// [`Ring::add`], recording in `edits` the positions whose tokens it changed (see
    /// [`Edits`]). On an error the ring and `edits` are as they were.
    pub fn add_recording(&mut self, member: Member, edits: &mut Edits) -> Result<(), RingError> {
        let pos = self.check_join(&member)?;
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
    pub fn change_recording<'a>(
        &mut self,
        leave: impl IntoIterator<Item = &'a str>,
        join: impl IntoIterator<Item = Member>,
        edits: &mut Edits,
    ) -> Result<(), RingError> {
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
        self.check_join(member)?;
        let pieces = match self.config.strategy {
            Strategy::Random => {
                let tokens = self.random_join_tokens(member)?;
                random::join_pieces(self, &tokens, &member.id)
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
            _ if self.members.len() == 1 => vec![diff::whole_ring(self, Who::Nobody)],
            Strategy::Random => random::leave_pieces(self, leaver as u32),
            Strategy::Balanced => balanced::plan_leave(self, leaver),
        };
        let total = self.total_weight();
        let weight = u128::from(self.members[leaver].weight);
        let ideal = diff::ideal_fraction(weight * (total - weight), total * (total - weight));
        Ok(diff::into_diff(
            pieces,
            |who| self.name(who, id),
            |who| self.name(who, id),
            ideal,
        ))
    }

    /// Checksum of the ring: xxh3-64 (seed [`crate::HASH_SEED`]) over the canonical
    /// encoding of configuration, members and tokens described in `docs/ring-spec.md`.
    /// Computed by the first call after a change and kept until the next one.
    pub fn checksum(&self) -> u64 {
        *self.checksum.get_or_init(|| self.compute_checksum())
    }

    /// The checksum's hash, over the byte string of the spec (section 9).
    fn compute_checksum(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::with_seed(crate::HASH_SEED);
        h.update(b"ringside-ring-v1");
        h.update(&[match self.config.strategy {
            Strategy::Random => 0,
            Strategy::Balanced => 1,
        }]);
        h.update(&self.config.vnodes.to_le_bytes());
        h.update(&(self.members.len() as u32).to_le_bytes());
        for m in &self.members {
            h.update(&(m.id.len() as u32).to_le_bytes());
            h.update(m.id.as_bytes());
            h.update(&m.weight.to_le_bytes());
        }
        h.update(&(self.slots.len() as u32).to_le_bytes());
        // The hasher pays per call, so tokens go in a few kilobytes at a time.
        const PER_CHUNK: usize = 256;
        let mut buf = [0u8; 12 * PER_CHUNK];
        for chunk in self.slots.chunks(PER_CHUNK) {
            for (out, s) in buf.chunks_exact_mut(12).zip(chunk) {
                out[..8].copy_from_slice(&s.token.to_le_bytes());
                out[8..].copy_from_slice(&s.owner.to_le_bytes());
            }
            h.update(&buf[..12 * chunk.len()]);
        }
        h.digest()
    }

    /// The ring as plain parts (configuration, members by id, tokens by position), the
    /// inverse of [`Ring::from_parts`]; what a snapshot stores.
    pub fn to_parts(&self) -> (RingConfig, Vec<Member>, Vec<(Token, String)>) {
        let tokens = self.tokens().map(|(t, id)| (t, id.to_owned())).collect();
        (self.config, self.members.clone(), tokens)
    }

    /// Tokens with the index of their owner in [`Ring::members`] (members sorted by
    /// id), sorted by position (equal positions by owner): the form
    /// [`Ring::from_indexed_parts`] takes, without a string per token.
    pub fn indexed_tokens(&self) -> impl ExactSizeIterator<Item = (Token, u32)> + '_ {
        self.slots.iter().map(|s| (s.token, s.owner))
    }

    /// Rebuilds a ring from a snapshot, checking everything a ring guarantees: a valid
    /// configuration and members, tokens sorted by (position, owner id) without repeats
    /// and owned by known members, at least one token per member, and per strategy:
    /// random tokens equal to their derivation from the members, balanced tokens at
    /// distinct positions with no token followed by one of the same owner.
    pub fn from_parts(
        config: RingConfig,
        members: Vec<Member>,
        tokens: Vec<(Token, String)>,
    ) -> Result<Ring, RingError> {
        let members = checked_members(config, members, tokens.len())?;
        let ids = IdIndex::new(&members);
        let mut slots = Vec::with_capacity(tokens.len());
        for (token, id) in &tokens {
            let owner = ids
                .get(&members, id)
                .ok_or_else(|| RingError::UnknownMember(id.clone()))?;
            let token = *token;
            push_sorted(&mut slots, Slot { token, owner })?;
        }
        Ring::from_slots(config, members, slots)
    }

    /// [`Ring::from_parts`] for tokens that name their owner by index: `owners[i]` is
    /// the index in `members` of the owner of `tokens[i]` (the form snapshots and
    /// rebalance events store, see [`Ring::indexed_tokens`]). Members may come in any
    /// order; tokens must be sorted by (position, owner id). Checks the same as
    /// [`Ring::from_parts`], and that the two lists have equal lengths and every index
    /// names a member.
    pub fn from_indexed_parts(
        config: RingConfig,
        members: Vec<Member>,
        tokens: Vec<Token>,
        owners: Vec<u32>,
    ) -> Result<Ring, RingError> {
        if tokens.len() != owners.len() {
            return Err(RingError::InvalidSnapshot(format!(
                "{} tokens but {} owners",
                tokens.len(),
                owners.len()
            )));
        }
        // Where each given member ends up once sorted by id (usually where it is).
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by(|&a, &b| members[a].id.cmp(&members[b].id));
        let mut renumber = vec![0u32; members.len()];
        for (new, &old) in (0u32..).zip(&order) {
            renumber[old] = new;
        }
        let members = checked_members(config, members, tokens.len())?;
        let mut slots = Vec::with_capacity(tokens.len());
        for (token, owner) in tokens.into_iter().zip(owners) {
            let owner = *renumber.get(owner as usize).ok_or_else(|| {
                RingError::InvalidSnapshot(format!(
                    "token {} names member index {owner} of {}",
                    slots.len(),
                    members.len()
                ))
            })?;
            push_sorted(&mut slots, Slot { token, owner })?;
        }
        Ring::from_slots(config, members, slots)
    }

    /// The ring of checked members (sorted by id) and slots sorted by (position, owner),
    /// after checking the rest of what a ring guarantees (see [`Ring::from_parts`]).
    fn from_slots(
        config: RingConfig,
        members: Vec<Member>,
        slots: Vec<Slot>,
    ) -> Result<Ring, RingError> {
        let mut held = vec![false; members.len()];
        for s in &slots {
            held[s.owner as usize] = true;
        }
        if let Some(i) = held.iter().position(|h| !h) {
            return Err(RingError::InvalidSnapshot(format!(
                "member '{}' holds no token",
                members[i].id
            )));
        }
        match config.strategy {
            Strategy::Random => {
                if !random::is_derivation(&members, config.vnodes, &slots)? {
                    return Err(RingError::InvalidSnapshot(
                        "tokens differ from the random derivation of the members".into(),
                    ));
                }
            }
            Strategy::Balanced => {
                if let Some(w) = slots.windows(2).find(|w| w[0].token == w[1].token) {
                    return Err(RingError::InvalidSnapshot(format!(
                        "balanced tokens share position {:#x}",
                        w[0].token
                    )));
                }
                if let Some(i) = redundant_token(&slots) {
                    return Err(RingError::InvalidSnapshot(format!(
                        "balanced token {:#x} is followed by another token of '{}'",
                        slots[i].token, members[slots[i].owner as usize].id
                    )));
                }
            }
        }
        Ok(Ring::with_slots(config, members, slots))
    }

    /// The ring of members (sorted by id) and slots that hold what a ring guarantees.
    pub(crate) fn with_slots(config: RingConfig, members: Vec<Member>, slots: Vec<Slot>) -> Ring {
        let mut ring = Ring::new(config);
        ring.members = members;
        ring.slots = Arc::new(ring.pool.slots(slots));
        ring
    }

    /// The derived tables (computed by the first call since the ring was built or
    /// cloned).
    pub(crate) fn tables(&self) -> &Derived {
        self.tables.get_or_init(|| {
            Derived::compute(&self.slots, self.members.len(), tracks_arcs(self.config))
        })
    }

    /// Index of the member with this id.
    pub(crate) fn member_index(&self, id: &str) -> Option<usize> {
        index_by_id(&self.members, id)
    }

    /// Index of the first slot at or after `hash`, wrapping to 0 (ring not empty).
    pub(crate) fn slot_at(&self, hash: u64) -> usize {
        let i = self.slots.partition_point(|s| s.token < hash);
        if i == self.slots.len() { 0 } else { i }
    }

    /// The arc owned by slot `i`: from the preceding token (cyclically) to its own.
    /// A token sharing the position of its predecessor owns nothing, except slot 0,
    /// which then owns the whole ring (every token sits at one position).
    pub(crate) fn arc(&self, i: usize) -> ArcSpan {
        arc_at(&self.slots, i)
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
        let ideal = diff::ideal_fraction(
            u128::from(member.weight) * total,
            total * (total + u128::from(member.weight)),
        );
        diff::into_diff(
            pieces,
            |who| self.name(who, &member.id),
            |who| self.name(who, &member.id),
            ideal,
        )
    }

    /// Validates a joining member; returns its insertion index in the member list.
    fn check_join(&self, member: &Member) -> Result<usize, RingError> {
        self.config.validate()?;
        member.validate()?;
        match self
            .members
            .binary_search_by(|m| m.id.as_str().cmp(&member.id))
        {
            Ok(_) => Err(RingError::DuplicateMember(member.id.clone())),
            Err(pos) => Ok(pos),
        }
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
}

/// The balanced plans read the derived tables, and search the slots for neighbours.
/// The tables keep no handles: arcs are named by their ends.
impl Layout for Ring {
    fn members(&self) -> &[Member] {
        &self.members
    }

    fn own(&self) -> &[u128] {
        &self.tables().own
    }

    fn token_count(&self) -> usize {
        self.slots.len()
    }

    fn vnodes(&self) -> u32 {
        self.config.vnodes
    }

    fn largest(&self, m: u32) -> Option<(ArcSpan, u32)> {
        self.tables().arcs[m as usize].largest().map(no_handle)
    }

    fn largest_first(&self, m: u32) -> Vec<(ArcSpan, u32)> {
        let arcs = self.tables().arcs[m as usize].largest_first();
        arcs.into_iter().map(no_handle).collect()
    }

    fn largest_first_lazily(&self, m: u32) -> impl Iterator<Item = (ArcSpan, u32)> {
        self.tables().arcs[m as usize]
            .largest_first_lazily()
            .map(no_handle)
    }

    fn beside(&self, end: Token, _: u32) -> (u32, u32) {
        let (i, t) = (self.slot_at(end), self.slots.len());
        (
            self.slots[before(i, t)].owner,
            self.slots[after(i, t)].owner,
        )
    }
}

/// An arc of the tables, with the handle 0.
fn no_handle((arc, ()): (ArcSpan, ())) -> (ArcSpan, u32) {
    (arc, 0)
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

/// Whether rings of this configuration keep each member's arcs (only balanced joins
/// and leaves use them).
fn tracks_arcs(config: RingConfig) -> bool {
    config.strategy == Strategy::Balanced
}

/// Index of the first slot from `from` on whose position is at least `position`
/// (`slots.len()` if none): a galloping search, cheap when the answer is near `from`.
pub(crate) fn seek(slots: &[Slot], from: usize, position: Token) -> usize {
    let rest = &slots[from..];
    let mut bound = 1;
    while bound < rest.len() && rest[bound - 1].token < position {
        bound *= 2;
    }
    // rest[bound / 2 - 1] (if any) is below `position`, rest[bound - 1] (if any) is not.
    let low = bound / 2;
    let high = bound.min(rest.len());
    from + low + rest[low..high].partition_point(|s| s.token < position)
}

/// The arc owned by slot `i` of `slots` (see [`Ring::arc`]).
pub(crate) fn arc_at(slots: &[Slot], i: usize) -> ArcSpan {
    let end = slots[i].token;
    let start = slots[before(i, slots.len())].token;
    ArcSpan {
        start,
        end,
        len: arc_len(i, start, end),
    }
}

/// Index of the member with this id in `members` (sorted by id).
pub(crate) fn index_by_id(members: &[Member], id: &str) -> Option<usize> {
    members.binary_search_by(|m| m.id.as_str().cmp(id)).ok()
}

/// The slot before slot `i` of `len` slots, wrapping to the last (also for `i == len`,
/// one past the end). No division: this runs for every slot a change touches.
#[inline]
pub(crate) fn before(i: usize, len: usize) -> usize {
    if i == 0 { len - 1 } else { i - 1 }
}

/// The slot after slot `i` of `len` slots, wrapping to the first.
#[inline]
pub(crate) fn after(i: usize, len: usize) -> usize {
    if i + 1 == len { 0 } else { i + 1 }
}

/// Length of the arc `(start, end]` of slot `i` (see [`Ring::arc`]).
fn arc_len(i: usize, start: Token, end: Token) -> u128 {
    match end.wrapping_sub(start) {
        0 if i == 0 => RING,
        d => u128::from(d),
    }
}

/// Errors when a ring would hold more than [`MAX_TOKENS`] tokens.
pub(crate) fn check_token_limit(tokens: u64) -> Result<(), RingError> {
    if tokens > MAX_TOKENS as u64 {
        return Err(RingError::TooManyTokens {
            requested: tokens,
            max: MAX_TOKENS as u64,
        });
    }
    Ok(())
}

/// Member indices by the hash of their id: one hash per token of a snapshot rather
/// than a binary search of the ids.
struct IdIndex(HashMap<u64, u32, BuildHasherDefault<PassThrough>>);

impl IdIndex {
    /// Marks a hash two members' ids share (never seen in practice): their lookups
    /// search the ids instead.
    const SHARED: u32 = u32::MAX;

    fn new(members: &[Member]) -> IdIndex {
        let mut map = HashMap::with_capacity_and_hasher(members.len(), Default::default());
        for (i, m) in (0u32..).zip(members) {
            map.entry(hash_key(m.id.as_bytes()))
                .and_modify(|at| *at = Self::SHARED)
                .or_insert(i);
        }
        IdIndex(map)
    }

    /// The index of the member with this id in `members` (the list it was built from).
    fn get(&self, members: &[Member], id: &str) -> Option<u32> {
        match *self.0.get(&hash_key(id.as_bytes()))? {
            Self::SHARED => members
                .binary_search_by(|m| m.id.as_str().cmp(id))
                .ok()
                .map(|i| i as u32),
            i => (members[i as usize].id == id).then_some(i),
        }
    }
}

/// The hasher of keys that are hashes already.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys come here (`write_u64`); fold anything else all the same.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// The members of a snapshot, checked (configuration, each member, no id twice, the
/// token count within [`MAX_TOKENS`]) and sorted by id.
fn checked_members(
    config: RingConfig,
    mut members: Vec<Member>,
    tokens: usize,
) -> Result<Vec<Member>, RingError> {
    config.validate()?;
    for m in &members {
        m.validate()?;
    }
    members.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    if let Some(w) = members.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(RingError::DuplicateMember(w[0].id.clone()));
    }
    check_token_limit(tokens as u64)?;
    Ok(members)
}

/// Appends a snapshot's slot, which must come after the last one.
fn push_sorted(slots: &mut Vec<Slot>, slot: Slot) -> Result<(), RingError> {
    if slots.last().is_some_and(|prev| *prev >= slot) {
        return Err(RingError::InvalidSnapshot(format!(
            "tokens are not sorted by (position, member id) at token {}",
            slots.len()
        )));
    }
    slots.push(slot);
    Ok(())
}

/// Index of a token whose clockwise successor has the same owner (such a token changes
/// no ownership), if any; a ring with one token has none.
fn redundant_token(slots: &[Slot]) -> Option<usize> {
    (0..slots.len())
        .find(|&i| slots.len() > 1 && slots[i].owner == slots[after(i, slots.len())].owner)
}

/// A clone shares the slots and copies the members, the lookup index and the checksum,
/// but not the derived tables: clones are mostly for reading (a served view, the ring
/// before a change), and the tables are what a change plans from, so a clone that is
/// changed computes them at its first change (one pass over the tokens) instead of
/// every clone copying them.
impl Clone for Ring {
    fn clone(&self) -> Ring {
        Ring {
            config: self.config,
            members: self.members.clone(),
            slots: Arc::clone(&self.slots),
            pool: Arc::clone(&self.pool),
            tables: OnceLock::new(),
            index: self.index.clone(),
            checksum: self.checksum.clone(),
        }
    }
}

impl PartialEq for Ring {
    fn eq(&self, other: &Self) -> bool {
        // The caches are functions of these three, so they need no comparison.
        self.config == other.config && self.members == other.members && self.slots == other.slots
    }
}

impl Eq for Ring {}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("config", &self.config)
            .field("members", &self.members)
            .field("tokens", &self.slots.len())
            .field("checksum", &format_args!("{:#018x}", self.checksum()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff;

    /// A random join with chosen tokens (to force collisions): the ring after it and
    /// the plan, both computed the way `add` and `plan_add` do.
    fn join_with_tokens(ring: &Ring, member: Member, tokens: &[Token]) -> (Ring, RingDiff) {
        let pos = ring.check_join(&member).unwrap();
        let plan = ring.join_diff(&member, random::join_pieces(ring, tokens, &member.id));
        let mut after = ring.clone();
        after.members.insert(pos, member);
        let slots = random::merge_joiner(&ring.slots, tokens, pos as u32, Vec::new());
        let touched = Touched::at(&ring.slots, &slots, tokens);
        after.install(slots, &touched, Renumber::Joined(pos));
        (after, plan)
    }

    fn random_ring(ids: &[&str]) -> Ring {
        let mut ring = Ring::new(RingConfig::new(Strategy::Random, 3).unwrap());
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
        assert_eq!(plan, diff::diff(&ring, &after));
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
        assert_eq!(leave, diff::diff(&after, &back));
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
        let mut ring = Ring::new(RingConfig::new(Strategy::Random, 1).unwrap());
        ring.add(Member::new("m", 1)).unwrap();
        let t = ring.tokens().next().unwrap().0;
        for (id, owner) in [("a", "a"), ("z", "m")] {
            let (after, plan) = join_with_tokens(&ring, Member::new(id, 1), &[t]);
            assert_eq!(plan, diff::diff(&ring, &after), "joiner {id}");
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
    fn ids_sharing_a_hash_are_searched() {
        let members = ["a", "b", "c"].map(|id| Member::new(id, 1));
        let mut ids = IdIndex::new(&members);
        assert_eq!(ids.get(&members, "b"), Some(1));
        assert_eq!(ids.get(&members, "d"), None);
        // As if another id shared the hash of "b".
        ids.0.insert(hash_key(b"b"), IdIndex::SHARED);
        assert_eq!(ids.get(&members, "b"), Some(1));
        assert_eq!(ids.get(&members, "bb"), None);
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
}
