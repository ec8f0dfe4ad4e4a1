//! [`Hub`]: the ring as the bridge knows it, stamped with the stream sequence of the
//! last stored event it handled, and the fan-out of every later event to the clients.
//!
//! # The one writer
//! [`follow`] reads the ring's stored subjects (membership, rebalance, handoff, scale)
//! with one ordered consumer from the hub's position + 1, starting from the newest
//! snapshot in `RINGSIDE_SNAPSHOTS`. A `RingRebalanced` applies only if it is the next
//! epoch and rebuilds to its checksum (`convert::apply_rebalanced`); an epoch already
//! passed is skipped; a gap or an epoch that does not fit re-syncs from the newest
//! snapshot (then, if the same message breaks it again, from the stream's start, and
//! once more, the message is skipped as history that never fits: one bad message
//! cannot make the bridge re-sync forever).
//!
//! # No gap, no double at the clients
//! The hub changes its state and sends the event's frame under one write lock; a
//! client takes the snapshot and subscribes under the read lock. So every event frame
//! a client receives after its snapshot has a sequence above the snapshot's, and
//! the client drops any at or below it (after a re-sync, frames sent before it may
//! still be queued). A client that falls more than the queue behind gets `Lagged` from
//! the channel: it sends a resync and a fresh snapshot, and carries on from there.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use axum::extract::ws::Utf8Bytes;
use futures::StreamExt;
use ringside_events::{Body, RingName, codec, convert, pb, subject};
use ringside_kit::Condition;
use ringside_replay::Record;
use ringside_ring::{Ring, RingConfig};
use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::metrics::Metrics;

/// Pause before reopening a consumer or retrying a failed sync.
const RETRY: Duration = Duration::from_secs(1);
/// A node's load report is left out of snapshots after this much silence.
const LOAD_STALE: Duration = Duration::from_secs(60);

/// What the hub sends to every client.
#[derive(Clone, Debug)]
pub(crate) enum Frame {
    /// A stored event of the ring, at stream sequence `seq`.
    Event {
        /// Its stream sequence.
        seq: u64,
        /// The `event` frame (shared by every client: no copy per client).
        text: Utf8Bytes,
    },
    /// A frame that is not stored and has no sequence (load, traffic).
    Live(Utf8Bytes),
    /// The hub started again from a snapshot; every client takes a fresh one.
    Resync(&'static str),
}

/// The ring at the hub's position.
#[derive(Debug)]
struct Current {
    /// Stream sequence of the last stored event handled.
    seq: u64,
    ring: Arc<Ring>,
    /// Members with their details, sorted by id.
    members: Vec<pb::Member>,
    epoch: u64,
    membership_sequence: u64,
    rebalance_sequence: u64,
    /// The snapshot's proto3 JSON, made once per state on first demand.
    json: OnceLock<Arc<str>>,
}

impl Current {
    fn empty() -> Self {
        Self::at(0, Ring::new(RingConfig::default()), Vec::new(), 0, 0, 0)
    }

    fn at(
        seq: u64,
        ring: Ring,
        members: Vec<pb::Member>,
        epoch: u64,
        membership_sequence: u64,
        rebalance_sequence: u64,
    ) -> Self {
        Self {
            seq,
            ring: Arc::new(ring),
            members,
            epoch,
            membership_sequence,
            rebalance_sequence,
            json: OnceLock::new(),
        }
    }

    fn snapshot(&self, name: &RingName) -> Result<pb::RingSnapshot, convert::ConvertError> {
        convert::ring_to_snapshot(
            name,
            &self.ring,
            &self.members,
            self.epoch,
            self.membership_sequence,
            self.rebalance_sequence,
        )
    }

