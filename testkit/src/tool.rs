//! External command-line tools run for a bounded time: [`run_within`] feeds a command
//! its input, reads its output while it runs (a tool that prints more than a pipe
//! holds must not stall), and kills it when it overruns. promtool, kubectl, yamllint,
//! kubernetes-validate and checkov run through it.

use std::io::{Read, Write as _};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// What a tool printed and whether it exited 0.
#[derive(Debug)]
pub struct ToolOutput {
    /// It exited with status 0.
    pub success: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl ToolOutput {
    /// Standard output, then standard error: everything it said.
    pub fn said(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `command` with `stdin` as its input for at most `within`: what it printed and
/// whether it exited 0, or why it could not run (not found, killed after `within`).
pub fn run_within(
    command: &mut Command,
    stdin: &str,
    within: Duration,
) -> Result<ToolOutput, String> {
    let name = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {name} ({e})"))?;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    // Written and closed (dropped) at once; a tool that does not read its input may
    // have closed it, which is no error of the run.
    let input = stdin.to_owned();
    let mut pipe = child.stdin.take();
    let writer = thread::spawn(move || {
        if let Some(pipe) = pipe.as_mut() {
            let _ = pipe.write_all(input.as_bytes());
        }
    });
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
        thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    let join = |h: thread::JoinHandle<String>| h.join().unwrap_or_default();
    Ok(ToolOutput {
        success: status.success(),
        stdout: join(stdout),
        stderr: join(stderr),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_larger_than_a_pipe_is_read_and_an_overrun_is_killed() {
        let big = "x".repeat(1 << 20);
        let out = run_within(Command::new("cat").arg("-"), &big, Duration::from_secs(20)).unwrap();
        assert!(out.success);
        assert_eq!(out.stdout.len(), big.len());
        let err = run_within(
            Command::new("sleep").arg("10"),
            "",
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(err.contains("more than"), "{err}");
        let err = run_within(
            &mut Command::new("no-such-tool-here"),
            "",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(err.contains("cannot run"), "{err}");
    }
}
