//! A test harness for the Raft layer, in the spirit of raft-rs's own: real Raft loops
//! ([`super::RaftNode`], with raft-engine storage in a temporary directory) in one process,
//! connected by an in-memory network that can drop messages, cut links, isolate a server and
//! recover, and running a trivial state machine.
//!
//! Time is tokio's paused clock (`#[tokio::test(start_paused = true)]`): ticks, election
//! timeouts and the tests' deadlines are virtual, so a test that waits an election out runs in
//! milliseconds, and tests wait on events (a status change of any server), never on clocks.
//! The multi-process tests (`tests/tests/cluster_*.rs`) remain the outer ring: real servers,
//! gRPC, signals.
//!
//! - [`mem_network`]: the network and its per-server [`super::Transport`].
//! - [`list_machine`]: the state machine (an append-only list of strings).
//! - [`cluster`]: servers started on the network, and the waits and writes tests need.

mod cluster;
mod list_machine;
mod mem_network;
mod tests;
