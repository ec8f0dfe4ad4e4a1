//! The committed test vectors (`ring/testdata/vectors.json`, format in
//! `docs/ring-spec.md`): key hashes, random token candidates, and rings built from
//! membership changes with their tokens, key owners, successors, last change and
//! checksum. `vectors_match_the_committed_file` recomputes them and compares field by
//! field, so any change to hashing, placement or the checksum fails here first. After an
//! intended change of the contract, regenerate with
//! `cargo test -p ringside-ring --test vectors -- --ignored regenerate` and say why in
//! the commit.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too; a failure is a test failure

use ringside_ring::{
    HASH_SEED, Member, Ring, RingConfig, RingDiff, Strategy, Token, diff, hash_key,
};
use serde::{Deserialize, Serialize};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/vectors.json");

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Vectors {
    about: String,
    hash_seed: String,
    hashes: Vec<HashVector>,
    candidates: Vec<CandidateVector>,
    rings: Vec<RingVector>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct HashVector {
    key: String,
    hash: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct CandidateVector {
    id: String,
    index: u32,
    token: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct RingVector {
    name: String,
    strategy: String,
    vnodes: u32,
    ops: Vec<OpVector>,
    members: Vec<MemberVector>,
    token_count: usize,
    /// All tokens when `tokens_complete`, else the first ones by position.
    tokens: Vec<(String, String)>,
    tokens_complete: bool,
    lookups: Vec<LookupVector>,
    last_change: ChangeVector,
    checksum: String,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct OpVector {
    op: String,
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weight: Option<u32>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct MemberVector {
    id: String,
    weight: u32,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct LookupVector {
    key: String,
    hash: String,
    owner: String,
    successors: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct ChangeVector {
    ranges: Vec<RangeVector>,
    /// Total moved width as a decimal integer (the whole ring is 2^64).
    moved: String,
    /// Informational: JSON floats need not round-trip exactly, so compared to 1e-12.
    moved_fraction: f64,
    ideal_fraction: f64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct RangeVector {
    start: String,
    end: String,
    from: String,
    to: String,
}

fn hex(v: u64) -> String {
    format!("{v:#018x}")
}

fn keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "",
        "a",
        "ab",
        "abc",
        "ünïcödé",
        "\u{1f680}",
        "key with spaces",
    ]
    .iter()
    .map(|k| k.to_string())
    .collect();
    keys.extend((0..36).map(|i| format!("key-{i}")));
    keys.extend(["user:1001:session", "/api/v1/items/42"].map(String::from));
    // 241 and 1000 bytes take xxh3's long-input path (over 240 bytes).
    for len in [17, 100, 241, 1000] {
        keys.push("x".repeat(len));
    }
    keys
}

fn add(id: &str, weight: u32) -> OpVector {
    OpVector {
        op: "add".into(),
        id: id.into(),
        weight: Some(weight),
    }
}

fn remove(id: &str) -> OpVector {
    OpVector {
        op: "remove".into(),
        id: id.into(),
        weight: None,
    }
}

/// The ring after `ops`, and the plan of the last op (checked against the diff).
fn replay(config: RingConfig, ops: &[OpVector]) -> (Ring, RingDiff) {
    let mut ring = Ring::new(config);
    let mut last = diff(&ring, &ring);
    for op in ops {
        let before = ring.clone();
        last = match op.weight {
            Some(w) => {
                let member = Member::new(op.id.as_str(), w);
                let plan = ring.plan_add(&member).unwrap();
                ring.add(member).unwrap();
                plan
            }
            None => {
                let plan = ring.plan_remove(&op.id).unwrap();
                ring.remove(&op.id).unwrap();
                plan
            }
        };
        assert_eq!(last, diff(&before, &ring), "plan of {op:?}");
    }
    (ring, last)
}

fn ring_vector(name: &str, strategy: Strategy, vnodes: u32, ops: Vec<OpVector>) -> RingVector {
    let (ring, last) = replay(RingConfig::new(strategy, vnodes).unwrap(), &ops);
    let complete = ring.token_count() <= 1000;
    let shown = if complete { ring.token_count() } else { 32 };
    let replicas = ring.len().min(3);
    RingVector {
        name: name.into(),
        strategy: strategy.to_string(),
        vnodes,
        ops,
        members: ring
            .members()
            .map(|m| MemberVector {
                id: m.id.clone(),
                weight: m.weight,
            })
            .collect(),
        token_count: ring.token_count(),
        tokens: ring
            .tokens()
            .take(shown)
            .map(|(t, id)| (hex(t), id.to_owned()))
            .collect(),
        tokens_complete: complete,
        lookups: keys()
            .into_iter()
            .map(|key| LookupVector {
                hash: hex(hash_key(key.as_bytes())),
                owner: ring.owner(key.as_bytes()).unwrap().to_owned(),
                successors: ring
                    .successors(key.as_bytes(), replicas)
                    .unwrap()
                    .into_iter()
                    .map(String::from)
                    .collect(),
                key,
            })
            .collect(),
        last_change: ChangeVector {
            ranges: last
                .ranges
                .iter()
                .map(|r| RangeVector {
                    start: hex(r.start),
                    end: hex(r.end),
                    from: r.from.clone(),
                    to: r.to.clone(),
                })
                .collect(),
            moved: last.moved.to_string(),
            moved_fraction: last.moved_fraction,
            ideal_fraction: last.ideal_fraction,
        },
        checksum: hex(ring.checksum()),
    }
}

/// The token candidate `index` of member `id`, per the spec (independent of the crate).
fn candidate(id: &str, index: u32) -> Token {
    let mut input = id.as_bytes().to_vec();
    input.push(0);
    input.extend_from_slice(&index.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64_with_seed(&input, HASH_SEED)
}

fn compute() -> Vectors {
    let nodes = |range: std::ops::Range<u32>| range.map(|i| add(&format!("node-{i}"), 1));
    let mut balanced_160: Vec<OpVector> = nodes(0..20).collect();
    balanced_160.extend([remove("node-7"), add("node-20", 2)]);
    // Mixed weights and churn: leaves here exercise every path of 6.4.
    let mut churn: Vec<OpVector> = (0..30).map(|i| add(&format!("m{i}"), 1 + i % 3)).collect();
    for step in 0..20u32 {
        // 7 and 30 are coprime: 20 distinct original members leave.
        churn.push(remove(&format!("m{}", step * 7 % 30)));
        churn.push(add(&format!("m{}", 30 + step), 1 + step % 4));
    }
    Vectors {
        about: "ringside ring test vectors; format and rules in docs/ring-spec.md".into(),
        hash_seed: hex(HASH_SEED),
        hashes: keys()
            .into_iter()
            .map(|key| HashVector {
                hash: hex(hash_key(key.as_bytes())),
                key,
            })
            .collect(),
        candidates: ["a", "node-1", "ünïcödé"]
            .iter()
            .flat_map(|id| {
                (0..4).map(move |index| CandidateVector {
                    id: id.to_string(),
                    index,
                    token: hex(candidate(id, index)),
                })
            })
            .collect(),
        rings: vec![
            ring_vector(
                "random-small",
                Strategy::Random,
                4,
                vec![add("a", 1), add("b", 2), add("c", 1)],
            ),
            ring_vector(
                "balanced-small",
                Strategy::Balanced,
                4,
                vec![
                    add("a", 1),
                    add("b", 1),
                    add("c", 2),
                    add("d", 1),
                    remove("b"),
                    add("e", 1),
                    remove("a"),
                    add("f", 3),
                ],
            ),
            ring_vector("random-160", Strategy::Random, 160, nodes(0..10).collect()),
            ring_vector("balanced-160", Strategy::Balanced, 160, balanced_160),
            ring_vector("balanced-churn", Strategy::Balanced, 16, churn),
        ],
    }
}

#[test]
fn vectors_match_the_committed_file() {
    let text = std::fs::read_to_string(PATH).unwrap();
    let committed: Vectors = serde_json::from_str(&text).unwrap();
    let now = compute();
    assert_eq!(committed.hash_seed, now.hash_seed);
    assert_eq!(committed.hashes, now.hashes, "key hashes changed");
    assert_eq!(
        committed.candidates, now.candidates,
        "random token candidates changed"
    );
    assert_eq!(committed.rings.len(), now.rings.len());
    for (c, n) in committed.rings.iter().zip(&now.rings) {
        let name = &c.name;
        assert_eq!(
            (&c.name, &c.strategy, c.vnodes, &c.ops),
            (&n.name, &n.strategy, n.vnodes, &n.ops)
        );
        assert_eq!(c.members, n.members, "{name}: members");
        assert_eq!(c.token_count, n.token_count, "{name}: token count");
        assert_eq!(c.tokens, n.tokens, "{name}: tokens");
        for (cl, nl) in c.lookups.iter().zip(&n.lookups) {
            assert_eq!(cl, nl, "{name}: lookup of {:?}", cl.key);
        }
        assert_eq!(c.lookups.len(), n.lookups.len(), "{name}: lookups");
        let (cc, nc) = (&c.last_change, &n.last_change);
        assert_eq!(cc.ranges, nc.ranges, "{name}: last change");
        assert_eq!(cc.moved, nc.moved, "{name}: moved");
        assert!(
            (cc.moved_fraction - nc.moved_fraction).abs() < 1e-12,
            "{name}"
        );
        assert!(
            (cc.ideal_fraction - nc.ideal_fraction).abs() < 1e-12,
            "{name}"
        );
        assert_eq!(c.checksum, n.checksum, "{name}: checksum");
    }
}

#[test]
fn complete_vectors_rebuild_from_their_tokens() {
    // A reimplementation can start from the listed tokens: they make the same ring.
    let committed: Vectors = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    for v in committed.rings.iter().filter(|v| v.tokens_complete) {
        let strategy: Strategy = v.strategy.parse().unwrap();
        let tokens = v
            .tokens
            .iter()
            .map(|(t, id)| (u64::from_str_radix(&t[2..], 16).unwrap(), id.clone()))
            .collect();
        let members = v
            .members
            .iter()
            .map(|m| Member::new(m.id.as_str(), m.weight))
            .collect();
        let ring = Ring::from_parts(
            RingConfig::new(strategy, v.vnodes).unwrap(),
            members,
            tokens,
        )
        .unwrap();
        assert_eq!(hex(ring.checksum()), v.checksum, "{}", v.name);
        for l in &v.lookups {
            assert_eq!(
                ring.owner(l.key.as_bytes()).unwrap(),
                l.owner,
                "{}: {:?}",
                v.name,
                l.key
            );
        }
    }
}

#[test]
#[ignore = "rewrites testdata/vectors.json; run only after an intended contract change"]
fn regenerate() {
    let text = serde_json::to_string_pretty(&compute()).unwrap();
    std::fs::write(PATH, text + "\n").unwrap();
}
