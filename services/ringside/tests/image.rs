//! The container image, tested for real with podman: the final stage of the
//! `Dockerfile` (the same lines) built from a static binary built on the host (no
//! image registry is reachable here, so the Rust builder stage is not pulled), run with
//! a read-only root file system, every capability dropped and user 65532: `ringside
//! --version`, no shell in the image, and a service (the collector, on a real
//! nats-server on loopback) answering `/livez` and `/readyz`. Skipped, saying so, where
//! podman is not installed (`./dev setup` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ringside_testkit::NatsServer;
use ringside_testkit::tool::run_within;

const IMAGE: &str = "localhost/ringside:test";

/// The static release binary, built on the host into its own target directory.
fn static_binary(root: &Path) -> PathBuf {
    let target = root.join("target/static");
    let out = run_within(
        Command::new(env!("CARGO"))
            .args(["build", "--release", "--locked", "-p", "ringside"])
            .args(["--target", "x86_64-unknown-linux-gnu"])
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(root),
        "",
        Duration::from_secs(25 * 60),
    )
    .unwrap();
    assert!(out.success, "the static build failed:\n{}", out.said());
    target.join("x86_64-unknown-linux-gnu/release/ringside")
}

/// The Dockerfile's final stage, taking the binary from the build context instead of
/// the builder stage.
fn final_stage(dockerfile: &str) -> String {
    let start = dockerfile
        .find("FROM scratch AS runtime")
        .expect("the Dockerfile has a `FROM scratch AS runtime` stage");
    let stage = &dockerfile[start..];
    assert!(stage.contains("--from=build "), "{stage}");
    stage
        .replace("--from=build ", "")
        .replace("/out/ringside", "ringside")
}

/// podman with the settings this kind of machine needs (runc, cgroupfs, ulimits within
/// the hard limits; STACK.md).
fn podman(conf: &Path, args: &[&str], within: Duration) -> (bool, String) {
    let out = run_within(
        Command::new("podman")
            .args(args)
            .env("CONTAINERS_CONF", conf),
        "",
        within,
    )
    .unwrap();
    (out.success, out.said())
}

fn containers_conf(dir: &Path) -> PathBuf {
    let limit = |flag: &str| -> u64 {
        let out = Command::new("sh")
            .args(["-c", &format!("ulimit -H{flag}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(1024)
    };
    let (nofile, nproc) = (limit("n"), limit("u").min(32768));
    let conf = dir.join("containers.conf");
    std::fs::write(
        &conf,
        format!(
            "[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\n\n[containers]\ndefault_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]\n"
        ),
    )
    .unwrap();
    conf
}

const RUN_LOCKED_DOWN: [&str; 9] = [
    "run",
    "--rm",
    "--read-only",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    "--user",
    "65532:65532",
    "--network=host",
    "--pull=never",
];

#[test]
fn the_image_runs_locked_down_and_serves() {
    if Command::new("podman").arg("--version").output().is_err() {
        println!("SKIPPED: podman is not installed (./dev setup installs podman and runc)");
        return;
    }
    let root = ringside_testkit::workspace_root();
    let binary = static_binary(&root);
    let context = tempfile::tempdir().unwrap();
    // Stripped, as the build stage strips it.
    let out = run_within(
        Command::new("strip")
            .arg("-o")
            .arg(context.path().join("ringside"))
            .arg(&binary),
        "",
        Duration::from_secs(120),
    )
    .unwrap();
    assert!(out.success, "strip: {}", out.said());
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    std::fs::write(
        context.path().join("Containerfile"),
        final_stage(&dockerfile),
    )
    .unwrap();
    let conf = containers_conf(context.path());
    let context_dir = context.path().to_str().unwrap();
    let minutes = Duration::from_secs(300);
    let (ok, said) = podman(
        &conf,
        &["build", "-t", IMAGE, "-f", "Containerfile", context_dir],
        minutes,
    );
    assert!(ok, "podman build:\n{said}");

    // What the image is: one binary, user 65532, nothing else.
    let (ok, said) = podman(
        &conf,
        &[
            "image",
            "inspect",
            IMAGE,
            "--format",
            "{{.Config.User}} {{.Size}}",
        ],
        minutes,
    );
    assert!(ok, "{said}");
    let mut parts = said.split_whitespace();
    assert_eq!(parts.next(), Some("65532:65532"));
    let size: u64 = parts.next().unwrap().parse().unwrap();
    println!("image size: {:.1} MB", size as f64 / 1e6);

    // `ringside --version`, locked down.
    let mut args = RUN_LOCKED_DOWN.to_vec();
    args.extend([IMAGE, "--version"]);
    let (ok, said) = podman(&conf, &args, minutes);
    assert!(ok, "{said}");
    assert!(
        said.contains(&format!("ringside {}", env!("CARGO_PKG_VERSION"))),
        "{said}"
    );
    // No shell to run.
    let mut args = RUN_LOCKED_DOWN.to_vec();
    args.extend(["--entrypoint", "/bin/sh", IMAGE, "-c", "true"]);
    let (ok, _) = podman(&conf, &args, minutes);
    assert!(!ok, "the image has a shell");

    // A service: the collector on a real nats-server, answering its probes.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(NatsServer::start_local_conf()).unwrap();
    let _admin = rt.block_on(server.connect_provisioned()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let name = format!("ringside-image-test-{}", std::process::id());
    let mut args = RUN_LOCKED_DOWN.to_vec();
    let env = [
        format!("RINGSIDE_NATS_URL={}", server.url()),
        format!(
            "RINGSIDE_NATS_PASSWORD_COLLECTOR={}",
            server.password("collector").unwrap()
        ),
        format!("RINGSIDE_COLLECTOR_METRICS_ADDR=127.0.0.1:{port}"),
    ];
    args.retain(|a| *a != "--rm");
    args.extend(["-d", "--name", &name]);
    for e in &env {
        args.extend(["--env", e]);
    }
    args.extend([IMAGE, "collector"]);
    let (ok, said) = podman(&conf, &args, minutes);
    assert!(ok, "{said}");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answers = (None, None);
    while Instant::now() < deadline {
        answers = (
            rt.block_on(ringside_testkit::http::get(addr, "/livez"))
                .map(|a| a.0),
            rt.block_on(ringside_testkit::http::get(addr, "/readyz"))
                .map(|a| a.0),
        );
        if answers == (Some(200), Some(200)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, logs) = podman(&conf, &["logs", &name], minutes);
    podman(&conf, &["rm", "-f", &name], minutes);
    assert_eq!(
        answers,
        (Some(200), Some(200)),
        "the collector in the image:\n{logs}"
    );
}
