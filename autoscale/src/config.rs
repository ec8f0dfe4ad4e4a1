//! What the autoscaler scales on and how fast it may move: the fields of an
//! `autoscaling/v2` HorizontalPodAutoscaler's `spec` (bar the scale target), with the
//! API server's defaults and validation rules.

use std::fmt;

use thiserror::Error;

/// The HPA's default tolerance: a usage ratio within 10 % of 1 changes nothing.
pub const DEFAULT_TOLERANCE: f64 = 0.1;
/// The HPA's default scale-down stabilization window (the controller's
/// `--horizontal-pod-autoscaler-downscale-stabilization`, 5 minutes).
pub const DEFAULT_SCALE_DOWN_WINDOW_SECS: u32 = 300;
/// The longest stabilization window the API server accepts (one hour).
pub const MAX_WINDOW_SECS: u32 = 3600;
/// The longest policy period the API server accepts (30 minutes).
pub const MAX_PERIOD_SECS: u32 = 1800;

/// Where a metric comes from, as the HPA's `metrics[].type` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `Pods`: a custom metric with one value per pod (prometheus-adapter serves it).
    Pods,
    /// `Resource`: a container resource of each pod (`cpu`, `memory`; metrics-server).
    Resource,
    /// `External`: one value for the whole workload, not tied to its pods.
    External,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pods => "Pods",
            Self::Resource => "Resource",
            Self::External => "External",
        })
    }
}

/// What a metric should be, as the HPA's `target` says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// `AverageValue`: per pod (`Pods`, `Resource`), or the workload's value divided by
    /// its replicas (`External`).
    AverageValue(f64),
    /// `Utilization`: the pods' average use as a percentage of their request
    /// (`Resource` only).
    Utilization(u32),
    /// `Value`: the workload's one value (`External` only).
    Value(f64),
}

impl Target {
    /// The target as a number in the unit of the metric's value.
    pub fn amount(self) -> f64 {
        match self {
            Self::AverageValue(v) | Self::Value(v) => v,
            Self::Utilization(percent) => f64::from(percent),
        }
    }

    /// The HPA's name for the kind of target.
    pub fn kind(self) -> &'static str {
        match self {
            Self::AverageValue(_) => "AverageValue",
            Self::Utilization(_) => "Utilization",
            Self::Value(_) => "Value",
        }
    }
}

/// One metric the autoscaler scales on.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricSpec {
    /// The metric's name: the custom or external metric's name, or the resource's
    /// (`cpu`).
    pub name: String,
    /// Where it comes from.
    pub source: Source,
    /// What it should be.
    pub target: Target,
}

impl MetricSpec {
    /// A `Pods` metric whose per-pod average should be `average`.
    pub fn pods(name: impl Into<String>, average: f64) -> Self {
        Self::new(name, Source::Pods, Target::AverageValue(average))
    }

    /// A `Resource` metric whose average utilization should be `percent` of the
    /// pods' requests.
    pub fn resource_utilization(name: impl Into<String>, percent: u32) -> Self {
        Self::new(name, Source::Resource, Target::Utilization(percent))
    }

    /// An `External` metric whose value should be `value`.
    pub fn external_value(name: impl Into<String>, value: f64) -> Self {
        Self::new(name, Source::External, Target::Value(value))
    }

    /// An `External` metric whose value divided by the replicas should be `average`.
    pub fn external_average(name: impl Into<String>, average: f64) -> Self {
        Self::new(name, Source::External, Target::AverageValue(average))
    }

    fn new(name: impl Into<String>, source: Source, target: Target) -> Self {
        Self {
            name: name.into(),
            source,
            target,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let supported = matches!(
            (self.source, self.target),
            (Source::Pods, Target::AverageValue(_))
                | (
                    Source::Resource,
                    Target::AverageValue(_) | Target::Utilization(_)
                )
                | (Source::External, Target::AverageValue(_) | Target::Value(_))
        );
        if !supported {
            return Err(ConfigError::UnsupportedTarget {
                name: self.name.clone(),
                source_kind: self.source,
                target: self.target.kind(),
            });
        }
        let amount = self.target.amount();
        if !(amount.is_finite() && amount > 0.0) {
            return Err(ConfigError::BadTarget {
                name: self.name.clone(),
                value: amount,
            });
        }
        Ok(())
    }
}

/// Which way the replicas move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// More replicas.
    Up,
    /// Fewer replicas.
    Down,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Up => "scale-up",
            Self::Down => "scale-down",
        })
    }
}

