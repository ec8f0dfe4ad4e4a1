//! The watcher's metrics: each described once here ([`Metric`] constants; [`SHARED`],
//! [`KUBERNETES`] and [`HEARTBEAT`] say which source exports which, [`ALL`] lists
//! them as docs/watcher.md does, and tests keep the page equal to the lists), made
//! into OpenTelemetry instruments here and shown on `/metrics` by the service kit's
//! exporter.
//!
//! Every counter is set up at zero with each of its label values, so the page names
//! every series from the start (a rate over a series that appears late misses its
//! first increase).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use ringside_events::{Body, Stored};
use ringside_kit::{Metric, Telemetry};

/// Membership events stored, by kind.
pub const EVENTS_PUBLISHED: Metric = Metric::counter(
    "ringside_watcher_events_published_total",
    "Membership events stored by JetStream, by kind (joined, left, synced); duplicates are counted apart.",
);
/// Publishes JetStream acknowledged as duplicates.
pub const DUPLICATES: Metric = Metric::counter(
    "ringside_watcher_duplicates_total",
    "Membership events JetStream already had (a retry, or a sync of a set already stored after the same fact): nothing new stored.",
);
/// Publishes that failed after the events publisher's own retries.
pub const PUBLISH_ERRORS: Metric = Metric::counter(
    "ringside_watcher_publish_errors_total",
    "Publishes that failed after the publisher's own retries; the watcher tries the same event again.",
);
/// When the last sync was stored.
pub const LAST_SYNC: Metric = Metric::gauge(
    "ringside_watcher_last_sync_timestamp_seconds",
    "Unix time at which this watcher's last sync was stored or found already stored (absent: none yet).",
);
/// Whether the watcher is ready (made by the service kit from its readiness).
pub const READY: Metric = Metric::gauge(
    "ringside_watcher_ready",
    "1 while the service is ready (/readyz answers 200), else 0.",
);
/// Pod lists completed (Kubernetes source).
pub const POD_LISTS: Metric = Metric::counter(
    "ringside_watcher_pod_lists_total",
    "Pod lists completed: the first, and a re-list after every 410 Gone or desync.",
);
/// Kubernetes API errors of the pod list or watch (Kubernetes source).
pub const WATCH_ERRORS: Metric = Metric::counter(
    "ringside_watcher_watch_errors_total",
    "Kubernetes API errors of the pod list or watch, by reason (expired, refused, other); each is retried with backoff.",
);
/// Whether this instance holds the ring's lease (heartbeat source).
pub const LEASE_HELD: Metric = Metric::gauge(
    "ringside_watcher_lease_held",
    "1 while this heartbeat watcher holds its ring's lease (it alone publishes), else 0.",
);
/// Heartbeats refused (heartbeat source).
pub const HEARTBEATS_REFUSED: Metric = Metric::counter(
    "ringside_watcher_heartbeats_refused_total",
    "Heartbeats refused: undecodable, not a heartbeat, or without a member or its incarnation (member.uid).",
);

/// What both sources export.
pub const SHARED: [&Metric; 5] = [
    &EVENTS_PUBLISHED,
    &DUPLICATES,
    &PUBLISH_ERRORS,
    &LAST_SYNC,
    &READY,
];
/// What only the Kubernetes source exports.
pub const KUBERNETES: [&Metric; 2] = [&POD_LISTS, &WATCH_ERRORS];
/// What only the heartbeat source exports.
pub const HEARTBEAT: [&Metric; 2] = [&LEASE_HELD, &HEARTBEATS_REFUSED];
/// Every metric of the watcher, in the order docs/watcher.md lists them.
pub const ALL: [&Metric; 9] = [
    &EVENTS_PUBLISHED,
    &DUPLICATES,
    &PUBLISH_ERRORS,
    &LAST_SYNC,
    &READY,
    &POD_LISTS,
    &WATCH_ERRORS,
    &LEASE_HELD,
    &HEARTBEATS_REFUSED,
];

/// The `kind` labels of [`EVENTS_PUBLISHED`].
const KINDS: [&str; 3] = ["joined", "left", "synced"];

/// The `kind` label of a membership event (`None`: not one).
fn kind(body: &Body) -> Option<&'static str> {
    match body {
        Body::MembersJoined(_) => Some(KINDS[0]),
        Body::MemberLeft(_) => Some(KINDS[1]),
        Body::MembershipSynced(_) => Some(KINDS[2]),
        _ => None,
    }
}

/// The publishing side, shared by both sources. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    published: Counter<u64>,
    duplicates: Counter<u64>,
    publish_errors: Counter<u64>,
    /// Unix time in milliseconds of the last sync stored (0: none).
    last_sync_ms: Arc<AtomicU64>,
}

