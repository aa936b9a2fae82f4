//! The connection to a server, as every long-lived stream of the agent needs it (the daemon's
//! sessions and the ingress's route stream), and the order in which the servers are tried.

use std::time::{Duration, Instant};

use tonic::transport::Channel;
use transport::{Profile, Transport, TransportError};

use crate::error::{AgentError, Result};

/// Connects to `server` (HOST:PORT) through `connections` with
/// [`Profile::AGENT_TO_SERVER`]: within 2 s, with HTTP/2 pings so that a dead connection (a
/// server cut off the network sends no RST) is noticed within about 5 s instead of hanging
/// heartbeats, reports and the assignment stream.
pub async fn connect(connections: &Transport, server: &str) -> Result<Channel> {
    connections.connect(server, Profile::AGENT_TO_SERVER).await.map_err(|source| match source {
        TransportError::Address(_) => AgentError::ServerAddress { server: server.to_owned(), source },
        source => AgentError::Connect { server: server.to_owned(), source },
    })
}

/// The servers in turn: a stream that ends (its server died, or closed it) moves on to the
/// next, after a pause of 100 ms doubling to 2 s while sessions keep failing quickly.
pub struct ServerRotation<'a> {
    servers: &'a [String],
    next: usize,
    backoff: Duration,
}

impl<'a> ServerRotation<'a> {
    /// A rotation over `servers`, which must not be empty.
    pub fn new(servers: &'a [String]) -> Self {
        assert!(!servers.is_empty(), "a rotation needs at least one server");
        ServerRotation { servers, next: 0, backoff: Duration::from_millis(100) }
    }

    /// The server to try now.
    pub fn server(&self) -> &'a str {
        &self.servers[self.next % self.servers.len()]
    }

    /// After a session with the current server that began at `began` ended: waits the backoff
    /// (reset when the session lasted 10 s or more) and moves to the next server.
    pub async fn ended(&mut self, began: Instant) {
        if began.elapsed() > Duration::from_secs(10) {
            self.backoff = Duration::from_millis(100);
        }
        self.next += 1;
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(2));
    }
}
