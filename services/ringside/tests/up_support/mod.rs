//! `ringside up` in tests: the real binary on ephemeral loopback ports, with a state
//! directory of its own, SIGKILLed if the test fails; and the process helpers.

// Helpers of tests: a failed unwrap is a failed test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ringside_events::pb;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_ringside");

/// A running `ringside up` with its state directory; SIGKILLed if the test fails.
pub(crate) struct Up {
    child: Option<Child>,
    state: PathBuf,
    /// Its stdout and stderr, read as they come (a pipe nobody reads fills up and
    /// then blocks every process writing to it: up and the services it started).
    output: Vec<std::thread::JoinHandle<Vec<u8>>>,
}

/// Reads a pipe to its end on a thread of its own.
fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut all);
        }
        all
    })
}

impl Up {
    /// Starts `up` the way `./dev demo` does: from the state directory's parent, with a
    /// relative `--state-dir` (`./state`, as the demo's `.ringside`).
    pub(crate) fn start(state: &Path, members: u32) -> Self {
        Self::start_with(state, members, &[])
    }

    /// [`Up::start_with`] in `dir/state`, then waits until the ring has `members`
    /// members: the running `up` and its reducer's gRPC address.
    pub(crate) fn ready(dir: &Path, members: u32, env: &[(&str, &str)]) -> (Self, String) {
        let up = Self::start_with(&dir.join("state"), members, env);
        let grpc = up.record()["grpc"].as_str().unwrap().to_string();
        wait_for(Duration::from_secs(30), "the ring's members", || {
            get_ring(&grpc).members.len() == members as usize
        });
        (up, grpc)
    }

    /// [`Up::start`] with more environment (service settings `up` passes on), without
    /// Prometheus.
    pub(crate) fn start_with(state: &Path, members: u32, env: &[(&str, &str)]) -> Self {
        Self::start_args(state, members, env, &["--no-prometheus"])
    }

    /// [`Up::start_with`] with more arguments of `up` (and Prometheus, unless they
    /// say `--no-prometheus`, on a free port).
    pub(crate) fn start_args(
        state: &Path,
        members: u32,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        let child = Command::new(BIN)
            .current_dir(state.parent().unwrap())
            .args(["up", "--members", &members.to_string(), "--state-dir"])
            .arg(Path::new(".").join(state.file_name().unwrap()))
            .args([
                "--nats-port",
                "0",
                "--grpc",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
                "--status",
                "127.0.0.1:0",
                "--prometheus",
                "127.0.0.1:0",
                "--dashboard",
                "127.0.0.1:0",
            ])
            .args(["--heartbeat-ms", "200"])
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = child;
        let output = vec![drain(child.stdout.take()), drain(child.stderr.take())];
        let up = Up {
            child: Some(child),
            state: state.to_path_buf(),
            output,
        };
        wait_for(Duration::from_secs(60), "up.json", || {
            state.join("up.json").is_file()
        });
        up
    }

