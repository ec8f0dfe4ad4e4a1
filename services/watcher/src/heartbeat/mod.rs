//! The heartbeat source: membership from node heartbeats on core NATS, for local mode,
//! VMs and anything without Kubernetes.
//!
//! Nodes beat on `ringside.<ring>.heartbeat.<node>` ([`Beacon`]). Every heartbeat
//! watcher of a ring listens to `ringside.<ring>.heartbeat.*` and keeps the live set
//! ([`HeartbeatTracker`]), but only the one holding the ring's lease ([`LeaseKeeper`])
//! publishes: joins, leaves (missed beats, goodbyes), and syncs of the live set, the
//! first once it has listened for the miss window (so a restarted or newly leading
//! watcher never evicts a live member it has not heard yet), then every
//! `sync_interval`. A standby keeps listening and takes over when the lease goes
//! stale, starting with a sync.
//!
//! # Layout
//! - [`config`]: [`HeartbeatConfig`] and its settings.
//! - [`tracker`]: [`HeartbeatTracker`], heartbeats and deadlines -> facts. Pure.
//! - [`lease`]: [`LeaseKeeper`], the per-ring lease in the KV bucket `RINGSIDE_LEASES`.
//! - [`beacon`]: [`Beacon`], the sending side (nodes, stand-in members).
//! - [`Heartbeats`]: the source as the service runs it ([`HeartbeatWatcher`]): its
//!   [`Status`], its readiness (`listening`: subscribed with the lease keeper running,
//!   as holder or standby), its metrics, and the loop joining the parts; [`run`] runs
//!   it without the metrics address.

pub mod beacon;
pub mod config;
pub mod lease;
pub mod tracker;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt;
use ringside_events::{Body, codec, error_chain, subject};
use ringside_kit::{Condition, ConfigError, Readiness, Schema, Telemetry};
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, sleep_until};

pub use beacon::{Beacon, BeaconError, new_incarnation};
pub use config::HeartbeatConfig;
pub use lease::{LeaseKeeper, LeaseState};
pub use tracker::{HeartbeatTracker, Refused};

use crate::WatcherError;
use crate::metrics::{HeartbeatMetrics, Metrics};
use crate::publish::{MembershipPublisher, connect, fact_name, store};
use crate::service::{Source, Watcher};

/// At most one warning about refused heartbeats per this period (a misconfigured node
/// beats every second).
const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(10);
/// Wait before trying a sync again after the last stored fact could not be read.
const HEAD_RETRY: Duration = Duration::from_secs(1);

/// What a heartbeat watcher is doing: its role. Its readiness follows it (`listening`
/// from `Standby` on), and so does `ringside_watcher_lease_held`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Status {
    /// Connecting, subscribing, opening the lease bucket.
    #[default]
    Starting,
    /// Listening; another instance holds the lease (or nobody could be asked yet).
    Standby,
    /// Holding the lease; `synced` once its first sync is stored.
    Leading {
        /// The first sync of this leadership is stored.
        synced: bool,
    },
}

impl Status {
    /// Listening, as a standby or as the leader.
    pub fn is_listening(self) -> bool {
        !matches!(self, Status::Starting)
    }
}

/// The heartbeat watcher: `ringside watcher heartbeat`.
pub type HeartbeatWatcher = Watcher<Heartbeats>;

impl HeartbeatWatcher {
    /// What the watcher is doing, as it changes.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.source().reports.status.subscribe()
    }
}

/// The heartbeat source, set up and not yet running.
#[derive(Debug)]
pub struct Heartbeats {
    config: HeartbeatConfig,
    reports: Reports,
}

impl Source for Heartbeats {
    const SCHEMA: &'static Schema = &config::SCHEMA;
    type Config = HeartbeatConfig;

    fn config(map: &BTreeMap<String, String>) -> Result<HeartbeatConfig, ConfigError> {
        HeartbeatConfig::from_map(map)
    }

    fn metrics_addr(config: &HeartbeatConfig) -> SocketAddr {
        config.metrics_addr
    }

    fn new(config: HeartbeatConfig, readiness: &Readiness, telemetry: &Telemetry) -> Heartbeats {
        Heartbeats {
            config,
            reports: Reports::new(readiness, telemetry),
        }
    }

