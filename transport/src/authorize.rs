//! Who may call which gRPC method, decided once per call before the method runs.
//!
//! A server's services all share one port; the TLS handshake only says who the client is
//! (the [`Caller`] in its certificate, or nobody). An [`AuthorizeLayer`] in front of the
//! services asks the process's [`Policy`] about every call — the method's path and the caller
//! — and answers a refusal itself (PERMISSION_DENIED or UNAUTHENTICATED, as the policy says),
//! so a refused call never reaches a handler. An allowed call carries the [`Caller`] in its
//! extensions, for handlers that also check *what* is asked (an agent acting only as its own
//! node).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http;

use crate::incoming::PeerInfo;

/// The holder of the client certificate a call came with.
pub type Caller = pki::CertificateHolder;

/// A process's rules: whether `caller` (`None`: no client certificate) may call `method`
/// (the gRPC path, `/package.Service/Method`). Pure and quick: it runs on every call.
pub trait Policy: Send + Sync + 'static {
    fn check(&self, method: &str, caller: Option<&Caller>) -> Result<(), tonic::Status>;
}

/// The caller of a request that passed the [`AuthorizeLayer`], if it had a certificate.
pub fn caller_of<T>(request: &tonic::Request<T>) -> Option<&Caller> {
    request.extensions().get::<Caller>()
}

/// Puts a [`Policy`] in front of a server's services.
#[derive(Clone)]
pub struct AuthorizeLayer {
    policy: Arc<dyn Policy>,
}

impl AuthorizeLayer {
    pub fn new(policy: Arc<dyn Policy>) -> AuthorizeLayer {
        AuthorizeLayer { policy }
    }
}

impl<S> tower_layer::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize { inner, policy: self.policy.clone() }
    }
}

/// The service an [`AuthorizeLayer`] wraps around a server's routes.
#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    policy: Arc<dyn Policy>,
}

impl<S, B> tower_service::Service<http::Request<B>> for Authorize<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let caller = request.extensions().get::<PeerInfo>().and_then(|peer| peer.caller.clone());
        match self.policy.check(request.uri().path(), caller.as_ref()) {
            Ok(()) => {
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
                Box::pin(self.inner.call(request))
            }
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}
