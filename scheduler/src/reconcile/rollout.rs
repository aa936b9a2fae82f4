//! Rolling replacement of a service's older-revision tasks, with ECS's deployment bounds:
//! at most `max_percent` of `count` tasks exist at once (rounded down), and at least
//! `min_healthy_percent` of `count` stay healthy (rounded up) until the new revision's tasks are.
//!
//! A task is healthy when it runs and, if its revision has a health check, the check passes.
//! Old tasks that are not healthy are stopped first: they keep nothing up. New tasks that never
//! become healthy (a crash loop, a failing check, nowhere to place them) leave the old ones
//! running, so a bad revision does not take a working service down.

use crate::spec::Deploy;
use crate::state::Task;

/// What one reconcile pass may do for a service.
#[derive(Debug, PartialEq, Eq)]
pub struct RolloutStep {
    /// How many tasks of the current revision to start.
    pub start: usize,
    /// Older-revision tasks to stop, unhealthy ones first.
    pub stop: Vec<String>,
}

/// The next step towards `count` healthy tasks of the current revision. `current` and `old`
/// are the live tasks (should run, not known dead) of the current and of older revisions.
pub fn step(count: usize, deploy: &Deploy, current: &[&Task], old: &[&Task], healthy: impl Fn(&Task) -> bool) -> RolloutStep {
    let missing = count.saturating_sub(current.len());
    if old.is_empty() {
        return RolloutStep { start: missing, stop: Vec::new() };
    }
    let max_total = (count * deploy.max_percent as usize / 100).max(count);
    let min_healthy = (count * deploy.min_healthy_percent as usize).div_ceil(100);
    let room = max_total.saturating_sub(current.len() + old.len());

    let (old_healthy, old_unhealthy): (Vec<&Task>, Vec<&Task>) = old.iter().copied().partition(|t| healthy(t));
    let healthy_now = old_healthy.len() + current.iter().filter(|t| healthy(t)).count();
    let may_stop_healthy = healthy_now.saturating_sub(min_healthy);

    let mut stop: Vec<String> = old_unhealthy.iter().map(|t| t.id.clone()).collect();
    let mut by_age = old_healthy;
    by_age.sort_by_key(|t| (t.revision, t.created_ms, t.id.clone()));
    stop.extend(by_age.iter().take(may_stop_healthy).map(|t| t.id.clone()));
    RolloutStep { start: missing.min(room), stop }
}

#[cfg(test)]
mod tests {
    use super::{RolloutStep, step};
    use crate::spec::Deploy;
    use crate::state::{DesiredState, HealthStatus, Task, TaskState};

    fn task(id: &str, revision: u64, running: bool) -> Task {
        Task {
            id: id.into(),
            service: "s".into(),
            revision,
            node_id: 1,
            desired: DesiredState::Running,
            observed: if running { TaskState::Running } else { TaskState::Assigned },
            endpoints: vec![],
            exit_code: None,
            health: HealthStatus::Unknown,
            message: String::new(),
            created_ms: 0,
            updated_ms: 0,
            drain_until_ms: 0,
        }
    }

    fn running(t: &Task) -> bool {
        t.observed == TaskState::Running
    }

    fn deploy(min_healthy_percent: u32, max_percent: u32) -> Deploy {
        Deploy { min_healthy_percent, max_percent }
    }

    #[test]
    fn without_old_tasks_the_missing_ones_start() {
        let a = task("a", 2, true);
        assert_eq!(step(3, &deploy(100, 200), &[&a], &[], running), RolloutStep { start: 2, stop: vec![] });
    }

    #[test]
    fn by_default_new_tasks_start_beside_the_old_which_stop_once_the_new_are_healthy() {
        let (o1, o2) = (task("o1", 1, true), task("o2", 1, true));
        // 100/200: room for 2 more; nothing may stop yet.
        assert_eq!(step(2, &deploy(100, 200), &[], &[&o1, &o2], running), RolloutStep { start: 2, stop: vec![] });
        // New ones placed but not running yet: still nothing stops.
        let (n1, n2) = (task("n1", 2, false), task("n2", 2, false));
        assert_eq!(step(2, &deploy(100, 200), &[&n1, &n2], &[&o1, &o2], running), RolloutStep { start: 0, stop: vec![] });
        // One new is healthy: one old may go.
        let n1 = task("n1", 2, true);
        assert_eq!(step(2, &deploy(100, 200), &[&n1, &n2], &[&o1, &o2], running), RolloutStep { start: 0, stop: vec!["o1".into()] });
    }

    #[test]
    fn half_healthy_without_extra_room_replaces_in_halves() {
        let (o1, o2, o3, o4) = (task("o1", 1, true), task("o2", 1, true), task("o3", 1, true), task("o4", 1, true));
        // 50/100 of 4: nothing may start (no room), 2 old may stop.
        assert_eq!(
            step(4, &deploy(50, 100), &[], &[&o1, &o2, &o3, &o4], running),
            RolloutStep { start: 0, stop: vec!["o1".into(), "o2".into()] }
        );
        // With 2 old left, 2 new start.
        assert_eq!(step(4, &deploy(50, 100), &[], &[&o3, &o4], running), RolloutStep { start: 2, stop: vec![] });
    }

    #[test]
    fn unhealthy_old_tasks_stop_at_once_and_a_new_revision_that_never_gets_healthy_keeps_the_old() {
        let (o1, o2) = (task("o1", 1, true), task("o2", 1, false));
        let (n1, n2) = (task("n1", 2, false), task("n2", 2, false));
        let step = step(2, &deploy(100, 200), &[&n1, &n2], &[&o1, &o2], running);
        assert_eq!(step, RolloutStep { start: 0, stop: vec!["o2".into()] }, "o1 is the only healthy task: it stays");
    }

    #[test]
    fn rounding_follows_ecs_max_down_min_up() {
        let olds: Vec<Task> = (0..3).map(|i| task(&format!("o{i}"), 1, true)).collect();
        let old: Vec<&Task> = olds.iter().collect();
        // 3 tasks, 150% -> at most 4 (4.5 down); 50% -> at least 2 healthy (1.5 up).
        assert_eq!(step(3, &deploy(50, 150), &[], &old, running), RolloutStep { start: 1, stop: vec!["o0".into()] });
    }
}
