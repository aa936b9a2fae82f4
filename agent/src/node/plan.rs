//! What the node should do, from what the servers want and what runs here: pure logic, so it is
//! unit tested without containers. Level-triggered: the same inputs always give the same plan,
//! so a missed or repeated assignment update does no harm.

use std::collections::BTreeMap;

use crate::task::TaskSpec;

/// A task the servers want on this node.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub spec: TaskSpec,
    /// False when the servers want it stopped (e.g. replaced by a newer revision).
    pub running: bool,
}

/// A task as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Running,
    Exited(i32),
}

/// One step towards the wanted state.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a task that is wanted running and not here.
    Start(TaskSpec),
    /// Stop a running task that is no longer wanted running.
    Stop(String),
    /// Free what an exited task still holds on the node (network, rootfs) while the servers
    /// still list it; its dir (exit record, logs) stays until they drop it.
    Release(String),
    /// Remove an exited task the servers no longer list.
    Remove(String),
}

/// The actions that move `seen` towards `wanted`. An exited task that is still listed is not
/// restarted here (the servers decide whether to replace it, with backoff): its network and
/// rootfs are released, and the rest is removed once they drop it.
pub fn plan(wanted: &BTreeMap<String, Wanted>, seen: &BTreeMap<String, Seen>) -> Vec<Action> {
    let mut actions = Vec::new();
    for (id, w) in wanted {
        match (w.running, seen.get(id)) {
            (true, None) => actions.push(Action::Start(w.spec.clone())),
            (false, Some(Seen::Running)) => actions.push(Action::Stop(id.clone())),
            (_, Some(Seen::Exited(_))) => actions.push(Action::Release(id.clone())),
            _ => {}
        }
    }
    for (id, s) in seen {
        if !wanted.contains_key(id) {
            if *s == Seen::Running {
                actions.push(Action::Stop(id.clone()));
            }
            actions.push(Action::Remove(id.clone()));
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str) -> TaskSpec {
        TaskSpec {
            id: id.into(),
            image: "img".into(),
            command: None,
            env: BTreeMap::new(),
            cpu_millis: 100,
            memory_mib: 64,
            ports: vec![],
            health: None,
            seccomp: Default::default(),
            userns: Default::default(),
        }
    }

    fn wanted(list: &[(&str, bool)]) -> BTreeMap<String, Wanted> {
        list.iter().map(|(id, running)| (id.to_string(), Wanted { spec: spec(id), running: *running })).collect()
    }

    fn seen(list: &[(&str, Seen)]) -> BTreeMap<String, Seen> {
        list.iter().map(|(id, s)| (id.to_string(), *s)).collect()
    }

    #[test]
    fn missing_wanted_tasks_start() {
        assert_eq!(plan(&wanted(&[("a", true), ("b", true)]), &seen(&[("b", Seen::Running)])), vec![Action::Start(spec("a"))]);
    }

    #[test]
    fn unwanted_tasks_stop_and_go() {
        let actions = plan(&wanted(&[]), &seen(&[("a", Seen::Running), ("b", Seen::Exited(0))]));
        assert_eq!(actions, vec![Action::Stop("a".into()), Action::Remove("a".into()), Action::Remove("b".into())]);
    }

    #[test]
    fn tasks_wanted_stopped_are_stopped_then_released_but_kept_until_dropped() {
        assert_eq!(plan(&wanted(&[("a", false)]), &seen(&[("a", Seen::Running)])), vec![Action::Stop("a".into())]);
        assert_eq!(plan(&wanted(&[("a", false)]), &seen(&[("a", Seen::Exited(143))])), vec![Action::Release("a".into())]);
    }

    #[test]
    fn an_exited_task_still_wanted_is_not_restarted_here_only_released() {
        assert_eq!(plan(&wanted(&[("a", true)]), &seen(&[("a", Seen::Exited(1))])), vec![Action::Release("a".into())]);
    }

    #[test]
    fn the_plan_is_idempotent_once_applied() {
        let w = wanted(&[("a", true)]);
        assert!(plan(&w, &seen(&[("a", Seen::Running)])).is_empty());
    }
}
