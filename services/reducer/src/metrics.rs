//! The reducer's metrics: every name defined once here, the live values as atomics,
//! and the Prometheus text exposition of `/metrics` (format 0.0.4).
//!
//! The exposition is written by hand: a few counters, gauges and one histogram do not
//! need a registry, and a hand-written page keeps the names, help texts and label
//! values in one table that docs/reducer.md mirrors.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ringside_events::ConsumerStats;

/// Membership events folded, by outcome (`rebalanced`, `unchanged`, `rejected`, `already_folded`).
pub const MEMBERSHIP_EVENTS: &str = "ringside_reducer_membership_events_total";
/// Membership messages that did not decode (counted and dead-lettered by the consumer).
pub const MALFORMED: &str = "ringside_reducer_malformed_messages_total";
/// Copies stored on the dead-letter subject.
pub const DEAD_LETTERED: &str = "ringside_reducer_dead_lettered_total";
/// Dead-letter copies that could not be stored.
pub const DEAD_LETTER_FAILED: &str = "ringside_reducer_dead_letter_failures_total";
/// Errors of the membership message stream (reconnects, missed heartbeats).
pub const STREAM_ERRORS: &str = "ringside_reducer_stream_errors_total";
/// Rebalance events, by how this reducer got them stored (`published`, `duplicate`,
/// `adopted`, `verified`, `replayed`).
pub const REBALANCES: &str = "ringside_reducer_rebalances_total";
/// Single-writer conflicts: another reducer stored the epoch first.
pub const CONFLICTS: &str = "ringside_reducer_conflicts_total";
/// Stored rebalance events that disagree with this reducer's fold (a determinism bug).
pub const DIVERGENCES: &str = "ringside_reducer_divergences_total";
/// Stored messages on the rebalance subject that are not a rebalance event of this
/// ring's chain (undecodable, another ring's, another kind, an epoch out of turn):
/// skipped.
pub const INVALID_STORED: &str = "ringside_reducer_invalid_rebalance_messages_total";
/// Snapshots written to the KV bucket.
pub const SNAPSHOTS_WRITTEN: &str = "ringside_reducer_snapshots_written_total";
/// Snapshot writes that failed (retried at the next snapshot).
pub const SNAPSHOT_FAILURES: &str = "ringside_reducer_snapshot_failures_total";
/// Epoch of the last stored rebalance event folded.
pub const EPOCH: &str = "ringside_reducer_epoch";
/// Stream sequence of the last membership event folded.
pub const MEMBERSHIP_SEQUENCE: &str = "ringside_reducer_membership_sequence";
/// Stream sequence of the last stored rebalance event.
pub const REBALANCE_SEQUENCE: &str = "ringside_reducer_rebalance_sequence";
/// Membership events in the stream not folded yet.
pub const LAG: &str = "ringside_reducer_lag_events";
/// First membership sequence folded by this process (snapshot's sequence + 1).
pub const START_SEQUENCE: &str = "ringside_reducer_start_sequence";
/// Epoch of the snapshot this process started from (0: none).
pub const START_EPOCH: &str = "ringside_reducer_start_epoch";
/// 1 once caught up with the stream (serving), else 0.
pub const READY: &str = "ringside_reducer_ready";
/// Seconds since the newest snapshot this process loaded or wrote was taken.
pub const SNAPSHOT_AGE: &str = "ringside_reducer_snapshot_age_seconds";
/// Open `WatchRing` streams.
pub const WATCHERS: &str = "ringside_reducer_watchers";
/// `WatchRing` streams closed because the client fell behind.
pub const WATCHERS_LAGGED: &str = "ringside_reducer_watchers_lagged_total";
/// Time to fold one membership event and store its rebalance event.
pub const EVENT_SECONDS: &str = "ringside_reducer_event_seconds";
/// Of [`EVENT_SECONDS`], the fold alone (`RingLedger::apply` or `advance`): the rest
/// is storing the epoch and serving it.
pub const FOLD_SECONDS: &str = "ringside_reducer_fold_seconds";

