//! One request through the ingress, in phases (after Pingora's): find the route, choose a
//! target, rewrite the headers, send with the route's timeout, retry on another target when
//! that is safe, and hand back the target's answer or the ingress's own (see
//! [`crate::answer`]).
//!
//! Retries: after a connect failure (refused, unreachable, connect timeout) nothing was sent,
//! so the next target is tried whatever the method; after a failure once the request was
//! sent (reset, closed before the answer, malformed answer), only idempotent methods (GET,
//! HEAD, OPTIONS, PUT, DELETE, TRACE) are retried. A body is replayable when it is empty or
//! has a `Content-Length` within `retry_body_limit` (it is read whole first); other bodies
//! are streamed and never retried. The route's timeout covers every attempt up to the
//! response head; the body then streams for as long as it takes (the client connection's
//! idle timeout still applies).
//!
//! Only connect failures mark a target down: a reset on a pooled keep-alive connection may
//! just be the target closing an idle connection, and a crashed target refuses the next
//! connection anyway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::watch;
use tokio::time::timeout_at;

use crate::access_log::{AccessLog, PendingLog};
use crate::answer;
use crate::balance::Balancing;
use crate::body::{ProxyBody, TargetBody, empty, full, incoming};
use crate::config::IngressConfig;
use crate::forwarded;
use crate::host::normalize_host;
use crate::route_table::Route;
use crate::routing::Routing;
use crate::targets::{Lease, TargetPool};
use crate::upgrade;

/// What the proxy knows of the client connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct Downstream {
    pub client: SocketAddr,
    pub local_port: u16,
    pub https: bool,
}

/// The proxy shared by every connection of one ingress.
pub struct Proxy {
    routing: watch::Receiver<Arc<Routing>>,
    pub pool: Arc<TargetPool>,
    client: Client<HttpConnector, ProxyBody>,
    balancing: Balancing,
    max_attempts: u32,
    retry_body_limit: usize,
    /// Upgraded connections close after this long with nothing moving either way.
    idle_timeout: Duration,
    /// Every open tunnel holds a receiver; `true` closes them (at shutdown).
    tunnels: watch::Sender<bool>,
    access_log: Option<AccessLog>,
}

/// Why no target answered.
enum Failure {
    /// The route's timeout passed first: 504.
    Timeout,
    /// Every attempt failed (or a retry was not safe), for this reason: 502.
    NoAnswer(&'static str),
}

/// The failure of an attempt whose connection could not be made.
const CONNECT_FAILED: &str = "connect failed";

/// The request body, kept for retries when it is small enough.
enum RequestBody {
    Replayable(Bytes),
    Once(Option<Incoming>),
}

impl RequestBody {
    fn take(&mut self) -> Option<ProxyBody> {
        match self {
            RequestBody::Replayable(bytes) if bytes.is_empty() => Some(empty()),
            RequestBody::Replayable(bytes) => Some(full(bytes.clone())),
            RequestBody::Once(body) => body.take().map(incoming),
        }
    }
}

impl Proxy {
    pub fn new(config: &IngressConfig, routing: watch::Receiver<Arc<Routing>>, pool: Arc<TargetPool>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.target_idle_timeout)
            .build(connector);
        Proxy {
            routing,
            pool,
            client,
            balancing: config.balancing,
            max_attempts: config.max_attempts.max(1),
            retry_body_limit: config.retry_body_limit,
            idle_timeout: config.idle_timeout,
            tunnels: watch::Sender::new(false),
            access_log: config.access_log.clone(),
        }
    }

    /// Answers one client request.
    pub async fn handle(&self, mut req: Request<Incoming>, down: Downstream) -> Response<ProxyBody> {
        let raw_host = request_host(&req);
        let host = raw_host.as_deref().and_then(normalize_host);
        let path = req.uri().path().to_string();
        let mut log = PendingLog::start(self.access_log.clone(), down.client, req.method(), raw_host.as_deref(), &path);
        let routing = self.routing.borrow().clone();
        let Some(index) = routing.rules.find(host.as_deref(), &path) else {
            return own_answer(log, answer::no_rule(host.as_deref(), &path), Some("no rule"));
        };
        let route = &routing.table.routes[index];
        log.record.service = Some(route.service.clone());
        if route.targets.is_empty() {
            return own_answer(log, answer::no_target(&route.service), Some("no healthy target"));
        }
        let deadline = (log.arrived() + route.timeout).into();

        let upgrading = req.version() <= Version::HTTP_11 && forwarded::is_upgrade(req.headers());
        let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        forwarded::strip_hop_by_hop(&mut parts.headers, upgrading);
        forwarded::add_forwarded(&mut parts.headers, down.client.ip(), down.https, raw_host.as_deref(), down.local_port);
        if let Some(value) = raw_host.as_deref().and_then(|h| HeaderValue::from_str(h).ok()) {
            parts.headers.insert(HOST, value);
        }
        let mut body = match timeout_at(deadline, self.request_body(&parts, body)).await {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot read the request body");
                return own_answer(log, answer::bad_request("cannot read the request body"), Some("bad request body"));
            }
            Err(_) => {
                return own_answer(log, answer::request_timeout(), Some("request body too slow"));
            }
        };

