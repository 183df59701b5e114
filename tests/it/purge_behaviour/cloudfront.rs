//! CloudFront batches: a path CloudFront refuses is isolated from the rest, and a
//! distribution another client keeps busy never starves a purge.

use std::time::Duration;

use super::{DIST, cloudfront_target, purge};
use crate::purge_support::cloudfront_fake::CloudFrontFake;
use crate::purge_support::{TestServer, aws_credentials, base_config, watch_to_end};
use cdnsign::proto::{JobStatus, PurgeKind, PurgeStatus};

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
