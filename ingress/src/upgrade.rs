//! Upgrade pass-through (WebSocket and any other `Upgrade`): once the target answered 101,
//! the client's connection and the target's are joined and bytes copied both ways until
//! either side closes. The target stays leased (counted as outstanding) for as long.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::access_log::PendingLog;
use crate::targets::Lease;

/// Joins the two upgraded connections; logs the request when the tunnel closes, with the
/// bytes sent to the client.
pub async fn tunnel(client: OnUpgrade, target: OnUpgrade, lease: Lease, log: PendingLog) {
    let (client, target) = match tokio::try_join!(client, target) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            log.finish(0, Some("upgrade failed"));
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut target = TokioIo::new(target);
    match tokio::io::copy_bidirectional(&mut client, &mut target).await {
        Ok((_, to_client)) => log.finish(to_client, None),
        Err(e) => {
            tracing::debug!(error = %e, "upgraded connection failed");
            log.finish(0, Some("upgraded connection failed"));
        }
    }
    drop(lease);
}
