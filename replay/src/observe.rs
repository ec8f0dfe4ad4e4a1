//! How a long query tells its caller what it is doing, without printing anything
//! itself: the caller implements [`Observer`] (the CLI draws a progress bar on a
//! terminal and prints warnings; a server might count them) or passes `&mut ()`.

use crate::error::Warning;

/// Hears a query's passes over the stream and what it skipped. Every method has a
/// default that does nothing.
pub trait Observer: Send {
    /// A pass over the stream sequences `from..=to` begins; `what` names it
    /// (`replay`, `export`, `verify`).
    fn begin(&mut self, what: &'static str, from: u64, to: u64) {
        let _ = (what, from, to);
    }

    /// The pass read the message at stream sequence `seq`.
    fn at(&mut self, seq: u64) {
        let _ = seq;
    }

    /// The pass is over: done, stopped early, failed, or its query was dropped.
    fn end(&mut self) {}

    /// The query skipped something and still answers right.
    fn warn(&mut self, warning: &Warning) {
        let _ = warning;
    }
}

/// Hears nothing.
impl Observer for () {}

/// One pass, begun on creation and ended when dropped, so the observer hears the
/// end even when the query fails or is cancelled halfway.
pub(crate) struct Pass<'a> {
    observer: &'a mut dyn Observer,
}

impl<'a> Pass<'a> {
    /// Begins a pass over `from..=to`.
    pub(crate) fn begin(
        observer: &'a mut dyn Observer,
        what: &'static str,
        from: u64,
        to: u64,
    ) -> Self {
        observer.begin(what, from, to);
        Self { observer }
    }

    /// The pass read `seq`.
    pub(crate) fn at(&mut self, seq: u64) {
        self.observer.at(seq);
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.observer.end();
    }
}
