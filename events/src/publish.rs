//! Publishing events to JetStream: every ack awaited, bounded retries across server
//! restarts, the same message id on every retry, a single-writer publish, and atomic
//! batches for bulk.
//!
//! # Guarantees
//! - [`Publisher::publish`] returns once the server has stored (and, with
//!   `sync_interval: always`, fsynced) the event. A retry re-sends the same bytes with
//!   the same `Nats-Msg-Id`, so a lost ack never stores a fact twice (within the
//!   stream's duplicate window).
//! - [`Publisher::publish_expecting`] stores only if the subject's last sequence is
//!   the expected one; otherwise [`PublishError::Conflict`]. A retry whose first try
//!   was in fact stored is recognised (the subject's last message carries our id) and
//!   reported as stored, not as a conflict: the server checks the expected sequence
//!   before deduplication.
//! - [`Publisher::publish_batch`] sends up to [`Publisher::window`] events per atomic
//!   batch (ADR-50): the server stores a batch whole, in order, or not at all, and the
//!   next batch starts only after the previous one is acknowledged. So a bulk publish
//!   across a server crash stores every event exactly once and in order. Plain
//!   pipelining cannot promise that: a message lost in the old connection's buffers
//!   could be followed by a later one stored over the new connection.

use std::time::Duration;

use async_nats::jetstream::{self, context};
use async_nats::{HeaderMap, Request};
use bytes::Bytes;

use crate::codec::{self, EncodeError};
use crate::event::Event;
use crate::headers;

/// Header of an atomic batch: the batch id.
const BATCH_ID: &str = "Nats-Batch-Id";
/// Header of an atomic batch: position in the batch, from 1.
const BATCH_SEQUENCE: &str = "Nats-Batch-Sequence";
/// Header of an atomic batch: set to `1` on the last message.
const BATCH_COMMIT: &str = "Nats-Batch-Commit";
/// Largest atomic batch the server accepts.
pub const MAX_BATCH: usize = 1000;
/// JetStream error: "atomic publish batch contains duplicate message id".
const ERR_BATCH_DUPLICATE: u64 = 10201;

/// How hard to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per message or batch, the first included (at least 1).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles each time (with jitter).
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// How long to wait for the server's ack of one attempt.
    pub ack_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 10 attempts, 50 ms doubling to 2 s, 2 s per ack: rides out a server restart of
    /// about 20 s, then reports the failure.
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            ack_timeout: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based): exponential, capped,
    /// scaled by a random factor in [0.5, 1) so restarted clients do not retry in step.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        exp.min(self.max_backoff)
            .mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }
}

/// Where an event was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The stream.
    pub stream: String,
    /// Its stream sequence.
    pub sequence: u64,
    /// The server already had it (an earlier attempt or producer stored it).
    pub duplicate: bool,
}

/// What a bulk publish stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchStored {
    /// Events newly stored.
    pub stored: u64,
    /// Events the server already had.
    pub duplicates: u64,
    /// Stream sequence of the last event of the last batch (0 if nothing was sent).
    pub last_sequence: u64,
}