    fn json(&self, name: &RingName) -> Arc<str> {
        Arc::clone(self.json.get_or_init(|| {
            let json = self
                .snapshot(name)
                .map_err(|e| e.to_string())
                .and_then(|s| serde_json::to_string(&s).map_err(|e| e.to_string()));
            match json {
                Ok(json) => json.into(),
                // The ring came from checked events; say so rather than send nothing.
                Err(e) => {
                    tracing::error!(error = %e, "Cannot write the ring as a snapshot.");
                    "null".into()
                }
            }
        }))
    }
}

/// The ring at one epoch, for the key probe.
#[derive(Clone, Debug)]
pub(crate) struct Shown {
    /// The ring.
    pub(crate) ring: Arc<Ring>,
    /// Its epoch.
    pub(crate) epoch: u64,
    /// The hub's position.
    pub(crate) seq: u64,
}

/// The shared state and the fan-out.
#[derive(Debug)]
pub(crate) struct Hub {
    name: RingName,
    current: RwLock<Current>,
    /// The last load report of each node: when it came and its `load` frame.
    loads: Mutex<BTreeMap<String, (Instant, Utf8Bytes)>>,
    /// The last `ScaleDecided` as an event line.
    scale: Mutex<Option<Arc<str>>>,
    tx: broadcast::Sender<Frame>,
    metrics: Metrics,
    /// The first sequence the stream still holds (its history may start later than 1).
    first: AtomicU64,
}

/// Why following stopped.
enum Stop {
    /// The message at this sequence does not continue the ring.
    Broken(u64),
}

impl Hub {
    /// An empty hub; `queue` frames are kept for clients that fall behind.
    pub(crate) fn new(name: RingName, queue: usize, metrics: Metrics) -> Self {
        let (tx, _) = broadcast::channel(queue);
        Self {
            name,
            current: RwLock::new(Current::empty()),
            loads: Mutex::new(BTreeMap::new()),
            scale: Mutex::new(None),
            tx,
            metrics,
            first: AtomicU64::new(0),
        }
    }

    /// The first sequence the stream still holds, as of the last sync.
    pub(crate) fn stream_first(&self) -> u64 {
        self.first.load(Ordering::Relaxed)
    }

    /// The ring name.
    pub(crate) fn name(&self) -> &RingName {
        &self.name
    }

    /// The metrics.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The ring now.
    pub(crate) fn shown(&self) -> Shown {
        let c = read(&self.current);
        Shown {
            ring: Arc::clone(&c.ring),
            epoch: c.epoch,
            seq: c.seq,
        }
    }

    /// A new client's subscription and its snapshot frame, taken together (module
    /// docs): the frame's sequence, and the frame.
    pub(crate) fn join(&self) -> (broadcast::Receiver<Frame>, u64, String) {
        let c = read(&self.current);
        let rx = self.tx.subscribe();
        let (seq, frame) = self.snapshot_frame(&c);
        (rx, seq, frame)
    }

    /// A fresh snapshot frame for a client that already listens.
    pub(crate) fn snapshot(&self) -> (u64, String) {
        let c = read(&self.current);
        self.snapshot_frame(&c)
    }

    fn snapshot_frame(&self, c: &Current) -> (u64, String) {
        let loads: Vec<Utf8Bytes> = {
            let mut loads = lock(&self.loads);
            loads.retain(|_, (at, _)| at.elapsed() < LOAD_STALE);
            loads.values().map(|(_, f)| f.clone()).collect()
        };
        let loads: Vec<&str> = loads.iter().map(Utf8Bytes::as_str).collect();
        let scale = lock(&self.scale).clone();
        let frame = format!(
            "{{\"type\":\"snapshot\",\"seq\":{},\"snapshot\":{},\"loads\":[{}],\"scale\":{}}}",
            c.seq,
            c.json(&self.name),
            loads.join(","),
            scale.as_deref().unwrap_or("null"),
        );
        (c.seq, frame)
    }

    /// Starts from the newest snapshot (`from_scratch`: from the stream's start) and
    /// tells the clients to take a fresh one.
    async fn sync(
        &self,
        js: &jetstream::Context,
        from_scratch: bool,
    ) -> Result<(), async_nats::Error> {
        let start = if from_scratch {
            Current::empty()
        } else {
            self.newest_snapshot(js).await?
        };
        let stream = js.get_stream(subject::STREAM_EVENTS).await?;
        let scale = last_line(&stream, &subject::scale(&self.name)).await;
        self.first
            .store(stream.cached_info().state.first_sequence, Ordering::Relaxed);
        let mut c = write(&self.current);
        tracing::info!(ring = %self.name, epoch = start.epoch, seq = start.seq, from_scratch, "Following the ring.");
        *c = start;
        *lock(&self.scale) = scale;
        self.metrics.epoch(c.epoch, c.seq);
        let _ = self.tx.send(Frame::Resync("the bridge re-synced the ring"));
        Ok(())
    }

    async fn newest_snapshot(&self, js: &jetstream::Context) -> Result<Current, async_nats::Error> {
        let kv = js.get_key_value(subject::KV_SNAPSHOTS).await?;
        let key = subject::latest_snapshot_key(&self.name);
        let Some(bytes) = kv.get(&key).await? else {
            return Ok(Current::empty());
        };
        let usable = codec::decode_snapshot(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                if s.ring != self.name.as_str() {
                    return Err(format!("it is of ring {:?}", s.ring));
                }
                let ring = convert::snapshot_to_ring(&s).map_err(|e| e.to_string())?;
                Ok(Current::at(
                    s.rebalance_sequence,
                    ring,
                    s.members,
                    s.epoch,
                    s.membership_sequence,
                    s.rebalance_sequence,
                ))
            });
        Ok(usable.unwrap_or_else(|why| {
            self.metrics.malformed();
            tracing::warn!(%key, why, "Not using the ring's snapshot; following from the stream's start.");
            Current::empty()
        }))
    }

