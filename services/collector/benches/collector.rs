//! `just bench collector`: what the collector costs, run in this process against a
//! real nats-server (testkit) with the reducer folding a ring of
//! `--nodes` members (1,000 by default), each a node that reports its load.
//!
//! The server runs with JetStream's defaults (no accounts, fsync every two minutes;
//! `nats/local.conf`'s 8 MB payload limit),
//! so that the collector is measured and not the disk: with `nats/local.conf`
//! (`--local-conf`: per-service users, fsync before every ack) this machine's disk
//! stores about 4,000 reports/s, which is then what the publish, the raw consumer and
//! the collector all reach.
//!
//! Figures:
//! - `ingest`: load reports per second the collector takes in, end to end: `--reports`
//!   reports per node (20 by default, 20,000 in all, each with a client-IP sketch as
//!   the nodes send) are published on `ringside.<ring>.load.<node>` (each acked, 256 in
//!   flight) while the collector runs; timed from the first publish to its
//!   `/metrics` counting every one accepted (polled every 50 ms). Reference: a raw
//!   ordered consumer of the same subjects, started before the publish, reading the
//!   same messages and nothing else. Target: >= 10,000 reports/s (median); the ratio
//!   to the raw consumer is reported.
//! - `scrape`: the time of `GET /metrics` with every node reporting (`--scrapes` per
//!   round, one keep-alive connection). Reference: a plain `prometheus` crate registry
//!   holding the same series (the same names, labels and values, read off the
//!   collector's page) rendered by its text encoder behind a bare axum handler.
//!   Target: p50 < 50 ms (median over the rounds).
//! - `series`: every per-node series counts `--nodes` nodes and no OpenTelemetry
//!   overflow series (`otel_metric_overflow`) appears: the SDK's cardinality limit
//!   (2,000 per instrument by default) is not reached.
//!
//! Usage: `collector [--nodes N] [--reports N] [--rounds N] [--scrapes N]
//! [--local-conf] [--json PATH] [--quick]`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, consumer};
use axum::Router;
use axum::routing::get;
use futures::StreamExt;
use ringside_collector::metrics as m;
use ringside_events::sketch::Sketch;
use ringside_events::{Event, Publisher, RingName, ServiceUser, pb, subject};
use ringside_kit::InProcess;
use ringside_kit::settings::{RING, on_nats};
use ringside_kit::telemetry::sample;
use ringside_testkit::NatsServer;
use ringside_testkit::bench::{
    Flags, Summary, load_average, ordered_from, pass, per_second, write_json,
};
use serde_json::json;

/// Load reports published at once (acks awaited), as many nodes reporting together.
const IN_FLIGHT: usize = 256;

struct Args {
    nodes: usize,
    reports: usize,
    rounds: usize,
    scrapes: usize,
    json: Option<String>,
    quick: bool,
    /// Run nats-server with `nats/local.conf` (accounts, fsync before every ack).
    local_conf: bool,
}

fn parse_args() -> Args {
    Flags::read_or_exit(|flags| {
        let quick = flags.flag("--quick")?;
        Ok(Args {
            nodes: flags.value("--nodes", 1000)?,
            reports: flags.value("--reports", if quick { 5 } else { 20 })?,
            rounds: flags.value("--rounds", if quick { 1 } else { 5 })?,
            scrapes: flags.value("--scrapes", if quick { 5 } else { 20 })?,
            json: flags.json_path()?,
            quick,
            local_conf: flags.flag("--local-conf")?,
        })
    })
}

fn node_id(i: usize) -> String {
    format!("node-{i:04}")
}

/// The load reports of round `round`: `per_node` for each of `nodes` nodes, each with
/// a sketch of the node's 20 client addresses, as a node sends them.
fn reports(round: usize, nodes: usize, per_node: usize, ring: &RingName) -> Vec<Event> {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut events = Vec::with_capacity(nodes * per_node);
    for k in 0..per_node {
        for i in 0..nodes {
            let mut sketch = Sketch::default();
            for c in 0..20u32 {
                sketch.add(std::net::Ipv4Addr::from(0x0a00_0000 + (i as u32) * 7 + c).into());
            }
            let window = (round * per_node + k) as u64;
            let body = pb::NodeLoadReported {
                node: node_id(i),
                window_start: Some(ringside_events::event::timestamp(
                    start + Duration::from_secs(2 * window),
                )),
                window: Some(pbjson_types::Duration {
                    seconds: 2,
                    nanos: 0,
                }),
                requests: 100 + window,
                forwarded: 10,
                unique_client_ips_last_minute: 20,
                cpu_ratio: 0.25,
                keys_held: 1000,
                epoch: 1,
                bytes_held: 1 << 20,
                client_ip_sketch: sketch.to_bytes(),
                ..Default::default()
            };
            events.push(Event::new(ring.clone(), body).unwrap());
        }
    }
    events
}

