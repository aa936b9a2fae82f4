//! The registry client: the OCI distribution API over reqwest + rustls. Manifests (by tag or
//! digest, with the Accept header for OCI and Docker schema2 manifests and indexes) and blobs
//! (streamed, resumed with `Range` when a connection drops). Every request goes through
//! [`RegistryClient::send`], which adds authentication (anonymous, basic, or a bearer token
//! fetched from the realm of a `WWW-Authenticate` challenge) and retries with exponential
//! backoff. Plain HTTP is used only for insecure registries (loopback always, like docker).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, HeaderValue, RANGE, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::auth::{Challenge, CredentialStore, TokenResponse};
use crate::digest::Digest;
use crate::error::RegistryError;
use crate::manifest::MANIFEST_ACCEPT;
use crate::reference::Reference;

/// Manifests (and indexes) larger than this are refused: distribution and containerd use the
/// same 4 MiB limit, so no registry serves a larger one that those clients would pull.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Image configs larger than this are refused, whatever size the manifest claims. A config
/// holds the process defaults, one diff id and one history entry per layer: real ones are a
/// few KiB, and twice the manifest limit leaves room for images with hundreds of layers.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;
/// Bearer-token answers larger than this are refused (real ones are a few KiB of JSON).
pub const MAX_TOKEN_BYTES: usize = 1 << 20;
/// Of an error answer's body, at most this much is read (and 400 characters of it shown).
const MAX_ERROR_BODY_BYTES: usize = 64 << 10;

/// How the client reaches registries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Registries (host[:port]) reached over plain HTTP. Loopback hosts always are.
    pub insecure_registries: Vec<String>,
    /// Credentials per registry; registries without an entry are accessed anonymously.
    pub credentials: CredentialStore,
    /// Attempts per request (and per blob download, counting resumes) before giving up.
    pub max_attempts: u32,
    /// The first backoff delay; it doubles after every failed attempt.
    pub initial_backoff: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            credentials: CredentialStore::default(),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
        }
    }
}

/// A manifest as fetched: its bytes (whose digest was checked), media type and digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub body: Vec<u8>,
    pub media_type: Option<String>,
    pub digest: Digest,
}

/// A client for OCI distribution registries; cheap to clone, shares connections and tokens.
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    options: Arc<ClientOptions>,
    /// `Authorization` values that worked, per `registry/repository`, reused by later requests.
    authorizations: Arc<Mutex<HashMap<String, String>>>,
}

