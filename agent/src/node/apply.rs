//! Applying the [`plan`](super::plan::plan): what runs here now as the plan sees it, and what
//! each action does — starts and stops become background jobs ([`task_jobs`](super::task_jobs)),
//! releases and removals happen at once.

use std::collections::BTreeMap;

use tokio::sync::mpsc;

use super::AgentConfig;
use super::plan::{Action, Seen, plan};
use super::reports::event_text;
use super::state::NodeState;
use super::task_jobs::{JobDone, TaskHost};
use crate::error::Result;
use crate::task::{TaskDriver, TaskStatus};

impl NodeState {
    /// Starts jobs for the plan's actions and carries out its releases and removals.
    pub(super) async fn apply_plan(&mut self, config: &AgentConfig, host: &TaskHost, done: &mpsc::UnboundedSender<JobDone>) -> Result<()> {
        // Failed starts the servers no longer want are forgotten.
        self.failed.retain(|id, _| self.wanted.contains_key(id));
        let seen = self.seen(&host.driver)?;
        for action in plan(&self.wanted, &seen) {
            match action {
                Action::Start(spec) => {
                    if let Some(reason) = self.unpinned.get(&spec.id) {
                        // Fails as its pull would have: at once, reported FAILED, not retried.
                        tracing::warn!(task = spec.id, "start failed: {reason}");
                        self.failed.insert(spec.id.clone(), event_text(reason));
                        continue;
                    }
                    self.busy.insert(spec.id.clone());
                    host.spawn_start(spec, config.address.clone(), done);
                }
                Action::Stop(id) if !self.busy.contains(&id) => {
                    self.busy.insert(id.clone());
                    host.spawn_stop(id, config.stop_grace, done);
                }
                Action::Stop(_) => {}
                Action::Release(id) if !self.busy.contains(&id) && !self.released.contains(&id) => {
                    host.release(&id).await;
                    self.endpoints.remove(&id);
                    self.ips.remove(&id);
                    self.released.insert(id);
                }
                Action::Release(_) => {}
                Action::Remove(id) if !self.busy.contains(&id) => {
                    if self.failed.remove(&id).is_none() {
                        host.remove(&id).await;
                    }
                    self.reported.remove(&id);
                    self.released.remove(&id);
                    self.endpoints.remove(&id);
                    self.ips.remove(&id);
                    self.health.remove(&id);
                }
                Action::Remove(_) => {}
            }
        }
        self.publish_missing_ports(config, host, &seen).await;
        Ok(())
    }

    /// Publishes the ports of running tasks that have fewer endpoints than ports: a task whose
    /// start was cut between its container and its ports (an agent killed there) is adopted
    /// running by the next agent, and would stay unreachable. The new endpoints are reported.
    async fn publish_missing_ports(&mut self, config: &AgentConfig, host: &TaskHost, seen: &BTreeMap<String, Seen>) {
        for (id, wanted) in &self.wanted {
            let published = self.endpoints.get(id).map_or(0, Vec::len);
            let running = wanted.running && seen.get(id) == Some(&Seen::Running) && !self.busy.contains(id);
            let Some(ip) = self.ips.get(id).copied() else { continue };
            if !running || published >= wanted.spec.ports.len() {
                continue;
            }
            match host.publish(ip, &wanted.spec.ports, &config.address).await {
                Ok(endpoints) => {
                    tracing::warn!(task = id, ?endpoints, "published the ports of a running task that had none (its start was cut short)");
                    self.endpoints.insert(id.clone(), endpoints);
                    self.reported.remove(id);
                }
                Err(e) => tracing::warn!(task = id, "publishing its ports failed: {e}"),
            }
        }
    }

    /// What runs here now, as the plan sees it (tasks with jobs in flight count as running,
    /// failed starts as exited).
    fn seen(&self, driver: &TaskDriver) -> Result<BTreeMap<String, Seen>> {
        let mut out = BTreeMap::new();
        for id in driver.list()? {
            let s = match driver.status(&id)? {
                _ if self.busy.contains(&id) => Seen::Running,
                TaskStatus::Running { .. } => Seen::Running,
                TaskStatus::Exited(exit) => Seen::Exited(exit.code),
                TaskStatus::Missing => continue,
            };
            out.insert(id, s);
        }
        for id in self.busy.iter().chain(self.failed.keys()) {
            out.entry(id.clone()).or_insert(Seen::Exited(-1));
        }
        Ok(out)
    }
}
