//! Where a replay reads the history of a ring: the `RINGSIDE` stream and the snapshot
//! bucket on a NATS server, or an export file. Both give the same [`Record`]s and
//! snapshots, so every query answers the same from either.
//!
//! # How it fits
//! [`History`](crate::History) asks a [`Source`] for the stream bounds, the ring's
//! snapshots and a [`Scan`] of a sequence range; the folding itself is in
//! [`crate::engine`]. NATS access is read-only (stream info, direct gets, ordered
//! consumers), so the `bridge` user is enough. A [`Scan`] reads one message at a
//! time, so a caller can stop or await between messages; one dropped halfway leaves
//! its ordered consumer on the server until the server removes it as idle (30 s).
//! An export file is read with blocking reads on the calling task: it is meant for
//! command lines and tests; a server reads its history from NATS.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt as _;
use ringside_events::subject::{self, SubjectKind};
use ringside_events::{Body, RingName, codec, pb};
use ringside_ring::RingConfig;
use time::OffsetDateTime;

use crate::error::ReplayError;
use crate::export::{self, ExportError, Item, Reader};
use crate::record::{self, Record};

/// The stored subjects of a ring that replay reads.
pub const STORED_KINDS: [SubjectKind; 4] = [
    SubjectKind::Membership,
    SubjectKind::Rebalance,
    SubjectKind::Handoff,
    SubjectKind::Scale,
];

/// The subjects of `kinds` for `ring`.
pub fn subjects(ring: &RingName, kinds: &[SubjectKind]) -> Vec<String> {
    kinds
        .iter()
        .map(|kind| format!("{}.{ring}.{}", subject::PREFIX, kind.token()))
        .collect()
}

/// How long a scan waits for the next message while the server says more are pending.
const SCAN_SILENCE: Duration = Duration::from_secs(30);
/// How long finding a time waits for the first message after it.
const FIRST_ANSWER: Duration = Duration::from_secs(10);

/// A snapshot the source holds: its key and epoch (read it with [`Source::snapshot`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotRef {
    /// KV key (`<ring>.e<epoch>` or `<ring>.latest`).
    pub(crate) key: String,
    /// The epoch (from the key, or from the snapshot for `latest`).
    pub(crate) epoch: u64,
    /// Where it is in an export file (unused for a bucket's).
    offset: u64,
}

/// The history of one ring.
pub(crate) enum Source {
    /// A NATS server.
    Nats(Box<NatsSource>),
    /// An export file.
    File(FileSource),
}

/// The `RINGSIDE` stream and the snapshot bucket of a server.
pub(crate) struct NatsSource {
    ring: RingName,
    url: String,
    js: jetstream::Context,
    stream: stream::Stream,
    snapshots: Option<stream::Stream>,
}

/// An export file, checked from its header to its end record when opened.
pub(crate) struct FileSource {
    ring: RingName,
    path: PathBuf,
    header: export::Header,
    format: export::Format,
    snapshots: Vec<SnapshotRef>,
    /// (sequence, time) of the ring's first message.
    first: Option<(u64, OffsetDateTime)>,
}

fn kv_subject(key: &str) -> String {
    format!("$KV.{}.{key}", subject::KV_SNAPSHOTS)
}

/// The epoch of a per-epoch snapshot key of `ring` (`<ring>.e<20 digits>`).
fn epoch_of_key(ring: &RingName, key: &str) -> Option<u64> {
    key.strip_prefix(ring.as_str())?
        .strip_prefix(".e")
        .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()
}

fn is_not_found(e: &stream::DirectGetError) -> bool {
    matches!(e.kind(), stream::DirectGetErrorKind::NotFound)
}

impl Source {
    /// Finds the stream on a server (and the snapshot bucket, if there is one).
    pub(crate) async fn nats(
        client: async_nats::Client,
        url: &str,
        ring: RingName,
    ) -> Result<Self, ReplayError> {
        let js = jetstream::new(client);
        let stream =
            js.get_stream(subject::STREAM_EVENTS)
                .await
                .map_err(|e| ReplayError::OpenStream {
                    stream: subject::STREAM_EVENTS,
                    url: url.to_string(),
                    source: e.into(),
                })?;
        let kv_stream = format!("KV_{}", subject::KV_SNAPSHOTS);
        let snapshots = js.get_stream(&kv_stream).await.ok();
        Ok(Self::Nats(Box::new(NatsSource {
            ring,
            url: url.to_string(),
            js,
            stream,
            snapshots,
        })))
    }

