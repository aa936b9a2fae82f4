//! The client side of a TLS connection: TCP to the URI's host and port, Nagle off, then the
//! TLS handshake against the name the called role's certificates carry. tonic's channel runs
//! HTTP/2 over what this returns.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::codegen::http::Uri;

/// Connects to a URI's `HOST:PORT` over TLS, checking the peer's certificate against `name`.
#[derive(Clone)]
pub(crate) struct TlsConnector {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsConnector {
    pub fn new(config: Arc<ClientConfig>, name: &'static str) -> TlsConnector {
        // The names are this crate's constants: always valid DNS names.
        let name = ServerName::try_from(name).expect("a valid DNS name");
        TlsConnector { config, name }
    }
}

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (config, name) = (self.config.clone(), self.name.clone());
        Box::pin(async move {
            let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{uri} is not HOST:PORT"));
            let host = uri.host().ok_or_else(invalid)?;
            let port = uri.port_u16().ok_or_else(invalid)?;
            // An IPv6 host comes bracketed in the URI.
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let tcp = TcpStream::connect((host, port)).await?;
            // Calls are small HTTP/2 writes: Nagle plus delayed ACKs would add 40 ms to each.
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}
