//! What moved between two rings: the ranges that changed owner, from whom to whom, and
//! how much of the key space that is against the least any change of shares must move.
//!
//! [`diff`] compares any two rings; [`crate::Ring::plan_add`] and
//! [`crate::Ring::plan_remove`] produce the same [`RingDiff`] from a plan's pieces
//! without building the new ring. Both end in [`into_diff`], which puts ranges in their
//! one canonical form (sorted by end, adjacent ranges with the same owners merged), so
//! equal changes always compare equal.

use std::collections::BTreeMap;

use crate::balanced::Layout;
use crate::ring::{RING, Ring, Share, Slot, before, seek};
use crate::{Strategy, Token};

/// A range of positions `(start, end]` (clockwise, wrapping) that changed owner.
/// `start == end` is the whole ring. Owners are member ids, where an empty id stands
/// for "no owner" (an empty ring); or, from [`diff_at_indexed`], member indices
/// ([`MemberAt`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MovedRange<Owner = String> {
    /// Exclusive start position.
    pub start: Token,
    /// Inclusive end position.
    pub end: Token,
    /// Owner before the change ("" if the old ring was empty).
    pub from: Owner,
    /// Owner after the change ("" if the new ring is empty).
    pub to: Owner,
}

/// An owner named by its index in a ring's member list (sorted by id), `None` for no
/// owner (an empty ring).
pub type MemberAt = Option<u32>;

impl<Owner> MovedRange<Owner> {
    /// Number of positions in the range (`2^64` for the whole ring).
    pub fn width(&self) -> u128 {
        arc_width(self.start, self.end)
    }

    /// Whether the ring position `hash` lies in the range.
    pub fn contains(&self, hash: u64) -> bool {
        self.start == self.end
            || hash.wrapping_sub(self.start).wrapping_sub(1) < self.end.wrapping_sub(self.start)
    }
}

/// The change between two rings.
#[derive(Clone, Debug, PartialEq)]
pub struct RingDiff<Owner = String> {
    /// Disjoint moved ranges sorted by `end`; a range wrapping past 0 comes first.
    pub ranges: Vec<MovedRange<Owner>>,
    /// Total width of the moved ranges (`2^64` is the whole ring).
    pub moved: u128,
    /// `moved / 2^64`.
    pub moved_fraction: f64,
    /// The least fraction any placement must move between the two rings' weight
    /// targets: the sum over members of `max(0, new share - old share)` (an empty ring
    /// counts as one pseudo-member owning everything, so a ring emptied or filled from
    /// empty gives 1). Adding one of `n + 1` equal members gives `1 / (n + 1)`.
    pub ideal_fraction: f64,
}

impl<Owner> RingDiff<Owner> {
    /// Whether nothing moved.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// `moved_fraction / ideal_fraction`, or `None` when nothing had to move.
    pub fn moved_over_ideal(&self) -> Option<f64> {
        (self.ideal_fraction > 0.0).then(|| self.moved_fraction / self.ideal_fraction)
    }

    /// The moved range containing position `hash`, if it moved.
    pub fn range_at(&self, hash: u64) -> Option<&MovedRange<Owner>> {
        let i = self.ranges.partition_point(|r| r.end < hash);
        // A range wrapping past 0 sorts first (it has the smallest end) and also holds
        // positions after every other range's end.
        [self.ranges.get(i), self.ranges.first()]
            .into_iter()
            .flatten()
            .find(|r| r.contains(hash))
    }
}

impl RingDiff {
    /// The ownership after the change, given the ownership before it (as from
    /// [`Ring::ownership`]): every moved range's width leaves `from` and joins `to`.
    /// Members left with nothing and the "" pseudo-owner are dropped; sorted by id.
    pub fn apply(&self, before: &[Share]) -> Vec<Share> {
        let mut arcs: BTreeMap<&str, i128> = before
            .iter()
            .map(|s| (s.id.as_str(), s.arc as i128))
            .collect();
        for r in &self.ranges {
            *arcs.entry(r.from.as_str()).or_default() -= r.width() as i128;
            *arcs.entry(r.to.as_str()).or_default() += r.width() as i128;
        }
        arcs.into_iter()
            .filter(|&(id, arc)| !id.is_empty() && arc != 0)
            .map(|(id, arc)| Share {
                id: id.to_owned(),
                arc: arc.unsigned_abs(),
                fraction: fraction(arc.unsigned_abs()),
            })
            .collect()
    }
}

