//! The collector's metrics, each described once ([`ALL`], which docs/metrics.md lists
//! and a test keeps equal to the page). Every one is read from the [`State`] when the
//! page is scraped, so a scrape costs one pass over the live nodes.
//!
//! Per-node series carry `node`, `pod` and `namespace` labels: in Kubernetes the pod
//! and namespace are the node pod's (prometheus-adapter maps them to the pod resource,
//! which is how the HPA reads a per-pod metric); locally the pod is the node id and the
//! namespace `local`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use opentelemetry::KeyValue;
use ringside_kit::{Metric, Telemetry};

use crate::state::{Reported, State};

/// Distinct client IPs of a node in the last minute.
pub const NODE_UNIQUE_CLIENT_IPS: Metric = Metric::gauge(
    "ringside_collector_node_unique_client_ips",
    "Distinct client IPs a node saw in the last minute (its last report).",
);
/// Distinct client IPs of the whole ring in the last minute.
pub const RING_UNIQUE_CLIENT_IPS: Metric = Metric::gauge(
    "ringside_collector_ring_unique_client_ips",
    "Distinct client IPs of the whole ring in the last minute: the union of the nodes' sketches (about 1.6 % error).",
);
/// A node's CPU.
pub const NODE_CPU: Metric = Metric::gauge(
    "ringside_collector_node_cpu_ratio",
    "CPU a node used over its last report window, in cores.",
);
/// Whether a node's CPU is over the threshold.
pub const NODE_CPU_OVER: Metric = Metric::gauge(
    "ringside_collector_node_cpu_over_threshold",
    "1 while a node's CPU is over the threshold (RINGSIDE_COLLECTOR_CPU_THRESHOLD, 0.8 cores by default), else 0.",
);
/// A node's request rate.
pub const NODE_REQUESTS: Metric = Metric::gauge(
    "ringside_collector_node_requests_per_second",
    "Key requests a node received per second over its last report window.",
);
/// Keys a node holds.
pub const NODE_KEYS: Metric = Metric::gauge(
    "ringside_collector_node_keys",
    "Keys a node holds (owner or replica).",
);
/// Bytes a node holds.
pub const NODE_BYTES: Metric = Metric::gauge(
    "ringside_collector_node_bytes",
    "Bytes of keys and values a node holds.",
);
/// A member's share of the ring.
pub const NODE_SHARE: Metric = Metric::gauge(
    "ringside_collector_node_share",
    "Fraction of the key space a member owns.",
);
/// The ring's imbalance.
pub const RING_IMBALANCE: Metric = Metric::gauge(
    "ringside_collector_ring_imbalance",
    "Peak over mean share of the ring per unit of weight (1 is perfectly even).",
);
/// The ring's members.
pub const RING_MEMBERS: Metric =
    Metric::gauge("ringside_collector_ring_members", "Members of the ring.");
/// The ring's epoch.
pub const RING_EPOCH: Metric = Metric::gauge(
    "ringside_collector_ring_epoch",
    "The ring's epoch, as the collector follows it.",
);
/// Nodes reporting.
pub const NODES_REPORTING: Metric = Metric::gauge(
    "ringside_collector_nodes_reporting",
    "Nodes whose last report is fresher than RINGSIDE_COLLECTOR_STALE_AFTER.",
);
/// Rebalances.
pub const REBALANCES: Metric = Metric::counter(
    "ringside_collector_rebalances_total",
    "Rebalance events the collector followed.",
);
/// The last rebalance's moved fraction.
pub const LAST_MOVED: Metric = Metric::gauge(
    "ringside_collector_last_moved_fraction",
    "Fraction of the key space the last rebalance moved.",
);
/// The last rebalance's moved over ideal.
pub const LAST_MOVED_OVER_IDEAL: Metric = Metric::gauge(
    "ringside_collector_last_moved_over_ideal",
    "The last rebalance's moved fraction over the ideal k/n.",
);
/// Keys handed off.
pub const KEYS_HANDED_OFF: Metric = Metric::counter(
    "ringside_collector_keys_handed_off_total",
    "Keys the nodes reported handed off to a new owner (KeysHandedOff events).",
);
/// Scale decisions.
pub const SCALE_DECISIONS: Metric = Metric::counter(
    "ringside_collector_scale_decisions_total",
    "Scale decisions stored (ScaleDecided events).",
);
/// The last scale decision's replicas.
pub const SCALE_DESIRED: Metric = Metric::gauge(
    "ringside_collector_scale_desired_replicas",
    "Replicas the last scale decision asked for.",
);
/// How long handoffs took.
pub const HANDOFF_SECONDS: Metric = Metric::histogram(
    "ringside_collector_handoff_seconds",
    "Time of each handoff the nodes reported, from the rebalance being seen to the last key acknowledged.",
);
/// Bucket bounds of [`HANDOFF_SECONDS`], in seconds: a local handoff of a few
/// thousand keys takes milliseconds, a node leaving with a large store seconds; the
/// node gives a handoff at most 30 s.
pub const HANDOFF_BOUNDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Load reports.
pub const LOAD_REPORTS: Metric = Metric::counter(
    "ringside_collector_load_reports_total",
    "Messages on the load subjects, by outcome (accepted, refused: not a node's load report).",
);
/// The lag of the newest event.
pub const EVENT_LAG: Metric = Metric::gauge(
    "ringside_collector_event_lag_seconds",
    "Seconds from the newest event the collector has seen being stored to now.",
);
/// Whether the collector is ready (made by the service kit).
pub const READY: Metric = Metric::gauge(
    "ringside_collector_ready",
    "1 while the service is ready (/readyz answers 200), else 0.",
);

