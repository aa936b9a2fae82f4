//! The node daemon: registers with the servers, heartbeats, watches its assignments and makes
//! the node match them ([`plan`]), reporting every task state change back.

mod config;
pub(crate) mod connect;
mod daemon;
pub mod plan;

pub use config::{AgentConfig, DEFAULT_CGROUP_PARENT};
pub use daemon::run;
