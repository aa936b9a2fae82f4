//! sched's ingress: one address in front of every service, an Application Load Balancer for
//! sched. It routes HTTP requests by host and path rules to the healthy targets of each
//! service, with ALB's answers when it cannot.
//!
//! Data flow:
//! 1. Whoever watches the servers builds a [`RouteTable`] (every service's routes, each with
//!    its healthy target addresses and timeout) and sends it on a `tokio::sync::watch`
//!    channel whenever it changes ([`route_table`]).
//! 2. `routing` compiles each table into [`rules`] (host and path precedence, pure) once.
//! 3. `server` accepts connections (TLS by [`tls`] when configured), serves HTTP/1.1 and
//!    HTTP/2 with hyper, and closes idle connections (`idle`).
//! 4. `proxy` handles each request: the rule, a target chosen by [`balance`] (pure) over the
//!    state in [`targets`] (outstanding requests, passive health), headers by [`forwarded`],
//!    retries and the timeout, or an [`answer`] of its own; upgrades go through `upgrade`.
//!    It sends on HTTP/1.1 keep-alive connections from its own pool (`upstream`), driven by
//!    the request's own task rather than a task per connection.
//! 5. [`body`] streams the answer back (driving the target connection, which goes back to the
//!    pool at the body's end) and, at its end, [`access_log`] writes one JSON line.
//!
//! By default the ingress runs on the caller's tokio runtime; with
//! [`IngressConfig::threads`] it runs that many threads of its own, each with a single-threaded
//! runtime and its own target connections (`workers`).
//!
//! Entry points: [`run`] for one call, or [`Ingress`] to also ask how many requests are in
//! flight to a target (for draining).

pub mod access_log;
pub mod answer;
pub mod balance;
pub mod body;
pub mod config;
pub mod error;
pub mod forwarded;
pub mod host;
mod idle;
mod proxy;
pub mod route_table;
mod routing;
pub mod rules;
mod server;
pub mod targets;
pub mod tls;
mod upgrade;
mod upstream;
mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub use access_log::{AccessLog, AccessRecord};
pub use balance::Balancing;
pub use config::IngressConfig;
pub use error::{Error, RuleError};
pub use route_table::{DEFAULT_ROUTE_TIMEOUT, Route, RouteTable};
pub use tls::TlsFiles;

use proxy::Proxy;
use targets::TargetPool;

/// An ingress ready to serve: its routes followed, its TLS loaded, its target state kept.
pub struct Ingress {
    config: IngressConfig,
    routing: watch::Receiver<Arc<routing::Routing>>,
    pool: Arc<TargetPool>,
    tls: Option<TlsAcceptor>,
}

impl Ingress {
    /// Loads the TLS files (if any) and starts following `routes`. Must be called inside a
    /// tokio runtime.
    pub fn new(config: IngressConfig, routes: watch::Receiver<RouteTable>) -> Result<Self, Error> {
        let tls = match &config.tls {
            Some(files) => Some(TlsAcceptor::from(tls::server_config(files)?)),
            None => None,
        };
        let pool = Arc::new(TargetPool::new(config.backoff_base, config.backoff_max));
        let routing = routing::follow(routes, Arc::clone(&pool));
        Ok(Ingress { config, routing, pool, tls })
    }

    /// Requests in flight from this ingress to `target` (an upgraded connection counts until
    /// it closes). A target that left the route table is drained when this reaches 0.
    pub fn in_flight(&self, target: SocketAddr) -> u64 {
        self.pool.outstanding(target)
    }

    /// Every target with requests (or tunnels) in flight from this ingress, and how many.
    pub fn in_flight_all(&self) -> Vec<(SocketAddr, u64)> {
        self.pool.busy()
    }

    /// Serves `listener` until `shutdown` completes; then stops accepting, lets open
    /// connections finish their requests within `shutdown_grace`, and returns. With
    /// `config.threads`, on that many threads of its own (see [`IngressConfig::threads`]).
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let addr = listener.local_addr().map_err(Error::Listener)?;
        tracing::info!(%addr, tls = self.tls.is_some(), threads = ?self.config.threads, "ingress listening");
        let proxy = || Arc::new(Proxy::new(&self.config, self.routing.clone(), Arc::clone(&self.pool)));
        match self.config.threads {
            None => {
                server::serve(&self.config, proxy(), self.tls.clone(), listener, shutdown).await;
                Ok(())
            }
            Some(threads) => {
                let proxies = (0..threads.max(1)).map(|_| proxy()).collect();
                workers::serve(&self.config, proxies, self.tls.clone(), listener, shutdown).await
            }
        }
    }
}

/// Runs an ingress on `listener` with the routes from `routes` until `shutdown` completes.
pub async fn run(
    config: IngressConfig,
    listener: TcpListener,
    routes: watch::Receiver<RouteTable>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    Ingress::new(config, routes)?.serve(listener, shutdown).await
}
