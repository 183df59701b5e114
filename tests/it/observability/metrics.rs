//! Metrics and error details: every family triggered once, the scrape passing `promtool check
//! metrics`, and refusals' details decoded by Python grpcio + grpcio-status.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::DIST;
use crate::common::{KEY_ID, repo};
use crate::purge_support::cloudfront_fake::CloudFrontFake;
use crate::purge_support::{Binary, free_port, python};
use cdnsign::proto::signer_client::SignerClient;
use cdnsign::proto::{PurgeKind, PurgeRequest, SignItem, SignUrlsRequest};

const ALPHA: &str = "alpha-token-TEST-ONLY";
const BETA: &str = "beta-token-TEST-ONLY";

fn config(dir: &Path, port: u16, metrics_port: u16, cf_endpoint: &str, key_path: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
max_concurrent_requests = 1
shutdown_grace_seconds = 1
[metrics]
listen = "127.0.0.1:{metrics_port}"
[signing]
default_key_id = "{KEY_ID}"
threads = 1
[[keys]]
id = "{KEY_ID}"
path = "{key_path}"
[[clients]]
name = "alpha"
token_sha256 = "{alpha}"
keys = ["{KEY_ID}"]
url_prefixes = ["https://d111111abcdef8.cloudfront.net/ok/"]
urls_per_second = 1
urls_burst = 2
purge_targets = ["site"]
[[clients]]
name = "beta"
token_sha256 = "{beta}"
keys = ["{KEY_ID}"]
url_prefixes = ["https://d111111abcdef8.cloudfront.net/ok/"]
[purge]
data_dir = "{data}"
poll_interval_ms = 100
coalesce_window_ms = 0
watch_interval_ms = 100
retry_base_ms = 20
retry_max_ms = 200
background_deadline_seconds = 5
[[targets]]
name = "site"
provider = "cloudfront"
distribution_id = "{DIST}"
endpoint = "{cf_endpoint}"
"#,
        alpha = crate::common::sha256_hex(ALPHA),
        beta = crate::common::sha256_hex(BETA),
        data = dir.join("data").display(),
    )
}

fn bearer<T>(mut req: tonic::Request<T>, token: &str) -> tonic::Request<T> {
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("meta"),
    );
    req.set_timeout(Duration::from_secs(10));
    req
}

