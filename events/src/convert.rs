//! Between the wire types and the ring: configurations, members, snapshots, and the
//! `RingRebalanced` that describes the step from one ring to the next.
//!
//! # How it fits
//! The fold applies membership to a [`Ring`] and, for each change, builds the event
//! with [`rebalanced`]; the reducer stores rings with [`ring_to_snapshot`] and loads
//! them with [`snapshot_to_ring`]; replay and `verify` can rebuild each epoch from the
//! previous ring and the event alone with [`apply_rebalanced`]. Everything here is
//! pure and deterministic.

use std::collections::BTreeMap;

use ringside_ring::{Edits, Ring, RingConfig, RingError, Strategy, Token};

use crate::event::{NO_OWNER, SCHEMA_VERSION};
use crate::pb;

/// Why a conversion failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The configuration names no strategy (or one this reader does not know).
    #[error("ring configuration has no known strategy (value {0})")]
    UnknownStrategy(i32),
    /// A message that needs a configuration has none.
    #[error("{0} has no ring configuration")]
    MissingConfig(&'static str),
    /// A ring member has no entry in the member details given.
    #[error("no details (address, uid) for ring member '{0}'")]
    MissingMemberDetails(String),
    /// A member index points outside the member tables.
    #[error("member index {0} is out of range")]
    BadIndex(u32),
    /// The ring refused the parts (invalid config, members or tokens).
    #[error("the ring refused the parts")]
    Ring(#[from] RingError),
    /// Applying a rebalance did not give the checksum it announces.
    #[error(
        "epoch {epoch}: rebuilt ring has checksum {got:#018x}, the event says {expected:#018x}"
    )]
    ChecksumMismatch {
        /// The epoch.
        epoch: u64,
        /// Checksum of the rebuilt ring.
        got: u64,
        /// Checksum in the event.
        expected: u64,
    },
}

impl From<RingConfig> for pb::RingConfig {
    fn from(c: RingConfig) -> Self {
        let strategy = match c.strategy {
            Strategy::Random => pb::RingStrategy::Random,
            Strategy::Balanced => pb::RingStrategy::Balanced,
        };
        pb::RingConfig {
            strategy: strategy as i32,
            vnodes: c.vnodes,
        }
    }
}

impl TryFrom<&pb::RingConfig> for RingConfig {
    type Error = ConvertError;

    fn try_from(c: &pb::RingConfig) -> Result<Self, Self::Error> {
        let strategy = match pb::RingStrategy::try_from(c.strategy) {
            Ok(pb::RingStrategy::Random) => Strategy::Random,
            Ok(pb::RingStrategy::Balanced) => Strategy::Balanced,
            Ok(pb::RingStrategy::Unspecified) | Err(_) => {
                return Err(ConvertError::UnknownStrategy(c.strategy));
            }
        };
        Ok(RingConfig::new(strategy, c.vnodes)?)
    }
}

impl From<&pb::Member> for ringside_ring::Member {
    /// The ring only needs the id and the weight; address, uid and labels stay in the
    /// events.
    fn from(m: &pb::Member) -> Self {
        ringside_ring::Member::new(m.id.clone(), m.weight)
    }
}

/// Resolves member ids to the indices of a `RingRebalanced` (members, then departed),
/// by binary search: the event lists both sorted by id (the event contract, checked
/// when an event is decoded; [`rebalanced_with_members`] builds them so). An id not
/// found, also in lists that break that rule, is an error, and an event rebuilt from
/// wrong indices fails its checksum.
struct MemberIndex<'a> {
    members: &'a [pb::Member],
    departed: &'a [String],
}

impl<'a> MemberIndex<'a> {
    fn new(members: &'a [pb::Member], departed: &'a [String]) -> Self {
        Self { members, departed }
    }

