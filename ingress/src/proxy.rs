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
//! connection anyway. A pooled connection the target had closed before the request was
//! written hands the request back, and it goes out on the next connection to the same target
//! (see [`crate::upstream`]).
//!
//! The request path does per request only what depends on the request: headers are rewritten
//! in place (the client's `X-Forwarded-*` values are made once per connection), the request
//! goes out on a connection of this proxy's own pool driven by the request's own task, and
//! the headers are copied only when a later attempt may still need them (an idempotent
//! request with targets left to try).

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::access_log::{AccessLog, PendingLog};
use crate::answer;
use crate::balance::Balancing;
use crate::body::{ProxyBody, TargetBody, empty, full, incoming};
use crate::config::IngressConfig;
use crate::forwarded;
use crate::host::normalize_host;
use crate::routing::{RouteView, Routing};
use crate::targets::{Lease, Target, TargetPool};
use crate::upgrade;
use crate::upstream::{TargetConn, Upstream};

/// What the proxy knows of the client connection a request came on (made once per
/// connection).
#[derive(Debug)]
pub struct Downstream {
    pub client: SocketAddr,
    pub https: bool,
    /// The client's address as `X-Forwarded-For` writes it.
    pub forwarded_for: HeaderValue,
    /// The ingress port the client connected to, as `X-Forwarded-Port` writes it.
    pub forwarded_port: HeaderValue,
    /// The timer of the route timeout, kept from one request of the connection to the next
    /// (see [`Deadline`]); `None` until the first request, or while a request holds it.
    timer: Mutex<Option<Pin<Box<Sleep>>>>,
}

impl Downstream {
    pub fn new(client: SocketAddr, local_port: u16, https: bool) -> Self {
        Downstream {
            client,
            https,
            forwarded_for: forwarded::client_value(client.ip()),
            forwarded_port: forwarded::port_value(local_port),
            timer: Mutex::new(None),
        }
    }
}

/// A request's route timeout. It uses its connection's timer, reset to the request's deadline:
/// tokio moves a registered timer to a later deadline by changing a number (it files the timer
/// again only when the earlier deadline comes), so a connection's requests, one after the
/// other, register no timer each. A request that finds the timer in use (HTTP/2 requests in
/// parallel on one connection) makes its own.
struct Deadline<'a> {
    slot: &'a Mutex<Option<Pin<Box<Sleep>>>>,
    sleep: Option<Pin<Box<Sleep>>>,
}

/// The deadline passed first.
struct Elapsed;

impl<'a> Deadline<'a> {
    fn new(slot: &'a Mutex<Option<Pin<Box<Sleep>>>>, deadline: tokio::time::Instant) -> Self {
        let kept = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        let sleep = match kept {
            Some(mut sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        Deadline { slot, sleep: Some(sleep) }
    }

    /// Runs `future` unless the deadline passes first.
    async fn limit<F: Future>(&mut self, future: F) -> Result<F::Output, Elapsed> {
        let mut future = pin!(future);
        poll_fn(|cx| {
            if let Poll::Ready(output) = future.as_mut().poll(cx) {
                return Poll::Ready(Ok(output));
            }
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().poll(cx).map(|()| Err(Elapsed)),
                None => Poll::Pending,
            }
        })
        .await
    }
}

impl Drop for Deadline<'_> {
    fn drop(&mut self) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = self.sleep.take();
        }
    }
}

/// The proxy of one worker (or of the whole ingress without `threads`): its own connections
/// to targets; routes and target state are shared.
pub struct Proxy {
    routes: RouteView,
    pub pool: Arc<TargetPool>,
    /// Idle keep-alive connections to targets.
    pub upstream: Arc<Upstream>,
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

/// How one attempt on one target failed.
enum AttemptError {
    /// No connection could be made: nothing was sent, the target is marked down.
    Connect(std::io::Error),
    /// The connection closed before the request was written: nothing was sent.
    Unsent(hyper::Error),
    /// The request (or part of it) was sent, and no answer came.
    Failed(hyper::Error),
    /// The request body was streamed to an earlier attempt: it cannot be sent again.
    BodyGone,
}

/// The request body, kept for retries when it is small enough.
enum RequestBody {
    Replayable(Bytes),
    Once(Option<ProxyBody>),
}

impl RequestBody {
    fn take(&mut self) -> Option<ProxyBody> {
        match self {
            RequestBody::Replayable(bytes) if bytes.is_empty() => Some(empty()),
            RequestBody::Replayable(bytes) => Some(full(bytes.clone())),
            RequestBody::Once(body) => body.take(),
        }
    }

