//! One metric's proposal: the HPA's replica calculator (`replica_calculator.go`), with
//! its tolerance and its conservative handling of pods that have no value or are not
//! ready.
//!
//! For a per-pod metric the ratio is the ready pods' average over the target, and the
//! proposal `ceil(ratio × pods counted)`. When some ready pods have no value, or some
//! pods are not ready and the ratio asks for more, the HPA counts them again, the way
//! that moves least: on a scale-up a missing or unready pod uses nothing, on a
//! scale-down a missing pod uses the target (100 % of its request, or the target if
//! higher, for a utilization target). If the recount is within tolerance, or points the
//! other way, the metric keeps the current replicas.

use std::fmt;

use thiserror::Error;

use crate::config::{MetricSpec, Source, Target};
use crate::observation::{Observation, PodState};

/// The ratios around 1 that change nothing: `1 - down <= ratio <= 1 + up`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tolerance {
    pub(crate) up: f64,
    pub(crate) down: f64,
}

impl Tolerance {
    fn within(self, ratio: f64) -> bool {
        1.0 - self.down <= ratio && ratio <= 1.0 + self.up
    }
}

/// One metric's part in a decision.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricOutcome {
    /// The metric's name.
    pub name: String,
    /// Where it comes from.
    pub source: Source,
    /// What it should be.
    pub target: Target,
    /// What it proposes, or why it proposes nothing.
    pub result: Result<Proposal, MetricError>,
}

/// The replicas one metric asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Proposal {
    /// The value compared with the target: the ready pods' average (per-pod
    /// metrics), the value (`External` with `Value`), or the value per replica
    /// (`External` with `AverageValue`).
    pub value: f64,
    /// The usage ratio: value over target.
    pub ratio: f64,
    /// The replicas proposed.
    pub replicas: u32,
    /// How.
    pub basis: Basis,
}

/// How a metric's proposal was computed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Basis {
    /// The ratio is within tolerance: the current replicas (the pods running, for
    /// `External` with `AverageValue`).
    WithinTolerance,
    /// `ceil(ratio × pods)`: the ready pods with a value (per-pod metrics) or the ready
    /// pods (`Value` targets).
    Ratio {
        /// The pods the ratio was multiplied by.
        pods: u32,
    },
    /// `ceil(value / target)` (`External` with `AverageValue`).
    PerReplica,
    /// Counted again with `missing` pods taken as `missing_as` and `unready` pods
    /// as 0: `ceil(ratio × pods)`.
    Conservative {
        /// Ready pods without a value.
        missing: u32,
        /// What each was taken to use.
        missing_as: f64,
        /// Unready pods, taken to use nothing (on a scale-up only; else 0).
        unready: u32,
        /// The ratio counted again.
        ratio: f64,
        /// The pods it was multiplied by.
        pods: u32,
    },
    /// The same recount came within tolerance or pointed the other way: the current
    /// replicas.
    ConservativeHold {
        /// Ready pods without a value.
        missing: u32,
        /// What each was taken to use.
        missing_as: f64,
        /// Unready pods, taken to use nothing (on a scale-up only; else 0).
        unready: u32,
        /// The ratio counted again.
        ratio: f64,
    },
}

/// Why a metric proposes nothing (the HPA's `FailedGet...Metric`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum MetricError {
    /// Not one value was read.
    #[error("no value was read")]
    NotRead,
    /// The workload has no pods to share the metric over.
    #[error("the workload has no pods")]
    NoPods,
    /// Values were read, but none of a ready pod.
    #[error("no ready pod has a value")]
    NoReadyPodValues,
}

/// The proposal of `spec` for `observation`.
pub(crate) fn evaluate(
    spec: &MetricSpec,
    observation: &Observation,
    tolerance: Tolerance,
) -> MetricOutcome {
    let result = match (spec.source, spec.target) {
        (Source::External, Target::Value(target)) => {
            external_value(spec, observation, target, tolerance)
        }
        (Source::External, _) => {
            external_average(spec, observation, spec.target.amount(), tolerance)
        }
        (Source::Pods | Source::Resource, _) => per_pod(spec, observation, tolerance),
    };
    MetricOutcome {
        name: spec.name.clone(),
        source: spec.source,
        target: spec.target,
        result,
    }
}

