//! The reading side: [`RingClient`] (the current ring, lookups, readiness, counters)
//! and [`Subscription`] (the stream of changes), over the state the follower shares.
//!
//! # One lock for the view and the feed
//! The follower installs a new view and sends its update while holding the feed's
//! lock; a new subscription takes its receiver and the current view under the same
//! lock. So the first thing a subscription yields (the view it started from) and the
//! updates after it neither overlap nor leave a hole, however busy the follower is.
//! Readers of the view alone ([`RingClient::ring`]) take no lock but the watch
//! channel's, for as long as it takes to clone an `Arc`.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use ringside_events::{RingName, pb};
use tokio::sync::{broadcast, watch};

use crate::error::{ClientError, LookupError};
use crate::rebalance::Rebalance;
use crate::stats::{ClientStats, Count, Counters};
use crate::view::{KeyRange, RingView};

/// What to follow and how.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub(crate) ring: RingName,
    pub(crate) buffer: NonZeroUsize,
    pub(crate) label: Option<String>,
}

impl ClientConfig {
    /// Changes a subscription may fall behind by default before it is re-synced
    /// ([`ClientConfig::buffer`]): 64.
    pub const DEFAULT_BUFFER: NonZeroUsize = NonZeroUsize::MIN.saturating_add(63);

    /// Follow `ring`, with the default buffer and no label.
    pub fn new(ring: RingName) -> ClientConfig {
        ClientConfig {
            ring,
            buffer: Self::DEFAULT_BUFFER,
            label: None,
        }
    }

    /// Changes a subscription may fall behind before it is told to start again from
    /// the current ring ([`SyncReason::Lagged`]). Each change held costs its decoded
    /// event (about 200 KB at 1000 members, a few KB for a small ring), once for all
    /// subscriptions.
    pub fn buffer(mut self, changes: NonZeroUsize) -> ClientConfig {
        self.buffer = changes;
        self
    }

    /// Who follows (a node id, a service name): shown in the consumer's description
    /// on the server and in the follower's logs.
    pub fn label(mut self, who: impl Into<String>) -> ClientConfig {
        self.label = Some(who.into());
        self
    }

    /// The ring followed.
    pub fn ring(&self) -> &RingName {
        &self.ring
    }
}

/// Why a subscription is told to forget what it knew and start from a whole ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncReason {
    /// The follower's first sync: the newest snapshot and every epoch stored after it.
    Start,
    /// The ring a new subscription starts from (the follower had synced before).
    Subscribed,
    /// The follower found a gap in the epochs the stream delivered and re-synced from
    /// the newest snapshot.
    Gap,
    /// The next epoch did not fit the follower's ring (its previous checksum, or the
    /// ring it rebuilds) and the follower re-synced from the newest snapshot.
    Mismatch,
    /// This subscription fell more than the buffer behind: the changes it missed are
    /// gone, it starts again from the current ring.
    Lagged,
}

/// One item of a [`Subscription`].
#[derive(Clone, Debug)]
pub enum Change {
    /// Start from this whole ring (reconcile from scratch): the first item of every
    /// subscription once the follower has synced, and after any re-sync.
    Synced {
        /// The ring.
        ring: Arc<RingView>,
        /// Why.
        reason: SyncReason,
    },
    /// The next epoch, applied.
    Rebalanced {
        /// The epoch's event.
        rebalance: Arc<Rebalance>,
        /// Ranges the subscription's member owns now and did not before (empty for a
        /// subscription without a member).
        gained: Vec<KeyRange>,
        /// Ranges the subscription's member owned before and does not any more.
        lost: Vec<KeyRange>,
    },
}

impl Change {
    /// The epoch the ring is at after this change.
    pub fn epoch(&self) -> u64 {
        match self {
            Change::Synced { ring, .. } => ring.epoch(),
            Change::Rebalanced { rebalance, .. } => rebalance.epoch(),
        }
    }
}

/// An update on the shared feed, before it is made per-member.
#[derive(Clone, Debug)]
pub(crate) enum Update {
    Synced(Arc<RingView>, SyncReason),
    Rebalanced(Arc<Rebalance>),
}