    /// Opens and checks an export file; `ring` must be the file's ring, if given.
    pub(crate) fn file(path: &Path, ring: Option<RingName>) -> Result<Self, ReplayError> {
        FileSource::open(path, ring).map(Self::File)
    }

    /// The ring.
    pub(crate) fn ring(&self) -> &RingName {
        match self {
            Self::Nats(s) => &s.ring,
            Self::File(s) => &s.ring,
        }
    }

    /// Where the history comes from, for messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Nats(s) => format!("stream {} on {}", subject::STREAM_EVENTS, s.url),
            Self::File(s) => format!("export {}", s.path.display()),
        }
    }

    /// The first and last sequence the source holds: the stream's state (the first is
    /// 1 unless earlier messages were purged), or the export's range.
    pub(crate) async fn covered(&self) -> Result<(u64, u64), ReplayError> {
        match self {
            Self::Nats(s) => {
                let info = s.stream_info().await?;
                Ok((info.state.first_sequence.max(1), info.state.last_sequence))
            }
            Self::File(s) => Ok((s.header.from_seq.max(1), s.header.to_seq)),
        }
    }

    /// The last sequence of the stream (or of the export's range).
    pub(crate) async fn last_seq(&self) -> Result<u64, ReplayError> {
        Ok(self.covered().await?.1)
    }

    /// The stream's name and creation time (unix nanoseconds), which tell one stream
    /// instance from another; `None` for an export file.
    pub(crate) async fn identity(&self) -> Result<Option<(String, i128)>, ReplayError> {
        match self {
            Self::Nats(s) => {
                let info = s.stream_info().await?;
                Ok(Some((
                    info.config.name,
                    info.created.unix_timestamp_nanos(),
                )))
            }
            Self::File(_) => Ok(None),
        }
    }

    /// Fails with [`ReplayError::UnknownRing`] if the source holds nothing of the ring.
    pub(crate) async fn check_ring(&self) -> Result<(), ReplayError> {
        match self {
            Self::Nats(s) => {
                let rings = s.rings().await?;
                if rings.contains(s.ring.as_str()) || !self.snapshots().await?.is_empty() {
                    return Ok(());
                }
                Err(ReplayError::UnknownRing {
                    ring: s.ring.clone(),
                    history: self.describe(),
                    known: rings.into_iter().collect(),
                })
            }
            // Opening the file checked its ring.
            Self::File(_) => Ok(()),
        }
    }

    /// (sequence, time) of the ring's first stored message, if any.
    pub(crate) async fn first_message(&self) -> Result<Option<(u64, OffsetDateTime)>, ReplayError> {
        match self {
            Self::Nats(s) => {
                let filter = format!("{}.{}.*", subject::PREFIX, s.ring);
                match s.stream.direct_get_first_for_subject(filter).await {
                    Ok(m) => Ok(Some((m.sequence, m.time))),
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(ReplayError::nats("cannot read the ring's first message", e)),
                }
            }
            Self::File(s) => Ok(s.first),
        }
    }

    /// The last stream sequence stored at or before `t` (the point a time names).
    pub(crate) async fn seq_at_time(&self, t: OffsetDateTime) -> Result<u64, ReplayError> {
        match self.first_message().await? {
            Some((_, first_time)) if first_time <= t => {}
            Some((first_seq, first_time)) => {
                return Err(ReplayError::BeforeFirst {
                    time: record::rfc3339(t),
                    ring: self.ring().clone(),
                    first_seq,
                    first_time: record::rfc3339(first_time),
                });
            }
            None => {
                return Err(ReplayError::NoEvents {
                    ring: self.ring().clone(),
                    history: self.describe(),
                });
            }
        }
        match self {
            Self::Nats(s) => s.seq_at_time(t).await,
            Self::File(_) => {
                let mut at = 0;
                let mut scan = self.scan(1, None, &STORED_KINDS).await?;
                while let Some(r) = scan.next().await? {
                    if r.time > t {
                        break;
                    }
                    at = r.seq;
                }
                Ok(at)
            }
        }
    }

    /// The ring's snapshots, sorted by epoch.
    pub(crate) async fn snapshots(&self) -> Result<Vec<SnapshotRef>, ReplayError> {
        match self {
            Self::Nats(s) => s.snapshot_refs().await,
            Self::File(s) => Ok(s.snapshots.clone()),
        }
    }

    /// Reads and checks one snapshot; `None` if its key was deleted (the reducer
    /// prunes old per-epoch snapshots).
    pub(crate) async fn snapshot(
        &self,
        r: &SnapshotRef,
    ) -> Result<Option<pb::RingSnapshot>, ReplayError> {
        match self {
            Self::Nats(s) => s.snapshot(&r.key).await,
            Self::File(s) => s.snapshot(r).map(Some),
        }
    }

    /// The stored message at `seq`, if it is one of the ring's.
    pub(crate) async fn message(&self, seq: u64) -> Result<Option<Record>, ReplayError> {
        match self {
            Self::Nats(s) => {
                let ours = subjects(&s.ring, &STORED_KINDS);
                match s.stream.direct_get(seq).await {
                    Ok(m) if ours.iter().any(|o| *o == m.subject.as_str()) => Ok(Some(
                        Record::decode(m.sequence, m.time, m.subject.to_string(), m.payload),
                    )),
                    Ok(_) => Ok(None),
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(ReplayError::nats(format!("cannot read sequence {seq}"), e)),
                }
            }
            Self::File(_) => {
                let mut scan = self.scan(seq, Some(seq), &STORED_KINDS).await?;
                scan.next().await
            }
        }
    }

    /// The ring configuration the reducer used: from the ring's first `RingRebalanced`.
    pub(crate) async fn first_config(&self) -> Result<Option<RingConfig>, ReplayError> {
        match self {
            Self::Nats(s) => {
                match s
                    .stream
                    .direct_get_first_for_subject(subject::rebalance(&s.ring))
                    .await
                {
                    Ok(m) => config_of(&Record::decode(
                        m.sequence,
                        m.time,
                        m.subject.to_string(),
                        m.payload,
                    ))
                    .transpose(),
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(ReplayError::nats(
                        "cannot read the ring's first rebalance event",
                        e,
                    )),
                }
            }
            Self::File(_) => {
                let mut scan = self.scan(1, None, &[SubjectKind::Rebalance]).await?;
                while let Some(r) = scan.next().await? {
                    if let Some(config) = config_of(&r) {
                        return config.map(Some);
                    }
                }
                Ok(None)
            }
        }
    }

    /// The ring's messages of `kinds` with sequences in `from..=to` (`to`: the end of
    /// the stream as it is now), in stream order.
    pub(crate) async fn scan(
        &self,
        from: u64,
        to: Option<u64>,
        kinds: &[SubjectKind],
    ) -> Result<Scan, ReplayError> {
        if to.is_some_and(|to| to < from) {
            return Ok(Scan { state: State::Done });
        }
        let state = match self {
            Self::Nats(s) => s.scan(from, to, kinds).await?,
            Self::File(s) => State::File(Box::new(FileScan {
                reader: s.reader()?,
                path: s.path.clone(),
                wanted: subjects(&s.ring, kinds).into_iter().collect(),
                from,
                to,
            })),
        };
        Ok(Scan { state })
    }
}

