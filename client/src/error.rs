//! The errors of the client: [`LookupError`] for questions to the ring,
//! [`ClientError`] for following it.
//!
//! The follower never stops on a [`ClientError`] of NATS: it counts it
//! ([`crate::ClientStats::nats_errors`]), logs it and tries again with backoff, keeping
//! the last ring it had. The only error a caller receives from following is
//! [`ClientError::Stopped`], from [`crate::RingClient::ready`].

use async_nats::jetstream::{consumer, context, kv, stream};
use ringside_ring::RingError;

/// Why a lookup has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The client has not synced the ring yet (see [`crate::RingClient::ready`]).
    #[error("the ring is not synced yet")]
    NotReady,
    /// The ring refused: it has no members ([`RingError::Empty`], also before the
    /// first event of a new ring), or fewer than the successors asked for
    /// ([`RingError::TooFewMembers`]).
    #[error("the ring has no answer")]
    Ring(#[from] RingError),
    /// A ring member without details in the event or snapshot it came from. The
    /// contract rules it out (the ring's members are built from those lists); kept as
    /// an error rather than a panic.
    #[error("no details (address) for ring member '{0}'")]
    MissingDetails(String),
}

/// What went wrong while following the ring.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The follower stopped (its shutdown future completed, it was dropped or never
    /// run) before the ring was synced once.
    #[error("the ring follower stopped before the ring was synced")]
    Stopped,
    /// The stream could not be opened: not provisioned, NATS unreachable, or the
    /// connection's user may not read it (`node`, `bridge` and `admin` may).
    #[error("opening stream {stream}")]
    Stream {
        /// The stream.
        stream: &'static str,
        /// The client's error.
        #[source]
        source: context::GetStreamError,
    },
    /// The snapshot bucket could not be opened (same causes as [`ClientError::Stream`]).
    #[error("opening KV bucket {bucket}")]
    Bucket {
        /// The bucket.
        bucket: &'static str,
        /// The client's error.
        #[source]
        source: context::KeyValueError,
    },
    /// Reading the newest snapshot failed.
    #[error("reading snapshot key {key}")]
    Snapshot {
        /// The key.
        key: String,
        /// The client's error.
        #[source]
        source: kv::EntryError,
    },
    /// Reading one stored message of the rebalance subject (to anchor a snapshot or
    /// to tell a gap from a message out of turn) failed.
    #[error("reading the rebalance subject at sequence {sequence}")]
    Read {
        /// The sequence asked for.
        sequence: u64,
        /// The client's error.
        #[source]
        source: stream::DirectGetError,
    },
    /// The consumer of the rebalance subject could not be created.
    #[error("creating a consumer of the rebalance subject from sequence {start}")]
    Consumer {
        /// The first stream sequence it was to deliver.
        start: u64,
        /// The client's error.
        #[source]
        source: stream::ConsumerError,
    },
    /// The consumer's message stream could not be started.
    #[error("starting the message stream of the consumer from sequence {start}")]
    Messages {
        /// The first stream sequence it was to deliver.
        start: u64,
        /// The client's error.
        #[source]
        source: consumer::StreamError,
    },
    /// The consumer's message stream failed (missed heartbeats, consumer deleted, a
    /// failed pull, a message without JetStream metadata). The follower makes a new
    /// consumer from the position it has, so nothing is skipped or read twice.
    #[error("the consumer of the rebalance subject failed after sequence {position}")]
    Consume {
        /// The last stream sequence the follower had handled.
        position: u64,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
