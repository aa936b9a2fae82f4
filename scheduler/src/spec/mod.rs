//! The service spec: what a developer declares in `service.toml` and sends with `Apply`.
//!
//! [`ServiceSpec`] is the domain type the state machine stores in every revision. It is built
//! either from a TOML file ([`parse_service_toml`], errors carry line and column) or from a gRPC
//! `sched.v1.ServiceSpec` ([`ServiceSpec::from_proto`]); both paths end in the same
//! [`validate`], so a request that bypasses the CLI is held to the same rules.

mod convert;
mod duration;
mod toml_file;
pub(crate) mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use duration::{format_duration_ms, parse_duration_ms};
pub use toml_file::{SpecFileError, parse_service_toml};
pub use validate::{FieldError, check_label, validate};

/// CPU limit given when the file sets none, in millicores.
pub const DEFAULT_CPU_MILLIS: u32 = 100;
/// Memory limit given when the file sets none, in MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 64;

/// One version of a service's declaration. Equality decides whether an apply makes a new
/// revision, so every field is part of it (maps are ordered to keep that deterministic).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint and cmd when not empty.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cpu_millis: u32,
    pub memory_mib: u32,
    /// Container TCP ports.
    pub ports: Vec<u16>,
    pub count: u32,
    pub autoscale: Option<Autoscale>,
    pub health: Option<HealthCheck>,
    pub deploy: Deploy,
    pub routes: Vec<Route>,
    /// Node labels a node must have to run this service's tasks (all must match exactly).
    /// Defaulted so Raft log entries and snapshots written before the field existed decode.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub constraints: BTreeMap<String, String>,
    /// How long a task that is going to stop keeps serving the requests the ingresses already
    /// sent it, after it left every target group (ALB's deregistration delay). Only services
    /// with routes drain. Defaulted for log entries written before it existed.
    #[serde(default = "default_drain_ms", skip_serializing_if = "is_default_drain_ms")]
    pub drain_ms: u64,
    /// How the tasks are confined beyond namespaces and cgroups (`[security]`). Defaulted for
    /// log entries written before it existed; not written when default (older servers read it).
    #[serde(default, skip_serializing_if = "Security::is_default")]
    pub security: Security,
}

/// The `[security]` table: confinement a service may relax, explicitly.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    /// The seccomp profile of every task.
    #[serde(default)]
    pub seccomp: Seccomp,
    /// The user namespace of every task.
    #[serde(default, skip_serializing_if = "UserNamespace::is_auto")]
    pub userns: UserNamespace,
}

/// Which user namespace a task runs in (podman's `--userns=...` words).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserNamespace {
    /// Its own, with 65,536 host ids of its own: root in the task is an unprivileged host id.
    #[default]
    Auto,
    /// The host's: root in the task is root on the host.
    Host,
}

impl UserNamespace {
    /// The word used in `service.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            UserNamespace::Auto => "auto",
            UserNamespace::Host => "host",
        }
    }

    /// The value of a `security.userns` word, `None` if it is none of them.
    pub fn parse(word: &str) -> Option<UserNamespace> {
        [UserNamespace::Auto, UserNamespace::Host].into_iter().find(|s| s.as_str() == word)
    }

    fn is_auto(&self) -> bool {
        *self == UserNamespace::Auto
    }
}

impl Security {
    fn is_default(&self) -> bool {
        *self == Security::default()
    }
}

/// Which seccomp profile a task runs under (Docker's `--security-opt seccomp=...` words).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Seccomp {
    /// Docker's default profile: an allow list, everything else fails with EPERM.
    #[default]
    Default,
    /// No seccomp filter at all.
    Unconfined,
}

impl Seccomp {
    /// The word used in `service.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Seccomp::Default => "default",
            Seccomp::Unconfined => "unconfined",
        }
    }

    /// The value of a `security.seccomp` word, `None` if it is none of them.
    pub fn parse(word: &str) -> Option<Seccomp> {
        [Seccomp::Default, Seccomp::Unconfined].into_iter().find(|s| s.as_str() == word)
    }
}

