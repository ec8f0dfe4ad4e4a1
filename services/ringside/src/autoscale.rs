//! The local autoscaler of `ringside up`: every period it reads the metrics the
//! Kubernetes HPA scales the node pods on, with the same queries
//! (`ringside_autoscale::shared::local_query`), from `up`'s Prometheus; runs the HPA's
//! algorithm (`ringside_autoscale::Autoscaler`); and when the answer differs from the
//! nodes running, stores a `ScaleDecided` event with every metric's value, target and
//! proposal and the reason. `up` acts on that event as on `ringside scale`'s: the
//! decision is in the history (`tail`, `replay events --type ScaleDecided`) before
//! anything changes.
//!
//! It publishes as the NATS user `collector`, which may publish scale decisions and
//! nothing of the ring's. An evaluation that changes nothing stores nothing (the HPA
//! writes no event either); its reason is logged at DEBUG.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::Args;
use ringside_autoscale::{
    Autoscaler, AutoscalerConfig, Behavior, Decision, Observation, PodState, Source, shared,
};
use ringside_events::{Event, Publisher, RingName, pb};
use tokio::sync::watch;

use crate::services::Target;

/// How long a query may take.
const QUERY_WITHIN: Duration = Duration::from_secs(5);

/// `ringside up`'s autoscaler flags.
#[derive(Debug, Args)]
pub(crate) struct AutoscaleArgs {
    /// Run no autoscaler (it needs Prometheus: --no-prometheus turns it off too).
    #[arg(long)]
    no_autoscale: bool,
    /// Fewest nodes the autoscaler keeps.
    #[arg(long, default_value_t = 1)]
    min_nodes: u32,
    /// Most nodes the autoscaler starts.
    #[arg(long, default_value_t = 10)]
    max_nodes: u32,
    /// How often it evaluates (the HPA's sync period).
    #[arg(long, default_value = "15s", value_parser = crate::up::interval)]
    autoscale_every: Duration,
    /// How long the replicas proposed must all have been lower before it scales down
    /// (the HPA's scale-down stabilization window).
    #[arg(long, default_value = "300s", value_parser = crate::up::interval)]
    scale_down_window: Duration,
}

impl AutoscaleArgs {
    /// Whether to run it.
    pub(crate) fn enabled(&self) -> bool {
        !self.no_autoscale
    }

    /// How often it evaluates.
    pub(crate) fn every(&self) -> Duration {
        self.autoscale_every
    }

    /// What it does, in one line.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} to {} nodes: {} per node at most ({}), CPU {}% of a core; every {} s, \
             scale-down after {} s of lower proposals",
            self.min_nodes,
            self.max_nodes,
            shared::UNIQUE_CLIENT_IPS_TARGET,
            shared::UNIQUE_CLIENT_IPS,
            shared::CPU_TARGET_UTILIZATION,
            self.autoscale_every.as_secs_f64(),
            self.scale_down_window.as_secs_f64(),
        )
    }

    /// The HPA configuration: ringside's metrics and targets
    /// ([`shared::metrics`]), these bounds and this scale-down window, the HPA's
    /// defaults otherwise.
    pub(crate) fn config(&self, most: u32) -> anyhow::Result<AutoscalerConfig> {
        anyhow::ensure!(
            self.max_nodes <= most,
            "--max-nodes {} is more than {most} nodes",
            self.max_nodes
        );
        let mut behavior = Behavior::default();
        behavior.scale_down.stabilization_window_secs =
            u32::try_from(self.scale_down_window.as_secs()).unwrap_or(u32::MAX);
        let config = AutoscalerConfig::new(self.min_nodes, self.max_nodes, shared::metrics())
            .with_behavior(behavior);
        config.validate().context(
            "invalid autoscaler settings (--min-nodes, --max-nodes, --scale-down-window)",
        )?;
        Ok(config)
    }
}

/// The running autoscaler's inputs and outputs.
pub(crate) struct LocalAutoscaler {
    pub(crate) autoscaler: Autoscaler,
    /// `up`'s Prometheus.
    pub(crate) prometheus: SocketAddr,
    /// Publishes as `collector`.
    pub(crate) publisher: Publisher,
    pub(crate) ring: RingName,
    pub(crate) every: Duration,
    /// The nodes `up` runs.
    pub(crate) nodes: watch::Receiver<u32>,
}

impl LocalAutoscaler {
    /// Evaluates every period, forever.
    pub(crate) async fn run(mut self) {
        let mut ticks = tokio::time::interval(self.every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let current = *self.nodes.borrow_and_update();
            let observation = observe(self.prometheus, self.autoscaler.config(), current).await;
            let now = SystemTime::now();
            let decision = self.autoscaler.decide(now, &observation);
            if decision.desired_replicas == current {
                tracing::debug!(reason = %decision.reason, "Autoscaler: no change.");
                continue;
            }
            if let Err(e) = self.publish(&decision, now).await {
                tracing::warn!(error = %format!("{e:#}"), "Autoscaler: could not store a decision; trying again at the next evaluation.");
            }
        }
    }

    async fn publish(&self, decision: &Decision, now: SystemTime) -> anyhow::Result<()> {
        let event = Event::new(self.ring.clone(), scale_decided(decision, now))?
            .with_occurred_at(now)
            .with_producer("ringside-up-autoscaler");
        self.publisher
            .publish(&event)
            .await
            .context("storing a ScaleDecided event")?;
        Ok(())
    }
}

