//! The reconciler on states built by feeding real commands to the state machine, applying its
//! own output back (as the leader does) until nothing changes.

use std::collections::BTreeMap;

use super::{TASK_HISTORY, reconcile};
use crate::spec::ServiceSpec;
use crate::state::{ClusterState, Command, DesiredState, NodeStatus, Task, TaskState};
use crate::test_fixtures::{cluster, report, spec};

fn run(state: &mut ClusterState, now_ms: u64) -> usize {
    // Never reused, even after tasks are forgotten (as the leader's term-time-sequence ids).
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
    let mut id = |service: &str| format!("{service}-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let mut commands = reconcile(state, now_ms, &mut id);
    // Draining tasks are stopped by the leader's next controller, when their drain time is over.
    let mut after = state.clone();
    for c in &commands {
        after.apply(c.clone()).unwrap();
    }
    let snapshot = crate::controller::Snapshot { state: after, now_ms, ..Default::default() };
    commands.extend(crate::controller::Controller::commands(&mut crate::controller::DrainEnd, &snapshot));
    let count = commands.len();
    for c in commands {
        state.apply(c).unwrap();
    }
    count
}

fn live(state: &ClusterState) -> Vec<&Task> {
    state
        .tasks()
        .filter(|t| t.desired == DesiredState::Running && !matches!(t.observed, TaskState::Exited | TaskState::Failed | TaskState::Lost))
        .collect()
}

fn per_node(state: &ClusterState) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for t in live(state) {
        *m.entry(t.node_id).or_insert(0) += 1;
    }
    m
}

fn apply_service(state: &mut ClusterState, image: &str, count: u32, cpu: u32) {
    state
        .apply(Command::ApplyService {
            spec: spec(image, count, cpu),
            image_digest: String::new(),
            now_ms: 0,
            unresolved_reason: String::new(),
        })
        .unwrap();
}

#[test]
fn a_new_service_gets_its_count_spread_and_then_nothing_changes() {
    let mut state = cluster(3, 4000);
    apply_service(&mut state, "q:1", 6, 250);
    assert_eq!(run(&mut state, 1), 1);
    assert_eq!(per_node(&state), BTreeMap::from([(1, 2), (2, 2), (3, 2)]));
    assert_eq!(run(&mut state, 2), 0, "reconciling a reconciled state changes nothing");
}

#[test]
fn scaling_down_stops_the_newest_and_up_adds() {
    let mut state = cluster(2, 4000);
    apply_service(&mut state, "q:1", 4, 100);
    run(&mut state, 1);
    state.apply(Command::ScaleService { name: "quotes".into(), count: 1, now_ms: 2 }).unwrap();
    run(&mut state, 3);
    assert_eq!(live(&state).len(), 1);
    state.apply(Command::ScaleService { name: "quotes".into(), count: 3, now_ms: 4 }).unwrap();
    run(&mut state, 5);
    assert_eq!(live(&state).len(), 3);
}

#[test]
fn a_new_revision_replaces_the_old_tasks() {
    let mut state = cluster(2, 4000);
    apply_service(&mut state, "q:1", 2, 100);
    run(&mut state, 1);
    apply_service(&mut state, "q:2", 2, 100);
    run(&mut state, 2);
    let revisions: Vec<u64> = live(&state).iter().map(|t| t.revision).collect();
    assert_eq!(revisions, vec![2, 2]);
}

#[test]
fn tasks_of_a_down_node_are_placed_elsewhere() {
    let mut state = cluster(3, 4000);
    apply_service(&mut state, "q:1", 6, 100);
    run(&mut state, 1);
    state.apply(Command::SetNodeStatus { node_id: 2, status: NodeStatus::Down, now_ms: 2 }).unwrap();
    run(&mut state, 3);
    assert_eq!(per_node(&state), BTreeMap::from([(1, 3), (3, 3)]));
    let on_down: Vec<&Task> = state.tasks().filter(|t| t.node_id == 2).collect();
    assert_eq!(on_down.len(), 2);
    assert!(on_down.iter().all(|t| t.observed == TaskState::Lost && t.desired == DesiredState::Stopped), "{on_down:?}");
}

#[test]
fn tasks_that_fit_nowhere_stay_pending_with_the_reason_and_are_placed_later() {
    let mut state = cluster(1, 1000);
    apply_service(&mut state, "q:1", 3, 400);
    run(&mut state, 1);
    let pending: Vec<&Task> = state.tasks().filter(|t| t.observed == TaskState::Pending).collect();
    assert_eq!(pending.len(), 1);
    assert!(pending[0].message.contains("lack 400m CPU"), "{}", pending[0].message);
    assert_eq!(run(&mut state, 2), 0, "the same reason is not written again");
    // A second node joins: the pending task is placed.
    state
        .apply(Command::RegisterNode {
            name: "big".into(),
            address: "10.0.0.9".into(),
            cpu_millis: 4000,
            memory_mib: 4096,
            labels: BTreeMap::new(),
            now_ms: 3,
            api_address: String::new(),
        })
        .unwrap();
    run(&mut state, 4);
    assert!(state.tasks().all(|t| t.observed != TaskState::Pending));
    assert_eq!(live(&state).len(), 3);
}

