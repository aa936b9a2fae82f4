//! How the Raft loop reaches its peers: the [`Transport`] trait, implemented by the gRPC
//! transport the servers use ([`super::grpc_transport`]) and by the in-memory network of the
//! test harness.
//!
//! A transport never blocks the loop: `send` queues, and what raft-rs must hear about delivery
//! (a peer that cannot be reached, a snapshot delivered or lost) comes back later through the
//! [`FeedbackSink`] the loop registers.

use std::sync::Arc;

use raft::eraftpb::Message;

/// What a transport reports back to the Raft loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feedback {
    /// A message to this peer could not be delivered: raft-rs backs off from it.
    Unreachable(u64),
    /// A snapshot to this peer was delivered, or was lost.
    SnapshotSent { to: u64, delivered: bool },
}

/// Where a transport sends its [`Feedback`]: the Raft loop's input. Reporting never blocks (a
/// report the loop has no room for is dropped: raft-rs recovers from a missing one).
#[derive(Clone)]
pub struct FeedbackSink(Arc<dyn Fn(Feedback) + Send + Sync>);

impl FeedbackSink {
    pub fn new(report: impl Fn(Feedback) + Send + Sync + 'static) -> FeedbackSink {
        FeedbackSink(Arc::new(report))
    }

    pub fn report(&self, feedback: Feedback) {
        (self.0)(feedback);
    }
}

/// The outbound side of the peer protocol, as the Raft loop uses it.
pub trait Transport: Send + Sync + 'static {
    /// Queues messages for their peers; never blocks.
    fn send(&self, messages: Vec<Message>);
    /// Records where a peer listens (from the replicated membership).
    fn learn(&self, id: u64, address: &str);
    /// Forgets a removed peer.
    fn forget(&self, id: u64);
    /// Stops all sending for good (this server was removed from the cluster).
    fn mute(&self);
    /// Registers where delivery feedback goes (once, when the loop is built).
    fn set_feedback(&self, feedback: FeedbackSink);
}
