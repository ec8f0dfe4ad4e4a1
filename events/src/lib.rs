//! The ringside event contract and the NATS plumbing every service shares.
//!
//! Services share nothing but NATS subjects carrying protobuf events (DESIGN.md). This
//! crate is where that contract lives: no service writes a subject, header, stream
//! name or encoding by hand.
//!
//! # Layout
//! - [`pb`]: types generated from `proto/ringside/v1` (events, snapshot, RingService).
//! - [`names`]: validated ring and node names ([`RingName`], [`NodeName`]).
//! - [`subject`]: subject builders and parser, stream / KV bucket / key names.
//! - [`event`]: [`Event`], a checked envelope: subject, deterministic message id,
//!   one-line summary.
//! - [`codec`]: binary and proto3 JSON encoding; decoding errors are values.
//! - [`headers`]: header names and the headers of a published event.
//! - [`mod@provision`]: streams and KV buckets from `nats/` files, created or updated.
//! - [`publish`]: [`Publisher`]: acked, retried, deduplicated, single-writer, batches.
//! - [`consume`]: [`Consumer`]: the loop that counts, logs and dead-letters bad messages.
//! - [`fold`]: [`RingLedger`], the pure fold of membership events into the ring.
//! - [`convert`]: wire types to and from `ringside-ring`: configurations, snapshots,
//!   and the `RingRebalanced` of one step (and its inverse, for replay).
//! - [`sketch`]: the HyperLogLog of client IPs that load reports carry.
//! - [`timestamp`]: `google.protobuf.Timestamp` with the proto3 JSON form (`...Z`).
//! - [`users`]: the per-service NATS users and their connect options.
//!
//! # How it fits
//! Watchers publish membership events, the reducer folds them ([`RingLedger`]) and publishes rebalance events with [`Publisher::publish_expecting`], nodes
//! and the collector publish load, the bridge and the CLI tools read. All of them
//! decode through [`codec`] and consume through [`Consumer`].

pub mod codec;
pub mod consume;
pub mod convert;
pub mod event;
pub mod fold;
pub mod headers;
pub mod names;
pub mod pb;
pub mod provision;
pub mod publish;
pub mod sketch;
pub mod subject;
pub mod timestamp;
pub mod users;

pub use codec::{DecodeError, EncodeError};
pub use consume::{Consumer, ConsumerStats, Delivery, HandleError, Handler, error_chain};
pub use event::{Body, Event, EventKind, InvalidEvent, MsgId, SCHEMA_VERSION};
pub use fold::{CatchUp, FoldError, Outcome, RingLedger};
pub use names::{NameError, NodeName, RingName};
pub use provision::{Definitions, provision};
pub use publish::{PublishError, Publisher, RetryPolicy, Stored};
pub use users::ServiceUser;
