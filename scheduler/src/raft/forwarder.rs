//! A follower's road to the leader's API for the proposals that do not go through Raft's own
//! messages (membership changes; commands go as `MsgPropose`, see `consensus`): proposals that
//! arrive while earlier ones are on their way go to the leader together, in one
//! `raft.v1.RaftPeer/ProposeBatch` call, in their order of arrival, and enter its log back to
//! back.
//!
//! Under load this is what group commit is for the leader's own proposals: one call, one TLS
//! record and one wake-up of the leader's API for many writes instead of one each. A write that
//! finds nothing in flight leaves at once (no added wait); only when [`IN_FLIGHT`] calls are
//! already out do new writes wait, and they then leave together in the next call.
//!
//! Outcomes are as for one proposal: the leader's answer for each, "not leader" when it could
//! not be reached (the caller retries), and "unknown" when the call broke after it was sent or
//! this server saw leadership move while waiting (it may or may not have been applied).

use std::sync::Arc;

use proto::raft::v1::raft_peer_client::RaftPeerClient;
use proto::raft::v1::{ProposeBatchRequest, ProposeRequest};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tonic::transport::Channel;

use super::node::NodeStatus;
use super::{Applied, Proposal, ProposeFailure};

/// Calls to the leader in flight at once; writes arriving while all are out wait for the next.
const IN_FLIGHT: usize = 4;

/// The most proposals in one call.
const MAX_BATCH: usize = 256;

/// A call stops taking proposals once they hold this many bytes (a single larger one goes alone).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

type Outcome = Result<Applied, ProposeFailure>;

/// A proposal waiting to be forwarded, and where its outcome goes.
struct Waiting {
    proposal: Vec<u8>,
    reply: oneshot::Sender<Outcome>,
}

/// The forwarding to one leader (by id and address); cheap to clone.
#[derive(Clone)]
pub struct Forwarder {
    queue: mpsc::UnboundedSender<Waiting>,
    me: u64,
}

impl Forwarder {
    /// Starts forwarding to `leader` over `client`. `status` is this server's Raft status: a
    /// call in flight gives up once it names another leader (or none).
    pub fn start(leader: u64, client: RaftPeerClient<Channel>, status: watch::Receiver<NodeStatus>, me: u64) -> Forwarder {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(run(Leader { id: leader, client, status, me }, waiting));
        Forwarder { queue, me }
    }

    /// Whether its task has ended (its runtime shut down): a new one is needed.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Forwards `proposal` and waits for its outcome.
    pub async fn forward(&self, proposal: &Proposal) -> Outcome {
        let (reply, outcome) = oneshot::channel();
        let proposal = serde_json::to_vec(proposal).expect("proposals serialize");
        if self.queue.send(Waiting { proposal, reply }).is_err() {
            return Err(ProposeFailure::NotLeader { me: self.me });
        }
        outcome.await.unwrap_or(Err(ProposeFailure::OutcomeUnknown))
    }
}

/// Where the calls go.
#[derive(Clone)]
struct Leader {
    id: u64,
    client: RaftPeerClient<Channel>,
    status: watch::Receiver<NodeStatus>,
    me: u64,
}

/// Takes waiting proposals in order and sends them in batches, at most [`IN_FLIGHT`] at once.
async fn run(leader: Leader, mut waiting: mpsc::UnboundedReceiver<Waiting>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = waiting.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut bytes = first.proposal.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match waiting.try_recv() {
                Ok(next) => {
                    bytes += next.proposal.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        tokio::spawn(send(leader.clone(), batch, slot));
    }
}

/// Sends one batch and hands each proposal its outcome.
async fn send(mut leader: Leader, batch: Vec<Waiting>, _slot: OwnedSemaphorePermit) {
    let (proposals, replies): (Vec<Vec<u8>>, Vec<oneshot::Sender<Outcome>>) = batch.into_iter().map(|w| (w.proposal, w.reply)).unzip();
    match call(&mut leader, proposals).await {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        Err(failure) => {
            for reply in replies {
                let _ = reply.send(Err(failure.clone()));
            }
        }
    }
}

/// One `ProposeBatch` call; a leader of an older build without it gets the proposals one
/// `Propose` call each, in order.
async fn call(leader: &mut Leader, proposals: Vec<Vec<u8>>) -> Result<Vec<Outcome>, ProposeFailure> {
    let count = proposals.len();
    let request = ProposeBatchRequest { proposals: proposals.clone() };
    let mut client = leader.client.clone();
    let answer = until_deposed(leader, client.propose_batch(request)).await?;
    match answer {
        Ok(response) => {
            let outcomes = response.into_inner().outcomes;
            if outcomes.len() != count {
                tracing::warn!(
                    leader = leader.id,
                    sent = count,
                    answered = outcomes.len(),
                    "the leader answered a forwarded batch with another count"
                );
                return Err(ProposeFailure::OutcomeUnknown);
            }
            Ok(outcomes.iter().map(|outcome| serde_json::from_slice(outcome).unwrap_or(Err(ProposeFailure::OutcomeUnknown))).collect())
        }
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            let mut outcomes = Vec::with_capacity(count);
            for proposal in proposals {
                let answer = until_deposed(leader, client.propose(ProposeRequest { proposal })).await?;
                outcomes.push(match answer {
                    Ok(response) => serde_json::from_slice(&response.into_inner().outcome).unwrap_or(Err(ProposeFailure::OutcomeUnknown)),
                    Err(status) => Err(failure_of(leader, &status)),
                });
            }
            Ok(outcomes)
        }
        Err(status) => Err(failure_of(leader, &status)),
    }
}

/// What a failed call means: a connection failure is "not leader" (the caller retries); a
/// failure after the request was sent leaves the outcome unknown.
fn failure_of(leader: &Leader, status: &tonic::Status) -> ProposeFailure {
    if status.code() == tonic::Code::Unavailable {
        ProposeFailure::NotLeader { me: leader.me }
    } else {
        tracing::warn!(leader = leader.id, "forwarding to the leader failed: {status}");
        ProposeFailure::OutcomeUnknown
    }
}

/// Awaits `call` unless this server sees another leader (or none) first: a leader that froze
/// or was cut off may never answer, and the proposals may or may not have reached its log.
async fn until_deposed<T>(leader: &mut Leader, call: impl Future<Output = T>) -> Result<T, ProposeFailure> {
    let id = leader.id;
    let status = &mut leader.status;
    let deposed = async move {
        while status.borrow_and_update().leader_id == id {
            if status.changed().await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        answer = call => Ok(answer),
        () = deposed => {
            tracing::warn!(leader = id, "the leader changed while a forwarded proposal was in flight");
            Err(ProposeFailure::OutcomeUnknown)
        }
    }
}
