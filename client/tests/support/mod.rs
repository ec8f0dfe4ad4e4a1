//! Helpers of the client's tests: a real nats-server with `nats/local.conf`, a real
//! reducer in this process, a scripted membership churn with its offline fold (the
//! rings each epoch must give), and a client whose changes are collected.

// Helpers of tests: a failed unwrap is a failed test, which is what we want here.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringside_client::{Change, ClientConfig, ClientStats, RingClient, SyncReason};
use ringside_events::{
    Body, Event, Outcome, Publisher, RingLedger, RingName, ServiceUser, codec, pb, subject,
};
use ringside_ring::{Ring, RingConfig, Strategy};
use ringside_testkit::NatsServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long anything a test waits for may take (debug builds on a busy machine).
pub(crate) const WITHIN: Duration = Duration::from_secs(60);

/// Virtual nodes of the test rings: small, so debug builds fold quickly.
pub(crate) const VNODES: u32 = 16;

/// Member ids of the churn: `node-00` .. `node-07`.
pub(crate) const POOL: usize = 8;

/// The ring every test follows.
pub(crate) fn ring() -> RingName {
    RingName::new("orders").unwrap()
}

/// A member of the pool.
pub(crate) fn member_id(i: usize) -> String {
    format!("node-{i:02}")
}

/// A provisioned server and clients of the users the tests act as.
pub(crate) struct Bus {
    /// The server.
    pub(crate) server: NatsServer,
    /// An admin client: provisioning, membership events, inspection.
    pub(crate) admin: async_nats::Client,
    /// The reducer user: the only one that may store on the rebalance subject (junk,
    /// in tests).
    pub(crate) reducer: async_nats::Client,
    publisher: Publisher,
    /// Every membership event published, in order.
    published: Mutex<Vec<Event>>,
}

impl Bus {
    /// Starts and provisions a server.
    pub(crate) async fn start() -> Bus {
        init_logs();
        let server = NatsServer::start_local_conf().await.unwrap();
        let admin = server.connect_provisioned().await.unwrap();
        let reducer = server.connect_as(ServiceUser::Reducer).await.unwrap();
        Bus {
            publisher: Publisher::new(admin.clone()),
            server,
            admin,
            reducer,
            published: Mutex::new(Vec::new()),
        }
    }

    /// A client of the `node` user, the one ring members follow with.
    pub(crate) async fn node_client(&self) -> async_nats::Client {
        self.server.connect_as(ServiceUser::Node).await.unwrap()
    }

    /// Publishes membership events one by one (each acknowledged, so the reducer folds
    /// them live, one epoch after the other).
    pub(crate) async fn publish(&self, events: &[Event]) {
        for event in events {
            self.publisher.publish(event).await.unwrap();
            self.published.lock().unwrap().push(event.clone());
        }
    }

    /// The offline fold of everything published: the ring after each epoch, in order
    /// (index 0 is the ring before epoch 1).
    pub(crate) fn rings(&self) -> Vec<Ring> {
        let config = RingConfig::new(Strategy::Balanced, VNODES).unwrap();
        let mut ledger = RingLedger::new(ring(), config);
        let mut rings = vec![ledger.ring().clone()];
        for (seq, event) in (1u64..).zip(self.published.lock().unwrap().iter()) {
            if let Outcome::Rebalanced(_) = ledger.apply(seq, event.body()) {
                rings.push(ledger.ring().clone());
            }
        }
        rings
    }

    /// The epoch the history published so far leads to.
    pub(crate) fn last_epoch(&self) -> u64 {
        self.rings().len() as u64 - 1
    }

    /// Stores `payload` on the rebalance subject as the reducer user, without a
    /// message id (a buggy writer): its stream sequence.
    pub(crate) async fn store_on_rebalance(&self, payload: Vec<u8>) -> u64 {
        jetstream::new(self.reducer.clone())
            .publish(subject::rebalance(&ring()), payload.into())
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence
    }

    /// The last stored rebalance event of the ring.
    pub(crate) async fn last_rebalance(&self) -> pb::RingRebalanced {
        let stream = jetstream::new(self.admin.clone())
            .get_stream(subject::STREAM_EVENTS)
            .await
            .unwrap();
        let stored = stream
            .direct_get_last_for_subject(subject::rebalance(&ring()))
            .await
            .unwrap();
        match codec::decode(&stored.payload).unwrap().into_body() {
            Body::RingRebalanced(r) => r,
            other => panic!("not a rebalance: {other:?}"),
        }
    }

