//! CloudFront limits, waiting, CallerReference semantics, InProgress → Completed,
//! throttling and fan-out, against the local fake in `purge_support/cloudfront_fake/` (moto
//! enforces none of these).

use std::time::{Duration, Instant};

use crate::purge_support::aliyun_fake::AliyunFake;
use crate::purge_support::cloudfront_fake::CloudFrontFake;
use crate::purge_support::{TestServer, aws_credentials, base_config, watch_to_end};
use cdnsign::proto::{GetPurgeRequest, JobStatus, PurgeKind, PurgeRequest, PurgeStatus};
use cdnsign::purge::PurgeOptions;
use cdnsign::purge::aliyun::{AliyunCredentials, Secret};
use cdnsign::purge::cloudfront::CloudFront;

const DIST: &str = "EFAKEDIST00001";

fn target(endpoint: &str) -> String {
    format!(
        r#"
[[targets]]
name = "site"
provider = "cloudfront"
distribution_id = "{DIST}"
endpoint = "{endpoint}"
"#
    )
}

async fn purge(
    client: &mut cdnsign::proto::purger_client::PurgerClient<tonic::transport::Channel>,
    target: &str,
    paths: Vec<String>,
    kind: PurgeKind,
    key: &str,
) -> cdnsign::proto::PurgeResponse {
    client
        .purge(PurgeRequest {
            target: target.into(),
            paths,
            kind: kind.into(),
            idempotency_key: key.into(),
            max_wait_seconds: 0,
        })
        .await
        .expect("purge")
        .into_inner()
}

