//! Reconciling Aliyun's lost or id-less answers, and tasks it no longer reports.

use std::time::{Duration, Instant};

use super::{AK, SECRET, aliyun_config, aliyun_opts, purge};
use crate::purge_support::aliyun_fake::AliyunFake;
use crate::purge_support::{TestServer, watch_to_end};
use cdnsign::proto::{JobStatus, PurgeKind, PurgeStatus};

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

/// A success answer without a task id (a body that is not JSON, or JSON without
/// RefreshTaskId) says nothing about whether the refresh was recorded: the job is
/// reconciled through DescribeRefreshTasks and takes the task Aliyun has, never COMPLETED
/// on "0 of 0 tasks done", and the refresh is not sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliyun_success_without_a_task_id_is_reconciled_not_completed() {
    let fake = AliyunFake::start(AK, SECRET).await;
    let data = tempfile::tempdir().expect("tempdir");
    let server =
        TestServer::start(&aliyun_config(data.path(), &fake.endpoint), aliyun_opts()).await;
    let mut client = server.client().await;
    // The third: an answer over the 4 MiB the client reads (a proxy's page, a broken
    // stream) is an error, not memory, and just as unknown, whatever it says: read whole,
    // this one's task id (one Aliyun never gave) would be taken.
    let huge = format!(
        "{{\"RefreshTaskId\":\"999999999\",\"RequestId\":\"{}\"}}",
        "x".repeat(5 << 20)
    );
    for (i, (label, body)) in [
        ("<html>OK</html>", "<html>OK</html>"),
        (
            "JSON without RefreshTaskId",
            r#"{"RequestId":"FAKE-NO-TASK-ID"}"#,
        ),
        ("a 5 MiB answer", huge.as_str()),
    ]
    .into_iter()
    .enumerate()
    {
        fake.state.lock().expect("state").answer_without_task_id = vec![body.to_owned()];
        let before = fake.state.lock().expect("state").tasks.len();
        let path = format!("/no-id-{i}.css");
        let resp = purge(&mut client, "ali", &[&path], PurgeKind::File)
            .await
            .expect("accepted");
        let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
        let last = seen.last().expect("watch answered");
        assert_eq!(
            last.status(),
            PurgeStatus::PurgeCompleted,
            "{label}: {last:?}"
        );
        let st = fake.state.lock().expect("state");
        assert_eq!(st.tasks.len(), before + 1, "{label}: sent once");
        let task = st.tasks.keys().next_back().expect("task").to_string();
        assert_eq!(
            last.jobs[0].provider_job_id, task,
            "{label}: the job took the task Aliyun recorded"
        );
        assert!(
            st.calls.iter().any(|c| c.action == "DescribeRefreshTasks"),
            "{label}: reconciled through DescribeRefreshTasks"
        );
    }
    server.stop().await;
}

/// Puts one purge with `job` in the embedded store in `data`, as a replica would have left
/// it (e.g. `Sending`, its answer lost).
async fn store_job(data: &std::path::Path, id: &str, job: cdnsign::purge::model::JobRecord) {
    use cdnsign::purge::model::PurgeRecord;
    use cdnsign::purge::store::embedded::EmbeddedStore;
    use cdnsign::purge::store::{Inserted, PurgeStore};

    let dir = data.to_owned();
    let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&dir))
        .await
        .expect("join")
        .expect("open the store");
    let record = PurgeRecord {
        id: id.into(),
        seq: 0,
        client: String::new(),
        // Each its own key (purges without one are stored under one made for them).
        idempotency_key: format!("key-{id}"),
        fingerprint: format!("fp-{id}"),
        target: "ali".into(),
        kind: cdnsign::purge::PurgeKind::File,
        created_at_ms: job.accepted_at_ms,
        rejected: vec![],
        jobs: vec![job],
        quota: vec![],
    };
    assert!(matches!(
        store.insert(record).await.expect("insert"),
        Inserted::New(_)
    ));
}

/// A refresh job left `Sending` at `sent_at_ms` (its answer lost) for `urls`.
fn sending_job(urls: &[&str], sent_at_ms: i64) -> cdnsign::purge::model::JobRecord {
    use cdnsign::purge::config::ProviderKind;
    use cdnsign::purge::model::{JobAction, JobRecord, JobState};

    let mut job = JobRecord::waiting(
        ProviderKind::Aliyun,
        super::DOMAIN,
        JobAction::RefreshFile,
        urls.iter().map(|u| (*u).to_owned()).collect(),
        0,
        sent_at_ms,
    );
    job.state = JobState::Sending;
    job.attempts = 1;
    job.sent_at_ms = sent_at_ms;
    job
}

/// A task the fake has for `urls`, created `age_s` seconds ago (Complete by now).
fn fake_task(fake: &AliyunFake, id: u64, urls: &[&str], age_s: i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let created = Instant::now()
        .checked_sub(Duration::from_secs(age_s.unsigned_abs()))
        .expect("instant");
    fake.state.lock().expect("state").tasks.insert(
        id,
        (
            created,
            now - age_s,
            urls.iter().map(|u| (*u).to_owned()).collect(),
            "file".into(),
        ),
    );
}

