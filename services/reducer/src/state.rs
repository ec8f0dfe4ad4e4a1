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
//!
//! # What a slow watcher costs
//! The feed keeps each epoch until every watcher has taken it, up to the watch buffer
//! (`RINGSIDE_REDUCER_WATCH_BUFFER` epochs). Each epoch is kept encoded, once for all
//! watchers: a `RingRebalanced` carries the whole member list, and encoded it is about
//! a quarter of its decoded size (`just bench reducer` measures a client a whole
//! buffer behind on a 1000-member ring). An epoch nobody watches is not encoded.

use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::SystemTime;

use bytes::Bytes;
use prost::Message;
use ringside_events::convert::{self, ConvertError};
use ringside_events::timestamp::Timestamp;
use ringside_events::{RingLedger, RingName, pb};
use ringside_ring::{Ring, Token};
use tokio::sync::{broadcast, watch};

use crate::metrics::Metrics;

/// The ring at one stored epoch, ready for lookups. Immutable; replaced whole.
///
/// Making one costs a ring clone and the member details (O(members)); what costs
/// O(tokens), the sorted token list and the full snapshot, is built on first use
/// (a `Lookup`, a `GetRing`, a `WatchRing`, the snapshot writer) and kept, so a burst of
/// epochs nobody looks at costs little.
#[derive(Debug)]
pub struct View {
    name: RingName,
    /// The ring, for owner and successor lookups through the ring's index.
    pub ring: Ring,
    /// Members with their details (address, uid), sorted by id.
    pub members: Vec<pb::Member>,
    /// The epoch.
    pub epoch: u64,
    /// Stream sequence of the last membership event folded into this ring.
    pub membership_sequence: u64,
    /// Stream sequence of this epoch's `RingRebalanced` (0: epoch 0).
    pub rebalance_sequence: u64,
    /// When this reducer made the view (its snapshots' `taken_at`).
    pub made_at: SystemTime,
    tokens: OnceLock<Vec<Token>>,
    snapshot: OnceLock<Arc<pb::RingSnapshot>>,
}

impl View {
    /// The view of the ledger's current (stored) epoch.
    pub fn of(ledger: &RingLedger) -> View {
        View {
            name: ledger.ring_name().clone(),
            ring: ledger.ring().clone(),
            members: ledger.members().cloned().collect(),
            epoch: ledger.epoch(),
            membership_sequence: ledger.membership_sequence(),
            rebalance_sequence: ledger.rebalance_sequence(),
            made_at: SystemTime::now(),
            tokens: OnceLock::new(),
            snapshot: OnceLock::new(),
        }
    }

    /// The token owning `position`: the first token at or after it, wrapping to the
    /// first (docs/ring-spec.md, section 3). `None` when the ring is empty.
    pub fn token_owning(&self, position: u64) -> Option<Token> {
        let tokens = self
            .tokens
            .get_or_init(|| self.ring.tokens().map(|(t, _)| t).collect());
        let i = tokens.partition_point(|t| *t < position);
        tokens.get(i).or_else(|| tokens.first()).copied()
    }

    /// The member with this id (with address and uid).
    pub fn member(&self, id: &str) -> Option<&pb::Member> {
        self.members
            .binary_search_by(|m| m.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.members[i])
    }

    /// The snapshot of this epoch (members, tokens sorted by (token, owner)), stamped
    /// with the sequences it includes. Built on first use: O(tokens).
    pub fn snapshot(&self) -> Result<Arc<pb::RingSnapshot>, ConvertError> {
        if let Some(s) = self.snapshot.get() {
            return Ok(Arc::clone(s));
        }
        let built = Arc::new(self.build_snapshot()?);
        // Two callers may build it at once; both results are equal, one is kept.
        Ok(Arc::clone(self.snapshot.get_or_init(|| built)))
    }

