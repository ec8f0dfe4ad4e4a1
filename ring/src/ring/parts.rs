//! A ring as plain parts, what snapshots and events store, and back: the members by id
//! and the tokens by position, owners named by id or by index. Coming back, a ring is
//! checked for everything it guarantees (`docs/ring-spec.md` section 10), since parts
//! come from outside.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::Ring;
use crate::random;
use crate::slots::{Slot, after, check_token_limit};
use crate::{Member, RingConfig, RingError, Strategy, Token, hash_key};

impl Ring {
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
/// token count within [`crate::MAX_TOKENS`]) and sorted by id.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