/// The ring configuration a rebalance record carries (`None`: not a rebalance event).
fn config_of(r: &Record) -> Option<Result<RingConfig, ReplayError>> {
    let Ok(event) = &r.event else {
        return None;
    };
    let Body::RingRebalanced(rebalanced) = event.body() else {
        return None;
    };
    Some(match &rebalanced.config {
        Some(c) => RingConfig::try_from(c).map_err(ReplayError::BadConfig),
        None => Err(ReplayError::NoConfig { seq: r.seq }),
    })
}

/// The messages of a sequence range, read one at a time (see the module docs).
pub(crate) struct Scan {
    state: State,
}

/// Boxed states: a scan is moved into every query's future, and `Done` is common.
enum State {
    /// Nothing (more) to read.
    Done,
    /// An ordered consumer on the stream.
    Nats(Box<NatsScan>),
    /// A pass over an export file.
    File(Box<FileScan>),
}

type Ordered = consumer::Consumer<consumer::pull::OrderedConfig>;

struct NatsScan {
    stream: stream::Stream,
    /// The consumer's name, to delete it when done.
    name: String,
    messages: consumer::pull::Ordered,
    to: Option<u64>,
}

struct FileScan {
    reader: Reader<BufReader<File>>,
    path: PathBuf,
    wanted: BTreeSet<String>,
    from: u64,
    to: Option<u64>,
}

