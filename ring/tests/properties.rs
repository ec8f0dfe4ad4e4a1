//! Property tests: for random sequences of joins and leaves, with both strategies, the
//! ring keeps its promises. Movement is minimal (a join only moves ranges to the
//! joiner, a leave only the leaver's), plans equal diffs, a diff applied to the old
//! ownership gives the new one, lookups follow the definition, successors are distinct,
//! bounded loads respect the cap, snapshots round-trip, and rings are deterministic.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too; a failure is a test failure

use proptest::prelude::*;
use ringside_ring::Strategy as Placement;
use ringside_ring::{
    BoundedLoads, Edits, Member, MemberAt, MovedRange, Ring, RingConfig, RingDiff, Share, Token,
    diff, diff_at, diff_at_indexed,
};

/// One membership change: add member `m<id>` with a weight, or remove the member at a
/// position chosen by the number (modulo the member count).
#[derive(Clone, Debug)]
enum Op {
    Add(u8, u32),
    Remove(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..24, 1u32..4).prop_map(|(id, w)| Op::Add(id, w)),
        2 => any::<usize>().prop_map(Op::Remove),
    ]
}

fn placement() -> impl Strategy<Value = Placement> {
    prop_oneof![Just(Placement::Random), Just(Placement::Balanced)]
}

fn config() -> impl Strategy<Value = RingConfig> {
    (placement(), 1u32..9).prop_map(|(s, v)| RingConfig::new(s, v).unwrap())
}

/// Applies `op`; returns the change as (joiner, leaver) or `None` if it did not apply.
fn apply(ring: &mut Ring, op: &Op) -> Option<(Option<String>, Option<String>)> {
    match *op {
        Op::Add(id, w) => {
            let member = Member::new(format!("m{id}"), w);
            let id = member.id.clone();
            ring.add(member).ok().map(|()| (Some(id), None))
        }
        Op::Remove(pick) => {
            let id = ring.members().nth(pick % ring.len().max(1))?.id.clone();
            ring.remove(&id).ok().map(|_| (None, Some(id)))
        }
    }
}

/// [`apply`] through the recording variants, adding to `edits`.
fn apply_recording(ring: &mut Ring, op: &Op, edits: &mut Edits) {
    match *op {
        Op::Add(id, w) => {
            let _ = ring.add_recording(Member::new(format!("m{id}"), w), edits);
        }
        Op::Remove(pick) => {
            let id = ring
                .members()
                .nth(pick % ring.len().max(1))
                .map(|m| m.id.clone());
            if let Some(id) = id {
                ring.remove_recording(&id, edits).unwrap();
            }
        }
    }
}

/// The owner ids of the tokens at each position.
fn tokens_by_position(ring: &Ring) -> std::collections::BTreeMap<Token, Vec<String>> {
    let mut out = std::collections::BTreeMap::<Token, Vec<String>>::new();
    for (t, id) in ring.tokens() {
        out.entry(t).or_default().push(id.to_owned());
    }
    out
}

fn build(config: RingConfig, ops: &[Op]) -> Ring {
    let mut ring = Ring::new(config);
    for op in ops {
        apply(&mut ring, op);
    }
    ring
}

