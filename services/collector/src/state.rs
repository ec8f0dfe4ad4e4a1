//! What the collector knows: each node's last load report, the ring's figures, the
//! counters of the events it saw. The consume loops write it; the metrics page reads it
//! at each scrape.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::metrics::Histogram;
use ringside_events::pb;
use ringside_events::sketch::Sketch;
use ringside_ring::Ring;

/// A node's last report.
#[derive(Clone, Debug)]
pub struct Reported {
    /// The report.
    pub report: pb::NodeLoadReported,
    /// When it arrived.
    pub at: Instant,
    /// Its client-IP sketch, if it carried one.
    pub sketch: Option<Sketch>,
}

impl Reported {
    /// Requests per second over the report's window.
    pub fn requests_per_second(&self) -> f64 {
        let window = self
            .report
            .window
            .as_ref()
            .map_or(0.0, |w| w.seconds as f64 + f64::from(w.nanos) / 1e9);
        if window > 0.0 {
            self.report.requests as f64 / window
        } else {
            0.0
        }
    }

    /// The `pod` and `namespace` labels: the report's in Kubernetes; locally the node
    /// id and `local`, so every per-node series has both.
    pub fn pod_and_namespace(&self) -> (String, String) {
        let r = &self.report;
        let pod = if r.pod.is_empty() { &r.node } else { &r.pod };
        let namespace = if r.namespace.is_empty() {
            "local"
        } else {
            &r.namespace
        };
        (pod.clone(), namespace.to_owned())
    }
}

/// The ring's figures at its current epoch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RingFigures {
    /// The epoch.
    pub epoch: u64,
    /// Members.
    pub members: usize,
    /// Each member's share of the ring.
    pub shares: Vec<(String, f64)>,
    /// Peak over mean share per unit of weight (`None`: empty ring).
    pub imbalance: Option<f64>,
}

/// The figures of the last rebalance.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LastRebalance {
    /// Fraction of the key space that moved.
    pub moved_fraction: f64,
    /// That over the ideal k/n (`None`: the ideal was 0).
    pub moved_over_ideal: Option<f64>,
}

/// The last scale decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LastScale {
    /// Replicas when it was decided.
    pub current: u32,
    /// Replicas decided.
    pub desired: u32,
}

#[derive(Debug, Default)]
struct Inner {
    nodes: BTreeMap<String, Reported>,
    ring: Option<RingFigures>,
    last_rebalance: Option<LastRebalance>,
    last_scale: Option<LastScale>,
    /// The newest stored time of any event seen.
    newest_event: Option<SystemTime>,
}

/// The collector's state.
#[derive(Debug)]
pub struct State {
    inner: Mutex<Inner>,
    /// Silence after which a node leaves the series.
    pub stale_after: Duration,
    /// Busy CPU threshold, in cores.
    pub cpu_threshold: f64,
    /// Rebalances seen.
    pub rebalances: AtomicU64,
    /// Keys handed off, summed over `KeysHandedOff` events.
    pub keys_handed_off: AtomicU64,
    /// Where handoff durations go, once metrics are registered.
    handoff_seconds: OnceLock<Histogram<f64>>,
    /// Scale decisions seen.
    pub scale_decisions: AtomicU64,
    /// Load reports taken.
    pub reports_accepted: AtomicU64,
    /// Messages on the load subjects that were not a load report of a node.
    pub reports_refused: AtomicU64,
}

