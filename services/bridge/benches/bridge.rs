//! `just bench bridge`: the bridge's fan-out to WebSocket clients and the dashboard's
//! frame rate, on a real system in one process: nats-server (testkit,
//! `nats/local.conf`: per-service users, fsync before every ack), the real reducer
//! (160 vnodes, its default) and the bridge with its default settings, each service
//! with its own NATS user and listener on 127.0.0.1, as `ringside up` runs them.
//!
//! Figures:
//! - `latency`: from a membership publish to the `event` frame of its epoch (the
//!   `RingRebalanced` the reducer stores for it) at each reading client, p50 and p99
//!   over every (event, reader) pair. `--clients` clients (1,000 by default) connect
//!   and read their hello and snapshot; then `--events` membership events (a join or
//!   a leave, in turn) are published one at a time as the watcher user, `--rate` per
//!   second; the clock is this process's, from just before the acked publish to the
//!   frame read by the client's task. Each round measures two phases, in turn first:
//!   every client reading, and `--stalled-percent` of them (10 by default) never
//!   reading after the handshake. The stalled clients connect first, with a 4 KiB
//!   receive buffer, and get 16 MiB of traffic frames before the readers connect: more
//!   than the kernel holds for them, so the bridge's writes to them block during the
//!   phase (the bridge closes each as stuck once a write has waited its send timeout,
//!   10 s by default: the run counts those closed before the phase's last event, and
//!   checks that all are closed within 15 s after it). The ring has `--members`
//!   members (100 by default).
//!   Reference, same phases: the `RingRebalanced` arriving at an ordered consumer of
//!   this process (what the bridge reads), so the bridge's share is visible. Targets:
//!   readers' p99 <= 50 ms with the stalled clients, and no more than 1.2 x the p99
//!   with every client reading (medians over the rounds).
//! - `dashboard`: the dashboard in headless Chromium (1,400 x 1,000), a ring of
//!   `--dashboard-members` members (1,000 by default, one `MembershipSynced`) and
//!   `--keys` key dots (10,000, the page's capacity) from `TrafficSampled` messages
//!   published on core NATS as the node user; then one member joins and the page's
//!   `window.ringside.fps(ms)` (requestAnimationFrame, the ring's animated layer
//!   redrawn every frame) runs for `--fps-ms` from the moment the page applies the
//!   epoch, inside the rebalance animation (4 s). References in the same page, just
//!   before: the same hook with no animation, and bare requestAnimationFrame callbacks
//!   (the browser's ceiling). Target: >= 50 frames per second (median of the rounds).
//!
//! Usage: `bridge [--clients N] [--stalled-percent P] [--members N] [--events N]
//! [--rate R] [--rounds N] [--dashboard-members N] [--keys N] [--fps-ms MS]
//! [--part all|latency|dashboard] [--json PATH] [--quick]`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use ringside_events::{Body, Event, Publisher, RingName, ServiceUser, codec, pb, subject};
use ringside_kit::InProcess;
use ringside_kit::settings::on_nats;
use ringside_testkit::NatsServer;
use ringside_testkit::bench::{
    Flags, Summary, load_average, ordered_from, pass, percentile, wait_for, write_json,
};
use ringside_testkit::browser::Browser;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Receive buffer of a stalled client: small, so the bridge's writes block soon.
const STALLED_RECV_BUFFER: u32 = 4096;
/// Clients connecting at once.
const CONNECTING: usize = 32;
/// Keys per `TrafficSampled` message (a node's sample).
const KEYS_PER_SAMPLE: usize = 1000;
/// Traffic frames sent to each stalled client before a phase: four times what the
/// kernel can hold for it, so the bridge's writes to it block.
const FILL_BYTES: usize = 16 << 20;
/// The dashboard's window, as docs/dashboard.md measured it.
const WINDOW: (u32, u32) = (1400, 1000);
/// Setup steps that take longer than this void the run.
const WITHIN: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    All,
    Latency,
    Dashboard,
}

