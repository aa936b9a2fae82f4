//! Client connection activity: a stream wrapper that counts its reads and writes, so that a
//! watchdog can close connections idle longer than the idle timeout. Counting, not stamping
//! the time, keeps clock reads off the path of every read and write: the watchdog reads the
//! clock when it looks (every quarter of the timeout), so a connection closes between one
//! timeout and one timeout and a quarter after its last byte.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The reads and writes of one connection, shared between its stream and its watchdog.
#[derive(Debug, Clone, Default)]
pub struct Activity {
    /// Reads and writes that moved bytes so far.
    moves: Arc<AtomicU64>,
}

impl Activity {
    pub fn new() -> Self {
        Activity::default()
    }

    fn touch(&self) {
        self.moves.fetch_add(1, Ordering::Relaxed);
    }

    /// A watch over this activity: how long it has been quiet, as seen by its looks.
    pub fn watch(&self) -> Quiet {
        Quiet { activity: self.clone(), seen: self.moves.load(Ordering::Relaxed), since: Instant::now() }
    }

    /// Completes once nothing was read or written for `timeout` (looked at every quarter of
    /// it, between 50 ms and 1 s).
    pub async fn idle_at_least(&self, timeout: Duration) {
        let mut watchdog = tokio::time::interval(check_every(timeout));
        let mut quiet = self.watch();
        loop {
            watchdog.tick().await;
            if quiet.look() >= timeout {
                return;
            }
        }
    }
}

/// How long an [`Activity`] has been quiet: since the first look that found no read or write
/// after the one before it (or since the watch began).
#[derive(Debug)]
pub struct Quiet {
    activity: Activity,
    seen: u64,
    since: Instant,
}

impl Quiet {
    /// Looks now: the time since the activity was last seen moving.
    pub fn look(&mut self) -> Duration {
        let moves = self.activity.moves.load(Ordering::Relaxed);
        if moves != self.seen {
            self.seen = moves;
            self.since = Instant::now();
        }
        self.since.elapsed()
    }
}

/// How often an idle timeout is checked: a quarter of it, between 50 ms and 1 s.
pub fn check_every(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// A stream that records its activity.
pub struct IdleIo<S> {
    inner: S,
    activity: Activity,
}

impl<S> IdleIo<S> {
    pub fn new(inner: S, activity: Activity) -> Self {
        IdleIo { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
