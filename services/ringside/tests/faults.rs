//! The fault campaign: `ringside up` with three nodes (R = 2) under steady
//! `ringside load` (every write recorded) and churn (`ringside scale` 3 <-> 4), while a
//! seeded script injects one fault at a time: SIGKILL of nats-server, of the reducer,
//! the watcher, the collector, the bridge and a node; SIGSTOP of a node and of the
//! reducer for longer than the heartbeat timeout, then SIGCONT; a second reducer and a
//! second watcher (the first's command line and settings) beside the first during a
//! scale.
//!
//! After each fault, with no step of a person: the killed part is running again,
//! every service answers `/readyz` and the stream answers through the server (the time
//! from the fault to then is its recovery time); `ringside replay verify` passes; the stored rebalance epochs have no gap and
//! no duplicate; the ring the dashboard shows (the bridge's `/api/status`) equals the
//! reducer's `GetRing`. At the end every acknowledged write reads back
//! (`ringside load --verify`), and the RSS of every process, sampled every 10 s, is in
//! the report.
//!
//! `./dev test` runs one round. Longer runs: `just faults ROUNDS SEED`, `just soak
//! SECONDS` (load and churn go on after the faults, and each process's RSS must stay
//! within the bound below). Settings: `RINGSIDE_FAULT_ROUNDS` (1),
//! `RINGSIDE_FAULT_SEED` (21), `RINGSIDE_SOAK_SECS` (0), the pause after each fault
//! `RINGSIDE_FAULT_SETTLE_MS` (3000), and the report's path,
//! `RINGSIDE_FAULT_REPORT` (`target/faults/report.json`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod up_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use ringside_ring::SplitMix64;
use serde_json::{Value, json};
use up_support::{
    BIN, Up, all_ready, assert_nothing_lost, children_of, credentials, endpoints, get_ring,
    nats_servers_of, ok, runtime, signal, verify_writes, wait_for,
};

/// What a fault does.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL of `up`'s nats-server.
    KillNats,
    /// SIGKILL of the service whose command line is `ringside <service>`.
    Kill(&'static str),
    /// SIGSTOP of the service for longer than the heartbeat timeout, then SIGCONT.
    Stop(&'static str),
    /// A second instance of the service (same command line and settings, its own
    /// listeners) beside the first for `TWIN_FOR` and a scale in its middle, then SIGKILLed.
    Twin(&'static str),
}

impl Fault {
    fn name(self) -> String {
        match self {
            Self::KillNats => "SIGKILL nats-server".to_string(),
            Self::Kill(s) => format!("SIGKILL {s}"),
            Self::Stop(s) => format!("SIGSTOP {s} 2 s"),
            Self::Twin(s) => format!("a second {s}"),
        }
    }
}

const FAULTS: [Fault; 10] = [
    Fault::KillNats,
    Fault::Kill("reducer"),
    Fault::Kill("watcher"),
    Fault::Kill("collector"),
    Fault::Kill("bridge"),
    Fault::Kill("node"),
    Fault::Stop("node"),
    Fault::Stop("reducer"),
    Fault::Twin("reducer"),
    Fault::Twin("watcher"),
];

/// How long a second instance runs beside the first.
const TWIN_FOR: Duration = Duration::from_secs(3);

/// `up --heartbeat-ms 200` (the test's), times the watcher's missed beats, is well
/// under this.
const STOPPED_FOR: Duration = Duration::from_secs(2);
/// A process's RSS at the end of a soak may exceed its RSS a third of the way in by
/// at most this factor plus `RSS_SLACK` (allocator and cache settling), else it grows.
const RSS_FACTOR: f64 = 1.5;
const RSS_SLACK: f64 = 16.0 * 1024.0 * 1024.0;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The pids of `up`'s children running `ringside <service>`.
fn service_pids(up: &Up, service: &str) -> Vec<i32> {
    let needle = format!("ringside {service}");
    children_of(up.pid())
        .into_iter()
        .filter(|(_, c)| c.contains(&needle))
        .map(|(pid, _)| pid)
        .collect()
}

/// The stored rebalance epochs, in stream order.
fn stored_epochs(up: &Up) -> Vec<u64> {
    let out = ok(&up.ringside(&[
        "replay",
        "events",
        "--type",
        "rebalance",
        "--output",
        "json",
    ]));
    let events: Value = serde_json::from_str(&out).unwrap();
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let epoch = &r["event"]["ringRebalanced"]["epoch"];
            epoch
                .as_str()
                .and_then(|e| e.parse().ok())
                .or_else(|| epoch.as_u64())
                .unwrap_or(0)
        })
        .collect()
}

