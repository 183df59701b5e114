//! Who may sign what: identity (bearer token, mTLS), grants (keys, URL prefixes, TTL),
//! prefix escapes, rate limits and load shedding, over the real server.

mod common;

use std::time::Duration;

use cdnsign::config::Config;
use cdnsign::proto::signer_client::SignerClient;
use cdnsign::proto::{SignItem, SignUrlsRequest, item_error, sign_url_result};
use common::{KEY_ID, repo, start};
use sha2::{Digest as _, Sha256};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const TOKEN: &str = "playlist-generator-token-TEST-ONLY";
const PREFIX: &str = "https://d111111abcdef8.cloudfront.net/hls/";

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

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
        hash = sha256_hex(TOKEN),
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

#[tokio::test]
async fn token_and_mtls_clients_get_only_their_keys_prefixes_and_ttl() {
    let server = start(config("", "")).await;
    let escapes = [
        "https://d111111abcdef8.cloudfront.net/hls/../admin/a.ts",
        "https://d111111abcdef8.cloudfront.net/hls/%2e%2e/admin/a.ts",
        "https://d111111abcdef8.cloudfront.net/hls%2F..%2Fadmin/a.ts",
        "https://d111111abcdef8.cloudfront.net:8443/hls/a.ts",
        "http://d111111abcdef8.cloudfront.net/hls/a.ts",
        "https://d111111abcdef8.cloudfront.net.evil.example/hls/a.ts",
        "https://other.cloudfront.net/hls/a.ts",
    ];
    for (who, token, cert) in [("token", Some(TOKEN), None), ("mtls", None, Some("client"))] {
        let mut c = SignerClient::new(channel(server.addr, cert).await);
        let mut items = vec![url(&format!("{PREFIX}a/seg1.ts"))];
        items.extend(escapes.iter().map(|u| url(u)));
        // A wildcard resource that reaches outside the prefix.
        items.push(SignItem {
            url: format!("{PREFIX}a/seg2.ts"),
            policy_resource: "https://d111111abcdef8.cloudfront.net/*".into(),
            ..SignItem::default()
        });
        items.push(SignItem {
            url: format!("{PREFIX}a/seg3.ts"),
            policy_resource: format!("{PREFIX}a/*"),
            ..SignItem::default()
        });
        // A key the client was not granted.
        items.push(SignItem {
            url: format!("{PREFIX}a/seg4.ts"),
            key_id: "KOTHER".into(),
            ..SignItem::default()
        });
        // TTL above the client's 3600 s cap (the server allows a week).
        items.push(SignItem {
            url: format!("{PREFIX}a/seg5.ts"),
            ttl_seconds: 7200,
            ..SignItem::default()
        });
        let resp = c
            .sign_urls(request(items, token))
            .await
            .unwrap_or_else(|e| panic!("{who}: {e:?}"))
            .into_inner();
        let codes = outcome_codes(&resp);
        let denied = Some(item_error::Code::PermissionDenied);
        assert_eq!(codes[0], None, "{who}: in-prefix URL signs");
        for (i, u) in escapes.iter().enumerate() {
            assert_eq!(codes[i + 1], denied, "{who}: escape {u} must be denied");
        }
        let n = escapes.len();
        assert_eq!(codes[n + 1], denied, "{who}: wide wildcard resource");
        assert_eq!(codes[n + 2], None, "{who}: wildcard inside the prefix");
        assert_eq!(codes[n + 3], denied, "{who}: ungranted key");
        assert_eq!(
            codes[n + 4],
            Some(item_error::Code::InvalidArgument),
            "{who}: TTL over the client's cap"
        );
        if let Some(sign_url_result::Outcome::Error(e)) = &resp.results[n + 4].outcome {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_sheds_with_resource_exhausted_and_health_still_answers() {
    let server = start(config("max_concurrent_requests = 1", "")).await;
    let ch = channel(server.addr, None).await;
    let big: Vec<SignItem> = (0..6000)
        .map(|i| url(&format!("{PREFIX}x/{i}.ts")))
        .collect();
    let mut first = SignerClient::new(ch.clone()).max_decoding_message_size(64 << 20);
    let running = tokio::spawn(async move { first.sign_urls(request(big, Some(TOKEN))).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = SignerClient::new(ch.clone());
    let err = second
        .sign_urls(request(vec![url(&format!("{PREFIX}y.ts"))], Some(TOKEN)))
        .await
        .expect_err("shed while the first is running");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("max_concurrent_requests"),
        "{}",
        err.message()
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    assert_eq!(
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("health")
            .get_ref()
            .status,
        1
    );
    let done = running
        .await
        .expect("task")
        .expect("first completes")
        .into_inner();
    assert_eq!(done.signed, 6000);
    server.stop().await.expect("stop");
}