#[derive(Clone, Debug)]
struct State {
    /// `None` until the first sync.
    view: Option<Arc<RingView>>,
    /// Whether the follower still runs (or has yet to be run).
    running: bool,
}

/// What the follower and the readers share.
#[derive(Debug)]
pub(crate) struct Shared {
    state: watch::Sender<State>,
    /// The feed; `None` once the follower stopped (subscriptions then end). Its lock
    /// is the publish lock (see the module docs).
    feed: Mutex<Option<broadcast::Sender<Update>>>,
    pub(crate) counters: Counters,
}

impl Shared {
    fn new(buffer: NonZeroUsize) -> Shared {
        let (feed, _) = broadcast::channel(buffer.get());
        Shared {
            state: watch::Sender::new(State {
                view: None,
                running: true,
            }),
            feed: Mutex::new(Some(feed)),
            counters: Counters::default(),
        }
    }

    /// Installs `view` as the current ring and sends `update`, under the publish lock.
    pub(crate) fn publish(&self, view: Arc<RingView>, update: Update) {
        let feed = self.feed.lock().unwrap_or_else(PoisonError::into_inner);
        self.state.send_modify(|s| s.view = Some(view));
        if let Some(feed) = feed.as_ref() {
            // An error only says nobody subscribes right now.
            let _ = feed.send(update);
        }
    }

    /// The follower stopped: `ready` stops waiting, subscriptions end once drained.
    pub(crate) fn stop(&self) {
        let mut feed = self.feed.lock().unwrap_or_else(PoisonError::into_inner);
        feed.take();
        self.state.send_modify(|s| s.running = false);
    }

    fn view(&self) -> Option<Arc<RingView>> {
        self.state.borrow().view.clone()
    }
}

/// Makes the two halves of a ring client: the [`crate::Follower`] to run (it
/// connects with `nats`, whose user picks what it may read: `node`, `bridge` and
/// `admin` may read the stream and the snapshot bucket), and the [`RingClient`] to
/// read the ring from, as many clones as needed.
pub fn follow(nats: async_nats::Client, config: ClientConfig) -> (crate::Follower, RingClient) {
    let shared = Arc::new(Shared::new(config.buffer));
    let client = RingClient {
        shared: Arc::clone(&shared),
    };
    (crate::Follower::new(nats, config, shared), client)
}

/// The ring as the follower last applied it. Cheap to clone; every read takes the
/// current immutable [`RingView`].
#[derive(Clone, Debug)]
pub struct RingClient {
    shared: Arc<Shared>,
}

/// The owner of a key at one epoch (owned: outlives the view it came from).
#[derive(Clone, Debug, PartialEq)]
pub struct Owner {
    /// The epoch of the ring that answered.
    pub epoch: u64,
    /// The owner, with its address.
    pub member: pb::Member,
}

/// A key's owner and its next distinct members at one epoch, owner first.
#[derive(Clone, Debug, PartialEq)]
pub struct Successors {
    /// The epoch of the ring that answered.
    pub epoch: u64,
    /// Owner first, then clockwise.
    pub members: Vec<pb::Member>,
}

impl RingClient {
    /// The current ring, or `None` before the first sync. Keep the `Arc` for a set of
    /// lookups that must agree with each other (one epoch).
    pub fn ring(&self) -> Option<Arc<RingView>> {
        self.shared.view()
    }

    /// The current epoch, or `None` before the first sync.
    pub fn epoch(&self) -> Option<u64> {
        self.ring().map(|v| v.epoch())
    }

    /// Whether the ring has been synced once (and so answers lookups).
    pub fn is_ready(&self) -> bool {
        self.shared.state.borrow().view.is_some()
    }

    /// Waits for the first sync and returns that ring (at once if synced before).
    /// [`ClientError::Stopped`] if the follower stops (or was dropped, or never run)
    /// before.
    pub async fn ready(&self) -> Result<Arc<RingView>, ClientError> {
        let mut state = self.shared.state.subscribe();
        let state = state
            .wait_for(|s| s.view.is_some() || !s.running)
            .await
            .map_err(|_| ClientError::Stopped)?;
        state.view.clone().ok_or(ClientError::Stopped)
    }

