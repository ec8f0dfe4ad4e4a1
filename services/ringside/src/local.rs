//! The local system's state directory (`.ringside/` by default): where `ringside up`
//! keeps its NATS store, generated passwords, logs and the record of the running
//! system that the other commands (`scale`, `tail`, `replay`) read to find it.
//!
//! ```text
//! .ringside/
//!   credentials.env   per-service NATS passwords (0600, generated on first run)
//!   conf/             nats/local.conf and permissions.conf, as built into the binary
//!   nats/             the JetStream store (kept across runs; --fresh removes it)
//!   nats-server.log   the server's log
//!   prometheus/       Prometheus's configuration, TSDB and log (--fresh removes it)
//!   up.json           the running system: URLs, ring, pid (removed on a clean stop)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// `nats/local.conf`, built into the binary so `ringside up` runs outside a checkout.
const LOCAL_CONF: &str = include_str!("../../../nats/local.conf");
/// `nats/permissions.conf`, which `local.conf` includes.
const PERMISSIONS_CONF: &str = include_str!("../../../nats/permissions.conf");

/// Paths under a state directory.
#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    root: PathBuf,
}

/// What `ringside up` records about the running system.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Running {
    /// Process id of `ringside up`.
    pub(crate) pid: u32,
    /// The ring.
    pub(crate) ring: String,
    /// NATS client URL.
    pub(crate) nats_url: String,
    /// The reducer's gRPC RingService.
    pub(crate) grpc: SocketAddr,
    /// The reducer's /metrics, /livez, /readyz.
    pub(crate) metrics: SocketAddr,
    /// Every listener of the system by `<service>.<listener>` (`up.status`,
    /// `reducer.grpc`, `watcher.metrics`, ...), for tools and scrapers.
    #[serde(default)]
    pub(crate) endpoints: std::collections::BTreeMap<String, SocketAddr>,
}

impl StateDir {
    /// The state directory at `root` (not created yet).
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The password env file.
    pub(crate) fn credentials(&self) -> PathBuf {
        self.root.join("credentials.env")
    }

    /// The JetStream store.
    pub(crate) fn store(&self) -> PathBuf {
        self.root.join("nats")
    }

    /// The server's log.
    pub(crate) fn server_log(&self) -> PathBuf {
        self.root.join("nats-server.log")
    }

    /// Prometheus's configuration, data and log.
    pub(crate) fn prometheus(&self) -> PathBuf {
        self.root.join("prometheus")
    }

    fn running_file(&self) -> PathBuf {
        self.root.join("up.json")
    }

    /// Creates the directory and writes the server configs; returns `local.conf`.
    pub(crate) fn prepare(&self) -> anyhow::Result<PathBuf> {
        let conf = self.root.join("conf");
        std::fs::create_dir_all(&conf)
            .with_context(|| format!("cannot create {}", conf.display()))?;
        for (name, text) in [
            ("local.conf", LOCAL_CONF),
            ("permissions.conf", PERMISSIONS_CONF),
        ] {
            let path = conf.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(conf.join("local.conf"))
    }
}

/// What a state directory's `up.json` says.
#[derive(Debug)]
pub(crate) enum Recorded {
    /// No record: no `up` ran here, or it stopped cleanly.
    Absent,
    /// The `up` that wrote it is running.
    Running(Running),
    /// Its `up` is gone without removing it (killed): its URL may now be another
    /// system's.
    Stale(Running),
}

impl StateDir {
    /// The running system recorded here, if its process is still alive.
    pub(crate) fn running(&self) -> anyhow::Result<Option<Running>> {
        Ok(match self.record_of_up()? {
            Recorded::Running(running) => Some(running),
            Recorded::Absent | Recorded::Stale(_) => None,
        })
    }

    /// What `up.json` says: nothing, a running `up`, or one that is gone.
    pub(crate) fn record_of_up(&self) -> anyhow::Result<Recorded> {
        let path = self.running_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Recorded::Absent),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let running: Running = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a ringside up record; delete it if no ringside up is running",
                path.display()
            )
        })?;
        Ok(if is_ringside(running.pid) {
            Recorded::Running(running)
        } else {
            Recorded::Stale(running)
        })
    }

    /// The record's path (`up.json`), for messages.
    pub(crate) fn record_path(&self) -> PathBuf {
        self.running_file()
    }

    /// Records the running system: written whole to a temporary file, then renamed,
    /// so a tool reading the record while `up` rewrites it (a restarted service moved
    /// an endpoint) never sees half of it.
    pub(crate) fn record(&self, running: &Running) -> anyhow::Result<()> {
        let path = self.running_file();
        let temporary = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(running)?;
        std::fs::write(&temporary, text)
            .with_context(|| format!("cannot write {}", temporary.display()))?;
        std::fs::rename(&temporary, &path)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Removes the record (on a clean stop).
    pub(crate) fn clear(&self) {
        let _ = std::fs::remove_file(self.running_file());
    }

    /// Removes the store and the server log (`--fresh`); keeps the passwords.
    pub(crate) fn wipe_history(&self) -> anyhow::Result<()> {
        for path in [self.store(), self.server_log(), self.prometheus()] {
            let result = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match result {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", path.display()));
                }
            }
        }
        Ok(())
    }
}

/// The status code of `GET path` on `addr` (loopback probes: `/readyz`), or `None` if
/// nothing answered properly within 2 s.
pub(crate) async fn http_status(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        // `HTTP/1.1 200`
        std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()
    };
    tokio::time::timeout(std::time::Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// Whether a process with this pid exists (signal 0 probes without signalling) and
/// is a `ringside` (not another program that got the pid of an `up` long gone).
fn is_ringside(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None).is_err() {
        return false;
    }
    // Without /proc (not Linux), the pid alone has to do.
    std::fs::read(format!("/proc/{pid}/cmdline")).map_or(true, |cmdline| {
        String::from_utf8_lossy(&cmdline).contains("ringside")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_and_a_dead_pid_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        state.prepare().unwrap();
        assert!(dir.path().join("conf/permissions.conf").is_file());
        assert_eq!(state.running().unwrap(), None);
        let mut running = Running {
            pid: std::process::id(),
            ring: "default".into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            grpc: "127.0.0.1:7420".parse().unwrap(),
            metrics: "127.0.0.1:9420".parse().unwrap(),
            endpoints: [("reducer.grpc".to_owned(), "127.0.0.1:7420".parse().unwrap())].into(),
        };
        state.record(&running).unwrap();
        assert_eq!(state.running().unwrap(), Some(running.clone()));
        running.pid = u32::MAX;
        state.record(&running).unwrap();
        assert_eq!(state.running().unwrap(), None);
        std::fs::write(dir.path().join("up.json"), "{").unwrap();
        assert!(state.running().is_err());
        state.clear();
        assert_eq!(state.running().unwrap(), None);
    }
}
