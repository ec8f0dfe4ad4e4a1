//! `just bench replay`: how fast `ringside replay` answers on a long stream.
//!
//! - `state_at_seq`: wall time of the release binary `ringside replay state --at-seq S`
//!   (process start, connect, snapshot lookup, fold, print) on a ring of `--events`
//!   membership events (1,000,000 by default) with a snapshot every `--snapshot-every`
//!   epochs (100, the reducer's default), at several points of the stream. Target:
//!   <= 1 s.
//! - `verify_rate`: membership events per second of `ringside replay verify` on a ring
//!   of `--verify-events` events stored with their rebalance events and snapshots, as
//!   a ratio of the rate of the fold alone ([`RingLedger::apply`], in memory, same
//!   events, same run).
//!
//! The 1M ring is stored as membership events and snapshots only (no rebalance
//! events: `state` reads none, and a million of them would be gigabytes); the events
//! are published in atomic batches of 1000 and folded here to write the snapshots.
//! The server is the real nats-server with `nats/local.conf` (fsync before every ack).

#![allow(clippy::unwrap_used, clippy::expect_used)]

// The end-to-end tests' stack (server, provisioning, the binary as admin).
#[path = "../tests/replay_support/mod.rs"]
mod replay_support;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use replay_support::{Stack, hex, ok_json};
use ringside_events::{
    Body, Event, Outcome, Publisher, RingLedger, RingName, ServiceUser, codec, pb, subject,
};
use ringside_ring::RingConfig;
use ringside_testkit::bench::{FlagError, Flags, Summary, per_second, write_json};
use serde_json::json;

struct Args {
    events: usize,
    verify_events: usize,
    snapshot_every: u64,
    runs: usize,
    json: Option<String>,
}

/// `[--events N] [--verify-events N] [--snapshot-every N] [--runs N] [--json PATH]
/// [--quick]`; `--quick` lowers the defaults (50,000 events, 5,000 verify events, 3 runs).
fn parse_args() -> Result<Args, FlagError> {
    let mut flags = Flags::from_args()?;
    let quick = flags.flag("--quick")?;
    let args = Args {
        events: flags.value("--events", if quick { 50_000 } else { 1_000_000 })?,
        verify_events: flags.value("--verify-events", if quick { 5_000 } else { 20_000 })?,
        snapshot_every: flags.value("--snapshot-every", 100)?,
        runs: flags.value("--runs", if quick { 3 } else { 5 })?,
        json: flags.json_path()?,
    };
    flags.finish()?;
    Ok(args)
}

/// A churn over 48 member ids (a ring of about 24 members, 160 vnodes each): joins
/// in a fresh incarnation, leaves, and now and then a full sync. Every event is a
/// distinct fact (JetStream drops repeats within its duplicate window).
fn churn(ring: &RingName, n: usize) -> Vec<Event> {
    let mut x: u64 = 0xbe7c4;
    (0..n)
        .map(|i| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let id = (x >> 33) % 48;
            let member = |id: u64| pb::Member {
                id: format!("node-{id:02}"),
                address: format!("127.0.0.1:{}", 20_000 + id),
                weight: 1,
                uid: Some(format!("uid-{id}-{i}")),
                ..Default::default()
            };
            let body: Body = match i % 100 {
                99 => pb::MembershipSynced {
                    members: (0..48)
                        .filter(|j| (x >> (j % 32)) & 1 == 1)
                        .map(member)
                        .collect(),
                    resource_version: i.to_string(),
                    ..Default::default()
                }
                .into(),
                r if r % 2 == 0 => pb::MembersJoined {
                    members: vec![member(id)],
                    ..Default::default()
                }
                .into(),
                _ => pb::MemberLeft {
                    member_id: format!("node-{id:02}"),
                    detail: format!("step {i}"),
                    ..Default::default()
                }
                .into(),
            };
            Event::new(ring.clone(), body).unwrap()
        })
        .collect()
}

struct Store {
    /// Membership events, as admin.
    publisher: Publisher,
    /// Rebalance events, as the reducer user (the only one allowed to store them).
    rebalances: Publisher,
    /// The snapshot bucket, as the reducer user (the only one allowed to write it).
    kv: jetstream::kv::Store,
}

