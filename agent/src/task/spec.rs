//! What the agent runs for one task: the parts of a service spec a node needs, in the agent's
//! own terms (decoupled from the wire types, so the driver is testable without a server).

use std::collections::BTreeMap;

/// One task to run.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// Unique task id (also the container id).
    pub id: String,
    /// Image reference, ideally pinned by digest (`repo@sha256:...`).
    pub image: String,
    /// Replaces the image's entrypoint and cmd when set.
    pub command: Option<Vec<String>>,
    /// Environment overrides (`KEY` -> `VALUE`).
    pub env: BTreeMap<String, String>,
    /// CPU limit in millicores (1000 = one core); 0 means no limit.
    pub cpu_millis: u32,
    /// Memory limit in MiB; 0 means no limit.
    pub memory_mib: u32,
    /// Container ports (TCP) the task serves on.
    pub ports: Vec<u16>,
    /// The health check, if the service has one.
    pub health: Option<crate::health::HealthSpec>,
    /// The seccomp profile the task runs under.
    pub seccomp: Seccomp,
    /// The user namespace the task runs in.
    pub userns: UserNamespace,
}

/// A task's user namespace (the service's `[security] userns`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UserNamespace {
    /// Its own, mapping container ids 0-65535 onto a range of host ids no other task of the
    /// node holds ([`super::id_ranges`]).
    #[default]
    Auto,
    /// The host's: root in the task is root on the host. Only for services that opted out.
    Host,
}

/// A task's seccomp profile (the service's `[security] seccomp`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Seccomp {
    /// Docker's default profile ([`runtime::default_seccomp`]).
    #[default]
    Default,
    /// No filter: only for services that opted out explicitly.
    Unconfined,
}
