//! Bodies: the one body type the proxy hands to hyper, and the target's response body wrapped
//! so its end (or its failure, or the client going away) releases the target and writes the
//! access log line with the bytes sent.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;

use crate::access_log::PendingLog;
use crate::targets::Lease;

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
}

impl TargetBody {
    pub fn new(inner: Incoming, lease: Lease, log: PendingLog) -> Self {
        TargetBody { inner, bytes: 0, lease: Some(lease), log: Some(log) }
    }

    fn finish(&mut self, error: Option<&'static str>) {
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
                Poll::Ready(Some(Err(e.into())))
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
