//! `just bench events`: how fast the event backbone stores and folds, as ratios of the
//! raw async-nats rates measured in the same run on the same server.
//!
//! Figures (min and median of `--rounds` rounds, 3 by default):
//! - `raw_publish`: async-nats JetStream publishes, `WINDOW` acks in flight;
//! - `publisher_batch`: [`Publisher::publish_batch`] (atomic batches of `WINDOW`, acked,
//!   retried, deduplicated): ratio against `raw_publish`;
//! - `raw_ordered_consumer`: reading the stored events back with an ordered consumer;
//! - `fold`: [`RingLedger::apply`] over churn on a 1000-member ring (a leave or a join
//!   per event, each making an epoch and its `RingRebalanced`): ratio against
//!   `raw_ordered_consumer`, i.e. whether the fold keeps up with reading.
//!
//! The server is the real nats-server with `nats/local.conf` (fsync before every ack).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use async_nats::jetstream::{self, consumer};
use futures::{StreamExt, TryStreamExt};
use ringside_events::{
    Body, Definitions, Event, Outcome, Publisher, RingLedger, RingName, ServiceUser, pb, provision,
    subject,
};
use ringside_ring::{RingConfig, Strategy};
use ringside_testkit::NatsServer;
use ringside_testkit::bench::{
    FlagError, Flags, Summary, load_average, ordered_read_rate, per_second, write_json,
};
use serde_json::json;

/// Acks in flight for the raw publisher and events per atomic batch.
const WINDOW: usize = 256;

struct Args {
    rounds: usize,
    messages: usize,
    members: usize,
    fold_events: usize,
    json: Option<String>,
}

/// `[--rounds N] [--messages N] [--members N] [--fold-events N] [--json PATH] [--quick]`;
/// `--quick` lowers the defaults (1 round, 2,000 messages, 50 fold events).
fn parse_args() -> Result<Args, FlagError> {
    let mut flags = Flags::from_args()?;
    let quick = flags.flag("--quick")?;
    let args = Args {
        rounds: flags.value("--rounds", if quick { 1 } else { 3 })?,
        messages: flags.value("--messages", if quick { 2_000 } else { 20_000 })?,
        members: flags.value("--members", 1000)?,
        fold_events: flags.value("--fold-events", if quick { 50 } else { 400 })?,
        json: flags.json_path()?,
    };
    flags.finish()?;
    Ok(args)
}

fn ring() -> RingName {
    RingName::new("bench").unwrap()
}

fn member(i: usize, incarnation: usize) -> pb::Member {
    pb::Member {
        id: format!("node-{i:05}"),
        address: format!("127.0.0.1:{}", 20_000 + i),
        weight: 1,
        uid: Some(format!("uid-{i}-{incarnation}")),
        ..Default::default()
    }
}

fn joined(i: usize, incarnation: usize) -> Body {
    Body::MembersJoined(pb::MembersJoined {
        members: vec![member(i, incarnation)],
        source: pb::MembershipSource::Heartbeat as i32,
        ..Default::default()
    })
}

/// Raw JetStream publishes of pre-encoded events, `WINDOW` acks in flight.
async fn raw_publish(js: &jetstream::Context, events: &[Event]) -> f64 {
    let payloads: Vec<(String, bytes::Bytes)> = events
        .iter()
        .map(|e| (e.subject(), ringside_events::codec::encode(e).unwrap()))
        .collect();
    let start = Instant::now();
    futures::stream::iter(payloads)
        .map(|(subject, payload)| async move {
            js.publish(subject, payload).await?.await.map(|_| ())
        })
        .buffer_unordered(WINDOW)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    per_second(events.len(), start.elapsed())
}

/// Reads `count` messages of the stream from the start with an ordered consumer.
async fn raw_ordered_consumer(js: &jetstream::Context, count: usize) -> f64 {
    let stream = js.get_stream(subject::STREAM_EVENTS).await.unwrap();
    let config = consumer::pull::OrderedConfig {
        deliver_policy: consumer::DeliverPolicy::All,
        ..Default::default()
    };
    ordered_read_rate(&stream, config, count).await.unwrap()
}

