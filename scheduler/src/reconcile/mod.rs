//! The reconciler: compares what the state wants (each service's current revision at its
//! desired count) with its tasks, and returns the commands that close the gap. Pure: the
//! leader runs it on a snapshot after each change and on a timer, and proposes the commands
//! through Raft; running it twice on the same state gives the same commands.
//!
//! Per service:
//! - a new revision rolls out ([`rollout`]): its tasks start beside the older ones within
//!   `max_percent`, and older tasks stop as long as `min_healthy_percent` stay healthy;
//! - live tasks beyond the count are told to stop (pending ones first, then the newest);
//! - missing tasks are created and placed ([`crate::placement`], on nodes with the labels the
//!   spec's `constraints` require); those that fit nowhere are created pending with the
//!   reason, and pending tasks are placed again on every pass. Constraints are checked only
//!   when a task is placed: a running task stays on a node whose labels changed since;
//! - a service whose tasks keep dying gets its replacements delayed with exponential backoff
//!   (1 s doubling to 60 s, from the last exit), so a crash loop does not spin; the start of
//!   replacements after a backoff is an event of the service (`Command::RecordEvents`).
//!
//! Tasks of a deleted service are forgotten once they are done, and their nodes then remove them.
//!
//! A task to stop whose revision has routes, while it runs, drains first: it leaves every
//! ingress's target group at once (`Draining`); [`crate::controller::DrainEnd`] stops it when
//! its drain is over. Draining tasks are not live: their replacements start at once.
//!
//! A task counts as live while it should run and has not exited, failed or been lost, and its
//! node (if placed) is ready. Tasks of a node that went down are marked lost and told to stop
//! (so a node that comes back stops its stale tasks), and replaced elsewhere.

mod rollout;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::placement::{Ask, NodeView, Placer};
use crate::state::{ClusterState, Command, DesiredState, HealthStatus, NodeStatus, ServiceEvent, Task, TaskState};

/// Deaths within this window count towards the backoff.
const BACKOFF_WINDOW_MS: u64 = 5 * 60 * 1000;
const BACKOFF_BASE_MS: u64 = 1000;
const BACKOFF_MAX_MS: u64 = 60 * 1000;

/// Finished tasks a service keeps for `get tasks`, `describe` and its crash-loop backoff (like
/// Swarm's task history limit, default 5); older ones are forgotten, so their nodes remove their
/// dirs and logs. Seven deaths already reach the 60 s backoff cap.
pub const TASK_HISTORY: usize = 10;

