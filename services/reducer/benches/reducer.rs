//! `just bench reducer`: the ring reducer as a process (`ringside reducer`, release
//! build) against the real nats-server with `nats/local.conf` (fsync before every ack).
//!
//! Figures:
//! - `cold_replay`: membership events per second of a reducer that starts with no
//!   snapshot on a stream of `--events` membership events (100,000 by default) whose
//!   epochs are stored (the situation after a lost snapshot bucket, or a new replica):
//!   from process start to `/readyz` saying it is caught up (the epochs before the
//!   stored head folded with `CatchUp::advance`, the head's checked field by field,
//!   then a snapshot). As a ratio of `raw_ordered_consumer`, reading the same
//!   membership messages with an ordered consumer and nothing else, in the same run.
//!   Target: >= 0.5. Also as a ratio of `fold`, the catch-up's fold alone
//!   (`CatchUp::advance`) over the same events in memory, which says how much the
//!   reducer adds to the fold.
//! - `latency`: time from a membership publish to its rebalance event stored (its
//!   arrival at an ordered consumer of the rebalance subject, before this benchmark
//!   decodes it), on a ring of `--latency-members` members (1000 by default, 160
//!   vnodes, balanced), one leave or re-join at a time, 10 ms apart: p50 and p99 of
//!   each of `--rounds` rounds of `--latency-samples` samples on the same ring, as min
//!   and median over the rounds. Target: median p99 <= 5 ms.
//! - `rss`: the reducer's resident memory with that ring (`VmRSS` after the latency
//!   run, and the peak `VmHWM`). Target: <= 50 MB. Then the same with one `WatchRing`
//!   client that stopped reading after its snapshot, a whole watch buffer (256
//!   epochs, the default) behind: what a slow client costs (the client then checks it
//!   still gets every epoch).
//!
//! The replay workload is the tests' scripted churn (`tests/common`, fixed seed) over
//! 48 member ids, a ring of 34 members on average (3 to 46; about 1,300 tokens) with
//! 160 vnodes per unit of weight, balanced: joins of one to
//! three members (some re-weights and restarts), leaves, and 1 % full syncs, stored in
//! atomic batches of 1000 followed by their epochs (a reducer one batch behind). Usage: `reducer [--ringside PATH] [--events N] [--rounds N]
//! [--latency-members N] [--latency-samples N] [--only replay|latency] [--json PATH]
//! [--quick]`. `--only` runs one part (cold replay takes minutes; `latency` includes
//! `rss`); the figures of the other part are left out of the table and are `null` in the
//! JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use common::Bus;
use common::process::ReducerProcess;
use futures::StreamExt;
use ringside_events::{Body, Event, Outcome, Publisher, RingLedger, RingName, codec, pb, subject};
use ringside_reducer::metrics as m;
use ringside_ring::{RingConfig, Strategy};
use ringside_testkit::bench::{
    FlagError, Flags, Summary, load_average, pass, per_second, percentile, write_json,
};
use serde_json::json;

/// Seed, member pool and share of full syncs (%) of the replay workload (the tests'
/// churn, with syncs as rare as a watcher's re-lists).
const REPLAY_SEED: u64 = 0x5eed;
const REPLAY_POOL: usize = 48;
const REPLAY_SYNCS: u32 = 1;

struct Args {
    ringside: PathBuf,
    events: usize,
    rounds: usize,
    latency_members: usize,
    latency_samples: usize,
    json: Option<String>,
    quick: bool,
    /// Run the cold replay part.
    replay: bool,
    /// Run the latency (and RSS) part.
    latency: bool,
}

fn parse_args() -> Result<Args, FlagError> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let mut flags = Flags::from_args()?;
    let quick = flags.flag("--quick")?;
    let only: Option<String> = flags.optional("--only")?;
    let (replay, latency) = match only.as_deref() {
        None => (true, true),
        Some("replay") => (true, false),
        Some("latency") => (false, true),
        Some(other) => {
            return Err(FlagError::BadValue {
                name: "--only".into(),
                value: other.into(),
                reason: "replay or latency".into(),
            });
        }
    };
    let args = Args {
        ringside: flags.value("--ringside", target.join("release/ringside"))?,
        events: flags.value("--events", if quick { 10_000 } else { 100_000 })?,
        rounds: flags.value("--rounds", if quick { 1 } else { 3 })?,
        latency_members: flags.value("--latency-members", 1000)?,
        latency_samples: flags.value("--latency-samples", if quick { 100 } else { 400 })?,
        json: flags.json_path()?,
        quick,
        replay,
        latency,
    };
    flags.finish()?;
    assert!(
        args.ringside.is_file(),
        "{} not found: build it first (cargo build --release -p ringside) or pass --ringside",
        args.ringside.display()
    );
    Ok(args)
}

