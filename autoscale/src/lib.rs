//! ringside-autoscale: the Kubernetes HorizontalPodAutoscaler's algorithm
//! (`autoscaling/v2`) as a pure state machine, so that ringside's local autoscaler
//! scales its nodes exactly as the HPA scales their pods; and the names both share.
//! `docs/autoscaler.md` is the guide.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use ringside_autoscale::{Autoscaler, AutoscalerConfig, Observation, PodState, shared};
//!
//! let mut autoscaler = Autoscaler::new(AutoscalerConfig::new(1, 10, shared::metrics()))?;
//! // 500 distinct clients of the whole ring, at most 100 per replica: 5 replicas.
//! let seen = Observation::new(2)
//!     .pod("node-0", PodState::Ready)
//!     .pod("node-1", PodState::Ready)
//!     .value(shared::UNIQUE_CLIENT_IPS, 500.0)
//!     .pod_value(shared::CPU, "node-0", 30.0)
//!     .pod_value(shared::CPU, "node-1", 50.0);
//! let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
//! let decision = autoscaler.decide(now, &seen);
//! assert_eq!(decision.desired_replicas, 5);
//! assert_eq!(
//!     decision.reason,
//!     "scale up 2 -> 5: ringside_unique_client_ips 250 per replica (target 100): \
//!      ceil(total / target) = 5; cpu 40% of request (target 80%): ceil(0.5 x 2) = 1"
//! );
//! # Ok::<(), ringside_autoscale::ConfigError>(())
//! ```
//!
//! # How it fits
//! No I/O, no clock: the caller reads the metrics (locally, PromQL over the metrics
//! collector's series: [`shared::local_query`]), passes the time, applies the decision and publishes it as
//! a `ScaleDecided` event ([`Decision::governing`] gives its metric, value and target;
//! [`Decision::reason`] its reason). The autoscaler keeps what the HPA controller keeps
//! between evaluations: recent recommendations (stabilization) and recent scale events
//! (policies).
//!
//! # Layout
//! - `config`: [`AutoscalerConfig`], metrics, targets, behavior, with the HPA's defaults
//!   and validation ([`ConfigError`]).
//! - `observation`: [`Observation`], what one evaluation sees.
//! - `metric`: one metric's proposal ([`MetricOutcome`]), the HPA's replica calculator.
//! - `autoscaler`: [`Autoscaler`], the state machine: bounds, largest proposal,
//!   stabilization, policies.
//! - `decision`: [`Decision`] and its reason.
//! - `hpa_spec`: [`AutoscalerConfig::hpa_spec`], the same configuration as an HPA's spec.
//! - [`shared`]: the names the local autoscaler and the HPA share.

mod autoscaler;
mod config;
mod decision;
mod hpa_spec;
mod metric;
mod observation;
pub mod shared;

pub use autoscaler::Autoscaler;
pub use config::{
    AutoscalerConfig, Behavior, ConfigError, DEFAULT_SCALE_DOWN_WINDOW_SECS, DEFAULT_TOLERANCE,
    Direction, MAX_PERIOD_SECS, MAX_WINDOW_SECS, MetricSpec, PolicyKind, ScalingPolicy,
    ScalingRules, SelectPolicy, Source, Target,
};
pub use decision::{Decision, Limit, Outcome};
pub use metric::{Basis, MetricError, MetricOutcome, Proposal};
pub use observation::{Observation, PodState};
