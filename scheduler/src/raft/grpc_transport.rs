//! The servers' [`Transport`]: sends raft messages to peers over gRPC (`raft.v1.RaftPeer`).
//!
//! One task per peer drains that peer's queue in order, batching what is queued, onto one
//! long-lived `Stream` call (as etcd's stream transport): a batch goes out without waiting for
//! the one before to be answered, so a message's delay is one trip, not a trip behind every
//! earlier call. A batch that carries a snapshot goes by a `Send` call of its own, whose answer
//! is reported to the loop, as raft-rs requires. The queue is bounded: when a peer is down,
//! messages beyond it are dropped (Raft retransmits) and the loop is told the peer is
//! unreachable, so it backs off from it; a broken stream is reported the same way (what was on
//! it may be lost) and opened again.
//!
//! Peer addresses come from the replicated membership and from the `from_address` of incoming
//! batches (so a server that has just joined can answer the leader before it knows the
//! membership).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use proto::raft::v1::RaftBatch;
use proto::raft::v1::raft_peer_client::RaftPeerClient;
use raft::eraftpb::Message;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::node::{encode_message, is_snapshot};
use super::transport::{Feedback, FeedbackSink, Transport};

/// Largest gRPC message between servers: snapshots travel in one message.
pub const MAX_PEER_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 1024;
/// Messages sent in one batch at most.
const BATCH: usize = 128;
/// Batches queued on a peer's stream before the sender waits (HTTP/2 flow control).
const STREAM_WINDOW: usize = 64;
/// How long one send may take (a snapshot of a large state included).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

struct Peer {
    address: String,
    queue: mpsc::Sender<Message>,
}

/// The outbound side of the peer protocol over gRPC.
pub struct GrpcTransport {
    me: u64,
    my_address: String,
    addresses: Mutex<HashMap<u64, String>>,
    peers: Mutex<HashMap<u64, Peer>>,
    feedback: OnceLock<FeedbackSink>,
    /// How channels to the peers are made (security, timeouts).
    connections: transport::Transport,
    /// Set once this server is removed: it sends nothing more, or (were it the leader) its
    /// messages would keep the others from electing a new leader.
    muted: std::sync::atomic::AtomicBool,
}

