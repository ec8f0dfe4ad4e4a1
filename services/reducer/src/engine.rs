//! The fold loop: start position, catch-up, the single-writer publish, conflicts,
//! readiness and snapshots. The only writer of the ledger and of the served view.
//!
//! # Start
//! 1. Load the newest snapshot ([`SnapshotStore::load_newest`]) into a [`RingLedger`],
//!    or start an empty one from the configured ring configuration.
//! 2. Read the last stored `RingRebalanced` of the ring (the head): its epoch says how
//!    far the stored history goes.
//! 3. Fold the membership subject from `membership_sequence + 1` through this
//!    instance's own durable consumer. Epochs up to the head's exist already: the
//!    membership events before the head's are folded without building their events,
//!    in a run nobody reads ([`CatchUp`]), and the head's event is built and compared
//!    with the stored head, which pins the epoch count, the membership sequence and
//!    (through its checksum) the whole ring; a difference is a divergence (a
//!    determinism bug) and stops the reducer. Until then the ledger is the one the
//!    reducer started from. Reading back and comparing every stored epoch is
//!    `ringside replay verify`'s job: a cold start must not download the whole
//!    history of rebalance events (about 10 KB each).
//! 4. Past the head, each new epoch is published with
//!    `Nats-Expected-Last-Subject-Sequence` = the previous epoch's sequence. On a
//!    conflict another reducer stored that epoch first: its event is read, compared with
//!    ours and adopted.
//!
//! A membership message is acknowledged only after its epoch is stored (or found
//! stored), and never negatively: a nak would let later messages overtake it, so
//! transient failures are retried in place, in order.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use ringside_events::consume::{BoxError, ConsumeError, Inbound, Settle, Stopped};
use ringside_events::publish::PublishError;
use ringside_events::{
    Body, CatchUp, Consumer, Delivery, Event, HandleError, Handler, Outcome, Publisher, RingLedger,
    codec, pb, subject,
};
use tokio::sync::watch;

use crate::config::ReducerConfig;
use crate::metrics::{self, FoldOutcome, StoredHow};
use crate::snapshots::SnapshotSlot;
use crate::state::{Shared, View};
use crate::{ReducerError, error_chain};

/// A durable consumer nobody pulls from for this long is removed by the server
/// (an instance that went away for good).
const CONSUMER_INACTIVE: Duration = Duration::from_secs(60 * 60);
/// Redelivery after this long without an ack; harmless (the fold recognises
/// redeliveries), so generous: a publish can retry for about 20 s.
const ACK_WAIT: Duration = Duration::from_secs(60);
/// Messages per pull request.
const PULL_BATCH: usize = 1000;
/// During catch-up, acknowledge every this many membership messages (acks are
/// cumulative, `AckPolicy::All`); live, each message is acknowledged when done.
const ACK_EVERY: u64 = 256;
/// Delivered but unacknowledged messages the server allows: room for a pull batch and
/// the messages an ack covers.
const MAX_ACK_PENDING: i64 = 10_000;
/// Pause before trying again a publish the publisher gave up on.
const REPUBLISH_PAUSE: Duration = Duration::from_secs(2);
/// Pause before recreating a consumer whose message stream ended.
const RECONSUME_PAUSE: Duration = Duration::from_secs(1);
/// Attempts to read the stored event that won a conflict.
const CONFLICT_READS: u32 = 20;

/// A membership message whose acknowledgement may be left to a later one.
///
/// Acks are cumulative (`AckPolicy::All`): acknowledging a message acknowledges every
/// earlier one, which the reducer has handled too (it handles them in order). Each
/// ack is still sent only after the message's epoch is stored.
struct Membership {
    message: jetstream::Message,
    /// Acknowledge this one when done (the last of a catch-up stretch, or live).
    ack: bool,
}

impl Inbound for Membership {
    fn message(&self) -> &async_nats::Message {
        Inbound::message(&self.message)
    }

    fn position(&self) -> Option<(String, u64, u64)> {
        self.message.position()
    }

