//! `sched.v1.LogApi`: task logs, read from the nodes that ran the tasks.
//!
//! Any server answers. It finds the service's tasks (or the one task asked for) in its local copy
//! of the state, without a ReadIndex round, so logs stay readable while the cluster has no leader,
//! and calls each task's node agent (`agent.v1.TaskLogApi` at the node's registered
//! `api_address`), tagging each line with its task id and node name:
//! - without `follow`, task after task (in id order), each task's lines together;
//! - with `follow`, every task's stream at once, merged as lines arrive; for a whole service the
//!   task list is re-read every [`DISCOVER_EVERY`], so tasks started later (replacements, scale
//!   out) join the stream with all their lines. The stream then lasts until the client cancels
//!   (as `docker service logs -f`); following one task ends with its container (as `kubectl
//!   logs -f`).
//!
//! A node that cannot be reached (down, partitioned, an agent without an API) gives one line
//! with `error` set naming the node and the cause, after at most the connect timeout of
//! [`transport::Profile::SERVER_TO_AGENT`] (2 s); the other tasks' lines still come. A client
//! that goes away cancels the node calls.

use crate::error_chain::source_chain;
use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use proto::agent::v1::TaskLogsRequest;
use proto::agent::v1::task_log_api_client::TaskLogApiClient;
use proto::sched::v1::log_api_server::LogApi;
use proto::sched::v1::{LogLine, LogsRequest};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::raft::Consensus;
use crate::state::{ClusterState, Node, NodeStatus, Task, TaskState};

/// How often a service's task list is re-read while following it.
pub const DISCOVER_EVERY: Duration = Duration::from_secs(1);
/// Lines buffered between the node streams and the client.
const CHANNEL_LINES: usize = 256;

pub struct LogApiService {
    consensus: Arc<Consensus>,
    /// How connections to the node agents are made (security, timeouts).
    connections: transport::Transport,
}

impl LogApiService {
    pub fn new(consensus: Arc<Consensus>, connections: transport::Transport) -> Self {
        LogApiService { consensus, connections }
    }
}

/// One task whose log is read, and where.
#[derive(Clone, Debug, PartialEq)]
struct Target {
    task_id: String,
    node_name: String,
    api_address: String,
    node_down: bool,
}

/// Why a node's stream could not be opened.
enum OpenError {
    /// The node has no log of the task (never ran there, or removed).
    NotFound(String),
    /// The node could not be reached or failed.
    Unreachable(String),
}

type Lines = mpsc::Sender<Result<LogLine, Status>>;
type LineStream = Pin<Box<dyn Stream<Item = Result<LogLine, Status>> + Send>>;

/// Tasks whose log is on a node: running, exited, or lost with their node.
fn has_log(task: &Task) -> bool {
    task.node_id != 0 && matches!(task.observed, TaskState::Running | TaskState::Exited | TaskState::Lost)
}

fn target(node: Option<&Node>, task: &Task) -> Target {
    Target {
        task_id: task.id.clone(),
        node_name: node.map_or_else(|| format!("#{}", task.node_id), |n| n.name.clone()),
        api_address: node.map(|n| n.api_address.clone()).unwrap_or_default(),
        node_down: node.is_some_and(|n| n.status == NodeStatus::Down),
    }
}

/// The task `id` names in `service` (looked up by `task`): its full id, or the id without the
/// leading "SERVICE-".
fn find_task<'a>(task: impl Fn(&str) -> Option<&'a Task>, service: &str, id: &str) -> Option<&'a Task> {
    task(id).or_else(|| task(&format!("{service}-{id}"))).filter(|t| t.service == service)
}

/// The targets of a service now, in task id order.
fn service_targets(state: &ClusterState, service: &str) -> Vec<Target> {
    targets_of(state.tasks_of(service), |id| state.node(id))
}

/// The tasks with a log on a node, in id order, with their nodes (looked up by `node`).
fn targets_of<'a>(tasks: impl Iterator<Item = &'a Task>, node: impl Fn(u64) -> Option<&'a Node>) -> Vec<Target> {
    let mut tasks: Vec<&Task> = tasks.filter(|t| has_log(t)).collect();
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    tasks.into_iter().map(|t| target(node(t.node_id), t)).collect()
}

/// A line that says why a task's log could not be read.
fn error_line(target: &Target, error: String) -> LogLine {
    LogLine { task_id: target.task_id.clone(), node: target.node_name.clone(), error, ..Default::default() }
}

