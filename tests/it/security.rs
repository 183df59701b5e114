//! Who may sign what: identity (bearer token, mTLS), grants (keys, URL prefixes, TTL),
//! prefix escapes, rate limits and load shedding, over the real server.

use std::time::Duration;

use crate::common::{KEY_ID, repo, start};
use cdnsign::config::Config;
use cdnsign::proto::signer_client::SignerClient;
use cdnsign::proto::{SignItem, SignUrlsRequest, item_error, sign_url_result};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const TOKEN: &str = "playlist-generator-token-TEST-ONLY";
const PREFIX: &str = "https://d111111abcdef8.cloudfront.net/hls/";

fn config(extra_server: &str, extra_client: &str) -> Config {
    let tls = repo("tests/fixtures/tls");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
{extra_server}
[server.tls]
cert = "{tls}/server.pem"
key = "{tls}/server.key"
client_ca = "{tls}/ca.pem"
client_auth_optional = true
[metrics]
listen = ""
[signing]
threads = 2
max_ttl_seconds = 604800
[[keys]]
id = "{KEY_ID}"
path = "{key}"
[[keys]]
id = "KOTHER"
path = "{key2}"
[[clients]]
name = "playlist-generator"
token_sha256 = "{hash}"
cert_subject = "CN=playlist-generator"
keys = ["{KEY_ID}"]
url_prefixes = ["{PREFIX}"]
max_ttl_seconds = 3600
purge_targets = ["site"]
{extra_client}
"#,
        tls = tls.display(),
        key = repo("config/dev-keys/TEST-ONLY-cloudfront.pem").display(),
        key2 = repo("tests/fixtures/keys/rsa2-pkcs1.pem").display(),
        hash = crate::common::sha256_hex(TOKEN),
    );
    Config::from_toml_str(&text, &repo(".")).expect("config")
}

async fn channel(addr: std::net::SocketAddr, client_cert: Option<&str>) -> Channel {
    let dir = repo("tests/fixtures/tls");
    let read = |name: &str| std::fs::read(dir.join(name)).expect("fixture");
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .domain_name("localhost");
    if let Some(name) = client_cert {
        tls = tls.identity(Identity::from_pem(
            read(&format!("{name}.pem")),
            read(&format!("{name}.key")),
        ));
    }
    Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect")
}

fn request(items: Vec<SignItem>, token: Option<&str>) -> tonic::Request<SignUrlsRequest> {
    let mut req = tonic::Request::new(SignUrlsRequest {
        items,
        key_id: KEY_ID.into(),
        ttl_seconds: 600,
        ..SignUrlsRequest::default()
    });
    if let Some(t) = token {
        let v: MetadataValue<_> = format!("Bearer {t}").parse().expect("meta");
        req.metadata_mut().insert("authorization", v);
    }
    req
}

fn url(u: &str) -> SignItem {
    SignItem {
        url: u.into(),
        ..SignItem::default()
    }
}

#[tokio::test]
async fn a_config_without_clients_or_the_switch_does_not_start() {
    let err = Config::from_toml_str("[server]\nlisten = \"127.0.0.1:0\"\n", &repo("."))
        .expect_err("must refuse");
    assert!(err.to_string().contains("allow_unauthenticated"), "{err}");
}

#[tokio::test]
async fn no_identity_or_a_wrong_one_is_unauthenticated_but_health_answers() {
    let server = start(config("", "")).await;
    let ch = channel(server.addr, None).await;
    let mut c = SignerClient::new(ch.clone());
    for token in [None, Some("wrong-token")] {
        let err = c
            .sign_urls(request(vec![url(&format!("{PREFIX}a.ts"))], token))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}: {err:?}");
    }
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health needs no identity");
    assert_eq!(status.get_ref().status, 1);
    // An mTLS certificate that chains to the CA but is not configured: refused too.
    let mut other = SignerClient::new(channel(server.addr, Some("other-client")).await);
    let err = other
        .sign_urls(request(vec![url(&format!("{PREFIX}a.ts"))], None))
        .await
        .expect_err("unlisted certificate");
    assert_eq!(err.code(), Code::Unauthenticated);
    server.stop().await.expect("stop");
}

