//! [`ObserveLayer`]: one span per call (`method`, `request_id`, `peer`, plus `batch_size`,
//! `key_id` and `client` recorded by the handler, and `trace_id`/`span_id` when the caller
//! sent a W3C `traceparent`), the request id echoed in `x-request-id` response metadata,
//! one `grpc call` log line when the call ends, and the call metrics ([`CallTable`]).
//!
//! A call ends when its response body does: the status is read from the `grpc-status`
//! response header (a refusal, "trailers-only") or from the trailers after the last
//! message, so a stream's duration and code are taken at its end; a body dropped before its
//! end (the caller cancelled, the connection went) counts as `Canceled`. Calls refused by
//! the layers inside this one (authentication, shedding, message size) are counted too.
//!
//! Health checks log at debug: probes call them every few seconds.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, HeaderValue, Request, Response};
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument as _;

use super::call_table::{CallTable, GO_CODES};
use super::take_ready;
use crate::conn::Peer;
use crate::trace_context;

/// Request metadata key for the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Adds the per-call span, request id, call log and call metrics.
#[derive(Clone, Debug)]
pub struct ObserveLayer {
    table: Arc<CallTable>,
}

impl ObserveLayer {
    /// Labels calls with the methods of the services in `descriptor_sets`.
    pub fn new(descriptor_sets: &[&[u8]]) -> ObserveLayer {
        ObserveLayer {
            table: Arc::new(CallTable::from_descriptor_sets(descriptor_sets)),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            table: Arc::clone(&self.table),
        }
    }
}

/// The service [`ObserveLayer`] produces.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    table: Arc<CallTable>,
}

impl<S> std::fmt::Debug for Observe<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observe")
    }
}

/// A caller's request id is used only if it is short and plain, so it cannot forge log
/// fields or carry a secret-sized blob; otherwise a fresh one is made.
fn caller_request_id(value: Option<&HeaderValue>) -> Option<String> {
    let v = value?.to_str().ok()?;
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| v.to_owned())
}

/// The `grpc-status` in `headers`, if any.
fn grpc_status(headers: &HeaderMap) -> Option<usize> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

const HEALTH_PREFIX: &str = "grpc.health.v1.Health/";

impl<S, ReqBody> Service<Request<ReqBody>> for Observe<S>
where
    S: Service<Request<ReqBody>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send,
    ReqBody: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let mut inner = take_ready(&mut self.inner);
        let table = Arc::clone(&self.table);

        let method = table.index(req.uri().path());
        table.started(method);
        let request_id = caller_request_id(req.headers().get(REQUEST_ID_HEADER))
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let peer = req.extensions().get::<Peer>().and_then(|p| p.remote);
        let span = tracing::info_span!(
            "grpc",
            otel.name = table.label(method),
            otel.kind = "server",
            rpc.system = "grpc",
            method = table.label(method),
            request_id = %request_id,
            peer = peer.map(tracing::field::display),
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            batch_size = tracing::field::Empty,
            key_id = tracing::field::Empty,
            client = tracing::field::Empty,
        );
        // The caller's W3C trace context, if it sent one: the span's parent when traces are
        // exported, and `trace_id`/`span_id` on every log line of the call either way.
        trace_context::adopt(&span, req.headers());
        let started = Instant::now();
        let fut = span.in_scope(|| inner.call(req));
        let call_span = span.clone();
        Box::pin(
            async move {
                let result = fut.await;
                let headers_sent = started.elapsed().as_secs_f64();
                let mut response = match result {
                    Ok(r) => r,
                    Err(e) => {
                        // A transport-level failure of the inner service.
                        table.legacy(method, 2, headers_sent);
                        Finish {
                            table,
                            method,
                            started,
                            code: Some(2),
                            span: call_span,
                        }
                        .record(false);
                        return Err(e);
                    }
                };
                let header_code = grpc_status(response.headers());
                table.legacy(method, header_code.unwrap_or(0), headers_sent);
                if let Ok(value) = HeaderValue::from_str(&request_id) {
                    response.headers_mut().insert(REQUEST_ID_HEADER, value);
                }
                let finish = Finish {
                    table,
                    method,
                    started,
                    code: header_code,
                    span: call_span,
                };
                Ok(response.map(|body| {
                    Body::new(Observed {
                        body,
                        finish: Some(finish),
                    })
                }))
            }
            .instrument(span),
        )
    }
}

/// What is recorded when a call ends.
struct Finish {
    table: Arc<CallTable>,
    method: usize,
    started: Instant,
    /// From the response headers, then from the trailers.
    code: Option<usize>,
    span: tracing::Span,
}

impl Finish {
    /// Counts the call and writes its log line. `ended`: the body reached its end (else it
    /// was dropped early: the call was cancelled).
    fn record(self, ended: bool) {
        let code = self.code.unwrap_or(if ended { 2 } else { 1 });
        let elapsed = self.started.elapsed();
        self.table.handled(self.method, code, elapsed.as_secs_f64());
        let code_name = GO_CODES.get(code).copied().unwrap_or("Unknown");
        let latency_ms = elapsed.as_secs_f64() * 1e3;
        let _in_call = self.span.enter();
        if self.table.label(self.method).starts_with(HEALTH_PREFIX) {
            tracing::debug!(code = code_name, latency_ms, "grpc call");
        } else if code == 0 {
            tracing::info!(code = code_name, latency_ms, "grpc call");
        } else {
            tracing::warn!(code = code_name, latency_ms, "grpc call");
        }
    }
}

/// A response body that records its call when it ends or is dropped.
struct Observed {
    body: Body,
    finish: Option<Finish>,
}

impl http_body::Body for Observed {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status)
                    && let Some(f) = self.finish.as_mut()
                {
                    f.code = Some(code);
                }
            }
            Poll::Ready(Some(Err(status))) => {
                if let Some(mut f) = self.finish.take() {
                    f.code = Some(status.code() as usize);
                    f.record(true);
                }
            }
            Poll::Ready(None) => {
                if let Some(f) = self.finish.take() {
                    f.record(true);
                }
            }
            Poll::Pending => {}
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

impl Drop for Observed {
    fn drop(&mut self) {
        if let Some(f) = self.finish.take() {
            // A status already seen (a trailers-only refusal, or trailers the transport
            // did not poll past) is the call's; none means it was cut short.
            let ended = f.code.is_some();
            f.record(ended);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_from_callers_are_sanitised() {
        let ok = HeaderValue::from_static("req-123_abc.def:9");
        assert_eq!(
            caller_request_id(Some(&ok)).as_deref(),
            Some("req-123_abc.def:9")
        );
        let bad = HeaderValue::from_static("a b\"c");
        assert_eq!(caller_request_id(Some(&bad)), None);
        let long = HeaderValue::from_str(&"a".repeat(129)).expect("header");
        assert_eq!(caller_request_id(Some(&long)), None);
        assert_eq!(caller_request_id(None), None);
    }

    #[test]
    fn grpc_status_is_read_from_headers_or_trailers() {
        let mut h = HeaderMap::new();
        assert_eq!(grpc_status(&h), None);
        h.insert("grpc-status", HeaderValue::from_static("16"));
        assert_eq!(grpc_status(&h), Some(16));
        h.insert("grpc-status", HeaderValue::from_static("x"));
        assert_eq!(grpc_status(&h), None);
    }
}
