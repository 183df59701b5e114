//! Rate limits and load shedding: per-client rate, stream permits, a full queue, a caller
//! that has gone, malformed timeouts and request sizes.

use tonic::Code;

use super::{PREFIX, TOKEN, channel, config, request, url};
use crate::common::start;
use cdnsign::config::Config;
use cdnsign::proto::SignUrlsRequest;
use cdnsign::proto::signer_client::SignerClient;
use std::time::Duration;

#[tokio::test]
async fn rate_limit_refuses_with_resource_exhausted_and_counts_it() {
    let mut cfg = config("", "urls_per_second = 5\nurls_burst = 10\n");
    cfg.metrics.listen = Some("127.0.0.1:0".parse().expect("addr"));
    let server = cdnsign::server::Server::bind(cfg).await.expect("bind");
    let metrics_addr = server.metrics_addr().expect("metrics");
    let addr = server.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = rx.await;
    }));
    let mut c = SignerClient::new(channel(addr, None).await);
    let items = || {
        (0..8)
            .map(|i| url(&format!("{PREFIX}s{i}.ts")))
            .collect::<Vec<_>>()
    };
    c.sign_urls(request(items(), Some(TOKEN)))
        .await
        .expect("first batch fits the burst");
    let err = c
        .sign_urls(request(items(), Some(TOKEN)))
        .await
        .expect_err("second batch is over the rate");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("rate limit"), "{}", err.message());
    let big = (0..11).map(|i| url(&format!("{PREFIX}b{i}.ts"))).collect();
    let err = c
        .sign_urls(request(big, Some(TOKEN)))
        .await
        .expect_err("over burst");
    assert!(err.message().contains("burst of 10"), "{}", err.message());

    let text = {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio::net::TcpStream::connect(metrics_addr)
            .await
            .expect("metrics");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            .await
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    };
    assert!(
        text.contains(r#"cdnsign_rate_limited_total{client="playlist-generator",kind="urls"} 2"#),
        "{text}"
    );
    assert!(!text.contains(TOKEN));
    let _ = tx.send(());
    task.await.expect("task").expect("stop");
}

/// A `SignUrlsStream` call holds its place under `max_concurrent_requests` until it ends:
/// while one stream is open (its first response received, so it is surely in flight), the
/// next call is shed with a RetryInfo; health still answers; once the stream has ended,
/// calls are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_hold_their_concurrency_permit_until_they_end() {
    let server = start(config("max_concurrent_requests = 1", "")).await;
    let ch = channel(server.addr, None).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<SignUrlsRequest>(1);
    let mut streaming = SignerClient::new(ch.clone());
    let (meta, ext, _) = request(Vec::new(), Some(TOKEN)).into_parts();
    let mut responses = streaming
        .sign_urls_stream(tonic::Request::from_parts(
            meta,
            ext,
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .await
        .expect("stream opens")
        .into_inner();
    let batch = request(vec![url(&format!("{PREFIX}s.ts"))], None).into_inner();
    tx.send(batch).await.expect("send");
    responses
        .message()
        .await
        .expect("first response")
        .expect("a response");

    let mut other = SignerClient::new(ch.clone());
    let err = other
        .sign_urls(request(vec![url(&format!("{PREFIX}y.ts"))], Some(TOKEN)))
        .await
        .expect_err("shed while the stream is open");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("max_concurrent_requests"),
        "{}",
        err.message()
    );
    let details = tonic_types::StatusExt::get_error_details(&err);
    assert!(details.retry_info().is_some(), "RetryInfo on a shed call");
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health is never shed");
    assert_eq!(status.get_ref().status, 1);

    drop(tx);
    assert!(responses.message().await.expect("clean end").is_none());
    other
        .sign_urls(request(vec![url(&format!("{PREFIX}z.ts"))], Some(TOKEN)))
        .await
        .expect("served once the stream has ended");
    server.stop().await.expect("stop");
}

fn anonymous_config(extra_signing: &str) -> Config {
    crate::common::test_config(extra_signing, "")
}

