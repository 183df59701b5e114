//! Purges through the server: v3 and v1 targets split at the per-call limits and followed
//! to completion; quota, throttling and a wrong secret mapped to clear statuses.

use std::time::Duration;

use super::{AK, SECRET, creds, now};
use crate::purge_support::aliyun_fake::AliyunFake;
use crate::purge_support::{TestServer, base_config, watch_to_end};
use cdnsign::proto::{JobStatus, PurgeKind, PurgeRequest, PurgeStatus};
use cdnsign::purge::PurgeOptions;

fn opts(secret: &str) -> PurgeOptions {
    PurgeOptions {
        aliyun_credentials: Some(creds(secret)),
        ..PurgeOptions::default()
    }
}

fn targets(endpoint: &str) -> String {
    format!(
        r#"
[[targets]]
name = "v3site"
provider = "aliyun"
domain = "cdn.example.com"
endpoint = "{endpoint}"

[[targets]]
name = "v1site"
provider = "aliyun"
domain = "img.example.com"
endpoint = "{endpoint}"
signature = "v1"
scheme = "http"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_go_out_signed_v3_and_v1_split_at_the_per_call_limits_and_complete() {
    let fake = AliyunFake::start(AK, SECRET).await;
    let data = tempfile::tempdir().expect("tempdir");
    let toml = base_config(data.path()) + &targets(&fake.endpoint);
    let server = TestServer::start(&toml, opts(SECRET)).await;
    let mut client = server.client().await;

    // 2,500 files on a V3 target: three RefreshObjectCaches calls of at most 1,000.
    let paths: Vec<String> = (0..2_500).map(|i| format!("/a/{i}.js")).collect();
    let resp = client
        .purge(PurgeRequest {
            target: "v3site".into(),
            paths: paths.clone(),
            kind: PurgeKind::File.into(),
            idempotency_key: "ali-1".into(),
            max_wait_seconds: 0,
        })
        .await
        .expect("purge")
        .into_inner();
    assert_eq!(resp.jobs.len(), 3);
    assert_eq!(resp.quota.len(), 1);
    assert_eq!(
        resp.quota[0].url_remain, 10_000,
        "quota reported as seen before sending"
    );
    for j in &resp.jobs {
        assert_eq!(j.provider, "aliyun");
        assert_eq!(j.status(), JobStatus::InProgress, "{j:?}");
        assert!(!j.provider_job_id.is_empty());
    }
    let calls = fake.calls("RefreshObjectCaches");
    let sizes: Vec<usize> = calls
        .iter()
        .map(|c| c.params["ObjectPath"].split('\n').count())
        .collect();
    assert_eq!(sizes, [1_000, 1_000, 500]);
    assert!(
        calls
            .iter()
            .all(|c| c.signature == "v3" && c.params["ObjectType"] == "File")
    );
    assert_eq!(
        calls[0].params["ObjectPath"].split('\n').next(),
        Some("https://cdn.example.com/a/0.js")
    );
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
    let last = seen.last().expect("messages");
    assert_eq!(last.status(), PurgeStatus::PurgeCompleted, "{last:?}");
    assert!(last.jobs.iter().all(|j| j.status_text == "Complete"));
    assert!(!fake.calls("DescribeRefreshTaskById").is_empty());

    // Same key: same purge, nothing new.
    let again = client
        .purge(PurgeRequest {
            target: "v3site".into(),
            paths,
            kind: PurgeKind::File.into(),
            idempotency_key: "ali-1".into(),
            max_wait_seconds: 0,
        })
        .await
        .expect("again")
        .into_inner();
    assert!(again.deduplicated);
    assert_eq!(fake.calls("RefreshObjectCaches").len(), 3);

    // 150 directories on a V1 target: two calls of at most 100, ObjectType Directory.
    fake.state.lock().expect("state").dir_remain = 500;
    let dirs: Vec<String> = (0..150).map(|i| format!("/d{i}")).collect();
    let resp = client
        .purge(PurgeRequest {
            target: "v1site".into(),
            paths: dirs,
            kind: PurgeKind::Directory.into(),
            idempotency_key: String::new(),
            max_wait_seconds: 0,
        })
        .await
        .expect("dir purge")
        .into_inner();
    assert_eq!(resp.jobs.len(), 2);
    let calls: Vec<_> = fake
        .calls("RefreshObjectCaches")
        .into_iter()
        .filter(|c| c.signature == "v1")
        .collect();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.params["ObjectType"] == "Directory"));
    assert!(calls[0].params["ObjectPath"].starts_with("http://img.example.com/d0/\n"));

    // Pre-warm goes to PushObjectCache.
    let resp = client
        .purge(PurgeRequest {
            target: "v1site".into(),
            paths: vec!["/hot.mp4".into()],
            kind: PurgeKind::Prewarm.into(),
            idempotency_key: String::new(),
            max_wait_seconds: 0,
        })
        .await
        .expect("push")
        .into_inner();
    assert_eq!(resp.jobs[0].status(), JobStatus::InProgress);
    assert_eq!(fake.calls("PushObjectCache").len(), 1);
    assert!(fake.refused().is_empty(), "{:?}", fake.refused());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_throttling_and_credentials_map_to_clear_statuses() {
    let fake = AliyunFake::start(AK, SECRET).await;
    let data = tempfile::tempdir().expect("tempdir");
    let toml = base_config(data.path()) + &targets(&fake.endpoint);
    let server = TestServer::start(&toml, opts(SECRET)).await;
    let mut client = server.client().await;

    // Quota for 3 URLs left; a purge of 5 waits for the daily reset (midnight UTC+8)
    // instead of failing, and nothing is sent now.
    fake.state.lock().expect("state").url_remain = 3;
    let waiting = client
        .purge(PurgeRequest {
            target: "v3site".into(),
            paths: (0..5).map(|i| format!("/q{i}")).collect(),
            kind: PurgeKind::File.into(),
            idempotency_key: "q".into(),
            max_wait_seconds: 0,
        })
        .await
        .expect("accepted to wait for the quota")
        .into_inner();
    assert_eq!(waiting.jobs[0].status(), JobStatus::Waiting);
    assert!(
        waiting.jobs[0].detail.contains("daily quota to reset")
            && waiting.jobs[0].detail.contains("3 left"),
        "{}",
        waiting.jobs[0].detail
    );
    // Unless the caller cannot wait that long: then it is refused, nothing stored. (Half
    // the time to the reset, whatever the time of day the test runs.)
    let to_reset = (cdnsign::purge::aliyun::next_quota_reset(now() * 1000) - now() * 1000) / 1000;
    let err = client
        .purge(PurgeRequest {
            target: "v3site".into(),
            paths: (0..5).map(|i| format!("/q{i}")).collect(),
            kind: PurgeKind::File.into(),
            idempotency_key: "q-now".into(),
            max_wait_seconds: u32::try_from(to_reset / 2).unwrap_or(u32::MAX).max(1),
        })
        .await
        .expect_err("cannot wait for the reset");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("max_wait_seconds"),
        "{}",
        err.message()
    );
    // The purge put off to the next day reserves that day's quota, not today's: with 7
    // left today, 3 more go out now (what jobs due today reserve:
    // jobs_due_today_reserve_todays_quota).
    fake.state.lock().expect("state").url_remain = 7;
    let second = client
        .purge(PurgeRequest {
            target: "v3site".into(),
            paths: (0..3).map(|i| format!("/r{i}")).collect(),
            kind: PurgeKind::File.into(),
            idempotency_key: "r".into(),
            max_wait_seconds: 0,
        })
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(
        second.jobs[0].status(),
        JobStatus::InProgress,
        "7 left today; the 5 waiting are the next day's: 3 go now"
    );
    assert_eq!(fake.calls("RefreshObjectCaches").len(), 1);
    // Finished before the throttling below, so its polls take none of it.
    let seen = watch_to_end(&mut client, &second.purge_id, Duration::from_secs(20)).await;
    assert_eq!(
        seen.last().expect("m").status(),
        cdnsign::proto::PurgeStatus::PurgeCompleted
    );

    // Throttled twice, then accepted: the job waits (never fails) and is sent again after
    // a backoff, by the scheduler.
    fake.state.lock().expect("state").url_remain = 100;
    fake.state.lock().expect("state").throttle_next = 2;
    let resp = client
        .purge(PurgeRequest {
            target: "v3site".into(),
            paths: vec!["/t".into()],
            kind: PurgeKind::File.into(),
            idempotency_key: "t".into(),
            max_wait_seconds: 0,
        })
        .await
        .expect("throttled, accepted for later")
        .into_inner();
    assert_eq!(
        resp.jobs[0].status(),
        JobStatus::Waiting,
        "{:?}",
        resp.jobs[0]
    );
    assert!(
        resp.jobs[0].detail.contains("Throttling.User"),
        "{:?}",
        resp.jobs[0]
    );
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
    assert_eq!(
        seen.last().expect("m").status(),
        cdnsign::proto::PurgeStatus::PurgeCompleted
    );
    assert_eq!(
        fake.calls("RefreshObjectCaches").len(),
        2,
        "the 3 above, and this one sent once it was let through"
    );
    assert_eq!(
        fake.refused()
            .iter()
            .filter(|c| *c == "Throttling.User")
            .count(),
        2
    );
    server.stop().await;

    // A wrong secret: PERMISSION_DENIED, and the secret appears nowhere in the answer.
    let data2 = tempfile::tempdir().expect("tempdir");
    let toml2 = base_config(data2.path()) + &targets(&fake.endpoint);
    let wrong = "Wrong-Secret-That-Must-Not-Leak";
    let server = TestServer::start(&toml2, opts(wrong)).await;
    let mut client = server.client().await;
    let err = client
        .purge(PurgeRequest {
            target: "v3site".into(),
            paths: vec!["/x".into()],
            kind: PurgeKind::File.into(),
            idempotency_key: String::new(),
            max_wait_seconds: 0,
        })
        .await
        .expect_err("denied");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("SignatureDoesNotMatch"),
        "{}",
        err.message()
    );
    assert!(!err.message().contains(wrong));
    server.stop().await;
}

