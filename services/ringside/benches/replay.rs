//! `just bench replay`: how fast, and in how much memory, `ringside replay` answers on
//! a long history.
//!
//! One ring of `--events` membership events (1,000,000 by default) of a churning ring
//! is stored with its rebalance events, as the reducer stores them (by the reducer
//! user, a batch of membership events then its epochs: a reducer one batch behind),
//! and a snapshot every `--snapshot-every` epochs (100, the reducer's default), on the
//! real nats-server with `nats/local.conf` (fsync before every ack). Then the release
//! binary, as a user doing a post-mortem runs it:
//!
//! - `state --at-seq S` at the end, the middle and near the start, `--runs` times each
//!   (process start, connect, snapshot lookup, fold, print). Target: <= 1 s.
//! - over the whole history, `--heavy-runs` times each: `events --output json`,
//!   `export --format ndjson` (their output counted, not kept), `verify`,
//!   `key-history KEY` over the whole range (the first run building its index, then
//!   from the index, and once with `--no-index`, which must answer the same) and over
//!   10,000 membership events, and
//!   `diff` from epoch 1 to the last. Wall time and peak RSS of the `ringside`
//!   process (`VmHWM`). Targets: peak RSS <= 100 MB each; key-history over the whole
//!   range <= 1 s; verify's rate at least 0.39 of the rate of the fold alone
//!   ([`RingLedger::apply`], in memory, same events, same run).

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
use ringside_testkit::bench::{Measured, ordered_read_rate, run_measured};
use serde_json::json;

struct Args {
    events: usize,
    snapshot_every: u64,
    runs: usize,
    heavy_runs: usize,
    quick: bool,
    json: Option<String>,
}