    /// The same snapshot as [`View::snapshot`], owned and not kept by the view (a copy
    /// when a server has built it already): for the snapshot writer, which stamps and
    /// encodes it once. Kept, it would hold about 1.8 MB at 1000 members for as long
    /// as the view is served, and the writer would copy it to stamp it.
    pub fn snapshot_to_store(&self) -> Result<pb::RingSnapshot, ConvertError> {
        match self.snapshot.get() {
            Some(s) => Ok(pb::RingSnapshot::clone(s)),
            None => self.build_snapshot(),
        }
    }

    fn build_snapshot(&self) -> Result<pb::RingSnapshot, ConvertError> {
        let mut snapshot = convert::ring_to_snapshot(
            &self.name,
            &self.ring,
            &self.members,
            self.epoch,
            self.membership_sequence,
            self.rebalance_sequence,
        )?;
        snapshot.taken_at = Some(Timestamp::of(self.made_at));
        Ok(snapshot)
    }

    /// [`View::snapshot`] off the async workers (it can take milliseconds).
    pub async fn snapshot_blocking(
        self: &Arc<Self>,
    ) -> Result<Arc<pb::RingSnapshot>, ConvertError> {
        if let Some(s) = self.snapshot.get() {
            return Ok(Arc::clone(s));
        }
        self.off_workers(View::snapshot).await
    }

    /// [`View::snapshot_to_store`] off the async workers.
    pub async fn snapshot_to_store_blocking(
        self: &Arc<Self>,
    ) -> Result<pb::RingSnapshot, ConvertError> {
        self.off_workers(View::snapshot_to_store).await
    }

    /// `work` on the blocking pool.
    async fn off_workers<T: Send + 'static>(self: &Arc<Self>, work: fn(&View) -> T) -> T {
        let view = Arc::clone(self);
        match tokio::task::spawn_blocking(move || work(&view)).await {
            Ok(result) => result,
            // `work` does not panic; if the task was cancelled, do it here.
            Err(_) => work(self),
        }
    }
}

/// One stored epoch, as `WatchRing` sends it: the rebalance event encoded, shared by
/// every watcher, each decoding it as it sends it (see the module docs).
#[derive(Debug)]
pub struct Update {
    /// The event's epoch.
    pub epoch: u64,
    /// Its `RINGSIDE` stream sequence.
    pub sequence: u64,
    event: Bytes,
}

impl Update {
    /// The update of `event`, stored at stream sequence `sequence`.
    pub fn new(event: &pb::RingRebalanced, sequence: u64) -> Self {
        Self {
            epoch: event.epoch,
            sequence,
            event: Bytes::from(event.encode_to_vec()),
        }
    }

    /// The rebalance event.
    pub fn event(&self) -> Result<pb::RingRebalanced, prost::DecodeError> {
        pb::RingRebalanced::decode(self.event.clone())
    }
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

    /// Whether the reducer has caught up once and serves a ring (readiness for the
    /// probes is the service's `Readiness`, which also follows the NATS connection).
    pub fn is_serving(&self) -> bool {
        self.view().is_some()
    }

    /// The current view and a feed of every later epoch, taken atomically (see the
    /// module docs). `None` until ready.
    pub fn subscribe(&self) -> Option<(Arc<View>, broadcast::Receiver<Arc<Update>>)> {
        let guard = self.view.read().unwrap_or_else(PoisonError::into_inner);
        let view = guard.clone()?;
        Some((view, self.updates.subscribe()))
    }

