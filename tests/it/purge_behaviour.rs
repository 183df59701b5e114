//! Purges that behave as CloudFront and Aliyun document: "try again later" waits the
//! window and never fails, a lost answer is reconciled and never resent, failed tasks fail
//! their paths, cache tags go to each provider's own API, one bad path never takes a batch
//! down, a busy distribution never starves a purge, and jobs of different purges waiting for
//! the same distribution share one request (and one bill). Against the local fakes, which
//! check what they receive as the providers do.

use std::time::{Duration, Instant};

use crate::purge_support::aliyun_fake::AliyunFake;
use crate::purge_support::cloudfront_fake::CloudFrontFake;
use crate::purge_support::{
    Binary, TestServer, aws_credentials, base_config, binary_config_with_metrics, free_port,
    watch_to_end,
};
use cdnsign::proto::purger_client::PurgerClient;
use cdnsign::proto::{JobStatus, PurgeKind, PurgeRequest, PurgeResponse, PurgeStatus};
use cdnsign::purge::PurgeOptions;
use cdnsign::purge::aliyun::{AliyunCredentials, Secret};
use tonic::transport::Channel;

const AK: &str = "LTAI5tBehaviourKey01";
const SECRET: &str = "Behaviour-Secret-TEST-ONLY";
const DIST: &str = "EBEHAVIOUR0001";
const DOMAIN: &str = "cdn.example.com";

fn aliyun_opts() -> PurgeOptions {
    PurgeOptions {
        aliyun_credentials: Some(AliyunCredentials {
            access_key_id: AK.into(),
            secret: Secret::new(SECRET),
        }),
        ..PurgeOptions::default()
    }
}

/// `base_config` with a one-second "try again later" window, and one Aliyun target.
fn aliyun_config(data: &std::path::Path, endpoint: &str) -> String {
    base_config(data)
        + &format!(
            r#"aliyun_quota_backoff_seconds = 1
[[targets]]
name = "ali"
provider = "aliyun"
domain = "{DOMAIN}"
endpoint = "{endpoint}"
"#
        )
}

fn cloudfront_target(endpoint: &str, cache_tags: bool) -> String {
    format!(
        r#"
[[targets]]
name = "cf"
provider = "cloudfront"
distribution_id = "{DIST}"
endpoint = "{endpoint}"
cache_tags = {cache_tags}
"#
    )
}

