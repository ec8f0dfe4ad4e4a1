//! Behaviour of the ring on small, hand-checkable cases: the ownership rule, successors,
//! shares, diffs and plans at the edges (empty rings), balance and bounded loads.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too; a failure is a test failure

use ringside_ring::{BoundedLoads, Member, Ring, RingConfig, Strategy, Token, diff, hash_key};

const WHOLE: u128 = 1 << 64;

fn ring(strategy: Strategy, vnodes: u32, members: &[(&str, u32)]) -> Ring {
    let mut ring = Ring::new(RingConfig::new(strategy, vnodes).unwrap());
    for &(id, weight) in members {
        ring.add(Member::new(id, weight)).unwrap();
    }
    ring
}

/// A balanced ring with exactly these tokens (a valid snapshot).
fn fixed(tokens: &[(Token, &str)]) -> Ring {
    let mut ids: Vec<&str> = tokens.iter().map(|t| t.1).collect();
    ids.sort_unstable();
    ids.dedup();
    Ring::from_parts(
        RingConfig::default(),
        ids.iter().map(|id| Member::new(*id, 1)).collect(),
        tokens.iter().map(|&(t, id)| (t, id.to_owned())).collect(),
    )
    .unwrap()
}

fn peak_over_mean(r: &Ring) -> f64 {
    let total: f64 = r.members().map(|m| f64::from(m.weight)).sum();
    r.ownership()
        .iter()
        .zip(r.members())
        .map(|(s, m)| s.fraction * total / f64::from(m.weight))
        .fold(0.0, f64::max)
}

#[test]
fn a_position_belongs_to_the_first_token_at_or_after_it() {
    let r = fixed(&[(100, "a"), (200, "b"), (300, "c")]);
    let cases = [
        (0, "a"),
        (100, "a"),
        (101, "b"),
        (200, "b"),
        (250, "c"),
        (300, "c"),
        (301, "a"),
        (u64::MAX, "a"),
    ];
    for (h, owner) in cases {
        assert_eq!(r.owner_of_hash(h), Ok(owner), "position {h}");
    }
    assert_eq!(r.owner(b"some key"), r.owner_of_hash(hash_key(b"some key")));
    // Arcs: a owns (300, 100] across the wrap, b (100, 200], c (200, 300].
    let shares = r.ownership();
    assert_eq!(shares[0].arc, WHOLE - 200);
    assert_eq!(shares[1].arc, 100);
    assert_eq!(shares[2].arc, 100);
}

#[test]
fn successors_walk_clockwise_over_distinct_members() {
    let r = fixed(&[(100, "a"), (200, "b"), (300, "a"), (400, "c")]);
    assert_eq!(r.successors_of_hash(150, 3), Ok(vec!["b", "a", "c"]));
    assert_eq!(r.successors_of_hash(350, 2), Ok(vec!["c", "a"]));
    assert_eq!(r.successors_of_hash(401, 3), Ok(vec!["a", "b", "c"]));
    assert_eq!(r.successors_of_hash(401, 1), Ok(vec!["a"]));
}

