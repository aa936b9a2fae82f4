//! Real sockets on 127.0.0.1 for the ingress tests: backends made of a hyper server and a
//! closure, an ingress on port 0 fed by a watch channel, and a plain HTTP/1.1 client.

#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ingress::{Ingress, IngressConfig, RouteTable};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// Every wait in these tests ends within this.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A backend on 127.0.0.1: its address and how many requests it received.
#[derive(Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// Connections accepted (counted by [`backend`] only).
    pub accepted: Arc<AtomicUsize>,
}

impl Backend {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Starts a backend answering every request with `handler` (HTTP/1.1, upgrades allowed).
pub async fn backend<F, Fut>(handler: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let accepted = Arc::new(AtomicUsize::new(0));
    let accepts = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            accepts.fetch_add(1, Ordering::SeqCst);
            let handler = handler.clone();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let answer = handler(req);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades().await;
            });
        }
    });
    Backend { addr, hits, accepted }
}

/// A backend answering `name` after `delay`, that can be killed: its listener and every
/// connection close at once, mid-request or not (a task's SIGKILL, as its clients see it).
pub async fn killable(name: &'static str, delay: Duration) -> (Backend, tokio::task::AbortHandle) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let serving = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counter = Arc::clone(&counter);
            connections.spawn(async move {
                let service = service_fn(move |_req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(text(StatusCode::OK, name))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (Backend { addr, hits, accepted: Arc::default() }, serving.abort_handle())
}

/// A backend that answers `name` (and the path) to every request.
pub async fn named(name: &'static str) -> Backend {
    backend(move |req: Request<Incoming>| async move { text(StatusCode::OK, &format!("{name} {}", req.uri().path())) }).await
}

/// A backend that answers with the request's headers, one `name: value` per line.
pub async fn echo_headers() -> Backend {
    backend(|req: Request<Incoming>| async move {
        let lines: Vec<String> = req.headers().iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?"))).collect();
        text(StatusCode::OK, &lines.join("\n"))
    })
    .await
}

pub fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}

/// An address nothing listens on (bound, then released).
pub async fn refusing_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// An ingress on 127.0.0.1 port 0.
pub struct Harness {
    pub addr: SocketAddr,
    pub routes: watch::Sender<RouteTable>,
    pub ingress: Arc<Ingress>,
    stop: Option<oneshot::Sender<()>>,
}

impl Harness {
    pub async fn start(config: IngressConfig, table: RouteTable) -> Harness {
        let (routes, rx) = watch::channel(table);
        let ingress = Arc::new(Ingress::new(config, rx).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = Arc::clone(&ingress);
        tokio::spawn(async move {
            serving
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Harness { addr, routes, ingress, stop: Some(stop) }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Harness {
    /// Completes the ingress's shutdown future.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a client got back.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// A pooled HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `method path` with `Host: host` and these extra headers to the ingress.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    harness: &Harness,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Got {
    let mut request = Request::builder().method(method).uri(harness.url(path)).header("host", host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::new())).unwrap();
    let response = tokio::time::timeout(PATIENCE, client.request(request)).await.expect("no answer in time").expect("request failed");
    let (head, body) = response.into_parts();
    let body = tokio::time::timeout(PATIENCE, body.collect()).await.expect("no body in time").expect("body failed").to_bytes();
    Got { status: head.status, headers: head.headers, body: String::from_utf8_lossy(&body).into_owned() }
}

/// `GET path` with `Host: host`.
pub async fn get(client: &Client<HttpConnector, Full<Bytes>>, harness: &Harness, host: &str, path: &str) -> Got {
    send(client, harness, "GET", host, path, &[]).await
}
