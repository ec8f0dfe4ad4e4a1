//! Where a replay reads the history of a ring: the `RINGSIDE` stream and the snapshot
//! bucket on a NATS server, or an export file. Both give the same [`Record`]s and
//! snapshots, so every command answers the same from either.
//!
//! # How it fits
//! The commands in [`super`] ask a [`Source`] for the stream bounds, the ring's
//! snapshots and a scan of a sequence range; the folding itself is in
//! [`super::engine`]. NATS access is read-only (stream info, direct gets, ordered
//! consumers), so the `bridge` user is enough.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Seek as _, SeekFrom};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt as _;
use ringside_events::subject::{self, SubjectKind};
use ringside_events::{Body, RingName, codec, pb};
use ringside_ring::RingConfig;
use time::OffsetDateTime;

use super::export::{self, Item, Reader};
use super::progress::Progress;
use super::record::{self, Record};

/// What a scan's visitor says: go on, or stop here.
pub(crate) type Flow = ControlFlow<()>;

/// The stored subjects of a ring the replay tools read.
pub(crate) const STORED_KINDS: [SubjectKind; 4] = [
    SubjectKind::Membership,
    SubjectKind::Rebalance,
    SubjectKind::Handoff,
    SubjectKind::Scale,
];

/// A snapshot the source holds: its key and epoch (read the snapshot with
/// [`Source::snapshot`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotRef {
    /// KV key (`<ring>.e<epoch>` or `<ring>.latest`).
    pub(crate) key: String,
    /// The epoch (from the key, or from the snapshot for `latest`).
    pub(crate) epoch: u64,
    /// Where it is in an export file.
    offset: Option<u64>,
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

