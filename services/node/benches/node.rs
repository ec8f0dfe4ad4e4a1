//! `just bench node`: the node's key API and its handoff, on a real system in one
//! process: nats-server (testkit, `nats/local.conf`), the reducer, the heartbeat
//! watcher and `--nodes` nodes (3 by default, R = 2, the default), each service with
//! its own NATS user and listener on 127.0.0.1, as `ringside up` runs them.
//!
//! Figures (requests of 1 KiB values, HTTP/1.1 keep-alive on loopback):
//! - `requests`: GET and PUT requests per second, p50 and p99, from `--connections`
//!   connections (32 by default) each sending its next request when the last is
//!   answered, for `--seconds` each: served by the owner (keys node-1 owns, sent to
//!   node-1), forwarded one hop (keys other nodes own, sent to node-1), and the
//!   reference, a bare axum handler on its own listener answering the same bytes (a
//!   PUT: reads the body, 204). Every subject is measured in each of `--rounds` rounds;
//!   min and median over the rounds. Target: owner-served GET >= 0.6 of the bare
//!   handler's requests/s (ratio of the medians).
//! - `unloaded`: p50 and p99 of GETs one at a time (one connection): what the hop
//!   adds without queueing. Target: forwarded p99 - owner p99 <= 0.3 ms (medians). At
//!   32 in flight the hop doubles the work of each request, so the loaded p99s differ
//!   by queueing, not by the hop; they are reported too.
//! - `handoff`: `--keys` keys (100,000 by default) of 1 KiB are written, then a node
//!   joins (and, in the same round, leaves again), `--handoff-rounds` times: the time
//!   from the rebalance event stored to the `KeysHandedOff` events covering every key
//!   whose owner changed stored (the server's timestamps), the keys and bytes they
//!   report, and the slowest sender's own `duration`. A join moves about 1/4 of the
//!   keys, so the time is also projected linearly to 100,000 keys. Target: that
//!   projection <= 2 s (median of the joins). Reference: the same bytes PUT in 4 MiB
//!   bodies to the bare handler over one connection.
//!
//! Usage: `node [--rounds N] [--seconds S] [--connections N] [--keys N]
//! [--handoff-rounds N] [--json PATH] [--quick]`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, consumer};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::get;
use futures::StreamExt;
use ringside_client::{ClientConfig, RingClient, RingView};
use ringside_events::{Body, RingName, ServiceUser, codec, subject};
use ringside_kit::InProcess;
use ringside_kit::settings::{RING, on_nats};
use ringside_testkit::NatsServer;
use ringside_testkit::bench::{
    Flags, LoopRun, Requests, Summary, Until, closed_loop, load_average, ordered_from, pass,
    wait_for, write_json,
};
use serde_json::json;

/// Value size of every request and stored key.
const VALUE_BYTES: usize = 1024;
/// Keys per subject of the request figures.
const REQUEST_KEYS: usize = 1000;
/// The node every request is sent to.
const ENTRY: &str = "node-1";
/// Body size of the handoff reference (a node sends batches of 4 MiB).
const BATCH_BYTES: usize = 4 << 20;

struct Args {
    rounds: usize,
    seconds: f64,
    connections: usize,
    nodes: usize,
    keys: usize,
    handoff_rounds: usize,
    json: Option<String>,
    quick: bool,
}

fn parse_args() -> Args {
    Flags::read_or_exit(|flags| {
        let quick = flags.flag("--quick")?;
        Ok(Args {
            rounds: flags.value("--rounds", if quick { 1 } else { 5 })?,
            seconds: flags.value("--seconds", if quick { 0.5 } else { 2.0 })?,
            connections: flags.value("--connections", 32)?,
            nodes: flags.value("--nodes", 3)?,
            keys: flags.value("--keys", if quick { 10_000 } else { 100_000 })?,
            handoff_rounds: flags.value("--handoff-rounds", if quick { 1 } else { 3 })?,
            json: flags.json_path()?,
            quick,
        })
    })
}

