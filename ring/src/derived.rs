//! Tables derived from a ring's slots: what each member owns and, for balanced rings,
//! every member's arcs (what balanced joins take from, largest first, and leaves hand
//! out). They are functions of the slots; computing them is a pass over every token,
//! so a change updates them instead, from the few slots it touched.
//!
//! A change at a position can only alter the arcs of the tokens at that position and of
//! the first token after it (its arc starts there). So the update takes away the old
//! arcs of those tokens (in the old ring), renumbers the member tables, and adds their
//! new arcs (in the new ring); every other token keeps its position, its owner and its
//! predecessor's position, hence its arc. A ring computes its tables at first use and
//! then updates them in place; a clone of the ring does not copy them (see `Ring`'s
//! `Clone`).

use crate::Token;
use crate::slots::{ArcSpan, Slot, arc_at, seek};

/// One arc of a balanced ring, ordered largest first, then by the smaller end.
/// Balanced tokens sit at distinct positions, so an arc holds at least one position
/// (the one token of a one-token ring holds all `2^64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ArcEntry {
    /// `!(len - 1)`: ascending order is descending length (field order makes the
    /// derived `Ord` length-first).
    rank: u64,
    /// The arc's end position (its token).
    end: Token,
}

impl ArcEntry {
    fn of(arc: &ArcSpan) -> ArcEntry {
        debug_assert!(arc.len > 0, "balanced arcs are never empty");
        ArcEntry {
            rank: !((arc.len - 1) as u64),
            end: arc.end,
        }
    }

    /// The entry's order as one number (compared without branches).
    fn key(self) -> u128 {
        (u128::from(self.rank) << 64) | u128::from(self.end)
    }

    fn span(self) -> ArcSpan {
        let len = u128::from(!self.rank) + 1;
        ArcSpan {
            // A length of 2^64 wraps to the end itself: the whole ring.
            start: self.end.wrapping_sub(len as u64),
            end: self.end,
            len,
        }
    }
}

/// All arcs of one member, in no particular order: a change removes and adds a few
/// arcs of many members, while a plan reads the arcs of a few (the leaver's, in order)
/// and the largest arc of many (the donors'), so the order is made when read and only
/// the largest few are tracked. Each arc comes with a handle `H` of the layout that
/// keeps the list: nothing for a [`crate::Ring`]'s tables, which find an arc by its
/// end; the node of its token for a `LinkedRing`, which keeps where each arc is in the
/// list.
///
/// A donor gives from its largest arc, which then shrinks: finding the next largest is
/// a scan of the list. The largest `TOP` are listed in order, so that most such changes
/// find the next largest among them and a scan is needed only once they have all gone;
/// they are listed with their arcs, so that reading the largest and keeping the order
/// touch this struct alone, not the list. A `Ring`'s tables list a few
/// ([`RING_TOP`]): they are computed for every clone that changes, and a ring holds
/// one list per member. A `LinkedRing`, which lives through a run of joins, lists more
/// ([`LINKED_TOP`]).
#[derive(Clone, Debug)]
pub(crate) struct MemberArcs<H = (), const TOP: usize = RING_TOP> {
    arcs: Vec<(ArcEntry, H)>,
    /// The largest entries, largest first (the first `top_len`), with their index in
    /// `arcs`: no entry left out is larger than the last one listed. Empty only when
    /// `arcs` is.
    top: [Listed<H>; TOP],
    top_len: u8,
}

/// An entry of a member's largest arcs: the arc, its handle and its index in the list.
#[derive(Clone, Copy, Debug)]
struct Listed<H> {
    entry: ArcEntry,
    handle: H,
    at: u32,
}

/// The largest arcs of a member a `Ring`'s tables keep in order.
pub(crate) const RING_TOP: usize = 4;

/// The largest arcs of a member a `LinkedRing` keeps in order: enough that a donor
/// giving a piece of its largest arc at every join of a 10,000-member ring scans its
/// list once in a dozen joins or so.
pub(crate) const LINKED_TOP: usize = 16;

impl<H: Default + Copy, const TOP: usize> Default for MemberArcs<H, TOP> {
    fn default() -> Self {
        MemberArcs {
            arcs: Vec::new(),
            top: [Listed {
                entry: ArcEntry { rank: 0, end: 0 },
                handle: H::default(),
                at: 0,
            }; TOP],
            top_len: 0,
        }
    }
}

