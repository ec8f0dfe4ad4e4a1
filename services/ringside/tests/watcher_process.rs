//! `ringside watcher heartbeat|kubernetes` as processes: configured from flags and the
//! environment (the `watcher` user's password), announce their metrics address, serve
//! `/livez`, `/readyz` (ready once listening, or once the first sync is stored) and a
//! `/metrics` page that `promtool check metrics` accepts and that shows exactly the
//! metrics docs/watcher.md lists for the source; publish; and on SIGTERM stop cleanly
//! (the heartbeat watcher releases its lease) with exit code 0. Real nats-server
//! (`nats/local.conf`), the Kubernetes API fake, bounded waits.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test harness: a failed setup step must fail the test loudly"
)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use async_nats::jetstream;
use ringside_events::subject::{self, KV_LEASES, STREAM_EVENTS};
use ringside_events::{Body, RingName, ServiceUser, codec, pb};
use ringside_kit::Metric;
use ringside_kit::run::parse_announcement;
use ringside_kit::telemetry::{names_on_page, sample};
use ringside_testkit::NatsServer;
use ringside_testkit::kube_fake::{KubeFake, PodBuilder};
use ringside_watcher::heartbeat::Beacon;
use ringside_watcher::metrics;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const RING: &str = "proc";
const DEADLINE: Duration = Duration::from_secs(20);

/// A real nats-server with the streams and buckets provisioned.
struct Bus {
    nats: NatsServer,
    js: jetstream::Context,
}

impl Bus {
    async fn start() -> Bus {
        let nats = NatsServer::start_local_conf().await.unwrap();
        let js = jetstream::new(nats.connect_provisioned().await.unwrap());
        Bus { nats, js }
    }

    /// The members of the last stored membership event (a join or a sync), if any.
    async fn last_members(&self) -> Option<(String, Vec<String>)> {
        let stream = self.js.get_stream_no_info(STREAM_EVENTS).await.unwrap();
        let ring = RingName::new(RING).unwrap();
        let last = stream
            .direct_get_last_for_subject(subject::membership(&ring))
            .await
            .ok()?;
        let event = codec::decode(&last.payload).unwrap();
        let members = match event.body() {
            Body::MembersJoined(j) => &j.members,
            Body::MembershipSynced(s) => &s.members,
            other => panic!("unexpected {other:?}"),
        };
        let ids = members.iter().map(|m| m.id.clone()).collect();
        Some((event.producer().to_owned(), ids))
    }
}

/// A `ringside watcher <source>` process and its metrics address.
struct Watcher {
    child: Child,
    metrics: SocketAddr,
}

