//! Codec, message ids, headers and size budget (no server needed).

// Helper functions of this test file unwrap too: a failure there fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::SystemTime;

use prost::Message as _;
use ringside_events::codec::{self, MAX_EVENT_BYTES, MAX_PAYLOAD_BYTES};
use ringside_events::headers;
use ringside_events::{Body, DecodeError, Event, EventKind, InvalidEvent, SCHEMA_VERSION, pb};

use common::{member, one_of_each, ring};

#[test]
fn every_kind_round_trips_through_binary_and_json() {
    let events = one_of_each();
    let kinds: Vec<EventKind> = events.iter().map(Event::kind).collect();
    assert_eq!(kinds, EventKind::ALL, "one event of every kind");
    for event in events {
        let bytes = codec::encode(&event).unwrap();
        // The same bytes as the whole envelope encoded at once.
        assert_eq!(
            bytes,
            event.to_envelope().encode_to_vec(),
            "{:?}",
            event.kind()
        );
        assert_eq!(
            codec::decode(&bytes).unwrap(),
            event,
            "binary {:?}",
            event.kind()
        );
        assert_eq!(Event::try_from(&bytes[..]).unwrap(), event);
        let json = codec::to_json(&event).unwrap();
        assert!(!json.contains('\n'));
        assert_eq!(codec::from_json(&json).unwrap(), event, "json {json}");
    }
}

#[test]
fn json_is_the_proto3_mapping() {
    let events = one_of_each();
    let rebalanced = codec::to_json(&events[3]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&rebalanced).unwrap();
    // camelCase names, 64-bit integers as strings, enums by name, RFC 3339 time in
    // UTC written with `Z`.
    assert_eq!(v["schemaVersion"], 1);
    assert_eq!(v["ring"], "orders");
    assert_eq!(v["occurredAt"], "2027-01-15T08:00:01Z");
    let r = &v["ringRebalanced"];
    assert_eq!(r["epoch"], "41");
    assert_eq!(r["checksum"], u64::MAX.to_string());
    assert_eq!(r["config"]["strategy"], "RING_STRATEGY_BALANCED");
    assert_eq!(r["movedFraction"], 0.198);
    // Unknown fields (a newer writer) are ignored.
    let mut newer = v.clone();
    newer["someFutureField"] = serde_json::json!("x");
    newer["ringRebalanced"]["anotherOne"] = serde_json::json!(1);
    assert_eq!(codec::from_json(&newer.to_string()).unwrap(), events[3]);
}

#[test]
fn an_event_is_decoded_only_on_its_own_subject() {
    for event in one_of_each() {
        let bytes = codec::encode(&event).unwrap();
        let subject = event.subject();
        assert_eq!(codec::decode_on(&subject, &bytes).unwrap(), event);
        // The same bytes on another ring's subject, or on another kind's.
        for elsewhere in [
            subject.replacen("ringside.orders.", "ringside.other.", 1),
            "ringside.orders.deadletter".to_string(),
        ] {
            match codec::decode_on(&elsewhere, &bytes) {
                Err(e @ DecodeError::WrongSubject { .. }) => {
                    assert_eq!(e.label(), "wrong_subject");
                    assert!(e.to_string().contains(&subject), "{e}");
                }
                other => panic!("{subject} on {elsewhere}: {other:?}"),
            }
        }
    }
}

#[test]
fn bad_input_is_an_error_value() {
    let good = codec::encode(&one_of_each()[3]).unwrap();
    // Garbage: an invalid wire type.
    assert!(matches!(
        codec::decode(b"\xff\xfe\xfd garbage"),
        Err(DecodeError::Malformed(_))
    ));
    // Truncated at every length: never a panic, never a wrong event.
    for cut in 0..good.len() {
        match codec::decode(&good[..cut]) {
            Ok(e) => panic!("truncated to {cut} decoded as {e:?}"),
            Err(
                DecodeError::Malformed(_)
                | DecodeError::UnknownVersion { .. }
                | DecodeError::MissingEvent
                | DecodeError::Invalid(_),
            ) => {}
            Err(other) => panic!("truncated to {cut}: unexpected {other:?}"),
        }
    }
    // Too large: refused before parsing.
    let big = vec![0u8; MAX_EVENT_BYTES + 1];
    assert!(matches!(
        codec::decode(&big),
        Err(DecodeError::TooLarge { size, limit }) if size == MAX_EVENT_BYTES + 1 && limit == MAX_EVENT_BYTES
    ));
    // Versions: 0 (unset) and a future one.
    for version in [0, SCHEMA_VERSION + 1] {
        let mut env = one_of_each()[0].to_envelope();
        env.schema_version = version;
        match codec::decode(&env.encode_to_vec()) {
            Err(DecodeError::UnknownVersion { found }) => assert_eq!(found, version),
            other => panic!("{other:?}"),
        }
    }
    // No event (or one newer than this reader: unknown oneof fields decode as none).
    let mut env = one_of_each()[0].to_envelope();
    env.body = None;
    let mut bytes = env.encode_to_vec();
    assert!(matches!(
        codec::decode(&bytes),
        Err(DecodeError::MissingEvent)
    ));
    // Field 99 (length-delimited, empty) as a future event kind: still MissingEvent.
    bytes.extend_from_slice(&[0x9a, 0x06, 0x00]);
    assert!(matches!(
        codec::decode(&bytes),
        Err(DecodeError::MissingEvent)
    ));
    // Bad ring name.
    let mut env = one_of_each()[0].to_envelope();
    env.ring = "a.b".into();
    assert!(matches!(
        codec::decode(&env.encode_to_vec()),
        Err(DecodeError::Invalid(InvalidEvent::Ring(_)))
    ));
    // Malformed JSON.
    assert!(matches!(
        codec::from_json("{not json"),
        Err(DecodeError::MalformedJson(_))
    ));
    assert_eq!(DecodeError::MissingEvent.label(), "missing_event");
}

