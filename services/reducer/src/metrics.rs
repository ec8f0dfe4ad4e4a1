//! The reducer's metrics: each described once here ([`Metric`] constants, listed in
//! [`ALL`], which docs/reducer.md mirrors and a test keeps equal to the page), made
//! into OpenTelemetry instruments by [`Metrics::new`] and shown on `/metrics` by the
//! service kit's exporter.
//!
//! Counters and histograms are instruments; the position gauges are atomics the fold
//! loop stores into (they are read elsewhere too: `RingService` names the position
//! when it is not ready) and the exporter reads at each scrape.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use ringside_events::ConsumerStats;
use ringside_kit::{Metric, Telemetry};

pub use ringside_kit::telemetry::sample;

/// Membership events folded, by outcome.
pub const MEMBERSHIP_EVENTS: Metric = Metric::counter(
    "ringside_reducer_membership_events_total",
    "Membership events folded, by outcome (rebalanced, unchanged, rejected, already_folded).",
);
/// Membership messages the consumer could not decode as an event of their subject.
pub const MALFORMED: Metric = Metric::counter(
    "ringside_reducer_malformed_messages_total",
    "Membership messages that did not decode as an event of their subject (dead-lettered and skipped).",
);
/// Copies stored on the dead-letter subject.
pub const DEAD_LETTERED: Metric = Metric::counter(
    "ringside_reducer_dead_lettered_total",
    "Copies stored on the dead-letter subject.",
);
/// Dead-letter copies that could not be stored.
pub const DEAD_LETTER_FAILED: Metric = Metric::counter(
    "ringside_reducer_dead_letter_failures_total",
    "Dead-letter copies that could not be stored.",
);
/// Errors of the membership message stream.
pub const STREAM_ERRORS: Metric = Metric::counter(
    "ringside_reducer_stream_errors_total",
    "Errors of the membership message stream (reconnects, missed heartbeats).",
);
/// Rebalance events, by how this reducer got them stored.
pub const REBALANCES: Metric = Metric::counter(
    "ringside_reducer_rebalances_total",
    "Rebalance events stored, by how (published, duplicate, adopted, verified, replayed).",
);
/// Single-writer conflicts.
pub const CONFLICTS: Metric = Metric::counter(
    "ringside_reducer_conflicts_total",
    "Publishes that found the rebalance subject moved on (another reducer stored the epoch first, or junk was stored).",
);
/// Stored rebalance events that disagree with this reducer's fold.
pub const DIVERGENCES: Metric = Metric::counter(
    "ringside_reducer_divergences_total",
    "Stored rebalance events that disagree with this fold (a determinism bug: the reducer stops).",
);
/// Stored messages on the rebalance subject that are not an epoch of this ring.
pub const INVALID_STORED: Metric = Metric::counter(
    "ringside_reducer_invalid_rebalance_messages_total",
    "Stored messages on the rebalance subject that are not an epoch of this ring (skipped).",
);
/// Snapshots written to the KV bucket.
pub const SNAPSHOTS_WRITTEN: Metric = Metric::counter(
    "ringside_reducer_snapshots_written_total",
    "Snapshots written to the KV bucket.",
);
/// Snapshot writes that failed.
pub const SNAPSHOT_FAILURES: Metric = Metric::counter(
    "ringside_reducer_snapshot_failures_total",
    "Snapshot writes that failed (retried at the next snapshot).",
);
/// Epoch of the last stored rebalance event folded.
pub const EPOCH: Metric = Metric::gauge(
    "ringside_reducer_epoch",
    "Epoch of the last stored rebalance event folded.",
);
/// Stream sequence of the last membership event folded.
pub const MEMBERSHIP_SEQUENCE: Metric = Metric::gauge(
    "ringside_reducer_membership_sequence",
    "Stream sequence of the last membership event folded.",
);
/// Stream sequence of the last stored rebalance event.
pub const REBALANCE_SEQUENCE: Metric = Metric::gauge(
    "ringside_reducer_rebalance_sequence",
    "Stream sequence of the last stored rebalance event.",
);
/// Membership events in the stream not folded yet.
pub const LAG: Metric = Metric::gauge(
    "ringside_reducer_lag_events",
    "Membership events in the stream not folded yet.",
);
/// First membership sequence folded by this process.
pub const START_SEQUENCE: Metric = Metric::gauge(
    "ringside_reducer_start_sequence",
    "First membership sequence folded by this process (1: no snapshot).",
);
/// Epoch of the snapshot this process started from.
pub const START_EPOCH: Metric = Metric::gauge(
    "ringside_reducer_start_epoch",
    "Epoch of the snapshot this process started from (0: none).",
);
/// Age of the newest snapshot loaded or written.
pub const SNAPSHOT_AGE: Metric = Metric::gauge(
    "ringside_reducer_snapshot_age_seconds",
    "Seconds since the newest snapshot this process loaded or wrote was taken (absent: none).",
);
/// Open `WatchRing` streams.
pub const WATCHERS: Metric = Metric::gauge("ringside_reducer_watchers", "Open WatchRing streams.");
/// `WatchRing` streams closed because the client fell behind.
pub const WATCHERS_LAGGED: Metric = Metric::counter(
    "ringside_reducer_watchers_lagged_total",
    "WatchRing streams closed because the client fell behind.",
);
/// Time to fold one membership event and store its rebalance event.
pub const EVENT_SECONDS: Metric = Metric::histogram(
    "ringside_reducer_event_seconds",
    "Time to fold one membership event and store its rebalance event.",
);
/// Of [`EVENT_SECONDS`], the fold alone.
pub const FOLD_SECONDS: Metric = Metric::histogram(
    "ringside_reducer_fold_seconds",
    "Of the event time, the fold alone (RingLedger::apply or advance).",
);
/// Whether the reducer is ready (made by the service kit from its readiness).
pub const READY: Metric = Metric::gauge(
    "ringside_reducer_ready",
    "1 while the service is ready (/readyz answers 200), else 0.",
);