    /// Installs a new view and announces `epoch` (the rebalance event that led to it
    /// and its stream sequence, if any), atomically for subscribers.
    pub fn publish(&self, view: Arc<View>, epoch: Option<(&pb::RingRebalanced, u64)>) {
        let mut guard = self.view.write().unwrap_or_else(PoisonError::into_inner);
        *guard = Some(view);
        // Subscribers only arrive under the lock (`subscribe`): with none now, none can
        // miss this epoch, so it is not encoded.
        if let Some((event, sequence)) = epoch
            && self.updates.receiver_count() > 0
        {
            // A send fails only when every receiver went away meanwhile: nobody is
            // watching then.
            let _ = self.updates.send(Arc::new(Update::new(event, sequence)));
        }
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

    fn ledger(members: usize) -> RingLedger {
        let mut ledger = RingLedger::new(
            RingName::new("t").unwrap(),
            RingConfig::new(Strategy::Random, 4).unwrap(),
        );
        let joined = pb::MembersJoined {
            members: (0..members)
                .map(|i| pb::Member {
                    id: format!("m{i}"),
                    address: format!("10.0.0.{i}:1"),
                    weight: 1,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        ledger.apply(1, &joined.into());
        ledger
    }

    #[test]
    fn token_owning_wraps_and_agrees_with_the_ring() {
        let view = View::of(&ledger(3));
        let tokens: Vec<Token> = view.ring.tokens().map(|(t, _)| t).collect();
        assert_eq!(view.token_owning(0), Some(tokens[0]));
        assert_eq!(view.token_owning(tokens[1]), Some(tokens[1]));
        assert_eq!(view.token_owning(tokens[1] + 1), Some(tokens[2]));
        assert_eq!(view.token_owning(u64::MAX), Some(tokens[0]));
        for position in [0, tokens[0], tokens[3] + 1, u64::MAX / 3] {
            let token = view.token_owning(position).unwrap();
            assert_eq!(
                view.ring.owner_of_hash(position).unwrap(),
                view.ring.owner_of_hash(token).unwrap()
            );
        }
        assert_eq!(View::of(&ledger(0)).token_owning(5), None);
        assert_eq!(
            view.member("m1").map(|m| m.address.as_str()),
            Some("10.0.0.1:1")
        );
        assert!(view.member("m9").is_none());
    }

    /// The ledger's snapshot, stamped as the view stamps it.
    fn stamped(ledger: &RingLedger, view: &View) -> pb::RingSnapshot {
        pb::RingSnapshot {
            taken_at: Some(Timestamp::of(view.made_at)),
            ..ledger.snapshot().unwrap()
        }
    }

    #[test]
    fn the_lazy_snapshot_is_the_ledgers() {
        let ledger = ledger(3);
        let view = View::of(&ledger);
        assert_eq!(*view.snapshot().unwrap(), stamped(&ledger, &view));
        assert!(Arc::ptr_eq(
            &view.snapshot().unwrap(),
            &view.snapshot().unwrap()
        ));
    }

    #[test]
    fn the_snapshot_to_store_is_the_same_and_not_kept() {
        let ledger = ledger(3);
        let view = View::of(&ledger);
        assert_eq!(view.snapshot_to_store().unwrap(), stamped(&ledger, &view));
        assert!(view.snapshot.get().is_none(), "the view kept it");
        // Once a server has built it, the writer gets a copy of that one.
        let kept = view.snapshot().unwrap();
        assert_eq!(view.snapshot_to_store().unwrap(), *kept);
    }

    #[test]
    fn subscribers_see_updates_after_their_view_only() {
        let telemetry = ringside_kit::Telemetry::new("reducer").unwrap();
        let shared = Shared::new(4, crate::metrics::Metrics::new(&telemetry));
        assert!(shared.subscribe().is_none());
        let mut ledger = ledger(2);
        shared.publish(Arc::new(View::of(&ledger)), None);
        let (first, mut rx) = shared.subscribe().unwrap();
        assert_eq!(first.epoch, 1);
        let left = pb::MemberLeft {
            member_id: "m0".into(),
            ..Default::default()
        };
        let ringside_events::Outcome::Rebalanced(event) = ledger.apply(2, &left.into()) else {
            panic!("no epoch");
        };
        shared.publish(Arc::new(View::of(&ledger)), Some((&event, 9)));
        let update = rx.try_recv().unwrap();
        assert_eq!((update.epoch, update.sequence), (2, 9));
        assert_eq!(update.event().unwrap(), *event, "the event as it was made");
        assert!(shared.is_serving());
    }
}
