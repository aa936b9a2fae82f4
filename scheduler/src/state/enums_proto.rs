//! The state's enums and their `sched.v1` counterparts and names, written once: the API's
//! views, the agent API and the CLI's output all convert through these.
//!
//! Names are the ones the JSON output and tables print (the serde names of the state's enums).

use proto::sched::v1 as pb;

use super::{DesiredState, HealthStatus, NodeStatus, TaskState};

/// A proto enum value that is unspecified or unknown to this build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value} is not one this build knows")]
pub struct UnknownEnumValue {
    pub what: &'static str,
    pub value: i32,
}

impl From<TaskState> for pb::TaskState {
    fn from(s: TaskState) -> Self {
        match s {
            TaskState::Pending => pb::TaskState::Pending,
            TaskState::Assigned => pb::TaskState::Assigned,
            TaskState::Preparing => pb::TaskState::Preparing,
            TaskState::Running => pb::TaskState::Running,
            TaskState::Exited => pb::TaskState::Exited,
            TaskState::Failed => pb::TaskState::Failed,
            TaskState::Lost => pb::TaskState::Lost,
        }
    }
}

impl TryFrom<i32> for TaskState {
    type Error = UnknownEnumValue;

    /// A task state as it travels in a message; unspecified is not a state.
    fn try_from(value: i32) -> Result<Self, Self::Error> {
        Ok(match pb::TaskState::try_from(value) {
            Ok(pb::TaskState::Pending) => TaskState::Pending,
            Ok(pb::TaskState::Assigned) => TaskState::Assigned,
            Ok(pb::TaskState::Preparing) => TaskState::Preparing,
            Ok(pb::TaskState::Running) => TaskState::Running,
            Ok(pb::TaskState::Exited) => TaskState::Exited,
            Ok(pb::TaskState::Failed) => TaskState::Failed,
            Ok(pb::TaskState::Lost) => TaskState::Lost,
            Ok(pb::TaskState::Unspecified) | Err(_) => return Err(UnknownEnumValue { what: "task state", value }),
        })
    }
}

impl TaskState {
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Assigned => "assigned",
            TaskState::Preparing => "preparing",
            TaskState::Running => "running",
            TaskState::Exited => "exited",
            TaskState::Failed => "failed",
            TaskState::Lost => "lost",
        }
    }
}

impl From<HealthStatus> for pb::HealthStatus {
    fn from(h: HealthStatus) -> Self {
        match h {
            HealthStatus::Unknown => pb::HealthStatus::Unspecified,
            HealthStatus::Starting => pb::HealthStatus::Starting,
            HealthStatus::Healthy => pb::HealthStatus::Healthy,
            HealthStatus::Unhealthy => pb::HealthStatus::Unhealthy,
        }
    }
}

impl From<i32> for HealthStatus {
    /// A health status as it travels in a message; anything else is unknown (no check, or
    /// none reported yet).
    fn from(value: i32) -> Self {
        match pb::HealthStatus::try_from(value) {
            Ok(pb::HealthStatus::Starting) => HealthStatus::Starting,
            Ok(pb::HealthStatus::Healthy) => HealthStatus::Healthy,
            Ok(pb::HealthStatus::Unhealthy) => HealthStatus::Unhealthy,
            Ok(pb::HealthStatus::Unspecified) | Err(_) => HealthStatus::Unknown,
        }
    }
}

impl HealthStatus {
    pub fn name(self) -> &'static str {
        match self {
            HealthStatus::Unknown => "unknown",
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

impl From<DesiredState> for pb::DesiredState {
    fn from(d: DesiredState) -> Self {
        match d {
            DesiredState::Running => pb::DesiredState::Running,
            DesiredState::Draining => pb::DesiredState::Draining,
            DesiredState::Stopped => pb::DesiredState::Stopped,
        }
    }
}

impl TryFrom<i32> for DesiredState {
    type Error = UnknownEnumValue;

    fn try_from(value: i32) -> Result<Self, Self::Error> {
        Ok(match pb::DesiredState::try_from(value) {
            Ok(pb::DesiredState::Running) => DesiredState::Running,
            Ok(pb::DesiredState::Draining) => DesiredState::Draining,
            Ok(pb::DesiredState::Stopped) => DesiredState::Stopped,
            Ok(pb::DesiredState::Unspecified) | Err(_) => return Err(UnknownEnumValue { what: "desired state", value }),
        })
    }
}

impl DesiredState {
    pub fn name(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Draining => "draining",
            DesiredState::Stopped => "stopped",
        }
    }
}

impl From<NodeStatus> for pb::NodeStatus {
    fn from(s: NodeStatus) -> Self {
        match s {
            NodeStatus::Ready => pb::NodeStatus::Ready,
            NodeStatus::Down => pb::NodeStatus::Down,
        }
    }
}

impl TryFrom<i32> for NodeStatus {
    type Error = UnknownEnumValue;

    fn try_from(value: i32) -> Result<Self, Self::Error> {
        Ok(match pb::NodeStatus::try_from(value) {
            Ok(pb::NodeStatus::Ready) => NodeStatus::Ready,
            Ok(pb::NodeStatus::Down) => NodeStatus::Down,
            Ok(pb::NodeStatus::Unspecified) | Err(_) => return Err(UnknownEnumValue { what: "node status", value }),
        })
    }
}

impl NodeStatus {
    pub fn name(self) -> &'static str {
        match self {
            NodeStatus::Ready => "ready",
            NodeStatus::Down => "down",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_proto_value_and_is_named_as_serde_names_it() {
        use TaskState::*;
        for s in [Pending, Assigned, Preparing, Running, Exited, Failed, Lost] {
            assert_eq!(TaskState::try_from(pb::TaskState::from(s) as i32), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
        for h in [HealthStatus::Unknown, HealthStatus::Starting, HealthStatus::Healthy, HealthStatus::Unhealthy] {
            assert_eq!(HealthStatus::from(pb::HealthStatus::from(h) as i32), h);
            assert_eq!(serde_json::to_value(h).unwrap(), h.name());
        }
        for d in [DesiredState::Running, DesiredState::Draining, DesiredState::Stopped] {
            assert_eq!(DesiredState::try_from(pb::DesiredState::from(d) as i32), Ok(d));
            assert_eq!(serde_json::to_value(d).unwrap(), d.name());
        }
        for n in [NodeStatus::Ready, NodeStatus::Down] {
            assert_eq!(NodeStatus::try_from(pb::NodeStatus::from(n) as i32), Ok(n));
            assert_eq!(serde_json::to_value(n).unwrap(), n.name());
        }
        assert!(TaskState::try_from(0).is_err() && TaskState::try_from(99).is_err());
        assert_eq!(HealthStatus::from(99), HealthStatus::Unknown);
    }
}
