//! An accepted purge is never lost: the real binary is SIGKILLed while paths wait for room
//! under CloudFront's limits; started again on the same store, it sends them exactly once
//! and still honours the idempotency key. And when it dies after CloudFront accepted a batch
//! but before it learnt the invalidation's id, the resend carries the same CallerReference
//! and CloudFront answers with the existing invalidation: still exactly once.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::purge_support::cloudfront_fake::CloudFrontFake;
use crate::purge_support::{Binary, binary_config, free_port, watch_to_end};
use cdnsign::proto::{JobStatus, PurgeKind, PurgeRequest, PurgeStatus};

const DIST: &str = "EDURABLE00001";

fn write_config(dir: &std::path::Path, port: u16, endpoint: &str) -> std::path::PathBuf {
    let config = dir.join("cdnsign.toml");
    std::fs::write(
        &config,
        binary_config(&dir.join("data"), port)
            + &format!(
                r#"
[[targets]]
name = "site"
provider = "cloudfront"
distribution_id = "{DIST}"
endpoint = "{endpoint}"
"#
            ),
    )
    .expect("write config");
    config
}

const ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "AKIDDURABLE"),
    ("AWS_SECRET_ACCESS_KEY", "durable-secret"),
    ("RUST_LOG", "info"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_paths_wait_then_restart_sends_them_exactly_once() {
    let fake = CloudFrontFake::start(DIST, Duration::from_millis(2_000)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port, &fake.endpoint);
    let env = ENV;

    let mut first = Binary::start(&config, port, &env);
    let mut client = first.client().await;
    let paths: Vec<String> = (0..5_000).map(|i| format!("/rel/{i}.html")).collect();
    let req = PurgeRequest {
        target: "site".into(),
        paths: paths.clone(),
        kind: PurgeKind::File.into(),
        idempotency_key: "durable-1".into(),
        max_wait_seconds: 0,
    };
    let resp = client.purge(req.clone()).await.expect("purge").into_inner();
    assert_eq!(resp.jobs[0].status(), JobStatus::InProgress);
    assert_eq!(resp.jobs[1].status(), JobStatus::Waiting);
    drop(client);
    first.kill();
    assert_eq!(
        fake.ours().len(),
        1,
        "2,000 paths were waiting when it died"
    );

    let second = Binary::start(&config, port, &env);
    let mut client = second.client().await;
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(30)).await;
    let last = seen.last().expect("messages");
    assert_eq!(last.status(), PurgeStatus::PurgeCompleted, "{last:?}");

    let again = client.purge(req).await.expect("again").into_inner();
    assert!(again.deduplicated, "idempotency key survives the restart");
    assert_eq!(again.purge_id, resp.purge_id);

    let ours = fake.ours();
    assert_eq!(ours.len(), 2, "exactly two invalidations");
    let mut sent = BTreeSet::new();
    for inv in &ours {
        for p in &inv.paths {
            assert!(sent.insert(p.clone()), "{p} sent twice");
        }
    }
    assert_eq!(sent, paths.into_iter().collect::<BTreeSet<_>>());
    {
        let st = fake.state.lock().expect("state");
        assert_eq!((st.created, st.replayed), (2, 0));
    }
    assert!(
        second.logs().contains("purge request sent"),
        "the restarted server sent the waiting job: {}",
        second.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_cloudfront_accepted_but_before_recording_resends_the_same_reference() {
    let fake = CloudFrontFake::start(DIST, Duration::from_millis(500)).await;
    fake.state.lock().expect("state").create_delay = Duration::from_secs(30);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port, &fake.endpoint);

    let mut first = Binary::start(&config, port, &ENV);
    let mut client = first.client().await;
    let paths: Vec<String> = (0..10).map(|i| format!("/w/{i}")).collect();
    let req = PurgeRequest {
        target: "site".into(),
        paths: paths.clone(),
        kind: PurgeKind::File.into(),
        idempotency_key: "window-1".into(),
        max_wait_seconds: 0,
    };
    let pending = tokio::spawn(async move { client.purge(req).await });
    // CloudFront has the invalidation; cdnsign is still waiting for the answer. Kill it.
    tokio::time::timeout(Duration::from_secs(20), fake.created_signal.notified())
        .await
        .expect("never sent");
    assert_eq!(fake.ours().len(), 1);
    first.kill();
    assert!(
        pending.await.expect("join").is_err(),
        "the call died with the server"
    );
    fake.state.lock().expect("state").create_delay = Duration::ZERO;

    let second = Binary::start(&config, port, &ENV);
    let mut client = second.client().await;
    let listed = client
        .list_purges(cdnsign::proto::ListPurgesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        listed.purges.len(),
        1,
        "the purge was stored before it was sent"
    );
    let id = listed.purges[0].purge_id.clone();
    let seen = watch_to_end(&mut client, &id, Duration::from_secs(30)).await;
    let last = seen.last().expect("messages");
    assert_eq!(last.status(), PurgeStatus::PurgeCompleted, "{last:?}");
    let ours = fake.ours();
    assert_eq!(ours.len(), 1, "one invalidation, not two");
    assert_eq!(last.jobs[0].provider_job_id, ours[0].id);
    assert_eq!(ours[0].paths, paths);
    let st = fake.state.lock().expect("state");
    assert_eq!(
        (st.created, st.replayed),
        (1, 1),
        "the resend was answered from CallerReference"
    );
}

/// `CDNSIGN_PURGE__DATA_DIR=""` (the Kubernetes Deployment's setting) with no database:
/// no pod falls back to a private store of its own; a purge answers UNAVAILABLE saying
/// what to set, and nothing is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_data_dir_without_a_database_refuses_purges_instead_of_a_private_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port, "http://127.0.0.1:9");
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIDDURABLE"),
        ("AWS_SECRET_ACCESS_KEY", "durable-secret"),
        ("CDNSIGN_PURGE__DATA_DIR", ""),
    ];
    let server = Binary::start(&config, port, &env);
    let err = server
        .client()
        .await
        .purge(PurgeRequest {
            target: "site".into(),
            paths: vec!["/a.html".into()],
            kind: PurgeKind::File.into(),
            idempotency_key: "no-store-1".into(),
            max_wait_seconds: 0,
        })
        .await
        .expect_err("no store");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("database_url") && err.message().contains("data_dir"),
        "{}",
        err.message()
    );
    assert!(
        !dir.path().join("data").exists(),
        "the file's data_dir was used despite the variable"
    );
}
