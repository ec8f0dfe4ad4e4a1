//! Tokens of [`crate::Strategy::Random`]: a member of weight `w` holds the first
//! `vnodes * w` distinct values of `xxh3_64(id ++ 0x00 ++ le32(i), HASH_SEED)` for
//! `i = 0, 1, ...`, so the ring depends only on the member set.
//!
//! Two members drawing the same position both keep their token; the member with the
//! smaller id comes first there and owns the arc, the other's token owns nothing. That
//! keeps the ring a function of the member set and keeps movement minimal even then.

use std::collections::BTreeSet;

use crate::members::{check_joiner, index_by_id};
use crate::plan::{Piece, Who, arc_width, whole_ring};
use crate::slots::{Slot, arc_at, check_token_limit, seek, slot_at};
use crate::{HASH_SEED, Member, RingConfig, RingError, Token};

/// The member's tokens: its first `count` distinct candidates, sorted.
pub(crate) fn member_tokens(id: &str, count: usize) -> Vec<Token> {
    let mut candidates = Candidates::new(id);
    first_distinct(count, (0..=u32::MAX).map(move |i| candidates.get(i)))
}

/// The hash input of a member's candidates, `id ++ 0x00 ++ le32(i)`, written once and
/// given each index in turn.
struct Candidates {
    input: Vec<u8>,
}

impl Candidates {
    fn new(id: &str) -> Candidates {
        let mut input = Vec::with_capacity(id.len() + 5);
        input.extend_from_slice(id.as_bytes());
        input.extend_from_slice(&[0; 5]);
        Candidates { input }
    }

    /// The member's `i`-th candidate.
    fn get(&mut self, i: u32) -> Token {
        let at = self.input.len() - 4;
        self.input[at..].copy_from_slice(&i.to_le_bytes());
        xxhash_rust::xxh3::xxh3_64_with_seed(&self.input, HASH_SEED)
    }
}

/// The first `count` distinct values of `candidates` (fewer if it runs out), sorted.
pub(crate) fn first_distinct(count: usize, mut candidates: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut out = Vec::with_capacity(count);
    // Each round draws exactly as many candidates as are missing, so when the count is
    // reached no drawn candidate was a repeat: the set is the first `count` distinct.
    while out.len() < count {
        let before = out.len();
        out.extend(candidates.by_ref().take(count - before));
        if out.len() == before {
            break;
        }
        out.sort_unstable();
        out.dedup();
    }
    out
}

/// Whether `slots` (sorted by position, owners indexing `members`) are exactly the
/// random derivation of `members` with `vnodes`: every member holds its first
/// `vnodes * weight` distinct candidates and nothing else. An error if the derivation
/// would hold more than [`crate::MAX_TOKENS`] tokens.
pub(crate) fn is_derivation(
    members: &[Member],
    vnodes: u32,
    slots: &[Slot],
) -> Result<bool, RingError> {
    let counts: Vec<usize> = members
        .iter()
        .map(|m| (u64::from(vnodes) * u64::from(m.weight)) as usize)
        .collect();
    check_token_limit(counts.iter().map(|&c| c as u64).sum())?;
    if counts.iter().sum::<usize>() != slots.len() {
        return Ok(false);
    }
    // Each member's positions, in ring order (so ascending), side by side.
    let mut next: Vec<usize> = counts
        .iter()
        .scan(0, |start, &c| {
            let at = *start;
            *start += c;
            Some(at)
        })
        .collect();
    let ends: Vec<usize> = next.iter().zip(&counts).map(|(s, c)| s + c).collect();
    let mut positions = vec![0; slots.len()];
    for s in slots {
        let o = s.owner as usize;
        if next[o] == ends[o] {
            return Ok(false); // More tokens than the member derives.
        }
        positions[next[o]] = s.token;
        next[o] += 1;
    }
    // With the total equal and no member holding more, none holds fewer.
    Ok(members
        .iter()
        .zip(ends.iter().zip(&counts))
        .all(|(m, (&end, &count))| member_tokens(&m.id, count) == positions[end - count..end]))
}