/// The subjects of `kinds` for `ring`.
pub(crate) fn subjects(ring: &RingName, kinds: &[SubjectKind]) -> Vec<String> {
    kinds
        .iter()
        .map(|kind| format!("{}.{ring}.{}", subject::PREFIX, kind.token()))
        .collect()
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
    /// Connects to a server and finds the stream (and the bucket, if there is one).
    pub(crate) async fn nats(
        client: async_nats::Client,
        url: &str,
        ring: RingName,
    ) -> anyhow::Result<Self> {
        let js = jetstream::new(client);
        let stream = js.get_stream(subject::STREAM_EVENTS).await.with_context(|| {
            format!(
                "cannot open stream {} on {url} (is ringside running there? `ringside up` creates it)",
                subject::STREAM_EVENTS
            )
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
    pub(crate) fn file(path: &Path, ring: Option<RingName>) -> anyhow::Result<Self> {
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
    pub(crate) async fn covered(&self) -> anyhow::Result<(u64, u64)> {
        match self {
            Self::Nats(s) => {
                let mut stream = s.stream.clone();
                let info = stream
                    .info()
                    .await
                    .context("cannot read the stream's state")?;
                Ok((info.state.first_sequence.max(1), info.state.last_sequence))
            }
            Self::File(s) => Ok((s.header.from_seq.max(1), s.header.to_seq)),
        }
    }

    /// The last sequence of the stream (or of the export's range).
    pub(crate) async fn last_seq(&self) -> anyhow::Result<u64> {
        Ok(self.covered().await?.1)
    }

    /// The first sequence the source holds (1 unless earlier messages were purged
    /// from the stream or left out of the export).
    pub(crate) async fn first_covered_seq(&self) -> anyhow::Result<u64> {
        Ok(self.covered().await?.0)
    }

    /// Fails with a clear message if the source holds nothing of the ring.
    pub(crate) async fn check_ring(&self) -> anyhow::Result<()> {
        match self {
            Self::Nats(s) => {
                let rings = s.rings().await?;
                if rings.contains(s.ring.as_str()) || !self.snapshots().await?.is_empty() {
                    return Ok(());
                }
                let known: Vec<&str> = rings.iter().map(String::as_str).collect();
                bail!(
                    "unknown ring '{}': no events in {} (rings with events: {})",
                    s.ring,
                    self.describe(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )
            }
            // Opening the file checked its ring.
            Self::File(_) => Ok(()),
        }
    }

    /// (sequence, time) of the ring's first stored message, if any.
    pub(crate) async fn first_message(&self) -> anyhow::Result<Option<(u64, OffsetDateTime)>> {
        match self {
            Self::Nats(s) => {
                let filter = format!("{}.{}.*", subject::PREFIX, s.ring);
                match s.stream.direct_get_first_for_subject(filter).await {
                    Ok(m) => Ok(Some((m.sequence, m.time))),
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(anyhow!(e).context("cannot read the ring's first message")),
                }
            }
            Self::File(s) => Ok(s.first),
        }
    }

    /// The last stream sequence stored at or before `t` (the point a time names).
    pub(crate) async fn seq_at_time(&self, t: OffsetDateTime) -> anyhow::Result<u64> {
        let first = self.first_message().await?;
        match first {
            Some((_, first_time)) if first_time <= t => {}
            Some((seq, first_time)) => bail!(
                "{} is before the first event of ring '{}' (sequence {seq} at {})",
                record::rfc3339(t),
                self.ring(),
                record::rfc3339(first_time)
            ),
            None => bail!(
                "ring '{}' has no events in {}",
                self.ring(),
                self.describe()
            ),
        }
        match self {
            Self::Nats(s) => s.seq_at_time(t).await,
            Self::File(s) => {
                let mut at = 0;
                s.scan(1, None, &STORED_KINDS, &mut Progress::hidden(), &mut |r| {
                    if r.time > t {
                        return Ok(ControlFlow::Break(()));
                    }
                    at = r.seq;
                    Ok(ControlFlow::Continue(()))
                })?;
                Ok(at)
            }
        }
    }

    /// The ring's snapshots, sorted by epoch.
    pub(crate) async fn snapshots(&self) -> anyhow::Result<Vec<SnapshotRef>> {
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
    ) -> anyhow::Result<Option<pb::RingSnapshot>> {
        match self {
            Self::Nats(s) => s.snapshot(&r.key).await,
            Self::File(s) => s.snapshot(r).map(Some),
        }
    }

    /// The stored message at `seq`, if it is one of the ring's.
    pub(crate) async fn message(&self, seq: u64) -> anyhow::Result<Option<Record>> {
        let ours = subjects(self.ring(), &STORED_KINDS);
        match self {
            Self::Nats(s) => {
                match s.stream.direct_get(seq).await {
                    Ok(m) if ours.iter().any(|o| *o == m.subject.as_str()) => Ok(Some(
                        Record::decode(m.sequence, m.time, m.subject.to_string(), m.payload),
                    )),
                    Ok(_) => Ok(None),
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(anyhow!(e).context(format!("cannot read sequence {seq}"))),
                }
            }
            Self::File(s) => {
                let mut found = None;
                s.scan(
                    seq,
                    Some(seq),
                    &STORED_KINDS,
                    &mut Progress::hidden(),
                    &mut |r| {
                        found = Some(r);
                        Ok(ControlFlow::Break(()))
                    },
                )?;
                Ok(found)
            }
        }
    }

    /// The ring configuration the reducer used: from the ring's first `RingRebalanced`.
    pub(crate) async fn first_config(&self) -> anyhow::Result<Option<RingConfig>> {
        let mut found: Option<Result<RingConfig, String>> = None;
        match self {
            Self::Nats(s) => {
                match s
                    .stream
                    .direct_get_first_for_subject(subject::rebalance(&s.ring))
                    .await
                {
                    Ok(m) => {
                        found = config_of(&Record::decode(
                            m.sequence,
                            m.time,
                            m.subject.to_string(),
                            m.payload,
                        ))
                    }
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => {
                        return Err(
                            anyhow!(e).context("cannot read the ring's first rebalance event")
                        );
                    }
                }
            }
            Self::File(s) => {
                s.scan(
                    1,
                    None,
                    &[SubjectKind::Rebalance],
                    &mut Progress::hidden(),
                    &mut |r| {
                        found = config_of(&r);
                        Ok(if found.is_some() {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        })
                    },
                )?;
            }
        }
        found
            .transpose()
            .map_err(|e| anyhow!("the ring's first rebalance event: {e}"))
    }

    /// Visits the ring's messages of `kinds` with sequences in `from..=to` (`to`: the
    /// end of the stream as it is now), in stream order, until the visitor stops.
    pub(crate) async fn scan(
        &self,
        from: u64,
        to: Option<u64>,
        kinds: &[SubjectKind],
        progress: &mut Progress,
        visit: &mut dyn FnMut(Record) -> anyhow::Result<Flow>,
    ) -> anyhow::Result<()> {
        match self {
            Self::Nats(s) => s.scan(from, to, kinds, progress, visit).await,
            Self::File(s) => s.scan(from, to, kinds, progress, visit),
        }
    }
}

/// The ring configuration a rebalance record carries (`None`: not a rebalance event).
fn config_of(r: &Record) -> Option<Result<RingConfig, String>> {
    let Ok(event) = &r.event else {
        return None;
    };
    let Body::RingRebalanced(rebalanced) = event.body() else {
        return None;
    };
    Some(match &rebalanced.config {
        Some(c) => RingConfig::try_from(c).map_err(|e| record::error_chain(&e)),
        None => Err(format!("sequence {} has no ring configuration", r.seq)),
    })
}

impl NatsSource {
    /// Ring names that have stored events.
    async fn rings(&self) -> anyhow::Result<BTreeSet<String>> {
        let stream = self.stream.clone();
        let mut subjects = stream
            .info_with_subjects(format!("{}.*.*", subject::PREFIX))
            .await
            .context("cannot list the stream's subjects")?;
        let mut rings = BTreeSet::new();
        while let Some(entry) = subjects.next().await {
            let (subject, _) = entry.context("cannot list the stream's subjects")?;
            if let Ok(parsed) = subject::parse(&subject) {
                rings.insert(parsed.ring.as_str().to_string());
            }
        }
        Ok(rings)
    }

    /// The snapshot keys of the ring: the live keys of the bucket (deleted ones left
    /// out), or, for a user that may not create consumers on the bucket (`bridge`),
    /// every key the bucket's stream has seen.
    async fn snapshot_keys(&self) -> anyhow::Result<Vec<String>> {
        let prefix = format!("{}.", self.ring);
        if let Ok(kv) = self.js.get_key_value(subject::KV_SNAPSHOTS).await
            && let Ok(mut keys) = kv.keys().await
        {
            let mut out = Vec::new();
            while let Some(key) = keys.next().await {
                let key = key.context("cannot list the snapshot keys")?;
                if key.starts_with(&prefix) {
                    out.push(key);
                }
            }
            return Ok(out);
        }
        let Some(kv) = &self.snapshots else {
            return Ok(Vec::new());
        };
        let bucket_prefix = kv_subject("");
        let mut subjects = kv
            .clone()
            .info_with_subjects(kv_subject(&subject::snapshot_keys_of(&self.ring)))
            .await
            .context("cannot list the snapshot keys")?;
        let mut out = Vec::new();
        while let Some(entry) = subjects.next().await {
            let (subject, _) = entry.context("cannot list the snapshot keys")?;
            if let Some(key) = subject.strip_prefix(&bucket_prefix) {
                out.push(key.to_string());
            }
        }
        Ok(out)
    }

    async fn snapshot_refs(&self) -> anyhow::Result<Vec<SnapshotRef>> {
        if self.snapshots.is_none() {
            return Ok(Vec::new());
        }
        let latest = subject::latest_snapshot_key(&self.ring);
        let mut refs = Vec::new();
        let mut has_latest = false;
        for key in self.snapshot_keys().await? {
            if key == latest {
                has_latest = true;
            } else if let Some(epoch) = epoch_of_key(&self.ring, &key) {
                refs.push(SnapshotRef {
                    key,
                    epoch,
                    offset: None,
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
                offset: None,
            });
        }
        refs.sort_by_key(|r| r.epoch);
        Ok(refs)
    }

    async fn snapshot(&self, key: &str) -> anyhow::Result<Option<pb::RingSnapshot>> {
        let kv = self
            .snapshots
            .as_ref()
            .ok_or_else(|| anyhow!("there is no snapshot bucket {}", subject::KV_SNAPSHOTS))?;
        let m = match kv.direct_get_last_for_subject(kv_subject(key)).await {
            Ok(m) => m,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(anyhow!(e).context(format!("cannot read snapshot {key}"))),
        };
        // A deleted or purged key leaves a marker without payload.
        if m.payload.is_empty() {
            return Ok(None);
        }
        codec::decode_snapshot(&m.payload).map(Some).map_err(|e| {
            anyhow!(
                "snapshot {key} does not decode: {}",
                record::error_chain(&e)
            )
        })
    }

    /// The first message after `t` (any subject) tells where `t` falls.
    async fn seq_at_time(&self, t: OffsetDateTime) -> anyhow::Result<u64> {
        let after = t + time::Duration::nanoseconds(1);
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: after },
                ..Default::default()
            })
            .await
            .context("cannot create a consumer to find the time")?;
        let name = consumer.cached_info().name.clone();
        let result = if consumer.cached_info().num_pending == 0 {
            let mut stream = self.stream.clone();
            stream
                .info()
                .await
                .context("cannot read the stream's state")
                .map(|i| i.state.last_sequence)
        } else {
            first_sequence(consumer).await.map(|s| s.saturating_sub(1))
        };
        self.forget(&name).await;
        result
    }

    /// Deletes a finished consumer now rather than when it goes idle (30 s): many
    /// short replays in a row would otherwise pile up consumers on the server.
    async fn forget(&self, consumer: &str) {
        // Best effort: an ordered consumer that recreated itself has another name, and
        // the server removes it when it goes idle anyway.
        let _ = self.stream.delete_consumer(consumer).await;
    }

    async fn scan(
        &self,
        from: u64,
        to: Option<u64>,
        kinds: &[SubjectKind],
        progress: &mut Progress,
        visit: &mut dyn FnMut(Record) -> anyhow::Result<Flow>,
    ) -> anyhow::Result<()> {
        if to.is_some_and(|to| to < from) {
            return Ok(());
        }
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
            .context("cannot create an ordered consumer on the stream")?;
        let name = consumer.cached_info().name.clone();
        let result = if consumer.cached_info().num_pending == 0 {
            Ok(())
        } else {
            read_until(consumer, to, progress, visit).await
        };
        self.forget(&name).await;
        result
    }
}

type Ordered = consumer::Consumer<consumer::pull::OrderedConfig>;

/// The stream sequence of a consumer's first message.
async fn first_sequence(consumer: Ordered) -> anyhow::Result<u64> {
    let mut messages = consumer
        .messages()
        .await
        .context("cannot read the stream")?;
    let next = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .context("no answer from the server in 10 s")?
        .ok_or_else(|| anyhow!("the stream ended"))?
        .map_err(|e| anyhow!(e).context("cannot read the stream"))?;
    let info = next
        .info()
        .map_err(|e| anyhow!("bad message metadata: {e}"))?;
    Ok(info.stream_sequence)
}

/// Hands a consumer's messages to `visit` up to sequence `to` or the end of the
/// stream as it was when the consumer was created.
async fn read_until(
    consumer: Ordered,
    to: Option<u64>,
    progress: &mut Progress,
    visit: &mut dyn FnMut(Record) -> anyhow::Result<Flow>,
) -> anyhow::Result<()> {
    let mut messages = consumer
        .messages()
        .await
        .context("cannot read the stream")?;
    loop {
        // An ordered consumer recreates itself after a hiccup; a long silence with
        // messages still pending means the server is gone.
        let next = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .context("no message from the server in 30 s")?;
        let Some(next) = next else {
            bail!("the stream ended while reading it");
        };
        let message = next.map_err(|e| anyhow!(e).context("cannot read the stream"))?;
        let info = message
            .info()
            .map_err(|e| anyhow!("bad message metadata: {e}"))?;
        let (seq, pending, time) = (info.stream_sequence, info.pending, info.published);
        if to.is_some_and(|to| seq > to) {
            return Ok(());
        }
        progress.at(seq);
        let record = Record::decode(
            seq,
            time,
            message.subject.to_string(),
            message.payload.clone(),
        );
        if visit(record)?.is_break() || pending == 0 || to == Some(seq) {
            return Ok(());
        }
    }
}

impl FileSource {
    fn reader(&self) -> anyhow::Result<Reader<BufReader<File>>> {
        let file = File::open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        Reader::open(BufReader::new(file)).with_context(|| format!("{}", self.path.display()))
    }

    fn open(path: &Path, ring: Option<RingName>) -> anyhow::Result<Self> {
        let mut source = Self {
            ring: RingName::new("x").map_err(|e| anyhow!(e))?,
            path: path.to_path_buf(),
            header: export::Header {
                ring: String::new(),
                stream: String::new(),
                from_seq: 0,
                to_seq: 0,
                exported_at: OffsetDateTime::UNIX_EPOCH,
            },
            format: export::Format::Ndjson,
            snapshots: Vec::new(),
            first: None,
        };
        let mut reader = source.reader()?;
        source.header = reader.header().clone();
        source.format = reader.format();
        let file_ring = RingName::new(source.header.ring.as_str())
            .map_err(|e| anyhow!("{}: the header names an invalid ring: {e}", path.display()))?;
        if let Some(asked) = ring
            && asked != file_ring
        {
            bail!(
                "unknown ring '{asked}': {} holds ring '{file_ring}'",
                path.display()
            );
        }
        source.ring = file_ring;
        let ours: BTreeSet<String> = subjects(&source.ring, &STORED_KINDS).into_iter().collect();
        // One pass over the whole file: a truncated or corrupt file fails here, before
        // any command answers from it.
        loop {
            let offset = reader.offset();
            let item = reader
                .next_item()
                .with_context(|| format!("{}", path.display()))?;
            match item {
                None => break,
                Some(Item::Snapshot { key, snapshot }) => {
                    if snapshot.ring == source.ring.as_str() {
                        source.snapshots.push(SnapshotRef {
                            key,
                            epoch: snapshot.epoch,
                            offset: Some(offset),
                        });
                    }
                }
                Some(Item::Message(r)) => {
                    if ours.contains(&r.subject) {
                        source.first.get_or_insert((r.seq, r.time));
                    }
                }
            }
        }
        source.snapshots.sort_by_key(|r| r.epoch);
        Ok(source)
    }

    fn snapshot(&self, r: &SnapshotRef) -> anyhow::Result<pb::RingSnapshot> {
        let offset = r
            .offset
            .ok_or_else(|| anyhow!("snapshot {} is not in {}", r.key, self.path.display()))?;
        let mut file = File::open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        file.seek(SeekFrom::Start(offset))?;
        let mut reader = Reader::resume(
            BufReader::new(file),
            self.format,
            self.header.clone(),
            offset,
        );
        match reader
            .next_item()
            .with_context(|| format!("{}", self.path.display()))?
        {
            Some(Item::Snapshot { snapshot, .. }) => Ok(*snapshot),
            _ => bail!(
                "{}: no snapshot at byte {offset} (was the file changed?)",
                self.path.display()
            ),
        }
    }

    fn scan(
        &self,
        from: u64,
        to: Option<u64>,
        kinds: &[SubjectKind],
        progress: &mut Progress,
        visit: &mut dyn FnMut(Record) -> anyhow::Result<Flow>,
    ) -> anyhow::Result<()> {
        let wanted: BTreeSet<String> = subjects(&self.ring, kinds).into_iter().collect();
        let mut reader = self.reader()?;
        while let Some(item) = reader
            .next_item()
            .with_context(|| format!("{}", self.path.display()))?
        {
            let Item::Message(r) = item else { continue };
            if r.seq < from || !wanted.contains(&r.subject) {
                continue;
            }
            if to.is_some_and(|to| r.seq > to) {
                break;
            }
            progress.at(r.seq);
            if visit(*r)?.is_break() {
                break;
            }
        }
        Ok(())
    }
}