impl std::str::FromStr for Part {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Part::All),
            "latency" => Ok(Part::Latency),
            "dashboard" => Ok(Part::Dashboard),
            _ => Err("expected all, latency or dashboard".into()),
        }
    }
}

struct Args {
    /// A smoke run (`--quick`): figures not comparable.
    quick: bool,
    json: Option<String>,
    part: Part,
    clients: usize,
    stalled_percent: usize,
    members: usize,
    events: usize,
    rate: f64,
    rounds: usize,
    dashboard_members: usize,
    keys: usize,
    fps_ms: u64,
}

fn parse_args() -> Args {
    Flags::read_or_exit(|flags| {
        let quick = flags.flag("--quick")?;
        Ok(Args {
            quick,
            json: flags.json_path()?,
            part: flags.value("--part", Part::All)?,
            clients: flags.value("--clients", if quick { 200 } else { 1000 })?,
            stalled_percent: flags.value("--stalled-percent", 10)?,
            members: flags.value("--members", 100)?,
            events: flags.value("--events", if quick { 20 } else { 50 })?,
            rate: flags.value("--rate", 10.0)?,
            rounds: flags.value("--rounds", if quick { 1 } else { 3 })?,
            dashboard_members: flags.value("--dashboard-members", 1000)?,
            keys: flags.value("--keys", 10_000)?,
            fps_ms: flags.value("--fps-ms", 3000)?,
        })
    })
}

fn member(id: String) -> pb::Member {
    pb::Member {
        address: format!("127.0.0.1:{}", 7000 + id.len()),
        id,
        weight: 1,
        ..Default::default()
    }
}

/// Starts service `S` in this process for `ring` on `nats` as `user`, with `pairs`.
async fn start<S: ringside_kit::Service>(
    nats: &NatsServer,
    ring: &RingName,
    user: ServiceUser,
    pairs: &[(&str, &str)],
) -> InProcess<S::Error>
where
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let password = nats.password(user.name()).ok();
    let settings = on_nats(&nats.url(), ring, user, password, pairs);
    InProcess::start::<S>(&settings)
        .await
        .unwrap_or_else(|e| panic!("the {} does not start: {e}", S::NAME))
}

/// nats-server, the reducer and the bridge following one ring of `members` members.
struct System {
    nats: NatsServer,
    ring: RingName,
    admin: async_nats::Client,
    /// Membership events, as the membership source publishes them.
    watcher: Publisher,
    reducer: InProcess<ringside_reducer::ReducerError>,
    bridge: InProcess<ringside_kit::ServiceError>,
    addr: SocketAddr,
    /// Members that joined during the run (the next join's id).
    joined: usize,
}

impl System {
    async fn start(members: usize) -> System {
        use ringside_bridge::config as bridge;
        use ringside_reducer::config as reducer;
        let nats = NatsServer::start_local_conf().await.expect("nats-server");
        let admin = nats.connect_provisioned().await.expect("provisioning");
        let ring = RingName::new("bench").unwrap();
        let watcher = Publisher::new(nats.connect_as(ServiceUser::Watcher).await.unwrap());
        let sync = pb::MembershipSynced {
            members: (0..members)
                .map(|i| member(format!("node-{i:04}")))
                .collect(),
            resource_version: "0".into(),
            ..Default::default()
        };
        watcher
            .publish(&Event::new(ring.clone(), sync).unwrap())
            .await
            .unwrap();
        let reducer = start::<ringside_reducer::Reducer>(
            &nats,
            &ring,
            ServiceUser::Reducer,
            &reducer::FREE_LOOPBACK_PORTS,
        )
        .await;
        let bridge = start::<ringside_bridge::BridgeService>(
            &nats,
            &ring,
            ServiceUser::Bridge,
            &[(bridge::ADDR.key, "127.0.0.1:0")],
        )
        .await;
        let addr = bridge.addr("dashboard").expect("the bridge's listener");
        let system = System {
            nats,
            ring,
            admin,
            watcher,
            reducer,
            bridge,
            addr,
            joined: 0,
        };
        wait_for(WITHIN, "the bridge ready at epoch 1", || async {
            let ready = matches!(
                ringside_testkit::http::get(addr, "/readyz").await,
                Some((200, _))
            );
            ready && system.bridge_epoch().await >= 1
        })
        .await;
        system
    }

