//! Health probes of the tasks that have a check: which are due (a running task, no job in
//! flight, its interval passed, no probe of it running), each run as a background job, and the
//! results fed to the task's [`HealthTracker`], whose status the reports carry.

use std::time::Instant;

use tokio::sync::mpsc;

use super::AgentConfig;
use super::state::NodeState;
use super::task_jobs::JobDone;
use crate::health::{Health, HealthTracker, ProbeTarget, probe};
use crate::task::{TaskDriver, TaskStatus};

/// One task's health bookkeeping.
pub(super) struct HealthState {
    tracker: HealthTracker,
    /// When the task was first seen running.
    since: Instant,
    next: Instant,
    in_flight: bool,
}

impl NodeState {
    /// Starts the probes that are due, as background jobs.
    pub(super) fn start_due_probes(&mut self, config: &AgentConfig, driver: &TaskDriver, done: &mpsc::UnboundedSender<JobDone>) {
        let now = Instant::now();
        for (id, wanted) in &self.wanted {
            let Some(spec) = &wanted.spec.health else { continue };
            if self.busy.contains(id) || !matches!(driver.status(id), Ok(TaskStatus::Running { pid }) if pid > 0) {
                continue;
            }
            let h = self.health.entry(id.clone()).or_insert_with(|| HealthState {
                tracker: HealthTracker::default(),
                since: now,
                next: now,
                in_flight: false,
            });
            if h.in_flight || now < h.next {
                continue;
            }
            h.in_flight = true;
            h.next = now + spec.interval;
            let target = ProbeTarget {
                task_id: id.clone(),
                ip: self.ips.get(id).copied(),
                runtime_binary: config.runtime_binary.clone(),
                state_root: config.data_dir.join("runtime"),
            };
            let (probe_spec, timeout, done, task) = (spec.probe.clone(), spec.timeout, done.clone(), id.clone());
            tokio::spawn(async move {
                let ok = probe(&probe_spec, &target, timeout).await;
                let _ = done.send(JobDone::Probed { task, ok });
            });
        }
    }

    /// Adds one probe result to the task's health.
    pub(super) fn record_probe(&mut self, task: &str, ok: bool) {
        let spec = self.wanted.get(task).and_then(|w| w.spec.health.as_ref());
        if let (Some(spec), Some(h)) = (spec, self.health.get_mut(task)) {
            h.tracker.record(spec, ok, h.since.elapsed());
            h.in_flight = false;
        }
    }

    /// The health of a task with a check, once it was seen running.
    pub(super) fn health_of(&self, task: &str) -> Option<Health> {
        self.health.get(task).map(|h| h.tracker.status())
    }
}