fn outcome_codes(resp: &cdnsign::proto::SignUrlsResponse) -> Vec<Option<item_error::Code>> {
    resp.results
        .iter()
        .map(|r| match &r.outcome {
            Some(sign_url_result::Outcome::Error(e)) => Some(e.code()),
            _ => None,
        })
        .collect()
}

/// One attempt to sign outside the grant (tests/fixtures/escapes/grant_escapes.json).
#[derive(serde::Deserialize)]
struct Escape {
    field: String,
    text: String,
    code: String,
}

fn escapes() -> Vec<Escape> {
    #[derive(serde::Deserialize)]
    struct File {
        prefix: String,
        escapes: Vec<Escape>,
    }
    let text = std::fs::read_to_string(repo("tests/fixtures/escapes/grant_escapes.json"))
        .expect("escape fixtures");
    let file: File = serde_json::from_str(&text).expect("fixture JSON");
    assert_eq!(file.prefix, PREFIX);
    file.escapes
}

impl Escape {
    fn item(&self, i: usize) -> SignItem {
        match self.field.as_str() {
            "url" => url(&self.text),
            "policy_resource" => SignItem {
                url: format!("{PREFIX}ok/{i}.ts"),
                policy_resource: self.text.clone(),
                ..SignItem::default()
            },
            other => panic!("fixture field {other}"),
        }
    }

    fn code(&self) -> item_error::Code {
        item_error::Code::from_str_name(&self.code).expect("fixture code")
    }
}

/// The escapes, then one in-prefix URL and one in-prefix wildcard that must sign.
fn escape_items() -> (Vec<SignItem>, Vec<Option<item_error::Code>>) {
    let all = escapes();
    let mut items: Vec<SignItem> = all.iter().enumerate().map(|(i, e)| e.item(i)).collect();
    let mut want: Vec<Option<item_error::Code>> = all.iter().map(|e| Some(e.code())).collect();
    items.push(url(&format!("{PREFIX}a/seg1.ts")));
    items.push(SignItem {
        url: format!("{PREFIX}a/seg2.ts"),
        policy_resource: format!("{PREFIX}a/*"),
        ..SignItem::default()
    });
    want.extend([None, None]);
    (items, want)
}

fn assert_codes(who: &str, got: &[Option<item_error::Code>], want: &[Option<item_error::Code>]) {
    let all = escapes();
    assert_eq!(got.len(), want.len(), "{who}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let what = all.get(i).map_or("an in-prefix item", |e| e.text.as_str());
        assert_eq!(g, w, "{who}: item {i} ({what})");
    }
}