/// Every metric of the reducer, in the order docs/reducer.md lists them.
pub const ALL: [&Metric; 23] = [
    &MEMBERSHIP_EVENTS,
    &MALFORMED,
    &DEAD_LETTERED,
    &DEAD_LETTER_FAILED,
    &STREAM_ERRORS,
    &REBALANCES,
    &CONFLICTS,
    &DIVERGENCES,
    &INVALID_STORED,
    &SNAPSHOTS_WRITTEN,
    &SNAPSHOT_FAILURES,
    &EPOCH,
    &MEMBERSHIP_SEQUENCE,
    &REBALANCE_SEQUENCE,
    &LAG,
    &START_SEQUENCE,
    &START_EPOCH,
    &READY,
    &SNAPSHOT_AGE,
    &WATCHERS,
    &WATCHERS_LAGGED,
    &EVENT_SECONDS,
    &FOLD_SECONDS,
];

/// Bucket bounds of [`EVENT_SECONDS`]: a stored epoch takes from about 100 µs (a
/// fold and an fsynced publish on loopback) to seconds (a publish retried across a
/// NATS restart).
const EVENT_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];
/// Bucket bounds of [`FOLD_SECONDS`]: a fold takes microseconds (a join to a small
/// ring) to tens of milliseconds (the first fold of a 1000-member sync).
const FOLD_BUCKETS: [f64; 12] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.01,
    0.05, 0.25,
];

/// Outcome labels of [`MEMBERSHIP_EVENTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FoldOutcome {
    /// A new epoch.
    Rebalanced,
    /// A fact that changed nothing.
    Unchanged,
    /// Refused by the fold (skipped by every fold alike).
    Rejected,
    /// A redelivery of an event folded before.
    AlreadyFolded,
}

impl FoldOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Rebalanced => "rebalanced",
            Self::Unchanged => "unchanged",
            Self::Rejected => "rejected",
            Self::AlreadyFolded => "already_folded",
        }
    }
}

