//! The key index against a real nats-server: every key history it answers equals the
//! one read from the stored epochs (itself checked against the fold in
//! `history.rs`), as the ring goes on changing, after the index's files are torn or
//! corrupted, past a gap in the stored epochs, and when it cannot be written at all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use ringside_events::RingName;
use ringside_replay::{History, IndexDir, KeyHistory, Point, Range, Warning};
use ringside_ring::RingConfig;
use support::{Heard, Stack, Written, churn};

const SNAPSHOT_EVERY: u64 = 50;

fn keys() -> Vec<String> {
    (0..16).map(|i| format!("user:{i}")).collect()
}

/// The whole range, and windows starting and ending at epochs and between them.
fn ranges(written: &Written) -> Vec<Range> {
    let e = &written.epochs;
    let seq = |s: u64| Some(Point::Seq(s));
    let n = e.len();
    vec![
        Range::default(),
        Range {
            from: seq(e[n / 3].membership_sequence),
            to: None,
        },
        Range {
            from: None,
            to: seq(e[n / 2].membership_sequence),
        },
        Range {
            from: seq(e[n / 4].membership_sequence + 1),
            to: seq(e[3 * n / 4].rebalance_sequence),
        },
        Range {
            from: seq(e[n - 2].membership_sequence),
            to: seq(e[n - 1].membership_sequence - 1),
        },
    ]
}

/// Asks every key over every range of both histories; the indexed one must answer
/// the same, through its index (no pass over the stored epochs).
async fn same_answers(plain: &History, indexed: &History, written: &Written) {
    for range in ranges(written) {
        for key in keys() {
            let expected = plain.key_history(&key, range, &mut ()).await.unwrap();
            let mut heard = Heard::default();
            let got = indexed.key_history(&key, range, &mut heard).await.unwrap();
            assert_eq!(got, expected, "{key} over {range:?}");
            assert!(
                !heard.passes.contains(&"key-history"),
                "{key}: read the stored epochs: {heard:?}"
            );
            assert!(heard.warnings.is_empty(), "{heard:?}");
        }
    }
}

/// A history of `key` that changes owner, to check the test is not vacuous.
fn changes(h: &KeyHistory) -> usize {
    h.changes.len()
}

async fn open(stack: &Stack, ring: &RingName, dir: Option<&Path>) -> History {
    let history = History::nats(stack.client.clone(), &stack.server.url(), ring.clone())
        .await
        .unwrap();
    match dir {
        Some(dir) => history.with_key_index(IndexDir(dir.to_path_buf())),
        None => history,
    }
}

