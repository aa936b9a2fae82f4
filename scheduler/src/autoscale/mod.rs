//! The CPU autoscaler: target tracking between `[autoscale] min` and `max`, with the semantics
//! of ECS target tracking and Kubernetes' HPA, decided in seconds rather than minutes.
//!
//! Split as HPA's controller is, and pure throughout (the clock is an argument):
//! - [`reading`]: per service, the average CPU of the tasks whose metrics can be trusted (running,
//!   at least two samples, one in the last 3 s) and how many could not be counted;
//! - [`recommend`]: `ceil(sum of counted CPU / target)` clamped to `[min, max]`, unchanged
//!   within a 10% tolerance band;
//! - [`stabilization`]: the highest recommendation of the last `scale_in_cooldown` wins;
//! - [`decide`]: cooldowns, the scale-in step bound, and no scale-in on missing metrics or
//!   during a rolling deploy.
//!
//! [`Autoscaler`] is the leader's controller: it keeps each service's stabilization window in
//! memory and returns [`Command::Autoscale`] decisions, which the leader proposes through Raft
//! like every other change (the service's events say why; cooldown times are replicated). See
//! docs/autoscaling.md.

pub mod decide;
pub mod reading;
pub mod recommend;
pub mod stabilization;

use std::collections::BTreeMap;

use crate::controller::{Controller, Snapshot};
use crate::state::Command;

pub use decide::{Decision, Round, decide, earliest_scale_in_ms, next_scale_out_ms};
pub use reading::{Reading, read_service};
pub use recommend::recommend;
pub use stabilization::Stabilization;

/// The leader's autoscaler: one stabilization window per autoscaled service.
#[derive(Default)]
pub struct Autoscaler {
    windows: BTreeMap<String, Stabilization>,
}

impl Controller for Autoscaler {
    fn commands(&mut self, snapshot: &Snapshot) -> Vec<Command> {
        let state = &snapshot.state;
        self.windows.retain(|name, _| state.service(name).is_some_and(|s| s.current_revision().spec.autoscale.is_some()));
        let mut commands = Vec::new();
        for service in state.services() {
            let Some(bounds) = &service.current_revision().spec.autoscale else {
                continue;
            };
            let reading = read_service(state, &service.name, &snapshot.cpu, snapshot.now_ms);
            let recommendation = recommend(&reading, bounds, service.desired_count);
            // What the window remembers: while metrics are missing or a deploy runs, nothing
            // lower than the current count, so that such moments never count towards a
            // scale-in.
            let trusted = reading.uncounted == 0 && !reading.deploying;
            let remembered = match recommendation {
                Some(r) if trusted => r,
                Some(r) => r.max(service.desired_count),
                None => service.desired_count,
            };
            let window = self.windows.entry(service.name.clone()).or_default();
            window.record(snapshot.now_ms, remembered, bounds.scale_in_cooldown_ms);
            let round = Round {
                bounds,
                desired: service.desired_count,
                status: &service.autoscale,
                reading,
                recommendation,
                window,
                now_ms: snapshot.now_ms,
            };
            if let Some(decision) = decide(&round) {
                tracing::info!(service = %service.name, "{}", decision.reason);
                commands.push(Command::Autoscale {
                    name: service.name.clone(),
                    from: service.desired_count,
                    to: decision.to,
                    reason: decision.reason,
                    now_ms: snapshot.now_ms,
                });
            }
        }
        commands
    }
}

#[cfg(test)]
mod tests;
