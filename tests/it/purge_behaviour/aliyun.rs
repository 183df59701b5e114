//! Aliyun's refusals: "try again later" waits its window, a lost answer is reconciled, a
//! failed task fails its paths, a task Aliyun no longer reports ends unknown and is not
//! resent, and an exhausted quota never holds up the CloudFront leg.

use std::time::{Duration, Instant};

use super::{AK, DIST, SECRET, aliyun_config, aliyun_opts, cloudfront_target, purge};
use crate::purge_support::aliyun_fake::AliyunFake;
use crate::purge_support::cloudfront_fake::CloudFrontFake;
use crate::purge_support::{TestServer, aws_credentials, watch_to_end};
use cdnsign::proto::{JobStatus, PurgeKind, PurgeStatus};

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

/// A task Aliyun no longer reports (it keeps tasks 3 days; an id it has never reported ten
/// minutes after it was given is unknown to it) ends its job FAILED with status `Unknown`
/// and a detail that says the outcome is unknown, and is never sent again. The job is put in
/// the store as a replica would have left it: sent eleven minutes ago, under a task id the
/// fake has never given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_aliyun_no_longer_reports_ends_its_job_unknown_and_is_not_resent() {
    use cdnsign::purge::config::ProviderKind;
    use cdnsign::purge::model::{JobAction, JobRecord, JobState, PurgeRecord, now_ms};
    use cdnsign::purge::store::embedded::EmbeddedStore;
    use cdnsign::purge::store::{Inserted, PurgeStore};

    const TASK: &str = "704299999";
    let fake = AliyunFake::start(AK, SECRET).await;
    let data = tempfile::tempdir().expect("tempdir");
    let sent_at = now_ms() - 11 * 60_000;
    let mut job = JobRecord::waiting(
        ProviderKind::Aliyun,
        super::DOMAIN,
        JobAction::RefreshFile,
        vec!["https://cdn.example.com/gone.css".into()],
        0,
        sent_at,
    );
    job.state = JobState::InProgress;
    job.provider_job_id = TASK.into();
    job.status_text = "Refreshing".into();
    job.detail.clear();
    job.attempts = 1;
    job.sent_at_ms = sent_at;
    {
        let dir = data.path().to_owned();
        let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&dir))
            .await
            .expect("join")
            .expect("open the store");
        let record = PurgeRecord {
            id: "pg_gonetask0001".into(),
            seq: 0,
            client: String::new(),
            idempotency_key: String::new(),
            fingerprint: "fp-gone".into(),
            target: "ali".into(),
            kind: cdnsign::purge::PurgeKind::File,
            created_at_ms: sent_at,
            rejected: vec![],
            jobs: vec![job],
            quota: vec![],
        };
        assert!(matches!(
            store.insert(record).await.expect("insert"),
            Inserted::New(_)
        ));
    }

    let server =
        TestServer::start(&aliyun_config(data.path(), &fake.endpoint), aliyun_opts()).await;
    let mut client = server.client().await;
    let seen = watch_to_end(&mut client, "pg_gonetask0001", Duration::from_secs(20)).await;
    let last = seen.last().expect("watch answered");
    assert_eq!(last.status(), PurgeStatus::PurgeFailed, "{last:?}");
    let job = &last.jobs[0];
    assert_eq!(job.status(), JobStatus::Failed, "{job:?}");
    assert_eq!(job.status_text, "Unknown", "{job:?}");
    assert!(
        job.detail
            .contains(&format!("no longer reports task(s) {TASK}"))
            && job.detail.contains("outcome is unknown"),
        "{}",
        job.detail
    );
    {
        let st = fake.state.lock().expect("state");
        let asked = st
            .calls
            .iter()
            .filter(|c| c.action == "DescribeRefreshTaskById")
            .count();
        assert!(asked >= 1, "the task was looked up: {:?}", st.calls);
        assert!(
            st.calls.iter().all(|c| c.action != "RefreshObjectCaches"),
            "an unknown outcome is not resent: {:?}",
            st.calls
        );
        assert!(st.tasks.is_empty());
    }
    server.stop().await;
}
