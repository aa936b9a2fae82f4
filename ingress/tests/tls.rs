//! TLS termination on loopback: a self-signed certificate made here, HTTP/2 by ALPN, and
//! HTTP/1.1 for clients that only offer it.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ingress::{Error, IngressConfig, Route, RouteTable, TlsFiles};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use support::*;

struct Certificate {
    _dir: tempfile::TempDir,
    files: TlsFiles,
    roots: rustls::RootCertStore,
}

fn self_signed() -> Certificate {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles { cert: dir.path().join("cert.pem"), key: dir.path().join("key.pem") };
    std::fs::write(&files.cert, made.cert.pem()).unwrap();
    std::fs::write(&files.key, made.signing_key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(made.cert.der().clone()).unwrap();
    Certificate { _dir: dir, files, roots }
}

async fn connect(harness: &Harness, roots: &rustls::RootCertStore, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(harness.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(PATIENCE, TlsConnector::from(Arc::new(config)).connect(name, tcp)).await.unwrap().unwrap()
}

async fn start(cert: &Certificate) -> (Harness, Backend) {
    let echo = echo_headers().await;
    let harness = Harness::start(
        IngressConfig { tls: Some(cert.files.clone()), ..IngressConfig::default() },
        RouteTable { routes: vec![Route::new("echo", "/").with_targets([echo.addr])] },
    )
    .await;
    (harness, echo)
}

#[tokio::test]
async fn tls_clients_get_http2_by_alpn() {
    let cert = self_signed();
    let (harness, _echo) = start(&cert).await;
    let tls = connect(&harness, &cert.roots, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let request = Request::get("https://localhost/").body(Empty::<Bytes>::new()).unwrap();
    let response = tokio::time::timeout(PATIENCE, sender.send_request(request)).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.lines().any(|l| l == "x-forwarded-proto: https"), "{body}");
    assert!(body.lines().any(|l| l == "host: localhost"), "{body}");
}

#[tokio::test]
async fn tls_clients_without_h2_get_http1() {
    let cert = self_signed();
    let (harness, _echo) = start(&cert).await;
    let tls = connect(&harness, &cert.roots, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let request = Request::get("/").header("host", "localhost").body(Empty::<Bytes>::new()).unwrap();
    let response = tokio::time::timeout(PATIENCE, sender.send_request(request)).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_missing_or_wrong_key_file_stops_the_start() {
    let cert = self_signed();
    let (_tx, rx) = tokio::sync::watch::channel(RouteTable::default());
    let missing = TlsFiles { cert: cert.files.cert.clone(), key: cert.files.key.with_file_name("nope.pem") };
    let config = IngressConfig { tls: Some(missing), ..IngressConfig::default() };
    let err = ingress::Ingress::new(config, rx.clone()).err().expect("must fail");
    assert!(matches!(err, Error::TlsFile { what: "key", .. }), "{err}");
    assert!(err.to_string().contains("nope.pem"), "{err}");
    let other = self_signed();
    let mismatched = TlsFiles { cert: cert.files.cert.clone(), key: other.files.key.clone() };
    let config = IngressConfig { tls: Some(mismatched), ..IngressConfig::default() };
    let err = ingress::Ingress::new(config, rx).err().expect("must fail");
    assert!(matches!(err, Error::Tls(_)), "{err}");
}