    /// Its state directory.
    pub(crate) fn state(&self) -> &Path {
        &self.state
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// The pid of its nats-server child.
    pub(crate) fn nats_server(&self) -> i32 {
        let found = nats_servers_of(self.pid());
        assert_eq!(found.len(), 1, "one nats-server: {found:?}");
        found[0]
    }

    pub(crate) fn record(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.state.join("up.json")).unwrap()).unwrap()
    }

    pub(crate) fn ringside(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--state-dir")
            .arg(&self.state)
            .output()
            .unwrap()
    }

    /// SIGINT, then the exit status and the output.
    pub(crate) fn interrupt(mut self) -> Output {
        let child = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut child = child;
        while child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "ringside up did not stop after SIGINT"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = child.wait().unwrap();
        let mut output = std::mem::take(&mut self.output)
            .into_iter()
            .map(|reader| reader.join().unwrap());
        Output {
            status,
            stdout: output.next().unwrap_or_default(),
            stderr: output.next().unwrap_or_default(),
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) fn wait_for(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn get_ring(grpc: &str) -> pb::RingSnapshot {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client =
            pb::ring_service_client::RingServiceClient::connect(format!("http://{grpc}"))
                .await
                .unwrap();
        client
            .get_ring(pb::GetRingRequest {
                ring: "default".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .snapshot
            .unwrap()
    })
}

pub(crate) fn member_ids(snapshot: &pb::RingSnapshot) -> Vec<String> {
    snapshot.members.iter().map(|m| m.id.clone()).collect()
}

pub(crate) fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Processes whose command line mentions `needle` (our state dir), other than us.
pub(crate) fn processes_mentioning(needle: &str) -> Vec<String> {
    pids_mentioning(needle)
        .into_iter()
        .map(|(_, cmdline)| cmdline)
        .collect()
}

/// (pid, command line) of the live processes whose command line mentions `needle`.
pub(crate) fn pids_mentioning(needle: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        // A zombie has an empty command line: it is not running.
        if cmdline.contains(needle) && !cmdline.contains("cargo") {
            found.push((pid, cmdline));
        }
    }
    found
}

/// The parent pid of `pid` (field 4 of /proc/PID/stat), if it is alive.
pub(crate) fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces, so split after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The pids of the nats-server children of process `parent`.
pub(crate) fn nats_servers_of(parent: i32) -> Vec<i32> {
    pids_mentioning("nats-server")
        .into_iter()
        .filter(|(pid, _)| parent_of(*pid) == Some(parent))
        .map(|(pid, _)| pid)
        .collect()
}

pub(crate) fn signal(pid: i32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
}

/// The processes whose parent is `parent`, with their command lines.
pub(crate) fn children_of(parent: i32) -> Vec<(i32, String)> {
    pids_mentioning("")
        .into_iter()
        .filter(|(pid, _)| parent_of(*pid) == Some(parent))
        .collect()
}

/// A runtime for the async helpers of a synchronous test.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// The listeners `up` records (`<service>.<listener>`: `reducer.metrics`, ...).
pub(crate) fn endpoints(up: &Up) -> std::collections::BTreeMap<String, std::net::SocketAddr> {
    up.record()["endpoints"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.parse().ok()?)))
        .collect()
}

/// Whether every service's metrics listener answers `/readyz` with 200 (within 2 s).
pub(crate) fn all_ready(up: &Up) -> bool {
    let endpoints = endpoints(up);
    runtime().block_on(async {
        for (name, addr) in endpoints.iter().filter(|(k, _)| k.ends_with(".metrics")) {
            let probe = tokio::time::timeout(
                Duration::from_secs(2),
                ringside_testkit::http::get(*addr, "/readyz"),
            )
            .await;
            if !matches!(probe, Ok(Some((200, _)))) {
                eprintln!("{name} not ready yet");
                return false;
            }
        }
        true
    })
}

/// `ringside load --verify RECORD` against the running ring: its JSON report.
pub(crate) fn verify_writes(up: &Up, record: &Path) -> serde_json::Value {
    let verify = up.ringside(&[
        "load",
        "--verify",
        record.to_str().unwrap(),
        "--output",
        "json",
    ]);
    serde_json::from_str(&ok(&verify)).unwrap()
}

/// Panics unless a `load --verify` report says every acknowledged write read back,
/// newest value, and at least `keys` keys were checked.
pub(crate) fn assert_nothing_lost(report: &serde_json::Value, keys: u64) {
    for bad in ["missing", "stale", "corrupt", "unreadable"] {
        assert_eq!(report[bad], 0, "{bad}: {report}");
    }
    assert!(report["ok"].as_u64().unwrap() > keys, "{report}");
}

/// The passwords `up` generated, by variable (`credentials.env`: `NAME='value'` lines).
pub(crate) fn credentials(up: &Up) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(up.state().join("credentials.env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.trim().trim_matches('\'').to_string(),
            )
        })
        .collect()
}
