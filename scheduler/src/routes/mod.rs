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
use crate::state::ClusterState;

/// The first route of `spec` whose host and path prefix another service already claims:
/// `(route index, that service)`.
pub fn claimed_by_another<'a>(state: &'a ClusterState, spec: &ServiceSpec) -> Option<(usize, &'a str)> {
    spec.routes.iter().enumerate().find_map(|(i, route)| {
        state
            .services()
            .filter(|other| other.name != spec.name)
            .find(|other| {
                other.current_revision().spec.routes.iter().any(|r| r.host == route.host && r.path_prefix == route.path_prefix)
            })
            .map(|other| (i, other.name.as_str()))
    })
}
