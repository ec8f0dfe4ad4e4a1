//! Fuzzing the decoders by byte-level mutation (proptest: cargo-fuzz needs a nightly
//! toolchain, which this project does not use). Valid encodings of every event kind,
//! of their proto3 JSON and of a ring snapshot are mutated (bits flipped, bytes set,
//! inserted, removed, the tail cut) and decoded, on every subject: a decoder returns a
//! value or an error and never panics, and whatever decodes is a valid event that
//! encodes again and reads back the same.
//!
//! `./dev test` runs `RINGSIDE_FUZZ_CASES` (default 2,000) inputs per target; longer
//! runs set it higher (docs/reliability.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use proptest::prelude::*;
use ringside_events::subject::{self, SubjectKind};
use ringside_events::{RingLedger, codec};
use ringside_ring::RingConfig;
use ringside_testkit::fuzz::{Mutation, cases, mutate, mutation};

/// Every subject a service decodes events on.
fn subjects() -> Vec<String> {
    let ring = common::ring();
    let node = ringside_events::NodeName::new("node-1").unwrap();
    vec![
        subject::membership(&ring),
        subject::rebalance(&ring),
        subject::handoff(&ring),
        subject::scale(&ring),
        subject::traffic(&ring),
        subject::load(&ring, &node),
        subject::heartbeat(&ring, &node),
        subject::stored(&ring, SubjectKind::Membership),
        "not.a.ringside.subject".to_string(),
    ]
}

/// A decoded event must be valid: it encodes again and reads back the same.
fn round_trips(event: &ringside_events::Event) {
    let again = codec::encode(event).expect("a decoded event encodes");
    assert_eq!(codec::decode(&again).expect("and decodes again"), *event);
    let _ = event.summary();
    codec::to_json(event).expect("and writes as JSON");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_binary_events_decode_or_fail_cleanly(
        which in 0usize..64,
        mutations in proptest::collection::vec(mutation(), 1..8),
    ) {
        let events = common::one_of_each();
        let valid = codec::encode(&events[which % events.len()]).unwrap();
        let bytes = mutate(valid.to_vec(), &mutations);
        if let Ok(event) = codec::decode(&bytes) {
            round_trips(&event);
        }
        for s in subjects() {
            if let Ok(event) = codec::decode_on(&s, &bytes) {
                round_trips(&event);
            }
        }
    }

    #[test]
    fn mutated_json_events_decode_or_fail_cleanly(
        which in 0usize..64,
        mutations in proptest::collection::vec(mutation(), 1..8),
    ) {
        let events = common::one_of_each();
        let valid = codec::to_json(&events[which % events.len()]).unwrap();
        let bytes = mutate(valid.into_bytes(), &mutations);
        if let Ok(text) = std::str::from_utf8(&bytes)
            && let Ok(event) = codec::from_json(text)
        {
            round_trips(&event);
        }
    }

    #[test]
    fn mutated_snapshots_decode_or_fail_cleanly(
        members in 1usize..12,
        mutations in proptest::collection::vec(mutation(), 1..8),
    ) {
        let ring = common::ring();
        let mut ledger = RingLedger::new(ring.clone(), RingConfig::default());
        for i in 0..members {
            let joined = common::joined(i);
            ledger.apply(i as u64 + 1, joined.body());
        }
        let valid = codec::encode_snapshot(&ledger.snapshot().unwrap()).unwrap();
        let bytes = mutate(valid.to_vec(), &mutations);
        if let Ok(snapshot) = codec::decode_snapshot(&bytes) {
            // It writes as proto3 JSON (exports carry snapshots so), and either loads
            // into a ring or is refused.
            serde_json::to_string(&snapshot).expect("a decoded snapshot writes as JSON");
            let _ = ringside_events::convert::snapshot_to_ring(&snapshot);
            let _ = RingLedger::from_snapshot(&snapshot);
        }
    }
}

/// The generator is not vacuous: mutations do produce inputs the decoder refuses and,
/// for a flip in a string's bytes, some it accepts.
#[test]
fn mutations_reach_both_outcomes() {
    let events = common::one_of_each();
    let valid = codec::encode(&events[0]).unwrap().to_vec();
    let (mut ok, mut err) = (0, 0);
    for i in 0..valid.len() {
        match codec::decode(&mutate(valid.clone(), &[Mutation::Flip(i, 0)])) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    assert!(ok > 0 && err > 0, "ok {ok}, err {err}");
}