    async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), WatcherError> {
        listen(self.config, self.reports, shutdown).await
    }
}

/// Where a running heartbeat source reports what it does.
#[derive(Debug)]
struct Reports {
    readiness: Readiness,
    listening: Condition,
    status: watch::Sender<Status>,
    metrics: Metrics,
    heartbeats: HeartbeatMetrics,
}

impl Reports {
    fn new(readiness: &Readiness, telemetry: &Telemetry) -> Reports {
        let listening = readiness.condition("listening");
        let (status, watched) = watch::channel(Status::Starting);
        Reports {
            readiness: readiness.clone(),
            listening,
            status,
            metrics: Metrics::new(telemetry),
            heartbeats: HeartbeatMetrics::new(telemetry, move || {
                matches!(*watched.borrow(), Status::Leading { .. })
            }),
        }
    }

    fn set(&self, status: Status) {
        self.status.send_replace(status);
        self.listening.set(status.is_listening());
    }
}

/// The loop, until `shutdown` completes; on the way out it releases the lease if it
/// holds it.
async fn listen(
    config: HeartbeatConfig,
    reports: Reports,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WatcherError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let client = tokio::select! {
        () = &mut shutdown => return Ok(()),
        c = connect(&config.nats, &reports.readiness) => c?,
    };
    let ring = config.nats.ring.clone();
    let publisher = MembershipPublisher::new(client.clone(), &config.nats, reports.metrics.clone());
    let holder = format!("{}#{}", config.nats.producer, new_incarnation());
    let keeper = LeaseKeeper::open(client.clone(), &ring, holder, config.lease_ttl).await?;
    let beats = client
        .subscribe(subject::heartbeat_any(&ring))
        .await
        .map_err(WatcherError::Subscribe)?;
    let (lease_tx, lease_rx) = watch::channel(LeaseState::Standby);
    let (release, released) = oneshot::channel::<()>();
    // Aborted if this future is dropped (cancelled): a keeper left running would renew
    // a lease nobody uses, and no standby could ever take over.
    let mut keeper = KeeperTask(Some(tokio::spawn(keeper.run(lease_tx, async move {
        // A dropped sender also means release.
        let _ = released.await;
    }))));
    tracing::info!(%ring, subject = %subject::heartbeat_any(&ring), missed_beats = config.missed_beats, interval = ?config.interval, "Listening to heartbeats.");
    let mut session = Session {
        tracker: HeartbeatTracker::new(
            ring.as_str(),
            config.interval,
            config.missed_beats,
            Instant::now(),
        ),
        config,
        publisher,
        lease: lease_rx,
        leading: None,
        reports,
        refused: 0,
        refusal_logged: None,
    };
    session.reports.set(Status::Standby);
    let result = session.run(beats, shutdown.as_mut()).await;
    let _ = release.send(());
    if let Some(task) = keeper.0.take()
        && let Err(e) = task.await
    {
        tracing::error!(error = %e, "The lease keeper failed.");
    }
    session.reports.set(Status::Starting);
    result
}

/// The lease keeper's task, aborted on drop unless taken out to be awaited.
struct KeeperTask(Option<tokio::task::JoinHandle<()>>);

