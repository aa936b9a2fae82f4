//! `sched.v1.ClusterApi`: the voters, and adding or removing one at runtime.
//!
//! Membership changes are single-server Raft configuration changes (one at a time; raft-rs
//! refuses a second while one is pending, and the write is retried until the deadline).

use std::sync::Arc;
use std::time::Duration;

use proto::sched::v1 as pb;
use proto::sched::v1::cluster_api_server::ClusterApi;
use tonic::{Request, Response, Status};

use super::errors;
use crate::raft::{Consensus, NodeStatus, Proposal};

/// How long a joining server's address may take to resolve.
const JOIN_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct ClusterApiService {
    consensus: Arc<Consensus>,
}

impl ClusterApiService {
    pub fn new(consensus: Arc<Consensus>) -> Self {
        ClusterApiService { consensus }
    }

    /// The voters as this server knows them: after a linearizable read, or (`stale`) right
    /// after this server's own write, which it has applied already — and which may have
    /// removed this very server, so that no ReadIndex would be answered any more.
    async fn members(&self, stale: bool) -> Result<(Vec<pb::Member>, NodeStatus), Status> {
        let members = self.consensus.read(stale, |a| a.state.members().clone()).await.map_err(errors::consensus)?;
        let status = self.consensus.raft().status();
        let members = members
            .into_iter()
            .map(|(id, address)| pb::Member {
                id,
                address,
                role: if id == status.leader_id { pb::MemberRole::Leader } else { pb::MemberRole::Follower } as i32,
            })
            .collect();
        Ok((members, status))
    }
}

#[tonic::async_trait]
impl ClusterApi for ClusterApiService {
    async fn members(&self, _request: Request<pb::MembersRequest>) -> Result<Response<pb::MembersResponse>, Status> {
        let (members, status) = ClusterApiService::members(self, false).await?;
        Ok(Response::new(pb::MembersResponse {
            members,
            leader_id: status.leader_id,
            term: status.term,
            commit_index: status.commit,
            applied_index: status.applied,
            answered_by: status.id,
        }))
    }

    async fn join(&self, request: Request<pb::JoinRequest>) -> Result<Response<pb::JoinResponse>, Status> {
        let request = request.into_inner();
        if request.id == 0 {
            return Err(Status::invalid_argument("`id` must be a positive server id"));
        }
        crate::state::check_host_port("`address`", &request.address).map_err(|e| Status::invalid_argument(e.message))?;
        // The name must resolve; asked off the async workers (a slow resolver would stall
        // them) and given up after a while.
        let resolved = tokio::time::timeout(JOIN_LOOKUP_TIMEOUT, tokio::net::lookup_host(request.address.clone())).await;
        let found = resolved.ok().and_then(Result::ok).is_some_and(|mut addresses| addresses.next().is_some());
        if !found {
            return Err(Status::invalid_argument(format!(
                "`address` \"{}\" is not HOST:PORT of a reachable name: give the address the new server listens on",
                request.address
            )));
        }
        let known = self.consensus.read(false, |a| a.state.members().get(&request.id).cloned()).await.map_err(errors::consensus)?;
        match known {
            Some(address) if address == request.address => {}
            Some(address) => {
                return Err(Status::already_exists(format!(
                    "server {} is already a member at {address}: remove it first (sched cluster leave {})",
                    request.id, request.id
                )));
            }
            None => {
                self.consensus
                    .write(Proposal::AddVoter { id: request.id, address: request.address })
                    .await
                    .map_err(errors::consensus)?
                    .map_err(errors::rejection)?;
            }
        }
        let (members, _) = ClusterApiService::members(self, true).await?;
        Ok(Response::new(pb::JoinResponse { members }))
    }

    async fn leave(&self, request: Request<pb::LeaveRequest>) -> Result<Response<pb::LeaveResponse>, Status> {
        let id = request.into_inner().id;
        let members = self.consensus.read(false, |a| a.state.members().clone()).await.map_err(errors::consensus)?;
        if !members.contains_key(&id) {
            let ids: Vec<String> = members.keys().map(u64::to_string).collect();
            return Err(Status::not_found(format!("server {id} is not a member; the members are {}", ids.join(", "))));
        }
        if members.len() == 1 {
            return Err(Status::failed_precondition(format!("server {id} is the last member: a cluster cannot remove its last server")));
        }
        self.consensus.write(Proposal::RemoveVoter { id }).await.map_err(errors::consensus)?.map_err(errors::rejection)?;
        let (members, _) = ClusterApiService::members(self, true).await?;
        Ok(Response::new(pb::LeaveResponse { members }))
    }
}