/// How a policy measures a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    /// `Pods`: at most `value` pods per period.
    Pods,
    /// `Percent`: at most `value` % of the replicas at the start of the period.
    Percent,
}

/// One scaling policy (`behavior.scaleUp/scaleDown.policies[]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScalingPolicy {
    /// Pods or percent.
    pub kind: PolicyKind,
    /// How many pods, or what percentage.
    pub value: u32,
    /// The period the change is counted over (`periodSeconds`).
    pub period_secs: u32,
}

impl ScalingPolicy {
    /// At most `value` pods per `period_secs`.
    pub fn pods(value: u32, period_secs: u32) -> Self {
        Self {
            kind: PolicyKind::Pods,
            value,
            period_secs,
        }
    }

    /// At most `value` % per `period_secs`.
    pub fn percent(value: u32, period_secs: u32) -> Self {
        Self {
            kind: PolicyKind::Percent,
            value,
            period_secs,
        }
    }
}

impl fmt::Display for ScalingPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.kind {
            PolicyKind::Pods if self.value == 1 => " pod",
            PolicyKind::Pods => " pods",
            PolicyKind::Percent => "%",
        };
        write!(f, "{}{unit} per {} s", self.value, self.period_secs)
    }
}

/// Which policy wins when there are several (`selectPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectPolicy {
    /// The policy allowing the largest change (the default).
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction at all.
    Disabled,
}

/// How one direction of scaling behaves (`behavior.scaleUp` or `behavior.scaleDown`).
#[derive(Clone, Debug, PartialEq)]
pub struct ScalingRules {
    /// Recommendations of this many seconds back are considered
    /// (`stabilizationWindowSeconds`).
    pub stabilization_window_secs: u32,
    /// Which policy wins.
    pub select_policy: SelectPolicy,
    /// How fast the replicas may change.
    pub policies: Vec<ScalingPolicy>,
    /// A usage ratio this close to 1 does not move the replicas this way
    /// (`tolerance`, Kubernetes 1.33+; 0.1 before).
    pub tolerance: f64,
}