impl Metrics {
    /// The shared instruments on `telemetry`.
    pub fn new(telemetry: &Telemetry) -> Metrics {
        let last_sync_ms = Arc::new(AtomicU64::new(0));
        let read = Arc::clone(&last_sync_ms);
        telemetry.observed_gauge(&LAST_SYNC, move || match read.load(Ordering::Relaxed) {
            0 => Vec::new(),
            ms => vec![(ms as f64 / 1000.0, Vec::new())],
        });
        let metrics = Metrics {
            published: telemetry.counter(&EVENTS_PUBLISHED),
            duplicates: telemetry.counter(&DUPLICATES),
            publish_errors: telemetry.counter(&PUBLISH_ERRORS),
            last_sync_ms,
        };
        for kind in KINDS {
            metrics.published.add(0, &[KeyValue::new("kind", kind)]);
        }
        metrics.duplicates.add(0, &[]);
        metrics.publish_errors.add(0, &[]);
        metrics
    }

    /// Counts an event JetStream acknowledged (stored anew or as a duplicate).
    pub(crate) fn stored(&self, body: &Body, stored: &Stored) {
        if stored.duplicate {
            self.duplicates.add(1, &[]);
        } else if let Some(kind) = kind(body) {
            self.published.add(1, &[KeyValue::new("kind", kind)]);
        }
        if matches!(body, Body::MembershipSynced(_)) {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            self.last_sync_ms.store(ms, Ordering::Relaxed);
        }
    }

    /// Counts a publish that failed.
    pub(crate) fn publish_failed(&self) {
        self.publish_errors.add(1, &[]);
    }
}

/// The `reason` labels of [`WATCH_ERRORS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchError {
    /// 410 Gone: the watch's resourceVersion expired; the watcher re-lists.
    Expired,
    /// 401 or 403: the API refused the watcher (its RBAC).
    Refused,
    /// Anything else (connection, server errors).
    Other,
}

impl WatchError {
    const ALL: [WatchError; 3] = [Self::Expired, Self::Refused, Self::Other];

    fn label(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Refused => "refused",
            Self::Other => "other",
        }
    }
}

/// The Kubernetes source's own instruments. Cheap to clone.
#[derive(Clone, Debug)]
pub struct KubernetesMetrics {
    lists: Counter<u64>,
    watch_errors: Counter<u64>,
}

impl KubernetesMetrics {
    /// The Kubernetes source's instruments on `telemetry`.
    pub fn new(telemetry: &Telemetry) -> KubernetesMetrics {
        let metrics = KubernetesMetrics {
            lists: telemetry.counter(&POD_LISTS),
            watch_errors: telemetry.counter(&WATCH_ERRORS),
        };
        metrics.lists.add(0, &[]);
        for reason in WatchError::ALL {
            metrics
                .watch_errors
                .add(0, &[KeyValue::new("reason", reason.label())]);
        }
        metrics
    }

    /// Counts a completed pod list.
    pub(crate) fn listed(&self) {
        self.lists.add(1, &[]);
    }

    /// Counts an error of the pod list or watch.
    pub(crate) fn watch_error(&self, reason: WatchError) {
        self.watch_errors
            .add(1, &[KeyValue::new("reason", reason.label())]);
    }
}

/// The heartbeat source's own instruments. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HeartbeatMetrics {
    refused: Counter<u64>,
}

impl HeartbeatMetrics {
    /// The heartbeat source's instruments on `telemetry`; the lease gauge asks
    /// `holds_lease` at each scrape.
    pub fn new(
        telemetry: &Telemetry,
        holds_lease: impl Fn() -> bool + Send + Sync + 'static,
    ) -> HeartbeatMetrics {
        telemetry.observed_gauge(&LEASE_HELD, move || {
            vec![(if holds_lease() { 1.0 } else { 0.0 }, Vec::new())]
        });
        let metrics = HeartbeatMetrics {
            refused: telemetry.counter(&HEARTBEATS_REFUSED),
        };
        metrics.refused.add(0, &[]);
        metrics
    }

