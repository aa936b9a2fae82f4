//! The wire contracts of sched.
//!
//! This crate owns the `.proto` files (under `proto/`) and nothing else: `build.rs` compiles
//! them with protox (no system `protoc`) and tonic-prost-build; this file wraps the generated
//! code in modules named after the proto packages.
//!
//! - [`sched::v1`]: the public API served by every `sched server` (`ServiceApi`, `ClusterApi`,
//!   `LogApi`, `PkiApi` for certificates and join tokens) and the domain messages (`ServiceSpec`, `Revision`, `Service`, `Task`, `Node`,
//!   `Event`, `LogLine`).
//! - [`agent::v1`]: the protocol between `sched-agent` and the servers (`AgentApi`: register,
//!   heartbeat, a stream of assignments, task status reports), and the agent's own API that the
//!   servers call (`TaskLogApi`: a task's log).
//! - [`raft::v1`]: server-to-server Raft traffic (`RaftPeer`): raft-rs messages carried as
//!   bytes, and proposals forwarded from a follower to the leader. Internal to the cluster.
//!
//! [`defaults`] holds what an unset (zero) field of a message means where the receiver fills it
//! in, so that the servers and the agents read it alike.
//!
//! [`codec`] is the codec the generated clients and servers use: prost's, with smaller
//! per-call buffers.
//!
//! [`FILE_DESCRIPTOR_SET`] is the encoded descriptor set of all three, for gRPC server
//! reflection (so `grpcurl` can list and call everything).

pub mod codec;

/// The public API, package `sched.v1`.
pub mod sched {
    /// Version 1 of the public API.
    pub mod v1 {
        tonic::include_proto!("sched.v1");
    }
}

/// The agent protocol, package `agent.v1`.
pub mod agent {
    /// Version 1 of the agent protocol.
    pub mod v1 {
        tonic::include_proto!("agent.v1");
    }
}

/// Server-to-server Raft traffic, package `raft.v1`.
pub mod raft {
    /// Version 1 of the peer protocol.
    pub mod v1 {
        tonic::include_proto!("raft.v1");
    }
}

/// The encoded `FileDescriptorSet` of every proto file, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sched_descriptor");

/// What an unset (zero) field of a message means, where the receiver fills it in: written once
/// here so the servers (defaults of `service.toml`) and the agents (reading the wire) agree.
pub mod defaults {
    /// `HealthCheck.interval_ms` when unset: a probe every 10 s.
    pub const HEALTH_INTERVAL_MS: u64 = 10_000;
    /// `HealthCheck.timeout_ms` when unset: each probe may take 2 s.
    pub const HEALTH_TIMEOUT_MS: u64 = 2_000;
    /// `HealthCheck.retries` when unset: unhealthy after 3 failures in a row.
    pub const HEALTH_RETRIES: u32 = 3;
}
