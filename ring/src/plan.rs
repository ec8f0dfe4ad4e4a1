//! What a change moves: the pieces a plan hands from one owner to another, the
//! positions a change touched ([`Edits`]), and the one canonical [`RingDiff`] both end
//! in, with the fraction of the key space that moved against the least any change of
//! shares must move ([`Ideal`]).
//!
//! # How it fits
//! The strategies plan a change as pieces (`balanced`, `random`); the ring applies
//! them and records its edits (`ring::change`); [`into_diff`] puts pieces in their one
//! canonical form (sorted by end, adjacent ranges with the same owners merged), so a
//! plan and the comparison of two rings (`ring::diff`) give equal diffs for equal
//! changes. Nothing here reads a ring: pieces name owners by index, and the callers
//! name them.

use crate::Token;
use crate::slots::{RING, Slot};

/// A range of positions `(start, end]` (clockwise, wrapping) that changed owner.
/// `start == end` is the whole ring. Owners are member ids, where an empty id stands
/// for "no owner" (an empty ring); or, from [`crate::diff_at_indexed`], member indices
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
    /// Rounded as `docs/ring-spec.md` section 7 says (events store it).
    pub ideal_fraction: f64,
    /// `moved / ideal`, computed from the integers and rounded once (see
    /// [`RingDiff::moved_over_ideal`]).
    moved_over_ideal: Option<f64>,
}

impl<Owner> RingDiff<Owner> {
    /// Whether nothing moved.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The moved amount over the ideal one, or `None` when nothing had to move:
    /// `moved * den / (num * 2^64)` for the ideal fraction `num / den`, computed from
    /// the integers and rounded once, so a change that moves its ideal amount (rounded
    /// down to whole positions) reads 1 rather than the quotient of two rounded
    /// fractions (spec section 7).
    pub fn moved_over_ideal(&self) -> Option<f64> {
        self.moved_over_ideal
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
    /// `LinkedRing`'s node); 0 where the layout names none. The balanced plans
    /// list the pieces of one arc clockwise, but for the one ending at the arc's own
    /// token, which may come anywhere: a `LinkedRing` inserts each piece's end just
    /// before that token, in the order given.
    pub(crate) at: u32,
}

/// The positions at which a ring's tokens changed (a token added, removed, or given to
/// another member) over one or more changes: [`crate::Ring::add_recording`] and
/// [`crate::Ring::remove_recording`] add to it. Two versions of a ring differ only at
/// these positions, so [`crate::diff_at`] (and any other comparison) can visit them
/// alone instead of every token: a change of one member out of a thousand touches a
/// few hundred positions of a ring of 150,000 tokens.
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

/// The least fraction of the key space any placement must move between two rings'
/// weight targets, as the exact fraction `num / den` (spec section 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ideal {
    num: u128,
    den: u128,
}

impl Ideal {
    /// Nothing has to move (both rings empty).
    pub(crate) const NOTHING: Ideal = Ideal { num: 0, den: 1 };

    /// `num / den`; `den == 0` means that exactly one of the rings is empty, so
    /// everything moves.
    pub(crate) fn new(num: u128, den: u128) -> Ideal {
        if den == 0 {
            Ideal { num: 1, den: 1 }
        } else {
            Ideal { num, den }
        }
    }

    /// The fraction as events store it: each integer rounded to the nearest double,
    /// then divided.
    pub(crate) fn fraction(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// `moved / 2^64` over the fraction, exactly, rounded once; `None` when nothing had
    /// to move.
    fn ratio(self, moved: u128) -> Option<f64> {
        (self.num > 0).then(|| {
            let num = Wide::from(self.num).shl(64);
            quotient(Wide::product(moved, self.den), num)
        })
    }
}

/// `p / q` (`q > 0`) rounded once to the nearest double, ties to even: the division is
/// scaled so that the integer quotient has 55 or 56 bits, and the bits below the 53 a
/// double keeps, with whether anything remains, decide the rounding.
fn quotient(p: Wide, q: Wide) -> f64 {
    if p.is_zero() {
        return 0.0;
    }
    // p / q lies in (2^(k - 1), 2^(k + 1)); scaled by 2^s, in (2^54, 2^56).
    let k = i64::from(p.bits()) - i64::from(q.bits());
    let s = 55 - k;
    let (mut rest, q) = if s >= 0 {
        (p.shl(s as u32), q)
    } else {
        (p, q.shl((-s) as u32))
    };
    let mut quot = 0u64;
    for bit in (0..56).rev() {
        let step = q.shl(bit);
        if rest >= step {
            rest = rest.minus(step);
            quot |= 1 << bit;
        }
    }
    let extra = (64 - quot.leading_zeros()) - 53;
    let (mut mantissa, low) = (quot >> extra, quot & ((1 << extra) - 1));
    let half = 1 << (extra - 1);
    if low > half || (low == half && (!rest.is_zero() || mantissa & 1 == 1)) {
        mantissa += 1;
    }
    // mantissa * 2^(extra - s), both exact: the mantissa has at most 53 bits and the
    // exponent of a ratio of two ring amounts stays far inside the normal range.
    let exponent = i64::from(extra) - s;
    mantissa as f64 * f64::from_bits(((1023 + exponent) as u64) << 52)
}

/// An unsigned 256-bit integer, as much of one as [`quotient`] needs (products of two
/// 128-bit numbers, shifts that stay within 256 bits, comparison, subtraction).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Wide {
    /// The upper 128 bits (field order makes the derived `Ord` numeric).
    high: u128,
    low: u128,
}

