//! A consumer loop that never dies silently (CONVENTIONS.md #7).
//!
//! Each message is decoded; a message that does not decode (garbage, truncated, too
//! large, unknown version, no event, contract violation, an event that does not
//! belong on its subject: another ring's, or another kind's) or that the handler rejects
//! is counted, logged at WARN, copied to `ringside.<ring>.deadletter` with the reason
//! in headers, and terminated so it is not redelivered; the loop goes on. A handler
//! that asks for a retry gets the message again after a delay. Errors of the message
//! stream itself (a missed heartbeat, a reconnect) are counted and the loop backs off
//! and continues. Only a handler's [`HandleError::Fatal`] or the shutdown future ends
//! the loop, and never without saying so.
//!
//! # How it fits
//! The reducer runs it over a durable pull consumer (acks on). It also runs over
//! ordered consumers ([`Consumer::without_acks`]) and core subscriptions (the tests
//! cover both) for readers that want the same counting and dead-lettering; `tail` and
//! `replay` decode on their own because they show bad messages rather than skip them,
//! and the heartbeat watcher counts refused beats without dead-lettering them. The
//! handler is an async closure or a type implementing [`Handler`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind};
use futures::{Stream, StreamExt};

use crate::codec::{self, HEADER_ALLOWANCE, MAX_EVENT_BYTES};
use crate::event::{Event, sanitize_header_value};
use crate::headers;
use crate::names::RingName;
use crate::publish::{Outgoing, Publisher};
use crate::subject::{self, STREAM_DEADLETTER};

/// Counters of one consumer. Shared (`Arc`) so a metrics endpoint can read them live.
#[derive(Debug, Default)]
pub struct ConsumerStats {
    /// Messages taken from the stream.
    pub received: AtomicU64,
    /// Messages handled and acknowledged.
    pub handled: AtomicU64,
    /// Messages that did not decode.
    pub decode_failed: AtomicU64,
    /// Messages the handler rejected.
    pub rejected: AtomicU64,
    /// Messages the handler asked to see again later.
    pub retried: AtomicU64,
    /// Copies stored on the dead-letter subject.
    pub dead_lettered: AtomicU64,
    /// Dead-letter copies that could not be stored (logged at ERROR).
    pub deadletter_failed: AtomicU64,
    /// Acks, naks or terms that did not reach the server (the message comes back).
    pub settle_failed: AtomicU64,
    /// Errors of the message stream itself.
    pub stream_errors: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`ConsumerStats::received`].
    pub received: u64,
    /// See [`ConsumerStats::handled`].
    pub handled: u64,
    /// See [`ConsumerStats::decode_failed`].
    pub decode_failed: u64,
    /// See [`ConsumerStats::rejected`].
    pub rejected: u64,
    /// See [`ConsumerStats::retried`].
    pub retried: u64,
    /// See [`ConsumerStats::dead_lettered`].
    pub dead_lettered: u64,
    /// See [`ConsumerStats::deadletter_failed`].
    pub deadletter_failed: u64,
    /// See [`ConsumerStats::settle_failed`].
    pub settle_failed: u64,
    /// See [`ConsumerStats::stream_errors`].
    pub stream_errors: u64,
}

impl ConsumerStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            received: get(&self.received),
            handled: get(&self.handled),
            decode_failed: get(&self.decode_failed),
            rejected: get(&self.rejected),
            retried: get(&self.retried),
            dead_lettered: get(&self.dead_lettered),
            deadletter_failed: get(&self.deadletter_failed),
            settle_failed: get(&self.settle_failed),
            stream_errors: get(&self.stream_errors),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A decoded message handed to the handler.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The event.
    pub event: Event,
    /// The subject it arrived on.
    pub subject: String,
    /// Its stream sequence (JetStream messages only).
    pub stream_sequence: Option<u64>,
    /// How many times it has been delivered (1 the first time; 1 for core messages).
    pub delivered: u64,
}

/// What a handler says about a message it could not take.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// A transient problem (a dependency is down): deliver it again after `delay`.
    #[error("retry later: {reason}")]
    Retry {
        /// Why.
        reason: String,
        /// How long to wait before redelivery.
        delay: Duration,
    },
    /// The message can never be handled: dead-letter it and go on.
    #[error("rejected: {reason}")]
    Reject {
        /// Why (goes into the dead-letter headers).
        reason: String,
    },
    /// Stop consuming: the caller must act (the message is delivered again later).
    #[error("fatal handler error")]
    Fatal(#[source] BoxError),
}

/// A handler's fatal error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Handles decoded events. Implemented for async closures `FnMut(Delivery) -> Fut`.
pub trait Handler: Send {
    /// Handles one event; `Ok` means its effect is durable and the message may be acked.
    fn handle(
        &mut self,
        delivery: Delivery,
    ) -> impl Future<Output = Result<(), HandleError>> + Send;

    /// Called after a message that did not decode was dead-lettered, so a handler that
    /// tracks its position in the stream sees it pass (the reducer turns ready when the
    /// last message in the stream is such a one). An error stops the loop, as
    /// [`HandleError::Fatal`] does. Does nothing by default.
    fn skipped(&mut self) -> impl Future<Output = Result<(), BoxError>> + Send {
        async { Ok(()) }
    }
}

