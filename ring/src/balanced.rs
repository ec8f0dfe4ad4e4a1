//! The load-aware strategy ([`crate::Strategy::Balanced`]): joins and leaves that keep
//! every member's exact share close to its weight's share, in integer arithmetic only.
//!
//! - **Join.** The joiner's target is `floor(2^64 * w / W')` (`W'` the total weight after
//!   the join). It takes it from at most `vnodes * w` donors, the members with the
//!   highest owned-per-weight ratio, by water-filling: all donors above a common level
//!   give down to it. Each donor gives from its largest arc (a new token inside it), or
//!   whole arcs, largest first, when its amount exceeds its largest arc.
//! - **Leave.** Each arc of the leaver, largest first, is shared between its two
//!   neighbouring members (the left part extends the left neighbour, the right part the
//!   right one, which removes tokens instead of adding them), equalising their ratios
//!   but filling neither past `(1 + 1/128)` times its weight's share. What they cannot
//!   take goes to the members furthest below their share, by water-filling.
//!
//! Both move only the joiner's or the leaver's ranges. Token counts stay bounded under
//! churn: a join adds at most one token per donor, and a leave removes one token per
//! arc its neighbours absorb. The full rules are in `docs/ring-spec.md`.

use std::cmp::Ordering;

use crate::plan::{Piece, Who};
use crate::slots::{ArcSpan, RING, check_token_limit};
use crate::{Member, RingError, Token};

/// Neighbours absorb a leaver's arcs up to `(SLACK + 1) / SLACK` of their target share.
const SLACK: u128 = 128;

/// How many of the lowest members a leave's water-filling orders before ordering all.
const FILL_FEW: usize = 32;

/// What the plans read of a balanced ring, which [`crate::Ring`] and `LinkedRing` keep
/// in their own ways. Arcs come with the layout's handle
/// for them, which the plans pass on in [`Piece::at`].
pub(crate) trait Layout {
    /// The members, sorted by id: plans name them by index in this list.
    fn members(&self) -> &[Member];
    /// Owned arc length per member index.
    fn own(&self) -> &[u128];
    /// Number of tokens.
    fn token_count(&self) -> usize;
    /// Virtual nodes per unit of weight.
    fn vnodes(&self) -> u32;
    /// The largest arc of member `m` (ties: the smaller end), if it has any.
    fn largest(&self, m: u32) -> Option<(ArcSpan, u32)>;
    /// The arcs of member `m`, largest first (ties: the smaller end first).
    fn largest_first(&self, m: u32) -> Vec<(ArcSpan, u32)>;
    /// [`Layout::largest_first`], each ordered when it is read: for a reader that
    /// takes a few.
    fn largest_first_lazily(&self, m: u32) -> impl Iterator<Item = (ArcSpan, u32)>;
    /// The owners of the tokens before and after the token at `end` (handle `at`); the
    /// ring holds two tokens or more.
    fn beside(&self, end: Token, at: u32) -> (u32, u32);

    /// Sum of member weights.
    fn total_weight(&self) -> u128 {
        self.members().iter().map(|m| u128::from(m.weight)).sum()
    }
}

