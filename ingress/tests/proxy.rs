//! The ingress end to end on loopback: real backends, a real ingress, real clients.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ingress::{AccessLog, Balancing, IngressConfig, Route, RouteTable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::*;

fn table(routes: Vec<Route>) -> RouteTable {
    RouteTable { routes }
}

#[tokio::test]
async fn requests_go_by_host_then_longest_path_prefix() {
    let api = named("api").await;
    let root = named("root").await;
    let quotes = named("quotes").await;
    let wild = named("wild").await;
    let harness = Harness::start(
        IngressConfig::default(),
        table(vec![
            Route::new("root", "/").with_targets([root.addr]),
            Route::new("api", "/api/v1").with_targets([api.addr]),
            Route::new("quotes", "/").with_host("quotes.example").with_targets([quotes.addr]),
            Route::new("wild", "/").with_host("*.example.com").with_targets([wild.addr]),
        ]),
    )
    .await;
    let client = client();
    let cases = [
        ("other.org", "/", "root /"),
        ("other.org", "/api/v1", "api /api/v1"),
        ("other.org", "/api/v1/quotes?x=1", "api /api/v1/quotes"),
        ("other.org", "/api/v10", "root /api/v10"),
        ("Quotes.Example:8080", "/api/v1", "quotes /api/v1"),
        ("a.example.com", "/x", "wild /x"),
    ];
    for (host, path, want) in cases {
        let got = get(&client, &harness, host, path).await;
        assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, want), "{host} {path}");
    }
}

#[tokio::test]
async fn no_rule_is_404_naming_host_and_path() {
    let api = named("api").await;
    let harness = Harness::start(
        IngressConfig::default(),
        table(vec![Route::new("api", "/api").with_host("quotes.example").with_targets([api.addr])]),
    )
    .await;
    let got = get(&client(), &harness, "nobody.example", "/api/x").await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert!(got.body.contains("nobody.example") && got.body.contains("/api/x"), "{}", got.body);
}

#[tokio::test]
async fn no_healthy_target_is_503_with_retry_after() {
    let harness = Harness::start(IngressConfig::default(), table(vec![Route::new("quotes", "/")])).await;
    let got = get(&client(), &harness, "x", "/").await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(got.headers["retry-after"], "1");
    assert!(got.body.contains("quotes"), "{}", got.body);
}

/// A backend that reads a request, then closes without answering (or, with `partial`, after
/// a response head promising more body than it sends).
async fn broken_backend(partial: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..100 {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            let _ = stream.read(&mut buf).await;
            if partial {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b").await;
            }
            drop(stream);
        }
    });
    addr
}

#[tokio::test]
async fn target_closing_before_its_answer_is_502() {
    let addr = broken_backend(false).await;
    let harness = Harness::start(IngressConfig::default(), table(vec![Route::new("broken", "/").with_targets([addr])])).await;
    let client = client();
    for method in ["POST", "GET"] {
        let got = send(&client, &harness, method, "x", "/", &[]).await;
        assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{method}");
        assert!(got.body.contains("broken"), "{}", got.body);
    }
}

#[tokio::test]
async fn sequential_requests_share_one_kept_alive_target_connection() {
    let a = named("a").await;
    let harness = Harness::start(IngressConfig::default(), table(vec![Route::new("a", "/").with_targets([a.addr])])).await;
    let client = client();
    for _ in 0..20 {
        let got = get(&client, &harness, "x", "/").await;
        assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "a /"));
    }
    assert_eq!(a.hits(), 20);
    assert_eq!(a.accepted(), 1, "one keep-alive connection serves them all");
}

/// A target that answers one request per connection, then closes it a moment later without
/// saying so (as a server closing an idle keep-alive connection does).
async fn closing_backend() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                if matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn a_pooled_connection_the_target_closed_costs_no_request() {
    let (addr, hits) = closing_backend().await;
    let harness = Harness::start(IngressConfig::default(), table(vec![Route::new("closing", "/").with_targets([addr])])).await;
    let client = client();
    for _ in 0..5 {
        // POST: not idempotent, so only a request handed back unsent may go out again.
        let got = send(&client, &harness, "POST", "x", "/", &[]).await;
        assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "ok"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 5);
}

