//! CloudFront batches: a path CloudFront refuses is isolated from the rest, and a
//! distribution another client keeps busy never starves a purge.

use std::time::Duration;

use super::{DIST, cloudfront_target, purge};
use crate::purge_support::cloudfront_fake::CloudFrontFake;
use crate::purge_support::{TestServer, aws_credentials, base_config, watch_to_end};
use cdnsign::proto::{JobStatus, PurgeKind, PurgeStatus};

/// Thirteen paths, `/poison.js` (which the fake refuses) at `at`.
fn twelve_good_and_a_poison(at: usize) -> Vec<String> {
    (0..13)
        .map(|i| {
            if i == at {
                "/poison.js".to_owned()
            } else {
                format!("/ok/{i}.js")
            }
        })
        .collect()
}

/// The twelve good paths went out and completed; the poison failed alone, named.
fn only_the_poison_failed(cf: &CloudFrontFake, last: &cdnsign::proto::WatchPurgeResponse) {
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
    let paths = twelve_good_and_a_poison(9);
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let resp = purge(&mut client, "cf", &refs, PurgeKind::File)
        .await
        .expect("accepted");
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
    let last = seen.last().expect("m");
    only_the_poison_failed(&cf, last);
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

/// AWS credentials that cannot be loaded: nothing reaches CloudFront, and the job waits
/// for another try saying why (none found is also what an instance metadata service that
/// did not answer gives, so it is not final either); before, it stayed "sending" for ever,
/// tried again about once a second. A job that could not be sent for an hour since it was
/// accepted fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_that_cannot_be_loaded_leave_jobs_waiting_then_failed_after_an_hour() {
    use aws_credential_types::provider::error::CredentialsError;
    use aws_credential_types::provider::{ProvideCredentials, future};
    use cdnsign::purge::model::{JobAction, JobRecord, PurgeRecord, now_ms};
    use cdnsign::purge::store::embedded::EmbeddedStore;
    use cdnsign::purge::store::{Inserted, PurgeStore};

    #[derive(Debug)]
    struct Failing(bool);
    impl ProvideCredentials for Failing {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            future::ProvideCredentials::ready(Err(if self.0 {
                CredentialsError::not_loaded("no credentials in this test")
            } else {
                CredentialsError::provider_error("the credential service is down in this test")
            }))
        }
    }

    for (missing, code) in [
        (true, "CredentialsNotLoaded"),
        (false, "CredentialsUnavailable"),
    ] {
        let cf = CloudFrontFake::start(DIST, Duration::from_millis(200)).await;
        let data = tempfile::tempdir().expect("tempdir");
        // A purge accepted two hours ago, never sent: it gives up.
        let dir = data.path().to_owned();
        let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&dir))
            .await
            .expect("join")
            .expect("open the store");
        let old = JobRecord::waiting(
            cdnsign::purge::config::ProviderKind::Cloudfront,
            DIST,
            JobAction::Invalidate,
            vec!["/old.js".into()],
            0,
            now_ms() - 2 * 3_600_000,
        );
        let record = PurgeRecord {
            id: "pg_old".into(),
            seq: 0,
            client: String::new(),
            idempotency_key: "key-old".into(),
            fingerprint: "fp-old".into(),
            target: "cf".into(),
            kind: cdnsign::purge::PurgeKind::File,
            created_at_ms: old.accepted_at_ms,
            rejected: vec![],
            jobs: vec![old],
            quota: vec![],
        };
        assert!(matches!(
            store.insert(record).await.expect("insert"),
            Inserted::New(_)
        ));
        drop(store);

        let toml = base_config(data.path()) + &cloudfront_target(&cf.endpoint, false);
        let opts = cdnsign::purge::PurgeOptions {
            aws_credentials: Some(aws_sdk_cloudfront::config::SharedCredentialsProvider::new(
                Failing(missing),
            )),
            ..cdnsign::purge::PurgeOptions::default()
        };
        let server = TestServer::start(&toml, opts).await;
        let mut client = server.client().await;
        let id = purge(&mut client, "cf", &["/a.js"], PurgeKind::File)
            .await
            .expect("accepted, to be sent later")
            .purge_id;
        // Once its send (retried within the call's deadline) gives up, the job waits for
        // another try, saying why.
        let mut updates = client
            .watch_purge(cdnsign::proto::WatchPurgeRequest { purge_id: id })
            .await
            .expect("watch")
            .into_inner();
        let waiting = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(m) = updates.message().await.expect("update") {
                let job = &m.jobs[0];
                let tried = job.status() == JobStatus::Waiting && job.detail.contains(code);
                if tried || !matches!(job.status(), JobStatus::Waiting | JobStatus::Sending) {
                    return job.clone();
                }
            }
            panic!("the watch ended before the job was tried");
        })
        .await
        .expect("the job was tried");
        assert_eq!(waiting.status(), JobStatus::Waiting, "{code}: {waiting:?}");
        assert!(waiting.detail.contains(code), "{}", waiting.detail);

        let seen = watch_to_end(&mut client, "pg_old", Duration::from_secs(30)).await;
        let last = seen.last().expect("messages");
        assert_eq!(last.jobs[0].status(), JobStatus::Failed, "{last:?}");
        assert!(
            last.jobs[0].detail.contains("not sent for an hour")
                && last.jobs[0].detail.contains(code),
            "{}",
            last.jobs[0].detail
        );
        assert!(cf.ours().is_empty(), "nothing reached CloudFront");
        server.stop().await;
    }
}

/// A batch whose answer was lost, with a path CloudFront refuses: reconciling it (the same
/// batch again) is refused as invalid, which means CloudFront never made it. It is sent
/// again as unsent and split, so the good paths are still purged (before, the whole batch
/// failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_batch_refused_on_reconcile_is_split_and_its_good_paths_purged() {
    let cf = CloudFrontFake::start(DIST, Duration::from_millis(200)).await;
    {
        let mut st = cf.state.lock().expect("state");
        st.reject_paths = vec!["/poison".into()];
        // Every try of the first send gets 503: its answer is lost.
        st.unavailable_next = 1_000_000;
    }
    let data = tempfile::tempdir().expect("tempdir");
    let toml = base_config(data.path()) + &cloudfront_target(&cf.endpoint, false);
    let server = TestServer::start(&toml, aws_credentials("AKIDFAKE", "fake-secret")).await;
    let mut client = server.client().await;
    let paths = twelve_good_and_a_poison(4);
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let resp = purge(&mut client, "cf", &refs, PurgeKind::File)
        .await
        .expect("accepted");
    // Until the send gives up with its answer lost; then CloudFront answers again.
    let mut updates = client
        .watch_purge(cdnsign::proto::WatchPurgeRequest {
            purge_id: resp.purge_id.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(m) = updates.message().await.expect("update") {
            if m.jobs.iter().any(|j| j.detail.contains("answer lost")) {
                return;
            }
        }
        panic!("the watch ended before the answer was lost");
    })
    .await
    .expect("the first send gave up");
    drop(updates);
    cf.state.lock().expect("state").unavailable_next = 0;

    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(30)).await;
    let last = seen.last().expect("messages");
    only_the_poison_failed(&cf, last);
    assert_eq!(last.status(), PurgeStatus::PurgeFailed, "{last:?}");
    server.stop().await;
}
