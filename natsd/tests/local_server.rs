//! The real nats-server from `.venv` with `nats/local.conf`: start on a free port,
//! refuse a taken port with a clear error, stop gracefully, keep the store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ringside_natsd::{LocalServer, NatsdError, Passwords, ServerConfig, find_binary};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn config(dir: &Path, port: u16) -> ServerConfig {
    ServerConfig {
        binary: find_binary(&[&root()]).unwrap(),
        config_file: Some(root().join("nats/local.conf")),
        store_dir: dir.join("store"),
        log_file: dir.join(format!("nats-{port}.log")),
        port,
        passwords: Some(Passwords::load_or_generate(&dir.join("credentials.env")).unwrap()),
        startup_timeout: Duration::from_secs(15),
        memory_limit_bytes: 512 << 20,
        env: Vec::new(),
    }
}

#[tokio::test]
async fn starts_refuses_a_taken_port_and_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let first = LocalServer::start(&config(dir.path(), 0)).await.unwrap();
    assert_ne!(first.port(), 0);
    assert!(std::net::TcpStream::connect(("127.0.0.1", first.port())).is_ok());

    let other = tempfile::tempdir().unwrap();
    let err = LocalServer::start(&config(other.path(), first.port()))
        .await
        .unwrap_err();
    assert!(matches!(err, NatsdError::PortInUse { .. }), "{err}");
    assert!(err.to_string().contains("already in use"), "{err}");

    let port = first.port();
    let status = first.stop(Duration::from_secs(10)).await.unwrap();
    assert!(status.success() || status.code().is_none(), "{status}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(
        dir.path().join("store/jetstream").is_dir(),
        "the store is kept"
    );
}

#[tokio::test]
async fn a_missing_config_is_reported_with_the_log_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 0);
    cfg.config_file = Some(dir.path().join("missing.conf"));
    let err = LocalServer::start(&cfg).await.unwrap_err();
    assert!(matches!(err, NatsdError::NotReady { .. }), "{err}");
    assert!(err.to_string().contains("missing.conf"), "{err}");
}