/// The slots after a joiner with `tokens` (sorted) takes member index `pos`, written
/// into `out` (empty): existing owners at or above `pos` shift up by one, and equal
/// positions stay ordered by id.
pub(crate) fn merge_joiner(
    slots: &[Slot],
    tokens: &[Token],
    pos: u32,
    mut out: Vec<Slot>,
) -> Vec<Slot> {
    let shifted = |s: &Slot| Slot {
        token: s.token,
        owner: s.owner + u32::from(s.owner >= pos),
    };
    let mut from = 0;
    for &token in tokens {
        // Before the joiner's token: smaller positions, and at its position the members
        // with smaller ids (indices below `pos`).
        let mut at = seek(slots, from, token);
        while slots
            .get(at)
            .is_some_and(|s| s.token == token && s.owner < pos)
        {
            at += 1;
        }
        out.extend(slots[from..at].iter().map(shifted));
        out.push(Slot { token, owner: pos });
        from = at;
    }
    out.extend(slots[from..].iter().map(shifted));
    out
}

/// The slots after `leaver` (an index) leaves, owners renumbered by `shift`, written
/// into `kept` (empty), and the positions of the leaver's tokens (sorted).
pub(crate) fn drop_member(
    slots: &[Slot],
    leaver: u32,
    shift: impl Fn(u32) -> u32,
    mut kept: Vec<Slot>,
) -> (Vec<Slot>, Vec<Token>) {
    let mut dropped = Vec::new();
    for s in slots {
        if s.owner == leaver {
            dropped.push(s.token);
        } else {
            kept.push(Slot {
                token: s.token,
                owner: shift(s.owner),
            });
        }
    }
    (kept, dropped)
}

/// The members and slots after the leaves, then the joins, of one change of a ring
/// of `members` and `slots`, built at once: every step is checked as it would be on
/// its own (the same errors, in the same order), then the kept slots, renumbered, and
/// every joiner's tokens are merged in one sort (the ring is a function of its member
/// set, so the order of the steps changes nothing else). Filled into `out` (empty).
pub(crate) fn change_at_once(
    config: &RingConfig,
    members: &[Member],
    slots: &[Slot],
    leave: &[&str],
    join: Vec<Member>,
    mut out: Vec<Slot>,
) -> Result<(Vec<Member>, Vec<Slot>), RingError> {
    let mut gone = vec![false; members.len()];
    for &id in leave {
        match index_by_id(members, id) {
            Some(i) if !gone[i] => gone[i] = true,
            _ => return Err(RingError::UnknownMember(id.to_owned())),
        }
    }
    let kept = |id: &str| index_by_id(members, id).is_some_and(|i| !gone[i]);
    let mut tokens = slots.iter().filter(|s| !gone[s.owner as usize]).count() as u64;
    let mut joined = BTreeSet::new();
    for m in &join {
        check_joiner(config, m, kept(&m.id) || !joined.insert(m.id.as_str()))?;
        tokens += u64::from(config.vnodes) * u64::from(m.weight);
        check_token_limit(tokens)?;
    }
    // The joiners' ids it borrows go into the member list below.
    drop(joined);
    let mut after: Vec<Member> = (members.iter().zip(&gone))
        .filter(|(_, gone)| !**gone)
        .map(|(m, _)| m.clone())
        .chain(join)
        .collect();
    after.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    // Kept members are found; the slots of the others are dropped unread.
    let new_index = |id: &str| index_by_id(&after, id).map_or(u32::MAX, |i| i as u32);
    let renumber: Vec<u32> = members.iter().map(|m| new_index(&m.id)).collect();
    out.extend(
        (slots.iter())
            .filter(|s| !gone[s.owner as usize])
            .map(|s| Slot {
                token: s.token,
                owner: renumber[s.owner as usize],
            }),
    );
    for m in after.iter().filter(|m| !kept(&m.id)) {
        let owner = new_index(&m.id);
        let count = (u64::from(config.vnodes) * u64::from(m.weight)) as usize;
        out.extend(
            member_tokens(&m.id, count)
                .into_iter()
                .map(|token| Slot { token, owner }),
        );
    }
    // Sorted runs (the kept slots, each joiner's tokens): the stable sort merges them.
    out.sort();
    Ok((after, out))
}