/// One failed attempt.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// A JetStream publish failed (timeout, no stream, refused, ...).
    #[error("JetStream publish failed")]
    Publish(#[source] context::PublishError),
    /// Sending a message of a batch failed.
    #[error("sending a batch message failed")]
    Send(#[source] async_nats::PublishError),
    /// The commit request of a batch failed (timeout, no responders, ...).
    #[error("batch commit request failed")]
    Request(#[source] async_nats::RequestError),
    /// The server refused a batch.
    #[error("the server refused the batch: error {code}: {description}")]
    BatchRefused {
        /// JetStream error code.
        code: u64,
        /// The server's description.
        description: String,
    },
    /// The batch ack could not be read.
    #[error("unreadable batch ack")]
    BadAck(#[source] serde_json::Error),
}

/// Why an event was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The event could not be encoded (too large).
    #[error("encoding the event failed")]
    Encode(#[from] EncodeError),
    /// The event travels on core NATS (heartbeats, traffic): use
    /// [`Publisher::publish_core`].
    #[error("{subject} is not stored in a stream; publish it with publish_core")]
    NotStored {
        /// The subject.
        subject: String,
    },
    /// A batch mixed events of different streams (a batch is atomic within one stream).
    #[error("a batch must target one stream, got {first} and {other}")]
    MixedStreams {
        /// Stream of the first event.
        first: String,
        /// Another stream in the same batch.
        other: String,
    },
    /// The single-writer precondition failed: another writer stored on the subject
    /// since `expected`. Reload state and decide again.
    #[error(
        "conflict on {subject}: expected last sequence {expected}, the subject is at {actual:?}"
    )]
    Conflict {
        /// The subject.
        subject: String,
        /// The last subject sequence the caller expected.
        expected: u64,
        /// The subject's actual last sequence, if it could be read.
        actual: Option<u64>,
    },
    /// The server refused the message for a reason a retry cannot fix.
    #[error("the server refused the message on {subject}")]
    Rejected {
        /// The subject.
        subject: String,
        /// The server's answer.
        #[source]
        source: AttemptError,
    },
    /// Every attempt failed; the last failure is the source.
    #[error("gave up on {subject} after {attempts} attempts")]
    GaveUp {
        /// The subject.
        subject: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        #[source]
        source: AttemptError,
    },
    /// A core-NATS publish failed.
    #[error("core publish on {subject} failed")]
    Core {
        /// The subject.
        subject: String,
        /// The client's error.
        #[source]
        source: async_nats::PublishError,
    },
}

/// A message ready to send: subject, headers (with its msg id), payload, stream.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) subject: String,
    pub(crate) headers: HeaderMap,
    pub(crate) payload: Bytes,
    pub(crate) msg_id: Option<String>,
    pub(crate) stream: Option<&'static str>,
}

impl Outgoing {
    fn from_event(event: &Event) -> Result<Self, PublishError> {
        let payload = codec::encode(event)?;
        let id = event.msg_id_in(&payload);
        Ok(Self {
            subject: event.subject(),
            headers: headers::for_event(event, &id),
            payload,
            msg_id: Some(id.as_str().to_string()),
            stream: event.kind().subject_kind().stream(),
        })
    }
}

/// The server's answer to a batch commit.
#[derive(serde::Deserialize)]
struct BatchAck {
    #[serde(default)]
    error: Option<ApiError>,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    count: u64,
}

#[derive(serde::Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

/// Publishes events; cheap to clone (shares the connection).
#[derive(Clone, Debug)]
pub struct Publisher {
    client: async_nats::Client,
    js: jetstream::Context,
    policy: RetryPolicy,
    window: usize,
}

impl Publisher {
    /// A publisher on `client` with the default [`RetryPolicy`] and a window of 100.
    pub fn new(client: async_nats::Client) -> Self {
        Self::with_policy(client, RetryPolicy::default())
    }

    /// A publisher with a given retry policy.
    pub fn with_policy(client: async_nats::Client, policy: RetryPolicy) -> Self {
        let js = jetstream::ContextBuilder::new()
            .timeout(policy.ack_timeout)
            .build(client.clone());
        Self {
            client,
            js,
            policy: RetryPolicy {
                max_attempts: policy.max_attempts.max(1),
                ..policy
            },
            window: 100,
        }
    }

    /// Sets how many events go into one atomic batch (1 to [`MAX_BATCH`]).
    pub fn with_window(mut self, window: usize) -> Self {
        self.window = window.clamp(1, MAX_BATCH);
        self
    }

    /// Events per atomic batch in [`Self::publish_batch`].
    pub fn window(&self) -> usize {
        self.window
    }

    /// The retry policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The JetStream context the publisher uses.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Stores one event, retrying until acknowledged or out of attempts.
    pub async fn publish(&self, event: &Event) -> Result<Stored, PublishError> {
        let out = self.stored_outgoing(event)?;
        self.send(&out, None).await
    }

