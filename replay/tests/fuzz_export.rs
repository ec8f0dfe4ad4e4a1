//! Fuzzing the export-file reader by byte-level mutation (proptest): exports of a real
//! stream, in both formats, with bits flipped, bytes set, inserted or removed and the
//! tail cut, opened with `History::file`. Opening checks the whole file, so it fails
//! with an error naming the file (never a panic); a file that still opens answers
//! `state` and `key-history` with a value or an error.
//!
//! `./dev test` runs `RINGSIDE_FUZZ_CASES / 20` (default 100) files in all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::OnceLock;

use proptest::prelude::*;
use ringside_events::RingName;
use ringside_replay::{Format, History, Range, ReplayError};
use ringside_testkit::fuzz::{Mutation, cases, mutate, mutation};
use support::Stack;

/// A valid export of each format, made once from a real stream.
fn exports() -> &'static [(Format, Vec<u8>); 2] {
    static EXPORTS: OnceLock<[(Format, Vec<u8>); 2]> = OnceLock::new();
    EXPORTS.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let stack = Stack::start().await;
            let ring = RingName::new("orders").unwrap();
            stack.write_churn(&ring, 24, 8, None).await;
            let history = History::nats(stack.client.clone(), &stack.server.url(), ring)
                .await
                .unwrap();
            let mut out = Vec::new();
            for format in [Format::Ndjson, Format::Pb] {
                let mut bytes = Vec::new();
                history
                    .export(format, Range::default(), &mut bytes, &mut ())
                    .await
                    .unwrap();
                out.push((format, bytes));
            }
            let [a, b]: [(Format, Vec<u8>); 2] = out.try_into().unwrap();
            [a, b]
        })
    })
}

/// Opens a mutated export and asks it questions: any error is fine, a panic is not.
fn open_and_ask(bytes: &[u8]) -> Result<(), ReplayError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export");
    std::fs::write(&path, bytes).unwrap();
    let history = History::file(&path, None)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        history.check_ring().await?;
        history.ring_at(None, &mut ()).await?;
        history
            .key_history("user:1", Range::default(), &mut ())
            .await?;
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(20), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_exports_open_with_an_error_or_answer(
        pb in any::<bool>(),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let (_, valid) = &exports()[usize::from(pb)];
        let _ = open_and_ask(&mutate(valid.clone(), &mutations));
    }
}

/// The valid exports open, and most single flips are caught.
#[test]
fn a_flipped_export_is_refused() {
    for (format, valid) in exports() {
        open_and_ask(valid).unwrap();
        let refused = (0..valid.len())
            .step_by(valid.len() / 24 + 1)
            .filter(|&i| open_and_ask(&mutate(valid.clone(), &[Mutation::Flip(i, 3)])).is_err())
            .count();
        assert!(refused > 0, "{format:?}: no flip refused");
    }
}