    /// Reads the ring's stored subjects from the position on, until a message does not
    /// continue the ring. A consumer that fails is opened again from the position.
    async fn follow(&self, js: &jetstream::Context) -> Stop {
        loop {
            let from = read(&self.current).seq + 1;
            match self.read_from(js, from).await {
                Ok(stop) => return stop,
                Err(e) => {
                    tracing::warn!(ring = %self.name, from, error = %e, "The event consumer failed; opening it again.");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    async fn read_from(
        &self,
        js: &jetstream::Context,
        from: u64,
    ) -> Result<Stop, async_nats::Error> {
        let stream = js.get_stream(subject::STREAM_EVENTS).await?;
        let config = consumer::pull::OrderedConfig {
            filter_subjects: vec![
                subject::membership(&self.name),
                subject::rebalance(&self.name),
                subject::handoff(&self.name),
                subject::scale(&self.name),
            ],
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        };
        let mut messages = stream.create_consumer(config).await?.messages().await?;
        while let Some(message) = messages.next().await {
            let message = message?;
            let info = message.info()?;
            let (seq, published) = (info.stream_sequence, info.published);
            let record = Record::decode(
                seq,
                published,
                message.subject.to_string(),
                message.payload.clone(),
            );
            if let Err(stop) = self.take(record) {
                return Ok(stop);
            }
        }
        Err("the consumer ended".into())
    }

    /// Handles one stored message of the ring.
    fn take(&self, record: Record) -> Result<(), Stop> {
        let seq = record.seq;
        if seq <= read(&self.current).seq {
            return Ok(());
        }
        let line = match (&record.event, record.to_json_line()) {
            (Ok(_), Ok(line)) => line,
            (Err(why), _) => {
                self.skip(seq, why);
                return Ok(());
            }
            (_, Err(e)) => {
                self.skip(seq, &e.to_string());
                return Ok(());
            }
        };
        let text = Utf8Bytes::from(event_frame("event", &line));
        let next = match record.event.as_ref().map(|e| e.body()) {
            Ok(Body::RingRebalanced(r)) => {
                let (epoch, ring) = {
                    let c = read(&self.current);
                    (c.epoch, Arc::clone(&c.ring))
                };
                if r.epoch <= epoch {
                    self.skip(seq, &format!("epoch {} arrived at epoch {epoch}", r.epoch));
                    return Ok(());
                }
                if r.epoch > epoch + 1 {
                    tracing::warn!(ring = %self.name, seq, epoch = r.epoch, at = epoch, "Epochs are missing; re-syncing.");
                    return Err(Stop::Broken(seq));
                }
                match convert::apply_rebalanced(&ring, r) {
                    Ok(after) => Some(Current::at(
                        seq,
                        after,
                        r.members.clone(),
                        r.epoch,
                        r.membership_sequence,
                        seq,
                    )),
                    Err(e) => {
                        tracing::warn!(ring = %self.name, seq, epoch = r.epoch, error = %e, "The next epoch does not fit the ring; re-syncing.");
                        return Err(Stop::Broken(seq));
                    }
                }
            }
            Ok(Body::ScaleDecided(_)) => {
                *lock(&self.scale) = Some(line.into());
                None
            }
            _ => None,
        };
        let mut c = write(&self.current);
        match next {
            Some(next) => *c = next,
            None => c.seq = seq,
        }
        self.metrics.epoch(c.epoch, c.seq);
        self.metrics.relayed();
        let _ = self.tx.send(Frame::Event { seq, text });
        Ok(())
    }

    /// Moves the position past a message that is not an event of the ring's history.
    fn skip(&self, seq: u64, why: &str) {
        self.metrics.malformed();
        tracing::warn!(ring = %self.name, seq, why, "Skipping a stored message.");
        let mut c = write(&self.current);
        c.seq = c.seq.max(seq);
    }

    /// A node's load report (not stored in order; the newest per node is kept),
    /// without its client sketch (4 KiB the dashboard has no use for).
    pub(crate) fn load(&self, subject: &str, payload: &bytes::Bytes, stored: OffsetDateTime) {
        let mut envelope = match codec::decode_on(subject, payload) {
            Ok(event) => event.to_envelope(),
            Err(_) => return self.metrics.malformed(),
        };
        let node = match &mut envelope.body {
            Some(pb::envelope::Body::NodeLoadReported(r)) => {
                r.client_ip_sketch.clear();
                r.node.clone()
            }
            _ => return self.metrics.malformed(),
        };
        let payload = bytes::Bytes::from(prost::Message::encode_to_vec(&envelope));
        let record = Record::decode(0, stored, subject.to_owned(), payload);
        let Ok(line) = record.to_json_line() else {
            return self.metrics.malformed();
        };
        let text = Utf8Bytes::from(event_frame("load", &line));
        lock(&self.loads).insert(node, (Instant::now(), text.clone()));
        let _ = self.tx.send(Frame::Live(text));
    }

    /// A traffic sample from a node (core NATS).
    pub(crate) fn traffic(&self, subject: &str, payload: &bytes::Bytes) {
        let record = Record::decode(
            0,
            OffsetDateTime::now_utc(),
            subject.to_owned(),
            payload.clone(),
        );
        match (&record.event, record.to_json_line()) {
            (Ok(e), Ok(line)) if matches!(e.body(), Body::TrafficSampled(_)) => {
                let _ = self
                    .tx
                    .send(Frame::Live(event_frame("traffic", &line).into()));
            }
            _ => self.metrics.malformed(),
        }
    }
}

/// Follows the ring for as long as the bridge runs (module docs).
pub(crate) async fn run(hub: Arc<Hub>, js: jetstream::Context, synced: Condition) {
    let mut from_scratch = false;
    let mut last_break: Option<u64> = None;
    loop {
        if let Err(e) = hub.sync(&js, from_scratch).await {
            synced.set(false);
            tracing::warn!(ring = %hub.name, error = %e, "Cannot read the ring's snapshot; trying again.");
            tokio::time::sleep(RETRY).await;
            continue;
        }
        synced.set(true);
        let Stop::Broken(seq) = hub.follow(&js).await;
        hub.metrics.resynced_ring();
        if last_break == Some(seq) {
            if from_scratch {
                // It broke the ring from the start too: history that never fits.
                hub.skip(
                    seq,
                    "it does not continue the ring even from the stream's start",
                );
                from_scratch = false;
                last_break = None;
                continue;
            }
            from_scratch = true;
        } else {
            from_scratch = false;
        }
        last_break = Some(seq);
    }
}

/// Follows the nodes' load reports (the newest of each first, then every new one).
pub(crate) async fn loads(hub: Arc<Hub>, js: jetstream::Context, open: Condition) {
    loop {
        if let Err(e) = read_loads(&hub, &js, &open).await {
            tracing::warn!(ring = %hub.name, error = %e, "The load consumer failed; opening it again.");
        }
        open.set(false);
        tokio::time::sleep(RETRY).await;
    }
}

async fn read_loads(
    hub: &Hub,
    js: &jetstream::Context,
    open: &Condition,
) -> Result<(), async_nats::Error> {
    let stream = js.get_stream(subject::STREAM_LOAD).await?;
    let config = consumer::pull::OrderedConfig {
        filter_subjects: vec![subject::load_any(&hub.name)],
        deliver_policy: consumer::DeliverPolicy::LastPerSubject,
        ..Default::default()
    };
    let mut messages = stream.create_consumer(config).await?.messages().await?;
    open.set(true);
    while let Some(message) = messages.next().await {
        let message = message?;
        let stored = message
            .info()
            .map_or_else(|_| OffsetDateTime::now_utc(), |i| i.published);
        hub.load(&message.subject, &message.payload, stored);
    }
    Err("the consumer ended".into())
}

/// Relays the nodes' traffic samples (core NATS, not stored).
pub(crate) async fn traffic(hub: Arc<Hub>, nats: async_nats::Client) {
    loop {
        match nats.subscribe(subject::traffic(&hub.name)).await {
            Ok(mut sub) => {
                while let Some(m) = sub.next().await {
                    hub.traffic(&m.subject, &m.payload);
                }
            }
            Err(e) => tracing::warn!(error = %e, "Cannot subscribe to the traffic samples."),
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// The newest stored message of `subject` as an event line, if there is one.
async fn last_line(stream: &jetstream::stream::Stream, subject: &str) -> Option<Arc<str>> {
    let m = stream.direct_get_last_for_subject(subject).await.ok()?;
    let record = Record::decode(m.sequence, m.time, m.subject.to_string(), m.payload);
    record.event.as_ref().ok()?;
    record.to_json_line().ok().map(Into::into)
}

/// An event line (`{"seq":..}`) as a frame of `kind` (`{"type":"event","seq":..}`).
fn event_frame(kind: &str, line: &str) -> String {
    format!(
        "{{\"type\":\"{kind}\",{}",
        line.strip_prefix('{').unwrap_or(line)
    )
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
