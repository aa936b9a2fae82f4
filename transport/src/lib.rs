//! The one place gRPC connections are made and accepted.
//!
//! Every client channel (the CLI to a server, an agent to a server, a server to its Raft peers
//! and to the leader, a server to an agent's log API) and every gRPC server (the `sched server`
//! API, the agent API) is built here, so that how a connection is secured and how long it may
//! take is decided once:
//!
//! - [`Security`] says how connections are secured. It comes from each binary's configuration
//!   and travels, unchanged, to every caller inside a [`Transport`].
//! - [`Transport`] is made once per process from a [`Security`] (later: loading the
//!   certificates, so a bad path fails at start, not on the first call). Clients get a
//!   [`Channel`] to a `HOST:PORT` from it, eagerly ([`Transport::connect`]) or lazily
//!   ([`Transport::connect_lazy`]); servers get their [`Server`] builder ([`Transport::server`])
//!   and their accepted connections ([`incoming`]).
//! - [`Profile`] names each kind of connection's timeouts and keepalive, side by side, so they
//!   can be compared and changed in one file.
//!
//! Addresses are `HOST:PORT`, checked where they enter the system (flags, registration,
//! membership); the URI (`http://HOST:PORT` today) is made here alone, since its scheme depends
//! on the security.
//!
//! Today every connection is plaintext. Mutual TLS (issue 13) plugs in at the marked places:
//! a [`Security`] variant with the CA and this process's certificate and key, the `https`
//! scheme and `Endpoint::tls_config` where the endpoint is built (`Transport::endpoint`), and
//! `Server::tls_config` in [`Transport::server`]; no caller changes.

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};

/// How this process's connections are secured, as its configuration says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Security {
    /// No TLS, no authentication: anyone who reaches a port may call it.
    #[default]
    Plaintext,
    // Next (issue 13): `MutualTls { ca, cert, key }` — the cluster CA every peer's certificate
    // must chain to, and this process's own certificate and key (paths or PEM).
}

/// Why a connection could not be made. Each variant shows as its cause alone (the caller names
/// the address and what it was for).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The address does not make a URI (not `HOST:PORT`).
    #[error(transparent)]
    Address(tonic::transport::Error),
    /// Nothing answered within the profile's connect timeout, or the connection failed.
    #[error(transparent)]
    Connect(tonic::transport::Error),
}

/// HTTP/2 pings on an open connection, so a peer that vanishes without a reset (power loss, a
/// partition) ends the connection instead of leaving calls hanging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// How often a ping is sent.
    pub interval: Duration,
    /// How long an unanswered ping takes to close the connection.
    pub timeout: Duration,
    /// Ping also while no call is open.
    pub while_idle: bool,
}

/// The timeouts and keepalive of one kind of client connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    /// How long establishing the connection may take.
    pub connect_timeout: Duration,
    /// Every call on the channel fails after this long; `None` for calls that may stay open
    /// (streams), which rely on keepalive instead.
    pub request_timeout: Option<Duration>,
    /// Pings on the open connection; `None` sends none.
    pub keepalive: Option<Keepalive>,
}

impl Profile {
    /// A `sched` command's call to a server: a 2 s connect, then 10 s for the answer (a server
    /// that does not answer is given up and, when the call is safe to repeat, the next tried).
    pub const CLI_CALL: Profile =
        Profile { connect_timeout: Duration::from_secs(2), request_timeout: Some(Duration::from_secs(10)), keepalive: None };

    /// A `sched` command's stream that may stay open for long (`sched logs -f`): no call
    /// timeout, pings every 10 s so a server that vanishes ends the stream.
    pub const CLI_STREAM: Profile = Profile {
        connect_timeout: Duration::from_secs(2),
        request_timeout: None,
        keepalive: Some(Keepalive { interval: Duration::from_secs(10), timeout: Duration::from_secs(5), while_idle: false }),
    };

    /// An agent's session with a server (registration, heartbeats, reports, the assignment and
    /// route streams). A server cut off the network sends no RST: without pings every call
    /// would hang for minutes and the node would be marked down; with them a dead connection
    /// is noticed within about 5 s.
    pub const AGENT_TO_SERVER: Profile = Profile {
        connect_timeout: Duration::from_secs(2),
        request_timeout: None,
        keepalive: Some(Keepalive { interval: Duration::from_secs(2), timeout: Duration::from_secs(3), while_idle: true }),
    };

    /// A server's channel to another server: Raft messages, proposals and requests forwarded to
    /// the leader. A 1 s connect; each caller bounds its calls itself (a send, a proposal and
    /// a forwarded request each have their own deadline).
    pub const SERVER_TO_SERVER: Profile = Profile { connect_timeout: Duration::from_secs(1), request_timeout: None, keepalive: None };