#[test]
fn contract_rules_are_checked_on_build_and_decode() {
    let invalid = |body: Body| Event::new(ring(), body).unwrap_err();
    // A join without members, a member with weight 0 or a bad id.
    assert!(matches!(
        invalid(pb::MembersJoined::default().into()),
        InvalidEvent::Rule {
            field: "members",
            ..
        }
    ));
    let mut heavy = member(1);
    heavy.weight = 0;
    assert!(matches!(
        invalid(
            pb::MembershipSynced {
                members: vec![heavy],
                ..Default::default()
            }
            .into()
        ),
        InvalidEvent::Rule { .. }
    ));
    let mut dotted = member(1);
    dotted.id = "node.1".into();
    assert!(matches!(
        invalid(
            pb::MembershipSynced {
                members: vec![dotted],
                ..Default::default()
            }
            .into()
        ),
        InvalidEvent::Name {
            field: "members",
            ..
        }
    ));
    // Duplicate ids.
    assert!(matches!(
        invalid(
            pb::MembershipSynced {
                members: vec![member(1), member(1)],
                ..Default::default()
            }
            .into()
        ),
        InvalidEvent::Rule { .. }
    ));
    // Rebalance: epoch 0, parallel arrays, index bounds, fractions.
    let good = match one_of_each()[3].body() {
        Body::RingRebalanced(r) => r.clone(),
        _ => unreachable!(),
    };
    let mut r = good.clone();
    r.epoch = 0;
    assert!(matches!(
        invalid(r.into()),
        InvalidEvent::Rule { field: "epoch", .. }
    ));
    let mut r = good.clone();
    r.token_changes.as_mut().unwrap().added_owners.pop();
    assert!(matches!(
        invalid(r.into()),
        InvalidEvent::Rule {
            field: "token_changes.added",
            ..
        }
    ));
    let mut r = good.clone();
    // members (2) + departed (1) = 3 valid indices.
    r.moved_ranges.as_mut().unwrap().to[0] = 3;
    assert!(matches!(
        invalid(r.into()),
        InvalidEvent::Rule {
            field: "moved_ranges.to",
            ..
        }
    ));
    let mut r = good.clone();
    r.moved_fraction = f64::NAN;
    assert!(matches!(
        invalid(r.into()),
        InvalidEvent::Rule {
            field: "moved_fraction",
            ..
        }
    ));
    let mut scale = pb::ScaleDecided {
        metrics: vec![pb::ScaleMetric::default()],
        ..Default::default()
    };
    scale.metrics[0].value = f64::INFINITY;
    assert!(matches!(
        invalid(scale.into()),
        InvalidEvent::Rule {
            field: "metrics.value",
            ..
        }
    ));
    let mut r = good;
    r.token_changes.as_mut().unwrap().added = vec![10, 10];
    assert!(matches!(
        invalid(r.into()),
        InvalidEvent::Rule {
            field: "token_changes.added",
            ..
        }
    ));

    // The wire form must be canonical: unsorted members are refused when decoding
    // (Event::new sorts them for producers).
    let unsorted = pb::Envelope {
        schema_version: SCHEMA_VERSION,
        ring: "orders".into(),
        body: Some(
            pb::MembersJoined {
                members: vec![member(2), member(1)],
                source: 0,
                ..Default::default()
            }
            .into(),
        ),
        ..Default::default()
    };
    assert!(matches!(
        codec::decode(&unsorted.encode_to_vec()),
        Err(DecodeError::Invalid(_))
    ));
    let sorted = Event::new(
        ring(),
        pb::MembersJoined {
            members: vec![member(2), member(1)],
            source: 0,
            ..Default::default()
        },
    )
    .unwrap();
    match sorted.body() {
        Body::MembersJoined(j) => assert_eq!(j.members[0].id, "node-00001"),
        _ => unreachable!(),
    }
}