impl<H: Copy + Ord + Default, const TOP: usize> MemberArcs<H, TOP> {
    /// The list of `arcs`, which it reorders: its largest first, in order (nothing
    /// holds a place in it yet).
    fn new(mut arcs: Vec<(ArcEntry, H)>) -> MemberArcs<H, TOP> {
        let len = arcs.len().min(TOP);
        if arcs.len() > TOP {
            arcs.select_nth_unstable_by_key(TOP - 1, |a| a.0);
        }
        arcs[..len].sort_unstable_by_key(|a| a.0);
        let mut list = MemberArcs {
            arcs,
            ..MemberArcs::default()
        };
        for (at, listed) in (0u32..).zip(&mut list.top[..len]) {
            let (entry, handle) = list.arcs[at as usize];
            *listed = Listed { entry, handle, at };
        }
        list.top_len = len as u8;
        list
    }

    /// Number of arcs.
    pub(crate) fn len(&self) -> usize {
        self.arcs.len()
    }

    /// Empties the list; returns the handles of the arcs it held.
    pub(crate) fn take_handles(&mut self) -> impl Iterator<Item = H> + use<H, TOP> {
        self.top_len = 0;
        std::mem::take(&mut self.arcs).into_iter().map(|a| a.1)
    }

    /// The largest arc (ties: the smaller end) and its handle, if the member has any.
    pub(crate) fn largest(&self) -> Option<(ArcSpan, H)> {
        self.top().first().map(|l| (l.entry.span(), l.handle))
    }

    /// The arcs, largest first (ties: the smaller end first).
    pub(crate) fn largest_first(&self) -> Vec<(ArcSpan, H)> {
        let mut entries = self.arcs.clone();
        // Entries are distinct (so are their ends): the order is total.
        entries.sort_unstable_by_key(|a| a.0.key());
        entries.into_iter().map(|(e, h)| (e.span(), h)).collect()
    }

    /// The arcs, largest first, each found when it is read (the largest few are known,
    /// each next one is a search for the largest after them): for a reader that takes
    /// one or two.
    pub(crate) fn largest_first_lazily(&self) -> impl Iterator<Item = (ArcSpan, H)> + '_ {
        let top = self.top();
        let mut last = top.last().map(|l| l.entry);
        let rest = std::iter::from_fn(move || {
            let after = last?;
            let next = self
                .arcs
                .iter()
                .filter(|a| a.0 > after)
                .min_by_key(|a| a.0)?;
            last = Some(next.0);
            Some((next.0.span(), next.1))
        });
        top.iter().map(|l| (l.entry.span(), l.handle)).chain(rest)
    }

    /// Removes the arc at index `i` of the list; returns the handle of the arc that took
    /// its place, if one did (the last one).
    pub(crate) fn remove_at(&mut self, i: usize) -> Option<H> {
        self.arcs.swap_remove(i);
        let moved = self.arcs.len() as u32;
        let mut kept = 0;
        for k in 0..usize::from(self.top_len) {
            let mut listed = self.top[k];
            if listed.at != i as u32 {
                // The last entry took the removed one's place.
                if listed.at == moved {
                    listed.at = i as u32;
                }
                self.top[kept] = listed;
                kept += 1;
            }
        }
        self.top_len = kept as u8;
        if kept == 0 {
            self.refill();
        }
        self.arcs.get(i).map(|a| a.1)
    }

    /// Adds an arc; returns its index in the list.
    pub(crate) fn insert(&mut self, arc: &ArcSpan, handle: H) -> usize {
        let at = self.arcs.len();
        let entry = ArcEntry::of(arc);
        self.arcs.push((entry, handle));
        self.list(Listed {
            entry,
            handle,
            at: at as u32,
        });
        at
    }

    /// Replaces the arc at index `i` of the list with `arc`, what is left of it after
    /// it lost its front (the same end, a shorter length).
    pub(crate) fn shrink(&mut self, i: usize, arc: &ArcSpan) {
        let entry = ArcEntry::of(arc);
        self.arcs[i].0 = entry;
        // An arc left out is smaller still than the last listed one; a listed one is
        // taken out and listed again if it still beats the last one.
        let Some(k) = self.top().iter().position(|l| l.at as usize == i) else {
            return;
        };
        let handle = self.top[k].handle;
        let len = usize::from(self.top_len);
        self.top.copy_within(k + 1..len, k);
        self.top_len -= 1;
        if self.top_len == 0 {
            self.refill();
        } else {
            self.list(Listed {
                entry,
                handle,
                at: i as u32,
            });
        }
    }

    /// Lists an entry if it is larger than the last listed, or if nothing is listed
    /// (the list's first arc).
    fn list(&mut self, new: Listed<H>) {
        if self.top().last().is_none_or(|last| new.entry < last.entry) {
            self.put(new);
        }
    }

    /// Puts an entry in order among the listed ones (the smallest listed drops out when
    /// the list is full).
    fn put(&mut self, new: Listed<H>) {
        let k = self.top().partition_point(|l| l.entry < new.entry);
        let end = (usize::from(self.top_len) + 1).min(TOP);
        self.top.copy_within(k..end - 1, k + 1);
        self.top[k] = new;
        self.top_len = end as u8;
    }

    /// The listed largest entries, largest first.
    fn top(&self) -> &[Listed<H>] {
        &self.top[..usize::from(self.top_len)]
    }

    /// Lists the largest entries again, from a scan of the whole list (which keeps its
    /// order: a layout may know where its arcs are).
    fn refill(&mut self) {
        self.top_len = 0;
        for at in 0..self.arcs.len() {
            let (entry, handle) = self.arcs[at];
            if usize::from(self.top_len) < TOP || entry < self.top[TOP - 1].entry {
                self.put(Listed {
                    entry,
                    handle,
                    at: at as u32,
                });
            }
        }
    }
}