/// The server and the ring's name: the settings each service starts with.
struct Bus {
    nats: NatsServer,
    ring: RingName,
}

impl Bus {
    /// `pairs` plus the server, the ring and `user`'s password.
    fn settings(&self, user: ServiceUser, pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let password = self.nats.password(user.name()).expect("a service password");
        on_nats(&self.nats.url(), &self.ring, user, Some(password), pairs)
    }
}

/// The running system and a ring follower of the benchmark's own.
struct System {
    bus: Bus,
    admin: async_nats::Client,
    view: RingClient,
    reducer: InProcess<ringside_reducer::ReducerError>,
    watcher: InProcess<ringside_watcher::WatcherError>,
    nodes: BTreeMap<String, InProcess<ringside_kit::ServiceError>>,
}

/// The heartbeat interval of the nodes and the watcher; a node leaves after 10 missed
/// beats (5 s), so a saturated machine does not drop one by mistake.
const BEAT: &str = "500ms";

impl System {
    async fn start(nodes: usize) -> System {
        use ringside_reducer::config as reducer;
        use ringside_watcher::config as watcher;
        use ringside_watcher::heartbeat::config as heartbeat;
        let nats = NatsServer::start_local_conf().await.expect("nats-server");
        let admin = nats.connect_provisioned().await.expect("provisioning");
        let ring = RingName::new(RING.default_value().expect("a default ring")).unwrap();
        let bus = Bus { nats, ring };
        let (follower, view) = ringside_client::follow(
            bus.nats.connect_as(ServiceUser::Admin).await.unwrap(),
            ClientConfig::new(bus.ring.clone()).label("bench"),
        );
        tokio::spawn(follower.run(std::future::pending()));
        let reducer = InProcess::start::<ringside_reducer::Reducer>(
            &bus.settings(ServiceUser::Reducer, &reducer::FREE_LOOPBACK_PORTS),
        )
        .await
        .expect("the reducer starts");
        let watcher = InProcess::start::<ringside_watcher::HeartbeatWatcher>(&bus.settings(
            ServiceUser::Watcher,
            &[
                (watcher::METRICS_ADDR.key, "127.0.0.1:0"),
                (heartbeat::INTERVAL.key, BEAT),
                (heartbeat::MISSED_BEATS.key, "10"),
                (heartbeat::LEASE_TTL.key, "1500ms"),
            ],
        ))
        .await
        .expect("the watcher starts");
        let mut system = System {
            bus,
            admin,
            view,
            reducer,
            watcher,
            nodes: BTreeMap::new(),
        };
        for i in 1..=nodes {
            system.add_node(&format!("node-{i}")).await;
        }
        system
    }

    /// Starts node `id` and waits until it is ready (in the ring, its keys here) and the
    /// benchmark's ring has it.
    async fn add_node(&mut self, id: &str) -> SocketAddr {
        use ringside_node::config as node;
        let started = InProcess::start::<ringside_node::NodeService>(&self.bus.settings(
            ServiceUser::Node,
            &[
                (node::ID.key, id),
                (node::ADDR.key, "127.0.0.1:0"),
                (node::HEARTBEAT.key, BEAT),
            ],
        ))
        .await
        .expect("a node starts");
        let addr = started.addr("api").expect("the node's API listener");
        self.nodes.insert(id.to_owned(), started);
        wait_for(Duration::from_secs(60), &format!("{id} ready"), || async {
            let ready = matches!(
                ringside_testkit::http::get(addr, "/readyz").await,
                Some((200, _))
            );
            ready && self.ring().member(id).is_some()
        })
        .await;
        addr
    }

    /// Stops node `id` (it leaves the ring and hands its keys over first).
    async fn remove_node(&mut self, id: &str) {
        let node = self.nodes.remove(id).expect("a running node");
        node.stop().await.expect("the node stops cleanly");
    }

