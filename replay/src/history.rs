//! [`History`]: one ring's stored history, opened once and asked many questions.
//!
//! # How it fits
//! Every question that needs the ring at some point picks the newest snapshot at or
//! before that point (KV bucket `RINGSIDE_SNAPSHOTS`, or the export's snapshots),
//! starts a [`RingLedger`] from it and folds the membership events after it, so the
//! work is bounded by the snapshot interval, not by the length of the stream.
//! `verify` alone starts from the first event, since checking the snapshots is its
//! job. The handle holds no state that a question changes: questions may run
//! concurrently, and one dropped halfway leaves the handle as it was. Each question
//! reads through an ordered consumer of its own (deleted when it is done), and a
//! server limits consumers: a caller serving many users bounds how many questions
//! run at once.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use ringside_events::subject::{self, SubjectKind};
use ringside_events::{Body, CatchUp, RingLedger, RingName, pb};
use time::OffsetDateTime;

use crate::engine::{
    self, Cause, DiffReport, EpochRing, Fold, KeyHistory, Problem, RingAt, SnapshotCheck,
    TypeFilter, Verifier, VerifyReport, diff_report,
};
use crate::error::{ReplayError, Warning};
use crate::export::{self, Format};
use crate::index::{IndexDir, KeyIndex, Move};
use crate::observe::{Observer, Pass};
use crate::record::{self, Record, error_chain};
use crate::source::{STORED_KINDS, Scan, Source};

/// A point of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// A stream sequence.
    Seq(u64),
    /// The last sequence stored at or before a time (as `from` of a [`Range`]: the
    /// first stored at or after it).
    Time(OffsetDateTime),
}

/// A range of the stream, both ends inclusive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Range {
    /// Start (`None`: the first event).
    pub from: Option<Point>,
    /// End (`None`: the end of the stream).
    pub to: Option<Point>,
}

/// What [`History::export`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    /// Messages written.
    pub messages: u64,
    /// Snapshots written.
    pub snapshots: u64,
    /// The first sequence of the range.
    pub from: u64,
    /// The last sequence of the range.
    pub to: u64,
}

/// The stored history of one ring: the `RINGSIDE` stream and snapshot bucket of a
/// NATS server, or an export file.
pub struct History {
    source: Source,
    index: Option<IndexDir>,
}

/// Where a fold starts: a ledger and the first sequence still to read.
struct Start {
    fold: Fold,
    from_seq: u64,
    snapshot: Option<String>,
}

impl History {
    /// The history of `ring` on the server `client` is connected to (`url` names it
    /// in messages). Fails if the server has no `RINGSIDE` stream; a ring with no
    /// events yet is fine here (see [`History::check_ring`]).
    pub async fn nats(
        client: async_nats::Client,
        url: &str,
        ring: RingName,
    ) -> Result<Self, ReplayError> {
        Source::nats(client, url, ring).await.map(|source| Self {
            source,
            index: None,
        })
    }

    /// The history in an export file, read and checked whole before this returns;
    /// `ring` must be the file's ring, if given.
    pub fn file(path: &Path, ring: Option<RingName>) -> Result<Self, ReplayError> {
        Source::file(path, ring).map(|source| Self {
            source,
            index: None,
        })
    }

    /// Keeps a key index under `dir` ([`IndexDir`]) for [`History::key_history`]:
    /// each key history first brings it up to the stream's end, then reads the moved
    /// ranges near the key's position instead of every stored epoch. Files only
    /// (export files are read whole anyway). Without it, key histories read every
    /// stored epoch of their range.
    #[must_use]
    pub fn with_key_index(mut self, dir: IndexDir) -> Self {
        self.index = Some(dir);
        self
    }

    /// The ring.
    pub fn ring(&self) -> &RingName {
        self.source.ring()
    }

    /// Where the history is (`stream RINGSIDE on nats://...`, `export FILE`).
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// Fails with [`ReplayError::UnknownRing`] (listing the rings that have events) if
    /// the history holds nothing of the ring.
    pub async fn check_ring(&self) -> Result<(), ReplayError> {
        self.source.check_ring().await
    }

