//! What a platform team's tools see, from the real binary: every metric family triggered
//! at least once and the scrape linted by `promtool check metrics`; error details decoded
//! by Python grpcio + grpcio-status; traces received by an OTLP receiver built from the
//! official protobuf definitions, with the caller's trace id and the right parents; JSON
//! log lines carrying the call's ids.

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{KEY_ID, repo};
use crate::purge_support::cloudfront_fake::CloudFrontFake;
use crate::purge_support::{Binary, free_port, python};
use cdnsign::proto::signer_client::SignerClient;
use cdnsign::proto::{PurgeKind, PurgeRequest, SignItem, SignUrlsRequest};

const ALPHA: &str = "alpha-token-TEST-ONLY";
const BETA: &str = "beta-token-TEST-ONLY";
const DIST: &str = "EOBSERVE00001";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

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
        // The refused one may fail on its first send (FAILED status on the call).
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

/// The OTLP receiver, its ports, and the spans it prints.
struct Receiver {
    child: std::process::Child,
    grpc_port: u16,
    http_port: u16,
    /// TLS ports that require a client certificate signed by tests/fixtures/tls/ca.pem.
    grpc_tls_port: u16,
    http_tls_port: u16,
    spans: mpsc::Receiver<serde_json::Value>,
}

impl Receiver {
    fn start() -> Receiver {
        let mut child = Command::new(python())
            .arg(repo("tests/python/otlp_receiver.py"))
            .arg("--tls-dir")
            .arg(repo("tests/fixtures/tls"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the OTLP receiver");
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first: serde_json::Value = serde_json::from_str(
            &lines
                .next()
                .expect("the receiver prints its ports")
                .expect("line"),
        )
        .expect("JSON");
        let (tx, spans) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        let port = |name: &str| u16::try_from(first[name].as_u64().expect("port")).expect("port");
        Receiver {
            child,
            grpc_port: port("grpc_port"),
            http_port: port("http_port"),
            grpc_tls_port: port("grpc_tls_port"),
            http_tls_port: port("http_tls_port"),
            spans,
        }
    }

    /// Spans of `trace_id` received until those named in `want` are all there.
    fn spans_of(&self, trace_id: &str, want: &[&str], limit: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + limit;
        let mut got: Vec<serde_json::Value> = Vec::new();
        while !want.iter().all(|w| got.iter().any(|s| s["name"] == *w)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.spans.recv_timeout(left) {
                Ok(s) if s["trace_id"] == trace_id => got.push(s),
                Ok(_) => {}
                Err(_) => panic!("spans {want:?} of {trace_id} not received in {limit:?}: {got:?}"),
            }
        }
        got
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn traced_config(port: u16, data: &Path, cf_endpoint: &str) -> String {
    format!(
        r#"
[purge]
data_dir = "{data}"
coalesce_window_ms = 0
poll_interval_ms = 100
[[targets]]
name = "site"
provider = "cloudfront"
distribution_id = "{DIST}"
endpoint = "{cf_endpoint}"
[server]
listen = "127.0.0.1:{port}"
allow_unauthenticated = true
shutdown_grace_seconds = 1
[metrics]
listen = ""
[log]
format = "json"
[signing]
default_key_id = "{KEY_ID}"
threads = 1
[[keys]]
id = "{KEY_ID}"
path = "{key}"
"#,
        key = repo("config/dev-keys/TEST-ONLY-cloudfront.pem").display(),
        data = data.display(),
    )
}

/// One traced Purge call (its CloudFront request goes out during the call).
async fn traced_purge(server: &Binary, key: &str) {
    let mut client = server.client().await;
    let mut req = tonic::Request::new(PurgeRequest {
        target: "site".into(),
        paths: vec!["/traced.css".into()],
        kind: PurgeKind::File.into(),
        idempotency_key: key.into(),
        max_wait_seconds: 0,
    });
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN}-01")
            .parse()
            .expect("meta"),
    );
    req.set_timeout(Duration::from_secs(10));
    client.purge(req).await.expect("purge");
}

/// One traced SignUrls call with `traceparent` and a request id.
async fn traced_call(server: &Binary, request_id: &str) {
    let mut client = SignerClient::connect(format!("http://{}", server.addr))
        .await
        .expect("connect");
    let mut req = tonic::Request::new(SignUrlsRequest {
        items: vec![SignItem {
            url: "https://d111111abcdef8.cloudfront.net/t/a.ts".into(),
            ttl_seconds: 600,
            ..SignItem::default()
        }],
        ..SignUrlsRequest::default()
    });
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN}-01")
            .parse()
            .expect("meta"),
    );
    req.metadata_mut()
        .insert("x-request-id", request_id.parse().expect("meta"));
    req.set_timeout(Duration::from_secs(10));
    let resp = client.sign_urls(req).await.expect("sign").into_inner();
    assert_eq!(resp.signed, 1);
}

/// The JSON log line of the call (`grpc call`) with `request_id`.
fn find_call_line(logs: &str, request_id: &str) -> Option<serde_json::Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "grpc call" && v["request_id"] == request_id)
}

