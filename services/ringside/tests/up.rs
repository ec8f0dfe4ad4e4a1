//! `ringside up` end to end: the real binary starts nats-server, the reducer, the
//! heartbeat watcher and stand-in members on ephemeral loopback ports; `ringside
//! scale` changes the members through the heartbeat path; SIGINT stops everything;
//! a second `up` resumes the history; `replay verify` accepts the stream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ringside_events::pb;

const BIN: &str = env!("CARGO_BIN_EXE_ringside");

/// A running `ringside up` with its state directory; SIGKILLed if the test fails.
struct Up {
    child: Option<Child>,
    state: PathBuf,
}

impl Up {
    /// Starts `up` the way `./dev demo` does: from the state directory's parent, with a
    /// relative `--state-dir` (`./state`, as the demo's `.ringside`).
    fn start(state: &Path, members: u32) -> Self {
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
            ])
            .args(["--heartbeat-ms", "200"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let up = Up {
            child: Some(child),
            state: state.to_path_buf(),
        };
        wait_for(Duration::from_secs(60), "up.json", || {
            state.join("up.json").is_file()
        });
        up
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// The pid of its nats-server child.
    fn nats_server(&self) -> i32 {
        let found = nats_servers_of(self.pid());
        assert_eq!(found.len(), 1, "one nats-server: {found:?}");
        found[0]
    }

    fn record(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.state.join("up.json")).unwrap()).unwrap()
    }

    fn ringside(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--state-dir")
            .arg(&self.state)
            .output()
            .unwrap()
    }

    /// SIGINT, then the exit status and the output.
    fn interrupt(mut self) -> Output {
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
        child.wait_with_output().unwrap()
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

fn wait_for(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn get_ring(grpc: &str) -> pb::RingSnapshot {
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

fn member_ids(snapshot: &pb::RingSnapshot) -> Vec<String> {
    snapshot.members.iter().map(|m| m.id.clone()).collect()
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Processes whose command line mentions `needle` (our state dir), other than us.
fn processes_mentioning(needle: &str) -> Vec<String> {
    pids_mentioning(needle)
        .into_iter()
        .map(|(_, cmdline)| cmdline)
        .collect()
}

/// (pid, command line) of the live processes whose command line mentions `needle`.
fn pids_mentioning(needle: &str) -> Vec<(i32, String)> {
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
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`; comm may hold spaces, so split after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The pids of the nats-server children of process `parent`.
fn nats_servers_of(parent: i32) -> Vec<i32> {
    pids_mentioning("nats-server")
        .into_iter()
        .filter(|(pid, _)| parent_of(*pid) == Some(parent))
        .map(|(pid, _)| pid)
        .collect()
}

fn signal(pid: i32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
}

#[test]
fn up_scales_stops_cleanly_and_resumes_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");

    let up = Up::start(&state, 3);
    let grpc = up.record()["grpc"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(30), "3 members", || {
        get_ring(&grpc).members.len() == 3
    });
    let first = get_ring(&grpc);
    assert_eq!(
        member_ids(&first),
        ["stand-in-1", "stand-in-2", "stand-in-3"]
    );

    ok(&up.ringside(&["scale", "5", "--wait", "30"]));
    let five = get_ring(&grpc);
    assert_eq!(member_ids(&five).len(), 5);
    assert!(five.epoch > first.epoch);
    ok(&up.ringside(&["scale", "2", "--wait", "30"]));
    let two = get_ring(&grpc);
    assert_eq!(member_ids(&two), ["stand-in-1", "stand-in-2"]);
    assert!(two.epoch > five.epoch);

    let nats_url = up.record()["nats_url"].as_str().unwrap().to_string();
    let nats = up.nats_server();
    let output = up.interrupt();
    let stdout = ok(&output);
    assert!(stdout.contains("Stopped."), "{stdout}");
    assert!(!state.join("up.json").exists(), "the record is removed");
    let leftovers = processes_mentioning(&state.display().to_string());
    assert!(leftovers.is_empty(), "processes left behind: {leftovers:?}");
    assert!(parent_of(nats).is_none(), "nats-server was left behind");
    let port: u16 = nats_url.rsplit(':').next().unwrap().parse().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    // The stand-ins said goodbye on the way out: the history has those leaves, and a
    // second `up` continues the epochs where the first stopped.
    let up = Up::start(&state, 3);
    let grpc = up.record()["grpc"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(30), "3 members again", || {
        get_ring(&grpc).members.len() == 3
    });
    let resumed = get_ring(&grpc);
    assert!(
        resumed.epoch > two.epoch + 1,
        "epochs continue: {} after {}",
        resumed.epoch,
        two.epoch
    );

    let verify = up.ringside(&["replay", "verify"]);
    let text = ok(&verify);
    assert!(
        text.contains("ok") || text.contains("OK") || text.contains("verified"),
        "{text}"
    );
    ok(&up.interrupt());
}

#[test]
fn a_second_up_on_the_same_state_is_refused_and_scale_needs_a_running_up() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let scale = Command::new(BIN)
        .args(["scale", "2", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!scale.status.success());
    assert!(String::from_utf8_lossy(&scale.stderr).contains("no ringside up is running"));

    // Clear errors for a taken port and a missing nats-server, before anything runs.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let busy = Command::new(BIN)
        .args(["up", "--nats-port", &port, "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!busy.status.success());
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert!(
        stderr.contains(&format!("port {port} is already in use")),
        "{stderr}"
    );
    let missing = Command::new(BIN)
        .args(["up", "--nats-port", "0", "--state-dir"])
        .arg(&state)
        .env(
            "RINGSIDE_NATS_SERVER",
            dir.path().join("no-such-nats-server"),
        )
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("nats-server not found") && stderr.contains("./dev setup"),
        "{stderr}"
    );

    let up = Up::start(&state, 1);
    let again = up.ringside(&["up", "--nats-port", "0", "--grpc", "127.0.0.1:0"]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already running"), "{stderr}");
    ok(&up.interrupt());
}

#[test]
fn a_killed_nats_server_comes_back_and_ctrl_c_stops_up_in_every_state() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let up = Up::start(&state, 2);
    let grpc = up.record()["grpc"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(30), "2 members", || {
        get_ring(&grpc).members.len() == 2
    });
    let before = get_ring(&grpc);

    // SIGKILL: `up` notices at once, starts it again on the same port and store, and
    // the services reconnect: the ring goes on changing.
    let first = up.nats_server();
    signal(first, nix::sys::signal::Signal::SIGKILL);
    wait_for(Duration::from_secs(30), "a new nats-server", || {
        nats_servers_of(up.pid()).iter().any(|pid| *pid != first)
    });
    ok(&up.ringside(&["scale", "3", "--wait", "60"]));
    let after = get_ring(&grpc);
    assert_eq!(after.members.len(), 3);
    assert!(after.epoch > before.epoch);

    // A server that hangs (SIGSTOP: no exit, no answers) does not hold up Ctrl-C.
    let hung = up.nats_server();
    signal(hung, nix::sys::signal::Signal::SIGSTOP);
    let started = Instant::now();
    let output = up.interrupt();
    let stopped_in = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stopped_in < Duration::from_secs(25),
        "stopping took {stopped_in:?}: {stdout}"
    );
    assert!(
        stdout.contains("nats-server exited (signal: 9") && stdout.contains("restarting it"),
        "{stdout}"
    );
    assert!(
        parent_of(hung).is_none(),
        "the hung nats-server was left behind"
    );
}

/// The processes whose parent is `parent`, with their command lines.
fn children_of(parent: i32) -> Vec<(i32, String)> {
    pids_mentioning("")
        .into_iter()
        .filter(|(pid, _)| parent_of(*pid) == Some(parent))
        .collect()
}

#[test]
fn up_supervises_each_service_as_a_process_and_every_page_passes_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let up = Up::start(&state, 2);
    let grpc = up.record()["grpc"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(30), "2 members", || {
        get_ring(&grpc).members.len() == 2
    });

    // Every service serves /livez, /readyz and /metrics the same way, and every page
    // is one Prometheus's linter accepts.
    let endpoints = up.record()["endpoints"].clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for name in ["up.status", "reducer.metrics", "watcher.metrics"] {
        let addr: std::net::SocketAddr = endpoints[name].as_str().unwrap().parse().unwrap();
        runtime.block_on(async {
            for path in ["/livez", "/readyz"] {
                let (status, body) = ringside_testkit::http::get(addr, path).await.unwrap();
                assert_eq!(status, 200, "{name}{path}: {body}");
            }
            let (status, page) = ringside_testkit::http::get(addr, "/metrics").await.unwrap();
            assert_eq!(status, 200, "{name}");
            ringside_testkit::prometheus::check_metrics(&page)
                .unwrap_or_else(|e| panic!("{name}: {e}\n{page}"));
        });
    }

    // Each service is its own process, and no password shows in a command line.
    let passwords = std::fs::read_to_string(state.join("credentials.env")).unwrap();
    let secrets: Vec<&str> = passwords
        .lines()
        .filter_map(|l| l.split_once('=').map(|(_, v)| v.trim_matches('\'')))
        .filter(|v| v.len() >= 8)
        .collect();
    assert!(!secrets.is_empty());
    let children = children_of(up.pid());
    for service in ["reducer", "watcher heartbeat"] {
        assert!(
            children
                .iter()
                .any(|(_, c)| c.contains(&format!("ringside {service}"))),
            "no {service} process: {children:?}"
        );
    }
    for (_, cmdline) in &children {
        assert!(
            secrets.iter().all(|s| !cmdline.contains(s)),
            "a password in {cmdline}"
        );
    }

    // A SIGKILLed service is started again on the same addresses; the ring goes on.
    let (reducer, _) = children
        .iter()
        .find(|(_, c)| c.contains("ringside reducer"))
        .unwrap()
        .clone();
    signal(reducer, nix::sys::signal::Signal::SIGKILL);
    wait_for(Duration::from_secs(60), "a new reducer", || {
        children_of(up.pid())
            .iter()
            .any(|(pid, c)| *pid != reducer && c.contains("ringside reducer"))
    });
    ok(&up.ringside(&["scale", "3", "--wait", "60"]));
    assert_eq!(get_ring(&grpc).members.len(), 3);
    let stdout = ok(&up.interrupt());
    assert!(
        stdout.contains("The reducer exited (signal: 9") && stdout.contains("The reducer is back."),
        "{stdout}"
    );
}
