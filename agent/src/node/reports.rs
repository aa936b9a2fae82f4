//! `ReportTaskStatus`: each task whose state changed since it was last reported is reported
//! once — running (with its endpoints and health), exited (with its code), or failed (with the
//! reason, bounded: it becomes a service event). A new session reports everything again.

use proto::agent::v1::agent_api_client::AgentApiClient;
use tonic::transport::Channel;

use super::state::NodeState;
use crate::error::{AgentError, Result};
use crate::health::Health;
use crate::task::{TaskDriver, TaskStatus};

/// The state last reported for a task (so each change is reported once). Its wire form is in
/// [`wire`](super::wire).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Reported {
    Running(Option<Health>),
    Exited(i32),
    Failed(String),
}

/// Longest reason a task report carries (it becomes a service event).
const MAX_EVENT_CHARS: usize = 512;

/// A start failure as a service event: one line, control characters blanked, at most
/// [`MAX_EVENT_CHARS`]. Reasons quote what registries, images and the runtime said (a manifest
/// parse error quotes the manifest): a registry must not write events of its own lines or size.
pub(super) fn event_text(reason: &str) -> String {
    let mut text: String = reason.chars().take(MAX_EVENT_CHARS).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if reason.chars().nth(MAX_EVENT_CHARS).is_some() {
        text.push_str(" [...]");
    }
    text
}

impl NodeState {
    /// Reports each task whose state changed since it was last reported.
    pub(super) async fn report_changes(&mut self, client: &mut AgentApiClient<Channel>, node_id: u64, driver: &TaskDriver) -> Result<()> {
        for (id, state) in self.current(driver)? {
            if self.reported.get(&id) == Some(&state) {
                continue;
            }
            let endpoints = self.endpoints.get(&id).cloned().unwrap_or_default();
            client
                .report_task_status(state.request(node_id, id.clone(), endpoints))
                .await
                .map_err(|s| AgentError::rpc(format!("report {id}"), &s))?;
            self.reported.insert(id, state);
        }
        Ok(())
    }

    /// The state of every task to report: failed starts, and the wanted tasks with no job in
    /// flight that run (with a pid) or exited.
    fn current(&self, driver: &TaskDriver) -> Result<Vec<(String, Reported)>> {
        let mut current: Vec<(String, Reported)> = Vec::new();
        for (id, reason) in &self.failed {
            current.push((id.clone(), Reported::Failed(reason.clone())));
        }
        for id in driver.list()? {
            if self.busy.contains(&id) || !self.wanted.contains_key(&id) {
                continue;
            }
            match driver.status(&id)? {
                TaskStatus::Running { pid } if pid > 0 => {
                    let health = self.health_of(&id);
                    current.push((id, Reported::Running(health)));
                }
                TaskStatus::Exited(exit) => current.push((id, Reported::Exited(exit.code))),
                _ => {}
            }
        }
        Ok(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_failures_become_one_bounded_line() {
        assert_eq!(event_text("pull failed: HTTP 404"), "pull failed: HTTP 404");
        assert_eq!(event_text("bad manifest: \"a\nEVENT: fake\r\u{1b}[2J\""), "bad manifest: \"a EVENT: fake  [2J\"");
        let long = event_text(&"x".repeat(10_000));
        assert_eq!(long.len(), MAX_EVENT_CHARS + " [...]".len());
        assert_eq!(event_text(&"é".repeat(MAX_EVENT_CHARS)), "é".repeat(MAX_EVENT_CHARS), "counted in characters, cut on one");
    }
}