/// The collector's count of accepted load reports.
async fn accepted(addr: SocketAddr) -> f64 {
    let page = ringside_testkit::http::get(addr, "/metrics")
        .await
        .expect("/metrics")
        .1;
    sample(
        &page,
        &format!("{}{{outcome=\"accepted\"}}", m::LOAD_REPORTS.name),
    )
    .unwrap_or(0.0)
}

struct Ingest {
    publish: f64,
    raw: f64,
    collector: f64,
}

/// Publishes `events` while a raw ordered consumer and the collector read them: the
/// rate of each, from the first publish to its last message.
async fn ingest(
    admin: &async_nats::Client,
    ring: &RingName,
    collector: SocketAddr,
    events: &[Event],
) -> Ingest {
    let mut raw = ordered_from(
        &jetstream::new(admin.clone()),
        subject::STREAM_LOAD,
        vec![subject::load_any(ring)],
        consumer::DeliverPolicy::New,
    )
    .await
    .unwrap()
    .take(events.len());
    let before = accepted(collector).await;
    let count = events.len();
    let publisher = Publisher::new(admin.clone());
    let start = Instant::now();
    let reader = tokio::spawn(async move {
        while let Some(message) = raw.next().await {
            std::hint::black_box(message.expect("a load report").payload.len());
        }
        start.elapsed()
    });
    // As the nodes publish them: one acked publish per report, many nodes at once.
    futures::stream::iter(events)
        .map(|event| publisher.publish(event))
        .buffer_unordered(IN_FLIGHT)
        .for_each(|stored| async move {
            assert!(
                !stored.expect("a load report stored").duplicate,
                "every report is a new fact"
            );
        })
        .await;
    let published = start.elapsed();
    while accepted(collector).await < before + count as f64 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the collector did not take every report"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let taken = start.elapsed();
    let read = reader.await.unwrap();
    Ingest {
        publish: per_second(count, published),
        raw: per_second(count, read),
        collector: per_second(count, taken),
    }
}

/// Times `scrapes` GETs of `path` on one keep-alive connection: each in ms, and the
/// page's size.
async fn scrape_times(addr: SocketAddr, path: &str, scrapes: usize) -> (Vec<f64>, usize) {
    let mut connection = ringside_testkit::http::Connection::open(addr)
        .await
        .unwrap();
    let mut times = Vec::with_capacity(scrapes);
    let mut size = 0;
    for _ in 0..scrapes {
        let start = Instant::now();
        let (status, length) = connection.send("GET", path, &[]).await.unwrap();
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 200);
        size = length;
    }
    (times, size)
}

/// One sample of a page: name, labels and value.
type Sample = (String, Vec<(String, String)>, f64);

/// A sample line `name{a="x",b="y"} value`.
fn parse_sample(line: &str) -> Option<Sample> {
    let (head, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let Some((name, labels)) = head.split_once('{') else {
        return Some((head.to_owned(), Vec::new(), value));
    };
    let labels = labels
        .trim_end_matches('}')
        .split("\",")
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.to_owned(), v.trim_matches('"').to_owned()))
        })
        .collect();
    Some((name.to_owned(), labels, value))
}

/// A plain `prometheus` registry with the series of `page` (a gauge family for each
/// name): the reference page.
fn reference_registry(page: &str) -> (prometheus::Registry, usize) {
    let registry = prometheus::Registry::new();
    let mut families: BTreeMap<String, prometheus::GaugeVec> = BTreeMap::new();
    let mut series = 0;
    for (name, labels, value) in page
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_sample)
    {
        let family = families.entry(name.clone()).or_insert_with(|| {
            let names: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
            let vec = prometheus::GaugeVec::new(
                prometheus::Opts::new(name.as_str(), "reference"),
                &names,
            )
            .unwrap();
            registry.register(Box::new(vec.clone())).unwrap();
            vec
        });
        let values: Vec<&str> = labels.iter().map(|(_, v)| v.as_str()).collect();
        family.with_label_values(&values).set(value);
        series += 1;
    }
    (registry, series)
}

