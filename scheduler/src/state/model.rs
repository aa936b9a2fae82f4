//! The records the cluster state is made of: services with their revisions and events, tasks
//! and nodes. Plain data (serde for snapshots); the rules that change them live in
//! [`super::ClusterState::apply`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::spec::ServiceSpec;

/// How many events each service keeps; older ones are dropped first.
pub const EVENTS_PER_SERVICE: usize = 100;

/// One immutable version of a service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    pub revision: u64,
    pub spec: ServiceSpec,
    /// `sha256:...` resolved from the tag when the revision was made; empty when the registry
    /// could not be asked (tasks then pull by tag).
    pub image_digest: String,
    pub created_ms: u64,
    /// Set when a rollback made this revision: the revision whose spec it copies.
    pub rolled_back_from: Option<u64>,
}

/// Something that happened to a service, for `describe`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub unix_ms: u64,
    pub message: String,
}

/// A service: every revision ever made (oldest first), which one runs, how many tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub name: String,
    /// Shared between copies of the state (the leader's controllers copy it often) until one
    /// of them changes: `Arc::make_mut` copies then. Each revision is shared too: a write's
    /// answer ([`ServiceSummary`]) holds the current one without copying its spec. Stored as a
    /// plain list.
    pub revisions: Arc<Vec<Arc<Revision>>>,
    /// The revision tasks should run.
    pub current: u64,
    pub desired_count: u32,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// The most recent events, oldest first, at most [`EVENTS_PER_SERVICE`]. Shared between
    /// copies of the state like `revisions`; each event is shared too, so that recording one
    /// while the leader's controllers hold a copy copies pointers, not every message.
    pub events: Arc<VecDeque<Arc<Event>>>,
    /// What the autoscaler last did, replicated so that cooldowns survive a leader change.
    /// Defaulted so that log entries and snapshots written before it existed decode.
    #[serde(default, skip_serializing_if = "AutoscaleStatus::is_empty")]
    pub autoscale: AutoscaleStatus,
}

/// The replicated part of a service's autoscaler: when the count last changed and why.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AutoscaleStatus {
    /// When the autoscaler last added tasks (0: never).
    #[serde(default)]
    pub last_scale_out_ms: u64,
    /// When the autoscaler last removed tasks (0: never).
    #[serde(default)]
    pub last_scale_in_ms: u64,
    /// When the desired count was last set by anything but a scale-in (an apply, `sched
    /// scale`, a scale-out): a scale-in waits a whole `scale_in_cooldown` after it.
    #[serde(default)]
    pub count_set_ms: u64,
    /// The autoscaler's latest change, for `describe`.
    #[serde(default)]
    pub last_decision: Option<ScaleDecision>,
}

impl AutoscaleStatus {
    fn is_empty(&self) -> bool {
        *self == AutoscaleStatus::default()
    }
}

/// One change of the desired count made by the autoscaler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaleDecision {
    pub unix_ms: u64,
    pub from: u32,
    pub to: u32,
    /// Why, in words: the CPU it saw, the target, the tasks it counted.
    pub reason: String,
}

impl ServiceRecord {
    /// The revision tasks should run.
    pub fn current_revision(&self) -> &Revision {
        self.current_revision_shared()
    }

    fn current_revision_shared(&self) -> &Arc<Revision> {
        self.revisions.iter().find(|r| r.revision == self.current).expect("the current revision is always kept")
    }

    pub fn revision(&self, revision: u64) -> Option<&Revision> {
        self.revisions.iter().find(|r| r.revision == revision).map(|r| &**r)
    }

    /// Sets the desired count (an apply, a manual scale, a scale-out), remembering when: the
    /// autoscaler's scale-in waits a whole cooldown after it.
    pub(crate) fn set_desired_count(&mut self, count: u32, now_ms: u64) {
        if self.desired_count != count {
            self.desired_count = count;
            self.autoscale.count_set_ms = now_ms;
        }
    }

    pub(crate) fn record(&mut self, unix_ms: u64, message: String) {
        let events = Arc::make_mut(&mut self.events);
        if events.len() == EVENTS_PER_SERVICE {
            events.pop_front();
        }
        events.push_back(Arc::new(Event { unix_ms, message: super::limits::bounded_text(message) }));
    }

    /// Forgets the oldest revisions past [`MAX_REVISIONS`](super::MAX_REVISIONS), except the
    /// current one and those `in_use` by tasks (a rolling deploy still stops them by revision).
    pub(crate) fn prune_revisions(&mut self, in_use: &std::collections::BTreeSet<u64>) {
        let mut excess = self.revisions.len().saturating_sub(super::MAX_REVISIONS);
        let current = self.current;
        Arc::make_mut(&mut self.revisions).retain(|r| {
            let drop = excess > 0 && r.revision != current && !in_use.contains(&r.revision);
            if drop {
                excess -= 1;
            }
            !drop
        });
    }

    /// The fields a caller needs after a change, without the history.
    pub fn summary(&self) -> ServiceSummary {
        ServiceSummary {
            name: self.name.clone(),
            current: Arc::clone(self.current_revision_shared()),
            desired_count: self.desired_count,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        }
    }
}

/// A service as returned from a write: its current revision and count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub name: String,
    pub current: Arc<Revision>,
    pub desired_count: u32,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// What a task should be doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    Running,
    /// Going to stop: out of every ingress's target group already, it keeps running (and
    /// answering what it was sent) until `drain_until_ms`, then it is stopped.
    Draining,
    Stopped,
}

/// What a task was last seen doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Not placed on a node yet.
    Pending,
    /// Placed; the agent has not reported yet.
    Assigned,
    Preparing,
    Running,
    Exited,
    Failed,
    /// Its node went down.
    Lost,
}

/// The result of the task's health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Unknown,
    Starting,
    Healthy,
    Unhealthy,
}

/// One instance of a service revision, placed (or waiting to be placed) on a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub service: String,
    pub revision: u64,
    /// 0 while pending.
    pub node_id: u64,
    pub desired: DesiredState,
    pub observed: TaskState,
    /// `node_ip:host_port` per published port.
    pub endpoints: Vec<String>,
    pub exit_code: Option<i32>,
    pub health: HealthStatus,
    /// Why the task is in its state (pending reason, failure).
    pub message: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// While draining: when it is stopped. Defaulted (and not written when 0) so that entries
    /// from before draining existed decode and encode as they were.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drain_until_ms: u64,
}

fn is_zero(ms: &u64) -> bool {
    *ms == 0
}

/// Whether a node is taking work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Ready,
    Down,
}

/// A machine running `sched-agent`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: u64,
    /// Stable across agent restarts; registrations are matched by it.
    pub name: String,
    /// Where its published ports are reachable.
    pub address: String,
    /// HOST:PORT of its agent's API, which serves task logs (empty: none registered).
    #[serde(default)]
    pub api_address: String,
    pub cpu_millis: u32,
    pub memory_mib: u32,
    pub labels: BTreeMap<String, String>,
    pub status: NodeStatus,
    pub registered_ms: u64,
    /// When the status last changed.
    pub status_ms: u64,
}
