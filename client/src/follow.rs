//! [`Follower`]: the loop that keeps the ring, the only writer of the shared state.
//!
//! # Sync
//! 1. Read the newest snapshot (`<ring>.latest` in `RINGSIDE_SNAPSHOTS`). Use it only
//!    if it decodes, is this ring's, rebuilds a ring with its checksum, and is anchored:
//!    the stream holds its epoch's `RingRebalanced`, with its checksum, at its
//!    rebalance sequence (a snapshot left over from another history would otherwise
//!    stop every epoch after it). Without a usable snapshot, start before epoch 1 at
//!    sequence 0.
//! 2. Read the rebalance subject from the next sequence with an ephemeral consumer
//!    (no acks, memory storage), applying each message to the [`Chain`]; the ring
//!    readers see stays the one they had.
//! 3. Once the consumer has nothing pending, the sync is done: the ring is installed
//!    and announced as [`Change::Synced`](crate::Change::Synced) with its reason.
//!
//! # Live
//! Each epoch applied is installed and announced as a rebalance. A stored message that
//! is not an epoch of this ring is counted, logged and skipped. An epoch further on
//! than the next is a gap if the stream holds a message of the subject between the
//! position and it (then re-sync), else a message out of turn (skipped). The next epoch
//! that does not fit the ring re-syncs. A message that stops the chain again, at the
//! same ring, after the re-sync it caused, is stored history that will never fit: it
//! is skipped, so a bad message cannot make the follower re-sync forever.
//!
//! # Consumers
//! The consumer is the follower's own ordered consumer: it checks that consumer
//! sequences follow each other, and when they do not, or its stream fails (missed
//! heartbeats after a server restart, consumer deleted, a failed pull) or ends, it is
//! replaced by a new one from the chain's position. The position, not the consumer,
//! says where to resume, so a reset neither skips nor repeats anything, and the chain's
//! checks would catch it if it did: a reset is counted and logged, not a re-sync.
//! Failed NATS operations are counted, logged (WARN, ERROR once the backoff is at its
//! longest) and retried with backoff; the readers keep the last ring meanwhile.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use futures::StreamExt;
use ringside_events::{Body, codec, error_chain, subject};

use crate::chain::{Broken, Chain, NotAnEpoch, Step};
use crate::client::{ClientConfig, Shared, SyncReason, Update};
use crate::error::ClientError;
use crate::stats::Count;

/// First pause after a failure; doubled after each failure in a row.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest pause between retries.
const RETRY_LONGEST: Duration = Duration::from_secs(5);
/// The server's idle heartbeat on a pull: a consumer lost with a server restart is
/// noticed within two of these.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Lifetime of one pull request.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
/// Messages per pull request.
const PULL_BATCH: usize = 256;
/// The server removes a consumer nobody pulled from for this long (a follower that
/// went away without deleting it).
const CONSUMER_INACTIVE: Duration = Duration::from_secs(30);
/// How long a stopping follower waits to delete its consumer.
const DELETE_WAIT: Duration = Duration::from_secs(2);

/// Pauses between retries: doubling from [`RETRY_FIRST`] to [`RETRY_LONGEST`].
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: RETRY_FIRST }
    }
}

impl Backoff {
    fn reset(&mut self) {
        self.next = RETRY_FIRST;
    }

    /// Whether the failures have gone on long enough to reach the longest pause.
    fn persistent(&self) -> bool {
        self.next >= RETRY_LONGEST
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(RETRY_LONGEST);
    }
}

/// A message that stopped the chain, and the ring it stopped at. The chain is
/// deterministic, so meeting the same message at the same ring again (after the
/// re-sync it caused) means it will never fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct StoppedAt {
    sequence: u64,
    epoch: u64,
    checksum: Option<u64>,
}

impl StoppedAt {
    fn of(chain: &Chain, sequence: u64) -> StoppedAt {
        StoppedAt {
            sequence,
            epoch: chain.view().epoch(),
            checksum: chain.view().checksum(),
        }
    }
}

/// What the stream says about an epoch further on than the next.
enum Ahead {
    /// Nothing is stored on the subject between the position and it.
    OutOfTurn,
    /// The stream holds a message of the subject the consumer did not deliver.
    Gap(u64),
    /// The check failed or answered something it cannot (logged).
    Unknown,
}

/// Why a session of the follower ended (a re-sync), and the position it reached: a
/// re-sync that got no further than the one before waits before the next.
struct Resync {
    reason: SyncReason,
    position: u64,
}