#[tokio::test]
async fn target_failing_mid_body_cuts_the_response() {
    let addr = broken_backend(true).await;
    let harness = Harness::start(IngressConfig::default(), table(vec![Route::new("broken", "/").with_targets([addr])])).await;
    let request = Request::get(harness.url("/")).body(Full::new(Bytes::new())).unwrap();
    let response = tokio::time::timeout(PATIENCE, client().request(request)).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the head was already forwarded");
    let body = tokio::time::timeout(PATIENCE, response.into_body().collect()).await.unwrap();
    assert!(body.is_err(), "a truncated body must not look complete");
}

#[tokio::test]
async fn slower_than_the_route_timeout_is_504() {
    let slow = backend(|_req: Request<Incoming>| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        text(StatusCode::OK, "late")
    })
    .await;
    let harness = Harness::start(
        IngressConfig::default(),
        table(vec![Route::new("slow", "/").with_targets([slow.addr]).with_timeout(Duration::from_millis(300))]),
    )
    .await;
    let started = Instant::now();
    let got = get(&client(), &harness, "x", "/").await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn refused_targets_are_retried_and_no_request_fails() {
    let live = named("live").await;
    let dead = refusing_addr().await;
    let harness = Harness::start(
        IngressConfig { balancing: Balancing::RoundRobin, ..IngressConfig::default() },
        table(vec![Route::new("svc", "/").with_targets([dead, live.addr])]),
    )
    .await;
    let client = client();
    for i in 0..20 {
        let method = if i % 2 == 0 { "GET" } else { "POST" };
        let got = send(&client, &harness, method, "x", "/", &[]).await;
        assert_eq!(got.status, StatusCode::OK, "request {i} ({method}): {}", got.body);
    }
    assert_eq!(live.hits(), 20);
}

#[tokio::test]
async fn least_outstanding_spreads_concurrent_requests() {
    let slow = |name: &'static str| {
        backend(move |_req: Request<Incoming>| async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            text(StatusCode::OK, name)
        })
    };
    let a = slow("a").await;
    let b = slow("b").await;
    let harness = Harness::start(IngressConfig::default(), table(vec![Route::new("svc", "/").with_targets([a.addr, b.addr])])).await;
    let harness = Arc::new(harness);
    let client = client();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (client, harness) = (client.clone(), Arc::clone(&harness));
        requests.spawn(async move { get(&client, &harness, "x", "/").await.status });
    }
    // While they are in flight, the ingress counts them per target.
    let mut in_flight = 0;
    for _ in 0..40 {
        in_flight = harness.ingress.in_flight(a.addr) + harness.ingress.in_flight(b.addr);
        if in_flight == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(in_flight, 10);
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    assert_eq!((a.hits(), b.hits()), (5, 5));
    assert_eq!(harness.ingress.in_flight(a.addr), 0);
}

#[tokio::test]
async fn forwarded_headers_tell_the_target_who_asked() {
    let echo = echo_headers().await;
    let harness = Harness::start(IngressConfig::default(), table(vec![Route::new("echo", "/").with_targets([echo.addr])])).await;
    let got =
        send(&client(), &harness, "GET", "quotes.example:1234", "/", &[("x-forwarded-for", "203.0.113.7"), ("x-forwarded-proto", "https")])
            .await;
    let lines: Vec<&str> = got.body.lines().collect();
    let port = harness.addr.port().to_string();
    for want in [
        "x-forwarded-for: 203.0.113.7, 127.0.0.1",
        "x-forwarded-proto: http",
        "x-forwarded-host: quotes.example:1234",
        &format!("x-forwarded-port: {port}"),
        "host: quotes.example:1234",
    ] {
        assert!(lines.contains(&want), "{want:?} not in {lines:?}");
    }
}

/// A backend that switches to any protocol asked and echoes bytes.
async fn upgrade_echo() -> Backend {
    backend(|mut req: Request<Incoming>| async move {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else {
                return;
            };
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 64];
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        let mut response = text(StatusCode::SWITCHING_PROTOCOLS, "");
        response.headers_mut().insert("connection", "upgrade".parse().unwrap());
        response.headers_mut().insert("upgrade", "echo".parse().unwrap());
        response
    })
    .await
}

