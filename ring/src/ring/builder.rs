//! A ring under a run of changes that nothing reads in between ([`RingBuilder`]): a
//! fold catching up with epochs already stored, a ring built from a member list.
//!
//! A [`Ring`] keeps what its readers need ready (sorted slots, ownership, arcs), and a
//! change rebuilds its slots: a run of changes pays the ring's size at every step. A
//! builder keeps a balanced ring in its linked form instead, where a change costs the
//! tokens it moves, and makes the `Ring` once, when asked. It has no queries: the
//! caller says when the run ends ([`RingBuilder::build`]), so no read changes what a
//! later change costs. Random rings change in place (their changes insert or drop a
//! member's tokens, with no plan to keep tables for), so for them a builder is the ring.

use super::Ring;
use crate::linked::LinkedRing;
use crate::plan::Edits;
use crate::{Member, RingConfig, RingError, Strategy};

/// A ring under a run of changes that nothing reads in between; [`RingBuilder::build`]
/// gives the [`Ring`] the same changes make, token for token (see the module docs).
#[derive(Clone, Debug)]
pub struct RingBuilder(Form);

/// The form the changes go to.
#[derive(Clone, Debug)]
enum Form {
    /// A random ring, or a balanced one no change has reached yet.
    Ring(Ring),
    /// A balanced ring since its first change.
    Linked(Box<LinkedRing>),
}

impl RingBuilder {
    /// A builder of an empty ring (the configuration is checked by the first join).
    pub fn new(config: RingConfig) -> RingBuilder {
        RingBuilder::from(Ring::new(config))
    }

    /// Removes the `leave` members, then adds the `join` members, in the order given,
    /// all or nothing, with the result and the errors of [`Ring::change_recording`].
    pub fn change<'a>(
        &mut self,
        leave: impl IntoIterator<Item = &'a str>,
        join: impl IntoIterator<Item = Member>,
    ) -> Result<(), RingError> {
        if let Form::Ring(ring) = &self.0
            && ring.config.strategy == Strategy::Balanced
        {
            let linked = LinkedRing::new(ring.config, ring.members.clone(), &ring.slots);
            self.0 = Form::Linked(Box::new(linked));
        }
        match &mut self.0 {
            Form::Linked(linked) => linked.change(leave, join),
            // Nothing to record: a builder's ring is compared with no other.
            Form::Ring(ring) => ring.change_recording(leave, join, &mut Edits::all()),
        }
    }

    /// The ring the changes made.
    pub fn build(self) -> Ring {
        match self.0 {
            Form::Ring(ring) => ring,
            Form::Linked(linked) => {
                let config = linked.config();
                let (members, slots) = linked.into_parts();
                Ring::with_slots(config, members, slots)
            }
        }
    }
}

/// A builder that starts from `ring`.
impl From<Ring> for RingBuilder {
    fn from(ring: Ring) -> RingBuilder {
        RingBuilder(Form::Ring(ring))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::Strategy as Placement;

    /// Changes (leaves by position in the member list, joins of ids `0..60`, weights 0
    /// to 3), some large enough to go at once on the `Ring`, some refused.
    type Change = (Vec<u8>, Vec<(u8, u32)>);

    fn changes() -> impl proptest::strategy::Strategy<Value = Vec<Change>> {
        let leave = prop::collection::vec(any::<u8>(), 0..4);
        let join = prop::collection::vec((0u8..60, 0u32..4), 0..40);
        prop::collection::vec((leave, join), 1..12)
    }

    proptest! {
        /// A builder's changes make the ring a ring's changes make, with the same
        /// errors, for both strategies.
        #[test]
        fn a_builder_makes_the_ring_a_ring_makes(balanced in any::<bool>(),
                                                 vnodes in 1u32..12,
                                                 changes in changes()) {
            let strategy = if balanced { Placement::Balanced } else { Placement::Random };
            let config = RingConfig::new(strategy, vnodes).unwrap();
            let mut ring = Ring::new(config);
            let mut builder = RingBuilder::new(config);
            for (leave, join) in changes {
                let ids: Vec<String> = ring.members().map(|m| m.id.clone()).collect();
                let leave: Vec<&str> = leave
                    .iter()
                    .filter(|_| !ids.is_empty())
                    .map(|&i| ids[usize::from(i) % ids.len()].as_str())
                    .collect();
                let join: Vec<Member> = join
                    .into_iter()
                    .map(|(id, weight)| Member::new(format!("m{id}"), weight))
                    .collect();
                // One step at a time: the reference.
                let mut steps = ring.clone();
                let stepwise = leave
                    .iter()
                    .try_for_each(|id| steps.remove(id).map(drop))
                    .and_then(|()| join.iter().try_for_each(|m| steps.add(m.clone())));
                if stepwise.is_ok() {
                    ring = steps;
                }
                prop_assert_eq!(builder.change(leave.iter().copied(), join), stepwise);
                prop_assert_eq!(&builder.clone().build(), &ring);
            }
            prop_assert_eq!(builder.build().checksum(), ring.checksum());
        }
    }
}
