//! Connecting to the cluster: the addresses from `--server` / `SCHED_SERVER` are tried in turn,
//! moving on when a server cannot be reached or has no leader (UNAVAILABLE: the request never
//! reached the log), and stopping at the first real answer (including a rejection, which another
//! server would repeat). A request whose outcome is unknown (ABORTED, a timeout) is not sent
//! elsewhere: that could apply it twice.

use crate::error_chain::source_chain;
use std::future::Future;
use std::time::Duration;

use proto::sched::v1::cluster_api_client::ClusterApiClient;
use proto::sched::v1::route_api_client::RouteApiClient;
use proto::sched::v1::service_api_client::ServiceApiClient;
use tonic::transport::{Channel, Endpoint};

use super::CliError;

/// The servers a command may ask, in order.
pub struct Servers {
    addresses: Vec<String>,
}

impl Servers {
    /// Parses `ADDR[,ADDR...]` (HOST:PORT or a URL).
    pub fn parse(list: &str) -> Result<Servers, CliError> {
        let addresses: Vec<String> = list.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect();
        if addresses.is_empty() {
            return Err(CliError::BadInput("--server needs at least one HOST:PORT (or set SCHED_SERVER)".into()));
        }
        Ok(Servers { addresses })
    }

    /// Runs `call` against each server until one answers. UNAVAILABLE and connection failures
    /// move on to the next server; other errors are final.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, CliError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.call_on(|e| e.timeout(Duration::from_secs(10)), call).await
    }

    /// Like [`Servers::call`] for a call that answers with a stream which may stay open for
    /// long (`sched logs -f`): no request timeout, and HTTP/2 keepalive pings so a server that
    /// vanishes ends the stream instead of leaving it hanging.
    pub async fn call_streaming<T, F, Fut>(&self, call: F) -> Result<T, CliError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.call_on(|e| e.http2_keep_alive_interval(Duration::from_secs(10)).keep_alive_timeout(Duration::from_secs(5)), call).await
    }

    async fn call_on<T, F, Fut>(&self, configure: impl Fn(Endpoint) -> Endpoint, call: F) -> Result<T, CliError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut failures = Vec::new();
        for address in &self.addresses {
            let url = if address.contains("://") { address.clone() } else { format!("http://{address}") };
            let endpoint = match Endpoint::from_shared(url) {
                Ok(e) => configure(e.connect_timeout(Duration::from_secs(2))),
                Err(_) => return Err(CliError::BadInput(format!("--server: \"{address}\" is not HOST:PORT"))),
            };
            let channel = match endpoint.connect().await {
                Ok(channel) => channel,
                Err(e) => {
                    failures.push(format!("{address}: cannot connect ({})", source_chain(&e)));
                    continue;
                }
            };
            match call(channel).await {
                Ok(answer) => return Ok(answer),
                // Never reached the log: the next server may do better.
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    failures.push(format!("{address}: {}", status.message()));
                }
                // May have been applied: asking another server could apply it twice.
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::Aborted | tonic::Code::DeadlineExceeded | tonic::Code::Unknown | tonic::Code::Cancelled
                    ) =>
                {
                    return Err(CliError::Unreachable(format!(
                        "{address}: {} (the request may or may not have been applied: check before retrying)",
                        status.message()
                    )));
                }
                Err(status) => return Err(CliError::Rejected(status.message().to_string())),
            }
        }
        Err(CliError::Unreachable(format!("no server could answer:\n  {}", failures.join("\n  "))))
    }
}

pub fn services(channel: Channel) -> ServiceApiClient<Channel> {
    ServiceApiClient::new(channel)
}

pub fn routes(channel: Channel) -> RouteApiClient<Channel> {
    RouteApiClient::new(channel)
}

pub fn cluster(channel: Channel) -> ClusterApiClient<Channel> {
    ClusterApiClient::new(channel)
}
