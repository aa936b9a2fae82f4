//! The replicated cluster state: a pure, deterministic state machine.
//!
//! [`ClusterState::apply`] takes a [`Command`] from the Raft log and either changes the state
//! and returns an [`Outcome`], or changes nothing and returns a [`Rejection`]. It reads no clock,
//! no randomness and no I/O, so every server that applies the same log holds the same state; all
//! maps are ordered, so two states compare and serialize identically. The whole state is the
//! snapshot ([`ClusterState::to_snapshot`]).
//!
//! Besides services, tasks and nodes, the state holds the Raft voters' addresses
//! ([`ClusterState::members`]), changed only by applied membership changes, so that a
//! snapshot tells a new server where its peers are. It also holds what the servers agree on
//! about credentials ([`credentials`]): join tokens (digests only), each holder's current
//! certificate, and revoked serials.

mod command;
mod credentials;
mod enums_proto;
mod limits;
mod model;
mod service_table;
mod task_table;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use service_table::{ServiceMut, ServiceTable};
use task_table::TaskTable;

pub use command::{COMMAND_VERSION, Command, DecodeError, HolderCheck, ServiceEvent};
pub use credentials::{CertificateEntry, TokenEntry};
pub use enums_proto::UnknownEnumValue;
pub use limits::{
    MAX_CERTIFICATES, MAX_DESIRED_TASKS, MAX_REVISIONS, MAX_REVOKED_SERIALS, MAX_SERIAL_HEX, MAX_SERVICES, MAX_TEXT_BYTES, MAX_TOKENS,
    check_host_port,
};
pub use model::{
    AutoscaleStatus, DesiredState, EVENTS_PER_SERVICE, Event, HealthStatus, Node, NodeStatus, Revision, ScaleDecision, ServiceRecord,
    ServiceSummary, Task, TaskState,
};

/// What an applied command did.
// Values that are serialized and sent once: boxing the spec would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A service after the change; `changed` is false when nothing had to change.
    Service {
        service: ServiceSummary,
        changed: bool,
    },
    Deleted {
        name: String,
    },
    NodeRegistered {
        node_id: u64,
    },
    Done,
}

/// Why a command changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub kind: RejectionKind,
    pub message: String,
}

/// The class of a rejection, mapped to a gRPC status code by the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionKind {
    NotFound,
    Invalid,
    /// The request is valid but the state does not allow it now.
    Conflict,
}

fn not_found(message: String) -> Rejection {
    Rejection { kind: RejectionKind::NotFound, message }
}

fn invalid(message: String) -> Rejection {
    Rejection { kind: RejectionKind::Invalid, message }
}

/// Everything the servers agree on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Shared between copies of the state, as the task records are (see [`service_table`],
    /// [`task_table`]): the leader's controllers copy the state for every look, and a record is
    /// copied only when it changes while a copy holds it. Stored as the records themselves.
    services: ServiceTable,
    tasks: TaskTable,
    nodes: BTreeMap<u64, Node>,
    next_node_id: u64,
    /// Raft voter id -> gRPC address.
    members: BTreeMap<u64, String>,
    /// Join tokens, current certificates, revoked serials. Defaulted (and not written while
    /// empty) so that snapshots from before it existed decode, and read as they were.
    #[serde(default, skip_serializing_if = "credentials::Credentials::is_empty")]
    credentials: credentials::Credentials,
}

impl ClusterState {
    /// A state that knows only the initial voters.
    pub fn with_members(members: BTreeMap<u64, String>) -> ClusterState {
        ClusterState { members, ..ClusterState::default() }
    }

    /// Refuses a command naming a task this state does not hold (before it changes anything).
    fn require_tasks(&self, task_ids: &[String]) -> Result<(), Rejection> {
        match task_ids.iter().find(|id| !self.tasks.contains_key(id)) {
            Some(id) => Err(not_found(format!("no task {id}"))),
            None => Ok(()),
        }
    }

    pub fn services(&self) -> impl Iterator<Item = &ServiceRecord> {
        self.services.values()
    }

