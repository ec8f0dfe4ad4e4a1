//! `ringside up` end to end: the real binary starts nats-server, the reducer, the
//! heartbeat watcher and nodes on ephemeral loopback ports; `ringside
//! scale` changes the members through the heartbeat path; SIGINT stops everything;
//! a second `up` resumes the history; `replay verify` accepts the stream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod up_support;

use std::process::Command;
use std::time::{Duration, Instant};

use up_support::*;

#[test]
fn up_scales_stops_cleanly_and_resumes_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (up, grpc) = Up::ready(dir.path(), 3, &[]);
    let first = get_ring(&grpc);
    assert_eq!(member_ids(&first), ["node-1", "node-2", "node-3"]);

    ok(&up.ringside(&["scale", "5", "--wait", "30"]));
    let five = get_ring(&grpc);
    assert_eq!(member_ids(&five).len(), 5);
    assert!(five.epoch > first.epoch);
    ok(&up.ringside(&["scale", "2", "--wait", "30"]));
    let two = get_ring(&grpc);
    assert_eq!(member_ids(&two), ["node-1", "node-2"]);
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

    // The nodes said goodbye on the way out: the history has those leaves, and a
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
    let (up, grpc) = Up::ready(dir.path(), 2, &[]);
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

#[test]
fn up_supervises_each_service_as_a_process_and_every_page_passes_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let (up, grpc) = Up::ready(dir.path(), 2, &[]);

    // Every service serves /livez, /readyz and /metrics the same way, and every page
    // is one Prometheus's linter accepts.
    let endpoints = up.record()["endpoints"].clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for name in [
        "up.status",
        "reducer.metrics",
        "watcher.metrics",
        "collector.metrics",
        "node-1.metrics",
    ] {
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
    let secrets: Vec<String> = credentials(&up)
        .into_values()
        .filter(|v| v.len() >= 8)
        .collect();
    assert!(!secrets.is_empty());
    let children = children_of(up.pid());
    for service in ["reducer", "watcher heartbeat", "collector", "node"] {
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
