//! Prometheus's own tools on what the services export: `promtool check metrics` on a
//! `/metrics` page, and any promtool command (the rules' tests). promtool comes with
//! Debian's `prometheus` package, which `./dev` installs.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long promtool may run.
const PROMTOOL_WITHIN: Duration = Duration::from_secs(60);

/// Runs `promtool <args>` in `dir` with `stdin` as its input, for at most a minute:
/// what it printed (stdout then stderr) and whether it exited 0, or why it could not
/// run.
pub fn promtool(args: &[&str], dir: &Path, stdin: &str) -> Result<(bool, String), String> {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run promtool ({e}); `./dev setup` installs it"))?;
    // Written and closed (dropped) at once: promtool reads to the end first.
    let input = child
        .stdin
        .take()
        .ok_or("no stdin for promtool")?
        .write_all(stdin.as_bytes());
    let deadline = Instant::now() + PROMTOOL_WITHIN;
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!(
                "promtool {args:?} ran for more than {PROMTOOL_WITHIN:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    input.map_err(|e| format!("writing to promtool: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for promtool: {e}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), said))
}

/// Runs `promtool check metrics` on `page`: `Ok` if it passes (lint warnings included
/// in the error otherwise), `Err` with what promtool said, or why it could not run.
pub fn check_metrics(page: &str) -> Result<(), String> {
    let (passed, said) = promtool(&["check", "metrics"], Path::new("."), page)?;
    // promtool exits 0 with lint findings printed; any output is a finding.
    if passed && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool check metrics:\n{said}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_page_passes_and_a_bad_one_is_named() {
        let good = "# HELP x_total Things.\n# TYPE x_total counter\nx_total 1\n";
        check_metrics(good).unwrap();
        // A counter without `_total` is a lint finding.
        let bad = "# HELP x Things.\n# TYPE x counter\nx 1\n";
        let err = check_metrics(bad).unwrap_err();
        assert!(err.contains("x"), "{err}");
    }
}
