//! The chain of epochs: where the follower stands (the ring at an epoch, and the last
//! stream sequence of the rebalance subject it has handled) and what one stored
//! message of that subject does to it. Pure and synchronous: the follower does the
//! I/O and decides what a [`Step`] that is not an epoch costs (a skip or a re-sync).
//!
//! # The rule
//! A message applies only if it is the next epoch of this ring (`epoch + 1`), its
//! `previous_checksum` is this ring's checksum, and the ring rebuilt from it has the
//! checksum it announces (`convert::apply_rebalanced`). So no sequence of deliveries,
//! however a consumer misbehaves, folds an epoch twice, folds one out of order, or
//! folds over a gap: the worst it can do is stop the chain, and the follower re-syncs.
//!
//! A message at or before the position is a redelivery and changes nothing. Anything
//! else that is not the next epoch is one of:
//! - not an epoch of this ring at all (undecodable, another ring's, another kind) or an
//!   epoch already passed: stored history that every reader skips, as the reducer
//!   does (docs/reducer.md, "Invalid messages on the rebalance subject");
//! - an epoch further on ([`Step::Ahead`]): a gap in what was delivered, or a message
//!   stored out of turn; only the stream can tell which;
//! - the next epoch that does not fit this ring ([`Step::Broken`]).

use std::sync::Arc;

use ringside_events::codec::{self, DecodeError};
use ringside_events::convert::{self, ConvertError};
use ringside_events::{Body, EventKind, RingName, pb};
use ringside_ring::{Ring, RingConfig};

use crate::rebalance::Rebalance;
use crate::view::RingView;

/// Where the follower stands.
#[derive(Debug)]
pub(crate) struct Chain {
    /// The rebalance subject: every message must belong there (`codec::decode_on`).
    subject: String,
    view: Arc<RingView>,
    /// The last stream sequence of the subject handled (applied or skipped).
    position: u64,
}

/// What one stored message did to the chain.
#[derive(Debug)]
pub(crate) enum Step {
    /// The next epoch: the chain's view is the ring after it. (Shared as it is:
    /// subscribers get this very `Arc`.)
    Applied(Arc<Rebalance>),
    /// At or before the position: delivered again; nothing changed.
    Redelivered,
    /// Not an epoch of this ring: the position moved past it.
    Skipped(NotAnEpoch),
    /// An epoch further on than the next one; the position did not move.
    Ahead {
        /// The epoch due.
        expected: u64,
        /// The epoch that came.
        got: u64,
    },
    /// The next epoch, which does not fit this ring; the position did not move.
    Broken(Broken),
}

/// Why a stored message is not an epoch of this ring.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotAnEpoch {
    /// Garbage, another ring's event, an unknown version: `decode_on` refused it.
    #[error("it does not decode as an event of this ring's rebalance subject")]
    Undecodable(#[source] DecodeError),
    /// A valid event of another kind (`decode_on` refuses those on this subject; kept
    /// as a value rather than a panic).
    #[error("it is a {0:?} event, not a RingRebalanced")]
    NotRebalance(EventKind),
    /// An epoch the chain has passed.
    #[error("epoch {got} arrived at epoch {at}")]
    Stale {
        /// Its epoch.
        got: u64,
        /// The chain's epoch.
        at: u64,
    },
    /// An epoch further on, with nothing stored between it and the position: out of
    /// turn, not a gap.
    #[error("epoch {got} arrived at epoch {at}, with no message of the subject before it")]
    OutOfTurn {
        /// Its epoch.
        got: u64,
        /// The chain's epoch.
        at: u64,
    },
    /// A message that broke the chain again after a re-sync from the same ring.
    #[error("it still does not fit after a re-sync")]
    StillBroken(#[source] Broken),
}

/// Why the next epoch does not fit this ring.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Broken {
    /// It follows another ring than this one.
    #[error(
        "epoch {epoch} follows a ring with checksum {expected:#018x}, this ring's is {actual:#018x}"
    )]
    PreviousChecksum {
        /// Its epoch.
        epoch: u64,
        /// Its `previous_checksum`.
        expected: u64,
        /// This ring's checksum.
        actual: u64,
    },
    /// It does not rebuild a ring with the checksum it announces (or has no usable
    /// configuration).
    #[error("epoch {epoch} does not apply to this ring")]
    Apply {
        /// Its epoch.
        epoch: u64,
        /// The conversion's error.
        #[source]
        source: ConvertError,
    },
}