async fn purge(
    client: &mut PurgerClient<Channel>,
    target: &str,
    paths: &[&str],
    kind: PurgeKind,
) -> Result<PurgeResponse, tonic::Status> {
    client
        .purge(PurgeRequest {
            target: target.into(),
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            kind: kind.into(),
            idempotency_key: String::new(),
            max_wait_seconds: 0,
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliyun_try_again_later_waits_the_window_then_sends_once() {
    let fake = AliyunFake::start(AK, SECRET).await;
    let data = tempfile::tempdir().expect("tempdir");
    let server =
        TestServer::start(&aliyun_config(data.path(), &fake.endpoint), aliyun_opts()).await;
    let mut client = server.client().await;
    // Every "try again later" answer RefreshObjectCaches documents, in turn.
    fake.state.lock().expect("state").fail_next = vec![
        (400, "QuotaPerMinuteExceeded.Refresh".into()),
        (400, "TooMany.Refresh".into()),
        (503, "ServiceUnavailable".into()),
    ];
    fake.state.lock().expect("state").throttle_next = 0;
    let started = Instant::now();
    let resp = purge(&mut client, "ali", &["/later.css"], PurgeKind::File)
        .await
        .expect("accepted: a window to wait out is no failure");
    assert_eq!(
        resp.jobs[0].status(),
        JobStatus::Waiting,
        "{:?}",
        resp.jobs[0]
    );
    assert!(
        resp.jobs[0]
            .detail
            .contains("QuotaPerMinuteExceeded.Refresh"),
        "{}",
        resp.jobs[0].detail
    );
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
    let last = seen.last().expect("watch answered");
    assert_eq!(last.status(), PurgeStatus::PurgeCompleted, "{last:?}");
    {
        let st = fake.state.lock().expect("state");
        let refused: Vec<&str> = st.refused.iter().map(|(_, c)| c.as_str()).collect();
        assert_eq!(
            refused,
            [
                "QuotaPerMinuteExceeded.Refresh",
                "TooMany.Refresh",
                "ServiceUnavailable"
            ],
            "each refusal once: no tight loop"
        );
        assert_eq!(st.tasks.len(), 1, "one refresh went through");
        // Each per-minute refusal waited its window (1 s here) before the next attempt.
        let (created, ..) = st.tasks.values().next().expect("task");
        assert!(
            created.duration_since(started) >= Duration::from_secs(2),
            "sent {:?} after the first refusal: the windows were not waited out",
            created.duration_since(started)
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliyun_lost_answers_are_reconciled_not_resent_and_failed_tasks_fail_their_paths() {
    let fake = AliyunFake::start(AK, SECRET).await;
    let data = tempfile::tempdir().expect("tempdir");
    let server =
        TestServer::start(&aliyun_config(data.path(), &fake.endpoint), aliyun_opts()).await;
    let mut client = server.client().await;

    // The refresh is recorded, then the answer is a 503: the task exists, we do not know
    // its id. DescribeRefreshTasks finds it; the refresh is not sent again.
    fake.state.lock().expect("state").unavailable_after_record = 1;
    let resp = purge(&mut client, "ali", &["/lost.css"], PurgeKind::File)
        .await
        .expect("accepted");
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
    assert_eq!(
        seen.last().expect("m").status(),
        PurgeStatus::PurgeCompleted
    );
    {
        let st = fake.state.lock().expect("state");
        assert_eq!(st.tasks.len(), 1, "sent once: quota spent once");
        assert_eq!(st.url_remain, 9_999, "{}", st.url_remain);
    }
    assert!(
        !fake.calls("DescribeRefreshTasks").is_empty(),
        "reconciled through DescribeRefreshTasks"
    );

    // A task Aliyun reports Failed fails the job, naming the path; WatchPurge ends.
    fake.state.lock().expect("state").fail_paths = vec!["/broken".into()];
    let resp = purge(
        &mut client,
        "ali",
        &["/fine.css", "/broken.css"],
        PurgeKind::File,
    )
    .await
    .expect("accepted");
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
    let last = seen.last().expect("m");
    assert_eq!(last.status(), PurgeStatus::PurgeFailed, "{last:?}");
    assert_eq!(last.jobs[0].status(), JobStatus::Failed);
    assert!(
        last.jobs[0].detail.contains("/broken.css") && last.jobs[0].detail.contains("Failed"),
        "{}",
        last.jobs[0].detail
    );

    // A domain Aliyun does not know: FAILED_PRECONDITION (configuration, not the request).
    fake.state.lock().expect("state").fail_next = vec![(404, "InvalidDomain.NotFound".into())];
    let err = purge(&mut client, "ali", &["/x.css"], PurgeKind::File)
        .await
        .expect_err("unknown domain");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("InvalidDomain.NotFound"),
        "{}",
        err.message()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_tags_use_each_providers_api_and_bad_tags_are_rejected_alone() {
    let ali = AliyunFake::start(AK, SECRET).await;
    let cf = CloudFrontFake::start(DIST, Duration::from_millis(200)).await;
    let data = tempfile::tempdir().expect("tempdir");
    let toml = aliyun_config(data.path(), &ali.endpoint) + &cloudfront_target(&cf.endpoint, true);
    let mut opts = aws_credentials("AKIDFAKE", "fake-secret");
    opts.aliyun_credentials = aliyun_opts().aliyun_credentials;
    let server = TestServer::start(&toml, opts).await;
    let mut client = server.client().await;

    // Aliyun: RefreshObjectCacheByCacheTag, tags compared without case, sent once.
    let resp = purge(
        &mut client,
        "ali",
        &["Product-42", "#product-42", "promo"],
        PurgeKind::CacheTag,
    )
    .await
    .expect("accepted");
    assert!(resp.rejected.is_empty(), "{:?}", resp.rejected);
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
    assert_eq!(
        seen.last().expect("m").status(),
        PurgeStatus::PurgeCompleted
    );
    let calls = ali.calls("RefreshObjectCacheByCacheTag");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].params["DomainName"], DOMAIN);
    assert_eq!(calls[0].params["CacheTag"], "Product-42,promo");
    assert!(ali.calls("RefreshObjectCaches").is_empty());

    // CloudFront: '#' + tag, checked as AWS documents; a bad tag is rejected on its own.
    let long = "t".repeat(257);
    let resp = purge(
        &mut client,
        "cf",
        &["Release-7", "release-7", "a,b", "caf\u{e9}", &long, "ok"],
        PurgeKind::CacheTag,
    )
    .await
    .expect("accepted");
    let rejected: Vec<&str> = resp.rejected.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        rejected,
        ["a,b", "caf\u{e9}", long.as_str()],
        "{:?}",
        resp.rejected
    );
    assert!(
        resp.rejected[0].reason.contains("comma"),
        "{}",
        resp.rejected[0].reason
    );
    assert!(
        resp.rejected[2].reason.contains("256"),
        "{}",
        resp.rejected[2].reason
    );
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
    assert_eq!(
        seen.last().expect("m").status(),
        PurgeStatus::PurgeCompleted
    );
    assert_eq!(cf.ours()[0].paths, ["#Release-7", "#ok"]);
    assert_eq!(
        seen.last().expect("m").paths_billed,
        2,
        "a tag is billed once"
    );
    assert!(cf.state.lock().expect("state").invalid.is_empty());
    server.stop().await;

    // A CloudFront target that has not declared its CacheTagConfig refuses tag purges.
    let data = tempfile::tempdir().expect("tempdir");
    let toml = base_config(data.path()) + &cloudfront_target(&cf.endpoint, false);
    let server = TestServer::start(&toml, aws_credentials("AKIDFAKE", "fake-secret")).await;
    let mut client = server.client().await;
    let err = purge(&mut client, "cf", &["Release-7"], PurgeKind::CacheTag)
        .await
        .expect_err("no cache_tags");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("cache_tags = true"),
        "{}",
        err.message()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_path_cloudfront_refuses_is_isolated_and_the_rest_are_purged() {
    let cf = CloudFrontFake::start(DIST, Duration::from_millis(200)).await;
    // CloudFront refuses batches with this in them (a rule we do not check ourselves).
    cf.state.lock().expect("state").reject_paths = vec!["/poison".into()];
    let data = tempfile::tempdir().expect("tempdir");
    let toml = base_config(data.path()) + &cloudfront_target(&cf.endpoint, false);
    let server = TestServer::start(&toml, aws_credentials("AKIDFAKE", "fake-secret")).await;
    let mut client = server.client().await;
    let paths: Vec<String> = (0..13)
        .map(|i| {
            if i == 9 {
                "/poison.js".to_owned()
            } else {
                format!("/ok/{i}.js")
            }
        })
        .collect();
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let resp = purge(&mut client, "cf", &refs, PurgeKind::File)
        .await
        .expect("accepted");
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
    let last = seen.last().expect("m");
    let purged: Vec<String> = cf.ours().into_iter().flat_map(|i| i.paths).collect();
    assert_eq!(purged.len(), 12, "every good path went out: {purged:?}");
    assert!(!purged.iter().any(|p| p.contains("poison")));
    let failed: Vec<_> = last
        .jobs
        .iter()
        .filter(|j| j.status() == JobStatus::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", last.jobs);
    assert_eq!(failed[0].paths, 1);
    assert!(
        failed[0].detail.contains("/poison.js"),
        "{}",
        failed[0].detail
    );
    assert_eq!(
        last.jobs
            .iter()
            .filter(|j| j.status() == JobStatus::Completed)
            .map(|j| j.paths)
            .sum::<u32>(),
        12
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_paths_complete_while_another_client_keeps_the_distribution_busy() {
    let cf = CloudFrontFake::start(DIST, Duration::from_millis(150)).await;
    // Another tool keeps 1,000 files in progress for longer than this test runs: a 3,000-path
    // batch never fits, so only batches sized to the room there is make progress.
    cf.seed_foreign(
        DIST,
        (0..1_000).map(|i| format!("/other/{i}")).collect(),
        Duration::from_secs(600),
    );
    let data = tempfile::tempdir().expect("tempdir");
    let toml = base_config(data.path()) + &cloudfront_target(&cf.endpoint, false);
    let server = TestServer::start(&toml, aws_credentials("AKIDFAKE", "fake-secret")).await;
    let mut client = server.client().await;
    let paths: Vec<String> = (0..10_000).map(|i| format!("/seg/{i}.ts")).collect();
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let resp = purge(&mut client, "cf", &refs, PurgeKind::File)
        .await
        .expect("accepted");
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(60)).await;
    let last = seen.last().expect("m");
    assert_eq!(
        last.status(),
        PurgeStatus::PurgeCompleted,
        "{:?}",
        last.jobs
    );
    let ours = cf.ours();
    let mut sent: Vec<String> = ours.iter().flat_map(|i| i.paths.clone()).collect();
    assert_eq!(sent.len(), 10_000);
    sent.sort();
    sent.dedup();
    assert_eq!(sent.len(), 10_000, "every path once");
    // In order (FIFO), each request with its own CallerReference, none over the room.
    let order: Vec<usize> = ours
        .iter()
        .flat_map(|i| &i.paths)
        .map(|p| {
            p.trim_start_matches("/seg/")
                .trim_end_matches(".ts")
                .parse::<usize>()
                .expect("ours")
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "sent in order");
    let mut refs: Vec<&str> = ours.iter().map(|i| i.caller_reference.as_str()).collect();
    refs.sort_unstable();
    refs.dedup();
    assert_eq!(refs.len(), ours.len());
    assert!(
        ours.iter().all(|i| i.paths.len() <= 2_000),
        "room was 2,000"
    );
    assert_eq!(last.paths_billed, 10_000);
    server.stop().await;
}

/// Reads one sample's value from a Prometheus text page.
fn sample(page: &str, name_and_labels: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_waiting_together_share_one_request_and_one_bill() {
    let cf = CloudFrontFake::start(DIST, Duration::from_millis(200)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, metrics_port) = (free_port(), free_port());
    let config = dir.path().join("cdnsign.toml");
    // A window long enough that the second purge arrives inside it on any machine.
    let toml =
        binary_config_with_metrics(&dir.path().join("data"), port, Some(metrics_port)).replace(
            "coalesce_window_ms = 0",
            "coalesce_window_ms = 1500\ncloudfront_collapse_threshold = 3",
        ) + &cloudfront_target(&cf.endpoint, false);
    std::fs::write(&config, toml).expect("config");
    let server = Binary::start(
        &config,
        port,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDMERGE"),
            ("AWS_SECRET_ACCESS_KEY", "merge-secret"),
        ],
    );
    let mut a = server.client().await;
    let mut b = server.client().await;
    let first = purge(
        &mut a,
        "cf",
        &["/a.css", "/b.css", "/img/x.png"],
        PurgeKind::File,
    )
    .await
    .expect("first");
    assert_eq!(
        first.jobs[0].status(),
        JobStatus::Waiting,
        "held for merging"
    );
    // Four files in one directory: collapsed (threshold 3) to /thumbs/*.
    let second = purge(
        &mut b,
        "cf",
        &[
            "/b.css",
            "/img/*",
            "/thumbs/1.jpg",
            "/thumbs/2.jpg",
            "/thumbs/3.jpg",
            "/thumbs/4.jpg",
        ],
        PurgeKind::File,
    )
    .await
    .expect("second");
    let one = watch_to_end(&mut a, &first.purge_id, Duration::from_secs(20)).await;
    let two = watch_to_end(&mut b, &second.purge_id, Duration::from_secs(20)).await;
    let (one, two) = (one.last().expect("m"), two.last().expect("m"));
    assert_eq!(one.status(), PurgeStatus::PurgeCompleted, "{one:?}");
    assert_eq!(two.status(), PurgeStatus::PurgeCompleted, "{two:?}");
    // Each purge reports its own paths.
    assert_eq!(one.jobs.iter().map(|j| j.paths).sum::<u32>(), 3);
    assert_eq!(
        two.jobs.iter().map(|j| j.paths).sum::<u32>(),
        3,
        "{:?}",
        two.jobs
    );
    let ours = cf.ours();
    assert_eq!(ours.len(), 1, "one request for both: {ours:?}");
    let mut sent = ours[0].paths.clone();
    sent.sort();
    // /b.css once; /img/x.png covered by /img/*; the thumbnails collapsed.
    assert_eq!(sent, ["/a.css", "/b.css", "/img/*", "/thumbs/*"]);
    assert_eq!(one.jobs[0].provider_job_id, two.jobs[0].provider_job_id);
    assert_eq!(
        one.paths_billed + two.paths_billed,
        4,
        "billed once, to the request"
    );
    let page = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert_eq!(
        sample(&page, "cdnsign_purge_paths_billed_total{target=\"cf\"}"),
        4.0,
        "{page}"
    );
    assert_eq!(
        sample(
            &page,
            "cdnsign_purge_paths_merged_total{provider=\"cloudfront\"}"
        ),
        2.0,
        "/b.css and /img/x.png"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_aliyun_quota_never_holds_up_the_cloudfront_leg() {
    let ali = AliyunFake::start(AK, SECRET).await;
    let cf = CloudFrontFake::start(DIST, Duration::from_millis(200)).await;
    ali.state.lock().expect("state").url_remain = 0;
    let data = tempfile::tempdir().expect("tempdir");
    // One target name on both CDNs: a purge fans out to a job per provider.
    let toml = aliyun_config(data.path(), &ali.endpoint)
        + &cloudfront_target(&cf.endpoint, false).replace("name = \"cf\"", "name = \"ali\"");
    let mut opts = aws_credentials("AKIDFAKE", "fake-secret");
    opts.aliyun_credentials = aliyun_opts().aliyun_credentials;
    let server = TestServer::start(&toml, opts).await;
    let mut client = server.client().await;
    let resp = purge(&mut client, "ali", &["/both.css"], PurgeKind::File)
        .await
        .expect("accepted: the Aliyun leg waits for the reset");
    let by = |r: &[cdnsign::proto::PurgeJob], p: &str| {
        r.iter().find(|j| j.provider == p).cloned().expect("leg")
    };
    let aliyun = by(&resp.jobs, "aliyun");
    assert_eq!(aliyun.status(), JobStatus::Waiting);
    assert!(
        aliyun.detail.contains("daily quota to reset"),
        "{}",
        aliyun.detail
    );
    // The CloudFront leg goes out and completes meanwhile; WatchPurge shows each change.
    let mut req = tonic::Request::new(cdnsign::proto::WatchPurgeRequest {
        purge_id: resp.purge_id.clone(),
    });
    req.set_timeout(Duration::from_secs(20));
    let mut watch = client.watch_purge(req).await.expect("watch").into_inner();
    let done = loop {
        let msg = watch
            .message()
            .await
            .expect("watch")
            .expect("the purge cannot end while the Aliyun leg waits");
        if by(&msg.jobs, "cloudfront").status() == JobStatus::Completed {
            break msg;
        }
    };
    assert_eq!(by(&done.jobs, "aliyun").status(), JobStatus::Waiting);
    assert_eq!(done.status(), PurgeStatus::PurgeInProgress);
    assert_eq!(cf.ours().len(), 1);
    assert!(ali.calls("RefreshObjectCaches").is_empty(), "nothing spent");
    server.stop().await;
}
