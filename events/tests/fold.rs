//! The fold, given/when/then: what each membership fact does to the ledger, and the
//! determinism it promises (same events, same ring, whatever the batching, snapshots
//! or interleaving with other subjects).

// A failed unwrap in a helper is a failed test, which is what we want here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::{ProptestConfig, any, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as _;
use ringside_events::convert::{apply_rebalanced, rebalanced};
use ringside_events::pb::{self, MemberLeft, MembersJoined, MembershipSynced};
use ringside_events::{Body, FoldError, Outcome, RingLedger, RingName};
use ringside_ring::{Ring, RingConfig, Strategy};

fn ring_name() -> RingName {
    RingName::new("orders").unwrap()
}

fn config() -> RingConfig {
    RingConfig::new(Strategy::Balanced, 16).unwrap()
}

fn member(id: &str) -> pb::Member {
    pb::Member {
        id: id.to_owned(),
        address: format!("127.0.0.1:{}", 7000 + id.len()),
        weight: 1,
        uid: Some(format!("{id}-uid-1")),
        ..Default::default()
    }
}

fn joined(members: &[pb::Member]) -> Body {
    Body::MembersJoined(MembersJoined {
        members: members.to_vec(),
        source: pb::MembershipSource::Manual as i32,
        ..Default::default()
    })
}

fn join(ids: &[&str]) -> Body {
    joined(&ids.iter().map(|id| member(id)).collect::<Vec<_>>())
}

fn leave(id: &str, uid: Option<&str>) -> Body {
    Body::MemberLeft(MemberLeft {
        member_id: id.to_owned(),
        uid: uid.map(str::to_owned),
        reason: pb::LeaveReason::Goodbye as i32,
        ..Default::default()
    })
}

fn sync(ids: &[&str]) -> Body {
    Body::MembershipSynced(MembershipSynced {
        members: ids.iter().map(|id| member(id)).collect(),
        source: pb::MembershipSource::Kubernetes as i32,
        resource_version: String::new(),
    })
}

/// A ledger that has folded `events` at sequences 1, 2, 3, ...
struct Given {
    ledger: RingLedger,
    next_sequence: u64,
}

fn given(events: &[Body]) -> Given {
    let mut ledger = RingLedger::new(ring_name(), config());
    for (i, body) in events.iter().enumerate() {
        let outcome = ledger.apply(i as u64 + 1, body);
        assert!(
            !matches!(outcome, Outcome::Rejected(_)),
            "given event {i} was rejected: {outcome:?}"
        );
    }
    Given {
        ledger,
        next_sequence: events.len() as u64 + 1,
    }
}

/// The ledger before and after one event, and what the event did.
struct Then {
    before: RingLedger,
    after: RingLedger,
    outcome: Outcome,
}

impl Given {
    fn when(mut self, body: Body) -> Then {
        let before = self.ledger.clone();
        let outcome = self.ledger.apply(self.next_sequence, &body);
        Then {
            before,
            after: self.ledger,
            outcome,
        }
    }
}

impl Then {
    /// The event made the next epoch; returns it after the common checks.
    fn rebalanced(&self) -> &pb::RingRebalanced {
        let Outcome::Rebalanced(event) = &self.outcome else {
            panic!("expected a rebalance, got {:?}", self.outcome);
        };
        assert_eq!(event.epoch, self.before.epoch() + 1);
        assert_eq!(self.after.epoch(), event.epoch);
        assert_eq!(event.membership_sequence, self.after.membership_sequence());
        assert_eq!(event.previous_checksum, self.before.checksum());
        assert_eq!(event.checksum, self.after.checksum());
        let ids: Vec<&str> = event.members.iter().map(|m| m.id.as_str()).collect();
        let ledger_ids: Vec<&str> = self.after.members().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ledger_ids);
        // The event alone rebuilds the new ring from the old one.
        let rebuilt = apply_rebalanced(self.before.ring(), event).unwrap();
        assert_eq!(&rebuilt, self.after.ring());
        event
    }

    /// The event changed nothing but the position.
    fn unchanged(&self) {
        assert_eq!(self.outcome, Outcome::Unchanged);
        self.same_ring();
    }

    /// The event was rejected with `expected`; the ring is as it was.
    fn rejected(&self, expected: impl Fn(&FoldError) -> bool) {
        let Outcome::Rejected(err) = &self.outcome else {
            panic!("expected a rejection, got {:?}", self.outcome);
        };
        assert!(expected(err), "unexpected rejection: {err:?}");
        self.same_ring();
    }

    fn same_ring(&self) {
        assert_eq!(self.after.epoch(), self.before.epoch());
        assert_eq!(self.after.ring(), self.before.ring());
        assert!(self.after.members().eq(self.before.members()));
        assert_eq!(
            self.after.membership_sequence(),
            self.before.membership_sequence() + 1,
            "the position advances past a skipped event"
        );
    }
}