impl State {
    /// Empty state.
    pub fn new(stale_after: Duration, cpu_threshold: f64) -> Self {
        Self {
            inner: Mutex::default(),
            stale_after,
            cpu_threshold,
            rebalances: AtomicU64::new(0),
            keys_handed_off: AtomicU64::new(0),
            handoff_seconds: OnceLock::new(),
            scale_decisions: AtomicU64::new(0),
            reports_accepted: AtomicU64::new(0),
            reports_refused: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes when an event was stored (for the lag).
    pub fn event_at(&self, stored: SystemTime) {
        let mut inner = self.lock();
        if inner.newest_event.is_none_or(|t| stored > t) {
            inner.newest_event = Some(stored);
        }
    }

    /// Takes a node's report, received at `at`.
    pub fn report(&self, report: pb::NodeLoadReported, at: Instant) {
        let sketch = Sketch::from_bytes(&report.client_ip_sketch).ok();
        self.reports_accepted.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .nodes
            .insert(report.node.clone(), Reported { report, at, sketch });
    }

    /// `read` of each node heard from within [`State::stale_after`], in node order;
    /// the others are forgotten.
    pub fn each_live<T>(&self, now: Instant, mut read: impl FnMut(&Reported) -> T) -> Vec<T> {
        let mut inner = self.lock();
        let stale_after = self.stale_after;
        inner
            .nodes
            .retain(|_, r| now.saturating_duration_since(r.at) < stale_after);
        inner.nodes.values().map(&mut read).collect()
    }

    /// The distinct client IPs of the whole ring: the union of the live nodes'
    /// sketches (`None` while no node sends one).
    pub fn ring_client_ips(&self, now: Instant) -> Option<u64> {
        let mut union: Option<Sketch> = None;
        self.each_live(now, |reported| {
            if let Some(sketch) = &reported.sketch {
                union.get_or_insert_with(Sketch::default).merge(sketch);
            }
        });
        union.map(|u| u.estimate())
    }

    /// Takes the ring at `epoch`.
    pub fn ring_at(&self, epoch: u64, ring: Option<&Ring>) {
        let figures = figures(epoch, ring);
        self.lock().ring = Some(figures);
    }

    /// The ring's figures, once known.
    pub fn ring_figures(&self) -> Option<RingFigures> {
        self.lock().ring.clone()
    }

    /// Takes a rebalance event.
    pub fn rebalanced(&self, event: &pb::RingRebalanced) {
        self.rebalances.fetch_add(1, Ordering::Relaxed);
        let moved_over_ideal =
            (event.ideal_fraction > 0.0).then(|| event.moved_fraction / event.ideal_fraction);
        self.lock().last_rebalance = Some(LastRebalance {
            moved_fraction: event.moved_fraction,
            moved_over_ideal,
        });
    }

    /// The last rebalance's figures, once one was seen.
    pub fn last_rebalance(&self) -> Option<LastRebalance> {
        self.lock().last_rebalance
    }

    /// Records each handoff's duration in `histogram` from now on.
    pub fn record_handoffs_in(&self, histogram: Histogram<f64>) {
        // Set once, by the one registration; a second would record twice.
        let _ = self.handoff_seconds.set(histogram);
    }

    /// Takes a handoff: its keys and its duration.
    pub fn handed_off(&self, handoff: &pb::KeysHandedOff) {
        self.keys_handed_off
            .fetch_add(handoff.count, Ordering::Relaxed);
        if let (Some(histogram), Some(d)) = (self.handoff_seconds.get(), &handoff.duration) {
            let seconds = d.seconds.max(0) as f64 + f64::from(d.nanos.max(0)) / 1e9;
            histogram.record(seconds, &[]);
        }
    }

    /// Takes a scale decision.
    pub fn scaled(&self, decision: &pb::ScaleDecided) {
        self.scale_decisions.fetch_add(1, Ordering::Relaxed);
        self.lock().last_scale = Some(LastScale {
            current: decision.current_replicas,
            desired: decision.desired_replicas,
        });
    }

    /// The last scale decision, once one was seen.
    pub fn last_scale(&self) -> Option<LastScale> {
        self.lock().last_scale
    }

    /// Seconds from the newest stored event to `now` (`None` before any).
    pub fn event_lag(&self, now: SystemTime) -> Option<f64> {
        let newest = self.lock().newest_event?;
        Some(now.duration_since(newest).unwrap_or_default().as_secs_f64())
    }
}

/// Shares, members and imbalance of `ring` (`None`: no ring yet) at `epoch`.
pub fn figures(epoch: u64, ring: Option<&Ring>) -> RingFigures {
    let Some(ring) = ring else {
        return RingFigures {
            epoch,
            ..RingFigures::default()
        };
    };
    RingFigures {
        epoch,
        members: ring.members().count(),
        shares: ring
            .ownership()
            .into_iter()
            .map(|s| (s.id, s.fraction))
            .collect(),
        imbalance: ring.imbalance(),
    }
}