/// Owner reference inside a plan: a member index of the ring the plan belongs to, the
/// member being added, or nobody (an empty ring).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Who {
    /// Index into the ring's sorted member list.
    Member(u32),
    /// The member being added.
    Joiner,
    /// No owner: the ring is empty on that side.
    Nobody,
}

/// One moved range of a plan, before naming and merging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    /// Exclusive start.
    pub(crate) start: Token,
    /// Inclusive end.
    pub(crate) end: Token,
    /// Owner before.
    pub(crate) from: Who,
    /// Owner after.
    pub(crate) to: Who,
    /// The token whose arc holds the piece, as the planning layout names it (a
    /// [`crate::LinkedRing`]'s node); 0 where the layout names none. The balanced plans
    /// list the pieces of one arc clockwise, but for the one ending at the arc's own
    /// token, which may come anywhere: a `LinkedRing` inserts each piece's end just
    /// before that token, in the order given.
    pub(crate) at: u32,
}

/// The positions at which a ring's tokens changed (a token added, removed, or given to
/// another member) over one or more changes: [`crate::Ring::add_recording`] and
/// [`crate::Ring::remove_recording`] add to it. Two versions of a ring differ only at
/// these positions, so [`diff_at`] (and any other comparison) can visit them alone
/// instead of every token: a change of one member out of a thousand touches a few
/// hundred positions of a ring of 150,000 tokens.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Edits {
    /// Sorted, without repeats.
    positions: Vec<Token>,
    /// A change was not recorded position by position (a ring emptied, or left with a
    /// single member): compare everything.
    all: bool,
}

impl Edits {
    /// Edits that cover every position: comparisons visit every token.
    pub fn all() -> Edits {
        Edits {
            positions: Vec::new(),
            all: true,
        }
    }

    /// The changed positions, sorted and distinct; `None` if every position counts.
    pub fn positions(&self) -> Option<&[Token]> {
        (!self.all).then_some(&self.positions[..])
    }

    /// Adds changed positions.
    pub(crate) fn record(&mut self, positions: impl IntoIterator<Item = Token>) {
        if !self.all {
            self.positions.extend(positions);
            // A few sorted runs (each change's positions come in order): the stable
            // sort merges runs instead of sorting from scratch.
            self.positions.sort();
            self.positions.dedup();
        }
    }

    /// Records a change that touched (or may have touched) every position.
    pub(crate) fn record_all(&mut self) {
        self.all = true;
        self.positions = Vec::new();
    }
}

/// [`diff`] of two rings that differ only at the positions of `edits` (`new` is `old`
/// after the changes that recorded them), visiting those positions alone. Equal to
/// `diff(old, new)`; the property tests check it.
pub fn diff_at(old: &Ring, new: &Ring, edits: &Edits) -> RingDiff {
    let (pieces, ideal) = pieces_at(old, new, edits);
    into_diff(pieces, |w| name(old, w), |w| name(new, w), ideal)
}

/// [`diff_at`] with owners as member indices instead of ids: `from` indexes `old`'s
/// members, `to` `new`'s (no string per range, for a caller that numbers members
/// itself). The same ranges, in the same order.
pub fn diff_at_indexed(old: &Ring, new: &Ring, edits: &Edits) -> RingDiff<MemberAt> {
    let (pieces, ideal) = pieces_at(old, new, edits);
    into_diff(pieces, index, index, ideal)
}

