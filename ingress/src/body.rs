//! Bodies: the one body type the proxy hands to hyper, and the target's response body wrapped
//! so it drives its target connection while it streams, and so its end (or its failure, or
//! the client going away) releases the target, gives the connection back to the pool (after
//! a complete body only) and writes the access log line with the bytes sent.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;

use crate::access_log::PendingLog;
use crate::targets::Lease;
use crate::upstream::{TargetConn, Upstream};

/// Any error a body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the proxy sends, to clients and to targets.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A body of these bytes.
pub fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body that arrived on a connection (client request or target response), as a
/// [`ProxyBody`].
pub fn incoming(body: Incoming) -> ProxyBody {
    body.map_err(BoxError::from).boxed()
}

/// A target's response body on its way to the client.
pub struct TargetBody {
    inner: Incoming,
    bytes: u64,
    /// Released when the body ends: the request stops counting as outstanding.
    lease: Option<Lease>,
    log: Option<PendingLog>,
    /// The connection the body arrives on: polled here, pooled again after a complete body.
    conn: Option<(TargetConn, Arc<Upstream>)>,
    /// The target's failure, held back for one poll so that what came before it (the head,
    /// the body so far) is flushed to the client before the connection is cut.
    failed: Option<hyper::Error>,
}

impl TargetBody {
    pub fn new(inner: Incoming, lease: Lease, log: PendingLog, conn: TargetConn, upstream: Arc<Upstream>) -> Self {
        TargetBody { inner, bytes: 0, lease: Some(lease), log: Some(log), conn: Some((conn, upstream)), failed: None }
    }

    fn finish(&mut self, error: Option<&'static str>) {
        match self.conn.take() {
            Some((conn, upstream)) if error.is_none() => upstream.put_back(conn),
            _ => {}
        }
        self.lease.take();
        if let Some(log) = self.log.take() {
            log.finish(self.bytes, error);
        }
    }
}

impl Body for TargetBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e.into())));
        }
        if let Some((conn, _)) = &mut this.conn {
            // Reads the body from the target into `inner` (the request's own task drives the
            // connection; see crate::upstream).
            let _ = conn.poll_io(cx);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish(None);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!(error = %e, "target failed mid-response");
                this.finish(Some("target failed mid-response"));
                // hyper drops what it has not written yet when a body fails: yield once so
                // it flushes first (the target's connection ran in this task, so the head,
                // the body so far and the failure can all arrive in one poll).
                this.failed = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(None) => {
                this.finish(None);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TargetBody {
    fn drop(&mut self) {
        let error = (!self.inner.is_end_stream()).then_some("client went away");
        self.finish(error);
    }
}