/// Opens the task's log stream on its node.
async fn open(connections: &transport::Transport, target: &Target, request: TaskLogsRequest) -> Result<Streaming<LogLine>, OpenError> {
    let node = &target.node_name;
    let down = if target.node_down { " (the node is down)" } else { "" };
    if target.api_address.is_empty() {
        return Err(OpenError::Unreachable(format!(
            "node {node} registered no agent API address{down}: its agent predates `sched logs`; upgrade and restart it"
        )));
    }
    // Pings every 10 s: a node that vanishes mid-stream (power, partition) ends the stream
    // instead of hanging it.
    let channel = connections.connect(&target.api_address, transport::Profile::SERVER_TO_AGENT).await.map_err(|e| match e {
        transport::TransportError::Address(e) => {
            OpenError::Unreachable(format!("node {node} registered a bad agent API address {:?}: {e}", target.api_address))
        }
        e => OpenError::Unreachable(format!("cannot reach node {node} at {}{down}: {}", target.api_address, source_chain(&e))),
    })?;
    match TaskLogApiClient::new(channel).logs(request).await {
        Ok(response) => Ok(response.into_inner()),
        Err(s) if s.code() == tonic::Code::NotFound => Err(OpenError::NotFound(format!("node {node}: {}", s.message()))),
        Err(s) => Err(OpenError::Unreachable(format!(
            "node {node} at {} refused the log of task {}: {}",
            target.api_address,
            target.task_id,
            s.message()
        ))),
    }
}

/// Copies one node stream into `out`, tagging lines; false when the client went away.
async fn forward(target: &Target, mut stream: Streaming<LogLine>, out: &Lines) -> bool {
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            () = out.closed() => return false,
        };
        let line = match message {
            Ok(Some(mut line)) => {
                line.task_id = target.task_id.clone();
                line.node = target.node_name.clone();
                line
            }
            Ok(None) => return true,
            Err(s) => error_line(
                target,
                format!("the log stream of task {} from node {} broke: {}", target.task_id, target.node_name, s.message()),
            ),
        };
        let broke = !line.error.is_empty();
        if out.send(Ok(line)).await.is_err() {
            return false;
        }
        if broke {
            return true;
        }
    }
}

/// Opens and forwards one task's log; a node that cannot be reached becomes an error line, a
/// node without the log nothing. False when the client went away.
async fn read_task(connections: transport::Transport, target: Target, request: TaskLogsRequest, out: Lines) -> bool {
    match open(&connections, &target, request).await {
        Ok(stream) => forward(&target, stream, &out).await,
        Err(OpenError::NotFound(reason)) => {
            tracing::debug!(task = target.task_id, "no log to read: {reason}");
            true
        }
        Err(OpenError::Unreachable(reason)) => out.send(Ok(error_line(&target, reason))).await.is_ok(),
    }
}

impl LogApiService {
    /// Follows a whole service: every task's stream at once, and tasks that appear later.
    async fn follow_service(
        consensus: Arc<Consensus>,
        connections: transport::Transport,
        service: String,
        first: Vec<Target>,
        request: TaskLogsRequest,
        out: Lines,
    ) {
        let mut seen: HashSet<String> = HashSet::new();
        let mut targets = first;
        let mut request = request;
        loop {
            for target in targets {
                if seen.insert(target.task_id.clone()) {
                    let request = TaskLogsRequest { task_id: target.task_id.clone(), ..request.clone() };
                    tokio::spawn(read_task(connections.clone(), target, request, out.clone()));
                }
            }
            // Tasks found later are new: all of their lines, not a tail.
            request.tail = None;
            tokio::select! {
                () = tokio::time::sleep(DISCOVER_EVERY) => {}
                () = out.closed() => return,
            }
            let now = {
                let applied = consensus.raft().state();
                applied.state.service(&service).map(|_| service_targets(&applied.state, &service))
            };
            // A deleted service: its running streams end with their tasks.
            let Some(now) = now else { return };
            targets = now;
        }
    }
}

#[tonic::async_trait]
impl LogApi for LogApiService {
    type LogsStream = LineStream;

