//! The one error type of the ring crate: every bad input becomes one of these variants,
//! never a panic.

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
    /// A member with an empty id.
    #[error("member id is empty")]
    EmptyId,
    /// A configuration value out of range (vnodes, strategy name, load factor).
    #[error("invalid ring configuration: {0}")]
    InvalidConfig(String),
    /// `successors` asked for more distinct members than the ring has.
    #[error("asked for {asked} distinct members but the ring has {have}")]
    TooFewMembers {
        /// How many members were asked for.
        asked: usize,
        /// How many the ring has.
        have: usize,
    },
    /// Adding the member would take the ring past [`crate::MAX_TOKENS`].
    #[error("the ring would hold {requested} tokens, more than the limit of {max}")]
    TooManyTokens {
        /// Tokens the ring would hold after the change.
        requested: u64,
        /// The limit.
        max: u64,
    },
    /// `from_parts` got tokens that no ring could hold (unsorted, unknown owner, ...).
    #[error("invalid ring snapshot: {0}")]
    InvalidSnapshot(String),
    /// `BoundedLoads::release` for a member that holds no assigned key.
    #[error("member '{0}' has no assigned key to release")]
    NothingAssigned(String),
}
