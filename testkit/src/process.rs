//! External tools run from tests (promtool, podman, cargo), each bounded in time: a
//! tool that hangs fails the test with a message instead of hanging it.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `command` with `stdin` as its input for at most `within`: whether it exited 0
/// and what it printed (stdout then stderr), or why it could not run (`name` says
/// what, `hint` how to get it).
pub fn run_bounded(
    command: &mut Command,
    stdin: &str,
    within: Duration,
) -> Result<(bool, String), String> {
    let name = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {name}: {e}"))?;
    // Written and closed (dropped) at once: the tools read their input to the end first.
    let input = child
        .stdin
        .take()
        .ok_or_else(|| format!("no stdin for {name}"))?
        .write_all(stdin.as_bytes());
    // Read the output while it runs, so a tool that prints a lot does not block on a
    // full pipe.
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out = std::thread::spawn(move || read_all(stdout.as_mut()));
    let err = std::thread::spawn(move || read_all(stderr.as_mut()));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{name} ran for more than {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    input.map_err(|e| format!("writing to {name}: {e}"))?;
    let said = format!(
        "{}{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    Ok((status.success(), said))
}

fn read_all(pipe: Option<&mut impl std::io::Read>) -> String {
    let mut bytes = Vec::new();
    if let Some(pipe) = pipe {
        let _ = pipe.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
