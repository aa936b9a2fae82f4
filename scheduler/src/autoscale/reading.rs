//! What a service's tasks use now: the CPU of the tasks whose metrics can be trusted, and how
//! many tasks could not be counted. Pure: from the state, the samples and the clock.

use std::collections::BTreeMap;

use crate::controller::CpuSample;
use crate::state::{ClusterState, DesiredState, NodeStatus, TaskState};

/// The short window CPU is averaged over: about three samples at the agents' 1 s heartbeat.
/// A task with no sample this recent has stale metrics.
pub const SHORT_WINDOW_MS: u64 = 3_000;
/// A task is counted once the leader holds this many samples of it: its first sample after a
/// start is often a partial interval.
pub const MIN_SAMPLES: usize = 2;

/// One service's CPU as the autoscaler sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reading {
    /// Running tasks with at least [`MIN_SAMPLES`] samples, one of them within the window.
    pub counted: u32,
    /// Tasks that should run but cannot be counted: starting, or running with missing or
    /// stale metrics. While there are any, the service is not scaled in.
    pub uncounted: u32,
    /// Sum over the counted tasks of their mean CPU fraction within the window (1.0 = one
    /// task's whole limit).
    pub cpu_sum: f64,
    /// Whether tasks of an older revision still run (a rolling deploy is in progress).
    pub deploying: bool,
}

impl Reading {
    /// The counted tasks' average CPU as a fraction of their limit.
    pub fn average(&self) -> Option<f64> {
        (self.counted > 0).then(|| self.cpu_sum / f64::from(self.counted))
    }
}

/// The reading of service `name` at `now_ms` from `cpu` (task id -> samples, oldest first).
pub fn read_service(state: &ClusterState, name: &str, cpu: &BTreeMap<String, Vec<CpuSample>>, now_ms: u64) -> Reading {
    let mut reading = Reading::default();
    let Some(service) = state.service(name) else {
        return reading;
    };
    let since = now_ms.saturating_sub(SHORT_WINDOW_MS);
    for task in state.tasks_of(name) {
        let on_ready_node = task.node_id == 0 || state.node(task.node_id).is_some_and(|n| n.status == NodeStatus::Ready);
        let live = task.desired == DesiredState::Running
            && !matches!(task.observed, TaskState::Exited | TaskState::Failed | TaskState::Lost)
            && on_ready_node;
        if !live {
            continue;
        }
        if task.revision != service.current {
            reading.deploying = true;
        }
        let samples = cpu.get(&task.id).map_or(&[][..], Vec::as_slice);
        let recent: Vec<f64> = samples.iter().filter(|s| s.at_ms >= since).map(|s| s.cpu_fraction).collect();
        if task.observed != TaskState::Running || samples.len() < MIN_SAMPLES || recent.is_empty() {
            reading.uncounted += 1;
            continue;
        }
        reading.counted += 1;
        reading.cpu_sum += recent.iter().sum::<f64>() / recent.len() as f64;
    }
    reading
}