impl Chain {
    /// Before the first epoch of `ring`, at the start of the stream: no configuration
    /// yet (the first event brings it).
    pub(crate) fn empty(name: RingName) -> Chain {
        let subject = ringside_events::subject::rebalance(&name);
        let view = RingView::new(name, 0, 0, 0, None, Vec::new());
        Chain {
            subject,
            view: Arc::new(view),
            position: 0,
        }
    }

    /// At a snapshot of `name` (checked: its ring and checksum), at its rebalance
    /// sequence.
    pub(crate) fn from_snapshot(
        name: RingName,
        snapshot: &pb::RingSnapshot,
    ) -> Result<Chain, ConvertError> {
        let ring = convert::snapshot_to_ring(snapshot)?;
        let subject = ringside_events::subject::rebalance(&name);
        let view = RingView::new(
            name,
            snapshot.epoch,
            snapshot.rebalance_sequence,
            snapshot.membership_sequence,
            Some(ring),
            snapshot.members.clone(),
        );
        Ok(Chain {
            subject,
            view: Arc::new(view),
            position: snapshot.rebalance_sequence,
        })
    }

    /// The ring where the chain stands.
    pub(crate) fn view(&self) -> &Arc<RingView> {
        &self.view
    }

    /// The last stream sequence of the subject handled.
    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    /// The rebalance subject.
    pub(crate) fn subject(&self) -> &str {
        &self.subject
    }

    /// Moves the position past a message the follower judged not an epoch (one
    /// [`Step::Ahead`] or [`Step::Broken`] left it at).
    pub(crate) fn skip(&mut self, sequence: u64) {
        self.position = self.position.max(sequence);
    }

    /// What the message stored at `sequence` with `payload` does to the chain.
    pub(crate) fn offer(&mut self, sequence: u64, payload: &[u8]) -> Step {
        if sequence <= self.position {
            return Step::Redelivered;
        }
        let event = match codec::decode_on(&self.subject, payload) {
            Ok(event) => match event.into_body() {
                Body::RingRebalanced(event) => event,
                other => {
                    return self.skipped(sequence, NotAnEpoch::NotRebalance(EventKind::of(&other)));
                }
            },
            Err(e) => return self.skipped(sequence, NotAnEpoch::Undecodable(e)),
        };
        let at = self.view.epoch();
        let expected = at.saturating_add(1);
        if event.epoch < expected {
            return self.skipped(
                sequence,
                NotAnEpoch::Stale {
                    got: event.epoch,
                    at,
                },
            );
        }
        if event.epoch > expected {
            return Step::Ahead {
                expected,
                got: event.epoch,
            };
        }
        let epoch = event.epoch;
        let broken = |source| Step::Broken(Broken::Apply { epoch, source });
        // A ring without a snapshot starts empty, in the configuration its first event
        // carries; that event's previous checksum is the empty ring's.
        let empty;
        let before = match self.view.ring() {
            Some(ring) => ring,
            None => {
                let config = event
                    .config
                    .as_ref()
                    .ok_or(ConvertError::MissingConfig("RingRebalanced"))
                    .and_then(RingConfig::try_from);
                match config {
                    Ok(config) => {
                        empty = Ring::new(config);
                        &empty
                    }
                    Err(source) => return broken(source),
                }
            }
        };
        let actual = before.checksum();
        if event.previous_checksum != actual {
            return Step::Broken(Broken::PreviousChecksum {
                epoch,
                expected: event.previous_checksum,
                actual,
            });
        }
        let ring = match convert::apply_rebalanced(before, &event) {
            Ok(ring) => ring,
            Err(source) => return broken(source),
        };
        self.view = Arc::new(RingView::new(
            self.view.name().clone(),
            epoch,
            sequence,
            event.membership_sequence,
            Some(ring),
            event.members.clone(),
        ));
        self.position = sequence;
        Step::Applied(Arc::new(Rebalance::new(sequence, event)))
    }

