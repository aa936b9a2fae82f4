//! The route table: each rule with the service's tasks that can take its requests.

use crate::state::{ClusterState, DesiredState, HealthStatus, NodeStatus, TaskState};

/// One `[[route]]` of one service with its target group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    pub service: String,
    /// Empty: any host.
    pub host: String,
    pub path_prefix: String,
    /// The container port; each target is the node port it is published on.
    pub port: u16,
    pub timeout_ms: u64,
    /// The service's tasks that should run, with the endpoint of `port`.
    pub targets: Vec<Target>,
}

/// A task in a route's target group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub task_id: String,
    /// `node_ip:host_port` of the route's port.
    pub address: String,
    /// Running on a ready node and, when the service has a health check, passing it: the
    /// ingress sends it requests. A task that is draining or stopping is not in the group.
    pub healthy: bool,
}

/// Every route of every service, ordered by service then the spec's order, with targets by
/// task id.
pub fn route_table(state: &ClusterState) -> Vec<RouteEntry> {
    let mut entries = Vec::new();
    for service in state.services() {
        let spec = &service.current_revision().spec;
        for route in &spec.routes {
            let mut targets = Vec::new();
            for task in state.tasks_of(&service.name) {
                if task.desired != DesiredState::Running || matches!(task.observed, TaskState::Exited | TaskState::Failed | TaskState::Lost)
                {
                    continue;
                }
                // The task's own revision says where the port is published.
                let Some(revision) = service.revision(task.revision) else { continue };
                let Some(index) = revision.spec.ports.iter().position(|p| *p == route.port) else { continue };
                let Some(address) = task.endpoints.get(index) else { continue };
                let node_ready = state.node(task.node_id).is_some_and(|n| n.status == NodeStatus::Ready);
                let checked = revision.spec.health.is_some();
                let healthy = node_ready && task.observed == TaskState::Running && (!checked || task.health == HealthStatus::Healthy);
                targets.push(Target { task_id: task.id.clone(), address: address.clone(), healthy });
            }
            entries.push(RouteEntry {
                service: service.name.clone(),
                host: route.host.clone(),
                path_prefix: route.path_prefix.clone(),
                port: route.port,
                timeout_ms: route.timeout_ms,
                targets,
            });
        }
    }
    entries
}