impl Watcher {
    /// Starts `ringside watcher <args>` on `bus` as the `watcher` user, metrics on a
    /// free port; waits for its announcement.
    async fn start(bus: &Bus, args: &[&str]) -> Watcher {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringside"))
            .arg("watcher")
            .args(args)
            .args([
                "--nats-url",
                &bus.nats.url(),
                "--ring",
                RING,
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .env_clear()
            .env(
                ServiceUser::Watcher.password_env(),
                bus.nats.password(ServiceUser::Watcher.name()).unwrap(),
            )
            .env("HOSTNAME", "proc-test")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(DEADLINE, stdout.next_line())
            .await
            .expect("the metrics address is announced")
            .unwrap()
            .expect("a line");
        let listeners = parse_announcement("watcher", &line)
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        assert_eq!(listeners.len(), 1, "{line}");
        assert_eq!(listeners[0].0, "metrics", "{line}");
        Watcher {
            child,
            metrics: listeners[0].1,
        }
    }

    async fn wait_ready(&self) {
        assert_eq!(
            ringside_testkit::http::get(self.metrics, "/livez").await,
            Some((200, "ok\n".into()))
        );
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match ringside_testkit::http::get(self.metrics, "/readyz").await {
                Some((200, _)) => return,
                // Not ready says what is missing.
                Some((503, body)) => assert!(body.starts_with("not ready: "), "{body}"),
                other => panic!("/readyz answered {other:?}"),
            }
            assert!(tokio::time::Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Checks the `/metrics` page: valid for promtool, exactly `lists`' metrics, ready.
    async fn check_page(&self, lists: &[&[&Metric]]) -> String {
        let (status, page) = ringside_testkit::http::get(self.metrics, "/metrics")
            .await
            .unwrap();
        assert_eq!(status, 200, "{page}");
        promtool_check(&page).await;
        let mut on_page = names_on_page(&page);
        on_page.sort();
        let mut listed: Vec<String> = lists
            .iter()
            .flat_map(|l| l.iter().map(|m| m.name.to_owned()))
            .collect();
        listed.sort();
        assert_eq!(on_page, listed, "{page}");
        assert_eq!(sample(&page, metrics::READY.name), Some(1.0), "{page}");
        page
    }

    /// SIGTERM: a clean exit.
    async fn terminate(mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id().unwrap()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("the watcher exits on SIGTERM")
            .unwrap();
        assert!(status.success(), "{status}");
    }
}

/// `promtool check metrics` accepts the page (Debian's `prometheus` package; `./dev`
/// installs it).
async fn promtool_check(page: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian's prometheus package; ./dev installs it)");
    let mut stdin = promtool.stdin.take().unwrap();
    stdin.write_all(page.as_bytes()).await.unwrap();
    drop(stdin);
    let output = promtool.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "promtool refused the page: {}{}\n{page}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Polls until `done` returns true.
async fn wait_until<F: Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_heartbeat_watcher_process_serves_its_probes_publishes_and_stops_on_sigterm() {
    let bus = Bus::start().await;
    let watcher = Watcher::start(
        &bus,
        &[
            "heartbeat",
            "--interval",
            "100ms",
            "--missed-beats",
            "5",
            "--lease-ttl",
            "1s",
        ],
    )
    .await;
    watcher.wait_ready().await;

    // A member beats: the watcher (once it leads) stores it as a member.
    let ring = RingName::new(RING).unwrap();
    let node = bus
        .nats
        .connect_with(
            ServiceUser::Node.connect_options(bus.nats.password(ServiceUser::Node.name()).unwrap()),
        )
        .await
        .unwrap();
    let beacon = Beacon::new(node, ring.clone());
    let member = pb::Member {
        id: "n1".into(),
        address: "127.0.0.1:7001".into(),
        weight: 1,
        ..Default::default()
    };
    let (stop_beacon, beacon_stopped) = tokio::sync::oneshot::channel::<()>();
    let beating = tokio::spawn(async move {
        beacon
            .run(member, Duration::from_millis(100), async move {
                let _ = beacon_stopped.await;
            })
            .await
    });
    // A join, or the first sync if the member beat before it was due.
    wait_until("the member is stored", || async {
        bus.last_members().await.is_some_and(|(producer, ids)| {
            assert_eq!(producer, "watcher/proc-test");
            ids.contains(&"n1".to_owned())
        })
    })
    .await;
    let page = watcher
        .check_page(&[&metrics::SHARED, &metrics::HEARTBEAT])
        .await;
    assert_eq!(sample(&page, metrics::LEASE_HELD.name), Some(1.0), "{page}");

    // SIGTERM: a clean exit that hands the lease back.
    watcher.terminate().await;
    let leases = bus.js.get_key_value(KV_LEASES).await.unwrap();
    let lease = leases
        .entry(subject::lease_key(&ring))
        .await
        .unwrap()
        .expect("the lease was written");
    assert_eq!(
        lease.operation,
        jetstream::kv::Operation::Delete,
        "released"
    );

    let _ = stop_beacon.send(());
    beating.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_kubernetes_watcher_process_serves_its_probes_publishes_and_stops_on_sigterm() {
    let bus = Bus::start().await;
    let fake = KubeFake::start("ring-proc").await.unwrap();
    fake.upsert_pod(
        PodBuilder::new("node-0")
            .label("app.kubernetes.io/name", "ringside-node")
            .port("ringside", 7000)
            .ready(true)
            .ip("10.0.0.1")
            .build(),
    );
    let watcher = Watcher::start(
        &bus,
        &[
            "kubernetes",
            "--kube-api-url",
            &fake.url(),
            "--namespace",
            "ring-proc",
        ],
    )
    .await;
    // Ready once the first sync is stored: it is there when /readyz says so.
    watcher.wait_ready().await;
    let (producer, ids) = bus.last_members().await.expect("the first sync");
    assert_eq!(
        (producer.as_str(), ids.as_slice()),
        ("watcher/proc-test", &["node-0".to_owned()][..])
    );
    let page = watcher
        .check_page(&[&metrics::SHARED, &metrics::KUBERNETES])
        .await;
    assert_eq!(sample(&page, metrics::POD_LISTS.name), Some(1.0), "{page}");
    watcher.terminate().await;
}

#[tokio::test]
async fn bad_flags_and_keys_are_refused_before_anything_starts() {
    let run = |args: &'static [&'static str], env: &'static [(&'static str, &'static str)]| async move {
        let output = Command::new(env!("CARGO_BIN_EXE_ringside"))
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .await
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    // An unknown source: the error names the valid ones.
    let err = run(&["watcher", "consul"], &[]).await;
    assert!(err.contains("kubernetes|heartbeat"), "{err}");
    // A flag of the other source.
    let err = run(&["watcher", "kubernetes", "--lease-ttl", "2s"], &[]).await;
    assert!(err.contains("--lease-ttl"), "{err}");
    let err = run(&["watcher", "heartbeat", "--namespace", "x"], &[]).await;
    assert!(err.contains("--namespace"), "{err}");
    // A misspelled key of the source's prefix, and a bad value.
    let err = run(
        &["watcher", "heartbeat"],
        &[("RINGSIDE_HEARTBEAT_TTL", "1s")],
    )
    .await;
    assert!(
        err.contains("unknown watcher setting RINGSIDE_HEARTBEAT_TTL"),
        "{err}"
    );
    let err = run(&["watcher", "kubernetes", "--port", "0"], &[]).await;
    assert!(err.contains("RINGSIDE_WATCHER_PORT"), "{err}");
}
