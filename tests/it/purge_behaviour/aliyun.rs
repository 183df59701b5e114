//! Aliyun's refusals: "try again later" waits its window, a lost answer is reconciled, a
//! failed task fails its paths, and an exhausted quota never holds up the CloudFront leg
//! (reconciling in detail, and tasks Aliyun no longer reports: `aliyun_reconciliation`).

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

/// An error `Message` longer than 300 bytes whose byte 300 falls inside a multi-byte
/// character (Chinese text) is cut on a character boundary: the job fails naming the
/// provider's message, and the worker lives on (the next purge goes out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliyun_long_multibyte_error_messages_are_cut_without_a_panic() {
    let fake = AliyunFake::start(AK, SECRET).await;
    let data = tempfile::tempdir().expect("tempdir");
    let server =
        TestServer::start(&aliyun_config(data.path(), &fake.endpoint), aliyun_opts()).await;
    let mut client = server.client().await;
    // One ASCII byte, then 3-byte characters: byte 300 is inside one.
    let message = format!("x{}", "指定的对象路径格式不正确".repeat(12));
    assert!(message.len() > 300 && !message.is_char_boundary(300));
    {
        let mut st = fake.state.lock().expect("state");
        st.fail_next = vec![(400, "InvalidObjectPath.Malformed".into())];
        st.fail_message = Some(message.clone());
    }
    let err = purge(&mut client, "ali", &["/bad.css"], PurgeKind::File)
        .await
        .expect_err("the only job failed");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains(&message[..298]), "{}", err.message());
    assert!(!err.message().contains(&message), "cut: {}", err.message());
    // The queue's worker is alive: the next purge goes out at once and completes.
    let resp = purge(&mut client, "ali", &["/good.css"], PurgeKind::File)
        .await
        .expect("accepted");
    assert_eq!(resp.jobs[0].status(), JobStatus::InProgress, "{resp:?}");
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
    assert_eq!(
        seen.last().expect("m").status(),
        PurgeStatus::PurgeCompleted
    );
    server.stop().await;
}

/// A purge whose insert committed is never answered UNAVAILABLE ("nothing was stored"),
/// even when reading it back fails: the caller gets its purge id, and a caller retrying
/// without a key would purge twice. The purge goes out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_purge_is_answered_even_when_reading_it_back_fails() {
    use crate::purge_support::GetFails;
    use cdnsign::purge::store::embedded::EmbeddedStore;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    let fake = AliyunFake::start(AK, SECRET).await;
    let data = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(GetFails {
        inner: Arc::new(EmbeddedStore::in_memory().expect("store")),
        fail_get: true.into(),
    });
    let mut opts = aliyun_opts();
    opts.store = Some(Arc::clone(&store) as _);
    let server = TestServer::start(&aliyun_config(data.path(), &fake.endpoint), opts).await;
    let mut client = server.client().await;
    let resp = purge(&mut client, "ali", &["/stored.css"], PurgeKind::File)
        .await
        .expect("stored: never UNAVAILABLE after the commit");
    assert!(resp.purge_id.starts_with("pg_"), "{resp:?}");
    assert_eq!(resp.jobs.len(), 1, "{resp:?}");
    store.fail_get.store(false, Ordering::SeqCst);
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
    assert_eq!(
        seen.last().expect("m").status(),
        PurgeStatus::PurgeCompleted
    );
    assert_eq!(fake.calls("RefreshObjectCaches").len(), 1, "sent once");
    server.stop().await;
}

/// During a rollout the replicas' configs differ: a replica whose `[[targets]]` lacks a
/// target never claims its queue (nor fails its jobs "no longer configured"), even when
/// asked about the purge; the jobs wait for a replica that has the target, which sends them.
/// Two servers in this process share one store, as replicas share a database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_the_target_leaves_its_jobs_to_one_that_has_it() {
    use cdnsign::purge::store::PurgeStore;
    use cdnsign::purge::store::embedded::EmbeddedStore;
    use std::sync::Arc;

    let fake = AliyunFake::start(AK, SECRET).await;
    let store: Arc<dyn PurgeStore> = Arc::new(EmbeddedStore::in_memory().expect("store"));
    let with_store = || {
        let mut opts = aliyun_opts();
        opts.store = Some(Arc::clone(&store));
        opts
    };
    let (data_new, data_old) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    // The new config has the target; the old one only another domain.
    let new_config = aliyun_config(data_new.path(), &fake.endpoint);
    let old_config = aliyun_config(data_old.path(), &fake.endpoint)
        .replace("cdn.example.com", "old.example.com")
        .replace("name = \"ali\"", "name = \"old\"");
    let new = TestServer::start(&new_config, with_store()).await;
    // Accepted by a replica with the target, but not sent yet: Aliyun says "try again
    // later" for the next second.
    fake.state.lock().expect("state").fail_next = vec![(400, "TooMany.Refresh".into())];
    let mut client = new.client().await;
    let resp = purge(&mut client, "ali", &["/rollout.css"], PurgeKind::File)
        .await
        .expect("accepted");
    assert_eq!(resp.jobs[0].status(), JobStatus::Waiting, "{resp:?}");
    new.stop().await;

    // Only the old replica runs: asked about the purge, it must not claim the queue.
    let old = TestServer::start(&old_config, with_store()).await;
    let mut old_client = old.client().await;
    let got = old_client
        .get_purge(cdnsign::proto::GetPurgeRequest {
            purge_id: resp.purge_id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.jobs[0].status(), JobStatus::Waiting, "{got:?}");
    assert!(
        !got.jobs[0].detail.contains("no longer configured"),
        "{got:?}"
    );

    // A replica with the target comes back and sends it.
    let new = TestServer::start(&new_config, with_store()).await;
    let mut client = new.client().await;
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
    assert_eq!(
        seen.last().expect("m").status(),
        PurgeStatus::PurgeCompleted,
        "{:?}",
        seen.last()
    );
    assert_eq!(fake.calls("RefreshObjectCaches").len(), 1);
    old.stop().await;
    new.stop().await;
}
