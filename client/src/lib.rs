//! ringside-client: follow a ringside ring from any Rust service, as Ringpop gives an
//! application its ring: who owns a key, its replicas, the epoch, and a stream of
//! rebalances with the ranges a member gained and lost. `docs/client.md` is the guide.
//!
//! ```no_run
//! # async fn example(nats: async_nats::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use ringside_client::{ClientConfig, follow};
//! use ringside_events::RingName;
//!
//! let (follower, ring) = follow(nats, ClientConfig::new(RingName::new("orders")?));
//! tokio::spawn(follower.run(std::future::pending()));
//! ring.ready().await?;
//! let owner = ring.lookup(b"user:42")?;
//! println!("epoch {}: {} at {}", owner.epoch, owner.member.id, owner.member.address);
//! # Ok(())
//! # }
//! ```
//!
//! # How it fits
//! The reducer stores one `RingRebalanced` per epoch on `ringside.<ring>.rebalance`
//! (stream `RINGSIDE`) and snapshots of the ring, stamped with the stream sequence of
//! their epoch's event, in the KV bucket `RINGSIDE_SNAPSHOTS`. The client starts from
//! the newest snapshot and applies every later epoch in order, checking each against
//! the ring it applies to: no gap, no double, and a gap or a mismatch re-syncs from the
//! newest snapshot. It reads only; any user that may read the stream and the bucket
//! can follow (`node`, `bridge`, `admin`; docs/nats.md).
//!
//! # Layout
//! - `client`: [`follow`], [`ClientConfig`], [`RingClient`] (current
//!   ring, lookups, readiness, counters), [`Subscription`] and [`Change`].
//! - `follow`: [`Follower`], the loop that syncs from a snapshot, consumes the
//!   rebalance subject and decides between skip and re-sync.
//! - `chain`: the pure rule of what one stored message does to the ring (tested
//!   without a server).
//! - `view`: [`RingView`], the immutable ring at one epoch with its
//!   members' details; [`KeyRange`].
//! - `rebalance`: [`Rebalance`], one applied epoch, and the ranges each
//!   member gained and lost in it.
//! - `error`: [`ClientError`], [`LookupError`].
//! - `stats`: [`ClientStats`], the follower's counters.

mod chain;
mod client;
mod error;
mod follow;
mod rebalance;
mod stats;
mod view;

pub use client::{
    Change, ClientConfig, Owner, RingClient, Subscription, Successors, SyncReason, follow,
};
pub use error::{ClientError, LookupError};
pub use follow::Follower;
pub use rebalance::{MovedRange, Rebalance};
pub use stats::ClientStats;
pub use view::{KeyRange, RingView};
