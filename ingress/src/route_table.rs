//! The route table: the plain data the ingress routes by.
//!
//! Whoever watches the servers builds it (every service's `[[route]]`, each with the addresses
//! of the service's healthy tasks on the route's port) and sends a new value on a
//! `tokio::sync::watch` channel whenever a route or a target changes. The ingress applies each
//! new value to the requests that arrive after it; open connections stay open.

use std::net::SocketAddr;
use std::time::Duration;

/// How long a route waits for a target's response head when the route does not say (ALB's
/// default idle timeout).
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(60);

/// Every route of every service, in any order: precedence comes from the rules themselves
/// (see [`crate::rules`]), not from the order here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    pub routes: Vec<Route>,
}

/// One `[[route]]` of one service, with its current target group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `None` matches any host; `"quotes.example"` that host exactly; `"*.example.com"` any
    /// host that ends in `.example.com` (one label or more before it). Compared
    /// case-insensitively, without the port.
    pub host: Option<String>,
    /// Starts with `/`; matched on whole path segments (`/api/v1` matches `/api/v1` and
    /// `/api/v1/x`, not `/api/v10`). Case-sensitive, like ALB's path patterns.
    pub path_prefix: String,
    /// The service the route belongs to: named in answers and in the access log.
    pub service: String,
    /// The healthy targets (task address and the node port of the route's port). Empty means
    /// the route matches but answers 503.
    pub targets: Vec<SocketAddr>,
    /// The longest wait for a target's response head, retries included; then 504.
    pub timeout: Duration,
}

impl Route {
    /// A route for `service` on `path_prefix`, any host, no targets yet, the default timeout.
    pub fn new(service: impl Into<String>, path_prefix: impl Into<String>) -> Self {
        Route { host: None, path_prefix: path_prefix.into(), service: service.into(), targets: Vec::new(), timeout: DEFAULT_ROUTE_TIMEOUT }
    }

    /// The same route restricted to `host` (exact or `*.` wildcard).
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// The same route with these targets.
    pub fn with_targets(mut self, targets: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.targets = targets.into_iter().collect();
        self
    }

    /// The same route with this timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}
