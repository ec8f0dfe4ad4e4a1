//! The library against a real nats-server, used the way a long-running caller (the
//! bridge's time travel) uses it: one [`History`] opened before the ring has events,
//! asked many questions at once from spawned tasks, some dropped halfway; every answer
//! checked against the fold run here, and against an export of the same history.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use ringside_events::{RingName, ServiceUser, subject};
use ringside_replay::{
    Format, History, Observer, Point, Range, ReplayError, TypeFilter, Warning, checksum_hex,
};
use support::{Heard, Stack, Written};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const EVENTS: usize = 1000;
const SNAPSHOT_EVERY: u64 = 50;

/// Counts what a pass read, visible while the query runs.
#[derive(Debug, Default)]
struct Reading {
    read: Arc<AtomicU64>,
    ended: Arc<AtomicU64>,
}

impl Observer for Reading {
    fn at(&mut self, _seq: u64) {
        self.read.fetch_add(1, Ordering::Relaxed);
    }

    fn end(&mut self) {
        self.ended.fetch_add(1, Ordering::Relaxed);
    }
}

fn seq(s: u64) -> Option<Point> {
    Some(Point::Seq(s))
}

/// Consumers left on the `RINGSIDE` stream.
async fn consumers(stack: &Stack) -> usize {
    let mut stream = jetstream::new(stack.client.clone())
        .get_stream(subject::STREAM_EVENTS)
        .await
        .unwrap();
    stream.info().await.unwrap().state.consumer_count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_history_answers_many_questions_at_once() {
    let stack = Stack::start().await;
    let ring = RingName::new("orders").unwrap();
    // Opened before the ring has any event: it answers once they are stored.
    let history = History::nats(stack.client.clone(), &stack.server.url(), ring.clone())
        .await
        .unwrap();
    assert!(matches!(
        history.check_ring().await,
        Err(ReplayError::UnknownRing { known, .. }) if known.is_empty()
    ));
    let written = stack.write_churn(&ring, EVENTS, SNAPSHOT_EVERY, None).await;
    history.check_ring().await.unwrap();
    let history = Arc::new(history);

    // The ring at every epoch's membership sequence, at some epochs' rebalance
    // sequence, and between epochs, asked from many tasks at once: as many at a time as a server would
    // allow its clients (each question reads through a consumer of its own, and the
    // server limits consumers).
    let mut tasks = JoinSet::new();
    let at_once = Arc::new(Semaphore::new(32));
    let epochs = written.epochs.iter().enumerate().flat_map(|(i, e)| {
        let at = (e.membership_sequence, e.epoch, e.checksum);
        let stored = (e.rebalance_sequence, e.epoch, e.checksum);
        if i % 7 == 0 {
            vec![at, stored]
        } else {
            vec![at]
        }
    });
    let points = epochs.chain(written.after.iter().step_by(37).copied());
    for (at, epoch, checksum) in points {
        let (history, at_once) = (history.clone(), at_once.clone());
        tasks.spawn(async move {
            let _permit = at_once.acquire().await.unwrap();
            let ring = history.ring_at(seq(at), &mut ()).await.unwrap();
            assert_eq!(
                (
                    ring.at_sequence,
                    ring.ledger.epoch(),
                    ring.ledger.checksum()
                ),
                (at, epoch, checksum)
            );
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    // Every scan deleted its consumer when it was done.
    assert_eq!(consumers(&stack).await, 0);

    // Late points start from a snapshot and fold less than two intervals.
    let late = &written.epochs[written.epochs.len() - 3];
    let mut heard = Heard::default();
    let at = history
        .ring_at(seq(late.membership_sequence), &mut heard)
        .await
        .unwrap();
    assert!(at.started_from_snapshot.is_some());
    assert!(at.folded.membership < 2 * SNAPSHOT_EVERY * 2, "{at:?}");
    assert_eq!((heard.passes, heard.ends), (vec!["replay"], 1));
    assert_eq!(heard.read, at.folded.membership);
    let report = at.report();
    assert_eq!(report.checksum, checksum_hex(late.checksum));

    key_history_and_diff(&history, &written).await;
    events_and_errors(&history, &written).await;
    a_dropped_question_leaves_the_history_as_it_was(&history).await;
    export_answers_as_the_stream(&history, &written).await;
    a_bad_snapshot_is_skipped_with_a_warning(&stack, &history, &ring, &written).await;
}

async fn key_history_and_diff(history: &History, written: &Written) {
    let hash = ringside_ring::hash_key(b"user:42");
    let h = history
        .key_history("user:42", Range::default(), &mut ())
        .await
        .unwrap();
    let mut owner = h.initial_owner.clone();
    let mut changes = h.changes.iter().peekable();
    for e in &written.epochs {
        while let Some(c) = changes.next_if(|c| c.epoch == e.epoch) {
            assert_eq!(c.from, owner);
            assert_eq!(c.sequence, e.membership_sequence);
            owner = c.to.clone();
        }
        assert_eq!(
            owner.as_deref(),
            e.ring.owner_of_hash(hash).ok(),
            "epoch {}",
            e.epoch
        );
    }
    assert_eq!(changes.next(), None);
    assert_eq!(h.final_owner, owner);

    let (a, b) = (&written.epochs[9], &written.epochs[99]);
    let d = history.diff(b.epoch, a.epoch, &mut ()).await.unwrap();
    let expected = ringside_ring::diff(&b.ring, &a.ring);
    assert_eq!(
        (d.moved_fraction, d.ranges.len()),
        (expected.moved_fraction, expected.ranges.len())
    );
    assert_eq!(
        (d.from_checksum, d.to_checksum),
        (checksum_hex(b.checksum), checksum_hex(a.checksum))
    );
}

async fn events_and_errors(history: &History, written: &Written) {
    let (from, to) = (
        written.epochs[10].membership_sequence,
        written.epochs[30].rebalance_sequence,
    );
    let rebalance: TypeFilter = "rebalance".parse().unwrap();
    let range = Range {
        from: seq(from),
        to: seq(to),
    };
    let mut events = history.events(range, &[rebalance]).await.unwrap();
    assert_eq!(events.range(), (from, to));
    let mut seqs = Vec::new();
    while let Some(r) = events.next().await.unwrap() {
        seqs.push(r.seq);
    }
    let expected: Vec<u64> = written.epochs[10..=30]
        .iter()
        .map(|e| e.rebalance_sequence)
        .collect();
    assert_eq!(seqs, expected);

    let (_, last) = history.bounds().await.unwrap();
    assert!(matches!(
        history.resolve(Point::Seq(0)).await,
        Err(ReplayError::SequenceZero)
    ));
    assert!(matches!(
        history.resolve(Point::Seq(last + 1)).await,
        Err(ReplayError::BeyondEnd { seq, last: l }) if seq == last + 1 && l == last
    ));
    let backwards = Range {
        from: seq(to),
        to: seq(from),
    };
    assert!(matches!(
        history.events(backwards, &[]).await,
        Err(ReplayError::EmptyRange { .. })
    ));
    assert!(matches!(
        history.key_history("", Range::default(), &mut ()).await,
        Err(ReplayError::EmptyKey)
    ));
    let beyond = written.epochs.len() as u64 + 1;
    assert!(matches!(
        history.diff(1, beyond, &mut ()).await,
        Err(ReplayError::EpochBeyond { epoch, .. }) if epoch == beyond
    ));
}

/// A question dropped halfway ends its pass for the observer and leaves nothing
/// behind: the next question answers as a fresh handle does.
async fn a_dropped_question_leaves_the_history_as_it_was(history: &History) {
    let full = history.verify(&mut ()).await.unwrap();
    assert_eq!(full.problems, vec![]);
    let total = full.folded.membership + full.rebalance_events;
    // Poll a verify until its pass has read something, then drop it. A verify that
    // read all its messages in one poll finishes instead: try again.
    let mut dropped = None;
    for _ in 0..20 {
        let mut reading = Reading::default();
        let (read, ended) = (reading.read.clone(), reading.ended.clone());
        let finished = {
            let verify = history.verify(&mut reading);
            tokio::pin!(verify);
            loop {
                tokio::select! {
                    biased;
                    _ = &mut verify => break true,
                    () = tokio::time::sleep(Duration::from_millis(1)) => {}
                }
                if read.load(Ordering::Relaxed) > 0 {
                    break false;
                }
            }
        };
        assert_eq!(ended.load(Ordering::Relaxed), 1, "the pass ended");
        if !finished {
            dropped = Some(read.load(Ordering::Relaxed));
            break;
        }
    }
    let read = dropped.expect("a verify was dropped halfway");
    assert!(read > 0 && read < total, "dropped after {read} of {total}");
    assert_eq!(history.verify(&mut ()).await.unwrap(), full);

    // An events cursor closed after its first message.
    let mut events = history.events(Range::default(), &[]).await.unwrap();
    assert!(events.next().await.unwrap().is_some());
    events.close().await;
}

async fn export_answers_as_the_stream(history: &History, written: &Written) {
    let dir = tempfile::tempdir().unwrap();
    for format in [Format::Ndjson, Format::Pb] {
        let mut bytes = Vec::new();
        let mut heard = Heard::default();
        let exported = history
            .export(format, Range::default(), &mut bytes, &mut heard)
            .await
            .unwrap();
        assert_eq!(heard.passes, vec!["export"]);
        assert_eq!(exported.messages, heard.read);
        let path = dir.path().join(format!("orders.{format:?}"));
        std::fs::write(&path, &bytes).unwrap();
        let file = History::file(&path, None).unwrap();
        assert_eq!(file.ring(), history.ring());
        for e in written.epochs.iter().step_by(41) {
            let at = seq(e.rebalance_sequence);
            assert_eq!(
                file.ring_at(at, &mut ()).await.unwrap().report(),
                history.ring_at(at, &mut ()).await.unwrap().report(),
                "{format:?}"
            );
            let to = Range { from: None, to: at };
            assert_eq!(
                file.key_history("user:7", to, &mut ()).await.unwrap(),
                history.key_history("user:7", to, &mut ()).await.unwrap(),
                "{format:?}"
            );
        }
        assert_eq!(
            file.verify(&mut ()).await.unwrap().problems,
            vec![],
            "{format:?}"
        );
        let other = RingName::new("other").unwrap();
        assert!(matches!(
            History::file(&path, Some(other)),
            Err(ReplayError::NotInFile { holds, .. }) if holds == *history.ring()
        ));
    }
}

async fn a_bad_snapshot_is_skipped_with_a_warning(
    stack: &Stack,
    history: &History,
    ring: &RingName,
    written: &Written,
) {
    let reducer = stack.server.connect_as(ServiceUser::Reducer).await.unwrap();
    let kv = jetstream::new(reducer)
        .get_key_value(subject::KV_SNAPSHOTS)
        .await
        .unwrap();
    let key = subject::snapshot_key(ring, 2 * SNAPSHOT_EVERY);
    kv.put(&key, "garbage".into()).await.unwrap();
    let e = &written.epochs[2 * SNAPSHOT_EVERY as usize + 3];
    let mut heard = Heard::default();
    let at = history
        .ring_at(seq(e.membership_sequence), &mut heard)
        .await
        .unwrap();
    assert_eq!(at.ledger.checksum(), e.checksum);
    assert!(
        matches!(&heard.warnings[..], [Warning::SkippedSnapshot { key: k, why }] if *k == key && why.contains("does not decode")),
        "{heard:?}"
    );
}
