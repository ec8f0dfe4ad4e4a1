//! `ringside reducer` as a child process (the binary's tests and the benchmark): spawn
//! it, read the line with its addresses, signal it, read its memory and its log.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{Bus, VNODES, ring};

/// A running `ringside reducer`.
pub(crate) struct ReducerProcess {
    child: Child,
    /// Its gRPC address.
    pub(crate) grpc: SocketAddr,
    /// Its metrics address.
    pub(crate) metrics: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ReducerProcess {
    /// Starts `binary reducer` against the bus as the `reducer` user for `ring`, with
    /// the test rings' vnodes unless `extra` has `--vnodes`; waits for the line with
    /// its addresses. Its log (stderr) goes to a file.
    pub(crate) async fn spawn(
        binary: &Path,
        bus: &Bus,
        ring: &str,
        instance: &str,
        extra: &[&str],
    ) -> ReducerProcess {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("reducer.log");
        let vnodes = VNODES.to_string();
        let default_vnodes: &[&str] = if extra.contains(&"--vnodes") {
            &[]
        } else {
            &["--vnodes", &vnodes]
        };
        let mut child = Command::new(binary)
            .arg("reducer")
            .args(["--nats-url", &bus.server.url(), "--ring", ring])
            .args(["--instance", instance])
            .args([
                "--grpc-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .args(default_vnodes)
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
        ReducerProcess {
            child,
            grpc,
            metrics,
            log,
            _dir: dir,
        }
    }

    /// [`ReducerProcess::spawn`] for the test ring.
    pub(crate) async fn spawn_test(
        binary: &Path,
        bus: &Bus,
        instance: &str,
        extra: &[&str],
    ) -> ReducerProcess {
        Self::spawn(binary, bus, ring().as_str(), instance, extra).await
    }

    /// Sends a signal.
    pub(crate) fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// SIGKILL, and waits for the process to be gone.
    pub(crate) async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    /// Waits for the exit (bounded).
    pub(crate) async fn exited(&mut self, within: Duration) -> ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "the reducer did not exit within {within:?}:\n{}",
                self.log()
            ),
        }
    }

    /// SIGTERM, and checks it exits 0.
    pub(crate) async fn stop(mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.exited(Duration::from_secs(60)).await;
        assert!(status.success(), "the reducer exited with {status}");
    }

    /// (VmRSS, VmHWM): resident and peak resident memory in bytes.
    pub(crate) fn memory(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id().unwrap())).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap()
                * 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// What it logged so far (stderr).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ReducerProcess {
    fn drop(&mut self) {
        // A failing test shows what the reducer said.
        if std::thread::panicking() {
            eprintln!("--- reducer log ---\n{}", self.log());
        }
    }
}
