//! The state machine: the HPA controller's `reconcileAutoscaler` for one workload, with
//! the recommendation history of its stabilization windows and the scale events its
//! policies count. Time is whatever the caller says it is.

use std::time::{Duration, SystemTime};

use crate::config::{AutoscalerConfig, ConfigError, Direction, PolicyKind, SelectPolicy};
use crate::decision::{Decision, Limit, Outcome, reason};
use crate::metric::{MetricOutcome, Tolerance, evaluate};
use crate::observation::Observation;

/// The HPA's algorithm for one workload, fed one [`Observation`] per evaluation.
///
/// Every decision that changes the replicas is taken as carried out: the policies
/// count it from then on, as the HPA counts a scale it made.
#[derive(Clone, Debug)]
pub struct Autoscaler {
    config: AutoscalerConfig,
    /// Whether the first evaluation happened (it records the replicas found as a
    /// recommendation, so a restarted autoscaler does not scale down at once).
    started: bool,
    /// Unstabilized recommendations within the longer window.
    recommendations: Vec<(SystemTime, u32)>,
    /// Replicas added, by time, within the longest policy period.
    scale_ups: Vec<(SystemTime, u32)>,
    /// Replicas removed, by time, within the longest policy period.
    scale_downs: Vec<(SystemTime, u32)>,
}