fn member(id: u64, incarnation: usize) -> pb::Member {
    pb::Member {
        id: format!("node-{id:04}"),
        address: format!("10.1.{}.{}:7000", id / 250, id % 250 + 1),
        weight: 1,
        uid: Some(format!("uid-{id}-{incarnation}")),
        ..Default::default()
    }
}

fn config() -> RingConfig {
    RingConfig::new(Strategy::Balanced, RingConfig::DEFAULT_VNODES).unwrap()
}

/// Stores `events` and, after each batch, its epochs (folded here, atomic batches of
/// 1000; the epochs as the reducer user, their only writer). Returns the stored
/// membership sequences.
async fn store_history(bus: &Bus, ring: &RingName, events: &[Event]) -> Vec<u64> {
    let publisher = Publisher::new(bus.admin.clone()).with_window(1000);
    let reducer = Publisher::new(bus.reducer.clone()).with_window(1000);
    let mut ledger = RingLedger::new(ring.clone(), config());
    let mut sequences = Vec::with_capacity(events.len());
    for chunk in events.chunks(1000) {
        let stored = publisher.publish_batch(chunk).await.unwrap();
        assert_eq!(
            stored.stored as usize,
            chunk.len(),
            "every event is a new fact"
        );
        let first = stored.last_sequence + 1 - chunk.len() as u64;
        let mut made = Vec::new();
        for (seq, event) in (first..).zip(chunk) {
            sequences.push(seq);
            if let Outcome::Rebalanced(r) = ledger.apply(seq, event.body()) {
                made.push(Event::new(ring.clone(), *r).unwrap());
            }
        }
        if !made.is_empty() {
            reducer.publish_batch(&made).await.unwrap();
        }
    }
    sequences
}

/// Empties the snapshot bucket (each cold replay starts without a snapshot).
async fn drop_snapshots(bus: &Bus) {
    jetstream::new(bus.admin.clone())
        .get_stream(format!("KV_{}", subject::KV_SNAPSHOTS))
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
}

/// The catch-up's fold alone (`CatchUp::advance`: no events built, then the ring built
/// once) over `events` at `sequences`, in memory: events per second.
fn fold_rate(ring: &RingName, events: &[Event], sequences: &[u64]) -> f64 {
    let mut catch_up = RingLedger::new(ring.clone(), config()).catch_up();
    let start = Instant::now();
    for (seq, event) in sequences.iter().zip(events) {
        std::hint::black_box(catch_up.advance(*seq, event.body()));
    }
    std::hint::black_box(catch_up.finish());
    per_second(events.len(), start.elapsed())
}

/// Reads the membership subject from the start with an ordered consumer: messages per
/// second.
async fn ordered_consumer_rate(bus: &Bus, ring: &RingName, count: usize) -> f64 {
    let stream = bus.stream().await;
    let config = consumer::pull::OrderedConfig {
        filter_subject: subject::membership(ring),
        ..Default::default()
    };
    ringside_testkit::bench::ordered_read_rate(&stream, config, count)
        .await
        .unwrap()
}

/// Starts the reducer binary for `ring` with the benchmark's ring configuration.
async fn spawn(args: &Args, bus: &Bus, ring: &RingName, instance: &str) -> ReducerProcess {
    let vnodes = RingConfig::DEFAULT_VNODES.to_string();
    ReducerProcess::spawn(
        &args.ringside,
        bus,
        ring.as_str(),
        instance,
        &["--vnodes", &vnodes],
    )
    .await
}

/// One sample of the reducer's `/metrics`.
async fn metric(reducer: &ReducerProcess, name: &str) -> f64 {
    common::metric(reducer.metrics, name).await
}

/// One of the reducer's time histograms: (sum in seconds, count).
async fn histogram(reducer: &ReducerProcess, name: &str) -> (f64, f64) {
    (
        metric(reducer, &format!("{name}_sum")).await,
        metric(reducer, &format!("{name}_count")).await,
    )
}

/// The reducer's default `WatchRing` buffer, in epochs.
fn default_watch_buffer() -> usize {
    ringside_reducer::config::WATCH_BUFFER
        .default_value()
        .and_then(|v| v.parse().ok())
        .expect("the watch buffer has a numeric default")
}

struct Replay {
    epochs: u64,
    fold: Summary,
    ordered: Summary,
    reducer: Summary,
}