#[test]
fn a_crash_loop_is_replaced_with_backoff() {
    let mut state = cluster(1, 4000);
    apply_service(&mut state, "q:1", 1, 100);
    run(&mut state, 0);
    let die = |state: &mut ClusterState, now_ms: u64| {
        let t = live(state)[0].clone();
        report(state, &t, TaskState::Exited, Some(1), "", now_ms);
    };
    die(&mut state, 10_000);
    assert_eq!(run(&mut state, 10_500), 0, "1 death: wait 1 s");
    run(&mut state, 11_000);
    assert_eq!(live(&state).len(), 1);
    die(&mut state, 12_000);
    assert_eq!(run(&mut state, 13_500), 0, "2 deaths: wait 2 s");
    run(&mut state, 14_000);
    assert_eq!(live(&state).len(), 1);
    let events: Vec<&str> = state.service("quotes").unwrap().events.iter().skip(1).map(|e| e.message.as_str()).collect();
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(events[0].ends_with("exited with code 1"), "{events:?}");
    assert_eq!(events[1], "1 new task(s) after a backoff of 1s: 1 exit(s) in 5 min");
    assert!(events[2].ends_with("exited with code 1"), "{events:?}");
    assert_eq!(events[3], "1 new task(s) after a backoff of 2s: 2 exit(s) in 5 min");
}

#[test]
fn a_deleted_services_tasks_are_forgotten_once_they_stopped() {
    let mut state = cluster(2, 4000);
    apply_service(&mut state, "q:1", 2, 100);
    run(&mut state, 1);
    let ids: Vec<String> = state.tasks().map(|t| t.id.clone()).collect();
    state.apply(Command::DeleteService { name: "quotes".into(), now_ms: 2 }).unwrap();
    assert_eq!(run(&mut state, 3), 0, "tasks that may still run are kept until their nodes report them stopped");
    let stopped = state.tasks().next().unwrap().clone();
    report(&mut state, &stopped, TaskState::Exited, Some(143), "", 4);
    assert_eq!(run(&mut state, 5), 1);
    let left: Vec<String> = state.tasks().map(|t| t.id.clone()).collect();
    assert_eq!(left, vec![ids[1].clone()], "the stopped task is forgotten (its node then removes it), the other one not yet");
}

/// Re-registers node `id` (named `node{id}` by [`cluster`]) with the label `zone`.
fn set_zone(state: &mut ClusterState, id: u64, zone: &str) {
    state
        .apply(Command::RegisterNode {
            name: format!("node{id}"),
            address: format!("10.0.0.{id}"),
            cpu_millis: 4000,
            memory_mib: 4096,
            labels: BTreeMap::from([("zone".to_string(), zone.to_string())]),
            now_ms: 0,
            api_address: format!("10.0.0.{id}:7071"),
        })
        .unwrap();
}

fn apply_constrained(state: &mut ClusterState, image: &str, count: u32, zone: &str) {
    let spec = ServiceSpec { constraints: BTreeMap::from([("zone".to_string(), zone.to_string())]), ..spec(image, count, 100) };
    state.apply(Command::ApplyService { spec, image_digest: String::new(), now_ms: 0, unresolved_reason: String::new() }).unwrap();
}

#[test]
fn the_specs_constraints_decide_which_nodes_take_its_tasks() {
    let mut state = cluster(3, 4000);
    set_zone(&mut state, 1, "a");
    set_zone(&mut state, 2, "b");
    set_zone(&mut state, 3, "a");
    apply_constrained(&mut state, "q:1", 2, "b");
    run(&mut state, 1);
    assert_eq!(per_node(&state), BTreeMap::from([(2, 2)]), "both on the only zone=b node, spreading or not");

    // A new revision with other constraints replaces the tasks on the nodes that match.
    apply_constrained(&mut state, "q:1", 2, "a");
    run(&mut state, 2);
    assert_eq!(per_node(&state), BTreeMap::from([(1, 1), (3, 1)]));

    // No node matches: the new revision's tasks wait with the missing label as the reason.
    apply_constrained(&mut state, "q:1", 2, "c");
    run(&mut state, 3);
    let pending: Vec<&Task> = live(&state).into_iter().filter(|t| t.observed == TaskState::Pending).collect();
    assert_eq!(pending.len(), 2);
    assert!(pending.iter().all(|t| t.node_id == 0 && t.message.contains("zone=c")), "{pending:?}");
}

