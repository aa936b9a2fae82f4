//! Serving on threads of the ingress's own: each worker thread runs a single-threaded tokio
//! runtime with its own accept loop on the same listening socket and its own [`Proxy`] (so its
//! own keep-alive connections to targets). Route table, target state and the access log are
//! shared. A request is then handled start to end on one thread, as in nginx's workers.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::IngressConfig;
use crate::error::Error;
use crate::proxy::Proxy;
use crate::server;

/// Serves `listener` on one thread per proxy until `shutdown` completes, then waits for every
/// worker to drain (each within `shutdown_grace`).
pub async fn serve(
    config: &IngressConfig,
    proxies: Vec<Arc<Proxy>>,
    tls: Option<TlsAcceptor>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let listener = listener.into_std().map_err(Error::Listener)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut finished = Vec::with_capacity(proxies.len());
    for (index, proxy) in proxies.into_iter().enumerate() {
        let listener = listener.try_clone().map_err(Error::Listener)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::Worker)?;
        let (config, tls, mut stop) = (config.clone(), tls.clone(), stop_rx.clone());
        let (done_tx, done_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("ingress-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            tracing::error!(error = %e, "ingress worker cannot listen");
                            return;
                        }
                    };
                    let stopped = async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    };
                    server::serve(&config, proxy, tls, listener, stopped).await;
                });
                drop(done_tx);
            })
            .map_err(Error::Worker)?;
        finished.push(done_rx);
    }
    drop(listener);
    shutdown.await;
    let _ = stop_tx.send(true);
    for done in finished {
        let _ = done.await;
    }
    Ok(())
}
