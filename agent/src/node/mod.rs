//! The node daemon: registers with the servers, heartbeats, watches its assignments and makes
//! the node match them ([`plan`]), reporting every task state change back, and removes the
//! images its tasks no longer use ([`image_gc`]).
//!
//! One concept per file:
//! - `daemon.rs`: [`run`] — opens what the node acts through and runs everything until shutdown.
//! - [`claims`]: what the agent manages alone on the host (data dir, cgroup parent, network),
//!   claimed by file locks so that a second agent is refused instead of reaping the first's.
//! - `connect.rs`: the connection to a server and the order servers are tried in.
//! - `session.rs`: one session per server connection (register, heartbeat, assignments, checks).
//! - `state.rs`: what the node remembers across sessions (`NodeState`).
//! - `assignments.rs`: assignments -> wanted tasks (image pinned to the resolved digest).
//! - [`plan`]: pure — the actions that move what runs towards what is wanted.
//! - `apply.rs`: what runs as the plan sees it, and what each action does.
//! - `task_jobs.rs`: starting, stopping, releasing and removing tasks (driver + network).
//! - `probes.rs`: health probes and the status they add up to.
//! - `task_metrics.rs`: the CPU and memory samples each heartbeat carries.
//! - `reports.rs`: `ReportTaskStatus` for every change.
//! - `census.rs`: what of the agent's is on the host (task dirs, containers, shims, cgroups,
//!   rootfs, task networks), by task id.
//! - [`reaper`]: pure — from the census and the tasks the node knows, what to remove or recover.
//! - `reaping.rs`: when the reaper runs, its claim on the tasks it works on, its job.
//! - `wire.rs`: the node's types to and from the agent protocol, in one place.
//! - [`image_gc`]: the image collector.

mod apply;
mod assignments;
mod census;
pub mod claims;
mod config;
pub(crate) mod connect;
pub mod credentials;
mod daemon;
pub mod image_gc;
pub mod plan;
mod probes;
pub mod reaper;
mod reaping;
mod reports;
mod session;
mod state;
mod task_jobs;
mod task_metrics;
mod wire;

pub use config::{AgentConfig, DEFAULT_CGROUP_PARENT};
pub use credentials::NodeCredentials;
pub use daemon::run;
pub use image_gc::ImageGcPolicy;
pub use wire::UnsupportedHealthCheck;
