//! What every long-running command shares: structured logs on stderr, the async
//! runtime, and the stop signal (SIGTERM or SIGINT) turned into a future.

use std::future::Future;

use anyhow::Context as _;

/// Structured logs on stderr; `RUST_LOG` filters (default `info`).
pub(crate) fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Fails only if a subscriber is already installed, which is fine.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
}

/// Runs `work` on a new multi-threaded runtime.
pub(crate) fn block_on<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")?
        .block_on(work)
}

/// Completes at the first SIGTERM or SIGINT.
pub(crate) async fn signalled() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received."),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received."),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "Cannot listen for SIGTERM; only SIGINT stops this.");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