    fn ring(&self) -> Arc<RingView> {
        self.view
            .ring()
            .unwrap_or_else(|| panic!("the benchmark follows no ring yet"))
    }

    fn addr(&self, id: &str) -> SocketAddr {
        self.nodes[id].addr("api").expect("the node's API listener")
    }

    async fn stop(self) {
        for (_, node) in self.nodes {
            node.stop().await.expect("a node stops cleanly");
        }
        self.watcher
            .stop()
            .await
            .expect("the watcher stops cleanly");
        self.reducer
            .stop()
            .await
            .expect("the reducer stops cleanly");
        drop(self.bus);
    }
}

/// The reference: a bare axum handler answering a GET with the value's bytes and a PUT
/// (body read) with 204, on its own listener.
async fn bare_handler(value: Arc<[u8]>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/v1/keys/{key}",
            get(move || {
                let value = Arc::clone(&value);
                async move { axum::body::Bytes::copy_from_slice(&value) }
            })
            .put(|body: axum::body::Bytes| async move {
                std::hint::black_box(body.len());
                StatusCode::NO_CONTENT
            }),
        )
        .layer(DefaultBodyLimit::max(2 * BATCH_BYTES));
    tokio::spawn(async move {
        axum::serve(listener, app)
            .await
            .expect("the bare handler serves")
    });
    addr
}

/// `count` keys whose owner is (`owned`) or is not (`!owned`) [`ENTRY`].
fn keys_of(ring: &RingView, owned: bool, count: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("bench:{i}"))
        .filter(|k| {
            let owner = ringside_node::node::holders(ring, k.as_bytes(), 1);
            (owner.first().map(|m| m.id.as_str()) == Some(ENTRY)) == owned
        })
        .take(count)
        .map(|k| format!("/v1/keys/{k}"))
        .collect()
}

/// One measured subject of the request figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Subject {
    Bare,
    Owner,
    Forwarded,
}

impl Subject {
    const ALL: [Subject; 3] = [Subject::Bare, Subject::Owner, Subject::Forwarded];

    fn name(self) -> &'static str {
        match self {
            Subject::Bare => "bare axum handler",
            Subject::Owner => "served by the owner",
            Subject::Forwarded => "forwarded one hop",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Subject::Bare => "bare",
            Subject::Owner => "owner",
            Subject::Forwarded => "forwarded",
        }
    }
}

/// Samples of one (subject, method) over the rounds.
#[derive(Default)]
struct Samples {
    per_second: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
}

impl Samples {
    fn push(&mut self, run: &LoopRun) {
        assert_eq!(run.failed, 0, "requests failed");
        self.per_second.push(run.per_second);
        self.p50.push(run.percentile_ms(50.0));
        self.p99.push(run.percentile_ms(99.0));
    }

    fn summary(&self) -> (Summary, Summary, Summary) {
        let of = |v: &Vec<f64>| Summary::of(v.clone()).expect("at least one round");
        (of(&self.per_second), of(&self.p50), of(&self.p99))
    }

    fn json(&self) -> serde_json::Value {
        let (rate, p50, p99) = self.summary();
        json!({"per_s": rate.json(), "p50_ms": p50.json(), "p99_ms": p99.json()})
    }
}

