//! The server side: accepted TCP connections, Nagle off, and (with TLS) the handshake done
//! off the accept loop, so a slow or silent client delays nobody else. Each connection carries
//! a [`PeerInfo`] — its address and, when it presented a certificate the CA signed, who it is
//! ([`Caller`]) — which tonic puts into every request's extensions.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::authorize::Caller;

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Accepted connections waiting for the server to take them.
const BACKLOG: usize = 64;

/// Who is at the other end of an accepted connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The identity in the client's certificate; `None` without TLS, without a certificate, or
    /// with one that names no sched identity.
    pub caller: Option<Caller>,
}

/// The connections a server accepts, as tonic's `serve_with_incoming` takes them.
pub type Incoming = ReceiverStream<std::io::Result<Connection>>;

/// One accepted connection, plain or TLS.
pub struct Connection {
    stream: Stream,
    peer: PeerInfo,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Accepts on `listener` until the returned stream is dropped; with `tls`, each connection's
/// handshake runs in its own task and only finished ones are yielded. Failed handshakes (a
/// plaintext client, a certificate of another CA) are logged and dropped.
pub(crate) fn accept(listener: TcpListener, tls: Option<Arc<ServerConfig>>) -> Incoming {
    let (sender, receiver) = mpsc::channel(BACKLOG);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                _ = sender.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!("cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let Some(config) = &tls else {
                let connection = Connection { stream: Stream::Plain(tcp), peer: PeerInfo { remote: Some(remote), caller: None } };
                if sender.send(Ok(connection)).await.is_err() {
                    return;
                }
                continue;
            };
            let (acceptor, sender) = (tokio_rustls::TlsAcceptor::from(config.clone()), sender.clone());
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, "refused a connection: TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "refused a connection: no TLS handshake within {HANDSHAKE_TIMEOUT:?}");
                        return;
                    }
                };
                let caller = tls.get_ref().1.peer_certificates().and_then(|chain| chain.first()).and_then(|leaf| {
                    Caller::from_certificate_der(leaf)
                        .map_err(|e| tracing::debug!(%remote, "a client certificate names no caller: {e}"))
                        .ok()
                });
                let connection = Connection { stream: Stream::Tls(Box::new(tls)), peer: PeerInfo { remote: Some(remote), caller } };
                let _ = sender.send(Ok(connection)).await;
            });
        }
    });
    ReceiverStream::new(receiver)
}

impl Connected for Connection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
