//! `RingService` over gRPC: `GetRing`, `Lookup`, `Successors`, `WatchRing`, answered
//! from the served [`View`] (the ring at the last stored epoch).
//!
//! # Status codes
//! | condition | status |
//! |---|---|
//! | not caught up with the stream yet | `UNAVAILABLE` (retry) |
//! | ring name invalid | `INVALID_ARGUMENT` |
//! | another ring than this reducer's (empty means this one) | `NOT_FOUND` |
//! | empty key, key over the limit, `n` = 0 | `INVALID_ARGUMENT` |
//! | empty ring, `n` over the member count | `FAILED_PRECONDITION` |
//! | a `WatchRing` client fell behind the buffer | `ABORTED` (reconnect: fresh snapshot) |
//! | the reducer is stopping | `UNAVAILABLE` (reconnect to another instance) |

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use ringside_events::{RingName, pb};
use tokio::sync::{broadcast, watch};
use tonic::{Request, Response, Status};

use crate::engine::wait_for;
use crate::metrics::Metrics;
use crate::state::{Shared, Update, View};

/// The `RingService` implementation.
#[derive(Clone, Debug)]
pub struct RingApi {
    shared: Arc<Shared>,
    ring: RingName,
    max_key_bytes: usize,
}

impl RingApi {
    /// The service for `ring`, refusing keys over `max_key_bytes`.
    pub fn new(shared: Arc<Shared>, ring: RingName, max_key_bytes: usize) -> Self {
        Self {
            shared,
            ring,
            max_key_bytes,
        }
    }

    /// Checks the requested ring name (empty: this reducer's ring).
    fn check_ring(&self, ring: &str) -> Result<(), Status> {
        if ring.is_empty() || ring == self.ring.as_str() {
            return Ok(());
        }
        match RingName::new(ring) {
            Err(e) => Err(Status::invalid_argument(format!("invalid ring name: {e}"))),
            Ok(_) => Err(Status::not_found(format!(
                "this reducer serves ring '{}', not '{ring}'",
                self.ring
            ))),
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<(), Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument("the key is empty"));
        }
        if key.len() > self.max_key_bytes {
            return Err(Status::invalid_argument(format!(
                "the key is {} bytes long; the limit is {} bytes",
                key.len(),
                self.max_key_bytes
            )));
        }
        Ok(())
    }

    fn not_ready(&self) -> Status {
        let m = &self.shared.metrics;
        Status::unavailable(format!(
            "the reducer is catching up with the stream (at membership sequence {}, {} events behind); retry shortly",
            m.membership_sequence
                .load(std::sync::atomic::Ordering::Relaxed),
            m.lag.load(std::sync::atomic::Ordering::Relaxed),
        ))
    }

    fn view(&self) -> Result<Arc<View>, Status> {
        self.shared.view().ok_or_else(|| self.not_ready())
    }
}

/// The view's snapshot, or `INTERNAL` if the ring cannot be described (a bug).
async fn snapshot_of(view: &Arc<View>) -> Result<Arc<pb::RingSnapshot>, Status> {
    view.snapshot_blocking()
        .await
        .map_err(|e| Status::internal(format!("cannot describe the ring: {e}")))
}

fn empty_ring() -> Status {
    Status::failed_precondition("the ring has no members")
}

#[tonic::async_trait]
impl pb::ring_service_server::RingService for RingApi {
    async fn get_ring(
        &self,
        request: Request<pb::GetRingRequest>,
    ) -> Result<Response<pb::GetRingResponse>, Status> {
        self.check_ring(&request.get_ref().ring)?;
        let snapshot = snapshot_of(&self.view()?).await?;
        Ok(Response::new(pb::GetRingResponse {
            snapshot: Some((*snapshot).clone()),
        }))
    }

    async fn lookup(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        let request = request.get_ref();
        self.check_ring(&request.ring)?;
        self.check_key(&request.key)?;
        let view = self.view()?;
        let position = ringside_ring::hash_key(&request.key);
        let (Ok(owner), Some(token)) = (
            view.ring.owner_of_hash(position),
            view.token_owning(position),
        ) else {
            return Err(empty_ring());
        };
        let owner = view
            .member(owner)
            .ok_or_else(|| Status::internal("the served ring is inconsistent"))?;
        Ok(Response::new(pb::LookupResponse {
            owner: Some(owner.clone()),
            position,
            token,
            epoch: view.epoch,
            rebalance_sequence: view.rebalance_sequence,
        }))
    }