/// The checks after every fault; panics naming the fault if one fails.
fn check_invariants(up: &Up, grpc: &str, fault: &str) {
    let verify = up.ringside(&["replay", "verify", "--output", "json"]);
    let report: Value = serde_json::from_str(&ok(&verify)).unwrap();
    assert_eq!(report["problems"], json!([]), "after {fault}: {report}");
    let epochs = stored_epochs(up);
    assert!(
        epochs.windows(2).all(|w| w[1] == w[0] + 1),
        "after {fault}: stored epochs with a gap or a duplicate: {epochs:?}"
    );
    // The dashboard's ring is the reducer's (once the bridge has read its last epoch).
    let bridge = endpoints(up)["bridge.dashboard"];
    wait_for(Duration::from_secs(20), "the dashboard's ring", || {
        let ring = get_ring(grpc);
        let status = runtime()
            .block_on(ringside_testkit::http::get(bridge, "/api/status"))
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok());
        status.is_some_and(|s| {
            s["epoch"].as_str().and_then(|e| e.parse::<u64>().ok()) == Some(ring.epoch)
                && s["checksum"] == format!("{:#018x}", ring.checksum)
        })
    });
}

/// RSS samples of every process of the run: (seconds since start, pid, command, bytes).
type Samples = Arc<Mutex<Vec<(f64, i32, String, f64)>>>;

fn rss_of(pid: i32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024.0)
}

/// Samples `up` and its children every 10 s until `stop`.
fn sample_rss(up_pid: i32, stop: Arc<AtomicBool>, samples: Samples) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            let t = started.elapsed().as_secs_f64();
            let mut processes = children_of(up_pid);
            processes.push((up_pid, "ringside up".to_string()));
            for (pid, cmdline) in processes {
                if let Some(rss) = rss_of(pid) {
                    let name = cmdline
                        .split_whitespace()
                        .take(2)
                        .map(|w| w.rsplit('/').next().unwrap_or(w))
                        .collect::<Vec<_>>()
                        .join(" ");
                    samples.lock().unwrap().push((t, pid, name, rss));
                }
            }
            for _ in 0..100 {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    })
}