/// A URL over Aliyun's 1,024 characters (as sent) is rejected on its own, by name; the
/// others of the purge go out in one call the fake (which enforces the limit) accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_over_aliyuns_length_limit_is_rejected_alone() {
    let fake = AliyunFake::start(AK, SECRET).await;
    let data = tempfile::tempdir().expect("tempdir");
    let toml = base_config(data.path()) + &targets(&fake.endpoint);
    let server = TestServer::start(&toml, opts(SECRET)).await;
    let mut client = server.client().await;
    // "https://cdn.example.com" is 23 characters: this path makes a URL of 1,025.
    let long = format!("/{}", "x".repeat(1_001));
    let resp = client
        .purge(PurgeRequest {
            target: "v3site".into(),
            paths: vec!["/ok.js".into(), long.clone()],
            kind: PurgeKind::File.into(),
            idempotency_key: String::new(),
            max_wait_seconds: 0,
        })
        .await
        .expect("purge")
        .into_inner();
    assert_eq!(resp.rejected.len(), 1, "{:?}", resp.rejected);
    assert_eq!(resp.rejected[0].path, long);
    assert!(
        resp.rejected[0].reason.contains("1025 characters")
            && resp.rejected[0].reason.contains("1024"),
        "{:?}",
        resp.rejected[0]
    );
    let calls = fake.calls("RefreshObjectCaches");
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].params["ObjectPath"],
        "https://cdn.example.com/ok.js"
    );
    assert!(fake.refused().is_empty(), "{:?}", fake.refused());
    server.stop().await;
}

