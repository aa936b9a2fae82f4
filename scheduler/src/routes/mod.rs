//! The ingress's view of the cluster: every service's `[[route]]` rules with their target
//! groups, and the rule that no two services claim the same host and path prefix.
//!
//! Pure, from the state: the servers stream [`route_table`] to every ingress after each change
//! (`sched.v1.RouteApi/WatchRoutes`), and [`claimed_by_another`] is checked when a spec is
//! applied or rolled back to. Which rule wins for a request (exact host, then wildcard, then
//! any host; then the longest prefix) is the ingress's to decide.

mod table;
#[cfg(test)]
mod tests;

pub use table::{RouteEntry, Target, route_table};

use crate::spec::ServiceSpec;
use crate::state::{ClusterState, DesiredState, Task, TaskState};

/// How long `task`, about to stop, drains first: its revision's `drain` when the revision has
/// routes and the task runs (an ingress may have sent it requests). `None`: stop it at once.
pub fn drain_ms(task: &Task, spec: &ServiceSpec) -> Option<u64> {
    let serving = task.desired != DesiredState::Stopped && task.observed == TaskState::Running;
    (serving && !spec.routes.is_empty() && spec.drain_ms > 0).then_some(spec.drain_ms)
}

/// The first route of `spec` whose host and path prefix another service already claims:
/// `(route index, that service)`.
pub fn claimed_by_another<'a>(state: &'a ClusterState, spec: &ServiceSpec) -> Option<(usize, &'a str)> {
    spec.routes.iter().enumerate().find_map(|(i, route)| {
        state
            .services()
            .filter(|other| other.name != spec.name)
            .find(|other| other.current_revision().spec.routes.iter().any(|r| r.host == route.host && r.path_prefix == route.path_prefix))
            .map(|other| (i, other.name.as_str()))
    })
}
