//! The node daemon: registers with the servers, heartbeats, watches its assignments and makes
//! the node match them ([`plan`]), reporting every task state change back, and removes the
//! images its tasks no longer use ([`image_gc`]).

mod config;
pub(crate) mod connect;
mod daemon;
pub mod image_gc;
pub mod plan;

pub use config::{AgentConfig, DEFAULT_CGROUP_PARENT};
pub use daemon::run;
pub use image_gc::ImageGcPolicy;
