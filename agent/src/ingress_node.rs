//! The node's ingress: sched's ALB (the `ingress` crate) fed with the servers' route table.
//!
//! `sched-agent --ingress-listen ADDR` (and `sched dev`, by default on 127.0.0.1:8080) runs it
//! beside the node's tasks. It follows `sched.v1.RouteApi/WatchRoutes` on the servers in turn
//! (moving on when one dies) and hands every table to the ingress, which applies it to the
//! next requests. While no server answers, the last table keeps serving: traffic does not
//! depend on the control plane being up.
//!
//! Why the agent and not a separate `sched ingress`: every node that should take traffic
//! already runs an agent with the servers' addresses, the ingress reaches targets on any node
//! by their published node ports, and one process per node is less to install, supervise and
//! secure.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingress::{Ingress, IngressConfig, Route, RouteTable};
use proto::agent::v1 as agent_pb;
use proto::sched::v1 as pb;
use proto::sched::v1::route_api_client::RouteApiClient;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::{AgentError, Result};

/// The ingress flags `sched-agent` and `sched dev` share.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct IngressArgs {
    /// Run the ingress (sched's load balancer: every service's [[route]] rules to its healthy
    /// tasks) on HOST:PORT; port 0 for any free port.
    #[arg(long, value_name = "HOST:PORT")]
    pub ingress_listen: Option<String>,
    /// Terminate TLS on the ingress with this PEM certificate chain (needs --ingress-tls-key);
    /// HTTP/2 is offered by ALPN.
    #[arg(long, value_name = "PATH", requires = "ingress_tls_key")]
    pub ingress_tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key for --ingress-tls-cert.
    #[arg(long, value_name = "PATH", requires = "ingress_tls_cert")]
    pub ingress_tls_key: Option<std::path::PathBuf>,
    /// Append one JSON line per request (time, client, host, path, service, target, status,
    /// bytes, durations) to this file.
    #[arg(long, value_name = "PATH")]
    pub ingress_access_log: Option<std::path::PathBuf>,
    /// How a route's targets share its requests.
    #[arg(long, value_enum, default_value_t = BalancingArg::LeastOutstanding)]
    pub ingress_balancing: BalancingArg,
    /// Serve the ingress on this many threads of its own, each with its own event loop (as
    /// nginx's workers); by default it shares the agent's.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub ingress_threads: Option<u16>,
}

/// `--ingress-balancing`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BalancingArg {
    /// The target with the fewest requests in flight from this ingress.
    #[default]
    LeastOutstanding,
    /// Each target in turn.
    RoundRobin,
}

impl IngressArgs {
    /// The settings these flags ask for, listening on `--ingress-listen` or else on
    /// `default_listen`; `None` when neither is given.
    pub fn settings(&self, default_listen: Option<&str>) -> Result<Option<IngressSettings>> {
        let Some(listen) = self.ingress_listen.clone().or(default_listen.map(str::to_string)) else { return Ok(None) };
        let mut config = IngressConfig {
            balancing: match self.ingress_balancing {
                BalancingArg::LeastOutstanding => ingress::Balancing::LeastOutstanding,
                BalancingArg::RoundRobin => ingress::Balancing::RoundRobin,
            },
            threads: self.ingress_threads.map(usize::from),
            ..IngressConfig::default()
        };
        if let (Some(cert), Some(key)) = (&self.ingress_tls_cert, &self.ingress_tls_key) {
            config.tls = Some(ingress::TlsFiles { cert: cert.clone(), key: key.clone() });
        }
        if let Some(path) = &self.ingress_access_log {
            config.access_log = Some(
                ingress::AccessLog::to_file(path).map_err(|e| AgentError::Api(format!("--ingress-access-log {}: {e}", path.display())))?,
            );
        }
        Ok(Some(IngressSettings { listen, config }))
    }
}

/// Where and how the node's ingress serves.
#[derive(Debug, Clone)]
pub struct IngressSettings {
    /// HOST:PORT; port 0 for any free port.
    pub listen: String,
    pub config: IngressConfig,
}

/// A bound ingress listener, ready to [`serve`].
pub struct BoundIngress {
    listener: TcpListener,
    config: IngressConfig,
}

impl BoundIngress {
    /// The address it accepts on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }
}

/// Binds the ingress's address now, so that a taken address stops the start with a clear error.
pub async fn bind(settings: &IngressSettings) -> Result<BoundIngress> {
    let listener = TcpListener::bind(&settings.listen).await.map_err(|e| {
        AgentError::Api(format!("the ingress cannot listen on {}: {e} (pick another with --ingress-listen)", settings.listen))
    })?;
    Ok(BoundIngress { listener, config: settings.config.clone() })
}

/// What the node's ingress sends where, for the heartbeat: the servers end a task's drain once
/// no ingress has it in its table or a request in flight to it.
#[derive(Clone)]
pub struct IngressHandle {
    ingress: Arc<Ingress>,
    routes: watch::Receiver<RouteTable>,
}