    /// The first and last stream sequence the history holds now.
    pub async fn bounds(&self) -> Result<(u64, u64), ReplayError> {
        self.source.covered().await
    }

    /// The stream sequence a point names, checked against the end of the stream.
    pub async fn resolve(&self, point: Point) -> Result<u64, ReplayError> {
        let last = self.source.last_seq().await?;
        self.resolve_before(point, last).await
    }

    async fn resolve_before(&self, point: Point, last: u64) -> Result<u64, ReplayError> {
        match point {
            Point::Seq(0) => Err(ReplayError::SequenceZero),
            Point::Seq(seq) if seq > last => Err(ReplayError::BeyondEnd { seq, last }),
            Point::Seq(seq) => Ok(seq),
            Point::Time(t) => self.source.seq_at_time(t).await,
        }
    }

    /// The inclusive sequence range of a [`Range`]; fails if it is empty.
    pub async fn resolve_range(&self, range: Range) -> Result<(u64, u64), ReplayError> {
        let last = self.source.last_seq().await?;
        let from = match range.from {
            None => 1,
            // A start before the first event is simply the start.
            Some(Point::Time(t)) => match self.source.first_message().await? {
                Some((_, first)) if t <= first => 1,
                _ => {
                    self.source
                        .seq_at_time(t - time::Duration::nanoseconds(1))
                        .await?
                        + 1
                }
            },
            Some(p) => self.resolve_before(p, last).await?,
        };
        let to = match range.to {
            None => last,
            Some(p) => self.resolve_before(p, last).await?,
        };
        if from > to {
            return Err(ReplayError::EmptyRange { from, to });
        }
        Ok((from, to))
    }

    /// The ring after every membership event stored up to `at` (`None`: the end of
    /// the stream).
    pub async fn ring_at(
        &self,
        at: Option<Point>,
        observer: &mut dyn Observer,
    ) -> Result<RingAt, ReplayError> {
        let at = match at {
            Some(point) => self.resolve(point).await?,
            None => self.source.last_seq().await?,
        };
        let mut start = self
            .start(observer, |s| s.membership_sequence <= at)
            .await?;
        self.catch_up(&mut start.fold, start.from_seq, Some(at), observer, |_| {
            false
        })
        .await?;
        Ok(RingAt::new(start.fold, at, start.snapshot))
    }

    /// Every owner change of `key` (its UTF-8 bytes hashed as the nodes hash them)
    /// within `range`, with the owner at its start and at its end.
    pub async fn key_history(
        &self,
        key: &str,
        range: Range,
        observer: &mut dyn Observer,
    ) -> Result<KeyHistory, ReplayError> {
        if key.is_empty() {
            return Err(ReplayError::EmptyKey);
        }
        let (from, to) = self.resolve_range(range).await?;
        let mut start = self
            .start(observer, |s| s.membership_sequence < from)
            .await?;
        // Fold silently up to the range, then note every epoch inside it.
        self.catch_up(
            &mut start.fold,
            start.from_seq,
            Some(from - 1),
            observer,
            |_| false,
        )
        .await?;
        let history = KeyHistory::new(key, (from, to), &start.fold.ledger);
        // A key changes owner only in an epoch whose moved ranges cover it: the index
        // of them, or else the stored rebalance events, answer without rebuilding the
        // ring at each epoch. Where their epochs have a gap, the fold answers instead.
        if let Some(dir) = &self.index {
            match self.indexed_moves(dir, history.clone(), to, observer).await {
                Ok(Some(history)) => return Ok(history),
                Ok(None) => {}
                Err(e) => observer.warn(&Warning::IndexUnusable {
                    why: record::error_chain(&e),
                }),
            }
        }
        match self.key_moves(history.clone(), to, observer).await? {
            Some(history) => Ok(history),
            None => {
                let mut history = history;
                self.fold_range(&mut start.fold, from, Some(to), observer, |fold, r| {
                    history.after_epoch(&fold.ledger, r);
                    true
                })
                .await?;
                Ok(history)
            }
        }
    }