    /// Counts a refused heartbeat.
    pub(crate) fn refused(&self) {
        self.refused.add(1, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringside_events::pb;
    use ringside_kit::telemetry::{names_on_page, sample};

    fn names(page: &str) -> Vec<String> {
        let mut names = names_on_page(page);
        names.sort();
        names
    }

    fn listed(metrics: &[&[&Metric]]) -> Vec<String> {
        let mut names: Vec<String> = metrics
            .iter()
            .flat_map(|list| list.iter().map(|m| m.name.to_owned()))
            .collect();
        names.sort();
        names
    }

    fn stored(duplicate: bool) -> Stored {
        Stored {
            stream: "RINGSIDE".into(),
            sequence: 1,
            duplicate,
        }
    }

    #[test]
    fn each_source_exports_the_shared_metrics_and_its_own() {
        let telemetry = Telemetry::new(crate::NAME).unwrap();
        telemetry.export_readiness(&ringside_kit::Readiness::new());
        let shared = Metrics::new(&telemetry);
        let kubernetes = KubernetesMetrics::new(&telemetry);
        let page = telemetry.render().unwrap();
        // Every series is there from the start, at zero, but the time of a sync.
        for series in [
            "ringside_watcher_events_published_total{kind=\"left\"}",
            "ringside_watcher_watch_errors_total{reason=\"refused\"}",
            "ringside_watcher_pod_lists_total",
        ] {
            assert_eq!(sample(&page, series), Some(0.0), "{series}: {page}");
        }
        assert_eq!(sample(&page, LAST_SYNC.name), None, "no sync yet");

        let sync = Body::from(pb::MembershipSynced::default());
        shared.stored(&sync, &stored(false));
        shared.stored(&sync, &stored(true));
        shared.stored(&Body::from(pb::MembersJoined::default()), &stored(false));
        shared.publish_failed();
        kubernetes.listed();
        kubernetes.watch_error(WatchError::Expired);
        let page = telemetry.render().unwrap();
        assert_eq!(names(&page), listed(&[&SHARED, &KUBERNETES]), "{page}");
        let value = |s: &str| sample(&page, s);
        assert_eq!(
            value("ringside_watcher_events_published_total{kind=\"synced\"}"),
            Some(1.0)
        );
        assert_eq!(
            value("ringside_watcher_events_published_total{kind=\"joined\"}"),
            Some(1.0)
        );
        assert_eq!(value(DUPLICATES.name), Some(1.0));
        assert_eq!(value(PUBLISH_ERRORS.name), Some(1.0));
        assert_eq!(value(POD_LISTS.name), Some(1.0));
        assert_eq!(
            value("ringside_watcher_watch_errors_total{reason=\"expired\"}"),
            Some(1.0)
        );
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let last_sync = value(LAST_SYNC.name).unwrap();
        assert!((now.as_secs_f64() - last_sync).abs() < 60.0, "{last_sync}");
    }

    #[test]
    fn the_heartbeat_source_exports_its_lease_state() {
        let telemetry = Telemetry::new(crate::NAME).unwrap();
        telemetry.export_readiness(&ringside_kit::Readiness::new());
        let shared = Metrics::new(&telemetry);
        let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let heartbeat = HeartbeatMetrics::new(&telemetry, {
            let held = Arc::clone(&held);
            move || held.load(Ordering::Relaxed)
        });
        let page = telemetry.render().unwrap();
        assert_eq!(sample(&page, LEASE_HELD.name), Some(0.0));
        shared.stored(&Body::from(pb::MembershipSynced::default()), &stored(false));
        held.store(true, Ordering::Relaxed);
        heartbeat.refused();
        let page = telemetry.render().unwrap();
        assert_eq!(names(&page), listed(&[&SHARED, &HEARTBEAT]), "{page}");
        assert_eq!(sample(&page, LEASE_HELD.name), Some(1.0));
        assert_eq!(sample(&page, HEARTBEATS_REFUSED.name), Some(1.0));
    }

    /// docs/watcher.md's metrics table (`| name{labels} | type | meaning |` rows) lists
    /// exactly [`ALL`], each with its type.
    #[test]
    fn the_docs_list_every_metric() {
        let docs = include_str!("../../../docs/watcher.md");
        let mut documented: Vec<(String, String)> = docs
            .lines()
            .filter(|l| l.starts_with("| `ringside_watcher_"))
            .filter_map(|row| {
                let mut cells = row.split('|').map(str::trim).skip(1);
                let name = cells.next()?.trim_matches('`');
                let name = name.split('{').next()?;
                Some((name.to_owned(), cells.next()?.to_owned()))
            })
            .collect();
        documented.sort();
        let mut defined: Vec<(String, String)> = ALL
            .iter()
            .map(|m| (m.name.to_owned(), m.kind.prometheus_type().to_owned()))
            .collect();
        defined.sort();
        assert_eq!(documented, defined);
        assert_eq!(listed(&[&ALL]), listed(&[&SHARED, &KUBERNETES, &HEARTBEAT]));
    }
}