/// Pieces of a join of weight `weight` (the ring's own members are `Who::Member`).
pub(crate) fn plan_join(ring: &impl Layout, weight: u32) -> Result<Vec<Piece>, RingError> {
    let members = ring.members();
    let n = members.len();
    if n == 0 {
        return Ok(vec![Piece {
            start: u64::MAX,
            end: u64::MAX,
            from: Who::Nobody,
            to: Who::Joiner,
            at: 0,
        }]);
    }
    let w = |i: u32| u128::from(members[i as usize].weight);
    let owned = ring.own();
    let own = |i: u32| owned[i as usize];
    let total = ring.total_weight() + u128::from(weight);
    let take = (RING * u128::from(weight) / total).max(1);
    let budget = usize::try_from(u64::from(ring.vnodes()) * u64::from(weight))
        .unwrap_or(usize::MAX)
        .min(n);
    check_token_limit((ring.token_count() + budget) as u64)?;

    // Donors: the `budget` members owning the most per unit of weight (ties: id).
    let by_ratio_desc = |a: &Ratio, b: &Ratio| b.cmp_ratio(a).then(a.member.cmp(&b.member));
    let mut donors: Vec<Ratio> = (0..n as u32).map(|i| Ratio::of(i, own(i), w(i))).collect();
    if budget < n {
        donors.select_nth_unstable_by(budget - 1, by_ratio_desc);
        donors.truncate(budget);
    }
    donors.sort_unstable_by(by_ratio_desc);
    let donors: Vec<u32> = donors.into_iter().map(|d| d.member).collect();

    // Water level: the first k donors give down to (sum own - take) / (sum weight),
    // where k is the first prefix whose level is at or above the next donor's ratio.
    let (mut sum_own, mut sum_w, mut k) = (0u128, 0u128, 0usize);
    for (pos, &d) in donors.iter().enumerate() {
        sum_own += own(d);
        sum_w += w(d);
        k = pos + 1;
        if sum_own < take {
            continue;
        }
        match donors.get(pos + 1) {
            Some(&next) if (sum_own - take) * w(next) < own(next) * sum_w => {}
            _ => break,
        }
    }
    let level = sum_own.saturating_sub(take);
    // Every donor keeps at least one position, so it keeps a token.
    let mut amounts: Vec<(u32, u128)> = donors[..k]
        .iter()
        .map(|&d| {
            let keep = w(d) * level / sum_w;
            (d, own(d).saturating_sub(keep).min(own(d).saturating_sub(1)))
        })
        .collect();
    // Flooring the kept amounts over-gives by less than k: trim it from the donors
    // nearest the level (the end of the list).
    let mut excess = amounts
        .iter()
        .map(|a| a.1)
        .sum::<u128>()
        .saturating_sub(take);
    for a in amounts.iter_mut().rev() {
        if excess == 0 {
            break;
        }
        if a.1 > 0 {
            a.1 -= 1;
            excess -= 1;
        }
    }
    let mut pieces = Vec::with_capacity(k);
    for (d, amount) in amounts {
        give(ring, d, amount, &mut pieces);
    }
    Ok(pieces)
}

/// Pieces moving `amount` from donor `d` to the joiner: the front of its largest arc,
/// or whole arcs (largest first, ties by position) and then the front of the next.
fn give(ring: &impl Layout, d: u32, amount: u128, pieces: &mut Vec<Piece>) {
    let piece = |start: u64, end: u64, at: u32| Piece {
        start,
        end,
        from: Who::Member(d),
        to: Who::Joiner,
        at,
    };
    let mut left = amount;
    // Arcs largest first. Usually the largest is enough; otherwise they are ordered
    // only as far as they are taken.
    let enough = ring.largest(d).filter(|largest| amount <= largest.0.len);
    let ordered = enough.is_none().then(|| ring.largest_first_lazily(d));
    for (arc, at) in enough.into_iter().chain(ordered.into_iter().flatten()) {
        if left == 0 {
            break;
        }
        if left >= arc.len {
            pieces.push(piece(arc.start, arc.end, at));
            left -= arc.len;
        } else {
            pieces.push(piece(arc.start, arc.start.wrapping_add(left as u64), at));
            left = 0;
        }
    }
}

/// A member's share and weight, ordered by share per unit of weight.
#[derive(Clone, Copy)]
struct Ratio {
    member: u32,
    /// The share; below `2^64` when there are two members or more (each owns a
    /// position), and only then are two compared.
    own: u64,
    weight: u64,
}

impl Ratio {
    fn of(member: u32, own: u128, weight: u128) -> Ratio {
        Ratio {
            member,
            own: u64::try_from(own).unwrap_or(u64::MAX),
            weight: u64::try_from(weight).unwrap_or(u64::MAX),
        }
    }

    /// Compares the shares per unit of weight exactly (`own_a * w_b` against
    /// `own_b * w_a`, each a 64-bit product).
    fn cmp_ratio(&self, other: &Ratio) -> Ordering {
        let mul = |a: u64, b: u64| u128::from(a) * u128::from(b);
        mul(self.own, other.weight).cmp(&mul(other.own, self.weight))
    }
}

/// One arc of the leaver, its handle, and the members on either side of it.
struct LeaverArc {
    arc: ArcSpan,
    at: u32,
    left: u32,
    right: u32,
}

