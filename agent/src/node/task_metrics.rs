//! The task metrics every heartbeat carries: CPU (a fraction of the task's CPU limit) and memory
//! of each assigned task that has a cgroup, sampled with [`CpuSampler`](crate::metrics::CpuSampler).

use proto::agent::v1 as pb;

use super::state::NodeState;
use crate::task::TaskDriver;

impl NodeState {
    /// CPU and memory of every running task, for the heartbeat.
    pub(super) fn sample_metrics(&mut self, driver: &TaskDriver) -> Vec<pb::TaskMetrics> {
        let mut out = Vec::new();
        for (id, wanted) in &self.wanted {
            let dirs = driver.cgroup_dirs(id);
            if dirs.is_empty() {
                continue;
            }
            if let Some(u) = self.cpu.sample(id, &dirs, wanted.spec.cpu_millis) {
                out.push(pb::TaskMetrics { task_id: id.clone(), cpu_fraction: u.cpu_fraction, memory_bytes: u.memory_bytes });
            }
        }
        let wanted = &self.wanted;
        self.cpu.retain(|t| wanted.contains_key(t));
        out
    }
}
