//! What one evaluation decided, and the sentence that says why (the `reason` of a
//! `ScaleDecided` event).

use std::fmt::Write as _;

use crate::config::{AutoscalerConfig, Direction, SelectPolicy};
use crate::metric::{MetricOutcome, Proposal};

/// One evaluation's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The replicas the workload was asked to run.
    pub current_replicas: u32,
    /// The replicas it should run now (equal to the current ones: no change).
    pub desired_replicas: u32,
    /// Each metric's proposal, in the configuration's order (empty when the metrics
    /// were not needed: [`Outcome::ScalingDisabled`], [`Outcome::AboveMax`],
    /// [`Outcome::BelowMin`]).
    pub metrics: Vec<MetricOutcome>,
    /// Which rule decided.
    pub outcome: Outcome,
    /// The decision in one sentence: the change, the metric that set it with its value
    /// and target, and each rule that held it back.
    pub reason: String,
}

impl Decision {
    /// The metric whose proposal set the decision (the largest), if the metrics
    /// decided.
    pub fn governing(&self) -> Option<(&MetricOutcome, &Proposal)> {
        let Outcome::Scaled { governing, .. } = self.outcome else {
            return None;
        };
        let metric = self.metrics.get(governing)?;
        Some((metric, metric.result.as_ref().ok()?))
    }
}

/// Which rule decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The workload runs no replica: autoscaling is off until something else scales it
    /// (the HPA's `ScalingDisabled`).
    ScalingDisabled,
    /// More replicas than the maximum: straight to the maximum.
    AboveMax,
    /// Fewer replicas than the minimum: straight to the minimum.
    BelowMin,
    /// No metric proposes anything, or some do not and the others propose fewer
    /// replicas: no change (the HPA's `FailedComputeMetricsReplicas`).
    MetricsUnavailable,
    /// The metrics decided.
    Scaled {
        /// The index in [`Decision::metrics`] of the metric with the largest proposal
        /// (the first of equals).
        governing: usize,
        /// That proposal.
        proposal: u32,
        /// The proposal after the stabilization windows.
        stabilized: u32,
        /// What limited the stabilized proposal, if anything did.
        limit: Option<Limit>,
    },
}

/// What held a stabilized proposal back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The policies of this direction (or the direction is disabled).
    Policy(Direction),
    /// The maximum replicas.
    MaxReplicas,
    /// The minimum replicas.
    MinReplicas,
}

/// The sentence of a decision.
pub(crate) fn reason(
    config: &AutoscalerConfig,
    current: u32,
    desired: u32,
    metrics: &[MetricOutcome],
    outcome: Outcome,
) -> String {
    let mut text = if desired > current {
        format!("scale up {current} -> {desired}: ")
    } else if desired < current {
        format!("scale down {current} -> {desired}: ")
    } else {
        format!("hold at {current}: ")
    };
    let (min, max) = (config.min_replicas, config.max_replicas);
    match outcome {
        Outcome::ScalingDisabled => {
            text.push_str("the workload runs no replica, autoscaling is off")
        }
        Outcome::AboveMax => {
            let _ = write!(text, "{current} is above the maximum of {max} replicas");
        }
        Outcome::BelowMin => {
            let _ = write!(text, "{current} is below the minimum of {min} replicas");
        }
        Outcome::MetricsUnavailable => {
            let (failed, read): (Vec<_>, Vec<_>) =
                metrics.iter().partition(|metric| metric.result.is_err());
            if read.is_empty() {
                text.push_str("no metric is available");
            } else {
                let _ = write!(
                    text,
                    "{} of {} metrics unavailable and the others propose fewer replicas, which the HPA does not act on",
                    failed.len(),
                    metrics.len()
                );
            }
            for metric in failed.iter().chain(&read) {
                let _ = write!(text, "; {metric}");
            }
        }
        Outcome::Scaled {
            governing,
            proposal,
            stabilized,
            limit,
        } => {
            if let Some(metric) = metrics.get(governing) {
                let _ = write!(text, "{metric}");
            }
            let others = metrics.iter().enumerate().filter(|(i, _)| *i != governing);
            for (_, metric) in others {
                let _ = write!(text, "; {metric}");
            }
            if stabilized != proposal {
                let (which, rules) = if stabilized < proposal {
                    ("lowest", &config.behavior.scale_up)
                } else {
                    ("highest", &config.behavior.scale_down)
                };
                let _ = write!(
                    text,
                    "; stabilized from {proposal} to {stabilized}, the {which} recommendation of the last {} s",
                    rules.stabilization_window_secs
                );
            }
            if let Some(limit) = limit {
                let _ = write!(text, "; limited to {desired} by ");
                text.push_str(&limit_phrase(config, limit));
            }
        }
    }
    text
}

fn limit_phrase(config: &AutoscalerConfig, limit: Limit) -> String {
    match limit {
        Limit::MaxReplicas => format!("the maximum replicas ({})", config.max_replicas),
        Limit::MinReplicas => format!("the minimum replicas ({})", config.min_replicas),
        Limit::Policy(direction) => {
            let rules = config.behavior.rules(direction);
            let policies: Vec<String> = rules.policies.iter().map(ToString::to_string).collect();
            match rules.select_policy {
                SelectPolicy::Disabled => {
                    format!("the {direction} policy: {direction} is disabled")
                }
                SelectPolicy::Max => format!(
                    "the {direction} policy: the larger change of {}",
                    policies.join(" or ")
                ),
                SelectPolicy::Min => format!(
                    "the {direction} policy: the smaller change of {}",
                    policies.join(" or ")
                ),
            }
        }
    }
}