impl Drop for KeeperTask {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// The leader's bookkeeping.
#[derive(Debug)]
struct Leading {
    /// The first sync of this leadership is stored; joins and leaves flow.
    synced: bool,
    /// When to sync next.
    next_sync: Instant,
    /// Name of the last fact we stored ([`fact_name`]): if it still is the head of the
    /// subject at the next periodic sync, nobody else wrote and there is nothing to
    /// restate.
    last_fact: Option<String>,
}

/// Why a publish did not complete.
enum Stop {
    Shutdown,
    LeaseLost,
}

/// What the loop does next.
enum Step {
    Shutdown,
    Beat(Option<async_nats::Message>),
    Lease(bool),
    LeaseRanOut,
    Deadline,
    Sync,
}

/// One running heartbeat watcher.
struct Session {
    config: HeartbeatConfig,
    tracker: HeartbeatTracker,
    publisher: MembershipPublisher,
    lease: watch::Receiver<LeaseState>,
    leading: Option<Leading>,
    reports: Reports,
    refused: u64,
    refusal_logged: Option<Instant>,
}

impl Session {
    async fn run<F: Future<Output = ()>>(
        &mut self,
        mut beats: async_nats::Subscriber,
        mut shutdown: Pin<&mut F>,
    ) -> Result<(), WatcherError> {
        loop {
            let deadline = self.tracker.next_deadline();
            let sync_at = self.leading.as_ref().map(|l| l.next_sync);
            let until = match (*self.lease.borrow(), &self.leading) {
                (LeaseState::Held { until }, Some(_)) => Some(until),
                _ => None,
            };
            let step = tokio::select! {
                // Beats before timers: a beat that is already here must count before
                // its sender's deadline is judged.
                biased;
                () = shutdown.as_mut() => Step::Shutdown,
                msg = beats.next() => Step::Beat(msg),
                changed = self.lease.changed() => Step::Lease(changed.is_ok()),
                () = sleep_until(until.unwrap_or_else(Instant::now)), if until.is_some() => Step::LeaseRanOut,
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => Step::Deadline,
                () = sleep_until(sync_at.unwrap_or_else(Instant::now)), if sync_at.is_some() => Step::Sync,
            };
            let now = Instant::now();
            let flow = match step {
                Step::Shutdown => return Ok(()),
                Step::Beat(None) => return Err(WatcherError::SubscriptionEnded),
                Step::Beat(Some(msg)) => match self.take_beat(&msg, now) {
                    Some(body) => self.publish_live(body, shutdown.as_mut()).await?,
                    None => Flow::Go,
                },
                Step::Lease(false) => return Err(WatcherError::LeaseKeeperEnded),
                Step::Lease(true) => {
                    self.on_lease(now);
                    Flow::Go
                }
                Step::LeaseRanOut => {
                    tracing::warn!(ring = %self.publisher.ring(), "The lease ran out before it could be renewed; standing by.");
                    self.step_down();
                    Flow::Go
                }
                Step::Deadline => {
                    let mut flow = Flow::Go;
                    for body in self.tracker.expire(now) {
                        flow = self.publish_live(body, shutdown.as_mut()).await?;
                        if matches!(flow, Flow::Shutdown) {
                            break;
                        }
                    }
                    flow
                }
                Step::Sync => self.sync(now, shutdown.as_mut()).await?,
            };
            if matches!(flow, Flow::Shutdown) {
                return Ok(());
            }
        }
    }

    /// Decodes and checks a heartbeat message and feeds it to the tracker.
    fn take_beat(&mut self, msg: &async_nats::Message, now: Instant) -> Option<Body> {
        // A node beats on its own subject, for this ring (the subscription is this
        // ring's): anything else is a misconfigured (or impersonating) sender.
        let event = match codec::decode_on(&msg.subject, &msg.payload) {
            Ok(event) => event,
            Err(e) => {
                self.refuse(&msg.subject, &error_chain(&e));
                return None;
            }
        };
        let Body::HeartbeatSent(hb) = event.body() else {
            self.refuse(&msg.subject, "not a heartbeat");
            return None;
        };
        match self.tracker.beat(hb, now) {
            Ok(fact) => fact,
            Err(why) => {
                self.refuse(&msg.subject, &why.to_string());
                None
            }
        }
    }

    /// Counts a refused heartbeat and warns, at most once per [`REFUSAL_LOG_PERIOD`].
    fn refuse(&mut self, subject: &str, why: &str) {
        self.refused += 1;
        self.reports.heartbeats.refused();
        let now = Instant::now();
        if self
            .refusal_logged
            .is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_PERIOD)
        {
            tracing::warn!(%subject, reason = why, refused_so_far = self.refused, "Heartbeat refused.");
            self.refusal_logged = Some(now);
        }
    }

    /// Follows the lease keeper's report.
    fn on_lease(&mut self, now: Instant) {
        let held = self.lease.borrow_and_update().held_at(now);
        match (held, self.leading.is_some()) {
            (true, false) => {
                let next_sync = self.tracker.sync_ready_at().max(now);
                tracing::info!(ring = %self.publisher.ring(), sync_in = ?next_sync.duration_since(now), "Leading the ring's membership; syncing once the listening window has passed.");
                self.leading = Some(Leading {
                    synced: false,
                    next_sync,
                    last_fact: None,
                });
                self.reports.set(Status::Leading { synced: false });
            }
            (false, true) => self.step_down(),
            _ => {}
        }
    }