/// Pieces of the leave of member index `leaver` from a ring of two or more members.
pub(crate) fn plan_leave(ring: &impl Layout, leaver: usize) -> Vec<Piece> {
    let leaver = leaver as u32;
    let members = ring.members();
    let w = |i: u32| u128::from(members[i as usize].weight);
    let survivors_weight = ring.total_weight() - w(leaver);
    let cap = |i: u32| w(i) * RING * (SLACK + 1) / (SLACK * survivors_weight);

    // The leaver's arcs, largest first (ties: the smaller end), with their neighbours.
    let arcs: Vec<LeaverArc> = ring
        .largest_first(leaver)
        .into_iter()
        .map(|(arc, at)| {
            let (left, right) = ring.beside(arc.end, at);
            LeaverArc {
                arc,
                at,
                left,
                right,
            }
        })
        .collect();

    let mut own = ring.own().to_vec();
    let mut pieces = Vec::with_capacity(arcs.len() * 2);
    let mut rest: Vec<(ArcSpan, u32)> = Vec::new();
    let piece = |start: u64, end: u64, to: u32, at: u32| Piece {
        start,
        end,
        from: Who::Member(leaver),
        to: Who::Member(to),
        at,
    };
    let room = |i: u32, own: &[u128]| cap(i).saturating_sub(own[i as usize]);
    for LeaverArc {
        arc,
        at,
        left,
        right,
    } in arcs
    {
        let (l, r) = if left == right {
            (arc.len.min(room(left, &own)), 0)
        } else {
            let (l, _) = split_two(
                arc.len,
                (own[left as usize], w(left)),
                (own[right as usize], w(right)),
            );
            let l = l.min(room(left, &own));
            let r = (arc.len - l).min(room(right, &own));
            ((arc.len - r).min(room(left, &own)), r)
        };
        own[left as usize] += l;
        own[right as usize] += r;
        let (mid_start, mid_end) = (
            arc.start.wrapping_add(l as u64),
            arc.end.wrapping_sub(r as u64),
        );
        if l > 0 {
            pieces.push(piece(arc.start, mid_start, left, at));
        }
        if l + r < arc.len {
            let span = ArcSpan {
                start: mid_start,
                end: mid_end,
                len: arc.len - l - r,
            };
            rest.push((span, at));
        }
        if r > 0 {
            pieces.push(piece(mid_end, arc.end, right, at));
        }
    }

    // The rest goes to the members furthest below their share (water-filling), largest
    // piece first. A piece that fits under a recipient's cap goes whole, so pieces are
    // only cut where a recipient has no room for them; the last recipient takes the rest.
    rest.sort_unstable_by(|(a, _), (b, _)| b.len.cmp(&a.len).then(a.end.cmp(&b.end)));
    let amount = rest.iter().map(|a| a.0.len).sum();
    let recipients = fill_lowest(members, &own, leaver, amount);
    let mut r = 0;
    let mut need = recipients.first().map_or(0, |g| g.1);
    for (span, at) in rest {
        let (mut start, mut len) = (span.start, span.len);
        while let (true, Some(&(who, _))) = (len > 0, recipients.get(r)) {
            let last = r + 1 == recipients.len();
            let fits = len <= room(who, &own).max(need);
            let take = if last || fits { len } else { need };
            let end = start.wrapping_add(take as u64);
            pieces.push(piece(start, end, who, at));
            own[who as usize] += take;
            (start, len, need) = (end, len - take, need.saturating_sub(take));
            if need == 0 && !last {
                r += 1;
                need = recipients[r].1;
            }
        }
    }
    pieces
}

/// Splits `len` between two members `(own, weight)` so their ratios end as equal as
/// possible: the lower one first fills up to the other's ratio, the rest is shared in
/// proportion to weight. Returns the first member's and the second's part.
fn split_two(len: u128, x: (u128, u128), y: (u128, u128)) -> (u128, u128) {
    let x_lower = (x.0 * y.1).cmp(&(y.0 * x.1)) != Ordering::Greater;
    let (lo, hi) = if x_lower { (x, y) } else { (y, x) };
    let level = lo.0 + hi.0 + len;
    let to_lo = (lo.1 * level / (lo.1 + hi.1)).saturating_sub(lo.0).min(len);
    if x_lower {
        (to_lo, len - to_lo)
    } else {
        (len - to_lo, to_lo)
    }
}

