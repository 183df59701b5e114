//! [`ObserveLayer`]: one span per call (`method`, `request_id`, `peer`, plus `batch_size`
//! and `key_id` recorded by the handler), the request id echoed in `x-request-id`
//! response metadata, one `grpc call` log line, and the request metrics by method and
//! status code. The code is read from the `grpc-status` response header, which is where
//! tonic puts it for every error returned by a handler; a response without it is a
//! success at the time headers are sent (a stream that fails later still counts as OK).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderValue, Request, Response};
use metrics::{Counter, Histogram, counter, histogram};
use tower::{Layer, Service};
use tracing::Instrument as _;

use super::take_ready;
use crate::conn::Peer;
use crate::metrics::{GRPC_DURATION, GRPC_REQUESTS};

/// Request metadata key for the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Every method the server exposes; anything else is labelled `unknown`.
const METHODS: &[&str] = &[
    "/cdnsign.v1.Signer/SignUrls",
    "/cdnsign.v1.Signer/SignCookies",
    "/cdnsign.v1.Signer/SignUrlsStream",
    "/cdnsign.v1.Signer/SignPlaylist",
    "/cdnsign.v1.Signer/VerifyUrls",
    "/cdnsign.v1.Signer/VerifyCookies",
    "/cdnsign.v1.Purger/Purge",
    "/cdnsign.v1.Purger/GetPurge",
    "/cdnsign.v1.Purger/ListPurges",
    "/cdnsign.v1.Purger/WatchPurge",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "unknown",
];

/// gRPC status code names, indexed by code number.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Handles per (method, code), each made on first use and then reused.
struct GrpcMetrics {
    requests: Vec<OnceLock<Counter>>,
    durations: Vec<OnceLock<Histogram>>,
}

impl GrpcMetrics {
    fn new() -> GrpcMetrics {
        GrpcMetrics {
            requests: (0..METHODS.len() * CODES.len())
                .map(|_| OnceLock::new())
                .collect(),
            durations: (0..METHODS.len()).map(|_| OnceLock::new()).collect(),
        }
    }

    fn method_index(path: &str) -> usize {
        METHODS
            .iter()
            .position(|m| *m == path)
            .unwrap_or(METHODS.len() - 1)
    }

    fn method_label(index: usize) -> &'static str {
        // "/pkg.Service/Method" -> "pkg.Service/Method"
        METHODS[index].trim_start_matches('/')
    }

    fn record(&self, method: usize, code: usize, seconds: f64) {
        let code = code.min(CODES.len() - 1);
        self.requests[method * CODES.len() + code]
            .get_or_init(|| {
                counter!(GRPC_REQUESTS, "method" => Self::method_label(method), "code" => CODES[code])
            })
            .increment(1);
        self.durations[method]
            .get_or_init(|| histogram!(GRPC_DURATION, "method" => Self::method_label(method)))
            .record(seconds);
    }
}

/// Adds the per-call span, request id, call log and request metrics.
#[derive(Clone)]
pub struct ObserveLayer {
    metrics: Arc<GrpcMetrics>,
}

impl std::fmt::Debug for ObserveLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObserveLayer")
    }
}

impl Default for ObserveLayer {
    fn default() -> Self {
        ObserveLayer::new()
    }
}

impl ObserveLayer {
    /// Makes the layer and its metric table.
    pub fn new() -> ObserveLayer {
        ObserveLayer {
            metrics: Arc::new(GrpcMetrics::new()),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// The service [`ObserveLayer`] produces.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Arc<GrpcMetrics>,
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Observe<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send,
    ReqBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let mut inner = take_ready(&mut self.inner);
        let metrics = Arc::clone(&self.metrics);

        let method = GrpcMetrics::method_index(req.uri().path());
        let request_id = caller_request_id(req.headers().get(REQUEST_ID_HEADER))
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let peer = req.extensions().get::<Peer>().and_then(|p| p.remote);
        let span = tracing::info_span!(
            "grpc",
            method = GrpcMetrics::method_label(method),
            request_id = %request_id,
            peer = peer.map(tracing::field::display),
            batch_size = tracing::field::Empty,
            key_id = tracing::field::Empty,
            client = tracing::field::Empty,
        );
        let started = Instant::now();
        let fut = span.in_scope(|| inner.call(req));
        Box::pin(
            async move {
                let mut result = fut.await;
                let elapsed = started.elapsed();
                let code = match &result {
                    Ok(resp) => resp
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0),
                    // A transport-level failure of the inner service.
                    Err(_) => 2,
                };
                if let Ok(resp) = &mut result
                    && let Ok(value) = HeaderValue::from_str(&request_id)
                {
                    resp.headers_mut().insert(REQUEST_ID_HEADER, value);
                }
                metrics.record(method, code, elapsed.as_secs_f64());
                let code_name = CODES.get(code).copied().unwrap_or("UNKNOWN");
                if code == 0 {
                    tracing::info!(
                        code = code_name,
                        latency_ms = elapsed.as_secs_f64() * 1e3,
                        "grpc call"
                    );
                } else {
                    tracing::warn!(
                        code = code_name,
                        latency_ms = elapsed.as_secs_f64() * 1e3,
                        "grpc call"
                    );
                }
                result
            }
            .instrument(span),
        )
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
    fn unknown_methods_share_one_label() {
        assert_eq!(
            GrpcMetrics::method_label(GrpcMetrics::method_index("/x.Y/Z")),
            "unknown"
        );
        assert_eq!(
            GrpcMetrics::method_label(GrpcMetrics::method_index("/cdnsign.v1.Signer/SignUrls")),
            "cdnsign.v1.Signer/SignUrls"
        );
    }
}