/// The pieces of [`diff_at`] (before merging) and the ideal fraction.
fn pieces_at(old: &Ring, new: &Ring, edits: &Edits) -> (Vec<Piece>, f64) {
    let (a, b) = (&old.slots[..], &new.slots[..]);
    let spread = |s: &[Slot]| s.first().map(|f| f.token) != s.last().map(|l| l.token);
    let (same, ideal) = match_members(old, new);
    // A ring with all its tokens at one position (or none) has arcs that wrap around
    // in special ways: the full walk handles those.
    let (Some(positions), true, true) = (edits.positions(), spread(a), spread(b)) else {
        return (pieces(old, new, &same), ideal);
    };
    // From the first slot at or after `p` (searched from where the previous, smaller
    // position was found): its index and whether it sits at `p`, both wrapping, and
    // the position of the slot before it (each ring has two distinct positions).
    let around = |s: &[Slot], from: &mut usize, p: Token| {
        let i = seek(s, *from, p);
        *from = i;
        let previous = s[before(i, s.len())].token;
        let on = s.get(i).is_some_and(|x| x.token == p);
        (if i == s.len() { 0 } else { i }, on, previous)
    };
    let (mut from_a, mut from_b) = (0, 0);
    let mut pieces = Vec::new();
    for &p in positions {
        let (i, on_a, before_a) = around(a, &mut from_a, p);
        let (j, on_b, before_b) = around(b, &mut from_b, p);
        // A recorded position with no token left on either side (an edit dropped
        // again) ends no interval: the next position does.
        if !(on_a || on_b) {
            continue;
        }
        let (from, to) = (a[i].owner, b[j].owner);
        if same[from as usize] == Some(to) {
            continue;
        }
        // The interval ending at `p` starts at the nearest token before it, of either
        // ring (clockwise distance, wrapping).
        let start = if p.wrapping_sub(before_a) <= p.wrapping_sub(before_b) {
            before_a
        } else {
            before_b
        };
        pieces.push(Piece {
            start,
            end: p,
            from: Who::Member(from),
            to: Who::Member(to),
            at: 0,
        });
    }
    (pieces, ideal)
}

/// The ranges that differ between two rings, compared position by position.
pub fn diff(old: &Ring, new: &Ring) -> RingDiff {
    let (same, ideal) = match_members(old, new);
    into_diff(
        pieces(old, new, &same),
        |w| name(old, w),
        |w| name(new, w),
        ideal,
    )
}

/// The pieces of [`diff`] (before merging), given each old member's new index.
fn pieces(old: &Ring, new: &Ring, same: &[Option<u32>]) -> Vec<Piece> {
    let (a, b) = (&old.slots[..], &new.slots[..]);
    // Every token of either ring is a boundary; between consecutive boundaries both
    // owners are constant, and equal to the owners of the first token at or after the
    // upper boundary.
    let Some(last) = [a.last(), b.last()]
        .into_iter()
        .flatten()
        .map(|s| s.token)
        .max()
    else {
        return Vec::new();
    };
    let owner = |slots: &[Slot], i: usize| match slots.get(i).or(slots.first()) {
        Some(s) => Who::Member(s.owner),
        None => Who::Nobody,
    };
    // Owners compare by id: an old member index maps to its new index, if any.
    let differ = |from: Who, to: Who| match (from, to) {
        (Who::Member(x), Who::Member(y)) => same[x as usize] != Some(y),
        (Who::Nobody, Who::Nobody) => false,
        _ => true,
    };
    // Only random rings can hold two tokens at one position.
    let may_share = [old, new]
        .iter()
        .any(|r| r.config.strategy == Strategy::Random);
    // A ring built from nothing (or emptied) moves every arc, so the number of pieces
    // is known: growing the list by doubling would hold up to twice as much, and both
    // copies while it grows (at 1000 members, 147,000 pieces: 4.7 MB instead of up to
    // 12.6 MB at the reducer's start-up peak).
    let mut pieces = Vec::with_capacity(if a.is_empty() || b.is_empty() {
        a.len() + b.len()
    } else {
        0
    });
    let (mut i, mut j, mut start) = (0, 0, last);
    loop {
        // Most tokens are in both rings with the same owner, each ending an unchanged
        // interval: skip them pairwise. A position shared with the next token takes the
        // general step below.
        while let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
            let shared = may_share
                && (a.get(i + 1).is_some_and(|n| n.token == x.token)
                    || b.get(j + 1).is_some_and(|n| n.token == y.token));
            if x.token != y.token || same[x.owner as usize] != Some(y.owner) || shared {
                break;
            }
            start = x.token;
            i += 1;
            j += 1;
        }
        let next = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.token.min(y.token),
            (Some(x), None) => x.token,
            (None, Some(y)) => y.token,
            (None, None) => break,
        };
        let (from, to) = (owner(a, i), owner(b, j));
        if differ(from, to) {
            pieces.push(Piece {
                start,
                end: next,
                from,
                to,
                at: 0,
            });
        }
        start = next;
        while a.get(i).is_some_and(|s| s.token <= next) {
            i += 1;
        }
        while b.get(j).is_some_and(|s| s.token <= next) {
            j += 1;
        }
    }
    pieces
}