    /// The newest snapshot of the ring in the bucket, if any.
    pub(crate) async fn latest_snapshot(&self) -> Option<pb::RingSnapshot> {
        let kv = jetstream::new(self.admin.clone())
            .get_key_value(subject::KV_SNAPSHOTS)
            .await
            .unwrap();
        let entry = kv
            .get(subject::latest_snapshot_key(&ring()))
            .await
            .unwrap()?;
        Some(codec::decode_snapshot(&entry).unwrap())
    }

    /// The names of the consumers of the rebalance subject the clients made.
    pub(crate) async fn client_consumers(&self) -> Vec<String> {
        use futures::TryStreamExt;
        let stream = jetstream::new(self.admin.clone())
            .get_stream(subject::STREAM_EVENTS)
            .await
            .unwrap();
        let infos: Vec<_> = stream.consumers().try_collect().await.unwrap();
        infos
            .into_iter()
            .filter(|i| i.config.filter_subject == subject::rebalance(&ring()))
            .map(|i| i.name)
            .collect()
    }

    /// The reducer's settings for this server, listeners on 127.0.0.1:0, with `extra`.
    pub(crate) fn reducer_map(&self, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let password = self.server.password("reducer").unwrap().to_string();
        let mut map: BTreeMap<String, String> = [
            ("RINGSIDE_RING", ring().to_string()),
            ("RINGSIDE_NATS_URL", self.server.url()),
            ("RINGSIDE_NATS_PASSWORD_REDUCER", password),
            ("RINGSIDE_REDUCER_INSTANCE", "a".to_string()),
            ("RINGSIDE_REDUCER_GRPC_ADDR", "127.0.0.1:0".to_string()),
            ("RINGSIDE_REDUCER_METRICS_ADDR", "127.0.0.1:0".to_string()),
            ("RINGSIDE_REDUCER_VNODES", VNODES.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        map.extend(ringside_testkit::settings(extra));
        map
    }
}

/// A reducer running in this process.
pub(crate) struct Reducer {
    /// Its gRPC address.
    pub(crate) grpc: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ringside_reducer::ReducerError>>,
}

impl Reducer {
    /// Binds and starts a reducer (`extra` settings over the defaults of
    /// [`Bus::reducer_map`]).
    pub(crate) async fn start(bus: &Bus, extra: &[(&str, &str)]) -> Reducer {
        let config = ringside_reducer::ReducerConfig::from_map(&bus.reducer_map(extra)).unwrap();
        let reducer = ringside_reducer::Reducer::bind(config).await.unwrap();
        let grpc = reducer.grpc_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(reducer.run(async {
            let _ = stopped.await;
        }));
        Reducer {
            grpc,
            stop: Some(stop),
            task,
        }
    }

    /// The ring it serves (`GetRing`), once it serves one at `epoch`.
    pub(crate) async fn ring_at(&self, epoch: u64) -> pb::RingSnapshot {
        let deadline = Instant::now() + WITHIN;
        loop {
            if let Some(snapshot) = self.get_ring().await
                && snapshot.epoch == epoch
            {
                return snapshot;
            }
            assert!(
                Instant::now() < deadline,
                "the reducer did not serve epoch {epoch} within {WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn get_ring(&self) -> Option<pb::RingSnapshot> {
        let mut client =
            pb::ring_service_client::RingServiceClient::connect(format!("http://{}", self.grpc))
                .await
                .ok()?;
        let answer = client.get_ring(pb::GetRingRequest::default()).await.ok()?;
        answer.into_inner().snapshot
    }

    /// Stops it (it writes a snapshot of everything folded) and checks it ended well.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WITHIN, &mut self.task)
            .await
            .expect("the reducer did not stop")
            .unwrap()
            .unwrap();
    }
}

/// A client following the ring, with one subscription per member of the pool and one
/// without a member, each collecting its changes.
pub(crate) struct Following {
    /// The client.
    pub(crate) client: RingClient,
    stop: Option<oneshot::Sender<()>>,
    follower: JoinHandle<()>,
    collectors: Vec<(Option<String>, JoinHandle<Vec<Change>>)>,
}

/// What a client saw, once stopped.
pub(crate) struct Seen {
    /// The changes of the subscription without a member.
    pub(crate) all: Vec<Change>,
    /// The changes of each member's subscription.
    pub(crate) by_member: BTreeMap<String, Vec<Change>>,
    /// The counters at the end.
    pub(crate) stats: ClientStats,
}

impl Following {
    /// Starts a client of the `node` user.
    pub(crate) async fn start(bus: &Bus) -> Following {
        let nats = bus.node_client().await;
        let config = ClientConfig::new(ring())
            .label("test")
            .buffer(NonZeroUsize::new(4096).unwrap());
        let (follower, client) = ringside_client::follow(nats, config);
        let (stop, stopped) = oneshot::channel::<()>();
        let follower = tokio::spawn(follower.run(async {
            let _ = stopped.await;
        }));
        let members = (0..POOL).map(|i| Some(member_id(i)));
        let collectors = std::iter::once(None)
            .chain(members)
            .map(|member| {
                let mut subscription = client.subscribe(member.as_deref());
                let task = tokio::spawn(async move {
                    let mut changes = Vec::new();
                    while let Some(change) = subscription.next().await {
                        changes.push(change);
                    }
                    changes
                });
                (member, task)
            })
            .collect();
        Following {
            client,
            stop: Some(stop),
            follower,
            collectors,
        }
    }

    /// Waits until the client's ring is at `epoch`.
    pub(crate) async fn wait_for_epoch(&self, epoch: u64) {
        let deadline = Instant::now() + WITHIN;
        while self.client.epoch() != Some(epoch) {
            assert!(
                Instant::now() < deadline,
                "the client is at epoch {:?}, not {epoch}, after {WITHIN:?} ({:?})",
                self.client.epoch(),
                self.client.stats()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the follower; every subscription ends; what they saw.
    pub(crate) async fn stop(mut self) -> Seen {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WITHIN, &mut self.follower)
            .await
            .expect("the follower did not stop")
            .unwrap();
        let mut all = Vec::new();
        let mut by_member = BTreeMap::new();
        for (member, task) in self.collectors.drain(..) {
            let changes = tokio::time::timeout(WITHIN, task)
                .await
                .expect("a subscription did not end with its follower")
                .unwrap();
            match member {
                Some(m) => {
                    by_member.insert(m, changes);
                }
                None => all = changes,
            }
        }
        Seen {
            all,
            by_member,
            stats: self.client.stats(),
        }
    }
}

/// Checks that `changes` are one sync and then each epoch after it exactly once, in
/// order, up to `last`; the sync's epoch.
pub(crate) fn assert_every_epoch_once(changes: &[Change], last: u64) -> u64 {
    let Some(Change::Synced { ring, reason }) = changes.first() else {
        panic!("the first change is not a sync: {:?}", changes.first());
    };
    assert!(
        matches!(reason, SyncReason::Start | SyncReason::Subscribed),
        "first sync for {reason:?}"
    );
    let from = ring.epoch();
    let epochs: Vec<u64> = changes[1..].iter().map(Change::epoch).collect();
    let expected: Vec<u64> = (from + 1..=last).collect();
    assert_eq!(epochs, expected, "the epochs after the sync at {from}");
    assert!(
        changes[1..]
            .iter()
            .all(|c| matches!(c, Change::Rebalanced { .. })),
        "a sync after the first one"
    );
    from
}

/// Checks the client's ring against the reducer's and the ring crate: same epoch and
/// checksum, same members and addresses, and every lookup and successor list agrees.
pub(crate) fn assert_same_ring(client: &RingClient, served: &pb::RingSnapshot) {
    let view = client.ring().expect("the client has a ring");
    assert_eq!(view.epoch(), served.epoch);
    assert_eq!(view.checksum(), Some(served.checksum));
    assert_eq!(view.sequence(), served.rebalance_sequence);
    assert_eq!(view.members(), &served.members[..]);
    let ring = ringside_events::convert::snapshot_to_ring(served).unwrap();
    let replicas = ring.len().min(3);
    for i in 0..500 {
        let key = format!("key-{i}");
        let owner = client.lookup(key.as_bytes()).unwrap();
        assert_eq!(owner.epoch, served.epoch);
        assert_eq!(owner.member.id, ring.owner(key.as_bytes()).unwrap());
        let ids: Vec<String> = client
            .successors(key.as_bytes(), replicas)
            .unwrap()
            .members
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, ring.successors(key.as_bytes(), replicas).unwrap());
    }
}

/// Checks each member's gained and lost ranges: summed over the members they are each
/// event's moved ranges, and each agrees with the offline fold's rings before and
/// after (the member owns the range's end after a gain and not before, and the other
/// way round for a loss).
pub(crate) fn assert_gained_and_lost(seen: &Seen, rings: &[Ring]) {
    let mut per_epoch: BTreeMap<u64, (BTreeSet<RangeOf>, BTreeSet<RangeOf>)> = BTreeMap::new();
    for (member, changes) in &seen.by_member {
        for change in changes {
            let Change::Rebalanced {
                rebalance,
                gained,
                lost,
            } = change
            else {
                continue;
            };
            let epoch = rebalance.epoch();
            let (before, after) = (&rings[epoch as usize - 1], &rings[epoch as usize]);
            let entry = per_epoch.entry(epoch).or_default();
            for r in gained {
                assert_eq!(after.owner_of_hash(r.end).ok(), Some(member.as_str()));
                assert_ne!(before.owner_of_hash(r.end).ok(), Some(member.as_str()));
                assert!(entry.0.insert((r.start, r.end, member.clone())));
            }
            for r in lost {
                assert_eq!(before.owner_of_hash(r.end).ok(), Some(member.as_str()));
                assert_ne!(after.owner_of_hash(r.end).ok(), Some(member.as_str()));
                assert!(entry.1.insert((r.start, r.end, member.clone())));
            }
        }
    }
    for change in &seen.all {
        let Change::Rebalanced { rebalance, .. } = change else {
            continue;
        };
        let (gained, lost) = per_epoch.remove(&rebalance.epoch()).unwrap_or_default();
        let moved: Vec<_> = rebalance.moved().collect();
        let to: BTreeSet<RangeOf> = moved
            .iter()
            .filter_map(|m| Some((m.range.start, m.range.end, m.to?.to_owned())))
            .collect();
        let from: BTreeSet<RangeOf> = moved
            .iter()
            .filter_map(|m| Some((m.range.start, m.range.end, m.from?.to_owned())))
            .collect();
        assert_eq!(gained, to, "gained ranges of epoch {}", rebalance.epoch());
        assert_eq!(lost, from, "lost ranges of epoch {}", rebalance.epoch());
        let ranges = rebalance.event().moved_ranges.clone().unwrap_or_default();
        assert_eq!(moved.len(), ranges.starts.len());
    }
    assert!(
        per_epoch.is_empty(),
        "ranges of epochs the client did not announce"
    );
}

/// A range and the member it went to or came from.
type RangeOf = (u64, u64, String);

fn pb_member(i: usize, weight: u32) -> pb::Member {
    pb::Member {
        id: member_id(i),
        address: format!("127.0.0.{}:7000", i + 1),
        weight,
        ..Default::default()
    }
}

/// A scripted churn of `n` membership events over the pool: joins (some re-weight a
/// member), leaves and now and then a full sync. Deterministic for a seed; `step0`
/// keeps the facts of later calls distinct (so none is dropped as a duplicate).
pub(crate) fn churn(seed: u64, step0: usize, n: usize) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut present: BTreeSet<usize> = BTreeSet::new();
    (step0..step0 + n)
        .map(|step| {
            let roll = rng.random_range(0..100);
            let body = if roll < 50 || present.len() < 2 {
                let mut members: Vec<pb::Member> = (0..rng.random_range(1..=2))
                    .map(|_| rng.random_range(0..POOL))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .map(|i| {
                        present.insert(i);
                        pb_member(i, rng.random_range(1..=3))
                    })
                    .collect();
                members.sort_by(|a, b| a.id.cmp(&b.id));
                Body::MembersJoined(pb::MembersJoined {
                    members,
                    source: pb::MembershipSource::Manual as i32,
                    source_version: step.to_string(),
                })
            } else if roll < 90 {
                let leaver = *present
                    .iter()
                    .nth(rng.random_range(0..present.len()))
                    .unwrap();
                present.remove(&leaver);
                Body::MemberLeft(pb::MemberLeft {
                    member_id: member_id(leaver),
                    reason: pb::LeaveReason::Manual as i32,
                    source: pb::MembershipSource::Manual as i32,
                    source_version: step.to_string(),
                    ..Default::default()
                })
            } else {
                present = (0..POOL).filter(|_| rng.random_range(0..3) > 0).collect();
                Body::MembershipSynced(pb::MembershipSynced {
                    members: present.iter().map(|&i| pb_member(i, 1)).collect(),
                    source: pb::MembershipSource::Manual as i32,
                    resource_version: step.to_string(),
                })
            };
            Event::new(ring(), body).unwrap()
        })
        .collect()
}

/// Logs to the test's output (shown for failing tests); `RUST_LOG` filters.
pub(crate) fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .try_init();
}
