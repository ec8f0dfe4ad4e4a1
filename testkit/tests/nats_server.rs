//! The harness itself: start, kill, restart on the same port and store, cleanup.

// Helper functions of this test file unwrap too: a failure there fails the test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ringside_testkit::{NatsServer, ServerOptions, TestkitError};

fn alive(pid: u32) -> bool {
    // A live process (not a zombie: the harness reaps what it kills).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && stat.split_whitespace().nth(2) != Some("Z")
}

#[tokio::test]
async fn starts_kills_restarts_on_same_port_and_store_then_cleans_up() {
    let mut server = NatsServer::start().await.unwrap();
    let port = server.port();
    assert_ne!(port, 0);
    assert!(server.url().starts_with("nats://127.0.0.1:"));
    let store = server.store_dir().to_path_buf();

    let client = server.connect().await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "T".into(),
        subjects: vec!["t.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish("t.a", "x".into()).await.unwrap().await.unwrap();

    let first = server.pid().unwrap();
    server.kill().await.unwrap();
    assert!(!server.is_running());
    assert!(!alive(first), "killed server still running");
    assert_eq!(server.pid(), None);
    assert!(matches!(
        server.connect().await,
        Err(TestkitError::NotRunning)
    ));

    server.restart().await.unwrap();
    assert_eq!(server.port(), port, "restart keeps the port");
    assert_eq!(server.store_dir(), store);
    // The stored message survived the SIGKILL (sync_interval is irrelevant here: the
    // server wrote it before acking and the OS kept the page cache).
    let js = async_nats::jetstream::new(server.connect().await.unwrap());
    let mut stream = js.get_stream("T").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);

    let second = server.pid().unwrap();
    assert!(alive(second));
    drop(server);
    assert!(!alive(second), "server survived drop");
    assert!(!store.exists(), "store dir removed on drop");
}

#[tokio::test]
async fn a_config_error_is_reported_with_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad.conf");
    std::fs::write(&conf, "this is { not a config").unwrap();
    let options = ServerOptions {
        config_file: Some(conf),
        startup_timeout: Duration::from_secs(10),
        ..ServerOptions::default()
    };
    let err = NatsServer::start_with_config(options).await.unwrap_err();
    match err {
        TestkitError::Server(ringside_natsd::NatsdError::NotReady {
            reason, log_tail, ..
        }) => {
            assert!(reason.starts_with("exited"), "{reason}");
            assert!(!log_tail.is_empty());
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
}

#[tokio::test]
async fn max_lifetime_kills_the_server() {
    let options = ServerOptions {
        max_lifetime: Duration::from_secs(2),
        ..ServerOptions::default()
    };
    let server = NatsServer::start_with_config(options).await.unwrap();
    let pid = server.pid().unwrap();
    assert!(alive(pid));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "server outlived max_lifetime"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
