//! What the API needs from Raft: writes from any server, and reads at a chosen consistency.
//!
//! [`Consensus::write`] proposes on this server when it leads. A follower hands a command to
//! its own Raft loop, which sends it to the leader as a `MsgPropose` with its other messages
//! (as etcd does: no call of its own, and no answer over the wire) and answers it when the
//! entry is applied here. Membership changes go to the leader's API instead
//! (`raft.v1.RaftPeer/ProposeBatch`, with the other proposals waiting at that moment:
//! [`Forwarder`]). While there is no leader, or the leader moved before the proposal entered
//! its log, it retries until its deadline. When leadership changes after the proposal may have
//! entered the log, the outcome is unknown and that is what the caller hears
//! ([`ConsensusError::OutcomeUnknown`]) — never a guess.
//!
//! [`Consensus::read`] answers after a ReadIndex round (linearizable: the caller sees every
//! write acknowledged before the read began) unless the caller accepts a stale read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proto::raft::v1::raft_peer_client::RaftPeerClient;

use super::forwarder::Forwarder;
use super::grpc_transport::MAX_PEER_MESSAGE_BYTES;
use super::node::RaftHandle;
use super::storage::AppliedState;
use super::{Applied, Proposal, ProposeFailure};
use crate::state::Command;

/// How long a write or a linearizable read may wait for a leader.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
/// One ReadIndex attempt; raft-rs silently drops reads while there is no leader.
const READ_ATTEMPT: Duration = Duration::from_millis(200);
const RETRY_PAUSE: Duration = Duration::from_millis(30);

/// Why a write or read got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    #[error("no leader could be reached within {0:?}: is a majority of the servers up?")]
    NoLeader(Duration),
    #[error("leadership changed while the request was in flight: it may or may not have been applied; check, then retry")]
    OutcomeUnknown,
    #[error(
        "the leader took the request but did not commit it within {0:?} (a majority of the servers may be down, cut off or slow to write): it may or may not be applied; check, then retry"
    )]
    NotCommitted(Duration),
    #[error("this server was removed from the cluster: ask another server")]
    Removed,
    #[error("the raft loop of this server has stopped")]
    Stopped,
}

/// Reads and writes through Raft, from any server.
pub struct Consensus {
    raft: RaftHandle,
    deadline: Duration,
    /// How channels to the leader are made (security, timeouts).
    connections: transport::Transport,
    /// One forwarder per leader this server has forwarded to (by id and address).
    leaders: Mutex<HashMap<(u64, String), Forwarder>>,
}

impl Consensus {
    pub fn new(raft: RaftHandle, connections: transport::Transport) -> Consensus {
        Consensus { raft, deadline: DEFAULT_DEADLINE, connections, leaders: Mutex::default() }
    }

    pub fn raft(&self) -> &RaftHandle {
        &self.raft
    }