#[test]
fn members_and_tokens_are_listed_in_order() {
    for s in [Strategy::Random, Strategy::Balanced] {
        let r = ring(s, 4, &[("c", 1), ("a", 2), ("b", 1)]);
        let ids: Vec<&str> = r.members().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let tokens: Vec<Token> = r.tokens().map(|t| t.0).collect();
        assert!(tokens.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(r.token_count(), tokens.len());
        assert!(r.contains("b") && !r.contains("d"));
        assert_eq!(r.member("a"), Some(&Member::new("a", 2)));
        assert_eq!(r.len(), 3);
    }
}

#[test]
fn random_members_hold_vnodes_times_weight_tokens() {
    let r = ring(Strategy::Random, 10, &[("a", 1), ("b", 3)]);
    assert_eq!(r.tokens().filter(|t| t.1 == "a").count(), 10);
    assert_eq!(r.tokens().filter(|t| t.1 == "b").count(), 30);
}

#[test]
fn balanced_shares_follow_weights_exactly() {
    let r = ring(
        Strategy::Balanced,
        16,
        &[("a", 1), ("b", 2), ("c", 1), ("d", 4)],
    );
    let shares = r.ownership();
    assert_eq!(shares.iter().map(|s| s.arc).sum::<u128>(), WHOLE);
    for (share, weight) in shares.iter().zip([1.0, 2.0, 1.0, 4.0]) {
        assert!((share.fraction - weight / 8.0).abs() < 1e-12, "{share:?}");
    }
}

#[test]
fn balanced_stays_balanced_under_churn() {
    // A join trims the `vnodes` members owning the most, so between trims the others
    // drift up by at most about 1 / vnodes of the mean.
    let vnodes = 32;
    let bound = 1.0 + 1.0 / f64::from(vnodes);
    let mut r = Ring::new(RingConfig::new(Strategy::Balanced, vnodes).unwrap());
    for i in 0..150 {
        r.add(Member::new(format!("m{i}"), 1)).unwrap();
        assert!(
            peak_over_mean(&r) <= bound,
            "after join {i}: {}",
            peak_over_mean(&r)
        );
    }
    for step in 0..150usize {
        let before = peak_over_mean(&r);
        let ids: Vec<String> = r.members().map(|m| m.id.clone()).collect();
        r.remove(&ids[step * 7919 % ids.len()]).unwrap();
        // Neighbours absorb a leaver's arcs up to 1 + 1/128 of their share; members
        // that get nothing only fall relative to the risen mean.
        let after_leave = peak_over_mean(&r);
        assert!(
            after_leave <= before.max(1.0 + 1.0 / 128.0) + 1e-9,
            "leave {step}"
        );
        r.add(Member::new(format!("m{}", 150 + step), 1)).unwrap();
        assert!(
            peak_over_mean(&r) <= bound,
            "join {step}: {}",
            peak_over_mean(&r)
        );
    }
    // Leaves merge arcs into their neighbours, so the token count stays near
    // vnodes per member instead of growing with every change.
    assert!(
        r.token_count() <= 2 * 32 * 150,
        "{} tokens",
        r.token_count()
    );
}

#[test]
fn filling_and_emptying_a_ring_moves_everything() {
    for s in [Strategy::Random, Strategy::Balanced] {
        let empty = Ring::new(RingConfig::new(s, 4).unwrap());
        let one = ring(s, 4, &[("a", 1)]);
        let up = diff(&empty, &one);
        assert_eq!(up, empty.plan_add(&Member::new("a", 1)).unwrap());
        assert_eq!(up.ranges.len(), 1);
        let range = &up.ranges[0];
        assert_eq!(
            (
                range.start == range.end,
                range.from.as_str(),
                range.to.as_str()
            ),
            (true, "", "a")
        );
        assert_eq!(
            (up.moved, up.moved_fraction, up.ideal_fraction),
            (WHOLE, 1.0, 1.0)
        );
        assert!(range.contains(0) && range.contains(u64::MAX) && range.width() == WHOLE);

        let down = diff(&one, &empty);
        assert_eq!(down, one.plan_remove("a").unwrap());
        assert_eq!(
            (down.ranges[0].from.as_str(), down.ranges[0].to.as_str()),
            ("a", "")
        );
        assert_eq!(down.moved_over_ideal(), Some(1.0));

        let none = diff(&empty, &empty);
        assert!(none.is_empty());
        assert_eq!(
            (none.moved, none.ideal_fraction, none.moved_over_ideal()),
            (0, 0.0, None)
        );
    }
}

#[test]
fn ideal_movement_of_one_member_among_equals() {
    for s in [Strategy::Random, Strategy::Balanced] {
        let four = ring(s, 16, &[("a", 1), ("b", 1), ("c", 1), ("d", 1)]);
        let add = four.plan_add(&Member::new("e", 1)).unwrap();
        assert!((add.ideal_fraction - 1.0 / 5.0).abs() < 1e-15);
        let remove = four.plan_remove("b").unwrap();
        assert!((remove.ideal_fraction - 1.0 / 4.0).abs() < 1e-15);
        assert!(diff(&four, &four).is_empty());
        if s == Strategy::Balanced {
            // A balanced joiner takes exactly its share, and a leaver owned its share.
            assert!((add.moved_fraction - 0.2).abs() < 1e-15);
            assert!((remove.moved_fraction - 0.25).abs() < 1e-15);
        }
    }
}

#[test]
fn ranges_sort_by_end_and_the_wrapping_one_comes_first() {
    let before = fixed(&[(100, "a"), (200, "b"), (300, "c")]);
    let after = fixed(&[(100, "a"), (200, "b"), (300, "c"), (u64::MAX - 5, "d")]);
    let d = diff(&before, &after);
    // d takes (300, MAX-5] from a, which is not wrapping; remove c instead.
    assert_eq!(d.ranges.len(), 1);
    assert_eq!((d.ranges[0].start, d.ranges[0].end), (300, u64::MAX - 5));
    let no_c = fixed(&[(100, "a"), (200, "b")]);
    let d = diff(&before, &no_c);
    assert_eq!(
        (d.ranges[0].start, d.ranges[0].end, d.ranges[0].to.as_str()),
        (200, 300, "a")
    );
    let no_a = fixed(&[(200, "b"), (300, "c")]);
    let d = diff(&before, &no_a);
    // a's arc (300, 100] wraps past 0 and goes to b.
    assert_eq!(
        (d.ranges[0].start, d.ranges[0].end, d.ranges[0].to.as_str()),
        (300, 100, "b")
    );
    assert_eq!(d.range_at(5).map(|r| r.from.as_str()), Some("a"));
    assert_eq!(d.range_at(u64::MAX).map(|r| r.from.as_str()), Some("a"));
    assert_eq!(d.range_at(150), None);
}

#[test]
fn bounded_loads_with_c_one_are_perfectly_even() {
    let r = ring(
        Strategy::Random,
        8,
        &[("a", 1), ("b", 1), ("c", 1), ("d", 1)],
    );
    let mut loads = BoundedLoads::new(&r, 1.0).unwrap();
    for i in 0..400 {
        let cap = loads.capacity();
        let owner = loads.assign(format!("key-{i}").as_bytes()).unwrap();
        assert!(loads.load(owner) <= cap);
    }
    for id in ["a", "b", "c", "d"] {
        assert_eq!(loads.load(id), 100);
    }
    assert_eq!(
        (loads.assigned(), loads.factor(), loads.load("zz")),
        (400, 1.0, 0)
    );
}

#[test]
fn checksums_identify_the_ring() {
    let ops = [("a", 1), ("b", 2), ("c", 1)];
    let r = ring(Strategy::Balanced, 16, &ops);
    assert_eq!(r.checksum(), ring(Strategy::Balanced, 16, &ops).checksum());
    assert_ne!(r.checksum(), ring(Strategy::Balanced, 17, &ops).checksum());
    assert_ne!(r.checksum(), ring(Strategy::Random, 16, &ops).checksum());
    let (config, members, tokens) = r.to_parts();
    let back = Ring::from_parts(config, members, tokens).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.checksum(), r.checksum());
    // Debug names the members and the checksum but not every token.
    let debug = format!("{r:?}");
    assert!(debug.contains("checksum") && debug.contains("\"b\"") && debug.len() < 400);
}