impl RegistryClient {
    pub fn new(options: ClientOptions) -> Result<Self, RegistryError> {
        // reqwest is built without a bundled crypto provider (ring instead of aws-lc-sys);
        // installing fails harmlessly when another part of the process already did it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("sched/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| RegistryError::Transport { url: String::new(), attempts: 0, reason: e.to_string() })?;
        Ok(Self { http, options: Arc::new(options), authorizations: Arc::default() })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Whether `registry` is spoken to over plain HTTP.
    pub fn is_insecure(&self, registry: &str) -> bool {
        let host = host_without_port(registry);
        host == "localhost"
            || host == "::1"
            || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
            || self.options.insecure_registries.iter().any(|r| r == registry || r == host)
    }

    fn base_url(&self, reference: &Reference) -> String {
        let scheme = if self.is_insecure(reference.registry()) { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}", reference.api_host(), reference.repository())
    }

    /// Fetches the manifest `reference` names (its digest if it has one, else its tag) and
    /// verifies its digest.
    pub async fn get_manifest(&self, reference: &Reference) -> Result<FetchedManifest, RegistryError> {
        let url = format!("{}/manifests/{}", self.base_url(reference), reference.manifest_ref());
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let resp = self.send(reference, &url, headers).await?;
        let resp = expect_status(reference, &url, resp, &[StatusCode::OK]).await?;
        let media_type = header_str(resp.headers(), CONTENT_TYPE);
        let announced = header_str(resp.headers(), "docker-content-digest");
        let body = read_capped(resp, MAX_MANIFEST_BYTES, "manifest", &url).await?;
        let digest = Digest::of(&body);
        let expected = match (reference.digest(), announced) {
            (Some(d), _) => Some(d.clone()),
            (None, Some(h)) => Some(Digest::parse(&h).map_err(|_| invalid_manifest(&url, "bad Docker-Content-Digest header"))?),
            (None, None) => None,
        };
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(RegistryError::DigestMismatch {
                what: format!("manifest {reference}"),
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
        Ok(FetchedManifest { body, media_type, digest })
    }

    /// The digest of the manifest `reference` names, as the registry serves it now: what a
    /// tag points at pinned. A multi-platform index resolves to the index's digest (it pins
    /// every platform). A reference that carries a digest resolves to it without a request.
    /// Asks with `HEAD` and the registry's `Docker-Content-Digest` header; registries that do
    /// not answer `HEAD` with that header get a `GET`, whose body is hashed.
    pub async fn resolve_digest(&self, reference: &Reference) -> Result<Digest, RegistryError> {
        if let Some(digest) = reference.digest() {
            return Ok(digest.clone());
        }
        let url = format!("{}/manifests/{}", self.base_url(reference), reference.manifest_ref());
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let resp = self.send_request(Method::HEAD, reference, &url, headers).await?;
        if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
            return Ok(self.get_manifest(reference).await?.digest);
        }
        let resp = expect_status_of(Method::HEAD, reference, &url, resp, &[StatusCode::OK]).await?;
        match header_str(resp.headers(), "docker-content-digest") {
            Some(h) => Digest::parse(h.trim()).map_err(|_| invalid_manifest(&url, "bad Docker-Content-Digest header")),
            None => Ok(self.get_manifest(reference).await?.digest),
        }
    }

    /// Fetches an image config into memory and verifies digest and size. A config the manifest
    /// says is larger than [`MAX_CONFIG_BYTES`] is refused before any request (and the
    /// download stops at the manifest's size, so no more than that is ever read).
    pub async fn get_config_bytes(&self, reference: &Reference, digest: &Digest, size: u64) -> Result<Vec<u8>, RegistryError> {
        if size > MAX_CONFIG_BYTES {
            return Err(RegistryError::TooLarge {
                what: format!("image config {digest} of {reference} ({size} bytes, as its manifest says)"),
                limit: human_size(MAX_CONFIG_BYTES),
            });
        }
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
        let collect = async {
            let mut out = Vec::with_capacity(size as usize);
            while let Some(chunk) = rx.recv().await {
                out.extend_from_slice(&chunk);
            }
            out
        };
        let (res, body) = tokio::join!(self.fetch_blob(reference, digest, size, tx, &|_| {}), collect);
        res?;
        digest.verify(&format!("blob {digest} of {reference}"), &body)?;
        Ok(body)
    }

    /// Streams blob `digest` of `size` bytes into `tx`, chunk by chunk, as it arrives. When the
    /// connection drops the download resumes with `Range` from the last byte received, so the
    /// receiver sees every byte exactly once. The caller verifies the digest. Returns early
    /// (Ok) if the receiver is dropped.
    pub async fn fetch_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        tx: mpsc::Sender<Bytes>,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<(), RegistryError> {
        let url = format!("{}/blobs/{digest}", self.base_url(reference));
        let what = format!("blob {digest}");
        let mut received: u64 = 0;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let mut headers = HeaderMap::new();
            if received > 0 {
                let range = HeaderValue::from_str(&format!("bytes={received}-")).expect("ascii");
                headers.insert(RANGE, range);
            }
            let resp = self.send(reference, &url, headers).await?;
            let mut skip = 0u64;
            let resp = if received == 0 {
                expect_status(reference, &url, resp, &[StatusCode::OK]).await?
            } else {
                let resp = expect_status(reference, &url, resp, &[StatusCode::OK, StatusCode::PARTIAL_CONTENT]).await?;
                if resp.status() == StatusCode::OK {
                    // The server ignored Range: drop what we already have.
                    skip = received;
                } else {
                    let cr = header_str(resp.headers(), CONTENT_RANGE).unwrap_or_default();
                    if !cr.starts_with(&format!("bytes {received}-")) {
                        return Err(RegistryError::Transport {
                            url,
                            attempts: attempt,
                            reason: format!("asked for bytes {received}- and got Content-Range {cr:?}"),
                        });
                    }
                }
                resp
            };
            let mut stream = resp.bytes_stream();
            let mut failure = None;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(mut chunk) => {
                        if skip > 0 {
                            let n = skip.min(chunk.len() as u64);
                            chunk = chunk.slice(n as usize..);
                            skip -= n;
                        }
                        if chunk.is_empty() {
                            continue;
                        }
                        received += chunk.len() as u64;
                        if received > size {
                            return Err(RegistryError::SizeMismatch { what, expected: size, actual: received });
                        }
                        on_bytes(chunk.len() as u64);
                        if tx.send(chunk).await.is_err() {
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        failure = Some(error_chain(&e));
                        break;
                    }
                }
            }
            if failure.is_none() && received == size {
                return Ok(());
            }
            let reason = failure.unwrap_or_else(|| format!("the connection closed after {received} of {size} bytes"));
            if attempt >= self.options.max_attempts {
                return Err(RegistryError::Transport { url, attempts: attempt, reason });
            }
            warn!(%url, received, size, %reason, "blob download interrupted; resuming with Range");
            tokio::time::sleep(self.backoff(attempt)).await;
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.options.initial_backoff * 2u32.saturating_pow(attempt.saturating_sub(1).min(6))
    }

    /// Sends a GET with authentication and retries: connection errors, 429 and 5xx are retried
    /// with backoff; a 401 triggers one authentication round (basic or bearer token).
    pub async fn send(&self, reference: &Reference, url: &str, headers: HeaderMap) -> Result<Response, RegistryError> {
        self.send_request(Method::GET, reference, url, headers).await
    }

    /// [`RegistryClient::send`] with another method (`HEAD` for digest resolution).
    pub async fn send_request(
        &self,
        method: Method,
        reference: &Reference,
        url: &str,
        headers: HeaderMap,
    ) -> Result<Response, RegistryError> {
        let key = reference.name();
        let mut authenticated = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.http.request(method.clone(), url).headers(headers.clone());
            let auth = self.authorizations.lock().expect("poisoned").get(&key).cloned();
            if let Some(a) = &auth {
                req = req.header(AUTHORIZATION, a);
            }
            let retry_reason = match req.send().await {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    if authenticated {
                        return Err(self.unauthorized(reference, "the registry refused the credentials"));
                    }
                    let challenges: Vec<String> =
                        resp.headers().get_all(WWW_AUTHENTICATE).iter().filter_map(|v| v.to_str().ok().map(str::to_string)).collect();
                    self.authenticate(reference, &challenges).await?;
                    authenticated = true;
                    attempt -= 1;
                    continue;
                }
                Ok(resp) if resp.status() == StatusCode::TOO_MANY_REQUESTS || resp.status().is_server_error() => {
                    if attempt >= self.options.max_attempts {
                        return Ok(resp);
                    }
                    format!("HTTP {}", resp.status())
                }
                Ok(resp) => return Ok(resp),
                Err(e) => {
                    let reason = error_chain(&e);
                    if attempt >= self.options.max_attempts {
                        return Err(RegistryError::Transport { url: url.to_string(), attempts: attempt, reason });
                    }
                    reason
                }
            };
            let delay = self.backoff(attempt);
            debug!(%url, attempt, ?delay, reason = %retry_reason, "retrying");
            tokio::time::sleep(delay).await;
        }
    }

    fn unauthorized(&self, reference: &Reference, what: &str) -> RegistryError {
        let has_creds = self.options.credentials.get(reference.registry()).is_some();
        RegistryError::Unauthorized {
            registry: reference.registry().to_string(),
            scope: format!("repository:{}:pull", reference.repository()),
            reason: if has_creds {
                format!("{what}; check the user name and password for {}", reference.registry())
            } else {
                format!(
                    "{what}; no credentials were given for {} (use --creds USER:PASSWORD or docker's config.json)",
                    reference.registry()
                )
            },
        }
    }

    /// Answers a 401 challenge: stores the `Authorization` value to use for this repository.
    async fn authenticate(&self, reference: &Reference, challenges: &[String]) -> Result<(), RegistryError> {
        let creds = self.options.credentials.get(reference.registry()).cloned();
        let parsed: Vec<Challenge> = challenges.iter().filter_map(|c| Challenge::parse(c)).collect();
        let bearer = parsed.iter().find(|c| matches!(c, Challenge::Bearer { .. }));
        let value = match (bearer, parsed.first()) {
            (Some(Challenge::Bearer { realm, service, scope }), _) => {
                let scope = scope.clone().unwrap_or_else(|| format!("repository:{}:pull", reference.repository()));
                let token = self.fetch_token(reference, realm, service.as_deref(), &scope, creds.as_ref()).await?;
                format!("Bearer {token}")
            }
            (_, Some(Challenge::Basic { .. })) => match creds {
                Some(c) => c.basic_header(),
                None => return Err(self.unauthorized(reference, "the registry requires basic authentication")),
            },
            _ => {
                return Err(self.unauthorized(reference, &format!("the registry answered 401 with no usable challenge ({challenges:?})")));
            }
        };
        self.authorizations.lock().expect("poisoned").insert(reference.name(), value);
        Ok(())
    }

    /// The bearer-token request: `GET realm?service=..&scope=..`, with basic credentials when
    /// we have them (anonymous tokens otherwise).
    async fn fetch_token(
        &self,
        reference: &Reference,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: Option<&crate::auth::Credentials>,
    ) -> Result<String, RegistryError> {
        let mut url = reqwest::Url::parse(realm)
            .map_err(|e| self.unauthorized(reference, &format!("the token realm {realm:?} is not a URL ({e})")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        if url.scheme() == "http" && !url.host_str().is_some_and(|h| self.is_insecure(h)) {
            return Err(self.unauthorized(reference, &format!("refusing to send credentials to a plain-HTTP token realm {realm}")));
        }
        let mut last = String::new();
        for attempt in 1..=self.options.max_attempts {
            let mut req = self.http.get(url.clone());
            if let Some(c) = creds {
                req = req.header(AUTHORIZATION, c.basic_header());
            }
            match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    let body = read_capped(resp, MAX_TOKEN_BYTES, "the token server's answer", realm).await?;
                    let body: TokenResponse = serde_json::from_slice(&body)
                        .map_err(|e| self.unauthorized(reference, &format!("the token server's answer is not token JSON ({e})")))?;
                    return body.into_token().ok_or_else(|| self.unauthorized(reference, "the token server's answer holds no token"));
                }
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED || resp.status() == StatusCode::FORBIDDEN => {
                    return Err(self.unauthorized(reference, &format!("the token server {realm} answered {}", resp.status())));
                }
                Ok(resp) => last = format!("HTTP {}", resp.status()),
                Err(e) => last = error_chain(&e),
            }
            if attempt < self.options.max_attempts {
                tokio::time::sleep(self.backoff(attempt)).await;
            }
        }
        Err(RegistryError::Transport { url: url.to_string(), attempts: self.options.max_attempts, reason: last })
    }
}

