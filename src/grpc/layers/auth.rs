//! [`AuthLayer`]: resolves the [`Caller`] of every call from the configuration in force at
//! that moment (a reload that revokes a token refuses it from the next call on), and
//! [`reauthenticate`]: the same for each message of a stream that is already open.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use super::{BoxFuture, take_ready};
use crate::auth::{AUDIT_TARGET, AuthError, Caller, Credentials, is_public};
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
        let credentials = Credentials::new(req.headers().get(http::header::AUTHORIZATION), cert);
        let live = self.live.snapshot();
        match credentials.authenticate(&live.auth) {
            Ok(caller) => {
                tracing::Span::current().record("client", caller.name());
                req.extensions_mut().insert(caller);
                req.extensions_mut().insert(credentials);
                Box::pin(inner.call(req))
            }
            Err(e) => {
                refused(e, req.uri().path(), "call refused: no valid identity");
                let status = tonic::Status::unauthenticated(e.to_string());
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// The credentials the auth layer kept for this call (see [`reauthenticate`]). Fails closed
/// if the layer is missing.
pub fn credentials_of<T>(request: &tonic::Request<T>) -> Result<Credentials, tonic::Status> {
    request
        .extensions()
        .get::<Credentials>()
        .cloned()
        .ok_or_else(|| tonic::Status::unauthenticated("no caller identity"))
}

/// Authenticates a call that is still open (a stream's next message) again, against the
/// configuration in force now: a reload that revoked its token, or removed its client,
/// ends it with `UNAUTHENTICATED`, counted and audited as a refused call is. A client whose
/// grant changed gets the new grant.
pub fn reauthenticate(
    live: &LiveConfig,
    credentials: &Credentials,
    method: &str,
) -> Result<Caller, tonic::Status> {
    credentials
        .authenticate(&live.snapshot().auth)
        .map_err(|e| {
            refused(
                e,
                method,
                "open stream refused: its credentials are no longer valid after a reload",
            );
            tonic::Status::unauthenticated(format!(
                "{e} (the configuration was reloaded while this stream was open)"
            ))
        })
}

fn refused(e: AuthError, method: &str, message: &'static str) {
    metrics::counter!(crate::metrics::AUTH_FAILURES, "reason" => e.label()).increment(1);
    tracing::warn!(
        target: AUDIT_TARGET,
        event = "unauthenticated",
        method,
        reason = e.label(),
        "{message}"
    );
}