    /// [`History::key_history`] from the key index under `dir`, brought up to the
    /// stream's end first; `None` if the index cannot answer for these epochs.
    async fn indexed_moves(
        &self,
        dir: &IndexDir,
        mut history: KeyHistory,
        to: u64,
        observer: &mut dyn Observer,
    ) -> Result<Option<KeyHistory>, ReplayError> {
        let Some(mut index) = KeyIndex::open(dir, &self.source).await? else {
            return Ok(None);
        };
        index.update(&self.source, observer).await?;
        let after = history.initial_epoch;
        let Some(last) = index.last_epoch_until(after, to)? else {
            return Ok(None);
        };
        let moves = index.moves(history.hash(), after, last)?;
        // Which moves change the owner (a range may give the key to its owner again),
        // then the causes of those only, in one pass.
        let mut owner = history.initial_owner.clone();
        let changes: Vec<&Move> = moves
            .iter()
            .filter(|m| {
                let change = m.to != owner;
                owner.clone_from(&m.to);
                change
            })
            .collect();
        let epochs: Vec<u64> = changes.iter().map(|m| m.epoch).collect();
        let causes = index.causes(&index.membership_seqs(&epochs)?)?;
        for (m, cause) in changes.into_iter().zip(causes) {
            history.after_rebalance(m.epoch, Some(m.to.clone()), Some(cause));
        }
        history.after_rebalance(last, None, None);
        Ok(Some(history))
    }

    /// [`History::key_history`] from the stored rebalance events of the epochs made by
    /// membership events up to `to`; `None` if their epochs do not follow each other.
    async fn key_moves(
        &self,
        mut history: KeyHistory,
        to: u64,
        observer: &mut dyn Observer,
    ) -> Result<Option<KeyHistory>, ReplayError> {
        let (from, _) = history.sequences;
        let end = self.source.last_seq().await?;
        if from > end {
            return Ok(Some(history));
        }
        let mut scan = self
            .source
            .scan(from, None, &[SubjectKind::Rebalance])
            .await?;
        let mut pass = Pass::begin(observer, "key-history", from, end);
        let mut epoch = history.initial_epoch;
        while let Some(r) = scan.next().await? {
            pass.at(r.seq);
            // Not an event of this ring's rebalance subject: skipped, as every reader
            // skips it.
            let Ok(Body::RingRebalanced(event)) = r.event.as_ref().map(|e| e.body()) else {
                continue;
            };
            if event.membership_sequence > to {
                break;
            }
            if event.epoch <= epoch {
                continue;
            }
            if event.epoch != epoch + 1 {
                scan.close().await;
                return Ok(None);
            }
            epoch = event.epoch;
            let moved = engine::moved_owner(event, history.hash());
            let cause = if history.wants_cause(&moved) {
                self.source.message(event.membership_sequence).await?
            } else {
                None
            };
            history.after_rebalance(epoch, moved, cause.as_ref().map(Cause::of));
        }
        scan.close().await;
        Ok(Some(history))
    }

    /// What changed between two epochs (in either order).
    pub async fn diff(
        &self,
        from_epoch: u64,
        to_epoch: u64,
        observer: &mut dyn Observer,
    ) -> Result<DiffReport, ReplayError> {
        let (lo, hi) = (from_epoch.min(to_epoch), from_epoch.max(to_epoch));
        let low = self.epoch_ring(lo, hi, observer).await?;
        let high = if hi == lo {
            low.clone()
        } else {
            self.epoch_ring(hi, hi, observer).await?
        };
        let (a, b) = if from_epoch <= to_epoch {
            (&low, &high)
        } else {
            (&high, &low)
        };
        Ok(diff_report(self.ring().as_str(), a, b))
    }

    /// The ring at `epoch`, from the newest snapshot at or before it (so a diff across
    /// the whole history folds at most two snapshot intervals, not everything in
    /// between); `asked` is the epoch an error names.
    async fn epoch_ring(
        &self,
        epoch: u64,
        asked: u64,
        observer: &mut dyn Observer,
    ) -> Result<EpochRing, ReplayError> {
        let mut start = self.start(observer, |s| s.epoch <= epoch).await?;
        if start.fold.ledger.epoch() < epoch {
            self.catch_up(&mut start.fold, start.from_seq, None, observer, |run| {
                run.epoch() >= epoch
            })
            .await?;
        }
        if start.fold.ledger.epoch() != epoch {
            return Err(ReplayError::EpochBeyond {
                epoch: asked,
                last: start.fold.ledger.epoch(),
                ring: self.ring().clone(),
            });
        }
        Ok(EpochRing::of(&start.fold.ledger))
    }