    pub fn service(&self, name: &str) -> Option<&ServiceRecord> {
        self.services.get(name)
    }

    /// The record of service `name` to change, copied first if a copy of the state shares it.
    fn service_mut(&mut self, name: &str) -> Option<ServiceMut<'_>> {
        self.services.get_mut(name)
    }

    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    /// The names of the services that have tasks, deleted ones included, in order.
    pub fn services_with_tasks(&self) -> impl Iterator<Item = &str> {
        self.tasks.services()
    }

    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    pub fn tasks_of<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks.of_service(service)
    }

    /// The tasks placed on node `node_id` (0: the pending ones).
    pub fn tasks_on(&self, node_id: u64) -> impl Iterator<Item = &Task> {
        self.tasks.on_node(node_id)
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    pub fn node(&self, id: u64) -> Option<&Node> {
        self.nodes.get(&id)
    }

    /// The node registered under `name` (names are unique).
    pub fn node_named(&self, name: &str) -> Option<&Node> {
        self.nodes.values().find(|n| n.name == name)
    }

    /// The join tokens, by id, as [`pki::check_token`] reads them (expired ones included: it
    /// refuses them saying so).
    pub fn token_records(&self) -> Vec<pki::TokenRecord> {
        self.credentials
            .tokens()
            // The digest was checked when the token was added: every entry converts.
            .filter_map(|t| pki::TokenRecord::from_digest_hex(&t.id, t.role, &t.digest_hex, t.expires_ms).ok())
            .collect()
    }

    /// The join tokens, ordered by id (for listing; no secrets are kept).
    pub fn tokens(&self) -> impl Iterator<Item = &TokenEntry> {
        self.credentials.tokens()
    }

    pub fn token(&self, id: &str) -> Option<&TokenEntry> {
        self.credentials.token(id)
    }

    /// The current certificate of the holder `role` `name`: while it has not expired, the name
    /// is taken.
    pub fn certificate_of(&self, role: pki::Role, name: &str) -> Option<&CertificateEntry> {
        self.credentials.certificate_of(role, name)
    }

    /// Whether the certificate with this serial (lowercase hex) is revoked.
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.credentials.is_revoked(serial)
    }

    /// The revoked serials whose certificates had not expired when last pruned, ordered.
    pub fn revoked_serials(&self) -> impl Iterator<Item = &str> {
        self.credentials.revoked_serials()
    }

    pub fn members(&self) -> &BTreeMap<u64, String> {
        &self.members
    }

    /// Records a voter's address (from an applied membership change).
    pub fn set_member(&mut self, id: u64, address: String) {
        self.members.insert(id, address);
    }

    /// Forgets a voter (from an applied membership change).
    pub fn remove_member(&mut self, id: u64) {
        self.members.remove(&id);
    }

    /// The snapshot: the whole state as JSON.
    pub fn to_snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the state serializes")
    }

    pub fn from_snapshot(bytes: &[u8]) -> Result<ClusterState, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Applies one command. On rejection the state is unchanged. Every command first passes
    /// the checks of [`limits`], whoever proposed it.
    pub fn apply(&mut self, command: Command) -> Result<Outcome, Rejection> {
        self.check(&command)?;
        match command {
            Command::ApplyService { spec, image_digest, now_ms, unresolved_reason } => {
                self.refuse_claimed_routes(&spec)?;
                Ok(self.apply_service(spec, image_digest, now_ms, &unresolved_reason))
            }
            Command::ScaleService { name, count, now_ms } => self.scale_service(&name, count, now_ms),
            Command::DeleteService { name, now_ms } => self.delete_service(name, now_ms),
            Command::RollbackService { name, to_revision, now_ms } => self.rollback_service(&name, to_revision, now_ms),
            Command::RegisterNode { name, address, cpu_millis, memory_mib, labels, now_ms, api_address } => {
                let existing = self.nodes.values_mut().find(|n| n.name == name);
                let node_id = match existing {
                    Some(node) => {
                        *node = Node {
                            address,
                            api_address,
                            cpu_millis,
                            memory_mib,
                            labels,
                            status: NodeStatus::Ready,
                            status_ms: now_ms,
                            ..node.clone()
                        };
                        node.id
                    }
                    None => {
                        self.next_node_id += 1;
                        let id = self.next_node_id;
                        let node = Node {
                            id,
                            name,
                            address,
                            api_address,
                            cpu_millis,
                            memory_mib,
                            labels,
                            status: NodeStatus::Ready,
                            registered_ms: now_ms,
                            status_ms: now_ms,
                        };
                        self.nodes.insert(id, node);
                        id
                    }
                };
                Ok(Outcome::NodeRegistered { node_id })
            }
            Command::SetNodeStatus { node_id, status, now_ms } => {
                let node = self.nodes.get_mut(&node_id).ok_or_else(|| not_found(format!("no node with id {node_id}")))?;
                if node.status != status {
                    node.status = status;
                    node.status_ms = now_ms;
                }
                Ok(Outcome::Done)
            }
            Command::PutTasks { tasks, now_ms } => {
                for mut task in tasks {
                    task.updated_ms = now_ms;
                    self.tasks.insert(task);
                }
                Ok(Outcome::Done)
            }
            Command::DrainTasks { task_ids, until_ms, now_ms } => {
                self.require_tasks(&task_ids)?;
                for id in task_ids {
                    let task = self.tasks.get_mut(&id).expect("checked above");
                    // Only a task that should run can start draining; a stopped one stays so.
                    if task.desired == DesiredState::Running {
                        task.desired = DesiredState::Draining;
                        task.drain_until_ms = until_ms;
                        task.updated_ms = now_ms;
                    }
                }
                Ok(Outcome::Done)
            }
            Command::SetTaskDesiredState { task_ids, desired, now_ms } => {
                self.require_tasks(&task_ids)?;
                for id in task_ids {
                    let task = self.tasks.get_mut(&id).expect("checked above");
                    task.desired = desired;
                    task.updated_ms = now_ms;
                }
                Ok(Outcome::Done)
            }
            Command::ReportTaskStatus { node_id, task_id, state, exit_code, endpoints, health, message, now_ms } => {
                let task = self.tasks.get_mut(&task_id).ok_or_else(|| not_found(format!("no task {task_id}")))?;
                if task.node_id != node_id {
                    return Err(Rejection {
                        kind: RejectionKind::Conflict,
                        message: format!("task {task_id} is assigned to node {}, not node {node_id}", task.node_id),
                    });
                }
                let died = task.desired == DesiredState::Running
                    && matches!(state, TaskState::Exited | TaskState::Failed)
                    && !matches!(task.observed, TaskState::Exited | TaskState::Failed);
                task.observed = state;
                task.exit_code = exit_code.or(task.exit_code);
                task.endpoints = endpoints;
                task.health = health;
                task.message = limits::bounded_text(message);
                task.updated_ms = now_ms;
                if died {
                    self.record_death(&task_id, now_ms);
                }
                Ok(Outcome::Done)
            }
            Command::Autoscale { name, from, to, reason, now_ms } => self.autoscale(&name, from, to, reason, now_ms),
            Command::RecordEvents { events, now_ms } => {
                for event in events {
                    if let Some(mut service) = self.service_mut(&event.service) {
                        service.record(now_ms, event.message);
                    }
                }
                Ok(Outcome::Done)
            }
            Command::RemoveTasks { task_ids } => {
                for id in task_ids {
                    self.tasks.remove(&id);
                }
                Ok(Outcome::Done)
            }
            Command::RemoveNode { name, now_ms } => self.remove_node(&name, now_ms),
            Command::AddToken { id, role, digest_hex, expires_ms, now_ms } => {
                self.credentials.add_token(TokenEntry { id, role, digest_hex, created_ms: now_ms, expires_ms }, now_ms)
            }
            Command::RevokeToken { id, now_ms } => self.credentials.revoke_token(&id, now_ms),
            Command::RecordCertificate { role, name, serial, not_after_ms, now_ms, holder } => self.credentials.record_certificate(
                role,
                name,
                CertificateEntry { serial, not_after_ms, issued_ms: now_ms },
                &holder,
                now_ms,
            ),
            Command::RevokeCertificate { serial, not_after_ms, now_ms } => {
                self.credentials.revoke_certificate(serial, not_after_ms, now_ms)
            }
        }
    }

    /// Forgets node `name`. Its tasks that were not finished are lost and told to stop, as the
    /// reconciler marks those of a down node, so it places them elsewhere (a task left on a
    /// node id that no longer exists would be neither live nor finished, and never forgotten).
    /// The agent certificate of that name is revoked: the machine must join again with a new
    /// token, and gets a new node id.
    fn remove_node(&mut self, name: &str, now_ms: u64) -> Result<Outcome, Rejection> {
        let id = self.node_named(name).map(|n| n.id).ok_or_else(|| not_found(format!("no node named \"{name}\"")))?;
        self.nodes.remove(&id);
        for task in self.tasks.values_mut().filter(|t| t.node_id == id) {
            if matches!(task.observed, TaskState::Exited | TaskState::Failed | TaskState::Lost) {
                continue;
            }
            task.observed = TaskState::Lost;
            task.desired = DesiredState::Stopped;
            task.message = format!("node {name} was removed");
            task.updated_ms = now_ms;
        }
        self.credentials.revoke_agent(name, now_ms);
        Ok(Outcome::Done)
    }

    /// Records in its service's events that a task which should run died, with its exit code
    /// (or failure). The reconciler's event on the replacement tells the backoff.
    fn record_death(&mut self, task_id: &str, now_ms: u64) {
        let Some(task) = self.tasks.get(task_id) else { return };
        let what = match (task.observed, task.exit_code) {
            (TaskState::Exited, Some(code)) => format!("task {task_id} exited with code {code}"),
            (TaskState::Exited, None) => format!("task {task_id} exited"),
            _ => format!("task {task_id} failed: {}", task.message),
        };
        let service = task.service.clone();
        if let Some(mut record) = self.service_mut(&service) {
            record.record(now_ms, what);
        }
    }

    /// Records a new revision (unless spec and digest are unchanged). When the image digest
    /// could not be resolved, an event says why and that the tasks pull by tag.
    fn apply_service(&mut self, spec: crate::spec::ServiceSpec, image_digest: String, now_ms: u64, unresolved_reason: &str) -> Outcome {
        let name = spec.name.clone();
        let unresolved = (!unresolved_reason.is_empty())
            .then(|| format!("the digest of {} could not be resolved ({unresolved_reason}); its tasks will pull it by tag", spec.image));
        let in_use = self.revisions_in_use(&name);
        let Some(mut service) = self.service_mut(&name) else {
            let count = spec.count;
            let first = Revision { revision: 1, spec, image_digest, created_ms: now_ms, rolled_back_from: None };
            let mut service = ServiceRecord {
                name: name.clone(),
                revisions: std::sync::Arc::new(vec![std::sync::Arc::new(first)]),
                current: 1,
                desired_count: count,
                created_ms: now_ms,
                updated_ms: now_ms,
                events: Default::default(),
                autoscale: AutoscaleStatus { count_set_ms: now_ms, ..AutoscaleStatus::default() },
            };
            service.record(now_ms, format!("created at revision 1 with {count} task(s)"));
            if let Some(message) = unresolved {
                service.record(now_ms, format!("revision 1: {message}"));
            }
            let summary = service.summary();
            self.services.insert(service);
            return Outcome::Service { service: summary, changed: true };
        };
        let current = service.current_revision();
        if current.spec == spec && (image_digest.is_empty() || current.image_digest == image_digest) {
            // The file is the truth: a count changed since by `sched scale` goes back to the
            // file's (as `nomad job run` and `terraform apply` do), without a new revision. An
            // autoscaled service keeps its autoscaler's count, as below.
            if spec.autoscale.is_none() && service.desired_count != spec.count {
                let (from, to) = (service.desired_count, spec.count);
                service.set_desired_count(to, now_ms);
                service.updated_ms = now_ms;
                let message = format!("apply set the count from {from} back to the file's {to} (revision {} unchanged)", service.current);
                service.record(now_ms, message);
                return Outcome::Service { service: service.summary(), changed: true };
            }
            return Outcome::Service { service: service.summary(), changed: false };
        }
        let revision = service.revisions.last().map_or(0, |r| r.revision) + 1;
        // An autoscaled service keeps the count its autoscaler reached (within the new bounds):
        // deploying a new image in the middle of a spike must not drop back to `count`. The
        // spec's count is only the first one (ECS and HPA behave the same way).
        let (count, how) = match (&spec.autoscale, &current.spec.autoscale) {
            (Some(new), Some(_)) => (service.desired_count.clamp(new.min, new.max), "; the autoscaler keeps"),
            _ => (spec.count, " with"),
        };
        std::sync::Arc::make_mut(&mut service.revisions).push(std::sync::Arc::new(Revision {
            revision,
            spec,
            image_digest,
            created_ms: now_ms,
            rolled_back_from: None,
        }));
        service.current = revision;
        service.prune_revisions(&in_use);
        service.set_desired_count(count, now_ms);
        service.updated_ms = now_ms;
        service.record(now_ms, format!("revision {revision} applied{how} {count} task(s)"));
        if let Some(message) = unresolved {
            service.record(now_ms, format!("revision {revision}: {message}"));
        }
        Outcome::Service { service: service.summary(), changed: true }
    }

    fn scale_service(&mut self, name: &str, count: u32, now_ms: u64) -> Result<Outcome, Rejection> {
        let mut service = self.service_mut(name).ok_or_else(|| not_found(format!("no service named \"{name}\"")))?;
        if count > crate::spec::validate::MAX_COUNT {
            return Err(invalid(format!("count must be 0 to {}, got {count}", crate::spec::validate::MAX_COUNT)));
        }
        if let Some(auto) = &service.current_revision().spec.autoscale
            && (count < auto.min || count > auto.max)
        {
            return Err(invalid(format!(
                "{name} autoscales between {} and {} tasks: scale within those bounds, or apply a spec with other bounds",
                auto.min, auto.max
            )));
        }
        let changed = service.desired_count != count;
        if changed {
            let before = service.desired_count;
            service.set_desired_count(count, now_ms);
            service.updated_ms = now_ms;
            service.record(now_ms, format!("scaled from {before} to {count} task(s)"));
        }
        Ok(Outcome::Service { service: service.summary(), changed })
    }

    /// Refuses a spec with a route whose host and path prefix another service already claims:
    /// the ingress could not tell which one a request is for.
    fn refuse_claimed_routes(&self, spec: &crate::spec::ServiceSpec) -> Result<(), Rejection> {
        match crate::routes::claimed_by_another(self, spec) {
            None => Ok(()),
            Some((i, other)) => {
                let route = &spec.routes[i];
                let host = if route.host.is_empty() { "any host".to_string() } else { format!("host {}", route.host) };
                Err(Rejection {
                    kind: RejectionKind::Conflict,
                    message: format!(
                        "route[{i}] ({host}, path_prefix {}) is already served by service \"{other}\": change the host or path_prefix, or remove that route from \"{other}\" first",
                        route.path_prefix
                    ),
                })
            }
        }
    }

    /// The autoscaler's decision: `from` must still be the desired count (else the decision was
    /// made on a state that has moved on, and the leader decides again), `to` within the bounds.
    fn autoscale(&mut self, name: &str, from: u32, to: u32, reason: String, now_ms: u64) -> Result<Outcome, Rejection> {
        let mut service = self.service_mut(name).ok_or_else(|| not_found(format!("no service named \"{name}\"")))?;
        let Some(bounds) = service.current_revision().spec.autoscale.clone() else {
            return Err(Rejection { kind: RejectionKind::Conflict, message: format!("{name} does not autoscale") });
        };
        if service.desired_count != from {
            return Err(Rejection {
                kind: RejectionKind::Conflict,
                message: format!("{name} has {} desired task(s) now, not {from}: the decision is stale", service.desired_count),
            });
        }
        if to < bounds.min || to > bounds.max || to == from {
            return Err(invalid(format!(
                "{name} autoscales between {} and {}: {from} -> {to} is not a change within them",
                bounds.min, bounds.max
            )));
        }
        service.updated_ms = now_ms;
        if to > from {
            service.set_desired_count(to, now_ms);
            service.autoscale.last_scale_out_ms = now_ms;
        } else {
            service.desired_count = to;
            service.autoscale.last_scale_in_ms = now_ms;
        }
        let reason = limits::bounded_text(reason);
        service.autoscale.last_decision = Some(ScaleDecision { unix_ms: now_ms, from, to, reason: reason.clone() });
        service.record(now_ms, reason);
        Ok(Outcome::Service { service: service.summary(), changed: true })
    }

    /// The revisions of `service` that its tasks run (or ran, until they are forgotten).
    fn revisions_in_use(&self, service: &str) -> std::collections::BTreeSet<u64> {
        self.tasks_of(service).map(|t| t.revision).collect()
    }

    fn delete_service(&mut self, name: String, now_ms: u64) -> Result<Outcome, Rejection> {
        let Some(removed) = self.services.remove(&name) else {
            return Err(not_found(format!("no service named \"{name}\"")));
        };
        self.tasks.change_of_service(&name, |task| {
            // Tasks that serve through an ingress drain first (the reconciler stops them when
            // their drain time is over); a task already draining keeps its deadline.
            let drain = match task.desired {
                DesiredState::Running => removed.revision(task.revision).and_then(|r| crate::routes::drain_ms(task, &r.spec)),
                _ => None,
            };
            match (task.desired, drain) {
                (DesiredState::Draining, _) => {}
                (_, Some(ms)) => {
                    task.desired = DesiredState::Draining;
                    task.drain_until_ms = now_ms + ms;
                }
                (_, None) => task.desired = DesiredState::Stopped,
            }
            task.updated_ms = now_ms;
        });
        Ok(Outcome::Deleted { name })
    }

    fn rollback_service(&mut self, name: &str, to: Option<u64>, now_ms: u64) -> Result<Outcome, Rejection> {
        let service = self.service(name).ok_or_else(|| not_found(format!("no service named \"{name}\"")))?;
        let target = match to {
            Some(rev) => rev,
            None if service.current > 1 => service.current - 1,
            None => {
                return Err(Rejection {
                    kind: RejectionKind::Conflict,
                    message: format!("{name} has only revision 1: there is nothing to roll back to"),
                });
            }
        };
        let Some(old) = service.revision(target).cloned() else {
            let latest = service.revisions.last().map_or(0, |r| r.revision);
            let oldest = service.revisions.first().map_or(0, |r| r.revision);
            let kept =
                if service.revisions.len() as u64 != latest { format!(" (it keeps the last {MAX_REVISIONS})") } else { String::new() };
            return Err(not_found(format!("{name} has no revision {target}: revisions are {oldest} to {latest}{kept}")));
        };
        if old.spec == service.current_revision().spec {
            return Ok(Outcome::Service { service: service.summary(), changed: false });
        }
        self.refuse_claimed_routes(&old.spec)?;
        let in_use = self.revisions_in_use(name);
        let mut service = self.service_mut(name).expect("found above");
        let revision = service.revisions.last().map_or(0, |r| r.revision) + 1;
        std::sync::Arc::make_mut(&mut service.revisions).push(std::sync::Arc::new(Revision {
            revision,
            spec: old.spec,
            image_digest: old.image_digest,
            created_ms: now_ms,
            rolled_back_from: Some(target),
        }));
        service.current = revision;
        service.prune_revisions(&in_use);
        service.updated_ms = now_ms;
        service.record(now_ms, format!("rolled back to the spec of revision {target} as revision {revision}"));
        Ok(Outcome::Service { service: service.summary(), changed: true })
    }
}

#[cfg(test)]
mod credentials_tests;
#[cfg(test)]
mod tests;