/// Every escape in the fixture, and its variants, refused through every RPC that signs,
/// for a token client and an mTLS client.
#[tokio::test]
async fn grant_escapes_are_refused_on_every_signing_rpc() {
    use cdnsign::proto::{SignCookiesRequest, sign_cookies_result};
    let server = start(config("", "")).await;
    let (items, want) = escape_items();
    for (who, token, cert) in [("token", Some(TOKEN), None), ("mtls", None, Some("client"))] {
        let ch = channel(server.addr, cert).await;
        let mut c = SignerClient::new(ch);
        let resp = c
            .sign_urls(request(items.clone(), token))
            .await
            .unwrap_or_else(|e| panic!("{who}: {e:?}"))
            .into_inner();
        assert_codes(&format!("{who} SignUrls"), &outcome_codes(&resp), &want);

        let mut req = tonic::Request::new(SignCookiesRequest {
            items: items.clone(),
            key_id: KEY_ID.into(),
            ttl_seconds: 600,
            ..SignCookiesRequest::default()
        });
        if let Some(t) = token {
            req.metadata_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("meta"),
            );
        }
        let resp = c.sign_cookies(req).await.expect("cookies").into_inner();
        let got: Vec<_> = resp
            .results
            .iter()
            .map(|r| match &r.outcome {
                Some(sign_cookies_result::Outcome::Error(e)) => Some(e.code()),
                _ => None,
            })
            .collect();
        assert_codes(&format!("{who} SignCookies"), &got, &want);

        let batch = request(items.clone(), token);
        let (meta, ext, msg) = batch.into_parts();
        let mut stream_req =
            tonic::Request::from_parts(meta, ext, tokio_stream::iter(vec![msg.clone(), msg]));
        stream_req.set_timeout(Duration::from_secs(30));
        let mut responses = c
            .sign_urls_stream(stream_req)
            .await
            .expect("stream")
            .into_inner();
        let mut n = 0;
        while let Some(resp) = responses.message().await.expect("stream message") {
            assert_codes(
                &format!("{who} SignUrlsStream[{n}]"),
                &outcome_codes(&resp),
                &want,
            );
            n += 1;
        }
        assert_eq!(n, 2, "{who}: one response per batch");
    }
    // Without a grant the dot segments are still refused: no answer is safe.
    let open = start(crate::common::test_config("", "")).await;
    let mut c = SignerClient::connect(open.url()).await.expect("connect");
    let dotted: Vec<SignItem> = escapes()
        .iter()
        .enumerate()
        .filter(|(_, e)| e.code == "INVALID_ARGUMENT")
        .map(|(i, e)| e.item(i))
        .collect();
    let resp = c
        .sign_urls(SignUrlsRequest {
            items: dotted.clone(),
            ttl_seconds: 60,
            ..SignUrlsRequest::default()
        })
        .await
        .expect("anonymous call")
        .into_inner();
    assert_eq!(resp.failed as usize, dotted.len());
    for r in &resp.results {
        match &r.outcome {
            Some(sign_url_result::Outcome::Error(e)) => {
                assert_eq!(e.code(), item_error::Code::InvalidArgument, "{e:?}");
                assert!(
                    e.field.ends_with(".url") || e.field.ends_with(".policy_resource"),
                    "{e:?}"
                );
                assert!(e.message.contains("dot segment"), "{e:?}");
            }
            other => panic!("a dot segment was signed: {other:?}"),
        }
    }
    open.stop().await.expect("stop");
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn token_and_mtls_clients_get_only_their_keys_and_ttl() {
    let server = start(config("", "")).await;
    for (who, token, cert) in [("token", Some(TOKEN), None), ("mtls", None, Some("client"))] {
        let mut c = SignerClient::new(channel(server.addr, cert).await);
        let items = vec![
            url(&format!("{PREFIX}a/seg1.ts")),
            // A key the client was not granted.
            SignItem {
                url: format!("{PREFIX}a/seg4.ts"),
                key_id: "KOTHER".into(),
                ..SignItem::default()
            },
            // TTL above the client's 3600 s cap (the server allows a week).
            SignItem {
                url: format!("{PREFIX}a/seg5.ts"),
                ttl_seconds: 7200,
                ..SignItem::default()
            },
        ];
        let resp = c
            .sign_urls(request(items, token))
            .await
            .unwrap_or_else(|e| panic!("{who}: {e:?}"))
            .into_inner();
        let codes = outcome_codes(&resp);
        assert_eq!(codes[0], None, "{who}: in-prefix URL signs");
        assert_eq!(
            codes[1],
            Some(item_error::Code::PermissionDenied),
            "{who}: ungranted key"
        );
        assert_eq!(
            codes[2],
            Some(item_error::Code::InvalidArgument),
            "{who}: TTL over the client's cap"
        );
        if let Some(sign_url_result::Outcome::Error(e)) = &resp.results[2].outcome {
            assert!(e.message.contains("limit of 3600"), "{}", e.message);
        }
    }
    // The same subject from another CA does not even get through the TLS handshake.
    let rogue = Channel::from_shared(format!("https://{}", server.addr))
        .expect("uri")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(
                    std::fs::read(repo("tests/fixtures/tls/ca.pem")).expect("ca"),
                ))
                .domain_name("localhost")
                .identity(Identity::from_pem(
                    std::fs::read(repo("tests/fixtures/tls/rogue-client.pem")).expect("pem"),
                    std::fs::read(repo("tests/fixtures/tls/rogue-client.key")).expect("key"),
                )),
        )
        .expect("tls")
        .connect()
        .await;
    if let Ok(ch) = rogue {
        let err = SignerClient::new(ch)
            .sign_urls(request(vec![url(&format!("{PREFIX}a.ts"))], None))
            .await
            .expect_err("rogue CA");
        assert_ne!(err.code(), Code::Ok);
    }
    server.stop().await.expect("stop");
}

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

