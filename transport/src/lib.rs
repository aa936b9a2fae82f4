//! The one place gRPC connections are made and accepted.
//!
//! Every client channel (the CLI to a server, an agent to a server, a server to its Raft peers
//! and to the leader, a server to an agent's log API) and every gRPC server (the `sched server`
//! API, the agent API) is built here, so that how a connection is secured, who may use it and
//! how long it may take is decided once:
//!
//! - [`Security`] says how connections are secured: mutual TLS with this process's
//!   [`Credentials`] (the cluster CA, a certificate and its key), or — for a node that is
//!   joining and has no certificate yet — TLS that trusts the CA a join token pins. Plaintext
//!   remains for in-process tests only; no binary offers it.
//! - [`Transport`] is made once per process from a [`Security`]; it loads the credentials (a
//!   bad file fails at start, not on the first call). Clients get a [`Channel`] to a
//!   `HOST:PORT` from it, eagerly ([`Transport::connect`]) or lazily
//!   ([`Transport::connect_lazy`]); servers get their [`Server`] builder ([`Transport::server`])
//!   and their accepted connections ([`Transport::incoming`]).
//! - [`Profile`] names each kind of connection's timeouts, keepalive and the [`Peer`] it
//!   reaches, side by side, so they can be compared and changed in one file.
//! - [`AuthorizeLayer`] puts a process's [`Policy`] (who may call which method) in front of
//!   its services; handlers read the verified [`Caller`] with [`caller_of`].
//!
//! TLS is 1.3 only, with rustls and ring ([`tls`]). A client checks the server's certificate
//! against the CA and the name its role's certificates carry ([`SERVER_NAME`],
//! [`AGENT_NAME`]), not against the dialled address. Addresses are `HOST:PORT`, checked where
//! they enter the system (flags, registration, membership); the URI is made here alone.

mod authorize;
mod connector;
mod credentials;
mod incoming;
pub mod join;
mod profile;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint, Server};

pub use authorize::{Authorize, AuthorizeLayer, Caller, Policy, caller_of};
pub use credentials::{CA_FILE, CERTIFICATE_FILE, Credentials, KEY_FILE, write_private};
pub use incoming::{Connection, Incoming, PeerInfo};
pub use profile::{AGENT_NAME, Keepalive, Peer, Profile, SERVER_NAME};

/// How this process's connections are secured, as its configuration says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Security {
    /// No TLS, no authentication: every caller is anonymous, so a server's policy refuses all
    /// but anonymous methods. For in-process tests; no binary offers it.
    #[default]
    Plaintext,
    /// Mutual TLS: trust the cluster CA, present this certificate.
    MutualTls(Credentials),
    /// A node joining with a token: trust servers whose chain holds the CA with this
    /// fingerprint, present no certificate. Client side only.
    Join(pki::Fingerprint),
}

/// Why a connection could not be made or the credentials not used. Each variant shows as its
/// cause alone (the caller names the address and what it was for).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The address does not make a URI (not `HOST:PORT`).
    #[error(transparent)]
    Address(tonic::transport::Error),
    /// Nothing answered within the profile's connect timeout, or the connection (or its TLS
    /// handshake) failed.
    #[error(transparent)]
    Connect(tonic::transport::Error),
    /// A certificate, key or CA that cannot be read or used.
    #[error("TLS credentials: {0}")]
    Credentials(String),
    /// Serving needs this process's own certificate (a joining node has none).
    #[error("cannot serve without a certificate of this cluster")]
    NoServerCertificate,
}

/// The pings a server sends on every accepted connection.
pub const SERVER_KEEPALIVE: Keepalive = Keepalive { interval: Duration::from_secs(10), timeout: Duration::from_secs(5), while_idle: true };

/// How this process makes and accepts connections: made once from its [`Security`], cloned
/// into every place that connects or serves.
#[derive(Clone, Debug, Default)]
pub struct Transport {
    security: Security,
    tls: Option<Arc<tls::TlsConfigs>>,
}

impl Transport {
    /// The transport for `security`, its credentials loaded and checked (the key must belong
    /// to the certificate).
    pub fn new(security: Security) -> Result<Transport, TransportError> {
        let tls = match &security {
            Security::Plaintext => None,
            Security::MutualTls(credentials) => Some(Arc::new(tls::TlsConfigs::mutual(credentials)?)),
            Security::Join(fingerprint) => Some(Arc::new(tls::TlsConfigs::join(*fingerprint)?)),
        };
        Ok(Transport { security, tls })
    }

