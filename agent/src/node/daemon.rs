//! The agent's main loop. One session per server connection: register (by name, so a restarted
//! agent keeps its node id), then, until the connection breaks, heartbeat, follow the
//! assignment stream, check local tasks, act on the [`plan`](super::plan::plan) and report
//! every task state change. When a server dies the agent moves to the next one; tasks keep
//! running meanwhile (each under its own shim).
//!
//! Starting and stopping tasks run as background jobs, so a slow image pull never delays a
//! heartbeat.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::agent::v1 as pb;
use proto::agent::v1::agent_api_client::AgentApiClient;
use proto::sched::v1 as sched_pb;
use runtime::image::{ImageService, ImageServiceOptions};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use super::AgentConfig;
use super::plan::{Action, Seen, Wanted, plan};
use crate::error::{AgentError, Result};
use crate::task::{DriverConfig, TaskDriver, TaskSpec, TaskStatus};

/// How a background job ended.
enum JobDone {
    Started { task: String, result: std::result::Result<i32, String> },
    Stopped { task: String },
}

/// The state last reported for a task (so each change is reported once).
#[derive(Debug, Clone, PartialEq)]
enum Reported {
    Running,
    Exited(i32),
    Failed(String),
}

/// Runs the agent until `shutdown` completes. Tasks keep running after it returns.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    if config.servers.is_empty() {
        return Err(AgentError::Spec("no server address given (--server HOST:PORT)".into()));
    }
    let images = ImageService::open(&config.data_dir, ImageServiceOptions::default())?;
    let driver = TaskDriver::new(
        DriverConfig {
            runtime_binary: config.runtime_binary.clone(),
            state_root: config.data_dir.join("runtime"),
            tasks_dir: config.data_dir.join("tasks"),
            cgroup_parent: config.cgroup_parent.clone(),
            max_log_bytes: 10 * 1024 * 1024,
        },
        Arc::new(images),
    )?;
    let driver = Arc::new(driver);
    tokio::select! {
        () = shutdown => Ok(()),
        () = serve(&config, driver) => Ok(()),
    }
}

