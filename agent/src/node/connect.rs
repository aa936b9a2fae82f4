//! One connection to a server, as every long-lived stream of the agent needs it.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Connects to `server` (HOST:PORT) within 2 s, with HTTP/2 pings so that a dead connection is
/// noticed.
pub async fn connect(server: &str) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{server}"))
        .map_err(|e| format!("bad server address {server:?}: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        // A server cut off the network sends no RST: without pings every call on the
        // connection (heartbeats, reports, the assignment stream) would hang for minutes and
        // the node would be marked down. A dead connection is noticed within about 5 s.
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true)
        .connect()
        .await
        .map_err(|e| format!("connect to {server}: {e}"))
}
