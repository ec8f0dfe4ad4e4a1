//! Child processes that die with their parent: every long-running program `ringside
//! up` and the tests start (nats-server, the services, Prometheus) is started through
//! [`tied_to_parent`], so a parent that is SIGKILLed leaves nothing running.

use std::path::{Path, PathBuf};

use tokio::process::Command;

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