/// A stopping task's drain time when the file sets none (ALB's default is 300 s; tasks here
/// answer in milliseconds).
pub const DEFAULT_DRAIN_MS: u64 = 5_000;
/// How long the ingress waits for a target's answer when the route sets no timeout (ALB's
/// idle timeout).
pub const DEFAULT_ROUTE_TIMEOUT_MS: u64 = 60_000;

fn default_drain_ms() -> u64 {
    DEFAULT_DRAIN_MS
}

fn default_route_timeout_ms() -> u64 {
    DEFAULT_ROUTE_TIMEOUT_MS
}

// Defaults are not written, so a spec that uses them encodes exactly as before they existed
// (older servers read it).
fn is_default_drain_ms(ms: &u64) -> bool {
    *ms == DEFAULT_DRAIN_MS
}

fn is_default_route_timeout_ms(ms: &u64) -> bool {
    *ms == DEFAULT_ROUTE_TIMEOUT_MS
}

/// Bounds and target of the CPU autoscaler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Autoscale {
    pub min: u32,
    pub max: u32,
    pub target_cpu_percent: u32,
    pub scale_out_cooldown_ms: u64,
    pub scale_in_cooldown_ms: u64,
}

/// How a task's health is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthKind {
    Http,
    Tcp,
    Cmd,
}

/// A health probe and its timing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub kind: HealthKind,
    /// HTTP only: the request path.
    pub path: String,
    /// HTTP and TCP: the container port probed.
    pub port: u16,
    /// CMD only: run inside the container; exit 0 is healthy.
    pub command: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    /// Failures during this time after start do not count.
    pub grace_ms: u64,
}

/// Rolling deployment bounds, as percentages of the desired count (ECS semantics).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deploy {
    pub min_healthy_percent: u32,
    pub max_percent: u32,
}

impl Default for Deploy {
    fn default() -> Self {
        Deploy { min_healthy_percent: 100, max_percent: 200 }
    }
}

/// An ingress rule: requests for `host` (any host when empty; `*.example.com` for any host
/// under example.com) under `path_prefix` (whole segments) go to the container port `port` of
/// healthy tasks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub path_prefix: String,
    pub host: String,
    pub port: u16,
    /// The longest wait for a target's answer before the ingress answers 504.
    #[serde(default = "default_route_timeout_ms", skip_serializing_if = "is_default_route_timeout_ms")]
    pub timeout_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_stored_before_security_existed_loads_as_default_and_encodes_as_before() {
        let spec = crate::test_fixtures::spec("quotes:1", 2, 100);
        let stored = serde_json::to_value(&spec).unwrap();
        assert!(stored.get("security").is_none(), "the default is not written: {stored}");
        let old: ServiceSpec = serde_json::from_value(stored).unwrap();
        assert_eq!(old.security.seccomp, Seccomp::Default);
        assert_eq!(old.security.userns, UserNamespace::Auto);
        let opted_out = ServiceSpec { security: Security { seccomp: Seccomp::Unconfined, ..Default::default() }, ..spec.clone() };
        let stored = serde_json::to_value(&opted_out).unwrap();
        assert_eq!(stored["security"], serde_json::json!({ "seccomp": "unconfined" }), "auto is not written, as before it existed");
        assert_eq!(serde_json::from_value::<ServiceSpec>(stored).unwrap(), opted_out);
        let host = ServiceSpec { security: Security { userns: UserNamespace::Host, ..Default::default() }, ..spec };
        let stored = serde_json::to_value(&host).unwrap();
        assert_eq!(stored["security"], serde_json::json!({ "seccomp": "default", "userns": "host" }));
        assert_eq!(serde_json::from_value::<ServiceSpec>(stored).unwrap(), host);
    }
}
