//! An accepted purge is never lost: the real binary is SIGKILLed while paths wait for room
//! under CloudFront's limits; started again on the same store, it sends them exactly once
//! and still honours the idempotency key.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use cdnsign::proto::{JobStatus, PurgeKind, PurgeRequest, PurgeStatus};
use common::cloudfront_fake::CloudFrontFake;
use common::{Binary, binary_config, free_port, watch_to_end};

const DIST: &str = "EDURABLE00001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_paths_wait_then_restart_sends_them_exactly_once() {
    let fake = CloudFrontFake::start(DIST, Duration::from_millis(2_000)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("cdnsign.toml");
    std::fs::write(
        &config,
        binary_config(&dir.path().join("data"), port)
            + &format!(
                r#"
[[targets]]
name = "site"
provider = "cloudfront"
distribution_id = "{DIST}"
endpoint = "{}"
"#,
                fake.endpoint
            ),
    )
    .expect("write config");
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIDDURABLE"),
        ("AWS_SECRET_ACCESS_KEY", "durable-secret"),
        ("RUST_LOG", "info"),
    ];

    let mut first = Binary::start(&config, port, &env);
    let mut client = first.client().await;
    let paths: Vec<String> = (0..5_000).map(|i| format!("/rel/{i}.html")).collect();
    let req = PurgeRequest {
        target: "site".into(),
        paths: paths.clone(),
        kind: PurgeKind::File.into(),
        idempotency_key: "durable-1".into(),
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
        second.logs().contains("purge job sent"),
        "the restarted server sent the waiting job: {}",
        second.logs()
    );
}