/// Every metric name, in exposition order.
pub const NAMES: [&str; 23] = [
    MEMBERSHIP_EVENTS,
    MALFORMED,
    DEAD_LETTERED,
    DEAD_LETTER_FAILED,
    STREAM_ERRORS,
    REBALANCES,
    CONFLICTS,
    DIVERGENCES,
    INVALID_STORED,
    SNAPSHOTS_WRITTEN,
    SNAPSHOT_FAILURES,
    EPOCH,
    MEMBERSHIP_SEQUENCE,
    REBALANCE_SEQUENCE,
    LAG,
    START_SEQUENCE,
    START_EPOCH,
    READY,
    SNAPSHOT_AGE,
    WATCHERS,
    WATCHERS_LAGGED,
    EVENT_SECONDS,
    FOLD_SECONDS,
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
    const ALL: [FoldOutcome; 4] = [
        Self::Rebalanced,
        Self::Unchanged,
        Self::Rejected,
        Self::AlreadyFolded,
    ];

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
    const ALL: [StoredHow; 5] = [
        Self::Published,
        Self::Duplicate,
        Self::Adopted,
        Self::Verified,
        Self::Replayed,
    ];

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

/// Upper bounds of the histogram buckets, in microseconds.
const BUCKETS_MICROS: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    5_000_000,
];

/// A Prometheus histogram of durations, with buckets from 50 µs to 5 s. Each
/// observation counts in one bucket, the first whose bound it does not pass (the last
/// one: above all bounds); the cumulative counts are summed when exposed. So an
/// observation is two atomic adds (its bucket, the sum), not one per bucket it is
/// under: the fold loop observes twice per membership event.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        bump(&self.buckets[BUCKETS_MICROS.partition_point(|&bound| bound < micros)]);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Runs `work` and records how long it took.
    pub fn time<R>(&self, work: impl FnOnce() -> R) -> R {
        let started = std::time::Instant::now();
        let result = work();
        self.observe(started.elapsed());
        result
    }

    /// The exposition samples: cumulative buckets, `+Inf`, sum and count.
    fn samples(&self) -> Vec<(String, String)> {
        let mut count = 0;
        let mut samples: Vec<(String, String)> = self
            .buckets
            .iter()
            .zip(BUCKETS_MICROS)
            .map(|(bucket, bound)| {
                count += get(bucket);
                (
                    format!("_bucket{{le=\"{}\"}}", bound as f64 / 1e6),
                    count.to_string(),
                )
            })
            .collect();
        count += self.buckets.last().map_or(0, get);
        samples.push(("_bucket{le=\"+Inf\"}".into(), count.to_string()));
        samples.push((
            "_sum".into(),
            format!("{}", get(&self.sum_micros) as f64 / 1e6),
        ));
        samples.push(("_count".into(), count.to_string()));
        samples
    }
}

/// The live values. Shared (`Arc`) by the fold loop, the gRPC service and `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    membership: [AtomicU64; FoldOutcome::ALL.len()],
    rebalances: [AtomicU64; StoredHow::ALL.len()],
    /// See [`CONFLICTS`].
    pub conflicts: AtomicU64,
    /// See [`DIVERGENCES`].
    pub divergences: AtomicU64,
    /// See [`INVALID_STORED`].
    pub invalid_stored: AtomicU64,
    /// See [`SNAPSHOTS_WRITTEN`].
    pub snapshots_written: AtomicU64,
    /// See [`SNAPSHOT_FAILURES`].
    pub snapshot_failures: AtomicU64,
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
    /// See [`READY`].
    pub ready: AtomicU64,
    /// Unix time in milliseconds of the newest snapshot loaded or written (0: none).
    pub snapshot_taken_ms: AtomicU64,
    /// See [`WATCHERS`].
    pub watchers: AtomicU64,
    /// See [`WATCHERS_LAGGED`].
    pub watchers_lagged: AtomicU64,
    /// See [`EVENT_SECONDS`].
    pub event: Histogram,
    /// See [`FOLD_SECONDS`].
    pub fold: Histogram,
    consumer: OnceLock<Arc<ConsumerStats>>,
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Adds one to a counter.
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
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

impl Metrics {
    /// Counts one folded membership event.
    pub fn folded(&self, outcome: FoldOutcome) {
        bump(&self.membership[outcome as usize]);
    }

    /// Folded membership events with this outcome.
    pub fn folded_count(&self, outcome: FoldOutcome) -> u64 {
        get(&self.membership[outcome as usize])
    }

    /// Counts one stored rebalance event.
    pub fn stored(&self, how: StoredHow) {
        bump(&self.rebalances[how as usize]);
    }

    /// Stored rebalance events counted with this label.
    pub fn stored_count(&self, how: StoredHow) -> u64 {
        get(&self.rebalances[how as usize])
    }

    /// Attaches the membership consumer's counters (malformed, dead-lettered, ...).
    pub fn attach_consumer(&self, stats: Arc<ConsumerStats>) {
        // Set once per process: the consumer (and its counters) outlives every restart
        // of the consume loop.
        let _ = self.consumer.set(stats);
    }