/// Sessions with the servers in turn, forever.
async fn serve(config: &AgentConfig, driver: Arc<TaskDriver>) {
    let mut next = 0usize;
    let mut backoff = Duration::from_millis(100);
    let mut node = NodeState::default();
    loop {
        let server = &config.servers[next % config.servers.len()];
        let began = Instant::now();
        match session(config, &driver, server, &mut node).await {
            Ok(()) => tracing::warn!(server, "the assignment stream ended; reconnecting"),
            Err(e) => tracing::warn!(server, "session failed: {e}"),
        }
        if began.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        next += 1;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// What the node remembers across sessions.
#[derive(Default)]
struct NodeState {
    wanted: BTreeMap<String, Wanted>,
    reported: HashMap<String, Reported>,
    /// Tasks with a start or stop job in flight.
    busy: HashSet<String>,
    /// Tasks whose start failed (reported FAILED; not retried by this node).
    failed: HashMap<String, String>,
}

type SessionResult = std::result::Result<(), String>;

async fn session(config: &AgentConfig, driver: &Arc<TaskDriver>, server: &str, node: &mut NodeState) -> SessionResult {
    let channel = connect(server).await?;
    let mut client = AgentApiClient::new(channel);
    let node_id = client
        .register(pb::RegisterRequest {
            name: config.name.clone(),
            address: config.address.clone(),
            cpu_millis: config.cpu_millis,
            memory_mib: config.memory_mib,
            labels: config.labels.clone().into_iter().collect(),
        })
        .await
        .map_err(|s| format!("register: {}", s.message()))?
        .into_inner()
        .node_id;
    tracing::info!(server, node_id, "registered");
    // Everything must be reported again to a (possibly new) leader.
    node.reported.clear();
    let mut stream = client
        .watch_assignments(pb::WatchAssignmentsRequest { node_id })
        .await
        .map_err(|s| format!("watch assignments: {}", s.message()))?
        .into_inner();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut heartbeat = tokio::time::interval(config.heartbeat_interval);
    let mut check = tokio::time::interval(config.check_interval);
    loop {
        tokio::select! {
            message = stream.message() => match message.map_err(|s| format!("assignment stream: {}", s.message()))? {
                Some(assignments) => {
                    node.wanted = wanted_from(&assignments);
                    act(config, driver, node, &done_tx)?;
                }
                None => return Ok(()),
            },
            _ = heartbeat.tick() => {
                let known = client
                    .heartbeat(pb::HeartbeatRequest { node_id, metrics: Vec::new() })
                    .await
                    .map_err(|s| format!("heartbeat: {}", s.message()))?
                    .into_inner()
                    .known;
                if !known {
                    return Err("the server does not know this node any more; registering again".into());
                }
            }
            _ = check.tick() => {
                act(config, driver, node, &done_tx)?;
                report_changes(&mut client, node_id, driver, node).await?;
            }
            Some(done) = done_rx.recv() => {
                match done {
                    JobDone::Started { task, result: Err(reason) } => {
                        tracing::warn!(task, "start failed: {reason}");
                        node.failed.insert(task.clone(), reason);
                        node.busy.remove(&task);
                    }
                    JobDone::Started { task, result: Ok(pid) } => {
                        tracing::info!(task, pid, "task started");
                        node.busy.remove(&task);
                    }
                    JobDone::Stopped { task } => {
                        node.busy.remove(&task);
                    }
                }
                report_changes(&mut client, node_id, driver, node).await?;
            }
        }
    }
}

async fn connect(server: &str) -> std::result::Result<Channel, String> {
    Endpoint::from_shared(format!("http://{server}"))
        .map_err(|e| format!("bad server address {server:?}: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| format!("connect to {server}: {e}"))
}

/// The tasks an assignment message wants on this node.
fn wanted_from(assignments: &pb::Assignments) -> BTreeMap<String, Wanted> {
    assignments
        .assignments
        .iter()
        .map(|a| {
            let spec = a.spec.clone().unwrap_or_default();
            let image = if a.image_digest.is_empty() {
                spec.image.clone()
            } else {
                pin_digest(&spec.image, &a.image_digest)
            };
            let task = TaskSpec {
                id: a.task_id.clone(),
                image,
                command: (!spec.command.is_empty()).then(|| spec.command.clone()),
                env: spec.env.clone().into_iter().collect(),
                cpu_millis: spec.cpu_millis,
                memory_mib: spec.memory_mib,
                ports: spec.ports.iter().filter_map(|p| u16::try_from(*p).ok()).collect(),
            };
            let running = a.desired_state != sched_pb::DesiredState::Stopped as i32;
            (a.task_id.clone(), Wanted { spec: task, running })
        })
        .collect()
}

/// `repo:tag` + `sha256:...` -> `repo@sha256:...`: every node runs exactly the resolved image.
fn pin_digest(image: &str, digest: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    let repo = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    };
    format!("{repo}@{digest}")
}

/// What runs here now, as the plan sees it (tasks with jobs in flight count as running).
fn seen(driver: &TaskDriver, node: &NodeState) -> std::result::Result<BTreeMap<String, Seen>, String> {
    let mut out = BTreeMap::new();
    for id in driver.list().map_err(|e| e.to_string())? {
        let status = driver.status(&id).map_err(|e| e.to_string())?;
        let s = match status {
            _ if node.busy.contains(&id) => Seen::Running,
            TaskStatus::Running { .. } => Seen::Running,
            TaskStatus::Exited(exit) => Seen::Exited(exit.code),
            TaskStatus::Missing => continue,
        };
        out.insert(id, s);
    }
    for id in node.busy.iter().chain(node.failed.keys()) {
        out.entry(id.clone()).or_insert(Seen::Exited(-1));
    }
    Ok(out)
}

/// Starts background jobs for the plan's actions.
fn act(config: &AgentConfig, driver: &Arc<TaskDriver>, node: &mut NodeState, done: &mpsc::UnboundedSender<JobDone>) -> SessionResult {
    // Failed starts the servers no longer want are forgotten.
    node.failed.retain(|id, _| node.wanted.contains_key(id));
    let seen = seen(driver, node)?;
    for action in plan(&node.wanted, &seen) {
        match action {
            Action::Start(spec) => {
                node.busy.insert(spec.id.clone());
                let (driver, done) = (driver.clone(), done.clone());
                tokio::spawn(async move {
                    let result = driver.start(&spec, None).await.map_err(|e| e.to_string());
                    let _ = done.send(JobDone::Started { task: spec.id.clone(), result });
                });
            }
            Action::Stop(id) if !node.busy.contains(&id) => {
                node.busy.insert(id.clone());
                let (driver, done, grace) = (driver.clone(), done.clone(), config.stop_grace);
                tokio::spawn(async move {
                    if let Err(e) = driver.stop(&id, grace).await {
                        tracing::warn!(task = id, "stop failed: {e}");
                    }
                    let _ = done.send(JobDone::Stopped { task: id });
                });
            }
            Action::Stop(_) => {}
            Action::Remove(id) if !node.busy.contains(&id) => {
                if node.failed.remove(&id).is_none() {
                    if let Err(e) = driver.remove(&id) {
                        tracing::warn!(task = id, "remove failed: {e}");
                    }
                }
                node.reported.remove(&id);
            }
            Action::Remove(_) => {}
        }
    }
    Ok(())
}

/// Reports each task whose state changed since it was last reported.
async fn report_changes(client: &mut AgentApiClient<Channel>, node_id: u64, driver: &TaskDriver, node: &mut NodeState) -> SessionResult {
    let mut current: Vec<(String, Reported)> = Vec::new();
    for (id, reason) in &node.failed {
        current.push((id.clone(), Reported::Failed(reason.clone())));
    }
    for id in driver.list().map_err(|e| e.to_string())? {
        if node.busy.contains(&id) || !node.wanted.contains_key(&id) {
            continue;
        }
        match driver.status(&id).map_err(|e| e.to_string())? {
            TaskStatus::Running { pid } if pid > 0 => current.push((id, Reported::Running)),
            TaskStatus::Exited(exit) => current.push((id, Reported::Exited(exit.code))),
            _ => {}
        }
    }
    for (id, state) in current {
        if node.reported.get(&id) == Some(&state) {
            continue;
        }
        let (task_state, exit_code, message) = match &state {
            Reported::Running => (sched_pb::TaskState::Running, None, String::new()),
            Reported::Exited(code) => (sched_pb::TaskState::Exited, Some(*code), String::new()),
            Reported::Failed(reason) => (sched_pb::TaskState::Failed, None, reason.clone()),
        };
        client
            .report_task_status(pb::ReportTaskStatusRequest {
                node_id,
                task_id: id.clone(),
                state: task_state as i32,
                exit_code,
                endpoints: Vec::new(),
                health: sched_pb::HealthStatus::Unspecified as i32,
                message,
            })
            .await
            .map_err(|s| format!("report {id}: {}", s.message()))?;
        node.reported.insert(id, state);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::pin_digest;

    #[test]
    fn tags_are_replaced_by_the_resolved_digest() {
        let d = "sha256:abc";
        assert_eq!(pin_digest("127.0.0.1:5000/quotes:1.0", d), "127.0.0.1:5000/quotes@sha256:abc");
        assert_eq!(pin_digest("busybox", d), "busybox@sha256:abc");
        assert_eq!(pin_digest("localhost:5000/app", d), "localhost:5000/app@sha256:abc");
        assert_eq!(pin_digest("app@sha256:old", d), "app@sha256:abc");
    }
}
