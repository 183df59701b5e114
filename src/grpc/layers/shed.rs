//! [`ShedLayer`]: at most `[server] max_concurrent_requests` calls in flight; more are
//! refused with `RESOURCE_EXHAUSTED` at once, before any work or buffering. A call holds
//! its place until its response has been sent to the end, so a `SignUrlsStream` call counts
//! for as long as it streams.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tower::{Layer, Service};

use super::{BoxFuture, take_ready};
use crate::auth::is_public;

/// Refuses calls beyond a concurrency limit at once (no queueing, no buffering).
#[derive(Debug, Clone)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl ShedLayer {
    /// At most `limit` signing/purge calls in flight.
    pub fn new(limit: usize) -> ShedLayer {
        ShedLayer {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.limit - self.permits.available_permits()
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`ShedLayer`] produces.
#[derive(Debug, Clone)]
pub struct Shed<S> {
    inner: S,
    layer: ShedLayer,
}

impl<S, ReqBody> Service<Request<ReqBody>> for Shed<S>
where
    S: Service<Request<ReqBody>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let mut inner = take_ready(&mut self.inner);
        if is_public(req.uri().path()) {
            return Box::pin(inner.call(req));
        }
        match Arc::clone(&self.layer.permits).try_acquire_owned() {
            Ok(permit) => Box::pin(async move {
                let response = inner.call(req).await?;
                // The permit goes with the body: released when the last frame is sent or
                // the body is dropped (call cancelled, connection gone).
                Ok(response.map(|body| {
                    Body::new(Held {
                        body,
                        permit: Some(permit),
                    })
                }))
            }),
            Err(_) => {
                metrics::counter!(crate::metrics::REQUESTS_SHED).increment(1);
                let limit = self.layer.limit;
                Box::pin(async move { Ok(crate::grpc::status::shed(limit).into_http()) })
            }
        }
    }
}

/// A response body that holds a concurrency permit until it ends.
struct Held {
    body: Body,
    permit: Option<OwnedSemaphorePermit>,
}

impl http_body::Body for Held {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.permit = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