    /// A body that came back unsent can go out again.
    fn put_back(&mut self, body: ProxyBody) {
        if let RequestBody::Once(slot) = self {
            *slot = Some(body);
        }
    }
}

impl Proxy {
    pub fn new(config: &IngressConfig, routing: watch::Receiver<Arc<Routing>>, pool: Arc<TargetPool>) -> Self {
        Proxy {
            routes: RouteView::new(routing),
            pool,
            upstream: Arc::new(Upstream::new(config.connect_timeout, config.target_idle_timeout)),
            balancing: config.balancing,
            max_attempts: config.max_attempts.max(1),
            retry_body_limit: config.retry_body_limit,
            idle_timeout: config.idle_timeout,
            tunnels: watch::Sender::new(false),
            access_log: config.access_log.clone(),
        }
    }

    /// Answers one client request.
    pub async fn handle(&self, mut req: Request<Incoming>, down: &Downstream) -> Response<ProxyBody> {
        let arrived = Instant::now();
        // HTTP/2 (and absolute-form) requests may name the host in the URI only.
        if !req.headers().contains_key(HOST) {
            if let Some(value) = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
                req.headers_mut().insert(HOST, value);
            }
        }
        let upgrading = req.version() <= Version::HTTP_11 && forwarded::is_upgrade(req.headers());
        let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let host_value = parts.headers.get(HOST).cloned();
        let raw_host = host_value.as_ref().and_then(|v| v.to_str().ok());
        let host = raw_host.and_then(normalize_host);
        let path = parts.uri.path();
        let mut log = PendingLog::start(self.access_log.as_ref(), arrived, down.client, &parts.method, raw_host, path);
        let routes = self.routes.current();
        let routing = &routes.routing;
        let Some(index) = routing.rules.find(host.as_deref(), path) else {
            return own_answer(log, answer::no_rule(host.as_deref(), path), Some("no rule"));
        };
        let route = &routing.table.routes[index];
        let targets = &routing.targets[index];
        log.service(&route.service);
        if targets.is_empty() {
            return own_answer(log, answer::no_target(&route.service), Some("no healthy target"));
        }
        let mut deadline = Deadline::new(&down.timer, (arrived + route.timeout).into());

        forwarded::strip_hop_by_hop(&mut parts.headers, upgrading);
        forwarded::add_forwarded(&mut parts.headers, &down.forwarded_for, down.https, host_value.as_ref(), &down.forwarded_port);
        let mut body = match deadline.limit(self.request_body(&parts, body)).await {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot read the request body");
                return own_answer(log, answer::bad_request("cannot read the request body"), Some("bad request body"));
            }
            Err(_) => {
                return own_answer(log, answer::request_timeout(), Some("request body too slow"));
            }
        };