    fn of(&self, id: &str) -> Result<u32, ConvertError> {
        if id.is_empty() {
            return Ok(NO_OWNER);
        }
        let found = match self.members.binary_search_by(|m| m.id.as_str().cmp(id)) {
            Ok(i) => i,
            Err(_) => {
                let departed = self.departed.binary_search_by(|d| d.as_str().cmp(id));
                let i = departed.map_err(|_| ConvertError::MissingMemberDetails(id.to_string()))?;
                self.members.len() + i
            }
        };
        u32::try_from(found).map_err(|_| ConvertError::MissingMemberDetails(id.to_string()))
    }
}

/// The ring's members with their details from `details` (any order), sorted by id,
/// with the ring's weights.
fn member_details(ring: &Ring, details: &[pb::Member]) -> Result<Vec<pb::Member>, ConvertError> {
    let by_id: BTreeMap<&str, &pb::Member> = details.iter().map(|m| (m.id.as_str(), m)).collect();
    ring.members()
        .map(|m| {
            let mut d = (*by_id
                .get(m.id.as_str())
                .ok_or_else(|| ConvertError::MissingMemberDetails(m.id.clone()))?)
            .clone();
            d.weight = m.weight;
            Ok(d)
        })
        .collect()
}

/// A snapshot of `ring` for the KV bucket. `details` supplies addresses and uids of
/// the ring's members (extra entries are ignored).
pub fn ring_to_snapshot(
    ring_name: &crate::RingName,
    ring: &Ring,
    details: &[pb::Member],
    epoch: u64,
    membership_sequence: u64,
    rebalance_sequence: u64,
) -> Result<pb::RingSnapshot, ConvertError> {
    // `members` follows the ring's member order (by id), so the ring's owner indices
    // are the snapshot's: no lookup per token.
    let members = member_details(ring, details)?;
    let (tokens, owners) = ring.indexed_tokens().unzip();
    Ok(pb::RingSnapshot {
        schema_version: SCHEMA_VERSION,
        ring: ring_name.to_string(),
        epoch,
        membership_sequence,
        rebalance_sequence,
        config: Some((*ring.config()).into()),
        members,
        tokens,
        owners,
        checksum: ring.checksum(),
        taken_at: None,
    })
}

/// `ring` if its checksum is the one announced for `epoch`.
fn checked(ring: Ring, expected: u64, epoch: u64) -> Result<Ring, ConvertError> {
    let got = ring.checksum();
    if got != expected {
        return Err(ConvertError::ChecksumMismatch {
            epoch,
            got,
            expected,
        });
    }
    Ok(ring)
}

/// The ring a snapshot describes, checked by the ring (and against its checksum).
pub fn snapshot_to_ring(snapshot: &pb::RingSnapshot) -> Result<Ring, ConvertError> {
    let config = RingConfig::try_from(
        snapshot
            .config
            .as_ref()
            .ok_or(ConvertError::MissingConfig("snapshot"))?,
    )?;
    if let Some(&o) = snapshot
        .owners
        .iter()
        .find(|&&o| o as usize >= snapshot.members.len())
    {
        return Err(ConvertError::BadIndex(o));
    }
    let members = snapshot.members.iter().map(Into::into).collect();
    // Tokens and owners go to the ring as they are stored: no string per token.
    let ring = Ring::from_indexed_parts(
        config,
        members,
        snapshot.tokens.clone(),
        snapshot.owners.clone(),
    )?;
    checked(ring, snapshot.checksum, snapshot.epoch)
}

/// The members of the two rings of a rebalance, matched by id in one walk over both
/// lists (each sorted by id).
struct Matched {
    /// Each member of `before` as an event index: its index in `after` if it stays
    /// (the event lists `after`'s members in order), else `after.len()` plus its place
    /// among the departed.
    old_to_event: Vec<u32>,
    joined: Vec<String>,
    departed: Vec<String>,
    reweighted: Vec<String>,
}

