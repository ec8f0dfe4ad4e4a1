//! Prometheus's own tools on what the services export: `promtool check metrics` on a
//! `/metrics` page (Debian's `prometheus` package, which `./dev` installs).

use std::io::Write as _;
use std::process::{Command, Stdio};

/// Runs `promtool check metrics` on `page`: `Ok` if it passes (lint warnings included
/// in the error otherwise), `Err` with what promtool said, or why it could not run.
pub fn check_metrics(page: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run promtool ({e}); `./dev setup` installs it"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin for promtool")?
        .write_all(page.as_bytes())
        .map_err(|e| format!("writing to promtool: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for promtool: {e}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool exits 0 with lint findings printed; any output is a finding.
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool check metrics: {}\n{said}", out.status))
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