/// Every metric of the collector, in the order docs/metrics.md lists them.
pub const ALL: [&Metric; 22] = [
    &NODE_UNIQUE_CLIENT_IPS,
    &RING_UNIQUE_CLIENT_IPS,
    &NODE_CPU,
    &NODE_CPU_OVER,
    &NODE_REQUESTS,
    &NODE_KEYS,
    &NODE_BYTES,
    &NODE_SHARE,
    &RING_IMBALANCE,
    &RING_MEMBERS,
    &RING_EPOCH,
    &NODES_REPORTING,
    &REBALANCES,
    &LAST_MOVED,
    &LAST_MOVED_OVER_IDEAL,
    &KEYS_HANDED_OFF,
    &HANDOFF_SECONDS,
    &SCALE_DECISIONS,
    &SCALE_DESIRED,
    &LOAD_REPORTS,
    &EVENT_LAG,
    &READY,
];

/// A sample: a value and its labels.
type Sample = (f64, Vec<KeyValue>);
/// How a per-node gauge reads a report.
type PerNode = fn(&Reported, &State) -> f64;
/// How a gauge reads the state.
type Gauge = fn(&State) -> Vec<Sample>;
/// How a counter reads the state.
type Count = fn(&State) -> Vec<(u64, Vec<KeyValue>)>;

fn node_labels(reported: &Reported) -> Vec<KeyValue> {
    let (pod, namespace) = reported.pod_and_namespace();
    vec![
        KeyValue::new("node", reported.report.node.clone()),
        KeyValue::new("pod", pod),
        KeyValue::new("namespace", namespace),
    ]
}

/// One sample without labels, if there is a value.
fn single(value: Option<f64>) -> Vec<Sample> {
    value.map(|v| vec![(v, Vec::new())]).unwrap_or_default()
}

