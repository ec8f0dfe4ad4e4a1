//! Child processes that die with their parent: every long-running program `ringside
//! up` and the tests start (nats-server, the services, Prometheus) is started through
//! [`tied_to_parent`], so a parent that is SIGKILLed leaves nothing running, and
//! stopped by [`terminate`].

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Where `setpriv` (util-linux) is on Debian.
const SETPRIV: &str = "/usr/bin/setpriv";

/// A command that runs `program` under `setpriv --pdeathsig <signal>` where `setpriv`
/// exists (the kernel sends `signal`, `TERM` or `KILL`, to it when the parent dies;
/// `setpriv` execs the program, so the pid is the program's), else `program` itself.
/// It is also killed when its handle is dropped.
pub fn tied_to_parent(program: &Path, signal: &str) -> Command {
    let setpriv = Path::new(SETPRIV);
    let mut command = if setpriv.is_file() {
        let mut c = Command::new(setpriv);
        c.args(["--pdeathsig", signal, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.kill_on_drop(true);
    command
}

/// The first `name` on `PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// How a child stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// It exited within the grace period, with this status.
    Exited(ExitStatus),
    /// It did not, and was killed.
    Killed,
}

/// Stops `child`: SIGTERM, then SIGKILL if it has not exited within `grace`.
pub async fn terminate(child: &mut Child, grace: Duration) -> std::io::Result<Stopped> {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // A child started by `tied_to_parent` may be setpriv, which execs the program:
        // the same pid.
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.map(Stopped::Exited),
        Err(_) => {
            child.kill().await?;
            Ok(Stopped::Killed)
        }
    }
}
