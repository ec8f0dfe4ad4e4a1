//! The node's metrics, each described once ([`ALL`], which docs/node.md lists and a
//! test keeps equal to the exported page).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use ringside_kit::{Metric, Telemetry};

/// Requests handled, by operation and how.
pub const REQUESTS: Metric = Metric::counter(
    "ringside_node_requests_total",
    "Key requests answered, by op (get, put, delete, owner) and how (served by this node as owner, or forwarded to the owner).",
);
/// Requests refused, by reason.
pub const REJECTED: Metric = Metric::counter(
    "ringside_node_rejected_requests_total",
    "Requests refused, by reason (bad_key, too_large, timeout, bad_forwarded, misdirected, unknown_route, not_ready, replica_unavailable, bad_batch, owner_unreachable).",
);
/// Time to answer a key request.
pub const REQUEST_SECONDS: Metric = Metric::histogram(
    "ringside_node_request_seconds",
    "Time to answer a key request, forwarding and replication included.",
);
/// Distinct client IPs of the last minute.
pub const UNIQUE_CLIENT_IPS: Metric = Metric::gauge(
    "ringside_node_unique_client_ips",
    "Distinct client IPs seen in the last minute (exact up to 100,000, then a sketch with about 1.6 % error).",
);
/// CPU used by the process.
pub const CPU: Metric = Metric::gauge(
    "ringside_node_cpu_ratio",
    "CPU used by the node process over the last report interval, in cores.",
);
/// Keys held.
pub const KEYS: Metric = Metric::gauge(
    "ringside_node_keys",
    "Keys this node holds (as owner or replica), deleted ones not counted.",
);
/// Bytes held.
pub const BYTES: Metric = Metric::gauge(
    "ringside_node_bytes",
    "Bytes of the keys and values this node holds.",
);
/// The ring epoch served.
pub const EPOCH: Metric =
    Metric::gauge("ringside_node_epoch", "The ring epoch this node routes by.");
/// Keys moved between nodes after rebalances.
pub const HANDOFF_KEYS: Metric = Metric::counter(
    "ringside_node_handoff_keys_total",
    "Keys copied to or from other nodes after rebalances, by direction (sent, received).",
);
/// Copies written to replicas.
pub const REPLICA_WRITES: Metric = Metric::counter(
    "ringside_node_replica_writes_total",
    "Writes copied to a replica, by outcome (ok, failed).",
);
/// Reads answered from a key's previous holders.
pub const READ_THROUGH: Metric = Metric::counter(
    "ringside_node_read_through_total",
    "Reads of a key not handed over yet, answered from its previous holders.",
);
/// Load reports published.
pub const LOAD_REPORTS: Metric = Metric::counter(
    "ringside_node_load_reports_total",
    "Load reports on ringside.<ring>.load.<node>, by outcome (published, failed).",
);
/// Whether the node is ready (made by the service kit).
pub const READY: Metric = Metric::gauge(
    "ringside_node_ready",
    "1 while the service is ready (/readyz answers 200), else 0.",
);

/// Every metric of the node, in the order docs/node.md lists them.
pub const ALL: [&Metric; 13] = [
    &REQUESTS,
    &REJECTED,
    &REQUEST_SECONDS,
    &UNIQUE_CLIENT_IPS,
    &CPU,
    &KEYS,
    &BYTES,
    &EPOCH,
    &HANDOFF_KEYS,
    &REPLICA_WRITES,
    &READ_THROUGH,
    &LOAD_REPORTS,
    &READY,
];

/// Bucket bounds of [`REQUEST_SECONDS`]: a request served from memory takes tens of
/// microseconds, one forwarded and replicated on loopback a millisecond or two, one
/// caught in a rebalance or a slow peer seconds.
const REQUEST_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
    5.0,
];

/// Why a request was refused: labels of [`REJECTED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// The key is empty, too long or not text.
    BadKey,
    /// The value is over 1 MiB.
    TooLarge,
    /// The client did not finish its request in time.
    Timeout,
    /// A forwarded request whose sender or `Forwarded` header does not check out.
    BadForwarded,
    /// A forwarded request for a key this node does not own.
    Misdirected,
    /// No such route.
    UnknownRoute,
    /// The ring is not known yet.
    NotReady,
    /// A replica did not take the write.
    ReplicaUnavailable,
    /// A batch from another node that does not decode.
    BadBatch,
    /// The owner could not be reached to forward to.
    OwnerUnreachable,
}

impl Reject {
    /// Its label.
    pub fn label(self) -> &'static str {
        match self {
            Self::BadKey => "bad_key",
            Self::TooLarge => "too_large",
            Self::Timeout => "timeout",
            Self::BadForwarded => "bad_forwarded",
            Self::Misdirected => "misdirected",
            Self::UnknownRoute => "unknown_route",
            Self::NotReady => "not_ready",
            Self::ReplicaUnavailable => "replica_unavailable",
            Self::BadBatch => "bad_batch",
            Self::OwnerUnreachable => "owner_unreachable",
        }
    }
}