    /// The stored messages of `range` that pass one of `types` (all of the ring's
    /// when empty), read one at a time.
    pub async fn events(&self, range: Range, types: &[TypeFilter]) -> Result<Events, ReplayError> {
        let (from, to) = self.resolve_range(range).await?;
        let mut kinds: Vec<SubjectKind> = if types.is_empty() {
            STORED_KINDS.to_vec()
        } else {
            types.iter().map(|t| t.subject_kind()).collect()
        };
        kinds.sort();
        kinds.dedup();
        Ok(Events {
            scan: self.source.scan(from, Some(to), &kinds).await?,
            types: types.to_vec(),
            from,
            to,
        })
    }

    /// Writes the ring's history in `range` to `out` (buffered here) as an export
    /// file: the header, the snapshots a replay of the file can start from, every
    /// stored message, the end record.
    pub async fn export<W: Write>(
        &self,
        format: Format,
        range: Range,
        out: W,
        observer: &mut dyn Observer,
    ) -> Result<Exported, ReplayError> {
        let (from, to) = self.resolve_range(range).await?;
        let header = export::Header {
            ring: self.ring().to_string(),
            stream: subject::STREAM_EVENTS.to_string(),
            from_seq: from,
            to_seq: to,
            exported_at: OffsetDateTime::now_utc(),
        };
        let mut writer = export::Writer::new(std::io::BufWriter::new(out), format, &header)?;
        // Snapshots that need only events inside the export: a replay of the file can
        // start from any of them.
        for r in self.source.snapshots().await? {
            match self.source.snapshot(&r).await {
                Ok(Some(s)) if s.membership_sequence + 1 >= from && s.membership_sequence <= to => {
                    writer.snapshot(&r.key, &s)?;
                }
                Ok(_) => {}
                Err(e) => observer.warn(&Warning::SnapshotNotExported {
                    key: r.key.clone(),
                    why: error_chain(&e),
                }),
            }
        }
        let mut scan = self.source.scan(from, Some(to), &STORED_KINDS).await?;
        let mut pass = Pass::begin(observer, "export", from, to);
        while let Some(r) = scan.next().await? {
            pass.at(r.seq);
            if let Err(e) = writer.message(&r) {
                scan.close().await;
                return Err(e);
            }
        }
        drop(pass);
        let (messages, snapshots) = writer.finish()?;
        Ok(Exported {
            messages,
            snapshots,
            from,
            to,
        })
    }

    /// Rebuilds the ring from the first event and checks every stored rebalance event
    /// and snapshot against it. Problems are in the report, not errors.
    pub async fn verify(&self, observer: &mut dyn Observer) -> Result<VerifyReport, ReplayError> {
        let (first, last) = self.source.covered().await?;
        let config = self.source.first_config().await?.unwrap_or_default();
        let mut checks = Vec::new();
        let mut unreadable = Vec::new();
        for r in self.source.snapshots().await? {
            match self.source.snapshot(&r).await {
                Ok(Some(s)) => checks.push(SnapshotCheck::of(&r.key, &s)),
                Ok(None) => {}
                Err(e) => unreadable.push(Problem {
                    epoch: Some(r.epoch),
                    sequence: None,
                    what: format!("snapshot {}: cannot be read: {}", r.key, error_chain(&e)),
                }),
            }
        }
        let mut verifier = Verifier::new(self.ring().clone(), config, checks);
        for p in unreadable {
            verifier.note(p);
        }
        if first > 1 {
            return Err(ReplayError::VerifyNeedsFirst {
                history: self.describe(),
                first,
            });
        }
        let mut scan = self
            .source
            .scan(
                1,
                Some(last),
                &[SubjectKind::Membership, SubjectKind::Rebalance],
            )
            .await?;
        let mut pass = Pass::begin(observer, "verify", 1, last);
        while let Some(r) = scan.next().await? {
            pass.at(r.seq);
            verifier.push(&r);
        }
        Ok(verifier.finish(last))
    }