#[test]
fn first_join_makes_epoch_one() {
    let then = given(&[]).when(join(&["a"]));
    let event = then.rebalanced();
    assert_eq!(event.epoch, 1);
    assert_eq!(event.joined, ["a"]);
    assert!(event.departed.is_empty());
    assert_eq!(event.members[0].address, member("a").address);
}

#[test]
fn a_join_moves_keys_only_to_the_joiner() {
    let then = given(&[join(&["a"]), join(&["b"]), join(&["c"])]).when(join(&["d"]));
    let event = then.rebalanced();
    assert_eq!(event.joined, ["d"]);
    let ranges = event.moved_ranges.as_ref().unwrap();
    let d = event.members.iter().position(|m| m.id == "d").unwrap() as u32;
    assert!(!ranges.to.is_empty());
    assert!(ranges.to.iter().all(|to| *to == d));
    assert!((event.ideal_fraction - 0.25).abs() < 1e-12);
}

#[test]
fn a_join_of_a_present_member_changes_nothing() {
    given(&[join(&["a", "b"])]).when(join(&["a"])).unchanged();
}

#[test]
fn a_redelivered_sequence_is_already_folded() {
    let mut given = given(&[join(&["a"]), join(&["b"])]);
    let before = given.ledger.clone();
    assert_eq!(given.ledger.apply(2, &join(&["c"])), Outcome::AlreadyFolded);
    assert_eq!(given.ledger, before);
    given.next_sequence = 3;
    given.when(join(&["c"])).rebalanced();
}

#[test]
fn a_leave_removes_the_member() {
    let then = given(&[join(&["a", "b", "c"])]).when(leave("b", None));
    let event = then.rebalanced();
    assert_eq!(event.departed, ["b"]);
    assert!(!then.after.ring().contains("b"));
}

#[test]
fn a_leave_of_an_absent_member_or_an_old_incarnation_changes_nothing() {
    given(&[join(&["a", "b"])])
        .when(leave("x", None))
        .unchanged();
    given(&[join(&["a", "b"])])
        .when(leave("b", Some("b-uid-0")))
        .unchanged();
    let then = given(&[join(&["a", "b"])]).when(leave("b", Some("b-uid-1")));
    assert_eq!(then.rebalanced().departed, ["b"]);
}

#[test]
fn a_sync_turns_the_difference_into_one_epoch() {
    let then = given(&[join(&["a", "b", "ghost"])]).when(sync(&["a", "b", "c", "d"]));
    let event = then.rebalanced();
    assert_eq!(event.epoch, 2);
    assert_eq!(event.joined, ["c", "d"]);
    assert_eq!(event.departed, ["ghost"]);
    // A sync that repeats the truth changes nothing.
    given(&[join(&["a", "b"])])
        .when(sync(&["a", "b"]))
        .unchanged();
    // A sync to nobody empties the ring.
    let then = given(&[join(&["a", "b"])]).when(sync(&[]));
    assert!(then.rebalanced().members.is_empty());
    assert!(then.after.ring().is_empty());
}

#[test]
fn a_new_weight_is_a_reweight() {
    let mut heavy = member("b");
    heavy.weight = 3;
    let then = given(&[join(&["a", "b", "c"])]).when(joined(&[heavy]));
    let event = then.rebalanced();
    assert_eq!(event.reweighted, ["b"]);
    assert!(event.joined.is_empty() && event.departed.is_empty());
    assert_eq!(then.after.ring().member("b").unwrap().weight, 3);
}

#[test]
fn a_details_change_is_an_epoch_without_movement() {
    let mut moved = member("b");
    moved.address = "127.0.0.2:9000".to_owned();
    moved.uid = Some("b-uid-2".to_owned());
    let then = given(&[join(&["a", "b"])]).when(joined(&[moved]));
    let event = then.rebalanced();
    assert_eq!(event.moved_fraction, 0.0);
    assert_eq!(event.checksum, event.previous_checksum);
    assert_eq!(event.members[1].address, "127.0.0.2:9000");
}

#[test]
fn invalid_membership_is_rejected_and_skipped() {
    let mut zero = member("z");
    zero.weight = 0;
    given(&[join(&["a"])])
        .when(joined(&[zero]))
        .rejected(|e| matches!(e, FoldError::Ring(_)));
    given(&[join(&["a"])])
        .when(joined(&[member("b"), member("b")]))
        .rejected(|e| matches!(e, FoldError::DuplicateMember(id) if id == "b"));
    given(&[join(&["a"])])
        .when(Body::KeysHandedOff(pb::KeysHandedOff::default()))
        .rejected(|e| matches!(e, FoldError::NotMembership(_)));
}

