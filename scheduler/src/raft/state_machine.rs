//! What the Raft layer needs from the state it replicates: the [`StateMachine`] trait, and its
//! implementation by sched's [`ClusterState`].
//!
//! The Raft loop ([`super::node`]) and storage ([`super::storage`]) are generic over it, so the
//! in-memory harness can drive them with a trivial machine while the servers run the real one.
//! The membership (voter id -> address) is part of the state machine: it is replicated with it,
//! saved in its snapshots, and read back by a server that restarts or installs a snapshot.

use std::collections::BTreeMap;

use crate::state::{ClusterState, Command, DecodeError, Outcome, Rejection, check_host_port};

/// A deterministic state machine replicated by Raft.
///
/// Every method that changes the state must give the same result on every server for the same
/// inputs: no clocks, no randomness, no I/O.
pub trait StateMachine: Default + Send + Sync + Sized + 'static {
    /// What a proposal carries to the state machine.
    type Command: Send + 'static;
    /// The state machine's answer to one command, handed back to the proposer.
    type Answer: Send + 'static;
    /// Why a committed entry could not be read as a command.
    type DecodeError: std::error::Error + Send + Sync + 'static;
    /// Why a snapshot could not be read back.
    type SnapshotError: std::error::Error + Send + Sync + 'static;

    /// The state of a new cluster, which knows only its initial voters.
    fn with_members(members: BTreeMap<u64, String>) -> Self;

    /// The command as stored in a log entry. Never empty: an empty entry is one raft-rs
    /// appends itself (a new leader's), which answers no proposal.
    fn encode(command: &Self::Command) -> Vec<u8>;
    /// Reads a committed entry back. An error stops the server (never a skip).
    fn decode(bytes: &[u8]) -> Result<Self::Command, Self::DecodeError>;
    /// Applies one committed command.
    fn apply(&mut self, command: Self::Command) -> Self::Answer;

    /// Whether applying a command that gave `answer` may have changed the state (the leader's
    /// controllers look again only after a change). When unsure, true.
    fn changed(answer: &Self::Answer) -> bool {
        let _ = answer;
        true
    }

    /// The answer the proposer of an applied membership change gets.
    fn membership_changed() -> Self::Answer;
    /// Checks a voter's address before a proposal to add it enters the log; `Err` is the answer
    /// the caller gets instead.
    fn check_voter_address(address: &str) -> Result<(), Self::Answer>;
    /// The voters and their addresses.
    fn members(&self) -> &BTreeMap<u64, String>;
    /// Records a voter's address (from an applied membership change).
    fn set_member(&mut self, id: u64, address: String);
    /// Forgets a voter (from an applied membership change).
    fn remove_member(&mut self, id: u64);

    /// The whole state, as saved in a snapshot.
    fn to_snapshot(&self) -> Vec<u8>;
    fn from_snapshot(bytes: &[u8]) -> Result<Self, Self::SnapshotError>;
}

impl StateMachine for ClusterState {
    type Command = Command;
    type Answer = Result<Outcome, Rejection>;
    type DecodeError = DecodeError;
    type SnapshotError = serde_json::Error;

    fn with_members(members: BTreeMap<u64, String>) -> ClusterState {
        ClusterState::with_members(members)
    }

    fn encode(command: &Command) -> Vec<u8> {
        command.encode()
    }

    fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        Command::decode(bytes)
    }

    fn apply(&mut self, command: Command) -> Result<Outcome, Rejection> {
        ClusterState::apply(self, command)
    }

    /// A rejected command changes nothing ([`ClusterState::apply`]'s rule), nor does one whose
    /// service needed no change (an apply of the same file, a scale to the current count).
    fn changed(answer: &Result<Outcome, Rejection>) -> bool {
        !matches!(answer, Err(_) | Ok(Outcome::Service { changed: false, .. }))
    }

    fn membership_changed() -> Result<Outcome, Rejection> {
        Ok(Outcome::Done)
    }

    fn check_voter_address(address: &str) -> Result<(), Result<Outcome, Rejection>> {
        check_host_port("server address", address).map_err(Err)
    }

    fn members(&self) -> &BTreeMap<u64, String> {
        ClusterState::members(self)
    }

    fn set_member(&mut self, id: u64, address: String) {
        ClusterState::set_member(self, id, address);
    }

    fn remove_member(&mut self, id: u64) {
        ClusterState::remove_member(self, id);
    }

    fn to_snapshot(&self) -> Vec<u8> {
        ClusterState::to_snapshot(self)
    }

    fn from_snapshot(bytes: &[u8]) -> Result<ClusterState, serde_json::Error> {
        ClusterState::from_snapshot(bytes)
    }
}