    /// The newest usable snapshot for which `fits` holds (`fits` must hold for every
    /// snapshot older than one it holds for), or the empty ring before the first
    /// event. Snapshots that cannot be used are skipped with a warning.
    async fn start(
        &self,
        observer: &mut dyn Observer,
        fits: impl Fn(&pb::RingSnapshot) -> bool,
    ) -> Result<Start, ReplayError> {
        let source = &self.source;
        let mut refs = source.snapshots().await?;
        'search: loop {
            let mut fetched: BTreeMap<usize, pb::RingSnapshot> = BTreeMap::new();
            let (mut lo, mut hi) = (0, refs.len());
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                match source.snapshot(&refs[mid]).await {
                    Ok(None) => {
                        refs.remove(mid);
                        continue 'search;
                    }
                    Ok(Some(s)) => {
                        if fits(&s) {
                            lo = mid + 1;
                        } else {
                            hi = mid;
                        }
                        fetched.insert(mid, s);
                    }
                    Err(e) => {
                        observer.warn(&Warning::SkippedSnapshot {
                            key: refs[mid].key.clone(),
                            why: error_chain(&e),
                        });
                        refs.remove(mid);
                        continue 'search;
                    }
                }
            }
            let Some(best) = lo.checked_sub(1) else {
                break;
            };
            let snapshot = match fetched.remove(&best) {
                Some(s) => s,
                None => match source.snapshot(&refs[best]).await? {
                    Some(s) => s,
                    None => {
                        refs.remove(best);
                        continue;
                    }
                },
            };
            let loaded = match RingLedger::from_snapshot(&snapshot) {
                Ok(ledger) if ledger.ring_name() != source.ring() => {
                    Err(format!("it is of ring '{}'", snapshot.ring))
                }
                Ok(ledger) => self.matches_its_event(&snapshot).await?.map(|()| ledger),
                Err(e) => Err(error_chain(&e)),
            };
            match loaded {
                Ok(ledger) => {
                    return Ok(Start {
                        from_seq: ledger.membership_sequence() + 1,
                        fold: Fold::new(ledger),
                        snapshot: Some(refs[best].key.clone()),
                    });
                }
                Err(why) => observer.warn(&Warning::SkippedSnapshot {
                    key: refs[best].key.clone(),
                    why,
                }),
            }
            refs.remove(best);
        }
        let (first, _) = source.covered().await?;
        if first > 1 {
            return Err(ReplayError::NoStart {
                history: self.describe(),
                first,
            });
        }
        let config = source.first_config().await?.unwrap_or_default();
        Ok(Start {
            fold: Fold::new(RingLedger::new(source.ring().clone(), config)),
            from_seq: 1,
            snapshot: None,
        })
    }

    /// Whether a snapshot agrees with the stored rebalance event of its epoch (when
    /// it names one): one read that catches a snapshot written for another epoch.
    /// `verify` checks snapshots in full.
    async fn matches_its_event(
        &self,
        snapshot: &pb::RingSnapshot,
    ) -> Result<Result<(), String>, ReplayError> {
        if snapshot.rebalance_sequence == 0 {
            return Ok(Ok(()));
        }
        let seq = snapshot.rebalance_sequence;
        let Some(record) = self.source.message(seq).await? else {
            return Ok(Err(format!(
                "its rebalance sequence {seq} is not an event of the ring"
            )));
        };
        Ok(match record.event.as_ref().map(|e| e.body()) {
            Ok(Body::RingRebalanced(r))
                if (r.epoch, r.checksum) == (snapshot.epoch, snapshot.checksum) =>
            {
                Ok(())
            }
            Ok(Body::RingRebalanced(r)) => Err(format!(
                "it says epoch {} checksum {}, its rebalance event at sequence {seq} says epoch {} checksum {}",
                snapshot.epoch,
                record::checksum_hex(snapshot.checksum),
                r.epoch,
                record::checksum_hex(r.checksum)
            )),
            _ => Err(format!("sequence {seq} is not a rebalance event")),
        })
    }

    /// Folds the membership events `from..=to` (`to`: the end of the stream) into
    /// `fold` when nobody reads the ring in between, through the ledger's catch-up
    /// (the ring is built once, at the end), until `stop` holds after an epoch.
    /// Returns the sequence of the last event folded.
    async fn catch_up(
        &self,
        fold: &mut Fold,
        from: u64,
        to: Option<u64>,
        observer: &mut dyn Observer,
        stop: impl Fn(&CatchUp) -> bool,
    ) -> Result<Option<u64>, ReplayError> {
        let end = match to {
            Some(to) => to,
            None => self.source.last_seq().await?,
        };
        if from > end {
            return Ok(None);
        }
        let mut scan = self
            .source
            .scan(from, to, &[SubjectKind::Membership])
            .await?;
        let mut pass = Pass::begin(observer, "replay", from, end);
        let mut run = fold.take_ledger().catch_up();
        let mut last = None;
        let result = loop {
            let r = match scan.next().await {
                Ok(Some(r)) => r,
                Ok(None) => break Ok(last),
                Err(e) => break Err(e),
            };
            pass.at(r.seq);
            last = Some(r.seq);
            let epoch = fold
                .counted(&r, |seq, body| run.advance(seq, body))
                .is_some();
            if epoch && stop(&run) {
                scan.close().await;
                break Ok(last);
            }
        };
        fold.put_back(run);
        result
    }

    /// Folds the membership events `from..=to` (`to`: the end of the stream) into
    /// `fold`, calling `after` on each one that makes an epoch, until it says stop
    /// (`false`).
    async fn fold_range(
        &self,
        fold: &mut Fold,
        from: u64,
        to: Option<u64>,
        observer: &mut dyn Observer,
        mut after: impl FnMut(&Fold, &Record) -> bool + Send,
    ) -> Result<(), ReplayError> {
        let end = match to {
            Some(to) => to,
            None => self.source.last_seq().await?,
        };
        let mut scan = self
            .source
            .scan(from, to, &[SubjectKind::Membership])
            .await?;
        let mut pass = Pass::begin(observer, "replay", from, end);
        while let Some(r) = scan.next().await? {
            pass.at(r.seq);
            // Only the state is needed here, not the epochs' events.
            if fold.advance(&r) && !after(fold, &r) {
                scan.close().await;
                break;
            }
        }
        Ok(())
    }
}

