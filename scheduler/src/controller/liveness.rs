//! Node liveness: a ready node whose heartbeats stopped for the node timeout is marked down (the
//! reconciler then replaces its tasks elsewhere); a down node that heartbeats again is ready.
//!
//! Heartbeats reach the leader even from agents connected to followers (they forward them). A
//! new leader waits one node timeout before it marks any node down, since it cannot know when
//! heartbeats last reached its predecessor.

use super::{Controller, Snapshot};
use crate::state::{Command, NodeStatus};

/// Marks nodes down and up from their heartbeat ages.
pub struct NodeLiveness {
    pub node_timeout_ms: u64,
}

impl Controller for NodeLiveness {
    fn commands(&mut self, snapshot: &Snapshot) -> Vec<Command> {
        let mut commands = Vec::new();
        for node in snapshot.state.nodes() {
            let fresh = snapshot.heartbeat_age_ms.get(&node.id).is_some_and(|age| *age < self.node_timeout_ms);
            let status = match node.status {
                NodeStatus::Ready if !fresh && snapshot.leading_for_ms >= self.node_timeout_ms => {
                    tracing::warn!(node = node.id, name = %node.name, "no heartbeat for {} ms: marking the node down", self.node_timeout_ms);
                    NodeStatus::Down
                }
                NodeStatus::Down if fresh => {
                    tracing::info!(node = node.id, name = %node.name, "heartbeats again: the node is ready");
                    NodeStatus::Ready
                }
                _ => continue,
            };
            commands.push(Command::SetNodeStatus { node_id: node.id, status, now_ms: snapshot.now_ms });
        }
        commands
    }
}
