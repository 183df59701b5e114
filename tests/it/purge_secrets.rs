//! Secrets never reach a log, an error or a metric label: the real binary runs with
//! `RUST_LOG=trace`, distinctive AWS and Aliyun secrets in its environment, and does
//! successful and refused purges against the local fakes; neither secret may appear in
//! its logs, in any gRPC answer, or on its `/metrics` page (whose purge families are
//! there, with static label values).

use std::time::Duration;

use crate::purge_support::aliyun_fake::AliyunFake;
use crate::purge_support::cloudfront_fake::CloudFrontFake;
use crate::purge_support::{Binary, binary_config_with_metrics, free_port, watch_to_end};
use cdnsign::proto::{PurgeKind, PurgeRequest};

const ALI_ID: &str = "LTAI5tSecretsTestId";
const ALI_SECRET: &str = "AliSecret-7Hq2pX9vLr4kZ0-MUST-NOT-LEAK";
const AWS_SECRET: &str = "AwsSecret-wJalrXUtnFEMI-K7MDENG-MUST-NOT-LEAK";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_logs_and_errors() {
    let cf = CloudFrontFake::start("ESECRETS00001", Duration::from_millis(200)).await;
    let good = AliyunFake::start(ALI_ID, ALI_SECRET).await;
    // Knows the same key id with another secret: every request it gets is refused.
    let bad = AliyunFake::start(ALI_ID, "a-different-secret").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let metrics_port = free_port();
    let config = dir.path().join("cdnsign.toml");
    std::fs::write(
        &config,
        binary_config_with_metrics(&dir.path().join("data"), port, Some(metrics_port))
            + &format!(
                r#"
[[targets]]
name = "cf"
provider = "cloudfront"
distribution_id = "ESECRETS00001"
endpoint = "{}"
[[targets]]
name = "good"
provider = "aliyun"
domain = "cdn.example.com"
endpoint = "{}"
[[targets]]
name = "good-v1"
provider = "aliyun"
domain = "cdn.example.com"
endpoint = "{}"
signature = "v1"
[[targets]]
name = "bad"
provider = "aliyun"
domain = "cdn.example.com"
endpoint = "{}"
"#,
                cf.endpoint, good.endpoint, good.endpoint, bad.endpoint
            ),
    )
    .expect("config");
    let server = Binary::start(
        &config,
        port,
        &[
            ("RUST_LOG", "trace"),
            ("AWS_ACCESS_KEY_ID", "AKIDSECRETSTEST"),
            ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", ALI_ID),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", ALI_SECRET),
        ],
    );
    let mut client = server.client().await;
    let mut answers = String::new();
    for target in ["cf", "good", "good-v1"] {
        let resp = client
            .purge(PurgeRequest {
                target: target.into(),
                paths: vec!["/a.png".into(), "https://cdn.example.com/b c.png".into()],
                kind: PurgeKind::File.into(),
                idempotency_key: format!("secrets-{target}"),
                max_wait_seconds: 0,
            })
            .await
            .expect("purge")
            .into_inner();
        answers.push_str(&format!("{resp:?}"));
        let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
        answers.push_str(&format!("{seen:?}"));
    }
    let err = client
        .purge(PurgeRequest {
            target: "bad".into(),
            paths: vec!["/a.png".into()],
            kind: PurgeKind::File.into(),
            idempotency_key: String::new(),
            max_wait_seconds: 0,
        })
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    answers.push_str(&format!("{err:?}"));
    assert_eq!(good.calls("RefreshObjectCaches").len(), 2);
    assert_eq!(cf.ours().len(), 1);

    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    for family in [
        "cdnsign_purge_jobs_total{provider=\"cloudfront\",outcome=\"completed\"} 1",
        "cdnsign_purge_jobs_total{provider=\"aliyun\",outcome=\"completed\"} 2",
        "cdnsign_purge_paths_total{provider=\"aliyun\",outcome=\"completed\"} 4",
        "cdnsign_upstream_request_duration_seconds_count{provider=\"aliyun\",operation=\"DescribeRefreshQuota\"}",
        "cdnsign_upstream_request_duration_seconds_count{provider=\"cloudfront\",operation=\"CreateInvalidation\"} 1",
        "cdnsign_aliyun_quota_remaining{kind=\"url\"}",
    ] {
        assert!(
            metrics.contains(family),
            "{family} missing from:\n{metrics}"
        );
    }
    promtool_check(&metrics);
    let logs = server.logs();
    assert!(logs.contains("TRACE"), "trace logging was on");
    assert!(logs.contains("purge request sent"));
    assert!(
        logs.contains("SignatureDoesNotMatch"),
        "the refusal was logged"
    );
    for secret in [ALI_SECRET, AWS_SECRET] {
        assert!(!logs.contains(secret), "secret in logs");
        assert!(!answers.contains(secret), "secret in gRPC answers");
        assert!(!metrics.contains(secret), "secret in metrics");
    }
}

/// `promtool check metrics` on a scrape with the purge families. promtool comes from
/// scripts/setup.sh (Debian's prometheus package); in CI its absence is a failure.
fn promtool_check(metrics: &str) {
    use std::io::Write as _;
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("promtool not run ({e}); scripts/setup.sh installs it");
            return;
        }
        Err(e) => panic!("promtool missing in CI: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write metrics");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
