//! The per-ring lease: only the heartbeat watcher holding it publishes membership.
//!
//! The lease is the key `<ring>.membership` of the KV bucket `RINGSIDE_LEASES`; its
//! value names the holder and its time-to-live (JSON `{"holder":..,"ttl_ms":..}`).
//! - **Acquire**: `create` (atomic: fails if the key exists), or, once the holder has
//!   stopped renewing, `update` at the revision that went stale (compare-and-set: of
//!   several standbys, one wins).
//! - **Renew**: `update` at the revision we wrote last, every third of the TTL. A
//!   wrong revision means someone took the lease over: we are a standby again.
//! - **Expiry** is measured by each standby on its own clock, never by comparing
//!   clocks: a lease is stale when its revision has not changed for the holder's TTL
//!   since this standby first saw that revision. The holder counts its own lease valid
//!   for three quarters of the TTL from the moment it *sent* the renewal, so it stops
//!   publishing before any standby can take over. The bucket's `max_age` (10 s)
//!   removes entries nobody renews, which also frees the key.
//! - **Release**: a holder that shuts down deletes the key at its revision, so a
//!   standby takes over at its next poll instead of after the TTL.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use ringside_events::RingName;
use ringside_events::subject::{KV_LEASES, lease_key};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::WatcherError;

/// What the lease keeper reports to the watcher loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Someone else holds the lease, or nobody could be asked yet.
    Standby,
    /// We hold the lease; publish only before `until`.
    Held {
        /// End of our lease unless renewed.
        until: Instant,
    },
}

impl LeaseState {
    /// Whether we hold the lease at `now`.
    pub fn held_at(&self, now: Instant) -> bool {
        matches!(self, LeaseState::Held { until } if now < *until)
    }
}

/// The lease's value.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct LeaseValue {
    holder: String,
    ttl_ms: u64,
}

/// The keeper's own view.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Not holding; `seen` is the revision we watch go stale and when we first saw it.
    Standby { seen: Option<(u64, Instant)> },
    /// Holding at `revision` until `until`.
    Held { revision: u64, until: Instant },
}

/// Acquires, renews and releases the lease of one ring.
#[derive(Debug)]
pub struct LeaseKeeper {
    store: kv::Store,
    key: String,
    holder: String,
    ttl: Duration,
    value: Bytes,
    phase: Phase,
}

impl LeaseKeeper {
    /// Opens the lease bucket for `ring`, as `holder` (unique per process), with `ttl`.
    pub async fn open(
        client: async_nats::Client,
        ring: &RingName,
        holder: String,
        ttl: Duration,
    ) -> Result<LeaseKeeper, WatcherError> {
        // Lease requests must answer well within a renewal period, or a slow answer
        // would eat the lease it renews.
        let timeout = (ttl / 3).clamp(Duration::from_millis(50), Duration::from_secs(2));
        let js = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .build(client);
        let store = js
            .get_key_value(KV_LEASES)
            .await
            .map_err(WatcherError::LeaseBucket)?;
        let value = serde_json::to_vec(&LeaseValue {
            holder: holder.clone(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        })
        .map(Bytes::from)
        .map_err(WatcherError::LeaseValue)?;
        Ok(LeaseKeeper {
            store,
            key: lease_key(ring),
            holder,
            ttl,
            value,
            phase: Phase::Standby { seen: None },
        })
    }

    /// The holder name this keeper writes.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// How often the keeper renews (holding) or looks at the lease (standby).
    pub fn period(&self) -> Duration {
        self.ttl / 3
    }

    /// Keeps the lease until `shutdown` completes, reporting every change of state on
    /// `state`; then releases it if held.
    pub async fn run(
        mut self,
        state: watch::Sender<LeaseState>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut tick = tokio::time::interval(self.period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let next = self.step(now).await;
            state.send_if_modified(|current| {
                let changed = *current != next;
                *current = next;
                changed
            });
        }
        state.send_replace(LeaseState::Standby);
        self.release().await;
    }

    /// One round: renew if holding, else look at the lease and take it if free or
    /// stale. Returns the resulting state.
    pub async fn step(&mut self, now: Instant) -> LeaseState {
        if let Phase::Held { revision, until } = self.phase {
            match self
                .store
                .update(&self.key, self.value.clone(), revision)
                .await
            {
                Ok(revision) => self.hold(revision, now),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    // Someone took it over, or our previous renewal was stored but its
                    // answer lost (then the entry still names us: see acquire).
                    tracing::warn!(key = %self.key, "The lease moved on without us; checking who holds it.");
                    self.phase = Phase::Standby { seen: None };
                    self.acquire(now).await;
                }
                Err(e) if now < until => {
                    tracing::warn!(key = %self.key, error = %e, "Lease renewal failed; retrying while the lease lasts.");
                }
                Err(e) => {
                    tracing::error!(key = %self.key, error = %e, "Lease renewal failed until the lease ran out; standing by.");
                    self.phase = Phase::Standby { seen: None };
                }
            }
        } else {
            self.acquire(now).await;
        }
        match self.phase {
            Phase::Held { until, .. } => LeaseState::Held { until },
            Phase::Standby { .. } => LeaseState::Standby,
        }
    }