/// A ledger with `members` members, then `events` churn events (alternating leaves
/// and re-joins of a new incarnation), timed.
fn fold_rate(members: usize, events: usize) -> f64 {
    let config = RingConfig::new(Strategy::Balanced, 160).unwrap();
    let mut ledger = RingLedger::new(ring(), config);
    let mut seq = 0;
    for i in 0..members {
        seq += 1;
        ledger.apply(seq, &joined(i, 0));
    }
    let churn: Vec<Body> = (0..events)
        .map(|k| {
            let i = (k / 2 * 7919) % members;
            if k % 2 == 0 {
                Body::MemberLeft(pb::MemberLeft {
                    member_id: member(i, 0).id,
                    ..Default::default()
                })
            } else {
                joined(i, k)
            }
        })
        .collect();
    let start = Instant::now();
    for body in &churn {
        seq += 1;
        let outcome = ledger.apply(seq, body);
        assert!(matches!(outcome, Outcome::Rebalanced(_)), "{outcome:?}");
    }
    per_second(events, start.elapsed())
}

#[tokio::main]
async fn main() {
    let args = parse_args().unwrap_or_else(|e| panic!("{e}"));
    let load = load_average();
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    let server = NatsServer::start_local_conf().await.unwrap();
    let admin = ServiceUser::Admin;
    let client = server
        .connect_with(admin.connect_options(server.password(admin.name()).unwrap()))
        .await
        .unwrap();
    let js = jetstream::new(client.clone());
    provision(&js, &Definitions::builtin().unwrap())
        .await
        .unwrap();
    let publisher = Publisher::new(client).with_window(WINDOW);

    let (mut raw, mut batch, mut read, mut fold) = (vec![], vec![], vec![], vec![]);
    for round in 0..args.rounds {
        // Distinct facts per round and per method, so dedup never short-cuts a publish.
        let events = |method: usize| -> Vec<Event> {
            (0..args.messages)
                .map(|i| {
                    let incarnation = (round * 2 + method) * args.messages + i;
                    Event::new(ring(), joined(i % args.members, incarnation)).unwrap()
                })
                .collect()
        };
        raw.push(raw_publish(&js, &events(0)).await);
        let batch_events = events(1);
        let start = Instant::now();
        publisher.publish_batch(&batch_events).await.unwrap();
        batch.push(per_second(args.messages, start.elapsed()));
        read.push(raw_ordered_consumer(&js, args.messages * 2).await);
        fold.push(fold_rate(args.members, args.fold_events));
        eprintln!("round {} of {} done", round + 1, args.rounds);
    }
    let rate = |samples| Summary::of(samples).expect("--rounds is at least 1");
    let (raw, batch, read, fold) = (rate(raw), rate(batch), rate(read), rate(fold));
    println!(
        "events benchmark: {} messages per publish round, fold over a {}-member balanced ring, {} rounds; load at start {load}",
        args.messages, args.members, args.rounds
    );
    println!(
        "{:<22} {:>14} {:>14} {:>22}",
        "FIGURE", "MIN /s", "MEDIAN /s", "RATIO (median)"
    );
    let row = |name: &str, rate: Summary, ratio: Option<(f64, &str)>| {
        let ratio = ratio.map_or_else(String::new, |(r, of)| format!("{r:.3} x {of}"));
        println!(
            "{name:<22} {:>14.0} {:>14.0} {ratio:>22}",
            rate.min, rate.median
        );
    };
    row("raw_publish", raw, None);
    row(
        "publisher_batch",
        batch,
        Some((batch.median / raw.median, "raw_publish")),
    );
    row("raw_ordered_consumer", read, None);
    row(
        "fold",
        fold,
        Some((fold.median / read.median, "raw_ordered")),
    );
    let report = json!({
        "load_at_start": load,
        "messages": args.messages,
        "members": args.members,
        "rounds": args.rounds,
        "window": WINDOW,
        "raw_publish_per_s": raw.json(),
        "publisher_batch_per_s": batch.json(),
        "raw_ordered_consumer_per_s": read.json(),
        "fold_per_s": fold.json(),
        "publisher_over_raw": batch.median / raw.median,
        "fold_over_ordered_consumer": fold.median / read.median,
    });
    if let Some(path) = args.json {
        write_json(path.as_ref(), &report).unwrap();
        println!("wrote {path}");
    }
}