struct RequestFigures {
    /// (subject, method) -> at `--connections` in flight.
    loaded: BTreeMap<(Subject, &'static str), Samples>,
    /// subject -> GETs one at a time.
    unloaded: BTreeMap<Subject, Samples>,
}

async fn requests(
    args: &Args,
    system: &System,
    bare: SocketAddr,
    value: &Arc<[u8]>,
) -> RequestFigures {
    let ring = system.ring();
    let paths = |owned| Arc::new(keys_of(&ring, owned, REQUEST_KEYS));
    let (owned, others) = (paths(true), paths(false));
    let entry = system.addr(ENTRY);
    let target = |s: Subject| match s {
        Subject::Bare => (bare, Arc::clone(&owned)),
        Subject::Owner => (entry, Arc::clone(&owned)),
        Subject::Forwarded => (entry, Arc::clone(&others)),
    };
    let put = |paths: Arc<Vec<String>>| Requests {
        method: "PUT",
        paths,
        body: Arc::clone(value),
    };
    let get = |paths: Arc<Vec<String>>| Requests {
        method: "GET",
        paths,
        body: Arc::from(&[][..]),
    };
    // Every key the GETs read, written once.
    for paths in [&owned, &others] {
        let run = closed_loop(
            entry,
            args.connections,
            &put(Arc::clone(paths)),
            Until::EachOnce,
        )
        .await
        .unwrap();
        assert_eq!(run.failed, 0, "writing the keys failed");
    }
    let time = Until::Elapsed(Duration::from_secs_f64(args.seconds));
    let mut figures = RequestFigures {
        loaded: BTreeMap::new(),
        unloaded: BTreeMap::new(),
    };
    for round in 0..args.rounds {
        let mut line = Vec::new();
        for subject in Subject::ALL {
            let (addr, paths) = target(subject);
            for (method, requests) in [
                ("GET", get(Arc::clone(&paths))),
                ("PUT", put(Arc::clone(&paths))),
            ] {
                let run = closed_loop(addr, args.connections, &requests, time)
                    .await
                    .unwrap();
                line.push(format!(
                    "{} {method} {:.0}/s",
                    subject.key(),
                    run.per_second
                ));
                figures
                    .loaded
                    .entry((subject, method))
                    .or_default()
                    .push(&run);
            }
            let run = closed_loop(addr, 1, &get(paths), time).await.unwrap();
            figures.unloaded.entry(subject).or_default().push(&run);
        }
        eprintln!("round {}: {}", round + 1, line.join(", "));
    }
    figures
}

struct Handoff {
    /// Join or leave.
    change: &'static str,
    /// Rebalance stored -> handoff reports cover the move.
    covered: Duration,
    /// The slowest sender's own `duration`.
    slowest_sender: Duration,
    keys: u64,
    bytes: u64,
}

/// The keys of `paths` whose owner differs between `before` and `after`.
fn owner_changes(before: &RingView, after: &RingView, keys: &[String]) -> u64 {
    let owner = |ring: &RingView, k: &str| {
        ringside_node::node::holders(ring, k.as_bytes(), 1)
            .first()
            .map(|m| m.id.clone())
    };
    keys.iter()
        .filter(|k| owner(before, k) != owner(after, k))
        .count() as u64
}

/// Runs `change` (a join or a leave of `id`) and times its handoff: from the rebalance
/// event that has `id` join or leave, to the `KeysHandedOff` events of its epoch
/// reporting `expected(before, after)` keys.
async fn time_handoff(system: &mut System, id: &str, join: bool, keys: &[String]) -> Handoff {
    let mut events = ordered_from(
        &jetstream::new(system.admin.clone()),
        subject::STREAM_EVENTS,
        vec![
            subject::rebalance(&system.bus.ring),
            subject::handoff(&system.bus.ring),
        ],
        consumer::DeliverPolicy::New,
    )
    .await
    .unwrap();
    let before = system.ring();
    if join {
        let change = system.add_node(id);
        let waiting = wait_handoff(&mut events, id, join);
        let (_, outcome) = tokio::join!(change, waiting);
        finish(outcome, &before, &system.ring(), keys, join)
    } else {
        let waiting = wait_handoff(&mut events, id, join);
        let (_, outcome) = tokio::join!(system.remove_node(id), waiting);
        finish(outcome, &before, &system.ring(), keys, join)
    }
}

/// What the event stream said of one change: when the server stored its rebalance,
/// and each handoff report of its epoch (stored when, keys, bytes, duration). The
/// server's timestamps, not this consumer's arrival times: a pull consumer can be
/// handed a message tens of milliseconds after it was stored.
struct Observed {
    rebalanced: SystemTime,
    reports: Vec<(SystemTime, u64, u64, Duration)>,
}

/// Reads rebalance and handoff events until the rebalance in which `id` joins (leaves)
/// and then, for `SETTLE` after the last report, that epoch's handoff reports.
async fn wait_handoff(
    events: &mut (impl futures::Stream<Item = Result<jetstream::Message, impl std::fmt::Debug>> + Unpin),
    id: &str,
    join: bool,
) -> Observed {
    const SETTLE: Duration = Duration::from_secs(3);
    let mut epoch = None;
    let mut observed = Observed {
        rebalanced: SystemTime::UNIX_EPOCH,
        reports: Vec::new(),
    };
    loop {
        let next = tokio::time::timeout(
            if epoch.is_some() {
                SETTLE
            } else {
                Duration::from_secs(120)
            },
            events.next(),
        )
        .await;
        let Ok(Some(message)) = next else {
            assert!(epoch.is_some(), "no rebalance for {id}");
            return observed;
        };
        let message = message.expect("an event");
        let stored = SystemTime::from(message.info().expect("a stored message").published);
        match codec::decode(&message.payload)
            .expect("a stored event")
            .into_body()
        {
            Body::RingRebalanced(r) if epoch.is_none() => {
                let named = if join { &r.joined } else { &r.departed };
                if named.iter().any(|m| m == id) {
                    epoch = Some(r.epoch);
                    observed.rebalanced = stored;
                }
            }
            Body::KeysHandedOff(h) if Some(h.epoch) == epoch => {
                let d = h.duration.unwrap_or_default();
                let took = Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32);
                observed.reports.push((stored, h.count, h.bytes, took));
            }
            _ => {}
        }
    }
}