/// The commands that move `state` towards what it wants. `new_id` names new tasks.
pub fn reconcile(state: &ClusterState, now_ms: u64, new_id: &mut dyn FnMut(&str) -> String) -> Vec<Command> {
    let mut placer = Placer::new(node_views(state));
    let mut put = Vec::new();
    let mut stop = Vec::new();
    let mut events = Vec::new();
    let mut beyond_history = Vec::new();
    for service in state.services() {
        let current = service.current_revision();
        let tasks: Vec<&Task> = state.tasks_of(&service.name).collect();
        beyond_history.extend(finished_beyond_history(&tasks));
        // Tasks of a down node are lost: replaced elsewhere, and stopped if the node returns.
        for t in tasks.iter().filter(|t| on_down_node(state, t)) {
            let mut lost = (*t).clone();
            lost.observed = TaskState::Lost;
            lost.desired = DesiredState::Stopped;
            lost.message = format!("node {} is down", t.node_id);
            put.push(lost);
        }
        let (live_current, live_old): (Vec<&Task>, Vec<&Task>) =
            tasks.iter().copied().filter(|t| is_live(state, t)).partition(|t| t.revision == current.revision);
        let want = service.desired_count as usize;
        let healthy = |t: &Task| {
            let checked = service.revision(t.revision).is_some_and(|r| r.spec.health.is_some());
            t.observed == TaskState::Running && (!checked || t.health == HealthStatus::Healthy)
        };
        let rollout = rollout::step(want, &current.spec.deploy, &live_current, &live_old, healthy);
        stop.extend(rollout.stop);
        // Too many: stop pending ones first, then the newest.
        if live_current.len() > want {
            let mut extra = live_current.clone();
            extra.sort_by(|a, b| stop_order(a).cmp(&stop_order(b)));
            stop.extend(extra.iter().take(live_current.len() - want).map(|t| t.id.clone()));
        }
        let spec = &current.spec;
        let ask = |count: u32| Ask {
            service: service.name.clone(),
            cpu_millis: spec.cpu_millis,
            memory_mib: spec.memory_mib,
            constraints: spec.constraints.clone(),
            count,
        };
        // Pending tasks of the current revision get another chance.
        let pending: Vec<&Task> = live_current.iter().copied().filter(|t| t.node_id == 0).take(want).collect();
        if !pending.is_empty() {
            let placement = placer.place(&ask(pending.len() as u32));
            for (task, node_id) in pending.iter().zip(placement.nodes.iter()) {
                let mut t = (*task).clone();
                t.node_id = *node_id;
                t.observed = TaskState::Assigned;
                t.message.clear();
                put.push(t);
            }
            for task in pending.iter().skip(placement.nodes.len()) {
                let reason = placement.reason.clone().unwrap_or_default();
                if task.message != reason {
                    let mut t = (*task).clone();
                    t.message = reason;
                    put.push(t);
                }
            }
        }
        let missing = rollout.start;
        if missing == 0 || backing_off(&tasks, now_ms) {
            continue;
        }
        if let Some(b) = backoff(tasks.iter().copied(), now_ms) {
            events.push(ServiceEvent {
                service: service.name.clone(),
                message: format!(
                    "{missing} new task(s) after a backoff of {}: {} exit(s) in 5 min",
                    crate::spec::format_duration_ms(b.delay_ms),
                    b.deaths
                ),
            });
        }
        let placement = placer.place(&ask(missing as u32));
        let reason = placement.reason.clone().unwrap_or_default();
        for i in 0..missing {
            let node_id = placement.nodes.get(i).copied().unwrap_or(0);
            put.push(Task {
                id: new_id(&service.name),
                service: service.name.clone(),
                revision: current.revision,
                node_id,
                desired: DesiredState::Running,
                observed: if node_id == 0 { TaskState::Pending } else { TaskState::Assigned },
                endpoints: Vec::new(),
                exit_code: None,
                health: HealthStatus::Unknown,
                message: if node_id == 0 { reason.clone() } else { String::new() },
                created_ms: now_ms,
                updated_ms: now_ms,
                drain_until_ms: 0,
            });
        }
    }
    let mut commands = Vec::new();
    let mut forget = stopped_tasks_of_deleted_services(state);
    forget.extend(beyond_history);
    if !forget.is_empty() {
        commands.push(Command::RemoveTasks { task_ids: forget });
    }
    stop.sort();
    stop.dedup();
    let (drain, stop_now) = drain_first(state, stop, now_ms);
    for (until_ms, task_ids) in drain {
        commands.push(Command::DrainTasks { task_ids, until_ms, now_ms });
    }
    if !stop_now.is_empty() {
        commands.push(Command::SetTaskDesiredState { task_ids: stop_now, desired: DesiredState::Stopped, now_ms });
    }
    if !put.is_empty() {
        commands.push(Command::PutTasks { tasks: put, now_ms });
    }
    if !events.is_empty() {
        commands.push(Command::RecordEvents { events, now_ms });
    }
    commands
}

/// Splits the tasks to stop into those that drain first (serving through an ingress: grouped by
/// when their drain ends) and those that stop at once.
fn drain_first(state: &ClusterState, stop: Vec<String>, now_ms: u64) -> (BTreeMap<u64, Vec<String>>, Vec<String>) {
    let mut drain: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stop_now = Vec::new();
    for id in stop {
        let Some(task) = state.task(&id) else { continue };
        let spec = state.service(&task.service).and_then(|s| s.revision(task.revision)).map(|r| &r.spec);
        match spec.and_then(|spec| crate::routes::drain_ms(task, spec)) {
            Some(ms) => drain.entry(now_ms + ms).or_default().push(id),
            None => stop_now.push(id),
        }
    }
    (drain, stop_now)
}

/// Tasks of deleted services that are done (exited, failed, lost, or never placed): forgotten,
/// so their nodes remove what is left of them (rootfs, network namespace, veth, host ports).
/// A lost task that still runs on a node that comes back is stopped and removed by that node,
/// since nothing wants it any more.
fn stopped_tasks_of_deleted_services(state: &ClusterState) -> Vec<String> {
    // Through the index of tasks by service: one look-up per service, not one per task.
    state
        .services_with_tasks()
        .filter(|name| state.service(name).is_none())
        .flat_map(|name| state.tasks_of(name))
        .filter(|t| t.desired == DesiredState::Stopped)
        .filter(|t| t.node_id == 0 || matches!(t.observed, TaskState::Exited | TaskState::Failed | TaskState::Lost))
        .map(|t| t.id.clone())
        .collect()
}

