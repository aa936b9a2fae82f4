//! Tasks on this node: what to run ([`TaskSpec`]), its OCI bundle ([`bundle`]), and the
//! [`TaskDriver`] that starts each task under a `sched-runtime shim`, stops it (stop signal,
//! grace period, then SIGKILL), reads its status, exit code and logs, and removes it.

pub mod bundle;
mod driver;
mod spec;

pub use driver::{DriverConfig, TaskDriver, TaskStatus};
pub use spec::{Seccomp, TaskSpec};
