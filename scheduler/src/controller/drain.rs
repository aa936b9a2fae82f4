//! The end of a drain: a draining task is stopped once its `drain` time is over, or earlier once
//! every ingress has shown, in a report received after the drain began, that the task is
//! neither in its route table nor has a request in flight to it (ALB's deregistration delay,
//! which also ends when the last in-flight request completes).

use super::{Controller, Snapshot};
use crate::state::{Command, DesiredState, Task};

/// An ingress report older than this no longer says what that ingress does now (the agents
/// report every second); while one is this old, drains run their full time.
const FRESH_MS: u64 = 3_000;

/// Stops draining tasks whose drain is over.
pub struct DrainEnd;

impl Controller for DrainEnd {
    fn commands(&mut self, snapshot: &Snapshot) -> Vec<Command> {
        let done: Vec<String> =
            snapshot.state.tasks().filter(|t| t.desired == DesiredState::Draining && drained(t, snapshot)).map(|t| t.id.clone()).collect();
        if done.is_empty() {
            return Vec::new();
        }
        vec![Command::SetTaskDesiredState { task_ids: done, desired: DesiredState::Stopped, now_ms: snapshot.now_ms }]
    }
}

/// Whether `task` may stop now.
fn drained(task: &Task, snapshot: &Snapshot) -> bool {
    if snapshot.now_ms >= task.drain_until_ms {
        return true;
    }
    // A new leader has not heard from every ingress yet.
    if snapshot.leading_for_ms < FRESH_MS {
        return false;
    }
    // The task's last change (the drain, or a later status report): a report from before it
    // may predate the table without the task.
    let began = task.updated_ms;
    snapshot.ingress.values().all(|report| {
        report.at_ms > began
            && snapshot.now_ms.saturating_sub(report.at_ms) <= FRESH_MS
            && task.endpoints.iter().all(|e| !report.targets.contains(e) && report.in_flight.get(e).copied().unwrap_or(0) == 0)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::controller::IngressView;
    use crate::state::{ClusterState, TaskState};

    fn draining(until_ms: u64) -> ClusterState {
        let mut state = crate::test_fixtures::cluster(1, 1000);
        state
            .apply(Command::ApplyService {
                spec: crate::test_fixtures::spec("q:1", 1, 100),
                image_digest: String::new(),
                now_ms: 0,
                unresolved_reason: String::new(),
            })
            .unwrap();
        let task = Task {
            desired: DesiredState::Draining,
            endpoints: vec!["10.0.0.1:30001".into()],
            updated_ms: 0,
            drain_until_ms: until_ms,
            ..crate::test_fixtures::task("t", 1, TaskState::Running)
        };
        state.apply(Command::PutTasks { tasks: vec![task], now_ms: 10_000 }).unwrap();
        state
    }

    fn report(at_ms: u64, targets: &[&str], in_flight: &[(&str, u64)]) -> IngressView {
        IngressView {
            at_ms,
            targets: targets.iter().map(|t| t.to_string()).collect::<BTreeSet<_>>(),
            in_flight: in_flight.iter().map(|(t, n)| (t.to_string(), *n)).collect::<BTreeMap<_, _>>(),
        }
    }

    fn stops(ingress: Vec<IngressView>, now_ms: u64, leading_for_ms: u64) -> bool {
        let snapshot = Snapshot {
            state: draining(40_000),
            now_ms,
            leading_for_ms,
            ingress: ingress.into_iter().enumerate().map(|(i, r)| (i as u64 + 1, r)).collect(),
            ..Snapshot::default()
        };
        !DrainEnd.commands(&snapshot).is_empty()
    }

    #[test]
    fn a_drain_ends_early_only_when_every_fresh_ingress_has_let_the_task_go() {
        let gone = |at| report(at, &["10.0.0.1:30002"], &[]);
        // (reports, now) -> stops?
        assert!(stops(vec![gone(11_000), gone(11_500)], 12_000, 60_000), "both ingresses let it go");
        assert!(!stops(vec![gone(11_000), report(11_500, &["10.0.0.1:30001"], &[])], 12_000, 60_000), "one still routes to it");
        assert!(!stops(vec![gone(11_000), report(11_500, &[], &[("10.0.0.1:30001", 1)])], 12_000, 60_000), "a request in flight");
        assert!(!stops(vec![gone(11_000), gone(9_000)], 12_000, 60_000), "a report from before the drain began");
        assert!(!stops(vec![gone(11_000), gone(10_500)], 14_000, 60_000), "a report gone stale");
        assert!(!stops(vec![gone(11_000)], 12_000, 2_000), "a new leader waits for every ingress");
        assert!(stops(vec![], 12_000, 60_000), "no ingress: nothing routes to it");
        assert!(stops(vec![report(11_000, &["10.0.0.1:30001"], &[("10.0.0.1:30001", 9)])], 40_000, 60_000), "the drain time is over");
    }
}