/// Whether a fresh mTLS connection with `cert` can sign.
async fn mtls_signs(addr: std::net::SocketAddr, cert: &str) -> bool {
    let dir = repo("tests/fixtures/tls");
    let read = |name: &str| std::fs::read(dir.join(name)).expect("fixture");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .domain_name("localhost")
        .identity(Identity::from_pem(
            read(&format!("{cert}.pem")),
            read(&format!("{cert}.key")),
        ));
    let Ok(ch) = Channel::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
    else {
        return false;
    };
    SignerClient::new(ch)
        .sign_urls(request(vec![url(&format!("{PREFIX}a.ts"))], None))
        .await
        .is_ok_and(|r| r.get_ref().signed == 1)
}

/// A reload swaps the client CA (and certificate) for new connections: the CA file is
/// replaced and the configuration reloaded, and from then on the new CA's client is
/// admitted and the old one's is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_the_client_ca_for_new_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = repo("tests/fixtures/tls");
    let ca = dir.path().join("clients-ca.pem");
    std::fs::copy(tls.join("ca.pem"), &ca).expect("copy");
    let path = dir.path().join("cdnsign.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncert = \"{tls}/server.pem\"\nkey = \"{tls}/server.key\"\nclient_ca = \"clients-ca.pem\"\nclient_auth_optional = true\n[metrics]\nlisten = \"\"\n[signing]\nthreads = 1\ndefault_key_id = \"{KEY_ID}\"\n[[keys]]\nid = \"{KEY_ID}\"\npath = \"{key}\"\n[[clients]]\nname = \"playlist-generator\"\ncert_subject = \"CN=playlist-generator\"\nkeys = [\"{KEY_ID}\"]\nurl_prefixes = [\"{PREFIX}\"]\n",
            tls = tls.display(),
            key = repo("config/dev-keys/TEST-ONLY-cloudfront.pem").display(),
        ),
    )
    .expect("write config");
    let server = cdnsign::server::Server::bind(Config::load(Some(&path)).expect("config"))
        .await
        .expect("bind");
    let live = server.live();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    assert!(
        mtls_signs(addr, "client").await,
        "the configured CA's client"
    );
    assert!(
        !mtls_signs(addr, "rogue-client").await,
        "another CA's client"
    );

    std::fs::copy(tls.join("rogue-ca.pem"), &ca).expect("rotate the CA file");
    live.reload().expect("reload");
    assert!(
        mtls_signs(addr, "rogue-client").await,
        "the new CA's client"
    );
    assert!(!mtls_signs(addr, "client").await, "the old CA's client");

    // A broken CA file is refused and the current one stays.
    std::fs::write(&ca, "not a certificate").expect("break");
    let err = live.reload().expect_err("refused");
    assert!(err.to_string().contains("client_ca"), "{err}");
    assert!(
        mtls_signs(addr, "rogue-client").await,
        "still the last good CA"
    );
    let _ = stop.send(());
    task.await.expect("task").expect("stop");
}
