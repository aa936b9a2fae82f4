//! `sched-agent`: the node daemon.
//!
//! It will own everything that happens on one node: registering with the servers, heartbeats,
//! receiving task assignments on a watch stream, running tasks through the `runtime` crate,
//! task networking (netns, veth, bridge, published ports), health checks, logs, CPU metrics read
//! from cgroups, and the HTTP ingress when asked to run it. It never decides placement.
//!
//! - [`crash_point`]: where a crash test may have the agent kill itself (unarmed outside tests).
//! - [`health`]: HTTP, TCP and command health checks and the status they add up to.
//! - [`ingress_node`]: the node's ingress (the `ingress` crate) fed with the servers' routes.
//! - [`logs`]: reading tasks' bounded logs (tail, since, follow) and the agent API that serves
//!   them to the servers (`agent.v1.TaskLogApi`, for `sched logs`).
//! - [`metrics`]: task CPU (fraction of its limit) and memory, from its cgroup.
//! - [`network`]: node bridge, task namespaces and addresses, outbound NAT, published ports.
//! - [`node`]: the daemon loop: register, heartbeat, follow assignments, act, report.
//! - [`task`]: runs each task as a container under its own `sched-runtime shim` (image, rootfs,
//!   bundle, limits, stop with grace, exit codes and logs that survive agent restarts).

pub mod crash_point;
pub mod error;
pub mod health;
pub mod ingress_node;
pub mod logs;
pub mod metrics;
pub mod network;
pub mod node;
pub mod task;

pub use error::{AgentError, Result};
