//! Sync fact ids, shared by both membership sources.
//!
//! The events crate derives `Nats-Msg-Id` from an event's content, and JetStream drops a
//! message whose id it stored within its duplicate window. A sync states a member set;
//! the same set can be the truth twice with other facts in between (`sync{a}`, `join b`,
//! `b` gone unseen, `sync{a}` again), and the second sync must be stored or `b` would
//! stay in the ring. So a sync's content carries a *fact id* (in
//! `MembershipSynced.resource_version`) made of the set and of the fact before it on
//! the ring's subject (the *head*):
//!
//! `sync:<ring>:<set hash>:<basis>`, where `<set hash>` is xxh3-128 over the sorted,
//! length-prefixed protobuf encodings of the members and `<basis>` is xxh3-64 of the
//! head's id. If the head already is a sync of the same set, the sync reuses the head's
//! id, hence the same content and message id: a re-list, a restart or a periodic sync
//! that sees nothing new stores nothing new.

use prost::Message as _;
use ringside_events::pb;

/// Prefix of every sync fact id (`MembershipSynced.resource_version` of our syncs).
pub const SYNC_PREFIX: &str = "sync:";

/// The fact id of a sync of `members` (sorted by id) on `ring` after the fact `head`.
pub fn sync_fact_id(ring: &str, members: &[pb::Member], head: Option<&str>) -> String {
    let prefix = format!("{SYNC_PREFIX}{ring}:{:032x}:", set_hash(members));
    match head {
        // Same set as the last stored fact: the same fact, the same id.
        Some(head) if head.starts_with(&prefix) => head.to_owned(),
        head => {
            let basis = xxhash_rust::xxh3::xxh3_64(head.unwrap_or_default().as_bytes());
            format!("{prefix}{basis:016x}")
        }
    }
}

/// Hash of a member set that depends on its content only. Each member is
/// length-delimited, so no two different sets encode to the same bytes; map fields are
/// encoded in key order (the events crate generates `BTreeMap`s).
fn set_hash(members: &[pb::Member]) -> u128 {
    let mut buf = Vec::new();
    for m in members {
        // Writing to a Vec cannot run out of room.
        let _ = m.encode_length_delimited(&mut buf);
    }
    xxhash_rust::xxh3::xxh3_128(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, uid: &str) -> pb::Member {
        pb::Member {
            id: id.into(),
            address: "10.0.0.1:7000".into(),
            weight: 1,
            uid: Some(uid.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_sync_after_its_own_id_reuses_it() {
        let set = [member("a", "1")];
        let first = sync_fact_id("r", &set, Some("join:x"));
        assert!(first.starts_with("sync:r:"), "{first}");
        assert_eq!(sync_fact_id("r", &set, Some(&first)), first);
        assert_eq!(sync_fact_id("r", &set, Some("join:x")), first);
    }

    #[test]
    fn set_head_and_ring_all_name_the_fact() {
        let a = [member("a", "1")];
        let base = sync_fact_id("r", &a, None);
        assert_ne!(sync_fact_id("r", &a, Some("join:x")), base);
        assert_ne!(sync_fact_id("r", &[member("a", "2")], None), base);
        assert_ne!(sync_fact_id("r", &[], None), base);
        assert_ne!(sync_fact_id("s", &a, None), base);
        // A sync of another set after a sync is a new fact, not the head reused.
        let b = sync_fact_id("r", &[member("b", "1")], Some(&base));
        assert_ne!(b, base);
    }
}
