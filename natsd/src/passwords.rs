//! Per-service passwords for `nats/local.conf`, which reads them from environment
//! variables (`RINGSIDE_NATS_PASSWORD_<USER>`), so generated credentials never land in
//! git. `ringside up` keeps them in a 0600 env file under `.ringside/`; tests generate
//! fresh ones per server. They are passed to child processes only, never set in our
//! own environment.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read as _;
use std::path::Path;

use crate::{NatsdError, io_err};

/// The service users defined in `nats/permissions.conf`, in the order of its matrix.
pub const SERVICE_USERS: [&str; 6] = ["watcher", "reducer", "node", "collector", "bridge", "admin"];

/// The environment variable that carries the password of `user`.
pub fn password_env(user: &str) -> String {
    format!("RINGSIDE_NATS_PASSWORD_{}", user.to_ascii_uppercase())
}

/// Passwords of the service users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passwords {
    by_user: BTreeMap<String, String>,
}

impl Passwords {
    /// Fresh random passwords (128 bits each) for every user in [`SERVICE_USERS`].
    pub fn generate() -> Result<Self, NatsdError> {
        let mut by_user = BTreeMap::new();
        for user in SERVICE_USERS {
            by_user.insert(user.to_string(), random_hex(16)?);
        }
        Ok(Self { by_user })
    }

    /// Reads the env file at `path`, or generates passwords and writes it (mode 0600).
    pub fn load_or_generate(path: &Path) -> Result<Self, NatsdError> {
        if path.exists() {
            return Self::load(path);
        }
        let passwords = Self::generate()?;
        passwords.save(path)?;
        Ok(passwords)
    }

    /// Reads an env file of `RINGSIDE_NATS_PASSWORD_<USER>=<password>` lines.
    pub fn load(path: &Path) -> Result<Self, NatsdError> {
        let bad = |reason: String| NatsdError::BadPasswordFile {
            path: path.display().to_string(),
            reason,
        };
        let text =
            std::fs::read_to_string(path).map_err(io_err(format!("reading {}", path.display())))?;
        let mut by_user = BTreeMap::new();
        for user in SERVICE_USERS {
            let key = format!("{}=", password_env(user));
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix(&key))
                .ok_or_else(|| bad(format!("no password for user '{user}'")))?;
            if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(bad(format!("the password of '{user}' is not alphanumeric")));
            }
            by_user.insert(user.to_string(), value.to_string());
        }
        Ok(Self { by_user })
    }

    /// Writes the env file (mode 0600, created new or truncated).
    pub fn save(&self, path: &Path) -> Result<(), NatsdError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let what = format!("writing {}", path.display());
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err(what.clone()))?;
        let mut text =
            String::from("# ringside local NATS passwords (generated; keep out of git)\n");
        for (name, value) in self.env() {
            text.push_str(&format!("{name}={value}\n"));
        }
        file.write_all(text.as_bytes()).map_err(io_err(what))
    }

    /// The password of `user`, if it is one of [`SERVICE_USERS`].
    pub fn password(&self, user: &str) -> Option<&str> {
        self.by_user.get(user).map(String::as_str)
    }

    /// The variables to pass to the server process.
    pub fn env(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.by_user
            .iter()
            .map(|(user, pass)| (password_env(user), pass.clone()))
    }
}

fn random_hex(bytes: usize) -> Result<String, NatsdError> {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(io_err("reading /dev/urandom"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_kept_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.env");
        let first = Passwords::load_or_generate(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Passwords::load_or_generate(&path).unwrap(), first);
        assert_ne!(Passwords::generate().unwrap(), first);
        assert_eq!(first.password("admin").unwrap().len(), 32);
        assert!(first.password("nobody").is_none());
    }

    #[test]
    fn a_broken_password_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.env");
        std::fs::write(&path, "RINGSIDE_NATS_PASSWORD_ADMIN=abc\n").unwrap();
        let err = Passwords::load(&path).unwrap_err().to_string();
        assert!(err.contains("no password for user 'watcher'"), "{err}");
        assert!(err.contains("delete it"), "{err}");
    }
}