fn host_without_port(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.rsplit_once(':').map_or(registry, |(h, _)| h)
}

fn header_str(headers: &HeaderMap, name: impl reqwest::header::AsHeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn invalid_manifest(url: &str, reason: &str) -> RegistryError {
    RegistryError::InvalidManifest { what: url.to_string(), reason: reason.to_string() }
}

fn transport(url: &str, attempts: u32, e: &reqwest::Error) -> RegistryError {
    RegistryError::Transport { url: url.to_string(), attempts, reason: error_chain(e) }
}

/// An error with its sources, `a: b: c` (reqwest's own message hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn expect_status(reference: &Reference, url: &str, resp: Response, ok: &[StatusCode]) -> Result<Response, RegistryError> {
    expect_status_of(Method::GET, reference, url, resp, ok).await
}

async fn expect_status_of(
    method: Method,
    reference: &Reference,
    url: &str,
    resp: Response,
    ok: &[StatusCode],
) -> Result<Response, RegistryError> {
    if ok.contains(&resp.status()) {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let body = read_prefix(resp, MAX_ERROR_BODY_BYTES).await;
    let body: String = String::from_utf8_lossy(&body).chars().take(400).collect();
    Err(RegistryError::Status {
        registry: reference.registry().to_string(),
        method: method.to_string(),
        url: url.to_string(),
        status,
        body: body.trim().to_string(),
    })
}

/// The body of `resp`, refused with [`RegistryError::TooLarge`] as soon as it is known to be
/// over `limit` bytes: from `Content-Length` before reading, else while streaming (a server
/// that lies about or omits the length is cut off at the limit, never buffered whole).
async fn read_capped(resp: Response, limit: usize, what: &str, url: &str) -> Result<Vec<u8>, RegistryError> {
    let too_large = || RegistryError::TooLarge { what: format!("{what} from {url}"), limit: human_size(limit as u64) };
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| transport(url, 1, &e))?;
        if out.len() + chunk.len() > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// At most the first `limit` bytes of the body of `resp` (the rest is never read); what
/// arrived before a transport error.
async fn read_prefix(resp: Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while out.len() < limit {
        match stream.next().await {
            Some(Ok(chunk)) => out.extend_from_slice(&chunk[..chunk.len().min(limit - out.len())]),
            _ => break,
        }
    }
    out
}

/// `4 MiB`, `10 GiB`, `512 KiB`, `100 bytes`: a limit as people read it.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (unit, name) in UNITS {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{} {name}", bytes / unit);
        }
    }
    match UNITS.iter().find(|(unit, _)| bytes >= *unit) {
        Some((unit, name)) => format!("{:.1} {name}", bytes as f64 / *unit as f64),
        None => format!("{bytes} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_insecure_others_are_not() {
        let c = RegistryClient::new(ClientOptions { insecure_registries: vec!["registry.lan:5000".into()], ..Default::default() }).unwrap();
        for r in ["localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "registry.lan:5000"] {
            assert!(c.is_insecure(r), "{r}");
        }
        for r in ["docker.io", "ghcr.io", "10.0.0.1:5000", "registry.lan:5001", "localhost.evil.com"] {
            assert!(!c.is_insecure(r), "{r}");
        }
    }

    #[test]
    fn limits_read_as_people_write_them() {
        for (bytes, text) in [
            (MAX_MANIFEST_BYTES as u64, "4 MiB"),
            (10 << 30, "10 GiB"),
            (64 << 10, "64 KiB"),
            (100, "100 bytes"),
            ((1 << 20) + (1 << 19) + 1, "1.5 MiB"),
        ] {
            assert_eq!(human_size(bytes), text);
        }
    }
}