/// The members of `old` matched to those of `new` by id (each old index to its new
/// index, if the member is still there), and `ideal_fraction` between the two rings
/// from their members' weights, exactly: with totals `W` (old) and `V` (new),
/// `sum max(0, v_i * W - w_i * V) / (W * V)`. One walk over both sorted member lists.
fn match_members(old: &Ring, new: &Ring) -> (Vec<Option<u32>>, f64) {
    let (w_old, w_new) = (old.total_weight(), new.total_weight());
    let mut same = vec![None; old.members.len()];
    let mut num = 0u128;
    let (mut i, mut j) = (0, 0);
    loop {
        let (w, v) = match (old.members.get(i), new.members.get(j)) {
            (None, None) => break,
            (Some(x), Some(y)) if x.id == y.id => {
                same[i] = Some(j as u32);
                i += 1;
                j += 1;
                (x.weight, y.weight)
            }
            (Some(x), Some(y)) if x.id < y.id => {
                i += 1;
                (x.weight, 0)
            }
            (Some(x), None) => {
                i += 1;
                (x.weight, 0)
            }
            (_, Some(y)) => {
                j += 1;
                (0, y.weight)
            }
        };
        num += (u128::from(v) * w_old).saturating_sub(u128::from(w) * w_new);
    }
    let ideal = if w_old == 0 && w_new == 0 {
        0.0
    } else {
        ideal_fraction(num, w_old * w_new)
    };
    (same, ideal)
}

/// The member index behind an owner reference (`None` for nobody).
fn index(who: Who) -> MemberAt {
    match who {
        Who::Member(i) => Some(i),
        Who::Joiner | Who::Nobody => None,
    }
}

/// The member id behind an owner reference of `ring` ("" for nobody).
fn name(ring: &Ring, who: Who) -> String {
    match who {
        Who::Member(i) => ring.members[i as usize].id.clone(),
        Who::Joiner | Who::Nobody => String::new(),
    }
}

/// `num / den` as a fraction; `den == 0` means one ring is empty and the other not, so
/// everything moves.
pub(crate) fn ideal_fraction(num: u128, den: u128) -> f64 {
    if den == 0 {
        1.0
    } else {
        num as f64 / den as f64
    }
}

/// `arc / 2^64`.
pub(crate) fn fraction(arc: u128) -> f64 {
    arc as f64 / RING as f64
}

/// Width of `(start, end]`, where `start == end` is the whole ring.
pub(crate) fn arc_width(start: Token, end: Token) -> u128 {
    match end.wrapping_sub(start) {
        0 => RING,
        d => u128::from(d),
    }
}

/// The whole ring moving from the ring's only member to `to`.
pub(crate) fn whole_ring(ring: &Ring, to: Who) -> Piece {
    let last = ring
        .slots
        .last()
        .map_or((u64::MAX, Who::Nobody), |s| (s.token, Who::Member(s.owner)));
    Piece {
        start: last.0,
        end: last.0,
        from: last.1,
        to,
        at: 0,
    }
}

/// Names and merges plan pieces into the canonical [`RingDiff`]: sorted by end, with
/// adjacent pieces of the same owners merged (also across position 0).
pub(crate) fn into_diff<Owner>(
    mut pieces: Vec<Piece>,
    from_name: impl Fn(Who) -> Owner,
    to_name: impl Fn(Who) -> Owner,
    ideal_fraction: f64,
) -> RingDiff<Owner> {
    pieces.sort_unstable_by_key(|p| p.end);
    // Merged in place (a ring's first diff can hold every arc): each piece extends the
    // last one kept or is kept after it.
    let mut kept = 0usize;
    for i in 0..pieces.len() {
        let p = pieces[i];
        match kept.checked_sub(1).map(|k| &mut pieces[k]) {
            Some(m) if m.end == p.start && (m.from, m.to) == (p.from, p.to) => m.end = p.end,
            _ => {
                pieces[kept] = p;
                kept += 1;
            }
        }
    }
    pieces.truncate(kept);
    let mut merged = pieces;
    if merged.len() > 1 {
        let (first, last) = (merged[0], merged[merged.len() - 1]);
        if last.end == first.start && (last.from, last.to) == (first.from, first.to) {
            merged[0].start = last.start;
            merged.pop();
        }
    }
    let ranges: Vec<MovedRange<Owner>> = merged
        .into_iter()
        .map(|p| MovedRange {
            start: p.start,
            end: p.end,
            from: from_name(p.from),
            to: to_name(p.to),
        })
        .collect();
    let moved = ranges.iter().map(MovedRange::width).sum();
    RingDiff {
        ranges,
        moved,
        moved_fraction: fraction(moved),
        ideal_fraction,
    }
}