    async fn bridge_epoch(&self) -> u64 {
        self.metric("ringside_bridge_epoch").await as u64
    }

    /// A sample of the bridge's `/metrics` page (0 when absent).
    async fn metric(&self, name_and_labels: &str) -> f64 {
        let page = ringside_testkit::http::get(self.addr, "/metrics")
            .await
            .expect("/metrics")
            .1;
        ringside_kit::telemetry::sample(&page, name_and_labels).unwrap_or(0.0)
    }

    /// The `i`th membership event of a run: a new member joins (even `i`), or the
    /// last one to join leaves (odd `i`), so the ring keeps its size.
    fn membership_event(&mut self, i: usize) -> Event {
        let body: Body = if i.is_multiple_of(2) {
            self.joined += 1;
            let id = format!("extra-{:04}", self.joined);
            pb::MembersJoined {
                members: vec![member(id.clone())],
                source_version: format!("{id}-joined"),
                ..Default::default()
            }
            .into()
        } else {
            let id = format!("extra-{:04}", self.joined);
            pb::MemberLeft {
                source_version: format!("{id}-left"),
                member_id: id,
                ..Default::default()
            }
            .into()
        };
        Event::new(self.ring.clone(), body).unwrap()
    }

    /// Publishes [`FILL_BYTES`] of traffic samples (core NATS, as nodes do) and waits
    /// until the bridge has sent what it can: the clients connected now that never read
    /// have their kernel buffers full (at most 4 MiB to send, `net.ipv4.tcp_wmem`, and
    /// their 4 KiB to receive), and the bridge's write to each of them blocks. Clients
    /// that connect later get none of it.
    async fn fill_stalled(&self) {
        let node = Publisher::new(
            self.nats
                .connect_as(ServiceUser::Node)
                .await
                .expect("the node user"),
        );
        let requests: Vec<pb::RoutedRequest> = (0..KEYS_PER_SAMPLE as u64)
            .map(|i| pb::RoutedRequest {
                position: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                owner: "node-0000".into(),
                forwarded: false,
            })
            .collect();
        let sample = Event::new(
            self.ring.clone(),
            pb::TrafficSampled {
                node: "node-0000".into(),
                epoch: 1,
                sample_every: 1,
                requests,
            },
        )
        .unwrap();
        let frame = codec::to_json(&sample).unwrap().len();
        for _ in 0..FILL_BYTES.div_ceil(frame) {
            node.publish_core(&sample).await.unwrap();
        }
        // Sent once the bridge's count of frames stops moving.
        let mut sent = -1.0;
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = self.metric("ringside_bridge_frames_sent_total").await;
            if now == sent {
                break;
            }
            sent = now;
        }
    }

    async fn stop(self) {
        self.bridge.stop().await.expect("the bridge stops cleanly");
        self.reducer
            .stop()
            .await
            .expect("the reducer stops cleanly");
        drop(self.nats);
    }
}

/// The epoch of a `RingRebalanced` event frame, read without parsing the frame (the
/// envelope's body comes after its four short fields, and `epoch` is the body's first).
fn rebalance_epoch(text: &str) -> Option<u64> {
    const MARK: &str = "\"ringRebalanced\":{\"epoch\":\"";
    let at = text.find(MARK)? + MARK.len();
    text[at..].split('"').next()?.parse().ok()
}

/// A client that has read its hello and snapshot: the connection and the snapshot's
/// size in bytes.
async fn connect_reader(addr: SocketAddr) -> (Ws, usize) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("a client connects");
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.starts_with("{\"type\":\"snapshot\"") => {
                return (ws, text.len());
            }
            Some(Ok(_)) => {}
            other => panic!("no snapshot: {other:?}"),
        }
    }
}

/// A client that never reads after the handshake, with a small receive buffer.
async fn connect_stalled(addr: SocketAddr) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(STALLED_RECV_BUFFER).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let request = format!("ws://{addr}/ws").into_client_request().unwrap();
    tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
        .await
        .expect("a stalled client connects")
        .0
}

