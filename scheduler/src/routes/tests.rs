//! Route tables and route conflicts on states built from real commands.

use super::*;
use crate::spec::{HealthCheck, HealthKind, Route};
use crate::state::{Command, HealthStatus, NodeStatus, RejectionKind, TaskState};
use crate::test_fixtures::{cluster, spec};

fn route(host: &str, path: &str, port: u16) -> Route {
    Route { path_prefix: path.into(), host: host.into(), port, timeout_ms: 60_000 }
}

fn routed(name: &str, routes: Vec<Route>) -> ServiceSpec {
    ServiceSpec { name: name.into(), ports: vec![8080, 9090], routes, ..spec("img:1", 0, 100) }
}

fn apply(state: &mut ClusterState, spec: ServiceSpec) -> Result<crate::state::Outcome, crate::state::Rejection> {
    state.apply(Command::ApplyService { spec, image_digest: String::new(), now_ms: 1, unresolved_reason: String::new() })
}

/// Puts one task of `service` on node 1 in `observed` state with `endpoints`.
fn task(state: &mut ClusterState, service: &str, id: &str, observed: TaskState, health: HealthStatus, endpoints: &[&str]) {
    let revision = state.service(service).unwrap().current;
    let t = crate::state::Task { service: service.into(), revision, ..crate::test_fixtures::task(id, 1, TaskState::Assigned) };
    state.apply(Command::PutTasks { tasks: vec![t.clone()], now_ms: 1 }).unwrap();
    state
        .apply(Command::ReportTaskStatus {
            node_id: 1,
            task_id: id.into(),
            state: observed,
            exit_code: None,
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            health,
            message: String::new(),
            now_ms: 2,
        })
        .unwrap();
}

#[test]
fn targets_are_the_tasks_endpoint_of_the_routes_port_and_healthy_only_when_they_may_take_requests() {
    let mut state = cluster(2, 8000);
    let mut checked = routed("api", vec![route("api.example", "/v1", 9090), route("", "/", 8080)]);
    checked.health = Some(HealthCheck {
        kind: HealthKind::Tcp,
        path: String::new(),
        port: 8080,
        command: vec![],
        interval_ms: 1000,
        timeout_ms: 1000,
        retries: 1,
        grace_ms: 0,
    });
    apply(&mut state, checked).unwrap();
    task(&mut state, "api", "a", TaskState::Running, HealthStatus::Healthy, &["10.0.0.1:30001", "10.0.0.1:30002"]);
    task(&mut state, "api", "b", TaskState::Running, HealthStatus::Unhealthy, &["10.0.0.1:30003", "10.0.0.1:30004"]);
    task(&mut state, "api", "c", TaskState::Preparing, HealthStatus::Unknown, &[]);
    task(&mut state, "api", "d", TaskState::Exited, HealthStatus::Unknown, &["10.0.0.1:30007", "10.0.0.1:30008"]);
    let table = route_table(&state);
    assert_eq!(table.len(), 2);
    let v1 = &table[0];
    assert_eq!((v1.service.as_str(), v1.host.as_str(), v1.path_prefix.as_str(), v1.port), ("api", "api.example", "/v1", 9090));
    let targets: Vec<(&str, &str, bool)> = v1.targets.iter().map(|t| (t.task_id.as_str(), t.address.as_str(), t.healthy)).collect();
    assert_eq!(targets, [("a", "10.0.0.1:30002", true), ("b", "10.0.0.1:30004", false)]);
    assert_eq!(table[1].targets[0].address, "10.0.0.1:30001");
    // A task told to stop leaves the target group at once; a task on a down node is not healthy.
    state
        .apply(Command::SetTaskDesiredState { task_ids: vec!["b".into()], desired: crate::state::DesiredState::Stopped, now_ms: 3 })
        .unwrap();
    state.apply(Command::SetNodeStatus { node_id: 1, status: NodeStatus::Down, now_ms: 4 }).unwrap();
    let table = route_table(&state);
    let targets: Vec<(&str, bool)> = table[0].targets.iter().map(|t| (t.task_id.as_str(), t.healthy)).collect();
    assert_eq!(targets, [("a", false)]);
}

#[test]
fn a_second_service_claiming_the_same_host_and_prefix_is_refused_naming_the_first() {
    let mut state = cluster(1, 8000);
    apply(&mut state, routed("quotes", vec![route("quotes.example", "/api/v1", 8080)])).unwrap();
    // Another host, another prefix, or a longer prefix: fine.
    apply(&mut state, routed("other", vec![route("other.example", "/api/v1", 8080), route("quotes.example", "/api/v10", 8080)])).unwrap();
    let refused = apply(&mut state, routed("thief", vec![route("", "/", 8080), route("quotes.example", "/api/v1", 8080)])).unwrap_err();
    assert_eq!(refused.kind, RejectionKind::Conflict);
    assert_eq!(
        refused.message,
        "route[1] (host quotes.example, path_prefix /api/v1) is already served by service \"quotes\": change the host or path_prefix, or remove that route from \"quotes\" first"
    );
    assert!(state.service("thief").is_none(), "nothing was created");
    // The owner may re-apply its own route.
    apply(&mut state, ServiceSpec { count: 3, ..routed("quotes", vec![route("quotes.example", "/api/v1", 8080)]) }).unwrap();
}

#[test]
fn a_rollback_to_a_route_another_service_took_meanwhile_is_refused() {
    let mut state = cluster(1, 8000);
    apply(&mut state, routed("quotes", vec![route("", "/shop", 8080)])).unwrap();
    apply(&mut state, routed("quotes", vec![route("", "/store", 8080)])).unwrap();
    apply(&mut state, routed("shop", vec![route("", "/shop", 8080)])).unwrap();
    let refused = state.apply(Command::RollbackService { name: "quotes".into(), to_revision: None, now_ms: 5 }).unwrap_err();
    assert!(refused.message.contains("already served by service \"shop\""), "{}", refused.message);
    assert_eq!(state.service("quotes").unwrap().current, 2);
}

#[test]
fn a_task_of_an_older_revision_is_found_on_its_own_port_layout() {
    let mut state = cluster(1, 8000);
    apply(&mut state, routed("api", vec![route("", "/", 9090)])).unwrap();
    task(&mut state, "api", "old", TaskState::Running, HealthStatus::Unknown, &["10.0.0.1:1", "10.0.0.1:2"]);
    // Revision 2 lists the ports the other way round.
    apply(&mut state, ServiceSpec { ports: vec![9090, 8080], ..routed("api", vec![route("", "/", 9090)]) }).unwrap();
    task(&mut state, "api", "new", TaskState::Running, HealthStatus::Unknown, &["10.0.0.1:3", "10.0.0.1:4"]);
    let table = route_table(&state);
    let addresses: Vec<(&str, &str)> = table[0].targets.iter().map(|t| (t.task_id.as_str(), t.address.as_str())).collect();
    assert_eq!(addresses, [("new", "10.0.0.1:3"), ("old", "10.0.0.1:2")]);
}
