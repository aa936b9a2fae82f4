//! `sched.v1.RouteApi`: the route table for ingresses and `sched get routes`.
//!
//! `WatchRoutes` sends the whole table at once and again after every applied entry that
//! changes it (level-triggered, like the agents' assignments), so a new rule or a task that
//! became healthy or stopped reaches every ingress within milliseconds of its commit.

use std::sync::Arc;

use proto::sched::v1 as pb;
use proto::sched::v1::route_api_server::RouteApi;
use tonic::{Request, Response, Status};

use super::applied_stream::{AppliedStream, applied_stream};
use super::errors;
use crate::raft::Consensus;
use crate::routes::{RouteEntry, route_table};
use crate::state::ClusterState;

pub struct RouteApiService {
    consensus: Arc<Consensus>,
}

impl RouteApiService {
    pub fn new(consensus: Arc<Consensus>) -> Self {
        RouteApiService { consensus }
    }
}

/// The state's route table as the wire message, read at Raft `index`.
fn table(state: &ClusterState, index: u64) -> pb::RouteTable {
    pb::RouteTable { index, rules: route_table(state).iter().map(rule).collect() }
}

fn rule(e: &RouteEntry) -> pb::RouteRule {
    pb::RouteRule {
        service: e.service.clone(),
        host: e.host.clone(),
        path_prefix: e.path_prefix.clone(),
        port: u32::from(e.port),
        timeout_ms: e.timeout_ms,
        targets: e
            .targets
            .iter()
            .map(|t| pb::RouteTarget { task_id: t.task_id.clone(), address: t.address.clone(), healthy: t.healthy })
            .collect(),
    }
}

type TableStream = AppliedStream<pb::RouteTable>;

#[tonic::async_trait]
impl RouteApi for RouteApiService {
    async fn list_routes(&self, request: Request<pb::ListRoutesRequest>) -> Result<Response<pb::RouteTable>, Status> {
        let stale = request.into_inner().stale;
        let table = self.consensus.read(stale, |a| table(&a.state, a.index)).await.map_err(errors::consensus)?;
        Ok(Response::new(table))
    }

    type WatchRoutesStream = TableStream;

    async fn watch_routes(&self, _request: Request<pb::WatchRoutesRequest>) -> Result<Response<TableStream>, Status> {
        let first = self.consensus.read(false, |a| table(&a.state, a.index)).await.map_err(errors::consensus)?;
        let raft = self.consensus.raft().clone();
        Ok(Response::new(applied_stream(
            first,
            raft,
            |applied| table(&applied.state, applied.index),
            |last, next| next.rules != last.rules,
        )))
    }
}