/// The distinct statuses one job went through, in order.
/// The states a job went through as WatchPurge saw them (SENDING, which lasts one provider
/// call, is seen or not depending on timing and left out).
fn history(seen: &[cdnsign::proto::WatchPurgeResponse], job: usize) -> Vec<JobStatus> {
    let mut out: Vec<JobStatus> = Vec::new();
    for m in seen {
        let s = m.jobs[job].status();
        if s != JobStatus::Sending && out.last() != Some(&s) {
            out.push(s);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_paths_split_wait_for_room_and_go_out_when_it_frees() {
    let fake = CloudFrontFake::start(DIST, Duration::from_millis(1_500)).await;
    let data = tempfile::tempdir().expect("tempdir");
    let toml = base_config(data.path()) + &target(&fake.endpoint);
    let server = TestServer::start(&toml, aws_credentials("AKIDFAKE", "fake-secret")).await;
    let mut client = server.client().await;

    let paths: Vec<String> = (0..5_000).map(|i| format!("/v2/{i}.css")).collect();
    let t0 = Instant::now();
    let resp = purge(
        &mut client,
        "site",
        paths.clone(),
        PurgeKind::File,
        "deploy-7",
    )
    .await;
    let answered = t0.elapsed();
    assert_eq!(resp.jobs.len(), 2);
    assert_eq!((resp.jobs[0].paths, resp.jobs[1].paths), (3_000, 2_000));
    assert_eq!(
        resp.jobs[0].status(),
        JobStatus::InProgress,
        "{:?}",
        resp.jobs[0]
    );
    assert_eq!(resp.jobs[0].status_text, "InProgress");
    assert_eq!(resp.jobs[1].status(), JobStatus::Waiting);
    assert!(
        resp.jobs[1].detail.contains("waiting for room")
            && resp.jobs[1].detail.contains("3000 of 3000"),
        "{}",
        resp.jobs[1].detail
    );
    assert_eq!(resp.status(), PurgeStatus::PurgeInProgress);
    assert_eq!(fake.ours().len(), 1, "only what fits went out");

    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(30)).await;
    let done = t0.elapsed();
    let last = seen.last().expect("messages");
    assert_eq!(last.status(), PurgeStatus::PurgeCompleted, "{last:?}");
    assert_eq!(
        history(&seen, 1),
        [
            JobStatus::Waiting,
            JobStatus::InProgress,
            JobStatus::Completed
        ]
    );
    let second_sent = {
        let st = fake.state.lock().expect("state");
        assert_eq!(st.created, 2);
        assert!(st.peak.0 <= 3_000, "peak {:?}", st.peak);
        assert!(
            !st.refused
                .iter()
                .any(|(_, c)| c == "TooManyInvalidationsInProgress"),
            "room is computed before sending: {:?}",
            st.refused
        );
        st.invalidations[1]
            .created
            .duration_since(st.invalidations[0].created)
    };
    assert!(
        second_sent >= Duration::from_millis(1_500),
        "{second_sent:?}"
    );
    eprintln!(
        "5,000 paths: Purge answered in {answered:?}; second batch sent {second_sent:?} after the first (first completes at 1.5 s); all completed after {done:?}"
    );

    // The same key: nothing new upstream.
    let again = purge(&mut client, "site", paths, PurgeKind::File, "deploy-7").await;
    assert!(again.deduplicated);
    assert_eq!(again.purge_id, resp.purge_id);
    {
        let st = fake.state.lock().expect("state");
        assert_eq!((st.created, st.replayed), (2, 0));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_load_wildcards_throttling_and_hidden_load_are_waited_out() {
    let fake = CloudFrontFake::start(DIST, Duration::from_millis(600)).await;
    let data = tempfile::tempdir().expect("tempdir");
    let toml = base_config(data.path()) + &target(&fake.endpoint);
    let server = TestServer::start(&toml, aws_credentials("AKIDFAKE", "fake-secret")).await;
    let mut client = server.client().await;

    // Someone else's 2,500 paths are in progress (ListInvalidations + GetInvalidation show
    // them): 500 of our 1,000 fit and go out at once as a request of their own, the other
    // 500 wait and go out when the foreign load finishes.
    fake.seed_foreign(
        DIST,
        (0..2_500).map(|i| format!("/other/{i}")).collect(),
        Duration::from_millis(800),
    );
    let files: Vec<String> = (0..1_000).map(|i| format!("/f/{i}")).collect();
    let resp = purge(&mut client, "site", files, PurgeKind::File, "foreign").await;
    assert_eq!(resp.jobs.len(), 2, "{:?}", resp.jobs);
    assert_eq!(
        (resp.jobs[0].status(), resp.jobs[0].paths),
        (JobStatus::Waiting, 500),
        "{:?}",
        resp.jobs[0]
    );
    assert_eq!(
        (resp.jobs[1].status(), resp.jobs[1].paths),
        (JobStatus::InProgress, 500),
        "{:?}",
        resp.jobs[1]
    );
    assert_ne!(resp.jobs[0].caller_reference, resp.jobs[1].caller_reference);
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
    assert_eq!(
        seen.last().expect("m").status(),
        PurgeStatus::PurgeCompleted
    );

    // 20 directories = 20 wildcard paths: 15 go out, 5 wait for the wildcard limit.
    let dirs: Vec<String> = (0..20).map(|i| format!("/d{i}/")).collect();
    let resp = purge(&mut client, "site", dirs, PurgeKind::Directory, "wild").await;
    assert_eq!(resp.jobs.len(), 2);
    assert_eq!(
        (resp.jobs[0].wildcard_paths, resp.jobs[1].wildcard_paths),
        (15, 5)
    );
    assert_eq!(resp.jobs[1].status(), JobStatus::Waiting);
    assert!(
        resp.jobs[1].detail.contains("15 of 15 wildcard"),
        "{}",
        resp.jobs[1].detail
    );
    assert_eq!(resp.paths_billed, 20);
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
    assert_eq!(
        seen.last().expect("m").status(),
        PurgeStatus::PurgeCompleted
    );

    // Throttled twice and a 503: retried with backoff, accepted.
    {
        let mut st = fake.state.lock().expect("state");
        st.throttle_next = 2;
        st.unavailable_next = 1;
    }
    let resp = purge(
        &mut client,
        "site",
        vec!["/t.html".into()],
        PurgeKind::File,
        "throttle",
    )
    .await;
    assert_eq!(
        resp.jobs[0].status(),
        JobStatus::InProgress,
        "{:?}",
        resp.jobs[0]
    );
    let refused = fake.refused();
    assert_eq!(
        refused.iter().filter(|c| *c == "Throttling").count(),
        2,
        "{refused:?}"
    );
    assert_eq!(
        refused
            .iter()
            .filter(|c| *c == "ServiceUnavailable")
            .count(),
        1
    );

    // Load our ListInvalidations cannot see: CloudFront says TooManyInvalidationsInProgress,
    // the job waits and goes out once the load is gone.
    fake.state.lock().expect("state").hidden_files = 3_000;
    let resp = purge(
        &mut client,
        "site",
        vec!["/h.html".into()],
        PurgeKind::File,
        "hidden",
    )
    .await;
    assert_eq!(
        resp.jobs[0].status(),
        JobStatus::Waiting,
        "{:?}",
        resp.jobs[0]
    );
    assert!(
        resp.jobs[0]
            .detail
            .contains("TooManyInvalidationsInProgress"),
        "{}",
        resp.jobs[0].detail
    );
    fake.state.lock().expect("state").hidden_files = 0;
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
    assert_eq!(
        seen.last().expect("m").status(),
        PurgeStatus::PurgeCompleted
    );
    let got = client
        .get_purge(GetPurgeRequest {
            purge_id: resp.purge_id,
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.jobs[0].status_text, "Completed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_reference_semantics_and_errors_through_the_sdk_client() {
    let fake = CloudFrontFake::start(DIST, Duration::from_secs(60)).await;
    let shared = cdnsign::purge::cloudfront::sdk_config(Some(
        aws_sdk_cloudfront::config::SharedCredentialsProvider::new(
            aws_sdk_cloudfront::config::Credentials::new(
                "AKIDFAKE",
                "fake-secret",
                None,
                None,
                "test",
            ),
        ),
    ))
    .await;
    let cf = CloudFront::new(&shared, Some(&fake.endpoint));
    let paths = vec!["/a".to_owned(), "/b*".to_owned()];
    let first = cf.create(DIST, "ref-1", &paths).await.expect("create");
    assert_eq!(first.status, "InProgress");
    let again = cf.create(DIST, "ref-1", &paths).await.expect("replay");
    assert_eq!(
        again.id, first.id,
        "same reference + batch = the same invalidation"
    );
    let err = cf
        .create(DIST, "ref-1", &["/c".to_owned()])
        .await
        .expect_err("conflict");
    assert_eq!(err.code, "InvalidationBatchAlreadyExists");
    assert_eq!(err.class, cdnsign::purge::ErrorClass::Conflict);
    let err = cf
        .create("ENOSUCH", "ref-2", &paths)
        .await
        .expect_err("no dist");
    assert_eq!(err.code, "NoSuchDistribution");
    let got = cf.get(DIST, &first.id).await.expect("get");
    assert_eq!(got.paths, paths);
    assert_eq!(cf.in_progress(DIST, 5).await.expect("list"), vec![first.id]);
    let st = fake.state.lock().expect("state");
    assert_eq!((st.created, st.replayed), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_target_fans_out_to_cloudfront_and_aliyun() {
    let cf = CloudFrontFake::start(DIST, Duration::from_millis(300)).await;
    let ali = AliyunFake::start("LTAI5tFanOut", "fan-out-secret").await;
    let data = tempfile::tempdir().expect("tempdir");
    let toml = base_config(data.path())
        + &target(&cf.endpoint)
        + "cache_tags = true\n"
        + &format!(
            r#"
[[targets]]
name = "site"
provider = "aliyun"
domain = "cdn.example.com"
endpoint = "{}"
"#,
            ali.endpoint
        );
    let mut opts: PurgeOptions = aws_credentials("AKIDFAKE", "fake-secret");
    opts.aliyun_credentials = Some(AliyunCredentials {
        access_key_id: "LTAI5tFanOut".into(),
        secret: Secret::new("fan-out-secret"),
    });
    let server = TestServer::start(&toml, opts).await;
    let mut client = server.client().await;
    let resp = purge(
        &mut client,
        "site",
        vec!["/index.html".into(), "#product-1".into()],
        PurgeKind::File,
        "both",
    )
    .await;
    let providers: Vec<&str> = resp.jobs.iter().map(|j| j.provider.as_str()).collect();
    assert_eq!(providers, ["cloudfront", "aliyun"]);
    assert_eq!(resp.jobs[0].paths, 2, "CloudFront takes the cache tag");
    assert_eq!(resp.jobs[1].paths, 1);
    assert_eq!(
        resp.rejected.len(),
        1,
        "Aliyun has no cache tags: {:?}",
        resp.rejected
    );
    assert!(
        resp.rejected[0]
            .reason
            .starts_with("aliyun cdn.example.com:")
    );
    let seen = watch_to_end(&mut client, &resp.purge_id, Duration::from_secs(20)).await;
    assert_eq!(
        seen.last().expect("m").status(),
        PurgeStatus::PurgeCompleted
    );
    assert_eq!(cf.ours()[0].paths, ["/index.html", "#product-1"]);
    assert_eq!(ali.calls("RefreshObjectCaches").len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_and_health_list_the_purger() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let data = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&base_config(data.path()), PurgeOptions::default()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut refl = ServerReflectionClient::new(channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("reflection")
        .into_inner();
    let msg = stream
        .message()
        .await
        .expect("message")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected {msg:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"cdnsign.v1.Purger".to_owned()), "{names:?}");

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "cdnsign.v1.Purger".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        status.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_purge_polls_the_provider_for_fresh_status() {
    // In progress until the test completes it.
    let fake = CloudFrontFake::start(DIST, Duration::from_secs(3_600)).await;
    let data = tempfile::tempdir().expect("tempdir");
    // The worker polls only once a minute: freshness must come from GetPurge itself.
    let toml = base_config(data.path())
        .replace("poll_interval_ms = 100", "poll_interval_ms = 60000")
        + &target(&fake.endpoint);
    let server = TestServer::start(&toml, aws_credentials("AKIDFAKE", "fake-secret")).await;
    let mut client = server.client().await;
    let resp = purge(
        &mut client,
        "site",
        vec!["/fresh".into()],
        PurgeKind::File,
        "fresh",
    )
    .await;
    assert_eq!(resp.jobs[0].status(), JobStatus::InProgress);
    fake.complete_all();
    let got = client
        .get_purge(GetPurgeRequest {
            purge_id: resp.purge_id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.jobs[0].status(), JobStatus::Completed, "{got:?}");
    assert_eq!(got.jobs[0].status_text, "Completed");
    assert_eq!(got.status(), PurgeStatus::PurgeCompleted);
    server.stop().await;
}