/// The files of the index of `ring` (the one directory under `root`).
fn index_files(root: &Path) -> std::path::PathBuf {
    let mut dirs: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.pop().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_answers_as_the_stored_epochs_do() {
    let stack = Stack::start().await;
    let ring = RingName::new("orders").unwrap();
    let root = tempfile::tempdir().unwrap();
    let events = churn(&ring, 900);
    let mut writer = stack
        .history_writer(&ring, RingConfig::default(), SNAPSHOT_EVERY)
        .await;
    writer.write(&events[..500], None).await;
    let plain = open(&stack, &ring, None).await;
    let indexed = open(&stack, &ring, Some(root.path())).await;

    // The first question builds the index: one pass over the stream.
    let mut heard = Heard::default();
    let first = indexed
        .key_history("user:1", Range::default(), &mut heard)
        .await
        .unwrap();
    assert_eq!(heard.passes, vec!["key index"], "{heard:?}");
    assert!(heard.read > 500, "{heard:?}");
    assert!(changes(&first) > 10, "{first:?}");
    same_answers(&plain, &indexed, &writer.written).await;
    // Later questions read nothing more from the stream.
    let mut heard = Heard::default();
    indexed
        .key_history("user:2", Range::default(), &mut heard)
        .await
        .unwrap();
    assert_eq!(heard.read, 0, "{heard:?}");

    // The ring goes on changing: the index reads only what was stored since.
    writer.write(&events[500..], None).await;
    let mut heard = Heard::default();
    indexed
        .key_history("user:3", Range::default(), &mut heard)
        .await
        .unwrap();
    let added = writer.written.after.len() - 500 + writer.written.epochs.len();
    assert!(heard.read > 0 && heard.read < added as u64, "{heard:?}");
    same_answers(&plain, &indexed, &writer.written).await;

    // A torn write (a file longer than its manifest says: cut back), a file shorter
    // than it says and a manifest that does not parse (both: the index starts afresh).
    let files = index_files(root.path());
    // The bucket user:1's position is in (its top 6 bits).
    let bucket = files.join(format!(
        "ranges-{:02}",
        ringside_ring::hash_key(b"user:1") >> 58
    ));
    let mut torn = std::fs::read(&bucket).unwrap();
    let whole = torn.len() as u64;
    torn.extend_from_slice(b"half a record");
    std::fs::write(&bucket, torn).unwrap();
    same_answers(&plain, &indexed, &writer.written).await;
    assert_eq!(std::fs::metadata(&bucket).unwrap().len(), whole);
    let causes = files.join("causes");
    let len = std::fs::metadata(&causes).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&causes)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    same_answers(&plain, &indexed, &writer.written).await;
    std::fs::write(files.join("manifest.json"), b"{not json").unwrap();
    let mut heard = Heard::default();
    indexed
        .key_history("user:4", Range::default(), &mut heard)
        .await
        .unwrap();
    assert!(
        heard.read as usize > writer.written.after.len(),
        "rebuilt: {heard:?}"
    );
    same_answers(&plain, &indexed, &writer.written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_a_gap_or_without_a_usable_index_the_stored_epochs_answer() {
    let stack = Stack::start().await;
    let ring = RingName::new("gappy").unwrap();
    // Epoch 200's event is stored as epoch 1200: the stored epochs jump there.
    let skip = |r: &mut ringside_events::pb::RingRebalanced| r.epoch += 1000;
    let written = stack
        .write_history(
            &churn(&ring, 400),
            RingConfig::default(),
            SNAPSHOT_EVERY,
            Some((200, &skip)),
        )
        .await;
    let root = tempfile::tempdir().unwrap();
    let plain = open(&stack, &ring, None).await;
    let indexed = open(&stack, &ring, Some(root.path())).await;
    let before_gap = Range {
        from: None,
        to: Some(Point::Seq(written.epochs[150].membership_sequence)),
    };
    for range in [Range::default(), before_gap] {
        for key in keys() {
            let expected = plain.key_history(&key, range, &mut ()).await.unwrap();
            let got = indexed.key_history(&key, range, &mut ()).await.unwrap();
            assert_eq!(got, expected, "{key} over {range:?}");
        }
    }
    // Before the gap the index answers; past it, the stored epochs (then the fold).
    let mut heard = Heard::default();
    indexed
        .key_history("k", before_gap, &mut heard)
        .await
        .unwrap();
    assert!(!heard.passes.contains(&"key-history"), "{heard:?}");
    let mut heard = Heard::default();
    indexed
        .key_history("k", Range::default(), &mut heard)
        .await
        .unwrap();
    assert!(heard.passes.contains(&"key-history"), "{heard:?}");

    // An index that cannot be kept (its directory would be under a file): a warning,
    // and the same answer.
    let file = root.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let unusable = open(&stack, &ring, Some(&file.join("index"))).await;
    let mut heard = Heard::default();
    let got = unusable
        .key_history("user:9", before_gap, &mut heard)
        .await
        .unwrap();
    assert_eq!(
        got,
        plain
            .key_history("user:9", before_gap, &mut ())
            .await
            .unwrap()
    );
    assert!(
        matches!(&heard.warnings[..], [Warning::IndexUnusable { why }] if why.contains("a-file")),
        "{heard:?}"
    );
}