/// Reconciling a lost answer counts only tasks created since the job was marked `Sending`:
/// an earlier purge's task for the same URL (a minute before, within the lookup's window)
/// does not make a refresh that never arrived COMPLETED; it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciling_ignores_tasks_created_before_the_job_was_sent() {
    use cdnsign::purge::model::now_ms;

    const URL: &str = "https://cdn.example.com/again.css";
    let fake = AliyunFake::start(AK, SECRET).await;
    fake_task(&fake, 16_999_999_999, &[URL], 60);
    let data = tempfile::tempdir().expect("tempdir");
    store_job(
        data.path(),
        "pg_reconcile_old",
        sending_job(&[URL], now_ms()),
    )
    .await;

    let server =
        TestServer::start(&aliyun_config(data.path(), &fake.endpoint), aliyun_opts()).await;
    let mut client = server.client().await;
    let seen = watch_to_end(&mut client, "pg_reconcile_old", Duration::from_secs(20)).await;
    let last = seen.last().expect("watch answered");
    assert_eq!(last.status(), PurgeStatus::PurgeCompleted, "{last:?}");
    assert_ne!(
        last.jobs[0].provider_job_id, "16999999999",
        "an earlier purge's task was taken for this one"
    );
    let sent = fake.calls("RefreshObjectCaches");
    assert_eq!(sent.len(), 1, "sent once: {sent:?}");
    assert_eq!(sent[0].params["ObjectPath"], URL);
    server.stop().await;
}

/// Every URL of the job must be found in a task made since it was sent; when only some are,
/// the job is sent again (as a whole), never completed with URLs nobody refreshed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciling_resends_a_job_whose_urls_are_not_all_found() {
    use cdnsign::purge::model::now_ms;

    const FOUND: &str = "https://cdn.example.com/found.css";
    const MISSING: &str = "https://cdn.example.com/missing.css";
    let fake = AliyunFake::start(AK, SECRET).await;
    // Made after the job was marked Sending (5 s ago), but for one of its two URLs only.
    fake_task(&fake, 16_999_999_998, &[FOUND], 2);
    let data = tempfile::tempdir().expect("tempdir");
    store_job(
        data.path(),
        "pg_reconcile_partial",
        sending_job(&[FOUND, MISSING], now_ms() - 5_000),
    )
    .await;

    let server =
        TestServer::start(&aliyun_config(data.path(), &fake.endpoint), aliyun_opts()).await;
    let mut client = server.client().await;
    let seen = watch_to_end(&mut client, "pg_reconcile_partial", Duration::from_secs(20)).await;
    let last = seen.last().expect("watch answered");
    assert_eq!(last.status(), PurgeStatus::PurgeCompleted, "{last:?}");
    let sent = fake.calls("RefreshObjectCaches");
    assert_eq!(sent.len(), 1, "sent once: {sent:?}");
    assert!(
        sent[0].params["ObjectPath"]
            .split('\n')
            .any(|u| u == MISSING),
        "the URL no task covered was sent: {sent:?}"
    );
    server.stop().await;
}

/// A job whose polls fail with an error retrying cannot mend (here every call is refused:
/// the server's secret is not the account's) ends FAILED `Unknown` once it was sent more
/// than an hour ago, instead of staying in progress, its queue's lease held, for ever; a
/// job sent five minutes ago under the same refusals stays in progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_cannot_be_polled_for_an_hour_ends_unknown() {
    use cdnsign::proto::GetPurgeRequest;
    use cdnsign::purge::aliyun::{AliyunCredentials, Secret};
    use cdnsign::purge::model::{JobState, now_ms};

    let fake = AliyunFake::start(AK, SECRET).await;
    let data = tempfile::tempdir().expect("tempdir");
    let in_progress = |urls: &[&str], sent_at: i64, task: &str| {
        let mut job = sending_job(urls, sent_at);
        job.state = JobState::InProgress;
        job.provider_job_id = task.into();
        job.status_text = "Refreshing".into();
        job
    };
    let old = in_progress(
        &["https://cdn.example.com/old.css"],
        now_ms() - 61 * 60_000,
        "7001",
    );
    store_job(data.path(), "pg_pollgiveup01", old).await;
    let recent = in_progress(
        &["https://cdn.example.com/new.css"],
        now_ms() - 5 * 60_000,
        "7002",
    );
    store_job(data.path(), "pg_pollrecent01", recent).await;

    let opts = cdnsign::purge::PurgeOptions {
        aliyun_credentials: Some(AliyunCredentials {
            access_key_id: AK.into(),
            secret: Secret::new("not-the-account-secret"),
        }),
        ..cdnsign::purge::PurgeOptions::default()
    };
    let server = TestServer::start(&aliyun_config(data.path(), &fake.endpoint), opts).await;
    let mut client = server.client().await;
    let seen = watch_to_end(&mut client, "pg_pollgiveup01", Duration::from_secs(20)).await;
    let last = seen.last().expect("watch answered");
    assert_eq!(last.status(), PurgeStatus::PurgeFailed, "{last:?}");
    let job = &last.jobs[0];
    assert_eq!(job.status(), JobStatus::Failed, "{job:?}");
    assert_eq!(job.status_text, "Unknown", "{job:?}");
    assert!(
        job.detail
            .contains("more than 60 minutes after it was sent")
            && job.detail.contains("SignatureDoesNotMatch")
            && job.detail.contains("outcome is unknown"),
        "{}",
        job.detail
    );
    let recent = client
        .get_purge(GetPurgeRequest {
            purge_id: "pg_pollrecent01".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(recent.jobs[0].status(), JobStatus::InProgress, "{recent:?}");
    assert!(
        !fake.refused().is_empty(),
        "the polls were refused, as the test means"
    );
    assert!(
        fake.calls("RefreshObjectCaches").is_empty(),
        "nothing is resent"
    );
    server.stop().await;
}