    async fn successors(
        &self,
        request: Request<pb::SuccessorsRequest>,
    ) -> Result<Response<pb::SuccessorsResponse>, Status> {
        let request = request.get_ref();
        self.check_ring(&request.ring)?;
        self.check_key(&request.key)?;
        if request.n == 0 {
            return Err(Status::invalid_argument("n must be at least 1"));
        }
        let view = self.view()?;
        if view.ring.is_empty() {
            return Err(empty_ring());
        }
        let n = request.n as usize;
        if n > view.ring.len() {
            return Err(Status::failed_precondition(format!(
                "asked for {n} distinct members but the ring has {}",
                view.ring.len()
            )));
        }
        let position = ringside_ring::hash_key(&request.key);
        let ids = view
            .ring
            .successors_of_hash(position, n)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let members = ids
            .into_iter()
            .map(|id| view.member(id).cloned())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Status::internal("the served ring is inconsistent"))?;
        Ok(Response::new(pb::SuccessorsResponse {
            members,
            position,
            epoch: view.epoch,
            rebalance_sequence: view.rebalance_sequence,
        }))
    }

    type WatchRingStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchRingResponse, Status>> + Send + 'static>>;

    async fn watch_ring(
        &self,
        request: Request<pb::WatchRingRequest>,
    ) -> Result<Response<Self::WatchRingStream>, Status> {
        self.check_ring(&request.get_ref().ring)?;
        let (view, updates) = self.shared.subscribe().ok_or_else(|| self.not_ready())?;
        // The view is immutable: its snapshot can be built after the lock is released;
        // updates after it queue in the subscription meanwhile.
        let snapshot = snapshot_of(&view).await?;
        let first = pb::WatchRingResponse {
            sequence: view.rebalance_sequence,
            update: Some(pb::watch_ring_response::Update::Snapshot(
                (*snapshot).clone(),
            )),
        };
        let state = Watching {
            first: Some(first),
            updates,
            epoch: view.epoch,
            stop: self.shared.stopping(),
            done: false,
            open: OpenWatcher::new(Arc::clone(&self.shared.metrics)),
        };
        Ok(Response::new(Box::pin(futures::stream::unfold(
            state,
            Watching::next,
        ))))
    }
}

/// Counts an open `WatchRing` stream for as long as it lives.
struct OpenWatcher(Arc<Metrics>);

impl OpenWatcher {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics
            .watchers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(metrics)
    }
}

impl Drop for OpenWatcher {
    fn drop(&mut self) {
        self.0
            .watchers
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One `WatchRing` stream: the snapshot, then each next epoch.
struct Watching {
    first: Option<pb::WatchRingResponse>,
    updates: broadcast::Receiver<Arc<Update>>,
    /// The last epoch sent.
    epoch: u64,
    stop: watch::Receiver<bool>,
    done: bool,
    open: OpenWatcher,
}

impl Watching {
    async fn next(mut self) -> Option<(Result<pb::WatchRingResponse, Status>, Self)> {
        if self.done {
            return None;
        }
        if let Some(first) = self.first.take() {
            return Some((Ok(first), self));
        }
        loop {
            let received = tokio::select! {
                () = wait_for(self.stop.clone()) => {
                    return self.end(Status::unavailable("the reducer is stopping; reconnect"));
                }
                received = self.updates.recv() => received,
            };
            match received {
                // Already in the snapshot this client started from.
                Ok(update) if update.epoch <= self.epoch => {}
                Ok(update) if update.epoch == self.epoch + 1 => {
                    let event = match update.event() {
                        Ok(event) => event,
                        Err(err) => {
                            let status = Status::internal(format!(
                                "epoch {} could not be decoded ({err}); reconnect",
                                update.epoch
                            ));
                            return self.end(status);
                        }
                    };
                    self.epoch += 1;
                    let response = pb::WatchRingResponse {
                        sequence: update.sequence,
                        update: Some(pb::watch_ring_response::Update::Rebalanced(event)),
                    };
                    return Some((Ok(response), self));
                }
                Ok(update) => {
                    let status = Status::internal(format!(
                        "epoch {} follows epoch {}; reconnect",
                        update.epoch, self.epoch
                    ));
                    return self.end(status);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let metrics = Arc::clone(&self.open.0);
                    metrics.watcher_lagged();
                    let status = Status::aborted(format!(
                        "this watcher fell {missed} epochs behind the reducer; reconnect for a fresh snapshot"
                    ));
                    return self.end(status);
                }
                Err(broadcast::error::RecvError::Closed) => {
                    return self.end(Status::unavailable("the reducer is stopping; reconnect"));
                }
            }
        }
    }

    fn end(mut self, status: Status) -> Option<(Result<pb::WatchRingResponse, Status>, Self)> {
        self.done = true;
        Some((Err(status), self))
    }
}