/// Positions worth probing: every token of both rings, its neighbours, and a spread.
fn probes(rings: &[&Ring]) -> Vec<Token> {
    let mut out: Vec<Token> = (0..64u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    out.extend([0, u64::MAX]);
    for r in rings {
        for (t, _) in r.tokens() {
            out.extend([t.wrapping_sub(1), t, t.wrapping_add(1)]);
        }
    }
    out
}

fn nonzero(shares: Vec<Share>) -> Vec<Share> {
    shares.into_iter().filter(|s| s.arc > 0).collect()
}

/// A diff is exactly the change of owner, position by position and in total.
fn check_diff(old: &Ring, new: &Ring, d: &RingDiff) -> Result<(), TestCaseError> {
    prop_assert_eq!(d.apply(&old.ownership()), nonzero(new.ownership()));
    prop_assert_eq!(d.moved, d.ranges.iter().map(|r| r.width()).sum::<u128>());
    for h in probes(&[old, new]) {
        let before = old.owner_of_hash(h).unwrap_or("");
        let after = new.owner_of_hash(h).unwrap_or("");
        match d.range_at(h) {
            Some(r) => {
                prop_assert_eq!(
                    (r.from.as_str(), r.to.as_str()),
                    (before, after),
                    "at {:#x}",
                    h
                );
                prop_assert_ne!(before, after);
            }
            None => prop_assert_eq!(before, after, "at {:#x}", h),
        }
    }
    Ok(())
}

/// What every ring guarantees about itself.
fn check_ring(r: &Ring) -> Result<(), TestCaseError> {
    let shares = r.ownership();
    if !r.is_empty() {
        prop_assert_eq!(shares.iter().map(|s| s.arc).sum::<u128>(), 1u128 << 64);
    }
    let tokens: Vec<(Token, &str)> = r.tokens().collect();
    for m in r.members() {
        prop_assert!(
            tokens.iter().any(|t| t.1 == m.id),
            "{} holds no token",
            m.id
        );
    }
    if r.config().strategy == Placement::Balanced && tokens.len() > 1 {
        for (i, t) in tokens.iter().enumerate() {
            prop_assert_ne!(t.1, tokens[(i + 1) % tokens.len()].1, "redundant token");
        }
        prop_assert!(shares.iter().all(|s| s.arc > 0));
    }
    // Lookups follow the definition: the first token at or after the position.
    for h in probes(&[r]) {
        let expected = tokens
            .iter()
            .find(|t| t.0 >= h)
            .or(tokens.first())
            .map(|t| t.1);
        prop_assert_eq!(r.owner_of_hash(h).ok(), expected, "at {:#x}", h);
    }
    let (config, members, parts) = r.to_parts();
    let rebuilt = Ring::from_parts(config, members, parts).unwrap();
    prop_assert_eq!(&rebuilt, r);
    prop_assert_eq!(rebuilt.checksum(), r.checksum());
    // By owner index, members in reverse order.
    let mut members: Vec<Member> = r.members().cloned().collect();
    members.reverse();
    let n = members.len() as u32;
    let (tokens, owners): (Vec<Token>, Vec<u32>) =
        r.indexed_tokens().map(|(t, o)| (t, n - 1 - o)).unzip();
    prop_assert_eq!(
        &Ring::from_indexed_parts(config, members, tokens, owners).unwrap(),
        r
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn changes_move_only_what_they_must(config in config(), ops in prop::collection::vec(op(), 1..32)) {
        let mut ring = Ring::new(config);
        for op in &ops {
            let old = ring.clone();
            let plan = match op {
                Op::Add(id, w) => ring.plan_add(&Member::new(format!("m{id}"), *w)),
                Op::Remove(pick) => match ring.members().nth(pick % ring.len().max(1)) {
                    Some(m) => ring.plan_remove(&m.id),
                    None => continue,
                },
            };
            let Some((joiner, leaver)) = apply(&mut ring, op) else {
                prop_assert!(plan.is_err());
                prop_assert_eq!(&ring, &old);
                continue;
            };
            let d = diff(&old, &ring);
            prop_assert_eq!(plan.unwrap(), d.clone());
            for r in &d.ranges {
                if let Some(j) = &joiner {
                    prop_assert_eq!(&r.to, j, "a join moved a range between others");
                }
                if let Some(l) = &leaver {
                    prop_assert_eq!(&r.from, l, "a leave moved a range between others");
                }
            }
            if config.strategy == Placement::Balanced && !old.is_empty() && !ring.is_empty() {
                // A balanced join takes exactly its weight's share.
                if joiner.is_some() {
                    prop_assert!((d.moved_fraction - d.ideal_fraction).abs() < 1e-12);
                }
            }
            check_diff(&old, &ring, &d)?;
            check_ring(&ring)?;
        }
    }

    #[test]
    fn recorded_edits_cover_every_change(config in config(),
                                         base in prop::collection::vec(op(), 0..24),
                                         batch in prop::collection::vec(op(), 1..6)) {
        let old = build(config, &base);
        let mut ring = old.clone();
        let mut edits = Edits::default();
        for op in &batch {
            apply_recording(&mut ring, op, &mut edits);
        }
        let named = diff_at(&old, &ring, &edits);
        prop_assert_eq!(&named, &diff(&old, &ring));
        // The indexed form is the same diff with each id's index in its ring.
        let indexed = diff_at_indexed(&old, &ring, &edits);
        let id = |r: &Ring, at: MemberAt| {
            at.map_or(String::new(), |i| r.members().nth(i as usize).unwrap().id.clone())
        };
        let renamed: Vec<MovedRange> = indexed
            .ranges
            .iter()
            .map(|m| MovedRange {
                start: m.start,
                end: m.end,
                from: id(&old, m.from),
                to: id(&ring, m.to),
            })
            .collect();
        prop_assert_eq!(&renamed, &named.ranges);
        prop_assert_eq!((indexed.moved, indexed.ideal_fraction), (named.moved, named.ideal_fraction));
        if let Some(positions) = edits.positions() {
            let (before, after) = (tokens_by_position(&old), tokens_by_position(&ring));
            let everywhere: std::collections::BTreeSet<Token> =
                before.keys().chain(after.keys()).copied().collect();
            for t in everywhere.iter().filter(|t| positions.binary_search(t).is_err()) {
                prop_assert_eq!(before.get(t), after.get(t), "unrecorded change at {:#x}", t);
            }
            prop_assert!(positions.windows(2).all(|w| w[0] < w[1]), "not sorted and distinct");
        }
    }

    #[test]
    fn a_change_is_its_steps_all_or_nothing(config in config(),
                                            base in prop::collection::vec(op(), 0..24),
                                            leave in prop::collection::vec(any::<usize>(), 0..3),
                                            join in prop::collection::vec((0u8..24, 0u32..4), 0..4),
                                            next in (0u8..40, 1u32..4)) {
        let old = build(config, &base);
        // Ids may repeat and weights may be 0, so some changes fail part-way.
        let leave: Vec<String> = leave
            .iter()
            .filter_map(|pick| old.members().nth(pick % old.len().max(1)).map(|m| m.id.clone()))
            .collect();
        let join: Vec<Member> = join.iter().map(|&(id, w)| Member::new(format!("m{id}"), w)).collect();
        let mut steps = old.clone();
        let stepwise = leave
            .iter()
            .try_for_each(|id| steps.remove(id).map(drop))
            .and_then(|()| join.iter().try_for_each(|m| steps.add(m.clone())));
        let mut ring = old.clone();
        let mut edits = Edits::default();
        let changed = ring.change_recording(leave.iter().map(String::as_str), join.clone(), &mut edits);
        prop_assert_eq!(&changed, &stepwise);
        if changed.is_ok() {
            prop_assert_eq!(&ring, &steps);
            prop_assert_eq!(diff_at(&old, &ring, &edits), diff(&old, &ring));
        } else {
            prop_assert_eq!(&ring, &old);
            steps = old.clone();
        }
        prop_assert_eq!(ring.checksum(), steps.checksum());
        // A refused change leaves nothing behind: the next change plans alike.
        let member = Member::new(format!("n{}", next.0), next.1);
        prop_assert_eq!(ring.add(member.clone()), steps.add(member));
        prop_assert_eq!(&ring, &steps);
        check_ring(&ring)?;
    }

    /// Changes of many steps (a sync, a ring built from a list) are made at once: the
    /// same ring, the same errors, all or nothing, and a diff over their edits equal to
    /// the full one.
    #[test]
    fn a_change_of_many_steps_is_its_steps(config in config(),
                                           base in prop::collection::vec(op(), 0..24),
                                           leave in prop::collection::vec(any::<usize>(), 0..12),
                                           join in prop::collection::btree_map(0u8..120, 1u32..4, 24..48),
                                           turn in any::<prop::sample::Index>(),
                                           bad in prop::option::of((any::<prop::sample::Index>(), 0u8..3))) {
        let old = build(config, &base);
        let leave: Vec<String> = leave
            .iter()
            .filter_map(|pick| old.members().nth(pick % old.len().max(1)).map(|m| m.id.clone()))
            .collect();
        let mut join: Vec<Member> = join.iter().map(|(id, &w)| Member::new(format!("j{id}"), w)).collect();
        let first = turn.index(join.len());
        join.rotate_left(first);
        // Now and then a step that fails: a weight of 0, a member already there, an id
        // given twice.
        if let Some((at, kind)) = bad {
            let member = match (kind, old.members().next()) {
                (0, _) => Member::new("zero", 0),
                (1, Some(present)) if !leave.contains(&present.id) => present.clone(),
                _ => join[0].clone(),
            };
            let at = at.index(join.len() + 1);
            join.insert(at, member);
        }
        let mut steps = old.clone();
        let stepwise = leave
            .iter()
            .try_for_each(|id| steps.remove(id).map(drop))
            .and_then(|()| join.iter().try_for_each(|m| steps.add(m.clone())));
        let mut ring = old.clone();
        let mut edits = Edits::default();
        let changed = ring.change_recording(leave.iter().map(String::as_str), join, &mut edits);
        prop_assert_eq!(&changed, &stepwise);
        if changed.is_ok() {
            prop_assert_eq!(&ring, &steps);
            prop_assert_eq!(ring.checksum(), steps.checksum());
            prop_assert_eq!(diff_at(&old, &ring, &edits), diff(&old, &ring));
            check_ring(&ring)?;
        } else {
            prop_assert_eq!(&ring, &old);
        }
    }

    #[test]
    fn any_two_rings_diff_consistently(a in config(), b in config(),
                                       ops_a in prop::collection::vec(op(), 0..10),
                                       ops_b in prop::collection::vec(op(), 0..10)) {
        let (old, new) = (build(a, &ops_a), build(b, &ops_b));
        let d = diff(&old, &new);
        check_diff(&old, &new, &d)?;
        prop_assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn rings_are_deterministic(config in config(), ops in prop::collection::vec(op(), 0..16)) {
        let (a, b) = (build(config, &ops), build(config, &ops));
        prop_assert_eq!(a.checksum(), b.checksum());
        prop_assert_eq!(&a, &b);
    }

    #[test]
    fn random_rings_depend_only_on_the_member_set(
        vnodes in 1u32..9,
        weights in prop::collection::vec(1u32..4, 1..10),
        order in any::<u64>(),
        extra in 0usize..3,
    ) {
        let config = RingConfig::new(Placement::Random, vnodes).unwrap();
        let members: Vec<Member> =
            weights.iter().enumerate().map(|(i, w)| Member::new(format!("m{i}"), *w)).collect();
        let mut forward = Ring::new(config);
        for m in &members {
            forward.add(m.clone()).unwrap();
        }
        // Another order, with members that come and go in between.
        let mut shuffled = members.clone();
        let k = (order as usize) % shuffled.len();
        shuffled.rotate_left(k);
        shuffled.reverse();
        let mut other = Ring::new(config);
        for (i, m) in shuffled.iter().enumerate() {
            if i < extra {
                other.add(Member::new(format!("tmp{i}"), 2)).unwrap();
            }
            other.add(m.clone()).unwrap();
        }
        for i in 0..extra.min(shuffled.len()) {
            other.remove(&format!("tmp{i}")).unwrap();
        }
        prop_assert_eq!(forward.checksum(), other.checksum());
        prop_assert_eq!(forward, other);
    }

    #[test]
    fn successors_are_distinct_and_start_with_the_owner(
        config in config(),
        ops in prop::collection::vec(op(), 1..12),
        keys in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..20),
    ) {
        let ring = build(config, &ops);
        prop_assume!(!ring.is_empty());
        for key in &keys {
            let owner = ring.owner(key).unwrap();
            for n in 0..=ring.len() {
                let s = ring.successors(key, n).unwrap();
                prop_assert_eq!(s.len(), n);
                if n > 0 {
                    prop_assert_eq!(s[0], owner);
                }
                let mut sorted = s.clone();
                sorted.sort_unstable();
                sorted.dedup();
                prop_assert_eq!(sorted.len(), n, "repeated member in {:?}", s);
            }
        }
    }

    #[test]
    fn bounded_loads_never_exceed_the_cap(
        config in config(),
        ops in prop::collection::vec(op(), 1..10),
        c in 1.0f64..3.0,
        steps in prop::collection::vec((any::<u64>(), any::<bool>()), 1..300),
    ) {
        let ring = build(config, &ops);
        prop_assume!(!ring.is_empty());
        let mut loads = BoundedLoads::new(&ring, c).unwrap();
        let mut held: Vec<String> = Vec::new();
        for (hash, release) in steps {
            if release && !held.is_empty() {
                let id = held.swap_remove((hash as usize) % held.len());
                loads.release(&id).unwrap();
                continue;
            }
            let cap = loads.capacity();
            let m = loads.assigned() + 1;
            let n = ring.len() as u64;
            prop_assert!(cap >= (c * m as f64 / n as f64).ceil() as u64);
            let owner = loads.assign_hash(hash).unwrap();
            prop_assert!(loads.load(owner) <= cap, "{} has {} > {}", owner, loads.load(owner), cap);
            held.push(owner.to_owned());
            prop_assert_eq!(loads.assigned(), held.len() as u64);
        }
    }
}
