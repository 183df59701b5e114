//! Traces and logs: the caller's trace carried to an OTLP receiver (gRPC and HTTP, plain
//! and mTLS) with the right parents, to CloudFront, and into the JSON log line of the call.

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::DIST;
use crate::common::{KEY_ID, repo};
use crate::purge_support::cloudfront_fake::CloudFrontFake;
use crate::purge_support::{Binary, free_port, python};
use cdnsign::proto::signer_client::SignerClient;
use cdnsign::proto::{PurgeKind, PurgeRequest, SignItem, SignUrlsRequest};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

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
        // The fake is shared by the four runs: this run's requests are the ones after now.
        cf.state.lock().expect("state").traceparents.clear();
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
