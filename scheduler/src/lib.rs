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

pub mod spec;
pub mod state;
