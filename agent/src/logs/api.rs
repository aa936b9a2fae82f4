//! `agent.v1.TaskLogApi`: a task's log, served by the agent to the servers.
//!
//! Each call reads on a thread of its own ([`super::reader`]) and hands lines to the response
//! stream through a small channel, so a slow caller slows only its reader. A caller that goes
//! away closes the channel, and its reader stops within one poll. Following ends when the
//! task's container has exited (its shim wrote `exit.json` after the last line) or nothing of
//! the task is left on the node, as `kubectl logs -f` ends with its container.
//!
//! A follow can last for hours, so follows run on threads of their own, never on tokio's
//! blocking pool (which task starts, image pulls and probes need: 512 follows used to fill it
//! and stall every start), and at most `max_follows` at once: one more is refused with
//! `RESOURCE_EXHAUSTED` (gRPC's 429) naming the limit. Reads without follow end on their own
//! (logs are size-bounded) and stay on the blocking pool.
//!
//! The API binds the node's address by default (`sched-agent --address`, where the servers
//! reach it), not every address, and the node's nftables table drops what tasks send to the
//! node's own addresses (see `crate::network`), so a task cannot read other tasks' logs.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use proto::agent::v1::TaskLogsRequest;
use proto::agent::v1::task_log_api_server::{TaskLogApi, TaskLogApiServer};
use proto::sched::v1::{LogLine, LogStream};
use runtime::shim::{self, log::LogRecord};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tonic::{Request, Response, Status};

use super::reader::{LogQuery, LogSink, read_log};
use crate::task::{TaskDriver, TaskStatus};

/// The agent API's port unless told otherwise (the servers' default port is 7700); it listens
/// on the node's address (`sched-agent --address`).
pub const DEFAULT_API_PORT: u16 = 7071;

/// Log follows served at once unless told otherwise (`sched-agent --max-log-follows`).
pub const DEFAULT_MAX_FOLLOWS: usize = 64;

/// Where the agent API listens by default: the node's address, port [`DEFAULT_API_PORT`].
pub fn default_api_listen(node_address: &str) -> String {
    match node_address.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, DEFAULT_API_PORT).to_string(),
        Err(_) => format!("{node_address}:{DEFAULT_API_PORT}"),
    }
}

/// Lines buffered per call between the reader thread and the response stream.
const CHANNEL_LINES: usize = 256;

/// Serves the logs of the tasks `driver` runs.
pub struct TaskLogService {
    driver: Arc<TaskDriver>,
    /// One permit per follow in progress; a follow without one is refused.
    follows: Arc<Semaphore>,
    max_follows: usize,
}

impl TaskLogService {
    pub fn new(driver: Arc<TaskDriver>, max_follows: usize) -> TaskLogService {
        TaskLogService { driver, follows: Arc::new(Semaphore::new(max_follows)), max_follows }
    }
}

/// Serves `agent.v1.TaskLogApi` on `listener` with `connections`' security until the future is
/// dropped, with at most `max_follows` follows at once. Only the servers may call it: a log
/// holds whatever a task prints, and the servers check who asks (`sched logs` needs a reader).
pub async fn serve(
    connections: &transport::Transport,
    listener: TcpListener,
    driver: Arc<TaskDriver>,
    max_follows: usize,
) -> Result<(), crate::AgentError> {
    let incoming = connections.incoming(listener).map_err(crate::AgentError::Transport)?;
    connections
        .server()
        .layer(transport::AuthorizeLayer::new(Arc::new(ServersOnly)))
        .add_service(TaskLogApiServer::new(TaskLogService::new(driver, max_follows)))
        .serve_with_incoming(incoming)
        .await
        .map_err(|e| crate::AgentError::Api(format!("stopped serving: {e}")))
}

/// The agent API's rule: servers of this cluster only.
struct ServersOnly;

impl transport::Policy for ServersOnly {
    fn check(&self, _method: &str, caller: Option<&transport::Caller>) -> Result<(), Status> {
        match caller {
            Some(caller) if caller.identity.role() == pki::Role::Server => Ok(()),
            Some(caller) => Err(Status::permission_denied(format!(
                "the agent API answers only the servers, not {} (ask a server: `sched logs`)",
                caller.identity
            ))),
            None => Err(Status::unauthenticated("the agent API answers only the servers of its cluster, with their certificates")),
        }
    }
}