    fn skipped(&mut self, sequence: u64, why: NotAnEpoch) -> Step {
        self.position = sequence;
        Step::Skipped(why)
    }
}

#[cfg(test)]
mod tests {
    use ringside_events::{Event, Outcome, RingLedger};
    use ringside_ring::Strategy;

    use super::*;

    fn ring() -> RingName {
        RingName::new("orders").unwrap()
    }

    fn member(i: u32) -> pb::Member {
        pb::Member {
            id: format!("node-{i}"),
            address: format!("127.0.0.{i}:7000"),
            weight: 1 + i % 2,
            ..Default::default()
        }
    }

    fn joined(i: u32) -> Body {
        Body::MembersJoined(pb::MembersJoined {
            members: vec![member(i)],
            source: pb::MembershipSource::Manual as i32,
            source_version: i.to_string(),
        })
    }

    fn left(i: u32) -> Body {
        Body::MemberLeft(pb::MemberLeft {
            member_id: member(i).id,
            reason: pb::LeaveReason::Manual as i32,
            source: pb::MembershipSource::Manual as i32,
            ..Default::default()
        })
    }

    /// The history of a small ring as the reducer stores it: (sequence, encoded
    /// event, event), with membership and rebalance messages interleaved in one
    /// sequence space (rebalance events at even sequences).
    fn history() -> Vec<(u64, Vec<u8>, pb::RingRebalanced)> {
        let config = RingConfig::new(Strategy::Balanced, 16).unwrap();
        let mut ledger = RingLedger::new(ring(), config);
        let bodies = [joined(1), joined(2), joined(3), left(2), joined(4), left(1)];
        let mut out = Vec::new();
        for (i, body) in (1u64..).zip(bodies.iter()) {
            let Outcome::Rebalanced(r) = ledger.apply(2 * i - 1, body) else {
                panic!("no epoch from {body:?}");
            };
            out.push((2 * i, encode(&ring(), *r.clone()), *r));
        }
        out
    }

    fn encode(name: &RingName, event: pb::RingRebalanced) -> Vec<u8> {
        codec::encode(&Event::new(name.clone(), event).unwrap())
            .unwrap()
            .to_vec()
    }

    fn applied(step: Step) -> Arc<Rebalance> {
        match step {
            Step::Applied(r) => r,
            other => panic!("not applied: {other:?}"),
        }
    }

    #[test]
    fn every_epoch_applies_once_in_order() {
        let mut chain = Chain::empty(ring());
        assert_eq!(chain.view().checksum(), None);
        for (seq, bytes, event) in history() {
            let r = applied(chain.offer(seq, &bytes));
            assert_eq!(r.epoch(), event.epoch);
            assert_eq!(chain.view().epoch(), event.epoch);
            assert_eq!(chain.view().checksum(), Some(event.checksum));
            assert_eq!(chain.view().sequence(), seq);
            assert_eq!(chain.view().members(), &event.members[..]);
            assert!(matches!(chain.offer(seq, &bytes), Step::Redelivered));
        }
        assert_eq!(chain.position(), 12);
    }

    #[test]
    fn a_snapshot_resumes_where_the_full_fold_is() {
        let h = history();
        let mut full = Chain::empty(ring());
        for (seq, bytes, _) in &h[..3] {
            applied(full.offer(*seq, bytes));
        }
        let view = full.view();
        let snapshot = convert::ring_to_snapshot(
            &ring(),
            view.ring().unwrap(),
            view.members(),
            view.epoch(),
            view.membership_sequence(),
            view.sequence(),
        )
        .unwrap();
        let mut resumed = Chain::from_snapshot(ring(), &snapshot).unwrap();
        assert_eq!(resumed.position(), h[2].0);
        // What the snapshot holds is delivered again: nothing changes.
        assert!(matches!(resumed.offer(h[2].0, &h[2].1), Step::Redelivered));
        for (seq, bytes, _) in &h[3..] {
            applied(full.offer(*seq, bytes));
            applied(resumed.offer(*seq, bytes));
        }
        assert_eq!(resumed.view().checksum(), full.view().checksum());
        assert_eq!(resumed.view().epoch(), 6);
    }

