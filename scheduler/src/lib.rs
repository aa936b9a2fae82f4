//! The sched control plane.
//!
//! It owns the Raft-replicated cluster state (services and their revisions, nodes, tasks),
//! the gRPC API, the reconciler, placement, the CPU autoscaler, rolling deployments and the
//! `sched` CLI. It never touches namespaces or cgroups: that is the agent's and the runtime's.
//!
//! - [`spec`]: `service.toml` and the [`spec::ServiceSpec`] it becomes, with one validator for
//!   files and gRPC requests alike.
//! - [`state`]: the deterministic state machine the Raft log drives: services with every
//!   revision, tasks, nodes, a bounded event log per service, and the voters' addresses.
//! - [`raft`]: the Raft member (raft-rs `RawNode` on tokio, raft-engine log, snapshots, gRPC
//!   transport, follower-to-leader forwarding, ReadIndex reads).
//! - [`placement`]: which node each new task goes to (feasibility, then spread), pure logic.
//! - [`reconcile`]: the commands that bring each service to its count on its current revision.
//! - [`autoscale`]: each autoscaled service's count follows its CPU target (pure).
//! - [`routes`]: the ingress's route table (rules and target groups) and route conflicts.
//! - [`controller`]: the leader's duties (node liveness, autoscaling, reconciling) as pure
//!   functions from a snapshot of the cluster to commands.
//! - [`cli`]: the `sched` command line (server and client commands, tables, exit codes).
//! - [`server`]: `sched server`: Raft plus the gRPC API, health and reflection on one port.
//!
//! Data flow of a write: `sched apply` -> `ServiceApi.Apply` on any server -> [`raft::Consensus`]
//! (forwarded to the leader when needed) -> the Raft log -> every server's
//! [`state::ClusterState::apply`] -> the answer returns to the proposer and the client.

pub mod autoscale;
pub mod cli;
pub mod controller;
pub mod credentials_file;
mod error_chain;
pub mod placement;
pub mod raft;
pub mod reconcile;
pub mod routes;
pub mod server;
pub mod spec;
pub mod state;
#[cfg(test)]
mod test_fixtures;
