//! The harness's state machine: an append-only list of strings, plus the membership. Its
//! answers tell where each command landed, so a test can check that every server applied the
//! same commands in the same order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::raft::StateMachine;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ListMachine {
    pub entries: Vec<String>,
    members: BTreeMap<u64, String>,
}

/// The answer to a proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListAnswer {
    /// The command is the list's entry at this position.
    Appended(usize),
    MembershipChanged,
    /// Refused, and the state is unchanged (an empty command, an empty voter address).
    Refused(String),
}

impl StateMachine for ListMachine {
    type Command = String;
    type Answer = ListAnswer;
    type DecodeError = serde_json::Error;
    type SnapshotError = serde_json::Error;

    fn with_members(members: BTreeMap<u64, String>) -> ListMachine {
        ListMachine { entries: Vec::new(), members }
    }

    // JSON, so that even the empty command is not an empty entry.
    fn encode(command: &String) -> Vec<u8> {
        serde_json::to_vec(command).expect("a string serializes")
    }

    fn decode(bytes: &[u8]) -> Result<String, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    fn apply(&mut self, command: String) -> ListAnswer {
        if command.is_empty() {
            return ListAnswer::Refused("an empty command".into());
        }
        self.entries.push(command);
        ListAnswer::Appended(self.entries.len() - 1)
    }

    fn membership_changed() -> ListAnswer {
        ListAnswer::MembershipChanged
    }

    fn check_voter_address(address: &str) -> Result<(), ListAnswer> {
        if address.is_empty() { Err(ListAnswer::Refused("an empty voter address".into())) } else { Ok(()) }
    }

    fn members(&self) -> &BTreeMap<u64, String> {
        &self.members
    }

    fn set_member(&mut self, id: u64, address: String) {
        self.members.insert(id, address);
    }

    fn remove_member(&mut self, id: u64) {
        self.members.remove(&id);
    }

    fn to_snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the list serializes")
    }

    fn from_snapshot(bytes: &[u8]) -> Result<ListMachine, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
