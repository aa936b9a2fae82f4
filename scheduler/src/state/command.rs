//! The commands that change the cluster state, as they are written into the Raft log.
//!
//! Commands are JSON inside a versioned envelope (`{"v":1,"command":{...}}`): a server that
//! meets a version it does not know refuses it loudly instead of misreading it, and an upgrade
//! that changes a command adds a new version beside the old one. Every value a command needs to
//! be applied deterministically (the time, the resolved image digest, the ids of new tasks) is
//! decided by the proposer and carried inside it.

use std::collections::BTreeMap;

use pki::Role;
use serde::{Deserialize, Serialize};

use super::{DesiredState, HealthStatus, NodeStatus, Task, TaskState};
use crate::spec::ServiceSpec;

/// The command format this build writes and reads.
pub const COMMAND_VERSION: u32 = 1;

/// One change to the cluster state.
// Values that are serialized and sent once: boxing the spec would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Command {
    /// Creates a service or adds a revision; an unchanged spec (and image digest) changes
    /// nothing.
    ApplyService {
        spec: ServiceSpec,
        /// The digest the image tag resolved to; empty when it could not be resolved.
        image_digest: String,
        now_ms: u64,
        /// Why the digest could not be resolved (for the service's events); empty otherwise.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        unresolved_reason: String,
    },
    /// Sets the desired task count (no new revision).
    ScaleService { name: String, count: u32, now_ms: u64 },
    /// Removes the service; its tasks are told to stop.
    DeleteService { name: String, now_ms: u64 },
    /// Adds a revision that copies an earlier one's spec (`None`: the one before the current).
    RollbackService { name: String, to_revision: Option<u64>, now_ms: u64 },
    /// Records a node, or updates the one with the same name.
    RegisterNode {
        name: String,
        address: String,
        cpu_millis: u32,
        memory_mib: u32,
        labels: BTreeMap<String, String>,
        now_ms: u64,
        /// HOST:PORT of the agent's API (task logs); empty in commands of older agents.
        #[serde(default)]
        api_address: String,
    },
    /// Marks a node up or down (the leader decides from heartbeats).
    SetNodeStatus { node_id: u64, status: NodeStatus, now_ms: u64 },
    /// Creates or replaces tasks (the reconciler's placements).
    PutTasks { tasks: Vec<Task>, now_ms: u64 },
    /// Takes running tasks out of every target group; they are stopped at `until_ms`.
    DrainTasks { task_ids: Vec<String>, until_ms: u64, now_ms: u64 },
    /// Sets which state tasks should be in (e.g. stop before replacing).
    SetTaskDesiredState { task_ids: Vec<String>, desired: DesiredState, now_ms: u64 },
    /// An agent's report of a task's observed state.
    ReportTaskStatus {
        node_id: u64,
        task_id: String,
        state: TaskState,
        exit_code: Option<i32>,
        endpoints: Vec<String>,
        health: HealthStatus,
        message: String,
        now_ms: u64,
    },
    /// The autoscaler moves the desired count from `from` to `to` (refused when the count is
    /// no longer `from`); `reason` becomes the service's event and last decision.
    Autoscale { name: String, from: u32, to: u32, reason: String, now_ms: u64 },
    /// Forgets tasks that are stopped for good.
    RemoveTasks { task_ids: Vec<String> },
    /// Adds events that a controller decided, worded by it (e.g. the reconciler's crash-loop
    /// backoff): the state machine records them as they are, so no controller's policy ends up
    /// computed inside the state machine. Events of services that are gone are dropped.
    RecordEvents { events: Vec<ServiceEvent>, now_ms: u64 },
    /// Forgets a node: its tasks are lost and placed elsewhere, and the certificate of the agent
    /// with its name is revoked (that agent must join again with a new token).
    RemoveNode { name: String, now_ms: u64 },
    /// Records a join token: only the digest of its secret ([`pki::JoinToken::record`]).
    AddToken {
        id: String,
        role: Role,
        /// SHA-256 of the secret, 64 lowercase hex digits ([`pki::TokenRecord::digest_hex`]).
        digest_hex: String,
        /// Unix milliseconds from which it is refused; `None`: until revoked.
        expires_ms: Option<u64>,
        now_ms: u64,
    },
    /// Removes a token: it joins nobody from then on.
    RevokeToken { id: String, now_ms: u64 },
    /// Makes a certificate the current one of its holder (a join or a renewal): a newer one for
    /// the same role and name replaces the entry, if the holder is still as `holder` expects
    /// (so two joins under one name cannot both win).
    RecordCertificate {
        role: Role,
        name: String,
        serial: String,
        not_after_ms: u64,
        now_ms: u64,
        #[serde(default)]
        holder: HolderCheck,
    },
    /// Refuses a certificate until it would have expired anyway (`not_after_ms`).
    RevokeCertificate { serial: String, not_after_ms: u64, now_ms: u64 },
}