/// The address the servers should call: the bound address, with an unspecified IP (0.0.0.0)
/// replaced by the node's `address` (where its published ports are reached too).
pub fn advertised_address(bound: SocketAddr, node_address: &str) -> String {
    if bound.ip().is_unspecified() {
        match node_address.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, bound.port()).to_string(),
            Err(_) => format!("{node_address}:{}", bound.port()),
        }
    } else {
        bound.to_string()
    }
}

/// The wire form of a record.
pub fn log_line(record: LogRecord) -> LogLine {
    let stream = match record.stream.as_str() {
        "stderr" => LogStream::Stderr,
        _ => LogStream::Stdout,
    };
    LogLine { stream: stream as i32, time: record.time, text: record.line, ..Default::default() }
}

/// Sends lines into the response channel; knows whether the task has finished.
struct ChannelSink {
    tx: mpsc::Sender<Result<LogLine, Status>>,
    driver: Arc<TaskDriver>,
    task: String,
}

impl LogSink for ChannelSink {
    fn line(&mut self, record: LogRecord) -> bool {
        self.tx.blocking_send(Ok(log_line(record))).is_ok()
    }

    fn gone(&self) -> bool {
        self.tx.is_closed()
    }

    fn finished(&self) -> bool {
        match self.driver.status(&self.task) {
            Ok(TaskStatus::Running { .. }) => false,
            Ok(TaskStatus::Exited(_) | TaskStatus::Missing) => true,
            Err(e) => {
                tracing::warn!(task = self.task, "cannot tell whether the task runs ({e}); ending its log stream");
                true
            }
        }
    }
}

type LineStream = Pin<Box<dyn Stream<Item = Result<LogLine, Status>> + Send>>;

#[tonic::async_trait]
impl TaskLogApi for TaskLogService {
    type LogsStream = LineStream;

    async fn logs(&self, request: Request<TaskLogsRequest>) -> Result<Response<LineStream>, Status> {
        let r = request.into_inner();
        runtime::state::validate_id(&r.task_id).map_err(|e| Status::invalid_argument(format!("`task_id`: {e}")))?;
        let task_dir = self.driver.task_dir(&r.task_id);
        if !task_dir.is_dir() {
            return Err(Status::not_found(format!("task {} has no log on this node (never ran here, or was removed)", r.task_id)));
        }
        let query = LogQuery { follow: r.follow, tail: r.tail.map(|t| t as usize), since_unix_ms: r.since_unix_ms };
        let permit = if r.follow {
            Some(self.follows.clone().try_acquire_owned().map_err(|_| {
                Status::resource_exhausted(format!(
                    "this node already serves {} log follows, its limit (sched-agent --max-log-follows); \
                     try again when one ends, or read without following",
                    self.max_follows
                ))
            })?)
        } else {
            None
        };
        let (tx, rx) = mpsc::channel(CHANNEL_LINES);
        let mut sink = ChannelSink { tx: tx.clone(), driver: self.driver.clone(), task: r.task_id.clone() };
        let log_dir = task_dir.join(shim::LOG_DIR);
        let read = move || {
            if let Err(e) = read_log(&log_dir, &query, &mut sink) {
                let _ = tx.blocking_send(Err(Status::internal(format!("reading {}: {e}", log_dir.display()))));
            }
            drop(permit);
        };
        if r.follow {
            std::thread::Builder::new()
                .name("log-follow".into())
                .spawn(read)
                .map_err(|e| Status::resource_exhausted(format!("cannot start a thread to follow the log: {e}")))?;
        } else {
            tokio::task::spawn_blocking(read);
        }
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|line| (line, rx)) });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_listens_on_the_node_address_by_default() {
        for (address, want) in
            [("10.0.0.5", "10.0.0.5:7071"), ("127.0.0.1", "127.0.0.1:7071"), ("::1", "[::1]:7071"), ("node1.lan", "node1.lan:7071")]
        {
            assert_eq!(default_api_listen(address), want);
        }
    }

    #[test]
    fn an_unspecified_bind_is_advertised_as_the_node_address() {
        assert_eq!(advertised_address("0.0.0.0:7071".parse().unwrap(), "10.0.0.5"), "10.0.0.5:7071");
        assert_eq!(advertised_address("10.0.0.5:7071".parse().unwrap(), "10.0.0.6"), "10.0.0.5:7071");
    }
}
