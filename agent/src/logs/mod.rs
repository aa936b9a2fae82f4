//! Task logs on the node, and the agent's own API that serves them to the servers.
//!
//! Each task's shim writes what the task prints to stdout and stderr into a size-bounded log in
//! the task dir (`<data dir>/tasks/<task>/logs/task.log`, rotated once into `task.log.1`; see
//! `runtime::shim::log`). [`reader`] reads it back (tail, since, follow across rotations);
//! [`api`] serves `agent.v1.TaskLogApi` on `sched-agent --api-listen`, which the servers call for
//! `sched logs` (as the API server calls the kubelet for `kubectl logs`).

pub mod api;
pub mod reader;

pub use api::{DEFAULT_API_PORT, DEFAULT_MAX_FOLLOWS, TaskLogService, advertised_address, default_api_listen, serve};
pub use reader::{LogQuery, LogSink, read_log};
