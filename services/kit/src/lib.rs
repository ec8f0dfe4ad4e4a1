//! The service kit: what every ringside service is built from, so that a new service
//! costs its settings, its `run(config, shutdown)` and one entry in a list.
//!
//! # Layout
//! - [`settings`]: [`Setting`] constants (key, flag, default, meaning written once),
//!   a service's [`Schema`], the checked map [`Settings`] and [`ConfigError`].
//! - [`flags`]: clap flags made from a schema ([`Flags`]).
//! - [`readiness`]: [`Readiness`], named conditions that all must hold.
//! - [`telemetry`]: OpenTelemetry metrics exposed as a Prometheus page ([`Telemetry`],
//!   [`Metric`] descriptions).
//! - [`http`]: the `/livez`, `/readyz`, `/metrics` router every service serves.
//! - [`error`]: [`ServiceError`], how any service fails to start or serve, and
//!   [`error::bind`].
//! - [`nats`]: connecting as a service user, readiness following the connection.
//! - [`promql`]: instant queries against Prometheus's HTTP API.
//! - [`run`]: logs, the stop signal, the "listening" line.
//! - [`service`]: the [`Service`] trait and [`service::main`], how `ringside <name>`
//!   runs any of them.
//!
//! # How a service uses it
//! Its config module lists its [`Setting`]s in a [`Schema`] and parses a
//! [`Settings`]; its `run(config, shutdown)` makes a [`Readiness`] and a
//! [`Telemetry`], connects with [`nats::connect`], serves [`http::router`] (plus its own
//! routes) and registers its conditions. docs/architecture.md ("Adding a service") has
//! the steps.

pub mod error;
pub mod flags;
pub mod http;
pub mod nats;
pub mod promql;
pub mod readiness;
pub mod run;
pub mod service;
pub mod settings;
pub mod telemetry;

pub use error::ServiceError;
pub use flags::Flags;
pub use readiness::{Condition, Readiness};
pub use service::{InProcess, Service};
pub use settings::{ConfigError, Fallback, Schema, Setting, Settings};
pub use telemetry::{Metric, Telemetry, TelemetryError};
