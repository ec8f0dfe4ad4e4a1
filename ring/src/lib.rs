//! Pure consistent-hash ring: virtual-node tokens, lookup, successors, bounded loads,
//! the diff of two rings and a checksum.
//!
//! Everything here is synchronous, deterministic and free of I/O. Positions on the ring
//! are `u64`; a key hashes (xxh3-64, fixed seed [`HASH_SEED`]) to a position and is owned
//! by the member holding the first token at or after that position (clockwise,
//! wrapping). A token `t` with predecessor token `p` owns the arc `(p, t]`. The full
//! contract, precise enough to reimplement lookups elsewhere, is `docs/ring-spec.md`.
//!
//! # How it fits
//!
//! The event fold (`ringside-events`) applies each membership event to a [`Ring`] in
//! place with [`Ring::change_recording`] (its removals, then its additions, all or
//! nothing), which notes the positions they touch ([`Edits`]), and publishes the
//! [`diff_at`] of those positions (equal to the [`diff`] of the ring before, a clone,
//! and after) as rebalance events; the nodes and the CLI answer [`Ring::owner`] and
//! [`Ring::successors`]; snapshots store tokens with owner indices
//! ([`Ring::indexed_tokens`]) and come back through [`Ring::from_indexed_parts`] (or by
//! id: [`Ring::to_parts`], [`Ring::from_parts`]), checked by [`Ring::checksum`]. A run
//! of changes that nothing reads in between (a fold catching up, a ring built from a
//! member list) goes through a [`RingBuilder`], which makes the [`Ring`] once at the
//! end.
//!
//! # Layout
//!
//! Leaves first: each module builds only on those above it (and the root's types).
//!
//! - `slots`: a slot (token, owner), the arc it owns, searches, recycled slot lists.
//! - `members`: the member list sorted by id, and the checks of a join.
//! - [`plan`](RingDiff): what a change moves: pieces, [`Edits`], the canonical
//!   [`RingDiff`].
//! - `derived`: ownership and largest arcs per member, updated from what a change touched.
//! - `index`: the bucket table that turns a lookup into (mostly) one table read.
//! - `random`: token derivation and slot lists of [`Strategy::Random`].
//! - `balanced`: the load-aware join and leave of [`Strategy::Balanced`], planned over a
//!   `Layout` (what a plan reads of a ring).
//! - `linked`: a balanced ring as a linked list of tokens, whose changes cost the tokens
//!   they move (the form of a run of changes).
//! - [`ring`](Ring): the ring itself: queries; changes; what moved between two rings;
//!   snapshot parts; checksum; [`RingBuilder`].
//! - [`BoundedLoads`]: consistent hashing with bounded loads (Mirrokni et al.).

mod balanced;
mod bounded;
mod derived;
mod error;
mod imbalance;
mod index;
mod linked;
mod members;
mod plan;
mod random;
mod ring;
mod slots;
pub mod splitmix;

use std::fmt;
use std::str::FromStr;

pub use bounded::BoundedLoads;
pub use error::RingError;
pub use plan::{Edits, MemberAt, MovedRange, RingDiff};
pub use ring::{Ring, RingBuilder, Share, diff, diff_at, diff_at_indexed};
pub use splitmix::SplitMix64;

/// Seed of the ring's key hash (xxh3-64). Part of the wire contract: never change it.
pub const HASH_SEED: u64 = 0x7269_6e67_7369_6465; // "ringside"

/// The most tokens a ring may hold; [`Ring::add`] refuses members that would exceed it.
pub const MAX_TOKENS: usize = 1 << 24;

/// A position on the ring.
pub type Token = u64;

/// Hashes a key of any length to its ring position.
#[inline]
pub fn hash_key(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, HASH_SEED)
}

/// A ring member: an id and a positive weight.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    /// Unique, non-empty id (pod name, node id).
    pub id: String,
    /// Relative capacity; must be at least 1.
    pub weight: u32,
}

impl Member {
    /// A member with the given id and weight (checked when it joins a ring).
    pub fn new(id: impl Into<String>, weight: u32) -> Self {
        Member {
            id: id.into(),
            weight,
        }
    }

    /// Checks the member on its own: a non-empty id and a weight of at least 1.
    pub fn validate(&self) -> Result<(), RingError> {
        if self.id.is_empty() {
            return Err(RingError::EmptyId);
        }
        if self.weight == 0 {
            return Err(RingError::ZeroWeight(self.id.clone()));
        }
        Ok(())
    }
}

/// How tokens are chosen for a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Tokens from the hash of (member id, index): the ring depends only on the member set.
    Random,
    /// Deterministic load-aware allocation: the ring depends on the order of joins and leaves.
    Balanced,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Random => "random",
            Strategy::Balanced => "balanced",
        })
    }
}

impl FromStr for Strategy {
    type Err = RingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "random" => Ok(Strategy::Random),
            "balanced" => Ok(Strategy::Balanced),
            other => Err(RingError::InvalidConfig(format!(
                "unknown strategy '{other}' (expected: random, balanced)"
            ))),
        }
    }
}

/// How a ring places tokens: the strategy and the virtual nodes per unit of weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RingConfig {
    /// Token strategy.
    pub strategy: Strategy,
    /// Virtual nodes per unit of weight: the token count of a random member, and the
    /// most donors (new tokens) of a balanced join. Between 1 and [`RingConfig::MAX_VNODES`].
    pub vnodes: u32,
}

impl RingConfig {
    /// The default number of virtual nodes per unit of weight.
    pub const DEFAULT_VNODES: u32 = 160;
    /// The largest accepted number of virtual nodes per unit of weight.
    pub const MAX_VNODES: u32 = 4096;

    /// A checked configuration.
    pub fn new(strategy: Strategy, vnodes: u32) -> Result<Self, RingError> {
        let config = RingConfig { strategy, vnodes };
        config.validate()?;
        Ok(config)
    }

    /// Checks that `vnodes` is within `1..=MAX_VNODES` (the fields are public, so a
    /// configuration built by hand is checked again when a ring uses it).
    pub fn validate(&self) -> Result<(), RingError> {
        if self.vnodes == 0 || self.vnodes > Self::MAX_VNODES {
            return Err(RingError::InvalidConfig(format!(
                "vnodes must be between 1 and {}, got {}",
                Self::MAX_VNODES,
                self.vnodes
            )));
        }
        Ok(())
    }
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            strategy: Strategy::Balanced,
            vnodes: Self::DEFAULT_VNODES,
        }
    }
}
