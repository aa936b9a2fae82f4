//! `agent.v1.TaskLogApi`: a task's log, served by the agent to the servers.
//!
//! Each call reads on a blocking thread ([`super::reader`]) and hands lines to the response
//! stream through a small channel, so a slow caller slows only its reader. A caller that goes
//! away closes the channel, and its reader stops within one poll. Following ends when the
//! task's container has exited (its shim wrote `exit.json` after the last line) or nothing of
//! the task is left on the node, as `kubectl logs -f` ends with its container.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use proto::agent::v1::TaskLogsRequest;
use proto::agent::v1::task_log_api_server::{TaskLogApi, TaskLogApiServer};
use proto::sched::v1::{LogLine, LogStream};
use runtime::shim::{self, log::LogRecord};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use super::reader::{LogQuery, LogSink, read_log};
use crate::task::{TaskDriver, TaskStatus};

/// Where the agent API listens unless told otherwise (the servers' default port is 7700).
pub const DEFAULT_API_LISTEN: &str = "0.0.0.0:7071";

/// Lines buffered per call between the reader thread and the response stream.
const CHANNEL_LINES: usize = 256;

/// Serves the logs of the tasks `driver` runs.
pub struct TaskLogService {
    driver: Arc<TaskDriver>,
}

impl TaskLogService {
    pub fn new(driver: Arc<TaskDriver>) -> TaskLogService {
        TaskLogService { driver }
    }
}

/// Serves `agent.v1.TaskLogApi` on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, driver: Arc<TaskDriver>) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder().add_service(TaskLogApiServer::new(TaskLogService::new(driver))).serve_with_incoming(incoming).await
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
        let (tx, rx) = mpsc::channel(CHANNEL_LINES);
        let mut sink = ChannelSink { tx: tx.clone(), driver: self.driver.clone(), task: r.task_id.clone() };
        let log_dir = task_dir.join(shim::LOG_DIR);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = read_log(&log_dir, &query, &mut sink) {
                let _ = tx.blocking_send(Err(Status::internal(format!("reading {}: {e}", log_dir.display()))));
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|line| (line, rx)) });
        Ok(Response::new(Box::pin(stream)))
    }
}
