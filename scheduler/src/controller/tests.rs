//! The leader's controllers on snapshots built by hand.

use std::collections::BTreeMap;

use super::*;
use crate::state::NodeStatus;
use crate::test_fixtures::{cluster, spec};

fn snapshot(state: crate::state::ClusterState, leading_for_ms: u64, ages: &[(u64, u64)]) -> Snapshot {
    Snapshot {
        state,
        now_ms: 100_000,
        term: 3,
        leading_for_ms,
        heartbeat_age_ms: ages.iter().copied().collect(),
        cpu: BTreeMap::new(),
        ingress: BTreeMap::new(),
    }
}

fn statuses(commands: &[Command]) -> Vec<(u64, NodeStatus)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::SetNodeStatus { node_id, status, .. } => Some((*node_id, *status)),
            _ => None,
        })
        .collect()
}

#[test]
fn nodes_without_heartbeats_go_down_only_after_a_whole_timeout_of_leadership() {
    let mut liveness = NodeLiveness { node_timeout_ms: 10_000 };
    // Node 1 heartbeats, node 2 is silent, node 3 never heartbeated to this server.
    let ages = [(1, 900), (2, 12_000)];
    assert_eq!(statuses(&liveness.commands(&snapshot(cluster(3, 1000), 9_999, &ages))), []);
    assert_eq!(statuses(&liveness.commands(&snapshot(cluster(3, 1000), 10_000, &ages))), [(2, NodeStatus::Down), (3, NodeStatus::Down)]);
}

#[test]
fn a_down_node_that_heartbeats_again_is_ready() {
    let mut state = cluster(2, 1000);
    state.apply(Command::SetNodeStatus { node_id: 2, status: NodeStatus::Down, now_ms: 1 }).unwrap();
    let mut liveness = NodeLiveness { node_timeout_ms: 10_000 };
    let commands = liveness.commands(&snapshot(state, 0, &[(1, 100), (2, 100)]));
    assert_eq!(statuses(&commands), [(2, NodeStatus::Ready)]);
}

#[test]
fn each_controller_sees_what_the_earlier_ones_decided() {
    // Node 2 is silent: liveness marks it down, and the reconciler in the same round places
    // nothing there.
    let mut state = cluster(2, 4000);
    state
        .apply(Command::ApplyService {
            spec: spec("q:1", 4, 100),
            image_digest: String::new(),
            now_ms: 0,
            unresolved_reason: String::new(),
        })
        .unwrap();
    let mut controllers = leader_controllers(10_000);
    let commands = run_controllers(&mut controllers, snapshot(state, 60_000, &[(1, 10)]));
    assert_eq!(statuses(&commands), [(2, NodeStatus::Down)]);
    let placed: Vec<u64> = commands
        .iter()
        .flat_map(|c| match c {
            Command::PutTasks { tasks, .. } => tasks.iter().map(|t| t.node_id).collect(),
            _ => vec![],
        })
        .collect();
    assert_eq!(placed, [1, 1, 1, 1]);
}

#[test]
fn new_task_ids_carry_the_term_the_time_and_a_sequence() {
    let mut state = cluster(1, 4000);
    state
        .apply(Command::ApplyService {
            spec: spec("q:1", 2, 100),
            image_digest: String::new(),
            now_ms: 0,
            unresolved_reason: String::new(),
        })
        .unwrap();
    let commands = Reconcile::default().commands(&snapshot(state, 0, &[]));
    let Some(Command::PutTasks { tasks, .. }) = commands.first() else { panic!("{commands:?}") };
    let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["quotes-3-100000-1", "quotes-3-100000-2"]);
}

#[test]
fn the_leader_runs_liveness_autoscaling_reconciling_and_drain_ends() {
    let mut state = cluster(1, 4000);
    state
        .apply(Command::ApplyService {
            spec: spec("q:1", 0, 100),
            image_digest: String::new(),
            now_ms: 0,
            unresolved_reason: String::new(),
        })
        .unwrap();
    let task = crate::state::Task {
        desired: crate::state::DesiredState::Draining,
        drain_until_ms: 50_000,
        ..crate::test_fixtures::task("draining", 1, crate::state::TaskState::Running)
    };
    state.apply(Command::PutTasks { tasks: vec![task], now_ms: 0 }).unwrap();
    let mut controllers = leader_controllers(10_000);
    assert_eq!(controllers.len(), 4);
    // Its drain time is over: the last controller stops it.
    let commands = run_controllers(&mut controllers, snapshot(state, 0, &[(1, 10)]));
    assert!(
        commands.iter().any(|c| matches!(c, Command::SetTaskDesiredState { task_ids, desired: crate::state::DesiredState::Stopped, .. } if task_ids == &["draining".to_string()])),
        "{commands:?}"
    );
}