#[test]
fn a_change_refused_part_way_leaves_the_ring_as_it_was() {
    // The sync removes "a" and adds "b" before the ring refuses "z" (weight 0).
    let mut zero = member("z");
    zero.weight = 0;
    let refused = Body::MembershipSynced(pb::MembershipSynced {
        members: vec![member("b"), zero],
        ..Default::default()
    });
    given(&[join(&["a", "c"])])
        .when(refused.clone())
        .rejected(|e| matches!(e, FoldError::Ring(_)));
    // The same without building events (the ring changes in place), then one more
    // change: both folds agree with one that never saw the refused event.
    let (mut applied, mut advanced) = (
        given(&[join(&["a", "c"])]).ledger,
        given(&[join(&["a", "c"])]).ledger,
    );
    let mut untouched = applied.clone();
    assert!(matches!(applied.apply(2, &refused), Outcome::Rejected(_)));
    assert!(matches!(
        advanced.advance(2, &refused),
        Outcome::Rejected(_)
    ));
    assert_eq!(applied, advanced);
    let next = join(&["d"]);
    assert!(matches!(untouched.apply(3, &next), Outcome::Rebalanced(_)));
    assert!(matches!(applied.apply(3, &next), Outcome::Rebalanced(_)));
    assert!(matches!(
        advanced.advance(3, &next),
        Outcome::Rebalanced(())
    ));
    assert_eq!(applied.checksum(), untouched.checksum());
    assert_eq!(advanced.checksum(), untouched.checksum());
    // And through a catch-up, whose ring is in its linked form.
    let mut caught_up = given(&[join(&["a", "c"])]).ledger.catch_up();
    assert!(matches!(
        caught_up.advance(2, &refused),
        Outcome::Rejected(_)
    ));
    assert!(matches!(
        caught_up.advance(3, &next),
        Outcome::Rebalanced(())
    ));
    assert_eq!(caught_up.finish(), untouched);
}

#[test]
fn snapshots_round_trip_and_resume_the_same_history() {
    let events = [
        join(&["a", "b"]),
        join(&["c"]),
        leave("a", None),
        sync(&["b", "c", "d", "e"]),
    ];
    let full = given(&events).ledger;
    for cut in 0..=events.len() {
        let mut resumed =
            RingLedger::from_snapshot(&given(&events[..cut]).ledger.snapshot().unwrap()).unwrap();
        for (i, body) in events.iter().enumerate().skip(cut) {
            resumed.apply(i as u64 + 1, body);
        }
        assert_eq!(resumed, full, "resumed from a snapshot after {cut} events");
    }
}

#[test]
fn a_tampered_snapshot_is_refused() {
    let mut snapshot = given(&[join(&["a", "b", "c"])]).ledger.snapshot().unwrap();
    snapshot.tokens[0] ^= 1;
    assert!(RingLedger::from_snapshot(&snapshot).is_err());
}

/// One scripted membership fact over a small id space.
fn arb_event() -> impl proptest::strategy::Strategy<Value = Body> {
    let id = (0u8..12).prop_map(|i| format!("n{i}"));
    prop_oneof![
        4 => (id.clone(), 1u32..4).prop_map(|(id, w)| {
            let mut m = member(&id);
            m.weight = w;
            joined(&[m])
        }),
        3 => id.clone().prop_map(|id| leave(&id, None)),
        1 => proptest::collection::btree_set(id, 0..6).prop_map(|ids| {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            sync(&ids)
        }),
    ]
}