    /// Stores one event only if `last_subject_sequence` is still the last sequence of
    /// its subject (0: the subject is empty); else [`PublishError::Conflict`].
    pub async fn publish_expecting(
        &self,
        event: &Event,
        last_subject_sequence: u64,
    ) -> Result<Stored, PublishError> {
        let out = self.stored_outgoing(event)?;
        self.send(&out, Some(last_subject_sequence)).await
    }

    /// Publishes a core-NATS event (heartbeat, traffic sample): no ack, no retry.
    pub async fn publish_core(&self, event: &Event) -> Result<(), PublishError> {
        let out = Outgoing::from_event(event)?;
        self.client
            .publish_with_headers(out.subject.clone(), out.headers, out.payload)
            .await
            .map_err(|source| PublishError::Core {
                subject: out.subject,
                source,
            })
    }

    /// Stores many events of one stream in order, [`Self::window`] per atomic batch.
    pub async fn publish_batch(&self, events: &[Event]) -> Result<BatchStored, PublishError> {
        let mut total = BatchStored::default();
        for chunk in events.chunks(self.window) {
            let outs = chunk
                .iter()
                .map(|e| self.stored_outgoing(e))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(first) = outs.first()
                && let Some(other) = outs.iter().find(|o| o.stream != first.stream)
            {
                return Err(PublishError::MixedStreams {
                    first: first.stream.unwrap_or_default().to_string(),
                    other: other.stream.unwrap_or_default().to_string(),
                });
            }
            self.send_batch(&outs, &mut total).await?;
        }
        Ok(total)
    }

    fn stored_outgoing(&self, event: &Event) -> Result<Outgoing, PublishError> {
        let out = Outgoing::from_event(event)?;
        if out.stream.is_none() {
            return Err(PublishError::NotStored {
                subject: out.subject,
            });
        }
        Ok(out)
    }

