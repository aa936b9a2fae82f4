//! `sched.v1.ServiceApi`: services, tasks and nodes. Writes go through [`Consensus::write`]
//! (from any server), reads through [`Consensus::read`] (linearizable unless `stale`). An apply
//! first pins the image tag to a digest ([`ImagePinner`]) on the server that takes it. Reads
//! that show metrics (services, tasks, describe) are passed on to the leader unless `stale`:
//! it holds every node's samples, a follower only its own agents'.

use std::sync::Arc;

use proto::sched::v1 as pb;
use proto::sched::v1::service_api_client::ServiceApiClient;
use proto::sched::v1::service_api_server::ServiceApi;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use super::heartbeats::Heartbeats;
use super::image_pin::{ImagePinner, Resolution};
use super::to_leader::{self, ToLeader};
use super::{errors, now_ms, views};
use crate::raft::{Consensus, Proposal};
use crate::spec::ServiceSpec;
use crate::state::{Command, Outcome};

pub struct ServiceApiService {
    consensus: Arc<Consensus>,
    /// The agents' latest metrics as this server has seen them (a follower forwards them to the
    /// leader, so the leader knows every node's; another server knows its own agents').
    heartbeats: Arc<Heartbeats>,
    /// Resolves image tags to digests at apply time.
    pinner: Arc<ImagePinner>,
    /// Reads that show metrics are answered by the leader, which holds every node's.
    to_leader: Arc<ToLeader>,
}

impl ServiceApiService {
    pub fn new(consensus: Arc<Consensus>, heartbeats: Arc<Heartbeats>, pinner: Arc<ImagePinner>, to_leader: Arc<ToLeader>) -> Self {
        ServiceApiService { consensus, heartbeats, pinner, to_leader }
    }

    /// The leader's answer to a read that shows metrics (CPU, the autoscaler's view): a
    /// follower holds only its own agents' samples. `None` when this server should answer
    /// itself: it leads, the read is stale, the request was forwarded already, or the leader
    /// cannot be reached (then the local copy is better than no answer).
    async fn answer_of_leader<Req, Resp, Fut>(
        &self,
        request: &Request<Req>,
        stale: bool,
        call: impl FnOnce(ServiceApiClient<Channel>, Request<Req>) -> Fut,
    ) -> Option<Result<Response<Resp>, Status>>
    where
        Req: Clone,
        Fut: std::future::Future<Output = Result<Response<Resp>, Status>>,
    {
        if stale {
            return None;
        }
        let (address, channel) = self.to_leader.channel(request)?;
        let call = call(ServiceApiClient::new(channel), to_leader::forwarded(request.get_ref().clone()));
        match tokio::time::timeout(to_leader::FORWARD_TIMEOUT, call).await {
            Ok(Ok(response)) => Some(Ok(response)),
            Ok(Err(status)) if !matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown) => {
                Some(Err(status))
            }
            Ok(Err(status)) => {
                tracing::debug!(leader = %address, "the leader did not answer a forwarded read, answering locally: {}", status.message());
                None
            }
            Err(_) => {
                tracing::debug!(leader = %address, "the leader did not answer a forwarded read in time, answering locally");
                None
            }
        }
    }

    /// Fills each task's CPU and memory from the latest heartbeat of its node.
    fn with_metrics(&self, mut tasks: Vec<pb::Task>) -> Vec<pb::Task> {
        for task in &mut tasks {
            if let Some(m) = self.heartbeats.latest(task.node_id, &task.id) {
                task.cpu_fraction = m.cpu_fraction;
                task.memory_bytes = m.memory_bytes;
                task.metrics_unix_ms = m.measured_unix_ms;
            }
        }
        tasks
    }

    async fn write(&self, command: Command) -> Result<Outcome, Status> {
        self.consensus.write(Proposal::Command(command)).await.map_err(errors::consensus)?.map_err(errors::rejection)
    }

    async fn write_service(&self, command: Command, what: &str) -> Result<(pb::Service, bool), Status> {
        match self.write(command).await? {
            Outcome::Service { service, changed } => Ok((views::summary(&service), changed)),
            _ => Err(errors::unexpected(what)),
        }
    }
}

fn required_name(name: &str) -> Result<(), Status> {
    if name.is_empty() { Err(Status::invalid_argument("`name` is required: the service's name")) } else { Ok(()) }
}

fn not_found(name: &str) -> Status {
    Status::not_found(format!("no service named \"{name}\""))
}

#[tonic::async_trait]
impl ServiceApi for ServiceApiService {
    async fn apply(&self, request: Request<pb::ApplyRequest>) -> Result<Response<pb::ApplyResponse>, Status> {
        let spec = request.into_inner().spec.ok_or_else(|| Status::invalid_argument("`spec` is required"))?;
        let spec = ServiceSpec::from_proto(spec).map_err(errors::invalid_spec)?;
        let reference = registry::Reference::parse(&spec.image)
            .map_err(|e| Status::invalid_argument(format!("the service spec is not valid:\n  `image`: {e}")))?;
        let (image_digest, unresolved_reason) = match self.pinner.resolve(&reference).await {
            Resolution::Pinned(digest) => (digest.to_string(), String::new()),
            Resolution::Unresolved { reason } => {
                tracing::warn!(service = %spec.name, image = %spec.image, "image digest not resolved, tasks will pull by tag: {reason}");
                (String::new(), reason)
            }
        };
        let command = Command::ApplyService { spec, image_digest, now_ms: now_ms(), unresolved_reason };
        let (service, changed) = self.write_service(command, "apply").await?;
        Ok(Response::new(pb::ApplyResponse { service: Some(service), changed }))
    }

