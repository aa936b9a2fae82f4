//! The ingress's settings: balancing, retries, limits, TLS and the access log. The defaults
//! are what `sched dev` and a cluster node use unless told otherwise.

use std::time::Duration;

use crate::access_log::AccessLog;
use crate::balance::Balancing;
use crate::tls::TlsFiles;

#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// How a route's targets share its requests.
    pub balancing: Balancing,
    /// Targets tried for one request at most (a retry only happens when it is safe: nothing
    /// was sent, or the method is idempotent).
    pub max_attempts: u32,
    /// Longest wait for a target to accept a connection; then the next target is tried.
    pub connect_timeout: Duration,
    /// A refused target is left out this long after its first failure, doubling per
    /// consecutive failure up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Request line and headers, in bytes, before the ingress answers 431 (HTTP/1.1) or
    /// resets the stream (HTTP/2). At least 8192.
    pub max_header_bytes: usize,
    /// A client connection with nothing read or written and no request in flight for this
    /// long is closed.
    pub idle_timeout: Duration,
    /// An idle keep-alive connection to a target is closed after this. Kept below the
    /// shortest common server keep-alive (Node.js closes idle connections after 5 s), so the
    /// ingress rarely sends on a connection the target is closing.
    pub target_idle_timeout: Duration,
    /// A client must send a request's headers within this (slow clients are closed).
    pub header_read_timeout: Duration,
    /// A TLS client must finish its handshake within this.
    pub tls_handshake_timeout: Duration,
    /// Request bodies up to this size (with a `Content-Length`) are kept so the request can be
    /// retried on another target; larger or chunked bodies are streamed and not retried.
    pub retry_body_limit: usize,
    /// On shutdown, open connections finish their requests within this; then they are cut.
    pub shutdown_grace: Duration,
    /// `None`: serve on the caller's tokio runtime. `Some(n)`: serve on `n` threads of the
    /// ingress's own, each with a single-threaded runtime accepting from the same listener and
    /// keeping its own target connections (like nginx's worker processes and Pingora's
    /// no-steal runtimes): a request never hops between threads, which saves wake-ups (more
    /// throughput), at the cost of work stealing (a preempted thread holds up its connections).
    pub threads: Option<usize>,
    /// Terminate TLS with this certificate and key; plain HTTP when `None`.
    pub tls: Option<TlsFiles>,
    /// Where the access log goes; none when `None`.
    pub access_log: Option<AccessLog>,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            balancing: Balancing::LeastOutstanding,
            max_attempts: 3,
            connect_timeout: Duration::from_secs(2),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            idle_timeout: Duration::from_secs(60),
            target_idle_timeout: Duration::from_secs(4),
            header_read_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            retry_body_limit: 64 * 1024,
            shutdown_grace: Duration::from_secs(10),
            threads: None,
            tls: None,
            access_log: None,
        }
    }
}
