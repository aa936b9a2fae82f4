//! The servers' assignments as this node reads them: each becomes a [`Wanted`] task, its image
//! pinned to the digest the servers resolved (so every node runs exactly that image), its
//! health check and seccomp profile read through the conversions in [`wire`](super::wire).

use std::collections::{BTreeMap, HashMap};

use proto::agent::v1 as pb;
use proto::sched::v1 as sched_pb;
use registry::{Digest, Reference};

use super::plan::Wanted;
use crate::error::{AgentError, Result};
use crate::health::HealthSpec;
use crate::task::{Seccomp, TaskSpec, UserNamespace};

/// What one assignment message asks of this node.
pub(super) struct Assigned {
    /// The tasks wanted on this node, by id.
    pub(super) wanted: BTreeMap<String, Wanted>,
    /// Tasks whose image could not be pinned to its digest, with why (see
    /// [`NodeState::unpinned`](super::state::NodeState)).
    pub(super) unpinned: HashMap<String, String>,
}

/// The tasks an assignment message wants on this node.
pub(super) fn assigned(assignments: &pb::Assignments) -> Assigned {
    let mut unpinned = HashMap::new();
    let wanted = assignments
        .assignments
        .iter()
        .map(|a| {
            let spec = a.spec.clone().unwrap_or_default();
            let image = if a.image_digest.is_empty() {
                spec.image.clone()
            } else {
                pin_digest(&spec.image, &a.image_digest).unwrap_or_else(|e| {
                    unpinned.insert(a.task_id.clone(), e.to_string());
                    spec.image.clone()
                })
            };
            let task = TaskSpec {
                id: a.task_id.clone(),
                image,
                command: (!spec.command.is_empty()).then(|| spec.command.clone()),
                env: spec.env.clone().into_iter().collect(),
                cpu_millis: spec.cpu_millis,
                memory_mib: spec.memory_mib,
                ports: spec.ports.iter().filter_map(|p| u16::try_from(*p).ok()).collect(),
                health: spec.health.as_ref().and_then(|h| HealthSpec::try_from(h).ok()),
                seccomp: Seccomp::from(spec.security.as_ref()),
                userns: UserNamespace::from(spec.security.as_ref()),
            };
            let running = a.desired_state != sched_pb::DesiredState::Stopped as i32;
            (a.task_id.clone(), Wanted { spec: task, running })
        })
        .collect();
    Assigned { wanted, unpinned }
}

/// `repo:tag` + `sha256:...` -> `registry/repo@sha256:...` (normalised, the tag dropped): every
/// node runs exactly the resolved image.
fn pin_digest(image: &str, digest: &str) -> Result<String> {
    let error = |source| AgentError::ImageDigest { image: image.to_owned(), digest: digest.to_owned(), source: Box::new(source) };
    let reference = Reference::parse(image).map_err(error)?;
    let digest = Digest::parse(digest).map_err(error)?;
    Ok(reference.pinned(digest).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_replaced_by_the_resolved_digest() {
        let d = &format!("sha256:{}", "ab".repeat(32));
        let pinned = |image: &str| pin_digest(image, d).unwrap();
        assert_eq!(pinned("127.0.0.1:5000/quotes:1.0"), format!("127.0.0.1:5000/quotes@{d}"));
        assert_eq!(pinned("busybox"), format!("docker.io/library/busybox@{d}"));
        assert_eq!(pinned("localhost:5000/app"), format!("localhost:5000/app@{d}"));
        assert_eq!(pinned(&format!("app@sha256:{}", "0".repeat(64))), format!("docker.io/library/app@{d}"));
    }

    #[test]
    fn an_image_that_cannot_be_pinned_fails_its_task_and_only_it() {
        assert!(pin_digest("busybox", "sha256:abc").is_err(), "not a digest");
        let assignment = |task_id: &str, image: &str| pb::Assignment {
            task_id: task_id.into(),
            spec: Some(sched_pb::ServiceSpec { image: image.into(), ..Default::default() }),
            image_digest: "sha256:abc".into(),
            ..Default::default()
        };
        let assigned = assigned(&pb::Assignments { assignments: vec![assignment("a", "busybox")], ..Default::default() });
        assert!(assigned.unpinned["a"].contains("sha256:abc"), "{:?}", assigned.unpinned);
        assert!(assigned.wanted["a"].running);
    }
}