/// How a rebalance event came to be stored, labels of [`REBALANCES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredHow {
    /// This reducer stored it.
    Published,
    /// The server already had this exact event (a retry, or a racing reducer's
    /// identical copy).
    Duplicate,
    /// Another reducer stored it first; checked equal and adopted.
    Adopted,
    /// Stored before this process started: the stored head, checked equal at the end
    /// of catch-up.
    Verified,
    /// Stored before this process started: an epoch before the stored head, folded to
    /// catch up (the head's check covers it).
    Replayed,
}

impl StoredHow {
    fn label(self) -> &'static str {
        match self {
            Self::Published => "published",
            Self::Duplicate => "duplicate",
            Self::Adopted => "adopted",
            Self::Verified => "verified",
            Self::Replayed => "replayed",
        }
    }
}

/// A histogram of durations, in seconds.
#[derive(Debug)]
pub struct Timer(Histogram<f64>);

impl Timer {
    /// Records one duration.
    pub fn observe(&self, took: Duration) {
        self.0.record(took.as_secs_f64(), &[]);
    }

    /// Runs `work` and records how long it took.
    pub fn time<R>(&self, work: impl FnOnce() -> R) -> R {
        let started = std::time::Instant::now();
        let result = work();
        self.observe(started.elapsed());
        result
    }
}

/// The live values. Shared (`Arc`) by the fold loop, the gRPC service and the
/// snapshot writer.
#[derive(Debug)]
pub struct Metrics {
    membership: Counter<u64>,
    rebalances: Counter<u64>,
    conflicts: Counter<u64>,
    divergences: Counter<u64>,
    invalid_stored: Counter<u64>,
    snapshots_written: Counter<u64>,
    snapshot_failures: Counter<u64>,
    watchers_lagged: Counter<u64>,
    /// See [`EPOCH`].
    pub epoch: AtomicU64,
    /// See [`MEMBERSHIP_SEQUENCE`].
    pub membership_sequence: AtomicU64,
    /// See [`REBALANCE_SEQUENCE`].
    pub rebalance_sequence: AtomicU64,
    /// See [`LAG`].
    pub lag: AtomicU64,
    /// See [`START_SEQUENCE`].
    pub start_sequence: AtomicU64,
    /// See [`START_EPOCH`].
    pub start_epoch: AtomicU64,
    /// Unix time in milliseconds of the newest snapshot loaded or written (0: none).
    pub snapshot_taken_ms: AtomicU64,
    /// See [`WATCHERS`].
    pub watchers: AtomicU64,
    /// See [`EVENT_SECONDS`].
    pub event: Timer,
    /// See [`FOLD_SECONDS`].
    pub fold: Timer,
    consumer: OnceLock<Arc<ConsumerStats>>,
}

/// How a gauge reads its value off the metrics (`None`: no sample).
type ReadGauge = fn(&Metrics) -> Option<f64>;
/// Which consumer counter a counter reads.
type ReadCount = fn(&ConsumerStats) -> &AtomicU64;

/// Reads an atomic.
fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Sets a gauge.
pub fn set(c: &AtomicU64, value: u64) {
    c.store(value, Ordering::Relaxed);
}

/// Milliseconds since the Unix epoch (0 before 1970).
pub fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The age in seconds at `now` of a snapshot taken at `taken_ms` (0: none).
fn snapshot_age(taken_ms: u64, now: SystemTime) -> Option<f64> {
    (taken_ms > 0).then(|| unix_millis(now).saturating_sub(taken_ms) as f64 / 1000.0)
}