        let cursor = routing.cursors[index].fetch_add(1, Ordering::Relaxed);
        let sent = self.send(route, &parts, &mut body, cursor, deadline, &mut log).await;
        match sent {
            Ok((response, lease)) => self.respond(response, lease, log, client_upgrade, &route.service),
            Err(Failure::Timeout) => own_answer(log, answer::gateway_timeout(&route.service), Some("timeout")),
            Err(Failure::NoAnswer(why)) => {
                let text = if why == CONNECT_FAILED { "no target accepted the connection" } else { "no target answered" };
                own_answer(log, answer::bad_gateway(&route.service, text), Some(why))
            }
        }
    }

    /// Sends the request to the route's targets, one attempt per target, until one answers,
    /// retrying only when it is safe, within `deadline`.
    async fn send(
        &self,
        route: &Route,
        parts: &Parts,
        body: &mut RequestBody,
        cursor: usize,
        deadline: tokio::time::Instant,
        log: &mut PendingLog,
    ) -> Result<(Response<Incoming>, Lease), Failure> {
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut failure = Failure::NoAnswer("no target could be tried");
        while (tried.len() as u32) < self.max_attempts {
            let Some(lease) = self.pool.acquire(&route.targets, self.balancing, cursor, &tried) else {
                break;
            };
            let Some(attempt_body) = body.take() else {
                break;
            };
            let target = lease.addr;
            tried.push(target);
            log.record.target = Some(target);
            log.record.attempts += 1;
            let upstream = upstream_request(parts, target, attempt_body);
            match timeout_at(deadline, self.client.request(upstream)).await {
                Ok(Ok(response)) => {
                    self.pool.succeeded(target);
                    log.answered(response.status().as_u16());
                    return Ok((response, lease));
                }
                Ok(Err(e)) => {
                    let connect = e.is_connect();
                    tracing::debug!(%target, error = %source_chain(&e), connect, "attempt failed");
                    if connect {
                        self.pool.failed(target);
                        failure = Failure::NoAnswer(CONNECT_FAILED);
                    } else {
                        failure = Failure::NoAnswer("target failed before answering");
                        if !is_idempotent(&parts.method) {
                            break;
                        }
                    }
                }
                Err(_) => return Err(Failure::Timeout),
            }
        }
        Err(failure)
    }

    /// Hands the target's answer to the client (see [`respond`]).
    fn respond(
        &self,
        response: Response<Incoming>,
        lease: Lease,
        log: PendingLog,
        client_upgrade: Option<OnUpgrade>,
        service: &str,
    ) -> Response<ProxyBody> {
        respond(response, lease, log, client_upgrade, service, || upgrade::TunnelLimits {
            idle_timeout: self.idle_timeout,
            stop: self.tunnels.subscribe(),
        })
    }

    /// Waits until `deadline` for the open tunnels to end, then closes those left.
    pub async fn close_tunnels(&self, deadline: tokio::time::Instant) {
        while self.tunnels.receiver_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let open = self.tunnels.receiver_count();
        if open > 0 {
            tracing::info!(open, "closing upgraded connections");
        }
        self.tunnels.send_replace(true);
    }

    async fn request_body(&self, parts: &Parts, body: Incoming) -> Result<RequestBody, hyper::Error> {
        if body.is_end_stream() {
            return Ok(RequestBody::Replayable(Bytes::new()));
        }
        let declared = parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(len) if len <= self.retry_body_limit as u64 => Ok(RequestBody::Replayable(body.collect().await?.to_bytes())),
            _ => Ok(RequestBody::Once(Some(body))),
        }
    }
}

/// Hands the target's answer to the client: its body streamed (the lease and the access log
/// line follow the body to its end), or, for a 101, the tunnel started.
fn respond(
    mut response: Response<Incoming>,
    lease: Lease,
    log: PendingLog,
    client_upgrade: Option<OnUpgrade>,
    service: &str,
    tunnel: impl FnOnce() -> upgrade::TunnelLimits,
) -> Response<ProxyBody> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return own_answer(log, answer::bad_gateway(service, "target switched protocols unasked"), Some("unasked upgrade"));
        };
        let target_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(upgrade::tunnel(client_upgrade, target_upgrade, lease, log, tunnel()));
        let (mut head, _) = response.into_parts();
        forwarded::strip_hop_by_hop(&mut head.headers, true);
        return Response::from_parts(head, empty());
    }
    let (mut head, body) = response.into_parts();
    forwarded::strip_hop_by_hop(&mut head.headers, false);
    head.version = Version::HTTP_11;
    Response::from_parts(head, TargetBody::new(body, lease, log).boxed())
}

/// Writes the access log line of an answer the ingress gives itself.
fn own_answer(mut log: PendingLog, response: Response<ProxyBody>, error: Option<&'static str>) -> Response<ProxyBody> {
    log.record.status = response.status().as_u16();
    let bytes = response.body().size_hint().exact().unwrap_or(0);
    log.finish(bytes, error);
    response
}

/// The host the client asked for, as sent: the `Host` header, or the URI's authority
/// (HTTP/2's `:authority`, or an absolute-form request line).
fn request_host<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()))
}

/// The request to send to `target`: same method, path, query and (rewritten) headers, over
/// HTTP/1.1.
fn upstream_request(parts: &Parts, target: SocketAddr, body: ProxyBody) -> Request<ProxyBody> {
    let path = parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let uri = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(target.to_string())
        .path_and_query(path)
        .build()
        .unwrap_or_else(|_| Uri::from_static("/"));
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = parts.headers.clone();
    request
}

fn is_idempotent(method: &Method) -> bool {
    [Method::GET, Method::HEAD, Method::OPTIONS, Method::PUT, Method::DELETE, Method::TRACE].contains(method)
}

/// An error and its causes, `: `-joined (hyper's own messages are terse).
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