impl Scan {
    /// The next message of the range, or `None` after its last.
    pub(crate) async fn next(&mut self) -> Result<Option<Record>, ReplayError> {
        let next = match &mut self.state {
            State::Done => return Ok(None),
            State::Nats(s) => s.next().await,
            State::File(s) => s.next(),
        };
        match next {
            Ok(Some((record, more))) => {
                if !more {
                    self.close().await;
                }
                Ok(Some(record))
            }
            Ok(None) => {
                self.close().await;
                Ok(None)
            }
            Err(e) => {
                self.close().await;
                Err(e)
            }
        }
    }

    /// Stops reading: deletes the scan's consumer now rather than when it goes idle,
    /// since many short replays in a row would otherwise pile up consumers.
    pub(crate) async fn close(&mut self) {
        if let State::Nats(s) = std::mem::replace(&mut self.state, State::Done) {
            forget(&s.stream, &s.name).await;
        }
    }
}

/// Deletes a finished consumer. Best effort: an ordered consumer that recreated
/// itself has another name, and the server removes it when it goes idle anyway.
async fn forget(stream: &stream::Stream, consumer: &str) {
    let _ = stream.delete_consumer(consumer).await;
}

impl NatsScan {
    /// The next message and whether more may follow, or `None` past the range.
    async fn next(&mut self) -> Result<Option<(Record, bool)>, ReplayError> {
        // An ordered consumer recreates itself after a hiccup; a long silence with
        // messages still pending means the server is gone.
        let next = tokio::time::timeout(SCAN_SILENCE, self.messages.next())
            .await
            .map_err(|e| ReplayError::Timeout {
                what: "no message from the server in 30 s",
                source: e,
            })?
            .ok_or(ReplayError::StreamEnded)?;
        let message = next.map_err(|e| ReplayError::nats("cannot read the stream", e))?;
        let info = message
            .info()
            .map_err(|e| ReplayError::nats("bad message metadata", e))?;
        let (seq, pending, time) = (info.stream_sequence, info.pending, info.published);
        if self.to.is_some_and(|to| seq > to) {
            return Ok(None);
        }
        let record = Record::decode(
            seq,
            time,
            message.subject.to_string(),
            message.payload.clone(),
        );
        Ok(Some((record, pending > 0 && self.to != Some(seq))))
    }
}

impl FileScan {
    /// The next message of the range and whether more may follow, or `None` past it.
    fn next(&mut self) -> Result<Option<(Record, bool)>, ReplayError> {
        while let Some(item) = self.reader.next_item().map_err(|e| ReplayError::Export {
            path: self.path.clone(),
            source: e,
        })? {
            let Item::Message(r) = item else { continue };
            if r.seq < self.from || !self.wanted.contains(&r.subject) {
                continue;
            }
            if self.to.is_some_and(|to| r.seq > to) {
                return Ok(None);
            }
            let more = self.to != Some(r.seq);
            return Ok(Some((*r, more)));
        }
        Ok(None)
    }
}

impl NatsSource {
    async fn stream_info(&self) -> Result<stream::Info, ReplayError> {
        let mut stream = self.stream.clone();
        stream
            .info()
            .await
            .cloned()
            .map_err(|e| ReplayError::nats("cannot read the stream's state", e))
    }

    /// Ring names that have stored events.
    async fn rings(&self) -> Result<BTreeSet<String>, ReplayError> {
        const WHAT: &str = "cannot list the stream's subjects";
        let stream = self.stream.clone();
        let mut subjects = stream
            .info_with_subjects(format!("{}.*.*", subject::PREFIX))
            .await
            .map_err(|e| ReplayError::nats(WHAT, e))?;
        let mut rings = BTreeSet::new();
        while let Some(entry) = subjects.next().await {
            let (subject, _) = entry.map_err(|e| ReplayError::nats(WHAT, e))?;
            if let Ok(parsed) = subject::parse(&subject) {
                rings.insert(parsed.ring.as_str().to_string());
            }
        }
        Ok(rings)
    }

