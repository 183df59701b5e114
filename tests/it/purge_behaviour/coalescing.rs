//! Coalescing: purges waiting for the same distribution share one request and one bill,
//! duplicates and covered paths merged and a directory's files collapsed.

use std::time::Duration;

use super::{DIST, cloudfront_target, purge};
use crate::purge_support::cloudfront_fake::CloudFrontFake;
use crate::purge_support::{Binary, binary_config_with_metrics, free_port, watch_to_end};
use cdnsign::proto::{JobStatus, PurgeKind, PurgeStatus};

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
