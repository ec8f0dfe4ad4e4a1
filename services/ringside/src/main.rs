//! The `ringside` binary.
fn main() {}