/// An enum value this version does not know is refused on decode, not carried into
/// views that cannot name it (proto3 JSON writes enums by name).
#[test]
fn unknown_enum_values_are_refused() {
    let joined = common::joined(1);
    let mut envelope = pb::Envelope::decode(codec::encode(&joined).unwrap().as_ref()).unwrap();
    let Some(pb::envelope::Body::MembersJoined(j)) = envelope.body.as_mut() else {
        unreachable!()
    };
    j.source = 65;
    let err = codec::decode(&envelope.encode_to_vec()).unwrap_err();
    assert!(
        err.to_string().contains("source") || format!("{err:?}").contains("source"),
        "{err:?}"
    );
    assert!(
        Event::new(
            ring(),
            pb::MemberLeft {
                member_id: "node-00001".into(),
                reason: 99,
                ..Default::default()
            }
        )
        .is_err()
    );
}

#[test]
fn the_same_fact_always_gets_the_same_msg_id() {
    let a = common::joined(4);
    // Time and producer are not part of the fact.
    let b = common::joined(4)
        .with_producer("watcher/other")
        .with_occurred_at(SystemTime::now());
    assert_eq!(a.msg_id(), b.msg_id());
    // Member order given by the producer does not matter either.
    let both = |x, y| {
        Event::new(
            ring(),
            pb::MembersJoined {
                members: vec![member(x), member(y)],
                source: 2,
                ..Default::default()
            },
        )
        .unwrap()
    };
    assert_eq!(both(1, 2).msg_id(), both(2, 1).msg_id());
    // A new incarnation of the same node is a different fact.
    let mut reborn = member(4);
    reborn.uid = Some("uid-4-restarted".into());
    let c = Event::new(
        ring(),
        pb::MembersJoined {
            members: vec![reborn],
            source: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert_ne!(a.msg_id(), c.msg_id());
    // Every sample event has a distinct id, readable prefix first.
    let ids: std::collections::BTreeSet<String> = one_of_each()
        .iter()
        .map(|e| e.msg_id().to_string())
        .collect();
    assert_eq!(ids.len(), EventKind::ALL.len());
    let rebalanced = one_of_each()[3].msg_id().to_string();
    assert!(
        rebalanced.starts_with("orders:rebalanced:41:"),
        "{rebalanced}"
    );
    let hash = a
        .msg_id()
        .as_str()
        .strip_prefix("orders:joined:node-00004:")
        .unwrap()
        .to_string();
    assert!(
        hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()),
        "{hash}"
    );
}

#[test]
fn subjects_headers_and_summaries() {
    let events = one_of_each();
    let subjects: Vec<String> = events.iter().map(Event::subject).collect();
    assert_eq!(
        subjects,
        [
            "ringside.orders.membership",
            "ringside.orders.membership",
            "ringside.orders.membership",
            "ringside.orders.rebalance",
            "ringside.orders.load.node-00001",
            "ringside.orders.handoff",
            "ringside.orders.scale",
            "ringside.orders.heartbeat.node-00001",
            "ringside.orders.traffic",
        ]
    );
    let r = &events[3];
    assert_eq!(
        r.summary(),
        "epoch 41: +node-00004, -node-00003, moved 0.198 (ideal 0.200), 2 members"
    );
    let h = headers::for_event(r, &r.msg_id());
    let get = |k: &str| h.get(k).map(|v| v.as_str().to_string());
    assert_eq!(get(headers::MSG_ID), Some(r.msg_id().to_string()));
    assert_eq!(get(headers::CE_ID), Some(r.msg_id().to_string()));
    assert_eq!(
        get(headers::CE_TYPE).as_deref(),
        Some("ringside.v1.RingRebalanced")
    );
    assert_eq!(
        get(headers::CE_DATACONTENTTYPE).as_deref(),
        Some("application/protobuf")
    );
    assert_eq!(get(headers::CE_SPECVERSION).as_deref(), Some("1.0"));
    assert_eq!(get(headers::CE_SOURCE).as_deref(), Some("test/1"));
    assert_eq!(get(headers::SUMMARY), Some(r.summary()));
    let summaries: Vec<String> = events.iter().map(Event::summary).collect();
    assert_eq!(summaries[0], "+node-00002, +node-00007 joined (kubernetes)");
    assert_eq!(
        summaries[1],
        "-node-00002 left (heartbeat missed): missed 3 beats"
    );
    assert_eq!(summaries[2], "sync: 3 members (kubernetes, rv 12345)");
    assert_eq!(summaries[6], "scale 3 -> 5: above target");
    let unexplained = pb::ScaleDecided {
        current_replicas: 1,
        desired_replicas: 2,
        metric: "cpu".into(),
        metric_value: 95.0,
        target_value: 80.0,
        ..Default::default()
    };
    assert_eq!(
        Event::new(ring(), unexplained).unwrap().summary(),
        "scale 1 -> 2: cpu 95.0 vs target 80.0"
    );
    // Summaries are one line even when a producer puts newlines into free text.
    let nasty = Event::new(
        ring(),
        pb::MemberLeft {
            member_id: "n1".into(),
            detail: "line1\nline2\r\n".into(),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!nasty.summary().contains(['\n', '\r']));
}

/// Size budget: the largest messages the contract allows fit under the limits.
#[test]
fn a_1000_member_ring_with_160_vnodes_fits() {
    const MEMBERS: usize = 1000;
    const VNODES: usize = 160;
    // Tokens spread like hashes: a fixed multiplicative sequence, sorted.
    let mut tokens: Vec<u64> = (0..(MEMBERS * VNODES) as u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i << 7))
        .collect();
    tokens.sort_unstable();
    tokens.dedup();
    let owners: Vec<u32> = (0..tokens.len()).map(|i| (i % MEMBERS) as u32).collect();
    let members: Vec<pb::Member> = (0..MEMBERS)
        .map(|i| {
            let mut m = member(i);
            m.uid = Some(format!("3f0c5a2e-8b1d-4c7e-9a6f-{i:012}"));
            m.zone = Some("eu-west-1a".into());
            m
        })
        .collect();
    let snapshot = pb::RingSnapshot {
        schema_version: SCHEMA_VERSION,
        ring: "orders".into(),
        epoch: 1000,
        membership_sequence: 5000,
        rebalance_sequence: 5001,
        config: Some(pb::RingConfig {
            strategy: 2,
            vnodes: VNODES as u32,
        }),
        members: members.clone(),
        tokens: tokens.clone(),
        owners: owners.clone(),
        checksum: 42,
        taken_at: None,
    };
    let snap_bytes = codec::encode_snapshot(&snapshot).unwrap();
    assert_eq!(codec::decode_snapshot(&snap_bytes).unwrap(), snapshot);
    // Worst case rebalance: the whole ring built in one epoch, every token added and
    // (if the diff reports them) every arc moved.
    let first = pb::RingRebalanced {
        epoch: 1,
        membership_sequence: 1,
        members,
        joined: (0..MEMBERS).map(|i| member(i).id).collect(),
        token_changes: Some(pb::TokenChanges {
            added: tokens.clone(),
            added_owners: owners.clone(),
            ..Default::default()
        }),
        moved_ranges: Some(pb::MovedRanges {
            starts: tokens.iter().map(|t| t.wrapping_sub(1000)).collect(),
            ends: tokens.clone(),
            from: owners.clone(),
            to: owners,
        }),
        moved_fraction: 1.0,
        ideal_fraction: 1.0,
        checksum: 42,
        token_count: tokens.len() as u64,
        ..Default::default()
    };
    let event = Event::new(ring(), first).unwrap();
    let event_bytes = codec::encode(&event).unwrap();
    println!(
        "1000 members x 160 vnodes: snapshot {} bytes, first rebalance {} bytes, limit {} (max_payload {})",
        snap_bytes.len(),
        event_bytes.len(),
        MAX_EVENT_BYTES,
        MAX_PAYLOAD_BYTES
    );
    assert!(
        snap_bytes.len() < 2 * 1024 * 1024,
        "snapshot {} bytes",
        snap_bytes.len()
    );
    assert!(event_bytes.len() <= MAX_EVENT_BYTES);
    assert_eq!(codec::decode(&event_bytes).unwrap(), event);
}

#[test]
fn snapshot_rules() {
    let base = pb::RingSnapshot {
        schema_version: SCHEMA_VERSION,
        ring: "orders".into(),
        members: vec![member(1), member(2)],
        tokens: vec![1, 2, 3],
        owners: vec![0, 1, 0],
        ..Default::default()
    };
    assert!(codec::encode_snapshot(&base).is_ok());
    let mut s = base.clone();
    s.owners.push(1);
    assert!(codec::encode_snapshot(&s).is_err());
    let mut s = base.clone();
    s.owners[2] = 2;
    assert!(codec::encode_snapshot(&s).is_err());
    let mut s = base.clone();
    s.tokens = vec![1, 3, 2];
    assert!(codec::encode_snapshot(&s).is_err());
    let mut s = base.clone();
    s.schema_version = 7;
    assert!(codec::encode_snapshot(&s).is_err());
    assert!(matches!(
        codec::decode_snapshot(&s.encode_to_vec()),
        Err(DecodeError::UnknownVersion { found: 7 })
    ));
    assert!(matches!(
        codec::decode_snapshot(b"\xff\xff"),
        Err(DecodeError::Malformed(_))
    ));
}
