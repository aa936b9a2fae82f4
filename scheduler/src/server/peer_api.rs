//! `raft.v1.RaftPeer`: raft messages from peers into the loop, and proposals forwarded by
//! followers. Internal to the cluster (see the security note in raft.proto).

use std::sync::Arc;

use proto::raft::v1 as pb;
use proto::raft::v1::raft_peer_server::RaftPeer;
use raft::eraftpb::Message;
use tonic::{Request, Response, Status};

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

#[tonic::async_trait]
impl RaftPeer for RaftPeerService {
    async fn send(&self, request: Request<pb::RaftBatch>) -> Result<Response<pb::SendAck>, Status> {
        let batch = request.into_inner();
        self.raft.transport().learn_claimed(batch.from, &batch.from_address);
        for bytes in batch.messages {
            let message: Message = decode("raft message", &bytes).map_err(|e| Status::invalid_argument(e.to_string()))?;
            self.raft.step(message);
        }
        Ok(Response::new(pb::SendAck {}))
    }

    async fn propose(&self, request: Request<pb::ProposeRequest>) -> Result<Response<pb::ProposeResponse>, Status> {
        let proposal: Proposal =
            serde_json::from_slice(&request.into_inner().proposal).map_err(|e| Status::invalid_argument(format!("not a proposal: {e}")))?;
        let outcome = self.raft.propose(proposal).await;
        Ok(Response::new(pb::ProposeResponse { outcome: serde_json::to_vec(&outcome).expect("outcomes serialize") }))
    }
}
