//! What moved between two rings: the ranges that changed owner, from whom to whom, and
//! how much of the key space that is against the least any change of shares must move.
//!
//! [`diff`] compares any two rings token by token; [`diff_at`] visits only the
//! positions a run of changes recorded ([`Edits`]); [`Ring::plan_add`] and
//! [`Ring::plan_remove`] produce the same [`RingDiff`] from a plan's pieces without
//! building the new ring. All end in `into_diff`'s canonical form, so equal changes
//! always compare equal.

use std::collections::BTreeMap;

use super::{Ring, Share};
use crate::balanced::Layout;
use crate::plan::{Edits, Ideal, MemberAt, Piece, RingDiff, Who, fraction, into_diff};
use crate::slots::{Slot, before, seek};
use crate::{Strategy, Token};

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
fn pieces_at(old: &Ring, new: &Ring, edits: &Edits) -> (Vec<Piece>, Ideal) {
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
/// index, if the member is still there), and the ideal fraction between the two rings
/// from their members' weights, exactly: with totals `W` (old) and `V` (new),
/// `sum max(0, v_i * W - w_i * V) / (W * V)`. One walk over both sorted member lists.
fn match_members(old: &Ring, new: &Ring) -> (Vec<Option<u32>>, Ideal) {
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
        Ideal::NOTHING
    } else {
        Ideal::new(num, w_old * w_new)
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
