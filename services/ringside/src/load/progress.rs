//! The progress bar on stderr (indicatif), drawn only on a terminal: stdout keeps just
//! the summary, and pipes, CI and tests see no bar at all.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the message (rates, errors, p99) is recomputed.
const MESSAGE_EVERY: Duration = Duration::from_millis(100);

/// A bar over a known length (requests, keys, milliseconds), or a spinner.
#[derive(Debug)]
pub(crate) struct Bar {
    bar: ProgressBar,
    last: Option<Instant>,
}

impl Bar {
    /// A bar of `len` steps (`None`: a spinner, for a run until Ctrl-C).
    pub(crate) fn new(len: Option<u64>) -> Self {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr_with_hz(10)
        } else {
            ProgressDrawTarget::hidden()
        };
        let template = match len {
            // wide_msg: the message is cut to the terminal's width, never wrapped.
            Some(_) => "{elapsed_precise} [{bar:20}] {wide_msg}",
            None => "{spinner} {elapsed_precise} {wide_msg}",
        };
        let bar = ProgressBar::with_draw_target(len, target);
        // The templates are constants; should one not parse, the default style will do.
        bar.set_style(
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Self { bar, last: None }
    }

    /// Moves the bar to `position`; `message` is asked for at most ten times a second.
    pub(crate) fn update(&mut self, position: u64, message: impl FnOnce() -> String) {
        self.bar.set_position(position);
        if self.bar.is_hidden() || self.last.is_some_and(|t| t.elapsed() < MESSAGE_EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        self.bar.set_message(message());
    }

    /// Removes the bar (before the summary is printed).
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
