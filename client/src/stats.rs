//! The follower's counters: what it applied, skipped, re-synced and retried. Plain
//! atomics, so an embedding service exports them with whatever metrics library it
//! uses (the node through the service kit).

use std::sync::atomic::{AtomicU64, Ordering};

/// The live counters, shared by the follower and the readers.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    applied: AtomicU64,
    syncs: AtomicU64,
    resyncs: AtomicU64,
    skipped: AtomicU64,
    redelivered: AtomicU64,
    consumer_resets: AtomicU64,
    nats_errors: AtomicU64,
    snapshots_rejected: AtomicU64,
    subscribers_lagged: AtomicU64,
}

/// Which counter to bump.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Count {
    Applied,
    Synced,
    Resynced,
    Skipped,
    Redelivered,
    ConsumerReset,
    NatsError,
    SnapshotRejected,
    SubscriberLagged,
}

impl Counters {
    pub(crate) fn add(&self, what: Count) {
        let counter = match what {
            Count::Applied => &self.applied,
            Count::Synced => &self.syncs,
            Count::Resynced => &self.resyncs,
            Count::Skipped => &self.skipped,
            Count::Redelivered => &self.redelivered,
            Count::ConsumerReset => &self.consumer_resets,
            Count::NatsError => &self.nats_errors,
            Count::SnapshotRejected => &self.snapshots_rejected,
            Count::SubscriberLagged => &self.subscribers_lagged,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> ClientStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClientStats {
            applied: get(&self.applied),
            syncs: get(&self.syncs),
            resyncs: get(&self.resyncs),
            skipped: get(&self.skipped),
            redelivered: get(&self.redelivered),
            consumer_resets: get(&self.consumer_resets),
            nats_errors: get(&self.nats_errors),
            snapshots_rejected: get(&self.snapshots_rejected),
            subscribers_lagged: get(&self.subscribers_lagged),
        }
    }
}

/// The follower's counters at one moment (all since the follower was made).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Epochs applied from the stream (during a sync's catch-up too).
    pub applied: u64,
    /// Syncs completed: the first one, and one per re-sync.
    pub syncs: u64,
    /// Re-syncs from the newest snapshot (a gap, or an epoch that did not fit).
    pub resyncs: u64,
    /// Stored messages of the rebalance subject skipped as not an epoch of this ring
    /// (undecodable, another ring's, an epoch passed or out of turn).
    pub skipped: u64,
    /// Messages delivered again at or before the position (dropped, harmless).
    pub redelivered: u64,
    /// Consumers replaced after their message stream failed or ended (each resumes at
    /// the follower's own position).
    pub consumer_resets: u64,
    /// NATS operations that failed and were retried.
    pub nats_errors: u64,
    /// Snapshots not used: undecodable, another ring's, invalid, or not anchored in
    /// the stream (the follower then starts from the first event).
    pub snapshots_rejected: u64,
    /// Subscriptions that fell behind the buffer and were re-synced to the current
    /// ring.
    pub subscribers_lagged: u64,
}
