//! Provisioning from nats/ files against a real server: idempotent, updates changed
//! definitions, KV buckets usable by the KV client.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use ringside_events::provision::{Definition, DefinitionKind, Outcome, ProvisionError};
use ringside_events::subject::{self, KV_SNAPSHOTS, STREAM_DEADLETTER, STREAM_EVENTS, STREAM_LOAD};
use ringside_events::{Definitions, provision};

#[test]
fn builtin_definitions_are_the_files_in_nats() {
    let dir = ringside_testkit::workspace_root().join("nats");
    let from_files = Definitions::from_dir(&dir).unwrap();
    assert_eq!(Definitions::builtin().unwrap(), from_files);
    let names: Vec<&str> = from_files.iter().map(|d| d.config.name.as_str()).collect();
    assert_eq!(
        names,
        [
            STREAM_EVENTS,
            STREAM_DEADLETTER,
            STREAM_LOAD,
            "KV_RINGSIDE_LEASES",
            "KV_RINGSIDE_SNAPSHOTS"
        ]
    );
    // Every stored subject kind lands in the stream its definition names.
    let events = from_files.get(STREAM_EVENTS).unwrap();
    assert!(
        events
            .config
            .subjects
            .contains(&"ringside.*.membership".to_string())
    );
    assert!(
        events.config.allow_atomic_publish,
        "bulk publishing needs atomic batches"
    );
    assert_eq!(
        events.config.max_message_size,
        ringside_events::codec::MAX_PAYLOAD_BYTES as i32
    );
    assert!(
        from_files
            .iter()
            .all(|d| d.config.storage == jetstream::stream::StorageType::File)
    );
    assert_eq!(
        from_files.get("KV_RINGSIDE_SNAPSHOTS").unwrap().kind,
        DefinitionKind::KeyValue
    );
}

#[test]
fn a_kv_definition_without_kv_settings_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("streams")).unwrap();
    std::fs::create_dir_all(dir.path().join("kv")).unwrap();
    let real = ringside_testkit::workspace_root().join("nats/kv/RINGSIDE_SNAPSHOTS.json");
    let json = std::fs::read_to_string(real).unwrap();
    let no_rollup = json.replace(
        "\"allow_rollup_hdrs\": true",
        "\"allow_rollup_hdrs\": false",
    );
    assert_ne!(json, no_rollup);
    std::fs::write(dir.path().join("kv/BAD.json"), no_rollup).unwrap();
    assert!(matches!(
        Definitions::from_dir(dir.path()),
        Err(ProvisionError::NotKeyValue { .. })
    ));
    std::fs::write(dir.path().join("kv/BAD.json"), "{ not json").unwrap();
    assert!(matches!(
        Definitions::from_dir(dir.path()),
        Err(ProvisionError::Parse { .. })
    ));
}

#[tokio::test]
async fn provisioning_twice_changes_nothing_and_a_changed_definition_updates() {
    let server = common::local_server().await;
    let client = server
        .connect_as(ringside_events::ServiceUser::Admin)
        .await
        .unwrap();
    let js = jetstream::new(client.clone());
    let defs = Definitions::builtin().unwrap();

    let first = provision(&js, &defs).await.unwrap();
    assert!(
        first.iter().all(|p| p.outcome == Outcome::Created),
        "{first:?}"
    );
    let second = provision(&js, &defs).await.unwrap();
    assert!(
        second.iter().all(|p| p.outcome == Outcome::Unchanged),
        "{second:?}"
    );

    // Change one setting of one stream: only that one is updated, and it sticks.
    let mut changed = defs.clone();
    let mut load = changed.get(STREAM_LOAD).unwrap().clone();
    load.config.max_age = Duration::from_secs(600);
    changed.set(Definition { ..load });
    let third = provision(&js, &changed).await.unwrap();
    for p in &third {
        let expected = if p.stream == STREAM_LOAD {
            Outcome::Updated
        } else {
            Outcome::Unchanged
        };
        assert_eq!(p.outcome, expected, "{}", p.stream);
    }
    let mut stream = js.get_stream(STREAM_LOAD).await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().config.max_age,
        Duration::from_secs(600)
    );
    assert!(
        provision(&js, &changed)
            .await
            .unwrap()
            .iter()
            .all(|p| p.outcome == Outcome::Unchanged)
    );

    // A change the server cannot apply is an error naming the stream.
    let mut bad = defs.clone();
    let mut events = bad.get(STREAM_EVENTS).unwrap().clone();
    events.config.storage = jetstream::stream::StorageType::Memory;
    bad.set(events);
    match provision(&js, &bad).await {
        Err(ProvisionError::Update { stream, .. }) => assert_eq!(stream, STREAM_EVENTS),
        other => panic!("expected an update error, got {other:?}"),
    }

    // The KV bucket made from a stream definition works with the KV client.
    let kv = js.get_key_value(KV_SNAPSHOTS).await.unwrap();
    let ring = common::ring();
    kv.put(subject::latest_snapshot_key(&ring), "snap".into())
        .await
        .unwrap();
    let got = kv
        .get(subject::latest_snapshot_key(&ring))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got[..], b"snap");
    let dl = js.get_stream(STREAM_DEADLETTER).await.unwrap();
    assert_eq!(dl.cached_info().config.subjects, ["ringside.*.deadletter"]);
}
