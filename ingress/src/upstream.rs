//! Connections to targets: HTTP/1.1 keep-alive connections, pooled per target with one pool
//! per [`crate::proxy::Proxy`] (so one per worker thread with `threads`, like nginx's
//! per-worker upstream keepalive), each driven by the task of the request that uses it.
//!
//! A hyper client connection is a pair: the `SendRequest` handle and the `Connection` future
//! that does the I/O. The usual way (hyper-util's pooled client) runs that future as a task of
//! its own and hands each request and answer across channels to it, with a task wake-up each
//! way. Here the request's own task polls the connection while it waits for the answer's head
//! ([`TargetConn::send`]), then the response body polls it while it streams
//! ([`crate::body::TargetBody`]); at the body's end the connection goes back to the pool.
//!
//! An idle connection is polled by nobody, so a close by the target is noticed only when the
//! connection is taken again: it is polled once first ([`Upstream::connection`]), and a
//! request hyper hands back unsent is sent on the next connection. Idle connections older
//! than the target idle timeout are not used, and [`Upstream::prune`] (called periodically
//! by the server) closes them.
//!
//! Upgrade requests are the exception: their connection runs as a task of its own
//! ([`TargetConn::spawn_io`]), which hands the upgraded I/O over after a 101, and it never
//! comes back to the pool.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::ProxyBody;

/// Idle connections kept per target (in one pool) at most; more are closed.
const MAX_IDLE_PER_TARGET: usize = 1024;

/// The idle connections of one proxy, per target.
pub struct Upstream {
    /// Per target, the most recently used last.
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>, BuildHasherDefault<AddrHasher>>>,
    connect_timeout: Duration,
    /// An idle connection is not used after this long (targets close theirs too).
    idle_timeout: Duration,
    http1: http1::Builder,
}

struct Idle {
    conn: TargetConn,
    since: Instant,
}

/// One HTTP/1.1 connection to a target.
pub struct TargetConn {
    target: SocketAddr,
    sender: SendRequest<ProxyBody>,
    io: Io,
    /// Taken from the pool: the target may have closed it meanwhile.
    reused: bool,
}

enum Io {
    /// Polled by whoever holds the connection.
    InTask(Box<Connection<TokioIo<TcpStream>, ProxyBody>>),
    /// Runs as a task of its own (for an upgrade).
    Spawned,
    /// Closed.
    Ended,
}

impl Upstream {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        Upstream { idle: Mutex::new(HashMap::default()), connect_timeout, idle_timeout, http1: http1::Builder::new() }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, Vec<Idle>, BuildHasherDefault<AddrHasher>>> {
        // Lists of connections: a panic elsewhere cannot leave one half-updated.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection to `target`: the most recently used idle one that is still open, or a new
    /// one. An error means no connection could be made (refused, unreachable, timed out).
    pub async fn connection(&self, target: SocketAddr) -> io::Result<TargetConn> {
        while let Some(mut conn) = self.take_idle(target) {
            // Reads what the target sent while the connection was idle: its close, mostly.
            if poll_fn(|cx| Poll::Ready(conn.poll_io(cx).is_pending())).await {
                return Ok(conn);
            }
        }
        self.connect(target).await
    }

    fn take_idle(&self, target: SocketAddr) -> Option<TargetConn> {
        let now = Instant::now();
        let mut idle = self.lock();
        let list = idle.get_mut(&target)?;
        let Idle { conn, since } = list.pop()?;
        if now.saturating_duration_since(since) < self.idle_timeout {
            return Some(conn);
        }
        // The ones below are older still.
        let expired = std::mem::take(list);
        drop(idle);
        drop((conn, expired));
        None
    }

    async fn connect(&self, target: SocketAddr) -> io::Result<TargetConn> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(target))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        let (sender, conn) = self.http1.handshake(TokioIo::new(stream)).await.map_err(io::Error::other)?;
        Ok(TargetConn { target, sender, io: Io::InTask(Box::new(conn)), reused: false })
    }

    /// Takes back a connection whose exchange has ended, for the next request to its target.
    pub fn put_back(&self, mut conn: TargetConn) {
        if !matches!(conn.io, Io::InTask(_)) || conn.sender.is_closed() {
            return;
        }
        conn.reused = true;
        let since = Instant::now();
        let mut idle = self.lock();
        let list = idle.entry(conn.target).or_default();
        if list.len() < MAX_IDLE_PER_TARGET {
            list.push(Idle { conn, since });
        }
    }

    /// Closes the idle connections older than the idle timeout.
    pub fn prune(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut idle = self.lock();
        idle.retain(|_, list| {
            let fresh = list.partition_point(|i| now.saturating_duration_since(i.since) >= self.idle_timeout);
            expired.extend(list.drain(..fresh));
            !list.is_empty()
        });
        drop(idle);
        if !expired.is_empty() {
            tracing::debug!(closed = expired.len(), "idle target connections closed");
        }
    }

    /// Idle connections in the pool (for tests and reports).
    pub fn idle_count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}

/// The pool's hasher: a request looks its target up twice (take, put back), and the keys are
/// target addresses from the route table, not chosen by clients, so a multiply-and-rotate hash
/// does instead of SipHash (which is built to resist keys chosen to collide).
#[derive(Default)]
pub struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        // An odd constant near 2^64 / golden ratio spreads the bits; the rotation keeps earlier
        // words from being shifted out.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl TargetConn {
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Drives the connection's I/O: writes the request, reads the answer into its body.
    /// `Ready` once the connection has ended (it is then dropped, and a request still waiting
    /// in it is handed back unsent).
    pub fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Io::InTask(conn) = &mut self.io else {
            return match self.io {
                Io::Ended => Poll::Ready(()),
                _ => Poll::Pending,
            };
        };
        match conn.poll_without_shutdown(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                if let Err(e) = result {
                    tracing::debug!(target = %self.target, error = %e, "target connection failed");
                }
                self.io = Io::Ended;
                Poll::Ready(())
            }
        }
    }

    /// Sends `request` and waits for the answer's head, driving the connection meanwhile. A
    /// request the connection could not take (it was closed) comes back in the error.
    pub async fn send(&mut self, request: Request<ProxyBody>) -> Result<Response<Incoming>, TrySendError<Request<ProxyBody>>> {
        let mut answer = pin!(self.sender.try_send_request(request));
        poll_fn(|cx| {
            let _ = self.poll_io(cx);
            answer.as_mut().poll(cx)
        })
        .await
    }

    /// Runs the connection's I/O as a task of its own, as an upgrade needs (hyper hands the
    /// upgraded I/O over from there). The connection will not be pooled.
    pub fn spawn_io(&mut self) {
        if let Io::InTask(conn) = std::mem::replace(&mut self.io, Io::Spawned) {
            let target = self.target;
            tokio::spawn(async move {
                if let Err(e) = (*conn).with_upgrades().await {
                    tracing::debug!(%target, error = %e, "target connection failed");
                }
            });
        }
    }
}