fn match_members(before: &Ring, after: &Ring) -> Matched {
    let old: Vec<&ringside_ring::Member> = before.members().collect();
    let new: Vec<&ringside_ring::Member> = after.members().collect();
    let mut m = Matched {
        old_to_event: Vec::with_capacity(old.len()),
        joined: Vec::new(),
        departed: Vec::new(),
        reweighted: Vec::new(),
    };
    let (mut i, mut j) = (0, 0);
    loop {
        let order = match (old.get(i), new.get(j)) {
            (None, None) => break,
            (Some(x), Some(y)) => x.id.cmp(&y.id),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Equal => {
                if old[i].weight != new[j].weight {
                    m.reweighted.push(new[j].id.clone());
                }
                m.old_to_event.push(j as u32);
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => {
                m.old_to_event.push((new.len() + m.departed.len()) as u32);
                m.departed.push(old[i].id.clone());
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                m.joined.push(new[j].id.clone());
                j += 1;
            }
        }
    }
    m
}

/// The token changes from `before` to `after`, grouped by position: at a position
/// with one owner on each side that differ, a reassignment; otherwise the owners that
/// appear are added and those that vanish are removed. Owners are event indices:
/// `old_to_event` maps `before`'s, and `after`'s are their own (see [`Matched`]).
///
/// The rings differ only at the positions `edits` recorded, so only those are visited
/// (a few hundred for one member of a thousand); when the edits cover everything, one
/// merge walk over both rings' tokens, comparing integers.
fn token_changes(
    before: &Ring,
    after: &Ring,
    old_to_event: &[u32],
    edits: &Edits,
) -> pb::TokenChanges {
    let mut out = pb::TokenChanges::default();
    let Some(positions) = edits.positions() else {
        walk_all_tokens(before, after, old_to_event, &mut out);
        return out;
    };
    let (mut old, mut new): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
    let owners = before
        .owners_at_each(positions)
        .zip(after.owners_at_each(positions));
    for (&token, (was, is)) in positions.iter().zip(owners) {
        old.clear();
        new.clear();
        old.extend(was.map(|o| old_to_event[o as usize]));
        new.extend(is);
        changes_at(token, &mut old, &mut new, &mut out);
    }
    out
}

/// [`token_changes`] over every token of both rings: one merge walk.
fn walk_all_tokens(before: &Ring, after: &Ring, old_to_event: &[u32], out: &mut pb::TokenChanges) {
    // A ring built from nothing adds every token, and one emptied removes every token:
    // the lists' sizes are known, and growing them by doubling would hold up to twice
    // as much (the first event of a 1000-member ring is the reducer's start-up peak).
    if before.is_empty() {
        out.added.reserve_exact(after.token_count());
        out.added_owners.reserve_exact(after.token_count());
    }
    if after.is_empty() {
        out.removed.reserve_exact(before.token_count());
        out.removed_owners.reserve_exact(before.token_count());
    }
    let mut old_tokens = before
        .indexed_tokens()
        .map(|(t, o)| (t, old_to_event[o as usize]))
        .peekable();
    let mut new_tokens = after.indexed_tokens().peekable();
    let (mut old, mut new): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
    loop {
        let token = match (old_tokens.peek(), new_tokens.peek()) {
            (None, None) => break,
            (Some((a, _)), None) => *a,
            (None, Some((b, _))) => *b,
            (Some((a, _)), Some((b, _))) => (*a).min(*b),
        };
        old.clear();
        new.clear();
        while let Some((_, owner)) = old_tokens.next_if(|(t, _)| *t == token) {
            old.push(owner);
        }
        while let Some((_, owner)) = new_tokens.next_if(|(t, _)| *t == token) {
            new.push(owner);
        }
        changes_at(token, &mut old, &mut new, out);
    }
}

/// The token changes at one position, from its owners before and after: one on each
/// side that differ is a reassignment; otherwise (random collisions) the owners are
/// compared as sets and emitted in (token, owner) order.
fn changes_at(token: Token, old: &mut [u32], new: &mut [u32], out: &mut pb::TokenChanges) {
    if let ([from], [to]) = (&*old, &*new) {
        if from != to {
            out.reassigned.push(token);
            out.reassigned_from.push(*from);
            out.reassigned_to.push(*to);
        }
        return;
    }
    old.sort_unstable();
    new.sort_unstable();
    for owner in new.iter().filter(|o| !old.contains(o)) {
        out.added.push(token);
        out.added_owners.push(*owner);
    }
    for owner in old.iter().filter(|o| !new.contains(o)) {
        out.removed.push(token);
        out.removed_owners.push(*owner);
    }
}

/// The `RingRebalanced` of the step from `before` to `after`: members (with details
/// from `details`), joined / departed / reweighted ids, token changes, moved ranges
/// from [`ringside_ring::diff`], fractions, checksums. Compares every token of both
/// rings; the fold, which knows what it changed, uses [`rebalanced_with_members`].
pub fn rebalanced(
    before: &Ring,
    after: &Ring,
    details: &[pb::Member],
    epoch: u64,
    membership_sequence: u64,
) -> Result<pb::RingRebalanced, ConvertError> {
    rebalanced_with_members(
        before,
        after,
        &Edits::all(),
        member_details(after, details)?,
        epoch,
        membership_sequence,
    )
}

/// [`rebalanced`] for rings that differ only at the positions of `edits` (recorded by
/// the changes that made `after` from `before`), with the event's members already
/// built: `after`'s members in its order (by id), each with its details (the weights
/// are taken from `after`). Visits the changed positions only, and saves a lookup and
/// a copy per member.
pub fn rebalanced_with_members(
    before: &Ring,
    after: &Ring,
    edits: &Edits,
    mut members: Vec<pb::Member>,
    epoch: u64,
    membership_sequence: u64,
) -> Result<pb::RingRebalanced, ConvertError> {
    if members.len() != after.len() {
        let listed: std::collections::BTreeSet<&str> =
            members.iter().map(|m| m.id.as_str()).collect();
        let missing = after
            .members()
            .find(|m| !listed.contains(m.id.as_str()))
            .map_or_else(String::new, |m| m.id.clone());
        return Err(ConvertError::MissingMemberDetails(missing));
    }
    for (detail, member) in members.iter_mut().zip(after.members()) {
        if detail.id != member.id {
            return Err(ConvertError::MissingMemberDetails(member.id.clone()));
        }
        detail.weight = member.weight;
    }
    let matched = match_members(before, after);
    let token_changes = token_changes(before, after, &matched.old_to_event, edits);
    // Owners as event indices, like the token changes: `before`'s through the match,
    // `after`'s are their own (the members were checked to be its members, in order).
    let diff = ringside_ring::diff_at_indexed(before, after, edits);
    let count = diff.ranges.len();
    let mut moved = pb::MovedRanges {
        starts: Vec::with_capacity(count),
        ends: Vec::with_capacity(count),
        from: Vec::with_capacity(count),
        to: Vec::with_capacity(count),
    };
    for r in &diff.ranges {
        moved.starts.push(r.start);
        moved.ends.push(r.end);
        moved.from.push(
            r.from
                .map_or(NO_OWNER, |o| matched.old_to_event[o as usize]),
        );
        moved.to.push(r.to.unwrap_or(NO_OWNER));
    }
    Ok(pb::RingRebalanced {
        epoch,
        membership_sequence,
        config: Some((*after.config()).into()),
        members,
        joined: matched.joined,
        departed: matched.departed,
        reweighted: matched.reweighted,
        token_changes: Some(token_changes),
        moved_ranges: Some(moved),
        moved_fraction: diff.moved_fraction,
        ideal_fraction: diff.ideal_fraction,
        previous_checksum: before.checksum(),
        checksum: after.checksum(),
        token_count: after.token_count() as u64,
    })
}

/// Rebuilds the ring after a rebalance from the ring before it and the event alone,
/// and checks it against the event's checksum (what `replay verify` needs).
///
/// One merge walk over the ring's tokens by member index (linear, no string per
/// token): the tokens the event removes or reassigns are left out, and those it adds
/// or reassigns are merged in, in (position, member id) order.
pub fn apply_rebalanced(before: &Ring, event: &pb::RingRebalanced) -> Result<Ring, ConvertError> {
    let config = RingConfig::try_from(
        event
            .config
            .as_ref()
            .ok_or(ConvertError::MissingConfig("RingRebalanced"))?,
    )?;
    // Member index: members first, then departed (see TokenChanges in the proto).
    let listed = event.members.len() + event.departed.len();
    let name = |i: u32| -> &str {
        let at = i as usize;
        match at.checked_sub(event.members.len()) {
            None => &event.members[at].id,
            Some(j) => &event.departed[j],
        }
    };
    let checked_index = |i: u32| {
        if (i as usize) < listed {
            Ok(i)
        } else {
            Err(ConvertError::BadIndex(i))
        }
    };
    // Members sort by id (which the event's order should already be): rank them so
    // that tokens sort by (position, member id) whatever the order. Departed members
    // rank last: a token of theirs may not stay.
    let mut by_id: Vec<u32> = (0..event.members.len() as u32).collect();
    by_id.sort_by(|&a, &b| name(a).cmp(name(b)));
    let mut rank = vec![u32::MAX; listed];
    for (r, &i) in (0u32..).zip(&by_id) {
        rank[i as usize] = r;
    }
    let key = |t: Token, i: u32| (t, rank[i as usize]);

    let none = pb::TokenChanges::default();
    let changes = event.token_changes.as_ref().unwrap_or(&none);
    let mut dropped: Vec<(Token, u32)> = Vec::new();
    let mut added: Vec<(Token, u32)> = Vec::new();
    for (t, o) in changes.removed.iter().zip(&changes.removed_owners) {
        dropped.push((*t, checked_index(*o)?));
    }
    for ((t, from), to) in changes
        .reassigned
        .iter()
        .zip(&changes.reassigned_from)
        .zip(&changes.reassigned_to)
    {
        dropped.push((*t, checked_index(*from)?));
        added.push((*t, checked_index(*to)?));
    }
    for (t, o) in changes.added.iter().zip(&changes.added_owners) {
        added.push((*t, checked_index(*o)?));
    }
    dropped.sort_unstable();
    added.sort_unstable_by_key(|&(t, o)| key(t, o));

    // The event's index of each member of `before` (None: the event does not know it,
    // so none of its tokens may stay).
    let index = MemberIndex::new(&event.members, &event.departed);
    let before_ids: Vec<&str> = before.members().map(|m| m.id.as_str()).collect();
    let in_event: Vec<Option<u32>> = before_ids.iter().map(|id| index.of(id).ok()).collect();

    let unknown = |id: &str| ConvertError::Ring(RingError::UnknownMember(id.to_string()));
    let mut tokens: Vec<Token> = Vec::with_capacity(before.token_count() + added.len());
    let mut owners: Vec<u32> = Vec::with_capacity(tokens.capacity());
    let mut push = |t: Token, o: u32| -> Result<(), ConvertError> {
        if rank[o as usize] == u32::MAX {
            return Err(unknown(name(o)));
        }
        // The same token on both sides (an addition of a token still there) once.
        if tokens.last() != Some(&t) || owners.last() != Some(&o) {
            tokens.push(t);
            owners.push(o);
        }
        Ok(())
    };
    let mut gone = 0;
    let mut new = added.iter().peekable();
    for (t, b) in before.indexed_tokens() {
        let Some(o) = in_event[b as usize] else {
            return Err(unknown(before_ids[b as usize]));
        };
        while dropped.get(gone).is_some_and(|d| d.0 < t) {
            gone += 1;
        }
        if dropped[gone..]
            .iter()
            .take_while(|d| d.0 == t)
            .any(|d| d.1 == o)
        {
            continue;
        }
        while let Some(&(at, by)) = new.next_if(|&&(at, by)| key(at, by) <= key(t, o)) {
            push(at, by)?;
        }
        push(t, o)?;
    }
    for &(t, o) in new {
        push(t, o)?;
    }
    let members = event.members.iter().map(Into::into).collect();
    let ring = Ring::from_indexed_parts(config, members, tokens, owners)?;
    checked(ring, event.checksum, event.epoch)
}
