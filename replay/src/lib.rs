//! The replay engine: post-mortem questions answered from a ring's stored history,
//! with the very fold the reducer runs ([`RingLedger`](ringside_events::RingLedger)).
//!
//! Open a [`History`] once (the `RINGSIDE` stream and snapshot bucket of a NATS
//! server, or an export file) and ask it, as often and as concurrently as needed:
//! the ring at a sequence or a time ([`History::ring_at`]), the events between two
//! points ([`History::events`]), a key's owner changes ([`History::key_history`]),
//! the diff of two epochs ([`History::diff`]), an export ([`History::export`]), and
//! [`History::verify`]. The library prints nothing: long passes and skipped snapshots
//! are reported to an [`Observer`], failures are [`ReplayError`]s.
//!
//! # Layout
//! - `record`: a stored message ([`Record`]), times and JSON lines.
//! - `source`: the stream and snapshot bucket on NATS, or an export file; a scan
//!   reads a range one message at a time.
//! - `export`: the export file format ([`Format`]: ndjson, pb), writer and checked
//!   reader.
//! - `engine`: the pure computations (fold, state, key history, diff, verify).
//! - `history`: [`History`], the queries, from a snapshot to the point asked.
//! - `index`: the key index, moved ranges by position on local disk ([`IndexDir`]).
//! - `observe`: [`Observer`], what a query tells its caller while it runs.
//! - `error`: [`ReplayError`] and [`Warning`].
//!
//! # How it fits
//! `ringside replay` parses its command line, opens a [`History`] and prints the
//! answers as tables or JSON; `ringside tail` decodes its lines into [`Record`]s. The
//! bridge's time travel keeps one [`History`] and asks it for each browser.

mod engine;
mod error;
mod export;
mod history;
mod index;
mod observe;
mod record;
mod source;

pub use engine::{
    DiffReport, FoldStats, KeyHistory, MemberState, MovedRangeRow, OwnerChange, Problem, RingAt,
    StateReport, TypeFilter, UnknownType, VerifyReport,
};
pub use error::{NatsError, ReplayError, Warning};
pub use export::{ExportError, Format};
pub use history::{Events, Exported, History, Point, Range};
pub use index::IndexDir;
pub use observe::Observer;
pub use record::{Record, TimeError, checksum_hex, parse_time, rfc3339};
pub use source::{STORED_KINDS, subjects};