#[test]
fn a_node_whose_labels_change_keeps_its_running_tasks() {
    let mut state = cluster(2, 4000);
    set_zone(&mut state, 1, "a");
    set_zone(&mut state, 2, "b");
    apply_constrained(&mut state, "q:1", 2, "b");
    run(&mut state, 1);
    set_zone(&mut state, 2, "c");
    assert_eq!(run(&mut state, 2), 0, "constraints are checked when placing, not afterwards");
    assert_eq!(per_node(&state), BTreeMap::from([(2, 2)]));
}

#[test]
fn a_service_keeps_only_its_newest_finished_tasks() {
    let mut state = cluster(1, 4000);
    apply_service(&mut state, "q:1", 1, 100);
    run(&mut state, 0);
    let mut now = 0;
    let mut dead = Vec::new();
    for _ in 0..TASK_HISTORY + 3 {
        let t = live(&state)[0].clone();
        now += 1_000;
        report(&mut state, &t, TaskState::Exited, Some(1), "", now);
        dead.push(t.id);
        now += 61_000; // past the longest backoff: the replacement starts
        while run(&mut state, now) > 0 {}
    }
    let kept: Vec<String> = state.tasks().filter(|t| t.observed == TaskState::Exited).map(|t| t.id.clone()).collect();
    assert_eq!(kept.len(), TASK_HISTORY, "{kept:?}");
    for old in &dead[..3] {
        assert!(!kept.contains(old), "the oldest finished tasks are forgotten: {old}");
    }
    assert_eq!(live(&state).len(), 1, "the running task is never forgotten");
}

/// Reports every live task of `revision` as running (its node says so).
fn report_running(state: &mut ClusterState, revision: u64, now_ms: u64) {
    let started: Vec<Task> = live(state).into_iter().filter(|t| t.revision == revision && t.node_id != 0).cloned().collect();
    for t in started {
        report(state, &t, TaskState::Running, None, "", now_ms);
    }
}

/// Two nodes, revision 1's 2 tasks running, revision 2 just applied and one reconcile pass run.
fn revision_2_applied_over_a_running_revision_1() -> ClusterState {
    let mut state = cluster(2, 4000);
    apply_service(&mut state, "q:1", 2, 100);
    run(&mut state, 1);
    report_running(&mut state, 1, 2);
    apply_service(&mut state, "q:2", 2, 100);
    run(&mut state, 3);
    state
}

#[test]
fn a_new_revision_rolls_out_beside_the_running_one_and_the_old_stops_once_the_new_runs() {
    let mut state = revision_2_applied_over_a_running_revision_1();
    let mut revisions: Vec<u64> = live(&state).iter().map(|t| t.revision).collect();
    revisions.sort();
    assert_eq!(revisions, vec![1, 1, 2, 2], "max_percent 200: the new tasks start beside the old ones");
    assert_eq!(run(&mut state, 4), 0, "min_healthy_percent 100: no old task stops before a new one runs");
    report_running(&mut state, 2, 5);
    run(&mut state, 6);
    let revisions: Vec<u64> = live(&state).iter().map(|t| t.revision).collect();
    assert_eq!(revisions, vec![2, 2]);
}

#[test]
fn a_new_revision_that_never_runs_leaves_the_old_tasks_running() {
    let mut state = revision_2_applied_over_a_running_revision_1();
    let new: Vec<Task> = live(&state).into_iter().filter(|t| t.revision == 2).cloned().collect();
    for t in new {
        report(&mut state, &t, TaskState::Failed, None, "image not found", 4);
    }
    run(&mut state, 100_000);
    let old = live(&state).iter().filter(|t| t.revision == 1).count();
    assert_eq!(old, 2, "the running revision keeps serving while the new one fails");
}

/// Two nodes and a service with a route whose `count` tasks all run.
fn routed_and_running(count: u32, drain_ms: u64) -> ClusterState {
    let mut state = cluster(2, 4000);
    let routes = vec![crate::spec::Route { path_prefix: "/".into(), host: String::new(), port: 8080, timeout_ms: 60_000 }];
    let spec = ServiceSpec { routes, drain_ms, ..spec("q:1", count, 100) };
    state.apply(Command::ApplyService { spec, image_digest: String::new(), now_ms: 0, unresolved_reason: String::new() }).unwrap();
    run(&mut state, 1);
    report_running(&mut state, 1, 2);
    state
}

fn desired_states(state: &ClusterState) -> Vec<DesiredState> {
    state.tasks().map(|t| t.desired).collect()
}