/// The ids of a service's finished tasks beyond the newest [`TASK_HISTORY`]: exited, failed or
/// lost, or stopped before they were ever placed. A task being stopped is not finished until its
/// node says so.
fn finished_beyond_history<'a>(tasks: &[&'a Task]) -> impl Iterator<Item = String> + 'a {
    let mut done: Vec<&Task> = tasks
        .iter()
        .copied()
        .filter(|t| {
            matches!(t.observed, TaskState::Exited | TaskState::Failed | TaskState::Lost)
                || (t.node_id == 0 && t.desired == DesiredState::Stopped)
        })
        .collect();
    done.sort_by(|a, b| (b.updated_ms, &b.id).cmp(&(a.updated_ms, &a.id)));
    done.into_iter().skip(TASK_HISTORY).map(|t| t.id.clone())
}

/// The order in which extra tasks stop: pending ones first, then the newest (ties by id).
fn stop_order(t: &Task) -> (bool, Reverse<u64>, Reverse<&str>) {
    (t.node_id != 0, Reverse(t.created_ms), Reverse(t.id.as_str()))
}

/// Whether a task should run and (as far as we know) does or will.
fn is_live(state: &ClusterState, t: &Task) -> bool {
    if t.desired != DesiredState::Running || matches!(t.observed, TaskState::Exited | TaskState::Failed | TaskState::Lost) {
        return false;
    }
    t.node_id == 0 || state.node(t.node_id).is_some_and(|n| n.status == NodeStatus::Ready)
}

/// Whether a task that should run (or is draining) sits on a node that is down.
fn on_down_node(state: &ClusterState, t: &Task) -> bool {
    t.desired != DesiredState::Stopped
        && !matches!(t.observed, TaskState::Exited | TaskState::Failed | TaskState::Lost)
        && state.node(t.node_id).is_some_and(|n| n.status != NodeStatus::Ready)
}

/// Whether new tasks of a service must wait: k deaths within the window delay the next start
/// by 1 s * 2^(k-1) (at most 60 s) from the latest death.
fn backing_off(tasks: &[&Task], now_ms: u64) -> bool {
    backoff(tasks.iter().copied(), now_ms).is_some_and(|b| now_ms < b.latest_death_ms + b.delay_ms)
}

/// A service's restart backoff: its recent deaths and how long after the latest one the next
/// replacement waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Tasks that exited or failed while they should run, within the last 5 minutes.
    pub deaths: usize,
    pub latest_death_ms: u64,
    pub delay_ms: u64,
}

/// The backoff of a service with `tasks` at `now_ms`; `None` when none of them died recently.
pub fn backoff<'a>(tasks: impl IntoIterator<Item = &'a Task>, now_ms: u64) -> Option<Backoff> {
    let deaths: Vec<u64> = tasks
        .into_iter()
        .filter(|t| t.desired == DesiredState::Running && matches!(t.observed, TaskState::Exited | TaskState::Failed))
        .map(|t| t.updated_ms)
        .filter(|ms| now_ms.saturating_sub(*ms) < BACKOFF_WINDOW_MS)
        .collect();
    let latest_death_ms = *deaths.iter().max()?;
    let delay_ms = BACKOFF_BASE_MS.saturating_mul(1 << (deaths.len() - 1).min(6)).min(BACKOFF_MAX_MS);
    Some(Backoff { deaths: deaths.len(), latest_death_ms, delay_ms })
}

/// The nodes with what live tasks already use.
fn node_views(state: &ClusterState) -> Vec<NodeView> {
    let mut views: BTreeMap<u64, NodeView> = state
        .nodes()
        .map(|n| {
            (
                n.id,
                NodeView {
                    id: n.id,
                    ready: n.status == NodeStatus::Ready,
                    cpu_millis: n.cpu_millis,
                    memory_mib: n.memory_mib,
                    labels: n.labels.clone(),
                    used_cpu_millis: 0,
                    used_memory_mib: 0,
                    tasks_per_service: BTreeMap::new(),
                },
            )
        })
        .collect();
    for t in state.tasks().filter(|t| is_live(state, t) && t.node_id != 0) {
        let Some(view) = views.get_mut(&t.node_id) else { continue };
        if let Some(rev) = state.service(&t.service).and_then(|s| s.revision(t.revision)) {
            view.used_cpu_millis += rev.spec.cpu_millis;
            view.used_memory_mib += rev.spec.memory_mib;
        }
        *view.tasks_per_service.entry(t.service.clone()).or_insert(0) += 1;
    }
    views.into_values().collect()
}