fn has_call_line(logs: &str, request_id: &str) -> bool {
    find_call_line(logs, request_id).is_some()
}

fn call_line(logs: &str, request_id: &str) -> serde_json::Value {
    find_call_line(logs, request_id)
        .unwrap_or_else(|| panic!("no grpc call line for {request_id}:\n{logs}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_carry_the_callers_trace_to_an_otlp_receiver_and_into_the_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cf = CloudFrontFake::start(DIST, Duration::from_millis(100)).await;
    // Without an exporter: the log line still carries the caller's trace id.
    let port = free_port();
    let path = dir.path().join("plain.toml");
    std::fs::write(
        &path,
        traced_config(port, &dir.path().join("plain-data"), &cf.endpoint),
    )
    .expect("config");
    let mut plain = Binary::start(&path, port, &[]);
    traced_call(&plain, "req-plain").await;
    let logs = plain.wait_for(Duration::from_secs(10), |l| has_call_line(l, "req-plain"));
    let line = call_line(&logs, "req-plain");
    assert_eq!(line["trace_id"], TRACE_ID, "{line}");
    assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
    assert!(
        !logs.contains("exporting traces"),
        "no exporter without an endpoint"
    );
    plain.signal("TERM");
    assert!(plain.wait_exit(Duration::from_secs(20)).success());

    let receiver = Receiver::start();
    // The TLS points: https:// with the test CA instead of the system roots and a client
    // certificate the receiver requires (mTLS), over gRPC and over HTTP.
    let (ca, cert, key) = (
        repo("tests/fixtures/tls/ca.pem"),
        repo("tests/fixtures/tls/client.pem"),
        repo("tests/fixtures/tls/client.key"),
    );
    let tls_env = [
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.to_str().expect("path")),
        (
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            cert.to_str().expect("path"),
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
            key.to_str().expect("path"),
        ),
    ];
    for (protocol, receiver_port, via) in [
        ("grpc", receiver.grpc_port, "grpc"),
        ("http/protobuf", receiver.http_port, "http"),
        ("grpc", receiver.grpc_tls_port, "grpc-tls"),
        ("http/protobuf", receiver.http_tls_port, "http-tls"),
    ] {
        let tls = via.ends_with("-tls");
        let port = free_port();
        let path = dir.path().join("traced.toml");
        std::fs::write(
            &path,
            traced_config(port, &dir.path().join(format!("data-{via}")), &cf.endpoint),
        )
        .expect("config");
        let scheme = if tls { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{receiver_port}");
        let mut env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_SERVICE_NAME", "cdnsign-under-test"),
            ("AWS_ACCESS_KEY_ID", "AKIDTRACE"),
            ("AWS_SECRET_ACCESS_KEY", "trace-secret"),
        ];
        if tls {
            env.extend(tls_env);
        }
        let mut server = Binary::start(&path, port, &env);
        let request_id = format!("req-{via}");
        traced_call(&server, &request_id).await;
        traced_purge(&server, &format!("purge-{via}")).await;
        // Shutting down exports what is batched.
        server.signal("TERM");
        assert!(server.wait_exit(Duration::from_secs(20)).success());
        let spans = receiver.spans_of(
            TRACE_ID,
            &[
                "cdnsign.v1.Signer/SignUrls",
                "sign.queue",
                "sign.job",
                "cdnsign.v1.Purger/Purge",
                "cloudfront.request",
            ],
            Duration::from_secs(20),
        );
        let by = |name: &str| {
            spans
                .iter()
                .find(|s| s["name"] == name && s["via"] == via)
                .unwrap_or_else(|| panic!("{name} via {via}: {spans:?}"))
        };
        let call = by("cdnsign.v1.Signer/SignUrls");
        assert_eq!(call["parent_span_id"], CALLER_SPAN, "{call}");
        assert_eq!(call["kind"], 2, "SPAN_KIND_SERVER");
        assert_eq!(call["service"], "cdnsign-under-test");
        assert_eq!(by("sign.queue")["parent_span_id"], call["span_id"]);
        assert_eq!(by("sign.job")["parent_span_id"], call["span_id"]);
        // The CloudFront request is a client span of the Purge call, and CloudFront was
        // sent the trace context.
        let purge = by("cdnsign.v1.Purger/Purge");
        assert_eq!(purge["parent_span_id"], CALLER_SPAN);
        let upstream = by("cloudfront.request");
        assert_eq!(upstream["kind"], 3, "SPAN_KIND_CLIENT");
        assert!(
            spans
                .iter()
                .any(|s| s["span_id"] == upstream["parent_span_id"]),
            "the CloudFront span's parent is in the trace: {spans:?}"
        );
        assert!(
            cf.state
                .lock()
                .expect("state")
                .traceparents
                .iter()
                .any(|tp| tp.contains(TRACE_ID)),
            "CloudFront got the trace context"
        );
        // The call's log line names the same trace and span.
        let line = call_line(&server.logs(), &request_id);
        assert_eq!(line["trace_id"], TRACE_ID);
        assert_eq!(line["span_id"], call["span_id"], "{line}");
    }
}
