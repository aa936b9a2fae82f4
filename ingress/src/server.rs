//! The listener side: accept connections, terminate TLS when configured, and serve each
//! connection with hyper (HTTP/1.1 or HTTP/2, detected from the first bytes or chosen by
//! ALPN), upgrades allowed. Each connection has a watchdog that closes it gracefully when it
//! has been idle longer than the idle timeout; on shutdown every connection is asked to close
//! after its requests in flight, and cut after the grace period.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::IngressConfig;
use crate::idle::{Activity, IdleIo, check_every};
use crate::proxy::{Downstream, Proxy};

/// hyper refuses a smaller HTTP/1 read buffer.
const MIN_HEADER_BYTES: usize = 8192;

/// Everything a connection task needs.
struct Shared {
    proxy: Arc<Proxy>,
    http: auto::Builder<TokioExecutor>,
    tls: Option<TlsAcceptor>,
    idle_timeout: Duration,
    tls_handshake_timeout: Duration,
}

/// Serves `listener` until `shutdown` completes, then drains the connections.
pub async fn serve(
    config: &IngressConfig,
    proxy: Arc<Proxy>,
    tls: Option<TlsAcceptor>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = auto::Builder::new(TokioExecutor::new());
    let header_bytes = config.max_header_bytes.max(MIN_HEADER_BYTES);
    http.http1().timer(TokioTimer::new()).header_read_timeout(config.header_read_timeout).max_buf_size(header_bytes);
    http.http2().timer(TokioTimer::new()).max_header_list_size(u32::try_from(header_bytes).unwrap_or(u32::MAX));
    let shared =
        Arc::new(Shared { proxy, http, tls, idle_timeout: config.idle_timeout, tls_handshake_timeout: config.tls_handshake_timeout });
    let local_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut prune = tokio::time::interval(check_every(config.target_idle_timeout));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => {
                    let down = Arc::new(Downstream::new(client, local_port, shared.tls.is_some()));
                    connections.spawn(connection(Arc::clone(&shared), stream, down, stop_rx.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next() => {}
            _ = prune.tick() => shared.proxy.upstream.prune(),
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = connections.len();
    tracing::info!(open, "ingress stopping; draining connections");
    let deadline = tokio::time::Instant::now() + config.shutdown_grace;
    let drained = tokio::time::timeout_at(deadline, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(left = connections.len(), "connections cut after the shutdown grace period");
        connections.shutdown().await;
    }
    shared.proxy.close_tunnels(deadline).await;
}

/// One client connection: TLS handshake if any, then HTTP until the client leaves, the
/// connection idles out or the ingress stops.
async fn connection(shared: Arc<Shared>, stream: TcpStream, down: Arc<Downstream>, stop: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    match &shared.tls {
        None => serve_http(&shared, stream, down, stop).await,
        Some(acceptor) => match tokio::time::timeout(shared.tls_handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => serve_http(&shared, tls, down, stop).await,
            Ok(Err(e)) => {
                tracing::debug!(client = %down.client, error = %e, "tls handshake failed")
            }
            Err(_) => tracing::debug!(client = %down.client, "tls handshake timed out"),
        },
    }
}

async fn serve_http<S>(shared: &Shared, stream: S, down: Arc<Downstream>, stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let io = TokioIo::new(IdleIo::new(stream, activity.clone()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let proxy = Arc::clone(&shared.proxy);
    let counter = Arc::clone(&in_flight);
    let client = down.client;
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let proxy = Arc::clone(&proxy);
        let down = Arc::clone(&down);
        let guard = InFlight::enter(&counter);
        async move {
            let response = proxy.handle(req, &down).await;
            drop(guard);
            Ok::<_, Infallible>(response)
        }
    });
    let conn = shared.http.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    // The stop signal and the idle timeout are watched by a task of their own: a connection
    // wakes up several times per request, and each wake-up then polls only the connection and
    // this one receiver.
    let (close, mut closed) = oneshot::channel();
    tokio::spawn(watch_connection(stop, activity, in_flight, shared.idle_timeout, client, close));
    let result = tokio::select! {
        biased;
        result = conn.as_mut() => result,
        _ = &mut closed => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %client, error = %e, "client connection ended with an error");
    }
}

/// Asks a connection to close (`close`) when the ingress stops or when it has been idle, with
/// no request in flight, for `idle_timeout`; ends with the connection.
async fn watch_connection(
    mut stop: watch::Receiver<bool>,
    activity: Activity,
    in_flight: Arc<AtomicUsize>,
    idle_timeout: Duration,
    client: std::net::SocketAddr,
    mut close: oneshot::Sender<()>,
) {
    let mut watchdog = tokio::time::interval(check_every(idle_timeout));
    let mut quiet = activity.watch();
    loop {
        tokio::select! {
            () = close.closed() => return,
            changed = stop.changed() => if changed.is_err() || *stop.borrow() {
                break;
            },
            _ = watchdog.tick() => if in_flight.load(Ordering::Relaxed) == 0 && quiet.look() >= idle_timeout {
                tracing::debug!(client = %client, "closing idle client connection");
                break;
            },
        }
    }
    let _ = close.send(());
}

/// Counts a request in flight on its connection while alive.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
