//! What `ringside replay` shows on stderr while a replay runs: a progress bar for long
//! passes (drawn by indicatif, at most ten times a second, and only when stderr is a
//! terminal: never in pipes, CI or tests), and the warnings the replay reports.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use ringside_replay::{Observer, Warning};

/// Passes over fewer sequences than this finish too fast to need a bar.
const MIN_SPAN: u64 = 20_000;
/// Redraws per second at most.
const REDRAWS: u8 = 10;

/// The replay's [`Observer`]: the bar of the current pass, if it shows one.
#[derive(Debug, Default)]
pub(super) struct Progress {
    bar: Option<Bar>,
}

#[derive(Debug)]
struct Bar {
    bar: ProgressBar,
    /// The pass's first sequence: the bar's position counts from it.
    from: u64,
}

impl Observer for Progress {
    fn begin(&mut self, what: &'static str, from: u64, to: u64) {
        self.end();
        let span = to.saturating_sub(from);
        if span < MIN_SPAN || !std::io::stderr().is_terminal() {
            return;
        }
        // `seq 1234/5678`: the stream sequence, not the count read.
        let Ok(style) = ProgressStyle::with_template(&format!(
            "{{prefix}} [{{bar:30}}] {{percent:>3}}% seq {{seq}}/{to}"
        )) else {
            return;
        };
        let style = style
            .with_key(
                "seq",
                move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    // A failed write only leaves the bar without its figure.
                    let _ = write!(w, "{}", from + state.pos());
                },
            )
            .progress_chars("= ");
        let bar =
            ProgressBar::with_draw_target(Some(span), ProgressDrawTarget::stderr_with_hz(REDRAWS))
                .with_style(style)
                .with_prefix(what);
        self.bar = Some(Bar { bar, from });
    }

    fn at(&mut self, seq: u64) {
        if let Some(b) = &self.bar {
            b.bar.set_position(seq.saturating_sub(b.from));
        }
    }

    fn end(&mut self) {
        if let Some(b) = self.bar.take() {
            b.bar.finish_and_clear();
        }
    }

    fn warn(&mut self, warning: &Warning) {
        match &self.bar {
            Some(b) => b.bar.suspend(|| eprintln!("warning: {warning}")),
            None => eprintln!("warning: {warning}"),
        }
    }
}

impl Drop for Progress {
    /// A replay that fails mid-pass leaves no half-drawn bar behind.
    fn drop(&mut self) {
        self.end();
    }
}