/// Jobs accepted and due today (here one throttled, waiting its backoff) reserve today's
/// quota: a purge that fits what Aliyun reports left, but not what is left once they are
/// sent, waits for the reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_due_today_reserve_todays_quota() {
    let fake = AliyunFake::start(AK, SECRET).await;
    let data = tempfile::tempdir().expect("tempdir");
    let toml = base_config(data.path()) + &targets(&fake.endpoint);
    let server = TestServer::start(&toml, opts(SECRET)).await;
    let mut client = server.client().await;
    fake.state.lock().expect("state").url_remain = 4;
    // Throttled for the rest of the test: the first purge waits its backoff, due today.
    fake.state.lock().expect("state").throttle_next = 1_000;
    let first = client
        .purge(PurgeRequest {
            target: "v3site".into(),
            paths: (0..3).map(|i| format!("/d{i}")).collect(),
            kind: PurgeKind::File.into(),
            idempotency_key: "due".into(),
            max_wait_seconds: 0,
        })
        .await
        .expect("throttled, accepted for later")
        .into_inner();
    assert_eq!(
        first.jobs[0].status(),
        JobStatus::Waiting,
        "{:?}",
        first.jobs[0]
    );
    assert!(
        first.jobs[0].detail.contains("Throttling.User"),
        "{:?}",
        first.jobs[0]
    );
    let second = client
        .purge(PurgeRequest {
            target: "v3site".into(),
            paths: (0..2).map(|i| format!("/e{i}")).collect(),
            kind: PurgeKind::File.into(),
            idempotency_key: "after".into(),
            max_wait_seconds: 0,
        })
        .await
        .expect("accepted to wait")
        .into_inner();
    assert_eq!(second.jobs[0].status(), JobStatus::Waiting);
    assert!(
        second.jobs[0].detail.contains("daily quota to reset"),
        "4 left, 3 reserved by the throttled purge: 2 wait for the reset: {}",
        second.jobs[0].detail
    );
    server.stop().await;
}