    /// Standby round: take the lease if nobody holds it, if it is ours, or if its
    /// revision has not moved for its holder's TTL.
    async fn acquire(&mut self, now: Instant) {
        let seen = match self.phase {
            Phase::Standby { seen } => seen,
            Phase::Held { .. } => return,
        };
        let entry = match self.store.entry(&self.key).await {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(key = %self.key, error = %e, "Could not read the lease.");
                return;
            }
        };
        let taken = match entry {
            None => self.store.create(&self.key, self.value.clone()).await.ok(),
            Some(e) if matches!(e.operation, kv::Operation::Delete | kv::Operation::Purge) => {
                self.store.create(&self.key, self.value.clone()).await.ok()
            }
            Some(e) => {
                let current: Option<LeaseValue> = serde_json::from_slice(&e.value).ok();
                let holder = current.as_ref().map_or("?", |v| v.holder.as_str());
                let their_ttl = current
                    .as_ref()
                    .map_or(self.ttl, |v| Duration::from_millis(v.ttl_ms));
                let ours = holder == self.holder;
                let stale = matches!(seen, Some((revision, since))
                    if revision == e.revision && now.duration_since(since) >= their_ttl);
                if !(ours || stale) {
                    if seen.is_none_or(|(revision, _)| revision != e.revision) {
                        self.phase = Phase::Standby {
                            seen: Some((e.revision, now)),
                        };
                    }
                    return;
                }
                if stale {
                    tracing::info!(key = %self.key, %holder, "The lease holder stopped renewing; taking over.");
                }
                self.store
                    .update(&self.key, self.value.clone(), e.revision)
                    .await
                    .ok()
            }
        };
        match taken {
            Some(revision) => {
                tracing::info!(key = %self.key, holder = %self.holder, "Holding the lease.");
                self.hold(revision, now);
            }
            // Another instance was faster (or the write failed): watch afresh.
            None => self.phase = Phase::Standby { seen: None },
        }
    }

    /// Records a successful write at `revision`, sent at `sent`.
    fn hold(&mut self, revision: u64, sent: Instant) {
        self.phase = Phase::Held {
            revision,
            // Three quarters: a holder that cannot renew stops before a standby, which
            // waits the full TTL from a later instant, can take over.
            until: sent + self.ttl * 3 / 4,
        };
    }

    /// Deletes the lease if we hold it, so a standby need not wait for the TTL.
    async fn release(&mut self) {
        if let Phase::Held { revision, .. } = self.phase {
            match self
                .store
                .delete_expect_revision(&self.key, Some(revision))
                .await
            {
                Ok(()) => tracing::info!(key = %self.key, "Released the lease."),
                Err(e) => {
                    tracing::warn!(key = %self.key, error = %e, "Could not release the lease; it expires by itself.")
                }
            }
            self.phase = Phase::Standby { seen: None };
        }
    }
}
