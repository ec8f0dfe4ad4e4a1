//! Test support for ringside: real parts, started and cleaned up for each test.
//!
//! Tests in this workspace talk to a real `nats-server` (never a mocked bus). This crate
//! starts one on a free loopback port with a temporary JetStream store, can SIGKILL it
//! and restart it on the same store and port, and kills and reaps it on drop.
//!
//! # Layout
//! - [`nats`]: [`NatsServer`] and its [`ServerOptions`]; the binary lookup, the
//!   per-service credentials ([`LocalAuth`]) and log reading come from
//!   `ringside-natsd`, which `ringside up` uses too.
//! - [`http`]: a plain `GET` of a service's endpoint (and a JSON request).
//! - [`kube_fake`]: an HTTP fake of the Kubernetes list/watch API for the pod watcher.
//! - [`bench`](mod@bench): the benchmarks' shared flag reader, min/median summary and JSON writer.
//! - [`prometheus`]: `promtool check metrics` on a service's `/metrics` page.
//! - [`browser`]: a headless Chromium through chromedriver (WebDriver).
//! - [`tool`]: an external tool run for a bounded time (promtool, kubectl, yamllint,
//!   kubernetes-validate, checkov, podman).
//! - [`workspace_root`]: where `nats/`, `.venv/` and the other shared files live.
//! - [`settings`]: a settings map from literal pairs, what tests pass to the services'
//!   `from_map` (never `set_var`).
//!
//! # How it fits
//! `ringside-events` tests (and later the services' tests) start a server here, connect
//! with [`NatsServer::connect`], [`NatsServer::connect_as`] (a service user of
//! `nats/local.conf`, with its password and inbox prefix) or [`NatsServer::connect_with`]
//! ([`NatsServer::connect_provisioned`] also creates the builtin streams and buckets),
//! and use the same provisioning and publishing code as production.

pub mod bench;
pub mod browser;
pub mod fuzz;
pub mod http;
pub mod kube_fake;
pub mod nats;
pub mod prometheus;
pub mod tool;

pub use nats::{LocalAuth, NatsServer, ServerOptions, TestkitError};

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The workspace root (the directory holding the root `Cargo.toml`, `nats/` and `.venv/`).
pub fn workspace_root() -> PathBuf {
    // testkit lives one level below the root; the path is fixed at compile time, which is
    // what tests want (they run from the crate directory, not the root).
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// A settings map from literal `(key, value)` pairs, as the services' `from_map` take it.
pub fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
