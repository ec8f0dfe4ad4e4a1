//! The ringside event contract.
pub mod pb;
