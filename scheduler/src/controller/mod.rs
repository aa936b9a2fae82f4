//! The leader's controllers: pure functions from a typed [`Snapshot`] of the cluster (the
//! applied state, each node's heartbeat age, each task's recent CPU samples and the clock) to
//! the [`Command`]s that move it where it should be.
//!
//! The leader loop (`server::leader`) only gathers the snapshot and proposes what
//! [`run_controllers`] returns; it decides nothing itself. Controllers run in a fixed order,
//! each on the state as the previous ones' commands would leave it:
//! 1. [`NodeLiveness`]: nodes without a heartbeat for the node timeout are marked down, nodes
//!    heartbeating again ready;
//! 2. [`crate::autoscale::Autoscaler`]: each autoscaled service's desired count follows its
//!    CPU target;
//! 3. [`Reconcile`]: tasks are started, placed, stopped (routed ones drain first) and forgotten
//!    until every service runs its current revision at its desired count;
//! 4. [`DrainEnd`]: a draining task is stopped when its drain time is over, or once every
//!    ingress reports it neither routes to it nor has a request in flight to it.
//!
//! No controller reads a clock, a lock or the network, so tests build a snapshot and step
//! through minutes of cluster time in microseconds.

mod drain;
mod liveness;
mod reconcile;
mod snapshot;

pub use drain::DrainEnd;
pub use liveness::NodeLiveness;
pub use reconcile::Reconcile;
pub use snapshot::{CpuSample, IngressView, Snapshot};

use crate::state::Command;

/// One of the leader's duties.
pub trait Controller: Send {
    /// The commands this controller wants, given `snapshot`.
    fn commands(&mut self, snapshot: &Snapshot) -> Vec<Command>;
}

/// The leader's controllers in their order: node liveness, the autoscaler, the reconciler, the
/// end of drains.
pub fn leader_controllers(node_timeout_ms: u64) -> Vec<Box<dyn Controller>> {
    vec![
        Box::new(NodeLiveness { node_timeout_ms }),
        Box::new(crate::autoscale::Autoscaler::default()),
        Box::new(Reconcile::default()),
        Box::new(DrainEnd),
    ]
}

/// Runs `controllers` in order on `snapshot`, each seeing the state the earlier ones' commands
/// lead to, and returns all their commands in order. Commands the state refuses are dropped
/// (the next round decides again from the state as it then is).
pub fn run_controllers(controllers: &mut [Box<dyn Controller>], mut snapshot: Snapshot) -> Vec<Command> {
    let mut all = Vec::new();
    for controller in controllers.iter_mut() {
        for command in controller.commands(&snapshot) {
            match snapshot.state.apply(command.clone()) {
                Ok(_) => all.push(command),
                Err(rejection) => {
                    tracing::debug!("a controller's command would be refused: {rejection}")
                }
            }
        }
    }
    all
}

#[cfg(test)]
mod tests;
