//! [`Readiness`]: whether a service can do its work, as named conditions that all must
//! hold (`nats`: connected; `caught_up`: the reducer folded the stream; `lease`: ...).
//!
//! `/readyz` answers from it (200, or 503 naming what is missing), the
//! `ringside_<service>_ready` gauge reads it, and a service whose other interfaces
//! must follow (the reducer's gRPC health) waits on [`Readiness::changed`]. Conditions
//! start false: a service is not ready until each has said so.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

/// The readiness of one service. Cheap to clone; clones share the conditions.
#[derive(Clone, Debug)]
pub struct Readiness {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    conditions: Mutex<Vec<(Cow<'static, str>, bool)>>,
    ready: watch::Sender<bool>,
}

/// One condition of a [`Readiness`], held by whoever knows its state.
#[derive(Clone, Debug)]
pub struct Condition {
    readiness: Readiness,
    index: usize,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// No conditions yet (and so not ready: a service registers at least one).
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                conditions: Mutex::new(Vec::new()),
                ready: watch::Sender::new(false),
            }),
        }
    }

    /// Adds a condition, false until set.
    pub fn condition(&self, name: impl Into<Cow<'static, str>>) -> Condition {
        let mut conditions = self.lock();
        conditions.push((name.into(), false));
        let index = conditions.len() - 1;
        drop(conditions);
        self.update();
        Condition {
            readiness: self.clone(),
            index,
        }
    }

    /// Whether every condition holds (and there is at least one).
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// The conditions that do not hold, in the order they were added.
    pub fn missing(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// A receiver of the overall state, which changes when it does.
    pub fn changed(&self) -> watch::Receiver<bool> {
        self.inner.ready.subscribe()
    }

    /// Waits until ready.
    pub async fn wait_ready(&self) {
        // The sender lives in `self`, so the wait cannot fail.
        let _ = self.changed().wait_for(|ready| *ready).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Cow<'static, str>, bool)>> {
        self.inner
            .conditions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self) {
        let conditions = self.lock();
        let ready = !conditions.is_empty() && conditions.iter().all(|(_, ok)| *ok);
        drop(conditions);
        self.inner.ready.send_if_modified(|r| {
            let changed = *r != ready;
            *r = ready;
            changed
        });
    }
}

impl Condition {
    /// Says whether the condition holds now.
    pub fn set(&self, holds: bool) {
        if let Some(slot) = self.readiness.lock().get_mut(self.index) {
            slot.1 = holds;
        }
        self.readiness.update();
    }

    /// Whether it holds.
    pub fn holds(&self) -> bool {
        self.readiness
            .lock()
            .get(self.index)
            .is_some_and(|(_, ok)| *ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_when_every_condition_holds() {
        let r = Readiness::new();
        assert!(!r.is_ready(), "no condition: not ready");
        let nats = r.condition("nats");
        let caught_up = r.condition("caught_up");
        let mut changes = r.changed();
        nats.set(true);
        assert!(!r.is_ready());
        assert_eq!(r.missing(), ["caught_up"]);
        caught_up.set(true);
        assert!(r.is_ready() && r.missing().is_empty());
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        nats.set(false);
        assert!(!r.is_ready() && !nats.holds() && caught_up.holds());
        assert!(changes.has_changed().unwrap());
    }
}