    /// The Prometheus text exposition of every metric, `now` giving the snapshot age.
    pub fn render(&self, now: SystemTime) -> String {
        let mut out = String::with_capacity(4096);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let plain = |v: u64| vec![(String::new(), v.to_string())];

        family(
            MEMBERSHIP_EVENTS,
            "counter",
            "Membership events folded, by outcome.",
            &FoldOutcome::ALL.map(|o| {
                (
                    format!("{{outcome=\"{}\"}}", o.label()),
                    self.folded_count(o).to_string(),
                )
            }),
        );
        let consumer = self
            .consumer
            .get()
            .map(|s| s.snapshot())
            .unwrap_or_default();
        family(
            MALFORMED,
            "counter",
            "Membership messages that did not decode (dead-lettered and skipped).",
            &plain(consumer.decode_failed),
        );
        family(
            DEAD_LETTERED,
            "counter",
            "Copies stored on the dead-letter subject.",
            &plain(consumer.dead_lettered),
        );
        family(
            DEAD_LETTER_FAILED,
            "counter",
            "Dead-letter copies that could not be stored.",
            &plain(consumer.deadletter_failed),
        );
        family(
            STREAM_ERRORS,
            "counter",
            "Errors of the membership message stream (reconnects, missed heartbeats).",
            &plain(consumer.stream_errors),
        );
        family(
            REBALANCES,
            "counter",
            "Rebalance events stored, by how.",
            &StoredHow::ALL.map(|h| {
                (
                    format!("{{how=\"{}\"}}", h.label()),
                    self.stored_count(h).to_string(),
                )
            }),
        );
        family(
            CONFLICTS,
            "counter",
            "Single-writer conflicts: another reducer stored the epoch first.",
            &plain(get(&self.conflicts)),
        );
        family(
            DIVERGENCES,
            "counter",
            "Stored rebalance events that disagree with this fold (determinism bug).",
            &plain(get(&self.divergences)),
        );
        family(
            INVALID_STORED,
            "counter",
            "Stored messages on the rebalance subject that are not an epoch of this ring (skipped).",
            &plain(get(&self.invalid_stored)),
        );
        family(
            SNAPSHOTS_WRITTEN,
            "counter",
            "Snapshots written to the KV bucket.",
            &plain(get(&self.snapshots_written)),
        );
        family(
            SNAPSHOT_FAILURES,
            "counter",
            "Snapshot writes that failed.",
            &plain(get(&self.snapshot_failures)),
        );
        family(
            EPOCH,
            "gauge",
            "Epoch of the last stored rebalance event folded.",
            &plain(get(&self.epoch)),
        );
        family(
            MEMBERSHIP_SEQUENCE,
            "gauge",
            "Stream sequence of the last membership event folded.",
            &plain(get(&self.membership_sequence)),
        );
        family(
            REBALANCE_SEQUENCE,
            "gauge",
            "Stream sequence of the last stored rebalance event.",
            &plain(get(&self.rebalance_sequence)),
        );
        family(
            LAG,
            "gauge",
            "Membership events in the stream not folded yet.",
            &plain(get(&self.lag)),
        );
        family(
            START_SEQUENCE,
            "gauge",
            "First membership sequence folded by this process.",
            &plain(get(&self.start_sequence)),
        );
        family(
            START_EPOCH,
            "gauge",
            "Epoch of the snapshot this process started from (0: none).",
            &plain(get(&self.start_epoch)),
        );
        family(
            READY,
            "gauge",
            "1 once caught up with the stream and serving.",
            &plain(get(&self.ready)),
        );
        let taken = get(&self.snapshot_taken_ms);
        let age = if taken == 0 {
            Vec::new()
        } else {
            let ms = unix_millis(now).saturating_sub(taken);
            vec![(String::new(), format!("{:.3}", ms as f64 / 1000.0))]
        };
        family(
            SNAPSHOT_AGE,
            "gauge",
            "Seconds since the newest snapshot loaded or written was taken (absent: none).",
            &age,
        );
        family(
            WATCHERS,
            "gauge",
            "Open WatchRing streams.",
            &plain(get(&self.watchers)),
        );
        family(
            WATCHERS_LAGGED,
            "counter",
            "WatchRing streams closed because the client fell behind.",
            &plain(get(&self.watchers_lagged)),
        );
        family(
            EVENT_SECONDS,
            "histogram",
            "Time to fold one membership event and store its rebalance event.",
            &self.event.samples(),
        );
        family(
            FOLD_SECONDS,
            "histogram",
            "Of the event time, the fold alone.",
            &self.fold.samples(),
        );
        out
    }
}