    /// The owner of `key` in the current ring.
    pub fn lookup(&self, key: &[u8]) -> Result<Owner, LookupError> {
        let view = self.ring().ok_or(LookupError::NotReady)?;
        let member = view.lookup(key)?.clone();
        Ok(Owner {
            epoch: view.epoch(),
            member,
        })
    }

    /// The owner of `key` and the next `n - 1` distinct members clockwise, in the
    /// current ring.
    pub fn successors(&self, key: &[u8], n: usize) -> Result<Successors, LookupError> {
        let view = self.ring().ok_or(LookupError::NotReady)?;
        let members = view.successors(key, n)?.into_iter().cloned().collect();
        Ok(Successors {
            epoch: view.epoch(),
            members,
        })
    }

    /// A stream of changes, with the ranges `member` gained and lost in each (none
    /// for `None`). It starts with [`Change::Synced`] (the current ring, once synced).
    pub fn subscribe(&self, member: Option<&str>) -> Subscription {
        let feed = self
            .shared
            .feed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let updates = feed.as_ref().map(broadcast::Sender::subscribe);
        let first = self.shared.view();
        drop(feed);
        Subscription {
            shared: Arc::clone(&self.shared),
            updates,
            first,
            member: member.map(str::to_owned),
            floor: None,
        }
    }

    /// The follower's counters.
    pub fn stats(&self) -> ClientStats {
        self.shared.counters.read()
    }
}

/// The changes of the ring, in order, for one member (or none): every epoch applied
/// after the ring it started from, each once; a re-sync or a lag as
/// [`Change::Synced`].
#[derive(Debug)]
pub struct Subscription {
    shared: Arc<Shared>,
    /// `None` once the follower stopped and everything was read.
    updates: Option<broadcast::Receiver<Update>>,
    /// The ring to yield first.
    first: Option<Arc<RingView>>,
    member: Option<String>,
    /// After a lag: the sequence of the ring yielded instead of what was missed;
    /// updates at or before it are in that ring already.
    floor: Option<u64>,
}

impl Subscription {
    /// The member whose gained and lost ranges each change carries.
    pub fn member(&self) -> Option<&str> {
        self.member.as_deref()
    }

    /// The next change; `None` once the follower has stopped and every change before
    /// was read.
    pub async fn next(&mut self) -> Option<Change> {
        if let Some(ring) = self.first.take() {
            return Some(Change::Synced {
                ring,
                reason: SyncReason::Subscribed,
            });
        }
        loop {
            let updates = self.updates.as_mut()?;
            let update = match updates.recv().await {
                Ok(update) => update,
                Err(broadcast::error::RecvError::Closed) => {
                    self.updates = None;
                    return None;
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.shared.counters.add(Count::SubscriberLagged);
                    tracing::warn!(
                        missed,
                        member = self.member.as_deref().unwrap_or(""),
                        "A ring subscription fell behind its buffer; it starts again from the current ring."
                    );
                    // Lagging implies a sync happened, so there is a current ring.
                    let Some(ring) = self.shared.view() else {
                        continue;
                    };
                    self.floor = Some(ring.sequence());
                    return Some(Change::Synced {
                        ring,
                        reason: SyncReason::Lagged,
                    });
                }
            };
            let (sequence, change) = match update {
                Update::Synced(ring, reason) => (ring.sequence(), Change::Synced { ring, reason }),
                Update::Rebalanced(rebalance) => {
                    let (gained, lost) = match self.member.as_deref() {
                        Some(m) => (rebalance.gained(m), rebalance.lost(m)),
                        None => (Vec::new(), Vec::new()),
                    };
                    let change = Change::Rebalanced {
                        gained,
                        lost,
                        rebalance: Arc::clone(&rebalance),
                    };
                    (rebalance.sequence(), change)
                }
            };
            if self.floor.is_some_and(|floor| sequence <= floor) {
                continue;
            }
            return Some(change);
        }
    }
}
