//! The async runtime of the commands that are not services (`up`, `scale`, the tools).

use std::future::Future;

use anyhow::Context as _;

/// Runs `work` on a new multi-threaded runtime.
pub(crate) fn block_on<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")?
        .block_on(work)
}
