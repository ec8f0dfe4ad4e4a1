//! The `ringside reducer` binary of this package as a child process, for the tests that
//! need a real process (SIGKILL, SIGTERM, exit codes). Bus, churn, checks and the
//! process helper come from the reducer crate's test helpers.

// Helpers of tests: a failed unwrap is a failed test, which is what we want here.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../reducer/tests/common/mod.rs"]
pub(crate) mod common;

use std::path::Path;

use common::Bus;
pub(crate) use common::process::ReducerProcess as Reducer;

/// Starts this package's `ringside reducer` for the test ring (see
/// `ReducerProcess::spawn`).
pub(crate) async fn spawn(bus: &Bus, instance: &str, extra: &[&str]) -> Reducer {
    Reducer::spawn_test(
        Path::new(env!("CARGO_BIN_EXE_ringside")),
        bus,
        instance,
        extra,
    )
    .await
}
