//! Client connection activity and the connection's watchdog timing: a stream wrapper that
//! counts its reads and writes (no clock read per I/O), an [`IdleCheck`] that turns those
//! counts into "idle for at least this long" at each watchdog tick, and [`TickTimer`], hyper's
//! timer for the header read timeout, whose sleeps are checked when the connection is polled
//! (which its watchdog does at every tick) instead of each arming a timer of its own.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The reads and writes of one connection, counted by its stream and read by its watchdog.
#[derive(Debug, Clone, Default)]
pub struct Activity {
    ops: Arc<AtomicU64>,
}

impl Activity {
    pub fn new() -> Self {
        Activity::default()
    }

    fn touch(&self) {
        self.ops.fetch_add(1, Ordering::Relaxed);
    }

    fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// Completes once nothing was read or written for `timeout` (checked every quarter of it,
    /// between 50 ms and 1 s).
    pub async fn idle_at_least(&self, timeout: Duration) {
        let mut watchdog = tokio::time::interval(check_every(timeout));
        let mut check = IdleCheck::new(self.clone());
        loop {
            watchdog.tick().await;
            if check.idle_for(Instant::now()) >= timeout {
                return;
            }
        }
    }
}

/// Idle time as seen at the watchdog's ticks: the activity count is compared with the one of
/// the previous tick, so a connection counts as quiet from the first tick that saw no change
/// after its last read or write. It never reads as idle for longer than it really was.
#[derive(Debug)]
pub struct IdleCheck {
    activity: Activity,
    seen: u64,
    quiet_since: Instant,
}

impl IdleCheck {
    pub fn new(activity: Activity) -> Self {
        let seen = activity.ops();
        IdleCheck { activity, seen, quiet_since: Instant::now() }
    }

    /// How long nothing was read or written, as of `now` (a watchdog tick).
    pub fn idle_for(&mut self, now: Instant) -> Duration {
        let ops = self.activity.ops();
        if ops != self.seen {
            self.seen = ops;
            self.quiet_since = now;
        }
        now.saturating_duration_since(self.quiet_since)
    }
}

/// How often an idle timeout is checked: a quarter of it, between 50 ms and 1 s.
pub fn check_every(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// hyper's HTTP/1 timer (it uses one only for the header read timeout): a sleep is a deadline
/// compared with the clock whenever hyper polls it, and arms no timer of its own, so a request
/// costs no timer registration. hyper polls it each time the connection is polled while the
/// headers are not all read; the connection's watchdog polls the connection at every tick
/// (see `crate::server`), so the timeout fires within a tick of its deadline.
#[derive(Debug, Clone, Copy, Default)]
pub struct TickTimer;

struct TickSleep {
    deadline: Instant,
}

impl hyper::rt::Timer for TickTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(TickSleep { deadline: Instant::now() + duration })
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(TickSleep { deadline })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        *sleep = self.sleep_until(new_deadline);
    }
}

impl std::future::Future for TickSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline { Poll::Ready(()) } else { Poll::Pending }
    }
}

impl hyper::rt::Sleep for TickSleep {}

/// A stream that counts its reads and writes.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_time_counts_from_the_first_quiet_tick() {
        let activity = Activity::new();
        let mut check = IdleCheck::new(activity.clone());
        let start = check.quiet_since;
        let tick = Duration::from_millis(100);
        assert_eq!(check.idle_for(start + tick), tick);
        activity.touch();
        assert_eq!(check.idle_for(start + 2 * tick), Duration::ZERO, "activity since the last tick");
        assert_eq!(check.idle_for(start + 5 * tick), 3 * tick);
    }

    #[test]
    fn tick_sleeps_are_due_at_their_deadline() {
        use hyper::rt::Timer;
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut past = TickTimer.sleep_until(Instant::now() - Duration::from_millis(1));
        assert!(past.as_mut().poll(&mut cx).is_ready());
        let mut future = TickTimer.sleep(Duration::from_secs(60));
        assert!(future.as_mut().poll(&mut cx).is_pending());
        TickTimer.reset(&mut future, Instant::now());
        assert!(future.as_mut().poll(&mut cx).is_ready());
    }
}
