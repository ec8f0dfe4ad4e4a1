//! A progress bar for long replays: one line on stderr, redrawn at most ten times a
//! second, and nothing at all when stderr is not a terminal (pipes, CI, tests) or the
//! replay is short.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

/// Replays spanning fewer sequences than this finish too fast to need a bar.
const MIN_SPAN: u64 = 20_000;
const REDRAW: Duration = Duration::from_millis(100);
const WIDTH: u64 = 30;

/// Progress over a range of stream sequences.
#[derive(Debug)]
pub(crate) struct Progress {
    label: &'static str,
    from: u64,
    to: u64,
    enabled: bool,
    drawn: bool,
    last: Instant,
}

impl Progress {
    /// A bar for the sequences `from..=to`, shown only on a terminal and for long spans.
    pub(crate) fn new(label: &'static str, from: u64, to: u64) -> Self {
        let span = to.saturating_sub(from);
        Self {
            label,
            from,
            to,
            enabled: span >= MIN_SPAN && std::io::stderr().is_terminal(),
            drawn: false,
            last: Instant::now(),
        }
    }

    /// A bar that never shows.
    pub(crate) fn hidden() -> Self {
        Self {
            label: "",
            from: 0,
            to: 0,
            enabled: false,
            drawn: false,
            last: Instant::now(),
        }
    }

    /// Notes that the replay reached `seq`.
    pub(crate) fn at(&mut self, seq: u64) {
        if !self.enabled || self.last.elapsed() < REDRAW {
            return;
        }
        self.last = Instant::now();
        let span = self.to.saturating_sub(self.from).max(1);
        let done = seq.saturating_sub(self.from).min(span);
        let filled = done * WIDTH / span;
        let bar: String = (0..WIDTH)
            .map(|i| if i < filled { '=' } else { ' ' })
            .collect();
        // Progress is best effort: a failed write to stderr must not fail the replay.
        let _ = write!(
            std::io::stderr(),
            "\r{} [{bar}] {:>3}% seq {seq}/{}",
            self.label,
            done * 100 / span,
            self.to
        );
        self.drawn = true;
    }

    /// Clears the bar.
    pub(crate) fn finish(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            self.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