/// Reads one sample's value from an exposition (tests, benchmarks, `ringside up`):
/// `name` with its label part, e.g. `ringside_reducer_rebalances_total{how="adopted"}`.
pub fn sample(exposition: &str, name_and_labels: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(name_and_labels)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lists_every_family_once_with_values() {
        let m = Metrics::default();
        m.folded(FoldOutcome::Rebalanced);
        m.folded(FoldOutcome::Rebalanced);
        m.folded(FoldOutcome::Rejected);
        m.stored(StoredHow::Adopted);
        set(&m.epoch, 41);
        m.event.observe(Duration::from_micros(700));
        m.event.observe(Duration::from_millis(3));
        m.fold.observe(Duration::from_micros(80));
        let text = m.render(SystemTime::now());
        let types: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap_or_default())
            .collect();
        assert_eq!(types, NAMES, "{text}");
        assert_eq!(
            sample(
                &text,
                &format!("{MEMBERSHIP_EVENTS}{{outcome=\"rebalanced\"}}")
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                &format!("{MEMBERSHIP_EVENTS}{{outcome=\"rejected\"}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, &format!("{REBALANCES}{{how=\"adopted\"}}")),
            Some(1.0)
        );
        assert_eq!(sample(&text, EPOCH), Some(41.0));
        // Cumulative buckets: 700 us and 3 ms events, one 80 us fold.
        for (name, le, expected) in [
            (EVENT_SECONDS, "0.0005", 0.0),
            (EVENT_SECONDS, "0.001", 1.0),
            (EVENT_SECONDS, "+Inf", 2.0),
            (FOLD_SECONDS, "0.00005", 0.0),
            (FOLD_SECONDS, "0.0001", 1.0),
            (FOLD_SECONDS, "+Inf", 1.0),
        ] {
            let bucket = format!("{name}_bucket{{le=\"{le}\"}}");
            assert_eq!(sample(&text, &bucket), Some(expected), "{bucket}");
        }
        assert_eq!(sample(&text, &format!("{EVENT_SECONDS}_count")), Some(2.0));
        assert_eq!(sample(&text, &format!("{FOLD_SECONDS}_sum")), Some(0.00008));
        assert_eq!(sample(&text, &format!("{FOLD_SECONDS}_count")), Some(1.0));
        // No snapshot yet: the age has no sample rather than a made-up value.
        assert_eq!(sample(&text, SNAPSHOT_AGE), None);
    }

    #[test]
    fn timed_work_is_observed_once_with_its_duration() {
        let h = Histogram::default();
        let out = h.time(|| {
            std::thread::sleep(Duration::from_millis(3));
            7
        });
        assert_eq!(out, 7);
        let took = get(&h.sum_micros);
        assert!(took >= 3_000, "{took}");
        // Counted once, in the first bucket whose bound it does not pass (at least
        // 3 ms); the exposition makes that every bucket from there on.
        let first = BUCKETS_MICROS.iter().position(|&bound| bound >= took);
        for (i, bucket) in h.buckets.iter().enumerate() {
            assert_eq!(get(bucket), u64::from(Some(i) == first), "bucket {i}");
        }
        let samples = h.samples();
        for (i, bound) in BUCKETS_MICROS.iter().enumerate() {
            let expected = u64::from(first.is_some_and(|f| i >= f));
            assert_eq!(samples[i].1, expected.to_string(), "le {bound} us");
        }
        assert_eq!(samples[BUCKETS_MICROS.len()].1, "1", "+Inf");
    }

    #[test]
    fn durations_past_every_bound_count_only_in_the_total() {
        let h = Histogram::default();
        h.observe(Duration::from_secs(6));
        h.observe(Duration::from_micros(50));
        let samples = h.samples();
        let value = |name: &str| {
            samples
                .iter()
                .find(|s| s.0 == name)
                .map(|s| s.1.clone())
                .unwrap_or_default()
        };
        assert_eq!(value("_bucket{le=\"0.00005\"}"), "1");
        assert_eq!(value("_bucket{le=\"5\"}"), "1");
        assert_eq!(value("_bucket{le=\"+Inf\"}"), "2");
        assert_eq!(value("_count"), "2");
    }

    #[test]
    fn snapshot_age_counts_from_taken_at() {
        let m = Metrics::default();
        let now = SystemTime::now();
        set(
            &m.snapshot_taken_ms,
            unix_millis(now - Duration::from_secs(90)),
        );
        let age = sample(&m.render(now), SNAPSHOT_AGE).unwrap();
        assert!((age - 90.0).abs() < 0.01, "{age}");
    }
}