/// Serves `registry` rendered by the text encoder at each `GET /metrics`.
async fn serve_reference(registry: prometheus::Registry) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                prometheus::TextEncoder::new()
                    .encode_to_string(&registry.gather())
                    .expect("the registry renders")
            }
        }),
    );
    tokio::spawn(async move {
        axum::serve(listener, app)
            .await
            .expect("the reference serves")
    });
    addr
}

/// Of the families with a `node` label: each one's number of distinct nodes; and
/// whether an overflow series appears anywhere.
fn series_per_node_family(page: &str) -> (BTreeMap<String, usize>, bool) {
    let mut nodes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, labels, _) in page
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_sample)
    {
        if let Some((_, node)) = labels.iter().find(|(k, _)| k == "node") {
            nodes.entry(name).or_default().insert(node.clone());
        }
    }
    let counts = nodes.into_iter().map(|(k, v)| (k, v.len())).collect();
    (counts, page.contains("otel_metric_overflow"))
}

#[tokio::main]
async fn main() {
    use ringside_collector::config as collector;
    use ringside_reducer::config as reducer;
    let args = parse_args();
    let load = load_average();
    let defaults = tempfile::tempdir().unwrap();
    let nats = if args.local_conf {
        NatsServer::start_local_conf().await
    } else {
        // JetStream's defaults, with local.conf's payload limit (the first rebalance
        // of a 1,000-member ring is about 5 MB).
        let config = defaults.path().join("defaults.conf");
        std::fs::write(
            &config,
            "max_payload: 8MB\njetstream { store_dir: $RINGSIDE_NATS_STORE_DIR }\n",
        )
        .unwrap();
        NatsServer::start_with_config(ringside_testkit::ServerOptions {
            config_file: Some(config),
            ..Default::default()
        })
        .await
    }
    .expect("nats-server");
    let admin = nats.connect_provisioned().await.expect("provisioning");
    let ring = RingName::new(RING.default_value().expect("a default ring")).unwrap();
    let settings = |user: ServiceUser, pairs: &[(&str, &str)]| {
        on_nats(
            &nats.url(),
            &ring,
            user,
            nats.password(user.name()).ok(),
            pairs,
        )
    };
    // The ring of every node at once: one sync, one epoch.
    let sync = pb::MembershipSynced {
        members: (0..args.nodes)
            .map(|i| pb::Member {
                id: node_id(i),
                address: format!("127.0.{}.{}:7000", i / 250, i % 250 + 1),
                weight: 1,
                ..Default::default()
            })
            .collect(),
        resource_version: "0".into(),
        ..Default::default()
    };
    Publisher::new(admin.clone())
        .publish(&Event::new(ring.clone(), sync).unwrap())
        .await
        .unwrap();
    let reducer = InProcess::start::<ringside_reducer::Reducer>(&settings(
        ServiceUser::Reducer,
        &reducer::FREE_LOOPBACK_PORTS,
    ))
    .await
    .expect("the reducer starts");
    let collector = InProcess::start::<ringside_collector::CollectorService>(&settings(
        ServiceUser::Collector,
        &[(collector::METRICS_ADDR.key, "127.0.0.1:0")],
    ))
    .await
    .expect("the collector starts");
    let metrics = collector.addr("metrics").expect("the collector's listener");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(
        ringside_testkit::http::get(metrics, "/readyz").await,
        Some((200, _))
    ) {
        assert!(Instant::now() < deadline, "the collector is not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (mut publish, mut raw, mut taken) = (vec![], vec![], vec![]);
    let (mut scrape_p50, mut reference_p50, mut scrape_max) = (vec![], vec![], vec![]);
    let mut page_bytes = 0;
    let mut series = 0;
    let mut per_node = BTreeMap::new();
    let mut overflow = false;
    for round in 0..args.rounds {
        let events = reports(round, args.nodes, args.reports, &ring);
        let run = ingest(&admin, &ring, metrics, &events).await;
        publish.push(run.publish);
        raw.push(run.raw);
        taken.push(run.collector);

        let page = ringside_testkit::http::get(metrics, "/metrics")
            .await
            .expect("/metrics")
            .1;
        (per_node, overflow) = series_per_node_family(&page);
        let (registry, count) = reference_registry(&page);
        series = count;
        let reference = serve_reference(registry).await;
        let (mut times, size) = scrape_times(metrics, "/metrics", args.scrapes).await;
        let (mut reference_times, _) = scrape_times(reference, "/metrics", args.scrapes).await;
        page_bytes = size;
        times.sort_by(f64::total_cmp);
        reference_times.sort_by(f64::total_cmp);
        let median = |v: &[f64]| v[v.len() / 2];
        scrape_p50.push(median(&times));
        scrape_max.push(times[times.len() - 1]);
        reference_p50.push(median(&reference_times));
        eprintln!(
            "round {}: publish {:.0}/s, raw consumer {:.0}/s, collector {:.0}/s; scrape {:.2} ms (reference {:.2} ms)",
            round + 1,
            run.publish,
            run.raw,
            run.collector,
            median(&times),
            median(&reference_times)
        );
    }
    collector.stop().await.expect("the collector stops cleanly");
    reducer.stop().await.expect("the reducer stops cleanly");

    let s = |v: Vec<f64>| Summary::of(v).expect("at least one round");
    let (publish, raw, taken) = (s(publish), s(raw), s(taken));
    let (scrape, reference, scrape_max) = (s(scrape_p50), s(reference_p50), s(scrape_max));
    println!(
        "collector benchmark{}: {} nodes reporting, {} reports each per round, {} rounds, {} scrapes per round, nats-server {}; load at start {load}",
        if args.quick {
            " (--quick: figures not comparable)"
        } else {
            ""
        },
        args.nodes,
        args.reports,
        args.rounds,
        args.scrapes,
        if args.local_conf {
            "with nats/local.conf (fsync before every ack)"
        } else {
            "with JetStream's defaults"
        }
    );
    println!("{:<40} {:>12} {:>12}", "FIGURE", "MIN", "MEDIAN");
    for (name, v, digits) in [
        ("publish (acked, 256 in flight) /s", publish, 0),
        ("raw ordered consumer /s", raw, 0),
        ("collector ingest /s", taken, 0),
        ("collector scrape p50 ms", scrape, 2),
        ("collector scrape max ms", scrape_max, 2),
        ("reference registry scrape p50 ms", reference, 2),
    ] {
        println!("{name:<40} {:>12.digits$} {:>12.digits$}", v.min, v.median);
    }
    let ingest_ok = taken.median >= 10_000.0;
    let scrape_ok = scrape.median < 50.0;
    let smallest = per_node.values().copied().min().unwrap_or(0);
    let complete = smallest == args.nodes && !overflow;
    println!(
        "ingest {:.0}/s (target >= 10,000/s: {}), {:.3} of the raw consumer; scrape of {} series ({:.0} KB) {:.2} ms (target < 50 ms: {}), {:.1}x the reference",
        taken.median,
        pass(ingest_ok),
        taken.median / raw.median,
        series,
        page_bytes as f64 / 1024.0,
        scrape.median,
        pass(scrape_ok),
        scrape.median / reference.median
    );
    println!(
        "series: {} per-node families, each with {} nodes (of {}); overflow series: {} ({})",
        per_node.len(),
        smallest,
        args.nodes,
        if overflow { "yes" } else { "none" },
        if complete { "all present" } else { "MISSING" }
    );
    let report = json!({
        "quick": args.quick,
        "load_at_start": load,
        "nodes": args.nodes,
        "reports_per_node": args.reports,
        "local_conf": args.local_conf,
        "rounds": args.rounds,
        "scrapes": args.scrapes,
        "publish_per_s": publish.json(),
        "raw_ordered_consumer_per_s": raw.json(),
        "collector_ingest_per_s": taken.json(),
        "ingest_over_raw": taken.median / raw.median,
        "scrape_p50_ms": scrape.json(),
        "scrape_max_ms": scrape_max.json(),
        "reference_scrape_p50_ms": reference.json(),
        "scrape_over_reference": scrape.median / reference.median,
        "series": series,
        "page_bytes": page_bytes,
        "per_node_families": per_node,
        "overflow": overflow,
        "targets": {
            "ingest_per_s": {"min": 10_000, "pass": ingest_ok},
            "scrape_ms": {"max": 50, "pass": scrape_ok},
            "every_node_series": {"pass": complete},
        },
    });
    if let Some(path) = args.json {
        write_json(std::path::Path::new(&path), &report).unwrap();
        println!("wrote {path}");
    }
}
