//! The node's types and their counterparts in the agent protocol, written once: assignments
//! are read and reports written through these `From` impls only (as
//! `scheduler/src/state/enums_proto.rs` does on the servers' side).
//!
//! What an unset field of a health check means comes from [`proto::defaults`], shared with the
//! servers' `service.toml` defaults.

use std::time::Duration;

use proto::agent::v1 as pb;
use proto::defaults::{HEALTH_INTERVAL_MS, HEALTH_RETRIES, HEALTH_TIMEOUT_MS};
use proto::sched::v1 as sched_pb;

use super::reports::Reported;
use crate::health::{Health, HealthSpec, Probe};
use crate::task::{Seccomp, UserNamespace};

impl From<Health> for sched_pb::HealthStatus {
    fn from(health: Health) -> Self {
        match health {
            Health::Starting => sched_pb::HealthStatus::Starting,
            Health::Healthy => sched_pb::HealthStatus::Healthy,
            Health::Unhealthy => sched_pb::HealthStatus::Unhealthy,
        }
    }
}

impl From<&Reported> for sched_pb::TaskState {
    fn from(reported: &Reported) -> Self {
        match reported {
            Reported::Running(_) => sched_pb::TaskState::Running,
            Reported::Exited(_) => sched_pb::TaskState::Exited,
            Reported::Failed(_) => sched_pb::TaskState::Failed,
        }
    }
}

/// Unspecified unless the task runs and has a health check.
impl From<&Reported> for sched_pb::HealthStatus {
    fn from(reported: &Reported) -> Self {
        match reported {
            Reported::Running(Some(health)) => (*health).into(),
            _ => sched_pb::HealthStatus::Unspecified,
        }
    }
}

impl Reported {
    /// The report of task `task_id` in this state: exit code when it exited, the reason when it
    /// failed, `endpoints` when it runs.
    pub(super) fn request(&self, node_id: u64, task_id: String, endpoints: Vec<String>) -> pb::ReportTaskStatusRequest {
        pb::ReportTaskStatusRequest {
            node_id,
            task_id,
            state: sched_pb::TaskState::from(self) as i32,
            exit_code: match self {
                Reported::Exited(code) => Some(*code),
                _ => None,
            },
            endpoints: match self {
                Reported::Running(_) => endpoints,
                _ => Vec::new(),
            },
            health: sched_pb::HealthStatus::from(self) as i32,
            message: match self {
                Reported::Failed(reason) => reason.clone(),
                _ => String::new(),
            },
        }
    }
}

/// The task's seccomp profile: unconfined only when the service says so; anything else
/// (absent, unspecified, a value this agent does not know) gets the default profile.
impl From<Option<&sched_pb::Security>> for Seccomp {
    fn from(security: Option<&sched_pb::Security>) -> Self {
        match security.map(|s| sched_pb::SeccompProfile::try_from(s.seccomp)) {
            Some(Ok(sched_pb::SeccompProfile::Unconfined)) => Seccomp::Unconfined,
            _ => Seccomp::Default,
        }
    }
}

/// The task's user namespace: the host's only when the service says so; anything else (absent,
/// unspecified, a value this agent does not know) gets one of its own.
impl From<Option<&sched_pb::Security>> for UserNamespace {
    fn from(security: Option<&sched_pb::Security>) -> Self {
        match security.map(|s| sched_pb::UserNamespaceMode::try_from(s.userns)) {
            Some(Ok(sched_pb::UserNamespaceMode::Host)) => UserNamespace::Host,
            _ => UserNamespace::Auto,
        }
    }
}

/// A health check this agent cannot run: a kind it does not know, a port out of range, or a
/// command check without a command. The task then runs without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a health check this agent cannot run")]
pub struct UnsupportedHealthCheck;

/// The agent's health check from the wire form; unset timings as [`proto::defaults`] gives them.
impl TryFrom<&sched_pb::HealthCheck> for HealthSpec {
    type Error = UnsupportedHealthCheck;