impl Store {
    /// Stores `events` in atomic batches, folding them; a snapshot every
    /// `snapshot_every` epochs; with `rebalance`, each batch's rebalance events too.
    /// Returns (membership sequence, checksum) after each event.
    async fn write(
        &self,
        events: &[Event],
        snapshot_every: u64,
        rebalance: bool,
    ) -> Vec<(u64, u64)> {
        let ring = events[0].ring().clone();
        let mut ledger = RingLedger::new(ring.clone(), RingConfig::default());
        let mut after = Vec::with_capacity(events.len());
        let started = Instant::now();
        for (n, chunk) in events.chunks(1000).enumerate() {
            let stored = self.publisher.publish_batch(chunk).await.unwrap();
            assert_eq!(stored.stored as usize, chunk.len(), "every event is new");
            let first = stored.last_sequence + 1 - chunk.len() as u64;
            let mut made = Vec::new();
            let mut snapshot_at = Vec::new();
            for (seq, event) in (first..).zip(chunk) {
                if let Outcome::Rebalanced(r) = ledger.apply(seq, event.body()) {
                    made.push(Event::new(ring.clone(), *r).unwrap());
                    if ledger.epoch().is_multiple_of(snapshot_every) {
                        snapshot_at.push(ledger.snapshot().unwrap());
                    }
                }
                after.push((seq, ledger.checksum()));
            }
            if rebalance && !made.is_empty() {
                let stored = self.rebalances.publish_batch(&made).await.unwrap();
                // This layout (a batch of membership, then its epochs) is a reducer
                // running behind by one batch; snapshots say where their epochs are.
                let first = stored.last_sequence + 1 - made.len() as u64;
                for s in &mut snapshot_at {
                    let index = made
                        .iter()
                        .position(
                            |e| matches!(e.body(), Body::RingRebalanced(r) if r.epoch == s.epoch),
                        )
                        .unwrap();
                    s.rebalance_sequence = first + index as u64;
                }
            }
            for s in snapshot_at {
                let key = subject::snapshot_key(&ring, s.epoch);
                self.kv
                    .put(key, codec::encode_snapshot(&s).unwrap())
                    .await
                    .unwrap();
            }
            if n % 100 == 99 {
                eprintln!(
                    "  {} events stored, epoch {}, {:.0} s",
                    (n + 1) * 1000,
                    ledger.epoch(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        after
    }
}

/// `ringside ARGS --output json` as admin: how long it took and its JSON.
fn ringside(stack: &Stack, args: &[&str]) -> (Duration, serde_json::Value) {
    let started = Instant::now();
    let out = stack.ringside(&[args, &["--output", "json"]].concat());
    let took = started.elapsed();
    (took, ok_json(&out))
}

fn fold_rate(events: &[Event], first_seq: u64) -> f64 {
    let mut ledger = RingLedger::new(events[0].ring().clone(), RingConfig::default());
    let started = Instant::now();
    for (seq, e) in (first_seq..).zip(events) {
        std::hint::black_box(ledger.apply(seq, e.body()));
    }
    per_second(events.len(), started.elapsed())
}

#[tokio::main]
async fn main() {
    let args = parse_args().unwrap_or_else(|e| panic!("{e}"));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let stack = Stack::start().await;
    let reducer = stack.server.connect_as(ServiceUser::Reducer).await.unwrap();
    let store = Store {
        publisher: Publisher::new(stack.client.clone()).with_window(1000),
        rebalances: Publisher::new(reducer.clone()).with_window(1000),
        kv: jetstream::new(reducer)
            .get_key_value(subject::KV_SNAPSHOTS)
            .await
            .unwrap(),
    };

    // Verify rate against the fold alone, on a ring stored as the reducer stores it.
    let verify_ring = RingName::new("verify").unwrap();
    let verify_events = churn(&verify_ring, args.verify_events);
    eprintln!(
        "replay bench: storing {} events with their rebalance events...",
        args.verify_events
    );
    store.write(&verify_events, args.snapshot_every, true).await;
    let (mut verify, mut fold) = (Vec::new(), Vec::new());
    for _ in 0..args.runs.min(3) {
        let (took, v) = ringside(&stack, &["replay", "verify", "--ring", "verify"]);
        assert_eq!(v["problems"], json!([]), "verify passes");
        verify.push(args.verify_events as f64 / took.as_secs_f64());
        fold.push(fold_rate(&verify_events, 1));
    }
    let runs = "--runs is at least 1";
    let verify = Summary::of(verify).expect(runs);
    let fold = Summary::of(fold).expect(runs);

    // state --at-seq on the long ring.
    let long = RingName::new("long").unwrap();
    eprintln!(
        "replay bench: storing {} membership events (snapshot every {} epochs)...",
        args.events, args.snapshot_every
    );
    let started = Instant::now();
    let after = store
        .write(&churn(&long, args.events), args.snapshot_every, false)
        .await;
    let store_s = started.elapsed().as_secs_f64();
    let points = [
        ("end", after.len() - 1),
        ("middle", after.len() / 2),
        ("early", after.len() / 50),
    ];
    let mut cases = Vec::new();
    let mut worst_median: f64 = 0.0;
    for (name, index) in points {
        let (seq, checksum) = after[index];
        let mut times = Vec::new();
        let mut folded = 0;
        for _ in 0..args.runs {
            let (took, v) = ringside(
                &stack,
                &[
                    "replay",
                    "state",
                    "--ring",
                    "long",
                    "--at-seq",
                    &seq.to_string(),
                ],
            );
            assert_eq!(v["checksum"], hex(checksum), "state at {seq} is the fold's");
            folded = v["folded"]["membership"].as_u64().unwrap();
            times.push(took.as_secs_f64());
        }
        let Summary { min, median } = Summary::of(times).expect(runs);
        worst_median = worst_median.max(median);
        cases.push(json!({"point": name, "sequence": seq, "folded_events": folded, "min_s": min, "median_s": median}));
    }

    let ratio = verify.median / fold.median;
    println!(
        "replay benchmark: {} membership events, snapshot every {} epochs; load at start {}",
        args.events,
        args.snapshot_every,
        load.trim()
    );
    println!(
        "stored in {store_s:.1} s (atomic batches of 1000, fsync per batch, folded here for the snapshots)"
    );
    println!(
        "{:<28} {:>10} {:>10} {:>14}",
        "replay state --at-seq", "min s", "median s", "events folded"
    );
    for c in &cases {
        println!(
            "  at {:<8} (seq {:>8}) {:>10.3} {:>10.3} {:>14}",
            c["point"].as_str().unwrap(),
            c["sequence"],
            c["min_s"].as_f64().unwrap(),
            c["median_s"].as_f64().unwrap(),
            c["folded_events"]
        );
    }
    println!(
        "{:<28} {:>10} {:>10}",
        "rate (membership events/s)", "min", "median"
    );
    println!(
        "  {:<26} {:>10.0} {:>10.0}",
        "replay verify", verify.min, verify.median
    );
    println!(
        "  {:<26} {:>10.0} {:>10.0}",
        "fold alone (RingLedger)", fold.min, fold.median
    );
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!(
        "target state --at-seq <= 1 s: worst median {worst_median:.3} s {}",
        verdict(worst_median <= 1.0)
    );
    println!(
        "verify rate / fold rate: {ratio:.2} (informational: verify also decodes, reads and rebuilds each epoch from its event)"
    );
    // Without snapshots, a point folds from the first event: what that costs here.
    println!(
        "without a snapshot at or before the point, state folds from the first event: about {:.1} s for {} events at the fold rate",
        args.events as f64 / fold.median,
        args.events
    );

    let report = json!({
        "benchmark": "replay",
        "events": args.events,
        "snapshot_every": args.snapshot_every,
        "runs": args.runs,
        "load_at_start": load.trim(),
        "store_seconds": store_s,
        "state_at_seq": cases,
        "state_target_seconds": 1.0,
        "state_worst_median_seconds": worst_median,
        "verify_events": args.verify_events,
        "verify_per_s": verify.json(),
        "fold_per_s": fold.json(),
        "verify_over_fold": ratio,
    });
    if let Some(path) = args.json {
        write_json(path.as_ref(), &report).unwrap();
        eprintln!("wrote {path}");
    }
}