    /// A server's call to a node agent's log API (`sched logs`): a 2 s connect, so an
    /// unreachable node becomes an error line quickly, and pings every 10 s so a node that
    /// vanishes mid-follow ends its stream instead of hanging it.
    pub const SERVER_TO_AGENT: Profile = Profile {
        connect_timeout: Duration::from_secs(2),
        request_timeout: None,
        keepalive: Some(Keepalive { interval: Duration::from_secs(10), timeout: Duration::from_secs(5), while_idle: true }),
    };
}

/// How this process makes and accepts connections: made once from its [`Security`], cloned
/// into every place that connects or serves.
#[derive(Clone, Debug, Default)]
pub struct Transport {
    security: Security,
}

impl Transport {
    /// The transport for `security`. Fails only once security has credentials to load.
    pub fn new(security: Security) -> Result<Transport, TransportError> {
        Ok(Transport { security })
    }

    /// Plaintext: no TLS, no authentication (the only choice today).
    pub fn plaintext() -> Transport {
        Transport { security: Security::Plaintext }
    }

    /// The security connections are made with.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// A channel to `address`, connected before this returns (within the profile's connect
    /// timeout).
    pub async fn connect(&self, address: &str, profile: Profile) -> Result<Channel, TransportError> {
        self.endpoint(address, profile)?.connect().await.map_err(TransportError::Connect)
    }

    /// A channel to `address` that connects on its first call (and again after the connection
    /// drops); only a malformed address fails here.
    pub fn connect_lazy(&self, address: &str, profile: Profile) -> Result<Channel, TransportError> {
        Ok(self.endpoint(address, profile)?.connect_lazy())
    }

    /// The builder of a gRPC server with this security, for the caller to add its services to
    /// and serve on [`incoming`].
    pub fn server(&self) -> Server {
        match &self.security {
            // Next: `Server::builder().tls_config(ServerTlsConfig::new().identity(..)
            // .client_ca_root(..))` for MutualTls.
            Security::Plaintext => Server::builder().tcp_nodelay(true),
        }
    }

    /// The URI of `address`: `HOST:PORT` with the scheme of this security. An address that
    /// already has a scheme is kept as given (`sched --server` accepts a URL).
    fn uri(&self, address: &str) -> String {
        if address.contains("://") {
            return address.to_string();
        }
        match &self.security {
            // Next: `https://` for MutualTls.
            Security::Plaintext => format!("http://{address}"),
        }
    }

    /// The endpoint of `address` with `profile` applied: the one place an `Endpoint` is made.
    fn endpoint(&self, address: &str, profile: Profile) -> Result<Endpoint, TransportError> {
        let mut endpoint = Endpoint::from_shared(self.uri(address))
            .map_err(TransportError::Address)?
            .connect_timeout(profile.connect_timeout)
            // Nagle off (tonic's default too): calls are small HTTP/2 writes, and Nagle plus
            // delayed ACKs would add 40 ms to a forwarded proposal.
            .tcp_nodelay(true);
        if let Some(timeout) = profile.request_timeout {
            endpoint = endpoint.timeout(timeout);
        }
        if let Some(keepalive) = profile.keepalive {
            endpoint = endpoint
                .http2_keep_alive_interval(keepalive.interval)
                .keep_alive_timeout(keepalive.timeout)
                .keep_alive_while_idle(keepalive.while_idle);
        }
        // Next: `.tls_config(ClientTlsConfig::new().ca_certificate(..).identity(..))` for
        // MutualTls.
        Ok(endpoint)
    }
}

/// The connections a server accepts on `listener`, with Nagle off: answers are several small
/// HTTP/2 writes, and Nagle plus delayed ACKs would add 40 ms to forwarded proposals. (TLS,
/// when configured, is applied by the [`Server`] from [`Transport::server`] on top of these.)
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_addresses_become_http_uris() {
        let transport = Transport::plaintext();
        assert_eq!(transport.uri("10.0.0.1:7700"), "http://10.0.0.1:7700");
        assert_eq!(transport.uri("node-a.example:7071"), "http://node-a.example:7071");
        assert_eq!(transport.uri("http://127.0.0.1:7700"), "http://127.0.0.1:7700", "a URL is kept as given");
    }

    #[test]
    fn a_malformed_address_is_refused_before_connecting() {
        let transport = Transport::plaintext();
        let refused = transport.connect_lazy("a b:80", Profile::SERVER_TO_SERVER);
        assert!(matches!(refused, Err(TransportError::Address(_))), "{refused:?}");
    }

    #[tokio::test]
    async fn a_lazy_channel_connects_on_first_use_and_an_eager_one_fails_fast() {
        let transport = Transport::plaintext();
        // Nothing listens on port 1.
        assert!(transport.connect_lazy("127.0.0.1:1", Profile::SERVER_TO_SERVER).is_ok());
        let refused = transport.connect("127.0.0.1:1", Profile::CLI_CALL).await;
        assert!(matches!(refused, Err(TransportError::Connect(_))), "{refused:?}");
    }
}
