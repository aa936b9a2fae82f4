//! The Raft member: raft-rs's `RawNode` driven on tokio, with durable storage, snapshots, a gRPC
//! transport and follower-to-leader forwarding.
//!
//! - [`state_machine`]: what Raft replicates, as a trait; sched's `ClusterState` implements it.
//! - [`storage`]: `raft::Storage` on raft-engine (log, hard state, snapshot, compaction), with
//!   the newest entries cached in memory (`entry_cache`).
//! - [`node`]: the one loop that owns the `RawNode` and handles each `Ready` in the order
//!   raft-rs's contract prescribes; the state machine is applied there. Generic over the state
//!   machine and the transport; their defaults are what the servers run.
//! - [`transport`]: how the loop reaches its peers, as a trait, with its delivery feedback.
//! - [`grpc_transport`]: the servers' transport: one sender task per peer, batching raft
//!   messages into `raft.v1.RaftPeer/Send`.
//! - [`consensus`]: what the API calls: writes that reach the leader from any server and
//!   linearizable (ReadIndex) or stale reads.
//! - [`forwarder`]: a follower's writes on their way to the leader, batched while calls are in
//!   flight.
//! - [`logger`]: raft-rs's slog records into `tracing`.
//! - `harness` (tests only): an in-memory network (drop, cut, isolate, recover) and a trivial
//!   state machine, for deterministic tests of the loop under partitions, leader changes, log
//!   divergence, snapshots and membership changes.

pub mod consensus;
mod entry_cache;
pub mod forwarder;
pub mod grpc_transport;
#[cfg(test)]
mod harness;
pub mod logger;
pub mod node;
pub mod state_machine;
pub mod storage;
pub mod transport;

use serde::{Deserialize, Serialize};

use crate::state::{Command, Outcome, Rejection};

pub use consensus::{Consensus, ConsensusError};
pub use node::{NodeStatus, RaftHandle, RaftNode, RaftOptions, Role};
pub use state_machine::StateMachine;
pub use transport::Transport;

/// A change to propose: a state-machine command (sched's [`Command`] unless the state machine
/// is another) or a membership change. Also the body of a proposal forwarded from a follower to
/// the leader (JSON).
// Values that are serialized and sent once: boxing the spec would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Proposal<C = Command> {
    Command(C),
    AddVoter { id: u64, address: String },
    RemoveVoter { id: u64 },
}

/// The result of applying a proposal: the state machine's answer.
pub type Applied = Result<Outcome, Rejection>;

/// Why a proposal did not produce an answer. Sent back over the wire to a forwarding follower.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum ProposeFailure {
    /// Refused before reaching the log: safe to retry elsewhere.
    #[error("server {me} is not the leader")]
    NotLeader { me: u64 },
    /// raft-rs dropped it (e.g. a membership change is already in progress): safe to retry.
    #[error("the proposal was dropped: {reason}")]
    Dropped { reason: String },
    /// The leader lost its leadership after the proposal entered its log: it may or may not be
    /// applied.
    #[error("leadership changed while the proposal was in flight: its outcome is unknown")]
    OutcomeUnknown,
    /// The Raft loop has stopped.
    #[error("the raft loop of this server has stopped")]
    Stopped,
}
