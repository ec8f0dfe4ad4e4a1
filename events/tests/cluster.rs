//! nats/cluster.conf as three real servers on loopback: streams with 3 replicas keep
//! taking acknowledged events while one server is SIGKILLed.

// Helper functions of this test file unwrap too: a failure there fails the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use ringside_events::subject::STREAM_EVENTS;
use ringside_events::{Definitions, Event, Publisher, RetryPolicy, ServiceUser, provision};
use ringside_testkit::{LocalAuth, NatsServer, ServerOptions, workspace_root};

fn free_port() -> u16 {
    // Bound and released right away; the server binds it a moment later.
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_cluster() -> Vec<NatsServer> {
    let auth = LocalAuth::generate().unwrap();
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut servers = Vec::new();
    for (i, port) in routes.iter().enumerate() {
        let mut env = BTreeMap::new();
        env.insert("RINGSIDE_NATS_SERVER_NAME".into(), format!("nats-{i}"));
        env.insert("RINGSIDE_NATS_CLIENT_LISTEN".into(), "127.0.0.1:-1".into());
        env.insert("RINGSIDE_NATS_HTTP_LISTEN".into(), "127.0.0.1:-1".into());
        env.insert(
            "RINGSIDE_NATS_CLUSTER_LISTEN".into(),
            format!("127.0.0.1:{port}"),
        );
        for (j, route) in routes.iter().enumerate() {
            env.insert(
                format!("RINGSIDE_NATS_ROUTE_{j}"),
                format!("nats://127.0.0.1:{route}"),
            );
        }
        let options = ServerOptions {
            config_file: Some(workspace_root().join("nats/cluster.conf")),
            auth: Some(auth.clone()),
            env,
            ..ServerOptions::default()
        };
        servers.push(NatsServer::start_with_config(options).await.unwrap());
    }
    servers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_keep_storing_while_one_server_is_killed() {
    let mut servers = start_cluster().await;
    let admin = servers[0].connect_as(ServiceUser::Admin).await.unwrap();
    let js = jetstream::new(admin.clone());
    // The cluster elects its JetStream meta leader after start; provisioning waits.
    let defs = Definitions::builtin().unwrap().with_replicas(3);
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = provision(&js, &defs).await {
        assert!(
            Instant::now() < deadline,
            "provisioning never succeeded: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut stream = js.get_stream(STREAM_EVENTS).await.unwrap();
    assert_eq!(stream.info().await.unwrap().config.num_replicas, 3);

    let publisher = Publisher::with_policy(
        servers[0].connect_as(ServiceUser::Watcher).await.unwrap(),
        RetryPolicy {
            max_attempts: 30,
            ack_timeout: Duration::from_secs(1),
            ..RetryPolicy::default()
        },
    );
    let events: Vec<Event> = (0..200).map(common::joined).collect();
    publisher.publish_batch(&events[..100]).await.unwrap();
    // Kill a server the client is not connected to; two of three still form a quorum.
    servers[2].kill().await.unwrap();
    let started = Instant::now();
    let second = publisher.publish_batch(&events[100..]).await.unwrap();
    println!(
        "100 events with one of three servers killed: {:?}",
        started.elapsed()
    );
    assert_eq!(second.stored, 100);
    assert_eq!(stream.info().await.unwrap().state.messages, 200);

    // The killed server comes back and catches up.
    servers[2].restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = stream.info().await.unwrap();
        let replicas = info
            .cluster
            .as_ref()
            .map(|c| c.replicas.clone())
            .unwrap_or_default();
        if replicas.len() == 2 && replicas.iter().all(|r| r.current) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica never caught up: {replicas:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