/// Opens an upgraded connection through the ingress.
async fn upgrade_through(harness: &Harness) -> TokioIo<hyper::upgrade::Upgraded> {
    let stream = TcpStream::connect(harness.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn.with_upgrades());
    let request = Request::get("/ws")
        .header("host", "x")
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, sender.send_request(request)).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()["upgrade"], "echo");
    TokioIo::new(tokio::time::timeout(PATIENCE, hyper::upgrade::on(response)).await.unwrap().unwrap())
}

#[tokio::test]
async fn idle_upgraded_connections_are_closed() {
    let echo = upgrade_echo().await;
    let harness = Harness::start(
        IngressConfig { idle_timeout: Duration::from_millis(300), ..IngressConfig::default() },
        table(vec![Route::new("echo", "/").with_targets([echo.addr])]),
    )
    .await;
    let mut io = upgrade_through(&harness).await;
    io.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(PATIENCE, io.read_exact(&mut buf)).await.unwrap().unwrap();
    let started = Instant::now();
    let n = tokio::time::timeout(PATIENCE, io.read(&mut buf)).await.expect("the idle tunnel stayed open").unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
    for _ in 0..100 {
        if harness.ingress.in_flight(echo.addr) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(harness.ingress.in_flight(echo.addr), 0, "the closed tunnel still counts");
}

#[tokio::test]
async fn upgrade_requests_are_tunnelled_both_ways() {
    let echo = upgrade_echo().await;
    let harness = Harness::start(IngressConfig::default(), table(vec![Route::new("echo", "/").with_targets([echo.addr])])).await;
    let mut io = upgrade_through(&harness).await;
    for message in [&b"ping"[..], b"and pong"] {
        io.write_all(message).await.unwrap();
        let mut buf = vec![0u8; message.len()];
        tokio::time::timeout(PATIENCE, io.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(buf, message);
    }
    assert_eq!(harness.ingress.in_flight(echo.addr), 1, "an open tunnel counts as in flight");
}

#[tokio::test]
async fn http2_clients_are_served() {
    let api = named("api").await;
    let harness =
        Harness::start(IngressConfig::default(), table(vec![Route::new("api", "/").with_host("app.example").with_targets([api.addr])]))
            .await;
    let stream = TcpStream::connect(harness.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    for i in 0..3 {
        let request = Request::get("http://app.example/hello").body(Empty::<Bytes>::new()).unwrap();
        let response = tokio::time::timeout(PATIENCE, sender.send_request(request)).await.unwrap().unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), StatusCode::OK, "request {i}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"api /hello");
    }
}

#[tokio::test]
async fn oversized_headers_are_refused_not_stuck() {
    let api = named("api").await;
    let harness = Harness::start(
        IngressConfig { max_header_bytes: 16 * 1024, ..IngressConfig::default() },
        table(vec![Route::new("api", "/").with_targets([api.addr])]),
    )
    .await;
    let mut stream = TcpStream::connect(harness.addr).await.unwrap();
    let big = "a".repeat(64 * 1024);
    let request = format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
    // The ingress may answer and close before reading it all: a write error is fine.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await.expect("the ingress neither answered nor closed");
    let answer = String::from_utf8_lossy(&answer);
    // 431 when the answer wins the race with the reset of the unread bytes; else closed.
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(api.hits(), 0);
}

#[tokio::test]
async fn idle_client_connections_are_closed() {
    let harness =
        Harness::start(IngressConfig { idle_timeout: Duration::from_millis(300), ..IngressConfig::default() }, RouteTable::default()).await;
    let mut stream = TcpStream::connect(harness.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await.expect("still open").unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
}

#[tokio::test]
async fn route_changes_apply_to_open_keep_alive_connections() {
    let a = named("a").await;
    let b = named("b").await;
    let harness = Harness::start(IngressConfig::default(), table(vec![Route::new("svc", "/").with_targets([a.addr])])).await;
    let stream = TcpStream::connect(harness.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut ask = async || {
        let request = Request::get("/").header("host", "x").body(Empty::<Bytes>::new()).unwrap();
        let response = tokio::time::timeout(PATIENCE, sender.send_request(request)).await.unwrap().unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    };
    assert_eq!(ask().await, "a /");
    harness.routes.send(table(vec![Route::new("svc", "/").with_targets([b.addr])])).unwrap();
    let mut switched = false;
    for _ in 0..100 {
        if ask().await == "b /" {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(switched, "the new table never applied");
    assert!(!conn.is_finished(), "the client connection was dropped");
}

#[tokio::test]
async fn every_request_writes_one_access_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let api = named("api").await;
    let harness = Harness::start(
        IngressConfig { access_log: Some(AccessLog::to_file(&path).unwrap()), ..IngressConfig::default() },
        table(vec![Route::new("api", "/api").with_targets([api.addr])]),
    )
    .await;
    let client = client();
    assert_eq!(get(&client, &harness, "h.example", "/api/x").await.status, StatusCode::OK);
    assert_eq!(get(&client, &harness, "h.example", "/nope").await.status, StatusCode::NOT_FOUND);
    let mut lines = Vec::new();
    for _ in 0..200 {
        lines = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect();
        if lines.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    let ok = &lines[0];
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["service"], "api");
    assert_eq!(ok["target"], api.addr.to_string());
    assert_eq!(ok["host"], "h.example");
    assert_eq!(ok["path"], "/api/x");
    assert_eq!(ok["bytes"], "api /api/x".len());
    assert!(ok["duration_ms"].as_f64().unwrap() >= ok["target_ms"].as_f64().unwrap());
    assert_eq!(lines[1]["status"], 404);
    assert_eq!(lines[1]["service"], serde_json::Value::Null);
}

#[tokio::test]
async fn clients_slow_to_send_headers_are_closed() {
    let harness = Harness::start(
        IngressConfig { header_read_timeout: Duration::from_millis(300), ..IngressConfig::default() },
        RouteTable::default(),
    )
    .await;
    let mut stream = TcpStream::connect(harness.addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await.expect("a slow client kept its connection");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() {
    let slow = backend(|_req: Request<Incoming>| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        text(StatusCode::OK, "done")
    })
    .await;
    let mut harness = Harness::start(IngressConfig::default(), table(vec![Route::new("slow", "/").with_targets([slow.addr])])).await;
    let url = harness.url("/");
    let in_flight = tokio::spawn(async move {
        let request = Request::get(url).header("host", "x").body(Full::new(Bytes::new())).unwrap();
        let response = client().request(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    });
    for _ in 0..100 {
        if harness.ingress.in_flight(slow.addr) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    harness.stop();
    let (status, body) = tokio::time::timeout(PATIENCE, in_flight).await.unwrap().unwrap();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"done"[..]));
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(harness.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener is still open after shutdown");
}

#[tokio::test]
async fn a_target_leaving_the_table_drains_its_requests_in_flight() {
    let slow = |name: &'static str| {
        backend(move |_req: Request<Incoming>| async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            text(StatusCode::OK, name)
        })
    };
    let old = slow("old").await;
    let new = slow("new").await;
    let harness = Arc::new(Harness::start(IngressConfig::default(), table(vec![Route::new("svc", "/").with_targets([old.addr])])).await);
    let first = {
        let harness = Arc::clone(&harness);
        tokio::spawn(async move { get(&client(), &harness, "x", "/").await.body })
    };
    for _ in 0..100 {
        if harness.ingress.in_flight(old.addr) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(harness.ingress.in_flight(old.addr), 1);
    harness.routes.send(table(vec![Route::new("svc", "/").with_targets([new.addr])])).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = get(&client(), &harness, "x", "/").await;
    assert_eq!(second.body, "new");
    assert_eq!(first.await.unwrap(), "old", "the request in flight finished on the old target");
    assert_eq!(harness.ingress.in_flight(old.addr), 0, "drained");
    assert_eq!(old.hits(), 1);
}

#[tokio::test]
async fn a_refused_target_is_left_out_for_its_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let live = named("live").await;
    let dead = refusing_addr().await;
    let harness = Harness::start(
        IngressConfig {
            balancing: Balancing::RoundRobin,
            backoff_base: Duration::from_secs(30),
            access_log: Some(AccessLog::to_file(&path).unwrap()),
            ..IngressConfig::default()
        },
        table(vec![Route::new("svc", "/").with_targets([dead, live.addr])]),
    )
    .await;
    let client = client();
    for _ in 0..6 {
        assert_eq!(get(&client, &harness, "x", "/").await.status, StatusCode::OK);
    }
    let mut attempts = Vec::new();
    for _ in 0..200 {
        attempts = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["attempts"].as_u64().unwrap())
            .collect();
        if attempts.len() == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Round robin starts at the dead target: one retry, then it is skipped.
    assert_eq!(attempts, [2, 1, 1, 1, 1, 1]);
}

#[tokio::test]
async fn worker_threads_serve_and_stop() {
    let a = named("a").await;
    let b = named("b").await;
    let mut harness = Harness::start(
        IngressConfig { threads: Some(2), ..IngressConfig::default() },
        table(vec![Route::new("svc", "/").with_targets([a.addr, b.addr])]),
    )
    .await;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let url = harness.url("/x");
        clients.spawn(async move {
            // One connection per client, so both workers get some.
            let client = client();
            let mut statuses = Vec::new();
            for _ in 0..5 {
                let request = Request::get(&url).header("host", "x").body(Full::new(Bytes::new())).unwrap();
                let response = tokio::time::timeout(PATIENCE, client.request(request)).await.unwrap().unwrap();
                statuses.push(response.status());
            }
            statuses
        });
    }
    while let Some(statuses) = clients.join_next().await {
        assert!(statuses.unwrap().iter().all(|s| *s == StatusCode::OK));
    }
    assert_eq!(a.hits() + b.hits(), 40);
    assert!(a.hits() > 0 && b.hits() > 0, "{} {}", a.hits(), b.hits());
    harness.routes.send(table(vec![Route::new("svc", "/").with_targets([b.addr])])).unwrap();
    let mut switched = false;
    for _ in 0..100 {
        let before = b.hits();
        let got = get(&client(), &harness, "x", "/").await;
        if got.body == "b /" && b.hits() == before + 1 {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(switched, "the workers never saw the new table");
    harness.stop();
    let mut refused = false;
    for _ in 0..200 {
        if TcpStream::connect(harness.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the workers still accept after shutdown");
}

#[tokio::test]
async fn request_bodies_reach_the_target_small_large_or_chunked() {
    let echo = backend(|req: Request<Incoming>| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let mut response = Response::new(Full::new(body));
        response.headers_mut().insert("x-echo", "1".parse().unwrap());
        response
    })
    .await;
    let harness = Harness::start(IngressConfig::default(), table(vec![Route::new("echo", "/").with_targets([echo.addr])])).await;
    let client = client();
    // Within the retry limit (kept whole), then above it (streamed).
    for size in [1024usize, 300 * 1024] {
        let sent: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let request = Request::post(harness.url("/upload")).header("host", "x").body(Full::new(Bytes::from(sent.clone()))).unwrap();
        let response = tokio::time::timeout(PATIENCE, client.request(request)).await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let got = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), size);
        assert!(got[..] == sent[..], "the body changed on the way ({size} bytes)");
    }
    // Chunked, from a client that streams it.
    let stream = TcpStream::connect(harness.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let body = Chunks((0..50).map(|i| Bytes::from(format!("chunk {i};"))).collect());
    let request = Request::post("/chunked").header("host", "x").body(body).unwrap();
    let response = tokio::time::timeout(PATIENCE, sender.send_request(request)).await.unwrap().unwrap();
    let got = response.into_body().collect().await.unwrap().to_bytes();
    let want: String = (0..50).map(|i| format!("chunk {i};")).collect();
    assert_eq!(String::from_utf8_lossy(&got), want);
    // HEAD: the head only.
    let got = send(&client, &harness, "HEAD", "x", "/", &[]).await;
    assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, ""));
    assert_eq!(got.headers["x-echo"], "1");
}

/// A body of these chunks with no length known in advance: sent chunked.
struct Chunks(std::collections::VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|chunk| Ok(http_body::Frame::data(chunk))))
    }
}

#[tokio::test]
async fn shutdown_closes_open_tunnels_after_the_grace_period() {
    let echo = upgrade_echo().await;
    let mut harness = Harness::start(
        IngressConfig { shutdown_grace: Duration::from_millis(300), ..IngressConfig::default() },
        table(vec![Route::new("echo", "/").with_targets([echo.addr])]),
    )
    .await;
    let mut io = upgrade_through(&harness).await;
    let started = Instant::now();
    harness.stop();
    io.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    tokio::time::timeout(PATIENCE, io.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"still here", "the tunnel works during the grace period");
    let n = tokio::time::timeout(PATIENCE, io.read(&mut buf)).await.expect("the tunnel outlived the ingress").unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
}

#[tokio::test]
async fn malformed_requests_get_400_or_a_closed_connection() {
    let api = named("api").await;
    let harness = Harness::start(IngressConfig::default(), table(vec![Route::new("api", "/").with_targets([api.addr])])).await;
    let garbage: [&[u8]; 3] = [
        b"HELLO THERE\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\ncontent-length: nope\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header line\r\n\r\n",
    ];
    for request in garbage {
        let mut stream = TcpStream::connect(harness.addr).await.unwrap();
        let _ = stream.write_all(request).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await.expect("the ingress neither answered nor closed");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{request:?}: {answer}");
    }
    assert_eq!(api.hits(), 0);
    // The ingress still serves.
    assert_eq!(get(&client(), &harness, "x", "/").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_through_a_rolling_replace_a_kill_and_a_scale_in() {
    let delay = Duration::from_millis(5);
    let mut backends = Vec::new();
    for name in ["a", "b", "c", "d"] {
        backends.push(killable(name, delay).await);
    }
    let addr = |i: usize| backends[i].0.addr;
    let targets = |ids: &[usize]| table(vec![Route::new("svc", "/").with_targets(ids.iter().map(|&i| addr(i)))]);
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("access.log");
    let config = IngressConfig { access_log: Some(AccessLog::to_file(&log_path).unwrap()), ..IngressConfig::default() };
    let harness = Arc::new(Harness::start(config, targets(&[0, 1, 2])).await);

    // 4 clients, each a request every 20 ms for 3 s: 200 requests/s, 600 in all.
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let harness = Arc::clone(&harness);
        load.spawn(async move {
            let client = client();
            let mut failures = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for _ in 0..150 {
                tick.tick().await;
                let got = get(&client, &harness, "x", "/").await;
                if got.status != StatusCode::OK {
                    failures.push(format!("{} {}", got.status, got.body));
                }
            }
            failures
        });
    }
    let drain = Duration::from_millis(200);
    let at = |ms: u64| tokio::time::sleep(Duration::from_millis(ms));
    at(500).await;
    // A rolling replace: d starts, a leaves the table, a stops after its drain.
    harness.routes.send(targets(&[0, 1, 2, 3])).unwrap();
    harness.routes.send(targets(&[1, 2, 3])).unwrap();
    at(drain.as_millis() as u64).await;
    backends[0].1.abort();
    at(500).await;
    // c dies while still routed; the servers notice 300 ms later.
    backends[2].1.abort();
    at(300).await;
    harness.routes.send(targets(&[1, 3])).unwrap();
    at(500).await;
    // A scale-in to one target: b leaves, and stops after its drain.
    harness.routes.send(targets(&[3])).unwrap();
    at(drain.as_millis() as u64).await;
    backends[1].1.abort();

    let mut failures = Vec::new();
    while let Some(result) = load.join_next().await {
        failures.extend(result.unwrap());
    }
    assert!(failures.is_empty(), "{} failed: {failures:?}", failures.len());
    let served: usize = backends.iter().map(|(b, _)| b.hits()).sum();
    assert!(served >= 600, "{served}");
    assert!(backends[3].0.hits() > 0);
    // The kill was felt: some requests needed a second target.
    let mut retried = 0;
    for _ in 0..200 {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.lines().count() >= 600 {
            retried = text
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter(|v| v["attempts"].as_u64() > Some(1))
                .count();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(retried > 0, "no request met the killed target");
}