/// The gauges the report loop sets and the page reads.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Distinct client IPs of the last minute.
    pub unique_client_ips: AtomicU64,
    /// CPU in thousandths of a core.
    pub cpu_millis: AtomicU64,
    /// Keys held.
    pub keys: AtomicU64,
    /// Bytes held.
    pub bytes: AtomicU64,
    /// Epoch routed by.
    pub epoch: AtomicU64,
}

/// How a gauge reads its value.
type ReadGauge = fn(&Gauges) -> f64;

/// The node's instruments.
#[derive(Debug)]
pub struct Metrics {
    requests: Counter<u64>,
    rejected: Counter<u64>,
    /// See [`REQUEST_SECONDS`].
    pub request_seconds: Histogram<f64>,
    handoff: Counter<u64>,
    replica_writes: Counter<u64>,
    read_through: Counter<u64>,
    load_reports: Counter<u64>,
    /// The gauges.
    pub gauges: Arc<Gauges>,
}

impl Metrics {
    /// The node's instruments on `telemetry`.
    pub fn new(telemetry: &Telemetry) -> Metrics {
        let gauges = Arc::new(Gauges::default());
        let readings: [(&'static Metric, ReadGauge); 5] = [
            (&UNIQUE_CLIENT_IPS, |g| {
                g.unique_client_ips.load(Ordering::Relaxed) as f64
            }),
            (&CPU, |g| {
                g.cpu_millis.load(Ordering::Relaxed) as f64 / 1000.0
            }),
            (&KEYS, |g| g.keys.load(Ordering::Relaxed) as f64),
            (&BYTES, |g| g.bytes.load(Ordering::Relaxed) as f64),
            (&EPOCH, |g| g.epoch.load(Ordering::Relaxed) as f64),
        ];
        for (metric, read) in readings {
            let gauges = Arc::clone(&gauges);
            telemetry.observed_gauge(metric, move || vec![(read(&gauges), Vec::new())]);
        }
        Metrics {
            requests: telemetry.counter(&REQUESTS),
            rejected: telemetry.counter(&REJECTED),
            request_seconds: telemetry.histogram(&REQUEST_SECONDS, &REQUEST_BUCKETS),
            handoff: telemetry.counter(&HANDOFF_KEYS),
            replica_writes: telemetry.counter(&REPLICA_WRITES),
            read_through: telemetry.counter(&READ_THROUGH),
            load_reports: telemetry.counter(&LOAD_REPORTS),
            gauges,
        }
    }

    /// Counts an answered request.
    pub fn request(&self, op: &'static str, forwarded: bool) {
        let how = if forwarded { "forwarded" } else { "served" };
        self.requests
            .add(1, &[KeyValue::new("op", op), KeyValue::new("how", how)]);
    }

    /// Counts a refused request.
    pub fn rejected(&self, reason: Reject) {
        self.rejected
            .add(1, &[KeyValue::new("reason", reason.label())]);
    }

    /// Counts keys handed over.
    pub fn handoff(&self, sent: bool, keys: u64) {
        let direction = if sent { "sent" } else { "received" };
        self.handoff
            .add(keys, &[KeyValue::new("direction", direction)]);
    }

    /// Counts a replica write.
    pub fn replica_write(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.replica_writes
            .add(1, &[KeyValue::new("outcome", outcome)]);
    }

    /// Counts a read answered from previous holders.
    pub fn read_through(&self) {
        self.read_through.add(1, &[]);
    }

    /// Counts a load report.
    pub fn load_report(&self, published: bool) {
        let outcome = if published { "published" } else { "failed" };
        self.load_reports
            .add(1, &[KeyValue::new("outcome", outcome)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_the_docs_list_exactly_these_metrics() {
        let telemetry = Telemetry::new("node").unwrap();
        telemetry.export_readiness(&ringside_kit::Readiness::new());
        let m = Metrics::new(&telemetry);
        m.request("get", false);
        m.rejected(Reject::BadKey);
        m.request_seconds.record(0.001, &[]);
        m.handoff(true, 3);
        m.replica_write(true);
        m.read_through();
        m.load_report(true);
        let page = telemetry.render().unwrap();
        let mut on_page = ringside_kit::telemetry::names_on_page(&page);
        on_page.sort();
        let mut listed: Vec<String> = ALL.iter().map(|m| m.name.to_owned()).collect();
        listed.sort();
        assert_eq!(on_page, listed, "{page}");
        let docs = include_str!("../../../docs/node.md");
        let mut documented = ringside_kit::telemetry::names_in_docs(docs, "ringside_node_");
        documented.sort();
        assert_eq!(documented, listed);
    }
}