#[test]
fn clones_are_independent_and_derived_values_follow_changes() {
    for strategy in [Strategy::Random, Strategy::Balanced] {
        let a = ring(strategy, 16, &[("a", 1), ("b", 2), ("c", 1)]);
        // Lookups, ownership and the checksum of `a` are in use before the copy changes.
        let (sum, shares) = (a.checksum(), a.ownership());
        let owners: Vec<String> = (0..64u64)
            .map(|i| a.owner_of_hash(i << 58).unwrap().to_owned())
            .collect();
        let tokens: Vec<(Token, String)> = a.to_parts().2;
        let mut b = a.clone();
        b.add(Member::new("d", 1)).unwrap();
        assert_eq!(
            (a.checksum(), a.ownership(), a.to_parts().2),
            (sum, shares, tokens)
        );
        for (i, owner) in owners.iter().enumerate() {
            assert_eq!(a.owner_of_hash((i as u64) << 58), Ok(owner.as_str()));
        }
        // The changed copy answers for its own tokens, as a ring built from them does.
        let (config, members, tokens) = b.to_parts();
        let fresh = Ring::from_parts(config, members, tokens).unwrap();
        assert_ne!(b.checksum(), sum);
        assert_eq!(
            (b.checksum(), b.ownership()),
            (fresh.checksum(), fresh.ownership())
        );
        for i in 0..64u64 {
            assert_eq!(b.owner_of_hash(i << 58), fresh.owner_of_hash(i << 58));
        }
    }
}