/// Past `[signing] max_queued_items` a request is refused before any work, with
/// RESOURCE_EXHAUSTED and a RetryInfo; when the queue drains it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_signing_queue_refuses_new_work_with_retry_info() {
    let server = cdnsign::server::Server::bind(anonymous_config(
        "max_queued_items = 10\ninline_ecdsa_max_items = 0",
    ))
    .await
    .expect("bind");
    let pool = server.pool();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    // Ten items already admitted and not finished: the queue is at its limit.
    let held = pool.admit(10, 10).expect("an idle pool admits");
    let mut c = SignerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let one = || SignUrlsRequest {
        items: vec![url("https://d.example/a.ts")],
        ttl_seconds: 60,
        ..SignUrlsRequest::default()
    };
    let err = c.sign_urls(one()).await.expect_err("queue full");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("signing.max_queued_items"),
        "{}",
        err.message()
    );
    let retry = tonic_types::StatusExt::get_error_details(&err)
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(retry >= Duration::from_millis(100), "{retry:?}");
    assert_eq!(pool.queued_items(), 10, "the refused request took no room");
    drop(held);
    let ok = c.sign_urls(one()).await.expect("room again").into_inner();
    assert_eq!(ok.signed, 1);
    let _ = stop.send(());
    task.await.expect("task").expect("stop");
}

/// A batch whose caller has gone before its turn on the pool is not signed: the pool is
/// held busy, the call is started and then dropped (what tonic does on a deadline or a
/// cancel), and once the pool is free it skips the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_caller_has_gone_is_not_signed() {
    use cdnsign::proto::signer_server::Signer as _;
    use std::future::Future as _;

    let live = std::sync::Arc::new(cdnsign::live::LiveConfig::new(
        // The pool path (multi-buffer lanes shared across requests skip the pool's queue).
        cdnsign::live::Live::build(
            anonymous_config("inline_ecdsa_max_items = 0\nmultibuffer = \"off\""),
            None,
        )
        .expect("live"),
    ));
    let pool = std::sync::Arc::new(cdnsign::signing::pool::SigningPool::new(1).expect("pool"));
    let service = std::sync::Arc::new(cdnsign::grpc::sign::SignerService::new(
        live,
        std::sync::Arc::clone(&pool),
    ));
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel::<()>();
    let p = std::sync::Arc::clone(&pool);
    let blocker = tokio::spawn(async move {
        p.run(move |_| {
            let _ = started.send(());
            let _ = released.recv();
        })
        .await
    });
    running.await.expect("pool held");

    let mut req = tonic::Request::new(SignUrlsRequest {
        items: vec![url("https://d.example/gone.ts")],
        ttl_seconds: 60,
        ..SignUrlsRequest::default()
    });
    req.extensions_mut()
        .insert(cdnsign::auth::Caller::Anonymous);
    let mut call = Box::pin(service.sign_urls(req));
    std::future::poll_fn(|cx| {
        assert!(call.as_mut().poll(cx).is_pending(), "waits for the pool");
        std::task::Poll::Ready(())
    })
    .await;
    assert_eq!(pool.queued(), 1);
    assert_eq!(pool.queued_items(), 1);
    drop(call);

    release.send(()).expect("release");
    blocker.await.expect("join").expect("blocker");
    pool.run(|_| ())
        .await
        .expect("probe runs after the abandoned batch");
    assert_eq!(pool.abandoned(), 1, "the batch was skipped, not signed");
    assert_eq!(pool.queued_items(), 0, "its room was given back");
}

