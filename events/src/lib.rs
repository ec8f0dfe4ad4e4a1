//! The ringside event contract: protobuf types, subjects, headers, codec, and the
//! JetStream plumbing every service shares.
pub mod codec;
pub mod event;
pub mod headers;
pub mod names;
pub mod pb;
pub mod subject;