/// The handoff figures once the reports cover the keys whose owner changed.
fn finish(
    observed: Observed,
    before: &RingView,
    after: &RingView,
    keys: &[String],
    join: bool,
) -> Handoff {
    let expected = owner_changes(before, after, keys);
    let mut covered = 0;
    let mut handoff = Handoff {
        change: if join { "join" } else { "leave" },
        covered: Duration::ZERO,
        slowest_sender: Duration::ZERO,
        keys: 0,
        bytes: 0,
    };
    for (stored, count, bytes, took) in &observed.reports {
        covered += count;
        handoff.keys += count;
        handoff.bytes += bytes;
        handoff.slowest_sender = handoff.slowest_sender.max(*took);
        if covered >= expected && handoff.covered == Duration::ZERO {
            handoff.covered = stored
                .duration_since(observed.rebalanced)
                .unwrap_or_default();
        }
    }
    assert!(
        covered >= expected,
        "the handoff reports cover {covered} of the {expected} keys whose owner changed"
    );
    handoff
}

/// The handoff reference: `bytes` PUT in [`BATCH_BYTES`] bodies to the bare handler
/// over one connection; how long it took.
async fn bulk_reference(bare: SocketAddr, bytes: u64) -> Duration {
    let body = vec![7u8; BATCH_BYTES];
    let mut connection = ringside_testkit::http::Connection::open(bare)
        .await
        .unwrap();
    let start = Instant::now();
    let mut left = bytes as usize;
    while left > 0 {
        let n = left.min(BATCH_BYTES);
        let (status, _) = connection
            .send("PUT", "/v1/keys/bulk", &body[..n])
            .await
            .unwrap();
        assert_eq!(status, 204);
        left -= n;
    }
    start.elapsed()
}

struct HandoffFigures {
    keys_loaded: usize,
    load_per_s: f64,
    runs: Vec<Handoff>,
    reference: Vec<Duration>,
}