/// What one reading client saw: when each epoch's frame arrived, the frames'
/// sizes, and resyncs.
#[derive(Default)]
struct Seen {
    arrivals: BTreeMap<u64, Instant>,
    bytes: Vec<usize>,
    resyncs: usize,
}

/// Reads `ws` until the epoch `last` says (once known) has arrived.
async fn read_epochs(mut ws: Ws, mut last: watch::Receiver<Option<u64>>) -> Seen {
    let mut seen = Seen::default();
    let done = |seen: &Seen, last: Option<u64>| {
        last.is_some_and(|l| seen.arrivals.last_key_value().is_some_and(|(e, _)| *e >= l))
    };
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let at = Instant::now();
                    if let Some(epoch) = rebalance_epoch(&text) {
                        seen.arrivals.insert(epoch, at);
                        seen.bytes.push(text.len());
                    } else if text.starts_with("{\"type\":\"resync\"") {
                        seen.resyncs += 1;
                    }
                    if done(&seen, *last.borrow()) {
                        return seen;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("a reader's connection ended: {other:?}"),
            },
            changed = last.changed() => {
                changed.expect("the target epoch");
                if done(&seen, *last.borrow()) {
                    return seen;
                }
            }
        }
    }
}

/// One phase's figures: latencies (ms, sorted) and what the phase looked like.
struct Phase {
    readers_ms: Vec<f64>,
    stored_ms: Vec<f64>,
    /// (event, reader) pairs with no frame of the event's epoch (a resync skipped it).
    missing: usize,
    resyncs: usize,
    frame_bytes: usize,
    snapshot_bytes: usize,
    /// Stalled clients the bridge closed as stuck before the last event arrived.
    stuck_early: usize,
    /// Stalled clients the bridge closed as stuck within 15 s after the phase (all of
    /// them: they really stalled).
    stuck_after: usize,
    /// Seconds to connect the readers (after the stalled clients stalled).
    connect_s: f64,
}

