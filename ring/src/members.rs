//! A ring's member list: sorted by id, so that a member's index (what slots and plans
//! name it by) is its rank, and finding one is a binary search. A leaf, shared by the
//! ring and by the linked form a fold keeps, so that both find and admit members alike.

use crate::{Member, RingConfig, RingError};

/// Index of the member with this id in `members` (sorted by id).
pub(crate) fn index_by_id(members: &[Member], id: &str) -> Option<usize> {
    members.binary_search_by(|m| m.id.as_str().cmp(id)).ok()
}

/// Checks a member joining `members` (sorted by id) under `config`; returns its
/// insertion index.
pub(crate) fn check_join(
    config: &RingConfig,
    members: &[Member],
    member: &Member,
) -> Result<usize, RingError> {
    let found = members.binary_search_by(|m| m.id.as_str().cmp(&member.id));
    check_joiner(config, member, found.is_ok())?;
    // Not found (a member found is refused above): where it goes.
    Ok(found.unwrap_or_else(|at| at))
}

/// Checks a member joining a ring of `config` in the order every join checks it: the
/// configuration, the member itself, then whether its id is `present` already.
pub(crate) fn check_joiner(
    config: &RingConfig,
    member: &Member,
    present: bool,
) -> Result<(), RingError> {
    config.validate()?;
    member.validate()?;
    if present {
        return Err(RingError::DuplicateMember(member.id.clone()));
    }
    Ok(())
}