    fn settle(&self, how: Settle) -> impl Future<Output = Result<(), async_nats::Error>> + Send {
        let skip = how == Settle::Ack && !self.ack;
        async move {
            if skip {
                Ok(())
            } else {
                self.message.settle(how).await
            }
        }
    }
}

/// The stored rebalance event of one epoch.
#[derive(Debug)]
pub(crate) struct StoredRebalance {
    pub(crate) sequence: u64,
    pub(crate) event: pb::RingRebalanced,
}

/// Decodes a stored message of the rebalance subject: a `RingRebalanced` of this ring
/// ([`codec::decode_on`] refuses other rings and kinds), or why it is not one.
fn decode_rebalance(
    subject: &str,
    sequence: u64,
    payload: &[u8],
) -> Result<StoredRebalance, ReducerError> {
    let event = codec::decode_on(subject, payload)
        .map_err(|source| ReducerError::StoredUnreadable { sequence, source })?;
    match event.into_body() {
        Body::RingRebalanced(event) => Ok(StoredRebalance { sequence, event }),
        other => Err(ReducerError::StoredNotRebalance {
            sequence,
            kind: ringside_events::EventKind::of(&other),
        }),
    }
}

/// Counts and logs a stored message of the rebalance subject that is not an epoch of
/// this ring: it is skipped (`replay verify` reports it too), never fatal.
fn skipped(metrics: &metrics::Metrics, why: &ReducerError) {
    metrics.invalid_stored();
    tracing::warn!(reason = %error_chain(why), "Skipping a stored message of the rebalance subject that is not an epoch of this ring (see docs/reducer.md, \"Invalid messages on the rebalance subject\").");
}

