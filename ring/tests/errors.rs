//! Every error of the ring crate, each from the smallest input that causes it: bad input
//! is an error value, never a panic.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too; a failure is a test failure

use ringside_ring::{
    BoundedLoads, MAX_TOKENS, Member, Ring, RingConfig, RingError, Strategy, Token,
};

const STRATEGIES: [Strategy; 2] = [Strategy::Random, Strategy::Balanced];

fn ring(strategy: Strategy, ids: &[&str]) -> Ring {
    let mut ring = Ring::new(RingConfig::new(strategy, 8).unwrap());
    for id in ids {
        ring.add(Member::new(*id, 1)).unwrap();
    }
    ring
}

fn parts(ring: &Ring) -> (RingConfig, Vec<Member>, Vec<(Token, String)>) {
    ring.to_parts()
}

#[test]
fn lookups_on_an_empty_ring() {
    for s in STRATEGIES {
        let empty = ring(s, &[]);
        assert_eq!(empty.owner(b"k"), Err(RingError::Empty));
        assert_eq!(empty.owner_of_hash(0), Err(RingError::Empty));
        assert_eq!(empty.successors(b"k", 1), Err(RingError::Empty));
        assert_eq!(empty.successors(b"k", 0), Err(RingError::Empty));
        assert_eq!(
            BoundedLoads::new(&empty, 1.25).err(),
            Some(RingError::Empty)
        );
        assert!(empty.ownership().is_empty());
    }
}

#[test]
fn adding_a_member_twice() {
    for s in STRATEGIES {
        let mut r = ring(s, &["a"]);
        let before = r.clone();
        let dup = Member::new("a", 2);
        assert_eq!(
            r.plan_add(&dup),
            Err(RingError::DuplicateMember("a".into()))
        );
        assert_eq!(r.add(dup), Err(RingError::DuplicateMember("a".into())));
        assert_eq!(r, before, "a failed add leaves the ring unchanged");
    }
}

#[test]
fn removing_an_unknown_member() {
    for s in STRATEGIES {
        let mut r = ring(s, &["a"]);
        assert_eq!(r.remove("b"), Err(RingError::UnknownMember("b".into())));
        assert_eq!(
            r.plan_remove("b"),
            Err(RingError::UnknownMember("b".into()))
        );
        assert_eq!(
            ring(s, &[]).remove("a"),
            Err(RingError::UnknownMember("a".into()))
        );
    }
}

#[test]
fn weight_zero_and_empty_id() {
    for s in STRATEGIES {
        let mut r = ring(s, &[]);
        assert_eq!(
            r.add(Member::new("a", 0)),
            Err(RingError::ZeroWeight("a".into()))
        );
        assert_eq!(
            r.plan_add(&Member::new("a", 0)),
            Err(RingError::ZeroWeight("a".into()))
        );
        assert_eq!(r.add(Member::new("", 1)), Err(RingError::EmptyId));
        assert!(r.is_empty());
    }
}

#[test]
fn configuration_out_of_range() {
    for vnodes in [0, RingConfig::MAX_VNODES + 1, u32::MAX] {
        assert!(matches!(
            RingConfig::new(Strategy::Random, vnodes),
            Err(RingError::InvalidConfig(_))
        ));
        // The fields are public: a hand-built configuration is refused when used.
        let mut r = Ring::new(RingConfig {
            strategy: Strategy::Balanced,
            vnodes,
        });
        assert!(matches!(
            r.add(Member::new("a", 1)),
            Err(RingError::InvalidConfig(_))
        ));
        assert!(r.is_empty());
    }
    assert!(RingConfig::new(Strategy::Random, RingConfig::MAX_VNODES).is_ok());
    assert_eq!(RingConfig::default().vnodes, 160);
    assert_eq!(RingConfig::default().strategy, Strategy::Balanced);
}

#[test]
fn strategy_names() {
    for s in STRATEGIES {
        assert_eq!(s.to_string().parse::<Strategy>(), Ok(s));
    }
    let err = "Random".parse::<Strategy>().unwrap_err();
    assert!(matches!(&err, RingError::InvalidConfig(m) if m.contains("random, balanced")));
}

