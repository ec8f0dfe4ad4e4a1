//! The interface every measured implementation provides, and ringside's own wrapper.
//!
//! How it fits: `measure` drives any [`Subject`] the same way; each implementation
//! only says how to look a key up, how to change its membership, and what it can tell
//! exactly about itself (ownership, moved key space, a plan). What it cannot tell is
//! `None` and becomes `null` in the JSON.

use ringside_ring::{Member, Ring, RingBuilder, RingConfig, Strategy};

/// Errors of the bench: setup failures of an implementation, bad arguments, I/O.
pub(crate) type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Virtual nodes (tokens) per member for every ring implementation.
pub(crate) const VNODES: u32 = 160;

/// How a member's share of the key space was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShareBasis {
    /// Exact arc lengths on the 64-bit ring (from the implementation's tokens or ranges).
    Arcs,
    /// Exact entry counts of a lookup table.
    Table,
    /// By construction of the algorithm (every bucket has probability exactly 1/n).
    Formula,
}

impl ShareBasis {
    /// The label used in the table and the JSON.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ShareBasis::Arcs => "exact-arcs",
            ShareBasis::Table => "exact-table",
            ShareBasis::Formula => "formula",
        }
    }
}

/// Each member's share of the key space, in units that sum to the whole space.
pub(crate) struct Shares {
    /// One value per member that owns anything (members owning nothing may be absent).
    pub(crate) values: Vec<u128>,
    /// How the values were obtained.
    pub(crate) basis: ShareBasis,
}

impl Shares {
    /// Largest share over the mean share of `members` members.
    pub(crate) fn peak_mean(&self, members: usize) -> f64 {
        let total: u128 = self.values.iter().sum();
        let peak = self.values.iter().copied().max().unwrap_or(0);
        (peak as f64) * (members as f64) / (total as f64)
    }
}

/// One implementation under test, with a membership of string ids.
pub(crate) trait Subject: Clone {
    /// Whether the churn run (random leave + join steps) applies to this implementation.
    const CHURN: bool = false;

    /// The owner of `key`, hashing included (`None` only on an empty ring).
    fn lookup(&self, key: &[u8]) -> Option<&str>;

    /// Adds a member.
    fn add(&mut self, id: &str) -> BenchResult<()>;

    /// Removes a member.
    fn remove(&mut self, id: &str) -> BenchResult<()>;

    /// Which of `members` the remove measurement takes out (the middle one by default).
    fn removal_candidate<'a>(&self, members: &'a [String]) -> &'a str {
        &members[members.len() / 2]
    }

    /// Computes what adding `id` would move, without changing `self`, the most direct
    /// way the implementation offers. Returns the size of the plan (ranges or entries),
    /// or `None` when the implementation has no plan.
    fn plan_add(&self, _id: &str) -> BenchResult<Option<usize>> {
        Ok(None)
    }

    /// The same plan computed as clone + add + diff, where that is not already what
    /// [`Subject::plan_add`] does; `None` otherwise.
    fn plan_add_by_diff(&self, _id: &str) -> BenchResult<Option<usize>> {
        Ok(None)
    }

    /// Exact (or by-construction) ownership, `None` when it cannot be known.
    fn shares(&self) -> Option<Shares>;

    /// Exact fraction of the key space whose owner differs in `after`, if known.
    fn moved_exact(&self, _after: &Self) -> BenchResult<Option<f64>> {
        Ok(None)
    }
}

/// ringside's ring with one of its token strategies.
#[derive(Clone)]
pub(crate) struct Ringside(Ring);

impl Ringside {
    /// Builds a ring over `members` (weight 1 each) joining in the given order, as
    /// the CLI does: one change through a [`RingBuilder`].
    pub(crate) fn build(strategy: Strategy, members: &[String]) -> BenchResult<Self> {
        let mut ring = RingBuilder::new(RingConfig::new(strategy, VNODES)?);
        ring.change([], members.iter().map(|id| member(id)))?;
        Ok(Self(ring.build()))
    }
}

/// A weight-1 member.
fn member(id: &str) -> Member {
    Member {
        id: id.to_owned(),
        weight: 1,
    }
}

impl Ringside {
    /// Number of tokens.
    pub(crate) fn tokens(&self) -> usize {
        self.0.token_count()
    }

    /// The ring's checksum.
    pub(crate) fn checksum(&self) -> u64 {
        self.0.checksum()
    }
}

impl Subject for Ringside {
    const CHURN: bool = true;

    fn lookup(&self, key: &[u8]) -> Option<&str> {
        self.0.owner(key).ok()
    }

    fn add(&mut self, id: &str) -> BenchResult<()> {
        Ok(self.0.add(member(id))?)
    }

    fn remove(&mut self, id: &str) -> BenchResult<()> {
        self.0.remove(id)?;
        Ok(())
    }

    fn plan_add(&self, id: &str) -> BenchResult<Option<usize>> {
        Ok(Some(self.0.plan_add(&member(id))?.ranges.len()))
    }

    fn plan_add_by_diff(&self, id: &str) -> BenchResult<Option<usize>> {
        let mut next = self.0.clone();
        next.add(member(id))?;
        Ok(Some(ringside_ring::diff(&self.0, &next).ranges.len()))
    }

    fn shares(&self) -> Option<Shares> {
        Some(Shares {
            values: self.0.ownership().iter().map(|share| share.arc).collect(),
            basis: ShareBasis::Arcs,
        })
    }

    fn moved_exact(&self, after: &Self) -> BenchResult<Option<f64>> {
        Ok(Some(ringside_ring::diff(&self.0, &after.0).moved_fraction))
    }
}