/// A usable reading: finite and not negative.
fn usable(value: f64) -> Option<f64> {
    (value.is_finite() && value >= 0.0).then_some(value)
}

fn ceil_replicas(x: f64) -> u32 {
    // `as` saturates: a ratio too large for u32 asks for u32::MAX, which max clamps.
    x.ceil() as u32
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn per_pod(
    spec: &MetricSpec,
    observation: &Observation,
    tolerance: Tolerance,
) -> Result<Proposal, MetricError> {
    if observation.pods.is_empty() {
        return Err(MetricError::NoPods);
    }
    let values = observation
        .pod_values
        .get(&spec.name)
        .ok_or(MetricError::NotRead)?;
    let target = spec.target.amount();
    let (mut sum, mut counted, mut missing, mut unready) = (0.0, 0_u32, 0_u32, 0_u32);
    for (pod, state) in &observation.pods {
        match (state, values.get(pod).copied().and_then(usable)) {
            (PodState::Unready, _) => unready += 1,
            (PodState::Ready, Some(value)) => {
                sum += value;
                counted += 1;
            }
            (PodState::Ready, None) => missing += 1,
        }
    }
    if counted == 0 {
        return Err(MetricError::NoReadyPodValues);
    }
    let value = sum / f64::from(counted);
    let ratio = value / target;
    let current = observation.current_replicas;
    let proposal = |replicas, basis| Proposal {
        value,
        ratio,
        replicas,
        basis,
    };

    // The HPA checks the tolerance after the recount below; a ratio within tolerance
    // keeps the current replicas either way (the recount stays within tolerance or
    // reverses the direction), so it is checked first here.
    if tolerance.within(ratio) {
        return Ok(proposal(current, Basis::WithinTolerance));
    }
    let scale_up_with_unready = unready > 0 && ratio > 1.0;
    if !scale_up_with_unready && missing == 0 {
        let replicas = ceil_replicas(ratio * f64::from(counted));
        return Ok(proposal(replicas, Basis::Ratio { pods: counted }));
    }

    // Count again, conservatively for the direction the ratio points to (it is not 1:
    // 1 is within any tolerance).
    let missing_as = if ratio < 1.0 {
        match spec.target {
            // A pod's whole request, or the target if that is higher.
            Target::Utilization(percent) => f64::from(percent.max(100)),
            _ => target,
        }
    } else {
        0.0
    };
    sum += f64::from(missing) * missing_as;
    let mut pods = counted + missing;
    let unready = if scale_up_with_unready { unready } else { 0 };
    pods += unready;
    let recount = sum / f64::from(pods) / target;
    let replicas = ceil_replicas(recount * f64::from(pods));
    let hold = tolerance.within(recount)
        || (ratio < 1.0 && recount > 1.0)
        || (ratio > 1.0 && recount < 1.0)
        // Fewer pods counted than run can flip the direction of the count itself.
        || (recount < 1.0 && replicas > current)
        || (recount > 1.0 && replicas < current);
    if hold {
        return Ok(proposal(
            current,
            Basis::ConservativeHold {
                missing,
                missing_as,
                unready,
                ratio: recount,
            },
        ));
    }
    Ok(proposal(
        replicas,
        Basis::Conservative {
            missing,
            missing_as,
            unready,
            ratio: recount,
            pods,
        },
    ))
}

fn external_value(
    spec: &MetricSpec,
    observation: &Observation,
    target: f64,
    tolerance: Tolerance,
) -> Result<Proposal, MetricError> {
    let value = observation
        .values
        .get(&spec.name)
        .copied()
        .and_then(usable)
        .ok_or(MetricError::NotRead)?;
    let ratio = value / target;
    if tolerance.within(ratio) {
        return Ok(Proposal {
            value,
            ratio,
            replicas: observation.current_replicas,
            basis: Basis::WithinTolerance,
        });
    }
    if observation.pods.is_empty() {
        return Err(MetricError::NoPods);
    }
    let ready = count(
        observation
            .pods
            .values()
            .filter(|state| **state == PodState::Ready)
            .count(),
    );
    Ok(Proposal {
        value,
        ratio,
        replicas: ceil_replicas(ratio * f64::from(ready)),
        basis: Basis::Ratio { pods: ready },
    })
}

fn external_average(
    spec: &MetricSpec,
    observation: &Observation,
    target: f64,
    tolerance: Tolerance,
) -> Result<Proposal, MetricError> {
    let total = observation
        .values
        .get(&spec.name)
        .copied()
        .and_then(usable)
        .ok_or(MetricError::NotRead)?;
    // The HPA divides by the pods that exist (the scale's status), not by those asked
    // for.
    let running = count(observation.pods.len()).max(1);
    let value = total / f64::from(running);
    let ratio = value / target;
    if !observation.pods.is_empty() && tolerance.within(ratio) {
        return Ok(Proposal {
            value,
            ratio,
            replicas: running,
            basis: Basis::WithinTolerance,
        });
    }
    Ok(Proposal {
        value,
        ratio,
        replicas: ceil_replicas(total / target),
        basis: Basis::PerReplica,
    })
}

/// A number as a person writes it: integers bare, others with at most two decimals.
pub(crate) fn number(x: f64) -> String {
    let text = format!("{x:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

impl fmt::Display for MetricOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.name;
        let proposal = match &self.result {
            Ok(proposal) => proposal,
            Err(error) => return write!(f, "{name} unavailable ({error})"),
        };
        let (value, target) = (number(proposal.value), number(self.target.amount()));
        match (self.source, self.target) {
            (_, Target::Utilization(_)) => {
                write!(f, "{name} {value}% of request (target {target}%)")?;
            }
            (Source::External, Target::Value(_)) => write!(f, "{name} {value} (target {target})")?,
            (Source::External, _) => write!(f, "{name} {value} per replica (target {target})")?,
            _ => write!(f, "{name} {value} per pod (target {target})")?,
        }
        let (ratio, replicas) = (number(proposal.ratio), proposal.replicas);
        match proposal.basis {
            Basis::WithinTolerance => write!(f, ", ratio {ratio} within tolerance: {replicas}"),
            Basis::Ratio { pods } => write!(f, ": ceil({ratio} x {pods}) = {replicas}"),
            Basis::PerReplica => write!(f, ": ceil(total / target) = {replicas}"),
            Basis::Conservative {
                missing,
                missing_as,
                unready,
                ratio: recount,
                pods,
            } => {
                write_assumed(f, missing, missing_as, unready)?;
                write!(
                    f,
                    ", ratio {}: ceil({} x {pods}) = {replicas}",
                    number(recount),
                    number(recount)
                )
            }
            Basis::ConservativeHold {
                missing,
                missing_as,
                unready,
                ratio: recount,
            } => {
                write_assumed(f, missing, missing_as, unready)?;
                write!(
                    f,
                    ", ratio {} within tolerance or reversed: {replicas}",
                    number(recount)
                )
            }
        }
    }
}

fn write_assumed(
    f: &mut fmt::Formatter<'_>,
    missing: u32,
    missing_as: f64,
    unready: u32,
) -> fmt::Result {
    let mut parts = Vec::new();
    if missing > 0 {
        parts.push(format!(
            "{missing} without a value as {}",
            number(missing_as)
        ));
    }
    if unready > 0 {
        parts.push(format!("{unready} unready as 0"));
    }
    write!(f, ", counting {}", parts.join(" and "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_people_write_them() {
        assert_eq!(number(100.0), "100");
        assert_eq!(number(2.5), "2.5");
        assert_eq!(number(1.0 / 3.0), "0.33");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(1.999), "2");
    }
}
