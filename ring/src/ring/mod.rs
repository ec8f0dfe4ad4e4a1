//! The ring: members sorted by id, slots (token, owner) sorted by position, and what is
//! derived from them: ownership per member and each member's arcs (computed on first
//! use, then updated from the slots each change touched, see `derived`), the lookup
//! index and the checksum (computed on first use after a change). Clones share the
//! slots and copy the index, not the derived tables; a change builds new slots and
//! leaves the clone's alone.
//!
//! This file holds the type and its queries (lookups, successors, ownership); the
//! other concerns are its submodules, each with the ring's fields at hand and nothing
//! of one another but the type.
//!
//! # Layout
//! - `change`: joins, leaves and changes of several steps, their plans, and how new
//!   slots are built from a plan's pieces.
//! - `builder`: [`RingBuilder`], a ring under a run of changes nothing reads between.
//! - `diff`: what moved between two rings.
//! - `parts`: a ring as plain parts (what snapshots store) and back, checked.
//! - `checksum`: the checksum of the spec (section 9).

mod builder;
mod change;
mod checksum;
mod diff;
mod parts;

use std::fmt;
use std::sync::{Arc, OnceLock};

pub use builder::RingBuilder;
pub use diff::{diff, diff_at, diff_at_indexed};

use crate::balanced::Layout;
use crate::derived::Derived;
use crate::index::{self, LookupIndex};
use crate::members::index_by_id;
use crate::plan::fraction;
use crate::slots::{ArcSpan, Pool, Slot, Slots, after, before, seek, slot_at};
use crate::{Member, RingConfig, RingError, Strategy, Token, hash_key};

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
    config: RingConfig,
    /// Sorted by id; slot owners index into it.
    members: Vec<Member>,
    /// Sorted by (position, owner); equal positions only occur in random rings.
    /// Shared with clones: a change installs new slots.
    slots: Arc<Slots>,
    /// Where the slot lists of this ring and its clones go when nobody holds them,
    /// for the next change to fill.
    pool: Arc<Pool>,
    /// Ownership and arcs per member: computed on first use (a plan, `ownership`),
    /// then updated by each change. A clone starts without them.
    tables: OnceLock<Derived>,
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
    /// one only in random rings. Positions in ascending order (as [`crate::Edits`]
    /// records them) are found each from the previous one, by a galloping search; a
    /// position below the previous one is searched from the start.
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
        let start = slot_at(&self.slots, hash);
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
                fraction: fraction(arc),
            })
            .collect()
    }

    /// The slots, sorted by (position, owner).
    pub(crate) fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The id of the member at this index of the member list.
    pub(crate) fn id_at(&self, index: usize) -> &str {
        &self.members[index].id
    }

    /// The derived tables (computed by the first call since the ring was built or
    /// cloned).
    fn tables(&self) -> &Derived {
        self.tables.get_or_init(|| {
            Derived::compute(&self.slots, self.members.len(), tracks_arcs(self.config))
        })
    }

    /// Index of the member with this id.
    pub(crate) fn member_index(&self, id: &str) -> Option<usize> {
        index_by_id(&self.members, id)
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
        let (i, t) = (slot_at(&self.slots, end), self.slots.len());
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

/// Whether rings of this configuration keep each member's arcs (only balanced joins
/// and leaves use them).
fn tracks_arcs(config: RingConfig) -> bool {
    config.strategy == Strategy::Balanced
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
