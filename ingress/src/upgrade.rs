//! Upgrade pass-through (WebSocket and any other `Upgrade`): once the target answered 101,
//! the client's connection and the target's are joined and bytes copied both ways until
//! either side closes, nothing has moved either way for the idle timeout (as ALB does for
//! WebSockets), or the ingress stops (after its shutdown grace). The target stays leased
//! (counted as outstanding) for as long.

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use crate::access_log::PendingLog;
use crate::idle::{Activity, IdleIo};
use crate::targets::Lease;

/// When a tunnel closes on its own account.
pub struct TunnelLimits {
    pub idle_timeout: Duration,
    /// Becomes `true` when the ingress stops; the tunnel counts as open while it holds this.
    pub stop: watch::Receiver<bool>,
}

/// Joins the two upgraded connections; logs the request when the tunnel closes, with the
/// bytes sent to the client.
pub async fn tunnel(client: OnUpgrade, target: OnUpgrade, lease: Lease, log: PendingLog, limits: TunnelLimits) {
    let TunnelLimits { idle_timeout, mut stop } = limits;
    let (client, target) = match tokio::try_join!(client, target) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            log.finish(0, Some("upgrade failed"));
            return;
        }
    };
    let activity = Activity::new();
    let mut client = IdleIo::new(TokioIo::new(client), activity.clone());
    let mut target = TokioIo::new(target);
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut target) => match copied {
            Ok((_, to_client)) => log.finish(to_client, None),
            Err(e) => {
                tracing::debug!(error = %e, "upgraded connection failed");
                log.finish(0, Some("upgraded connection failed"));
            }
        },
        () = activity.idle_at_least(idle_timeout) => {
            tracing::debug!(target = %lease.addr(), "closing idle upgraded connection");
            log.finish(0, Some("idle timeout"));
        }
        _ = stop.wait_for(|stop| *stop) => log.finish(0, Some("ingress stopping")),
    }
    drop(lease);
}
