//! [`AuthLayer`]: resolves the [`Caller`] of every call from the configuration in force at
//! that moment (a reload that revokes a token refuses it from the next call on).

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use super::{BoxFuture, take_ready};
use crate::auth::{AUDIT_TARGET, is_public};
use crate::conn::Peer;
use crate::live::LiveConfig;

/// Puts the caller in the request extensions, or answers `UNAUTHENTICATED`.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    live: Arc<LiveConfig>,
}

impl AuthLayer {
    /// Layer over the live configuration's clients.
    pub fn new(live: Arc<LiveConfig>) -> AuthLayer {
        AuthLayer { live }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            live: Arc::clone(&self.live),
        }
    }
}

/// The service [`AuthLayer`] produces.
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    live: Arc<LiveConfig>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Auth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Response<ResBody>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let mut inner = take_ready(&mut self.inner);
        if is_public(req.uri().path()) {
            return Box::pin(inner.call(req));
        }
        let cert = req
            .extensions()
            .get::<Peer>()
            .and_then(|p| p.certificate.clone());
        let live = self.live.snapshot();
        match live.auth.authenticate(
            req.headers().get(http::header::AUTHORIZATION),
            cert.as_deref(),
        ) {
            Ok(caller) => {
                tracing::Span::current().record("client", caller.name());
                req.extensions_mut().insert(caller);
                Box::pin(inner.call(req))
            }
            Err(e) => {
                metrics::counter!(crate::metrics::AUTH_FAILURES, "reason" => e.label())
                    .increment(1);
                tracing::warn!(
                    target: AUDIT_TARGET,
                    event = "unauthenticated",
                    method = req.uri().path(),
                    reason = e.label(),
                    "call refused: no valid identity"
                );
                let status = tonic::Status::unauthenticated(e.to_string());
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
