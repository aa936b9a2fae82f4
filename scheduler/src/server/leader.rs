//! What only the leader does, on a timer: decide which nodes are down (no heartbeat for the node
//! timeout, default 10 s) or back up, then run the [reconciler](crate::reconcile) on the
//! applied state and propose its commands through Raft.
//!
//! Heartbeats reach the leader even from agents connected to followers: followers forward them
//! (see `agent_api`). A new leader waits one node timeout before it marks any node down, since
//! it cannot know when heartbeats last reached its predecessor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::agent_api::Heartbeats;
use super::now_ms;
use crate::raft::{Consensus, Proposal, Role};
use crate::reconcile::reconcile;
use crate::state::{Command, NodeStatus};

/// How often the leader looks when nothing changes (node timeouts, crash-loop backoffs).
const PERIOD: Duration = Duration::from_millis(500);

/// How long the leader lets a burst of applied changes settle before it looks again.
const SETTLE: Duration = Duration::from_millis(5);

/// Runs the leader's duties forever (it idles while this server follows).
pub async fn run(consensus: Arc<Consensus>, heartbeats: Arc<Heartbeats>, node_timeout: Duration) {
    let mut leading_since: Option<Instant> = None;
    let mut ticker = tokio::time::interval(PERIOD);
    // Every applied entry (an apply, a scale, a task report) wakes the leader at once, as a job
    // registration triggers an evaluation in Nomad: a new service is placed within milliseconds,
    // not on the next tick.
    let mut applied = consensus.raft().watch_status();
    let mut task_seq = 0u64;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            changed = applied.changed() => match changed {
                Ok(()) => tokio::time::sleep(SETTLE).await,
                Err(_) => {
                    ticker.tick().await; // the Raft loop is gone: the timer only
                }
            },
        }
        let status = consensus.raft().status();
        if status.role != Some(Role::Leader) {
            leading_since = None;
            continue;
        }
        let since = *leading_since.get_or_insert_with(Instant::now);
        let state = consensus.raft().state().state.clone();
        let mut commands = Vec::new();
        {
            let last = heartbeats.last.lock().expect("heartbeats lock");
            for node in state.nodes() {
                let fresh = last.get(&node.id).is_some_and(|(at, _)| at.elapsed() < node_timeout);
                match node.status {
                    NodeStatus::Ready if !fresh && since.elapsed() >= node_timeout => {
                        tracing::warn!(node = node.id, name = %node.name, "no heartbeat for {node_timeout:?}: marking the node down");
                        commands.push(Command::SetNodeStatus { node_id: node.id, status: NodeStatus::Down, now_ms: now_ms() });
                    }
                    NodeStatus::Down if fresh => {
                        tracing::info!(node = node.id, name = %node.name, "heartbeats again: the node is ready");
                        commands.push(Command::SetNodeStatus { node_id: node.id, status: NodeStatus::Ready, now_ms: now_ms() });
                    }
                    _ => {}
                }
            }
        }
        let mut state_after = state;
        for c in &commands {
            let _ = state_after.apply(c.clone());
        }
        let term = status.term;
        let mut new_id = |service: &str| {
            task_seq += 1;
            format!("{service}-{term}-{}-{task_seq}", now_ms())
        };
        commands.extend(reconcile(&state_after, now_ms(), &mut new_id));
        for command in commands {
            match consensus.write(Proposal::Command(command)).await {
                Ok(Ok(_)) => {}
                Ok(Err(rejection)) => tracing::warn!("the reconciler's command was rejected: {}", rejection.message),
                Err(e) => {
                    tracing::warn!("the reconciler could not propose: {e}");
                    break;
                }
            }
        }
    }
}