impl<F, Fut> Handler for F
where
    F: FnMut(Delivery) -> Fut + Send,
    Fut: Future<Output = Result<(), HandleError>> + Send,
{
    fn handle(
        &mut self,
        delivery: Delivery,
    ) -> impl Future<Output = Result<(), HandleError>> + Send {
        self(delivery)
    }
}

/// What to tell the server about a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// Done.
    Ack,
    /// Deliver again after the delay.
    Nak(Duration),
    /// Never deliver again.
    Term,
}

/// A message the loop can consume: a JetStream message or a core-NATS message.
pub trait Inbound: Send + Sync {
    /// The message.
    fn message(&self) -> &async_nats::Message;
    /// (stream, stream sequence, delivery count) for JetStream messages.
    fn position(&self) -> Option<(String, u64, u64)>;
    /// Acks, naks or terms (a no-op for core messages).
    fn settle(&self, how: Settle) -> impl Future<Output = Result<(), async_nats::Error>> + Send;
}

impl Inbound for jetstream::Message {
    fn message(&self) -> &async_nats::Message {
        &self.message
    }

    fn position(&self) -> Option<(String, u64, u64)> {
        self.info().ok().map(|i| {
            (
                i.stream.to_string(),
                i.stream_sequence,
                i.delivered.max(1) as u64,
            )
        })
    }

    fn settle(&self, how: Settle) -> impl Future<Output = Result<(), async_nats::Error>> + Send {
        let kind = match how {
            Settle::Ack => AckKind::Ack,
            Settle::Nak(delay) => AckKind::Nak(Some(delay)),
            Settle::Term => AckKind::Term,
        };
        self.ack_with(kind)
    }
}

impl Inbound for async_nats::Message {
    fn message(&self) -> &async_nats::Message {
        self
    }

    fn position(&self) -> Option<(String, u64, u64)> {
        None
    }

    async fn settle(&self, _how: Settle) -> Result<(), async_nats::Error> {
        // Core NATS has no acknowledgements.
        Ok(())
    }
}

/// How one message ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Processed {
    /// Handled and acked.
    Handled,
    /// Will be delivered again.
    Retried,
    /// Copied to the dead-letter subject (or counted as failing to) and terminated.
    DeadLettered,
}

/// Why the loop stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The shutdown future completed.
    Shutdown,
    /// The message stream ended (subscription closed, consumer gone).
    StreamEnded,
}

/// A fatal end of the loop.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The handler returned [`HandleError::Fatal`].
    #[error("consumer {consumer}: handler failed fatally")]
    Handler {
        /// The consumer.
        consumer: String,
        /// The handler's error.
        #[source]
        source: BoxError,
    },
}

/// The consume loop of one service for one ring.
#[derive(Clone, Debug)]
pub struct Consumer {
    name: String,
    ring: RingName,
    publisher: Publisher,
    acks: bool,
    stats: Arc<ConsumerStats>,
}

impl Consumer {
    /// A consumer named `name` (used in logs and dead-letter headers) that dead-letters
    /// to `ringside.<ring>.deadletter` through `publisher`.
    pub fn new(name: impl Into<String>, ring: RingName, publisher: Publisher) -> Self {
        Self {
            name: name.into(),
            ring,
            publisher,
            acks: true,
            stats: Arc::new(ConsumerStats::default()),
        }
    }