impl MemberArcs {
    /// Removes the arc ending at `arc.end` (ends are distinct in a balanced ring).
    fn remove(&mut self, arc: &ArcSpan) {
        let Some(i) = self.arcs.iter().position(|e| e.0.end == arc.end) else {
            debug_assert!(false, "no arc of this member ends at {}", arc.end);
            return;
        };
        self.remove_at(i);
    }
}

/// How the member list changed along with the slots.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Renumber {
    /// A member was inserted at this index.
    Joined(usize),
    /// The member at this index was removed.
    Left(usize),
}

/// The derived tables of a ring.
#[derive(Clone, Debug)]
pub(crate) struct Derived {
    /// Owned arc length per member index.
    pub(crate) own: Vec<u128>,
    /// Arcs per member index; kept for balanced rings only (empty otherwise).
    pub(crate) arcs: Vec<MemberArcs>,
    /// Whether `arcs` is kept.
    track_arcs: bool,
}

impl Derived {
    /// The tables of `slots` with `members` members, from scratch.
    pub(crate) fn compute(slots: &[Slot], members: usize, track_arcs: bool) -> Derived {
        let mut own = vec![0; members];
        for i in 0..slots.len() {
            own[slots[i].owner as usize] += arc_at(slots, i).len;
        }
        if !track_arcs {
            return Derived {
                own,
                arcs: Vec::new(),
                track_arcs,
            };
        }
        let mut held = vec![0usize; members];
        for s in slots {
            held[s.owner as usize] += 1;
        }
        let mut arcs: Vec<Vec<(ArcEntry, ())>> = held.into_iter().map(Vec::with_capacity).collect();
        for i in 0..slots.len() {
            arcs[slots[i].owner as usize].push((ArcEntry::of(&arc_at(slots, i)), ()));
        }
        let arcs = arcs.into_iter().map(MemberArcs::new).collect();
        Derived {
            own,
            arcs,
            track_arcs,
        }
    }

    /// Brings the tables from `old` to `new`, given the slots the change `touched`
    /// and how it renumbered the members.
    pub(crate) fn update(
        &mut self,
        old: &[Slot],
        new: &[Slot],
        touched: &Touched,
        renumber: Renumber,
    ) {
        let members = match renumber {
            Renumber::Joined(_) => self.own.len() + 1,
            Renumber::Left(_) => self.own.len() - 1,
        };
        // With every token at one position (or none), slot 0's arc is the whole ring
        // and depends on all the others: such rings are tiny, so start over.
        if single_position(old) || single_position(new) {
            *self = Derived::compute(new, members, self.track_arcs);
            return;
        }
        let leaver = match renumber {
            Renumber::Left(at) => Some(at),
            Renumber::Joined(_) => None,
        };
        for &i in &touched.old {
            let owner = old[i].owner as usize;
            if Some(owner) == leaver {
                continue; // Its entries go as a whole below.
            }
            let arc = arc_at(old, i);
            self.own[owner] -= arc.len;
            if let Some(list) = self.arcs.get_mut(owner) {
                list.remove(&arc);
            }
        }
        match renumber {
            Renumber::Joined(at) => {
                self.own.insert(at, 0);
                if self.track_arcs {
                    self.arcs.insert(at, MemberArcs::default());
                }
            }
            Renumber::Left(at) => {
                // The leaver's entries, left alone above, go as a whole.
                self.own.remove(at);
                if self.track_arcs {
                    self.arcs.remove(at);
                }
            }
        }
        for &i in &touched.new {
            let arc = arc_at(new, i);
            let owner = new[i].owner as usize;
            self.own[owner] += arc.len;
            if let Some(list) = self.arcs.get_mut(owner) {
                list.insert(&arc, ());
            }
        }
    }
}

