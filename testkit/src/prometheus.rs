//! Prometheus's own tools on what the services export: `promtool check metrics` on a
//! `/metrics` page, and any promtool command (the rules' tests). promtool comes with
//! Debian's `prometheus` package, which `./dev` installs.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::tool::run_within;

/// How long promtool may run.
const PROMTOOL_WITHIN: Duration = Duration::from_secs(60);

/// Runs `promtool <args>` in `dir` with `stdin` as its input, for at most a minute:
/// what it printed (stdout then stderr) and whether it exited 0, or why it could not
/// run.
pub fn promtool(args: &[&str], dir: &Path, stdin: &str) -> Result<(bool, String), String> {
    let out = run_within(
        Command::new("promtool").args(args).current_dir(dir),
        stdin,
        PROMTOOL_WITHIN,
    )
    .map_err(|e| format!("{e}; `./dev setup` installs promtool"))?;
    Ok((out.success, out.said()))
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