impl ScalingRules {
    /// The HPA's default for scaling up: no window; the larger of doubling and adding
    /// 4 pods, every 15 s.
    pub fn default_scale_up() -> Self {
        Self {
            stabilization_window_secs: 0,
            select_policy: SelectPolicy::Max,
            policies: vec![ScalingPolicy::percent(100, 15), ScalingPolicy::pods(4, 15)],
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    /// The HPA's default for scaling down: a 300 s window; down to any count, every
    /// 15 s.
    pub fn default_scale_down() -> Self {
        Self {
            stabilization_window_secs: DEFAULT_SCALE_DOWN_WINDOW_SECS,
            select_policy: SelectPolicy::Max,
            policies: vec![ScalingPolicy::percent(100, 15)],
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    /// The longest policy period: scale events older than this count no more.
    pub(crate) fn longest_period_secs(&self) -> u32 {
        self.policies
            .iter()
            .map(|p| p.period_secs)
            .max()
            .unwrap_or(0)
    }

    fn validate(&self, direction: Direction) -> Result<(), ConfigError> {
        if self.stabilization_window_secs > MAX_WINDOW_SECS {
            return Err(ConfigError::WindowTooLong {
                direction,
                secs: self.stabilization_window_secs,
            });
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return Err(ConfigError::BadTolerance {
                direction,
                tolerance: self.tolerance,
            });
        }
        if self.policies.is_empty() {
            return Err(ConfigError::NoPolicies { direction });
        }
        for policy in &self.policies {
            if policy.value == 0 {
                return Err(ConfigError::ZeroPolicyValue { direction });
            }
            if !(1..=MAX_PERIOD_SECS).contains(&policy.period_secs) {
                return Err(ConfigError::BadPolicyPeriod {
                    direction,
                    secs: policy.period_secs,
                });
            }
        }
        Ok(())
    }
}

/// Both directions (`behavior`).
#[derive(Clone, Debug, PartialEq)]
pub struct Behavior {
    /// Scaling up.
    pub scale_up: ScalingRules,
    /// Scaling down.
    pub scale_down: ScalingRules,
}

impl Default for Behavior {
    /// The HPA's defaults ([`ScalingRules::default_scale_up`],
    /// [`ScalingRules::default_scale_down`]).
    fn default() -> Self {
        Self {
            scale_up: ScalingRules::default_scale_up(),
            scale_down: ScalingRules::default_scale_down(),
        }
    }
}

impl Behavior {
    /// The rules of one direction.
    pub fn rules(&self, direction: Direction) -> &ScalingRules {
        match direction {
            Direction::Up => &self.scale_up,
            Direction::Down => &self.scale_down,
        }
    }
}

/// Everything the autoscaler is told: the bounds, the metrics, the behavior.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoscalerConfig {
    /// Never fewer replicas (`minReplicas`, at least 1).
    pub min_replicas: u32,
    /// Never more replicas (`maxReplicas`).
    pub max_replicas: u32,
    /// What to scale on; the largest proposal wins.
    pub metrics: Vec<MetricSpec>,
    /// How fast to move.
    pub behavior: Behavior,
}

impl AutoscalerConfig {
    /// Bounds and metrics with the HPA's default behavior.
    pub fn new(min_replicas: u32, max_replicas: u32, metrics: Vec<MetricSpec>) -> Self {
        Self {
            min_replicas,
            max_replicas,
            metrics,
            behavior: Behavior::default(),
        }
    }

    /// The same with another behavior.
    pub fn with_behavior(self, behavior: Behavior) -> Self {
        Self { behavior, ..self }
    }

    /// Checks what the API server checks of an HPA, plus a name used twice.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.min_replicas == 0 {
            return Err(ConfigError::ZeroMinReplicas);
        }
        if self.min_replicas > self.max_replicas {
            return Err(ConfigError::MinAboveMax {
                min: self.min_replicas,
                max: self.max_replicas,
            });
        }
        if self.metrics.is_empty() {
            return Err(ConfigError::NoMetrics);
        }
        for (i, metric) in self.metrics.iter().enumerate() {
            metric.validate()?;
            if self.metrics[..i].iter().any(|m| m.name == metric.name) {
                return Err(ConfigError::DuplicateMetric {
                    name: metric.name.clone(),
                });
            }
        }
        self.behavior.scale_up.validate(Direction::Up)?;
        self.behavior.scale_down.validate(Direction::Down)
    }
}

/// Why a configuration cannot drive an autoscaler.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum ConfigError {
    /// `minReplicas` is 0 (scaling to zero, an alpha HPA feature, is not modelled).
    #[error("min replicas must be at least 1")]
    ZeroMinReplicas,
    /// `minReplicas` above `maxReplicas`.
    #[error("min replicas ({min}) is above max replicas ({max})")]
    MinAboveMax {
        /// The minimum asked for.
        min: u32,
        /// The maximum asked for.
        max: u32,
    },
    /// No metric to scale on.
    #[error("no metric to scale on")]
    NoMetrics,
    /// Two metrics with one name.
    #[error("metric {name} is listed twice")]
    DuplicateMetric {
        /// The name.
        name: String,
    },
    /// A kind of target the HPA does not allow for the metric's source.
    #[error("metric {name}: a {source_kind} metric cannot have a {target} target")]
    UnsupportedTarget {
        /// The metric.
        name: String,
        /// Its source.
        source_kind: Source,
        /// The target's kind.
        target: &'static str,
    },
    /// A target that is not a positive finite number.
    #[error("metric {name}: the target must be a positive number, not {value}")]
    BadTarget {
        /// The metric.
        name: String,
        /// The target given.
        value: f64,
    },
    /// A stabilization window over an hour.
    #[error(
        "{direction}: the stabilization window must be at most {MAX_WINDOW_SECS} s, not {secs} s"
    )]
    WindowTooLong {
        /// Which rules.
        direction: Direction,
        /// The window given.
        secs: u32,
    },
    /// A negative or non-finite tolerance.
    #[error("{direction}: the tolerance must be a number of at least 0, not {tolerance}")]
    BadTolerance {
        /// Which rules.
        direction: Direction,
        /// The tolerance given.
        tolerance: f64,
    },
    /// No policy (use [`SelectPolicy::Disabled`] to turn a direction off).
    #[error("{direction}: at least one policy is needed (select Disabled to turn it off)")]
    NoPolicies {
        /// Which rules.
        direction: Direction,
    },
    /// A policy allowing a change of 0.
    #[error("{direction}: a policy's value must be at least 1")]
    ZeroPolicyValue {
        /// Which rules.
        direction: Direction,
    },
    /// A policy period outside 1 to 1800 s.
    #[error("{direction}: a policy's period must be 1 to {MAX_PERIOD_SECS} s, not {secs} s")]
    BadPolicyPeriod {
        /// Which rules.
        direction: Direction,
        /// The period given.
        secs: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> AutoscalerConfig {
        AutoscalerConfig::new(
            1,
            10,
            vec![
                MetricSpec::pods("ringside_unique_client_ips", 100.0),
                MetricSpec::resource_utilization("cpu", 80),
            ],
        )
    }

    fn with(change: impl FnOnce(&mut AutoscalerConfig)) -> Result<(), ConfigError> {
        let mut config = valid();
        change(&mut config);
        config.validate()
    }

    #[test]
    fn the_defaults_are_valid_and_the_hpas() {
        assert_eq!(valid().validate(), Ok(()));
        let up = ScalingRules::default_scale_up();
        assert_eq!(up.stabilization_window_secs, 0);
        assert_eq!(up.select_policy, SelectPolicy::Max);
        assert_eq!(
            up.policies,
            [ScalingPolicy::percent(100, 15), ScalingPolicy::pods(4, 15)]
        );
        let down = ScalingRules::default_scale_down();
        assert_eq!(down.stabilization_window_secs, 300);
        assert_eq!(down.policies, [ScalingPolicy::percent(100, 15)]);
        assert_eq!((up.tolerance, down.tolerance), (0.1, 0.1));
    }

    #[test]
    fn bounds_are_checked() {
        assert_eq!(
            with(|c| c.min_replicas = 0),
            Err(ConfigError::ZeroMinReplicas)
        );
        assert_eq!(
            with(|c| c.min_replicas = 11),
            Err(ConfigError::MinAboveMax { min: 11, max: 10 })
        );
        assert_eq!(with(|c| c.max_replicas = 1), Ok(()));
    }

    #[test]
    fn metrics_are_checked() {
        assert_eq!(with(|c| c.metrics.clear()), Err(ConfigError::NoMetrics));
        assert_eq!(
            with(|c| c.metrics.push(MetricSpec::pods("cpu", 1.0))),
            Err(ConfigError::DuplicateMetric { name: "cpu".into() })
        );
        assert_eq!(
            with(|c| c.metrics[0].target = Target::Value(5.0)),
            Err(ConfigError::UnsupportedTarget {
                name: "ringside_unique_client_ips".into(),
                source_kind: Source::Pods,
                target: "Value",
            })
        );
        assert!(matches!(
            with(|c| c
                .metrics
                .push(MetricSpec::external_value("queue", f64::NAN))),
            Err(ConfigError::BadTarget { .. })
        ));
        assert_eq!(
            with(|c| c.metrics[1].target = Target::Utilization(0)),
            Err(ConfigError::BadTarget {
                name: "cpu".into(),
                value: 0.0
            })
        );
        assert_eq!(
            with(|c| c.metrics.push(MetricSpec::external_average("queue", 3.0))),
            Ok(())
        );
    }

    #[test]
    fn behavior_is_checked_as_the_api_server_does() {
        assert_eq!(
            with(|c| c.behavior.scale_down.stabilization_window_secs = 3601),
            Err(ConfigError::WindowTooLong {
                direction: Direction::Down,
                secs: 3601
            })
        );
        assert_eq!(
            with(|c| c.behavior.scale_up.stabilization_window_secs = 3600),
            Ok(())
        );
        assert!(matches!(
            with(|c| c.behavior.scale_up.tolerance = -0.1),
            Err(ConfigError::BadTolerance {
                direction: Direction::Up,
                ..
            })
        ));
        assert_eq!(
            with(|c| c.behavior.scale_up.policies.clear()),
            Err(ConfigError::NoPolicies {
                direction: Direction::Up
            })
        );
        assert_eq!(
            with(|c| c.behavior.scale_down.policies[0].value = 0),
            Err(ConfigError::ZeroPolicyValue {
                direction: Direction::Down
            })
        );
        assert_eq!(
            with(|c| c.behavior.scale_down.policies[0].period_secs = 1801),
            Err(ConfigError::BadPolicyPeriod {
                direction: Direction::Down,
                secs: 1801
            })
        );
        assert_eq!(
            with(|c| c.behavior.scale_down.policies[0].period_secs = 0),
            Err(ConfigError::BadPolicyPeriod {
                direction: Direction::Down,
                secs: 0
            })
        );
    }

    #[test]
    fn errors_read_as_sentences() {
        assert_eq!(
            ConfigError::MinAboveMax { min: 5, max: 3 }.to_string(),
            "min replicas (5) is above max replicas (3)"
        );
        assert_eq!(
            ConfigError::BadPolicyPeriod {
                direction: Direction::Up,
                secs: 0
            }
            .to_string(),
            "scale-up: a policy's period must be 1 to 1800 s, not 0 s"
        );
    }
}
