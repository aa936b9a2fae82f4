//! Tasks on this node: what to run ([`TaskSpec`]), its OCI bundle ([`bundle`]), the host id
//! range of its user namespace ([`id_ranges`]), and the
//! [`TaskDriver`] that starts each task under a `sched-runtime shim`, stops it (stop signal,
//! grace period, then SIGKILL), reads its status, exit code and logs, and removes it.

pub mod bundle;
mod driver;
pub mod id_ranges;
mod spec;

pub use driver::{DriverConfig, TaskDriver, TaskStatus};
pub use id_ranges::{IdPool, IdRange};
pub use spec::{Seccomp, TaskSpec, UserNamespace};