#[test]
fn a_scale_in_drains_routed_tasks_for_the_drain_time_before_stopping_them() {
    let mut state = routed_and_running(3, 5_000);
    state.apply(Command::ScaleService { name: "quotes".into(), count: 1, now_ms: 10_000 }).unwrap();
    run(&mut state, 10_000);
    let draining: Vec<&Task> = state.tasks().filter(|t| t.desired == DesiredState::Draining).collect();
    assert_eq!(draining.len(), 2);
    assert!(draining.iter().all(|t| t.drain_until_ms == 15_000));
    assert!(crate::routes::route_table(&state)[0].targets.iter().all(|t| t.task_id != draining[0].id), "out of the target group at once");
    assert_eq!(run(&mut state, 14_999), 0, "nothing stops before the drain time is over");
    run(&mut state, 15_000);
    let mut states = desired_states(&state);
    states.sort_by_key(|d| format!("{d:?}"));
    assert_eq!(states, [DesiredState::Running, DesiredState::Stopped, DesiredState::Stopped]);
}

#[test]
fn tasks_without_routes_or_drain_time_stop_at_once() {
    let mut state = routed_and_running(2, 0);
    state.apply(Command::ScaleService { name: "quotes".into(), count: 1, now_ms: 10 }).unwrap();
    run(&mut state, 10);
    assert_eq!(state.tasks().filter(|t| t.desired == DesiredState::Stopped).count(), 1);
    let mut state = cluster(1, 4000);
    apply_service(&mut state, "q:1", 2, 100);
    run(&mut state, 1);
    report_running(&mut state, 1, 2);
    state.apply(Command::ScaleService { name: "quotes".into(), count: 0, now_ms: 3 }).unwrap();
    run(&mut state, 3);
    assert_eq!(desired_states(&state), [DesiredState::Stopped, DesiredState::Stopped]);
}

#[test]
fn a_deleted_routed_service_drains_its_running_tasks_then_stops_and_forgets_them() {
    let mut state = routed_and_running(2, 3_000);
    state.apply(Command::DeleteService { name: "quotes".into(), now_ms: 100 }).unwrap();
    assert_eq!(desired_states(&state), [DesiredState::Draining, DesiredState::Draining]);
    assert!(crate::routes::route_table(&state).is_empty());
    run(&mut state, 3_099);
    assert_eq!(desired_states(&state), [DesiredState::Draining, DesiredState::Draining]);
    run(&mut state, 3_100);
    assert_eq!(desired_states(&state), [DesiredState::Stopped, DesiredState::Stopped]);
    for t in state.tasks().cloned().collect::<Vec<_>>() {
        report(&mut state, &t, TaskState::Exited, Some(0), "", 3_200);
    }
    run(&mut state, 3_300);
    assert_eq!(state.tasks().count(), 0);
}

#[test]
fn a_rolling_deploy_drains_the_old_tasks_as_the_new_ones_run() {
    let mut state = routed_and_running(2, 2_000);
    let routes = state.service("quotes").unwrap().current_revision().spec.routes.clone();
    let v2 = ServiceSpec { routes, drain_ms: 2_000, ..spec("q:2", 2, 100) };
    state.apply(Command::ApplyService { spec: v2, image_digest: String::new(), now_ms: 10, unresolved_reason: String::new() }).unwrap();
    run(&mut state, 10);
    report_running(&mut state, 2, 20);
    run(&mut state, 30);
    let old: Vec<&Task> = state.tasks().filter(|t| t.revision == 1).collect();
    assert!(old.iter().all(|t| t.desired == DesiredState::Draining && t.drain_until_ms == 2_030), "{old:#?}");
    // The old tasks are no longer live, so the deploy is done: nothing else starts.
    assert_eq!(live(&state).len(), 2);
    run(&mut state, 2_030);
    assert!(state.tasks().filter(|t| t.revision == 1).all(|t| t.desired == DesiredState::Stopped));
}

#[test]
fn a_draining_task_on_a_node_that_goes_down_is_lost_and_stopped() {
    let mut state = routed_and_running(2, 60_000);
    state.apply(Command::ScaleService { name: "quotes".into(), count: 1, now_ms: 10 }).unwrap();
    run(&mut state, 10);
    let draining = state.tasks().find(|t| t.desired == DesiredState::Draining).unwrap().clone();
    state.apply(Command::SetNodeStatus { node_id: draining.node_id, status: NodeStatus::Down, now_ms: 20 }).unwrap();
    run(&mut state, 20);
    let t = state.task(&draining.id).unwrap();
    assert_eq!((t.desired, t.observed), (DesiredState::Stopped, TaskState::Lost));
}
