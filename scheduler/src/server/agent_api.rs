//! `agent.v1.AgentApi`: the servers' side of the agent protocol.
//!
//! - `Register` records the node through Raft (matched by name, so a restarted agent keeps its
//!   id) and returns its id.
//! - `Heartbeat` is not replicated: the answering server notes the time and the metrics in
//!   [`Heartbeats`], and a follower forwards it to the leader (once: the forwarded copy is
//!   marked), whose duties ([`super::leader`]) decide node liveness from them.
//! - `WatchAssignments` streams the node's complete desired task set: once at once, then after
//!   every applied change to it (level-triggered; a reconnecting agent needs only the latest).
//! - `ReportTaskStatus` records an observed state change through Raft.

use std::sync::Arc;

use proto::agent::v1 as pb;
use proto::agent::v1::agent_api_client::AgentApiClient;
use proto::agent::v1::agent_api_server::AgentApi;
use proto::sched::v1 as sched_pb;
use tonic::{Request, Response, Status};

use super::applied_stream::{AppliedStream, applied_stream};
use super::authorize;
use super::heartbeats::Heartbeats;
use super::to_leader::{self, FORWARD_TIMEOUT, ToLeader};
use super::{errors, now_ms};
use crate::raft::{Consensus, Proposal};
use crate::state::{ClusterState, Command, HealthStatus, Outcome, TaskState};

pub struct AgentApiService {
    consensus: Arc<Consensus>,
    heartbeats: Arc<Heartbeats>,
    /// Where heartbeats are forwarded.
    to_leader: Arc<ToLeader>,
}

impl AgentApiService {
    pub fn new(consensus: Arc<Consensus>, heartbeats: Arc<Heartbeats>, to_leader: Arc<ToLeader>) -> Self {
        AgentApiService { consensus, heartbeats, to_leader }
    }

    /// Refuses an agent's call about a node other than its own (a call about a node id this
    /// server does not know passes: the handler answers that it is unknown).
    fn check_node_id<T>(&self, request: &Request<T>, node_id: u64) -> Result<(), Status> {
        let caller = transport::caller_of(request);
        if caller.is_none_or(|c| c.identity.role() == pki::Role::Server) {
            return authorize::check_node(caller, "");
        }
        let name = self.consensus.raft().state().state.node(node_id).map(|n| n.name.clone());
        match name {
            Some(name) => authorize::check_node(caller, &name),
            None => Ok(()),
        }
    }

    /// Passes a heartbeat on to the leader, whose duties (node liveness, autoscaling) need it.
    async fn forward_to_leader(&self, request: &Request<pb::HeartbeatRequest>) {
        let Some((address, channel)) = self.to_leader.channel(request) else { return };
        let forwarded = to_leader::forwarded(request.get_ref().clone());
        match tokio::time::timeout(FORWARD_TIMEOUT, AgentApiClient::new(channel).heartbeat(forwarded)).await {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => tracing::debug!(leader = %address, "forwarding a heartbeat failed: {}", status.message()),
            Err(_) => tracing::debug!(leader = %address, "forwarding a heartbeat timed out"),
        }
    }
}

/// The assignments of one node in the state.
fn assignments_of(state: &ClusterState, node_id: u64, index: u64) -> pb::Assignments {
    let assignments = state
        .tasks_on(node_id)
        .map(|t| {
            let revision = state.service(&t.service).and_then(|s| s.revision(t.revision));
            pb::Assignment {
                task_id: t.id.clone(),
                service: t.service.clone(),
                revision: t.revision,
                spec: revision.map(|r| r.spec.to_proto()),
                image_digest: revision.map(|r| r.image_digest.clone()).unwrap_or_default(),
                desired_state: sched_pb::DesiredState::from(t.desired) as i32,
            }
        })
        .collect();
    pb::Assignments { index, assignments }
}

type AssignmentStream = AppliedStream<pb::Assignments>;

#[tonic::async_trait]
impl AgentApi for AgentApiService {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        authorize::check_node(transport::caller_of(&request), &request.get_ref().name)?;
        let r = request.into_inner();
        if r.name.is_empty() || r.address.is_empty() || r.cpu_millis == 0 || r.memory_mib == 0 {
            return Err(Status::invalid_argument("`name`, `address`, `cpu_millis` and `memory_mib` are required"));
        }
        // The same rule as a service's `constraints`, so every label a node has can be required.
        for (key, value) in &r.labels {
            crate::spec::check_label(key, value).map_err(|e| Status::invalid_argument(format!("{e} (fix `sched-agent --labels`)")))?;
        }
        let command = Command::RegisterNode {
            name: r.name,
            address: r.address,
            cpu_millis: r.cpu_millis,
            memory_mib: r.memory_mib,
            labels: r.labels.into_iter().collect(),
            now_ms: now_ms(),
            api_address: r.api_address,
        };
        match self.consensus.write(Proposal::Command(command)).await.map_err(errors::consensus)? {
            Ok(Outcome::NodeRegistered { node_id }) => Ok(Response::new(pb::RegisterResponse { node_id })),
            Ok(_) => Err(errors::unexpected("register")),
            Err(rejection) => Err(errors::rejection(rejection)),
        }
    }

    async fn heartbeat(&self, request: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.check_node_id(&request, request.get_ref().node_id)?;
        let r = request.get_ref();
        let known = self.consensus.raft().state().state.node(r.node_id).is_some();
        if known {
            self.heartbeats.record(r.node_id, &r.metrics, r.measured_unix_ms, r.ingress.as_ref());
            self.forward_to_leader(&request).await;
        }
        Ok(Response::new(pb::HeartbeatResponse { known }))
    }

    type WatchAssignmentsStream = AssignmentStream;

    async fn watch_assignments(&self, request: Request<pb::WatchAssignmentsRequest>) -> Result<Response<AssignmentStream>, Status> {
        self.check_node_id(&request, request.get_ref().node_id)?;
        let node_id = request.into_inner().node_id;
        let first = self
            .consensus
            .read(false, |a| a.state.node(node_id).map(|_| assignments_of(&a.state, node_id, a.index)))
            .await
            .map_err(errors::consensus)?
            .ok_or_else(|| Status::not_found(format!("no node with id {node_id}: register first")))?;
        let raft = self.consensus.raft().clone();
        let stream = applied_stream(
            first,
            raft,
            move |applied| assignments_of(&applied.state, node_id, applied.index),
            |last, next| next.assignments != last.assignments,
        );
        Ok(Response::new(stream))
    }

    async fn report_task_status(
        &self,
        request: Request<pb::ReportTaskStatusRequest>,
    ) -> Result<Response<pb::ReportTaskStatusResponse>, Status> {
        self.check_node_id(&request, request.get_ref().node_id)?;
        let r = request.into_inner();
        let command = Command::ReportTaskStatus {
            node_id: r.node_id,
            task_id: r.task_id,
            state: TaskState::try_from(r.state).map_err(|e| Status::invalid_argument(format!("`state`: {e} (PENDING..LOST)")))?,
            exit_code: r.exit_code,
            endpoints: r.endpoints,
            health: HealthStatus::from(r.health),
            message: r.message,
            now_ms: now_ms(),
        };
        self.consensus.write(Proposal::Command(command)).await.map_err(errors::consensus)?.map_err(errors::rejection)?;
        Ok(Response::new(pb::ReportTaskStatusResponse {}))
    }
}
