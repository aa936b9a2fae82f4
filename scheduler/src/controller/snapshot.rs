//! What the controllers see: one consistent picture gathered by the leader loop.

use std::collections::{BTreeMap, BTreeSet};

use crate::state::ClusterState;

/// One CPU measurement of a task, as its agent reported it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuSample {
    /// When the leader received it (milliseconds on the same clock as [`Snapshot::now_ms`]).
    pub at_ms: u64,
    /// CPU used since the agent's previous sample, as a fraction of the task's CPU limit
    /// (1.0 = the whole limit).
    pub cpu_fraction: f64,
}

/// The cluster as the leader sees it at one instant.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The applied, replicated state.
    pub state: ClusterState,
    /// Now, in Unix milliseconds; every command made from this snapshot is stamped with it.
    pub now_ms: u64,
    /// The Raft term this leader leads in (part of new task ids, so two leaders never clash).
    pub term: u64,
    /// How long this server has led; a new leader does not know what its predecessor saw.
    pub leading_for_ms: u64,
    /// Per node id: milliseconds since its last heartbeat reached this server. A node missing
    /// here has not heartbeated since this server started.
    pub heartbeat_age_ms: BTreeMap<u64, u64>,
    /// Per task id: its recent CPU samples, oldest first (a bounded history).
    pub cpu: BTreeMap<String, Vec<CpuSample>>,
    /// Per node id whose agent runs an ingress: what its ingress last reported.
    pub ingress: BTreeMap<u64, IngressView>,
}

/// What one node's ingress last said it sends where.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngressView {
    /// When the leader received the report (same clock as [`Snapshot::now_ms`]).
    pub at_ms: u64,
    /// Every target address (`ip:port`) in its current route table.
    pub targets: BTreeSet<String>,
    /// Requests in flight per target address (only those above 0).
    pub in_flight: BTreeMap<String, u64>,
}