impl IngressHandle {
    /// The targets of the ingress's current table and its requests in flight.
    pub fn report(&self) -> agent_pb::IngressReport {
        let mut targets: Vec<String> =
            self.routes.borrow().routes.iter().flat_map(|r| r.targets.iter().map(SocketAddr::to_string)).collect();
        targets.sort();
        targets.dedup();
        let in_flight = self.ingress.in_flight_all().into_iter().map(|(addr, n)| (addr.to_string(), n)).collect();
        agent_pb::IngressReport { targets, in_flight }
    }
}

/// Starts the ingress on `bound` with the route table of `servers`: its handle, and the future
/// that serves until it is dropped. Must be called inside a tokio runtime.
pub fn start(
    bound: BoundIngress,
    servers: Vec<String>,
    connections: transport::Transport,
) -> Result<(IngressHandle, impl Future<Output = Result<()>>)> {
    let (tx, rx) = watch::channel(RouteTable::default());
    let ingress = Arc::new(Ingress::new(bound.config, rx.clone()).map_err(|e| AgentError::Api(format!("the ingress: {e}")))?);
    let handle = IngressHandle { ingress: Arc::clone(&ingress), routes: rx };
    let served = async move {
        tokio::select! {
            () = follow_routes(servers, connections, tx) => Ok(()),
            served = ingress.serve(bound.listener, std::future::pending()) => served.map_err(|e| AgentError::Api(format!("the ingress stopped: {e}"))),
        }
    };
    Ok((handle, served))
}

/// Follows the route table on the servers in turn, forever, sending each one on `tx`.
async fn follow_routes(servers: Vec<String>, connections: transport::Transport, tx: watch::Sender<RouteTable>) {
    let mut rotation = crate::node::connect::ServerRotation::new(&servers);
    loop {
        let server = rotation.server();
        let began = Instant::now();
        match watch_one(&connections, server, &tx).await {
            Ok(()) => tracing::warn!(server, "the route stream ended; reconnecting"),
            Err(e) => tracing::warn!(server, "following the routes failed: {e}"),
        }
        rotation.ended(began).await;
    }
}

async fn watch_one(connections: &transport::Transport, server: &str, tx: &watch::Sender<RouteTable>) -> Result<()> {
    let channel = crate::node::connect::connect(connections, server).await?;
    let mut stream = RouteApiClient::new(channel)
        .watch_routes(pb::WatchRoutesRequest {})
        .await
        .map_err(|s| AgentError::rpc("watch routes", &s))?
        .into_inner();
    while let Some(table) = stream.message().await.map_err(|s| AgentError::rpc("route stream", &s))? {
        let table = route_table(&table);
        tracing::debug!(routes = table.routes.len(), "new route table");
        tx.send_replace(table);
    }
    Ok(())
}

/// The servers' table as the ingress routes by: each rule with its healthy targets only.
pub fn route_table(table: &pb::RouteTable) -> RouteTable {
    let routes = table
        .rules
        .iter()
        .map(|rule| {
            let targets = rule.targets.iter().filter(|t| t.healthy).filter_map(|t| match t.address.parse::<SocketAddr>() {
                Ok(address) => Some(address),
                Err(_) => {
                    tracing::warn!(task = %t.task_id, address = %t.address, "a target address is not IP:PORT; left out");
                    None
                }
            });
            let route = Route::new(rule.service.clone(), rule.path_prefix.clone())
                .with_targets(targets)
                .with_timeout(Duration::from_millis(rule.timeout_ms.max(1)));
            if rule.host.is_empty() { route } else { route.with_host(rule.host.clone()) }
        })
        .collect();
    RouteTable { routes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(task: &str, address: &str, healthy: bool) -> pb::RouteTarget {
        pb::RouteTarget { task_id: task.into(), address: address.into(), healthy }
    }

    #[test]
    fn only_healthy_targets_with_an_address_reach_the_ingress() {
        let table = pb::RouteTable {
            index: 7,
            rules: vec![
                pb::RouteRule {
                    service: "quotes".into(),
                    host: "quotes.example".into(),
                    path_prefix: "/api/v1".into(),
                    port: 8080,
                    timeout_ms: 5_000,
                    targets: vec![
                        target("a", "10.0.0.1:30001", true),
                        target("b", "10.0.0.2:30002", false),
                        target("c", "not an address", true),
                    ],
                },
                pb::RouteRule { service: "web".into(), path_prefix: "/".into(), port: 80, timeout_ms: 60_000, ..Default::default() },
            ],
        };
        let converted = route_table(&table);
        assert_eq!(
            converted.routes,
            [
                Route::new("quotes", "/api/v1")
                    .with_host("quotes.example")
                    .with_targets(["10.0.0.1:30001".parse().unwrap()])
                    .with_timeout(Duration::from_secs(5)),
                Route::new("web", "/"),
            ]
        );
    }
}
