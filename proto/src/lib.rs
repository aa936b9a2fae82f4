//! The wire contracts of sched.
//!
//! This crate will own the `.proto` files of the public API (`sched.v1`, served by every
//! `sched server`) and of the agent protocol (`agent.v1`, between servers and `sched-agent`),
//! compiled in `build.rs` with tonic-prost-build and protox (no system `protoc`). It holds no
//! logic: only generated types and their re-exports.