/// Raw HTTP/2 requests with out-of-spec `grpc-timeout` values: none may panic a handler
/// (the stream must end with a gRPC status), and out-of-spec values are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_spec_grpc_timeout_headers_never_panic() {
    use prost::Message as _;
    let server = start(anonymous_config("")).await;
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (h2, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut h2 = h2.ready().await.expect("ready");
    let calls: [(&str, Vec<u8>); 3] = [
        (
            "/cdnsign.v1.Purger/GetPurge",
            cdnsign::proto::GetPurgeRequest {
                purge_id: "pg_missing".into(),
            }
            .encode_to_vec(),
        ),
        (
            "/cdnsign.v1.Purger/WatchPurge",
            cdnsign::proto::WatchPurgeRequest {
                purge_id: "pg_missing".into(),
            }
            .encode_to_vec(),
        ),
        (
            "/cdnsign.v1.Signer/SignUrls",
            SignUrlsRequest {
                items: vec![url("https://d.example/t.ts")],
                ttl_seconds: 60,
                ..SignUrlsRequest::default()
            }
            .encode_to_vec(),
        ),
    ];
    for timeout in [
        "18446744073709551615S",
        "123456789H",
        "99999999H",
        "-5S",
        "5x",
        "S",
        "\u{7f}1S",
    ] {
        for (path, body) in &calls {
            let Ok(value) = http::HeaderValue::from_bytes(timeout.as_bytes()) else {
                continue;
            };
            let req = http::Request::post(format!("http://{}{path}", server.addr))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("grpc-timeout", value)
                .body(())
                .expect("request");
            let (response, mut send) = h2.send_request(req, false).expect("send");
            let mut framed = vec![0u8];
            framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
            framed.extend_from_slice(body);
            send.send_data(framed.into(), true).expect("body");
            let response = tokio::time::timeout(Duration::from_secs(10), response)
                .await
                .expect("an answer in time")
                .unwrap_or_else(|e| {
                    panic!("{path} with grpc-timeout {timeout:?}: stream reset: {e}")
                });
            let status = if let Some(s) = response.headers().get("grpc-status") {
                s.to_str().expect("ascii").to_owned()
            } else {
                let mut body = response.into_body();
                while let Some(chunk) = body.data().await {
                    let chunk = chunk.expect("data");
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                let trailers = body
                    .trailers()
                    .await
                    .unwrap_or_else(|e| panic!("{path} {timeout:?}: reset: {e}"))
                    .expect("trailers");
                trailers["grpc-status"].to_str().expect("ascii").to_owned()
            };
            let want = if path.contains("Purge") { "5" } else { "0" };
            assert_eq!(status, want, "{path} with grpc-timeout {timeout:?}");
        }
    }
    server.stop().await.expect("stop");
}

/// Request-level refusals named as the proto and README promise: no items is
/// INVALID_ARGUMENT; a message over `max_message_bytes` is RESOURCE_EXHAUSTED naming the
/// limit, however large (it is refused from its header, unread), on unary and streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_oversized_requests_get_the_documented_codes() {
    let mut cfg = anonymous_config("");
    cfg.server.max_message_bytes = 4096;
    let server = start(cfg).await;
    let mut c = SignerClient::connect(server.url())
        .await
        .expect("connect")
        .max_encoding_message_size(usize::MAX);
    let err = c
        .sign_urls(SignUrlsRequest {
            ttl_seconds: 60,
            ..SignUrlsRequest::default()
        })
        .await
        .expect_err("no items");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("items"), "{}", err.message());

    for n in [100usize, 100_000] {
        let big = SignUrlsRequest {
            items: (0..n)
                .map(|i| url(&format!("https://d.example/{i}/{}", "x".repeat(40))))
                .collect(),
            ttl_seconds: 60,
            ..SignUrlsRequest::default()
        };
        let err = c.sign_urls(big.clone()).await.expect_err("too big");
        assert_eq!(err.code(), Code::ResourceExhausted, "{n} items: {err:?}");
        assert!(
            err.message().contains("max_message_bytes limit of 4096"),
            "{}",
            err.message()
        );
        let small = SignUrlsRequest {
            items: vec![url("https://d.example/ok.ts")],
            ttl_seconds: 60,
            ..SignUrlsRequest::default()
        };
        let mut responses = c
            .sign_urls_stream(tokio_stream::iter(vec![small, big]))
            .await
            .expect("stream")
            .into_inner();
        let first = responses
            .message()
            .await
            .expect("first batch")
            .expect("a response");
        assert_eq!(first.signed, 1);
        let err = responses
            .message()
            .await
            .expect_err("the oversized batch ends the stream");
        assert_eq!(
            err.code(),
            Code::ResourceExhausted,
            "stream, {n} items: {err:?}"
        );
    }
    server.stop().await.expect("stop");
}
