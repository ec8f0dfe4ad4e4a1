//! `ringside watcher heartbeat` as a process: configured from flags and the
//! environment (the `watcher` user's password), ready on `/readyz` once listening,
//! publishes a beating member, and on SIGTERM releases its lease and exits
//! 0. Real nats-server (`nats/local.conf`), bounded waits.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test harness: a failed setup step must fail the test loudly"
)]

use std::process::Stdio;
use std::time::Duration;

use async_nats::jetstream;
use ringside_events::subject::{self, KV_LEASES, STREAM_EVENTS};
use ringside_events::{Body, Definitions, RingName, ServiceUser, codec, pb, provision};
use ringside_testkit::NatsServer;
use ringside_watcher::heartbeat::Beacon;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const RING: &str = "proc";
const DEADLINE: Duration = Duration::from_secs(20);

/// `GET path` on `addr`; the status code.
async fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn the_heartbeat_watcher_process_serves_readiness_publishes_and_stops_on_sigterm() {
    let nats = NatsServer::start_local_conf().await.unwrap();
    let admin = nats
        .connect_with(
            ServiceUser::Admin.connect_options(nats.password(ServiceUser::Admin.name()).unwrap()),
        )
        .await
        .unwrap();
    let js = jetstream::new(admin.clone());
    provision(&js, &Definitions::builtin().unwrap())
        .await
        .unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_ringside"))
        .args([
            "watcher",
            "heartbeat",
            "--nats-url",
            &nats.url(),
            "--ring",
            RING,
            "--health-addr",
            "127.0.0.1:0",
            "--interval",
            "100ms",
            "--missed-beats",
            "5",
            "--lease-ttl",
            "1s",
        ])
        .env_clear()
        .env(
            ServiceUser::Watcher.password_env(),
            nats.password(ServiceUser::Watcher.name()).unwrap(),
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
        .expect("the health address is printed")
        .unwrap()
        .expect("a line");
    let addr = line
        .strip_prefix("watcher listening health=")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert_eq!(http_status(&addr, "/livez").await, Some(200));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while http_status(&addr, "/readyz").await != Some(200) {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A member beats: the watcher (once it leads) stores it as a member.
    let ring = RingName::new(RING).unwrap();
    let node = nats
        .connect_with(
            ServiceUser::Node.connect_options(nats.password(ServiceUser::Node.name()).unwrap()),
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
    let stream = js.get_stream_no_info(STREAM_EVENTS).await.unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(last) = stream
            .direct_get_last_for_subject(subject::membership(&ring))
            .await
        {
            let event = codec::decode(&last.payload).unwrap();
            assert_eq!(event.producer(), "watcher/proc-test");
            // A join, or the first sync if the member beat before it was due.
            let members = match event.body() {
                Body::MembersJoined(j) => &j.members,
                Body::MembershipSynced(s) => &s.members,
                other => panic!("unexpected {other:?}"),
            };
            if members.iter().any(|m| m.id == "n1") {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the member was never stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // SIGTERM: a clean exit that hands the lease back.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("the watcher exits on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    let leases = js.get_key_value(KV_LEASES).await.unwrap();
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