impl Metrics {
    /// The reducer's instruments on `telemetry`; the gauges read this value (weakly:
    /// a stopped reducer's values leave the page).
    pub fn new(telemetry: &Telemetry) -> Arc<Metrics> {
        Arc::new_cyclic(|me: &Weak<Metrics>| {
            let gauges: [(&'static Metric, ReadGauge); 8] = [
                (&EPOCH, |m| Some(get(&m.epoch) as f64)),
                (&MEMBERSHIP_SEQUENCE, |m| {
                    Some(get(&m.membership_sequence) as f64)
                }),
                (&REBALANCE_SEQUENCE, |m| {
                    Some(get(&m.rebalance_sequence) as f64)
                }),
                (&LAG, |m| Some(get(&m.lag) as f64)),
                (&START_SEQUENCE, |m| Some(get(&m.start_sequence) as f64)),
                (&START_EPOCH, |m| Some(get(&m.start_epoch) as f64)),
                (&SNAPSHOT_AGE, |m| {
                    snapshot_age(get(&m.snapshot_taken_ms), SystemTime::now())
                }),
                (&WATCHERS, |m| Some(get(&m.watchers) as f64)),
            ];
            for (metric, read) in gauges {
                let me = me.clone();
                telemetry.observed_gauge(metric, move || {
                    me.upgrade()
                        .and_then(|m| read(&m))
                        .map(|v| vec![(v, Vec::new())])
                        .unwrap_or_default()
                });
            }
            let consumer: [(&'static Metric, ReadCount); 4] = [
                (&MALFORMED, |s| &s.decode_failed),
                (&DEAD_LETTERED, |s| &s.dead_lettered),
                (&DEAD_LETTER_FAILED, |s| &s.deadletter_failed),
                (&STREAM_ERRORS, |s| &s.stream_errors),
            ];
            for (metric, read) in consumer {
                let me = me.clone();
                telemetry.observed_counter(metric, move || {
                    let value = me
                        .upgrade()
                        .and_then(|m| m.consumer.get().map(|s| get(read(s))))
                        .unwrap_or(0);
                    vec![(value, Vec::new())]
                });
            }
            Metrics {
                membership: telemetry.counter(&MEMBERSHIP_EVENTS),
                rebalances: telemetry.counter(&REBALANCES),
                conflicts: telemetry.counter(&CONFLICTS),
                divergences: telemetry.counter(&DIVERGENCES),
                invalid_stored: telemetry.counter(&INVALID_STORED),
                snapshots_written: telemetry.counter(&SNAPSHOTS_WRITTEN),
                snapshot_failures: telemetry.counter(&SNAPSHOT_FAILURES),
                watchers_lagged: telemetry.counter(&WATCHERS_LAGGED),
                epoch: AtomicU64::new(0),
                membership_sequence: AtomicU64::new(0),
                rebalance_sequence: AtomicU64::new(0),
                lag: AtomicU64::new(0),
                start_sequence: AtomicU64::new(0),
                start_epoch: AtomicU64::new(0),
                snapshot_taken_ms: AtomicU64::new(0),
                watchers: AtomicU64::new(0),
                event: Timer(telemetry.histogram(&EVENT_SECONDS, &EVENT_BUCKETS)),
                fold: Timer(telemetry.histogram(&FOLD_SECONDS, &FOLD_BUCKETS)),
                consumer: OnceLock::new(),
            }
        })
    }

    /// Counts one folded membership event.
    pub fn folded(&self, outcome: FoldOutcome) {
        self.membership
            .add(1, &[KeyValue::new("outcome", outcome.label())]);
    }

    /// Counts one stored rebalance event.
    pub fn stored(&self, how: StoredHow) {
        self.rebalances.add(1, &[KeyValue::new("how", how.label())]);
    }

    /// Counts a single-writer conflict.
    pub fn conflict(&self) {
        self.conflicts.add(1, &[]);
    }

    /// Counts a divergence.
    pub fn divergence(&self) {
        self.divergences.add(1, &[]);
    }

    /// Counts a stored message of the rebalance subject that is not an epoch.
    pub fn invalid_stored(&self) {
        self.invalid_stored.add(1, &[]);
    }

    /// Counts a snapshot written, and notes when.
    pub fn snapshot_written(&self, at: SystemTime) {
        self.snapshots_written.add(1, &[]);
        set(&self.snapshot_taken_ms, unix_millis(at));
    }

    /// Counts a failed snapshot write.
    pub fn snapshot_failed(&self) {
        self.snapshot_failures.add(1, &[]);
    }

    /// Counts a `WatchRing` stream closed for lagging.
    pub fn watcher_lagged(&self) {
        self.watchers_lagged.add(1, &[]);
    }

    /// Attaches the membership consumer's counters (malformed, dead-lettered, ...).
    pub fn attach_consumer(&self, stats: Arc<ConsumerStats>) {
        // Set once per process: the consumer (and its counters) outlives every restart
        // of the consume loop.
        let _ = self.consumer.set(stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringside_kit::telemetry::names_on_page;

    #[test]
    fn the_page_lists_every_metric_with_its_values() {
        let telemetry = Telemetry::new("reducer").unwrap();
        telemetry.export_readiness(&ringside_kit::Readiness::new());
        let m = Metrics::new(&telemetry);
        m.attach_consumer(Arc::default());
        m.folded(FoldOutcome::Rebalanced);
        m.folded(FoldOutcome::Rebalanced);
        m.folded(FoldOutcome::Rejected);
        m.stored(StoredHow::Adopted);
        m.conflict();
        m.divergence();
        m.invalid_stored();
        m.snapshot_written(SystemTime::now() - Duration::from_secs(90));
        m.snapshot_failed();
        m.watcher_lagged();
        set(&m.epoch, 41);
        m.event.observe(Duration::from_micros(700));
        m.event.observe(Duration::from_millis(3));
        m.fold.observe(Duration::from_micros(80));
        let page = telemetry.render().unwrap();
        let mut on_page = names_on_page(&page);
        on_page.sort();
        let mut listed: Vec<&str> = ALL.iter().map(|m| m.name).collect();
        listed.sort();
        assert_eq!(on_page, listed, "{page}");
        let value = |s: &str| sample(&page, s);
        assert_eq!(
            value("ringside_reducer_membership_events_total{outcome=\"rebalanced\"}"),
            Some(2.0)
        );
        assert_eq!(
            value("ringside_reducer_rebalances_total{how=\"adopted\"}"),
            Some(1.0)
        );
        assert_eq!(value(EPOCH.name), Some(41.0));
        // Cumulative buckets: 700 µs and 3 ms events, one 80 µs fold.
        for (name, le, expected) in [
            (EVENT_SECONDS.name, "0.0005", 0.0),
            (EVENT_SECONDS.name, "0.001", 1.0),
            (EVENT_SECONDS.name, "+Inf", 2.0),
            (FOLD_SECONDS.name, "0.00005", 0.0),
            (FOLD_SECONDS.name, "0.0001", 1.0),
        ] {
            let bucket = format!("{name}_bucket{{le=\"{le}\"}}");
            assert_eq!(value(&bucket), Some(expected), "{bucket}: {page}");
        }
        let age = value(SNAPSHOT_AGE.name).unwrap();
        assert!((90.0..91.0).contains(&age), "{age}");
    }

    #[test]
    fn the_docs_list_exactly_these_metrics() {
        let docs = include_str!("../../../docs/reducer.md");
        let mut documented = ringside_kit::telemetry::names_in_docs(docs, "ringside_reducer_");
        documented.sort();
        let mut listed: Vec<String> = ALL.iter().map(|m| m.name.to_owned()).collect();
        listed.sort();
        assert_eq!(documented, listed);
    }

    #[test]
    fn without_a_snapshot_the_age_has_no_sample() {
        assert_eq!(snapshot_age(0, SystemTime::now()), None);
        let telemetry = Telemetry::new("reducer").unwrap();
        let _m = Metrics::new(&telemetry);
        let page = telemetry.render().unwrap();
        assert_eq!(sample(&page, SNAPSHOT_AGE.name), None, "{page}");
    }

    #[test]
    fn timed_work_is_observed_once() {
        let telemetry = Telemetry::new("reducer").unwrap();
        let m = Metrics::new(&telemetry);
        assert_eq!(m.fold.time(|| 7), 7);
        let page = telemetry.render().unwrap();
        assert_eq!(
            sample(&page, &format!("{}_count", FOLD_SECONDS.name)),
            Some(1.0)
        );
    }
}