#[test]
fn load_factor_out_of_range() {
    let r = ring(Strategy::Random, &["a"]);
    for c in [0.0, 0.999, -1.0, f64::NAN, f64::INFINITY] {
        assert!(
            matches!(BoundedLoads::new(&r, c), Err(RingError::InvalidConfig(_))),
            "c = {c}"
        );
    }
    assert!(BoundedLoads::new(&r, 1.0).is_ok());
}

#[test]
fn more_successors_than_members() {
    for s in STRATEGIES {
        let r = ring(s, &["a", "b"]);
        assert_eq!(
            r.successors(b"k", 3),
            Err(RingError::TooFewMembers { asked: 3, have: 2 })
        );
        assert_eq!(r.successors(b"k", 0), Ok(vec![]));
        assert_eq!(r.successors(b"k", 2).unwrap().len(), 2);
    }
}

#[test]
fn more_tokens_than_the_limit() {
    let mut r = ring(Strategy::Random, &[]);
    let heavy = Member::new("heavy", u32::MAX);
    let expected = RingError::TooManyTokens {
        requested: 8 * u64::from(u32::MAX),
        max: MAX_TOKENS as u64,
    };
    assert_eq!(r.plan_add(&heavy), Err(expected.clone()));
    assert_eq!(r.add(heavy), Err(expected));
    // Balanced members take at most one new token per donor, whatever their weight.
    let mut b = ring(Strategy::Balanced, &["a"]);
    b.add(Member::new("heavy", u32::MAX)).unwrap();
    assert_eq!(b.token_count(), 2);
}

#[test]
fn releasing_what_was_never_assigned() {
    let r = ring(Strategy::Balanced, &["a", "b"]);
    let mut loads = BoundedLoads::new(&r, 1.25).unwrap();
    assert_eq!(
        loads.release("a"),
        Err(RingError::NothingAssigned("a".into()))
    );
    assert_eq!(
        loads.release("zz"),
        Err(RingError::UnknownMember("zz".into()))
    );
    let owner = loads.assign(b"k").unwrap();
    assert_eq!(loads.release(owner), Ok(()));
    assert_eq!(
        loads.release(owner),
        Err(RingError::NothingAssigned(owner.into()))
    );
}

#[test]
fn snapshots_with_bad_members() {
    let (config, members, tokens) = parts(&ring(Strategy::Balanced, &["a", "b"]));
    let mut twice = members.clone();
    twice.push(Member::new("a", 3));
    assert_eq!(
        Ring::from_parts(config, twice, tokens.clone()),
        Err(RingError::DuplicateMember("a".into()))
    );
    let mut zero = members.clone();
    zero[0].weight = 0;
    assert_eq!(
        Ring::from_parts(config, zero, tokens.clone()),
        Err(RingError::ZeroWeight("a".into()))
    );
    let mut nameless = members.clone();
    nameless.push(Member::new("", 1));
    assert_eq!(
        Ring::from_parts(config, nameless, tokens.clone()),
        Err(RingError::EmptyId)
    );
    let bad = RingConfig {
        strategy: Strategy::Balanced,
        vnodes: 0,
    };
    assert!(matches!(
        Ring::from_parts(bad, members.clone(), tokens.clone()),
        Err(RingError::InvalidConfig(_))
    ));
    let mut stranger = tokens.clone();
    stranger[0].1 = "c".into();
    assert_eq!(
        Ring::from_parts(config, members, stranger),
        Err(RingError::UnknownMember("c".into()))
    );
}

