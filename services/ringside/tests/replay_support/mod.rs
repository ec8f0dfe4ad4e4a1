//! Shared helpers of the `tail` and `replay` end-to-end tests: the library tests' server
//! and history writer (`replay/tests/support`), and the binary.

// Helpers of tests: a failed unwrap is a failed test, which is what we want here.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use ringside_events::ServiceUser;

#[path = "../../../../replay/tests/support/mod.rs"]
mod history;

pub(crate) use history::*;

impl Stack {
    /// The command `ringside ARGS --nats-url URL` as `user`, its password in the
    /// environment.
    pub(crate) fn command_as(&self, user: ServiceUser, args: &[&str]) -> Command {
        let password = self.server.password(user.name()).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringside"));
        command
            .args(args)
            .args(["--nats-url", &self.server.url(), "--user", user.name()])
            .env(user.password_env(), password)
            // key-history's index: in the server's temporary directory, not the home.
            .env(
                "RINGSIDE_REPLAY_INDEX_DIR",
                self.server.store_dir().join("replay-index"),
            );
        command
    }

    /// `ringside ARGS --nats-url URL` as `user`, run to its end.
    pub(crate) fn ringside_as(&self, user: ServiceUser, args: &[&str]) -> Output {
        self.command_as(user, args).output().expect("run ringside")
    }

    /// `ringside ARGS` as admin.
    pub(crate) fn ringside(&self, args: &[&str]) -> Output {
        self.ringside_as(ServiceUser::Admin, args)
    }
}

/// `ringside ARGS` without any server (offline commands).
pub(crate) fn ringside_offline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringside"))
        .args(args)
        .output()
        .expect("run ringside")
}

/// The JSON on stdout of a successful run.
pub(crate) fn ok_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "ringside failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// The stderr of a failed run (after the line naming the server read, if any), which
/// must be a clear error and not a panic.
pub(crate) fn failure(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stderr = match stderr.split_once('\n') {
        Some((first, rest)) if first.starts_with("ringside: reading ") => rest.to_string(),
        _ => stderr,
    };
    assert!(
        !out.status.success(),
        "should fail; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !stderr.contains("panicked"),
        "panic instead of an error: {stderr}"
    );
    assert!(
        stderr.starts_with("error: "),
        "not one clear error line: {stderr}"
    );
    stderr
}
