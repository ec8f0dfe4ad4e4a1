//! The heartbeat source end to end: real beacons (the `node` user) beat on a real
//! nats-server (`nats/local.conf`), real heartbeat watchers (the `watcher` user) hold
//! the lease in the real KV bucket and publish to JetStream. After each step, the ring
//! folded from the stored events with the reducer's own fold (`RingLedger`) has
//! exactly the live members, no stored join or leave repeats a fact already in effect,
//! and no message id is stored twice. Intervals are short (100 ms beats) and every
//! wait is bounded.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test harness: a failed setup step must fail the test loudly"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use std::net::SocketAddr;

use common::{Nats, Page, Row, StoredFold, http_get};
use futures::StreamExt;
use ringside_events::{Body, RingName, ServiceUser, codec, pb, subject};
use ringside_kit::settings::HOSTNAME;
use ringside_watcher::heartbeat::config::{INTERVAL, LEASE_TTL, MISSED_BEATS, SYNC_INTERVAL};
use ringside_watcher::heartbeat::{
    self, Beacon, HeartbeatConfig, HeartbeatWatcher, LeaseKeeper, LeaseState, Status,
};
use ringside_watcher::metrics;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const RING: &str = "beats";
const BEAT: Duration = Duration::from_millis(100);
const DEADLINE: Duration = Duration::from_secs(20);
/// How long a step waits, after converging, for anything that would wrongly follow.
const QUIET: Duration = Duration::from_millis(700);

/// A running heartbeat watcher.
struct Watcher {
    task: JoinHandle<Result<(), ringside_watcher::WatcherError>>,
    stop: oneshot::Sender<()>,
    status: watch::Receiver<Status>,
    metrics: SocketAddr,
}

impl Watcher {
    /// Starts a watcher named `host` (its events' producer is `watcher/<host>`):
    /// 100 ms beats, 5 missed beats make a leave, 1 s lease, `sync` between syncs.
    async fn start(nats: &Nats, host: &str, sync: &str) -> Watcher {
        let map = nats.watcher_map(
            RING,
            &[
                (HOSTNAME.key, host),
                (INTERVAL.key, "100ms"),
                (MISSED_BEATS.key, "5"),
                (LEASE_TTL.key, "1s"),
                (SYNC_INTERVAL.key, sync),
            ],
        );
        let config = HeartbeatConfig::from_map(&map).expect("valid config");
        let watcher = HeartbeatWatcher::bind(config).await.expect("bind");
        let (status, metrics) = (watcher.status(), watcher.metrics_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(watcher.run(async move {
            let _ = stopped.await;
        }));
        Watcher {
            task,
            stop,
            status,
            metrics,
        }
    }

    /// The watcher's `/metrics` page.
    async fn page(&self) -> Page {
        Page::scrape(self.metrics).await
    }

    /// Waits until the watcher's status satisfies `want`.
    async fn wait_for(&mut self, what: &str, want: impl Fn(Status) -> bool) {
        tokio::time::timeout(DEADLINE, self.status.wait_for(|s| want(*s)))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("the watcher is running");
    }

    async fn wait_leading(&mut self) {
        self.wait_for("the lease and the first sync", |s| {
            s == Status::Leading { synced: true }
        })
        .await;
    }

    /// Graceful stop: `run` returns Ok (and releases the lease).
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the watcher stops when asked")
            .expect("no panic")
            .expect("a clean shutdown");
    }

    /// Hard stop, as a crash: the task is dropped wherever it is (its lease stays
    /// until it expires).
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A running beacon (a stand-in member).
struct Member {
    row: Row,
    task: JoinHandle<Result<u64, heartbeat::BeaconError>>,
    stop: oneshot::Sender<()>,
}

impl Member {
    async fn start(nats: &Nats, id: &str, port: u16) -> Member {
        let client = nats.connect(ServiceUser::Node).await;
        let beacon = Beacon::new(client, RingName::new(RING).unwrap());
        let member = pb::Member {
            id: id.into(),
            address: format!("127.0.0.1:{port}"),
            weight: 1,
            uid: Some(heartbeat::new_incarnation()),
            ..Default::default()
        };
        let row = (
            id.to_owned(),
            member.address.clone(),
            1,
            member.uid.clone().unwrap(),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            beacon
                .run(member, BEAT, async move {
                    let _ = stopped.await;
                })
                .await
        });
        Member { row, task, stop }
    }

    /// Graceful stop: the beacon says goodbye.
    async fn stop(self) {
        let _ = self.stop.send(());
        let beats = tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the beacon stops when asked")
            .expect("no panic")
            .expect("the goodbye was sent");
        assert!(beats >= 2, "a beat and the goodbye");
    }

