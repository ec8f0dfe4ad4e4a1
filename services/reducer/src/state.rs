//! What the reducer serves: the ring at the last stored epoch ([`View`]) and the
//! in-process feed of later epochs ([`Update`]), shared by the fold loop (the only
//! writer) and the gRPC and HTTP servers.
//!
//! # Why one lock for both
//! `WatchRing` must send a snapshot and then every later epoch, with no gap and no
//! double, even when the client arrives in the middle of a burst. The fold loop
//! replaces the view and sends the epoch's update while holding the write lock; a
//! watcher subscribes to the feed and takes the view under the read lock. So every
//! update the watcher receives is either already in its view (epoch at or below the
//! view's, dropped) or the next one.

use std::sync::{Arc, PoisonError, RwLock};

use ringside_events::pb;
use ringside_ring::Ring;
use tokio::sync::{broadcast, watch};

use crate::metrics::{self, Metrics};

/// The ring at one stored epoch, ready for lookups. Immutable; replaced whole.
#[derive(Debug)]
pub struct View {
    /// The snapshot (members with addresses, tokens sorted by (token, owner)), stamped
    /// with the membership and rebalance sequences it includes. Shared with the
    /// snapshot writer.
    pub snapshot: Arc<pb::RingSnapshot>,
    /// The same ring, for owner and successor lookups through the ring's index.
    pub ring: Ring,
}

impl View {
    /// The epoch.
    pub fn epoch(&self) -> u64 {
        self.snapshot.epoch
    }

    /// Index in `snapshot.tokens` of the token owning `position`: the first token at or
    /// after it, wrapping to the first (docs/ring-spec.md, section 3). `None` when the
    /// ring is empty.
    pub fn token_index(&self, position: u64) -> Option<usize> {
        let tokens = &self.snapshot.tokens;
        if tokens.is_empty() {
            return None;
        }
        let i = tokens.partition_point(|t| *t < position);
        Some(if i == tokens.len() { 0 } else { i })
    }

    /// The member with this id (with address and uid).
    pub fn member(&self, id: &str) -> Option<&pb::Member> {
        let members = &self.snapshot.members;
        members
            .binary_search_by(|m| m.id.as_str().cmp(id))
            .ok()
            .map(|i| &members[i])
    }
}

/// One stored epoch, as `WatchRing` sends it.
#[derive(Debug)]
pub struct Update {
    /// The rebalance event.
    pub event: pb::RingRebalanced,
    /// Its `RINGSIDE` stream sequence.
    pub sequence: u64,
}

/// State shared by the fold loop and the servers.
#[derive(Debug)]
pub struct Shared {
    view: RwLock<Option<Arc<View>>>,
    updates: broadcast::Sender<Arc<Update>>,
    stopping: watch::Sender<bool>,
    /// Live metrics.
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// Empty state: not ready, no view. `watch_buffer` is how many epochs a watcher may
    /// lag before it is dropped.
    pub fn new(watch_buffer: usize, metrics: Arc<Metrics>) -> Self {
        let (updates, _) = broadcast::channel(watch_buffer.max(1));
        Self {
            view: RwLock::new(None),
            updates,
            stopping: watch::Sender::new(false),
            metrics,
        }
    }

    /// The current view; `None` until the reducer has caught up with the stream.
    pub fn view(&self) -> Option<Arc<View>> {
        self.view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the reducer has caught up once (and serves).
    pub fn is_ready(&self) -> bool {
        self.view().is_some()
    }

    /// The current view and a feed of every later epoch, taken atomically (see the
    /// module docs). `None` until ready.
    pub fn subscribe(&self) -> Option<(Arc<View>, broadcast::Receiver<Arc<Update>>)> {
        let guard = self.view.read().unwrap_or_else(PoisonError::into_inner);
        let view = guard.clone()?;
        Some((view, self.updates.subscribe()))
    }

    /// Installs a new view and announces `update` (the epoch that led to it, if any),
    /// atomically for subscribers.
    pub fn publish(&self, view: View, update: Option<Update>) {
        let mut guard = self.view.write().unwrap_or_else(PoisonError::into_inner);
        *guard = Some(Arc::new(view));
        if let Some(update) = update {
            // No receiver is not an error: nobody is watching.
            let _ = self.updates.send(Arc::new(update));
        }
        metrics::set(&self.metrics.ready, 1);
    }

    /// Tells open `WatchRing` streams that the reducer is stopping.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// A receiver that turns true when the reducer stops.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringside_ring::{RingConfig, Strategy};

    fn view(tokens: Vec<u64>) -> View {
        let owners = vec![0; tokens.len()];
        View {
            snapshot: Arc::new(pb::RingSnapshot {
                epoch: 1,
                members: vec![pb::Member {
                    id: "a".into(),
                    weight: 1,
                    ..Default::default()
                }],
                tokens,
                owners,
                ..Default::default()
            }),
            ring: Ring::new(RingConfig::new(Strategy::Random, 1).unwrap()),
        }
    }

    #[test]
    fn token_index_wraps() {
        let v = view(vec![10, 20, 30]);
        assert_eq!(v.token_index(0), Some(0));
        assert_eq!(v.token_index(10), Some(0));
        assert_eq!(v.token_index(11), Some(1));
        assert_eq!(v.token_index(30), Some(2));
        assert_eq!(v.token_index(31), Some(0));
        assert_eq!(v.token_index(u64::MAX), Some(0));
        assert_eq!(view(vec![]).token_index(5), None);
        assert_eq!(v.member("a").map(|m| m.weight), Some(1));
        assert!(v.member("b").is_none());
    }

    #[test]
    fn subscribers_see_updates_after_their_view_only() {
        let shared = Shared::new(4, Arc::default());
        assert!(shared.subscribe().is_none());
        shared.publish(view(vec![1]), None);
        let (first, mut rx) = shared.subscribe().unwrap();
        assert_eq!(first.epoch(), 1);
        let mut next = view(vec![1]);
        Arc::make_mut(&mut next.snapshot).epoch = 2;
        shared.publish(
            next,
            Some(Update {
                event: pb::RingRebalanced {
                    epoch: 2,
                    ..Default::default()
                },
                sequence: 9,
            }),
        );
        let update = rx.try_recv().unwrap();
        assert_eq!((update.event.epoch, update.sequence), (2, 9));
        assert!(shared.is_ready());
    }
}
