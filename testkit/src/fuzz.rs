//! Fuzzing on a stable toolchain: byte-level mutation of valid inputs with proptest
//! (cargo-fuzz needs nightly). A test takes a valid encoding, applies a few
//! [`Mutation`]s and feeds the result to a decoder, which must answer with a value or
//! an error and never panic.

use proptest::prelude::*;

/// One change to a byte string; positions wrap around its length.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Flips bit `.1` (0..8) of the byte at `.0`.
    Flip(usize, u8),
    /// Sets the byte at `.0`.
    Set(usize, u8),
    /// Inserts a byte at `.0`.
    Insert(usize, u8),
    /// Removes the byte at `.0`.
    Remove(usize),
    /// Cuts the string at `.0`.
    Truncate(usize),
}

/// Any mutation.
pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Insert(i, v)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

/// `bytes` with `mutations` applied in order.
pub fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match *m {
            Mutation::Insert(i, v) => bytes.insert(i % (len + 1), v),
            _ if len == 0 => {}
            Mutation::Flip(i, bit) => bytes[i % len] ^= 1 << (bit % 8),
            Mutation::Set(i, v) => bytes[i % len] = v,
            Mutation::Remove(i) => {
                bytes.remove(i % len);
            }
            Mutation::Truncate(i) => bytes.truncate(i % len),
        }
    }
    bytes
}

/// Inputs per fuzz target: `RINGSIDE_FUZZ_CASES` (default 2,000) divided by `cost`
/// (a target whose input is expensive runs fewer), at least one.
pub fn cases(cost: u32) -> u32 {
    std::env::var("RINGSIDE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(2_000)
        .checked_div(cost.max(1))
        .unwrap_or(1)
        .max(1)
}