/// What a [`Command::RecordCertificate`] expects of the name's current certificate: a
/// compare-and-set, decided where the command is applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HolderCheck {
    /// Whatever holds the name (admins and readers may have several certificates).
    #[default]
    Any,
    /// No valid certificate holds the name (a node joining).
    Vacant,
    /// The name's current certificate is this serial (a node renewing).
    Current(String),
}

/// An event for one service's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEvent {
    pub service: String,
    pub message: String,
}

#[derive(Serialize, Deserialize)]
struct Envelope<C> {
    v: u32,
    command: C,
}

/// Why bytes from the log are not a command this build can apply.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("command format version {0} is not known to this build (it knows {COMMAND_VERSION}): upgrade this server")]
    UnknownVersion(u32),
    #[error("corrupt command: {0}")]
    Corrupt(#[from] serde_json::Error),
}

impl Command {
    /// The bytes written into the Raft log.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&Envelope { v: COMMAND_VERSION, command: self }).expect("commands serialize")
    }

    /// Reads bytes written by [`Command::encode`] of this or an older version. Every server
    /// decodes every entry it applies, so the bytes are parsed once; only bytes that are not a
    /// command of this version are parsed again, for their version alone (a newer server's
    /// command is then told apart from a corrupt one).
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        match serde_json::from_slice::<Envelope<Command>>(bytes) {
            Ok(envelope) if envelope.v == COMMAND_VERSION => Ok(envelope.command),
            Ok(envelope) => Err(DecodeError::UnknownVersion(envelope.v)),
            Err(corrupt) => match serde_json::from_slice::<Version>(bytes) {
                Ok(version) if version.v != COMMAND_VERSION => Err(DecodeError::UnknownVersion(version.v)),
                _ => Err(DecodeError::Corrupt(corrupt)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_envelope() {
        let cmd = Command::ScaleService { name: "quotes".into(), count: 3, now_ms: 7 };
        let bytes = cmd.encode();
        assert!(String::from_utf8_lossy(&bytes).starts_with("{\"v\":1,"));
        assert_eq!(Command::decode(&bytes).unwrap(), cmd);
    }

    #[test]
    fn a_current_version_that_does_not_parse_is_corrupt() {
        let err = Command::decode(br#"{"v":1,"command":{"op":"no_such_op"}}"#).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt(_)), "{err}");
    }

    #[test]
    fn refuses_a_known_command_under_an_unknown_version() {
        let mut bytes = Command::ScaleService { name: "quotes".into(), count: 3, now_ms: 7 }.encode();
        bytes[5] = b'9';
        let err = Command::decode(&bytes).unwrap_err();
        assert!(matches!(err, DecodeError::UnknownVersion(9)), "{err}");
    }

    #[test]
    fn refuses_an_unknown_version() {
        let err = Command::decode(br#"{"v":2,"command":{"op":"future"}}"#).unwrap_err();
        assert!(matches!(err, DecodeError::UnknownVersion(2)), "{err}");
    }
}