async fn cold_replay(args: &Args) -> Replay {
    let bus = Bus::start().await;
    let ring = common::ring();
    let events = common::churn_with(REPLAY_SEED, args.events, REPLAY_POOL, REPLAY_SYNCS);
    eprintln!(
        "storing {} membership events and their epochs...",
        events.len()
    );
    let sequences = store_history(&bus, &ring, &events).await;
    let (mut fold, mut ordered, mut reducer) = (vec![], vec![], vec![]);
    let mut epochs = 0;
    for round in 0..args.rounds {
        fold.push(fold_rate(&ring, &events, &sequences));
        ordered.push(ordered_consumer_rate(&bus, &ring, events.len()).await);
        drop_snapshots(&bus).await;
        let start = Instant::now();
        let r = spawn(args, &bus, &ring, &format!("replay-{round}")).await;
        common::wait_ready(r.metrics, Duration::from_secs(600)).await;
        let took = start.elapsed();
        epochs = metric(&r, m::EPOCH.name).await as u64;
        let folded = metric(&r, m::MEMBERSHIP_SEQUENCE.name).await as u64;
        assert_eq!(folded, *sequences.last().unwrap(), "not caught up");
        reducer.push(per_second(events.len(), took));
        r.stop().await;
        eprintln!(
            "round {}: fold {:.0}/s, ordered consumer {:.0}/s, reducer cold replay {:.0}/s ({epochs} epochs)",
            round + 1,
            fold[round],
            ordered[round],
            reducer[round]
        );
    }
    Replay {
        epochs,
        fold: Summary::of(fold).unwrap(),
        ordered: Summary::of(ordered).unwrap(),
        reducer: Summary::of(reducer).unwrap(),
    }
}

struct Latency {
    /// Over the rounds: each round's p50.
    p50_ms: Summary,
    /// Over the rounds: each round's p99.
    p99_ms: Summary,
    /// The slowest sample of all.
    max_ms: f64,
    /// p50 of the membership publish alone (until its ack: stored and fsynced).
    publish_p50_ms: f64,
    /// The reducer's own mean time per event (fold and store), from its histogram.
    handling_mean_ms: f64,
    /// Of that, the fold alone.
    fold_mean_ms: f64,
    rss: u64,
    hwm: u64,
    /// RSS with a `WatchRing` client a whole watch buffer behind.
    rss_lagging: u64,
}

/// The `k`th step of the latency churn on a ring of `n` members (a leave, then the
/// same member's re-join): publishes it and waits for its rebalance event on
/// `rebalances`. Returns how long the publish took to be acknowledged and how long
/// until the rebalance event arrived.
async fn churn_step(
    bus: &Bus,
    ring: &RingName,
    n: u64,
    k: usize,
    rebalances: &mut consumer::pull::Ordered,
) -> (Duration, Duration) {
    let id = (k as u64 / 2 * 7919) % n;
    let body: Body = if k.is_multiple_of(2) {
        pb::MemberLeft {
            member_id: member(id, 0).id,
            detail: format!("sample {k}"),
            ..Default::default()
        }
        .into()
    } else {
        pb::MembersJoined {
            members: vec![member(id, k)],
            ..Default::default()
        }
        .into()
    };
    let event = Event::new(ring.clone(), body).unwrap();
    let start = Instant::now();
    let stored = bus.publisher.publish(&event).await.unwrap();
    let publish = start.elapsed();
    loop {
        let m = rebalances.next().await.unwrap().unwrap();
        // Stored and delivered now; decoding it is this benchmark's own work.
        let arrived = start.elapsed();
        let Body::RingRebalanced(r) = codec::decode(&m.payload).unwrap().into_body() else {
            panic!("not a rebalance event");
        };
        if r.membership_sequence == stored.sequence {
            return (publish, arrived);
        }
    }
}

