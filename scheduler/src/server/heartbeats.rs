//! What agents' heartbeats told this server: when each node last heartbeated, and each task's
//! recent CPU samples. Not replicated: a follower forwards every heartbeat to the leader, so
//! the leader's copy covers every node; another server's covers its own agents.
//!
//! This is the edge where wall-clock instants become the plain milliseconds of a
//! [`Snapshot`](crate::controller::Snapshot).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proto::agent::v1 as pb;

use crate::controller::{CpuSample, IngressView};

/// Samples kept per task: about 30 s at the agents' 1 s heartbeat, several short windows.
const SAMPLES_PER_TASK: usize = 30;
/// A task no heartbeat mentioned for this long is forgotten.
const FORGET_TASK_AFTER: Duration = Duration::from_secs(60);

/// One task's samples, newest last.
struct TaskSamples {
    node_id: u64,
    samples: VecDeque<(Instant, pb::TaskMetrics)>,
    /// When the agent measured the newest sample (its clock, Unix ms; 0 if it did not say).
    measured_unix_ms: u64,
}

#[derive(Default)]
struct Inner {
    nodes: HashMap<u64, Instant>,
    tasks: HashMap<String, TaskSamples>,
    /// Each node's latest ingress report, when its node runs an ingress.
    ingress: HashMap<u64, (Instant, pb::IngressReport)>,
}

/// The latest heartbeats seen by this server.
#[derive(Default)]
pub struct Heartbeats {
    inner: Mutex<Inner>,
}

/// A task's newest sample, for API answers.
#[derive(Clone, Debug, PartialEq)]
pub struct LatestSample {
    pub cpu_fraction: f64,
    pub memory_bytes: u64,
    pub measured_unix_ms: u64,
}

impl Heartbeats {
    /// Notes a heartbeat of `node_id` carrying `metrics` measured at `measured_unix_ms` and,
    /// when the node runs an ingress, its report.
    pub fn record(&self, node_id: u64, metrics: &[pb::TaskMetrics], measured_unix_ms: u64, ingress: Option<&pb::IngressReport>) {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("heartbeats lock");
        inner.nodes.insert(node_id, now);
        match ingress {
            Some(report) => {
                inner.ingress.insert(node_id, (now, report.clone()));
            }
            None => {
                inner.ingress.remove(&node_id);
            }
        }
        for m in metrics {
            let task = inner.tasks.entry(m.task_id.clone()).or_insert_with(|| TaskSamples {
                node_id,
                samples: VecDeque::new(),
                measured_unix_ms: 0,
            });
            if task.node_id != node_id {
                // Another node reports it (a stale agent): start over with the new owner.
                task.samples.clear();
                task.node_id = node_id;
            }
            if task.samples.len() == SAMPLES_PER_TASK {
                task.samples.pop_front();
            }
            task.samples.push_back((now, m.clone()));
            task.measured_unix_ms = measured_unix_ms;
        }
        inner.tasks.retain(|_, t| t.samples.back().is_some_and(|(at, _)| now.duration_since(*at) < FORGET_TASK_AFTER));
    }

    /// The newest sample of `task_id` reported by `node_id`.
    pub fn latest(&self, node_id: u64, task_id: &str) -> Option<LatestSample> {
        let inner = self.inner.lock().expect("heartbeats lock");
        let task = inner.tasks.get(task_id).filter(|t| t.node_id == node_id)?;
        let (_, m) = task.samples.back()?;
        Some(LatestSample { cpu_fraction: m.cpu_fraction, memory_bytes: m.memory_bytes, measured_unix_ms: task.measured_unix_ms })
    }

    /// Per node, milliseconds since its last heartbeat.
    pub fn ages_ms(&self) -> BTreeMap<u64, u64> {
        let inner = self.inner.lock().expect("heartbeats lock");
        inner.nodes.iter().map(|(id, at)| (*id, at.elapsed().as_millis() as u64)).collect()
    }

    /// Every node's latest ingress report, timed on the clock of `now_ms` (Unix ms now).
    pub fn ingress_reports(&self, now_ms: u64) -> BTreeMap<u64, IngressView> {
        let inner = self.inner.lock().expect("heartbeats lock");
        inner
            .ingress
            .iter()
            .map(|(node, (at, report))| {
                let view = IngressView {
                    at_ms: now_ms.saturating_sub(at.elapsed().as_millis() as u64),
                    targets: report.targets.iter().cloned().collect(),
                    in_flight: report.in_flight.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                };
                (*node, view)
            })
            .collect()
    }

    /// Every task's samples, timed on the clock of `now_ms` (Unix ms now).
    pub fn cpu_samples(&self, now_ms: u64) -> BTreeMap<String, Vec<CpuSample>> {
        let inner = self.inner.lock().expect("heartbeats lock");
        inner
            .tasks
            .iter()
            .map(|(id, t)| {
                let samples = t
                    .samples
                    .iter()
                    .map(|(at, m)| CpuSample {
                        at_ms: now_ms.saturating_sub(at.elapsed().as_millis() as u64),
                        cpu_fraction: m.cpu_fraction,
                    })
                    .collect();
                (id.clone(), samples)
            })
            .collect()
    }
}
