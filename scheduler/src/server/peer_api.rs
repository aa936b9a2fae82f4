//! `raft.v1.RaftPeer`: raft messages from peers into the loop, and proposals forwarded by
//! followers. Internal to the cluster (see the security note in raft.proto).

use std::sync::Arc;

use proto::raft::v1 as pb;
use proto::raft::v1::raft_peer_server::RaftPeer;
use raft::eraftpb::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::raft::storage::decode;
use crate::raft::{Proposal, RaftHandle};

pub struct RaftPeerService {
    raft: Arc<RaftHandle>,
}

impl RaftPeerService {
    pub fn new(raft: Arc<RaftHandle>) -> Self {
        RaftPeerService { raft }
    }
}

impl RaftPeerService {
    /// Hands a peer's batch to the Raft loop, in order.
    fn deliver(&self, batch: pb::RaftBatch) -> Result<(), Status> {
        self.raft.transport().learn_claimed(batch.from, &batch.from_address);
        for bytes in batch.messages {
            let message: Message = decode("raft message", &bytes).map_err(|e| Status::invalid_argument(e.to_string()))?;
            self.raft.step(message);
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl RaftPeer for RaftPeerService {
    async fn send(&self, request: Request<pb::RaftBatch>) -> Result<Response<pb::SendAck>, Status> {
        self.deliver(request.into_inner())?;
        Ok(Response::new(pb::SendAck {}))
    }

    async fn stream(&self, request: Request<Streaming<pb::RaftBatch>>) -> Result<Response<pb::SendAck>, Status> {
        let mut batches = request.into_inner();
        while let Some(batch) = batches.message().await? {
            self.deliver(batch)?;
        }
        Ok(Response::new(pb::SendAck {}))
    }

    async fn propose(&self, request: Request<pb::ProposeRequest>) -> Result<Response<pb::ProposeResponse>, Status> {
        let proposal: Proposal =
            serde_json::from_slice(&request.into_inner().proposal).map_err(|e| Status::invalid_argument(format!("not a proposal: {e}")))?;
        let outcome = self.raft.propose(proposal).await;
        Ok(Response::new(pb::ProposeResponse { outcome: serde_json::to_vec(&outcome).expect("outcomes serialize") }))
    }

    async fn propose_batch(&self, request: Request<pb::ProposeBatchRequest>) -> Result<Response<pb::ProposeBatchResponse>, Status> {
        let proposals = request
            .into_inner()
            .proposals
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                serde_json::from_slice::<Proposal>(bytes)
                    .map_err(|e| Status::invalid_argument(format!("proposals[{i}] is not a proposal: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outcomes = self.raft.propose_all(proposals).await;
        let outcomes = outcomes.iter().map(|outcome| serde_json::to_vec(outcome).expect("outcomes serialize")).collect();
        Ok(Response::new(pb::ProposeBatchResponse { outcomes }))
    }
}