impl Autoscaler {
    /// An autoscaler with no history.
    pub fn new(config: AutoscalerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            started: false,
            recommendations: Vec::new(),
            scale_ups: Vec::new(),
            scale_downs: Vec::new(),
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &AutoscalerConfig {
        &self.config
    }

    /// The replicas to run at `now`, seeing `observation`.
    ///
    /// 1. No replica: scaling is off. Above the maximum or below the minimum: straight
    ///    to the bound.
    /// 2. Each metric proposes (see [`crate::MetricOutcome`]); the largest proposal
    ///    wins. If none can, or some cannot and the others would scale down: no change.
    /// 3. Stabilization: not above the highest recommendation of the scale-down
    ///    window, not below the lowest of the scale-up window (nor past the current
    ///    replicas). The proposal joins the history.
    /// 4. Limits: a scale-up up to the policies' limit and the maximum, a scale-down
    ///    down to the policies' limit and the minimum.
    pub fn decide(&mut self, now: SystemTime, observation: &Observation) -> Decision {
        let current = observation.current_replicas;
        if !self.started {
            self.started = true;
            self.recommendations.push((now, current));
        }
        let (min, max) = (self.config.min_replicas, self.config.max_replicas);
        let mut metrics = Vec::new();
        let (outcome, desired) = if current == 0 {
            (Outcome::ScalingDisabled, 0)
        } else if current > max {
            (Outcome::AboveMax, max)
        } else if current < min {
            (Outcome::BelowMin, min)
        } else {
            let tolerance = Tolerance {
                up: self.config.behavior.scale_up.tolerance,
                down: self.config.behavior.scale_down.tolerance,
            };
            metrics = self
                .config
                .metrics
                .iter()
                .map(|spec| evaluate(spec, observation, tolerance))
                .collect();
            self.decide_on_metrics(now, current, &metrics)
        };
        self.record_scale(now, current, desired);
        let reason = reason(&self.config, current, desired, &metrics, outcome);
        Decision {
            current_replicas: current,
            desired_replicas: desired,
            metrics,
            outcome,
            reason,
        }
    }

    fn decide_on_metrics(
        &mut self,
        now: SystemTime,
        current: u32,
        metrics: &[MetricOutcome],
    ) -> (Outcome, u32) {
        let mut governing: Option<(usize, u32)> = None;
        for (i, metric) in metrics.iter().enumerate() {
            if let Ok(proposal) = &metric.result
                && governing.is_none_or(|(_, largest)| proposal.replicas > largest)
            {
                governing = Some((i, proposal.replicas));
            }
        }
        let unavailable = metrics.iter().any(|metric| metric.result.is_err());
        // A metric that cannot be read may hide a reason to stay: with one, only a
        // scale-up or no change goes through.
        let Some((governing, proposal)) = governing.filter(|(_, p)| !(unavailable && *p < current))
        else {
            return (Outcome::MetricsUnavailable, current);
        };
        let stabilized = self.stabilize(now, current, proposal);
        let (desired, limit) = self.limit(now, current, stabilized);
        let outcome = Outcome::Scaled {
            governing,
            proposal,
            stabilized,
            limit,
        };
        (outcome, desired)
    }

    /// Step 3: bounds `proposal` by the recommendations of the windows, and records it.
    fn stabilize(&mut self, now: SystemTime, current: u32, proposal: u32) -> u32 {
        let behavior = &self.config.behavior;
        let up_window = secs(behavior.scale_up.stabilization_window_secs);
        let down_window = secs(behavior.scale_down.stabilization_window_secs);
        let (mut lowest, mut highest) = (proposal, proposal);
        for &(at, recommendation) in &self.recommendations {
            let age = age(now, at);
            if age < up_window {
                lowest = lowest.min(recommendation);
            }
            if age < down_window {
                highest = highest.max(recommendation);
            }
        }
        let keep = up_window.max(down_window);
        self.recommendations.retain(|&(at, _)| age(now, at) < keep);
        self.recommendations.push((now, proposal));
        current.max(lowest).min(highest)
    }

    /// Step 4: what the policies and the bounds allow of `stabilized`.
    fn limit(&self, now: SystemTime, current: u32, stabilized: u32) -> (u32, Option<Limit>) {
        let (min, max) = (self.config.min_replicas, self.config.max_replicas);
        if stabilized > current {
            let policy = self.policy_limit(now, current, Direction::Up).max(current);
            if max > policy {
                if stabilized > policy {
                    return (policy, Some(Limit::Policy(Direction::Up)));
                }
            } else if stabilized > max {
                return (max, Some(Limit::MaxReplicas));
            }
        } else if stabilized < current {
            let policy = self
                .policy_limit(now, current, Direction::Down)
                .min(current);
            if min < policy {
                if stabilized < policy {
                    return (policy, Some(Limit::Policy(Direction::Down)));
                }
            } else if stabilized < min {
                return (min, Some(Limit::MinReplicas));
            }
        }
        (stabilized, None)
    }

    /// The most (scaling up) or fewest (down) replicas the policies allow now: each
    /// policy allows a change from the replicas at the start of its period.
    fn policy_limit(&self, now: SystemTime, current: u32, direction: Direction) -> u32 {
        let rules = self.config.behavior.rules(direction);
        let proposals = rules.policies.iter().map(|policy| {
            let period = secs(policy.period_secs);
            let start = i64::from(current) - changed(&self.scale_ups, now, period)
                + changed(&self.scale_downs, now, period);
            let value = i64::from(policy.value);
            let fraction = f64::from(policy.value) / 100.0;
            match (direction, policy.kind) {
                (Direction::Up, PolicyKind::Pods) => start + value,
                // Rounded up, or a small workload could never grow by a percentage.
                (Direction::Up, PolicyKind::Percent) => {
                    (start as f64 * (1.0 + fraction)).ceil() as i64
                }
                (Direction::Down, PolicyKind::Pods) => start - value,
                // Truncated, as the HPA's conversion to an integer does.
                (Direction::Down, PolicyKind::Percent) => (start as f64 * (1.0 - fraction)) as i64,
            }
        });
        // The largest change: the highest count up, the lowest down.
        let limit = match (rules.select_policy, direction) {
            (SelectPolicy::Disabled, _) => Some(i64::from(current)),
            (SelectPolicy::Max, Direction::Up) | (SelectPolicy::Min, Direction::Down) => {
                proposals.max()
            }
            (SelectPolicy::Max, Direction::Down) | (SelectPolicy::Min, Direction::Up) => {
                proposals.min()
            }
        };
        // Validation guarantees a policy, so `limit` is there.
        let limit = limit.unwrap_or(i64::from(current));
        u32::try_from(limit.max(0)).unwrap_or(u32::MAX)
    }

    /// Remembers a change for the policies, and forgets what they no longer count.
    fn record_scale(&mut self, now: SystemTime, current: u32, desired: u32) {
        let behavior = &self.config.behavior;
        let longest = secs(
            behavior
                .scale_up
                .longest_period_secs()
                .max(behavior.scale_down.longest_period_secs()),
        );
        for events in [&mut self.scale_ups, &mut self.scale_downs] {
            events.retain(|&(at, _)| age(now, at) < longest);
        }
        if desired > current {
            self.scale_ups.push((now, desired - current));
        } else if desired < current {
            self.scale_downs.push((now, current - desired));
        }
    }
}

fn secs(secs: u32) -> Duration {
    Duration::from_secs(u64::from(secs))
}

/// How long ago `at` was; a time after `now` (a clock set back) is now.
fn age(now: SystemTime, at: SystemTime) -> Duration {
    now.duration_since(at).unwrap_or_default()
}

/// Replicas changed in the last `period`.
fn changed(events: &[(SystemTime, u32)], now: SystemTime, period: Duration) -> i64 {
    events
        .iter()
        .filter(|&&(at, _)| age(now, at) < period)
        .map(|&(_, n)| i64::from(n))
        .sum()
}
