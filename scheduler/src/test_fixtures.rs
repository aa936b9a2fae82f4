//! Builders the unit tests of the state machine, the reconciler, the controllers and the
//! autoscaler share: a spec, a cluster of nodes, a task, and a node's report about a task.

use std::collections::BTreeMap;

use crate::spec::{Deploy, ServiceSpec};
use crate::state::{ClusterState, Command, DesiredState, HealthStatus, Task, TaskState};

/// A service "quotes" running `image` with `count` tasks of `cpu` millicores and 128 MiB.
pub fn spec(image: &str, count: u32, cpu: u32) -> ServiceSpec {
    ServiceSpec {
        name: "quotes".into(),
        image: image.into(),
        command: vec![],
        env: Default::default(),
        cpu_millis: cpu,
        memory_mib: 128,
        ports: vec![8080],
        count,
        autoscale: None,
        health: None,
        deploy: Deploy::default(),
        routes: vec![],
        constraints: BTreeMap::new(),
        drain_ms: crate::spec::DEFAULT_DRAIN_MS,
        security: Default::default(),
    }
}

/// `nodes` ready nodes (`node1`...) of `cpu_per_node` millicores and 4 GiB each.
pub fn cluster(nodes: u32, cpu_per_node: u32) -> ClusterState {
    let mut state = ClusterState::default();
    for i in 1..=nodes {
        state
            .apply(Command::RegisterNode {
                name: format!("node{i}"),
                address: format!("10.0.0.{i}"),
                cpu_millis: cpu_per_node,
                memory_mib: 4096,
                labels: BTreeMap::new(),
                now_ms: 0,
                api_address: format!("10.0.0.{i}:7071"),
            })
            .unwrap();
    }
    state
}

/// What `task`'s node reports about it at `now_ms`.
pub fn report(state: &mut ClusterState, task: &Task, observed: TaskState, exit_code: Option<i32>, message: &str, now_ms: u64) {
    state
        .apply(Command::ReportTaskStatus {
            node_id: task.node_id,
            task_id: task.id.clone(),
            state: observed,
            exit_code,
            endpoints: vec![],
            health: HealthStatus::Unknown,
            message: message.into(),
            now_ms,
        })
        .unwrap();
}

/// Task `id` of service "quotes" at revision 1 on `node_id`, desired running and seen
/// `observed`, created and updated at 1 ms; change the rest with struct update syntax.
pub fn task(id: &str, node_id: u64, observed: TaskState) -> Task {
    Task {
        id: id.into(),
        service: "quotes".into(),
        revision: 1,
        node_id,
        desired: DesiredState::Running,
        observed,
        endpoints: vec![],
        exit_code: None,
        health: HealthStatus::Unknown,
        message: String::new(),
        created_ms: 1,
        updated_ms: 1,
        drain_until_ms: 0,
    }
}
