//! Operability: metrics families after real calls, request ids, graceful shutdown with an
//! in-flight batch, health turning NOT_SERVING before the listener closes.

use std::time::Duration;

use crate::common::{start, test_config};
use cdnsign::proto::signer_client::SignerClient;
use cdnsign::proto::{SignCookiesRequest, SignItem, SignUrlsRequest};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::transport::Channel;

fn item(url: impl Into<String>) -> SignItem {
    SignItem {
        url: url.into(),
        ..SignItem::default()
    }
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of one series in a scrape; 0 when absent.
fn value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_every_signing_family_and_no_url_or_signature() {
    let mut config = test_config("", "");
    config.metrics.listen = Some("127.0.0.1:0".parse().expect("addr"));
    let server = start(config).await;
    let metrics_addr = server.metrics.expect("metrics listener");
    let addr = server.addr;

    let mut c = SignerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let mut req = tonic::Request::new(SignUrlsRequest {
        items: vec![item("https://d.example/secret-path/a.ts"), item("nope")],
        ttl_seconds: 60,
        ..SignUrlsRequest::default()
    });
    req.metadata_mut()
        .insert("x-request-id", "test-req-42".parse().expect("meta"));
    let resp = c.sign_urls(req).await.expect("sign");
    assert_eq!(
        resp.metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("test-req-42"),
        "request id is echoed"
    );
    let fresh = c
        .sign_urls(SignUrlsRequest {
            items: vec![item("https://d.example/b.ts")],
            ttl_seconds: 60,
            ..SignUrlsRequest::default()
        })
        .await
        .expect("sign");
    let generated = fresh
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("a generated request id");
    assert_eq!(generated.len(), 36, "{generated}");
    c.sign_cookies(SignCookiesRequest {
        items: vec![item("https://d.example/c.ts")],
        ttl_seconds: 60,
        ..SignCookiesRequest::default()
    })
    .await
    .expect("cookies");
    let over = c
        .sign_urls(SignUrlsRequest {
            items: (0..10_001)
                .map(|i| item(format!("https://d/{i}")))
                .collect(),
            ttl_seconds: 60,
            ..SignUrlsRequest::default()
        })
        .await;
    assert!(over.is_err());

    let text = scrape(metrics_addr).await;
    for needle in [
        r#"cdnsign_urls_signed_total{key_id="K2JCJMDEHXQW5F",algorithm="rsa_sha1"}"#,
        r#"cdnsign_cookies_signed_total{key_id="K2JCJMDEHXQW5F",algorithm="rsa_sha1"}"#,
        r#"cdnsign_signatures_total{key_id="K2JCJMDEHXQW5F",algorithm="rsa_sha1"}"#,
        r#"cdnsign_item_errors_total{code="invalid_argument"} "#,
        r#"cdnsign_batch_items_bucket{kind="url","#,
        r#"cdnsign_batch_items_bucket{kind="cookie","#,
        "cdnsign_sign_queue_wait_seconds_bucket",
        "cdnsign_sign_duration_seconds_bucket",
        r#"cdnsign_sign_batches_total{site="pool"} "#,
        r#"cdnsign_sign_batches_total{site="caller_thread"} "#,
        // Gauges every server in this process sets (the recorder is global): present, not
        // exact.
        "cdnsign_pool_queue_depth ",
        "cdnsign_pool_queued_items ",
        "cdnsign_pool_busy_threads ",
        "cdnsign_pool_threads ",
        "cdnsign_keys_loaded ",
        r#"cdnsign_key_reloads_total{outcome="success"}"#,
        // Other tests in this process call too (the recorder is global): no exact counts.
        r#"cdnsign_grpc_requests_total{method="cdnsign.v1.Signer/SignUrls",code="OK"} "#,
        r#"cdnsign_grpc_requests_total{method="cdnsign.v1.Signer/SignUrls",code="INVALID_ARGUMENT"} "#,
        r#"cdnsign_grpc_request_duration_seconds_bucket{method="cdnsign.v1.Signer/SignCookies","#,
        "cdnsign_serving ",
    ] {
        assert!(text.contains(needle), "missing {needle}\n{text}");
    }
    for secret in [
        "secret-path",
        "Signature",
        "Policy=",
        "d.example",
        "test-req-42",
    ] {
        assert!(!text.contains(secret), "metrics leak {secret:?}");
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_then_finishes_the_batch_in_flight() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let mut config = test_config("", "");
    config.server.drain_seconds = 1;
    let server = cdnsign::server::Server::bind(config).await.expect("bind");
    let (addr, pool) = (server.local_addr(), server.pool());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut signer = SignerClient::new(channel.clone()).max_decoding_message_size(64 << 20);
    let mut health = HealthClient::new(channel);

    // Every pool thread held, so the batch is still queued when shutdown starts.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = std::sync::Arc::new(std::sync::Mutex::new(released));
    let mut blockers = Vec::new();
    for _ in 0..pool.threads() {
        let (started, running) = tokio::sync::oneshot::channel::<()>();
        let (p, released) = (
            std::sync::Arc::clone(&pool),
            std::sync::Arc::clone(&released),
        );
        blockers.push(tokio::spawn(async move {
            p.run(move |_| {
                let _ = started.send(());
                let _ = released.lock().map(|r| r.recv());
            })
            .await
        }));
        running.await.expect("pool thread held");
    }
    let batch = SignUrlsRequest {
        items: (0..8000)
            .map(|i| item(format!("https://d.example/v/seg{i}.ts")))
            .collect(),
        ttl_seconds: 600,
        ..SignUrlsRequest::default()
    };
    let in_flight = tokio::spawn(async move { signer.sign_urls(batch).await });
    // Until the batch waits for the pool (bounded: a few yields in practice).
    let since = std::time::Instant::now();
    while pool.queued() == 0 {
        assert!(
            since.elapsed() < Duration::from_secs(20),
            "the batch never reached the pool"
        );
        tokio::task::yield_now().await;
    }
    let _ = stop.send(());
    let stopping = serving;

    // During the drain window health answers NOT_SERVING (2) on the open connection.
    let mut saw_not_serving = false;
    for _ in 0..40 {
        match health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
        {
            Ok(r) if r.get_ref().status == 2 => {
                saw_not_serving = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(_) => break,
        }
    }
    assert!(
        saw_not_serving,
        "health never reported NOT_SERVING during the drain"
    );
    // Every service says so (set before the server-wide status checked above).
    for service in ["cdnsign.v1.Signer", "cdnsign.v1.Purger"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health during the drain")
            .into_inner()
            .status;
        assert_eq!(status, 2, "{service} during the drain");
    }

    // The pool is let go only now: the batch in flight since before the shutdown finishes.
    for _ in 0..blockers.len() {
        release.send(()).expect("release");
    }
    for b in blockers {
        b.await
            .expect("blocker")
            .expect("the blocker ran on the pool");
    }
    let resp = in_flight
        .await
        .expect("task")
        .expect("the in-flight batch completes")
        .into_inner();
    assert_eq!((resp.signed, resp.failed), (8000, 0));
    stopping.await.expect("task").expect("server exits cleanly");
}

/// Small ECDSA requests are signed on the gRPC worker (`site="caller_thread"`); anything
/// with an RSA key, or more items than `inline_ecdsa_max_items`, goes to the pool. Every
/// URL verifies either way. (With multi-buffer signing off: with it on, small RSA requests
/// share lane flushes instead, `multibuffer.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_ecdsa_requests_skip_the_pool_and_rsa_never_does() {
    use cdnsign::proto::sign_url_result::Outcome;
    use cdnsign::signing::verify::{VerifyKey, verify_url};

    let ec_key = crate::common::repo("tests/fixtures/keys/ec-p256.pem");
    let mut config = test_config(
        "inline_ecdsa_max_items = 2\nmultibuffer = \"off\"",
        &format!(
            "[[keys]]\nid = \"KECTEST\"\npath = \"{}\"\nalgorithm = \"sha256\"\n",
            ec_key.display()
        ),
    );
    config.metrics.listen = Some("127.0.0.1:0".parse().expect("addr"));
    let server = start(config).await;
    let metrics_addr = server.metrics.expect("metrics listener");
    let addr = server.addr;
    let mut c = SignerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");

    let read = |rel: &str| std::fs::read_to_string(crate::common::repo(rel)).expect("key file");
    let rsa_pub = VerifyKey::from_pem(&read("config/dev-keys/TEST-ONLY-cloudfront.pub.pem"))
        .expect("rsa pub");
    let ec_pub = VerifyKey::from_pem(&read("tests/fixtures/keys/ec-p256.pub.pem")).expect("ec");
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("time");
    let ec = |n: u32| SignItem {
        key_id: "KECTEST".into(),
        ..item(format!("https://d.example/ec/{n}.ts"))
    };
    // (items, expected site): one EC URL and two EC URLs here; EC + RSA, three EC URLs
    // (over the limit of 2) and one RSA URL on the pool.
    let cases: [(Vec<SignItem>, &str); 5] = [
        (vec![ec(1)], "caller_thread"),
        (vec![ec(2), ec(3)], "caller_thread"),
        (vec![ec(4), item("https://d.example/rsa/1.ts")], "pool"),
        (vec![ec(5), ec(6), ec(7)], "pool"),
        (vec![item("https://d.example/rsa/2.ts")], "pool"),
    ];
    // The recorder is process-wide and other tests in this binary sign RSA at the same
    // time: compare before and after, exactly for what only this test does.
    let before = scrape(metrics_addr).await;
    for (items, site) in cases {
        let resp = c
            .sign_urls(SignUrlsRequest {
                items,
                ttl_seconds: 60,
                ..SignUrlsRequest::default()
            })
            .await
            .expect("sign")
            .into_inner();
        assert_eq!(resp.failed, 0, "{site}: {resp:?}");
        for r in &resp.results {
            let Some(Outcome::SignedUrl(url)) = &r.outcome else {
                panic!("{site}: {r:?}");
            };
            let key = if url.contains("Key-Pair-Id=KECTEST") {
                &ec_pub
            } else {
                &rsa_pub
            };
            let v = verify_url(url, key, now, None);
            assert!(v.valid(), "{url}: {:?}", v.problems);
        }
    }

    let after = scrape(metrics_addr).await;
    let delta = |series: &str| value(&after, series) - value(&before, series);
    // At least this test's two (other tests in this process may sign small ECDSA
    // requests at the same moment: the recorder is process-wide).
    assert!(delta(r#"cdnsign_sign_batches_total{site="caller_thread"}"#) >= 2.0);
    assert!(delta(r#"cdnsign_sign_batches_total{site="pool"}"#) >= 3.0);
    assert_eq!(
        delta(r#"cdnsign_signatures_total{key_id="KECTEST",algorithm="ecdsa_sha256"}"#),
        7.0
    );
    server.stop().await.expect("clean stop");
}

/// A playlist counts what its caller gets: in `SHARED_POLICY` one signed URL per URI (the
/// shared policy's own item is none), in `COOKIES` one cookie set and no URLs. A key id of
/// this test's own keeps other tests' calls out of the counts (metrics are process-wide).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playlists_count_the_urls_and_cookie_sets_they_return() {
    use cdnsign::proto::{PlaylistMode, SignPlaylistRequest};

    const KEY: &str = "KPLAYLISTCOUNT";
    let key = crate::common::repo("config/dev-keys/TEST-ONLY-cloudfront.pem");
    let mut config = test_config(
        "",
        &format!("[[keys]]\nid = \"{KEY}\"\npath = \"{}\"\n", key.display()),
    );
    config.metrics.listen = Some("127.0.0.1:0".parse().expect("addr"));
    let server = start(config).await;
    let metrics_addr = server.metrics.expect("metrics listener");
    let mut c = SignerClient::connect(server.url()).await.expect("connect");
    let playlist = (0..5).fold(
        String::from("#EXTM3U\n#EXT-X-TARGETDURATION:4\n"),
        |t, i| t + &format!("#EXTINF:4,\ns{i}.ts\n"),
    );
    let urls = format!(r#"cdnsign_urls_signed_total{{key_id="{KEY}",algorithm="rsa_sha1"}}"#);
    let cookies = format!(r#"cdnsign_cookies_signed_total{{key_id="{KEY}",algorithm="rsa_sha1"}}"#);
    let sign = |mode: PlaylistMode| SignPlaylistRequest {
        playlist: playlist.clone(),
        base_url: "https://d111111abcdef8.cloudfront.net/hls/a/stream.m3u8".into(),
        mode: mode.into(),
        key_id: KEY.into(),
        ttl_seconds: 600,
        ..SignPlaylistRequest::default()
    };
    let before = scrape(metrics_addr).await;
    let shared = c
        .sign_playlist(sign(PlaylistMode::SharedPolicy))
        .await
        .expect("shared")
        .into_inner();
    assert_eq!((shared.uris, shared.rewritten), (5, 5));
    let after_shared = scrape(metrics_addr).await;
    assert_eq!(
        value(&after_shared, &urls) - value(&before, &urls),
        5.0,
        "five URIs signed, not six"
    );
    let cookie = c
        .sign_playlist(sign(PlaylistMode::Cookies))
        .await
        .expect("cookies")
        .into_inner();
    assert!(cookie.cookies.is_some());
    let after_cookies = scrape(metrics_addr).await;
    assert_eq!(
        value(&after_cookies, &cookies) - value(&after_shared, &cookies),
        1.0,
        "one cookie set"
    );
    assert_eq!(
        value(&after_cookies, &urls),
        value(&after_shared, &urls),
        "no URLs in COOKIES mode"
    );
    server.stop().await.expect("stop");
}
