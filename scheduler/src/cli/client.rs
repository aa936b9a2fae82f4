//! Connecting to the cluster: the addresses from `--server` / `SCHED_SERVER` are tried in turn,
//! moving on when a server cannot be reached or has no leader (UNAVAILABLE: the request never
//! reached the log), and stopping at the first real answer (including a rejection, which another
//! server would repeat). A request whose outcome is unknown (ABORTED, a timeout) is not sent
//! elsewhere: that could apply it twice. The channels are made by the [`transport`] crate
//! ([`Profile::CLI_CALL`], [`Profile::CLI_STREAM`]).

use crate::error_chain::source_chain;
use std::future::Future;

use proto::sched::v1::cluster_api_client::ClusterApiClient;
use proto::sched::v1::route_api_client::RouteApiClient;
use proto::sched::v1::service_api_client::ServiceApiClient;
use tonic::transport::Channel;
use transport::{Profile, Security, Transport, TransportError};

use super::CliError;

/// The servers a command may ask, in order.
pub struct Servers {
    addresses: Vec<String>,
    /// How the connections are made (security, timeouts).
    connections: Transport,
}

impl Servers {
    /// Parses `ADDR[,ADDR...]` (HOST:PORT or a URL); the servers are reached with `security`.
    pub fn parse(list: &str, security: Security) -> Result<Servers, CliError> {
        let addresses: Vec<String> = list.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect();
        if addresses.is_empty() {
            return Err(CliError::BadInput("--server needs at least one HOST:PORT (or set SCHED_SERVER)".into()));
        }
        let connections = Transport::new(security).map_err(|e| CliError::BadInput(format!("connections: {e}")))?;
        Ok(Servers { addresses, connections })
    }

    /// Runs `call` against each server until one answers. UNAVAILABLE and connection failures
    /// move on to the next server; other errors are final.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, CliError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.call_on(Profile::CLI_CALL, call).await
    }

    /// Like [`Servers::call`] for a call that answers with a stream which may stay open for
    /// long (`sched logs -f`): no request timeout, and HTTP/2 keepalive pings so a server that
    /// vanishes ends the stream instead of leaving it hanging.
    pub async fn call_streaming<T, F, Fut>(&self, call: F) -> Result<T, CliError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.call_on(Profile::CLI_STREAM, call).await
    }

    async fn call_on<T, F, Fut>(&self, profile: Profile, call: F) -> Result<T, CliError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut failures = Vec::new();
        for address in &self.addresses {
            let channel = match self.connections.connect(address, profile).await {
                Ok(channel) => channel,
                Err(TransportError::Address(_)) => return Err(CliError::BadInput(format!("--server: \"{address}\" is not HOST:PORT"))),
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