/// What the metrics are now: each of `config`'s metrics by its local query, the
/// nodes `node-1` to `node-<current>` as the pods (ready: `up` starts a node only once
/// it is ready). A query that fails leaves its metric unread, which the algorithm
/// handles as the HPA does (no scale-down on it).
async fn observe(prometheus: SocketAddr, config: &AutoscalerConfig, current: u32) -> Observation {
    let pods: BTreeSet<String> = (1..=current).map(|n| Target::Node(n).name()).collect();
    let mut observation = pods.iter().fold(Observation::new(current), |o, pod| {
        o.pod(pod, PodState::Ready)
    });
    for metric in &config.metrics {
        let Some(query) = shared::local_query(&metric.name) else {
            tracing::warn!(metric = %metric.name, "Autoscaler: no local query for this metric.");
            continue;
        };
        let samples = match ringside_kit::promql::query(prometheus, &query, QUERY_WITHIN).await {
            Ok(samples) => samples,
            Err(e) => {
                tracing::warn!(%query, error = %e, "Autoscaler: a metric could not be read.");
                continue;
            }
        };
        for sample in samples.into_iter().filter(|s| s.value.is_finite()) {
            observation = match metric.source {
                Source::External => observation.value(&metric.name, sample.value),
                Source::Pods | Source::Resource => match sample.labels.get(shared::POD_LABEL) {
                    Some(pod) if pods.contains(pod) => {
                        observation.pod_value(&metric.name, pod, sample.value)
                    }
                    _ => observation,
                },
            };
        }
    }
    observation
}

/// The event of a decision: every metric's part, and the one that set it.
fn scale_decided(decision: &Decision, now: SystemTime) -> pb::ScaleDecided {
    let metrics: Vec<pb::ScaleMetric> = decision
        .metrics
        .iter()
        .map(|m| {
            let (value, proposed_replicas, unavailable) = match &m.result {
                Ok(p) => (p.value, p.replicas, String::new()),
                Err(e) => (0.0, 0, e.to_string()),
            };
            pb::ScaleMetric {
                name: m.name.clone(),
                target_type: m.target.kind().to_owned(),
                value,
                target: m.target.amount(),
                proposed_replicas,
                unavailable,
            }
        })
        .collect();
    let (metric, metric_value, target_value) = match decision.governing() {
        Some((m, p)) => (m.name.clone(), p.value, m.target.amount()),
        None => (String::new(), 0.0, 0.0),
    };
    pb::ScaleDecided {
        current_replicas: decision.current_replicas,
        desired_replicas: decision.desired_replicas,
        metric,
        metric_value,
        target_value,
        evaluated_at: Some(ringside_events::event::timestamp(now)),
        reason: decision.reason.clone(),
        metrics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_becomes_an_event_with_every_metric() {
        let config = AutoscalerConfig::new(1, 10, shared::metrics());
        let mut autoscaler = Autoscaler::new(config).unwrap();
        let seen = Observation::new(1)
            .pod("node-1", PodState::Ready)
            .value(shared::UNIQUE_CLIENT_IPS, 250.0);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let decision = autoscaler.decide(now, &seen);
        let event = scale_decided(&decision, now);
        assert_eq!((event.current_replicas, event.desired_replicas), (1, 3));
        assert_eq!(event.metric, shared::UNIQUE_CLIENT_IPS);
        assert_eq!((event.metric_value, event.target_value), (250.0, 100.0));
        assert_eq!(event.reason, decision.reason);
        assert_eq!(event.metrics.len(), 2);
        assert_eq!(event.metrics[0].proposed_replicas, 3);
        assert_eq!(event.metrics[0].target_type, "AverageValue");
        // No CPU was read: the event says so.
        assert_eq!(event.metrics[1].name, shared::CPU);
        assert_eq!(event.metrics[1].unavailable, "no value was read");
        // It is a valid event.
        Event::new(RingName::new("r").unwrap(), event).unwrap();
    }

    /// The shared names are the collector's series: what the adapter rule and the
    /// local queries read is what the collector exports.
    #[test]
    fn the_shared_names_are_the_collectors_series() {
        use ringside_collector::metrics;
        assert_eq!(
            shared::RING_UNIQUE_CLIENT_IPS,
            metrics::RING_UNIQUE_CLIENT_IPS.name
        );
        assert_eq!(
            shared::NODE_UNIQUE_CLIENT_IPS,
            metrics::NODE_UNIQUE_CLIENT_IPS.name
        );
        assert_eq!(shared::NODE_CPU, metrics::NODE_CPU.name);
    }

    #[test]
    fn bounds_are_checked() {
        let args = |min, max| AutoscaleArgs {
            no_autoscale: false,
            min_nodes: min,
            max_nodes: max,
            autoscale_every: Duration::from_secs(15),
            scale_down_window: Duration::from_secs(300),
        };
        assert!(args(1, 10).config(32).is_ok());
        assert!(args(1, 40).config(32).is_err());
        assert!(args(0, 10).config(32).is_err());
        assert!(args(5, 4).config(32).is_err());
    }
}