/// Per process (pid) that lived through the samples: first, at a third, peak, last.
fn rss_summary(samples: &[(f64, i32, String, f64)]) -> Vec<Value> {
    let mut by_pid: BTreeMap<i32, (String, Vec<(f64, f64)>)> = BTreeMap::new();
    for (t, pid, name, rss) in samples {
        by_pid
            .entry(*pid)
            .or_insert_with(|| (name.clone(), Vec::new()))
            .1
            .push((*t, *rss));
    }
    by_pid
        .into_iter()
        .map(|(pid, (name, s))| {
            let third = s[s.len() / 3].1;
            let peak = s.iter().map(|x| x.1).fold(0.0, f64::max);
            json!({
                "pid": pid,
                "process": name,
                "samples": s.len(),
                "from_s": s[0].0,
                "to_s": s[s.len() - 1].0,
                "first_mb": s[0].1 / 1048576.0,
                "third_mb": third / 1048576.0,
                "peak_mb": peak / 1048576.0,
                "last_mb": s[s.len() - 1].1 / 1048576.0,
            })
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A second instance of the process `pid`: its command line and environment (the
/// settings `up` gave it, its NATS password included), every listener on a free port.
fn twin_of(pid: i32) -> std::process::Child {
    let split = |bytes: Vec<u8>| -> Vec<String> {
        bytes
            .split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect()
    };
    let args = split(std::fs::read(format!("/proc/{pid}/cmdline")).unwrap());
    let env = split(std::fs::read(format!("/proc/{pid}/environ")).unwrap());
    let mut twin = Command::new(BIN);
    twin.args(&args[1..]).env_clear();
    for pair in env {
        if let Some((key, value)) = pair.split_once('=') {
            let value = if key.ends_with("_ADDR") {
                "127.0.0.1:0"
            } else {
                value
            };
            twin.env(key, value);
        }
    }
    twin.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Injects `fault` and waits until the system is whole again: the time that took.
fn inject(up: &Up, fault: Fault, rng: &mut SplitMix64) -> Duration {
    let started = Instant::now();
    match fault {
        Fault::KillNats => {
            let victim = up.nats_server();
            signal(victim, Signal::SIGKILL);
            wait_for(Duration::from_secs(60), "a new nats-server", || {
                nats_servers_of(up.pid()).iter().any(|pid| *pid != victim)
            });
        }
        Fault::Kill(service) => {
            let before = service_pids(up, service);
            let victim = before[rng.below(before.len())];
            signal(victim, Signal::SIGKILL);
            wait_for(Duration::from_secs(60), "the service started again", || {
                let now = service_pids(up, service);
                now.len() == before.len() && !now.contains(&victim)
            });
        }
        Fault::Stop(service) => {
            let pids = service_pids(up, service);
            let victim = pids[rng.below(pids.len())];
            signal(victim, Signal::SIGSTOP);
            std::thread::sleep(STOPPED_FOR);
            signal(victim, Signal::SIGCONT);
        }
        Fault::Twin(service) => {
            let mut twin = twin_of(service_pids(up, service)[0]);
            std::thread::sleep(TWIN_FOR / 2);
            let record = up.record();
            let members = get_ring(record["grpc"].as_str().unwrap()).members.len();
            let other = if members == 3 { "4" } else { "3" };
            ok(&up.ringside(&["scale", other, "--wait", "60"]));
            std::thread::sleep(TWIN_FOR / 2);
            twin.kill().unwrap();
            twin.wait().unwrap();
        }
    }
    // Every service ready, and the stream answering through the server.
    wait_for(Duration::from_secs(60), "every service ready", || {
        all_ready(up)
            && up
                .ringside(&["replay", "state", "--output", "json"])
                .status
                .success()
    });
    started.elapsed()
}

#[test]
fn every_fault_heals_itself_and_no_acknowledged_write_is_lost() {
    let rounds: usize = env_or("RINGSIDE_FAULT_ROUNDS", 1);
    let seed: u64 = env_or("RINGSIDE_FAULT_SEED", 21);
    let soak = Duration::from_secs(env_or("RINGSIDE_SOAK_SECS", 0));
    // After each fault, before the next change of the ring.
    let settle = Duration::from_millis(env_or("RINGSIDE_FAULT_SETTLE_MS", 3000));
    let report_path = std::env::var("RINGSIDE_FAULT_REPORT").unwrap_or_else(|_| {
        ringside_testkit::workspace_root()
            .join("target/faults/report.json")
            .to_string_lossy()
            .into_owned()
    });
    let mut rng = SplitMix64(seed);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (up, grpc) = Up::ready(dir.path(), 3, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Samples = Arc::default();
    let sampler = sample_rss(up.pid(), stop.clone(), samples.clone());

    let record = dir.path().join("writes.jsonl");
    let load = Command::new(BIN)
        .args(["load", "--state-dir"])
        .arg(&state)
        .args(["--duration", "0", "--rate", "100", "--reads", "0.3"])
        .args(["--keys", "400", "--clients", "5", "--timeout", "15s"])
        .args(["--seed", &seed.to_string(), "--output", "json", "--record"])
        .arg(&record)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));

    let started = Instant::now();
    let mut members = 3;
    let mut churn = |up: &Up| {
        members = if members == 3 { 4 } else { 3 };
        ok(&up.ringside(&["scale", &members.to_string(), "--wait", "60"]));
    };
    let mut recoveries: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        let mut faults = FAULTS;
        rng.shuffle(&mut faults);
        for fault in faults {
            eprintln!("faults: round {round}, {}", fault.name());
            let took = inject(&up, fault, &mut rng);
            check_invariants(&up, &grpc, &fault.name());
            // One fault at a time: the next change of the ring waits a moment.
            std::thread::sleep(settle);
            recoveries
                .entry(fault.name())
                .or_default()
                .push(took.as_secs_f64());
            churn(&up);
        }
    }
    let soak_started = Instant::now();
    while soak_started.elapsed() < soak {
        std::thread::sleep(Duration::from_secs(5));
        churn(&up);
    }
    if !soak.is_zero() {
        check_invariants(&up, &grpc, "the soak");
    }

    // Stop the load; every acknowledged write reads back from the ring as it is.
    signal(load.id() as i32, Signal::SIGINT);
    let summary: Value = serde_json::from_str(&ok(&load.wait_with_output().unwrap())).unwrap();
    let writes = verify_writes(&up, &record);
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let stream_last = up.ringside(&["replay", "state", "--output", "json"]);
    let state_now: Value = serde_json::from_str(&ok(&stream_last)).unwrap();

    let rss = rss_summary(&samples.lock().unwrap());
    let recovery: Vec<Value> = recoveries
        .iter()
        .map(|(name, times)| {
            let mut sorted = times.clone();
            sorted.sort_by(f64::total_cmp);
            json!({
                "fault": name,
                "injected": times.len(),
                "recovery_p50_s": percentile(&sorted, 0.5),
                "recovery_max_s": sorted.last().copied().unwrap_or(0.0),
            })
        })
        .collect();
    let report = json!({
        "seed": seed,
        "rounds": rounds,
        "faults": recovery,
        "duration_s": started.elapsed().as_secs_f64(),
        "soak_s": soak.as_secs_f64(),
        "load": summary,
        "writes": writes,
        "last_sequence": state_now["at_sequence"],
        "epoch": state_now["epoch"],
        "rss": rss,
        "rss_bound": format!("last <= {RSS_FACTOR} x the sample a third of the way in + 16 MB"),
    });
    let path = Path::new(&report_path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    eprintln!("faults: report in {}", path.display());

    assert_nothing_lost(&writes, 100);
    assert_eq!(
        recoveries.values().map(Vec::len).sum::<usize>(),
        rounds * FAULTS.len()
    );
    if soak >= Duration::from_secs(60) {
        for p in &rss {
            let (third, last) = (
                p["third_mb"].as_f64().unwrap() * 1048576.0,
                p["last_mb"].as_f64().unwrap() * 1048576.0,
            );
            if p["to_s"].as_f64().unwrap() - p["from_s"].as_f64().unwrap() >= soak.as_secs_f64() {
                assert!(last <= RSS_FACTOR * third + RSS_SLACK, "RSS grew: {p}");
            }
        }
    }
    // No password in any log: up's output (every service's log lines pass through
    // it) and the server's log, across every restart of the run.
    let state_dir = up.state().to_path_buf();
    let secrets: Vec<String> = credentials(&up)
        .into_values()
        .filter(|v| v.len() >= 8)
        .collect();
    assert!(!secrets.is_empty());
    let output = up.interrupt();
    ok(&output);
    let logs = [
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        std::fs::read_to_string(state_dir.join("nats-server.log")).unwrap_or_default(),
    ];
    assert!(logs.iter().any(|l| l.len() > 1000), "the logs were read");
    for secret in &secrets {
        assert!(
            logs.iter().all(|l| !l.contains(secret.as_str())),
            "a password in a log"
        );
    }
}