    /// The snapshot keys of the ring: the live keys of the bucket (deleted ones left
    /// out), or, for a user that may not create consumers on the bucket,
    /// every key the bucket's stream has seen.
    async fn snapshot_keys(&self, bucket: &stream::Stream) -> Result<Vec<String>, ReplayError> {
        const WHAT: &str = "cannot list the snapshot keys";
        let prefix = format!("{}.", self.ring);
        if let Ok(kv) = self.js.get_key_value(subject::KV_SNAPSHOTS).await
            && let Ok(mut keys) = kv.keys().await
        {
            let mut out = Vec::new();
            while let Some(key) = keys.next().await {
                let key = key.map_err(|e| ReplayError::nats(WHAT, e))?;
                if key.starts_with(&prefix) {
                    out.push(key);
                }
            }
            return Ok(out);
        }
        let bucket_prefix = kv_subject("");
        let mut subjects = bucket
            .clone()
            .info_with_subjects(kv_subject(&subject::snapshot_keys_of(&self.ring)))
            .await
            .map_err(|e| ReplayError::nats(WHAT, e))?;
        let mut out = Vec::new();
        while let Some(entry) = subjects.next().await {
            let (subject, _) = entry.map_err(|e| ReplayError::nats(WHAT, e))?;
            if let Some(key) = subject.strip_prefix(&bucket_prefix) {
                out.push(key.to_string());
            }
        }
        Ok(out)
    }

    async fn snapshot_refs(&self) -> Result<Vec<SnapshotRef>, ReplayError> {
        let Some(bucket) = &self.snapshots else {
            return Ok(Vec::new());
        };
        let latest = subject::latest_snapshot_key(&self.ring);
        let mut refs = Vec::new();
        let mut has_latest = false;
        for key in self.snapshot_keys(bucket).await? {
            if key == latest {
                has_latest = true;
            } else if let Some(epoch) = epoch_of_key(&self.ring, &key) {
                refs.push(SnapshotRef {
                    key,
                    epoch,
                    offset: 0,
                });
            }
        }
        // `latest` may be newer than every per-epoch key; it is used only then.
        if has_latest
            && let Ok(Some(s)) = self.snapshot(&latest).await
            && !refs.iter().any(|r| r.epoch == s.epoch)
        {
            refs.push(SnapshotRef {
                key: latest,
                epoch: s.epoch,
                offset: 0,
            });
        }
        refs.sort_by_key(|r| r.epoch);
        Ok(refs)
    }

    /// The snapshot under `key`; `None` if it was deleted or there is no bucket.
    async fn snapshot(&self, key: &str) -> Result<Option<pb::RingSnapshot>, ReplayError> {
        let Some(bucket) = &self.snapshots else {
            return Ok(None);
        };
        let m = match bucket.direct_get_last_for_subject(kv_subject(key)).await {
            Ok(m) => m,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(ReplayError::nats(format!("cannot read snapshot {key}"), e)),
        };
        // A deleted or purged key leaves a marker without payload.
        if m.payload.is_empty() {
            return Ok(None);
        }
        codec::decode_snapshot(&m.payload)
            .map(Some)
            .map_err(|e| ReplayError::Snapshot {
                key: key.to_string(),
                source: e,
            })
    }

    /// The first message after `t` (any subject) tells where `t` falls.
    async fn seq_at_time(&self, t: OffsetDateTime) -> Result<u64, ReplayError> {
        let after = t + time::Duration::nanoseconds(1);
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: after },
                ..Default::default()
            })
            .await
            .map_err(|e| ReplayError::nats("cannot create a consumer to find the time", e))?;
        let name = consumer.cached_info().name.clone();
        let result = if consumer.cached_info().num_pending == 0 {
            self.stream_info().await.map(|i| i.state.last_sequence)
        } else {
            first_sequence(consumer).await.map(|s| s.saturating_sub(1))
        };
        forget(&self.stream, &name).await;
        result
    }

    async fn scan(
        &self,
        from: u64,
        to: Option<u64>,
        kinds: &[SubjectKind],
    ) -> Result<State, ReplayError> {
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subjects: subjects(&self.ring, kinds),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(|e| ReplayError::nats("cannot create an ordered consumer on the stream", e))?;
        let name = consumer.cached_info().name.clone();
        if consumer.cached_info().num_pending == 0 {
            forget(&self.stream, &name).await;
            return Ok(State::Done);
        }
        match consumer.messages().await {
            Ok(messages) => Ok(State::Nats(Box::new(NatsScan {
                stream: self.stream.clone(),
                name,
                messages,
                to,
            }))),
            Err(e) => {
                forget(&self.stream, &name).await;
                Err(ReplayError::nats("cannot read the stream", e))
            }
        }
    }
}