    async fn logs(&self, request: Request<LogsRequest>) -> Result<Response<LineStream>, Status> {
        let r = request.into_inner();
        if r.service.is_empty() {
            return Err(Status::invalid_argument("`service` is required: the name of the service whose logs to show"));
        }
        let node_request = TaskLogsRequest { task_id: String::new(), follow: r.follow, tail: r.tail, since_unix_ms: r.since_unix_ms };
        let (one, all) = {
            let applied = self.consensus.raft().state();
            let state = &applied.state;
            if state.service(&r.service).is_none() {
                return Err(Status::not_found(format!("no service named {:?} (sched get services lists them)", r.service)));
            }
            if r.task_id.is_empty() {
                (None, service_targets(state, &r.service))
            } else {
                let task = find_task(|id| state.task(id), &r.service, &r.task_id).ok_or_else(|| {
                    Status::not_found(format!(
                        "service {} has no task {:?} (sched get tasks --service {} lists them)",
                        r.service, r.task_id, r.service
                    ))
                })?;
                if task.node_id == 0 {
                    return Err(Status::failed_precondition(format!("task {} is not placed on a node yet: it has no log", task.id)));
                }
                (Some(target(state.node(task.node_id), task)), Vec::new())
            }
        };
        let (tx, rx) = mpsc::channel(CHANNEL_LINES);
        match one {
            Some(target) => {
                let request = TaskLogsRequest { task_id: target.task_id.clone(), ..node_request };
                match open(&self.connections, &target, request).await {
                    Ok(stream) => {
                        tokio::spawn(async move { forward(&target, stream, &tx).await });
                    }
                    Err(OpenError::NotFound(reason)) => {
                        return Err(Status::not_found(format!("task {} has no log: {reason}", target.task_id)));
                    }
                    Err(OpenError::Unreachable(reason)) => {
                        let _ = tx.send(Ok(error_line(&target, reason))).await;
                    }
                }
            }
            None if r.follow => {
                tokio::spawn(Self::follow_service(
                    self.consensus.clone(),
                    self.connections.clone(),
                    r.service.clone(),
                    all,
                    node_request,
                    tx,
                ));
            }
            None => {
                let connections = self.connections.clone();
                tokio::spawn(async move {
                    for target in all {
                        let request = TaskLogsRequest { task_id: target.task_id.clone(), ..node_request.clone() };
                        if !read_task(connections.clone(), target, request, tx.clone()).await {
                            return;
                        }
                    }
                });
            }
        }
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|line| (line, rx)) });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn node(id: u64, name: &str, api_address: &str) -> Node {
        Node {
            id,
            name: name.into(),
            address: "10.0.0.1".into(),
            api_address: api_address.into(),
            cpu_millis: 1000,
            memory_mib: 1024,
            labels: BTreeMap::new(),
            status: NodeStatus::Ready,
            registered_ms: 1,
            status_ms: 1,
        }
    }

    fn task(id: &str, service: &str, node_id: u64, observed: TaskState) -> Task {
        Task {
            id: id.into(),
            service: service.into(),
            revision: 1,
            node_id,
            desired: crate::state::DesiredState::Running,
            observed,
            endpoints: vec![],
            exit_code: None,
            health: crate::state::HealthStatus::Unknown,
            message: String::new(),
            created_ms: 1,
            updated_ms: 1,
            drain_until_ms: 0,
        }
    }

    #[test]
    fn a_service_reads_the_tasks_that_ran_on_a_node_in_id_order() {
        let nodes = [node(1, "n1", "10.0.0.1:7071"), node(2, "n2", "")];
        let tasks = [
            task("web-1-9-2", "web", 2, TaskState::Exited),
            task("web-1-9-1", "web", 1, TaskState::Running),
            task("web-1-9-3", "web", 0, TaskState::Pending),
            task("web-1-9-4", "web", 1, TaskState::Preparing),
            task("web-1-9-5", "web", 3, TaskState::Lost),
        ];
        let targets = targets_of(tasks.iter(), |id| nodes.iter().find(|n| n.id == id));
        let ids: Vec<&str> = targets.iter().map(|t| t.task_id.as_str()).collect();
        assert_eq!(ids, ["web-1-9-1", "web-1-9-2", "web-1-9-5"]);
        assert_eq!((targets[0].node_name.as_str(), targets[0].api_address.as_str()), ("n1", "10.0.0.1:7071"));
        assert_eq!(targets[1].api_address, "", "n2 registered none");
        assert_eq!(targets[2].node_name, "#3", "a node the state no longer has");
    }

    #[test]
    fn a_task_is_found_by_its_full_or_short_id_within_its_service_only() {
        let tasks = [task("web-1-9-1", "web", 1, TaskState::Running), task("api-1-9-1", "api", 1, TaskState::Running)];
        let lookup = |id: &str| tasks.iter().find(|t| t.id == id);
        assert_eq!(find_task(lookup, "web", "web-1-9-1").map(|t| t.id.as_str()), Some("web-1-9-1"));
        assert_eq!(find_task(lookup, "web", "1-9-1").map(|t| t.id.as_str()), Some("web-1-9-1"));
        assert!(find_task(lookup, "web", "api-1-9-1").is_none(), "another service's task");
        assert!(find_task(lookup, "web", "nope").is_none());
    }

    #[tokio::test]
    async fn a_node_without_an_api_address_gives_an_error_line_naming_it() {
        let target = Target { task_id: "web-1".into(), node_name: "n2".into(), api_address: String::new(), node_down: true };
        let (tx, mut rx) = mpsc::channel(4);
        assert!(read_task(transport::Transport::plaintext(), target, TaskLogsRequest::default(), tx).await);
        let line = rx.recv().await.unwrap().unwrap();
        assert_eq!(line.task_id, "web-1");
        assert!(line.error.contains("node n2") && line.error.contains("the node is down"), "{}", line.error);
    }

    #[tokio::test]
    async fn an_unreachable_node_gives_an_error_line_quickly() {
        // A port nothing listens on: connection refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let target = Target { task_id: "web-1".into(), node_name: "n1".into(), api_address: format!("127.0.0.1:{port}"), node_down: false };
        let (tx, mut rx) = mpsc::channel(4);
        let started = std::time::Instant::now();
        assert!(read_task(transport::Transport::plaintext(), target, TaskLogsRequest::default(), tx).await);
        let line = rx.recv().await.unwrap().unwrap();
        assert!(line.error.contains("cannot reach node n1"), "{}", line.error);
        assert!(started.elapsed() <= transport::Profile::SERVER_TO_AGENT.connect_timeout + Duration::from_secs(1));
    }
}