    fn step_down(&mut self) {
        if self.leading.take().is_some() {
            tracing::info!(ring = %self.publisher.ring(), "Standing by: another instance may lead.");
            self.reports.set(Status::Standby);
        }
    }

    /// Publishes a join or leave if we lead and have synced (before the first sync,
    /// the sync will state it).
    async fn publish_live<F: Future<Output = ()>>(
        &mut self,
        body: Body,
        shutdown: Pin<&mut F>,
    ) -> Result<Flow, WatcherError> {
        if !self.leading.as_ref().is_some_and(|l| l.synced) {
            return Ok(Flow::Go);
        }
        self.publish(body, shutdown).await
    }

    /// Restates the live set: at the start of a leadership (always) and every
    /// `sync_interval` (unless our own last fact is still the head: nothing to repair).
    async fn sync<F: Future<Output = ()>>(
        &mut self,
        now: Instant,
        shutdown: Pin<&mut F>,
    ) -> Result<Flow, WatcherError> {
        let head = match self.publisher.head().await {
            Ok(head) => head,
            Err(e) => {
                tracing::warn!(error = %e, "Could not read the last membership fact; syncing later.");
                if let Some(l) = self.leading.as_mut() {
                    l.next_sync = now + HEAD_RETRY;
                }
                return Ok(Flow::Go);
            }
        };
        let Some(leading) = self.leading.as_mut() else {
            return Ok(Flow::Go);
        };
        let first = !leading.synced;
        if !first && head.is_some() && head == leading.last_fact {
            leading.next_sync = now + self.config.sync_interval;
            return Ok(Flow::Go);
        }
        let body = self.tracker.sync(head.as_deref());
        let flow = self.publish(body, shutdown).await?;
        if let Some(leading) = self.leading.as_mut()
            && matches!(flow, Flow::Go)
            && leading.last_fact.is_some()
        {
            leading.synced = true;
            leading.next_sync = Instant::now() + self.config.sync_interval;
            if first {
                self.reports.set(Status::Leading { synced: true });
            }
        }
        Ok(flow)
    }

    /// Stores one fact while we hold the lease; gives up (and stands by) if the lease
    /// is lost meanwhile.
    async fn publish<F: Future<Output = ()>>(
        &mut self,
        body: Body,
        shutdown: Pin<&mut F>,
    ) -> Result<Flow, WatcherError> {
        let event = self.publisher.event(body)?;
        let summary = event.summary();
        let mut lease = self.lease.clone();
        let stop = async move {
            tokio::select! {
                () = shutdown => Stop::Shutdown,
                () = lease_lost(&mut lease) => Stop::LeaseLost,
            }
        };
        if let Some(l) = self.leading.as_mut() {
            // Cleared until stored: a fact that may not have been stored must not
            // vouch for the ring at the next periodic sync.
            l.last_fact = None;
        }
        match store(&self.publisher, &event, &summary, stop).await? {
            Ok(_) => {
                if let Some(l) = self.leading.as_mut() {
                    l.last_fact = Some(fact_name(&event));
                }
                Ok(Flow::Go)
            }
            Err(Stop::Shutdown) => Ok(Flow::Shutdown),
            Err(Stop::LeaseLost) => {
                tracing::warn!(change = %summary, "Lease lost while publishing; the new leader's sync restates the set.");
                self.step_down();
                Ok(Flow::Go)
            }
        }
    }
}

/// Whether the loop goes on.
enum Flow {
    Go,
    Shutdown,
}

/// Completes when the lease is no longer ours: the keeper says so, or the lease runs
/// out before a renewal is reported.
async fn lease_lost(lease: &mut watch::Receiver<LeaseState>) {
    loop {
        let state = *lease.borrow_and_update();
        let LeaseState::Held { until } = state else {
            return;
        };
        tokio::select! {
            () = sleep_until(until) => return,
            changed = lease.changed() => if changed.is_err() { return },
        }
    }
}