    fn try_from(h: &sched_pb::HealthCheck) -> Result<Self, Self::Error> {
        let port = || u16::try_from(h.port).map_err(|_| UnsupportedHealthCheck);
        let probe = match sched_pb::HealthKind::try_from(h.kind).map_err(|_| UnsupportedHealthCheck)? {
            sched_pb::HealthKind::Http => Probe::Http { port: port()?, path: if h.path.is_empty() { "/".into() } else { h.path.clone() } },
            sched_pb::HealthKind::Tcp => Probe::Tcp { port: port()? },
            sched_pb::HealthKind::Cmd if !h.command.is_empty() => Probe::Cmd { command: h.command.clone() },
            _ => return Err(UnsupportedHealthCheck),
        };
        let ms = |v: u64, default: u64| Duration::from_millis(if v == 0 { default } else { v });
        Ok(HealthSpec {
            probe,
            interval: ms(h.interval_ms, HEALTH_INTERVAL_MS),
            timeout: ms(h.timeout_ms, HEALTH_TIMEOUT_MS),
            retries: if h.retries == 0 { HEALTH_RETRIES } else { h.retries },
            grace: Duration::from_millis(h.grace_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_explicit_unconfined_turns_seccomp_off() {
        let with = |seccomp: i32| seccomp_of(Some(sched_pb::Security { seccomp, userns: 0 }));
        fn seccomp_of(s: Option<sched_pb::Security>) -> Seccomp {
            Seccomp::from(s.as_ref())
        }
        assert_eq!(seccomp_of(None), Seccomp::Default);
        assert_eq!(with(sched_pb::SeccompProfile::Unspecified as i32), Seccomp::Default);
        assert_eq!(with(sched_pb::SeccompProfile::Default as i32), Seccomp::Default);
        assert_eq!(with(sched_pb::SeccompProfile::Unconfined as i32), Seccomp::Unconfined);
        assert_eq!(with(99), Seccomp::Default, "a value from a newer server is not read as unconfined");
    }

    #[test]
    fn only_an_explicit_host_keeps_tasks_in_the_hosts_user_namespace() {
        let with = |userns: i32| UserNamespace::from(Some(&sched_pb::Security { seccomp: 0, userns }));
        assert_eq!(UserNamespace::from(None), UserNamespace::Auto);
        assert_eq!(with(sched_pb::UserNamespaceMode::Unspecified as i32), UserNamespace::Auto);
        assert_eq!(with(sched_pb::UserNamespaceMode::Auto as i32), UserNamespace::Auto);
        assert_eq!(with(sched_pb::UserNamespaceMode::Host as i32), UserNamespace::Host);
        assert_eq!(with(99), UserNamespace::Auto, "a value from a newer server is not read as host");
    }

    #[test]
    fn unset_health_timings_read_as_the_shared_defaults() {
        let tcp = sched_pb::HealthCheck { kind: sched_pb::HealthKind::Tcp as i32, port: 80, ..Default::default() };
        let spec = HealthSpec::try_from(&tcp).unwrap();
        assert_eq!(spec.probe, Probe::Tcp { port: 80 });
        assert_eq!(
            (spec.interval, spec.timeout, spec.retries, spec.grace),
            (Duration::from_secs(10), Duration::from_secs(2), 3, Duration::ZERO)
        );
        let http = sched_pb::HealthCheck { kind: sched_pb::HealthKind::Http as i32, port: 80, ..Default::default() };
        assert_eq!(HealthSpec::try_from(&http).unwrap().probe, Probe::Http { port: 80, path: "/".into() });
        let no_command = sched_pb::HealthCheck { kind: sched_pb::HealthKind::Cmd as i32, ..Default::default() };
        assert_eq!(HealthSpec::try_from(&no_command), Err(UnsupportedHealthCheck));
        let big_port = sched_pb::HealthCheck { kind: sched_pb::HealthKind::Tcp as i32, port: 70_000, ..Default::default() };
        assert_eq!(HealthSpec::try_from(&big_port), Err(UnsupportedHealthCheck));
    }

    #[test]
    fn reports_carry_state_exit_code_reason_and_endpoints_only_while_running() {
        let endpoints = || vec!["10.0.0.1:30000".to_string()];
        let running = Reported::Running(Some(Health::Healthy)).request(7, "t".into(), endpoints());
        assert_eq!(
            (running.state, running.health, running.endpoints),
            (sched_pb::TaskState::Running as i32, sched_pb::HealthStatus::Healthy as i32, endpoints())
        );
        let exited = Reported::Exited(3).request(7, "t".into(), endpoints());
        assert_eq!((exited.state, exited.exit_code, exited.endpoints.len()), (sched_pb::TaskState::Exited as i32, Some(3), 0));
        let failed = Reported::Failed("pull failed".into()).request(7, "t".into(), endpoints());
        assert_eq!(
            (failed.state, failed.message.as_str(), failed.health),
            (sched_pb::TaskState::Failed as i32, "pull failed", sched_pb::HealthStatus::Unspecified as i32)
        );
    }
}
