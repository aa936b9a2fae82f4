//! What the node remembers across sessions: the tasks the servers want, what was reported of
//! each, the jobs in flight, failed starts, addresses and endpoints, health and CPU samples,
//! and when the reaper last ran.
//! The other files of the daemon add what they do to it (`impl NodeState` in `apply.rs`,
//! `task_jobs.rs`, `probes.rs`, `task_metrics.rs`, `reports.rs`, `reaping.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::Instant;

use super::plan::Wanted;
use super::probes::HealthState;
use super::reports::Reported;
use crate::metrics::CpuSampler;

/// What the node remembers across sessions.
#[derive(Default)]
pub(super) struct NodeState {
    pub(super) wanted: BTreeMap<String, Wanted>,
    /// Assigned tasks whose image could not be pinned to the digest the servers resolved, with
    /// why: their start fails at once, as a failed pull would.
    pub(super) unpinned: HashMap<String, String>,
    pub(super) reported: HashMap<String, Reported>,
    /// Tasks with a start or stop job in flight.
    pub(super) busy: HashSet<String>,
    /// Tasks whose start failed (reported FAILED; not retried by this node).
    pub(super) failed: HashMap<String, String>,
    /// `node_address:host_port` of each task's published ports.
    pub(super) endpoints: HashMap<String, Vec<String>>,
    /// Each task's address on the node bridge.
    pub(super) ips: HashMap<String, Ipv4Addr>,
    /// Health of tasks with a check: tracker, when it was first seen running, next probe time,
    /// and whether a probe is in flight.
    pub(super) health: HashMap<String, HealthState>,
    pub(super) cpu: CpuSampler,
    /// Exited tasks whose network and rootfs were released (by this process).
    pub(super) released: HashSet<String>,
    /// Whether assignments arrived since this process started. Until then `wanted` is empty,
    /// and acting on it would stop every task a restarted agent is about to adopt.
    pub(super) assigned: bool,
    /// When the reaper last ran (taking its census), `None` before its first round.
    pub(super) reaped_at: Option<Instant>,
    /// Whether a reap job is in flight (its tasks are busy meanwhile).
    pub(super) reaping: bool,
}

impl NodeState {
    /// The state of a (re)started agent: the endpoints and addresses of the tasks it finds.
    pub(super) fn new(endpoints: HashMap<String, Vec<String>>, ips: HashMap<String, Ipv4Addr>) -> Self {
        NodeState { endpoints, ips, ..Default::default() }
    }
}