    /// The retry loop for one message.
    pub(crate) async fn send(
        &self,
        out: &Outgoing,
        expect: Option<u64>,
    ) -> Result<Stored, PublishError> {
        let mut headers = out.headers.clone();
        if let Some(seq) = expect {
            headers.insert(
                headers::EXPECTED_LAST_SUBJECT_SEQUENCE,
                seq.to_string().as_str(),
            );
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match self
                .js
                .publish_with_headers(out.subject.clone(), headers.clone(), out.payload.clone())
                .await
            {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            let err = match result {
                Ok(ack) => {
                    return Ok(Stored {
                        stream: ack.stream,
                        sequence: ack.sequence,
                        duplicate: ack.duplicate,
                    });
                }
                Err(err) => err,
            };
            match err.kind() {
                context::PublishErrorKind::WrongLastSequence => {
                    return self.resolve_conflict(out, expect.unwrap_or(0)).await;
                }
                context::PublishErrorKind::MaxPayloadExceeded
                | context::PublishErrorKind::WrongLastMessageId => {
                    return Err(PublishError::Rejected {
                        subject: out.subject.clone(),
                        source: AttemptError::Publish(err),
                    });
                }
                _ if attempt >= self.policy.max_attempts => {
                    return Err(PublishError::GaveUp {
                        subject: out.subject.clone(),
                        attempts: attempt,
                        source: AttemptError::Publish(err),
                    });
                }
                _ => {
                    let wait = self.policy.backoff(attempt);
                    tracing::warn!(subject = %out.subject, attempt, error = %err, ?wait, "Publish attempt failed; retrying with the same message id.");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// After a wrong-last-sequence answer: if the subject's last message is ours (an
    /// earlier attempt was stored but its ack lost), that is success; else a conflict.
    async fn resolve_conflict(
        &self,
        out: &Outgoing,
        expected: u64,
    ) -> Result<Stored, PublishError> {
        let conflict = |actual| PublishError::Conflict {
            subject: out.subject.clone(),
            expected,
            actual,
        };
        let Some(stream_name) = out.stream else {
            return Err(conflict(None));
        };
        let last = match self.js.get_stream_no_info(stream_name).await {
            Ok(stream) => {
                stream
                    .direct_get_last_for_subject(out.subject.clone())
                    .await
            }
            Err(e) => {
                tracing::warn!(subject = %out.subject, error = %e, "Could not read the subject's last message after a conflict.");
                return Err(conflict(None));
            }
        };
        match last {
            Ok(msg) => {
                let theirs = msg.headers.get(headers::MSG_ID).map(|v| v.as_str());
                if out.msg_id.is_some() && theirs == out.msg_id.as_deref() {
                    Ok(Stored {
                        stream: stream_name.to_string(),
                        sequence: msg.sequence,
                        duplicate: true,
                    })
                } else {
                    Err(conflict(Some(msg.sequence)))
                }
            }
            Err(e) => {
                tracing::warn!(subject = %out.subject, error = %e, "Could not read the subject's last message after a conflict.");
                Err(conflict(None))
            }
        }
    }

    /// One atomic batch, retried whole with a fresh batch id and the same message ids.
    async fn send_batch(
        &self,
        outs: &[Outgoing],
        total: &mut BatchStored,
    ) -> Result<(), PublishError> {
        let Some(last) = outs.last() else {
            return Ok(());
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match self.send_batch_once(outs).await {
                Ok(ack) => {
                    total.stored += ack.count;
                    total.last_sequence = ack.seq;
                    return Ok(());
                }
                Err(err) => err,
            };
            if let AttemptError::BatchRefused {
                code: ERR_BATCH_DUPLICATE,
                ..
            } = err
            {
                // Some of these facts are stored already: an earlier attempt whose
                // commit ack was lost, or a producer that published one of them
                // alone. One at a time, deduplication sorts out which.
                tracing::info!(subject = %last.subject, events = outs.len(), "Batch holds stored events; publishing it one by one.");
                for out in outs {
                    let stored = self.send(out, None).await?;
                    if stored.duplicate {
                        total.duplicates += 1;
                    } else {
                        total.stored += 1;
                    }
                    total.last_sequence = stored.sequence;
                }
                return Ok(());
            }
            if attempt >= self.policy.max_attempts {
                return Err(PublishError::GaveUp {
                    subject: last.subject.clone(),
                    attempts: attempt,
                    source: err,
                });
            }
            let wait = self.policy.backoff(attempt);
            tracing::warn!(subject = %last.subject, attempt, error = %err, ?wait, "Batch attempt failed; retrying the whole batch.");
            tokio::time::sleep(wait).await;
        }
    }

    async fn send_batch_once(&self, outs: &[Outgoing]) -> Result<BatchAck, AttemptError> {
        let batch_id = format!("{:032x}", rand::random::<u128>());
        let n = outs.len();
        for (i, out) in outs.iter().enumerate() {
            let mut h = out.headers.clone();
            h.insert(BATCH_ID, batch_id.as_str());
            h.insert(BATCH_SEQUENCE, (i + 1).to_string().as_str());
            if i + 1 < n {
                self.client
                    .publish_with_headers(out.subject.clone(), h, out.payload.clone())
                    .await
                    .map_err(AttemptError::Send)?;
            } else {
                h.insert(BATCH_COMMIT, "1");
                let request = Request::new()
                    .headers(h)
                    .payload(out.payload.clone())
                    .timeout(Some(self.policy.ack_timeout));
                let reply = self
                    .client
                    .send_request(out.subject.clone(), request)
                    .await
                    .map_err(AttemptError::Request)?;
                let ack: BatchAck =
                    serde_json::from_slice(&reply.payload).map_err(AttemptError::BadAck)?;
                return match ack.error {
                    Some(e) => Err(AttemptError::BatchRefused {
                        code: e.err_code,
                        description: e.description,
                    }),
                    None => Ok(ack),
                };
            }
        }
        // `outs` is not empty (checked by the caller), so the loop returned.
        Err(AttemptError::BatchRefused {
            code: 0,
            description: "empty batch".into(),
        })
    }
}
