//! What can go wrong in a replay, and what a replay skips without failing.
//!
//! # How it fits
//! Every query of a [`History`](crate::History) returns [`ReplayError`]. Its variants
//! fall in three groups a caller can act on: the question cannot be answered from
//! this history (a sequence beyond the end, an unknown ring, an empty range: tell
//! the user), the history cannot be read (a NATS request failed, an export file is
//! corrupt: retry later or fix the file), and writing an export failed. Messages are
//! one line; the variants that wrap a cause name it as their `source`, so a caller
//! prints the chain (`anyhow`'s `{:#}`, [`ringside_events::error_chain`]).
//! [`Warning`]s are what a query skipped while still answering right; it hands them
//! to its [`Observer`](crate::Observer).

use std::path::PathBuf;

use ringside_events::convert::ConvertError;
use ringside_events::{DecodeError, EncodeError, NameError, RingName};

use crate::export::ExportError;

/// A cause from the NATS client (each request has its own error type).
pub type NatsError = Box<dyn std::error::Error + Send + Sync>;

/// Why a replay query failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The `RINGSIDE` stream is not on the server (or cannot be opened).
    #[error(
        "cannot open stream {stream} on {url} (is ringside running there? `ringside up` creates it)"
    )]
    OpenStream {
        /// The stream's name.
        stream: &'static str,
        /// The server.
        url: String,
        /// The client's error.
        #[source]
        source: NatsError,
    },
    /// A request to the server failed: it is gone, slow, or refused the user.
    #[error("{what}")]
    Nats {
        /// What was asked (`cannot read the stream's state`).
        what: String,
        /// The client's error.
        #[source]
        source: NatsError,
    },
    /// The server did not answer in time.
    #[error("{what}")]
    Timeout {
        /// What was waited for and how long.
        what: &'static str,
        /// The elapsed deadline.
        #[source]
        source: tokio::time::error::Elapsed,
    },
    /// A consumer's messages ended while a range was still being read.
    #[error("the stream ended while reading it")]
    StreamEnded,
    /// An export file cannot be opened.
    #[error("cannot open {}", path.display())]
    OpenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An export file is not a valid export (truncated, corrupt, another version).
    #[error("{}", path.display())]
    Export {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ExportError,
    },
    /// An export file changed since it was opened: a snapshot is no longer where it was.
    #[error("{}: no snapshot at byte {offset} (was the file changed?)", path.display())]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// Where the snapshot was.
        offset: u64,
    },
    /// An export file's header names a ring that is not a valid ring name.
    #[error("{}: the header names an invalid ring", path.display())]
    FileRing {
        /// The file.
        path: PathBuf,
        /// Why the name is invalid.
        #[source]
        source: NameError,
    },
    /// The server holds no event and no snapshot of the ring asked for.
    #[error(
        "unknown ring '{ring}': no events in {history} (rings with events: {})",
        list_or_none(.known)
    )]
    UnknownRing {
        /// The ring asked for.
        ring: RingName,
        /// Which history ([`History::describe`](crate::History::describe)).
        history: String,
        /// The rings that have events there.
        known: Vec<String>,
    },
    /// An export file holds another ring than the one asked for.
    #[error("unknown ring '{ring}': {} holds ring '{holds}'", path.display())]
    NotInFile {
        /// The ring asked for.
        ring: RingName,
        /// The file.
        path: PathBuf,
        /// The ring it holds.
        holds: RingName,
    },
    /// The history starts after the first event and no snapshot covers its start.
    #[error(
        "{history} starts at sequence {first} (earlier events are not in it) and has no snapshot to start from"
    )]
    NoStart {
        /// Which history ([`History::describe`](crate::History::describe)).
        history: String,
        /// Its first sequence.
        first: u64,
    },
    /// `verify` needs the history from sequence 1.
    #[error("{history} starts at sequence {first}: verify needs the history from the first event")]
    VerifyNeedsFirst {
        /// Which history ([`History::describe`](crate::History::describe)).
        history: String,
        /// Its first sequence.
        first: u64,
    },
    /// Sequence 0 was asked for.
    #[error("stream sequences start at 1")]
    SequenceZero,
    /// A sequence after the end of the stream.
    #[error("sequence {seq} is beyond the end of the stream (the last sequence is {last})")]
    BeyondEnd {
        /// The sequence asked for.
        seq: u64,
        /// The last sequence of the stream.
        last: u64,
    },
    /// A time before the ring's first event.
    #[error(
        "{time} is before the first event of ring '{ring}' (sequence {first_seq} at {first_time})"
    )]
    BeforeFirst {
        /// The time asked for (RFC 3339).
        time: String,
        /// The ring.
        ring: RingName,
        /// The ring's first sequence.
        first_seq: u64,
        /// When it was stored (RFC 3339).
        first_time: String,
    },
    /// A time was asked for, but the ring has no event at all.
    #[error("ring '{ring}' has no events in {history}")]
    NoEvents {
        /// The ring.
        ring: RingName,
        /// Which history.
        history: String,
    },
    /// A range that ends before it starts.
    #[error("the range is empty: it starts at sequence {from} and ends at {to}")]
    EmptyRange {
        /// First sequence.
        from: u64,
        /// Last sequence.
        to: u64,
    },
    /// A key history of the empty key.
    #[error("the key is empty")]
    EmptyKey,
    /// A diff to an epoch the ring has not reached.
    #[error("epoch {epoch} is beyond the last epoch ({last}) of ring '{ring}'")]
    EpochBeyond {
        /// The epoch asked for.
        epoch: u64,
        /// The ring's last epoch.
        last: u64,
        /// The ring.
        ring: RingName,
    },
    /// The ring's first rebalance event carries no ring configuration.
    #[error("the ring's first rebalance event: sequence {seq} has no ring configuration")]
    NoConfig {
        /// Its stream sequence.
        seq: u64,
    },
    /// The ring's first rebalance event carries an invalid ring configuration.
    #[error("the ring's first rebalance event")]
    BadConfig(#[source] ConvertError),
    /// A snapshot in the bucket does not decode.
    #[error("snapshot {key} does not decode")]
    Snapshot {
        /// Its key.
        key: String,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// An event cannot be written as JSON.
    #[error("cannot encode an event as JSON")]
    EncodeEvent(#[source] EncodeError),
    /// A snapshot cannot be written as JSON.
    #[error("cannot encode snapshot {key} as JSON")]
    EncodeSnapshot {
        /// Its key.
        key: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The key index (a local cache, see `IndexDir`) cannot be read or written.
    #[error("key index: {what} {}", path.display())]
    Index {
        /// The file or directory.
        path: PathBuf,
        /// What failed (`cannot write`).
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Writing an export failed.
    #[error("cannot write the export")]
    Write(#[source] std::io::Error),
}

/// `a, b, c`, or `none`.
fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

impl ReplayError {
    /// A failed NATS request, saying what was asked.
    pub(crate) fn nats(what: impl Into<String>, source: impl Into<NatsError>) -> Self {
        Self::Nats {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Something a query skipped while still answering right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Warning {
    /// A snapshot that cannot be read, does not load, or disagrees with its epoch's
    /// rebalance event; an older one (or the first event) is used instead.
    #[error("skipping snapshot {key}: {why}")]
    SkippedSnapshot {
        /// Its key.
        key: String,
        /// Why.
        why: String,
    },
    /// The key index cannot be used (a disk full, a directory not writable): the key
    /// history reads the stored epochs instead.
    #[error("not using the key index: {why}")]
    IndexUnusable {
        /// Why.
        why: String,
    },
    /// A snapshot left out of an export because it cannot be read.
    #[error("not exporting snapshot {key}: {why}")]
    SnapshotNotExported {
        /// Its key.
        key: String,
        /// Why.
        why: String,
    },
}