    #[test]
    fn messages_that_are_not_epochs_are_skipped() {
        let h = history();
        let mut chain = Chain::empty(ring());
        applied(chain.offer(h[0].0, &h[0].1));
        // Garbage.
        assert!(matches!(
            chain.offer(3, b"junk"),
            Step::Skipped(NotAnEpoch::Undecodable(_))
        ));
        // Another ring's event of the next epoch.
        let other = encode(&RingName::new("other").unwrap(), h[1].2.clone());
        assert!(matches!(
            chain.offer(5, &other),
            Step::Skipped(NotAnEpoch::Undecodable(DecodeError::WrongSubject { .. }))
        ));
        // Epoch 1 again, stored again later.
        assert!(matches!(
            chain.offer(7, &h[0].1),
            Step::Skipped(NotAnEpoch::Stale { got: 1, at: 1 })
        ));
        assert_eq!(chain.position(), 7);
        assert_eq!(chain.view().epoch(), 1);
        applied(chain.offer(8, &h[1].1));
    }

    #[test]
    fn an_epoch_further_on_stops_the_chain() {
        let h = history();
        let mut chain = Chain::empty(ring());
        applied(chain.offer(h[0].0, &h[0].1));
        assert!(matches!(
            chain.offer(h[2].0, &h[2].1),
            Step::Ahead {
                expected: 2,
                got: 3
            }
        ));
        assert_eq!(chain.position(), h[0].0);
        assert_eq!(chain.view().epoch(), 1);
        // Judged out of turn: skipped; the real epoch 2 still applies after it.
        chain.skip(h[2].0);
        applied(chain.offer(h[2].0 + 1, &h[1].1));
    }

    #[test]
    fn the_next_epoch_must_fit_this_ring() {
        let h = history();
        let mut chain = Chain::empty(ring());
        applied(chain.offer(h[0].0, &h[0].1));
        let mut wrong_base = h[1].2.clone();
        wrong_base.previous_checksum ^= 1;
        assert!(matches!(
            chain.offer(h[1].0, &encode(&ring(), wrong_base)),
            Step::Broken(Broken::PreviousChecksum { epoch: 2, .. })
        ));
        let mut wrong_result = h[1].2.clone();
        wrong_result.checksum ^= 1;
        assert!(matches!(
            chain.offer(h[1].0, &encode(&ring(), wrong_result)),
            Step::Broken(Broken::Apply {
                epoch: 2,
                source: ConvertError::ChecksumMismatch { .. }
            })
        ));
        assert_eq!(chain.view().epoch(), 1);
        assert_eq!(chain.position(), h[0].0);
        applied(chain.offer(h[1].0, &h[1].1));
    }

    #[test]
    fn a_first_event_without_configuration_does_not_apply() {
        let h = history();
        let mut first = h[0].2.clone();
        first.config = None;
        let mut chain = Chain::empty(ring());
        // The decoder may already refuse it; either way nothing is folded.
        match chain.offer(2, &encode_lenient(first)) {
            Step::Broken(_) | Step::Skipped(_) => {}
            other => panic!("folded an event without configuration: {other:?}"),
        }
        assert_eq!(chain.view().epoch(), 0);
    }

    /// Encodes without `Event::new`'s checks (which may refuse the event).
    fn encode_lenient(event: pb::RingRebalanced) -> Vec<u8> {
        use prost::Message;
        pb::Envelope {
            schema_version: ringside_events::SCHEMA_VERSION,
            ring: ring().to_string(),
            body: Some(pb::envelope::Body::RingRebalanced(event)),
            ..Default::default()
        }
        .encode_to_vec()
    }
}