async fn handoffs(
    args: &Args,
    system: &mut System,
    bare: SocketAddr,
    value: &Arc<[u8]>,
) -> HandoffFigures {
    let keys: Vec<String> = (0..args.keys).map(|i| format!("handoff:{i:07}")).collect();
    let requests = Requests {
        method: "PUT",
        paths: Arc::new(keys.iter().map(|k| format!("/v1/keys/{k}")).collect()),
        body: Arc::clone(value),
    };
    eprintln!("writing {} keys of {VALUE_BYTES} bytes...", keys.len());
    let run = closed_loop(
        system.addr(ENTRY),
        args.connections,
        &requests,
        Until::EachOnce,
    )
    .await
    .unwrap();
    assert_eq!(run.failed, 0, "writing the handoff keys failed");
    // The request figures' keys are in the stores too: count them in the expectation.
    let mut all = keys;
    let ring = system.ring();
    all.extend(
        keys_of(&ring, true, REQUEST_KEYS)
            .iter()
            .chain(&keys_of(&ring, false, REQUEST_KEYS))
            .map(|p| p.trim_start_matches("/v1/keys/").to_owned()),
    );
    let mut figures = HandoffFigures {
        keys_loaded: args.keys,
        load_per_s: run.per_second,
        runs: Vec::new(),
        reference: Vec::new(),
    };
    for round in 0..args.handoff_rounds {
        let id = format!("node-{}", args.nodes + 1 + round);
        for join in [true, false] {
            let h = time_handoff(system, &id, join, &all).await;
            figures.reference.push(bulk_reference(bare, h.bytes).await);
            eprintln!(
                "handoff round {}: {} of {id}: {} keys, {:.1} MB reported in {:.3} s (slowest sender {:.3} s)",
                round + 1,
                h.change,
                h.keys,
                h.bytes as f64 / 1e6,
                h.covered.as_secs_f64(),
                h.slowest_sender.as_secs_f64()
            );
            figures.runs.push(h);
        }
    }
    figures
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let load = load_average();
    let value: Arc<[u8]> = (0..VALUE_BYTES).map(|i| b'a' + (i % 26) as u8).collect();
    let bare = bare_handler(Arc::clone(&value)).await;
    let mut system = System::start(args.nodes).await;
    let requests = requests(&args, &system, bare, &value).await;
    let handoff = handoffs(&args, &mut system, bare, &value).await;
    system.stop().await;

    println!(
        "node benchmark{}: {} nodes in one process (R = 2), values of {VALUE_BYTES} B, {} connections in flight, {} rounds of {} s; load at start {load}",
        if args.quick {
            " (--quick: figures not comparable)"
        } else {
            ""
        },
        args.nodes,
        args.connections,
        args.rounds,
        args.seconds
    );
    println!(
        "{:<24} {:<4} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "SUBJECT", "OP", "MIN /s", "MEDIAN /s", "p50 ms MIN", "MEDIAN", "p99 ms MIN", "MEDIAN"
    );
    let mut report = json!({
        "quick": args.quick,
        "load_at_start": load,
        "nodes": args.nodes,
        "replicas": 2,
        "value_bytes": VALUE_BYTES,
        "connections": args.connections,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "loaded": {},
        "unloaded_get": {},
        "targets": {},
    });
    let row = |subject: Subject, method: &str, samples: &Samples, note: &str| {
        let (rate, p50, p99) = samples.summary();
        println!(
            "{:<24} {method:<4} {:>10.0} {:>10.0} {:>10.3} {:>10.3} {:>10.3} {:>10.3}{note}",
            subject.name(),
            rate.min,
            rate.median,
            p50.min,
            p50.median,
            p99.min,
            p99.median
        );
    };
    for ((subject, method), samples) in &requests.loaded {
        row(*subject, method, samples, "");
        report["loaded"][subject.key()][method] = samples.json();
    }
    for (subject, samples) in &requests.unloaded {
        row(*subject, "GET", samples, "   (one at a time)");
        report["unloaded_get"][subject.key()] = samples.json();
    }
    let rate = |s: Subject| requests.loaded[&(s, "GET")].summary().0.median;
    let p99 = |s: Subject| requests.unloaded[&s].summary().2.median;
    let get_ratio = rate(Subject::Owner) / rate(Subject::Bare);
    let hop_ms = p99(Subject::Forwarded) - p99(Subject::Owner);
    let loaded_p99 = |s: Subject| requests.loaded[&(s, "GET")].summary().2.median;
    println!(
        "owner GET / bare GET = {get_ratio:.3} (target >= 0.6: {}); forwarding adds {hop_ms:.3} ms to the one-at-a-time p99 (target <= 0.3 ms: {}), {:.2} ms to the p99 at {} in flight",
        pass(get_ratio >= 0.6),
        pass(hop_ms <= 0.3),
        loaded_p99(Subject::Forwarded) - loaded_p99(Subject::Owner),
        args.connections
    );
    report["owner_get_over_bare_get"] = json!(get_ratio);
    report["forwarding_adds_p99_ms"] = json!(hop_ms);
    report["targets"]["owner_get_over_bare_get"] = json!({"min": 0.6, "pass": get_ratio >= 0.6});
    report["targets"]["forwarding_adds_p99_ms"] = json!({"max": 0.3, "pass": hop_ms <= 0.3});

    println!(
        "handoff: {} keys of {VALUE_BYTES} B written at {:.0}/s ({} in flight), then a node joins and leaves again, {} rounds",
        handoff.keys_loaded, handoff.load_per_s, args.connections, args.handoff_rounds
    );
    println!(
        "{:<6} {:>8} {:>9} {:>10} {:>10} {:>12} {:>12}",
        "CHANGE", "KEYS", "MB", "COVERED s", "SENDER s", "REFERENCE s", "100k KEYS s"
    );
    // Per change: times covered, projected to 100,000 keys, and over the reference.
    let mut per_change: BTreeMap<&str, [Vec<f64>; 3]> = BTreeMap::new();
    let mut runs = Vec::new();
    for (h, reference) in handoff.runs.iter().zip(&handoff.reference) {
        let projected = h.covered.as_secs_f64() * 100_000.0 / h.keys.max(1) as f64;
        println!(
            "{:<6} {:>8} {:>9.1} {:>10.3} {:>10.3} {:>12.3} {:>12.3}",
            h.change,
            h.keys,
            h.bytes as f64 / 1e6,
            h.covered.as_secs_f64(),
            h.slowest_sender.as_secs_f64(),
            reference.as_secs_f64(),
            projected
        );
        let entry = per_change.entry(h.change).or_default();
        entry[0].push(h.covered.as_secs_f64());
        entry[1].push(projected);
        entry[2].push(h.covered.as_secs_f64() / reference.as_secs_f64());
        runs.push(json!({
            "change": h.change,
            "keys": h.keys,
            "bytes": h.bytes,
            "covered_s": h.covered.as_secs_f64(),
            "slowest_sender_s": h.slowest_sender.as_secs_f64(),
            "reference_s": reference.as_secs_f64(),
            "projected_100k_s": projected,
        }));
    }
    report["handoff"] = json!({
        "keys_loaded": handoff.keys_loaded,
        "load_per_s": handoff.load_per_s,
        "runs": runs,
    });
    for (change, samples) in per_change {
        let [covered, projected, over_reference] = samples.map(|v| Summary::of(v).unwrap());
        println!(
            "{change}: covered in min {:.3} / median {:.3} s, {:.1}x the reference (median); projected to 100,000 keys min {:.3} / median {:.3} s{}",
            covered.min,
            covered.median,
            over_reference.median,
            projected.min,
            projected.median,
            if change == "join" {
                format!(" (target <= 2 s: {})", pass(projected.median <= 2.0))
            } else {
                String::new()
            }
        );
        report["handoff"][change] = json!({"covered_s": covered.json(), "projected_100k_s": projected.json(), "over_reference": over_reference.json()});
        if change == "join" {
            report["targets"]["handoff_100k_s"] =
                json!({"max": 2.0, "pass": projected.median <= 2.0});
        }
    }
    if let Some(path) = args.json {
        write_json(std::path::Path::new(&path), &report).unwrap();
        println!("wrote {path}");
    }
}