/// Water-fills `amount` into the members (other than `leaver`) with the lowest owned
/// per weight: `(member, amount)` in ascending ratio order (ties by id), summing to
/// `amount`.
fn fill_lowest(members: &[Member], own: &[u128], leaver: u32, amount: u128) -> Vec<(u32, u128)> {
    if amount == 0 {
        return Vec::new();
    }
    let w = |i: u32| u128::from(members[i as usize].weight);
    let by_ratio = |a: &Ratio, b: &Ratio| a.cmp_ratio(b).then(a.member.cmp(&b.member));
    let mut order: Vec<Ratio> = (0..members.len() as u32)
        .filter(|&i| i != leaver)
        .map(|i| Ratio::of(i, own[i as usize], w(i)))
        .collect();
    // The level: the first k members (by ratio) whose filling reaches the next one's
    // ratio. Usually a handful: order the lowest few (and the one after them) first,
    // and everyone only if the level rises past them.
    let level_at = |order: &[Ratio], complete: bool| {
        let (mut sum_own, mut sum_w) = (0u128, 0u128);
        for (pos, m) in order.iter().enumerate() {
            sum_own += own[m.member as usize];
            sum_w += w(m.member);
            match order.get(pos + 1).map(|next| next.member) {
                Some(next) if (sum_own + amount) * w(next) > own[next as usize] * sum_w => {}
                None if !complete => return None,
                _ => return Some((pos + 1, sum_own, sum_w)),
            }
        }
        None
    };
    let few = FILL_FEW.min(order.len() - 1);
    order.select_nth_unstable_by(few, by_ratio);
    order[..few].sort_unstable_by(by_ratio);
    let found = level_at(&order[..=few], few + 1 == order.len());
    let (k, sum_own, sum_w) = match found {
        Some(found) => found,
        None => {
            order.sort_unstable_by(by_ratio);
            // Survivors are never none: a leave from one member empties the ring.
            let Some(found) = level_at(&order, true) else {
                return Vec::new();
            };
            found
        }
    };
    let level = sum_own + amount;
    let mut gifts: Vec<(u32, u128)> = order[..k]
        .iter()
        .map(|r| {
            let m = r.member;
            (m, (w(m) * level / sum_w).saturating_sub(own[m as usize]))
        })
        .collect();
    // Flooring under-gives by less than k: one more position each to the lowest.
    let mut short = amount.saturating_sub(gifts.iter().map(|g| g.1).sum::<u128>());
    for g in gifts.iter_mut() {
        if short == 0 {
            break;
        }
        g.1 += 1;
        short -= 1;
    }
    gifts.retain(|g| g.1 > 0);
    gifts
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{Ring, RingConfig, Strategy};

    /// Section 6.4 step 3 as written: all survivors sorted by ratio, then the prefix.
    fn reference(ring: &Ring, own: &[u128], leaver: u32, amount: u128) -> Vec<(u32, u128)> {
        let members = Layout::members(ring);
        let w = |i: u32| u128::from(members[i as usize].weight);
        let mut order: Vec<u32> = (0..members.len() as u32).filter(|&i| i != leaver).collect();
        order.sort_by(|&a, &b| (own[a as usize] * w(b)).cmp(&(own[b as usize] * w(a))));
        let (mut sum_own, mut sum_w, mut k) = (0, 0, 0);
        while k < order.len() {
            sum_own += own[order[k] as usize];
            sum_w += w(order[k]);
            k += 1;
            let Some(&next) = order.get(k) else { break };
            if (sum_own + amount) * w(next) <= own[next as usize] * sum_w {
                break;
            }
        }
        let mut gifts: Vec<(u32, u128)> = order[..k]
            .iter()
            .map(|&m| {
                (
                    m,
                    (w(m) * (sum_own + amount) / sum_w).saturating_sub(own[m as usize]),
                )
            })
            .collect();
        let short = amount - gifts.iter().map(|g| g.1).sum::<u128>();
        for g in gifts.iter_mut().take(short as usize) {
            g.1 += 1;
        }
        gifts.retain(|g| g.1 > 0);
        gifts
    }

    proptest! {
        #[test]
        fn water_filling_orders_only_what_it_needs(
            owns in prop::collection::vec(1u64..1 << 20, 2..90),
            leaver in any::<prop::sample::Index>(),
            amount in 0u128..1 << 26,
        ) {
            let mut ring = Ring::new(RingConfig::new(Strategy::Balanced, 1).unwrap());
            for i in 0..owns.len() {
                ring.add(Member::new(format!("m{i:02}"), 1 + (i % 3) as u32)).unwrap();
            }
            let own: Vec<u128> = owns.iter().map(|&o| u128::from(o)).collect();
            let leaver = leaver.index(owns.len()) as u32;
            prop_assert_eq!(
                fill_lowest(Layout::members(&ring), &own, leaver, amount),
                reference(&ring, &own, leaver, amount)
            );
        }
    }
}