        let cursor = routes.cursors[index].fetch_add(1, Ordering::Relaxed);
        let sent = self.send(targets, &mut parts, &mut body, upgrading, cursor, &mut deadline, &mut log).await;
        match sent {
            Ok((response, lease, conn)) => self.respond(response, lease, conn, log, client_upgrade, &route.service),
            Err(Failure::Timeout) => own_answer(log, answer::gateway_timeout(&route.service), Some("timeout")),
            Err(Failure::NoAnswer(why)) => {
                let text = if why == CONNECT_FAILED { "no target accepted the connection" } else { "no target answered" };
                own_answer(log, answer::bad_gateway(&route.service, text), Some(why))
            }
        }
    }

    /// Sends the request to the route's targets, one attempt per target, until one answers,
    /// retrying only when it is safe, within `deadline`.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        targets: &[Arc<Target>],
        parts: &mut Parts,
        body: &mut RequestBody,
        upgrading: bool,
        cursor: usize,
        deadline: &mut Deadline<'_>,
        log: &mut PendingLog,
    ) -> Result<(Response<Incoming>, Lease, TargetConn), Failure> {
        // The targets of the attempts that failed (none, and no allocation, when the first
        // attempt answers).
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut failure = Failure::NoAnswer("no target could be tried");
        let idempotent = is_idempotent(&parts.method);
        let mut attempts = 0;
        while attempts < self.max_attempts {
            let Some(lease) = self.pool.acquire(targets, self.balancing, cursor, &tried) else {
                break;
            };
            let target = lease.addr();
            attempts += 1;
            log.attempt(target);
            // Another attempt after a sent request is possible only for an idempotent one
            // with targets and attempts left: only then do the headers need a copy.
            let last = attempts >= self.max_attempts || tried.len() + 1 >= targets.len();
            let keep_headers = idempotent && !last;
            let attempt = deadline.limit(self.attempt(target, parts, body, keep_headers, upgrading)).await;
            if matches!(attempt, Ok(Err(_))) {
                tried.push(target);
            }
            match attempt {
                Ok(Ok((response, conn))) => {
                    self.pool.succeeded(lease.target());
                    log.answered(response.status().as_u16());
                    return Ok((response, lease, conn));
                }
                Ok(Err(AttemptError::Connect(e))) => {
                    tracing::debug!(%target, error = %e, "cannot connect to the target");
                    self.pool.failed(lease.target());
                    failure = Failure::NoAnswer(CONNECT_FAILED);
                }
                Ok(Err(AttemptError::Unsent(e))) => {
                    tracing::debug!(%target, error = %source_chain(&e), "target closed the connection before the request");
                    failure = Failure::NoAnswer("target closed the connection");
                }
                Ok(Err(AttemptError::Failed(e))) => {
                    tracing::debug!(%target, error = %source_chain(&e), "attempt failed");
                    failure = Failure::NoAnswer("target failed before answering");
                    if !idempotent {
                        break;
                    }
                }
                Ok(Err(AttemptError::BodyGone)) => break,
                Err(_) => return Err(Failure::Timeout),
            }
        }
        Err(failure)
    }

    /// One attempt on `target`: a connection (pooled or new), the request written, the
    /// answer's head read. A request that a pooled connection hands back unsent goes out on
    /// the next connection; one handed back by a new connection leaves its headers and body
    /// in `parts` and `body` for the next target.
    async fn attempt(
        &self,
        target: SocketAddr,
        parts: &mut Parts,
        body: &mut RequestBody,
        keep_headers: bool,
        upgrading: bool,
    ) -> Result<(Response<Incoming>, TargetConn), AttemptError> {
        let mut conn = self.upstream.connection(target).await.map_err(AttemptError::Connect)?;
        let attempt_body = body.take().ok_or(AttemptError::BodyGone)?;
        let mut request = upstream_request(parts, attempt_body, keep_headers);
        loop {
            if upgrading {
                conn.spawn_io();
            }
            let mut error = match conn.send(request).await {
                Ok(response) => return Ok((response, conn)),
                Err(error) => error,
            };
            match error.take_message() {
                Some(unsent) if conn.reused() => {
                    request = unsent;
                    conn = self.upstream.connection(target).await.map_err(AttemptError::Connect)?;
                }
                Some(unsent) => {
                    let (head, unsent_body) = unsent.into_parts();
                    parts.headers = head.headers;
                    body.put_back(unsent_body);
                    return Err(AttemptError::Unsent(error.into_error()));
                }
                None => return Err(AttemptError::Failed(error.into_error())),
            }
        }
    }

    /// Hands the target's answer to the client (see [`respond`]).
    fn respond(
        &self,
        response: Response<Incoming>,
        lease: Lease,
        conn: TargetConn,
        log: PendingLog,
        client_upgrade: Option<OnUpgrade>,
        service: &str,
    ) -> Response<ProxyBody> {
        let conn = (conn, Arc::clone(&self.upstream));
        respond(response, lease, conn, log, client_upgrade, service, || upgrade::TunnelLimits {
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
            _ => Ok(RequestBody::Once(Some(incoming(body)))),
        }
    }
}

/// Hands the target's answer to the client: its body streamed (the lease, the connection and
/// the access log line follow the body to its end), or, for a 101, the tunnel started.
fn respond(
    mut response: Response<Incoming>,
    lease: Lease,
    conn: (TargetConn, Arc<Upstream>),
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
    let (conn, upstream) = conn;
    Response::from_parts(head, TargetBody::new(body, lease, log, conn, upstream).boxed())
}

/// Writes the access log line of an answer the ingress gives itself.
fn own_answer(mut log: PendingLog, response: Response<ProxyBody>, error: Option<&'static str>) -> Response<ProxyBody> {
    log.status(response.status().as_u16());
    let bytes = response.body().size_hint().exact().unwrap_or(0);
    log.finish(bytes, error);
    response
}

/// The request to send to a target: same method, path, query and (rewritten) headers, over
/// HTTP/1.1, the URI in origin form. The headers are moved out of `parts` unless
/// `keep_headers` (then copied, for a later attempt).
fn upstream_request(parts: &mut Parts, body: ProxyBody, keep_headers: bool) -> Request<ProxyBody> {
    let uri = if parts.uri.scheme().is_none() && parts.uri.authority().is_none() {
        parts.uri.clone()
    } else {
        Uri::from(parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")))
    };
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = if keep_headers { parts.headers.clone() } else { std::mem::take(&mut parts.headers) };
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