/// The stored messages of a range, in stream order, read as they are asked for
/// ([`History::events`]). Dropping it stops the read; [`Events::close`] also frees
/// the server's consumer at once.
pub struct Events {
    scan: Scan,
    types: Vec<TypeFilter>,
    from: u64,
    to: u64,
}

impl Events {
    /// The first and last sequence of the range.
    pub fn range(&self) -> (u64, u64) {
        (self.from, self.to)
    }

    /// The next message that passes the filter, or `None` after the range.
    pub async fn next(&mut self) -> Result<Option<Record>, ReplayError> {
        while let Some(r) = self.scan.next().await? {
            if self.types.is_empty() || self.types.iter().any(|t| t.matches(&r)) {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Stops reading and frees the server's consumer now.
    pub async fn close(mut self) {
        self.scan.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send<T: Send>(_: T) {}

    /// Type-checks that every question's future is `Send`, so a server can run
    /// questions in spawned tasks.
    fn questions(h: &History, o: &mut dyn Observer, events: &mut Events) {
        send(h.check_ring());
        send(h.bounds());
        send(h.resolve(Point::Seq(1)));
        send(h.resolve_range(Range::default()));
        send(h.ring_at(None, &mut *o));
        send(h.key_history("k", Range::default(), &mut *o));
        send(h.diff(1, 2, &mut *o));
        send(h.events(Range::default(), &[]));
        send(events.next());
        send(h.export(Format::Pb, Range::default(), Vec::new(), &mut *o));
        send(h.verify(&mut *o));
    }

    #[test]
    fn questions_are_send_and_the_handle_is_shared() {
        let _ = questions;
        fn shared<T: Send + Sync>() {}
        shared::<History>();
    }
}
