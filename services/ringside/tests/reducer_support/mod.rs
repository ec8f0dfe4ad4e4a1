//! The `ringside reducer` binary as a child process, for the tests that need a real
//! process (SIGKILL, SIGTERM, exit codes). Bus, churn and checks come from the reducer
//! crate's test helpers.

// Helpers of tests: a failed unwrap is a failed test, which is what we want here.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../reducer/tests/common/mod.rs"]
pub(crate) mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use common::Bus;

/// A running `ringside reducer`.
pub(crate) struct Reducer {
    child: Child,
    /// Its gRPC address.
    pub(crate) grpc: SocketAddr,
    /// Its metrics address.
    pub(crate) metrics: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Reducer {
    /// Starts `ringside reducer` against the bus as the `reducer` user, with
    /// `extra` flags; waits for the line with its addresses.
    pub(crate) async fn spawn(bus: &Bus, instance: &str, extra: &[&str]) -> Reducer {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("reducer.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringside"))
            .arg("reducer")
            .args(["--nats-url", &bus.server.url()])
            .args(["--ring", common::ring().as_str()])
            .args(["--instance", instance])
            .args([
                "--grpc-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .args(["--vnodes", &common::VNODES.to_string()])
            .args(extra)
            .env(
                "RINGSIDE_NATS_PASSWORD_REDUCER",
                bus.server.password("reducer").unwrap(),
            )
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("no address line within 30 s")
            .unwrap()
            .unwrap_or_else(|| {
                panic!(
                    "the reducer exited: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let addr = |key: &str| -> SocketAddr {
            line.split(' ')
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
                .parse()
                .unwrap()
        };
        let (grpc, metrics) = (addr("grpc="), addr("metrics="));
        Reducer {
            child,
            grpc,
            metrics,
            log,
            _dir: dir,
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32)
    }

    /// Sends a signal.
    pub(crate) fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), signal).unwrap();
    }

    /// SIGKILL, and waits for the process to be gone.
    pub(crate) async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    /// Waits for the exit (bounded).
    pub(crate) async fn exited(&mut self, within: Duration) -> ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the reducer did not exit within {within:?}:\n{}",
                    self.log()
                )
            })
            .unwrap()
    }

    /// What it logged so far (stderr).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Reducer {
    fn drop(&mut self) {
        // A failing test shows what the reducer said.
        if std::thread::panicking() {
            eprintln!("--- reducer log ---\n{}", self.log());
        }
    }
}
