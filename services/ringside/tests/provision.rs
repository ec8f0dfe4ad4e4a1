//! `ringside provision` as the Kubernetes Job runs it: against a real nats-server with
//! `nats/local.conf`'s users, as `admin` with the password from the environment. It
//! creates every stream and bucket, a second run changes nothing, and a wrong password
//! is an error once `--wait` has passed.

use std::process::Command;
use std::time::Duration;

use ringside_events::{Definitions, ServiceUser};
use ringside_testkit::NatsServer;
use ringside_testkit::tool::run_within;

fn provision(url: &str, password: &str, extra: &[&str]) -> (bool, String) {
    let out = run_within(
        Command::new(env!("CARGO_BIN_EXE_ringside"))
            .args(["provision", "--nats-url", url])
            .args(extra)
            .env(ServiceUser::Admin.password_env(), password),
        "",
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (out.success, out.said())
}

#[tokio::test]
async fn provisions_every_stream_once_as_admin() {
    let nats = NatsServer::start_local_conf().await.unwrap();
    let admin = nats.password(ServiceUser::Admin.name()).unwrap().to_owned();
    let streams: Vec<String> = Definitions::builtin()
        .unwrap()
        .iter()
        .map(|d| d.config.name.clone())
        .collect();
    let (ok, said) = provision(&nats.url(), &admin, &[]);
    assert!(ok, "{said}");
    for stream in &streams {
        assert!(said.contains(&format!("{stream}: Created")), "{said}");
    }
    let (ok, said) = provision(&nats.url(), &admin, &[]);
    assert!(ok, "{said}");
    for stream in &streams {
        assert!(said.contains(&format!("{stream}: Unchanged")), "{said}");
    }
    let (ok, said) = provision(&nats.url(), "wrong", &["--wait", "1s"]);
    assert!(!ok, "{said}");
    assert!(said.contains("gave up provisioning"), "{said}");
}
