//! Requests a follower passes on to the leader: heartbeats (the leader's controllers need every
//! node's) and reads whose answer includes metrics (the leader holds every node's samples).
//!
//! One lazily connected channel per leader address (made by the [`transport`] crate), reused
//! across requests. A forwarded
//! request carries [`FORWARDED`], so it is never forwarded twice (two servers that each think
//! the other leads would otherwise bounce it between them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::Channel;

use crate::raft::Consensus;

/// Metadata key that marks a request one server forwarded to another.
pub const FORWARDED: &str = "x-sched-forwarded";

/// A forwarded request that takes longer is given up (a heartbeat is sent again in a second; a
/// read is answered from this server's own copy).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(1);

/// Channels to the leader, by address.
pub struct ToLeader {
    consensus: Arc<Consensus>,
    /// How channels to the leader are made (security, timeouts).
    connections: transport::Transport,
    channels: Mutex<HashMap<String, Channel>>,
}

impl ToLeader {
    pub fn new(consensus: Arc<Consensus>, connections: transport::Transport) -> ToLeader {
        ToLeader { consensus, connections, channels: Mutex::default() }
    }

    /// The leader's address and a channel to it; `None` when this server leads, no leader is
    /// known, or `request` was already forwarded once.
    pub fn channel<T>(&self, request: &tonic::Request<T>) -> Option<(String, Channel)> {
        if request.metadata().get(FORWARDED).is_some() {
            return None;
        }
        let status = self.consensus.raft().status();
        if status.leader_id == 0 || status.leader_id == status.id {
            return None;
        }
        let address = self.consensus.raft().state().state.members().get(&status.leader_id).cloned()?;
        let mut channels = self.channels.lock().expect("channels lock");
        if let Some(channel) = channels.get(&address) {
            return Some((address, channel.clone()));
        }
        let channel = self.connections.connect_lazy(&address, transport::Profile::SERVER_TO_SERVER).ok()?;
        channels.insert(address.clone(), channel.clone());
        Some((address, channel))
    }
}

/// `message` as a request marked forwarded, with the forwarding timeout.
pub fn forwarded<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    request.set_timeout(FORWARD_TIMEOUT);
    request
}