/// The stream sequence of a consumer's first message.
async fn first_sequence(consumer: Ordered) -> Result<u64, ReplayError> {
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| ReplayError::nats("cannot read the stream", e))?;
    let next = tokio::time::timeout(FIRST_ANSWER, messages.next())
        .await
        .map_err(|e| ReplayError::Timeout {
            what: "no answer from the server in 10 s",
            source: e,
        })?
        .ok_or(ReplayError::StreamEnded)?
        .map_err(|e| ReplayError::nats("cannot read the stream", e))?;
    let info = next
        .info()
        .map_err(|e| ReplayError::nats("bad message metadata", e))?;
    Ok(info.stream_sequence)
}

impl FileSource {
    fn reader(&self) -> Result<Reader<BufReader<File>>, ReplayError> {
        open_export(&self.path)
    }

    fn open(path: &Path, ring: Option<RingName>) -> Result<Self, ReplayError> {
        let export_error = |e: ExportError| ReplayError::Export {
            path: path.to_path_buf(),
            source: e,
        };
        let mut reader = open_export(path)?;
        let header = reader.header().clone();
        let file_ring = RingName::new(header.ring.as_str()).map_err(|e| ReplayError::FileRing {
            path: path.to_path_buf(),
            source: e,
        })?;
        if let Some(asked) = ring
            && asked != file_ring
        {
            return Err(ReplayError::NotInFile {
                ring: asked,
                path: path.to_path_buf(),
                holds: file_ring,
            });
        }
        let ours: BTreeSet<String> = subjects(&file_ring, &STORED_KINDS).into_iter().collect();
        let mut snapshots = Vec::new();
        let mut first = None;
        // One pass over the whole file: a truncated or corrupt file fails here, before
        // any query answers from it.
        loop {
            let offset = reader.offset();
            match reader.next_item().map_err(export_error)? {
                None => break,
                Some(Item::Snapshot { key, snapshot }) => {
                    if snapshot.ring == file_ring.as_str() {
                        snapshots.push(SnapshotRef {
                            key,
                            epoch: snapshot.epoch,
                            offset,
                        });
                    }
                }
                Some(Item::Message(r)) => {
                    if ours.contains(&r.subject) {
                        first.get_or_insert((r.seq, r.time));
                    }
                }
            }
        }
        snapshots.sort_by_key(|r| r.epoch);
        Ok(Self {
            ring: file_ring,
            path: path.to_path_buf(),
            format: reader.format(),
            header,
            snapshots,
            first,
        })
    }

    fn snapshot(&self, r: &SnapshotRef) -> Result<pb::RingSnapshot, ReplayError> {
        let open_error = |e| ReplayError::OpenFile {
            path: self.path.clone(),
            source: e,
        };
        let mut file = File::open(&self.path).map_err(open_error)?;
        file.seek(SeekFrom::Start(r.offset)).map_err(open_error)?;
        let mut reader = Reader::resume(
            BufReader::new(file),
            self.format,
            self.header.clone(),
            r.offset,
        );
        match reader.next_item() {
            Ok(Some(Item::Snapshot { snapshot, .. })) => Ok(*snapshot),
            Ok(_) => Err(ReplayError::FileChanged {
                path: self.path.clone(),
                offset: r.offset,
            }),
            Err(e) => Err(ReplayError::Export {
                path: self.path.clone(),
                source: e,
            }),
        }
    }
}

/// Opens an export file and reads its header.
fn open_export(path: &Path) -> Result<Reader<BufReader<File>>, ReplayError> {
    let file = File::open(path).map_err(|e| ReplayError::OpenFile {
        path: path.to_path_buf(),
        source: e,
    })?;
    Reader::open(BufReader::new(file)).map_err(|e| ReplayError::Export {
        path: path.to_path_buf(),
        source: e,
    })
}