fn count(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Registers every metric on `telemetry`, read from `state` (and the handoff
/// histogram, which `state` records into).
pub fn register(telemetry: &Telemetry, state: &Arc<State>) {
    state.record_handoffs_in(telemetry.histogram(&HANDOFF_SECONDS, &HANDOFF_BOUNDS));
    let per_node: [(&'static Metric, PerNode); 6] = [
        (&NODE_UNIQUE_CLIENT_IPS, |r, _| {
            r.report.unique_client_ips_last_minute as f64
        }),
        (&NODE_CPU, |r, _| r.report.cpu_ratio),
        (&NODE_CPU_OVER, |r, s| {
            f64::from(u8::from(r.report.cpu_ratio > s.cpu_threshold))
        }),
        (&NODE_REQUESTS, |r, _| r.requests_per_second()),
        (&NODE_KEYS, |r, _| r.report.keys_held as f64),
        (&NODE_BYTES, |r, _| r.report.bytes_held as f64),
    ];
    for (metric, read) in per_node {
        let state = Arc::clone(state);
        telemetry.observed_gauge(metric, move || {
            state.each_live(Instant::now(), |r| (read(r, &state), node_labels(r)))
        });
    }
    let ring_gauges: [(&'static Metric, Gauge); 9] = [
        (&RING_UNIQUE_CLIENT_IPS, |s| {
            single(s.ring_client_ips(Instant::now()).map(|n| n as f64))
        }),
        (&NODE_SHARE, |s| {
            s.ring_figures()
                .map(|f| {
                    f.shares
                        .into_iter()
                        .map(|(id, share)| (share, vec![KeyValue::new("node", id)]))
                        .collect()
                })
                .unwrap_or_default()
        }),
        (&RING_IMBALANCE, |s| {
            single(s.ring_figures().and_then(|f| f.imbalance))
        }),
        (&RING_MEMBERS, |s| {
            single(s.ring_figures().map(|f| f.members as f64))
        }),
        (&RING_EPOCH, |s| {
            single(s.ring_figures().map(|f| f.epoch as f64))
        }),
        (&NODES_REPORTING, |s| {
            single(Some(s.each_live(Instant::now(), |_| ()).len() as f64))
        }),
        (&LAST_MOVED, |s| {
            single(s.last_rebalance().map(|r| r.moved_fraction))
        }),
        (&LAST_MOVED_OVER_IDEAL, |s| {
            single(s.last_rebalance().and_then(|r| r.moved_over_ideal))
        }),
        (&SCALE_DESIRED, |s| {
            single(s.last_scale().map(|d| f64::from(d.desired)))
        }),
    ];
    for (metric, read) in ring_gauges {
        let state = Arc::clone(state);
        telemetry.observed_gauge(metric, move || read(&state));
    }
    let lag_state = Arc::clone(state);
    telemetry.observed_gauge(&EVENT_LAG, move || {
        single(lag_state.event_lag(SystemTime::now()))
    });
    let counters: [(&'static Metric, Count); 4] = [
        (&REBALANCES, |s| vec![(count(&s.rebalances), Vec::new())]),
        (&KEYS_HANDED_OFF, |s| {
            vec![(count(&s.keys_handed_off), Vec::new())]
        }),
        (&SCALE_DECISIONS, |s| {
            vec![(count(&s.scale_decisions), Vec::new())]
        }),
        (&LOAD_REPORTS, |s| {
            vec![
                (
                    count(&s.reports_accepted),
                    vec![KeyValue::new("outcome", "accepted")],
                ),
                (
                    count(&s.reports_refused),
                    vec![KeyValue::new("outcome", "refused")],
                ),
            ]
        }),
    ];
    for (metric, read) in counters {
        let state = Arc::clone(state);
        telemetry.observed_counter(metric, move || read(&state));
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use ringside_events::pb;
    use ringside_events::sketch::Sketch;
    use ringside_kit::telemetry::{names_in_docs, names_on_page, sample};
    use ringside_ring::{Member, Ring, RingConfig, Strategy};

    use super::*;

    fn report(node: &str, cpu: f64, ips: std::ops::Range<u8>) -> pb::NodeLoadReported {
        let mut sketch = Sketch::default();
        for i in ips.clone() {
            sketch.add(IpAddr::V4(Ipv4Addr::new(127, 0, 1, i)));
        }
        pb::NodeLoadReported {
            node: node.to_owned(),
            window: Some(pbjson_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
            requests: 50,
            unique_client_ips_last_minute: ips.len() as u64,
            cpu_ratio: cpu,
            keys_held: 7,
            bytes_held: 700,
            client_ip_sketch: sketch.to_bytes(),
            ..Default::default()
        }
    }

    /// A state that has seen something of every kind, and its page.
    fn page() -> (Arc<State>, Telemetry, String) {
        let telemetry = Telemetry::new("collector").unwrap();
        telemetry.export_readiness(&ringside_kit::Readiness::new());
        let state = Arc::new(State::new(Duration::from_secs(30), 0.8));
        register(&telemetry, &state);
        let now = Instant::now();
        // Clients 1..=9 reach a, 5..=14 reach b: 14 distinct, 19 by the sum.
        state.report(report("a", 0.9, 1..10), now);
        state.report(report("b", 0.2, 5..15), now);
        // Heard from 40 s ago: stale, not on the page.
        state.report(report("c", 0.1, 1..2), now - Duration::from_secs(40));
        let mut ring = Ring::new(RingConfig::new(Strategy::Balanced, 64).unwrap());
        for id in ["a", "b", "c"] {
            ring.add(Member::new(id, 1)).unwrap();
        }
        state.ring_at(4, Some(&ring));
        state.rebalanced(&pb::RingRebalanced {
            epoch: 4,
            moved_fraction: 0.3,
            ideal_fraction: 0.25,
            ..Default::default()
        });
        state.handed_off(&pb::KeysHandedOff {
            count: 12,
            duration: Some(pbjson_types::Duration {
                seconds: 0,
                nanos: 20_000_000,
            }),
            ..Default::default()
        });
        state.scaled(&pb::ScaleDecided {
            current_replicas: 3,
            desired_replicas: 5,
            ..Default::default()
        });
        state.reports_refused.fetch_add(1, Ordering::Relaxed);
        state.event_at(SystemTime::now());
        let page = telemetry.render().unwrap();
        (state, telemetry, page)
    }

    #[test]
    fn the_page_and_the_docs_list_exactly_these_metrics() {
        let (_state, _telemetry, page) = page();
        let mut on_page = names_on_page(&page);
        on_page.sort();
        let mut listed: Vec<String> = ALL.iter().map(|m| m.name.to_owned()).collect();
        listed.sort();
        assert_eq!(on_page, listed, "{page}");
        let mut documented = names_in_docs(
            include_str!("../../../docs/metrics.md"),
            "ringside_collector_",
        );
        documented.sort();
        assert_eq!(documented, listed);
    }

    #[test]
    fn the_page_shows_what_the_state_holds() {
        let (state, _telemetry, page) = page();
        let node = |name: &str, id: &str| {
            sample(
                &page,
                &format!("{name}{{namespace=\"local\",node=\"{id}\",pod=\"{id}\"}}"),
            )
        };
        assert_eq!(node(NODE_UNIQUE_CLIENT_IPS.name, "a"), Some(9.0));
        assert_eq!(node(NODE_CPU_OVER.name, "a"), Some(1.0));
        assert_eq!(node(NODE_CPU_OVER.name, "b"), Some(0.0));
        assert_eq!(node(NODE_REQUESTS.name, "b"), Some(25.0));
        assert_eq!(node(NODE_BYTES.name, "b"), Some(700.0));
        assert_eq!(
            node(NODE_KEYS.name, "c"),
            None,
            "a stale node leaves the series"
        );
        assert_eq!(sample(&page, NODES_REPORTING.name), Some(2.0));
        assert_eq!(sample(&page, RING_UNIQUE_CLIENT_IPS.name), Some(14.0));
        assert_eq!(sample(&page, RING_MEMBERS.name), Some(3.0));
        assert_eq!(sample(&page, RING_EPOCH.name), Some(4.0));
        let figures = state.ring_figures().unwrap();
        assert_eq!(sample(&page, RING_IMBALANCE.name), figures.imbalance);
        assert_eq!(
            sample(&page, &format!("{}{{node=\"a\"}}", NODE_SHARE.name)),
            Some(figures.shares[0].1)
        );
        assert_eq!(sample(&page, LAST_MOVED.name), Some(0.3));
        let over_ideal = sample(&page, LAST_MOVED_OVER_IDEAL.name).unwrap();
        assert!((over_ideal - 1.2).abs() < 1e-12, "{over_ideal}");
        assert_eq!(sample(&page, KEYS_HANDED_OFF.name), Some(12.0));
        let bucket = |le: &str| {
            sample(
                &page,
                &format!("{}_bucket{{le=\"{le}\"}}", HANDOFF_SECONDS.name),
            )
        };
        assert_eq!((bucket("0.01"), bucket("0.025")), (Some(0.0), Some(1.0)));
        assert_eq!(sample(&page, SCALE_DECISIONS.name), Some(1.0));
        assert_eq!(sample(&page, SCALE_DESIRED.name), Some(5.0));
        let refused = format!("{}{{outcome=\"refused\"}}", LOAD_REPORTS.name);
        assert_eq!(sample(&page, &refused), Some(1.0));
        let lag = sample(&page, EVENT_LAG.name).unwrap();
        assert!((0.0..5.0).contains(&lag), "{lag}");
    }
}
