//! The `/metrics` endpoint: Prometheus text over HTTP/1.1.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::render;

/// How long a client may take to send a request's headers before the connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;

/// Serves `GET /metrics` from `handle` on `listener` until the task is dropped, with
/// [`HEADER_READ_TIMEOUT`] and [`MAX_CONNECTIONS`]: a client that opens connections and
/// sends nothing cannot hold descriptors for ever.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    serve_limited(listener, handle, HEADER_READ_TIMEOUT, MAX_CONNECTIONS).await;
}

/// [`serve`] with its limits given.
pub async fn serve_limited(
    listener: TcpListener,
    handle: PrometheusHandle,
    header_read_timeout: Duration,
    max_connections: usize,
) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Response, StatusCode};
    use hyper_util::rt::{TokioIo, TokioTimer};

    let handle = Arc::new(handle);
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut backoff = crate::conn::AcceptBackoff::default();
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.reset();
                stream
            }
            Err(error) => {
                // Out of descriptors, say: retrying at once would spin a core.
                let wait = backoff.failed();
                tracing::warn!(%error, ?wait, "metrics accept failed; backing off");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let handle = Arc::clone(&handle);
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let handle = Arc::clone(&handle);
                    async move {
                        let resp = if req.uri().path() == "/metrics" {
                            Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(Full::new(Bytes::from(render(&handle))))
                        } else {
                            Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::from_static(b"see /metrics\n")))
                        };
                        Ok::<_, Infallible>(resp.unwrap_or_default())
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}