/// Folds `events` at the given sequences and collects the rebalance events.
fn fold(
    events: &[Body],
    sequences: &[u64],
    strategy: Strategy,
) -> (RingLedger, Vec<pb::RingRebalanced>) {
    let mut ledger = RingLedger::new(ring_name(), RingConfig::new(strategy, 8).unwrap());
    let mut published = Vec::new();
    for (body, seq) in events.iter().zip(sequences) {
        if let Outcome::Rebalanced(event) = ledger.apply(*seq, body) {
            published.push(*event);
        }
    }
    (ledger, published)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Same events in, same ring out: sequence numbering (other subjects interleaved),
    /// snapshot/restart points and replaying the published events all agree.
    #[test]
    fn the_fold_is_deterministic(
        events in proptest::collection::vec(arb_event(), 1..40),
        gaps in proptest::collection::vec(1u64..5, 40),
        cut in 0usize..40,
        random in any::<bool>(),
    ) {
        let strategy = if random { Strategy::Random } else { Strategy::Balanced };
        let dense: Vec<u64> = (1..=events.len() as u64).collect();
        let sparse: Vec<u64> = gaps.iter().scan(0, |s, g| { *s += g; Some(*s) }).collect();
        let (a, a_events) = fold(&events, &dense, strategy);
        let (b, b_events) = fold(&events, &sparse, strategy);
        prop_assert_eq!(a.checksum(), b.checksum());
        prop_assert_eq!(a.ring(), b.ring());
        prop_assert_eq!(a_events.len(), b_events.len());

        // Restarting from a snapshot anywhere gives the same ring and events.
        let cut = cut.min(events.len());
        let (head, head_events) = fold(&events[..cut], &dense, strategy);
        let mut resumed = RingLedger::from_snapshot(&head.snapshot().unwrap()).unwrap();
        let mut resumed_events = head_events;
        for (body, seq) in events.iter().zip(&dense).skip(cut) {
            if let Outcome::Rebalanced(event) = resumed.apply(*seq, body) {
                resumed_events.push(*event);
            }
        }
        prop_assert_eq!(resumed.checksum(), a.checksum());
        prop_assert_eq!(&resumed_events, &a_events);

        // Advancing or catching up (no events built) through the head leaves the same
        // ledger, and the events applied after it are the same.
        let empty = RingLedger::new(ring_name(), RingConfig::new(strategy, 8).unwrap());
        let (mut advanced, mut caught_up) = (empty.clone(), empty.catch_up());
        let mut epochs = 0;
        for (body, seq) in events.iter().zip(&dense).take(cut) {
            epochs += usize::from(matches!(advanced.advance(*seq, body), Outcome::Rebalanced(())));
            drop(caught_up.advance(*seq, body));
        }
        prop_assert_eq!(caught_up.epoch(), epochs as u64);
        let caught_up = caught_up.finish();
        prop_assert_eq!(&caught_up, &advanced);
        let mut advanced_events = Vec::new();
        for (body, seq) in events.iter().zip(&dense).skip(cut) {
            if let Outcome::Rebalanced(event) = advanced.apply(*seq, body) {
                advanced_events.push(*event);
            }
        }
        prop_assert_eq!(&advanced, &a);
        prop_assert_eq!(&advanced_events[..], &a_events[epochs..]);

        // Epochs are 1..N and the published events alone rebuild the ring. Each
        // event, built from the positions the fold changed, equals the one built by
        // comparing every token of the two rings.
        let mut ring = Ring::new(RingConfig::new(strategy, 8).unwrap());
        for (i, event) in a_events.iter().enumerate() {
            prop_assert_eq!(event.epoch, i as u64 + 1);
            let after = apply_rebalanced(&ring, event).unwrap();
            let compared = rebalanced(&ring, &after, &event.members, event.epoch, event.membership_sequence).unwrap();
            prop_assert_eq!(&compared, event);
            ring = after;
        }
        prop_assert_eq!(&ring, a.ring());
    }

    /// Applying, advancing and catching up fold alike: any mix of the three, in runs
    /// long and short, with the ring read in between or not, makes the same ledger
    /// and the same events as applying everything.
    #[test]
    fn applying_advancing_and_catching_up_mix_freely(
        events in proptest::collection::vec(arb_event(), 1..120),
        runs in proptest::collection::vec((0u8..4, 1usize..40), 1..12),
    ) {
        let sequences: Vec<u64> = (1..=events.len() as u64).collect();
        let (expected, expected_events) = fold(&events, &sequences, Strategy::Balanced);
        let config = RingConfig::new(Strategy::Balanced, 8).unwrap();
        let mut ledger = RingLedger::new(ring_name(), config);
        let mut folded = events.iter().zip(&sequences);
        for &(how, len) in runs.iter().chain(std::iter::once(&(3, events.len()))) {
            let run: Vec<_> = folded.by_ref().take(len).collect();
            for (body, seq) in &run {
                match how {
                    0 => {
                        if let Outcome::Rebalanced(event) = ledger.apply(**seq, body) {
                            prop_assert_eq!(&*event, &expected_events[ledger.epoch() as usize - 1]);
                        }
                    }
                    1 => drop(ledger.advance(**seq, body)),
                    2 => {
                        drop(ledger.advance(**seq, body));
                        prop_assert_eq!(ledger.ring().len(), ledger.members().count());
                    }
                    _ => {}
                }
            }
            if how == 3 {
                let reached = run.last().map_or(ledger.membership_sequence(), |(_, seq)| **seq);
                let mut catch_up = ledger.catch_up();
                for (body, seq) in &run {
                    drop(catch_up.advance(**seq, body));
                }
                prop_assert_eq!(catch_up.membership_sequence(), reached);
                ledger = catch_up.finish();
            }
        }
        prop_assert_eq!(ledger.checksum(), expected.checksum());
        prop_assert_eq!(&ledger, &expected);
    }
}