    /// Do not ack (ordered consumers and core subscriptions have nothing to ack).
    pub fn without_acks(mut self) -> Self {
        self.acks = false;
        self
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<ConsumerStats> {
        Arc::clone(&self.stats)
    }

    /// Consumes until `shutdown` completes or the stream ends; see the module docs.
    pub async fn run<S, M, E, H>(
        &self,
        mut messages: S,
        mut handler: H,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Stopped, ConsumeError>
    where
        S: Stream<Item = Result<M, E>> + Unpin,
        M: Inbound,
        E: std::fmt::Display,
        H: Handler,
    {
        tokio::pin!(shutdown);
        let mut error_streak: u32 = 0;
        loop {
            let next = tokio::select! {
                () = &mut shutdown => return Ok(Stopped::Shutdown),
                next = messages.next() => next,
            };
            match next {
                None => {
                    tracing::warn!(consumer = %self.name, "Message stream ended.");
                    return Ok(Stopped::StreamEnded);
                }
                Some(Err(e)) => {
                    bump(&self.stats.stream_errors);
                    error_streak += 1;
                    // Back off on repeated stream errors so a broken subscription does
                    // not spin; a healthy message resets the streak.
                    let wait = Duration::from_millis(50 * u64::from(error_streak.min(100)));
                    tracing::warn!(consumer = %self.name, error = %e, ?wait, "Message stream error; continuing.");
                    tokio::time::sleep(wait).await;
                }
                Some(Ok(msg)) => {
                    error_streak = 0;
                    self.process(&msg, &mut handler).await?;
                }
            }
        }
    }

    /// Decodes, handles and settles one message (the body of [`Self::run`]).
    pub async fn process<M: Inbound, H: Handler>(
        &self,
        msg: &M,
        handler: &mut H,
    ) -> Result<Processed, ConsumeError> {
        bump(&self.stats.received);
        let raw = msg.message();
        let position = msg.position();
        let event = match codec::decode_on(&raw.subject, &raw.payload) {
            Ok(event) => event,
            Err(e) => {
                bump(&self.stats.decode_failed);
                tracing::warn!(consumer = %self.name, subject = %raw.subject, size = raw.payload.len(), ?position, reason = e.label(), error = %e, "Undecodable message; dead-lettering it.");
                self.dead_letter(msg, e.label(), &error_chain(&e)).await;
                self.settle(msg, Settle::Term).await;
                if let Err(source) = handler.skipped().await {
                    tracing::error!(consumer = %self.name, error = %source, "Handler failed fatally after a skipped message; stopping the consumer.");
                    return Err(ConsumeError::Handler {
                        consumer: self.name.clone(),
                        source,
                    });
                }
                return Ok(Processed::DeadLettered);
            }
        };
        let delivery = Delivery {
            event,
            subject: raw.subject.to_string(),
            stream_sequence: position.as_ref().map(|p| p.1),
            delivered: position.as_ref().map_or(1, |p| p.2),
        };
        match handler.handle(delivery).await {
            Ok(()) => {
                self.settle(msg, Settle::Ack).await;
                bump(&self.stats.handled);
                Ok(Processed::Handled)
            }
            Err(HandleError::Retry { reason, delay }) => {
                bump(&self.stats.retried);
                tracing::warn!(consumer = %self.name, subject = %raw.subject, ?position, %reason, ?delay, "Handler asked for a retry.");
                self.settle(msg, Settle::Nak(delay)).await;
                Ok(Processed::Retried)
            }
            Err(HandleError::Reject { reason }) => {
                bump(&self.stats.rejected);
                tracing::warn!(consumer = %self.name, subject = %raw.subject, ?position, %reason, "Handler rejected the message; dead-lettering it.");
                self.dead_letter(msg, "rejected", &reason).await;
                self.settle(msg, Settle::Term).await;
                Ok(Processed::DeadLettered)
            }
            Err(HandleError::Fatal(source)) => {
                tracing::error!(consumer = %self.name, subject = %raw.subject, ?position, error = %source, "Handler failed fatally; stopping the consumer.");
                // Leave it for redelivery: whoever restarts the consumer sees it again.
                self.settle(msg, Settle::Nak(Duration::from_secs(1))).await;
                Err(ConsumeError::Handler {
                    consumer: self.name.clone(),
                    source,
                })
            }
        }
    }

    async fn settle<M: Inbound>(&self, msg: &M, how: Settle) {
        if !self.acks {
            return;
        }
        if let Err(e) = msg.settle(how).await {
            bump(&self.stats.settle_failed);
            tracing::warn!(consumer = %self.name, ?how, error = %e, "Could not settle a message; it will be delivered again.");
        }
    }

    /// Stores a copy of the message on the dead-letter subject with the reason.
    async fn dead_letter<M: Inbound>(&self, msg: &M, reason: &str, error: &str) {
        let raw = msg.message();
        let mut h = HeaderMap::new();
        h.insert(headers::DEADLETTER_REASON, reason);
        h.insert(
            headers::DEADLETTER_ERROR,
            sanitize_header_value(error, 1000).as_str(),
        );
        h.insert(
            headers::DEADLETTER_SUBJECT,
            sanitize_header_value(&raw.subject, 1000).as_str(),
        );
        h.insert(headers::DEADLETTER_CONSUMER, self.name.as_str());
        let mut msg_id = None;
        if let Some((stream, seq, _)) = msg.position() {
            h.insert(
                headers::DEADLETTER_SOURCE,
                format!("{stream}:{seq}").as_str(),
            );
            // Redeliveries of the same stored message dead-letter once.
            let id = format!("deadletter:{stream}:{seq}");
            h.insert(headers::MSG_ID, id.as_str());
            msg_id = Some(id);
        }
        let mut payload = raw.payload.clone();
        // The copy plus our headers must fit under the server's max_payload: keep the
        // head of an oversized payload and say how large it was.
        let room = MAX_EVENT_BYTES + HEADER_ALLOWANCE / 2;
        if payload.len() > room {
            h.insert(
                headers::DEADLETTER_TRUNCATED,
                payload.len().to_string().as_str(),
            );
            payload.truncate(room);
        }
        let out = Outgoing {
            subject: subject::deadletter(&self.ring),
            headers: h,
            payload,
            msg_id,
            stream: Some(STREAM_DEADLETTER),
        };
        match self.publisher.send(&out, None).await {
            Ok(_) => bump(&self.stats.dead_lettered),
            Err(e) => {
                bump(&self.stats.deadletter_failed);
                tracing::error!(consumer = %self.name, subject = %out.subject, error = %error_chain(&e), "Could not store a dead-letter copy; the message is dropped.");
            }
        }
    }
}

/// An error and its sources on one line (`cannot store: connection closed: ...`), for
/// logs and dead-letter reasons.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
