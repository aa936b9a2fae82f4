//! A small HTTP/1.1 proxy in front of a test registry, to make the registry misbehave or
//! demand more than it does itself:
//!
//! - it counts requests per path (to prove a blob is downloaded once);
//! - [`ProxyMode::CutFirstBlob`] cuts the first response for a blob over 64 KiB after half its
//!   body (to prove a download resumes with `Range`);
//! - [`ProxyMode::Bearer`] puts a bearer-token flow in front: requests without the token get
//!   `401` with `WWW-Authenticate: Bearer realm=...,service=...,scope=...`, and the proxy's own
//!   `/token` endpoint hands out the token for the right basic credentials, like Docker Hub's
//!   auth server.
//!
//! - [`ProxyMode::FailFirst`] answers the first requests with 503 (to prove retries).
//! - [`ProxyMode::OversizedManifest`] answers manifest requests with a huge manifest (which a
//!   real registry refuses to store), with or without `Content-Length` (to prove a client caps
//!   what it reads, and stops reading there).
//!
//! One thread per connection, one request per connection (`Connection: close`). Stopped on drop.
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use base64::Engine as _;

/// What the proxy does besides forwarding.
#[derive(Debug, Clone)]
pub enum ProxyMode {
    Forward,
    CutFirstBlob,
    Bearer {
        user: String,
        password: String,
        token: String,
    },
    /// Answers the first `n` requests with `503 Service Unavailable`.
    FailFirst(usize),
    /// Answers every manifest `GET` with a JSON manifest of `size` bytes; without
    /// `Content-Length` when `announce_length` is false (the body ends when the connection does).
    OversizedManifest {
        size: usize,
        announce_length: bool,
    },
}

#[derive(Default)]
struct Shared {
    /// Requests seen, by method and path (without query).
    requests: Mutex<HashMap<String, usize>>,
    /// Query strings of token requests.
    token_queries: Mutex<Vec<String>>,
    /// `Range` headers of blob requests.
    ranges: Mutex<Vec<String>>,
    cut_done: AtomicBool,
    /// Requests answered 503 so far (FailFirst).
    failed: Mutex<usize>,
    /// Bytes of oversized manifest bodies the client took in (OversizedManifest).
    manifest_bytes_sent: Mutex<u64>,
    stop: AtomicBool,
}

/// A running proxy.
pub struct RegistryProxy {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl RegistryProxy {
    /// Starts a proxy on a free 127.0.0.1 port in front of `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: &str, mode: ProxyMode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let (s, up) = (shared.clone(), upstream.to_string());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (s, up, mode) = (s.clone(), up.clone(), mode.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, &up, &mode, port, &s);
                });
            }
        });
        Self { port, shared, accept: Some(accept) }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many `GET` requests for paths containing `needle` were seen.
    pub fn count(&self, needle: &str) -> usize {
        self.shared.requests.lock().unwrap().iter().filter(|(k, _)| k.contains(needle)).map(|(_, v)| v).sum()
    }

    pub fn token_queries(&self) -> Vec<String> {
        self.shared.token_queries.lock().unwrap().clone()
    }

    pub fn ranges(&self) -> Vec<String> {
        self.shared.ranges.lock().unwrap().clone()
    }

    /// Bytes of the oversized manifest the client read before it hung up.
    pub fn manifest_bytes_sent(&self) -> u64 {
        *self.shared.manifest_bytes_sent.lock().unwrap()
    }

    pub fn cut_happened(&self) -> bool {
        self.shared.cut_done.load(Ordering::SeqCst)
    }
}

impl Drop for RegistryProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake the accept loop
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn respond(mut conn: TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}