/// One target fanning out to two Aliyun domains of one account: both legs share the
/// account's quota (one admission lock, taken once; before, the second leg waited for the
/// lock the first held, for ever), and the first leg's paths count against the second's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_aliyun_domains_of_one_target_share_the_quota_without_deadlock() {
    let fake = AliyunFake::start(AK, SECRET).await;
    let data = tempfile::tempdir().expect("tempdir");
    let toml = base_config(data.path())
        + &targets(&fake.endpoint)
            .replace("name = \"v3site\"", "name = \"site\"")
            .replace("name = \"v1site\"", "name = \"site\"");
    let server = TestServer::start(&toml, opts(SECRET)).await;
    let mut client = server.client().await;
    fake.state.lock().expect("state").url_remain = 3;
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        client.purge(PurgeRequest {
            target: "site".into(),
            paths: vec!["/a.js".into(), "/b.js".into()],
            kind: PurgeKind::File.into(),
            idempotency_key: "fan-out".into(),
            max_wait_seconds: 0,
        }),
    )
    .await
    .expect("admission of the second leg did not wait for the first leg's lock")
    .expect("purge")
    .into_inner();
    assert_eq!(resp.jobs.len(), 2, "{:?}", resp.jobs);
    let waiting: Vec<_> = resp
        .jobs
        .iter()
        .filter(|j| j.status() == JobStatus::Waiting)
        .collect();
    assert_eq!(
        waiting.len(),
        1,
        "3 left today: one leg's 2 paths go now, the other's wait: {:?}",
        resp.jobs
    );
    assert!(
        waiting[0].detail.contains("daily quota to reset"),
        "{}",
        waiting[0].detail
    );
    assert_eq!(fake.calls("RefreshObjectCaches").len(), 1);
    assert!(fake.refused().is_empty(), "{:?}", fake.refused());
    server.stop().await;
}
