//! The ring's slot list and its primitives: a slot is one token (a position and the
//! index of its owner), a slot owns the arc from the token before it, and searches
//! start from a position. Every module that reads or builds slots builds on this one,
//! which builds on nothing of the crate but its root types, so that the strategies,
//! the derived tables, the lookup index and the ring itself share one meaning of a slot
//! without importing one another.
//!
//! A ring also recycles its slot lists. Every change builds a new list and replaces the
//! old one, which a clone (the ring before a change, a served view) may still hold. A
//! list of 150,000 tokens is 2.4 MB: memory freshly mapped for it costs a page fault per
//! 4 KiB on first touch, and an allocator returns freed memory of that size to the
//! system soon after, so the next change would pay the faults again. Instead, a list
//! dropped by its last holder goes back to the lineage's [`Pool`], and the next change
//! fills it.
//!
//! # How it fits
//! `Ring` holds its slots as `Arc<Slots>` and one `Arc<Pool>` shared with its clones;
//! changes take their output list from the pool ([`Pool::list`]) and wrap it with
//! [`Pool::slots`].

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use crate::{MAX_TOKENS, RingError, Token};

/// The whole ring, `2^64` positions, as an arc length.
pub(crate) const RING: u128 = 1 << 64;

/// One token: a position and the index of its owner in the ring's member list (sorted
/// by id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Slot {
    /// Position on the ring (field order makes the derived `Ord` position-first).
    pub(crate) token: Token,
    /// Index into the member list; equal positions are ordered by it (that is, by id).
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

/// Index of the slot owning `hash`: the first at or after it, wrapping to 0 (slots not
/// empty).
pub(crate) fn slot_at(slots: &[Slot], hash: u64) -> usize {
    let i = slots.partition_point(|s| s.token < hash);
    if i == slots.len() { 0 } else { i }
}

/// The arc owned by slot `i`: from the preceding token (cyclically) to its own. A token
/// sharing the position of its predecessor owns nothing, except slot 0, which then owns
/// the whole ring (every token sits at one position).
pub(crate) fn arc_at(slots: &[Slot], i: usize) -> ArcSpan {
    let end = slots[i].token;
    let start = slots[before(i, slots.len())].token;
    let len = match end.wrapping_sub(start) {
        0 if i == 0 => RING,
        d => u128::from(d),
    };
    ArcSpan { start, end, len }
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

/// Slot lists no holder uses any more: at most [`Pool::KEEP`] of them.
#[derive(Default)]
pub(crate) struct Pool(Mutex<Vec<Vec<Slot>>>);

impl Pool {
    /// Lists kept: the one a served view let go of and one spare (a change of several
    /// steps drops each intermediate list before it needs the next).
    const KEEP: usize = 2;

    /// An empty list with room for `len` slots: a recycled one when one is large
    /// enough, otherwise a new one (sized by [`list_for`]).
    pub(crate) fn list(&self, len: usize) -> Vec<Slot> {
        let mut kept = self.lock();
        match kept.iter().position(|list| list.capacity() >= len) {
            Some(i) => kept.swap_remove(i),
            None => list_for(len),
        }
    }

    /// `list` as the slots of a ring of this lineage.
    pub(crate) fn slots(self: &Arc<Self>, list: Vec<Slot>) -> Slots {
        Slots {
            list,
            pool: Arc::clone(self),
        }
    }

    fn put(&self, mut list: Vec<Slot>) {
        if list.capacity() == 0 {
            return;
        }
        let mut kept = self.lock();
        if kept.len() < Self::KEEP {
            list.clear();
            kept.push(list);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<Slot>>> {
        // The lists hold no invariant a panic elsewhere could break.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A new empty list with room for `len` slots, rounded up to a multiple of 1/16 of the
/// next power of two (at most 1/8 unused), so that a ring churning by a few hundred
/// tokens keeps one size and its recycled lists fit.
pub(crate) fn list_for(len: usize) -> Vec<Slot> {
    let step = (len.next_power_of_two() / 16).max(1);
    Vec::with_capacity(len.div_ceil(step) * step)
}

/// A ring's slots, sorted by (position, owner); back to the pool when dropped.
pub(crate) struct Slots {
    list: Vec<Slot>,
    pool: Arc<Pool>,
}

impl Deref for Slots {
    type Target = [Slot];

    fn deref(&self) -> &[Slot] {
        &self.list
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.list));
    }
}

impl PartialEq for Slots {
    fn eq(&self, other: &Self) -> bool {
        self.list == other.list
    }
}

impl fmt::Debug for Slots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.list.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_come_in_few_sizes() {
        for len in [0, 1, 7, 1000, 147_104, 147_300, 1 << 20, (1 << 20) + 1] {
            let cap = list_for(len).capacity();
            assert!(cap >= len && cap <= len + len / 8 + 1, "{len}: {cap}");
        }
        // A ring growing or churning by a few hundred tokens keeps one size.
        assert_eq!(list_for(147_104).capacity(), list_for(147_300).capacity());
    }

    #[test]
    fn dropped_slots_are_recycled_when_they_fit() {
        let pool = Arc::new(Pool::default());
        let slot = Slot { token: 7, owner: 0 };
        let mut list = pool.list(1000);
        list.push(slot);
        let address = list.as_ptr();
        let slots = pool.slots(list);
        assert_eq!(&slots[..], &[slot]);
        drop(slots);
        // Too small: a new list; large enough: the dropped one, emptied.
        assert!(pool.list(1 << 20).capacity() >= 1 << 20);
        let again = pool.list(900);
        assert_eq!((again.as_ptr(), again.len()), (address, 0));
        // No more than KEEP lists are kept.
        for _ in 0..Pool::KEEP + 2 {
            drop(pool.slots(list_for(10)));
        }
        assert_eq!(pool.lock().len(), Pool::KEEP);
    }
}