/// Connects `clients` clients of which `stalled` never read, publishes `events`
/// membership events at `rate` per second and times each epoch's frame at each reader.
async fn phase(
    system: &mut System,
    clients: usize,
    stalled: usize,
    events: usize,
    rate: f64,
) -> Phase {
    let addr = system.addr;
    let stuck_metric = "ringside_bridge_clients_closed_total{reason=\"stuck\"}";
    let stuck_before = system.metric(stuck_metric).await;
    let mut stalled_clients = Vec::with_capacity(stalled);
    for _ in 0..stalled {
        stalled_clients.push(connect_stalled(addr).await);
    }
    system.fill_stalled().await;
    let connecting = Instant::now();
    let connected: Vec<(Ws, usize)> = futures::stream::iter(0..clients - stalled)
        .map(|_| connect_reader(addr))
        .buffer_unordered(CONNECTING)
        .collect()
        .await;
    let connect_s = connecting.elapsed().as_secs_f64();
    let snapshot_bytes = connected.iter().map(|(_, b)| *b).max().unwrap_or(0);
    let (set_last, last) = watch::channel(None);
    let readers: Vec<_> = connected
        .into_iter()
        .map(|(ws, _)| tokio::spawn(read_epochs(ws, last.clone())))
        .collect();

    // The reference: the stored epochs, as the bridge's own consumer reads them.
    let js = jetstream::new(system.admin.clone());
    let mut stored = ordered_from(
        &js,
        subject::STREAM_EVENTS,
        vec![subject::rebalance(&system.ring)],
        consumer::DeliverPolicy::New,
    )
    .await
    .unwrap();
    let (set_last_membership, mut last_membership) = watch::channel(None::<u64>);
    let reference = tokio::spawn(async move {
        // (epoch, membership sequence it includes, arrival)
        let mut epochs: Vec<(u64, u64, Instant)> = Vec::new();
        loop {
            let through = epochs.last().map_or(0, |e| e.1);
            if last_membership.borrow().is_some_and(|l| through >= l) {
                return epochs;
            }
            tokio::select! {
                message = stored.next() => {
                    let message = message.expect("the stream ended").expect("a stored epoch");
                    let at = Instant::now();
                    let event = codec::decode_on(&message.subject, &message.payload).unwrap();
                    let Body::RingRebalanced(r) = event.body() else {
                        panic!("not an epoch on the rebalance subject");
                    };
                    epochs.push((r.epoch, r.membership_sequence, at));
                }
                changed = last_membership.changed() => changed.unwrap(),
            }
        }
    });

    let mut published: Vec<(u64, Instant)> = Vec::with_capacity(events);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0..events {
        tick.tick().await;
        let event = system.membership_event(i);
        let at = Instant::now();
        let done = system.watcher.publish(&event).await.unwrap();
        assert!(!done.duplicate, "every membership event is a new fact");
        published.push((done.sequence, at));
    }
    set_last_membership
        .send(published.last().map(|p| p.0))
        .unwrap();
    let epochs = tokio::time::timeout(WITHIN, reference)
        .await
        .expect("the reducer stored every epoch")
        .unwrap();
    set_last.send(epochs.last().map(|e| e.0)).unwrap();
    let mut seen = Vec::with_capacity(readers.len());
    for reader in readers {
        seen.push(
            tokio::time::timeout(WITHIN, reader)
                .await
                .expect("every reader got the last epoch")
                .unwrap(),
        );
    }
    let stuck_early = (system.metric(stuck_metric).await - stuck_before) as usize;

    // Each event's epoch: the first whose membership sequence includes it.
    let mut phase = Phase {
        readers_ms: Vec::new(),
        stored_ms: Vec::new(),
        missing: 0,
        resyncs: seen.iter().map(|s| s.resyncs).sum(),
        frame_bytes: 0,
        snapshot_bytes,
        stuck_early,
        stuck_after: 0,
        connect_s,
    };
    let ms = |from: Instant, to: Instant| to.duration_since(from).as_secs_f64() * 1000.0;
    for (sequence, at) in &published {
        let (epoch, _, stored_at) = epochs
            .iter()
            .find(|e| e.1 >= *sequence)
            .expect("an epoch for every event");
        phase.stored_ms.push(ms(*at, *stored_at));
        for reader in &seen {
            match reader.arrivals.get(epoch) {
                Some(arrived) => phase.readers_ms.push(ms(*at, *arrived)),
                None => phase.missing += 1,
            }
        }
    }
    phase.readers_ms.sort_by(f64::total_cmp);
    phase.stored_ms.sort_by(f64::total_cmp);
    let mut bytes: Vec<usize> = seen.iter().flat_map(|s| s.bytes.iter().copied()).collect();
    bytes.sort_unstable();
    phase.frame_bytes = bytes.get(bytes.len() / 2).copied().unwrap_or(0);
    drop(seen);

    // Proof that the stalled clients stalled: the bridge closes each as stuck once a
    // frame has waited the send timeout (10 s by default).
    if stalled > 0 {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            phase.stuck_after = (system.metric(stuck_metric).await - stuck_before) as usize;
            if phase.stuck_after >= stalled || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    drop(stalled_clients);
    wait_for(WITHIN, "the bridge to count no client", || async {
        system.metric("ringside_bridge_clients").await == 0.0
    })
    .await;
    phase
}

/// The latency figures of one mode over the rounds.
#[derive(Default)]
struct Mode {
    p50: Vec<f64>,
    p99: Vec<f64>,
    stored_p50: Vec<f64>,
    stored_p99: Vec<f64>,
    missing: usize,
    resyncs: usize,
    stuck_early: usize,
    stuck_after: usize,
    frame_bytes: usize,
    snapshot_bytes: usize,
}

impl Mode {
    fn push(&mut self, p: &Phase) {
        self.p50.push(percentile(&p.readers_ms, 50.0));
        self.p99.push(percentile(&p.readers_ms, 99.0));
        self.stored_p50.push(percentile(&p.stored_ms, 50.0));
        self.stored_p99.push(percentile(&p.stored_ms, 99.0));
        self.missing += p.missing;
        self.resyncs += p.resyncs;
        self.stuck_early += p.stuck_early;
        self.stuck_after += p.stuck_after;
        self.frame_bytes = p.frame_bytes;
        self.snapshot_bytes = p.snapshot_bytes;
    }

    fn summaries(&self) -> [Summary; 4] {
        let s = |v: &Vec<f64>| Summary::of(v.clone()).expect("at least one round");
        [
            s(&self.p50),
            s(&self.p99),
            s(&self.stored_p50),
            s(&self.stored_p99),
        ]
    }

    fn json(&self) -> Value {
        let [p50, p99, stored_p50, stored_p99] = self.summaries();
        json!({
            "p50_ms": p50.json(),
            "p99_ms": p99.json(),
            "stored_p50_ms": stored_p50.json(),
            "stored_p99_ms": stored_p99.json(),
            "missing": self.missing,
            "resyncs": self.resyncs,
            "stalled_closed_before_last_event": self.stuck_early,
            "stalled_closed_as_stuck": self.stuck_after,
            "rebalance_frame_bytes": self.frame_bytes,
            "snapshot_frame_bytes": self.snapshot_bytes,
        })
    }
}

async fn latency(args: &Args) -> Value {
    let mut system = System::start(args.members).await;
    let stalled = args.clients * args.stalled_percent / 100;
    let (mut reading, mut with_stalled) = (Mode::default(), Mode::default());
    for round in 0..args.rounds {
        // Alternate which phase goes first, so drift in the machine's load is shared.
        for first in [round % 2 == 0, round % 2 == 1] {
            let (n, mode) = if first {
                (0, &mut reading)
            } else {
                (stalled, &mut with_stalled)
            };
            let p = phase(&mut system, args.clients, n, args.events, args.rate).await;
            eprintln!(
                "round {}, {n} stalled (readers connected in {:.1} s): readers p50 {:.2} ms p99 {:.2} ms; stored p50 {:.2} ms p99 {:.2} ms; {} missing, {} resyncs, stalled closed {} early / {} in all",
                round + 1,
                p.connect_s,
                percentile(&p.readers_ms, 50.0),
                percentile(&p.readers_ms, 99.0),
                percentile(&p.stored_ms, 50.0),
                percentile(&p.stored_ms, 99.0),
                p.missing,
                p.resyncs,
                p.stuck_early,
                p.stuck_after,
            );
            mode.push(&p);
        }
    }
    system.stop().await;

    let [p50, p99, stored_p50, stored_p99] = reading.summaries();
    let [sp50, sp99, sstored_p50, sstored_p99] = with_stalled.summaries();
    println!(
        "latency: membership publish to the epoch's frame at each reader; {} clients, {} members (160 vnodes), {} events per phase at {}/s, {} rounds; rebalance frame {:.1} KB, snapshot {:.1} KB",
        args.clients,
        args.members,
        args.events,
        args.rate,
        args.rounds,
        reading.frame_bytes as f64 / 1024.0,
        reading.snapshot_bytes as f64 / 1024.0,
    );
    println!("{:<46} {:>16} {:>16}", "FIGURE (ms)", "MIN", "MEDIAN");
    for (name, v) in [
        ("every client reading: readers p50", p50),
        ("every client reading: readers p99", p99),
        ("every client reading: stored p50 (reference)", stored_p50),
        ("every client reading: stored p99 (reference)", stored_p99),
        ("10% stalled: readers p50", sp50),
        ("10% stalled: readers p99", sp99),
        ("10% stalled: stored p50 (reference)", sstored_p50),
        ("10% stalled: stored p99 (reference)", sstored_p99),
    ] {
        println!("{name:<46} {:>16.2} {:>16.2}", v.min, v.median);
    }
    let ratio = sp99.median / p99.median;
    let p99_ok = sp99.median <= 50.0;
    let ratio_ok = ratio <= 1.2;
    println!(
        "readers' p99 with {stalled} stalled {:.2} ms (target <= 50 ms: {}); {:.2} x the p99 with every client reading (target <= 1.20: {})",
        sp99.median,
        pass(p99_ok),
        ratio,
        pass(ratio_ok),
    );
    println!(
        "stalled clients: {} of {} closed as stuck by the send timeout after their phase (they stalled), {} before its last event; pairs without their frame: {} reading, {} with stalled; resyncs {} / {}",
        with_stalled.stuck_after,
        stalled * args.rounds,
        with_stalled.stuck_early,
        reading.missing,
        with_stalled.missing,
        reading.resyncs,
        with_stalled.resyncs,
    );
    json!({
        "clients": args.clients,
        "stalled": stalled,
        "members": args.members,
        "events_per_phase": args.events,
        "rate_per_s": args.rate,
        "rounds": args.rounds,
        "every_client_reading": reading.json(),
        "with_stalled": with_stalled.json(),
        "p99_stalled_over_reading": ratio,
        "targets": {
            "p99_ms": {"max": 50, "pass": p99_ok},
            "p99_stalled_over_reading": {"max": 1.2, "pass": ratio_ok},
        },
    })
}

/// Resolves to the page's frames per second over `ms` once its epoch reaches `epoch`
/// (the hook redraws the ring's animated layer every frame).
const FPS_AT_EPOCH: &str = "const [epoch, ms] = arguments;
  return new Promise((resolve) => {
    const poll = () => {
      if (window.ringside.state.epoch >= epoch) window.ringside.fps(ms).then(resolve);
      else setTimeout(poll, 5);
    };
    poll();
  });";

/// Bare requestAnimationFrame callbacks per second over `ms`: the browser's ceiling.
const RAF_RATE: &str = "const ms = arguments[0];
  return new Promise((resolve) => {
    let frames = 0;
    const start = performance.now();
    const tick = (now) => {
      if (now - start >= ms) return resolve((frames * 1000) / (now - start));
      frames++;
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });";

/// Whether the page holds at least `count` dots, each received after `since`.
const DOTS_SINCE: &str = "const [count, since] = arguments;
  const d = window.ringside.store.dots;
  let oldest = Infinity;
  for (let i = 0; i < d.count; i++) oldest = Math.min(oldest, d.at[i]);
  return d.count >= count && oldest >= since;";

async fn page(browser: &Browser, script: &str, args: Vec<Value>) -> Value {
    browser
        .execute(script, args)
        .await
        .expect("the page runs it")
}

async fn dashboard(args: &Args) -> Value {
    let mut system = System::start(args.dashboard_members).await;
    let node = Publisher::new(
        system
            .nats
            .connect_as(ServiceUser::Node)
            .await
            .expect("the node user"),
    );
    let (follower, view) = ringside_client::follow(
        system.admin.clone(),
        ringside_client::ClientConfig::new(system.ring.clone()).label("bench"),
    );
    tokio::spawn(follower.run(std::future::pending()));
    let browser = Browser::start(WINDOW.0, WINDOW.1)
        .await
        .expect("headless Chromium");
    browser
        .goto(&format!("http://{}/", system.addr))
        .await
        .unwrap();
    let members = args.dashboard_members;
    wait_for(WITHIN, "the page to show every member", || async {
        page(
            &browser,
            "return window.ringside ? window.ringside.state.members.length : 0",
            vec![],
        )
        .await
            == json!(members)
    })
    .await;
    let (mut fps, mut idle, mut ceiling) = (vec![], vec![], vec![]);
    for round in 0..args.rounds {
        let epoch = system.bridge_epoch().await;
        wait_for(WITHIN, "the benchmark's ring at the bridge's epoch", || {
            let at = view.epoch();
            async move { at >= Some(epoch) }
        })
        .await;
        let ring = view.ring().expect("the followed ring");
        // Fresh dots (they fade over 30 s): every key at its owner, as nodes sample.
        let since = page(&browser, "return performance.now()", vec![]).await;
        let keys: Vec<String> = (0..args.keys).map(|i| format!("key-{i}")).collect();
        for (n, chunk) in keys.chunks(KEYS_PER_SAMPLE).enumerate() {
            let sample = pb::TrafficSampled {
                node: format!("node-{n:04}"),
                epoch,
                sample_every: 1,
                requests: chunk
                    .iter()
                    .map(|k| pb::RoutedRequest {
                        position: ringside_ring::hash_key(k.as_bytes()),
                        owner: ring.lookup(k.as_bytes()).unwrap().id.clone(),
                        forwarded: false,
                    })
                    .collect(),
            };
            node.publish_core(&Event::new(system.ring.clone(), sample).unwrap())
                .await
                .unwrap();
        }
        let want = args.keys.min(10_000);
        wait_for(WITHIN, "the page to hold the key dots", || async {
            page(&browser, DOTS_SINCE, vec![json!(want), since.clone()]).await == json!(true)
        })
        .await;
        let ms = args.fps_ms;
        ceiling.push(
            page(&browser, RAF_RATE, vec![json!(ms)])
                .await
                .as_f64()
                .unwrap(),
        );
        idle.push(
            page(&browser, FPS_AT_EPOCH, vec![json!(0), json!(ms)])
                .await
                .as_f64()
                .unwrap(),
        );
        // One member joins; the page's hook starts when it applies the epoch.
        let join = system.membership_event(0);
        let (measured, _) = tokio::join!(
            page(&browser, FPS_AT_EPOCH, vec![json!(epoch + 1), json!(ms)]),
            async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                system.watcher.publish(&join).await.unwrap();
            }
        );
        fps.push(measured.as_f64().unwrap());
        eprintln!(
            "round {}: rebalance {:.1} fps, idle {:.1} fps, requestAnimationFrame {:.1}/s",
            round + 1,
            fps[round],
            idle[round],
            ceiling[round]
        );
    }
    let errors = page(&browser, "return window.ringside.errors", vec![]).await;
    browser.close().await;
    system.stop().await;

    let s = |v: Vec<f64>| Summary::of(v).expect("at least one round");
    let (fps, idle, ceiling) = (s(fps), s(idle), s(ceiling));
    println!(
        "dashboard: headless Chromium {}x{}, {} members (160 vnodes), {} key dots, {} rounds of {} ms",
        WINDOW.0, WINDOW.1, members, args.keys, args.rounds, args.fps_ms
    );
    println!("{:<46} {:>16} {:>16}", "FIGURE (frames/s)", "MIN", "MEDIAN");
    for (name, v) in [
        ("during the rebalance animation", fps),
        ("same hook, no animation (reference)", idle),
        ("bare requestAnimationFrame (ceiling)", ceiling),
    ] {
        println!("{name:<46} {:>16.1} {:>16.1}", v.min, v.median);
    }
    let fps_ok = fps.median >= 50.0;
    println!(
        "rebalance animation {:.1} fps (target >= 50: {}), {:.2} of the page without animation, {:.2} of the ceiling; page errors: {errors}",
        fps.median,
        pass(fps_ok),
        fps.median / idle.median,
        fps.median / ceiling.median,
    );
    json!({
        "members": members,
        "keys": args.keys,
        "window": [WINDOW.0, WINDOW.1],
        "fps_ms": args.fps_ms,
        "rounds": args.rounds,
        "rebalance_fps": fps.json(),
        "idle_fps": idle.json(),
        "raf_per_s": ceiling.json(),
        "rebalance_over_idle": fps.median / idle.median,
        "page_errors": errors,
        "targets": {"fps": {"min": 50, "pass": fps_ok}},
    })
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let load = load_average();
    println!(
        "bridge benchmark{}; load at start {load}",
        if args.quick {
            " (--quick: figures not comparable)"
        } else {
            ""
        }
    );
    let mut report = json!({"quick": args.quick, "load_at_start": load});
    if matches!(args.part, Part::All | Part::Latency) {
        report["latency"] = latency(&args).await;
    }
    if matches!(args.part, Part::All | Part::Dashboard) {
        report["dashboard"] = dashboard(&args).await;
    }
    if let Some(path) = args.json {
        write_json(std::path::Path::new(&path), &report).unwrap();
        println!("wrote {path}");
    }
}