impl GrpcTransport {
    pub fn new(me: u64, my_address: String, connections: transport::Transport) -> GrpcTransport {
        GrpcTransport {
            me,
            my_address,
            addresses: Mutex::default(),
            peers: Mutex::default(),
            feedback: OnceLock::new(),
            connections,
            muted: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Records where a peer listens, as a message from it claims: only for a peer whose
    /// address the replicated membership has not told yet (a server that joins hears from the
    /// leader before it has the membership), and only a well-formed `HOST:PORT`. A claim can
    /// never redirect a known member's traffic.
    pub fn learn_claimed(&self, id: u64, address: &str) {
        if crate::state::check_host_port("peer address", address).is_err() {
            tracing::warn!(id, address, "a raft message claims a malformed sender address; not learned");
            return;
        }
        let mut addresses = self.addresses.lock().expect("addresses lock");
        if id != self.me && !addresses.contains_key(&id) {
            addresses.insert(id, address.to_string());
        }
    }

    /// The known address of a peer.
    pub fn address_of(&self, id: u64) -> Option<String> {
        if id == self.me {
            return Some(self.my_address.clone());
        }
        self.addresses.lock().expect("addresses lock").get(&id).cloned()
    }

    fn feedback(&self, feedback: Feedback) {
        if let Some(sink) = self.feedback.get() {
            sink.report(feedback);
        }
    }

    fn spawn_peer(&self, to: u64, address: String) -> Peer {
        let (queue, rx) = mpsc::channel::<Message>(PEER_QUEUE);
        let sender = PeerSender {
            to,
            from: self.me,
            from_address: self.my_address.clone(),
            feedback: self.feedback.get().cloned(),
            queue: rx,
            address: address.clone(),
            connections: self.connections.clone(),
        };
        tokio::spawn(sender.run());
        Peer { address, queue }
    }
}

/// The task that delivers one peer's messages: batches on one long-lived `Stream` call (no
/// batch waits for the one before to be answered), and a batch carrying a snapshot by a `Send`
/// call of its own, whose answer tells raft-rs whether the snapshot arrived.
struct PeerSender {
    to: u64,
    from: u64,
    from_address: String,
    feedback: Option<FeedbackSink>,
    queue: mpsc::Receiver<Message>,
    address: String,
    connections: transport::Transport,
}

impl PeerSender {
    async fn run(mut self) {
        let Ok(channel) = self.connections.connect_lazy(&self.address, transport::Profile::SERVER_TO_SERVER) else {
            tracing::error!(to = self.to, "peer address {} is not a valid URI", self.address);
            return;
        };
        let client = RaftPeerClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
        // One stream at a time; opened on the first message, again after it breaks.
        while let Some(first) = self.queue.recv().await {
            let (batches, stream_rx) = mpsc::channel::<RaftBatch>(STREAM_WINDOW);
            let outgoing = futures::stream::unfold(stream_rx, |mut rx| async move { rx.recv().await.map(|batch| (batch, rx)) });
            let mut call_client = client.clone();
            let mut call = Box::pin(async move { call_client.stream(outgoing).await });
            let mut next = Some(first);
            let broken = loop {
                let first = match next.take() {
                    Some(message) => message,
                    None => tokio::select! {
                        ended = &mut call => break ended.err().map(|status| status.to_string()).unwrap_or_else(|| "closed by the peer".into()),
                        message = self.queue.recv() => match message {
                            Some(message) => message,
                            None => return,
                        },
                    },
                };
                let batch = self.batch(first);
                if batch.iter().any(is_snapshot) {
                    self.send_snapshot(&client, batch).await;
                    continue;
                }
                let request = self.request(&batch);
                tokio::select! {
                    ended = &mut call => break ended.err().map(|status| status.to_string()).unwrap_or_else(|| "closed by the peer".into()),
                    sent = batches.send(request) => if sent.is_err() { break "the stream's queue closed".into() },
                }
            };
            // What was queued on the broken stream may be lost: raft-rs resends from its
            // progress once told the peer is unreachable.
            tracing::debug!(to = self.to, "raft stream to {} ended: {broken}", self.address);
            self.report(Feedback::Unreachable(self.to));
            while self.queue.try_recv().is_ok() {}
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `first` and what else is queued, up to a batch.
    fn batch(&mut self, first: Message) -> Vec<Message> {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match self.queue.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        batch
    }

    /// The wire form of `batch`, with this server as its sender.
    fn request(&self, batch: &[Message]) -> RaftBatch {
        RaftBatch { from: self.from, from_address: self.from_address.clone(), messages: batch.iter().map(encode_message).collect() }
    }

    async fn send_snapshot(&self, client: &RaftPeerClient<Channel>, batch: Vec<Message>) {
        let request = self.request(&batch);
        let delivered = matches!(tokio::time::timeout(SEND_TIMEOUT, client.clone().send(request)).await, Ok(Ok(_)));
        self.report(Feedback::SnapshotSent { to: self.to, delivered });
        if !delivered {
            self.report(Feedback::Unreachable(self.to));
        }
    }

    fn report(&self, feedback: Feedback) {
        if let Some(sink) = &self.feedback {
            sink.report(feedback);
        }
    }
}

impl Transport for GrpcTransport {
    /// Records where a peer listens (from the replicated membership).
    fn learn(&self, id: u64, address: &str) {
        if id != self.me && !address.is_empty() {
            self.addresses.lock().expect("addresses lock").insert(id, address.to_string());
        }
    }

    /// Forgets a removed peer and stops its sender.
    fn forget(&self, id: u64) {
        self.addresses.lock().expect("addresses lock").remove(&id);
        self.peers.lock().expect("peers lock").remove(&id);
    }

    /// Stops all sending for good (this server was removed from the cluster).
    fn mute(&self) {
        self.muted.store(true, std::sync::atomic::Ordering::SeqCst);
        self.peers.lock().expect("peers lock").clear();
    }

    /// Queues messages for their peers; never blocks.
    fn send(&self, messages: Vec<Message>) {
        if self.muted.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        for message in messages {
            let to = message.to;
            let Some(address) = self.address_of(to) else {
                tracing::debug!(to, "no address known for server {to}; message dropped");
                continue;
            };
            let mut peers = self.peers.lock().expect("peers lock");
            let stale = peers.get(&to).is_none_or(|p| p.address != address || p.queue.is_closed());
            if stale {
                peers.insert(to, self.spawn_peer(to, address));
            }
            let peer = peers.get(&to).expect("inserted above");
            if peer.queue.try_send(message).is_err() {
                self.feedback(Feedback::Unreachable(to));
            }
        }
    }

    fn set_feedback(&self, feedback: FeedbackSink) {
        let _ = self.feedback.set(feedback);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_address_never_redirects_a_known_member() {
        let transport = GrpcTransport::new(1, "10.0.0.1:7000".into(), transport::Transport::plaintext());
        transport.learn(2, "10.0.0.2:7000");
        transport.learn_claimed(2, "10.6.6.6:7000");
        assert_eq!(transport.address_of(2).as_deref(), Some("10.0.0.2:7000"), "the membership's address stays");
        transport.learn_claimed(3, "evil/path@x");
        assert_eq!(transport.address_of(3), None, "a malformed claim is not learned");
        transport.learn_claimed(3, "10.0.0.3:7000");
        assert_eq!(transport.address_of(3).as_deref(), Some("10.0.0.3:7000"), "an unknown peer is learned from its claim");
        transport.learn(3, "10.0.0.33:7000");
        assert_eq!(transport.address_of(3).as_deref(), Some("10.0.0.33:7000"), "the membership overrides a claim");
    }
}
