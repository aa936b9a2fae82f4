//! The sched control plane.
//!
//! It will own the Raft-replicated cluster state (services and their revisions, nodes, tasks),
//! the gRPC API, the reconciler, placement, the CPU autoscaler, rolling deployments and the
//! `sched` CLI. It never touches namespaces or cgroups: that is the agent's and the runtime's.