/// Pieces a joiner with id `joiner` and sorted distinct `tokens` takes from a ring of
/// `slots` and `members`: for each token `j` that comes first at its position, the arc
/// from the nearest preceding token (old or the joiner's own) to `j`, from the owner of
/// the first old token at or after `j`.
pub(crate) fn join_pieces(
    slots: &[Slot],
    members: &[Member],
    tokens: &[Token],
    joiner: &str,
) -> Vec<Piece> {
    let (Some(&highest), false) = (tokens.last(), slots.is_empty()) else {
        return match tokens.last() {
            Some(&t) => vec![Piece {
                start: t,
                end: t,
                from: Who::Nobody,
                to: Who::Joiner,
                at: 0,
            }],
            None => Vec::new(),
        };
    };
    let n = slots.len();
    let mut prev_own = highest;
    let mut pieces = Vec::with_capacity(tokens.len());
    for &j in tokens {
        let prev_joiner = std::mem::replace(&mut prev_own, j);
        let s = slot_at(slots, j);
        let at = slots[s];
        if at.token == j && joiner > members[at.owner as usize].id.as_str() {
            continue; // Behind an older token at the same position: owns nothing.
        }
        let prev_old = slots[(s + n - 1) % n].token;
        // The nearer of the two predecessors, counter-clockwise from j.
        let back = |p: Token| arc_width(p, j);
        let start = if back(prev_joiner) < back(prev_old) {
            prev_joiner
        } else {
            prev_old
        };
        pieces.push(Piece {
            start,
            end: j,
            from: Who::Member(at.owner),
            to: Who::Joiner,
            at: 0,
        });
    }
    pieces
}

/// Pieces of a leaving member (index, ring of two or more members): each of its arcs
/// goes to the owner of the next token that is not its own.
pub(crate) fn leave_pieces(slots: &[Slot], leaver: u32) -> Vec<Piece> {
    let n = slots.len();
    let Some(anchor) = slots.iter().position(|s| s.owner != leaver) else {
        return vec![whole_ring(slots, Who::Nobody)];
    };
    let mut pieces = Vec::new();
    let mut pending: Vec<usize> = Vec::new();
    // Walk one lap starting after a token of another member, so every run of the
    // leaver's tokens is followed by its heir before the walk ends.
    for step in 1..=n {
        let i = (anchor + step) % n;
        if slots[i].owner == leaver {
            pending.push(i);
            continue;
        }
        for k in pending.drain(..) {
            let arc = arc_at(slots, k);
            if arc.len > 0 {
                pieces.push(Piece {
                    start: arc.start,
                    end: arc.end,
                    from: Who::Member(leaver),
                    to: Who::Member(slots[i].owner),
                    at: 0,
                });
            }
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_distinct_skips_repeats_in_draw_order() {
        let draws = [5u64, 3, 5, 5, 9, 3, 1, 7];
        assert_eq!(first_distinct(4, draws.into_iter()), vec![1, 3, 5, 9]);
        assert_eq!(first_distinct(3, draws.into_iter()), vec![3, 5, 9]);
        // Fewer distinct values than asked: all of them.
        assert_eq!(first_distinct(10, [2u64, 2, 1].into_iter()), vec![1, 2]);
        assert_eq!(first_distinct(0, draws.into_iter()), Vec::<u64>::new());
    }

    #[test]
    fn candidates_hash_id_zero_byte_and_index() {
        let mut input = b"node-1".to_vec();
        input.push(0);
        input.extend_from_slice(&7u32.to_le_bytes());
        assert_eq!(
            Candidates::new("node-1").get(7),
            xxhash_rust::xxh3::xxh3_64_with_seed(&input, HASH_SEED)
        );
        assert_eq!(member_tokens("node-1", 5).len(), 5);
    }
}