/// The first stored message on `subject` after sequence `after`, if any.
async fn next_on_subject(
    stream: &stream::Stream,
    subject: &str,
    after: u64,
) -> Result<Option<(u64, bytes::Bytes)>, stream::LastRawMessageError> {
    match stream
        .raw_message_builder()
        .sequence(after + 1)
        .next_by_subject(subject.to_owned())
        .send()
        .await
    {
        Ok(m) => Ok(Some((m.sequence, m.payload))),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The last stored rebalance event of the ring (the head), skipping messages of the
/// subject that are not one. The last message is read first; only if it is not an
/// epoch are the messages from `known` on (the snapshot's rebalance sequence, a valid
/// one; 0 without a snapshot) read forward to find the last that is.
async fn find_head(
    stream: &stream::Stream,
    subject: &str,
    known: u64,
    metrics: &metrics::Metrics,
) -> Result<Option<StoredRebalance>, ReducerError> {
    let last = match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => m,
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => return Ok(None),
        Err(e) => return Err(ReducerError::Head(e)),
    };
    let why = match decode_rebalance(subject, last.sequence, &last.payload) {
        Ok(head) => return Ok(Some(head)),
        Err(why) => why,
    };
    skipped(metrics, &why);
    let mut head = None;
    // From the known one itself: it may be the head.
    let mut at = known.saturating_sub(1);
    while at < last.sequence {
        let Some((sequence, payload)) = next_on_subject(stream, subject, at)
            .await
            .map_err(ReducerError::Scan)?
        else {
            break;
        };
        if sequence >= last.sequence {
            break;
        }
        match decode_rebalance(subject, sequence, &payload) {
            Ok(stored) => head = Some(stored),
            Err(why) => skipped(metrics, &why),
        }
        at = sequence;
    }
    Ok(head)
}

/// What follows the expected last sequence after a single-writer conflict.
enum AfterConflict {
    /// The epoch, stored by another reducer.
    Stored(Box<StoredRebalance>),
    /// No stored event of the epoch, only messages that are not one: publish again,
    /// expecting this last sequence of the subject.
    Expect(u64),
}

/// Compares our epoch with the stored one; anything but equality is a divergence.
fn check_same(
    metrics: &metrics::Metrics,
    ours: &pb::RingRebalanced,
    stored: &StoredRebalance,
) -> Result<(), ReducerError> {
    if *ours == stored.event {
        return Ok(());
    }
    Err(diverged(
        metrics,
        ours.epoch,
        stored.sequence,
        format!(
            "stored epoch {} from membership sequence {} with checksum {:#018x}; this fold made epoch {} from membership sequence {} with checksum {:#018x}",
            stored.event.epoch,
            stored.event.membership_sequence,
            stored.event.checksum,
            ours.epoch,
            ours.membership_sequence,
            ours.checksum,
        ),
    ))
}

/// Counts and logs a divergence (a determinism bug: the reducer stops) and returns its
/// error.
fn diverged(
    metrics: &metrics::Metrics,
    epoch: u64,
    stored_sequence: u64,
    detail: String,
) -> ReducerError {
    metrics.divergence();
    let err = ReducerError::Divergence {
        epoch,
        stored_sequence,
        detail,
    };
    tracing::error!(error = %err, "The stored ring history differs from this fold: a determinism bug. Stopping; see docs/reducer.md (divergence).");
    err
}

/// Counts and logs a membership event the fold rejected.
fn rejected(
    m: &metrics::Metrics,
    sequence: u64,
    err: &ringside_events::FoldError,
    delivery: &Delivery,
) {
    m.folded(FoldOutcome::Rejected);
    tracing::warn!(sequence, error = %error_chain(err), summary = %delivery.event.summary(), "Membership event rejected by the fold; skipping it (every fold skips it alike).");
}

/// Why a membership event could not be handled; the consume loop stops on it.
#[derive(Debug, thiserror::Error)]
#[error("reducer stopped while handling a membership event")]
struct HandlerStop(#[source] ReducerError);

/// A reducer catching up with the epochs stored before its start.
struct CatchingUp {
    /// The fold of the membership events before the head's, whose epochs are stored.
    fold: CatchUp,
    /// The last stored rebalance event when the reducer started.
    head: StoredRebalance,
}

impl CatchingUp {
    /// Catch-up before the stored head: every epoch made here is stored already, so
    /// the fold only advances (see the module docs: the head checks them all).
    fn replay(
        &mut self,
        m: &metrics::Metrics,
        sequence: u64,
        delivery: &Delivery,
    ) -> Result<(), ReducerError> {
        let outcome = m
            .fold
            .time(|| self.fold.advance(sequence, delivery.event.body()));
        match outcome {
            Outcome::AlreadyFolded => m.folded(FoldOutcome::AlreadyFolded),
            Outcome::Unchanged => m.folded(FoldOutcome::Unchanged),
            Outcome::Rejected(err) => rejected(m, sequence, &err, delivery),
            Outcome::Rebalanced(()) => {
                m.folded(FoldOutcome::Rebalanced);
                m.stored(StoredHow::Replayed);
                let head = &self.head;
                if self.fold.epoch() >= head.event.epoch {
                    return Err(diverged(
                        m,
                        head.event.epoch,
                        head.sequence,
                        format!(
                            "the stored history made epoch {} from membership sequence {}; this fold made it already from sequence {sequence}",
                            head.event.epoch, head.event.membership_sequence
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The fold loop's state.
pub(crate) struct Engine {
    config: Arc<ReducerConfig>,
    /// The ledger; while catching up, the one the catch-up started from.
    ledger: RingLedger,
    publisher: Publisher,
    stream: stream::Stream,
    rebalance_subject: String,
    /// While catching up: the fold of the epochs stored already, which becomes the
    /// ledger when it reaches the last stored rebalance event of the reducer's start
    /// (and must match it) before anything is published.
    catch_up: Option<CatchingUp>,
    shared: Arc<Shared>,
    caught_up: ringside_kit::Condition,
    snapshots: Arc<SnapshotSlot>,
    /// Position (epoch, membership sequence) of the newest snapshot written or loaded.
    snapshot_at: (u64, u64),
    /// The consumer's pending count after the message being handled.
    pending: Arc<AtomicU64>,
    stop: watch::Receiver<bool>,
    ready: bool,
}

impl Engine {
    /// Loads the start state: snapshot, head, catch-up reader.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start(
        config: Arc<ReducerConfig>,
        publisher: Publisher,
        stream: stream::Stream,
        loaded: Option<crate::snapshots::Loaded>,
        shared: Arc<Shared>,
        caught_up: ringside_kit::Condition,
        snapshots: Arc<SnapshotSlot>,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, ReducerError> {
        let m = &shared.metrics;
        let (ledger, snapshot_at) = match loaded {
            Some(loaded) => {
                let s = &loaded.snapshot;
                let ledger =
                    RingLedger::from_snapshot(s).map_err(|source| ReducerError::BadSnapshot {
                        key: loaded.key.clone(),
                        source,
                    })?;
                if let Some(taken) = &s.taken_at {
                    let ms = u64::try_from(taken.seconds)
                        .unwrap_or(0)
                        .saturating_mul(1000)
                        .saturating_add(u64::try_from(taken.nanos).unwrap_or(0) / 1_000_000);
                    metrics::set(&m.snapshot_taken_ms, ms);
                }
                tracing::info!(key = %loaded.key, epoch = s.epoch, membership_sequence = s.membership_sequence, rebalance_sequence = s.rebalance_sequence, "Loaded snapshot.");
                (ledger, (s.epoch, s.membership_sequence))
            }
            None => {
                tracing::info!(ring = %config.ring, "No snapshot; folding from the first membership event.");
                (
                    RingLedger::new(config.ring.clone(), config.ring_config),
                    (0, 0),
                )
            }
        };
        let configured = pb::RingConfig::from(config.ring_config);
        let have = pb::RingConfig::from(*ledger.ring().config());
        if have != configured {
            return Err(ReducerError::ConfigMismatch {
                stored: format!("{have:?} (snapshot)"),
                configured: format!("{configured:?}"),
            });
        }
        let rebalance_subject = subject::rebalance(&config.ring);
        let head = find_head(&stream, &rebalance_subject, ledger.rebalance_sequence(), m).await?;
        let head_epoch = head.as_ref().map_or(0, |h| h.event.epoch);
        if let Some(h) = &head
            && h.event.config.as_ref() != Some(&configured)
        {
            return Err(ReducerError::ConfigMismatch {
                stored: format!(
                    "{:?} (rebalance event at sequence {})",
                    h.event.config, h.sequence
                ),
                configured: format!("{configured:?}"),
            });
        }
        if head_epoch < ledger.epoch() {
            return Err(ReducerError::SnapshotAhead {
                snapshot_epoch: ledger.epoch(),
                stored_epoch: head_epoch,
            });
        }
        if let Some(h) = head.as_ref().filter(|h| h.event.epoch == ledger.epoch())
            && (h.event.checksum != ledger.checksum() || h.sequence != ledger.rebalance_sequence())
        {
            return Err(diverged(
                m,
                h.event.epoch,
                h.sequence,
                format!(
                    "the snapshot (checksum {:#018x}, rebalance sequence {}) does not match the stored event (checksum {:#018x})",
                    ledger.checksum(),
                    ledger.rebalance_sequence(),
                    h.event.checksum
                ),
            ));
        }
        let catch_up = head
            .filter(|h| h.event.epoch > ledger.epoch())
            .map(|head| CatchingUp {
                fold: ledger.clone().catch_up(),
                head,
            });
        metrics::set(&m.start_sequence, ledger.membership_sequence() + 1);
        metrics::set(&m.start_epoch, ledger.epoch());
        tracing::info!(
            ring = %config.ring,
            start_sequence = ledger.membership_sequence() + 1,
            epoch = ledger.epoch(),
            stored_epoch = head_epoch,
            "Starting the fold."
        );
        let engine = Self {
            config,
            ledger,
            publisher,
            stream,
            rebalance_subject,
            catch_up,
            shared,
            caught_up,
            snapshots,
            snapshot_at,
            pending: Arc::new(AtomicU64::new(0)),
            stop,
            ready: false,
        };
        engine.record_position();
        Ok(engine)
    }

    /// Where the fold is, as (epoch, membership sequence): the catch-up's while
    /// catching up.
    fn folded(&self) -> (u64, u64) {
        match &self.catch_up {
            Some(c) => (c.fold.epoch(), c.fold.membership_sequence()),
            None => (self.ledger.epoch(), self.ledger.membership_sequence()),
        }
    }

    fn record_position(&self) {
        let m = &self.shared.metrics;
        let (epoch, membership_sequence) = self.folded();
        metrics::set(&m.epoch, epoch);
        metrics::set(&m.membership_sequence, membership_sequence);
        metrics::set(&m.rebalance_sequence, self.ledger.rebalance_sequence());
    }

    /// Folds the membership subject until `stop` turns true; then writes the final
    /// snapshot (if the ledger is clean).
    pub(crate) async fn run(mut self, consumer: Consumer) -> Result<(), ReducerError> {
        let result = self.consume(&consumer).await;
        match result {
            Ok(()) => {
                self.final_snapshot();
                Ok(())
            }
            Err(ReducerError::Interrupted) => {
                // The event in hand was folded but its epoch not stored: the ledger is
                // ahead of the stream, so it must not become a snapshot.
                tracing::warn!(
                    "Stopped while an epoch was being stored; it is folded again at the next start."
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn consume(&mut self, consumer: &Consumer) -> Result<(), ReducerError> {
        let membership = subject::membership(&self.config.ring);
        let durable = self.config.durable_name();
        loop {
            let start = self.folded().1 + 1;
            match self.stream.delete_consumer(&durable).await {
                Ok(_) => {}
                Err(e)
                    if matches!(e.kind(), stream::ConsumerErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND) => {}
                Err(e) => return Err(ReducerError::Consumer(e)),
            }
            let pull = self
                .stream
                .create_consumer(consumer::pull::Config {
                    durable_name: Some(durable.clone()),
                    description: Some(format!(
                        "ringside reducer {} of ring {}",
                        self.config.instance, self.config.ring
                    )),
                    filter_subject: membership.clone(),
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: start,
                    },
                    ack_policy: consumer::AckPolicy::All,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: MAX_ACK_PENDING,
                    inactive_threshold: CONSUMER_INACTIVE,
                    ..Default::default()
                })
                .await
                .map_err(ReducerError::Consumer)?;
            let pending_at_start = pull.cached_info().num_pending;
            tracing::info!(consumer = %durable, start_sequence = start, pending = pending_at_start, "Consuming membership events.");
            metrics::set(&self.shared.metrics.lag, pending_at_start);
            self.pending.store(pending_at_start, Ordering::Relaxed);
            if pending_at_start == 0 && !self.ready {
                self.caught_up().await?;
            }
            let messages = pull
                .stream()
                .max_messages_per_batch(PULL_BATCH)
                .messages()
                .await
                .map_err(|e| ReducerError::Messages(Box::new(e)))?;
            let pending = Arc::clone(&self.pending);
            let messages = messages
                // A deleted consumer never comes back by itself: end the stream, and
                // the loop recreates it at the ledger's position.
                .take_while(|m| {
                    futures::future::ready(!matches!(m, Err(e)
                        if e.kind() == consumer::pull::MessagesErrorKind::ConsumerDeleted))
                })
                .map(move |m| {
                    m.map(|message| {
                        let ack = match message.info() {
                            Ok(info) => {
                                pending.store(info.pending, Ordering::Relaxed);
                                info.pending == 0 || info.consumer_sequence % ACK_EVERY == 0
                            }
                            Err(_) => true,
                        };
                        Membership { message, ack }
                    })
                });
            let stop = wait_for(self.stop.clone());
            match consumer.run(Box::pin(messages), &mut *self, stop).await {
                Ok(Stopped::Shutdown) => return Ok(()),
                Ok(Stopped::StreamEnded) => {
                    tracing::warn!(consumer = %durable, "Membership stream ended; recreating the consumer.");
                    tokio::select! {
                        () = wait_for(self.stop.clone()) => return Ok(()),
                        () = tokio::time::sleep(RECONSUME_PAUSE) => {}
                    }
                }
                Err(ConsumeError::Handler { source, .. }) => {
                    return Err(match source.downcast::<HandlerStop>() {
                        Ok(stop) => stop.0,
                        Err(other) => ReducerError::Messages(other),
                    });
                }
            }
        }
    }

    /// Handles one membership event: fold, store or check the epoch, serve it.
    async fn fold(&mut self, delivery: Delivery) -> Result<(), ReducerError> {
        let started = Instant::now();
        let sequence = delivery.stream_sequence.ok_or_else(|| {
            ReducerError::Messages("membership message without a stream sequence".into())
        })?;
        let m = Arc::clone(&self.shared.metrics);
        match &mut self.catch_up {
            Some(c) if sequence < c.head.event.membership_sequence => {
                c.replay(&m, sequence, &delivery)?;
            }
            _ => self.fold_new(sequence, &delivery).await?,
        }
        self.record_position();
        self.passed().await?;
        m.event.observe(started.elapsed());
        Ok(())
    }

    /// After each membership message, folded or skipped: the lag, and readiness once
    /// nothing is left to fold.
    async fn passed(&mut self) -> Result<(), ReducerError> {
        let pending = self.pending.load(Ordering::Relaxed);
        metrics::set(&self.shared.metrics.lag, pending);
        if pending == 0 && !self.ready {
            self.caught_up().await?;
        }
        Ok(())
    }

    /// Folds an event at or past the stored head: the head's epoch is checked against
    /// the stored one, later epochs are stored and served.
    async fn fold_new(&mut self, sequence: u64, delivery: &Delivery) -> Result<(), ReducerError> {
        // The head's event ends the catch-up: its fold becomes the ledger, checked
        // against the head below.
        let head = self.catch_up.take().map(|c| {
            self.ledger = c.fold.finish();
            c.head
        });
        let expected = self.ledger.rebalance_sequence();
        let m = Arc::clone(&self.shared.metrics);
        let outcome = m
            .fold
            .time(|| self.ledger.apply(sequence, delivery.event.body()));
        let made = match outcome {
            Outcome::AlreadyFolded => {
                m.folded(FoldOutcome::AlreadyFolded);
                None
            }
            Outcome::Unchanged => {
                m.folded(FoldOutcome::Unchanged);
                None
            }
            Outcome::Rejected(err) => {
                rejected(&m, sequence, &err, delivery);
                None
            }
            Outcome::Rebalanced(event) => {
                m.folded(FoldOutcome::Rebalanced);
                Some(*event)
            }
        };
        if let Some(head) = head {
            return self.check_head(sequence, made.as_ref(), &head);
        }
        let Some(event) = made else {
            return Ok(());
        };
        let (event, stored_sequence, how) = self.store(event, expected).await?;
        m.stored(how);
        self.ledger.record_rebalance_sequence(stored_sequence);
        tracing::debug!(
            epoch = event.epoch,
            sequence = stored_sequence,
            ?how,
            "Epoch stored."
        );
        let due = self
            .ledger
            .epoch()
            .is_multiple_of(self.config.snapshot_every);
        if self.ready || due {
            let view = Arc::new(View::of(&self.ledger));
            if self.ready {
                self.shared
                    .publish(Arc::clone(&view), Some((&event, stored_sequence)));
            }
            if due {
                self.snapshot(view);
            }
        }
        Ok(())
    }

    /// The end of catch-up: the fold has reached the stored head's membership sequence
    /// (or passed it) and made `made` from event `sequence`. It must be the head's event,
    /// field by field; then the ledger is where the stored history ends, and a snapshot
    /// keeps the next start short.
    fn check_head(
        &mut self,
        sequence: u64,
        made: Option<&pb::RingRebalanced>,
        head: &StoredRebalance,
    ) -> Result<(), ReducerError> {
        match made {
            Some(ours) if sequence == head.event.membership_sequence => {
                check_same(&self.shared.metrics, ours, head)?;
            }
            Some(ours) => {
                return Err(self.divergence(
                    head,
                    format!(
                        "the stored history made epoch {} from membership sequence {}, which this fold did not see; it made epoch {} from sequence {sequence}",
                        head.event.epoch, head.event.membership_sequence, ours.epoch
                    ),
                ));
            }
            None => {
                return Err(self.divergence(
                    head,
                    format!(
                        "the stored history made epoch {} from membership sequence {}; this fold made no epoch from sequence {sequence}",
                        head.event.epoch, head.event.membership_sequence
                    ),
                ));
            }
        }
        self.shared.metrics.stored(StoredHow::Verified);
        self.ledger.record_rebalance_sequence(head.sequence);
        tracing::info!(
            epoch = head.event.epoch,
            sequence = head.sequence,
            "Caught up with the stored ring history; it matches this fold."
        );
        if self.ledger.epoch() > self.snapshot_at.0 {
            self.snapshot(Arc::new(View::of(&self.ledger)));
        }
        Ok(())
    }

    /// A divergence from the stored head (see [`diverged`]).
    fn divergence(&self, head: &StoredRebalance, detail: String) -> ReducerError {
        diverged(
            &self.shared.metrics,
            head.event.epoch,
            head.sequence,
            detail,
        )
    }

    /// Gets `event` stored: published, or adopted when another reducer won. Gives the event back with
    /// its stream sequence.
    async fn store(
        &mut self,
        event: pb::RingRebalanced,
        mut expected: u64,
    ) -> Result<(pb::RingRebalanced, u64, StoredHow), ReducerError> {
        let epoch = event.epoch;
        let wire = Event::new(self.config.ring.clone(), event)?
            .with_producer(self.config.producer())
            .with_occurred_at(SystemTime::now());
        let (sequence, how) = loop {
            match self.publisher.publish_expecting(&wire, expected).await {
                Ok(stored) if stored.duplicate => break (stored.sequence, StoredHow::Duplicate),
                Ok(stored) => break (stored.sequence, StoredHow::Published),
                Err(PublishError::Conflict { actual, .. }) => {
                    self.shared.metrics.conflict();
                    tracing::info!(
                        epoch,
                        expected,
                        ?actual,
                        "The rebalance subject moved on since the last epoch; reading what was stored."
                    );
                    match self.stored_after(expected, epoch).await? {
                        AfterConflict::Stored(stored) => {
                            if let Body::RingRebalanced(ours) = wire.body() {
                                check_same(&self.shared.metrics, ours, &stored)?;
                            }
                            tracing::info!(
                                epoch,
                                sequence = stored.sequence,
                                "Another reducer stored this epoch first; it matches this fold, adopted."
                            );
                            break (stored.sequence, StoredHow::Adopted);
                        }
                        AfterConflict::Expect(last) => expected = last,
                    }
                }
                Err(err @ PublishError::GaveUp { .. }) => {
                    tracing::error!(epoch, error = %error_chain(&err), "Cannot store the epoch (NATS unreachable?); retrying. Later membership events wait.");
                    tokio::select! {
                        () = wait_for(self.stop.clone()) => return Err(ReducerError::Interrupted),
                        () = tokio::time::sleep(REPUBLISH_PAUSE) => {}
                    }
                }
                Err(err) => return Err(ReducerError::Publish(err)),
            }
        };
        match wire.into_body() {
            Body::RingRebalanced(event) => Ok((event, sequence, how)),
            // `wire` was built from a RingRebalanced just above.
            other => Err(ReducerError::StoredNotRebalance {
                sequence,
                kind: ringside_events::EventKind::of(&other),
            }),
        }
    }

    /// Reads the rebalance subject after sequence `after` (read from the stream leader,
    /// so never stale): the stored event of `epoch`, skipping (and counting) messages
    /// that are not it, or the subject's last sequence if none is. `&mut self` because
    /// the engine is `Send` but not `Sync` (the ordered consumer it holds is not), and
    /// the handler future must be `Send`.
    async fn stored_after(
        &mut self,
        after: u64,
        epoch: u64,
    ) -> Result<AfterConflict, ReducerError> {
        let mut at = after;
        let mut attempt = 0;
        loop {
            match next_on_subject(&self.stream, &self.rebalance_subject, at).await {
                Ok(Some((sequence, payload))) => {
                    match decode_rebalance(&self.rebalance_subject, sequence, &payload) {
                        Ok(stored) if stored.event.epoch == epoch => {
                            return Ok(AfterConflict::Stored(Box::new(stored)));
                        }
                        Ok(stored) => skipped(
                            &self.shared.metrics,
                            &ReducerError::OutOfTurn {
                                sequence,
                                epoch: stored.event.epoch,
                                due: epoch,
                            },
                        ),
                        Err(why) => skipped(&self.shared.metrics, &why),
                    }
                    at = sequence;
                }
                Ok(None) if at > after => return Ok(AfterConflict::Expect(at)),
                // The conflict said the subject moved on, yet nothing is there: read
                // again (bounded).
                Ok(None) | Err(_) if attempt < CONFLICT_READS => {
                    attempt += 1;
                    tracing::warn!(
                        after,
                        attempt,
                        "Reading what won a conflict found nothing or failed; retrying."
                    );
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                }
                Ok(None) | Err(_) => return Err(ReducerError::StoredMissing { after }),
            }
        }
    }

    /// First time the reducer has folded everything in the stream: start serving.
    async fn caught_up(&mut self) -> Result<(), ReducerError> {
        if let Some(CatchingUp { head, fold }) = &self.catch_up {
            // Everything is folded, yet the stored head was not reached: it came from a
            // membership event this fold never saw.
            return Err(self.divergence(
                head,
                format!(
                    "the stored history goes to epoch {} (membership sequence {}); the fold of every membership event only to epoch {}",
                    head.event.epoch,
                    head.event.membership_sequence,
                    fold.epoch()
                ),
            ));
        }
        self.ready = true;
        self.shared.publish(Arc::new(View::of(&self.ledger)), None);
        self.caught_up.set(true);
        tracing::info!(
            epoch = self.ledger.epoch(),
            membership_sequence = self.ledger.membership_sequence(),
            "Caught up with the stream; serving."
        );
        Ok(())
    }

    /// Hands the view of the current state to the snapshot writer (which builds the
    /// snapshot itself, off the fold loop).
    fn snapshot(&mut self, view: Arc<View>) {
        self.snapshot_at = (view.epoch, view.membership_sequence);
        self.snapshots.put(view);
    }

    /// At a graceful stop: a snapshot of everything folded, if newer than the last one.
    fn final_snapshot(&mut self) {
        if self.catch_up.is_some() {
            // Stopped before reaching the stored head: the ledger does not know the
            // stream sequence of its epoch's event, which a snapshot records.
            return;
        }
        let at = (self.ledger.epoch(), self.ledger.membership_sequence());
        if at > self.snapshot_at {
            self.snapshot(Arc::new(View::of(&self.ledger)));
        }
    }
}

impl Handler for &mut Engine {
    async fn handle(&mut self, delivery: Delivery) -> Result<(), HandleError> {
        self.fold(delivery)
            .await
            .map_err(|e| HandleError::Fatal(Box::new(HandlerStop(e))))
    }

    async fn skipped(&mut self) -> Result<(), BoxError> {
        self.passed()
            .await
            .map_err(|e| Box::new(HandlerStop(e)) as BoxError)
    }
}

/// Completes when `stop` is (or turns) true, or its sender is gone.
pub(crate) async fn wait_for(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone: nobody can ask for a stop any more, which only
    // happens when the reducer is being torn down.
    let _ = stop.wait_for(|s| *s).await;
}
