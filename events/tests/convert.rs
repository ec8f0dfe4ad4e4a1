//! Wire types and rings: every step of a churn, described by `rebalanced`, rebuilds
//! the next ring from the previous one and the event alone; snapshots round-trip.

// Helper functions of this test file unwrap too: a failure there fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use prost::Message as _;
use ringside_events::convert::{
    ConvertError, apply_rebalanced, rebalanced, ring_to_snapshot, snapshot_to_ring,
};
use ringside_events::event::NO_OWNER;
use ringside_events::{Event, codec, pb};
use ringside_ring::{Ring, RingConfig, Strategy};

fn details(n: usize) -> Vec<pb::Member> {
    (0..n).map(common::member).collect()
}

/// One step: the event validates, encodes, and rebuilds `after` from `before`.
fn check_step(before: &Ring, after: &Ring, epoch: u64) -> pb::RingRebalanced {
    let r = rebalanced(before, after, &details(64), epoch, epoch * 10).unwrap();
    let event = Event::new(common::ring(), r.clone()).unwrap();
    let decoded = codec::decode(&codec::encode(&event).unwrap()).unwrap();
    assert_eq!(decoded, event);
    let rebuilt = apply_rebalanced(before, &r).unwrap();
    assert_eq!(rebuilt.checksum(), after.checksum(), "epoch {epoch}");
    assert_eq!(r.previous_checksum, before.checksum());
    assert_eq!(r.token_count as usize, after.token_count());
    let snapshot = ring_to_snapshot(
        &common::ring(),
        after,
        &details(64),
        epoch,
        epoch * 10,
        epoch * 10 + 1,
    )
    .unwrap();
    let bytes = codec::encode_snapshot(&snapshot).unwrap();
    let back = snapshot_to_ring(&codec::decode_snapshot(&bytes).unwrap()).unwrap();
    assert_eq!(back.checksum(), after.checksum());
    r
}

fn churn(strategy: Strategy) {
    let config = RingConfig::new(strategy, 16).unwrap();
    let mut ring = Ring::new(config);
    let mut epoch = 0;
    // Joins one by one, a leave, a re-weight, then a multi-member step (a sync).
    for i in 0..12 {
        let before = ring.clone();
        ring.add(ringside_ring::Member::new(common::member(i).id, 1))
            .unwrap();
        epoch += 1;
        let r = check_step(&before, &ring, epoch);
        assert_eq!(r.joined, [common::member(i).id]);
        if i == 0 {
            // From an empty ring everything moves from nobody.
            let moved = r.moved_ranges.unwrap();
            assert!(moved.from.iter().all(|f| *f == NO_OWNER));
            assert_eq!(r.moved_fraction, 1.0);
        }
    }
    let before = ring.clone();
    ring.remove(&common::member(3).id).unwrap();
    epoch += 1;
    let r = check_step(&before, &ring, epoch);
    assert_eq!(r.departed, [common::member(3).id]);
    // The departed member (index members.len() + 0) gives up its tokens: removed, or
    // (balanced strategy) handed to a neighbour.
    let changes = r.token_changes.unwrap();
    let departed = r.members.len() as u32;
    assert!(
        changes.removed_owners.contains(&departed) || changes.reassigned_from.contains(&departed)
    );
    assert!(!changes.added_owners.contains(&departed));

    let before = ring.clone();
    ring.remove(&common::member(5).id).unwrap();
    ring.add(ringside_ring::Member::new(common::member(5).id, 3))
        .unwrap();
    epoch += 1;
    let r = check_step(&before, &ring, epoch);
    assert_eq!(r.reweighted, [common::member(5).id]);
    assert_eq!(
        r.members
            .iter()
            .find(|m| m.id == common::member(5).id)
            .unwrap()
            .weight,
        3
    );

    let before = ring.clone();
    for i in 20..25 {
        ring.add(ringside_ring::Member::new(common::member(i).id, 1))
            .unwrap();
    }
    ring.remove(&common::member(0).id).unwrap();
    ring.remove(&common::member(7).id).unwrap();
    epoch += 1;
    let r = check_step(&before, &ring, epoch);
    assert_eq!(r.joined.len(), 5);
    assert_eq!(r.departed, [common::member(0).id, common::member(7).id]);
    assert!(r.moved_fraction > 0.0 && r.ideal_fraction > 0.0);
}

#[test]
fn balanced_churn_round_trips() {
    churn(Strategy::Balanced);
}

#[test]
fn random_churn_round_trips() {
    churn(Strategy::Random);
}

#[test]
fn tampering_is_caught() {
    let mut ring = Ring::new(RingConfig::new(Strategy::Balanced, 8).unwrap());
    for i in 0..4 {
        ring.add(ringside_ring::Member::new(common::member(i).id, 1))
            .unwrap();
    }
    let before = ring.clone();
    ring.add(ringside_ring::Member::new(common::member(4).id, 1))
        .unwrap();
    let mut r = rebalanced(&before, &ring, &details(8), 5, 50).unwrap();
    r.checksum ^= 1;
    assert!(matches!(
        apply_rebalanced(&before, &r),
        Err(ConvertError::ChecksumMismatch { epoch: 5, .. })
    ));

    // A member without details cannot be described.
    assert!(matches!(
        rebalanced(&before, &ring, &details(3), 5, 50),
        Err(ConvertError::MissingMemberDetails(_))
    ));
    // A snapshot whose checksum lies is refused; one without a strategy too.
    let mut s = ring_to_snapshot(&common::ring(), &ring, &details(8), 5, 50, 51).unwrap();
    s.checksum ^= 1;
    assert!(matches!(
        snapshot_to_ring(&s),
        Err(ConvertError::ChecksumMismatch { .. })
    ));
    s.config = Some(pb::RingConfig {
        strategy: 0,
        vnodes: 8,
    });
    assert!(matches!(
        snapshot_to_ring(&s),
        Err(ConvertError::UnknownStrategy(0))
    ));
    // Config conversions both ways.
    let c = RingConfig::new(Strategy::Random, 160).unwrap();
    assert_eq!(RingConfig::try_from(&pb::RingConfig::from(c)).unwrap(), c);
    assert!(
        RingConfig::try_from(&pb::RingConfig {
            strategy: 1,
            vnodes: 0
        })
        .is_err()
    );
    let _ = s.encode_to_vec();
}