    /// Plaintext: no TLS, no authentication (in-process tests).
    pub fn plaintext() -> Transport {
        Transport::default()
    }

    /// The security connections are made with.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// A channel to `address`, connected before this returns (within the profile's connect
    /// timeout).
    pub async fn connect(&self, address: &str, profile: Profile) -> Result<Channel, TransportError> {
        let endpoint = self.endpoint(address, profile)?;
        match &self.tls {
            Some(tls) => endpoint.connect_with_connector(self.connector(tls, profile)).await,
            None => endpoint.connect().await,
        }
        .map_err(TransportError::Connect)
    }

    /// A channel to `address` that connects on its first call (and again after the connection
    /// drops); only a malformed address fails here.
    pub fn connect_lazy(&self, address: &str, profile: Profile) -> Result<Channel, TransportError> {
        let endpoint = self.endpoint(address, profile)?;
        Ok(match &self.tls {
            Some(tls) => endpoint.connect_with_connector_lazy(self.connector(tls, profile)),
            None => endpoint.connect_lazy(),
        })
    }

    /// The builder of a gRPC server, for the caller to add its layer and services to and serve
    /// on [`Transport::incoming`] (which does the TLS).
    pub fn server(&self) -> Server {
        Server::builder()
            .tcp_nodelay(true)
            // Pings from the server side too: a client that vanished without a reset (a node
            // cut off) gives back its connection and its streams within 15 s.
            .http2_keepalive_interval(Some(SERVER_KEEPALIVE.interval))
            .http2_keepalive_timeout(Some(SERVER_KEEPALIVE.timeout))
    }

    /// The connections a server accepts on `listener`: with mutual TLS, only those that
    /// finished a TLS 1.3 handshake, each knowing its caller.
    pub fn incoming(&self, listener: TcpListener) -> Result<Incoming, TransportError> {
        match (&self.security, &self.tls) {
            (Security::Plaintext, _) => Ok(incoming::accept(listener, None)),
            (_, Some(tls)) => match &tls.server {
                Some(server) => Ok(incoming::accept(listener, Some(server.clone()))),
                None => Err(TransportError::NoServerCertificate),
            },
            (_, None) => Err(TransportError::NoServerCertificate),
        }
    }

    /// Uses a new certificate and key (renewed, same CA) from the next connection on; open
    /// connections keep the old one until they close.
    pub fn replace_identity(&self, certificate_pem: &str, key_pem: &str) -> Result<(), TransportError> {
        match &self.tls {
            Some(tls) => tls.replace_identity(certificate_pem, key_pem),
            None => Err(TransportError::Credentials("plaintext connections have no certificate to replace".into())),
        }
    }

    fn connector(&self, tls: &tls::TlsConfigs, profile: Profile) -> connector::TlsConnector {
        connector::TlsConnector::new(tls.client.clone(), profile.peer.certificate_name())
    }

    /// The URI of `address`: `HOST:PORT` with the scheme of this security. An address that
    /// already has a scheme is kept as given (`sched --server` accepts a URL).
    fn uri(&self, address: &str) -> String {
        if let Some((_, rest)) = address.split_once("://") {
            // The scheme follows the security, whatever the URL said.
            return self.uri(rest);
        }
        match &self.security {
            Security::Plaintext => format!("http://{address}"),
            Security::MutualTls(_) | Security::Join(_) => format!("https://{address}"),
        }
    }

    /// The endpoint of `address` with `profile` applied: the one place an `Endpoint` is made.
    fn endpoint(&self, address: &str, profile: Profile) -> Result<Endpoint, TransportError> {
        let mut endpoint = Endpoint::from_shared(self.uri(address))
            .map_err(TransportError::Address)?
            .connect_timeout(profile.connect_timeout)
            // Nagle off (tonic's default too): calls are small HTTP/2 writes, and Nagle plus
            // delayed ACKs would add 40 ms to a forwarded proposal. (The TLS connector sets it
            // on its own sockets.)
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
        Ok(endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_addresses_become_http_uris() {
        let transport = Transport::plaintext();
        assert_eq!(transport.uri("10.0.0.1:7700"), "http://10.0.0.1:7700");
        assert_eq!(transport.uri("node-a.example:7071"), "http://node-a.example:7071");
        assert_eq!(transport.uri("https://127.0.0.1:7700"), "http://127.0.0.1:7700", "the scheme follows the security");
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