#[test]
fn snapshots_with_bad_tokens() {
    let snapshot_error = |r: Result<Ring, RingError>| match r {
        Err(RingError::InvalidSnapshot(m)) => m,
        other => panic!("expected InvalidSnapshot, got {other:?}"),
    };
    let (config, members, tokens) = parts(&ring(Strategy::Balanced, &["a", "b", "c"]));
    assert!(tokens.len() >= 3);

    let mut unsorted = tokens.clone();
    unsorted.swap(0, 1);
    let m = snapshot_error(Ring::from_parts(config, members.clone(), unsorted));
    assert!(m.contains("not sorted"), "{m}");

    let mut repeated = tokens.clone();
    repeated.insert(1, repeated[0].clone());
    let m = snapshot_error(Ring::from_parts(config, members.clone(), repeated));
    assert!(m.contains("not sorted"), "{m}");

    let without_c: Vec<_> = tokens.iter().filter(|t| t.1 != "c").cloned().collect();
    let m = snapshot_error(Ring::from_parts(config, members.clone(), without_c));
    assert!(m.contains("'c' holds no token"), "{m}");

    // Balanced rings never share a position, and never hold a redundant token.
    let mut shared = tokens.clone();
    let (t0, id0) = shared[0].clone();
    let other = members.iter().find(|m| m.id != id0).unwrap().id.clone();
    // Equal positions are ordered by id, so the order check passes and this one fires.
    let at = if other > id0 { 1 } else { 0 };
    shared.insert(at, (t0, other));
    let m = snapshot_error(Ring::from_parts(config, members.clone(), shared));
    assert!(m.contains("share position"), "{m}");

    let mut redundant = tokens.clone();
    let (t0, id0) = redundant[0].clone();
    redundant.insert(0, (t0 - 1, id0));
    let m = snapshot_error(Ring::from_parts(config, members.clone(), redundant));
    assert!(m.contains("followed by another token"), "{m}");

    // Random rings must hold exactly the derived tokens.
    let (rconfig, rmembers, mut rtokens) = parts(&ring(Strategy::Random, &["a", "b"]));
    rtokens[0].0 -= 1;
    let m = snapshot_error(Ring::from_parts(rconfig, rmembers, rtokens));
    assert!(m.contains("random derivation"), "{m}");
}

#[test]
fn indexed_snapshots_with_bad_owners() {
    let snapshot_error = |r: Result<Ring, RingError>| match r {
        Err(RingError::InvalidSnapshot(m)) => m,
        other => panic!("expected InvalidSnapshot, got {other:?}"),
    };
    for s in STRATEGIES {
        let r = ring(s, &["a", "b", "c"]);
        let members: Vec<Member> = r.members().cloned().collect();
        let (tokens, owners): (Vec<Token>, Vec<u32>) = r.indexed_tokens().unzip();
        let build = |tokens: Vec<Token>, owners: Vec<u32>| {
            Ring::from_indexed_parts(*r.config(), members.clone(), tokens, owners)
        };
        assert_eq!(build(tokens.clone(), owners.clone()).as_ref(), Ok(&r));

        let m = snapshot_error(build(tokens[1..].to_vec(), owners.clone()));
        assert!(m.contains("tokens but"), "{m}");
        let mut stranger = owners.clone();
        stranger[2] = 3;
        let m = snapshot_error(build(tokens.clone(), stranger));
        assert!(m.contains("member index 3 of 3"), "{m}");
        let mut unsorted = tokens.clone();
        unsorted.swap(0, 1);
        let m = snapshot_error(build(unsorted, owners.clone()));
        assert!(m.contains("not sorted"), "{m}");
        let without_c: (Vec<Token>, Vec<u32>) = r.indexed_tokens().filter(|t| t.1 != 2).unzip();
        let m = snapshot_error(build(without_c.0, without_c.1));
        assert!(m.contains("'c' holds no token"), "{m}");
        // Checked like any snapshot: members, then tokens.
        let twice = [members.clone(), vec![Member::new("b", 1)]].concat();
        assert_eq!(
            Ring::from_indexed_parts(*r.config(), twice, tokens.clone(), owners.clone()),
            Err(RingError::DuplicateMember("b".into()))
        );
    }
}

#[test]
fn keys_of_any_length() {
    let long = vec![0xa5u8; 1 << 20];
    for s in STRATEGIES {
        let r = ring(s, &["a", "b", "c"]);
        for key in [&b""[..], b"\0", b"k", &long[..]] {
            let owner = r.owner(key).unwrap();
            assert_eq!(r.successors(key, 3).unwrap()[0], owner);
        }
    }
}