/// Whether every token sits at one position (or there is none).
fn single_position(slots: &[Slot]) -> bool {
    slots.first().map(|s| s.token) == slots.last().map(|s| s.token)
}

/// The slots of the old and the new ring whose arcs or owners a change may have
/// altered: every slot at a changed position and the first slot after each (wrapping
/// to slot 0). Indices, sorted and distinct.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Touched {
    /// In the old ring.
    pub(crate) old: Vec<usize>,
    /// In the new ring.
    pub(crate) new: Vec<usize>,
}

impl Touched {
    /// From the positions that changed (sorted, distinct), by searching both rings.
    pub(crate) fn at(old: &[Slot], new: &[Slot], changed: &[Token]) -> Touched {
        Touched {
            old: touched(old, changed),
            new: touched(new, changed),
        }
    }
}

/// Indices of the slots a change at `changed` (sorted, distinct positions) may have
/// touched in `slots` (see [`Touched`]).
fn touched(slots: &[Slot], changed: &[Token]) -> Vec<usize> {
    let mut out = Vec::with_capacity(changed.len() * 2);
    let mut from = 0;
    for &position in changed {
        let mut i = seek(slots, from, position);
        from = i;
        while slots.get(i).is_some_and(|s| s.token == position) {
            out.push(i);
            i += 1;
        }
        out.push(if i == slots.len() { 0 } else { i });
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Applies `ops` (insert, remove, shrink, with a length and a pick) to a list that
    /// keeps `TOP` arcs in order, checking it against a sorted copy after each.
    fn follow<const TOP: usize>(
        ops: &[(u8, u64, prop::sample::Index)],
    ) -> Result<(), TestCaseError> {
        let mut list = MemberArcs::<u32, TOP>::default();
        let mut end = 0u64;
        for &(op, len, pick) in ops {
            match op {
                _ if list.len() == 0 || op == 0 => {
                    end += 100;
                    let arc = ArcSpan {
                        start: end - len,
                        end,
                        len: u128::from(len),
                    };
                    list.insert(&arc, end as u32);
                }
                1 => drop(list.remove_at(pick.index(list.len()))),
                _ => {
                    let i = pick.index(list.len());
                    let arc = list.arcs[i].0.span();
                    let len = arc.len - u128::from(len) % arc.len;
                    let start = arc.end - len as u64;
                    list.shrink(
                        i,
                        &ArcSpan {
                            start,
                            end: arc.end,
                            len,
                        },
                    );
                }
            }
            let sorted = list.largest_first();
            prop_assert_eq!(list.largest(), sorted.first().copied());
            prop_assert_eq!(list.largest_first_lazily().collect::<Vec<_>>(), sorted);
        }
        Ok(())
    }

    proptest! {
        /// Inserts, removals and shrinks in any order keep the largest arcs listed in
        /// order: the largest, and the arcs read largest first, equal those of a sorted
        /// copy (for both sizes of the listed part).
        #[test]
        fn the_largest_arcs_follow_every_change(
            ops in prop::collection::vec((0u8..3, 1u64..64, any::<prop::sample::Index>()), 1..200),
        ) {
            follow::<RING_TOP>(&ops)?;
            follow::<LINKED_TOP>(&ops)?;
        }
    }

    #[test]
    fn arc_entries_order_largest_first_and_round_trip() {
        let span = |start: Token, end: Token, len: u128| ArcSpan { start, end, len };
        let arcs = [
            span(5, 5, 1 << 64),
            span(u64::MAX - 9, 10, 20),
            span(0, 30, 30),
            span(40, 50, 10),
            span(70, 90, 20),
            span(99, 100, 1),
        ];
        let mut entries: Vec<ArcEntry> = arcs.iter().map(ArcEntry::of).collect();
        entries.sort_unstable();
        let ends: Vec<Token> = entries.iter().map(|e| e.end).collect();
        assert_eq!(ends, vec![5, 30, 10, 90, 50, 100]);
        for arc in arcs {
            assert_eq!(ArcEntry::of(&arc).span(), arc);
        }
    }

    #[test]
    fn touched_slots_wrap_to_the_first() {
        let slots: Vec<Slot> = [(10, 0), (20, 1), (20, 2), (30, 0)]
            .into_iter()
            .map(|(token, owner)| Slot { token, owner })
            .collect();
        assert_eq!(touched(&slots, &[20]), vec![1, 2, 3]);
        assert_eq!(touched(&slots, &[5, 30]), vec![0, 3]);
        assert_eq!(touched(&slots, &[25, 40]), vec![0, 3]);
    }
}