    async fn list_services(&self, request: Request<pb::ListServicesRequest>) -> Result<Response<pb::ListServicesResponse>, Status> {
        if let Some(answer) =
            self.answer_of_leader(&request, request.get_ref().stale, |mut c, r| async move { c.list_services(r).await }).await
        {
            return answer;
        }
        let now = now_ms();
        let cpu = self.heartbeats.cpu_samples(now);
        let services = self
            .consensus
            .read(request.into_inner().stale, |a| a.state.services().map(|s| views::service(&a.state, s, &cpu, now)).collect())
            .await
            .map_err(errors::consensus)?;
        Ok(Response::new(pb::ListServicesResponse { services }))
    }

    async fn list_tasks(&self, request: Request<pb::ListTasksRequest>) -> Result<Response<pb::ListTasksResponse>, Status> {
        if let Some(answer) =
            self.answer_of_leader(&request, request.get_ref().stale, |mut c, r| async move { c.list_tasks(r).await }).await
        {
            return answer;
        }
        let request = request.into_inner();
        let tasks = self
            .consensus
            .read(request.stale, |a| {
                if !request.service.is_empty() && a.state.service(&request.service).is_none() {
                    return Err(not_found(&request.service));
                }
                Ok(a.state.tasks().filter(|t| request.service.is_empty() || t.service == request.service).map(views::task).collect())
            })
            .await
            .map_err(errors::consensus)??;
        Ok(Response::new(pb::ListTasksResponse { tasks: self.with_metrics(tasks) }))
    }

    async fn list_nodes(&self, request: Request<pb::ListNodesRequest>) -> Result<Response<pb::ListNodesResponse>, Status> {
        let nodes = self
            .consensus
            .read(request.into_inner().stale, |a| a.state.nodes().map(views::node).collect())
            .await
            .map_err(errors::consensus)?;
        Ok(Response::new(pb::ListNodesResponse { nodes }))
    }

    async fn describe_service(
        &self,
        request: Request<pb::DescribeServiceRequest>,
    ) -> Result<Response<pb::DescribeServiceResponse>, Status> {
        if let Some(answer) =
            self.answer_of_leader(&request, request.get_ref().stale, |mut c, r| async move { c.describe_service(r).await }).await
        {
            return answer;
        }
        let request = request.into_inner();
        required_name(&request.name)?;
        let now = now_ms();
        let cpu = self.heartbeats.cpu_samples(now);
        let response = self
            .consensus
            .read(request.stale, |a| {
                let s = a.state.service(&request.name).ok_or_else(|| not_found(&request.name))?;
                Ok::<_, Status>(pb::DescribeServiceResponse {
                    service: Some(views::service(&a.state, s, &cpu, now)),
                    revisions: s.revisions.iter().map(|r| views::revision(r)).collect(),
                    tasks: a.state.tasks_of(&s.name).map(views::task).collect(),
                    events: s.events.iter().map(|e| views::event(&s.name, e)).collect(),
                })
            })
            .await
            .map_err(errors::consensus)??;
        let response = pb::DescribeServiceResponse { tasks: self.with_metrics(response.tasks), ..response };
        Ok(Response::new(response))
    }

    async fn scale(&self, request: Request<pb::ScaleRequest>) -> Result<Response<pb::ScaleResponse>, Status> {
        let request = request.into_inner();
        required_name(&request.name)?;
        let command = Command::ScaleService { name: request.name, count: request.count, now_ms: now_ms() };
        let (service, _) = self.write_service(command, "scale").await?;
        Ok(Response::new(pb::ScaleResponse { service: Some(service) }))
    }

    async fn delete(&self, request: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        let request = request.into_inner();
        required_name(&request.name)?;
        match self.write(Command::DeleteService { name: request.name, now_ms: now_ms() }).await? {
            Outcome::Deleted { .. } => Ok(Response::new(pb::DeleteResponse {})),
            _ => Err(errors::unexpected("delete")),
        }
    }

    async fn history(&self, request: Request<pb::HistoryRequest>) -> Result<Response<pb::HistoryResponse>, Status> {
        let request = request.into_inner();
        required_name(&request.name)?;
        let response = self
            .consensus
            .read(request.stale, |a| {
                let s = a.state.service(&request.name).ok_or_else(|| not_found(&request.name))?;
                Ok::<_, Status>(pb::HistoryResponse {
                    revisions: s.revisions.iter().map(|r| views::revision(r)).collect(),
                    current: s.current,
                })
            })
            .await
            .map_err(errors::consensus)??;
        Ok(Response::new(response))
    }

    async fn rollback(&self, request: Request<pb::RollbackRequest>) -> Result<Response<pb::RollbackResponse>, Status> {
        let request = request.into_inner();
        required_name(&request.name)?;
        let to_revision = (request.to_revision != 0).then_some(request.to_revision);
        let command = Command::RollbackService { name: request.name, to_revision, now_ms: now_ms() };
        let (service, _) = self.write_service(command, "rollback").await?;
        Ok(Response::new(pb::RollbackResponse { service: Some(service) }))
    }

    async fn remove_node(&self, request: Request<pb::RemoveNodeRequest>) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let request = request.into_inner();
        required_name(&request.name)?;
        match self.write(Command::RemoveNode { name: request.name, now_ms: now_ms() }).await? {
            Outcome::Done => Ok(Response::new(pb::RemoveNodeResponse {})),
            _ => Err(errors::unexpected("remove node")),
        }
    }
}