    /// Applies `proposal` through the leader and returns the state machine's answer.
    pub async fn write(&self, proposal: Proposal) -> Result<Applied, ConsensusError> {
        let start = Instant::now();
        loop {
            let status = self.raft.status();
            if status.removed {
                return Err(ConsensusError::Removed);
            }
            let leads = status.leader_id == self.raft.id();
            let attempt = if leads || (status.leader_id != 0 && matches!(proposal, Proposal::Command(_))) {
                // The leader proposes; a follower's Raft loop sends a command to the leader (or
                // answers `NotLeader` when it has not heard from one lately, and this retries).
                // A leader that cannot commit steps down within an election timeout (check
                // quorum), which answers OutcomeUnknown; the timeout is a last resort.
                match tokio::time::timeout(self.deadline, self.raft.propose(proposal.clone())).await {
                    Ok(answer) => answer,
                    Err(_) => return Err(ConsensusError::NotCommitted(self.deadline)),
                }
            } else if status.leader_id != 0 {
                self.forward(status.leader_id, &proposal).await
            } else {
                Err(ProposeFailure::NotLeader { me: self.raft.id() })
            };
            match attempt {
                Ok(applied) => return Ok(applied),
                Err(ProposeFailure::OutcomeUnknown) => return Err(ConsensusError::OutcomeUnknown),
                Err(ProposeFailure::Stopped) => return Err(ConsensusError::Stopped),
                Err(retryable @ (ProposeFailure::NotLeader { .. } | ProposeFailure::Dropped { .. })) => {
                    if start.elapsed() >= self.deadline {
                        tracing::debug!("giving up on a write: {retryable}");
                        return Err(ConsensusError::NoLeader(self.deadline));
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    /// Proposes `commands` on this server, which leads, in their order and pipelined: each is
    /// handed to the Raft loop before the one before has committed, so many share an fsync.
    /// Answers come in the same order. Meant for the leader's own duties; a server that does
    /// not lead answers every command `NoLeader` (its duties are the leader's).
    pub async fn write_pipelined(&self, commands: Vec<Command>) -> Vec<Result<Applied, ConsensusError>> {
        let count = commands.len();
        let status = self.raft.status();
        if status.leader_id != self.raft.id() || status.removed {
            return (0..count).map(|_| Err(ConsensusError::NoLeader(self.deadline))).collect();
        }
        // The loop itself answers `NotLeader` to what comes after a loss of leadership.
        let proposals = commands.into_iter().map(Proposal::Command).collect();
        match tokio::time::timeout(self.deadline, self.raft.propose_all(proposals)).await {
            Ok(answers) => answers
                .into_iter()
                .map(|answer| {
                    answer.map_err(|failure| match failure {
                        ProposeFailure::OutcomeUnknown => ConsensusError::OutcomeUnknown,
                        ProposeFailure::Stopped => ConsensusError::Stopped,
                        ProposeFailure::NotLeader { .. } | ProposeFailure::Dropped { .. } => ConsensusError::NoLeader(self.deadline),
                    })
                })
                .collect(),
            Err(_) => (0..count).map(|_| Err(ConsensusError::NotCommitted(self.deadline))).collect(),
        }
    }

    /// Sends the proposal to the leader through this server's [`Forwarder`] for it, which
    /// puts proposals that arrive while earlier ones are in flight into one call.
    async fn forward(&self, leader: u64, proposal: &Proposal) -> Result<Applied, ProposeFailure> {
        let Some(address) = self.raft.transport().address_of(leader) else {
            return Err(ProposeFailure::NotLeader { me: self.raft.id() });
        };
        let forwarder = {
            let mut forwarders = self.leaders.lock().expect("forwarders lock");
            match forwarders.get(&(leader, address.clone())) {
                Some(forwarder) if !forwarder.is_closed() => forwarder.clone(),
                _ => {
                    let Ok(channel) = self.connections.connect_lazy(&address, transport::Profile::SERVER_TO_SERVER) else {
                        tracing::warn!(leader, "the leader's address {address:?} is not HOST:PORT");
                        return Err(ProposeFailure::NotLeader { me: self.raft.id() });
                    };
                    let client = RaftPeerClient::new(channel)
                        .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                        .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
                    let forwarder = Forwarder::start(leader, client, self.raft.watch_status(), self.raft.id());
                    forwarders.insert((leader, address), forwarder.clone());
                    forwarder
                }
            }
        };
        forwarder.forward(proposal).await
    }

    /// Waits until a read on this server would be linearizable (unless `stale`), then hands
    /// the applied state to `read`.
    pub async fn read<T>(&self, stale: bool, read: impl FnOnce(&AppliedState) -> T) -> Result<T, ConsensusError> {
        if !stale {
            self.read_index().await?;
        }
        Ok(read(&self.raft.state()))
    }

    async fn read_index(&self) -> Result<(), ConsensusError> {
        let start = Instant::now();
        loop {
            if self.raft.status().removed {
                return Err(ConsensusError::Removed);
            }
            match tokio::time::timeout(READ_ATTEMPT, self.raft.read_index()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(_)) => return Err(ConsensusError::Stopped),
                Err(_) if start.elapsed() >= self.deadline => return Err(ConsensusError::NoLeader(self.deadline)),
                Err(_) => {}
            }
        }
    }
}
