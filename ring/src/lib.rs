//! Pure consistent-hash ring (API contract; implementation in progress).
//!
//! Everything here is synchronous, deterministic and free of I/O. Positions on the
//! ring are `u64`; a key hashes (xxh3-64, fixed seed [`HASH_SEED`]) to a position and
//! is owned by the member holding the first token at or after that position
//! (clockwise, wrapping). A token `t` with predecessor token `p` owns the arc `(p, t]`.

use std::fmt;
use std::str::FromStr;

/// Seed of the ring's key hash (xxh3-64). Part of the wire contract: never change it.
pub const HASH_SEED: u64 = 0x7269_6e67_7369_6465; // "ringside"

/// A position on the ring.
pub type Token = u64;

/// Hashes a key of any length to its ring position.
pub fn hash_key(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, HASH_SEED)
}

/// A ring member: an id and a positive weight.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    /// Unique id (pod name, node id).
    pub id: String,
    /// Relative capacity; must be at least 1.
    pub weight: u32,
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

/// Errors of ring operations. Bad input is always one of these, never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// A lookup on a ring without members.
    #[error("the ring has no members")]
    Empty,
    /// `add` of a member id already on the ring.
    #[error("member '{0}' is already on the ring")]
    DuplicateMember(String),
    /// `remove` (or another operation) named a member that is not on the ring.
    #[error("member '{0}' is not on the ring")]
    UnknownMember(String),
    /// A member with weight 0.
    #[error("member '{0}' has weight 0 (weights start at 1)")]
    ZeroWeight(String),
    /// A configuration value out of range.
    #[error("invalid ring configuration: {0}")]
    InvalidConfig(String),
}
