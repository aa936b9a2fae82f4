//! Level-triggered streams of what the applied state says: a view now, then again after every
//! applied entry that changes it. The agents' assignments and the ingresses' route tables are
//! such streams; a client that missed messages needs only the latest.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::Status;

use crate::raft::RaftHandle;
use crate::raft::storage::AppliedState;

/// A server-streaming gRPC answer.
pub type AppliedStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Yields `first`, then `view` of the applied state after every applied entry for which
/// `changed(last sent, new)` holds. Ends when the server shuts down.
pub fn applied_stream<T, V, C>(first: T, raft: RaftHandle, view: V, changed: C) -> AppliedStream<T>
where
    T: Clone + Send + Sync + 'static,
    V: Fn(&AppliedState) -> T + Send + Sync + 'static,
    C: Fn(&T, &T) -> bool + Send + Sync + 'static,
{
    let status = raft.watch_status();
    let functions = Arc::new((view, changed));
    let state = (Some(first.clone()), first, raft, status, functions);
    Box::pin(futures::stream::unfold(state, |(pending, last, raft, mut status, functions)| async move {
        if let Some(first) = pending {
            return Some((Ok(first), (None, last, raft, status, functions)));
        }
        loop {
            // Ends the stream when the server shuts down.
            status.changed().await.ok()?;
            let next = {
                let applied = raft.state();
                (functions.0)(&applied)
            };
            if (functions.1)(&last, &next) {
                return Some((Ok(next.clone()), (None, next, raft, status, functions)));
            }
        }
    }))
}