/// `[--events N] [--snapshot-every N] [--runs N] [--heavy-runs N] [--json PATH]
/// [--quick]`; `--quick` lowers the defaults (50,000 events, 3 runs, 2 heavy runs).
fn parse_args() -> Result<Args, FlagError> {
    let mut flags = Flags::from_args()?;
    let quick = flags.flag("--quick")?;
    let args = Args {
        events: flags.value("--events", if quick { 50_000 } else { 1_000_000 })?,
        snapshot_every: flags.value("--snapshot-every", 100)?,
        runs: flags.value("--runs", if quick { 3 } else { 5 })?,
        heavy_runs: flags.value("--heavy-runs", if quick { 2 } else { 3 })?,
        quick,
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

/// Output kept of a measured command: enough for any JSON report checked here.
const KEEP: usize = 64 << 20;

/// `ringside ARGS` as admin, measured; fails the benchmark if it fails.
fn measured(stack: &Stack, args: &[&str]) -> Measured {
    let run = run_measured(&mut stack.command_as(ServiceUser::Admin, args), KEEP).unwrap();
    assert!(
        run.status.success(),
        "ringside {args:?} failed: {}",
        run.stderr
    );
    run
}

/// One command over the long history: time and peak RSS of its runs.
struct Case {
    name: String,
    note: String,
    time: Summary,
    /// Every run's wall time, in seconds.
    times: Vec<f64>,
    rss: Summary,
    /// The largest peak RSS of any run, in bytes.
    rss_max: f64,
}

impl Case {
    /// Runs `args` `runs` times; `check` reads each run's output and says what it was.
    fn run(
        stack: &Stack,
        name: &str,
        args: &[&str],
        runs: usize,
        check: impl Fn(&Measured) -> String,
    ) -> Self {
        eprintln!("replay bench: {name}...");
        let (mut time, mut rss, mut note) = (Vec::new(), Vec::new(), String::new());
        for _ in 0..runs {
            let run = measured(stack, args);
            note = check(&run);
            time.push(run.took.as_secs_f64());
            rss.push(run.peak_rss as f64);
        }
        let rss_max = rss.iter().copied().fold(0.0, f64::max);
        let runs = "--heavy-runs is at least 1";
        Self {
            name: name.to_string(),
            note,
            time: Summary::of(time.clone()).expect(runs),
            times: time,
            rss: Summary::of(rss).expect(runs),
            rss_max,
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "command": self.name,
            "note": self.note,
            "seconds": self.time.json(),
            "peak_rss_bytes": self.rss.json(),
            "peak_rss_max_bytes": self.rss_max,
        })
    }
}

/// The JSON report a measured command printed.
fn report(run: &Measured) -> serde_json::Value {
    assert!(
        run.stdout_bytes as usize <= KEEP,
        "a report of {} bytes",
        run.stdout_bytes
    );
    serde_json::from_slice(&run.stdout).expect("JSON output")
}

const MB: f64 = 1024.0 * 1024.0;

/// Bytes of the files under `dir`.
fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_size(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
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

    let long = RingName::new("long").unwrap();
    let events = churn(&long, args.events);
    eprintln!(
        "replay bench: storing {} membership events with their rebalance events (snapshot every {} epochs)...",
        args.events, args.snapshot_every
    );
    let started = Instant::now();
    let after = store.write(&events, args.snapshot_every, true).await;
    let store_s = started.elapsed().as_secs_f64();
    let stream = jetstream::new(stack.client.clone())
        .get_stream(subject::STREAM_EVENTS)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .clone();
    let runs = "--runs is at least 1";

    // state --at-seq at three points.
    let points = [
        ("end", after.len() - 1),
        ("middle", after.len() / 2),
        ("early", after.len() / 50),
    ];
    let mut cases = Vec::new();
    let mut worst_median: f64 = 0.0;
    let mut last_epoch = 0;
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
            if name == "end" {
                last_epoch = v["epoch"].as_u64().unwrap();
            }
            times.push(took.as_secs_f64());
        }
        let Summary { min, median } = Summary::of(times).expect(runs);
        worst_median = worst_median.max(median);
        cases.push(json!({"point": name, "sequence": seq, "folded_events": folded, "min_s": min, "median_s": median}));
    }

    // The whole history, as a post-mortem reads it.
    let n = args.heavy_runs;
    let last_seq = stream.last_sequence;
    // Their output is counted, not kept: a streamed JSON array, an export file.
    let [events_json, export] = [
        ("events --output json", "--output", "json"),
        ("export --format ndjson", "--format", "ndjson"),
    ]
    .map(|(name, flag, value)| {
        let command = name.split(' ').next().unwrap_or_default();
        Case::run(
            &stack,
            name,
            &["replay", command, "--ring", "long", flag, value],
            n,
            |run| {
                assert!(run.stdout_bytes > 0, "{name} wrote nothing");
                format!("{:.0} MB of output", run.stdout_bytes as f64 / MB)
            },
        )
    });
    let verify = Case::run(
        &stack,
        "verify",
        &["replay", "verify", "--ring", "long", "--output", "json"],
        n,
        |run| {
            let v = report(run);
            assert_eq!(v["problems"], json!([]), "verify passes");
            assert_eq!(v["epoch"].as_u64(), Some(last_epoch));
            format!(
                "{} membership events, {} rebalance events, {} snapshots",
                v["folded"]["membership"], v["rebalance_events"], v["snapshots"]
            )
        },
    );
    let key = "user:42";
    let key_history = |name: &str, from: u64, to: u64, extra: &[&str], runs: usize| {
        let (from, to) = (from.to_string(), to.to_string());
        let args = [
            &[
                "replay",
                "key-history",
                key,
                "--ring",
                "long",
                "--from",
                &from,
                "--to",
                &to,
                "--output",
                "json",
            ],
            extra,
        ]
        .concat();
        // The last run's answer, to compare.
        let answer = std::cell::RefCell::new(serde_json::Value::Null);
        let case = Case::run(&stack, name, &args, runs, |run| {
            let v = report(run);
            let note = format!(
                "epochs {}..={}, {} owner changes",
                v["initial_epoch"],
                v["final_epoch"],
                v["changes"].as_array().map_or(0, Vec::len)
            );
            answer.replace(v);
            note
        });
        let answer = answer.into_inner();
        (case, answer)
    };
    // The index is kept in the server's temporary directory (see `command_as`): the
    // first key history builds it, the later ones read it.
    let index_dir = stack.server.store_dir().join("replay-index");
    let _ = std::fs::remove_dir_all(&index_dir);
    let (key_build, _) = key_history("key-history, building the index", 1, last_seq, &[], 1);
    let index_bytes = dir_size(&index_dir);
    let (key_whole, indexed) = key_history("key-history, whole range", 1, last_seq, &[], n);
    let (key_plain, plain) = key_history(
        "key-history, whole, --no-index",
        1,
        last_seq,
        &["--no-index"],
        1,
    );
    assert_eq!(indexed, plain, "the index answers as the stored epochs do");
    let window = 10_000.min(after.len() / 2);
    let (window_from, window_to) = (after[after.len() / 2].0, after[after.len() / 2 + window].0);
    let (key_window, _) = key_history(
        &format!("key-history, {window} events"),
        window_from,
        window_to,
        &[],
        n,
    );
    let diff = Case::run(
        &stack,
        "diff, first to last epoch",
        &[
            "replay",
            "diff",
            "--ring",
            "long",
            "--from",
            "1",
            "--to",
            &last_epoch.to_string(),
            "--output",
            "json",
        ],
        n,
        |run| {
            let v = report(run);
            assert_eq!(v["to_epoch"].as_u64(), Some(last_epoch));
            format!(
                "epochs 1 -> {last_epoch}, {} moved ranges",
                v["ranges"].as_array().map_or(0, Vec::len)
            )
        },
    );
    let heavy = [
        &events_json,
        &export,
        &verify,
        &key_build,
        &key_whole,
        &key_plain,
        &key_window,
        &diff,
    ];

    // The floor of anything that reads every stored epoch (key-history over the whole
    // range does): the ring's rebalance events through an ordered consumer and nothing
    // else, in this process.
    let events_stream = jetstream::new(stack.client.clone())
        .get_stream(subject::STREAM_EVENTS)
        .await
        .unwrap();
    let mut read = Vec::new();
    for _ in 0..n {
        let config = jetstream::consumer::pull::OrderedConfig {
            filter_subjects: vec![subject::rebalance(&long)],
            ..Default::default()
        };
        read.push(
            ordered_read_rate(&events_stream, config, last_epoch as usize)
                .await
                .unwrap(),
        );
    }
    let read = Summary::of(read).expect(runs);

    let fold = Summary::of((0..n.max(1)).map(|_| fold_rate(&events, 1)).collect()).expect(runs);
    let verify_rate = Summary::of(
        verify
            .times
            .iter()
            .map(|t| args.events as f64 / t)
            .collect(),
    )
    .expect(runs);
    let ratio = verify_rate.median / fold.median;

    let verdict = ringside_testkit::bench::pass;
    let quick = if args.quick {
        " (--quick: not comparable)"
    } else {
        ""
    };
    println!(
        "replay benchmark{quick}: {} membership events and their rebalance events ({} messages, {:.0} MB stored), snapshot every {} epochs, last epoch {last_epoch}; load at start {}",
        args.events,
        stream.messages,
        stream.bytes as f64 / MB,
        args.snapshot_every,
        load.trim()
    );
    println!(
        "stored in {store_s:.1} s (atomic batches of 1000, fsync per batch, then their epochs as the reducer user; folded here for the snapshots)"
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
        "{:<28} {:>8} {:>9} {:>11} {:>8}  what",
        "whole history", "min s", "median s", "peak RSS MB", "max MB"
    );
    for c in heavy {
        println!(
            "  {:<26} {:>8.2} {:>9.2} {:>11.1} {:>8.1}  {}",
            c.name,
            c.time.min,
            c.time.median,
            c.rss.median / MB,
            c.rss_max / MB,
            c.note
        );
    }
    println!(
        "{:<28} {:>10} {:>10}",
        "rate (membership events/s)", "min", "median"
    );
    println!(
        "  {:<26} {:>10.0} {:>10.0}",
        "replay verify", verify_rate.min, verify_rate.median
    );
    println!(
        "  {:<26} {:>10.0} {:>10.0}",
        "fold alone (RingLedger)", fold.min, fold.median
    );
    println!(
        "  {:<26} {:>10.0} {:>10.0}  (epochs/s: reading every stored epoch takes {:.1} s at the median)",
        "read rebalance events only",
        read.min,
        read.median,
        last_epoch as f64 / read.median
    );
    println!(
        "key index on disk: {:.0} MB ({:.2} of the stream's {:.0} MB)",
        index_bytes as f64 / MB,
        index_bytes as f64 / stream.bytes as f64,
        stream.bytes as f64 / MB
    );
    let worst_rss = heavy.iter().map(|c| c.rss_max).fold(0.0, f64::max);
    println!(
        "target state --at-seq <= 1 s: worst median {worst_median:.3} s {}",
        verdict(worst_median <= 1.0)
    );
    println!(
        "target peak RSS <= 100 MB, every command: largest {:.1} MB {}",
        worst_rss / MB,
        verdict(worst_rss <= 100.0 * MB)
    );
    println!(
        "target key-history over the whole range <= 1 s: median {:.2} s {}",
        key_whole.time.median,
        verdict(key_whole.time.median <= 1.0)
    );
    println!(
        "target verify rate / fold rate >= 0.39: {ratio:.2} {}",
        verdict(ratio >= 0.39)
    );

    let report = json!({
        "benchmark": "replay",
        "quick": args.quick,
        "events": args.events,
        "snapshot_every": args.snapshot_every,
        "runs": args.runs,
        "heavy_runs": args.heavy_runs,
        "load_at_start": load.trim(),
        "stored_messages": stream.messages,
        "stored_bytes": stream.bytes,
        "last_epoch": last_epoch,
        "store_seconds": store_s,
        "state_at_seq": cases,
        "state_target_seconds": 1.0,
        "state_worst_median_seconds": worst_median,
        "whole_history": heavy.iter().map(|c| c.json()).collect::<Vec<_>>(),
        "peak_rss_target_bytes": 100.0 * MB,
        "key_history_target_seconds": 1.0,
        "key_index_bytes": index_bytes,
        "verify_per_s": verify_rate.json(),
        "fold_per_s": fold.json(),
        "rebalance_read_per_s": read.json(),
        "verify_over_fold": ratio,
        "verify_over_fold_target": 0.39,
    });
    if let Some(path) = args.json {
        write_json(path.as_ref(), &report).unwrap();
        eprintln!("wrote {path}");
    }
}
