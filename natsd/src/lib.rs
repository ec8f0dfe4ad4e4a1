//! The local `nats-server`: what `ringside up` runs as a child process and what the
//! test harness (`ringside-testkit`) starts for every test.
//!
//! # Layout
//! - [`binary`]: finding a `nats-server` new enough (2.12+) and checking its version.
//! - [`Passwords`]: the per-service passwords `nats/local.conf` reads from the
//!   environment; generated on first use, kept in a 0600 file out of git.
//! - [`child`]: starting a child process that dies with its parent.
//! - [`log`]: reading the server's log for readiness, its port, and the tail to show
//!   when it fails.
//! - [`LocalServer`]: a supervised child process on loopback with a persistent store:
//!   started, waited for, stopped gracefully (SIGTERM, then SIGKILL after a grace).
//!
//! # How it fits
//! Nothing here talks NATS; clients connect with `ringside-events`' service users once
//! the server is ready.

pub mod binary;
pub mod child;
pub mod log;
mod passwords;
mod server;

pub use binary::{MIN_SERVER_VERSION, NATS_SERVER_ENV, find_binary};
pub use passwords::{Passwords, SERVICE_USERS, password_env};
pub use server::{LocalServer, ServerConfig};

use std::io;
use std::time::Duration;

/// Environment variable `nats/local.conf` reads the JetStream store directory from.
pub const STORE_DIR_ENV: &str = "RINGSIDE_NATS_STORE_DIR";

/// Errors of the local server. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum NatsdError {
    /// No usable `nats-server` binary was found.
    #[error(
        "nats-server not found (looked at ${NATS_SERVER_ENV}, {venv}, and PATH); run ./dev setup"
    )]
    BinaryMissing {
        /// The project-local path that was tried.
        venv: String,
    },
    /// The binary found is older than [`MIN_SERVER_VERSION`] (Debian ships 2.9).
    #[error("{path} is nats-server {found}, need {}.{} or newer; run ./dev setup", MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1)]
    BinaryTooOld {
        /// The binary.
        path: String,
        /// The version it reported.
        found: String,
    },
    /// Starting a process, reading a file or making a directory failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The port is taken by another process.
    #[error("port {port} is already in use; stop what uses it or pick another port (--nats-port)")]
    PortInUse {
        /// The port asked for.
        port: u16,
    },
    /// The server did not report readiness in time (or exited first).
    #[error("nats-server not ready after {waited:?}: {reason}\n--- log tail ---\n{log_tail}")]
    NotReady {
        /// How long we waited.
        waited: Duration,
        /// Why we gave up (timeout, or the exit status).
        reason: String,
        /// The end of the server's log.
        log_tail: String,
    },
    /// A password file exists but cannot be used.
    #[error("password file {path} is unusable: {reason}; delete it to generate new passwords")]
    BadPasswordFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Wraps an I/O error with what was being done.
pub fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> NatsdError {
    let what = what.into();
    move |source| NatsdError::Io { what, source }
}