/// The reducer's memory with one `WatchRing` client that reads its snapshot and then
/// nothing, while `epochs` (the reducer's watch buffer) more epochs are stored: the
/// reducer keeps each for the client. Returns `VmRSS` then, after checking that the
/// client still gets every one of them in order.
async fn lagging_watcher(
    bus: &Bus,
    ring: &RingName,
    reducer: &ReducerProcess,
    (n, k): (u64, usize),
    rebalances: &mut consumer::pull::Ordered,
    epochs: usize,
) -> u64 {
    let mut client = common::ring_client(reducer.grpc).await;
    let mut watch = client
        .watch_ring(pb::WatchRingRequest {
            ring: ring.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(pb::watch_ring_response::Update::Snapshot(snapshot)) =
        watch.message().await.unwrap().unwrap().update
    else {
        panic!("a watch starts with a snapshot");
    };
    for step in 0..epochs {
        churn_step(bus, ring, n, k + step, rebalances).await;
    }
    // The churn above runs without pauses: let the allocator return what it freed
    // (mimalloc does after about a second), so that what is left is what is kept.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, _) = reducer.memory();
    for epoch in snapshot.epoch + 1..=snapshot.epoch + epochs as u64 {
        let Some(pb::watch_ring_response::Update::Rebalanced(r)) =
            watch.message().await.unwrap().unwrap().update
        else {
            panic!("a watch goes on with rebalance events");
        };
        assert_eq!(r.epoch, epoch, "the lagging watcher missed an epoch");
    }
    rss
}

async fn latency(args: &Args) -> Latency {
    let bus = Bus::start().await;
    let ring = common::ring();
    let n = args.latency_members as u64;
    // The whole ring at once: one sync of every member, one epoch.
    let sync = Event::new(
        ring.clone(),
        pb::MembershipSynced {
            members: (0..n).map(|i| member(i, 0)).collect(),
            resource_version: "0".into(),
            ..Default::default()
        },
    )
    .unwrap();
    bus.publisher.publish(&sync).await.unwrap();
    let reducer = spawn(args, &bus, &ring, "latency").await;
    common::wait_ready(reducer.metrics, Duration::from_secs(600)).await;
    let stream = bus.stream().await;
    let mut rebalances = common::ordered(
        &stream,
        subject::rebalance(&ring),
        consumer::DeliverPolicy::New,
    )
    .await;
    let mut rounds = Vec::with_capacity(args.rounds);
    let mut publishes = Vec::with_capacity(args.rounds * args.latency_samples);
    let before = (
        histogram(&reducer, m::EVENT_SECONDS.name).await,
        histogram(&reducer, m::FOLD_SECONDS.name).await,
    );
    let mut k = 0usize;
    for round in 0..args.rounds {
        let mut samples = Vec::with_capacity(args.latency_samples);
        for _ in 0..args.latency_samples {
            let (publish, arrived) = churn_step(&bus, &ring, n, k, &mut rebalances).await;
            k += 1;
            publishes.push(publish.as_secs_f64() * 1000.0);
            samples.push(arrived.as_secs_f64() * 1000.0);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        samples.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&samples, 50.0), percentile(&samples, 99.0));
        eprintln!(
            "round {}: p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.2} ms",
            round + 1,
            samples[samples.len() - 1]
        );
        rounds.push((p50, p99, samples[samples.len() - 1]));
    }
    let after = (
        histogram(&reducer, m::EVENT_SECONDS.name).await,
        histogram(&reducer, m::FOLD_SECONDS.name).await,
    );
    let mean_ms = |(sum0, count0): (f64, f64), (sum1, count1): (f64, f64)| {
        (sum1 - sum0) / (count1 - count0) * 1000.0
    };
    let (rss, hwm) = reducer.memory();
    let rss_lagging = lagging_watcher(
        &bus,
        &ring,
        &reducer,
        (n, k),
        &mut rebalances,
        default_watch_buffer(),
    )
    .await;
    reducer.stop().await;
    publishes.sort_by(f64::total_cmp);
    Latency {
        p50_ms: Summary::of(rounds.iter().map(|r| r.0).collect()).unwrap(),
        p99_ms: Summary::of(rounds.iter().map(|r| r.1).collect()).unwrap(),
        max_ms: rounds.iter().map(|r| r.2).fold(0.0, f64::max),
        publish_p50_ms: percentile(&publishes, 50.0),
        handling_mean_ms: mean_ms(before.0, after.0),
        fold_mean_ms: mean_ms(before.1, after.1),
        rss,
        hwm,
        rss_lagging,
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args().unwrap_or_else(|e| panic!("{e}"));
    let load = load_average();
    let replay = if args.replay {
        Some(cold_replay(&args).await)
    } else {
        None
    };
    let latency = if args.latency {
        Some(latency(&args).await)
    } else {
        None
    };

    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut parts = Vec::new();
    if let Some(replay) = &replay {
        parts.push(format!(
            "cold replay of {} membership events ({} epochs, ring of ~34 members, 160 vnodes), {} rounds",
            args.events, replay.epochs, args.rounds
        ));
    }
    if latency.is_some() {
        parts.push(format!(
            "latency on a {}-member ring, {} rounds of {} samples",
            args.latency_members, args.rounds, args.latency_samples
        ));
    }
    println!(
        "reducer benchmark{}: {}; load at start {}",
        if args.quick {
            " (--quick: figures not comparable)"
        } else {
            ""
        },
        parts.join("; "),
        load
    );
    let mut report = json!({
        "quick": args.quick,
        "load_at_start": load,
        "events": args.events,
        "rounds": args.rounds,
        "latency_members": args.latency_members,
        "latency_samples": args.latency_samples,
        "epochs": null,
        "fold_per_s": null,
        "raw_ordered_consumer_per_s": null,
        "cold_replay_per_s": null,
        "cold_replay_over_ordered_consumer": null,
        "cold_replay_over_fold": null,
        "latency_ms": null,
        "membership_publish_p50_ms": null,
        "reducer_handling_mean_ms": null,
        "reducer_fold_mean_ms": null,
        "rss_bytes": null,
        "peak_rss_bytes": null,
        "rss_lagging_watcher_bytes": null,
        "targets": {},
    });
    if let Some(replay) = &replay {
        let ratio = replay.reducer.median / replay.ordered.median;
        let over_fold = replay.reducer.median / replay.fold.median;
        println!("{:<28} {:>14} {:>14}", "FIGURE", "MIN", "MEDIAN");
        for (name, Summary { min, median }) in [
            ("fold (advance, in memory) /s", replay.fold),
            ("raw_ordered_consumer /s", replay.ordered),
            ("reducer cold_replay /s", replay.reducer),
        ] {
            println!("{name:<28} {min:>14.0} {median:>14.0}");
        }
        println!(
            "cold_replay / raw_ordered_consumer = {ratio:.3} (target >= 0.5: {}); cold_replay / fold = {over_fold:.3}",
            pass(ratio >= 0.5)
        );
        report["epochs"] = json!(replay.epochs);
        report["fold_per_s"] = replay.fold.json();
        report["raw_ordered_consumer_per_s"] = replay.ordered.json();
        report["cold_replay_per_s"] = replay.reducer.json();
        report["cold_replay_over_ordered_consumer"] = json!(ratio);
        report["cold_replay_over_fold"] = json!(over_fold);
        report["targets"]["cold_replay_over_ordered_consumer"] =
            json!({"min": 0.5, "pass": ratio >= 0.5});
    }
    if let Some(latency) = &latency {
        println!(
            "latency membership publish -> rebalance stored, over {} rounds: p50 min {:.2} / median {:.2} ms, p99 min {:.2} / median {:.2} ms, max {:.2} ms (target median p99 <= 5 ms: {})",
            args.rounds,
            latency.p50_ms.min,
            latency.p50_ms.median,
            latency.p99_ms.min,
            latency.p99_ms.median,
            latency.max_ms,
            pass(latency.p99_ms.median <= 5.0)
        );
        println!(
            "  of which: membership publish acked p50 {:.2} ms; the reducer's fold and store, mean {:.2} ms (the fold {:.2} ms)",
            latency.publish_p50_ms, latency.handling_mean_ms, latency.fold_mean_ms
        );
        println!(
            "reducer memory with a {}-member ring: RSS {:.1} MB, peak {:.1} MB (target RSS <= 50 MB: {})",
            args.latency_members,
            mb(latency.rss),
            mb(latency.hwm),
            pass(mb(latency.rss) <= 50.0)
        );
        let buffer = default_watch_buffer();
        let held = latency.rss_lagging.saturating_sub(latency.rss);
        println!(
            "  with a WatchRing client {buffer} epochs behind (the default watch buffer): RSS {:.1} MB, {:.1} MB more, {:.0} KB per buffered epoch",
            mb(latency.rss_lagging),
            mb(held),
            held as f64 / 1024.0 / buffer as f64
        );
        report["latency_ms"] = json!({"p50": latency.p50_ms.json(), "p99": latency.p99_ms.json(), "max": latency.max_ms});
        report["membership_publish_p50_ms"] = json!(latency.publish_p50_ms);
        report["reducer_handling_mean_ms"] = json!(latency.handling_mean_ms);
        report["reducer_fold_mean_ms"] = json!(latency.fold_mean_ms);
        report["rss_bytes"] = json!(latency.rss);
        report["peak_rss_bytes"] = json!(latency.hwm);
        report["rss_lagging_watcher_bytes"] = json!(latency.rss_lagging);
        report["targets"]["latency_p99_ms"] =
            json!({"max": 5.0, "pass": latency.p99_ms.median <= 5.0});
        report["targets"]["rss_mb"] = json!({"max": 50.0, "pass": mb(latency.rss) <= 50.0});
    }
    if let Some(path) = args.json {
        write_json(std::path::Path::new(&path), &report).unwrap();
        println!("wrote {path}");
    }
}