fn handle(conn: TcpStream, upstream: &str, mode: &ProxyMode, port: u16, shared: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("/").to_string());
    let (path, query) = target.split_once('?').map_or((target.clone(), String::new()), |(p, q)| (p.to_string(), q.to_string()));
    let header = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    *shared.requests.lock().unwrap().entry(format!("{method} {path}")).or_default() += 1;
    if path.contains("/blobs/")
        && let Some(r) = header("Range")
    {
        shared.ranges.lock().unwrap().push(r);
    }

    if let ProxyMode::FailFirst(n) = mode {
        let mut failed = shared.failed.lock().unwrap();
        if *failed < *n {
            *failed += 1;
            drop(failed);
            return respond(conn, "503 Service Unavailable", &[], b"try again");
        }
    }

    if let ProxyMode::OversizedManifest { size, announce_length } = mode
        && method == "GET"
        && path.contains("/manifests/")
    {
        let mut head = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n".to_string();
        if *announce_length {
            head.push_str(&format!("Content-Length: {size}\r\n"));
        }
        head.push_str("\r\n");
        let mut conn = conn;
        conn.write_all(head.as_bytes())?;
        // `{"schemaVersion":2,"annotations":{"p":"xxxx...."}}`, sent in 64 KiB pieces.
        let (open, close) = (br#"{"schemaVersion":2,"annotations":{"p":""#.as_slice(), br#""}}"#.as_slice());
        conn.write_all(open)?;
        let mut left = size.saturating_sub(open.len() + close.len());
        let piece = vec![b'x'; 64 << 10];
        while left > 0 {
            let n = left.min(piece.len());
            conn.write_all(&piece[..n])?;
            *shared.manifest_bytes_sent.lock().unwrap() += n as u64;
            left -= n;
        }
        conn.write_all(close)?;
        conn.flush()?;
        let _ = conn.shutdown(Shutdown::Write);
        return Ok(());
    }

    if let ProxyMode::Bearer { user, password, token } = mode {
        if path == "/token" {
            shared.token_queries.lock().unwrap().push(query.clone());
            let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
            return if header("Authorization").as_deref() == Some(expected.as_str()) {
                let body = format!(r#"{{"token":"{token}","expires_in":300}}"#);
                respond(conn, "200 OK", &[("Content-Type", "application/json".into())], body.as_bytes())
            } else {
                respond(conn, "401 Unauthorized", &[], br#"{"details":"wrong or missing credentials"}"#)
            };
        }
        if header("Authorization").as_deref() != Some(format!("Bearer {token}").as_str()) {
            let repo =
                path.strip_prefix("/v2/").and_then(|p| p.rfind("/manifests/").or_else(|| p.rfind("/blobs/")).map(|i| p[..i].to_string()));
            let mut challenge = format!(r#"Bearer realm="http://127.0.0.1:{port}/token",service="sched-test""#);
            if let Some(repo) = repo {
                challenge.push_str(&format!(r#",scope="repository:{repo}:pull""#));
            }
            return respond(
                conn,
                "401 Unauthorized",
                &[("WWW-Authenticate", challenge), ("Content-Type", "application/json".into())],
                br#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
            );
        }
    }

    // Forward the request.
    let mut up = TcpStream::connect(upstream)?;
    let mut out = format!("{method} {target} HTTP/1.1\r\n");
    for (k, v) in &headers {
        let drop =
            k.eq_ignore_ascii_case("connection") || (matches!(mode, ProxyMode::Bearer { .. }) && k.eq_ignore_ascii_case("authorization"));
        if !drop {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes())?;
    let mut up_reader = BufReader::new(up);
    let mut head = String::new();
    let mut status_line = String::new();
    up_reader.read_line(&mut status_line)?;
    head.push_str(&status_line);
    let mut content_length: Option<u64> = None;
    loop {
        let mut line = String::new();
        if up_reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("connection") {
                continue;
            }
            if k.eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().ok();
            }
        }
        head.push_str(&line);
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut conn = conn;
    conn.write_all(head.as_bytes())?;
    // Only big blobs (layers, not configs) are cut, half-way through their body.
    let is_full_blob =
        method == "GET" && path.contains("/blobs/") && status_line.contains(" 200 ") && content_length.is_some_and(|n| n > 64 << 10);
    if matches!(mode, ProxyMode::CutFirstBlob) && is_full_blob && !shared.cut_done.swap(true, Ordering::SeqCst) {
        let half = content_length.unwrap_or(0) / 2;
        std::io::copy(&mut (&mut up_reader).take(half), &mut conn)?;
        conn.flush()?;
        // Let the client take in what was sent, then end the connection early (FIN).
        std::thread::sleep(std::time::Duration::from_millis(200));
        let _ = conn.shutdown(Shutdown::Write);
        return Ok(());
    }
    std::io::copy(&mut up_reader, &mut conn)?;
    conn.flush()?;
    let _ = conn.shutdown(Shutdown::Write);
    Ok(())
}