async fn scrape(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_once_triggered_passes_promtool_and_error_details_decode_in_python() {
    let cf = CloudFrontFake::start(DIST, Duration::from_millis(100)).await;
    // CloudFront refuses this path: the purge's job fails (a purge error).
    cf.state.lock().expect("state").reject_paths = vec!["/refused".into()];
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, metrics_port) = (free_port(), free_port());
    let key = repo("config/dev-keys/TEST-ONLY-cloudfront.pem");
    let config_path = dir.path().join("cdnsign.toml");
    let good = config(
        dir.path(),
        port,
        metrics_port,
        &cf.endpoint,
        &key.display().to_string(),
    );
    std::fs::write(&config_path, &good).expect("config");
    let server = Binary::start(
        &config_path,
        port,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDOBSERVE"),
            ("AWS_SECRET_ACCESS_KEY", "observe-secret"),
        ],
    );

    // Before any purge, the purge counters of the configured provider are there at 0: a
    // first failure is then an increase Prometheus sees (CdnsignPurgeJobsFailing).
    let page = scrape(metrics_port).await;
    for series in [
        r#"cdnsign_purge_jobs_total{provider="cloudfront",outcome="failed"} 0"#,
        r#"cdnsign_purge_jobs_total{provider="cloudfront",outcome="completed"} 0"#,
        r#"cdnsign_purge_paths_total{provider="cloudfront",outcome="rejected"} 0"#,
    ] {
        assert!(page.contains(series), "{series} missing at start:\n{page}");
    }

    // Refusals of every kind, from a client we did not write, details decoded.
    let out = Command::new(python())
        .arg(repo("tests/python/error_details.py"))
        .args(["--addr", &server.addr.to_string()])
        .args(["--token", ALPHA, "--free-token", BETA])
        .output()
        .expect("run error_details.py");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("5 passed, 0 failed"), "{text}");

    // Signed URLs (the counters per key), then purges: one completed, one refused path,
    // one failed job.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut signer = SignerClient::new(channel);
    let signed = signer
        .sign_urls(bearer(
            tonic::Request::new(SignUrlsRequest {
                items: vec![SignItem {
                    url: "https://d111111abcdef8.cloudfront.net/ok/x.ts".into(),
                    ttl_seconds: 600,
                    ..SignItem::default()
                }],
                ..SignUrlsRequest::default()
            }),
            BETA,
        ))
        .await
        .expect("sign")
        .into_inner();
    assert_eq!(signed.signed, 1);
    let mut purger = server.client().await;
    for (paths, key) in [
        (
            vec!["/ok/a.css", "https://elsewhere.example.com/x.css"],
            "p1",
        ),
        (vec!["/refused.css"], "p2"),
    ] {
        let resp = purger
            .purge(bearer(
                tonic::Request::new(PurgeRequest {
                    target: "site".into(),
                    paths: paths.iter().map(|p| (*p).to_owned()).collect(),
                    kind: PurgeKind::File.into(),
                    idempotency_key: key.into(),
                    max_wait_seconds: 0,
                }),
                ALPHA,
            ))
            .await;
        // The refused one may fail on its first send (FAILED status on the call); the
        // other must be accepted.
        if key == "p1" {
            assert!(resp.is_ok(), "p1: {resp:?}");
        }
        if let Ok(resp) = resp {
            let watch = cdnsign::proto::WatchPurgeRequest {
                purge_id: resp.into_inner().purge_id,
            };
            let mut stream = purger
                .watch_purge(bearer(tonic::Request::new(watch), ALPHA))
                .await
                .expect("watch")
                .into_inner();
            while stream.message().await.expect("watch message").is_some() {}
        }
    }

    // A reload that must be refused: the key file is gone.
    std::fs::write(
        &config_path,
        good.replace(&key.display().to_string(), "/nonexistent/key.pem"),
    )
    .expect("config");
    server.signal("HUP");
    server.wait_for_log("config reload refused", Duration::from_secs(20));

    let page = scrape(metrics_port).await;
    for family in [
        "cdnsign_auth_failures_total",
        "cdnsign_items_denied_total",
        "cdnsign_rate_limited_total",
        "cdnsign_requests_shed_total",
        "cdnsign_config_reloads_total{outcome=\"failure\"}",
        "cdnsign_urls_signed_total",
        "cdnsign_purge_paths_total{provider=\"cloudfront\",outcome=\"rejected\"}",
        "cdnsign_purge_paths_total{provider=\"cloudfront\",outcome=\"failed\"}",
        "cdnsign_purge_jobs_total",
        "cdnsign_purge_paths_billed_total{target=\"site\"}",
        "cdnsign_upstream_request_duration_seconds_bucket",
        "grpc_server_started_total",
        "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"cdnsign.v1.Signer\",grpc_method=\"SignUrls\",grpc_code=\"Unauthenticated\"}",
        "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"cdnsign.v1.Signer\",grpc_method=\"SignUrls\",grpc_code=\"ResourceExhausted\"}",
        "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"cdnsign.v1.Signer\",grpc_method=\"SignUrls\",grpc_code=\"InvalidArgument\"}",
        "grpc_server_handled_total{grpc_type=\"bidi_stream\",grpc_service=\"cdnsign.v1.Signer\",grpc_method=\"SignUrlsStream\",grpc_code=\"OK\"}",
        "grpc_server_handling_seconds_bucket",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "cdnsign_build_info{version=",
    ] {
        assert!(
            page.lines().any(|l| l.starts_with(family)),
            "/metrics lacks {family}:\n{page}"
        );
    }
    assert!(
        !page.contains(ALPHA) && !page.contains(BETA),
        "a token in /metrics"
    );
    // The purge counters were made at 0 at start: what the purges did must show in them.
    let value = |series: &str| -> f64 {
        page.lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{page}"))
    };
    for (series, at_least) in [
        (
            r#"cdnsign_purge_paths_total{provider="cloudfront",outcome="rejected"}"#,
            1.0,
        ),
        (
            r#"cdnsign_purge_paths_total{provider="cloudfront",outcome="completed"}"#,
            1.0,
        ),
        (
            r#"cdnsign_purge_paths_total{provider="cloudfront",outcome="failed"}"#,
            1.0,
        ),
        (
            r#"cdnsign_purge_jobs_total{provider="cloudfront",outcome="completed"}"#,
            1.0,
        ),
        (
            r#"cdnsign_purge_jobs_total{provider="cloudfront",outcome="failed"}"#,
            1.0,
        ),
    ] {
        assert!(value(series) >= at_least, "{series} = {}", value(series));
    }

    // promtool, as the README says the suite runs it.
    let scrape_file = dir.path().join("scrape.prom");
    std::fs::write(&scrape_file, &page).expect("write scrape");
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let lint = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&scrape_file).expect("scrape"))
        .output()
        .expect("promtool (scripts/setup.sh installs it)");
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
}

/// A client that connects to `/metrics` and sends nothing is disconnected once the header
/// timeout passes (hyper applies it only with a timer, which the endpoint gives it), and
/// with every connection place taken by such clients a scrape is still answered once one
/// of them is dropped: idle connections cannot hold descriptors for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_metrics_connections_are_closed_and_do_not_starve_scrapes() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(cdnsign::metrics::serve_limited(
        listener,
        handle,
        Duration::from_millis(300),
        2,
    ));
    let connect = || async { tokio::net::TcpStream::connect(addr).await.expect("connect") };
    // Two idle clients take both places; a scraper queues behind them.
    let (mut idle_a, mut idle_b) = (connect().await, connect().await);
    let mut scraper = connect().await;
    scraper
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    // Each idle client is closed by the server (EOF), within the test's bound.
    for idle in [&mut idle_a, &mut idle_b] {
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), idle.read_to_end(&mut buf))
            .await
            .expect("the server closes an idle connection")
            .expect("read");
    }
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(20), scraper.read_to_string(&mut answer))
        .await
        .expect("the scrape is answered once a place frees")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.abort();
}