    /// The node dies: its beats just stop, without a goodbye.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The server, the fold of what it stored, and the live members.
struct Harness {
    nats: Nats,
    fold: StoredFold,
    members: BTreeMap<String, Member>,
    next_port: u16,
}

impl Harness {
    async fn new() -> Harness {
        let nats = Nats::start().await;
        let fold = nats.fold(RING).await;
        Harness {
            nats,
            fold,
            members: BTreeMap::new(),
            next_port: 7000,
        }
    }

    async fn add(&mut self, id: &str) {
        self.next_port += 1;
        let m = Member::start(&self.nats, id, self.next_port).await;
        self.members.insert(id.to_owned(), m);
    }

    fn take(&mut self, id: &str) -> Member {
        self.members.remove(id).expect("a running member")
    }

    fn live(&self) -> BTreeSet<Row> {
        self.members.values().map(|m| m.row.clone()).collect()
    }

    /// Waits until the stored events fold into the live set, then a little longer for
    /// anything that would wrongly follow; returns the kinds stored in this step.
    async fn settle(&mut self) -> Vec<&'static str> {
        let want = self.live();
        self.fold.settle(&want, DEADLINE, QUIET).await
    }

    /// Reads what was stored while nothing should have been; returns the kinds.
    async fn quiet(&mut self, wait: Duration) -> Vec<&'static str> {
        tokio::time::sleep(wait).await;
        self.fold.read_new().await
    }

    /// The leave reason of the last stored event (which must be a leave).
    async fn last_leave_reason(&self) -> pb::LeaveReason {
        let stream = self
            .nats
            .js
            .get_stream_no_info(subject::STREAM_EVENTS)
            .await
            .unwrap();
        let last = stream
            .direct_get_last_for_subject(subject::membership(&RingName::new(RING).unwrap()))
            .await
            .unwrap();
        match codec::decode(&last.payload).unwrap().into_body() {
            Body::MemberLeft(l) => pb::LeaveReason::try_from(l.reason).unwrap(),
            other => panic!("expected a leave, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn first_beats_join_missed_beats_leave() {
    let mut h = Harness::new().await;
    let mut w = Watcher::start(&h.nats, "one", "30s").await;
    w.wait_leading().await;
    assert_eq!(
        h.settle().await,
        ["sync"],
        "the first sync states the empty ring"
    );

    h.add("a").await;
    h.add("b").await;
    assert_eq!(h.settle().await, ["join", "join"]);

    // b dies without a word: five intervals later it leaves.
    h.take("b").kill().await;
    assert_eq!(h.settle().await, ["leave"]);
    assert_eq!(
        h.last_leave_reason().await,
        pb::LeaveReason::HeartbeatMissed
    );

    // A node with the same id but a new incarnation joins anew.
    h.add("b").await;
    assert_eq!(h.settle().await, ["join"]);

    // Something that is no heartbeat, on a heartbeat subject: refused, and counted.
    h.nats
        .admin
        .publish("ringside.beats.heartbeat.junk", "not a heartbeat".into())
        .await
        .unwrap();
    h.nats.admin.flush().await.unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let page = loop {
        let page = w.page().await;
        if page.value(metrics::HEARTBEATS_REFUSED.name) == 1.0 {
            break page;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", page.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The page: exactly the metrics docs/watcher.md lists for this source, counting
    // what was stored above.
    page.assert_names(&[&metrics::SHARED, &metrics::HEARTBEAT]);
    page.assert_values(&[
        (
            "ringside_watcher_events_published_total{kind=\"synced\"}",
            1.0,
        ),
        (
            "ringside_watcher_events_published_total{kind=\"joined\"}",
            3.0,
        ),
        (
            "ringside_watcher_events_published_total{kind=\"left\"}",
            1.0,
        ),
        (metrics::DUPLICATES.name, 0.0),
        (metrics::PUBLISH_ERRORS.name, 0.0),
        (metrics::LEASE_HELD.name, 1.0),
        (metrics::READY.name, 1.0),
    ]);
    assert!(page.value(metrics::LAST_SYNC.name) > 1.0e9, "{}", page.0);
    assert_eq!(
        http_get(w.metrics, "/readyz").await,
        (200, "ready\n".into())
    );
    w.stop().await;
    for (_, m) in std::mem::take(&mut h.members) {
        m.stop().await;
    }
}

#[tokio::test]
async fn a_goodbye_is_an_immediate_leave() {
    let mut h = Harness::new().await;
    let mut w = Watcher::start(&h.nats, "one", "30s").await;
    w.wait_leading().await;
    h.add("a").await;
    h.add("b").await;
    assert_eq!(h.settle().await, ["sync", "join", "join"]);

    h.take("a").stop().await;
    assert_eq!(h.settle().await, ["leave"]);
    // Said, not inferred: the reason tells the goodbye from missed beats.
    assert_eq!(h.last_leave_reason().await, pb::LeaveReason::Goodbye);
    w.stop().await;
}

#[tokio::test]
async fn a_restarted_watcher_resyncs_without_evicting_live_members() {
    let mut h = Harness::new().await;
    h.add("a").await;
    h.add("b").await;
    h.add("c").await;
    let mut w = Watcher::start(&h.nats, "one", "30s").await;
    w.wait_leading().await;
    // The first sync waits for the listening window, so it already has every member.
    assert_eq!(h.settle().await, ["sync"]);

    // The watcher goes away; meanwhile c leaves and d arrives.
    w.stop().await;
    h.take("c").stop().await;
    h.add("d").await;
    assert_eq!(
        h.quiet(QUIET).await,
        Vec::<&str>::new(),
        "nobody speaks for the ring"
    );

    // Back: one sync, after listening, with a, b and d. A sync before the listening
    // window would have stated a partial set, evicting live members (and settle()
    // would see joins bring them back).
    let mut w = Watcher::start(&h.nats, "one", "30s").await;
    w.wait_leading().await;
    assert_eq!(h.settle().await, ["sync"]);

    // An idle restart: the sync is the same fact as the last one, stored once.
    w.stop().await;
    let mut w = Watcher::start(&h.nats, "one", "30s").await;
    w.wait_leading().await;
    assert_eq!(h.settle().await, Vec::<&str>::new());
    w.stop().await;
}

#[tokio::test]
async fn periodic_syncs_repair_a_ring_someone_else_changed() {
    let mut h = Harness::new().await;
    h.add("a").await;
    let mut w = Watcher::start(&h.nats, "one", "300ms").await;
    w.wait_leading().await;
    assert_eq!(h.settle().await, ["sync"]);
    // Nothing changes: the periodic syncs find their own fact at the head and store
    // nothing.
    assert_eq!(h.quiet(Duration::from_secs(1)).await, Vec::<&str>::new());

    // An operator removes a by hand; the next periodic sync restates the truth.
    let admin = ringside_events::Publisher::new(h.nats.admin.clone());
    let leave = ringside_events::Event::new(
        RingName::new(RING).unwrap(),
        pb::MemberLeft {
            member_id: "a".into(),
            reason: pb::LeaveReason::Manual as i32,
            source: pb::MembershipSource::Manual as i32,
            source_version: "by hand".into(),
            ..Default::default()
        },
    )
    .unwrap();
    admin.publish(&leave).await.unwrap();
    assert_eq!(h.settle().await, ["leave", "sync"]);
    w.stop().await;
}

#[tokio::test]
async fn a_second_instance_stands_by_and_takes_over_when_the_first_dies() {
    let mut h = Harness::new().await;
    h.add("x").await;
    h.add("y").await;
    let mut first = Watcher::start(&h.nats, "first", "30s").await;
    first.wait_leading().await;
    assert_eq!(h.settle().await, ["sync"]);

    let mut second = Watcher::start(&h.nats, "second", "30s").await;
    second
        .wait_for("the second instance to listen", |s| s == Status::Standby)
        .await;
    h.add("z").await;
    assert_eq!(h.settle().await, ["join"]);
    // Several lease periods: the second instance never leads and publishes nothing.
    assert_eq!(h.quiet(Duration::from_secs(2)).await, Vec::<&str>::new());
    assert_eq!(*second.status.borrow(), Status::Standby);
    // A standby is ready (it listens, to take over at once) but holds no lease.
    assert_eq!(http_get(second.metrics, "/readyz").await.0, 200);
    let page = second.page().await;
    assert_eq!(page.value(metrics::LEASE_HELD.name), 0.0);
    assert_eq!(page.value(metrics::READY.name), 1.0);
    assert!(
        h.fold.stored.iter().all(|s| s.producer == "watcher/first"),
        "{:?}",
        h.fold.stored
    );

    // The first dies holding the lease: the second takes over once the lease goes
    // stale, states the set it has been hearing all along, and carries on.
    first.kill().await;
    second.wait_leading().await;
    let takeover = h.settle().await;
    assert_eq!(takeover, ["sync"]);
    h.add("w").await;
    assert_eq!(h.settle().await, ["join"]);
    h.take("x").stop().await;
    assert_eq!(h.settle().await, ["leave"]);
    let after_kill = &h.fold.stored[h.fold.stored.len() - 3..];
    assert!(
        after_kill.iter().all(|s| s.producer == "watcher/second"),
        "{after_kill:?}"
    );
    second.stop().await;
}

#[tokio::test]
async fn the_beacon_beats_and_says_goodbye() {
    let nats = Nats::start().await;
    let ring = RingName::new(RING).unwrap();
    let mut beats = nats
        .admin
        .subscribe(subject::heartbeat_any(&ring))
        .await
        .unwrap();
    nats.admin.flush().await.unwrap();
    let beacon = Beacon::new(nats.connect(ServiceUser::Node).await, ring.clone());
    let member = pb::Member {
        id: "stand-in-1".into(),
        address: "127.0.0.1:7001".into(),
        weight: 2,
        uid: None,
        ..Default::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn({
        let member = member.clone();
        async move {
            beacon
                .run(member, Duration::from_millis(50), async move {
                    let _ = stopped.await;
                })
                .await
        }
    });

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let msg = tokio::time::timeout(DEADLINE, beats.next())
            .await
            .expect("beats arrive")
            .unwrap();
        assert_eq!(msg.subject.as_str(), "ringside.beats.heartbeat.stand-in-1");
        let Body::HeartbeatSent(hb) = codec::decode(&msg.payload).unwrap().into_body() else {
            panic!("not a heartbeat");
        };
        seen.push(hb);
    }
    let numbers: Vec<u64> = seen.iter().map(|hb| hb.beat).collect();
    assert_eq!(numbers, [1, 2, 3]);
    let first = seen[0].member.clone().unwrap();
    let uid = first.uid.clone().expect("a fresh incarnation");
    assert_eq!(uid.len(), 16);
    assert_eq!(pb::Member { uid: None, ..first }, member);
    assert!(seen.iter().all(|hb| !hb.goodbye
        && hb.interval == Some(Duration::from_millis(50).into())
        && hb.member.as_ref().unwrap().uid.as_deref() == Some(uid.as_str())));

    let _ = stop.send(());
    let sent = tokio::time::timeout(DEADLINE, task)
        .await
        .unwrap()
        .unwrap()
        .expect("the goodbye is sent");
    let mut last = None;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), beats.next()).await {
        let Body::HeartbeatSent(hb) = codec::decode(&msg.payload).unwrap().into_body() else {
            panic!("not a heartbeat");
        };
        last = Some(hb);
    }
    let last = last.expect("the goodbye arrived");
    assert!(last.goodbye);
    assert_eq!(last.beat, sent, "the goodbye is the last beat, counted");
}

/// The lease protocol step by step, with made-up instants: one holder; a standby takes
/// over only after the holder's revision has stood still for the whole TTL on the
/// standby's own clock; the old holder then finds itself deposed; a released lease is
/// free at once.
#[tokio::test]
async fn the_lease_moves_only_when_stale_or_released() {
    let nats = Nats::start().await;
    let ring = RingName::new(RING).unwrap();
    let ttl = Duration::from_secs(1);
    let ms = Duration::from_millis(1);
    let open = |name: &'static str| {
        let nats = &nats;
        let ring = ring.clone();
        async move {
            LeaseKeeper::open(
                nats.connect(ServiceUser::Watcher).await,
                &ring,
                name.to_owned(),
                ttl,
            )
            .await
            .expect("the lease bucket is provisioned")
        }
    };
    let (mut a, mut b, mut c) = (open("a").await, open("b").await, open("c").await);
    let t0 = tokio::time::Instant::now();
    let held = |s: LeaseState| matches!(s, LeaseState::Held { .. });

    let first = a.step(t0).await;
    assert_eq!(
        first,
        LeaseState::Held {
            until: t0 + 750 * ms
        },
        "3/4 of the TTL"
    );
    assert_eq!(b.step(t0).await, LeaseState::Standby, "created: exists now");
    assert_eq!(
        b.step(t0 + 999 * ms).await,
        LeaseState::Standby,
        "not stale yet"
    );
    assert!(held(a.step(t0 + 300 * ms).await), "renewed");
    assert_eq!(
        b.step(t0 + 1500 * ms).await,
        LeaseState::Standby,
        "it moved"
    );
    assert_eq!(b.step(t0 + 2499 * ms).await, LeaseState::Standby);
    assert!(
        held(b.step(t0 + 2500 * ms).await),
        "stale for a whole TTL: taken over"
    );
    assert_eq!(
        a.step(t0 + 2600 * ms).await,
        LeaseState::Standby,
        "the old holder learns it was deposed"
    );
    assert_eq!(c.step(t0 + 2600 * ms).await, LeaseState::Standby);

    // b shuts down and releases: c takes the lease at its next look, no TTL to wait.
    let (state, _) = watch::channel(LeaseState::Standby);
    b.run(state, std::future::ready(())).await;
    assert!(held(c.step(t0 + 2700 * ms).await), "released: free at once");
    assert_eq!(a.step(t0 + 2700 * ms).await, LeaseState::Standby);
}
