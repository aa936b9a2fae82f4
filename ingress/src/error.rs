//! Errors: one enum for what stops the ingress, one for a route the ingress cannot use.

use std::path::PathBuf;

/// Why the ingress could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the TLS certificate or key file.
    #[error("cannot read tls {what} from {path}: {source}")]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("no certificate in {0}")]
    NoCertificate(PathBuf),
    /// rustls refused the certificate and key (e.g. the key does not match).
    #[error("tls certificate and key refused: {0}")]
    Tls(#[from] rustls::Error),
    /// Opening the access log file.
    #[error("cannot open the access log {path}: {source}")]
    AccessLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The listener's own address, or handing it to the worker threads.
    #[error("listener has no local address or cannot be shared: {0}")]
    Listener(#[source] std::io::Error),
    /// Starting a worker thread or its runtime.
    #[error("cannot start an ingress worker thread: {0}")]
    Worker(#[source] std::io::Error),
}

/// Why a route of the table is left out (the servers refuse these at apply; the ingress
/// skips them and logs why, so one bad route does not take the others down).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("host {0:?} is not a host name (labels of letters, digits and '-' joined by '.', optionally starting with '*.')")]
    BadHost(String),
    #[error("path_prefix {0:?} must start with '/'")]
    BadPathPrefix(String),
    #[error("service {service} claims host {host} and path_prefix {path_prefix}, already routed to {other}")]
    Duplicate { service: String, other: String, host: String, path_prefix: String },
}