/// The half of a ring client that follows the stream; see the module docs. Made by
/// [`crate::follow`]; run it with [`Follower::run`].
#[derive(Debug)]
pub struct Follower {
    nats: async_nats::Client,
    config: ClientConfig,
    shared: Arc<Shared>,
    /// The consumer in use, to delete when stopping.
    consumer: std::sync::Mutex<Option<String>>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        // Whether it ran to a shutdown, was dropped mid-run or never ran, readers
        // waiting for readiness and subscriptions must hear of it.
        self.shared.stop();
    }
}

impl Follower {
    pub(crate) fn new(nats: async_nats::Client, config: ClientConfig, shared: Arc<Shared>) -> Self {
        Follower {
            nats,
            config,
            shared,
            consumer: std::sync::Mutex::new(None),
        }
    }

    /// Follows the ring until `shutdown` completes, then deletes its consumer and
    /// returns. NATS failures never end it (they are retried); readers keep the last
    /// ring meanwhile. When it returns, [`crate::Subscription`]s end after their
    /// last change.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let js = jetstream::new(self.nats.clone());
        tokio::select! {
            () = shutdown => {}
            () = self.follow(&js) => {}
        }
        let name = self
            .consumer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(name) = name {
            let deleted = tokio::time::timeout(
                DELETE_WAIT,
                js.delete_consumer_from_stream(&name, subject::STREAM_EVENTS),
            )
            .await;
            // The server removes it anyway once inactive; this only saves the wait.
            if !matches!(deleted, Ok(Ok(_))) {
                tracing::debug!(consumer = %name, "Could not delete the consumer; the server removes it once inactive.");
            }
        }
        tracing::info!(ring = %self.config.ring, "Ring follower stopped.");
    }

    async fn follow(&self, js: &jetstream::Context) {
        let mut reason = SyncReason::Start;
        let mut failures = Backoff::default();
        let mut resyncs = Backoff::default();
        let mut furthest = 0;
        // Every message that stopped the chain (a handful at most): each causes one
        // re-sync, and is skipped when met again at the same ring. One remembered
        // message would not do: with a snapshot older than two of them, each re-sync
        // would forget the other and re-sync again, forever.
        let mut stopped = BTreeSet::new();
        loop {
            let (stream, chain) = match self.start(js).await {
                Ok(started) => started,
                Err(e) => {
                    self.failed(&e, &mut failures).await;
                    continue;
                }
            };
            failures.reset();
            let resync = self.consume(&stream, chain, reason, &mut stopped).await;
            self.shared.counters.add(Count::Resynced);
            reason = resync.reason;
            if resync.position > furthest {
                furthest = resync.position;
                resyncs.reset();
            } else {
                // Re-syncing again and again without getting any further (a stream
                // that keeps leaving the same gap): do it slowly.
                resyncs.wait().await;
            }
        }
    }

    /// Counts and logs a failed NATS operation, then waits before the retry.
    async fn failed(&self, error: &ClientError, backoff: &mut Backoff) {
        self.shared.counters.add(Count::NatsError);
        let error = error_chain(error);
        if backoff.persistent() {
            tracing::error!(ring = %self.config.ring, %error, "Following the ring keeps failing; retrying. Check that NATS is reachable and that this user may read the RINGSIDE stream and the RINGSIDE_SNAPSHOTS bucket (docs/nats.md).");
        } else {
            tracing::warn!(ring = %self.config.ring, %error, "Following the ring failed; retrying.");
        }
        backoff.wait().await;
    }

    /// Step 1 of a sync: the stream, and the chain at the newest usable snapshot.
    async fn start(&self, js: &jetstream::Context) -> Result<(stream::Stream, Chain), ClientError> {
        let stream = js
            .get_stream(subject::STREAM_EVENTS)
            .await
            .map_err(|source| ClientError::Stream {
                stream: subject::STREAM_EVENTS,
                source,
            })?;
        let kv = js
            .get_key_value(subject::KV_SNAPSHOTS)
            .await
            .map_err(|source| ClientError::Bucket {
                bucket: subject::KV_SNAPSHOTS,
                source,
            })?;
        let key = subject::latest_snapshot_key(&self.config.ring);
        let entry = kv
            .entry(key.as_str())
            .await
            .map_err(|source| ClientError::Snapshot {
                key: key.clone(),
                source,
            })?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok((stream, Chain::empty(self.config.ring.clone())));
        };
        let chain = match codec::decode_snapshot(&entry.value) {
            Ok(s) if s.ring != self.config.ring.as_str() => {
                self.rejected(&key, &format!("it holds the snapshot of ring {:?}", s.ring));
                None
            }
            Ok(s) => match Chain::from_snapshot(self.config.ring.clone(), &s) {
                Ok(chain) => self.anchored(&stream, chain, &key).await?,
                Err(e) => {
                    self.rejected(&key, &error_chain(&e));
                    None
                }
            },
            Err(e) => {
                self.rejected(&key, &error_chain(&e));
                None
            }
        };
        let chain = chain.unwrap_or_else(|| Chain::empty(self.config.ring.clone()));
        Ok((stream, chain))
    }

    /// `chain` (at a snapshot) if the stream holds the snapshot's epoch, with its
    /// checksum, at the snapshot's rebalance sequence.
    async fn anchored(
        &self,
        stream: &stream::Stream,
        chain: Chain,
        key: &str,
    ) -> Result<Option<Chain>, ClientError> {
        let (epoch, sequence) = (chain.view().epoch(), chain.position());
        if epoch == 0 && sequence == 0 {
            // The ring before any epoch: nothing stored to anchor it to.
            return Ok(Some(chain));
        }
        let stored = match stream.direct_get(sequence).await {
            Ok(stored) => stored,
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => {
                self.rejected(
                    key,
                    &format!("the stream holds no message at its rebalance sequence {sequence}"),
                );
                return Ok(None);
            }
            Err(source) => return Err(ClientError::Read { sequence, source }),
        };
        let fits = match codec::decode_on(chain.subject(), &stored.payload).map(|e| e.into_body()) {
            Ok(Body::RingRebalanced(r)) => {
                r.epoch == epoch && Some(r.checksum) == chain.view().checksum()
            }
            _ => false,
        };
        if !fits {
            self.rejected(key, &format!("the message at its rebalance sequence {sequence} is not its epoch {epoch} with its checksum"));
            return Ok(None);
        }
        Ok(Some(chain))
    }

    fn rejected(&self, key: &str, why: &str) {
        self.shared.counters.add(Count::SnapshotRejected);
        tracing::warn!(ring = %self.config.ring, %key, reason = why, "Not using the ring's snapshot; following the ring from its first epoch instead.");
    }

    /// A new consumer of the rebalance subject from `start`, and how many messages it
    /// has pending.
    async fn open(
        &self,
        stream: &stream::Stream,
        chain: &Chain,
    ) -> Result<(consumer::pull::Stream, u64), ClientError> {
        let start = chain.position().saturating_add(1);
        let description = match &self.config.label {
            Some(who) => format!("ringside client of ring {} ({who})", self.config.ring),
            None => format!("ringside client of ring {}", self.config.ring),
        };
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                description: Some(description),
                filter_subject: chain.subject().to_owned(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: CONSUMER_INACTIVE,
                num_replicas: 1,
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|source| ClientError::Consumer { start, source })?;
        let pending = consumer.cached_info().num_pending;
        let name = consumer.cached_info().name.clone();
        let previous = self
            .consumer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(name);
        if let Some(previous) = previous {
            // Best effort: a consumer that failed may be gone already; the server
            // removes it once inactive otherwise.
            let _ = stream.delete_consumer(&previous).await;
        }
        let messages = consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH)
            .expires(PULL_EXPIRES)
            .heartbeat(HEARTBEAT)
            .messages()
            .await
            .map_err(|source| ClientError::Messages { start, source })?;
        Ok((messages, pending))
    }

    /// Steps 2 and 3 of a sync, then live, until a re-sync is due.
    async fn consume(
        &self,
        stream: &stream::Stream,
        mut chain: Chain,
        reason: SyncReason,
        stopped: &mut BTreeSet<StoppedAt>,
    ) -> Resync {
        let mut syncing = Some(reason);
        let mut backoff = Backoff::default();
        loop {
            let (mut messages, pending) = match self.open(stream, &chain).await {
                Ok(opened) => opened,
                Err(e) => {
                    self.failed(&e, &mut backoff).await;
                    continue;
                }
            };
            if pending == 0
                && let Some(reason) = syncing.take()
            {
                self.synced(&chain, reason);
            }
            let mut due = 1;
            let failure: Box<dyn std::error::Error + Send + Sync> = loop {
                let message = match messages.next().await {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => break Box::new(e),
                    None => break "the message stream ended".into(),
                };
                let (sequence, consumer_sequence, pending) = match message.info() {
                    Ok(info) => (info.stream_sequence, info.consumer_sequence, info.pending),
                    Err(e) => break e,
                };
                // A consumer the server recreated, or a delivery lost on the way,
                // shows as a jump: start again from our own position.
                if consumer_sequence != due {
                    break format!(
                        "consumer sequence {consumer_sequence} arrived where {due} was due"
                    )
                    .into();
                }
                due += 1;
                backoff.reset();
                match chain.offer(sequence, &message.payload) {
                    Step::Applied(rebalance) => {
                        self.shared.counters.add(Count::Applied);
                        if syncing.is_none() {
                            let view = Arc::clone(chain.view());
                            self.shared.publish(view, Update::Rebalanced(rebalance));
                        }
                    }
                    Step::Redelivered => {
                        self.shared.counters.add(Count::Redelivered);
                        tracing::debug!(sequence, "Dropping a rebalance message delivered again.");
                    }
                    Step::Skipped(why) => self.skipped(sequence, &why),
                    Step::Ahead { expected, got } => {
                        let at = expected - 1;
                        let out_of_turn = NotAnEpoch::OutOfTurn { got, at };
                        match self.ahead(stream, &chain, sequence).await {
                            Ahead::OutOfTurn => {
                                chain.skip(sequence);
                                self.skipped(sequence, &out_of_turn);
                            }
                            Ahead::Gap(missed) => {
                                tracing::warn!(ring = %self.config.ring, sequence, epoch = got, expected, missed, "Epochs are missing from what the stream delivered; re-syncing the ring from the newest snapshot.");
                                return Resync {
                                    reason: SyncReason::Gap,
                                    position: chain.position(),
                                };
                            }
                            Ahead::Unknown => {
                                if stopped.insert(StoppedAt::of(&chain, sequence)) {
                                    tracing::warn!(ring = %self.config.ring, sequence, epoch = got, expected, "An epoch further on than the next arrived; re-syncing the ring from the newest snapshot.");
                                    return Resync {
                                        reason: SyncReason::Gap,
                                        position: chain.position(),
                                    };
                                }
                                chain.skip(sequence);
                                self.skipped(sequence, &out_of_turn);
                            }
                        }
                    }
                    Step::Broken(broken) => {
                        if stopped.insert(StoppedAt::of(&chain, sequence)) {
                            self.broken(sequence, &broken);
                            return Resync {
                                reason: SyncReason::Mismatch,
                                position: chain.position(),
                            };
                        }
                        chain.skip(sequence);
                        self.skipped(sequence, &NotAnEpoch::StillBroken(broken));
                    }
                }
                if pending == 0
                    && let Some(reason) = syncing.take()
                {
                    self.synced(&chain, reason);
                }
            };
            let error = ClientError::Consume {
                position: chain.position(),
                source: failure,
            };
            self.shared.counters.add(Count::ConsumerReset);
            self.failed(&error, &mut backoff).await;
        }
    }

    /// Whether an epoch further on than the next, at `sequence`, follows a gap: the
    /// first message of the subject after the position is it, or one before it.
    async fn ahead(&self, stream: &stream::Stream, chain: &Chain, sequence: u64) -> Ahead {
        let from = chain.position().saturating_add(1);
        match stream
            .direct_get_next_for_subject(chain.subject(), Some(from))
            .await
        {
            Ok(next) if next.sequence == sequence => Ahead::OutOfTurn,
            Ok(next) if next.sequence < sequence => Ahead::Gap(next.sequence),
            Ok(next) => {
                tracing::warn!(
                    sequence,
                    next = next.sequence,
                    "The stream's first message after the position lies past the one delivered; cannot tell a gap from a message out of turn."
                );
                Ahead::Unknown
            }
            Err(source) => {
                self.shared.counters.add(Count::NatsError);
                let error = ClientError::Read {
                    sequence: from,
                    source,
                };
                tracing::warn!(error = %error_chain(&error), "Cannot tell a gap from a message out of turn.");
                Ahead::Unknown
            }
        }
    }

    fn skipped(&self, sequence: u64, why: &NotAnEpoch) {
        self.shared.counters.add(Count::Skipped);
        tracing::warn!(ring = %self.config.ring, sequence, reason = %error_chain(why), "Skipping a stored message of the rebalance subject that is not an epoch of this ring (see docs/client.md).");
    }

    fn broken(&self, sequence: u64, why: &Broken) {
        tracing::warn!(ring = %self.config.ring, sequence, reason = %error_chain(why), "The next epoch does not fit this ring; re-syncing the ring from the newest snapshot.");
    }

    /// A sync is done: install the ring and announce it.
    fn synced(&self, chain: &Chain, reason: SyncReason) {
        self.shared.counters.add(Count::Synced);
        let view = Arc::clone(chain.view());
        tracing::info!(
            ring = %self.config.ring,
            epoch = view.epoch(),
            sequence = view.sequence(),
            members = view.len(),
            ?reason,
            "Ring synced."
        );
        self.shared
            .publish(Arc::clone(&view), Update::Synced(view, reason));
    }
}