impl From<u128> for Wide {
    fn from(low: u128) -> Wide {
        Wide { high: 0, low }
    }
}

impl Wide {
    /// `a * b`, from four 64-bit partial products.
    fn product(a: u128, b: u128) -> Wide {
        const LOW: u128 = u64::MAX as u128;
        let (a1, a0, b1, b0) = (a >> 64, a & LOW, b >> 64, b & LOW);
        let (lo, mid1, mid2, hi) = (a0 * b0, a0 * b1, a1 * b0, a1 * b1);
        let (mid, carry) = mid1.overflowing_add(mid2);
        let (low, carry_low) = lo.overflowing_add(mid << 64);
        let high = hi + (mid >> 64) + (u128::from(carry) << 64) + u128::from(carry_low);
        Wide { high, low }
    }

    fn is_zero(self) -> bool {
        self.high == 0 && self.low == 0
    }

    /// Number of significant bits.
    fn bits(self) -> u32 {
        if self.high == 0 {
            128 - self.low.leading_zeros()
        } else {
            256 - self.high.leading_zeros()
        }
    }

    /// `self * 2^n`; the result must fit.
    fn shl(self, n: u32) -> Wide {
        match n {
            0 => self,
            1..128 => Wide {
                high: (self.high << n) | (self.low >> (128 - n)),
                low: self.low << n,
            },
            _ => Wide {
                high: self.low << (n - 128),
                low: 0,
            },
        }
    }

    /// `self - other`, for `other <= self`.
    fn minus(self, other: Wide) -> Wide {
        let (low, borrow) = self.low.overflowing_sub(other.low);
        Wide {
            high: self.high - other.high - u128::from(borrow),
            low,
        }
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

/// The whole ring moving from the only member of `slots` (nobody if there are none) to
/// `to`.
pub(crate) fn whole_ring(slots: &[Slot], to: Who) -> Piece {
    let last = slots
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
    ideal: Ideal,
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
        ideal_fraction: ideal.fraction(),
        moved_over_ideal: ideal.ratio(moved),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Operands a double holds exactly divide correctly rounded in IEEE-754, and
        /// scaling both by powers of two changes the quotient by the same power.
        #[test]
        fn quotients_round_once(p in 1u64..1 << 53, q in 1u64..1 << 53,
                                a in 0u32..120, b in 0u32..120) {
            let expected = p as f64 / q as f64;
            prop_assert_eq!(quotient(Wide::from(u128::from(p)), Wide::from(u128::from(q))), expected);
            let scaled = quotient(
                Wide::from(u128::from(p)).shl(a),
                Wide::from(u128::from(q)).shl(b),
            );
            prop_assert_eq!(scaled, expected * 2f64.powi(a as i32 - b as i32));
        }

        #[test]
        fn wide_products_and_differences(a in any::<u128>(), b in any::<u128>(), c in any::<u64>()) {
            // (a * b) against the sum of its 64-bit halves' products, through shifts.
            let (b1, b0) = (b >> 64, b & u128::from(u64::MAX));
            let lo = Wide::product(a, b0);
            let hi = Wide::product(a, b1).shl(64);
            let sum = Wide::product(a, b);
            prop_assert_eq!(sum.minus(lo), hi);
            prop_assert_eq!(Wide::product(u128::from(c), 1), Wide::from(u128::from(c)));
        }
    }

    #[test]
    fn ties_go_to_even_and_remainders_round_up() {
        let two53 = 1u128 << 53;
        // 2^53 + 1 and 2^53 + 3 are halfway between two doubles: to the even one.
        let p = Wide::from(two53 + 1).shl(10);
        assert_eq!(quotient(p, Wide::from(1 << 10)), two53 as f64);
        assert_eq!(
            quotient(Wide::from(two53 + 3), Wide::from(1)),
            (two53 + 4) as f64
        );
        // Just above the halfway point of 2^53 + 1: up.
        let above = Wide::from((two53 + 1) * 1000 + 1);
        assert_eq!(quotient(above, Wide::from(1000)), (two53 + 2) as f64);
        // Just below it: down.
        let below = Wide::from((two53 + 1) * 1000 - 1);
        assert_eq!(quotient(below, Wide::from(1000)), two53 as f64);
    }

    #[test]
    fn the_ideal_amount_reads_one() {
        // A 75th equal member joins 74: ideal 74 / (74 * 75), its share floor(2^64 / 75).
        let ideal = Ideal::new(74, 74 * 75);
        let moved = RING / 75;
        assert_eq!(ideal.ratio(moved), Some(1.0));
        // What the division of two rounded fractions gives instead.
        assert_eq!(fraction(moved) / ideal.fraction(), 0.9999999999999999);
        assert_eq!(Ideal::NOTHING.ratio(0), None);
        assert_eq!(Ideal::new(0, 0).fraction(), 1.0);
        assert_eq!(Ideal::new(0, 0).ratio(RING), Some(1.0));
    }
}
